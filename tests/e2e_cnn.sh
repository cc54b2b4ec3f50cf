#!/usr/bin/env bash
# tests/e2e_cnn.sh - `shoplens cnn info|run|embed|preprocess` on the committed test models: output
# shapes, the default embedding and its alternatives, batched embedding, int8 calibration saved and
# loaded, exit codes for usage errors, unsupported operators, malformed or mistaken files (HTML,
# Git LFS pointer) and calibration records; a store whose CNN runs at int8 (calibrated on its
# catalog, kept in the features file, shown by info, the same after reopening and retrain).
set -euo pipefail
bin=${SHOPLENS_BIN:?}
models=${SL_SOURCE_DIR:?}/tests/models
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$bin" cnn info "$models/tiny_resnet.onnx" > "$tmp/info.txt"
grep -q "^  Conv " "$tmp/info.txt" || fail "info lists no Conv"
grep -q "FLOPs per image" "$tmp/info.txt" || fail "info has no FLOPs"
grep -q "embedding: '.*GlobalAveragePool.*', 16 floats" "$tmp/info.txt" || fail "default embedding is not the pooled features"

# run: the graph output for the committed input; the .npy header must say (2, 10).
"$bin" cnn run "$models/tiny_resnet.onnx" --input "$models/tiny_resnet.in.npy" --out "$tmp/y.npy"
head -c 128 "$tmp/y.npy" | grep -q "'shape': (2, 10)" || fail "run output shape"
[ "$(stat -c %s "$tmp/y.npy")" -eq $((128 + 2 * 10 * 4)) ] || fail "run output size"
# the same bytes with the reference backend, up to rounding: the file sizes and header agree
"$bin" cnn run "$models/tiny_resnet.onnx" --input "$models/tiny_resnet.in.npy" --out "$tmp/r.npy" --backend ref --output logits
cmp -n 128 "$tmp/y.npy" "$tmp/r.npy" || fail "ref backend header differs"
# --output picks a tensor; pooled features are (2, 16, 1, 1)
"$bin" cnn run "$models/tiny_resnet.onnx" --input "$models/tiny_resnet.in.npy" --out "$tmp/p.npy" \
    --output "$(sed -n "s/^embedding: '\(.*\)', 16 floats.*/\1/p" "$tmp/info.txt")"
head -c 128 "$tmp/p.npy" | grep -q "'shape': (2, 16, 1, 1)" || fail "pooled output shape"

# SqueezeNet-style head: the pooled features before the classifier conv, not the class scores
"$bin" cnn info "$models/head_convclass.onnx" > "$tmp/sq.txt"
grep -q "^embedding: 'feat.pooled', 8 floats" "$tmp/sq.txt" || fail "conv classifier head: wrong embedding"
grep -q "pools class scores" "$tmp/sq.txt" || fail "info does not say why"
grep -q "^  p  *10 floats" "$tmp/sq.txt" || fail "info does not list the class-score pool as an alternative"

# embed: --batch N runs N images per pass; results equal one image per pass; a missing file is
# reported and skipped (exit 3: partial); preprocess writes the input tensor
"$bin" sample catalog "$tmp/cat" --products 3 --views 1 --photos 0 --size 96 --seed 5 > /dev/null
imgs=("$tmp"/cat/images/*.jpg)
"$bin" cnn embed "$models/tiny_resnet.onnx" "${imgs[@]}" --batch 1 > "$tmp/e1.txt"
set +e
"$bin" cnn embed "$models/tiny_resnet.onnx" "${imgs[@]}" "$tmp/missing.jpg" --batch 2 > "$tmp/e2.txt" 2> "$tmp/err.txt"
rc=$?
set -e
[ $rc -eq 3 ] || fail "embed with a missing image: exit $rc, expected 3"
grep -q "missing.jpg" "$tmp/err.txt" || fail "missing image not named"
[ "$(wc -l < "$tmp/e1.txt")" -eq 3 ] && [ "$(wc -l < "$tmp/e2.txt")" -eq 3 ] || fail "embed line count"
awk 'NR == FNR { for (i = 2; i <= NF; i++) a[FNR, i] = $i; next }
     { for (i = 2; i <= NF; i++) { d = a[FNR, i] - $i; if (d < 0) d = -d; if (d > 1e-5) bad = 1 } }
     END { exit bad }' "$tmp/e1.txt" "$tmp/e2.txt" || fail "batched embeddings differ from one-by-one"
"$bin" cnn preprocess "$models/tiny_resnet.onnx" "${imgs[@]}" --out "$tmp/x.npy" --interpolation bicubic
head -c 128 "$tmp/x.npy" | grep -q "'shape': (3, 3, 32, 32)" || fail "preprocess output shape"

# int8 calibrated on sample tensors: the record saved, loaded by another process, gives the same
# bytes; cnn info names the calibration and the layers kept at fp32
m8="$models/tiny_mbv2.onnx"
"$bin" cnn info "$m8" --precision int8 --calibrate "$models/tiny_mbv2.in.npy" --calib-save "$tmp/cal.bin" > "$tmp/i8.txt"
grep -q "^calibration: int8, 2 images (seed 17), ranges by mse" "$tmp/i8.txt" || fail "int8 calibration not described"
"$bin" cnn run "$m8" --input "$models/tiny_mbv2.in.npy" --out "$tmp/c1.npy" --precision int8 --calibrate "$models/tiny_mbv2.in.npy"
"$bin" cnn run "$m8" --input "$models/tiny_mbv2.in.npy" --out "$tmp/c2.npy" --precision int8 --calib-load "$tmp/cal.bin"
cmp "$tmp/c1.npy" "$tmp/c2.npy" || fail "a loaded calibration computes other bytes"
# layers kept out of int8 run at bf16 only where the CPU has AVX-512-BF16 dot products: with
# oneDNN capped below them (ONEDNN_MAX_CPU_ISA) a calibration keeps them at fp32, and a record
# made with bf16 keeps runs those layers at fp32 (not oneDNN's slow bf16 emulation)
"$bin" cnn info "$m8" --precision int8 --calibrate "$models/tiny_mbv2.in.npy" --calib-budget 1e-7 \
    --calib-save "$tmp/calk.bin" > "$tmp/k1.txt"
ONEDNN_MAX_CPU_ISA=AVX512_CORE "$bin" cnn info "$m8" --precision int8 --calibrate "$models/tiny_mbv2.in.npy" \
    --calib-budget 1e-7 > "$tmp/k2.txt"
grep -q "^calibration: .* convolutions kept at fp32: " "$tmp/k2.txt" || fail "a CPU without bf16 keeps layers at bf16"
grep -q "^convolutions at int8 precision: [0-9]* fp32, 0 bf16," "$tmp/k2.txt" || fail "bf16 convolutions without bf16"
if grep -q "^calibration: .* at bf16: " "$tmp/k1.txt"; then
    grep -q "^convolutions at int8 precision: [0-9]* fp32, [1-9][0-9]* bf16," "$tmp/k1.txt" || fail "kept at bf16 but not run at bf16"
    ONEDNN_MAX_CPU_ISA=AVX512_CORE "$bin" cnn info "$m8" --precision int8 --calib-load "$tmp/calk.bin" > "$tmp/k3.txt"
    grep -q "^convolutions at int8 precision: [0-9]* fp32, 0 bf16," "$tmp/k3.txt" || fail "a bf16 keep ran at bf16 without bf16"
fi
# a store with the CNN at int8: add calibrates on the catalog's images, the features file keeps
# the quantization calibration (section CNNQ) and info shows it as "quantization"; later processes (search) reload it, so a
# catalog image finds itself at score 1.0 (its stored vector and the query's are the same bits);
# retrain recalibrates on the same seeded sample: the same calibration, the same results
export SHOPLENS_STORE="$tmp/store"
"$bin" sample catalog "$tmp/qcat" --products 6 --views 2 --photos 1 --size 96 --seed 3 > /dev/null
"$bin" init --features "cnn:$m8,precision=int8" > /dev/null
"$bin" info --json | grep -q '"quantization": null' || fail "uncalibrated store shows a quantization calibration"
"$bin" add "$tmp/qcat/catalog.csv" --jobs 2 > /dev/null
grep -q CNNQ "$tmp"/store/features-*.bin || fail "features file has no calibration section"
"$bin" info --json > "$tmp/qi.json"
grep -q '"quantization": "int8, 12 images (seed [0-9]*), ranges by mse; [0-9]* of 11 convolutions kept at fp32' "$tmp/qi.json" \
    || fail "info does not show the store's calibration on its 12 images"
"$bin" info | grep -q "^quantization int8, 12 images" || fail "info text has no quantization line"
for img in P000001_0 P000004_1; do
    "$bin" search "$tmp/qcat/images/$img.jpg" -k 1 --json > "$tmp/qs.json"
    tr -d ' \n' < "$tmp/qs.json" | grep -q '"score":1.0,' || fail "$img does not find itself at 1.0: the reloaded calibration differs"
done
"$bin" search "$tmp/qcat/queries/P000002/0.jpg" -k 6 --json > "$tmp/qa.json"
"$bin" retrain --jobs 2 > /dev/null
"$bin" info --json > "$tmp/qi2.json"
[ "$(grep '"quantization"' "$tmp/qi.json")" = "$(grep '"quantization"' "$tmp/qi2.json")" ] || fail "retrain changed the quantization calibration"
"$bin" search "$tmp/qcat/queries/P000002/0.jpg" -k 6 --json > "$tmp/qb.json"
cmp "$tmp/qa.json" "$tmp/qb.json" || fail "retrain changed the results"
# a store without a reduced-precision CNN has no quantization calibration
"$bin" init --store "$tmp/s32" --features "cnn:$m8" > /dev/null
"$bin" info --store "$tmp/s32" --json | grep -q '"quantization": null' || fail "fp32 store shows a quantization calibration"
unset SHOPLENS_STORE
# the zoo's quantized operators: a QLinear model runs and names its QLinearConv paths
"$bin" cnn info "$models/qlinear_conv.onnx" | grep -q "QLinearConv: [0-9] on oneDNN int8" || fail "QLinearConv summary"

# errors: usage -> 2, unsupported operator / malformed model / wrong input shape -> 1
set +e
"$bin" cnn info "$m8" --precision int8 --calib-method median > /dev/null 2>&1; [ $? -eq 2 ] || fail "bad --calib-method"
"$bin" cnn info "$m8" --calibrate "$models/tiny_mbv2.in.npy" 2> "$tmp/err.txt"; [ $? -eq 1 ] || fail "fp32 calibration accepted"
grep -q "fp32" "$tmp/err.txt" || fail "fp32 calibration error does not say why"
head -c 100 "$tmp/cal.bin" > "$tmp/bad.bin"
"$bin" cnn info "$m8" --precision int8 --calib-load "$tmp/bad.bin" 2> "$tmp/err.txt"; [ $? -eq 1 ] || fail "truncated record accepted"
grep -q "SL_E_CORRUPT" "$tmp/err.txt" || fail "truncated record not SL_E_CORRUPT"
"$bin" cnn run "$models/tiny_resnet.onnx" > /dev/null 2>&1; [ $? -eq 2 ] || fail "missing --input is not a usage error"
"$bin" cnn frobnicate x > /dev/null 2>&1; [ $? -eq 2 ] || fail "unknown subcommand is not a usage error"
"$bin" cnn info "$models/unsupported_op.onnx" 2> "$tmp/err.txt"; [ $? -eq 1 ] || fail "unsupported op exit code"
grep -q "Erf" "$tmp/err.txt" || fail "unsupported op not named"
head -c 300 "$models/tiny_mbv2.onnx" > "$tmp/trunc.onnx"
"$bin" cnn info "$tmp/trunc.onnx" 2> "$tmp/err.txt"; [ $? -eq 1 ] || fail "truncated model exit code"
grep -q "SL_E_CORRUPT" "$tmp/err.txt" || fail "truncated model not SL_E_CORRUPT"
"$bin" cnn run "$models/tiny_resnet.onnx" --input "$models/conv_dw.in.npy" --out "$tmp/x.npy" 2> /dev/null
[ $? -eq 1 ] || fail "wrong input shape accepted"
printf '<!DOCTYPE html>\n<html><head><title>model</title></head></html>\n' > "$tmp/page.onnx"
"$bin" cnn info "$tmp/page.onnx" 2> "$tmp/err.txt"; [ $? -eq 1 ] || fail "HTML page exit code"
grep -q "this is an HTML page, not an ONNX model" "$tmp/err.txt" || fail "HTML page not recognised"
printf 'version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 14000000\n' > "$tmp/lfs.onnx"
"$bin" cnn embed "$tmp/lfs.onnx" "${imgs[0]}" 2> "$tmp/err.txt"; [ $? -eq 1 ] || fail "LFS pointer exit code"
grep -q "Git LFS pointer.*git lfs pull" "$tmp/err.txt" || fail "LFS pointer not recognised"
"$bin" cnn preprocess "$models/tiny_resnet.onnx" "${imgs[0]}" > /dev/null 2>&1; [ $? -eq 2 ] || fail "preprocess without --out"
"$bin" cnn embed "$models/tiny_resnet.onnx" "${imgs[0]}" --interpolation lanczos > /dev/null 2>&1
[ $? -eq 2 ] || fail "bad --interpolation is not a usage error"
set -e
echo "e2e_cnn: ok"
