/*
 * image/preprocess.c - resize (area averaging down, bilinear up), greyscale, Gaussian and median
 * denoise, global histogram equalization, CLAHE and float normalization, in plain C on sl_image.
 *
 * Resampling is separable: for each output column/row a short list of (first source index,
 * weights) is computed once; shrinking uses the exact overlap of the output pixel's footprint with
 * each source pixel (box/area filter, what OpenCV calls INTER_AREA), enlarging uses bilinear
 * weights with pixel centres aligned ((i + 0.5) / scale - 0.5). Weights of every output sum to 1.
 * CLAHE follows K. Zuiderveld, "Contrast Limited Adaptive Histogram Equalization", Graphics Gems
 * IV, 1994: per-tile clipped histograms, excess redistributed evenly, bilinear interpolation of
 * the four neighbouring tile mappings. Colour images are equalized on the luma of full-range
 * YCbCr (JPEG/Rec. 601), chroma kept, so hue does not shift.
 * Invariants: sources are never modified; every output is a new image or nothing.
 */
#include "image/image_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Kernels written with AVX2 intrinsics (greyscale, the resampler's float-to-byte step), run
 * after a CPU check (sl__cpu_avx2) with the portable loop as the fallback. */
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define SL__AVX2 1
#endif

/* ---- separable resampling -------------------------------------------------------------- */

sl__contrib *sl__contribs(int n_src, int n_dst, float **pool) {
    double scale = (double)n_dst / n_src;
    int maxc = scale < 1.0 ? (int)ceil(1.0 / scale) + 2 : 2;
    sl__contrib *c = sl__mallocarray((size_t)n_dst, sizeof *c);
    float *w = sl__mallocarray((size_t)n_dst * (size_t)maxc, sizeof *w);
    if (!c || !w) { free(c); free(w); return NULL; }
    for (int i = 0; i < n_dst; i++) {
        float *wi = w + (size_t)i * maxc;
        c[i].w = wi;
        if (scale < 1.0) { /* area: output pixel covers [i/scale, (i+1)/scale) */
            double a = i / scale, b = (i + 1) / scale;
            if (b > n_src) b = n_src;
            int first = (int)floor(a), last = (int)ceil(b) - 1;
            if (last >= n_src) last = n_src - 1;
            if (last - first + 1 > maxc) last = first + maxc - 1;
            double tot = 0;
            for (int k = first; k <= last; k++) {
                double lo = k > a ? k : a, hi = k + 1 < b ? k + 1 : b;
                wi[k - first] = (float)(hi - lo > 0 ? hi - lo : 0);
                tot += wi[k - first];
            }
            for (int k = 0; k <= last - first; k++) wi[k] = (float)(wi[k] / tot);
            c[i].first = first;
            c[i].count = last - first + 1;
        } else { /* bilinear (identity when scale == 1) */
            double x = (i + 0.5) / scale - 0.5;
            if (x < 0) x = 0;
            if (x > n_src - 1) x = n_src - 1;
            int x0 = (int)floor(x);
            double f = x - x0;
            if (x0 >= n_src - 1) { x0 = n_src - 1; f = 0; }
            c[i].first = x0;
            c[i].count = f > 0 ? 2 : 1;
            wi[0] = (float)(1.0 - f);
            wi[1] = (float)f;
        }
    }
    *pool = w;
    return c;
}

/* The resampler's loops are also compiled for AVX2 and picked at load time (GCC function
 * multi-versioning): the same float operations in the same order, 8 lanes instead of 4, so every
 * clone gives the same pixels. */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__) && !defined(SL_SANITIZE)
#define SL__RESAMPLE_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define SL__RESAMPLE_CLONES
#endif

/* Horizontal pass of one 1-channel float row (sw floats) into dw floats. */
SL__RESAMPLE_CLONES static void sl__hpass(const float *row, int dw, const sl__contrib *cx, float *t) {
    for (int x = 0; x < dw; x++) {
        const float *p = row + cx[x].first, *w = cx[x].w;
        float a = 0;
        for (int j = 0; j < cx[x].count; j++) a += w[j] * p[j];
        t[x] = a;
    }
}

/* The horizontal pass of a 3-channel row as a table: every output pixel reads exactly k source
 * pixels (k the longest contribution list); a shorter list is padded with weight 0 on its own
 * first pixel, which adds +0 to a sum that is >= +0 (sources are finite and >= 0, weights >= 0),
 * so the sums keep their bits. Output pixels go in pairs (an odd width gets a phantom last
 * pixel, a copy of the one before, written to the row's spare floats): off[(x / 2) * 2k + 2j + q]
 * is the float offset in the row of tap j of pixel x = 2 (x / 2) + q, and wt[((x / 2) * k + j) * 8
 * + 4 q + i] (i = 0..3) its weight, repeated for the 4 lanes the pixel takes. */
typedef struct { int k; int *off; float *wt; } sl__htab;

static int sl__htab_make(const sl__contrib *cx, int dw, sl__htab *tb) {
    int k = 1;
    for (int x = 0; x < dw; x++) k = cx[x].count > k ? cx[x].count : k;
    size_t pairs = ((size_t)dw + 1) / 2;
    tb->k = k;
    tb->off = sl__mallocarray(pairs * 2 * (size_t)k, sizeof *tb->off);
    tb->wt = sl__mallocarray(pairs * 8 * (size_t)k, sizeof *tb->wt);
    if (!tb->off || !tb->wt) { free(tb->off); free(tb->wt); return -1; }
    for (size_t pr = 0; pr < pairs; pr++)
        for (int q = 0; q < 2; q++) {
            int x = (int)(2 * pr) + q < dw ? (int)(2 * pr) + q : dw - 1;
            for (int j = 0; j < k; j++) {
                int in = j < cx[x].count;
                size_t tap = pr * (size_t)k + (size_t)j;
                tb->off[tap * 2 + (size_t)q] = (cx[x].first + (in ? j : 0)) * 3;
                for (int i = 0; i < 4; i++) tb->wt[tap * 8 + 4 * (size_t)q + (size_t)i] = in ? cx[x].w[j] : 0.0f;
            }
        }
    return 0;
}

/* 4 and 8 floats (GCC/Clang vector extension; an xmm and, with AVX, a ymm register): one and
 * two output pixels, each its 3 channels and one float past them, whose lane is computed but
 * never kept. */
typedef float sl__v4f __attribute__((vector_size(16)));
typedef float sl__v8f __attribute__((vector_size(32)));

/* A pair of output pixels of K taps: a = 0, then a += w_j * p_j for j = 0..K-1, per channel
 * (the same float operations in the same order as the scalar a0 / a1 / a2 loop). Each pixel
 * stores 4 floats, the first pixel before the second, which overwrites the spare lane; the
 * second's spare lane is overwritten by the next pair, or lands in the row's spare floats. */
#define SL__HPASS3_BODY(K)                                                                     \
    for (int x = 0; x < dw; x += 2, off += 2 * (K), wt += 8 * (K)) {                        \
        sl__v8f a = { 0, 0, 0, 0, 0, 0, 0, 0 };                                              \
        _Pragma("GCC unroll 4")                                                              \
        for (int j = 0; j < (K); j++) {                                                      \
            sl__v4f p0, p1;                                                                  \
            sl__v8f w;                                                                       \
            memcpy(&p0, row + off[2 * j], sizeof p0);                                        \
            memcpy(&p1, row + off[2 * j + 1], sizeof p1);                                    \
            memcpy(&w, wt + 8 * j, sizeof w);                                                \
            a += w * __builtin_shufflevector(p0, p1, 0, 1, 2, 3, 4, 5, 6, 7);                \
        }                                                                                    \
        memcpy(t + (size_t)x * 3, &a, 4 * sizeof(float));                                    \
        memcpy(t + (size_t)x * 3 + 3, (float *)&a + 4, 4 * sizeof(float));                   \
    }

/* Horizontal pass of a 3-channel row (sw * 3 floats plus one readable spare) into dw * 3 floats
 * plus 4 spare. */
SL__RESAMPLE_CLONES static void sl__hpass3(const float *row, int dw, const sl__htab *tb, float *t) {
    const int *off = tb->off;
    const float *wt = tb->wt;
    switch (tb->k) {
    case 1: SL__HPASS3_BODY(1) break;
    case 2: SL__HPASS3_BODY(2) break;
    case 3: SL__HPASS3_BODY(3) break;
    case 4: SL__HPASS3_BODY(4) break;
    default: {
        const int k = tb->k;
        SL__HPASS3_BODY(k)
    }
    }
}
#undef SL__HPASS3_BODY

#ifdef SL__AVX2
/* The resampler's last step, o[i] = (uint8_t)(int)min(max(f[i] + 0.5f, 0), 255), 32 values a
 * step; returns how many were done (the caller finishes). max_ps(v, 0) is v > 0 ? v : 0 and
 * min_ps(v, 255) is v < 255 ? v : 255, as in the loop, NaN included; the integers are 0..255,
 * so the saturating packs keep them. */
__attribute__((target("avx2"))) static size_t sl__to_u8_avx2(const float *f, uint8_t *o, size_t n) {
    const __m256 half = _mm256_set1_ps(0.5f), zero = _mm256_setzero_ps(), top = _mm256_set1_ps(255.0f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i q[4];
        for (int k = 0; k < 4; k++) {
            __m256 v = _mm256_add_ps(_mm256_loadu_ps(f + i + 8 * (size_t)k), half);
            q[k] = _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(v, zero), top));
        }
        /* dwords of q0 q1 -> words 0-3 8-11 | 4-7 12-15; then bytes in dword groups
         * 0 8 16 24 | 4 12 20 28 (each 4 values), put back in order by the permutation */
        __m256i w01 = _mm256_packus_epi32(q[0], q[1]), w23 = _mm256_packus_epi32(q[2], q[3]);
        __m256i b = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(w01, w23), order);
        _mm256_storeu_si256((__m256i *)(void *)(o + i), b);
    }
    return i;
}
#endif

/* Resizes src to exactly dw x dh: for each output row, the vertical pass sums the source rows it
 * reads into one float row (contiguous, vectorizes), then the horizontal pass filters that row
 * into the output. Working set: one float row of the source width. */
SL__RESAMPLE_CLONES static sl_status sl__resize_exact(const sl_image *src, int dw, int dh, sl_image **out,
                                                      sl_error *err) {
    if (dw < 1 || dh < 1 || dw > SL_IMAGE_MAX_SIDE_MAX || dh > SL_IMAGE_MAX_SIDE_MAX)
        return sl__err_set(err, SL_E_INVALID, "resize: target %dx%d out of range", dw, dh);
    int c = src->channels, sw = src->width, sh = src->height;
    size_t srclen = (size_t)sw * c, rowlen = (size_t)dw * c;
    sl_image *dst = sl__image_alloc(dw, dh, c); /* every row is written */
    float *px = NULL, *py = NULL;
    sl__contrib *cx = sl__contribs(sw, dw, &px), *cy = cx ? sl__contribs(sh, dh, &py) : NULL;
    /* spare floats after each row: the 3-channel pass reads 4 floats a pixel, writes 4 floats
     * a pixel of an even number of them */
    float *acc = sl__mallocarray(srclen + 1, sizeof *acc), *orow = sl__mallocarray(rowlen + 4, sizeof *orow);
    sl__htab tb = { 0, NULL, NULL };
    int tab_fail = cx && c == 3 && sl__htab_make(cx, dw, &tb);
    if (!dst || !cx || !cy || !acc || !orow || tab_fail) {
        sl_image_free(dst); free(cx); free(px); free(cy); free(py); free(acc); free(orow);
        free(tb.off); free(tb.wt);
        return sl__err_set(err, SL_E_NOMEM, "resize: out of memory for %dx%d", dw, dh);
    }
    acc[srclen] = 0.0f;
#ifdef SL__AVX2
    int avx2 = sl__cpu_avx2();
#endif
    for (int y = 0; y < dh; y++) {
        float *restrict ac = acc;
        const uint8_t *restrict r0 = src->data + (size_t)cy[y].first * src->stride;
        const float *wy = cy[y].w;
        /* ac = w0 r0, then ac += wj rj for each further row, in one pass per element for the
         * usual 1..3 rows (the same operations in the same order as a pass per row) */
        switch (cy[y].count) {
        case 1:
            for (size_t i = 0; i < srclen; i++) ac[i] = wy[0] * r0[i];
            break;
        case 2: {
            const uint8_t *restrict r1 = r0 + src->stride;
            for (size_t i = 0; i < srclen; i++) {
                float a = wy[0] * r0[i];
                a += wy[1] * r1[i];
                ac[i] = a;
            }
            break;
        }
        case 3: {
            const uint8_t *restrict r1 = r0 + src->stride, *restrict r2 = r1 + src->stride;
            for (size_t i = 0; i < srclen; i++) {
                float a = wy[0] * r0[i];
                a += wy[1] * r1[i];
                a += wy[2] * r2[i];
                ac[i] = a;
            }
            break;
        }
        default: {
            float w0 = wy[0];
            for (size_t i = 0; i < srclen; i++) ac[i] = w0 * r0[i];
            for (int j = 1; j < cy[y].count; j++) {
                const uint8_t *restrict rj = src->data + (size_t)(cy[y].first + j) * src->stride;
                float wj = wy[j];
                for (size_t i = 0; i < srclen; i++) ac[i] += wj * rj[i];
            }
        }
        }
        if (c == 3) sl__hpass3(acc, dw, &tb, orow);
        else sl__hpass(acc, dw, cx, orow);
        uint8_t *restrict o = dst->data + (size_t)y * rowlen;
        const float *restrict f = orow;
        size_t i = 0;
#ifdef SL__AVX2
        if (avx2) i = sl__to_u8_avx2(f, o, rowlen);
#endif
        for (; i < rowlen; i++) { /* max/min/convert: vectorizes */
            float v = f[i] + 0.5f;
            v = v > 0.0f ? v : 0.0f;
            v = v < 255.0f ? v : 255.0f;
            o[i] = (uint8_t)(int)v;
        }
    }
    free(cx); free(px); free(cy); free(py); free(acc); free(orow); free(tb.off); free(tb.wt);
    *out = dst;
    return SL_OK;
}

static int sl__iround(double v) { return (int)floor(v + 0.5); }
static int sl__max1(int v) { return v < 1 ? 1 : v; }

sl_status sl_image_resize(const sl_image *src, int width, int height, sl_resize_mode mode,
                          uint32_t pad_rgb, sl_image **out, sl_error *err) {
    sl_status st = sl__image_check_args(src, out, err, "resize");
    if (st) return st;
    if (width < 1 || height < 1 || width > SL_IMAGE_MAX_SIDE_MAX || height > SL_IMAGE_MAX_SIDE_MAX)
        return sl__err_set(err, SL_E_INVALID, "resize: target %dx%d out of range", width, height);
    int sw = src->width, sh = src->height;
    switch (mode) {
    case SL_RESIZE_STRETCH:
        return sl__resize_exact(src, width, height, out, err);
    case SL_RESIZE_FIT:
    case SL_RESIZE_PAD: {
        double s = fmin((double)width / sw, (double)height / sh);
        int fw = sl__max1(sl__iround(sw * s)), fh = sl__max1(sl__iround(sh * s));
        if (fw > width) fw = width;
        if (fh > height) fh = height;
        sl_image *fit = NULL;
        st = sl__resize_exact(src, fw, fh, &fit, err);
        if (st || mode == SL_RESIZE_FIT) { *out = fit; return st; }
        sl_image *pad = sl_image_new(width, height, src->channels);
        if (!pad) { sl_image_free(fit); return sl__err_set(err, SL_E_NOMEM, "resize: out of memory"); }
        uint8_t rgb[3] = { (uint8_t)(pad_rgb >> 16), (uint8_t)(pad_rgb >> 8), (uint8_t)pad_rgb };
        uint8_t grey = (uint8_t)((299u * rgb[0] + 587u * rgb[1] + 114u * rgb[2] + 500u) / 1000u);
        for (size_t i = 0; i < (size_t)width * height; i++) {
            if (src->channels == 1) pad->data[i] = grey;
            else memcpy(pad->data + i * 3, rgb, 3);
        }
        int ox = (width - fw) / 2, oy = (height - fh) / 2;
        for (int y = 0; y < fh; y++)
            memcpy(pad->data + (size_t)(y + oy) * pad->stride + (size_t)ox * src->channels,
                   fit->data + (size_t)y * fit->stride, fit->stride);
        sl_image_free(fit);
        *out = pad;
        return SL_OK;
    }
    case SL_RESIZE_FILL: {
        /* centred source rectangle with the target aspect, then an exact resize */
        int cw = sw, ch = sh;
        if ((uint64_t)sw * height > (uint64_t)sh * width) cw = sl__max1(sl__iround((double)sh * width / height));
        else ch = sl__max1(sl__iround((double)sw * height / width));
        sl_image *crop = NULL;
        st = sl_image_crop(src, (sw - cw) / 2, (sh - ch) / 2, cw, ch, &crop, err);
        if (st) return st;
        st = sl__resize_exact(crop, width, height, out, err);
        sl_image_free(crop);
        return st;
    }
    }
    return sl__err_set(err, SL_E_INVALID, "resize: unknown mode %d", (int)mode);
}

sl_status sl_image_resize_longest(const sl_image *src, int side, int no_enlarge, sl_image **out,
                                  sl_error *err) {
    sl_status st = sl__image_check_args(src, out, err, "resize_longest");
    if (st) return st;
    if (side < 1 || side > SL_IMAGE_MAX_SIDE_MAX)
        return sl__err_set(err, SL_E_INVALID, "resize_longest: side %d out of range", side);
    int longest = src->width > src->height ? src->width : src->height;
    if (no_enlarge && longest <= side) {
        *out = sl_image_clone(src);
        return *out ? SL_OK : sl__err_set(err, SL_E_NOMEM, "resize_longest: out of memory");
    }
    double s = (double)side / longest;
    int w = src->width >= src->height ? side : sl__max1(sl__iround(src->width * s));
    int h = src->height > src->width ? side : sl__max1(sl__iround(src->height * s));
    return sl__resize_exact(src, w, h, out, err);
}

sl_status sl_image_scale(const sl_image *src, float factor, sl_image **out, sl_error *err) {
    sl_status st = sl__image_check_args(src, out, err, "scale");
    if (st) return st;
    if (!(factor > 0) || !isfinite(factor))
        return sl__err_set(err, SL_E_INVALID, "scale: factor %g must be > 0", (double)factor);
    double w = src->width * (double)factor, h = src->height * (double)factor;
    if (w > SL_IMAGE_MAX_SIDE_MAX || h > SL_IMAGE_MAX_SIDE_MAX)
        return sl__err_set(err, SL_E_TOO_LARGE, "scale: %gx%g is too large", w, h);
    return sl__resize_exact(src, sl__max1(sl__iround(w)), sl__max1(sl__iround(h)), out, err);
}

/* ---- grey ------------------------------------------------------------------------------ */

static inline uint8_t sl__luma(const uint8_t *p) {
    return (uint8_t)((299u * p[0] + 587u * p[1] + 114u * p[2] + 500u) / 1000u);
}

#ifdef SL__AVX2
/* sl__luma of 16 pixels a step while 18 remain (each step reads 4 bytes past its 48), in the
 * same integers: 299 r + 587 g + 114 b + 500 (two pairwise 16-bit products, as 32-bit sums),
 * then the quotient by 1000 as the truncated float quotient, which is exact: the sum (< 2^18)
 * and 1000 are exact floats, and a true quotient m/1000 away from an integer by at least 1/1000
 * cannot be rounded across it (float spacing below 256 is 2^-16). Returns the pixels done. */
__attribute__((target("avx2"))) static size_t sl__grey_avx2(const uint8_t *src, uint8_t *dst, size_t n) {
    /* per 128-bit lane of 4 pixels (12 bytes): 16-bit words r,g of each, and b of each as 32 bits */
    const __m256i rg = _mm256_setr_epi8(0, -1, 1, -1, 3, -1, 4, -1, 6, -1, 7, -1, 9, -1, 10, -1,
                                        0, -1, 1, -1, 3, -1, 4, -1, 6, -1, 7, -1, 9, -1, 10, -1);
    const __m256i bb = _mm256_setr_epi8(2, -1, -1, -1, 5, -1, -1, -1, 8, -1, -1, -1, 11, -1, -1, -1,
                                        2, -1, -1, -1, 5, -1, -1, -1, 8, -1, -1, -1, 11, -1, -1, -1);
    const __m256i krg = _mm256_set1_epi32(299 | 587 << 16), kb = _mm256_set1_epi32(114);
    const __m256i half = _mm256_set1_epi32(500);
    const __m256 thousand = _mm256_set1_ps(1000.0f);
    size_t i = 0;
    for (; i + 18 <= n; i += 16) {
        __m256i q[2];
        for (int h = 0; h < 2; h++) {
            const uint8_t *p = src + (i + 8 * (size_t)h) * 3;
            __m128i lo = _mm_loadu_si128((const __m128i *)(const void *)p);
            __m128i hi = _mm_loadu_si128((const __m128i *)(const void *)(p + 12));
            __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
            __m256i sum = _mm256_add_epi32(_mm256_madd_epi16(_mm256_shuffle_epi8(v, rg), krg),
                                           _mm256_madd_epi16(_mm256_shuffle_epi8(v, bb), kb));
            sum = _mm256_add_epi32(sum, half);
            q[h] = _mm256_cvttps_epi32(_mm256_div_ps(_mm256_cvtepi32_ps(sum), thousand));
        }
        /* words 0-3 8-11 | 4-7 12-15 -> 0-3 4-7 | 8-11 12-15 -> bytes 0..15 */
        __m256i w = _mm256_permute4x64_epi64(_mm256_packus_epi32(q[0], q[1]), 0xD8);
        __m128i b = _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
        _mm_storeu_si128((__m128i *)(void *)(dst + i), b);
    }
    return i;
}
#endif

sl_status sl_image_to_grey(const sl_image *src, sl_image **out, sl_error *err) {
    sl_status st = sl__image_check_args(src, out, err, "to_grey");
    if (st) return st;
    sl_image *g = src->channels == 1 ? sl_image_clone(src) : sl__image_alloc(src->width, src->height, 1);
    if (!g) return sl__err_set(err, SL_E_NOMEM, "to_grey: out of memory");
    if (src->channels == 3) {
        size_t n = (size_t)src->width * src->height, i = 0;
#ifdef SL__AVX2
        if (sl__cpu_avx2()) i = sl__grey_avx2(src->data, g->data, n);
#endif
        for (; i < n; i++) g->data[i] = sl__luma(src->data + i * 3);
    }
    *out = g;
    return SL_OK;
}

/* ---- Gaussian and median --------------------------------------------------------------- */

sl_status sl_image_gaussian(const sl_image *src, float sigma, sl_image **out, sl_error *err) {
    sl_status st = sl__image_check_args(src, out, err, "gaussian");
    if (st) return st;
    if (!(sigma > 0) || sigma > 100)
        return sl__err_set(err, SL_E_INVALID, "gaussian: sigma %g not in (0, 100]", (double)sigma);
    int r = (int)ceil(3.0 * sigma);
    int w = src->width, h = src->height, c = src->channels;
    size_t rowlen = (size_t)w * c;
    float *k = malloc(sizeof(float) * (size_t)(2 * r + 1));
    float *tmp = sl__mallocarray(rowlen * h, sizeof(float));
    float *pad = sl__mallocarray(((size_t)w + 2 * (size_t)r) * c, sizeof(float));
    float *acc = sl__mallocarray(rowlen, sizeof(float));
    sl_image *dst = sl_image_new(w, h, c);
    if (!k || !tmp || !pad || !acc || !dst) {
        free(k); free(tmp); free(pad); free(acc); sl_image_free(dst);
        return sl__err_set(err, SL_E_NOMEM, "gaussian: out of memory");
    }
    double tot = 0;
    for (int i = -r; i <= r; i++) tot += k[i + r] = (float)exp(-(double)i * i / (2.0 * sigma * sigma));
    for (int i = 0; i <= 2 * r; i++) k[i] = (float)(k[i] / tot);
    for (int y = 0; y < h; y++) { /* horizontal, on a row padded with replicated borders */
        const uint8_t *row = src->data + (size_t)y * src->stride;
        for (int x = -r; x < w + r; x++) {
            int xx = x < 0 ? 0 : x >= w ? w - 1 : x;
            for (int ch = 0; ch < c; ch++) pad[(size_t)(x + r) * c + ch] = row[(size_t)xx * c + ch];
        }
        float *restrict t = tmp + (size_t)y * rowlen;
        for (size_t i = 0; i < rowlen; i++) t[i] = 0;
        for (int j = 0; j <= 2 * r; j++) {
            const float *restrict pj = pad + (size_t)j * c;
            float kj = k[j];
            for (size_t i = 0; i < rowlen; i++) t[i] += kj * pj[i];
        }
    }
    for (int y = 0; y < h; y++) { /* vertical, rows clamped */
        for (size_t i = 0; i < rowlen; i++) acc[i] = 0;
        for (int j = -r; j <= r; j++) {
            int yy = y + j < 0 ? 0 : y + j >= h ? h - 1 : y + j;
            const float *restrict tj = tmp + (size_t)yy * rowlen;
            float *restrict ac = acc;
            float kj = k[j + r];
            for (size_t i = 0; i < rowlen; i++) ac[i] += kj * tj[i];
        }
        uint8_t *o = dst->data + (size_t)y * dst->stride;
        for (size_t i = 0; i < rowlen; i++) {
            float v = acc[i];
            o[i] = v <= 0 ? 0 : v >= 255 ? 255 : (uint8_t)(v + 0.5f);
        }
    }
    free(k);
    free(tmp);
    free(pad);
    free(acc);
    *out = dst;
    return SL_OK;
}

sl_status sl_image_median(const sl_image *src, int radius, sl_image **out, sl_error *err) {
    sl_status st = sl__image_check_args(src, out, err, "median");
    if (st) return st;
    if (radius < 1 || radius > 7)
        return sl__err_set(err, SL_E_INVALID, "median: radius %d not in 1..7", radius);
    int w = src->width, h = src->height, c = src->channels;
    sl_image *dst = sl_image_new(w, h, c);
    if (!dst) return sl__err_set(err, SL_E_NOMEM, "median: out of memory");
    int n = (2 * radius + 1) * (2 * radius + 1), half = n / 2;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int ch = 0; ch < c; ch++) {
                /* counting select over the window (borders replicated) */
                uint16_t hist[256] = { 0 };
                for (int dy = -radius; dy <= radius; dy++) {
                    int yy = y + dy < 0 ? 0 : y + dy >= h ? h - 1 : y + dy;
                    const uint8_t *row = src->data + (size_t)yy * src->stride;
                    for (int dx = -radius; dx <= radius; dx++) {
                        int xx = x + dx < 0 ? 0 : x + dx >= w ? w - 1 : x + dx;
                        hist[row[(size_t)xx * c + ch]]++;
                    }
                }
                int acc = 0, v = 0;
                while ((acc += hist[v]) <= half) v++;
                dst->data[(size_t)y * dst->stride + (size_t)x * c + ch] = (uint8_t)v;
            }
    *out = dst;
    return SL_OK;
}

/* ---- histogram equalization and CLAHE -------------------------------------------------- */

/* Luma plane of src (full-range Y of YCbCr, same as sl__luma) into a new buffer. */
static uint8_t *sl__luma_plane(const sl_image *src) {
    size_t n = (size_t)src->width * src->height;
    uint8_t *y = malloc(n);
    if (!y) return NULL;
    for (size_t i = 0; i < n; i++) y[i] = src->channels == 1 ? src->data[i] : sl__luma(src->data + i * 3);
    return y;
}

/* Writes a new image equal to src with its luma replaced by ynew (chroma Cb/Cr kept). */
static sl_image *sl__with_luma(const sl_image *src, const uint8_t *ynew) {
    sl_image *dst = sl_image_new(src->width, src->height, src->channels);
    if (!dst) return NULL;
    size_t n = (size_t)src->width * src->height;
    if (src->channels == 1) { memcpy(dst->data, ynew, n); return dst; }
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = src->data + i * 3;
        double r = p[0], g = p[1], b = p[2];
        double cb = -0.168736 * r - 0.331264 * g + 0.5 * b;
        double cr = 0.5 * r - 0.418688 * g - 0.081312 * b;
        double y = ynew[i];
        dst->data[i * 3 + 0] = sl__clamp_u8(y + 1.402 * cr);
        dst->data[i * 3 + 1] = sl__clamp_u8(y - 0.344136 * cb - 0.714136 * cr);
        dst->data[i * 3 + 2] = sl__clamp_u8(y + 1.772 * cb);
    }
    return dst;
}

sl_status sl_image_equalize(const sl_image *src, sl_image **out, sl_error *err) {
    sl_status st = sl__image_check_args(src, out, err, "equalize");
    if (st) return st;
    size_t n = (size_t)src->width * src->height;
    uint8_t *y = sl__luma_plane(src);
    if (!y) return sl__err_set(err, SL_E_NOMEM, "equalize: out of memory");
    size_t hist[256] = { 0 }, cdf = 0, cdf_min = 0;
    for (size_t i = 0; i < n; i++) hist[y[i]]++;
    uint8_t map[256];
    for (int v = 0; v < 256; v++) {
        cdf += hist[v];
        if (!cdf_min && cdf) cdf_min = cdf;
        /* classic formula: (cdf(v) - cdf_min) / (N - cdf_min) * 255; a flat image stays */
        map[v] = n == cdf_min ? (uint8_t)v
                              : sl__clamp_u8((double)(cdf - cdf_min) * 255.0 / (double)(n - cdf_min));
    }
    for (size_t i = 0; i < n; i++) y[i] = map[y[i]];
    *out = sl__with_luma(src, y);
    free(y);
    return *out ? SL_OK : sl__err_set(err, SL_E_NOMEM, "equalize: out of memory");
}

/* Pixel i of n lies between the centres of tiles *t0 and *t1 (of `tiles`); returns the weight
 * of *t1. Before the first centre / after the last, both are the same tile. */
static double sl__tile_pos(int i, int n, int tiles, int *t0, int *t1) {
    double f = (i + 0.5) * tiles / n - 0.5;
    int a = (int)floor(f);
    double wt = f - a;
    if (a < 0) { a = 0; wt = 0; }
    if (a > tiles - 1) a = tiles - 1;
    *t0 = a;
    *t1 = a + 1 < tiles ? a + 1 : a;
    return wt;
}

sl_status sl_image_clahe(const sl_image *src, int tiles_x, int tiles_y, float clip_limit,
                         sl_image **out, sl_error *err) {
    sl_status st = sl__image_check_args(src, out, err, "clahe");
    if (st) return st;
    int w = src->width, h = src->height;
    if (tiles_x < 1 || tiles_y < 1 || tiles_x > 64 || tiles_y > 64 || tiles_x > w || tiles_y > h)
        return sl__err_set(err, SL_E_INVALID, "clahe: %dx%d tiles for a %dx%d image (1..64, at most "
                           "one per pixel)", tiles_x, tiles_y, w, h);
    if (!(clip_limit >= 1.0f) || clip_limit > 256.0f)
        return sl__err_set(err, SL_E_INVALID, "clahe: clip limit %g not in [1, 256]", (double)clip_limit);
    uint8_t *y = sl__luma_plane(src);
    uint8_t *maps = malloc((size_t)tiles_x * tiles_y * 256);
    if (!y || !maps) { free(y); free(maps); return sl__err_set(err, SL_E_NOMEM, "clahe: out of memory"); }
    /* tile t spans [t*w/tx, (t+1)*w/tx) */
    for (int ty = 0; ty < tiles_y; ty++)
        for (int tx = 0; tx < tiles_x; tx++) {
            int x0 = (int)((int64_t)tx * w / tiles_x), x1 = (int)((int64_t)(tx + 1) * w / tiles_x);
            int y0 = (int)((int64_t)ty * h / tiles_y), y1 = (int)((int64_t)(ty + 1) * h / tiles_y);
            size_t hist[256] = { 0 }, npix = (size_t)(x1 - x0) * (size_t)(y1 - y0);
            for (int yy = y0; yy < y1; yy++)
                for (int xx = x0; xx < x1; xx++) hist[y[(size_t)yy * w + xx]]++;
            /* clip and redistribute the excess evenly (Zuiderveld's ClipHistogram) */
            size_t clip = (size_t)(clip_limit * (double)npix / 256.0);
            if (clip < 1) clip = 1;
            size_t excess = 0;
            for (int v = 0; v < 256; v++)
                if (hist[v] > clip) { excess += hist[v] - clip; hist[v] = clip; }
            size_t incr = excess / 256, upper = clip - incr;
            for (int v = 0; v < 256; v++) {
                if (hist[v] > upper) { excess -= clip - hist[v]; hist[v] = clip; }
                else { hist[v] += incr; excess -= incr; }
            }
            for (int progress = 1; excess > 0 && progress;) { /* leftovers, spread */
                size_t step = 256 / excess > 0 ? 256 / excess : 1;
                progress = 0;
                for (int v = 0; v < 256 && excess > 0; v += (int)step)
                    if (hist[v] < clip) { hist[v]++; excess--; progress = 1; }
            }
            uint8_t *map = maps + ((size_t)ty * tiles_x + tx) * 256;
            size_t cdf = 0;
            for (int v = 0; v < 256; v++) {
                cdf += hist[v];
                map[v] = sl__clamp_u8((double)cdf * 255.0 / (double)npix);
            }
        }
    /* bilinear interpolation between the mappings of the four nearest tile centres */
    for (int yy = 0; yy < h; yy++) {
        int ty0, ty1;
        double ay = sl__tile_pos(yy, h, tiles_y, &ty0, &ty1);
        for (int xx = 0; xx < w; xx++) {
            int tx0, tx1;
            double ax = sl__tile_pos(xx, w, tiles_x, &tx0, &tx1);
            uint8_t v = y[(size_t)yy * w + xx];
            double m00 = maps[((size_t)ty0 * tiles_x + tx0) * 256 + v];
            double m01 = maps[((size_t)ty0 * tiles_x + tx1) * 256 + v];
            double m10 = maps[((size_t)ty1 * tiles_x + tx0) * 256 + v];
            double m11 = maps[((size_t)ty1 * tiles_x + tx1) * 256 + v];
            double top = m00 + ax * (m01 - m00), bot = m10 + ax * (m11 - m10);
            y[(size_t)yy * w + xx] = sl__clamp_u8(top + ay * (bot - top));
        }
    }
    free(maps);
    *out = sl__with_luma(src, y);
    free(y);
    return *out ? SL_OK : sl__err_set(err, SL_E_NOMEM, "clahe: out of memory");
}

/* ---- float normalization --------------------------------------------------------------- */

sl_status sl_image_to_float(const sl_image *src, const float *mean, const float *std,
                            sl_layout layout, float *dst, size_t dst_len, sl_error *err) {
    if (!src || !src->data || !dst) return sl__err_set(err, SL_E_INVALID, "to_float: NULL argument");
    if (layout != SL_LAYOUT_CHW && layout != SL_LAYOUT_HWC)
        return sl__err_set(err, SL_E_INVALID, "to_float: unknown layout %d", (int)layout);
    int c = src->channels;
    size_t plane = (size_t)src->width * src->height, need = plane * (size_t)c;
    if (dst_len < need)
        return sl__err_set(err, SL_E_INVALID, "to_float: buffer of %zu floats, need %zu", dst_len, need);
    float scale[3], bias[3];
    for (int k = 0; k < c; k++) {
        float m = mean ? mean[k] : 0.0f, s = std ? std[k] : 1.0f;
        if (!(s > 0) && !(s < 0)) return sl__err_set(err, SL_E_INVALID, "to_float: std[%d] is 0", k);
        scale[k] = 1.0f / (255.0f * s);
        bias[k] = -m / s;
    }
    for (int yy = 0; yy < src->height; yy++) {
        const uint8_t *row = src->data + (size_t)yy * src->stride;
        for (int xx = 0; xx < src->width; xx++) {
            size_t p = (size_t)yy * src->width + xx;
            for (int k = 0; k < c; k++) {
                float v = row[(size_t)xx * c + k] * scale[k] + bias[k];
                if (layout == SL_LAYOUT_CHW) dst[(size_t)k * plane + p] = v;
                else dst[p * c + k] = v;
            }
        }
    }
    return SL_OK;
}
