#!/usr/bin/python3
"""bench/learn/baseline.py - issue 18's quick baseline, measured next to shoplens' head: a
bias-free linear head (1280 -> 256) on frozen MobileNetV2 embeddings (from `shoplens cnn embed`,
the same embeddings the pipeline uses), trained with InfoNCE from each photo to its product's
catalog image (temperature 0.05, Adam lr 1e-3, batch 64, 60 epochs), no verification.

Usage: baseline.py SHOPLENS MODEL DATA SEEN60_LIST OUT_JSON
Reports grocery photos-val -> catalog hit@1 untrained / trained on all photos-train, and on the
photos of the 21 products not in SEEN60_LIST with the head trained on the other 60 (all 81 catalog
images in the gallery; the 60 as negatives in training).
"""
import glob, json, os, subprocess, sys
import numpy as np


def embed(paths):
    vecs = []
    for i in range(0, len(paths), 200):
        r = subprocess.run([shoplens, "cnn", "embed", model, *paths[i:i + 200], "--json"],
                           check=True, capture_output=True, text=True)
        vecs += [d["embedding"] for d in json.loads(r.stdout)]
    x = np.asarray(vecs, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def listing(sub):
    ps = sorted(glob.glob(f"{data}/grocery/{sub}/*/*"))
    return ps, [os.path.basename(os.path.dirname(p)) for p in ps]


def hit1(Q, yq, Gm, ygm):
    return float(np.mean(ygm[np.argmax(Q @ Gm.T, axis=1)] == yq))


def nrm(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def train(X, y, classes, G, yg, epochs=60, tau=0.05, lr=1e-3, bs=64, seed=0):
    """The head W (d x 256): InfoNCE from each photo X[i] (class y[i]) to its class's first catalog
    image in G (classes yg), against the catalog images of `classes` (class ids)."""
    rng = np.random.default_rng(seed)
    d = X.shape[1]
    W = rng.normal(0, 1 / np.sqrt(d), (d, 256)).astype(np.float32)
    m = np.zeros_like(W); v = np.zeros_like(W); t = 0
    Gc = np.stack([G[yg == c][0] for c in classes])
    cidx = {c: i for i, c in enumerate(classes)}
    yy = np.array([cidx[c] for c in y])
    for _ in range(epochs):
        perm = rng.permutation(len(X))
        for b in range(0, len(X), bs):
            idx = perm[b:b + bs]
            Xb = X[idx]
            U = Xb @ W; un = np.linalg.norm(U, axis=1, keepdims=True); Uh = U / un
            Vv = Gc @ W; vn = np.linalg.norm(Vv, axis=1, keepdims=True); Vh = Vv / vn
            Z = Uh @ Vh.T / tau
            Z -= Z.max(1, keepdims=True); P = np.exp(Z); P /= P.sum(1, keepdims=True)
            P[np.arange(len(idx)), yy[idx]] -= 1
            dZ = P / len(idx) / tau
            gU = dZ @ Vh; gV = dZ.T @ Uh
            gU = (gU - Uh * np.sum(Uh * gU, 1, keepdims=True)) / un
            gV = (gV - Vh * np.sum(Vh * gV, 1, keepdims=True)) / vn
            g = Xb.T @ gU + Gc.T @ gV
            t += 1
            m = 0.9 * m + 0.1 * g; v = 0.999 * v + 0.001 * g * g
            W -= lr * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    return W


if __name__ == "__main__":
    shoplens, model, data, seen_list, out = sys.argv[1:6]
    cp, cl = listing("catalog")
    tp, tl = listing("photos-train")
    vp, vl = listing("photos-val")
    prods = sorted(set(cl))
    pid = {p: i for i, p in enumerate(prods)}
    G, T, V = embed(cp), embed(tp), embed(vp)
    yg = np.array([pid[l] for l in cl]); yt = np.array([pid[l] for l in tl]); yv = np.array([pid[l] for l in vl])
    res = {"untrained_full": hit1(V, yv, G, yg)}
    W = train(T, yt, list(range(len(prods))), G, yg)
    res["trained_full"] = hit1(nrm(V @ W), yv, nrm(G @ W), yg)
    seen = [l.strip() for l in open(seen_list) if l.strip()]
    seen_ids = sorted(pid[s] for s in seen)
    ms = np.isin(yt, seen_ids); mu = ~np.isin(yv, seen_ids)
    res["untrained_unseen"] = hit1(V[mu], yv[mu], G, yg)
    W = train(T[ms], yt[ms], seen_ids, G, yg)
    res["trained_unseen"] = hit1(nrm(V[mu] @ W), yv[mu], nrm(G @ W), yg)
    json.dump(res, open(out, "w"))
    print(json.dumps(res))
