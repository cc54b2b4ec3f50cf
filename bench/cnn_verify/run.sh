#!/usr/bin/env bash
# bench/cnn_verify: numerical agreement of shoplens' CNN path with the reference runtimes.
#   run.sh BUILD_DIR [--photos DATA_DIR MODELS_DIR] [--no-torch]
# - verify.py (needs python3-torch): torchvision models with random weights, shoplens vs PyTorch
#   on the same tensors (fp32/bf16/int8).
# - photos.py (with --photos): real weights on real photos, shoplens end to end vs Pillow +
#   torchvision transforms + onnxruntime-node (npm, installed here with --ignore-scripts).
# Both write their section of bench/results/cnn_verify.md.
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
shift || true
here=$(cd "$(dirname "$0")" && pwd)
data="" models="" torch=1
while [ $# -gt 0 ]; do
  case "$1" in
    --photos) data=$2; models=$3; shift 3 ;;
    --no-torch) torch=0; shift ;;
    *) echo "usage: run.sh BUILD_DIR [--photos DATA_DIR MODELS_DIR] [--no-torch]" >&2; exit 2 ;;
  esac
done
work="$build/cnn_models"
mkdir -p "$work" "$here/../results"
if [ "$torch" = 1 ]; then
  /usr/bin/python3 "$here/verify.py" "$build/shoplens" "$work" "$here/../results/cnn_verify.md"
fi
if [ -n "$data" ]; then
  (cd "$here" && npm ci --ignore-scripts --no-audit --no-fund >/dev/null)
  /usr/bin/python3 "$here/photos.py" "$build/shoplens" "$data" "$models" "$work/photos" "$here/../results/cnn_verify.md"
fi
