"""Network calls per second by batch size, precision and torch.compile.

Times the score network alone (one call = one NFE of every sampler) on random inputs of one
inference window, after warm-up calls (which include the compilation when ``--compile on``;
its time is reported apart). ``audio_s_per_s`` = batch x window seconds / seconds per call: the
throughput of a 1-NFE sampler; divide by a sampler's NFE for its throughput.

    python benchmarks/bench_network.py                                   # bundled sep model, CPU
    python benchmarks/bench_network.py --full-size --device cuda --batch-sizes 1,8,32 \\
        --precisions fp32,bf16 --compile off,on                          # authors' network shape
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def measure(args: argparse.Namespace, batch: int, precision: str, compiled: bool) -> dict:
    import torch

    from diffsep.config import ModelConfig
    from diffsep.loading import load_model
    from diffsep.model import PRECISIONS, build_model, check_precision, compile_network

    device = torch.device(args.device)
    if args.full_size:  # the authors' 65.6 M-parameter network, random weights
        from diffsep.nn.score_model import ScoreModel

        config = ModelConfig()
        model = build_model(config, ScoreModel(config).state_dict(), device, "full-size")
    else:
        model = load_model(args.model, args.task, str(device))
    if precision not in PRECISIONS:
        check_precision(precision, device)  # the user-facing error
    # measured even where `separate` refuses it (bf16 on a CPU without bf16 kernels)
    model.network.backbone_dtype = PRECISIONS[precision]
    if compiled:
        compile_network(model)
    seconds = args.seconds or (4.0 if args.full_size else 2.0)
    n = int(seconds * model.sample_rate)
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, model.num_sources, n, generator=gen, device=device)
    mix = x.sum(dim=1, keepdim=True)
    t = torch.full((batch,), 0.5, device=device)

    def call() -> None:
        with torch.inference_mode():
            model.network(x, t, mix)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    started = time.perf_counter()
    for _ in range(args.warmup):
        call()
    warmup = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(args.calls):
        call()
    per_call = (time.perf_counter() - started) / args.calls
    return {
        "device": str(device), "model": model.source, "batch": batch, "precision": precision,
        "compile": compiled, "window_s": round(n / model.sample_rate, 3),
        "warmup_s": round(warmup, 2), "s_per_call": round(per_call, 4),
        "audio_s_per_s": round(batch * n / model.sample_rate / per_call, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--task", default="separation")
    parser.add_argument("--full-size", action="store_true",
                        help="the authors' network shape (random weights) instead of --model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", default="1")
    parser.add_argument("--precisions", default="fp32")
    parser.add_argument("--compile", default="off", help="off, on or off,on")
    parser.add_argument("--seconds", type=float, default=None, help="window length")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for compiled in [value == "on" for value in args.compile.split(",")]:
        for precision in args.precisions.split(","):
            for batch in [int(b) for b in args.batch_sizes.split(",")]:
                try:
                    row = measure(args, batch, precision, compiled)
                except Exception as err:  # noqa: BLE001 - a failing combination is a result too
                    row = {"batch": batch, "precision": precision, "compile": compiled,
                           "error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
