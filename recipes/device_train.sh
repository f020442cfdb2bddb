#!/usr/bin/env bash
# One training call on a lent GPU machine (the `device` tool): RECIPE trained from INIT on a
# pack (recipes/pack_corpus.py) for two stretches of wall-clock time, each stopped by SIGINT
# (which writes a checkpoint), the second resumed at a lower learning rate; both stops are
# exported (fp16) and the exports and logs written under $OUT, the folder the tool brings back.
#
#   OUT=out bash recipes/device_train.sh recipes/train-enh-16k-gpu.toml models/enh-16k \
#       pack/enh-16k [--set KEY=VALUE ...]
#
# INIT is a model folder or run to start from ("-": the recipe's own init_from, or none). The
# pack's manifest is the training data (and the noise, when it lists noise); its valid/ folder
# the crop validation. Environment (defaults): SECONDS_A (330) and SECONDS_B (150) of training
# at LR_A (2e-4) and LR_B (6e-5), BATCH (128), WORKERS (14 loader processes), DEVICE (cuda),
# RUN (/tmp/device-run, the run folder's parent), WHEELS (.whl: wheels installed with pip
# --no-index into RUN/site when soundfile or soxr is missing; the device image lacks them).
# The recipe's step limit and lr_drops are lifted: time decides. A run folder that an earlier
# call left on the same (still warm) machine is resumed, not restarted. OUT gets
# exports.tar.aa, ... (15 MiB parts: the tool brings back files up to 16 MiB; `cat
# exports.tar.* | tar x`) and logs.tgz. The whole call takes about SECONDS_A + SECONDS_B + 60 s.
set -euo pipefail
if [ $# -lt 3 ] || [ -z "${OUT:-}" ]; then
  sed -n 2,19p "$0" >&2
  exit 2
fi
recipe=$1; init=$2; pack=$(cd "$3" && pwd); shift 3
run=${RUN:-/tmp/device-run}; mkdir -p "$run" "$OUT"
export PYTHONPATH="$run/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ! python3 -c "import soundfile, soxr" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$run/site" \
    "${WHEELS:-.whl}"/*.whl
fi
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
fi
settings=(--set "output.dir=$run/run" --set "optim.batch_size=${BATCH:-128}"
          --set "data.num_workers=${WORKERS:-14}" --set "data.train=$pack/manifest.csv"
          --set "data.valid=$pack/valid" --set optim.steps=100000000 --set "optim.lr_drops=[]"
          --set optim.cpu_minutes=0 --set output.checkpoint_minutes=1000
          --set valid.whole_files=0 --set valid.whole_every=0)
if grep -q ',noise,' "$pack/manifest.csv"; then
  settings+=(--set "data.noise=$pack/manifest.csv")
fi
if [ "$init" != - ]; then
  settings+=(--init-from "$init")
fi

stretch() {  # NAME SECONDS LR [KEY=VALUE overrides...]: train until SIGINT at SECONDS, export
  local name=$1 seconds=$2 lr=$3 status=0
  timeout --foreground -s INT "$seconds" python3 -m diffsep train "$recipe" \
    --device "${DEVICE:-cuda}" "${settings[@]}" --set "optim.lr=$lr" "${@:4}" -q \
    > "$run/$name.out" 2>&1 || status=$?
  echo "== stretch $name (lr $lr, ${seconds} s): exit $status"
  tail -n 4 "$run/run/train.log" 2>/dev/null || true
  if [ "$status" != 0 ] && [ "$status" != 124 ]; then
    tail -n 20 "$run/$name.out" >&2
    return 1
  fi
  python3 -m diffsep export "$run/run" "$run/export-$name" --fp16 --overwrite 2>&1 | tail -n 1
}

stretch a "${SECONDS_A:-330}" "${LR_A:-2e-4}" "$@"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
fi
stretch b "${SECONDS_B:-150}" "${LR_B:-6e-5}" "$@"
(cd "$run" && tar cf - export-a export-b | split -b 15M - "$OUT/exports.tar.")
(cd "$run" && tar czf "$OUT/logs.tgz" run/train.log a.out b.out)
ls -l "$OUT"
