/* tests/fuzz/fuzz_index.c - loading index files from arbitrary bytes (sl_index_load_mem) must
 * either fail cleanly or give an index that can be searched, modified and compacted safely. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "shoplens/index.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sl_index *idx = NULL;
    sl_error e;
    if (sl_index_load_mem(&idx, data, size, NULL, &e) != SL_OK) return 0;
    int d = sl_index_dim(idx);
    if (d > 4096) { sl_index_free(idx); return 0; }
    float q[4096];
    for (int i = 0; i < d; i++) q[i] = (float)(i % 7) - 2.5f;
    sl_index_result r[8];
    size_t n;
    (void)sl_index_search(idx, q, 8, NULL, NULL, r, &n);
    sl_index_search_params ex = { 0, 1, 0 };
    (void)sl_index_search(idx, q, 8, NULL, &ex, r, &n);
    if (n) (void)sl_index_remove(idx, r[0].id);
    (void)sl_index_add(idx, 123456789, q);
    (void)sl_index_search(idx, q, 8, NULL, NULL, r, &n);
    (void)sl_index_compact(idx);
    (void)sl_index_search(idx, q, 8, NULL, NULL, r, &n);
    sl_index_free(idx);
    return 0;
}
