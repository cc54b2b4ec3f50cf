#!/usr/bin/env python3
"""bench/learn/calib.py SHOPLENS DATA MODEL WORK OUT_MD REV - calibrated confidence (issue 18 item 2)
on the grocery set, through the CLI on real stores:

- check: every photos-val photo against its own product (genuine) and against every other product
  (the rate at which "a photo against a random other product" is accepted, exactly: the average over
  all other products), at the store's operating point, with the calibration fitted
  (a) from the catalog alone (`add`), (b) from the catalog after `train` without photos (a head
  learned from augmented catalog images), (c) from photos-train (`train --photos`);
- search: the match flags of the results for photos-val (products in the store), for the photos
  of 21 products left out of a 60-product store (products the store does not sell: a match there
  is false), and for 100 clothing photos (unrelated to groceries);
with and without a model (MobileNetV2 in the recommended fusion, `init --model`; the default
features). Writes the section between the markers in OUT_MD (bench/results/learn.md)."""
import csv, datetime, json, os, random, shutil, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checkstats import best_threshold, ece_brier  # noqa: E402

B, DATA, MODEL, WORK, OUT, REV = sys.argv[1:7]
# SL_CALIB_CONFIGS="model" (or "nomodel") measures one configuration ("none": only writes the report from an earlier
# run's results in WORK); the other's results from an
# earlier run in WORK (calib.json, calib-cmds.json) stay in the report
CONFIGS = [c for c in os.environ.get("SL_CALIB_CONFIGS", "model nomodel").split() if c in ("model", "nomodel")]
G = f"{DATA}/grocery"
os.makedirs(WORK, exist_ok=True)
CMDS = []


def sh(*args, out=None, log=True):
    cmd = [B] + [str(a) for a in args]
    if log:
        CMDS.append(" ".join(a.replace(DATA, "DATA").replace(WORK, "WORK").replace(MODEL, "MODEL") for a in cmd))
    t0 = time.time()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode not in (0, 3):
        sys.stderr.write(r.stderr)
        raise SystemExit(f"failed: {' '.join(cmd)}")
    if out:
        open(out, "w").write(r.stdout)
    return r.stdout, time.time() - t0


prods = sorted(os.listdir(f"{G}/catalog"))
sh_ = prods[:]
random.Random(1).shuffle(sh_)
seen = sorted(sh_[:60])
unseen = sorted(sh_[60:])
val = [(p, f"{G}/photos-val/{p}/{f}") for p in sorted(os.listdir(f"{G}/photos-val"))
       for f in sorted(os.listdir(f"{G}/photos-val/{p}"))]
# every val photo against every product: one CSV, grouped by photo (described once)
pairs = f"{WORK}/valpairs.csv"
with open(pairs, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["photo", "product_id"])
    for p, ph in val:
        for q in prods:
            w.writerow([ph, q])
# the 60-product catalog and its training photos
rows = list(csv.DictReader(open(f"{G}/catalog.csv")))
cat60 = f"{WORK}/catalog60.csv"
with open(cat60, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
    w.writeheader()
    for r in rows:
        if r["product_id"] in seen:
            r = dict(r)
            r["image"] = f"{G}/{r['image']}"
            w.writerow(r)
train60 = f"{WORK}/train60.csv"
with open(train60, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["photo", "product_id"])
    for p in seen:
        for x in sorted(os.listdir(f"{G}/photos-train/{p}")):
            w.writerow([f"{G}/photos-train/{p}/{x}", p])
val21 = [ph for p, ph in val if p in unseen]
clothing = sorted(f"{DATA}/clothing/{c}/{x}" for c in os.listdir(f"{DATA}/clothing") for x in os.listdir(f"{DATA}/clothing/{c}"))
clothing = clothing[:: max(1, len(clothing) // 100)][:100]


def check_rates(store, reuse=False):
    if reuse:  # an earlier run's output (SL_CALIB_ROWS)
        out, sec = open(f"{store}.check.json").read(), float("nan")
    else:
        out, sec = sh("check", "--photos", pairs, "--store", store, "--json", out=f"{store}.check.json")
    d = json.loads(out)
    P = N = tp = fp = 0
    pairs_c = []  # (confidence, genuine)
    for r in d["results"]:
        if "confidence" not in r:
            continue
        gen = os.path.basename(os.path.dirname(r["photo"])) == r["product_id"]
        pairs_c.append((r["confidence"], gen))
        if gen:
            P += 1
            tp += r["match"]
        else:
            N += 1
            fp += r["match"]
    ece, brier = ece_brier(pairs_c)
    return {"tar": tp / P, "far": fp / N, "P": P, "N": N, "ece": ece, "brier": brier,
            "failed": d["failed"], "seconds": sec}


def oracle(path, far=0.02):
    """The best share of genuine pairs any single confidence threshold accepts with at most `far`
    of the other-product pairs (chosen on the evaluation photos themselves: a bound on what an
    operating point can reach with these confidences, not a result)."""
    if not os.path.exists(path):
        return None
    d = json.load(open(path))
    g, o = [], []
    for r in d["results"]:
        if "confidence" in r:
            (g if os.path.basename(os.path.dirname(r["photo"])) == r["product_id"] else o).append(r["confidence"])
    return best_threshold(g, o, far)


def search(store, photos, name, reuse=False):
    if reuse:
        return [json.loads(l) for l in open(f"{store}.{name}.jsonl") if l.strip()]
    out, sec = sh("search", *photos, "-k", "5", "--store", store, "--json", out=f"{store}.{name}.jsonl", log=False)
    CMDS.append(f"shoplens search <{len(photos)} {name} photos> -k 5 --store {os.path.basename(store)} --json")
    return [json.loads(l) for l in out.splitlines() if l.strip()]


def search_stats(res, truth=None):
    n = len(res)
    anym = sum(any(r["match"] for r in q["results"]) for q in res)
    s = {"n": n, "any_match": anym / n}
    if truth:
        top_ok = top_ok_m = top_bad_m = 0
        for q in res:
            t = os.path.basename(os.path.dirname(q["image"]))
            r0 = q["results"][0]
            if r0["product_id"] == t:
                top_ok += 1
                top_ok_m += r0["match"]
            else:
                top_bad_m += r0["match"]
        s.update(hit1=top_ok / n, top_right_match=top_ok_m / n, top_wrong_match=top_bad_m / n,
                 precision=top_ok_m / (top_ok_m + top_bad_m) if top_ok_m + top_bad_m else float("nan"))
    return s


def info(store):
    out, _ = sh("info", "--store", store, "--json", log=False)
    return json.loads(out)["calibration"]


# results of a configuration (SL_CALIB_CONFIGS) or rows (SL_CALIB_ROWS) measured in an earlier run
# are kept and reported: the rows measured now replace theirs
ALL_ROWS = ("catalog", "catalog-head", "photos", "calib-photos", "open")
ROWS = [r for r in os.environ.get("SL_CALIB_ROWS", " ".join(ALL_ROWS)).split() if r in ALL_ROWS]
R = {}
if os.path.exists(f"{WORK}/calib.json"):
    R = json.load(open(f"{WORK}/calib.json"))
    if os.path.exists(f"{WORK}/calib-cmds.json"):
        CMDS[:0] = json.load(open(f"{WORK}/calib-cmds.json"))


def row(cfg, name, store, fn, with_search=False):
    """Runs a row (fn() -> its results) when selected; otherwise keeps the earlier run's results,
    from calib.json or, when that run did not get to write it, from its output files in WORK."""
    key = f"{cfg}/{name}"
    if name.split("-")[0] == "open" and "open" in ROWS or name in ROWS:
        R[key] = fn()
        R[key]["rev"] = REV
        R[key]["load"] = os.getloadavg()[0]
    elif key not in R and os.path.exists(f"{store}.check.json"):
        R[key] = {"check": check_rates(store, reuse=True), "cal": info(store), "rev": "(an earlier run)"}
        if with_search:
            R[key]["val"] = search_stats(search(store, None, "val", reuse=True), True)
            R[key]["clothing"] = search_stats(search(store, None, "clothing", reuse=True))


for cfg in CONFIGS:
    init = ["--model", MODEL] if cfg == "model" else []
    base = f"{WORK}/{cfg}-catalog"

    def catalog():
        shutil.rmtree(base, ignore_errors=True)
        sh("init", "--store", base, *init)
        _, add_s = sh("add", f"{G}/catalog.csv", "--store", base, "--quiet", "--json")
        return {"check": check_rates(base), "cal": info(base), "add_seconds": add_s,
                "val": search_stats(search(base, [p for _, p in val], "val"), True),
                "clothing": search_stats(search(base, clothing, "clothing"))}
    row(cfg, "catalog", base, catalog, True)
    # a head from augmented catalog images (train without photos), calibrated from the catalog again
    ch = f"{WORK}/{cfg}-catalog-head"

    def catalog_head():
        shutil.rmtree(ch, ignore_errors=True)
        shutil.copytree(base, ch)
        sh("train", "--store", ch, "--quiet", "--json")
        return {"check": check_rates(ch), "cal": info(ch)}
    row(cfg, "catalog-head", ch, catalog_head)
    # photos-train: head + calibration from the photos
    ph = f"{WORK}/{cfg}-photos"

    def photos():
        shutil.rmtree(ph, ignore_errors=True)
        shutil.copytree(base, ph)
        out, tr_s = sh("train", "--store", ph, "--photos", f"{G}/photos-train", "--quiet", "--json")
        return {"check": check_rates(ph), "cal": info(ph), "train": json.loads(out), "train_seconds": tr_s,
                "val": search_stats(search(ph, [p for _, p in val], "val"), True),
                "clothing": search_stats(search(ph, clothing, "clothing"))}
    row(cfg, "photos", ph, photos, True)
    # photos-train without a head: the calibration alone (calibrate --photos on the catalog store)
    cp = f"{WORK}/{cfg}-calib-photos"

    def calib_photos():
        shutil.rmtree(cp, ignore_errors=True)
        shutil.copytree(base, cp)
        _, cal_s = sh("calibrate", "--store", cp, "--photos", f"{G}/photos-train", "--quiet", "--json")
        return {"check": check_rates(cp), "cal": info(cp), "calibrate_seconds": cal_s,
                "val": search_stats(search(cp, [p for _, p in val], "val"), True),
                "clothing": search_stats(search(cp, clothing, "clothing"))}
    row(cfg, "calib-photos", cp, calib_photos, True)
    # products the store does not sell: 60 products, their photos; photos of the other 21
    for kind in ("catalog", "photos"):
        s60 = f"{WORK}/{cfg}-60-{kind}"

        def open_row(kind=kind, s60=s60):
            shutil.rmtree(s60, ignore_errors=True)
            sh("init", "--store", s60, *init)
            sh("add", cat60, "--store", s60, "--quiet", "--json")
            if kind == "photos":
                sh("train", "--store", s60, "--photos", train60, "--quiet", "--json")
            return {"search": search_stats(search(s60, val21, "val21"))}
        row(cfg, f"open-{kind}", s60 + ".none", open_row)
        if f"{cfg}/open-{kind}" not in R and os.path.exists(f"{s60}.val21.jsonl"):
            R[f"{cfg}/open-{kind}"] = {"search": search_stats(search(s60, None, "val21", reuse=True)), "rev": "(an earlier run)"}
json.dump(R, open(f"{WORK}/calib.json", "w"), indent=1)
json.dump(CMDS, open(f"{WORK}/calib-cmds.json", "w"), indent=1)
CONFIGS = [c for c in ("model", "nomodel") if f"{c}/catalog" in R]

L = []
L.append("<!-- calib: generated by bench/learn/calib.sh; do not edit by hand -->")
L.append("## Calibrated confidence (issue 18 item 2)\n")
names = {"model": "MobileNetV2", "nomodel": "no model"}
def _run(c):
    parts = []
    for k in ("catalog", "catalog-head", "photos", "calib-photos", "open-catalog", "open-photos"):
        if f"{c}/{k}" not in R:
            parts.append(f"{k} not measured")
            continue
        r = R[f"{c}/{k}"]
        load = f", load average {r['load']:.1f} after it" if "load" in r else ""
        parts.append(f"{k} at {r.get('rev', '(an earlier run, not recorded)')}{load}")
    return f"{names[c]} rows: " + ", ".join(parts)
revs = "; ".join(_run(c) for c in CONFIGS)
L.append(f"Generated by `bench/learn/calib.sh` ({revs}); report written {datetime.date.today()}. Stores built with the CLI exactly as a shop would; "
         "\"model\" = `init --model mobilenetv2.onnx` (the recommended fusion of the commit named), \"no model\" = the default features. "
         "The operating points are the store's: check at most 2% false accepts (95% Wilson bound) on its calibration "
         "pairs; search, calibrated from labelled photos on a store without a head (`calibrate --photos`), at least 90% of "
         "accepted first results right (95% Wilson bound) on its calibration photos, otherwise at most 2% of its "
         "negatives. `train --photos` fits check's map on the photos of whole products held out of a stand-in head "
         "trained like the final one on the other products' photos (with the margin), search's map on all photos "
         "through the final head (the match score alone, the 2% rule).\n")
L.append(f"### check on grocery photos-val ({len(val)} photos)\n")
L.append("Genuine: each photo against its own product. Other products: each photo against every one of the "
         f"{len(prods) - 1} other products ({len(val) * (len(prods) - 1):,} checks; the exact average of \"a photo against a random other product\").\n")
L.append("| features | calibration from | genuine accepted | other products accepted | ECE | Brier | calibration pairs (genuine / negatives) | best threshold on val: genuine at <= 2% |")
L.append("|---|---|---|---|---|---|---|---|")
lab = {"catalog": "the catalog alone (`add`)", "catalog-head": "the catalog alone, after `train` without photos (catalog head)",
       "calib-photos": "photos-train (`calibrate --photos`, no head)", "photos": "photos-train (`train --photos`: head + calibration on the photos of products held out of a stand-in head)"}
for cfg, cl in [x for x in (("model", "MobileNetV2"), ("nomodel", "no model")) if x[0] in CONFIGS]:
    for k in ("catalog", "catalog-head", "calib-photos", "photos"):
        r = R.get(f"{cfg}/{k}")
        if r is None:  # not measured in this WORK (SL_CALIB_ROWS)
            continue
        c, m = r["check"], r["cal"]["check"]
        orc = oracle(f"{WORK}/{cfg}-{k}.check.json")
        L.append(f"| {cl} | {lab[k]} | {c['tar']:.3f} | {c['far']:.4f} | {c['ece']:.3f} | {c['brier']:.3f} | "
                 f"{m['positives']} / {m['negatives']} | {'-' if orc is None else f'{orc:.3f}'} |")
L.append("\nTargets (issue 18): from photos-train >= 0.90 genuine at <= 0.02 other products; from the catalog alone "
         ">= 0.70 at <= 0.02. ECE: expected calibration error of check's confidence (10 equal-width bins, Naeini et al. "
         "2015) and Brier: mean squared error of the confidence, both with genuine pairs and other-product pairs at equal "
         "weight (the prior the calibration is fitted for): 0 is perfect, a constant 0.5 has ECE 0 and Brier 0.25. "
         "Best threshold on val: the most genuine pairs one confidence threshold, chosen on these val pairs "
         "themselves, accepts with at most 2% of the other-product pairs - an upper bound on what any operating "
         "point can do with these confidences, not a result.\n")
L.append("### search: match flags\n")
L.append("| features | store | photos | top result right | top result right and a match | top result wrong and a match | precision of a top match | right top results marked a match | any result a match |")
L.append("|---|---|---|---|---|---|---|---|---|")
for cfg, cl in [x for x in (("model", "MobileNetV2"), ("nomodel", "no model")) if x[0] in CONFIGS]:
    for k, st in (("catalog", "81 products, calibrated from the catalog"), ("calib-photos", "81 products, `calibrate --photos` (no head)"),
                  ("photos", "81 products, `train --photos`")):
        r = R.get(f"{cfg}/{k}", {})
        if "val" not in r:  # not measured (or before this row existed)
            continue
        v = r["val"]
        L.append(f"| {cl} | {st} | photos-val (in the store) | {v['hit1']:.3f} | {v['top_right_match']:.3f} | "
                 f"{v['top_wrong_match']:.3f} | {v['precision']:.3f} | {v['top_right_match'] / v['hit1']:.3f} | {v['any_match']:.3f} |")
        L.append(f"| {cl} | {st} | 100 clothing photos (unrelated) | - | - | - | - | - | {r['clothing']['any_match']:.3f} |")
    for k, st in (("catalog", "60 products, calibrated from the catalog"), ("photos", "60 products, `train --photos` (their photos)")):
        if f"{cfg}/open-{k}" not in R:
            continue
        s = R[f"{cfg}/open-{k}"]["search"]
        L.append(f"| {cl} | {st} | photos-val of the 21 other products (not sold) | - | - | - | - | - | {s['any_match']:.3f} |")
L.append("\nA match for a product the store does not sell, or for a clothing photo, is a false match. Search "
         "flags use the result map (fitted on genuine pairs against the first wrong result of a calibration photo, with "
         "its product in the catalog and left out), check the pair map (random other products). The margin to the best "
         "other product is an input of both maps, and search follows the precision rule, only for labelled photos on a "
         "store without a head (`calibrate --photos` on the untrained store); `train --photos` uses the margin in "
         "check's map only (fitted on photos of products held out of its stand-in head); the other maps use the "
         "match score alone and the 2% rule (docs/learn.md).\n")
L.append("### the calibrations\n")
L.append("| features | from | photos | check: match at confidence (score) | accepted on its pairs: genuine / other | search: match at | accepted: genuine / wrong first | margin weight: check / search | search point on the calibration photos' first results: precision / right ones accepted |")
L.append("|---|---|---|---|---|---|---|---|---|")
for cfg, cl in [x for x in (("model", "MobileNetV2"), ("nomodel", "no model")) if x[0] in CONFIGS]:
    for k in ("catalog", "catalog-head", "calib-photos", "photos"):
        if f"{cfg}/{k}" not in R:
            continue
        c = R[f"{cfg}/{k}"]["cal"]
        a, b = c["check"], c["search"]
        L.append(f"| {cl} | {lab[k]} | {c['photos']} | {a['threshold']:.3f} ({a['score_threshold']:.3f}) | "
                 f"{a['accept_rate']:.3f} / {a['false_accept_rate']:.4f} | {b['threshold']:.3f} ({b['score_threshold']:.3f}) | "
                 f"{b['accept_rate']:.3f} / {b['false_accept_rate']:.4f} | {a.get('margin_weight', 0):.2f} / {b.get('margin_weight', 0):.2f} | "
                 + (f"{b['precision']:.3f} / {b['recall']:.3f} |" if 'precision' in b else "- |"))
L.append("\n### cost\n")
def _sec(v):
    return "(not recorded)" if v is None or v != v else f"{v:.1f} s"
for cfg, cl in [x for x in (("model", "MobileNetV2"), ("nomodel", "no model")) if x[0] in CONFIGS]:
    t = R[f"{cfg}/photos"].get("train", {})
    L.append(f"- {cl}: `add` of the {len(prods)}-product catalog with its catalog calibration {_sec(R[f'{cfg}/catalog'].get('add_seconds'))}; "
             f"`calibrate --photos photos-train` (1,000 of the 2,640 photos) {_sec(R.get(f'{cfg}/calib-photos', {}).get('calibrate_seconds'))}; "
             f"`train --photos photos-train` {_sec(R[f'{cfg}/photos'].get('train_seconds'))} in all (describing {_sec(t.get('describe_seconds'))}, "
             f"head {_sec(t.get('train_seconds'))}, the rest is the stand-in head and the calibration on "
             f"{t.get('calibration_heldout', 0)} held-out photos). Checking the {len(val) * len(prods):,} pairs: "
             f"{_sec(R[f'{cfg}/photos']['check']['seconds'])} ({len(val)} photos, each described and ranked once).")
L.append("\n### commands\n")
seen_c = set()
for c in CMDS:
    if c not in seen_c:
        seen_c.add(c)
        L.append(f"- `{c}`")
L.append("\nDATA = ../shared/data, MODEL = ../shared/models/mobilenetv2.onnx, WORK = the bench's scratch folder; "
         "valpairs.csv lists every photos-val photo with every product, catalog60.csv / train60.csv the 60 products "
         "of h18-train's split (Python random.Random(1) shuffle of the sorted ids, first 60) and their photos-train photos.")
L.append("<!-- /calib -->")
section = "\n".join(L) + "\n"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mdblock
mdblock.replace(OUT, "calib", section)
print(f"bench/learn/calib: wrote {OUT}")
