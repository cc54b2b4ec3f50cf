/*
 * engine/engine_internal.h - the engine's state shared by its source files (not public).
 *
 * Locking (see engine.h for the contract):
 *  - wmu serializes writers (put, delete, ingest, retrain, flush).
 *  - lock (rwlock) is held shared by every reader for the whole query (features, index, store
 *    reads), and exclusively by a writer only around "commit the SQLite transaction + apply the
 *    same change to the in-memory index" and around swapping features/index. So a reader sees
 *    either none or all of a product's change.
 */
#ifndef SL_ENGINE_INTERNAL_H
#define SL_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "shoplens/engine.h"
#include "shoplens/feature.h"
#include "shoplens/index.h"
#include "shoplens/store.h"
#include "engine/lcache.h"
#include "catalog/catalog.h"

/* Above this many images an "auto" store builds an HNSW index, below it an exact one: the
 * measured crossover of the candidate stage's latency (bench/results/scale.md, docs/index.md "At
 * scale"). */
#define SL__ENGINE_HNSW_ABOVE 50000
/* The HNSW index of a store: int8 codes only (SL_INDEX_INT8_ONLY: 2,872 bytes per image at the
 * default d = 2856 instead of 14,296), graph degree M (2M on layer 0), candidate list e->hnsw_ef
 * (SL_ENGINE_HNSW_EF_DEFAULT). A search asks it for the best SL__ENGINE_HNSW_RESCORE(k) by code
 * distance and re-scores those exactly with the store's float32 vectors, keeping k. Measured:
 * bench/results/scale.md. */
#define SL__ENGINE_HNSW_M 32
#define SL__ENGINE_HNSW_RESCORE(k) ((k) + (k) / 2)
/* Filtered searches on the HNSW index scan the allowed images exactly below this selectivity. */
#define SL__ENGINE_FILTER_EXACT_BELOW 0.03
/* A flat index scans int8 codes of the vectors (a quarter of the memory traffic, which bounds
 * a float32 scan) and re-scores the best SL__ENGINE_RESCORE_FACTOR x k of them, at least
 * SL__ENGINE_RESCORE_MIN, with the float32 vectors: the k results and their scores are those of
 * the exact scan unless the int8 error pushes a true top-k vector below that depth. Measured
 * at 10,000 images, k = 100 (the verified candidates): identical lists for 73 of 73 queries at
 * depth 200 (round 1); in round 5 the int8 top 130 already held the float top 100 of all 72
 * test photos, so depth 200 (it was 4k, at least 400) keeps a 1.5x margin. Index files are
 * marked with meta "index_storage" so a float32-only file from an older build is rebuilt once
 * instead of being searched the slow way. */
#define SL__ENGINE_RESCORE_FACTOR 2
#define SL__ENGINE_RESCORE_MIN 200
/* ... and reads 4-bit rows before the int8 codes (sl_index_set_prefilter: half the bytes of the
 * int8 pass), keeping this many times the re-scoring depth for the int8 codes. At 10,000
 * images, the 4-bit pass's best 600 held the float top 100 of all 72 test photos (its best 400
 * missed one in 3 of them; docs/index.md). */
#define SL__ENGINE_PREFILTER 3.0
/* Verified candidates with at least this many inliers count as the same object (check, dedup). */
#define SL__ENGINE_MIN_INLIERS 12
/* Fixed seed of the learned parts: the same feed trains the same codebook on every run. */
#define SL__ENGINE_TRAIN_SEED 0x5b0b1e45ULL

struct sl_engine {
    sl_store *store;
    sl_features *feat;       /* never NULL after open; may need training */
    sl_index *idx;           /* NULL until the features have a dimension */
    int read_only;
    int no_index;            /* opened without an index (sl_engine_opts.no_index) */
    char spec[512];
    char index_kind[16];     /* "flat", "hnsw" or "auto" as recorded */
    int64_t gen;             /* store generation the in-memory index reflects; -1 when another
                                process committed changes this engine has not loaded yet */
    int64_t txn_gen;         /* generation written by the open transaction (sl__engine_bump) */
    int64_t features_version;/* meta features_version the loaded features are */
    int index_dirty;         /* in-memory index differs from index.bin */
    int candidates, verify_top, max_side;
    _Atomic int hnsw_ef;     /* SL_ENGINE_HNSW_EF_DEFAULT unless set */
    int no_refs;             /* a training's private engine: its index holds no references */
    const struct sl__mrefs *mrefs; /* a training's private engine: references in memory (the
                                photos being trained on) instead of the store's; borrowed */
    _Atomic int64_t refs_n;  /* references in the store at generation refs_gen (a cache of */
    _Atomic int64_t refs_gen;/* sl_store_count_refs for the search depth; refs_gen -1: none) */
    pthread_rwlock_t lock;
    pthread_mutex_t wmu;
    /* Features replaced by a training stay alive until sl_engine_free: a query may still be
     * describing its image with them outside the lock (it re-describes if they changed). */
    sl_features **retired;
    size_t n_retired;
    sl__lcache *lcache;      /* candidates' local features (NULL when out of memory) */
    int gc_deferred;         /* an ingest is committing: file deletions wait for its end (they
                                are queued in pending_deletions, so a crash loses nothing) */
    uint64_t hnsw_above;     /* SL__ENGINE_HNSW_ABOVE (tests lower it) */
    int index_builds;        /* indexes built from every stored vector (diagnostics, tests) */
    _Atomic uint64_t verifications; /* geometric verifications run (sl_engine_verifications) */
    struct sl__refmap *refmap; /* the references' products (sl__image_products); NULL: none */
};

/* The products of the store's references as of one store generation, for the candidates of a
 * search (sl__image_products): a trained store's searches have most of its references among
 * their candidates (2,640 on the grocery store), and looking each one up in the refs table (a
 * B-tree search into rows that hold a photo's vector and local features) cost about 2 ms a
 * search. Loaded by the first search of a generation that meets a reference - every commit
 * makes a new generation, so it is never behind the store - and only up to
 * SL__ENGINE_REFMAP_MAX references (beyond that, the store is asked per search). */
#define SL__ENGINE_REFMAP_MAX 250000
typedef struct sl__refmap {
    pthread_mutex_t mu;
    int64_t gen;             /* the store generation it holds; -1: nothing loaded */
    size_t n;
    int64_t *ids;            /* index ids, ascending */
    char **prods;            /* prods[i]: the product of ids[i] */
} sl__refmap;
sl__refmap *sl__refmap_new(void);
void sl__refmap_free(sl__refmap *m);

/* An image read and described, ready to be written. */
typedef struct sl__described {
    char hash[65];           /* SHA-256 of the bytes as given */
    int64_t size;
    float *vec;              /* dim floats, NULL when `reuse` */
    void *local;             /* serialized local features or NULL */
    size_t local_len;
    int64_t reuse;           /* > 0: an existing image of the product with this hash */
    int64_t id;              /* > 0: the id the new image gets (a cluster assigns it when the
                                job is queued); 0: the store assigns one */
    char file[SL__IMAGE_FILE_MAX]; /* the store's copy ("images/<sha256>.<ext>"), unless reuse */
    /* how to write the copy again if a deleter removed it before the row committed (see
     * sl__engine_commit_product): its bytes (borrowed, may be NULL), else the original file */
    const void *copy;
    size_t copy_len;
    const char *origin;
} sl__described;

void sl__described_clear(sl__described *d);

/* Decodes bytes for the engine (max_side shrink-on-load). info (may be NULL) receives the
 * format and the original size. */
sl_status sl__engine_decode(const sl_engine *e, const void *data, size_t len, sl_image **img,
                            sl_image_info *info, sl_error *err);
/* Decodes the store's own copy of a catalog image (sl_image_ref.file: a file of the directory,
 * or a row of a PostgreSQL store) as sl__engine_decode does. *img is the caller's. */
sl_status sl__engine_load_store_image(const sl_engine *e, const char *file, sl_image **img,
                                     sl_error *err);
/* The region of q (region.c) cut out of a decoded upright image, or out of encoded bytes
 * (decoded larger when the region is small); shrunk to e->max_side. SL_E_INVALID when the
 * region is not inside the image or too small. */
sl_status sl__region_of_image(const sl_engine *e, const sl_image *img, const sl_query *q,
                              sl_image **out, sl_error *err);
sl_status sl__region_of_bytes(const sl_engine *e, const void *data, size_t len, const sl_query *q,
                              sl_image **out, sl_error *err);

/* The store's copy of an image's bytes (SL_ENGINE_COPY_MAX_SIDE): the bytes themselves (*owned
 * = 0) when the image's longest side (info, from decoding them) is small enough, else a JPEG
 * of the image decoded at that side (malloc'ed, *owned = 1). ext receives the extension. */
sl_status sl__engine_copy_bytes(const sl_engine *e, const void *data, size_t len,
                                const sl_image_info *info, void **copy, size_t *copy_len,
                                int *owned, char ext[16], sl_error *err);
/* Writes copy bytes as <store>/images/<sha256 of them>.<ext> (atomically and durably; nothing
 * to do when that file exists with that size); file receives the name relative to the store. */
sl_status sl__engine_write_copy(sl_engine *e, const void *copy, size_t len, const char *ext,
                                char file[SL__IMAGE_FILE_MAX], sl_error *err);
/* sl__engine_copy_bytes + sl__engine_write_copy. */
sl_status sl__engine_keep_copy(sl_engine *e, const void *data, size_t len,
                               const sl_image_info *info, char file[SL__IMAGE_FILE_MAX],
                               sl_error *err);
/* Nonzero when a stored image holds these bytes: same hash as ingested, or its store copy is
 * named by this hash (re-adding an export of the store). */
int sl__image_same_bytes(const sl_image_ref *old, const char hash[65]);
/* After a commit that may have released image files: deletes those nobody references (errors
 * are left for the next run: the deletions stay queued). Caller holds wmu, not the lock. */
void sl__engine_gc(sl_engine *e);
/* Downloads image URLs (remote.c, catalog/fetch.c) into a private directory of the store
 * (*dir, malloc'ed; remove it with sl__remote_rmdir): local[i] is the file of urls[i]
 * (malloc'ed), or NULL with st[i] and msg[i] (malloc'ed) saying why. Returns SL_OK when every
 * URL was tried, else a run-level error (SL_E_NOMEM, SL_E_IO, SL_E_INTERRUPTED). */
struct sl__fetch_opts;
sl_status sl__remote_fetch(sl_engine *e, const char *const *urls, size_t n,
                           const struct sl__fetch_opts *o, sl_progress_fn progress,
                           void *progress_ctx, const volatile int *cancel, char **dir, char **local,
                           sl_status *st, char **msg, sl_error *err);
void sl__remote_rmdir(const char *dir);
/* Extracts the global vector (malloc'ed, dim floats) and, when verifying, the serialized local
 * features of a decoded image. Thread-safe. */
sl_status sl__engine_describe(const sl_engine *e, const sl_image *img, float **vec, void **local,
                              size_t *local_len, sl_error *err);

/* Adds a stored (pre-head) vector to the index under image_id, through the gallery side of the
 * features' learned head when there is one (the query side for a reference's index id, >=
 * SL_STORE_REF_ID_BASE). Caller holds the lock exclusively (or is opening). */
sl_status sl__engine_index_add(sl_engine *e, int64_t image_id, const float *vec);

/* Creates a new empty index of the engine's kind for the features' dimension and fills it with
 * every stored vector. Caller holds lock exclusively (or is opening). */
sl_status sl__engine_rebuild_index(sl_engine *e, sl_error *err);
/* An "auto" store whose flat index grew past hnsw_above gets its HNSW index: built from the
 * store while searches go on with the flat one, then swapped in under the exclusive lock (a
 * moment). Nothing to do otherwise. Caller holds wmu (the store does not change meanwhile). */
sl_status sl__engine_maybe_switch(sl_engine *e, sl_error *err);
/* The candidate stage: the k catalog images nearest to vec (the features' dimension) that pass
 * f (NULL: all), exact cosine scores, best first, into res (k entries); *got their count. A flat
 * index re-scores its int8 candidates itself; the HNSW index (codes only) returns
 * SL__ENGINE_HNSW_RESCORE(k) by code distance and they are re-scored here from the store.
 * ef: the HNSW candidate list length (0 = the engine's, e->hnsw_ef; a query's is checked by
 * sl__engine_ef_of). Caller holds the lock shared. */
sl_status sl__engine_candidates(sl_engine *e, const float *vec, size_t k, const sl_index_filter *f,
                                int ef, sl_index_result *res, size_t *got, sl_error *err);
/* The HNSW ef a query asks for into *ef: 0 (the engine's) when q is NULL or q->ef is 0, else
 * q->ef; SL_E_INVALID naming the range when q->ef is outside SL_ENGINE_HNSW_EF_MIN..MAX. */
sl_status sl__engine_ef_of(const sl_query *q, int *ef, sl_error *err);
/* Path of features-<version>.bin (malloc'ed). */
char *sl__engine_features_path(sl_engine *e, int64_t version);
/* Saves f as features-<version>.bin (atomically); the message names the file. */
sl_status sl__engine_save_features(sl_engine *e, const sl_features *f, int64_t version, sl_error *err);
/* Creates and trains a new pipeline and saves it as features-<version>.bin; not installed. */
sl_status sl__engine_train_new(sl_engine *e, const sl_image *const *imgs, size_t n,
                               int64_t version, sl_features **out, sl_error *err);
/* Commits features_version = version (features-<version>.bin already saved) with a generation
 * bump, unless another process moved features_version meanwhile (SL_E_BUSY); installs f
 * (ownership passes, also on failure) and, with reindex, rebuilds the index from the stored
 * vectors (else keeps it: the vectors did not change). Caller holds wmu. */
sl_status sl__engine_commit_features(sl_engine *e, sl_features *f, int64_t version, int reindex,
                                    sl_error *err);
/* The same, calling in_txn(e, ctx, err) inside the committing transaction first (train's
 * references go in with the head); its failure rolls everything back. */
sl_status sl__engine_commit_features_with(sl_engine *e, sl_features *f, int64_t version, int reindex,
                                         sl_status (*in_txn)(sl_engine *, void *, sl_error *), void *ctx,
                                         sl_error *err);
/* First training: sl__engine_train_new, then commits features_version and installs the
 * features and a new empty index. Caller holds wmu. */
sl_status sl__engine_train(sl_engine *e, const sl_image *const *imgs, size_t n, sl_error *err);
/* A cluster store: locks the store's features version row for the calling thread's open
 * transaction (sl__pg_lock_features: share, or exclusive for a retrain) and checks that it is
 * the engine's; SL_E_BUSY when another process changed the features since this engine loaded
 * them (the caller rolls back; a refresh loads the new ones). A SQLite store: SL_OK. */
sl_status sl__engine_lock_features(sl_engine *e, int exclusive, sl_error *err);

/* The index side of a write, collected while the transaction is open and applied after COMMIT
 * (under the exclusive lock): images removed (an id both removed and added is replaced: removals
 * apply first), images added with their vectors (borrowed from the caller, before the head). */
typedef struct sl__change {
    int64_t *removed;
    size_t n_removed, cap_removed;
    uint64_t *added;
    const float **vecs;
    size_t n_added, cap_added;
} sl__change;

/* Frees the lists and zeroes *c. */
void sl__change_free(sl__change *c);
/* Room for more_removed removals and more_added additions; SL_E_NOMEM (c unchanged otherwise). */
sl_status sl__change_reserve(sl__change *c, size_t more_removed, size_t more_added);
/* Bumps the generation, commits the open transaction and applies *c to the index (additions
 * through the features' head, in batches), all under the exclusive lock so searches see all of
 * it or none; an index that cannot follow is rebuilt from the committed store. Then deletes the
 * files of removed images (unless an ingest defers that). Rolls back on failure. Caller holds
 * wmu. */
sl_status sl__commit_change(sl_engine *e, const sl__change *c, sl_error *err);

/* Writes one product change in one transaction and applies it to the index. metadata_changed /
 * images: the new image set (described; `reuse` ones keep their id). Inside the transaction
 * (holding the write lock, which every file deleter takes too) it makes sure each new image's
 * copy exists, writing it again from d->copy or d->origin if a deleter removed it meanwhile.
 * After the commit, the files of removed images nobody uses any more are deleted.
 * Caller holds wmu. */
sl_status sl__engine_commit_product(sl_engine *e, const sl_product *p, const char *const *sources,
                                    sl__described *imgs, size_t n, int keep_images,
                                    sl_error *err);

/* Compares a stored product with a new one (metadata only). Nonzero when equal. */
int sl__product_equal(const sl_product *a, const sl_product *b);

/* Keeps replaced features until the engine is freed (see struct sl_engine). Caller holds the
 * lock exclusively. On allocation failure the features are leaked rather than freed early. */
void sl__engine_retire_features(sl_engine *e, sl_features *f);

/* Runs fn(ctx, i) for i in [0, n) on up to `jobs` threads (0 = all cores). */
void sl__parallel_for(size_t n, int jobs, void (*fn)(void *ctx, size_t i), void *ctx);
/* The progress of a parallel job of n items (train and calibrate describing photos): items are
 * counted as they finish, from any thread, and fn (NULL: none) hears of it at most every 0.1 s
 * and at the last item, as fn(ctx, done, n, seconds since t0). */
typedef struct sl__tally {
    sl_progress_fn fn;
    void *ctx;
    size_t n, done;
    double t0, last;
    pthread_mutex_t mu;
} sl__tally;
/* Starts counting (and reports 0 of n). Pair with sl__tally_end. */
void sl__tally_start(sl__tally *t, sl_progress_fn fn, void *ctx, size_t n, double t0);
/* One more item finished. */
void sl__tally_one(sl__tally *t);
void sl__tally_end(sl__tally *t);
/* jobs, or the number of online CPUs when jobs <= 0 (capped). */
int sl__jobs_or_cores(int jobs);
/* Decodes n image files in parallel (longest side <= max_side); unreadable ones give NULL. */
void sl__decode_paths(char *const *paths, size_t n, int max_side, int jobs, sl_image **out);
/* The same for files of e's store (sl_store_file_get: a cluster store's copies are rows), with
 * e's decoding (sl__engine_load_store_image). */
void sl__decode_store_files(const sl_engine *e, char *const *files, size_t n, int jobs, sl_image **out);

/* Inside a write transaction: bumps meta "generation" and remembers the new value. */
sl_status sl__engine_bump(sl_engine *e, sl_error *err);
/* After that transaction committed (caller holds the lock exclusively): the in-memory state now
 * reflects the new generation, unless another process committed in between (then -1: stale
 * until sl_engine_refresh, and index.bin is not saved as current). */
void sl__engine_committed(sl_engine *e);

/* A private engine for a training (learn.c) to run the query path with features that are not
 * installed (a head trained on part of the photos): the same store, settings and local-feature
 * cache as e, features f (ownership passes, also on failure) and an index built for them from
 * the stored vectors. It is read-only, registered nowhere and never saved; nothing of it reaches
 * the store. Caller holds e's wmu (the store does not change meanwhile) and frees it with
 * sl__engine_shadow_free before e. SL_E_NOMEM or the index build's error. */
sl_status sl__engine_shadow_new(sl_engine *e, sl_features *f, sl_engine **out, sl_error *err);
/* References held in memory by a training's private engine (the labelled photos about to become
 * the store's references: sl_store_replace_refs runs only when the head is installed). Reference
 * i has index id SL_STORE_REF_ID_BASE + i (the private engine indexes none of the store's), its
 * descriptor before any head at vecs + i * dim, its serialized local features locals[i] (NULL
 * when none), its product pids[cls[i]] and its photo's path paths[i]. All borrowed. */
typedef struct sl__mrefs {
    size_t n, dim;
    const float *vecs;
    void *const *locals;
    const size_t *local_len;
    const uint32_t *cls;
    char *const *pids;
    const char *const *paths;
} sl__mrefs;
/* sl__engine_shadow_new with the references r (borrowed: they outlive the engine) in its index
 * in place of none. */
sl_status sl__engine_shadow_new_refs(sl_engine *e, sl_features *f, const sl__mrefs *r, sl_engine **out,
                                     sl_error *err);
void sl__engine_shadow_free(sl_engine *s);

/* Saves index.bin and records the generation it reflects. Caller holds wmu. */
sl_status sl__engine_save_index(sl_engine *e, sl_error *err);

/* ---- products of a query, match scores (query.c) ------------------------------------------- */

/* One product scored against a query: its best image (score in -1..1, see sl_match). */
typedef struct sl__pscore {
    char *product_id;
    double score;
    double confidence;       /* filled by the search path only */
    int64_t image_id;
    int inliers;
} sl__pscore;

void sl__pscores_free(sl__pscore *v, size_t n);
/* Sorts best first (ties by product id). */
void sl__engine_sort_pscores(sl__pscore *v, size_t n);
/* The products of the query's nearest images (index search with filter f, NULL = none, at least
 * max(candidates, 8k) images, verified and blended as a search does; ef as in
 * sl__engine_candidates), best first. Caller holds the lock shared. *out malloc'ed
 * (sl__pscores_free), possibly n = 0. */
sl_status sl__engine_rank_products(sl_engine *e, const float *const *vecs, sl_local_features *const *locals,
                                   size_t nq, const sl_index_filter *f, int ef, size_t k, sl__pscore **out,
                                   size_t *n_out, sl_error *err);
/* How one query's references were put on the catalog's scale (sl__refs_on_catalog_scale): the
 * mean and standard deviation of the best scores of the query's top products by catalog images
 * [0] and by references [1]; usable = 0 when the query's references were left out (none among
 * its candidates, or fewer than two products of a kind): its products keep their catalog
 * scores. */
typedef struct sl__refscale {
    int usable;
    double mean[2], sd[2];
    /* the references the ranking verified (sl_engine_verify_pick: its first ones) and their
     * re-ranked scores before the fold; check scores a product's references with these, the rest
     * by global score, as search does (sl__engine_rank_check fills them) */
    size_t n_verified;
    int64_t verified_id[SL_ENGINE_VERIFY_REFS];
    double verified_score[SL_ENGINE_VERIFY_REFS];
} sl__refscale;
/* A candidate image (or reference) of a query on its way through the re-rank. */
typedef struct sl__cand {
    int64_t image_id;
    double score;
    int inliers;
    int verify;     /* 1 / 0: verify it or not (a cluster's phase 2); -1: by its rank */
    int given;      /* score and inliers are already re-ranked (a cluster's phase 2b) */
} sl__cand;
/* The references' fold (query.c, "References as a second, equal witness") of candidates
 * c[0..n) whose products are prod[i] (NULL: gone): with `given` (a cluster's fold of the whole
 * list) or else with the stats of c itself; `part` (may be NULL) receives what c contributes to
 * a cluster's stats and then nothing is changed; *scale (may be NULL) how it was folded.
 * Rewrites c[].score in place. SL_E_NOMEM (c unchanged). */
sl_status sl__refs_on_catalog_scale(sl__cand *c, size_t n, char *const *prod, const sl_ref_fold *given,
                                    sl_ref_fold_part *part, sl__refscale *scale, sl_error *err);
/* The ranking of check and of its calibration: one query vector, no filter, every candidate image
 * except the reference with index id `skip` (-1: none; a calibration photo is not its own
 * reference), products best first as sl__engine_rank_products; *scale receives how the query's
 * references were folded. Caller holds the lock shared. */
sl_status sl__engine_rank_check(sl_engine *e, const float *vec, sl_local_features *lf, size_t k, int64_t skip,
                                sl__pscore **out, size_t *n_out, sl__refscale *scale, sl_error *err);
/* A product's score against a query (query-side vector, optional local features) as check
 * computes it: every catalog image of the product, verified; with references (scale usable,
 * from sl__engine_rank_check of the same query) the mean of that and its best reference's
 * score put on the catalog's scale, as search folds them (the reference with index id `skip`
 * left out; -1: none), each reference scored as search scores it for this query (verified if
 * the ranking verified it, else by global score: nothing is verified again). *image (may be NULL) receives the best catalog image's source.
 * SL_E_NOT_FOUND for an unknown product. Caller holds the lock shared. */
sl_status sl__engine_product_score(sl_engine *e, const char *product_id, const float *vec,
                                   const sl_local_features *lf, const sl__refscale *scale, int64_t skip,
                                   sl__pscore *out, char **image, sl_error *err);
/* Mean score of the k best products of `sorted` other than skip1 and skip2 (NULL = none); 0 when
 * there is none. */
double sl__engine_cohort_mean(const sl__pscore *sorted, size_t n, int k, const char *skip1,
                              const char *skip2);
/* score - cohort mean, clamped to the match score range of learn.h; with the cohort mean of k = 1
 * (the best other product) it is the margin. */
double sl__engine_match_score(double score, double cohort_mean);

/* ---- shared by train and calibrate (learn.c) ------------------------------------------------ */

/* Appends a failure (copies of the strings; msg NULL = the status's text). SL_E_NOMEM. */
sl_status sl__failure_add(sl_train_failure **v, size_t *n, const char *file, const char *pid, sl_status st,
                          const char *msg);
void sl__failures_free(sl_train_failure *v, size_t n);
/* Index of s in v (n strings sorted by strcmp, e.g. sl_store_product_ids), or -1. */
long sl__strv_find(char *const *v, size_t n, const char *s);
/* A new copy of the engine's current features, read from features-<version>.bin (or made from
 * the spec at version 0), for a writer that installs a changed version. */
sl_status sl__engine_features_copy(sl_engine *e, sl_features **out, sl_error *err);

/* ---- train (learn.c) ---------------------------------------------------------------------- */

/* train --photos calibrates on the photos of a seeded set of products (about 1/SHARE of the
 * photos: whole products until at least max(MIN, n / SHARE) photos, that at most
 * SL__ENGINE_CALIB_PHOTOS_MAX) through a stand-in head trained on the other products' photos.
 * Whole products, not single photos: a product's photos from one session are near-duplicates,
 * and a stand-in that learned some of them scores the others like its training photos (measured
 * on grocery without a model, photos held out one by one: 98% of them accepted at its 2% point,
 * 75% of the val photos at 4.7% false accepts). MIN: at least SL_CALIB_MIN_POSITIVES genuine
 * pairs and, at two result-list negatives per photo, SL_CALIB_MIN_NEGATIVES of those, with room
 * for photos that cannot be read. */
#define SL__ENGINE_TRAIN_HOLDOUT_SHARE 4
#define SL__ENGINE_TRAIN_HOLDOUT_MIN 30
#define SL__ENGINE_TRAIN_HOLDOUT_SALT 0x4e1d0a7ULL
/* Marks train's held-out photos (held: n bytes, set to 0/1) among n photos of products cls[i]
 * < n_classes and returns how many: whole products in a seeded order (the same for a seed
 * whatever the threads); 0 (none held out) when n is below twice the size above, when fewer than
 * two products would be held out or left, when fewer photos would be left than held out, or out
 * of memory. */
size_t sl__train_holdout(const uint32_t *cls, size_t n, size_t n_classes, uint64_t seed, unsigned char *held);

/* ---- calibration (calibrate.c) -------------------------------------------------------------- */

/* Least products a store needs before it is calibrated from its catalog automatically. */
#define SL__ENGINE_CALIB_MIN_PRODUCTS 5
/* Pseudo shopper photos made for a catalog calibration: this many per catalog image, within
 * MIN..MAX in all (the operating point sits in the top 2% of their negatives: at 486 copies x 16
 * negatives it moved by 0.002 in match score between seeds, at 162 x 8 by 0.03). */
#define SL__ENGINE_CALIB_COPIES_PER_IMAGE 6
#define SL__ENGINE_CALIB_COPIES_MIN 40
#define SL__ENGINE_CALIB_COPIES_MAX 600
/* Labelled photos used for a calibration at most (an evenly spaced sample beyond). */
#define SL__ENGINE_CALIB_PHOTOS_MAX 1000
/* Random other products checked per calibration photo. */
#define SL__ENGINE_CALIB_NEGATIVES 16
/* Fixed seed of calibrations (train --seed overrides it). */
#define SL__ENGINE_CALIB_SEED 0xca11b4a7ULL

/* When an automatic catalog calibration is due (no calibration yet and enough products; or, with
 * grow, a catalog calibration fitted on fewer than half the products the store has now). */
int sl__engine_calib_due(sl_engine *e, int grow);
/* Fits a calibration with the engine's current features and index (e may be a shadow engine:
 * nothing is written) into *out (sl_calib_free). independent: the labelled photos were not used to
 * train e's head, so the margin and the search map's precision rule apply as on a store without a
 * head. rep must not be NULL; its features_version stays 0. */
sl_status sl__engine_calib_fit(sl_engine *e, const sl_calibrate_opts *o, int independent,
                               sl_calibrate_report *rep, sl_calib **out, sl_error *err);
/* The automatic catalog calibration when it is due (as sl__engine_calib_due says): on the
 * engine's index, or, for an engine of a cluster store opened without an index (add, sync and
 * retrain there only write), on an index of the whole catalog loaded from PostgreSQL for it
 * and dropped after. *done = 1 when a calibration was installed (the engine then has the new
 * features version); an error leaves the store's features as they were. Caller holds wmu. */
sl_status sl__engine_auto_calibrate(sl_engine *e, int grow, const sl_calibrate_opts *co, int *done,
                                    sl_error *err);
/* Fits a calibration with the engine's current features and index and installs it as the next
 * features version (no re-indexing). photos NULL: augmented catalog images. Caller holds wmu.
 * rep may be NULL. */
sl_status sl__engine_calibrate(sl_engine *e, const sl_calibrate_opts *o, sl_calibrate_report *rep,
                               sl_error *err);

#endif
