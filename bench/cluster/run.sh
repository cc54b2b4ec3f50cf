#!/usr/bin/env bash
# bench/cluster/run.sh BUILD_DIR - a shoplens cluster on one machine (docs/cluster.md):
#
#  ingest   the same feed (SL_BENCH_PRODUCTS sample products, default 2000, one 320 px view each)
#           into a single-node store (add --jobs 1 and --jobs 2) and into two cluster stores
#           through 1 and 2 `shoplens worker` processes (the feed queued first with add
#           --no-wait, which also trains; the workers are timed from their start to the last
#           job), with the workers' CPU per product;
#  search   wrk POSTing a shopper photo to /v1/search (1 and 4 connections, SL_BENCH_SECONDS
#           each, default 20) of: the single-node store (serve), a router + 1 search node
#           (--shard 0/1), a router + 3 search nodes (--shard I/3). Every process's CPU time is
#           read from /proc before and after: CPU ms per search of the router and of each node,
#           and the router's overhead = all CPU of a cluster search - the single node's.
#  All processes share this machine's cores, so 3 nodes cannot serve more than 1 here; what the
#  numbers show is what a search costs in each layout.
#  price    bench/cluster/price.sh: the price filter's statement with schema 1's and schema 2's
#           indexes at 10^5 products (its section is appended).
# PostgreSQL 15 runs in a temporary directory (tests/cluster/pg.sh) for the run. Writes
# bench/results/cluster.md (SL_BENCH_OUT).
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$root/tests/server/lib.sh"
bin="$build/shoplens"
products=${SL_BENCH_PRODUCTS:-2000}
secs=${SL_BENCH_SECONDS:-20}
out=${SL_BENCH_OUT:-$root/bench/results/cluster.md}
cache="$build/bench-cluster"
command -v wrk >/dev/null || { echo "bench/cluster: wrk missing (make bench installs it)" >&2; exit 1; }
mkdir -p "$cache"
work=$(mktemp -d "${TMPDIR:-/tmp}/sl-bench-cluster.XXXXXX")
. "$root/tests/cluster/lib.sh"
trap 'cl_cleanup; rm -rf "$work"' EXIT
hz=$(getconf CLK_TCK)
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
now() { date +%s.%N; }
py() { /usr/bin/python3 "$@"; }

cat="$cache/cat-$products"
if [ ! -f "$cat/.complete" ]; then
  rm -rf "$cat"
  "$bin" sample catalog "$cat" --products "$products" --views 1 --photos 0 --size 320 --seed 42 >/dev/null
  touch "$cat/.complete"
fi
qid=$(( products / 3 ))
q="$cache/query.jpg"
"$bin" sample photo --product "$qid" --variant 1 --seed 42 --size 640 -o "$q" >/dev/null

cl_pg_start
for db in c1 c3; do cl_pg psql -c "CREATE DATABASE $db" >/dev/null; done
url1=${PGURL%/*}/c1
url3=${PGURL%/*}/c3
echo "bench/cluster: PostgreSQL at ${PGURL%/*}; $products products"

# ---- ingest ---------------------------------------------------------------------------------------
irows=""
for jobs in 1 2; do
  rm -rf "$work/single$jobs"
  t0=$(now)
  "$bin" add "$cat/catalog.csv" --store "$work/single$jobs" --jobs "$jobs" --json > "$work/single$jobs.json"
  t1=$(now)
  ex=$(py -c "import json; d=json.load(open('$work/single$jobs.json')); print(d['added'])")
  r=$(py -c "print('%.1f' % ($ex / ($t1 - $t0)))")
  echo "bench/cluster: single node, add --jobs $jobs: $ex products in $(py -c "print('%.1f' % ($t1 - $t0))") s, $r products/s (training included)"
  irows+="| single node, add --jobs $jobs (training included) | $ex | $(py -c "print('%.1f' % ($t1 - $t0))") | $r | - |"$'\n'
done
ingest_cluster() { # URL WORKERS
  local url=$1 w=$2
  "$bin" init --store "$url" --quiet
  local t0 t1
  t0=$(now)
  "$bin" add "$cat/catalog.csv" --store "$url" --no-wait --json > "$work/enq-$w.json"
  t1=$(now)
  echo "bench/cluster: queued $(py -c "import json; print(json.load(open('$work/enq-$w.json'))['queued'])") products (training included) in $(py -c "print('%.1f' % ($t1 - $t0))") s"
  local pids=() c0=0
  t0=$(now)
  for i in $(seq 1 "$w"); do
    cl_bg "worker$w-$i" "$bin" worker --store "$url" --name "bench-w$w-$i" --quiet
    pids+=("$CL_PID")
  done
  queued() { [ "$(psql_url "$url" "SELECT count(*) FROM shoplens.jobs WHERE state = 0")" != 0 ]; }
  while queued; do sleep 0.2; done
  t1=$(now)
  local cpu=0
  for p in "${pids[@]}"; do cpu=$(( cpu + $(ticks "$p") )); kill -TERM "$p"; done
  for p in "${pids[@]}"; do wait "$p" || true; done
  local n
  n=$(psql_url "$url" "SELECT count(*) FROM shoplens.jobs WHERE state = 1")
  local dt r cpp
  dt=$(py -c "print('%.1f' % ($t1 - $t0))")
  r=$(py -c "print('%.1f' % ($n / ($t1 - $t0)))")
  cpp=$(py -c "print('%.1f' % ($cpu * 1000.0 / $hz / max($n, 1)))")
  echo "bench/cluster: $w worker(s): $n products in $dt s, $r products/s, $cpp ms worker CPU/product"
  irows+="| cluster, $w worker process(es) (queue already filled) | $n | $dt | $r | $cpp |"$'\n'
}
psql_url() { cl_pg psql -d "${1##*/}" -At -c "$2"; }
ingest_cluster "$url1" 1
ingest_cluster "$url3" 2

# ---- search ---------------------------------------------------------------------------------------
parse() { # wrk output -> "rps p50_ms p99_ms errors requests"
  py - "$1" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
def ms(label):
    m = re.search(r"^\s*%s\s+([\d.]+)(us|ms|s)\s*$" % re.escape(label), t, re.M)
    if not m: return float("nan")
    v, u = float(m.group(1)), m.group(2)
    return v / 1000 if u == "us" else v * 1000 if u == "s" else v
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
n = int(re.search(r"^\s*(\d+) requests in", t, re.M).group(1))
non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", t)
sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
print(f"{rps:.1f} {ms('50%'):.1f} {ms('99%'):.1f} {errors} {n}")
PY
}
declare -A PID TOTAL1 FIRST1
srows=""
top_of() { curl -sS -F "image=@$q" "$1/v1/search?k=10" | py -c 'import json,sys; d=json.load(sys.stdin); print(",".join(r["product_id"] for r in d["results"]), d.get("partial", False))'; }
measure() { # LABEL URL PROCESS-NAMES...
  local label=$1 url=$2; shift 2
  for _ in 1 2 3; do curl -sS -o /dev/null -F "image=@$q" "$url/v1/search?k=10"; done
  for c in 1 4; do
    declare -A t0s=()
    local nm
    for nm in "$@"; do t0s[$nm]=$(ticks "${PID[$nm]}"); done
    wrk -t "$(( c < 2 ? 1 : 2 ))" -c "$c" -d "${secs}s" --timeout 30s --latency -s "$root/bench/server/search.lua" \
      "$url/v1/search?k=10" -- "$q" > "$work/wrk-$label-$c.txt"
    local rps p50 p99 errs n cpus="" total=0
    read -r rps p50 p99 errs n < <(parse "$work/wrk-$label-$c.txt")
    local first=""
    for nm in "$@"; do
      local ms
      ms=$(py -c "print('%.1f' % (($(ticks "${PID[$nm]}") - ${t0s[$nm]}) * 1000.0 / $hz / max($n, 1)))")
      cpus+="$nm $ms, "
      [ -n "$first" ] || first=$ms
      total=$(py -c "print('%.1f' % ($total + $ms))")
    done
    echo "bench/cluster: $label, $c connection(s): $rps searches/s, p50 $p50 ms, p99 $p99 ms, $errs errors; CPU ms/search: ${cpus}total $total"
    srows+="| $label | $c | $rps | $p50 | $p99 | $errs | ${cpus%, } | $total |"$'\n'
    if [ "$c" = 1 ]; then TOTAL1[$label]=$total; FIRST1[$label]=$first; fi
  done
}
serve_bg() { # NAME serve-args... (sets SURL; not in $(...): the pid must stay in this shell)
  local nm=$1; shift
  cl_bg "$nm" "$bin" serve --listen 127.0.0.1:0 --threads 2 --quiet --max-inflight 1024 "$@"
  PID[$nm]=$CL_PID
  SURL=$(sl_serve_url "$work/$nm.log" "$CL_PID" 1200)
}
stop_all() { for nm in "$@"; do kill -TERM "${PID[$nm]}"; wait "${PID[$nm]}" || true; done; }

serve_bg single --store "$work/single1" --read-only; u=$SURL
expect=$(top_of "$u")
measure "single node" "$u" single
stop_all single

serve_bg n0 --store "$url1" --shard 0/1 --data "$work/c1-n0"
serve_bg router1 --store "$url1" --router; r1=$SURL
sleep 2 # the router learns the node from its heartbeat
got=$(top_of "$r1")
[ "$got" = "$expect" ] || echo "bench/cluster: WARNING: router + 1 node answered $got, the single node $expect"
measure "router + 1 search node" "$r1" router1 n0
stop_all router1 n0

for i in 0 1 2; do serve_bg "s$i" --store "$url3" --shard "$i/3" --data "$work/c3-s$i"; done
serve_bg router3 --store "$url3" --router; r3=$SURL
sleep 2
got=$(top_of "$r3")
[ "$got" = "$expect" ] || echo "bench/cluster: WARNING: router + 3 nodes answered $got, the single node $expect"
measure "router + 3 search nodes" "$r3" router3 s0 s1 s2
stop_all router3 s0 s1 s2

cores=$(nproc)
load=$(cut -d' ' -f1-3 /proc/loadavg)
cpu=$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)
{
  echo "# Cluster: ingest with 1 and 2 workers, search through 1 and 3 shards"
  echo
  echo "Written by \`bench/cluster/run.sh\` ($(date -u +%Y-%m-%d)), $cpu, $cores cores shared by every"
  echo "process of the run (PostgreSQL 15, the workers, the nodes, the router, wrk) and by other jobs"
  echo "of the machine (load average at the end: $load). $products sample products, one 320 px view each,"
  echo "default features (colour + VLAD + verification). Searches: a 640 px shopper photo of product"
  echo "P$(printf %06d "$qid") POSTed with wrk for ${secs} s per row; every layout returned the same top 10"
  echo "(${expect%% *})."
  echo
  echo "## Ingest"
  echo
  echo "| run | products | seconds | products/s | worker CPU ms/product |"
  echo "|---|---:|---:|---:|---:|"
  printf "%s" "$irows"
  echo
  echo "## Search"
  echo
  echo "| layout | connections | searches/s | p50 ms | p99 ms | errors | CPU ms per search, by process | total CPU ms/search |"
  echo "|---|---:|---:|---:|---:|---:|---|---:|"
  printf "%s" "$srows"
  echo
  py - "${TOTAL1[single node]}" "${TOTAL1[router + 1 search node]}" "${TOTAL1[router + 3 search nodes]}" \
    "${FIRST1[router + 1 search node]}" "${FIRST1[router + 3 search nodes]}" <<'PY'
import sys
single, r1, r3, router1, router3 = map(float, sys.argv[1:6])
print("At 1 connection the router's overhead is %.1f CPU ms per search with 1 search node (%.0f %% more"
      % (r1 - single, 100 * (r1 - single) / single))
print("than the single node) and %.1f ms with 3 (%.0f %%); the router itself spends %.1f / %.1f ms"
      % (r3 - single, 100 * (r3 - single) / single, router1, router3))
print("(mostly describing the query photo, which the single node does too), each of 3 shards %.1f ms."
      % ((r3 - router3) / 3))
print("On separate machines the shards' share is what a node serves per search, and routers are")
print("added like nodes; on this 2-core machine all layouts share the same cores, so their")
print("searches/s are not a scaling measure.")
print()
PY
  echo "CPU per search is each process's user + system time over the run divided by the searches"
  echo "wrk completed; the router's overhead is the total of a cluster layout minus the single"
  echo "node's. See docs/cluster.md for what the router does (describes the photo, two phases over"
  echo "HTTP, the merge) and why a search costs more CPU in total on one machine but scales out on"
  echo "several."
} > "$out"
# the price filter on PostgreSQL, with the indexes of schema 1 and 2 (its own server and store)
cl_cleanup
bash "$here/price.sh" "$build" >> "$out"
echo "bench/cluster: wrote $out"
