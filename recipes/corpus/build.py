"""The corpus build: packages, speakers and split, speech, noise, manifest, evaluation sets."""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .audio import SPLITS, rng_for
from .errors import CorpusError
from .espeak import ESPEAK_LANGUAGES, plan_espeak
from .festival import FESTIVAL_VOICES, plan_tts
from .mixtures import make_enhancement_set, make_separation_set
from .noise import plan_noise, render_noise
from .queen import QUEEN_FILE, QueenLine, plan_queen
from .recorded import plan_recorded, plan_tuxpaint
from .report import (
    MANIFEST_FIELDS,
    SOURCES_TEXT,
    handle_stale_files,
    summarize,
    summary_lines,
    write_csv,
)
from .speech import Speaker, SpeechJob, render_speech
from .splits import assign_splits, groups_in_several_splits
from .staging import Stage
from .text import TextBank, build_text_bank, compose_text

# Only the packages below are ever installed or read (the project's held-out test packages,
# listed in recipes/README.md, are not among them and must never be added).
APT_PACKAGES = (
    # TTS engines and voices
    "espeak-ng",
    "flite",
    "festival",
    "festlex-cmu",
    "festvox-kallpc16k",
    "festvox-kdlpc16k",
    "festvox-us-slt-hts",
    "festvox-italp16k",
    "festvox-itapc16k",
    "festvox-suopuhe-lj",
    "festvox-suopuhe-mv",
    "festvox-czech-dita",
    "festvox-czech-krb",
    "festvox-czech-machac",
    "festvox-czech-ph",
    "festvox-ru",
    "festvox-ca-ona-hts",
    # real recorded speech (G.722 and GSM prompts are decoded with ffmpeg)
    "flight-of-the-amazon-queen",
    "ktuberling-data",
    "klettres-data",
    "tuxpaint-stamps-default",  # train split only
    "ffmpeg",
    "asterisk-core-sounds-en-g722",
    "asterisk-core-sounds-es-g722",
    "asterisk-core-sounds-fr-g722",
    "asterisk-core-sounds-it-g722",
    "asterisk-core-sounds-ru-g722",
    "asterisk-prompt-it-menardi-wav",
    "asterisk-prompt-fr-armelle",
    "asterisk-prompt-es-co",
    # real noise
    "gcompris-qt-data",
    "bucklespring-data",
    "megaglest-data",
    "asterisk-moh-opsound-wav",
    "widelands-data",  # train split only (added later, like the two below)
    "hedgewars-data",
    "extremetuxracer-data",
    # text: word lists
    "wamerican",
    "wbritish",
    "wngerman",
    "wfrench",
    "wspanish",
    "witalian",
    "wcatalan",
    "wswedish",
    "wdutch",
    "wportuguese",
    "wdanish",
)


def _installed(package: str) -> bool:
    done = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True,
                          text=True)
    return done.returncode == 0 and done.stdout.endswith("installed")


def apt_install(packages: Iterable[str]) -> None:
    """apt-get update + install; CorpusError naming the packages that did not install."""
    packages = list(packages)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    prefix = [] if os.geteuid() == 0 else ["sudo"]
    steps = (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends",
                                      *packages])
    for step in steps:
        try:
            subprocess.run(prefix + step, check=True, env=env)
        except FileNotFoundError as e:
            raise CorpusError(f"--apt-install: {e.filename} not found (a Debian system with "
                              "apt-get is needed)") from None
        except subprocess.CalledProcessError as e:
            if step[1] == "update":
                raise CorpusError(f"apt-get update failed (exit {e.returncode})") from None
            missing = [p for p in packages if not _installed(p)]
            raise CorpusError(
                f"apt-get install failed (exit {e.returncode}); not installed: "
                f"{', '.join(missing) or 'none missing, see the apt-get output'}"
            ) from None


def run_parallel(fn: Callable, jobs: Sequence, workers: int, label: str) -> list:
    """fn over jobs in a process pool (order kept), with a one-line progress display."""
    results: list = []
    start = time.monotonic()
    if not jobs:
        return results
    tty = sys.stdout.isatty()
    every = 50 if tty else max(1, len(jobs) // 10)
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers) as pool:
        for k, res in enumerate(pool.map(fn, jobs, chunksize=4), 1):
            results.append(res)
            if k % every == 0 or k == len(jobs):
                line = f"  {label}: {k}/{len(jobs)} ({time.monotonic() - start:.0f} s)"
                print("\r" + line if tty else line, end="" if tty else "\n", flush=True)
    if tty:
        print()
    return results


@dataclass(frozen=True)
class SpeechPlan:
    tts: list[Speaker]
    recorded: list[tuple[Speaker, list[list[Path]]]]  # clips of each utterance
    queen: list[tuple[Speaker, list[QueenLine]]]
    split_of: dict[str, str]  # group -> split

    @property
    def speakers(self) -> list[Speaker]:
        return self.tts + [s for s, _ in self.recorded] + [s for s, _ in self.queen]


def plan_speech(args, banks: dict[str, TextBank]) -> SpeechPlan:
    """Every speaker with its utterances, and the split of each group (weighted by utterances
    for recorded voices, one per TTS voice group)."""
    small = args.small
    tts = plan_espeak(args.espeak_speakers, banks, args.seed)
    tts += plan_tts(args.tts_settings, 3 if small else None, args.seed, banks)
    recorded = plan_recorded(args.seed, 4 if small else None, 3 if small else None,
                             shutil.which("ffmpeg") is not None)
    queen = plan_queen(args.seed, 4 if small else None, 4 if small else None, QUEEN_FILE)
    weights: dict[str, tuple[str, float]] = {}
    for spk in tts:
        weights[spk.group] = (spk.family, 1.0)
    for spk, utts in [*recorded, *queen]:
        family, weight = weights.get(spk.group, (spk.family, 0.0))
        weights[spk.group] = (family, weight + len(utts))
    split_of = assign_splits(weights, args.seed, args.valid_frac, args.test_frac)
    # train-only voices, added after the split so that the valid and test splits stay as
    # they were
    held_out = {spk.language.split("_")[0] for spk, _ in recorded
                if spk.family == "kde" and split_of[spk.group] != "train"}
    tuxpaint = plan_tuxpaint(args.seed, 4 if small else None, 3 if small else None, held_out)
    split_of.update({spk.group: "train" for spk, _ in tuxpaint})
    return SpeechPlan(tts, recorded + tuxpaint, queen, split_of)


def speech_jobs(plan: SpeechPlan, dirs: dict[str, Path], args, banks: dict[str, TextBank]):
    """One job per utterance, written to dirs[split]/SPEAKER/NNNN.wav."""
    jobs: list[SpeechJob] = []

    def out(spk: Speaker, i: int) -> str:
        return str(dirs[plan.split_of[spk.group]] / spk.id / f"{i:04d}.wav")

    for spk in plan.tts:
        for i in range(args.utts_per_speaker):
            text = compose_text(banks[spk.language], rng_for(args.seed, "text", spk.id, i),
                                spk.encoding)
            jobs.append(SpeechJob(spk, i, out(spk, i), text=text, seed=args.seed))
    for spk, utts in plan.recorded:
        for i, clips in enumerate(utts):
            jobs.append(SpeechJob(spk, i, out(spk, i), text=" ".join(c.stem for c in clips),
                                  clips=tuple(map(str, clips)), seed=args.seed))
    for spk, lines in plan.queen:
        for i, line in enumerate(lines):
            blob = (str(QUEEN_FILE), line.entry.offset, line.entry.size)
            jobs.append(SpeechJob(spk, i, out(spk, i), text=f"{QUEEN_FILE.name}:{line.entry.name}",
                                  blob=blob, seed=args.seed))
    return jobs


def speech_rows(jobs: list[SpeechJob], results: list, split_of: dict[str, str],
                failures: Counter) -> list[dict]:
    """Manifest rows (final paths) of the rendered utterances; failures counted by message."""
    rows = []
    for job, outputs in zip(jobs, results):
        spk = job.speaker
        for path, duration, error in outputs:
            if error:
                failures[f"{spk.source}: {error[:80]}"] += 1
                continue
            split = split_of[spk.group]
            rows.append({
                "path": f"speech/{split}/{spk.id}/{Path(path).name}",
                "kind": "speech",
                "split": split,
                "speaker": spk.id,
                "group": spk.group,
                "source": spk.source,
                "language": spk.language,
                "duration": round(duration, 3),
                "recorded": "yes" if spk.recorded else "no",
                "text": job.text,
            })
    return rows


def build_noise(root: Path, rows: list[dict], args, failures: Counter, skipped: Counter):
    """Render the noise of every split into staging folders, commit them; manifest rows."""
    stages = {split: Stage(root / "noise" / split) for split in SPLITS}
    dirs = {split: stage.open() for split, stage in stages.items()}
    jobs = plan_noise(dirs, rows, root, args.seed, args.small, args.valid_frac, args.test_frac)
    print(f"noise: {len(jobs)} files to make/check")
    noise_rows = []
    for job, (_, duration, error) in zip(jobs, run_parallel(render_noise, jobs, args.jobs,
                                                               "noise")):
        if error.startswith("skipped:"):
            skipped[f"noise {error.removeprefix('skipped: ')}"] += 1
        elif error:
            failures[f"noise: {error[:80]}"] += 1
        else:
            noise_rows.append({
                "path": f"noise/{job.split}/{job.name}",
                "kind": "noise",
                "split": job.split,
                "speaker": "",
                "group": job.group,
                "source": job.source,
                "language": "",
                "duration": round(duration, 3),
                "recorded": "yes" if job.recorded else "no",
                "text": "",
            })
    for stage in stages.values():
        stage.commit()
    return noise_rows


def build_eval_sets(root: Path, rows: list[dict], args) -> dict[str, int]:
    """sep-8k and enh-16k sets of valid and test: all sources (`valid`, `test`) and recorded
    voices only (`valid-real`, `test-real`; enhancement with recorded noise only)."""
    counts = {}
    for split, count in (("valid", args.eval_valid), ("test", args.eval_test)):
        speech = [r for r in rows if r["kind"] == "speech" and r["split"] == split]
        noise = [r for r in rows if r["kind"] == "noise" and r["split"] == split]
        for name, only_recorded in ((split, False), (f"{split}-real", True)):
            s = [r for r in speech if r["recorded"] == "yes"] if only_recorded else speech
            n = [r for r in noise if r["recorded"] == "yes"] if only_recorded else noise
            counts[f"sep-8k/{name}"] = make_separation_set(root, name, s, count, args.seed)
            counts[f"enh-16k/{name}"] = make_enhancement_set(root, name, s, n, count, args.seed)
    return counts


def build(args) -> dict:
    """Build (or complete) the corpus at args.out; returns the summary."""
    if args.apt_install:
        apt_install(APT_PACKAGES)
    root = args.out.resolve()
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()

    print("text banks ...")
    languages = sorted(set(ESPEAK_LANGUAGES.values()) | {fv.language for fv in FESTIVAL_VOICES})
    banks = {lang: build_text_bank(lang) for lang in languages}
    usable = {k: v for k, v in banks.items() if v}
    print("  " + ", ".join(f"{k}:{len(v.sentences)}s/{len(v.words)}w" for k, v in usable.items()))

    plan = plan_speech(args, usable)
    if not plan.speakers:
        raise CorpusError("no voices found: install the packages (--apt-install)")
    stages = {split: Stage(root / "speech" / split) for split in SPLITS}
    jobs = speech_jobs(plan, {split: stage.open() for split, stage in stages.items()}, args, usable)
    print(f"speech: {len(plan.speakers)} speakers, {len(jobs)} utterances to make/check")
    failures: Counter = Counter()
    rows = speech_rows(jobs, run_parallel(render_speech, jobs, args.jobs, "speech"),
                       plan.split_of, failures)
    shared = groups_in_several_splits(rows)
    if shared:  # a planning bug, never expected: stop before anything is committed
        group, splits = next(iter(shared.items()))
        raise CorpusError(f"speaker group {group} found in several splits: {', '.join(splits)}")
    for stage in stages.values():
        stage.commit()

    skipped: Counter = Counter()
    rows += build_noise(root, rows, args, failures, skipped)
    rows.sort(key=lambda r: (r["kind"], r["split"], r["path"]))
    write_csv(root / "manifest.csv", rows, MANIFEST_FIELDS)
    handle_stale_files(root, {r["path"] for r in rows}, args.prune)

    print("evaluation sets ...")
    eval_counts = build_eval_sets(root, rows, args)

    summary = summarize(rows, eval_counts, failures, args)
    summary["skipped"] = dict(skipped)
    (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (root / "SOURCES.md").write_text(SOURCES_TEXT)
    print("\n".join(summary_lines(summary)))
    print(f"done in {time.monotonic() - t0:.0f} s -> {root}")
    return summary
