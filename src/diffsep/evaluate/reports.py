"""Aggregates (mean, 95% CI, std) and reports: JSON, CSV, plot."""

from __future__ import annotations

import csv
import importlib.util
import io
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from diffsep import __version__, metrics
from diffsep.atomic import replacing
from diffsep.errors import ConfigError, OutputError
from diffsep.evaluate.matching import EvalPlan
from diffsep.evaluate.scoring import EXTRA_HINT, LENGTH_TOLERANCE_S, EvalSettings, FileScores

CONFIDENCE_LEVEL = 0.95




@dataclass(frozen=True)
class Summary:
    """Aggregate of one column over files: mean, 95% CI half-width, unbiased std, n files."""

    mean: float
    ci95: float
    std: float
    n: int


def summarize(scores: Sequence[FileScores], columns: Iterable[str]) -> dict[str, Summary]:
    """Per column: mean ± Student-t 95% CI over the files where it is defined."""
    out = {}
    for column in columns:
        mean, half, std, n = metrics.mean_confidence_interval(
            [s.value(column) for s in scores], CONFIDENCE_LEVEL
        )
        out[column] = Summary(mean, half, std, n)
    return out


def length_mismatches(scores: Sequence[FileScores]) -> list[FileScores]:
    """Files whose inputs differed in length by more than LENGTH_TOLERANCE_S."""
    return [s for s in scores if s.length_difference > LENGTH_TOLERANCE_S * s.sample_rate]


def undefined_files(scores: Sequence[FileScores], column: str) -> list[str]:
    """Names of files where ``column`` is NaN."""
    return [s.name for s in scores if not math.isfinite(s.value(column))]


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def settings_metadata(plan: EvalPlan, settings: EvalSettings) -> dict[str, Any]:
    """How every metric was computed (stored in the JSON report)."""
    meta: dict[str, Any] = {
        "si_sdr": {
            "zero_mean": settings.zero_mean,
            "clamp_db": metrics.CLAMP_DB,
            "permutation": "PIT on SI-SDR (max mean over sources)"
            if plan.num_sources > 1
            else None,
        },
        "length_policy": f"crop to the shortest signal; flagged above {LENGTH_TOLERANCE_S} s",
        "confidence_interval": "two-sided 95% Student-t interval of the mean over files",
    }
    if "sdr" in settings.metrics:
        meta["sdr"] = "10*log10(|s|^2/|s-est|^2), no distortion filter (not BSS-eval SDR)"
    if "pesq" in settings.metrics:
        meta["pesq"] = {
            "mode": settings.pesq_mode,
            "sample_rate": (
                None if settings.pesq_mode is None else metrics.PESQ_RATES[settings.pesq_mode]
            ),
            "resampler": "soxr HQ",
        }
    if "estoi" in settings.metrics:
        meta["estoi"] = {"extended": True, "package": "pystoi", "internal_rate": metrics.ESTOI_RATE}
    if "dnsmos" in settings.metrics:
        meta["dnsmos"] = {
            "model": f"DNSMOS P.835 {metrics.DNSMOS_MODEL} (speechmos)",
            "personalized": False,
            "sample_rate": metrics.DNSMOS_RATE,
            "resampler": "soxr HQ",
        }
    return meta


def report_dict(
    plan: EvalPlan,
    settings: EvalSettings,
    scores: Sequence[FileScores],
    summary: dict[str, Summary],
) -> dict[str, Any]:
    """The JSON report: metadata, aggregate and per-file rows (NaN written as null)."""
    columns = settings.columns()
    files = []
    for s in scores:
        row: dict[str, Any] = {
            "name": s.name,
            "sample_rate": s.sample_rate,
            "num_samples": s.num_samples,
            "length_mismatch_s": s.length_mismatch_s,
        }
        if plan.num_sources > 1:
            row["permutation"] = [p + 1 for p in s.permutation]
        row.update({col: _finite_or_none(s.value(col)) for col in columns})
        if plan.num_sources > 1:
            row["sources"] = {
                f"s{k + 1}": {col: _finite_or_none(s.per_source[col][k]) for col in columns}
                for k in range(plan.num_sources)
            }
        row["notes"] = list(s.notes)
        files.append(row)
    return {
        "diffsep_version": __version__,
        "reference": str(plan.ref_dir),
        "estimates": str(plan.est_dir),
        "mixtures": str(plan.mix_dir) if plan.mix_dir is not None else None,
        "reference_layout": plan.ref_layout,
        "estimate_pattern": plan.pattern,
        "num_sources": plan.num_sources,
        "num_files": len(scores),
        "left_out": {
            "references_without_estimates": plan.num_missing_refs,
            "missing_estimates": list(plan.missing),
            "estimates_without_reference": list(plan.extra),
        },
        "metrics": columns,
        "settings": settings_metadata(plan, settings),
        "aggregate": {
            col: {
                "mean": _finite_or_none(v.mean),
                "ci95": _finite_or_none(v.ci95),
                "std": _finite_or_none(v.std),
                "n": v.n,
            }
            for col, v in summary.items()
        },
        "files": files,
    }


def _csv_number(value: float) -> str:
    return "" if not math.isfinite(value) else repr(float(value))


def csv_text(
    plan: EvalPlan,
    settings: EvalSettings,
    scores: Sequence[FileScores],
    summary: dict[str, Summary],
) -> str:
    """CSV: a ``kind`` column, ``file`` rows (one per file, means over sources) then aggregate
    rows ``mean``, ``ci95`` (half-width), ``std`` and ``n``. Empty cells: undefined values.
    ``permutation`` lists, space-separated, the 1-based estimate matched to s1 … sK."""
    columns = settings.columns()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["kind", "name", "permutation", "length_mismatch_s", *columns])
    for s in scores:
        writer.writerow(
            [
                "file",
                s.name,
                " ".join(str(p + 1) for p in s.permutation),
                repr(s.length_mismatch_s),
                *(_csv_number(s.value(c)) for c in columns),
            ]
        )
    for kind in ("mean", "ci95", "std"):
        writer.writerow(
            [kind, "", "", "", *(_csv_number(getattr(summary[c], kind)) for c in columns)]
        )
    writer.writerow(["n", "", "", "", *(str(summary[c].n) for c in columns)])
    return buffer.getvalue()


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temporary file + rename); OutputError on failure."""
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"{target}: is a folder")
    if not target.parent.is_dir():
        raise OutputError(f"{target}: folder {target.parent} does not exist")
    try:
        with replacing(target) as temp:
            temp.write_text(text, encoding="utf-8")
    except OSError as err:
        raise OutputError(f"{target}: cannot write ({err.strerror or err})") from None
    return target


def plot_distributions(
    path: str | os.PathLike[str],
    scores: Sequence[FileScores],
    summary: dict[str, Summary],
    labels: dict[str, str],
    title: str = "",
) -> Path:
    """One panel per column: histogram of the per-file values; the mean (line) and its 95% CI
    (band) are marked.

    Needs matplotlib (ConfigError naming the extra otherwise). Writes PNG, PDF or SVG by the
    extension of ``path``; OutputError if it cannot be written.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise ConfigError(f"--plot needs matplotlib: {EXTRA_HINT}") from None
    target = Path(path)
    if not target.parent.is_dir():
        raise OutputError(f"{target}: folder {target.parent} does not exist")
    columns = list(summary)
    ncols = min(3, len(columns))
    nrows = math.ceil(len(columns) / ncols)
    figure = Figure(figsize=(4.2 * ncols, 3.2 * nrows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, column in zip(axes, columns):
        values = np.array([s.value(column) for s in scores], dtype=np.float64)
        values = values[np.isfinite(values)]
        stats = summary[column]
        if values.size:
            if math.isfinite(stats.ci95):
                ax.axvspan(
                    stats.mean - stats.ci95,
                    stats.mean + stats.ci95,
                    color="#c44e52",
                    alpha=0.25,
                    lw=0,
                    zorder=0,
                )
            ax.hist(
                values,
                bins=min(30, max(5, int(np.sqrt(values.size)) * 2)),
                color="#4c72b0",
                alpha=0.8,
                zorder=1,
            )
            ax.axvline(stats.mean, color="#c44e52", lw=1.5, zorder=2)
            ax.xaxis.set_major_locator(MaxNLocator(5))
        ci = f" ± {stats.ci95:.2f}" if math.isfinite(stats.ci95) else ""
        ax.set_title(
            f"{labels.get(column, column)}: {stats.mean:.2f}{ci} (n={stats.n})", fontsize=9
        )
        ax.set_ylabel("files")
    for ax in axes[len(columns) :]:
        ax.set_visible(False)
    if title:
        figure.suptitle(title, fontsize=10)
    try:
        with replacing(target) as temp:
            figure.savefig(temp, dpi=120)
    except (OSError, ValueError) as err:
        raise OutputError(f"{target}: cannot write the plot ({err})") from None
    return target


def check_outputs(
    csv_path: str | os.PathLike[str] | None, plot_path: str | os.PathLike[str] | None
) -> None:
    """Fail early (before scoring) if an output cannot be written or --plot lacks matplotlib."""
    for path in (csv_path, plot_path):
        if path is None:
            continue
        target = Path(path)
        if target.is_dir():
            raise OutputError(f"{target}: is a folder")
        if not target.parent.is_dir():
            raise OutputError(f"{target}: folder {target.parent} does not exist")
    if plot_path is not None:
        if importlib.util.find_spec("matplotlib") is None:
            raise ConfigError(f"--plot needs matplotlib: {EXTRA_HINT}")
        suffix = Path(plot_path).suffix.lower()
        if suffix not in (".png", ".pdf", ".svg"):
            raise ConfigError(f"{plot_path}: --plot writes .png, .pdf or .svg files")
