#!/usr/bin/env bash
# e2e_cli.sh - the catalog commands end to end on a generated catalog: init, add (upsert,
# multi-image products, CSV and JSONL), search with filters, similar, classify, check, dedup,
# remove, sync, info; exit codes and the --json shapes documented in docs/cli.md.
. "$(dirname "$0")/product_lib.sh"
expect_rc() { # expect_rc CODE command...
  local want=$1; shift
  set +e; "$@" >"$tmp/out" 2>"$tmp/err"; local rc=$?; set -e
  [ "$rc" -eq "$want" ] || { cat "$tmp/err" >&2; fail "'$*' exited $rc, expected $want"; }
}

cat=$tmp/cat
st=$tmp/store
export SHOPLENS_STORE=$st
"$bin" sample catalog "$cat" --products 12 --views 2 --photos 1 --size 128 --seed 3 >/dev/null

# ---- init / empty store -------------------------------------------------------------------
expect_rc 1 "$bin" info                       # no store yet
grep -q "shoplens init" "$tmp/err" || fail "missing-store message should suggest init"
"$bin" init --features color --json > "$tmp/init.json"
[ "$(j "$tmp/init.json" 'd["products"]')" = 0 ] || fail "init products"
expect_rc 1 "$bin" init --features vlad       # the spec of a store is fixed
grep -q "fixed" "$tmp/err" || fail "spec change message"
"$bin" search "$cat/queries/P000001/0.jpg" --json > "$tmp/empty.json"
[ "$(j "$tmp/empty.json" 'len(d["results"])')" = 0 ] || fail "empty store search"

# ---- add ------------------------------------------------------------------------------------
"$bin" add "$cat/catalog.csv" --json --jobs 2 > "$tmp/add.json"
[ "$(j "$tmp/add.json" 'd["added"], d["updated"], d["skipped"], d["failed"], d["rows"], d["products"]')" = "(12, 0, 0, 0, 24, 12)" ] \
  || fail "first add: $(cat "$tmp/add.json")"
"$bin" info --json > "$tmp/info.json"
[ "$(j "$tmp/info.json" 'd["products"], d["images"], d["indexed"]')" = "(12, 24, 24)" ] || fail "info counts"
[ "$(j "$tmp/info.json" 'sorted(d["bytes"].keys())')" = "['catalog', 'features', 'images', 'index', 'total']" ] || fail "info bytes keys"
[ "$(j "$tmp/info.json" 'd["features"].startswith("color")')" = True ] || fail "info features"
# unchanged feed: everything skipped, nothing extracted
"$bin" add "$cat/catalog.csv" --json > "$tmp/add2.json"
[ "$(j "$tmp/add2.json" 'd["skipped"], d["added"], d["images_extracted"]')" = "(12, 0, 0)" ] || fail "re-add must skip"

# ---- search: a catalog image finds its product first; JSON shape ----------------------------
"$bin" search "$cat/images/P000005_1.jpg" -k 3 --json > "$tmp/s.json"
[ "$(j "$tmp/s.json" 'd["results"][0]["product_id"]')" = P000005 ] || fail "search top-1"
[ "$(j "$tmp/s.json" 'd["results"][0]["image"].endswith("P000005_1.jpg")')" = True ] || fail "best image of a multi-image product"
[ "$(j "$tmp/s.json" 'sorted(d["results"][0].keys())')" = "['category', 'confidence', 'currency', 'image', 'image_id', 'inliers', 'match', 'price', 'product_id', 'rank', 'score', 'title', 'url']" ] || fail "search keys"
[ "$(j "$tmp/s.json" 'all(-1 <= r["score"] <= 1 and 0 <= r["confidence"] <= 1 and r["match"] in (True, False) for r in d["results"])')" = True ] || fail "search score/confidence ranges"
[ "$(j "$tmp/s.json" 'len(d["results"]) == 3 and len(set(r["product_id"] for r in d["results"])) == 3')" = True ] || fail "k distinct products"
[ "$(j "$tmp/s.json" 'd["results"][0]["score"] >= d["results"][1]["score"] >= d["results"][2]["score"]')" = True ] || fail "sorted scores"
"$bin" search "$cat/images/P000005_1.jpg" -k 2 | grep -q P000005 || fail "text table"

# ---- filters inside the search -------------------------------------------------------------
cat5=$(j "$tmp/s.json" 'd["results"][0]["category"]')
"$bin" search "$cat/images/P000005_1.jpg" -k 12 --category "$cat5" --json > "$tmp/f.json"
[ "$(j "$tmp/f.json" 'all(r["category"] == "'"$cat5"'" for r in d["results"]) and len(d["results"]) >= 1')" = True ] || fail "category filter"
"$bin" search "$cat/images/P000005_1.jpg" -k 12 --max-price 40 --json > "$tmp/f.json"
n_cheap=$(awk -F, 'NR>1 {print $1","$NF}' "$cat/catalog.csv" >/dev/null; "$py" -c '
import csv,sys
rows=list(csv.DictReader(open(sys.argv[1])))
print(len({r["product_id"] for r in rows if float(r["price"]) <= 40}))' "$cat/catalog.csv")
[ "$(j "$tmp/f.json" 'all(r["price"] <= 40 for r in d["results"])')" = True ] || fail "max-price filter"
[ "$(j "$tmp/f.json" 'len(d["results"])')" = "$n_cheap" ] || fail "filter must return every passing product ($n_cheap)"
"$bin" search "$cat/images/P000005_1.jpg" -k 12 --min-price 40 --max-price 100 --json > "$tmp/f.json"
[ "$(j "$tmp/f.json" 'all(40 <= r["price"] <= 100 for r in d["results"])')" = True ] || fail "price range"
word=$("$py" -c 'import csv,sys; r=list(csv.DictReader(open(sys.argv[1]))); print(r[6]["title"].split()[0])' "$cat/catalog.csv")
"$bin" search "$cat/images/P000005_1.jpg" -k 12 --text "$word" --json > "$tmp/t.json"
want=$("$py" -c '
import csv,re,sys
w=sys.argv[2].lower()
rows=list(csv.DictReader(open(sys.argv[1])))
print(sorted({r["product_id"] for r in rows if w in re.findall(r"\w+", (r["title"]+" "+r["description"]).lower())}))' "$cat/catalog.csv" "$word")
[ "$(j "$tmp/t.json" 'sorted(r["product_id"] for r in d["results"])')" = "$want" ] || fail "text restrict: $want"
"$bin" search "$cat/images/P000005_1.jpg" -k 12 --text "$word" --text-mode boost --json > "$tmp/tb.json"
[ "$(j "$tmp/tb.json" 'len(d["results"])')" = 12 ] || fail "text boost keeps all products"
"$bin" search "$cat/images/P000005_1.jpg" --text "zzznomatch" --json > "$tmp/t0.json"
[ "$(j "$tmp/t0.json" 'len(d["results"])')" = 0 ] || fail "no text match"
expect_rc 2 "$bin" search "$cat/images/P000005_1.jpg" --min-price 10 --max-price 5
expect_rc 2 "$bin" search "$cat/images/P000005_1.jpg" -k 0
expect_rc 2 "$bin" search
expect_rc 2 "$bin" search "$cat/images/P000005_1.jpg" --bogus
# --ef (HNSW candidate list length): accepted on a flat store (ignored: same answer), range named
"$bin" search "$cat/images/P000005_1.jpg" -k 12 --ef 16 --json > "$tmp/ef.json"
"$bin" search "$cat/images/P000005_1.jpg" -k 12 --json > "$tmp/ef0.json"
[ "$(j "$tmp/ef.json" '[r["product_id"] for r in d["results"]]')" = "$(j "$tmp/ef0.json" '[r["product_id"] for r in d["results"]]')" ] || fail "--ef on a flat store"
expect_rc 2 "$bin" search "$cat/images/P000005_1.jpg" --ef 15
grep -q "bad value '15' for --ef: must be an integer in 16..4096" "$tmp/err" || fail "--ef range: $(cat "$tmp/err")"
expect_rc 2 "$bin" similar P000005 --ef 4097
expect_rc 2 "$bin" serve --ef 8
grep -q "bad value '8' for --ef: must be an integer in 16..4096" "$tmp/err" || fail "serve --ef range: $(cat "$tmp/err")"
expect_rc 2 "$bin" serve --store postgresql:///nowhere --router --ef 300 # a router has no index
grep -q "search nodes" "$tmp/err" || fail "router --ef: $(cat "$tmp/err")"
printf 'not an image' > "$tmp/bad.jpg"
expect_rc 1 "$bin" search "$tmp/bad.jpg"

# ---- similar / classify / check -----------------------------------------------------------------
"$bin" similar P000002 -k 4 --json > "$tmp/sim.json"
[ "$(j "$tmp/sim.json" 'len(d["results"]) == 4 and "P000002" not in [r["product_id"] for r in d["results"]]')" = True ] || fail "similar excludes itself"
expect_rc 1 "$bin" similar NOPE
"$bin" classify "$cat/images/P000005_0.jpg" --json > "$tmp/c.json"
[ "$(j "$tmp/c.json" 'd["category"]')" = "$cat5" ] || fail "classify"
[ "$(j "$tmp/c.json" '0 < d["confidence"] <= 1 and abs(sum(v["weight"] for v in d["votes"]) - 1) < 1e-6')" = True ] || fail "classify votes"
[ "$(j "$tmp/sim.json" 'all(-1 <= r["score"] <= 1 and 0 <= r["confidence"] <= 1 for r in d["results"])')" = True ] || fail "similar ranges"
expect_rc 0 "$bin" check P000005 "$cat/images/P000005_0.jpg" --json
[ "$(j "$tmp/out" 'd["match"]')" = True ] || fail "check yes"
[ "$(j "$tmp/out" 'sorted(d.keys())')" = "['confidence', 'image', 'image_id', 'inliers', 'match', 'product_id', 'score', 'threshold']" ] || fail "check keys"
[ "$(j "$tmp/out" '0 <= d["confidence"] <= 1 and d["match"] == (d["confidence"] >= d["threshold"])')" = True ] || fail "check confidence"
expect_rc 3 "$bin" check P000006 "$cat/images/P000005_0.jpg" --threshold 0.999
expect_rc 1 "$bin" check NOPE "$cat/images/P000005_0.jpg"
expect_rc 2 "$bin" check P000005 "$cat/images/P000005_0.jpg" --threshold 1.5   # a confidence: 0..1

# ---- calibrated confidence: the store calibrated itself at the first add (12 products) -----------
"$bin" info --json > "$tmp/info.json"
[ "$(j "$tmp/info.json" 'd["calibration"]["source"], d["calibration"]["products"]')" = "('catalog', 12)" ] || fail "info calibration: $(cat "$tmp/info.json")"
[ "$(j "$tmp/info.json" 'all(0 < d["calibration"][m]["threshold"] < 1 and d["calibration"][m]["negatives"] >= 50 for m in ("check", "search"))')" = True ] || fail "info calibration maps"
"$bin" info | grep -q "^calibration *from .* shelf photos made from catalog images of 12 products" || fail "info calibration text"
# from pseudo shopper photos: the match score alone (margin weight 0) and the false accept rule
[ "$(j "$tmp/info.json" '[(d["calibration"][m]["margin_weight"], "precision_target" in d["calibration"][m]) for m in ("check", "search")]')" = "[(0.0, False), (0.0, False)]" ] || fail "catalog calibration uses the margin: $(cat "$tmp/info.json")"
# check many: an ImageFolder of photos, each against its product; the same photos against others
mkdir -p "$tmp/rev/P000001" "$tmp/rev/P000002"
cp "$cat/queries/P000001/0.jpg" "$tmp/rev/P000001/a.jpg"
cp "$cat/queries/P000002/0.jpg" "$tmp/rev/P000002/b.jpg"
set +e; "$bin" check --photos "$tmp/rev" --json > "$tmp/cb.json"; rc=$?; set -e
[ "$rc" -eq 0 ] || [ "$rc" -eq 3 ] || fail "check --photos exit $rc"
[ "$(j "$tmp/cb.json" 'd["accepted"] + d["rejected"], d["failed"], len(d["results"])')" = "(2, 0, 2)" ] || fail "check --photos: $(cat "$tmp/cb.json")"
printf 'photo,product_id\n%s,P000001\n%s,NOPE\n' "$tmp/rev/P000001/a.jpg" "$tmp/rev/P000001/a.jpg" > "$tmp/cb.csv"
expect_rc 1 "$bin" check --photos "$tmp/cb.csv" --json   # an unknown product: reported, exit 1
[ "$(j "$tmp/out" '[r.get("status", "ok") for r in d["results"]]')" = "['ok', 'SL_E_NOT_FOUND']" ] || fail "check --photos row status: $(cat "$tmp/out")"
# search several images: one JSON line each
"$bin" search "$cat/queries/P000001/0.jpg" "$cat/queries/P000002/0.jpg" -k 2 --json > "$tmp/multi.jsonl"
[ "$(wc -l < "$tmp/multi.jsonl")" -eq 2 ] || fail "search of two images: two lines"
"$py" -c 'import json,sys; [json.loads(l)["results"] for l in open(sys.argv[1])]' "$tmp/multi.jsonl" || fail "search JSON lines"
# calibrate from labelled photos: source photos, same answer for the same seed
"$bin" calibrate --photos "$tmp/rev" --json > /dev/null 2>"$tmp/err" && fail "two photos are too few to calibrate from"
grep -q "genuine pairs, at least 20" "$tmp/err" || fail "calibrate: too few photos message"
"$bin" calibrate --json --seed 4 > "$tmp/cal1.json"
"$bin" calibrate --json --seed 4 > "$tmp/cal2.json"
[ "$(j "$tmp/cal1.json" 'd["augmented"], d["calibration"]["source"]')" = "(True, 'catalog')" ] || fail "calibrate report"
[ "$(j "$tmp/cal1.json" 'd["calibration"]')" = "$(j "$tmp/cal2.json" 'd["calibration"]')" ] || fail "calibrate is not deterministic"
expect_rc 2 "$bin" calibrate --far 0.9

# ---- updates: metadata change, image change, JSONL feed -----------------------------------------
sed 's/^P000003,\(images\/P000003_0.jpg\),[^,]*,/P000003,\1,Renamed thing,/' "$cat/catalog.csv" > "$cat/upd.csv"
"$bin" add "$cat/upd.csv" --json > "$tmp/u.json"
[ "$(j "$tmp/u.json" 'd["updated"], d["skipped"], d["images_extracted"]')" = "(1, 11, 0)" ] || fail "metadata update: $(cat "$tmp/u.json")"
"$bin" search "$cat/images/P000003_0.jpg" -k 1 --json | grep -q "Renamed thing" || fail "updated title"
cp "$cat/images/P000000_0.jpg" "$cat/images/P000003_1.jpg"   # P000003's second image changes
"$bin" add "$cat/upd.csv" --json > "$tmp/u2.json"
[ "$(j "$tmp/u2.json" 'd["updated"], d["images_extracted"]')" = "(1, 1)" ] || fail "image update: $(cat "$tmp/u2.json")"
# the copy is now a duplicate listing of P000000
"$bin" dedup --json > "$tmp/d.json"
[ "$(j "$tmp/d.json" 'any(sorted({i["product_id"] for i in g["images"]}) == ["P000000", "P000003"] for g in d["groups"])')" = True ] || fail "dedup group"
printf '{"product_id": "J1", "image": "images/P000007_0.jpg", "title": "From JSONL", "category": "misc", "price": 5, "color": "red"}\n' > "$cat/feed.jsonl"
"$bin" add "$cat/feed.jsonl" --json > "$tmp/jl.json"
[ "$(j "$tmp/jl.json" 'd["added"]')" = 1 ] || fail "jsonl add"

# ---- remove / sync ------------------------------------------------------------------------------
"$bin" remove P000004 --json > "$tmp/r.json"
[ "$(j "$tmp/r.json" 'd["removed"], d["not_found"]')" = "(['P000004'], [])" ] || fail "remove json"
"$bin" search "$cat/images/P000004_0.jpg" -k 12 --json | grep -q '"P000004"' && fail "removed product still found"
expect_rc 3 "$bin" remove P000004
"$bin" info --json > "$tmp/i2.json"
[ "$(j "$tmp/i2.json" 'd["products"], d["images"]')" = "(12, 23)" ] || fail "counts after remove: $(cat "$tmp/i2.json")"
grep -v '^P000001,\|^P000002,' "$cat/upd.csv" > "$cat/sync.csv"
"$bin" sync "$cat/sync.csv" --max-removals 3 --json > "$tmp/sy.json"   # 3 of 12: above the default 10%
[ "$(j "$tmp/sy.json" 'd["removed"], d["added"]')" = "(3, 1)" ] || fail "sync: $(cat "$tmp/sy.json")"   # P1, P2, J1 out; P4 back
"$bin" info --json > "$tmp/i3.json"
[ "$(j "$tmp/i3.json" 'd["products"]')" = 10 ] || fail "sync count"

# ---- retrain keeps the store searchable -------------------------------------------------------------
"$bin" retrain --json > "$tmp/rt.json"
[ "$(j "$tmp/rt.json" 'd["images"]')" = "$(j "$tmp/i3.json" 'd["images"]')" ] || fail "retrain count"
"$bin" search "$cat/images/P000005_1.jpg" -k 1 --json | grep -q '"P000005"' || fail "search after retrain"

# ---- search a region of the photo ----------------------------------------------------------------
"$bin" search "$cat/images/P000005_1.jpg" -k 1 --region 8,8,100,100 --json | grep -q '"P000005"' || fail "region search"
expect_rc 1 "$bin" search "$cat/images/P000005_1.jpg" --region 100,100,100,100
grep -q "128x128 image" "$tmp/err" || fail "a region outside the photo should name its size: $(cat "$tmp/err")"
expect_rc 2 "$bin" search "$cat/images/P000005_1.jpg" --region 1,2,3
grep -q "x, y from the photo's top-left corner" "$tmp/err" || fail "bad --region message: $(cat "$tmp/err")"
expect_rc 2 "$bin" similar P000005 --region 0,0,20,20

# ---- an HNSW store answers like the exact one ------------------------------------------------------
"$bin" init --store "$tmp/hnsw" --features color --index hnsw >/dev/null
"$bin" add "$cat/catalog.csv" --store "$tmp/hnsw" --quiet >/dev/null
"$bin" info --store "$tmp/hnsw" --json > "$tmp/h.json"
[ "$(j "$tmp/h.json" 'd["index"], d["indexed"]')" = "('hnsw', 24)" ] || fail "hnsw info: $(cat "$tmp/h.json")"
"$bin" search "$cat/images/P000009_0.jpg" --store "$tmp/hnsw" -k 1 --category "$(j "$tmp/s.json" 'd["results"][0]["category"]')" --json > /dev/null
"$bin" search "$cat/images/P000009_0.jpg" --store "$tmp/hnsw" -k 1 --json | grep -q '"P000009"' || fail "hnsw search"
expect_rc 1 "$bin" init --store "$tmp/bad-index" --index kd-tree

# ---- a store of another version is refused -------------------------------------------------------
if command -v sqlite3 >/dev/null; then
  cp -r "$st" "$tmp/old"
  sqlite3 "$tmp/old/catalog.sqlite" "UPDATE meta SET value='99' WHERE key='schema_version'"
  expect_rc 1 "$bin" info --store "$tmp/old"
  grep -q "SL_E_VERSION" "$tmp/err" && grep -q newer "$tmp/err" || fail "version message: $(cat "$tmp/err")"
fi
# ---- a store named by a relative directory: its image copies are found ----------------------
# (they were looked for under DIR/DIR/images: verify reported every file missing and the first
# add's calibration found "0 genuine pairs")
( cd "$tmp" && "$bin" init --store relstore --features color >/dev/null &&
  "$bin" add "$cat/catalog.csv" --store relstore --quiet 2> "$tmp/rel.err" &&
  "$bin" verify --store relstore --json > "$tmp/rel.json" &&
  "$bin" info --store relstore --json > "$tmp/relinfo.json" ) || fail "relative store: $(cat "$tmp/rel.err" "$tmp/rel.json")"
[ "$(j "$tmp/rel.json" 'd["ok"], d["problems"], d["files_checked"]')" = "(True, 0, 24)" ] || fail "verify of a relative store: $(cat "$tmp/rel.json")"
[ "$(j "$tmp/relinfo.json" 'd["calibration"]["source"]')" = catalog ] || fail "relative store not calibrated: $(cat "$tmp/rel.err")"
echo "e2e_cli: ok"
