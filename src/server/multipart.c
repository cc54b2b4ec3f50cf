/*
 * server/multipart.c - streaming multipart/form-data parser (RFC 7578 on RFC 2046 section 5.1).
 *
 * The body is fed in chunks split anywhere. The parser is a byte-level state machine; the
 * delimiter "CRLF--boundary" is matched incrementally with a single counter: since a boundary
 * never contains CR (RFC 2046 bchars), CR occurs only at position 0 of the delimiter, so on a
 * mismatch the only possible restart is the current byte itself (no KMP table needed). Bytes
 * held by a partial match are released to the part body when the match fails. The body start
 * is treated as if preceded by CRLF, so a delimiter on the very first line is found too.
 *
 * Invariants: sum of part body lengths <= max_data (else SL_E_TOO_LARGE, checked before any
 * allocation); at most SL__MP_PARTS_MAX parts and SL__MP_HEADERS_MAX header lines of at most
 * SL__MP_HEADER_LINE_MAX bytes each; header lines must end in CRLF (no bare LF, no folding).
 * Once an error is recorded the parser is dead and repeats it. Memory: O(max_data) at most.
 */
#include "server/parse.h"
#include "util/util.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum {
    SL__MP_PREAMBLE,     /* before the first delimiter: discarded */
    SL__MP_AFTER_DELIM,  /* just after "--boundary": LWSP* then CRLF, or "--" */
    SL__MP_DELIM_CR,     /* saw CR after a delimiter, need LF */
    SL__MP_CLOSE_DASH,   /* saw one '-' after a delimiter, need the second */
    SL__MP_HEADERS,      /* part header lines */
    SL__MP_HEADER_CR,    /* saw CR in a header line, need LF */
    SL__MP_BODY,         /* part body until the next delimiter */
    SL__MP_END,          /* after the close delimiter: epilogue, discarded */
    SL__MP_DEAD          /* an error was recorded */
};

struct sl__mp {
    char delim[4 + SL__MP_BOUNDARY_MAX + 1];
    size_t dlen;
    size_t match;        /* bytes of delim matched so far */
    int state;
    size_t max_data, total;
    size_t nparts;
    sl__mp_part parts[SL__MP_PARTS_MAX];
    char line[SL__MP_HEADER_LINE_MAX + 1];
    size_t line_len;
    int nheaders;
    int has_disposition;
    sl_status code;
    char msg[160];
};

static int sl__bchar(int c) {
    return isalnum(c) || strchr("'()+_,-./:=? ", c) != NULL;
}

static int sl__boundary_ok(const char *b) {
    size_t n = strlen(b);
    if (n < 1 || n > SL__MP_BOUNDARY_MAX || b[n - 1] == ' ') return 0;
    for (size_t i = 0; i < n; i++)
        if (!sl__bchar((unsigned char)b[i])) return 0;
    return 1;
}

sl_status sl__mp_boundary(const char *ct, char out[SL__MP_BOUNDARY_MAX + 1], sl_error *err) {
    if (!sl__media_is(ct, "multipart/form-data"))
        return sl__err_set(err, SL_E_INVALID, "Content-Type is not multipart/form-data");
    int r = sl__header_param(ct, "boundary", out, SL__MP_BOUNDARY_MAX + 1);
    if (r != 1 || !sl__boundary_ok(out))
        return sl__err_set(err, SL_E_INVALID, "multipart/form-data needs a boundary of 1 to %d "
                           "allowed characters", SL__MP_BOUNDARY_MAX);
    return SL_OK;
}

sl__mp *sl__mp_new(const char *boundary, size_t max_data) {
    if (!boundary || !sl__boundary_ok(boundary)) return NULL;
    sl__mp *mp = calloc(1, sizeof *mp);
    if (!mp) return NULL;
    memcpy(mp->delim, "\r\n--", 4);
    memcpy(mp->delim + 4, boundary, strlen(boundary) + 1);
    mp->dlen = strlen(mp->delim);
    mp->match = 2; /* the body start counts as a preceding CRLF */
    mp->state = SL__MP_PREAMBLE;
    mp->max_data = max_data;
    return mp;
}

static sl_status sl__mp_fail(sl__mp *mp, sl_status code, const char *msg) {
    if (mp->state != SL__MP_DEAD) {
        mp->state = SL__MP_DEAD;
        mp->code = code;
        snprintf(mp->msg, sizeof mp->msg, "multipart body: %s", msg);
    }
    return code;
}

/* Appends bytes to the current part's body. */
static sl_status sl__mp_emit(sl__mp *mp, const void *data, size_t len) {
    if (len == 0 || mp->state == SL__MP_PREAMBLE) return SL_OK;
    sl__mp_part *p = &mp->parts[mp->nparts - 1];
    size_t total, need;
    if (sl__add_size(mp->total, len, &total) != 0 || total > mp->max_data)
        return sl__mp_fail(mp, SL_E_TOO_LARGE, "the parts are larger than the body limit");
    if (sl__add_size(p->len, len + 1, &need) != 0)
        return sl__mp_fail(mp, SL_E_TOO_LARGE, "part too large");
    if (need > p->cap) {
        size_t cap = p->cap ? p->cap : 4096;
        while (cap < need) {
            if (cap > SIZE_MAX / 2) { cap = need; break; }
            cap *= 2;
        }
        /* Never reserve much beyond what the limit could still admit. */
        size_t room = mp->max_data - mp->total + p->len + 1;
        if (cap > room && room >= need) cap = room;
        uint8_t *nd = realloc(p->data, cap);
        if (!nd) return sl__mp_fail(mp, SL_E_NOMEM, "out of memory");
        p->data = nd;
        p->cap = cap;
    }
    memcpy(p->data + p->len, data, len);
    p->len += len;
    p->data[p->len] = 0;
    mp->total = total;
    return SL_OK;
}

static sl_status sl__mp_header_line(sl__mp *mp) {
    sl__mp_part *p = &mp->parts[mp->nparts - 1];
    char *line = mp->line;
    if (++mp->nheaders > SL__MP_HEADERS_MAX)
        return sl__mp_fail(mp, SL_E_TOO_LARGE, "too many part header lines");
    if (line[0] == ' ' || line[0] == '\t')
        return sl__mp_fail(mp, SL_E_INVALID, "folded part header line");
    char *colon = strchr(line, ':');
    if (!colon || colon == line) return sl__mp_fail(mp, SL_E_INVALID, "part header line without a name");
    *colon = '\0';
    for (char *c = line; *c; c++)
        if (!isgraph((unsigned char)*c)) return sl__mp_fail(mp, SL_E_INVALID, "bad part header name");
    char *v = colon + 1;
    while (*v == ' ' || *v == '\t') v++;
    if (strcasecmp(line, "Content-Disposition") == 0) {
        if (mp->has_disposition) return sl__mp_fail(mp, SL_E_INVALID, "two Content-Disposition headers");
        mp->has_disposition = 1;
        if (!sl__media_is(v, "form-data"))
            return sl__mp_fail(mp, SL_E_INVALID, "part disposition is not form-data");
        if (sl__header_param(v, "name", p->name, sizeof p->name) < 0 ||
            sl__header_param(v, "filename", p->filename, sizeof p->filename) < 0)
            return sl__mp_fail(mp, SL_E_INVALID, "malformed or too long part name or filename");
    } else if (strcasecmp(line, "Content-Type") == 0) {
        size_t n = strlen(v);
        while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t')) n--;
        if (n >= sizeof p->content_type) return sl__mp_fail(mp, SL_E_INVALID, "part Content-Type too long");
        memcpy(p->content_type, v, n);
        p->content_type[n] = '\0';
    }
    return SL_OK;
}

static sl_status sl__mp_on_delimiter(sl__mp *mp) {
    mp->state = SL__MP_AFTER_DELIM;
    return SL_OK;
}

static sl_status sl__mp_new_part(sl__mp *mp) {
    if (mp->nparts == SL__MP_PARTS_MAX) return sl__mp_fail(mp, SL_E_TOO_LARGE, "too many parts");
    mp->nparts++;
    mp->state = SL__MP_HEADERS;
    mp->line_len = 0;
    mp->nheaders = 0;
    mp->has_disposition = 0;
    return SL_OK;
}

sl_status sl__mp_feed(sl__mp *mp, const void *data, size_t len, sl_error *err) {
    const uint8_t *b = data;
    size_t i = 0;
    sl_status st = SL_OK;
    while (i < len && st == SL_OK) {
        switch (mp->state) {
        case SL__MP_DEAD:
            st = mp->code;
            break;
        case SL__MP_END:
            i = len;
            break;
        case SL__MP_PREAMBLE:
        case SL__MP_BODY: {
            if (mp->match == 0) {
                /* Fast path: copy everything up to the next CR in one go. */
                const uint8_t *cr = memchr(b + i, '\r', len - i);
                size_t run = cr ? (size_t)(cr - (b + i)) : len - i;
                st = sl__mp_emit(mp, b + i, run);
                i += run;
                if (!cr || st != SL_OK) break;
            }
            int c = b[i];
            if (c == (unsigned char)mp->delim[mp->match]) {
                i++;
                if (++mp->match == mp->dlen) {
                    mp->match = 0;
                    st = sl__mp_on_delimiter(mp);
                }
            } else {
                /* Release the held prefix; the current byte is re-examined at match 0. */
                if (mp->match > 0) {
                    st = sl__mp_emit(mp, mp->delim, mp->match);
                    mp->match = 0;
                } else {
                    st = sl__mp_emit(mp, b + i, 1);
                    i++;
                }
            }
            break;
        }
        case SL__MP_AFTER_DELIM: {
            int c = b[i++];
            if (c == '-') mp->state = SL__MP_CLOSE_DASH;
            else if (c == '\r') mp->state = SL__MP_DELIM_CR;
            else if (c != ' ' && c != '\t') st = sl__mp_fail(mp, SL_E_INVALID, "garbage after a boundary");
            break;
        }
        case SL__MP_CLOSE_DASH:
            if (b[i++] == '-') mp->state = SL__MP_END;
            else st = sl__mp_fail(mp, SL_E_INVALID, "garbage after a boundary");
            break;
        case SL__MP_DELIM_CR:
            if (b[i++] == '\n') st = sl__mp_new_part(mp);
            else st = sl__mp_fail(mp, SL_E_INVALID, "boundary line not ended by CRLF");
            break;
        case SL__MP_HEADERS: {
            int c = b[i++];
            if (c == '\r') {
                mp->state = SL__MP_HEADER_CR;
            } else if (c == '\n' || c == 0) {
                st = sl__mp_fail(mp, SL_E_INVALID, "bad byte in a part header");
            } else if (mp->line_len == SL__MP_HEADER_LINE_MAX) {
                st = sl__mp_fail(mp, SL_E_TOO_LARGE, "part header line too long");
            } else {
                mp->line[mp->line_len++] = (char)c;
            }
            break;
        }
        case SL__MP_HEADER_CR:
            if (b[i++] != '\n') {
                st = sl__mp_fail(mp, SL_E_INVALID, "part header line not ended by CRLF");
            } else if (mp->line_len == 0) {
                if (!mp->has_disposition)
                    st = sl__mp_fail(mp, SL_E_INVALID, "part without Content-Disposition");
                else {
                    mp->state = SL__MP_BODY;
                    mp->match = 0;
                }
            } else {
                mp->line[mp->line_len] = '\0';
                mp->line_len = 0;
                mp->state = SL__MP_HEADERS;
                st = sl__mp_header_line(mp);
            }
            break;
        default:
            st = sl__mp_fail(mp, SL_E_INTERNAL, "bad state");
            break;
        }
    }
    if (st != SL_OK) return sl__err_set(err, mp->code, "%s", mp->msg);
    return SL_OK;
}

sl_status sl__mp_finish(sl__mp *mp, sl_error *err) {
    if (mp->state == SL__MP_DEAD) return sl__err_set(err, mp->code, "%s", mp->msg);
    if (mp->state != SL__MP_END) {
        sl__mp_fail(mp, SL_E_INVALID, "truncated (no closing boundary)");
        return sl__err_set(err, mp->code, "%s", mp->msg);
    }
    return SL_OK;
}

size_t sl__mp_count(const sl__mp *mp) { return mp ? mp->nparts : 0; }

const sl__mp_part *sl__mp_part_at(const sl__mp *mp, size_t i) {
    return mp && i < mp->nparts ? &mp->parts[i] : NULL;
}

const sl__mp_part *sl__mp_find(const sl__mp *mp, const char *name, size_t n) {
    for (size_t i = 0; mp && i < mp->nparts; i++)
        if (strcmp(mp->parts[i].name, name) == 0 && n-- == 0) return &mp->parts[i];
    return NULL;
}

uint8_t *sl__mp_take(sl__mp *mp, size_t i, size_t *len) {
    if (!mp || i >= mp->nparts) return NULL;
    uint8_t *d = mp->parts[i].data;
    if (len) *len = mp->parts[i].len;
    mp->parts[i].data = NULL;
    mp->parts[i].cap = 0;
    return d;
}

void sl__mp_free(sl__mp *mp) {
    if (!mp) return;
    for (size_t i = 0; i < mp->nparts; i++) free(mp->parts[i].data);
    free(mp);
}
