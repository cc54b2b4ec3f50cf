/*
 * engine/calibrate.c - fitting a store's calibration of match scores into confidence (learn.h
 * "calibrated confidence", docs/learn.md) and installing it with the features.
 *
 * Each calibration photo (a photo labelled with a product, or a pseudo shopper photo made from a
 * catalog image: the image on a shelf between SL_LEARN_SHELF_OTHERS other products' images,
 * src/learn/shopper.c sl_learn_shelf_photo) goes through the query path exactly as a
 * search and a check would: described, projected through the query side of any head, its nearest
 * products ranked with verification; then
 *  - positive: its own product, scored as check scores it (with the engine's references: a
 *    training's private engine holds the photos being trained on, and a photo that is itself a
 *    reference - in memory, or the store's with its path as source - is scored without it),
 *    against the photo's nearest other products (the match score);
 *  - pair negatives: up to SL__ENGINE_CALIB_NEGATIVES random other products, scored the same way;
 *  - result negatives: the first wrong product of its result list, against its other products
 *    (with the photo's product present) and against the products other than both (the photo's
 *    product left out: a photo of something the shop does not sell).
 *
 * Invariants:
 *  - Deterministic for (store, photos, seed): the photo sample, augmentation seeds and negative
 *    draws depend on the photo's position only, never on threads; the fit sorts its inputs.
 *  - Write, then swap: the calibration goes into features-(N+1).bin (the same features plus the
 *    CALB section, written atomically), then one transaction moves features_version to N + 1 (only
 *    if it is still N) and bumps the generation. The index is kept (scores do not change). A kill
 *    at any point leaves the store on N or on N + 1.
 *  - Caller holds wmu, so the engine's features and index do not change meanwhile; every photo's
 *    query runs under the lock held shared, as a search does.
 */
#include "engine/engine_internal.h"
#include "util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void sl_calibrate_report_free(sl_calibrate_report *r) {
    if (!r) return;
    sl__failures_free(r->failures, r->n_failures);
    memset(r, 0, sizeof *r);
}

/* One calibration photo's outcome. */
typedef struct sl__citem {
    const char *path;         /* borrowed */
    uint32_t cls;             /* product index */
    int augment;              /* nonzero: a shelf photo of the store's catalog image `path` */
    sl_status st;
    char *msg;
    /* match score [0] and margin [1] of each pair */
    double pos[2];
    double pair[SL__ENGINE_CALIB_NEGATIVES][2];
    int n_pair;
    double res[2][2];
    int n_res;
    double top[2];            /* the first result (the photo's product in the catalog) */
    int top_right;
} sl__citem;

typedef struct sl__cjob {
    sl_engine *e;
    char **pids;
    size_t n_pids;
    const sl_image_ref *refs; /* the store's images (catalog calibration: the shelf's others) */
    size_t n_refs;
    sl__citem *items;
    uint64_t seed;
    int cohort, negatives;
    volatile int *cancel;
    sl__tally tally;
} sl__cjob;

/* Match score and margin of `score` against the ranking `rank` without products skip1, skip2. */
static void sl__calib_pair(const sl__pscore *rank, size_t nr, int cohort, double score, const char *skip1,
                           const char *skip2, double out[2]) {
    out[0] = sl__engine_match_score(score, sl__engine_cohort_mean(rank, nr, cohort, skip1, skip2));
    out[1] = sl__engine_match_score(score, sl__engine_cohort_mean(rank, nr, 1, skip1, skip2));
}

/* Scores one described photo (query side) under the lock held shared. */
static sl_status sl__calib_score(sl__cjob *j, sl__citem *it, size_t idx, const float *vec,
                                 sl_local_features *lf, sl_error *err) {
    sl_engine *e = j->e;
    const char *own = j->pids[it->cls];
    sl__pscore *rank = NULL, ps;
    size_t nr = 0;
    /* the photo among the references in memory (train's held-out photos): left out, as a new
     * photo is in none of the store's references */
    int64_t skip = -1;
    for (size_t r = 0; e->mrefs && !it->augment && r < e->mrefs->n && skip < 0; r++)
        if (strcmp(e->mrefs->paths[r], it->path) == 0) skip = SL_STORE_REF_ID_BASE + (int64_t)r;
    /* nor one of the store's (calibrate --photos with the photos train kept) */
    sl_status st;
    if (!e->mrefs && !e->no_refs && !it->augment && (st = sl_store_ref_of_source(e->store, own, it->path, &skip, err)) != SL_OK)
        return st;
    sl__refscale scale;
    st = sl__engine_rank_check(e, vec, lf, (size_t)j->cohort + 2, skip, &rank, &nr, &scale, err);
    if (st != SL_OK) return st;
    /* positive */
    if ((st = sl__engine_product_score(e, own, vec, lf, &scale, skip, &ps, NULL, err)) != SL_OK) goto out;
    sl__calib_pair(rank, nr, j->cohort, ps.score, own, NULL, it->pos);
    /* random other products: a partial Fisher-Yates draw over the other indices */
    {
        sl__rng rng;
        sl__rng_seed(&rng, j->seed ^ (0x9e3779b97f4a7c15ULL * (idx + 1)));
        size_t others = j->n_pids - 1;
        size_t want = (size_t)j->negatives < others ? (size_t)j->negatives : others;
        size_t pick[SL__ENGINE_CALIB_NEGATIVES];
        for (size_t a = 0; a < want; a++) {
            size_t r;
            int dup;
            do { /* a rejection draw among the others, without repeats */
                r = (size_t)sl__rng_below(&rng, others);
                dup = 0;
                for (size_t b = 0; b < a; b++) dup |= pick[b] == r;
            } while (dup);
            pick[a] = r;
            size_t q = r >= it->cls ? r + 1 : r; /* skip the photo's own product */
            if ((st = sl__engine_product_score(e, j->pids[q], vec, lf, &scale, skip, &ps, NULL, err)) != SL_OK) goto out;
            sl__calib_pair(rank, nr, j->cohort, ps.score, j->pids[q], NULL, it->pair[it->n_pair++]);
        }
    }
    /* the first wrong result, with and without the photo's product among the others */
    for (size_t r = 0; r < nr; r++) {
        if (strcmp(rank[r].product_id, own) == 0) continue;
        const char *q = rank[r].product_id;
        sl__calib_pair(rank, nr, j->cohort, rank[r].score, q, NULL, it->res[it->n_res++]);
        sl__calib_pair(rank, nr, j->cohort, rank[r].score, q, own, it->res[it->n_res++]);
        break;
    }
    /* the first result, as search scores it */
    if (nr) {
        sl__calib_pair(rank, nr, j->cohort, rank[0].score, rank[0].product_id, NULL, it->top);
        it->top_right = strcmp(rank[0].product_id, own) == 0;
    }
out:
    sl__pscores_free(rank, nr);
    return st;
}

/* The shelf photo of item i (a catalog image img of product it->cls): its neighbours are
 * SL_LEARN_SHELF_OTHERS images of other products, drawn from the photo's position and the seed
 * (repeats allowed; fewer when the store has no other product's image). */
static sl_status sl__calib_shelf(sl__cjob *j, const sl__citem *it, size_t i, const sl_image *img, sl_image **out,
                                 sl_error *err) {
    sl_image *oth[SL_LEARN_SHELF_OTHERS];
    size_t n = 0;
    sl__rng rng;
    sl__rng_seed(&rng, j->seed ^ (0xd1b54a32d192ed03ULL * (i + 1)));
    sl_status st = SL_OK;
    for (int tries = 0; st == SL_OK && n < SL_LEARN_SHELF_OTHERS && tries < 8 * SL_LEARN_SHELF_OTHERS && j->n_refs; tries++) {
        const sl_image_ref *r = &j->refs[sl__rng_below(&rng, j->n_refs)];
        if (!r->product_id || strcmp(r->product_id, j->pids[it->cls]) == 0) continue;
        sl_image *o = NULL;
        /* an unreadable neighbour is left out: the photo is still a shelf photo of the product */
        sl_status ls = sl__engine_load_store_image(j->e, r->file, &o, NULL);
        if (ls == SL_OK) oth[n++] = o;
        else if (ls == SL_E_NOMEM) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    if (st == SL_OK) st = sl_learn_shelf_photo(img, (const sl_image *const *)oth, n, j->seed + i, out, err);
    for (size_t k = 0; k < n; k++) sl_image_free(oth[k]);
    return st;
}

static void sl__calib_one(void *arg, size_t i) {
    sl__cjob *j = arg;
    sl__citem *it = &j->items[i];
    if (j->cancel && *j->cancel) {
        it->st = SL_E_INTERRUPTED;
        return;
    }
    sl_error err;
    sl_error_clear(&err);
    sl_engine *e = j->e;
    sl_image_load_opts o;
    memset(&o, 0, sizeof o);
    o.max_side = e->max_side;
    sl_image *img = NULL, *aug = NULL;
    float *vec = NULL;
    sl_local_features *lf = NULL;
    size_t dim = sl_features_dim(e->feat);
    sl_status st = it->augment ? sl__engine_load_store_image(e, it->path, &img, &err) /* a cluster's: a row */
                               : sl_image_load_file(it->path, &o, &img, NULL, &err);
    if (st == SL_OK && it->augment) {
        st = sl__calib_shelf(j, it, i, img, &aug, &err);
        sl_image_free(img);
        img = aug;
    }
    if (st == SL_OK && !(vec = sl__mallocarray(dim, sizeof *vec))) st = sl__err_set(&err, SL_E_NOMEM, "out of memory");
    if (st == SL_OK)
        st = sl_features_extract(e->feat, img, vec, sl_features_uses_verify(e->feat) ? &lf : NULL, &err);
    sl_image_free(img);
    if (st == SL_OK && (st = sl_features_project(e->feat, SL_HEAD_QUERY, vec, vec, 1)) != SL_OK)
        sl__err_set(&err, st, "applying the learned head");
    if (st == SL_OK) {
        pthread_rwlock_rdlock(&e->lock);
        st = sl__calib_score(j, it, i, vec, lf, &err);
        pthread_rwlock_unlock(&e->lock);
    }
    free(vec);
    sl_local_features_free(lf);
    it->st = st;
    if (st != SL_OK) it->msg = sl__strdup(err.message[0] ? err.message : sl_strerror(st));
    sl__tally_one(&j->tally);
}

/* sl__engine_calib_due without the index condition. */
static int sl__calib_due_store(sl_engine *e, int grow) {
    if (e->read_only || !sl_features_ready(e->feat) || sl_features_dim(e->feat) == 0) return 0;
    sl_store_counts c;
    if (sl_store_counts_get(e->store, &c, NULL) != SL_OK || c.products < SL__ENGINE_CALIB_MIN_PRODUCTS) return 0;
    const sl_calib *cal = sl_features_calib(e->feat);
    if (!cal) return 1;
    sl_calib_info info;
    sl_calib_get_info(cal, &info);
    return grow && info.source == SL_CALIB_CATALOG && (int64_t)info.products * 2 <= c.products;
}

int sl__engine_calib_due(sl_engine *e, int grow) { return e->idx && sl__calib_due_store(e, grow); }

sl_status sl__engine_auto_calibrate(sl_engine *e, int grow, const sl_calibrate_opts *co, int *done,
                                    sl_error *err) {
    *done = 0;
    if (sl__engine_calib_due(e, grow)) {
        sl_status st = sl__engine_calibrate(e, co, NULL, err);
        *done = st == SL_OK;
        return st;
    }
    /* a cluster store's engine without an index (add, sync, retrain there only write): the
     * calibration searches an index of the catalog loaded for it from PostgreSQL, dropped after */
    if (e->idx || !e->no_index || !sl_store_is_shared(e->store) || !sl__calib_due_store(e, grow)) return SL_OK;
    pthread_rwlock_wrlock(&e->lock);
    e->no_index = 0;
    sl_status st = sl__engine_rebuild_index(e, err);
    pthread_rwlock_unlock(&e->lock);
    if (st == SL_OK && sl__engine_calib_due(e, grow)) {
        st = sl__engine_calibrate(e, co, NULL, err);
        *done = st == SL_OK;
    }
    pthread_rwlock_wrlock(&e->lock);
    sl_index_free(e->idx);
    e->idx = NULL;
    e->no_index = 1;
    e->index_dirty = 0;
    pthread_rwlock_unlock(&e->lock);
    return st;
}

/* Writes features-(N+1).bin = the current features with calibration c (ownership passes) and
 * commits it; the index stays. */
static sl_status sl__install_calib(sl_engine *e, sl_calib *c, int64_t *version_out, sl_error *err) {
    int64_t cur = e->features_version, version = cur + 1;
    sl_features *f = NULL;
    sl_status st = sl__engine_features_copy(e, &f, err);
    if (st != SL_OK) {
        sl_calib_free(c);
        return st;
    }
    if ((st = sl_features_set_calib(f, c)) != SL_OK) {
        sl__err_set(err, st, "%s", sl_features_errmsg(f));
        sl_features_free(f);
        return st;
    }
    if ((st = sl__engine_save_features(e, f, version, err)) != SL_OK) {
        sl_features_free(f);
        return st;
    }
    if ((st = sl__engine_commit_features(e, f, version, 0, err)) != SL_OK) return st;
    if (cur > 0) {
        char *old = sl__engine_features_path(e, cur);
        if (old) unlink(old);
        free(old);
    }
    *version_out = version;
    return sl__engine_save_index(e, err);
}

sl_status sl__engine_calib_fit(sl_engine *e, const sl_calibrate_opts *opts, int independent,
                               sl_calibrate_report *rep, sl_calib **out, sl_error *err) {
    *out = NULL;
    sl_calibrate_opts o;
    memset(&o, 0, sizeof o);
    if (opts) o = *opts;
    memset(rep, 0, sizeof *rep);
    double t0 = sl__now();
    if (o.n_photos && !o.photos) return sl__err_set(err, SL_E_INVALID, "photos is NULL");
    if (!sl_features_ready(e->feat) || sl_features_dim(e->feat) == 0 || !e->idx || sl_index_count(e->idx) == 0)
        return sl__err_set(err, SL_E_STATE, "the store has no catalog yet: add products before calibrating");
    char **pids = NULL;
    size_t npid = 0;
    sl_image_ref *refs = NULL;
    size_t nrefs = 0;
    sl__citem *items = NULL;
    size_t n = 0;
    double *pos = NULL, *neg[2] = {NULL, NULL}, *top = NULL;
    unsigned char *top_right = NULL;
    sl_status st = sl_store_product_ids(e->store, &pids, &npid, err);
    if (st != SL_OK) goto out;
    if (npid < 2) {
        st = sl__err_set(err, SL_E_INVALID, "calibration needs at least 2 products (the store has %zu)", npid);
        goto out;
    }
    uint64_t seed = o.has_seed ? o.seed : SL__ENGINE_CALIB_SEED;
    if (o.n_photos) {
        /* labelled photos of known products, then an evenly spaced sample */
        size_t known = 0;
        long *cls = sl__mallocarray(o.n_photos, sizeof *cls);
        if (!cls) { st = sl__err_set(err, SL_E_NOMEM, "out of memory"); goto out; }
        for (size_t i = 0; i < o.n_photos; i++) {
            const sl_train_photo *ph = &o.photos[i];
            cls[i] = ph->path && ph->product_id ? sl__strv_find(pids, npid, ph->product_id) : -1;
            if (cls[i] >= 0) { known++; continue; }
            rep->unknown++;
            if (sl__failure_add(&rep->failures, &rep->n_failures, ph->path, ph->product_id, SL_E_NOT_FOUND,
                                ph->path ? "no such product in the store" : "no file") != SL_OK) {
                free(cls);
                st = sl__err_set(err, SL_E_NOMEM, "out of memory");
                goto out;
            }
        }
        n = known < SL__ENGINE_CALIB_PHOTOS_MAX ? known : SL__ENGINE_CALIB_PHOTOS_MAX;
        items = sl__callocarray(n + 1, sizeof *items);
        size_t *kidx = sl__callocarray(known + 1, sizeof *kidx);
        if (!items || !kidx) { free(kidx); free(cls); st = sl__err_set(err, SL_E_NOMEM, "out of memory"); goto out; }
        size_t k = 0;
        for (size_t i = 0; i < o.n_photos; i++)
            if (cls[i] >= 0) kidx[k++] = i;
        for (k = 0; k < n; k++) { /* evenly spaced over the known photos */
            size_t i = kidx[(size_t)((double)k * (double)known / (double)n)];
            items[k].path = o.photos[i].path;
            items[k].cls = (uint32_t)cls[i];
        }
        free(kidx);
        free(cls);
    } else {
        if ((st = sl_store_all_images(e->store, &refs, &nrefs, err)) != SL_OK) goto out;
        size_t copies = SL__ENGINE_CALIB_COPIES_PER_IMAGE * nrefs;
        if (copies < SL__ENGINE_CALIB_COPIES_MIN) copies = SL__ENGINE_CALIB_COPIES_MIN;
        if (copies > SL__ENGINE_CALIB_COPIES_MAX) copies = SL__ENGINE_CALIB_COPIES_MAX;
        items = sl__callocarray(copies + 1, sizeof *items);
        if (!items) { st = sl__err_set(err, SL_E_NOMEM, "out of memory"); goto out; }
        for (size_t i = 0; i < copies && nrefs; i++) {
            const sl_image_ref *r = &refs[(size_t)((double)i * (double)nrefs / (double)copies)];
            long c = r->product_id ? sl__strv_find(pids, npid, r->product_id) : -1;
            if (c < 0) continue;
            items[n].path = r->file;
            items[n].cls = (uint32_t)c;
            items[n].augment = 1;
            n++;
        }
        rep->augmented = 1;
    }
    if (n == 0) {
        st = sl__err_set(err, SL_E_INVALID, "no photo of a product in the store to calibrate with");
        goto out;
    }
    sl__cjob j;
    memset(&j, 0, sizeof j);
    j.e = e;
    j.pids = pids;
    j.n_pids = npid;
    j.refs = refs;
    j.n_refs = nrefs;
    j.items = items;
    j.seed = seed;
    j.cohort = SL_CALIB_COHORT_DEFAULT;
    j.negatives = SL__ENGINE_CALIB_NEGATIVES;
    j.cancel = o.cancel;
    sl__tally_start(&j.tally, o.progress, o.progress_ctx, n, t0);
    sl__parallel_for(n, o.jobs, sl__calib_one, &j);
    sl__tally_end(&j.tally);
    if (o.cancel && *o.cancel) { st = sl__err_set(err, SL_E_INTERRUPTED, "interrupted"); goto out; }
    /* gather the pairs in photo order: match scores in the first half of each array, margins in
     * the second */
    size_t cap[2] = {n * SL__ENGINE_CALIB_NEGATIVES + 1, 2 * n + 1};
    pos = sl__mallocarray(2 * n, sizeof *pos);
    neg[0] = sl__mallocarray(2 * cap[0], sizeof *neg[0]);
    neg[1] = sl__mallocarray(2 * cap[1], sizeof *neg[1]);
    top = sl__mallocarray(2 * n, sizeof *top);
    top_right = sl__callocarray(n, 1);
    if (!pos || !neg[0] || !neg[1] || !top || !top_right) { st = sl__err_set(err, SL_E_NOMEM, "out of memory"); goto out; }
    size_t np = 0, nn[2] = {0, 0}, nt = 0, products = 0;
    unsigned char *seen = sl__callocarray(npid, 1);
    if (!seen) { st = sl__err_set(err, SL_E_NOMEM, "out of memory"); goto out; }
    for (size_t i = 0; i < n; i++) {
        sl__citem *it = &items[i];
        if (it->st != SL_OK) {
            rep->failed++;
            if (!it->augment && sl__failure_add(&rep->failures, &rep->n_failures, it->path, pids[it->cls], it->st, it->msg) != SL_OK) {
                free(seen);
                st = sl__err_set(err, SL_E_NOMEM, "out of memory");
                goto out;
            }
            continue;
        }
        pos[np] = it->pos[0];
        pos[n + np++] = it->pos[1];
        for (int a = 0; a < it->n_pair; a++) {
            neg[0][nn[0]] = it->pair[a][0];
            neg[0][cap[0] + nn[0]++] = it->pair[a][1];
        }
        for (int a = 0; a < it->n_res; a++) {
            neg[1][nn[1]] = it->res[a][0];
            neg[1][cap[1] + nn[1]++] = it->res[a][1];
        }
        top[nt] = it->top[0];
        top[n + nt] = it->top[1];
        top_right[nt++] = (unsigned char)it->top_right;
        if (!seen[it->cls]) { seen[it->cls] = 1; products++; }
    }
    free(seen);
    rep->photos = np;
    rep->products = products;
    sl_calib_data d;
    memset(&d, 0, sizeof d);
    d.pos = pos;
    d.n_pos = np;
    d.neg[0] = neg[0];
    d.n_neg[0] = nn[0];
    d.neg[1] = neg[1];
    d.n_neg[1] = nn[1];
    /* The margin (and the search map's precision rule, which needs it to separate right first
     * results from wrong ones) only from labelled photos the head did not learn from (no head, or
     * train's stand-in head trained without them): pseudo shopper photos are won by their own
     * product far more clearly than shop photos are, and a head has learned its training photos,
     * whose margins are then larger than a new photo's (measured on grocery, docs/learn.md); the
     * match score alone transfers in both cases. */
    if (o.n_photos && (independent || !sl_features_head(e->feat))) {
        d.pos_margin = pos + n;
        d.neg_margin[0] = neg[0] + cap[0];
        d.neg_margin[1] = neg[1] + cap[1];
        d.top = top;
        d.top_margin = top + n;
        d.top_right = top_right;
        d.n_top = nt;
    }
    d.source = o.n_photos ? SL_CALIB_PHOTOS : SL_CALIB_CATALOG;
    d.cohort = SL_CALIB_COHORT_DEFAULT;
    d.photos = np;
    d.products = npid;
    d.seed = seed;
    if ((st = sl_calib_fit(&d, o.far, out, err)) != SL_OK) goto out;
    sl_calib_get_info(*out, &rep->info);
out:
    rep->seconds = sl__now() - t0;
    for (size_t i = 0; items && i < n; i++) free(items[i].msg);
    free(items);
    free(pos);
    free(neg[0]);
    free(neg[1]);
    free(top);
    free(top_right);
    sl_image_refs_free(refs, nrefs);
    sl_strings_free(pids, npid);
    if (st != SL_OK) memset(&rep->info, 0, sizeof rep->info);
    return st;
}

sl_status sl__engine_calibrate(sl_engine *e, const sl_calibrate_opts *opts, sl_calibrate_report *rep,
                               sl_error *err) {
    sl_calibrate_report dummy;
    if (!rep) rep = &dummy;
    memset(rep, 0, sizeof *rep);
    if (e->read_only) return sl__err_set(err, SL_E_STATE, "engine opened read-only");
    sl_calib *c = NULL;
    sl_status st = sl__engine_calib_fit(e, opts, 0, rep, &c, err);
    if (st == SL_OK) st = sl__install_calib(e, c, &rep->features_version, err);
    if (st != SL_OK) memset(&rep->info, 0, sizeof rep->info);
    return st;
}

sl_status sl_engine_calibrate(sl_engine *e, const sl_calibrate_opts *opts, sl_calibrate_report *rep,
                              sl_error *err) {
    if (rep) memset(rep, 0, sizeof *rep);
    if (!e) return sl__err_set(err, SL_E_INVALID, "NULL engine");
    pthread_mutex_lock(&e->wmu);
    sl_status st = sl__engine_calibrate(e, opts, rep, err);
    pthread_mutex_unlock(&e->wmu);
    return st;
}

sl_status sl_engine_calibration(sl_engine *e, sl_calib_info *out, sl_error *err) {
    if (!e || !out) return sl__err_set(err, SL_E_INVALID, "NULL argument");
    pthread_rwlock_rdlock(&e->lock);
    sl_calib_get_info(sl_features_calib(e->feat), out);
    pthread_rwlock_unlock(&e->lock);
    return SL_OK;
}
