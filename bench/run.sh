#!/usr/bin/env bash
# make bench: runs every benchmark script bench/*/run.sh (or bench/bench_*.sh) with the build dir.
set -euo pipefail
build=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
for b in "$here"/*/run.sh; do
  [ -f "$b" ] || continue
  echo "== $(basename "$(dirname "$b")")"
  bash "$b" "$build"
done
