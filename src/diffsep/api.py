"""The Python API: load a model once, then separate or enhance in-memory signals.

>>> import diffsep                                              # doctest: +SKIP
>>> model = diffsep.load_model()                                # bundled separation model
>>> sources = diffsep.separate(model, mix, 44100, seed=0)       # (K, N) at 44.1 kHz
"""

from __future__ import annotations

import numpy as np
import torch

from diffsep.audio import ChannelMode, parse_channel_mode
from diffsep.model import DiffSepModel, load_model, sampler_settings
from diffsep.separator import (
    DEFAULT_OVERLAP,
    RunSettings,
    choose_seed,
    model_window_plan,
    separate_array,
)

__all__ = ["enhance", "load_model", "separate"]


def separate(
    model: DiffSepModel,
    waveform: np.ndarray | torch.Tensor,
    sample_rate: int,
    *,
    steps: int | None = None,
    snr: float | None = None,
    corrector_steps: int | None = None,
    denoise: bool | None = None,
    seed: int | None = None,
    segment: float | None = None,
    overlap: float = DEFAULT_OVERLAP,
    batch_size: int = 1,
    channels: ChannelMode | str = "mix",
) -> np.ndarray:
    """Separate ``waveform`` ((N,) or (C, N), float, ``sample_rate`` Hz) into its sources.

    Returns ``(K, N)`` float32 at ``sample_rate`` (``(K, C, N)`` with ``channels='each'``).
    Sampler settings and the window (``segment``, seconds) default to the model's; ``seed``
    makes the result reproducible.
    """
    settings = RunSettings(
        sampler=sampler_settings(model.config, steps=steps, snr=snr,
                                 corrector_steps=corrector_steps, denoise=denoise),
        plan=model_window_plan(model.config, segment, overlap),
        seed=choose_seed(seed),
        batch_size=batch_size,
        channel_mode=parse_channel_mode(channels) if isinstance(channels, str) else channels,
    )
    return separate_array(model, waveform, sample_rate, settings)


def enhance(
    model: DiffSepModel,
    waveform: np.ndarray | torch.Tensor,
    sample_rate: int,
    **options: object,
) -> np.ndarray:
    """Enhance ``waveform`` with an enhancement model: the speech estimate, same shape as a
    single source of :func:`separate` ((N,), or (C, N) with ``channels='each'``)."""
    return separate(model, waveform, sample_rate, **options)[0]  # type: ignore[arg-type]
