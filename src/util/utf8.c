/*
 * util/utf8.c - strict UTF-8 validation (RFC 3629): shortest forms only, no surrogates
 * (U+D800..U+DFFF), nothing above U+10FFFF. Used wherever text from outside becomes an
 * identifier or goes into JSON (jansson refuses anything else).
 */
#include "util/util.h"

int sl__utf8_valid(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        unsigned c = *p;
        if (c < 0x80) {
            p++;
            continue;
        }
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
        if ((size_t)(end - p) < len || p[1] < lo || p[1] > hi) return 0;
        for (size_t i = 2; i < len; i++)
            if (p[i] < 0x80 || p[i] > 0xBF) return 0;
        p += len;
    }
    return 1;
}
