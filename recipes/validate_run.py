#!/usr/bin/env python3
"""Validate training checkpoints (EMA weights): through the sampler on crops, or on whole files.

    python recipes/validate_run.py runs/cmp-A runs/cmp-B --mixtures 16 --steps 30
    python recipes/validate_run.py runs/sep-8k-refine/checkpoints/step-* --whole 100

Each argument is a run folder (its newest checkpoint) or a checkpoint folder. By default uses
the run's own validation items (``data.valid``, centre crops of ``valid.seconds``) and prints
the SI-SDR(i) of the sampler (predictor-corrector, ``--steps`` steps, one corrector step) and
of the network's one-call estimate at t = T. With ``--whole N`` it separates the first N files
of the validation folder whole, as the exported model would (its window, its default sampler,
``--seed``): ``si_sdr_whole``/``si_sdri_whole``, the numbers ``promote_model.py`` compares, so
a run's checkpoints can be ranked before one is exported. ``--valid`` replaces ``data.valid``.
One JSON line per checkpoint, with the step and the training CPU-minutes.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    import torch

    from diffsep.train.batches import build_valid_dataset
    from diffsep.train.checkpoints import METRICS_NAME, read_checkpoint, resolve_checkpoint
    from diffsep.train.validation import (
        validate,
        validate_whole_files,
        validation_items,
        whole_file_items,
    )

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path, help="run or checkpoint folders")
    parser.add_argument("--mixtures", type=int, default=16, help="crops (without --whole)")
    parser.add_argument("--steps", type=int, default=30, help="sampler steps (without --whole)")
    parser.add_argument("--whole", type=int, default=0, metavar="N",
                        help="score the first N whole files instead of crops")
    parser.add_argument("--valid", type=Path, help="validation folder instead of data.valid")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for given in args.checkpoints:
        checkpoint = resolve_checkpoint(given)
        config, state = read_checkpoint(checkpoint)
        data = config.data if args.valid is None else replace(config.data, valid=str(args.valid))
        valid = replace(config.valid, sampler=True, sampler_steps=args.steps, corrector_steps=1,
                        num_mixtures=args.mixtures, whole_files=args.whole, seed=args.seed)
        config = replace(config, data=data, valid=valid)
        if args.whole:
            items = whole_file_items(build_valid_dataset(config, whole=True), args.whole)
            if not items:
                raise SystemExit(f"{checkpoint}: no validation data")
            scores = validate_whole_files(config, state["ema"], items, torch.device("cpu"))
        else:
            crops = validation_items(build_valid_dataset(config), args.mixtures)
            if crops is None:
                raise SystemExit(f"{checkpoint}: no validation data")
            scores = validate(config, state["ema"], *crops, torch.device("cpu"))
        print(json.dumps({"checkpoint": str(checkpoint), "step": int(state["step"]),
                          "train_cpu_min": _cpu_minutes(checkpoint.parent.parent / METRICS_NAME,
                                                        int(state["step"])),
                          **{k: round(v, 3) for k, v in scores.items()}}), flush=True)
    return 0


def _cpu_minutes(metrics: Path, step: int) -> float | None:
    """Training CPU-minutes logged at or before ``step`` (None without a metrics log)."""
    if not metrics.is_file():
        return None
    cpu = None
    for line in metrics.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if int(record.get("step", -1)) <= step and "train_cpu_s" in record:
            cpu = round(record["train_cpu_s"] / 60.0, 1)
    return cpu


if __name__ == "__main__":
    raise SystemExit(main())
