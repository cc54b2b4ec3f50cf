#!/usr/bin/env bash
# deps hook (bench stage): installs onnxruntime-node, bench/cnn's onnxruntime peer, into
# bench/cnn/ort/node_modules from the committed package-lock.json. Its CPU library ships inside
# the npm package; --ignore-scripts skips its install script, which would try to download GPU
# binaries from outside the npm registry. Does nothing (and needs no network) when the locked
# version is already there.
set -euo pipefail
dir=$(cd "$(dirname "$0")/../bench/cnn/ort" && pwd)
want=$(node -p "require('$dir/package-lock.json').packages['node_modules/onnxruntime-node'].version" 2>/dev/null || echo none)
have=$(node -p "require('$dir/node_modules/onnxruntime-node/package.json').version" 2>/dev/null || echo missing)
if [ "$want" != "$have" ]; then
  echo "deps (bench): npm ci --ignore-scripts in bench/cnn/ort (onnxruntime-node $want)"
  (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
fi
