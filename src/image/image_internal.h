/*
 * image/image_internal.h - the sl_image struct, shared by the files of src/image/ and
 * src/sample/ (not public: other modules use the accessors of shoplens/image.h).
 * Invariants: 1 <= width, height <= SL_IMAGE_MAX_SIDE_MAX; channels is 1 or 3;
 * stride == width * channels; data holds height * stride bytes owned by the image.
 */
#ifndef SL_IMAGE_INTERNAL_H
#define SL_IMAGE_INTERNAL_H

#include "shoplens/image.h"
#include "util/util.h"

struct sl_image {
    int width, height, channels;
    size_t stride;
    uint8_t *data;
};

/* Pixel value clamp to 0..255 with rounding. */
static inline uint8_t sl__clamp_u8(double v) {
    if (v <= 0.0) return 0;
    if (v >= 255.0) return 255;
    return (uint8_t)(v + 0.5);
}

/* Common argument check for functions taking (src, out): clears *out, checks src. */
sl_status sl__image_check_args(const sl_image *src, sl_image **out, sl_error *err,
                               const char *fn);

/* Bilinear sample of channel c at (x, y) in pixel-centre coordinates; outside -> -1. */
int sl__image_bilinear(const sl_image *src, double x, double y, uint8_t *px);

#endif
