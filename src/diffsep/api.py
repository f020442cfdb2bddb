"""The Python API: load a model once, then separate or enhance in-memory signals.

>>> import diffsep                                              # doctest: +SKIP
>>> model = diffsep.load_model()                                # bundled separation model
>>> sources = diffsep.separate(model, mix, 44100, seed=0)       # (K, N) at 44.1 kHz

Files go through :func:`diffsep.files.separate_files` with settings from
:func:`diffsep.settings.run_settings` and :func:`diffsep.settings.output_settings`, the same
path as the command line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from diffsep.loading import load_model
from diffsep.model import DiffSepModel
from diffsep.separator import separate_array
from diffsep.settings import RunOptions, run_settings

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["RunOptions", "enhance", "load_model", "separate"]


def separate(
    model: DiffSepModel,
    waveform: np.ndarray | torch.Tensor,
    sample_rate: int,
    **options: Unpack[RunOptions],
) -> np.ndarray:
    """Separate ``waveform`` ((N,) or (C, N), float, ``sample_rate`` Hz) into its sources.

    Returns ``(K, N)`` float32 at ``sample_rate`` (``(K, C, N)`` with ``channels='each'``).
    ``options`` (:class:`~diffsep.settings.RunOptions`): ``steps``, ``snr``,
    ``corrector_steps``, ``denoise`` and the window (``segment`` seconds, ``overlap``) default
    to the model's; ``seed`` makes the result reproducible; ``batch_size`` defaults to 1 on the
    CPU, 8 on CUDA; ``channels`` to ``'mix'``.
    """
    return separate_array(model, waveform, sample_rate, run_settings(model, **options))


def enhance(
    model: DiffSepModel,
    waveform: np.ndarray | torch.Tensor,
    sample_rate: int,
    **options: Unpack[RunOptions],
) -> np.ndarray:
    """Enhance ``waveform`` with an enhancement model: the speech estimate, same shape as a
    single source of :func:`separate` ((N,), or (C, N) with ``channels='each'``); the same
    ``options``."""
    return separate_array(model, waveform, sample_rate, run_settings(model, **options))[0]
