"""Where a model comes from: a name or path -> files -> a :class:`~diffsep.model.DiffSepModel`.

The one place that composes :mod:`diffsep.hub` (bundled names, Hub repo ids, local paths),
:mod:`diffsep.checkpoint` (config and weights from disk) and :func:`diffsep.model.build_model`.
"""

from __future__ import annotations

from pathlib import Path

from diffsep.checkpoint import load_model_files
from diffsep.config import Task
from diffsep.hub import DEFAULT_MODELS, resolve_model
from diffsep.model import DiffSepModel, build_model, resolve_device


def load_model(
    spec: str | Path | None = None,
    task: Task = "separation",
    device: str = "auto",
) -> DiffSepModel:
    """Load a model: ``spec`` is None (bundled default for ``task``), a bundled name, a Hub
    repo id (downloaded once into the Hugging Face cache), a local folder or a local file."""
    path = resolve_model(None if spec is None else str(spec), task)
    config, state_dict = load_model_files(path)
    name = str(spec) if spec is not None else DEFAULT_MODELS.get(task, str(path))
    return build_model(config, state_dict, resolve_device(device), source=name)
