"""What a run was asked to do, built and checked in one place for the CLI and the Python API.

* :class:`RunSettings`: sampler settings, windows, seed, batch size and channel policy;
  :func:`run_settings` fills the model's defaults in for every option left as None.
* :class:`OutputSettings`: how outputs are named and encoded; :func:`output_settings`.

Both are frozen: once built they are valid, and every later stage only reads them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch

from diffsep.audio import ChannelMode, parse_channel_mode
from diffsep.chunking import WindowPlan, model_window_plan
from diffsep.config import DEFAULT_OVERLAP, SamplerConfig
from diffsep.errors import ConfigError
from diffsep.model import DiffSepModel, Precision, check_precision, compile_network
from diffsep.sampling import check_sampler_settings
from diffsep.writer import choose_subtype, format_from_extension

MAX_SEED = 2**31 - 1

SampleFormat = Literal["int16", "int24", "float32"]

__all__ = ["DEFAULT_OVERLAP", "MAX_SEED", "OutputSettings", "RunSettings", "SampleFormat",
           "choose_seed", "default_batch_size", "output_settings", "run_settings"]


@dataclass(frozen=True)
class RunSettings:
    """How to run the model over inputs.

    sampler: the model's sampler defaults with the user's overrides (checked).
    plan: window and hop in samples at the model rate.
    seed: window ``i`` of channel ``c`` of an input (C channels) draws from ``seed + i*C + c``.
    batch_size: windows (of one or many inputs) per network call.
    precision: the backbone's precision (fp32 | bf16 | fp16; checked against the device).
    compile: the backbone was put through ``torch.compile``.
    """

    sampler: SamplerConfig
    plan: WindowPlan
    seed: int
    batch_size: int = 1
    channel_mode: ChannelMode = "mix"
    precision: Precision = "fp32"
    compile: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {self.batch_size}")


def choose_seed(seed: int | None) -> int:
    """The user's seed, or a fresh random one (reported so the run can be repeated)."""
    if seed is None:
        return secrets.randbelow(MAX_SEED)
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed must be in [0, {MAX_SEED}], got {seed}")
    return int(seed)


def default_batch_size(device: torch.device) -> int:
    """Windows per network call when the user sets none: 8 on CUDA, 1 on the CPU."""
    return 8 if device.type == "cuda" else 1


def run_settings(
    model: DiffSepModel,
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
) -> RunSettings:
    """Settings for running ``model``: every None takes the model's default (its sampler
    settings and window, a random seed, :func:`default_batch_size`). ConfigError if invalid.

    ``sampler`` names the method (``sampling.SAMPLERS``); ``tau`` starts it at ``tau`` from the
    network's own estimate; ``grid_rho`` spaces its time grid; ``t_eps`` is where it stops. ``compile`` compiles the model's
    backbone in place (kept for later runs) once every other setting is valid.
    """
    overrides: dict[str, Any] = {"method": sampler, "steps": steps, "snr": snr,
                 "corrector_steps": corrector_steps, "denoise": denoise, "tau": tau,
                 "grid_rho": grid_rho, "t_eps": t_eps}
    chosen = replace(model.config.sampler,
                     **{name: value for name, value in overrides.items() if value is not None})
    settings = RunSettings(
        sampler=check_sampler_settings(chosen, model.sde.T),
        plan=model_window_plan(model.config, segment, overlap),
        seed=choose_seed(seed),
        batch_size=default_batch_size(model.device) if batch_size is None else batch_size,
        channel_mode=parse_channel_mode(channels) if isinstance(channels, str) else channels,
        precision=precision,  # type: ignore[arg-type]  # checked below
        compile=compile,
    )
    check_precision(precision, model.device)
    if compile:
        compile_network(model)
    return settings


@dataclass(frozen=True)
class OutputSettings:
    """How output files are named and encoded.

    template: ``--filename`` template (see :mod:`diffsep.inputs`); None: the task's default.
    ext: output extension, which picks the format (``wav``, ``flac``, ...).
    subtype: libsndfile subtype (``PCM_24``, ``FLOAT``, ...); None: the format's default.
    model_rate: write at the model's rate instead of each input's rate and length.
    overwrite: replace existing outputs instead of skipping their input.
    """

    template: str | None = None
    ext: str = "wav"
    subtype: str | None = None
    model_rate: bool = False
    overwrite: bool = False


def output_settings(
    *,
    ext: str = "wav",
    sample_format: SampleFormat | None = None,
    template: str | None = None,
    model_rate: bool = False,
    overwrite: bool = False,
) -> OutputSettings:
    """Checked output settings: ConfigError for an extension that cannot be written or a
    sample format the format cannot hold (e.g. float32 FLAC)."""
    file_format, _ = format_from_extension(ext)
    subtype = None if sample_format is None else choose_subtype(file_format, sample_format)
    return OutputSettings(template=template, ext=ext, subtype=subtype, model_rate=model_rate,
                          overwrite=overwrite)
