/*
 * feature/features_internal.h - what the pipeline (features.c) takes from the units below it and
 * the tests reach: the grey plane shared by the SIFT passes (sift_image.c), the colour kernel
 * choice (color.c) and the pipeline's verification settings. The compact local-feature record is
 * local.h (the bottom of the module), matching and verification match.h.
 */
#ifndef SL_FEATURE_FEATURES_INTERNAL_H
#define SL_FEATURE_FEATURES_INTERNAL_H
#include <stdint.h>
#include "shoplens/feature.h"
#include "shoplens/nn.h"
#include "feature/local.h"
#include "feature/match.h"

/* The grey float plane (in [0,1], width * height, malloc'ed) that sl_sift_extract and
 * sl_sift_dense compute from an 8-bit grey or sRGB image (sift_image.c), or NULL with err set:
 * for callers running both on one image. */
float *sl__sift_grey(const sl_image *img, int *w, int *h, sl_error *err);

/* The pipeline's verification settings (NULL f: defaults). */
const sl__verify_cfg *sl__features_verify_cfg(const sl_features *f);
/* sl_color_hist with a chosen path: simd = 1 the fastest the CPU has (AVX2, else portable; the
 * default), 0 the portable per-pixel loop. Tests compare them; the output must be bit-identical. */
sl_status sl__color_hist_impl(const sl_image *img, const sl_color_params *p, float *out,
                              int simd, sl_error *err);
#endif
