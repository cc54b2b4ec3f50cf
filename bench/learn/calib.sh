#!/usr/bin/env bash
# bench/learn/calib.sh BUILD_DIR [DATA_DIR] [MODEL] (SL_CALIB_CONFIGS="model" or "nomodel": one; "none": the report only) - calibrated confidence on the grocery set
# (issue 18 item 2): check's accept rates on photos-val with the calibration from photos-train and
# from the catalog alone, search's match flags on photos of products in and not in the store and
# on unrelated photos, with and without a model. Writes the "Calibrated confidence" section of
# bench/results/learn.md (between its markers; the rest of the file is bench/learn/run.sh's).
set -euo pipefail
build=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
data=${2:-$root/../shared/data}
model=${3:-$root/../shared/models/mobilenetv2.onnx}
if [ ! -d "$data/grocery" ] || [ ! -d "$data/clothing" ] || [ ! -f "$model" ]; then
  echo "bench/learn/calib: no evaluation data in $data or no model $model (skipped)"
  exit 0
fi
bin=$(cd "$build" && pwd)/shoplens
work=$(cd "$build" && pwd)/calib-bench
mkdir -p "$work"
/usr/bin/python3 "$here/calib.py" "$bin" "$(cd "$data" && pwd)" "$(cd "$(dirname "$model")" && pwd)/$(basename "$model")" \
  "$work" "$root/bench/results/learn.md" "$(git -C "$root" rev-parse --short HEAD)"
