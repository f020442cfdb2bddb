"""Which estimate belongs to which reference: folder layouts, name patterns, the plan."""

from __future__ import annotations

import os
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from diffsep import metrics
from diffsep.errors import AudioError, ConfigError
from diffsep.inputs import AUDIO_EXTENSIONS, is_audio_name

LIST_SHOWN = 5

ReferenceLayout = Literal["sources", "clean", "flat"]
"""``s1/ .. sK/`` (+ ``mix/``), ``clean/`` (+ ``noisy/``), or the files themselves."""




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
    ref_layout: ReferenceLayout
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


def detect_reference_layout(ref_dir: Path) -> tuple[ReferenceLayout, list[Path], Path | None]:
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


def _reference_names(layout: ReferenceLayout, folders: Sequence[Path]) -> list[dict[str, Path]]:
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


def default_pattern(layout: ReferenceLayout) -> str:
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


