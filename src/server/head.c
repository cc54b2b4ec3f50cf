/*
 * server/head.c - the request-head check of the front door (see parse.h and door.c).
 *
 * The front door reads (peeks) every new connection's request head before libmicrohttpd does
 * and refuses, with one complete JSON answer, whatever libmicrohttpd 0.9.75 would frame
 * ambiguously or answer badly: a malformed or oversized Content-Length (it sends its header
 * block twice), Content-Length together with Transfer-Encoding, a missing or repeated Host,
 * obs-fold lines, control bytes. The rules are RFC 9112's, strictly: anything accepted here is
 * read the same way by any conforming parser.
 *
 * Invariants: the parser never reads past buf[len), keeps no state between calls (the caller
 * passes the whole head so far each time; heads are at most SL__HEAD_MAX bytes), and every
 * message it writes is plain ASCII without input bytes beyond a few sanitized ones.
 */
#include "server/parse.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* RFC 9110 5.6.2 tchar. */
static int sl__tchar(unsigned char c) {
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int sl__ows(char c) { return c == ' ' || c == '\t'; }

static int sl__fail(sl__head *h, int status, const char *code, const char *msg) {
    h->status = status;
    h->code = code;
    snprintf(h->msg, sizeof h->msg, "%s", msg);
    return SL__HEAD_DONE;
}

/* Trims optional whitespace around v[0..*n). */
static const char *sl__trim(const char *v, size_t *n) {
    while (*n > 0 && sl__ows(v[0])) { v++; (*n)--; }
    while (*n > 0 && sl__ows(v[*n - 1])) (*n)--;
    return v;
}

int sl__framing_check(const sl__framing *f, const char **code, char *msg, size_t cap) {
    *code = "bad_request";
    if (f->minor >= 1 && f->n_host != 1) {
        snprintf(msg, cap, f->n_host ? "more than one Host header" : "an HTTP/1.1 request needs a Host header");
        return 400;
    }
    if (f->minor == 0 && f->n_host > 1) {
        snprintf(msg, cap, "more than one Host header");
        return 400;
    }
    if (f->n_te > 0 && f->n_cl > 0) {
        snprintf(msg, cap, "a request may not carry both Content-Length and Transfer-Encoding");
        return 400;
    }
    if (f->n_te > 0) {
        if (f->minor == 0) {
            snprintf(msg, cap, "Transfer-Encoding is not allowed in HTTP/1.0");
            return 400;
        }
        if (f->n_te > 1) {
            snprintf(msg, cap, "more than one Transfer-Encoding header");
            return 400;
        }
        size_t n = f->te_len;
        const char *v = sl__trim(f->te, &n);
        if (n != 7 || strncasecmp(v, "chunked", 7) != 0) {
            *code = "not_implemented";
            snprintf(msg, cap, "Transfer-Encoding must be 'chunked' (no other coding is supported)");
            return 501;
        }
    }
    if (f->n_cl > 1) {
        snprintf(msg, cap, "more than one Content-Length header");
        return 400;
    }
    if (f->n_cl == 1) {
        size_t n = f->cl_len;
        const char *v = sl__trim(f->cl, &n);
        uint64_t x = 0;
        int overflow = 0;
        for (size_t i = 0; i < n; i++) {
            if (v[i] < '0' || v[i] > '9') {
                snprintf(msg, cap, "Content-Length must be a number of bytes (digits only)");
                return 400;
            }
            unsigned d = (unsigned)(v[i] - '0');
            if (x > (UINT64_MAX - d) / 10) overflow = 1;
            else x = x * 10 + d;
        }
        if (n == 0) {
            snprintf(msg, cap, "Content-Length is empty");
            return 400;
        }
        if (overflow) {
            *code = "payload_too_large";
            snprintf(msg, cap, "Content-Length is above %llu bytes", (unsigned long long)UINT64_MAX);
            return 413;
        }
    }
    return 0;
}

/* Finds the end of the line starting at p (LF, optionally preceded by CR). Returns the
 * line's length without its terminator and sets *next, or -1 when no terminator is in the
 * buffer yet, or -2 for a CR not followed by LF. */
static long sl__line(const char *buf, size_t len, size_t p, size_t *next) {
    for (size_t i = p; i < len; i++) {
        if (buf[i] == '\n') {
            *next = i + 1;
            return (long)(i - p);
        }
        if (buf[i] == '\r') {
            if (i + 1 == len) return -1;
            if (buf[i + 1] != '\n') return -2;
            *next = i + 2;
            return (long)(i - p);
        }
    }
    return -1;
}

static int sl__request_line(const char *l, size_t n, sl__head *h) {
    size_t i = 0;
    while (i < n && sl__tchar((unsigned char)l[i])) i++;
    if (i == 0 || i >= sizeof h->method || i >= n || l[i] != ' ')
        return sl__fail(h, 400, "bad_request", "malformed request line (expected 'METHOD /path HTTP/1.1')");
    memcpy(h->method, l, i);
    h->method[i] = '\0';
    size_t t0 = ++i;
    while (i < n && (unsigned char)l[i] > 0x20 && (unsigned char)l[i] < 0x7f) i++;
    size_t tl = i - t0;
    if (tl == 0 || i >= n || l[i] != ' ')
        return sl__fail(h, 400, "bad_request", "malformed request line (expected 'METHOD /path HTTP/1.1')");
    if (tl > SL__TARGET_MAX_LEN) return sl__fail(h, 414, "uri_too_long", "the request target is longer than 4096 bytes");
    size_t pl = strcspn(l + t0, "? ");
    if (pl > tl) pl = tl;
    if (pl >= sizeof h->path) pl = sizeof h->path - 1;
    memcpy(h->path, l + t0, pl);
    h->path[pl] = '\0';
    const char *v = l + i + 1;
    size_t vl = n - i - 1;
    if (vl != 8 || memcmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9' || v[6] != '.' ||
        v[7] < '0' || v[7] > '9')
        return sl__fail(h, 400, "bad_request", "malformed HTTP version in the request line");
    if (v[5] != '1') return sl__fail(h, 505, "http_version_not_supported", "only HTTP/1.0 and HTTP/1.1 are supported");
    h->minor = v[7] == '0' ? 0 : 1;
    h->line_done = 1;
    return SL__HEAD_MORE;
}

int sl__head_parse(const char *buf, size_t len, sl__head *h) {
    memset(h, 0, sizeof *h);
    size_t p = 0, next = 0;
    /* RFC 9112 2.2: empty lines before the request line are ignored */
    for (;;) {
        long n = sl__line(buf, len, p, &next);
        if (n == -2) return sl__fail(h, 400, "bad_request", "a CR not followed by LF in the request head");
        if (n < 0) break;
        if (n > 0) {
            if (sl__request_line(buf + p, (size_t)n, h) == SL__HEAD_DONE) return SL__HEAD_DONE;
            p = next;
            break;
        }
        p = next;
        if (p > SL__HEAD_MAX) break;
    }
    if (!h->line_done) {
        if (len - p > SL__TARGET_MAX_LEN + 64 || p > SL__HEAD_MAX)
            return sl__fail(h, 414, "uri_too_long", "the request line is longer than 4160 bytes");
        /* a request line that already went wrong needs no more bytes to be refused */
        size_t i = p;
        while (i < len && sl__tchar((unsigned char)buf[i])) i++;
        if (i < len && (i == p || buf[i] != ' ') && buf[i] != '\r' && buf[i] != '\n')
            return sl__fail(h, 400, "bad_request", "malformed request line (expected 'METHOD /path HTTP/1.1')");
        return SL__HEAD_MORE;
    }
    sl__framing f;
    memset(&f, 0, sizeof f);
    f.minor = h->minor;
    int fields = 0;
    for (;;) {
        long n = sl__line(buf, len, p, &next);
        if (n == -2) return sl__fail(h, 400, "bad_request", "a CR not followed by LF in the request head");
        if (n == -1) {
            if (len > SL__HEAD_MAX)
                return sl__fail(h, 431, "headers_too_large", "the request head is larger than 16384 bytes");
            return SL__HEAD_MORE;
        }
        if (next > SL__HEAD_MAX)
            return sl__fail(h, 431, "headers_too_large", "the request head is larger than 16384 bytes");
        const char *l = buf + p;
        p = next;
        if (n == 0) break; /* the empty line: end of the head */
        if (sl__ows(l[0])) return sl__fail(h, 400, "bad_request", "folded header lines (obs-fold) are not accepted");
        if (++fields > SL__HEAD_MAX_FIELDS)
            return sl__fail(h, 431, "headers_too_large", "more than 100 header fields");
        size_t k = 0;
        while (k < (size_t)n && sl__tchar((unsigned char)l[k])) k++;
        if (k == 0 || k == (size_t)n || l[k] != ':')
            return sl__fail(h, 400, "bad_request", "malformed header line (expected 'Name: value', no space before ':')");
        const char *v = l + k + 1;
        size_t vl = (size_t)n - k - 1;
        for (size_t i = 0; i < vl; i++) {
            unsigned char c = (unsigned char)v[i];
            if ((c < 0x20 && c != '\t') || c == 0x7f)
                return sl__fail(h, 400, "bad_request", "a control character in a header value");
        }
        if (k == 4 && strncasecmp(l, "host", 4) == 0) {
            f.n_host++;
        } else if (k == 14 && strncasecmp(l, "content-length", 14) == 0) {
            if (f.n_cl++ == 0) { f.cl = v; f.cl_len = vl; }
        } else if (k == 17 && strncasecmp(l, "transfer-encoding", 17) == 0) {
            if (f.n_te++ == 0) { f.te = v; f.te_len = vl; }
        }
    }
    h->len = p;
    const char *code = NULL;
    int st = sl__framing_check(&f, &code, h->msg, sizeof h->msg);
    if (st) {
        h->status = st;
        h->code = code;
    }
    return SL__HEAD_DONE;
}
