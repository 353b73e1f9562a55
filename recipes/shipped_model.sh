#!/usr/bin/env bash
# The previous shipped model's recipe (2026-12-02 to 2026-12-07; the shipped one since is
# recipes/multi_corpus.sh), on the Speech Commands subset alone, end to end: the synthetic
# vocabulary, training, the validation
# sweep to choose the exit threshold from, the lean export with its replay memory (the last line
# prints the `kws report` command that measures the bundle).
# About 45 minutes on 2 CPU cores. Usage: recipes/shipped_model.sh [WORK_DIR]
#   DATA   12-class dataset (default ../shared/data/speech_commands_v2_test)
#   NOISE  background-noise recordings (default ../shared/data/speech_commands_background_noise)
#   DELTA  exit threshold for the bundle (default 0.25, the shipped model's: read the validation
#          sweep that kws eval prints and writes to WORK_DIR/eval-val/summary.md)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${1:-runs/shipped-recipe}"
data="${DATA:-../shared/data/speech_commands_v2_test}"
noise="${NOISE:-../shared/data/speech_commands_background_noise}"
v1="${V1:-../shared/data/speech_commands_v1_sample}"
mkdir -p "$work"

# 165 everyday words spoken by espeak-ng voices (none of the commands, digits or the words the
# transfer and enrolment benchmarks hold out): auxiliary classes only, no task label.
[ -d "$work/synth" ] || kws synth --words "$(cat "$here/synth165_words.txt")" \
    --out "$work/synth" --per-word 12

resume=(); [ -f "$work/run/train_config.json" ] && resume=(--resume)   # continue an interrupted run
kws train --data "$data" --arch quicknet --stage-filters 64,128,256,512,512 \
    --binary-bn-epsilon 1.0 --exit-weights 3,2,1,1,1 \
    --noise-dir "$noise" --noise-prob 0.8 --snr-db 0 20 --generated-noise-prob 0.2 \
    --offset-prob 0.5 --partial-prob 0.1 \
    --aux-vocab --aux-data "$v1" --aux-weight 0.5 --aux-synth "$work/synth" \
    --epochs 45 --out "$work/run" "${resume[@]}"

kws eval "$work/run" --data "$data" --split validation --calibrate --out "$work/eval-val"
delta="${DELTA:-0.25}"
kws export "$work/run" --out "$work/bundle" --delta "$delta" --lean --overwrite
echo "bundle: $work/bundle (delta $delta); kws report $work/bundle --docs $work/report --work $work/report/raw --readme '' measures it"
