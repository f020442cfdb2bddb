"""Model configuration: frozen dataclasses, stored as ``config.json`` beside the weights.

A checkpoint holds data only: ``ModelConfig.from_dict(json.load(...))`` rebuilds everything
needed to construct the network, the SDE and the default sampler settings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from diffsep.errors import ConfigError

Task = Literal["separation", "enhancement"]
SDEKind = Literal["mix", "prior_mix"]
Parameterisation = Literal["score", "data", "data_skip"]
"""What the network's output means: ``score`` (the authors' models) or ``data`` (source
estimates, turned into a score in closed form; see :meth:`DiffusionMixingSDE.score_from_sources`)."""

FORMAT_VERSION = 1
DEFAULT_SEGMENT_SECONDS = 4.0
"""Inference window (seconds) of a model whose config does not set one."""
DEFAULT_OVERLAP = 0.25
"""Overlap between inference windows, as a fraction of the window."""


@dataclass(frozen=True)
class STFTConfig:
    """STFT front end of the score network and its magnitude compression 0.15·|X|^0.5."""

    n_fft: int = 510
    hop_length: int = 128
    spec_abs_exponent: float = 0.5
    spec_factor: float = 0.15
    frame_multiple: int = 64  # frames are zero-padded to a multiple of this


@dataclass(frozen=True)
class BackboneConfig:
    """NCSN++ U-Net hyper-parameters (the reference constructor's defaults)."""

    nf: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    fir_kernel: tuple[int, ...] = (1, 3, 3, 1)
    fourier_scale: float = 16.0
    image_size: int = 256
    dropout: float = 0.0
    max_groups: int = 32  # GroupNorm groups: min(channels // 4, max_groups); 32 in NCSN++


@dataclass(frozen=True)
class SDEConfig:
    """Diffusion-mixing SDE. ``kind='prior_mix'`` scales the noise by the mixture's local power."""

    kind: SDEKind = "mix"
    gamma: float = 2.0  # the reference calls it d_lambda
    sigma_min: float = 0.05
    sigma_max: float = 0.5
    avg_len: int = 510  # prior_mix only: moving-average length (samples) of the mixture power


@dataclass(frozen=True)
class SamplerConfig:
    """Default sampler settings used at inference (checked by ``sampling.check_sampler_settings``).

    ``method``: a name in ``sampling.SAMPLERS`` (``pc``: the reference predictor-corrector);
    ``steps``: points of the time grid from the start time down to ``t_eps``;
    ``snr`` and ``corrector_steps``: the Langevin corrector of ``pc``;
    ``denoise``: end on a noise-free estimate;
    ``grid_rho``: spacing of the time grid (1: uniform, larger: denser near ``t_eps``);
    ``tau``: start at ``tau < T`` from the network's own estimate at ``T`` (None: from the prior
    at ``T``);
    ``segment_seconds``: the default window (``--segment``) in seconds; ``None`` means
    :data:`DEFAULT_SEGMENT_SECONDS`;
    ``diffsep export`` fills in the run's training crop, the length the network has seen.
    """

    steps: int = 30
    snr: float = 0.5
    corrector_steps: int = 1
    denoise: bool = True
    t_eps: float = 0.03
    segment_seconds: float | None = None
    method: str = "pc"
    grid_rho: float = 1.0
    tau: float | None = None


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a DiffSep model from its weights."""

    task: Task = "separation"
    num_sources: int = 2
    sample_rate: int = 8000
    stft: STFTConfig = field(default_factory=STFTConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    sde: SDEConfig = field(default_factory=SDEConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    parameterisation: Parameterisation = "score"
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        return _build(cls, data, "config")


def model_segment_seconds(config: ModelConfig) -> float:
    """The model's default window in seconds: ``sampler.segment_seconds``, else 4 s."""
    chosen = config.sampler.segment_seconds
    return DEFAULT_SEGMENT_SECONDS if chosen is None else float(chosen)


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        default = getattr(cls(), name) if _has_default(fields[name]) else None
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, f"{where}.{name}")
        elif isinstance(default, tuple):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
