/*
 * learn/calib.c - calibration of match scores into confidence (learn.h): per map a logistic
 * regression on the match score and the margin to the best other product (Platt scaling, Platt,
 * "Probabilistic outputs for support vector machines", 1999, with the margin of Lowe's ratio test,
 * Lowe, IJCV 2004, as a second input; weights constrained non-negative), fitted by Newton's method
 * with backtracking line search on Platt's smoothed targets (Lin, Lin & Weng, "A note on Platt's
 * probabilistic outputs for support vector machines", Machine Learning 2007), positives and
 * negatives weighted to equal total weight; an operating point per map: for check the lowest
 * combined score whose one-sided 95% Wilson upper bound (Wilson, JASA 1927) of the false accept
 * rate is within the target, for search (given the calibration photos' first results) the lowest
 * whose Wilson lower bound of the precision of accepted first results reaches the target; and the
 * serialized form (docs/formats/features.md, section CALB; version 1 without the margin is read).
 *
 * Invariants: a calibration is immutable after sl_calib_fit / sl_calib_parse; every number in it
 * is finite, a > 0 and lambda in 0..1 (confidence non-decreasing in the score and the margin),
 * counts are at least the minimums, rates are in 0..1. Fitting is deterministic (sorted inputs, fixed iteration order).
 */
#include "shoplens/learn.h"
#include "util/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CALIB_VERSION 2u
/* version 1 (no margin weight, no precision rule) is still read: lambda 0, the FAR rule */
#define CALIB_BYTES_V1 168u
#define CALIB_MAP_BYTES_V1 64u
#define CALIB_MAP_BYTES 104u
#define CALIB_BYTES (40u + 2u * CALIB_MAP_BYTES)
/* z of the one-sided 95% bound */
#define CALIB_Z 1.6448536269514722
/* Bounds a parsed map must respect (a fitted one is far inside them). */
#define CALIB_COEF_MAX 1e6
/* Slope of a result map whose scores do not separate genuine pairs from wrong first results. */
#define CALIB_SLOPE_FLAT 1e-6

typedef struct sl__calib_map {
    double a, b, lambda, threshold, far_target, tar, far, precision_target, precision, recall;
    uint64_t positives, negatives, tops;
} sl__calib_map;

struct sl_calib {
    sl_calib_source source;
    int cohort;
    uint64_t photos, products, seed;
    sl__calib_map map[2];
};

/* A pair's inputs: match score m and margin g. */
typedef struct sl__pt {
    double m, g;
} sl__pt;

static double sl__sigmoid(double z) {
    /* stable for large |z| */
    if (z >= 0) return 1.0 / (1.0 + exp(-z));
    double e = exp(z);
    return e / (1.0 + e);
}

static double sl__conf(double a, double b, double s) {
    return sl__sigmoid(a * s + b);
}

static double sl__combine(double lambda, double m, double g) { return (1.0 - lambda) * m + lambda * g; }

/* ---- Platt scaling on (m, g) ------------------------------------------------------------- */

/* Weighted negative log-likelihood of w = (w_m, w_g, b) with per-class targets and weights. */
static double sl__nll(const sl__pt *pos, size_t np, const sl__pt *neg, size_t nn, double tp, double tn,
                      double wp, double wn, const double w[3]) {
    double f = 0;
    for (int c = 0; c < 2; c++) {
        const sl__pt *v = c ? neg : pos;
        size_t n = c ? nn : np;
        double t = c ? tn : tp, wt = c ? wn : wp;
        for (size_t i = 0; i < n; i++) {
            double z = w[0] * v[i].m + w[1] * v[i].g + w[2];
            /* -[t log p + (1 - t) log(1 - p)] with p = sigmoid(z), computed stably */
            double l = z >= 0 ? (1 - t) * z + log1p(exp(-z)) : -t * z + log1p(exp(z));
            f += wt * l;
        }
    }
    return f;
}

/* Solves the k x k system H x = r (k <= 3) by Gaussian elimination with partial pivoting.
 * 0 on success, -1 when singular. */
static int sl__solve(double H[3][3], double r[3], int k, double x[3]) {
    for (int c = 0; c < k; c++) {
        int piv = c;
        for (int i = c + 1; i < k; i++)
            if (fabs(H[i][c]) > fabs(H[piv][c])) piv = i;
        if (!(fabs(H[piv][c]) > 0)) return -1;
        if (piv != c) {
            for (int j = 0; j < k; j++) {
                double t = H[c][j];
                H[c][j] = H[piv][j];
                H[piv][j] = t;
            }
            double t = r[c];
            r[c] = r[piv];
            r[piv] = t;
        }
        for (int i = c + 1; i < k; i++) {
            double f = H[i][c] / H[c][c];
            for (int j = c; j < k; j++) H[i][j] -= f * H[c][j];
            r[i] -= f * r[c];
        }
    }
    for (int i = k - 1; i >= 0; i--) {
        double v = r[i];
        for (int j = i + 1; j < k; j++) v -= H[i][j] * x[j];
        x[i] = v / H[i][i];
    }
    return 0;
}

/* Fits w = (w_m, w_g, b) by Newton's method with backtracking (Lin et al. 2007, algorithm 1),
 * over the inputs in `use` (bit 0: m, bit 1: g; the others stay 0). 0 on success; *f_out the
 * objective at the optimum. */
static int sl__platt(const sl__pt *pos, size_t np, const sl__pt *neg, size_t nn, int use, double w[3],
                     double *f_out) {
    double tp = ((double)np + 1.0) / ((double)np + 2.0), tn = 1.0 / ((double)nn + 2.0);
    double wp = 0.5 / (double)np, wn = 0.5 / (double)nn;
    int idx[3], k = 0;
    if (use & 1) idx[k++] = 0;
    if (use & 2) idx[k++] = 1;
    idx[k++] = 2;
    w[0] = w[1] = w[2] = 0.0;
    double f = sl__nll(pos, np, neg, nn, tp, tn, wp, wn, w);
    const double sigma = 1e-12; /* keeps the Hessian positive definite */
    for (int it = 0; it < 100; it++) {
        double G[3] = {0, 0, 0}, H[3][3] = {{sigma, 0, 0}, {0, sigma, 0}, {0, 0, sigma}};
        for (int c = 0; c < 2; c++) {
            const sl__pt *v = c ? neg : pos;
            size_t n = c ? nn : np;
            double t = c ? tn : tp, wt = c ? wn : wp;
            for (size_t i = 0; i < n; i++) {
                double x[3] = {v[i].m, v[i].g, 1.0};
                double p = sl__sigmoid(w[0] * x[0] + w[1] * x[1] + w[2]);
                double d1 = wt * (p - t), d2 = wt * p * (1 - p);
                for (int r = 0; r < 3; r++) {
                    G[r] += x[r] * d1;
                    for (int q = 0; q <= r; q++) H[r][q] += x[r] * x[q] * d2;
                }
            }
        }
        double Hk[3][3], rk[3], dk[3] = {0, 0, 0};
        int small = 1;
        for (int r = 0; r < k; r++) {
            rk[r] = -G[idx[r]];
            small &= fabs(G[idx[r]]) < 1e-10;
            for (int q = 0; q < k; q++) {
                int a = idx[r], b = idx[q];
                Hk[r][q] = a >= b ? H[a][b] : H[b][a];
            }
        }
        if (small) break;
        if (sl__solve(Hk, rk, k, dk) != 0) return -1;
        double d[3] = {0, 0, 0}, gd = 0, step = 1.0;
        for (int r = 0; r < k; r++) {
            d[idx[r]] = dk[r];
            gd += G[idx[r]] * dk[r];
        }
        int moved = 0;
        while (step >= 1e-10) {
            double nw[3] = {w[0] + step * d[0], w[1] + step * d[1], w[2] + step * d[2]};
            double nf = sl__nll(pos, np, neg, nn, tp, tn, wp, wn, nw);
            if (nf < f + 1e-4 * step * gd) {
                memcpy(w, nw, sizeof nw);
                f = nf;
                moved = 1;
                break;
            }
            step /= 2;
        }
        if (!moved) break; /* no further decrease: at the minimum within rounding */
    }
    if (!isfinite(w[0]) || !isfinite(w[1]) || !isfinite(w[2])) return -1;
    *f_out = f;
    return 0;
}

/* A map's (a, lambda, b): both inputs when margins are known and both weights come out
 * non-negative, else the better one-input fit with a positive weight. 0 on success, -1 when no
 * fit has a positive weight. */
static int sl__fit_map(const sl__pt *pos, size_t np, const sl__pt *neg, size_t nn, int margins, double *a,
                       double *lambda, double *b) {
    double w[3], f;
    if (margins && sl__platt(pos, np, neg, nn, 3, w, &f) == 0 && w[0] >= 0 && w[1] >= 0 && w[0] + w[1] > 0) {
        *a = w[0] + w[1];
        *lambda = w[1] / (w[0] + w[1]);
        *b = w[2];
        return 0;
    }
    int found = 0;
    double best = INFINITY;
    for (int use = 1; use <= (margins ? 2 : 1); use++) {
        if (sl__platt(pos, np, neg, nn, use, w, &f) != 0 || !(w[use - 1] > 0) || !(f < best)) continue;
        best = f;
        found = 1;
        *a = w[use - 1];
        *lambda = use == 2 ? 1.0 : 0.0;
        *b = w[2];
    }
    return found ? 0 : -1;
}

/* One-sided upper (sign +1) or lower (-1) confidence bound of a proportion k / n (Wilson score
 * interval). */
static double sl__wilson(size_t k, size_t n, int sign) {
    double nn = (double)n, p = (double)k / nn, z2 = CALIB_Z * CALIB_Z;
    double centre = p + z2 / (2 * nn);
    double half = CALIB_Z * sqrt(p * (1 - p) / nn + z2 / (4 * nn * nn));
    return (centre + sign * half) / (1 + z2 / nn);
}

static int sl__cmp_desc(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return a > b ? -1 : a < b;
}

static int sl__cmp_pt(const void *x, const void *y) {
    const sl__pt *a = x, *b = y;
    if (a->m != b->m) return a->m > b->m ? -1 : 1;
    return a->g > b->g ? -1 : a->g < b->g;
}

/* The lowest threshold whose Wilson upper bound on the accepted share of `neg` is within far.
 * neg_sorted is descending. Returns the threshold; *k_out negatives are >= it. */
static double sl__operating_point(const double *neg_sorted, size_t n, double far, size_t *k_out) {
    /* accepting the k highest negatives: threshold just above neg[k] (ties stay rejected) */
    size_t best = 0;
    for (size_t k = 1; k <= n; k++) {
        if (k < n && neg_sorted[k] == neg_sorted[k - 1]) continue; /* cannot split a tie */
        if (sl__wilson(k, n, 1) <= far) best = k;
        else break;
    }
    *k_out = best;
    if (best == n) return nextafter(neg_sorted[n - 1], -INFINITY); /* every negative (far >= 1) */
    return nextafter(neg_sorted[best], INFINITY);
}

/* A first result: its combined score and whether it is right. */
typedef struct sl__top {
    double s;
    int right;
} sl__top;

static int sl__cmp_top(const void *x, const void *y) {
    const sl__top *a = x, *b = y;
    if (a->s != b->s) return a->s > b->s ? -1 : 1;
    return (a->right > b->right) - (a->right < b->right);
}

/* The lowest threshold at which the Wilson lower bound of the precision of the accepted first
 * results (top sorted descending) is at least `precision`; above every score (`above`) when none
 * is. *k_out results are accepted, *r_out of them right. */
static double sl__precision_point(const sl__top *top, size_t n, double precision, double above, size_t *k_out,
                                  size_t *r_out) {
    size_t best = 0, best_r = 0, r = 0;
    for (size_t k = 1; k <= n; k++) {
        r += top[k - 1].right != 0;
        if (k < n && top[k].s == top[k - 1].s) continue; /* cannot split a tie */
        if (sl__wilson(r, k, -1) >= precision) {
            best = k;
            best_r = r;
        }
    }
    *k_out = best;
    *r_out = best_r;
    return best ? top[best - 1].s : above;
}

static sl_status sl__check_scores(const double *v, size_t n, const char *what, sl_error *err) {
    if (n && !v) return sl__err_set(err, SL_E_INVALID, "calibration: %s is NULL", what);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]) || v[i] < SL_CALIB_SCORE_MIN || v[i] > SL_CALIB_SCORE_MAX)
            return sl__err_set(err, SL_E_INVALID, "calibration: %s score %zu is %g, outside %g..%g", what, i,
                               v[i], SL_CALIB_SCORE_MIN, SL_CALIB_SCORE_MAX);
    return SL_OK;
}

/* Sorted (m, g) pairs of n scores and optional margins; NULL when out of memory. */
static sl__pt *sl__pts(const double *m, const double *g, size_t n) {
    sl__pt *p = sl__mallocarray(n ? n : 1, sizeof *p);
    if (!p) return NULL;
    for (size_t i = 0; i < n; i++) {
        p[i].m = m[i];
        p[i].g = g ? g[i] : 0.0;
    }
    qsort(p, n, sizeof *p, sl__cmp_pt);
    return p;
}

/* Fits map u of c from sorted genuine pairs and sorted negatives (and the first results for the
 * result map's precision rule). */
static sl_status sl__fit_one(sl_calib *c, int u, const sl__pt *pos, size_t np, const sl__pt *negp, size_t nn,
                             int margins, const double *top_m, const double *top_g, const unsigned char *top_right,
                             size_t n_top, double far, double precision, const char *name, sl_error *err) {
    sl__calib_map *m = &c->map[u];
    double *neg = sl__mallocarray(nn, sizeof *neg), *ps = sl__mallocarray(np, sizeof *ps);
    sl__top *tops = n_top ? sl__mallocarray(n_top, sizeof *tops) : NULL;
    sl_status st = SL_OK;
    if (!neg || !ps || (n_top && !tops)) {
        st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        goto out;
    }
    size_t k = 0;
    int flat = sl__fit_map(pos, np, negp, nn, margins, &m->a, &m->lambda, &m->b) != 0 || !(m->a > 0) ||
               m->a > CALIB_COEF_MAX || fabs(m->b) > CALIB_COEF_MAX;
    if (flat) {
        if (u == SL_CALIB_PAIR) {
            st = sl__err_set(err, SL_E_INVALID, "calibration: the match scores do not rank genuine pairs above %s", name);
            goto out;
        }
        /* results whose first wrong product scores as well as the right one: the map says
         * nothing (confidence 0.5) and its point is above every score seen: never a match */
        m->a = CALIB_SLOPE_FLAT;
        m->b = 0;
        m->lambda = 0;
    }
    for (size_t i = 0; i < nn; i++) neg[i] = sl__combine(m->lambda, negp[i].m, negp[i].g);
    for (size_t i = 0; i < np; i++) ps[i] = sl__combine(m->lambda, pos[i].m, pos[i].g);
    qsort(neg, nn, sizeof *neg, sl__cmp_desc);
    qsort(ps, np, sizeof *ps, sl__cmp_desc);
    double above = nextafter(fmax(ps[0], neg[0]), INFINITY);
    for (size_t i = 0; i < n_top; i++) {
        tops[i].s = sl__combine(m->lambda, top_m[i], top_g ? top_g[i] : 0.0);
        tops[i].right = top_right[i] != 0;
    }
    if (flat) {
        m->threshold = above;
        m->precision_target = n_top ? precision : 0.0;
        m->tops = n_top;
    } else if (n_top) {
        size_t acc = 0, right = 0, all_right = 0;
        for (size_t i = 0; i < n_top; i++) {
            all_right += tops[i].right != 0;
            if (tops[i].s > above) above = nextafter(tops[i].s, INFINITY);
        }
        qsort(tops, n_top, sizeof *tops, sl__cmp_top);
        m->threshold = sl__precision_point(tops, n_top, precision, above, &acc, &right);
        m->precision_target = precision;
        m->precision = acc ? (double)right / (double)acc : 0.0;
        m->recall = all_right ? (double)right / (double)all_right : 0.0;
        m->tops = n_top;
    } else {
        m->threshold = sl__operating_point(neg, nn, far, &k);
    }
    if (flat || n_top) { /* the accept rate of the negatives at that point */
        k = 0;
        while (k < nn && neg[k] >= m->threshold) k++;
    }
    m->far_target = far;
    m->positives = np;
    m->negatives = nn;
    m->far = (double)k / (double)nn;
    size_t acc = 0;
    while (acc < np && ps[acc] >= m->threshold) acc++;
    m->tar = (double)acc / (double)np;
out:
    free(neg);
    free(ps);
    free(tops);
    return st;
}

sl_status sl_calib_fit(const sl_calib_data *d, double far, sl_calib **out, sl_error *err) {
    if (!out) return sl__err_set(err, SL_E_INVALID, "sl_calib_fit: NULL out");
    *out = NULL;
    if (!d) return sl__err_set(err, SL_E_INVALID, "sl_calib_fit: NULL data");
    if (far == 0) far = SL_CALIB_FAR_DEFAULT;
    if (!(far >= SL_CALIB_FAR_MIN && far <= SL_CALIB_FAR_MAX))
        return sl__err_set(err, SL_E_INVALID, "calibration: false accept target %g outside %g..%g", far,
                           SL_CALIB_FAR_MIN, SL_CALIB_FAR_MAX);
    double precision = d->precision == 0 ? SL_CALIB_PRECISION_DEFAULT : d->precision;
    if (!(precision >= SL_CALIB_PRECISION_MIN && precision <= SL_CALIB_PRECISION_MAX))
        return sl__err_set(err, SL_E_INVALID, "calibration: precision target %g outside %g..%g", precision,
                           SL_CALIB_PRECISION_MIN, SL_CALIB_PRECISION_MAX);
    if (d->source != SL_CALIB_PHOTOS && d->source != SL_CALIB_CATALOG)
        return sl__err_set(err, SL_E_INVALID, "calibration: source must be photos or catalog");
    if (d->cohort < 1 || d->cohort > SL_CALIB_COHORT_MAX)
        return sl__err_set(err, SL_E_INVALID, "calibration: cohort %d outside 1..%d", d->cohort, SL_CALIB_COHORT_MAX);
    if (d->n_pos < SL_CALIB_MIN_POSITIVES)
        return sl__err_set(err, SL_E_INVALID, "calibration: %zu genuine pairs, at least %d needed", d->n_pos,
                           SL_CALIB_MIN_POSITIVES);
    int margins = d->pos_margin != NULL;
    if (margins && (!d->neg_margin[0] || !d->neg_margin[1]))
        return sl__err_set(err, SL_E_INVALID, "calibration: margins of the genuine pairs without those of the negatives");
    if (d->n_top && d->n_top < SL_CALIB_MIN_POSITIVES)
        return sl__err_set(err, SL_E_INVALID, "calibration: %zu first results, at least %d needed", d->n_top,
                           SL_CALIB_MIN_POSITIVES);
    if (d->n_top && (!d->top || !d->top_right || (margins && !d->top_margin)))
        return sl__err_set(err, SL_E_INVALID, "calibration: first results without their scores or labels");
    static const char *const names[2] = {"random-product negatives", "result-list negatives"};
    sl_status st = sl__check_scores(d->pos, d->n_pos, "genuine", err);
    if (st == SL_OK && margins) st = sl__check_scores(d->pos_margin, d->n_pos, "genuine margin", err);
    if (st == SL_OK) st = sl__check_scores(d->top, d->n_top, "first result", err);
    if (st == SL_OK && margins) st = sl__check_scores(d->top_margin, d->n_top, "first result margin", err);
    for (int u = 0; u < 2 && st == SL_OK; u++) {
        if (d->n_neg[u] < SL_CALIB_MIN_NEGATIVES)
            return sl__err_set(err, SL_E_INVALID, "calibration: %zu %s, at least %d needed", d->n_neg[u], names[u],
                               SL_CALIB_MIN_NEGATIVES);
        st = sl__check_scores(d->neg[u], d->n_neg[u], names[u], err);
        if (st == SL_OK && margins) st = sl__check_scores(d->neg_margin[u], d->n_neg[u], names[u], err);
    }
    if (st != SL_OK) return st;
    /* sorted copies: the fit's sums then do not depend on the input order */
    sl__pt *pos = sl__pts(d->pos, d->pos_margin, d->n_pos);
    sl_calib *c = calloc(1, sizeof *c);
    if (!pos || !c) {
        free(pos);
        free(c);
        return sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    c->source = d->source;
    c->cohort = d->cohort;
    c->photos = d->photos;
    c->products = d->products;
    c->seed = d->seed;
    for (int u = 0; u < 2 && st == SL_OK; u++) {
        sl__pt *neg = sl__pts(d->neg[u], margins ? d->neg_margin[u] : NULL, d->n_neg[u]);
        if (!neg) {
            st = sl__err_set(err, SL_E_NOMEM, "out of memory");
            break;
        }
        size_t nt = u == SL_CALIB_RESULT ? d->n_top : 0;
        st = sl__fit_one(c, u, pos, d->n_pos, neg, d->n_neg[u], margins, d->top, margins ? d->top_margin : NULL,
                         d->top_right, nt, far, precision, names[u], err);
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

sl_calib *sl_calib_merge(const sl_calib *pair, const sl_calib *result) {
    if (!pair || !result || pair->cohort != result->cohort) return NULL;
    sl_calib *n = sl_calib_clone(pair);
    if (n) n->map[SL_CALIB_RESULT] = result->map[SL_CALIB_RESULT];
    return n;
}

double sl_calib_confidence(const sl_calib *c, sl_calib_use use, double m, double g) {
    if (isnan(m) || isnan(g)) return 0.0;
    if (!c) return sl__conf(SL_CALIB_FALLBACK_A, SL_CALIB_FALLBACK_B, m);
    const sl__calib_map *k = &c->map[use == SL_CALIB_RESULT];
    return sl__conf(k->a, k->b, sl__combine(k->lambda, m, g));
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
        m->lambda = k->lambda;
        m->score_threshold = k->threshold;
        m->confidence_threshold = sl__conf(k->a, k->b, k->threshold);
        m->far_target = k->far_target;
        m->positives = k->positives;
        m->negatives = k->negatives;
        m->tar = k->tar;
        m->far = k->far;
        m->precision_target = k->precision_target;
        m->precision = k->precision;
        m->recall = k->recall;
        m->tops = k->tops;
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
        sl__putd(&p, m->lambda);
        sl__putd(&p, m->precision_target);
        sl__putd(&p, m->precision);
        sl__putd(&p, m->recall);
        sl__put64(&p, m->tops);
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
    if (ver != CALIB_VERSION && ver != 1)
        return sl__err_set(err, SL_E_VERSION, "calibration: version %u (this build reads 1..%u)", ver, CALIB_VERSION);
    size_t want = ver == 1 ? CALIB_BYTES_V1 : CALIB_BYTES, mapb = ver == 1 ? CALIB_MAP_BYTES_V1 : CALIB_MAP_BYTES;
    if (len != want)
        return sl__err_set(err, SL_E_CORRUPT, "calibration: %zu bytes, expected %zu (version %u)", len, want, ver);
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
        const uint8_t *q = p + 40 + mapb * (unsigned)u;
        sl__calib_map *m = &c.map[u];
        m->a = sl__getd(q);
        m->b = sl__getd(q + 8);
        m->threshold = sl__getd(q + 16);
        m->far_target = sl__getd(q + 24);
        m->positives = sl__get64(q + 32);
        m->negatives = sl__get64(q + 40);
        m->tar = sl__getd(q + 48);
        m->far = sl__getd(q + 56);
        if (ver >= 2) {
            m->lambda = sl__getd(q + 64);
            m->precision_target = sl__getd(q + 72);
            m->precision = sl__getd(q + 80);
            m->recall = sl__getd(q + 88);
            m->tops = sl__get64(q + 96);
        }
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
        else if (!(m->lambda >= 0 && m->lambda <= 1)) bad = "margin weight lambda outside 0..1";
        else if (!(m->precision_target == 0 ||
                   (m->precision_target >= SL_CALIB_PRECISION_MIN && m->precision_target <= SL_CALIB_PRECISION_MAX)))
            bad = "precision target out of range";
        else if (!(m->precision >= 0 && m->precision <= 1) || !(m->recall >= 0 && m->recall <= 1))
            bad = "precision or recall outside 0..1";
        else if (m->precision_target > 0 && m->tops < SL_CALIB_MIN_POSITIVES)
            bad = "fewer first results than a precision point needs";
        if (bad) return sl__err_set(err, SL_E_CORRUPT, "calibration: %s: %s", names[u], bad);
    }
    sl_calib *n = malloc(sizeof *n);
    if (!n) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    *n = c;
    *out = n;
    return SL_OK;
}
