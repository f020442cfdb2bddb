#!/usr/bin/env bash
# Training set-ups compared at equal CPU time (recipes/README.md, "Learning per CPU-hour").
#
#   bash recipes/compare_setups.sh CORPUS RUNS NAME [CPU_MINUTES]
#   python recipes/plot_curves.py RUNS/cmp-A RUNS/cmp-B ... --out curves.png --table curves.md
#
# CORPUS is a corpus built by make_corpus.py (speech/ and sep-8k/valid-real/), RUNS a folder
# for the runs, NAME one of the set-ups below. Every run but G starts from scratch with the same
# seed, data and validation items, on one thread in float32, and pauses after CPU_MINUTES
# (default 12) of training CPU time; validation (every 25 steps) is the network's one-call
# estimate at t = T on 16 real-voice validation mixtures (2 s centre crops), which costs
# seconds. The same command resumes a paused run with a larger budget.
#
#   A  the paper's score matching (the bundled model's recipe, p_T 0.9)
#   B  data prediction: the network outputs the sources; PIT SI-SDR + 0.1 x implied score
#      loss (min-SNR clipped), p_T 0.5, times skewed towards T (t_skew 2)
#   C  B with a curriculum: t = T only for the first 120 steps
#   D  B with a cheaper STFT: n_fft 254, hop 128 (128 x F instead of 256 x F pixels)
#   E  D with a higher learning rate, 1e-3 (D plateaued near +0.5 dB after 20 CPU-minutes)
#   F  D with a skip connection (model.parameterisation = "data_skip"): near t = 0 the network
#      refines x_t instead of rebuilding it (D's estimates there were worse than x_t itself)
#   G  B with the skip, warm-started from the stage-1 separation model (a score network with
#      the recipe's STFT): its features carry over, the output is re-learned. That model was
#      the bundled one until G replaced it; set G_INIT to a copy taken from git:
#        mkdir stage1 && git archive e43edc4 models/sep-8k | tar -x -C stage1; G_INIT=stage1/models/sep-8k
#   H  F with a wider network: nf 32 instead of 16 (about 4 x the parameters and the work per
#      step); asks whether width, not steps, is what the bundled models lack
set -euo pipefail
if [ $# -lt 3 ]; then sed -n 2,27p "$0" >&2; exit 2; fi
corpus=$1; runs=$2; name=$3; minutes=${4:-12}
here=$(cd "$(dirname "$0")" && pwd)
common=(--set "optim.cpu_minutes=$minutes" --set optim.threads=1 --set optim.precision=fp32
        --set valid.every=25 --set valid.num_mixtures=16 --set valid.sampler=false
        --set output.checkpoint_minutes=5.0 --set output.export_on_validation=false
        --set optim.p_T=0.9 --set optim.lr=3e-4 --set optim.warmup_steps=50
        --set optim.steps=100000
        --set "data.train=$corpus/speech" --set "data.valid=$corpus/sep-8k/valid-real"
        --set "output.dir=$runs/cmp-$name")
data=(--set model.parameterisation=data --set optim.objective=sisdr --set optim.score_weight=0.1
      --set optim.p_T=0.5 --set optim.t_skew=2.0)
case $name in
  A) extra=() ;;
  B) extra=("${data[@]}") ;;
  C) extra=("${data[@]}" --set optim.curriculum_steps=120) ;;
  D) extra=("${data[@]}" --set model.stft.n_fft=254 --set model.stft.hop_length=128
            --set model.backbone.image_size=128 --set model.stft.frame_multiple=32) ;;
  E) extra=("${data[@]}" --set model.stft.n_fft=254 --set model.stft.hop_length=128
            --set model.backbone.image_size=128 --set model.stft.frame_multiple=32
            --set optim.lr=1e-3) ;;
  F) extra=("${data[@]}" --set model.stft.n_fft=254 --set model.stft.hop_length=128
            --set model.backbone.image_size=128 --set model.stft.frame_multiple=32
            --set model.parameterisation=data_skip) ;;
  H) extra=("${data[@]}" --set model.stft.n_fft=254 --set model.stft.hop_length=128
            --set model.backbone.image_size=128 --set model.stft.frame_multiple=32
            --set model.parameterisation=data_skip --set model.backbone.nf=32) ;;
  G) if [ -z "${G_INIT:-}" ]; then
       echo "compare_setups.sh: set-up G needs G_INIT, the stage-1 score model (see the header)" >&2
       exit 2
     fi
     extra=("${data[@]}" --set model.parameterisation=data_skip --init-from "$G_INIT") ;;
  *) echo "compare_setups.sh: unknown set-up '$name' (A to H)" >&2; exit 2 ;;
esac
exec diffsep train "$here/train-sep-8k.toml" "${common[@]}" "${extra[@]}"
