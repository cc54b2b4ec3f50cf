/*
 * server/http.c - the libmicrohttpd glue: daemon setup, the request lifecycle, limits, auth,
 * body intake and graceful shutdown. Connections come from the front door (door.c), which
 * owns the listening socket and has checked each connection's first request head.
 *
 * Request lifecycle (one sl__req per request, created in the URI log callback - the only place
 * MHD shows the raw, undecoded request target - and freed in the completion callback):
 *   1. first access call: framing rules again (sl__framing_check: kept-alive follow-up requests
 *      did not pass the door), parse/route (404, 405), in-flight limit (503 + Retry-After),
 *      writes (403 read-only, 401 key), engine present (503), Content-Length over the limit
 *      (413, sent before any body byte is read; with "Expect: 100-continue" the client never
 *      sends it), Content-Type (415), multipart boundary (400);
 *   2. body calls: bytes go straight into the multipart parser or the raw-image buffer, both
 *      charged to a server-wide budget (max_body_total: 503 when full, so many parallel uploads
 *      cannot exhaust memory) and capped per request at max_body. A chunked body that crosses
 *      it is answered 413 at once, written straight to the socket (libmicrohttpd can queue a
 *      response only before or after the body), then up to SL__OVERRUN_SLACK more bytes are
 *      dropped (so the client reads the answer rather than a reset) and the connection closed;
 *   3. last call: the route handler runs and the response is queued. Engine routes (the slow
 *      ones: feature extraction, verification, writes) are handed to a pool of workers fed by
 *      one FIFO queue: the connection is suspended, a worker runs the handler and resumes it,
 *      and the next access call queues the answer. libmicrohttpd keeps a connection on the
 *      thread that accepted it, so without the queue a few busy keep-alive connections could
 *      all sit on one thread (measured: 4 benchmark connections on one of 2 threads in 1 run
 *      of 6, doubling latency while a core idled).
 * Shutdown: MHD_quiesce_daemon stops the listeners; connections still in the kernel backlog are
 * accepted and handed to MHD (MHD_add_connection) instead of being reset; then we wait for the
 * connections to drain (see sl_server_shutdown in server.h).
 * Invariants: `inflight` counts requests from URI callback to completion callback, so shutdown
 * can wait for every response to be delivered; the library never prints (MHD error logging is
 * off; the log callback gets one record per request); the API key is compared in constant time.
 */
#include "server/srv.h"
#include "shoplens/shoplens.h"
#include "util/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

/* Bytes of a chunked body read (and dropped) past max_body, after its 413, before the
 * connection is closed. */
#define SL__OVERRUN_SLACK ((size_t)64 << 10)

void sl_server_opts_init(sl_server_opts *o) {
    memset(o, 0, sizeof *o);
    o->listen = SL_SERVER_LISTEN_DEFAULT;
}

int sl_server_port(const sl_server *srv) { return srv ? srv->port : 0; }
const char *sl_server_url(const sl_server *srv) { return srv ? srv->url : ""; }
int sl_server_inflight(const sl_server *srv) { return srv ? atomic_load(&srv->inflight) : 0; }

/* ---- responses --------------------------------------------------------------------------- */

static enum MHD_Result sl__queue(sl__req *req, struct MHD_Connection *con, sl__resp *r) {
    struct MHD_Response *mr = MHD_create_response_from_buffer(
        r->len, r->body, r->body_static ? MHD_RESPMEM_PERSISTENT : MHD_RESPMEM_MUST_FREE);
    if (!mr) {
        sl__resp_free(r);
        return MHD_NO;
    }
    r->body = NULL; /* owned by MHD now */
    MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE, r->ctype ? r->ctype : "application/json");
    MHD_add_response_header(mr, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(mr, "Referrer-Policy", "no-referrer");
    if (r->ctype && strncmp(r->ctype, "text/html", 9) == 0)
        MHD_add_response_header(mr, "Content-Security-Policy",
                                "default-src 'none'; img-src 'self' blob: data:; "
                                "style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
                                "connect-src 'self'; media-src 'self' blob:; "
                                "base-uri 'none'; form-action 'none'; frame-ancestors 'none'");
    if (r->cache) MHD_add_response_header(mr, MHD_HTTP_HEADER_CACHE_CONTROL, r->cache);
    if (r->allow) MHD_add_response_header(mr, MHD_HTTP_HEADER_ALLOW, r->allow);
    if (r->www_auth) MHD_add_response_header(mr, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"shoplens\"");
    if (r->retry_after > 0) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", r->retry_after);
        MHD_add_response_header(mr, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    /* While draining, or when a body was announced but not read, the connection is not reused. */
    if (atomic_load(&req->srv->draining) || (req->phase < 2 && req->body_announced))
        MHD_add_response_header(mr, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ok = MHD_queue_response(con, (unsigned)r->status, mr);
    MHD_destroy_response(mr);
    if (ok == MHD_YES) req->status = r->status;
    return ok;
}

/* ---- auth -------------------------------------------------------------------------------- */

/* Constant time in the content of both strings (time depends only on the key's length). */
static int sl__key_equal(const char *given, size_t glen, const char *key, size_t klen) {
    volatile unsigned char d = (unsigned char)(glen != klen);
    for (size_t i = 0; i < klen; i++)
        d |= (unsigned char)(key[i] ^ (i < glen ? given[i] : 0));
    return d == 0;
}

static int sl__authorized(sl_server *srv, struct MHD_Connection *con) {
    if (!srv->api_key) return 1;
    const char *h = MHD_lookup_connection_value(con, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return 0;
    h += 7;
    while (*h == ' ') h++;
    size_t n = strlen(h);
    while (n > 0 && h[n - 1] == ' ') n--;
    return sl__key_equal(h, n, srv->api_key, srv->api_key_len);
}

/* ---- request lifecycle ------------------------------------------------------------------- */

static sl__conn *sl__conn_of(struct MHD_Connection *con) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(con, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? (sl__conn *)ci->socket_context : NULL;
}

static void *sl__uri_cb(void *cls, const char *uri, struct MHD_Connection *con) {
    sl_server *srv = cls;
    atomic_fetch_add(&srv->inflight, 1);
    sl__conn *conn = sl__conn_of(con);
    /* a follow-up request on a kept-alive connection: its head has begun (the deadline set
     * when the previous response ended still runs) */
    (void)sl__conn_move(conn, SL__CONN_IDLE, SL__CONN_HEAD, -1);
    sl__req *req = calloc(1, sizeof *req);
    if (!req) return NULL; /* the access handler refuses; completion decrements */
    req->srv = srv;
    req->conn = conn;
    req->t0 = sl__now();
    req->route_index = SL__M_ROUTES - 1;
    size_t n = strcspn(uri, "?");
    if (n >= sizeof req->path) n = sizeof req->path - 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)uri[i];
        req->path[i] = (c < 0x20 || c >= 0x7f) ? '?' : (char)c;
    }
    req->path[n] = '\0';
    sl_error e;
    sl_error_clear(&e);
    req->target_st = sl__target_parse(uri, strlen(uri), &req->target, &e);
    if (req->target_st != SL_OK) snprintf(req->target_msg, sizeof req->target_msg, "%s", e.message);
    return req;
}

/* Decides everything that can be decided from the request head. Returns 1 when resp holds the
 * answer (no body will be read), 0 to go on reading the body. */
/* Counts the framing header fields of a request (MHD_KeyValueIterator). */
static enum MHD_Result sl__count_field(void *cls, enum MHD_ValueKind kind, const char *key,
                                       const char *value) {
    (void)kind;
    sl__framing *f = cls;
    if (!key || !value) return MHD_YES;
    if (strcasecmp(key, MHD_HTTP_HEADER_HOST) == 0) {
        f->n_host++;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        if (f->n_cl++ == 0) { f->cl = value; f->cl_len = strlen(value); }
    } else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
        if (f->n_te++ == 0) { f->te = value; f->te_len = strlen(value); }
    }
    return MHD_YES;
}

static int sl__begin(sl__req *req, struct MHD_Connection *con, const char *version,
                     sl__resp *resp, char *allow, size_t allow_cap) {
    sl_server *srv = req->srv;
    req->content_length = MHD_lookup_connection_value(con, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *te = MHD_lookup_connection_value(con, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    req->body_announced = te != NULL || (req->content_length && strcmp(req->content_length, "0") != 0);
    sl__framing f;
    memset(&f, 0, sizeof f);
    f.minor = version && strcmp(version, MHD_HTTP_VERSION_1_0) == 0 ? 0 : 1;
    MHD_get_connection_values(con, MHD_HEADER_KIND, sl__count_field, &f);
    const char *code = NULL;
    char msg[160];
    int fs = sl__framing_check(&f, &code, msg, sizeof msg);
    if (fs) {
        sl__resp_error(resp, fs, code, "%s", msg);
        req->body_announced = 1; /* never reuse a connection whose framing is in doubt */
        return 1;
    }
    if (atomic_load(&srv->inflight) > srv->o.max_inflight) {
        sl__resp_error(resp, 503, "overloaded", "too many requests in flight, retry shortly");
        resp->retry_after = 1;
        return 1;
    }
    if (req->target_st != SL_OK) {
        sl__resp_error(resp, 400, "bad_request", "%s", req->target_msg);
        return 1;
    }
    int known = 0;
    const sl__route *r = sl__route_match(req->method, &req->target, &known, allow, allow_cap);
    if (!r) {
        if (known) {
            sl__resp_error(resp, 405, "method_not_allowed", "%s is not allowed here (allowed: %s)",
                           req->method, allow);
            resp->allow = allow;
        } else {
            sl__resp_error(resp, 404, "not_found", "no such endpoint");
        }
        return 1;
    }
    req->route = r;
    req->route_index = sl__route_index(r);
    sl_error e;
    sl_error_clear(&e);
    if (sl__target_check_params(&req->target, r->params, &e) != SL_OK) {
        sl__resp_error(resp, 400, "bad_request", "%s", e.message);
        return 1;
    }
    if (r->write) {
        if (srv->o.read_only) {
            sl__resp_error(resp, 403, "forbidden", "this server is read-only");
            return 1;
        }
        if (!sl__authorized(srv, con)) {
            sl__resp_error(resp, 401, "unauthorized",
                           "this endpoint needs the header 'Authorization: Bearer <API key>'");
            resp->www_auth = 1;
            return 1;
        }
    }
    if (r->engine && !srv->engine && r->body == SL__BODY_NONE) {
        sl__resp_error(resp, 503, "unavailable", "no catalog store is open");
        resp->retry_after = 5;
        return 1;
    }
    const char *cl = req->content_length;
    if (cl) {
        char *end = NULL;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (errno == 0 && end != cl && n > srv->o.max_body) {
            sl__resp_error(resp, 413, "payload_too_large", "the body is %llu bytes; the limit is %zu",
                           n, srv->o.max_body);
            return 1;
        }
        if (errno == 0 && end != cl && r->body != SL__BODY_NONE &&
            atomic_load(&srv->body_held) + n > srv->o.max_body_total) {
            sl__resp_error(resp, 503, "overloaded", "too many uploads in progress, retry shortly");
            resp->retry_after = 1;
            return 1;
        }
    }
    if (r->body == SL__BODY_NONE) return 0;
    const char *ct = MHD_lookup_connection_value(con, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (sl__media_is(ct, "multipart/form-data")) {
        char boundary[SL__MP_BOUNDARY_MAX + 1];
        if (sl__mp_boundary(ct, boundary, &e) != SL_OK) {
            sl__resp_error(resp, 400, "bad_request", "%s", e.message);
            return 1;
        }
        req->mp = sl__mp_new(boundary, srv->o.max_body);
        if (!req->mp) {
            sl__resp_error(resp, 503, "overloaded", "out of memory");
            resp->retry_after = 1;
            return 1;
        }
        return 0;
    }
    if ((r->body == SL__BODY_IMAGE &&
         (sl__media_is(ct, "image/") || sl__media_is(ct, "application/octet-stream"))) ||
        (r->body == SL__BODY_PATCH &&
         (sl__media_is(ct, "application/merge-patch+json") || sl__media_is(ct, "application/json")))) {
        req->raw_image = 1; /* held as one raw body */
        return 0;
    }
    sl__resp_error(resp, 415, "unsupported_media_type",
                   r->body == SL__BODY_IMAGE
                       ? "send the image as multipart/form-data field 'image' or as a raw image/* body"
                   : r->body == SL__BODY_PATCH
                       ? "send application/merge-patch+json (or multipart/form-data with 'metadata' and 'image')"
                       : "send multipart/form-data");
    return 1;
}

static void sl__body(sl__req *req, const char *data, size_t size) {
    sl_server *srv = req->srv;
    req->bytes_in += size;
    if (req->body_st != SL_OK) return;
    if (req->bytes_in > srv->o.max_body) {
        req->body_st = SL_E_TOO_LARGE;
        snprintf(req->body_msg, sizeof req->body_msg, "the body is larger than the limit of %zu bytes",
                 srv->o.max_body);
        return;
    }
    if (!req->mp && !req->raw_image) return; /* a body nobody asked for: counted, dropped */
    /* Reserve the bytes in the server-wide budget before holding them. */
    size_t held = atomic_fetch_add(&srv->body_held, size) + size;
    if (held > srv->o.max_body_total) {
        atomic_fetch_sub(&srv->body_held, size);
        req->body_st = SL_E_BUSY;
        snprintf(req->body_msg, sizeof req->body_msg, "too many uploads in progress, retry shortly");
        return;
    }
    req->held += size;
    sl_error e;
    sl_error_clear(&e);
    if (req->mp) {
        if (sl__mp_feed(req->mp, data, size, &e) != SL_OK) {
            req->body_st = e.code;
            snprintf(req->body_msg, sizeof req->body_msg, "%s", e.message);
        }
    } else if (req->raw_image) {
        if (req->raw_len + size + 1 > req->raw_cap) {
            size_t cap = req->raw_cap ? req->raw_cap * 2 : 65536;
            while (cap < req->raw_len + size + 1) cap *= 2;
            if (cap > srv->o.max_body + 1) cap = srv->o.max_body + 1;
            uint8_t *nb = realloc(req->raw, cap);
            if (!nb) {
                req->body_st = SL_E_NOMEM;
                snprintf(req->body_msg, sizeof req->body_msg, "out of memory");
                return;
            }
            req->raw = nb;
            req->raw_cap = cap;
        }
        memcpy(req->raw + req->raw_len, data, size);
        req->raw_len += size;
    }
}

static void sl__end(sl__req *req, sl__resp *resp) {
    sl_error e;
    sl_error_clear(&e);
    if (req->body_st == SL_OK && req->mp && sl__mp_finish(req->mp, &e) != SL_OK) {
        req->body_st = e.code;
        snprintf(req->body_msg, sizeof req->body_msg, "%s", e.message);
    }
    if (req->body_st != SL_OK) {
        sl__resp_status(resp, req->body_st == SL_E_INVALID ? SL_E_INVALID : req->body_st, req->body_msg);
        return;
    }
    if (req->route->engine && !req->srv->engine) {
        /* Body routes: malformed bodies were reported first; now the missing engine. */
        sl__resp_error(resp, 503, "unavailable", "no catalog store is open");
        resp->retry_after = 5;
        return;
    }
    req->route->handle(req, resp);
}

/* ---- worker pool ------------------------------------------------------------------------- */

static void *sl__worker(void *arg) {
    sl_server *srv = arg;
    sl__pool *p = &srv->pool;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->head && !p->quit) pthread_cond_wait(&p->cv, &p->mu);
        sl__req *req = p->head;
        if (!req) break; /* quit and nothing left */
        p->head = req->qnext;
        if (!p->head) p->tail = NULL;
        int quit = p->quit;
        pthread_mutex_unlock(&p->mu);
        memset(&req->answer, 0, sizeof req->answer);
        if (quit) {
            sl__resp_error(&req->answer, 503, "unavailable", "the server is shutting down");
            req->answer.retry_after = 1;
        } else {
            sl__end(req, &req->answer);
        }
        req->phase = 5;
        MHD_resume_connection(req->con);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Suspends the connection and queues the request for a worker. Returns 0, or -1 when there is
 * no pool (any more): the caller then runs the request itself. */
static int sl__dispatch(sl__req *req, struct MHD_Connection *con) {
    sl__pool *p = &req->srv->pool;
    if (p->n == 0) return -1;
    pthread_mutex_lock(&p->mu);
    if (p->quit) {
        pthread_mutex_unlock(&p->mu);
        return -1;
    }
    req->con = con;
    req->qnext = NULL;
    req->phase = 4;
    /* The inactivity timeout is for clients, not for our queue and search time: off while the
     * request waits and runs (libmicrohttpd 0.9.75 would otherwise count that time and close
     * the connection when it is resumed); set again on resume, which restarts its clock. */
    MHD_set_connection_option(con, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
    MHD_suspend_connection(con);
    if (p->tail) p->tail->qnext = req;
    else p->head = req;
    p->tail = req;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

/* Starts n workers (fewer when threads cannot be created; 0 means inline handling). */
static void sl__pool_start(sl_server *srv, int n) {
    sl__pool *p = &srv->pool;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    for (int i = 0; i < n && i < SL_SERVER_THREADS_MAX; i++) {
        if (pthread_create(&p->th[i], NULL, sl__worker, srv) != 0) break;
        p->n = i + 1;
    }
}

/* Workers answer what is still queued with 503, resume those connections and exit. */
static void sl__pool_stop(sl_server *srv) {
    sl__pool *p = &srv->pool;
    pthread_mutex_lock(&p->mu);
    p->quit = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n; i++) pthread_join(p->th[i], NULL);
}

static void sl__pool_free(sl_server *srv) {
    pthread_cond_destroy(&srv->pool.cv);
    pthread_mutex_destroy(&srv->pool.mu);
}

/* A chunked body crossed max_body: 413 now, straight on the socket. Returns MHD_YES to go on
 * dropping the body (phase 6), MHD_NO to close the connection. */
static enum MHD_Result sl__answer_overrun(sl__req *req, struct MHD_Connection *con) {
    if (sl__conn_move(req->conn, SL__CONN_BODY, SL__CONN_BUSY, 0) != 0) return MHD_NO;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(con, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return MHD_NO;
    (void)sl__answer_fd(ci->connect_fd, 413, "payload_too_large", req->body_msg, 0);
    shutdown(ci->connect_fd, SHUT_WR);
    req->status = 413;
    req->phase = 6;
    return MHD_YES;
}

static enum MHD_Result sl__access(void *cls, struct MHD_Connection *con, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size, void **con_cls) {
    (void)cls; (void)url;
    sl__req *req = *con_cls;
    if (!req) return MHD_NO;
    char allow[64];
    sl__resp resp = { 0 };
    if (req->phase == 0) {
        req->phase = 1;
        snprintf(req->method, sizeof req->method, "%s", method);
        req->head = strcmp(method, "HEAD") == 0;
        int answered = sl__begin(req, con, version, &resp, allow, sizeof allow);
        /* the head is complete: the body deadline starts, or no deadline while we work */
        int body = !answered && req->body_announced;
        if (sl__conn_move(req->conn, SL__CONN_HEAD, body ? SL__CONN_BODY : SL__CONN_BUSY,
                          body ? req->srv->o.body_timeout_s : 0) != 0) {
            sl__resp_free(&resp);
            return MHD_NO; /* the watchdog answered 408 and is closing it */
        }
        if (answered) {
            enum MHD_Result ok = sl__queue(req, con, &resp);
            req->phase = 3;
            return ok;
        }
        return MHD_YES;
    }
    if (req->phase == 3) { /* answered early: drop whatever body arrives */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (req->phase == 6) { /* answered 413 on the socket: drop a little more, then close */
        req->bytes_in += *upload_data_size;
        if (*upload_data_size == 0 || req->bytes_in - req->srv->o.max_body > SL__OVERRUN_SLACK)
            return MHD_NO;
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (req->phase == 5) { /* a worker has the answer; the connection was resumed */
        req->phase = 2;
        MHD_set_connection_option(con, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned)req->srv->o.timeout_s);
        return sl__queue(req, con, &req->answer);
    }
    if (req->phase == 4) return MHD_YES; /* queued (not expected: the connection is suspended) */
    if (*upload_data_size) {
        sl__body(req, upload_data, *upload_data_size);
        sl__conn_body(req->conn, *upload_data_size, req->srv->o.body_timeout_s);
        *upload_data_size = 0;
        /* A body without Content-Length (chunked) crossed the limit (an announced length over
         * it was refused before the body). */
        if (req->body_st == SL_E_TOO_LARGE) return sl__answer_overrun(req, con);
        return MHD_YES;
    }
    if (sl__conn_move(req->conn, SL__CONN_BODY, SL__CONN_BUSY, 0) != 0) return MHD_NO;
    req->phase = 2;
    if (req->route && req->route->engine && req->body_st == SL_OK && sl__dispatch(req, con) == 0)
        return MHD_YES;
    sl__end(req, &resp);
    return sl__queue(req, con, &resp);
}

static void sl__completed(void *cls, struct MHD_Connection *con, void **con_cls,
                          enum MHD_RequestTerminationCode toe) {
    (void)toe;
    sl_server *srv = cls;
    sl__req *req = *con_cls;
    *con_cls = NULL;
    sl__conn *conn = sl__conn_of(con);
    if (conn) {
        /* the next request's head (or an idle kept-alive connection) has until then */
        int st = atomic_load(&conn->state);
        if (st != SL__CONN_CLOSING) (void)sl__conn_move(conn, st, SL__CONN_IDLE, srv->o.head_timeout_s);
        if (req && req->status == 0 && atomic_load(&conn->answered)) req->status = 408;
    }
    if (req) {
        double dt = sl__now() - req->t0;
        sl__metrics_observe(&srv->metrics, req->route_index, req->status, dt, req->bytes_in);
        if (srv->o.log) {
            sl_server_request_log entry = {
                .method = req->method[0] ? req->method : "-",
                .path = req->path,
                .route = req->route ? req->route->name : "none",
                .status = req->status,
                .ms = dt * 1e3,
                .bytes_in = req->bytes_in,
            };
            srv->o.log(srv->o.log_user, &entry);
        }
        sl__resp_free(&req->answer); /* a worker's answer never sent (connection closed) */
        sl__mp_free(req->mp);
        free(req->raw);
        atomic_fetch_sub(&srv->body_held, req->held);
        free(req);
    }
    atomic_fetch_sub(&srv->inflight, 1);
}

static void sl__notify_connection(void *cls, struct MHD_Connection *con, void **socket_context,
                                  enum MHD_ConnectionNotificationCode toe) {
    sl__door_notify(cls, con, socket_context, toe == MHD_CONNECTION_NOTIFY_STARTED);
}

/* ---- setup ------------------------------------------------------------------------------- */

typedef struct {
    struct sockaddr_storage ss;
    int v6;
    int loopback;
    int port;
    char host[64];
} sl__addr;

static sl_status sl__parse_listen(const char *s, sl__addr *a, sl_error *err) {
    memset(a, 0, sizeof *a);
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s)
        return sl__err_set(err, SL_E_INVALID, "listen address '%.64s' must be HOST:PORT", s);
    char *end = NULL;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || errno || port < 0 || port > 65535)
        return sl__err_set(err, SL_E_INVALID, "listen address '%.64s': bad port", s);
    size_t hl = (size_t)(colon - s);
    const char *h = s;
    if (s[0] == '[') {
        if (hl < 2 || s[hl - 1] != ']')
            return sl__err_set(err, SL_E_INVALID, "listen address '%.64s': unbalanced '['", s);
        h = s + 1;
        hl -= 2;
        a->v6 = 1;
    }
    if (hl == 0 || hl >= sizeof a->host)
        return sl__err_set(err, SL_E_INVALID, "listen address '%.64s': bad host", s);
    memcpy(a->host, h, hl);
    a->host[hl] = '\0';
    if (!a->v6 && strcmp(a->host, "localhost") == 0) strcpy(a->host, "127.0.0.1");
    a->port = (int)port;
    if (a->v6) {
        struct sockaddr_in6 *sa = (struct sockaddr_in6 *)&a->ss;
        sa->sin6_family = AF_INET6;
        sa->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, a->host, &sa->sin6_addr) != 1)
            return sl__err_set(err, SL_E_INVALID, "listen address '%.64s': bad IPv6 literal", s);
        const uint8_t *b = sa->sin6_addr.s6_addr;
        static const uint8_t lo6[16] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 };
        static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
        a->loopback = memcmp(b, lo6, 16) == 0 || (memcmp(b, mapped, 12) == 0 && b[12] == 127);
    } else {
        struct sockaddr_in *sa = (struct sockaddr_in *)&a->ss;
        sa->sin_family = AF_INET;
        sa->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, a->host, &sa->sin_addr) != 1)
            return sl__err_set(err, SL_E_INVALID,
                               "listen address '%.64s': host must be an IP literal or localhost", s);
        a->loopback = ((const uint8_t *)&sa->sin_addr)[0] == 127;
    }
    return SL_OK;
}

static sl_status sl__check_range(long v, long lo, long hi, const char *what, sl_error *err) {
    if (v < lo || v > hi) return sl__err_set(err, SL_E_INVALID, "%s must be in %ld..%ld", what, lo, hi);
    return SL_OK;
}

sl_status sl_server_new(sl_engine *engine, const sl_server_opts *opts, sl_server **out,
                        sl_error *err) {
    if (!out) return sl__err_set(err, SL_E_INVALID, "out is NULL");
    *out = NULL;
    sl_server_opts o;
    if (opts) o = *opts;
    else sl_server_opts_init(&o);
    if (!o.listen) o.listen = SL_SERVER_LISTEN_DEFAULT;
    if (o.threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        o.threads = n > 0 ? (int)(n < SL_SERVER_THREADS_MAX ? n : SL_SERVER_THREADS_MAX) : 1;
    }
    if (o.max_body == 0) o.max_body = SL_SERVER_MAX_BODY_DEFAULT;
    if (o.max_body_total == 0)
        o.max_body_total = o.max_body > SL_SERVER_MAX_BODY_TOTAL_DEFAULT ? o.max_body : SL_SERVER_MAX_BODY_TOTAL_DEFAULT;
    if (o.max_inflight == 0) o.max_inflight = SL_SERVER_MAX_INFLIGHT_DEFAULT;
    if (o.max_connections == 0) o.max_connections = SL_SERVER_MAX_CONNECTIONS_DEFAULT;
    if (o.timeout_s == 0) o.timeout_s = SL_SERVER_TIMEOUT_DEFAULT;
    if (o.head_timeout_s == 0) o.head_timeout_s = SL_SERVER_HEAD_TIMEOUT_DEFAULT;
    if (o.body_timeout_s == 0) o.body_timeout_s = SL_SERVER_BODY_TIMEOUT_DEFAULT;
    sl_status st;
    if ((st = sl__check_range(o.threads, SL_SERVER_THREADS_MIN, SL_SERVER_THREADS_MAX, "threads", err)) ||
        (st = sl__check_range(o.max_inflight, SL_SERVER_MAX_INFLIGHT_MIN, SL_SERVER_MAX_INFLIGHT_MAX, "max_inflight", err)) ||
        (st = sl__check_range(o.max_connections, SL_SERVER_MAX_CONNECTIONS_MIN, SL_SERVER_MAX_CONNECTIONS_MAX, "max_connections", err)) ||
        (st = sl__check_range(o.timeout_s, SL_SERVER_TIMEOUT_MIN, SL_SERVER_TIMEOUT_MAX, "timeout_s", err)) ||
        (st = sl__check_range(o.head_timeout_s, SL_SERVER_HEAD_TIMEOUT_MIN, SL_SERVER_HEAD_TIMEOUT_MAX, "head_timeout_s", err)) ||
        (st = sl__check_range(o.body_timeout_s, SL_SERVER_BODY_TIMEOUT_MIN, SL_SERVER_BODY_TIMEOUT_MAX, "body_timeout_s", err)))
        return st;
    if (o.max_body < SL_SERVER_MAX_BODY_MIN || o.max_body > SL_SERVER_MAX_BODY_MAX)
        return sl__err_set(err, SL_E_INVALID, "max_body must be in %zu..%zu bytes",
                           SL_SERVER_MAX_BODY_MIN, SL_SERVER_MAX_BODY_MAX);
    if (o.max_body_total < o.max_body)
        return sl__err_set(err, SL_E_INVALID, "max_body_total (%zu) must be at least max_body (%zu)",
                           o.max_body_total, o.max_body);
    const char *key = o.api_key && o.api_key[0] ? o.api_key : NULL;
    if (key) {
        size_t kl = strlen(key);
        if (kl < SL_SERVER_API_KEY_MIN || kl > SL_SERVER_API_KEY_MAX)
            return sl__err_set(err, SL_E_AUTH, "the API key must be %d..%d bytes long (got %zu)",
                               SL_SERVER_API_KEY_MIN, SL_SERVER_API_KEY_MAX, kl);
        for (size_t i = 0; i < kl; i++)
            if ((unsigned char)key[i] <= 0x20 || (unsigned char)key[i] >= 0x7f)
                return sl__err_set(err, SL_E_AUTH, "the API key must be printable ASCII without spaces");
    }
    sl__addr a;
    if ((st = sl__parse_listen(o.listen, &a, err)) != SL_OK) return st;
    if (!a.loopback && !o.read_only && !key)
        return sl__err_set(err, SL_E_AUTH,
                           "refusing to listen on %s with writes enabled and no API key "
                           "(set an API key, go read-only, or listen on loopback)", o.listen);

    sl_server *srv = calloc(1, sizeof *srv);
    if (!srv) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    srv->engine = engine;
    srv->o = o;
    srv->o.api_key = NULL;
    srv->started = sl__now();
    if (key) {
        srv->api_key = sl__strdup(key);
        if (!srv->api_key) { free(srv); return sl__err_set(err, SL_E_NOMEM, "out of memory"); }
        srv->api_key_len = strlen(key);
    }
    /* The front door listens; libmicrohttpd only gets the connections it hands over. */
    int port = 0;
    sl_error le;
    sl_error_clear(&le);
    if ((st = sl__door_listen(srv, (struct sockaddr *)&a.ss, a.v6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in),
                              &port, &le)) != SL_OK) {
        sl__door_stop(srv);
        pthread_mutex_destroy(&srv->door.mu);
        free(srv->api_key);
        free(srv);
        return sl__err_set(err, st == SL_E_NOMEM ? st : SL_E_IO, "cannot listen on %s: %s", o.listen, le.message);
    }
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ITC | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_NO_LISTEN_SOCKET;
    sl__pool_start(srv, o.threads);
    errno = 0;
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, 0, NULL, NULL, sl__access, srv,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)(o.threads > 1 ? o.threads : 0),
        /* the door enforces max_connections (door.c says why this one must never be hit) */
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)o.max_connections * (unsigned)(o.threads + 1) + 64u,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)o.timeout_s,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(256 * 1024),
        MHD_OPTION_URI_LOG_CALLBACK, sl__uri_cb, srv,
        MHD_OPTION_NOTIFY_COMPLETED, sl__completed, srv,
        MHD_OPTION_NOTIFY_CONNECTION, sl__notify_connection, srv,
        MHD_OPTION_END);
    if (d) srv->daemon = d;
    if (!d || sl__door_start(srv, &le) != SL_OK) {
        int e = errno;
        sl__door_stop(srv);
        sl__pool_stop(srv);
        if (d) MHD_stop_daemon(d);
        sl__pool_free(srv);
        pthread_mutex_destroy(&srv->door.mu);
        free(srv->api_key);
        free(srv);
        return sl__err_set(err, SL_E_IO, "cannot serve on %s: %s", o.listen,
                           d ? le.message : e ? strerror(e) : "libmicrohttpd refused to start");
    }
    srv->port = port;
    if (a.v6) snprintf(srv->url, sizeof srv->url, "http://[%s]:%d/", a.host, srv->port);
    else snprintf(srv->url, sizeof srv->url, "http://%s:%d/", a.host, srv->port);
    *out = srv;
    return SL_OK;
}

/* Number of connections MHD holds (all pool threads). */
static unsigned sl__connections(sl_server *srv) {
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    return i ? i->num_connections : 0;
}

sl_status sl_server_shutdown(sl_server *srv, double grace_s) {
    if (!srv) return SL_OK;
    if (srv->stopped) return srv->stop_status;
    atomic_store(&srv->draining, 1);
    /* Connections the kernel already accepted (the listen backlog) belong to clients that sent
     * or are sending a request: the door takes them in and serves them instead of resetting
     * them. Only the microseconds between the last accept and close() can still cut one. */
    sl__door_drain(srv);
    /* Wait until every connection is gone (responses now carry "Connection: close"), or until
     * nothing has been in flight for `linger` seconds (only idle kept-alive connections left),
     * or until the grace period runs out. */
    double t0 = sl__now(), quiet_since = t0;
    const double linger = 1.0;
    sl_status st = SL_OK;
    for (;;) {
        double now = sl__now();
        int busy = atomic_load(&srv->inflight) > 0 || sl__door_busy(srv) > 0;
        if (busy) quiet_since = now;
        if (!busy && (sl__connections(srv) == 0 || now - quiet_since >= linger)) break;
        if (now - t0 >= grace_s) {
            if (busy) st = SL_E_BUSY;
            break;
        }
        struct timespec ts = { 0, 2 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    /* nothing more is handed over; then no request may stay suspended when the daemon stops:
     * the workers finish the one they run, answer the queued ones 503 and resume them; later
     * ones run on their own thread */
    sl__door_stop(srv);
    sl__pool_stop(srv);
    MHD_stop_daemon(srv->daemon);
    srv->daemon = NULL;
    srv->stopped = 1;
    srv->stop_status = st;
    return st;
}

void sl_server_free(sl_server *srv) {
    if (!srv) return;
    if (!srv->stopped) sl_server_shutdown(srv, 0);
    sl__pool_free(srv);
    pthread_mutex_destroy(&srv->door.mu);
    free(srv->api_key);
    free(srv);
}
