/*
 * feature/sift/sift_kernels.h - the inner loops of SIFT (Lowe, IJCV 2004) written once as plain,
 * auto-vectorizable C and compiled several times: sift_generic.c (baseline x86-64 / any CPU),
 * sift_avx2.c (-mavx2 -mfma) and sift_avx512.c (-mavx512f ...); sift.c picks one table at run
 * time from the CPU's features (sl__sift_kernels_get).
 *
 * Include this file only after defining SL__SIFT_SUFFIX (a token such as generic). It defines
 * the static kernels and one non-static table `sl__sift_kernels_<suffix>`.
 *
 * Invariants: every kernel computes each output element with the same sequence of float
 * operations (no reassociation), so results depend on the selected table only through FMA
 * contraction; on one machine and build they are bit-for-bit reproducible.
 */
#include <math.h>
#include <stdint.h>
#include <stddef.h>
#include <string.h>

#include "feature/sift/sift_internal.h"

#ifndef SL__SIFT_SUFFIX
#error "define SL__SIFT_SUFFIX before including sift_kernels.h"
#endif
#define SL__SIFT_CAT2(a, b) a##b
#define SL__SIFT_CAT(a, b) SL__SIFT_CAT2(a, b)
#define SL__SIFT_NAME(n) SL__SIFT_CAT(n##_, SL__SIFT_SUFFIX)

/* Separable Gaussian blur of rows [y0, y1) of a w x h plane (stride w), replicated borders.
 * k[0..r] are the symmetric taps (k[0] the centre); tmp holds w + 2r floats. */
static void SL__SIFT_NAME(blur_rows)(const float *restrict src, float *restrict dst, int w,
                                     int h, const float *restrict k, int r,
                                     float *restrict tmp, int y0, int y1) {
    float *restrict t = tmp + r;
    for (int y = y0; y < y1; y++) {
        /* vertical pass into the padded row buffer */
        const float *restrict s0 = src + (size_t)y * (size_t)w;
        const float k0 = k[0];
        for (int x = 0; x < w; x++) t[x] = k0 * s0[x];
        for (int i = 1; i <= r; i++) {
            int ya = y - i < 0 ? 0 : y - i;
            int yb = y + i >= h ? h - 1 : y + i;
            const float *restrict a = src + (size_t)ya * (size_t)w;
            const float *restrict b = src + (size_t)yb * (size_t)w;
            const float ki = k[i];
            for (int x = 0; x < w; x++) t[x] += ki * (a[x] + b[x]);
        }
        for (int i = 1; i <= r; i++) {
            t[-i] = t[0];
            t[w - 1 + i] = t[w - 1];
        }
        /* horizontal pass */
        float *restrict d = dst + (size_t)y * (size_t)w;
        for (int x = 0; x < w; x++) d[x] = k0 * t[x];
        for (int i = 1; i <= r; i++) {
            const float ki = k[i];
            const float *restrict a = t - i;
            const float *restrict b = t + i;
            for (int x = 0; x < w; x++) d[x] += ki * (a[x] + b[x]);
        }
    }
}

/* d[i] = a[i] - b[i] */
static void SL__SIFT_NAME(sub)(const float *restrict a, const float *restrict b,
                               float *restrict d, size_t n) {
    for (size_t i = 0; i < n; i++) d[i] = a[i] - b[i];
}

#define SL__MAX(a, b) ((a) > (b) ? (a) : (b))
#define SL__MIN(a, b) ((a) < (b) ? (a) : (b))

/* First stage of the scale-space extremum test on one row: m[x] = 1 where the centre value v
 * passes the threshold (|v| > thr) and is >= (maxima) or <= (minima) its 8 neighbours in its
 * own layer (rows r[3..5], r[4] the centre row). The 18 neighbours in the layers below
 * (r[0..2]) and above (r[6..8]) are checked by the caller on the few survivors. */
static void SL__SIFT_NAME(extrema_row)(const float *const *r, int x0, int x1, float thr,
                                       uint8_t *restrict m) {
    const float *restrict b0 = r[3], *restrict b1 = r[4], *restrict b2 = r[5];
    for (int x = x0; x < x1; x++) {
        float v = b1[x];
        float mx = SL__MAX(b1[x - 1], b1[x + 1]);
        float mn = SL__MIN(b1[x - 1], b1[x + 1]);
        mx = SL__MAX(mx, b0[x - 1]); mn = SL__MIN(mn, b0[x - 1]);
        mx = SL__MAX(mx, b0[x]); mn = SL__MIN(mn, b0[x]);
        mx = SL__MAX(mx, b0[x + 1]); mn = SL__MIN(mn, b0[x + 1]);
        mx = SL__MAX(mx, b2[x - 1]); mn = SL__MIN(mn, b2[x - 1]);
        mx = SL__MAX(mx, b2[x]); mn = SL__MIN(mn, b2[x]);
        mx = SL__MAX(mx, b2[x + 1]); mn = SL__MIN(mn, b2[x + 1]);
        int is_max = (v > thr) & (v >= mx);
        int is_min = (v < -thr) & (v <= mn);
        m[x] = (uint8_t)(is_max | is_min);
    }
}

/* Gradient magnitude and orientation in [0, 2pi) of n samples (dx, dy), y pointing down.
 * The arctangent is a minimax polynomial, |error| < 1e-4 rad. */
static void SL__SIFT_NAME(grad)(const float *restrict dx, const float *restrict dy,
                                float *restrict mag, float *restrict ori, int n) {
    const float pi = 3.14159265358979f;
    for (int i = 0; i < n; i++) {
        float x = dx[i], y = dy[i];
        float ax = x < 0 ? -x : x, ay = y < 0 ? -y : y;
        float lo = SL__MIN(ax, ay), hi = SL__MAX(ax, ay);
        float a = lo / (hi + 1e-30f);
        float s = a * a;
        float t = ((-0.0464964749f * s + 0.15931422f) * s - 0.327622764f) * s * a + a;
        t = ay > ax ? 0.5f * pi - t : t;
        t = x < 0 ? pi - t : t;
        t = y < 0 ? 2.0f * pi - t : t;
        ori[i] = t;
        mag[i] = sqrtf(x * x + y * y);
    }
}

/* Trilinear spreading of n descriptor samples (Lowe s.6.1): sample k with bin coordinates
 * (rb, cb) in (-1, d), orientation go (radians, [0, 2pi]) relative to ang, magnitude gm and
 * window weight wt goes to the 8 histogram cells around it: idx[k] is the cell of the lower
 * corner in a (d+2) x (d+2) x (nb+2) histogram, vJ[k] (J = 4 dr + 2 dc + do) the amounts. */
static void SL__SIFT_NAME(desc_spread)(const float *restrict rb, const float *restrict cb,
                                       const float *restrict go, const float *restrict gm,
                                       const float *restrict wt, float ang, int d, int nb,
                                       int n, int32_t *restrict idx, float *restrict v0,
                                       float *restrict v1, float *restrict v2,
                                       float *restrict v3, float *restrict v4,
                                       float *restrict v5, float *restrict v6,
                                       float *restrict v7) {
    /* (eight restrict parameters, not an array of pointers: gcc only vectorizes this way) */
    const float bpr = (float)nb / 6.283185307179586f;
    for (int k = 0; k < n; k++) {
        float rbin = rb[k], cbin = cb[k];
        float obin = (go[k] - ang) * bpr;
        float m = gm[k] * wt[k];
        /* floor by truncation of positive values (rbin, cbin > -1, obin > -nb); the sum may
         * round up to the next integer just below a cell edge, hence the clamps */
        int r0 = (int)(rbin + 1.0f) - 1, c0 = (int)(cbin + 1.0f) - 1;
        int o0 = (int)(obin + (float)nb) - nb;
        r0 = r0 > d - 1 ? d - 1 : r0;
        c0 = c0 > d - 1 ? d - 1 : c0;
        rbin -= (float)r0;
        cbin -= (float)c0;
        obin -= (float)o0;
        o0 = o0 < 0 ? o0 + nb : o0;
        o0 = o0 >= nb ? o0 - nb : o0;
        float v_r1 = m * rbin, v_r0 = m - v_r1;
        float v_rc11 = v_r1 * cbin, v_rc10 = v_r1 - v_rc11;
        float v_rc01 = v_r0 * cbin, v_rc00 = v_r0 - v_rc01;
        float v_rco111 = v_rc11 * obin, v_rco101 = v_rc10 * obin;
        float v_rco011 = v_rc01 * obin, v_rco001 = v_rc00 * obin;
        v0[k] = v_rc00 - v_rco001;
        v1[k] = v_rco001;
        v2[k] = v_rc01 - v_rco011;
        v3[k] = v_rco011;
        v4[k] = v_rc10 - v_rco101;
        v5[k] = v_rco101;
        v6[k] = v_rc11 - v_rco111;
        v7[k] = v_rco111;
        idx[k] = ((r0 + 1) * (d + 2) + c0 + 1) * (nb + 2) + o0;
    }
}

/* One row of a dense descriptor (sift.c, sift_dense_descriptors): n samples, sample j with
 * the 8 orientation amounts pv[8j..8j+7] of its pixel, its column cell cell[j] (non-decreasing
 * in j) and the weights w0[j] / w1[j] of that cell and the next; adds them into the row sums
 * s[8 c + o]. A run of samples in one cell is summed in registers (two alternating partial sums
 * per cell, so consecutive samples do not wait for each other) and added once. */
#ifndef SL__SIFT_V8
#define SL__SIFT_V8
/* 8 floats (GCC/Clang vector extension): a ymm register with AVX, two xmm otherwise */
typedef float sl__sift_v8 __attribute__((vector_size(32)));
#define SL__SIFT_LD8(v, p) memcpy(&(v), (p), sizeof(v)) /* unaligned load */
#endif

static void SL__SIFT_NAME(dense_row)(const float *restrict pv, const int32_t *restrict cell,
                                     const float *restrict w0, const float *restrict w1, int n,
                                     float *restrict s) {
    int j = 0;
    while (j < n) {
        const int c = cell[j];
        sl__sift_v8 a0 = { 0 }, a1 = { 0 }, b0 = { 0 }, b1 = { 0 };
        for (; j + 1 < n && cell[j + 1] == c; j += 2) {
            sl__sift_v8 p, q;
            SL__SIFT_LD8(p, pv + (size_t)j * 8);
            SL__SIFT_LD8(q, pv + (size_t)j * 8 + 8);
            a0 += w0[j] * p;
            b0 += w1[j] * p;
            a1 += w0[j + 1] * q;
            b1 += w1[j + 1] * q;
        }
        if (j < n && cell[j] == c) { /* the run's odd last sample */
            sl__sift_v8 p;
            SL__SIFT_LD8(p, pv + (size_t)j * 8);
            a0 += w0[j] * p;
            b0 += w1[j] * p;
            j++;
        }
        sl__sift_v8 sa, sb;
        SL__SIFT_LD8(sa, s + (size_t)c * 8);
        SL__SIFT_LD8(sb, s + (size_t)c * 8 + 8);
        sa += a0 + a1;
        sb += b0 + b1;
        memcpy(s + (size_t)c * 8, &sa, sizeof sa);
        memcpy(s + (size_t)c * 8 + 8, &sb, sizeof sb);
    }
}

#undef SL__MAX
#undef SL__MIN

const sl__sift_kernels SL__SIFT_CAT(sl__sift_kernels_, SL__SIFT_SUFFIX) = {
    SL__SIFT_NAME(blur_rows),
    SL__SIFT_NAME(sub),
    SL__SIFT_NAME(extrema_row),
    SL__SIFT_NAME(grad),
    SL__SIFT_NAME(desc_spread),
    SL__SIFT_NAME(dense_row),
};
