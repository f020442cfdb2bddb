"""Training datasets: each item is ``(mix (1, N), sources (K, N))`` float32 at the model rate.

- :class:`MixtureFolderDataset`: WSJ0-2mix / LibriMix layout (``mix/``, ``s1/``, ``s2/`` ...).
- :class:`NoisySpeechFolderDataset`: VoiceBank-DEMAND layout (``noisy/``, ``clean/``); the
  sources are ``[clean, noisy - clean]``: speech first, noise second (no PIT for enhancement).
- :class:`DynamicMixingDataset`: mixtures drawn on the fly from single-speaker speech
  (speaker = sub-folder, or a manifest CSV) and, for enhancement, a folder of noise.

Every item satisfies ``sources.sum(0) == mix[0]`` up to float32 rounding, except for
:class:`MixtureFolderDataset` with ``mixture="file"`` where the mixture file is returned as
stored (use ``mixture="sum"`` to rebuild it from the sources).

Randomness (crops, speakers, gains, SNRs) comes from a local ``numpy`` generator seeded by
``(seed, epoch, index)``, so an item does not depend on the worker that loads it nor on the
order of loading. Call :meth:`set_epoch` before iterating each epoch to get new draws (with
``persistent_workers=True`` the workers keep the epoch they were started with).
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile as sf
import soxr
import torch
from torch.utils.data import Dataset

from diffsep.errors import AudioError, ConfigError
from diffsep.resample import resample_hq

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif", ".w64", ".au")

Item = tuple[torch.Tensor, torch.Tensor]
Task = Literal["separation", "enhancement"]

_EPS = 1e-12
_RESAMPLE_MARGIN = 256  # extra source samples read around a window to avoid resampler edges


# ---------------------------------------------------------------------------------------------
# Audio helpers (numpy in, numpy out)
# ---------------------------------------------------------------------------------------------


def _audio_files(folder: Path, recursive: bool) -> list[Path]:
    pattern = "**/*" if recursive else "*"
    return sorted(
        p
        for p in folder.glob(pattern)
        if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES and not p.name.startswith(".")
    )


def _check_samples(x: np.ndarray, path: Path) -> np.ndarray:
    if not np.all(np.isfinite(x)):
        raise AudioError(f"{path}: contains NaN or Inf samples")
    return x


def _to_mono(x: np.ndarray) -> np.ndarray:
    """(N, C) -> (N,) float64 by averaging channels."""
    return x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]


def _info(path: Path) -> Any:
    """soundfile's header info (frames, samplerate, channels) or AudioError."""
    try:
        return sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioError(f"{path}: cannot read audio ({exc})") from None


def read_mono(path: Path, sample_rate: int) -> np.ndarray:
    """Whole file as (N,) float64 at sample_rate: channels averaged, resampled with soxr."""
    try:
        x, rate = sf.read(str(path), dtype="float64", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioError(f"{path}: cannot read audio ({exc})") from None
    if x.shape[0] == 0:
        raise AudioError(f"{path}: file is empty")
    return _check_samples(resample_hq(_to_mono(x), rate, sample_rate), path)


def read_window(path: Path, sample_rate: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """A random window of `length` samples at sample_rate, (<= length,) float64.

    Reads only the needed part of long files (plus a margin for the resampler). Files shorter
    than the window are returned whole (resampled); the caller pads or tiles them.
    """
    info = _info(path)
    if info.frames <= 0:
        raise AudioError(f"{path}: file is empty")
    rate = int(info.samplerate)
    need = math.ceil(length * rate / sample_rate)
    if info.frames <= need + 1:
        return read_mono(path, sample_rate)[:length]
    # Window starts on the grid where input and output samples coincide, so that a window
    # holds the same samples as resampling the whole file would give.
    step = rate // math.gcd(rate, sample_rate)
    start = step * int(rng.integers(0, (info.frames - need) // step + 1))
    margin = step * math.ceil(_RESAMPLE_MARGIN / step)
    lo = max(0, start - margin)
    hi = min(info.frames, start + need + margin)
    try:
        x, _ = sf.read(str(path), start=lo, stop=hi, dtype="float64", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioError(f"{path}: cannot read audio ({exc})") from None
    y = _check_samples(resample_hq(_to_mono(x), rate, sample_rate), path)
    offset = (start - lo) * sample_rate // rate
    return y[offset : offset + length]


def change_speed(x: np.ndarray, factor: float) -> np.ndarray:
    """(N,) float64 played ``factor`` times as fast, as a tape would: tempo and pitch (and
    the formants) scaled together; about ``N / factor`` samples. ``factor`` 1 returns x."""
    if factor <= 0:
        raise ConfigError(f"speed factor must be positive, got {factor}")
    if factor == 1.0:
        return x
    return np.asarray(soxr.resample(x, factor, 1.0, quality="HQ"), dtype=np.float64)


def _speed_range(name: str, value: tuple[float, float] | None) -> tuple[float, float] | None:
    """``value`` checked as a range of speed factors within [0.5, 2], or None (off)."""
    if value is None:
        return None
    lo, hi = (float(v) for v in value)
    if not 0.5 <= lo <= hi <= 2.0:
        raise ConfigError(f"{name} must be [low, high] with 0.5 <= low <= high <= 2, "
                          f"got {list(value)}")
    return lo, hi


_SPEED_MARGIN = 64  # samples read on each side of a speed-changed window (resampler edges)


def crop_or_pad(x: np.ndarray, length: int, offset: int | None) -> np.ndarray:
    """(N,) -> (length,): the window starting at `offset` (N > length) or x zero-padded.

    With ``offset=None`` the window is centred; short signals are padded at the end.
    """
    n = x.shape[-1]
    if n >= length:
        start = (n - length) // 2 if offset is None else offset
        return x[..., start : start + length]
    pad = [(0, 0)] * (x.ndim - 1) + [(0, length - n)]
    return np.pad(x, pad)


def place_in_zeros(x: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """(N <= length,) placed at a random offset inside `length` zeros."""
    out = np.zeros(length)
    n = min(len(x), length)
    start = int(rng.integers(0, length - n + 1))
    out[start : start + n] = x[:n]
    return out


def tile_to(x: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """(N,) repeated end to end, a random `length`-sample window of the loop."""
    reps = math.ceil(length / len(x)) + 1
    looped = np.tile(x, reps)
    start = int(rng.integers(0, len(x)))
    return looped[start : start + length]


def power(x: np.ndarray) -> float:
    """Mean power of x (any shape)."""
    return float(np.mean(np.square(x)))


def _as_item(mix: np.ndarray, sources: np.ndarray) -> Item:
    """(N,), (K, N) float64 -> ((1, N), (K, N)) float32 tensors."""
    return (
        torch.from_numpy(np.ascontiguousarray(mix, dtype=np.float32)[None, :]),
        torch.from_numpy(np.ascontiguousarray(sources, dtype=np.float32)),
    )


def _check_range(name: str, value: tuple[float, float]) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a pair (low, high), got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ConfigError(f"{name} must be finite with low <= high, got {value!r}")
    return lo, hi


def _segment_samples(segment_seconds: float | None, sample_rate: int) -> int | None:
    if segment_seconds is None:
        return None
    if not segment_seconds > 0:
        raise ConfigError(f"segment_seconds must be positive, got {segment_seconds}")
    return max(1, round(segment_seconds * sample_rate))


def _check_rate(sample_rate: int) -> int:
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ConfigError(f"sample_rate must be a positive integer, got {sample_rate}")
    return int(sample_rate)


def _check_seed(seed: int) -> int:
    if int(seed) != seed or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed}")
    return int(seed)


def collate_padded(batch: Sequence[Item]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Items of different lengths -> (mix (B, 1, N), sources (B, K, N), lengths (B,) int64).

    Zero-pads at the end to the longest item; use it for full-length validation items.
    """
    lengths = torch.tensor([mix.shape[-1] for mix, _ in batch], dtype=torch.int64)
    n = int(lengths.max())
    mixes = torch.stack([torch.nn.functional.pad(m, (0, n - m.shape[-1])) for m, _ in batch])
    sources = torch.stack([torch.nn.functional.pad(s, (0, n - s.shape[-1])) for _, s in batch])
    return mixes, sources, lengths


# ---------------------------------------------------------------------------------------------
# Paired folders (mix + sources, noisy + clean)
# ---------------------------------------------------------------------------------------------


class _PairedFolders(Dataset):
    """Files with the same name in several sibling folders, cropped together."""

    def __init__(
        self,
        root: str | Path,
        folders: Sequence[str],
        sample_rate: int,
        segment_seconds: float | None,
        random_crop: bool,
        seed: int,
    ) -> None:
        self.root = Path(root)
        self.folders = tuple(folders)
        self.sample_rate = _check_rate(sample_rate)
        self.segment = _segment_samples(segment_seconds, self.sample_rate)
        self.random_crop = bool(random_crop)
        self.seed = _check_seed(seed)
        self.epoch = 0
        self.names = self._match_names()

    def _match_names(self) -> list[str]:
        if not self.root.is_dir():
            raise AudioError(f"{self.root}: dataset folder does not exist")
        listing = {}
        for folder in self.folders:
            path = self.root / folder
            if not path.is_dir():
                present = sorted(p.name for p in self.root.iterdir() if p.is_dir())
                raise AudioError(
                    f"{path}: folder missing (expected {', '.join(self.folders)}; "
                    f"found {', '.join(present) or 'no folders'})"
                )
            listing[folder] = {p.name for p in _audio_files(path, recursive=False)}
        reference = self.folders[0]
        names = listing[reference]
        if not names:
            raise AudioError(f"{self.root / reference}: no audio files")
        for folder in self.folders[1:]:
            missing = sorted(names - listing[folder])
            extra = sorted(listing[folder] - names)
            if missing:
                raise AudioError(
                    f"{self.root / folder}: {len(missing)} file(s) of {reference}/ missing, "
                    f"e.g. {missing[0]}"
                )
            if extra:
                raise AudioError(
                    f"{self.root / folder}: {len(extra)} file(s) not in {reference}/, "
                    f"e.g. {extra[0]}"
                )
        return sorted(names)

    def set_epoch(self, epoch: int) -> None:
        """Select the random crops of this epoch (training); no effect without random_crop."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.names)

    def _read_group(self, index: int) -> np.ndarray:
        """(F, N) float64: the file `names[index]` of every folder, checked for equal length."""
        name = self.names[index]
        signals = []
        rates = set()
        frames = set()
        for folder in self.folders:
            path = self.root / folder / name
            info = _info(path)
            rates.add(info.samplerate)
            frames.add(info.frames)
            signals.append(read_mono(path, self.sample_rate))
        if len(rates) > 1:
            raise AudioError(
                f"{self.root}: {name} has different sample rates across "
                f"{', '.join(self.folders)}: {sorted(rates)}"
            )
        if len(frames) > 1:
            raise AudioError(
                f"{self.root}: {name} has different lengths across "
                f"{', '.join(self.folders)}: {sorted(frames)} samples"
            )
        return np.stack(signals)

    def _crop(self, signals: np.ndarray, index: int) -> np.ndarray:
        """(F, N) -> (F, segment) with one shared window (or unchanged without a segment)."""
        if self.segment is None:
            return signals
        n = signals.shape[-1]
        offset = None
        if self.random_crop and n > self.segment:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            offset = int(rng.integers(0, n - self.segment + 1))
        return crop_or_pad(signals, self.segment, offset)


class MixtureFolderDataset(_PairedFolders):
    """WSJ0-2mix / LibriMix layout: ``root/mix/NAME.wav`` and ``root/s1..sK/NAME.wav``.

    Returns ``(mix (1, N), sources (K, N))`` float32 at `sample_rate` (files at another rate
    are resampled with soxr). With `segment_seconds`, items are windows of that length: random
    (per seed, epoch, index) when `random_crop`, else centred; shorter files are zero-padded at
    the end. Without it, items have the files' full length (batch them with
    :func:`collate_padded`). ``mixture="sum"`` returns the sum of the sources instead of the
    stored mixture, e.g. for ``mix_both`` folders whose mixture also holds noise.
    """

    def __init__(
        self,
        root: str | Path,
        num_sources: int = 2,
        sample_rate: int = 8000,
        segment_seconds: float | None = None,
        *,
        random_crop: bool = True,
        mix_dir: str = "mix",
        source_dirs: Sequence[str] | None = None,
        mixture: Literal["file", "sum"] = "file",
        seed: int = 0,
    ) -> None:
        if num_sources < 1:
            raise ConfigError(f"num_sources must be at least 1, got {num_sources}")
        if mixture not in ("file", "sum"):
            raise ConfigError(f"mixture must be 'file' or 'sum', got {mixture!r}")
        dirs = (
            list(source_dirs)
            if source_dirs is not None
            else [f"s{k + 1}" for k in range(num_sources)]
        )
        if len(dirs) != num_sources:
            raise ConfigError(f"{len(dirs)} source folders given for {num_sources} sources")
        self.num_sources = int(num_sources)
        self.mixture = mixture
        super().__init__(root, [mix_dir, *dirs], sample_rate, segment_seconds, random_crop, seed)

    def __getitem__(self, index: int) -> Item:
        signals = self._crop(self._read_group(index), index)
        sources = signals[1:]
        mix = sources.sum(axis=0) if self.mixture == "sum" else signals[0]
        return _as_item(mix, sources)


class NoisySpeechFolderDataset(_PairedFolders):
    """VoiceBank-DEMAND layout: ``root/noisy/NAME.wav`` and ``root/clean/NAME.wav``.

    Returns ``(noisy (1, N), [clean, noisy - clean] (2, N))`` float32 at `sample_rate`:
    speech first, noise second, so the sources sum to the mixture exactly. Cropping and
    resampling as in :class:`MixtureFolderDataset`.
    """

    num_sources = 2

    def __init__(
        self,
        root: str | Path,
        sample_rate: int = 16000,
        segment_seconds: float | None = None,
        *,
        random_crop: bool = True,
        noisy_dir: str = "noisy",
        clean_dir: str = "clean",
        seed: int = 0,
    ) -> None:
        super().__init__(
            root, [noisy_dir, clean_dir], sample_rate, segment_seconds, random_crop, seed
        )

    def __getitem__(self, index: int) -> Item:
        noisy, clean = self._crop(self._read_group(index), index)
        return _as_item(noisy, np.stack([clean, noisy - clean]))


# ---------------------------------------------------------------------------------------------
# Dynamic mixing
# ---------------------------------------------------------------------------------------------


def _read_manifest(path: Path, kind: str, split: str | None) -> list[dict[str, str]]:
    """Rows of a manifest CSV (columns: path, speaker for speech; optional kind, split)."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{path}: cannot read manifest ({exc})") from None
    columns = set(rows[0]) if rows else set()
    needed = {"path", "speaker"} if kind == "speech" else {"path"}
    if not needed <= columns:
        raise ConfigError(f"{path}: manifest needs the columns {', '.join(sorted(needed))}")
    if "kind" in columns:
        rows = [r for r in rows if r["kind"] == kind]
    if split is not None:
        if "split" not in columns:
            raise ConfigError(f"{path}: split={split!r} given but the manifest has no split column")
        rows = [r for r in rows if r["split"] == split]
    return rows


def _split_folder(source: Path, split: str | None) -> Path:
    """`source/split` when a split is asked for (it must exist), else `source`."""
    if split is None:
        return source
    if not (source / split).is_dir():
        raise AudioError(f"{source / split}: split folder does not exist")
    return source / split


def _speech_index(source: Path, split: str | None) -> dict[str, list[Path]]:
    """speaker -> sorted utterance files, from a folder of speaker folders or a manifest."""
    if source.is_file() and source.suffix.lower() == ".csv":
        speakers: dict[str, list[Path]] = {}
        for row in _read_manifest(source, "speech", split):
            speakers.setdefault(row["speaker"], []).append(source.parent / row["path"])
        return {k: sorted(v) for k, v in sorted(speakers.items())}
    if not source.is_dir():
        raise AudioError(f"{source}: speech folder or manifest does not exist")
    folder = _split_folder(source, split)
    speakers = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = _audio_files(sub, recursive=True)
        if files:
            speakers[sub.name] = files
    return speakers


def _recorded_rows(source: Path, split: str | None, kind: str, option: str) -> list[dict[str, str]]:
    """Manifest rows of ``kind`` whose ``recorded`` column is ``"yes"`` (a recording, not TTS
    or synthesis); ``option`` names the setting that asked, for the error messages."""
    if not (source.is_file() and source.suffix.lower() == ".csv"):
        raise ConfigError(
            f"{source}: {option} needs a manifest CSV with a 'recorded' column, not a folder"
        )
    rows = _read_manifest(source, kind, split)
    if rows and "recorded" not in rows[0]:
        raise ConfigError(f"{source}: {option} needs a 'recorded' column in the manifest")
    return [row for row in rows if row["recorded"].strip().lower() == "yes"]


def recorded_share_weights(
    source: Path, split: str | None, kind: str, option: str, share: float,
    is_recorded: Callable[[dict[str, str]], object], items: Sequence[object],
) -> np.ndarray:
    """(len(items),) draw probabilities giving the recorded ones of ``items`` the share
    ``share`` (:func:`share_draw_weights`); an item is recorded when it equals
    ``is_recorded(row)`` for a recorded manifest row of ``kind``. ConfigError names ``option``."""
    if not 0.0 <= share <= 1.0:
        raise ConfigError(f"{option} must be in [0, 1], got {share}")
    recorded = {is_recorded(row) for row in _recorded_rows(source, split, kind, option)}
    return share_draw_weights([item in recorded for item in items], share)


def share_draw_weights(recorded: Sequence[bool], share: float) -> np.ndarray:
    """(S,) probabilities of drawing each of S speakers (or noise files): ``share`` spread
    evenly over the recorded ones and ``1 - share`` over the others (uniform over what there
    is when one kind is missing)."""
    flags = np.asarray(recorded, dtype=bool)
    n_recorded, n_other = int(flags.sum()), int((~flags).sum())
    weights = np.where(flags, share / max(n_recorded, 1), (1.0 - share) / max(n_other, 1))
    if weights.sum() == 0:  # the whole share fell on a kind with no speakers
        weights = np.ones(len(flags))
    return weights / weights.sum()


def _noise_index(source: Path, split: str | None) -> list[Path]:
    if source.is_file() and source.suffix.lower() == ".csv":
        return sorted(source.parent / r["path"] for r in _read_manifest(source, "noise", split))
    if not source.is_dir():
        raise AudioError(f"{source}: noise folder or manifest does not exist")
    return _audio_files(_split_folder(source, split), recursive=True)


class DynamicMixingDataset(Dataset):
    """Mixtures made on the fly from single-speaker speech (and noise, for enhancement).

    `speech` is a folder whose sub-folders are speakers (audio files found recursively in
    each) or a manifest CSV with ``path`` (relative to the CSV) and ``speaker`` columns, and
    optionally ``kind`` (rows with ``kind == "speech"`` are used) and ``split``. `noise` is a
    folder of noise files or a manifest (``kind == "noise"`` rows). With `split`, manifests are
    filtered on their split column and folders are read from ``<folder>/<split>`` (the layout
    of recipes/make_corpus.py).

    Separation: `num_sources` distinct speakers, each a random window of a random utterance
    (short utterances zero-padded at a random offset), scaled to unit power and then by a
    gain drawn from `gain_range` (dB). Enhancement: one speaker and one noise window (short
    noises looped) at an SNR drawn from `snr_range` (dB, power over the window); sources are
    ``[speech, noise]``. The mixture is the sum of the sources, scaled with them to a level
    drawn from `level_range` (dBFS, RMS) and kept below full scale.

    `recorded_share` (with a manifest that has a ``recorded`` column, as recipes/make_corpus.py
    writes): the probability that a speaker drawn is a recorded human voice rather than a TTS
    one; None draws speakers uniformly. (Speakers of one mixture stay distinct, so the share of
    each slot is only about `recorded_share`.) `noise_recorded_share` does the same for the
    noise files of enhancement (a noise manifest whose ``recorded`` column marks recordings, as
    opposed to synthetic noise and babble); None draws noise files uniformly.

    `speed_range` / `noise_speed_range` (speed perturbation, off when None): each speech /
    noise window is played at a speed drawn uniformly from the range (e.g. ``(0.9, 1.1)``),
    tempo and pitch together (:func:`change_speed`), so that the voices and noises drawn are
    not only the ones on disk; the window is read ``factor`` times as long first, so items keep
    their length.

    Items are ``(mix (1, N), sources (K, N))`` float32 at `sample_rate`, N = segment_seconds ·
    sample_rate, reproducible from (seed, epoch, index). ``len()`` is `epoch_length`.
    """

    def __init__(
        self,
        speech: str | Path,
        noise: str | Path | None = None,
        *,
        task: Task = "separation",
        num_sources: int = 2,
        sample_rate: int = 8000,
        segment_seconds: float = 4.0,
        snr_range: tuple[float, float] = (-5.0, 20.0),
        gain_range: tuple[float, float] = (-2.5, 2.5),
        level_range: tuple[float, float] = (-35.0, -15.0),
        epoch_length: int = 10000,
        seed: int = 0,
        split: str | None = None,
        recorded_share: float | None = None,
        noise_recorded_share: float | None = None,
        speed_range: tuple[float, float] | None = None,
        noise_speed_range: tuple[float, float] | None = None,
    ) -> None:
        if task not in ("separation", "enhancement"):
            raise ConfigError(f"task must be 'separation' or 'enhancement', got {task!r}")
        if task == "enhancement" and num_sources != 2:
            raise ConfigError(f"enhancement has 2 sources (speech, noise), got {num_sources}")
        if task == "separation" and num_sources < 1:
            raise ConfigError(f"num_sources must be at least 1, got {num_sources}")
        if task == "enhancement" and noise is None:
            raise ConfigError("enhancement needs a noise folder or manifest")
        if task == "separation" and noise is not None:
            raise ConfigError("noise is only used for enhancement (task='enhancement')")
        if epoch_length < 1:
            raise ConfigError(f"epoch_length must be at least 1, got {epoch_length}")
        self.task = task
        self.num_sources = int(num_sources)
        self.sample_rate = _check_rate(sample_rate)
        segment = _segment_samples(segment_seconds, self.sample_rate)
        if segment is None:
            raise ConfigError("segment_seconds is required for dynamic mixing")
        self.segment = segment
        self.snr_range = _check_range("snr_range", snr_range)
        self.gain_range = _check_range("gain_range", gain_range)
        self.level_range = _check_range("level_range", level_range)
        self.epoch_length = int(epoch_length)
        self.speed_range = _speed_range("speed_range", speed_range)
        self.noise_speed_range = _speed_range("noise_speed_range", noise_speed_range)
        if self.noise_speed_range is not None and task != "enhancement":
            raise ConfigError("noise_speed_range applies to enhancement (noise) only")
        self.seed = _check_seed(seed)
        self.epoch = 0
        self._unreadable: set[Path] = set()  # files that failed to read (skipped, warned once)

        index = _speech_index(Path(speech), split)
        self.speakers = sorted(index)
        self.utterances = [index[s] for s in self.speakers]
        needed = self.num_sources if task == "separation" else 1
        if len(self.speakers) < needed:
            raise AudioError(
                f"{speech}: {len(self.speakers)} speaker(s) with audio found, {needed} needed"
            )
        self.speaker_weights: np.ndarray | None = None  # (S,) draw probabilities, or uniform
        if recorded_share is not None:
            weights = recorded_share_weights(
                Path(speech), split, "speech", "recorded_share", recorded_share,
                lambda row: row["speaker"], self.speakers)
            if int((weights > 0).sum()) < needed:
                raise AudioError(f"{speech}: recorded_share {recorded_share} leaves fewer than "
                                 f"{needed} speakers to draw from")
            self.speaker_weights = weights
        self.noises = _noise_index(Path(noise), split) if noise is not None else []
        if task == "enhancement" and not self.noises:
            raise AudioError(f"{noise}: no noise audio files found")
        self.noise_weights: np.ndarray | None = None  # (F,) draw probabilities, or uniform
        if noise_recorded_share is not None:
            if noise is None:
                raise ConfigError("noise_recorded_share applies to enhancement (noise) only")
            self.noise_weights = recorded_share_weights(
                Path(noise), split, "noise", "noise_recorded_share", noise_recorded_share,
                lambda row: Path(noise).parent / row["path"], self.noises)

    def set_epoch(self, epoch: int) -> None:
        """Select the random draws of this epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.epoch_length

    def _draw_window(
        self,
        files: Sequence[Path],
        fit: Callable[[np.ndarray, int, np.random.Generator], np.ndarray],
        rng: np.random.Generator,
        what: str,
        weights: np.ndarray | None = None,
        speed_range: tuple[float, float] | None = None,
    ) -> np.ndarray:
        """(segment,) float64 with non-zero power from a random file of ``files`` (drawn with
        the probabilities ``weights``, or uniformly), played at a speed drawn from
        ``speed_range`` (None: as recorded), shaped by ``fit(x, segment, rng)`` when short.
        Silent draws are retried (8 tries); a file that can no longer be read (moved, deleted,
        corrupted) is skipped from then on with one warning, so a long run survives changes
        to its corpus."""
        last_error: AudioError | None = None
        for _ in range(8):
            if weights is None:
                path = files[int(rng.integers(len(files)))]
            else:
                path = files[int(rng.choice(len(files), p=weights))]
            if path in self._unreadable:
                continue
            try:
                if speed_range is None:
                    x = read_window(path, self.sample_rate, self.segment, rng)
                else:
                    x = self._read_at_speed(path, float(rng.uniform(*speed_range)), rng)
            except AudioError as err:
                self._unreadable.add(path)
                warnings.warn(f"{err}; skipping this file", RuntimeWarning, stacklevel=3)
                last_error = err
                continue
            if len(x) < self.segment:
                x = fit(x, self.segment, rng)
            if power(x) > _EPS:
                return x
        if all(path in self._unreadable for path in files):
            raise AudioError(f"{what}: no readable audio left to draw from") from last_error
        raise AudioError(f"{what}: only silent or unreadable audio was drawn (8 tries)")

    def _read_at_speed(self, path: Path, factor: float, rng: np.random.Generator) -> np.ndarray:
        """(<= segment,) float64: a random window of ``path`` played ``factor`` times as fast
        (read ``factor`` times as long, with a margin on each side for the resampler)."""
        needed = math.ceil(self.segment * factor) + 2 * _SPEED_MARGIN
        x = read_window(path, self.sample_rate, needed, rng)
        fast = change_speed(x, factor)
        if len(x) < needed:  # a short file, read whole: a random window of it, if longer
            start = int(rng.integers(0, max(0, len(fast) - self.segment) + 1))
        else:  # past the margin
            start = round(_SPEED_MARGIN / factor)
        return fast[start : start + self.segment]

    def _speech_window(self, speaker: int, rng: np.random.Generator) -> np.ndarray:
        """(segment,) float64 speech of ``speaker`` (short utterances zero-padded)."""
        return self._draw_window(self.utterances[speaker], place_in_zeros, rng,
                                 str(self.speakers[speaker]), speed_range=self.speed_range)

    def _noise_window(self, rng: np.random.Generator) -> np.ndarray:
        """(segment,) float64 noise (short files looped)."""
        return self._draw_window(self.noises, tile_to, rng, "noise", self.noise_weights,
                                 self.noise_speed_range)

    def __getitem__(self, index: int) -> Item:
        if not 0 <= index < self.epoch_length:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.task == "separation":
            chosen = rng.choice(len(self.speakers), size=self.num_sources, replace=False,
                                p=self.speaker_weights)
            sources = []
            for speaker in chosen:
                x = self._speech_window(int(speaker), rng)
                gain_db = rng.uniform(*self.gain_range)
                sources.append(x / math.sqrt(power(x)) * 10 ** (gain_db / 20))
        else:
            if self.speaker_weights is None:
                speaker = int(rng.integers(len(self.speakers)))
            else:
                speaker = int(rng.choice(len(self.speakers), p=self.speaker_weights))
            speech = self._speech_window(speaker, rng)
            noise = self._noise_window(rng)
            snr_db = rng.uniform(*self.snr_range)
            noise = noise * math.sqrt(power(speech) / power(noise) * 10 ** (-snr_db / 10))
            sources = [speech, noise]
        stacked = np.stack(sources)
        mix = stacked.sum(axis=0)
        scale = 10 ** (rng.uniform(*self.level_range) / 20) / math.sqrt(max(power(mix), _EPS))
        peak = max(float(np.max(np.abs(mix))), float(np.max(np.abs(stacked)))) * scale
        if peak > 0.99:
            scale *= 0.99 / peak
        stacked32 = (stacked * scale).astype(np.float32)
        return _as_item(stacked32.sum(axis=0), stacked32)
