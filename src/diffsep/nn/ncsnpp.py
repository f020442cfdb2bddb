"""NCSN++ U-Net (Song et al., 2021) in the configuration used by DiffSep.

Fixed choices: BigGAN residual blocks with FIR resampling, Gaussian Fourier embedding of
``log t``, an input pyramid merged by summation on the way down ("input_skip"), an output
pyramid accumulated on the way up ("output_skip"), 1/sqrt(2) residual rescaling, SiLU, inputs
mapped ``x -> 2x - 1``, and the output pyramid divided by ``t`` before the final 1x1 layer.

Every module lives in ``all_modules`` in the authors' order, so their state_dict keys
(``output_layer.*``, ``all_modules.<i>.*``) load unchanged. Index bookkeeping is done once in
the constructor; :meth:`NCSNpp.forward` walks the recorded plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from diffsep.config import BackboneConfig
from diffsep.errors import ConfigError
from diffsep.nn.layers import (
    AttnBlock,
    Combine,
    GaussianFourierProjection,
    ResnetBlockBigGAN,
    conv3x3,
    group_norm,
    linear,
    num_groups,
)
from diffsep.nn.resampling import FIRDownsample, FIRUpsample


@dataclass
class _DownLevel:
    """Module indices of one encoder level."""

    blocks: list[int] = field(default_factory=list)
    attention: list[int | None] = field(default_factory=list)
    downsample: int | None = None  # ResnetBlockBigGAN(down=True)
    combine: int | None = None  # Combine with the downsampled input pyramid


@dataclass
class _UpLevel:
    """Module indices of one decoder level."""

    blocks: list[int] = field(default_factory=list)
    attention: int | None = None
    pyramid_norm: int = -1
    pyramid_conv: int = -1
    upsample: int | None = None  # ResnetBlockBigGAN(up=True)


class NCSNpp(nn.Module):
    """Score U-Net on stacked spectrogram channels.

    ``forward(x (B, channels_in, H, W), t (B,))`` -> ``(B, channels_out, H, W)`` where ``H`` must be
    ``config.image_size`` and ``H`` and ``W`` multiples of ``2 ** (len(ch_mult) - 1)``.
    """

    def __init__(self, config: BackboneConfig, channels_in: int, channels_out: int) -> None:
        super().__init__()
        _check_config(config)
        nf = config.nf
        num_levels = len(config.ch_mult)
        resolutions = [config.image_size // 2**i for i in range(num_levels)]
        attn_at = set(config.attn_resolutions)
        temb_dim = 4 * nf
        self.image_size = config.image_size
        self.num_levels = num_levels

        # registered first: the authors' key order starts with output_layer
        self.output_layer = nn.Conv2d(channels_in, channels_out, 1)
        self.pyramid_upsample = FIRUpsample(config.fir_kernel)
        self.pyramid_downsample = FIRDownsample(config.fir_kernel)

        modules: list[nn.Module] = []

        def add(module: nn.Module) -> int:
            modules.append(module)
            return len(modules) - 1

        def resblock(in_ch: int, out_ch: int | None = None, **kw: bool) -> ResnetBlockBigGAN:
            return ResnetBlockBigGAN(
                in_ch,
                out_ch,
                temb_dim,
                fir_kernel=config.fir_kernel,
                dropout=config.dropout,
                max_groups=config.max_groups,
                **kw,
            )

        # time embedding: Fourier features of log t, then two dense layers
        self._fourier = add(GaussianFourierProjection(nf, config.fourier_scale))
        self._temb_dense = (add(linear(2 * nf, temb_dim)), add(linear(temb_dim, temb_dim)))
        self._input_conv = add(conv3x3(channels_in, nf))

        # encoder; skip_channels mirrors the feature maps pushed on the skip stack
        skip_channels = [nf]
        ch = nf
        self._down: list[_DownLevel] = []
        for level in range(num_levels):
            plan = _DownLevel()
            for _ in range(config.num_res_blocks):
                out_ch = nf * config.ch_mult[level]
                plan.blocks.append(add(resblock(ch, out_ch)))
                ch = out_ch
                has_attn = resolutions[level] in attn_at
                plan.attention.append(add(AttnBlock(ch, config.max_groups)) if has_attn else None)
                skip_channels.append(ch)
            if level != num_levels - 1:
                plan.downsample = add(resblock(ch, down=True))
                plan.combine = add(Combine(channels_in, ch))
                skip_channels.append(ch)
            self._down.append(plan)

        # bottleneck
        self._mid = (add(resblock(ch)), add(AttnBlock(ch, config.max_groups)), add(resblock(ch)))

        # decoder with the output pyramid
        self._up: list[_UpLevel] = []
        for level in reversed(range(num_levels)):
            up_plan = _UpLevel()
            for _ in range(config.num_res_blocks + 1):
                out_ch = nf * config.ch_mult[level]
                up_plan.blocks.append(add(resblock(ch + skip_channels.pop(), out_ch)))
                ch = out_ch
            if resolutions[level] in attn_at:
                up_plan.attention = add(AttnBlock(ch, config.max_groups))
            up_plan.pyramid_norm = add(group_norm(ch, config.max_groups))
            up_plan.pyramid_conv = add(conv3x3(ch, channels_in, init_scale=0.0))
            if level != 0:
                up_plan.upsample = add(resblock(ch, up=True))
            self._up.append(up_plan)
        if skip_channels:
            raise RuntimeError("NCSNpp: unbalanced skip connections")  # construction bug

        self.all_modules = nn.ModuleList(modules)

    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        """``t (B,)`` in (0, 1] -> SiLU-activated embedding ``(B, 4 nf)`` fed to every block."""
        m = self.all_modules
        temb = m[self._fourier](torch.log(t))
        temb = m[self._temb_dense[0]](temb)
        temb = m[self._temb_dense[1]](F.silu(temb))
        return F.silu(temb)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self._check_input(x, t)
        m = self.all_modules
        temb = self.time_embedding(t)

        x = 2 * x - 1.0
        input_pyramid = x
        skips = [m[self._input_conv](x)]
        h = skips[-1]
        for plan in self._down:
            for block, attn in zip(plan.blocks, plan.attention, strict=True):
                h = m[block](skips[-1], temb)
                if attn is not None:
                    h = m[attn](h)
                skips.append(h)
            if plan.downsample is not None and plan.combine is not None:
                h = m[plan.downsample](skips[-1], temb)
                input_pyramid = self.pyramid_downsample(input_pyramid)
                h = m[plan.combine](input_pyramid, h)
                skips.append(h)

        h = m[self._mid[0]](h, temb)
        h = m[self._mid[1]](h)
        h = m[self._mid[2]](h, temb)

        pyramid: torch.Tensor | None = None
        for up_plan in self._up:
            for block in up_plan.blocks:
                h = m[block](torch.cat([h, skips.pop()], dim=1), temb)
            if up_plan.attention is not None:
                h = m[up_plan.attention](h)
            level_out = m[up_plan.pyramid_conv](F.silu(m[up_plan.pyramid_norm](h)))
            pyramid = level_out if pyramid is None else self.pyramid_upsample(pyramid) + level_out
            if up_plan.upsample is not None:
                h = m[up_plan.upsample](h, temb)

        if pyramid is None:  # unreachable: ch_mult is never empty
            raise RuntimeError("NCSNpp: no decoder level")
        pyramid = pyramid / t.reshape(-1, 1, 1, 1)
        return self.output_layer(pyramid)

    def _check_input(self, x: torch.Tensor, t: torch.Tensor) -> None:
        multiple = 2 ** (self.num_levels - 1)
        if x.ndim != 4 or x.shape[-2] != self.image_size or x.shape[-1] % multiple:
            raise ValueError(
                f"NCSNpp: expected input (B, C, {self.image_size}, W) with W a multiple of "
                f"{multiple}, got {tuple(x.shape)}"
            )
        if t.shape != (x.shape[0],):
            raise ValueError(f"NCSNpp: expected t of shape ({x.shape[0]},), got {tuple(t.shape)}")


def _check_config(config: BackboneConfig) -> None:
    if config.nf < 4 or config.nf % 4:
        raise ConfigError(f"backbone.nf must be a positive multiple of 4, got {config.nf}")
    if not config.ch_mult or any(c < 1 for c in config.ch_mult):
        raise ConfigError(f"backbone.ch_mult must be positive integers, got {config.ch_mult}")
    if config.max_groups < 1:
        raise ConfigError(f"backbone.max_groups must be >= 1, got {config.max_groups}")
    for ch in {config.nf * mult for mult in config.ch_mult}:
        groups = num_groups(ch, config.max_groups)
        if ch % groups:
            raise ConfigError(
                f"backbone: {ch} channels cannot be split into {groups} GroupNorm groups"
            )
    if config.num_res_blocks < 1:
        raise ConfigError(f"backbone.num_res_blocks must be >= 1, got {config.num_res_blocks}")
    if config.image_size % 2 ** (len(config.ch_mult) - 1):
        raise ConfigError(
            f"backbone.image_size {config.image_size} is not divisible by "
            f"2**{len(config.ch_mult) - 1}"
        )
    if not 0.0 <= config.dropout < 1.0:
        raise ConfigError(f"backbone.dropout must be in [0, 1), got {config.dropout}")
