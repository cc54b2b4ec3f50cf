#!/usr/bin/env bash
# tests/e2e_cnn.sh - `shoplens cnn info|run|embed` on the committed test models: output shapes,
# exit codes for usage errors, unsupported operators and malformed files.
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
set -e
echo "e2e_cnn: ok"
