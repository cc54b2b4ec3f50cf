#!/usr/bin/env bash
# tests/e2e_cnn.sh - `shoplens cnn info|run|embed|preprocess` on the committed test models: output
# shapes, the default embedding and its alternatives, batched embedding, exit codes for usage
# errors, unsupported operators and malformed or mistaken files (HTML, Git LFS pointer).
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

# errors: usage -> 2, unsupported operator / malformed model / wrong input shape -> 1
set +e
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
