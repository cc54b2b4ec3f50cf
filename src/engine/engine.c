/*
 * engine/engine.c - opening a store as a search engine: the feature pipeline (features.bin),
 * the vector index (index.bin, a cache derived from the vectors in catalog.sqlite), refresh
 * after changes by another process, statistics, product reads and thumbnails.
 *
 * Invariants:
 *  - catalog.sqlite is the truth. index.bin is trusted only when meta "index_generation"
 *    equals meta "generation" (every committed change bumps the latter in its transaction);
 *    otherwise the index is rebuilt from the stored vectors. So a crash at any point, including
 *    in the middle of an index save, never leaves a searchable state that disagrees with the
 *    catalog.
 *  - features-N.bin is written atomically before any vector computed with it is committed; meta
 *    "features_version" = N is committed in the same transaction as those vectors, so the
 *    loaded features always match the stored vectors (an orphan file of a crashed training is
 *    simply overwritten by the next one).
 *  - Index ids are image ids (SQLite AUTOINCREMENT rowids), metric inner product on
 *    L2-normalized vectors (= cosine similarity).
 */
#include "engine/engine_internal.h"
#include "catalog/catalog.h"
#include "catalog/pg.h"
#include "util/util.h"

#include <errno.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <unistd.h>
#include <sys/stat.h>

void sl__described_clear(sl__described *d) {
    if (!d) return;
    free(d->vec);
    free(d->local);
    memset(d, 0, sizeof *d);
}

static int64_t sl__fsize(const char *path) {
    struct stat sb;
    return path && stat(path, &sb) == 0 ? (int64_t)sb.st_size : 0;
}

sl_status sl__engine_decode(const sl_engine *e, const void *data, size_t len, sl_image **img,
                            sl_image_info *info, sl_error *err) {
    sl_image_load_opts o;
    memset(&o, 0, sizeof o);
    o.max_side = e->max_side;
    sl_image_info tmp;
    memset(&tmp, 0, sizeof tmp);
    sl_status st = sl_image_load_buffer(data, len, &o, img, &tmp, err);
    if (info) *info = tmp;
    return st;
}

sl_status sl__engine_load_store_image(const sl_engine *e, const char *file, sl_image **img,
                                     sl_error *err) {
    *img = NULL;
    void *bytes = NULL;
    size_t len = 0;
    sl_status st = sl_store_file_get(e->store, file, SL_IMAGE_MAX_BYTES_DEFAULT, &bytes, &len, err);
    if (st == SL_OK) st = sl__engine_decode(e, bytes, len, img, NULL, err);
    if (st != SL_OK) sl__err_prefix(err, "the store's copy %s", file);
    free(bytes);
    return st;
}

sl_status sl__engine_describe(const sl_engine *e, const sl_image *img, float **vec, void **local,
                              size_t *local_len, sl_error *err) {
    *vec = NULL;
    if (local) *local = NULL;
    if (local_len) *local_len = 0;
    size_t dim = sl_features_dim(e->feat);
    if (!sl_features_ready(e->feat) || dim == 0)
        return sl__err_set(err, SL_E_STATE, "the features are not trained yet (add a catalog first)");
    float *v = sl__mallocarray(dim, sizeof *v);
    if (!v) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    sl_local_features *lf = NULL;
    int want_local = local && sl_features_uses_verify(e->feat);
    sl_status st = sl_features_extract(e->feat, img, v, want_local ? &lf : NULL, err);
    if (st != SL_OK) {
        free(v);
        return st;
    }
    if (lf) {
        st = sl_local_features_serialize(lf, local, local_len, err);
        sl_local_features_free(lf);
        if (st != SL_OK) {
            free(v);
            return st;
        }
    }
    *vec = v;
    return SL_OK;
}

/* ---- index ------------------------------------------------------------------------------- */

/* The index holds catalog images through the gallery side of the features' head and references
 * (labelled photos) through its query side (sl_features_project); the store keeps the vectors
 * before it. Without a head the vectors go in as they are. */
sl_status sl__engine_index_add(sl_engine *e, int64_t image_id, const float *vec) {
    if (!sl_features_head(e->feat)) return sl_index_add(e->idx, (uint64_t)image_id, vec);
    size_t dim = (size_t)sl_index_dim(e->idx);
    float *g = sl__mallocarray(dim, sizeof *g);
    if (!g) return SL_E_NOMEM;
    sl_status st = sl_features_project(e->feat, image_id >= SL_STORE_REF_ID_BASE ? SL_HEAD_QUERY : SL_HEAD_GALLERY,
                                       vec, g, 1);
    if (st == SL_OK) st = sl_index_add(e->idx, (uint64_t)image_id, g);
    free(g);
    return st;
}

static sl_index_kind sl__kind_for(const sl_engine *e, int64_t n) {
    if (strcmp(e->index_kind, "hnsw") == 0) return SL_INDEX_HNSW;
    if (strcmp(e->index_kind, "flat") == 0) return SL_INDEX_FLAT;
    return n > (int64_t)e->hnsw_above ? SL_INDEX_HNSW : SL_INDEX_FLAT;
}

/* What meta "index_storage" records for an index this build made: a flat index holds int8
 * codes next to the float32 vectors, an HNSW index int8 codes only. */
static const char *sl__index_storage_tag(const sl_index *idx) {
    return sl_index_kind_of(idx) == SL_INDEX_FLAT ? "int8" : "int8only";
}

/* The settings index.bin does not keep: the flat index's 4-bit prefilter, the HNSW index's
 * filter rule, and on both that references (ids from SL_STORE_REF_ID_BASE) keep their int8 code
 * score: a query's candidates are mostly references on a trained store (sl_engine_ref_depth) and
 * re-scoring them read every one's float32 row (15.5 KB at d = 3880; 42 MB per grocery search),
 * while what they feed - each product's best one, mapped by the spread of the best products'
 * (sl__refs_on_catalog_scale) - moves by a fraction of the code's 1e-3 error (docs/learn.md,
 * "References"). The HNSW path re-scores from the store alike (sl__engine_candidates). */
static sl_status sl__tune_index(sl_index *idx) {
    (void)sl_index_set_rescore_below(idx, (uint64_t)SL_STORE_REF_ID_BASE);
    if (sl_index_kind_of(idx) == SL_INDEX_FLAT) return sl_index_set_prefilter(idx, SL__ENGINE_PREFILTER);
    return sl_index_set_filter_exact_below(idx, SL__ENGINE_FILTER_EXACT_BELOW);
}

/* A new empty index of `kind` for dimension dim, set up as the engine uses it. */
static sl_status sl__new_index(sl_index_kind kind, size_t dim, sl_index **out, sl_error *err) {
    sl_index_params ip;
    sl_index_params_default(&ip);
    if (kind == SL_INDEX_FLAT) {
        ip.storage = SL_INDEX_INT8; /* see SL__ENGINE_RESCORE_MIN */
    } else {
        ip.storage = SL_INDEX_INT8_ONLY;
        ip.M = SL__ENGINE_HNSW_M;
        ip.ef_search = SL_ENGINE_HNSW_EF_DEFAULT;
    }
    sl_status st = sl_index_new(out, (int)dim, SL_INDEX_IP, kind, &ip, err);
    if (st == SL_OK && (st = sl__tune_index(*out)) != SL_OK) {
        sl__err_set(err, st, "creating the index: %s", sl_index_errmsg(*out));
        sl_index_free(*out);
        *out = NULL;
    }
    return st;
}

/* Vectors gathered for sl_index_add_batch: the HNSW build links a batch on all cores. The
 * stored vectors go in through the gallery side of the features' head (sl_features_project). */
enum { SL__BATCH = 1024 };
typedef struct sl__batch {
    sl_index *idx;
    const sl_features *feat;
    sl_head_side side;        /* gallery: catalog images; query: references (photos) */
    size_t dim, n;
    uint64_t ids[SL__BATCH];
    float *vecs;              /* SL__BATCH x dim */
} sl__batch;

static sl_status sl__batch_flush(sl__batch *b) {
    sl_status st = b->n ? sl_features_project(b->feat, b->side, b->vecs, b->vecs, b->n) : SL_OK;
    if (st == SL_OK && b->n) st = sl_index_add_batch(b->idx, b->n, b->ids, b->vecs);
    b->n = 0;
    return st;
}

static sl_status sl__batch_add(void *ctx, int64_t image_id, const float *vec, size_t dim) {
    sl__batch *b = ctx;
    if (dim != b->dim) return SL_E_CORRUPT;
    b->ids[b->n] = (uint64_t)image_id;
    memcpy(b->vecs + b->n * dim, vec, dim * sizeof *vec);
    return ++b->n == SL__BATCH ? sl__batch_flush(b) : SL_OK;
}

static sl__batch *sl__batch_new(sl_index *idx, const sl_features *feat, size_t dim) {
    sl__batch *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->idx = idx;
    b->feat = feat;
    b->side = SL_HEAD_GALLERY;
    b->dim = dim;
    if (!(b->vecs = sl__mallocarray(SL__BATCH, dim * sizeof(float)))) {
        free(b);
        return NULL;
    }
    return b;
}

static void sl__batch_free(sl__batch *b) {
    if (!b) return;
    free(b->vecs);
    free(b);
}

/* A new index of `kind` holding every stored vector. Reads the store only (callers hold wmu,
 * so this process writes nothing meanwhile). */
static sl_status sl__build_index(sl_engine *e, sl_index_kind kind, size_t dim, sl_index **out, sl_error *err) {
    *out = NULL;
    sl_index *idx = NULL;
    sl_status st = sl__new_index(kind, dim, &idx, err);
    if (st != SL_OK) return st;
    sl__batch *b = sl__batch_new(idx, e->feat, dim);
    if (!b) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    if (st == SL_OK) st = sl_store_each_vector(e->store, sl__batch_add, b, err);
    if (st == SL_OK) st = sl__batch_flush(b);
    /* references (labelled photos) are photos: the query side of the head */
    if (st == SL_OK) b->side = SL_HEAD_QUERY;
    if (st == SL_OK && e->mrefs) /* a training's private engine: the photos being trained on */
        for (size_t i = 0; i < e->mrefs->n && st == SL_OK; i++)
            st = sl__batch_add(b, SL_STORE_REF_ID_BASE + (int64_t)i, e->mrefs->vecs + i * e->mrefs->dim, e->mrefs->dim);
    else if (st == SL_OK && !e->no_refs)
        st = sl_store_each_ref_vector(e->store, sl__batch_add, b, err);
    if (st == SL_OK) st = sl__batch_flush(b);
    /* HNSW: renumber the slots in graph order (faster searches, docs/index.md) */
    if (st == SL_OK && kind == SL_INDEX_HNSW) st = sl_index_compact(idx);
    sl__batch_free(b);
    if (st != SL_OK) {
        if (err && err->code == SL_OK) sl__err_set(err, st, "building the index: %s", sl_index_errmsg(idx));
        sl_index_free(idx);
        return st;
    }
    e->index_builds++;
    *out = idx;
    return SL_OK;
}

sl_status sl__engine_rebuild_index(sl_engine *e, sl_error *err) {
    size_t dim = sl_features_dim(e->feat);
    sl_index_free(e->idx);
    e->idx = NULL;
    if (e->no_index || !sl_features_ready(e->feat) || dim == 0) return SL_OK;
    sl_store_counts c;
    sl_status st = sl_store_counts_get(e->store, &c, err);
    if (st == SL_OK) st = sl__build_index(e, sl__kind_for(e, c.images), dim, &e->idx, err);
    if (st == SL_OK) e->index_dirty = 1;
    return st;
}

sl_status sl__engine_maybe_switch(sl_engine *e, sl_error *err) {
    if (!e->idx || strcmp(e->index_kind, "auto") != 0 || sl_index_kind_of(e->idx) != SL_INDEX_FLAT ||
        sl_index_count(e->idx) <= e->hnsw_above)
        return SL_OK;
    sl_index *idx = NULL;
    sl_status st = sl__build_index(e, SL_INDEX_HNSW, (size_t)sl_index_dim(e->idx), &idx, err);
    if (st != SL_OK) return st;
    pthread_rwlock_wrlock(&e->lock);
    sl_index_free(e->idx);
    e->idx = idx;
    e->index_dirty = 1;
    pthread_rwlock_unlock(&e->lock);
    return SL_OK;
}

/* Brings idx in line with the store's images without rebuilding it: removes the images the
 * store no longer has and adds the stored ones it lacks (their vectors read from the store, put
 * through the gallery side of the features' head).
 * Correct whatever state idx was saved in, because an image's vector never changes under one
 * features version (retraining re-describes every image and bumps features_version; idx must
 * belong to the current one) and image ids are never reused. *changed: images added + removed. */
static sl_status sl__catch_up(sl_engine *e, sl_index *idx, size_t *changed, sl_error *err) {
    *changed = 0;
    size_t dim = (size_t)sl_index_dim(idx);
    int64_t *sids = NULL, *add = NULL;
    uint64_t *iids = NULL;
    size_t ns = 0, ni = 0, nadd = 0;
    float *vecs = NULL;
    unsigned char *found = NULL;
    sl_status st = sl_store_image_ids(e->store, &sids, &ns, err);
    if (st == SL_OK && sl_index_ids(idx, &iids, &ni) != SL_OK)
        st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    if (st == SL_OK && !(add = sl__mallocarray(ns + 1, sizeof *add))) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    /* both lists ascending: one merge pass */
    for (size_t i = 0, j = 0; st == SL_OK && (i < ns || j < ni);) {
        if (j == ni || (i < ns && (uint64_t)sids[i] < iids[j])) {
            add[nadd++] = sids[i++];
        } else if (i == ns || (uint64_t)sids[i] > iids[j]) {
            if (sl_index_remove(idx, iids[j]) == SL_OK) (*changed)++;
            j++;
        } else {
            i++;
            j++;
        }
    }
    if (st == SL_OK && nadd) {
        vecs = sl__mallocarray(SL__BATCH, dim * sizeof *vecs);
        found = malloc(SL__BATCH);
        if (!vecs || !found) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    for (size_t i = 0; st == SL_OK && i < nadd; i += SL__BATCH) {
        size_t m = nadd - i < SL__BATCH ? nadd - i : SL__BATCH, k = 0;
        uint64_t ids[SL__BATCH];
        if ((st = sl_store_image_vectors(e->store, add + i, m, dim, vecs, found, err)) != SL_OK) break;
        for (size_t j = 0; j < m; j++) /* images without a vector are not indexed */
            if (found[j]) {
                if (k != j) memmove(vecs + k * dim, vecs + j * dim, dim * sizeof *vecs);
                ids[k++] = (uint64_t)add[i + j];
            }
        /* ids ascending: catalog images first, then references (query side of the head) */
        size_t kc = 0;
        while (kc < k && ids[kc] < (uint64_t)SL_STORE_REF_ID_BASE) kc++;
        sl_status pst = kc ? sl_features_project(e->feat, SL_HEAD_GALLERY, vecs, vecs, kc) : SL_OK;
        if (pst == SL_OK && k > kc) pst = sl_features_project(e->feat, SL_HEAD_QUERY, vecs + kc * dim, vecs + kc * dim, k - kc);
        if (pst != SL_OK)
            st = sl__err_set(err, pst, "updating the index: the features' head: %s", sl_strerror(pst));
        else if (k && sl_index_add_batch(idx, k, ids, vecs) != SL_OK)
            st = sl__err_set(err, SL_E_NOMEM, "updating the index: %s", sl_index_errmsg(idx));
        *changed += k;
    }
    free(sids);
    free(iids);
    free(add);
    free(vecs);
    free(found);
    return st;
}

sl_status sl__engine_bump(sl_engine *e, sl_error *err) {
    sl_status st = sl_store_bump_generation(e->store, err);
    if (st == SL_OK) st = sl_store_generation(e->store, &e->txn_gen, err); /* writer connection */
    return st;
}

void sl__engine_committed(sl_engine *e) {
    e->gen = e->gen >= 0 && e->txn_gen == e->gen + 1 ? e->txn_gen : -1;
}

sl_status sl__engine_save_index(sl_engine *e, sl_error *err) {
    /* the file is recorded as current only for the generation the memory really reflects */
    if (e->read_only || !e->idx || !e->index_dirty || e->gen < 0) return SL_OK;
    if (sl_store_is_shared(e->store)) return SL_OK; /* no local file to cache it in */
    char *path = sl_store_path(e->store, "index.bin");
    if (!path) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    int64_t gen = e->gen;
    sl_status st = SL_OK;
    if (sl_index_save(e->idx, path) != SL_OK)
        st = sl__err_set(err, SL_E_IO, "saving %s: %s", path, sl_index_errmsg(e->idx));
    free(path);
    if (st != SL_OK) return st;
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", (long long)gen);
    if ((st = sl_store_meta_set(e->store, "index_generation", buf, err)) != SL_OK) return st;
    if ((st = sl_store_meta_set(e->store, "index_storage", sl__index_storage_tag(e->idx), err)) != SL_OK)
        return st;
    snprintf(buf, sizeof buf, "%lld", (long long)e->features_version);
    if ((st = sl_store_meta_set(e->store, "index_features_version", buf, err)) != SL_OK) return st;
    e->index_dirty = 0;
    return SL_OK;
}

/* An integer meta value, or `def` when it is missing. */
static int64_t sl__meta_int(sl_engine *e, const char *key, int64_t def) {
    char *v = NULL;
    int64_t r = sl_store_meta_get(e->store, key, &v, NULL) == SL_OK ? strtoll(v, NULL, 10) : def;
    free(v);
    return r;
}

/* Loads index.bin and catches it up with the store (sl__catch_up: the images it lacks or has
 * too many, found by comparing the id lists, so a file left behind by a crash, a kill or
 * another process's writes costs seconds, not a rebuild, and two processes saving at once
 * cannot leave a wrong index behind); rebuilds only when there is no usable file: missing,
 * damaged, of other features or dimension, or of a storage this build does not write (meta
 * "index_storage"). At a million images a rebuild takes the better part of an hour. The file
 * must say which features it was made with (meta "index_features_version"); a file saved
 * before that key existed is trusted at its exact generation only, as before. */
static sl_status sl__load_or_rebuild_index(sl_engine *e, sl_error *err) {
    sl_index_free(e->idx);
    e->idx = NULL;
    int64_t gen = 0;
    sl_status st = sl_store_generation(e->store, &gen, err);
    if (st != SL_OK) return st;
    e->gen = gen;
    if (e->no_index || !sl_features_ready(e->feat) || sl_features_dim(e->feat) == 0) return SL_OK;
    int current = sl__meta_int(e, "index_generation", -1) == gen;
    int same_features = sl__meta_int(e, "index_features_version", -1) == e->features_version;
    char *tag = NULL;
    (void)sl_store_meta_get(e->store, "index_storage", &tag, NULL);
    if (current || same_features) {
        char *path = sl_store_path(e->store, "index.bin");
        sl_index *idx = NULL;
        size_t changed = 0;
        if (path && sl_index_load(&idx, path, NULL, NULL) == SL_OK &&
            (size_t)sl_index_dim(idx) == sl_features_dim(e->feat) &&
            strcmp(tag ? tag : "f32", sl__index_storage_tag(idx)) == 0 &&
            (strcmp(e->index_kind, "auto") == 0 || sl__kind_for(e, 0) == sl_index_kind_of(idx)) &&
            sl__tune_index(idx) == SL_OK &&
            (!same_features || sl__catch_up(e, idx, &changed, NULL) == SL_OK)) {
            e->idx = idx;
            e->index_dirty = changed > 0;
            /* caught up without a change (a metadata-only write): the file is current again */
            if (!current && !changed && !e->read_only) {
                char buf[32];
                snprintf(buf, sizeof buf, "%lld", (long long)gen);
                (void)sl_store_meta_set(e->store, "index_generation", buf, NULL);
            }
        } else {
            sl_index_free(idx);
        }
        free(path);
    }
    free(tag);
    if (e->idx) return SL_OK;
    return sl__engine_rebuild_index(e, err);
}

char *sl__engine_features_path(sl_engine *e, int64_t version) {
    char name[48];
    snprintf(name, sizeof name, "features-%lld.bin", (long long)version);
    return sl_store_path(e->store, name);
}

/* features-<version>.bin: a file of the directory, or a file of the PostgreSQL store (written
 * through a temporary file: sl_features_save writes only to paths). */
sl_status sl__engine_save_features(sl_engine *e, const sl_features *f, int64_t version,
                                   sl_error *err) {
    char *path = sl__engine_features_path(e, version);
    if (path) {
        sl_status st = sl_features_save(f, path);
        if (st != SL_OK) sl__err_set(err, st, "saving %s: %s", path, sl_features_errmsg(f));
        free(path);
        return st;
    }
    const char *tmpdir = getenv("TMPDIR");
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s/shoplens-features-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
    int fd = mkstemp(tmp);
    if (fd < 0) return sl__err_set(err, SL_E_IO, "saving the features: cannot create %s: %s", tmp, strerror(errno));
    close(fd);
    sl_status st = sl_features_save(f, tmp);
    void *buf = NULL;
    size_t len = 0;
    if (st != SL_OK) sl__err_set(err, st, "saving the features: %s", sl_features_errmsg(f));
    else st = sl__read_file(tmp, 0, &buf, &len, err);
    unlink(tmp);
    char name[48];
    snprintf(name, sizeof name, "features-%lld.bin", (long long)version);
    if (st == SL_OK) st = sl_store_file_put(e->store, name, buf, len, err);
    free(buf);
    return st;
}

static sl_status sl__engine_load_features(sl_engine *e, int64_t version, sl_features **f,
                                          sl_error *err) {
    char name[48];
    snprintf(name, sizeof name, "features-%lld.bin", (long long)version);
    char *path = sl__engine_features_path(e, version);
    sl_status st;
    if (path) {
        st = sl_features_load(path, f, err);
        if (st != SL_OK) sl__err_prefix(err, "%s", path);
        free(path);
        return st;
    }
    void *buf = NULL;
    size_t len = 0;
    if ((st = sl_store_file_get(e->store, name, 0, &buf, &len, err)) != SL_OK) return st;
    st = sl_features_parse(buf, len, name, f, err);
    free(buf);
    return st;
}

sl_status sl__engine_features_copy(sl_engine *e, sl_features **out, sl_error *err) {
    *out = NULL;
    if (e->features_version <= 0) return sl_features_new(e->spec, out, err);
    return sl__engine_load_features(e, e->features_version, out, err);
}

static sl_status sl__load_features(sl_engine *e, sl_error *err) {
    char *fv = NULL;
    int64_t version = sl_store_meta_get(e->store, "features_version", &fv, NULL) == SL_OK
                          ? strtoll(fv, NULL, 10) : 0;
    free(fv);
    sl_features *f = NULL;
    sl_status st;
    if (version > 0) {
        st = sl__engine_load_features(e, version, &f, err);
    } else {
        st = sl_features_new(e->spec, &f, err);
    }
    if (st != SL_OK) return st;
    sl__engine_retire_features(e, e->feat);
    e->feat = f;
    e->features_version = version;
    return SL_OK;
}

sl_status sl__engine_train_new(sl_engine *e, const sl_image *const *imgs, size_t n,
                               int64_t version, sl_features **out, sl_error *err) {
    *out = NULL;
    if (n == 0) return sl__err_set(err, SL_E_INVALID, "no readable image to train the features on");
    sl_features *f = NULL;
    sl_status st = sl_features_new(e->spec, &f, err);
    if (st != SL_OK) return st;
    /* training results do not depend on the thread count */
    int threads = sl__jobs_or_cores(0);
    (void)sl_features_set_threads(f, threads > SL_FEATURES_THREADS_MAX ? SL_FEATURES_THREADS_MAX : threads);
    if ((st = sl_features_train(f, imgs, n, SL__ENGINE_TRAIN_SEED)) != SL_OK) {
        sl__err_set(err, st, "training the features: %s", sl_features_errmsg(f));
        sl_features_free(f);
        return st;
    }
    if ((st = sl__engine_save_features(e, f, version, err)) != SL_OK) {
        sl_features_free(f);
        return st;
    }
    *out = f;
    return SL_OK;
}

sl_status sl__engine_commit_features(sl_engine *e, sl_features *f, int64_t version, int reindex,
                                    sl_error *err) {
    return sl__engine_commit_features_with(e, f, version, reindex, NULL, NULL, err);
}

sl_status sl__engine_commit_features_with(sl_engine *e, sl_features *f, int64_t version, int reindex,
                                         sl_status (*in_txn)(sl_engine *, void *, sl_error *), void *ctx,
                                         sl_error *err) {
    char buf[32], *now = NULL;
    snprintf(buf, sizeof buf, "%lld", (long long)version);
    sl_status st = sl_store_begin(e->store, err);
    if (st == SL_OK && (st = sl_store_meta_get(e->store, "features_version", &now, err)) == SL_OK &&
        strtoll(now, NULL, 10) != e->features_version)
        st = sl__err_set(err, SL_E_BUSY, "another process changed the store's features meanwhile; run it again");
    free(now);
    if (st == SL_OK && in_txn) st = in_txn(e, ctx, err);
    if (st == SL_OK) st = sl_store_meta_set(e->store, "features_version", buf, err);
    if (st == SL_OK) st = sl__engine_bump(e, err);
    if (st != SL_OK) {
        sl_store_rollback(e->store);
        sl_features_free(f);
        return st;
    }
    pthread_rwlock_wrlock(&e->lock);
    st = sl_store_commit(e->store, err);
    if (st == SL_OK) {
        sl__engine_retire_features(e, e->feat);
        e->feat = f;
        e->features_version = version;
        sl__engine_committed(e);
        if (reindex) st = sl__engine_rebuild_index(e, err);
        else e->index_dirty = 1; /* the same vectors, recorded again for the new generation */
    } else {
        sl_features_free(f);
    }
    pthread_rwlock_unlock(&e->lock);
    return st;
}

sl_status sl__engine_lock_features(sl_engine *e, int exclusive, sl_error *err) {
    sl__pg *p = sl__store_pg(e->store);
    if (!p) return SL_OK;
    int64_t v = 0;
    sl_status st = sl__pg_lock_features(p, exclusive, &v, err);
    if (st == SL_OK && v != e->features_version)
        st = sl__err_set(err, SL_E_BUSY, "the cluster store's features changed meanwhile (version %lld, this "
                         "process has version %lld): try again", (long long)v, (long long)e->features_version);
    return st;
}

sl_status sl__engine_train(sl_engine *e, const sl_image *const *imgs, size_t n, sl_error *err) {
    sl_features *f = NULL;
    int64_t version = e->features_version + 1;
    sl_status st = sl__engine_train_new(e, imgs, n, version, &f, err);
    if (st != SL_OK) return st;
    return sl__engine_commit_features(e, f, version, 1, err);
}

void sl__engine_retire_features(sl_engine *e, sl_features *f) {
    if (!f) return;
    sl_features **nr = sl__reallocarray(e->retired, e->n_retired + 1, sizeof *nr);
    if (!nr) return; /* leak rather than free under a running query */
    e->retired = nr;
    e->retired[e->n_retired++] = f;
}

/* ---- a training's private engine ------------------------------------------------------------ */

sl_status sl__engine_shadow_new(sl_engine *e, sl_features *f, sl_engine **out, sl_error *err) {
    return sl__engine_shadow_new_refs(e, f, NULL, out, err);
}

sl_status sl__engine_shadow_new_refs(sl_engine *e, sl_features *f, const sl__mrefs *r, sl_engine **out,
                                     sl_error *err) {
    *out = NULL;
    sl_engine *s = calloc(1, sizeof *s);
    if (!s) {
        sl_features_free(f);
        return sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    pthread_rwlock_init(&s->lock, NULL);
    pthread_mutex_init(&s->wmu, NULL);
    s->store = e->store;     /* shared: only read, as e's searches read it */
    s->feat = f;
    s->read_only = 1;
    memcpy(s->spec, e->spec, sizeof s->spec);
    memcpy(s->index_kind, e->index_kind, sizeof s->index_kind);
    s->gen = e->gen;
    s->txn_gen = e->txn_gen;
    s->features_version = e->features_version;
    s->candidates = e->candidates;
    s->verify_top = e->verify_top;
    s->max_side = e->max_side;
    atomic_init(&s->hnsw_ef, atomic_load(&e->hnsw_ef));
    atomic_init(&s->refs_n, 0);
    atomic_init(&s->refs_gen, -1);
    s->no_refs = 1;          /* never the store's references: the ones being replaced */
    s->mrefs = r;            /* the ones replacing them, when given */
    s->lcache = e->lcache;   /* shared: local features do not depend on the head */
    s->hnsw_above = e->hnsw_above;
    sl_status st = sl__engine_rebuild_index(s, err);
    if (st != SL_OK) {
        sl__engine_shadow_free(s);
        return st;
    }
    *out = s;
    return SL_OK;
}

void sl__engine_shadow_free(sl_engine *s) {
    if (!s) return;
    sl_index_free(s->idx);
    sl_features_free(s->feat);
    pthread_rwlock_destroy(&s->lock);
    pthread_mutex_destroy(&s->wmu);
    free(s);
}

/* ---- open / close -------------------------------------------------------------------------- */

void sl_engine_free(sl_engine *e) {
    if (!e) return;
    pthread_mutex_lock(&e->wmu);
    (void)sl__engine_save_index(e, NULL);
    pthread_mutex_unlock(&e->wmu);
    sl_index_free(e->idx);
    sl__lcache_free(e->lcache);
    sl__refmap_free(e->refmap);
    sl_features_free(e->feat);
    for (size_t i = 0; i < e->n_retired; i++) sl_features_free(e->retired[i]);
    free(e->retired);
    sl_store_free(e->store);
    pthread_rwlock_destroy(&e->lock);
    pthread_mutex_destroy(&e->wmu);
    free(e);
}

sl_status sl_engine_open(const char *dir, const sl_engine_opts *opts, sl_engine **out,
                         sl_error *err) {
    *out = NULL;
    sl_engine_opts o;
    memset(&o, 0, sizeof o);
    if (opts) o = *opts;
    if (o.index_kind && strcmp(o.index_kind, "flat") != 0 && strcmp(o.index_kind, "hnsw") != 0 &&
        strcmp(o.index_kind, "auto") != 0)
        return sl__err_set(err, SL_E_INVALID, "unknown index kind '%s' (flat, hnsw or auto)", o.index_kind);
    sl_status st = sl_image_global_init(err);
    if (st != SL_OK) return st;
    sl_engine *e = calloc(1, sizeof *e);
    if (!e) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    /* Writer-preferring: a waiting writer (a PUT during a stream of searches) is not starved;
     * it waits only for the searches already running. No code path takes the lock shared twice
     * in one thread, so this cannot deadlock. */
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&e->lock, &ra);
    pthread_rwlockattr_destroy(&ra);
    pthread_mutex_init(&e->wmu, NULL);
    e->read_only = o.read_only;
    e->no_index = o.no_index;
    e->candidates = SL_ENGINE_CANDIDATES_DEFAULT;
    e->verify_top = -1; /* = what the feature spec asks for (verify:n=) */
    e->max_side = SL_ENGINE_MAX_SIDE_DEFAULT;
    e->hnsw_above = SL__ENGINE_HNSW_ABOVE;
    atomic_init(&e->hnsw_ef, 0); /* automatic */
    atomic_init(&e->refs_n, 0);
    atomic_init(&e->refs_gen, -1);
    e->lcache = sl__lcache_new((size_t)SL_ENGINE_LOCAL_CACHE_MB_DEFAULT << 20); /* NULL: uncached */
    e->refmap = sl__refmap_new(); /* NULL: references looked up in the store */
    if ((st = sl_store_open(dir, o.create, o.read_only, &e->store, err)) != SL_OK) goto fail;
    char *spec = NULL, *kind = NULL;
    if (sl_store_meta_get(e->store, "features_spec", &spec, NULL) == SL_OK) {
        /* an existing store: its spec is fixed */
        sl_features *probe = NULL;
        if (o.features && *o.features) {
            if ((st = sl_features_new(o.features, &probe, err)) != SL_OK) {
                free(spec);
                goto fail;
            }
            if (strcmp(sl_features_spec(probe), spec) != 0) {
                st = sl__err_set(err, SL_E_STATE, "%s: the store uses features '%s'; the feature "
                                 "specification of a store is fixed (asked for '%s')",
                                 sl_store_dir(e->store), spec, sl_features_spec(probe));
                sl_features_free(probe);
                free(spec);
                goto fail;
            }
            sl_features_free(probe);
        }
        snprintf(e->spec, sizeof e->spec, "%s", spec);
        free(spec);
        if (sl_store_meta_get(e->store, "index_kind", &kind, NULL) == SL_OK)
            snprintf(e->index_kind, sizeof e->index_kind, "%s", kind);
        else
            snprintf(e->index_kind, sizeof e->index_kind, "auto");
        free(kind);
    } else {
        if (o.read_only) {
            st = sl__err_set(err, SL_E_CORRUPT, "%s: store without a feature specification", sl_store_dir(e->store));
            goto fail;
        }
        sl_features *probe = NULL;
        if ((st = sl_features_new(o.features && *o.features ? o.features : NULL, &probe, err)) != SL_OK) goto fail;
        snprintf(e->spec, sizeof e->spec, "%s", sl_features_spec(probe));
        sl_features_free(probe);
        snprintf(e->index_kind, sizeof e->index_kind, "%s", o.index_kind ? o.index_kind : "auto");
        if ((st = sl_store_begin(e->store, err)) != SL_OK) goto fail;
        if ((st = sl_store_meta_set(e->store, "features_spec", e->spec, err)) != SL_OK ||
            (st = sl_store_meta_set(e->store, "index_kind", e->index_kind, err)) != SL_OK ||
            (st = sl_store_meta_set(e->store, "features_version", "0", err)) != SL_OK) {
            sl_store_rollback(e->store);
            goto fail;
        }
        if ((st = sl_store_commit(e->store, err)) != SL_OK) goto fail;
    }
    if ((st = sl__load_features(e, err)) != SL_OK) goto fail;
    if ((st = sl__load_or_rebuild_index(e, err)) != SL_OK) goto fail;
    *out = e;
    return SL_OK;
fail:
    sl_engine_free(e);
    return st;
}

sl_store *sl_engine_store(sl_engine *e) { return e->store; }

sl_status sl_engine_refresh(sl_engine *e, sl_error *err) {
    int64_t gen = 0;
    sl_status st = sl_store_generation(e->store, &gen, err);
    if (st != SL_OK || gen == e->gen) return st;
    pthread_mutex_lock(&e->wmu);
    pthread_rwlock_wrlock(&e->lock);
    int64_t v = sl__meta_int(e, "features_version", 0);
    if (v != e->features_version) {
        st = sl__load_features(e, err);
        if (st == SL_OK) st = sl__load_or_rebuild_index(e, err);
    } else if (e->idx) {
        /* the same features: bring the index in memory up to date (no file read, no rebuild) */
        size_t changed = 0;
        e->gen = gen;
        st = sl__catch_up(e, e->idx, &changed, err);
        if (changed) e->index_dirty = 1;
        if (st != SL_OK) st = sl__load_or_rebuild_index(e, err);
    } else {
        st = sl__load_or_rebuild_index(e, err);
    }
    pthread_rwlock_unlock(&e->lock);
    pthread_mutex_unlock(&e->wmu);
    return st;
}

sl_status sl_engine_flush(sl_engine *e, sl_error *err) {
    pthread_mutex_lock(&e->wmu);
    sl_status st = sl__engine_save_index(e, err);
    pthread_mutex_unlock(&e->wmu);
    return st;
}

static int sl__clamp(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

void sl_engine_set_candidates(sl_engine *e, int n) {
    e->candidates = sl__clamp(n, SL_ENGINE_CANDIDATES_MIN, SL_ENGINE_CANDIDATES_MAX);
}
void sl_engine_set_verify_top(sl_engine *e, int n) {
    e->verify_top = sl__clamp(n, SL_ENGINE_VERIFY_TOP_MIN, SL_ENGINE_VERIFY_TOP_MAX);
}
void sl_engine_set_local_cache_mb(sl_engine *e, int mb) {
    mb = sl__clamp(mb, SL_ENGINE_LOCAL_CACHE_MB_MIN, SL_ENGINE_LOCAL_CACHE_MB_MAX);
    sl__lcache_set_max(e->lcache, (size_t)mb << 20);
}
void sl_engine_set_hnsw_ef(sl_engine *e, int ef) {
    atomic_store(&e->hnsw_ef, ef <= 0 ? 0 : sl__clamp(ef, SL_ENGINE_HNSW_EF_MIN, SL_ENGINE_HNSW_EF_MAX));
}
int sl_engine_hnsw_ef_auto(uint64_t n) {
    if (n <= SL_ENGINE_HNSW_EF_SCALE_FROM) return SL_ENGINE_HNSW_EF_DEFAULT;
    double ef = ceil(SL_ENGINE_HNSW_EF_DEFAULT * (1.0 + log10((double)n / SL_ENGINE_HNSW_EF_SCALE_FROM)));
    return ef >= SL_ENGINE_HNSW_EF_MAX ? SL_ENGINE_HNSW_EF_MAX : (int)ef;
}
void sl_engine_set_max_side(sl_engine *e, int side) {
    e->max_side = sl__clamp(side, SL_ENGINE_MAX_SIDE_MIN, SL_ENGINE_MAX_SIDE_MAX);
}

/* ---- reads --------------------------------------------------------------------------------- */

sl_status sl_engine_get_product(sl_engine *e, const char *product_id, sl_product *out,
                                sl_image_ref **images, size_t *n_images, sl_error *err) {
    if (images) *images = NULL;
    if (n_images) *n_images = 0;
    sl_status st = sl_store_get_product(e->store, product_id, out, err);
    if (st != SL_OK || !images) return st;
    size_t n = 0;
    st = sl_store_product_images(e->store, product_id, images, &n, err);
    if (st != SL_OK) {
        sl_product_clear(out);
        return st;
    }
    if (n_images) *n_images = n;
    return SL_OK;
}

sl_status sl_engine_categories(sl_engine *e, char ***names, int64_t **counts, size_t *n,
                               sl_error *err) {
    return sl_store_categories(e->store, names, counts, n, err);
}

/* Bytes of the regular files directly in dir (images/ is flat). */
static int64_t sl__dir_bytes(const char *dir) {
    int64_t total = 0;
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *de;
    size_t dl = strlen(dir);
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        size_t n = dl + strlen(de->d_name) + 2;
        char *p = malloc(n);
        if (!p) break;
        snprintf(p, n, "%s/%s", dir, de->d_name);
        total += sl__fsize(p);
        free(p);
    }
    closedir(d);
    return total;
}

sl_status sl_engine_stats_get(sl_engine *e, sl_engine_stats *out, sl_error *err) {
    memset(out, 0, sizeof *out);
    sl_store_counts c;
    sl_status st = sl_store_counts_get(e->store, &c, err);
    if (st != SL_OK) return st;
    out->products = c.products;
    out->images = c.images;
    out->db_bytes = c.db_bytes;
    out->images_outside = c.images_outside;
    pthread_rwlock_rdlock(&e->lock);
    out->indexed = e->idx ? (int64_t)sl_index_count(e->idx) : 0;
    out->dim = sl_features_ready(e->feat) ? sl_features_dim(e->feat) : 0;
    snprintf(out->features, sizeof out->features, "%s", e->spec);
    sl_features_calibration_describe(e->feat, out->quantization, sizeof out->quantization);
    snprintf(out->index_kind, sizeof out->index_kind, "%s",
             e->idx ? (sl_index_kind_of(e->idx) == SL_INDEX_HNSW ? "hnsw" : "flat")
                    : (strcmp(e->index_kind, "auto") == 0 ? "flat" : e->index_kind));
    out->generation = e->gen;
    pthread_rwlock_unlock(&e->lock);
    char *p = sl_store_path(e->store, "index.bin");
    out->index_bytes = sl__fsize(p);
    free(p);
    char fname[48];
    snprintf(fname, sizeof fname, "features-%lld.bin", (long long)e->features_version);
    out->features_bytes = sl_store_file_size(e->store, fname);
    if (out->features_bytes < 0) out->features_bytes = 0;
    p = sl_store_path(e->store, "images");
    out->images_bytes = p ? sl__dir_bytes(p) : 0;
    free(p);
    out->total_bytes = out->db_bytes + out->index_bytes + out->features_bytes + out->images_bytes;
    return SL_OK;
}

sl_status sl_engine_missing_files(sl_engine *e, int64_t *missing, sl_error *err) {
    *missing = 0;
    sl_image_ref *refs = NULL;
    size_t n = 0;
    sl_status st = sl_store_all_images(e->store, &refs, &n, err);
    if (st != SL_OK) return st;
    for (size_t i = 0; i < n; i++) *missing += sl_store_file_size(e->store, refs[i].file) < 0;
    sl_image_refs_free(refs, n);
    return SL_OK;
}

sl_status sl_engine_thumbnail(sl_engine *e, int64_t image_id, int max_side, void **jpeg,
                              size_t *len, sl_error *err) {
    *jpeg = NULL;
    *len = 0;
    if (max_side <= 0) max_side = 256;
    if (max_side > SL_ENGINE_MAX_SIDE_MAX) max_side = SL_ENGINE_MAX_SIDE_MAX;
    sl_image_ref r;
    sl_status st = sl_store_get_image(e->store, image_id, &r, err);
    if (st != SL_OK) return st;
    sl_image_load_opts o;
    memset(&o, 0, sizeof o);
    o.max_side = max_side;
    sl_image *img = NULL;
    void *bytes = NULL;
    size_t blen = 0;
    st = sl_store_file_get(e->store, r.file, SL_IMAGE_MAX_BYTES_DEFAULT, &bytes, &blen, err);
    if (st == SL_OK) st = sl_image_load_buffer(bytes, blen, &o, &img, NULL, err);
    free(bytes);
    if (st != SL_OK) {
        /* the id exists: its file is gone or damaged - a problem of the store, not of the call */
        sl__err_prefix(err, "image %lld: its file cannot be read", (long long)image_id);
        if (err) err->code = SL_E_IO;
        st = SL_E_IO;
    }
    sl_image_ref_clear(&r);
    if (st != SL_OK) return st;
    st = sl_image_encode(img, "jpeg", 85, jpeg, len, err);
    sl_image_free(img);
    return st;
}
