#!/usr/bin/python3
"""bench/index/descriptors.py - benchmark datasets for the index, computed from real images.

Until the project's SIFT extractor exists, the local descriptor is a dense gradient histogram
("dense SIFT-like"): gradients (Sobel) of the grey image, 8 orientation bins weighted by
magnitude, 4x4 cells of 4x4 pixels per 16x16 patch (128 dims), patches every 8 pixels at two
scales, low-contrast patches dropped, then RootSIFT (L1-normalize, square root: unit L2 norm).
The global descriptor (512 dims) is the same histogram on an 8x8 cell grid over a random crop
(scale 0.4-1, random flip) resized to 64x64, square-rooted and L2-normalized.

Queries come from held-out images (the last ones of a seeded shuffle), never from base images.

usage: descriptors.py DATA_DIR OUT_PREFIX KIND N NQ [SEED]
  KIND: local128 | global512; writes OUT_PREFIX.base.fbin and OUT_PREFIX.query.fbin
  (int32 n, int32 d, then float32 rows).
"""
import os
import random
import struct
import sys

import cv2
import numpy as np


def images(root):
    out = []
    for d, _, files in os.walk(root):
        for f in files:
            if f.lower().endswith((".jpg", ".jpeg", ".png", ".webp", ".bmp")):
                out.append(os.path.join(d, f))
    return sorted(out)


def orient_cells(grey, cell):
    """Per-cell 8-bin orientation histograms, shape (H/cell, W/cell, 8)."""
    g = grey.astype(np.float32)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    mag = np.sqrt(gx * gx + gy * gy)
    ang = (np.arctan2(gy, gx) + np.pi) * (8 / (2 * np.pi))
    b0 = np.floor(ang).astype(np.int32) % 8
    frac = ang - np.floor(ang)
    h, w = grey.shape
    h, w = h - h % cell, w - w % cell
    hist = np.zeros((h, w, 8), np.float32)
    ii, jj = np.mgrid[0:h, 0:w]
    hist[ii, jj, b0[:h, :w]] += mag[:h, :w] * (1 - frac[:h, :w])
    hist[ii, jj, (b0[:h, :w] + 1) % 8] += mag[:h, :w] * frac[:h, :w]
    return hist.reshape(h // cell, cell, w // cell, cell, 8).sum(axis=(1, 3))


def local128(grey):
    out = []
    for scale in (1.0, 0.5):
        g = grey if scale == 1.0 else cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        if min(g.shape) < 32:
            continue
        cells = orient_cells(g, 4)
        win = np.lib.stride_tricks.sliding_window_view(cells, (4, 4), axis=(0, 1))[::2, ::2]
        d = win.transpose(0, 1, 3, 4, 2).reshape(-1, 128)
        s = d.sum(axis=1)
        keep = s > np.percentile(s, 30) if len(s) > 10 else s > 0
        d = d[keep]
        d = np.sqrt(d / d.sum(axis=1, keepdims=True))
        out.append(d.astype(np.float32))
    return np.concatenate(out) if out else np.zeros((0, 128), np.float32)


def global512(grey, rng, count):
    h, w = grey.shape
    out = []
    for _ in range(count):
        s = rng.uniform(0.4, 1.0)
        ch, cw = max(16, int(h * s)), max(16, int(w * s))
        y, x = rng.randint(0, h - ch), rng.randint(0, w - cw)
        crop = cv2.resize(grey[y:y + ch, x:x + cw], (64, 64), interpolation=cv2.INTER_AREA)
        if rng.random() < 0.5:
            crop = crop[:, ::-1].copy()
        v = np.sqrt(orient_cells(crop, 8).reshape(-1))
        n = np.linalg.norm(v)
        if n > 0:
            out.append((v / n).astype(np.float32))
    return np.array(out, np.float32).reshape(-1, 512)


def write_fbin(path, a):
    with open(path, "wb") as f:
        f.write(struct.pack("<ii", a.shape[0], a.shape[1]))
        f.write(np.ascontiguousarray(a, np.float32).tobytes())


def main():
    if len(sys.argv) < 6:
        sys.exit(__doc__)
    root, prefix, kind, n, nq = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    seed = int(sys.argv[6]) if len(sys.argv) > 6 else 1
    rng = random.Random(seed)
    files = images(root)
    if len(files) < 20:
        sys.exit("descriptors.py: fewer than 20 images under %s" % root)
    rng.shuffle(files)
    nhold = max(10, len(files) // 10)
    held, pool = files[-nhold:], files[:-nhold]
    dim = 128 if kind == "local128" else 512

    def gather(paths, want, per_image):
        parts, total, i = [], 0, 0
        while total < want:
            p = paths[i % len(paths)]
            i += 1
            img = cv2.imread(p, cv2.IMREAD_GRAYSCALE)
            if img is None:
                continue
            f = 320.0 / max(img.shape)
            img = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
            if kind == "local128":
                d = local128(img)
                if len(d) > per_image:
                    d = d[np.array(sorted(rng.sample(range(len(d)), per_image)))]
            else:
                d = global512(img, rng, per_image)
            parts.append(d)
            total += len(d)
        return np.concatenate(parts)[:want]

    per = max(1, -(-n // len(pool))) if kind == "global512" else max(256, -(-n // len(pool)) * 2)
    base = gather(pool, n, per)
    qper = max(1, -(-nq // len(held))) if kind == "global512" else max(8, -(-nq // len(held)))
    query = gather(held, nq, qper)
    assert base.shape[1] == dim
    write_fbin(prefix + ".base.fbin", base)
    write_fbin(prefix + ".query.fbin", query)
    print("%s: %d base + %d query %s descriptors from %d + %d images under %s" %
          (prefix, len(base), len(query), kind, len(pool), len(held), root), file=sys.stderr)


if __name__ == "__main__":
    main()
