"""Building blocks of the NCSN++ backbone (the configuration DiffSep uses).

Attribute names (``GroupNorm_0``, ``Conv_0``, ``Dense_0``, ``NIN_0``, ``W``, ``b`` ...) are those of
the authors' checkpoints, so their state_dict keys load unchanged. All residual connections are
rescaled by 1/sqrt(2) (``skip_rescale=True``) and the non-linearity is SiLU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from diffsep.nn.resampling import FIRDownsample, FIRUpsample

SQRT2 = math.sqrt(2.0)


def num_groups(channels: int, max_groups: int = 32) -> int:
    """GroupNorm group count used throughout NCSN++: ``min(channels // 4, max_groups)``."""
    return min(channels // 4, max_groups)


def group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with NCSN++ grouping (at most ``max_groups`` groups) and eps 1e-6."""
    return nn.GroupNorm(num_groups=num_groups(channels, max_groups), num_channels=channels,
                        eps=1e-6)


def ddpm_init_(weight: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """In place DDPM initialisation: uniform with variance ``scale / fan_avg``.

    ``fan_avg = (shape[0] + shape[1]) / 2 * receptive_field``; ``scale = 0`` means 1e-10 (a
    near-zero layer, as the reference does for the last layer of each residual branch).
    """
    scale = 1e-10 if scale == 0 else scale
    receptive = math.prod(weight.shape[2:])
    fan_avg = (weight.shape[0] + weight.shape[1]) * receptive / 2
    bound = math.sqrt(3.0 * scale / fan_avg)
    with torch.no_grad():
        return weight.uniform_(-bound, bound)


def linear(in_dim: int, out_dim: int) -> nn.Linear:
    """Linear layer with DDPM initialisation and zero bias."""
    layer = nn.Linear(in_dim, out_dim)
    ddpm_init_(layer.weight)
    nn.init.zeros_(layer.bias)  # nn.Linear.bias is never None
    return layer


def conv3x3(in_ch: int, out_ch: int, init_scale: float = 1.0) -> nn.Conv2d:
    """3x3 convolution, stride 1, 'same' zero padding, DDPM init, zero bias."""
    conv = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)
    ddpm_init_(conv.weight, init_scale)
    assert conv.bias is not None  # nn.Conv2d(bias=True)
    nn.init.zeros_(conv.bias)
    return conv


def conv1x1(in_ch: int, out_ch: int, init_scale: float = 1.0) -> nn.Conv2d:
    """1x1 convolution, DDPM init, zero bias."""
    conv = nn.Conv2d(in_ch, out_ch, kernel_size=1)
    ddpm_init_(conv.weight, init_scale)
    assert conv.bias is not None  # nn.Conv2d(bias=True)
    nn.init.zeros_(conv.bias)
    return conv


class GaussianFourierProjection(nn.Module):
    """Random Fourier features of a scalar: ``(B,)`` -> ``(B, 2 * size)`` as ``[sin, cos]``.

    ``W`` (size,) is a fixed, non-trainable frequency vector (drawn as ``scale * N(0, 1)``).
    """

    def __init__(self, size: int, scale: float) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(size) * scale, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # same operation order as the reference: (x * W) * 2 * pi, all in float32
        phase = x[:, None] * self.W[None, :] * 2 * math.pi
        return torch.cat([torch.sin(phase), torch.cos(phase)], dim=-1)


class NIN(nn.Module):
    """Per-pixel linear map over channels ("network in network"): ``(B, C, H, W) -> (B, U, H, W)``.

    ``W`` has shape ``(C, U)`` and ``b`` shape ``(U,)``.
    """

    def __init__(self, in_dim: int, num_units: int, init_scale: float = 0.1) -> None:
        super().__init__()
        self.W = nn.Parameter(ddpm_init_(torch.empty(in_dim, num_units), init_scale))
        self.b = nn.Parameter(torch.zeros(num_units))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.W.t()[:, :, None, None], self.b)


class Combine(nn.Module):
    """Merge the input pyramid into the feature map: ``Conv_0(pyramid) + h``."""

    def __init__(self, pyramid_ch: int, ch: int) -> None:
        super().__init__()
        self.Conv_0 = conv1x1(pyramid_ch, ch)

    def forward(self, pyramid: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.Conv_0(pyramid).add_(h)


class AttnBlock(nn.Module):
    """Single-head self-attention over all H*W positions, residual rescaled by 1/sqrt(2).

    ``(B, C, H, W)`` -> ``(B, C, H, W)``.
    """

    def __init__(self, channels: int, max_groups: int = 32) -> None:
        super().__init__()
        self.GroupNorm_0 = group_norm(channels, max_groups)
        self.NIN_0 = NIN(channels, channels)
        self.NIN_1 = NIN(channels, channels)
        self.NIN_2 = NIN(channels, channels)
        self.NIN_3 = NIN(channels, channels, init_scale=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        h = self.GroupNorm_0(x)
        # (B, 1, H*W, C): one head, positions as the sequence; softmax(q k^T / sqrt(C)) v, fused
        q, k, v = (
            nin(h).reshape(batch, 1, channels, height * width).transpose(2, 3)
            for nin in (self.NIN_0, self.NIN_1, self.NIN_2)
        )
        h = F.scaled_dot_product_attention(q, k, v)
        h = h.transpose(2, 3).reshape(batch, channels, height, width)
        h = self.NIN_3(h)
        return h.add_(x).div_(SQRT2)


class ResnetBlockBigGAN(nn.Module):
    """BigGAN-style residual block with time conditioning and optional FIR up/down-sampling.

    ``forward(x (B, in_ch, H, W), temb_act (B, temb_dim))`` -> ``(B, out_ch, H', W')`` where
    ``H' = 2H`` (up), ``H/2`` (down) or ``H``. ``temb_act`` is the time embedding already passed
    through SiLU (the same for every block, so the caller computes it once).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int | None,
        temb_dim: int,
        *,
        up: bool = False,
        down: bool = False,
        fir_kernel: Sequence[float] = (1, 3, 3, 1),
        dropout: float = 0.0,
        max_groups: int = 32,
    ) -> None:
        super().__init__()
        if up and down:
            raise ValueError("ResnetBlockBigGAN: up and down are exclusive")
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = group_norm(in_ch, max_groups)
        self.resample: nn.Module | None = None
        if up:
            self.resample = FIRUpsample(fir_kernel)
        elif down:
            self.resample = FIRDownsample(fir_kernel)
        self.Conv_0 = conv3x3(in_ch, out_ch)
        self.Dense_0 = linear(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch, max_groups)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=0.0)
        self.Conv_2 = conv1x1(in_ch, out_ch) if (in_ch != out_ch or up or down) else None

    def forward(self, x: torch.Tensor, temb_act: torch.Tensor) -> torch.Tensor:
        # in-place ops only touch tensors created here (autograd-safe, saves large allocations)
        h = F.silu(self.GroupNorm_0(x), inplace=True)
        if self.resample is not None:
            h = self.resample(h)
            x = self.resample(x)
        h = self.Conv_0(h)
        h += self.Dense_0(temb_act)[:, :, None, None]
        h = F.silu(self.GroupNorm_1(h), inplace=True)
        h = self.Dropout_0(h)
        h = self.Conv_1(h)
        if self.Conv_2 is not None:
            x = self.Conv_2(x)
        return h.add_(x).div_(SQRT2)
