#!/usr/bin/env python3
"""Pack a corpus's training speech into a small copy for a remote training machine.

    python recipes/pack_corpus.py data/corpus pack/sep-8k --rate 8000 \
        --cap-recorded 220 --cap-tts 20 --valid data/corpus/sep-8k/valid-real

Reads the ``train`` speech rows of ``CORPUS/manifest.csv`` (recipes/make_corpus.py), keeps
utterances in a seeded random order while their speaker has less than ``--cap-recorded``
(recorded voices) or ``--cap-tts`` (TTS voices) seconds, and writes them as Ogg Vorbis at
``--rate`` (quality ``--quality``, 0 = best .. 1 = smallest in libsndfile's scale) to
``OUT/a/``, with ``OUT/manifest.csv`` listing them with the corpus's columns (so
``data.recorded_share`` still works). With ``--noise-cap S`` (for enhancement) the train noise
rows are packed too, each file cut to its first S seconds, listed in the same manifest (so
it serves as ``data.train`` and ``data.noise``; ``data.noise_recorded_share`` still works);
``--recorded-noise-cap S`` gives recorded noise (``recorded == "yes"``) a cap of its own.
With ``--valid``, the first ``--valid-count`` files of each sub-folder of that evaluation
folder are copied as FLAC to ``OUT/valid/`` (100 for whole-file validation on that machine).

Why: a device that takes 64 MiB of data per call holds about 2.8 hours of 8 kHz speech this
way (3.9 kB/s at quality 0.5; the decoded speech is within 24 dB SI-SDR of the original,
median, far below what the models resolve) against 35 minutes as 16-bit WAV. At 16 kHz with
``--cap-recorded 60 --cap-tts 10 --noise-cap 10`` and 100 ``enh-16k/valid-real`` files the
pack is 50.7 MiB (1.22 h of speech, 0.94 h of noise, 9.9 MiB of validation files): lower the
caps to fit beside the repository (the enhancement model's GPU stage used ``--cap-recorded 80
--cap-tts 6 --noise-cap 6 --quality 0.4 --valid-count 16``: 41.3 MiB; synthetic noise hardly
compresses). Needs soundfile >= 0.13 (its ``compression_level``).

``--speech-codec opus`` writes the speech as Ogg Opus instead (8, 12, 16, 24 or 48 kHz only;
``--speech-quality``, default ``--quality``), the noise staying Vorbis. Measured on 10
recorded training voices at 16 kHz: Opus at 0.9 takes 29.6 kbit/s with a median SI-SDR of the
decoded speech of 25.3 dB (worst 21.7), Vorbis at 0.4 51.4 kbit/s (29.7 dB) and at 1.0 28.1
kbit/s (19.5 dB): 1.7 times the speech in the same bytes. On noise Opus does worse than Vorbis
(11.3 dB median at 30.8 kbit/s against 22.0 dB for Vorbis at 0.4), hence speech only. At
8 kHz Opus gains nothing: 33.6 kbit/s at 0.9 (28.7 dB) against Vorbis's 28.7 kbit/s at 0.5
(29.5 dB), on the same voices.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from diffsep.resample import resample_hq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus.build import run_parallel  # noqa: E402
from corpus.report import is_recorded, read_csv, write_csv  # noqa: E402


def cap_rows(rows: Sequence[dict[str, str]], cap_recorded: float, cap_tts: float,
             seed: int = 0) -> list[dict[str, str]]:
    """Rows taken in a seeded random order while their speaker holds less than its cap
    (seconds, from the ``duration`` column; ``recorded == "yes"`` picks the recorded cap):
    each speaker ends within one utterance above its cap."""
    held: dict[str, float] = {}
    kept = []
    for index in np.random.default_rng(seed).permutation(len(rows)):
        row = rows[index]
        cap = cap_recorded if is_recorded(row) else cap_tts
        if held.get(row["speaker"], 0.0) >= cap:
            continue
        held[row["speaker"]] = held.get(row["speaker"], 0.0) + float(row["duration"])
        kept.append(row)
    return kept


OPUS_RATES = (8000, 12000, 16000, 24000, 48000)  # the only rates Opus encodes


def write_ogg(source: Path, target: Path, rate: int, quality: float,
              max_seconds: float | None = None, codec: str = "VORBIS") -> float:
    """``source`` (its first ``max_seconds``, if given) as mono Ogg ``codec`` (VORBIS or OPUS)
    at ``rate`` Hz, peak kept below full scale; returns the seconds written. ValueError names
    an unreadable ``source``."""
    try:
        with sf.SoundFile(source) as fh:
            frames = -1 if max_seconds is None else round(max_seconds * fh.samplerate)
            audio, source_rate = fh.read(frames, dtype="float64", always_2d=True), fh.samplerate
    except (OSError, RuntimeError) as exc:  # soundfile's LibsndfileError is a RuntimeError
        raise ValueError(f"{source}: cannot read audio ({exc})") from None
    mono = resample_hq(audio.mean(axis=1), source_rate, rate)
    mono = mono * min(1.0, 0.999 / max(float(np.abs(mono).max(initial=0.0)), 1e-9))
    with sf.SoundFile(target, "w", rate, 1, format="OGG", subtype=codec,
                      compression_level=quality) as out:
        out.write(mono.astype(np.float32))
    return len(mono) / rate


def _convert(job: tuple[Path, Path, int, float, float | None, str]) -> float:
    return write_ogg(*job)


def copy_valid(folder: Path, out: Path, count: int) -> int:
    """The first ``count`` files (name order) of each sub-folder of ``folder`` as FLAC."""
    copied = 0
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        (out / sub.name).mkdir(parents=True, exist_ok=True)
        for path in sorted(sub.glob("*.wav"))[:count]:
            audio, rate = sf.read(path)
            sf.write(out / sub.name / f"{path.stem}.flac", audio, rate, subtype="PCM_16")
            copied += 1
    return copied


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("corpus", type=Path, help="corpus folder with manifest.csv")
    p.add_argument("out", type=Path, help="new folder for the pack")
    p.add_argument("--rate", type=int, default=8000, help="sample rate of the pack (Hz)")
    p.add_argument("--cap-recorded", type=float, default=220.0, help="seconds per recorded voice")
    p.add_argument("--cap-tts", type=float, default=20.0, help="seconds per TTS voice")
    p.add_argument("--quality", type=float, default=0.5, help="Vorbis compression level, 0..1")
    p.add_argument("--recorded-noise-cap", type=float,
                   help="seconds kept of each recorded noise file (default: --noise-cap)")
    p.add_argument("--speech-codec", choices=("vorbis", "opus"), default="vorbis",
                   help="codec of the speech (noise is always Vorbis)")
    p.add_argument("--speech-quality", type=float,
                   help="compression level of the speech, 0..1 (default: --quality)")
    p.add_argument("--noise-cap", type=float, default=0.0,
                   help="also pack the train noise, at most this many seconds per file (0: none)")
    p.add_argument("--valid", type=Path, help="evaluation folder to copy (mix/s1/s2 or noisy/clean)")
    p.add_argument("--valid-count", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    manifest = args.corpus / "manifest.csv"
    if not manifest.is_file():
        print(f"pack_corpus: {manifest}: no such manifest", file=sys.stderr)
        return 2
    if args.out.exists():
        print(f"pack_corpus: {args.out}: already exists", file=sys.stderr)
        return 2
    if args.speech_codec == "opus" and args.rate not in OPUS_RATES:
        print(f"pack_corpus: --rate {args.rate}: Opus encodes only at "
              f"{', '.join(str(r) for r in OPUS_RATES)} Hz", file=sys.stderr)
        return 2
    train = [r for r in read_csv(manifest) if r["split"] == "train"]
    kept = cap_rows([r for r in train if r["kind"] == "speech"], args.cap_recorded,
                    args.cap_tts, args.seed)
    noise = [r for r in train if r["kind"] == "noise"] if args.noise_cap > 0 else []
    if not kept or (args.noise_cap > 0 and not noise):
        print(f"pack_corpus: {manifest}: no train {'speech' if not kept else 'noise'}",
              file=sys.stderr)
        return 2
    partial = args.out.with_name(args.out.name + ".partial")  # renamed to OUT when complete
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "a").mkdir(parents=True)
    try:
        _pack(args, partial, kept, noise)
    except ValueError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        print(f"pack_corpus: {exc}", file=sys.stderr)
        return 1
    partial.rename(args.out)
    return 0


def _pack(args: argparse.Namespace, out: Path, kept: list[dict[str, str]],
          noise: list[dict[str, str]]) -> None:
    """Write the pack's audio, manifest and validation copies into ``out``; print a summary."""
    names = [f"a/{i:05d}.ogg" for i in range(len(kept))]
    names += [f"a/n{i:05d}.ogg" for i in range(len(noise))]
    speech_quality = args.quality if args.speech_quality is None else args.speech_quality
    recorded_cap = args.noise_cap if args.recorded_noise_cap is None else args.recorded_noise_cap
    jobs = [(args.corpus / row["path"], out / name, args.rate, speech_quality, None,
             args.speech_codec.upper()) for row, name in zip(kept, names)]
    jobs += [(args.corpus / row["path"], out / name, args.rate, args.quality,
              recorded_cap if is_recorded(row) else args.noise_cap, "VORBIS")
             for row, name in zip(noise, names[len(kept):])]
    seconds = run_parallel(_convert, jobs, args.jobs, "pack")
    write_csv(out / "manifest.csv",
              [{**row, "path": name} for row, name in zip(kept + noise, names)])
    speech_seconds = seconds[:len(kept)]
    recorded = sum(s for s, row in zip(speech_seconds, kept) if is_recorded(row))
    copied = copy_valid(args.valid, out / "valid", args.valid_count) if args.valid else 0
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    noise_note = f", {len(noise)} noise files ({sum(seconds[len(kept):]) / 3600:.2f} h)"
    print(f"{len(kept)} utterances of {len({r['speaker'] for r in kept})} speakers, "
          f"{sum(speech_seconds) / 3600:.2f} h ({recorded / 3600:.2f} h recorded)"
          f"{noise_note if noise else ''}, {copied} validation files, "
          f"{size / 2**20:.1f} MiB -> {args.out}")


if __name__ == "__main__":
    raise SystemExit(main())
