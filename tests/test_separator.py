"""The separator: reference equivalence through the public path, windows, batching, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import FIXTURES, speech_like

from diffsep.api import enhance, separate
from diffsep.chunking import efficient_window_length, plan_windows_for
from diffsep.config import STFTConfig
from diffsep.errors import AudioError, ConfigError


@pytest.mark.slow  # a full model run or a large network: over a second
def test_single_window_run_reproduces_reference_separate(small_sep_model) -> None:
    """The whole public path (normalise, sample, rescale) on the reference's full run (e)."""
    expected = torch.load(FIXTURES / "expected-small-sep.pt", weights_only=True)
    wav = expected["full.wav"][0].numpy()
    out = separate(small_sep_model, wav, 8000, seed=int(expected["full.seed"]))
    ref = expected["full.sep"][0].numpy()
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()


def test_window_lengths_avoid_padded_frames() -> None:
    stft = STFTConfig()
    for requested in (1000, 16000, 32000, 64000, 100000):
        length = efficient_window_length(requested, stft)
        frames = 1 + (length + stft.n_fft - stft.hop_length) // stft.hop_length
        assert frames % stft.frame_multiple == 0
        assert frames // stft.frame_multiple == max(1, round((requested + 383) / 8192))
        # one more sample would need one more frame
        assert (1 + (length + 1 + 382) // 128) == frames + 1
    plan = plan_windows_for(4.0, 0.25, 8000, stft)
    assert plan.window == 32385 and plan.hop == plan.window - round(0.25 * plan.window)
    with pytest.raises(ConfigError):
        plan_windows_for(4.0, 1.0, 8000, stft)
    with pytest.raises(ConfigError):
        plan_windows_for(0.0, 0.25, 8000, stft)


@pytest.mark.slow  # a full model run or a large network: over a second
def test_output_does_not_depend_on_batch_size(small_sep_model) -> None:
    """Several windows: batch size 1 and 3 give the same result (noise is per window)."""
    mix = speech_like(2.5, 8000, 1) + speech_like(2.5, 8000, 2, f0=210)
    kwargs = dict(seed=5, steps=2, segment=0.9, overlap=0.25)
    one = separate(small_sep_model, mix, 8000, batch_size=1, **kwargs)
    three = separate(small_sep_model, mix, 8000, batch_size=3, **kwargs)
    assert one.shape == (2, mix.shape[0])
    np.testing.assert_allclose(one, three, rtol=0, atol=1e-5 * np.abs(one).max())
    other_seed = separate(small_sep_model, mix, 8000, batch_size=1, **{**kwargs, "seed": 6})
    assert np.abs(other_seed - one).max() > 1e-3 * np.abs(one).max()


def test_input_rate_and_length_are_kept(small_sep_model) -> None:
    mix = speech_like(1.3, 22050, 3)
    out = separate(small_sep_model, mix, 22050, seed=0, steps=2)
    assert out.shape == (2, mix.shape[0]) and out.dtype == np.float32
    assert np.isfinite(out).all()


@pytest.mark.slow  # a full model run or a large network: over a second
def test_each_channel_mode_keeps_channels(small_sep_model) -> None:
    stereo = np.stack([speech_like(1.0, 8000, 4), speech_like(1.0, 8000, 5, f0=200)])
    out = separate(small_sep_model, stereo, 8000, seed=0, steps=2, channels="each")
    assert out.shape == (2, 2, 8000)
    mixed = separate(small_sep_model, stereo, 8000, seed=0, steps=2)
    assert mixed.shape == (2, 8000)


def test_silence_in_gives_silence_out(small_sep_model) -> None:
    out = separate(small_sep_model, np.zeros(8000, np.float32), 8000, seed=0, steps=2)
    assert np.array_equal(out, np.zeros((2, 8000), np.float32))


def test_partly_silent_input_has_no_nan(small_sep_model) -> None:
    mix = np.concatenate([np.zeros(20000, np.float32), speech_like(1.0, 8000, 6)])
    out = separate(small_sep_model, mix, 8000, seed=0, steps=2, segment=1.0)
    assert np.isfinite(out).all()
    assert np.abs(out[:, :8000]).max() == 0.0  # whole windows of silence stay silent


def test_bad_arrays_are_rejected(small_sep_model) -> None:
    with pytest.raises(AudioError, match="NaN or Inf"):
        separate(small_sep_model, np.full(8000, np.nan, np.float32), 8000)
    with pytest.raises(AudioError, match="too short"):
        separate(small_sep_model, np.ones(100, np.float32), 8000)
    with pytest.raises(AudioError, match="non-empty"):
        separate(small_sep_model, np.zeros(0, np.float32), 8000)


@pytest.mark.slow  # a full model run or a large network: over a second
def test_enhance_returns_the_speech_source(small_enh_model) -> None:
    noisy = speech_like(1.0, 16000, 7) + 0.01 * np.random.default_rng(0).standard_normal(16000)
    speech = enhance(small_enh_model, noisy.astype(np.float32), 16000, seed=1, steps=2)
    both = separate(small_enh_model, noisy.astype(np.float32), 16000, seed=1, steps=2)
    assert speech.shape == (16000,)
    np.testing.assert_array_equal(speech, both[0])
