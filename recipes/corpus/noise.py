"""Noise: synthetic kinds, babble of corpus speech, typing from key samples, and recorded
sound files (gcompris-qt effects in Qt .rcc archives, MegaGlest ambiences, music on hold)."""

from __future__ import annotations

import hashlib
import re
import struct
import tempfile
import zlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .audio import (
    CORPUS_RATE,
    SPLITS,
    finish_noise,
    resample,
    rng_for,
    to_mono,
    trim_silence,
    write_pcm16,
)
from .errors import CorpusError

GCOMPRIS_RCC = Path("/usr/share/gcompris-qt/rcc")
# activities whose sounds are musical notes, speech or jingles: not used as noise
GCOMPRIS_EXCLUDE = re.compile(
    r"/(instruments|melody|play_rhythm|piano_composition|ballcatch|chronos|note_names)/|/intro\.ogg$"
)
BUCKLESPRING_ROOT = Path("/usr/share/buckle/wav")


def shaped_noise(n: int, rng: np.random.Generator, tilt: float) -> np.ndarray:
    """Gaussian noise with a 1/f^tilt power spectrum and a random smooth EQ, (n,)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / CORPUS_RATE)
    f = np.maximum(freqs, 20.0)
    gain = f ** (-tilt / 2)
    logf = np.log2(f)
    for _ in range(int(rng.integers(0, 5))):  # a few broad EQ bumps or dips in log frequency
        centre = rng.uniform(np.log2(80), np.log2(7000))
        gain *= 10 ** (
            rng.uniform(-12, 12)
            / 20
            * np.exp(-0.5 * ((logf - centre) / rng.uniform(0.3, 1.5)) ** 2)
        )
    return np.fft.irfft(spec * gain, n)


def smooth_envelope(n: int, rng: np.random.Generator, rate_hz: float, depth: float) -> np.ndarray:
    """Slowly varying positive gain curve around 1 (random knots, linear interpolation)."""
    knots = max(2, int(n / CORPUS_RATE * rate_hz) + 2)
    values = 1.0 + depth * rng.uniform(-1, 1, knots)
    return np.interp(np.arange(n), np.linspace(0, n - 1, knots), values)


def synth_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """One synthetic noise signal of n samples at 16 kHz (not yet level-normalised)."""
    t = np.arange(n) / CORPUS_RATE
    if kind == "colored":  # white .. pink .. brown, with EQ and slow level changes
        return shaped_noise(n, rng, rng.uniform(0.0, 2.2)) * smooth_envelope(
            n, rng, 0.5, rng.uniform(0, 0.5)
        )
    if kind == "hum":  # mains hum with harmonics over a faint noise floor
        f0 = rng.choice([50.0, 60.0]) * (1 + rng.uniform(-0.01, 0.01))
        x = sum(
            rng.uniform(0.1, 1.0)
            / k ** rng.uniform(0.3, 1.5)
            * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi))
            for k in range(1, 25)
            if f0 * k < CORPUS_RATE / 2
        )
        noise = shaped_noise(n, rng, rng.uniform(0.5, 2.0))
        return x / np.std(x) + noise / np.std(noise) * 10 ** (rng.uniform(-25, -8) / 20)
    if kind == "machine":  # engine-like harmonic tone with jitter and amplitude modulation
        f0 = rng.uniform(25, 250) * (1 + 0.02 * np.cumsum(rng.standard_normal(n)) / np.sqrt(n))
        phase = 2 * np.pi * np.cumsum(f0) / CORPUS_RATE
        x = sum(rng.uniform(0.2, 1.0) / k * np.sin(k * phase) for k in range(1, 16))
        am = 1 + rng.uniform(0.1, 0.7) * np.sin(2 * np.pi * rng.uniform(1, 20) * t)
        noise = shaped_noise(n, rng, rng.uniform(0.5, 1.8))
        return x * am / np.std(x) + noise / np.std(noise) * 10 ** (rng.uniform(-15, 0) / 20)
    if kind == "bursts":  # noise switched on and off
        x = shaped_noise(n, rng, rng.uniform(0.0, 2.0))
        gate = np.zeros(n)
        pos = 0
        while pos < n:
            length = int(rng.uniform(0.05, 1.2) * CORPUS_RATE)
            gate[pos : pos + length] = rng.uniform(0.3, 1.0)
            pos += length + int(rng.uniform(0.05, 1.5) * CORPUS_RATE)
        ramp = np.hanning(int(0.01 * CORPUS_RATE))
        gate = np.convolve(gate, ramp / ramp.sum(), mode="same")
        return x * (gate + 10 ** (rng.uniform(-40, -20) / 20))
    if kind == "clicks":  # impulsive events (rain, crackle, typing-like) on a faint floor
        x = np.zeros(n)
        events = rng.poisson(rng.uniform(2, 60) * n / CORPUS_RATE)
        for pos in rng.integers(0, n, events):
            length = int(rng.uniform(0.002, 0.04) * CORPUS_RATE)
            burst = rng.standard_normal(length) * np.exp(-np.arange(length) / (length / 4))
            end = min(n, pos + length)
            x[pos:end] += rng.uniform(0.2, 1.0) * burst[: end - pos]
        floor = shaped_noise(n, rng, rng.uniform(0.5, 2.0))
        return x + floor / np.std(floor) * np.std(x) * 10 ** (rng.uniform(-30, -10) / 20)
    raise ValueError(f"unknown noise kind {kind}")


SYNTH_KINDS = ("colored", "colored", "hum", "machine", "bursts", "clicks")


# noise sources that are recordings (the rest is synthetic or babble of corpus speech)
RECORDED_NOISE_SOURCES = (
    "gcompris-qt-data",
    "bucklespring-data",
    "megaglest-data",
    "asterisk-moh-opsound-wav",
    "widelands-data",
    "hedgewars-data",
    "extremetuxracer-data",
)


@dataclass(frozen=True)
class NoiseJob:
    """One noise file to make: `out` (written), listed as noise/`split`/`name`."""

    out: str
    split: str
    name: str
    kind: str  # a SYNTH_KINDS entry, 'babble', 'typing' or 'file'
    seed: int
    index: int
    seconds: float
    group: str
    source: str
    inputs: tuple[str, ...] = ()  # babble utterances, key samples or the source file
    inner: str = ""  # path inside a gcompris .rcc archive

    @property
    def recorded(self) -> bool:
        return self.source in RECORDED_NOISE_SOURCES


def read_noise_file(path: Path, inner: str) -> tuple[np.ndarray, float]:
    """(N,) samples and rate of a sound file, or of the file `inner` of a .rcc archive."""
    if not inner:
        x, rate = sf.read(str(path), dtype="float64", always_2d=False)
        return to_mono(x), rate
    data = read_rcc_file(path, inner)
    if data is None:
        raise CorpusError(f"{path}: {inner} not found in the archive")
    with tempfile.NamedTemporaryFile(suffix=Path(inner).suffix) as fh:
        fh.write(data)
        fh.flush()
        x, rate = sf.read(fh.name, dtype="float64", always_2d=False)
    return to_mono(x), rate


def render_noise(job: NoiseJob) -> tuple[str, float, str]:
    """Make one noise file; returns (path, duration s, '' | 'skipped: ...' | error message)."""
    out = Path(job.out)
    if out.exists():
        return job.out, sf.info(str(out)).duration, ""
    try:  # seeded by split and name, not by where the corpus lives
        rng = rng_for(job.seed, "noise", job.split, job.name)
        n = int(job.seconds * CORPUS_RATE)
        if job.kind in SYNTH_KINDS:
            x = synth_noise(job.kind, n, rng)
        elif job.kind == "babble":
            x = np.zeros(n)
            for path in job.inputs:
                y, _ = sf.read(path, dtype="float64")
                y = np.tile(y, int(np.ceil(n / len(y))) + 1)
                start = int(rng.integers(0, len(y) - n + 1))
                x += y[start : start + n] * 10 ** (rng.uniform(-4, 4) / 20)
        elif job.kind == "typing":
            x = typing_noise(n, [Path(p) for p in job.inputs], rng)
        elif job.kind == "file":
            x, rate = read_noise_file(Path(job.inputs[0]), job.inner)
            x = resample(x, rate, CORPUS_RATE)
            x = trim_silence(x, CORPUS_RATE, below_peak_db=60.0)
        else:
            raise ValueError(f"unknown noise job kind {job.kind}")
        if len(x) < 0.5 * CORPUS_RATE or not np.any(x):
            return job.out, 0.0, "skipped: shorter than 0.5 s or silent"
        y = finish_noise(x, CORPUS_RATE)
        write_pcm16(out, y, CORPUS_RATE)
        return job.out, len(y) / CORPUS_RATE, ""
    except (OSError, ValueError, RuntimeError, sf.LibsndfileError, zlib.error) as e:
        return job.out, 0.0, f"{type(e).__name__}: {e}"


def typing_noise(n: int, key_samples: Sequence[Path], rng: np.random.Generator) -> np.ndarray:
    """Keyboard typing built from recorded key press/release samples (bucklespring)."""
    keys: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    for p in key_samples:
        code, _, action = p.stem.partition("-")
        x, rate = sf.read(str(p), dtype="float64", always_2d=False)
        keys[code][action] = resample(to_mono(x), rate, CORPUS_RATE)
    codes = sorted(c for c in keys if "0" in keys[c])
    out = np.zeros(n + CORPUS_RATE)
    pos = int(rng.uniform(0, 0.5) * CORPUS_RATE)
    while pos < n:
        for _ in range(int(rng.integers(3, 25))):  # a burst of typing, then a pause
            code = codes[rng.integers(len(codes))]
            press = keys[code]["0"]
            gain = 10 ** (rng.uniform(-6, 0) / 20)
            out[pos : pos + len(press)] += gain * press[: len(out) - pos]
            release = keys[code].get("1")
            if release is not None:
                at = pos + int(rng.uniform(0.05, 0.16) * CORPUS_RATE)
                out[at : at + len(release)] += gain * release[: max(0, len(out) - at)]
            pos += int(rng.uniform(0.07, 0.28) * CORPUS_RATE)
            if pos >= n:
                break
        pos += int(rng.uniform(0.3, 2.0) * CORPUS_RATE)
    return out[:n]


def rcc_entries(path: Path) -> Iterator[tuple[str, int, int]]:
    """(inner path, flags, data offset) of the files in a Qt resource (.rcc) archive."""
    data = path.read_bytes()
    if data[:4] != b"qres":
        raise CorpusError(f"{path}: not a Qt resource (.rcc) archive")
    try:
        yield from _rcc_walk(data)
    except (struct.error, UnicodeDecodeError, IndexError):
        raise CorpusError(f"{path}: damaged Qt resource archive (table out of range)") from None


def _rcc_walk(data: bytes) -> Iterator[tuple[str, int, int]]:
    version, tree, payload, names = struct.unpack(">4I", data[4:20])
    node_size = 22 if version >= 2 else 14

    def name_at(offset: int) -> str:
        (length,) = struct.unpack(">H", data[names + offset : names + offset + 2])
        return data[names + offset + 6 : names + offset + 6 + 2 * length].decode("utf-16-be")

    stack = [(0, "")]
    while stack:
        node, prefix = stack.pop()
        at = tree + node * node_size
        name_offset, flags = struct.unpack(">IH", data[at : at + 6])
        name = name_at(name_offset) if node else ""
        if flags & 2:  # directory
            count, first = struct.unpack(">II", data[at + 6 : at + 14])
            stack.extend((first + c, f"{prefix}{name}/") for c in range(count))
        else:
            (offset,) = struct.unpack(">I", data[at + 10 : at + 14])
            yield prefix + name, flags, payload + offset


def read_rcc_file(path: Path, inner: str) -> bytes | None:
    """Bytes of one file inside a .rcc archive (zlib-compressed entries are inflated)."""
    data = path.read_bytes()
    for name, flags, offset in rcc_entries(path):
        if name == inner:
            (size,) = struct.unpack(">I", data[offset : offset + 4])
            blob = data[offset + 4 : offset + 4 + size]
            if flags & 1:  # qCompress: 4-byte big-endian length + zlib stream
                return zlib.decompress(blob[4:])
            if flags & 4:
                raise ValueError(f"zstd-compressed entry not supported: {inner}")
            return blob
    return None


def gcompris_noise_files() -> list[tuple[Path, str]]:
    """(rcc archive, inner path) of the usable gcompris-qt sound effects."""
    found = []
    if not GCOMPRIS_RCC.is_dir():
        return found
    for rcc in sorted(GCOMPRIS_RCC.glob("*.rcc")):
        for inner, _, _ in rcc_entries(rcc):
            if inner.lower().endswith((".ogg", ".wav")) and not GCOMPRIS_EXCLUDE.search(inner):
                found.append((rcc, inner))
    return sorted(found, key=lambda e: (e[0].name, e[1]))



MEGAGLEST_ROOT = Path("/usr/share/games/megaglest")
# ambiences of the map tilesets (day, night, rain, wind, birds, ...), menu music, water
MEGAGLEST_GLOBS = ("tilesets/*/sounds/*", "data/core/menu/music/*", "data/core/water_sounds/*")
MOH_ROOT = Path("/usr/share/asterisk/moh")  # asterisk-moh-opsound-wav: music on hold

# Recorded noise for the train split only (added after the valid and test sets were made, so
# those stay as they were): game music, ambiences and sound effects. Vocal sounds are left
# out (hedgewars' voice packs, growls and shouts; its spoken countdown).
TRAIN_ONLY_NOISE = (
    # (file prefix, package, root, globs, names left out)
    ("widelands", "widelands-data", Path("/usr/share/games/widelands/data"),
     ("music/*", "sound/**/*"), None),
    ("hedgewars", "hedgewars-data", Path("/usr/share/games/hedgewars/Data"),
     ("Music/*", "Sounds/*"), re.compile(r"^(hell_|hogchant|countdown|kiss|yoohoo)", re.I)),
    ("etr", "extremetuxracer-data", Path("/usr/share/games/etr"), ("music/*", "sounds/*"),
     None),
)


def sound_files(root: Path, globs: Sequence[str]) -> list[Path]:
    """.ogg/.wav files under root matching globs, byte-identical copies dropped (first kept)."""
    seen: dict[str, Path] = {}
    for pattern in globs:
        for p in sorted(root.glob(pattern)):
            if p.suffix.lower() in (".ogg", ".wav") and p.is_file():
                seen.setdefault(hashlib.sha256(p.read_bytes()).hexdigest(), p)
    return sorted(seen.values())


def split_items(count: int, seed: int, label: str, valid_frac: float, test_frac: float):
    """split of each of `count` items (files or keys): a seeded shuffle, test first."""
    n_test = max(1, round(count * test_frac)) if count >= 3 else 0
    n_valid = max(1, round(count * valid_frac)) if count >= 3 else 0
    splits = [""] * count
    for rank, idx in enumerate(rng_for(seed, label).permutation(count)):
        splits[idx] = "test" if rank < n_test else "valid" if rank < n_test + n_valid else "train"
    return splits


def safe_stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text)


# files per (train, valid, test): (--small, full)
NOISE_FILES = {
    "synth": ((6, 2, 2), (240, 30, 30)),
    "babble": ((1, 1, 1), (40, 6, 6)),
    "typing": ((1, 1, 1), (16, 2, 2)),
}


def plan_noise(
    dirs: dict[str, Path],
    speech_rows: list[dict],
    root: Path,
    seed: int,
    small: bool,
    valid_frac: float,
    test_frac: float,
) -> list[NoiseJob]:
    """Noise jobs of every split, written into dirs[split]; babble reads root/speech rows."""
    jobs: list[NoiseJob] = []

    def add(split: str, name: str, kind: str, index: int, seconds: float, group: str,
            source: str, inputs: tuple[str, ...] = (), inner: str = "") -> None:
        jobs.append(NoiseJob(str(dirs[split] / name), split, name, kind, seed, index, seconds,
                             group, source, inputs, inner))

    seconds = 4.0 if small else 10.0
    n_synth, n_babble, n_typing = (
        dict(zip(SPLITS, NOISE_FILES[kind][0 if small else 1])) for kind in NOISE_FILES
    )
    for split in SPLITS:
        for i in range(n_synth[split]):
            kind = SYNTH_KINDS[i % len(SYNTH_KINDS)]
            add(split, f"synth-{kind}_{i:04d}.wav", kind, i, seconds, f"synth-{kind}", "synthetic")
        pool = [r for r in speech_rows if r["split"] == split]
        for i in range(n_babble[split] if len(pool) >= 4 else 0):
            rng = rng_for(seed, "babble", split, i)
            picks = rng.choice(len(pool), min(len(pool), int(rng.integers(4, 9))), replace=False)
            names = "\n".join(pool[j]["path"] for j in picks)
            digest = hashlib.sha256(names.encode()).hexdigest()[:8]
            add(split, f"babble_{i:04d}_{digest}.wav", "babble", i, seconds, "babble",
                "babble of corpus speech (same split)",
                tuple(str(root / pool[j]["path"]) for j in picks))

    def subset(items: list, label: str, count: int) -> list:
        """All items, or with --small a seeded `count` of them (in their order)."""
        if not small:
            return items
        return [items[i] for i in sorted(rng_for(seed, label).permutation(len(items))[:count])]

    def add_files(prefix: str, source: str, files: Sequence[Path], splits: Sequence[str],
                  level: int) -> None:
        """One job per sound file, named after its folder `level` up (0: its own) and stem."""
        for rank, (path, split) in enumerate(zip(files, splits)):
            stem = safe_stem(f"{path.parents[level].name}-{path.stem}")
            add(split, f"{prefix}_{stem}.wav", "file", rank, 0.0, f"{prefix}-{stem}", source,
                (str(path),))

    gcompris = subset(gcompris_noise_files(), "gc", 9)
    for rank, ((rcc, inner), split) in enumerate(
        zip(gcompris, split_items(len(gcompris), seed, "gcompris-split", valid_frac, test_frac))
    ):
        stem = safe_stem(f"{Path(inner).parent.parent.name}-{Path(inner).stem}")
        add(split, f"gcompris_{stem}.wav", "file", rank, 0.0, f"gcompris-{stem}",
            "gcompris-qt-data", (str(rcc),), inner)

    # each file in one split; megaglest's are all in sounds/ folders: the tileset names them
    for prefix, source, files in (
        ("megaglest", "megaglest-data", sound_files(MEGAGLEST_ROOT, MEGAGLEST_GLOBS)),
        ("moh", "asterisk-moh-opsound-wav", sound_files(MOH_ROOT, ("*",))),
    ):
        files = subset(files, prefix, 3)
        add_files(prefix, source, files,
                  split_items(len(files), seed, f"{prefix}-split", valid_frac, test_frac), 1)

    for prefix, source, root_dir, globs, leave_out in TRAIN_ONLY_NOISE:
        files = subset([p for p in sound_files(root_dir, globs)
                        if leave_out is None or not leave_out.search(p.name)], prefix, 3)
        add_files(prefix, source, files, ["train"] * len(files), 0)

    if BUCKLESPRING_ROOT.is_dir():
        samples = sorted(BUCKLESPRING_ROOT.glob("*.wav"))
        codes = sorted({p.stem.partition("-")[0] for p in samples})
        perm = [codes[i] for i in rng_for(seed, "keys").permutation(len(codes))]
        k_test, k_valid = max(1, len(codes) // 10), max(1, len(codes) // 10)
        key_split = {
            c: "test" if r < k_test else "valid" if r < k_test + k_valid else "train"
            for r, c in enumerate(perm)
        }
        for split in SPLITS:
            keys = tuple(str(p) for p in samples if key_split[p.stem.partition("-")[0]] == split)
            for i in range(n_typing[split] if keys else 0):
                add(split, f"typing_{i:04d}.wav", "typing", i, seconds, f"typing-{split}",
                    "bucklespring-data", keys)
    return jobs
