"""Build a folder (a split, an evaluation set) under a hidden staging name; rename when done.

A folder of the corpus thus either is complete or does not exist: an interrupted run leaves
only `.NAME.partial`, which the next run continues (files already there are kept)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import CorpusError


@dataclass(frozen=True)
class Stage:
    final: Path

    @property
    def partial(self) -> Path:
        return self.final.parent / f".{self.final.name}.partial"

    def open(self) -> Path:
        """The staging folder to write into: a finished folder is moved back to it to be
        completed; an interrupted run's staging folder is continued."""
        if self.final.exists():
            if self.partial.exists():
                raise CorpusError(
                    f"{self.final}: both it and {self.partial.name} exist; remove one and rerun"
                )
            os.replace(self.final, self.partial)
        self.partial.mkdir(parents=True, exist_ok=True)
        return self.partial

    def commit(self) -> Path:
        """Rename the staging folder to its final name."""
        os.replace(self.partial, self.final)
        return self.final
