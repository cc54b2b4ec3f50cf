/*
 * tests/fuzz/fuzz_image.c - fuzz target for the image decoder (sl_image_load_buffer): any bytes
 * must give SL_OK with a well-formed image, or an error status with no image; never a crash or a
 * leak. Limits are lowered so that mutated headers cannot make a run slow or huge.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "shoplens/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile unsigned sl__fuzz_sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sl_image_load_opts o;
    memset(&o, 0, sizeof o);
    o.max_pixels = 1 << 20;
    o.max_side = size % 2 ? 64 : 0; /* both the full and the shrink-on-load path */
    sl_image *img = NULL;
    sl_image_info info;
    sl_error err;
    sl_status st = sl_image_load_buffer(data, size, &o, &img, &info, &err);
    if (st == SL_OK) {
        /* touch every pixel: a partly decoded buffer would show up under ASan/MSan */
        const uint8_t *p = sl_image_cpixels(img);
        size_t n = sl_image_stride(img) * (size_t)sl_image_height(img);
        unsigned acc = 0;
        for (size_t i = 0; i < n; i++) acc += p[i];
        sl__fuzz_sink += acc;
        if (sl_image_channels(img) != 3 || n == 0) abort();
        sl_image_free(img);
    } else if (img) {
        abort();
    }
    return 0;
}
