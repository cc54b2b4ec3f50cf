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

#ifndef SL__SIFT_V8
#define SL__SIFT_V8
/* 8 floats (GCC/Clang vector extension): a ymm register with AVX, two xmm otherwise */
typedef float sl__sift_v8 __attribute__((vector_size(32)));
#define SL__SIFT_LD8(v, p) memcpy(&(v), (p), sizeof(v)) /* unaligned load */
#endif

/* *v = n <= 8 floats from p in the low lanes, the others 0 (a plain load when n = 8); through
 * a pointer, as returning a vector by value changes the ABI with the instruction set */
static inline void SL__SIFT_NAME(ld_part)(sl__sift_v8 *v, const float *p, int n) {
    if (n == 8) {
        SL__SIFT_LD8(*v, p);
    } else {
        float b[8] = { 0 };
        memcpy(b, p, (size_t)n * sizeof(float));
        memcpy(v, b, sizeof *v);
    }
}

/* Vertical pass of the blur for one row: t[x] = k0 p[0][x] + k1 (p[-1][x] + p[1][x]) + ...
 * + kr (p[-r][x] + p[r][x]), p[j] the (clamped) row j below the output row. */
static inline void SL__SIFT_NAME(blur_v1)(const float *const *p, const float *restrict k, int r,
                                          int w, float *restrict t) {
    const float k0 = k[0];
    int x = 0;
    for (; x + 16 <= w; x += 16) {
        sl__sift_v8 c0, c1;
        SL__SIFT_LD8(c0, p[0] + x);
        SL__SIFT_LD8(c1, p[0] + x + 8);
        c0 = k0 * c0;
        c1 = k0 * c1;
        for (int i = 1; i <= r; i++) {
            const float ki = k[i];
            sl__sift_v8 a0, a1, b0, b1;
            SL__SIFT_LD8(a0, p[-i] + x);
            SL__SIFT_LD8(b0, p[i] + x);
            SL__SIFT_LD8(a1, p[-i] + x + 8);
            SL__SIFT_LD8(b1, p[i] + x + 8);
            c0 += ki * (a0 + b0);
            c1 += ki * (a1 + b1);
        }
        memcpy(t + x, &c0, sizeof c0);
        memcpy(t + x + 8, &c1, sizeof c1);
    }
    /* then blocks of 8, the last one moved back to end at w (recomputing a few columns with
     * the same operations); below 8 columns, one partial block */
    for (; x < w; x += 8) {
        const int n = w < 8 ? w : 8;
        if (x + n > w) x = w - n;
        sl__sift_v8 c0;
        SL__SIFT_NAME(ld_part)(&c0, p[0] + x, n);
        c0 = k0 * c0;
        for (int i = 1; i <= r; i++) {
            const float ki = k[i];
            sl__sift_v8 a0, b0;
            SL__SIFT_NAME(ld_part)(&a0, p[-i] + x, n);
            SL__SIFT_NAME(ld_part)(&b0, p[i] + x, n);
            c0 += ki * (a0 + b0);
        }
        memcpy(t + x, &c0, (size_t)n * sizeof(float));
    }
}

/* One tap ti of blur_v2's 16 columns: loads rows -ti (into a0, a1) and ti + 1 (b0, b1) and adds
 * kk times (row -ti + row ti) to the first row's sums c0, c1 and kk times (row 1 - ti + row
 * ti + 1) to the second's e0, e1, rows ti (pb0, pb1) and 1 - ti (pa0, pa1) coming from the tap
 * before. */
#define SL__SIFT_V2TAP(kk, ti, a0, a1, b0, b1, pa0, pa1, pb0, pb1)                           \
    do {                                                                                     \
        const float kt_ = (kk);                                                              \
        SL__SIFT_LD8(a0, p[-(ti)] + x);                                                      \
        SL__SIFT_LD8(a1, p[-(ti)] + x + 8);                                                  \
        SL__SIFT_LD8(b0, p[(ti) + 1] + x);                                                   \
        SL__SIFT_LD8(b1, p[(ti) + 1] + x + 8);                                               \
        c0 += kt_ * (a0 + pb0);                                                              \
        c1 += kt_ * (a1 + pb1);                                                              \
        e0 += kt_ * (pa0 + b0);                                                              \
        e1 += kt_ * (pa1 + b1);                                                              \
    } while (0)

/* The same for two consecutive rows (t0: p[j] relative to the first, t1: to the second): at
 * tap i the first row needs rows -i and i, the second 1 - i and 1 + i, so each tap loads rows
 * -i and i + 1 and reuses the two of the tap before. */
static inline void SL__SIFT_NAME(blur_v2)(const float *const *p, const float *restrict k, int r,
                                          int w, float *restrict t0, float *restrict t1) {
    const float k0 = k[0];
    int x = 0;
    for (; x + 16 <= w; x += 16) {
        sl__sift_v8 pa0, pa1, pb0, pb1; /* rows 1 - i and i of the tap before */
        SL__SIFT_LD8(pa0, p[0] + x);
        SL__SIFT_LD8(pa1, p[0] + x + 8);
        SL__SIFT_LD8(pb0, p[1] + x);
        SL__SIFT_LD8(pb1, p[1] + x + 8);
        sl__sift_v8 c0 = k0 * pa0, c1 = k0 * pa1, e0 = k0 * pb0, e1 = k0 * pb1;
        /* two taps per iteration, the second using the first's rows directly: one hand-over of
         * the reused rows per two taps (a loop of one tap made GCC 12 copy all four reused
         * vectors every tap and spill one) */
        int i = 1;
        for (; i + 1 <= r; i += 2) {
            sl__sift_v8 a0, a1, b0, b1, f0, f1, g0, g1;
            SL__SIFT_V2TAP(k[i], i, a0, a1, b0, b1, pa0, pa1, pb0, pb1);
            SL__SIFT_V2TAP(k[i + 1], i + 1, f0, f1, g0, g1, a0, a1, b0, b1);
            pa0 = f0;
            pa1 = f1;
            pb0 = g0;
            pb1 = g1;
        }
        if (i <= r) {
            sl__sift_v8 a0, a1, b0, b1;
            SL__SIFT_V2TAP(k[i], i, a0, a1, b0, b1, pa0, pa1, pb0, pb1);
        }
        memcpy(t0 + x, &c0, sizeof c0);
        memcpy(t0 + x + 8, &c1, sizeof c1);
        memcpy(t1 + x, &e0, sizeof e0);
        memcpy(t1 + x + 8, &e1, sizeof e1);
    }
    for (; x < w; x += 8) {
        const int n = w < 8 ? w : 8;
        if (x + n > w) x = w - n;
        sl__sift_v8 pa0, pb0;
        SL__SIFT_NAME(ld_part)(&pa0, p[0] + x, n);
        SL__SIFT_NAME(ld_part)(&pb0, p[1] + x, n);
        sl__sift_v8 c0 = k0 * pa0, e0 = k0 * pb0;
        for (int i = 1; i <= r; i++) {
            const float ki = k[i];
            sl__sift_v8 a0, b0;
            SL__SIFT_NAME(ld_part)(&a0, p[-i] + x, n);
            SL__SIFT_NAME(ld_part)(&b0, p[i + 1] + x, n);
            c0 += ki * (a0 + pb0);
            e0 += ki * (pa0 + b0);
            pa0 = a0;
            pb0 = b0;
        }
        memcpy(t0 + x, &c0, (size_t)n * sizeof(float));
        memcpy(t1 + x, &e0, (size_t)n * sizeof(float));
    }
}

/* Horizontal pass of the blur for one row: pads t (w values, r free floats on each side) by
 * replicating its ends, d[x] = k0 t[x] + k1 (t[x-1] + t[x+1]) + ...; when g is not NULL also
 * g[x] = d[x] - s0[x] (the DoG row). */
static inline void SL__SIFT_NAME(blur_h)(float *restrict t, const float *restrict k, int r,
                                         int w, float *restrict d, float *restrict g,
                                         const float *restrict s0) {
    const float k0 = k[0];
    for (int i = 1; i <= r; i++) {
        t[-i] = t[0];
        t[w - 1 + i] = t[w - 1];
    }
    int x = 0;
    for (; x + 32 <= w; x += 32) {
        sl__sift_v8 c0, c1, c2, c3;
        SL__SIFT_LD8(c0, t + x);
        SL__SIFT_LD8(c1, t + x + 8);
        SL__SIFT_LD8(c2, t + x + 16);
        SL__SIFT_LD8(c3, t + x + 24);
        c0 = k0 * c0;
        c1 = k0 * c1;
        c2 = k0 * c2;
        c3 = k0 * c3;
        for (int i = 1; i <= r; i++) {
            const float ki = k[i];
            const float *a = t + x - i, *b = t + x + i;
            sl__sift_v8 a0, a1, a2, a3, b0, b1, b2, b3;
            SL__SIFT_LD8(a0, a);
            SL__SIFT_LD8(b0, b);
            SL__SIFT_LD8(a1, a + 8);
            SL__SIFT_LD8(b1, b + 8);
            SL__SIFT_LD8(a2, a + 16);
            SL__SIFT_LD8(b2, b + 16);
            SL__SIFT_LD8(a3, a + 24);
            SL__SIFT_LD8(b3, b + 24);
            c0 += ki * (a0 + b0);
            c1 += ki * (a1 + b1);
            c2 += ki * (a2 + b2);
            c3 += ki * (a3 + b3);
        }
        memcpy(d + x, &c0, sizeof c0);
        memcpy(d + x + 8, &c1, sizeof c1);
        memcpy(d + x + 16, &c2, sizeof c2);
        memcpy(d + x + 24, &c3, sizeof c3);
        if (g) {
            sl__sift_v8 p0, p1, p2, p3;
            SL__SIFT_LD8(p0, s0 + x);
            SL__SIFT_LD8(p1, s0 + x + 8);
            SL__SIFT_LD8(p2, s0 + x + 16);
            SL__SIFT_LD8(p3, s0 + x + 24);
            p0 = c0 - p0;
            p1 = c1 - p1;
            p2 = c2 - p2;
            p3 = c3 - p3;
            memcpy(g + x, &p0, sizeof p0);
            memcpy(g + x + 8, &p1, sizeof p1);
            memcpy(g + x + 16, &p2, sizeof p2);
            memcpy(g + x + 24, &p3, sizeof p3);
        }
    }
    for (; x < w; x += 8) {
        const int n = w < 8 ? w : 8;
        if (x + n > w) x = w - n;
        sl__sift_v8 c0;
        SL__SIFT_NAME(ld_part)(&c0, t + x, n);
        c0 = k0 * c0;
        for (int i = 1; i <= r; i++) {
            const float ki = k[i];
            sl__sift_v8 a0, b0;
            SL__SIFT_NAME(ld_part)(&a0, t + x - i, n);
            SL__SIFT_NAME(ld_part)(&b0, t + x + i, n);
            c0 += ki * (a0 + b0);
        }
        memcpy(d + x, &c0, (size_t)n * sizeof(float));
        if (g) {
            sl__sift_v8 p0;
            SL__SIFT_NAME(ld_part)(&p0, s0 + x, n);
            p0 = c0 - p0;
            memcpy(g + x, &p0, (size_t)n * sizeof(float));
        }
    }
}

/* Separable Gaussian blur of rows [y0, y1) of a w x h plane (stride w), replicated borders.
 * k[0..r] are the symmetric taps (k[0] the centre, r <= 63); tmp holds 2 (w + 2r) floats.
 * When dog is not NULL, its rows [y0, y1) (same layout) also get the difference of Gaussians
 * dst - src. Each output element is k0 v[0] + k1 (v[-1] + v[1]) + ... + kr (v[-r] + v[r]),
 * summed in that order (taps outermost), in both passes, whole vectors only (a scalar tail
 * loop would let the compiler vectorize over the taps and lose the FMA contraction). The sums
 * of a block of columns stay in registers over all taps instead of going through memory once
 * per tap, and the vertical pass does two rows at a time (each loaded row serves both). */
static void SL__SIFT_NAME(blur_rows)(const float *restrict src, float *restrict dst, int w,
                                     int h, const float *restrict k, int r,
                                     float *restrict tmp, int y0, int y1,
                                     float *restrict dog) {
    float *restrict t0 = tmp + r, *restrict t1 = tmp + w + 3 * r;
    const float *rows[2 * 64 + 2], **p = rows + 64; /* p[j]: row j below the output row */
    for (int y = y0; y < y1; y += 2) {
        int two = y + 1 < y1;
        for (int j = -r; j <= r + two; j++) {
            int yy = y + j < 0 ? 0 : y + j >= h ? h - 1 : y + j;
            p[j] = src + (size_t)yy * (size_t)w;
        }
        if (two)
            SL__SIFT_NAME(blur_v2)(p, k, r, w, t0, t1);
        else
            SL__SIFT_NAME(blur_v1)(p, k, r, w, t0);
        for (int q = 0; q <= two; q++) {
            size_t o = (size_t)(y + q) * (size_t)w;
            SL__SIFT_NAME(blur_h)(q ? t1 : t0, k, r, w, dst + o, dog ? dog + o : NULL,
                                  src + o);
        }
    }
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
 * corner in a (d+2) x (d+2) x (nb+2) histogram, the amounts vJ (J = 4 dr + 2 dc + do) are
 * stored in pairs of neighbouring orientations: v01[2k] = v0, v01[2k+1] = v1, v23[2k] = v2,
 * ..., v67[2k+1] = v7 (the caller adds each pair to two adjacent cells at once). */
static void SL__SIFT_NAME(desc_spread)(const float *restrict rb, const float *restrict cb,
                                       const float *restrict go, const float *restrict gm,
                                       const float *restrict wt, float ang, int d, int nb,
                                       int n, int32_t *restrict idx, float *restrict v01,
                                       float *restrict v23, float *restrict v45,
                                       float *restrict v67) {
    /* (four restrict parameters, not an array of pointers: gcc only vectorizes this way) */
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
        v01[2 * k] = v_rc00 - v_rco001;
        v01[2 * k + 1] = v_rco001;
        v23[2 * k] = v_rc01 - v_rco011;
        v23[2 * k + 1] = v_rco011;
        v45[2 * k] = v_rc10 - v_rco101;
        v45[2 * k + 1] = v_rco101;
        v67[2 * k] = v_rc11 - v_rco111;
        v67[2 * k + 1] = v_rco111;
        idx[k] = ((r0 + 1) * (d + 2) + c0 + 1) * (nb + 2) + o0;
    }
}

/* One row of a dense descriptor (sift.c, sift_dense_descriptors): n samples, sample j with
 * the 8 orientation amounts pv[8j..8j+7] of its pixel, its column cell cell[j] (non-decreasing
 * in j) and the weights w0[j] / w1[j] of that cell and the next; adds them into the row sums
 * s[8 c + o]. A run of samples in one cell is summed in registers (two alternating partial sums
 * per cell, so consecutive samples do not wait for each other) and added once. */

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
#undef SL__SIFT_V2TAP

const sl__sift_kernels SL__SIFT_CAT(sl__sift_kernels_, SL__SIFT_SUFFIX) = {
    SL__SIFT_NAME(blur_rows),
    SL__SIFT_NAME(extrema_row),
    SL__SIFT_NAME(grad),
    SL__SIFT_NAME(desc_spread),
    SL__SIFT_NAME(dense_row),
};
