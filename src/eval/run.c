/*
 * eval/run.c - evaluation of a feature specification on ImageFolder directories: trains the
 * features on (a sample of) the gallery, describes every gallery image, puts the vectors in an
 * exact (flat) index and ranks the whole gallery for every query, re-ranking the top
 * candidates the spec names (verify:n=) geometrically when it verifies - the same path
 * as the engine's search, without the store.
 *
 * Invariants: everything is deterministic for a given input and spec (sorted file lists, fixed
 * training seed, evenly spaced samples); leave-one-out never ranks a query against itself and
 * counts R without it. In leave-one-out mode a query's descriptor is its gallery descriptor
 * (same pipeline, same bytes). Query latency (p50/p99) is measured on up to
 * SL__EVAL_LATENCY_SAMPLE evenly spaced queries that are decoded and described again inside the
 * timed section (decode + features + exact search + re-rank), on threads running in parallel.
 */
#include "shoplens/eval.h"
#include "shoplens/engine.h"
#include "shoplens/feature.h"
#include "shoplens/index.h"
#include "shoplens/learn.h"
#include "eval/eval_internal.h"
#include "engine/engine_internal.h"
#include "util/util.h"

#include <ctype.h>
#include <math.h>
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define SL__EVAL_LATENCY_SAMPLE 200
#define SL__EVAL_TRAIN_SEED 0x5b0b1e45ULL

size_t sl__eval_part_size = SL_INDEX_K_MAX;

static int sl__is_image_name(const char *n) {
    const char *dot = strrchr(n, '.');
    if (!dot || n[0] == '.') return 0;
    static const char *const ext[] = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".tif", ".tiff", ".bmp", ".heic", ".avif"};
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++)
        if (strcasecmp(dot, ext[i]) == 0) return 1;
    return 0;
}

static int sl__cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted entries of a directory (names only) for which keep() holds. */
static sl_status sl__list_dir(const char *dir, int want_dirs, char ***out, size_t *n, sl_error *err) {
    *out = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return sl__err_set(err, SL_E_NOT_FOUND, "cannot open folder %s", dir);
    char **v = NULL;
    size_t cnt = 0, cap = 0;
    struct dirent *de;
    sl_status st = SL_OK;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        size_t pl = strlen(dir) + strlen(de->d_name) + 2;
        char *p = malloc(pl);
        if (!p) {
            st = sl__err_set(err, SL_E_NOMEM, "out of memory");
            break;
        }
        snprintf(p, pl, "%s/%s", dir, de->d_name);
        struct stat sb;
        int ok = stat(p, &sb) == 0 && (want_dirs ? S_ISDIR(sb.st_mode) : (S_ISREG(sb.st_mode) && sl__is_image_name(de->d_name)));
        free(p);
        if (!ok) continue;
        if (cnt == cap) {
            size_t nc = cap ? cap * 2 : 64;
            char **nv = sl__reallocarray(v, nc, sizeof *nv);
            if (!nv) {
                st = sl__err_set(err, SL_E_NOMEM, "out of memory");
                break;
            }
            v = nv;
            cap = nc;
        }
        if (!(v[cnt] = sl__strdup(de->d_name))) {
            st = sl__err_set(err, SL_E_NOMEM, "out of memory");
            break;
        }
        cnt++;
    }
    closedir(d);
    if (st != SL_OK) {
        sl_strings_free(v, cnt);
        return st;
    }
    if (cnt) qsort(v, cnt, sizeof *v, sl__cmp_str);
    *out = v;
    *n = cnt;
    return SL_OK;
}

void sl__eval_set_free(sl__eval_set *s) {
    for (size_t i = 0; i < s->n; i++) free(s->paths[i]);
    free(s->paths);
    free(s->labels);
    sl_strings_free(s->label_names, s->n_labels);
    memset(s, 0, sizeof *s);
}

sl_status sl__eval_set_load(const char *dir, sl__eval_set *s, sl_error *err) {
    memset(s, 0, sizeof *s);
    char **labels = NULL;
    size_t nl = 0;
    sl_status st = sl__list_dir(dir, 1, &labels, &nl, err);
    if (st != SL_OK) return st;
    s->label_names = labels;
    s->n_labels = nl;
    size_t cap = 0;
    for (size_t l = 0; l < nl && st == SL_OK; l++) {
        size_t sl = strlen(dir) + strlen(labels[l]) + 2;
        char *sub = malloc(sl);
        if (!sub) {
            st = sl__err_set(err, SL_E_NOMEM, "out of memory");
            break;
        }
        snprintf(sub, sl, "%s/%s", dir, labels[l]);
        char **files = NULL;
        size_t nf = 0;
        st = sl__list_dir(sub, 0, &files, &nf, err);
        for (size_t f = 0; f < nf && st == SL_OK; f++) {
            if (s->n == cap) {
                size_t nc = cap ? cap * 2 : 256;
                char **np = sl__reallocarray(s->paths, nc, sizeof *np);
                if (np) s->paths = np;
                int *nlb = sl__reallocarray(s->labels, nc, sizeof *nlb);
                if (nlb) s->labels = nlb;
                if (!np || !nlb) {
                    st = sl__err_set(err, SL_E_NOMEM, "out of memory");
                    break;
                }
                cap = nc;
            }
            size_t pl = sl + strlen(files[f]) + 1;
            s->paths[s->n] = malloc(pl);
            if (!s->paths[s->n]) {
                st = sl__err_set(err, SL_E_NOMEM, "out of memory");
                break;
            }
            snprintf(s->paths[s->n], pl, "%s/%s", sub, files[f]);
            s->labels[s->n] = (int)l;
            s->n++;
        }
        sl_strings_free(files, nf);
        free(sub);
    }
    if (st == SL_OK && s->n == 0)
        st = sl__err_set(err, SL_E_INVALID, "%s: no labelled images (expected DIR/<label>/<image>)", dir);
    if (st != SL_OK) sl__eval_set_free(s);
    return st;
}

/* ---- parallel description ------------------------------------------------------------------ */

typedef struct sl__desc_job {
    const sl_features *f;
    char **paths;
    size_t n;
    int max_side;
    size_t dim;
    float *vecs;                 /* n * dim */
    sl_local_features **locals;  /* n, may hold NULLs */
    unsigned char *ok;
    char **why;                  /* n: why image i failed (malloc'ed), NULL when ok */
} sl__desc_job;

static void sl__desc_one(void *arg, size_t i) {
    sl__desc_job *j = arg;
    sl_image_load_opts o;
    memset(&o, 0, sizeof o);
    o.max_side = j->max_side;
    sl_image *img = NULL;
    sl_error e;
    sl_error_clear(&e);
    if (sl_image_load_file(j->paths[i], &o, &img, NULL, &e) != SL_OK) {
        j->why[i] = sl__strdup(e.message[0] ? e.message : sl_strerror(e.code));
        return;
    }
    sl_local_features *lf = NULL;
    int want_local = j->locals && sl_features_uses_verify(j->f);
    if (sl_features_extract(j->f, img, j->vecs + i * j->dim, want_local ? &lf : NULL, &e) == SL_OK) {
        j->ok[i] = 1;
        if (j->locals) j->locals[i] = lf;
    } else {
        j->why[i] = sl__strdup(e.message[0] ? e.message : sl_strerror(e.code));
    }
    sl_image_free(img);
}

static sl_status sl__train(sl_features *f, const sl__eval_set *g, int max_side, int jobs, sl_error *err) {
    size_t m = g->n < SL_ENGINE_TRAIN_SAMPLE_DEFAULT ? g->n : SL_ENGINE_TRAIN_SAMPLE_DEFAULT;
    char **paths = sl__callocarray(m + 1, sizeof *paths);
    sl_image **imgs = sl__callocarray(m + 1, sizeof *imgs);
    if (!paths || !imgs) {
        free(paths);
        free(imgs);
        return sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < m; i++) paths[i] = g->paths[(size_t)((double)i * (double)g->n / (double)m)];
    sl__decode_paths(paths, m, max_side, jobs, imgs);
    size_t k = 0;
    for (size_t i = 0; i < m; i++)
        if (imgs[i]) imgs[k++] = imgs[i];
    sl_status st = sl_features_train(f, (const sl_image *const *)imgs, k, SL__EVAL_TRAIN_SEED);
    if (st != SL_OK) sl__err_set(err, st, "training the features: %s", sl_features_errmsg(f));
    for (size_t i = 0; i < k; i++) sl_image_free(imgs[i]);
    free(imgs);
    free(paths);
    return st;
}

/* ---- ranking --------------------------------------------------------------------------------- */

typedef struct sl__rank_job {
    const sl_features *f;
    sl_index **idx;             /* the gallery in parts of sl__eval_part_size images */
    size_t n_idx;
    const sl__eval_set *g, *q;
    int loo;
    const float *gvecs, *qvecs;
    sl_local_features *const *glocals, *const *qlocals;
    const unsigned char *gok, *qok;
    size_t *order;              /* queries to rank (sampled) */
    size_t n_order, next;
    size_t *label_count;        /* gallery images per label */
    size_t dim;
    int k;
    sl_eval_acc *acc;
    sl__eval_shown *shown;      /* report samples */
    size_t n_shown;
    int latency_every;          /* re-extract every Nth query for latency (loo) */
    int verify_top;             /* candidates re-ranked geometrically */
    int max_side;
    size_t n_refs;              /* labelled photos indexed as references, ids g->n.. */
    const int *ref_label;       /* gallery label of each reference */
    sl_local_features *const *rlocals;
    pthread_mutex_t mu;
    sl_status st;
} sl__rank_job;

static int sl__cmp_res(const void *a, const void *b) {
    const sl_index_result *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Mean of the k highest of v (n of them; sorted in place), 0 when n is 0. */
static int sl__cmp_desc(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

static double sl__top_mean(double *v, size_t n, size_t k) {
    if (n == 0) return 0;
    qsort(v, n, sizeof *v, sl__cmp_desc);
    size_t m = n < k ? n : k;
    double sum = 0;
    for (size_t i = 0; i < m; i++) sum += v[i];
    return sum / (double)m;
}

/* Standard deviation of the k highest of v (already sorted by sl__top_mean) around mean. */
static double sl__top_std(const double *v, size_t n, size_t k, double mean) {
    size_t m = n < k ? n : k;
    if (m < 2) return 0;
    double ss = 0;
    for (size_t i = 0; i < m; i++) ss += (v[i] - mean) * (v[i] - mean);
    return sqrt(ss / (double)m);
}

/* References fold into their labels as the engine's search folds them into their products
 * (engine/query.c, sl__refs_on_catalog_scale): each kind standardized against the query's cohort
 * of it (mean and standard deviation of the best scores of the SL_CALIB_COHORT_DEFAULT labels
 * scoring highest by that kind); a label with references scores the mean of its gallery image's
 * score and its best reference mapped onto the gallery's scale, a label without keeps its score.
 * The whole gallery is ranked, so every label has a gallery entry. Returns the new length
 * (reference entries dropped), SIZE_MAX when out of memory. */
static size_t sl__fold_refs(const sl__rank_job *j, sl_index_result *res, size_t got) {
    size_t nl = j->g->n_labels, gn = j->g->n;
    double *best = malloc(3 * (nl + 1) * sizeof *best);
    if (!best) return SIZE_MAX;
    double *bc = best, *br = best + (nl + 1), *tmp = best + 2 * (nl + 1), mu[2], sd[2];
    for (size_t l = 0; l < nl; l++) bc[l] = br[l] = -HUGE_VAL;
    for (size_t i = 0; i < got; i++) {
        size_t id = (size_t)res[i].id;
        double *b = id < gn ? &bc[j->g->labels[id]] : &br[j->ref_label[id - gn]];
        if (res[i].score > *b) *b = res[i].score;
    }
    for (int kind = 0; kind < 2; kind++) {
        const double *b = kind ? br : bc;
        size_t m = 0;
        for (size_t l = 0; l < nl; l++)
            if (b[l] > -HUGE_VAL) tmp[m++] = b[l];
        mu[kind] = sl__top_mean(tmp, m, SL_CALIB_COHORT_DEFAULT);
        sd[kind] = sl__top_std(tmp, m, SL_CALIB_COHORT_DEFAULT, mu[kind]);
    }
    int usable = sd[0] > 1e-6 && sd[1] > 1e-6;
    size_t w = 0;
    for (size_t i = 0; i < got; i++) {
        size_t id = (size_t)res[i].id;
        if (id >= gn) continue;
        int l = j->g->labels[id];
        if (usable && br[l] > -HUGE_VAL) {
            double v = 0.5 * res[i].score + 0.5 * (mu[0] + sd[0] * (br[l] - mu[1]) / sd[1]);
            res[i].score = (float)(v < -1 ? -1 : v > 1 ? 1 : v);
        }
        res[w++] = res[i];
    }
    free(best);
    qsort(res, w, sizeof *res, sl__cmp_res);
    return w;
}

/* Full ranking of the gallery for one query vector; re-ranked top when verifying. Returns
 * SIZE_MAX when a search failed. */
static size_t sl__rank_one(sl__rank_job *j, const float *qv, const sl_local_features *ql,
                           size_t self, sl_index_result *res, size_t cap) {
    size_t got = 0;
    for (size_t p = 0; p < j->n_idx; p++) {
        size_t part = (size_t)sl_index_count(j->idx[p]), n = 0;
        if (part == 0) continue;
        if (got + part > cap || sl_index_search(j->idx[p], qv, part, NULL, NULL, res + got, &n) != SL_OK)
            return SIZE_MAX;
        got += n;
    }
    if (j->n_idx > 1) qsort(res, got, sizeof *res, sl__cmp_res);
    if (self != SIZE_MAX) {
        size_t w = 0;
        for (size_t i = 0; i < got; i++)
            if (res[i].id != self) res[w++] = res[i];
        got = w;
    }
    if (ql && sl_features_uses_verify(j->f)) {
        sl_verify_result none;
        memset(&none, 0, sizeof none);
        for (size_t i = 0; i < got; i++) {
            sl_verify_result r = none;
            size_t id = (size_t)res[i].id;
            const sl_local_features *gl = id < j->g->n ? j->glocals[id] : j->rlocals ? j->rlocals[id - j->g->n] : NULL;
            if (i < (size_t)j->verify_top && gl && sl_features_verify(j->f, ql, gl, &r, NULL) != SL_OK)
                r = none;
            res[i].score = (float)sl_features_rerank_score(j->f, res[i].score, &r);
        }
        qsort(res, got, sizeof *res, sl__cmp_res);
    }
    if (j->n_refs) got = sl__fold_refs(j, res, got);
    return got;
}

/* One of `jobs` ranking workers; each takes queries from the shared counter. */
static void sl__rank_worker(void *arg, size_t worker) {
    (void)worker;
    sl__rank_job *j = arg;
    size_t cap = j->g->n + j->n_refs;
    sl_index_result *res = sl__mallocarray(cap ? cap : 1, sizeof *res);
    unsigned char *rel = sl__mallocarray(cap ? cap : 1, 1);
    float *tmpv = sl__mallocarray(j->dim ? j->dim : 1, sizeof *tmpv);
    if (!res || !rel || !tmpv) {
        pthread_mutex_lock(&j->mu);
        j->st = SL_E_NOMEM;
        pthread_mutex_unlock(&j->mu);
        free(res);
        free(rel);
        free(tmpv);
        return;
    }
    for (;;) {
        pthread_mutex_lock(&j->mu);
        size_t oi = j->next++;
        pthread_mutex_unlock(&j->mu);
        if (oi >= j->n_order) break;
        size_t qi = j->order[oi];
        const sl__eval_set *qs = j->loo ? j->g : j->q;
        const unsigned char *qok = j->loo ? j->gok : j->qok;
        if (!qok[qi]) continue;
        double t0 = sl__now();
        const float *qv = (j->loo ? j->gvecs : j->qvecs) + qi * j->dim;
        const sl_local_features *ql = j->loo ? j->glocals[qi] : j->qlocals[qi];
        sl_local_features *fresh = NULL;
        int timed = j->latency_every > 0 && oi % (size_t)j->latency_every == 0;
        if (timed) {
            /* re-extract for an honest latency; the result is the same descriptor */
            sl_image_load_opts o;
            memset(&o, 0, sizeof o);
            o.max_side = j->max_side;
            sl_image *img = NULL;
            if (sl_image_load_file(qs->paths[qi], &o, &img, NULL, NULL) == SL_OK &&
                sl_features_extract(j->f, img, tmpv, sl_features_uses_verify(j->f) ? &fresh : NULL, NULL) == SL_OK &&
                sl_features_project(j->f, SL_HEAD_QUERY, tmpv, tmpv, 1) == SL_OK) {
                qv = tmpv;
                if (fresh) ql = fresh;
            }
            sl_image_free(img);
        }
        size_t got = sl__rank_one(j, qv, ql, j->loo ? qi : SIZE_MAX, res, cap);
        double ms = (sl__now() - t0) * 1000.0;
        sl_local_features_free(fresh);
        if (got == SIZE_MAX) {
            pthread_mutex_lock(&j->mu);
            if (j->st == SL_OK) j->st = SL_E_INTERNAL;
            pthread_mutex_unlock(&j->mu);
            break;
        }
        int qlabel = qs->labels[qi];
        /* labels of the query set map to gallery labels by name */
        const char *qname = qs->label_names[qlabel];
        for (size_t i = 0; i < got; i++) rel[i] = strcmp(j->g->label_names[j->g->labels[res[i].id]], qname) == 0;
        size_t R = 0;
        for (size_t l = 0; l < j->g->n_labels; l++)
            if (strcmp(j->g->label_names[l], qname) == 0) R = j->label_count[l];
        if (j->loo && R > 0) R--;
        pthread_mutex_lock(&j->mu);
        sl_status st = sl_eval_acc_add(j->acc, rel, got, R, timed ? ms : -1);
        if (st != SL_OK && j->st == SL_OK) j->st = st;
        for (size_t s = 0; s < j->n_shown; s++)
            if (j->shown[s].query == qi) {
                j->shown[s].n = got < SL__EVAL_SHOW_TOP ? got : SL__EVAL_SHOW_TOP;
                for (size_t i = 0; i < j->shown[s].n; i++) {
                    j->shown[s].result[i] = (size_t)res[i].id;
                    j->shown[s].relevant[i] = rel[i];
                }
            }
        pthread_mutex_unlock(&j->mu);
    }
    free(res);
    free(rel);
    free(tmpv);
}

/* Describes a set in parallel; returns the elapsed seconds. locals NULL: global vectors only. */
static sl_status sl__describe_set(const sl_features *f, const sl__eval_set *s, int max_side, int jobs,
                                  const char *cache, const sl__eval_set *g,
                                  float **vecs, sl_local_features ***locals, unsigned char **ok,
                                  double *seconds, const sl_eval_opts *opts, sl_error *err) {
    size_t dim = sl_features_dim(f), nf;
    *vecs = NULL;
    if (locals) *locals = NULL;
    *ok = NULL;
    if (sl__mul_size(s->n, dim, &nf)) return sl__err_set(err, SL_E_TOO_LARGE, "too many images");
    sl__desc_job j;
    memset(&j, 0, sizeof j);
    j.f = f;
    j.paths = s->paths;
    j.n = s->n;
    j.max_side = max_side;
    j.dim = dim;
    j.vecs = sl__callocarray(nf ? nf : 1, sizeof *j.vecs);
    if (locals) j.locals = sl__callocarray(s->n + 1, sizeof *j.locals);
    j.ok = sl__callocarray(s->n + 1, 1);
    j.why = sl__callocarray(s->n + 1, sizeof *j.why);
    if (!j.vecs || (locals && !j.locals) || !j.ok || !j.why) {
        free(j.vecs);
        free(j.locals);
        free(j.ok);
        free(j.why);
        return sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    double t0 = sl__now();
    char *cpath = cache ? sl__eval_cache_path(cache, sl_features_spec(f), max_side, locals != NULL, g, s) : NULL;
    if (!cpath || !sl__eval_cache_load(cpath, s->n, dim, j.vecs, j.locals, j.ok)) {
        sl__parallel_for(s->n, jobs, sl__desc_one, &j);
        if (cpath) sl__eval_cache_save(cache, cpath, s->n, dim, j.vecs, j.locals, j.ok);
    }
    free(cpath);
    *seconds = sl__now() - t0;
    for (size_t i = 0; i < s->n; i++) {
        if (!j.ok[i] && opts->skipped_fn)
            opts->skipped_fn(opts->skipped_ctx, s->paths[i], j.why[i] ? j.why[i] : "cannot be described");
        free(j.why[i]);
    }
    free(j.why);
    *vecs = j.vecs;
    if (locals) *locals = j.locals;
    *ok = j.ok;
    return SL_OK;
}

static void sl__free_locals(sl_local_features **l, size_t n) {
    for (size_t i = 0; l && i < n; i++) sl_local_features_free(l[i]);
    free(l);
}

/* ---- learning a head (eval --train) ---------------------------------------------------------- */

typedef struct sl__aug_job {
    const sl_features *f;
    const sl__eval_set *g;
    const size_t *src;          /* gallery image of each augmented copy */
    size_t n, dim;
    int max_side;
    float *vecs;
    unsigned char *ok;
} sl__aug_job;

static void sl__aug_one(void *arg, size_t i) {
    sl__aug_job *j = arg;
    sl_image_load_opts o;
    memset(&o, 0, sizeof o);
    o.max_side = j->max_side;
    sl_image *img = NULL, *aug = NULL;
    if (sl_image_load_file(j->g->paths[j->src[i]], &o, &img, NULL, NULL) == SL_OK &&
        sl_learn_augment(img, SL__EVAL_TRAIN_SEED + i, &aug, NULL) == SL_OK &&
        sl_features_extract(j->f, aug, j->vecs + i * j->dim, NULL, NULL) == SL_OK)
        j->ok[i] = 1;
    sl_image_free(img);
    sl_image_free(aug);
}

static int sl__label_of(const sl__eval_set *g, const char *name) {
    for (size_t l = 0; l < g->n_labels; l++)
        if (strcmp(g->label_names[l], name) == 0) return (int)l;
    return -1;
}

/* Trains a head on the training photos (or augmented gallery images) against the gallery's raw
 * vectors and installs it in f. */
typedef struct sl__eval_refs {
    float *vecs;                /* n * dim, before the head */
    int *label;                 /* gallery label of each */
    sl_local_features **locals; /* n (NULLs without verification) */
    size_t n;
} sl__eval_refs;

static sl_status sl__eval_head(sl_features *f, const sl__eval_set *g, const float *gv,
                               const unsigned char *gok, const sl_eval_opts *o, int max_side,
                               sl_eval_metrics *m, sl__eval_refs *refs, sl_error *err) {
    size_t dim = sl_features_dim(f);
    double t0 = sl__now();
    sl__eval_set t;
    memset(&t, 0, sizeof t);
    float *tv = NULL, *gr = NULL;
    unsigned char *tok = NULL;
    sl_local_features **tl = NULL;
    uint32_t *tcls = NULL, *gcls = NULL;
    size_t *src = NULL, nt = 0, ng = 0, np = 0;
    sl_status st = SL_OK;
    if (o->train_dir) {
        double sec;
        if ((st = sl__eval_set_load(o->train_dir, &t, err)) != SL_OK) goto out;
        if ((st = sl__describe_set(f, &t, max_side, o->jobs, o->cache_dir, g, &tv, refs ? &tl : NULL, &tok, &sec, o, err)) != SL_OK) goto out;
        nt = t.n;
    } else {
        for (size_t i = 0; i < g->n; i++) nt += gok[i] ? SL_LEARN_AUGMENT_PER_IMAGE : 0;
        src = sl__callocarray(nt + 1, sizeof *src);
        tv = sl__callocarray(nt * dim + 1, sizeof *tv);
        tok = sl__callocarray(nt + 1, 1);
        if (!src || !tv || !tok) { st = sl__err_set(err, SL_E_NOMEM, "out of memory"); goto out; }
        size_t k = 0;
        for (size_t i = 0; i < g->n; i++)
            for (int a = 0; gok[i] && a < SL_LEARN_AUGMENT_PER_IMAGE; a++) src[k++] = i;
        sl__aug_job aj = {f, g, src, nt, dim, max_side, tv, tok};
        sl__parallel_for(nt, o->jobs, sl__aug_one, &aj);
    }
    tcls = sl__callocarray(nt + 1, sizeof *tcls);
    gcls = sl__callocarray(g->n + 1, sizeof *gcls);
    gr = sl__callocarray(g->n * dim + 1, sizeof *gr);
    if (!tcls || !gcls || !gr) { st = sl__err_set(err, SL_E_NOMEM, "out of memory"); goto out; }
    for (size_t i = 0; i < nt; i++) {
        if (!tok[i]) continue;
        int l = o->train_dir ? sl__label_of(g, t.label_names[t.labels[i]]) : g->labels[src[i]];
        if (l < 0) continue;
        memmove(tv + np * dim, tv + i * dim, dim * sizeof *tv);
        if (tl && np != i) {
            sl_local_features_free(tl[np]);
            tl[np] = tl[i];
            tl[i] = NULL;
        }
        tcls[np++] = (uint32_t)l;
    }
    for (size_t i = 0; i < g->n; i++) {
        if (!gok[i]) continue;
        memcpy(gr + ng * dim, gv + i * dim, dim * sizeof *gr);
        gcls[ng++] = (uint32_t)g->labels[i];
    }
    if (np == 0) {
        st = sl__err_set(err, SL_E_INVALID, "%s: no training photo has a label of the gallery", o->train_dir ? o->train_dir : "training");
        goto out;
    }
    sl_head_data d;
    memset(&d, 0, sizeof d);
    d.dim = dim;
    d.photos = tv;
    d.photo_class = tcls;
    d.n_photos = np;
    d.gallery = gr;
    d.gallery_class = gcls;
    d.n_gallery = ng;
    d.n_classes = g->n_labels;
    d.same_domain = !o->train_dir;
    sl_head_train_opts ho;
    if (o->head) ho = *o->head;
    else sl_head_train_opts_init(&ho);
    if (ho.threads == 0) ho.threads = sl__jobs_or_cores(o->jobs);
    sl_head *h = NULL;
    if ((st = sl_head_train(&d, &ho, &h, err)) != SL_OK) goto out;
    if ((st = sl_features_set_head(f, h)) != SL_OK) {
        sl_head_free(h);
        st = sl__err_set(err, st, "%s", sl_features_errmsg(f));
        goto out;
    }
    m->trained_photos = np;
    m->train_seconds = sl__now() - t0;
    if (refs) {
        int *lab = sl__callocarray(np + 1, sizeof *lab);
        if (!lab) { st = sl__err_set(err, SL_E_NOMEM, "out of memory"); goto out; }
        for (size_t i = 0; i < np; i++) lab[i] = (int)tcls[i];
        for (size_t i = np; tl && i < t.n; i++) {
            sl_local_features_free(tl[i]);
            tl[i] = NULL;
        }
        refs->vecs = tv;
        refs->label = lab;
        refs->locals = tl;
        refs->n = np;
        tv = NULL;
        tl = NULL;
    }
out:
    sl__free_locals(tl, t.n);
    free(tv);
    free(gr);
    free(tok);
    free(tcls);
    free(gcls);
    free(src);
    sl__eval_set_free(&t);
    return st;
}

sl_status sl_eval_run(const sl_eval_opts *opts, sl_eval_metrics *m, sl_error *err) {
    memset(m, 0, sizeof *m);
    if (!opts || !opts->gallery_dir) return sl__err_set(err, SL_E_INVALID, "no gallery folder");
    int k = opts->k ? opts->k : SL_EVAL_K_DEFAULT;
    if (k < SL_EVAL_K_MIN || k > SL_EVAL_K_MAX) return sl__err_set(err, SL_E_INVALID, "k out of range");
    int max_side = opts->max_side > 0 ? opts->max_side : SL_ENGINE_MAX_SIDE_DEFAULT;
    sl__eval_set g, q;
    memset(&q, 0, sizeof q);
    sl_features *f = NULL;
    sl_index **idx = NULL;
    size_t n_idx = 0;
    float *gv = NULL, *qv = NULL, *gp = NULL;
    sl_local_features **gl = NULL, **ql = NULL;
    unsigned char *gok = NULL, *qok = NULL;
    size_t *label_count = NULL, *order = NULL;
    sl_eval_acc *acc = NULL;
    sl__eval_shown *shown = NULL;
    size_t n_shown = 0, *label_rep = NULL;
    sl__eval_refs refs;
    memset(&refs, 0, sizeof refs);
    sl_status st = sl_image_global_init(err);
    if (st != SL_OK) return st;
    if ((st = sl__eval_set_load(opts->gallery_dir, &g, err)) != SL_OK) return st;
    int loo = opts->queries_dir == NULL;
    if (!loo && (st = sl__eval_set_load(opts->queries_dir, &q, err)) != SL_OK) goto out;
    if ((st = sl_features_new(opts->features, &f, err)) != SL_OK) goto out;
    {
        int threads = sl__jobs_or_cores(opts->jobs); /* training results do not depend on it */
        (void)sl_features_set_threads(f, threads > SL_FEATURES_THREADS_MAX ? SL_FEATURES_THREADS_MAX : threads);
    }
    if (sl_features_needs_training(f) && (st = sl__train(f, &g, max_side, opts->jobs, err)) != SL_OK) goto out;
    size_t dim = sl_features_dim(f);
    double gsec = 0, qsec = 0;
    if ((st = sl__describe_set(f, &g, max_side, opts->jobs, opts->cache_dir, &g, &gv, &gl, &gok, &gsec, opts, err)) != SL_OK) goto out;
    if ((opts->train_dir || opts->train_catalog) &&
        (st = sl__eval_head(f, &g, gv, gok, opts, max_side, m, loo || opts->no_references ? NULL : &refs, err)) != SL_OK) goto out;
    /* the index holds gallery-side vectors; queries (leave-one-out ones too) go query-side */
    if (dim && (gp = sl__mallocarray(g.n, dim * sizeof *gp)) == NULL) {
        st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        goto out;
    }
    if (dim && (st = sl_features_project(f, SL_HEAD_GALLERY, gv, gp, g.n)) != SL_OK) {
        st = sl__err_set(err, st, "applying the head to the gallery");
        goto out;
    }
    if (dim && loo && (st = sl_features_project(f, SL_HEAD_QUERY, gv, gv, g.n)) != SL_OK) {
        st = sl__err_set(err, st, "applying the head to the queries");
        goto out;
    }
    double t0 = sl__now();
    size_t part = sl__eval_part_size ? sl__eval_part_size : SL_INDEX_K_MAX;
    idx = sl__callocarray((g.n + refs.n) / part + 1, sizeof *idx);
    if (!idx) {
        st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        goto out;
    }
    size_t described = 0;
    for (size_t i = 0; i < g.n; i++) {
        if (!gok[i]) {
            m->skipped++;
            continue;
        }
        if (described % part == 0 &&
            (st = sl_index_new(&idx[n_idx++], (int)dim, SL_INDEX_IP, SL_INDEX_FLAT, NULL, err)) != SL_OK)
            goto out;
        sl_index *x = idx[n_idx - 1];
        if (sl_index_add(x, (uint64_t)i, gp + i * dim) != SL_OK) {
            st = sl__err_set(err, SL_E_INTERNAL, "index: %s", sl_index_errmsg(x));
            goto out;
        }
        described++;
    }
    size_t gallery_images = described;
    if (refs.n) {
        label_rep = sl__mallocarray(g.n_labels + 1, sizeof *label_rep);
        if (!label_rep) { st = sl__err_set(err, SL_E_NOMEM, "out of memory"); goto out; }
        for (size_t l = 0; l < g.n_labels; l++) label_rep[l] = SIZE_MAX;
        for (size_t i = 0; i < g.n; i++)
            if (gok[i] && label_rep[g.labels[i]] == SIZE_MAX) label_rep[g.labels[i]] = i;
        if (dim && (st = sl_features_project(f, SL_HEAD_QUERY, refs.vecs, refs.vecs, refs.n)) != SL_OK) {
            st = sl__err_set(err, st, "applying the head to the references");
            goto out;
        }
        for (size_t r = 0; r < refs.n; r++) {
            if (label_rep[refs.label[r]] == SIZE_MAX) continue;
            if (described % part == 0 &&
                (st = sl_index_new(&idx[n_idx++], (int)dim, SL_INDEX_IP, SL_INDEX_FLAT, NULL, err)) != SL_OK)
                goto out;
            sl_index *x = idx[n_idx - 1];
            if (sl_index_add(x, (uint64_t)(g.n + r), refs.vecs + r * dim) != SL_OK) {
                st = sl__err_set(err, SL_E_INTERNAL, "index: %s", sl_index_errmsg(x));
                goto out;
            }
            described++;
        }
    }
    gsec += sl__now() - t0;
    m->gallery = gallery_images;
    m->index_images_per_s = gsec > 0 ? (double)described / gsec : 0;
    if (!loo) {
        if ((st = sl__describe_set(f, &q, max_side, opts->jobs, opts->cache_dir, &g, &qv, &ql, &qok, &qsec, opts, err)) != SL_OK) goto out;
        /* unreadable queries are skipped and counted (leave-one-out: already counted above) */
        for (size_t i = 0; i < q.n; i++) m->skipped += !qok[i];
        if (dim && (st = sl_features_project(f, SL_HEAD_QUERY, qv, qv, q.n)) != SL_OK) {
            st = sl__err_set(err, st, "applying the head to the queries");
            goto out;
        }
    }
    label_count = sl__callocarray(g.n_labels + 1, sizeof *label_count);
    if (!label_count) {
        st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < g.n; i++)
        if (gok[i]) label_count[g.labels[i]]++;
    const sl__eval_set *qs = loo ? &g : &q;
    size_t nq = qs->n, want = opts->max_queries && opts->max_queries < nq ? opts->max_queries : nq;
    order = sl__callocarray(want + 1, sizeof *order);
    acc = sl_eval_acc_new(k);
    size_t n_show = opts->report_html ? (opts->report_queries ? opts->report_queries : 24) : 0;
    if (n_show > want) n_show = want;
    shown = sl__callocarray(n_show + 1, sizeof *shown);
    if (!order || !acc || !shown) {
        st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < want; i++) order[i] = (size_t)((double)i * (double)nq / (double)want);
    for (size_t s = 0; s < n_show; s++) shown[n_shown++].query = order[(size_t)((double)s * (double)want / (double)n_show)];
    sl__rank_job j;
    memset(&j, 0, sizeof j);
    j.f = f;
    j.idx = idx;
    j.n_idx = n_idx;
    j.g = &g;
    j.q = &q;
    j.loo = loo;
    j.gvecs = gv;
    j.qvecs = qv;
    j.glocals = gl;
    j.qlocals = ql;
    j.gok = gok;
    j.qok = qok;
    j.order = order;
    j.n_order = want;
    j.label_count = label_count;
    j.dim = dim;
    j.k = k;
    j.acc = acc;
    j.shown = shown;
    j.n_shown = n_shown;
    j.latency_every = want > SL__EVAL_LATENCY_SAMPLE ? (int)(want / SL__EVAL_LATENCY_SAMPLE) : 1;
    j.max_side = max_side;
    j.verify_top = sl_features_verify_top_n(f);
    j.n_refs = refs.n;
    j.ref_label = refs.label;
    j.rlocals = refs.locals;
    pthread_mutex_init(&j.mu, NULL);
    sl__parallel_for(sl__jobs_or_cores(opts->jobs), opts->jobs, sl__rank_worker, &j);
    pthread_mutex_destroy(&j.mu);
    if (j.st != SL_OK) {
        st = sl__err_set(err, j.st, "ranking failed");
        goto out;
    }
    size_t gallery = m->gallery, skipped = m->skipped, trained = m->trained_photos;
    double ips = m->index_images_per_s, tsec = m->train_seconds;
    sl_eval_acc_result(acc, m);
    m->trained_photos = trained;
    m->train_seconds = tsec;
    m->gallery = gallery;
    m->skipped += skipped;
    m->index_images_per_s = ips;
    if (opts->report_html)
        st = sl__eval_report(opts->report_html, opts, sl_features_spec(f), m, &g, qs, shown, n_shown, max_side, err);
out:
    free(label_rep);
    free(refs.vecs);
    free(refs.label);
    sl__free_locals(refs.locals, refs.n);
    free(shown);
    sl_eval_acc_free(acc);
    free(order);
    free(label_count);
    sl__free_locals(gl, g.n);
    sl__free_locals(ql, q.n);
    free(gv);
    free(gp);
    free(qv);
    free(gok);
    free(qok);
    for (size_t i = 0; i < n_idx; i++) sl_index_free(idx[i]);
    free(idx);
    sl_features_free(f);
    sl__eval_set_free(&q);
    sl__eval_set_free(&g);
    return st;
}
