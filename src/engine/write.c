/*
 * engine/write.c - catalog writes through the engine: put (upsert) and delete one product.
 *
 * Invariants:
 *  - One product change = one SQLite transaction (metadata, FTS row, removed and added images
 *    with their vectors, generation bump). The COMMIT and the matching index update happen
 *    under the exclusive engine lock, so concurrent searches see all of it or none of it.
 *  - An image whose content hash the product already has is kept as is (no re-extraction, same
 *    image id); images with the same hash given twice count once.
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
           a->has_price == b->has_price && (!a->has_price || a->price == b->price);
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
            if ((st = sl_store_add_image(e->store, p->id, sources[j], imgs[j].hash, imgs[j].size,
                                         imgs[j].vec, imgs[j].vec ? dim : 0, imgs[j].local,
                                         imgs[j].local_len, &id, err)) != SL_OK)
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

/* Saves uploaded bytes as images/<hash>.<ext> (idempotent); *path malloc'ed. */
static sl_status sl__save_upload(sl_engine *e, const void *data, size_t len, const char *hash,
                                 const char *format, char **path, sl_error *err) {
    *path = NULL;
    char *dir = sl_store_path(e->store, "images");
    if (!dir) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        sl_status st = sl__err_set(err, SL_E_IO, "mkdir %s: %s", dir, strerror(errno));
        free(dir);
        return st;
    }
    size_t n = strlen(dir) + 64 + 16 + 3;
    char *p = malloc(n);
    if (!p) {
        free(dir);
        return sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    snprintf(p, n, "%s/%s.%s", dir, hash, format && *format && strlen(format) < 8 ? format : "img");
    free(dir);
    struct stat sb;
    if (stat(p, &sb) != 0 || (size_t)sb.st_size != len) {
        sl_status st = sl__write_file_atomic(p, data, len, err);
        if (st != SL_OK) {
            free(p);
            return st;
        }
    }
    *path = p;
    return SL_OK;
}

/* Absolute form of a path (for the source column); malloc'ed. */
static char *sl__abspath(const char *path) {
    char *r = realpath(path, NULL);
    return r ? r : sl__strdup(path);
}

sl_status sl_engine_put_product(sl_engine *e, const sl_product *p, const sl_image_input *images,
                                size_t n_images, sl_put_outcome *outcome, sl_error *err) {
    if (outcome) *outcome = SL_PUT_UNCHANGED;
    if (!p || !p->id || !*p->id || strlen(p->id) > SL_STORE_ID_MAX)
        return sl__err_set(err, SL_E_INVALID, "bad product id");
    if (e->read_only) return sl__err_set(err, SL_E_STATE, "engine opened read-only");
    if (n_images && !images) return sl__err_set(err, SL_E_INVALID, "images is NULL");
    sl_status st = SL_OK;
    void **bytes = NULL;
    size_t *lens = NULL;
    char **sources = NULL;
    sl_image **decoded = NULL;
    sl__described *d = NULL;
    sl_image_ref *old = NULL;
    size_t n_old = 0, n = 0;
    sl_product cur;
    memset(&cur, 0, sizeof cur);
    pthread_mutex_lock(&e->wmu);
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
    if (!bytes || !lens || !sources || !decoded || !d) {
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
            if (strcmp(old[j].hash, hash) == 0) d[n].reuse = old[j].id;
        bytes[n] = buf;
        lens[n] = len;
        char format[16] = "";
        if (!d[n].reuse) {
            if ((st = sl__engine_decode(e, buf, len, &decoded[n], format, err)) != SL_OK) {
                sl__err_prefix(err, "image %zu", i);
                goto out;
            }
        }
        if (in->data) {
            if (d[n].reuse) {
                for (size_t j = 0; j < n_old; j++)
                    if (old[j].id == d[n].reuse) sources[n] = sl__strdup(old[j].source);
            } else if ((st = sl__save_upload(e, buf, len, hash, format, &sources[n], err)) != SL_OK) {
                goto out;
            }
        } else {
            sources[n] = sl__abspath(in->path);
        }
        if (!sources[n]) {
            st = sl__err_set(err, SL_E_NOMEM, "out of memory");
            goto out;
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
    pthread_mutex_unlock(&e->wmu);
    for (size_t i = 0; i < n_images + 1; i++) {
        if (bytes) free(bytes[i]);
        if (sources) free(sources[i]);
        if (decoded) sl_image_free(decoded[i]);
        if (d) sl__described_clear(&d[i]);
    }
    free(bytes);
    free(lens);
    free(sources);
    free(decoded);
    free(d);
    sl_image_refs_free(old, n_old);
    sl_product_clear(&cur);
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
    }
    free(removed);
    pthread_mutex_unlock(&e->wmu);
    return st;
}
