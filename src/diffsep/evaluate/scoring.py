"""Which metrics to compute, and the scores of one matched file."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffsep import metrics
from diffsep.audio import read_audio
from diffsep.errors import AudioError, ConfigError
from diffsep.evaluate.matching import EvalItem, EvalPlan
from diffsep.metrics import PesqMode

METRICS: tuple[str, ...] = ("si_sdr", "si_sdri", "sdr", "pesq", "estoi", "dnsmos")
"""Metric names accepted by ``--metrics``, in report order."""

METRIC_COLUMNS: dict[str, tuple[str, ...]] = {
    "si_sdr": ("si_sdr",),
    "si_sdri": ("si_sdri",),
    "sdr": ("sdr",),
    "pesq": ("pesq",),
    "estoi": ("estoi",),
    "dnsmos": ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"),
}
"""The report columns each metric produces."""

COLUMN_LABELS: dict[str, str] = {
    "si_sdr": "SI-SDR [dB]",
    "si_sdri": "SI-SDRi [dB]",
    "sdr": "SDR [dB]",
    "pesq": "PESQ",
    "estoi": "ESTOI",
    "dnsmos_sig": "DNSMOS SIG",
    "dnsmos_bak": "DNSMOS BAK",
    "dnsmos_ovrl": "DNSMOS OVRL",
}

HEAVY_METRICS = frozenset({"pesq", "estoi", "dnsmos"})
"""Metrics worth a process pool; the SI-SDR family is computed inline (vectorised)."""

EXTRA_HINT = 'pip install "diffsep[eval]"'
LENGTH_TOLERANCE_S = 0.1




@dataclass(frozen=True)
class EvalSettings:
    """Which metrics to compute and how. ``pesq_mode`` is 'nb' or 'wb' when PESQ is asked for."""

    metrics: tuple[str, ...]
    pesq_mode: PesqMode | None = None
    zero_mean: bool = False

    def columns(self) -> list[str]:
        """Report columns in order (``dnsmos`` expands to SIG, BAK, OVRL)."""
        return [
            col for metric in METRICS if metric in self.metrics for col in METRIC_COLUMNS[metric]
        ]


def parse_metric_names(text: str) -> list[str]:
    """``"si-sdr, pesq"`` -> ``['si_sdr', 'pesq']``; ``all`` gives every metric.

    Raises ConfigError for an unknown name.
    """
    names: list[str] = []
    for raw in re.split(r"[,\s]+", text.strip()):
        if not raw:
            continue
        name = raw.lower().replace("-", "_")
        name = {"sisdr": "si_sdr", "sisdri": "si_sdri", "stoi": "estoi"}.get(name, name)
        if name == "all":
            names.extend(m for m in METRICS if m not in names)
            continue
        if name not in METRICS:
            raise ConfigError(f"unknown metric {raw!r}: choose from {', '.join(METRICS)} (or all)")
        if name not in names:
            names.append(name)
    if not names:
        raise ConfigError("--metrics is empty: choose from " + ", ".join(METRICS))
    return names


def choose_metrics(
    requested: Sequence[str] | None, *, mixture_problem: str | None = None
) -> tuple[tuple[str, ...], list[str]]:
    """``(metrics to compute, metrics skipped because their extra is not installed)``.

    ``requested=None``: every metric that can run (SI-SDRi only when ``mixture_problem`` is
    None, the others only when their packages are installed). An explicit request for a metric
    that cannot run is a ConfigError (one line naming what is missing).
    """
    if requested is None:
        chosen = [
            m
            for m in METRICS
            if (m != "si_sdri" or mixture_problem is None) and metrics.is_available(m)
        ]
        skipped = [m for m in METRICS if not metrics.is_available(m)]
        return tuple(chosen), skipped
    for name in requested:
        missing = metrics.missing_modules(name)
        if missing:
            raise ConfigError(f"{name} needs the package(s) {', '.join(missing)}: {EXTRA_HINT}")
        if name == "si_sdri" and mixture_problem is not None:
            raise ConfigError(f"si_sdri needs the mixtures: {mixture_problem}")
    return tuple(m for m in METRICS if m in requested), []


def resolve_pesq_mode(text: str, sample_rate: int) -> PesqMode:
    """``auto`` -> 'nb' below 16 kHz, else 'wb'; checks that ``sample_rate`` supports the mode."""
    text = text.lower()
    if text == "auto":
        return "nb" if sample_rate < 16000 else "wb"
    if text == "nb":
        mode: PesqMode = "nb"
    elif text == "wb":
        mode = "wb"
    else:
        raise ConfigError(f"unknown PESQ mode {text!r}: use auto, nb or wb")
    if sample_rate < metrics.PESQ_RATES[mode]:
        raise ConfigError(
            f"{mode} PESQ needs audio at {metrics.PESQ_RATES[mode]} Hz or more; the files are at "
            f"{sample_rate} Hz (use --pesq-mode nb)"
            if mode == "wb"
            else f"nb PESQ needs audio at 8000 Hz or more; the files are at {sample_rate} Hz"
        )
    return mode


def probe_sample_rate(plan: EvalPlan) -> int:
    """Sample rate of the first reference (used to resolve ``--pesq-mode auto``)."""
    return read_audio(plan.items[0].refs[0])[1]






@dataclass
class FileScores:
    """Scores of one item. ``per_source[column]``: K values (in reference order s1…sK);
    ``permutation[k]``: 0-based index of the estimate matched to reference k;
    ``length_difference``: longest minus shortest input length in samples before cropping."""

    name: str
    sample_rate: int
    num_samples: int
    length_difference: int
    permutation: tuple[int, ...]
    per_source: dict[str, tuple[float, ...]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def value(self, column: str) -> float:
        """Mean over sources (NaN if undefined for any source or not computed)."""
        values = self.per_source.get(column)
        if not values or not all(math.isfinite(v) for v in values):
            return math.nan
        return float(np.mean(values))

    @property
    def length_mismatch_s(self) -> float:
        return self.length_difference / self.sample_rate


def _read_mono(path: Path) -> tuple[np.ndarray, int]:
    audio, rate = read_audio(path)
    if audio.shape[0] != 1:
        raise AudioError(f"{path}: {audio.shape[0]} channels; diffsep eval scores mono files only")
    return audio[0], rate


def _check_rate(path: Path, rate: int, first: Path, first_rate: int) -> None:
    if rate != first_rate:
        raise AudioError(
            f"{path}: sample rate {rate} Hz differs from {first} ({first_rate} Hz); "
            "resample the estimates to the reference rate"
        )


@functools.lru_cache(maxsize=1)
def _dnsmos_scorer() -> metrics.DnsmosP835:
    """One DNSMOS model per process (loaded on first use)."""
    return metrics.DnsmosP835(num_threads=1)


def _per_source(
    compute: Callable[[int], float], num_sources: int, label: str, notes: list[str]
) -> tuple[float, ...]:
    values = []
    for k in range(num_sources):
        try:
            values.append(compute(k))
        except metrics.MetricUndefined as err:
            values.append(math.nan)
            notes.append(f"{label} undefined for s{k + 1}: {err}")
    return tuple(values)


def score_item(item: EvalItem, settings: EvalSettings) -> FileScores:
    """Read, check, align and score one item (see the module docstring for the rules)."""
    first_rate = 0
    first_path = item.refs[0]
    lengths: list[int] = []
    signals: dict[str, list[np.ndarray]] = {"ref": [], "est": [], "mix": []}
    for role, paths in (
        ("ref", item.refs),
        ("est", item.ests),
        ("mix", (item.mix,) if item.mix else ()),
    ):
        for path in paths:
            audio, rate = _read_mono(path)
            if not first_rate:
                first_rate = rate
            _check_rate(path, rate, first_path, first_rate)
            signals[role].append(audio)
            lengths.append(audio.shape[-1])
    length = min(lengths)
    refs = np.stack([x[:length] for x in signals["ref"]])
    ests = np.stack([x[:length] for x in signals["est"]])
    for path, ref in zip(item.refs, refs):
        if not np.any(ref):
            raise AudioError(f"{path}: reference is silent (all zeros); the metrics are undefined")
    notes: list[str] = []
    difference = max(lengths) - length
    if difference > LENGTH_TOLERANCE_S * first_rate:
        notes.append(f"lengths differ by {difference / first_rate:.3f} s (cropped to the shortest)")

    zero_mean = settings.zero_mean
    perm, si_sdr_values = metrics.pit_si_sdr(refs, ests, zero_mean=zero_mean)
    matched = ests[list(perm)]
    scores = FileScores(
        name=item.name,
        sample_rate=first_rate,
        num_samples=length,
        length_difference=difference,
        permutation=perm,
    )
    k_range = refs.shape[0]
    chosen = settings.metrics
    if "si_sdr" in chosen:
        scores.per_source["si_sdr"] = tuple(float(v) for v in si_sdr_values)
    if "si_sdri" in chosen:
        if not signals["mix"]:
            raise ConfigError(f"{item.name}: no mixture for SI-SDRi")
        mix = signals["mix"][0][:length]
        baseline = metrics.si_sdr(refs, mix[None, :], zero_mean=zero_mean)
        scores.per_source["si_sdri"] = tuple(float(v) for v in si_sdr_values - baseline)
    if "sdr" in chosen:
        scores.per_source["sdr"] = tuple(float(v) for v in metrics.sdr(refs, matched))
    if "pesq" in chosen:
        mode = settings.pesq_mode or resolve_pesq_mode("auto", first_rate)
        if first_rate < metrics.PESQ_RATES[mode]:
            resolve_pesq_mode(mode, first_rate)  # raises the one-line ConfigError
        scores.per_source["pesq"] = _per_source(
            lambda k: metrics.pesq_score(refs[k], matched[k], first_rate, mode),
            k_range,
            "PESQ",
            notes,
        )
    if "estoi" in chosen:
        scores.per_source["estoi"] = _per_source(
            lambda k: metrics.estoi_score(refs[k], matched[k], first_rate), k_range, "ESTOI", notes
        )
    if "dnsmos" in chosen:
        scorer = _dnsmos_scorer()
        results = [scorer(matched[k], first_rate) for k in range(k_range)]
        for part in ("sig", "bak", "ovrl"):
            scores.per_source[f"dnsmos_{part}"] = tuple(r[part] for r in results)
    scores.notes = tuple(notes)
    return scores


