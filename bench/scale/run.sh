#!/usr/bin/env bash
# bench/scale/run.sh BUILD_DIR [DATA_DIR] - one node, 10^4 to 10^6 images: open time, memory,
# disk, search latency with 1 and 4 clients, and the candidate stage's latency and recall@100
# against brute force (with category and price filters), for the exact (flat) index and HNSW.
#
# How the stores are built (cheaply, without describing 10^6 images): DATA_DIR's real images
# (grocery catalog + shop photos, COIL-100, clothing: 5,227 images) are ingested once into a
# seed store with `shoplens add`; a store of N images is a copy of it grown by
# `bench_scale grow`, which writes replicas of the seed descriptors with a seeded perturbation
# through sl_engine_put_described (bench/scale.c says exactly how). Queries: DATA_DIR's
# grocery/photos-val (296 shop photos, never in a store). One store is grown through the sizes
# in turn; at each size up to 10^5 both index kinds are measured on it (the recorded kind is
# switched with `bench_scale kind`; a read-only open builds the other kind in memory).
#
# Environment: SL_SCALE_SIZES (default "10000 20000 30000 50000 100000", about 25 minutes and
# 4 GB here; add 1000000 for 10^6: about an hour more and 42 GB), SL_SCALE_DIR
# (stores, default BUILD_DIR/bench-scale; about 40 KB of disk per image), SL_SCALE_SEARCHES
# (end-to-end searches per client count, default 300), SL_SCALE_EFS (HNSW ef values whose
# recall and time are measured too, default "100,200,300,400,600"; "none": no sweep),
# SL_SCALE_QUERIES (use every k-th of the 296 query photos so that about this many remain;
# default all), SL_SCALE_KEEP=1 keeps the grown store.
#
# 10^6 images (not run on the shared 2-core machine; estimates from the 10^5 runs there):
#   SL_SCALE_SIZES=1000000 SL_SCALE_QUERIES=100 SL_SCALE_EFS=300,600 SL_SCALE_SEARCHES=100 \
#   SL_SCALE_DIR=/disk/with/50GB bench/scale/run.sh build ../shared/data
# grows the seed store straight to 10^6 (no intermediate sizes, no flat/HNSW crossover runs):
# 41.8 KB of disk per image, about 42 GB; 215-550 images/s through sl_engine_put_described at
# 10^5 (incremental HNSW inserts included), so 30-80 minutes or more (inserts slow down as the
# graph grows: not measured above 10^5); the seed (5,227 images described
# once, cached in SL_SCALE_DIR/seed) about 5 minutes more. The measurement reads every stored
# vector once for the brute-force recall (11.4 GB) and runs 100 queries per filter instead of
# 296. Interrupted growing resumes where it stopped (replica j depends only on the seed and j).
# Results: SL_SCALE_DIR/results.jsonl (one JSON object per measurement), formatted into
# bench/results/scale.md by bench/scale/report.py.
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
data=$(cd "${2:-../shared/data}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin="$build/shoplens"
bs="$build/bench_scale"
sizes=${SL_SCALE_SIZES:-"10000 20000 30000 50000 100000"}
work=${SL_SCALE_DIR:-$build/bench-scale}
searches=${SL_SCALE_SEARCHES:-300}
[ -x "$bs" ] || { echo "bench/scale: $bs missing (configure with -DBUILD_BENCH=ON)" >&2; exit 1; }
mkdir -p "$work"
seed="$work/seed"
store="$work/store"
results="$work/results.jsonl"

if [ ! -f "$seed/.complete" ]; then
  echo "bench/scale: describing the seed images of $data (once; cached in $seed)"
  rm -rf "$seed"
  /usr/bin/python3 "$here/seed_catalog.py" "$data" > "$work/seed.csv"
  "$bin" init --store "$seed" >/dev/null
  "$bin" add "$work/seed.csv" --store "$seed" --quiet
  touch "$seed/.complete"
fi
find "$data/grocery/photos-val" -type f | sort > "$work/queries.all"
nq=$(wc -l < "$work/queries.all")
step=$(( ${SL_SCALE_QUERIES:-0} > 0 ? (nq + ${SL_SCALE_QUERIES:-1} - 1) / ${SL_SCALE_QUERIES:-1} : 1 ))
awk -v s="$step" '(NR - 1) % s == 0' "$work/queries.all" > "$work/queries.txt"

measure() { # kind extra-args...
  local kind=$1; shift
  "$bs" kind "$store" "$kind"
  echo "bench/scale: measuring $(basename "$store") as $kind: $*" >&2
  "$bs" measure "$store" "$work/queries.txt" "$@" | /usr/bin/python3 -c "
import json, sys
r = json.loads(sys.stdin.read()); r['kind_recorded'] = '$kind'; r['host_load'] = open('/proc/loadavg').read().split()[0]
print(json.dumps(r))" >> "$results"
}

if [ ! -d "$store" ]; then cp -r "$seed" "$store"; rm -f "$store/.complete"; fi
for n in $sizes; do
  echo "bench/scale: growing the store to $n images ($(df -h --output=avail "$work" | tail -1 | tr -d ' ') free)"
  t0=$(date +%s)
  "$bs" grow "$seed" "$store" "$n"
  echo "{\"grown_to\": $n, \"seconds\": $(( $(date +%s) - t0 )), \"disk_mb\": $(du -sm "$store" | cut -f1)}" >> "$results"
  if [ "$n" -le 100000 ]; then
    measure flat recall=0 e2e=0
    measure hnsw recall=0 e2e=0
    "$bs" kind "$store" auto # keeps the HNSW index.bin: growing on maintains it
  fi
  if [ "$n" -eq 100000 ] || [ "$n" -ge 1000000 ]; then
    efs=${SL_SCALE_EFS:-100,200,300,400,600}
    [ "$efs" = none ] && efs=
    measure auto "searches=$searches" "efs=$efs"
  fi
done
/usr/bin/python3 "$here/report.py" "$results" "$root/bench/results/scale.md"
[ "${SL_SCALE_KEEP:-0}" = 1 ] || rm -rf "$store"
echo "bench/scale: wrote $root/bench/results/scale.md"
