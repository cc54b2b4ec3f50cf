/*
 * cli/cmd_worker.c - `shoplens worker --store postgresql://...`: processes the job queue of a
 * cluster store (docs/cluster.md): describes the images of the products `shoplens add` queued
 * and commits them. Run any number, on any number of machines; each claims jobs with
 * SELECT ... FOR UPDATE SKIP LOCKED, so none is done twice and a killed worker loses nothing.
 *
 * --threads N runs N claim loops, each with its own engine (its own PostgreSQL sessions). Logs
 * one line per job to stderr. SIGTERM/SIGINT: finish the jobs in progress, then exit 0.
 */
#include "cli/cli.h"
#include "shoplens/engine.h"
#include "util/util.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SL__WORKER_THREADS_MAX 64

static volatile int sl__worker_stop;
static void sl__worker_signal(int sig) {
    (void)sig;
    sl__worker_stop = 1;
}

typedef struct sl__wthread {
    pthread_t th;
    const char *store;
    sl_work_opts o;
    char name[192];
    sl_work_stats stats;
    sl_status st;
    sl_error err;
    int quiet;
} sl__wthread;

static void sl__worker_log(void *ctx, const char *product_id, const char *what, double ms) {
    const sl__wthread *t = ctx;
    if (t->quiet && product_id) return;
    char ts[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (product_id) fprintf(stderr, "%s %s %s %s %.0fms\n", ts, t->name, product_id, what, ms);
    else fprintf(stderr, "%s %s: %s\n", ts, t->name, what);
}

static void *sl__worker_main(void *arg) {
    sl__wthread *t = arg;
    sl_error_clear(&t->err);
    sl_engine_opts eo;
    memset(&eo, 0, sizeof eo);
    eo.no_index = 1;
    sl_engine *e = NULL;
    /* the server may be starting too: try for a while */
    for (int i = 0; i < 30 && !sl__worker_stop; i++) {
        t->st = sl_engine_open(t->store, &eo, &e, &t->err);
        if (t->st != SL_E_BUSY) break;
        sleep(1);
    }
    if (t->st != SL_OK) return NULL;
    t->st = sl_engine_work(e, &t->o, &t->stats, &t->err);
    sl_engine_free(e);
    return NULL;
}

static int sl__parse_num(const char *s, double lo, double hi, double *out) {
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (!s[0] || *end || errno || !(v >= lo && v <= hi)) return -1;
    *out = v;
    return 0;
}

static int sl__worker_run(int argc, char **argv) {
    const char *store = NULL, *name = NULL;
    double threads = 1, idle = 0, max_jobs = 0;
    int quiet = 0, json = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--store") == 0 && v) { store = v; i++; }
        else if (strcmp(a, "--name") == 0 && v) { name = v; i++; }
        else if (strcmp(a, "--threads") == 0 && v) {
            if (sl__parse_num(v, 1, SL__WORKER_THREADS_MAX, &threads) || threads != (int)threads)
                return sl__cli_usage_error(argv[0], "bad value '%s' for --threads: an integer in 1..%d", v, SL__WORKER_THREADS_MAX);
            i++;
        } else if (strcmp(a, "--idle-exit") == 0 && v) {
            if (sl__parse_num(v, 0, 1e6, &idle)) return sl__cli_usage_error(argv[0], "bad value '%s' for --idle-exit: seconds, 0..1000000", v);
            i++;
        } else if (strcmp(a, "--max-jobs") == 0 && v) {
            if (sl__parse_num(v, 0, 1e12, &max_jobs) || max_jobs != (double)(long long)max_jobs)
                return sl__cli_usage_error(argv[0], "bad value '%s' for --max-jobs: an integer, 0 = no limit", v);
            i++;
        } else if (strcmp(a, "--quiet") == 0) quiet = 1;
        else if (strcmp(a, "--json") == 0) json = 1;
        else return sl__cli_usage_error(argv[0], "unknown or incomplete option '%s'", a);
    }
    if (!store) store = sl_store_default_dir();
    if (!sl_store_is_url(store))
        return sl__cli_usage_error(argv[0], "a worker needs a cluster store: --store postgresql://... (got '%s')", store);
    signal(SIGINT, sl__worker_signal);
    signal(SIGTERM, sl__worker_signal);
    signal(SIGPIPE, SIG_IGN);
    int n = (int)threads;
    sl__wthread *t = calloc((size_t)n, sizeof *t);
    if (!t) {
        fprintf(stderr, "shoplens worker: out of memory\n");
        return SL_EXIT_ERROR;
    }
    char host[64] = "localhost";
    (void)gethostname(host, sizeof host - 1);
    for (int i = 0; i < n; i++) {
        t[i].store = store;
        t[i].quiet = quiet;
        if (name && n == 1) snprintf(t[i].name, sizeof t[i].name, "%s", name);
        else if (name) snprintf(t[i].name, sizeof t[i].name, "%s.%d", name, i);
        else snprintf(t[i].name, sizeof t[i].name, "worker@%s:%d.%d", host, (int)getpid(), i);
        t[i].o.name = t[i].name;
        t[i].o.idle_exit_s = idle;
        t[i].o.max_jobs = (size_t)max_jobs;
        t[i].o.cancel = &sl__worker_stop;
        t[i].o.log = sl__worker_log;
        t[i].o.log_ctx = &t[i];
    }
    if (!quiet) fprintf(stderr, "shoplens worker: %d thread%s on %s\n", n, n == 1 ? "" : "s", store);
    int started = 0;
    for (int i = 0; i < n; i++)
        if (pthread_create(&t[i].th, NULL, sl__worker_main, &t[i]) == 0) started = i + 1;
        else break;
    sl_work_stats sum;
    memset(&sum, 0, sizeof sum);
    int rc = started == n ? SL_EXIT_OK : SL_EXIT_ERROR;
    for (int i = 0; i < started; i++) {
        pthread_join(t[i].th, NULL);
        sum.jobs += t[i].stats.jobs;
        sum.failed += t[i].stats.failed;
        sum.images += t[i].stats.images;
        if (t[i].stats.seconds > sum.seconds) sum.seconds = t[i].stats.seconds;
        if (t[i].st != SL_OK && rc == SL_EXIT_OK) rc = sl__cli_fail(argv[0], &t[i].err);
    }
    if (json) {
        json_t *j = json_pack("{s:I, s:I, s:I, s:f}", "jobs", (json_int_t)sum.jobs, "failed", (json_int_t)sum.failed,
                              "images", (json_int_t)sum.images, "seconds", sum.seconds);
        char *s = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
        if (s) printf("%s\n", s);
        free(s);
        json_decref(j);
    } else if (!quiet) {
        fprintf(stderr, "shoplens worker: %zu jobs (%zu failed), %zu images described in %.1f s\n", sum.jobs,
                sum.failed, sum.images, sum.seconds);
    }
    free(t);
    return rc;
}

const sl__cli_cmd sl__cmd_worker = {
    "worker", "process the ingest jobs of a cluster store",
    "Usage: shoplens worker --store postgresql://... [--threads N] [--name NAME]\n"
    "                       [--idle-exit S] [--max-jobs N] [--quiet] [--json]\n\n"
    "Describes the images of the products that 'shoplens add' and 'sync' queued in a cluster\n"
    "store and commits them (docs/cluster.md). Run any number of workers on any number of\n"
    "machines: each job is claimed by one worker (SELECT ... FOR UPDATE SKIP LOCKED) and done\n"
    "exactly once; a worker that is killed loses nothing (its job goes back to the queue).\n"
    "A lost connection to PostgreSQL is retried every second.\n"
    "  --threads N    claim loops in this process, 1..64 (default 1; about one per core)\n"
    "  --name NAME    this worker in 'shoplens info' (default worker@HOST:PID.THREAD)\n"
    "  --idle-exit S  exit after S seconds without a job (default 0: run until stopped)\n"
    "  --max-jobs N   exit after N jobs (default 0: no limit)\n"
    "  --quiet        no line per job (problems are still printed)\n"
    "  --json         print {\"jobs\", \"failed\", \"images\", \"seconds\"} at the end\n"
    "Logs one line per job to stderr: time, worker, product, outcome, milliseconds.\n"
    "SIGTERM or SIGINT: finish the jobs in progress, then exit 0.\n",
    sl__worker_run};
