/*
 * engine/region.c - search regions: the part of a query photo the shopper marked ("search only
 * this"), cut out before features are computed.
 *
 * Coordinates are pixels of the image as given, upright (EXIF orientation applied, as a browser
 * shows it). Encoded queries are decoded shrunk (longest side e->max_side) like every query; when
 * the region would come out smaller than that, the image is decoded again just large enough
 * (at most SL_ENGINE_MAX_SIDE_MAX on its longest side) that the region gets e->max_side pixels,
 * so a small region of a large photo keeps its detail. The cut-out is then treated like a whole
 * query image (shrunk to e->max_side when larger).
 *
 * Invariants: a region is checked against the upright original size and refused (SL_E_INVALID,
 * the message names both) unless it lies inside and is at least SL_ENGINE_REGION_MIN pixels on
 * each side; the rectangle cut from a decoded image is the region scaled, rounded outwards and
 * clamped to the image, so it is never empty.
 */
#include "engine/engine_internal.h"
#include "util/util.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

sl_status sl_engine_parse_region(const char *text, sl_query *q, sl_error *err) {
    if (!text || !q) return sl__err_set(err, SL_E_INVALID, "no region");
    long v[4];
    const char *p = text;
    for (int i = 0; i < 4; i++) {
        if (*p < '0' || *p > '9')
            return sl__err_set(err, SL_E_INVALID,
                               "region must be x,y,w,h: four whole numbers of pixels separated by commas");
        char *end = NULL;
        errno = 0;
        v[i] = strtol(p, &end, 10);
        if (errno || v[i] > SL_ENGINE_REGION_COORD_MAX)
            return sl__err_set(err, SL_E_INVALID, "region: %s is larger than %d", i < 2 ? "a coordinate" : "a size",
                               SL_ENGINE_REGION_COORD_MAX);
        p = end;
        if (*p != (i < 3 ? ',' : '\0'))
            return sl__err_set(err, SL_E_INVALID,
                               "region must be x,y,w,h: four whole numbers of pixels separated by commas");
        if (i < 3) p++;
    }
    if (v[2] < 1 || v[3] < 1)
        return sl__err_set(err, SL_E_INVALID, "region: width and height must be at least 1");
    q->region_x = (int)v[0];
    q->region_y = (int)v[1];
    q->region_w = (int)v[2];
    q->region_h = (int)v[3];
    return SL_OK;
}

/* Checks q's region against an upright image of w x h pixels. */
static sl_status sl__region_check(const sl_query *q, int w, int h, sl_error *err) {
    if (q->region_x < 0 || q->region_y < 0 || q->region_w < 1 || q->region_h < 1 ||
        q->region_w > w - q->region_x || q->region_h > h - q->region_y || w < 1 || h < 1)
        return sl__err_set(err, SL_E_INVALID, "region %d,%d,%d,%d is not inside the %dx%d image",
                           q->region_x, q->region_y, q->region_w, q->region_h, w, h);
    if (q->region_w < SL_ENGINE_REGION_MIN || q->region_h < SL_ENGINE_REGION_MIN)
        return sl__err_set(err, SL_E_INVALID, "region %dx%d is too small: at least %dx%d pixels",
                           q->region_w, q->region_h, SL_ENGINE_REGION_MIN, SL_ENGINE_REGION_MIN);
    return SL_OK;
}

/* Cuts q's region, given in pixels of an upright w0 x h0 original, out of img (that original
 * scaled to its size), and shrinks the result to max_side. */
static sl_status sl__region_cut(const sl_image *img, const sl_query *q, int w0, int h0,
                                int max_side, sl_image **out, sl_error *err) {
    int iw = sl_image_width(img), ih = sl_image_height(img);
    double sx = (double)iw / w0, sy = (double)ih / h0;
    int x0 = (int)floor(q->region_x * sx), y0 = (int)floor(q->region_y * sy);
    int x1 = (int)ceil((double)(q->region_x + q->region_w) * sx);
    int y1 = (int)ceil((double)(q->region_y + q->region_h) * sy);
    if (x0 > iw - 1) x0 = iw - 1;
    if (y0 > ih - 1) y0 = ih - 1;
    if (x1 > iw) x1 = iw;
    if (y1 > ih) y1 = ih;
    if (x1 <= x0) x1 = x0 + 1;
    if (y1 <= y0) y1 = y0 + 1;
    sl_image *cut = NULL;
    sl_status st = sl_image_crop(img, x0, y0, x1 - x0, y1 - y0, &cut, err);
    if (st != SL_OK) return st;
    if (x1 - x0 > max_side || y1 - y0 > max_side) {
        sl_image *small = NULL;
        st = sl_image_resize_longest(cut, max_side, 1, &small, err);
        sl_image_free(cut);
        cut = small;
    }
    *out = cut;
    return st;
}

sl_status sl__region_of_image(const sl_engine *e, const sl_image *img, const sl_query *q,
                              sl_image **out, sl_error *err) {
    *out = NULL;
    sl_status st = sl__region_check(q, sl_image_width(img), sl_image_height(img), err);
    if (st != SL_OK) return st;
    return sl__region_cut(img, q, sl_image_width(img), sl_image_height(img), e->max_side, out, err);
}

sl_status sl__region_of_bytes(const sl_engine *e, const void *data, size_t len, const sl_query *q,
                              sl_image **out, sl_error *err) {
    *out = NULL;
    sl_image_load_opts o;
    memset(&o, 0, sizeof o);
    o.max_side = e->max_side;
    sl_image_info info;
    memset(&info, 0, sizeof info);
    sl_image *img = NULL;
    sl_status st = sl_image_load_buffer(data, len, &o, &img, &info, err);
    if (st != SL_OK) return st;
    int w0 = info.width, h0 = info.height;
    if (info.orientation >= 5) { /* the EXIF orientations that turn the image a quarter */
        w0 = info.height;
        h0 = info.width;
    }
    if (w0 < 1 || h0 < 1) { /* size unknown: the decoded image is the original */
        w0 = sl_image_width(img);
        h0 = sl_image_height(img);
    }
    st = sl__region_check(q, w0, h0, err);
    /* decoded smaller than the original, and the region would get fewer than max_side pixels:
     * decode again, large enough for the region (bounded by SL_ENGINE_MAX_SIDE_MAX) */
    int longest0 = w0 > h0 ? w0 : h0, rlong = q->region_w > q->region_h ? q->region_w : q->region_h;
    int got = sl_image_width(img) > sl_image_height(img) ? sl_image_width(img) : sl_image_height(img);
    double want = ceil((double)e->max_side * longest0 / rlong);
    if (want > longest0) want = longest0;
    if (want > SL_ENGINE_MAX_SIDE_MAX) want = SL_ENGINE_MAX_SIDE_MAX;
    if (st == SL_OK && got < longest0 && want > got) {
        sl_image *big = NULL;
        o.max_side = (int)want;
        if (sl_image_load_buffer(data, len, &o, &big, NULL, NULL) == SL_OK) {
            sl_image_free(img);
            img = big;
        } /* else: keep the first decode (the region just has fewer pixels) */
    }
    if (st == SL_OK) st = sl__region_cut(img, q, w0, h0, e->max_side, out, err);
    sl_image_free(img);
    return st;
}
