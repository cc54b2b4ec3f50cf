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
  run "grocery/$s/train-lambda0" --gallery "$G/catalog" --queries "$G/photos-val" --features "$spec" --train "$G/photos-train" --train-opt lambda=0
  run "unseen21/$s/untrained" --gallery "$G/catalog" --queries "$work/grocery-val21" --features "$spec"
  run "unseen21/$s/train60" --gallery "$G/catalog" --queries "$work/grocery-val21" --features "$spec" --train "$work/grocery-train60"
  run "unseen21/$s/train60-lambda0" --gallery "$G/catalog" --queries "$work/grocery-val21" --features "$spec" --train "$work/grocery-train60" --train-opt lambda=0
  run "grocery/$s/catalog-only" --gallery "$G/catalog" --queries "$G/photos-val" --features "$spec" --train-catalog
done
# clothing halves (category level)
run "clothing-B/model/untrained" --gallery "$work/clothing-B" --features "$cnn"
run "clothing-B/model/train-A" --gallery "$work/clothing-B" --features "$cnn" --train "$work/clothing-A"
run "clothing-B/model/train-A-lambda0" --gallery "$work/clothing-B" --features "$cnn" --train "$work/clothing-A" --train-opt lambda=0
# catalog only on the leave-one-out sets (global part only: verification does not depend on the head)
run "clothing/cnn/untrained" --gallery "$data/clothing" --features "cnn:$model"
run "clothing/cnn/catalog-only" --gallery "$data/clothing" --features "cnn:$model" --train-catalog
run "coil100/cnn/untrained" --gallery "$data/coil100" --features "cnn:$model"
run "coil100/cnn/catalog-only" --gallery "$data/coil100" --features "cnn:$model" --train-catalog
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
"$py" - "$results" "$work/train.json" "$work/baseline.json" "$out" "$(git -C "$root" rev-parse --short HEAD)" "$work/apply.json" <<'PY'
import datetime, json, os, sys
res, trj, bj, out, rev, apj = sys.argv[1:7]
ap = json.load(open(apj))
R = {}; C = {}
for line in open(res):
    d = json.loads(line); R[d["name"]] = d["r"]; C[d["name"]] = d["cmd"]
tr, bl = json.load(open(trj)), json.load(open(bj))
f = open(out, "w")
f.write("# Learning from the shop's photos (`shoplens train`, `eval --train`)\n\n")
f.write(f"Generated by `bench/learn/run.sh` at commit {rev} on {datetime.date.today()}, load average "
        "%.1f at the end on 2 cores (times are indicative). MobileNetV2 = ../shared/models/mobilenetv2.onnx; "
        "defaults of `shoplens train` unless a row says otherwise (lambda 0.03, 10 epochs, rank 256). "
        "Every number below comes from the command listed at the end.\n\n" % os.getloadavg()[0])
def row(name, label):
    r = R[name]
    return f"| {label} | {r['map']:.3f} | {r['hit@1']:.3f} | {r['hit@5']:.3f} |"
f.write("## grocery: photos-train -> evaluate photos-val against the catalog\n\n| | mAP | hit@1 | hit@5 |\n|---|---|---|---|\n")
for s, lab in (("model", "MobileNetV2 + verify"), ("nomodel", "no model (color+vlad+verify)")):
    for k, t in (("untrained", "untrained"), ("train", "trained"), ("train-lambda0", "trained, lambda 0"), ("catalog-only", "catalog only (augmented)")):
        f.write(row(f"grocery/{s}/{k}", f"{lab}: {t}") + "\n")
f.write(f"| issue 18 baseline (InfoNCE linear 1280->256, no verify): untrained / trained | | {bl['untrained_full']:.3f} / {bl['trained_full']:.3f} | |\n\n")
f.write("## generalisation: train on the photos of 60 products, evaluate the other 21 (81 in the gallery)\n\n| | mAP | hit@1 | hit@5 |\n|---|---|---|---|\n")
for s, lab in (("model", "MobileNetV2 + verify"), ("nomodel", "no model (color+vlad+verify)")):
    for k, t in (("untrained", "untrained"), ("train60", "trained on 60"), ("train60-lambda0", "trained on 60, lambda 0")):
        f.write(row(f"unseen21/{s}/{k}", f"{lab}: {t}") + "\n")
f.write(f"| issue 18 baseline (InfoNCE, no verify): untrained / trained on 60 | | {bl['untrained_unseen']:.3f} / {bl['trained_unseen']:.3f} | |\n\n")
f.write("## clothing: train on half A (folder = category), leave-one-out on half B\n\n| | mAP | hit@1 | hit@5 |\n|---|---|---|---|\n")
for k, t in (("untrained", "untrained"), ("train-A", "trained on A"), ("train-A-lambda0", "trained on A, lambda 0")):
    f.write(row(f"clothing-B/model/{k}", f"MobileNetV2 + verify: {t}") + "\n")
f.write("\n## catalog only (no labelled photos), leave-one-out sets\n\n| | mAP | hit@1 | hit@5 |\n|---|---|---|---|\n")
for n in ("clothing/cnn/untrained", "clothing/cnn/catalog-only", "coil100/cnn/untrained", "coil100/cnn/catalog-only"):
    f.write(row(n, n) + "\n")
f.write("\n## recommended fusion for a model (`init/eval --model`, issue 17 item 6)\n\n| | mAP | hit@1 | hit@5 |\n|---|---|---|---|\n")
for n in ("grocery/model/untrained", "grocery/recommended", "clothing/cnn/untrained", "clothing/cnn+color", "clothing/recommended",
          "coil100/cnn/untrained", "coil100/cnn+color", "coil100/recommended"):
    f.write(row(n, n.replace("model/untrained", "cnn+verify").replace("cnn/untrained", "cnn")) + "\n")
f.write("\n## cost\n\n")
f.write(f"`shoplens train` on a MobileNetV2 + verify store of the grocery catalog with the 2,640 photos-train: "
        f"describing the photos {tr['describe_seconds']:.1f} s, training the head {tr['train_seconds']:.1f} s, "
        f"{tr['seconds']:.1f} s in all.\n\n")
g0, g1 = R["grocery/model/untrained"], R["grocery/model/train"]
f.write(f"Query latency in the same eval runs (decode + describe + exact search + verify, p50 / p99 ms): "
        f"untrained {g0['query_ms_p50']:.1f} / {g0['query_ms_p99']:.1f}, with the head {g1['query_ms_p50']:.1f} / "
        f"{g1['query_ms_p99']:.1f}.\n")
if ap:
    f.write(f"Applying the head to one query (1280 x rank 256, `bench_learn_apply`): {ap['apply_us']:.0f} us, "
            f"{100 * ap['apply_us'] / 1000 / g0['query_ms_p50']:.1f}% of the untrained p50 above.\n")
f.write("\n## commands\n\n")
for n, c in C.items():
    f.write(f"- {n}: `{c}`\n")
f.write("- cost: `shoplens init --store S --features cnn:MODEL+verify; shoplens add DATA/grocery/catalog.csv --store S; "
        "shoplens train --store S --photos DATA/grocery/photos-train --json`\n")
f.write("- baseline: `bench/learn/baseline.py SHOPLENS MODEL DATA seen60.txt OUT`\n")
PY
echo "bench/learn: wrote $out"
