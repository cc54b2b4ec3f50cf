/*
 * server/core.c - the handlers that need no engine (web page and its icon, /healthz, /metrics) and the
 * response helpers every handler uses: JSON bodies, the one error format
 * {"error":{"code","message"}}, and the mapping from library statuses to HTTP statuses.
 *
 * Error messages come from the library (which names the problem) or from the server; they are
 * built with snprintf into bounded buffers and serialized by jansson, so no input byte can break
 * the JSON. /metrics follows the Prometheus text exposition format 0.0.4.
 */
#include "server/srv.h"
#include "shoplens/engine.h"
#include "shoplens/shoplens.h"
#include "util/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sl__resp_free(sl__resp *resp) {
    if (!resp->body_static) free(resp->body);
    resp->body = NULL;
    resp->len = 0;
}

void sl__resp_json(sl__resp *resp, int status, json_t *json) {
    sl__resp_free(resp);
    char *s = json ? json_dumps(json, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(12)) : NULL;
    json_decref(json);
    if (!s) {
        static const char oom[] = "{\"error\":{\"code\":\"internal\",\"message\":\"cannot build the response\"}}";
        resp->status = 500;
        resp->ctype = "application/json";
        resp->body = (char *)oom;
        resp->len = sizeof oom - 1;
        resp->body_static = 1;
        return;
    }
    resp->status = status;
    resp->ctype = "application/json";
    resp->body = s;
    resp->len = strlen(s);
    resp->body_static = 0;
}

void sl__resp_error(sl__resp *resp, int status, const char *code, const char *fmt, ...) {
    char msg[SL_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* jansson wants UTF-8: bytes that are not (and control characters) become '?', so the
     * error itself cannot fail; well-formed text (a product id like 'café') is kept. vsnprintf
     * may have cut a sequence at the end of the buffer: that tail is scrubbed too. */
    sl__utf8_scrub(msg);
    for (char *c = msg; *c; c++)
        if ((unsigned char)*c < 0x20) *c = '?';
    json_t *j = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg);
    sl__resp_json(resp, status, j);
    if (resp->status == 500 && status != 500) resp->status = status; /* keep the intended code */
}

void sl__resp_status(sl__resp *resp, sl_status st, const char *message) {
    const char *m = message && message[0] ? message : sl_strerror(st);
    switch (st) {
    case SL_E_INVALID:     sl__resp_error(resp, 400, "bad_request", "%s", m); break;
    case SL_E_CORRUPT:     sl__resp_error(resp, 400, "corrupt_input", "%s", m); break;
    case SL_E_UNSUPPORTED: sl__resp_error(resp, 415, "unsupported_media_type", "%s", m); break;
    case SL_E_TOO_LARGE:   sl__resp_error(resp, 413, "payload_too_large", "%s", m); break;
    case SL_E_NOT_FOUND:   sl__resp_error(resp, 404, "not_found", "%s", m); break;
    case SL_E_EXISTS:      sl__resp_error(resp, 409, "conflict", "%s", m); break;
    case SL_E_AUTH:        sl__resp_error(resp, 401, "unauthorized", "%s", m); resp->www_auth = 1; break;
    case SL_E_BUSY:        sl__resp_error(resp, 503, "overloaded", "%s", m); resp->retry_after = 1; break;
    case SL_E_NOMEM:       sl__resp_error(resp, 503, "overloaded", "out of memory"); resp->retry_after = 1; break;
    default:               sl__resp_error(resp, 500, "internal", "%s", m); break;
    }
}

void sl__h_page(sl__req *req, sl__resp *resp) {
    (void)req;
    resp->status = 200;
    resp->ctype = "text/html; charset=utf-8";
    resp->body = (char *)sl__page_html;
    resp->len = sl__page_html_len;
    resp->body_static = 1;
    resp->cache = "no-cache";
}

/* The page's icon: a magnifier on the accent colour (SVG; browsers take it from
 * /favicon.ico whatever the name says). */
static const char sl__favicon[] =
    "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 32 32\">"
    "<rect width=\"32\" height=\"32\" rx=\"7\" fill=\"#1f5fd6\"/>"
    "<circle cx=\"14\" cy=\"14\" r=\"7\" fill=\"none\" stroke=\"#fff\" stroke-width=\"3\"/>"
    "<path d=\"M19.5 19.5l6 6\" stroke=\"#fff\" stroke-width=\"3.5\" stroke-linecap=\"round\"/></svg>\n";

void sl__h_favicon(sl__req *req, sl__resp *resp) {
    (void)req;
    resp->status = 200;
    resp->ctype = "image/svg+xml";
    resp->body = (char *)sl__favicon;
    resp->len = sizeof sl__favicon - 1;
    resp->body_static = 1;
    resp->cache = "public, max-age=86400";
}

void sl__h_healthz(sl__req *req, sl__resp *resp) {
    sl_server *srv = req->srv;
    int draining = atomic_load(&srv->draining);
    json_t *j = json_pack("{s:s,s:s,s:b,s:f}", "status", draining ? "draining" : "ok",
                          "version", sl_version(), "engine", srv->engine != NULL,
                          "uptime_s", sl__now() - srv->started);
    sl__resp_json(resp, draining ? 503 : 200, j);
    resp->cache = "no-store";
}

/* A growing text buffer for /metrics. */
typedef struct { char *s; size_t len, cap; int failed; } sl__buf;

static void sl__buf_printf(sl__buf *b, const char *fmt, ...) SL__PRINTF(2, 3);
static void sl__buf_printf(sl__buf *b, const char *fmt, ...) {
    if (b->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) { b->failed = 1; return; }
        if (b->s && (size_t)n < b->cap - b->len) { b->len += (size_t)n; return; }
        size_t cap = b->cap ? b->cap * 2 : 8192;
        while (cap < b->len + (size_t)n + 1) cap *= 2;
        char *ns = realloc(b->s, cap);
        if (!ns) { b->failed = 1; return; }
        b->s = ns;
        b->cap = cap;
    }
}

/* Metric slot and label of route number r, where r == sl__nroutes means "no route". */
static const char *sl__route_label(size_t r, int *slot) {
    *slot = r < sl__nroutes ? (int)r : SL__M_ROUTES - 1;
    return r < sl__nroutes ? sl__routes[r].name : "none";
}

void sl__h_metrics(sl__req *req, sl__resp *resp) {
    sl_server *srv = req->srv;
    sl__metrics *m = &srv->metrics;
    sl__buf b = { 0 };
    sl__buf_printf(&b, "# HELP shoplens_http_requests_total HTTP requests by route and status.\n"
                       "# TYPE shoplens_http_requests_total counter\n");
    for (size_t r = 0; r <= sl__nroutes; r++) {
        int ri;
        const char *name = sl__route_label(r, &ri);
        for (int s = 0; s < SL__M_STATUSES; s++) {
            uint64_t c = atomic_load_explicit(&m->count[ri][s], memory_order_relaxed);
            if (!c) continue;
            if (s < SL__M_STATUSES - 1)
                sl__buf_printf(&b, "shoplens_http_requests_total{route=\"%s\",status=\"%d\"} %llu\n",
                               name, sl__m_status_codes[s], (unsigned long long)c);
            else
                sl__buf_printf(&b, "shoplens_http_requests_total{route=\"%s\",status=\"other\"} %llu\n",
                               name, (unsigned long long)c);
        }
    }
    sl__buf_printf(&b, "# HELP shoplens_http_request_duration_seconds Time from request line to response.\n"
                       "# TYPE shoplens_http_request_duration_seconds histogram\n");
    for (size_t r = 0; r <= sl__nroutes; r++) {
        int ri;
        const char *name = sl__route_label(r, &ri);
        uint64_t cum = 0;
        for (int k = 0; k < SL__M_BUCKETS; k++) {
            cum += atomic_load_explicit(&m->bucket[ri][k], memory_order_relaxed);
            if (k < SL__M_BUCKETS - 1)
                sl__buf_printf(&b, "shoplens_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n",
                               name, sl__m_bucket_le[k], (unsigned long long)cum);
            else
                sl__buf_printf(&b, "shoplens_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n",
                               name, (unsigned long long)cum);
        }
        sl__buf_printf(&b, "shoplens_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n", name,
                       (double)atomic_load_explicit(&m->sum_us[ri], memory_order_relaxed) / 1e6);
        sl__buf_printf(&b, "shoplens_http_request_duration_seconds_count{route=\"%s\"} %llu\n", name,
                       (unsigned long long)cum);
    }
    sl__buf_printf(&b, "# HELP shoplens_http_requests_in_flight Requests being served now.\n"
                       "# TYPE shoplens_http_requests_in_flight gauge\n"
                       "shoplens_http_requests_in_flight %d\n", atomic_load(&srv->inflight));
    sl__buf_printf(&b, "# HELP shoplens_http_request_body_bytes_total Request body bytes read.\n"
                       "# TYPE shoplens_http_request_body_bytes_total counter\n"
                       "shoplens_http_request_body_bytes_total %llu\n",
                   (unsigned long long)atomic_load_explicit(&m->bytes_in, memory_order_relaxed));
    sl__buf_printf(&b, "# HELP shoplens_http_slow_clients_closed_total Connections closed because the request head "
                       "or a body chunk did not arrive in time (the head/body timeouts).\n"
                       "# TYPE shoplens_http_slow_clients_closed_total counter\n"
                       "shoplens_http_slow_clients_closed_total{phase=\"head\"} %llu\n"
                       "shoplens_http_slow_clients_closed_total{phase=\"body\"} %llu\n",
                   (unsigned long long)atomic_load_explicit(&m->slow_closed[0], memory_order_relaxed),
                   (unsigned long long)atomic_load_explicit(&m->slow_closed[1], memory_order_relaxed));
    sl__gauges g = { -1, -1, -1 };
    sl__api_gauges(srv, &g);
    if (g.products >= 0)
        sl__buf_printf(&b, "# HELP shoplens_catalog_products Products in the catalog.\n"
                           "# TYPE shoplens_catalog_products gauge\nshoplens_catalog_products %lld\n", g.products);
    if (g.images >= 0)
        sl__buf_printf(&b, "# HELP shoplens_images_indexed Catalog images in the search index.\n"
                           "# TYPE shoplens_images_indexed gauge\nshoplens_images_indexed %lld\n", g.images);
    if (g.index_bytes >= 0)
        sl__buf_printf(&b, "# HELP shoplens_index_size_bytes Memory held by the search index.\n"
                           "# TYPE shoplens_index_size_bytes gauge\nshoplens_index_size_bytes %lld\n", g.index_bytes);
    const sl_server_router *rt = srv->o.router;
    sl__buf_printf(&b, "# HELP shoplens_verifications_total Geometric verifications (RANSAC) run by searches, "
                       "checks and duplicate scans (a search node: of its shard's copy too).\n"
                       "# TYPE shoplens_verifications_total counter\nshoplens_verifications_total %llu\n",
                   (unsigned long long)(sl_engine_verifications(srv->engine) +
                                        (rt && rt->verifications ? rt->verifications(rt->ctx) : 0)));
    sl__buf_printf(&b, "# HELP shoplens_uptime_seconds Seconds since the server started.\n"
                       "# TYPE shoplens_uptime_seconds gauge\nshoplens_uptime_seconds %.3f\n",
                   sl__now() - srv->started);
    if (b.failed) {
        free(b.s);
        sl__resp_error(resp, 503, "overloaded", "out of memory");
        return;
    }
    resp->status = 200;
    resp->ctype = "text/plain; version=0.0.4; charset=utf-8";
    resp->body = b.s;
    resp->len = b.len;
    resp->body_static = 0;
    resp->cache = "no-store";
}
