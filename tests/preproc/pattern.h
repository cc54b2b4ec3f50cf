/*
 * tests/preproc/pattern.h - the generated images of tests/preproc/make_reference.py, in C (the
 * same integer formula: `pixel` there), so the resize and preprocessing tests rebuild the
 * inputs whose Pillow/torchvision results are committed as .npy files next to this header.
 */
#ifndef SL_TEST_PREPROC_PATTERN_H
#define SL_TEST_PREPROC_PATTERN_H
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "shoplens/image.h"

static inline int sl_test_pattern_px(const char *kind, int x, int y, int c, int w, int h) {
    uint32_t s = (uint32_t)x * 2654435761u + (uint32_t)y * 2246822519u + (uint32_t)c * 3266489917u + 374761393u;
    s ^= s >> 15;
    s *= 2246822519u;
    s ^= s >> 13;
    int noise = (int)(s & 255);
    if (!strcmp(kind, "noise")) return noise;
    int v;
    if (c == 0) v = x * 255 / (w > 1 ? w - 1 : 1);
    else if (c == 1) v = y * 255 / (h > 1 ? h - 1 : 1);
    else v = ((x + 2 * y) * 16) & 255;
    if (!strcmp(kind, "smooth")) return v;
    v = (v * 3 + noise) / 4;
    return v > 255 ? 255 : v;
}

/* A new w x h image of `channels` (1 or 3) with the pattern `kind`; NULL on failure. */
static inline sl_image *sl_test_pattern(const char *kind, int w, int h, int channels) {
    uint8_t *px = malloc((size_t)w * (size_t)h * (size_t)channels);
    if (!px) return NULL;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < channels; c++)
                px[((size_t)y * (size_t)w + (size_t)x) * (size_t)channels + (size_t)c] =
                    (uint8_t)sl_test_pattern_px(kind, x, y, c, w, h);
    sl_image *img = sl_image_from_pixels(w, h, channels, px, (size_t)w * (size_t)channels);
    free(px);
    return img;
}
#endif
