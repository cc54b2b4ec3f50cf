/*
 * tests/test_image.c - the image layer: decoding every accepted format (inputs generated here
 * with libvips), orientation and colour conversions, each kind of bad input with its own status,
 * encoding, and preprocessing/augmentation against hand-computed values on small images; the
 * resampler and greyscale conversion also byte for byte against their original scalar code.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <unistd.h>
#include <cmocka.h>
#include <vips/vips.h>

#include "shoplens/image.h"
#include "image/image_internal.h"
#include "nn/npy.h"
#include "preproc/pattern.h"

/* ---- helpers --------------------------------------------------------------------------- */

/* A w x h uchar image with `bands` bands: left half colour a, right half colour b. */
static VipsImage *halves(int w, int h, int bands, const uint8_t *a, const uint8_t *b) {
    uint8_t *px = malloc((size_t)w * h * bands);
    assert_non_null(px);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            memcpy(px + ((size_t)y * w + x) * bands, x < w / 2 ? a : b, (size_t)bands);
    VipsImage *m = vips_image_new_from_memory_copy(px, (size_t)w * h * bands, w, h, bands, VIPS_FORMAT_UCHAR);
    free(px);
    assert_non_null(m);
    m->Type = bands >= 3 ? VIPS_INTERPRETATION_sRGB : VIPS_INTERPRETATION_B_W;
    return m;
}

/* Quality-95 JPEG of m (consumed, metadata kept); g_free the result. */
static void *jpeg_of(VipsImage *m, size_t *n) {
    void *buf = NULL;
    assert_int_equal(vips_jpegsave_buffer(m, &buf, n, "Q", 95, NULL), 0);
    g_object_unref(m);
    return buf;
}

static const uint8_t RED[4] = { 255, 0, 0, 255 }, BLUE[4] = { 0, 0, 255, 255 };

static void expect_px(const sl_image *img, int x, int y, int r, int g, int b, int tol) {
    const uint8_t *p = sl_image_cpixels(img) + (size_t)y * sl_image_stride(img) + (size_t)x * sl_image_channels(img);
    if (abs(p[0] - r) > tol || abs(p[1] - g) > tol || abs(p[2] - b) > tol) {
        print_error("pixel (%d,%d) = %d,%d,%d, expected %d,%d,%d +-%d\n", x, y, p[0], p[1], p[2], r, g, b, tol);
        fail();
    }
}

static sl_status load(const void *buf, size_t n, const sl_image_load_opts *o, sl_image **img,
                      sl_image_info *info, sl_error *err) {
    sl_error_clear(err);
    return sl_image_load_buffer(buf, n, o, img, info, err);
}

/* ---- formats --------------------------------------------------------------------------- */

typedef int (*saver)(VipsImage *, void **, size_t *);
static int save_jpeg(VipsImage *m, void **b, size_t *n) { return vips_jpegsave_buffer(m, b, n, "Q", 95, NULL); }
static int save_png(VipsImage *m, void **b, size_t *n) { return vips_pngsave_buffer(m, b, n, NULL); }
static int save_webp(VipsImage *m, void **b, size_t *n) { return vips_webpsave_buffer(m, b, n, "lossless", TRUE, NULL); }
static int save_gif(VipsImage *m, void **b, size_t *n) { return vips_gifsave_buffer(m, b, n, NULL); }
static int save_tiff(VipsImage *m, void **b, size_t *n) { return vips_tiffsave_buffer(m, b, n, NULL); }
static int save_avif(VipsImage *m, void **b, size_t *n) {
    return vips_heifsave_buffer(m, b, n, "compression", VIPS_FOREIGN_HEIF_COMPRESSION_AV1, "Q", 90, NULL);
}

static int save_png_palette(VipsImage *m, void **b, size_t *n) {
    return vips_pngsave_buffer(m, b, n, "palette", TRUE, NULL);
}

/* Encodes m (consumed) with s, decodes it with the default options; asserts success. */
static sl_image *roundtrip(VipsImage *m, saver s, sl_image_info *info) {
    void *buf = NULL;
    size_t n = 0;
    assert_int_equal(s(m, &buf, &n), 0);
    g_object_unref(m);
    sl_image *img = NULL;
    sl_error err;
    sl_status st = load(buf, n, NULL, &img, info, &err);
    g_free(buf);
    if (st != SL_OK) fail_msg("%s", err.message);
    return img;
}

static void check_format(saver s, const char *name, int tol) {
    assert_int_equal(sl_image_global_init(NULL), SL_OK);
    VipsImage *m = halves(80, 60, 3, RED, BLUE);
    void *buf = NULL;
    size_t n = 0;
    int rc = s(m, &buf, &n);
    g_object_unref(m);
    if (rc != 0) {
        vips_error_clear();
        if (strcmp(name, "avif") == 0) skip(); /* encoder not in this libheif build */
        fail_msg("cannot generate %s", name);
    }
    sl_image *img = NULL;
    sl_image_info info;
    sl_error err;
    sl_status st = load(buf, n, NULL, &img, &info, &err);
    g_free(buf);
    if (st != SL_OK) fail_msg("%s: %s", name, err.message);
    assert_string_equal(info.format, name);
    assert_int_equal(info.width, 80);
    assert_int_equal(info.height, 60);
    assert_int_equal(sl_image_width(img), 80);
    assert_int_equal(sl_image_height(img), 60);
    assert_int_equal(sl_image_channels(img), 3);
    assert_int_equal(sl_image_stride(img), 240);
    expect_px(img, 10, 30, 255, 0, 0, tol);
    expect_px(img, 70, 30, 0, 0, 255, tol);
    sl_image_free(img);
}

static void test_jpeg(void **s) { (void)s; check_format(save_jpeg, "jpeg", 12); }
static void test_png(void **s) { (void)s; check_format(save_png, "png", 0); }
static void test_webp(void **s) { (void)s; check_format(save_webp, "webp", 0); }
static void test_gif(void **s) { (void)s; check_format(save_gif, "gif", 0); }
static void test_tiff(void **s) { (void)s; check_format(save_tiff, "tiff", 0); }
static void test_avif(void **s) { (void)s; check_format(save_avif, "avif", 20); }

static void test_file_and_grey(void **s) {
    (void)s;
    VipsImage *m = halves(80, 60, 3, RED, BLUE);
    char path[] = "/tmp/sl_test_imgXXXXXX.png";
    int fd = mkstemps(path, 4);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(vips_pngsave(m, path, NULL), 0);
    g_object_unref(m);
    sl_image *img = NULL;
    sl_error err;
    sl_image_load_opts o = { 0 };
    o.grey = 1;
    assert_int_equal(sl_image_load_file(path, &o, &img, NULL, &err), SL_OK);
    assert_int_equal(sl_image_channels(img), 1);
    /* Rec. 601 luma of pure red is 0.299 * 255 = 76, of blue 0.114 * 255 = 29; libvips' B_W
     * goes through linear light, so allow a wide tolerance but keep the order. */
    int r = sl_image_cpixels(img)[30 * 80 + 10], b = sl_image_cpixels(img)[30 * 80 + 70];
    assert_true(r > b);
    assert_true(r > 40 && r < 140);
    sl_image_free(img);
    o.max_bytes = 10; /* the file is larger: refused from its size */
    assert_int_equal(sl_image_load_file(path, &o, &img, NULL, &err), SL_E_TOO_LARGE);
    assert_null(img);
    unlink(path);
    assert_int_equal(sl_image_load_file(path, NULL, &img, NULL, &err), SL_E_NOT_FOUND);
    assert_non_null(strstr(err.message, path));
}

/* ---- orientation and colour conversions -------------------------------------------------- */

static void test_exif_orientation(void **s) {
    (void)s;
    assert_int_equal(sl_image_global_init(NULL), SL_OK);
    VipsImage *m = halves(80, 60, 3, RED, BLUE);
    vips_image_set_int(m, VIPS_META_ORIENTATION, 6); /* display = stored rotated 90 deg CW */
    size_t n;
    void *buf = jpeg_of(m, &n);
    sl_image *img = NULL;
    sl_image_info info;
    sl_error err;
    assert_int_equal(load(buf, n, NULL, &img, &info, &err), SL_OK);
    assert_int_equal(info.orientation, 6);
    assert_int_equal(info.width, 80);
    assert_int_equal(sl_image_width(img), 60);
    assert_int_equal(sl_image_height(img), 80);
    expect_px(img, 30, 10, 255, 0, 0, 12); /* the left half is now on top */
    expect_px(img, 30, 70, 0, 0, 255, 12);
    sl_image_free(img);
    /* and the shrink-on-load path also rotates */
    sl_image_load_opts o = { 0 };
    o.max_side = 40;
    assert_int_equal(load(buf, n, &o, &img, &info, &err), SL_OK);
    assert_int_equal(sl_image_width(img), 30);
    assert_int_equal(sl_image_height(img), 40);
    expect_px(img, 15, 5, 255, 0, 0, 20);
    expect_px(img, 15, 35, 0, 0, 255, 20);
    sl_image_free(img);
    g_free(buf);
}

static void test_cmyk(void **s) {
    (void)s;
    assert_int_equal(sl_image_global_init(NULL), SL_OK);
    static const uint8_t cred[4] = { 0, 255, 255, 0 }, cwhite[4] = { 0, 0, 0, 0 };
    VipsImage *m = halves(80, 60, 4, cred, cwhite);
    m->Type = VIPS_INTERPRETATION_CMYK;
    sl_image_info info;
    sl_image *img = roundtrip(m, save_jpeg, &info);
    assert_int_equal(info.bands, 4);
    assert_int_equal(sl_image_channels(img), 3);
    const uint8_t *p = sl_image_cpixels(img) + 30 * sl_image_stride(img) + 10 * 3;
    assert_true(p[0] > 180 && p[1] < 90 && p[2] < 90);   /* magenta + yellow ink = red */
    p = sl_image_cpixels(img) + 30 * sl_image_stride(img) + 70 * 3;
    assert_true(p[0] > 230 && p[1] > 230 && p[2] > 230); /* no ink = white */
    sl_image_free(img);
}

static void test_16bit(void **s) {
    (void)s;
    assert_int_equal(sl_image_global_init(NULL), SL_OK);
    uint16_t px[20 * 10 * 3];
    for (int i = 0; i < 20 * 10; i++) {
        int left = (i % 20) < 10;
        px[i * 3 + 0] = left ? 65535 : 0;
        px[i * 3 + 1] = left ? 0 : 32896; /* 128 * 257 */
        px[i * 3 + 2] = 0;
    }
    VipsImage *m = vips_image_new_from_memory_copy(px, sizeof px, 20, 10, 3, VIPS_FORMAT_USHORT);
    m->Type = VIPS_INTERPRETATION_RGB16;
    sl_image_info info;
    sl_image *img = roundtrip(m, save_png, &info);
    assert_int_equal(info.bits, 16);
    expect_px(img, 2, 5, 255, 0, 0, 1);
    expect_px(img, 15, 5, 0, 128, 0, 1);
    sl_image_free(img);
    /* 16-bit grey -> 3 equal channels */
    uint16_t g[8 * 8];
    for (int i = 0; i < 64; i++) g[i] = 0x4000; /* 64 in 8 bits */
    m = vips_image_new_from_memory_copy(g, sizeof g, 8, 8, 1, VIPS_FORMAT_USHORT);
    m->Type = VIPS_INTERPRETATION_GREY16;
    img = roundtrip(m, save_png, &info);
    assert_int_equal(info.bands, 1);
    assert_int_equal(sl_image_channels(img), 3);
    expect_px(img, 4, 4, 64, 64, 64, 1);
    sl_image_free(img);
}

static void test_palette(void **s) {
    (void)s;
    assert_int_equal(sl_image_global_init(NULL), SL_OK);
    VipsImage *m = halves(40, 20, 3, RED, BLUE);
    void *buf;
    size_t n;
    assert_int_equal(save_png_palette(m, &buf, &n), 0);
    assert_true(((uint8_t *)buf)[25] == 3); /* IHDR colour type 3: indexed */
    g_free(buf);
    sl_image *img = roundtrip(m, save_png_palette, NULL);
    expect_px(img, 5, 10, 255, 0, 0, 0);
    expect_px(img, 35, 10, 0, 0, 255, 0);
    sl_image_free(img);
}

static void test_alpha_on_white(void **s) {
    (void)s;
    assert_int_equal(sl_image_global_init(NULL), SL_OK);
    static const uint8_t clear[4] = { 0, 0, 0, 0 }, half[4] = { 0, 0, 0, 128 };
    VipsImage *m = halves(40, 20, 4, clear, half);
    sl_image_info info;
    sl_image *img = roundtrip(m, save_png, &info);
    assert_int_equal(info.bands, 4);
    assert_int_equal(sl_image_channels(img), 3);
    expect_px(img, 5, 10, 255, 255, 255, 0);  /* transparent -> white */
    expect_px(img, 35, 10, 127, 127, 127, 1); /* 50% black over white */
    sl_image_free(img);
}

static void test_shrink_on_load(void **s) {
    (void)s;
    assert_int_equal(sl_image_global_init(NULL), SL_OK);
    VipsImage *m = halves(1024, 768, 3, RED, BLUE);
    void *buf;
    size_t n;
    assert_int_equal(vips_jpegsave_buffer(m, &buf, &n, NULL), 0);
    g_object_unref(m);
    sl_image_load_opts o = { 0 };
    o.max_side = 224;
    sl_image *img = NULL;
    sl_image_info info;
    sl_error err;
    assert_int_equal(load(buf, n, &o, &img, &info, &err), SL_OK);
    assert_int_equal(info.width, 1024);
    assert_int_equal(sl_image_width(img), 224);
    assert_int_equal(sl_image_height(img), 168);
    assert_int_equal(info.out_width, 224);
    expect_px(img, 20, 80, 255, 0, 0, 12);
    expect_px(img, 200, 80, 0, 0, 255, 12);
    sl_image_free(img);
    o.max_side = 4000; /* larger than the image: never enlarged */
    assert_int_equal(load(buf, n, &o, &img, &info, &err), SL_OK);
    assert_int_equal(sl_image_width(img), 1024);
    sl_image_free(img);
    /* on a textured image the reduced decode stays close to decode-then-resize */
    {
        sl_image *tex = sl_image_new(1024, 768, 3), *full = NULL, *ref = NULL, *fast = NULL;
        for (int y = 0; y < 768; y++)
            for (int x = 0; x < 1024; x++) {
                uint8_t *p = sl_image_pixels(tex) + (size_t)y * 3072 + (size_t)x * 3;
                p[0] = (uint8_t)((x / 16 + y / 16) % 2 ? 220 : 30);
                p[1] = (uint8_t)(x * 255 / 1023);
                p[2] = (uint8_t)((x * 7 + y * 3) % 256);
            }
        void *jb;
        size_t jn;
        assert_int_equal(sl_image_encode(tex, "jpeg", 90, &jb, &jn, &err), SL_OK);
        sl_image_load_opts fo = { 0 };
        assert_int_equal(load(jb, jn, &fo, &full, &info, &err), SL_OK);
        assert_int_equal(sl_image_resize_longest(full, 224, 1, &ref, &err), SL_OK);
        fo.max_side = 224;
        assert_int_equal(load(jb, jn, &fo, &fast, &info, &err), SL_OK);
        assert_int_equal(sl_image_width(fast), 224);
        double d = 0;
        size_t nb = sl_image_stride(ref) * (size_t)sl_image_height(ref);
        for (size_t i = 0; i < nb; i++) d += abs(sl_image_cpixels(ref)[i] - sl_image_cpixels(fast)[i]);
        print_message("shrink-on-load vs decode+resize: mean abs diff %.2f\n", d / nb);
        assert_true(d / nb < 4.0);
        free(jb);
        sl_image_free(tex); sl_image_free(full); sl_image_free(ref); sl_image_free(fast);
    }
    /* WebP: scaled decode, same size rule */
    VipsImage *wm = halves(1024, 768, 3, RED, BLUE);
    void *wbuf;
    size_t wn;
    assert_int_equal(save_webp(wm, &wbuf, &wn), 0);
    g_object_unref(wm);
    o.max_side = 224;
    assert_int_equal(load(wbuf, wn, &o, &img, &info, &err), SL_OK);
    g_free(wbuf);
    assert_int_equal(sl_image_width(img), 224);
    assert_int_equal(sl_image_height(img), 168);
    expect_px(img, 20, 80, 255, 0, 0, 2);
    expect_px(img, 200, 80, 0, 0, 255, 2);
    sl_image_free(img);
    /* truncated data on the shrink path is still an error */
    o.max_side = 100;
    assert_int_equal(load(buf, n * 6 / 10, &o, &img, &info, &err), SL_E_CORRUPT);
    assert_null(img);
    g_free(buf);
}


/* Stored quadrants R G / B W; expected upright layout for each EXIF orientation (TL TR BL BR). */
static void test_all_orientations(void **s) {
    (void)s;
    assert_int_equal(sl_image_global_init(NULL), SL_OK);
    static const char *const layout[9] = { "", "RGBW", "GRWB", "WBGR", "BWRG", "RBGW", "BRWG", "WGBR", "GWRB" };
    /* colours inside the CMYK gamut, so the CMYK round trip keeps them */
    static const uint8_t col[4][3] = { { 200, 30, 30 }, { 30, 150, 50 }, { 30, 50, 170 }, { 250, 250, 250 } };
    uint8_t px[48][64][3];
    for (int y = 0; y < 48; y++)
        for (int x = 0; x < 64; x++) memcpy(px[y][x], col[(y >= 24) * 2 + (x >= 32)], 3);
    for (int o = 1; o <= 8; o++)
        for (int cmyk = 0; cmyk < 2; cmyk++)
            for (int shrink = 0; shrink < 2; shrink++) {
                VipsImage *m = vips_image_new_from_memory_copy(px, sizeof px, 64, 48, 3, VIPS_FORMAT_UCHAR);
                m->Type = VIPS_INTERPRETATION_sRGB;
                if (cmyk) { /* the libvips path */
                    VipsImage *t;
                    assert_int_equal(vips_colourspace(m, &t, VIPS_INTERPRETATION_CMYK, NULL), 0);
                    g_object_unref(m);
                    m = t;
                }
                vips_image_set_int(m, VIPS_META_ORIENTATION, o);
                size_t n;
                void *buf = jpeg_of(m, &n);
                sl_image_load_opts op = { 0 };
                op.max_side = shrink ? 32 : 0;
                sl_image *img = NULL;
                sl_image_info info;
                sl_error err;
                sl_status st = load(buf, n, &op, &img, &info, &err);
                g_free(buf);
                if (st) fail_msg("orientation %d cmyk %d: %s", o, cmyk, err.message);
                assert_int_equal(info.orientation, o);
                int w = sl_image_width(img), h = sl_image_height(img);
                int ew = o >= 5 ? 48 : 64, eh = o >= 5 ? 64 : 48;
                if (shrink) { ew = ew * 32 / 64; eh = eh * 32 / 64; }
                assert_int_equal(w, ew);
                assert_int_equal(h, eh);
                for (int q = 0; q < 4; q++) {
                    const char *cs = "RGBW";
                    int k = (int)(strchr(cs, layout[o][q]) - cs);
                    int tol = cmyk ? 60 : 30;
                    expect_px(img, (q % 2) ? w * 3 / 4 : w / 4, (q / 2) ? h * 3 / 4 : h / 4, col[k][0], col[k][1], col[k][2], tol);
                }
                sl_image_free(img);
            }
}

static void test_grey_jpeg(void **s) {
    (void)s;
    assert_int_equal(sl_image_global_init(NULL), SL_OK);
    static const uint8_t dark[1] = { 40 }, light[1] = { 200 };
    VipsImage *m = halves(64, 32, 1, dark, light);
    size_t n;
    void *buf = jpeg_of(m, &n);
    sl_image *img = NULL;
    sl_image_info info;
    sl_error err;
    assert_int_equal(load(buf, n, NULL, &img, &info, &err), SL_OK);
    assert_int_equal(info.bands, 1);
    assert_int_equal(sl_image_channels(img), 3);
    expect_px(img, 8, 16, 40, 40, 40, 3);
    expect_px(img, 56, 16, 200, 200, 200, 3);
    sl_image_free(img);
    sl_image_load_opts o = { 0 };
    o.grey = 1;
    assert_int_equal(load(buf, n, &o, &img, &info, &err), SL_OK);
    assert_int_equal(sl_image_channels(img), 1);
    assert_true(abs(sl_image_cpixels(img)[16 * 64 + 8] - 40) <= 3);
    sl_image_free(img);
    /* a byte flipped in the entropy-coded data: an error or an image, never a crash; cut at
     * every tenth of the file: always SL_E_CORRUPT */
    for (int k = 1; k < 10; k++) {
        assert_int_equal(load(buf, n * (size_t)k / 10, NULL, &img, &info, &err), SL_E_CORRUPT);
        assert_null(img);
    }
    g_free(buf);
}

/* ---- bad input ------------------------------------------------------------------------- */

static void test_bad_inputs(void **s) {
    (void)s;
    sl_image *img = (sl_image *)1;
    sl_image_info info;
    sl_error err;
    /* zero bytes */
    assert_int_equal(load("", 0, NULL, &img, &info, &err), SL_E_CORRUPT);
    assert_null(img);
    /* random bytes (fixed, no magic) */
    uint8_t rnd[4096];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof rnd; i++) { x = x * 1103515245u + 12345u; rnd[i] = (uint8_t)(x >> 16); }
    rnd[0] = 0x42; rnd[1] = 0x13;
    assert_int_equal(load(rnd, sizeof rnd, NULL, &img, &info, &err), SL_E_UNSUPPORTED);
    assert_string_equal(info.format, "unknown");
    /* a JPEG cut in half */
    VipsImage *m = halves(256, 192, 3, RED, BLUE);
    void *buf;
    size_t n;
    assert_int_equal(vips_jpegsave_buffer(m, &buf, &n, NULL), 0);
    assert_int_equal(load(buf, n / 2, NULL, &img, &info, &err), SL_E_CORRUPT);
    assert_null(img);
    assert_string_equal(info.format, "jpeg");
    /* the same JPEG claiming 12-bit samples: refused as unsupported, not as corrupt */
    {
        uint8_t *j = malloc(n);
        memcpy(j, buf, n);
        size_t sof = 0;
        for (size_t i = 2; i + 4 < n; i++)
            if (j[i] == 0xff && j[i + 1] == 0xc0) { sof = i; break; }
        assert_true(sof > 0);
        j[sof + 4] = 12; /* FF C0, 2 length bytes, then the sample precision */
        assert_int_equal(load(j, n, NULL, &img, &info, &err), SL_E_UNSUPPORTED);
        assert_null(img);
        free(j);
    }
    /* over the byte limit */
    sl_image_load_opts o = { 0 };
    o.max_bytes = n - 1;
    assert_int_equal(load(buf, n, &o, &img, &info, &err), SL_E_TOO_LARGE);
    /* over the pixel limit (header says 256x192) */
    o.max_bytes = 0;
    o.max_pixels = 256 * 192 - 1;
    assert_int_equal(load(buf, n, &o, &img, &info, &err), SL_E_TOO_LARGE);
    assert_null(img);
    o.max_pixels = 256 * 192;
    assert_int_equal(load(buf, n, &o, &img, &info, &err), SL_OK);
    sl_image_free(img);
    g_free(buf);
    /* a PNG whose IDAT CRC is broken */
    assert_int_equal(vips_pngsave_buffer(m, &buf, &n, "compression", 1, NULL), 0);
    g_object_unref(m);
    uint8_t *p = buf;
    size_t off = 8;
    int broke = 0;
    while (off + 12 <= n) {
        uint32_t clen = (uint32_t)p[off] << 24 | (uint32_t)p[off + 1] << 16 | (uint32_t)p[off + 2] << 8 | p[off + 3];
        if (memcmp(p + off + 4, "IDAT", 4) == 0) { p[off + 8 + clen] ^= 0x5a; broke = 1; break; }
        off += 12 + clen;
    }
    assert_true(broke);
    assert_int_equal(load(buf, n, NULL, &img, &info, &err), SL_E_CORRUPT);
    assert_null(img);
    g_free(buf);
    /* a PNG header claiming 100000 x 100000 */
    static const uint8_t huge[] = {
        0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n',
        0, 0, 0, 13, 'I', 'H', 'D', 'R', 0, 1, 0x86, 0xa0, 0, 1, 0x86, 0xa0, 8, 2, 0, 0, 0,
        0x27, 0x30, 0x9c, 0x9f, /* CRC of IHDR */
        0x00, 0x00, 0x00, 0x0b, 'I', 'D', 'A', 'T', 0x78, 0x9c, 0x63, 0x60, 0x40, 0x05, 0x00,
        0x00, 0x10, 0x00, 0x01, 0x39, 0xbd, 0x8f, 0x65, /* 16 zero bytes, deflated */
        0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xae, 0x42, 0x60, 0x82 };
    assert_int_equal(load(huge, sizeof huge, NULL, &img, &info, &err), SL_E_TOO_LARGE);
    assert_int_equal(info.width, 100000);
    assert_int_equal(info.height, 100000);
    assert_null(img);
    /* a PNG of 70000 x 1: few pixels, but a side over SL_IMAGE_MAX_SIDE_MAX */
    {
        VipsImage *line = NULL;
        assert_int_equal(vips_black(&line, 70000, 1, "bands", 3, NULL), 0);
        VipsImage *u8 = NULL;
        assert_int_equal(vips_cast(line, &u8, VIPS_FORMAT_UCHAR, NULL), 0);
        g_object_unref(line);
        void *lb;
        size_t ln;
        assert_int_equal(vips_pngsave_buffer(u8, &lb, &ln, NULL), 0);
        g_object_unref(u8);
        assert_int_equal(load(lb, ln, NULL, &img, &info, &err), SL_E_TOO_LARGE);
        assert_null(img);
        g_free(lb);
    }
    /* SVG and PDF: refused, named */
    static const char svg[] = "<?xml version=\"1.0\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" "
                              "width=\"10\" height=\"10\"><rect width=\"10\" height=\"10\"/></svg>";
    assert_int_equal(load(svg, sizeof svg - 1, NULL, &img, &info, &err), SL_E_UNSUPPORTED);
    assert_string_equal(info.format, "svg");
    assert_non_null(strstr(err.message, "svg"));
    static const char pdf[] = "%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n";
    assert_int_equal(load(pdf, sizeof pdf - 1, NULL, &img, &info, &err), SL_E_UNSUPPORTED);
    assert_non_null(strstr(err.message, "pdf"));
    static const uint8_t bmp[] = { 'B', 'M', 0x3e, 0, 0, 0, 0, 0, 0, 0, 0x36, 0, 0, 0 };
    assert_int_equal(load(bmp, sizeof bmp, NULL, &img, &info, &err), SL_E_UNSUPPORTED);
    assert_string_equal(info.format, "bmp");
    /* and libvips itself refuses the blocked loaders after init */
    VipsImage *v = vips_image_new_from_buffer(svg, sizeof svg - 1, "", NULL);
    assert_null(v);
    vips_error_clear();
    static const char matrix[] = "2 2\n1 2\n3 4\n";
    assert_true(vips_type_find("VipsOperation", "matrixload_source") == 0 ||
                vips_image_new_from_buffer(matrix, sizeof matrix - 1, "", NULL) == NULL);
    vips_error_clear();
    /* arguments */
    assert_int_equal(sl_image_load_buffer(svg, 10, NULL, NULL, NULL, NULL), SL_E_INVALID);
    o.max_pixels = 0;
    o.max_side = -1;
    assert_int_equal(load(svg, 10, &o, &img, &info, &err), SL_E_INVALID);
}

/* ---- handle and encoding --------------------------------------------------------------- */

static void test_handle_and_encode(void **s) {
    (void)s;
    assert_null(sl_image_new(0, 5, 3));
    assert_null(sl_image_new(5, 5, 2));
    assert_null(sl_image_new(SL_IMAGE_MAX_SIDE_MAX + 1, 1, 1));
    sl_image_free(NULL);
    uint8_t px[3 * 4 * 3];
    for (size_t i = 0; i < sizeof px; i++) px[i] = (uint8_t)(i * 7);
    sl_image *a = sl_image_from_pixels(4, 3, 3, px, 12);
    assert_non_null(a);
    sl_image *b = sl_image_clone(a);
    assert_memory_equal(sl_image_cpixels(b), px, sizeof px);
    void *buf;
    size_t n;
    sl_error err;
    assert_int_equal(sl_image_encode(a, "png", 0, &buf, &n, &err), SL_OK);
    sl_image *c = NULL;
    assert_int_equal(load(buf, n, NULL, &c, NULL, &err), SL_OK);
    assert_memory_equal(sl_image_cpixels(c), px, sizeof px); /* PNG is lossless */
    free(buf);
    sl_image_free(c);
    assert_int_equal(sl_image_encode(a, "gif", 0, &buf, &n, &err), SL_E_UNSUPPORTED);
    assert_int_equal(sl_image_encode(a, "jpeg", 101, &buf, &n, &err), SL_E_INVALID);
    /* metadata stripped: an image loaded from an EXIF JPEG re-encodes without EXIF */
    assert_int_equal(sl_image_encode(a, "jpeg", 90, &buf, &n, &err), SL_OK);
    assert_true(n > 100);
    int has_exif = 0;
    for (size_t i = 0; i + 4 < n; i++)
        if (memcmp((uint8_t *)buf + i, "Exif", 4) == 0) has_exif = 1;
    assert_false(has_exif);
    free(buf);
    char path[] = "/tmp/sl_test_saveXXXXXX.jpg";
    int fd = mkstemps(path, 4);
    close(fd);
    assert_int_equal(sl_image_save_file(b, path, 90, &err), SL_OK);
    sl_image_info info;
    assert_int_equal(sl_image_load_file(path, NULL, &c, &info, &err), SL_OK);
    assert_string_equal(info.format, "jpeg");
    sl_image_free(c);
    unlink(path);
    assert_int_equal(sl_image_save_file(b, "/tmp/x.bmp", 90, &err), SL_E_UNSUPPORTED);
    sl_image_free(a);
    sl_image_free(b);
}



/* ---- preprocessing and augmentations, hand-computed ------------------------------------ */

static sl_image *grey_img(int w, int h, const uint8_t *v) {
    sl_image *img = sl_image_from_pixels(w, h, 1, v, (size_t)w);
    assert_non_null(img);
    return img;
}
static int at(const sl_image *img, int x, int y, int c) {
    return sl_image_cpixels(img)[(size_t)y * sl_image_stride(img) + (size_t)x * sl_image_channels(img) + c];
}

static void test_resize(void **s) {
    (void)s;
    sl_error err;
    sl_image *out = NULL;
    /* area averaging: 4x2 -> 2x1 averages 2x2 blocks */
    static const uint8_t a[] = { 10, 20, 30, 40, 50, 60, 70, 80 };
    sl_image *img = grey_img(4, 2, a);
    assert_int_equal(sl_image_resize(img, 2, 1, SL_RESIZE_STRETCH, 0, &out, &err), SL_OK);
    assert_int_equal(at(out, 0, 0, 0), 35);
    assert_int_equal(at(out, 1, 0, 0), 55);
    sl_image_free(out);
    sl_image_free(img);
    /* fractional footprints: 3 -> 2, output 0 covers [0, 1.5): (0 + 90 * .5) / 1.5 = 30 */
    static const uint8_t b[] = { 0, 90, 180 };
    img = grey_img(3, 1, b);
    assert_int_equal(sl_image_resize(img, 2, 1, SL_RESIZE_STRETCH, 0, &out, &err), SL_OK);
    assert_int_equal(at(out, 0, 0, 0), 30);
    assert_int_equal(at(out, 1, 0, 0), 150);
    sl_image_free(out);
    sl_image_free(img);
    /* bilinear enlarge 2 -> 4 with aligned centres: 0, 25, 75, 100 */
    static const uint8_t c[] = { 0, 100 };
    img = grey_img(2, 1, c);
    assert_int_equal(sl_image_resize(img, 4, 1, SL_RESIZE_STRETCH, 0, &out, &err), SL_OK);
    assert_int_equal(at(out, 0, 0, 0), 0);
    assert_int_equal(at(out, 1, 0, 0), 25);
    assert_int_equal(at(out, 2, 0, 0), 75);
    assert_int_equal(at(out, 3, 0, 0), 100);
    sl_image_free(out);
    sl_image_free(img);
    /* modes on a 100x50 colour image: black borders x < 25 and x >= 75, white middle */
    sl_image *wide = sl_image_new(100, 50, 3);
    for (int y = 0; y < 50; y++)
        for (int x = 25; x < 75; x++) memset(sl_image_pixels(wide) + (size_t)y * 300 + x * 3, 255, 3);
    assert_int_equal(sl_image_resize(wide, 20, 20, SL_RESIZE_FIT, 0, &out, &err), SL_OK);
    assert_int_equal(sl_image_width(out), 20);
    assert_int_equal(sl_image_height(out), 10);
    sl_image_free(out);
    assert_int_equal(sl_image_resize(wide, 20, 20, SL_RESIZE_FILL, 0, &out, &err), SL_OK);
    assert_int_equal(sl_image_width(out), 20);
    assert_int_equal(sl_image_height(out), 20);
    for (int y = 0; y < 20; y++)
        for (int x = 0; x < 20; x++) assert_int_equal(at(out, x, y, 1), 255); /* only the middle */
    sl_image_free(out);
    assert_int_equal(sl_image_resize(wide, 20, 20, SL_RESIZE_PAD, 0x102030, &out, &err), SL_OK);
    assert_int_equal(sl_image_height(out), 20);
    assert_int_equal(at(out, 10, 2, 0), 0x10);
    assert_int_equal(at(out, 10, 2, 2), 0x30);
    assert_int_equal(at(out, 10, 17, 1), 0x20);
    assert_int_equal(at(out, 10, 10, 0), 255); /* image rows 5..14, middle white */
    assert_int_equal(at(out, 0, 10, 0), 0);
    sl_image_free(out);
    assert_int_equal(sl_image_resize_longest(wide, 40, 1, &out, &err), SL_OK);
    assert_int_equal(sl_image_width(out), 40);
    assert_int_equal(sl_image_height(out), 20);
    sl_image_free(out);
    assert_int_equal(sl_image_resize_longest(wide, 200, 1, &out, &err), SL_OK);
    assert_int_equal(sl_image_width(out), 100);
    sl_image_free(out);
    assert_int_equal(sl_image_scale(wide, 0.5f, &out, &err), SL_OK);
    assert_int_equal(sl_image_width(out), 50);
    assert_int_equal(sl_image_height(out), 25);
    assert_int_equal(at(out, 11, 5, 0), 0);   /* source 22, 23: black */
    assert_int_equal(at(out, 12, 5, 0), 128); /* source 24 black, 25 white */
    assert_int_equal(at(out, 25, 5, 0), 255);
    sl_image_free(out);
    assert_int_equal(sl_image_resize(wide, 0, 20, SL_RESIZE_FIT, 0, &out, &err), SL_E_INVALID);
    assert_null(out);
    assert_int_equal(sl_image_scale(wide, -1.0f, &out, &err), SL_E_INVALID);
    sl_image_free(wide);
}

/* ---- resampler and greyscale against the original scalar code -------------------------- */

/* The resampler's passes and greyscale conversion as they were before their vectorized versions,
 * kept as the reference: the library must give the same bytes. The contribution table (weights)
 * was not changed by the vectorization; the reference takes it from the library. */
typedef sl__contrib ref_contrib;

static void ref_hpass(const float *row, int c, int dw, const ref_contrib *cx, float *t) {
    if (c == 3) {
        for (int x = 0; x < dw; x++, t += 3) {
            const float *p = row + (size_t)cx[x].first * 3, *w = cx[x].w;
            float a0 = 0, a1 = 0, a2 = 0;
            for (int j = 0; j < cx[x].count; j++, p += 3) {
                a0 += w[j] * p[0];
                a1 += w[j] * p[1];
                a2 += w[j] * p[2];
            }
            t[0] = a0;
            t[1] = a1;
            t[2] = a2;
        }
        return;
    }
    for (int x = 0; x < dw; x++) {
        const float *p = row + cx[x].first, *w = cx[x].w;
        float a = 0;
        for (int j = 0; j < cx[x].count; j++) a += w[j] * p[j];
        t[x] = a;
    }
}

/* w x h x c pixels resized to dw x dh (malloc'ed) */
static uint8_t *ref_resize(const uint8_t *data, int sw, int sh, int c, int dw, int dh) {
    size_t stride = (size_t)sw * c, srclen = stride, rowlen = (size_t)dw * c;
    uint8_t *dst = malloc(rowlen * (size_t)dh);
    float *px = NULL, *py = NULL;
    ref_contrib *cx = sl__contribs(sw, dw, &px), *cy = sl__contribs(sh, dh, &py);
    assert_true(cx && cy);
    float *acc = malloc(srclen * sizeof *acc), *orow = malloc(rowlen * sizeof *orow);
    assert_true(dst && acc && orow);
    for (int y = 0; y < dh; y++) {
        const uint8_t *r0 = data + (size_t)cy[y].first * stride;
        float w0 = cy[y].w[0];
        for (size_t i = 0; i < srclen; i++) acc[i] = w0 * r0[i];
        for (int j = 1; j < cy[y].count; j++) {
            const uint8_t *rj = data + (size_t)(cy[y].first + j) * stride;
            float wj = cy[y].w[j];
            for (size_t i = 0; i < srclen; i++) acc[i] += wj * rj[i];
        }
        ref_hpass(acc, c, dw, cx, orow);
        uint8_t *o = dst + (size_t)y * rowlen;
        for (size_t i = 0; i < rowlen; i++) {
            float v = orow[i] + 0.5f;
            v = v > 0.0f ? v : 0.0f;
            v = v < 255.0f ? v : 255.0f;
            o[i] = (uint8_t)(int)v;
        }
    }
    free(cx); free(px); free(cy); free(py); free(acc); free(orow);
    return dst;
}

static uint8_t ref_luma(const uint8_t *p) {
    return (uint8_t)((299u * p[0] + 587u * p[1] + 114u * p[2] + 500u) / 1000u);
}

static uint32_t rng_state = 12345u;
static uint32_t rng_next(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return rng_state >> 8;
}

/* Random pixels: noise, or smooth ramps with noise (the kind of content a photo has), with
 * some runs of 0 and 255. */
static void fill_pixels(uint8_t *px, size_t n, int kind) {
    for (size_t i = 0; i < n; i++) {
        uint32_t r = rng_next();
        if (kind == 0) px[i] = (uint8_t)r;
        else if (kind == 1) px[i] = (uint8_t)((i * 7 / 3 + (r & 15)) & 255);
        else px[i] = (r & 3) == 0 ? 0 : (r & 3) == 1 ? 255 : (uint8_t)(r >> 8);
    }
}

static void test_resize_vs_reference(void **s) {
    (void)s;
    /* odd sizes down and up, in both directions, 1 and 3 channels, the query shape
     * (640x480 -> 384x288) and strong reductions (many taps a pixel) */
    static const int sizes[][4] = {
        { 640, 480, 384, 288 }, { 480, 640, 288, 384 }, { 1, 1, 1, 1 }, { 1, 1, 5, 3 },
        { 2, 3, 1, 1 }, { 7, 5, 3, 2 }, { 13, 11, 17, 19 }, { 17, 9, 16, 9 }, { 33, 29, 11, 7 },
        { 100, 37, 64, 23 }, { 101, 99, 100, 98 }, { 255, 3, 254, 5 }, { 300, 200, 7, 5 },
        { 500, 400, 31, 2 }, { 64, 64, 64, 64 }, { 37, 41, 73, 83 }, { 3, 200, 2, 150 },
        { 321, 243, 192, 145 }, { 1000, 3, 9, 1 }, { 9, 9, 4, 4 }, { 2001, 1499, 640, 479 },
        { 1500, 1000, 93, 61 },
    };
    for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++)
        for (int c = 1; c <= 3; c += 2)
            for (int kind = 0; kind < 3; kind++) {
                int sw = sizes[t][0], sh = sizes[t][1], dw = sizes[t][2], dh = sizes[t][3];
                size_t n = (size_t)sw * sh * c;
                uint8_t *px = malloc(n);
                assert_non_null(px);
                fill_pixels(px, n, kind);
                sl_image *img = sl_image_from_pixels(sw, sh, c, px, (size_t)sw * c), *out = NULL;
                assert_non_null(img);
                sl_error err;
                assert_int_equal(sl_image_resize(img, dw, dh, SL_RESIZE_STRETCH, 0, &out, &err), SL_OK);
                uint8_t *ref = ref_resize(px, sw, sh, c, dw, dh);
                assert_int_equal(sl_image_width(out), dw);
                assert_int_equal(sl_image_height(out), dh);
                assert_memory_equal(sl_image_cpixels(out), ref, (size_t)dw * dh * c);
                free(ref);
                sl_image_free(out);
                sl_image_free(img);
                free(px);
            }
}

static void test_grey_vs_reference(void **s) {
    (void)s;
    sl_error err;
    /* every width 1..70 (the vector loop's tail and its 16-pixel steps) on a few heights */
    for (int w = 1; w <= 70; w++)
        for (int h = 1; h <= 3; h++) {
            size_t n = (size_t)w * h;
            uint8_t *px = malloc(n * 3);
            assert_non_null(px);
            fill_pixels(px, n * 3, (w + h) % 3);
            sl_image *img = sl_image_from_pixels(w, h, 3, px, (size_t)w * 3), *g = NULL;
            assert_non_null(img);
            assert_int_equal(sl_image_to_grey(img, &g, &err), SL_OK);
            for (size_t i = 0; i < n; i++) assert_int_equal(sl_image_cpixels(g)[i], ref_luma(px + i * 3));
            sl_image_free(g);
            sl_image_free(img);
            free(px);
        }
    /* all 2^24 colours once (4096 x 4096) */
    size_t n = (size_t)4096 * 4096;
    uint8_t *px = malloc(n * 3);
    assert_non_null(px);
    for (size_t i = 0; i < n; i++) {
        px[i * 3] = (uint8_t)(i >> 16);
        px[i * 3 + 1] = (uint8_t)(i >> 8);
        px[i * 3 + 2] = (uint8_t)i;
    }
    sl_image *img = sl_image_from_pixels(4096, 4096, 3, px, 4096 * 3), *g = NULL;
    assert_non_null(img);
    assert_int_equal(sl_image_to_grey(img, &g, &err), SL_OK);
    const uint8_t *gp = sl_image_cpixels(g);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += gp[i] != ref_luma(px + i * 3);
    assert_int_equal(bad, 0);
    sl_image_free(g);
    sl_image_free(img);
    free(px);
}

static void test_grey_and_float(void **s) {
    (void)s;
    static const uint8_t px[] = { 255, 0, 0, 0, 255, 0, 0, 0, 255, 100, 100, 100 };
    sl_image *img = sl_image_from_pixels(4, 1, 3, px, 12), *g = NULL;
    sl_error err;
    assert_int_equal(sl_image_to_grey(img, &g, &err), SL_OK);
    assert_int_equal(sl_image_channels(g), 1);
    assert_int_equal(at(g, 0, 0, 0), 76);  /* .299 * 255 */
    assert_int_equal(at(g, 1, 0, 0), 150); /* .587 * 255 */
    assert_int_equal(at(g, 2, 0, 0), 29);  /* .114 * 255 */
    assert_int_equal(at(g, 3, 0, 0), 100);
    sl_image_free(g);
    static const uint8_t two[] = { 255, 0, 51, 0, 255, 102 };
    sl_image *t = sl_image_from_pixels(2, 1, 3, two, 6);
    const float mean[3] = { 0.5f, 0.5f, 0.0f }, sd[3] = { 0.5f, 0.5f, 0.2f };
    float chw[6], hwc[6];
    assert_int_equal(sl_image_to_float(t, mean, sd, SL_LAYOUT_CHW, chw, 6, &err), SL_OK);
    assert_int_equal(sl_image_to_float(t, mean, sd, SL_LAYOUT_HWC, hwc, 6, &err), SL_OK);
    const float e_chw[6] = { 1, -1, -1, 1, 1, 2 }, e_hwc[6] = { 1, -1, 1, -1, 1, 2 };
    for (int i = 0; i < 6; i++) {
        assert_true(fabsf(chw[i] - e_chw[i]) < 1e-5f);
        assert_true(fabsf(hwc[i] - e_hwc[i]) < 1e-5f);
    }
    assert_int_equal(sl_image_to_float(t, NULL, NULL, SL_LAYOUT_HWC, hwc, 6, &err), SL_OK);
    assert_true(fabsf(hwc[2] - 0.2f) < 1e-6f);
    assert_int_equal(sl_image_to_float(t, mean, sd, SL_LAYOUT_CHW, chw, 5, &err), SL_E_INVALID);
    sl_image_free(t);
    sl_image_free(img);
}

static void test_denoise(void **s) {
    (void)s;
    sl_error err;
    uint8_t imp[81] = { 0 };
    imp[40] = 255;
    sl_image *img = grey_img(9, 9, imp), *out = NULL;
    /* sigma 1: kernel radius 3, k0 = 1 / (1 + 2(e^-.5 + e^-2 + e^-4.5)) = .39905; centre = 255 k0^2 */
    assert_int_equal(sl_image_gaussian(img, 1.0f, &out, &err), SL_OK);
    assert_int_equal(at(out, 4, 4, 0), 41);
    assert_int_equal(at(out, 3, 4, 0), at(out, 5, 4, 0));
    assert_int_equal(at(out, 4, 3, 0), at(out, 3, 4, 0));
    assert_int_equal(at(out, 3, 4, 0), 25); /* 255 * k0 * k1, k1 = .24203 */
    sl_image_free(out);
    /* median removes the impulse */
    assert_int_equal(sl_image_median(img, 1, &out, &err), SL_OK);
    for (int i = 0; i < 81; i++) assert_int_equal(sl_image_cpixels(out)[i], 0);
    sl_image_free(out);
    sl_image_free(img);
    static const uint8_t nine[] = { 9, 1, 8, 2, 7, 3, 6, 4, 5 };
    img = grey_img(3, 3, nine);
    assert_int_equal(sl_image_median(img, 1, &out, &err), SL_OK);
    assert_int_equal(at(out, 1, 1, 0), 5);
    /* corner (0,0) with replicated borders: 9 9 1 / 9 9 1 / 2 2 7 -> 7 */
    assert_int_equal(at(out, 0, 0, 0), 7);
    sl_image_free(out);
    assert_int_equal(sl_image_median(img, 8, &out, &err), SL_E_INVALID);
    assert_int_equal(sl_image_gaussian(img, 0.0f, &out, &err), SL_E_INVALID);
    sl_image_free(img);
}

static void test_equalize_clahe(void **s) {
    (void)s;
    sl_error err;
    static const uint8_t v[] = { 10, 10, 20, 30 };
    sl_image *img = grey_img(2, 2, v), *out = NULL;
    /* (cdf - cdf_min) / (N - cdf_min) * 255: 10 -> 0, 20 -> 127.5, 30 -> 255 */
    assert_int_equal(sl_image_equalize(img, &out, &err), SL_OK);
    assert_int_equal(at(out, 0, 0, 0), 0);
    assert_int_equal(at(out, 0, 1, 0), 128);
    assert_int_equal(at(out, 1, 1, 0), 255);
    sl_image_free(out);
    /* CLAHE, one tile, no effective clip: cdf * 255 / N: 10 -> 127.5, 20 -> 191.25, 30 -> 255 */
    assert_int_equal(sl_image_clahe(img, 1, 1, 256.0f, &out, &err), SL_OK);
    assert_int_equal(at(out, 0, 0, 0), 128);
    assert_int_equal(at(out, 0, 1, 0), 191);
    assert_int_equal(at(out, 1, 1, 0), 255);
    sl_image_free(out);
    sl_image_free(img);
    /* flat 16x16 image of 100: unclipped it maps to 255; with clip limit 1 every bin holds one
     * count after redistribution, so 100 -> 101 * 255 / 256 = 100.6 -> 101 */
    uint8_t flat[256];
    memset(flat, 100, sizeof flat);
    img = grey_img(16, 16, flat);
    assert_int_equal(sl_image_clahe(img, 1, 1, 256.0f, &out, &err), SL_OK);
    assert_int_equal(at(out, 5, 5, 0), 255);
    sl_image_free(out);
    assert_int_equal(sl_image_clahe(img, 1, 1, 1.0f, &out, &err), SL_OK);
    assert_int_equal(at(out, 5, 5, 0), 101);
    sl_image_free(out);
    sl_image_free(img);
    /* two tiles: dark left half, bright right half; each edge uses its own tile only, the
     * middle blends: pixel 50 left of centre sees map0(50)=255 and map1(50)=0 */
    uint8_t lr[16 * 4];
    for (int i = 0; i < 64; i++) lr[i] = (i % 16) < 8 ? 50 : 200;
    img = grey_img(16, 4, lr);
    assert_int_equal(sl_image_clahe(img, 2, 1, 256.0f, &out, &err), SL_OK);
    assert_int_equal(at(out, 0, 0, 0), 255);
    assert_int_equal(at(out, 15, 0, 0), 255);
    /* x = 7: fx = 7.5 * 2 / 16 - .5 = .4375 -> 255 * (1 - .4375) = 143.4 */
    assert_int_equal(at(out, 7, 0, 0), 143);
    sl_image_free(out);
    assert_int_equal(sl_image_clahe(img, 0, 1, 2.0f, &out, &err), SL_E_INVALID);
    assert_int_equal(sl_image_clahe(img, 2, 2, 0.5f, &out, &err), SL_E_INVALID);
    sl_image_free(img);
    /* colour: luma equalized, a grey pixel stays grey */
    static const uint8_t col[] = { 10, 10, 10, 200, 200, 200 };
    img = sl_image_from_pixels(2, 1, 3, col, 6);
    assert_int_equal(sl_image_equalize(img, &out, &err), SL_OK);
    assert_int_equal(at(out, 0, 0, 0), 0);
    assert_int_equal(at(out, 1, 0, 2), 255);
    assert_int_equal(at(out, 1, 0, 0), at(out, 1, 0, 1));
    sl_image_free(out);
    sl_image_free(img);
}

static void test_augment(void **s) {
    (void)s;
    sl_error err;
    static const uint8_t sq[] = { 1, 2, 3, 4, 5, 6, 7, 8, 9 };
    sl_image *img = grey_img(3, 3, sq), *out = NULL;
    /* 90 degrees counter-clockwise: the right column becomes the top row */
    assert_int_equal(sl_image_rotate(img, 90.0f, 0, &out, &err), SL_OK);
    static const uint8_t r90[] = { 3, 6, 9, 2, 5, 8, 1, 4, 7 };
    assert_memory_equal(sl_image_cpixels(out), r90, 9);
    sl_image_free(out);
    uint8_t seven[25];
    memset(seven, 7, sizeof seven);
    sl_image *five = grey_img(5, 5, seven);
    assert_int_equal(sl_image_rotate(five, 45.0f, 0xffffff, &out, &err), SL_OK);
    assert_int_equal(at(out, 2, 2, 0), 7);
    assert_int_equal(at(out, 1, 2, 0), 7);
    /* corner (-2,-2) from the centre comes from (0, -2.83): outside, background */
    assert_int_equal(at(out, 0, 0, 0), 255);
    sl_image_free(out);
    sl_image_free(five);
    assert_int_equal(sl_image_crop(img, 1, 1, 2, 2, &out, &err), SL_OK);
    static const uint8_t cr[] = { 5, 6, 8, 9 };
    assert_memory_equal(sl_image_cpixels(out), cr, 4);
    sl_image_free(out);
    assert_int_equal(sl_image_crop(img, 2, 2, 2, 1, &out, &err), SL_E_INVALID);
    /* warp: translation by one pixel to the left, the last column is background */
    const double tr[9] = { 1, 0, 1, 0, 1, 0, 0, 0, 1 };
    assert_int_equal(sl_image_warp(img, tr, 3, 3, 0x000000, &out, &err), SL_OK);
    assert_int_equal(at(out, 0, 0, 0), 2);
    assert_int_equal(at(out, 1, 2, 0), 9);
    sl_image_free(out);
    const double hh[9] = { 2, 0, 0, 0, 2, 0, 0, 0, 2 }; /* identity as a projective matrix */
    assert_int_equal(sl_image_warp(img, hh, 3, 3, 0, &out, &err), SL_OK);
    assert_memory_equal(sl_image_cpixels(out), sq, 9);
    sl_image_free(out);
    /* brightness/contrast: (100 - 128) * 2 + 128 + 10 = 82, clamped at the ends */
    static const uint8_t bc[] = { 100, 0, 255 };
    sl_image *b = grey_img(3, 1, bc);
    assert_int_equal(sl_image_adjust(b, 10.0f, 2.0f, &out, &err), SL_OK);
    assert_int_equal(at(out, 0, 0, 0), 82);
    assert_int_equal(at(out, 1, 0, 0), 0);
    assert_int_equal(at(out, 2, 0, 0), 255);
    sl_image_free(out);
    sl_image_free(b);
    sl_image_free(img);
    /* noise: seeded, zero-mean */
    uint8_t mid[64 * 64];
    memset(mid, 128, sizeof mid);
    img = grey_img(64, 64, mid);
    sl_image *n1 = NULL, *n2 = NULL, *n3 = NULL;
    assert_int_equal(sl_image_noise(img, 10.0f, 7, &n1, &err), SL_OK);
    assert_int_equal(sl_image_noise(img, 10.0f, 7, &n2, &err), SL_OK);
    assert_int_equal(sl_image_noise(img, 10.0f, 8, &n3, &err), SL_OK);
    assert_memory_equal(sl_image_cpixels(n1), sl_image_cpixels(n2), sizeof mid);
    assert_memory_not_equal(sl_image_cpixels(n1), sl_image_cpixels(n3), sizeof mid);
    double sum = 0, sq2 = 0;
    for (size_t i = 0; i < sizeof mid; i++) {
        double d = sl_image_cpixels(n1)[i] - 128.0;
        sum += d;
        sq2 += d * d;
    }
    assert_true(fabs(sum / sizeof mid) < 1.0);
    assert_true(fabs(sqrt(sq2 / sizeof mid) - 10.0) < 1.0);
    sl_image_free(n1);
    sl_image_free(n2);
    sl_image_free(n3);
    /* JPEG round trip keeps size and, for a flat image, the value */
    assert_int_equal(sl_image_jpeg_roundtrip(img, 50, &out, &err), SL_OK);
    assert_int_equal(sl_image_width(out), 64);
    assert_int_equal(sl_image_channels(out), 1);
    assert_true(abs(at(out, 30, 30, 0) - 128) <= 2);
    sl_image_free(out);
    sl_image_free(img);
}

/* Pillow-compatible resize: the bytes Pillow 9 computed for generated images
 * (tests/preproc/make_reference.py; the table is its RESIZE table). */
static void test_resize_filter_matches_pillow(void **s) {
    (void)s;
    static const struct { const char *name, *kind; int w, h, c, ow, oh; sl_image_filter f; } cases[] = {
        { "down_bilinear", "noise", 97, 61, 3, 37, 23, SL_IMAGE_FILTER_BILINEAR },
        { "up_bilinear", "mixed", 29, 17, 3, 71, 40, SL_IMAGE_FILTER_BILINEAR },
        { "down_bicubic", "noise", 97, 61, 3, 37, 23, SL_IMAGE_FILTER_BICUBIC },
        { "mixed_bicubic", "smooth", 97, 61, 3, 150, 20, SL_IMAGE_FILTER_BICUBIC },
        { "down_box", "mixed", 97, 61, 3, 37, 23, SL_IMAGE_FILTER_BOX },
        { "down_nearest", "noise", 97, 61, 3, 37, 23, SL_IMAGE_FILTER_NEAREST },
        { "up_nearest", "mixed", 29, 17, 3, 71, 40, SL_IMAGE_FILTER_NEAREST },
        { "grey_bilinear", "mixed", 97, 61, 1, 37, 23, SL_IMAGE_FILTER_BILINEAR },
        { "far_bilinear", "mixed", 400, 300, 3, 45, 34, SL_IMAGE_FILTER_BILINEAR },
        { "rows_only", "noise", 97, 61, 3, 97, 23, SL_IMAGE_FILTER_BILINEAR },
        { "cols_only", "noise", 97, 61, 3, 37, 61, SL_IMAGE_FILTER_BICUBIC },
        { "one_row", "noise", 97, 1, 3, 13, 1, SL_IMAGE_FILTER_BILINEAR },
    };
    const char *src = getenv("SL_SOURCE_DIR");
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        char path[1200];
        snprintf(path, sizeof path, "%s/tests/preproc/resize_%s.npy", src ? src : "..", cases[t].name);
        float *ref = NULL;
        int64_t dims[8];
        int rank = 0;
        size_t cnt = 0;
        sl_error err;
        assert_int_equal(sl__npy_read(path, &ref, dims, &rank, &cnt, &err), SL_OK);
        assert_int_equal(cnt, (size_t)cases[t].ow * cases[t].oh * cases[t].c);
        sl_image *img = sl_test_pattern(cases[t].kind, cases[t].w, cases[t].h, cases[t].c), *out = NULL;
        assert_non_null(img);
        assert_int_equal(sl_image_resize_filter(img, cases[t].ow, cases[t].oh, cases[t].f, &out, &err), SL_OK);
        assert_int_equal(sl_image_width(out), cases[t].ow);
        assert_int_equal(sl_image_height(out), cases[t].oh);
        assert_int_equal(sl_image_channels(out), cases[t].c);
        size_t bad = 0, first = 0;
        for (size_t i = 0; i < cnt; i++)
            if (sl_image_cpixels(out)[i] != (uint8_t)ref[i] && !bad++) first = i;
        if (bad) fail_msg("%s: %zu of %zu bytes differ from Pillow (first at %zu: %d, Pillow %d)", cases[t].name,
                          bad, cnt, first, sl_image_cpixels(out)[first], (int)ref[first]);
        sl_image_free(out);
        sl_image_free(img);
        free(ref);
    }
    /* bad arguments */
    sl_image *img = sl_test_pattern("noise", 8, 8, 3), *out = (sl_image *)1;
    sl_error err;
    assert_int_equal(sl_image_resize_filter(img, 0, 5, SL_IMAGE_FILTER_BILINEAR, &out, &err), SL_E_INVALID);
    assert_null(out);
    assert_int_equal(sl_image_resize_filter(img, 5, 5, (sl_image_filter)9, &out, &err), SL_E_INVALID);
    assert_int_equal(sl_image_resize_filter(NULL, 5, 5, SL_IMAGE_FILTER_BILINEAR, &out, &err), SL_E_INVALID);
    /* same size: a copy */
    assert_int_equal(sl_image_resize_filter(img, 8, 8, SL_IMAGE_FILTER_BICUBIC, &out, &err), SL_OK);
    assert_memory_equal(sl_image_cpixels(out), sl_image_cpixels(img), 8 * 8 * 3);
    sl_image_free(out);
    sl_image_free(img);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jpeg),
        cmocka_unit_test(test_png),
        cmocka_unit_test(test_webp),
        cmocka_unit_test(test_gif),
        cmocka_unit_test(test_tiff),
        cmocka_unit_test(test_avif),
        cmocka_unit_test(test_file_and_grey),
        cmocka_unit_test(test_exif_orientation),
        cmocka_unit_test(test_cmyk),
        cmocka_unit_test(test_all_orientations),
        cmocka_unit_test(test_grey_jpeg),
        cmocka_unit_test(test_16bit),
        cmocka_unit_test(test_palette),
        cmocka_unit_test(test_alpha_on_white),
        cmocka_unit_test(test_shrink_on_load),
        cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_handle_and_encode),
        cmocka_unit_test(test_resize),
        cmocka_unit_test(test_resize_vs_reference),
        cmocka_unit_test(test_resize_filter_matches_pillow),
        cmocka_unit_test(test_grey_vs_reference),
        cmocka_unit_test(test_grey_and_float),
        cmocka_unit_test(test_denoise),
        cmocka_unit_test(test_equalize_clahe),
        cmocka_unit_test(test_augment),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
