#!/usr/bin/env bash
# bench/quant: reduced precision with real weights and the zoo's int8 model.
# Usage: bench/quant/run.sh BUILD_DIR [DATA_DIR] [MODELS_DIR]   (writes bench/results/quant.md)
# - MobileNetV2 (MODELS_DIR/mobilenetv2.onnx) at bf16 / int8 against fp32 on ~200 real photos:
#   embedding cosine, top-1 agreement, the range estimators, kept layers, speed;
# - `shoplens eval` mAP at fp32 / int8 / bf16 on the three sets (each calibrated on its gallery);
# - the zoo's mobilenetv2-12-int8.onnx: top-1 agreement with fp32, identity with onnxruntime when
#   onnxruntime-node is installed (ORT_NODE_MODULES, default bench/cnn/ort/node_modules, which
#   deps/bench-cnn.sh installs; bench/cnn_verify/node_modules is used when only that one exists).
# QUANT_SKIP_EVAL=1 skips the retrieval part (the slowest).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
data=${2:-$root/../shared/data}
models=${3:-$root/../shared/models}
if [ ! -d "$data/grocery" ] || [ ! -f "$models/mobilenetv2.onnx" ]; then
  echo "bench/quant: no evaluation data or models ($data, $models), skipped" >&2; exit 0
fi
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
work="$build/quant"
mkdir -p "$work" "$root/bench/results"
ort=${ORT_NODE_MODULES:-$root/bench/cnn/ort/node_modules}
[ -d "$ort/onnxruntime-node" ] || [ ! -d "$root/bench/cnn_verify/node_modules/onnxruntime-node" ] || ort=$root/bench/cnn_verify/node_modules
exec /usr/bin/python3 "$here/quant.py" "$build/shoplens" "$data" "$models" "$work" "$root/bench/results/quant.md" \
  "$ort" "$root"
