"""STFT front and back end of the score network (pure functions).

Data flow for a waveform batch ``(B, C, N)``:

1. :func:`stft`: right-pad ``n_fft - hop`` zeros, centred STFT with zero padding
   -> ``(B, C, n_fft // 2 + 1, F)`` complex64 with ``F = num_frames(N)``.
2. :func:`compress`: ``factor * |X| ** exponent * exp(i angle X)``.
3. :func:`complex_to_channels`: ``(B, C, Fq, F)`` complex -> ``(B, 2C, Fq, F)`` real,
   channels ``[Re 0..C-1, Im 0..C-1]``.
4. :func:`pad_frames`: zero-pad the frame axis to a multiple of ``frame_multiple``.

and back: :func:`crop_frames`, :func:`channels_to_complex`, :func:`decompress`, :func:`istft`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def hann_window(n_fft: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Periodic Hann window ``(n_fft,)`` float32."""
    return torch.hann_window(n_fft, periodic=True, dtype=torch.float32, device=device)


def num_frames(num_samples: int, n_fft: int = 510, hop_length: int = 128) -> int:
    """Frames :func:`stft` gives for ``num_samples`` samples: ``1 + (N + n_fft - hop) // hop``."""
    return 1 + (num_samples + n_fft - hop_length) // hop_length


def stft(x: torch.Tensor, window: torch.Tensor, n_fft: int, hop_length: int) -> torch.Tensor:
    """Complex STFT of ``x (..., N)`` -> ``(..., n_fft // 2 + 1, F)`` complex.

    The signal is first right-padded with ``n_fft - hop_length`` zeros, then transformed with
    ``center=True`` zero padding, the given window (length ``n_fft``), no normalisation,
    one-sided. ``F = num_frames(N, n_fft, hop_length)``.
    """
    lead = x.shape[:-1]
    flat = F.pad(x.reshape(-1, x.shape[-1]), (0, n_fft - hop_length))
    spec = torch.stft(
        flat,
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=n_fft,
        window=window,
        center=True,
        pad_mode="constant",
        normalized=False,
        onesided=True,
        return_complex=True,
    )
    return spec.reshape(*lead, *spec.shape[-2:])


def istft(
    spec: torch.Tensor, window: torch.Tensor, n_fft: int, hop_length: int, length: int
) -> torch.Tensor:
    """Inverse of :func:`stft`: ``(..., n_fft // 2 + 1, F)`` complex -> ``(..., length)`` real.

    Overlap-add gives ``(F - 1) * hop_length`` samples, which are cropped or zero-padded at the
    end to ``length``.
    """
    lead = spec.shape[:-2]
    flat = spec.reshape(-1, *spec.shape[-2:])
    wave = torch.istft(
        flat,
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=n_fft,
        window=window,
        center=True,
        normalized=False,
        onesided=True,
    )
    wave = wave.reshape(*lead, wave.shape[-1])
    return fit_length(wave, length)


def fit_length(x: torch.Tensor, length: int) -> torch.Tensor:
    """Crop or zero-pad the last axis of ``x`` at the end to ``length`` samples."""
    n = x.shape[-1]
    if n > length:
        return x[..., :length]
    if n < length:
        return F.pad(x, (0, length - n))
    return x


def compress(spec: torch.Tensor, factor: float, exponent: float) -> torch.Tensor:
    """Magnitude compression ``factor * |X| ** exponent * exp(i angle X)``, same shape, complex."""
    if exponent != 1:
        spec = torch.polar(spec.abs() ** exponent, spec.angle())
    return spec * factor


def decompress(spec: torch.Tensor, factor: float, exponent: float) -> torch.Tensor:
    """Inverse of :func:`compress`: ``|X / factor| ** (1 / exponent) * exp(i angle X)``."""
    spec = spec / factor
    if exponent != 1:
        spec = torch.polar(spec.abs() ** (1.0 / exponent), spec.angle())
    return spec


def complex_to_channels(spec: torch.Tensor) -> torch.Tensor:
    """``(B, C, Fq, T)`` complex -> ``(B, 2C, Fq, T)`` real with channels ``[Re..., Im...]``."""
    return torch.cat([spec.real, spec.imag], dim=1)


def channels_to_complex(x: torch.Tensor) -> torch.Tensor:
    """``(B, 2C, Fq, T)`` real with channels ``[Re..., Im...]`` -> ``(B, C, Fq, T)`` complex."""
    if x.shape[1] % 2:
        raise ValueError(f"channels_to_complex: odd channel count {x.shape[1]}")
    half = x.shape[1] // 2
    return torch.complex(x[:, :half], x[:, half:])


def pad_frames(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad the last (frame) axis at the end to the next multiple of ``multiple``."""
    remainder = x.shape[-1] % multiple
    if remainder == 0:
        return x
    return F.pad(x, (0, multiple - remainder))


def crop_frames(x: torch.Tensor, frames: int) -> torch.Tensor:
    """Keep the first ``frames`` entries of the last (frame) axis."""
    return x[..., :frames]
