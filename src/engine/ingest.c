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
 * Workers also write the store's copy of each new image (content-addressed, so a re-run writes
 * the same names); a copy whose row never committed is an orphan that `shoplens verify` lists.
 * A sync decides what it would remove before it changes anything, and refuses (nothing
 * written) a feed without rows or one that would remove more than the bound. A dry run goes
 * through the same reading, hashing and decoding and the same decisions, and writes nothing.
 * When the first training fails, every row is still read and decoded, so the report names the
 * rows that failed on their own (often the reason too few images were left to learn from).
 * Image URLs (http, https) are downloaded first, all distinct ones, `jobs` at once, into a
 * private directory of the store (remote.c); a row whose download failed is reported with the
 * URL and the reason, the others go on like rows of local images (the URL is their origin).
 * A row's additional images (Google Merchant's additional_image_link) are more images of its
 * product, reported under the same row.
 */
#include "engine/engine_internal.h"
#include "catalog/catalog.h"
#include "catalog/fetch.h"
#include "catalog/pg.h"
#include "catalog/price.h"
#include "util/util.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SL__INGEST_WINDOW 256
#define SL__INGEST_MAX_JOBS 256

typedef struct sl__task {
    size_t prod;            /* product index */
    size_t row;
    char *path;             /* resolved image path, or its URL */
    char *local;            /* the downloaded file of a URL (read instead of path), or NULL */
    int done;
    sl_status st;
    char *msg;
    sl__described d;
    void *bytes;            /* cluster store: the image's bytes for the job (NULL when kept) */
    size_t len;
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
    int dry_run;            /* decode only, write nothing */
    int no_describe;        /* dry run, or the training failed: read + decode only */
    int enqueue;            /* a cluster store: products go to the job queue for the workers */
    int64_t batch;          /* ... as this batch */
    size_t queued;          /* jobs queued */
    const char *train_error;/* why the training failed (rows are reported with it) */
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
    sl_strings_free(r->added_ids.ids, r->added_ids.n);
    sl_strings_free(r->updated_ids.ids, r->updated_ids.n);
    sl_strings_free(r->removed_ids.ids, r->removed_ids.n);
    free(r->refused);
    memset(r, 0, sizeof *r);
}

static int sl__idlist_add(sl_id_list *l, const char *id) {
    char **nv = sl__reallocarray(l->ids, l->n + 1, sizeof *nv);
    if (!nv) return -1;
    l->ids = nv;
    if (!(nv[l->n] = sl__strdup(id))) return -1;
    l->n++;
    return 0;
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

#define SL__WHY_MAX 256

/* A row's failure sentence formatted into buf (for reasons that quote the row). */
static const char *sl__why(char buf[SL__WHY_MAX], const char *fmt, ...) SL__PRINTF(2, 3);
static const char *sl__why(char buf[SL__WHY_MAX], const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, SL__WHY_MAX, fmt, ap);
    va_end(ap);
    return buf;
}

/* Where a row's image is: a URL as is, a path relative to the feed's directory. */
static char *sl__join(const char *dir, const char *rel) {
    if (rel[0] == '/' || sl__is_url(rel)) return sl__strdup(rel);
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

/* Appends an image of a row; takes path (freed on failure). Returns 0, or -1 out of memory. */
static int sl__raw_add(sl__raw **raw, size_t *n, size_t *cap, size_t row, size_t prod, char *path) {
    if (!path) return -1;
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 1024;
        sl__raw *nr = sl__reallocarray(*raw, nc, sizeof *nr);
        if (!nr) {
            free(path);
            return -1;
        }
        *raw = nr;
        *cap = nc;
    }
    (*raw)[*n].row = row;
    (*raw)[*n].prod = prod;
    (*raw)[*n].path = path;
    (*n)++;
    return 0;
}

static sl_status sl__parse_feed(sl__ingest *in, const char *path, const char *currency,
                                sl_ingest_report *rep, sl_error *err) {
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
        char cur[SL_PRODUCT_CURRENCY_LEN + 1] = "", price_cur[4] = "";
        /* the currency: its own column, else the price's ("12.99 USD"), else the default */
        const char *cur_text = row.currency && *row.currency ? row.currency : NULL;
        const char *bad_id = row.product_id && *row.product_id ? sl_product_id_check(row.product_id) : NULL;
        char whybuf[SL__WHY_MAX];
        if (!row.product_id || !*row.product_id) why = "missing product_id";
        else if (bad_id) why = sl__why(whybuf, "bad product_id: it %s", bad_id);
        else if (row.not_utf8)
            why = sl__why(whybuf, "column '%s' is not UTF-8 text (save the feed as UTF-8)", row.not_utf8);
        else if (!row.image || !*row.image) why = "missing image";
        else if ((has_price = sl__price_parse(row.price_text, &price, price_cur, &why)) < 0) (void)0;
        else if (!sl_product_currency_valid(cur_text ? cur_text : price_cur[0] ? price_cur : currency, cur))
            why = "bad currency (must be a three-letter ISO 4217 code such as USD or EUR)";
        else if (cur_text && price_cur[0] && strcmp(cur, price_cur) != 0)
            why = "the price's currency differs from the currency column";
        size_t pi = SIZE_MAX;
        if (row.product_id && *row.product_id && !bad_id) {
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
                sl__set_if_empty(&p->meta.currency, cur);
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
        if (sl__raw_add(&raw, &n_raw, &cap_raw, row.row, pi, ipath) != 0) goto nomem;
        /* more images of the product in this row (comma-separated) */
        for (const char *m = row.more_images ? row.more_images : ""; *m;) {
            size_t l = strcspn(m, ",");
            const char *a = m, *b = m + l;
            while (a < b && (*a == ' ' || *a == '\t')) a++;
            while (b > a && (b[-1] == ' ' || b[-1] == '\t')) b--;
            m += l + (m[l] == ',');
            if (a == b) continue;
            char *one = malloc((size_t)(b - a) + 1);
            if (!one) goto nomem;
            memcpy(one, a, (size_t)(b - a));
            one[b - a] = '\0';
            char *mpath = sl__join(dir, one);
            free(one);
            if (sl__raw_add(&raw, &n_raw, &cap_raw, row.row, pi, mpath) != 0) goto nomem;
        }
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

/* Reads, hashes and (when needed) describes one image and writes the store's copy of it. */
static void sl__run_task(sl__ingest *in, sl__task *t) {
    sl_engine *e = in->e;
    sl_error err;
    sl_error_clear(&err);
    void *buf = NULL;
    size_t len = 0;
    if (t->st != SL_OK) return; /* its download failed */
    sl_status st = sl__read_file(t->local ? t->local : t->path, SL_IMAGE_MAX_BYTES_DEFAULT, &buf, &len, &err);
    if (st != SL_OK) {
        sl__task_fail(t, st, err.message);
        return;
    }
    sl__sha256_buffer(buf, len, t->d.hash);
    t->d.size = (int64_t)len;
    t->d.origin = t->path;
    const sl__prod *p = &in->prods[t->prod];
    for (size_t i = 0; i < p->n_old; i++)
        if (sl__image_same_bytes(&p->old[i], t->d.hash)) t->d.reuse = p->old[i].id;
    if (in->enqueue) { /* the workers decode and describe */
        if (!t->d.reuse) {
            t->bytes = buf;
            t->len = len;
            buf = NULL;
        }
        free(buf);
        return;
    }
    if (!t->d.reuse) {
        sl_image *img = NULL;
        sl_image_info info;
        st = sl__engine_decode(e, buf, len, &img, &info, &err);
        if (st == SL_OK && !in->no_describe) {
            st = sl__engine_describe(e, img, &t->d.vec, &t->d.local, &t->d.local_len, &err);
            if (st == SL_OK) st = sl__engine_keep_copy(e, buf, len, &info, t->d.file, &err);
        }
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
        if (st != SL_OK)
            sl__err_prefix(err, "%zu of the %zu sampled images could be read", k, m);
        for (size_t i = 0; i < k; i++) sl_image_free(imgs[i]);
    }
    free(imgs);
    free(pick);
    return st;
}

/* ---- the ingest ---------------------------------------------------------------------------- */

static sl_status sl__status_named(const char *name) {
    for (int s = 0; s >= SL_E_INTERRUPTED; s--)
        if (strcmp(sl_status_name(s), name) == 0) return (sl_status)s;
    return SL_E_IO;
}

/* Seconds a cluster ingest waits for its jobs with no live worker before it gives up (the jobs
 * stay queued). */
#define SL__INGEST_NO_WORKER_S 30.0

/* Nonzero when some worker's heartbeat is recent. */
static int sl__workers_alive(sl_store *s) {
    sl__pg *p = sl__store_pg(s);
    sl__pgc *c = sl__pg_acquire_reader(p);
    sl__node_row *v = NULL;
    size_t n = 0;
    int alive = 0;
    if (sl__nodes_list(c, &v, &n, NULL) == SL_OK)
        for (size_t i = 0; i < n; i++) alive |= strcmp(v[i].role, "worker") == 0 && v[i].age_s < 10.0;
    else
        alive = 1; /* cannot tell: keep waiting */
    sl__pg_release(p, c);
    sl__node_rows_free(v, n);
    return alive;
}

/* Cluster store: waits until the workers finished every job of the batch (progress counts them
 * on top of `settled`, the products that needed no job), then counts their outcomes. */
static sl_status sl__ingest_wait(sl__ingest *in, const sl_ingest_opts *o, size_t settled, double t1,
                                 sl_ingest_report *rep, sl_error *err) {
    sl_store *s = in->e->store;
    double seen_worker = sl__now(), checked = 0;
    sl_status st = SL_OK;
    for (;;) {
        sl__batch_status bs;
        st = sl__jobs_batch_status(s, in->batch, &bs, err);
        if (st == SL_E_BUSY) { /* PostgreSQL restarting: the jobs are safe, keep waiting */
            (void)sl__jobs_wait(s, "shoplens_done", 1.0);
            continue;
        }
        if (st != SL_OK) return st;
        size_t fin = (size_t)(bs.done + bs.failed);
        if (o->progress) o->progress(o->progress_ctx, settled + fin, in->n_prods, sl__now() - t1);
        if (fin >= (size_t)bs.total) break;
        if (o->cancel && *o->cancel)
            return sl__err_set(err, SL_E_INTERRUPTED, "stopped waiting after %zu of %zu products; the other %lld "
                               "stay queued and the workers finish them ('shoplens info' shows the queue)",
                               settled + fin, in->n_prods, (long long)(bs.total - (int64_t)fin));
        double now = sl__now();
        if (now - checked >= 2.0) {
            checked = now;
            if (sl__workers_alive(s)) seen_worker = now;
            else if (now - seen_worker >= SL__INGEST_NO_WORKER_S)
                return sl__err_set(err, SL_E_STATE, "no worker has been alive for %.0f s: %lld products wait in the "
                                   "queue (they stay queued); start 'shoplens worker --store %s' on any machine",
                                   SL__INGEST_NO_WORKER_S, (long long)(bs.total - (int64_t)fin), sl_store_dir(s));
        }
        (void)sl__jobs_wait(s, "shoplens_done", 0.5);
    }
    sl__job_result *res = NULL;
    size_t n = 0;
    if ((st = sl__jobs_batch_results(s, in->batch, &res, &n, err)) != SL_OK) return st;
    for (size_t i = 0; i < n && st == SL_OK; i++) {
        const sl__job_result *r = &res[i];
        if (r->state == SL__JOB_FAILED) {
            if (sl__report_fail(rep, r->row, r->product_id, r->file, sl__status_named(r->status), r->message) != SL_OK)
                st = sl__err_set(err, SL_E_NOMEM, "out of memory");
            continue;
        }
        if (r->outcome == SL__JOB_UNCHANGED) {
            rep->skipped++;
            continue;
        }
        int upd = r->outcome == SL__JOB_UPDATED;
        if (upd) rep->updated++;
        else rep->added++;
        if (sl__idlist_add(upd ? &rep->updated_ids : &rep->added_ids, r->product_id) != 0)
            st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    sl__job_results_free(res, n);
    return st;
}

static void sl__ingest_free(sl__ingest *in) {
    for (size_t i = 0; i < in->n_tasks; i++) {
        free(in->tasks[i].path);
        free(in->tasks[i].local);
        free(in->tasks[i].msg);
        free(in->tasks[i].bytes);
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
    if (in->train_error && !failed) {
        /* readable rows of a product that cannot be described: named with the reason */
        char msg[SL_ERROR_MSG_MAX + 64];
        snprintf(msg, sizeof msg, "not added: the features could not be trained (%s)", in->train_error);
        for (size_t i = 0; i < p->n_tasks; i++)
            if (sl__report_fail(rep, t[i].row, p->meta.id, t[i].path, SL_E_STATE, msg) != SL_OK)
                return sl__err_set(err, SL_E_NOMEM, "out of memory");
        return SL_OK;
    }
    if (failed) return SL_OK;
    /* distinct hashes, feed order */
    sl__described *d = sl__callocarray(p->n_tasks + 1, sizeof *d);
    const char **src = sl__callocarray(p->n_tasks + 1, sizeof *src);
    size_t *from = sl__callocarray(p->n_tasks + 1, sizeof *from);
    if (!d || !src || !from) {
        free(d);
        free(src);
        free(from);
        return sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    size_t n = 0;
    for (size_t i = 0; i < p->n_tasks; i++) {
        int dup = 0;
        for (size_t j = 0; j < n && !dup; j++) dup = strcmp(d[j].hash, t[i].d.hash) == 0;
        if (dup) continue;
        d[n] = t[i].d; /* shallow: ownership stays with the task */
        src[n] = t[i].path;
        from[n] = i;
        n++;
    }
    int same = p->exists && sl__product_equal(&p->cur, &p->meta) && n == p->n_old;
    for (size_t i = 0; same && i < n; i++) same = d[i].reuse > 0;
    sl_status st = SL_OK;
    if (same) {
        rep->skipped++;
    } else if (in->enqueue) {
        /* the workers commit it; the outcome is counted when they are done */
        sl__job_image *ji = sl__callocarray(n + 1, sizeof *ji);
        if (!ji) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        for (size_t i = 0; ji && i < n; i++) {
            const sl__task *ti = &t[from[i]];
            ji[i].row = ti->row;
            ji[i].source = ti->path;
            memcpy(ji[i].hash, ti->d.hash, sizeof ji[i].hash);
            ji[i].size = ti->d.size;
            ji[i].data = ti->d.reuse ? NULL : ti->bytes;
            ji[i].len = ti->d.reuse ? 0 : ti->len;
        }
        if (st == SL_OK) st = sl__jobs_add(in->e->store, in->batch, &p->meta, ji, n, err);
        if (st == SL_OK) in->queued++;
        for (size_t i = 0; st == SL_OK && i < n; i++) rep->images_extracted += ji[i].data != NULL;
        free(ji);
    } else {
        if (!in->dry_run) {
            for (size_t i = 0; i < n; i++) rep->images_extracted += d[i].reuse == 0;
            st = sl__engine_commit_product(in->e, &p->meta, src, d, n, 0, err);
        }
        if (st == SL_OK) {
            if (p->exists) rep->updated++;
            else rep->added++;
            if (sl__idlist_add(p->exists ? &rep->updated_ids : &rep->added_ids, p->meta.id) != 0)
                st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        }
    }
    free(d);
    free(src);
    free(from);
    /* results are no longer needed */
    for (size_t i = 0; i < p->n_tasks; i++) {
        sl__described_clear(&t[i].d);
        free(t[i].bytes);
        t[i].bytes = NULL;
    }
    return st;
}

/* The stored products a sync would remove: those the feed does not name (products whose rows
 * failed are named, so they stay). *gone (sorted ids) is freed with sl_strings_free. */
static sl_status sl__sync_plan(sl_engine *e, sl__ingest *in, char ***gone, size_t *n_gone,
                               size_t *n_stored, sl_error *err) {
    *gone = NULL;
    *n_gone = 0;
    char **ids = NULL;
    size_t n = 0;
    sl_status st = sl_store_product_ids(e->store, &ids, &n, err);
    if (st != SL_OK) return st;
    *n_stored = n;
    sl__smap map = {0};
    for (size_t p = 0; p < in->n_prods && st == SL_OK; p++)
        if (sl__smap_put(&map, p + 1, in->prods, p) != 0) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    size_t w = 0;
    for (size_t i = 0; i < n && st == SL_OK; i++) {
        if (sl__smap_find(&map, ids[i], in->prods) != SIZE_MAX) {
            free(ids[i]);
            continue;
        }
        ids[w++] = ids[i];
    }
    free(map.slot);
    if (st != SL_OK) {
        sl_strings_free(ids, n);
        return st;
    }
    *gone = ids;
    *n_gone = w;
    return SL_OK;
}

/* Refuses a sync that would remove more than its bound (nothing is written yet). */
static sl_status sl__sync_bound(const sl_ingest_opts *o, const sl_ingest_report *rep,
                                size_t n_prods, size_t n_gone, size_t n_stored, sl_error *err) {
    if (rep->rows == 0 && n_stored > 0)
        return sl__err_set(err, SL_E_INVALID, "the feed has no rows: a sync would remove all %zu "
                           "products; refused (to empty the store, remove the products)", n_stored);
    if (n_prods == 0 && n_stored > 0)
        return sl__err_set(err, SL_E_INVALID, "none of the feed's %zu rows names a product: a sync "
                           "would remove all %zu products; refused", rep->rows, n_stored);
    size_t max;
    char how[96];
    if (o->max_removals_set) {
        max = o->max_removals;
        snprintf(how, sizeof how, "%zu", max);
    } else {
        double pct = o->max_removals_percent > 0 ? o->max_removals_percent : SL_ENGINE_SYNC_MAX_REMOVALS_PERCENT_DEFAULT;
        if (pct > 100) pct = 100;
        max = (size_t)ceil((double)n_stored * pct / 100.0 - 1e-9);
        snprintf(how, sizeof how, "%g%% of %zu = %zu", pct, n_stored, max);
    }
    if (n_gone <= max) return SL_OK;
    double share = n_stored ? 100.0 * (double)n_gone / (double)n_stored : 0;
    return sl__err_set(err, SL_E_STATE, "the feed would remove %zu of the %zu stored products "
                       "(%.0f%%), more than the limit (%s); nothing was changed. Check the feed "
                       "(truncated?), look with --dry-run, or allow it with --max-removals %zu",
                       n_gone, n_stored, share, how, n_gone);
}

static sl_status sl__sync_remove(sl_engine *e, char **gone, size_t n_gone, sl_ingest_report *rep,
                                 sl_error *err) {
    sl_status st = SL_OK;
    for (size_t i = 0; i < n_gone && st == SL_OK; i++) {
        int64_t *removed = NULL;
        size_t nr = 0;
        if ((st = sl_store_begin(e->store, err)) != SL_OK) break;
        st = sl_store_remove_product(e->store, gone[i], &removed, &nr, err);
        if (st == SL_E_NOT_FOUND) { /* removed meanwhile by someone else */
            sl_store_rollback(e->store);
            st = SL_OK;
            if (err) sl_error_clear(err);
            continue;
        }
        if (st != SL_OK || (st = sl__engine_bump(e, err)) != SL_OK) {
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
        if (st == SL_OK && sl__idlist_add(&rep->removed_ids, gone[i]) != 0)
            st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    sl__engine_gc(e);
    return st;
}

static int sl__cmp_task_path(const void *a, const void *b, void *ctx) {
    const sl__task *t = ctx;
    return strcmp(t[*(const size_t *)a].path, t[*(const size_t *)b].path);
}

/* Downloads the distinct image URLs of the tasks (all rows, so each failure is reported with
 * its row): a task of a URL gets its local file, or its failure. */
static sl_status sl__ingest_fetch(sl__ingest *in, const sl_ingest_opts *o, char **downloads,
                                  sl_error *err) {
    size_t n = 0;
    for (size_t i = 0; i < in->n_tasks; i++) n += sl__is_url(in->tasks[i].path) != 0;
    if (n == 0) return SL_OK;
    size_t *idx = sl__mallocarray(n, sizeof *idx);
    const char **urls = sl__callocarray(n, sizeof *urls);
    size_t *first = sl__mallocarray(n, sizeof *first);   /* url slot of each idx entry */
    char **local = sl__callocarray(n, sizeof *local);
    char **msg = sl__callocarray(n, sizeof *msg);
    sl_status *st = sl__callocarray(n, sizeof *st);
    sl_status rs = SL_OK;
    if (!idx || !urls || !first || !local || !msg || !st) {
        rs = sl__err_set(err, SL_E_NOMEM, "out of memory");
        goto done;
    }
    n = 0;
    for (size_t i = 0; i < in->n_tasks; i++)
        if (sl__is_url(in->tasks[i].path)) idx[n++] = i;
    qsort_r(idx, n, sizeof *idx, sl__cmp_task_path, in->tasks);
    size_t nu = 0;
    for (size_t k = 0; k < n; k++) {
        if (k == 0 || strcmp(in->tasks[idx[k]].path, urls[nu - 1]) != 0) urls[nu++] = in->tasks[idx[k]].path;
        first[k] = nu - 1;
    }
    sl__fetch_opts fo;
    sl__fetch_opts_init(&fo);
    if (o->fetch_timeout_s > 0) fo.timeout_s = o->fetch_timeout_s;
    if (fo.connect_timeout_s > fo.timeout_s) fo.connect_timeout_s = fo.timeout_s;
    fo.retries = o->fetch_retries_set ? o->fetch_retries : SL_ENGINE_FETCH_RETRIES_DEFAULT;
    fo.parallel = o->jobs > 0 ? o->jobs : SL_ENGINE_FETCH_PARALLEL_DEFAULT;
    rs = sl__remote_fetch(in->e, urls, nu, &fo, o->fetch_progress, o->fetch_progress_ctx, o->cancel,
                          downloads, local, st, msg, err);
    for (size_t k = 0; k < n && rs == SL_OK; k++) {
        sl__task *t = &in->tasks[idx[k]];
        size_t u = first[k];
        if (st[u] != SL_OK) sl__task_fail(t, st[u], msg[u]);
        else if (!(t->local = sl__strdup(local[u]))) rs = sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
done:
    for (size_t u = 0; local && msg && u < n; u++) {
        free(local[u]);
        free(msg[u]);
    }
    free(idx);
    free(urls);
    free(first);
    free(local);
    free(msg);
    free(st);
    return rs;
}

sl_status sl_engine_ingest(sl_engine *e, const char *catalog_path, const sl_ingest_opts *opts,
                           sl_ingest_report *rep, sl_error *err) {
    memset(rep, 0, sizeof *rep);
    sl_ingest_opts o;
    memset(&o, 0, sizeof o);
    if (opts) o = *opts;
    if (e->read_only && !o.dry_run) return sl__err_set(err, SL_E_STATE, "engine opened read-only");
    if (!sl_product_currency_valid(o.currency, NULL))
        return sl__err_set(err, SL_E_INVALID, "bad currency '%.16s' (a three-letter ISO 4217 code such as USD)", o.currency);
    double t0 = sl__now();
    sl__ingest in;
    memset(&in, 0, sizeof in);
    in.e = e;
    in.dry_run = in.no_describe = o.dry_run != 0;
    rep->dry_run = in.dry_run;
    char **gone = NULL;
    char *downloads = NULL; /* the directory of downloaded images, removed at the end */
    size_t n_gone = 0, n_stored = 0;
    sl_error terr;
    sl_error_clear(&terr);
    pthread_mutex_lock(&e->wmu);
    sl_status st = sl__parse_feed(&in, catalog_path, o.currency, rep, err);
    if (st != SL_OK) goto out;
    rep->products = in.n_prods;
    /* a sync decides what it removes, and whether it may, before it writes anything */
    if (o.sync) {
        if ((st = sl__sync_plan(e, &in, &gone, &n_gone, &n_stored, err)) != SL_OK) goto out;
        sl_error berr;
        sl_error_clear(&berr);
        if ((st = sl__sync_bound(&o, rep, in.n_prods, n_gone, n_stored, &berr)) != SL_OK) {
            if (!in.dry_run) {
                if (err) *err = berr;
                goto out;
            }
            /* a dry run shows what the refused sync would have done */
            if (!(rep->refused = sl__strdup(berr.message))) {
                st = sl__err_set(err, SL_E_NOMEM, "out of memory");
                goto out;
            }
            st = SL_OK;
        }
    }
    /* stored state of each product */
    for (size_t p = 0; p < in.n_prods && st == SL_OK; p++) {
        sl__prod *pr = &in.prods[p];
        pr->exists = sl_store_get_product(e->store, pr->meta.id, &pr->cur, NULL) == SL_OK;
        if (pr->exists) st = sl_store_product_images(e->store, pr->meta.id, &pr->old, &pr->n_old, err);
    }
    if (st != SL_OK) goto out;
    /* image URLs: downloaded before anything reads them */
    if ((st = sl__ingest_fetch(&in, &o, &downloads, err)) != SL_OK) goto out;
    /* first ingest: learn the codebook / PCA from a sample of this feed */
    if (!in.dry_run && !sl_features_ready(e->feat) && in.n_tasks > 0) {
        char **paths = sl__callocarray(in.n_tasks + 1, sizeof *paths);
        size_t np = 0;
        if (!paths) {
            st = sl__err_set(err, SL_E_NOMEM, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < in.n_tasks; i++)
            if (!in.prods[in.tasks[i].prod].parse_failed && in.tasks[i].st == SL_OK)
                paths[np++] = in.tasks[i].local ? in.tasks[i].local : in.tasks[i].path;
        st = np ? sl__train_on_paths(e, paths, np, o.train_sample, o.jobs, &terr) : SL_OK;
        free(paths);
        if (st == SL_E_NOMEM || st == SL_E_INTERRUPTED) {
            sl__err_set(err, st, "%s", terr.message);
            goto out;
        }
        if (st != SL_OK) {
            /* go on reading and decoding every row, to report each one; then fail the run */
            in.no_describe = 1;
            in.train_error = terr.message;
            st = SL_OK;
        }
    }
    /* a cluster store: the products go to the job queue, the cluster's workers describe them */
    if (!in.dry_run && !in.train_error && sl_store_is_shared(e->store)) {
        char label[512];
        char host[64] = "";
        (void)gethostname(host, sizeof host - 1);
        snprintf(label, sizeof label, "%s %.300s (%s pid %d)", o.sync ? "sync" : "add", catalog_path, host, (int)getpid());
        if ((st = sl__jobs_batch_new(e->store, label, &in.batch, err)) != SL_OK) goto out;
        in.enqueue = 1;
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
    e->gc_deferred = 1; /* one deletion pass at the end instead of one per replaced image set */
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
            o.progress(o.progress_ctx, p + 1 - in.queued, in.n_prods, now - t1); /* queued: not done yet */
            last = now;
        }
    }
    pthread_mutex_lock(&in.mu);
    in.stop = 1;
    pthread_cond_broadcast(&in.cv);
    pthread_mutex_unlock(&in.mu);
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    e->gc_deferred = 0;
    if (!in.dry_run) sl__engine_gc(e);
    pthread_cond_destroy(&in.cv);
    pthread_mutex_destroy(&in.mu);
    if (st == SL_OK && in.enqueue && in.queued && !o.no_wait)
        st = sl__ingest_wait(&in, &o, in.n_prods - in.queued, t1, rep, err);
    else if (in.enqueue)
        rep->queued = in.queued;
    if (st == SL_OK && o.sync) {
        if (in.dry_run) {
            for (size_t i = 0; i < n_gone && st == SL_OK; i++)
                if (sl__idlist_add(&rep->removed_ids, gone[i]) != 0) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
            rep->removed = n_gone;
        } else if (!in.train_error) {
            st = sl__sync_remove(e, gone, n_gone, rep, err);
        }
    }
    if (st == SL_OK && in.train_error)
        st = sl__err_set(err, terr.code != SL_OK ? terr.code : SL_E_INVALID, "%s", terr.message);
    /* an "auto" store that grew past the threshold switches to HNSW */
    if (st == SL_OK && !in.dry_run) st = sl__engine_maybe_switch(e, err);
    if (!in.dry_run) {
        if (st == SL_OK) st = sl__engine_save_index(e, err);
        else (void)sl__engine_save_index(e, NULL);
        /* the catalog calibration, when due: its failure leaves the committed products as they
         * are. On a cluster store once the workers committed the products this run queued (not
         * with no_wait: then the next add or sync that waits, or `calibrate`, does it). */
        if (st == SL_OK && !(in.enqueue && in.queued && o.no_wait)) {
            sl_calibrate_opts co;
            memset(&co, 0, sizeof co);
            co.jobs = o.jobs;
            co.cancel = o.cancel;
            co.progress = o.calib_progress;
            co.progress_ctx = o.calib_progress_ctx;
            sl_error cerr;
            sl_error_clear(&cerr);
            int done = 0;
            if (sl__engine_auto_calibrate(e, 1, &co, &done, &cerr) != SL_OK)
                rep->calibration_error = sl__strdup(cerr.message[0] ? cerr.message : sl_strerror(cerr.code));
            rep->calibrated = done;
        }
    }
out:
    pthread_mutex_unlock(&e->wmu);
    sl_strings_free(gone, n_gone);
    sl__ingest_free(&in);
    if (downloads) sl__remote_rmdir(downloads);
    free(downloads);
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
    /* a cluster store: the images are the store's copies (rows), read through the store */
    int shared = sl_store_is_shared(e->store);
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
    for (size_t i = 0; i < n; i++) paths[i] = refs[i].file;
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
    if (shared) {
        if (!(imgs = sl__callocarray(m + 1, sizeof *imgs))) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        else sl__decode_store_files(e, pick, m, o.jobs, imgs);
    } else {
        st = sl__decode_parallel(e, pick, m, o.jobs, &imgs, err);
    }
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
    if (shared) {
        /* the features version row first, exclusively (writers of products take it shared
         * before anything else: sl__engine_lock_features), then the images to re-describe:
         * every product committed before is listed, none is committed with the old features
         * after; a worker waiting for the row then loads the new features */
        sl_image_ref *now = NULL;
        size_t n_now = 0;
        st = sl__engine_lock_features(e, 1, err);
        if (st == SL_OK) st = sl_store_all_images(e->store, &now, &n_now, err);
        if (st != SL_OK) {
            sl_store_rollback(e->store);
            goto out;
        }
        free(paths); /* pointed into refs */
        paths = NULL;
        sl_image_refs_free(refs, n);
        refs = now;
        n = n_now;
    }
    for (size_t i = 0; i < n && st == SL_OK; i++) {
        void *buf = NULL;
        size_t len = 0;
        sl_image *img = NULL;
        float *vec = NULL;
        void *local = NULL;
        size_t llen = 0;
        st = shared ? sl_store_file_get(e->store, refs[i].file, SL_IMAGE_MAX_BYTES_DEFAULT, &buf, &len, err)
                    : sl__read_file(refs[i].file, SL_IMAGE_MAX_BYTES_DEFAULT, &buf, &len, err);
        if (st == SL_OK) st = sl__engine_decode(&tmp, buf, len, &img, NULL, err);
        if (st == SL_OK) st = sl__engine_describe(&tmp, img, &vec, &local, &llen, err);
        if (st == SL_OK)
            st = sl_store_set_image_features(e->store, refs[i].id, vec, sl_features_dim(f), local, llen, err);
        if (st != SL_OK) sl__err_prefix(err, "image %lld (%s)", (long long)refs[i].id, refs[i].file);
        free(buf);
        sl_image_free(img);
        free(vec);
        free(local);
        if (o.progress && (i + 1 == n || (i & 15) == 0)) o.progress(o.progress_ctx, i + 1, n, sl__now() - t0);
        if (o.cancel && *o.cancel && st == SL_OK) st = sl__err_set(err, SL_E_INTERRUPTED, "interrupted");
    }
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", (long long)version);
    /* references were described with the old features (and are photos the store does not keep):
     * dropped with the head; `train --photos` describes them again */
    if (st == SL_OK) st = sl_store_replace_refs(e->store, NULL, 0, 0, err);
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
    if (st == SL_OK) { /* the new features have no calibration yet */
        sl_calibrate_opts co;
        memset(&co, 0, sizeof co);
        co.jobs = o.jobs;
        co.cancel = o.cancel;
        int done = 0;
        (void)sl__engine_auto_calibrate(e, 0, &co, &done, NULL);
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
