#!/usr/bin/env bash
# bench/learn/run.sh BUILD_DIR [DATA_DIR] [MODEL] - `shoplens train` / `eval --train` on the real
# evaluation sets (issue 18's protocols), issue 18's quick baseline in the same run, the
# recommended fusion for a model (issue 17 item 6), and what training costs. Writes
# bench/results/learn.md. Splits are made here, seeded: the 60 "seen" grocery products (Python
# random.Random(1) shuffle of the sorted product ids, first 60) and the two clothing halves (bit 0
# of SHA-256("1:" + file name)). LEARN_CACHE keeps described sets between runs (eval --cache).
set -euo pipefail
build=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
data=${2:-$root/../shared/data}
model=${3:-$root/../shared/models/mobilenetv2.onnx}
bin=$(cd "$build" && pwd)/shoplens
out=$root/bench/results/learn.md
work=$(cd "$build" && pwd)/learn-bench
cache=${LEARN_CACHE:-$work/cache}
if [ ! -d "$data/grocery" ] || [ ! -f "$model" ]; then
  echo "bench/learn: no evaluation data in $data or no model $model (skipped)"
  exit 0
fi
mkdir -p "$work" "$cache"
py=/usr/bin/python3
"$py" - "$data" "$work" <<'PY'
import glob, hashlib, os, random, sys
data, work = sys.argv[1:3]
prods = sorted(os.listdir(f"{data}/grocery/catalog"))
sh = prods[:]; random.Random(1).shuffle(sh)
seen, unseen = sorted(sh[:60]), sorted(sh[60:])
open(f"{work}/seen60.txt", "w").write("\n".join(seen) + "\n")
def link(dst, src):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if not os.path.lexists(dst): os.symlink(src, dst)
for p in seen: link(f"{work}/grocery-train60/{p}", f"{data}/grocery/photos-train/{p}")
for p in unseen: link(f"{work}/grocery-val21/{p}", f"{data}/grocery/photos-val/{p}")
for f in sorted(glob.glob(f"{data}/clothing/*/*")):
    c, b = os.path.basename(os.path.dirname(f)), os.path.basename(f)
    half = "A" if hashlib.sha256(f"1:{b}".encode()).digest()[0] & 1 == 0 else "B"
    link(f"{work}/clothing-{half}/{c}/{b}", f)
PY
G=$data/grocery
cnn="cnn:$model+verify"
nomodel="color+vlad+verify"
results=$work/results.jsonl
: > "$results"
run() { # run NAME ARGS... : one eval, its JSON appended as {"name":..., "r": {...}, "cmd": ...}
  local name=$1; shift
  echo "bench/learn: $name ..." >&2
  local r
  r=$("$bin" eval "$@" --cache "$cache" --json)
  "$py" -c 'import json,sys; print(json.dumps({"name": sys.argv[1], "r": json.loads(sys.argv[2]), "cmd": " ".join(sys.argv[3:])}))' \
    "$name" "$r" "shoplens eval" "$@" >> "$results"
}
# grocery: photos-train -> photos-val
for s in model nomodel; do
  spec=$cnn; [ $s = nomodel ] && spec=$nomodel
  run "grocery/$s/untrained" --gallery "$G/catalog" --queries "$G/photos-val" --features "$spec"
  run "grocery/$s/train" --gallery "$G/catalog" --queries "$G/photos-val" --features "$spec" --train "$G/photos-train"
  run "grocery/$s/train-lambda0.03" --gallery "$G/catalog" --queries "$G/photos-val" --features "$spec" --train "$G/photos-train" --train-opt lambda=0.03
  run "grocery/$s/train-lambda0" --gallery "$G/catalog" --queries "$G/photos-val" --features "$spec" --train "$G/photos-train" --train-opt lambda=0
  run "unseen21/$s/untrained" --gallery "$G/catalog" --queries "$work/grocery-val21" --features "$spec"
  run "unseen21/$s/train60" --gallery "$G/catalog" --queries "$work/grocery-val21" --features "$spec" --train "$work/grocery-train60"
  run "unseen21/$s/train60-lambda0.03" --gallery "$G/catalog" --queries "$work/grocery-val21" --features "$spec" --train "$work/grocery-train60" --train-opt lambda=0.03
  run "unseen21/$s/train60-lambda0" --gallery "$G/catalog" --queries "$work/grocery-val21" --features "$spec" --train "$work/grocery-train60" --train-opt lambda=0
  run "grocery/$s/catalog-only" --gallery "$G/catalog" --queries "$G/photos-val" --features "$spec" --train-catalog
  run "grocery/$s/catalog-only-lambda0.03" --gallery "$G/catalog" --queries "$G/photos-val" --features "$spec" --train-catalog --train-opt lambda=0.03
done
# clothing halves (category level)
run "clothing-B/model/untrained" --gallery "$work/clothing-B" --features "$cnn"
run "clothing-B/model/train-A" --gallery "$work/clothing-B" --features "$cnn" --train "$work/clothing-A"
run "clothing-B/model/train-A-lambda0.03" --gallery "$work/clothing-B" --features "$cnn" --train "$work/clothing-A" --train-opt lambda=0.03
run "clothing-B/model/train-A-lambda0" --gallery "$work/clothing-B" --features "$cnn" --train "$work/clothing-A" --train-opt lambda=0
# catalog only on the leave-one-out sets (global part only: verification does not depend on the head)
run "clothing/cnn/untrained" --gallery "$data/clothing" --features "cnn:$model"
run "clothing/cnn/catalog-only" --gallery "$data/clothing" --features "cnn:$model" --train-catalog
run "clothing/cnn/catalog-only-lambda0.03" --gallery "$data/clothing" --features "cnn:$model" --train-catalog --train-opt lambda=0.03
run "coil100/cnn/untrained" --gallery "$data/coil100" --features "cnn:$model"
run "coil100/cnn/catalog-only" --gallery "$data/coil100" --features "cnn:$model" --train-catalog
run "coil100/cnn/catalog-only-lambda0.03" --gallery "$data/coil100" --features "cnn:$model" --train-catalog --train-opt lambda=0.03
# issue 17 item 6: the recommended fusion next to the single specs
run "grocery/recommended" --gallery "$G/catalog" --queries "$G/photos-val" --model "$model"
run "clothing/recommended" --gallery "$data/clothing" --model "$model"
run "clothing/cnn+color" --gallery "$data/clothing" --features "cnn:$model+color"
run "coil100/cnn+color" --gallery "$data/coil100" --features "cnn:$model+color"
run "coil100/recommended" --gallery "$data/coil100" --model "$model"
# the cost of train on a store (descriptors of the catalog exist; photos described once)
st=$work/store
rm -rf "$st"
"$bin" init --store "$st" --features "$cnn" >/dev/null
"$bin" add "$G/catalog.csv" --store "$st" --quiet >/dev/null
"$bin" train --store "$st" --photos "$G/photos-train" --quiet --json > "$work/train.json"
# the head's cost per query (built by make bench)
if [ -x "$build/bench_learn_apply" ]; then "$build/bench_learn_apply" 1280 256 > "$work/apply.json"; else echo '{}' > "$work/apply.json"; fi
# baseline
"$py" "$here/baseline.py" "$bin" "$model" "$data" "$work/seen60.txt" "$work/baseline.json" >&2
"$py" "$here/report.py" "$results" "$work/train.json" "$work/baseline.json" "$out" "$(git -C "$root" rev-parse --short HEAD)" "$work/apply.json"
echo "bench/learn: wrote $out"
# calibrated confidence (issue 18 item 2): its own section of the same file
bash "$here/calib.sh" "$build" "$data" "$model"
