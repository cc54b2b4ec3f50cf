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

/* <store>/<file> exists as a regular file of len bytes. */
static int sl__copy_present(sl_engine *e, const char *file, size_t len) {
    char *path = sl_store_path(e->store, file);
    struct stat sb;
    int ok = path && stat(path, &sb) == 0 && S_ISREG(sb.st_mode) && (size_t)sb.st_size == len;
    free(path);
    return ok;
}

sl_status sl__engine_write_copy(sl_engine *e, const void *copy, size_t len, const char *ext,
                                char file[SL__IMAGE_FILE_MAX], sl_error *err) {
    char hash[65];
    sl__sha256_buffer(copy, len, hash);
    sl__image_file_name(file, hash, ext);
    if (sl__copy_present(e, file, len)) return SL_OK;
    char *dir = sl_store_path(e->store, "images");
    if (!dir) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        sl_status st = sl__err_set(err, SL_E_IO, "mkdir %s: %s", dir, strerror(errno));
        free(dir);
        return st;
    }
    free(dir);
    char *path = sl_store_path(e->store, file);
    if (!path) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    sl_status st = sl__write_file_atomic(path, copy, len, err);
    free(path);
    return st;
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
    char *path = sl_store_path(e->store, d->file);
    struct stat sb;
    int here = path && stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
    free(path);
    if (here) return SL_OK;
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

sl_status sl__engine_commit_product(sl_engine *e, const sl_product *p, const char *const *sources,
                                    sl__described *imgs, size_t n, int keep_images,
                                    sl_error *err) {
    size_t dim = sl_features_dim(e->feat);
    int64_t *removed = NULL, *added = NULL;
    size_t n_removed = 0, n_added = 0;
    sl_image_ref *old = NULL;
    size_t n_old = 0;
    sl_status st = sl_store_begin(e->store, err);
    if (st != SL_OK) return st;
    if ((st = sl_store_put_product(e->store, p, err)) != SL_OK) goto fail;
    if (!keep_images) {
        if ((st = sl_store_product_images(e->store, p->id, &old, &n_old, err)) != SL_OK) goto fail;
        removed = sl__callocarray(n_old ? n_old : 1, sizeof *removed);
        added = sl__callocarray(n ? n : 1, sizeof *added);
        if (!removed || !added) {
            st = sl__err_set(err, SL_E_NOMEM, "out of memory");
            goto fail;
        }
        for (size_t i = 0; i < n_old; i++) {
            int kept = 0;
            for (size_t j = 0; j < n && !kept; j++) kept = imgs[j].reuse == old[i].id;
            if (kept) continue;
            if ((st = sl_store_remove_image(e->store, old[i].id, err)) != SL_OK) goto fail;
            removed[n_removed++] = old[i].id;
        }
        for (size_t j = 0; j < n; j++) {
            if (imgs[j].reuse > 0) continue;
            int64_t id = 0;
            if ((st = sl__ensure_copy(e, &imgs[j], err)) != SL_OK ||
                (st = sl_store_add_image(e->store, p->id, sources[j], imgs[j].hash, imgs[j].size,
                                         imgs[j].file, imgs[j].vec, imgs[j].vec ? dim : 0,
                                         imgs[j].local, imgs[j].local_len, &id, err)) != SL_OK)
                goto fail;
            added[j] = id;
            n_added++;
        }
    }
    if ((st = sl__engine_bump(e, err)) != SL_OK) goto fail;
    pthread_rwlock_wrlock(&e->lock);
    st = sl_store_commit(e->store, err);
    if (st == SL_OK) {
        sl__engine_committed(e);
        sl_status ist = SL_OK;
        if (e->idx) {
            for (size_t i = 0; i < n_removed && ist == SL_OK; i++) {
                ist = sl_index_remove(e->idx, (uint64_t)removed[i]);
                if (ist == SL_E_NOT_FOUND) ist = SL_OK;
            }
            for (size_t j = 0; j < n && ist == SL_OK && added; j++)
                if (added[j] > 0 && imgs[j].vec) ist = sl__engine_index_add(e, added[j], imgs[j].vec);
            e->index_dirty = 1;
        } else if (n_added > 0) {
            ist = SL_E_STATE;
        }
        /* The store is committed: bring the index back in line whatever happened. */
        if (ist != SL_OK) (void)sl__engine_rebuild_index(e, NULL);
    }
    pthread_rwlock_unlock(&e->lock);
    if (st == SL_OK && n_removed && !e->gc_deferred) sl__engine_gc(e);
    sl_image_refs_free(old, n_old);
    free(removed);
    free(added);
    return st;
fail:
    sl_store_rollback(e->store);
    sl_image_refs_free(old, n_old);
    free(removed);
    free(added);
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
