#!/usr/bin/env bash
# One prepared command for a CUDA machine (run from anywhere; needs the package installed with
# a CUDA build of torch, e.g. `pip install -e ".[test,eval]"`):
#   1. CUDA against the CPU: the reference fixtures' full sampler runs on CUDA, and a separation
#      in fp32 / bf16 / fp16 (tests/test_fast_inference.py, the tests skipped without a GPU);
#   2. throughput of the authors' full-size network shape (65.6 M parameters, random weights,
#      4 s windows): batch 1 / 8 / 32 x fp32 / bf16 x torch.compile off / on, as JSON lines.
# Output: pytest's summary, then one JSON row per combination on stderr and the table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}

"$PYTHON" - <<'PY'
import torch
assert torch.cuda.is_available(), "gpu_check.sh: no CUDA device visible to torch"
print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, "
      f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}")
PY

"$PYTHON" -m pytest -q -p no:cacheprovider tests/test_fast_inference.py -k cuda -rs

"$PYTHON" benchmarks/bench_network.py --full-size --device cuda --batch-sizes 1,8,32 \
    --precisions fp32,bf16 --compile off,on --warmup 2 --calls 5 --json
