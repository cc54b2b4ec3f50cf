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

/* sl_image_new without zeroing the pixels, for callers that write every byte. */
sl_image *sl__image_alloc(int width, int height, int channels);

/* An image around `data` (malloc'ed, width * channels * height bytes, rows packed), which it
 * owns from then on (sl_image_free frees it); NULL when out of memory (data still the
 * caller's). Sizes as sl_image_new, not checked again. */
sl_image *sl__image_adopt(int width, int height, int channels, uint8_t *data);

/* The resampler's contribution table (preprocess.c) for mapping n_src samples to n_dst: output
 * i is the sum of w[j] * source[first + j] for j < count (area weights when shrinking, bilinear
 * when growing). The weights live in *pool; free both. NULL on allocation failure. */
typedef struct { int first, count; float *w; } sl__contrib;
sl__contrib *sl__contribs(int n_src, int n_dst, float **pool);

/* Common argument check for functions taking (src, out): clears *out, checks src. */
sl_status sl__image_check_args(const sl_image *src, sl_image **out, sl_error *err,
                               const char *fn);

/* Bilinear sample of channel c at (x, y) in pixel-centre coordinates; outside -> -1. */
int sl__image_bilinear(const sl_image *src, double x, double y, uint8_t *px);

/* Turns an image upright for EXIF orientation 1..8 (5..8 swap width and height). */
sl_status sl__image_orient(const sl_image *src, int orientation, sl_image **out, sl_error *err);

/* JPEG fast path (jpeg.c): reads the header into *info (size, bands, bits, EXIF orientation),
 * checks max_pixels (SL_E_TOO_LARGE), decodes YCbCr/RGB/grey JPEG with DCT scaling so the
 * longest side stays >= max_side, area-resizes to max_side (0: full size), turns it upright.
 * For colour spaces it leaves to libvips (CMYK, YCCK) it returns SL_OK with *out NULL and
 * *use_vips set. Unsupported variants (12-bit, ...) are SL_E_UNSUPPORTED. */
sl_status sl__jpeg_decode(const uint8_t *data, size_t len, int max_side, int grey,
                          uint64_t max_pixels, sl_image_info *info, sl_image **out, int *use_vips,
                          sl_error *err);

#endif
