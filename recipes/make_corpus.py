#!/usr/bin/env python3
"""Build a speaker-disjoint speech + noise corpus for diffsep from Debian packages.

Sources: TTS voices (espeak-ng, flite, festival + festvox voices) speaking generated text,
recorded human speech (Flight of the Amazon Queen voice acting, ktuberling words, KLettres
letters and syllables, Asterisk IVR prompts), recorded noise (gcompris-qt sound effects,
MegaGlest ambiences, music on hold, bucklespring keyboard samples) and synthetic noise.
Everything is written as 16 kHz mono PCM16 WAV, silence-trimmed and level-normalised,
split speaker-disjoint into train / valid / test, listed in ``manifest.csv``, and turned
into fixed evaluation sets ``sep-8k/{valid,test}[-real]/{mix,s1,s2}`` and
``enh-16k/{valid,test}[-real]/{noisy,clean}`` (``-real``: recorded voices only).

    python recipes/make_corpus.py --out data/corpus --apt-install      # full corpus
    python recipes/make_corpus.py --out /tmp/corpus --small            # smoke test, < 1 min

Deterministic given ``--seed``; re-running skips files that already exist.
See recipes/README.md for the layout and the licences of the sources; the code lives in
recipes/corpus/ (one module per kind of source).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus.build import APT_PACKAGES, build  # noqa: E402
from corpus.errors import CorpusError  # noqa: E402

__all__ = ["APT_PACKAGES", "main", "parse_args"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--out", type=Path, required=True, help="corpus folder to create or complete")
    p.add_argument("--seed", type=int, default=20230411)
    p.add_argument("--small", action="store_true", help="tiny corpus for smoke tests (~2 min)")
    p.add_argument(
        "--apt-install",
        action="store_true",
        help="apt-get update + install the Debian packages used (needs root or sudo)",
    )
    p.add_argument("--jobs", type=int, default=2, help="parallel worker processes")
    p.add_argument("--espeak-speakers", type=int, default=None, help="default 100 (small: 12)")
    p.add_argument("--utts-per-speaker", type=int, default=None, help="TTS; default 32 (small: 3)")
    p.add_argument(
        "--tts-settings",
        type=int,
        default=None,
        help="speed/tempo settings per flite/festival voice; default 3 (small: 1)",
    )
    p.add_argument("--eval-valid", type=int, default=None, help="default 100 (small: 6)")
    p.add_argument("--eval-test", type=int, default=None, help="default 300 (small: 6)")
    p.add_argument(
        "--prune",
        action="store_true",
        help="delete audio under speech/ and noise/ that this run does not list",
    )
    p.add_argument("--valid-frac", type=float, default=0.1)
    p.add_argument("--test-frac", type=float, default=0.1)
    args = p.parse_args(argv)
    small = args.small
    defaults = {
        "espeak_speakers": (100, 12),
        "utts_per_speaker": (32, 3),
        "tts_settings": (3, 1),
        "eval_valid": (100, 6),
        "eval_test": (300, 6),
    }
    for key, (full, tiny) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, tiny if small else full)
    return args



def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        os.nice(10)
    except OSError:
        pass
    try:
        build(args)
    except CorpusError as e:
        print(f"make_corpus: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
