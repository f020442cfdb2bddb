"""Real-time factor and peak memory of `separate` against file length and batch size.

Each configuration runs in a fresh subprocess (so peak RSS and CUDA peak memory are its own):
it writes a synthetic mixture of the given length to a temporary WAV file, runs the file
pipeline (streaming read, windows, batched sampling, overlap-add, streaming write) and prints
one row. Processing memory should stay flat as files grow.

    python benchmarks/bench_separate.py                              # bundled model, CPU
    python benchmarks/bench_separate.py --model DIR --lengths 60,600,3600 --steps 1
    python benchmarks/bench_separate.py --device cuda --batch-sizes 1,4,16,32
    python benchmarks/bench_separate.py --json > results.json

RTF = processing seconds / audio seconds (lower is faster; < 1 is faster than real time).
Model loading is excluded from the RTF and reported separately.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _one_run(args: argparse.Namespace) -> dict:
    import numpy as np
    import soundfile as sf
    import torch

    from diffsep.files import separate_files
    from diffsep.inputs import InputFile
    from diffsep.loading import load_model
    from diffsep.settings import output_settings, run_settings

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model = load_model(args.model, args.task, args.device)
    load_seconds = time.perf_counter() - started
    rate = model.sample_rate
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mix.wav"
        rng = np.random.default_rng(0)
        with sf.SoundFile(path, "w", rate, 1, subtype="PCM_16") as handle:
            remaining = int(args.length * rate)
            while remaining:  # written in blocks, so the benchmark itself stays small
                n = min(remaining, 60 * rate)
                t = np.arange(n) / rate
                block = 0.1 * np.sin(2 * np.pi * 180 * t) + 0.05 * rng.standard_normal(n)
                handle.write(block.astype(np.float32))
                remaining -= n
        settings = run_settings(model, steps=args.steps, segment=args.segment, seed=0,
                                batch_size=args.batch_size)
        if model.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            torch.cuda.synchronize()
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        started = time.perf_counter()
        summary = separate_files(model, [InputFile(path)], Path(tmp) / "out", settings,
                                 output_settings())
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        (result,) = summary.files
        if result.status != "ok":
            raise SystemExit(f"run failed: {result.error}")
    return {
        "device": str(model.device),
        "task": args.task,
        "model": model.source,
        "params_M": round(sum(p.numel() for p in model.network.parameters()) / 1e6, 3),
        "length_s": args.length,
        "batch_size": args.batch_size,
        "steps": settings.sampler.steps,
        "threads": args.threads,
        "windows": result.windows,
        "seconds": round(seconds, 2),
        "rtf": round(seconds / args.length, 4),
        "load_seconds": round(load_seconds, 2),
        "peak_rss_MiB_before_run": round(rss_before, 1),
        "peak_rss_MiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cuda_peak_MiB": (
            round(torch.cuda.max_memory_allocated() / 2**20, 1)
            if model.device.type == "cuda" else None
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model spec (default: bundled)")
    parser.add_argument("--task", default="separation", choices=["separation", "enhancement"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lengths", default="10,30,120", help="file lengths in seconds")
    parser.add_argument("--batch-sizes", default="1,4", help="comma-separated batch sizes")
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (model default)")
    parser.add_argument("--segment", type=float, default=None,
                        help="window in seconds (default: the model's own window)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--length", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        print(json.dumps(_one_run(args)))
        return
    rows = []
    header = ("device", "length_s", "batch_size", "steps", "windows", "seconds", "rtf",
              "peak_rss_MiB", "cuda_peak_MiB")
    if not args.json:
        print(" ".join(f"{h:>13}" for h in header), flush=True)
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        for length in (float(x) for x in args.lengths.split(",")):
            command = [sys.executable, __file__, "--one", "--length", str(length),
                       "--batch-size", str(batch), "--task", args.task, "--device", args.device,
                       "--threads", str(args.threads)]
            if args.segment:
                command += ["--segment", str(args.segment)]
            if args.model:
                command += ["--model", args.model]
            if args.steps:
                command += ["--steps", str(args.steps)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                print(done.stderr.strip().splitlines()[-1] if done.stderr else "failed",
                      file=sys.stderr)
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            if not args.json:
                print(" ".join(f"{str(row[h]):>13}" for h in header), flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
