"""Which files to process and where their outputs go.

* :func:`discover_inputs` expands command-line specs (files, folders, glob patterns) into an
  ordered, de-duplicated list of :class:`InputFile`, each remembering its sub-folder relative
  to the folder or pattern root it was found under, so outputs can mirror the input tree.
* :func:`render_output_name` fills a Demucs-like ``--filename`` template;
  :func:`check_template` validates one; :func:`plan_outputs` maps every input to its output
  paths and refuses clashes (two outputs on one path, an output overwriting an input).
"""

from __future__ import annotations

import glob
import os
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from diffsep.errors import AudioError, ConfigError
from diffsep.writer import format_from_extension

AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc",
        ".au", ".snd", ".caf", ".w64", ".rf64", ".sph", ".nist",
    }
)
"""Extensions picked up when expanding folders and glob patterns (case-insensitive). Files
named explicitly are accepted whatever their extension (libsndfile then decides)."""

SEPARATION_TEMPLATE = "{stem}/{parent}/{track}.{ext}"
"""Default ``--filename`` for separation: ``OUT/s1/NAME.wav``, ``OUT/s2/NAME.wav``, ...
(``{parent}`` is empty for inputs not found inside a folder, so it only adds sub-folders when
a folder tree is given)."""

ENHANCEMENT_TEMPLATE = "{parent}/{track}.{ext}"
"""Default ``--filename`` for enhancement: ``OUT/NAME.wav``."""

TEMPLATE_VARIABLES = ("track", "trackext", "stem", "ext", "k", "parent")
"""``{track}`` input name without extension, ``{trackext}`` its extension (no dot),
``{stem}`` output stem (``s1``... or ``enhanced``), ``{ext}`` output extension, ``{k}``
1-based source index, ``{parent}`` the input's sub-folder below the folder/pattern it came
from (empty otherwise)."""


@dataclass(frozen=True)
class InputFile:
    """An input to process: its ``path`` and its sub-folder ``parent`` (POSIX, ``''`` if none)
    relative to the folder or glob root it was found under."""

    path: Path
    parent: str = ""

    @property
    def track(self) -> str:
        """File name without its extension."""
        return self.path.stem

    @property
    def trackext(self) -> str:
        """File extension without the dot (``'wav'``)."""
        return self.path.suffix.lstrip(".")


def is_audio_name(path: Path) -> bool:
    """True for a non-hidden name with an audio extension (:data:`AUDIO_EXTENSIONS`)."""
    return not path.name.startswith(".") and path.suffix.lower() in AUDIO_EXTENSIONS


def _relative_parent(file: Path, root: Path) -> str:
    relative = os.path.relpath(file.parent, root)
    return "" if relative == "." else PurePosixPath(*Path(relative).parts).as_posix()


def _walk_folder(folder: Path) -> list[InputFile]:
    """Audio files below ``folder`` (recursive, hidden files and folders skipped), sorted."""
    found: list[InputFile] = []
    for here, dirs, files in os.walk(folder, onerror=None, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(here) / name
            if is_audio_name(path) and path.is_file():
                found.append(InputFile(path, _relative_parent(path, folder)))
    return sorted(found, key=lambda item: (PurePosixPath(item.parent).parts, item.path.name))


def _glob_root(pattern: str) -> Path:
    """Longest leading part of ``pattern`` without wildcards (the folder outputs mirror from)."""
    parts = Path(pattern).parts
    root_parts: list[str] = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        root_parts.append(part)
    return Path(*root_parts) if root_parts else Path(".")


def _expand_glob(pattern: str) -> list[InputFile]:
    root = _glob_root(pattern)
    matches = sorted(glob.glob(pattern, recursive=True))
    found = [Path(m) for m in matches]
    found = [p for p in found if p.is_file() and is_audio_name(p)]
    items = [InputFile(p, _relative_parent(p, root)) for p in found]
    return sorted(items, key=lambda item: (PurePosixPath(item.parent).parts, item.path.name))


def discover_inputs(specs: Iterable[str | os.PathLike[str]]) -> list[InputFile]:
    """Expand files, folders and glob patterns (``*``, ``?``, ``[...]``, ``**``) into inputs.

    Order: specs in the order given; inside a folder or pattern, sorted by sub-folder then
    name. A file reached twice (same resolved path) is kept at its first place. Folders are
    searched recursively for :data:`AUDIO_EXTENSIONS`, skipping hidden names (which includes the
    writers' ``.NAME.partial-*`` temporaries). A spec that exists as a path is taken literally
    even if it contains wildcard characters.

    Raises AudioError (one line, naming the spec) for a missing path, a pattern matching no
    audio file, a folder without audio files, or no specs at all.
    """
    inputs: list[InputFile] = []
    seen: set[str] = set()
    any_spec = False
    for spec in specs:
        any_spec = True
        text = os.fspath(spec)
        path = Path(text)
        if path.is_dir():
            items = _walk_folder(path)
            if not items:
                raise AudioError(
                    f"{text}: folder contains no audio files (looked for "
                    f"{', '.join(sorted(AUDIO_EXTENSIONS))})"
                )
        elif path.exists():
            if not path.is_file():
                raise AudioError(f"{text}: not a regular file")
            items = [InputFile(path, "")]
        elif glob.has_magic(text):
            items = _expand_glob(text)
            if not items:
                raise AudioError(f"{text}: pattern matches no audio files")
        else:
            raise AudioError(f"{text}: no such file or folder")
        for item in items:
            key = os.path.normcase(os.path.realpath(item.path))
            if key not in seen:
                seen.add(key)
                inputs.append(item)
    if not any_spec:
        raise AudioError("no input files given")
    return inputs


# --------------------------------------------------------------------------------------------
# Output names
# --------------------------------------------------------------------------------------------


def stem_names(task: str, num_sources: int) -> list[str]:
    """Output stems: ``['s1', ..., 'sK']`` for separation, ``['enhanced']`` for enhancement."""
    if task == "enhancement":
        return ["enhanced"]
    if task == "separation":
        return [f"s{k}" for k in range(1, num_sources + 1)]
    raise ConfigError(f"unknown task {task!r}: use 'separation' or 'enhancement'")


def default_template(task: str) -> str:
    """The default ``--filename`` template for ``task``."""
    return ENHANCEMENT_TEMPLATE if task == "enhancement" else SEPARATION_TEMPLATE


def _template_fields(template: str) -> list[str]:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise ConfigError(f"invalid --filename template {template!r}: {err}") from None
    fields: list[str] = []
    for _, field, _, _ in parsed:
        if field is None:
            continue
        if field not in TEMPLATE_VARIABLES:
            shown = "{" + field + "}"
            raise ConfigError(
                f"unknown variable {shown} in --filename template {template!r}: use "
                + ", ".join("{" + name + "}" for name in TEMPLATE_VARIABLES)
            )
        fields.append(field)
    return fields


def _is_absolute(text: str) -> bool:
    return text.startswith(("/", "\\")) or (len(text) > 1 and text[1] == ":")


def render_output_name(
    template: str,
    *,
    track: str,
    stem: str,
    ext: str,
    k: int = 1,
    trackext: str = "",
    parent: str = "",
) -> PurePosixPath:
    """Fill a ``--filename`` template; returns a relative POSIX path inside the output folder.

    Empty path segments (e.g. an empty ``{parent}``) are dropped, so
    ``"{stem}/{parent}/{track}.{ext}"`` gives ``s1/a.wav`` for an input without sub-folder.
    Python format specs work (``"{track}_{k:02d}.{ext}"``). Raises ConfigError for unknown
    variables, absolute results, ``..`` segments or an empty file name.
    """
    _template_fields(template)
    if _is_absolute(template):
        raise ConfigError(f"--filename template {template!r} must be relative to the output folder")
    try:
        text = template.format(
            track=track, trackext=trackext, stem=stem, ext=ext, k=k, parent=parent
        )
    except (ValueError, TypeError, IndexError, KeyError) as err:
        raise ConfigError(f"invalid --filename template {template!r}: {err}") from None
    segments = [segment for segment in text.replace("\\", "/").split("/") if segment]
    if any(segment == ".." for segment in segments):
        raise ConfigError(
            f"--filename template {template!r} gives {text!r}, which leaves the output folder"
        )
    segments = [segment for segment in segments if segment != "."]
    if not segments or text.endswith(("/", "\\")):
        raise ConfigError(f"--filename template {template!r} gives no file name ({text!r})")
    return PurePosixPath(*segments)


def check_template(template: str, stems: Sequence[str], ext: str = "wav") -> None:
    """Validate a template for one input: known variables, relative, and one distinct file per
    source (a template without ``{stem}`` or ``{k}`` fails for more than one source)."""
    names = [
        render_output_name(template, track="track", trackext="wav", stem=stem, ext=ext, k=k)
        for k, stem in enumerate(stems, start=1)
    ]
    if len(set(names)) != len(names):
        raise ConfigError(
            f"--filename template {template!r} writes every source to the same file; "
            "include {stem} or {k}"
        )


def plan_outputs(
    inputs: Sequence[InputFile],
    out_dir: str | os.PathLike[str],
    template: str,
    stems: Sequence[str],
    ext: str,
) -> list[tuple[Path, ...]]:
    """Output paths for every input: ``result[i][k]`` is where stem ``stems[k]`` of
    ``inputs[i]`` goes (``out_dir / rendered template``).

    Raises ConfigError when the template is invalid, the output extension cannot be written,
    two outputs fall on the same path (e.g. ``a/x.wav`` and ``b/x.wav`` with a template
    without ``{parent}``), or an output would overwrite one of the inputs.
    """
    check_template(template, stems, ext)
    out_root = Path(out_dir)
    inputs_by_key = {_path_key(item.path): item for item in inputs}
    owners: dict[str, tuple[InputFile, str]] = {}
    plan: list[tuple[Path, ...]] = []
    for item in inputs:
        paths: list[Path] = []
        for k, stem in enumerate(stems, start=1):
            relative = render_output_name(
                template, track=item.track, trackext=item.trackext, stem=stem, ext=ext, k=k,
                parent=item.parent,
            )
            path = out_root.joinpath(*relative.parts)
            format_from_extension(path)
            key = _path_key(path)
            if key in owners:
                other, other_stem = owners[key]
                raise ConfigError(
                    f"outputs clash: {other.path} ({other_stem}) and {item.path} ({stem}) would "
                    f"both be written to {path}; add {{parent}} or {{track}} to --filename"
                )
            if key in inputs_by_key:
                raise ConfigError(
                    f"output {path} would overwrite the input {inputs_by_key[key].path}; "
                    "choose another output folder or --filename"
                )
            owners[key] = (item, stem)
            paths.append(path)
        plan.append(tuple(paths))
    return plan


def _path_key(path: Path) -> str:
    return os.path.normcase(os.path.realpath(path))
