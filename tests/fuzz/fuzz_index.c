/* tests/fuzz/fuzz_index.c - loading index files from arbitrary bytes (sl_index_load_mem) must
 * either fail cleanly or give an index that can be searched (also with the 4-bit prefilter),
 * modified and compacted safely.
 * Each input is tried twice: as is (checksums reject most mutations), and with every checksum
 * recomputed (docs/formats/index.md), so mutations reach the structural checks. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "shoplens/index.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
uint32_t sl__crc32c(uint32_t crc, const void *data, size_t n);

static void try_load(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    try_load(data, size);
    if (size < 352 || size > ((size_t)1 << 24)) return 0;
    uint8_t *img = malloc(size);
    if (!img) return 0;
    memcpy(img, data, size);
    for (int i = 0; i < 7; i++) {
        uint8_t *e = img + 128 + i * 32;
        uint64_t off, len;
        memcpy(&off, e + 8, 8);
        memcpy(&len, e + 16, 8);
        if (off > size || len > size - off) continue;
        uint32_t c = sl__crc32c(0, img + off, (size_t)len);
        memcpy(e + 24, &c, 4);
    }
    uint32_t t = sl__crc32c(0, img + 128, 7 * 32), h;
    memcpy(img + 96, &t, 4);
    h = sl__crc32c(0, img, 124);
    memcpy(img + 124, &h, 4);
    try_load(img, size);
    free(img);
    return 0;
}

static void try_load(const uint8_t *data, size_t size) {
    sl_index *idx = NULL;
    sl_error e;
    if (sl_index_load_mem(&idx, data, size, NULL, &e) != SL_OK) return;
    int d = sl_index_dim(idx);
    if (d > 4096) { sl_index_free(idx); return; }
    float q[4096];
    for (int i = 0; i < d; i++) q[i] = (float)(i % 7) - 2.5f;
    sl_index_result r[8];
    size_t n;
    (void)sl_index_search(idx, q, 8, NULL, NULL, r, &n);
    sl_index_search_params ex = { 0, 1, 0 };
    (void)sl_index_search(idx, q, 8, NULL, &ex, r, &n);
    /* the 4-bit prefilter (int8 files only) over whatever codes the file holds: encoding on
     * enable, a prefiltered exact scan (ef 1, so it runs from 2 vectors on), then the add and
     * compaction below keep its rows */
    sl_index_search_params pf = { 1, 1, 0 };
    if (sl_index_set_prefilter(idx, 1.0) == SL_OK) (void)sl_index_search(idx, q, 1, NULL, &pf, r, &n);
    (void)sl_index_search(idx, q, 8, NULL, &ex, r, &n);
    if (n) (void)sl_index_remove(idx, r[0].id);
    (void)sl_index_add(idx, 123456789, q);
    (void)sl_index_search(idx, q, 1, NULL, &pf, r, &n);
    (void)sl_index_search(idx, q, 8, NULL, NULL, r, &n);
    (void)sl_index_compact(idx);
    (void)sl_index_search(idx, q, 8, NULL, NULL, r, &n);
    sl_index_free(idx);
}
