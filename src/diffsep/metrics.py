"""Speech separation and enhancement metrics on numpy arrays (pure functions, no file I/O).

Definitions (``s`` reference, ``ŝ`` estimate, both 1-D, same length, same sample rate):

- **SI-SDR** (Le Roux et al., 2019): ``10 log10(|a s|² / |a s - ŝ|²)`` with the optimal scale
  ``a = <ŝ, s> / |s|²``. No mean is removed unless ``zero_mean=True`` (the DiffSep paper's
  evaluation, through fast_bss_eval, does not remove it either).
- **SDR** here is the plain signal-to-distortion ratio ``10 log10(|s|² / |s - ŝ|²)``: no scale
  invariance and no distortion filter. It is *not* the BSS-eval (v3/v4, mir_eval, museval)
  "SDR", which first projects ``ŝ`` on a 512-tap filtered version of the references.
- **SI-SDRi**: ``SI-SDR(s, ŝ) - SI-SDR(s, mixture)``.
- All dB values are clipped to ``[-CLAMP_DB, CLAMP_DB]`` = ±100 dB (as fast_bss_eval's
  ``clamp_db=100`` used for the DiffSep paper): a perfect estimate scores exactly +100 dB, not
  +inf, and an all-zero estimate scores -100 dB.
- **PIT**: the permutation of the K estimates that maximises the mean SI-SDR over sources,
  by brute force over all K! permutations (fine up to K ≈ 8).
- **PESQ** (ITU-T P.862, the ``pesq`` package): narrow-band at 8 kHz or wide-band (P.862.2)
  at 16 kHz; inputs at other rates are resampled with soxr (high quality) first.
- **ESTOI** (Jensen & Taal, 2016, ``pystoi`` with ``extended=True``): ``pystoi`` resamples to
  10 kHz itself, with its own MATLAB-compatible resampler, as everyone who reports pystoi does.
- **DNSMOS P.835** (Reddy et al., 2022): the non-personalised SIG/BAK/OVRL model
  (``sig_bak_ovr.onnx``) shipped by the ``speechmos`` package, run offline with onnxruntime on
  16 kHz audio; the segmentation (9.01 s windows, 1 s hop, short clips repeated) and the
  polynomial mapping are those of Microsoft's ``dnsmos_local.py``. The P.808 model is not run.

Optional packages (pesq, pystoi, speechmos, onnxruntime) are imported only where used.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np

from diffsep.permutation import MAX_BRUTE_FORCE_SOURCES, best_permutation
from diffsep.resample import resample_hq

CLAMP_DB = 100.0
MAX_PIT_SOURCES = MAX_BRUTE_FORCE_SOURCES  # 8! = 40320 permutations per file

PesqMode = Literal["nb", "wb"]
"""Narrow-band (P.862, 8 kHz) or wide-band (P.862.2, 16 kHz) PESQ."""

PESQ_RATES: dict[PesqMode, int] = {"nb": 8000, "wb": 16000}
ESTOI_RATE = 10000  # pystoi's internal rate (informational; pystoi resamples itself)
DNSMOS_RATE = 16000
DNSMOS_WINDOW_S = 9.01
DNSMOS_MODEL = "sig_bak_ovr.onnx"
# Non-personalised P.835 polynomial mappings from raw model outputs to MOS (highest power first),
# the published DNSMOS P.835 calibration.
_DNSMOS_POLY = {
    "sig": (-0.08397278, 1.22083953, 0.0052439),
    "bak": (-0.13166888, 1.60915514, -0.39604546),
    "ovrl": (-0.06766283, 1.11546468, 0.04602535),
}

# metric -> the Python module it needs (None: numpy only)
_METRIC_MODULES: dict[str, tuple[str, ...]] = {
    "si_sdr": (),
    "si_sdri": (),
    "sdr": (),
    "pesq": ("pesq",),
    "estoi": ("pystoi",),
    "dnsmos": ("speechmos", "onnxruntime"),
}
# pip distribution names for the modules above
_PIP_NAMES = {
    "pesq": "pesq",
    "pystoi": "pystoi",
    "speechmos": "speechmos",
    "onnxruntime": "onnxruntime",
}


class MetricUndefined(ValueError):
    """A metric has no value for this input (e.g. PESQ finds no speech). ``str`` says why."""


# ---------------------------------------------------------------- availability


def missing_modules(metric: str) -> list[str]:
    """pip names of the optional packages ``metric`` needs that are not installed."""
    return [_PIP_NAMES[m] for m in _METRIC_MODULES[metric] if importlib.util.find_spec(m) is None]


def is_available(metric: str) -> bool:
    """Whether every package ``metric`` needs is installed (nothing is imported)."""
    return not missing_modules(metric)


# ---------------------------------------------------------------- SI-SDR family


def _to_db(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``10 log10(num / den)`` clipped to ±CLAMP_DB; a zero numerator gives -CLAMP_DB."""
    with np.errstate(divide="ignore", invalid="ignore"):
        db = 10.0 * np.log10(num / den)
    db = np.where(num <= 0.0, -CLAMP_DB, db)
    return np.clip(db, -CLAMP_DB, CLAMP_DB)


def _as_float64(x: np.ndarray, zero_mean: bool) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x - x.mean(axis=-1, keepdims=True) if zero_mean else x


def si_sdr(ref: np.ndarray, est: np.ndarray, *, zero_mean: bool = False) -> np.ndarray:
    """Scale-invariant SDR in dB.

    ``ref``, ``est``: (..., N) arrays that broadcast against each other, same sample rate.
    Returns (...) float64 dB in [-100, 100]. Computed in float64 with the explicit residual.
    """
    s = _as_float64(ref, zero_mean)
    e = _as_float64(est, zero_mean)
    ref_energy = np.sum(s * s, axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(ref_energy > 0, np.sum(e * s, axis=-1, keepdims=True) / ref_energy, 0.0)
    target = scale * s
    residual = e - target
    return _to_db(np.sum(target * target, axis=-1), np.sum(residual * residual, axis=-1))


def sdr(ref: np.ndarray, est: np.ndarray) -> np.ndarray:
    """Plain SDR ``10 log10(|s|² / |s - ŝ|²)`` in dB (not BSS-eval SDR, see module docstring).

    ``ref``, ``est``: (..., N), broadcasting. Returns (...) float64 dB in [-100, 100].
    """
    s = np.asarray(ref, dtype=np.float64)
    residual = s - np.asarray(est, dtype=np.float64)
    return _to_db(np.sum(s * s, axis=-1), np.sum(residual * residual, axis=-1))


def si_sdr_improvement(
    ref: np.ndarray, est: np.ndarray, mix: np.ndarray, *, zero_mean: bool = False
) -> np.ndarray:
    """SI-SDRi in dB: ``si_sdr(ref, est) - si_sdr(ref, mix)``.

    ``ref``, ``est`` (..., N); ``mix`` (N,) or (..., N), broadcasting. Returns (...) float64 dB.
    """
    return si_sdr(ref, est, zero_mean=zero_mean) - si_sdr(ref, mix, zero_mean=zero_mean)


def pairwise_si_sdr(refs: np.ndarray, ests: np.ndarray, *, zero_mean: bool = False) -> np.ndarray:
    """SI-SDR of every (reference, estimate) pair from inner products, without a (K, K, N) array.

    ``refs`` (K, N), ``ests`` (J, N) -> (K, J) float64 dB. Meant for choosing a permutation: the
    residual energy is ``|ŝ|² - <s, ŝ>² / |s|²``, accurate to about 1e-13 relative, far below the
    ±100 dB clamp; report the chosen pairs with :func:`si_sdr`.
    """
    s = _as_float64(refs, zero_mean)
    e = _as_float64(ests, zero_mean)
    cross = s @ e.T  # (K, J)
    ref_energy = np.sum(s * s, axis=-1)[:, None]
    est_energy = np.sum(e * e, axis=-1)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        target_energy = np.where(ref_energy > 0, cross * cross / ref_energy, 0.0)
    residual_energy = np.maximum(est_energy - target_energy, 0.0)
    return _to_db(target_energy, residual_energy)


def pit_si_sdr(
    refs: np.ndarray, ests: np.ndarray, *, zero_mean: bool = False
) -> tuple[tuple[int, ...], np.ndarray]:
    """Permutation-invariant SI-SDR.

    ``refs``, ``ests``: (K, N). Returns ``(perm, scores)`` where ``ests[perm[k]]`` is the estimate
    matched to ``refs[k]`` and ``scores`` (K,) float64 is its SI-SDR in dB.
    """
    refs = np.asarray(refs)
    ests = np.asarray(ests)
    if refs.ndim != 2 or refs.shape != ests.shape:
        raise ValueError(
            f"expected refs and ests of equal shape (K, N), got {refs.shape} and {ests.shape}"
        )
    perm = best_permutation(pairwise_si_sdr(refs, ests, zero_mean=zero_mean))
    return perm, si_sdr(refs, ests[list(perm)], zero_mean=zero_mean)


# ---------------------------------------------------------------- PESQ, ESTOI


def pesq_score(ref: np.ndarray, est: np.ndarray, sample_rate: int, mode: PesqMode) -> float:
    """PESQ MOS-LQO of ``est`` against ``ref`` ((N,) each at ``sample_rate`` Hz).

    ``mode`` 'nb' (P.862 at 8 kHz) or 'wb' (P.862.2 at 16 kHz); other rates are resampled with
    soxr first. Raises MetricUndefined when PESQ finds no utterance or the signal is too short.
    """
    if mode not in PESQ_RATES:
        raise ValueError(f"PESQ mode must be 'nb' or 'wb', got {mode!r}")
    import pesq

    rate = PESQ_RATES[mode]
    r = resample_hq(ref, sample_rate, rate)
    e = resample_hq(est, sample_rate, rate)
    try:
        with np.errstate(invalid="ignore", divide="ignore"):  # pesq normalises by the peak
            return float(pesq.pesq(rate, r, e, mode))
    except pesq.NoUtterancesError as err:
        raise MetricUndefined("PESQ found no utterance in the reference") from err
    except pesq.BufferTooShortError as err:
        raise MetricUndefined("signal too short for PESQ") from err
    except pesq.PesqError as err:
        raise MetricUndefined(f"PESQ failed ({type(err).__name__})") from err


def estoi_score(ref: np.ndarray, est: np.ndarray, sample_rate: int) -> float:
    """Extended STOI of ``est`` against ``ref`` ((N,) each at ``sample_rate`` Hz), in [0, 1]-ish.

    Raises MetricUndefined when fewer than 30 non-silent frames remain (pystoi itself would
    silently return 1e-5 then).
    """
    from pystoi import stoi

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = stoi(
            np.asarray(ref, np.float64), np.asarray(est, np.float64), sample_rate, extended=True
        )
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        raise MetricUndefined("fewer than 30 non-silent frames for ESTOI")
    return float(value)


# ---------------------------------------------------------------- DNSMOS P.835


def dnsmos_segments(audio: np.ndarray) -> np.ndarray:
    """Cut 16 kHz audio (N,) into the (S, 144160) float32 windows DNSMOS P.835 scores.

    As in Microsoft's ``dnsmos_local.py``: a clip shorter than 9.01 s is doubled until it is
    long enough; windows of 9.01 s start every second; a window that would end past the clip
    (including by the script's float rounding of its end) is dropped.
    """
    window = int(DNSMOS_WINDOW_S * DNSMOS_RATE)
    clip = np.asarray(audio, dtype=np.float32)
    if clip.ndim != 1 or clip.size == 0:
        raise ValueError(f"expected non-empty (N,) audio, got shape {clip.shape}")
    while clip.size < window:
        clip = np.concatenate([clip, clip])
    num_windows = int(np.floor(clip.size / DNSMOS_RATE) - DNSMOS_WINDOW_S) + 1
    segments = []
    for i in range(num_windows):
        seg = clip[int(i * DNSMOS_RATE) : int((i + DNSMOS_WINDOW_S) * DNSMOS_RATE)]
        if seg.size >= window:
            segments.append(seg[:window])
    return np.stack(segments)


def dnsmos_model_path() -> str:
    """Path of the P.835 ONNX model inside the installed ``speechmos`` package."""
    from importlib import resources

    path = resources.files("speechmos") / "dnsmos_models" / DNSMOS_MODEL
    if not path.is_file():
        raise FileNotFoundError(f"speechmos is installed but has no dnsmos_models/{DNSMOS_MODEL}")
    return str(path)


class DnsmosP835:
    """DNSMOS P.835 (SIG, BAK, OVRL), non-personalised, offline.

    Loads the ONNX model once; call it as ``scorer(audio (N,), sample_rate) -> {'sig', 'bak',
    'ovrl'}``. Audio at other rates is resampled to 16 kHz with soxr. The waveform is scored at
    its stored level (DNSMOS is level dependent; no normalisation is applied).
    """

    def __init__(self, num_threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            dnsmos_model_path(), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name

    def raw_scores(self, audio_16k: np.ndarray) -> np.ndarray:
        """(S, 3) raw model outputs (SIG, BAK, OVRL) for each window of 16 kHz (N,) audio."""
        segments = dnsmos_segments(audio_16k)
        return np.asarray(self._session.run(None, {self._input: segments})[0], dtype=np.float64)

    def __call__(self, audio: np.ndarray, sample_rate: int) -> dict[str, float]:
        raw = self.raw_scores(resample_hq(audio, sample_rate, DNSMOS_RATE))
        mapped = {
            name: np.polyval(_DNSMOS_POLY[name], raw[:, col])
            for col, name in enumerate(("sig", "bak", "ovrl"))
        }
        return {name: float(np.mean(values)) for name, values in mapped.items()}


# ---------------------------------------------------------------- statistics


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b) for x in [0, 1]."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def student_t_cdf(t: float, df: float) -> float:
    """CDF of Student's t distribution with ``df`` > 0 degrees of freedom."""
    tail = 0.5 * _betainc(0.5 * df, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def student_t_quantile(p: float, df: float) -> float:
    """Quantile (inverse CDF) of Student's t at probability ``p`` in (0, 1), by bisection.

    Exact to ~1e-12 (the CDF comes from the incomplete beta function; no scipy needed).
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if df <= 0:
        raise ValueError(f"df must be positive, got {df}")
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while student_t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if student_t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def mean_confidence_interval(
    values: Sequence[float], level: float = 0.95
) -> tuple[float, float, float, int]:
    """``(mean, half_width, std, n)`` of the finite ``values``.

    ``half_width`` is the two-sided Student-t confidence half-width
    ``t_{(1+level)/2, n-1} * std / sqrt(n)`` with the unbiased (n - 1) std; NaN when n < 2.
    Non-finite values (metrics that were undefined for a file) are left out of n.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(x.mean())
    if n < 2:
        return mean, math.nan, math.nan, n
    std = float(x.std(ddof=1))
    half = student_t_quantile(0.5 + level / 2.0, n - 1) * std / math.sqrt(n)
    return mean, half, std, n
