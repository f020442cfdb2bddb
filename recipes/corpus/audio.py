"""Signal helpers and audio I/O of the corpus recipe: seeded generators, trimming, levels, writes.

Every array is float64 mono (N,) unless stated; rates in Hz.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

CORPUS_RATE = 16000
SEPARATION_RATE = 8000
SPLITS = ("train", "valid", "test")
SPEECH_LEVEL_DBFS = -26.0  # active speech level after normalisation
NOISE_LEVEL_DBFS = -30.0  # RMS level of every noise file
PEAK_LIMIT = 0.97

def stable_seed(*parts: object) -> list[int]:
    """Entropy for np.random.default_rng from printable parts (independent of PYTHONHASHSEED)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]


def rng_for(*parts: object) -> np.random.Generator:
    return np.random.default_rng(stable_seed(*parts))


def to_mono(x: np.ndarray) -> np.ndarray:
    """(N,) or (N, C) -> (N,) float64."""
    x = np.asarray(x, dtype=np.float64)
    return x.mean(axis=1) if x.ndim == 2 else x


def resample(x: np.ndarray, rate_in: float, rate_out: int) -> np.ndarray:
    """(N,) float -> (M,) at rate_out with soxr (HQ)."""
    if abs(rate_in - rate_out) < 1e-9:
        return np.asarray(x, dtype=np.float64)
    return soxr.resample(np.asarray(x, dtype=np.float64), rate_in, rate_out, quality="HQ")


def frame_power_db(x: np.ndarray, rate: int, frame_s: float = 0.02) -> np.ndarray:
    """Power (dB) of consecutive non-overlapping frames of x."""
    hop = max(1, int(rate * frame_s))
    n = len(x) // hop
    if n == 0:
        return np.full(1, 10 * np.log10(np.mean(x**2) + 1e-20) if len(x) else -200.0)
    frames = x[: n * hop].reshape(n, hop)
    return 10 * np.log10(np.mean(frames**2, axis=1) + 1e-20)


def trim_silence(x: np.ndarray, rate: int, below_peak_db: float = 40.0, margin_s: float = 0.06):
    """x without leading/trailing frames quieter than (loudest frame - below_peak_db)."""
    hop = int(rate * 0.02)
    power = frame_power_db(x, rate)
    active = np.flatnonzero(power > power.max() - below_peak_db)
    if len(active) == 0:
        return x[:0]
    margin = int(margin_s * rate)
    start = max(0, active[0] * hop - margin)
    stop = min(len(x), (active[-1] + 1) * hop + margin)
    return x[start:stop]


def active_level_db(x: np.ndarray, rate: int) -> float:
    """Mean power (dB) over frames within 30 dB of the loudest one (a simple active level)."""
    power = frame_power_db(x, rate)
    active = power[power > power.max() - 30.0]
    return float(10 * np.log10(np.mean(10 ** (active / 10)) + 1e-20))


def set_level(x: np.ndarray, level_db: float, target_db: float) -> np.ndarray:
    """x scaled from level_db to target_db, then scaled down if its peak exceeds PEAK_LIMIT."""
    y = x * 10 ** ((target_db - level_db) / 20)
    peak = np.max(np.abs(y)) if len(y) else 0.0
    return y * (PEAK_LIMIT / peak) if peak > PEAK_LIMIT else y


def finish_speech(x: np.ndarray, rate: float, speed: float = 1.0) -> np.ndarray:
    """Raw TTS/recorded audio -> 16 kHz mono, speed-perturbed, trimmed, level-normalised."""
    y = resample(to_mono(x), rate * speed, CORPUS_RATE)
    y = trim_silence(y, CORPUS_RATE)
    if len(y) < 0.4 * CORPUS_RATE:
        raise ValueError("utterance shorter than 0.4 s after trimming")
    return set_level(y, active_level_db(y, CORPUS_RATE), SPEECH_LEVEL_DBFS)


def split_at_pauses(x: np.ndarray, rate: int, max_s: float, min_s: float) -> list[np.ndarray]:
    """x cut into pieces of at most max_s seconds, at the quietest 20 ms frame of each
    window [min_s, max_s] after the previous cut; a remainder shorter than min_s is dropped."""
    hop = int(0.02 * rate)
    power = frame_power_db(x, rate)
    pieces = []
    start = 0  # in frames
    total = len(power)
    max_f, min_f = int(max_s / 0.02), int(min_s / 0.02)
    while total - start > max_f:
        window = power[start + min_f : start + max_f]
        cut = start + min_f + int(np.argmin(window))
        pieces.append(x[start * hop : cut * hop])
        start = cut
    if total - start >= min_f or not pieces:
        pieces.append(x[start * hop :])
    return pieces


def finish_noise(x: np.ndarray, rate: float) -> np.ndarray:
    """Raw noise -> 16 kHz mono with RMS at NOISE_LEVEL_DBFS (peak-limited)."""
    y = resample(to_mono(x), rate, CORPUS_RATE)
    y = y - np.mean(y)
    power_db = 10 * np.log10(np.mean(y**2) + 1e-20)
    return set_level(y, power_db, NOISE_LEVEL_DBFS)


def _write_wav_atomic(path: Path, samples: np.ndarray, rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    sf.write(tmp, samples, rate, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)


def write_pcm16(path: Path, x: np.ndarray, rate: int) -> None:
    """Atomic PCM16 WAV write of float samples in [-1, 1] (clipped)."""
    _write_wav_atomic(path, np.clip(x, -1.0, 1.0).astype(np.float32), rate)


def write_int16(path: Path, x: np.ndarray, rate: int) -> None:
    """Atomic PCM16 WAV write of int16 samples (bit-exact)."""
    _write_wav_atomic(path, x.astype(np.int16), rate)


# raw telephony codecs libsndfile cannot open: file suffix -> ffmpeg demuxer
FFMPEG_RAW_FORMATS = {".g722": "g722", ".gsm": "gsm"}


def read_any(path: Path) -> tuple[np.ndarray, float]:
    """Decode an audio file to (samples (N,) float64, rate); raw G.722 / GSM through ffmpeg."""
    demuxer = FFMPEG_RAW_FORMATS.get(path.suffix.lower())
    if demuxer is None:
        x, rate = sf.read(str(path), dtype="float64", always_2d=False)
        return to_mono(x), rate
    command = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-f", demuxer,
               "-i", str(path), "-f", "s16le", "-ac", "1", "-ar", str(CORPUS_RATE), "-"]
    raw = subprocess.run(command, check=True, capture_output=True).stdout
    return np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0, CORPUS_RATE


def read_bytes(data: bytes) -> tuple[np.ndarray, float]:
    """Decode an in-memory audio file (MP3, Ogg, WAV: anything libsndfile reads) to (N,), rate."""
    x, rate = sf.read(io.BytesIO(data), dtype="float64", always_2d=False)
    return to_mono(x), rate
