#!/usr/bin/python3
"""bench/cnn_verify/photos.py: shoplens' CNN embeddings of real photos against the reference
pipeline a PyTorch user runs: Pillow decode + torchvision's classification transforms (Resize(256)
antialiased bilinear, CenterCrop(224), ToTensor, Normalize(ImageNet)) + onnxruntime fp32
(onnxruntime-node from npm, bench/cnn_verify/ort_run.js). shoplens runs end to end: `shoplens cnn
embed` (its own decoder, resize, crop, engine). Reports the cosine of the two L2-normalized
embeddings (min / mean over the photos), and the input tensors compared element by element
(`shoplens cnn preprocess` vs the Pillow tensor).

The reference applies the EXIF orientation (ImageOps.exif_transpose) as shoplens does; torchvision's
default loader does not, which would compare a rotated image. Pillow's convert('RGB') of an image
with alpha drops the alpha; shoplens composes it on white (no such photo in the sample below).

Usage: photos.py SHOPLENS_BIN DATA_DIR MODELS_DIR WORKDIR [RESULTS_MD]
The photo sample: every k-th file (sorted paths) of grocery/photos-val (100), clothing (50) and
coil100 (50): 200 photos.
"""
import glob
import os
import subprocess
import sys
import time

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mdsection import write_section  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
bin_, data, models, work = sys.argv[1:5]
res_md = sys.argv[5] if len(sys.argv) > 5 else None
os.makedirs(work, exist_ok=True)

MODELS = [  # file, ONNX output holding the pooled features, name
    ("mobilenetv2.onnx", "features", "MobileNetV2"),
    ("squeezenet1.1.onnx", "features", "SqueezeNet 1.1"),
    ("resnet50v2-stage3.onnx", "features", "ResNet-50 v2 body (stages 1-3)"),
]
MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)


def sample(pattern, n):
    files = sorted(f for f in glob.glob(os.path.join(data, pattern)) if os.path.isfile(f))
    step = max(1, len(files) // n)
    return files[::step][:n]


photos = sample("grocery/photos-val/*/*", 100) + sample("clothing/*/*", 50) + sample("coil100/*/*", 50)


def torchvision_tensor(path):
    img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    size = (256, int(256 * long / short)) if w <= h else (int(256 * long / short), 256)
    if size != (w, h):
        img = img.resize(size, Image.BILINEAR)
    w, h = img.size
    top, left = int(round((h - 224) / 2.0)), int(round((w - 224) / 2.0))
    a = np.asarray(img.crop((left, top, left + 224, top + 224)), dtype=np.uint8).astype(np.float32) / np.float32(255)
    return ((a - MEAN) / STD).transpose(2, 0, 1)


t0 = time.time()
ref_in = os.path.join(work, "photos.torchvision.npy")
np.save(ref_in, np.stack([torchvision_tensor(p) for p in photos]).astype(np.float32))
t_pil = time.time() - t0
sl_in = os.path.join(work, "photos.shoplens.npy")
lst = os.path.join(work, "photos.txt")
with open(lst, "w") as f:
    f.write("\n".join(photos) + "\n")
subprocess.run([bin_, "cnn", "preprocess", os.path.join(models, MODELS[0][0]), *photos, "--out", sl_in], check=True)
a, b = np.load(sl_in), np.load(ref_in)
d = np.abs(a - b)
lvl = 1.0 / 255 / 0.229  # one grey level after normalization, at most
tensor_stats = (float(d.max()), float((d > 1e-4).mean()), int((d.reshape(len(photos), -1) > 1e-4).any(1).sum()),
                float(d.max() / lvl))
print("input tensors: max |diff| %.3g (%.2f grey levels), elements differing %.4f%%, photos with a difference %d/%d"
      % (tensor_stats[0], tensor_stats[3], 100 * tensor_stats[1], tensor_stats[2], len(photos)), flush=True)


def l2(x):
    x = x.reshape(len(x), -1).astype(np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


rows, store = [], []
for fname, oname, title in MODELS:
    path = os.path.join(models, fname)
    ref_out = os.path.join(work, fname + ".ort.npy")
    subprocess.run(["node", os.path.join(HERE, "ort_run.js"), path, ref_in, ref_out, oname, "2"], check=True)
    r = l2(np.load(ref_out))
    # the engine alone on the same (Pillow) tensors
    eng_out = os.path.join(work, fname + ".engine.npy")
    subprocess.run([bin_, "cnn", "run", path, "--input", ref_in, "--out", eng_out, "--output", oname], check=True)
    e = np.load(eng_out).reshape(len(photos), -1)
    rel = float(np.abs(e - np.load(ref_out).reshape(len(photos), -1)).max() / np.abs(np.load(ref_out)).max())
    # shoplens end to end: decode, preprocessing, engine (the model's default embedding)
    out = subprocess.run([bin_, "cnn", "embed", path, *photos, "--batch", "8"], check=True,
                         capture_output=True, text=True).stdout.splitlines()
    s = l2(np.array([[float(v) for v in line.split()[1:]] for line in out], np.float64))
    cos = np.sum(s * r, axis=1)
    worst = int(np.argmin(cos))
    # as a store embeds: images decoded with the longest side at most 640 (shrink-on-load)
    out = subprocess.run([bin_, "cnn", "embed", path, *photos, "--batch", "8", "--max-side", "640"], check=True,
                         capture_output=True, text=True).stdout.splitlines()
    st = l2(np.array([[float(v) for v in line.split()[1:]] for line in out], np.float64))
    cst = np.sum(st * r, axis=1)
    store.append((float(cst.min()), float(cst.mean())))
    rows.append((title, s.shape[1], float(cos.min()), float(cos.mean()), int((cos >= 0.9999).sum()), rel,
                 os.path.relpath(photos[worst], data)))
    print("%s: %d-d, cosine min %.9f mean %.9f (>= 0.9999: %d/%d), engine max rel diff %.2e, worst %s"
          % (title, s.shape[1], cos.min(), cos.mean(), rows[-1][4], len(photos), rel, rows[-1][6]), flush=True)

ort_ver = __import__("json").load(open(os.path.join(HERE, "node_modules/onnxruntime-node/package.json")))["version"]
lines = ["## Real weights, real photos: shoplens end to end vs Pillow + torchvision transforms + onnxruntime",
         "",
         "%d photos of ../shared/data (every k-th file: 100 grocery/photos-val, 50 clothing, 50 coil100), models "
         "of ../shared/models. Reference: Pillow %s decode (EXIF orientation applied), torchvision's Resize(256) "
         "(bilinear, antialiased) + CenterCrop(224) + ToTensor + Normalize(ImageNet) written out in numpy, "
         "onnxruntime-node %s fp32. shoplens: `shoplens cnn embed MODEL PHOTOS --batch 8` (its decoder, "
         "preprocessing and engine, default embedding). Target: cosine >= 0.9999 on every photo." % (
             len(photos), Image.__version__, ort_ver),
         "",
         "Input tensors (`shoplens cnn preprocess` vs the Pillow tensor, %d x 3 x 224 x 224): max |diff| %.3g "
         "(%.2f grey levels), %.4f%% of the elements differ by more than 1e-4, in %d of %d photos." % (
             len(photos), tensor_stats[0], tensor_stats[3], 100 * tensor_stats[1], tensor_stats[2], len(photos)),
         "",
         "| model | embedding | cosine min | 1 - cosine min | cosine mean | photos >= 0.9999 | target | engine alone: max rel diff on the same tensors | worst photo |",
         "|---|---|---|---|---|---|---|---|---|"]
for title, dim, cmin, cmean, ok, rel, worst in rows:
    lines.append("| %s | %d-d | %.9f | %.1e | %.9f | %d/%d | %s | %.2e | %s |" % (
        title, dim, cmin, 1 - cmin, cmean, ok, len(photos), "PASS" if cmin >= 0.9999 else "FAIL", rel, worst))
lines += ["",
          "A store (`shoplens init/add/search`) decodes images with the longest side at most 640 first "
          "(shrink-on-load, shared with the local features): `cnn embed --max-side 640` against the same reference "
          "(only photos larger than 640 px change: here the clothing photos of 400 x 533..711):",
          "",
          "| model | cosine min | cosine mean |", "|---|---|---|"]
for (title, *_), (smin, smean) in zip(rows, store):
    lines.append("| %s | %.6f | %.7f |" % (title, smin, smean))
text = "\n".join(lines) + "\n"
print(text)
if res_md:
    write_section(res_md, "photos", text)
