/*
 * image/resample.c - resizing that gives the same bytes as Pillow's Image.resize (the resize of
 * torchvision's classification transforms on PIL images), for CNN preprocessing: a model trained
 * on PIL-resized images sees the same pixels here.
 *
 * Algorithm (Pillow's libImaging/Resample.c behaviour, reimplemented): separable convolution with
 * a filter (box, bilinear/triangle, bicubic a = -0.5) whose support is stretched by the downscale
 * factor (antialiasing: support * max(1, in/out)); output pixel i is centred at (i + 0.5) * scale
 * in the source; its taps are source pixels (int)(centre - support + 0.5) ..
 * (int)(centre + support + 0.5) - 1 (clamped to the image), weighted by filter((x - centre + 0.5) /
 * max(1, scale)) and normalized to sum 1 in double precision, then rounded to 22-bit fixed point
 * (round half away from zero). A pass sums 8-bit pixels times the integer weights from
 * 2^21 (rounding), and keeps bits 22.. of the sum clamped to 0..255. The horizontal pass runs
 * first, on the source rows the vertical pass will read, and its result is rounded to 8 bits
 * before the vertical pass. Nearest neighbour is Pillow's affine scaling: source index
 * (int)(x0 + (i + 0.5) * scale), the position accumulated by repeated addition as Pillow does.
 *
 * Invariants: the same double operations in the same order as the reference (this file is built
 * without contraction of multiply-adds: -std=c11 keeps -ffp-contract=off), so coefficients and
 * therefore pixels are identical; tests/test_image.c checks the bytes against values computed by
 * Pillow (tests/data/pil_resize/, made by tests/data/make_pil_reference.py).
 */
#include "image/image_internal.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SL__PIL_BITS 22 /* fixed-point fraction bits of the integer weights (32 - 8 - 2) */

static double sl__f_box(double x) { return x > -0.5 && x <= 0.5 ? 1.0 : 0.0; }
static double sl__f_bilinear(double x) {
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}
static double sl__f_bicubic(double x) {
    const double a = -0.5; /* Keys' cubic convolution, as Pillow and OpenCV's INTER_CUBIC use */
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

/* Integer taps of one pass: output i reads count[i] source samples from first[i] with weights
 * k[i * ksize + j]. */
typedef struct {
    int ksize;
    int *first, *count;
    int32_t *k;
} sl__taps;

static void sl__taps_free(sl__taps *t) {
    free(t->first);
    free(t->count);
    free(t->k);
}

static int sl__taps_make(int in_size, int out_size, sl_image_filter f, sl__taps *t) {
    double (*fn)(double) = f == SL_IMAGE_FILTER_BOX ? sl__f_box
                           : f == SL_IMAGE_FILTER_BICUBIC ? sl__f_bicubic : sl__f_bilinear;
    double support = f == SL_IMAGE_FILTER_BOX ? 0.5 : f == SL_IMAGE_FILTER_BICUBIC ? 2.0 : 1.0;
    double scale = (double)(float)in_size / out_size, fscale = scale < 1.0 ? 1.0 : scale;
    support *= fscale;
    if (support > (double)(INT_MAX / 4)) return -1;
    int ksize = (int)ceil(support) * 2 + 1;
    memset(t, 0, sizeof *t);
    t->ksize = ksize;
    t->first = sl__mallocarray((size_t)out_size, sizeof *t->first);
    t->count = sl__mallocarray((size_t)out_size, sizeof *t->count);
    t->k = sl__mallocarray((size_t)out_size, (size_t)ksize * sizeof *t->k);
    double *w = sl__mallocarray((size_t)ksize, sizeof *w);
    if (!t->first || !t->count || !t->k || !w) { free(w); sl__taps_free(t); return -1; }
    double ss = 1.0 / fscale;
    for (int i = 0; i < out_size; i++) {
        double centre = (i + 0.5) * scale, ww = 0.0;
        int lo = (int)(centre - support + 0.5), hi = (int)(centre + support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > in_size) hi = in_size;
        int n = hi - lo;
        if (n > ksize) n = ksize; /* cannot happen: hi - lo <= 2 ceil(support) + 1 */
        for (int x = 0; x < n; x++) {
            w[x] = fn((x + lo - centre + 0.5) * ss);
            ww += w[x];
        }
        int32_t *k = t->k + (size_t)i * (size_t)ksize;
        for (int x = 0; x < ksize; x++) {
            double v = x < n ? (ww != 0.0 ? w[x] / ww : w[x]) : 0.0;
            k[x] = v < 0 ? (int32_t)(-0.5 + v * (1 << SL__PIL_BITS)) : (int32_t)(0.5 + v * (1 << SL__PIL_BITS));
        }
        t->first[i] = lo;
        t->count[i] = n < 0 ? 0 : n;
    }
    free(w);
    return 0;
}

static inline uint8_t sl__pil_clip(int32_t s) {
    if (s < 0) return 0;
    s >>= SL__PIL_BITS;
    return (uint8_t)(s > 255 ? 255 : s);
}

/* Horizontal pass over rows y0 .. y0 + rows - 1 of src (c channels) into dst (dw pixels wide). */
static void sl__pass_h(const sl_image *src, int y0, int rows, const sl__taps *t, int dw, uint8_t *dst) {
    int c = src->channels;
    const int32_t half = 1 << (SL__PIL_BITS - 1);
    for (int y = 0; y < rows; y++) {
        const uint8_t *row = src->data + (size_t)(y0 + y) * src->stride;
        uint8_t *o = dst + (size_t)y * (size_t)dw * (size_t)c;
        for (int x = 0; x < dw; x++) {
            const int32_t *k = t->k + (size_t)x * (size_t)t->ksize;
            const uint8_t *p = row + (size_t)t->first[x] * (size_t)c;
            int n = t->count[x];
            if (c == 3) {
                int32_t s0 = half, s1 = half, s2 = half;
                for (int j = 0; j < n; j++, p += 3) {
                    s0 += p[0] * k[j];
                    s1 += p[1] * k[j];
                    s2 += p[2] * k[j];
                }
                o[3 * x] = sl__pil_clip(s0);
                o[3 * x + 1] = sl__pil_clip(s1);
                o[3 * x + 2] = sl__pil_clip(s2);
            } else {
                int32_t s0 = half;
                for (int j = 0; j < n; j++) s0 += p[j] * k[j];
                o[x] = sl__pil_clip(s0);
            }
        }
    }
}

/* Vertical pass: src has rows of `rowlen` bytes starting at source row `y0`; writes dh rows. */
static void sl__pass_v(const uint8_t *src, size_t rowlen, int y0, const sl__taps *t, int dh,
                       uint8_t *dst, int32_t *acc) {
    const int32_t half = 1 << (SL__PIL_BITS - 1);
    for (int y = 0; y < dh; y++) {
        const int32_t *k = t->k + (size_t)y * (size_t)t->ksize;
        for (size_t i = 0; i < rowlen; i++) acc[i] = half;
        for (int j = 0; j < t->count[y]; j++) {
            const uint8_t *p = src + (size_t)(t->first[y] - y0 + j) * rowlen;
            int32_t kj = k[j];
            for (size_t i = 0; i < rowlen; i++) acc[i] += p[i] * kj;
        }
        uint8_t *o = dst + (size_t)y * rowlen;
        for (size_t i = 0; i < rowlen; i++) o[i] = sl__pil_clip(acc[i]);
    }
}

/* Pillow's nearest-neighbour scaling: index (int)(pos) with pos = scale / 2 + i * scale summed
 * step by step in double. */
static void sl__nearest_index(int in_size, int out_size, int *idx) {
    double scale = (double)(float)in_size / out_size, pos = scale * 0.5;
    for (int i = 0; i < out_size; i++) {
        int v = pos < 0.0 ? -1 : (int)pos;
        idx[i] = v < 0 ? 0 : v >= in_size ? in_size - 1 : v;
        pos += scale;
    }
}

sl_status sl_image_resize_filter(const sl_image *src, int width, int height, sl_image_filter filter,
                                 sl_image **out, sl_error *err) {
    sl_status st = sl__image_check_args(src, out, err, "resize_filter");
    if (st) return st;
    if (width < 1 || height < 1 || width > SL_IMAGE_MAX_SIDE_MAX || height > SL_IMAGE_MAX_SIDE_MAX)
        return sl__err_set(err, SL_E_INVALID, "resize_filter: target %dx%d out of range", width, height);
    if (filter != SL_IMAGE_FILTER_BILINEAR && filter != SL_IMAGE_FILTER_BICUBIC &&
        filter != SL_IMAGE_FILTER_BOX && filter != SL_IMAGE_FILTER_NEAREST)
        return sl__err_set(err, SL_E_INVALID, "resize_filter: unknown filter %d", (int)filter);
    int c = src->channels, sw = src->width, sh = src->height;
    if (width == sw && height == sh) {
        *out = sl_image_clone(src);
        return *out ? SL_OK : sl__err_set(err, SL_E_NOMEM, "resize_filter: out of memory");
    }
    sl_image *dst = sl__image_alloc(width, height, c);
    if (!dst) return sl__err_set(err, SL_E_NOMEM, "resize_filter: out of memory for %dx%d", width, height);
    if (filter == SL_IMAGE_FILTER_NEAREST) {
        int *ix = sl__mallocarray((size_t)width, sizeof *ix), *iy = sl__mallocarray((size_t)height, sizeof *iy);
        if (!ix || !iy) {
            free(ix); free(iy); sl_image_free(dst);
            return sl__err_set(err, SL_E_NOMEM, "resize_filter: out of memory");
        }
        sl__nearest_index(sw, width, ix);
        sl__nearest_index(sh, height, iy);
        for (int y = 0; y < height; y++) {
            const uint8_t *row = src->data + (size_t)iy[y] * src->stride;
            uint8_t *o = dst->data + (size_t)y * dst->stride;
            for (int x = 0; x < width; x++) memcpy(o + (size_t)x * c, row + (size_t)ix[x] * c, (size_t)c);
        }
        free(ix);
        free(iy);
        *out = dst;
        return SL_OK;
    }
    sl__taps th, tv;
    int need_h = width != sw, need_v = height != sh;
    if (sl__taps_make(sh, height, filter, &tv)) {
        sl_image_free(dst);
        return sl__err_set(err, SL_E_NOMEM, "resize_filter: out of memory");
    }
    int y_first = tv.first[0], y_last = tv.first[height - 1] + tv.count[height - 1];
    uint8_t *tmp = NULL;
    int32_t *acc = NULL;
    const uint8_t *vsrc = src->data;
    int vy0 = 0;
    if (need_h) {
        if (sl__taps_make(sw, width, filter, &th)) goto nomem;
        int rows = need_v ? y_last - y_first : sh;
        int r0 = need_v ? y_first : 0;
        uint8_t *hdst = need_v ? (tmp = sl__mallocarray((size_t)(rows > 0 ? rows : 1), (size_t)width * (size_t)c)) : dst->data;
        if (!hdst) { sl__taps_free(&th); goto nomem; }
        sl__pass_h(src, r0, rows, &th, width, hdst);
        sl__taps_free(&th);
        vsrc = tmp;
        vy0 = r0;
    }
    if (need_v) {
        size_t rowlen = (size_t)width * (size_t)c;
        if (!(acc = sl__mallocarray(rowlen, sizeof *acc))) goto nomem;
        sl__pass_v(vsrc, rowlen, vy0, &tv, height, dst->data, acc);
    }
    free(acc);
    free(tmp);
    sl__taps_free(&tv);
    *out = dst;
    return SL_OK;
nomem:
    free(acc);
    free(tmp);
    sl__taps_free(&tv);
    sl_image_free(dst);
    return sl__err_set(err, SL_E_NOMEM, "resize_filter: out of memory");
}
