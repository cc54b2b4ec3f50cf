/*
 * feature/sift/sift_image.c - sl_sift_extract / sl_sift_dense on an sl_image: converts 8-bit
 * grey or sRGB pixels to a grey float plane in [0,1] (Rec. 601 luma, as sl_image_to_grey) and
 * runs the float versions in sift.c. Kept apart from sift.c so the float API has no dependency
 * on the image layer.
 */
#include "shoplens/feature.h"
#include "feature/features_internal.h"
#include "util/util.h"

#include <stdlib.h>

/* The grey plane of img (width * height floats, malloc'ed), or NULL with err set. */
float *sl__sift_grey(const sl_image *img, int *w, int *h, sl_error *err) {
    if (!img) {
        sl__err_set(err, SL_E_INVALID, "sift: NULL image");
        return NULL;
    }
    int W = sl_image_width(img), H = sl_image_height(img), ch = sl_image_channels(img);
    size_t stride = sl_image_stride(img);
    const uint8_t *px = sl_image_cpixels(img);
    if (W < 1 || H < 1 || (ch != 1 && ch != 3) || !px) {
        sl__err_set(err, SL_E_INVALID, "sift: bad image (%dx%d, %d channels)", W, H, ch);
        return NULL;
    }
    size_t n;
    float *g = sl__mul_size((size_t)W, (size_t)H, &n) ? NULL : sl__mallocarray(n, sizeof(float));
    if (!g) {
        sl__err_set(err, SL_E_NOMEM, "sift: out of memory for a %dx%d image", W, H);
        return NULL;
    }
    float lr[256], lg[256], lb[256];
    for (int i = 0; i < 256; i++) {
        lr[i] = 0.299f / 255.0f * (float)i;
        lg[i] = 0.587f / 255.0f * (float)i;
        lb[i] = 0.114f / 255.0f * (float)i;
    }
    for (int y = 0; y < H; y++) {
        const uint8_t *s = px + (size_t)y * stride;
        float *d = g + (size_t)y * (size_t)W;
        if (ch == 1)
            for (int x = 0; x < W; x++) d[x] = (float)s[x] * (1.0f / 255.0f);
        else
            for (int x = 0; x < W; x++) d[x] = lr[s[3 * x]] + lg[s[3 * x + 1]] + lb[s[3 * x + 2]];
    }
    *w = W;
    *h = H;
    return g;
}

sl_status sl_sift_extract(const sl_image *img, const sl_sift_params *p, sl_keypoint **kps,
                          float **desc, size_t *n, sl_error *err) {
    if (!kps || !desc || !n) return sl__err_set(err, SL_E_INVALID, "sift: NULL output argument");
    *kps = NULL;
    *desc = NULL;
    *n = 0;
    int w = 0, h = 0;
    float *g = sl__sift_grey(img, &w, &h, err);
    if (!g) return err ? err->code : SL_E_INVALID;
    sl_status st = sl_sift_extract_grey(g, w, h, (size_t)w, p, kps, desc, n, err);
    free(g);
    return st;
}

sl_status sl_sift_dense(const sl_image *img, int step, float size, sl_keypoint **kps,
                        float **desc, size_t *n, sl_error *err) {
    if (!kps || !desc || !n) return sl__err_set(err, SL_E_INVALID, "sift: NULL output argument");
    *kps = NULL;
    *desc = NULL;
    *n = 0;
    int w = 0, h = 0;
    float *g = sl__sift_grey(img, &w, &h, err);
    if (!g) return err ? err->code : SL_E_INVALID;
    sl_status st = sl_sift_dense_grey(g, w, h, (size_t)w, step, size, kps, desc, n, err);
    free(g);
    return st;
}
