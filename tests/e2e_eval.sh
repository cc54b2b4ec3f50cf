#!/usr/bin/env bash
# e2e_eval.sh - `shoplens eval` on a hand-made ImageFolder whose metrics are known exactly:
# three labels with two byte-identical images each, leave-one-out, k = 2. Every query's only
# relevant image is its copy, which must rank first: mAP = P@1 = hit@1 = R@2 = 1, P@2 = 0.5,
# F1@2 = 2/3, hits@4 = 1. Also: the JSON keys, a query folder run, the HTML report.
. "$(dirname "$0")/product_lib.sh"

"$bin" sample catalog "$tmp/cat" --products 3 --views 1 --photos 1 --size 96 --seed 11 >/dev/null
for p in P000000 P000001 P000002; do
  mkdir -p "$tmp/g/$p"
  cp "$tmp/cat/images/${p}_0.jpg" "$tmp/g/$p/a.jpg"
  cp "$tmp/cat/images/${p}_0.jpg" "$tmp/g/$p/b.jpg"
done
"$bin" eval --gallery "$tmp/g" --features color -k 2 --json --report "$tmp/r.html" > "$tmp/m.json"
"$py" - "$tmp/m.json" <<'PY' || fail "metrics: $(cat "$tmp/m.json")"
import json, sys
d = json.load(open(sys.argv[1]))
keys = ["queries", "gallery", "map", "precision@1", "precision@k", "recall@k", "hit@1", "hit@5",
        "hit@k", "f1@k", "hits@4", "index_images_per_s", "query_ms_p50", "query_ms_p99"]
assert all(k in d for k in keys), [k for k in keys if k not in d]
assert d["queries"] == 6 and d["gallery"] == 6 and d["k"] == 2
close = lambda a, b: abs(a - b) < 1e-6
assert close(d["map"], 1) and close(d["precision@1"], 1) and close(d["hit@1"], 1) and close(d["hit@5"], 1)
assert close(d["recall@k"], 1) and close(d["precision@k"], 0.5) and close(d["f1@k"], 2 / 3)
assert close(d["hits@4"], 1) and d["index_images_per_s"] > 0 and d["query_ms_p99"] >= d["query_ms_p50"] > 0
PY
grep -q "<polyline[^>]*points=\"[0-9]" "$tmp/r.html" || fail "report: no PR curve"
grep -q "data:image/jpeg;base64," "$tmp/r.html" || fail "report: no thumbnails"
grep -q "#2e7d32" "$tmp/r.html" && grep -q "#c62828" "$tmp/r.html" || fail "report: green and red outlines"
grep -q "http" "$tmp/r.html" && fail "report must be self-contained"
# queries from another folder: the shopper photos of the same products
"$bin" eval --gallery "$tmp/g" --queries "$tmp/cat/queries" --features color --json > "$tmp/q.json"
[ "$(j "$tmp/q.json" 'd["queries"], d["gallery"]')" = "(3, 6)" ] || fail "query folder run"
set +e
"$bin" eval --gallery "$tmp/none" >/dev/null 2>&1; [ $? -eq 1 ] || fail "missing gallery must exit 1"
"$bin" eval >/dev/null 2>&1; [ $? -eq 2 ] || fail "no gallery must be a usage error"
set -e
echo "e2e_eval: ok"
