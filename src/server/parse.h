/*
 * server/parse.h - the parsers that see untrusted request bytes before anything else does
 * (internal): the request target (path + query string), header parameters (Content-Type,
 * Content-Disposition), and a streaming multipart/form-data parser (RFC 7578, RFC 2046 5.1).
 *
 * All of them are bounded: fixed limits on lengths and counts, overflow-checked sizes, no
 * recursion; every failure is SL_E_INVALID / SL_E_TOO_LARGE / SL_E_NOMEM with a message that
 * names the offending part and never echoes more than a few bytes of the input.
 */
#ifndef SL_SERVER_PARSE_H
#define SL_SERVER_PARSE_H

#include <stddef.h>
#include <stdint.h>
#include "shoplens/error.h"

/* ---- request target ---------------------------------------------------------------------- */

#define SL__TARGET_MAX_LEN 4096     /* bytes of "path?query" */
#define SL__TARGET_MAX_SEGS 8       /* path segments */
#define SL__TARGET_MAX_PARAMS 32    /* query parameters */

/* A parsed request target. Segments and parameters are percent-decoded, NUL-terminated strings
 * pointing into `buf`; the path "/" has zero segments. Decoded segments never contain '/', NUL or
 * control bytes and are never "", "." or ".."; keys and values never contain NUL or control
 * bytes ('+' decodes to a space in the query only); all of them are valid UTF-8. */
typedef struct sl__target {
    size_t nseg;
    const char *seg[SL__TARGET_MAX_SEGS];
    size_t nparam;
    struct { const char *key, *val; } param[SL__TARGET_MAX_PARAMS];
    char buf[SL__TARGET_MAX_LEN + 1];
} sl__target;

/* Parses raw[0..len) ("/v1/products/P1/similar?k=5"). The target must start with '/'; a
 * fragment ('#...') is refused. Errors: SL_E_INVALID (malformed escape, bad byte, empty or dot
 * segment, empty key, not UTF-8 once decoded), SL_E_TOO_LARGE (over the limits above). */
sl_status sl__target_parse(const char *raw, size_t len, sl__target *t, sl_error *err);

/* Value of the first parameter named key, NULL if absent. */
const char *sl__target_param(const sl__target *t, const char *key);

/* Fails (SL_E_INVALID, message names it) when a parameter is not in the NULL-terminated list,
 * or when a listed parameter appears twice. */
sl_status sl__target_check_params(const sl__target *t, const char *const *allowed, sl_error *err);

/* Strict number parsing of a parameter value: the whole string, no spaces, within [min, max].
 * An absent parameter leaves *out unchanged and returns SL_OK. */
sl_status sl__param_int(const sl__target *t, const char *key, long min, long max, long *out,
                        sl_error *err);
sl_status sl__param_double(const sl__target *t, const char *key, double min, double max,
                           double *out, sl_error *err);

/* ---- request head (head.c): what the front door checks before libmicrohttpd sees it ----- */

#define SL__HEAD_MAX 16384          /* bytes of a request head, request line to the empty line */
#define SL__HEAD_MAX_FIELDS 100     /* header lines of one head */

enum { SL__HEAD_MORE = 0, SL__HEAD_DONE = 1 };

typedef struct sl__head {
    size_t len;             /* bytes of the complete head, its final empty line included */
    int line_done;          /* the request line is complete and well-formed */
    char method[16];        /* valid once line_done */
    char path[192];         /* the target up to '?', truncated, bytes outside 0x21..0x7e as '?' */
    int minor;              /* HTTP/1.minor: 0 or 1 (1.2 and up are read as 1.1) */
    int status;             /* 0: acceptable; else the status to answer (400, 413, 414, 431,
                               501, 505) */
    const char *code;       /* error code of the JSON answer ("bad_request", ...), static */
    char msg[160];          /* what is wrong, for the JSON answer */
} sl__head;

/* Checks the request head at the start of buf[0..len) (the body or the next bytes may follow).
 * RFC 9112 strictly, so that whatever passes is framed the same way by any HTTP/1.1 parser:
 * "METHOD SP target SP HTTP/1.x", CRLF (or bare LF) line ends, token field names directly
 * followed by ':', no obs-fold, no control bytes, at most SL__HEAD_MAX bytes and
 * SL__HEAD_MAX_FIELDS fields, then the framing rules of sl__framing_check. Leading empty lines
 * are skipped. Returns SL__HEAD_MORE while the head is incomplete and nothing in it is wrong
 * yet, SL__HEAD_DONE when it is complete (h->status 0) or certainly wrong (h->status set; a bad
 * request line is refused before the headers arrive). */
int sl__head_parse(const char *buf, size_t len, sl__head *h);

/* The header fields that decide how a request body is framed. */
typedef struct sl__framing {
    int minor;              /* HTTP/1.minor */
    int n_host;             /* Host fields */
    int n_cl;               /* Content-Length fields; cl/cl_len: the first one's value */
    const char *cl;
    size_t cl_len;
    int n_te;               /* Transfer-Encoding fields; te/te_len: the first one's value */
    const char *te;
    size_t te_len;
} sl__framing;

/* RFC 9112 sections 3.2, 6.1-6.3: HTTP/1.1 needs exactly one Host (1.0 at most one); at most
 * one Content-Length, 1*DIGIT (413 when it does not fit 64 bits; the max_body limit is the
 * route's business); at most one Transfer-Encoding, exactly "chunked" (501 otherwise), never
 * in HTTP/1.0 and never with Content-Length (the request smuggling pattern). Returns 0 when the
 * framing is fine, else the HTTP status with *code (static) and msg[cap] set. */
int sl__framing_check(const sl__framing *f, const char **code, char *msg, size_t cap);

/* ---- header values ----------------------------------------------------------------------- */

/* Case-insensitive check that the media type of a Content-Type value is `type` ("image/" as a
 * prefix when it ends with '/'), ignoring parameters and surrounding spaces. */
int sl__media_is(const char *content_type, const char *type);

/* Finds parameter `name` (case-insensitive) in a header value like
 * `form-data; name="image"; filename="a b.jpg"` and copies its value (quotes and backslash
 * escapes removed) into out[cap]. Returns 1 when found and it fit, 0 when absent, -1 when
 * malformed or too long. */
int sl__header_param(const char *value, const char *name, char *out, size_t cap);

/* ---- multipart/form-data ----------------------------------------------------------------- */

#define SL__MP_BOUNDARY_MAX 70      /* RFC 2046 */
#define SL__MP_HEADER_LINE_MAX 1024 /* one part header line */
#define SL__MP_HEADERS_MAX 16       /* header lines per part */
#define SL__MP_PARTS_MAX 32         /* parts per body */

typedef struct sl__mp_part {
    char name[64];          /* form field name ("image"); "" if the part had none */
    char filename[256];     /* "" if none */
    char content_type[128]; /* "" if none (means text/plain) */
    uint8_t *data;          /* part body, malloc'ed, NUL-terminated after len for convenience */
    size_t len;
    size_t cap;
} sl__mp_part;

typedef struct sl__mp sl__mp;

/* Extracts the boundary from a Content-Type value "multipart/form-data; boundary=...".
 * Errors: SL_E_INVALID (not multipart/form-data, no boundary, or not 1..70 boundary chars). */
sl_status sl__mp_boundary(const char *content_type, char out[SL__MP_BOUNDARY_MAX + 1],
                          sl_error *err);

/* A parser for one body. max_data bounds the sum of all part bodies (SL_E_TOO_LARGE beyond).
 * NULL on out of memory or a bad boundary. */
sl__mp *sl__mp_new(const char *boundary, size_t max_data);
/* Feeds the next bytes of the body; chunks may be split anywhere. After an error, every further
 * call returns the same error. */
sl_status sl__mp_feed(sl__mp *mp, const void *data, size_t len, sl_error *err);
/* Ends the body: SL_E_INVALID unless the closing delimiter was seen. */
sl_status sl__mp_finish(sl__mp *mp, sl_error *err);
size_t sl__mp_count(const sl__mp *mp);
/* Part i (0-based, in body order), or NULL. Owned by the parser. */
const sl__mp_part *sl__mp_part_at(const sl__mp *mp, size_t i);
/* The n-th part (0-based) with field name `name`, or NULL. */
const sl__mp_part *sl__mp_find(const sl__mp *mp, const char *name, size_t n);
/* Takes ownership of part i's data (the part keeps len but no buffer). NULL if none. */
uint8_t *sl__mp_take(sl__mp *mp, size_t i, size_t *len);
void sl__mp_free(sl__mp *mp);

#endif
