#!/usr/bin/env python3
"""bench/learn/checkrefs.py [--search SEARCH_JSONL] CHECK_JSON... - check's accept rates from `shoplens check --photos
PAIRS --json` outputs (PAIRS: every photo with its own product and with every other product, as
bench/learn/calib.py's valpairs.csv; the genuine product is the photo's folder name).
Prints, per file: genuine accepted, other products accepted (all of them: the exact average of a
random other product), the same on one seeded random other product per photo (Python
random.Random(22) over the photo's other products, photos and products sorted), ECE / Brier at
equal weight and the best threshold on these pairs (genuine at <= 2% others: a bound, not a
result; bench/learn/checkstats.py). With --search (the output of `shoplens search <the same photos>
-k 1.. --json` on the same store, one JSON per line): how often check's best-scoring product of a
photo is search's first result, i.e. whether search and check agree which product it shows."""
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checkstats import best_threshold, ece_brier  # noqa: E402


def rates(path):
    d = json.load(open(path))
    by = {}
    for r in d["results"]:
        if "confidence" in r:
            by.setdefault(r["photo"], []).append(r)
    rng = random.Random(22)
    pairs, one = [], []
    tp = fp = 0
    for photo in sorted(by):
        own = os.path.basename(os.path.dirname(photo))
        for r in by[photo]:
            pairs.append((r["confidence"], r["product_id"] == own))
            if r["product_id"] == own:
                tp += r["match"]
            else:
                fp += r["match"]
        others = sorted((r for r in by[photo] if r["product_id"] != own), key=lambda r: r["product_id"])
        if others:
            one.append(rng.choice(others)["match"])
    g = [c for c, gen in pairs if gen]
    o = [c for c, gen in pairs if not gen]
    ece, brier = ece_brier(pairs)
    best = {ph: max(by[ph], key=lambda r: r["score"])["product_id"] for ph in by}
    return {"best": best, "genuine": tp / len(g), "others": fp / len(o), "one_random_other": sum(one) / len(one),
            "P": len(g), "N": len(o), "ece": ece, "brier": brier, "best_at_2pct": best_threshold(g, o),
            "failed": d["failed"]}


args = sys.argv[1:]
first = {}
if args[:1] == ["--search"]:
    for line in open(args[1]):
        if line.strip():
            q = json.loads(line)
            first[q["image"]] = q["results"][0]["product_id"] if q["results"] else None
    args = args[2:]
for p in args:
    r = rates(p)
    print(f"{p}: genuine {r['genuine']:.3f} ({r['P']}), other products {r['others']:.4f} ({r['N']}), "
          f"one random other {r['one_random_other']:.4f}, ECE {r['ece']:.3f}, Brier {r['brier']:.3f}, "
          f"best threshold: genuine {r['best_at_2pct']:.3f} at <= 2%, failed {r['failed']}")
    if first:
        both = [ph for ph in r["best"] if ph in first]
        print(f"  check's best product is search's first result for {sum(r['best'][ph] == first[ph] for ph in both)}"
              f"/{len(both)} photos")
