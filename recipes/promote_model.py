#!/usr/bin/env python3
"""Replace a bundled model by a newly trained one only when it scores better on validation.

    python recipes/promote_model.py separate runs/sep-8k/export models/sep-8k \\
        data/corpus/sep-8k/valid --count 32 [--apply]

Scores both models with ``recipes/score_model.sh`` (``--seed 0``, each model's own default
sampler and window, whole files) on the first COUNT mixtures of the validation split, compares
the mean SI-SDRi (separation) or the mean SI-SDRi plus PESQ gain (enhancement: both must not
drop), prints both, and with ``--apply`` copies the candidate's ``config.json``,
``model.safetensors`` and ``README.md`` over the bundled folder (into a temporary folder
first, then renamed into place). The test split is never used for this choice.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FILES = ("config.json", "model.safetensors", "README.md")
HERE = Path(__file__).resolve().parent


def score(command: str, model: Path, split: Path, count: int, out: Path,
          extra: list[str]) -> dict[str, float]:
    """Mean scores of ``model`` on the first ``count`` items of ``split``."""
    subprocess.run(["bash", str(HERE / "score_model.sh"), command, str(model), str(split),
                    str(count), str(out), *extra], check=True)
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return {name: value["mean"] for name, value in report["aggregate"].items()
            if value["mean"] is not None}


def better(command: str, candidate: dict[str, float], bundled: dict[str, float]) -> bool:
    """Separation: higher SI-SDRi. Enhancement: higher SI-SDRi and PESQ not lower."""
    gain = candidate["si_sdri"] - bundled["si_sdri"]
    if command == "separate":
        return gain > 0
    pesq = [k for k in candidate if k.startswith("pesq")]
    return gain > 0 and all(candidate[k] >= bundled.get(k, float("-inf")) for k in pesq)


def install(candidate: Path, bundled: Path) -> None:
    """Copy the candidate's model files over ``bundled`` atomically (folder rename)."""
    staging = Path(tempfile.mkdtemp(prefix=f".{bundled.name}-", dir=bundled.parent))
    for name in FILES:
        shutil.copy2(candidate / name, staging / name)
        (staging / name).chmod(0o644)
    staging.chmod(0o755)
    old = bundled.with_name(f".{bundled.name}-old")
    if old.exists():
        shutil.rmtree(old)
    bundled.rename(old)
    staging.rename(bundled)
    shutil.rmtree(old)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("separate", "enhance"))
    parser.add_argument("candidate", type=Path, help="exported model folder")
    parser.add_argument("bundled", type=Path, help="bundled model folder (models/NAME)")
    parser.add_argument("valid", type=Path, help="validation split folder")
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--work", type=Path, help="where scores go (default: a temp folder)")
    parser.add_argument("--apply", action="store_true", help="replace the bundled model if better")
    parser.epilog = "Options after -- go to separate/enhance (e.g. -- --threads 1)."
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    args.extra = argv[cut + 1:]
    for folder in (args.candidate, args.bundled):
        missing = [name for name in FILES if not (folder / name).is_file()]
        if missing:
            print(f"promote_model: {folder}: missing {', '.join(missing)}", file=sys.stderr)
            return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="promote-"))
    results = {}
    for label, folder in (("candidate", args.candidate), ("bundled", args.bundled)):
        results[label] = score(args.command, folder, args.valid, args.count, work / label,
                               args.extra)
    for label, values in results.items():
        shown = ", ".join(f"{k} {v:.3f}" for k, v in sorted(values.items()))
        print(f"{label}: {shown}")
    wins = better(args.command, results["candidate"], results["bundled"])
    print("candidate is better" if wins else "bundled model stays")
    if wins and args.apply:
        install(args.candidate, args.bundled)
        print(f"installed {args.candidate} into {args.bundled}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
