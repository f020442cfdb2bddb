"""Fixed evaluation sets: 2-speaker mixtures at 8 kHz (sep-8k) and noisy/clean pairs at 16 kHz
(enh-16k), each built in a staging folder and renamed into place when complete."""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from .audio import CORPUS_RATE, SEPARATION_RATE, resample, rng_for, write_int16
from .report import write_csv
from .staging import Stage


def quantize_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale a, b together so that |a+b| <= 0.9, quantise to int16; returns (a, b, a+b) int16."""
    peak = max(np.max(np.abs(a + b)), 1e-9)
    scale = min(1.0, 0.9 / peak)
    qa = np.round(a * scale * 32767).astype(np.int32)
    qb = np.round(b * scale * 32767).astype(np.int32)
    total = qa + qb
    if np.max(np.abs(total)) > 32767:
        raise ValueError("mixture overflows int16")
    return qa.astype(np.int16), qb.astype(np.int16), total.astype(np.int16)


def read_metadata(folder: Path) -> dict[str, dict[str, str]]:
    """name -> row of an evaluation set's metadata.csv ({} when absent)."""
    try:
        with (folder / "metadata.csv").open(newline="", encoding="utf-8") as fh:
            return {row["name"]: row for row in csv.DictReader(fh)}
    except (OSError, KeyError, csv.Error):
        return {}


def is_current(folder: Path, name: str, dirs: Sequence[str], row: dict, previous: dict) -> bool:
    """True when the item's files exist and were made from the same recipe (same metadata)."""
    same = previous.get(name) == {k: str(v) for k, v in row.items()}
    return same and all((folder / d / f"{name}.wav").exists() for d in dirs)


MIN_SEPARATION_S = 1.5


def make_separation_set(root: Path, name: str, rows: list[dict], count: int, seed: int) -> int:
    """WSJ0-2mix 'min'-style 2-speaker mixtures at 8 kHz from two different speaker groups,
    written to root/sep-8k/<name> (e.g. "test", "test-real"); returns the item count."""
    by_group: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_group[r["group"]].append(r)
    groups = sorted(by_group)
    if len(groups) < 2:
        print(f"  ! sep-8k/{name}: fewer than 2 speaker groups, skipped")
        return 0
    stage = Stage(root / "sep-8k" / name)
    folder = stage.open()
    previous = read_metadata(folder)
    meta = []
    for i in range(count):
        item = f"{name}_{i:04d}"
        rng = rng_for(seed, "sep", name, i)
        for _ in range(20):  # both utterances long enough for a meaningful mixture
            ga, gb = (groups[j] for j in rng.choice(len(groups), 2, replace=False))
            ra = by_group[ga][rng.integers(len(by_group[ga]))]
            rb = by_group[gb][rng.integers(len(by_group[gb]))]
            if min(float(ra["duration"]), float(rb["duration"])) >= MIN_SEPARATION_S:
                break
        gain = float(rng.uniform(-2.5, 2.5))
        meta.append(
            {
                "name": item,
                "s1": ra["path"],
                "s2": rb["path"],
                "s1_gain_db": round(gain, 3),
                "s2_gain_db": round(-gain, 3),
            }
        )
        if is_current(folder, item, ("mix", "s1", "s2"), meta[-1], previous):
            continue
        a = resample(sf.read(root / ra["path"], dtype="float64")[0], CORPUS_RATE, SEPARATION_RATE)
        b = resample(sf.read(root / rb["path"], dtype="float64")[0], CORPUS_RATE, SEPARATION_RATE)
        n = min(len(a), len(b))
        oa = int(rng.integers(0, len(a) - n + 1))
        ob = int(rng.integers(0, len(b) - n + 1))
        a = a[oa : oa + n] * 10 ** (gain / 20)
        b = b[ob : ob + n] * 10 ** (-gain / 20)
        qa, qb, qm = quantize_pair(a, b)
        write_int16(folder / "s1" / f"{item}.wav", qa, SEPARATION_RATE)
        write_int16(folder / "s2" / f"{item}.wav", qb, SEPARATION_RATE)
        write_int16(folder / "mix" / f"{item}.wav", qm, SEPARATION_RATE)
    write_csv(folder / "metadata.csv", meta)
    stage.commit()
    return count


ENH_SNRS = (-5.0, 0.0, 5.0, 10.0, 15.0)


def make_enhancement_set(
    root: Path, name: str, speech: list[dict], noise: list[dict], count: int, seed: int
) -> int:
    """VoiceBank-DEMAND-style noisy/clean pairs at 16 kHz, SNRs cycling through ENH_SNRS,
    written to root/enh-16k/<name>; returns the item count."""
    if not speech or not noise:
        print(f"  ! enh-16k/{name}: no speech or no noise, skipped")
        return 0
    stage = Stage(root / "enh-16k" / name)
    folder = stage.open()
    previous = read_metadata(folder)
    by_group: dict[str, list[dict]] = defaultdict(list)
    for r in speech:
        by_group[r["group"]].append(r)
    groups = sorted(by_group)
    meta = []
    for i in range(count):
        item = f"{name}_{i:04d}"
        rng = rng_for(seed, "enh", name, i)
        g = groups[rng.integers(len(groups))]
        rs = by_group[g][rng.integers(len(by_group[g]))]
        rn = noise[rng.integers(len(noise))]
        snr = ENH_SNRS[i % len(ENH_SNRS)]
        meta.append({"name": item, "clean": rs["path"], "noise": rn["path"], "snr_db": snr})
        if is_current(folder, item, ("noisy", "clean"), meta[-1], previous):
            continue
        clean = sf.read(root / rs["path"], dtype="float64")[0]
        nz = sf.read(root / rn["path"], dtype="float64")[0]
        nz = np.tile(nz, int(np.ceil(len(clean) / len(nz))) + 1)
        start = int(rng.integers(0, len(nz) - len(clean) + 1))
        nz = nz[start : start + len(clean)]
        p_clean = np.mean(clean**2)
        p_noise = max(np.mean(nz**2), 1e-20)
        nz = nz * np.sqrt(p_clean / p_noise * 10 ** (-snr / 10))
        qc, _, qn = quantize_pair(clean, nz)
        write_int16(folder / "clean" / f"{item}.wav", qc, CORPUS_RATE)
        write_int16(folder / "noisy" / f"{item}.wav", qn, CORPUS_RATE)
    write_csv(folder / "metadata.csv", meta)
    stage.commit()
    return count

