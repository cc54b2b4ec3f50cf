/*
 * engine/query.c - the query path: image (-> the shopper's region of it, region.c) -> global
 * vector (+ local features) -> index
 * candidates with the filter applied inside the index search (an allowed-id list from SQL over
 * category / price / FTS5 text) -> geometric re-rank of the top candidates (RANSAC inliers
 * blended with the global score, when the spec verifies) -> products, a product's score being
 * its best image's (with references, the labelled photos train kept: the mean with its best
 * reference on the catalog's scale, sl__refs_on_catalog_scale). Also similar products,
 * classification by a weighted vote of neighbours (k-NN, Cover & Hart 1967), review-photo check
 * (the named product scored as search scores it: its catalog images, and its references folded
 * on the scale of the photo's own ranking) and near-duplicate groups (union-find).
 *
 * Invariants: every query holds the engine lock shared for its whole duration, so it sees one
 * consistent state of features, index and store; query images and their features live only in
 * memory and are freed before returning.
 */
#include "engine/engine_internal.h"
#include "catalog/catalog.h"
#include "util/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>



void sl_matches_free(sl_matches *m) {
    if (!m) return;
    for (size_t i = 0; i < m->n; i++) {
        free(m->items[i].product_id);
        free(m->items[i].title);
        free(m->items[i].category);
        free(m->items[i].image);
        free(m->items[i].url);
        free(m->items[i].currency);
    }
    free(m->items);
    memset(m, 0, sizeof *m);
}

static int sl__cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

typedef struct sl__excl {
    const uint64_t *ids;
    size_t n;
} sl__excl;

static int sl__not_excluded(uint64_t id, void *ctx) {
    const sl__excl *x = ctx;
    return bsearch(&id, x->ids, x->n, sizeof *x->ids, sl__cmp_u64) == NULL;
}

/* The index filter of an allowed-id list (NULL: none) and a sorted list of excluded ids. */
static void sl__index_filter(sl_index_filter *f, const uint64_t *allowed, size_t n_allowed, sl__excl *ex) {
    memset(f, 0, sizeof *f);
    if (allowed) {
        f->allowed_ids = allowed;
        f->n_allowed = n_allowed;
    }
    if (ex->n) {
        f->pred = sl__not_excluded;
        f->pred_ctx = ex;
    }
}

/* Dot product in 8 float partial sums (vectorized by the compiler; the index's float kernels
 * sum in a similar number of lanes). */
static float sl__dot8(const float *a, const float *b, size_t n) {
    float acc[8] = { 0 };
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) acc[l] += a[i + (size_t)l] * b[i + (size_t)l];
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static int sl__cmp_hit(const void *a, const void *b) {
    const sl_index_result *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

sl_status sl__engine_ef_of(const sl_query *q, int *ef, sl_error *err) {
    *ef = q ? q->ef : 0;
    if (*ef != 0 && (*ef < SL_ENGINE_HNSW_EF_MIN || *ef > SL_ENGINE_HNSW_EF_MAX))
        return sl__err_set(err, SL_E_INVALID, "ef must be in %d..%d (HNSW candidate list length), not %d",
                           SL_ENGINE_HNSW_EF_MIN, SL_ENGINE_HNSW_EF_MAX, *ef);
    return SL_OK;
}

/* A reference held in memory by a training's private engine (e->mrefs): its index, or -1 when
 * id is not one. */
static long sl__mref_index(const sl_engine *e, int64_t id) {
    if (!e->mrefs || id < SL_STORE_REF_ID_BASE || (uint64_t)(id - SL_STORE_REF_ID_BASE) >= e->mrefs->n) return -1;
    return (long)(id - SL_STORE_REF_ID_BASE);
}

sl_status sl__engine_candidates(sl_engine *e, const float *vec, size_t k, const sl_index_filter *f,
                                int ef, sl_index_result *res, size_t *got, sl_error *err) {
    *got = 0;
    if (!e->idx || k == 0) return SL_OK;
    if (k > SL_INDEX_K_MAX) k = SL_INDEX_K_MAX;
    sl_index_search_params sp;
    memset(&sp, 0, sizeof sp);
    sl_status st;
    if (sl_index_kind_of(e->idx) == SL_INDEX_FLAT) {
        /* the exact scan re-scores its int8 candidates itself (see SL__ENGINE_RESCORE_MIN) */
        size_t depth = k > SIZE_MAX / SL__ENGINE_RESCORE_FACTOR ? SIZE_MAX : k * SL__ENGINE_RESCORE_FACTOR;
        if (depth < SL__ENGINE_RESCORE_MIN) depth = SL__ENGINE_RESCORE_MIN;
        if (depth > SL_INDEX_EF_SEARCH_MAX) depth = SL_INDEX_EF_SEARCH_MAX;
        sp.ef = (int)depth;
        st = sl_index_search(e->idx, vec, k, f, &sp, res, got);
        if (st != SL_OK) sl__err_set(err, st, "index search: %s", sl_index_errmsg(e->idx));
        return st;
    }
    /* HNSW over int8 codes only: the best r by code distance, re-scored from the store */
    size_t r = SL__ENGINE_HNSW_RESCORE(k), dim = (size_t)sl_index_dim(e->idx), n = 0;
    if (r > SL_INDEX_K_MAX) r = SL_INDEX_K_MAX;
    if (ef <= 0) ef = atomic_load(&e->hnsw_ef);
    if (ef <= 0) ef = sl_engine_hnsw_ef_auto(sl_index_count(e->idx));
    sp.ef = r > (size_t)ef ? (int)r : ef;
    sl_index_result *c = sl__mallocarray(r, sizeof *c);
    int64_t *ids = sl__mallocarray(r, sizeof *ids);
    float *vecs = sl__mallocarray(r, dim * sizeof *vecs);
    unsigned char *found = malloc(r);
    if (!c || !ids || !vecs || !found) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    else if ((st = sl_index_search(e->idx, vec, r, f, &sp, c, &n)) != SL_OK)
        sl__err_set(err, st, "index search: %s", sl_index_errmsg(e->idx));
    /* catalog images are re-scored with the store's float32 vectors through the gallery side of
     * the head; references keep their code score, as on a flat index (sl__tune_index) */
    size_t nf = 0, m = 0;
    if (st == SL_OK) {
        for (size_t i = 0; i < n; i++)
            if (c[i].id < (uint64_t)SL_STORE_REF_ID_BASE) ids[nf++] = (int64_t)c[i].id;
        st = sl_store_image_vectors(e->store, ids, nf, dim, vecs, found, err);
    }
    size_t nv = 0; /* the found ones' vectors, first in vecs */
    for (size_t j = 0; st == SL_OK && j < nf; j++) {
        if (!found[j]) continue; /* removed by another process, not yet refreshed */
        if (nv != j) memmove(vecs + nv * dim, vecs + j * dim, dim * sizeof *vecs);
        nv++;
    }
    /* the store keeps the vectors before the features' head; the index holds them after */
    if (st == SL_OK && nv && (st = sl_features_project(e->feat, SL_HEAD_GALLERY, vecs, vecs, nv)) != SL_OK)
        sl__err_set(err, st, "re-scoring the candidates: the features' head: %s", sl_strerror(st));
    if (st == SL_OK) {
        for (size_t i = 0, j = 0, v = 0; i < n; i++) {
            if (c[i].id >= (uint64_t)SL_STORE_REF_ID_BASE) {
                c[m++] = c[i];
                continue;
            }
            if (!found[j++]) continue;
            c[m].id = c[i].id;
            c[m++].score = sl__dot8(vec, vecs + v++ * dim, dim);
        }
    }
    if (st == SL_OK) {
        qsort(c, m, sizeof *c, sl__cmp_hit);
        *got = m < k ? m : k;
        memcpy(res, c, *got * sizeof *res);
    }
    free(c);
    free(ids);
    free(vecs);
    free(found);
    return st;
}

/* Allowed image ids for a query's filter, in no particular order (NULL *ids when no filter applies). */
static sl_status sl__allowed(sl_engine *e, const sl_query *q, uint64_t **ids, size_t *n,
                             int *filtered, sl_error *err) {
    *ids = NULL;
    *n = 0;
    *filtered = 0;
    if (!q) return SL_OK;
    sl_store_filter f;
    memset(&f, 0, sizeof f);
    f.category = q->category;
    f.has_min_price = q->has_min_price;
    f.min_price = q->min_price;
    f.has_max_price = q->has_max_price;
    f.max_price = q->max_price;
    if (q->text_mode == SL_TEXT_RESTRICT) f.text = q->text;
    if (sl_store_filter_empty(&f)) return SL_OK;
    *filtered = 1;
    int64_t *v = NULL;
    sl_status st = sl__store_filter_images_any_order(e->store, &f, &v, n, err);
    *ids = (uint64_t *)v; /* ids are positive rowids: same bits */
    return st;
}

/* A catalog image's local features for verification (search, dedup): from the cache, else read
 * from the store (only the local-features column) and cached. NULL when it has none or they do
 * not decode. Caller holds the lock shared (the generation and features version are stable)
 * and releases the reference with sl__lcache_release. */
static sl__lref *sl__image_local(sl_engine *e, int64_t image_id) {
    sl__lref *ref = sl__lcache_get(e->lcache, e->gen, e->features_version, image_id);
    if (ref) return ref;
    void *blob = NULL;
    size_t blen = 0;
    sl_local_features *lf = NULL;
    if (sl_store_image_local(e->store, image_id, &blob, &blen, NULL) == SL_OK && blob)
        (void)sl_local_features_deserialize(blob, blen, &lf, NULL);
    free(blob);
    return lf ? sl__lcache_put(e->lcache, e->gen, e->features_version, image_id, lf) : NULL;
}

/* The local features of a candidate image or reference for verification: *ref holds the cache's
 * reference, *own a copy decoded for this call (a reference in memory: never put in the cache
 * the private engine shares with its store's engine, where the same id is another reference);
 * release both with sl__local_release. NULL when it has none. Caller holds the lock shared. */
static const sl_local_features *sl__local_of(sl_engine *e, int64_t id, sl__lref **ref, sl_local_features **own) {
    *ref = NULL;
    *own = NULL;
    long m = sl__mref_index(e, id);
    if (m >= 0) {
        if (e->mrefs->locals[m])
            (void)sl_local_features_deserialize(e->mrefs->locals[m], e->mrefs->local_len[m], own, NULL);
        return *own;
    }
    *ref = sl__image_local(e, id);
    return *ref ? sl__lref_features(*ref) : NULL;
}

/* sl_features_verify of a query's local features against a candidate's, counted in
 * e->verifications (sl_engine_verifications); a failure verifies nothing (*res zeroed). */
static void sl__verify(sl_engine *e, const sl_local_features *q, const sl_local_features *c, sl_verify_result *res) {
    atomic_fetch_add_explicit(&e->verifications, 1, memory_order_relaxed);
    if (sl_features_verify(e->feat, q, c, res, NULL) != SL_OK) memset(res, 0, sizeof *res);
}

uint64_t sl_engine_verifications(sl_engine *e) {
    return e ? atomic_load_explicit(&e->verifications, memory_order_relaxed) : 0;
}

static void sl__local_release(sl_engine *e, sl__lref *ref, sl_local_features *own) {
    sl_local_features_free(own);
    sl__lcache_release(e->lcache, ref);
}

/* Re-ranks candidates in place: verification of the top ones, blended scores for all, divided by
 * the blend's maximum so every score is in -1..1 (sl_features_rerank_max); `given` ones are
 * left as they are. */
static sl_status sl__rerank(sl_engine *e, const sl_local_features *qlocal, sl__cand *c, size_t n,
                            sl_error *err) {
    double smax = sl_features_rerank_max(e->feat);
    int verify = qlocal && sl_features_uses_verify(e->feat);
    int top = verify ? (e->verify_top >= 0 ? e->verify_top : sl_features_verify_top_n(e->feat)) : 0;
    sl_verify_result none;
    memset(&none, 0, sizeof none);
    size_t refs = 0;
    for (size_t i = 0; i < n; i++) {
        /* by rank (a cluster's phase 2 gives the router's pick, sl_engine_verify_pick too) */
        int pick = c[i].verify < 0 ? sl_engine_verify_pick(i, c[i].image_id, (size_t)(top > 0 ? top : 0), &refs)
                                   : c[i].verify > 0;
        if (c[i].given) continue;
        sl_verify_result res = none;
        c[i].inliers = -1;
        if (pick) {
            sl__lref *ref;
            sl_local_features *own;
            const sl_local_features *cf = sl__local_of(e, c[i].image_id, &ref, &own);
            if (cf) {
                sl__verify(e, qlocal, cf, &res);
                c[i].inliers = res.inliers;
            }
            sl__local_release(e, ref, own);
        }
        c[i].score = sl_features_rerank_score(e->feat, c[i].score, &res) / smax;
    }
    (void)err;
    return SL_OK;
}

int sl_engine_verify_pick(size_t rank, int64_t image_id, size_t verify_top, size_t *refs) {
    if (rank >= verify_top) return 0;
    if (image_id < SL_STORE_REF_ID_BASE) return 1;
    if (!refs || *refs >= SL_ENGINE_VERIFY_REFS) return 0;
    ++*refs;
    return 1;
}

static int sl__cmp_pscore(const void *a, const void *b) {
    const sl__pscore *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return strcmp(x->product_id, y->product_id);
}

static int sl__cmp_dbl_desc(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

/* Mean and standard deviation of the k highest of the n values v (sorted in place). */
static void sl__top_stats(double *v, size_t n, size_t k, double *mean, double *sd) {
    *mean = 0;
    *sd = 0;
    if (n == 0) return;
    qsort(v, n, sizeof *v, sl__cmp_dbl_desc);
    size_t m = n < k ? n : k;
    double sum = 0, ss = 0;
    for (size_t i = 0; i < m; i++) sum += v[i];
    *mean = sum / (double)m;
    for (size_t i = 0; i < m; i++) ss += (v[i] - *mean) * (v[i] - *mean);
    *sd = sqrt(ss / (double)m);
}

/* References as a second, equal witness (docs/learn.md, "References"). A shopper photo resembles
 * other shopper photos (scene, light, framing) more than any packshot, so its scores against
 * references sit higher and spread wider than against catalog images whatever the product; taken
 * as they are (a product's best entry), products with references take the queries of products
 * without. Each kind is therefore standardized against this query's cohort of it - the mean and
 * standard deviation of the best scores of the K = SL_CALIB_COHORT_DEFAULT products that score
 * highest by that kind (query-side cohort normalization, T-norm: Auckenthaler et al., DSP 2000;
 * the query term of CSLS, Conneau et al., ICLR 2018) - and a product with references scores the
 * mean of its catalog score and its best reference's score mapped onto the catalog's scale
 * (mean_c + sd_c (r - mean_r) / sd_r); a product without references keeps its catalog score, so
 * the units stay those of catalog scores. Averaging two standardized witnesses instead of taking
 * the better one gives a product no extra chance from having two: a wrong product with photos
 * must look right in both. Nothing is fitted: the cohorts are measured on every query.
 * Rewrites c[] in place: catalog candidates of products with references get the mean; reference
 * candidates drop out (score -INFINITY, skipped by sl__accumulate) except the best one of a
 * product none of whose catalog images is a candidate, which stands for them with the lowest
 * catalog candidate's score as its catalog score (an upper bound). */
static double sl__clamp1(double s) { return s < -1 ? -1 : s > 1 ? 1 : s; }

/* The rule itself: the mean of a catalog score and a reference score r mapped onto the catalog's
 * scale (mean[0] + sd[0] (r - mean[1]) / sd[1]; [0] catalog images, [1] references), clamped to
 * -1..1. Search's fold and check's score both use it. */
static double sl__ref_fold_score(double catalog, double r, const double mean[2], const double sd[2]) {
    return sl__clamp1(0.5 * catalog + 0.5 * (mean[0] + sd[0] * (r - mean[1]) / sd[1]));
}

void sl_ref_fold_part_clear(sl_ref_fold_part *p) {
    if (!p) return;
    free(p->best[0]);
    free(p->best[1]);
    memset(p, 0, sizeof *p);
    p->lowest = INFINITY;
}

void sl_ref_fold_merge(const sl_ref_fold_part *parts, size_t n, sl_ref_fold *out) {
    out->lowest = INFINITY;
    for (size_t i = 0; i < n; i++)
        if (parts[i].lowest < out->lowest) out->lowest = parts[i].lowest;
    for (int kind = 0; kind < 2; kind++) {
        size_t m = 0, w = 0;
        for (size_t i = 0; i < n; i++) m += parts[i].n[kind];
        double *v = sl__mallocarray(m + 1, sizeof *v);
        if (!v) { /* no scale: references left out, as with fewer than two products */
            out->mean[kind] = out->sd[kind] = 0;
            continue;
        }
        for (size_t i = 0; i < n; i++)
            for (size_t k = 0; k < parts[i].n[kind]; k++) v[w++] = parts[i].best[kind][k];
        /* each part holds its K best: the union holds the K best of all, sorted as one list */
        sl__top_stats(v, w, SL_CALIB_COHORT_DEFAULT, &out->mean[kind], &out->sd[kind]);
        free(v);
    }
}

/* A candidate's product id and its index among the candidates (sorted by both: ties by index). */
typedef struct sl__prodpos {
    const char *id;
    size_t i;
} sl__prodpos;

static int sl__cmp_prodpos(const void *a, const void *b) {
    const sl__prodpos *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    return c ? c : (x->i > y->i) - (x->i < y->i);
}

/* The products of candidates prod[0..n) (NULL: gone) numbered 0..*np-1 in order of first
 * appearance: pi[i] receives candidate i's number. Sorted by id, O(n log n) compares (the
 * distinct products of a long candidate list are many). SL_E_NOMEM. */
static sl_status sl__number_products(char *const *prod, size_t n, size_t *pi, size_t *np, sl_error *err) {
    *np = 0;
    sl__prodpos *s = sl__mallocarray(n + 1, sizeof *s);
    if (!s) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (prod[i]) s[m++] = (sl__prodpos){prod[i], i};
    qsort(s, m, sizeof *s, sl__cmp_prodpos);
    /* pi[i] first holds the first candidate of i's product (never after i) ... */
    for (size_t k = 0; k < m; k++) pi[s[k].i] = k && strcmp(s[k - 1].id, s[k].id) == 0 ? pi[s[k - 1].i] : s[k].i;
    free(s);
    /* ... then, in candidate order, a first candidate takes the next number, the others its */
    for (size_t i = 0; i < n; i++)
        if (prod[i]) pi[i] = pi[i] == i ? (*np)++ : pi[pi[i]];
    return SL_OK;
}

/* The fold (above) of candidates c with their products prod: with `given` (a cluster's, over
 * every shard's candidates) or else with the stats of c itself; `part` (may be NULL) receives
 * what c contributes to a cluster's stats and then nothing is changed. */
sl_status sl__refs_on_catalog_scale(sl__cand *c, size_t n, char *const *prod, const sl_ref_fold *given,
                                    sl_ref_fold_part *part, sl__refscale *scale, sl_error *err) {
    if (scale) memset(scale, 0, sizeof *scale);
    size_t nref = 0;
    for (size_t i = 0; i < n; i++) nref += prod[i] && c[i].image_id >= SL_STORE_REF_ID_BASE;
    if (nref == 0 && !part) return SL_OK;
    /* per candidate: its product (index p); per product: best catalog candidate, best reference
     * candidate (indexes into c) */
    size_t *pi = sl__mallocarray(n + 1, sizeof *pi);
    size_t *bi = sl__mallocarray(n + 1, 2 * sizeof *bi); /* two per product (np <= n), size checked */
    double *v = sl__mallocarray(n + 1, sizeof *v);
    unsigned char *keep = sl__callocarray(n + 1, 1);
    size_t np = 0;
    sl_status st = pi && bi && v && keep ? sl__number_products(prod, n, pi, &np, err)
                                         : sl__err_set(err, SL_E_NOMEM, "out of memory");
    if (st != SL_OK) {
        free(pi);
        free(bi);
        free(v);
        free(keep);
        return st;
    }
    double lowest_cat = INFINITY;
    for (size_t p = 0; p < 2 * np; p++) bi[p] = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        if (!prod[i]) continue;
        int kind = c[i].image_id >= SL_STORE_REF_ID_BASE;
        if (!kind && c[i].score < lowest_cat) lowest_cat = c[i].score;
        size_t *b = &bi[2 * pi[i] + (size_t)kind];
        if (*b == SIZE_MAX || c[i].score > c[*b].score) *b = i;
    }
    double mean[2], sd[2];
    for (int kind = 0; kind < 2; kind++) {
        size_t m = 0;
        for (size_t p = 0; p < np; p++)
            if (bi[2 * p + (size_t)kind] != SIZE_MAX) v[m++] = c[bi[2 * p + (size_t)kind]].score;
        sl__top_stats(v, m, SL_CALIB_COHORT_DEFAULT, &mean[kind], &sd[kind]);
        if (part && st == SL_OK) { /* v is sorted best first: its K best */
            size_t k = m < SL_CALIB_COHORT_DEFAULT ? m : SL_CALIB_COHORT_DEFAULT;
            if (!(part->best[kind] = sl__mallocarray(k + 1, sizeof *part->best[kind])))
                st = sl__err_set(err, SL_E_NOMEM, "out of memory");
            else {
                memcpy(part->best[kind], v, k * sizeof *v);
                part->n[kind] = k;
            }
        }
    }
    if (part) {
        part->lowest = lowest_cat;
        nref = 0; /* collected: nothing changes */
    }
    if (given) {
        memcpy(mean, given->mean, sizeof mean);
        memcpy(sd, given->sd, sizeof sd);
        lowest_cat = given->lowest;
    }
    /* fewer than two products of a kind (or no spread): no scale to map onto; references are
     * then left out of this query's ranking - unless no catalog image is a candidate at all
     * (references filling the whole depth): then they stand for their products as they are */
    int usable = nref && sd[0] > 1e-6 && sd[1] > 1e-6 && isfinite(lowest_cat);
    if (scale) {
        scale->usable = usable;
        memcpy(scale->mean, mean, sizeof mean);
        memcpy(scale->sd, sd, sizeof sd);
    }
    if (!isfinite(lowest_cat)) memset(keep, 1, n);
    /* v from here: each product's best reference score (before c[] is rewritten) */
    for (size_t p = 0; p < np && usable; p++)
        if (bi[2 * p + 1] != SIZE_MAX) v[p] = c[bi[2 * p + 1]].score;
    for (size_t i = 0; i < n && usable; i++) {
        if (!prod[i] || bi[2 * pi[i] + 1] == SIZE_MAX) continue; /* gone, or no reference */
        size_t p = pi[i];
        if (c[i].image_id < SL_STORE_REF_ID_BASE) {
            c[i].score = sl__ref_fold_score(c[i].score, v[p], mean, sd);
        } else if (i == bi[2 * p + 1] && bi[2 * p] == SIZE_MAX) {
            /* its catalog images are below every candidate */
            c[i].score = sl__ref_fold_score(lowest_cat, v[p], mean, sd);
            keep[i] = 1;
        }
    }
    for (size_t i = 0; i < n && nref; i++)
        if (c[i].image_id >= SL_STORE_REF_ID_BASE && !keep[i]) c[i].score = -INFINITY;
    free(pi);
    free(bi);
    free(v);
    free(keep);
    return st;
}

/* The store's number of references (cached per generation; 0 when it cannot be read). Caller
 * holds the lock shared. */
static int64_t sl__engine_refs(sl_engine *e) {
    if (e->mrefs) return (int64_t)e->mrefs->n;
    if (e->no_refs) return 0;
    if (e->gen >= 0 && atomic_load(&e->refs_gen) == e->gen) return atomic_load(&e->refs_n);
    int64_t n = 0;
    if (sl_store_count_refs(e->store, &n, NULL) != SL_OK) n = 0;
    atomic_store(&e->refs_n, n);
    atomic_store(&e->refs_gen, e->gen);
    return n;
}

sl__refmap *sl__refmap_new(void) {
    sl__refmap *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    pthread_mutex_init(&m->mu, NULL);
    m->gen = -1;
    return m;
}

void sl__refmap_free(sl__refmap *m) {
    if (!m) return;
    free(m->ids);
    sl_strings_free(m->prods, m->n);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static int sl__cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* sl_store_image_products for a search's candidates: catalog images from the store, references
 * from e->refmap (loaded for e's generation when it is not). Falls back to the store alone for
 * a training's private engine, a generation not loaded yet (another process committed), more
 * than SL__ENGINE_REFMAP_MAX references or a map that cannot be loaded. Caller holds e->lock. */
static sl_status sl__image_products(sl_engine *e, const int64_t *ids, size_t n, char ***out, sl_error *err) {
    sl__refmap *m = e->refmap;
    size_t nr = 0;
    for (size_t i = 0; i < n; i++) nr += ids[i] >= SL_STORE_REF_ID_BASE;
    int64_t total = 0;
    if (!m || nr == 0 || e->mrefs || e->no_refs || e->gen < 0 || (total = sl__engine_refs(e)) <= 0 ||
        total > SL__ENGINE_REFMAP_MAX)
        return sl_store_image_products(e->store, ids, n, out, err);
    pthread_mutex_lock(&m->mu);
    if (m->gen != e->gen) {
        free(m->ids);
        sl_strings_free(m->prods, m->n);
        m->ids = NULL;
        m->prods = NULL;
        m->n = 0;
        m->gen = -1;
        if (sl_store_ref_products(e->store, &m->ids, &m->prods, &m->n, NULL) == SL_OK) m->gen = e->gen;
    }
    if (m->gen != e->gen) {
        pthread_mutex_unlock(&m->mu);
        return sl_store_image_products(e->store, ids, n, out, err);
    }
    /* the references from the map (under its lock), then the catalog images in one query */
    size_t nc = n - nr, j = 0;
    int64_t *cat = sl__mallocarray(nc + 1, sizeof *cat);
    char **res = sl__callocarray(n + 1, sizeof *res), **cp = NULL;
    sl_status st = cat && res ? SL_OK : sl__err_set(err, SL_E_NOMEM, "out of memory");
    for (size_t i = 0; st == SL_OK && i < n; i++) {
        if (ids[i] < SL_STORE_REF_ID_BASE) {
            cat[j++] = ids[i];
            continue;
        }
        const int64_t *hit = m->n ? bsearch(&ids[i], m->ids, m->n, sizeof *m->ids, sl__cmp_i64) : NULL;
        if (hit && !(res[i] = sl__strdup(m->prods[hit - m->ids]))) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    pthread_mutex_unlock(&m->mu);
    if (st == SL_OK) st = sl_store_image_products(e->store, cat, nc, &cp, err);
    for (size_t i = 0, c = 0; st == SL_OK && i < n; i++)
        if (ids[i] < SL_STORE_REF_ID_BASE) {
            res[i] = cp[c];
            cp[c++] = NULL;
        }
    sl_strings_free(cp, nc);
    free(cat);
    if (st != SL_OK) {
        sl_strings_free(res, n);
        return st;
    }
    *out = res;
    return SL_OK;
}

/* Adds candidates to the per-product accumulator (best image wins); references first folded
 * into their products' catalog scores (sl__refs_on_catalog_scale). */
static sl_status sl__accumulate(sl_engine *e, sl__cand *c, size_t n, const sl_ref_fold *fold, sl__pscore **acc,
                                size_t *n_acc, size_t *cap, sl__refscale *scale, sl_error *err) {
    int64_t *ids = sl__callocarray(n + 1, sizeof *ids);
    if (!ids) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) ids[i] = c[i].image_id;
    char **prod = NULL;
    sl_status st = sl__image_products(e, ids, n, &prod, err);
    free(ids);
    if (st != SL_OK) return st;
    for (size_t i = 0; i < n && e->mrefs; i++) { /* references in memory: their products */
        long m = sl__mref_index(e, c[i].image_id);
        if (m < 0) continue;
        free(prod[i]);
        if (!(prod[i] = sl__strdup(e->mrefs->pids[e->mrefs->cls[m]]))) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    if (st != SL_OK || (st = sl__refs_on_catalog_scale(c, n, prod, fold, NULL, scale, err)) != SL_OK) {
        sl_strings_free(prod, n);
        return st;
    }
    for (size_t i = 0; i < n && st == SL_OK; i++) {
        if (!prod[i]) continue; /* removed meanwhile */
        if (c[i].score == -INFINITY) continue; /* a reference standing for nothing */
        size_t j;
        for (j = 0; j < *n_acc; j++)
            if (strcmp((*acc)[j].product_id, prod[i]) == 0) break;
        if (j == *n_acc) {
            if (*n_acc == *cap) {
                size_t nc = *cap ? *cap * 2 : 64;
                sl__pscore *na = sl__reallocarray(*acc, nc, sizeof *na);
                if (!na) {
                    st = sl__err_set(err, SL_E_NOMEM, "out of memory");
                    break;
                }
                *acc = na;
                *cap = nc;
            }
            (*acc)[j].product_id = prod[i];
            prod[i] = NULL;
            (*acc)[j].score = -INFINITY;
            (*n_acc)++;
        }
        if (c[i].score > (*acc)[j].score) {
            (*acc)[j].score = c[i].score;
            (*acc)[j].image_id = c[i].image_id;
            (*acc)[j].inliers = c[i].inliers;
        }
    }
    sl_strings_free(prod, n);
    return st;
}

void sl__pscores_free(sl__pscore *acc, size_t n) {
    for (size_t i = 0; acc && i < n; i++) free(acc[i].product_id);
    free(acc);
}

/* ---- cohort and confidence (learn.h "calibrated confidence") ------------------------------- */

double sl__engine_cohort_mean(const sl__pscore *sorted, size_t n, int k, const char *skip1,
                              const char *skip2) {
    double sum = 0;
    int cnt = 0;
    for (size_t i = 0; i < n && cnt < k; i++) {
        const char *p = sorted[i].product_id;
        if ((skip1 && strcmp(p, skip1) == 0) || (skip2 && strcmp(p, skip2) == 0)) continue;
        sum += sorted[i].score;
        cnt++;
    }
    return cnt ? sum / cnt : 0.0;
}

double sl__engine_match_score(double score, double cohort_mean) {
    double m = score - cohort_mean;
    return m < SL_CALIB_SCORE_MIN ? SL_CALIB_SCORE_MIN : m > SL_CALIB_SCORE_MAX ? SL_CALIB_SCORE_MAX : m;
}

/* Sorts products by score, best first (ties by id). */
void sl__engine_sort_pscores(sl__pscore *v, size_t n) {
    if (n > 1) qsort(v, n, sizeof *v, sl__cmp_pscore);
}

/* Applies the text boost (into the ranking), sorts, keeps ranks offset+1..offset+k and fills the
 * metadata, the confidence of each result from its image score against the cohort (`cohort`:
 * the query's products without filters, sorted best first). */
static sl_status sl__finish(sl_engine *e, const sl_query *q, int k, int offset, sl__pscore *acc,
                            size_t n_acc, const sl__pscore *cohort, size_t n_cohort, sl_matches *out,
                            sl_error *err) {
    const sl_calib *cal = sl_features_calib(e->feat);
    int ck = sl_calib_cohort(cal);
    double cthr = sl_calib_threshold(cal, SL_CALIB_RESULT);
    /* the confidence is the image's: computed before any boost reorders the list */
    for (size_t i = 0; i < n_acc; i++) {
        const char *p = acc[i].product_id;
        double m = sl__engine_match_score(acc[i].score, sl__engine_cohort_mean(cohort, n_cohort, ck, p, NULL));
        double g = sl__engine_match_score(acc[i].score, sl__engine_cohort_mean(cohort, n_cohort, 1, p, NULL));
        acc[i].confidence = sl_calib_confidence(cal, SL_CALIB_RESULT, m, g);
    }
    if (q && q->text && *q->text && q->text_mode == SL_TEXT_BOOST) {
        sl_store_filter f;
        memset(&f, 0, sizeof f);
        f.text = q->text;
        int64_t *ids = NULL;
        size_t n = 0;
        sl_status st = sl_store_filter_images(e->store, &f, &ids, &n, err);
        if (st != SL_OK) return st;
        const double b = SL_ENGINE_TEXT_BOOST_DEFAULT;
        for (size_t i = 0; i < n_acc; i++) {
            sl_image_ref *refs = NULL;
            size_t nr = 0;
            int hit = 0;
            if (sl_store_product_images(e->store, acc[i].product_id, &refs, &nr, NULL) == SL_OK)
                for (size_t r = 0; r < nr && !hit; r++)
                    hit = bsearch(&refs[r].id, ids, n, sizeof *ids, sl__cmp_u64) != NULL;
            sl_image_refs_free(refs, nr);
            /* the same order as image score + b for matches, kept in -1..1 */
            acc[i].score = (acc[i].score + (hit ? b : 0.0)) / (1.0 + b);
        }
        free(ids);
    }
    sl__engine_sort_pscores(acc, n_acc);
    size_t first = (size_t)offset < n_acc ? (size_t)offset : n_acc;
    size_t want = n_acc - first < (size_t)k ? n_acc - first : (size_t)k;
    out->items = sl__callocarray(want ? want : 1, sizeof *out->items);
    if (!out->items) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    for (size_t i = first; i < first + want; i++) {
        sl_product p;
        if (sl_store_get_product(e->store, acc[i].product_id, &p, NULL) != SL_OK) continue;
        sl_match *m = &out->items[out->n];
        sl_image_ref r;
        memset(&r, 0, sizeof r);
        int64_t shown = acc[i].image_id;
        if (shown >= SL_STORE_REF_ID_BASE) { /* a reference is never shown: the first catalog image */
            sl_image_ref *imgs = NULL;
            size_t ni = 0;
            shown = -1;
            if (sl_store_product_images(e->store, acc[i].product_id, &imgs, &ni, NULL) == SL_OK && ni) shown = imgs[0].id;
            sl_image_refs_free(imgs, ni);
        }
        (void)sl_store_get_image(e->store, shown, &r, NULL);
        m->product_id = p.id;
        m->title = p.title;
        m->category = p.category;
        m->price = p.price;
        m->has_price = p.has_price;
        m->score = acc[i].score;
        m->confidence = acc[i].confidence;
        m->match = acc[i].confidence >= cthr;
        m->image_id = shown;
        /* where it came from; an upload has no source: its copy in the store */
        if (r.source && *r.source) {
            m->image = r.source;
            r.source = NULL;
        } else {
            m->image = r.file ? r.file : sl__strdup("");
            r.file = NULL;
        }
        m->inliers = acc[i].inliers;
        m->url = p.url;
        m->currency = p.currency;
        sl_image_ref_clear(&r);
        free(p.description);
        free(p.attrs_json);
        out->n++;
        if (!m->image || !m->url || !m->currency) {
            sl_matches_free(out);
            return sl__err_set(err, SL_E_NOMEM, "out of memory");
        }
    }
    return SL_OK;
}

static int sl__k_of(const sl_query *q) {
    int k = q && q->k > 0 ? q->k : SL_ENGINE_K_DEFAULT;
    return k < SL_ENGINE_K_MIN ? SL_ENGINE_K_MIN : k > SL_ENGINE_K_MAX ? SL_ENGINE_K_MAX : k;
}

/* Candidate images fetched per query vector for a ranking of `depth` products. */
static size_t sl__candidates_for(const sl_engine *e, size_t depth) {
    size_t nc = (size_t)e->candidates;
    if (nc < depth * 8) nc = depth * 8;
    if (nc > SL_INDEX_K_MAX) nc = SL_INDEX_K_MAX;
    return nc;
}

size_t sl_engine_ref_depth(size_t nc, int64_t cnt, int64_t nrefs) {
    if (nrefs > 0 && nrefs < cnt) {
        double scaled = (double)nc * (double)cnt / (double)(cnt - nrefs);
        nc = scaled > SL_INDEX_K_MAX ? SL_INDEX_K_MAX : (size_t)scaled;
    }
    return nc;
}

/* sl__engine_rank_products; *scale (may be NULL) receives how the last query vector's references
 * were folded. */
static sl_status sl__rank(sl_engine *e, const float *const *vecs, sl_local_features *const *locals, size_t nq,
                          const sl_index_filter *f, int ef, size_t k, sl__pscore **out, size_t *n_out,
                          sl__refscale *scale, sl_error *err) {
    if (scale) memset(scale, 0, sizeof *scale);
    *out = NULL;
    *n_out = 0;
    /* without an index the ranking would be empty, and a check's cohort with it (a confidence
     * against no other product): refused instead */
    if (e->no_index) return sl__err_set(err, SL_E_STATE, "this engine was opened without an index");
    if (!e->idx || sl_index_count(e->idx) == 0) return SL_OK;
    size_t nc = sl__candidates_for(e, k);
    uint64_t cnt = sl_index_count(e->idx);
    /* references (labelled photos) crowd the nearest neighbours of a shopper photo: the depth
     * grows with their share of the index so the catalog images keep theirs */
    nc = sl_engine_ref_depth(nc, (int64_t)cnt, sl__engine_refs(e));
    if (nc > cnt) nc = (size_t)cnt;
    sl_index_result *res = sl__mallocarray(nc ? nc : 1, sizeof *res);
    sl__cand *c = sl__mallocarray(nc ? nc : 1, sizeof *c);
    sl__pscore *acc = NULL;
    size_t n_acc = 0, cap = 0;
    sl_status st = SL_OK;
    if (!res || !c) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    for (size_t qi = 0; qi < nq && st == SL_OK && nc > 0; qi++) {
        size_t got = 0;
        st = sl__engine_candidates(e, vecs[qi], nc, f, ef, res, &got, err);
        if (st != SL_OK) break;
        for (size_t i = 0; i < got; i++) {
            c[i].image_id = (int64_t)res[i].id;
            c[i].score = res[i].score;
            c[i].verify = -1;
            c[i].given = 0;
        }
        if ((st = sl__rerank(e, locals ? locals[qi] : NULL, c, got, err)) != SL_OK) break;
        /* the references verified, before the fold rewrites their scores (one query vector) */
        sl__refscale ver;
        ver.n_verified = 0;
        for (size_t i = 0; scale && nq == 1 && i < got && ver.n_verified < SL_ENGINE_VERIFY_REFS; i++)
            if (c[i].image_id >= SL_STORE_REF_ID_BASE && c[i].inliers >= 0) {
                ver.verified_id[ver.n_verified] = c[i].image_id;
                ver.verified_score[ver.n_verified++] = c[i].score;
            }
        st = sl__accumulate(e, c, got, NULL, &acc, &n_acc, &cap, scale, err);
        if (scale && nq == 1) {
            scale->n_verified = ver.n_verified;
            memcpy(scale->verified_id, ver.verified_id, sizeof ver.verified_id);
            memcpy(scale->verified_score, ver.verified_score, sizeof ver.verified_score);
        }
    }
    free(res);
    free(c);
    if (st != SL_OK) {
        sl__pscores_free(acc, n_acc);
        return st;
    }
    sl__engine_sort_pscores(acc, n_acc);
    *out = acc;
    *n_out = n_acc;
    return SL_OK;
}

sl_status sl__engine_rank_products(sl_engine *e, const float *const *vecs, sl_local_features *const *locals,
                                   size_t nq, const sl_index_filter *f, int ef, size_t k, sl__pscore **out,
                                   size_t *n_out, sl_error *err) {
    return sl__rank(e, vecs, locals, nq, f, ef, k, out, n_out, NULL, err);
}

sl_status sl__engine_rank_check(sl_engine *e, const float *vec, sl_local_features *lf, size_t k, int64_t skip,
                                sl__pscore **out, size_t *n_out, sl__refscale *scale, sl_error *err) {
    const float *vs[1] = {vec};
    sl_local_features *ls[1] = {lf};
    uint64_t sk = (uint64_t)skip;
    sl__excl ex = {&sk, skip >= 0};
    sl_index_filter f;
    sl__index_filter(&f, NULL, 0, &ex);
    return sl__rank(e, vs, ls, 1, skip >= 0 ? &f : NULL, 0, k, out, n_out, scale, err);
}

/* The query's offset, checked against k (SL_E_INVALID when the page goes too deep). */
static sl_status sl__offset_of(const sl_query *q, int k, int *offset, sl_error *err) {
    *offset = q ? q->offset : 0;
    if (*offset < 0 || *offset > SL_ENGINE_OFFSET_MAX || *offset + k > SL_ENGINE_RANK_MAX)
        return sl__err_set(err, SL_E_INVALID, "offset must be in 0..%d with offset + k at most %d "
                           "(offset %d, k %d)", SL_ENGINE_OFFSET_MAX, SL_ENGINE_RANK_MAX, *offset, k);
    return SL_OK;
}

/* Searches with nq query vectors (and optional local features), merging products; images in
 * `exclude` (sorted) are never returned. The confidence of a result compares it with the
 * products nearest to the query without the query's filters (computed again unfiltered when
 * there are filters). Caller holds the lock shared. */
static sl_status sl__search_vecs(sl_engine *e, const float *const *vecs,
                                 sl_local_features *const *locals, size_t nq, const sl_query *q,
                                 const uint64_t *exclude, size_t n_exclude, sl_matches *out,
                                 sl_error *err) {
    memset(out, 0, sizeof *out);
    int k = sl__k_of(q), offset = 0, ef = 0;
    sl_status st = sl__offset_of(q, k, &offset, err);
    if (st == SL_OK) st = sl__engine_ef_of(q, &ef, err);
    if (st != SL_OK) return st;
    if (e->no_index) return sl__err_set(err, SL_E_STATE, "this engine was opened without an index");
    if (!e->idx || sl_index_count(e->idx) == 0) return SL_OK;
    uint64_t *allowed = NULL;
    size_t n_allowed = 0;
    int filtered = 0;
    st = sl__allowed(e, q, &allowed, &n_allowed, &filtered, err);
    if (st != SL_OK) return st;
    if (filtered && n_allowed == 0) {
        free(allowed);
        return SL_OK;
    }
    sl__excl ex = {exclude, n_exclude};
    sl_index_filter f, fx; /* fx: the exclusions only (the unfiltered cohort of the confidence) */
    sl__index_filter(&f, filtered ? allowed : NULL, n_allowed, &ex);
    sl__index_filter(&fx, NULL, 0, &ex);
    /* the depth of the ranking a page belongs to (so that pages of one query agree) */
    size_t depth = (size_t)offset + (size_t)k;
    sl__pscore *acc = NULL, *coh = NULL;
    size_t n_acc = 0, n_coh = 0;
    st = sl__engine_rank_products(e, vecs, locals, nq, filtered || n_exclude ? &f : NULL, ef, depth, &acc, &n_acc, err);
    if (st == SL_OK && filtered) {
        size_t ck = (size_t)sl_calib_cohort(sl_features_calib(e->feat)) + 1;
        st = sl__engine_rank_products(e, vecs, locals, nq, n_exclude ? &fx : NULL, ef, ck, &coh, &n_coh, err);
    }
    if (st == SL_OK)
        st = sl__finish(e, q, k, offset, acc, n_acc, filtered ? coh : acc, filtered ? n_coh : n_acc, out, err);
    if (st != SL_OK) sl_matches_free(out);
    sl__pscores_free(acc, n_acc);
    sl__pscores_free(coh, n_coh);
    free(allowed);
    return st;
}

/* Describes a query image with features f: vector (dim floats) and local features (when
 * verifying); *vec = NULL when the features are not trained (empty store). */
static sl_status sl__describe_with(const sl_features *f, const sl_image *img, float **vec,
                                   sl_local_features **local, sl_error *err) {
    *vec = NULL;
    *local = NULL;
    size_t dim = sl_features_dim(f);
    if (!sl_features_ready(f) || dim == 0) return SL_OK;
    float *v = sl__mallocarray(dim, sizeof *v);
    if (!v) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    sl_status st = sl_features_extract(f, img, v, sl_features_uses_verify(f) ? local : NULL, err);
    if (st == SL_OK && (st = sl_features_project(f, SL_HEAD_QUERY, v, v, 1)) != SL_OK)
        sl__err_set(err, st, "applying the learned head to the query");
    if (st != SL_OK) {
        free(v);
        if (*local) sl_local_features_free(*local);
        *local = NULL;
        return st;
    }
    *vec = v;
    return SL_OK;
}

static sl_status sl__describe_query(sl_engine *e, const sl_image *img, float **vec,
                                    sl_local_features **local, sl_error *err) {
    return sl__describe_with(e->feat, img, vec, local, err);
}

/* Takes the lock shared with the query described by the current features. The description
 * (the slow part) runs before the lock with a snapshot of the features; if a training replaced
 * them meanwhile, the query is described again under the lock. */
static sl_status sl__lock_described(sl_engine *e, const sl_image *img, float **vec,
                                    sl_local_features **local, sl_error *err) {
    pthread_rwlock_rdlock(&e->lock);
    sl_features *f = e->feat; /* stays valid: replaced features are retired, not freed */
    int64_t version = e->features_version;
    pthread_rwlock_unlock(&e->lock);
    sl_status st = sl__describe_with(f, img, vec, local, err);
    pthread_rwlock_rdlock(&e->lock);
    if (st == SL_OK && (e->features_version != version || e->feat != f)) {
        free(*vec);
        sl_local_features_free(*local);
        st = sl__describe_query(e, img, vec, local, err);
    }
    return st; /* the lock is held shared in every case */
}

sl_status sl_engine_describe(sl_engine *e, const sl_image *img, float **vec, size_t *dim,
                             void **local, size_t *local_len, int64_t *features_version,
                             sl_error *err) {
    *vec = NULL;
    *dim = 0;
    if (local) *local = NULL;
    if (local_len) *local_len = 0;
    *features_version = 0;
    if (!e || !img) return sl__err_set(err, SL_E_INVALID, "no image");
    float *v = NULL;
    sl_local_features *lf = NULL;
    sl_status st = sl__lock_described(e, img, &v, &lf, err);
    size_t d = sl_features_dim(e->feat);
    int64_t version = e->features_version;
    pthread_rwlock_unlock(&e->lock);
    if (st == SL_OK && !v)
        st = sl__err_set(err, SL_E_STATE, "the store's features are not trained yet (add images first)");
    if (st == SL_OK && lf && local) {
        size_t len = 0;
        st = sl_local_features_serialize(lf, local, &len, err);
        if (local_len) *local_len = len;
    }
    sl_local_features_free(lf);
    if (st != SL_OK) {
        free(v);
        return st;
    }
    *vec = v;
    *dim = d;
    *features_version = version;
    return SL_OK;
}

sl_status sl_engine_nearest(sl_engine *e, const float *vec, size_t dim, const sl_query *q, size_t k,
                            sl_image_hit *out, size_t *n_out, sl_error *err) {
    if (n_out) *n_out = 0;
    if (!e || !vec || !out || !n_out) return sl__err_set(err, SL_E_INVALID, "NULL argument");
    if (k < 1 || k > SL_ENGINE_CANDIDATES_MAX)
        return sl__err_set(err, SL_E_INVALID, "k %zu out of [1, %d]", k, SL_ENGINE_CANDIDATES_MAX);
    /* the index compares L2-normalized vectors by inner product: normalize a copy */
    double n2 = 0;
    for (size_t i = 0; i < dim; i++) n2 += (double)vec[i] * vec[i];
    if (!isfinite(n2) || !(n2 > 0)) return sl__err_set(err, SL_E_INVALID, "vector is zero or not finite");
    float *unit = sl__mallocarray(dim ? dim : 1, sizeof *unit);
    if (!unit) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    for (size_t i = 0; i < dim; i++) unit[i] = (float)(vec[i] / sqrt(n2));
    pthread_rwlock_rdlock(&e->lock);
    sl_status st = SL_OK;
    uint64_t *allowed = NULL;
    size_t n_allowed = 0, got = 0;
    int filtered = 0, ef = 0;
    sl_index_result *res = NULL;
    if (sl__engine_ef_of(q, &ef, err) != SL_OK) st = SL_E_INVALID;
    else if (!sl_features_ready(e->feat) || sl_features_dim(e->feat) == 0)
        st = sl__err_set(err, SL_E_STATE, "the store's features are not trained yet (add images first)");
    else if (dim != sl_features_dim(e->feat))
        st = sl__err_set(err, SL_E_INVALID, "vector of %zu floats, the store's features make %zu", dim,
                         sl_features_dim(e->feat));
    if (st == SL_OK) st = sl__allowed(e, q, &allowed, &n_allowed, &filtered, err);
    if (st == SL_OK && e->idx && !(filtered && n_allowed == 0)) {
        sl_index_filter f;
        memset(&f, 0, sizeof f);
        f.allowed_ids = allowed;
        f.n_allowed = n_allowed;
        if (!(res = sl__mallocarray(k, sizeof *res))) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        else st = sl__engine_candidates(e, unit, k, filtered ? &f : NULL, ef, res, &got, err);
    }
    pthread_rwlock_unlock(&e->lock);
    size_t w = 0;
    for (size_t i = 0; st == SL_OK && i < got; i++) {
        if (res[i].id >= (uint64_t)SL_STORE_REF_ID_BASE) continue; /* references are not images */
        out[w].image_id = (int64_t)res[i].id;
        out[w++].score = res[i].score;
    }
    if (st == SL_OK) *n_out = w;
    free(res);
    free(allowed);
    free(unit);
    return st;
}

sl_status sl_engine_search(sl_engine *e, const sl_image *img, const sl_query *q,
                           sl_matches *out, sl_error *err) {
    memset(out, 0, sizeof *out);
    if (!e || !img) return sl__err_set(err, SL_E_INVALID, "no image");
    if (q && q->region_w > 0) { /* search the region alone */
        sl_image *cut = NULL;
        sl_status rs = sl__region_of_image(e, img, q, &cut, err);
        if (rs != SL_OK) return rs;
        sl_query whole = *q;
        whole.region_w = 0;
        rs = sl_engine_search(e, cut, &whole, out, err);
        sl_image_free(cut);
        return rs;
    }
    float *vec = NULL;
    sl_local_features *lf = NULL;
    sl_status st = sl__lock_described(e, img, &vec, &lf, err);
    if (st == SL_OK && vec) {
        const float *vs[1] = {vec};
        sl_local_features *ls[1] = {lf};
        st = sl__search_vecs(e, vs, ls, 1, q, NULL, 0, out, err);
    }
    pthread_rwlock_unlock(&e->lock);
    free(vec);
    sl_local_features_free(lf);
    return st;
}

sl_status sl_engine_search_bytes(sl_engine *e, const void *data, size_t len, const sl_query *q,
                                 sl_matches *out, sl_error *err) {
    memset(out, 0, sizeof *out);
    sl_image *img = NULL;
    sl_query whole;
    if (q && q->region_w > 0) { /* region in pixels of the original: cut before shrinking */
        whole = *q;
        whole.region_w = 0;
        sl_status rs = sl__region_of_bytes(e, data, len, q, &img, err);
        if (rs != SL_OK) return rs;
        q = &whole;
    } else {
        sl_status ds = sl__engine_decode(e, data, len, &img, NULL, err);
        if (ds != SL_OK) return ds;
    }
    sl_status st = sl_engine_search(e, img, q, out, err);
    sl_image_free(img);
    return st;
}

sl_status sl_engine_search_file(sl_engine *e, const char *path, const sl_query *q,
                                sl_matches *out, sl_error *err) {
    memset(out, 0, sizeof *out);
    if (q && q->region_w > 0) { /* the region is in pixels of the file's image: go by bytes */
        void *data = NULL;
        size_t len = 0;
        sl_status rs = sl__read_file(path, SL_IMAGE_MAX_BYTES_DEFAULT, &data, &len, err);
        if (rs == SL_OK) rs = sl_engine_search_bytes(e, data, len, q, out, err);
        free(data);
        return rs;
    }
    sl_image_load_opts o;
    memset(&o, 0, sizeof o);
    o.max_side = e->max_side;
    sl_image *img = NULL;
    sl_status st = sl_image_load_file(path, &o, &img, NULL, err);
    if (st != SL_OK) return st;
    st = sl_engine_search(e, img, q, out, err);
    sl_image_free(img);
    return st;
}

/* Stored vectors and local features of a product's images. */
typedef struct sl__pfeat {
    sl_image_ref *refs;
    size_t n;
    float **vecs;
    sl_local_features **locals;
    uint64_t *ids;  /* sorted */
} sl__pfeat;

static void sl__pfeat_free(sl__pfeat *p) {
    for (size_t i = 0; i < p->n; i++) {
        if (p->vecs) free(p->vecs[i]);
        if (p->locals) sl_local_features_free(p->locals[i]);
    }
    free(p->vecs);
    free(p->locals);
    free(p->ids);
    sl_image_refs_free(p->refs, p->n);
    memset(p, 0, sizeof *p);
}

static sl_status sl__pfeat_load(sl_engine *e, const char *product_id, sl__pfeat *p, sl_error *err) {
    memset(p, 0, sizeof *p);
    sl_product prod;
    sl_status st = sl_store_get_product(e->store, product_id, &prod, err);
    if (st != SL_OK) return st;
    sl_product_clear(&prod);
    if ((st = sl_store_product_images(e->store, product_id, &p->refs, &p->n, err)) != SL_OK) return st;
    p->vecs = sl__callocarray(p->n + 1, sizeof *p->vecs);
    p->locals = sl__callocarray(p->n + 1, sizeof *p->locals);
    p->ids = sl__callocarray(p->n + 1, sizeof *p->ids);
    if (!p->vecs || !p->locals || !p->ids) {
        sl__pfeat_free(p);
        return sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    size_t dim = sl_features_dim(e->feat);
    for (size_t i = 0; i < p->n; i++) {
        p->ids[i] = (uint64_t)p->refs[i].id;
        void *blob = NULL;
        size_t blen = 0, d = 0;
        st = sl_store_image_features(e->store, p->refs[i].id, &p->vecs[i], &d, &blob, &blen, err);
        if (st == SL_OK && d != dim) st = sl__err_set(err, SL_E_CORRUPT, "image %lld: vector of %zu floats, expected %zu",
                                                      (long long)p->refs[i].id, d, dim);
        /* stored vectors are before the head; catalog images are on its gallery side */
        if (st == SL_OK && (st = sl_features_project(e->feat, SL_HEAD_GALLERY, p->vecs[i], p->vecs[i], 1)) != SL_OK)
            sl__err_set(err, st, "applying the learned head");
        if (st == SL_OK && blob && sl_features_uses_verify(e->feat))
            (void)sl_local_features_deserialize(blob, blen, &p->locals[i], NULL);
        free(blob);
        if (st != SL_OK) {
            sl__pfeat_free(p);
            return st;
        }
    }
    qsort(p->ids, p->n, sizeof *p->ids, sl__cmp_u64);
    return SL_OK;
}

sl_status sl_engine_similar(sl_engine *e, const char *product_id, const sl_query *q,
                            sl_matches *out, sl_error *err) {
    memset(out, 0, sizeof *out);
    pthread_rwlock_rdlock(&e->lock);
    sl__pfeat p;
    sl_status st = sl__pfeat_load(e, product_id, &p, err);
    if (st == SL_OK) {
        /* never itself: its catalog images and its references (labelled photos) are excluded */
        int64_t *rids = NULL;
        size_t nr = 0;
        uint64_t *ex = NULL;
        st = sl_store_product_ref_ids(e->store, product_id, &rids, &nr, err);
        if (st == SL_OK && !(ex = sl__mallocarray(p.n + nr + 1, sizeof *ex))) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        if (st == SL_OK) {
            memcpy(ex, p.ids, p.n * sizeof *ex);
            for (size_t i = 0; i < nr; i++) ex[p.n + i] = (uint64_t)rids[i]; /* above every image id */
            st = sl__search_vecs(e, (const float *const *)p.vecs, p.locals, p.n, q, ex, p.n + nr, out, err);
        }
        free(ex);
        free(rids);
        sl__pfeat_free(&p);
    }
    pthread_rwlock_unlock(&e->lock);
    return st;
}

/* ---- classify ------------------------------------------------------------------------------ */

void sl_classification_free(sl_classification *c) {
    if (!c) return;
    for (size_t i = 0; i < c->n_votes; i++) free(c->votes[i].category);
    free(c->votes);
    free(c->category);
    memset(c, 0, sizeof *c);
}

static int sl__cmp_vote(const void *a, const void *b) {
    const sl_category_vote *x = a, *y = b;
    if (x->weight != y->weight) return x->weight > y->weight ? -1 : 1;
    return strcmp(x->category, y->category);
}

sl_status sl_classification_from_matches(const sl_matches *m, sl_classification *out,
                                         sl_error *err) {
    memset(out, 0, sizeof *out);
    /* each of the nearest products votes for its category with its (non-negative) score */
    double total = 0;
    out->votes = sl__callocarray(m->n + 1, sizeof *out->votes);
    if (!out->votes) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    for (size_t i = 0; i < m->n; i++) {
        double w = m->items[i].score > 0 ? m->items[i].score : 0;
        const char *cat = m->items[i].category ? m->items[i].category : "";
        size_t j;
        for (j = 0; j < out->n_votes; j++)
            if (strcmp(out->votes[j].category, cat) == 0) break;
        if (j == out->n_votes) {
            out->votes[j].category = sl__strdup(cat);
            if (!out->votes[j].category) {
                sl_classification_free(out);
                return sl__err_set(err, SL_E_NOMEM, "out of memory");
            }
            out->n_votes++;
        }
        out->votes[j].weight += w;
        total += w;
    }
    for (size_t j = 0; j < out->n_votes; j++)
        out->votes[j].weight = total > 0 ? out->votes[j].weight / total : 1.0 / (double)out->n_votes;
    qsort(out->votes, out->n_votes, sizeof *out->votes, sl__cmp_vote);
    if (out->n_votes) {
        out->category = sl__strdup(out->votes[0].category);
        out->confidence = out->votes[0].weight;
    }
    return SL_OK;
}

sl_status sl_engine_classify(sl_engine *e, const sl_image *img, int k, sl_classification *out,
                             sl_error *err) {
    memset(out, 0, sizeof *out);
    if (k <= 0) k = 10;
    if (k > SL_ENGINE_K_MAX) k = SL_ENGINE_K_MAX;
    sl_query q;
    memset(&q, 0, sizeof q);
    q.k = k;
    sl_matches m;
    sl_status st = sl_engine_search(e, img, &q, &m, err);
    if (st != SL_OK) return st;
    st = sl_classification_from_matches(&m, out, err);
    sl_matches_free(&m);
    return st;
}

/* ---- check --------------------------------------------------------------------------------- */

void sl_check_result_free(sl_check_result *r) {
    if (!r) return;
    free(r->image);
    memset(r, 0, sizeof *r);
}

static double sl__dot(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* A product's references (index ids and their vectors on the query side of the head, n * dim
 * floats), without the one with index id skip: the store's, or a private engine's in memory.
 * *ids, *vecs NULL when none. Caller holds the lock shared. */
static sl_status sl__product_refs(sl_engine *e, const char *product_id, int64_t skip, int64_t **ids, float **vecs,
                                  size_t *n, sl_error *err) {
    *ids = NULL;
    *vecs = NULL;
    *n = 0;
    size_t dim = sl_features_dim(e->feat), m = 0;
    sl_status st = SL_OK;
    if (e->mrefs) {
        const sl__mrefs *r = e->mrefs;
        for (size_t i = 0; i < r->n; i++) m += strcmp(r->pids[r->cls[i]], product_id) == 0;
        if (m && (!(*ids = sl__mallocarray(m, sizeof **ids)) || !(*vecs = sl__mallocarray(m, dim * sizeof **vecs))))
            st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        for (size_t i = 0; i < r->n && st == SL_OK; i++) {
            int64_t id = SL_STORE_REF_ID_BASE + (int64_t)i;
            if (id == skip || strcmp(r->pids[r->cls[i]], product_id) != 0) continue;
            (*ids)[*n] = id;
            memcpy(*vecs + *n * dim, r->vecs + i * r->dim, dim * sizeof **vecs);
            (*n)++;
        }
    } else if (!e->no_refs && sl__engine_refs(e) > 0) {
        int64_t *all = NULL;
        unsigned char *found = NULL;
        if ((st = sl_store_product_ref_ids(e->store, product_id, &all, &m, err)) == SL_OK && m) {
            for (size_t i = 0; i < m; i++)
                if (all[i] != skip) all[(*n)++] = all[i];
            if (!(*vecs = sl__mallocarray(*n + 1, dim * sizeof **vecs)) || !(found = sl__callocarray(*n + 1, 1)))
                st = sl__err_set(err, SL_E_NOMEM, "out of memory");
            if (st == SL_OK) st = sl_store_image_vectors(e->store, all, *n, dim, *vecs, found, err);
            size_t k = 0; /* only the ones read (one removed meanwhile is no reference) */
            for (size_t i = 0; i < *n && st == SL_OK; i++) {
                if (!found[i]) continue;
                all[k] = all[i];
                if (k != i) memmove(*vecs + k * dim, *vecs + i * dim, dim * sizeof **vecs);
                k++;
            }
            *n = k;
        }
        free(found);
        *ids = all;
    }
    /* stored vectors are before the head; references are photos: its query side */
    if (st == SL_OK && *n && (st = sl_features_project(e->feat, SL_HEAD_QUERY, *vecs, *vecs, *n)) != SL_OK)
        sl__err_set(err, st, "applying the learned head");
    if (st != SL_OK || *n == 0) {
        free(*ids);
        free(*vecs);
        *ids = NULL;
        *vecs = NULL;
        *n = 0;
    }
    return st;
}

/* The best score of a product's references against a query, as search scores each of them for
 * this query: re-ranked as the query's own ranking re-ranked it when it is one of the references
 * that ranking verified (scale, sl__engine_rank_check), else its global similarity blended
 * unverified; divided by the blend's maximum. Nothing is verified here, so a check costs no
 * verification per reference and scores a product exactly as search does. *has = 0 when it has
 * none. */
static sl_status sl__best_ref_score(sl_engine *e, const char *product_id, const float *vec,
                                    const sl__refscale *scale, int64_t skip, double *best, int *has,
                                    sl_error *err) {
    *has = 0;
    *best = -INFINITY;
    int64_t *ids = NULL;
    float *vecs = NULL;
    size_t n = 0, dim = sl_features_dim(e->feat);
    sl_status st = sl__product_refs(e, product_id, skip, &ids, &vecs, &n, err);
    if (st != SL_OK || n == 0) return st;
    double smax = sl_features_rerank_max(e->feat);
    sl_verify_result none;
    memset(&none, 0, sizeof none);
    for (size_t i = 0; i < n; i++) {
        double s = NAN;
        for (size_t v = 0; v < scale->n_verified && isnan(s); v++)
            if (scale->verified_id[v] == ids[i]) s = scale->verified_score[v];
        if (isnan(s)) s = sl_features_rerank_score(e->feat, sl__dot8(vec, vecs + i * dim, dim), &none) / smax;
        if (s > *best) *best = s;
    }
    *has = 1;
    free(ids);
    free(vecs);
    return SL_OK;
}

sl_status sl__engine_product_score(sl_engine *e, const char *product_id, const float *vec,
                                   const sl_local_features *lf, const sl__refscale *scale, int64_t skip,
                                   sl__pscore *out, char **image, sl_error *err) {
    memset(out, 0, sizeof *out);
    out->inliers = -1;
    if (image) *image = NULL;
    sl__pfeat p;
    sl_status st = sl__pfeat_load(e, product_id, &p, err);
    if (st != SL_OK) return st;
    size_t dim = sl_features_dim(e->feat);
    double smax = sl_features_rerank_max(e->feat);
    int verify = lf && sl_features_uses_verify(e->feat);
    out->score = p.n ? -INFINITY : 0.0;
    for (size_t i = 0; i < p.n; i++) {
        sl_verify_result r;
        memset(&r, 0, sizeof r);
        int inl = -1;
        if (verify && p.locals[i]) {
            sl__verify(e, lf, p.locals[i], &r);
            inl = r.inliers;
        }
        double g = sl_features_rerank_score(e->feat, sl__dot(vec, p.vecs[i], dim), &r) / smax;
        if (g > out->score) {
            out->score = g;
            out->image_id = p.refs[i].id;
            out->inliers = inl;
            if (image) {
                free(*image);
                /* where it came from; an upload has no source: its copy in the store */
                *image = sl__strdup(p.refs[i].source[0] ? p.refs[i].source : p.refs[i].file);
            }
        }
    }
    sl__pfeat_free(&p);
    /* its references as search folds them (sl__refs_on_catalog_scale): the mean with the best one
     * put on the catalog's scale of this query */
    if (scale && scale->usable) {
        double best;
        int has;
        if ((st = sl__best_ref_score(e, product_id, vec, scale, skip, &best, &has, err)) != SL_OK) return st;
        if (has)
            out->score = sl__ref_fold_score(out->score, best, scale->mean, scale->sd);
    }
    return SL_OK;
}

sl_status sl_engine_check_products(sl_engine *e, const sl_image *img, const char *const *product_ids,
                                   size_t n, double threshold, sl_check_result *out, sl_status *status,
                                   sl_error *err) {
    if (out) memset(out, 0, n * sizeof *out);
    if (!e || !img || !out || (n && !product_ids)) return sl__err_set(err, SL_E_INVALID, "check: NULL argument");
    if (!(threshold <= 1.0) || threshold < 0)
        return sl__err_set(err, SL_E_INVALID, "check: threshold %g is not a confidence (0..1; 0 = the store's operating point)",
                           threshold);
    for (size_t i = 0; i < n; i++) {
        out[i].inliers = -1;
        if (status) status[i] = SL_OK;
    }
    float *vec = NULL;
    sl_local_features *lf = NULL;
    sl__pscore *coh = NULL;
    size_t n_coh = 0;
    sl_status st = sl__lock_described(e, img, &vec, &lf, err);
    const sl_calib *cal = sl_features_calib(e->feat);
    int ck = sl_calib_cohort(cal);
    double thr = threshold > 0 ? threshold : sl_calib_threshold(cal, SL_CALIB_PAIR);
    sl__refscale scale;
    memset(&scale, 0, sizeof scale);
    if (st == SL_OK && vec) st = sl__engine_rank_check(e, vec, lf, (size_t)ck + 1, -1, &coh, &n_coh, &scale, err);
    for (size_t i = 0; i < n && st == SL_OK; i++) {
        sl_check_result *r = &out[i];
        r->threshold = thr;
        sl_status ist;
        sl_error ierr;
        sl_error_clear(&ierr);
        if (!product_ids[i]) {
            ist = sl__err_set(&ierr, SL_E_INVALID, "check: NULL product id");
        } else if (!vec) { /* no features yet (empty store): nothing to compare with */
            sl_product prod;
            if ((ist = sl_store_get_product(e->store, product_ids[i], &prod, &ierr)) == SL_OK) sl_product_clear(&prod);
        } else {
            sl__pscore ps;
            ist = sl__engine_product_score(e, product_ids[i], vec, lf, &scale, -1, &ps, &r->image, &ierr);
            if (ist == SL_OK) {
                r->score = ps.score;
                r->image_id = ps.image_id;
                r->inliers = ps.inliers;
                const char *p = product_ids[i];
                double m = sl__engine_match_score(ps.score, sl__engine_cohort_mean(coh, n_coh, ck, p, NULL));
                double g = sl__engine_match_score(ps.score, sl__engine_cohort_mean(coh, n_coh, 1, p, NULL));
                r->confidence = sl_calib_confidence(cal, SL_CALIB_PAIR, m, g);
                r->match = r->confidence >= thr;
            }
        }
        if (ist != SL_OK) {
            if (!status) { /* the first failure fails the call */
                if (err) *err = ierr;
                st = ist;
                break;
            }
            status[i] = ist;
            sl_check_result_free(r);
            r->inliers = -1;
            r->threshold = thr;
        }
    }
    pthread_rwlock_unlock(&e->lock);
    sl__pscores_free(coh, n_coh);
    free(vec);
    sl_local_features_free(lf);
    if (st != SL_OK)
        for (size_t i = 0; i < n; i++) sl_check_result_free(&out[i]);
    return st;
}

sl_status sl_engine_check(sl_engine *e, const char *product_id, const sl_image *img,
                          double threshold, sl_check_result *out, sl_error *err) {
    if (!out) return sl__err_set(err, SL_E_INVALID, "check: NULL argument");
    const char *ids[1] = {product_id};
    return sl_engine_check_products(e, img, ids, 1, threshold, out, NULL, err);
}

/* ---- dedup --------------------------------------------------------------------------------- */

void sl_dup_groups_free(sl_dup_groups *g) {
    if (!g) return;
    for (size_t i = 0; i < g->n; i++) {
        free(g->groups[i].image_ids);
        for (size_t j = 0; j < g->groups[i].n; j++) free(g->groups[i].product_ids[j]);
        free(g->groups[i].product_ids);
    }
    free(g->groups);
    memset(g, 0, sizeof *g);
}

typedef struct sl__dupctx {
    int64_t *ids;
    float *vecs;              /* gallery side of the head */
    size_t n, cap, dim;
    const sl_features *feat;
} sl__dupctx;

static sl_status sl__collect_vec(void *ctx, int64_t id, const float *vec, size_t dim) {
    sl__dupctx *d = ctx;
    if (dim != d->dim) return SL_E_CORRUPT;
    if (d->n == d->cap) {
        size_t nc = d->cap ? d->cap * 2 : 256, bytes;
        if (sl__mul_size(nc, dim, &bytes)) return SL_E_TOO_LARGE;
        int64_t *ni = sl__reallocarray(d->ids, nc, sizeof *ni);
        if (!ni) return SL_E_NOMEM;
        d->ids = ni;
        float *nv = sl__reallocarray(d->vecs, bytes, sizeof *nv);
        if (!nv) return SL_E_NOMEM;
        d->vecs = nv;
        d->cap = nc;
    }
    d->ids[d->n] = id;
    memcpy(d->vecs + d->n * dim, vec, dim * sizeof *vec);
    if (d->feat && sl_features_project(d->feat, SL_HEAD_GALLERY, d->vecs + d->n * dim, d->vecs + d->n * dim, 1) != SL_OK)
        return SL_E_NOMEM;
    d->n++;
    return SL_OK;
}

static size_t sl__uf_find(size_t *parent, size_t x) {
    while (parent[x] != x) {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    return x;
}

/* Position of an image id in the sorted id list, or n. */
static size_t sl__pos(const int64_t *ids, size_t n, int64_t id) {
    const int64_t *p = bsearch(&id, ids, n, sizeof *ids, sl__cmp_i64);
    return p ? (size_t)(p - ids) : n;
}

static char *sl__product_of(sl_engine *e, int64_t image_id) {
    sl_image_ref r;
    if (sl_store_get_image(e->store, image_id, &r, NULL) != SL_OK) return NULL;
    char *p = r.product_id;
    r.product_id = NULL;
    sl_image_ref_clear(&r);
    return p;
}

/* Confirms a pair geometrically when the spec verifies; nonzero when it holds. */
static int sl__confirm(sl_engine *e, int64_t a, int64_t b) {
    if (!sl_features_uses_verify(e->feat)) return 1;
    sl__lref *la = sl__image_local(e, a), *lb = sl__image_local(e, b);
    int ok;
    if (la && lb) {
        sl_verify_result r;
        memset(&r, 0, sizeof r);
        sl__verify(e, sl__lref_features(la), sl__lref_features(lb), &r);
        ok = r.inliers >= SL__ENGINE_MIN_INLIERS;
    } else {
        ok = 1; /* nothing to verify with: the global similarity decides */
    }
    sl__lcache_release(e->lcache, la);
    sl__lcache_release(e->lcache, lb);
    return ok;
}

sl_status sl_engine_dedup(sl_engine *e, double threshold, sl_dup_groups *out, sl_error *err) {
    memset(out, 0, sizeof *out);
    if (threshold <= 0) threshold = SL_ENGINE_DEDUP_THRESHOLD_DEFAULT;
    if (threshold > SL_ENGINE_DEDUP_THRESHOLD_MAX) threshold = SL_ENGINE_DEDUP_THRESHOLD_MAX;
    pthread_rwlock_rdlock(&e->lock);
    sl__dupctx d;
    memset(&d, 0, sizeof d);
    d.dim = sl_features_dim(e->feat);
    d.feat = e->feat;
    size_t *parent = NULL;
    double *join = NULL;
    char **prod = NULL;
    sl_status st = SL_OK;
    if (!e->idx || d.dim == 0) goto done;
    if ((st = sl_store_each_vector(e->store, sl__collect_vec, &d, err)) != SL_OK) goto done;
    parent = sl__mallocarray(d.n + 1, sizeof *parent);
    join = sl__callocarray(d.n + 1, sizeof *join);
    prod = sl__callocarray(d.n + 1, sizeof *prod);
    if (!parent || !join || !prod) {
        st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < d.n; i++) {
        parent[i] = i;
        join[i] = 2;
        prod[i] = sl__product_of(e, d.ids[i]);
    }
    enum { NB = 10 };
    sl_index_result res[NB + 1];
    for (size_t i = 0; i < d.n; i++) {
        size_t got = 0;
        size_t want = d.n < NB + 1 ? d.n : NB + 1;
        if (sl__engine_candidates(e, d.vecs + i * d.dim, want, NULL, 0, res, &got, NULL) != SL_OK) continue;
        for (size_t r = 0; r < got; r++) {
            if (res[r].score < threshold) break;
            size_t j = sl__pos(d.ids, d.n, (int64_t)res[r].id);
            if (j >= d.n || j <= i || !prod[i] || !prod[j] || strcmp(prod[i], prod[j]) == 0) continue;
            if (!sl__confirm(e, d.ids[i], d.ids[j])) continue;
            size_t a = sl__uf_find(parent, i), b = sl__uf_find(parent, j);
            double s = res[r].score;
            if (a != b) {
                if (a > b) { size_t t = a; a = b; b = t; }
                parent[b] = a;
                join[a] = fmin(fmin(join[a], join[b]), s);
            }
        }
    }
    /* collect groups by root (roots are the smallest index, i.e. the first image id) */
    for (size_t i = 0; i < d.n && st == SL_OK; i++) {
        if (sl__uf_find(parent, i) != i) continue;
        size_t cnt = 0;
        for (size_t j = i; j < d.n; j++) cnt += sl__uf_find(parent, j) == i;
        if (cnt < 2) continue;
        sl_dup_group g;
        memset(&g, 0, sizeof g);
        g.image_ids = sl__callocarray(cnt, sizeof *g.image_ids);
        g.product_ids = sl__callocarray(cnt, sizeof *g.product_ids);
        sl_dup_group *ng = sl__reallocarray(out->groups, out->n + 1, sizeof *ng);
        if (!g.image_ids || !g.product_ids || !ng) {
            free(g.image_ids);
            free(g.product_ids);
            if (ng) out->groups = ng;
            st = sl__err_set(err, SL_E_NOMEM, "out of memory");
            break;
        }
        out->groups = ng;
        for (size_t j = i; j < d.n; j++)
            if (sl__uf_find(parent, j) == i) {
                g.image_ids[g.n] = d.ids[j];
                g.product_ids[g.n] = sl__strdup(prod[j] ? prod[j] : "");
                g.n++;
            }
        g.score = join[i];
        out->groups[out->n++] = g;
    }
done:
    pthread_rwlock_unlock(&e->lock);
    for (size_t i = 0; prod && i < d.n; i++) free(prod[i]);
    free(prod);
    free(parent);
    free(join);
    free(d.ids);
    free(d.vecs);
    if (st != SL_OK) sl_dup_groups_free(out);
    return st;
}

/* ---- the phases of a cluster's distributed search (engine.h) -------------------------------- */

sl_status sl_engine_plan(sl_engine *e, const sl_query *q, size_t *candidates, size_t *verify_top,
                         sl_error *err) {
    int k = sl__k_of(q), offset = 0;
    sl_status st = sl__offset_of(q, k, &offset, err);
    if (st != SL_OK) return st;
    pthread_rwlock_rdlock(&e->lock);
    *candidates = sl__candidates_for(e, (size_t)offset + (size_t)k);
    int top = e->verify_top >= 0 ? e->verify_top : sl_features_verify_top_n(e->feat);
    *verify_top = sl_features_uses_verify(e->feat) && top > 0 ? (size_t)top : 0;
    pthread_rwlock_unlock(&e->lock);
    return SL_OK;
}

int64_t sl_engine_features_version(sl_engine *e) {
    pthread_rwlock_rdlock(&e->lock);
    int64_t v = e->features_version;
    pthread_rwlock_unlock(&e->lock);
    return v;
}

sl_status sl_engine_describe_query_bytes(sl_engine *e, const void *data, size_t len, const sl_query *q,
                                         float **vec, size_t *dim, void **local, size_t *local_len,
                                         int64_t *features_version, sl_error *err) {
    *vec = NULL;
    *dim = 0;
    *local = NULL;
    *local_len = 0;
    sl_image *img = NULL;
    sl_status st = q && q->region_w > 0 ? sl__region_of_bytes(e, data, len, q, &img, err)
                                        : sl__engine_decode(e, data, len, &img, NULL, err);
    if (st != SL_OK) return st;
    st = sl_engine_describe(e, img, vec, dim, local, local_len, features_version, err);
    sl_image_free(img);
    return st;
}

void sl_engine_product_query_free(float *vecs, void **locals, size_t *local_lens, size_t n) {
    for (size_t i = 0; locals && i < n; i++) free(locals[i]);
    free(locals);
    free(local_lens);
    free(vecs);
}

sl_status sl_engine_product_query(sl_engine *e, const char *product_id, float **vecs, size_t *n,
                                  size_t *dim, void ***locals, size_t **local_lens, sl_error *err) {
    *vecs = NULL;
    *n = *dim = 0;
    *locals = NULL;
    *local_lens = NULL;
    sl_product prod;
    sl_status st = sl_store_get_product(e->store, product_id, &prod, err);
    if (st != SL_OK) return st;
    sl_product_clear(&prod);
    sl_image_ref *refs = NULL;
    size_t nr = 0;
    if ((st = sl_store_product_images(e->store, product_id, &refs, &nr, err)) != SL_OK) return st;
    pthread_rwlock_rdlock(&e->lock);
    size_t d = sl_features_ready(e->feat) ? sl_features_dim(e->feat) : 0, bytes;
    int verifies = sl_features_uses_verify(e->feat);
    pthread_rwlock_unlock(&e->lock);
    float *v = !sl__mul_size(nr, d, &bytes) ? sl__mallocarray(bytes ? bytes : 1, sizeof *v) : NULL;
    void **ls = sl__callocarray(nr + 1, sizeof *ls);
    size_t *ll = sl__callocarray(nr + 1, sizeof *ll);
    if (!v || !ls || !ll) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    for (size_t i = 0; i < nr && st == SL_OK; i++) {
        float *one = NULL;
        size_t od = 0;
        st = sl_store_image_features(e->store, refs[i].id, &one, &od, verifies ? &ls[i] : NULL, &ll[i], err);
        if (st == SL_OK && od != d)
            st = sl__err_set(err, SL_E_CORRUPT, "image %lld: vector of %zu floats, expected %zu", (long long)refs[i].id, od, d);
        if (st == SL_OK) memcpy(v + i * d, one, d * sizeof *v);
        free(one);
    }
    if (st == SL_OK && nr && d) { /* stored vectors are before the head: query as the index holds them */
        pthread_rwlock_rdlock(&e->lock);
        if (sl_features_dim(e->feat) != d)
            st = sl__err_set(err, SL_E_BUSY, "the store's features changed meanwhile; run it again");
        else if ((st = sl_features_project(e->feat, SL_HEAD_GALLERY, v, v, nr)) != SL_OK)
            sl__err_set(err, st, "applying the learned head");
        pthread_rwlock_unlock(&e->lock);
    }
    sl_image_refs_free(refs, nr);
    if (st != SL_OK) {
        sl_engine_product_query_free(v, ls, ll, nr);
        return st;
    }
    *vecs = v;
    *n = nr;
    *dim = d;
    *locals = ls;
    *local_lens = ll;
    return SL_OK;
}

void sl_candidate_lists_clear(sl_candidate **lists, size_t *counts, size_t nq) {
    for (size_t i = 0; lists && i < nq; i++) {
        free(lists[i]);
        lists[i] = NULL;
        if (counts) counts[i] = 0;
    }
}

static int sl__cmp_cand(const void *a, const void *b) {
    const sl_candidate *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return (x->image_id > y->image_id) - (x->image_id < y->image_id);
}

sl_status sl_engine_candidates(sl_engine *e, const float *vecs, size_t nq, size_t dim,
                               const sl_query *q, const char *exclude, size_t candidates,
                               sl_candidate **lists, size_t *counts, sl_error *err) {
    for (size_t i = 0; i < nq; i++) {
        lists[i] = NULL;
        counts[i] = 0;
    }
    if (e->no_index) return sl__err_set(err, SL_E_STATE, "this engine was opened without an index");
    if (candidates == 0 || candidates > SL_INDEX_K_MAX)
        return sl__err_set(err, SL_E_INVALID, "candidates must be in 1..%d", SL_INDEX_K_MAX);
    pthread_rwlock_rdlock(&e->lock);
    size_t fdim = sl_features_ready(e->feat) ? sl_features_dim(e->feat) : 0;
    sl_status st = SL_OK;
    uint64_t *allowed = NULL, *ex = NULL;
    size_t n_allowed = 0, n_ex = 0;
    int filtered = 0, ef = 0;
    sl_index_result *res = NULL;
    if ((st = sl__engine_ef_of(q, &ef, err)) != SL_OK) goto out;
    if (dim != fdim) {
        st = sl__err_set(err, SL_E_STATE, "query vectors of %zu floats, these features give %zu", dim, fdim);
        goto out;
    }
    if (!e->idx || sl_index_count(e->idx) == 0) goto out;
    if ((st = sl__allowed(e, q, &allowed, &n_allowed, &filtered, err)) != SL_OK) goto out;
    if (filtered && n_allowed == 0) goto out;
    if (exclude && *exclude) { /* its catalog images and its references (as sl_engine_similar) */
        sl_image_ref *refs = NULL;
        int64_t *rids = NULL;
        size_t nr = 0, nx = 0;
        if (sl_store_product_images(e->store, exclude, &refs, &nr, NULL) != SL_OK) nr = 0;
        if (sl_store_product_ref_ids(e->store, exclude, &rids, &nx, NULL) != SL_OK) nx = 0;
        if (nr + nx) {
            if (!(ex = sl__callocarray(nr + nx, sizeof *ex))) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
            for (size_t i = 0; ex && i < nr; i++) ex[n_ex++] = (uint64_t)refs[i].id;
            for (size_t i = 0; ex && i < nx; i++) ex[n_ex++] = (uint64_t)rids[i];
            if (ex) qsort(ex, n_ex, sizeof *ex, sl__cmp_u64);
        }
        sl_image_refs_free(refs, nr);
        free(rids);
        if (st != SL_OK) goto out;
    }
    sl__excl xc = {ex, n_ex};
    sl_index_filter f;
    sl__index_filter(&f, filtered ? allowed : NULL, n_allowed, &xc);
    size_t nc = candidates;
    if (nc > sl_index_count(e->idx)) nc = (size_t)sl_index_count(e->idx);
    if (!(res = sl__mallocarray(nc ? nc : 1, sizeof *res))) {
        st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        goto out;
    }
    for (size_t qi = 0; qi < nq && st == SL_OK; qi++) {
        size_t got = 0;
        st = sl__engine_candidates(e, vecs + qi * dim, nc, filtered || n_ex ? &f : NULL, ef, res, &got, err);
        if (st != SL_OK) break;
        if (!(lists[qi] = sl__callocarray(got + 1, sizeof *lists[qi]))) {
            st = sl__err_set(err, SL_E_NOMEM, "out of memory");
            break;
        }
        for (size_t i = 0; i < got; i++) {
            lists[qi][i].image_id = (int64_t)res[i].id;
            lists[qi][i].score = res[i].score;
        }
        /* the order every shard and the router agree on */
        qsort(lists[qi], got, sizeof *lists[qi], sl__cmp_cand);
        counts[qi] = got;
    }
out:
    pthread_rwlock_unlock(&e->lock);
    free(res);
    free(allowed);
    free(ex);
    if (st != SL_OK) sl_candidate_lists_clear(lists, counts, nq);
    return st;
}

/* Re-ranks the candidates of each query vector as phase 2 does (those marked reranked keep
 * their scores): into parts (the references' fold parts, nothing accumulated; the lists
 * re-ranked in place, for phase 2b) or else folded with folds[qi] (NULL: each list's own) into
 * the products' scores. Caller holds the lock shared. */
static sl_status sl__rerank_lists(sl_engine *e, const void *const *locals, const size_t *local_lens, size_t nq,
                                  sl_candidate *const *lists, const size_t *counts, const sl_ref_fold *folds,
                                  sl_ref_fold_part *parts, sl__pscore **acc, size_t *n_acc, sl_error *err) {
    size_t cap = 0, most = 0;
    for (size_t i = 0; i < nq; i++) most = counts[i] > most ? counts[i] : most;
    sl__cand *c = sl__mallocarray(most ? most : 1, sizeof *c);
    if (!c) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    sl_status st = SL_OK;
    for (size_t qi = 0; qi < nq && st == SL_OK; qi++) {
        sl_local_features *lf = NULL;
        if (locals && locals[qi] && local_lens[qi] &&
            (st = sl_local_features_deserialize(locals[qi], local_lens[qi], &lf, err)) != SL_OK)
            break;
        for (size_t i = 0; i < counts[qi]; i++) {
            c[i].image_id = lists[qi][i].image_id;
            c[i].score = lists[qi][i].score;
            c[i].verify = lists[qi][i].verify != 0;
            c[i].given = lists[qi][i].reranked != 0;
            c[i].inliers = c[i].given ? lists[qi][i].inliers : -1;
        }
        st = sl__rerank(e, lf, c, counts[qi], err);
        sl_local_features_free(lf);
        if (st != SL_OK) break;
        if (!parts) {
            st = sl__accumulate(e, c, counts[qi], folds ? &folds[qi] : NULL, acc, n_acc, &cap, NULL, err);
            continue;
        }
        for (size_t i = 0; i < counts[qi]; i++) { /* phase 2a: the re-ranking goes back for 2b */
            lists[qi][i].score = c[i].score;
            lists[qi][i].inliers = c[i].inliers;
            lists[qi][i].reranked = 1;
        }
        int64_t *ids = sl__callocarray(counts[qi] + 1, sizeof *ids);
        char **prod = NULL;
        if (!ids) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        for (size_t i = 0; ids && i < counts[qi]; i++) ids[i] = c[i].image_id;
        if (st == SL_OK && (st = sl__image_products(e, ids, counts[qi], &prod, err)) == SL_OK) {
            st = sl__refs_on_catalog_scale(c, counts[qi], prod, NULL, &parts[qi], NULL, err);
            sl_strings_free(prod, counts[qi]);
        }
        free(ids);
    }
    free(c);
    return st;
}

sl_status sl_engine_rerank(sl_engine *e, const void *const *locals, const size_t *local_lens,
                           size_t nq, sl_candidate *const *lists, const size_t *counts,
                           const sl_query *q, size_t depth, sl_matches *out, sl_error *err) {
    return sl_engine_rerank_folded(e, locals, local_lens, nq, lists, counts, NULL, q, depth, out, err);
}

sl_status sl_engine_rerank_folded(sl_engine *e, const void *const *locals, const size_t *local_lens,
                                  size_t nq, sl_candidate *const *lists, const size_t *counts,
                                  const sl_ref_fold *folds, const sl_query *q, size_t depth,
                                  sl_matches *out, sl_error *err) {
    memset(out, 0, sizeof *out);
    if (depth == 0 || depth > SL_ENGINE_RANK_MAX)
        return sl__err_set(err, SL_E_INVALID, "depth must be in 1..%d", SL_ENGINE_RANK_MAX);
    sl__pscore *acc = NULL;
    size_t n_acc = 0;
    pthread_rwlock_rdlock(&e->lock);
    sl_status st = sl__rerank_lists(e, locals, local_lens, nq, lists, counts, folds, NULL, &acc, &n_acc, err);
    /* the confidence's cohort is this node's candidates (sorted, as sl__finish wants it) */
    if (st == SL_OK) sl__engine_sort_pscores(acc, n_acc);
    if (st == SL_OK) st = sl__finish(e, q, (int)depth, 0, acc, n_acc, acc, n_acc, out, err);
    pthread_rwlock_unlock(&e->lock);
    if (st != SL_OK) sl_matches_free(out);
    sl__pscores_free(acc, n_acc);
    return st;
}

sl_status sl_engine_rerank_fold_parts(sl_engine *e, const void *const *locals, const size_t *local_lens,
                                      size_t nq, sl_candidate *const *lists, const size_t *counts,
                                      sl_ref_fold_part *parts, sl_error *err) {
    for (size_t qi = 0; qi < nq; qi++) {
        memset(&parts[qi], 0, sizeof parts[qi]);
        parts[qi].lowest = INFINITY;
    }
    pthread_rwlock_rdlock(&e->lock);
    sl_status st = sl__rerank_lists(e, locals, local_lens, nq, lists, counts, NULL, parts, NULL, NULL, err);
    pthread_rwlock_unlock(&e->lock);
    for (size_t qi = 0; st != SL_OK && qi < nq; qi++) sl_ref_fold_part_clear(&parts[qi]);
    return st;
}

void sl_engine_index_counts(sl_engine *e, int64_t *entries, int64_t *refs) {
    pthread_rwlock_rdlock(&e->lock);
    *entries = e->idx ? (int64_t)sl_index_count(e->idx) : 0;
    *refs = *entries ? sl__engine_refs(e) : 0;
    pthread_rwlock_unlock(&e->lock);
}

static int sl__cmp_match(const void *a, const void *b) {
    const sl_match *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return strcmp(x->product_id, y->product_id);
}

int sl_engine_confidence_cohort(sl_engine *e) {
    if (!e) return SL_CALIB_COHORT_DEFAULT;
    pthread_rwlock_rdlock(&e->lock);
    int k = sl_calib_cohort(sl_features_calib(e->feat));
    pthread_rwlock_unlock(&e->lock);
    return k;
}

sl_status sl_engine_matches_confidence(sl_engine *e, sl_matches *m, const sl_matches *cohort) {
    if (!e || !m) return SL_E_INVALID;
    if (!cohort) cohort = m;
    if (m->n == 0) return SL_OK;
    /* the cohort's products best first (strings borrowed: never sl__pscores_free'd) */
    sl__pscore *coh = sl__callocarray(cohort->n ? cohort->n : 1, sizeof *coh);
    if (!coh) return SL_E_NOMEM;
    for (size_t i = 0; i < cohort->n; i++) {
        coh[i].product_id = cohort->items[i].product_id;
        coh[i].score = cohort->items[i].score;
    }
    sl__engine_sort_pscores(coh, cohort->n);
    pthread_rwlock_rdlock(&e->lock);
    const sl_calib *cal = sl_features_calib(e->feat);
    int ck = sl_calib_cohort(cal);
    double cthr = sl_calib_threshold(cal, SL_CALIB_RESULT);
    for (size_t i = 0; i < m->n; i++) {
        sl_match *x = &m->items[i];
        double ms = sl__engine_match_score(x->score, sl__engine_cohort_mean(coh, cohort->n, ck, x->product_id, NULL));
        double g = sl__engine_match_score(x->score, sl__engine_cohort_mean(coh, cohort->n, 1, x->product_id, NULL));
        x->confidence = sl_calib_confidence(cal, SL_CALIB_RESULT, ms, g);
        x->match = x->confidence >= cthr;
    }
    pthread_rwlock_unlock(&e->lock);
    free(coh);
    return SL_OK;
}

void sl_matches_merge_slice(sl_matches *m, const sl_query *q) {
    if (!m || !m->items) return;
    qsort(m->items, m->n, sizeof *m->items, sl__cmp_match);
    int k = sl__k_of(q), offset = q && q->offset > 0 ? q->offset : 0;
    size_t first = (size_t)offset < m->n ? (size_t)offset : m->n;
    size_t want = m->n - first < (size_t)k ? m->n - first : (size_t)k;
    for (size_t i = 0; i < m->n; i++) {
        if (i >= first && i < first + want) continue;
        sl_match *x = &m->items[i];
        free(x->product_id);
        free(x->title);
        free(x->category);
        free(x->image);
        free(x->url);
        free(x->currency);
    }
    memmove(m->items, m->items + first, want * sizeof *m->items);
    m->n = want;
}
