#!/usr/bin/env bash
# e2e_inspect.sh - `shoplens sample` and `shoplens inspect` end to end: files written, catalog.csv
# shape, exit codes (0 all loaded, 3 some failed, 1 none, 2 usage) and the --json shape.
set -euo pipefail
bin=${SHOPLENS_BIN:?SHOPLENS_BIN not set}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# sample catalog: 4 products x 2 views, 1 photo each
"$bin" sample catalog "$tmp/cat" --products 4 --views 2 --photos 1 --size 128 --seed 9 >/dev/null
[ "$(head -1 "$tmp/cat/catalog.csv")" = "product_id,image,title,category,price,description,url" ] || fail "csv header"
[ "$(wc -l < "$tmp/cat/catalog.csv")" -eq 9 ] || fail "csv rows"
[ -f "$tmp/cat/images/P000003_1.jpg" ] || fail "catalog image missing"
[ -f "$tmp/cat/queries/P000002/0.jpg" ] || fail "shopper photo missing"
# deterministic: a second run writes identical files
"$bin" sample catalog "$tmp/cat2" --products 4 --views 2 --photos 1 --size 128 --seed 9 >/dev/null
cmp -s "$tmp/cat/catalog.csv" "$tmp/cat2/catalog.csv" || fail "csv not deterministic"
cmp -s "$tmp/cat/queries/P000001/0.jpg" "$tmp/cat2/queries/P000001/0.jpg" || fail "photo not deterministic"
"$bin" sample image --product 2 --view 0 --size 96 -o "$tmp/one.png"
"$bin" sample photo --product 2 --variant 3 --size 96 -o "$tmp/photo.jpg"
set +e
"$bin" sample image --product 2 >/dev/null 2>&1; [ $? -eq 2 ] || fail "missing -o must be a usage error"
"$bin" sample catalog "$tmp/x" --products 0 >/dev/null 2>&1; [ $? -eq 2 ] || fail "--products 0 must be a usage error"
set -e

# inspect: all good -> 0, with sizes
out=$("$bin" inspect "$tmp/one.png" "$tmp/cat/images/P000000_0.jpg")
echo "$out" | grep -q "png 96x96" || fail "inspect text: $out"
"$bin" inspect --json "$tmp/one.png" --max-side 50 > "$tmp/one.json"
: > "$tmp/empty.jpg"
printf '%%PDF-1.4\n' > "$tmp/doc.pdf"
head -c 300 "$tmp/photo.jpg" > "$tmp/cut.jpg"
set +e
"$bin" inspect "$tmp/one.png" "$tmp/empty.jpg" >/dev/null; rc=$?
[ $rc -eq 3 ] || fail "partial failure must exit 3, got $rc"
"$bin" inspect --json "$tmp/empty.jpg" "$tmp/doc.pdf" "$tmp/cut.jpg" "$tmp/missing.png" > "$tmp/bad.json"; rc=$?
[ $rc -eq 1 ] || fail "all failed must exit 1, got $rc"
"$bin" inspect >/dev/null 2>&1; [ $? -eq 2 ] || fail "no file must be a usage error"
set -e
/usr/bin/python3 - "$tmp/one.json" "$tmp/bad.json" <<'PY' || fail "json shape"
import json, sys
one = json.load(open(sys.argv[1]))
assert len(one) == 1 and one[0]["ok"] is True, one
o = one[0]
assert o["format"] == "png" and o["width"] == 96 and o["height"] == 96, o
assert o["out_width"] == 50 and o["out_height"] == 50 and o["channels"] == 3, o
assert o["orientation"] == 1 and o["bits"] == 8, o
bad = json.load(open(sys.argv[2]))
assert [b["status"] for b in bad] == ["SL_E_CORRUPT", "SL_E_UNSUPPORTED", "SL_E_CORRUPT", "SL_E_NOT_FOUND"], bad
assert bad[1]["format"] == "pdf" and "pdf" in bad[1]["error"], bad[1]
assert all(b["ok"] is False and b["error"] for b in bad), bad
PY
echo "e2e_inspect: ok"
