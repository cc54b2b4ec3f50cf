/*
 * engine/verify_store.c - `shoplens verify`: checks that a store is whole - catalog.sqlite
 * (integrity, foreign keys, full-text rows), every image row against the feature pipeline
 * (a vector of the right dimension, local features when the spec verifies) and against the
 * index searches use, every image file against its content-addressed name, files nobody
 * references, deletions still pending, products without images - and optionally repairs what
 * can be repaired from what the store (or an image's source) still holds.
 *
 * Invariants: a check never changes anything; a repair changes the store only through the same
 * transactions as the writers (features and files of an image, then the generation bump), holds
 * the engine's writer mutex for the whole run, and never deletes a file that a row names. The
 * report lists every finding, repaired or not.
 */
#include "engine/engine_internal.h"
#include "catalog/catalog.h"
#include "util/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void sl_verify_report_free(sl_verify_report *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n; i++) {
        free(r->items[i].kind);
        free(r->items[i].subject);
        free(r->items[i].message);
    }
    free(r->items);
    memset(r, 0, sizeof *r);
}

static sl_status sl__found(sl_verify_report *r, sl_error *err, const char *kind, int repaired,
                           const char *subject, const char *fmt, ...) SL__PRINTF(6, 7);
static sl_status sl__found(sl_verify_report *r, sl_error *err, const char *kind, int repaired,
                           const char *subject, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    sl_verify_problem *nv = sl__reallocarray(r->items, r->n + 1, sizeof *nv);
    if (!nv) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    r->items = nv;
    sl_verify_problem *p = &r->items[r->n];
    p->kind = sl__strdup(kind);
    p->subject = sl__strdup(subject);
    p->message = sl__strdup(msg);
    p->repaired = repaired;
    if (!p->kind || !p->subject || !p->message) {
        free(p->kind);
        free(p->subject);
        free(p->message);
        return sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    r->n++;
    if (!repaired) r->problems++;
    return SL_OK;
}

/* SHA-256 of a file, or -1 when it cannot be read. */
static int sl__file_sha256(const char *path, char hex[65]) {
    void *buf = NULL;
    size_t len = 0;
    if (sl__read_file(path, 0, &buf, &len, NULL) != SL_OK) return -1;
    sl__sha256_buffer(buf, len, hex);
    free(buf);
    return 0;
}

/* Ends the transaction of a one-image repair whose change returned `change`: bump and commit
 * when it succeeded, else roll back. Nonzero when committed. */
static int sl__end_repair(sl_engine *e, sl_status change) {
    if (change == SL_OK && sl__engine_bump(e, NULL) == SL_OK && sl_store_commit(e->store, NULL) == SL_OK) {
        sl__engine_committed(e);
        return 1;
    }
    sl_store_rollback(e->store);
    return 0;
}

/* Makes a store copy of an image from its source when the source still holds the bytes it
 * was ingested with, and points the row at it. Nonzero when done. */
static int sl__recopy(sl_engine *e, const sl_image_ref *ref) {
    if (!ref->source || !*ref->source) return 0;
    void *buf = NULL;
    size_t len = 0;
    if (sl__read_file(ref->source, SL_IMAGE_MAX_BYTES_DEFAULT, &buf, &len, NULL) != SL_OK) return 0;
    char hash[65];
    sl__sha256_buffer(buf, len, hash);
    int ok = 0;
    if (strcmp(hash, ref->hash) == 0) {
        sl_image *img = NULL;
        sl_image_info info;
        char file[SL__IMAGE_FILE_MAX];
        if (sl__engine_decode(e, buf, len, &img, &info, NULL) == SL_OK &&
            sl__engine_keep_copy(e, buf, len, &info, file, NULL) == SL_OK &&
            sl_store_begin(e->store, NULL) == SL_OK)
            ok = sl__end_repair(e, sl_store_set_image_file(e->store, ref->id, file, NULL));
        sl_image_free(img);
    }
    free(buf);
    return ok;
}

/* Describes an image again from its file and stores the features. Nonzero when done. */
static int sl__redescribe(sl_engine *e, const sl_image_ref *ref) {
    void *buf = NULL, *local = NULL;
    size_t len = 0, llen = 0;
    float *vec = NULL;
    sl_image *img = NULL;
    int ok = 0;
    if (sl__read_file(ref->file, SL_IMAGE_MAX_BYTES_DEFAULT, &buf, &len, NULL) == SL_OK &&
        sl__engine_decode(e, buf, len, &img, NULL, NULL) == SL_OK &&
        sl__engine_describe(e, img, &vec, &local, &llen, NULL) == SL_OK &&
        sl_store_begin(e->store, NULL) == SL_OK)
        ok = sl__end_repair(e, sl_store_set_image_features(e->store, ref->id, vec, sl_features_dim(e->feat), local, llen, NULL));
    free(buf);
    free(vec);
    free(local);
    sl_image_free(img);
    return ok;
}

static int sl__cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The image rows: files, features, index membership. */
static sl_status sl__check_images(sl_engine *e, const sl_verify_opts *o, sl_verify_report *r,
                                  int *reindex, sl_error *err) {
    sl_image_ref *refs = NULL;
    size_t n = 0;
    sl_status st = sl_store_all_images(e->store, &refs, &n, err);
    if (st != SL_OK) return st;
    r->images = (int64_t)n;
    size_t dim = sl_features_ready(e->feat) ? sl_features_dim(e->feat) : 0;
    int verifies = sl_features_uses_verify(e->feat);
    size_t not_indexed = 0;
    for (size_t i = 0; i < n && st == SL_OK; i++) {
        const sl_image_ref *ref = &refs[i];
        char subject[64];
        snprintf(subject, sizeof subject, "image %lld", (long long)ref->id);
        /* the file */
        struct stat sb;
        int here = stat(ref->file, &sb) == 0 && S_ISREG(sb.st_mode);
        r->files_checked++;
        const char *base = strrchr(ref->file, '/');
        base = base ? base + 1 : ref->file;
        if (!ref->in_store) {
            int fixed = o->repair && here && sl__recopy(e, ref);
            st = sl__found(r, err, here ? "outside_store" : "missing_file", fixed, subject,
                           "product %s: read from %s, outside the store (a schema 1 store)%s%s",
                           ref->product_id, ref->file, here ? "" : ", which does not exist",
                           fixed ? ": copied into the store" : here ? "; 'shoplens verify --repair' copies it in" : "");
            if (st != SL_OK) break;
        } else if (!here) {
            int fixed = o->repair && sl__recopy(e, ref);
            st = sl__found(r, err, "missing_file", fixed, subject, "product %s: its file %s is missing%s",
                           ref->product_id, base, fixed ? ": copied again from its source" : "");
            if (st != SL_OK) break;
        } else if (!o->quick) {
            char hex[65];
            if (sl__file_sha256(ref->file, hex) != 0 || strncmp(hex, base, 64) != 0) {
                int fixed = o->repair && sl__recopy(e, ref);
                st = sl__found(r, err, "damaged_file", fixed, subject,
                               "product %s: the bytes of %s do not match its name (SHA-256 %.16s...)%s",
                               ref->product_id, base, hex, fixed ? ": copied again from its source" : "");
                if (st != SL_OK) break;
            }
        }
        /* the features */
        float *vec = NULL;
        void *local = NULL;
        size_t vdim = 0, llen = 0;
        st = sl_store_image_features(e->store, ref->id, &vec, &vdim, verifies ? &local : NULL, &llen, err);
        if (st != SL_OK) break;
        const char *why = NULL;
        if (dim && vdim == 0) why = "has no vector";
        else if (dim && vdim != dim) why = "has a vector of another dimension";
        else if (dim && verifies && !local) why = "has no local features for verification";
        free(vec);
        free(local);
        if (why) {
            int fixed = o->repair && sl__redescribe(e, ref);
            if (fixed) *reindex = 1;
            st = sl__found(r, err, "no_features", fixed, subject, "product %s: the image %s (features %s, dim %zu)%s",
                           ref->product_id, why, e->spec, dim, fixed ? ": described again from its file" : "");
            continue;
        }
        if (dim && (!e->idx || !sl_index_contains(e->idx, (uint64_t)ref->id))) not_indexed++;
    }
    if (st == SL_OK && dim) {
        uint64_t in_index = e->idx ? sl_index_count(e->idx) : 0;
        if (not_indexed || in_index != (uint64_t)n) {
            if (o->repair) *reindex = 1;
            st = sl__found(r, err, "index", o->repair, "index",
                           "the index holds %llu vectors for %zu images (%zu images not in it)%s",
                           (unsigned long long)in_index, n, not_indexed, o->repair ? ": rebuilt" : "");
        }
    }
    /* products without images */
    if (st == SL_OK) {
        char **ids = NULL, **with = NULL;
        size_t ni = 0;
        st = sl_store_product_ids(e->store, &ids, &ni, err);
        with = st == SL_OK ? sl__callocarray(n + 1, sizeof *with) : NULL;
        if (st == SL_OK && !with) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        if (st == SL_OK) {
            for (size_t i = 0; i < n; i++) with[i] = refs[i].product_id;
            qsort(with, n, sizeof *with, sl__cmp_str);
            r->products = (int64_t)ni;
            for (size_t i = 0; i < ni && st == SL_OK; i++) {
                const char *key = ids[i];
                if (bsearch(&key, with, n, sizeof *with, sl__cmp_str)) continue;
                char subject[SL_STORE_ID_MAX + 16];
                snprintf(subject, sizeof subject, "product %s", ids[i]);
                st = sl__found(r, err, "no_images", 0, subject, "product %s has no image: searches never find it", ids[i]);
            }
        }
        free(with);
        sl_strings_free(ids, ni);
    }
    sl_image_refs_free(refs, n);
    return st;
}

sl_status sl_engine_verify(sl_engine *e, const sl_verify_opts *opts, sl_verify_report *r,
                           sl_error *err) {
    memset(r, 0, sizeof *r);
    sl_verify_opts o;
    memset(&o, 0, sizeof o);
    if (opts) o = *opts;
    if (o.repair && e->read_only) return sl__err_set(err, SL_E_STATE, "repair needs a store opened read-write");
    pthread_mutex_lock(&e->wmu);
    /* catalog.sqlite */
    char **probs = NULL;
    size_t np = 0;
    sl_status st = sl_store_check(e->store, &probs, &np, err);
    if (st == SL_OK && np && o.repair) {
        /* the full-text rows are derived from products: rebuild them, then look again */
        int text = 0;
        for (size_t i = 0; i < np; i++) text |= strstr(probs[i], "full-text") != NULL;
        if (text && sl_store_rebuild_text(e->store, NULL) == SL_OK) {
            for (size_t i = 0; i < np && st == SL_OK; i++)
                if (strstr(probs[i], "full-text"))
                    st = sl__found(r, err, "sqlite", 1, "catalog.sqlite", "%s: rebuilt", probs[i]);
            sl_strings_free(probs, np);
            probs = NULL;
            np = 0;
            if (st == SL_OK) st = sl_store_check(e->store, &probs, &np, err);
        }
    }
    for (size_t i = 0; i < np && st == SL_OK; i++) st = sl__found(r, err, "sqlite", 0, "catalog.sqlite", "%s", probs[i]);
    sl_strings_free(probs, np);
    /* images, features, index */
    int reindex = 0;
    if (st == SL_OK) st = sl__check_images(e, &o, r, &reindex, err);
    if (st == SL_OK && reindex) {
        pthread_rwlock_wrlock(&e->lock);
        st = sl__engine_rebuild_index(e, err);
        pthread_rwlock_unlock(&e->lock);
        if (st == SL_OK) st = sl__engine_save_index(e, err);
    }
    /* files */
    if (st == SL_OK) {
        char **files = NULL;
        size_t nf = 0;
        st = sl_store_pending_files(e->store, &files, &nf, err);
        size_t deleted = 0;
        int fixed = st == SL_OK && nf && o.repair && sl_store_gc(e->store, &deleted, NULL) == SL_OK;
        for (size_t i = 0; i < nf && st == SL_OK; i++)
            st = sl__found(r, err, "pending_deletion", fixed, files[i], "%s: a deletion interrupted by a crash or a busy store%s",
                           files[i], fixed ? ": done" : "; the next write finishes it");
        sl_strings_free(files, nf);
    }
    if (st == SL_OK) {
        char **files = NULL;
        size_t nf = 0;
        st = o.repair ? sl_store_delete_orphans(e->store, &files, &nf, err)
                      : sl_store_orphan_files(e->store, &files, &nf, err);
        for (size_t i = 0; i < nf && st == SL_OK; i++)
            st = sl__found(r, err, "orphan_file", o.repair, files[i],
                           "%s: no image uses this file (left by an interrupted write)%s", files[i],
                           o.repair ? ": deleted" : "; 'shoplens verify --repair' deletes it");
        sl_strings_free(files, nf);
    }
    pthread_mutex_unlock(&e->wmu);
    if (st != SL_OK) sl_verify_report_free(r);
    return st;
}
