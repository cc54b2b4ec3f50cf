#!/usr/bin/env bash
# bench/index/run.sh - the vector index against hnswlib and FAISS, built and run in the same run.
#
# usage: bench/index/run.sh [BUILD_DIR] [--quick] [--json] [--data DIR] [--n N] [--n2 N2] [--nq NQ]
#                           [--report]
#   BUILD_DIR  a build with -DBUILD_BENCH=ON (default: build); `make bench` passes it
#   --quick    reduced run (100k local descriptors, 1000 queries, builds with 2 threads): ~1 min
#              on an idle 2-core machine once the dataset is cached
#   --json     print one JSON object (shoplens_qps_at_095, hnswlib_qps_at_095, faiss_qps_at_095,
#              build times, ratios) instead of writing bench/results/index.md
#   --data     image folder (default: ../shared/data relative to the repository)
#   --n/--n2/--nq  override the sizes of dataset (a), dataset (b) and the query sets
#   --report   only rewrite the report / JSON from the last run's results
#
# Datasets (cached in BUILD_DIR/bench-index/): (a) dense gradient-histogram "RootSIFT-like"
# local descriptors, d=128, from the images (bench/index/descriptors.py says exactly how);
# (b, full run only) 512-d global descriptors of random crops. Queries come from held-out images.
# Ground truth: exact inner product (bench_index gt). All systems: inner product on L2-normalized
# vectors (= cosine), M=16, efConstruction=128, k=10, single-query search on one thread.
# Throughput is queries per CPU-second of the searching thread, because the machine is shared;
# FAISS runs with OMP_WAIT_POLICY=PASSIVE so idle OpenMP threads do not spin on the CPU clock.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
build=build
quick=0
json=0
data="$repo/../shared/data"
n_override=""
n2_override=""
nq_override=""
report_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --json) json=1 ;;
    --data) data=$2; shift ;;
    --n) n_override=$2; shift ;;
    --n2) n2_override=$2; shift ;;
    --report) report_only=1 ;;
    --nq) nq_override=$2; shift ;;
    -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    *) build=$1 ;;
  esac
  shift
done
build=$(cd "$build" 2>/dev/null && pwd) || { echo "run.sh: no build dir" >&2; exit 1; }
ours="$build/bench_index"
[ -x "$ours" ] || { echo "run.sh: $ours missing: configure with -DBUILD_BENCH=ON (make bench does)" >&2; exit 1; }
work="$build/bench-index"
mkdir -p "$work"
log() { echo "$@" >&2; }

# ---- peers, compiled here with -O3 -march=native ------------------------------------------
compile() {  # out src flags...
  local out=$1 src=$2; shift 2
  if [ ! -x "$out" ] || [ "$src" -nt "$out" ] || [ "$here/peer_common.h" -nt "$out" ]; then
    log "compiling $(basename "$src")"
    g++ -O3 -march=native -std=c++17 -w "$src" -o "$out" "$@"
  fi
}
compile "$work/hnswlib_bench" "$here/hnswlib_bench.cpp" -pthread
compile "$work/faiss_bench" "$here/faiss_bench.cpp" -fopenmp -lfaiss -lopenblas

# ---- datasets -------------------------------------------------------------------------------
make_data() {  # name kind n nq
  local name=$1 kind=$2 n=$3 nq=$4 prefix="$work/$1"
  if [ ! -s "$prefix.base.fbin" ] || [ ! -s "$prefix.query.fbin" ]; then
    if [ -d "$data" ]; then
      log "extracting $kind descriptors ($n + $nq) from $data"
      /usr/bin/python3 "$here/descriptors.py" "$data" "$prefix" "$kind" "$n" "$nq" 1
    else
      log "no image folder $data: synthetic clustered data instead"
      local d=128; [ "$kind" = global512 ] && d=512
      "$ours" synth $((n + nq)) $d 200 1 "$prefix.all.fbin"
      /usr/bin/python3 - "$prefix" "$n" "$nq" <<'EOF'
import struct, sys
p, n, nq = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
b = open(p + ".all.fbin", "rb").read(); _, d = struct.unpack("<ii", b[:8]); row = 4 * d
open(p + ".base.fbin", "wb").write(struct.pack("<ii", n, d) + b[8:8 + n * row])
open(p + ".query.fbin", "wb").write(struct.pack("<ii", nq, d) + b[8 + n * row:8 + (n + nq) * row])
EOF
      echo synthetic > "$prefix.source"
    fi
  fi
  if [ ! -s "$prefix.gt.ibin" ]; then
    log "ground truth for $name"
    "$ours" gt "$prefix.base.fbin" "$prefix.query.fbin" 10 "$prefix.gt.ibin"
  fi
}

M=16
EFC=128
if [ $quick = 1 ]; then
  sets="local128:${n_override:-100000}:${nq_override:-1000}"
  threads_list="2"
  efs="10,20,30,40,60,80,96,120,160,240"
else
  sets="local128:${n_override:-1000000}:${nq_override:-10000} global512:${n2_override:-200000}:${nq_override:-10000}"
  threads_list="1 2"
  efs="10,16,24,32,48,64,96,128,192,256,384,512"
fi

results="$work/results.jsonl"
[ $report_only = 1 ] && sets=""
[ $report_only = 1 ] || : > "$results"
for s in $sets; do
  IFS=: read -r kind n nq <<< "$s"
  name="${kind}_${n}_${nq}"
  make_data "$name" "$kind" "$n" "$nq"
  p="$work/$name"
  src=images; [ -f "$p.source" ] && src=synthetic
  for t in $threads_list; do
    flat=0; [ "$t" = "$(echo $threads_list | cut -d' ' -f1)" ] && flat=1
    # peers and ours back to back, same data, same parameters
    for sys in shoplens shoplens_int8 hnswlib faiss; do
      log "== $name $sys threads=$t"
      case $sys in
        shoplens) out=$("$ours" run "$p.base.fbin" "$p.query.fbin" "$p.gt.ibin" $M $EFC "$t" "$efs" $flat 0) ;;
        shoplens_int8) out=$("$ours" run "$p.base.fbin" "$p.query.fbin" "$p.gt.ibin" $M $EFC "$t" "$efs" 0 2) ;;
        hnswlib) out=$("$work/hnswlib_bench" "$p.base.fbin" "$p.query.fbin" "$p.gt.ibin" $M $EFC "$t" "$efs" $flat) ;;
        faiss) out=$(OMP_WAIT_POLICY=PASSIVE "$work/faiss_bench" "$p.base.fbin" "$p.query.fbin" "$p.gt.ibin" $M $EFC "$t" "$efs" $flat) ;;
      esac
      echo "{\"dataset\":\"$name\",\"source\":\"$src\",\"label\":\"$sys\",\"run\":$out}" >> "$results"
    done
  done
done

/usr/bin/python3 - "$results" "$json" "$repo/bench/results/index.md" "$quick" "$(nproc)" "$(uptime)" <<'EOF'
import json, math, sys, datetime
path, as_json, md, quick, ncpu, up = sys.argv[1], sys.argv[2] == "1", sys.argv[3], sys.argv[4] == "1", sys.argv[5], sys.argv[6]
rows = [json.loads(l) for l in open(path) if l.strip()]

def qps_at(points, target):
    """QPS at a recall target, interpolated (log QPS linear in recall) between sweep points."""
    pts = sorted(points, key=lambda p: p["ef"])
    best = None
    for a, b in zip(pts, pts[1:]):
        if a["recall"] < target <= b["recall"]:
            f = (target - a["recall"]) / (b["recall"] - a["recall"])
            best = math.exp(math.log(a["qps"]) + f * (math.log(b["qps"]) - math.log(a["qps"])))
            break
    if best is None and pts and pts[0]["recall"] >= target:
        best = pts[0]["qps"]
    return best

summary = {}
for r in rows:
    run = r["run"]
    key = (r["dataset"], r["label"])
    e = summary.setdefault(key, {"dataset": r["dataset"], "source": r["source"], "label": r["label"], "build": {}})
    e["build"][run["threads"]] = (run["build_s"], run["build_cpu_s"])
    if run["threads"] == min(rr["run"]["threads"] for rr in rows if rr["dataset"] == r["dataset"]):
        e["n"], e["d"], e["mem_mb"] = run["n"], run["d"], run["mem_mb"]
        e["at"] = {t: qps_at(run["points"], t) for t in (0.90, 0.95, 0.99)}
        e["points"] = run["points"]
        if "flat_qps" in run:
            e["flat"] = (run["flat_qps"], run["flat_recall"])

def fmt(x, nd=0):
    return "n/a" if x is None else ("%.*f" % (nd, x))

if as_json:
    out = {}
    ds = sorted({k[0] for k in summary})[0]
    for label in ("shoplens", "shoplens_int8", "hnswlib", "faiss"):
        e = summary.get((ds, label))
        if not e: continue
        out[label + "_qps_at_095"] = e["at"][0.95] and round(e["at"][0.95], 1)
        t = min(e["build"])
        out[label + "_build_s"] = round(e["build"][t][0], 3)
        out[label + "_build_cpu_s"] = round(e["build"][t][1], 3)
        d96 = [p["recall"] for p in e["points"] if p["ef"] == 96]
        if label == "shoplens" and d96:
            out["shoplens_recall_at_default_ef96"] = d96[0]
    for label in ("shoplens", "shoplens_int8"):
        for peer in ("hnswlib", "faiss"):
            a, b = out.get(label + "_qps_at_095"), out.get(peer + "_qps_at_095")
            out["%s_vs_%s_qps_ratio" % (label, peer)] = round(a / b, 3) if a and b else None
    out["dataset"] = ds
    out["source"] = summary[(ds, "shoplens")]["source"]
    out["build_threads"] = min(summary[(ds, "shoplens")]["build"])
    out["qps_measure"] = "queries per CPU-second, single thread (shared machine)"
    print(json.dumps(out))
    sys.exit(0)

L = []
L.append("# Vector index benchmark: shoplens vs hnswlib vs FAISS\n")
L.append("Generated by `bench/index/run.sh%s` on %s. Machine: %s cores, **shared with other jobs** (`uptime`: %s), so search throughput is measured as queries per CPU-second of the single searching thread and build times are given as wall and CPU seconds. Same data, same parameters (M=16, efConstruction=128, inner product on L2-normalized vectors = cosine, k=10, one query at a time), peers and ours back to back in one run.\n" % (" --quick" if quick else "", datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"), ncpu, up.strip()))
L.append("Systems: **shoplens** (float32), **shoplens_int8** (graph traversal on int8 codes with the query quantized, exact float32 re-scoring of the ef candidates), **hnswlib** 0.6.2 (Debian libhnswlib-dev, `-O3 -march=native`), **FAISS** 1.7.3 (Debian libfaiss-dev, IndexHNSWFlat; IndexFlatIP for flat). Flat rows: shoplens flat index, hnswlib BruteforceSearch, FAISS IndexFlatIP.\n")
for ds in sorted({k[0] for k in summary}):
    some = next(v for k, v in summary.items() if k[0] == ds)
    L.append("## %s (n=%d, d=%d, descriptors from %s)\n" % (ds, some["n"], some["d"], some["source"]))
    L.append("| system | QPS @ R10=0.90 | QPS @ 0.95 | QPS @ 0.99 | build 1 thr (wall / CPU s) | build 2 thr (wall / CPU s) | memory MB | flat QPS (recall) |")
    L.append("|---|---|---|---|---|---|---|---|")
    for label in ("shoplens", "shoplens_int8", "hnswlib", "faiss"):
        e = summary.get((ds, label))
        if not e: continue
        b1 = e["build"].get(1); b2 = e["build"].get(2)
        fb = lambda b: "%.1f / %.1f" % b if b else "-"
        fl = "%.0f (%.3f)" % e["flat"] if "flat" in e else "-"
        L.append("| %s | %s | %s | %s | %s | %s | %.0f | %s |" % (label, fmt(e["at"][0.90]), fmt(e["at"][0.95]), fmt(e["at"][0.99]), fb(b1), fb(b2), e["mem_mb"], fl))
    L.append("")
    base = summary.get((ds, "shoplens"))
    for label in ("shoplens", "shoplens_int8"):
        e = summary.get((ds, label))
        for peer in ("hnswlib", "faiss"):
            p = summary.get((ds, peer))
            if e and p and e["at"][0.95] and p["at"][0.95]:
                L.append("- %s / %s QPS at recall 0.95: **%.2fx**" % (label, peer, e["at"][0.95] / p["at"][0.95]))
    for peer in ("hnswlib", "faiss"):
        p = summary.get((ds, peer))
        if base and p:
            for t in sorted(base["build"]):
                if t in p["build"]:
                    L.append("- build time shoplens / %s, %d thread(s): %.2fx wall, %.2fx CPU" % (peer, t, base["build"][t][0] / p["build"][t][0], base["build"][t][1] / p["build"][t][1]))
    L.append("\nSweep (ef: recall@10 / QPS):\n")
    for label in ("shoplens", "shoplens_int8", "hnswlib", "faiss"):
        e = summary.get((ds, label))
        if e:
            L.append("- %s: " % label + ", ".join("%d: %.3f / %.0f" % (p["ef"], p["recall"], p["qps"]) for p in e["points"]))
    L.append("")
open(md, "w").write("\n".join(L) + "\n")
print("wrote " + md)
EOF
