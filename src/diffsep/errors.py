"""One exception family for everything a user can cause; the CLI turns these into messages."""

from __future__ import annotations


class DiffsepError(Exception):
    """Base class: a problem the user can fix. ``str(err)`` is a one-line message."""


class AudioError(DiffsepError):
    """An input file cannot be used (missing, not audio, empty, too short, NaN/Inf, ...)."""


class OutputError(DiffsepError):
    """An output cannot be written (unwritable folder, full disk, ...)."""


class CheckpointError(DiffsepError):
    """A checkpoint or model folder is missing, malformed or not allowed."""


class ModelNotFoundError(CheckpointError):
    """A model could not be found locally and cannot be downloaded (e.g. offline)."""


class ConfigError(DiffsepError):
    """A configuration value is invalid."""


def first_lines(err: BaseException, count: int = 1) -> str:
    """The first ``count`` non-empty lines of ``str(err)``, joined by spaces: a one-line detail
    for a message. An exception without text gives its type name."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return " ".join(lines[:count]) if lines else type(err).__name__
