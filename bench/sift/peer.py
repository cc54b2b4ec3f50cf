#!/usr/bin/python3
"""bench/sift/peer.py - inputs, the OpenCV peer and the report of bench/sift (run by run.sh).

  prepare DATA OUT N PAIRS SEED   N 640x480 grey images (img_*.pgm) from real photos in DATA
                                  (generated textures when DATA has none) and PAIRS pairs
                                  (pair_NNN_a.pgm, pair_NNN_b.pgm = a warped by a known random
                                  homography, pair_NNN.h = the 3x3 matrix a -> b)
  opencv-time OUT REPEATS THREADS one JSON line: cv2.SIFT_create() images/s, keypoints/image
  opencv-feat OUT TAG             OUT/pair_*.TAG.feat for the matching evaluation
  report OUT TIMES.jsonl TAGS MD  matching metrics per tag + the timing table -> markdown MD

Matching protocol (the same for every peer): descriptors of a and b matched by L2 nearest
neighbour with Lowe's ratio test (0.8); a match is correct when H maps the a keypoint within
3 px of the b keypoint. Repeatability: among a's keypoint locations whose image under H lies
inside b (10 px margin), the fraction with a b keypoint within 3 px whose scale agrees with the
scale predicted by H within a factor 1.5 (locations with several orientations count once).
"""
import glob
import json
import os
import sys
import time

import cv2
import numpy as np

W, H = 640, 480


def list_photos(data):
    exts = ('.jpg', '.jpeg', '.png')
    out = []
    for sub in ('grocery/photos-val', 'grocery/photos-train', 'clothing'):
        root = os.path.join(data, sub)
        if not os.path.isdir(root):
            continue
        for dirpath, _, files in sorted(os.walk(root)):
            out += [os.path.join(dirpath, f) for f in sorted(files) if f.lower().endswith(exts)]
    return out


def to_640x480(img):
    h, w = img.shape[:2]
    # centre-crop to 4:3, then area-resize
    if w * 3 > h * 4:
        nw = h * 4 // 3
        img = img[:, (w - nw) // 2:(w - nw) // 2 + nw]
    else:
        nh = w * 3 // 4
        img = img[(h - nh) // 2:(h - nh) // 2 + nh]
    return cv2.resize(img, (W, H), interpolation=cv2.INTER_AREA)


def generated(rng):
    img = np.full((H, W), 128.0, np.float32)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    for _ in range(120):
        cx, cy, s, a = rng.uniform(0, W), rng.uniform(0, H), rng.uniform(3, 25), rng.uniform(-90, 90)
        img += a * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))
    return np.clip(img, 0, 255).astype(np.uint8)


def random_homography(rng):
    ang = np.deg2rad(rng.uniform(-30, 30))
    s = rng.uniform(0.75, 1.25)
    c, si = np.cos(ang) * s, np.sin(ang) * s
    cx, cy = W / 2, H / 2
    A = np.array([[c, -si, 0], [si, c, 0], [0, 0, 1]])
    T1 = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]])
    T2 = np.array([[1, 0, cx + rng.uniform(-30, 30)], [0, 1, cy + rng.uniform(-30, 30)], [0, 0, 1]])
    P = np.eye(3)
    P[2, 0], P[2, 1] = rng.uniform(-2e-4, 2e-4), rng.uniform(-2e-4, 2e-4)
    return T2 @ P @ A @ T1


def prepare(data, out, n, pairs, seed):
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(seed)
    photos = list_photos(data)
    if photos:
        idx = rng.permutation(len(photos))
        photos = [photos[i] for i in idx]
    source = 'real' if len(photos) >= n + pairs else 'generated'
    imgs = []
    for i in range(n + pairs):
        g = None
        if source == 'real':
            g = cv2.imread(photos[i], cv2.IMREAD_GRAYSCALE)
        if g is None:
            g = generated(rng)
        imgs.append(to_640x480(g))
    for i in range(n):
        cv2.imwrite(os.path.join(out, 'img_%03d.pgm' % i), imgs[i])
    for i in range(pairs):
        a = imgs[n + i]
        Hm = random_homography(rng)
        b = cv2.warpPerspective(a, Hm, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                borderValue=0)
        cv2.imwrite(os.path.join(out, 'pair_%03d_a.pgm' % i), a)
        cv2.imwrite(os.path.join(out, 'pair_%03d_b.pgm' % i), b)
        np.savetxt(os.path.join(out, 'pair_%03d.h' % i), Hm)
    with open(os.path.join(out, 'source.txt'), 'w') as f:
        f.write('%s %d %d\n' % (source, n, pairs))


def cv_sift():
    return cv2.SIFT_create()


def opencv_time(out, reps, threads):
    cv2.setNumThreads(threads)
    files = sorted(glob.glob(os.path.join(out, 'img_*.pgm')))
    imgs = [cv2.imread(f, cv2.IMREAD_GRAYSCALE) for f in files]
    sift = cv_sift()
    best, best_cpu, kps = 1e30, 1e30, 0.0
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        tot = 0
        for g in imgs:
            k, d = sift.detectAndCompute(g, None)
            tot += len(k)
        t = time.perf_counter() - t0
        best = min(best, t)
        best_cpu = min(best_cpu, time.process_time() - c0)
        kps = tot / len(imgs)
    print(json.dumps({'peer': 'opencv', 'threads': threads, 'images': len(imgs),
                      'seconds': round(best, 4), 'ips': round(len(imgs) / best, 3),
                      'cpu': round(best_cpu, 4),
                      'kps': round(kps, 1)}))


def write_feat(path, frames, desc):
    with open(path, 'wb') as f:
        f.write(np.uint32(len(frames)).tobytes())
        f.write(np.asarray(frames, np.float32).tobytes())
        f.write(np.asarray(desc, np.float32).reshape(-1, 128).tobytes())


def opencv_feat(out, tag):
    cv2.setNumThreads(1)
    sift = cv_sift()
    for f in sorted(glob.glob(os.path.join(out, 'pair_*.pgm'))):
        g = cv2.imread(f, cv2.IMREAD_GRAYSCALE)
        k, d = sift.detectAndCompute(g, None)
        # OpenCV size is a diameter (2 * 2 sigma... it reports sigma * 2 per octave scale);
        # sigma = size / 2. Angle in degrees, y up -> convert to radians (unused by metrics).
        fr = [(p.pt[0], p.pt[1], p.size / 2.0, np.deg2rad(p.angle)) for p in k]
        if d is None:
            d = np.zeros((0, 128), np.float32)
        write_feat(f[:-4] + '.%s.feat' % tag, fr, d)


def read_feat(path):
    with open(path, 'rb') as f:
        n = int(np.frombuffer(f.read(4), np.uint32)[0])
        fr = np.frombuffer(f.read(16 * n), np.float32).reshape(n, 4)
        de = np.frombuffer(f.read(512 * n), np.float32).reshape(n, 128)
    return fr, de


def project(Hm, pts):
    p = np.c_[pts, np.ones(len(pts))] @ Hm.T
    return p[:, :2] / p[:, 2:3]


def local_scale(Hm, pts):
    # sqrt of the Jacobian determinant of H at pts
    eps = 1.0
    p0 = project(Hm, pts)
    px = project(Hm, pts + [eps, 0])
    py = project(Hm, pts + [0, eps])
    jx, jy = px - p0, py - p0
    return np.sqrt(np.abs(jx[:, 0] * jy[:, 1] - jx[:, 1] * jy[:, 0]))


def pair_metrics(fa, da, fb, db, Hm):
    res = {'matches': 0, 'correct': 0, 'rep_num': 0, 'rep_den': 0}
    if len(fa) < 2 or len(fb) < 2:
        return res
    # ratio-test matching a -> b (L2 on descriptors as each peer returns them)
    ma = cv2.BFMatcher(cv2.NORM_L2).knnMatch(np.ascontiguousarray(da), np.ascontiguousarray(db), k=2)
    pa = fa[:, :2].astype(np.float64)
    pb = fb[:, :2].astype(np.float64)
    proj = project(Hm, pa)
    for m in ma:
        if len(m) == 2 and m[0].distance < 0.8 * m[1].distance:
            res['matches'] += 1
            if np.linalg.norm(proj[m[0].queryIdx] - pb[m[0].trainIdx]) < 3.0:
                res['correct'] += 1
    # repeatability over unique locations
    ua, ia = np.unique(np.round(fa[:, :3], 2), axis=0, return_index=True)
    ub = np.unique(np.round(fb[:, :3], 2), axis=0)
    pa_u, sa_u = ua[:, :2].astype(np.float64), ua[:, 2].astype(np.float64)
    pr = project(Hm, pa_u)
    ls = local_scale(Hm, pa_u)
    inside = (pr[:, 0] > 10) & (pr[:, 1] > 10) & (pr[:, 0] < W - 10) & (pr[:, 1] < H - 10)
    pbu, sbu = ub[:, :2].astype(np.float64), ub[:, 2].astype(np.float64)
    for i in np.nonzero(inside)[0]:
        res['rep_den'] += 1
        d = np.linalg.norm(pbu - pr[i], axis=1)
        ok = d < 3.0
        if ok.any():
            ratio = sbu[ok] / (sa_u[i] * ls[i])
            if ((ratio < 1.5) & (ratio > 1 / 1.5)).any():
                res['rep_num'] += 1
    return res


def report(out, times_path, tags, md):
    best = {}
    for l in open(times_path):
        if l.strip().startswith('{'):
            t = json.loads(l)
            key = (t['peer'], t['threads'])
            if key not in best:
                best[key] = t
            else:
                b = best[key]
                b['ips'] = max(b['ips'], t['ips'])
                b['cpu'] = min(b['cpu'], t['cpu'])
    times = list(best.values())
    src = open(os.path.join(out, 'source.txt')).read().split()
    match = {}
    for tag in tags.split(','):
        tot = {'matches': 0, 'correct': 0, 'rep_num': 0, 'rep_den': 0}
        npairs = 0
        for hf in sorted(glob.glob(os.path.join(out, 'pair_*.h'))):
            base = hf[:-2]
            Hm = np.loadtxt(hf)
            fa, da = read_feat(base + '_a.%s.feat' % tag)
            fb, db = read_feat(base + '_b.%s.feat' % tag)
            r = pair_metrics(fa, da, fb, db, Hm)
            for k in tot:
                tot[k] += r[k]
            npairs += 1
        match[tag] = dict(tot, pairs=npairs)
    ocv1 = next((t for t in times if t['peer'] == 'opencv' and t['threads'] == 1), None)
    lines = []
    lines.append('# SIFT speed and matching quality (bench/sift)\n')
    lines.append('Generated by `bench/sift/run.sh` (`make bench`) on %s. Inputs: %s %s 640x480 grey '
                 'images (%s), %s homography pairs. **The machine (2 cores) was shared with other '
                 'builds and benchmarks while this ran**, so absolute numbers are noisy; every peer '
                 'ran in the same run on the same pixels, interleaved in rounds; best round per configuration.\n'
                 % (time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()), src[1],
                    src[0], 'from ../shared/data: grocery photos, clothing' if src[0] == 'real'
                    else 'generated textures', src[2]))
    lines.append('## Speed\n')
    lines.append('images/s is wall clock (what was asked); images per CPU-second divides by the '
                 'CPU time the process used, which on a loaded machine is the steadier measure '
                 'for one thread (for 2 threads it shows the cost of parallelism, not speed).\n')
    lines.append('| extractor | threads | images/s | vs OpenCV 1 thread | images per CPU-s | '
                 'vs OpenCV 1 thread (CPU) | keypoints/image |')
    lines.append('|---|---|---|---|---|---|---|')
    for t in times:
        ratio = '%.2fx' % (t['ips'] / ocv1['ips']) if ocv1 else 'n/a'
        ipc = t['images'] / t['cpu'] if t.get('cpu') else 0.0
        ocv_ipc = ocv1['images'] / ocv1['cpu'] if ocv1 and ocv1.get('cpu') else 0.0
        rc = '%.2fx' % (ipc / ocv_ipc) if ocv_ipc else 'n/a'
        name = t['peer'] + (' (%s kernels)' % t['kernels'] if 'kernels' in t else '')
        lines.append('| %s | %d | %.1f | %s | %.1f | %s | %.0f |' % (name, t['threads'], t['ips'], ratio,
                                                               ipc, rc, t['kps']))
    lines.append('')
    lines.append('## Matching on pairs with a known homography\n')
    lines.append('Ratio test 0.8 (L2), correct = within 3 px of the true position; repeatability '
                 'as defined in bench/sift/peer.py.\n')
    lines.append('| extractor | ratio-test matches | correct | correct fraction | repeatability |')
    lines.append('|---|---|---|---|---|')
    for tag, m in match.items():
        frac = m['correct'] / m['matches'] if m['matches'] else 0.0
        rep = m['rep_num'] / m['rep_den'] if m['rep_den'] else 0.0
        lines.append('| %s | %d | %d | %.3f | %.3f |' % (tag, m['matches'], m['correct'], frac, rep))
    lines.append('')
    # the target, evaluated from the numbers above
    sl1 = next((t for t in times if t['peer'] == 'shoplens' and t['threads'] == 1), None)
    if sl1 and ocv1 and 'shoplens' in match and 'opencv' in match:
        def frac(m):
            return m['correct'] / m['matches'] if m['matches'] else 0.0
        wall = sl1['ips'] / ocv1['ips']
        cpu = (sl1['images'] / sl1['cpu']) / (ocv1['images'] / ocv1['cpu']) if ocv1.get('cpu') else 0
        fs, fo = frac(match['shoplens']), frac(match['opencv'])
        lines.append('## Target (issue 4): >= 2x OpenCV images/s on 1 thread, correct-match fraction '
                     'no worse\n')
        lines.append('- shoplens defaults vs `cv2.SIFT_create()`: %.2fx wall-clock images/s, %.2fx '
                     'images per CPU-second -> %s' % (wall, cpu, 'met' if min(wall, cpu) >= 2 else
                                                      ('met on CPU time only' if cpu >= 2 else 'NOT met')))
        lines.append('- correct-match fraction %.3f vs %.3f -> %s' % (fs, fo, 'met' if fs >= fo else 'NOT met'))
        up1 = next((t for t in times if t['peer'] == 'shoplens-upsample' and t['threads'] == 1), None)
        upr = ('%.2fx OpenCV\'s wall-clock images/s' % (up1['ips'] / ocv1['ips'])) if up1 else 'n/a'
        lines.append('- The defaults do not double the image (OpenCV does); `upsample = 1` reproduces '
                     'OpenCV\'s detector (keypoints/image and matching within noise of it) at %s '
                     '(shoplens-upsample rows).\n' % upr)
    with open(md, 'w') as f:
        f.write('\n'.join(lines))
    print('\n'.join(lines))


def main(argv):
    cmd = argv[1]
    if cmd == 'prepare':
        prepare(argv[2], argv[3], int(argv[4]), int(argv[5]), int(argv[6]))
    elif cmd == 'opencv-time':
        opencv_time(argv[2], int(argv[3]), int(argv[4]))
    elif cmd == 'opencv-feat':
        opencv_feat(argv[2], argv[3])
    elif cmd == 'report':
        report(argv[2], argv[3], argv[4], argv[5])
    else:
        sys.exit('unknown command ' + cmd)


if __name__ == '__main__':
    main(sys.argv)
