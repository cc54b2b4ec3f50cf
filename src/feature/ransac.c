/*
 * feature/ransac.c - RANSAC model fitting (Fischler & Bolles, "Random sample consensus",
 * CACM 24(6), 1981) for geometric verification of tentative SIFT matches.
 *
 * Models map src -> dst points: affine (6 dof, minimal sample 3) or homography (8 dof, minimal
 * sample 4, direct linear transform with Hartley normalization, Hartley & Zisserman 2004 ch. 4).
 * Loop: draw a minimal sample (deterministic sl__rng), fit, reject degenerate hypotheses (|det|
 * of the linear part outside [1e-3, 1e3]: collapses and absurd zooms are not product matches),
 * count points whose reprojection error is below the threshold, keep the best, stop adaptively
 * once the 99% confidence bound on the number of draws is reached. The winner is re-fitted by
 * least squares on its inliers (twice, re-collecting inliers each time) and kept only if it does
 * not lose inliers. With few pairs (<= 17 affine, <= 9 homography) repeated ordered samples are
 * skipped and the loop stops once all have been tried (same result, see sl_ransac). Invariants:
 * deterministic for a seed; no allocation beyond O(n) scratch and that table (<= 8192 words).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "shoplens/feature.h"
#include "util/util.h"
#include "feature/match.h"

void sl_ransac_params_init(sl_ransac_params *p) {
    p->model = SL_GEO_AFFINE;
    p->threshold = 8.0f;
    p->max_iters = SL_RANSAC_ITERS_DEFAULT;
    p->seed = 0x5eed;
}

/* Solves the m x m system A X = B in place for nr right-hand sides (Gaussian elimination,
 * partial pivoting). A is m x (m + nr) augmented, row-major; solution j goes to x + j * m. The
 * pivots depend on the left-hand side alone and every right-hand side gets the operations a
 * single-column solve would give it, so solving several at once changes no bit. Returns -1 when
 * singular. */
static int solve(double *A, int m, int nr, double *x) {
    int st = m + nr;
    for (int c = 0; c < m; c++) {
        int piv = c;
        for (int r = c + 1; r < m; r++)
            if (fabs(A[r * st + c]) > fabs(A[piv * st + c])) piv = r;
        if (fabs(A[piv * st + c]) < 1e-12) return -1;
        if (piv != c)
            for (int k = 0; k < st; k++) {
                double t = A[c * st + k];
                A[c * st + k] = A[piv * st + k];
                A[piv * st + k] = t;
            }
        for (int r = c + 1; r < m; r++) {
            double f = A[r * st + c] / A[c * st + c];
            for (int k = c; k < st; k++) A[r * st + k] -= f * A[c * st + k];
        }
    }
    for (int j = 0; j < nr; j++)
        for (int r = m - 1; r >= 0; r--) {
            double s = A[r * st + m + j];
            for (int k = r + 1; k < m; k++) s -= A[r * st + k] * x[j * m + k];
            x[j * m + r] = s / A[r * st + r];
        }
    return 0;
}

/* Least-squares affine fit on the listed pairs (>= 3): normal equations for x' and y', which share
 * their left-hand side. */
static int fit_affine(const float *s, const float *d, const size_t *idx, size_t m, double H[9]) {
    double A[3 * 5]; /* [L | x' | y'] */
    memset(A, 0, sizeof A);
    for (size_t t = 0; t < m; t++) {
        size_t i = idx[t];
        double v[3] = {s[2 * i], s[2 * i + 1], 1.0};
        for (int r = 0; r < 3; r++) {
            for (int c = 0; c < 3; c++) A[r * 5 + c] += v[r] * v[c];
            A[r * 5 + 3] += v[r] * d[2 * i];
            A[r * 5 + 4] += v[r] * d[2 * i + 1];
        }
    }
    double ab[6]; /* x' coefficients, then y' */
    if (solve(A, 3, 2, ab) != 0) return -1;
    H[0] = ab[0]; H[1] = ab[1]; H[2] = ab[2];
    H[3] = ab[3]; H[4] = ab[4]; H[5] = ab[5];
    H[6] = 0; H[7] = 0; H[8] = 1;
    return 0;
}

/* Hartley normalization: translate to the centroid, scale mean distance to sqrt(2). */
static void normalizer(const float *p, const size_t *idx, size_t m, double T[3]) {
    double cx = 0, cy = 0, md = 0;
    for (size_t t = 0; t < m; t++) { cx += p[2 * idx[t]]; cy += p[2 * idx[t] + 1]; }
    cx /= (double)m; cy /= (double)m;
    for (size_t t = 0; t < m; t++)
        md += hypot(p[2 * idx[t]] - cx, p[2 * idx[t] + 1] - cy);
    md /= (double)m;
    T[0] = md > 1e-12 ? sqrt(2.0) / md : 1.0;
    T[1] = cx; T[2] = cy;
}

/* DLT with h33 = 1 on normalized points, least squares via normal equations (>= 4 pairs). */
static int fit_homography(const float *s, const float *d, const size_t *idx, size_t m, double H[9]) {
    double Ts[3], Td[3];
    normalizer(s, idx, m, Ts);
    normalizer(d, idx, m, Td);
    double A[8 * 9];
    memset(A, 0, sizeof A);
    for (size_t t = 0; t < m; t++) {
        size_t i = idx[t];
        double x = (s[2 * i] - Ts[1]) * Ts[0], y = (s[2 * i + 1] - Ts[2]) * Ts[0];
        double u = (d[2 * i] - Td[1]) * Td[0], v = (d[2 * i + 1] - Td[2]) * Td[0];
        double r1[9] = {x, y, 1, 0, 0, 0, -u * x, -u * y, u};
        double r2[9] = {0, 0, 0, x, y, 1, -v * x, -v * y, v};
        for (int r = 0; r < 8; r++)
            for (int c = 0; c < 9; c++) A[r * 9 + c] += r1[r] * r1[c] + r2[r] * r2[c];
    }
    double h[9];
    if (solve(A, 8, 1, h) != 0) return -1;
    h[8] = 1.0;
    /* H = Td^-1 Hn Ts */
    double S[9] = {Ts[0], 0, -Ts[0] * Ts[1], 0, Ts[0], -Ts[0] * Ts[2], 0, 0, 1};
    double Di[9] = {1.0 / Td[0], 0, Td[1], 0, 1.0 / Td[0], Td[2], 0, 0, 1};
    double t1[9];
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 3; c++) {
            double acc = 0;
            for (int k = 0; k < 3; k++) acc += h[r * 3 + k] * S[k * 3 + c];
            t1[r * 3 + c] = acc;
        }
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 3; c++) {
            double acc = 0;
            for (int k = 0; k < 3; k++) acc += Di[r * 3 + k] * t1[k * 3 + c];
            H[r * 3 + c] = acc;
        }
    if (fabs(H[8]) < 1e-12) return -1;
    for (int k = 0; k < 9; k++) H[k] /= H[8];
    return 0;
}

static int plausible(const double H[9]) {
    double det = H[0] * H[4] - H[1] * H[3];
    if (!(fabs(det) > 1e-3 && fabs(det) < 1e3)) return 0;
    for (int k = 0; k < 9; k++) if (!isfinite(H[k])) return 0;
    return 1;
}

static size_t count_inliers(const double H[9], const float *s, const float *d, size_t n,
                            double thr2, unsigned char *mask) {
    size_t cnt = 0;
    if (H[6] == 0.0 && H[7] == 0.0 && H[8] == 1.0) {
        /* affine: w = 1 exactly, and v / 1.0 == v, so this is the general loop without its two
         * divisions (the same counts and mask, bit for bit) */
        for (size_t i = 0; i < n; i++) {
            double x = s[2 * i], y = s[2 * i + 1];
            double u = (H[0] * x + H[1] * y + H[2]) - d[2 * i];
            double v = (H[3] * x + H[4] * y + H[5]) - d[2 * i + 1];
            int in = u * u + v * v <= thr2;
            if (mask) mask[i] = (unsigned char)in;
            cnt += (size_t)in;
        }
        return cnt;
    }
    for (size_t i = 0; i < n; i++) {
        double x = s[2 * i], y = s[2 * i + 1];
        double w = H[6] * x + H[7] * y + H[8];
        int in = 0;
        if (fabs(w) > 1e-12) {
            double u = (H[0] * x + H[1] * y + H[2]) / w - d[2 * i];
            double v = (H[3] * x + H[4] * y + H[5]) / w - d[2 * i + 1];
            in = u * u + v * v <= thr2;
        }
        if (mask) mask[i] = (unsigned char)in;
        cnt += (size_t)in;
    }
    return cnt;
}

static int fit(sl_geo_model model, const float *s, const float *d, const size_t *idx, size_t m,
               double H[9]) {
    return model == SL_GEO_HOMOGRAPHY ? fit_homography(s, d, idx, m, H) : fit_affine(s, d, idx, m, H);
}

sl_status sl_ransac(const float *src, const float *dst, size_t n, const sl_ransac_params *p,
                    double H[9], int *inliers, unsigned char *inlier_mask, sl_error *err) {
    return sl__ransac_impl(src, dst, n, p, H, inliers, inlier_mask, 1, err);
}

sl_status sl__ransac_impl(const float *src, const float *dst, size_t n, const sl_ransac_params *p,
                          double H[9], int *inliers, unsigned char *inlier_mask, int skip_repeats,
                          sl_error *err) {
    sl_ransac_params defp;
    if (!p) { sl_ransac_params_init(&defp); p = &defp; }
    static const double I[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
    memcpy(H, I, sizeof I);
    *inliers = 0;
    if (inlier_mask && n) memset(inlier_mask, 0, n);
    if (p->model != SL_GEO_AFFINE && p->model != SL_GEO_HOMOGRAPHY)
        return sl__err_set(err, SL_E_INVALID, "ransac: unknown model %d", (int)p->model);
    if (!(p->threshold > 0.0f) || p->max_iters < 1)
        return sl__err_set(err, SL_E_INVALID, "ransac: threshold must be > 0 and iters >= 1");
    size_t smin = p->model == SL_GEO_HOMOGRAPHY ? 4 : 3;
    if (n < smin || !src || !dst) return SL_OK;
    if (n > (size_t)1 << 24) return sl__err_set(err, SL_E_TOO_LARGE, "ransac: %zu pairs", n);
    size_t *idx = sl__mallocarray(n, sizeof *idx);
    unsigned char *mask = malloc(n);
    if (!idx || !mask) { free(idx); free(mask); return sl__err_set(err, SL_E_NOMEM, "ransac: out of memory"); }
    sl__rng rng;
    sl__rng_seed(&rng, p->seed);
    double thr2 = (double)p->threshold * p->threshold, best[9];
    memcpy(best, I, sizeof I);
    size_t best_cnt = 0;
    double need = (double)p->max_iters;
    /* Few pairs (the usual case for a non-matching candidate): the draws repeat the same ordered
     * samples many times, and a repeat gives the same hypothesis and count, which cannot beat the
     * best so far. So repeats are skipped (still counted as iterations, the random sequence is
     * unchanged) and the loop ends once every ordered sample has been tried: the same result as
     * drawing on, for less work. */
    size_t distinct = 0, nseen = 0, tmask = 0;
    if (skip_repeats && n <= (smin == 3 ? 17u : 9u)) {
        distinct = n * (n - 1) * (n - 2) * (smin == 4 ? n - 3 : 1);
        while (tmask + 1 < 2 * distinct) tmask = 2 * tmask + 1;
    }
    uint64_t *seen = distinct ? calloc(tmask + 1, sizeof *seen) : NULL; /* NULL: no skipping */
    int done = 0;
    for (int it = 0; it < p->max_iters && (double)it < need && !done; it++) {
        size_t sample[4];
        uint64_t key = 0;
        for (size_t a = 0; a < smin; a++) {
            size_t c;
            int dup;
            do {
                c = (size_t)sl__rng_below(&rng, n);
                dup = 0;
                for (size_t b = 0; b < a; b++) dup |= sample[b] == c;
            } while (dup);
            sample[a] = c;
            key |= (uint64_t)(c + 1) << (16 * a);
        }
        if (seen) {
            size_t slot = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 40) & tmask;
            while (seen[slot] && seen[slot] != key) slot = (slot + 1) & tmask;
            if (seen[slot] == key) continue;
            seen[slot] = key;
            done = ++nseen == distinct;
        }
        double h[9];
        if (fit(p->model, src, dst, sample, smin, h) != 0 || !plausible(h)) continue;
        size_t cnt = count_inliers(h, src, dst, n, thr2, NULL);
        if (cnt > best_cnt) {
            best_cnt = cnt;
            memcpy(best, h, sizeof h);
            double w = (double)cnt / (double)n, ws = pow(w, (double)smin);
            if (ws >= 1.0) need = 0;
            else if (ws > 0.0) need = log(0.01) / log(1.0 - ws);
        }
    }
    if (best_cnt >= smin) {
        for (int round = 0; round < 2; round++) {
            count_inliers(best, src, dst, n, thr2, mask);
            size_t m = 0;
            for (size_t i = 0; i < n; i++) if (mask[i]) idx[m++] = i;
            double h[9];
            if (m < smin || fit(p->model, src, dst, idx, m, h) != 0 || !plausible(h)) break;
            size_t cnt = count_inliers(h, src, dst, n, thr2, NULL);
            if (cnt < best_cnt) break;
            best_cnt = cnt;
            memcpy(best, h, sizeof h);
        }
        memcpy(H, best, sizeof best);
        *inliers = (int)best_cnt;
        if (inlier_mask) count_inliers(best, src, dst, n, thr2, inlier_mask);
    }
    free(idx); free(mask); free(seen);
    return SL_OK;
}
