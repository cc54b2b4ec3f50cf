/*
 * engine/learn.c - `shoplens train`: learns a projection head (learn.h) for a store from photos
 * labelled with its products (or, without any, from augmented catalog images), and installs it
 * as a new version of the store's features.
 *
 * Invariants:
 *  - The store keeps the descriptors from before the head (images.vec); training reads them and
 *    re-describes no catalog image. Only the photos (or augmented copies) are described.
 *  - Write, then swap: the head goes into features-(N+1).bin (written atomically, with the same
 *    spec, codebook and PCA as features-N.bin), then one transaction sets features_version =
 *    N + 1 and bumps the generation; the index is rebuilt from the stored vectors through the
 *    head. A kill at any point leaves the store on version N (an orphan N+1 file is overwritten
 *    by the next run) or fully on N+1: never half-trained.
 *  - The labelled photos become the products' references (store.h) in the transaction that
 *    installs the head, replacing the previous ones (none with no_references or without
 *    photos), on a SQLite or a cluster store alike; the training's private engines index none of
 *    the store's: check's calibration runs on one holding the new photos as references (in
 *    memory).
 *  - Deterministic: photos are described in input order, the augmentation and the training are
 *    seeded; the result does not depend on the number of jobs.
 */
#include "engine/engine_internal.h"
#include "shoplens/learn.h"
#include "util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void sl__failures_free(sl_train_failure *v, size_t n) {
    for (size_t i = 0; v && i < n; i++) {
        free(v[i].file);
        free(v[i].product_id);
        free(v[i].message);
    }
    free(v);
}

sl_status sl__failure_add(sl_train_failure **v, size_t *n, const char *file, const char *pid, sl_status st,
                          const char *msg) {
    sl_train_failure *nf = sl__reallocarray(*v, *n + 1, sizeof *nf);
    if (!nf) return SL_E_NOMEM;
    *v = nf;
    sl_train_failure *f = &nf[(*n)++];
    f->file = sl__strdup(file);
    f->product_id = sl__strdup(pid);
    f->status = st;
    f->message = sl__strdup(msg ? msg : sl_strerror(st));
    return SL_OK;
}

static int sl__cmp_strp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

long sl__strv_find(char *const *v, size_t n, const char *s) {
    char *const *p = n ? bsearch(&s, v, n, sizeof *v, sl__cmp_strp) : NULL;
    return p ? (long)(p - v) : -1;
}

void sl_train_report_free(sl_train_report *r) {
    if (!r) return;
    sl__failures_free(r->failures, r->n_failures);
    free(r->calibration_error);
    memset(r, 0, sizeof *r);
}

typedef struct sl__tphoto_job {
    const sl_engine *e;
    const char *const *paths;
    const sl_image_ref *aug_refs;  /* catalog-only: the image each copy is made of */
    size_t dim;
    uint64_t seed;
    float *vecs;
    void **locals;                 /* NULL, or the photos' serialized local features (references) */
    size_t *local_len;
    sl_status *st;
    char **msg;
    volatile int *cancel;
    sl__tally tally;
} sl__tphoto_job;

static void sl__tphoto_one(void *arg, size_t i) {
    sl__tphoto_job *j = arg;
    if (j->cancel && *j->cancel) return;
    sl_error err;
    sl_error_clear(&err);
    sl_image_load_opts o;
    memset(&o, 0, sizeof o);
    o.max_side = j->e->max_side;
    sl_image *img = NULL, *aug = NULL;
    sl_status st = j->aug_refs /* the store's copy: on a cluster store, a row */
                       ? sl__engine_load_store_image(j->e, j->aug_refs[i / SL_LEARN_AUGMENT_PER_IMAGE].file, &img, &err)
                       : sl_image_load_file(j->paths[i], &o, &img, NULL, &err);
    if (st == SL_OK && j->aug_refs) {
        st = sl_learn_augment(img, j->seed + i, &aug, &err);
        sl_image_free(img);
        img = aug;
    }
    sl_local_features *lf = NULL;
    int want_local = j->locals && sl_features_uses_verify(j->e->feat);
    if (st == SL_OK) st = sl_features_extract(j->e->feat, img, j->vecs + i * j->dim, want_local ? &lf : NULL, &err);
    if (st == SL_OK && lf) st = sl_local_features_serialize(lf, &j->locals[i], &j->local_len[i], &err);
    sl_local_features_free(lf);
    sl_image_free(img);
    j->st[i] = st;
    if (st != SL_OK) j->msg[i] = sl__strdup(err.message);
    sl__tally_one(&j->tally);
}

/* The stored vectors with their image ids, in id order. */
typedef struct sl__tvecs {
    int64_t *ids;
    float *vecs;
    size_t n, cap, dim;
} sl__tvecs;

static sl_status sl__tvec_add(void *ctx, int64_t id, const float *vec, size_t dim) {
    sl__tvecs *t = ctx;
    if (dim != t->dim) return SL_E_CORRUPT;
    if (t->n == t->cap) {
        size_t nc = t->cap ? t->cap * 2 : 1024, cnt;
        if (sl__mul_size(nc, dim, &cnt)) return SL_E_TOO_LARGE;
        int64_t *ni = sl__reallocarray(t->ids, nc, sizeof *ni);
        if (!ni) return SL_E_NOMEM;
        t->ids = ni;
        float *nv = sl__reallocarray(t->vecs, cnt, sizeof *nv);
        if (!nv) return SL_E_NOMEM;
        t->vecs = nv;
        t->cap = nc;
    }
    t->ids[t->n] = id;
    memcpy(t->vecs + t->n * dim, vec, dim * sizeof *vec);
    t->n++;
    return SL_OK;
}


/* The references a training installs with its head (sl_store_replace_refs). */
typedef struct sl__refset {
    sl_store_ref *refs;
    size_t n, dim;
} sl__refset;

static sl_status sl__put_refs(sl_engine *e, void *ctx, sl_error *err) {
    const sl__refset *r = ctx;
    return sl_store_replace_refs(e->store, r->refs, r->n, r->dim, err);
}

/* Commits `f` (already saved as features-<version>.bin; ownership passes) as the store's
 * features with the references `r` in the same transaction, re-indexes the stored vectors
 * through its head and removes the previous file. Caller holds wmu. */
static sl_status sl__install(sl_engine *e, sl_features *f, int64_t version, sl__refset *r, sl_error *err) {
    sl_status st = sl__engine_commit_features_with(e, f, version, 1, sl__put_refs, r, err);
    if (st == SL_OK) {
        char *old = sl__engine_features_path(e, version - 1);
        if (old) unlink(old);
        free(old);
        st = sl__engine_save_index(e, err);
    }
    return st;
}

size_t sl__train_holdout(const uint32_t *cls, size_t n, size_t n_classes, uint64_t seed, unsigned char *held) {
    memset(held, 0, n);
    size_t want = n / SL__ENGINE_TRAIN_HOLDOUT_SHARE, h = 0, got = 0, present = 0;
    if (want < SL__ENGINE_TRAIN_HOLDOUT_MIN) want = SL__ENGINE_TRAIN_HOLDOUT_MIN;
    if (want > SL__ENGINE_CALIB_PHOTOS_MAX) want = SL__ENGINE_CALIB_PHOTOS_MAX;
    if (n < 2 * want) return 0;
    size_t *count = sl__callocarray(n_classes + 1, sizeof *count), *order = sl__mallocarray(n_classes + 1, sizeof *order);
    unsigned char *out = sl__callocarray(n_classes + 1, 1);
    if (!count || !order || !out) goto done;
    for (size_t i = 0; i < n; i++)
        if (cls[i] < n_classes) count[cls[i]]++;
    for (size_t c = 0; c < n_classes; c++)
        if (count[c]) order[present++] = c;
    sl__rng rng;
    sl__rng_seed(&rng, seed ^ SL__ENGINE_TRAIN_HOLDOUT_SALT);
    sl__rng_shuffle(&rng, order, present); /* the products with photos */
    size_t k = 0; /* whole products, in that order, until `want` photos are out */
    for (; k < present && h < want; k++) {
        out[order[k]] = 1;
        h += count[order[k]];
    }
    /* at least two products on each side, and at least as many photos left to train on */
    if (k < 2 || present - k < 2 || n - h < h) { h = 0; goto done; }
    for (size_t i = 0; i < n; i++)
        if (cls[i] < n_classes && out[cls[i]]) { held[i] = 1; got++; }
    h = got;
done:
    free(count);
    free(order);
    free(out);
    return h;
}

/* Fits a calibration of e's query path with `head` (owned: freed on every path) in place of
 * e's on a private engine (nothing is written) whose references are mr (NULL: none);
 * independent as sl__engine_calib_fit says. */
static sl_status sl__calib_through(sl_engine *e, sl_head *head, const sl__mrefs *mr, const sl_calibrate_opts *co,
                                   int independent, sl_calib **out, sl_error *err) {
    sl_features *f = NULL;
    sl_engine *sh = NULL;
    sl_status st = head ? sl__engine_features_copy(e, &f, err) : sl__err_set(err, SL_E_NOMEM, "out of memory");
    if (st == SL_OK && (st = sl_features_set_head(f, head)) != SL_OK) /* not taken */
        st = sl__err_set(err, st, "%s", sl_features_errmsg(f));
    else if (st == SL_OK)
        head = NULL;
    sl_head_free(head);
    if (st == SL_OK) {
        st = sl__engine_shadow_new_refs(e, f, mr, &sh, err); /* takes f */
        f = NULL;
    }
    sl_features_free(f);
    if (st == SL_OK) {
        sl_calibrate_report cr;
        st = sl__engine_calib_fit(sh, co, independent, &cr, out, err);
        sl_calibrate_report_free(&cr);
    }
    sl__engine_shadow_free(sh);
    return st;
}

/* The calibration installed with head h (docs/learn.md, "Calibrated confidence"):
 *  - labelled photos: the photos of a seeded set of products held out (sl__train_holdout) are
 *    calibrated through a stand-in head trained like h (sl_head_train_as) on the other products'
 *    photos, so check's map sees photos its head never learned from, nor near-duplicates of
 *    them (photos of one product from one session), as the store's head sees a shopper's;
 *    search's map comes from all photos through h (the match score alone, the 2% rule: held-out
 *    products are ones the stand-in never learned, so its first results for them are mostly
 *    wrong and say nothing about h's first results for new photos of products it did learn; on
 *    grocery that fit came out flat: no search match). With too few photos to hold out, or when
 *    the held-out photos give no usable fit, both maps come from all photos through h (its own
 *    training photos: optimistic; rep->calibration_heldout 0);
 *  - no photos: pseudo shopper photos of the catalog through h.
 * With references (mr: the photos that become them), check's map (from the held-out photos, or
 * from all of them when none is held out) is fitted on check's scores with references, as a check of the installed store computes them
 * (docs/learn.md, "References"): the stand-in's private engine holds every photo as a
 * reference, and each held-out photo is scored with its own left out (a shopper's new photo is
 * none of the references); the other held-out photos of its product stay, as the references of
 * a product the head learned stay for a new photo of it. Search's map stays fitted without
 * references, as before (the result list's scores are its catalog fold's: unchanged).
 * d is the training data of h, paths the photos' files (NULL without photos), pids the products.
 * Fills rep->calibration on success. */
static sl_status sl__train_calib(sl_engine *e, const sl_train_opts *o, const sl_head_data *d,
                                 const sl_head_train_opts *ho, const sl_head *h, const char *const *paths,
                                 char **pids, const sl__mrefs *mr, sl_train_report *rep, sl_calib **out,
                                 sl_error *err) {
    *out = NULL;
    size_t n = d->n_photos, dim = d->dim, nh = 0, m = 0;
    unsigned char *held = NULL;
    float *tp = NULL;
    uint32_t *tc = NULL;
    sl_train_photo *cp = NULL;
    sl_head *stand = NULL;
    sl_calib *hcal = NULL, *all = NULL;
    sl_status st = SL_OK;
    uint64_t seed = o->has_seed ? o->seed : SL__ENGINE_CALIB_SEED;
    if (paths) {
        held = sl__callocarray(n + 1, 1);
        cp = sl__callocarray(n + 1, sizeof *cp);
        if (!held || !cp) { st = sl__err_set(err, SL_E_NOMEM, "out of memory"); goto out; }
        nh = sl__train_holdout(d->photo_class, n, d->n_classes, seed, held);
    }
    if (nh) { /* the stand-in head, on the photos not held out */
        tp = sl__mallocarray((n - nh) * dim + 1, sizeof *tp);
        tc = sl__mallocarray(n - nh + 1, sizeof *tc);
        if (!tp || !tc) { st = sl__err_set(err, SL_E_NOMEM, "out of memory"); goto out; }
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            if (held[i]) continue;
            memcpy(tp + k * dim, d->photos + i * dim, dim * sizeof *tp);
            tc[k++] = d->photo_class[i];
        }
        sl_head_data td = *d;
        td.photos = tp;
        td.photo_class = tc;
        td.n_photos = k;
        st = sl_head_train_as(h, &td, ho, &stand, err); /* its epochs are reported as a second series */
        if (st == SL_E_INVALID) { /* e.g. the other photos show fewer than 2 products */
            st = SL_OK;
            nh = 0;
        } else if (st != SL_OK) {
            goto out;
        }
    }
    sl_calibrate_opts co;
    memset(&co, 0, sizeof co);
    co.photos = cp;
    co.seed = o->seed;
    co.has_seed = o->has_seed;
    co.jobs = o->jobs;
    co.cancel = o->cancel;
    co.progress = o->calib_progress;
    co.progress_ctx = o->calib_progress_ctx;
    if (nh) { /* check's map: the held-out photos through the stand-in */
        for (size_t i = 0; i < n; i++)
            if (held[i]) {
                cp[m].path = paths[i];
                cp[m++].product_id = pids[d->photo_class[i]];
            }
        co.n_photos = m;
        st = sl__calib_through(e, stand, mr, &co, 1, &hcal, err);
        stand = NULL;
        if (st == SL_E_INVALID) {
            /* no usable fit (their scores through the stand-in do not separate genuine pairs from
             * negatives, or too few pairs: a handful of products the stand-in cannot tell
             * apart): all photos through h, as with too few photos to hold out */
            st = SL_OK;
            nh = 0;
            if (err) memset(err, 0, sizeof *err);
        } else if (st != SL_OK) {
            goto out;
        }
    }
    m = 0; /* search's map (and check's, without a usable hold-out): all photos through h */
    for (size_t i = 0; paths && i < n; i++) {
        cp[m].path = paths[i];
        cp[m++].product_id = pids[d->photo_class[i]];
    }
    co.n_photos = m;
    if ((st = sl__calib_through(e, sl_head_clone(h), NULL, &co, 0, &all, err)) != SL_OK) goto out;
    /* nothing held out, with references: check's map from all photos too, on check's scores with
     * references (each photo without its own) */
    if (!hcal && mr && (st = sl__calib_through(e, sl_head_clone(h), mr, &co, 0, &hcal, err)) != SL_OK) goto out;
    if (!hcal) {
        *out = all;
        all = NULL;
    } else if (!(*out = sl_calib_merge(hcal, all))) {
        st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        goto out;
    }
    sl_calib_get_info(*out, &rep->calibration);
    rep->calibration_heldout = nh;
out:
    sl_calib_free(hcal);
    sl_calib_free(all);
    sl_head_free(stand);
    free(held);
    free(tp);
    free(tc);
    free(cp);
    return st;
}

sl_status sl_engine_train(sl_engine *e, const sl_train_opts *opts, sl_train_report *rep,
                          sl_error *err) {
    sl_train_opts o;
    memset(&o, 0, sizeof o);
    if (opts) o = *opts;
    sl_train_report dummy;
    if (!rep) rep = &dummy;
    memset(rep, 0, sizeof *rep);
    if (!e) return sl__err_set(err, SL_E_INVALID, "NULL engine");
    if (e->read_only) return sl__err_set(err, SL_E_STATE, "engine opened read-only");
    if (o.n_photos && !o.photos) return sl__err_set(err, SL_E_INVALID, "photos is NULL");
    sl_head_train_opts ho;
    if (o.head) ho = *o.head;
    else sl_head_train_opts_init(&ho);
    pthread_mutex_lock(&e->wmu);
    double t0 = sl__now();
    sl__tvecs tv;
    memset(&tv, 0, sizeof tv);
    char **prod = NULL, **pids = NULL, **cats = NULL;
    size_t npid = 0;
    uint32_t *gcls = NULL, *pcls = NULL, *ccat = NULL;
    sl_image_ref *augrefs = NULL;
    const char **ppaths = NULL;
    float *pv = NULL;
    sl_status *pst = NULL;
    char **pmsg = NULL;
    void **ploc = NULL;
    size_t *plen = NULL;
    sl__refset rs;
    memset(&rs, 0, sizeof rs);
    size_t np = 0, naug = 0;
    sl_features *f = NULL;
    sl_head *h = NULL;
    sl_status st = SL_OK;
    size_t dim = sl_features_dim(e->feat);
    if (!sl_features_ready(e->feat) || dim == 0 || !e->idx) {
        st = sl__err_set(err, SL_E_STATE, "the store has no catalog yet: add products before training");
        goto out;
    }
    /* the catalog: stored (pre-head) vectors, their products and categories */
    tv.dim = dim;
    if ((st = sl_store_each_vector(e->store, sl__tvec_add, &tv, err)) != SL_OK) goto out;
    if (tv.n == 0) {
        st = sl__err_set(err, SL_E_STATE, "the store has no catalog image to train against");
        goto out;
    }
    if ((st = sl_store_image_products(e->store, tv.ids, tv.n, &prod, err)) != SL_OK) goto out;
    if ((st = sl_store_product_ids(e->store, &pids, &npid, err)) != SL_OK) goto out;
    gcls = sl__callocarray(tv.n, sizeof *gcls);
    ccat = sl__callocarray(npid + 1, sizeof *ccat);
    cats = sl__callocarray(npid + 1, sizeof *cats);
    if (!gcls || !ccat || !cats) { st = sl__err_set(err, SL_E_NOMEM, "out of memory"); goto out; }
    for (size_t i = 0; i < tv.n; i++) {
        long c = prod[i] ? sl__strv_find(pids, npid, prod[i]) : -1;
        if (c < 0) { st = sl__err_set(err, SL_E_INTERNAL, "image %lld has no product", (long long)tv.ids[i]); goto out; }
        gcls[i] = (uint32_t)c;
    }
    {   /* category ids: products with the same category name share one */
        size_t ncat = 0;
        for (size_t p = 0; p < npid; p++) {
            sl_product pr;
            memset(&pr, 0, sizeof pr);
            if ((st = sl_store_get_product(e->store, pids[p], &pr, err)) != SL_OK) goto out;
            const char *c = pr.category && *pr.category ? pr.category : "";
            size_t k;
            for (k = 0; k < ncat; k++)
                if (strcmp(cats[k], c) == 0) break;
            if (k == ncat) {
                if (!(cats[ncat] = sl__strdup(c))) { sl_product_clear(&pr); st = sl__err_set(err, SL_E_NOMEM, "out of memory"); goto out; }
                ncat++;
            }
            ccat[p] = (uint32_t)k;
            sl_product_clear(&pr);
        }
    }
    /* the photos: labelled ones, else augmented copies of (a sample of) the catalog images */
    sl__tphoto_job j;
    memset(&j, 0, sizeof j);
    if (o.n_photos) {
        ppaths = sl__callocarray(o.n_photos, sizeof *ppaths);
        pcls = sl__callocarray(o.n_photos, sizeof *pcls);
        if (!ppaths || !pcls) { st = sl__err_set(err, SL_E_NOMEM, "out of memory"); goto out; }
        for (size_t i = 0; i < o.n_photos; i++) {
            const sl_train_photo *ph = &o.photos[i];
            long c = ph->product_id ? sl__strv_find(pids, npid, ph->product_id) : -1;
            if (!ph->path || c < 0) {
                rep->unknown++;
                if ((st = sl__failure_add(&rep->failures, &rep->n_failures, ph->path, ph->product_id, SL_E_NOT_FOUND,
                                          ph->path ? "no such product in the store" : "no file")) != SL_OK) {
                    st = sl__err_set(err, st, "out of memory");
                    goto out;
                }
                continue;
            }
            ppaths[np] = ph->path;
            pcls[np++] = (uint32_t)c;
        }
        j.paths = ppaths;
    } else {
        sl_image_ref *refs = NULL;
        size_t nr = 0;
        if ((st = sl_store_all_images(e->store, &refs, &nr, err)) != SL_OK) goto out;
        size_t m = nr < SL_ENGINE_TRAIN_SAMPLE_DEFAULT ? nr : SL_ENGINE_TRAIN_SAMPLE_DEFAULT;
        augrefs = sl__callocarray(m + 1, sizeof *augrefs);
        pcls = sl__callocarray(m * SL_LEARN_AUGMENT_PER_IMAGE + 1, sizeof *pcls);
        if (!augrefs || !pcls) { sl_image_refs_free(refs, nr); st = sl__err_set(err, SL_E_NOMEM, "out of memory"); goto out; }
        naug = m;
        for (size_t i = 0; i < m; i++) { /* evenly spaced; ownership of the strings moves */
            size_t s = (size_t)((double)i * (double)nr / (double)m);
            augrefs[i] = refs[s];
            memset(&refs[s], 0, sizeof refs[s]);
            long c = augrefs[i].product_id ? sl__strv_find(pids, npid, augrefs[i].product_id) : -1;
            for (int a = 0; a < SL_LEARN_AUGMENT_PER_IMAGE; a++) pcls[i * SL_LEARN_AUGMENT_PER_IMAGE + (size_t)a] = (uint32_t)(c < 0 ? 0 : c);
        }
        sl_image_refs_free(refs, nr);
        j.aug_refs = augrefs;
        np = m * SL_LEARN_AUGMENT_PER_IMAGE;
    }
    if (np == 0) { st = sl__err_set(err, SL_E_INVALID, "no photo of a product in the store"); goto out; }
    pv = sl__mallocarray(np, dim * sizeof *pv);
    pst = sl__callocarray(np, sizeof *pst);
    pmsg = sl__callocarray(np, sizeof *pmsg);
    if (!pv || !pst || !pmsg) { st = sl__err_set(err, SL_E_NOMEM, "out of memory"); goto out; }
    /* labelled photos become references of their products (not augmented copies) */
    int refs_wanted = !naug && !o.no_references;
    if (refs_wanted) {
        ploc = sl__callocarray(np, sizeof *ploc);
        plen = sl__callocarray(np, sizeof *plen);
        if (!ploc || !plen) { st = sl__err_set(err, SL_E_NOMEM, "out of memory"); goto out; }
        j.locals = ploc;
        j.local_len = plen;
    }
    j.e = e;
    j.dim = dim;
    j.seed = o.seed;
    j.vecs = pv;
    j.st = pst;
    j.msg = pmsg;
    j.cancel = o.cancel;
    sl__tally_start(&j.tally, o.progress, o.progress_ctx, np, t0);
    sl__parallel_for(np, o.jobs, sl__tphoto_one, &j);
    sl__tally_end(&j.tally);
    if (o.cancel && *o.cancel) { st = sl__err_set(err, SL_E_INTERRUPTED, "interrupted"); goto out; }
    size_t used = 0;
    for (size_t i = 0; i < np; i++) {
        if (pst[i] != SL_OK) {
            rep->failed++;
            if (!naug && sl__failure_add(&rep->failures, &rep->n_failures, ppaths[i], pids[pcls[i]], pst[i], pmsg[i]) != SL_OK) {
                st = sl__err_set(err, SL_E_NOMEM, "out of memory");
                goto out;
            }
            continue;
        }
        if (used != i) memcpy(pv + used * dim, pv + i * dim, dim * sizeof *pv);
        if (ppaths) ppaths[used] = ppaths[i];
        if (ploc && used != i) {
            free(ploc[used]); /* a failed photo's (none) */
            ploc[used] = ploc[i];
            plen[used] = plen[i];
            ploc[i] = NULL;
            plen[i] = 0;
        }
        pcls[used++] = pcls[i];
    }
    rep->photos = used;
    rep->augmented = naug != 0;
    rep->describe_seconds = sl__now() - t0;
    if (used == 0) { st = sl__err_set(err, SL_E_INVALID, "none of the photos could be read"); goto out; }
    /* train */
    double t1 = sl__now();
    sl_head_data d;
    memset(&d, 0, sizeof d);
    d.dim = dim;
    d.photos = pv;
    d.photo_class = pcls;
    d.n_photos = used;
    d.gallery = tv.vecs;
    d.gallery_class = gcls;
    d.n_gallery = tv.n;
    d.n_classes = npid;
    d.class_category = ccat;
    d.same_domain = naug != 0;
    if (o.has_seed) ho.seed = o.seed;
    if (ho.threads == 0) ho.threads = sl__jobs_or_cores(o.jobs);
    if (!ho.cancel) ho.cancel = o.cancel;
    if ((st = sl_head_train(&d, &ho, &h, err)) != SL_OK) goto out;
    rep->train_seconds = sl__now() - t1;
    rep->head_lambda = sl_head_choice(h);
    rep->prototypes = sl_head_prototypes(h);
    rep->prototype_weight = sl_head_prototype_weight(h);
    {
        int64_t products = 0;
        unsigned char *seen = sl__callocarray(npid + 1, 1);
        if (!seen) { st = sl__err_set(err, SL_E_NOMEM, "out of memory"); goto out; }
        for (size_t i = 0; i < used; i++) if (!seen[pcls[i]]) { seen[pcls[i]] = 1; products++; }
        free(seen);
        rep->products = (size_t)products;
    }
    /* the calibration for the head, fitted before anything is installed: the head and its
     * calibration go into one features version */
    sl_calib *cal = NULL;
    {
        sl_error cerr;
        sl_error_clear(&cerr);
        /* the photos as the references they become (refs_wanted: described with their local
         * features, never augmented copies) */
        sl__mrefs mr = {used, dim, pv, ploc, plen, pcls, pids, ppaths};
        st = sl__train_calib(e, &o, &d, &ho, h, ppaths, pids, refs_wanted ? &mr : NULL, rep, &cal, &cerr);
        if (st == SL_E_INTERRUPTED || st == SL_E_NOMEM) {
            sl__err_set(err, st, "%s", cerr.message[0] ? cerr.message : sl_strerror(st));
            goto out;
        }
        if (st != SL_OK) /* the head is installed without a calibration (the fallback applies) */
            rep->calibration_error = sl__strdup(cerr.message[0] ? cerr.message : sl_strerror(st));
        st = SL_OK;
    }
    /* write features-(N+1).bin = features-N + head + calibration, then swap */
    int64_t version = e->features_version + 1;
    if ((st = sl__engine_features_copy(e, &f, err)) != SL_OK) { sl_calib_free(cal); goto out; }
    if ((st = sl_features_set_head(f, h)) != SL_OK) {
        sl_calib_free(cal);
        st = sl__err_set(err, st, "%s", sl_features_errmsg(f));
        goto out;
    }
    h = NULL;
    if (cal && (st = sl_features_set_calib(f, cal)) != SL_OK) { /* cal is f's now, also on failure */
        st = sl__err_set(err, st, "%s", sl_features_errmsg(f));
        goto out;
    }
    if (o.cancel && *o.cancel) st = sl__err_set(err, SL_E_INTERRUPTED, "interrupted");
    else st = sl__engine_save_features(e, f, version, err);
    if (st != SL_OK) goto out;
    if (refs_wanted) {
        if (!(rs.refs = sl__callocarray(used + 1, sizeof *rs.refs))) { st = sl__err_set(err, SL_E_NOMEM, "out of memory"); goto out; }
        for (size_t i = 0; i < used; i++) {
            rs.refs[i].product_id = pids[pcls[i]];
            rs.refs[i].source = ppaths[i];
            rs.refs[i].vec = pv + i * dim;
            rs.refs[i].local = ploc[i];
            rs.refs[i].local_len = plen[i];
        }
        rs.n = used;
    }
    rs.dim = dim;
    st = sl__install(e, f, version, &rs, err);
    f = NULL;
    if (st != SL_OK) goto out;
    rep->features_version = version;
    rep->references = rs.n;
out:
    rep->seconds = sl__now() - t0;
    pthread_mutex_unlock(&e->wmu);
    sl_head_free(h);
    sl_features_free(f);
    free(tv.ids);
    free(tv.vecs);
    if (prod) sl_strings_free(prod, tv.n);
    sl_strings_free(pids, npid);
    if (cats) sl_strings_free(cats, npid);
    free(gcls);
    free(pcls);
    free(ccat);
    sl_image_refs_free(augrefs, naug);
    free(ppaths);
    free(pv);
    free(pst);
    for (size_t i = 0; pmsg && i < np; i++) free(pmsg[i]);
    free(pmsg);
    for (size_t i = 0; ploc && i < np; i++) free(ploc[i]);
    free(ploc);
    free(plen);
    free(rs.refs);
    return st;
}
