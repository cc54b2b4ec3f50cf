/*
 * engine/ingest.c - `shoplens add/sync/retrain`: a product feed (CSV or JSONL) into the store
 * with upsert semantics, parallel extraction and per-row failure reports.
 *
 * Pipeline: parse every row (grouping rows by product_id, first appearance order) -> train the
 * learned parts on a deterministic, evenly spaced sample of the feed's images if the store has
 * none -> worker threads read, hash and (unless the product already holds that content hash)
 * decode and describe each image, at most SL__INGEST_WINDOW images ahead of the committer ->
 * the calling thread commits products one by one in feed order (one transaction each).
 *
 * Invariants / crash safety: a product is counted only after its transaction is durable. Commits
 * happen in feed order and image ids are AUTOINCREMENT, training is deterministic for the
 * feed, and committed products are recognized by content hash and skipped on a re-run, so a
 * run killed at any point and then repeated ends in the same store as one uninterrupted run.
 */
#include "engine/engine_internal.h"
#include "catalog/catalog.h"
#include "util/util.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SL__INGEST_WINDOW 256
#define SL__INGEST_MAX_JOBS 256

typedef struct sl__task {
    size_t prod;            /* product index */
    size_t row;
    char *path;             /* resolved image path */
    int done;
    sl_status st;
    char *msg;
    sl__described d;
} sl__task;

typedef struct sl__prod {
    sl_product meta;
    size_t first_task, n_tasks; /* tasks are contiguous after grouping */
    int parse_failed;
    sl_image_ref *old;          /* stored images (for reuse by hash) */
    size_t n_old;
    int exists;
    sl_product cur;
} sl__prod;

typedef struct sl__ingest {
    sl_engine *e;
    sl__task *tasks;
    size_t n_tasks;
    sl__prod *prods;
    size_t n_prods;
    /* work distribution */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t next;            /* next task to take */
    size_t limit;           /* tasks below this may be taken */
    int stop;
    int train_only;         /* phase 1: only decode the sample (tasks[] = sample list) */
} sl__ingest;

void sl_ingest_report_free(sl_ingest_report *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n_failures; i++) {
        free(r->failures[i].product_id);
        free(r->failures[i].file);
        free(r->failures[i].message);
    }
    free(r->failures);
    free(r->calibration_error);
    memset(r, 0, sizeof *r);
}

static sl_status sl__report_fail(sl_ingest_report *r, size_t row, const char *pid, const char *file,
                                 sl_status st, const char *msg) {
    sl_ingest_failure *nf = sl__reallocarray(r->failures, r->n_failures + 1, sizeof *nf);
    if (!nf) return SL_E_NOMEM;
    r->failures = nf;
    sl_ingest_failure *f = &r->failures[r->n_failures++];
    f->row = row;
    f->product_id = pid && *pid ? sl__strdup(pid) : NULL;
    f->file = file ? sl__strdup(file) : NULL;
    f->status = st;
    f->message = sl__strdup(msg ? msg : sl_strerror(st));
    r->failed++;
    return SL_OK;
}

static int sl__cmp_failure(const void *a, const void *b) {
    const sl_ingest_failure *x = a, *y = b;
    return x->row < y->row ? -1 : x->row > y->row;
}

/* ---- a small string -> index hash map (FNV-1a, open addressing) ---------------------------- */

typedef struct sl__smap {
    size_t *slot; /* index + 1, 0 = empty */
    size_t cap;
} sl__smap;

static uint64_t sl__fnv(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* Finds key; returns the index or SIZE_MAX. names(i) gives the key of index i. */
static size_t sl__smap_find(const sl__smap *m, const char *key, const sl__prod *prods) {
    if (!m->cap) return SIZE_MAX;
    for (size_t i = sl__fnv(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (!m->slot[i]) return SIZE_MAX;
        if (strcmp(prods[m->slot[i] - 1].meta.id, key) == 0) return m->slot[i] - 1;
    }
}

static int sl__smap_put(sl__smap *m, size_t count, const sl__prod *prods, size_t idx) {
    if ((count + 1) * 2 > m->cap) {
        size_t nc = m->cap ? m->cap * 2 : 1024;
        size_t *ns = sl__callocarray(nc, sizeof *ns);
        if (!ns) return -1;
        for (size_t i = 0; i < m->cap; i++)
            if (m->slot[i]) {
                size_t j = sl__fnv(prods[m->slot[i] - 1].meta.id) & (nc - 1);
                while (ns[j]) j = (j + 1) & (nc - 1);
                ns[j] = m->slot[i];
            }
        free(m->slot);
        m->slot = ns;
        m->cap = nc;
    }
    size_t j = sl__fnv(prods[idx].meta.id) & (m->cap - 1);
    while (m->slot[j]) j = (j + 1) & (m->cap - 1);
    m->slot[j] = idx + 1;
    return 0;
}

/* ---- parsing ------------------------------------------------------------------------------- */

static int sl__parse_price(const char *t, double *out) {
    if (!t) return 0;
    while (*t == ' ') t++;
    if (!*t) return 0;
    char *end;
    errno = 0;
    double v = strtod(t, &end);
    while (*end == ' ') end++;
    if (errno || *end || !isfinite(v) || v < 0) return -1;
    *out = v;
    return 1;
}

static int sl__id_ok(const char *id) {
    if (!id || !*id || strlen(id) > SL_STORE_ID_MAX) return 0;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        if (*p < 0x20 || *p == 0x7f) return 0;
    return 1;
}

static char *sl__join(const char *dir, const char *rel) {
    if (rel[0] == '/') return sl__strdup(rel);
    size_t n = strlen(dir) + strlen(rel) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, rel);
    return p;
}

static void sl__set_if_empty(char **dst, const char *v) {
    if ((!*dst || !**dst) && v && *v) {
        free(*dst);
        *dst = sl__strdup(v);
    }
}

/* Raw rows before grouping. */
typedef struct sl__raw {
    size_t row, prod;
    char *path;
} sl__raw;

static sl_status sl__parse_feed(sl__ingest *in, const char *path, sl_ingest_report *rep,
                                sl_error *err) {
    sl_catalog_reader *r = NULL;
    sl_status st = sl_catalog_open(path, &r, err);
    if (st != SL_OK) return st;
    char *abs = realpath(path, NULL);
    char *dir = sl__strdup(abs ? abs : path);
    free(abs);
    if (!dir) {
        sl_catalog_close(r);
        return sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0'; else strcpy(dir, ".");
    sl__smap map = {0};
    sl__raw *raw = NULL;
    size_t n_raw = 0, cap_raw = 0, cap_prods = 0;
    for (;;) {
        sl_catalog_row row;
        sl_error rerr;
        sl_error_clear(&rerr);
        sl_status rs = sl_catalog_next(r, &row, &rerr);
        if (rs == SL_E_NOT_FOUND) break;
        if (rs == SL_E_NOMEM) {
            st = sl__err_set(err, rs, "%s", rerr.message);
            break;
        }
        rep->rows++;
        if (rs != SL_OK) {
            /* the row is unreadable: report it; its product (if any) is unknown */
            if (sl__report_fail(rep, row.row, NULL, NULL, rs, rerr.message) != SL_OK) goto nomem;
            continue;
        }
        const char *why = NULL;
        double price = 0;
        int has_price = 0;
        if (!row.product_id || !*row.product_id) why = "missing product_id";
        else if (!sl__id_ok(row.product_id)) why = "bad product_id (over 128 bytes or control characters)";
        else if (!row.image || !*row.image) why = "missing image";
        else if ((has_price = sl__parse_price(row.price_text, &price)) < 0) why = "bad price (not a non-negative number)";
        size_t pi = SIZE_MAX;
        if (row.product_id && sl__id_ok(row.product_id)) {
            pi = sl__smap_find(&map, row.product_id, in->prods);
            if (pi == SIZE_MAX) {
                if (in->n_prods == cap_prods) {
                    size_t nc = cap_prods ? cap_prods * 2 : 256;
                    sl__prod *np = sl__reallocarray(in->prods, nc, sizeof *np);
                    if (!np) goto nomem;
                    in->prods = np;
                    cap_prods = nc;
                }
                pi = in->n_prods;
                sl__prod *p = &in->prods[pi];
                memset(p, 0, sizeof *p);
                p->meta.id = sl__strdup(row.product_id);
                if (!p->meta.id) goto nomem;
                in->n_prods++;
                if (sl__smap_put(&map, in->n_prods, in->prods, pi) != 0) goto nomem;
            }
            sl__prod *p = &in->prods[pi];
            if (!why) {
                sl__set_if_empty(&p->meta.title, row.title);
                sl__set_if_empty(&p->meta.category, row.category);
                sl__set_if_empty(&p->meta.description, row.description);
                sl__set_if_empty(&p->meta.url, row.url);
                if (row.attrs_json && strcmp(row.attrs_json, "{}") != 0) sl__set_if_empty(&p->meta.attrs_json, row.attrs_json);
                if (has_price && !p->meta.has_price) {
                    p->meta.price = price;
                    p->meta.has_price = 1;
                }
            }
        }
        char *ipath = row.image && *row.image ? sl__join(dir, row.image) : NULL;
        if (why) {
            if (pi != SIZE_MAX) in->prods[pi].parse_failed = 1;
            sl_status fs = sl__report_fail(rep, row.row, row.product_id, ipath ? ipath : NULL,
                                           SL_E_INVALID, why);
            free(ipath);
            if (fs != SL_OK) goto nomem;
            continue;
        }
        if (!ipath) goto nomem;
        if (n_raw == cap_raw) {
            size_t nc = cap_raw ? cap_raw * 2 : 1024;
            sl__raw *nr = sl__reallocarray(raw, nc, sizeof *nr);
            if (!nr) {
                free(ipath);
                goto nomem;
            }
            raw = nr;
            cap_raw = nc;
        }
        raw[n_raw].row = row.row;
        raw[n_raw].prod = pi;
        raw[n_raw].path = ipath;
        n_raw++;
    }
    if (st == SL_OK) {
        /* group tasks by product (stable: feed order inside a product) */
        size_t *start = sl__callocarray(in->n_prods + 1, sizeof *start);
        in->tasks = sl__callocarray(n_raw + 1, sizeof *in->tasks);
        if (!start || !in->tasks) {
            free(start);
            goto nomem;
        }
        for (size_t i = 0; i < n_raw; i++) in->prods[raw[i].prod].n_tasks++;
        size_t acc = 0;
        for (size_t p = 0; p < in->n_prods; p++) {
            in->prods[p].first_task = acc;
            start[p] = acc;
            acc += in->prods[p].n_tasks;
        }
        for (size_t i = 0; i < n_raw; i++) {
            sl__task *t = &in->tasks[start[raw[i].prod]++];
            t->prod = raw[i].prod;
            t->row = raw[i].row;
            t->path = raw[i].path;
            raw[i].path = NULL;
        }
        in->n_tasks = n_raw;
        free(start);
    }
    goto out;
nomem:
    st = sl__err_set(err, SL_E_NOMEM, "out of memory reading %s", path);
out:
    for (size_t i = 0; i < n_raw; i++) free(raw[i].path);
    free(raw);
    free(map.slot);
    free(dir);
    sl_catalog_close(r);
    return st;
}

/* ---- workers ------------------------------------------------------------------------------- */

static void sl__task_fail(sl__task *t, sl_status st, const char *msg) {
    t->st = st;
    free(t->msg);
    t->msg = sl__strdup(msg);
}

/* Reads, hashes and (when needed) describes one image. */
static void sl__run_task(sl__ingest *in, sl__task *t) {
    sl_engine *e = in->e;
    sl_error err;
    sl_error_clear(&err);
    void *buf = NULL;
    size_t len = 0;
    sl_status st = sl__read_file(t->path, SL_IMAGE_MAX_BYTES_DEFAULT, &buf, &len, &err);
    if (st != SL_OK) {
        sl__task_fail(t, st, err.message);
        return;
    }
    sl__sha256_buffer(buf, len, t->d.hash);
    t->d.size = (int64_t)len;
    const sl__prod *p = &in->prods[t->prod];
    for (size_t i = 0; i < p->n_old; i++)
        if (strcmp(p->old[i].hash, t->d.hash) == 0) t->d.reuse = p->old[i].id;
    if (!t->d.reuse) {
        sl_image *img = NULL;
        st = sl__engine_decode(e, buf, len, &img, NULL, &err);
        if (st == SL_OK) st = sl__engine_describe(e, img, &t->d.vec, &t->d.local, &t->d.local_len, &err);
        sl_image_free(img);
        if (st != SL_OK) sl__task_fail(t, st, err.message);
    }
    free(buf);
}

static void *sl__worker(void *arg) {
    sl__ingest *in = arg;
    pthread_mutex_lock(&in->mu);
    for (;;) {
        while (!in->stop && in->next < in->n_tasks && in->next >= in->limit) pthread_cond_wait(&in->cv, &in->mu);
        if (in->stop || in->next >= in->n_tasks) break;
        sl__task *t = &in->tasks[in->next++];
        pthread_mutex_unlock(&in->mu);
        sl__run_task(in, t);
        pthread_mutex_lock(&in->mu);
        t->done = 1;
        pthread_cond_broadcast(&in->cv);
    }
    pthread_mutex_unlock(&in->mu);
    return NULL;
}

static int sl__jobs(int jobs) { return sl__jobs_or_cores(jobs); }

/* Decodes sample paths in parallel (for training). Unreadable ones are left NULL. */
static sl_status sl__decode_parallel(sl_engine *e, char **paths, size_t n, int jobs,
                                     sl_image ***out, sl_error *err) {
    *out = sl__callocarray(n + 1, sizeof **out);
    if (!*out) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    sl__decode_paths(paths, n, e->max_side, jobs, *out);
    return SL_OK;
}

/* Trains on an evenly spaced sample of up to `want` paths. */
static sl_status sl__train_on_paths(sl_engine *e, char **paths, size_t n, size_t want, int jobs,
                                    sl_error *err) {
    if (want == 0) want = SL_ENGINE_TRAIN_SAMPLE_DEFAULT;
    size_t m = n < want ? n : want;
    char **pick = sl__callocarray(m + 1, sizeof *pick);
    if (!pick) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    for (size_t i = 0; i < m; i++) pick[i] = paths[(size_t)((double)i * (double)n / (double)m)];
    sl_image **imgs = NULL;
    sl_status st = sl__decode_parallel(e, pick, m, jobs, &imgs, err);
    if (st == SL_OK) {
        size_t k = 0;
        for (size_t i = 0; i < m; i++)
            if (imgs[i]) imgs[k++] = imgs[i];
        /* nothing readable to learn from: every row will report its own image error */
        st = k ? sl__engine_train(e, (const sl_image *const *)imgs, k, err) : SL_OK;
        for (size_t i = 0; i < k; i++) sl_image_free(imgs[i]);
    }
    free(imgs);
    free(pick);
    return st;
}

/* ---- the ingest ---------------------------------------------------------------------------- */

static void sl__ingest_free(sl__ingest *in) {
    for (size_t i = 0; i < in->n_tasks; i++) {
        free(in->tasks[i].path);
        free(in->tasks[i].msg);
        sl__described_clear(&in->tasks[i].d);
    }
    free(in->tasks);
    for (size_t p = 0; p < in->n_prods; p++) {
        sl_product_clear(&in->prods[p].meta);
        sl_product_clear(&in->prods[p].cur);
        sl_image_refs_free(in->prods[p].old, in->prods[p].n_old);
    }
    free(in->prods);
}

/* Commits (or skips, or reports) product p whose tasks are all done. */
static sl_status sl__settle_product(sl__ingest *in, size_t pi, sl_ingest_report *rep,
                                    sl_error *err) {
    sl__prod *p = &in->prods[pi];
    sl__task *t = &in->tasks[p->first_task];
    int failed = p->parse_failed;
    for (size_t i = 0; i < p->n_tasks; i++)
        if (t[i].st != SL_OK) {
            failed = 1;
            if (sl__report_fail(rep, t[i].row, p->meta.id, t[i].path, t[i].st, t[i].msg) != SL_OK)
                return sl__err_set(err, SL_E_NOMEM, "out of memory");
        }
    if (failed) return SL_OK;
    /* distinct hashes, feed order */
    sl__described *d = sl__callocarray(p->n_tasks + 1, sizeof *d);
    const char **src = sl__callocarray(p->n_tasks + 1, sizeof *src);
    if (!d || !src) {
        free(d);
        free(src);
        return sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    size_t n = 0;
    for (size_t i = 0; i < p->n_tasks; i++) {
        int dup = 0;
        for (size_t j = 0; j < n && !dup; j++) dup = strcmp(d[j].hash, t[i].d.hash) == 0;
        if (dup) continue;
        d[n] = t[i].d; /* shallow: ownership stays with the task */
        src[n] = t[i].path;
        n++;
    }
    int same = p->exists && sl__product_equal(&p->cur, &p->meta) && n == p->n_old;
    for (size_t i = 0; same && i < n; i++) same = d[i].reuse > 0;
    sl_status st = SL_OK;
    if (same) {
        rep->skipped++;
    } else {
        for (size_t i = 0; i < n; i++) rep->images_extracted += d[i].reuse == 0;
        st = sl__engine_commit_product(in->e, &p->meta, src, d, n, 0, err);
        if (st == SL_OK) {
            if (p->exists) rep->updated++;
            else rep->added++;
        }
    }
    free(d);
    free(src);
    /* results are no longer needed */
    for (size_t i = 0; i < p->n_tasks; i++) sl__described_clear(&t[i].d);
    return st;
}

static sl_status sl__sync_remove(sl_engine *e, sl__ingest *in, sl_ingest_report *rep,
                                 sl_error *err) {
    char **ids = NULL;
    size_t n = 0;
    sl_status st = sl_store_product_ids(e->store, &ids, &n, err);
    if (st != SL_OK) return st;
    /* products named by the feed (including failed ones) stay */
    sl__smap map = {0};
    for (size_t p = 0; p < in->n_prods && st == SL_OK; p++)
        if (sl__smap_put(&map, p + 1, in->prods, p) != 0) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    for (size_t i = 0; i < n && st == SL_OK; i++) {
        if (sl__smap_find(&map, ids[i], in->prods) != SIZE_MAX) continue;
        int64_t *removed = NULL;
        size_t nr = 0;
        if ((st = sl_store_begin(e->store, err)) != SL_OK) break;
        if ((st = sl_store_remove_product(e->store, ids[i], &removed, &nr, err)) != SL_OK ||
            (st = sl__engine_bump(e, err)) != SL_OK) {
            sl_store_rollback(e->store);
            free(removed);
            break;
        }
        pthread_rwlock_wrlock(&e->lock);
        st = sl_store_commit(e->store, err);
        if (st == SL_OK) {
            sl__engine_committed(e);
            for (size_t j = 0; j < nr && e->idx; j++) (void)sl_index_remove(e->idx, (uint64_t)removed[j]);
            e->index_dirty = 1;
            rep->removed++;
        }
        pthread_rwlock_unlock(&e->lock);
        free(removed);
    }
    free(map.slot);
    sl_strings_free(ids, n);
    return st;
}

sl_status sl_engine_ingest(sl_engine *e, const char *catalog_path, const sl_ingest_opts *opts,
                           sl_ingest_report *rep, sl_error *err) {
    memset(rep, 0, sizeof *rep);
    sl_ingest_opts o;
    memset(&o, 0, sizeof o);
    if (opts) o = *opts;
    if (e->read_only) return sl__err_set(err, SL_E_STATE, "engine opened read-only");
    double t0 = sl__now();
    sl__ingest in;
    memset(&in, 0, sizeof in);
    in.e = e;
    pthread_mutex_lock(&e->wmu);
    sl_status st = sl__parse_feed(&in, catalog_path, rep, err);
    if (st != SL_OK) goto out;
    rep->products = in.n_prods;
    /* stored state of each product */
    for (size_t p = 0; p < in.n_prods && st == SL_OK; p++) {
        sl__prod *pr = &in.prods[p];
        pr->exists = sl_store_get_product(e->store, pr->meta.id, &pr->cur, NULL) == SL_OK;
        if (pr->exists) st = sl_store_product_images(e->store, pr->meta.id, &pr->old, &pr->n_old, err);
    }
    if (st != SL_OK) goto out;
    /* first ingest: learn the codebook / PCA from a sample of this feed */
    if (!sl_features_ready(e->feat) && in.n_tasks > 0) {
        char **paths = sl__callocarray(in.n_tasks + 1, sizeof *paths);
        size_t np = 0;
        if (!paths) {
            st = sl__err_set(err, SL_E_NOMEM, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < in.n_tasks; i++)
            if (!in.prods[in.tasks[i].prod].parse_failed) paths[np++] = in.tasks[i].path;
        st = np ? sl__train_on_paths(e, paths, np, o.train_sample, o.jobs, err) : SL_OK;
        free(paths);
        if (st != SL_OK) goto out;
    }
    /* extraction workers + in-order commits */
    pthread_mutex_init(&in.mu, NULL);
    pthread_cond_init(&in.cv, NULL);
    in.limit = SL__INGEST_WINDOW;
    int nt = sl__jobs(o.jobs);
    pthread_t th[SL__INGEST_MAX_JOBS];
    int started = 0;
    for (int i = 0; i < nt; i++)
        if (pthread_create(&th[started], NULL, sl__worker, &in) == 0) started++;
    if (started == 0) {
        st = sl__err_set(err, SL_E_INTERNAL, "cannot start worker threads");
    }
    double last = 0, t1 = sl__now(); /* the rate counts extraction, not training */
    if (o.progress && in.n_prods) o.progress(o.progress_ctx, 0, in.n_prods, 0);
    for (size_t p = 0; p < in.n_prods && st == SL_OK; p++) {
        if (o.cancel && *o.cancel) {
            st = sl__err_set(err, SL_E_INTERRUPTED, "interrupted after %zu of %zu products", p, in.n_prods);
            break;
        }
        sl__prod *pr = &in.prods[p];
        size_t end = pr->first_task + pr->n_tasks;
        pthread_mutex_lock(&in.mu);
        for (size_t i = pr->first_task; i < end; i++)
            while (!in.tasks[i].done) pthread_cond_wait(&in.cv, &in.mu);
        pthread_mutex_unlock(&in.mu);
        st = sl__settle_product(&in, p, rep, err);
        pthread_mutex_lock(&in.mu);
        in.limit = end + SL__INGEST_WINDOW;
        pthread_cond_broadcast(&in.cv);
        pthread_mutex_unlock(&in.mu);
        double now = sl__now();
        if (o.progress && (now - last >= 0.1 || p + 1 == in.n_prods)) {
            o.progress(o.progress_ctx, p + 1, in.n_prods, now - t1);
            last = now;
        }
    }
    pthread_mutex_lock(&in.mu);
    in.stop = 1;
    pthread_cond_broadcast(&in.cv);
    pthread_mutex_unlock(&in.mu);
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    pthread_cond_destroy(&in.cv);
    pthread_mutex_destroy(&in.mu);
    if (st == SL_OK && o.sync) st = sl__sync_remove(e, &in, rep, err);
    /* an "auto" store that grew past the threshold switches to HNSW */
    if (st == SL_OK && e->idx && strcmp(e->index_kind, "auto") == 0 &&
        sl_index_kind_of(e->idx) == SL_INDEX_FLAT && sl_index_count(e->idx) > SL__ENGINE_HNSW_ABOVE) {
        pthread_rwlock_wrlock(&e->lock);
        st = sl__engine_rebuild_index(e, err);
        pthread_rwlock_unlock(&e->lock);
    }
    if (st == SL_OK) st = sl__engine_save_index(e, err);
    else (void)sl__engine_save_index(e, NULL);
    /* the catalog calibration, when due: its failure leaves the committed products as they are */
    if (st == SL_OK && sl__engine_calib_due(e, 1)) {
        sl_calibrate_opts co;
        memset(&co, 0, sizeof co);
        co.jobs = o.jobs;
        co.cancel = o.cancel;
        co.progress = o.calib_progress;
        co.progress_ctx = o.calib_progress_ctx;
        sl_error cerr;
        sl_error_clear(&cerr);
        if (sl__engine_calibrate(e, &co, NULL, &cerr) == SL_OK) rep->calibrated = 1;
        else rep->calibration_error = sl__strdup(cerr.message[0] ? cerr.message : sl_strerror(cerr.code));
    }
out:
    pthread_mutex_unlock(&e->wmu);
    sl__ingest_free(&in);
    if (rep->n_failures > 1) qsort(rep->failures, rep->n_failures, sizeof *rep->failures, sl__cmp_failure);
    rep->seconds = sl__now() - t0;
    return st;
}

/* ---- retrain ------------------------------------------------------------------------------- */

sl_status sl_engine_retrain(sl_engine *e, const sl_ingest_opts *opts, sl_error *err) {
    sl_ingest_opts o;
    memset(&o, 0, sizeof o);
    if (opts) o = *opts;
    if (e->read_only) return sl__err_set(err, SL_E_STATE, "engine opened read-only");
    pthread_mutex_lock(&e->wmu);
    double t0 = sl__now();
    sl_image_ref *refs = NULL;
    size_t n = 0;
    sl_features *f = NULL, *oldf = NULL;
    char **paths = NULL;
    sl_status st = sl_store_all_images(e->store, &refs, &n, err);
    if (st != SL_OK) goto out;
    if (n == 0) {
        st = sl__err_set(err, SL_E_STATE, "the store has no image to learn from");
        goto out;
    }
    paths = sl__callocarray(n + 1, sizeof *paths);
    if (!paths) {
        st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) paths[i] = refs[i].source;
    /* learn into a new versioned file; nothing changes for readers yet */
    size_t want = o.train_sample ? o.train_sample : SL_ENGINE_TRAIN_SAMPLE_DEFAULT;
    size_t m = n < want ? n : want;
    char **pick = sl__callocarray(m + 1, sizeof *pick);
    sl_image **imgs = NULL;
    if (!pick) {
        st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < m; i++) pick[i] = paths[(size_t)((double)i * (double)n / (double)m)];
    st = sl__decode_parallel(e, pick, m, o.jobs, &imgs, err);
    free(pick);
    if (st != SL_OK) goto out;
    size_t k = 0;
    for (size_t i = 0; i < m; i++)
        if (imgs[i]) imgs[k++] = imgs[i];
    int64_t version = e->features_version + 1;
    st = sl__engine_train_new(e, (const sl_image *const *)imgs, k, version, &f, err);
    for (size_t i = 0; i < k; i++) sl_image_free(imgs[i]);
    free(imgs);
    if (st != SL_OK) goto out;
    /* re-describe every image with the new features, in one transaction */
    oldf = e->feat;
    sl_engine tmp = *e; /* a view with the new features for sl__engine_describe */
    tmp.feat = f;
    if ((st = sl_store_begin(e->store, err)) != SL_OK) goto out;
    for (size_t i = 0; i < n && st == SL_OK; i++) {
        void *buf = NULL;
        size_t len = 0;
        sl_image *img = NULL;
        float *vec = NULL;
        void *local = NULL;
        size_t llen = 0;
        st = sl__read_file(refs[i].source, SL_IMAGE_MAX_BYTES_DEFAULT, &buf, &len, err);
        if (st == SL_OK) st = sl__engine_decode(&tmp, buf, len, &img, NULL, err);
        if (st == SL_OK) st = sl__engine_describe(&tmp, img, &vec, &local, &llen, err);
        if (st == SL_OK)
            st = sl_store_set_image_features(e->store, refs[i].id, vec, sl_features_dim(f), local, llen, err);
        if (st != SL_OK) sl__err_prefix(err, "image %lld (%s)", (long long)refs[i].id, refs[i].source);
        free(buf);
        sl_image_free(img);
        free(vec);
        free(local);
        if (o.progress && (i + 1 == n || (i & 15) == 0)) o.progress(o.progress_ctx, i + 1, n, sl__now() - t0);
        if (o.cancel && *o.cancel && st == SL_OK) st = sl__err_set(err, SL_E_INTERRUPTED, "interrupted");
    }
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", (long long)version);
    if (st == SL_OK) st = sl_store_meta_set(e->store, "features_version", buf, err);
    if (st == SL_OK) st = sl__engine_bump(e, err);
    if (st != SL_OK) {
        sl_store_rollback(e->store);
        goto out;
    }
    pthread_rwlock_wrlock(&e->lock);
    st = sl_store_commit(e->store, err);
    if (st == SL_OK) {
        e->feat = f;
        f = NULL;
        e->features_version = version;
        sl__engine_committed(e);
        st = sl__engine_rebuild_index(e, err);
    } else {
        oldf = NULL;
    }
    pthread_rwlock_unlock(&e->lock);
    if (st == SL_OK) {
        char *old = sl__engine_features_path(e, version - 1);
        if (old) unlink(old);
        free(old);
        st = sl__engine_save_index(e, err);
    }
    if (st == SL_OK && sl__engine_calib_due(e, 0)) { /* the new features have no calibration yet */
        sl_calibrate_opts co;
        memset(&co, 0, sizeof co);
        co.jobs = o.jobs;
        co.cancel = o.cancel;
        (void)sl__engine_calibrate(e, &co, NULL, NULL);
    }
out:
    if (oldf && e->feat != oldf) {
        pthread_rwlock_wrlock(&e->lock);
        sl__engine_retire_features(e, oldf);
        pthread_rwlock_unlock(&e->lock);
    }
    sl_features_free(f);
    free(paths);
    sl_image_refs_free(refs, n);
    pthread_mutex_unlock(&e->wmu);
    return st;
}
