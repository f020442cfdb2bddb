"""diffsep: speech separation and enhancement with score-based diffusion (DiffSep).

``diffsep.load_model``, ``diffsep.separate`` and ``diffsep.enhance`` are the Python API (see
:mod:`diffsep.api`); they are imported on first use so that ``import diffsep`` stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "enhance", "load_model", "separate"]


def __getattr__(name: str) -> Any:
    if name in ("enhance", "load_model", "separate"):
        from diffsep import api

        return getattr(api, name)
    raise AttributeError(f"module 'diffsep' has no attribute {name!r}")
