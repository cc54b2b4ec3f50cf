/*
 * shoplens/server.h - the HTTP service: a JSON API over a search engine and the web page.
 *
 * The server runs on libmicrohttpd with its own threads (a thread pool, each thread on epoll)
 * for connections and HTTP, and as many workers, fed by one first-in first-out queue, for the
 * requests that use the engine (search, products, images...): whichever worker is free takes
 * the oldest request, whatever connection it came on. sl_server_new binds, starts and returns;
 * requests are served until sl_server_shutdown or sl_server_free. Endpoints, status codes and the JSON they return are specified in
 * docs/openapi.yaml. Every error answer is {"error": {"code": "...", "message": "..."}}.
 *
 * Safety: the server refuses to listen on a non-loopback address when writes are enabled and no
 * API key is set (SL_E_AUTH). A front door (its own thread) accepts connections and reads each
 * new connection's request head before libmicrohttpd sees it: heads that are malformed or
 * ambiguously framed (Content-Length with Transfer-Encoding, a malformed Content-Length, HTTP/1.1
 * without Host, ...) get one JSON error and the connection is closed; heads slower than
 * head_timeout_s get 408. Bodies over max_body are answered 413 (before reading them when the
 * length is announced, at the limit for chunked bodies), bodies slower than one
 * SL_SERVER_BODY_CHUNK per body_timeout_s get 408, too many requests in flight are answered 503
 * with Retry-After, idle clients are dropped after timeout_s. Slow clients closed are counted in
 * /metrics. The library never prints: one record per finished request goes to the log callback
 * (the CLI prints it).
 *
 * Threading: the log callback and the engine are called from the server's threads, several at
 * once. sl_server_shutdown and sl_server_free must not be called from the log callback.
 */
#ifndef SHOPLENS_SERVER_H
#define SHOPLENS_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include "shoplens/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sl_server sl_server;
typedef struct sl_engine sl_engine;   /* shoplens/engine.h */
typedef struct sl_matches sl_matches; /* shoplens/engine.h */
typedef struct sl_query sl_query;     /* shoplens/engine.h */

/* What a search answered by a cluster router adds to the answer (docs/cluster.md). */
#define SL_SERVER_MISSING_MAX 64
typedef struct sl_server_search_info {
    int partial;              /* nonzero: shards did not answer; their products are missing */
    int shards;               /* shards the search asked */
    int missing[SL_SERVER_MISSING_MAX]; /* the shards that did not answer (the first 64) */
    int n_missing;
} sl_server_search_info;

/* A cluster router and search node in front of the engine (shoplens/cluster.h). With one,
 * POST /v1/search, POST /v1/classify and GET /v1/products/{id}/similar are answered by
 * `search` (their JSON then carries "partial" and "missing_shards"), and the internal routes
 * POST /v1/internal/{candidates,rerank} of the search phases by `shard` (404 when NULL).
 * Both are called from the server's threads, several at once. */
typedef struct sl_server_router {
    void *ctx;
    /* image (encoded bytes) for search / classify, or product_id for similar */
    sl_status (*search)(void *ctx, const void *image, size_t len, const char *product_id,
                        const sl_query *q, sl_matches *out, sl_server_search_info *info,
                        sl_error *err);
    /* op "candidates" or "rerank": a JSON request body, a JSON answer (malloc'ed into *json) */
    sl_status (*shard)(void *ctx, const char *op, const void *body, size_t len, char **json,
                       sl_error *err);
    /* geometric verifications the node's shard has run (added to /metrics'
     * shoplens_verifications_total; NULL: none) */
    uint64_t (*verifications)(void *ctx);
} sl_server_router;

#define SL_SERVER_LISTEN_DEFAULT "127.0.0.1:8080"
#define SL_SERVER_THREADS_MIN 1
#define SL_SERVER_THREADS_MAX 256                       /* 0 = one per online CPU */
#define SL_SERVER_MAX_BODY_DEFAULT ((size_t)16 << 20)   /* 16 MiB */
#define SL_SERVER_MAX_BODY_MIN ((size_t)1 << 10)
#define SL_SERVER_MAX_BODY_MAX ((size_t)1 << 30)
#define SL_SERVER_MAX_BODY_TOTAL_DEFAULT ((size_t)256 << 20) /* all bodies held at once */
#define SL_SERVER_MAX_INFLIGHT_DEFAULT 64
#define SL_SERVER_MAX_INFLIGHT_MIN 1
#define SL_SERVER_MAX_INFLIGHT_MAX 65536
#define SL_SERVER_MAX_CONNECTIONS_DEFAULT 512
#define SL_SERVER_MAX_CONNECTIONS_MIN 4
#define SL_SERVER_MAX_CONNECTIONS_MAX 65536
#define SL_SERVER_TIMEOUT_DEFAULT 30                    /* seconds of inactivity */
#define SL_SERVER_TIMEOUT_MIN 1
#define SL_SERVER_TIMEOUT_MAX 3600
#define SL_SERVER_HEAD_TIMEOUT_DEFAULT 10               /* seconds for a whole request head */
#define SL_SERVER_HEAD_TIMEOUT_MIN 1
#define SL_SERVER_HEAD_TIMEOUT_MAX 3600
#define SL_SERVER_BODY_TIMEOUT_DEFAULT 30               /* seconds for each SL_SERVER_BODY_CHUNK */
#define SL_SERVER_BODY_TIMEOUT_MIN 1
#define SL_SERVER_BODY_TIMEOUT_MAX 3600
#define SL_SERVER_BODY_CHUNK ((size_t)64 << 10)         /* body bytes per body deadline */
#define SL_SERVER_API_KEY_MIN 16                        /* bytes; shorter keys are refused */
#define SL_SERVER_API_KEY_MAX 512

/* One finished request, passed to the log callback. Strings are valid during the call only.
 * status is 0 when the connection ended before a response was queued. */
typedef struct sl_server_request_log {
    const char *method;   /* "GET", ... */
    const char *path;     /* the request path, percent-encoded as received, no query string */
    const char *route;    /* stable route name ("search", "product_get", ..., "none") */
    int status;
    double ms;            /* from the request line to the end of the response */
    size_t bytes_in;      /* body bytes read */
} sl_server_request_log;

typedef void (*sl_server_log_fn)(void *user, const sl_server_request_log *entry);

/* Server options. Call sl_server_opts_init first; zero fields mean the defaults above. */
typedef struct sl_server_opts {
    const char *listen;    /* "HOST:PORT": IPv4 literal, "[IPv6]" or "localhost"; port 0 picks
                              a free port (read it back with sl_server_port) */
    int threads;           /* connection threads and engine workers, each (0: online CPUs) */
    size_t max_body;       /* request body limit in bytes */
    size_t max_body_total; /* bytes of request bodies held in memory at once, all requests
                              together (>= max_body); beyond it uploads are answered 503 */
    int max_inflight;      /* requests being served at once before 503 */
    int max_connections;   /* connections served at once (one more with a complete request
                              head gets 503 + Retry-After); as many more may be sending their
                              first request head: when they are full, a new connection replaces
                              the longest-waiting one that sent a partial head (else one older
                              than 0.2 s), or waits in the kernel's backlog */
    int timeout_s;         /* inactivity timeout of a connection */
    int head_timeout_s;    /* a request head (request line and headers) must be complete within
                              this many seconds of the connection opening, or of the previous
                              response on a kept-alive connection (also the longest a kept-alive
                              connection stays idle); else 408 and the connection is closed */
    int body_timeout_s;    /* each SL_SERVER_BODY_CHUNK bytes of a request body (and its end)
                              must arrive within this many seconds; else 408 and closed */
    const char *api_key;   /* NULL or "": no key. Copied. Required for writes off loopback. */
    int read_only;         /* nonzero: PUT/DELETE are answered 403 */
    sl_server_log_fn log;  /* NULL: no log */
    void *log_user;
    const sl_server_router *router; /* NULL: the engine answers searches (not owned) */
} sl_server_opts;

/* Fills *opts with the defaults (listen 127.0.0.1:8080, everything else 0 = default). */
void sl_server_opts_init(sl_server_opts *opts);

/* Creates the server over `engine` (not owned; must outlive the server; NULL serves only the
 * page, /healthz and /metrics and answers 503 elsewhere), binds and starts serving.
 * On success *out owns the running server. Errors: SL_E_INVALID (bad option, message names it),
 * SL_E_AUTH (non-loopback address with writes enabled and no key, or a key shorter than
 * SL_SERVER_API_KEY_MIN), SL_E_IO (cannot bind or start; errno in the message), SL_E_NOMEM.
 * On failure *out is NULL and nothing is left running. */
sl_status sl_server_new(sl_engine *engine, const sl_server_opts *opts, sl_server **out,
                        sl_error *err);

/* The TCP port the server listens on (useful after port 0), 0 if not listening. */
int sl_server_port(const sl_server *srv);

/* The base URL, e.g. "http://127.0.0.1:8080/" (owned by the server). */
const char *sl_server_url(const sl_server *srv);

/* Graceful stop: stops listening (connections already queued in the kernel's backlog are still
 * taken in and served), lets requests in flight finish and their responses go out (responses now
 * carry "Connection: close"), and waits until every connection is closed, or nothing has been in
 * flight for one second (only idle kept-alive connections left), or grace_s seconds passed;
 * then stops the threads. Idempotent. Returns SL_OK when no request was cut, SL_E_BUSY when the
 * grace period ran out with requests in flight (they were cut). Does not free. */
sl_status sl_server_shutdown(sl_server *srv, double grace_s);

/* Number of requests being served right now. */
int sl_server_inflight(const sl_server *srv);

/* Serializes results as the API's SearchResponse JSON (docs/openapi.yaml):
 * {"results":[{"rank","product_id","score","title","category","price","image_id","image_url",
 * "inliers"}...],"count","took_ms"} - so `shoplens search --json` can print exactly what
 * POST /v1/search returns. m may be NULL (no results). Returns a malloc'ed string (free()) or
 * NULL when out of memory. Invalid UTF-8 in catalog text is replaced by '?'. */
char *sl_server_results_json(const sl_matches *m, double took_ms);

/* Stops immediately if still running (as sl_server_shutdown with grace 0) and frees. NULL ok. */
void sl_server_free(sl_server *srv);

#ifdef __cplusplus
}
#endif
#endif
