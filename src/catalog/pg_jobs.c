/*
 * catalog/pg_jobs.c - the job queue of a cluster's distributed ingest (docs/cluster.md): one job
 * per product to add or update, with the bytes of its new images; `shoplens add` queues them,
 * `shoplens worker` processes claim them.
 *
 * Invariants:
 *  - A job is claimed with SELECT ... FOR UPDATE SKIP LOCKED inside the transaction that also
 *    commits its product and marks it done, so a job is done exactly once: a worker that dies
 *    (kill -9, a lost machine) loses its session, PostgreSQL rolls the transaction back and the
 *    row lock goes with it; the job is claimable again at once.
 *  - Jobs of one product are processed in queue order: a job is claimable only when no older
 *    unfinished job of the same product exists (even one another worker holds).
 *  - Each claim is also recorded in job_attempts outside the claiming transaction (on the
 *    reader connection), so a job that kills every worker that takes it is noticed: after
 *    SL__JOB_MAX_ATTEMPTS unfinished claims it is failed instead of processed again.
 *  - New images get their ids when queued (nextval, in feed order), so a cluster ingest of a
 *    feed numbers its images as a single-node ingest of the same feed does.
 */
#include "catalog/pg.h"
#include "catalog/catalog.h"
#include "util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SL__JOB_MAX_ATTEMPTS 5

void sl__job_clear(sl__job *j) {
    if (!j) return;
    for (size_t i = 0; i < j->n; i++) {
        free(j->images[i].source);
        free(j->images[i].data);
    }
    free(j->images);
    sl_product_clear(&j->meta);
    memset(j, 0, sizeof *j);
}

void sl__job_results_free(sl__job_result *r, size_t n) {
    if (!r) return;
    for (size_t i = 0; i < n; i++) {
        free(r[i].product_id);
        free(r[i].file);
        free(r[i].status);
        free(r[i].message);
    }
    free(r);
}

/* The writer connection inside the caller's transaction (SL_E_STATE outside one). */
static sl_status sl__jobs_txn(sl_store *s, sl__pgc **c, sl_error *err) {
    sl__pg *p = sl__store_pg(s);
    if (!p) return sl__err_set(err, SL_E_UNSUPPORTED, "%s: job queues need a cluster store (postgresql://...)", sl_store_dir(s));
    *c = sl__pg_txn_conn(p);
    return *c ? SL_OK : sl__err_set(err, SL_E_STATE, "job queue operation outside a transaction");
}

/* Runs a read on the store's reader (or the caller's transaction). */
static PGresult *sl__jobs_read(sl_store *s, const char *sql, int n, const char *const *v, sl_error *err) {
    sl__pg *p = sl__store_pg(s);
    if (!p) {
        sl__err_set(err, SL_E_UNSUPPORTED, "%s: job queues need a cluster store (postgresql://...)", sl_store_dir(s));
        return NULL;
    }
    sl__pgc *c = sl__pg_acquire(p);
    PGresult *r = sl__pgc_exec(c, sql, n, v, NULL, NULL, err);
    sl__pg_release(p, c);
    return r;
}

sl_status sl__jobs_batch_new(sl_store *s, const char *label, int64_t *batch, sl_error *err) {
    *batch = 0;
    sl_status st = sl_store_begin(s, err);
    if (st != SL_OK) return st;
    sl__pgc *c = NULL;
    if ((st = sl__jobs_txn(s, &c, err)) != SL_OK) goto fail;
    /* finished batches of more than a week ago are history nobody reads */
    if ((st = sl__pgc_run(c, "DELETE FROM batches b WHERE b.created < now() - interval '7 days'"
                             " AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.batch = b.id AND j.state = 0)",
                          0, NULL, err)) != SL_OK)
        goto fail;
    const char *v[1] = {label};
    PGresult *r = sl__pgc_exec(c, "INSERT INTO batches(label) VALUES ($1) RETURNING id", 1, v, NULL, NULL, err);
    if (!r) {
        st = err ? err->code : SL_E_IO;
        goto fail;
    }
    *batch = sl__pgv_i64(r, 0, 0);
    PQclear(r);
    return sl_store_commit(s, err);
fail:
    sl_store_rollback(s);
    return st;
}

sl_status sl__jobs_add(sl_store *s, int64_t batch, const sl_product *p, sl__job_image *imgs,
                       size_t n, sl_error *err) {
    char cur[SL_PRODUCT_CURRENCY_LEN + 1];
    sl_status st = sl__product_check(p, cur, err);
    if (st != SL_OK) return st;
    if ((st = sl_store_begin(s, err)) != SL_OK) return st;
    sl__pgc *c = NULL;
    PGresult *r = NULL;
    if ((st = sl__jobs_txn(s, &c, err)) != SL_OK) goto fail;
    size_t fresh = 0;
    for (size_t i = 0; i < n; i++) fresh += imgs[i].data != NULL;
    if (fresh) {
        char cnt[24];
        snprintf(cnt, sizeof cnt, "%zu", fresh);
        const char *v[1] = {cnt};
        if (!(r = sl__pgc_exec(c, "SELECT nextval('image_ids') FROM generate_series(1, $1::int)", 1, v, NULL, NULL, err))) {
            st = err ? err->code : SL_E_IO;
            goto fail;
        }
        for (size_t i = 0, k = 0; i < n; i++)
            imgs[i].image_id = imgs[i].data ? sl__pgv_i64(r, (int)k++, 0) : 0;
        PQclear(r);
        r = NULL;
    }
    char bb[24], price[40];
    snprintf(bb, sizeof bb, "%lld", (long long)batch);
    if (p->has_price) snprintf(price, sizeof price, "%.17g", p->price);
    const char *v[10] = {bb, p->id, p->title ? p->title : "", p->category ? p->category : "",
                         p->has_price ? price : NULL, p->description ? p->description : "", p->url ? p->url : "",
                         p->attrs_json && *p->attrs_json ? p->attrs_json : "{}", cur, NULL};
    if (!(r = sl__pgc_exec(c, "INSERT INTO jobs(batch, product_id, title, category, price, description, url, attrs,"
                              " currency) VALUES ($1::bigint, $2, $3, $4, $5::float8, $6, $7, $8, $9) RETURNING id",
                           9, v, NULL, NULL, err))) {
        st = err ? err->code : SL_E_IO;
        goto fail;
    }
    char job[24];
    snprintf(job, sizeof job, "%lld", (long long)sl__pgv_i64(r, 0, 0));
    PQclear(r);
    r = NULL;
    for (size_t i = 0; i < n && st == SL_OK; i++) {
        char pos[24], iid[24], row[24], sz[24];
        snprintf(pos, sizeof pos, "%zu", i);
        snprintf(iid, sizeof iid, "%lld", (long long)imgs[i].image_id);
        snprintf(row, sizeof row, "%zu", imgs[i].row);
        snprintf(sz, sizeof sz, "%lld", (long long)imgs[i].size);
        if (imgs[i].len > (size_t)1 << 30) {
            st = sl__err_set(err, SL_E_TOO_LARGE, "%s: larger than 1 GiB", imgs[i].source ? imgs[i].source : "image");
            break;
        }
        const char *iv[8] = {job, pos, iid, row, imgs[i].source ? imgs[i].source : "", imgs[i].hash, sz,
                             imgs[i].data ? (const char *)imgs[i].data : NULL};
        int lens[8] = {0, 0, 0, 0, 0, 0, 0, (int)imgs[i].len};
        int bins[8] = {0, 0, 0, 0, 0, 0, 0, 1};
        if (!(r = sl__pgc_exec(c, "INSERT INTO job_images(job_id, pos, image_id, feed_row, source, hash, size, data)"
                                  " VALUES ($1::bigint, $2::int, $3::bigint, $4::bigint, $5, $6, $7::bigint, $8::bytea)",
                               8, iv, lens, bins, err)))
            st = err ? err->code : SL_E_IO;
        PQclear(r);
        r = NULL;
    }
    if (st == SL_OK) st = sl__pgc_run(c, "NOTIFY shoplens_jobs", 0, NULL, err);
    if (st != SL_OK) goto fail;
    return sl_store_commit(s, err);
fail:
    PQclear(r);
    sl_store_rollback(s);
    return st;
}

sl_status sl__jobs_batch_status(sl_store *s, int64_t batch, sl__batch_status *bs, sl_error *err) {
    memset(bs, 0, sizeof *bs);
    char bb[24];
    snprintf(bb, sizeof bb, "%lld", (long long)batch);
    const char *v[1] = {bb};
    PGresult *r = sl__jobs_read(s, "SELECT count(*), count(*) FILTER (WHERE state = 1), count(*) FILTER (WHERE state = 2)"
                                   " FROM jobs WHERE batch = $1::bigint", 1, v, err);
    if (!r) return err ? err->code : SL_E_IO;
    bs->total = sl__pgv_i64(r, 0, 0);
    bs->done = sl__pgv_i64(r, 0, 1);
    bs->failed = sl__pgv_i64(r, 0, 2);
    PQclear(r);
    return SL_OK;
}

sl_status sl__jobs_batch_results(sl_store *s, int64_t batch, sl__job_result **out, size_t *n,
                                 sl_error *err) {
    *out = NULL;
    *n = 0;
    char bb[24];
    snprintf(bb, sizeof bb, "%lld", (long long)batch);
    const char *v[1] = {bb};
    PGresult *r = sl__jobs_read(s, "SELECT product_id, state, COALESCE(outcome, 0), COALESCE(fail_row, 0), fail_file,"
                                   " fail_status, fail_message FROM jobs WHERE batch = $1::bigint AND state <> 0 ORDER BY id",
                                1, v, err);
    if (!r) return err ? err->code : SL_E_IO;
    size_t cnt = (size_t)PQntuples(r);
    sl__job_result *v2 = sl__callocarray(cnt + 1, sizeof *v2);
    sl_status st = v2 ? SL_OK : sl__err_set(err, SL_E_NOMEM, "out of memory");
    for (size_t i = 0; st == SL_OK && i < cnt; i++) {
        int row = (int)i;
        v2[i].product_id = sl__pgv_dup(r, row, 0);
        v2[i].state = (int)sl__pgv_i64(r, row, 1);
        v2[i].outcome = (int)sl__pgv_i64(r, row, 2);
        v2[i].row = (size_t)sl__pgv_i64(r, row, 3);
        v2[i].file = sl__pgv_null(r, row, 4) ? NULL : sl__pgv_dup(r, row, 4);
        v2[i].status = sl__pgv_dup(r, row, 5);
        v2[i].message = sl__pgv_dup(r, row, 6);
        if (!v2[i].product_id || !v2[i].status || !v2[i].message) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    PQclear(r);
    if (st != SL_OK) {
        sl__job_results_free(v2, cnt);
        return st;
    }
    *out = v2;
    *n = cnt;
    return SL_OK;
}

/* Reads the images of a claimed job. */
static sl_status sl__jobs_images(sl__pgc *c, const char *job, sl__job *j, sl_error *err) {
    const char *v[1] = {job};
    PGresult *r = sl__pgc_exec(c, "SELECT image_id, feed_row, source, hash, size, data FROM job_images"
                                  " WHERE job_id = $1::bigint ORDER BY pos", 1, v, NULL, NULL, err);
    if (!r) return err ? err->code : SL_E_IO;
    size_t cnt = (size_t)PQntuples(r);
    sl_status st = SL_OK;
    if (!(j->images = sl__callocarray(cnt + 1, sizeof *j->images))) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    for (size_t i = 0; st == SL_OK && i < cnt; i++) {
        sl__job_image *im = &j->images[i];
        int row = (int)i;
        j->n++;
        im->image_id = sl__pgv_i64(r, row, 0);
        im->row = (size_t)sl__pgv_i64(r, row, 1);
        im->source = sl__pgv_dup(r, row, 2);
        snprintf(im->hash, sizeof im->hash, "%s", sl__pgv_str(r, row, 3));
        im->size = sl__pgv_i64(r, row, 4);
        if (!im->source) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        if (st == SL_OK && !sl__pgv_null(r, row, 5)) {
            size_t len = (size_t)PQgetlength(r, row, 5);
            if (!(im->data = malloc(len ? len : 1))) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
            else {
                memcpy(im->data, PQgetvalue(r, row, 5), len);
                im->len = len;
            }
        }
    }
    PQclear(r);
    return st;
}

sl_status sl__jobs_claim(sl_store *s, const char *worker, sl__job *job, sl_error *err) {
    memset(job, 0, sizeof *job);
    sl__pgc *c = NULL;
    sl_status st = sl__jobs_txn(s, &c, err);
    if (st != SL_OK) return st;
    PGresult *r = sl__pgc_exec(c, "SELECT j.id, j.batch, j.product_id, j.title, j.category, j.price, j.description,"
                                  " j.url, j.attrs, j.currency,"
                                  " (SELECT count(*) FROM job_attempts a WHERE a.job_id = j.id)"
                                  " FROM jobs j WHERE j.state = 0 AND NOT EXISTS (SELECT 1 FROM jobs o"
                                  "  WHERE o.product_id = j.product_id AND o.state = 0 AND o.id < j.id)"
                                  " ORDER BY j.id LIMIT 1 FOR UPDATE OF j SKIP LOCKED",
                               0, NULL, NULL, NULL, err);
    if (!r) return err ? err->code : SL_E_IO;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return sl__err_set(err, SL_E_NOT_FOUND, "no job");
    }
    job->id = sl__pgv_i64(r, 0, 0);
    job->batch = sl__pgv_i64(r, 0, 1);
    job->attempts = (int)sl__pgv_i64(r, 0, 10);
    sl_product *m = &job->meta;
    m->id = sl__pgv_dup(r, 0, 2);
    m->title = sl__pgv_dup(r, 0, 3);
    m->category = sl__pgv_dup(r, 0, 4);
    m->has_price = !sl__pgv_null(r, 0, 5);
    m->price = m->has_price ? sl__pgv_f64(r, 0, 5) : 0;
    m->description = sl__pgv_dup(r, 0, 6);
    m->url = sl__pgv_dup(r, 0, 7);
    m->attrs_json = sl__pgv_dup(r, 0, 8);
    m->currency = sl__pgv_dup(r, 0, 9);
    PQclear(r);
    if (!m->id || !m->title || !m->category || !m->description || !m->url || !m->attrs_json || !m->currency) {
        sl__job_clear(job);
        return sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    char jb[24];
    snprintf(jb, sizeof jb, "%lld", (long long)job->id);
    /* the attempt is recorded by another session: it stays when this one dies */
    sl__pg *p = sl__store_pg(s);
    sl__pgc *rc = sl__pg_acquire_reader(p);
    const char *v[2] = {jb, worker ? worker : ""};
    (void)sl__pgc_run(rc, "INSERT INTO job_attempts(job_id, worker) VALUES ($1::bigint, $2)", 2, v, NULL);
    sl__pg_release(p, rc);
    if ((st = sl__jobs_images(c, jb, job, err)) != SL_OK) sl__job_clear(job);
    return st;
}

sl_status sl__jobs_finish(sl_store *s, int64_t job, int state, int outcome, size_t row,
                          const char *file, sl_status fst, const char *message, sl_error *err) {
    sl__pgc *c = NULL;
    sl_status st = sl__jobs_txn(s, &c, err);
    if (st != SL_OK) return st;
    char jb[24], stb[8], ob[8], rb[24];
    snprintf(jb, sizeof jb, "%lld", (long long)job);
    snprintf(stb, sizeof stb, "%d", state);
    snprintf(ob, sizeof ob, "%d", outcome);
    snprintf(rb, sizeof rb, "%zu", row);
    int failed = state == SL__JOB_FAILED;
    const char *v[7] = {jb, stb, failed ? NULL : ob, failed ? rb : NULL, failed ? file : NULL,
                        failed ? sl_status_name(fst) : NULL, failed ? (message ? message : "") : NULL};
    if ((st = sl__pgc_run(c, "UPDATE jobs SET state = $2::smallint, outcome = $3::smallint, fail_row = $4::bigint,"
                             " fail_file = $5, fail_status = $6, fail_message = $7, finished = now()"
                             " WHERE id = $1::bigint", 7, v, err)) != SL_OK ||
        (st = sl__pgc_run(c, "DELETE FROM job_images WHERE job_id = $1::bigint", 1, v, err)) != SL_OK ||
        (st = sl__pgc_run(c, "DELETE FROM job_attempts WHERE job_id = $1::bigint", 1, v, err)) != SL_OK)
        return st;
    return sl__pgc_run(c, "NOTIFY shoplens_done", 0, NULL, err);
}

int sl__jobs_max_attempts(void) { return SL__JOB_MAX_ATTEMPTS; }

int sl__jobs_wait(sl_store *s, const char *channel, double timeout_s) {
    sl__pg *p = sl__store_pg(s);
    return p ? sl__pg_wait(p, channel, timeout_s) : 0;
}

sl_status sl__jobs_status(sl_store *s, sl__queue_status *q, sl_error *err) {
    memset(q, 0, sizeof *q);
    PGresult *r = sl__jobs_read(s, "SELECT count(*) FILTER (WHERE state = 0), count(*) FILTER (WHERE state = 1),"
                                   " count(*) FILTER (WHERE state = 2), (SELECT count(*) FROM batches) FROM jobs",
                                0, NULL, err);
    if (!r) return err ? err->code : SL_E_IO;
    q->queued = sl__pgv_i64(r, 0, 0);
    q->done = sl__pgv_i64(r, 0, 1);
    q->failed = sl__pgv_i64(r, 0, 2);
    q->batches = sl__pgv_i64(r, 0, 3);
    PQclear(r);
    return SL_OK;
}
