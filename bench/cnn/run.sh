#!/usr/bin/env bash
# bench/cnn: CNN inference speed against onnxruntime (npm onnxruntime-node), PyTorch and OpenCV DNN.
# Usage: run.sh [--quick] [--json] [BUILD_DIR [DATA_DIR [MODELS_DIR]]]
#   --quick: onnxruntime only, fp32 and int8, fewer rounds; bench/results/cnn.md is left alone
#   --json:  one JSON object on stdout with a "ratios" map (shoplens / onnxruntime images per second)
# MODELS_DIR (default ../shared/models) provides the real-weight MobileNetV2 and SqueezeNet files
# when present; otherwise torchvision exports (random weights) are used.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
flags=()
while [ $# -gt 0 ] && [ "${1#--}" != "$1" ]; do flags+=("$1"); shift; done
build=$(cd "${1:-$here/../../build}" && pwd)
data=${2:-$here/../../../shared/data}
models=${3:-$here/../../../shared/models}
mkdir -p "$build/cnn_models" "$here/../results"
# onnxruntime-node from the committed package-lock.json (no-op when installed; make bench runs it too)
bash "$here/../../deps/bench-cnn.sh" >&2
# OpenMP runtimes (shoplens, PyTorch) otherwise spin at barriers, which on a machine shared with
# other jobs costs 10-100x at 2 threads; the same setting applies to every OpenMP runtime measured.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
rm -f "$build/cnn_models/speed_rows.json"
exec /usr/bin/python3 "$here/speed.py" ${flags[@]+"${flags[@]}"} "$build/shoplens" "$build/cnn_models" \
  "$here/../results/cnn.md" "$data" "$models"
