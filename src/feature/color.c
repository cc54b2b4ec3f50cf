/*
 * feature/color.c - joint HSV colour histogram, centre-weighted, Hellinger-normalized.
 *
 * The histogram follows the classic colour indexing of Swain & Ballard (IJCV 1991) in HSV, with
 * three choices that make it robust for product photos:
 *  - soft (trilinear) assignment over (H, S, V), hue circular, so a small colour shift moves mass
 *    between neighbouring bins instead of jumping;
 *  - achromatic pixels (saturation < low_sat) go to separate value-only bins: their hue is noise;
 *  - a Gaussian weight centred on the image (sigma in half-sides) so the product, which is usually
 *    centred, counts more than the background.
 * Normalization: L1 then element-wise square root (Hellinger kernel; Arandjelovic & Zisserman
 * 2012 use the same map for RootSIFT), so the result has unit L2 norm and a dot product is the
 * Bhattacharyya coefficient. With grid g > 1, g x g region histograms (unweighted) follow the
 * global one; every block is normalized alone and the whole vector scaled back to unit norm.
 * Invariants: output is finite, non-negative, unit L2 norm (or all zero for an empty image is
 * impossible: empty images are rejected). Deterministic, no allocation.
 *
 * Speed (it runs on every search query): on CPUs with AVX2 the soft bins of 8 sampled pixels are
 * computed at once (color_bins8_avx2), then added one pixel at a time. The output is bit-identical
 * to the portable per-pixel path (tests/test_feature.c keeps the original as a reference):
 *  - every value is computed with the same IEEE float operations in the same order (true
 *    divisions, no reciprocal approximations, no FMA: the AVX2 code is compiled without "fma"
 *    and the build's -std=c11 keeps contraction off in the scalar code);
 *  - every histogram bin receives the same additions in the same order: pixels are added in
 *    sampling order, and only the order between chromatic and achromatic pixels of one group of
 *    8 changes, which touch disjoint bins (the chromatic bins, then the vbins achromatic ones);
 *  - a region histogram adds 1.0f * whs * wss * wvs, computed as whs * wss * wvs (1.0f * x == x);
 *  - a chromatic pixel's two value-bin additions are one 2-float add on bins vs[0], vs[0] + 1:
 *    where the value is clamped (vs[1] == vs[0]) the second weight is +0, which leaves any bin
 *    (all are >= +0) unchanged, so it may land on vs[0] + 1 instead (color_group_add).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "shoplens/feature.h"
#include "feature/features_internal.h"
#include "util/util.h"

void sl_color_params_init(sl_color_params *p) {
    p->hbins = SL_COLOR_BINS_DEFAULT_H;
    p->sbins = SL_COLOR_BINS_DEFAULT_S;
    p->vbins = SL_COLOR_BINS_DEFAULT_V;
    p->center_sigma = SL_COLOR_CENTER_DEFAULT;
    p->grid = SL_COLOR_GRID_DEFAULT;
    p->low_sat = 0.1f;
}

static int color_params_ok(const sl_color_params *p) {
    return p && p->hbins >= SL_COLOR_BINS_MIN && p->hbins <= SL_COLOR_BINS_MAX &&
           p->sbins >= SL_COLOR_BINS_MIN && p->sbins <= SL_COLOR_BINS_MAX &&
           p->vbins >= SL_COLOR_BINS_MIN && p->vbins <= SL_COLOR_BINS_MAX &&
           p->grid >= 1 && p->grid <= SL_COLOR_GRID_MAX &&
           p->center_sigma >= SL_COLOR_CENTER_MIN && p->low_sat >= 0.0f && p->low_sat < 1.0f &&
           !(p->center_sigma != p->center_sigma);
}

static size_t block_dim(const sl_color_params *p) {
    return (size_t)p->hbins * (size_t)p->sbins * (size_t)p->vbins + (size_t)p->vbins;
}

size_t sl_color_dim(const sl_color_params *p) {
    if (!color_params_ok(p)) return 0;
    size_t blocks = p->grid > 1 ? 1 + (size_t)p->grid * (size_t)p->grid : 1;
    return block_dim(p) * blocks;
}

/* Splits v in [0, n) (bin units, centres at i + 0.5) into two bins and weights; clamped ends. */
static void soft_lin(float v, int n, int *b0, int *b1, float *w1) {
    float t = v - 0.5f;
    if (t <= 0.0f) { *b0 = *b1 = 0; *w1 = 0.0f; return; }
    if (t >= (float)(n - 1)) { *b0 = *b1 = n - 1; *w1 = 0.0f; return; }
    int i = (int)t;
    *b0 = i; *b1 = i + 1; *w1 = t - (float)i;
}

/* Columns sampled per row at most: step = ceil(side / 256), so ceil(w / step) <= 256; rounded
 * up to whole groups of 8 for the AVX2 path. */
enum { COLS_MAX = 256, COLS_PAD = COLS_MAX + 8 };

/* What one call needs to add a sampled row: parameters, geometry and per-column tables. */
typedef struct color_ctx {
    const sl_color_params *p;
    int ch, ncols;
    size_t chrom;             /* hbins * sbins * vbins: first achromatic bin of a block */
    float lut[256];           /* lut[k] == k / 255.0f (the same division, done once) */
    size_t colx[COLS_MAX];    /* byte offset of sampled column i in a row */
    size_t rcol[COLS_MAX];    /* float offset of column i's region block, without the row part */
    _Alignas(32) float wcol[COLS_PAD]; /* Gaussian weight of column i (0 past ncols) */
} color_ctx;

/* A pixel's soft bins: achromatic (value bins only) or chromatic (2 x 2 x 2 HSV bins), with
 * the per-axis weights; computed once and added to the global and the region histogram. */
typedef struct pixel_bins {
    int achrom;
    int hs[2], ss[2], vs[2];
    float whs[2], wss[2], wvs[2];
} pixel_bins;

static void pixel_bins_of(const color_ctx *cx, const uint8_t *px, pixel_bins *pb) {
    const sl_color_params *p = cx->p;
    float r, g, b;
    if (cx->ch >= 3) { r = cx->lut[px[0]]; g = cx->lut[px[1]]; b = cx->lut[px[2]]; }
    else { r = g = b = cx->lut[px[0]]; }
    float mx = r > g ? (r > b ? r : b) : (g > b ? g : b);
    float mn = r < g ? (r < b ? r : b) : (g < b ? g : b);
    float v = mx, d = mx - mn;
    float s = mx > 0.0f ? d / mx : 0.0f;
    int v0, v1; float wv;
    soft_lin(v * (float)p->vbins, p->vbins, &v0, &v1, &wv);
    pb->vs[0] = v0; pb->vs[1] = v1;
    pb->wvs[0] = 1.0f - wv; pb->wvs[1] = wv;
    pb->achrom = s < p->low_sat || d <= 0.0f;
    if (pb->achrom) return;
    float hue; /* [0, 6) */
    if (mx == r) hue = (g - b) / d;
    else if (mx == g) hue = 2.0f + (b - r) / d;
    else hue = 4.0f + (r - g) / d;
    if (hue < 0.0f) hue += 6.0f;
    float hb = hue / 6.0f * (float)p->hbins - 0.5f; /* circular */
    if (hb < 0.0f) hb += (float)p->hbins;
    int h0 = (int)hb;
    if (h0 >= p->hbins) h0 = p->hbins - 1;
    float wh = hb - (float)h0;
    int s0, s1; float ws;
    soft_lin(s * (float)p->sbins, p->sbins, &s0, &s1, &ws);
    pb->hs[0] = h0; pb->hs[1] = (h0 + 1) % p->hbins;
    pb->ss[0] = s0; pb->ss[1] = s1;
    pb->whs[0] = 1.0f - wh; pb->whs[1] = wh;
    pb->wss[0] = 1.0f - ws; pb->wss[1] = ws;
}

static void add_pixel(float *h, const color_ctx *cx, const pixel_bins *pb, float w) {
    const sl_color_params *p = cx->p;
    if (pb->achrom) {
        h[cx->chrom + (size_t)pb->vs[0]] += w * pb->wvs[0];
        h[cx->chrom + (size_t)pb->vs[1]] += w * pb->wvs[1];
        return;
    }
    for (int a = 0; a < 2; a++)
        for (int c = 0; c < 2; c++)
            for (int e = 0; e < 2; e++) {
                size_t idx = ((size_t)pb->hs[a] * (size_t)p->sbins + (size_t)pb->ss[c]) *
                             (size_t)p->vbins + (size_t)pb->vs[e];
                h[idx] += w * pb->whs[a] * pb->wss[c] * pb->wvs[e];
            }
}

/* Portable path: one sampled row, pixel by pixel. reg: this row's region blocks (grid > 1) or
 * NULL; column i adds to reg + rcol[i]. */
static void color_row_scalar(const color_ctx *cx, const uint8_t *row, float wrow, float *out,
                             float *reg) {
    for (int i = 0; i < cx->ncols; i++) {
        pixel_bins pb;
        pixel_bins_of(cx, row + cx->colx[i], &pb);
        add_pixel(out, cx, &pb, wrow * cx->wcol[i]);
        if (reg) add_pixel(reg + cx->rcol[i], cx, &pb, 1.0f);
    }
}

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define SL__COLOR_AVX2 1
/* AVX2 only, not "fma": the compiler may not fuse a product into a sum (add_pixel rounds both). */
#define SL__AVX2_TARGET __attribute__((target("avx2")))

/* The additions of 8 pixels. Slot k = a * 4 + c * 2 + e is the k-th addition of add_pixel for a
 * chromatic pixel; an achromatic one uses slots 0 and 1 (value bins vs[0], vs[1]). idx[k][lane]
 * is the bin within a block; the weights go by slot pairs m = k / 2 (the two value bins), lane
 * by lane: wg[m][2 lane + e] the global weight w * whs * wss * wvs (w * wvs when achromatic),
 * wr the region weight (w = 1). */
typedef struct color_group {
    _Alignas(32) int32_t idx[8][8];
    _Alignas(32) float wg[4][16];
    _Alignas(32) float wr[4][16];
} color_group;

/* Stores x0, x1 (slot 2m and 2m + 1 of 8 lanes) as 8 pairs (x0[lane], x1[lane]). */
SL__AVX2_TARGET static inline void store_pairs(float *dst, __m256 x0, __m256 x1) {
    __m256 lo = _mm256_unpacklo_ps(x0, x1), hi = _mm256_unpackhi_ps(x0, x1); /* lanes 0 1 4 5, 2 3 6 7 */
    _mm256_store_ps(dst, _mm256_permute2f128_ps(lo, hi, 0x20));
    _mm256_store_ps(dst + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
}

/* soft_lin on 8 lanes: bins b0, b1 and weight w1 of v (bin units) over n bins. */
SL__AVX2_TARGET static inline void soft_lin8(__m256 v, int n, __m256i *b0, __m256i *b1,
                                             __m256 *w1) {
    const __m256 zero = _mm256_setzero_ps();
    __m256 t = _mm256_sub_ps(v, _mm256_set1_ps(0.5f));
    __m256 lo = _mm256_cmp_ps(t, zero, _CMP_LE_OQ);
    __m256 hi = _mm256_andnot_ps(lo, _mm256_cmp_ps(t, _mm256_set1_ps((float)(n - 1)), _CMP_GE_OQ));
    __m256i i = _mm256_cvttps_epi32(t); /* t > 0 where used: truncation == (int)t */
    __m256 w = _mm256_sub_ps(t, _mm256_cvtepi32_ps(i));
    __m256i i1 = _mm256_add_epi32(i, _mm256_set1_epi32(1));
    __m256i ilo = _mm256_castps_si256(lo), ihi = _mm256_castps_si256(hi);
    __m256i last = _mm256_set1_epi32(n - 1);
    i = _mm256_andnot_si256(ilo, _mm256_blendv_epi8(i, last, ihi));
    i1 = _mm256_andnot_si256(ilo, _mm256_blendv_epi8(i1, last, ihi));
    *b0 = i; *b1 = i1;
    *w1 = _mm256_andnot_ps(_mm256_or_ps(lo, hi), w);
}

/* pixel_bins_of and the products of add_pixel for 8 pixels (r, g, b in [0, 1], w = the centre
 * weights). Same operations as the scalar code lane by lane; achromatic lanes get hue 0 so
 * nothing undefined is converted. Returns the achromatic lanes as a bit mask. */
SL__AVX2_TARGET static unsigned color_bins8_avx2(const sl_color_params *p, __m256 r, __m256 g,
                                                 __m256 b, __m256 w, size_t chrom,
                                                 color_group *out) {
    const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
    __m256 mx = _mm256_max_ps(_mm256_max_ps(r, g), b);
    __m256 mn = _mm256_min_ps(_mm256_min_ps(r, g), b);
    __m256 d = _mm256_sub_ps(mx, mn);
    __m256 s = _mm256_and_ps(_mm256_cmp_ps(mx, zero, _CMP_GT_OQ), _mm256_div_ps(d, mx));
    __m256i v0, v1, s0, s1;
    __m256 wv, ws;
    soft_lin8(_mm256_mul_ps(mx, _mm256_set1_ps((float)p->vbins)), p->vbins, &v0, &v1, &wv);
    __m256 achrom = _mm256_or_ps(_mm256_cmp_ps(s, _mm256_set1_ps(p->low_sat), _CMP_LT_OQ),
                                 _mm256_cmp_ps(d, zero, _CMP_LE_OQ));
    /* hue in [0, 6): (g - b) / d if mx == r, else 2 + (b - r) / d if mx == g, else 4 + (r - g) / d */
    __m256 isr = _mm256_cmp_ps(mx, r, _CMP_EQ_OQ), isg = _mm256_cmp_ps(mx, g, _CMP_EQ_OQ);
    __m256 num = _mm256_blendv_ps(_mm256_blendv_ps(_mm256_sub_ps(r, g), _mm256_sub_ps(b, r), isg),
                                  _mm256_sub_ps(g, b), isr);
    __m256 q = _mm256_div_ps(num, d);
    __m256 hue = _mm256_blendv_ps(
        _mm256_add_ps(_mm256_blendv_ps(_mm256_set1_ps(4.0f), _mm256_set1_ps(2.0f), isg), q), q, isr);
    hue = _mm256_andnot_ps(achrom, hue);
    hue = _mm256_blendv_ps(hue, _mm256_add_ps(hue, _mm256_set1_ps(6.0f)),
                           _mm256_cmp_ps(hue, zero, _CMP_LT_OQ));
    __m256 nh = _mm256_set1_ps((float)p->hbins);
    __m256 hb = _mm256_sub_ps(_mm256_mul_ps(_mm256_div_ps(hue, _mm256_set1_ps(6.0f)), nh),
                              _mm256_set1_ps(0.5f));
    hb = _mm256_blendv_ps(hb, _mm256_add_ps(hb, nh), _mm256_cmp_ps(hb, zero, _CMP_LT_OQ));
    __m256i h0 = _mm256_min_epi32(_mm256_cvttps_epi32(hb), _mm256_set1_epi32(p->hbins - 1));
    __m256 wh = _mm256_sub_ps(hb, _mm256_cvtepi32_ps(h0));
    __m256i h1 = _mm256_add_epi32(h0, _mm256_set1_epi32(1)); /* (h0 + 1) % hbins */
    h1 = _mm256_andnot_si256(_mm256_cmpeq_epi32(h1, _mm256_set1_epi32(p->hbins)), h1);
    soft_lin8(_mm256_mul_ps(s, _mm256_set1_ps((float)p->sbins)), p->sbins, &s0, &s1, &ws);

    __m256i hs[2] = {h0, h1}, ss[2] = {s0, s1}, vs[2] = {v0, v1};
    __m256 whs[2] = {_mm256_sub_ps(one, wh), wh}, wss[2] = {_mm256_sub_ps(one, ws), ws};
    __m256 wvs[2] = {_mm256_sub_ps(one, wv), wv};
    __m256i nsb = _mm256_set1_epi32(p->sbins), nvb = _mm256_set1_epi32(p->vbins);
    /* achromatic lanes: slots 0 and 1 add w * wvs[e] (region: wvs[e]) to bin chrom + vs[e] */
    __m256i ia = _mm256_castps_si256(achrom), nc = _mm256_set1_epi32((int)chrom);
    for (int a = 0; a < 2; a++) {
        __m256i hrow = _mm256_mullo_epi32(hs[a], nsb);
        __m256 ga = _mm256_mul_ps(w, whs[a]);                   /* (w * whs) */
        for (int c = 0; c < 2; c++) {
            __m256i base = _mm256_mullo_epi32(_mm256_add_epi32(hrow, ss[c]), nvb);
            __m256 gac = _mm256_mul_ps(ga, wss[c]);             /* (w * whs) * wss */
            __m256 rac = _mm256_mul_ps(whs[a], wss[c]);         /* (1 * whs) * wss */
            int m = a * 2 + c;
            __m256 wg[2], wr[2];
            for (int e = 0; e < 2; e++) {
                __m256i idx = _mm256_add_epi32(base, vs[e]);
                wg[e] = _mm256_mul_ps(gac, wvs[e]);
                wr[e] = _mm256_mul_ps(rac, wvs[e]);
                if (m == 0) {
                    idx = _mm256_blendv_epi8(idx, _mm256_add_epi32(nc, vs[e]), ia);
                    wg[e] = _mm256_blendv_ps(wg[e], _mm256_mul_ps(w, wvs[e]), achrom);
                    wr[e] = _mm256_blendv_ps(wr[e], wvs[e], achrom);
                }
                _mm256_store_si256((__m256i *)(void *)out->idx[2 * m + e], idx);
            }
            store_pairs(out->wg[m], wg[0], wg[1]);
            store_pairs(out->wr[m], wr[0], wr[1]);
        }
    }
    return (unsigned)_mm256_movemask_ps(achrom);
}

/* h[0] += w[0], h[1] += w[1] in one 2-float load, add and store (64-bit moves that need no
 * alignment: h is any bin). */
SL__AVX2_TARGET static inline void add_pair(float *h, const float *w) {
    __m128 v = _mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)(const void *)h));
    v = _mm_add_ps(v, _mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)(const void *)w)));
    _mm_storel_epi64((__m128i *)(void *)h, _mm_castps_si128(v));
}

/* Adds the chromatic pixels of `lanes` (a bit per lane, ascending = sampling order) with their
 * 8 additions in slot order, two at a time: slots 2m and 2m + 1 go to the value bins vs[0] and
 * vs[1] of one (hue, saturation) cell, which are idx[2m] and idx[2m] + 1 - except when the value
 * is clamped to an end bin, where vs[1] == vs[0] and the second weight is +0: adding +0 to bin
 * idx[2m] (the original) or to bin idx[2m] + 1 (a bin of the same block, as here) leaves either
 * unchanged, as every bin is >= +0. So every bin gets the same additions in the same order.
 * reg as color_row_scalar, rcol the columns of the group. */
SL__AVX2_TARGET static inline void color_group_add(const color_group *gr, unsigned lanes, float *out,
                                                   float *reg, const size_t *rcol) {
    for (; lanes; lanes &= lanes - 1) {
        int j = __builtin_ctz(lanes);
        for (int m = 0; m < 4; m++) add_pair(out + gr->idx[2 * m][j], gr->wg[m] + 2 * j);
        if (!reg) continue;
        float *rb = reg + rcol[j];
        for (int m = 0; m < 4; m++) add_pair(rb + gr->idx[2 * m][j], gr->wr[m] + 2 * j);
    }
}

/* h[i0] += w0 then h[i1] += w1, with one round trip through memory when i0 == i1: the usual
 * achromatic pixel, a white or black background clamps both value bins to the end one, and
 * the store-to-load latency of such runs bounds the speed. (Chromatic pixels gain nothing.) */
static inline void add2(float *h, int32_t i0, int32_t i1, float w0, float w1) {
    float v0 = h[i0] + w0, v1 = i1 == i0 ? v0 : h[i1];
    h[i0] = v0;
    h[i1] = v1 + w1;
}

/* Adds the achromatic pixels of `lanes` (slots 0 and 1), as color_group_add. */
static inline void color_group_add_achrom(const color_group *gr, unsigned lanes, float *out,
                                          float *reg, const size_t *rcol) {
    for (; lanes; lanes &= lanes - 1) {
        int j = __builtin_ctz(lanes);
        int32_t i0 = gr->idx[0][j], i1 = gr->idx[1][j];
        add2(out, i0, i1, gr->wg[0][2 * j], gr->wg[0][2 * j + 1]);
        if (reg) add2(reg + rcol[j], i0, i1, gr->wr[0][2 * j], gr->wr[0][2 * j + 1]);
    }
}

/* AVX2 path of color_row_scalar: the row's samples as floats, then groups of 8 pixels. Within a
 * group the chromatic pixels are added before the achromatic ones (disjoint bins). */
SL__AVX2_TARGET static void color_row_avx2(const color_ctx *cx, const uint8_t *row, float wrow,
                                           float *out, float *reg) {
    _Alignas(32) float rf[COLS_PAD], gf[COLS_PAD], bf[COLS_PAD];
    int n = cx->ncols, npad = (n + 7) & ~7;
    for (int i = 0; i < n; i++) {
        const uint8_t *px = row + cx->colx[i];
        if (cx->ch >= 3) { rf[i] = cx->lut[px[0]]; gf[i] = cx->lut[px[1]]; bf[i] = cx->lut[px[2]]; }
        else rf[i] = gf[i] = bf[i] = cx->lut[px[0]];
    }
    for (int i = n; i < npad; i++) rf[i] = gf[i] = bf[i] = 0.0f; /* black: not added anyway */
    __m256 vrow = _mm256_set1_ps(wrow);
    for (int i0 = 0; i0 < n; i0 += 8) {
        color_group gr;
        __m256 w = _mm256_mul_ps(vrow, _mm256_load_ps(cx->wcol + i0)); /* wrow * wcol[i] */
        unsigned ach = color_bins8_avx2(cx->p, _mm256_load_ps(rf + i0), _mm256_load_ps(gf + i0),
                                        _mm256_load_ps(bf + i0), w, cx->chrom, &gr);
        unsigned valid = n - i0 >= 8 ? 0xffu : (1u << (n - i0)) - 1u;
        const size_t *rcol = cx->rcol + i0;
        color_group_add(&gr, valid & ~ach, out, reg, rcol);
        color_group_add_achrom(&gr, valid & ach, out, reg, rcol);
    }
}

#endif

/* L1 -> sqrt; returns 1 when the block had mass. */
static int hellinger(float *h, size_t n) {
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) sum += h[i];
    if (!(sum > 0.0)) return 0;
    for (size_t i = 0; i < n; i++) h[i] = (float)sqrt(h[i] / sum);
    return 1;
}

sl_status sl__color_hist_impl(const sl_image *img, const sl_color_params *p, float *out,
                              int simd, sl_error *err) {
    if (!img || !out) return sl__err_set(err, SL_E_INVALID, "color: NULL image or output");
    if (!color_params_ok(p))
        return sl__err_set(err, SL_E_INVALID, "color: parameters out of range (bins %d..%d, "
                           "grid 1..%d, centre sigma >= %.2f)", SL_COLOR_BINS_MIN,
                           SL_COLOR_BINS_MAX, SL_COLOR_GRID_MAX, (double)SL_COLOR_CENTER_MIN);
    int w = sl_image_width(img), hgt = sl_image_height(img), ch = sl_image_channels(img);
    if (w <= 0 || hgt <= 0) return sl__err_set(err, SL_E_INVALID, "color: empty image");
    const uint8_t *pix = sl_image_cpixels(img);
    size_t stride = sl_image_stride(img);
    size_t bd = block_dim(p), dim = sl_color_dim(p);
    memset(out, 0, dim * sizeof *out);
    int side = w > hgt ? w : hgt;
    int step = (side + 255) / 256;
    int g = p->grid;
    float cx = (float)(w - 1) * 0.5f, cy = (float)(hgt - 1) * 0.5f;
    float hx = w > 1 ? (float)w * 0.5f : 1.0f, hy = hgt > 1 ? (float)hgt * 0.5f : 1.0f;
    int weighted = p->center_sigma < SL_COLOR_CENTER_MAX;
    float inv2s2 = 1.0f / (2.0f * p->center_sigma * p->center_sigma);
    color_ctx ctx;
    ctx.p = p;
    ctx.ch = ch;
    ctx.chrom = (size_t)p->hbins * (size_t)p->sbins * (size_t)p->vbins;
    for (int k = 0; k < 256; k++) ctx.lut[k] = (float)k / 255.0f;
    /* per sampled column (at most 256: step = ceil(side / 256)): its byte offset, region column
     * and Gaussian weight, which is separable: one exp per sampled column and one per row */
    int n = 0;
    for (int x = step / 2; x < w && n < COLS_MAX; x += step, n++) {
        float dx = ((float)x - cx) / hx;
        ctx.wcol[n] = weighted ? expf(-(dx * dx) * inv2s2) : 1.0f;
        ctx.colx[n] = (size_t)x * (size_t)ch;
        ctx.rcol[n] = g > 1 ? bd * (size_t)(1 + (int)((int64_t)x * g / w)) : 0;
    }
    ctx.ncols = n;
    for (int i = n; i < COLS_PAD; i++) ctx.wcol[i] = 0.0f;
#ifdef SL__COLOR_AVX2
    int avx2 = simd && sl__cpu_avx2();
#else
    (void)simd;
#endif
    for (int y = step / 2; y < hgt; y += step) {
        const uint8_t *row = pix + (size_t)y * stride;
        float dy = ((float)y - cy) / hy;
        float wrow = weighted ? expf(-(dy * dy) * inv2s2) : 1.0f;
        int gy = g > 1 ? (int)((int64_t)y * g / hgt) : 0;
        float *reg = g > 1 ? out + bd * (size_t)(gy * g) : NULL; /* + rcol[i]: block 1 + gy*g + gx */
#ifdef SL__COLOR_AVX2
        if (avx2) { color_row_avx2(&ctx, row, wrow, out, reg); continue; }
#endif
        color_row_scalar(&ctx, row, wrow, out, reg);
    }
    size_t blocks = dim / bd, live = 0;
    for (size_t b = 0; b < blocks; b++) live += (size_t)hellinger(out + b * bd, bd);
    if (live > 1) {
        float sc = 1.0f / sqrtf((float)live);
        for (size_t i = 0; i < dim; i++) out[i] *= sc;
    }
    return SL_OK;
}

sl_status sl_color_hist(const sl_image *img, const sl_color_params *p, float *out,
                        sl_error *err) {
    return sl__color_hist_impl(img, p, out, 1, err);
}
