#!/usr/bin/env python3
"""bench/scale/seed_catalog.py DATA_DIR - prints the seed catalog (CSV) of bench/scale: every
real catalog-like image of DATA_DIR as a product of one image.

- grocery/catalog (81 iconic images) and grocery/photos-train (2,640 shop photos, folder =
  product): category = the product's coarse category from grocery/catalog.csv (Apple, Juice...)
- coil100 (1,800 turntable views of 100 objects): category "coil/objN"
- clothing (713 garments): category "clothing/TYPE"
grocery/photos-val stays out: it is the query set. Prices are drawn from exp(N(3, 1)) with a
fixed seed, like the replicas' (bench/scale.c), so price filters select the same share of both.
"""
import csv
import math
import os
import random
import sys

root = sys.argv[1]
rng = random.Random(7)
out = csv.writer(sys.stdout)
out.writerow(["product_id", "image", "title", "category", "price"])


def price():
    return "%.2f" % math.exp(3.0 + rng.gauss(0.0, 1.0))


coarse = {}
with open(os.path.join(root, "grocery", "catalog.csv"), newline="") as f:
    for r in csv.DictReader(f):
        coarse[r["product_id"]] = (r["title"], r["category"])
        out.writerow(["g-" + r["product_id"], os.path.join(root, "grocery", r["image"]), r["title"],
                      r["category"], price()])
photos = os.path.join(root, "grocery", "photos-train")
for d in sorted(os.listdir(photos)):
    title, cat = coarse.get(d, (d, "grocery"))
    for fn in sorted(os.listdir(os.path.join(photos, d))):
        out.writerow(["gp-%s-%s" % (d, os.path.splitext(fn)[0]), os.path.join(photos, d, fn), title, cat, price()])
for d in sorted(os.listdir(os.path.join(root, "coil100"))):
    for fn in sorted(os.listdir(os.path.join(root, "coil100", d))):
        out.writerow(["c-%s-%s" % (d, os.path.splitext(fn)[0]), os.path.join(root, "coil100", d, fn), d,
                      "coil/" + d, price()])
for d in sorted(os.listdir(os.path.join(root, "clothing"))):
    for fn in sorted(os.listdir(os.path.join(root, "clothing", d))):
        out.writerow(["w-%s-%s" % (d, os.path.splitext(fn)[0]), os.path.join(root, "clothing", d, fn), d,
                      "clothing/" + d, price()])
