"""FIR up/down-sampling by a factor of 2 (the StyleGAN2 ``upfirdn2d`` scheme used by NCSN++).

The separable FIR taps ``k`` give the 2-D kernel ``outer(k, k) / sum(k)**2``. Upsampling inserts
zeros between samples and filters with ``4 * kernel`` (unit DC gain per output pixel);
downsampling filters with ``kernel`` and keeps every second sample. Both run as a single
depthwise (transposed) convolution, which matches a zero-stuffing ``upfirdn2d`` to float32
rounding while touching each input value once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from diffsep.errors import ConfigError


def fir_kernel_2d(taps: Sequence[float]) -> torch.Tensor:
    """Normalised separable 2-D FIR kernel, ``(n, n)`` float32 summing to 1."""
    if len(taps) < 2:
        raise ConfigError(f"fir_kernel: need at least 2 taps, got {list(taps)}")
    k = torch.tensor([float(v) for v in taps], dtype=torch.float64)
    if float(k.sum()) == 0.0:
        raise ConfigError(f"fir_kernel: taps {list(taps)} sum to zero")
    k2 = torch.outer(k, k)
    return (k2 / k2.sum()).to(torch.float32)


def upsample_2x(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """FIR upsampling ``(B, C, H, W) -> (B, C, 2H, 2W)``; ``kernel`` from :func:`fir_kernel_2d`.

    Equivalent to zero insertion, padding ``((n-1)//2 + 1, (n-2)//2)`` and correlating with the
    flipped ``4 * kernel``, written as a stride-2 depthwise transposed convolution.
    """
    channels = x.shape[1]
    n = kernel.shape[-1]
    pad_front = (n - 1) // 2 + 1
    weight = (kernel * 4.0).to(dtype=x.dtype, device=x.device)
    weight = weight.expand(channels, 1, n, n)
    out = F.conv_transpose2d(x, weight, stride=2, padding=n - 1 - pad_front, groups=channels)
    if n % 2 == 1:  # odd kernels give one extra trailing row and column
        out = out[..., :-1, :-1]
    return out


def downsample_2x(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """FIR downsampling: ``(B, C, H, W)`` -> ``(B, C, H//2, W//2)`` for even H, W.

    Pads ``((n-1)//2, (n-2)//2)`` zeros, convolves with ``kernel`` and keeps every second sample.
    """
    channels = x.shape[1]
    n = kernel.shape[-1]
    pad_front, pad_back = (n - 1) // 2, (n - 2) // 2
    weight = torch.flip(kernel, (0, 1)).to(dtype=x.dtype, device=x.device)
    weight = weight.expand(channels, 1, n, n)
    if pad_front == pad_back:
        return F.conv2d(x, weight, stride=2, padding=pad_front, groups=channels)
    x = F.pad(x, (pad_front, pad_back, pad_front, pad_back))
    return F.conv2d(x, weight, stride=2, groups=channels)


class FIRUpsample(nn.Module):
    """Parameter-free FIR upsampling by 2 (kernel kept as a non-persistent buffer)."""

    kernel: torch.Tensor

    def __init__(self, taps: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("kernel", fir_kernel_2d(taps), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample_2x(x, self.kernel)


class FIRDownsample(nn.Module):
    """Parameter-free FIR downsampling by 2 (kernel kept as a non-persistent buffer)."""

    kernel: torch.Tensor

    def __init__(self, taps: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("kernel", fir_kernel_2d(taps), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return downsample_2x(x, self.kernel)
