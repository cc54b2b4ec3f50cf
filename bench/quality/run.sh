#!/usr/bin/env bash
# bench/quality: retrieval quality of feature specs vs the OpenCV/sklearn peer on ../shared/data.
# Usage: bench/quality/run.sh BUILD_DIR [DATA_DIR] [SPEC ...]  (the first spec should be the default)
# Writes bench/results/quality.md. Needs a build with -DBUILD_BENCH=ON (bench_quality).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
data=${2:-$root/../shared/data}
shift $(( $# > 2 ? 2 : $# ))
if [ ! -x "$build/bench_quality" ]; then
  echo "quality: $build/bench_quality missing (configure with -DBUILD_BENCH=ON)" >&2; exit 1
fi
if [ ! -d "$data/grocery" ]; then
  echo "quality: no evaluation data at $data, skipped" >&2; exit 0
fi
if [ $# -eq 0 ]; then
  set -- "$("$build/bench_quality" --default-spec)" color vlad color+vlad color+vlad+verify
fi
mkdir -p "$root/bench/results"
exec /usr/bin/python3 "$here/quality.py" "$build" "$data" "$root/bench/results/quality.md" "$@"
