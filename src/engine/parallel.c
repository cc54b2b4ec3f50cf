/*
 * engine/parallel.c - a minimal parallel for-loop over indices (a shared atomic-free counter
 * under a mutex), used for decoding and describing image lists in the ingest, retrain and
 * evaluation, and the progress tally of such a job (train, calibrate). Invariant: fn is
 * called exactly once for every i in [0, n), from at most `jobs` threads; the calling thread
 * does the work itself if no thread can be started.
 */
#include "engine/engine_internal.h"
#include "util/util.h"

#include <pthread.h>
#include <unistd.h>

#define SL__PARALLEL_MAX 256

typedef struct sl__pfor {
    void (*fn)(void *ctx, size_t i);
    void *ctx;
    size_t n, next;
    pthread_mutex_t mu;
} sl__pfor;

static void *sl__pfor_worker(void *arg) {
    sl__pfor *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        size_t i = p->next++;
        pthread_mutex_unlock(&p->mu);
        if (i >= p->n) break;
        p->fn(p->ctx, i);
    }
    return NULL;
}

int sl__jobs_or_cores(int jobs) {
    if (jobs > 0) return jobs > SL__PARALLEL_MAX ? SL__PARALLEL_MAX : jobs;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)(n > SL__PARALLEL_MAX ? SL__PARALLEL_MAX : n) : 1;
}

void sl__parallel_for(size_t n, int jobs, void (*fn)(void *ctx, size_t i), void *ctx) {
    sl__pfor p = {fn, ctx, n, 0, PTHREAD_MUTEX_INITIALIZER};
    pthread_t th[SL__PARALLEL_MAX];
    int started = 0, nt = sl__jobs_or_cores(jobs);
    if ((size_t)nt > n) nt = n ? (int)n : 1;
    for (int i = 0; i < nt; i++)
        if (pthread_create(&th[started], NULL, sl__pfor_worker, &p) == 0) started++;
    if (started == 0) sl__pfor_worker(&p);
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    pthread_mutex_destroy(&p.mu);
}

typedef struct sl__decode_ctx {
    char *const *paths;
    int max_side;
    sl_image **out;
    const sl_engine *e;     /* set: paths are files of e's store */
} sl__decode_ctx;

static void sl__decode_one(void *ctx, size_t i) {
    sl__decode_ctx *c = ctx;
    sl_image_load_opts o = {0};
    o.max_side = c->max_side;
    sl_status st = c->e ? sl__engine_load_store_image(c->e, c->paths[i], &c->out[i], NULL)
                        : sl_image_load_file(c->paths[i], &o, &c->out[i], NULL, NULL);
    if (st != SL_OK) c->out[i] = NULL;
}

void sl__decode_paths(char *const *paths, size_t n, int max_side, int jobs, sl_image **out) {
    sl__decode_ctx c = {paths, max_side, out, NULL};
    sl__parallel_for(n, jobs, sl__decode_one, &c);
}

void sl__decode_store_files(const sl_engine *e, char *const *files, size_t n, int jobs, sl_image **out) {
    sl__decode_ctx c = {files, 0, out, e};
    sl__parallel_for(n, jobs, sl__decode_one, &c);
}

void sl__tally_start(sl__tally *t, sl_progress_fn fn, void *ctx, size_t n, double t0) {
    t->fn = fn;
    t->ctx = ctx;
    t->n = n;
    t->done = 0;
    t->t0 = t0;
    t->last = 0;
    pthread_mutex_init(&t->mu, NULL);
    if (fn) fn(ctx, 0, n, 0.0);
}

void sl__tally_one(sl__tally *t) {
    pthread_mutex_lock(&t->mu);
    t->done++;
    double now = sl__now();
    if (t->fn && (now - t->last >= 0.1 || t->done == t->n)) {
        t->last = now;
        t->fn(t->ctx, t->done, t->n, now - t->t0);
    }
    pthread_mutex_unlock(&t->mu);
}

void sl__tally_end(sl__tally *t) { pthread_mutex_destroy(&t->mu); }
