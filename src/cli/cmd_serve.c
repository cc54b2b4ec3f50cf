/*
 * cli/cmd_serve.c - `shoplens serve`: the HTTP API and web page over a store.
 *
 * Opens the engine, starts the server (src/server/), prints the address, logs one line per
 * request to stderr (time, method, path, status, ms - never bodies or query strings, which may
 * carry user text), and on SIGTERM/SIGINT stops gracefully: no new connections, requests in
 * flight finish, the index is flushed, exit 0. Signals are handled synchronously with sigwait
 * in the main thread (blocked everywhere else, so server threads never see them); while waiting,
 * every SL__SERVE_REFRESH_S seconds the engine picks up what other processes committed.
 */
#include "cli/cli.h"
#include "shoplens/cluster.h"
#include "shoplens/engine.h"
#include "shoplens/server.h"
#include "util/util.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SL__SERVE_GRACE_DEFAULT 30.0
#define SL__SERVE_REFRESH_S 2 /* seconds between checks for changes made by other processes */

/* The current UTC time as 2026-01-31T12:00:00Z. */
static void sl__utc_stamp(char ts[32]) {
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(ts, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void sl__serve_log(void *user, const sl_server_request_log *e) {
    (void)user;
    char ts[32];
    sl__utc_stamp(ts);
    /* One fprintf per line: stdio locks the stream, so lines from threads never interleave. */
    fprintf(stderr, "%s %s %s %d %.1fms\n", ts, e->method, e->path, e->status, e->ms);
}

/* Reads the key: the first line of the file, surrounding whitespace removed. */
static int sl__read_key(const char *path, char *key, size_t cap) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "shoplens serve: cannot read the API key file %s: %s\n", path, strerror(errno));
        return -1;
    }
    struct stat sb;
    if (fstat(fileno(f), &sb) == 0 && (sb.st_mode & 0004))
        fprintf(stderr, "shoplens serve: warning: %s is readable by every user; chmod 600 it\n", path);
    if (!fgets(key, (int)cap, f)) key[0] = '\0';
    fclose(f);
    size_t n = strlen(key);
    while (n > 0 && (key[n - 1] == '\n' || key[n - 1] == '\r' || key[n - 1] == ' ' || key[n - 1] == '\t')) key[--n] = '\0';
    size_t s = strspn(key, " \t");
    memmove(key, key + s, n - s + 1);
    if (key[0] == '\0') {
        fprintf(stderr, "shoplens serve: the API key file %s is empty\n", path);
        return -1;
    }
    return 0;
}

static void sl__node_log(void *user, const char *msg) {
    (void)user;
    char ts[32];
    sl__utc_stamp(ts);
    fprintf(stderr, "%s shoplens serve: %s\n", ts, msg);
}

/* "I/S" -> shard, shards. */
static int sl__parse_shard(const char *s, int *shard, int *shards) {
    char *end = NULL;
    errno = 0;
    long i = strtol(s, &end, 10);
    if (end == s || *end != '/' || errno) return -1;
    const char *t = end + 1;
    long n = strtol(t, &end, 10);
    if (end == t || *end || errno || n < 1 || n > SL_CLUSTER_SHARDS_MAX || i < 0 || i >= n) return -1;
    *shard = (int)i;
    *shards = (int)n;
    return 0;
}

static int sl__parse_long(const char *s, long lo, long hi, long *out) {
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!s[0] || *end || errno || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

/* "16M", "512k", "1048576" -> bytes. */
static int sl__parse_bytes(const char *s, size_t *out) {
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || errno) return -1;
    unsigned long long mul = 1;
    if (*end == 'k' || *end == 'K') { mul = 1ull << 10; end++; }
    else if (*end == 'm' || *end == 'M') { mul = 1ull << 20; end++; }
    else if (*end == 'g' || *end == 'G') { mul = 1ull << 30; end++; }
    if (*end == 'i' || *end == 'B') end++;
    if (*end == 'B') end++;
    if (*end || v > (1ull << 40) / mul) return -1;
    *out = (size_t)(v * mul);
    return 0;
}

static int sl__serve_run(int argc, char **argv) {
    const char *store = NULL, *key_file = NULL;
    sl_server_opts o;
    sl_server_opts_init(&o);
    double grace = SL__SERVE_GRACE_DEFAULT;
    int quiet = 0;
    sl_node_opts no;
    memset(&no, 0, sizeof no);
    int router = 0, shard_given = 0;
    int ef = 0; /* --ef: the engine's HNSW ef (0: its default) */
    const char *advertise = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n;
        if (strcmp(a, "--store") == 0 && v) { store = v; i++; }
        else if (strcmp(a, "--listen") == 0 && v) { o.listen = v; i++; }
        else if (strcmp(a, "--threads") == 0 && v) {
            if (sl__parse_long(v, 0, SL_SERVER_THREADS_MAX, &n)) return sl__cli_usage_error("serve", "bad value '%s' for --threads: must be an integer in 0..%d", v, SL_SERVER_THREADS_MAX);
            o.threads = (int)n; i++;
        } else if (strcmp(a, "--api-key-file") == 0 && v) { key_file = v; i++; }
        else if (strcmp(a, "--read-only") == 0) { o.read_only = 1; }
        else if (strcmp(a, "--max-body") == 0 && v) {
            if (sl__parse_bytes(v, &o.max_body)) return sl__cli_usage_error("serve", "bad value '%s' for --max-body: must be a size in 1K..1G (e.g. 16M)", v);
            i++;
        } else if (strcmp(a, "--max-body-total") == 0 && v) {
            if (sl__parse_bytes(v, &o.max_body_total)) return sl__cli_usage_error("serve", "bad value '%s' for --max-body-total: must be a size in 1K..1T (e.g. 256M)", v);
            i++;
        } else if (strcmp(a, "--max-inflight") == 0 && v) {
            if (sl__parse_long(v, SL_SERVER_MAX_INFLIGHT_MIN, SL_SERVER_MAX_INFLIGHT_MAX, &n)) return sl__cli_usage_error("serve", "bad value '%s' for --max-inflight: must be an integer in %d..%d", v, SL_SERVER_MAX_INFLIGHT_MIN, SL_SERVER_MAX_INFLIGHT_MAX);
            o.max_inflight = (int)n; i++;
        } else if (strcmp(a, "--max-connections") == 0 && v) {
            if (sl__parse_long(v, SL_SERVER_MAX_CONNECTIONS_MIN, SL_SERVER_MAX_CONNECTIONS_MAX, &n)) return sl__cli_usage_error("serve", "bad value '%s' for --max-connections: must be an integer in %d..%d", v, SL_SERVER_MAX_CONNECTIONS_MIN, SL_SERVER_MAX_CONNECTIONS_MAX);
            o.max_connections = (int)n; i++;
        } else if (strcmp(a, "--timeout") == 0 && v) {
            if (sl__parse_long(v, SL_SERVER_TIMEOUT_MIN, SL_SERVER_TIMEOUT_MAX, &n)) return sl__cli_usage_error("serve", "bad value '%s' for --timeout: must be an integer in %d..%d (seconds)", v, SL_SERVER_TIMEOUT_MIN, SL_SERVER_TIMEOUT_MAX);
            o.timeout_s = (int)n; i++;
        } else if (strcmp(a, "--head-timeout") == 0 && v) {
            if (sl__parse_long(v, SL_SERVER_HEAD_TIMEOUT_MIN, SL_SERVER_HEAD_TIMEOUT_MAX, &n))
                return sl__cli_usage_error("serve", "bad --head-timeout '%s' (seconds, %d..%d)", v,
                                           SL_SERVER_HEAD_TIMEOUT_MIN, SL_SERVER_HEAD_TIMEOUT_MAX);
            o.head_timeout_s = (int)n; i++;
        } else if (strcmp(a, "--body-timeout") == 0 && v) {
            if (sl__parse_long(v, SL_SERVER_BODY_TIMEOUT_MIN, SL_SERVER_BODY_TIMEOUT_MAX, &n))
                return sl__cli_usage_error("serve", "bad --body-timeout '%s' (seconds, %d..%d)", v,
                                           SL_SERVER_BODY_TIMEOUT_MIN, SL_SERVER_BODY_TIMEOUT_MAX);
            o.body_timeout_s = (int)n; i++;
        } else if (strcmp(a, "--grace") == 0 && v) {
            if (sl__parse_long(v, 0, 3600, &n)) return sl__cli_usage_error("serve", "bad value '%s' for --grace: must be an integer in 0..3600 (seconds)", v);
            grace = (double)n; i++;
        } else if (strcmp(a, "--quiet") == 0) { quiet = 1; }
        else if (strcmp(a, "--shard") == 0 && v) {
            if (sl__parse_shard(v, &no.shard, &no.shards)) return sl__cli_usage_error("serve", "bad value '%s' for --shard: I/S with 0 <= I < S <= %d (e.g. 0/3)", v, SL_CLUSTER_SHARDS_MAX);
            shard_given = 1; i++;
        } else if (strcmp(a, "--router") == 0) { router = 1; }
        else if (strcmp(a, "--data") == 0 && v) { no.data_dir = v; i++; }
        else if (strcmp(a, "--name") == 0 && v) { no.name = v; i++; }
        else if (strcmp(a, "--advertise") == 0 && v) { advertise = v; i++; }
        else if (strcmp(a, "--ef") == 0 && v) {
            if (sl__parse_long(v, SL_ENGINE_HNSW_EF_MIN, SL_ENGINE_HNSW_EF_MAX, &n)) return sl__cli_usage_error("serve", "bad value '%s' for --ef: must be an integer in %d..%d", v, SL_ENGINE_HNSW_EF_MIN, SL_ENGINE_HNSW_EF_MAX);
            ef = (int)n; i++;
        }
        else if (strcmp(a, "--shard-timeout") == 0 && v) {
            if (sl__parse_long(v, SL_NODE_TIMEOUT_MS_MIN, SL_NODE_TIMEOUT_MS_MAX, &n)) return sl__cli_usage_error("serve", "bad value '%s' for --shard-timeout: milliseconds in %d..%d", v, SL_NODE_TIMEOUT_MS_MIN, SL_NODE_TIMEOUT_MS_MAX);
            no.timeout_ms = (int)n; i++;
        }
        else return sl__cli_usage_error("serve", "unknown or incomplete option '%s'", a);
    }
    int cluster = sl_store_is_url(store ? store : sl_store_default_dir());
    if (cluster && shard_given == router)
        return sl__cli_usage_error("serve", "a cluster store needs --shard I/S (a search node) or --router");
    if (ef && router)
        return sl__cli_usage_error("serve", "--ef applies to search nodes (--shard) and single stores; a router passes a search's own ef on");
    no.hnsw_ef = ef;
    if (!cluster && (shard_given || router || no.data_dir || advertise))
        return sl__cli_usage_error("serve", "--shard, --router, --data and --advertise need a cluster store (--store postgresql://...)");
    char key[SL_SERVER_API_KEY_MAX + 2];
    if (key_file) {
        if (sl__read_key(key_file, key, sizeof key) != 0) return SL_EXIT_ERROR;
        o.api_key = key;
    }
    if (!quiet) o.log = sl__serve_log;

    /* Block the stop signals before any thread exists, so every thread inherits the mask. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    sl_error err;
    sl_error_clear(&err);
    sl_engine_opts eo = { 0 };
    eo.read_only = o.read_only;
    sl_engine *engine = NULL;
    sl_node *node = NULL;
    if (cluster) {
        no.store = store;
        if (!quiet) {
            no.log = sl__node_log;
            fprintf(stderr, "shoplens serve: %s of the cluster at %s\n", router ? "router" : "search node", store);
            fflush(stderr);
        }
        sl_status ns;
        /* PostgreSQL may be starting too: wait for it a while */
        for (int t = 0; (ns = sl_node_open(&no, &node, &err)) == SL_E_BUSY && t < 60; t++) {
            if (t == 0 && !quiet) fprintf(stderr, "shoplens serve: %s; waiting for it\n", err.message);
            sleep(1);
        }
        if (ns != SL_OK) return sl__cli_fail("serve", &err);
        engine = sl_node_engine(node);
        o.router = sl_node_router(node);
    } else if (sl_engine_open(store, &eo, &engine, &err) != SL_OK) {
        return sl__cli_fail("serve", &err);
    }
    if (ef && !node) sl_engine_set_hnsw_ef(engine, ef); /* before any thread searches */
    sl_server *srv = NULL;
    if (sl_server_new(engine, &o, &srv, &err) != SL_OK) {
        if (node) sl_node_free(node);
        else sl_engine_free(engine);
        return sl__cli_fail("serve", &err);
    }
    if (node) {
        char url[512];
        const char *base = sl_server_url(srv);
        if (advertise) snprintf(url, sizeof url, "%s", advertise);
        else if (strstr(base, "//0.0.0.0:") || strstr(base, "//[::]:")) {
            /* listening everywhere: announce this machine's name */
            char host[128] = "localhost";
            (void)gethostname(host, sizeof host - 1);
            snprintf(url, sizeof url, "http://%s:%d", host, sl_server_port(srv));
        } else {
            snprintf(url, sizeof url, "%s", base);
        }
        size_t ul = strlen(url);
        if (ul && url[ul - 1] == '/') url[ul - 1] = '\0';
        if (sl_node_start(node, url, &err) != SL_OK) {
            sl_server_free(srv);
            sl_node_free(node);
            return sl__cli_fail("serve", &err);
        }
        if (!quiet) fprintf(stderr, "shoplens serve: announced as %s, log position %lld\n", url, (long long)sl_node_log_pos(node));
    }
    sl_engine_stats st;
    if (!node && sl_engine_stats_get(engine, &st, NULL) == SL_OK)
        fprintf(stderr, "shoplens serve: %lld products, %lld images indexed (%s)\n",
                (long long)st.products, (long long)st.indexed, st.features);
    fprintf(stderr, "shoplens serve: listening on %s%s%s\n", sl_server_url(srv),
            o.read_only ? " (read-only)" : "", o.api_key ? " (writes need the API key)" : "");
    fflush(stderr);

    /* Wait for a stop signal; meanwhile pick up products another process (shoplens add/sync)
     * committed to the store. sl_engine_refresh is a cheap generation check when nothing changed. */
    int sig = 0;
    const struct timespec tick = { SL__SERVE_REFRESH_S, 0 };
    for (;;) {
        sig = sigtimedwait(&stop, NULL, &tick);
        if (sig > 0) break;
        if (errno == EAGAIN && !node) {
            sl_error rerr;
            sl_error_clear(&rerr);
            if (sl_engine_refresh(engine, &rerr) != SL_OK && !quiet)
                fprintf(stderr, "shoplens serve: refresh: %s: %s\n", sl_status_name(rerr.code), rerr.message);
        }
    }
    fprintf(stderr, "shoplens serve: %s: finishing %d request(s) in flight, then stopping\n",
            sig == SIGTERM ? "SIGTERM" : sig == SIGINT ? "SIGINT" : "SIGHUP", sl_server_inflight(srv));
    sl_status ss = sl_server_shutdown(srv, grace);
    sl_server_free(srv);
    int rc = SL_EXIT_OK;
    if (ss != SL_OK) {
        fprintf(stderr, "shoplens serve: the %.0f s grace period ran out; some requests were cut\n", grace);
        rc = SL_EXIT_ERROR;
    }
    if (node) {
        sl_node_free(node);
    } else {
        if (!o.read_only && sl_engine_flush(engine, &err) != SL_OK) rc = sl__cli_fail("serve", &err);
        sl_engine_free(engine);
    }
    fprintf(stderr, "shoplens serve: stopped\n");
    return rc;
}

const sl__cli_cmd sl__cmd_serve = {
    "serve",
    "serve the HTTP API and the web page",
    "Usage: shoplens serve [--store DIR] [--listen HOST:PORT] [--threads N]\n"
    "                      [--api-key-file FILE] [--read-only] [options]\n"
    "\n"
    "Serves the JSON API (docs/openapi.yaml) and a web page to search the catalog by photo.\n"
    "\n"
    "  --store DIR          the store (default $SHOPLENS_STORE, else ./shoplens-data)\n"
    "  --listen HOST:PORT   address to listen on (default 127.0.0.1:8080; port 0 = any free)\n"
    "  --threads N          worker threads (default: one per CPU)\n"
    "  --api-key-file FILE  PUT/DELETE need 'Authorization: Bearer <key>' (first line of FILE,\n"
    "                       16..512 printable characters). Required to listen beyond loopback\n"
    "                       unless --read-only.\n"
    "  --read-only          refuse PUT/DELETE (403)\n"
    "  --max-body SIZE      request body limit (default 16M)\n"
    "  --max-body-total SIZE  bodies held in memory at once, all requests (default 256M)\n"
    "  --max-inflight N     requests served at once before answering 503 (default 64)\n"
    "  --max-connections N  open connections at once (default 512)\n"
    "  --timeout S          drop connections idle for S seconds (default 30)\n"
    "  --head-timeout S     a request head must arrive within S seconds (default 10; also the\n"
    "                       longest a kept-alive connection waits for its next request);\n"
    "                       slower clients get 408 and are closed\n"
    "  --body-timeout S     each 64 KiB of a request body must arrive within S seconds\n"
    "                       (default 30); slower clients get 408 and are closed\n"
    "  --grace S            on SIGTERM, wait at most S seconds for requests in flight (default 30)\n"
    "  --ef N               HNSW candidate list length of searches that do not give one\n"
    "                       (the API's ef parameter), 16..4096 (default: 300, more above\n"
    "                       10^5 images; docs/index.md)\n"
    "  --quiet              no request log\n"
    "\n"
    "A cluster (--store postgresql://..., docs/cluster.md) needs one of:\n"
    "  --shard I/S          a search node of shard I of S: keeps the products whose id hashes\n"
    "                       to I in a local copy (--data), loaded from PostgreSQL and kept\n"
    "                       current from its change log; more nodes with the same I/S are\n"
    "                       replicas. It answers /v1/search like a router.\n"
    "  --router             answers /v1/search (and similar, classify) by asking one live\n"
    "                       replica of every shard; keeps no shard\n"
    "  --data DIR           the local copy of a search node (default ./shoplens-shard-I-of-S);\n"
    "                       a restarted node goes on from the log position it holds\n"
    "  --name NAME          this node in 'shoplens info' (default HOST:PORT)\n"
    "  --advertise URL      where routers reach this node (default the listen address, or\n"
    "                       http://HOSTNAME:PORT when listening on 0.0.0.0)\n"
    "  --shard-timeout MS   a replica must answer within MS ms, else the next one of its shard\n"
    "                       is asked (default 3000)\n"
    "Writes and product reads go to PostgreSQL (one transaction each, durable before the 2xx);\n"
    "a search that could not reach every shard says \"partial\": true and names the\n"
    "\"missing_shards\".\n"
    "\n"
    "Logs one line per request to stderr: time, method, path, status, milliseconds.\n"
    "SIGTERM or SIGINT: stop accepting, finish requests in flight, flush the index, exit 0.\n",
    sl__serve_run,
};
