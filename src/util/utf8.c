/*
 * util/utf8.c - strict UTF-8 validation (RFC 3629): shortest forms only, no surrogates
 * (U+D800..U+DFFF), nothing above U+10FFFF. Used wherever text from outside becomes an
 * identifier or goes into JSON (jansson refuses anything else), and to scrub text that must
 * become JSON anyway (an error message quoting a client's bytes): every byte that is not part
 * of a well-formed sequence becomes '?', well-formed sequences stay as they are.
 */
#include "util/util.h"

#include <string.h>

/* Length of the well-formed sequence at p (at most avail bytes), or 0 when there is none. */
static size_t sl__utf8_seq(const unsigned char *p, size_t avail) {
    unsigned c = *p;
    if (c < 0x80) return 1;
    size_t len;
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;      /* no overlong 3-byte forms */
        else if (c == 0xED) hi = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;      /* no overlong 4-byte forms */
        else if (c == 0xF4) hi = 0x8F; /* nothing above U+10FFFF */
    } else {
        return 0;                      /* continuation byte, C0/C1, F5..FF */
    }
    if (avail < len || p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if (p[i] < 0x80 || p[i] > 0xBF) return 0;
    return len;
}

int sl__utf8_valid(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        size_t len = sl__utf8_seq(p, (size_t)(end - p));
        if (!len) return 0;
        p += len;
    }
    return 1;
}

void sl__utf8_scrub(char *s) {
    if (!s) return;
    unsigned char *p = (unsigned char *)s;
    size_t n = strlen(s);
    unsigned char *end = p + n;
    while (p < end) {
        size_t len = sl__utf8_seq(p, (size_t)(end - p));
        if (!len) *p++ = '?';
        else p += len;
    }
}
