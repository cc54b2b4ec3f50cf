/*
 * tests/fuzz/fuzz_features.c - fuzz target for the feature parsers: the first byte picks
 *   0: sl_local_features_deserialize (then re-serialize: must reproduce the input),
 *   1: sl_features_parse (a whole features file),
 *   2: sl_features_new on the rest as a specification string.
 * Corpus (tests/fuzz/corpus/fuzz_features/): valid local features, valid features files with and
 * without codebook/PCA, with a learned head (HEAD) and a colour mean (MEAN), and specs.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "shoplens/feature.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    switch (data[0] % 3) {
    case 0: {
        sl_local_features *lf = NULL;
        if (sl_local_features_deserialize(p, n, &lf, NULL) == SL_OK) {
            void *buf = NULL;
            size_t len = 0;
            if (sl_local_features_serialize(lf, &buf, &len, NULL) != SL_OK || len != n ||
                memcmp(buf, p, n) != 0)
                abort(); /* an accepted input must round-trip exactly */
            free(buf);
            sl_verify_result r;
            sl_features_verify(NULL, lf, lf, &r, NULL);
        }
        sl_local_features_free(lf);
        break;
    }
    case 1: {
        if (memmem(p, n, "cnn", 3)) return 0; /* a "cnn:PATH" spec would open files named by the input */
        sl_features *f = NULL;
        if (sl_features_parse(p, n, "fuzz", &f, NULL) == SL_OK && sl_features_dim(f) == 0) abort();
        sl_features_free(f);
        break;
    }
    default: {
        if (n > 8192) n = 8192;
        char *s = malloc(n + 1);
        if (!s) return 0;
        memcpy(s, p, n);
        s[n] = 0;
        if (strstr(s, "cnn")) { free(s); return 0; } /* would open files named by the input */
        sl_features *f = NULL;
        if (sl_features_new(s, &f, NULL) == SL_OK) {
            /* the canonical form must parse to itself */
            sl_features *g = NULL;
            if (sl_features_new(sl_features_spec(f), &g, NULL) != SL_OK ||
                strcmp(sl_features_spec(f), sl_features_spec(g)) != 0)
                abort();
            sl_features_free(g);
        }
        sl_features_free(f);
        free(s);
        break;
    }
    }
    return 0;
}
