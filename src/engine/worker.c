/*
 * engine/worker.c - `shoplens worker`: processes the job queue of a cluster store (docs/cluster.md).
 *
 * One job = one product of a feed to add or update. In ONE transaction of the cluster store a
 * worker claims the job (FOR UPDATE SKIP LOCKED), locks the product, decodes and describes the
 * job's new images (the same decode, description and store copy as a single-node ingest, with
 * the ids the queue gave them), keeps the images the product already has, commits the product
 * through sl__engine_commit_product (which appends it to the change log) and marks the job
 * done. So:
 *  - a job is done exactly once: a worker killed at any point never committed, its session ends
 *    and PostgreSQL releases the job; the next claim takes it again;
 *  - a job whose product changed since it was queued (an image it meant to keep is gone) fails
 *    with a message instead of committing a product without that image;
 *  - the row lock on the product serializes the job with any other writer of that product;
 *  - the features version row is locked (FOR SHARE) before the job: a job is never committed
 *    with vectors of features a retrain replaced meanwhile (the worker loads the new ones and
 *    takes the job again).
 * A connection lost to PostgreSQL (a restart) ends the transaction (the job goes back to the
 * queue) and the worker retries every second until the server is back.
 */
#include "engine/engine_internal.h"
#include "catalog/catalog.h"
#include "catalog/pg.h"
#include "util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SL__WORK_BEAT_S 2.0   /* heartbeat period in the node list */

typedef struct sl__worker {
    sl_engine *e;
    const sl_work_opts *o;
    char name[160];
    char host[96];
    double last_beat;
} sl__worker;

static void sl__work_log(const sl__worker *w, const char *product_id, const char *what, double ms) {
    if (w->o->log) w->o->log(w->o->log_ctx, product_id, what, ms);
}

static void sl__work_beat(sl__worker *w) {
    double now = sl__now();
    if (now - w->last_beat < SL__WORK_BEAT_S) return;
    w->last_beat = now;
    sl__pg *p = sl__store_pg(w->e->store);
    sl__pgc *c = sl__pg_acquire_reader(p);
    sl__node_row me;
    memset(&me, 0, sizeof me);
    me.name = w->name;
    me.role = "worker";
    me.host = w->host;
    me.pid = (int)getpid();
    (void)sl__nodes_beat(c, &me, NULL);
    sl__pg_release(p, c);
}

/* The features the store has now (a first training may have happened since the last job). */
static void sl__work_features(sl__worker *w) {
    char *fv = NULL;
    if (sl_store_meta_get(w->e->store, "features_version", &fv, NULL) != SL_OK) return;
    int64_t v = strtoll(fv, NULL, 10);
    free(fv);
    if (v != w->e->features_version) {
        sl_error err;
        sl_error_clear(&err);
        if (sl_engine_refresh(w->e, &err) != SL_OK) sl__work_log(w, NULL, err.message, 0);
    }
}

typedef struct sl__jobwork {
    sl__described *d;
    const char **src;
    void **copies;            /* owned re-encoded copies (NULL when the copy is the bytes) */
    size_t n;
    size_t fail_row;
    const char *fail_file;
    sl_status fail_st;
    char fail_msg[SL_ERROR_MSG_MAX + 64];
} sl__jobwork;

static void sl__jobwork_free(sl__jobwork *jw) {
    for (size_t i = 0; i < jw->n; i++) {
        sl__described_clear(&jw->d[i]);
        free(jw->copies[i]);
    }
    free(jw->d);
    free(jw->src);
    free(jw->copies);
}

/* Describes the job's images (inside its transaction: the copies are written in it). Sets
 * jw->fail_* (and returns SL_OK) when an image is the problem; an error return is the store's. */
static sl_status sl__job_describe(sl__worker *w, sl__job *job, const sl_image_ref *old, size_t n_old,
                                  sl__jobwork *jw, size_t *described, sl_error *err) {
    sl_engine *e = w->e;
    jw->d = sl__callocarray(job->n + 1, sizeof *jw->d);
    jw->src = sl__callocarray(job->n + 1, sizeof *jw->src);
    jw->copies = sl__callocarray(job->n + 1, sizeof *jw->copies);
    if (!jw->d || !jw->src || !jw->copies) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    jw->n = job->n;
    for (size_t i = 0; i < job->n; i++) {
        sl__job_image *im = &job->images[i];
        sl__described *d = &jw->d[i];
        memcpy(d->hash, im->hash, sizeof d->hash);
        d->size = im->size;
        jw->src[i] = im->source;
        if (!im->data) {
            for (size_t k = 0; k < n_old && !d->reuse; k++)
                if (sl__image_same_bytes(&old[k], im->hash)) d->reuse = old[k].id;
            if (!d->reuse) {
                jw->fail_row = im->row;
                jw->fail_file = im->source;
                jw->fail_st = SL_E_STATE;
                snprintf(jw->fail_msg, sizeof jw->fail_msg, "the product changed after this row was queued (the "
                         "stored image it keeps is gone); run 'shoplens add' again");
                return SL_OK;
            }
            continue;
        }
        sl_error ie;
        sl_error_clear(&ie);
        sl_image *img = NULL;
        sl_image_info info;
        void *copy = NULL;
        size_t clen = 0;
        int owned = 0;
        char ext[16];
        sl_status st = sl__engine_decode(e, im->data, im->len, &img, &info, &ie);
        if (st == SL_OK) st = sl__engine_describe(e, img, &d->vec, &d->local, &d->local_len, &ie);
        if (st == SL_OK) st = sl__engine_copy_bytes(e, im->data, im->len, &info, &copy, &clen, &owned, ext, &ie);
        sl_image_free(img);
        if (st == SL_OK) {
            if (owned) jw->copies[i] = copy;
            d->copy = copy;
            d->copy_len = clen;
            d->id = im->image_id;
            /* the store's error (the connection, the disk) is not the image's */
            sl_status ws = sl__engine_write_copy(e, copy, clen, ext, d->file, err);
            if (ws != SL_OK) return ws;
            (*described)++;
            continue;
        }
        if (st == SL_E_NOMEM) return sl__err_set(err, st, "%s", ie.message);
        jw->fail_row = im->row;
        jw->fail_file = im->source;
        jw->fail_st = st;
        snprintf(jw->fail_msg, sizeof jw->fail_msg, "%s", ie.message);
        return SL_OK;
    }
    return SL_OK;
}

/* Claims and processes one job. *got = 0 when there was none. */
static sl_status sl__work_one(sl__worker *w, sl_work_stats *ws, int *got, sl_error *err) {
    sl_engine *e = w->e;
    sl_store *s = e->store;
    *got = 0;
    double t0 = sl__now();
    sl_status st = sl_store_begin(s, err);
    if (st != SL_OK) return st;
    /* the features version first (before the job and the product: the lock order of a retrain,
     * which re-describes every image): a retrain committed since our features were loaded
     * means the job would be described with the old ones; the next turn loads the new ones */
    sl_error lerr;
    sl_error_clear(&lerr);
    if ((st = sl__engine_lock_features(e, 0, &lerr)) != SL_OK) {
        sl_store_rollback(s);
        if (st != SL_E_BUSY) {
            if (err) *err = lerr;
            return st;
        }
        return SL_OK; /* *got = 0: the loop waits for a NOTIFY (at most a second), loads the
                       * new features and claims again (no busy loop should loading fail) */
    }
    sl__job job;
    st = sl__jobs_claim(s, w->name, &job, err);
    if (st == SL_E_NOT_FOUND) {
        sl_store_rollback(s);
        if (err) sl_error_clear(err);
        return SL_OK;
    }
    if (st != SL_OK) {
        sl_store_rollback(s);
        return st;
    }
    *got = 1;
    sl_image_ref *old = NULL;
    size_t n_old = 0, described = 0;
    sl_product cur;
    memset(&cur, 0, sizeof cur);
    sl__jobwork jw;
    memset(&jw, 0, sizeof jw);
    int outcome = 0;
    char what[SL_ERROR_MSG_MAX + 96];
    if (job.attempts >= sl__jobs_max_attempts()) {
        jw.fail_row = job.n ? job.images[0].row : 0;
        jw.fail_file = job.n ? job.images[0].source : NULL;
        jw.fail_st = SL_E_INTERRUPTED;
        snprintf(jw.fail_msg, sizeof jw.fail_msg, "given up: %d workers stopped while processing this "
                 "product (killed, or a crash on one of its images)", job.attempts);
        goto finish;
    }
    if ((st = sl_store_lock_product(s, job.meta.id, err)) != SL_OK) goto fail;
    int exists = sl_store_get_product(s, job.meta.id, &cur, NULL) == SL_OK;
    if (exists && (st = sl_store_product_images(s, job.meta.id, &old, &n_old, err)) != SL_OK) goto fail;
    pthread_mutex_lock(&e->wmu);
    st = sl__job_describe(w, &job, old, n_old, &jw, &described, err);
    if (st == SL_OK && !jw.fail_st) {
        int same = exists && sl__product_equal(&cur, &job.meta) && jw.n == n_old;
        for (size_t i = 0; same && i < jw.n; i++) same = jw.d[i].reuse > 0;
        if (same) {
            outcome = SL__JOB_UNCHANGED;
        } else {
            st = sl__engine_commit_product(e, &job.meta, jw.src, jw.d, jw.n, 0, err);
            outcome = exists ? SL__JOB_UPDATED : SL__JOB_ADDED;
        }
    }
    pthread_mutex_unlock(&e->wmu);
    if (st != SL_OK) goto fail;
finish:
    if ((st = sl__jobs_finish(s, job.id, jw.fail_st ? SL__JOB_FAILED : SL__JOB_DONE, outcome, jw.fail_row,
                              jw.fail_file, jw.fail_st, jw.fail_msg, err)) != SL_OK)
        goto fail;
    if ((st = sl_store_commit(s, err)) != SL_OK) goto out; /* rolled back: the job is queued again */
    ws->jobs++;
    ws->images += described;
    if (jw.fail_st) {
        ws->failed++;
        snprintf(what, sizeof what, "failed: row %zu: %s: %s", jw.fail_row, sl_status_name(jw.fail_st), jw.fail_msg);
    } else {
        snprintf(what, sizeof what, "%s", outcome == SL__JOB_ADDED ? "added" : outcome == SL__JOB_UPDATED ? "updated" : "unchanged");
    }
    sl__work_log(w, job.meta.id, what, (sl__now() - t0) * 1e3);
    if (outcome == SL__JOB_UPDATED) sl__engine_gc(e); /* files of replaced images */
    goto out;
fail:
    sl_store_rollback(s);
out:
    sl__jobwork_free(&jw);
    sl_image_refs_free(old, n_old);
    sl_product_clear(&cur);
    sl__job_clear(&job);
    return st;
}

static void sl__sleep(double s) {
    struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };
    nanosleep(&ts, NULL);
}

sl_status sl_engine_work(sl_engine *e, const sl_work_opts *opts, sl_work_stats *stats,
                         sl_error *err) {
    sl_work_opts none;
    memset(&none, 0, sizeof none);
    if (stats) memset(stats, 0, sizeof *stats);
    if (!sl_store_is_shared(e->store))
        return sl__err_set(err, SL_E_UNSUPPORTED, "%s: workers process the job queue of a cluster store "
                           "(--store postgresql://...)", sl_store_dir(e->store));
    if (e->read_only || !e->no_index)
        return sl__err_set(err, SL_E_STATE, "a worker needs an engine opened read-write with no_index");
    sl__worker w;
    memset(&w, 0, sizeof w);
    w.e = e;
    w.o = opts ? opts : &none;
    w.last_beat = -1e9;
    if (gethostname(w.host, sizeof w.host) != 0) snprintf(w.host, sizeof w.host, "localhost");
    w.host[sizeof w.host - 1] = '\0';
    if (w.o->name && *w.o->name) snprintf(w.name, sizeof w.name, "%s", w.o->name);
    else snprintf(w.name, sizeof w.name, "worker@%s:%d", w.host, (int)getpid());
    sl_work_stats ws;
    memset(&ws, 0, sizeof ws);
    double t0 = sl__now(), idle_since = t0;
    sl_status st = SL_OK;
    int trouble = 0;
    while (!(w.o->cancel && *w.o->cancel)) {
        if (w.o->max_jobs && ws.jobs >= w.o->max_jobs) break;
        sl__work_beat(&w);
        sl__work_features(&w);
        int got = 0;
        sl_error je;
        sl_error_clear(&je);
        sl_status js = sl_features_ready(e->feat) ? sl__work_one(&w, &ws, &got, &je) : SL_OK;
        if (js == SL_E_NOMEM) {
            st = sl__err_set(err, js, "%s", je.message);
            break;
        }
        if (js != SL_OK) {
            /* the server went away, or a job failed in the store: log, back off, go on (a job
             * that keeps failing is given up after its attempts) */
            if (!trouble) sl__work_log(&w, NULL, je.message, 0);
            trouble = 1;
            sl__sleep(1.0);
            idle_since = sl__now();
            continue;
        }
        if (trouble) sl__work_log(&w, NULL, "PostgreSQL answers again", 0);
        trouble = 0;
        if (got) {
            idle_since = sl__now();
            continue;
        }
        if (w.o->idle_exit_s > 0 && sl__now() - idle_since >= w.o->idle_exit_s) break;
        (void)sl__jobs_wait(e->store, "shoplens_jobs", 1.0);
    }
    ws.seconds = sl__now() - t0;
    if (stats) *stats = ws;
    return st;
}
