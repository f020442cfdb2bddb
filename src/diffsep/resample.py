"""Sample-rate conversion with soxr: streaming with an exact output length, and one-shot.

* :class:`StreamResampler` / :func:`resample`: ``float32`` blocks, output length exactly
  :func:`resampled_length` (what reading at the model rate and writing back rely on);
* :func:`resample_hq`: one (N,) signal in float64 (metrics, training data).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import soxr

from diffsep.errors import ConfigError

ResampleQuality = Literal["HQ", "VHQ"]


def resampled_length(frames: int, in_rate: int, out_rate: int) -> int:
    """Exact length of ``frames`` samples resampled from ``in_rate`` to ``out_rate``.

    ``floor(frames * out_rate / in_rate + 1/2)`` in integer arithmetic (halves round up, as soxr
    does); both the streaming reader and the writer produce exactly this many samples.
    """
    if in_rate == out_rate:
        return frames
    return (2 * frames * out_rate + in_rate) // (2 * in_rate)


class StreamResampler:
    """Streaming soxr resampler with an exact total length (see :func:`resampled_length`).

    ``process((n, C) float32) -> (m, C)`` for each block, then ``flush() -> (m, C)`` once.
    soxr compensates its own delay, so the concatenated output is aligned with the input and
    equals one-shot resampling; the last few frames are held back so the total can be trimmed
    or zero-padded to the exact length at the end.
    """

    _HOLD = 16  # output frames held back until flush (soxr can overshoot by one frame)

    def __init__(
        self, in_rate: int, out_rate: int, channels: int, quality: ResampleQuality = "HQ"
    ) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ConfigError(f"invalid sample rates {in_rate} -> {out_rate}")
        self.in_rate = int(in_rate)
        self.out_rate = int(out_rate)
        self.channels = int(channels)
        self.in_frames = 0
        self.out_frames = 0
        self._passthrough = self.in_rate == self.out_rate
        self._stream = (
            None
            if self._passthrough
            else soxr.ResampleStream(
                self.in_rate, self.out_rate, self.channels, dtype="float32", quality=quality
            )
        )
        self._held = np.zeros((0, self.channels), dtype=np.float32)
        self._done = False

    def process(self, frames: np.ndarray) -> np.ndarray:
        """Resample one ``(n, C)`` float32 block; returns ``(m, C)`` (m may be 0)."""
        if self._done:
            raise RuntimeError("StreamResampler.process() after flush()")
        frames = np.ascontiguousarray(frames, dtype=np.float32)
        self.in_frames += frames.shape[0]
        if self._passthrough:
            self.out_frames += frames.shape[0]
            return frames
        assert self._stream is not None
        out = self._stream.resample_chunk(frames)
        pending = np.concatenate([self._held, out]) if self._held.shape[0] else out
        ready = max(pending.shape[0] - self._HOLD, 0)
        self._held = pending[ready:].copy()
        self.out_frames += ready
        return pending[:ready]

    def flush(self) -> np.ndarray:
        """Emit the remaining frames; the total is then exactly ``resampled_length(in_frames)``."""
        if self._done:
            raise RuntimeError("StreamResampler.flush() called twice")
        self._done = True
        if self._passthrough:
            return np.zeros((0, self.channels), dtype=np.float32)
        assert self._stream is not None
        tail = self._stream.resample_chunk(np.zeros((0, self.channels), np.float32), last=True)
        pending = np.concatenate([self._held, tail])
        self._held = pending[:0]
        remaining = resampled_length(self.in_frames, self.in_rate, self.out_rate) - self.out_frames
        remaining = max(remaining, 0)
        if pending.shape[0] < remaining:
            pad = np.zeros((remaining - pending.shape[0], self.channels), np.float32)
            pending = np.concatenate([pending, pad])
        pending = pending[:remaining]
        self.out_frames += pending.shape[0]
        return pending


def resample(audio: np.ndarray, in_rate: int, out_rate: int, quality: ResampleQuality = "HQ"
             ) -> np.ndarray:
    """One-shot ``(C, N) -> (C, M)`` float32 resampling, ``M = resampled_length(N, ...)``."""
    audio = np.asarray(audio, dtype=np.float32)
    resampler = StreamResampler(in_rate, out_rate, audio.shape[0], quality)
    frames = np.ascontiguousarray(audio.T)
    out = np.concatenate([resampler.process(frames), resampler.flush()])
    return np.ascontiguousarray(out.T)


def resample_hq(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample (N,) audio with soxr (high quality); returns float64, a new array."""
    x = np.asarray(x, dtype=np.float64)
    if rate_in == rate_out:
        return x.copy()
    return soxr.resample(x, rate_in, rate_out, quality="HQ")
