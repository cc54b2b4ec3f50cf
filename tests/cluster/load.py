#!/usr/bin/env python3
"""tests/cluster/load.py - search load on a cluster for the failure tests and the benchmark.

    load.py --urls URL[,URL...] --images DIR_OR_FILE[,...] --seconds S --threads T --out FILE
            [--k K] [--stop-file F]

T threads send POST /v1/search (the photo as a raw image/jpeg body) in a loop, spread over
the URLs, until S seconds passed or the stop file exists. One JSON line per request goes to
FILE: {"t": start (unix seconds), "ms": latency, "status": HTTP status (0: no answer),
"partial": bool, "missing": [...], "url": ...}. Prints a summary on stdout.
"""
import argparse
import glob
import json
import os
import threading
import time
import urllib.error
import urllib.request


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--urls", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--out", required=True)
    ap.add_argument("--stop-file")
    a = ap.parse_args()
    urls = a.urls.split(",")
    paths = []
    for p in a.images.split(","):
        paths += sorted(glob.glob(os.path.join(p, "**", "*.jpg"), recursive=True)) if os.path.isdir(p) else [p]
    photos = [open(p, "rb").read() for p in paths]
    lock = threading.Lock()
    out = open(a.out, "w")
    end = time.time() + a.seconds
    counter = [0]

    def worker(tid):
        i = tid
        while time.time() < end and not (a.stop_file and os.path.exists(a.stop_file)):
            url = urls[i % len(urls)]
            body = photos[i % len(photos)]
            i += a.threads
            req = urllib.request.Request(url.rstrip("/") + "/v1/search?k=%d" % a.k, data=body,
                                         headers={"Content-Type": "image/jpeg"})
            t0 = time.time()
            status, partial, missing = 0, False, []
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    status = r.status
                    d = json.loads(r.read())
                    partial = bool(d.get("partial"))
                    missing = d.get("missing_shards", [])
            except urllib.error.HTTPError as e:
                status = e.code
            except Exception:
                status = 0
            rec = {"t": t0, "ms": (time.time() - t0) * 1e3, "status": status, "partial": partial,
                   "missing": missing, "url": url}
            with lock:
                out.write(json.dumps(rec) + "\n")
                counter[0] += 1

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(a.threads)]
    t0 = time.time()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out.close()
    dt = time.time() - t0
    print(json.dumps({"requests": counter[0], "seconds": dt, "per_s": counter[0] / dt if dt else 0}))


if __name__ == "__main__":
    main()
