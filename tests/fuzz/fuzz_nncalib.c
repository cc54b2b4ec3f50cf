/*
 * tests/fuzz/fuzz_nncalib.c - fuzz target for the CNN calibration record parser
 * (sl_nn_calibration_load, docs/formats/nn_calibration.md) against the committed tiny MobileNetV2
 * test model at int8 (tests/models/tiny_mbv2.onnx, found through $SL_SOURCE_DIR, else ..).
 * Each input is tried as it is, then with its trailing FNV-1a checksum recomputed, so mutations
 * reach the parser behind the checksum. An accepted record must save back to exactly its bytes
 * (a version-1 record saves as the current version, which must). Corpus
 * (tests/fuzz/corpus/fuzz_nncalib/): records of that model, from `shoplens cnn info
 * tiny_mbv2.onnx --precision int8|bf16 --calibrate tiny_mbv2.in.npy --calib-save FILE` - version
 * 1 (int8, bf16, int8_per_tensor) and 2 (v2_*; v2_int8_keeps with --calib-budget 1e-7: layers
 * kept at fp32 and, on a CPU with AVX-512-BF16, at bf16).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "shoplens/nn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static sl_nn *g_model;
static int g_tried;

static void try_record(const uint8_t *d, size_t n) {
    sl_error e;
    if (sl_nn_calibration_load(g_model, d, n, &e) != SL_OK) return;
    uint8_t *out = NULL, *again = NULL;
    size_t len = 0, len2 = 0;
    if (sl_nn_calibration_save(g_model, &out, &len, &e) != SL_OK) abort();
    if (n >= 12 && d[8] == 1 && !d[9] && !d[10] && !d[11]) {
        /* version 1 is saved as the current version, which must round-trip exactly */
        if (sl_nn_calibration_load(g_model, out, len, &e) != SL_OK || sl_nn_calibration_save(g_model, &again, &len2, &e) != SL_OK ||
            len2 != len || memcmp(again, out, len) != 0)
            abort();
    } else if (len != n || memcmp(out, d, n) != 0) {
        abort(); /* an accepted record must round-trip exactly */
    }
    free(again);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_tried) {
        g_tried = 1;
        const char *src = getenv("SL_SOURCE_DIR");
        char path[4096];
        snprintf(path, sizeof path, "%s/tests/models/tiny_mbv2.onnx", src ? src : "..");
        sl_nn_opts o;
        sl_nn_opts_init(&o);
        o.precision = SL_NN_PRECISION_INT8;
        o.threads = 1;
        if (sl_nn_load_opts(path, &o, &g_model, NULL) != SL_OK) g_model = NULL;
    }
    if (!g_model) return 0;
    try_record(data, size);
    if (size >= 16) {
        uint8_t *c = malloc(size);
        if (!c) return 0;
        memcpy(c, data, size);
        uint64_t h = 0xcbf29ce484222325ULL;
        for (size_t i = 0; i + 8 < size; i++) { h ^= c[i]; h *= 0x100000001b3ULL; }
        for (int i = 0; i < 8; i++) c[size - 8 + (size_t)i] = (uint8_t)(h >> (8 * i));
        try_record(c, size);
        free(c);
    }
    return 0;
}
