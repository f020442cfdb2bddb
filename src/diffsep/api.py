"""The Python API: load a model once, then separate or enhance in-memory signals or files.

>>> import diffsep                                              # doctest: +SKIP
>>> model = diffsep.load_model()                                # bundled separation model
>>> sources = diffsep.separate(model, mix, 44100, seed=0)       # (K, N) at 44.1 kHz

Files go through :func:`diffsep.files.separate_files` with settings from
:func:`diffsep.settings.run_settings` and :func:`diffsep.settings.output_settings`, the same
path as the command line.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from diffsep.audio import ChannelMode
from diffsep.loading import load_model
from diffsep.model import DiffSepModel
from diffsep.sampling import one_call_caution
from diffsep.separator import separate_array
from diffsep.settings import DEFAULT_OVERLAP, RunSettings, run_settings

__all__ = ["enhance", "load_model", "separate"]


def _caution(model: DiffSepModel, settings: RunSettings) -> None:
    """Warn (UserWarning) when a one-call source predictor is asked for more network calls."""
    message = one_call_caution(model.config, settings.sampler)
    if message:
        warnings.warn(message, UserWarning, stacklevel=3)


def separate(
    model: DiffSepModel,
    waveform: np.ndarray | torch.Tensor,
    sample_rate: int,
    *,
    sampler: str | None = None,
    steps: int | None = None,
    snr: float | None = None,
    corrector_steps: int | None = None,
    denoise: bool | None = None,
    tau: float | None = None,
    grid_rho: float | None = None,
    t_eps: float | None = None,
    seed: int | None = None,
    segment: float | None = None,
    overlap: float = DEFAULT_OVERLAP,
    batch_size: int | None = None,
    channels: ChannelMode | str = "mix",
    precision: str = "fp32",
    compile: bool = False,
) -> np.ndarray:
    """Separate ``waveform`` ((N,) or (C, N), float, ``sample_rate`` Hz) into its sources.

    Returns ``(K, N)`` float32 at ``sample_rate`` (``(K, C, N)`` with ``channels='each'``).
    Sampler settings (``sampler``: pc, euler, heun, ddim; ``tau``, ``grid_rho``, ``t_eps``: see
    :class:`~diffsep.config.SamplerConfig`) and the window (``segment``, seconds) default to the
    model's; ``seed`` makes the result reproducible; ``batch_size`` defaults to 1 on the CPU,
    8 on CUDA; ``precision`` (fp32, bf16, fp16 on CUDA) and ``compile`` apply to the network.
    """
    settings = run_settings(
        model, sampler=sampler, steps=steps, snr=snr, corrector_steps=corrector_steps,
        denoise=denoise, tau=tau, grid_rho=grid_rho, t_eps=t_eps, seed=seed, segment=segment, overlap=overlap,
        batch_size=batch_size, channels=channels, precision=precision, compile=compile,
    )
    _caution(model, settings)
    return separate_array(model, waveform, sample_rate, settings)


def enhance(
    model: DiffSepModel,
    waveform: np.ndarray | torch.Tensor,
    sample_rate: int,
    *,
    sampler: str | None = None,
    steps: int | None = None,
    snr: float | None = None,
    corrector_steps: int | None = None,
    denoise: bool | None = None,
    tau: float | None = None,
    grid_rho: float | None = None,
    t_eps: float | None = None,
    seed: int | None = None,
    segment: float | None = None,
    overlap: float = DEFAULT_OVERLAP,
    batch_size: int | None = None,
    channels: ChannelMode | str = "mix",
    precision: str = "fp32",
    compile: bool = False,
) -> np.ndarray:
    """Enhance ``waveform`` with an enhancement model: the speech estimate, same shape as a
    single source of :func:`separate` ((N,), or (C, N) with ``channels='each'``)."""
    settings = run_settings(
        model, sampler=sampler, steps=steps, snr=snr, corrector_steps=corrector_steps,
        denoise=denoise, tau=tau, grid_rho=grid_rho, t_eps=t_eps, seed=seed, segment=segment, overlap=overlap,
        batch_size=batch_size, channels=channels, precision=precision, compile=compile,
    )
    _caution(model, settings)
    return separate_array(model, waveform, sample_rate, settings)[0]
