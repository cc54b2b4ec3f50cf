#!/usr/bin/env bash
# bench/sift/run.sh BUILD_DIR [DATA_DIR] - SIFT speed and matching quality: shoplens vs OpenCV
# (cv2.SIFT_create, python3-opencv) vs VLFeat (vl_sift, libvlfeat-dev), same run, same pixels.
# Writes bench/results/sift.md. Environment: SIFT_IMAGES (200), SIFT_PAIRS (20), SIFT_REPEATS (2).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
data=${2:-$root/../shared/data}
n=${SIFT_IMAGES:-200}
pairs=${SIFT_PAIRS:-20}
reps=${SIFT_REPEATS:-2}
py=/usr/bin/python3
bin="$build/bench_sift"
[ -x "$bin" ] || { echo "bench/sift: $bin missing (configure with -DBUILD_BENCH=ON)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
vl="$work/vlfeat_sift"
tags=shoplens,shoplens-upsample,opencv,vlfeat
if ! cc -O2 -o "$vl" "$here/vlfeat_sift.c" -lvl -lm; then
  echo "bench/sift: VLFeat (libvlfeat-dev) unavailable, measuring without it" >&2
  vl=""
  tags=shoplens,shoplens-upsample,opencv
fi
"$py" "$here/peer.py" prepare "$data" "$work/data" "$n" "$pairs" 1

# Peers interleaved, one pass each per round, so load from other work on the machine hits them
# alike; the report keeps each configuration's best round.
times="$work/times.jsonl"
: > "$times"
for r in $(seq "$reps"); do
  for t in 1 2; do
    "$bin" time "$work/data" 1 "$t" 0 >> "$times"
    "$bin" time "$work/data" 1 "$t" 1 >> "$times"
    "$py" "$here/peer.py" opencv-time "$work/data" 1 "$t" >> "$times"
  done
  [ -z "$vl" ] || "$vl" time "$work/data" 1 >> "$times"
done

"$bin" feat "$work/data" shoplens 0
"$bin" feat "$work/data" shoplens-upsample 1
"$py" "$here/peer.py" opencv-feat "$work/data" opencv
[ -z "$vl" ] || "$vl" feat "$work/data" vlfeat
mkdir -p "$root/bench/results"
"$py" "$here/peer.py" report "$work/data" "$times" "$tags" "$root/bench/results/sift.md"
