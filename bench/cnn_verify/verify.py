#!/usr/bin/python3
"""bench/cnn_verify: torchvision ResNet-50, MobileNetV2, MobileNetV3-small and EfficientNet-B0
with random weights, run in PyTorch (fp32) and in shoplens (`shoplens cnn run`) on the same
inputs; reports the max relative difference max|a - b| / max|b| of the logits. Usage: verify.py SHOPLENS_BIN WORKDIR [RESULTS_MD]"""
import os
import subprocess
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export import MODELS, export  # noqa: E402

bin_, work = sys.argv[1], sys.argv[2]
res_md = sys.argv[3] if len(sys.argv) > 3 else None
os.makedirs(work, exist_ok=True)
torch.set_num_threads(2)
rows = []
for name in MODELS:
    model, path = export(name, work)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = model(x).numpy()
    xin = os.path.join(work, name + ".in.npy")
    np.save(xin, x.numpy())
    out = {}
    for prec in ("fp32", "bf16"):
        yo = os.path.join(work, f"{name}.{prec}.out.npy")
        subprocess.run([bin_, "cnn", "run", path, "--input", xin, "--out", yo, "--precision", prec],
                       check=True)
        out[prec] = np.load(yo)
    rel = lambda a, b: float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))
    cos = lambda a, b: float(np.min(np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))
    r32 = rel(out["fp32"], ref)
    rows.append((name, r32, rel(out["bf16"], ref), cos(out["bf16"], ref), float(np.abs(ref).max())))
    print(f"{name}: fp32 max rel diff {r32:.2e}  bf16 {rows[-1][2]:.2e} (min cosine {rows[-1][3]:.5f})",
          flush=True)
lines = ["| model | fp32 max rel diff | target | bf16 max rel diff | bf16 min cosine (logits) | max abs logit |",
         "|---|---|---|---|---|---|"]
for n, a, b, c, mx in rows:
    lines.append(f"| {n} | {a:.2e} | {'PASS' if a <= 1e-4 else 'FAIL'} (<= 1e-4) | {b:.2e} | {c:.5f} | {mx:.3g} |")
print("\n".join(lines))
if res_md:
    with open(res_md, "w") as f:
        f.write("# CNN numerical agreement with PyTorch (bench/cnn_verify)\n\n")
        f.write("torchvision models, random weights (seed 0, BatchNorm statistics randomized), "
                "batch of 2 random 224x224 inputs, logits compared; PyTorch %s fp32 is the reference.\n\n"
                % torch.__version__)
        f.write("\n".join(lines) + "\n")
