#!/usr/bin/python3
"""bench/cnn_verify: torchvision ResNet-18/34/50/101, VGG16, MobileNetV2, MobileNetV3-small/large
and EfficientNet-B0 with random weights, run in PyTorch (fp32) and in shoplens (`shoplens cnn
run`, fp32, bf16 and int8) on the same inputs; reports the max relative difference
max|a - b| / max|b| of the logits, the cosine of the reduced-precision logits, the file size and
shoplens' peak memory (VGG16's file is 528 MB: the large-file check).
Usage: verify.py SHOPLENS_BIN WORKDIR [RESULTS_MD]"""
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
    out, rss = {}, {}
    for prec in ("fp32", "bf16", "int8"):
        yo = os.path.join(work, f"{name}.{prec}.out.npy")
        # peak RSS by /usr/bin/time (a forked child's own ru_maxrss would include this Python's pages)
        tf = os.path.join(work, "rss.txt")
        subprocess.run(["/usr/bin/time", "-f", "%M", "-o", tf, bin_, "cnn", "run", path, "--input", xin, "--out", yo,
                        "--precision", prec], check=True)
        out[prec] = np.load(yo)
        rss[prec] = float(open(tf).read().split()[-1]) / 1024.0
    rel = lambda a, b: float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))
    cos = lambda a, b: float(np.min(np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))
    r32 = rel(out["fp32"], ref)
    rows.append((name, r32, rel(out["bf16"], ref), cos(out["bf16"], ref), rel(out["int8"], ref),
                 cos(out["int8"], ref), float(np.abs(ref).max()), os.path.getsize(path) / 1e6, rss["fp32"]))
    print("%s: fp32 max rel diff %.2e  bf16 %.2e (min cosine %.5f)  int8 %.2e (min cosine %.5f)  "
          "file %.0f MB, peak RSS %.0f MB" % ((name,) + rows[-1][1:6] + rows[-1][7:]), flush=True)
lines = ["| model | fp32 max rel diff | target | bf16 max rel diff | bf16 min cosine (logits) | int8 max rel diff "
         "| int8 min cosine (logits) | max abs logit | file MB | shoplens fp32 peak RSS MB |",
         "|---|---|---|---|---|---|---|---|---|---|"]
for n, a, b, c, i, ic, mx, mb, rs in rows:
    lines.append(f"| {n} | {a:.2e} | {'PASS' if a <= 1e-4 else 'FAIL'} (<= 1e-4) | {b:.2e} | {c:.5f} | {i:.2e} "
                 f"| {ic:.5f} | {mx:.3g} | {mb:.0f} | {rs:.0f} |")
print("\n".join(lines))
if res_md:
    from mdsection import write_section
    write_section(res_md, "torch",
                  "## Random weights: shoplens vs PyTorch on the same tensors\n\n"
                  "torchvision models, random weights (seed 0, BatchNorm statistics randomized), "
                  "batch of 2 random 224x224 inputs (standard normal, so heavier-tailed than normalized photos: "
                  "int8's calibrated input ranges clip more here than on images), logits compared; PyTorch %s "
                  "fp32 is the reference. Peak RSS: the whole `shoplens cnn run` process (model file mapped, "
                  "weights converted, plans, arena).\n\n" % torch.__version__ + "\n".join(lines) + "\n")
