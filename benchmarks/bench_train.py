"""Training speed and peak memory: seconds per optimiser step against batch size and precision.

Each configuration runs in a fresh subprocess (so peak RSS and CUDA peak memory are its own).
It builds the network of a training config (a recipe by default), feeds it synthetic batches
of the config's crop length (data loading excluded) and times the same optimiser step that
`diffsep train` runs: loss with the t = T branch, backward, clipping, Adam, EMA.

    python benchmarks/bench_train.py                                  # sep recipe, CPU
    python benchmarks/bench_train.py --config recipes/train-enh-16k.toml --batch-sizes 1,4
    python benchmarks/bench_train.py --device cuda --batch-sizes 8,16,32 --precisions bf16,fp32
    python benchmarks/bench_train.py --set model.backbone.nf=64 --set optim.segment_seconds=4
    python benchmarks/bench_train.py --data 200      # + items/s of the config's dataset
    python benchmarks/bench_train.py --json > results.json
    python benchmarks/bench_train.py --from-log runs/x/train.log --crop-seconds 2   # a real run

audio_s_per_s = seconds of training audio (mixtures) per wall-clock second; divide the
epoch's audio by it to size a run. --data reads and mixes N items of the config's training
set in this process: if that rate is below batch_size / s_per_step, set data.num_workers.
--from-log reads the step times a `diffsep train` log recorded (data loading included, the
run's own device; benchmarks/results/gpu-train/ holds the GPU runs' logs) instead of timing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "recipes" / "train-sep-8k.toml"


def _config(args: argparse.Namespace, extra: list[str]):
    from diffsep.train.config import load_train_config

    return load_train_config(args.config, [*args.set, *extra])


def _one_run(args: argparse.Namespace) -> dict:
    import torch

    from diffsep.model import resolve_device
    from diffsep.train.distributed import Dist
    from diffsep.train.loop import autocast_dtype, new_train_state, train_step

    torch.set_num_threads(args.threads)
    config = _config(args, [f"optim.batch_size={args.batch_size}",
                            f'optim.precision="{args.precision}"'])
    device = resolve_device(args.device)
    state = new_train_state(config, device)  # what diffsep train builds
    network = state.network
    network.backbone_dtype = autocast_dtype(config, device)
    if config.optim.compile:
        network.backbone.compile(dynamic=False)
    ctx = Dist(0, 1, device, active=False)

    samples = int(round(config.optim.segment_seconds * config.model.sample_rate))
    k = config.model.num_sources
    generator = torch.Generator().manual_seed(0)
    sources = 0.1 * torch.randn(config.optim.batch_size, k, samples, generator=generator)
    mix = sources.sum(dim=1, keepdim=True)
    separation = config.model.task == "separation"

    def step(i: int) -> float:
        loss, _, _ = train_step(config, ctx, state, mix, sources, i,
                                permutation_invariant=separation)
        return loss

    for i in range(args.warmup):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for i in range(args.steps):
        loss = step(args.warmup + i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / args.steps
    return {
        "device": str(device),
        "task": config.model.task,
        "params_M": round(sum(p.numel() for p in network.parameters()) / 1e6, 3),
        "crop_s": config.optim.segment_seconds,
        "batch_size": config.optim.batch_size,
        "precision": "fp32" if network.backbone_dtype is None else args.precision,
        "threads": args.threads,
        "s_per_step": round(seconds, 4),
        "audio_s_per_s": round(config.optim.batch_size * config.optim.segment_seconds / seconds,
                               2),
        "last_loss": round(loss, 4),
        "peak_rss_MiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cuda_peak_MiB": (round(torch.cuda.max_memory_allocated() / 2**20, 1)
                          if device.type == "cuda" else None),
    }


def _data_rate(args: argparse.Namespace) -> dict:
    from diffsep.train.batches import build_train_dataset

    config = _config(args, [])
    dataset = build_train_dataset(config)
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(0)
    count = min(args.data, len(dataset))
    started = time.perf_counter()
    for i in range(count):
        dataset[i]
    seconds = time.perf_counter() - started
    return {"data": config.data.train, "kind": config.data.kind, "items": count,
            "crop_s": config.optim.segment_seconds, "items_per_s": round(count / seconds, 1)}


HEADER = re.compile(r"(\d+) items/epoch, (\d+) batches/epoch x (\d+) process\(es\), device (\S+),")
STEP = re.compile(r" step (\d+)/\d+ .* ([\d.]+) s/step$")


def log_throughput(lines: list[str], crop_seconds: float) -> dict:
    """Step times of one `diffsep train` log: batch size from its header, median s/step."""
    batch_size = device = None
    times = []
    for line in lines:
        if header := HEADER.search(line):
            items, batches, processes, device = header.groups()
            batch_size = round(int(items) / int(batches) / int(processes))
        elif step := STEP.search(line.rstrip()):
            times.append(float(step.group(2)))
    if batch_size is None or not times:
        raise ValueError("no run header or no step times")
    median = round(statistics.median(times), 3)
    return {"device": device, "batch_size": batch_size, "crop_s": crop_seconds,
            "logged": len(times), "s_per_step": median, "s_per_step_min": min(times),
            "s_per_step_max": max(times),
            "audio_s_per_s": round(batch_size * crop_seconds / median, 1)}


def _from_logs(args: argparse.Namespace) -> None:
    crop_seconds = args.crop_seconds or _config(args, []).optim.segment_seconds
    rows = []
    for path in args.from_log:
        try:
            rows.append({"log": path, **log_throughput(
                Path(path).read_text(encoding="utf-8").splitlines(), crop_seconds)})
        except (OSError, ValueError) as error:
            sys.exit(f"bench_train: {path}: {error}")
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        print(f"{row['log']}: {row['device']}, batch {row['batch_size']} x {row['crop_s']} s, "
              f"{row['s_per_step']} s/step (median of {row['logged']}, "
              f"{row['s_per_step_min']}-{row['s_per_step_max']}), "
              f"{row['audio_s_per_s']} audio s/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG),
                        help="training config (default: recipes/train-sep-8k.toml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, as with diffsep train (repeatable)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", default="1,4", help="comma-separated batch sizes")
    parser.add_argument("--precisions", default="bf16",
                        help="comma-separated: bf16, fp16, fp32 (fp16 is CUDA only: fp32 on a CPU)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--data", type=int, default=0, metavar="N",
                        help="also time N items of the config's training dataset")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    parser.add_argument("--from-log", nargs="+", metavar="LOG",
                        help="summarise the step times of diffsep train logs instead of timing")
    parser.add_argument("--crop-seconds", type=float,
                        help="crop length of the logged runs (default: the config's)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        print(json.dumps(_one_run(args)))
        return
    if args.from_log:
        _from_logs(args)
        return
    rows = []
    header = ("device", "params_M", "crop_s", "batch_size", "precision", "s_per_step",
              "audio_s_per_s", "peak_rss_MiB", "cuda_peak_MiB")
    if not args.json:
        print(" ".join(f"{h:>13}" for h in header), flush=True)
    precisions = args.precisions.split(",")
    for precision in precisions:
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            command = [sys.executable, __file__, "--one", "--config", args.config,
                       "--device", args.device, "--batch-size", str(batch),
                       "--precision", precision, "--steps", str(args.steps),
                       "--warmup", str(args.warmup), "--threads", str(args.threads)]
            for override in args.set:
                command += ["--set", override]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
                print(f"batch {batch}, {precision}: {last}", file=sys.stderr)
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            if not args.json:
                print(" ".join(f"{str(row[h]):>13}" for h in header), flush=True)
    data_row = _data_rate(args) if args.data else None
    if args.json:
        print(json.dumps({"steps": rows, "data": data_row}, indent=2))
    elif data_row is not None:
        print(f"data: {data_row['items_per_s']} items/s of {data_row['crop_s']} s "
              f"({data_row['kind']}, {data_row['data']}, one process)")


if __name__ == "__main__":
    main()
