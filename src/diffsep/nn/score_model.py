"""The DiffSep score network: waveforms in, score out, NCSN++ on compressed spectrograms inside."""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import nn

from diffsep import spectral
from diffsep.config import ModelConfig, Parameterisation
from diffsep.errors import ConfigError
from diffsep.nn.ncsnpp import NCSNpp
from diffsep.sde import make_sde, project_to_mixture

Output = Literal["score", "sources"]


class STFTWindow(nn.Module):
    """Holds the analysis/synthesis window as a persistent buffer ``window`` ``(n_fft,)``."""

    window: torch.Tensor

    def __init__(self, n_fft: int) -> None:
        super().__init__()
        self.register_buffer("window", spectral.hann_window(n_fft))


class ScoreModel(nn.Module):
    """Score of the separation SDE: ``forward(xt (B, K, N), t (B,), mix (B, 1, N)) -> (B, K, N)``.

    ``K = config.num_sources``; all tensors float32, N samples at the model rate, t in (0, 1].
    The sources and the mixture are transformed by :meth:`encode` into ``2K + 2`` real
    spectrogram channels, the NCSN++ ``backbone`` maps them (frames zero-padded to a multiple of
    ``config.stft.frame_multiple``) to ``2K`` channels, and :meth:`decode` returns waveforms.
    The state_dict keys are the authors' (``backbone.*``, ``stft.window``, ``stft_inv.window``).

    ``config.parameterisation`` says what the decoded waveforms are: the score itself
    (``score``, the authors' models), source estimates (``data``), which are made to sum to
    the mixture, or the scaled residual of a skip connection (``data_skip``: the estimates are
    ``y / K + c_skip Pbar x_t + c_out Pbar decoded``, :meth:`DiffusionMixingSDE.sources_from_skip`,
    so that near ``t = 0`` the network only has to refine ``x_t``). Estimates are turned into
    the score in closed form. Either way ``forward`` returns the score, or the source estimates
    with ``output="sources"`` (Tweedie's formula for a score network). ``backbone_dtype`` (None: float32) runs the backbone alone under autocast in
    bfloat16 / float16; the STFT, its inverse and the SDE arithmetic stay float32.
    """

    def __init__(self, config: ModelConfig, backbone_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        _check_config(config)
        self.config = config
        self.num_sources = config.num_sources
        self.backbone_dtype = backbone_dtype
        # the SDE turns source estimates into scores (and back); it needs two sources or more
        self.sde = make_sde(config.sde, config.num_sources) if config.num_sources >= 2 else None
        self.backbone = NCSNpp(
            config.backbone,
            channels_in=2 * config.num_sources + 2,
            channels_out=2 * config.num_sources,
        )
        self.stft = STFTWindow(config.stft.n_fft)
        self.stft_inv = STFTWindow(config.stft.n_fft)

    def encode(self, xt: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
        """Backbone input before frame padding: ``(B, 2K + 2, n_fft // 2 + 1, F)`` float32.

        Channels are ``[Re xt_0..xt_{K-1}, Re mix, Im xt_0..xt_{K-1}, Im mix]`` of the compressed
        STFT; ``F = spectral.num_frames(N)``.
        """
        cfg = self.config.stft
        waves = torch.cat([xt, mix], dim=1)
        spec = spectral.stft(waves, self.stft.window, cfg.n_fft, cfg.hop_length)
        spec = spectral.compress(spec, cfg.spec_factor, cfg.spec_abs_exponent)
        return spectral.complex_to_channels(spec)

    def run_backbone(self, features: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """NCSN++ on ``features (B, 2K+2, Fq, F)`` -> ``(B, 2K, Fq, F)``, frames padded inside."""
        frames = features.shape[-1]
        padded = spectral.pad_frames(features, self.config.stft.frame_multiple)
        if self.backbone_dtype is None:
            out = self.backbone(padded, t)
        else:
            with torch.autocast(padded.device.type, dtype=self.backbone_dtype):
                out = self.backbone(padded, t)
        return spectral.crop_frames(out.float(), frames)

    def decode(self, out: torch.Tensor, num_samples: int) -> torch.Tensor:
        """Backbone output ``(B, 2K, Fq, F)`` (frames cropped) -> waves ``(B, K, num_samples)``."""
        cfg = self.config.stft
        spec = spectral.channels_to_complex(out)
        spec = spectral.decompress(spec, cfg.spec_factor, cfg.spec_abs_exponent)
        return spectral.istft(spec, self.stft_inv.window, cfg.n_fft, cfg.hop_length, num_samples)

    def forward(
        self, xt: torch.Tensor, t: torch.Tensor, mix: torch.Tensor, output: Output = "score"
    ) -> torch.Tensor:
        self._check_inputs(xt, t, mix)
        features = self.encode(xt, mix)
        decoded = self.decode(self.run_backbone(features, t), xt.shape[-1])
        sde = self.sde
        if sde is None:
            if self.config.parameterisation == "score" and output == "score":
                return decoded
            raise ConfigError("source estimates need at least 2 sources")
        if self.config.parameterisation != "score":
            if self.config.parameterisation == "data_skip":
                sources = sde.sources_from_skip(xt, t, mix, decoded)
            else:
                sources = project_to_mixture(decoded, mix)
            return sources if output == "sources" else sde.score_from_sources(xt, t, mix, sources)
        if output == "sources":
            return project_to_mixture(sde.sources_from_score(xt, t, mix, decoded), mix)
        return decoded

    def _check_inputs(self, xt: torch.Tensor, t: torch.Tensor, mix: torch.Tensor) -> None:
        k = self.num_sources
        if xt.ndim != 3 or xt.shape[1] != k:
            raise ValueError(f"ScoreModel: xt must be (B, {k}, N), got {tuple(xt.shape)}")
        batch, _, n = xt.shape
        if tuple(mix.shape) != (batch, 1, n):
            raise ValueError(f"ScoreModel: mix must be ({batch}, 1, {n}), got {tuple(mix.shape)}")
        if tuple(t.shape) != (batch,):
            raise ValueError(f"ScoreModel: t must be ({batch},), got {tuple(t.shape)}")


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bfloat16 natively (oneDNN: AVX-512 BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _check_config(config: ModelConfig) -> None:
    """The spectrogram must fit the backbone: bins = image_size, frames padded far enough."""
    stft, backbone = config.stft, config.backbone
    if config.num_sources < 1:
        raise ConfigError(f"num_sources must be >= 1, got {config.num_sources}")
    accepted = get_args(Parameterisation)
    if config.parameterisation not in accepted:
        raise ConfigError(
            f"parameterisation must be one of {', '.join(accepted)}, "
            f"got {config.parameterisation!r}"
        )
    if stft.n_fft < 2 or not 0 < stft.hop_length <= stft.n_fft:
        raise ConfigError(f"stft: invalid n_fft {stft.n_fft} / hop_length {stft.hop_length}")
    if stft.n_fft // 2 + 1 != backbone.image_size:
        raise ConfigError(
            f"stft.n_fft {stft.n_fft} gives {stft.n_fft // 2 + 1} frequency bins but "
            f"backbone.image_size is {backbone.image_size}"
        )
    if stft.spec_factor <= 0 or stft.spec_abs_exponent <= 0:
        raise ConfigError(
            f"stft: spec_factor ({stft.spec_factor}) and spec_abs_exponent "
            f"({stft.spec_abs_exponent}) must be positive"
        )
    levels = 2 ** (len(backbone.ch_mult) - 1)
    if stft.frame_multiple < 1 or stft.frame_multiple % levels:
        raise ConfigError(
            f"stft.frame_multiple {stft.frame_multiple} must be a multiple of {levels} "
            f"(2 ** (len(backbone.ch_mult) - 1))"
        )
