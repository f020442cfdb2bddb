#!/usr/bin/env python3
"""Validate a training run's newest checkpoint (EMA weights) through the sampler.

    python recipes/validate_run.py runs/cmp-A runs/cmp-B --mixtures 16 --steps 30

Uses the run's own validation items (``data.valid``, centre crops of ``valid.seconds``) and
prints, per run, the step, the training CPU-minutes and the SI-SDR(i) of the sampler
(predictor-corrector, ``--steps`` steps, one corrector step) and of the network's one-call
estimate at t = T, as JSON lines.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    import torch

    from diffsep.train.batches import build_valid_dataset
    from diffsep.train.checkpoints import METRICS_NAME, latest_checkpoint, read_checkpoint
    from diffsep.train.validation import validate, validation_items

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--mixtures", type=int, default=16)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for run in args.runs:
        checkpoint = latest_checkpoint(run)
        if checkpoint is None:
            raise SystemExit(f"{run}: no checkpoint")
        config, state = read_checkpoint(checkpoint)
        config = replace(config, valid=replace(config.valid, sampler=True,
                                               sampler_steps=args.steps, corrector_steps=1,
                                               num_mixtures=args.mixtures))
        items = validation_items(build_valid_dataset(config), args.mixtures)
        if items is None:
            raise SystemExit(f"{run}: no validation data")
        scores = validate(config, state["ema"], *items, torch.device("cpu"))
        cpu = None
        for line in (run / METRICS_NAME).read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if int(record.get("step", -1)) <= int(state["step"]) and "train_cpu_s" in record:
                cpu = record["train_cpu_s"] / 60.0
        print(json.dumps({"run": str(run), "step": int(state["step"]),
                          "train_cpu_min": None if cpu is None else round(cpu, 1),
                          **{k: round(v, 3) for k, v in scores.items()}}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
