/*
 * learn/head.c - the projection head: application (centring per side, low-rank residual map,
 * L2 normalization, then the mix with the trained products' prototypes) and its serialized form
 * (docs/formats/features.md, section HEAD).
 *
 * Invariants: a head is immutable after sl_head_train / sl_head_parse; apply writes only to its
 * output; every float of a parsed head is finite; dim in 1..SL_HEAD_DIM_MAX, rank in
 * 0..min(dim, SL_HEAD_RANK_MAX), prototypes 0..SL_HEAD_PROTOTYPES_MAX with beta > 0 and tau in
 * the temperature's range when there are any. A head without prototypes is written as head
 * version 1, byte for byte as before they existed.
 */
#include "learn/learn_internal.h"
#include "util/util.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define HEAD_VERSION 1u
#define HEAD_VERSION_PROTO 2u

sl_head *sl__head_alloc(size_t dim, size_t rank) {
    sl_head *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->dim = dim;
    h->rank = rank;
    h->choice = SL_HEAD_CHOICE_UNKNOWN;
    h->mean[0] = sl__callocarray(dim, sizeof(float));
    h->mean[1] = sl__callocarray(dim, sizeof(float));
    size_t dr = 0;
    if (sl__mul_size(dim, rank, &dr)) {
        sl_head_free(h);
        return NULL;
    }
    if (rank) {
        h->V = sl__callocarray(dr, sizeof(float));
        h->U = sl__callocarray(dr, sizeof(float));
    }
    if (!h->mean[0] || !h->mean[1] || (rank && (!h->V || !h->U))) {
        sl_head_free(h);
        return NULL;
    }
    return h;
}

void sl_head_free(sl_head *h) {
    if (!h) return;
    free(h->mean[0]);
    free(h->mean[1]);
    free(h->V);
    free(h->U);
    free(h->proto);
    free(h);
}

void sl__head_drop_prototypes(sl_head *h) {
    free(h->proto);
    h->proto = NULL;
    h->n_proto = 0;
    h->beta = 0.0f;
    h->tau = 0.0f;
}

sl_head *sl_head_clone(const sl_head *h) {
    if (!h) return NULL;
    sl_head *c = sl__head_alloc(h->dim, h->rank);
    if (!c) return NULL;
    c->choice = h->choice;
    memcpy(c->mean[0], h->mean[0], h->dim * sizeof(float));
    memcpy(c->mean[1], h->mean[1], h->dim * sizeof(float));
    if (h->rank) {
        memcpy(c->V, h->V, h->dim * h->rank * sizeof(float));
        memcpy(c->U, h->U, h->dim * h->rank * sizeof(float));
    }
    if (h->n_proto) {
        c->proto = sl__mallocarray(h->n_proto * h->dim, sizeof(float));
        if (!c->proto) {
            sl_head_free(c);
            return NULL;
        }
        memcpy(c->proto, h->proto, h->n_proto * h->dim * sizeof(float));
        c->n_proto = h->n_proto;
        c->beta = h->beta;
        c->tau = h->tau;
    }
    return c;
}

size_t sl_head_dim(const sl_head *h) { return h ? h->dim : 0; }
size_t sl_head_rank(const sl_head *h) { return h ? h->rank : 0; }
float sl_head_choice(const sl_head *h) { return h ? h->choice : SL_HEAD_CHOICE_UNKNOWN; }
size_t sl_head_prototypes(const sl_head *h) { return h ? h->n_proto : 0; }
float sl_head_prototype_weight(const sl_head *h) { return h && h->n_proto ? h->beta : 0.0f; }

void sl__head_normalize(float *x, size_t n, size_t dim, float *norms) {
    for (size_t i = 0; i < n; i++) {
        float *r = x + i * dim;
        double s = 0.0;
        for (size_t j = 0; j < dim; j++) s += (double)r[j] * r[j];
        float nr = (float)sqrt(s);
        if (norms) norms[i] = nr;
        float inv = nr > 0.0f ? 1.0f / nr : 0.0f;
        for (size_t j = 0; j < dim; j++) r[j] *= inv;
    }
}

void sl__head_center(float *x, size_t n, size_t dim, const float *mean) {
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < dim; j++) x[i * dim + j] -= mean[j];
    sl__head_normalize(x, n, dim, NULL);
}

/* Rows of this many vectors go through the map at once (bounds the scratch buffer). */
#define APPLY_BLOCK 256
/* Fewer rows than this use the library's own product instead of OpenBLAS (bench_learn_apply). */
#define APPLY_BLAS_MIN 8

void sl__softmax_rows(float *p, size_t m, size_t k) {
    for (size_t i = 0; i < m; i++) {
        float *r = p + i * k, mx = r[0];
        for (size_t j = 1; j < k; j++) mx = r[j] > mx ? r[j] : mx;
        double s = 0.0;
        for (size_t j = 0; j < k; j++) { r[j] = expf(r[j] - mx); s += r[j]; }
        float inv = (float)(1.0 / s);
        for (size_t j = 0; j < k; j++) r[j] *= inv;
    }
}

int sl__head_mix(const sl_head *h, float *y, size_t n, int threads) {
    if (!h->n_proto || n == 0) return 0;
    size_t d = h->dim, k = h->n_proto, blk = n < APPLY_BLOCK ? n : APPLY_BLOCK;
    float *p = sl__mallocarray(blk * k, sizeof *p);
    if (!p) return -1;
    for (size_t i0 = 0; i0 < n; i0 += blk) {
        size_t m = n - i0 < blk ? n - i0 : blk;
        float *o = y + i0 * d;
        if (threads > 0 || m < APPLY_BLAS_MIN) {
            /* p = o P^T / tau; softmax; o += beta p P */
            if (sl__mm(0, 1, m, k, d, 1.0f / h->tau, o, d, h->proto, d, 0.0f, p, k, threads > 0 ? threads : 1) != 0) {
                free(p);
                return -1;
            }
            sl__softmax_rows(p, m, k);
            if (sl__mm(0, 0, m, d, k, h->beta, p, k, h->proto, d, 1.0f, o, d, threads > 0 ? threads : 1) != 0) {
                free(p);
                return -1;
            }
        } else {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)k, (int)d, 1.0f / h->tau, o, (int)d,
                        h->proto, (int)d, 0.0f, p, (int)k);
            sl__softmax_rows(p, m, k);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)d, (int)k, h->beta, p, (int)k,
                        h->proto, (int)d, 1.0f, o, (int)d);
        }
        sl__head_normalize(o, m, d, NULL);
    }
    free(p);
    return 0;
}

sl_status sl_head_apply(const sl_head *h, sl_head_side side, const float *in, float *out,
                        size_t n) {
    if (!h || !in || !out || (side != SL_HEAD_QUERY && side != SL_HEAD_GALLERY)) return SL_E_INVALID;
    if (n == 0) return SL_OK;
    size_t d = h->dim, r = h->rank;
    float *c = NULL, *t = NULL;
    size_t blk = n < APPLY_BLOCK ? n : APPLY_BLOCK;
    c = sl__mallocarray(blk * d, sizeof *c);
    if (r) t = sl__mallocarray(blk * r, sizeof *t);
    if (!c || (r && !t)) {
        free(c);
        free(t);
        return SL_E_NOMEM;
    }
    for (size_t i0 = 0; i0 < n; i0 += blk) {
        size_t m = n - i0 < blk ? n - i0 : blk;
        memcpy(c, in + i0 * d, m * d * sizeof *c);
        sl__head_center(c, m, d, h->mean[side]);
        float *o = out + i0 * d;
        memcpy(o, c, m * d * sizeof *o);
        if (r && m < APPLY_BLAS_MIN) {
            /* one or a few queries: the library's single-threaded product streams V and U once
             * (OpenBLAS's threaded path costs more than the product here) */
            if (sl__mm(0, 0, m, r, d, 1.0f, c, d, h->V, r, 0.0f, t, r, 1) != 0 ||
                sl__mm(0, 0, m, d, r, 1.0f, t, r, h->U, d, 1.0f, o, d, 1) != 0) {
                free(c);
                free(t);
                return SL_E_NOMEM;
            }
        } else if (r) {
            /* t = c V (m x r); o += t U (m x d) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)r, (int)d, 1.0f, c,
                        (int)d, h->V, (int)r, 0.0f, t, (int)r);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)d, (int)r, 1.0f, t,
                        (int)r, h->U, (int)d, 1.0f, o, (int)d);
        }
        sl__head_normalize(o, m, d, NULL);
    }
    free(c);
    free(t);
    return sl__head_mix(h, out, n, 0) != 0 ? SL_E_NOMEM : SL_OK;
}

/* ---- serialized form ------------------------------------------------------------------------ */

static void put32(uint8_t **p, uint32_t v) {
    (*p)[0] = (uint8_t)v; (*p)[1] = (uint8_t)(v >> 8); (*p)[2] = (uint8_t)(v >> 16); (*p)[3] = (uint8_t)(v >> 24);
    *p += 4;
}
static void putf(uint8_t **p, const float *v, size_t n) {
    for (size_t i = 0; i < n; i++) { uint32_t u; memcpy(&u, &v[i], 4); put32(p, u); }
}
static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static int getf(const uint8_t **p, float *v, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t u = get32(*p);
        memcpy(&v[i], &u, 4);
        *p += 4;
        if (!isfinite(v[i])) return -1;
    }
    return 0;
}

sl_status sl_head_serialize(const sl_head *h, void **buf, size_t *len, sl_error *err) {
    if (!h || !buf || !len) return sl__err_set(err, SL_E_INVALID, "sl_head_serialize: NULL argument");
    *buf = NULL;
    *len = 0;
    size_t floats = 2 * h->dim + 2 * h->dim * h->rank + h->n_proto * h->dim;
    size_t bytes = (h->n_proto ? 32 : 16) + 4 * floats;
    uint8_t *b = malloc(bytes), *p = b;
    if (!b) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    put32(&p, h->n_proto ? HEAD_VERSION_PROTO : HEAD_VERSION);
    put32(&p, (uint32_t)h->dim);
    put32(&p, (uint32_t)h->rank);
    put32(&p, 0);
    if (h->n_proto) {
        put32(&p, (uint32_t)h->n_proto);
        putf(&p, &h->beta, 1);
        putf(&p, &h->tau, 1);
        put32(&p, 0);
    }
    putf(&p, h->mean[0], h->dim);
    putf(&p, h->mean[1], h->dim);
    if (h->rank) {
        putf(&p, h->V, h->dim * h->rank);
        putf(&p, h->U, h->dim * h->rank);
    }
    if (h->n_proto) putf(&p, h->proto, h->n_proto * h->dim);
    *buf = b;
    *len = bytes;
    return SL_OK;
}

sl_status sl_head_parse(const void *buf, size_t len, sl_head **out, sl_error *err) {
    if (!out) return sl__err_set(err, SL_E_INVALID, "sl_head_parse: NULL out");
    *out = NULL;
    if (!buf && len) return sl__err_set(err, SL_E_INVALID, "sl_head_parse: NULL buffer");
    const uint8_t *p = buf;
    if (len < 16) return sl__err_set(err, SL_E_CORRUPT, "head: %zu bytes, shorter than its 16-byte header", len);
    uint32_t ver = get32(p), dim = get32(p + 4), rank = get32(p + 8), flags = get32(p + 12);
    if (ver != HEAD_VERSION && ver != HEAD_VERSION_PROTO)
        return sl__err_set(err, SL_E_VERSION, "head: version %u (this build reads %u and %u)", ver, HEAD_VERSION,
                           HEAD_VERSION_PROTO);
    if (flags != 0) return sl__err_set(err, SL_E_CORRUPT, "head: reserved field set");
    uint32_t np = 0;
    float beta = 0.0f, tau = 0.0f;
    size_t hdr = 16;
    if (ver == HEAD_VERSION_PROTO) {
        if (len < 32) return sl__err_set(err, SL_E_CORRUPT, "head: %zu bytes, shorter than its 32-byte header", len);
        np = get32(p + 16);
        uint32_t bb = get32(p + 20), tt = get32(p + 24);
        memcpy(&beta, &bb, 4);
        memcpy(&tau, &tt, 4);
        if (get32(p + 28) != 0) return sl__err_set(err, SL_E_CORRUPT, "head: reserved field set");
        if (np == 0 || np > SL_HEAD_PROTOTYPES_MAX)
            return sl__err_set(err, SL_E_CORRUPT, "head: %u prototypes, out of range 1..%d", np, SL_HEAD_PROTOTYPES_MAX);
        if (!(beta > 0.0f && beta <= 100.0f))
            return sl__err_set(err, SL_E_CORRUPT, "head: prototype weight %g out of range (0, 100]", (double)beta);
        if (!(tau >= SL_HEAD_TEMPERATURE_MIN && tau <= SL_HEAD_TEMPERATURE_MAX))
            return sl__err_set(err, SL_E_CORRUPT, "head: prototype temperature %g out of range %g..%g", (double)tau,
                               (double)SL_HEAD_TEMPERATURE_MIN, (double)SL_HEAD_TEMPERATURE_MAX);
        hdr = 32;
    }
    if (dim == 0 || dim > SL_HEAD_DIM_MAX) return sl__err_set(err, SL_E_CORRUPT, "head: dimension %u out of range 1..%d", dim, SL_HEAD_DIM_MAX);
    if (rank > dim || rank > SL_HEAD_RANK_MAX)
        return sl__err_set(err, SL_E_CORRUPT, "head: rank %u out of range 0..%u", rank, dim < SL_HEAD_RANK_MAX ? dim : SL_HEAD_RANK_MAX);
    uint64_t want = hdr + 4 * (2 * (uint64_t)dim + 2 * (uint64_t)dim * rank + (uint64_t)np * dim);
    if ((uint64_t)len != want)
        return sl__err_set(err, SL_E_CORRUPT, "head: %zu bytes, expected %llu for dimension %u rank %u prototypes %u",
                           len, (unsigned long long)want, dim, rank, np);
    sl_head *h = sl__head_alloc(dim, rank);
    if (!h) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    if (np) {
        h->proto = sl__mallocarray((size_t)np * dim, sizeof(float));
        if (!h->proto) {
            sl_head_free(h);
            return sl__err_set(err, SL_E_NOMEM, "out of memory");
        }
        h->n_proto = np;
        h->beta = beta;
        h->tau = tau;
    }
    p += hdr;
    const char *bad = NULL;
    if (getf(&p, h->mean[0], dim)) bad = "query mean";
    else if (getf(&p, h->mean[1], dim)) bad = "gallery mean";
    else if (rank && getf(&p, h->V, (size_t)dim * rank)) bad = "V";
    else if (rank && getf(&p, h->U, (size_t)dim * rank)) bad = "U";
    else if (np && getf(&p, h->proto, (size_t)np * dim)) bad = "prototypes";
    if (bad) {
        sl_head_free(h);
        return sl__err_set(err, SL_E_CORRUPT, "head: non-finite value in %s", bad);
    }
    *out = h;
    return SL_OK;
}
