/*
 * engine/write.c - catalog writes through the engine: put (upsert), patch (JSON merge patch) and
 * delete one product, and the store's own copies of catalog images.
 *
 * Invariants:
 *  - One product change = one SQLite transaction (metadata, FTS row, removed and added images
 *    with their vectors, generation bump). The COMMIT and the matching index update happen
 *    under the exclusive engine lock, so concurrent searches see all of it or none of it.
 *  - An image whose content hash the product already has is kept as is (no re-extraction, same
 *    image id); images with the same hash given twice count once.
 *  - Every image row names a copy under images/ that exists when the row commits: the copy is
 *    written (fsync, rename, directory fsync) before, and checked again inside the transaction,
 *    whose write lock every file deleter also takes (sl_store_gc): a deleter that removed it in
 *    between cannot be running any more, and the copy is written again.
 *  - Files of removed images are deleted after the commit by sl_store_gc (crash-safe: queued in
 *    the same transaction); the feed's own files are never touched.
 *  - Features are never changed by a product write except by the very first training.
 */
#include "engine/engine_internal.h"
#include "catalog/catalog.h"
#include "util/util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *sl__nz(const char *s) { return s ? s : ""; }
static const char *sl__attrs(const char *s) { return s && *s ? s : "{}"; }

int sl__product_equal(const sl_product *a, const sl_product *b) {
    return strcmp(sl__nz(a->id), sl__nz(b->id)) == 0 && strcmp(sl__nz(a->title), sl__nz(b->title)) == 0 &&
           strcmp(sl__nz(a->category), sl__nz(b->category)) == 0 &&
           strcmp(sl__nz(a->description), sl__nz(b->description)) == 0 &&
           strcmp(sl__nz(a->url), sl__nz(b->url)) == 0 &&
           strcmp(sl__attrs(a->attrs_json), sl__attrs(b->attrs_json)) == 0 &&
           strcmp(sl__nz(a->currency), sl__nz(b->currency)) == 0 &&
           a->has_price == b->has_price && (!a->has_price || a->price == b->price);
}

/* ---- the store's copies of catalog images -------------------------------------------------- */

sl_status sl__engine_copy_bytes(const sl_engine *e, const void *data, size_t len,
                                const sl_image_info *info, void **copy, size_t *copy_len,
                                int *owned, char ext[16], sl_error *err) {
    (void)e;
    *copy = NULL;
    *copy_len = 0;
    *owned = 0;
    int w = info ? info->width : 0, h = info ? info->height : 0;
    if (w > 0 && h > 0 && w <= SL_ENGINE_COPY_MAX_SIDE && h <= SL_ENGINE_COPY_MAX_SIDE && info->format[0]) {
        *copy = (void *)data;
        *copy_len = len;
        snprintf(ext, 16, "%s", info->format);
        return SL_OK;
    }
    sl_image_load_opts o;
    memset(&o, 0, sizeof o);
    o.max_side = SL_ENGINE_COPY_MAX_SIDE;
    sl_image *img = NULL;
    sl_status st = sl_image_load_buffer(data, len, &o, &img, NULL, err);
    if (st != SL_OK) return st;
    st = sl_image_encode(img, "jpeg", SL_ENGINE_COPY_QUALITY, copy, copy_len, err);
    sl_image_free(img);
    if (st != SL_OK) return st;
    *owned = 1;
    snprintf(ext, 16, "jpeg");
    return SL_OK;
}

sl_status sl__engine_write_copy(sl_engine *e, const void *copy, size_t len, const char *ext,
                                char file[SL__IMAGE_FILE_MAX], sl_error *err) {
    char hash[65];
    sl__sha256_buffer(copy, len, hash);
    sl__image_file_name(file, hash, ext);
    return sl_store_file_put(e->store, file, copy, len, err);
}

sl_status sl__engine_keep_copy(sl_engine *e, const void *data, size_t len,
                               const sl_image_info *info, char file[SL__IMAGE_FILE_MAX],
                               sl_error *err) {
    void *copy = NULL;
    size_t clen = 0;
    int owned = 0;
    char ext[16];
    sl_status st = sl__engine_copy_bytes(e, data, len, info, &copy, &clen, &owned, ext, err);
    if (st == SL_OK) st = sl__engine_write_copy(e, copy, clen, ext, file, err);
    if (owned) free(copy);
    return st;
}

int sl__image_same_bytes(const sl_image_ref *old, const char hash[65]) {
    if (strcmp(old->hash, hash) == 0) return 1;
    if (!old->in_store || !old->file) return 0;
    const char *base = strrchr(old->file, '/');
    base = base ? base + 1 : old->file;
    return strncmp(base, hash, 64) == 0 && base[64] == '.';
}

void sl__engine_gc(sl_engine *e) { (void)sl_store_gc(e->store, NULL, NULL); }

/* Inside the product's transaction: the copy of a new image is there, or is written again. */
static sl_status sl__ensure_copy(sl_engine *e, const sl__described *d, sl_error *err) {
    if (sl_store_file_size(e->store, d->file) >= 0) return SL_OK;
    char again[SL__IMAGE_FILE_MAX] = "";
    sl_status st;
    const char *ext = strrchr(d->file, '.');
    if (d->copy) {
        st = sl__engine_write_copy(e, d->copy, d->copy_len, ext ? ext + 1 : "img", again, err);
    } else if (d->origin) {
        void *buf = NULL;
        size_t len = 0;
        sl_image *img = NULL;
        sl_image_info info;
        st = sl__read_file(d->origin, SL_IMAGE_MAX_BYTES_DEFAULT, &buf, &len, err);
        if (st == SL_OK) st = sl__engine_decode(e, buf, len, &img, &info, err);
        sl_image_free(img);
        if (st == SL_OK) st = sl__engine_keep_copy(e, buf, len, &info, again, err);
        free(buf);
    } else {
        st = sl__err_set(err, SL_E_IO, "%s: the copy was removed before it could be committed", d->file);
    }
    if (st == SL_OK && strcmp(again, d->file) != 0)
        st = sl__err_set(err, SL_E_IO, "%s: the image changed while it was being added", d->file);
    return st;
}

void sl__change_free(sl__change *c) {
    free(c->removed);
    free(c->added);
    free(c->vecs);
    memset(c, 0, sizeof *c);
}

sl_status sl__change_reserve(sl__change *c, size_t more_removed, size_t more_added) {
    if (c->n_removed + more_removed > c->cap_removed) {
        size_t nc = (c->n_removed + more_removed) * 2;
        int64_t *r = sl__reallocarray(c->removed, nc, sizeof *r);
        if (!r) return SL_E_NOMEM;
        c->removed = r;
        c->cap_removed = nc;
    }
    if (c->n_added + more_added > c->cap_added) {
        size_t nc = (c->n_added + more_added) * 2;
        uint64_t *a = sl__reallocarray(c->added, nc, sizeof *a);
        if (!a) return SL_E_NOMEM;
        c->added = a;
        const float **v = sl__reallocarray(c->vecs, nc, sizeof *v);
        if (!v) return SL_E_NOMEM;
        c->vecs = v;
        c->cap_added = nc;
    }
    return SL_OK;
}

/* Inside an open transaction: writes product p and makes its images exactly imgs (those with
 * `reuse` keep their row; keep_images: leave the images alone), recording the index side in
 * *c. */
static sl_status sl__stage_product(sl_engine *e, const sl_product *p, const char *const *sources,
                                   const sl__described *imgs, size_t n, int keep_images,
                                   sl__change *c, sl_error *err) {
    size_t dim = sl_features_dim(e->feat);
    sl_image_ref *old = NULL;
    size_t n_old = 0;
    sl_status st = sl_store_put_product(e->store, p, err);
    if (st != SL_OK || keep_images) return st;
    if ((st = sl_store_product_images(e->store, p->id, &old, &n_old, err)) != SL_OK) return st;
    if (sl__change_reserve(c, n_old, n) != SL_OK) {
        sl_image_refs_free(old, n_old);
        return sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n_old && st == SL_OK; i++) {
        int kept = 0;
        for (size_t j = 0; j < n && !kept; j++) kept = imgs[j].reuse == old[i].id;
        if (kept) continue;
        if ((st = sl_store_remove_image(e->store, old[i].id, err)) == SL_OK) c->removed[c->n_removed++] = old[i].id;
    }
    for (size_t j = 0; j < n && st == SL_OK; j++) {
        if (imgs[j].reuse > 0) continue;
        int64_t id = 0;
        if ((st = sl__ensure_copy(e, &imgs[j], err)) != SL_OK) break;
        if (imgs[j].id > 0) { /* an id given by the cluster's ingest */
            id = imgs[j].id;
            st = sl_store_put_image(e->store, id, p->id, sources[j], imgs[j].hash, imgs[j].size, imgs[j].file,
                                    imgs[j].vec, imgs[j].vec ? dim : 0, imgs[j].local, imgs[j].local_len, err);
        } else {
            st = sl_store_add_image(e->store, p->id, sources[j], imgs[j].hash, imgs[j].size, imgs[j].file,
                                    imgs[j].vec, imgs[j].vec ? dim : 0, imgs[j].local, imgs[j].local_len, &id, err);
        }
        if (st == SL_OK && imgs[j].vec) {
            c->added[c->n_added] = (uint64_t)id;
            c->vecs[c->n_added++] = imgs[j].vec;
        }
    }
    sl_image_refs_free(old, n_old);
    return st;
}

sl_status sl__commit_change(sl_engine *e, const sl__change *c, sl_error *err) {
    sl_status st = sl__engine_bump(e, err);
    if (st != SL_OK) {
        sl_store_rollback(e->store);
        return st;
    }
    pthread_rwlock_wrlock(&e->lock);
    st = sl_store_commit(e->store, err);
    if (st == SL_OK) {
        sl__engine_committed(e);
        sl_status ist = SL_OK;
        if (e->idx) {
            for (size_t i = 0; i < c->n_removed && ist == SL_OK; i++) {
                ist = sl_index_remove(e->idx, (uint64_t)c->removed[i]);
                if (ist == SL_E_NOT_FOUND) ist = SL_OK;
            }
            /* in batches, so an HNSW index links them on all cores; through the features' head:
             * catalog images through its gallery side, then references (which only a search
             * node's copy adds here) through its query side, each kind in batches of its own as
             * an index rebuild projects them */
            float *buf = NULL;
            uint64_t *bids = NULL;
            size_t dim = (size_t)sl_index_dim(e->idx), per = 256;
            if (c->n_added > 1 && (!(buf = sl__mallocarray(per, dim * sizeof *buf)) || !(bids = sl__mallocarray(per, sizeof *bids))))
                ist = SL_E_NOMEM;
            if (c->n_added == 1) ist = sl__engine_index_add(e, (int64_t)c->added[0], c->vecs[0]);
            for (int kind = 0; kind < 2 && buf && ist == SL_OK; kind++) {
                size_t m = 0;
                for (size_t i = 0; i <= c->n_added && ist == SL_OK; i++) {
                    if (i < c->n_added && (c->added[i] >= (uint64_t)SL_STORE_REF_ID_BASE) == kind) {
                        memcpy(buf + m * dim, c->vecs[i], dim * sizeof *buf);
                        bids[m++] = c->added[i];
                    }
                    if (m == 0 || (m < per && i < c->n_added)) continue;
                    ist = sl_features_project(e->feat, kind ? SL_HEAD_QUERY : SL_HEAD_GALLERY, buf, buf, m);
                    if (ist == SL_OK) ist = sl_index_add_batch(e->idx, m, bids, buf);
                    m = 0;
                }
            }
            free(bids);
            free(buf);
            e->index_dirty = 1;
        } else if (c->n_added > 0 && !e->no_index) {
            ist = SL_E_STATE;
        }
        /* The store is committed: bring the index back in line whatever happened. */
        if (ist != SL_OK) (void)sl__engine_rebuild_index(e, NULL);
    }
    pthread_rwlock_unlock(&e->lock);
    if (st == SL_OK && c->n_removed && !e->gc_deferred) sl__engine_gc(e);
    return st;
}

sl_status sl__engine_commit_product(sl_engine *e, const sl_product *p, const char *const *sources,
                                    sl__described *imgs, size_t n, int keep_images,
                                    sl_error *err) {
    sl__change c;
    memset(&c, 0, sizeof c);
    sl_status st = sl_store_begin(e->store, err);
    if (st != SL_OK) return st;
    /* a cluster store: no retrain may commit between this description and this commit */
    if ((st = sl__engine_lock_features(e, 0, err)) != SL_OK ||
        (st = sl__stage_product(e, p, sources, imgs, n, keep_images, &c, err)) != SL_OK)
        sl_store_rollback(e->store);
    else
        st = sl__commit_change(e, &c, err);
    sl__change_free(&c);
    return st;
}

/* Absolute form of a path (for the source column); malloc'ed. */
static char *sl__abspath(const char *path) {
    char *r = realpath(path, NULL);
    return r ? r : sl__strdup(path);
}

/* sl_engine_put_product with wmu held. */
static sl_status sl__put_locked(sl_engine *e, const sl_product *p, const sl_image_input *images,
                                size_t n_images, sl_put_outcome *outcome, sl_error *err) {
    sl_status st = SL_OK;
    void **bytes = NULL;
    size_t *lens = NULL;
    char **sources = NULL;
    sl_image **decoded = NULL;
    sl__described *d = NULL;
    void **copies = NULL;
    sl_image_ref *old = NULL;
    size_t n_old = 0, n = 0;
    sl_product cur;
    memset(&cur, 0, sizeof cur);
    int exists = sl_store_get_product(e->store, p->id, &cur, NULL) == SL_OK;
    if (!exists && n_images == 0) {
        st = sl__err_set(err, SL_E_INVALID, "product '%s' does not exist: give at least one image", p->id);
        goto out;
    }
    if (exists && (st = sl_store_product_images(e->store, p->id, &old, &n_old, err)) != SL_OK) goto out;
    bytes = sl__callocarray(n_images + 1, sizeof *bytes);
    lens = sl__callocarray(n_images + 1, sizeof *lens);
    sources = sl__callocarray(n_images + 1, sizeof *sources);
    decoded = sl__callocarray(n_images + 1, sizeof *decoded);
    d = sl__callocarray(n_images + 1, sizeof *d);
    copies = sl__callocarray(n_images + 1, sizeof *copies);
    if (!bytes || !lens || !sources || !decoded || !d || !copies) {
        st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        goto out;
    }
    /* read + hash, dropping repeated hashes */
    for (size_t i = 0; i < n_images; i++) {
        const sl_image_input *in = &images[i];
        void *buf = NULL;
        size_t len = 0;
        if (in->data) {
            buf = malloc(in->len ? in->len : 1);
            if (!buf) {
                st = sl__err_set(err, SL_E_NOMEM, "out of memory");
                goto out;
            }
            memcpy(buf, in->data, in->len);
            len = in->len;
        } else if (in->path) {
            if ((st = sl__read_file(in->path, SL_IMAGE_MAX_BYTES_DEFAULT, &buf, &len, err)) != SL_OK) {
                sl__err_prefix(err, "image %zu", i);
                goto out;
            }
        } else {
            st = sl__err_set(err, SL_E_INVALID, "image %zu: neither a path nor data", i);
            goto out;
        }
        char hash[65];
        sl__sha256_buffer(buf, len, hash);
        int dup = 0;
        for (size_t j = 0; j < n && !dup; j++) dup = strcmp(d[j].hash, hash) == 0;
        if (dup) {
            free(buf);
            continue;
        }
        memcpy(d[n].hash, hash, sizeof hash);
        d[n].size = (int64_t)len;
        for (size_t j = 0; j < n_old; j++)
            if (sl__image_same_bytes(&old[j], hash)) d[n].reuse = old[j].id;
        bytes[n] = buf;
        lens[n] = len;
        sources[n] = in->data ? sl__strdup("") : sl__abspath(in->path);
        if (!sources[n]) {
            free(buf);
            bytes[n] = NULL;
            st = sl__err_set(err, SL_E_NOMEM, "out of memory");
            goto out;
        }
        if (!d[n].reuse) {
            sl_image_info info;
            int owned = 0;
            char ext[16];
            if ((st = sl__engine_decode(e, buf, len, &decoded[n], &info, err)) != SL_OK ||
                (st = sl__engine_copy_bytes(e, buf, len, &info, &copies[n], &d[n].copy_len, &owned, ext, err)) != SL_OK) {
                sl__err_prefix(err, "image %zu", i);
                n++;
                goto out;
            }
            if (!owned) { /* the copy is the buffer itself */
                copies[n] = NULL;
                d[n].copy = buf;
            } else {
                d[n].copy = copies[n];
            }
            if ((st = sl__engine_write_copy(e, d[n].copy, d[n].copy_len, ext, d[n].file, err)) != SL_OK) {
                n++;
                goto out;
            }
        }
        n++;
    }
    /* unchanged? */
    if (exists && sl__product_equal(&cur, p)) {
        int same = n_images == 0 || n == n_old;
        for (size_t i = 0; same && i < n; i++) same = d[i].reuse > 0;
        if (same) goto out; /* SL_PUT_UNCHANGED */
    }
    /* the very first images train the learned parts */
    if (!sl_features_ready(e->feat)) {
        const sl_image **train = sl__callocarray(n + 1, sizeof *train);
        size_t nt = 0;
        if (!train) {
            st = sl__err_set(err, SL_E_NOMEM, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < n; i++)
            if (decoded[i]) train[nt++] = decoded[i];
        st = sl__engine_train(e, (const sl_image *const *)train, nt, err);
        free(train);
        if (st != SL_OK) goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (d[i].reuse) continue;
        if ((st = sl__engine_describe(e, decoded[i], &d[i].vec, &d[i].local, &d[i].local_len, err)) != SL_OK) {
            sl__err_prefix(err, "image %zu", i);
            goto out;
        }
    }
    st = sl__engine_commit_product(e, p, (const char *const *)sources, d, n, n_images == 0, err);
    if (st == SL_OK && outcome) *outcome = exists ? SL_PUT_UPDATED : SL_PUT_ADDED;
    /* the first calibration of a store built product by product (later ones: add, calibrate) */
    if (st == SL_OK && sl__engine_calib_due(e, 0)) (void)sl__engine_calibrate(e, NULL, NULL, NULL);
out:
    for (size_t i = 0; i < n_images + 1; i++) {
        if (bytes) free(bytes[i]);
        if (sources) free(sources[i]);
        if (decoded) sl_image_free(decoded[i]);
        if (d) sl__described_clear(&d[i]);
        if (copies) free(copies[i]);
    }
    free(bytes);
    free(lens);
    free(sources);
    free(decoded);
    free(d);
    free(copies);
    sl_image_refs_free(old, n_old);
    sl_product_clear(&cur);
    return st;
}

static sl_status sl__write_checks(sl_engine *e, const char *id, sl_error *err) {
    const char *bad_id = sl_product_id_check(id);
    if (bad_id) return sl__err_set(err, SL_E_INVALID, "bad product id: it %s", bad_id);
    if (e->read_only) return sl__err_set(err, SL_E_STATE, "engine opened read-only");
    return SL_OK;
}

sl_status sl_engine_put_product(sl_engine *e, const sl_product *p, const sl_image_input *images,
                                size_t n_images, sl_put_outcome *outcome, sl_error *err) {
    if (outcome) *outcome = SL_PUT_UNCHANGED;
    sl_status st = sl__write_checks(e, p ? p->id : NULL, err);
    if (st != SL_OK) return st;
    if (n_images && !images) return sl__err_set(err, SL_E_INVALID, "images is NULL");
    pthread_mutex_lock(&e->wmu);
    st = sl__put_locked(e, p, images, n_images, outcome, err);
    pthread_mutex_unlock(&e->wmu);
    return st;
}

sl_status sl_engine_patch_product(sl_engine *e, const char *product_id, const char *patch,
                                  size_t patch_len, const sl_image_input *images,
                                  size_t n_images, sl_put_outcome *outcome, sl_error *err) {
    if (outcome) *outcome = SL_PUT_UNCHANGED;
    sl_status st = sl__write_checks(e, product_id, err);
    if (st != SL_OK) return st;
    if (n_images && !images) return sl__err_set(err, SL_E_INVALID, "images is NULL");
    pthread_mutex_lock(&e->wmu);
    sl_product p;
    st = sl_store_get_product(e->store, product_id, &p, err);
    if (st == SL_OK && patch) st = sl_product_apply_json(&p, patch, patch_len, SL_APPLY_MERGE, NULL, err);
    if (st == SL_OK) st = sl__put_locked(e, &p, images, n_images, outcome, err);
    sl_product_clear(&p);
    pthread_mutex_unlock(&e->wmu);
    return st;
}

sl_status sl_engine_delete_product(sl_engine *e, const char *product_id, sl_error *err) {
    if (e->read_only) return sl__err_set(err, SL_E_STATE, "engine opened read-only");
    pthread_mutex_lock(&e->wmu);
    int64_t *removed = NULL;
    size_t n = 0;
    sl_status st = sl_store_begin(e->store, err);
    if (st == SL_OK) st = sl_store_remove_product(e->store, product_id, &removed, &n, err);
    if (st == SL_OK) st = sl__engine_bump(e, err);
    if (st != SL_OK) {
        sl_store_rollback(e->store);
    } else {
        pthread_rwlock_wrlock(&e->lock);
        st = sl_store_commit(e->store, err);
        if (st == SL_OK) {
            sl__engine_committed(e);
            for (size_t i = 0; i < n && e->idx; i++) (void)sl_index_remove(e->idx, (uint64_t)removed[i]);
            e->index_dirty = 1;
        }
        pthread_rwlock_unlock(&e->lock);
        if (st == SL_OK) sl__engine_gc(e);
    }
    free(removed);
    pthread_mutex_unlock(&e->wmu);
    return st;
}

/* ---- images described elsewhere ---------------------------------------------------------- */

void sl_image_descriptor_clear(sl_image_descriptor *d) {
    if (!d) return;
    free(d->source);
    free(d->copy);
    free(d->file);
    free(d->vec);
    free(d->local);
    memset(d, 0, sizeof *d);
}

sl_status sl_engine_describe_bytes(sl_engine *e, const void *data, size_t len, const char *source,
                                   sl_image_descriptor *out, sl_error *err) {
    memset(out, 0, sizeof *out);
    if (!e || (!data && len)) return sl__err_set(err, SL_E_INVALID, "no engine or no bytes");
    sl_image *img = NULL;
    sl_image_info info;
    void *copy = NULL;
    int owned = 0;
    sl_status st = sl__engine_decode(e, data, len, &img, &info, err);
    if (st == SL_OK) st = sl__engine_copy_bytes(e, data, len, &info, &copy, &out->copy_len, &owned, out->copy_ext, err);
    if (st == SL_OK && !owned) { /* the copy is the bytes themselves: the descriptor keeps its own */
        if ((out->copy = malloc(len ? len : 1))) memcpy(out->copy, data, len);
        else st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    } else if (st == SL_OK) {
        out->copy = copy;
    }
    if (st == SL_OK)
        st = sl_engine_describe(e, img, &out->vec, &out->dim, &out->local, &out->local_len, &out->features_version, err);
    if (st == SL_OK && source && !(out->source = sl__strdup(source))) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    sl_image_free(img);
    if (st != SL_OK) {
        if (owned && out->copy != copy) free(copy);
        sl_image_descriptor_clear(out);
        return st;
    }
    sl__sha256_buffer(data, len, out->hash);
    out->size = (int64_t)len;
    return SL_OK;
}

static int sl__is_hash(const char *h) {
    size_t n = 0;
    for (; h[n] && n < 65; n++)
        if (!((h[n] >= '0' && h[n] <= '9') || (h[n] >= 'a' && h[n] <= 'f'))) return 0;
    return n == 64;
}

/* Nonzero when copy (len bytes) starts with the signature of format ext. */
static int sl__copy_signature(const unsigned char *c, size_t len, const char *ext) {
    if (!strcmp(ext, "jpeg") || !strcmp(ext, "jpg")) return len >= 3 && c[0] == 0xff && c[1] == 0xd8 && c[2] == 0xff;
    if (!strcmp(ext, "png")) return len >= 8 && !memcmp(c, "\x89PNG\r\n\x1a\n", 8);
    if (!strcmp(ext, "gif")) return len >= 6 && (!memcmp(c, "GIF87a", 6) || !memcmp(c, "GIF89a", 6));
    if (!strcmp(ext, "webp")) return len >= 12 && !memcmp(c, "RIFF", 4) && !memcmp(c + 8, "WEBP", 4);
    if (!strcmp(ext, "tiff") || !strcmp(ext, "tif")) return len >= 4 && (!memcmp(c, "II*\0", 4) || !memcmp(c, "MM\0*", 4));
    if (!strcmp(ext, "heif") || !strcmp(ext, "heic")) return len >= 12 && !memcmp(c + 4, "ftyp", 4);
    return 0;
}

/* The copy a descriptor names, relative to the store ("images/<sha256>.<ext>"; given so, or as
 * the path under this store's directory that sl_image_ref.file holds), or NULL. */
static const char *sl__named_copy(sl_engine *e, const char *file) {
    if (!file) return NULL;
    const char *dir = sl_store_dir(e->store);
    size_t n = strlen(dir);
    if (!strncmp(file, dir, n) && file[n] == '/') file += n + 1;
    return sl__image_file_valid(file) ? file : NULL;
}

/* Checks one descriptor against the store's features (dim, verify, version) before anything is
 * written. */
static sl_status sl__check_descriptor(sl_engine *e, const sl_image_descriptor *d, size_t dim, int verify,
                                      const char *pid, size_t i, sl_error *err) {
    if (d->features_version != e->features_version)
        return sl__err_set(err, SL_E_STATE, "product '%s', image %zu: described with features version %lld, the "
                           "store's are version %lld (retrained since?): describe it again", pid, i,
                           (long long)d->features_version, (long long)e->features_version);
    if (!sl__is_hash(d->hash))
        return sl__err_set(err, SL_E_INVALID, "product '%s', image %zu: hash is not 64 lowercase hex digits", pid, i);
    if (d->size < 0) return sl__err_set(err, SL_E_INVALID, "product '%s', image %zu: negative size", pid, i);
    if (d->copy ? !d->copy_len || !sl__copy_signature(d->copy, d->copy_len, d->copy_ext)
                : !sl__named_copy(e, d->file))
        return sl__err_set(err, SL_E_INVALID, d->copy ? "product '%s', image %zu: the copy is not a %s image"
                                                      : "product '%s', image %zu: no copy, and no valid copy name "
                                                        "(images/<sha256>.<ext>)%s",
                           pid, i, d->copy ? d->copy_ext : "");
    if (!d->vec || d->dim != dim)
        return sl__err_set(err, SL_E_INVALID, "product '%s', image %zu: vector of %zu floats, the store's features "
                           "make %zu", pid, i, d->vec ? d->dim : 0, dim);
    double n2 = 0;
    for (size_t j = 0; j < dim; j++) n2 += (double)d->vec[j] * d->vec[j];
    if (!isfinite(n2) || !(n2 > 0))
        return sl__err_set(err, SL_E_INVALID, "product '%s', image %zu: vector is zero or not finite", pid, i);
    int has_local = d->local && d->local_len;
    if (!verify && has_local)
        return sl__err_set(err, SL_E_INVALID, "product '%s', image %zu: local features given, but the store's "
                           "features do not verify", pid, i);
    if (verify && !has_local)
        return sl__err_set(err, SL_E_INVALID, "product '%s', image %zu: the store verifies geometrically: local "
                           "features are required", pid, i);
    if (has_local) {
        sl_local_features *lf = NULL;
        sl_error e2;
        if (sl_local_features_deserialize(d->local, d->local_len, &lf, &e2) != SL_OK)
            return sl__err_set(err, SL_E_INVALID, "product '%s', image %zu: local features: %s", pid, i, e2.message);
        sl_local_features_free(lf);
    }
    return SL_OK;
}

/* Writes (or finds) the copy of a descriptor before the transaction; *file receives its name. */
static sl_status sl__descriptor_copy(sl_engine *e, const sl_image_descriptor *d, char file[SL__IMAGE_FILE_MAX],
                                     const char *pid, size_t i, sl_error *err) {
    if (d->copy) return sl__engine_write_copy(e, d->copy, d->copy_len, d->copy_ext, file, err);
    snprintf(file, SL__IMAGE_FILE_MAX, "%s", sl__named_copy(e, d->file));
    char *path = sl_store_path(e->store, file);
    struct stat sb;
    int here = path && stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
    free(path);
    return here ? SL_OK : sl__err_set(err, SL_E_INVALID, "product '%s', image %zu: no copy %s in the store", pid, i, file);
}

/* Stages one described product in the open transaction (see sl_engine_put_described); files[i]
 * is the copy of its image i. */
static sl_status sl__stage_described(sl_engine *e, const sl_described_product *it,
                                     char (*files)[SL__IMAGE_FILE_MAX], sl__change *c,
                                     sl_put_outcome *outcome, sl_error *err) {
    const sl_product *p = it->product;
    size_t n = 0, k = it->n_images;
    sl_product cur;
    memset(&cur, 0, sizeof cur);
    sl_image_ref *old = NULL;
    size_t n_old = 0;
    int exists = sl_store_get_product(e->store, p->id, &cur, NULL) == SL_OK;
    sl__described *d = sl__callocarray(k + 1, sizeof *d);
    const char **src = sl__callocarray(k + 1, sizeof *src);
    sl_status st = SL_OK;
    if (!d || !src) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    else if (!exists && k == 0)
        st = sl__err_set(err, SL_E_INVALID, "product '%s' does not exist: give at least one image", p->id);
    else if (exists) st = sl_store_product_images(e->store, p->id, &old, &n_old, err);
    for (size_t i = 0; i < k && st == SL_OK; i++) {
        const sl_image_descriptor *im = &it->images[i];
        int dup = 0;
        for (size_t j = 0; j < n && !dup; j++) dup = strcmp(d[j].hash, im->hash) == 0;
        if (dup) continue;
        memcpy(d[n].hash, im->hash, 65);
        d[n].size = im->size;
        d[n].vec = im->vec;          /* borrowed: never freed here */
        d[n].local = im->local;
        d[n].local_len = im->local_len;
        memcpy(d[n].file, files[i], SL__IMAGE_FILE_MAX);
        d[n].copy = im->copy;        /* to write it again if a deleter removed it meanwhile */
        d[n].copy_len = im->copy_len;
        for (size_t j = 0; j < n_old; j++)
            if (sl__image_same_bytes(&old[j], im->hash)) d[n].reuse = old[j].id;
        src[n++] = im->source ? im->source : "";
    }
    if (st == SL_OK) {
        int same = exists && sl__product_equal(&cur, p) && (k == 0 || n == n_old);
        for (size_t i = 0; same && k && i < n; i++) same = d[i].reuse > 0;
        if (same) *outcome = SL_PUT_UNCHANGED;
        else if ((st = sl__stage_product(e, p, src, d, n, k == 0, c, err)) == SL_OK)
            *outcome = exists ? SL_PUT_UPDATED : SL_PUT_ADDED;
    }
    free(d);
    free(src);
    sl_image_refs_free(old, n_old);
    sl_product_clear(&cur);
    return st;
}

sl_status sl_engine_put_described(sl_engine *e, const sl_described_product *items, size_t n,
                                  sl_put_outcome *outcomes, sl_error *err) {
    for (size_t i = 0; outcomes && i < n; i++) outcomes[i] = SL_PUT_UNCHANGED;
    if (!e || (n && !items)) return sl__err_set(err, SL_E_INVALID, "no engine or no products");
    if (e->read_only) return sl__err_set(err, SL_E_STATE, "engine opened read-only");
    pthread_mutex_lock(&e->wmu);
    sl_status st = SL_OK;
    size_t dim = sl_features_dim(e->feat), total = 0;
    int verify = sl_features_uses_verify(e->feat);
    if (!sl_features_ready(e->feat) || dim == 0)
        st = sl__err_set(err, SL_E_STATE, "the store's features are not trained yet: add images first "
                         "(descriptors need the trained features)");
    for (size_t i = 0; i < n && st == SL_OK; i++) {
        const sl_described_product *it = &items[i];
        if (!it->product || !it->product->id || !*it->product->id || strlen(it->product->id) > SL_STORE_ID_MAX)
            st = sl__err_set(err, SL_E_INVALID, "product %zu: bad product id (1..%d bytes)", i, SL_STORE_ID_MAX);
        else if (it->n_images && !it->images)
            st = sl__err_set(err, SL_E_INVALID, "product '%s': images is NULL", it->product->id);
        for (size_t j = 0; j < it->n_images && st == SL_OK; j++)
            st = sl__check_descriptor(e, &it->images[j], dim, verify, it->product->id, j, err);
        total += it->n_images;
    }
    /* the copies first, durably (as put does before its transaction) */
    char (*files)[SL__IMAGE_FILE_MAX] = st == SL_OK ? sl__callocarray(total + 1, sizeof *files) : NULL;
    if (st == SL_OK && !files) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    for (size_t i = 0, f = 0; i < n && st == SL_OK; i++)
        for (size_t j = 0; j < items[i].n_images && st == SL_OK; j++, f++)
            st = sl__descriptor_copy(e, &items[i].images[j], files[f], items[i].product->id, j, err);
    sl__change c;
    memset(&c, 0, sizeof c);
    size_t changed = 0;
    if (st == SL_OK) st = sl_store_begin(e->store, err);
    if (st == SL_OK) {
        for (size_t i = 0, f = 0; i < n && st == SL_OK; f += items[i].n_images, i++) {
            sl_put_outcome o = SL_PUT_UNCHANGED;
            st = sl__stage_described(e, &items[i], files + f, &c, &o, err);
            if (st == SL_OK && outcomes) outcomes[i] = o;
            changed += o != SL_PUT_UNCHANGED;
        }
        if (st != SL_OK || changed == 0) sl_store_rollback(e->store);
        else st = sl__commit_change(e, &c, err);
        if (st != SL_OK)
            for (size_t i = 0; outcomes && i < n; i++) outcomes[i] = SL_PUT_UNCHANGED;
        /* committed: a failed switch leaves the flat index, still complete */
        if (st == SL_OK && changed) (void)sl__engine_maybe_switch(e, NULL);
    }
    free(files);
    sl__change_free(&c);
    pthread_mutex_unlock(&e->wmu);
    return st;
}
