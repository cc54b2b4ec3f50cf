#!/usr/bin/env bash
# e2e_train.sh - `shoplens train` and `shoplens eval --train` on generated products and shopper
# photos:
#  - train from an ImageFolder and from a CSV: counts, skipped photos (unknown product, missing
#    file) listed with exit 3, a new features version carrying the head, search still works and
#    finds held-out photos at least as often as before; a product added after training is found;
#    the head and its calibration are one features version, the calibration fitted on the seeded
#    photos of whole products held out of a stand-in head (6 products, 30 of 70 photos), none held
#    out below 60 photos;
#  - the same seed gives the same features file; training from the catalog alone works;
#  - kill -9 during train leaves a store that opens and searches, on the old features or on the
#    new head with its calibration (never a half-written file), and a re-run gives the reference
#    result;
#  - option errors exit 2, a store without catalog exits 1 with a message;
#  - eval --train DIR / --train-catalog report trained_photos;
#  - references: train keeps the photos as references (none with --no-references, the same head),
#    a training photo finds its product first through its reference, results never show a
#    photo, a product without photos is not pushed out by the others' references, remove deletes
#    a product's references, retrain drops them.
. "$(dirname "$0")/product_lib.sh"

cat=$tmp/cat
"$bin" sample catalog "$cat" --products 14 --views 1 --photos 7 --size 160 --seed 5 >/dev/null
# photos 0..4 of each product train, 5..6 are held out
mkdir -p "$tmp/train" "$tmp/held"
for d in "$cat"/queries/*/; do
  p=$(basename "$d")
  mkdir -p "$tmp/train/$p" "$tmp/held/$p"
  for k in 0 1 2 3 4; do cp "$d/$k.jpg" "$tmp/train/$p/"; done
  for k in 5 6; do cp "$d/$k.jpg" "$tmp/held/$p/"; done
done
s=$tmp/store
spec="color:bins=8x2x2,grid=1"   # 34 dimensions: quick to train, also under the sanitizers
"$bin" add "$cat/catalog.csv" --store "$s" --features "$spec" --quiet >/dev/null

hits() { # hits STORE: held-out photos whose top result is their product
  local n=0
  for f in "$tmp"/held/*/*.jpg; do
    p=$(basename "$(dirname "$f")")
    top=$("$bin" search "$f" --store "$1" -k 1 --json | "$py" -c 'import json,sys; print(json.load(sys.stdin)["results"][0]["product_id"])')
    [ "$top" = "$p" ] && n=$((n + 1))
  done
  echo "$n"
}
before=$(hits "$s")
cp -r "$s" "$tmp/untrained"

# ---- train from an ImageFolder ------------------------------------------------------------------
"$bin" train --store "$s" --photos "$tmp/train" --epochs 8 --seed 3 --json > "$tmp/t.json" || fail "train: $(cat "$tmp/t.json")"
# the first add calibrated the store (version 1); the head and its calibration are version 2,
# calibrated on the 30 photos of 6 products (a quarter, at least 30) held out of a stand-in head
[ "$(j "$tmp/t.json" 'd["photos"], d["products"], d["unknown"], d["failed"], d["augmented"], d["features_version"]')" = "(70, 14, 0, 0, False, 2)" ] \
  || fail "train report: $(cat "$tmp/t.json")"
[ "$(j "$tmp/t.json" 'd["calibration"]["source"], d["calibration"]["photos"], d["calibration_heldout"]')" = "('photos', 30, 30)" ] || fail "train calibration: $(cat "$tmp/t.json")"
# product labels (one catalog image each): the head says what it chose, and has no prototypes
[ "$(j "$tmp/t.json" 'd["head"]["prototypes"], d["head"]["prototype_weight"], d["head"]["lambda"] >= -2')" = "(0, 0.0, True)" ] \
  || fail "train head report: $(cat "$tmp/t.json")"
[ -f "$s/features-2.bin" ] && [ ! -f "$s/features-1.bin" ] || fail "features-2.bin missing or features-1.bin left"
"$py" - "$s/features-2.bin" <<'EOF' || fail "features file has no HEAD and CALB sections"
import sys
b = open(sys.argv[1], "rb").read()
assert b[:8] == b"SLFEAT\r\n" and int.from_bytes(b[8:12], "little") == 3 and b"HEAD" in b and b"CALB" in b
EOF
after=$(hits "$s")
echo "held-out hit@1: $before/28 untrained, $after/28 trained"
[ "$after" -ge "$before" ] || fail "training made held-out photos worse ($before -> $after)"

# ---- references: the training photos are searched next to the catalog images, never shown ------
nrefs() { "$py" -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]+"/catalog.sqlite").execute("SELECT count(*) FROM refs").fetchone()[0])' "$1"; }
[ "$(j "$tmp/t.json" 'd["references"]')" = 70 ] && [ "$(nrefs "$s")" = 70 ] || fail "train kept no references: $(cat "$tmp/t.json")"
nr=$tmp/norefs
cp -r "$tmp/untrained" "$nr"
"$bin" train --store "$nr" --photos "$tmp/train" --epochs 8 --seed 3 --no-references --json > "$tmp/nr.json" || fail "train --no-references"
[ "$(j "$tmp/nr.json" 'd["references"]')" = 0 ] && [ "$(nrefs "$nr")" = 0 ] || fail "--no-references kept references"
# the same head (every section but the calibration: check's map is fitted with the references
# it will score with, docs/learn.md "References")
"$py" - "$s/features-2.bin" "$nr/features-2.bin" <<'EOF' || fail "--no-references trained another head"
import struct, sys
def sections(path):
    b, o, out = open(path, "rb").read(), 16, {}
    while o < len(b):
        tag, n = b[o:o + 4], struct.unpack_from("<Q", b, o + 4)[0]
        out[tag] = b[o + 12:o + 12 + n]
        o += 12 + n + 4
    return out
a, b = sections(sys.argv[1]), sections(sys.argv[2])
assert b"HEAD" in a and a.keys() == b.keys(), (a.keys(), b.keys())
assert all(a[k] == b[k] for k in a if k != b"CALB"), [k for k in a if a[k] != b[k]]
EOF
top1() { "$bin" search "$1" --store "$2" -k 1 --json | "$py" -c 'import json,sys; print(json.load(sys.stdin)["results"][0]["product_id"])'; }
found_train() { # found_train STORE: training photos (0.jpg) whose top result is their product; no result shows a photo
  local n=0
  for f in "$tmp"/train/*/0.jpg; do
    p=$(basename "$(dirname "$f")")
    "$bin" search "$f" --store "$1" -k 5 --json > "$tmp/ft.json"
    "$py" - "$tmp/ft.json" <<'EOF' || fail "a search result shows a reference photo instead of a catalog image"
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    assert "/train/" not in r["image"] and r["image_id"] < 2**48, r
EOF
    [ "$(j "$tmp/ft.json" 'd["results"][0]["product_id"]')" = "$p" ] && n=$((n + 1))
  done
  echo "$n"
}
with=$(found_train "$s")
echo "training photos found first: $with/14 with references"
[ "$with" = 14 ] || fail "a reference does not make its own photo find its product ($with/14)"
# a reference makes its product findable: a review photo (an image of another generated shop)
# labelled with the product it comes second to finds that product first through its reference
"$bin" sample catalog "$tmp/alien" --products 3 --views 1 --photos 0 --size 160 --seed 77 >/dev/null
alien=$tmp/alien/images/P000002_0.jpg
far=$("$bin" search "$alien" --store "$tmp/untrained" -k 2 --json | "$py" -c 'import json,sys; print(json.load(sys.stdin)["results"][-1]["product_id"])')
cp -r "$tmp/train" "$tmp/trainx"
cp "$alien" "$tmp/trainx/$far/alien.jpg"
cp -r "$tmp/untrained" "$tmp/rx"; cp -r "$tmp/untrained" "$tmp/nx"
"$bin" train --store "$tmp/rx" --photos "$tmp/trainx" --epochs 0 --quiet >/dev/null  # centring only: no map to learn the photo
"$bin" train --store "$tmp/nx" --photos "$tmp/trainx" --epochs 0 --no-references --quiet >/dev/null
a_with=$(top1 "$alien" "$tmp/rx"); a_without=$(top1 "$alien" "$tmp/nx")
echo "a photo labelled $far (its second product) finds: $a_with with its reference, $a_without without"
[ "$a_with" = "$far" ] && [ "$a_without" != "$far" ] || fail "a reference does not make its product findable ($a_with / $a_without)"
# similar never returns the product itself through its references
"$bin" similar P000003 --store "$s" -k 5 --json > "$tmp/sim.json"
"$py" - "$tmp/sim.json" <<'EOF' || fail "similar returned the product itself: $(cat "$tmp/sim.json")"
import json, sys
ids = [r["product_id"] for r in json.load(open(sys.argv[1]))["results"]]
assert ids and "P000003" not in ids, ids
EOF
# a product without photos is not pushed out: train on 13 products' photos; the 14th's photos
# are found first as often with the 13 others' references as without them
mkdir -p "$tmp/train13"
for d in "$tmp"/train/*/; do p=$(basename "$d"); [ "$p" = P000013 ] || cp -r "$d" "$tmp/train13/"; done
cp -r "$tmp/untrained" "$tmp/r13"; cp -r "$tmp/untrained" "$tmp/n13"
"$bin" train --store "$tmp/r13" --photos "$tmp/train13" --epochs 8 --seed 3 --quiet >/dev/null
"$bin" train --store "$tmp/n13" --photos "$tmp/train13" --epochs 8 --seed 3 --no-references --quiet >/dev/null
lone() { local n=0 f; for f in "$cat"/queries/P000013/*.jpg; do [ "$(top1 "$f" "$1")" = P000013 ] && n=$((n + 1)); done; echo "$n"; }
l_with=$(lone "$tmp/r13"); l_without=$(lone "$tmp/n13")
echo "photos of the product without references found first: $l_with/7 with the others' references, $l_without/7 without"
[ "$l_with" -ge "$l_without" ] || fail "references of other products pushed a product without photos out ($l_without -> $l_with)"
# deleting a product deletes its references: its training photo no longer finds it
cp -r "$s" "$tmp/del"
"$bin" remove P000004 --store "$tmp/del" --quiet >/dev/null
[ "$(nrefs "$tmp/del")" = 65 ] || fail "remove left references: $(nrefs "$tmp/del")"
[ "$(top1 "$tmp/train/P000004/0.jpg" "$tmp/del")" != P000004 ] || fail "a removed product is still found"
# retrain (a new codebook) drops them with the head
"$bin" retrain --store "$tmp/del" --quiet >/dev/null
[ "$(nrefs "$tmp/del")" = 0 ] || fail "retrain kept references described with the old features"

# an HNSW store trained the same way answers as the flat one: its candidates are re-scored from
# the stored vectors (before the head) put through the head's gallery side
h=$tmp/hnsw
"$bin" init --store "$h" --features "$spec" --index hnsw --quiet >/dev/null
"$bin" add "$cat/catalog.csv" --store "$h" --quiet >/dev/null
"$bin" train --store "$h" --photos "$tmp/train" --epochs 8 --seed 3 --quiet >/dev/null
[ "$("$bin" info --store "$h" --json | "$py" -c 'import json,sys; print(json.load(sys.stdin)["index"])')" = hnsw ] || fail "not an HNSW store"
for f in "$tmp"/held/*/5.jpg; do
  "$bin" search "$f" --store "$s" -k 5 --json > "$tmp/sf.json"
  "$bin" search "$f" --store "$h" -k 5 --json > "$tmp/sh.json"
  "$py" - "$tmp/sf.json" "$tmp/sh.json" <<'EOF' || fail "HNSW store with a head answers otherwise for $f"
import json, sys
a, b = ([(r["product_id"], round(r["score"], 5)) for r in json.load(open(f))["results"]] for f in sys.argv[1:3])
if a != b: print("flat:", a); print("hnsw:", b); sys.exit(1)
EOF
  # check too, with its map fitted with the references (held in memory while training: the HNSW
  # re-scoring takes their vectors from there, not from the store)
  p=$(basename "$(dirname "$f")")
  "$bin" check "$p" "$f" --store "$s" --json > "$tmp/cf.json" || [ $? = 3 ] || fail "check on the flat store"
  "$bin" check "$p" "$f" --store "$h" --json > "$tmp/ch.json" || [ $? = 3 ] || fail "check on the HNSW store"
  cf=$(j "$tmp/cf.json" 'round(d["score"], 5), round(d["confidence"], 4)')
  ch=$(j "$tmp/ch.json" 'round(d["score"], 5), round(d["confidence"], 4)')
  [ "$cf" = "$ch" ] || fail "HNSW store checks otherwise for $f (flat $cf, hnsw $ch)"
done
cal() { "$bin" info --store "$1" --json | "$py" -c 'import json,sys; c=json.load(sys.stdin)["calibration"]["check"]; print(round(c["threshold"], 6), round(c["accept_rate"], 6), round(c["a"], 4))'; }
[ "$(cal "$s")" = "$(cal "$h")" ] || fail "HNSW store has another check calibration: $(cal "$s") / $(cal "$h")"

# same seed, same head; the catalog was not described again (vectors unchanged)
cp -r "$tmp/untrained" "$tmp/again"
"$bin" train --store "$tmp/again" --photos "$tmp/train" --epochs 8 --seed 3 --jobs 1 --quiet >/dev/null
cmp -s "$s/features-2.bin" "$tmp/again/features-2.bin" || fail "same seed (1 vs all jobs) gave another features file"
vecs() { "$py" -c 'import sqlite3,sys,hashlib; db=sqlite3.connect(sys.argv[1]+"/catalog.sqlite"); print(hashlib.sha256(b"".join(r[0] for r in db.execute("SELECT vec FROM images ORDER BY id"))).hexdigest())' "$1"; }
[ "$(vecs "$s")" = "$(vecs "$tmp/untrained")" ] || fail "train changed the stored (pre-head) vectors"

# a product added after training gets the head and is found
"$bin" sample catalog "$tmp/late" --products 16 --views 1 --photos 1 --size 160 --seed 5 >/dev/null
grep -E '^(product_id|P000015),' "$tmp/late/catalog.csv" > "$tmp/late/one.csv"
"$bin" add "$tmp/late/one.csv" --store "$s" --quiet >/dev/null
top=$("$bin" search "$tmp/late/images/P000015_0.jpg" --store "$s" -k 1 --json | "$py" -c 'import json,sys; print(json.load(sys.stdin)["results"][0]["product_id"])')
[ "$top" = "P000015" ] || fail "a product added after training is not found by its own image (got $top)"

# ---- CSV with skipped photos -----------------------------------------------------------------------
{
  echo "photo,product_id"
  for d in "$tmp"/train/*/; do p=$(basename "$d"); echo "train/$p/0.jpg,$p"; echo "train/$p/1.jpg,$p"; done
  echo "train/P000000/2.jpg,NO-SUCH-PRODUCT"
  echo "missing.jpg,P000001"
} > "$tmp/photos.csv"
set +e
"$bin" train --store "$s" --photos "$tmp/photos.csv" --epochs 2 --json > "$tmp/c.json"
rc=$?
set -e
[ "$rc" -eq 3 ] || fail "train with skipped photos must exit 3, got $rc: $(cat "$tmp/c.json")"
"$py" - "$tmp/c.json" <<'EOF' || fail "CSV train report: $(cat "$tmp/c.json")"
import json, sys
d = json.load(open(sys.argv[1]))
assert (d["photos"], d["unknown"], d["failed"], d["features_version"]) == (28, 1, 1, 3), d
# below 60 photos nothing is held out: calibrated on all 28 through the head itself
assert d["calibration"]["source"] == "photos" and d["calibration"]["photos"] == 28 and d["calibration_heldout"] == 0, d
f = {x["product_id"]: x for x in d["failures"]}
assert f["NO-SUCH-PRODUCT"]["status"] == "SL_E_NOT_FOUND"
assert f["P000001"]["file"].endswith("missing.jpg") and f["P000001"]["status"] in ("SL_E_IO", "SL_E_NOT_FOUND"), f
EOF
[ ! -f "$s/features-1.bin" ] && [ ! -f "$s/features-2.bin" ] || fail "the previous features files were not removed"

# ---- catalog only ----------------------------------------------------------------------------------
cp -r "$tmp/untrained" "$tmp/cat-only"
"$bin" train --store "$tmp/cat-only" --epochs 2 --json > "$tmp/a.json" || fail "catalog-only train: $(cat "$tmp/a.json")"
[ "$(j "$tmp/a.json" 'd["augmented"], d["photos"]')" = "(True, 84)" ] || fail "catalog-only report: $(cat "$tmp/a.json")"
"$bin" search "$tmp/held/P000003/5.jpg" --store "$tmp/cat-only" -k 3 --json > /dev/null || fail "search after catalog-only training"

# ---- kill -9 during train ------------------------------------------------------------------------------
ref=$tmp/ref
cp -r "$tmp/untrained" "$ref"
t0=$(date +%s.%N)
"$bin" train --store "$ref" --photos "$tmp/train" --epochs 40 --seed 9 --quiet >/dev/null
t1=$(date +%s.%N)
refsum=$(sha256sum < "$ref/features-2.bin")
head_of() { "$py" - "$1" <<'EOF'
import hashlib, sys
b = open(sys.argv[1], "rb").read(); o = 16
while o < len(b):
    tag, n = b[o:o + 4], int.from_bytes(b[o + 4:o + 12], "little")
    if tag == b"HEAD": print(hashlib.sha256(b[o + 12:o + 12 + n]).hexdigest())
    o += 16 + n
EOF
}
refhead=$(head_of "$ref/features-2.bin")
kill_max=$("$py" -c "print(max(0.05, 0.9 * ($t1 - $t0)))")
rounds=3
[ "${SL_SANITIZED:-0}" = 1 ] && rounds=2
for r in $(seq 1 $rounds); do
  k=$tmp/kill$r
  rm -rf "$k"
  cp -r "$tmp/untrained" "$k"
  "$bin" train --store "$k" --photos "$tmp/train" --epochs 40 --seed 9 --quiet >/dev/null 2>&1 &
  pid=$!
  sleep "$("$py" -c "import random; print(round(random.uniform(0.02, $kill_max), 3))")"
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  "$bin" info --store "$k" --json > "$tmp/ki.json" || fail "store unusable after kill -9 (round $r)"
  "$bin" search "$tmp/held/P000002/5.jpg" --store "$k" -k 3 --json > /dev/null || fail "search after kill -9 (round $r)"
  v=$("$py" -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]+"/catalog.sqlite").execute("SELECT value FROM meta WHERE key=\"features_version\"").fetchone()[0])' "$k")
  case "$v" in
    1) ;;  # untrained (calibrated from the catalog): fine
    2) [ "$(head_of "$k/features-2.bin")" = "$refhead" ] && [ "$(sha256sum < "$k/features-2.bin")" = "$refsum" ] \
         || fail "half-trained features after kill -9 (round $r)" ;;  # the head with its calibration
    *) fail "unexpected features_version $v after kill -9" ;;
  esac
  "$bin" train --store "$k" --photos "$tmp/train" --epochs 40 --seed 9 --quiet >/dev/null || fail "re-run after kill -9"
  v=$("$py" -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]+"/catalog.sqlite").execute("SELECT value FROM meta WHERE key=\"features_version\"").fetchone()[0])' "$k")
  [ "$(sha256sum < "$k/features-$v.bin")" = "$refsum" ] || fail "re-run after kill -9 differs from the reference (round $r)"
done

# ---- errors -------------------------------------------------------------------------------------------
set +e
"$bin" train --store "$s" --epochs abc >/dev/null 2>&1; [ $? -eq 2 ] || fail "--epochs abc must exit 2"
"$bin" train --store "$s" --seed -1 >/dev/null 2>&1; [ $? -eq 2 ] || fail "--seed -1 must exit 2"
"$bin" train --store "$s" --train-opt lambda=-1 >/dev/null 2>&1; [ $? -eq 2 ] || fail "bad --train-opt must exit 2"
"$bin" train --store "$s" --bogus >/dev/null 2>&1; [ $? -eq 2 ] || fail "unknown option must exit 2"
"$bin" train --store "$s" --photos "$tmp/nowhere" > /dev/null 2> "$tmp/e.txt"; [ $? -eq 1 ] || fail "missing --photos must exit 1"
grep -q nowhere "$tmp/e.txt" || fail "missing --photos message: $(cat "$tmp/e.txt")"
"$bin" init --store "$tmp/empty" --features color >/dev/null
"$bin" train --store "$tmp/empty" > /dev/null 2> "$tmp/e.txt"; [ $? -eq 1 ] || fail "training an empty store must exit 1"
grep -q "no catalog" "$tmp/e.txt" || fail "empty store message: $(cat "$tmp/e.txt")"
"$bin" eval --gallery "$tmp/held" --train "$tmp/train" --train-catalog >/dev/null 2>&1; [ $? -eq 2 ] || fail "--train with --train-catalog must exit 2"
"$bin" eval --gallery "$tmp/held" --train-opt rank=0 >/dev/null 2>&1; [ $? -eq 2 ] || fail "eval bad --train-opt must exit 2"
# init/eval --model: the recommended spec for a model; a path that cannot be in a spec, or with --features
"$bin" init --store "$tmp/m1" --model "$tmp/a+b.onnx" >/dev/null 2>&1; [ $? -eq 2 ] || fail "init --model with '+' must exit 2"
"$bin" init --store "$tmp/m2" --model x.onnx --features color >/dev/null 2>&1; [ $? -eq 2 ] || fail "init --model with --features must exit 2"
"$bin" eval --gallery "$tmp/held" --model "$tmp/missing.onnx" > /dev/null 2> "$tmp/e.txt"; [ $? -eq 1 ] || fail "eval --model missing file must exit 1"
grep -q "missing.onnx" "$tmp/e.txt" || fail "eval --model message: $(cat "$tmp/e.txt")"
set -e

# ---- eval --train ---------------------------------------------------------------------------------------
mkdir -p "$tmp/gal"
for d in "$tmp"/train/*/; do p=$(basename "$d"); mkdir -p "$tmp/gal/$p"; cp "$cat/images/${p}_0.jpg" "$tmp/gal/$p/"; done
"$bin" eval --gallery "$tmp/gal" --queries "$tmp/held" --features "$spec" --json > "$tmp/e0.json"
"$bin" eval --gallery "$tmp/gal" --queries "$tmp/held" --features "$spec" --train "$tmp/train" --train-opt epochs=8 --json > "$tmp/e1.json"
"$bin" eval --gallery "$tmp/gal" --queries "$tmp/held" --features "$spec" --train-catalog --train-opt epochs=2 --json > "$tmp/e2.json"
[ "$(j "$tmp/e1.json" 'd["trained_photos"]')" = 70 ] || fail "eval --train: $(cat "$tmp/e1.json")"
[ "$(j "$tmp/e2.json" 'd["trained_photos"]')" = 84 ] || fail "eval --train-catalog: $(cat "$tmp/e2.json")"
"$py" - "$tmp/e0.json" "$tmp/e1.json" <<'EOF' || fail "eval --train lowered hit@1"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
print("eval hit@1 untrained %.3f, trained %.3f" % (a["hit@1"], b["hit@1"]))
assert "trained_photos" not in a
assert b["hit@1"] >= a["hit@1"]
EOF
echo "e2e_train: ok"
