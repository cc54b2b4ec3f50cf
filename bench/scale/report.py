#!/usr/bin/env python3
"""bench/scale/report.py RESULTS.jsonl OUT.md - formats bench/scale/run.sh's measurements.

Every measurement line is a JSON object written by `bench_scale measure` (plus kind_recorded and
host_load added by run.sh); `grown_to` lines record how long growing the store took."""
import json
import os
import sys
import time

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
grows = [r for r in rows if "grown_to" in r]
meas = [r for r in rows if "store" in r]
out = []
w = out.append


def f1(x):
    return "%.1f" % x


def f2(x):
    return "%.2f" % x


w("# Scale benchmark (bench/scale): one node, 10^4 to 10^6 images")
w("")
w("Run: %s, %d cores (shared with other jobs: the `load` column is the host's 1-minute load average "
  "when the row was measured; wall-clock times above ~2 are partly other jobs' waiting, CPU times are "
  "robust)." % (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.cpu_count() or 0))
w("Command: `bench/scale/run.sh build ../shared/data` (environment: SL_SCALE_SIZES, SL_SCALE_DIR, "
  "SL_SCALE_SEARCHES, SL_SCALE_KEEP; bench/scale/run.sh and bench/scale.c say what each step does).")
w("")
w("Stores: the 5,227 real images of ../shared/data (grocery catalog + shop photos, COIL-100, "
  "clothing) described once with `shoplens add` (default features, d = 2856), then grown to N "
  "images by `bench_scale grow`: replicas of those descriptors with a seeded perturbation, written "
  "through `sl_engine_put_described` 1,000 products a call. Queries: the 296 shop photos of "
  "grocery/photos-val (never in a store). Candidate stage = `sl_engine_nearest`, k = 100 (the "
  "images a search verifies); its recall is against brute force over every stored float32 vector.")
w("")

if grows:
    w("## Building the stores")
    w("")
    w("| images | seconds to grow to it (from the previous size) | store on disk MB |")
    w("|---:|---:|---:|")
    for g in grows:
        w("| %d | %d | %d |" % (g["grown_to"], g["seconds"], g["disk_mb"]))
    w("")

kinds = {}
for r in meas:
    kinds.setdefault(r["images"], {})[r["index"]] = r
cross = [(n, k) for n, k in sorted(kinds.items()) if "flat" in k and "hnsw" in k]
if cross:
    w("## Exact scan vs HNSW: the crossover (candidate stage, no filter, k = 100)")
    w("")
    w("Flat = exact int8 scan with the 4-bit prefilter, best 200 re-scored in float32 in memory; HNSW = "
      "int8 codes only, M 32, ef = the engine default (SL_ENGINE_HNSW_EF_DEFAULT), best 1.5 k "
      "re-scored from the store's float32 vectors. Per query, "
      "296 queries, after one warm-up pass.")
    w("")
    w("| images | flat CPU p50 ms | flat CPU p99 ms | flat wall p50 ms | HNSW CPU p50 ms | HNSW CPU p99 ms | "
      "HNSW wall p50 ms | load |")
    w("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, k in cross:
        a, b = k["flat"]["candidates"][0], k["hnsw"]["candidates"][0]
        w("| %d | %s | %s | %s | %s | %s | %s | %s |" % (n, f2(a["cpu_p50_ms"]), f2(a["cpu_p99_ms"]), f2(a["p50_ms"]),
                                                          f2(b["cpu_p50_ms"]), f2(b["cpu_p99_ms"]), f2(b["p50_ms"]),
                                                          k["hnsw"].get("host_load", "?")))
    w("")

full = [r for r in meas if any("recall_mean" in c for c in r["candidates"])]
if full:
    w("## Open time, memory, disk")
    w("")
    w("| images | index | open s | RSS after open MB (anon + file) | RSS at the end MB (anon + file) | peak RSS MB | "
      "catalog.sqlite MB | index.bin MB | disk bytes / image |")
    w("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in full:
        o, e, d = r["rss_open_mb"], r["rss_end_mb"], r["disk_mb"]
        per = (d["sqlite"] + d["index"] + d["features"]) * 1048576.0 / r["images"]
        w("| %d | %s | %s | %d (%d + %d) | %d (%d + %d) | %d | %s | %s | %d |" % (
            r["images"], r["index"], f2(r["open_s"]), o["total"], o["anon"], o["file"], e["total"], e["anon"], e["file"],
            e["peak"], f1(d["sqlite"]), f1(d["index"]), per))
    w("")
    w("## Candidate stage: recall@100 against brute force, and latency, with filters")
    w("")
    w("| images | filter | share of images | recall@100 mean | recall@100 worst query | CPU p50 ms | CPU p99 ms | "
      "wall p50 ms | wall p99 ms |")
    w("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in full:
        for c in r["candidates"]:
            w("| %d | %s | %.4f | %.4f | %.2f | %s | %s | %s | %s |" % (
                r["images"], c["filter"], c["selectivity"], c["recall_mean"], c["recall_min"], f2(c["cpu_p50_ms"]),
                f2(c["cpu_p99_ms"]), f2(c["p50_ms"]), f2(c["p99_ms"])))
    w("")
    sweeps = [r for r in full if r.get("ef_sweep")]
    if sweeps:
        w("## HNSW: recall@100 and time of the candidate stage against ef (no filter)")
        w("")
        w("| images | ef | recall@100 mean | recall@100 worst query | CPU p50 ms | CPU p99 ms |")
        w("|---:|---:|---:|---:|---:|---:|")
        for r in sweeps:
            for x in r["ef_sweep"]:
                w("| %d | %d | %.4f | %.2f | %s | %s |" % (r["images"], x["ef"], x["recall_mean"], x["recall_min"],
                                                          f2(x["cpu_p50_ms"]), f2(x["cpu_p99_ms"])))
        w("")
    w("## End-to-end searches (sl_engine_search_bytes, k = 10)")
    w("")
    w("First pass: every query once, right after the open - most candidates' rows (vectors, local features) "
      "are read from disk. Then `clients` threads search the queries round-robin.")
    w("")
    w("| images | run | clients | searches | p50 ms | p99 ms | searches/s | CPU ms / search | load |")
    w("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in full:
        runs = ([("first pass", r["first_pass"])] if "first_pass" in r else []) + \
               [("after it", s) for s in r.get("searches", [])]
        for name, s in runs:
            w("| %d | %s | %d | %d | %s | %s | %s | %s | %s |" % (r["images"], name, s["clients"], s["searches"],
                                                                   f1(s["p50_ms"]), f1(s["p99_ms"]), f2(s["per_s"]),
                                                                   f1(s["cpu_ms"]), r.get("host_load", "?")))
    w("")

open(sys.argv[2], "w").write("\n".join(out) + "\n")
