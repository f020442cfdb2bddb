"""Metrics on inputs with a known answer (diffsep.metrics)."""

from __future__ import annotations

import importlib
import itertools
import math
import socket
import sys
import types

import numpy as np
import pytest

from diffsep import metrics as M
from diffsep.permutation import all_permutations


def speechlike(num_samples: int, sample_rate: int, f0: float, seed: int = 0) -> np.ndarray:
    """A voiced-speech stand-in: harmonics of f0 under a syllable-rate (3 Hz) envelope."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / sample_rate
    envelope = (0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t + rng.uniform(0, 2 * np.pi))) ** 2
    harmonics = sum(
        np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi)) / h for h in range(1, 12)
    )
    return 0.1 * envelope * harmonics


def orthogonal_noise(signal: np.ndarray, ratio_db: float, rng: np.random.Generator) -> np.ndarray:
    """Noise exactly orthogonal to ``signal`` with |signal|²/|noise|² = 10^(ratio_db/10)."""
    noise = rng.standard_normal(signal.shape)
    noise -= (noise @ signal) / (signal @ signal) * signal
    noise *= math.sqrt((signal @ signal) / (noise @ noise) / 10 ** (ratio_db / 10))
    return noise


def direct_si_sdr(ref: np.ndarray, est: np.ndarray) -> float:
    """Textbook SI-SDR written independently: project, then take the energy ratio."""
    ref = ref.astype(np.float64)
    est = est.astype(np.float64)
    projection = (np.dot(est, ref) / np.dot(ref, ref)) * ref
    error = est - projection
    return 10 * math.log10(np.dot(projection, projection) / np.dot(error, error))


# ------------------------------------------------------------------ SI-SDR / SDR / SI-SDRi


def test_si_sdr_of_scaled_copy_hits_the_clamp_exactly() -> None:
    s = speechlike(4000, 8000, 120.0)
    for gain in (1.0, 0.3, -2.5, 1e3):
        assert M.si_sdr(s, gain * s) == M.CLAMP_DB == 100.0
    # float32 copies too (the common case: files read as float32)
    s32 = s.astype(np.float32)
    assert M.si_sdr(s32, 0.5 * s32) == 100.0
    assert M.sdr(s, s) == 100.0


@pytest.mark.parametrize("ratio_db", [-12.0, 0.0, 7.5, 30.0])
def test_si_sdr_of_signal_plus_orthogonal_noise_is_the_power_ratio(ratio_db: float) -> None:
    rng = np.random.default_rng(1)
    s = rng.standard_normal(5000)
    n = orthogonal_noise(s, ratio_db, rng)
    assert M.si_sdr(s, s + n) == pytest.approx(ratio_db, abs=1e-9)
    # scale invariance: any gain on the estimate gives the same value
    for gain in (0.01, 3.0, -1.0):
        assert M.si_sdr(s, gain * (s + n)) == pytest.approx(ratio_db, abs=1e-9)
    # the plain SDR is the same ratio for est = s + n, but not scale invariant:
    assert M.sdr(s, s + n) == pytest.approx(ratio_db, abs=1e-9)
    # est = 2 s + n: residual s + n, energy |s|² + |n|²
    expected = 10 * math.log10((s @ s) / ((s @ s) + (n @ n)))
    assert M.sdr(s, 2 * s + n) == pytest.approx(expected, abs=1e-9)
    # ... while SI-SDR of 2 s + n sees target 2 s and residual n
    assert M.si_sdr(s, 2 * s + n) == pytest.approx(ratio_db + 20 * math.log10(2), abs=1e-9)


def test_si_sdr_agrees_with_an_independent_direct_formula() -> None:
    rng = np.random.default_rng(2)
    refs = rng.standard_normal((6, 3000)).astype(np.float32)
    ests = (
        refs * rng.uniform(0.2, 2.0, (6, 1))
        + rng.uniform(0.05, 3.0, (6, 1)) * rng.standard_normal((6, 3000))
    ).astype(np.float32)
    ours = M.si_sdr(refs, ests)
    assert ours.shape == (6,)
    for k in range(6):
        assert ours[k] == pytest.approx(direct_si_sdr(refs[k], ests[k]), abs=1e-9)
    # the pairwise (inner-product) form agrees with the explicit one on every pair
    pairwise = M.pairwise_si_sdr(refs, ests)
    for i, j in itertools.product(range(6), range(6)):
        assert pairwise[i, j] == pytest.approx(direct_si_sdr(refs[i], ests[j]), abs=1e-6)


def test_si_sdr_zero_mean_option_removes_offsets() -> None:
    rng = np.random.default_rng(3)
    s = rng.standard_normal(2000)
    s -= s.mean()
    n = orthogonal_noise(s, 5.0, rng)
    n -= n.mean()
    est = s + n
    without_offset = M.si_sdr(s, est, zero_mean=True)
    assert M.si_sdr(s + 0.7, est - 0.4, zero_mean=True) == pytest.approx(without_offset, abs=1e-9)
    assert M.si_sdr(s + 0.7, est - 0.4) != pytest.approx(without_offset, abs=0.1)


def test_degenerate_inputs_are_clamped_not_nan() -> None:
    rng = np.random.default_rng(4)
    s = rng.standard_normal(1000)
    assert M.si_sdr(s, np.zeros_like(s)) == -100.0  # silent estimate
    assert M.si_sdr(s, orthogonal_noise(s, 0.0, rng)) == -100.0  # nothing of s in it
    assert M.sdr(s, np.zeros_like(s)) == pytest.approx(0.0, abs=1e-12)
    assert not np.isnan(M.pairwise_si_sdr(np.stack([s, s]), np.zeros((2, 1000)))).any()


def test_si_sdr_improvement_definition() -> None:
    rng = np.random.default_rng(5)
    s = rng.standard_normal(4000)
    mix = s + orthogonal_noise(s, -3.0, rng)
    est = s + orthogonal_noise(s, 12.0, rng)
    assert M.si_sdr_improvement(s, est, mix) == pytest.approx(15.0, abs=1e-9)
    refs = np.stack([s, rng.standard_normal(4000)])
    ests = np.stack([est, refs[1] + 0.1 * rng.standard_normal(4000)])
    mixture = refs.sum(axis=0)
    expected = M.si_sdr(refs, ests) - M.si_sdr(refs, mixture[None, :])
    np.testing.assert_allclose(M.si_sdr_improvement(refs, ests, mixture), expected, atol=1e-12)


# ------------------------------------------------------------------ PIT


@pytest.mark.parametrize("num_sources", [2, 3, 4])
def test_pit_recovers_every_permutation(num_sources: int) -> None:
    rng = np.random.default_rng(num_sources)
    refs = rng.standard_normal((num_sources, 2000))
    for order in itertools.permutations(range(num_sources)):
        ests = refs[list(order)] * 0.5 + 0.05 * rng.standard_normal((num_sources, 2000))
        perm, scores = M.pit_si_sdr(refs, ests)
        # ests[perm[k]] is refs[k]
        assert [order[p] for p in perm] == list(range(num_sources))
        assert np.all(scores > 15.0)
        np.testing.assert_allclose(scores, M.si_sdr(refs, ests[list(perm)]), atol=1e-12)


def test_best_permutation_maximises_the_sum_not_greedily() -> None:
    # greedy (best pair first: 0->0 with 10) would total 10; the optimum 0->1, 1->0 totals 18
    assert M.best_permutation(np.array([[10.0, 9.0], [9.0, 0.0]])) == (1, 0)
    matrix = np.array([[9.0, 8.0, 0.0], [8.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert M.best_permutation(matrix) == (1, 0, 2)
    assert all_permutations(3).shape == (6, 3)
    with pytest.raises(ValueError):
        M.best_permutation(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="up to 8 sources"):
        M.best_permutation(np.zeros((9, 9)))


# ------------------------------------------------------------------ statistics


def test_student_t_quantiles_match_published_tables() -> None:
    table = {
        1: 12.7062047,
        2: 4.3026527,
        5: 2.5705818,
        10: 2.2281389,
        30: 2.0422725,
        120: 1.9799304,
    }
    for df, value in table.items():
        assert M.student_t_quantile(0.975, df) == pytest.approx(value, abs=1e-6)
    assert M.student_t_quantile(0.975, 1e7) == pytest.approx(1.959964, abs=1e-5)
    assert M.student_t_quantile(0.995, 4) == pytest.approx(4.6040949, abs=1e-6)
    assert M.student_t_quantile(0.025, 7) == pytest.approx(
        -M.student_t_quantile(0.975, 7), abs=1e-12
    )
    assert M.student_t_cdf(0.0, 3) == pytest.approx(0.5, abs=1e-15)
    # df = 1 is the Cauchy distribution: CDF(t) = 1/2 + atan(t)/pi
    for t in (-3.0, 0.4, 2.0):
        assert M.student_t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)


def test_mean_confidence_interval() -> None:
    mean, half, std, n = M.mean_confidence_interval([1.0, 2.0, 3.0, 4.0, 5.0, float("nan")])
    assert (mean, n) == (3.0, 5)
    assert std == pytest.approx(math.sqrt(2.5))
    assert half == pytest.approx(2.7764451 * math.sqrt(2.5) / math.sqrt(5), abs=1e-6)
    single = M.mean_confidence_interval([4.0])
    assert single[0] == 4.0 and math.isnan(single[1]) and single[3] == 1
    assert M.mean_confidence_interval([])[3] == 0


def test_availability_checks_do_not_need_optional_packages() -> None:
    for name in ("si_sdr", "si_sdri", "sdr"):
        assert M.is_available(name) and M.missing_modules(name) == []


# ------------------------------------------------------------------ PESQ / ESTOI (optional)


def test_pesq_of_identical_signals_is_its_maximum() -> None:
    pytest.importorskip("pesq")
    s8 = speechlike(2 * 8000, 8000, 125.0)
    s16 = speechlike(2 * 16000, 16000, 125.0)
    assert M.pesq_score(s8, s8, 8000, "nb") == pytest.approx(4.549, abs=0.005)
    assert M.pesq_score(s16, s16, 16000, "wb") == pytest.approx(4.644, abs=0.005)
    # 16 kHz input scored narrow-band: resampled to 8 kHz first
    assert M.pesq_score(s16, s16, 16000, "nb") == pytest.approx(4.549, abs=0.005)
    noisy = s8 + 0.05 * np.random.default_rng(0).standard_normal(s8.size)
    assert M.pesq_score(s8, noisy, 8000, "nb") < 2.5
    with pytest.raises(M.MetricUndefined):
        M.pesq_score(np.zeros(16000), np.zeros(16000), 8000, "nb")
    with pytest.raises(ValueError):
        M.pesq_score(s8, s8, 8000, "xb")


def test_estoi_of_identical_signals_is_one() -> None:
    pytest.importorskip("pystoi")
    s = speechlike(2 * 16000, 16000, 140.0)
    assert M.estoi_score(s, s, 16000) == pytest.approx(1.0, abs=1e-6)
    noisy = s + 0.05 * np.random.default_rng(0).standard_normal(s.size)
    assert M.estoi_score(s, noisy, 16000) < 0.5
    with pytest.raises(M.MetricUndefined):  # pystoi alone would return 1e-5 here
        M.estoi_score(s[:2000], s[:2000], 16000)


# ------------------------------------------------------------------ DNSMOS P.835 (optional)


def test_dnsmos_segments_follow_the_reference_script() -> None:
    window = 144160
    ramp = np.arange(32000, dtype=np.float32)
    # 2 s doubles to 16 s: windows start at 0, 1, ..., 6 s
    segments = M.dnsmos_segments(ramp)
    assert segments.shape == (7, window)
    tiled = np.tile(ramp, 8)
    for i in range(7):
        np.testing.assert_array_equal(segments[i], tiled[i * 16000 : i * 16000 + window])
    # 9.5 s: exactly one window
    assert M.dnsmos_segments(np.zeros(152000, np.float32)).shape == (1, window)
    # 20 s: 11 starts, but the script's float rounding ends windows 7+ one sample short and
    # drops them (int((7 + 9.01) * 16000) = 256159), so 7 windows remain
    long = M.dnsmos_segments(np.arange(320000, dtype=np.float32))
    assert long.shape == (7, window)
    assert long[6][0] == 6 * 16000


@pytest.fixture
def dnsmos_scorer() -> M.DnsmosP835:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("speechmos")
    return M.DnsmosP835()


@pytest.mark.slow  # runs the DNSMOS networks
def test_dnsmos_matches_the_speechmos_implementation(dnsmos_scorer, monkeypatch) -> None:
    """speechmos.dnsmos.run is the packaged reference. It imports librosa (only for its P.808
    model, whose output we do not use) and requests (unused); stub both so the check runs
    wherever the eval extra is installed."""
    stub_librosa = types.ModuleType("librosa")
    stub_librosa.feature = types.SimpleNamespace(  # type: ignore[attr-defined]
        melspectrogram=lambda y, sr, n_fft, hop_length, n_mels: np.zeros((n_mels, 900), np.float32)
    )
    stub_librosa.power_to_db = lambda spec, ref: spec  # type: ignore[attr-defined]
    stub_requests = types.ModuleType("requests")
    stub_requests.session = None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "librosa", stub_librosa)
    monkeypatch.setitem(sys.modules, "requests", stub_requests)
    monkeypatch.delitem(sys.modules, "speechmos.dnsmos", raising=False)
    reference = importlib.import_module("speechmos.dnsmos")
    try:
        audio = (
            speechlike(int(9.5 * 16000), 16000, 150.0)
            + 0.01 * np.random.default_rng(0).standard_normal(152000)
        ).astype(np.float32)
        expected = reference.run(audio, 16000)
        ours = dnsmos_scorer(audio, 16000)
    finally:
        sys.modules.pop("speechmos.dnsmos", None)
    assert ours["sig"] == pytest.approx(expected["sig_mos"], abs=1e-4)
    assert ours["bak"] == pytest.approx(expected["bak_mos"], abs=1e-4)
    assert ours["ovrl"] == pytest.approx(expected["ovrl_mos"], abs=1e-4)
    assert 1.0 < ours["ovrl"] < 5.0


@pytest.mark.slow  # runs the DNSMOS networks
def test_dnsmos_runs_offline(dnsmos_scorer, monkeypatch) -> None:
    def no_network(*args, **kwargs):
        raise AssertionError("DNSMOS tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    audio = speechlike(8000, 8000, 120.0)  # 1 s at 8 kHz: resampled to 16 kHz, doubled to 16 s
    scores = M.DnsmosP835()(audio, 8000)
    assert set(scores) == {"sig", "bak", "ovrl"}
    assert all(1.0 < v < 5.0 for v in scores.values())
