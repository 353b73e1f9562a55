#!/usr/bin/env bash
# The piecewise-approximation table of issue 41 (docs/results.md section 14): the same QuickNet
# on the same 12-class data for the same epochs, one row per setting: 1-bit (Bop), 1-bit with
# Adam (separates the optimizer from the bases: PA kernels have precision M and train with
# Adam), PA (2,2), (3,3), (4,4), and the real-valued twin. Each row: train, evaluate
# (validation and test), export with its float-32 and int8 twins, and time every exit with
# `kws bench`; then benchmarks/pa_table.py prints the table.
#
# A row already done is skipped and an interrupted training resumes (`kws train --resume`),
# so re-running the script after a session ends continues where it stopped.
# Usage: recipes/pa_table.sh [WORK_DIR]   (EPOCHS=N, ROWS="bit1 pa2x2 ..." to choose)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${1:-runs/pa-table}"
shared="${SHARED:-../shared/data}"
data="$shared/speech_commands_v2_test"
epochs="${EPOCHS:-30}"
rows="${ROWS:-bit1 bit1-adam pa2x2 pa3x3 pa4x4 real}"
mkdir -p "$work"

options() {
  case "$1" in
    bit1) echo "";;
    bit1-adam) echo "--optimizer adam";;
    pa2x2) echo "--pa-bases 2,2";;
    pa3x3) echo "--pa-bases 3,3";;
    pa4x4) echo "--pa-bases 4,4";;
    real) echo "--real-valued";;
    *) echo "unknown row $1 (bit1 bit1-adam pa2x2 pa3x3 pa4x4 real)" >&2; return 1;;
  esac
}

for row in $rows; do
  opts="$(options "$row")"
  run="$work/$row/run"
  if [ ! -f "$work/$row/bench/bench.json" ]; then
    resume=(); [ -f "$run/train_config.json" ] && resume=(--resume)
    # shellcheck disable=SC2086  # $opts is a list of options
    kws train --data "$data" --arch quicknet --epochs "$epochs" $opts --out "$run" "${resume[@]}"
    for split in validation testing; do
      kws eval "$run" --data "$data" --split "$split" --calibrate --quiet \
          --out "$work/$row/eval-$split"
    done
    kws export "$run" --out "$work/$row/bundle" --overwrite   # full: float-32 and int8 twins
    kws bench "$work/$row/bundle" --out "$work/$row/bench" --runs 200 --warmup 20 \
        --data "$data" --limit 350 --threads 1
  fi
done
python "$here/../benchmarks/pa_table.py" "$work"
