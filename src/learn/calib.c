/*
 * learn/calib.c - calibration of match scores into confidence (learn.h): Platt scaling per map
 * (Platt, "Probabilistic outputs for support vector machines", 1999), fitted by Newton's method
 * with backtracking line search on Platt's smoothed targets (Lin, Lin & Weng, "A note on Platt's
 * probabilistic outputs for support vector machines", Machine Learning 2007), positives and
 * negatives weighted to equal total weight; an operating point per map at the lowest score whose
 * one-sided 95% Wilson upper bound (Wilson, JASA 1927) of the false accept rate is within the
 * target; and the serialized form (docs/formats/features.md, section CALB).
 *
 * Invariants: a calibration is immutable after sl_calib_fit / sl_calib_parse; every number in it
 * is finite, a > 0 (confidence non-decreasing in the score), counts are at least the minimums,
 * rates are in 0..1. Fitting is deterministic (sorted inputs, fixed iteration order).
 */
#include "shoplens/learn.h"
#include "util/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CALIB_VERSION 1u
#define CALIB_BYTES 168u
#define CALIB_MAP_BYTES 64u
/* z of the one-sided 95% bound */
#define CALIB_Z 1.6448536269514722
/* Bounds a parsed map must respect (a fitted one is far inside them). */
#define CALIB_COEF_MAX 1e6
/* Slope of a result map whose scores do not separate genuine pairs from wrong first results. */
#define CALIB_SLOPE_FLAT 1e-6

typedef struct sl__calib_map {
    double a, b, threshold, far_target, tar, far;
    uint64_t positives, negatives;
} sl__calib_map;

struct sl_calib {
    sl_calib_source source;
    int cohort;
    uint64_t photos, products, seed;
    sl__calib_map map[2];
};

static double sl__sigmoid(double z) {
    /* stable for large |z| */
    if (z >= 0) return 1.0 / (1.0 + exp(-z));
    double e = exp(z);
    return e / (1.0 + e);
}

static double sl__conf(double a, double b, double m) {
    return sl__sigmoid(a * m + b);
}

/* ---- Platt scaling ------------------------------------------------------------------------- */

/* Weighted negative log-likelihood of (a, b) with per-class targets and weights. */
static double sl__nll(const double *pos, size_t np, const double *neg, size_t nn, double tp, double tn,
                      double wp, double wn, double a, double b) {
    double f = 0;
    for (int c = 0; c < 2; c++) {
        const double *v = c ? neg : pos;
        size_t n = c ? nn : np;
        double t = c ? tn : tp, w = c ? wn : wp;
        for (size_t i = 0; i < n; i++) {
            double z = a * v[i] + b;
            /* -[t log p + (1 - t) log(1 - p)] with p = sigmoid(z), computed stably */
            double l = z >= 0 ? (1 - t) * z + log1p(exp(-z)) : -t * z + log1p(exp(z));
            f += w * l;
        }
    }
    return f;
}

/* Fits a, b by Newton's method with backtracking (Lin et al. 2007, algorithm 1). 0 on success. */
static int sl__platt(const double *pos, size_t np, const double *neg, size_t nn, double *pa, double *pb) {
    double tp = ((double)np + 1.0) / ((double)np + 2.0), tn = 1.0 / ((double)nn + 2.0);
    double wp = 0.5 / (double)np, wn = 0.5 / (double)nn;
    double a = 0.0, b = 0.0;
    double f = sl__nll(pos, np, neg, nn, tp, tn, wp, wn, a, b);
    const double sigma = 1e-12; /* keeps the Hessian positive definite */
    for (int it = 0; it < 100; it++) {
        double g1 = 0, g2 = 0, h11 = sigma, h22 = sigma, h21 = 0;
        for (int c = 0; c < 2; c++) {
            const double *v = c ? neg : pos;
            size_t n = c ? nn : np;
            double t = c ? tn : tp, w = c ? wn : wp;
            for (size_t i = 0; i < n; i++) {
                double p = sl__conf(a, b, v[i]);
                double d1 = w * (p - t), d2 = w * p * (1 - p);
                g1 += v[i] * d1;
                g2 += d1;
                h11 += v[i] * v[i] * d2;
                h22 += d2;
                h21 += v[i] * d2;
            }
        }
        if (fabs(g1) < 1e-10 && fabs(g2) < 1e-10) break;
        double det = h11 * h22 - h21 * h21;
        if (!(det > 0)) return -1;
        double da = -(h22 * g1 - h21 * g2) / det, db = -(-h21 * g1 + h11 * g2) / det;
        double gd = g1 * da + g2 * db, step = 1.0;
        int moved = 0;
        while (step >= 1e-10) {
            double na = a + step * da, nb = b + step * db;
            double nf = sl__nll(pos, np, neg, nn, tp, tn, wp, wn, na, nb);
            if (nf < f + 1e-4 * step * gd) {
                a = na;
                b = nb;
                f = nf;
                moved = 1;
                break;
            }
            step /= 2;
        }
        if (!moved) break; /* no further decrease: at the minimum within rounding */
    }
    if (!isfinite(a) || !isfinite(b)) return -1;
    *pa = a;
    *pb = b;
    return 0;
}

/* One-sided upper confidence bound of a proportion k / n (Wilson score interval). */
static double sl__wilson_upper(size_t k, size_t n) {
    double nn = (double)n, p = (double)k / nn, z2 = CALIB_Z * CALIB_Z;
    double centre = p + z2 / (2 * nn);
    double half = CALIB_Z * sqrt(p * (1 - p) / nn + z2 / (4 * nn * nn));
    return (centre + half) / (1 + z2 / nn);
}

static int sl__cmp_desc(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return a > b ? -1 : a < b;
}

/* The lowest threshold whose Wilson upper bound on the accepted share of `neg` is within far.
 * neg_sorted is descending. Returns the threshold; *k_out negatives are >= it. */
static double sl__operating_point(const double *neg_sorted, size_t n, double far, size_t *k_out) {
    /* accepting the k highest negatives: threshold just above neg[k] (ties stay rejected) */
    size_t best = 0;
    for (size_t k = 1; k <= n; k++) {
        if (k < n && neg_sorted[k] == neg_sorted[k - 1]) continue; /* cannot split a tie */
        if (sl__wilson_upper(k, n) <= far) best = k;
        else break;
    }
    *k_out = best;
    if (best == n) return nextafter(neg_sorted[n - 1], -INFINITY); /* every negative (far >= 1) */
    return nextafter(neg_sorted[best], INFINITY);
}

static sl_status sl__check_scores(const double *v, size_t n, const char *what, sl_error *err) {
    if (n && !v) return sl__err_set(err, SL_E_INVALID, "calibration: %s is NULL", what);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]) || v[i] < SL_CALIB_SCORE_MIN || v[i] > SL_CALIB_SCORE_MAX)
            return sl__err_set(err, SL_E_INVALID, "calibration: %s score %zu is %g, outside %g..%g", what, i,
                               v[i], SL_CALIB_SCORE_MIN, SL_CALIB_SCORE_MAX);
    return SL_OK;
}

sl_status sl_calib_fit(const sl_calib_data *d, double far, sl_calib **out, sl_error *err) {
    if (!out) return sl__err_set(err, SL_E_INVALID, "sl_calib_fit: NULL out");
    *out = NULL;
    if (!d) return sl__err_set(err, SL_E_INVALID, "sl_calib_fit: NULL data");
    if (far == 0) far = SL_CALIB_FAR_DEFAULT;
    if (!(far >= SL_CALIB_FAR_MIN && far <= SL_CALIB_FAR_MAX))
        return sl__err_set(err, SL_E_INVALID, "calibration: false accept target %g outside %g..%g", far,
                           SL_CALIB_FAR_MIN, SL_CALIB_FAR_MAX);
    if (d->source != SL_CALIB_PHOTOS && d->source != SL_CALIB_CATALOG)
        return sl__err_set(err, SL_E_INVALID, "calibration: source must be photos or catalog");
    if (d->cohort < 1 || d->cohort > SL_CALIB_COHORT_MAX)
        return sl__err_set(err, SL_E_INVALID, "calibration: cohort %d outside 1..%d", d->cohort, SL_CALIB_COHORT_MAX);
    if (d->n_pos < SL_CALIB_MIN_POSITIVES)
        return sl__err_set(err, SL_E_INVALID, "calibration: %zu genuine pairs, at least %d needed", d->n_pos,
                           SL_CALIB_MIN_POSITIVES);
    static const char *const names[2] = {"random-product negatives", "result-list negatives"};
    sl_status st = sl__check_scores(d->pos, d->n_pos, "genuine", err);
    for (int u = 0; u < 2 && st == SL_OK; u++) {
        if (d->n_neg[u] < SL_CALIB_MIN_NEGATIVES)
            return sl__err_set(err, SL_E_INVALID, "calibration: %zu %s, at least %d needed", d->n_neg[u], names[u],
                               SL_CALIB_MIN_NEGATIVES);
        st = sl__check_scores(d->neg[u], d->n_neg[u], names[u], err);
    }
    if (st != SL_OK) return st;
    /* sorted copies: the fit's sums then do not depend on the input order */
    double *pos = sl__mallocarray(d->n_pos, sizeof *pos);
    if (!pos) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    memcpy(pos, d->pos, d->n_pos * sizeof *pos);
    qsort(pos, d->n_pos, sizeof *pos, sl__cmp_desc);
    sl_calib *c = calloc(1, sizeof *c);
    if (!c) {
        free(pos);
        return sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    c->source = d->source;
    c->cohort = d->cohort;
    c->photos = d->photos;
    c->products = d->products;
    c->seed = d->seed;
    for (int u = 0; u < 2 && st == SL_OK; u++) {
        size_t nn = d->n_neg[u];
        double *neg = sl__mallocarray(nn, sizeof *neg);
        if (!neg) {
            st = sl__err_set(err, SL_E_NOMEM, "out of memory");
            break;
        }
        memcpy(neg, d->neg[u], nn * sizeof *neg);
        qsort(neg, nn, sizeof *neg, sl__cmp_desc);
        sl__calib_map *m = &c->map[u];
        size_t k = 0;
        if (sl__platt(pos, d->n_pos, neg, nn, &m->a, &m->b) != 0 || !(m->a > 0) || m->a > CALIB_COEF_MAX ||
            fabs(m->b) > CALIB_COEF_MAX) {
            if (u == SL_CALIB_PAIR) {
                st = sl__err_set(err, SL_E_INVALID, "calibration: the match scores do not rank genuine pairs above %s",
                                 names[u]);
                free(neg);
                break;
            }
            /* results whose first wrong product scores as well as the right one: the map says
             * nothing (confidence 0.5) and its point is above every score seen: never a match */
            m->a = CALIB_SLOPE_FLAT;
            m->b = 0;
            m->threshold = nextafter(fmax(pos[0], neg[0]), INFINITY);
        } else {
            m->threshold = sl__operating_point(neg, nn, far, &k);
        }
        m->far_target = far;
        m->positives = d->n_pos;
        m->negatives = nn;
        m->far = (double)k / (double)nn;
        size_t acc = 0;
        while (acc < d->n_pos && pos[acc] >= m->threshold) acc++;
        m->tar = (double)acc / (double)d->n_pos;
        free(neg);
    }
    free(pos);
    if (st != SL_OK) {
        free(c);
        return st;
    }
    *out = c;
    return SL_OK;
}

void sl_calib_free(sl_calib *c) { free(c); }

sl_calib *sl_calib_clone(const sl_calib *c) {
    if (!c) return NULL;
    sl_calib *n = malloc(sizeof *n);
    if (n) *n = *c;
    return n;
}

double sl_calib_confidence(const sl_calib *c, sl_calib_use use, double m) {
    if (isnan(m)) return 0.0;
    if (!c) return sl__conf(SL_CALIB_FALLBACK_A, SL_CALIB_FALLBACK_B, m);
    const sl__calib_map *k = &c->map[use == SL_CALIB_RESULT];
    return sl__conf(k->a, k->b, m);
}

double sl_calib_threshold(const sl_calib *c, sl_calib_use use) {
    if (!c) return 0.5;
    const sl__calib_map *k = &c->map[use == SL_CALIB_RESULT];
    return sl__conf(k->a, k->b, k->threshold);
}

int sl_calib_cohort(const sl_calib *c) { return c ? c->cohort : SL_CALIB_COHORT_DEFAULT; }

const char *sl_calib_source_name(sl_calib_source s) {
    return s == SL_CALIB_PHOTOS ? "photos" : s == SL_CALIB_CATALOG ? "catalog" : "none";
}

void sl_calib_get_info(const sl_calib *c, sl_calib_info *out) {
    memset(out, 0, sizeof *out);
    if (!c) {
        out->source = SL_CALIB_NONE;
        out->cohort = SL_CALIB_COHORT_DEFAULT;
        for (int u = 0; u < 2; u++) {
            sl_calib_map_info *m = &out->map[u];
            m->a = SL_CALIB_FALLBACK_A;
            m->b = SL_CALIB_FALLBACK_B;
            m->score_threshold = -SL_CALIB_FALLBACK_B / SL_CALIB_FALLBACK_A;
            m->confidence_threshold = 0.5;
        }
        return;
    }
    out->source = c->source;
    out->cohort = c->cohort;
    out->photos = c->photos;
    out->products = c->products;
    out->seed = c->seed;
    for (int u = 0; u < 2; u++) {
        const sl__calib_map *k = &c->map[u];
        sl_calib_map_info *m = &out->map[u];
        m->a = k->a;
        m->b = k->b;
        m->score_threshold = k->threshold;
        m->confidence_threshold = sl__conf(k->a, k->b, k->threshold);
        m->far_target = k->far_target;
        m->positives = k->positives;
        m->negatives = k->negatives;
        m->tar = k->tar;
        m->far = k->far;
    }
}

/* ---- serialized form (docs/formats/features.md, section CALB) ------------------------------- */

static void sl__put32(uint8_t **p, uint32_t v) {
    for (int i = 0; i < 4; i++) (*p)[i] = (uint8_t)(v >> (8 * i));
    *p += 4;
}
static void sl__put64(uint8_t **p, uint64_t v) {
    for (int i = 0; i < 8; i++) (*p)[i] = (uint8_t)(v >> (8 * i));
    *p += 8;
}
static void sl__putd(uint8_t **p, double d) {
    uint64_t u;
    memcpy(&u, &d, 8);
    sl__put64(p, u);
}
static uint32_t sl__get32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t sl__get64(const uint8_t *p) { return (uint64_t)sl__get32(p) | (uint64_t)sl__get32(p + 4) << 32; }
static double sl__getd(const uint8_t *p) {
    uint64_t u = sl__get64(p);
    double d;
    memcpy(&d, &u, 8);
    return d;
}

sl_status sl_calib_serialize(const sl_calib *c, void **buf, size_t *len, sl_error *err) {
    if (!c || !buf || !len) return sl__err_set(err, SL_E_INVALID, "sl_calib_serialize: NULL argument");
    *buf = NULL;
    *len = 0;
    uint8_t *b = malloc(CALIB_BYTES), *p = b;
    if (!b) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    sl__put32(&p, CALIB_VERSION);
    sl__put32(&p, (uint32_t)c->source);
    sl__put32(&p, (uint32_t)c->cohort);
    sl__put32(&p, 0);
    sl__put64(&p, c->photos);
    sl__put64(&p, c->products);
    sl__put64(&p, c->seed);
    for (int u = 0; u < 2; u++) {
        const sl__calib_map *m = &c->map[u];
        sl__putd(&p, m->a);
        sl__putd(&p, m->b);
        sl__putd(&p, m->threshold);
        sl__putd(&p, m->far_target);
        sl__put64(&p, m->positives);
        sl__put64(&p, m->negatives);
        sl__putd(&p, m->tar);
        sl__putd(&p, m->far);
    }
    *buf = b;
    *len = CALIB_BYTES;
    return SL_OK;
}

sl_status sl_calib_parse(const void *buf, size_t len, sl_calib **out, sl_error *err) {
    if (!out) return sl__err_set(err, SL_E_INVALID, "sl_calib_parse: NULL out");
    *out = NULL;
    if (!buf && len) return sl__err_set(err, SL_E_INVALID, "sl_calib_parse: NULL buffer");
    const uint8_t *p = buf;
    if (len < 4) return sl__err_set(err, SL_E_CORRUPT, "calibration: %zu bytes, shorter than its version field", len);
    uint32_t ver = sl__get32(p);
    if (ver != CALIB_VERSION)
        return sl__err_set(err, SL_E_VERSION, "calibration: version %u (this build reads %u)", ver, CALIB_VERSION);
    if (len != CALIB_BYTES)
        return sl__err_set(err, SL_E_CORRUPT, "calibration: %zu bytes, expected %u", len, CALIB_BYTES);
    sl_calib c;
    memset(&c, 0, sizeof c);
    uint32_t src = sl__get32(p + 4), cohort = sl__get32(p + 8), reserved = sl__get32(p + 12);
    if (src != SL_CALIB_PHOTOS && src != SL_CALIB_CATALOG)
        return sl__err_set(err, SL_E_CORRUPT, "calibration: source %u (1 = photos, 2 = catalog)", src);
    if (cohort < 1 || cohort > SL_CALIB_COHORT_MAX)
        return sl__err_set(err, SL_E_CORRUPT, "calibration: cohort %u outside 1..%d", cohort, SL_CALIB_COHORT_MAX);
    if (reserved) return sl__err_set(err, SL_E_CORRUPT, "calibration: reserved field set");
    c.source = (sl_calib_source)src;
    c.cohort = (int)cohort;
    c.photos = sl__get64(p + 16);
    c.products = sl__get64(p + 24);
    c.seed = sl__get64(p + 32);
    static const char *const names[2] = {"pair map", "result map"};
    for (int u = 0; u < 2; u++) {
        const uint8_t *q = p + 40 + CALIB_MAP_BYTES * (unsigned)u;
        sl__calib_map *m = &c.map[u];
        m->a = sl__getd(q);
        m->b = sl__getd(q + 8);
        m->threshold = sl__getd(q + 16);
        m->far_target = sl__getd(q + 24);
        m->positives = sl__get64(q + 32);
        m->negatives = sl__get64(q + 40);
        m->tar = sl__getd(q + 48);
        m->far = sl__getd(q + 56);
        const char *bad = NULL;
        if (!(m->a > 0 && m->a <= CALIB_COEF_MAX)) bad = "slope a not in (0, 1e6]";
        else if (!(fabs(m->b) <= CALIB_COEF_MAX)) bad = "offset b not finite or beyond 1e6";
        else if (!(m->threshold >= SL_CALIB_SCORE_MIN - 1 && m->threshold <= SL_CALIB_SCORE_MAX + 1))
            bad = "threshold not a match score";
        else if (!(m->far_target >= SL_CALIB_FAR_MIN && m->far_target <= SL_CALIB_FAR_MAX))
            bad = "false accept target out of range";
        else if (m->positives < SL_CALIB_MIN_POSITIVES || m->negatives < SL_CALIB_MIN_NEGATIVES)
            bad = "fewer pairs than a calibration needs";
        else if (!(m->tar >= 0 && m->tar <= 1) || !(m->far >= 0 && m->far <= 1))
            bad = "rate outside 0..1";
        if (bad) return sl__err_set(err, SL_E_CORRUPT, "calibration: %s: %s", names[u], bad);
    }
    sl_calib *n = malloc(sizeof *n);
    if (!n) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    *n = c;
    *out = n;
    return SL_OK;
}
