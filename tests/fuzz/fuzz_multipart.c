/*
 * tests/fuzz/fuzz_multipart.c - fuzz target for the multipart/form-data path of the server:
 * the Content-Type header parser (boundary extraction) and the streaming multipart parser.
 *
 * Input: the first line is the Content-Type header value, the rest is the body. The body is
 * parsed twice - in one piece, and in chunks whose sizes come from the input - and the two
 * results must be identical (status, parts, names, bytes): the parser may not depend on where
 * the network split the body. Limits are small so the size checks are reached.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/parse.h"

static sl_status sl__run(const char *boundary, const uint8_t *body, size_t len, size_t max,
                         const uint8_t *cuts, size_t ncuts, sl__mp **out) {
    sl_error e;
    sl__mp *mp = sl__mp_new(boundary, max);
    if (!mp) abort();
    sl_status st = SL_OK;
    size_t off = 0, c = 0;
    while (off < len && st == SL_OK) {
        size_t n = len - off;
        if (ncuts) {
            n = 1 + cuts[c++ % ncuts] % 61;
            if (n > len - off) n = len - off;
        }
        st = sl__mp_feed(mp, body + off, n, &e);
        off += n;
    }
    if (st == SL_OK) st = sl__mp_finish(mp, &e);
    *out = mp;
    return st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nl = memchr(data, '\n', size);
    size_t hl = nl ? (size_t)(nl - data) : size;
    char ct[512];
    if (hl >= sizeof ct) hl = sizeof ct - 1;
    memcpy(ct, data, hl);
    ct[hl] = '\0';
    const uint8_t *body = nl ? nl + 1 : data + size;
    size_t len = (size_t)(data + size - body);

    char boundary[SL__MP_BOUNDARY_MAX + 1];
    sl_error e;
    if (sl__mp_boundary(ct, boundary, &e) != SL_OK) return 0;
    size_t max = 64 + (size % 4096);
    sl__mp *a = NULL, *b = NULL;
    sl_status sa = sl__run(boundary, body, len, max, NULL, 0, &a);
    sl_status sb = sl__run(boundary, body, len, max, data, size, &b);
    if (sa != sb) abort();
    if (sa == SL_OK) {
        if (sl__mp_count(a) != sl__mp_count(b)) abort();
        for (size_t i = 0; i < sl__mp_count(a); i++) {
            const sl__mp_part *p = sl__mp_part_at(a, i), *q = sl__mp_part_at(b, i);
            if (p->len != q->len || strcmp(p->name, q->name) || strcmp(p->filename, q->filename) ||
                strcmp(p->content_type, q->content_type) || (p->len && memcmp(p->data, q->data, p->len)))
                abort();
            if (sl__mp_find(a, p->name, 0) == NULL) abort();
        }
    }
    sl__mp_free(a);
    sl__mp_free(b);
    return 0;
}
