#!/usr/bin/env bash
# bench/learn/finetune.sh BUILD_DIR [DATA_DIR] [MODEL] [WORK] - the fine-tuning prototype of
# bench/learn/finetune.py (PyTorch; prototyping only): dumps MobileNetV2 activations with the
# engine once (WORK kept between runs), then runs each configuration below on the grocery, 60/21
# and clothing protocols (one JSON line per configuration in WORK/finetune.jsonl) and writes the
# "Fine-tuning prototype" block of bench/results/learn.md.
# Slow on a shared 2-core machine (the conv rows: ~5-8 minutes each).
set -euo pipefail
build=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
data=${2:-$root/../shared/data}
model=${3:-$root/../shared/models/mobilenetv2.onnx}
work=${4:-$(cd "$build" && pwd)/finetune-bench}
bin=$(cd "$build" && pwd)/shoplens
py=/usr/bin/python3
if [ ! -d "$data/grocery" ] || [ ! -f "$model" ]; then
  echo "bench/learn/finetune: no evaluation data in $data or no model $model (skipped)"; exit 0
fi
[ -f "$work/c_cloth.npz" ] || "$py" "$here/finetune.py" dump "$bin" "$model" "$data" "$work"
all=grocery,g60,cloth,clothA
: > "$work/finetune.jsonl"
while read -r prot cfg; do
  [ -z "$prot" ] && continue
  echo "bench/learn/finetune: $cfg on $prot" >&2
  "$py" "$here/finetune.py" run "$work" "$cfg" "$prot" >> "$work/finetune.jsonl"
done <<EOF2
$all {"untrained":1}
grocery,g60 {"baseline":1}
$all {"rank":0}
$all {"rank":256,"aug":false,"steps":410,"maxg":1000}
$all {"rank":256,"aug":true,"steps":410,"maxg":1000}
$all {"rank":256,"aug":true,"steps":1200,"maxg":1000}
$all {"rank":256,"aug":false,"steps":410,"maxg":1}
cloth,clothA {"rank":256,"aug":false,"steps":410,"maxg":8}
grocery {"conv":true,"rank":0,"steps":300,"lr_conv":1e-4}
grocery,g60,clothA {"conv":true,"rank":256,"steps":300,"lr_conv":3e-4}
grocery {"conv":true,"rank":256,"steps":300,"lr_conv":1e-3,"wd":1e-3}
grocery,g60,clothA {"conv":true,"block":true,"rank":256,"steps":300,"lr_conv":3e-4}
EOF2
"$py" "$here/finetune.py" report "$work/finetune.jsonl" "$root/bench/results/learn.md" "$(git -C "$root" rev-parse --short HEAD)"
