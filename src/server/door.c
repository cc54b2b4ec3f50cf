/*
 * server/door.c - the front door: the listening socket, the check of every new connection's
 * request head before libmicrohttpd reads it, and the deadlines of slow clients.
 *
 * Why: libmicrohttpd 0.9.75 has no hook between reading a request's headers and acting on them,
 * and it gets some of them wrong: a malformed or oversized Content-Length makes it send its
 * header block twice; Content-Length with Transfer-Encoding, HTTP/1.1 without Host, obs-fold and
 * duplicate framing headers are accepted; and its only timeout is for inactivity, so a client
 * that drips one header byte every 100 ms holds a connection slot for ever. We work around it
 * (the library itself is Debian's, unpatched): the door thread accepts connections itself
 * (libmicrohttpd runs with MHD_USE_NO_LISTEN_SOCKET), peeks (MSG_PEEK) at the head as it
 * arrives, answers a bad or too slow one itself with one complete JSON response, and hands a
 * good connection to libmicrohttpd with MHD_add_connection - libmicrohttpd then reads the very
 * bytes we checked. Drippers never take one of libmicrohttpd's connection slots.
 * Requests after the first on a kept-alive connection are read by libmicrohttpd directly: the
 * access handler applies the same framing rules to them (sl__framing_check), and the watchdog
 * below gives them the same head deadline. One case stays libmicrohttpd's: a malformed
 * Content-Length on such a follow-up request gets its doubled header block (and the
 * connection is closed). docs/openapi.yaml says so.
 *
 * The watchdog (same thread, every SL__DOOR_TICK_MS): every connection libmicrohttpd holds has a
 * record (sl__conn, created and destroyed by its connection notifications) with a state and a
 * deadline: the head deadline between requests (idle kept-alive connections are closed then,
 * silently) and while a head arrives, a body deadline per SL_SERVER_BODY_CHUNK bytes. When one
 * passes, the watchdog moves the record to CLOSING (compare-and-swap against the connection's
 * own thread), writes 408 straight to the socket and shuts it down; libmicrohttpd sees the end
 * of the stream and cleans up.
 *
 * Invariants: a listed sl__conn's fd is open (libmicrohttpd's CLOSED notification, which
 * unlists it under door.mu, comes before it closes the fd), so the watchdog never touches a
 * reused fd; the door thread alone owns pending connections; a pending connection whose
 * request line is complete counts in srv->inflight (so max_inflight and a graceful shutdown
 * see it); an answered connection is closed only after the client's FIN, its unread bytes or
 * SL__DOOR_LINGER_S (so the answer is not lost to a reset).
 */
#include "server/srv.h"
#include "util/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#define SL__DOOR_TICK_MS 100
#define SL__DOOR_LINGER_S 2.0             /* an answered connection waits this long for the FIN */
#define SL__DOOR_DISCARD_MAX ((size_t)1 << 20) /* bytes read and dropped after an answer */
#define SL__DOOR_EVICT_GRACE_S 0.2        /* a new connection's time to send its head first */

struct sl__pending {
    int fd;
    int line;                 /* request line complete: counted in srv->inflight */
    int dead;                 /* dropped: closed, waiting to be freed after this epoll batch */
    int lingering;            /* answered; waiting for the client to close */
    double t_open, t_last;    /* accepted; last new bytes */
    double t_linger;          /* lingering since */
    size_t seen;              /* bytes peeked last time */
    size_t discarded;
    char method[16], path[192]; /* from the request line, for the log ("" until known) */
    struct sockaddr_storage addr;
    socklen_t alen;
    struct sl__pending *prev, *next;
};

static char sl__tag_listen, sl__tag_wake; /* epoll data of the two non-connection fds */

static long long sl__now_us(void) { return (long long)(sl__now() * 1e6); }

/* ---- answers ----------------------------------------------------------------------------- */

int sl__answer_fd(int fd, int status, const char *code, const char *msg, int retry_after) {
    sl__resp r = { 0 };
    sl__resp_error(&r, status, code, "%s", msg);
    const char *reason = MHD_get_reason_phrase_for((unsigned)status);
    char head[384];
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\n"
                      "Referrer-Policy: no-referrer\r\nConnection: close\r\nContent-Length: %zu\r\n%s\r\n",
                      status, reason && *reason ? reason : "Error", r.len,
                      retry_after > 0 ? "Retry-After: 1\r\n" : "");
    int ok = hl > 0 && (size_t)hl < sizeof head;
    struct iovec iov[2] = { { head, ok ? (size_t)hl : 0 }, { r.body, r.len } };
    struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };
    ssize_t n = ok ? sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT) : -1;
    sl__resp_free(&r);
    return n == (ssize_t)(iov[0].iov_len + iov[1].iov_len) ? 0 : -1;
}

/* Metrics and the log record of a request the door answered. */
static void sl__door_record(sl_server *srv, const sl__pending *p, int status) {
    double dt = sl__now() - p->t_open;
    sl__metrics_observe(&srv->metrics, SL__M_ROUTES - 1, status, dt, 0);
    if (srv->o.log) {
        sl_server_request_log entry = {
            .method = p->method[0] ? p->method : "-",
            .path = p->path[0] ? p->path : "-",
            .route = "none",
            .status = status,
            .ms = dt * 1e3,
            .bytes_in = 0,
        };
        srv->o.log(srv->o.log_user, &entry);
    }
}

/* ---- pending connections ----------------------------------------------------------------- */

static void sl__pend_unlink(sl__door *d, sl__pending *p) {
    if (p->prev) p->prev->next = p->next;
    else d->pend = p->next;
    if (p->next) p->next->prev = p->prev;
    p->prev = p->next = NULL;
}

/* Forgets a pending connection (and closes it unless keep_fd). It is freed after the current
 * epoll batch, which may still hold events for it. */
static void sl__pend_drop(sl_server *srv, sl__pending *p, int keep_fd) {
    sl__door *d = &srv->door;
    epoll_ctl(d->ep, EPOLL_CTL_DEL, p->fd, NULL);
    sl__pend_unlink(d, p);
    if (p->line) atomic_fetch_sub(&srv->inflight, 1);
    if (!p->lingering) atomic_fetch_sub(&d->npending, 1);
    if (!keep_fd) close(p->fd);
    p->fd = -1;
    p->dead = 1;
    p->next = d->dead;
    d->dead = p;
}

static void sl__pend_free_dead(sl__door *d) {
    while (d->dead) {
        sl__pending *p = d->dead;
        d->dead = p->next;
        free(p);
    }
}

/* Reads and drops what the client sent; returns 1 at its end of stream or on an error. */
static int sl__pend_discard(sl__pending *p, char *buf) {
    for (;;) {
        ssize_t n = recv(p->fd, buf, SL__HEAD_MAX, MSG_DONTWAIT);
        if (n > 0) {
            p->discarded += (size_t)n;
            if (p->discarded > SL__DOOR_DISCARD_MAX) return 1;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
        if (n < 0 && errno == EINTR) continue;
        return 1;
    }
}

/* Answers a pending connection and lets it linger until the client closes. */
static void sl__pend_answer(sl_server *srv, sl__pending *p, int status, const char *code,
                            const char *msg, int retry_after) {
    sl__door *d = &srv->door;
    (void)sl__answer_fd(p->fd, status, code, msg, retry_after);
    sl__door_record(srv, p, status);
    if (p->line) {
        atomic_fetch_sub(&srv->inflight, 1);
        p->line = 0;
    }
    p->lingering = 1;
    p->t_linger = sl__now();
    atomic_fetch_sub(&d->npending, 1);
    shutdown(p->fd, SHUT_WR);
    if (sl__pend_discard(p, d->buf)) sl__pend_drop(srv, p, 0);
}

/* A complete, acceptable head: the connection goes to libmicrohttpd. The door enforces
 * max_connections itself, counting what it handed over: libmicrohttpd 0.9.75 must never reach
 * its own limit (set far above ours), because a worker that finds itself full while taking an
 * added connection locks a mutex it already holds and hangs (seen in test_http_slow_clients). */
static void sl__pend_handoff(sl_server *srv, sl__pending *p) {
    sl__door *d = &srv->door;
    if (atomic_load(&d->nconns) + (size_t)atomic_load(&d->handing) >= (size_t)srv->o.max_connections) {
        sl__pend_answer(srv, p, 503, "overloaded", "too many open connections, retry shortly", 1);
        return;
    }
    int fd = p->fd;
    struct sockaddr_storage addr = p->addr;
    socklen_t alen = p->alen;
    sl__pend_drop(srv, p, 1);
    atomic_fetch_add(&d->handing, 1);
    atomic_store(&d->handed_us, sl__now_us());
    if (MHD_add_connection(srv->daemon, fd, (struct sockaddr *)&addr, alen) != MHD_YES)
        atomic_fetch_sub(&d->handing, 1); /* libmicrohttpd closed the socket */
}

/* New bytes (or an end of stream: hup) on a pending connection. */
static void sl__pend_read(sl_server *srv, sl__pending *p, int hup) {
    sl__door *d = &srv->door;
    if (p->dead) return; /* dropped earlier in this batch */
    if (p->lingering) {
        if (sl__pend_discard(p, d->buf)) sl__pend_drop(srv, p, 0);
        return;
    }
    ssize_t n = recv(p->fd, d->buf, SL__HEAD_MAX + 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n <= 0 || (size_t)n == p->seen) {
        /* closed (or half-closed with nothing new) before the head was complete */
        if (n <= 0 || hup) sl__pend_drop(srv, p, 0);
        return;
    }
    p->seen = (size_t)n;
    p->t_last = sl__now();
    sl__head h;
    int r = sl__head_parse(d->buf, (size_t)n, &h);
    if (h.method[0]) memcpy(p->method, h.method, sizeof p->method);
    if (h.path[0]) memcpy(p->path, h.path, sizeof p->path);
    if (h.line_done && !p->line) {
        p->line = 1;
        atomic_fetch_add(&srv->inflight, 1);
    }
    if (r == SL__HEAD_MORE) {
        if (hup) sl__pend_drop(srv, p, 0); /* the client stopped sending: it stays incomplete */
        return;
    }
    if (h.status) {
        /* drop the head we peeked, so closing does not reset the connection under the answer */
        (void)!recv(p->fd, d->buf, h.len ? h.len : (size_t)n, MSG_DONTWAIT);
        sl__pend_answer(srv, p, h.status, h.code, h.msg, 0);
        return;
    }
    sl__pend_handoff(srv, p);
}

/* When the door is full, the connection to drop for a new one: the longest-waiting one that
 * sent part of a head (a client that sends its head at once never has a partial one for long),
 * else the longest-waiting one older than SL__DOOR_EVICT_GRACE_S; NULL when every connection
 * is younger (then new ones wait in the kernel's backlog). */
static sl__pending *sl__door_victim(sl__door *d, double now) {
    sl__pending *partial = NULL, *old = NULL;
    for (sl__pending *q = d->pend; q; q = q->next) { /* newest first: the last match is the oldest */
        if (q->lingering) continue;
        if (q->seen) partial = q;
        if (now - q->t_open >= SL__DOOR_EVICT_GRACE_S) old = q;
    }
    return partial ? partial : old;
}

static void sl__door_listening(sl__door *d, int on) {
    if (d->lfd < 0 || d->paused == !on) return;
    struct epoll_event ev = { .events = on ? EPOLLIN : 0, .data.ptr = &sl__tag_listen };
    if (epoll_ctl(d->ep, EPOLL_CTL_MOD, d->lfd, &ev) == 0) d->paused = !on;
}

/* Takes in what the backlog holds. force (draining: the listener closes next) takes all of it,
 * dropping the oldest waiting connections if it must. */
static void sl__door_accept(sl_server *srv, int force) {
    sl__door *d = &srv->door;
    for (;;) {
        /* full: make room, or leave new connections in the backlog for a moment (backpressure) */
        if (atomic_load(&d->npending) >= (size_t)srv->o.max_connections) {
            sl__pending *victim = sl__door_victim(d, force ? 1e300 : sl__now());
            if (!victim) {
                sl__door_listening(d, 0);
                return;
            }
            if (victim->seen) atomic_fetch_add(&srv->metrics.slow_closed[0], 1);
            sl__pend_drop(srv, victim, 0);
        }
        sl__pending *p = calloc(1, sizeof *p);
        if (!p) return;
        p->alen = sizeof p->addr;
        p->fd = accept4(d->lfd, (struct sockaddr *)&p->addr, &p->alen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (p->fd < 0) {
            free(p);
            return;
        }
        p->t_open = p->t_last = sl__now();
        p->next = d->pend;
        if (d->pend) d->pend->prev = p;
        d->pend = p;
        atomic_fetch_add(&d->npending, 1);
        struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.ptr = p };
        if (epoll_ctl(d->ep, EPOLL_CTL_ADD, p->fd, &ev) != 0) {
            sl__pend_drop(srv, p, 0);
            continue;
        }
        /* most clients have sent their whole head by now: hand them over before accepting
         * more, so a burst of new connections cannot push them out of a full door */
        sl__pend_read(srv, p, 0);
    }
}

/* Deadlines of pending connections. */
static void sl__pend_expire(sl_server *srv, double now) {
    sl__door *d = &srv->door;
    sl__pending *next;
    for (sl__pending *p = d->pend; p; p = next) {
        next = p->next;
        if (p->lingering) {
            if (now - p->t_linger >= SL__DOOR_LINGER_S) sl__pend_drop(srv, p, 0);
            continue;
        }
        if (now - p->t_last >= srv->o.timeout_s) {
            sl__pend_drop(srv, p, 0); /* inactive: closed without an answer, as before */
        } else if (now - p->t_open >= srv->o.head_timeout_s) {
            if (!p->seen) {
                sl__pend_drop(srv, p, 0); /* never said anything */
                continue;
            }
            char msg[96];
            snprintf(msg, sizeof msg, "the request head did not arrive within %d s", srv->o.head_timeout_s);
            (void)!recv(p->fd, d->buf, p->seen, MSG_DONTWAIT);
            atomic_fetch_add(&srv->metrics.slow_closed[0], 1);
            sl__pend_answer(srv, p, 408, "request_timeout", msg, 0);
        }
    }
}

/* ---- the watchdog of connections libmicrohttpd holds ------------------------------------- */

int sl__conn_move(sl__conn *c, int from, int to, double deadline_s) {
    if (!c) return 0;
    int f = from;
    if (!atomic_compare_exchange_strong(&c->state, &f, to)) return f == SL__CONN_CLOSING ? -1 : 0;
    c->chunk = 0;
    if (deadline_s >= 0)
        atomic_store(&c->deadline_us, deadline_s > 0 ? sl__now_us() + (long long)(deadline_s * 1e6) : 0);
    return 0;
}

void sl__conn_body(sl__conn *c, size_t n, int body_timeout_s) {
    if (!c) return;
    c->chunk += n;
    if (c->chunk >= SL_SERVER_BODY_CHUNK) {
        c->chunk %= SL_SERVER_BODY_CHUNK;
        atomic_store(&c->deadline_us, sl__now_us() + (long long)body_timeout_s * 1000000);
    }
}

void sl__door_notify(void *cls, void *con, void **socket_context, int started) {
    sl_server *srv = cls;
    sl__door *d = &srv->door;
    if (started) {
        atomic_fetch_sub(&d->handing, 1);
        sl__conn *c = calloc(1, sizeof *c);
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info((struct MHD_Connection *)con, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!c || !ci) {
            free(c);
            *socket_context = NULL;
            return;
        }
        c->fd = ci->connect_fd;
        atomic_fetch_add(&d->nconns, 1);
        atomic_store(&c->state, SL__CONN_HEAD);
        atomic_store(&c->deadline_us, sl__now_us() + (long long)srv->o.head_timeout_s * 1000000);
        pthread_mutex_lock(&d->mu);
        c->next = d->conns;
        if (d->conns) d->conns->prev = c;
        d->conns = c;
        pthread_mutex_unlock(&d->mu);
        *socket_context = c;
        return;
    }
    sl__conn *c = *socket_context;
    if (!c) return;
    atomic_fetch_sub(&d->nconns, 1);
    pthread_mutex_lock(&d->mu);
    if (c->prev) c->prev->next = c->next;
    else d->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    pthread_mutex_unlock(&d->mu);
    *socket_context = NULL;
    free(c);
}

static void sl__watch(sl_server *srv) {
    sl__door *d = &srv->door;
    long long now = sl__now_us();
    pthread_mutex_lock(&d->mu);
    for (sl__conn *c = d->conns; c; c = c->next) {
        long long dl = atomic_load(&c->deadline_us);
        int st = atomic_load(&c->state);
        if (!dl || now < dl || (st != SL__CONN_IDLE && st != SL__CONN_HEAD && st != SL__CONN_BODY)) continue;
        if (!atomic_compare_exchange_strong(&c->state, &st, SL__CONN_CLOSING)) continue;
        if (st != SL__CONN_IDLE) {
            char msg[96];
            if (st == SL__CONN_HEAD)
                snprintf(msg, sizeof msg, "the request head did not arrive within %d s", srv->o.head_timeout_s);
            else
                snprintf(msg, sizeof msg, "the request body arrived slower than %zu KiB per %d s",
                         SL_SERVER_BODY_CHUNK >> 10, srv->o.body_timeout_s);
            atomic_store(&c->answered, 1);
            (void)sl__answer_fd(c->fd, 408, "request_timeout", msg, 0);
            atomic_fetch_add(&srv->metrics.slow_closed[st == SL__CONN_BODY], 1);
        }
        shutdown(c->fd, SHUT_RDWR); /* libmicrohttpd sees the end of stream and cleans up */
    }
    pthread_mutex_unlock(&d->mu);
}

/* ---- the thread -------------------------------------------------------------------------- */

static void sl__door_close_listener(sl_server *srv) {
    sl__door *d = &srv->door;
    if (d->lfd < 0) return;
    sl__door_accept(srv, 1); /* the backlog: clients that already connected are served */
    epoll_ctl(d->ep, EPOLL_CTL_DEL, d->lfd, NULL);
    close(d->lfd);
    d->lfd = -1;
    atomic_store(&d->drained, 1);
}

static void *sl__door_main(void *arg) {
    sl_server *srv = arg;
    sl__door *d = &srv->door;
    struct epoll_event evs[64];
    double last_watch = 0;
    while (!atomic_load(&d->quit)) {
        int n = epoll_wait(d->ep, evs, 64, SL__DOOR_TICK_MS);
        for (int i = 0; i < n; i++) {
            void *tag = evs[i].data.ptr;
            if (tag == &sl__tag_wake) {
                uint64_t v;
                (void)!read(d->evfd, &v, sizeof v);
            } else if (tag == &sl__tag_listen) {
                if (d->lfd >= 0) sl__door_accept(srv, 0);
            } else {
                sl__pend_read(srv, tag, (evs[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0);
            }
        }
        if (atomic_load(&d->drain)) sl__door_close_listener(srv);
        double now = sl__now();
        sl__pend_expire(srv, now);
        if (d->paused && (atomic_load(&d->npending) < (size_t)srv->o.max_connections || sl__door_victim(d, now)))
            sl__door_listening(d, 1);
        sl__pend_free_dead(d);
        if (now - last_watch >= SL__DOOR_TICK_MS / 1e3) {
            sl__watch(srv);
            last_watch = now;
        }
    }
    return NULL;
}

sl_status sl__door_listen(sl_server *srv, const struct sockaddr *sa, unsigned salen, int *port,
                          sl_error *err) {
    sl__door *d = &srv->door;
    d->lfd = d->ep = d->evfd = -1;
    pthread_mutex_init(&d->mu, NULL);
    d->buf = malloc(SL__HEAD_MAX + 1);
    if (!d->buf) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return sl__err_set(err, SL_E_IO, "socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (sa->sa_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, sa, (socklen_t)salen) != 0 || listen(fd, 256) != 0) {
        int e = errno;
        close(fd);
        return sl__err_set(err, SL_E_IO, "%s", strerror(e));
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    *port = 0;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        *port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                               : ((struct sockaddr_in *)&ss)->sin_port);
    d->lfd = fd;
    return SL_OK;
}

sl_status sl__door_start(sl_server *srv, sl_error *err) {
    sl__door *d = &srv->door;
    d->ep = epoll_create1(EPOLL_CLOEXEC);
    d->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (d->ep < 0 || d->evfd < 0) return sl__err_set(err, SL_E_IO, "epoll: %s", strerror(errno));
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &sl__tag_listen };
    struct epoll_event wv = { .events = EPOLLIN, .data.ptr = &sl__tag_wake };
    if (epoll_ctl(d->ep, EPOLL_CTL_ADD, d->lfd, &ev) != 0 || epoll_ctl(d->ep, EPOLL_CTL_ADD, d->evfd, &wv) != 0)
        return sl__err_set(err, SL_E_IO, "epoll_ctl: %s", strerror(errno));
    if (pthread_create(&d->th, NULL, sl__door_main, srv) != 0)
        return sl__err_set(err, SL_E_INTERNAL, "cannot start the front door thread");
    d->started = 1;
    return SL_OK;
}

static void sl__door_wake(sl__door *d) {
    uint64_t one = 1;
    if (d->evfd >= 0) (void)!write(d->evfd, &one, sizeof one);
}

void sl__door_drain(sl_server *srv) {
    sl__door *d = &srv->door;
    if (!d->started) return;
    atomic_store(&d->drain, 1);
    sl__door_wake(d);
    while (!atomic_load(&d->drained)) {
        struct timespec ts = { 0, 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
}

size_t sl__door_busy(sl_server *srv) {
    sl__door *d = &srv->door;
    size_t n = atomic_load(&d->npending);
    /* a hand-over is libmicrohttpd's once its worker starts the connection (normally within
     * microseconds; one that failed there is forgotten after a second) */
    if (atomic_load(&d->handing) > 0 && sl__now_us() - atomic_load(&d->handed_us) < 1000000) n++;
    return n;
}

void sl__door_stop(sl_server *srv) {
    sl__door *d = &srv->door;
    if (d->started) {
        atomic_store(&d->quit, 1);
        sl__door_wake(d);
        pthread_join(d->th, NULL);
        d->started = 0;
    }
    while (d->pend) sl__pend_drop(srv, d->pend, 0);
    sl__pend_free_dead(d);
    if (d->lfd >= 0) close(d->lfd);
    if (d->ep >= 0) close(d->ep);
    if (d->evfd >= 0) close(d->evfd);
    d->lfd = d->ep = d->evfd = -1;
    free(d->buf);
    d->buf = NULL;
}
