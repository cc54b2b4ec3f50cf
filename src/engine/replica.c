/*
 * engine/replica.c - a cluster's search node keeps the products of its shard in an ordinary
 * local store (a SQLite directory, the same format and query path as a single-node store):
 * sl_engine_replicate writes product states read from the cluster's system of record into it,
 * under the ids the cluster gave the images and references (labelled photos, searched with the
 * catalog: the index holds them too), together with the change log position they reflect, and
 * brings the in-memory index along.
 *
 * Invariants: one call = one local transaction (the states, the position, a generation bump),
 * committed under the engine's exclusive lock together with the index update, so a search sees
 * a batch completely or not at all, and after a crash the store and its recorded position agree
 * (index.bin is a cache checked against the generation). Applying a product's state is
 * idempotent: an image the store already has under the same id and content hash is kept.
 */
#include "engine/engine_internal.h"
#include "catalog/catalog.h"
#include "util/util.h"

#include <stdlib.h>
#include <string.h>

/* Makes the references of product rp in the open transaction exactly its images with index ids
 * >= SL_STORE_REF_ID_BASE (a reference never changes under its id: one the copy has is kept);
 * collects the index side in *c. */
static sl_status sl__replica_refs(sl_engine *e, const sl_replica_product *rp, sl__change *c, sl_error *err) {
    int64_t *have = NULL;
    size_t n_have = 0;
    sl_status st = sl_store_product_ref_ids(e->store, rp->id, &have, &n_have, err);
    for (size_t i = 0; i < n_have && st == SL_OK; i++) {
        int kept = 0;
        for (size_t j = 0; j < rp->n && !kept; j++) kept = rp->images[j].id == have[i];
        if (kept) continue;
        if ((st = sl__store_remove_ref(e->store, have[i] - SL_STORE_REF_ID_BASE, err)) != SL_OK) break;
        if (sl__change_reserve(c, 1, 0) != SL_OK) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        else c->removed[c->n_removed++] = have[i];
    }
    for (size_t j = 0; j < rp->n && st == SL_OK; j++) {
        const sl_replica_image *im = &rp->images[j];
        int known = im->id < SL_STORE_REF_ID_BASE;
        for (size_t i = 0; i < n_have && !known; i++) known = have[i] == im->id;
        if (known) continue;
        if (!im->vec) {
            st = sl__err_set(err, SL_E_CORRUPT, "reference %lld of product '%s' has no vector",
                             (long long)(im->id - SL_STORE_REF_ID_BASE), rp->id);
            break;
        }
        if ((st = sl__store_put_ref(e->store, im->id - SL_STORE_REF_ID_BASE, rp->id, im->source, im->vec, im->dim,
                                    im->local, im->local_len, err)) != SL_OK)
            break;
        if (sl__change_reserve(c, 1, 1) != SL_OK) {
            st = sl__err_set(err, SL_E_NOMEM, "out of memory");
            break;
        }
        c->added[c->n_added] = (uint64_t)im->id;
        c->vecs[c->n_added++] = im->vec;
    }
    free(have);
    return st;
}

/* Applies one product inside the open transaction; collects the index side in *c (an image put
 * again under its id is removed, then added). */
static sl_status sl__replica_one(sl_engine *e, const sl_replica_product *rp, sl__change *c, sl_error *err) {
    sl_status st;
    int64_t *gone = NULL;
    size_t n_gone = 0;
    sl_image_ref *old = NULL;
    size_t n_old = 0;
    if (rp->removed) {
        st = sl_store_remove_product(e->store, rp->id, &gone, &n_gone, err);
        if (st == SL_E_NOT_FOUND) {
            if (err) sl_error_clear(err);
            st = SL_OK;
        }
    } else {
        if ((st = sl_store_put_product(e->store, rp->product, err)) != SL_OK ||
            (st = sl_store_product_images(e->store, rp->id, &old, &n_old, err)) != SL_OK)
            goto out;
        gone = sl__callocarray(n_old + 1, sizeof *gone);
        if (!gone) {
            st = sl__err_set(err, SL_E_NOMEM, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < n_old && st == SL_OK; i++) {
            int kept = 0;
            for (size_t j = 0; j < rp->n && !kept; j++)
                kept = rp->images[j].id == old[i].id && strcmp(rp->images[j].hash, old[i].hash) == 0;
            if (kept) continue;
            if ((st = sl_store_remove_image(e->store, old[i].id, err)) == SL_OK) gone[n_gone++] = old[i].id;
        }
        for (size_t j = 0; j < rp->n && st == SL_OK; j++) {
            const sl_replica_image *im = &rp->images[j];
            if (im->id >= SL_STORE_REF_ID_BASE) continue; /* a reference: sl__replica_refs */
            int have = 0;
            for (size_t i = 0; i < n_old && !have; i++) have = old[i].id == im->id && strcmp(old[i].hash, im->hash) == 0;
            if (have) continue;
            if ((st = sl_store_put_image(e->store, im->id, rp->id, im->source, im->hash, im->size, im->file, im->vec,
                                         im->dim, im->local, im->local_len, err)) != SL_OK)
                break;
            if (!im->vec) continue;
            if (sl__change_reserve(c, 1, 1) != SL_OK) {
                st = sl__err_set(err, SL_E_NOMEM, "out of memory");
                break;
            }
            c->removed[c->n_removed++] = im->id; /* replaced under the same id */
            c->added[c->n_added] = (uint64_t)im->id;
            c->vecs[c->n_added++] = im->vec;
        }
    }
    if (st == SL_OK && !rp->removed) st = sl__replica_refs(e, rp, c, err);
    if (st == SL_OK && n_gone && sl__change_reserve(c, n_gone, 0) != SL_OK)
        st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    for (size_t i = 0; i < n_gone && st == SL_OK; i++) c->removed[c->n_removed++] = gone[i];
out:
    free(gone);
    sl_image_refs_free(old, n_old);
    return st;
}

sl_status sl_engine_replicate(sl_engine *e, const sl_replica_product *v, size_t n,
                              const char *meta_key, const char *meta_value, sl_error *err) {
    if (e->read_only) return sl__err_set(err, SL_E_STATE, "engine opened read-only");
    if (sl_store_is_shared(e->store))
        return sl__err_set(err, SL_E_STATE, "a replica is a local store, not the cluster store");
    size_t dim = sl_features_ready(e->feat) ? sl_features_dim(e->feat) : 0;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; !v[i].removed && j < v[i].n; j++)
            if (v[i].images[j].vec && v[i].images[j].dim != dim)
                return sl__err_set(err, SL_E_STATE, "image %lld: a vector of %zu floats, the features give %zu "
                                   "(another features version)", (long long)v[i].images[j].id, v[i].images[j].dim, dim);
    pthread_mutex_lock(&e->wmu);
    sl__change c;
    memset(&c, 0, sizeof c);
    sl_status st = sl_store_begin(e->store, err);
    if (st != SL_OK) goto out;
    for (size_t i = 0; i < n && st == SL_OK; i++) st = sl__replica_one(e, &v[i], &c, err);
    if (st == SL_OK && meta_key) st = sl_store_meta_set(e->store, meta_key, meta_value, err);
    /* commit_change's gc then forgets the (absent) files the removed image rows queued */
    if (st != SL_OK)
        sl_store_rollback(e->store);
    else
        st = sl__commit_change(e, &c, err);
out:
    pthread_mutex_unlock(&e->wmu);
    sl__change_free(&c);
    return st;
}
