#!/usr/bin/env bash
# bench/cnn: CNN inference speed against PyTorch and OpenCV DNN. Usage: run.sh BUILD_DIR [DATA_DIR]
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
data=${2:-$here/../../../shared/data}
mkdir -p "$build/cnn_models" "$here/../results"
# OpenMP runtimes (shoplens, PyTorch) otherwise spin at barriers, which on a machine shared with
# other jobs costs 10-100x at 2 threads; the same setting applies to every runtime measured.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
rm -f "$build/cnn_models/speed_rows.json"
/usr/bin/python3 "$here/speed.py" "$build/shoplens" "$build/cnn_models" "$here/../results/cnn.md" "$data"
