/*
 * catalog/pg_conn.c - the libpq connection every PostgreSQL user of shoplens goes through: one
 * connection that comes back by itself after the server restarted, binary results, errors
 * mapped to shoplens statuses, LISTEN/NOTIFY waits, and the helpers to read binary values and
 * to build array parameters.
 *
 * Invariants: a connection lost outside a transaction is reset by the next sl__pgc_ok (so a
 * node, a worker or a router survives a PostgreSQL restart without help); inside a transaction
 * (keep_going set) the loss is reported, never hidden, because the transaction is gone with it.
 * Every session runs with search_path = shoplens, client_encoding = UTF8 and TCP keepalives, so a
 * peer that vanished without closing its socket is noticed within about half a minute.
 */
#include "catalog/pg.h"
#include "util/util.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int sl__pg_is_url(const char *s) {
    return s && (strncmp(s, "postgresql://", 13) == 0 || strncmp(s, "postgres://", 11) == 0);
}

int32_t sl__shard_key(const char *id) {
    uint64_t h = 1469598103934665603ULL;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++) h = (h ^ *p) * 1099511628211ULL;
    return (int32_t)(h >> 33);
}

/* The URL with any password replaced by "***" (user:secret@ and password=secret). */
static char *sl__pg_mask(const char *url) {
    char *m = sl__strdup(url);
    if (!m) return NULL;
    char *p = strstr(m, "://");
    if (p) {
        p += 3;
        char *at = strchr(p, '@'), *slash = strchr(p, '/');
        if (at && (!slash || at < slash)) {
            char *colon = memchr(p, ':', (size_t)(at - p));
            if (colon && at - colon > 1) {
                memmove(colon + 4, at, strlen(at) + 1);
                memcpy(colon + 1, "***", 3);
            }
        }
    }
    char *pw = strstr(m, "password=");
    if (pw) {
        pw += 9;
        char *end = pw + strcspn(pw, "&");
        if (end - pw > 3) {
            memmove(pw + 3, end, strlen(end) + 1);
            memcpy(pw, "***", 3);
        }
    }
    return m;
}

/* The first line of libpq's message (they end in a newline). */
static void sl__pg_msg(char *out, size_t cap, const char *msg) {
    snprintf(out, cap, "%s", msg && *msg ? msg : "unknown error");
    size_t n = strlen(out);
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' ')) out[--n] = '\0';
    for (char *c = out; *c; c++)
        if (*c == '\n') *c = ' ';
}

/* The library never prints: server notices (and the FATAL of a shutdown) are dropped. */
static void sl__pg_quiet(void *arg, const char *msg) {
    (void)arg;
    (void)msg;
}

static sl_status sl__pgc_connect(sl__pgc *c, sl_error *err) {
    if (c->conn) PQfinish(c->conn);
    c->conn = PQconnectdb(c->conninfo);
    if (!c->conn) return sl__err_set(err, SL_E_NOMEM, "PostgreSQL %s: out of memory", c->label);
    if (PQstatus(c->conn) != CONNECTION_OK) {
        char msg[512];
        sl__pg_msg(msg, sizeof msg, PQerrorMessage(c->conn));
        PQfinish(c->conn);
        c->conn = NULL;
        return sl__err_set(err, SL_E_BUSY, "cannot reach PostgreSQL at %s: %s", c->label, msg);
    }
    PQsetNoticeProcessor(c->conn, sl__pg_quiet, NULL);
    c->connects++;
    PGresult *r = PQexec(c->conn, "SET search_path TO shoplens; SET client_encoding TO 'UTF8';"
                                  "SET client_min_messages TO warning");
    int ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    for (int i = 0; ok && i < c->n_listen; i++) {
        char sql[64];
        snprintf(sql, sizeof sql, "LISTEN %s", c->listen[i]);
        r = PQexec(c->conn, sql);
        ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
    }
    if (!ok) {
        char msg[512];
        sl__pg_msg(msg, sizeof msg, PQerrorMessage(c->conn));
        PQfinish(c->conn);
        c->conn = NULL;
        return sl__err_set(err, SL_E_BUSY, "PostgreSQL at %s: setting up the session: %s", c->label, msg);
    }
    return SL_OK;
}

sl_status sl__pgc_open(sl__pgc *c, const char *conninfo, sl_error *err) {
    memset(c, 0, sizeof *c);
    if (!sl__pg_is_url(conninfo))
        return sl__err_set(err, SL_E_INVALID, "not a PostgreSQL URL (postgresql://...): %.64s", conninfo);
    /* keepalives: a peer whose machine died is noticed in ~30 s instead of hours */
    const char *ka = "keepalives=1&keepalives_idle=10&keepalives_interval=5&keepalives_count=3&connect_timeout=5";
    size_t n = strlen(conninfo) + strlen(ka) + 2;
    c->conninfo = malloc(n);
    c->label = sl__pg_mask(conninfo);
    if (!c->conninfo || !c->label) {
        sl__pgc_close(c);
        return sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    /* options the URL names itself win: libpq takes the last of a repeated key, so ours go first */
    const char *q = strchr(conninfo, '?');
    if (q) {
        snprintf(c->conninfo, n, "%.*s?%s&%s", (int)(q - conninfo), conninfo, ka, q + 1);
    } else {
        snprintf(c->conninfo, n, "%s?%s", conninfo, ka);
    }
    PQconninfoOption *opts = PQconninfoParse(c->conninfo, NULL);
    if (!opts) {
        sl_status st = sl__err_set(err, SL_E_INVALID, "bad PostgreSQL URL %s", c->label);
        sl__pgc_close(c);
        return st;
    }
    PQconninfoFree(opts);
    sl_status st = sl__pgc_connect(c, err);
    if (st != SL_OK) sl__pgc_close(c);
    return st;
}

void sl__pgc_close(sl__pgc *c) {
    if (!c) return;
    if (c->conn) PQfinish(c->conn);
    free(c->conninfo);
    free(c->label);
    memset(c, 0, sizeof *c);
}

sl_status sl__pgc_ok(sl__pgc *c, sl_error *err) {
    if (c->conn && PQstatus(c->conn) == CONNECTION_OK) return SL_OK;
    if (c->keep_going)
        return sl__err_set(err, SL_E_BUSY, "lost the connection to PostgreSQL at %s during a transaction", c->label);
    return sl__pgc_connect(c, err);
}

/* Maps an error result to a status and message. */
static sl_status sl__pgc_fail(sl__pgc *c, PGresult *r, sl_error *err) {
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    char msg[512];
    sl__pg_msg(msg, sizeof msg, r ? PQresultErrorMessage(r) : PQerrorMessage(c->conn));
    if (!c->conn || PQstatus(c->conn) != CONNECTION_OK || (state && strncmp(state, "08", 2) == 0) ||
        (state && strcmp(state, "57P01") == 0))
        return sl__err_set(err, SL_E_BUSY, "lost the connection to PostgreSQL at %s: %s", c->label, msg);
    if (state && (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 || strcmp(state, "55P03") == 0))
        return sl__err_set(err, SL_E_BUSY, "PostgreSQL: %s (try again)", msg);
    if (state && strcmp(state, "23505") == 0) return sl__err_set(err, SL_E_EXISTS, "PostgreSQL: %s", msg);
    if (state && strcmp(state, "53100") == 0) return sl__err_set(err, SL_E_IO, "PostgreSQL: disk full: %s", msg);
    return sl__err_set(err, SL_E_IO, "PostgreSQL: %s", msg);
}

/* Nonzero when a failed statement found the connection dead and it may be sent again on a new
 * one: outside a transaction (inside, the transaction is gone with the connection). */
static int sl__pgc_retry(sl__pgc *c) {
    return !c->keep_going && (!c->conn || PQstatus(c->conn) == CONNECTION_BAD) && sl__pgc_connect(c, NULL) == SL_OK;
}

PGresult *sl__pgc_exec(sl__pgc *c, const char *sql, int n, const char *const *vals,
                       const int *lens, const int *bins, sl_error *err) {
    if (sl__pgc_ok(c, err) != SL_OK) return NULL;
    PGresult *r = PQexecParams(c->conn, sql, n, NULL, vals, lens, bins, 1);
    ExecStatusType s = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK && sl__pgc_retry(c)) {
        /* the server restarted since the last statement: once more on the new connection */
        PQclear(r);
        r = PQexecParams(c->conn, sql, n, NULL, vals, lens, bins, 1);
        s = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    }
    if (s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK) return r;
    sl__pgc_fail(c, r, err);
    PQclear(r);
    return NULL;
}

sl_status sl__pgc_run(sl__pgc *c, const char *sql, int n, const char *const *vals, sl_error *err) {
    sl_error tmp;
    sl_error_clear(&tmp);
    PGresult *r = sl__pgc_exec(c, sql, n, vals, NULL, NULL, err ? err : &tmp);
    if (!r) return err ? err->code : tmp.code;
    PQclear(r);
    return SL_OK;
}

sl_status sl__pgc_script(sl__pgc *c, const char *sql, sl_error *err) {
    sl_status st = sl__pgc_ok(c, err);
    if (st != SL_OK) return st;
    PGresult *r = PQexec(c->conn, sql);
    ExecStatusType s = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) st = sl__pgc_fail(c, r, err);
    PQclear(r);
    return st;
}

sl_status sl__pgc_listen(sl__pgc *c, const char *channel, sl_error *err) {
    for (int i = 0; i < c->n_listen; i++)
        if (strcmp(c->listen[i], channel) == 0) return SL_OK;
    if (c->n_listen == (int)(sizeof c->listen / sizeof c->listen[0]) || strlen(channel) >= sizeof c->listen[0])
        return sl__err_set(err, SL_E_INVALID, "too many channels");
    snprintf(c->listen[c->n_listen++], sizeof c->listen[0], "%s", channel);
    char sql[64];
    snprintf(sql, sizeof sql, "LISTEN %s", channel);
    return sl__pgc_run(c, sql, 0, NULL, err);
}

int sl__pgc_wait(sl__pgc *c, double timeout_s) {
    if (sl__pgc_ok(c, NULL) != SL_OK) return SL_E_BUSY;
    int got = 0;
    PGnotify *nt;
    PQconsumeInput(c->conn);
    while ((nt = PQnotifies(c->conn))) {
        got = 1;
        PQfreemem(nt);
    }
    if (got) return 1;
    struct pollfd pfd = { PQsocket(c->conn), POLLIN, 0 };
    if (pfd.fd < 0) return SL_E_BUSY;
    int ms = timeout_s <= 0 ? 0 : (int)(timeout_s * 1000.0 + 0.5);
    int pr = poll(&pfd, 1, ms);
    if (pr < 0 && errno != EINTR) return SL_E_IO;
    if (pr <= 0) return 0;
    if (!PQconsumeInput(c->conn)) return SL_E_BUSY; /* the server closed the connection */
    while ((nt = PQnotifies(c->conn))) {
        got = 1;
        PQfreemem(nt);
    }
    return got;
}

/* ---- binary values ------------------------------------------------------------------------- */

static uint64_t sl__be(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = v << 8 | p[i];
    return v;
}

int64_t sl__pgv_i64(const PGresult *r, int row, int col) {
    if (PQgetisnull(r, row, col)) return 0;
    const unsigned char *p = (const unsigned char *)PQgetvalue(r, row, col);
    int n = PQgetlength(r, row, col);
    if (n == 8) return (int64_t)sl__be(p, 8);
    if (n == 4) return (int32_t)(uint32_t)sl__be(p, 4);
    if (n == 2) return (int16_t)(uint16_t)sl__be(p, 2);
    if (n == 1) return p[0];
    return 0;
}

double sl__pgv_f64(const PGresult *r, int row, int col) {
    if (PQgetisnull(r, row, col) || PQgetlength(r, row, col) != 8) return 0;
    uint64_t u = sl__be((const unsigned char *)PQgetvalue(r, row, col), 8);
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

const char *sl__pgv_str(const PGresult *r, int row, int col) {
    return PQgetisnull(r, row, col) ? "" : PQgetvalue(r, row, col);
}

char *sl__pgv_dup(const PGresult *r, int row, int col) { return sl__strdup(sl__pgv_str(r, row, col)); }

int sl__pgv_null(const PGresult *r, int row, int col) { return PQgetisnull(r, row, col); }

/* ---- array parameters ---------------------------------------------------------------------- */

char *sl__pg_int_array(const int64_t *v, size_t n) {
    size_t cap;
    if (sl__mul_size(n, 22, &cap) || sl__add_size(cap, 3, &cap)) return NULL;
    char *s = malloc(cap), *o = s;
    if (!s) return NULL;
    *o++ = '{';
    for (size_t i = 0; i < n; i++) o += snprintf(o, 22, i ? ",%lld" : "%lld", (long long)v[i]);
    *o++ = '}';
    *o = '\0';
    return s;
}

char *sl__pg_text_array(const char *const *v, size_t n) {
    size_t cap = 3;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(v[i]), need;
        if (sl__mul_size(l, 2, &need) || sl__add_size(need, 3, &need) || sl__add_size(cap, need, &cap)) return NULL;
    }
    char *s = malloc(cap), *o = s;
    if (!s) return NULL;
    *o++ = '{';
    for (size_t i = 0; i < n; i++) {
        if (i) *o++ = ',';
        *o++ = '"';
        for (const char *c = v[i]; *c; c++) {
            if (*c == '"' || *c == '\\') *o++ = '\\';
            *o++ = *c;
        }
        *o++ = '"';
    }
    *o++ = '}';
    *o = '\0';
    return s;
}
