/*
 * catalog/fetch.h - image URLs of product feeds, fetched with libcurl (internal; fetch.c).
 *
 * A batch of http(s) URLs is fetched in parallel (one curl multi handle, `parallel` transfers
 * at once) with a size limit, a time limit per attempt, at most SL__FETCH_MAX_REDIRECTS
 * redirects (http and https only, also when redirected), and retries with exponential backoff
 * on transient failures (timeouts, connection errors, HTTP 408, 429 and 5xx; a Retry-After of
 * up to a minute is honoured) - never on other 4xx. The content is sniffed from its first bytes
 * (JPEG, PNG, WebP, HEIC); the Content-Type header is only quoted in messages. Each failure
 * gets a sentence a shop engineer can act on ("HTTP 404 Not Found", "timed out after 30 s (3
 * attempts)", "not an image: the server sent an HTML document (Content-Type: image/jpeg)").
 */
#ifndef SL_CATALOG_FETCH_H
#define SL_CATALOG_FETCH_H

#include <stddef.h>
#include <stdint.h>
#include "shoplens/error.h"

#define SL__FETCH_MAX_REDIRECTS 5

/* Fetch settings; sl__fetch_opts_init gives the defaults below. */
typedef struct sl__fetch_opts {
    size_t max_bytes;          /* per image (default SL_IMAGE_MAX_BYTES_DEFAULT) */
    double timeout_s;          /* per attempt, the whole transfer (default 30) */
    double connect_timeout_s;  /* per attempt (default 10) */
    int retries;               /* further attempts after a transient failure (default 3) */
    double backoff_s;          /* wait before the first retry, doubled for each next (0.5) */
    int parallel;              /* transfers at once (default 8) */
} sl__fetch_opts;

void sl__fetch_opts_init(sl__fetch_opts *o);

/* One URL to fetch and what came of it. */
typedef struct sl__fetch_item {
    const char *url;           /* in; not owned */
    /* out */
    uint8_t *data;             /* the image (malloc'ed, the callback may take it), or NULL */
    size_t len;
    char format[8];            /* sniffed: "jpeg", "png", "webp", "heic" */
    sl_status st;              /* SL_OK, or why not (SL_E_IO, SL_E_TOO_LARGE, SL_E_UNSUPPORTED,
                                  SL_E_NOT_FOUND for HTTP 404/410, SL_E_INVALID for a bad URL) */
    char msg[256];             /* failure in words */
    int attempts;
    int http_status;           /* of the last attempt, 0 if no HTTP answer */
} sl__fetch_item;

/* 1 when s is an http:// or https:// URL (case-insensitive scheme). */
int sl__is_url(const char *s);

/* The image format of data by its magic bytes: "jpeg", "png", "webp", "heic", or NULL. */
const char *sl__sniff_image(const uint8_t *data, size_t len);

/* Fetches items[0..n) and calls done(ctx, i) on the calling thread as each one ends (success
 * or final failure), in completion order; done may take items[i].data (set it to NULL).
 * Returns SL_OK when every item was tried (their own st says how it went), or a run-level
 * error (SL_E_NOMEM, SL_E_INTERNAL when libcurl cannot start, SL_E_INTERRUPTED when *cancel
 * became nonzero) with err set. */
sl_status sl__fetch_all(sl__fetch_item *items, size_t n, const sl__fetch_opts *o,
                        void (*done)(void *ctx, size_t i), void *ctx,
                        const volatile int *cancel, sl_error *err);

#endif
