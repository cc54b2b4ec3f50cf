#!/usr/bin/env bash
# bench/cnn: CNN inference speed against PyTorch and OpenCV DNN. Usage: run.sh BUILD_DIR [DATA_DIR]
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
data=${2:-$here/../../../shared/data}
mkdir -p "$build/cnn_models" "$here/../results"
/usr/bin/python3 "$here/speed.py" "$build/shoplens" "$build/cnn_models" "$here/../results/cnn.md" "$data"
