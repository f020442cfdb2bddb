"""Windows, cross-fade overlap-add and permutation alignment (diffsep.chunking)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from diffsep.chunking import (
    StreamingOverlapAdd,
    StreamingWindower,
    Window,
    best_permutation,
    crossfade_window,
    default_fade,
    plan_windows,
)


def _blocks(signal: torch.Tensor, rng: np.random.Generator, max_block: int):
    position = 0
    while position < signal.shape[-1]:
        size = int(rng.integers(1, max_block))
        yield signal[:, position : position + size]
        position += size


def _run_stream(signal, window, hop, process, *, num_sources, align, seed=0, max_block=400):
    """Drive windower + overlap-add like the separator does; returns output, starts, peak
    buffer sizes."""
    rng = np.random.default_rng(seed)
    windower = StreamingWindower(window, hop)
    ola = StreamingOverlapAdd(num_sources, window, hop, align=align)
    pieces, starts, peak = [], [], 0

    def consume(windows: list[Window]) -> None:
        for item in windows:
            starts.append(item.start)
            ola.add(item.start, process(item))
            pieces.append(ola.pop_ready())

    for block in _blocks(signal, rng, max_block):
        consume(windower.push(block))
        peak = max(peak, windower.buffered_frames, ola.buffered_frames)
    consume(windower.finish())
    pieces.append(ola.finish(windower.total))
    peak = max(peak, ola.buffered_frames)
    return torch.cat(pieces, dim=-1), starts, peak, ola


# ------------------------------------------------------------------------- planning ----------


def test_plan_windows_small_cases_by_hand():
    assert plan_windows(0, 4, 3) == []
    assert plan_windows(3, 4, 3) == [0]  # shorter than one window: one padded window
    assert plan_windows(4, 4, 3) == [0]
    assert plan_windows(10, 4, 3) == [0, 3, 6]  # 6 + 4 == 10: ends exactly
    assert plan_windows(11, 4, 3) == [0, 3, 6, 7]  # last window aligned to the end
    assert plan_windows(5, 4, 4) == [0, 1]
    assert plan_windows(8, 4, 4) == [0, 4]


@pytest.mark.parametrize("total", [1, 7, 64, 65, 100, 127, 128, 129, 1000, 1031])
@pytest.mark.parametrize("window,hop", [(64, 48), (64, 32), (64, 64), (64, 17)])
def test_plan_windows_covers_signal_with_real_samples_only(total, window, hop):
    starts = plan_windows(total, window, hop)
    assert starts[0] == 0
    assert all(b > a for a, b in itertools.pairwise(starts))
    assert all(b - a <= hop for a, b in itertools.pairwise(starts))  # never a gap
    covered = set()
    for start in starts:
        covered.update(range(start, min(start + window, total)))
    assert covered == set(range(total))
    if total >= window:
        assert all(start + window <= total for start in starts)  # no zero padding needed
        assert starts[-1] + window == total
    else:
        assert starts == [0]


def test_plan_windows_rejects_bad_layout():
    with pytest.raises(ValueError):
        plan_windows(10, 4, 5)
    with pytest.raises(ValueError):
        plan_windows(10, 4, 0)
    with pytest.raises(ValueError):
        plan_windows(-1, 4, 2)


# ------------------------------------------------------------------------- cross-fade --------


def test_crossfade_window_shape_and_complementary_fades():
    window, fade = 40, 12
    weights = crossfade_window(window, fade)
    assert weights.shape == (window,)
    assert torch.all(weights > 0) and torch.all(weights <= 1)
    assert torch.all(weights[fade : window - fade] == 1)
    assert torch.all(weights[:fade] < 1) and torch.all(weights[window - fade :] < 1)
    assert torch.all(torch.diff(weights[:fade]) > 0)  # rising fade-in
    # an outgoing window's tail plus the next window's head sum to 1 over the overlap
    torch.testing.assert_close(
        weights[window - fade :] + weights[:fade], torch.ones(fade, dtype=weights.dtype)
    )
    no_in = crossfade_window(window, fade, fade_in=False)
    assert torch.all(no_in[: window - fade] == 1)
    assert torch.equal(no_in[window - fade :], weights[window - fade :])
    no_out = crossfade_window(window, fade, fade_out=False)
    assert torch.all(no_out[fade:] == 1)


def test_crossfade_window_limits_fade_to_half_the_window():
    weights = crossfade_window(10, 8)
    assert torch.all(weights > 0)
    assert torch.equal(weights[:5], weights.flip(0)[:5])
    assert torch.all(crossfade_window(10, 0) == 1)


def test_default_fade():
    assert default_fade(100, 75) == 25
    assert default_fade(100, 20) == 50
    assert default_fade(100, 100) == 0


# ------------------------------------------------------------------------- windower ----------


@pytest.mark.parametrize("total", [1, 63, 64, 65, 100, 176, 177, 1000, 2049])
def test_windower_windows_match_plan_and_signal(total):
    window, hop = 64, 48
    signal = torch.randn(2, total)
    windower = StreamingWindower(window, hop)
    rng = np.random.default_rng(total)
    windows = []
    for block in _blocks(signal, rng, 90):
        windows += windower.push(block)
        assert windower.buffered_frames <= window
    windows += windower.finish()
    assert [w.start for w in windows] == plan_windows(total, window, hop)
    assert windower.total == total
    for item in windows:
        assert item.data.shape == (2, window)
        real = signal[:, item.start : item.start + item.length]
        assert torch.equal(item.data[:, : item.length], real)
        assert torch.all(item.data[:, item.length :] == 0)
        assert item.length == min(window, total)


def test_windower_does_not_alias_the_callers_block():
    block = torch.arange(10.0).reshape(1, 10)
    windower = StreamingWindower(4, 4)
    windows = windower.push(block)
    windows[0].data.zero_()
    assert torch.equal(block, torch.arange(10.0).reshape(1, 10))
    windows = windower.finish()
    assert torch.equal(windows[0].data, torch.tensor([[6.0, 7.0, 8.0, 9.0]]))


def test_windower_accepts_numpy_and_rejects_mismatched_blocks():
    windower = StreamingWindower(4, 2)
    assert [w.start for w in windower.push(np.ones((1, 5), np.float32))] == [0]
    with pytest.raises(ValueError):
        windower.push(np.ones((2, 5), np.float32))
    with pytest.raises(ValueError):
        windower.push(np.ones(5, np.float32))


# ------------------------------------------------------------------------- overlap-add -------


@pytest.mark.parametrize("total", [1, 100, 255, 256, 257, 300, 449, 1024, 1025, 5003])
@pytest.mark.parametrize("window,hop", [(256, 192), (256, 128), (256, 256), (256, 100)])
def test_identity_processor_reconstructs_exactly(total, window, hop):
    signal = torch.randn(1, total)
    gains = torch.tensor([[1.0], [-0.5], [2.0]])

    def process(item: Window) -> torch.Tensor:
        return gains * item.data  # (3, W): three "sources" that are scaled copies

    out, starts, peak, _ = _run_stream(signal, window, hop, process, num_sources=3, align=True)
    assert starts == plan_windows(total, window, hop)
    assert out.shape == (3, total)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, gains * signal, rtol=1e-6, atol=1e-6)
    assert peak <= window  # memory stays O(window) whatever the length


def test_memory_is_flat_for_a_long_signal():
    window, hop = 128, 96
    signal = torch.randn(1, 200_000)
    out, _, peak, ola = _run_stream(
        signal, window, hop, lambda w: w.data, num_sources=1, align=False, max_block=5000
    )
    torch.testing.assert_close(out, signal)
    assert peak <= window
    assert ola.buffered_frames == 0  # everything handed out at the end


def test_overlap_region_is_cross_faded_with_the_window_weights():
    window, hop = 32, 24
    fade = default_fade(window, hop)
    ola = StreamingOverlapAdd(1, window, hop, align=False)
    ola.add(0, torch.full((1, window), 1.0))
    ola.add(hop, torch.full((1, window), 3.0))
    out = torch.cat([ola.pop_ready(), ola.finish(hop + window)], dim=-1)[0].double()
    w_out = crossfade_window(window, fade, fade_in=False)[hop:]
    w_in = crossfade_window(window, fade)[:fade]
    expected = (1.0 * w_out + 3.0 * w_in) / (w_out + w_in)
    torch.testing.assert_close(out[hop:window], expected, rtol=1e-6, atol=1e-6)
    assert torch.all(out[:hop] == 1.0) and torch.all(out[window:] == 3.0)
    assert torch.all(torch.diff(out[hop:window]) > 0)  # a gradual transition, not a jump


def test_pop_ready_only_returns_final_samples():
    window, hop = 16, 8
    ola = StreamingOverlapAdd(2, window, hop, align=False)
    ola.add(0, torch.ones(2, window))
    assert ola.pop_ready().shape == (2, 0)  # nothing is final before the next start is known
    ola.add(hop, torch.ones(2, window))
    ready = ola.pop_ready()
    assert ready.shape == (2, hop)
    assert ola.emitted == hop
    rest = ola.finish(20)
    assert rest.shape == (2, 12)


def test_overlap_add_rejects_out_of_order_windows():
    ola = StreamingOverlapAdd(2, 16, 8)
    with pytest.raises(ValueError):
        ola.add(4, torch.zeros(2, 16))  # first window must start at 0
    ola.add(0, torch.zeros(2, 16))
    with pytest.raises(ValueError):
        ola.add(0, torch.zeros(2, 16))  # not increasing
    with pytest.raises(ValueError):
        ola.add(17, torch.zeros(2, 16))  # gap
    with pytest.raises(ValueError):
        ola.add(8, torch.zeros(3, 16))  # wrong number of sources
    with pytest.raises(ValueError):
        ola.finish(17)  # beyond what the windows covered


# ------------------------------------------------------------------------- permutations ------


@pytest.mark.parametrize("num_sources", [2, 3, 4])
def test_best_permutation_recovers_every_order(num_sources):
    generator = torch.Generator().manual_seed(num_sources)
    reference = torch.randn(num_sources, 500, generator=generator)
    for order in itertools.permutations(range(num_sources)):
        # candidate[j] = reference[inverse[j]] + noise; aligned[k] = candidate[p[k]] == ref[k]
        candidate = torch.empty_like(reference)
        for k, j in enumerate(order):
            candidate[j] = reference[k]
        candidate += 0.3 * torch.randn(candidate.shape, generator=generator)
        p = best_permutation(reference, candidate)
        assert p == order
        assert torch.allclose(candidate[list(p)], reference, atol=2.0)


def test_best_permutation_prefers_identity_on_ties_and_rejects_bad_input():
    assert best_permutation(torch.zeros(3, 10), torch.zeros(3, 10)) == (0, 1, 2)
    assert best_permutation(torch.randn(1, 10), torch.randn(1, 10)) == (0,)
    with pytest.raises(ValueError):
        best_permutation(torch.zeros(2, 10), torch.zeros(2, 9))
    with pytest.raises(ValueError):
        best_permutation(torch.zeros(9, 10), torch.zeros(9, 10))


def _two_sources(total: int, rate: int = 8000) -> torch.Tensor:
    t = torch.arange(total, dtype=torch.float64) / rate
    tone = 0.5 * torch.sin(2 * math.pi * 200 * t)
    chirp = 0.3 * torch.sin(2 * math.pi * (300 * t + 400 * t**2))
    bursts = (torch.sin(2 * math.pi * 1.5 * t) > 0).double()
    return torch.stack([tone, chirp * bursts + 0.05 * chirp]).float()


@pytest.mark.parametrize("num_sources", [2, 3])
def test_alignment_undoes_per_window_source_swaps(num_sources):
    total, window, hop = 20_000, 1024, 768
    sources = _two_sources(total)
    if num_sources == 3:
        noise = torch.randn(1, total, generator=torch.Generator().manual_seed(1)) * 0.2
        sources = torch.cat([sources, noise])
    rng = np.random.default_rng(7)
    orders = {}

    def fake_separator(item: Window) -> torch.Tensor:
        truth = sources[:, item.start : item.start + window]
        order = tuple(int(i) for i in rng.permutation(num_sources))
        orders[item.start] = order
        return truth[list(order)]

    aligned, *_ , ola = _run_stream(
        sources.sum(0, keepdim=True), window, hop, fake_separator,
        num_sources=num_sources, align=True,
    )
    assert len(set(orders.values())) > 1  # the fake separator really did shuffle
    assert ola.reorders > 0
    first = orders[0]
    torch.testing.assert_close(aligned, sources[list(first)], rtol=1e-5, atol=1e-5)

    rng = np.random.default_rng(7)
    orders.clear()
    unaligned, *_ = _run_stream(
        sources.sum(0, keepdim=True), window, hop, fake_separator,
        num_sources=num_sources, align=False,
    )
    best_error = min(
        float((unaligned - sources[list(p)]).abs().max())
        for p in itertools.permutations(range(num_sources))
    )
    assert best_error > 0.2  # without alignment, swaps show in the output
