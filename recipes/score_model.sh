#!/usr/bin/env bash
# Score a model on the first N items of a recipe test split, as the bundled model cards do.
#
#   bash recipes/score_model.sh separate diffsep-sep-8k data/corpus/sep-8k/test 300 runs/score-sep
#   bash recipes/score_model.sh enhance diffsep-enh-16k data/corpus/enh-16k/test 60 runs/score-enh
#
# Runs `diffsep separate|enhance --seed 0` (the model's default sampler: 30 steps, snr 0.5,
# one corrector step) on the first N mixtures in name order, then `diffsep eval --intersection`
# (PIT for separation). Writes OUT/est/, OUT/report.json, OUT/report.csv and OUT/timing.txt.
# Extra arguments after OUT go to separate/enhance (e.g. --threads 1, --device cuda);
# METRICS=si_sdr,si_sdri,pesq,estoi in the environment limits the metrics (DNSMOS is the slow one).
set -euo pipefail
if [ $# -lt 5 ]; then
  sed -n 2,11p "$0" >&2
  exit 2
fi
command=$1; model=$2; split=$3; count=$4; out=$5; shift 5
case $command in
  separate) inputs=$split/mix ;;
  enhance) inputs=$split/noisy ;;
  *) echo "score_model.sh: command must be separate or enhance, not '$command'" >&2; exit 2 ;;
esac
mapfile -t files < <(find "$inputs" -maxdepth 1 -name '*.wav' | sort | head -n "$count")
if [ "${#files[@]}" -eq 0 ]; then
  echo "score_model.sh: no .wav files in $inputs" >&2
  exit 1
fi
mkdir -p "$out"
start=$(date +%s.%N)
diffsep "$command" "${files[@]}" --model "$model" -o "$out/est" --seed 0 --quiet --overwrite "$@"
end=$(date +%s.%N)
audio=$(python - "${files[@]}" <<'PY'
import sys, soundfile as sf
print(f"{sum(sf.info(f).duration for f in sys.argv[1:]):.2f}")
PY
)
python - "$start" "$end" "$audio" "${#files[@]}" > "$out/timing.txt" <<'PY'
import sys
start, end, audio, n = map(float, sys.argv[1:])
print(f"files {int(n)}  audio {audio:.1f} s  wall {end - start:.1f} s  RTF {(end - start) / audio:.2f}")
PY
cat "$out/timing.txt"
diffsep eval --ref "$split" --est "$out/est" --intersection --json --csv "$out/report.csv" \
  ${METRICS:+--metrics "$METRICS"} > "$out/report.json"
