#!/usr/bin/python3
"""bench/learn/finetune.py - prototype (PyTorch, never a product dependency) of issue 18's "if a
head on frozen descriptors cannot reach the targets, fine-tune the CNN's last block(s) too",
measured against shoplens' head recipe on frozen MobileNetV2 embeddings. Global descriptors only
(no verification): hit@1 of grocery photos-val against the 81 catalog images, the 60/21 split of
bench/learn/run.sh (Python random.Random(1) shuffle of the sorted product ids, first 60 seen), and
clothing halves (bit 0 of SHA-256("1:" + file name); 0 = A).

  finetune.py dump SHOPLENS MODEL DATA WORK
      Runs the engine (`shoplens cnn preprocess --max-side 640`, `cnn run --output add_90`) on
      grocery catalog / photos-val / photos-train and clothing: the input of MobileNetV2's last
      inverted-residual block (7x7x160), for the centre crop (view 0) and for seeded augmented
      views (random resized crop 55-100% of the 224 crop, aspect 3/4..4/3, flip; 3 for the catalog,
      1 for the photo sets), then caches the last 1x1 conv's input (7x7x320, "c") and the pooled
      1280-d embedding ("e", what the store keeps) per view. The tail's weights (conv_90..conv_95
      of the ONNX zoo MobileNetV2 as built by ../shared/models/sources/build_models.py) are read
      from MODEL. Tensor names are those of that file; other models need other names.
  finetune.py report WORK/finetune.jsonl bench/results/learn.md REV [NOTE]
      Writes (replaces) the "Fine-tuning prototype" block of the results file.
  finetune.py run WORK CONFIG_JSON PROTOCOLS
      One configuration on the comma-separated protocols (grocery, g60, cloth, clothA); prints
      one JSON line. CONFIG keys: untrained, conv (fine-tune the last 1x1 conv 320->1280 with its
      folded bias, ReLU6, mean pool; else the head trains on frozen embeddings), block (also the
      last inverted-residual block), rank (residual map c + cVU, 0 = centring only), steps, lr
      (map), lr_conv, wd (L2 towards the pretrained weights), aug (random augmented view per
      photo), flip (feature-map flip), gem (GeM exponent, 0 = mean pool), maxg (catalog images
      per class sampled per step to form the proxies; shoplens sums all of them), seed;
      {"baseline":1}: issue 18's InfoNCE baseline (baseline.py's recipe) on the same embeddings.
Protocols: grocery = train on photos-train, hit@1 of photos-val; g60 = train on the photos of the
60 seen products, hit@1 of the 21 others' photos-val (and the 60's); cloth = train on half A with
proxies from half B's images (what `eval --train clothing-A --gallery clothing-B` does: the
labels of the evaluated half form the proxies), leave-one-out mAP on B; clothA = proxies from
half A's own images (no label of B used), leave-one-out mAP on B.
The head is shoplens' (docs/learn.md): per-domain centring, residual low-rank map, Proxy-NCA with
proxies = the head's image of the normalized sum of a class's catalog images, temperature 0.05,
Adam, batch 64. With conv, domain means follow an EMA during training and are exact at the end.
"""
import glob, hashlib, json, os, random, subprocess, sys, time
import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(int(os.environ.get('TT', '1')))
TAIL = (90, 92, 94, 95)


# ---- the tail's weights from the ONNX file (a minimal protobuf reader: ModelProto.graph = 7,
# GraphProto.initializer = 5, TensorProto dims = 1, float_data = 4, name = 8, raw_data = 9)
def _varint(b, i):
    r = s = 0
    while True:
        c = b[i]; i += 1; r |= (c & 0x7f) << s; s += 7
        if c < 0x80:
            return r, i


def _fields(b):
    i, n = 0, len(b)
    while i < n:
        k, i = _varint(b, i); f, t = k >> 3, k & 7
        if t == 0: v, i = _varint(b, i)
        elif t == 1: v = b[i:i + 8]; i += 8
        elif t == 5: v = b[i:i + 4]; i += 4
        elif t == 2:
            ln, i = _varint(b, i); v = b[i:i + ln]; i += ln
        else: raise ValueError('protobuf wire type %d' % t)
        yield f, t, v


def onnx_initializers(path, want):
    b = memoryview(open(path, 'rb').read()); out = {}
    for f, _, v in _fields(b):
        if f != 7: continue
        for g, _, vv in _fields(v):
            if g != 5: continue
            dims, name, raw, fd = [], None, None, []
            for h, ht, hv in _fields(vv):
                if h == 1:
                    if ht == 0: dims.append(hv)
                    else:
                        j = 0
                        while j < len(hv): d, j = _varint(hv, j); dims.append(d)
                elif h == 8: name = bytes(hv).decode()
                elif h == 9: raw = bytes(hv)
                elif h == 4: fd.append(np.frombuffer(bytes(hv), np.float32))
            if name in want:
                a = np.frombuffer(raw, np.float32) if raw is not None else np.concatenate(fd)
                out[name] = a.reshape(dims).copy()
    return out


def tail_names():
    return ['conv_%d_%s' % (i, s) for i in TAIL for s in ('weight', 'bias')]


# ---- the network tail
def block(a, P):
    y = F.conv2d(a, P['conv_90_weight'], P['conv_90_bias']).clamp(0, 6)
    y = F.conv2d(y, P['conv_92_weight'], P['conv_92_bias'], padding=1, groups=960).clamp(0, 6)
    return F.conv2d(y, P['conv_94_weight'], P['conv_94_bias'])


def batched(fn, x, bs=256):
    with torch.no_grad():
        return torch.cat([fn(x[i:i + bs]) for i in range(0, len(x), bs)])


def pool(m, gem):
    if gem: return m.clamp(min=1e-6).pow(gem).mean((2, 3)).pow(1.0 / gem)
    return m.mean((2, 3))


def embed_from_c(c, P, gem=0):
    return F.normalize(pool(F.conv2d(c, P['conv_95_weight'], P['conv_95_bias']).clamp(0, 6), gem), dim=1)


def nrm(x): return F.normalize(x, dim=1)


def hit1(Q, yq, G, yg):
    return float((yg[(Q @ G.T).argmax(1)] == yq).float().mean())


def loo_map(Q, G, y):
    s = (Q @ G.T).numpy(); yy = y.numpy(); aps = []
    for i in range(len(yy)):
        si = np.delete(s[i], i); yi = np.delete(yy, i)
        rel = yi[np.argsort(-si, kind='stable')] == yy[i]
        if rel.sum() == 0: continue
        hits = np.cumsum(rel); aps.append(float((hits[rel] / (np.nonzero(rel)[0] + 1)).mean()))
    return float(np.mean(aps))


# ---- dump
def dump(shoplens, model, data, work):
    os.makedirs(work, exist_ok=True)
    W = onnx_initializers(model, set(tail_names()))
    np.savez(f'{work}/tail.npz', **W)
    W0 = {k: torch.tensor(v) for k, v in W.items()}
    sets = [('cat', 3, f'{data}/grocery/catalog/*/*'), ('val', 0, f'{data}/grocery/photos-val/*/*'),
            ('train', 1, f'{data}/grocery/photos-train/*/*'), ('cloth', 1, f'{data}/clothing/*/*')]
    for name, K, pattern in sets:
        paths = sorted(glob.glob(pattern))
        labels = [os.path.basename(os.path.dirname(p)) for p in paths]
        rng = np.random.default_rng(12345)
        outs = [[] for _ in range(K + 1)]
        tmp = f'{work}/tmp_{name}'
        for i in range(0, len(paths), 100):
            ch = paths[i:i + 100]
            r = subprocess.run([shoplens, 'cnn', 'preprocess', model, *ch, '--max-side', '640', '--out', tmp + '_x224.npy'],
                               capture_output=True, text=True)
            assert r.returncode == 0, r.stderr[-500:]
            x = torch.tensor(np.load(tmp + '_x224.npy'))
            for v in range(K + 1):
                if v == 0: xv = x
                else:
                    xs = []
                    for j in range(len(ch)):
                        s = rng.uniform(0.55, 1.0); ar = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
                        w = min(int(round(224 * np.sqrt(s * ar))), 224); h = min(int(round(224 * np.sqrt(s / ar))), 224)
                        ox = rng.integers(0, 224 - w + 1); oy = rng.integers(0, 224 - h + 1)
                        c = F.interpolate(x[j:j + 1, :, oy:oy + h, ox:ox + w], size=(224, 224), mode='bilinear', align_corners=False)
                        if rng.random() < 0.5: c = c.flip(3)
                        xs.append(c)
                    xv = torch.cat(xs)
                np.save(tmp + '_x.npy', np.ascontiguousarray(xv.numpy()))
                subprocess.run([shoplens, 'cnn', 'run', model, '--input', tmp + '_x.npy', '--out', tmp + '_y.npy',
                                '--output', 'add_90', '--threads', '1'], check=True, capture_output=True)
                outs[v].append(np.load(tmp + '_y.npy').astype(np.float16))
            print(name, i + len(ch), '/', len(paths), file=sys.stderr, flush=True)
        for f in ('_x224.npy', '_x.npy', '_y.npy'): os.remove(tmp + f)
        acts = [torch.tensor(np.concatenate(o).astype(np.float32)) for o in outs]
        np.savez(f'{work}/act_{name}.npz', paths=np.array(paths), labels=np.array(labels),
                 **{f'v{v}': a.half().numpy() for v, a in enumerate(acts)})
        cs = [batched(lambda a: block(a, W0), a) for a in acts]
        es = [batched(lambda c: embed_from_c(c, W0), c) for c in cs]
        np.savez(f'{work}/c_{name}.npz', paths=np.array(paths), labels=np.array(labels),
                 **{f'c{i}': c.half().numpy() for i, c in enumerate(cs)}, **{f'e{i}': e.numpy() for i, e in enumerate(es)})
def train_eval(Pviews, py, Gc, gy, evalsets, o):
    """Pviews: list of (N,C,7,7) views of the training photos (C=320 'c' or 160 'a' when o['block']);
    py: LongTensor class ids; Gc: gallery maps (G,C,7,7), gy: gallery class ids.
    evalsets: list of (name, Qmaps, qy, kind) kind='hit1' (vs gallery) or 'loo'."""
    torch.manual_seed(o.get('seed', 0)); rng = np.random.default_rng(o.get('seed', 0))
    blockmode = o.get('block', False); gem = o.get('gem', 0)
    P = {k: v.clone() for k, v in W0.items() if k.startswith('conv_95') or (blockmode and k.split('_')[1] in ('90', '92', '94'))}
    train_conv = o.get('conv', False)
    params = []
    if train_conv:
        for v in P.values(): v.requires_grad_(True); params.append(v)
    d = 1280; r = o.get('rank', 0)
    U = torch.zeros(r, d, requires_grad=True); V = (torch.randn(d, r) / d ** 0.5).requires_grad_(True)
    frozen = not train_conv
    def emb(x, P):
        if frozen: return x
        c = block(x, P) if blockmode else x
        return embed_from_c(c, P, gem)
    with torch.no_grad():
        E0 = batched(lambda x: emb(x, P), Pviews[0])
        mq = E0.mean(0); Eg = batched(lambda x: emb(x, P), Gc); mg = Eg.mean(0)
    def head(e, m):
        c = nrm(e - m)
        if r: c = nrm(c + (c @ V) @ U)
        return c
    classes = sorted(set(py.tolist())); cidx = {c: i for i, c in enumerate(classes)}
    yt = torch.tensor([cidx[c] for c in py.tolist()])
    gsel = [i for i in range(len(gy)) if int(gy[i]) in cidx]
    gcl = torch.tensor([cidx[int(gy[i])] for i in gsel])
    opt = torch.optim.Adam([{'params': params, 'lr': o.get('lr_conv', 1e-4)}, {'params': [U, V] if r else [], 'lr': o.get('lr', 1e-3)}])
    N = len(py); bs = o.get('bs', 64); steps = o.get('steps', 400); tau = o.get('tau', 0.05); wd = o.get('wd', 0.0)
    maxg = o.get('maxg', 8)
    t0 = time.time(); step = 0
    if not params and not r: steps = 0  # centring only: nothing to train
    while step < steps:
        perm = rng.permutation(N)
        for b in range(0, N, bs):
            if step >= steps: break
            idx = perm[b:b + bs]
            vs = rng.integers(0, len(Pviews), len(idx)) if o.get('aug', True) else np.zeros(len(idx), int)
            x = torch.stack([Pviews[v][i] for v, i in zip(vs, idx)])
            if o.get('flip', False):
                f = torch.tensor(rng.random(len(idx)) < 0.5)
                x[f] = x[f].flip(3)
            # gallery sample: up to maxg per class
            if len(gsel) <= 128: gs = gsel
            else:
                gs = []
                byc = {}
                for i in gsel: byc.setdefault(int(gy[i]), []).append(i)
                for c, l in byc.items(): gs += list(rng.choice(l, min(maxg, len(l)), replace=False))
            gcls = torch.tensor([cidx[int(gy[i])] for i in gs])
            eq = emb(x, P); eg = emb(Gc[gs], P)
            if train_conv:
                with torch.no_grad():
                    mq = 0.9 * mq + 0.1 * eq.mean(0); mg = 0.9 * mg + 0.1 * eg.mean(0)
            yq = head(eq, mq); yg = head(eg, mg)
            prox = torch.zeros(len(classes), d).index_add(0, gcls, yg)
            prox = nrm(prox)
            loss = F.cross_entropy(yq @ prox.T / tau, yt[idx])
            if train_conv and wd:
                loss = loss + wd * sum(((P[k] - W0[k]) ** 2).sum() for k in P)
            if r and o.get('lam', 0): loss = loss + o['lam'] * ((U ** 2).sum() + (V ** 2).sum())
            opt.zero_grad(); loss.backward(); opt.step(); step += 1
    with torch.no_grad():
        E0 = batched(lambda x: emb(x, P), Pviews[0]); mq = E0.mean(0)
        Eg = batched(lambda x: emb(x, P), Gc); mg = Eg.mean(0)
        G = head(Eg, mg)
        res = {'train_s': round(time.time() - t0, 1)}
        for name, Q, qy, kind in evalsets:
            EQ = batched(lambda x: emb(x, P), Q); Yq = head(EQ, mq)
            res[name] = round(hit1(Yq, qy, G, gy) if kind == 'hit1' else loo_map(Yq, head(EQ, mg), qy), 4)
    return res

def untrained(Q, qy, G, gy, kind, blockmode=False, frozen=False):
    with torch.no_grad():
        f = (lambda x: x) if frozen else (lambda x: embed_from_c(block(x, W0) if blockmode else x, W0))
        a, b = batched(f, Q), batched(f, G)
        return round(hit1(a, qy, b, gy) if kind == 'hit1' else loo_map(a, b, qy), 4)


# ---- run
def run(work, cfg, prot):
    global W0
    W0 = {k: torch.tensor(v) for k, v in np.load(f'{work}/tail.npz').items()}
    blockmode = cfg.get('block', False)
    frozen = not cfg.get('conv', False)

    def ld(name):
        if blockmode:
            z = np.load(f'{work}/act_{name}.npz'); k = 'v'
        else:
            z = np.load(f'{work}/c_{name}.npz'); k = 'e' if frozen else 'c'
        vs = sorted(x for x in z.files if x.startswith(k))
        return [str(p) for p in z['paths']], [str(l) for l in z['labels']], [torch.tensor(z[v].astype(np.float32)) for v in vs]

    out = {'cfg': cfg}
    if cfg.get('baseline'):  # issue 18's InfoNCE baseline (baseline.py's train) on the same embeddings
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import baseline
        frozen = True
    if 'grocery' in prot or 'g60' in prot:
        cp, cl, cv = ld('cat'); vp, vl, vv = ld('val'); tp, tl, tv = ld('train')
        prods = sorted(set(cl)); pid = {p: i for i, p in enumerate(prods)}
        G, gy = cv[0], torch.tensor([pid[l] for l in cl])
        V, vy = vv[0], torch.tensor([pid[l] for l in vl])
        T, ty = tv, torch.tensor([pid[l] for l in tl])
    if cfg.get('baseline'):
        Gn, gyn, Vn, vyn, Tn, tyn = G.numpy(), gy.numpy(), V.numpy(), vy.numpy(), T[0].numpy(), ty.numpy()
        if 'grocery' in prot:
            W = baseline.train(Tn, tyn, list(range(len(prods))), Gn, gyn)
            out['grocery'] = {'hit1': round(baseline.hit1(baseline.nrm(Vn @ W), vyn, baseline.nrm(Gn @ W), gyn), 4)}
        if 'g60' in prot:
            sh = prods[:]; random.Random(1).shuffle(sh); seen = sorted(prods.index(p) for p in sh[:60])
            ms = np.isin(tyn, seen); mu = ~np.isin(vyn, seen)
            W = baseline.train(Tn[ms], tyn[ms], seen, Gn, gyn)
            out['g60'] = {'unseen21': round(baseline.hit1(baseline.nrm(Vn[mu] @ W), vyn[mu], baseline.nrm(Gn @ W), gyn), 4),
                          'seen60': round(baseline.hit1(baseline.nrm(Vn[~mu] @ W), vyn[~mu], baseline.nrm(Gn @ W), gyn), 4)}
        print(json.dumps(out), flush=True)
        return
    if 'grocery' in prot:
        if cfg.get('untrained'): out['grocery_untrained'] = untrained(V, vy, G, gy, 'hit1', blockmode, frozen)
        else: out['grocery'] = train_eval(T, ty, G, gy, [('hit1', V, vy, 'hit1')], cfg)
    if 'g60' in prot:
        sh = prods[:]; random.Random(1).shuffle(sh); seen = set(prods.index(p) for p in sh[:60])
        ms = torch.tensor([int(y) in seen for y in ty]); mu = torch.tensor([int(y) not in seen for y in vy])
        if cfg.get('untrained'): out['g60_untrained'] = untrained(V[mu], vy[mu], G, gy, 'hit1', blockmode, frozen)
        else: out['g60'] = train_eval([t[ms] for t in T], ty[ms], G, gy, [('unseen21', V[mu], vy[mu], 'hit1'), ('seen60', V[~mu], vy[~mu], 'hit1')], cfg)
    if 'cloth' in prot or 'clothA' in prot:
        p, l, v = ld('cloth')
        cats = sorted(set(l)); cid = {c: i for i, c in enumerate(cats)}
        half = np.array([hashlib.sha256(f"1:{os.path.basename(x)}".encode()).digest()[0] & 1 for x in p])
        A = torch.tensor(half == 0); B = torch.tensor(half == 1)
        y = torch.tensor([cid[c] for c in l])
    if 'cloth' in prot:
        if cfg.get('untrained'): out['cloth_untrained'] = untrained(v[0][B], y[B], v[0][B], y[B], 'loo', blockmode, frozen)
        else: out['cloth'] = train_eval([x[A] for x in v], y[A], v[0][B], y[B], [('mapB', v[0][B], y[B], 'loo')], cfg)
    if 'clothA' in prot and not cfg.get('untrained'):
        out['clothA'] = train_eval([x[A] for x in v], y[A], v[0][A], y[A], [('mapB', v[0][B], y[B], 'loo')], cfg)
    print(json.dumps(out), flush=True)


# ---- report: the "Fine-tuning prototype" block of bench/results/learn.md
def describe(c):
    if c.get('untrained'): return 'untrained (pretrained MobileNetV2 embedding)'
    if c.get('baseline'): return "issue 18's InfoNCE baseline (linear 1280 -> 256, 60 epochs; baseline.py)"
    what = []
    if c.get('conv'): what.append('fine-tuned %slast 1x1 conv (step %g%s)' % ('last inverted-residual block + ' if c.get('block') else '', c.get('lr_conv', 1e-4), ', L2 %g to pretrained' % c['wd'] if c.get('wd') else ''))
    what.append('head: centring only' if not c.get('rank') else 'head: centring + rank %d map, lambda 0' % c['rank'])
    if not (c.get('rank') or c.get('conv')): return '; '.join(what + ['no training steps'])
    what.append('%d steps' % c.get('steps', 400))
    what.append('augmented photo views' if c.get('aug', True) else 'centre crops only')
    m = c.get('maxg', 8)
    what.append('proxies from ' + ('all catalog images of a class' if m >= 1000 else 'a random %d catalog image%s of a class per step' % (m, '' if m == 1 else 's')))
    if c.get('gem'): what.append('GeM p=%g' % c['gem'])
    return '; '.join(what)


def report(jsonl, out, rev, note):
    rows = [json.loads(l) for l in open(jsonl) if l.strip()]
    f = lambda v: '%.3f' % v if isinstance(v, float) else '-'
    L = ['<!-- finetune: generated by bench/learn/finetune.py report; do not edit by hand -->',
         '## Fine-tuning prototype (issue 18: "fine-tune the CNN\'s last block(s) too")', '',
         f'`bench/learn/finetune.sh` (PyTorch prototype, bench/learn/finetune.py) at commit {rev}. Global descriptors only, '
         'no verification (so below the `+verify` rows above). MobileNetV2 activations dumped once with the engine; '
         'single-threaded training on the shared 2-core machine. grocery: hit@1 of photos-val against the 81 catalog images; '
         '60/21: hit@1 of the 21 unseen products\' photos-val (and the 60 seen) with all 81 in the gallery; clothing: leave-one-out '
         'mAP on half B after training on half A, proxies from half B\'s images (as `eval --train clothing-A --gallery clothing-B` '
         'does: the evaluated labels form the proxies) or from half A\'s own images (no label of B used). docs/learn.md, '
         '"Fine-tuning the CNN\'s last layer", says what it means.', '']
    if note: L += [note, '']
    L += ['| method | grocery hit@1 | 60/21: unseen 21 | 60/21: seen 60 | clothing B mAP, proxies B | clothing B mAP, proxies A | train s (grocery) |',
          '|---|---|---|---|---|---|---|']
    for d in rows:
        c = d['cfg']
        if c.get('untrained'):
            L.append(f"| {describe(c)} | {f(d.get('grocery_untrained'))} | {f(d.get('g60_untrained'))} | - | {f(d.get('cloth_untrained'))} | {f(d.get('cloth_untrained'))} | - |")
            continue
        g, s, cb, ca = d.get('grocery', {}), d.get('g60', {}), d.get('cloth', {}), d.get('clothA', {})
        L.append(f"| {describe(c)} | {f(g.get('hit1'))} | {f(s.get('unseen21'))} | {f(s.get('seen60'))} | {f(cb.get('mapB'))} | {f(ca.get('mapB'))} | {g.get('train_s', '-')} |")
    L += ['', 'Commands (WORK = the dump folder; `finetune.py run WORK CONFIG PROTOCOLS`, one JSON line each):', '',
          '- `bench/learn/finetune.py dump build/shoplens ../shared/models/mobilenetv2.onnx ../shared/data WORK`']
    for d in rows:
        prots = [k for k in ('grocery', 'g60', 'cloth', 'clothA') if k in d or k + '_untrained' in d]
        L.append(f"- `bench/learn/finetune.py run WORK '{json.dumps(d['cfg'], separators=(',', ':'))}' {','.join(prots)}`")
    L.append('<!-- /finetune -->')
    section = '\n'.join(L) + '\n'
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import mdblock
    mdblock.replace(out, 'finetune', section)


if __name__ == '__main__':
    if len(sys.argv) == 6 and sys.argv[1] == 'dump': dump(*sys.argv[2:6])
    elif len(sys.argv) in (5, 6) and sys.argv[1] == 'report': report(*sys.argv[2:5], sys.argv[5] if len(sys.argv) > 5 else '')
    elif len(sys.argv) == 5 and sys.argv[1] == 'run': run(sys.argv[2], json.loads(sys.argv[3]), sys.argv[4].split(','))
    else: sys.exit(__doc__)
