"""Test helpers for writing audio through diffsep's atomic writer (not part of the library)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from diffsep.writer import AtomicAudioWriter, commit_all


class AtomicGroup(contextlib.AbstractContextManager["AtomicGroup"]):
    """Context manager committing several :class:`AtomicAudioWriter` together (see
    :func:`commit_all`): on a clean exit all are committed, on any exception all are aborted.

    >>> with AtomicGroup() as group:                                # doctest: +SKIP
    ...     writers = [group.open(out / f"s{k}" / "a.wav", 8000, 1) for k in (1, 2)]
    ...     for block in blocks: ...                                # write to each writer
    """

    def __init__(self, writers: Iterable[AtomicAudioWriter] = ()) -> None:
        self.writers: list[AtomicAudioWriter] = list(writers)

    def add(self, writer: AtomicAudioWriter) -> AtomicAudioWriter:
        """Put an already created writer under this group's control; returns it."""
        self.writers.append(writer)
        return writer

    def open(self, path: str | os.PathLike[str], sample_rate: int, channels: int,
             **options: Any) -> AtomicAudioWriter:
        """Create an :class:`AtomicAudioWriter` (same arguments) inside this group."""
        try:
            return self.add(AtomicAudioWriter(path, sample_rate, channels, **options))
        except BaseException:
            self.abort()
            raise

    def commit(self) -> list[Path]:
        """Commit every writer as a unit; returns the final paths."""
        return commit_all(self.writers)

    def abort(self) -> None:
        """Abort every writer (delete temporary files)."""
        for writer in self.writers:
            writer.abort()

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        (self.abort if exc_type is not None else self.commit)()


def write_audio(
    path: str | os.PathLike[str],
    audio: Any,
    sample_rate: int,
    *,
    format: str | None = None,
    subtype: str | None = None,
) -> Path:
    """Write a whole ``(C, N)`` array atomically (small uses: tests, evaluation)."""
    array = np.asarray(audio.detach().cpu().numpy() if hasattr(audio, "detach") else audio)
    if array.ndim == 1:
        array = array[None, :]
    with AtomicAudioWriter(path, sample_rate, array.shape[0], format=format,
                           subtype=subtype) as writer:
        writer.write(array)
    return writer.path
