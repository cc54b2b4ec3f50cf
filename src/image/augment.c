/*
 * image/augment.c - augmentations used to build test and evaluation queries: crop, rotate,
 * projective warp (bilinear, inverse mapping), brightness/contrast, seeded Gaussian noise and a
 * JPEG re-encode. Scale lives in preprocess.c with the resampler.
 *
 * Coordinates: pixel (x, y) has its centre at (x, y); images are y-down. A warp maps each output
 * pixel centre through the homography to an input position and samples it bilinearly; positions
 * more than half a pixel outside the input take the background colour.
 * Invariants: sources are never modified; results are new images or nothing; everything seeded
 * is deterministic across machines (sl__rng, no libc rand).
 */
#include "image/image_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int sl__image_bilinear(const sl_image *src, double x, double y, uint8_t *px) {
    int w = src->width, h = src->height, c = src->channels;
    if (!(x >= -0.5 && y >= -0.5 && x <= w - 0.5 && y <= h - 0.5)) return -1;
    if (x < 0) x = 0;
    if (y < 0) y = 0;
    if (x > w - 1) x = w - 1;
    if (y > h - 1) y = h - 1;
    int x0 = (int)x, y0 = (int)y;
    int x1 = x0 + 1 < w ? x0 + 1 : x0, y1 = y0 + 1 < h ? y0 + 1 : y0;
    double fx = x - x0, fy = y - y0;
    const uint8_t *r0 = src->data + (size_t)y0 * src->stride, *r1 = src->data + (size_t)y1 * src->stride;
    for (int k = 0; k < c; k++) {
        double a = r0[(size_t)x0 * c + k] + fx * (r0[(size_t)x1 * c + k] - r0[(size_t)x0 * c + k]);
        double b = r1[(size_t)x0 * c + k] + fx * (r1[(size_t)x1 * c + k] - r1[(size_t)x0 * c + k]);
        px[k] = sl__clamp_u8(a + fy * (b - a));
    }
    return 0;
}

sl_status sl__image_orient(const sl_image *src, int o, sl_image **out, sl_error *err) {
    sl_status st = sl__image_check_args(src, out, err, "orient");
    if (st) return st;
    if (o < 1 || o > 8) return sl__err_set(err, SL_E_INVALID, "orient: orientation %d not in 1..8", o);
    int W = src->width, H = src->height, c = src->channels, swap = o >= 5;
    sl_image *dst = sl_image_new(swap ? H : W, swap ? W : H, c);
    if (!dst) return sl__err_set(err, SL_E_NOMEM, "orient: out of memory");
    for (int y = 0; y < dst->height; y++) {
        uint8_t *row = dst->data + (size_t)y * dst->stride;
        for (int x = 0; x < dst->width; x++) {
            int sx, sy; /* EXIF: 2 mirror, 3 180, 4 flip, 5 transpose, 6 90 CW, 7 transverse, 8 90 CCW */
            switch (o) {
            case 2: sx = W - 1 - x; sy = y; break;
            case 3: sx = W - 1 - x; sy = H - 1 - y; break;
            case 4: sx = x; sy = H - 1 - y; break;
            case 5: sx = y; sy = x; break;
            case 6: sx = y; sy = H - 1 - x; break;
            case 7: sx = W - 1 - y; sy = H - 1 - x; break;
            case 8: sx = W - 1 - y; sy = x; break;
            default: sx = x; sy = y; break;
            }
            memcpy(row + (size_t)x * c, src->data + (size_t)sy * src->stride + (size_t)sx * c, (size_t)c);
        }
    }
    *out = dst;
    return SL_OK;
}

sl_status sl_image_crop(const sl_image *src, int x, int y, int w, int h, sl_image **out,
                        sl_error *err) {
    sl_status st = sl__image_check_args(src, out, err, "crop");
    if (st) return st;
    if (x < 0 || y < 0 || w < 1 || h < 1 || w > src->width - x || h > src->height - y)
        return sl__err_set(err, SL_E_INVALID, "crop: rectangle (%d,%d %dx%d) not inside %dx%d", x, y,
                           w, h, src->width, src->height);
    *out = sl_image_from_pixels(w, h, src->channels,
                                src->data + (size_t)y * src->stride + (size_t)x * src->channels,
                                src->stride);
    return *out ? SL_OK : sl__err_set(err, SL_E_NOMEM, "crop: out of memory");
}

sl_status sl_image_warp(const sl_image *src, const double hm[9], int out_w, int out_h,
                        uint32_t bg_rgb, sl_image **out, sl_error *err) {
    sl_status st = sl__image_check_args(src, out, err, "warp");
    if (st) return st;
    if (!hm) return sl__err_set(err, SL_E_INVALID, "warp: homography is NULL");
    for (int i = 0; i < 9; i++)
        if (!isfinite(hm[i])) return sl__err_set(err, SL_E_INVALID, "warp: homography has a non-finite entry");
    sl_image *dst = sl_image_new(out_w, out_h, src->channels);
    if (!dst) return sl__err_set(err, SL_E_INVALID, "warp: cannot make a %dx%d image", out_w, out_h);
    int c = src->channels;
    uint8_t bg[3] = { (uint8_t)(bg_rgb >> 16), (uint8_t)(bg_rgb >> 8), (uint8_t)bg_rgb };
    if (c == 1) bg[0] = (uint8_t)((299u * bg[0] + 587u * bg[1] + 114u * bg[2] + 500u) / 1000u);
    for (int y = 0; y < out_h; y++) {
        uint8_t *row = dst->data + (size_t)y * dst->stride;
        /* incremental evaluation along the row: numerators and denominator are affine in x */
        double X = hm[1] * y + hm[2], Y = hm[4] * y + hm[5], Z = hm[7] * y + hm[8];
        for (int x = 0; x < out_w; x++, X += hm[0], Y += hm[3], Z += hm[6]) {
            uint8_t *p = row + (size_t)x * c;
            if (!(fabs(Z) > 1e-12) || sl__image_bilinear(src, X / Z, Y / Z, p) != 0) memcpy(p, bg, (size_t)c);
        }
    }
    *out = dst;
    return SL_OK;
}

sl_status sl_image_rotate(const sl_image *src, float degrees, uint32_t bg_rgb, sl_image **out,
                          sl_error *err) {
    sl_status st = sl__image_check_args(src, out, err, "rotate");
    if (st) return st;
    if (!isfinite(degrees)) return sl__err_set(err, SL_E_INVALID, "rotate: angle is not finite");
    double t = fmod((double)degrees, 360.0) * M_PI / 180.0;
    double cs = cos(t), sn = sin(t);
    /* exact values at multiples of 90 degrees so such rotations are lossless on square images */
    if (fabs(cs) < 1e-12) cs = 0;
    if (fabs(sn) < 1e-12) sn = 0;
    if (fabs(fabs(cs) - 1) < 1e-12) cs = cs > 0 ? 1 : -1;
    if (fabs(fabs(sn) - 1) < 1e-12) sn = sn > 0 ? 1 : -1;
    double cx = (src->width - 1) / 2.0, cy = (src->height - 1) / 2.0;
    /* output (qx, qy) relative to the centre comes from input (cs*qx - sn*qy, sn*qx + cs*qy):
     * the inverse of a counter-clockwise turn on screen (y down) */
    double hm[9] = { cs, -sn, cx - cs * cx + sn * cy, sn, cs, cy - sn * cx - cs * cy, 0, 0, 1 };
    return sl_image_warp(src, hm, src->width, src->height, bg_rgb, out, err);
}

sl_status sl_image_adjust(const sl_image *src, float brightness, float contrast, sl_image **out,
                          sl_error *err) {
    sl_status st = sl__image_check_args(src, out, err, "adjust");
    if (st) return st;
    if (!isfinite(brightness) || !isfinite(contrast) || contrast < 0)
        return sl__err_set(err, SL_E_INVALID, "adjust: brightness %g / contrast %g", (double)brightness,
                           (double)contrast);
    uint8_t lut[256];
    for (int v = 0; v < 256; v++) lut[v] = sl__clamp_u8((v - 128.0) * contrast + 128.0 + brightness);
    sl_image *dst = sl_image_clone(src);
    if (!dst) return sl__err_set(err, SL_E_NOMEM, "adjust: out of memory");
    for (size_t i = 0; i < dst->stride * (size_t)dst->height; i++) dst->data[i] = lut[dst->data[i]];
    *out = dst;
    return SL_OK;
}

sl_status sl_image_noise(const sl_image *src, float sigma, uint64_t seed, sl_image **out,
                         sl_error *err) {
    sl_status st = sl__image_check_args(src, out, err, "noise");
    if (st) return st;
    if (!(sigma >= 0) || sigma > 255) return sl__err_set(err, SL_E_INVALID, "noise: sigma %g not in [0, 255]", (double)sigma);
    sl_image *dst = sl_image_clone(src);
    if (!dst) return sl__err_set(err, SL_E_NOMEM, "noise: out of memory");
    sl__rng rng;
    sl__rng_seed(&rng, seed);
    /* Irwin-Hall: the sum of 4 uniforms (16 bits each, one draw) minus 2, scaled to unit
     * variance, is close to a Gaussian (tails cut at 3.46 sigma) and several times cheaper
     * than Box-Muller. Integer arithmetic up to the final scale, so it is exact everywhere. */
    const float unit = (float)(sqrt(3.0) / 65536.0) * sigma;
    for (size_t i = 0; i < dst->stride * (size_t)dst->height; i++) {
        uint64_t a = sl__rng_next(&rng);
        int32_t sum = (int32_t)(a & 0xffff) + (int32_t)(a >> 16 & 0xffff) + (int32_t)(a >> 32 & 0xffff) +
                      (int32_t)(a >> 48) - 2 * 65535;
        float v = dst->data[i] + (float)sum * unit;
        dst->data[i] = v <= 0 ? 0 : v >= 255 ? 255 : (uint8_t)(v + 0.5f);
    }
    *out = dst;
    return SL_OK;
}

sl_status sl_image_jpeg_roundtrip(const sl_image *src, int quality, sl_image **out, sl_error *err) {
    sl_status st = sl__image_check_args(src, out, err, "jpeg_roundtrip");
    if (st) return st;
    if (quality < 1 || quality > 100)
        return sl__err_set(err, SL_E_INVALID, "jpeg_roundtrip: quality %d not in 1..100", quality);
    void *buf = NULL;
    size_t n = 0;
    st = sl_image_encode(src, "jpeg", quality, &buf, &n, err);
    if (st) return st;
    sl_image_load_opts o = { 0 };
    o.grey = src->channels == 1;
    o.max_bytes = n;
    o.max_pixels = (uint64_t)src->width * src->height;
    st = sl_image_load_buffer(buf, n, &o, out, NULL, err);
    free(buf);
    return st;
}
