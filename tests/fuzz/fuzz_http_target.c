/*
 * tests/fuzz/fuzz_http_target.c - fuzz target for the request-target path of the server: the
 * path/query parser, route matching, the query-parameter whitelist and the number parsers, i.e.
 * everything a request line reaches before a handler runs.
 *
 * Checks the parser's promises on every accepted target: segments are non-empty, never "." or
 * "..", never contain '/' or control bytes; keys are non-empty; nothing points outside buf.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/srv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static sl__target t; /* large: keep it off the stack */
    sl_error e;
    if (sl__target_parse((const char *)data, size, &t, &e) != SL_OK) return 0;
    const char *lo = t.buf, *hi = t.buf + sizeof t.buf;
    for (size_t i = 0; i < t.nseg; i++) {
        const char *s = t.seg[i];
        if (s < lo || s >= hi || !s[0] || strchr(s, '/') || !strcmp(s, ".") || !strcmp(s, "..")) abort();
        for (const char *c = s; *c; c++)
            if ((unsigned char)*c < 0x20 || *c == 0x7f) abort();
    }
    for (size_t i = 0; i < t.nparam; i++) {
        if (!t.param[i].key[0] || t.param[i].key < lo || t.param[i].key >= hi) abort();
        for (const char *c = t.param[i].val; *c; c++)
            if ((unsigned char)*c < 0x20 || *c == 0x7f) abort();
    }
    const char *methods[] = { "GET", "POST", "PUT", "DELETE", "HEAD", "PATCH" };
    char allow[64];
    int known = 0;
    const sl__route *r = sl__route_match(methods[size % 6], &t, &known, allow, sizeof allow);
    if (r) {
        if (sl__route_index(r) < 0 || (size_t)sl__route_index(r) >= sl__nroutes) abort();
        (void)sl__target_check_params(&t, r->params, &e);
    }
    long k = 0;
    double p = 0;
    (void)sl__param_int(&t, "k", 1, 1000, &k, &e);
    (void)sl__param_double(&t, "min_price", 0, 1e12, &p, &e);
    if (k < 0 || k > 1000 || p < 0) abort();
    return 0;
}
