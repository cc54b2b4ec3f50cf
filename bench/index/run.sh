#!/usr/bin/env bash
# bench/index/run.sh - the vector index against hnswlib and FAISS, built and run in the same run.
#
# usage: bench/index/run.sh [BUILD_DIR] [--quick] [--json] [--data DIR] [--n N] [--n2 N2] [--nq NQ]
#                           [--report]
#   BUILD_DIR  a build with -DBUILD_BENCH=ON (default: build); `make bench` passes it
#   (no flag)  the full run of issue 3: (a) 1,000,000 local descriptors + 10,000 queries and
#              (b) 200,000 global descriptors + 10,000 queries; builds with 1 and 2 threads,
#              efConstruction 128. 41 minutes of benchmark runs on an idle 2-core machine
#              (bench/results/index.md, FAISS's 2-thread builds included); descriptors and ground truth are cached
#              in BUILD_DIR/bench-index/ (first run: about 5 more minutes)
#   --quick    reduced run (100k local descriptors, 1000 queries, efConstruction 64, builds with
#              2 threads): under a minute on an idle 2-core machine once the dataset is cached
#   --json     print one JSON object (shoplens_qps_at_095, hnswlib_qps_at_095, faiss_qps_at_095,
#              build times, ratios) instead of writing bench/results/index.md
#   --data     image folder (default: ../shared/data relative to the repository)
#   --n/--n2/--nq  override the sizes of dataset (a), dataset (b) and the query sets
#   --report   only rewrite the report / JSON from the last run's results
#   FAISS_T1_MAX=N  skip FAISS's single-threaded build when n*d > N (default 80,000,000: both
#              full-size sets; FAISS then searches on its 2-thread build; the table says so)
#   FAISS_MAX_N=N   skip FAISS altogether above N vectors (default 2,000,000: FAISS runs on both sets)
#
# Datasets (bench_index_descriptors, cached): (a) RootSIFT, d=128, from the project's SIFT
# (sl_sift_extract, default parameters) over the images in DATA; (b) d=512 VLAD (sl_vlad, k=4)
# of the RootSIFT descriptors inside random crops of the same images. Every 10th image (in a
# fixed pseudo-random order) is held out: queries come only from held-out images.
# Ground truth: exact inner product (bench_index gt). All systems: inner product on L2-normalized
# vectors (= cosine), M=16, k=10, single-query search on one thread; the shoplens build is
# add_batch + sl_index_compact (which renumbers slots in graph order).
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

# ---- datasets ----------------------------------------------------------------------------
# Made once by bench_index_descriptors (the project's SIFT + RootSIFT; VLAD of crops for the 512-d
# set) and cached under $work with their exact ground truth, so a re-run only builds and searches.
synth_data() {  # name n nq d
  local prefix="$work/$1" n=$2 nq=$3 d=$4
  "$ours" synth $((n + nq)) "$d" 200 1 "$prefix.all.fbin"
  /usr/bin/python3 - "$prefix" "$n" "$nq" <<'PYEOF'
import struct, sys
p, n, nq = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
b = open(p + ".all.fbin", "rb").read(); _, d = struct.unpack("<ii", b[:8]); row = 4 * d
open(p + ".base.fbin", "wb").write(struct.pack("<ii", n, d) + b[8:8 + n * row])
open(p + ".query.fbin", "wb").write(struct.pack("<ii", nq, d) + b[8 + n * row:8 + (n + nq) * row])
PYEOF
  rm -f "$prefix.all.fbin"
  echo "synthetic clustered Gaussian data (no image folder $data)" > "$prefix.source"
}
have() { [ -s "$work/$1.base.fbin" ] && [ -s "$work/$1.query.fbin" ] && [ -s "$work/$1.source" ]; }

M=16
EFC=128
if [ $quick = 1 ]; then
  EFC=64  # FAISS's build alone would take most of the minute at 128
  nl=${n_override:-100000}; nql=${nq_override:-1000}; ng=0; nqg=0
  threads_list="2"
  efs="10,20,30,40,60,80,96,120,160,240"
else
  nl=${n_override:-1000000}; nql=${nq_override:-10000}
  ng=${n2_override:-200000}; nqg=${nq_override:-10000}
  threads_list="1 2"
  efs="10,16,24,32,48,64,96,128,192,256,384,512"
fi
# FAISS 1.7.3's HNSW build is about 6x slower than ours (300k SIFT, 1 thread: 309 vs 52 CPU
# seconds). To keep the full run within ~45 minutes on 2 cores: above FAISS_T1_MAX vectors x
# dimensions its single-threaded build is skipped (it searches on its 2-thread build, which took
# 647 s at 1M SIFT); above FAISS_MAX_N vectors FAISS is skipped altogether. The table says what was skipped; raise the limits to run everything.
faiss_t1_max=${FAISS_T1_MAX:-80000000}
faiss_max_n=${FAISS_MAX_N:-2000000}
lname="local128_${nl}_${nql}"
gname=""; [ "$ng" -gt 0 ] && gname="global512_${ng}_${nqg}"
if [ $report_only = 0 ]; then
  if ! have "$lname" || { [ -n "$gname" ] && ! have "$gname"; }; then
    if [ -d "$data" ]; then
      [ -x "$build/bench_index_descriptors" ] || { echo "run.sh: $build/bench_index_descriptors missing" >&2; exit 1; }
      log "extracting descriptors with the project's SIFT from $data"
      if [ -n "$gname" ]; then
        "$build/bench_index_descriptors" "$data" "$(nproc)" 0 "$work/$lname" "$nl" "$nql" "$work/$gname" "$ng" "$nqg"
      else
        "$build/bench_index_descriptors" "$data" "$(nproc)" 0 "$work/$lname" "$nl" "$nql"
      fi
    else
      log "no image folder $data: synthetic clustered data instead"
      synth_data "$lname" "$nl" "$nql" 128
      [ -n "$gname" ] && synth_data "$gname" "$ng" "$nqg" 512
    fi
  fi
  for name in $lname $gname; do
    if [ ! -s "$work/$name.gt.ibin" ]; then
      log "ground truth for $name (exact search)"
      "$ours" gt "$work/$name.base.fbin" "$work/$name.query.fbin" 10 "$work/$name.gt.ibin"
    fi
  done
fi

results="$work/results.jsonl"
sets="$lname $gname"
[ $report_only = 1 ] && sets=""
[ $report_only = 1 ] || : > "$results"
t_start=$(date +%s)
first_t=$(echo $threads_list | cut -d' ' -f1)
last_t=$(echo $threads_list | awk '{print $NF}')
for name in $sets; do
  p="$work/$name"
  src=$(head -1 "$p.source")
  read -r n d < <(/usr/bin/python3 -c 'import struct,sys; print(*struct.unpack("<ii", open(sys.argv[1],"rb").read(8)))' "$p.base.fbin")
  for t in $threads_list; do
    # the sweep (and the flat scan) runs on the first thread count's build; later thread counts
    # only time the build. Peers and ours back to back, same data, same parameters.
    sweep=$efs; flat=1
    [ "$t" = "$first_t" ] || { sweep=""; flat=0; }
    for sys in shoplens shoplens_int8 hnswlib faiss; do
      tt=$t; sw=$sweep; fl=$flat
      if [ $sys = shoplens_int8 ]; then
        # int8 storage: build time is not compared; one build with the most threads, then the sweep
        [ "$t" = "$last_t" ] || continue
        sw=$efs; fl=0
      fi
      if [ $sys = faiss ] && [ "$n" -gt "$faiss_max_n" ]; then
        log "== $name faiss threads=$t: SKIPPED (n = $n > FAISS_MAX_N = $faiss_max_n)"
        echo "{\"dataset\":\"$name\",\"source\":\"$src\",\"label\":\"faiss\",\"skipped\":{\"threads\":$t,\"why\":\"FAISS skipped at this size to fit the time budget (n > FAISS_MAX_N = $faiss_max_n; its HNSW build is ~6x slower than ours)\"}}" >> "$results"
        continue
      fi
      if [ $sys = faiss ] && [ "$t" = 1 ] && [ $((n * d)) -gt "$faiss_t1_max" ]; then
        log "== $name faiss threads=1: SKIPPED (n*d = $((n * d)) > FAISS_T1_MAX = $faiss_t1_max); its sweep runs on the 2-thread build"
        echo "{\"dataset\":\"$name\",\"source\":\"$src\",\"label\":\"faiss\",\"skipped\":{\"threads\":1,\"why\":\"single-threaded FAISS build skipped to fit the time budget (n*d > $faiss_t1_max); FAISS searches ran on its 2-thread build\"}}" >> "$results"
        continue
      fi
      if [ $sys = faiss ] && [ "$t" != 1 ] && grep -q "\"dataset\":\"$name\".*\"label\":\"faiss\",\"skipped\"" "$results"; then
        sw=$efs; fl=1
      fi
      log "== $name $sys threads=$tt $( [ -n "$sw" ] && echo sweep || echo build-only ) ($(( $(date +%s) - t_start )) s so far)"
      case $sys in
        shoplens) out=$("$ours" run "$p.base.fbin" "$p.query.fbin" "$p.gt.ibin" $M $EFC "$tt" "$sw" $fl 0) ;;
        shoplens_int8) out=$("$ours" run "$p.base.fbin" "$p.query.fbin" "$p.gt.ibin" $M $EFC "$tt" "$sw" 0 2) ;;
        hnswlib) out=$("$work/hnswlib_bench" "$p.base.fbin" "$p.query.fbin" "$p.gt.ibin" $M $EFC "$tt" "$sw" $fl) ;;
        faiss) out=$(OMP_WAIT_POLICY=PASSIVE "$work/faiss_bench" "$p.base.fbin" "$p.query.fbin" "$p.gt.ibin" $M $EFC "$tt" "$sw" $fl) ;;
      esac
      echo "{\"dataset\":\"$name\",\"source\":\"$src\",\"label\":\"$sys\",\"run\":$out}" >> "$results"
    done
  done
done
[ $report_only = 1 ] || { log "benchmark runs took $(( $(date +%s) - t_start )) s"; uptime > "$work/uptime.txt"; }

/usr/bin/python3 - "$results" "$json" "$repo/bench/results/index.md" "$quick" "$(nproc)" "$(cat "$work/uptime.txt" 2>/dev/null || uptime)" "$EFC" <<'EOF'
import json, math, sys, datetime
path, as_json, md, quick, ncpu, up = sys.argv[1], sys.argv[2] == "1", sys.argv[3], sys.argv[4] == "1", sys.argv[5], sys.argv[6]
efc = int(sys.argv[7])
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
    key = (r["dataset"], r["label"])
    e = summary.setdefault(key, {"dataset": r["dataset"], "source": r["source"], "label": r["label"], "build": {}, "skipped": {}})
    if "skipped" in r:
        e["skipped"][r["skipped"]["threads"]] = r["skipped"]["why"]
        continue
    run = r["run"]
    e["build"][run["threads"]] = (run["build_s"], run["build_cpu_s"])
    if run["points"] or "n" not in e:
        e["n"], e["d"], e["mem_mb"] = run["n"], run["d"], run["mem_mb"]
    if run["points"]:
        e["at"] = {t: qps_at(run["points"], t) for t in (0.90, 0.95, 0.99)}
        e["points"] = run["points"]
        e["sweep_threads"] = run["threads"]
    if "flat_qps" in run:
        e["flat"] = (run["flat_qps"], run["flat_recall"])
for e in summary.values():
    e.setdefault("at", {0.90: None, 0.95: None, 0.99: None})
    e.setdefault("points", [])

def fmt(x, nd=0):
    return "n/a" if x is None else ("%.*f" % (nd, x))

if as_json:
    out = {}
    ds = sorted({k[0] for k in summary})[0]
    for label in ("shoplens", "shoplens_int8", "hnswlib", "faiss"):
        e = summary.get((ds, label))
        if not e or "n" not in e: continue
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
    out["uptime"] = up.strip()
    print(json.dumps(out))
    sys.exit(0)

L = []
L.append("# Vector index benchmark: shoplens vs hnswlib vs FAISS\n")
L.append("Generated by `bench/index/run.sh%s` on %s. Machine: %s cores (`uptime` at the end of the run: %s); search throughput is measured as queries per CPU-second of the single searching thread and build times are given as wall and CPU seconds. Same data, same parameters (M=16, efConstruction=%d, inner product on L2-normalized vectors = cosine, k=10, one query at a time), peers and ours back to back in one run.\n" % (" --quick" if quick else "", datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"), ncpu, up.strip(), efc))
L.append("Systems: **shoplens** (float32; build = add_batch + sl_index_compact, which renumbers the slots in breadth-first graph order), **shoplens_int8** (graph traversal on int8 codes with the query quantized, exact float32 re-scoring of the ef candidates), **hnswlib** 0.6.2 (Debian libhnswlib-dev, `-O3 -march=native`), **FAISS** 1.7.3 (Debian libfaiss-dev, IndexHNSWFlat; IndexFlatIP for flat). Flat rows: shoplens flat index, hnswlib BruteforceSearch, FAISS IndexFlatIP.\n")
for ds in sorted({k[0] for k in summary}):
    some = next(v for k, v in summary.items() if k[0] == ds and "n" in v)
    L.append("## %s (n=%d, d=%d)\n\nDescriptors: %s.\n" % (ds, some["n"], some["d"], some["source"]))
    L.append("| system | QPS @ R10=0.90 | QPS @ 0.95 | QPS @ 0.99 | build 1 thr (wall / CPU s) | build 2 thr (wall / CPU s) | memory MB | flat QPS (recall) |")
    L.append("|---|---|---|---|---|---|---|---|")
    for label in ("shoplens", "shoplens_int8", "hnswlib", "faiss"):
        e = summary.get((ds, label))
        if not e: continue
        if "n" not in e:
            L.append("| %s | skipped (budget) | - | - | - | - | - | - |" % label)
            continue
        b1 = e["build"].get(1); b2 = e["build"].get(2)
        fb = lambda b: "%.1f / %.1f" % b if b else "-"
        if 1 in e["skipped"]: b1 = None
        fl = "%.0f (%.3f)" % e["flat"] if "flat" in e else "-"
        c1 = "skipped (budget)" if 1 in e["skipped"] else fb(b1)
        if 2 in e["skipped"]: b2 = None
        L.append("| %s | %s | %s | %s | %s | %s | %.0f | %s |" % (label, fmt(e["at"][0.90]), fmt(e["at"][0.95]), fmt(e["at"][0.99]), c1, fb(b2), e["mem_mb"], fl))
    L.append("")
    for label in ("shoplens", "shoplens_int8", "hnswlib", "faiss"):
        e = summary.get((ds, label))
        if e and e["points"] and (len(e["build"]) > 1 or e["skipped"]):
            L.append("- %s: searched on its %d-thread build" % (label, e["sweep_threads"]))
        if e:
            for t, why in e["skipped"].items():
                L.append("- **%s, %d thread(s): %s**" % (label, t, why))
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
    for label in ("shoplens", "shoplens_int8"):
        e = summary.get((ds, label))
        d96 = [p["recall"] for p in e["points"] if p["ef"] == 96] if e else []
        if d96:
            L.append("- %s recall@10 at the default parameters (ef_search=96): %.4f" % (label, d96[0]))
    L.append("\nSweep (ef: recall@10 / QPS):\n")
    for label in ("shoplens", "shoplens_int8", "hnswlib", "faiss"):
        e = summary.get((ds, label))
        if e and e["points"]:
            L.append("- %s: " % label + ", ".join("%d: %.3f / %.0f" % (p["ef"], p["recall"], p["qps"]) for p in e["points"]))
    L.append("")
import os
os.makedirs(os.path.dirname(md), exist_ok=True)
open(md, "w").write("\n".join(L) + "\n")
print("wrote " + md)
EOF
