"""`diffsep eval` as one path: check the outputs, plan, choose metrics, then score and report.

:func:`prepare_evaluation` does everything that can fail before scoring and says what the user
should know (``notes``: metrics left out; ``warnings``: files left out). After
:func:`~diffsep.evaluate.pool.evaluate`, :func:`score_warnings` lists what went wrong per file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from diffsep.evaluate.matching import EvalPlan, plan_evaluation, short_list
from diffsep.evaluate.reports import check_outputs, length_mismatches, undefined_files
from diffsep.evaluate.scoring import (
    COLUMN_LABELS,
    EXTRA_HINT,
    LENGTH_TOLERANCE_S,
    EvalSettings,
    FileScores,
    choose_metrics,
    parse_metric_names,
    probe_sample_rate,
    resolve_pesq_mode,
)


@dataclass(frozen=True)
class PreparedEvaluation:
    """A checked plan and settings, with what to tell the user before scoring."""

    plan: EvalPlan
    settings: EvalSettings
    notes: tuple[str, ...]
    warnings: tuple[str, ...]


def prepare_evaluation(
    ref: Path,
    est: Path,
    *,
    mix: Path | None = None,
    pattern: str | None = None,
    metric_names: str | None = None,
    pesq_mode: str = "auto",
    zero_mean: bool = False,
    intersection: bool = False,
    csv_path: str | os.PathLike[str] | None = None,
    plot_path: str | os.PathLike[str] | None = None,
) -> PreparedEvaluation:
    """Everything ``diffsep eval`` checks before scoring; raises DiffsepError (one line).

    ``metric_names``: comma-separated names or None for every metric that can run.
    """
    check_outputs(csv_path, plot_path)
    plan = plan_evaluation(ref, est, mix_dir=mix, pattern=pattern, intersection=intersection)
    requested = parse_metric_names(metric_names) if metric_names is not None else None
    chosen, skipped = choose_metrics(requested, mixture_problem=plan.mixture_problem())
    notes = []
    if skipped:
        names = ", ".join(m.upper() for m in skipped)
        notes.append(f"{names} not computed: they need the eval extra: {EXTRA_HINT}")
    if requested is None and not plan.has_mixture:
        notes.append(f"SI-SDRi not computed: {plan.mixture_problem()}")
    mode = resolve_pesq_mode(pesq_mode, probe_sample_rate(plan)) if "pesq" in chosen else None
    warnings = []
    if plan.missing or plan.extra:
        parts = []
        if plan.num_missing_refs:
            parts.append(f"left out {plan.num_missing_refs} reference(s) without all estimates")
        if plan.extra:
            parts.append(f"ignored {len(plan.extra)} estimate(s) without a reference")
        warnings.append(f"--intersection: scoring {len(plan.items)} file(s); {', '.join(parts)}")
    settings = EvalSettings(metrics=chosen, pesq_mode=mode, zero_mean=zero_mean)
    return PreparedEvaluation(plan, settings, tuple(notes), tuple(warnings))


def column_labels(settings: EvalSettings) -> dict[str, str]:
    """Report label of every column (PESQ names its mode)."""
    labels = dict(COLUMN_LABELS)
    if settings.pesq_mode:
        labels["pesq"] = f"PESQ ({settings.pesq_mode})"
    return labels


def score_warnings(scores: Sequence[FileScores], settings: EvalSettings) -> list[str]:
    """Files whose signals differ in length, and files where a metric is undefined."""
    warnings = []
    long = length_mismatches(scores)
    if long:
        shown = short_list([f"{s.name} ({s.length_mismatch_s:.2f} s)" for s in long])
        warnings.append(f"{len(long)} file(s) differ in length by more than "
                        f"{LENGTH_TOLERANCE_S} s between their signals (all cropped to the "
                        f"shortest): {shown}")
    labels = column_labels(settings)
    for column in settings.columns():
        undefined = undefined_files(scores, column)
        if undefined:
            warnings.append(f"{labels[column]} undefined for {len(undefined)} file(s), left "
                            f"out of its mean: {short_list(undefined)}")
    return warnings
