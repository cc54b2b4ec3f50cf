#!/usr/bin/env bash
# bench/cnn_verify: numerical agreement of shoplens' CNN engine with PyTorch on torchvision
# models with random weights. Usage: run.sh BUILD_DIR
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
work="$build/cnn_models"
mkdir -p "$work" "$here/../results"
/usr/bin/python3 "$here/verify.py" "$build/shoplens" "$work" "$here/../results/cnn_verify.md"
