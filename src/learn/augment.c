/*
 * learn/augment.c - pseudo shopper photos from catalog images, for training a head when the
 * shop has no labelled photos: a chain of the image module's augmentations (crop, perspective
 * warp, rotation, lighting, noise, JPEG) with parameters drawn from one seeded PRNG.
 *
 * Invariants: the source is never modified; the result depends only on (image, seed).
 */
#include "shoplens/learn.h"
#include "util/util.h"

#include <math.h>
#include <stdlib.h>

static double uni(sl__rng *r, double lo, double hi) { return lo + (hi - lo) * sl__rng_uniform(r); }

sl_status sl_learn_augment(const sl_image *src, uint64_t seed, sl_image **out, sl_error *err) {
    if (!out) return sl__err_set(err, SL_E_INVALID, "augment: NULL out");
    *out = NULL;
    if (!src || sl_image_width(src) <= 0 || sl_image_height(src) <= 0)
        return sl__err_set(err, SL_E_INVALID, "augment: empty image");
    sl__rng rng;
    sl__rng_seed(&rng, seed ^ 0xa06e17ull);
    int w = sl_image_width(src), h = sl_image_height(src);
    /* crop */
    double fw = uni(&rng, 0.6, 1.0), fh = uni(&rng, 0.6, 1.0);
    int cw = (int)(w * fw) > 0 ? (int)(w * fw) : 1, ch = (int)(h * fh) > 0 ? (int)(h * fh) : 1;
    int cx = (int)uni(&rng, 0, (double)(w - cw + 1)), cy = (int)uni(&rng, 0, (double)(h - ch + 1));
    if (cx > w - cw) cx = w - cw;
    if (cy > h - ch) cy = h - ch;
    sl_image *a = NULL, *b = NULL;
    sl_status st = sl_image_crop(src, cx, cy, cw, ch, &a, err);
    if (st != SL_OK) return st;
    /* perspective: a projective term that shrinks one side by up to 8%, same output size */
    double px = uni(&rng, -1, 1), py = uni(&rng, -1, 1);
    double H[9] = {1.0, 0.0, 0.0, 0.0, 1.0, 0.0, px * 0.08 / (cw > 1 ? cw : 1), py * 0.08 / (ch > 1 ? ch : 1), 1.0};
    uint32_t bg = (uint32_t)sl__rng_below(&rng, 0x1000000u);
    st = sl_image_warp(a, H, cw, ch, bg, &b, err);
    sl_image_free(a);
    if (st != SL_OK) return st;
    st = sl_image_rotate(b, (float)uni(&rng, -12, 12), bg, &a, err);
    sl_image_free(b);
    if (st != SL_OK) return st;
    st = sl_image_adjust(a, (float)uni(&rng, -30, 30), (float)uni(&rng, 0.7, 1.3), &b, err);
    sl_image_free(a);
    if (st != SL_OK) return st;
    st = sl_image_noise(b, (float)uni(&rng, 0, 8), sl__rng_next(&rng), &a, err);
    sl_image_free(b);
    if (st != SL_OK) return st;
    st = sl_image_jpeg_roundtrip(a, (int)uni(&rng, 50, 90), &b, err);
    sl_image_free(a);
    if (st != SL_OK) return st;
    *out = b;
    return SL_OK;
}
