/*
 * server/srv.h - internals shared by the server's files (not public): the request and response
 * records, the route table, metrics, and JSON/error helpers.
 *
 *   door.c      the front door: listening socket, request-head check, head/body deadlines
 *   head.c      the request-head parser of the front door (parse.h)
 *   http.c      libmicrohttpd glue: request lifecycle, limits, auth, body intake, shutdown
 *   routes.c    the route table and matching (method + path pattern -> handler)
 *   api.c       the /v1 handlers over the engine
 *   core.c      page, /healthz, /metrics handlers and the JSON/error helpers
 *   metrics.c   Prometheus counters and histograms (lock-free, atomics)
 *   target.c, multipart.c   the untrusted-input parsers (parse.h)
 */
#ifndef SL_SERVER_SRV_H
#define SL_SERVER_SRV_H

#include <pthread.h>
#include <sys/socket.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "server/parse.h"
#include "shoplens/server.h"
#include "shoplens/store.h"

/* ---- metrics ----------------------------------------------------------------------------- */

#define SL__M_ROUTES 24           /* >= number of routes + 1 ("none") */
#define SL__M_STATUSES 20         /* distinct status codes tracked; the last is "other" */
#define SL__M_BUCKETS 14          /* latency histogram buckets (the last is +Inf) */

typedef struct sl__metrics {
    _Atomic uint64_t count[SL__M_ROUTES][SL__M_STATUSES];
    _Atomic uint64_t bucket[SL__M_ROUTES][SL__M_BUCKETS];  /* non-cumulative */
    _Atomic uint64_t sum_us[SL__M_ROUTES];
    _Atomic uint64_t bytes_in;
    _Atomic uint64_t slow_closed[2];  /* slow clients closed: [0] in the head, [1] in the body */
} sl__metrics;

extern const double sl__m_bucket_le[SL__M_BUCKETS - 1];   /* seconds, ascending */
extern const int sl__m_status_codes[SL__M_STATUSES - 1];

/* Records one finished request (route index < SL__M_ROUTES). Thread-safe. */
void sl__metrics_observe(sl__metrics *m, int route, int status, double seconds, size_t bytes_in);

/* ---- requests and responses -------------------------------------------------------------- */

typedef enum sl__body_kind {
    SL__BODY_NONE = 0,   /* no body expected (any body is read and discarded, counted) */
    SL__BODY_IMAGE,      /* multipart/form-data with field "image", or a raw image body */
    SL__BODY_FORM,       /* multipart/form-data (fields handled by the route) */
    SL__BODY_PATCH       /* multipart/form-data, or a raw JSON body (application/merge-patch+json
                            or application/json) held like a raw image (raw_image, raw) */
} sl__body_kind;

typedef struct sl__resp {
    int status;
    const char *ctype;        /* static string */
    char *body;               /* malloc'ed unless body_static */
    size_t len;
    int body_static;
    int retry_after;          /* seconds; 0: no header */
    const char *allow;        /* Allow header for 405 (static) */
    int www_auth;             /* add WWW-Authenticate: Bearer */
    const char *cache;        /* Cache-Control (static) or NULL */
} sl__resp;

typedef struct sl__route sl__route;
struct sl__conn;

typedef struct sl__req {
    sl_server *srv;
    double t0;
    const sl__route *route;
    int route_index;          /* for metrics; the "none" slot when no route matched */
    int phase;                /* 0 before the first access call, 1 receiving, 2 answered */
    int status;               /* queued status (0: none yet) */
    int head;                 /* HEAD request */
    char method[12];
    char path[192];           /* raw path for the log, truncated */
    sl__target target;
    sl_status target_st;
    char target_msg[SL_ERROR_MSG_MAX];
    /* body */
    size_t bytes_in;
    size_t held;              /* this request's share of srv->body_held */
    int body_announced;       /* Content-Length > 0 or Transfer-Encoding */
    const char *content_length; /* header value (owned by MHD) or NULL */
    int raw_image;            /* body is a raw image body (else multipart) */
    uint8_t *raw;             /* raw body (image) */
    size_t raw_len, raw_cap;
    sl__mp *mp;
    sl_status body_st;
    char body_msg[SL_ERROR_MSG_MAX];
    struct sl__conn *conn;    /* the watchdog's record of the connection (may be NULL) */
    /* handed to the worker pool (phase 4 queued/running, 5 answer ready in `answer`;
     * 6: answered straight on the socket, the rest of the body is dropped) */
    void *con;                /* struct MHD_Connection *, suspended while queued */
    struct sl__req *qnext;
    sl__resp answer;
} sl__req;

/* Route handler: fills resp (status, body) for a request whose body (if any) is complete and
 * well-formed. Runs on a server thread. */
typedef void (*sl__handler)(sl__req *req, sl__resp *resp);

struct sl__route {
    const char *name;         /* metric label and log name */
    const char *method;
    const char *path[SL__TARGET_MAX_SEGS]; /* "*" matches one segment */
    int write;                /* needs the API key and writes enabled */
    int engine;               /* needs an engine (503 without one) */
    sl__body_kind body;
    const char *const *params; /* allowed query parameters (NULL-terminated) or NULL */
    sl__handler handle;
};

extern const sl__route sl__routes[];
extern const size_t sl__nroutes;

/* Finds the route for (method, segments). Returns it, or NULL with *path_known set when the path
 * exists for another method (405; allow gets the methods, "GET, PUT") or 0 (404). */
const sl__route *sl__route_match(const char *method, const sl__target *t, int *path_known,
                                 char *allow, size_t allow_cap);
/* Index of a route in sl__routes (for metrics). */
int sl__route_index(const sl__route *r);

/* ---- the front door and the connection watchdog (door.c) -------------------------------- */

/* Where a connection held by libmicrohttpd is; the watchdog closes it when its deadline passes
 * in IDLE (silently), HEAD or BODY (408). Transitions are compare-and-swap, so the watchdog
 * and the connection's thread never both answer: whoever moves it out of the state wins. */
enum { SL__CONN_IDLE = 0, SL__CONN_HEAD, SL__CONN_BODY, SL__CONN_BUSY, SL__CONN_CLOSING };

typedef struct sl__conn {
    int fd;
    _Atomic int state;
    _Atomic long long deadline_us;   /* sl__now() in microseconds; 0: none */
    _Atomic int answered;            /* the watchdog sent 408 */
    size_t chunk;                    /* body bytes since the deadline was set (its thread only) */
    struct sl__conn *prev, *next;    /* the watchdog's list, under door.mu */
} sl__conn;

typedef struct sl__pending sl__pending;

typedef struct sl__door {
    int lfd;                         /* listening socket (-1 when closed) */
    int ep;                          /* epoll set of the door thread */
    int evfd;                        /* eventfd: wakes the door thread (drain, quit) */
    pthread_t th;
    int started;
    _Atomic int drain;               /* 1: stop listening (after taking in the backlog) */
    _Atomic int drained;             /* the listening socket is closed */
    _Atomic int quit;
    pthread_mutex_t mu;              /* guards conns; a conn's fd stays open while listed */
    sl__conn *conns;
    sl__pending *pend;               /* connections whose first head is being read (door thread) */
    sl__pending *dead;               /* dropped ones, freed after the epoll batch */
    _Atomic size_t npending;         /* of them, not yet answered */
    int paused;                      /* the listening socket is out of the epoll set (full) */
    _Atomic int handing;             /* handed to libmicrohttpd, not yet started there */
    _Atomic size_t nconns;           /* connections libmicrohttpd holds (with a record) */
    _Atomic long long handed_us;     /* time of the last hand-over */
    char *buf;                       /* peek buffer, SL__HEAD_MAX + 1 bytes */
} sl__door;

/* Binds and listens on the address (the caller's sockaddr); sets *port. */
sl_status sl__door_listen(sl_server *srv, const struct sockaddr *sa, unsigned salen, int *port,
                          sl_error *err);
/* Starts the door thread (after the daemon exists). */
sl_status sl__door_start(sl_server *srv, sl_error *err);
/* Stops listening: connections already in the kernel backlog are taken in and served; new
 * ones are refused. Returns once the listening socket is closed. */
void sl__door_drain(sl_server *srv);
/* Stops the door thread and closes the connections it still holds. Idempotent. */
void sl__door_stop(sl_server *srv);
/* Connections the door holds whose head is incomplete, plus recent hand-overs not yet taken
 * up by libmicrohttpd (the shutdown waits for them). */
size_t sl__door_busy(sl_server *srv);
/* libmicrohttpd's connection notifications (MHD_OPTION_NOTIFY_CONNECTION). */
void sl__door_notify(void *cls, void *con, void **socket_context, int started);
/* Moves a connection from `from` to `to` (new deadline `deadline_s` seconds from now, 0: none,
 * < 0: keep it); nothing happens when it is not in `from`. Returns 0, or -1 when the watchdog
 * is closing it (the request must not be answered). NULL ok. */
int sl__conn_move(sl__conn *c, int from, int to, double deadline_s);
/* Counts body bytes; every SL_SERVER_BODY_CHUNK bytes the body deadline starts again. */
void sl__conn_body(sl__conn *c, size_t n, int body_timeout_s);
/* Writes a complete JSON error answer with "Connection: close" straight to a socket (used
 * where libmicrohttpd cannot queue one). Returns 0 when all of it was sent. */
int sl__answer_fd(int fd, int status, const char *code, const char *msg, int retry_after);

/* ---- the server (defined in http.c; read by handlers) ------------------------------------ */

/* Engine requests run on a pool of workers fed by one FIFO queue, not on the libmicrohttpd
 * thread that holds the connection (connections stay with the thread that accepted them, so
 * with a few busy connections one thread could hold most of them while another core idles). */
typedef struct sl__pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    sl__req *head, *tail;
    int quit;                 /* set by shutdown: workers answer what is left with 503 and exit */
    int n;                    /* running workers (0: requests run on the connection's thread) */
    pthread_t th[SL_SERVER_THREADS_MAX];
} sl__pool;

struct sl_server {
    void *daemon;             /* struct MHD_Daemon * */
    sl__pool pool;
    sl_engine *engine;
    sl_server_opts o;
    char *api_key;
    size_t api_key_len;
    char url[96];
    int port;
    _Atomic int inflight;
    _Atomic size_t body_held; /* body bytes buffered by all requests (<= o.max_body_total) */
    _Atomic int draining;
    _Atomic uint64_t last_done_us;
    int stopped;
    sl_status stop_status;
    sl__metrics metrics;
    sl__door door;
    double started;
};

/* ---- helpers (core.c) -------------------------------------------------------------------- */

/* Sets resp to a JSON body (takes the reference of `json`, which may be NULL -> 500). */
void sl__resp_json(sl__resp *resp, int status, json_t *json);
/* Sets resp to {"error":{"code":code,"message":msg}}. */
void sl__resp_error(sl__resp *resp, int status, const char *code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
/* Maps a library status to an HTTP error response (400/404/409/413/415/503/500). */
void sl__resp_status(sl__resp *resp, sl_status st, const char *message);
void sl__resp_free(sl__resp *resp);

/* Core handlers. */
void sl__h_page(sl__req *req, sl__resp *resp);
void sl__h_favicon(sl__req *req, sl__resp *resp);
void sl__h_healthz(sl__req *req, sl__resp *resp);
void sl__h_metrics(sl__req *req, sl__resp *resp);

/* Limits of the API's inputs (api.c, products.c). */
#define SL__API_TEXT_MAX 200            /* bytes of the q parameter */
#define SL__API_METADATA_MAX (64 << 10) /* bytes of the metadata JSON of a PUT or PATCH */

/* A JSON string from catalog text: as is when valid UTF-8, else with the offending bytes
 * replaced by '?'. NULL gives JSON null. New reference (NULL when out of memory). */
json_t *sl__api_str(const char *s);
/* The Product object of docs/openapi.yaml (images addressed by /v1/images/{id}). */
json_t *sl__product_obj(const sl_product *p, const sl_image_ref *imgs, size_t n);
/* Engine failures as HTTP errors (sl__resp_status, 409 for SL_E_STATE, 503 while stopping),
 * with every server file path in the message replaced ("<store>", "<file>"). */
void sl__api_fail(const sl__req *req, sl__resp *resp, const sl_error *e);

/* API handlers (api.c, products.c). */
void sl__h_search(sl__req *req, sl__resp *resp);
void sl__h_categories(sl__req *req, sl__resp *resp);
void sl__h_product_get(sl__req *req, sl__resp *resp);
void sl__h_product_put(sl__req *req, sl__resp *resp);
void sl__h_product_delete(sl__req *req, sl__resp *resp);
void sl__h_similar(sl__req *req, sl__resp *resp);
void sl__h_check(sl__req *req, sl__resp *resp);
void sl__h_classify(sl__req *req, sl__resp *resp);
void sl__h_image(sl__req *req, sl__resp *resp);
void sl__h_products_list(sl__req *req, sl__resp *resp);
void sl__h_product_patch(sl__req *req, sl__resp *resp);

/* Catalog gauges for /metrics (api.c); -1 when unknown or no engine. */
typedef struct sl__gauges { long long products, images, index_bytes; } sl__gauges;
void sl__api_gauges(sl_server *srv, sl__gauges *g);

/* The embedded web page (generated from src/server/page.html by module.cmake). */
extern const unsigned char *const sl__page_html;
extern const size_t sl__page_html_len;

#endif
