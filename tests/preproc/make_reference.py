#!/usr/bin/python3
"""Reference values for shoplens' PIL-compatible resize and torchvision-style CNN preprocessing,
computed by Pillow (Debian python3-pil) and numpy on generated images.

Run with Debian's python:  /usr/bin/python3 tests/preproc/make_reference.py [OUTDIR]
Writes resize_<case>.npy (the resized 8-bit image as float32, H x W x C) and
pre_<case>.npy (the network input tensor, float32, 1 x C x H x W or 1 x H x W x C).
tests/test_image.c and tests/test_nn.c regenerate the same input images in C (see `pixel`)
and compare: resized bytes must be identical, tensors within 1e-6.

The preprocessing follows torchvision's classification transforms on a PIL image, written out
here so that torchvision is not needed: Resize(resize) keeps the aspect ratio with the shorter
side = resize and the longer int(resize * long / short); CenterCrop pads with 0 when the image is
smaller, then offsets int(round((size - crop) / 2.0)) (Python's round: half to even); ToTensor
divides by 255 in float32; Normalize subtracts mean and divides by std in float32.
"""
import os
import sys

import numpy as np
from PIL import Image

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
M32 = 0xFFFFFFFF


def pixel(kind, x, y, c, w, h):
    """The generated test image: 'noise' (hashed), 'smooth' (gradients with a sawtooth edge
    pattern in blue) or 'mixed' (smooth plus a quarter of the noise). Same formula in C."""
    hsh = (x * 2654435761 + y * 2246822519 + c * 3266489917 + 374761393) & M32
    hsh ^= hsh >> 15
    hsh = (hsh * 2246822519) & M32
    hsh ^= hsh >> 13
    noise = hsh & 255
    if kind == "noise":
        return noise
    if c == 0:
        s = (x * 255) // max(w - 1, 1)
    elif c == 1:
        s = (y * 255) // max(h - 1, 1)
    else:
        s = ((x + 2 * y) * 16) & 255
    if kind == "smooth":
        return s
    return min(255, (s * 3 + noise) // 4)


def image(kind, w, h, channels):
    a = np.zeros((h, w, channels), np.uint8)
    for y in range(h):
        for x in range(w):
            for c in range(channels):
                a[y, x, c] = pixel(kind, x, y, c, w, h)
    return Image.fromarray(a[:, :, 0] if channels == 1 else a, "L" if channels == 1 else "RGB")


FILTERS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "box": Image.BOX,
           "nearest": Image.NEAREST}

# name: (kind, w, h, channels, out_w, out_h, filter) - keep in sync with tests/test_image.c
RESIZE = {
    "down_bilinear": ("noise", 97, 61, 3, 37, 23, "bilinear"),
    "up_bilinear": ("mixed", 29, 17, 3, 71, 40, "bilinear"),
    "down_bicubic": ("noise", 97, 61, 3, 37, 23, "bicubic"),
    "mixed_bicubic": ("smooth", 97, 61, 3, 150, 20, "bicubic"),
    "down_box": ("mixed", 97, 61, 3, 37, 23, "box"),
    "down_nearest": ("noise", 97, 61, 3, 37, 23, "nearest"),
    "up_nearest": ("mixed", 29, 17, 3, 71, 40, "nearest"),
    "grey_bilinear": ("mixed", 97, 61, 1, 37, 23, "bilinear"),
    "far_bilinear": ("mixed", 400, 300, 3, 45, 34, "bilinear"),
    "rows_only": ("noise", 97, 61, 3, 97, 23, "bilinear"),
    "cols_only": ("noise", 97, 61, 3, 37, 61, "bicubic"),
    "one_row": ("noise", 97, 1, 3, 13, 1, "bilinear"),
}

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CAFFE = ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375))
# name: (kind, w, h, resize, crop, filter, mean/std, scale, bgr, nhwc) - keep in sync with tests/test_nn.c
PRE = {
    "landscape": ("mixed", 67, 50, 40, 32, "bilinear", IMAGENET, 1 / 255, False, False),
    "portrait_bicubic": ("mixed", 50, 90, 37, 32, "bicubic", IMAGENET, 1 / 255, False, False),
    "half_up": ("noise", 90, 50, 39, 32, "bilinear", IMAGENET, 1 / 255, False, False),
    "pad": ("mixed", 60, 90, 30, 32, "bilinear", IMAGENET, 1 / 255, False, False),
    "caffe_bgr_nearest": ("mixed", 64, 48, 36, 32, "nearest", CAFFE, 1.0, True, False),
    "box_nhwc": ("mixed", 80, 70, 34, 32, "box", IMAGENET, 1 / 255, False, True),
    "no_resize": ("smooth", 45, 41, 0, 32, "bilinear", IMAGENET, 1 / 255, False, False),
}


def preprocess(img, resize, crop, filt, meanstd, scale, bgr, nhwc):
    w, h = img.size
    if resize > 0:
        short, long = (w, h) if w <= h else (h, w)
        ns, nl = resize, int(resize * long / short)
        size = (ns, nl) if w <= h else (nl, ns)
    else:
        size = (crop, crop)  # resize straight to the input size
    if size != (w, h):
        img = img.resize(size, FILTERS[filt])
    w, h = img.size
    if crop > w or crop > h:
        l, t = ((crop - w) // 2 if crop > w else 0), ((crop - h) // 2 if crop > h else 0)
        r, b = ((crop - w + 1) // 2 if crop > w else 0), ((crop - h + 1) // 2 if crop > h else 0)
        pad = Image.new("RGB", (w + l + r, h + t + b), (0, 0, 0))
        pad.paste(img, (l, t))
        img = pad
        w, h = img.size
    top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
    img = img.crop((left, top, left + crop, top + crop))
    a = np.asarray(img, dtype=np.uint8).astype(np.float32)
    if bgr:
        a = a[:, :, ::-1]
    a = a * np.float32(scale) if scale != 1 / 255 else a / np.float32(255)
    a = (a - np.array(meanstd[0], np.float32)) / np.array(meanstd[1], np.float32)
    t = a[None] if nhwc else a.transpose(2, 0, 1)[None]
    return np.ascontiguousarray(t, dtype=np.float32)


for name, (kind, w, h, ch, ow, oh, filt) in RESIZE.items():
    r = image(kind, w, h, ch).resize((ow, oh), FILTERS[filt])
    a = np.asarray(r, dtype=np.uint8).reshape(oh, ow, ch).astype(np.float32)
    np.save(os.path.join(OUT, "resize_%s.npy" % name), a)
    print("resize_%s: %dx%d -> %dx%d %s" % (name, w, h, ow, oh, filt))
for name, (kind, w, h, resize, crop, filt, ms, scale, bgr, nhwc) in PRE.items():
    t = preprocess(image(kind, w, h, 3), resize, crop, filt, ms, scale, bgr, nhwc)
    np.save(os.path.join(OUT, "pre_%s.npy" % name), t)
    print("pre_%s: %s" % (name, t.shape))
