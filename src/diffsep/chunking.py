"""Long signals in overlapping windows and back: planning, streaming windowing, cross-fade
overlap-add and source-permutation alignment. Pure numerics (torch); no file I/O.

Window layout for a signal of ``total`` samples, window ``W`` and hop ``H`` (``1 <= H <= W``):

* regular windows start at ``0, H, 2H, ...`` as long as the previous window ends before
  ``total``;
* if the last regular window stops short of the end, one final window is *aligned to the end*
  (start ``total - W``), so it holds real audio only and no zero padding;
* a signal shorter than ``W`` gives a single window at 0 zero-padded to ``W``
  (``Window.length`` says how many samples are real). The padded tail is silence, which the
  model separates into silence; samples past ``total`` are dropped by the overlap-add. Callers
  that normalise or rescale a window against its mixture should use ``data[..., :length]``
  (or accept that the zeros lower the window's power; the rescaling is per window either way).

Overlap-add: every window's estimate is multiplied by a cross-fade weight (flat 1 in the
middle, raised-cosine fades of ``fade`` samples at the ends, no fade-in for the window at 0),
summed, and divided by the running sum of weights. The fades are strictly positive, so the
division is exact everywhere and an identity processor reconstructs the input exactly, with any
overlap pattern (including the irregular one before the end-aligned window).

Both streaming classes keep O(W) samples, so memory does not grow with the signal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diffsep import permutation
from diffsep.config import ModelConfig, STFTConfig, model_segment_seconds
from diffsep.errors import ConfigError
from diffsep.permutation import MAX_BRUTE_FORCE_SOURCES


@dataclass(frozen=True)
class WindowPlan:
    """Window length and hop in samples at the model rate."""

    window: int
    hop: int


def efficient_window_length(requested: int, stft: STFTConfig) -> int:
    """Longest length whose STFT frame count is a multiple of ``stft.frame_multiple``, nearest
    to ``requested`` samples (so no network work is spent on padded frames)."""
    block = stft.hop_length * stft.frame_multiple
    extra = stft.n_fft - stft.hop_length + 1
    blocks = max(1, round((requested + extra) / block))
    return blocks * block - extra


def plan_windows_for(
    segment_seconds: float, overlap: float, sample_rate: int, stft: STFTConfig
) -> WindowPlan:
    """``--segment`` (seconds) and ``--overlap`` (fraction of a window) -> samples."""
    if not math.isfinite(segment_seconds) or segment_seconds <= 0:
        raise ConfigError(f"segment must be a positive number of seconds, got {segment_seconds}")
    if not 0.0 <= overlap < 1.0:
        raise ConfigError(f"overlap must be a fraction in [0, 1), got {overlap}")
    window = efficient_window_length(round(segment_seconds * sample_rate), stft)
    hop = max(1, window - round(overlap * window))
    return WindowPlan(window, hop)


def model_window_plan(config: ModelConfig, segment: float | None, overlap: float) -> WindowPlan:
    """Windows for a model: ``segment`` seconds, or the model's own window when None."""
    seconds = model_segment_seconds(config) if segment is None else segment
    return plan_windows_for(seconds, overlap, config.sample_rate, config.stft)


def _check_layout(window: int, hop: int) -> None:
    if window <= 0:
        raise ValueError(f"window must be positive, got {window}")
    if not 1 <= hop <= window:
        raise ValueError(f"hop must be in [1, window={window}], got {hop}")


def plan_windows(total: int, window: int, hop: int) -> list[int]:
    """Start indices of the windows covering ``total`` samples (see the module docstring).

    The same starts, in the same order, as :class:`StreamingWindower` produces when the length
    is not known in advance. ``total == 0`` gives no window.
    """
    _check_layout(window, hop)
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    if total == 0:
        return []
    if total <= window:
        return [0]
    starts = [0]
    while starts[-1] + window < total:
        nxt = starts[-1] + hop
        if nxt + window <= total:
            starts.append(nxt)
        else:
            starts.append(total - window)
    return starts


def default_fade(window: int, hop: int) -> int:
    """Fade length used by :class:`StreamingOverlapAdd`: the overlap, at most half a window."""
    _check_layout(window, hop)
    return min(window - hop, window // 2)


def crossfade_window(
    length: int,
    fade: int,
    *,
    fade_in: bool = True,
    fade_out: bool = True,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Cross-fade weights ``(length,)``: 1 in the middle, raised-cosine fades of ``fade`` samples.

    Fade-in values are ``sin²(π/2 · (i + 1/2) / fade)`` for ``i < fade`` (strictly inside
    (0, 1)); the fade-out mirrors it, so with an overlap of exactly ``fade`` samples the
    outgoing and incoming weights sum to 1. ``fade`` is limited to ``length // 2`` when both
    fades are on (``length`` otherwise).
    """
    if length <= 0:
        raise ValueError(f"length must be positive, got {length}")
    if fade < 0:
        raise ValueError(f"fade must be >= 0, got {fade}")
    limit = length // 2 if (fade_in and fade_out) else length
    fade = min(fade, limit)
    weights = torch.ones(length, dtype=dtype)
    if fade > 0:
        position = (torch.arange(fade, dtype=torch.float64) + 0.5) / fade
        ramp = torch.sin(0.5 * math.pi * position).pow(2).to(dtype)
        if fade_in:
            weights[:fade] = ramp
        if fade_out:
            weights[length - fade :] = ramp.flip(0)
    return weights


@dataclass(frozen=True)
class Window:
    """One window of the stream: ``data (C, W)`` from sample ``start`` on (model rate).

    ``length`` is the number of real samples (``W`` except for an input shorter than one
    window, whose window is zero-padded after ``length``).
    """

    start: int
    data: Tensor
    length: int


def _as_tensor(block: Any) -> Tensor:
    if isinstance(block, Tensor):
        return block.detach()
    return torch.from_numpy(np.ascontiguousarray(block))


class StreamingWindower:
    """Cut a stream of ``(C, n)`` blocks into overlapping ``(C, W)`` windows, O(W) memory.

    ``push(block)`` returns the windows completed by that block; ``finish()`` returns the final
    end-aligned or zero-padded window, if one is needed. Starts follow :func:`plan_windows` for
    the length pushed in total (:attr:`total`). Windows own their data (never views of the
    caller's blocks or of the internal buffer).
    """

    def __init__(self, window: int, hop: int) -> None:
        _check_layout(window, hop)
        self.window = int(window)
        self.hop = int(hop)
        self.total = 0  # samples pushed so far
        self._buffer: Tensor | None = None  # holds samples [self._buffer_start, self.total)
        self._buffer_start = 0
        self._next_start = 0  # start of the next regular window
        self._last_end = 0  # end of the last window emitted (0: none yet)
        self._count = 0
        self._finished = False

    @property
    def buffered_frames(self) -> int:
        """Samples held internally (never more than ``W`` between calls)."""
        return 0 if self._buffer is None else int(self._buffer.shape[-1])

    @property
    def windows_emitted(self) -> int:
        """Number of windows returned so far."""
        return self._count

    def push(self, block: Any) -> list[Window]:
        """Append a ``(C, n)`` block (numpy or tensor); returns the windows it completes."""
        if self._finished:
            raise RuntimeError("push() after finish()")
        data = _as_tensor(block)
        if data.ndim != 2:
            raise ValueError(f"expected a (C, n) block, got shape {tuple(data.shape)}")
        if self._buffer is None:
            self._buffer = data[:, :0].clone()
        elif data.shape[0] != self._buffer.shape[0] or data.dtype != self._buffer.dtype:
            raise ValueError(
                f"block of shape {tuple(data.shape)} / {data.dtype} does not match earlier "
                f"blocks ({self._buffer.shape[0]} channels, {self._buffer.dtype})"
            )
        if data.shape[-1] == 0:
            return []
        self._buffer = torch.cat([self._buffer, data], dim=-1)
        self.total += int(data.shape[-1])
        windows: list[Window] = []
        while self._next_start + self.window <= self.total:
            windows.append(self._take(self._next_start, self.window))
            self._next_start += self.hop
        self._trim()
        return windows

    def finish(self) -> list[Window]:
        """The last window(s) once the stream has ended (empty list if none is needed)."""
        if self._finished:
            raise RuntimeError("finish() called twice")
        self._finished = True
        windows: list[Window] = []
        if self.total == 0 or self._buffer is None:
            return windows
        if self.total < self.window:
            real = self._buffer[:, : self.total]
            padded = real.new_zeros((real.shape[0], self.window))
            padded[:, : self.total] = real
            windows.append(Window(start=0, data=padded, length=self.total))
            self._count += 1
        elif self._last_end < self.total:
            windows.append(self._take(self.total - self.window, self.window))
        self._buffer = self._buffer[:, :0].clone()
        self._buffer_start = self.total
        return windows

    def _take(self, start: int, length: int) -> Window:
        assert self._buffer is not None
        offset = start - self._buffer_start
        data = self._buffer[:, offset : offset + length].clone()
        self._last_end = start + length
        self._count += 1
        return Window(start=start, data=data, length=length)

    def _trim(self) -> None:
        """Drop samples that no future window needs: keep from the next regular start, and the
        last W samples (a possible end-aligned final window)."""
        assert self._buffer is not None
        keep_from = min(self._next_start, max(self.total - self.window, 0))
        drop = keep_from - self._buffer_start
        if drop > 0:
            self._buffer = self._buffer[:, drop:].clone()
            self._buffer_start = keep_from


def best_permutation(reference: Tensor, candidate: Tensor) -> tuple[int, ...]:
    """Order of ``candidate``'s sources that best matches ``reference`` over the same samples.

    ``reference``, ``candidate``: ``(K, M)``. Returns ``p`` such that ``candidate[list(p)]``
    is aligned, i.e. source ``k`` of the result is ``candidate[p[k]]``. Maximises
    ``Σ_k ⟨reference_k, candidate_p[k]⟩``, which is the same as minimising the squared error
    ``Σ_k ‖reference_k − candidate_p[k]‖²``. Ties keep the identity. Brute force over the K!
    orders; K above :data:`MAX_BRUTE_FORCE_SOURCES` raises ValueError.
    """
    if reference.shape != candidate.shape or reference.ndim != 2:
        raise ValueError(
            f"expected two (K, M) tensors of equal shape, got {tuple(reference.shape)} and "
            f"{tuple(candidate.shape)}"
        )
    similarity = reference.double() @ candidate.double().T  # (K, K): [k, j] = <ref_k, cand_j>
    return permutation.best_permutation(similarity.numpy())


class StreamingOverlapAdd:
    """Overlap-add ``(K, W)`` window estimates into a ``(K, total)`` stream, O(W) memory.

    Drive it with the windows of :class:`StreamingWindower` (same ``window``/``hop``), in order:

    * ``add(start, est)`` for each window (``est`` ``(K, L)``, ``L <= W``, any device/float
      dtype; typically ``L == W``). With ``align=True`` the sources of ``est`` are first
      reordered to best match the running output over the overlap (:func:`best_permutation`),
      so speaker k stays speaker k across windows; use ``align=False`` when the source order
      is fixed by construction (enhancement: speech is 0, noise is 1).
    * ``pop_ready()`` returns the samples no later window can change: everything before the
      last window's start. Call it after each ``add`` to keep memory flat.
    * ``finish(total)`` returns the rest up to ``total`` samples (the windower's ``total``).

    Output is CPU float32; ``pop_ready`` pieces plus ``finish`` concatenate to exactly
    ``total`` samples. Accumulation is float64.
    """

    def __init__(
        self,
        num_sources: int,
        window: int,
        hop: int,
        *,
        align: bool = True,
        fade: int | None = None,
    ) -> None:
        _check_layout(window, hop)
        if num_sources <= 0:
            raise ValueError(f"num_sources must be positive, got {num_sources}")
        if align and num_sources > MAX_BRUTE_FORCE_SOURCES:
            raise ValueError(
                f"align=True supports at most {MAX_BRUTE_FORCE_SOURCES} sources, "
                f"got {num_sources}"
            )
        self.num_sources = int(num_sources)
        self.window = int(window)
        self.hop = int(hop)
        self.align = align
        self.fade = default_fade(window, hop) if fade is None else int(fade)
        self.emitted = 0  # samples returned by pop_ready/finish so far
        self.last_permutation: tuple[int, ...] = tuple(range(self.num_sources))
        self.reorders = 0  # windows whose sources were reordered by the alignment
        # Running sums for samples [self._base, self._base + self._acc.shape[-1]).
        self._acc = torch.zeros(self.num_sources, 0, dtype=torch.float64)
        self._weight = torch.zeros(0, dtype=torch.float64)
        self._base = 0
        self._last_start: int | None = None
        self._ready: list[Tensor] = []
        self._finished = False

    @property
    def buffered_frames(self) -> int:
        """Samples held in the running sums (never more than ``W``)."""
        return int(self._weight.shape[0])

    @property
    def covered(self) -> int:
        """End (exclusive) of the samples covered by the windows added so far."""
        return self._base + self.buffered_frames

    def add(self, start: int, est: Tensor) -> None:
        """Add one window's estimate ``(K, L)`` covering samples ``[start, start + L)``."""
        if self._finished:
            raise RuntimeError("add() after finish()")
        if est.ndim != 2 or est.shape[0] != self.num_sources:
            raise ValueError(f"expected a ({self.num_sources}, L) estimate, got {tuple(est.shape)}")
        length = int(est.shape[-1])
        if not 1 <= length <= self.window:
            raise ValueError(f"estimate length must be in [1, {self.window}], got {length}")
        if self._last_start is None:
            if start != 0:
                raise ValueError(f"the first window must start at 0, got {start}")
        elif start <= self._last_start or start > self.covered:
            raise ValueError(
                f"window start {start} must follow the previous start {self._last_start} and "
                f"leave no gap (covered up to {self.covered})"
            )
        values = est.detach().to(device="cpu", dtype=torch.float64)

        overlap = self.covered - start
        if self.align and overlap > 0 and self.num_sources > 1:
            offset = start - self._base
            span = min(overlap, length)
            current = self._acc[:, offset : offset + span] / self._weight[offset : offset + span]
            order = best_permutation(current, values[:, :span])
            if order != tuple(range(self.num_sources)):
                values = values[list(order)]
                self.reorders += 1
            self.last_permutation = order

        weights = crossfade_window(length, self.fade, fade_in=start > 0, fade_out=True)
        self._release(start)
        end = start + length
        grow = end - self.covered
        if grow > 0:
            self._acc = torch.cat([self._acc, self._acc.new_zeros(self.num_sources, grow)], -1)
            self._weight = torch.cat([self._weight, self._weight.new_zeros(grow)])
        offset = start - self._base
        self._acc[:, offset : offset + length] += values * weights
        self._weight[offset : offset + length] += weights
        self._last_start = start

    def _release(self, upto: int) -> None:
        """Move finished samples (before ``upto``) from the running sums to the ready list."""
        count = upto - self._base
        if count <= 0:
            return
        self._ready.append((self._acc[:, :count] / self._weight[:count]).float())
        self._acc = self._acc[:, count:].clone()
        self._weight = self._weight[count:].clone()
        self._base = upto

    def pop_ready(self) -> Tensor:
        """``(K, n)`` float32: final samples not returned yet (n may be 0)."""
        if not self._ready:
            return torch.zeros(self.num_sources, 0)
        out = torch.cat(self._ready, dim=-1) if len(self._ready) > 1 else self._ready[0]
        self._ready = []
        self.emitted += int(out.shape[-1])
        return out

    def finish(self, total: int) -> Tensor:
        """``(K, n)`` float32: every remaining sample up to ``total`` (the signal's length)."""
        if self._finished:
            raise RuntimeError("finish() called twice")
        if self._last_start is None:
            raise ValueError("finish() without any window added")
        pending = self.emitted + sum(int(piece.shape[-1]) for piece in self._ready)
        if not max(pending, self._base) <= total <= self.covered:
            raise ValueError(
                f"total {total} outside the range the windows allow "
                f"[{max(pending, self._base)}, {self.covered}]"
            )
        self._finished = True
        self._release(total)
        out = self.pop_ready()
        self._acc = self._acc[:, :0]
        self._weight = self._weight[:0]
        return out
