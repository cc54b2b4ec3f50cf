/*
 * shoplens/sample.h - the built-in sample catalog: product-like images drawn deterministically
 * from a seed, and "shopper photos" of the same products. Tests, benchmarks and `make demo` use it
 * so that nothing depends on files from outside the repository.
 *
 * A sample universe is identified by a seed; product p (0-based) of a universe always has the same
 * metadata, the same catalog images and the same shopper photos, on every machine.
 * Ownership: images returned are new and freed by the caller with sl_image_free.
 */
#ifndef SHOPLENS_SAMPLE_H
#define SHOPLENS_SAMPLE_H

#include <stdint.h>
#include "shoplens/error.h"
#include "shoplens/image.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sl_sample_product {
    char id[32];            /* "P000123" */
    char title[96];         /* e.g. "Red striped mug 'ACME'" */
    char category[32];      /* one of a fixed list of categories (sl_sample_category) */
    char description[256];
    double price;           /* > 0, two decimals */
} sl_sample_product;

/* Number of categories in the sample universe, and the name of category i. */
int sl_sample_category_count(void);
const char *sl_sample_category(int i);

/* Fills *out with the metadata of product `product`. */
sl_status sl_sample_product_info(uint64_t seed, uint32_t product, sl_sample_product *out);

/* Catalog image `view` of a product: view 0 is the clean packshot (plain background, centred),
 * views 1.. are other catalog shots (other angle, background, crop). width/height in 16..4096. */
sl_status sl_sample_catalog_image(uint64_t seed, uint32_t product, uint32_t view, int width,
                                  int height, sl_image **out, sl_error *err);

/* A shopper photo of a product: the object under perspective, scale, crop, lighting change, blur,
 * noise and JPEG compression, on a cluttered background; `variant` picks the distortion.
 * Variant 0 is the mildest (product large in the frame, small turn, light blur, JPEG q80-90);
 * variants 1.. draw every distortion from its full range. width/height in 16..4096. */
sl_status sl_sample_shopper_photo(uint64_t seed, uint32_t product, uint32_t variant, int width,
                                  int height, sl_image **out, sl_error *err);

#ifdef __cplusplus
}
#endif
#endif
