/*
 * learn/train.c - training of the projection head (learn.h): per-domain centring, then a
 * low-rank residual map c -> c + (c V) U trained with a proxy softmax (Proxy-NCA,
 * Movshovitz-Attias et al. 2017, on normalized embeddings with a temperature as in NormFace,
 * Wang et al. 2017) from each photo to its product's proxy and, weighted lower, to its
 * category's proxy; Adam (Kingma & Ba 2015) on mini-batches; L2 penalty towards the identity.
 *
 * A product's proxy is the head's image of the normalized sum of its centred catalog images: it
 * moves with the map, so the loss can only be lowered by mapping photos and catalog images
 * closer, never by memorizing a free vector per product. Only products with photos are proxies.
 *
 * Invariants: deterministic for (data, opts): one seeded PRNG drives initialisation, batch order
 * and proxy samples in a fixed sequence; the only parallel code is the matrix products (mm.c),
 * which split the output by rows and sum every element in one fixed order, so the bits do not
 * depend on the thread count (tested). The caller's data is never modified.
 */
#include "learn/learn_internal.h"
#include "util/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void sl_head_train_opts_init(sl_head_train_opts *o) {
    memset(o, 0, sizeof *o);
    o->epochs = SL_HEAD_EPOCHS_DEFAULT;
    o->seed = 0x1ea7c0deULL;
    o->rank = SL_HEAD_RANK_DEFAULT;
    o->lambda = SL_HEAD_LAMBDA_DEFAULT;
    o->temperature = SL_HEAD_TEMPERATURE_DEFAULT;
    o->category_weight = SL_HEAD_CATEGORY_WEIGHT_DEFAULT;
    o->batch = SL_HEAD_BATCH_DEFAULT;
    o->lr = SL_HEAD_LR_DEFAULT;
}

/* Threads of the matrix products and whether one ran out of memory (set per training). */
static _Thread_local int mm_threads = 1, mm_failed = 0;

/* C (m x n) = alpha op(A) op(B) + beta C, row-major, thread-count independent (mm.c). */
static void gemm(int ta, int tb, size_t m, size_t n, size_t k, float alpha, const float *a, size_t lda,
                 const float *b, size_t ldb, float beta, float *c, size_t ldc) {
    if (sl__mm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, mm_threads) != 0) mm_failed = 1;
}

/* Row-wise softmax of z (n x m) in place; returns the summed -log p of the targets. */
static double softmax_ce(float *z, size_t n, size_t m, const uint32_t *target) {
    sl__softmax_rows(z, n, m);
    double loss = 0.0;
    for (size_t i = 0; i < n; i++) {
        double pt = z[i * m + target[i]];
        loss += -log(pt > 1e-30 ? pt : 1e-30);
    }
    return loss;
}

/* Gradient through row normalization: g = (g - yh (yh . g)) / norm, in place. */
static void norm_backward(float *g, const float *yh, const float *norm, size_t n, size_t d) {
    for (size_t i = 0; i < n; i++) {
        float *gr = g + i * d;
        const float *yr = yh + i * d;
        double dot = 0.0;
        for (size_t j = 0; j < d; j++) dot += (double)gr[j] * yr[j];
        float inv = norm[i] > 0.0f ? 1.0f / norm[i] : 0.0f, fd = (float)dot;
        for (size_t j = 0; j < d; j++) gr[j] = (gr[j] - yr[j] * fd) * inv;
    }
}

/* Forward of the map on rows x (n x d): h = x V (n x r), y = x + h U, normalized in place
 * (norms in nrm). */
static void forward(const sl_head *hd, const float *x, size_t n, float *h, float *y, float *nrm) {
    size_t d = hd->dim, r = hd->rank;
    memcpy(y, x, n * d * sizeof *y);
    gemm(0, 0, n, r, d, 1.0f, x, d, hd->V, r, 0.0f, h, r);
    gemm(0, 0, n, d, r, 1.0f, h, r, hd->U, d, 1.0f, y, d);
    sl__head_normalize(y, n, d, nrm);
}

static void adam(float *p, const float *g, float *m, float *v, size_t n, float lr, int t) {
    const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
    float c1 = 1.0f - powf(b1, (float)t), c2 = 1.0f - powf(b2, (float)t);
    for (size_t i = 0; i < n; i++) {
        m[i] = b1 * m[i] + (1.0f - b1) * g[i];
        v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
        p[i] -= lr * (m[i] / c1) / (sqrtf(v[i] / c2) + eps);
    }
}

static sl_status check_opts(const sl_head_train_opts *o, sl_error *err) {
#define RANGE(f, lo, hi, what) \
    if (!(o->f >= (lo) && o->f <= (hi))) return sl__err_set(err, SL_E_INVALID, "head training: %s out of range", what)
    RANGE(epochs, SL_HEAD_EPOCHS_MIN, SL_HEAD_EPOCHS_MAX, "epochs (0..1000)");
    RANGE(rank, SL_HEAD_RANK_MIN, SL_HEAD_RANK_MAX, "rank (1..1024)");
    if (o->lambda != SL_HEAD_LAMBDA_AUTO) RANGE(lambda, SL_HEAD_LAMBDA_MIN, SL_HEAD_LAMBDA_MAX, "lambda (0..100, or SL_HEAD_LAMBDA_AUTO)");
    RANGE(temperature, SL_HEAD_TEMPERATURE_MIN, SL_HEAD_TEMPERATURE_MAX, "temperature (0.005..10)");
    RANGE(category_weight, SL_HEAD_CATEGORY_WEIGHT_MIN, SL_HEAD_CATEGORY_WEIGHT_MAX, "category weight (0..10)");
    RANGE(batch, SL_HEAD_BATCH_MIN, SL_HEAD_BATCH_MAX, "batch (2..4096)");
    RANGE(lr, SL_HEAD_LR_MIN, SL_HEAD_LR_MAX, "learning rate (1e-6..1)");
    RANGE(threads, 0, SL_HEAD_THREADS_MAX, "threads (0..64)");
#undef RANGE
    return SL_OK;
}

static void mean_rows(const float *x, size_t n, size_t d, float *mean) {
    double *acc = calloc(d, sizeof *acc);
    if (!acc) { /* fall back to float accumulation */
        memset(mean, 0, d * sizeof *mean);
        for (size_t i = 0; i < n; i++) for (size_t j = 0; j < d; j++) mean[j] += x[i * d + j] / (float)n;
        return;
    }
    for (size_t i = 0; i < n; i++) for (size_t j = 0; j < d; j++) acc[j] += x[i * d + j];
    for (size_t j = 0; j < d; j++) mean[j] = (float)(acc[j] / (double)n);
    free(acc);
}

typedef struct work {
    size_t d, r, B, S, K;
    float *X, *C, *HX, *HC, *YX, *YC, *nX, *nC, *Z, *gYX, *gYC, *Sk, *nK, *Zc, *gSk, *TX, *TC, *gU, *gV;
    uint32_t *tX, *catS, *tCat;
    float *mV, *vV, *mU, *vU;
} work;

static void work_free(work *w) {
    float *f[] = {w->X, w->C, w->HX, w->HC, w->YX, w->YC, w->nX, w->nC, w->Z, w->gYX, w->gYC, w->Sk,
                  w->nK, w->Zc, w->gSk, w->TX, w->TC, w->gU, w->gV, w->mV, w->vV, w->mU, w->vU};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) free(f[i]);
    free(w->tX);
    free(w->catS);
    free(w->tCat);
}

static int work_alloc(work *w) {
    size_t d = w->d, r = w->r, B = w->B, S = w->S, K = w->K ? w->K : 1;
#define A(p, n) (((p) = sl__callocarray((n), sizeof *(p))) != NULL)
    return A(w->X, B * d) && A(w->C, S * d) && A(w->HX, B * r) && A(w->HC, S * r) && A(w->YX, B * d) &&
           A(w->YC, S * d) && A(w->nX, B) && A(w->nC, S) && A(w->Z, B * S) && A(w->gYX, B * d) &&
           A(w->gYC, S * d) && A(w->Sk, K * d) && A(w->nK, K) && A(w->Zc, B * K) && A(w->gSk, K * d) &&
           A(w->TX, B * r) && A(w->TC, S * r) && A(w->gU, r * d) && A(w->gV, d * r) && A(w->mV, d * r) &&
           A(w->vV, d * r) && A(w->mU, d * r) && A(w->vU, d * r) && A(w->tX, B) && A(w->catS, S) && A(w->tCat, B);
#undef A
}

/* One step on the batch rows w->X (B rows, targets w->tX into the S proxies w->C with categories
 * w->catS). Returns the summed loss of the batch. */
static double step(sl_head *hd, work *w, size_t B, size_t S, size_t K, const sl_head_train_opts *o, int t) {
    size_t d = w->d, r = w->r;
    float inv_tau = 1.0f / o->temperature;
    forward(hd, w->X, B, w->HX, w->YX, w->nX);
    forward(hd, w->C, S, w->HC, w->YC, w->nC);
    /* product level */
    gemm(0, 1, B, S, d, inv_tau, w->YX, d, w->YC, d, 0.0f, w->Z, S);
    double loss = softmax_ce(w->Z, B, S, w->tX);
    for (size_t i = 0; i < B; i++) w->Z[i * S + w->tX[i]] -= 1.0f;
    float sc = inv_tau / (float)B;
    gemm(0, 0, B, d, S, sc, w->Z, S, w->YC, d, 0.0f, w->gYX, d);
    gemm(1, 0, S, d, B, sc, w->Z, S, w->YX, d, 0.0f, w->gYC, d);
    /* category level: proxies = normalized sums of the products' proxies */
    if (K >= 2 && o->category_weight > 0.0f) {
        memset(w->Sk, 0, K * d * sizeof *w->Sk);
        for (size_t p = 0; p < S; p++)
            for (size_t j = 0; j < d; j++) w->Sk[w->catS[p] * d + j] += w->YC[p * d + j];
        sl__head_normalize(w->Sk, K, d, w->nK);
        gemm(0, 1, B, K, d, inv_tau, w->YX, d, w->Sk, d, 0.0f, w->Zc, K);
        for (size_t i = 0; i < B; i++) w->tCat[i] = w->catS[w->tX[i]];
        loss += o->category_weight * softmax_ce(w->Zc, B, K, w->tCat);
        for (size_t i = 0; i < B; i++) w->Zc[i * K + w->tCat[i]] -= 1.0f;
        float cw = o->category_weight * sc;
        gemm(0, 0, B, d, K, cw, w->Zc, K, w->Sk, d, 1.0f, w->gYX, d);
        gemm(1, 0, K, d, B, cw, w->Zc, K, w->YX, d, 0.0f, w->gSk, d);
        norm_backward(w->gSk, w->Sk, w->nK, K, d);
        for (size_t p = 0; p < S; p++)
            for (size_t j = 0; j < d; j++) w->gYC[p * d + j] += w->gSk[w->catS[p] * d + j];
    }
    norm_backward(w->gYX, w->YX, w->nX, B, d);
    norm_backward(w->gYC, w->YC, w->nC, S, d);
    /* gU = HX' gYX + HC' gYC + lambda U;  gV = X' (gYX U') + C' (gYC U') + lambda V */
    memcpy(w->gU, hd->U, r * d * sizeof *w->gU);
    memcpy(w->gV, hd->V, d * r * sizeof *w->gV);
    gemm(1, 0, r, d, B, 1.0f, w->HX, r, w->gYX, d, o->lambda, w->gU, d);
    gemm(1, 0, r, d, S, 1.0f, w->HC, r, w->gYC, d, 1.0f, w->gU, d);
    gemm(0, 1, B, r, d, 1.0f, w->gYX, d, hd->U, d, 0.0f, w->TX, r);
    gemm(0, 1, S, r, d, 1.0f, w->gYC, d, hd->U, d, 0.0f, w->TC, r);
    gemm(1, 0, d, r, B, 1.0f, w->X, d, w->TX, r, o->lambda, w->gV, r);
    gemm(1, 0, d, r, S, 1.0f, w->C, d, w->TC, r, 1.0f, w->gV, r);
    adam(hd->U, w->gU, w->mU, w->vU, r * d, o->lr, t);
    adam(hd->V, w->gV, w->mV, w->vV, d * r, o->lr, t);
    return loss;
}

sl_status sl__head_check(const sl_head_data *dt, const sl_head_train_opts *o, sl_error *err) {
    sl_status st = check_opts(o, err);
    if (st != SL_OK) return st;
    if (!dt || !dt->photos || !dt->photo_class || !dt->gallery || !dt->gallery_class)
        return sl__err_set(err, SL_E_INVALID, "head training: NULL data");
    size_t d = dt->dim, n = dt->n_photos, g = dt->n_gallery, P = dt->n_classes;
    if (d == 0 || d > SL_HEAD_DIM_MAX) return sl__err_set(err, SL_E_INVALID, "head training: dimension %zu out of range 1..%d", d, SL_HEAD_DIM_MAX);
    if (n == 0) return sl__err_set(err, SL_E_INVALID, "head training: no photos");
    if (g == 0 || P == 0) return sl__err_set(err, SL_E_INVALID, "head training: no catalog images");
    if (P > UINT32_MAX) return sl__err_set(err, SL_E_INVALID, "head training: too many classes");
    for (size_t i = 0; i < n; i++)
        if (dt->photo_class[i] >= P) return sl__err_set(err, SL_E_INVALID, "head training: photo %zu: class %u >= %zu", i, dt->photo_class[i], P);
    for (size_t i = 0; i < g; i++)
        if (dt->gallery_class[i] >= P) return sl__err_set(err, SL_E_INVALID, "head training: catalog image %zu: class %u >= %zu", i, dt->gallery_class[i], P);
    size_t nd, gd;
    if (sl__mul_size(n, d, &nd) || sl__mul_size(g, d, &gd)) return sl__err_set(err, SL_E_TOO_LARGE, "head training: too much data");
    for (size_t i = 0; i < nd; i++)
        if (!isfinite(dt->photos[i])) return sl__err_set(err, SL_E_INVALID, "head training: photo %zu: non-finite value", i / d);
    for (size_t i = 0; i < gd; i++)
        if (!isfinite(dt->gallery[i])) return sl__err_set(err, SL_E_INVALID, "head training: catalog image %zu: non-finite value", i / d);
    return SL_OK;
}

int sl__head_map(const sl_head *hd, sl_head_side side, const float *in, float *out, size_t n, int threads) {
    size_t d = hd->dim, r = hd->rank;
    memcpy(out, in, n * d * sizeof *out);
    sl__head_center(out, n, d, hd->mean[side]);
    if (n == 0) return 0;
    if (r == 0) return sl__head_mix(hd, out, n, threads > 0 ? threads : 1);
    mm_threads = threads > 0 ? threads : 1;
    mm_failed = 0;
    float *x = sl__mallocarray(n * d, sizeof *x), *h = sl__mallocarray(n * r, sizeof *h);
    if (x && h) {
        memcpy(x, out, n * d * sizeof *x);
        forward(hd, x, n, h, out, NULL);
    }
    free(h);
    if (!x || !h) { free(x); return -1; }
    free(x);
    if (mm_failed) return -1;
    return sl__head_mix(hd, out, n, threads > 0 ? threads : 1);
}

/* Photos mapped per block when the prototypes are made (bounds the scratch buffer). */
#define PROTO_BLOCK 256

sl_status sl__head_set_prototypes(sl_head *h, const sl_head_data *dt, float beta, int threads, sl_error *err) {
    sl__head_drop_prototypes(h);
    if (!(beta > 0.0f) || dt->n_photos == 0) return SL_OK;
    size_t d = h->dim, P = dt->n_classes, k = 0;
    int32_t *idx = sl__mallocarray(P + 1, sizeof *idx);
    if (!idx) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    for (size_t c = 0; c < P; c++) idx[c] = -1;
    for (size_t i = 0; i < dt->n_photos; i++) idx[dt->photo_class[i]] = -2; /* has photos */
    /* classes numbered in class order: the file does not depend on the photos' order */
    for (size_t c = 0; c < P; c++)
        if (idx[c] == -2) idx[c] = (int32_t)k++;
    if (k == 0 || k > SL_HEAD_PROTOTYPES_MAX) {
        free(idx);
        return SL_OK;
    }
    size_t blk = dt->n_photos < PROTO_BLOCK ? dt->n_photos : PROTO_BLOCK;
    float *proto = sl__callocarray(k * d, sizeof *proto), *y = sl__mallocarray(blk * d, sizeof *y);
    if (!proto || !y) {
        free(idx); free(proto); free(y);
        return sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    for (size_t i0 = 0; i0 < dt->n_photos; i0 += blk) {
        size_t m = dt->n_photos - i0 < blk ? dt->n_photos - i0 : blk;
        if (sl__head_map(h, SL_HEAD_QUERY, dt->photos + i0 * d, y, m, threads) != 0) {
            free(idx); free(proto); free(y);
            return sl__err_set(err, SL_E_NOMEM, "out of memory");
        }
        for (size_t i = 0; i < m; i++) {
            float *row = proto + (size_t)idx[dt->photo_class[i0 + i]] * d;
            for (size_t j = 0; j < d; j++) row[j] += y[i * d + j];
        }
    }
    sl__head_normalize(proto, k, d, NULL);
    free(idx);
    free(y);
    h->proto = proto;
    h->n_proto = k;
    h->beta = beta;
    h->tau = SL_HEAD_TEMPERATURE_DEFAULT;
    return SL_OK;
}

sl_status sl__head_train_fixed(const sl_head_data *dt, const sl_head_train_opts *opts, sl_head **out,
                               sl_error *err) {
    *out = NULL;
    sl_head_train_opts o = *opts;
    sl_status st = SL_OK;
    size_t d = dt->dim, n = dt->n_photos, g = dt->n_gallery, P = dt->n_classes;
    size_t nd = n * d, gd = g * d; /* checked by sl__head_check */

    size_t r = (size_t)o.rank < d ? (size_t)o.rank : d;
    if (o.epochs == 0) r = 0;
    sl_head *hd = sl__head_alloc(d, r);
    float *xp = NULL, *proto = NULL;
    int32_t *pidx = NULL;   /* class -> proxy index, -1 when not a proxy */
    uint32_t *pcls = NULL, *pcat = NULL, *ycls = NULL;
    size_t *perm = NULL, *keep = NULL;
    uint32_t *catmap = NULL;
    unsigned char *chosen = NULL;
    work w;
    memset(&w, 0, sizeof w);
    if (!hd) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    mean_rows(dt->gallery, g, d, hd->mean[SL_HEAD_GALLERY]);
    if (dt->same_domain) memcpy(hd->mean[SL_HEAD_QUERY], hd->mean[SL_HEAD_GALLERY], d * sizeof(float));
    else mean_rows(dt->photos, n, d, hd->mean[SL_HEAD_QUERY]);
    if (r == 0) goto done;

    /* proxies: classes with photos and catalog images; prototype = normalized sum of centred,
     * normalized catalog images */
    pidx = sl__mallocarray(P, sizeof *pidx);
    proto = sl__callocarray(gd, sizeof *proto); /* first S rows used */
    pcls = sl__callocarray(P, sizeof *pcls);
    xp = sl__mallocarray(nd, sizeof *xp);
    keep = sl__callocarray(n, sizeof *keep);
    if (!pidx || !proto || !pcls || !xp || !keep) { st = sl__err_set(err, SL_E_NOMEM, "out of memory"); goto done; }
    {
        unsigned char *has_photo = sl__callocarray(P, 1), *has_img = sl__callocarray(P, 1);
        if (!has_photo || !has_img) { free(has_photo); free(has_img); st = sl__err_set(err, SL_E_NOMEM, "out of memory"); goto done; }
        for (size_t i = 0; i < n; i++) has_photo[dt->photo_class[i]] = 1;
        for (size_t i = 0; i < g; i++) has_img[dt->gallery_class[i]] = 1;
        size_t S = 0;
        for (size_t c = 0; c < P; c++) {
            pidx[c] = has_photo[c] && has_img[c] ? (int32_t)S : -1;
            if (pidx[c] >= 0) pcls[S++] = (uint32_t)c;
        }
        free(has_photo);
        free(has_img);
        w.S = S;
    }
    if (w.S < 2) { st = sl__err_set(err, SL_E_INVALID, "head training: photos of at least 2 products with catalog images are needed (got %zu)", w.S); goto done; }
    {
        float *row = sl__mallocarray(d, sizeof *row);
        if (!row) { st = sl__err_set(err, SL_E_NOMEM, "out of memory"); goto done; }
        for (size_t i = 0; i < g; i++) {
            int32_t p = pidx[dt->gallery_class[i]];
            if (p < 0) continue;
            memcpy(row, dt->gallery + i * d, d * sizeof *row);
            sl__head_center(row, 1, d, hd->mean[SL_HEAD_GALLERY]);
            for (size_t j = 0; j < d; j++) proto[(size_t)p * d + j] += row[j];
        }
        free(row);
        sl__head_normalize(proto, w.S, d, NULL);
    }
    size_t nk = 0;
    memcpy(xp, dt->photos, nd * sizeof *xp);
    sl__head_center(xp, n, d, hd->mean[SL_HEAD_QUERY]);
    for (size_t i = 0; i < n; i++)
        if (pidx[dt->photo_class[i]] >= 0) keep[nk++] = i;
    /* categories of the proxies, renumbered 0..K-1 */
    pcat = sl__callocarray(w.S, sizeof *pcat);
    if (!pcat) { st = sl__err_set(err, SL_E_NOMEM, "out of memory"); goto done; }
    if (dt->class_category && o.category_weight > 0.0f) {
        uint32_t mx = 0;
        for (size_t p = 0; p < w.S; p++) mx = dt->class_category[pcls[p]] > mx ? dt->class_category[pcls[p]] : mx;
        catmap = sl__mallocarray((size_t)mx + 1, sizeof *catmap);
        if (!catmap) { st = sl__err_set(err, SL_E_NOMEM, "out of memory"); goto done; }
        memset(catmap, 0xff, ((size_t)mx + 1) * sizeof *catmap);
        for (size_t p = 0; p < w.S; p++) {
            uint32_t c = dt->class_category[pcls[p]];
            if (catmap[c] == UINT32_MAX) catmap[c] = (uint32_t)w.K++;
            pcat[p] = catmap[c];
        }
    }
    w.d = d;
    w.r = r;
    w.B = (size_t)o.batch < nk ? (size_t)o.batch : nk;
    size_t Smax = w.S < SL_HEAD_PROXIES_MAX ? w.S : SL_HEAD_PROXIES_MAX;
    size_t S_all = w.S;
    w.S = Smax;
    perm = sl__mallocarray(nk, sizeof *perm);
    chosen = sl__callocarray(S_all, 1);
    ycls = sl__callocarray(S_all, sizeof *ycls); /* proxy -> slot in the step */
    if (!perm || !chosen || !ycls || !work_alloc(&w)) { st = sl__err_set(err, SL_E_NOMEM, "out of memory"); goto done; }

    mm_threads = o.threads > 0 ? o.threads : 1;
    mm_failed = 0;
    sl__rng rng;
    sl__rng_seed(&rng, o.seed);
    {
        float sd = 1.0f / sqrtf((float)d);
        for (size_t i = 0; i < d * r; i++) hd->V[i] = (float)sl__rng_normal(&rng) * sd;
    }
    int t = 0;
    for (int ep = 1; ep <= o.epochs; ep++) {
        for (size_t i = 0; i < nk; i++) perm[i] = keep[i];
        sl__rng_shuffle(&rng, perm, nk);
        double eloss = 0.0;
        for (size_t b0 = 0; b0 < nk; b0 += w.B) {
            if (o.cancel && *o.cancel) { st = sl__err_set(err, SL_E_INTERRUPTED, "head training interrupted"); goto done; }
            size_t B = nk - b0 < w.B ? nk - b0 : w.B;
            size_t S = 0;
            if (S_all <= Smax) {
                for (size_t p = 0; p < S_all; p++) ycls[p] = (uint32_t)p;
                for (size_t p = 0; p < S_all; p++) memcpy(w.C + p * d, proto + p * d, d * sizeof(float));
                for (size_t p = 0; p < S_all; p++) w.catS[p] = pcat[p];
                S = S_all;
            } else { /* the batch's products, then a seeded sample of the others */
                memset(chosen, 0, S_all);
                for (size_t i = 0; i < B && S < Smax; i++) {
                    uint32_t p = (uint32_t)pidx[dt->photo_class[perm[b0 + i]]];
                    if (!chosen[p]) { chosen[p] = 1; ycls[p] = (uint32_t)S; memcpy(w.C + S * d, proto + (size_t)p * d, d * sizeof(float)); w.catS[S++] = pcat[p]; }
                }
                while (S < Smax) {
                    uint32_t p = (uint32_t)sl__rng_below(&rng, S_all);
                    if (!chosen[p]) { chosen[p] = 1; ycls[p] = (uint32_t)S; memcpy(w.C + S * d, proto + (size_t)p * d, d * sizeof(float)); w.catS[S++] = pcat[p]; }
                }
            }
            for (size_t i = 0; i < B; i++) {
                size_t src = perm[b0 + i];
                memcpy(w.X + i * d, xp + src * d, d * sizeof(float));
                w.tX[i] = ycls[pidx[dt->photo_class[src]]];
            }
            eloss += step(hd, &w, B, S, w.K, &o, ++t);
            if (mm_failed) { st = sl__err_set(err, SL_E_NOMEM, "head training: out of memory"); goto done; }
        }
        if (o.progress) o.progress(o.progress_ctx, ep, o.epochs, eloss / (double)nk);
    }
    for (size_t i = 0; i < 2 * d * r; i++)
        if (!isfinite(i < d * r ? hd->V[i] : hd->U[i - d * r])) { st = sl__err_set(err, SL_E_INTERNAL, "head training diverged (non-finite weights)"); goto done; }
done:
    work_free(&w);
    free(xp); free(proto); free(pidx); free(pcls); free(pcat); free(ycls); free(perm); free(keep); free(catmap); free(chosen);
    if (st != SL_OK) { sl_head_free(hd); return st; }
    hd->choice = r == 0 ? SL_HEAD_CHOICE_CENTRING : o.lambda;
    *out = hd;
    return SL_OK;
}
