/*
 * tests/fuzz/fuzz_http_head.c - fuzz target for the front door's request-head check
 * (sl__head_parse, sl__framing_check): the first code to see a new connection's bytes.
 *
 * Checks its promises on every input: the verdict for a prefix never contradicts the verdict
 * for the whole (a prefix that is refused stays refused; a complete head is complete whatever
 * follows it), a complete head's length lies within the input, an accepted head has a method
 * and HTTP/1.0 or 1.1, a refusal has a known status, a code and a message.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sl__head h, p;
    int r = sl__head_parse((const char *)data, size, &h);
    if (r != SL__HEAD_MORE && r != SL__HEAD_DONE) abort();
    if (r == SL__HEAD_MORE && h.status) abort();
    if (r == SL__HEAD_DONE && h.status == 0) {
        if (h.len == 0 || h.len > size || h.len > SL__HEAD_MAX || !h.line_done || !h.method[0] || h.minor > 1)
            abort();
        /* the same head followed by anything is the same head */
        if (sl__head_parse((const char *)data, h.len, &p) != SL__HEAD_DONE || p.status || p.len != h.len) abort();
    }
    if (h.status) {
        static const int known[] = { 400, 413, 414, 431, 501, 505 };
        int ok = 0;
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) ok |= h.status == known[i];
        if (!ok || !h.code || !h.msg[0]) abort();
    }
    /* a prefix never reaches a different verdict than "more" or the same refusal */
    size_t cut = size / 2;
    int rp = sl__head_parse((const char *)data, cut, &p);
    if (rp == SL__HEAD_DONE && p.status == 0 && !(r == SL__HEAD_DONE && h.status == 0 && h.len == p.len)) abort();
    if (rp == SL__HEAD_DONE && p.status && r == SL__HEAD_DONE && h.status == 0) abort();
    for (size_t i = 0; i < sizeof h.path && h.path[i]; i++)
        if ((unsigned char)h.path[i] <= 0x20 || (unsigned char)h.path[i] >= 0x7f) abort();
    return 0;
}
