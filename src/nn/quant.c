/*
 * nn/quant.c - calibration of the reduced-precision modes (bf16, int8) of the engine's own
 * convolutions.
 *
 * 1. Ranges. The fp32 network runs over a seeded sample of the calibration images (at most
 *    max_images; one image per pass, on 1-thread plans, images spread over threads) and every
 *    convolution input is observed: pass 1 its largest |x| (per channel for depthwise inputs),
 *    pass 2 a histogram of |x| (SL__QBINS bins over [0, max]; exact zeros counted apart). An
 *    estimator turns each histogram into a clipping threshold t (step t / 127 signed, t / 255
 *    non-negative): min/max; a percentile; the threshold minimizing the expected squared error
 *    of quantize-dequantize (clipping plus rounding, a uniform step^2 / 12 inside - the MSE
 *    calibration of NVIDIA's pytorch-quantization; Banner et al., "Post training 4-bit
 *    quantization of convolutional networks for rapid-deployment", NeurIPS 2019, derive the same
 *    trade-off); or TensorRT's entropy calibration, the threshold minimizing the KL divergence
 *    between the histogram and its quantized version (Migacz, "8-bit Inference with TensorRT",
 *    GTC 2017). A depthwise convolution's input gets one threshold per channel, min(its largest
 *    |x| x SL__QCH_HEADROOM, t): each output channel reads one input channel, so oneDNN folds
 *    per-channel input steps into per-channel output scales (Krishnamoorthi, "Quantizing deep
 *    convolutional networks for efficient inference", 2018, on MobileNets' per-channel needs).
 * 2. Sensitivity (Wu et al., "Integer quantization for deep learning inference", 2020, sec. 4:
 *    partial quantization by per-layer sensitivity): for each convolution alone reduced, the
 *    network runs on sens_images of the sample; its sensitivity is the mean 1 - cosine of the
 *    output (the embedding) to fp32.
 * 3. Keep rule: errors of independent layers add (1 - cos ~ |e|^2 / 2|y|^2), so the most
 *    sensitive convolutions stay fp32, in order, until the sum of the others is within the
 *    precision's error budget. int8 on a CPU with AVX-512-BF16 dot products (keep_bf16, the
 *    default) splits the budget: the int8 layers get nine tenths, and the kept convolutions that
 *    are not depthwise run at bf16 instead of fp32 - each one's bf16 sensitivity measured alone,
 *    least sensitivity per multiply-add first - while their bf16 sensitivities sum within the
 *    last tenth (the ratio of the bf16 and int8 default budgets). bf16 rounds each value to 8
 *    significant bits, far finer than an int8 step over a whole tensor, and runs the 1x1 layers
 *    MobileNetV2 keeps at about half their fp32 time (docs/cnn.md). A final pass measures the
 *    chosen configuration (cos_mean/min). When every convolution reduced is already within the
 *    budget, nothing is kept and step 2 (a pass per convolution) is skipped.
 *
 * The record (sl_nn_calibration_save/load, docs/formats/nn_calibration.md) stores thresholds by
 * tensor name and kept layers by their output names, with a fingerprint of the weights.
 *
 * Invariants: results depend only on the images, the options and the seed - never on the thread
 * count: per-image passes run on plans built for one thread, statistics merge as maxima and
 * integer counts, cosines are summed in image order. A model's calibration changes only through
 * sl_nn_calibrate / sl_nn_calibration_load (no inference may run then) or, once, through
 * sl__quant_ensure under the model lock.
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <oneapi/dnnl/dnnl.h>

#include "nn/quant.h"
#include "util/util.h"

#define SL__QBINS 2048            /* histogram bins of |x| per tensor */
#define SL__QCH_MIN_BINS 64       /* smallest threshold candidate: max / 32 */
/* A depthwise input channel's threshold: min(tensor threshold, this x the channel's largest |x|
 * in the sample). Without headroom, channels whose sample maximum was low clipped hard on some
 * photos (the last depthwise layer of MobileNetV2: 1 - cos 5.7e-3 on one photo alone, against
 * 3.4e-4 per tensor); with 2 the embedding's min cosine over 200 photos went 0.9927 -> 0.9975. */
#define SL__QCH_HEADROOM 2.0f
#define SL__CALIB_SEED 0x5eedca1bULL
#define SL__CALIB_SYNTH 16        /* synthetic images when no calibration images are given */
#define SL__CALIB_RECTS 4
#define SL__CALIB_DISKS 3
/* Error budgets of the keep rule: mean 1 - cosine of the embedding over the sensitivity images
 * that the reduced layers may add up to (measured choice: docs/cnn.md "Precision"). */
#define SL__CALIB_BUDGET_INT8 1e-3
#define SL__CALIB_BUDGET_BF16 1e-4

void sl__calib_free(sl__calib *c) {
    if (!c) return;
    for (size_t v = 0; c->r && v < c->nvals; v++) { free(c->r[v].ch); free(c->r[v].chs); }
    free(c->r);
    free(c->keep);
    free(c->sens);
    free(c->sens16);
    free(c);
}

void sl_nn_calib_opts_init(sl_nn_calib_opts *o) {
    memset(o, 0, sizeof *o);
    o->method = SL_NN_CALIB_METHOD_DEFAULT;
    o->percentile = SL_NN_CALIB_PERCENTILE_DEFAULT;
    o->max_images = SL_NN_CALIB_IMAGES_DEFAULT;
    o->sens_images = SL_NN_CALIB_SENS_IMAGES_DEFAULT;
    o->budget = 0;
    o->per_channel = 1;
    o->keep_bf16 = 1;
    o->seed = SL_NN_CALIB_SEED_DEFAULT;
    o->threads = 0;
}

static int is_depthwise(const sl_nn *m, const sl__node *n) {
    const sl__value *w = &m->vals[n->in[1]];
    return n->op == SL__OP_CONV && n->group > 1 && w->rank == 4 && w->dims[1] == 1 && w->dims[0] == n->group;
}

/* ---- statistics ------------------------------------------------------------------------------ */

typedef struct vstat {        /* one observed tensor, one worker */
    float amax;
    int neg;
    uint64_t zeros;           /* pass 2: exact zeros */
    uint64_t *hist;           /* pass 2: SL__QBINS bins of |x| over (0, lim] */
    float *chmax;             /* per channel |x| max (depthwise inputs), nch */
} vstat;

typedef struct wstats {       /* one worker's statistics */
    vstat *v;
    char *seen;               /* per observed tensor: already seen in this pass over an image */
} wstats;

typedef struct cstate {       /* a calibration run */
    const sl_nn *m;
    int *obs;                 /* per graph value: its index among the observed tensors, or -1 */
    int *nch;                 /* per observed tensor: channels for per-channel stats (0: none) */
    int *gv;                  /* per observed tensor: the graph value */
    size_t nobs;
    int pass;
    const float *lim;         /* pass 2: merged max per observed tensor */
    wstats *w;
    int nw;
} cstate;

typedef struct obsctx { cstate *cs; wstats *w; } obsctx;

static void observe(void *u, const sl__plan *p, int v, const sl__tv *t) {
    obsctx *o = u;
    cstate *cs = o->cs;
    int g = sl__plan_source(p, v);
    if (g < 0 || (size_t)g >= cs->m->nvals || cs->obs[g] < 0 || !t->f) return;
    int k = cs->obs[g];
    if (o->w->seen[k]) return;
    o->w->seen[k] = 1;
    vstat *s = &o->w->v[k];
    size_t n = t->count;
    if (cs->pass == 1) {
        float mx = s->amax;
        int neg = s->neg;
        for (size_t i = 0; i < n; i++) {
            float a = fabsf(t->f[i]);
            if (a > mx) mx = a;
            neg |= t->f[i] < 0;
        }
        s->amax = mx;
        s->neg = neg;
        int C = cs->nch[k];
        if (C > 0 && t->rank == 4 && t->dims[1] == C) {
            size_t S = (size_t)(t->dims[2] * t->dims[3]);
            for (size_t i = 0; i < n; i++) {
                size_t c = t->nhwc ? i % (size_t)C : i / S % (size_t)C;
                float a = fabsf(t->f[i]);
                if (a > s->chmax[c]) s->chmax[c] = a;
            }
        }
    } else {
        float lim = cs->lim[k];
        if (!(lim > 0)) return;
        float sc = (float)SL__QBINS / lim;
        for (size_t i = 0; i < n; i++) {
            float a = fabsf(t->f[i]);
            if (a == 0.0f) { s->zeros++; continue; }
            long b = (long)(a * sc);
            s->hist[b >= SL__QBINS ? SL__QBINS - 1 : b < 0 ? 0 : b]++;
        }
    }
}

static void wstats_free(cstate *cs) {
    for (int w = 0; cs->w && w < cs->nw; w++) {
        for (size_t k = 0; cs->w[w].v && k < cs->nobs; k++) { free(cs->w[w].v[k].hist); free(cs->w[w].v[k].chmax); }
        free(cs->w[w].v);
        free(cs->w[w].seen);
    }
    free(cs->w);
    cs->w = NULL;
}

static int wstats_alloc(cstate *cs) {
    cs->w = sl__callocarray((size_t)cs->nw, sizeof *cs->w);
    if (!cs->w) return -1;
    for (int w = 0; w < cs->nw; w++) {
        wstats *x = &cs->w[w];
        if (!(x->v = sl__callocarray(cs->nobs ? cs->nobs : 1, sizeof *x->v)) || !(x->seen = calloc(cs->nobs ? cs->nobs : 1, 1)))
            return -1;
        for (size_t k = 0; k < cs->nobs; k++) {
            if (!(x->v[k].hist = sl__callocarray(SL__QBINS, sizeof(uint64_t)))) return -1;
            if (cs->nch[k] && !(x->v[k].chmax = sl__callocarray((size_t)cs->nch[k], sizeof(float)))) return -1;
        }
    }
    return 0;
}

/* ---- estimators ------------------------------------------------------------------------------ */

/* Squared error of quantizing the histogram with threshold bin t (t bins of width w, L levels):
 * clipped values (c - t)^2, values inside step^2 / 12, exact zeros nothing. Uses suffix sums. */
static double mse_at(const double *s0, const double *s1, const double *s2, int t, double w, double L) {
    double T = t * w, step = T / L;
    double inside = s0[0] - s0[t];
    return inside * step * step / 12.0 + (s2[t] - 2.0 * T * s1[t] + T * T * s0[t]);
}

static int thr_mse(const uint64_t *h, double L) {
    static const int B = SL__QBINS;
    double *s0 = calloc(B + 1, sizeof(double)), *s1 = calloc(B + 1, sizeof(double)), *s2 = calloc(B + 1, sizeof(double));
    int best = B;
    if (s0 && s1 && s2) {
        for (int i = B - 1; i >= 0; i--) {
            double c = i + 0.5;
            s0[i] = s0[i + 1] + (double)h[i];
            s1[i] = s1[i + 1] + (double)h[i] * c;
            s2[i] = s2[i + 1] + (double)h[i] * c * c;
        }
        double be = INFINITY;
        for (int t = SL__QCH_MIN_BINS; t <= B; t++) {
            double e = mse_at(s0, s1, s2, t, 1.0, L);
            if (e < be) { be = e; best = t; }
        }
    }
    free(s0); free(s1); free(s2);
    return best;
}

static int thr_percentile(const uint64_t *h, uint64_t zeros, double pct) {
    uint64_t tot = zeros;
    for (int i = 0; i < SL__QBINS; i++) tot += h[i];
    double want = pct / 100.0 * (double)tot, cum = (double)zeros;
    for (int i = 0; i < SL__QBINS; i++) {
        cum += (double)h[i];
        if (cum >= want) return i + 1;
    }
    return SL__QBINS;
}

/* TensorRT's entropy calibration: for thresholds of i bins (from nq to all), the reference is
 * the histogram cut at i with the outliers added to its last bin; the candidate merges those i
 * bins into nq levels (level l: bins [l i / nq, (l + 1) i / nq) - an even split, where the usual
 * i / nq bins per level with the remainder in the last level favours small thresholds) and spreads
 * each level back over its nonzero bins; the threshold with the smallest KL(reference ||
 * candidate) wins. Exact zeros count in bin 0 here. */
static int thr_entropy(const uint64_t *hz, uint64_t zeros, int nq) {
    static const int B = SL__QBINS;
    double *h = malloc(B * sizeof(double)), *p = malloc(B * sizeof(double)), *q = malloc(B * sizeof(double));
    int best = B;
    if (h && p && q) {
        for (int i = 0; i < B; i++) h[i] = (double)hz[i];
        h[0] += (double)zeros;
        double tail = 0, bk = INFINITY;
        for (int i = B - 1; i >= nq; i--) tail += h[i];
        for (int i = nq; i <= B; i++) {
            if (i > nq) tail -= h[i - 1];
            double ps = 0;
            for (int j = 0; j < i; j++) p[j] = h[j];
            p[i - 1] += tail;
            for (int j = 0; j < i; j++) ps += p[j];
            if (ps <= 0) continue;
            /* merge into nq levels of (almost) equal width, expand over nonzero bins */
            for (int l = 0; l < nq; l++) {
                int a = (int)((long)l * i / nq), b = (int)((long)(l + 1) * i / nq);
                double sum = 0;
                int nz = 0;
                for (int j = a; j < b; j++) { sum += h[j]; nz += h[j] != 0; }
                for (int j = a; j < b; j++) q[j] = h[j] != 0 && nz ? sum / nz : 0;
            }
            double qs = 0;
            for (int j = 0; j < i; j++) qs += q[j];
            if (qs <= 0) continue;
            double kl = 0;
            for (int j = 0; j < i; j++) {
                if (p[j] <= 0) continue;
                double pj = p[j] / ps, qj = q[j] > 0 ? q[j] / qs : 1e-12;
                kl += pj * log(pj / qj);
            }
            if (kl < bk) { bk = kl; best = i; }
        }
    }
    free(h); free(p); free(q);
    return best;
}

/* Threshold of |x| for one tensor from its merged statistics. */
static float threshold(const vstat *s, float lim, int method, double pct, int is_signed) {
    if (!(lim > 0)) return 0;
    double L = is_signed ? 127.0 : 255.0;
    int t = SL__QBINS;
    switch (method) {
    case SL_NN_CALIB_MINMAX: t = SL__QBINS; break;
    case SL_NN_CALIB_PERCENTILE: t = thr_percentile(s->hist, s->zeros, pct); break;
    case SL_NN_CALIB_ENTROPY: t = thr_entropy(s->hist, s->zeros, is_signed ? 128 : 256); break;
    default: t = thr_mse(s->hist, L); break;
    }
    return lim * (float)t / (float)SL__QBINS;
}

/* ---- synthetic images ------------------------------------------------------------------------ */

/* Deterministic synthetic "product photos" (a two-colour gradient background, flat rectangles and
 * disks of random colours, mild noise), normalized with the model's mean/std; an input that is
 * not 3-channel gets standard normal values. Image k depends only on k. */
static void synth_image(const sl_nn *m, int k, int64_t C, int64_t H, int64_t W, float *x) {
    sl__rng r;
    sl__rng_seed(&r, SL__CALIB_SEED + (uint64_t)k);
    float c0[3], c1[3];
    for (int c = 0; c < 3; c++) { c0[c] = (float)sl__rng_uniform(&r); c1[c] = (float)sl__rng_uniform(&r); }
    double ang = 6.283185307179586 * sl__rng_uniform(&r), dx = cos(ang), dy = sin(ang);
    for (int64_t c = 0; c < C; c++)
        for (int64_t y = 0; y < H; y++)
            for (int64_t xx = 0; xx < W; xx++) {
                double t = 0.5 + 0.5 * (dx * ((double)xx / (double)W - 0.5) + dy * ((double)y / (double)H - 0.5));
                x[(c * H + y) * W + xx] = (float)(c0[c % 3] + (c1[c % 3] - c0[c % 3]) * t);
            }
    for (int sh = 0; sh < SL__CALIB_RECTS + SL__CALIB_DISKS; sh++) {
        float col[3];
        for (int c = 0; c < 3; c++) col[c] = (float)sl__rng_uniform(&r);
        int64_t cx = (int64_t)sl__rng_below(&r, (uint64_t)W), cy = (int64_t)sl__rng_below(&r, (uint64_t)H);
        int64_t rx = 1 + (int64_t)sl__rng_below(&r, (uint64_t)(W / 3 + 1)), ry = 1 + (int64_t)sl__rng_below(&r, (uint64_t)(H / 3 + 1));
        for (int64_t y = cy - ry < 0 ? 0 : cy - ry; y < H && y <= cy + ry; y++)
            for (int64_t xx = cx - rx < 0 ? 0 : cx - rx; xx < W && xx <= cx + rx; xx++) {
                double u = (double)(xx - cx) / (double)rx, v = (double)(y - cy) / (double)ry;
                if (sh >= SL__CALIB_RECTS && u * u + v * v > 1.0) continue;
                for (int64_t c = 0; c < C; c++) x[(c * H + y) * W + xx] = col[c % 3];
            }
    }
    if (C != 3) { /* not an RGB image: standard normal values */
        for (int64_t i = 0; i < C * H * W; i++) x[i] = (float)sl__rng_normal(&r);
        return;
    }
    for (int64_t c = 0; c < C; c++) {
        float mean = m->pre.mean[c], sd = m->pre.std[c] > 0 ? m->pre.std[c] : 1.0f;
        for (int64_t i = 0; i < H * W; i++) {
            float v = x[c * H * W + i] + 0.02f * (float)sl__rng_normal(&r);
            v = v < 0 ? 0 : v > 1 ? 1 : v;
            x[c * H * W + i] = (v - mean) / sd;
        }
    }
}

/* ---- the calibration ------------------------------------------------------------------------- */

/* Per-channel steps (threshold / levels) of a range with per-channel thresholds. -1: no memory. */
static int range_steps(sl__qrange *r) {
    free(r->chs);
    r->chs = NULL;
    if (!r->nch) return 0;
    if (!(r->chs = sl__mallocarray((size_t)r->nch, sizeof(float)))) return -1;
    float L = r->is_signed ? 127.0f : 255.0f;
    for (int c = 0; c < r->nch; c++) r->chs[c] = r->ch[c] / L;
    return 0;
}

static size_t per_image(const sl_nn *m) {
    size_t per = 1;
    for (int d = 1; d < m->in_rank; d++) per *= (size_t)m->in_dims[d];
    return per;
}

/* Runs plan p (batch 1) on images idx[0..n) of x, the outputs into out (n x dim), with the
 * observer on each when cs is given, on `threads` threads. */
static sl_status run_images(const sl_nn *m, sl__plan *p, const float *x, const size_t *idx, size_t n, float *out,
                            cstate *cs, int threads, sl_error *err) {
    size_t per = per_image(m), dim = m->embed_dim;
    sl_status *sts = sl__callocarray(n ? n : 1, sizeof *sts);
    sl_error *es = sl__callocarray(n ? n : 1, sizeof *es);
    float *tmp = out ? NULL : sl__mallocarray((size_t)threads, dim * sizeof(float));
    if (!sts || !es || (!out && !tmp)) { free(sts); free(es); free(tmp); return sl__err_set(err, SL_E_NOMEM, "out of memory"); }
    (void)threads;
#pragma omp parallel for schedule(dynamic) num_threads(threads)
    for (size_t i = 0; i < n; i++) {
        int t = omp_get_thread_num();
        obsctx oc = {cs, cs ? &cs->w[t % cs->nw] : NULL};
        if (cs) memset(oc.w->seen, 0, cs->nobs ? cs->nobs : 1);
        sl__observer ob = {observe, &oc};
        sts[i] = sl__plan_run(p, x + idx[i] * per, out ? out + i * dim : tmp + (size_t)t * dim, cs ? &ob : NULL, 1, &es[i]);
    }
    sl_status st = SL_OK;
    for (size_t i = 0; i < n && !st; i++)
        if ((st = sts[i]) && err) *err = es[i]; /* the first failing image, whatever the schedule */
    free(sts); free(es); free(tmp);
    return st;
}

static double cosine(const float *a, const float *b, size_t n) {
    double ab = 0, aa = 0, bb = 0;
    for (size_t k = 0; k < n; k++) { ab += (double)a[k] * b[k]; aa += (double)a[k] * a[k]; bb += (double)b[k] * b[k]; }
    if (aa <= 0 && bb <= 0) return 1.0;
    if (aa <= 0 || bb <= 0) return 0.0;
    return ab / sqrt(aa * bb);
}

/* Mean and min cosine of n outputs to the reference, summed in image order. */
static void cos_stats(const float *y, const float *ref, size_t n, size_t dim, double *mean, double *min) {
    double s = 0, mn = 1.0;
    for (size_t i = 0; i < n; i++) {
        double c = cosine(y + i * dim, ref + i * dim, dim);
        s += c;
        if (c < mn) mn = c;
    }
    *mean = n ? s / (double)n : 1.0;
    *min = mn;
}

/* Seeded choice of k of n indices (a partial Fisher-Yates shuffle). */
static size_t *sample(size_t n, size_t k, uint64_t seed) {
    size_t *a = sl__mallocarray(n ? n : 1, sizeof *a);
    if (!a) return NULL;
    for (size_t i = 0; i < n; i++) a[i] = i;
    sl__rng r;
    sl__rng_seed(&r, seed);
    for (size_t i = 0; i < k && i < n; i++) {
        size_t j = i + (size_t)sl__rng_below(&r, (uint64_t)(n - i));
        size_t t = a[i]; a[i] = a[j]; a[j] = t;
    }
    return a;
}

int sl__quant_has_bf16(void) {
    unsigned isa = (unsigned)dnnl_get_effective_cpu_isa();
    return (isa & (unsigned)dnnl_cpu_isa_avx512_core_bf16) == (unsigned)dnnl_cpu_isa_avx512_core_bf16;
}

static double default_budget(int prec) {
    return prec == SL_NN_PRECISION_BF16 ? SL__CALIB_BUDGET_BF16 : SL__CALIB_BUDGET_INT8;
}

/* Sensitivity of the configuration sel selects (one layer reduced): mean 1 - cosine of the
 * outputs of the first nsens images of the sample to the fp32 references. */
static sl_status layer_sens(const sl_nn *m, const sl__qsel *sel, int prec, const float *x, const size_t *idx, size_t nsens,
                            float *y, const float *ref, int threads, float *sens, sl_error *err) {
    sl__plan *pq = NULL;
    sl_status st = sl__plan_new(m, 1, prec, sel, 1, &pq, err);
    if (!st && !(st = run_images(m, pq, x, idx, nsens, y, NULL, threads, err))) {
        double mean, mn;
        cos_stats(y, ref, nsens, m->embed_dim, &mean, &mn);
        *sens = (float)(1.0 - mean);
    }
    sl__plan_delete(pq);
    return st;
}

/* Keeps the most sensitive convolutions (keep[k] = SL__KEEP_FP32), in order, until the sum of
 * the others' sensitivities is within the budget. */
static void keep_rule(const sl_nn *m, const float *sens, char *keep, double budget) {
    double total = 0;
    for (size_t k = 0; k < m->nnodes; k++) if (sens[k] > 0) total += sens[k];
    while (total > budget) {
        size_t best = SIZE_MAX;
        for (size_t k = 0; k < m->nnodes; k++)
            if (!keep[k] && sens[k] > 0 && (best == SIZE_MAX || sens[k] > sens[best])) best = k;
        if (best == SIZE_MAX) break;
        keep[best] = SL__KEEP_FP32;
        total -= sens[best];
    }
}

/* The kept convolutions that run at bf16 instead of fp32 (int8 calibrations): each kept one that
 * is not depthwise (a depthwise convolution is bound by memory, not multiply-adds: at bf16 it only
 * adds the conversion of its input - measured slower than fp32 on MobileNetV2) gets its bf16
 * sensitivity measured alone (sens16); then, by least sensitivity per multiply-add saved from
 * fp32 first, they move to bf16 while the sum of their bf16 sensitivities stays within budget16. */
static sl_status keep_bf16(const sl_nn *m, sl__calib *c, char *only, const sl__plan *pf, const float *x,
                           const size_t *idx, size_t nsens, float *y, const float *ref, int threads, double budget16,
                           sl_error *err) {
    sl__qsel sel = {c, only};
    sl_status st = SL_OK;
    for (size_t k = 0; k < m->nnodes && !st; k++) {
        if (c->keep[k] != SL__KEEP_FP32 || is_depthwise(m, &m->nodes[k])) continue;
        only[k] = SL__KEEP_BF16;
        st = layer_sens(m, &sel, SL_NN_PRECISION_INT8, x, idx, nsens, y, ref, threads, &c->sens16[k], err);
        only[k] = 0;
    }
    if (st) return st;
    double used = 0;
    for (;;) {
        size_t best = SIZE_MAX;
        double bv = 0;
        for (size_t k = 0; k < m->nnodes; k++) {
            if (c->keep[k] != SL__KEEP_FP32 || c->sens16[k] < 0 || used + c->sens16[k] > budget16) continue;
            double macs = (double)sl__plan_conv_macs(pf, (int)k);
            double v = macs > 0 ? (double)c->sens16[k] / macs : INFINITY;
            if (best == SIZE_MAX || v < bv) { best = k; bv = v; }
        }
        if (best == SIZE_MAX || !(bv < INFINITY)) break;
        c->keep[best] = SL__KEEP_BF16;
        used += c->sens16[best];
    }
    return SL_OK;
}

/* The calibration on n preprocessed images x (the model's input tensors): a seeded sample of
 * max_images of them, or all in order when in_order. */
static sl_status calibrate(const sl_nn *m, const float *x, size_t n, const sl_nn_calib_opts *o, int synthetic,
                           int in_order, sl__calib **out, sl_error *err) {
    *out = NULL;
    int prec = m->precision;
    int threads = o->threads > 0 ? o->threads : m->threads > 0 ? m->threads : omp_get_max_threads();
    size_t dim = m->embed_dim;
    cstate cs;
    memset(&cs, 0, sizeof cs);
    cs.m = m;
    cs.nw = threads;
    sl__calib *c = calloc(1, sizeof *c);
    sl__plan *pf = NULL, *pq = NULL;
    float *ref = NULL, *y = NULL, *lim = NULL;
    size_t nimg = n < o->max_images ? n : o->max_images, nsens = o->sens_images < nimg ? o->sens_images : nimg;
    size_t *idx = sample(n, in_order ? 0 : nimg, o->seed);
    sl_status st = SL_OK;
    if (!c || !idx) { st = sl__err_set(err, SL_E_NOMEM, "out of memory"); goto done; }
    c->nvals = m->nvals;
    c->prec = prec;
    c->method = (int)o->method;
    c->images = (int)nimg;
    c->sens_images = (int)nsens;
    c->seed = o->seed;
    c->synthetic = synthetic;
    c->cos_mean = c->cos_min = 1.0;
    if (!(c->r = sl__callocarray(m->nvals, sizeof *c->r)) || !(c->keep = calloc(m->nnodes ? m->nnodes : 1, 1)) ||
        !(c->sens = sl__mallocarray(m->nnodes ? m->nnodes : 1, sizeof(float))) ||
        !(c->sens16 = sl__mallocarray(m->nnodes ? m->nnodes : 1, sizeof(float)))) {
        st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        goto done;
    }
    for (size_t k = 0; k < m->nnodes; k++) c->sens[k] = c->sens16[k] = -1.0f;
    if (prec == SL_NN_PRECISION_BF16 && !sl__quant_has_bf16()) goto done; /* fp32 anyway: nothing to learn */
    /* the observed tensors: the input of every live convolution */
    if (!(cs.obs = sl__mallocarray(m->nvals, sizeof(int))) || !(cs.nch = sl__callocarray(m->nvals, sizeof(int))) ||
        !(cs.gv = sl__callocarray(m->nvals, sizeof(int)))) {
        st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        goto done;
    }
    for (size_t v = 0; v < m->nvals; v++) cs.obs[v] = -1;
    for (size_t k = 0; k < m->nnodes; k++) {
        const sl__node *nd = &m->nodes[k];
        if (nd->dead || nd->op != SL__OP_CONV || prec != SL_NN_PRECISION_INT8) continue;
        int g = nd->in[0];
        if (cs.obs[g] < 0) { cs.obs[g] = (int)cs.nobs; cs.gv[cs.nobs++] = g; }
        if (o->per_channel && is_depthwise(m, nd)) cs.nch[cs.obs[g]] = (int)m->vals[nd->in[1]].dims[0];
    }
    if (wstats_alloc(&cs)) { st = sl__err_set(err, SL_E_NOMEM, "out of memory"); goto done; }
    if (!(ref = sl__mallocarray(nimg ? nimg : 1, dim * sizeof(float))) || !(y = sl__mallocarray(nsens ? nsens : 1, dim * sizeof(float))) ||
        !(lim = sl__callocarray(cs.nobs ? cs.nobs : 1, sizeof(float)))) {
        st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        goto done;
    }
    if ((st = sl__plan_new(m, 1, SL_NN_PRECISION_FP32, NULL, 1, &pf, err))) goto done;
    /* pass 1: ranges (and the fp32 reference outputs) */
    if (prec == SL_NN_PRECISION_INT8) {
        cs.pass = 1;
        if ((st = run_images(m, pf, x, idx, nimg, ref, &cs, threads, err))) goto done;
        for (size_t k = 0; k < cs.nobs; k++) {
            for (int w = 1; w < cs.nw; w++) {
                vstat *a = &cs.w[0].v[k], *b = &cs.w[w].v[k];
                if (b->amax > a->amax) a->amax = b->amax;
                a->neg |= b->neg;
                for (int ch = 0; ch < cs.nch[k]; ch++) if (b->chmax[ch] > a->chmax[ch]) a->chmax[ch] = b->chmax[ch];
            }
            lim[k] = cs.w[0].v[k].amax;
        }
        /* pass 2: histograms */
        cs.pass = 2;
        cs.lim = lim;
        if ((st = run_images(m, pf, x, idx, nimg, NULL, &cs, threads, err))) goto done;
        for (size_t k = 0; k < cs.nobs; k++) {
            vstat *a = &cs.w[0].v[k];
            for (int w = 1; w < cs.nw; w++) {
                a->zeros += cs.w[w].v[k].zeros;
                for (int b = 0; b < SL__QBINS; b++) a->hist[b] += cs.w[w].v[k].hist[b];
            }
            int g = cs.gv[k];
            sl__qrange *r = &c->r[g];
            r->is_signed = a->neg || g == m->input; /* the graph input is quantized signed */
            r->amax = threshold(a, lim[k], (int)o->method, o->percentile, r->is_signed);
            if (!(r->amax > 0)) r->amax = 1.0f; /* an all-zero tensor: any step is exact */
            if (cs.nch[k]) {
                if (!(r->ch = sl__mallocarray((size_t)cs.nch[k], sizeof(float)))) { st = sl__err_set(err, SL_E_NOMEM, "out of memory"); goto done; }
                r->nch = cs.nch[k];
                for (int ch = 0; ch < r->nch; ch++) {
                    float t = a->chmax[ch] * SL__QCH_HEADROOM < r->amax ? a->chmax[ch] * SL__QCH_HEADROOM : r->amax;
                    r->ch[ch] = t > 0 ? t : r->amax;
                }
            }
            if (range_steps(r)) { st = sl__err_set(err, SL_E_NOMEM, "out of memory"); goto done; }
        }
    } else if ((st = run_images(m, pf, x, idx, nsens, ref, NULL, threads, err))) {
        goto done;
    }
    /* every convolution reduced, on the first nsens images of the sample: within the budget, no
     * layer needs to stay fp32 and the per-layer analysis (a pass per convolution) is skipped */
    double budget = o->budget > 0 ? o->budget : default_budget(prec);
    int analyse = nsens > 0;
    if (analyse) {
        sl__qsel all = {c, NULL};
        if ((st = sl__plan_new(m, 1, prec, &all, 1, &pq, err)) || (st = run_images(m, pq, x, idx, nsens, y, NULL, threads, err)))
            goto done;
        sl__plan_delete(pq);
        pq = NULL;
        cos_stats(y, ref, nsens, dim, &c->cos_mean, &c->cos_min);
        analyse = 1.0 - c->cos_mean > budget;
    }
    /* per-layer sensitivity */
    if (analyse) {
        char *only = calloc(m->nnodes ? m->nnodes : 1, 1);
        if (!only) { st = sl__err_set(err, SL_E_NOMEM, "out of memory"); goto done; }
        sl__qsel sel = {c, only};
        for (size_t k = 0; k < m->nnodes && !st; k++) {
            if (m->nodes[k].dead || m->nodes[k].op != SL__OP_CONV) continue;
            only[k] = 1;
            st = layer_sens(m, &sel, prec, x, idx, nsens, y, ref, threads, &c->sens[k], err);
            only[k] = 0;
        }
        /* int8 on a CPU with bf16 dot products: the layers kept out of int8 may run at bf16,
         * within a tenth of the budget (the ratio of the bf16 and int8 default budgets); the int8
         * layers get the rest */
        int b16 = prec == SL_NN_PRECISION_INT8 && o->keep_bf16 && sl__quant_has_bf16();
        double budget16 = b16 ? budget / 10 : 0;
        keep_rule(m, c->sens, c->keep, budget - budget16);
        if (b16 && !st) st = keep_bf16(m, c, only, pf, x, idx, nsens, y, ref, threads, budget16, err);
        free(only);
        if (st) goto done;
        /* the chosen configuration, measured */
        sl__qsel fin = {c, NULL};
        if ((st = sl__plan_new(m, 1, prec, &fin, 1, &pq, err)) || (st = run_images(m, pq, x, idx, nsens, y, NULL, threads, err)))
            goto done;
        cos_stats(y, ref, nsens, dim, &c->cos_mean, &c->cos_min);
    }
done:
    sl__plan_delete(pf);
    sl__plan_delete(pq);
    wstats_free(&cs);
    free(cs.obs); free(cs.nch); free(cs.gv);
    free(ref); free(y); free(lim); free(idx);
    if (st) { sl__calib_free(c); return st; }
    *out = c;
    return SL_OK;
}

static sl_status check_opts(const sl_nn_calib_opts *o, size_t n, sl_error *err) {
    if (o->method < SL_NN_CALIB_MINMAX || o->method > SL_NN_CALIB_ENTROPY)
        return sl__err_set(err, SL_E_INVALID, "unknown calibration method %d", (int)o->method);
    if (!(o->percentile > 50 && o->percentile <= 100))
        return sl__err_set(err, SL_E_INVALID, "calibration percentile %g out of range (50, 100]", o->percentile);
    if (o->max_images < SL_NN_CALIB_IMAGES_MIN || o->max_images > SL_NN_CALIB_IMAGES_MAX)
        return sl__err_set(err, SL_E_INVALID, "calibration max_images %zu out of range %d..%d", o->max_images,
                           SL_NN_CALIB_IMAGES_MIN, SL_NN_CALIB_IMAGES_MAX);
    if (o->sens_images > SL_NN_CALIB_IMAGES_MAX)
        return sl__err_set(err, SL_E_INVALID, "calibration sens_images %zu above %d", o->sens_images, SL_NN_CALIB_IMAGES_MAX);
    if (o->keep_bf16 != 0 && o->keep_bf16 != 1)
        return sl__err_set(err, SL_E_INVALID, "calibration keep_bf16 %d is not 0 or 1", o->keep_bf16);
    if (!(o->budget >= 0 && o->budget < 1))
        return sl__err_set(err, SL_E_INVALID, "calibration budget %g out of range [0, 1)", o->budget);
    if (o->threads < SL_NN_THREADS_MIN || o->threads > SL_NN_THREADS_MAX)
        return sl__err_set(err, SL_E_INVALID, "calibration threads %d out of range %d..%d", o->threads, SL_NN_THREADS_MIN,
                           SL_NN_THREADS_MAX);
    if (n == 0) return sl__err_set(err, SL_E_INVALID, "calibration needs at least one image");
    return SL_OK;
}

static sl_status check_model(const sl_nn *m, sl_error *err) {
    if (m->precision == SL_NN_PRECISION_FP32)
        return sl__err_set(err, SL_E_INVALID, "the model runs at fp32: load it with precision bf16 or int8 to calibrate");
    if (m->in_rank != 4) return sl__err_set(err, SL_E_UNSUPPORTED, "calibration needs an image (rank-4) input");
    if (m->vals[m->input].dtype != SL__DT_F32) return sl__err_set(err, SL_E_UNSUPPORTED, "calibration needs a float32 input");
    return SL_OK;
}

/* Replaces the model's calibration; cached plans are dropped (they were built with the old one). */
static void install(sl_nn *m, sl__calib *c) {
    sl__plans_free(m);
    sl__calib_free(m->calib);
    m->calib = c;
}

sl_status sl_nn_calibrate_tensor(sl_nn *m, const float *in, size_t n, const sl_nn_calib_opts *o, sl_error *err) {
    if (!m || (!in && n)) return sl__err_set(err, SL_E_INVALID, "sl_nn_calibrate_tensor: NULL argument");
    sl_nn_calib_opts def;
    if (!o) { sl_nn_calib_opts_init(&def); o = &def; }
    sl_status st = check_opts(o, n, err);
    if (!st) st = check_model(m, err);
    if (st) return st;
    sl__calib *c = NULL;
    if ((st = calibrate(m, in, n, o, 0, 0, &c, err))) return sl__err_prefix(err, "calibration");
    install(m, c);
    return SL_OK;
}

sl_status sl_nn_calibrate(sl_nn *m, const sl_image *const *images, size_t n, const sl_nn_calib_opts *o, sl_error *err) {
    if (!m || (!images && n)) return sl__err_set(err, SL_E_INVALID, "sl_nn_calibrate: NULL argument");
    sl_nn_calib_opts def;
    if (!o) { sl_nn_calib_opts_init(&def); o = &def; }
    sl_status st = check_opts(o, n, err);
    if (!st) st = check_model(m, err);
    if (st) return st;
    /* only the sampled images are preprocessed (the sample depends on n and the seed alone) */
    size_t k = n < o->max_images ? n : o->max_images, per = per_image(m);
    size_t *idx = sample(n, k, o->seed);
    float *x = idx ? sl__mallocarray(k, per * sizeof(float)) : NULL;
    if (!x) { free(idx); return sl__err_set(err, SL_E_NOMEM, "out of memory (%zu calibration images)", k); }
    for (size_t i = 0; i < k && !st; i++) {
        if (!images[idx[i]]) st = sl__err_set(err, SL_E_INVALID, "calibration image %zu is NULL", idx[i]);
        else if ((st = sl_nn_preprocess(m, &images[idx[i]], 1, x + i * per, err))) sl__err_prefix(err, "calibration image %zu", idx[i]);
    }
    free(idx);
    if (!st) {
        /* the tensors are the sample already, in sample order: take them all, in order */
        sl__calib *c = NULL;
        if (!(st = calibrate(m, x, k, o, 0, 1, &c, err))) install(m, c);
        else sl__err_prefix(err, "calibration");
    }
    free(x);
    return st;
}

sl_status sl__quant_ensure(const sl_nn *m, sl_error *err) {
    if (m->calib) return SL_OK;
    if (m->in_rank != 4 || m->vals[m->input].dtype != SL__DT_F32)
        return sl__err_set(err, SL_E_UNSUPPORTED, "reduced precision needs an image (rank-4 float32) input");
    size_t per = per_image(m);
    float *x = sl__mallocarray(SL__CALIB_SYNTH, per * sizeof(float));
    if (!x) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    for (int k = 0; k < SL__CALIB_SYNTH; k++) synth_image(m, k, m->in_dims[1], m->in_dims[2], m->in_dims[3], x + (size_t)k * per);
    sl_nn_calib_opts o;
    sl_nn_calib_opts_init(&o);
    o.max_images = SL__CALIB_SYNTH;
    sl__calib *c = NULL;
    sl_status st = calibrate(m, x, SL__CALIB_SYNTH, &o, 1, 1, &c, err);
    free(x);
    if (!st) ((sl_nn *)m)->calib = c; /* set once, under the model lock (plan.c) */
    return st;
}

/* ---- what a plan asks ------------------------------------------------------------------------- */

int sl__quant_conv(const sl_nn *m, const sl__qsel *sel, int prec, int node, int gin, int is_input, sl__dq *q) {
    memset(q, 0, sizeof *q);
    if (prec == SL_NN_PRECISION_FP32 || !sel || node < 0 || (size_t)node >= m->nnodes) return SL_NN_PRECISION_FP32;
    const sl__calib *c = sel->cal;
    int how = sel->only ? sel->only[node] : !c || !c->keep[node] ? 1 : c->keep[node] == SL__KEEP_BF16 ? SL__KEEP_BF16 : 0;
    if (!how) return SL_NN_PRECISION_FP32;
    if (prec == SL_NN_PRECISION_BF16) return SL_NN_PRECISION_BF16;
    /* kept at bf16: where the CPU has bf16 dot products (a record made on another CPU may say
     * bf16; oneDNN's emulation on plain AVX-512 would be slower than fp32) */
    if (how == SL__KEEP_BF16) return sl__quant_has_bf16() ? SL_NN_PRECISION_BF16 : SL_NN_PRECISION_FP32;
    if (!c || gin < 0 || (size_t)gin >= c->nvals || !(c->r[gin].amax > 0)) return SL_NN_PRECISION_FP32;
    const sl__qrange *r = &c->r[gin];
    q->is_signed = r->is_signed || is_input;
    float L = q->is_signed ? 127.0f : 255.0f;
    q->sx = r->amax / L;
    if (r->nch && r->chs && r->nch == (int)m->vals[m->nodes[node].in[1]].dims[0] && is_depthwise(m, &m->nodes[node]))
        q->sxc = r->chs;
    return SL_NN_PRECISION_INT8;
}

void sl_nn_calibration_describe(const sl_nn *m, char *buf, size_t n) {
    if (!buf || !n) return;
    buf[0] = 0;
    if (!m || !m->calib) return;
    char line[4096];
    sl__quant_info(m, line, sizeof line);
    const char *t = strncmp(line, "calibration: ", 13) ? line : line + 13;
    size_t len = strcspn(t, "\n");
    if (len >= n) len = n - 1;
    memcpy(buf, t, len);
    buf[len] = 0;
}

int sl_nn_calibrated(const sl_nn *m) {
    if (!m || !m->calib) return 0;
    return m->calib->synthetic ? 2 : 1;
}

/* ---- the record (docs/formats/nn_calibration.md) ---------------------------------------------- */

#define CAL_MAGIC "SLNNCAL\n"
#define CAL_VERSION 2u       /* 2: convolutions kept at bf16, bf16 sensitivities; 1 is still read */
#define CAL_MAX_NAME 65535u

static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) { h ^= b[i]; h *= 0x100000001b3ULL; }
    return h;
}

/* Fingerprint of the weights as the file has them: every initializer's name, type, shape and up
 * to 64 evenly spaced elements (FNV-1a 64). Independent of load-time rewriting (BatchNorm folding,
 * layouts), which makes new values and leaves the initializers' as they were read. */
static uint64_t fingerprint(const sl_nn *m) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t k = 0; m->onnx && k < m->onnx->ninits; k++) {
        const char *nm = m->onnx->inits[k].name ? m->onnx->inits[k].name : "";
        const sl__value *v = NULL;
        for (size_t j = 0; j < m->nvals && !v; j++)
            if (m->vals[j].is_const && m->vals[j].name && !strcmp(m->vals[j].name, nm)) v = &m->vals[j];
        h = fnv1a(h, nm, strlen(nm) + 1);
        if (!v) continue;
        uint32_t meta[3] = {(uint32_t)v->dtype, (uint32_t)v->rank, (uint32_t)v->count};
        h = fnv1a(h, meta, sizeof meta);
        h = fnv1a(h, v->dims, sizeof(int64_t) * (size_t)(v->rank > 0 ? v->rank : 0));
        size_t es = v->dtype == SL__DT_I64 ? 8 : v->dtype == SL__DT_F32 ? 4 : 1;
        const uint8_t *d = v->dtype == SL__DT_I64 ? (const uint8_t *)v->i : v->dtype == SL__DT_F32 ? (const uint8_t *)v->f : v->q;
        if (!d) continue;
        size_t step = v->count > 64 ? v->count / 64 : 1;
        for (size_t e = 0; e < v->count; e += step) h = fnv1a(h, d + e * es, es);
    }
    return h;
}

typedef struct wb { uint8_t *p; size_t n, cap; int oom; } wb;
static void put(wb *b, const void *d, size_t n) {
    if (b->oom) return;
    if (b->n + n > b->cap) {
        size_t nc = (b->n + n) * 2 + 256;
        uint8_t *q = realloc(b->p, nc);
        if (!q) { b->oom = 1; return; }
        b->p = q; b->cap = nc;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put_u(wb *b, uint64_t v, int bytes) {
    uint8_t t[8];
    for (int i = 0; i < bytes; i++) t[i] = (uint8_t)(v >> (8 * i));
    put(b, t, (size_t)bytes);
}
static void put_f32(wb *b, float f) { uint32_t u; memcpy(&u, &f, 4); put_u(b, u, 4); }
static void put_f64(wb *b, double f) { uint64_t u; memcpy(&u, &f, 8); put_u(b, u, 8); }
static void put_name(wb *b, const char *s) {
    size_t n = s ? strlen(s) : 0;
    if (n > CAL_MAX_NAME) n = CAL_MAX_NAME; /* checked by the caller */
    put_u(b, n, 2);
    put(b, s, n);
}

sl_status sl_nn_calibration_save(const sl_nn *m, uint8_t **buf, size_t *len, sl_error *err) {
    if (!m || !buf || !len) return sl__err_set(err, SL_E_INVALID, "sl_nn_calibration_save: NULL argument");
    *buf = NULL;
    *len = 0;
    const sl__calib *c = m->calib;
    if (!c) return sl__err_set(err, SL_E_INVALID, "the model has no calibration (fp32, or not calibrated yet)");
    wb b = {0};
    uint32_t nv = 0, nc = 0;
    for (size_t v = 0; v < c->nvals; v++) {
        if (!(c->r[v].amax > 0)) continue;
        if (strlen(m->vals[v].name) > CAL_MAX_NAME) return sl__err_set(err, SL_E_UNSUPPORTED, "tensor name longer than %u bytes", CAL_MAX_NAME);
        nv++;
    }
    for (size_t k = 0; k < m->nnodes; k++) {
        if (m->nodes[k].dead || m->nodes[k].op != SL__OP_CONV) continue;
        if (strlen(m->vals[m->nodes[k].out].name) > CAL_MAX_NAME) return sl__err_set(err, SL_E_UNSUPPORTED, "tensor name too long");
        nc++;
    }
    put(&b, CAL_MAGIC, 8);
    put_u(&b, CAL_VERSION, 4);
    put_u(&b, (uint32_t)c->prec, 4);
    put_u(&b, (uint32_t)c->method, 4);
    put_u(&b, (uint32_t)c->images, 4);
    put_u(&b, (uint32_t)c->sens_images, 4);
    put_u(&b, (uint32_t)c->synthetic, 4);
    put_u(&b, c->seed, 8);
    put_f64(&b, c->cos_mean);
    put_f64(&b, c->cos_min);
    put_u(&b, fingerprint(m), 8);
    put_u(&b, nv, 4);
    for (size_t v = 0; v < c->nvals; v++) {
        const sl__qrange *r = &c->r[v];
        if (!(r->amax > 0)) continue;
        put_name(&b, m->vals[v].name);
        put_u(&b, (uint32_t)r->is_signed, 1);
        put_f32(&b, r->amax);
        put_u(&b, (uint32_t)r->nch, 4);
        for (int ch = 0; ch < r->nch; ch++) put_f32(&b, r->ch[ch]);
    }
    put_u(&b, nc, 4);
    for (size_t k = 0; k < m->nnodes; k++) {
        if (m->nodes[k].dead || m->nodes[k].op != SL__OP_CONV) continue;
        put_name(&b, m->vals[m->nodes[k].out].name);
        put_u(&b, (uint32_t)c->keep[k], 1);
        put_f32(&b, c->sens[k]);
        put_f32(&b, c->sens16 ? c->sens16[k] : -1.0f);
    }
    put_u(&b, b.oom ? 0 : fnv1a(0xcbf29ce484222325ULL, b.p, b.n), 8);
    if (b.oom) { free(b.p); return sl__err_set(err, SL_E_NOMEM, "out of memory"); }
    *buf = b.p;
    *len = b.n;
    return SL_OK;
}

typedef struct rb { const uint8_t *p; size_t n, at; int bad; } rb;
static uint64_t get_u(rb *r, int bytes) {
    if (r->bad || r->n - r->at < (size_t)bytes) { r->bad = 1; return 0; }
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) v |= (uint64_t)r->p[r->at + (size_t)i] << (8 * i);
    r->at += (size_t)bytes;
    return v;
}
static float get_f32(rb *r) { uint32_t u = (uint32_t)get_u(r, 4); float f; memcpy(&f, &u, 4); return f; }
static double get_f64(rb *r) { uint64_t u = get_u(r, 8); double f; memcpy(&f, &u, 8); return f; }
/* A name as a value index of m (-1 if absent; -2 on malformed bytes). */
static int get_value(rb *r, const sl_nn *m, char *name, size_t cap) {
    size_t n = (size_t)get_u(r, 2);
    if (r->bad || r->n - r->at < n || n + 1 > cap) { r->bad = 1; return -2; }
    memcpy(name, r->p + r->at, n);
    name[n] = 0;
    r->at += n;
    return sl__graph_find_value(m, name);
}

#define CORRUPT(what) do { st = sl__err_set(err, SL_E_CORRUPT, "calibration record: %s", what); goto done; } while (0)

sl_status sl_nn_calibration_load(sl_nn *m, const uint8_t *buf, size_t len, sl_error *err) {
    if (!m || (!buf && len)) return sl__err_set(err, SL_E_INVALID, "sl_nn_calibration_load: NULL argument");
    sl_status st = SL_OK;
    char *name = malloc(CAL_MAX_NAME + 1);
    sl__calib *c = calloc(1, sizeof *c);
    rb r = {buf, len, 0, 0};
    if (!name || !c) { st = sl__err_set(err, SL_E_NOMEM, "out of memory"); goto done; }
    c->nvals = m->nvals;
    if (!(c->r = sl__callocarray(m->nvals ? m->nvals : 1, sizeof *c->r)) || !(c->keep = calloc(m->nnodes ? m->nnodes : 1, 1)) ||
        !(c->sens = sl__mallocarray(m->nnodes ? m->nnodes : 1, sizeof(float))) ||
        !(c->sens16 = sl__mallocarray(m->nnodes ? m->nnodes : 1, sizeof(float)))) {
        st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        goto done;
    }
    for (size_t k = 0; k < m->nnodes; k++) c->sens[k] = c->sens16[k] = -1.0f;
    if (len < 8 + 8 || memcmp(buf, CAL_MAGIC, 8)) CORRUPT("bad magic");
    rb tail = {buf, len, len - 8, 0};
    if (fnv1a(0xcbf29ce484222325ULL, buf, len - 8) != get_u(&tail, 8)) CORRUPT("checksum mismatch");
    r.n = len - 8;
    r.at = 8;
    uint32_t ver = (uint32_t)get_u(&r, 4);
    if (!r.bad && ver != CAL_VERSION && ver != 1) { st = sl__err_set(err, SL_E_VERSION, "calibration record version %u (this build reads %u)", ver, CAL_VERSION); goto done; }
    c->prec = (int)get_u(&r, 4);
    c->method = (int)get_u(&r, 4);
    c->images = (int)get_u(&r, 4);
    c->sens_images = (int)get_u(&r, 4);
    c->synthetic = (int)get_u(&r, 4);
    c->seed = get_u(&r, 8);
    c->cos_mean = get_f64(&r);
    c->cos_min = get_f64(&r);
    uint64_t fp = get_u(&r, 8);
    if (r.bad) CORRUPT("truncated header");
    if (c->prec != SL_NN_PRECISION_BF16 && c->prec != SL_NN_PRECISION_INT8) CORRUPT("unknown precision");
    if (c->method < SL_NN_CALIB_MINMAX || c->method > SL_NN_CALIB_ENTROPY || c->synthetic < 0 || c->synthetic > 1)
        CORRUPT("bad header field");
    if (c->prec != m->precision) {
        st = sl__err_set(err, SL_E_INVALID, "calibration is for %s but the model runs at %s", c->prec == SL_NN_PRECISION_INT8 ? "int8" : "bf16",
                         m->precision == SL_NN_PRECISION_INT8 ? "int8" : m->precision == SL_NN_PRECISION_BF16 ? "bf16" : "fp32");
        goto done;
    }
    if (fp != fingerprint(m)) {
        st = sl__err_set(err, SL_E_INVALID, "calibration was made for other weights (fingerprint %016llx, model %016llx)",
                         (unsigned long long)fp, (unsigned long long)fingerprint(m));
        goto done;
    }
    uint32_t nv = (uint32_t)get_u(&r, 4);
    for (uint32_t i = 0; i < nv && !r.bad; i++) {
        int g = get_value(&r, m, name, CAL_MAX_NAME + 1);
        int sg = (int)get_u(&r, 1);
        float amax = get_f32(&r);
        uint32_t nch = (uint32_t)get_u(&r, 4);
        if (r.bad) break;
        if (g < 0) { st = sl__err_set(err, SL_E_INVALID, "calibration does not match the model: no tensor '%s'", name); goto done; }
        sl__qrange *q = &c->r[g];
        if (q->amax > 0) CORRUPT("tensor given twice");
        if (!(amax > 0) || !isfinite(amax) || sg > 1 || nch > (r.n - r.at) / 4) CORRUPT("bad range");
        q->amax = amax;
        q->is_signed = sg;
        if (nch) {
            if (!(q->ch = sl__mallocarray(nch, sizeof(float)))) { st = sl__err_set(err, SL_E_NOMEM, "out of memory"); goto done; }
            q->nch = (int)nch;
            for (uint32_t ch = 0; ch < nch; ch++) {
                q->ch[ch] = get_f32(&r);
                if (!(q->ch[ch] > 0) || !isfinite(q->ch[ch])) CORRUPT("bad channel range");
            }
            if (range_steps(q)) { st = sl__err_set(err, SL_E_NOMEM, "out of memory"); goto done; }
        }
    }
    uint32_t nc = (uint32_t)get_u(&r, 4);
    for (uint32_t i = 0; i < nc && !r.bad; i++) {
        int g = get_value(&r, m, name, CAL_MAX_NAME + 1);
        int keep = (int)get_u(&r, 1);
        float sens = get_f32(&r), sens16 = ver >= 2 ? get_f32(&r) : -1.0f;
        if (r.bad) break;
        int node = g >= 0 ? m->vals[g].producer : -1;
        if (node < 0 || m->nodes[node].op != SL__OP_CONV) {
            st = sl__err_set(err, SL_E_INVALID, "calibration does not match the model: no convolution makes '%s'", name);
            goto done;
        }
        /* bf16 keeps: version 2, int8 records only */
        if (keep > (ver >= 2 && c->prec == SL_NN_PRECISION_INT8 ? SL__KEEP_BF16 : SL__KEEP_FP32) || !(sens == sens) ||
            !(sens16 == sens16))
            CORRUPT("bad layer entry");
        c->keep[node] = (char)keep;
        c->sens[node] = sens;
        c->sens16[node] = sens16;
    }
    if (r.bad || r.at != r.n) CORRUPT(r.bad ? "truncated" : "trailing bytes");
done:
    free(name);
    if (st) { sl__calib_free(c); return st; }
    install(m, c);
    return SL_OK;
}

void sl__quant_info(const sl_nn *m, char *buf, size_t n) {
    const sl__calib *c = m->calib;
    buf[0] = 0;
    if (!c) {
        if (m->precision != SL_NN_PRECISION_FP32) snprintf(buf, n, "calibration: none yet (made at the first run)\n");
        return;
    }
    static const char *const meth[] = {"min/max", "percentile", "mse", "entropy"};
    int kept = 0, k16 = 0, convs = 0;
    size_t L = 0;
    for (size_t k = 0; k < m->nnodes; k++)
        if (!m->nodes[k].dead && m->nodes[k].op == SL__OP_CONV) { convs++; kept += c->keep[k] != 0; k16 += c->keep[k] == SL__KEEP_BF16; }
    L += (size_t)snprintf(buf + L, n > L ? n - L : 0, "calibration: %s, %d images%s (seed %llu)%s%s; %d of %d "
                          "convolutions kept at fp32", c->prec == SL_NN_PRECISION_INT8 ? "int8" : "bf16", c->images,
                          c->synthetic ? " (synthetic)" : "", (unsigned long long)c->seed,
                          c->prec == SL_NN_PRECISION_INT8 ? ", ranges by " : "",
                          c->prec == SL_NN_PRECISION_INT8 ? meth[c->method >= 0 && c->method < 4 ? c->method : 0] : "",
                          kept - k16, convs);
    if (k16 && L < n) L += (size_t)snprintf(buf + L, n - L, " and %d at bf16", k16);
    for (size_t k = 0; k < m->nnodes && L < n; k++) {
        if (!c->keep[k]) continue;
        L += (size_t)snprintf(buf + L, n - L, "%s '%s' (%.2g", L && buf[L - 1] == ')' ? "," : ":", m->nodes[k].name, (double)c->sens[k]);
        if (L < n && c->keep[k] == SL__KEEP_BF16)
            L += (size_t)snprintf(buf + L, n - L, "; bf16 %.2g", (double)c->sens16[k]);
        if (L < n) L += (size_t)snprintf(buf + L, n - L, ")");
    }
    if (L < n) snprintf(buf + L, n - L, "; embedding cosine to fp32 on %d images: mean %.6f, min %.6f\n", c->sens_images,
                        c->cos_mean, c->cos_min);
}
