#!/usr/bin/python3
"""bench/image/peers.py - decode + resize to 224 px (longest side) with the peers, same files and
same protocol as bench_image: THREADS Python threads (cv2 and PIL release the GIL while decoding),
best images/s (wall) and least CPU ms per image over PASSES passes, one JSON line per method.
  opencv_full      cv2.imread (full decode) + cv2.resize INTER_AREA
  opencv_reduced2  cv2.imread IMREAD_REDUCED_COLOR_2 (1/2 DCT scaling) + INTER_AREA
  opencv_reduced4  cv2.imread IMREAD_REDUCED_COLOR_4 (1/4 DCT scaling) + INTER_AREA
  pil_draft        PIL Image.draft (DCT scaling to >= 224 px) + resize BOX (area)
Usage: peers.py DIR THREADS [PASSES]
"""
import glob, json, os, sys, time
from concurrent.futures import ThreadPoolExecutor

import cv2
from PIL import Image

cv2.setNumThreads(1)  # one image per thread, as bench_image does


def size224(w, h):
    s = 224.0 / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


def cv_loader(flag):
    def f(path):
        im = cv2.imread(path, flag)
        h, w = im.shape[:2]
        return cv2.resize(im, size224(w, h), interpolation=cv2.INTER_AREA)
    return f


def pil_draft(path):
    with Image.open(path) as im:
        w, h = im.size
        tw, th = size224(w, h)
        im.draft("RGB", (tw, th))
        return im.convert("RGB").resize((tw, th), Image.BOX)


def main():
    d, threads = sys.argv[1], int(sys.argv[2])
    passes = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    files = sorted(glob.glob(os.path.join(d, "*.jpg")))
    methods = [("opencv_full", cv_loader(cv2.IMREAD_COLOR)),
               ("opencv_reduced2", cv_loader(cv2.IMREAD_REDUCED_COLOR_2)),
               ("opencv_reduced4", cv_loader(cv2.IMREAD_REDUCED_COLOR_4)),
               ("pil_draft", pil_draft)]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for name, fn in methods:
            best, cpu_best = 0.0, 1e30
            for _ in range(passes):
                t0, c0 = time.perf_counter(), time.process_time()
                out = list(pool.map(fn, files))
                best = max(best, len(files) / (time.perf_counter() - t0))
                cpu_best = min(cpu_best, (time.process_time() - c0) * 1e3 / len(files))
            assert all(max(o.shape[:2] if hasattr(o, "shape") else o.size) == 224 for o in out)
            print(json.dumps({"method": name, "threads": threads, "images": len(files),
                              "images_per_s": round(best, 1), "cpu_ms_per_image": round(cpu_best, 3),
                              "failed": 0}), flush=True)


if __name__ == "__main__":
    main()
