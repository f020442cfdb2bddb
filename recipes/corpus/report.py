"""Manifest, summary and sources text of the corpus."""

from __future__ import annotations

import csv
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

from .audio import SPLITS

MANIFEST_FIELDS = (
    "path",
    "kind",
    "split",
    "speaker",
    "group",
    "source",
    "language",
    "duration",
    "recorded",
    "text",
)


def read_csv(path: Path) -> list[dict]:
    """The rows of a CSV file (a manifest, a metadata table) as dicts of strings."""
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def is_recorded(row: dict) -> bool:
    """Whether a manifest row is a recording (its ``recorded`` column says yes)."""
    return row.get("recorded", "").strip().lower() == "yes"


def write_csv(path: Path, rows: list[dict], fields: Sequence[str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(fields or (rows[0].keys() if rows else []))
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)



def handle_stale_files(root: Path, listed: set[str], prune: bool) -> None:
    """Audio under speech/ and noise/ that this run does not list: deleted with --prune,
    else reported (folder-based datasets would read them)."""
    stale = [
        p
        for folder in ("speech", "noise")
        for p in sorted((root / folder).rglob("*.wav"))
        if str(p.relative_to(root)) not in listed
    ]
    if not stale:
        return
    if prune:
        for p in stale:
            p.unlink()
        print(f"  removed {len(stale)} stale files not in this run's plan")
    else:
        print(
            f"  ! {len(stale)} files under speech/ or noise/ are not in manifest.csv "
            f"(e.g. {stale[0].relative_to(root)}); --prune removes them"
        )


def _hours(rows: list[dict]) -> float:
    return sum(float(r["duration"]) for r in rows) / 3600


def recorded_voice_share(speech: list[dict]) -> dict:
    """Speakers, hours and shares (% of hours, % of speakers) of recorded human voices."""
    real = [r for r in speech if r["recorded"] == "yes"]
    speakers = {r["speaker"] for r in speech}
    real_speakers = {r["speaker"] for r in real}
    hours, real_hours = _hours(speech), _hours(real)
    n_speakers = max(1, len(speakers))
    return {
        "speakers": len(real_speakers),
        "utterances": len(real),
        "hours": round(real_hours, 3),
        "percent_of_hours": round(100 * real_hours / hours, 1) if hours else 0.0,
        "percent_of_speakers": round(100 * len(real_speakers) / n_speakers, 1),
    }


def summarize(rows: list[dict], eval_counts: dict, failures: Counter, args) -> dict:
    """Per split: speakers, groups, utterances, hours by source, recorded-voice share, noise."""
    out: dict = {
        "seed": args.seed,
        "small": args.small,
        "splits": {},
        "eval_sets": eval_counts,
        "failures": dict(failures),
    }
    for split in SPLITS:
        speech = [r for r in rows if r["kind"] == "speech" and r["split"] == split]
        noise = [r for r in rows if r["kind"] == "noise" and r["split"] == split]
        by_source: dict = defaultdict(lambda: {"speakers": set(), "utterances": 0, "hours": 0.0})
        for r in speech:
            entry = by_source[r["source"]]
            entry["speakers"].add(r["speaker"])
            entry["utterances"] += 1
            entry["hours"] += float(r["duration"]) / 3600
        noise_by_source: Counter = Counter()
        for r in noise:
            noise_by_source[r["source"]] += float(r["duration"]) / 60
        out["splits"][split] = {
            "speakers": len({r["speaker"] for r in speech}),
            "groups": len({r["group"] for r in speech}),
            "utterances": len(speech),
            "hours": round(_hours(speech), 3),
            "recorded_voice": recorded_voice_share(speech),
            "by_source": {
                k: {
                    "speakers": len(v["speakers"]),
                    "utterances": v["utterances"],
                    "hours": round(v["hours"], 3),
                }
                for k, v in sorted(by_source.items())
            },
            "noise_files": len(noise),
            "noise_minutes": round(sum(float(r["duration"]) for r in noise) / 60, 2),
            "recorded_noise_minutes": round(
                sum(float(r["duration"]) for r in noise if r["recorded"] == "yes") / 60, 2
            ),
            "noise_minutes_by_source": {k: round(v, 2) for k, v in sorted(noise_by_source.items())},
        }
    return out


def summary_lines(summary: dict) -> list[str]:
    """The summary as a short table (speakers, hours, recorded-voice share per split)."""
    lines = [
        f"{'split':<6} {'speakers':>8} {'groups':>6} {'utts':>7} {'hours':>7} {'noise':>6}"
        f" {'noise min':>9}  recorded voices"
    ]
    for split, s in summary["splits"].items():
        real = s["recorded_voice"]
        lines.append(
            f"{split:<6} {s['speakers']:>8} {s['groups']:>6} {s['utterances']:>7}"
            f" {s['hours']:>7.2f} {s['noise_files']:>6} {s['noise_minutes']:>9.1f}  {real['speakers']} spk,"
            f" {real['hours']:.2f} h ({real['percent_of_hours']:.0f} % of hours,"
            f" {real['percent_of_speakers']:.0f} % of speakers)"
        )
        for source, b in s["by_source"].items():
            lines.append(
                f"  {source:<12} {b['speakers']:>5} spk {b['utterances']:>6} utts"
                f" {b['hours']:>6.2f} h"
            )
    lines += [f"{name}: {n} items" for name, n in summary["eval_sets"].items()]
    if summary["failures"]:
        lines.append("failures:")
        lines += [f"  {n} x {msg}" for msg, n in summary["failures"].items()]
    return lines


SOURCES_TEXT = """\
# Sources of this corpus

Built by diffsep's recipes/make_corpus.py from Debian packages (bookworm). The corpus is for
training and evaluating models; the licences below apply to the source recordings/voices.
Manifest column `recorded`: `yes` for recorded human voices and recorded noise, `no` for TTS,
synthetic noise and babble.

| source | package(s) | licence |
| --- | --- | --- |
| espeak-ng voices | espeak-ng, espeak-ng-data | GPL-3+ |
| flite voices (kal16, awb, rms, slt) | flite | BSD-style (CMU Flite licence), some files GPL-2 |
| festival + voices | festival, festlex-cmu, festvox-kallpc16k, festvox-kdlpc16k, festvox-us-slt-hts, festvox-italp16k, festvox-itapc16k, festvox-suopuhe-lj, festvox-suopuhe-mv, festvox-czech-{dita,krb,machac,ph}, festvox-ru, festvox-ca-ona-hts | kal, ked, slt, ona: BSD/MIT-style (CMU, Festvox); Italian: GPL-2+; Finnish: LGPL-2+; Czech: GPL-3+; Russian: BSD-like and GPL-3 |
| recorded voice acting (Flight of the Amazon Queen) | flight-of-the-amazon-queen | Flight of the Amazon Queen licence (free redistribution; (C) John Passfield and Steven Stamatiadis) |
| recorded words | ktuberling-data | GPL-2+ |
| recorded letters and syllables | klettres-data | GPL-2+ (some files LGPL-2 / CC0-1.0) |
| recorded stamp descriptions (train split only) | tuxpaint-stamps-default | GPL-2 |
| recorded IVR prompts (Allison Smith, June Wallack, Carlo, IvrvoiceRU) | asterisk-core-sounds-{en,es,fr,it,ru}-g722 | CC-BY-SA-3.0 |
| recorded IVR prompts (Paola Dal Zot / Marco Menardi, it) | asterisk-prompt-it-menardi-wav | CC-BY-SA-3.0 (Italian) |
| recorded IVR prompts (Armelle Desjardins, fr) | asterisk-prompt-fr-armelle | GPL-2+ |
| recorded IVR prompts (Colombian Spanish, Avatar Ltda.) | asterisk-prompt-es-co | GPL-2 |
| sound effects used as noise | gcompris-qt-data | GPL-3+, some files CC-BY / CC-BY-SA / public domain (see /usr/share/doc/gcompris-qt-data/copyright) |
| ambiences, water sounds and menu music used as noise | megaglest-data | CC-BY-SA-3.0 / GPL-2+ |
| music on hold used as noise | asterisk-moh-opsound-wav | CC-BY-SA-3.0 |
| keyboard key samples (typing noise) | bucklespring-data | GPL-2+ |
| game music, ambiences and sound effects used as noise (train split only) | widelands-data | GPL-2+; three music tracks CC-BY-SA-3.0 |
| game music and sound effects used as noise (train split only; vocal sounds left out) | hedgewars-data | GPL-2; sounds GFDL-1.3, some CC-BY-SA-3.0 |
| game music and sound effects used as noise (train split only) | extremetuxracer-data | GPL-2+ |
| text | gettext catalogues of installed packages, /usr/share/common-licenses, w* word lists | per package |

Synthetic noise (colored, hum, machine, bursts, clicks) and babble are generated by the recipe.
"""
