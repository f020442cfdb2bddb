"""STFT front and back end of the score network."""

from __future__ import annotations

import math

import pytest
import torch

from diffsep import spectral

N_FFT, HOP, FACTOR, EXPONENT, MULTIPLE = 510, 128, 0.15, 0.5, 64


@pytest.fixture
def window() -> torch.Tensor:
    return spectral.hann_window(N_FFT)


def test_hann_window_is_periodic():
    w = spectral.hann_window(8)
    expected = torch.tensor([0.5 - 0.5 * math.cos(2 * math.pi * n / 8) for n in range(8)])
    assert w.dtype == torch.float32
    assert torch.allclose(w, expected, atol=1e-7)


@pytest.mark.parametrize("length", [1, 127, 128, 129, 1000, 7777, 7778, 8000, 32000])
def test_frame_count(window, length):
    expected = 1 + (length + 382) // 128
    assert spectral.num_frames(length, N_FFT, HOP) == expected
    spec = spectral.stft(torch.randn(2, 3, length), window, N_FFT, HOP)
    assert spec.shape == (2, 3, 256, expected)
    assert spec.dtype == torch.complex64


def test_stft_right_pads_before_centred_transform(window):
    """Frame f is centred on sample f * hop of the signal right-padded with n_fft - hop zeros."""
    torch.manual_seed(0)
    x = torch.randn(1000, dtype=torch.float64)
    spec = spectral.stft(x, window.double(), N_FFT, HOP)
    padded = torch.cat([torch.zeros(255), x, torch.zeros(382 + 255)]).double()
    for frame in (0, 3, spec.shape[-1] - 1):
        segment = padded[frame * HOP : frame * HOP + N_FFT] * window.double()
        assert torch.allclose(spec[:, frame], torch.fft.rfft(segment), atol=1e-9)


def test_compress_magnitude_and_phase():
    spec = torch.tensor([4.0 * complex(math.cos(1.0), math.sin(1.0)), 0j, -9.0 + 0j])
    out = spectral.compress(spec, FACTOR, EXPONENT)
    assert torch.allclose(out.abs(), torch.tensor([0.3, 0.0, 0.45]), atol=1e-6)
    assert torch.allclose(out[0].angle(), torch.tensor(1.0), atol=1e-6)
    assert torch.allclose(out[2].angle().abs(), torch.tensor(math.pi), atol=1e-6)
    assert torch.isfinite(torch.view_as_real(out)).all()
    assert torch.allclose(spectral.decompress(out, FACTOR, EXPONENT), spec, atol=1e-5)


def test_channel_layout_is_real_parts_then_imaginary_parts():
    spec = torch.complex(torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5))
    channels = spectral.complex_to_channels(spec)
    assert channels.shape == (2, 6, 4, 5)
    assert torch.equal(channels[:, 1], spec[:, 1].real)
    assert torch.equal(channels[:, 4], spec[:, 1].imag)
    assert torch.equal(spectral.channels_to_complex(channels), spec)


def test_pad_and_crop_frames():
    x = torch.randn(1, 6, 256, 66)
    padded = spectral.pad_frames(x, MULTIPLE)
    assert padded.shape == (1, 6, 256, 128)
    assert torch.equal(padded[..., :66], x)
    assert torch.all(padded[..., 66:] == 0)
    assert torch.equal(spectral.crop_frames(padded, 66), x)
    exact = torch.randn(1, 6, 256, 64)
    assert spectral.pad_frames(exact, MULTIPLE) is exact


def test_fit_length():
    x = torch.arange(10.0).reshape(1, 10)
    assert torch.equal(spectral.fit_length(x, 4), x[:, :4])
    assert torch.equal(spectral.fit_length(x, 12), torch.cat([x, torch.zeros(1, 2)], dim=1))
    assert spectral.fit_length(x, 10) is x


@pytest.mark.parametrize("length", [1000, 7777, 8000], ids=["11-frames", "64-frames", "66-frames"])
def test_front_end_back_end_round_trip(window, length):
    """stft, compress, to channels, pad/crop frames, to complex, decompress, istft: identity."""
    torch.manual_seed(length)
    x = torch.randn(2, 3, length)
    spec = spectral.compress(spectral.stft(x, window, N_FFT, HOP), FACTOR, EXPONENT)
    frames = spec.shape[-1]
    channels = spectral.pad_frames(spectral.complex_to_channels(spec), MULTIPLE)
    assert channels.shape == (2, 6, 256, math.ceil(frames / MULTIPLE) * MULTIPLE)
    back = spectral.channels_to_complex(spectral.crop_frames(channels, frames))
    y = spectral.istft(spectral.decompress(back, FACTOR, EXPONENT), window, N_FFT, HOP, length)
    assert y.shape == x.shape
    assert (y - x).abs().max() <= 1e-5 * x.abs().max()


def test_istft_zero_pads_when_asked_for_more_samples(window):
    x = torch.randn(1, 1000)
    spec = spectral.stft(x, window, N_FFT, HOP)
    natural = (spec.shape[-1] - 1) * HOP
    y = spectral.istft(spec, window, N_FFT, HOP, natural + 50)
    assert y.shape == (1, natural + 50)
    assert torch.all(y[:, natural:] == 0)
    assert torch.allclose(y[:, :1000], x, atol=1e-5)
