/*
 * server/target.c - request target and header-value parsing (see parse.h).
 *
 * The request target comes straight from the network (RFC 9112 3.2 origin-form:
 * absolute-path [ "?" query ]). Invariants: the whole target is copied once into the fixed
 * t->buf (length checked first), decoding only ever shrinks, so every segment, key and value is
 * a NUL-terminated slice of buf and nothing is allocated. Bytes < 0x20, 0x7f and NUL (also when
 * percent-encoded) are refused, as are "." / ".." segments, empty segments (except the
 * root "/") and anything that is not valid UTF-8 once decoded ("%ff"), so a decoded segment can
 * be used as an identifier (and put into JSON) without further checks.
 */
#include "server/parse.h"
#include "util/util.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int sl__hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes s in place up to its NUL; plus_space turns '+' into ' '. Returns 0 or -1 on a bad
 * escape or a forbidden byte. */
static int sl__pct_decode(char *s, int plus_space, int allow_slash) {
    char *w = s;
    for (const char *r = s; *r; r++) {
        int c = (unsigned char)*r;
        if (c == '%') {
            int hi = sl__hexval((unsigned char)r[1]);
            int lo = hi < 0 ? -1 : sl__hexval((unsigned char)r[2]);
            if (hi < 0 || lo < 0) return -1;
            c = hi * 16 + lo;
            r += 2;
            if (c == '/' && !allow_slash) return -1;
        } else if (c == '+' && plus_space) {
            c = ' ';
        }
        if (c < 0x20 || c == 0x7f) return -1;
        *w++ = (char)c;
    }
    *w = '\0';
    return 0;
}

sl_status sl__target_parse(const char *raw, size_t len, sl__target *t, sl_error *err) {
    t->nseg = 0;
    t->nparam = 0;
    if (!raw || len == 0 || raw[0] != '/')
        return sl__err_set(err, SL_E_INVALID, "request target must start with '/'");
    if (len > SL__TARGET_MAX_LEN)
        return sl__err_set(err, SL_E_TOO_LARGE, "request target longer than %d bytes",
                           SL__TARGET_MAX_LEN);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)raw[i];
        if (c <= 0x20 || c >= 0x7f)
            return sl__err_set(err, SL_E_INVALID, "request target has a raw byte 0x%02x at %zu", c, i);
        if (c == '#') return sl__err_set(err, SL_E_INVALID, "request target has a fragment");
    }
    memcpy(t->buf, raw, len);
    t->buf[len] = '\0';
    char *q = strchr(t->buf, '?');
    if (q) *q++ = '\0';

    /* Path: split on '/', decode each segment. */
    char *p = t->buf + 1;
    if (*p != '\0') {
        for (;;) {
            char *slash = strchr(p, '/');
            if (slash) *slash = '\0';
            if (t->nseg == SL__TARGET_MAX_SEGS)
                return sl__err_set(err, SL_E_TOO_LARGE, "more than %d path segments", SL__TARGET_MAX_SEGS);
            if (sl__pct_decode(p, 0, 0) != 0)
                return sl__err_set(err, SL_E_INVALID, "path segment %zu has a bad escape or byte", t->nseg + 1);
            if (p[0] == '\0' || strcmp(p, ".") == 0 || strcmp(p, "..") == 0)
                return sl__err_set(err, SL_E_INVALID, "path segment %zu is empty or a dot segment", t->nseg + 1);
            if (!sl__utf8_valid(p, strlen(p)))
                return sl__err_set(err, SL_E_INVALID, "path segment %zu is not valid UTF-8 once decoded", t->nseg + 1);
            t->seg[t->nseg++] = p;
            if (!slash) break;
            p = slash + 1;
        }
    }

    /* Query: split on '&', then the first '='; empty pieces ("a=1&&b=2") are skipped. */
    while (q && *q) {
        char *amp = strchr(q, '&');
        if (amp) *amp = '\0';
        if (*q) {
            if (t->nparam == SL__TARGET_MAX_PARAMS)
                return sl__err_set(err, SL_E_TOO_LARGE, "more than %d query parameters", SL__TARGET_MAX_PARAMS);
            char *eq = strchr(q, '=');
            char *val = q + strlen(q); /* "" inside buf (decoding writes to it) */
            if (eq) { *eq = '\0'; val = eq + 1; }
            if (sl__pct_decode(q, 1, 1) != 0 || sl__pct_decode(val, 1, 1) != 0)
                return sl__err_set(err, SL_E_INVALID, "query parameter %zu has a bad escape or byte", t->nparam + 1);
            if (q[0] == '\0')
                return sl__err_set(err, SL_E_INVALID, "query parameter %zu has an empty name", t->nparam + 1);
            if (!sl__utf8_valid(q, strlen(q)) || !sl__utf8_valid(val, strlen(val)))
                return sl__err_set(err, SL_E_INVALID, "query parameter %zu is not valid UTF-8 once decoded", t->nparam + 1);
            t->param[t->nparam].key = q;
            t->param[t->nparam].val = val;
            t->nparam++;
        }
        q = amp ? amp + 1 : NULL;
    }
    return SL_OK;
}

const char *sl__target_param(const sl__target *t, const char *key) {
    for (size_t i = 0; i < t->nparam; i++)
        if (strcmp(t->param[i].key, key) == 0) return t->param[i].val;
    return NULL;
}

/* Copies at most 32 bytes of a name (valid UTF-8: sl__target_parse checked it) into a
 * message-safe form: control characters become '?', a longer name is cut before a whole
 * character and marked "...". */
static void sl__safe_name(const char *s, char out[40]) {
    size_t n = 0;
    for (; s[n] && n < 32; n++) {
        unsigned char c = (unsigned char)s[n];
        out[n] = c >= 0x80 || isprint(c) ? s[n] : '?';
    }
    if (s[n]) {
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) n--; /* not inside a character */
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = '\0';
}

sl_status sl__target_check_params(const sl__target *t, const char *const *allowed, sl_error *err) {
    for (size_t i = 0; i < t->nparam; i++) {
        int ok = 0;
        for (size_t a = 0; allowed && allowed[a]; a++)
            if (strcmp(allowed[a], t->param[i].key) == 0) { ok = 1; break; }
        char name[40];
        sl__safe_name(t->param[i].key, name);
        if (!ok) return sl__err_set(err, SL_E_INVALID, "unknown query parameter '%s'", name);
        for (size_t j = 0; j < i; j++)
            if (strcmp(t->param[j].key, t->param[i].key) == 0)
                return sl__err_set(err, SL_E_INVALID, "query parameter '%s' given twice", name);
    }
    return SL_OK;
}

sl_status sl__param_int(const sl__target *t, const char *key, long min, long max, long *out,
                        sl_error *err) {
    const char *v = sl__target_param(t, key);
    if (!v) return SL_OK;
    char *end = NULL;
    errno = 0;
    long x = (*v == '-' || isdigit((unsigned char)*v)) ? strtol(v, &end, 10) : 0;
    if (!end || end == v || *end != '\0' || errno != 0 || x < min || x > max)
        return sl__err_set(err, SL_E_INVALID, "parameter '%s' must be an integer in %ld..%ld",
                           key, min, max);
    *out = x;
    return SL_OK;
}

sl_status sl__param_double(const sl__target *t, const char *key, double min, double max,
                           double *out, sl_error *err) {
    const char *v = sl__target_param(t, key);
    if (!v) return SL_OK;
    char *end = NULL;
    errno = 0;
    /* Only plain decimal notation: no hex floats, inf or nan. */
    int plain = *v != '\0';
    for (const char *c = v; *c; c++)
        if (!isdigit((unsigned char)*c) && *c != '.' && *c != '-' && *c != '+' && *c != 'e' &&
            *c != 'E') plain = 0;
    double x = plain ? strtod(v, &end) : 0.0;
    if (!plain || !end || end == v || *end != '\0' || errno != 0 || !isfinite(x) || x < min ||
        x > max)
        return sl__err_set(err, SL_E_INVALID, "parameter '%s' must be a number in %g..%g", key,
                           min, max);
    *out = x;
    return SL_OK;
}

/* ---- header values ----------------------------------------------------------------------- */

int sl__media_is(const char *ct, const char *type) {
    if (!ct) return 0;
    while (*ct == ' ' || *ct == '\t') ct++;
    size_t tl = strlen(type);
    if (strncasecmp(ct, type, tl) != 0) return 0;
    if (tl > 0 && type[tl - 1] == '/') {
        /* a subtype must follow */
        const char *s = ct + tl;
        return isalnum((unsigned char)*s) != 0;
    }
    char c = ct[tl];
    return c == '\0' || c == ';' || c == ' ' || c == '\t';
}

int sl__header_param(const char *value, const char *name, char *out, size_t cap) {
    if (!value || cap == 0) return -1;
    size_t nl = strlen(name);
    const char *p = strchr(value, ';');
    while (p) {
        p++;
        while (*p == ' ' || *p == '\t') p++;
        const char *k = p;
        while (*p && *p != '=' && *p != ';') p++;
        size_t kl = (size_t)(p - k);
        while (kl > 0 && (k[kl - 1] == ' ' || k[kl - 1] == '\t')) kl--;
        if (*p != '=') {
            if (*p == ';') continue;
            return 0;
        }
        p++;
        while (*p == ' ' || *p == '\t') p++;
        int match = kl == nl && strncasecmp(k, name, nl) == 0;
        size_t n = 0;
        if (*p == '"') {
            p++;
            for (;;) {
                char c = *p;
                if (c == '\0') return -1; /* unterminated quote */
                p++;
                if (c == '"') break;
                if (c == '\\') {
                    if (*p == '\0') return -1;
                    c = *p++;
                }
                if (match) {
                    if ((unsigned char)c < 0x20 || c == 0x7f || n + 1 >= cap) return -1;
                    out[n++] = c;
                }
            }
            while (*p == ' ' || *p == '\t') p++;
            if (*p != '\0' && *p != ';') return -1;
        } else {
            while (*p && *p != ';') {
                char c = *p++;
                if (match) {
                    if ((unsigned char)c < 0x20 || c == 0x7f || n + 1 >= cap) return -1;
                    out[n++] = c;
                }
            }
            if (match) while (n > 0 && (out[n - 1] == ' ' || out[n - 1] == '\t')) n--;
        }
        if (match) {
            out[n] = '\0';
            return 1;
        }
        if (*p != ';') return 0;
    }
    return 0;
}
