/*
 * shoplens/image.h - decoding any image a shopper or a shop sends into clean 8-bit sRGB pixels,
 * and the preprocessing the rest of the pipeline uses (resize, grey, denoise, contrast,
 * normalization to float) plus augmentations used to build test and evaluation queries.
 *
 * Pixels: 8-bit, interleaved, channels = 3 (sRGB) or 1 (grey), rows `stride` bytes apart.
 * Decoding goes through libvips with its untrusted loaders blocked (see sl_image_global_init).
 *
 * Ownership: every function that returns an sl_image** gives the caller a new image that the
 * caller frees with sl_image_free. On failure *out is set to NULL and nothing is allocated.
 * Source images are never modified. Thread-safe: any number of threads may call these at once.
 */
#ifndef SHOPLENS_IMAGE_H
#define SHOPLENS_IMAGE_H

#include <stddef.h>
#include <stdint.h>
#include "shoplens/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sl_image sl_image;

#define SL_IMAGE_MAX_BYTES_DEFAULT ((size_t)32 << 20)        /* 32 MiB of encoded input */
#define SL_IMAGE_MAX_PIXELS_DEFAULT ((uint64_t)64 << 20)     /* 64 Mpx (width * height) */
#define SL_IMAGE_MAX_SIDE_MAX 65535

/* Initializes libvips once per process (thread-safe, idempotent) and blocks its untrusted
 * loaders (ImageMagick, PDF, SVG, matrix, ...). Called implicitly by the loaders; call it
 * explicitly to fail early. Returns SL_OK or SL_E_INTERNAL with a message. */
sl_status sl_image_global_init(sl_error *err);

/* Decode options. Zero-initialize, then set what you need; zeros mean the defaults. */
typedef struct sl_image_load_opts {
    size_t max_bytes;    /* refuse inputs larger than this (0: SL_IMAGE_MAX_BYTES_DEFAULT) */
    uint64_t max_pixels; /* refuse images with more pixels than this, checked from the header
                            before decoding (0: SL_IMAGE_MAX_PIXELS_DEFAULT) */
    int max_side;        /* 0: full size. N > 0: the longest side of the result is at most N
                            (never enlarged). JPEG and WebP use shrink-on-load (DCT-scaled /
                            scaled decode, then area averaging); PNG, GIF, TIFF and HEIF have no
                            reduced decode and are decoded full size (within max_pixels), then
                            area-averaged */
    int grey;            /* nonzero: return 1 channel (luminance) instead of 3 */
} sl_image_load_opts;

/* What the decoder learned about the input; filled as far as known even on failure. */
typedef struct sl_image_info {
    char format[16];     /* detected type: "jpeg", "png", "webp", "gif", "tiff", "heif", "svg",
                            "pdf", ..., or "unknown" */
    int width, height;   /* original size as stored (before orientation), 0 if unknown */
    int orientation;     /* EXIF orientation 1..8 (1 when absent) */
    int bands;           /* channels in the file (e.g. 4 for CMYK or RGBA) */
    int bits;            /* bits per sample in the file (8, 16, ...) */
    int out_width, out_height; /* size of the returned image (after orientation, shrink) */
} sl_image_info;

/* Loads and decodes an image file. opts and info may be NULL. On success *out is a new
 * 8-bit sRGB (or grey) image, upright (EXIF orientation applied), alpha flattened on white.
 * Errors: SL_E_NOT_FOUND (no such file), SL_E_IO (cannot read), SL_E_UNSUPPORTED (format not allowed; message names the detected
 * type), SL_E_TOO_LARGE (byte or pixel limit), SL_E_CORRUPT (truncated or damaged: never a
 * partly decoded image). */
sl_status sl_image_load_file(const char *path, const sl_image_load_opts *opts, sl_image **out,
                             sl_image_info *info, sl_error *err);

/* Same as sl_image_load_file from a memory buffer (not retained after return). */
sl_status sl_image_load_buffer(const void *data, size_t len, const sl_image_load_opts *opts,
                               sl_image **out, sl_image_info *info, sl_error *err);

/* A new zeroed (black) image, channels 1 or 3. NULL on bad size or out of memory. */
sl_image *sl_image_new(int width, int height, int channels);

/* A new image that copies `stride`-spaced rows from pixels. NULL on failure. */
sl_image *sl_image_from_pixels(int width, int height, int channels, const uint8_t *pixels,
                               size_t stride);

/* Deep copy. NULL on failure. */
sl_image *sl_image_clone(const sl_image *img);

/* Frees an image; NULL is a no-op. */
void sl_image_free(sl_image *img);

int sl_image_width(const sl_image *img);
int sl_image_height(const sl_image *img);
int sl_image_channels(const sl_image *img);
size_t sl_image_stride(const sl_image *img);          /* bytes between rows */
uint8_t *sl_image_pixels(sl_image *img);              /* row 0; owned by the image */
const uint8_t *sl_image_cpixels(const sl_image *img);

/* Encodes to "jpeg" or "png" (format), quality 1..100 for JPEG (0 = 85), metadata stripped.
 * *data is malloc'ed, owned by the caller (free()). */
sl_status sl_image_encode(const sl_image *img, const char *format, int quality, void **data,
                          size_t *len, sl_error *err);
/* Encodes and writes a file; format from the extension (.jpg/.jpeg/.png). */
sl_status sl_image_save_file(const sl_image *img, const char *path, int quality, sl_error *err);

/* ---- preprocessing (src/image/preprocess.c) ---------------------------------------------- */

typedef enum sl_resize_mode {
    SL_RESIZE_FIT = 0,     /* keep aspect, fit inside width x height (result may be smaller) */
    SL_RESIZE_FILL = 1,    /* keep aspect, cover width x height, centre-crop to exactly that */
    SL_RESIZE_PAD = 2,     /* keep aspect, fit inside, pad to exactly width x height (pad colour) */
    SL_RESIZE_STRETCH = 3  /* exactly width x height, aspect not kept */
} sl_resize_mode;

/* Resizes with area averaging when shrinking and bilinear when enlarging.
 * pad_rgb is 0xRRGGBB used by SL_RESIZE_PAD. */
sl_status sl_image_resize(const sl_image *src, int width, int height, sl_resize_mode mode,
                          uint32_t pad_rgb, sl_image **out, sl_error *err);
/* Resampling filters of sl_image_resize_filter (Pillow's Image.Resampling names in brackets). */
typedef enum sl_image_filter {
    SL_IMAGE_FILTER_BILINEAR = 0, /* triangle filter, antialiased when shrinking [BILINEAR] */
    SL_IMAGE_FILTER_BICUBIC = 1,  /* Keys cubic, a = -0.5, antialiased when shrinking [BICUBIC] */
    SL_IMAGE_FILTER_BOX = 2,      /* box filter: area averaging when shrinking [BOX] */
    SL_IMAGE_FILTER_NEAREST = 3   /* nearest neighbour, pixel centres [NEAREST] */
} sl_image_filter;

/* Resizes to exactly width x height with the same bytes as Pillow's
 * Image.resize((width, height), filter) (8-bit RGB or L): the filter support grows with the
 * shrink factor, 22-bit integer weights, horizontal pass first, rounded to 8 bits between the
 * passes. This is the resize of torchvision's transforms on PIL images; CNN preprocessing uses
 * it. On success *out is a new image owned by the caller. Errors: SL_E_INVALID (size out of
 * range, unknown filter), SL_E_NOMEM. */
sl_status sl_image_resize_filter(const sl_image *src, int width, int height, sl_image_filter filter,
                                 sl_image **out, sl_error *err);
/* Longest side scaled to `side` (aspect kept; never enlarges when no_enlarge is nonzero). */
sl_status sl_image_resize_longest(const sl_image *src, int side, int no_enlarge, sl_image **out,
                                  sl_error *err);
/* Luminance (Rec. 601 weights), 1 channel. A grey input is copied. */
sl_status sl_image_to_grey(const sl_image *src, sl_image **out, sl_error *err);
/* Gaussian denoise with standard deviation sigma (pixels, > 0). */
sl_status sl_image_gaussian(const sl_image *src, float sigma, sl_image **out, sl_error *err);
/* Median denoise over a (2r+1)^2 window, r in 1..7. */
sl_status sl_image_median(const sl_image *src, int radius, sl_image **out, sl_error *err);
/* Global histogram equalization (on luminance for colour images, hue kept). */
sl_status sl_image_equalize(const sl_image *src, sl_image **out, sl_error *err);
/* CLAHE (Zuiderveld 1994): tiles_x x tiles_y tiles, clip_limit >= 1 (multiple of the mean bin). */
sl_status sl_image_clahe(const sl_image *src, int tiles_x, int tiles_y, float clip_limit,
                         sl_image **out, sl_error *err);

typedef enum sl_layout { SL_LAYOUT_CHW = 0, SL_LAYOUT_HWC = 1 } sl_layout;

/* Writes the image as float: v = (pixel / 255 - mean[c]) / std[c], in CHW or HWC order, into
 * dst (capacity dst_len floats, must be >= w*h*c). mean/std NULL mean 0 and 1. */
sl_status sl_image_to_float(const sl_image *src, const float *mean, const float *std,
                            sl_layout layout, float *dst, size_t dst_len, sl_error *err);

/* ---- augmentations (src/image/augment.c), for building test and evaluation queries ------- */

/* Rotates by degrees counter-clockwise about the centre, same size, uncovered area bg_rgb. */
sl_status sl_image_rotate(const sl_image *src, float degrees, uint32_t bg_rgb, sl_image **out,
                          sl_error *err);
/* Crops the rectangle (x, y, w, h), which must lie inside the image. */
sl_status sl_image_crop(const sl_image *src, int x, int y, int w, int h, sl_image **out,
                        sl_error *err);
/* Scales both sides by factor (> 0). */
sl_status sl_image_scale(const sl_image *src, float factor, sl_image **out, sl_error *err);
/* v' = (v - 128) * contrast + 128 + brightness, clamped. contrast 1, brightness 0 = identity. */
sl_status sl_image_adjust(const sl_image *src, float brightness, float contrast, sl_image **out,
                          sl_error *err);
/* Adds zero-mean noise of standard deviation sigma (grey levels, 0..255), approximately
 * Gaussian (Irwin-Hall: sum of 4 uniforms, tails cut at 3.46 sigma), deterministic for a seed
 * on every machine. */
sl_status sl_image_noise(const sl_image *src, float sigma, uint64_t seed, sl_image **out,
                         sl_error *err);
/* Encodes to JPEG at quality and decodes again (compression artefacts). */
sl_status sl_image_jpeg_roundtrip(const sl_image *src, int quality, sl_image **out, sl_error *err);
/* Projective warp by the 3x3 row-major homography h (maps output pixel -> input pixel),
 * bilinear sampling, out_w x out_h result, uncovered area bg_rgb. */
sl_status sl_image_warp(const sl_image *src, const double h[9], int out_w, int out_h,
                        uint32_t bg_rgb, sl_image **out, sl_error *err);

#ifdef __cplusplus
}
#endif
#endif
