/*
 * learn/shopper.c - pseudo shopper photos for calibrating confidence from the catalog alone
 * (learn.h sl_learn_shopper_photo): the catalog image, cropped, placed smaller into a frame over
 * a plain background with a gradient, under a perspective turn, then
 * uneven lighting with a colour cast, lens blur, sensor noise and JPEG compression - the ways a
 * photo taken in a shop differs from a packshot (the sample generator's shopper photos,
 * src/sample/sample.c, apply the same chain to drawn products).
 *
 * Invariants: the input is never modified; the result depends only on (image, seed) and is the
 * same on every machine (seeded xoshiro stream, no libc rand, doubles rounded
 * to bytes the same way everywhere).
 */
#include "shoplens/learn.h"
#include "util/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double sl__u(sl__rng *r, double lo, double hi) { return lo + (hi - lo) * sl__rng_uniform(r); }

static uint8_t sl__u8(double v) { return v <= 0 ? 0 : v >= 255 ? 255 : (uint8_t)(v + 0.5); }

/* Bilinear sample of a 3-channel image at pixel-centre coordinates (x, y); 0 outside. */
static int sl__sample(const uint8_t *px, size_t stride, int w, int h, double x, double y, double out[3]) {
    if (!(x >= 0 && y >= 0 && x <= w - 1 && y <= h - 1)) return 0;
    int x0 = (int)x, y0 = (int)y, x1 = x0 + 1 < w ? x0 + 1 : x0, y1 = y0 + 1 < h ? y0 + 1 : y0;
    double fx = x - x0, fy = y - y0;
    const uint8_t *r0 = px + (size_t)y0 * stride, *r1 = px + (size_t)y1 * stride;
    for (int k = 0; k < 3; k++) {
        double a = r0[3 * x0 + k] + fx * (r0[3 * x1 + k] - r0[3 * x0 + k]);
        double b = r1[3 * x0 + k] + fx * (r1[3 * x1 + k] - r1[3 * x0 + k]);
        out[k] = a + fy * (b - a);
    }
    return 1;
}

/* A colour copy of img (grey images get three equal channels). */
static sl_image *sl__rgb(const sl_image *img) {
    if (sl_image_channels(img) == 3) return sl_image_clone(img);
    int w = sl_image_width(img), h = sl_image_height(img);
    sl_image *c = sl_image_new(w, h, 3);
    if (!c) return NULL;
    for (int y = 0; y < h; y++) {
        const uint8_t *s = sl_image_cpixels(img) + (size_t)y * sl_image_stride(img);
        uint8_t *d = sl_image_pixels(c) + (size_t)y * sl_image_stride(c);
        for (int x = 0; x < w; x++) d[3 * x] = d[3 * x + 1] = d[3 * x + 2] = s[x];
    }
    return c;
}

/* The camera: uneven lighting (gain, a gradient across the frame, a colour cast), lens blur
 * (relative to the frame), sensor noise, JPEG. Takes frame (freed), draws from r. */
static sl_status sl__photo_finish(sl_image *frame, sl__rng *r, sl_image **out, sl_error *err) {
    int W = sl_image_width(frame), H = sl_image_height(frame);
    double gain = sl__u(r, 0.65, 1.2), gx = sl__u(r, -0.3, 0.3), gyy = sl__u(r, -0.3, 0.3);
    double cast[3] = {sl__u(r, 0.88, 1.12), sl__u(r, 0.9, 1.06), sl__u(r, 0.86, 1.12)};
    for (int y = 0; y < H; y++) {
        uint8_t *row = sl_image_pixels(frame) + (size_t)y * sl_image_stride(frame);
        for (int x = 0; x < W; x++) {
            double f = gain * (1 + gx * ((double)x / W - 0.5) + gyy * ((double)y / H - 0.5));
            for (int k = 0; k < 3; k++) row[3 * x + k] = sl__u8(row[3 * x + k] * f * cast[k]);
        }
    }
    double sigma = sl__u(r, 1.2, 3.0) * (W < H ? W : H) / 512.0;
    float noise = (float)sl__u(r, 1.5, 5.0);
    int quality = 50 + (int)sl__rng_below(r, 36);
    uint64_t nseed = sl__rng_next(r);
    sl_image *t = NULL;
    sl_status st = SL_OK;
    if (sigma >= 0.3) {
        st = sl_image_gaussian(frame, (float)sigma, &t, err);
        sl_image_free(frame);
        frame = t;
        t = NULL;
    }
    if (st == SL_OK) {
        st = sl_image_noise(frame, noise, nseed, &t, err);
        sl_image_free(frame);
        frame = t;
        t = NULL;
    }
    if (st == SL_OK) {
        st = sl_image_jpeg_roundtrip(frame, quality, &t, err);
        sl_image_free(frame);
        frame = t;
    }
    if (st != SL_OK) {
        sl_image_free(frame);
        return st;
    }
    *out = frame;
    return SL_OK;
}

sl_status sl_learn_shopper_photo(const sl_image *src, uint64_t seed, sl_image **out, sl_error *err) {
    if (!out) return sl__err_set(err, SL_E_INVALID, "shopper photo: NULL out");
    *out = NULL;
    if (!src || sl_image_width(src) <= 0 || sl_image_height(src) <= 0)
        return sl__err_set(err, SL_E_INVALID, "shopper photo: empty image");
    sl__rng r;
    sl__rng_seed(&r, seed ^ 0x5b0b9e7ull);
    int W = sl_image_width(src), H = sl_image_height(src);
    sl_image *prod = sl__rgb(src), *bg = NULL, *frame = NULL;
    sl_status st = prod ? SL_OK : sl__err_set(err, SL_E_NOMEM, "out of memory");
    /* the background: a plain colour with a soft gradient (not another product: a photo's
     * background must not look like one product of the catalog more than the others) */
    if (st == SL_OK) {
        if (!(bg = sl_image_new(W, H, 3))) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        double base[3] = {sl__u(&r, 40, 230), sl__u(&r, 40, 230), sl__u(&r, 40, 230)}, gy = sl__u(&r, -40, 40);
        for (int y = 0; st == SL_OK && y < H; y++) {
            uint8_t *row = sl_image_pixels(bg) + (size_t)y * sl_image_stride(bg);
            for (int x = 0; x < W; x++)
                for (int k = 0; k < 3; k++) row[3 * x + k] = sl__u8(base[k] + gy * ((double)y / H - 0.5));
        }
    }
    if (st == SL_OK && !(frame = sl_image_new(W, H, 3))) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    if (st == SL_OK) {
        /* crop of the product (75..100% of each side), placed at scale s of the frame, rotated,
         * with a perspective term; output pixel -> product pixel through the inverse map */
        double cw = W * sl__u(&r, 0.75, 1.0), ch = H * sl__u(&r, 0.75, 1.0);
        double cx0 = sl__u(&r, 0, W - cw), cy0 = sl__u(&r, 0, H - ch);
        double s = sl__u(&r, 0.3, 0.75) * fmin((double)W / cw, (double)H / ch);
        double ang = sl__u(&r, -15, 15) * M_PI / 180.0, ca = cos(ang), sa = sin(ang);
        double px = sl__u(&r, -1, 1) * 0.15 / W, py = sl__u(&r, -1, 1) * 0.15 / H;
        double ox = W * sl__u(&r, 0.35, 0.65), oy = H * sl__u(&r, 0.35, 0.65);
        const uint8_t *pp = sl_image_cpixels(prod), *bp = sl_image_cpixels(bg);
        size_t ps = sl_image_stride(prod), bs = sl_image_stride(bg);
        for (int y = 0; y < H; y++) {
            uint8_t *row = sl_image_pixels(frame) + (size_t)y * sl_image_stride(frame);
            for (int x = 0; x < W; x++) {
                /* undo translation, rotation and scale, then the perspective term */
                double dx = x - ox, dy = y - oy;
                double u = (ca * dx + sa * dy) / s, v = (-sa * dx + ca * dy) / s;
                double z = 1.0 + px * u + py * v;
                double q[3];
                int in = fabs(z) > 1e-6 &&
                         sl__sample(pp, ps, W, H, cx0 + cw / 2 + u / z, cy0 + ch / 2 + v / z, q) &&
                         fabs(u / z) <= cw / 2 && fabs(v / z) <= ch / 2;
                for (int k = 0; k < 3; k++) row[3 * x + k] = in ? sl__u8(q[k]) : bp[(size_t)y * bs + 3 * (size_t)x + (size_t)k];
            }
        }
    }
    sl_image_free(prod);
    sl_image_free(bg);
    if (st != SL_OK) {
        sl_image_free(frame);
        return st;
    }
    return sl__photo_finish(frame, &r, out, err);
}

/* Pastes src (3 channels) into the w x h rectangle at (x0, y0) of dst (3 channels), resampled
 * bilinearly; clipped to dst. */
static void sl__paste(sl_image *dst, const sl_image *src, double x0, double y0, double w, double h) {
    int W = sl_image_width(dst), H = sl_image_height(dst), sw = sl_image_width(src), sh = sl_image_height(src);
    if (!(w >= 1 && h >= 1)) return;
    int xa = (int)fmax(0, floor(x0)), xb = (int)fmin(W, ceil(x0 + w));
    int ya = (int)fmax(0, floor(y0)), yb = (int)fmin(H, ceil(y0 + h));
    const uint8_t *sp = sl_image_cpixels(src);
    size_t ss = sl_image_stride(src);
    for (int y = ya; y < yb; y++) {
        uint8_t *row = sl_image_pixels(dst) + (size_t)y * sl_image_stride(dst);
        double v = (y + 0.5 - y0) * sh / h - 0.5;
        for (int x = xa; x < xb; x++) {
            double u = (x + 0.5 - x0) * sw / w - 0.5, q[3];
            if (u < -0.5 || v < -0.5 || u > sw - 0.5 || v > sh - 0.5) continue;
            if (sl__sample(sp, ss, sw, sh, fmin(fmax(u, 0), sw - 1), fmin(fmax(v, 0), sh - 1), q))
                for (int k = 0; k < 3; k++) row[3 * x + k] = sl__u8(q[k]);
        }
    }
}

/* Fills one shelf row of the plane: products standing on the line `base` (their bottom), height
 * about hr, from x = from in direction dir (+1 right, -1 left) to the plane's edge. Product i of
 * the row is items[(*next)++ % n] (NULL entries: the target again). */
static void sl__shelf_row(sl_image *plane, sl__rng *r, const sl_image *target, const sl_image *const *items,
                          size_t n, size_t *next, double base, double hr, double from, int dir) {
    int W = sl_image_width(plane);
    double x = from;
    for (int guard = 0; guard < 64 && (dir > 0 ? x < W : x > 0); guard++) {
        const sl_image *it = sl__rng_uniform(r) < SL_LEARN_SHELF_FACING ? target : n ? items[(*next)++ % n] : target;
        if (!it) it = target;
        double h = hr * sl__u(r, 0.8, 1.0);
        double w = fmax(4.0, h * sl_image_width(it) / sl_image_height(it));
        double gap = W * sl__u(r, 0.005, 0.03);
        double x0 = dir > 0 ? x + gap : x - gap - w;
        sl__paste(plane, it, x0, base - h, w, h);
        x = dir > 0 ? x0 + w : x0;
    }
}

sl_status sl_learn_shelf_photo(const sl_image *src, const sl_image *const *others, size_t n_others, uint64_t seed,
                               sl_image **out, sl_error *err) {
    if (!out) return sl__err_set(err, SL_E_INVALID, "shelf photo: NULL out");
    *out = NULL;
    if (!src || sl_image_width(src) <= 0 || sl_image_height(src) <= 0)
        return sl__err_set(err, SL_E_INVALID, "shelf photo: empty image");
    if (n_others && !others) return sl__err_set(err, SL_E_INVALID, "shelf photo: NULL others");
    for (size_t i = 0; i < n_others; i++)
        if (!others[i] || sl_image_width(others[i]) <= 0 || sl_image_height(others[i]) <= 0)
            return sl__err_set(err, SL_E_INVALID, "shelf photo: other image %zu is empty", i);
    sl__rng r;
    sl__rng_seed(&r, seed ^ 0x5e1f7a3ull);
    int W = sl_image_width(src), H = sl_image_height(src);
    sl_image *prod = sl__rgb(src), *crop = NULL, *plane = NULL, *frame = NULL;
    sl_image **rgb = n_others ? sl__callocarray(n_others, sizeof *rgb) : NULL;
    sl_status st = prod && (rgb || !n_others) ? SL_OK : sl__err_set(err, SL_E_NOMEM, "out of memory");
    for (size_t i = 0; st == SL_OK && i < n_others; i++)
        if (!(rgb[i] = sl__rgb(others[i]))) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    /* the target: a crop of 80..100% of each side */
    if (st == SL_OK) {
        int cw = (int)fmax(1, W * sl__u(&r, 0.8, 1.0)), ch = (int)fmax(1, H * sl__u(&r, 0.8, 1.0));
        st = sl_image_crop(prod, (int)sl__u(&r, 0, W - cw), (int)sl__u(&r, 0, H - ch), cw, ch, &crop, err);
    }
    if (st == SL_OK && (!(plane = sl_image_new(W, H, 3)) || !(frame = sl_image_new(W, H, 3))))
        st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    double cx = 0, cy = 0;
    if (st == SL_OK) {
        /* the shelf plane: a plain colour with a gradient, boards under each row */
        double base[3] = {sl__u(&r, 40, 230), sl__u(&r, 40, 230), sl__u(&r, 40, 230)}, gy = sl__u(&r, -40, 40);
        for (int y = 0; y < H; y++) {
            uint8_t *row = sl_image_pixels(plane) + (size_t)y * sl_image_stride(plane);
            for (int x = 0; x < W; x++)
                for (int k = 0; k < 3; k++) row[3 * x + k] = sl__u8(base[k] + gy * ((double)y / H - 0.5));
        }
        double board = sl__u(&r, 60, 220);
        /* the target's row: its height a share of the frame, at most 80% of the width */
        int tw = sl_image_width(crop), th = sl_image_height(crop);
        double hr = H * sl__u(&r, SL_LEARN_SHELF_SCALE_MIN, SL_LEARN_SHELF_SCALE_MAX);
        if (hr * tw / th > 0.8 * W) hr = 0.8 * W * th / tw;
        double wt = hr * tw / th, pitch = hr * sl__u(&r, 1.1, 1.3);
        cx = W * sl__u(&r, 0.35, 0.65);
        cy = H * sl__u(&r, 0.35, 0.65);
        double line = cy + hr / 2;
        size_t next = (size_t)sl__rng_below(&r, n_others ? n_others : 1);
        const sl_image *const *items = (const sl_image *const *)rgb;
        for (int k = -2; k <= 2; k++) { /* rows above and below, then the target's */
            double b = line + k * pitch;
            if (b - pitch > H || b < 0) continue;
            for (int y = (int)fmax(0, b); y < (int)fmin(H, b + 0.08 * pitch); y++) {
                uint8_t *row = sl_image_pixels(plane) + (size_t)y * sl_image_stride(plane);
                for (int x = 0; x < W; x++) row[3 * x] = row[3 * x + 1] = row[3 * x + 2] = sl__u8(board);
            }
            if (k == 0) continue;
            sl__shelf_row(plane, &r, crop, items, n_others, &next, b, hr, sl__u(&r, -0.2, 0.2) * W, 1);
        }
        sl__shelf_row(plane, &r, crop, items, n_others, &next, line, hr, cx + wt / 2, 1);
        sl__shelf_row(plane, &r, crop, items, n_others, &next, line, hr, cx - wt / 2, -1);
        sl__paste(plane, crop, cx - wt / 2, line - hr, wt, hr);
    }
    if (st == SL_OK) {
        /* the camera's view of the shelf: zoomed in up to 25% about a point near the target,
         * rotated, with a perspective term; out of the plane = its edge colour */
        double s = sl__u(&r, 1.0, 1.25), ang = sl__u(&r, -10, 10) * M_PI / 180.0, ca = cos(ang), sa = sin(ang);
        double px = sl__u(&r, -1, 1) * 0.15 / W, py = sl__u(&r, -1, 1) * 0.15 / H;
        double ox = W * sl__u(&r, 0.4, 0.6), oy = H * sl__u(&r, 0.4, 0.6);
        const uint8_t *pp = sl_image_cpixels(plane);
        size_t ps = sl_image_stride(plane);
        for (int y = 0; y < H; y++) {
            uint8_t *row = sl_image_pixels(frame) + (size_t)y * sl_image_stride(frame);
            for (int x = 0; x < W; x++) {
                double dx = x - ox, dy = y - oy;
                double u = (ca * dx + sa * dy) / s, v = (-sa * dx + ca * dy) / s;
                double z = 1.0 + px * u + py * v, q[3];
                double qx = fabs(z) > 1e-6 ? cx + u / z : cx, qy = fabs(z) > 1e-6 ? cy + v / z : cy;
                sl__sample(pp, ps, W, H, fmin(fmax(qx, 0), W - 1), fmin(fmax(qy, 0), H - 1), q);
                for (int k = 0; k < 3; k++) row[3 * x + k] = sl__u8(q[k]);
            }
        }
    }
    sl_image_free(prod);
    sl_image_free(crop);
    sl_image_free(plane);
    for (size_t i = 0; rgb && i < n_others; i++) sl_image_free(rgb[i]);
    free(rgb);
    if (st != SL_OK) {
        sl_image_free(frame);
        return st;
    }
    return sl__photo_finish(frame, &r, out, err);
}
