"""Score a folder of estimates against a folder of references: layouts, matching, parallel
scoring, aggregation and reports (JSON, CSV, plot). The metrics themselves are in
:mod:`diffsep.metrics`.

Layouts
-------
Reference side (``ref_dir``), detected in this order:

* ``sources``: sub-folders ``s1/`` … ``sK/`` (K ≥ 1, numbered without gaps) holding the same
  file names, and optionally ``mix/`` (the mixtures, used for SI-SDRi), as in wsj0-2mix/LibriMix;
* ``clean``: a ``clean/`` sub-folder (VoiceBank-DEMAND style, K = 1) and optionally ``noisy/``;
* ``flat``: the audio files directly in ``ref_dir`` (K = 1).

``mix_dir`` replaces the mixture folder. Estimate side (``est_dir``): a pattern relative to it,
by default ``s{k}/{name}`` for the ``sources`` layout (what ``diffsep separate`` writes) and
``{name}`` otherwise (what ``diffsep enhance`` writes). Files are matched by name (the file
name without its extension); hidden files are ignored.

Per-file processing (one documented way)
----------------------------------------
* Every file must be mono; all files of one item (references, estimates, mixture) must share
  one sample rate — otherwise AudioError naming both files. Nothing is resampled for SI-SDR/SDR.
* Lengths: every signal of an item is cropped to the shortest one (the end is cut). Items
  whose lengths differed by more than ``LENGTH_TOLERANCE_S`` (0.1 s) are flagged in the notes.
* Separation: the estimate order is chosen per file by PIT on SI-SDR; every metric is then
  computed on the matched pairs and averaged over the K sources (a file's value is NaN if the
  metric is undefined for any of its sources).
* Aggregates are over files: mean, unbiased std and a two-sided 95% Student-t confidence
  interval of the mean; files where a metric is undefined (NaN) are left out of its n.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import io
import math
import multiprocessing
import os
import re
import string
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from diffsep import __version__, metrics
from diffsep.atomic import replacing
from diffsep.audio import read_audio
from diffsep.errors import AudioError, ConfigError, OutputError
from diffsep.inputs import AUDIO_EXTENSIONS, is_audio_name

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
CONFIDENCE_LEVEL = 0.95
LIST_SHOWN = 5


# --------------------------------------------------------------------------------------------
# Layouts and matching
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalItem:
    """One file to score: K reference paths, the K estimate paths (in estimate order, s1…sK of
    the estimate side) and the mixture path (None if there is none)."""

    name: str
    refs: tuple[Path, ...]
    ests: tuple[Path, ...]
    mix: Path | None = None


@dataclass(frozen=True)
class EvalPlan:
    """What will be scored. ``missing``: references left out for lack of estimates (only with
    ``intersection``), as expected estimate paths; ``extra``: estimate files without a
    reference that were ignored (only with ``intersection``), relative to ``est_dir``."""

    ref_dir: Path
    est_dir: Path
    mix_dir: Path | None
    ref_layout: str
    pattern: str
    num_sources: int
    items: tuple[EvalItem, ...]
    missing: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    num_missing_refs: int = 0

    @property
    def has_mixture(self) -> bool:
        """True when every item has a mixture (SI-SDRi can be computed)."""
        return self.mixture_problem() is None

    def mixture_problem(self) -> str | None:
        """Why SI-SDRi cannot be computed (one line), or None when every item has a mixture."""
        lacking = [item.name for item in self.items if item.mix is None]
        if not lacking:
            return None
        if self.mix_dir is None:
            found = _mixture_like_folders(self.ref_dir)
            hint = f" (found {', '.join(f'REF/{name}' for name in found)})" if found else ""
            return f"no mixture folder (REF/mix or REF/noisy); pass --mix FOLDER{hint}"
        return f"{len(lacking)} file(s) have no mixture in {self.mix_dir} ({short_list(lacking)})"


def _mixture_like_folders(ref_dir: Path) -> list[str]:
    """Sub-folders of ``ref_dir`` named like mixtures (LibriMix: mix_clean, mix_both, ...)."""
    try:
        return sorted(p.name for p in ref_dir.iterdir() if p.is_dir() and p.name.startswith("mix"))
    except OSError:
        return []


def short_list(names: Sequence[str], shown: int = LIST_SHOWN) -> str:
    """``a, b, c`` or ``a, b, c, … (+12 more)``."""
    head = ", ".join(names[:shown])
    return head if len(names) <= shown else f"{head}, … (+{len(names) - shown} more)"


def _audio_by_name(folder: Path) -> dict[str, Path]:
    """Audio files directly in ``folder`` by name (file name without extension).

    Raises AudioError when two files share a name (e.g. ``a.wav`` and ``a.flac``).
    """
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not (is_audio_name(path) and path.is_file()):
            continue
        if path.stem in found:
            raise AudioError(
                f"{folder}: two files are named {path.stem!r} "
                f"({found[path.stem].name}, {path.name}); "
                "names must be unique"
            )
        found[path.stem] = path
    return found


def _source_folders(ref_dir: Path) -> list[Path]:
    """``ref_dir/s1`` … ``ref_dir/sK`` if present (checked to be numbered without gaps)."""
    numbers = sorted(
        int(p.name[1:])
        for p in ref_dir.iterdir()
        if p.is_dir() and re.fullmatch(r"s[1-9]\d*", p.name)
    )
    if not numbers:
        return []
    if numbers != list(range(1, len(numbers) + 1)):
        shown = ", ".join(f"s{n}" for n in numbers)
        raise AudioError(f"{ref_dir}: source folders must be s1 … sK without gaps, found {shown}")
    return [ref_dir / f"s{n}" for n in numbers]


def detect_reference_layout(ref_dir: Path) -> tuple[str, list[Path], Path | None]:
    """``(layout, source folders, mixture folder or None)`` of a reference folder.

    See the module docstring for the layouts.
    """
    if not ref_dir.exists():
        raise AudioError(f"{ref_dir}: no such folder")
    if not ref_dir.is_dir():
        raise AudioError(f"{ref_dir}: not a folder (give the folder holding the references)")
    sources = _source_folders(ref_dir)
    if sources:
        mix = ref_dir / "mix"
        return "sources", sources, mix if mix.is_dir() else None
    clean = ref_dir / "clean"
    if clean.is_dir():
        noisy = ref_dir / "noisy"
        return "clean", [clean], noisy if noisy.is_dir() else None
    return "flat", [ref_dir], None


def _reference_names(layout: str, folders: Sequence[Path]) -> list[dict[str, Path]]:
    """Per source folder, name -> path; checks that every folder holds the same names."""
    per_source = [_audio_by_name(folder) for folder in folders]
    if not per_source[0]:
        where = folders[0]
        raise AudioError(
            f"{where}: no audio files found (looked for {', '.join(sorted(AUDIO_EXTENSIONS))})"
        )
    first = set(per_source[0])
    for folder, names in zip(folders[1:], per_source[1:]):
        lacking = sorted(first - set(names))
        surplus = sorted(set(names) - first)
        if lacking or surplus:
            parts = []
            if lacking:
                parts.append(
                    f"lacks {len(lacking)} file(s) present in {folders[0].name}/ "
                    f"({short_list(lacking)})"
                )
            if surplus:
                parts.append(
                    f"has {len(surplus)} file(s) absent from {folders[0].name}/ "
                    f"({short_list(surplus)})"
                )
            raise AudioError(f"{folder}: {'; '.join(parts)}")
    return per_source


class EstimatePattern:
    """Where estimate k of reference NAME lives below the estimate folder.

    Placeholders: ``{name}`` (alias ``{track}``) the reference's file name without extension;
    ``{k}`` the 1-based source index, ``{k0}`` the 0-based one (format specs such as
    ``{k:02d}`` work); ``{stem}`` the stem ``diffsep separate``/``enhance`` use (``s1`` … for
    separation, ``enhanced`` for enhancement); ``{ext}`` any audio extension. When the pattern
    has no ``{ext}`` and its last part has no extension, any audio extension is accepted.
    ``/`` separates sub-folders. ``{parent}`` (from ``--filename`` templates) matches nothing.
    """

    _FIELDS = ("name", "track", "k", "k0", "stem", "ext")

    def __init__(self, text: str, num_sources: int, separation: bool) -> None:
        self.text = text
        self.num_sources = num_sources
        self.separation = separation
        # `diffsep separate --filename` templates may hold {parent}; references are flat, so it
        # is always empty here (and the separator drops empty path segments).
        self._template = (
            text.replace("{parent}/", "").replace("/{parent}", "").replace("{parent}", "")
        )
        self._regex = self._compile(self._template)

    def _compile(self, text: str) -> re.Pattern[str]:
        if text.startswith(("/", "\\")) or ".." in PurePosixPath(text).parts:
            raise ConfigError(f"--pattern {text!r} must be relative to the estimate folder")
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as err:
            raise ConfigError(f"invalid --pattern {text!r}: {err}") from None
        exts = "|".join(sorted(re.escape(e[1:]) for e in AUDIO_EXTENSIONS))
        parts: list[str] = []
        used: set[str] = set()
        has_ext = False
        for literal, name, _spec, _conv in parsed:
            parts.append(re.escape(literal))
            if name is None:
                continue
            if name not in self._FIELDS:
                fields = ", ".join("{" + f + "}" for f in self._FIELDS)
                raise ConfigError(
                    f"unknown placeholder {{{name}}} in --pattern {text!r}: use {fields}"
                )
            group = {"track": "name", "stem": "k"}.get(name, name)
            if name == "stem" and not self.separation:
                parts.append("enhanced")
                continue
            body = {
                "name": r"[^/]+?",
                "k": r"\d+",
                "k0": r"\d+",
                "ext": f"(?i:{exts})",
            }[group]
            prefix = "s" if name == "stem" else ""
            if group == "ext":
                has_ext = True
            if group in used:
                parts.append(f"{prefix}(?P={group})")
            else:
                used.add(group)
                parts.append(f"{prefix}(?P<{group}>{body})")
        if "name" not in used:
            raise ConfigError(f"--pattern {text!r} must contain {{name}}")
        if self.num_sources > 1 and not ({"k", "k0"} & used):
            raise ConfigError(
                f"--pattern {text!r} has no {{k}}, {{k0}} or {{stem}}, but the references have "
                f"{self.num_sources} sources"
            )
        if {"k", "k0"} <= used:
            raise ConfigError(f"--pattern {text!r}: use either {{k}} or {{k0}}, not both")
        tail = parsed[-1][0] if parsed and parsed[-1][1] is None else ""
        if not has_ext and "." not in tail.rsplit("/", 1)[-1]:
            parts.append(rf"\.(?i:{exts})")
        return re.compile("".join(parts))

    def match(self, relative: str) -> tuple[str, int] | None:
        """``(name, k)`` (k 1-based) for a path relative to the estimate folder, or None."""
        found = self._regex.fullmatch(relative)
        if found is None:
            return None
        groups = found.groupdict()
        if groups.get("k") is not None:
            k = int(groups["k"])
        elif groups.get("k0") is not None:
            k = int(groups["k0"]) + 1
        else:
            k = 1
        return groups["name"], k

    def expected(self, name: str, k: int) -> str:
        """Human-readable expected path for estimate k of ``name`` (for error messages)."""
        values = {
            "name": name,
            "track": name,
            "k": k,
            "k0": k - 1,
            "stem": f"s{k}" if self.separation else "enhanced",
            "ext": "wav",
        }
        try:
            return self._template.format(**values)
        except (ValueError, KeyError, IndexError):
            return f"{name} (source {k})"


def default_pattern(layout: str) -> str:
    """The estimate pattern used when none is given: ``s{k}/{name}`` or ``{name}``."""
    return "s{k}/{name}" if layout == "sources" else "{name}"


def _estimate_files(est_dir: Path) -> list[str]:
    """Audio files below ``est_dir`` (recursive, hidden names skipped), relative POSIX paths."""
    found: list[str] = []
    for here, dirs, files in os.walk(est_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for file_name in sorted(files):
            path = Path(here) / file_name
            if is_audio_name(path):
                found.append(PurePosixPath(*path.relative_to(est_dir).parts).as_posix())
    return found


def plan_evaluation(
    ref_dir: str | os.PathLike[str],
    est_dir: str | os.PathLike[str],
    *,
    mix_dir: str | os.PathLike[str] | None = None,
    pattern: str | None = None,
    intersection: bool = False,
) -> EvalPlan:
    """Match estimates to references by name (see the module docstring for the layouts).

    Raises AudioError when the folders do not match: the message counts and lists (a few of)
    the references without estimates and the estimates without a reference. With
    ``intersection=True`` those are left out instead and recorded in the plan.
    """
    ref_root = Path(ref_dir)
    est_root = Path(est_dir)
    layout, source_folders, mix_folder = detect_reference_layout(ref_root)
    if mix_dir is not None:
        mix_folder = Path(mix_dir)
        if not mix_folder.is_dir():
            raise AudioError(f"{mix_folder}: no such folder (--mix)")
    if not est_root.is_dir():
        raise AudioError(f"{est_root}: no such folder (--est)")
    refs_by_source = _reference_names(layout, source_folders)
    num_sources = len(source_folders)
    if num_sources > metrics.MAX_PIT_SOURCES:
        raise ConfigError(
            f"{ref_root}: {num_sources} sources; PIT is computed by brute force for at most "
            f"{metrics.MAX_PIT_SOURCES}"
        )
    spec = EstimatePattern(
        pattern or default_pattern(layout), num_sources, separation=layout == "sources"
    )
    names = sorted(refs_by_source[0])

    found: dict[tuple[str, int], str] = {}
    extra: list[str] = []
    for relative in _estimate_files(est_root):
        matched = spec.match(relative)
        if matched is None:
            continue
        name, k = matched
        if name not in refs_by_source[0] or not 1 <= k <= num_sources:
            extra.append(relative)
            continue
        if (name, k) in found:
            raise AudioError(
                f"{est_root}: two estimates for {name} source {k}: "
                f"{found[(name, k)]} and {relative}"
            )
        found[(name, k)] = relative
    if not found:
        hint = (
            ""
            if pattern
            else (
                " (pass --pattern for another naming, e.g. --pattern '{name}_s{k}.wav')"
                if num_sources > 1
                else " (pass --pattern for another naming, e.g. --pattern '{name}_enhanced.wav')"
            )
        )
        raise AudioError(f"{est_root}: no estimate files match {spec.text!r}{hint}")

    missing: list[str] = []
    complete: list[str] = []
    for name in names:
        absent = [
            spec.expected(name, k) for k in range(1, num_sources + 1) if (name, k) not in found
        ]
        if absent:
            missing.extend(absent)
        else:
            complete.append(name)
    num_missing_refs = len(names) - len(complete)
    if (missing or extra) and not intersection:
        parts = []
        if missing:
            parts.append(f"{len(missing)} estimate(s) missing ({short_list(missing)})")
        if extra:
            parts.append(f"{len(extra)} estimate(s) without a reference ({short_list(extra)})")
        raise AudioError(
            f"{est_root} does not match {ref_root}: {'; '.join(parts)}; "
            "pass --intersection to score "
            f"only the {len(complete)} file(s) present on both sides"
        )
    if not complete:
        raise AudioError(f"{est_root}: no reference has all {num_sources} of its estimates")

    mixtures = _audio_by_name(mix_folder) if mix_folder is not None else {}
    if mix_dir is not None:
        lacking = [name for name in complete if name not in mixtures]
        if lacking:
            raise AudioError(
                f"{mix_folder}: no mixture for {len(lacking)} file(s) ({short_list(lacking)})"
            )
    items = tuple(
        EvalItem(
            name=name,
            refs=tuple(refs[name] for refs in refs_by_source),
            ests=tuple(est_root / found[(name, k)] for k in range(1, num_sources + 1)),
            mix=mixtures.get(name),
        )
        for name in complete
    )
    return EvalPlan(
        ref_dir=ref_root,
        est_dir=est_root,
        mix_dir=mix_folder,
        ref_layout=layout,
        pattern=spec.text,
        num_sources=num_sources,
        items=items,
        missing=tuple(missing),
        extra=tuple(extra),
        num_missing_refs=num_missing_refs,
    )


# --------------------------------------------------------------------------------------------
# Metric selection
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalSettings:
    """Which metrics to compute and how. ``pesq_mode`` is 'nb' or 'wb' when PESQ is asked for."""

    metrics: tuple[str, ...]
    pesq_mode: str | None = None
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


def resolve_pesq_mode(mode: str, sample_rate: int) -> str:
    """``auto`` -> 'nb' below 16 kHz, else 'wb'; checks that ``sample_rate`` supports the mode."""
    mode = mode.lower()
    if mode == "auto":
        return "nb" if sample_rate < 16000 else "wb"
    if mode not in metrics.PESQ_RATES:
        raise ConfigError(f"unknown PESQ mode {mode!r}: use auto, nb or wb")
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


# --------------------------------------------------------------------------------------------
# Scoring one file
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Scoring many files
# --------------------------------------------------------------------------------------------


def default_jobs() -> int:
    """CPU cores available to this process."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def evaluate(
    plan: EvalPlan,
    settings: EvalSettings,
    *,
    jobs: int = 1,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[FileScores]:
    """Score every item of ``plan``; returns scores in the plan's (name) order.

    The heavy metrics (PESQ, ESTOI, DNSMOS) run in ``jobs`` worker processes when ``jobs > 1``;
    otherwise, and always for the SI-SDR family alone, everything runs in this process.
    ``on_progress(done, total)`` is called after each file. The first error stops the run.
    """
    items = plan.items
    total = len(items)
    parallel = jobs > 1 and total > 1 and bool(HEAVY_METRICS & set(settings.metrics))
    if not parallel:
        results = []
        for done, item in enumerate(items, start=1):
            results.append(score_item(item, settings))
            if on_progress is not None:
                on_progress(done, total)
        return results

    by_index: dict[int, FileScores] = {}
    context = multiprocessing.get_context("spawn")
    executor = ProcessPoolExecutor(max_workers=min(jobs, total), mp_context=context)
    try:
        pending: dict[Future[FileScores], int] = {}
        queue = iter(enumerate(items))
        limit = 4 * min(jobs, total)

        def refill() -> None:
            for index, item in queue:
                pending[executor.submit(score_item, item, settings)] = index
                if len(pending) >= limit:
                    return

        refill()
        while pending:
            finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for future in finished:
                index = pending.pop(future)
                by_index[index] = future.result()
                if on_progress is not None:
                    on_progress(len(by_index), total)
            refill()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    return [by_index[i] for i in range(total)]


# --------------------------------------------------------------------------------------------
# Aggregates and reports
# --------------------------------------------------------------------------------------------


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
            "sample_rate": metrics.PESQ_RATES.get(settings.pesq_mode or ""),
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
