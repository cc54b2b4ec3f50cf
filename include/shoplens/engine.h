/*
 * shoplens/engine.h - the product search engine over a store: image -> features -> index
 * candidates (filters applied inside the index search as an allowed-id set) -> geometric
 * re-rank (when the feature spec uses verify) -> products (a product's score is its best
 * image's). Also: similar products, duplicate listings, classification, review-photo check,
 * catalog writes (put/delete one product, ingest a whole feed) and statistics.
 *
 * Thread safety: one sl_engine may be shared by any number of threads. Searches, similar,
 * classify, check, get and thumbnail run concurrently with each other and with one writer
 * (put, delete, ingest, remove, retrain); writers are serialized. A search sees a product
 * either completely (metadata, all images, vectors) or not at all: a write updates the store
 * in one SQLite transaction and the in-memory index under a short exclusive lock; the query
 * image is described before that lock is taken, so writers wait only for index lookups.
 * Several processes may open one store (e.g. `shoplens serve` and `shoplens add`): a handle sees
 * another process's commits after sl_engine_refresh (cheap when nothing changed; a server calls
 * it every few seconds).
 * Errors: every call takes an optional sl_error *err (thread-safe; no per-handle last error).
 * Privacy: query images are never written to the store, to files or to any log.
 * Ownership: result structs are filled by the engine and released with their *_free function;
 * inputs are copied and never retained.
 */
#ifndef SHOPLENS_ENGINE_H
#define SHOPLENS_ENGINE_H

#include <stddef.h>
#include <stdint.h>
#include "shoplens/error.h"
#include "shoplens/image.h"
#include "shoplens/learn.h"
#include "shoplens/store.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sl_engine sl_engine;

/* ---- tunables ------------------------------------------------------------------------------ */
#define SL_ENGINE_K_DEFAULT 10
#define SL_ENGINE_K_MIN 1
#define SL_ENGINE_K_MAX 1000
/* Paging through a result list: offset + k <= SL_ENGINE_RANK_MAX (the deepest rank served). */
#define SL_ENGINE_OFFSET_MAX (SL_ENGINE_K_MAX - 1)
#define SL_ENGINE_RANK_MAX SL_ENGINE_K_MAX
/* Image candidates fetched from the index per requested product (products have several
 * images) and, when verifying, how many of them are re-ranked geometrically (by default the
 * number the feature spec asks for, "verify:n=", see sl_features_verify_top_n). */
#define SL_ENGINE_CANDIDATES_DEFAULT 100
#define SL_ENGINE_CANDIDATES_MIN 10
#define SL_ENGINE_CANDIDATES_MAX 10000
#define SL_ENGINE_VERIFY_TOP_DEFAULT 100
#define SL_ENGINE_VERIFY_TOP_MIN 0
#define SL_ENGINE_VERIFY_TOP_MAX 1000
/* References (a trained store's labelled photos, ids >= SL_STORE_REF_ID_BASE) verified per
 * query vector: search verifies the first SL_ENGINE_VERIFY_REFS references among its first
 * verify-top candidates (the others keep their global score; catalog images are verified as
 * before), and check scores references with the verifications of the query's own ranking (it
 * verifies none again). A product's references count through their best one, and the best ones
 * by global score are the first candidates; photos carry about twice a packshot's local
 * features, so verifying every reference among 100 candidates cost about a third more CPU per
 * search for the same grocery hit@1 (docs/learn.md, "References"). */
#define SL_ENGINE_VERIFY_REFS 5
/* Score added to products matching the text in SL_TEXT_BOOST mode (before the division that
 * keeps scores in -1..1, see sl_match). */
#define SL_ENGINE_TEXT_BOOST_DEFAULT 0.1
/* sl_engine_dedup: images closer than this (cosine similarity) are duplicate candidates. */
#define SL_ENGINE_DEDUP_THRESHOLD_DEFAULT 0.95
#define SL_ENGINE_DEDUP_THRESHOLD_MIN 0.0
#define SL_ENGINE_DEDUP_THRESHOLD_MAX 1.0
/* Images sampled from the first ingested catalog to train the learned parts. */
#define SL_ENGINE_TRAIN_SAMPLE_DEFAULT 2000
#define SL_ENGINE_TRAIN_SAMPLE_MIN 1
#define SL_ENGINE_TRAIN_SAMPLE_MAX 100000
/* Memory for the local features of recently verified catalog images, kept decoded so a
 * candidate verified again skips the store read (MiB; 0 disables the cache). */
#define SL_ENGINE_LOCAL_CACHE_MB_DEFAULT 64
#define SL_ENGINE_LOCAL_CACHE_MB_MIN 0
#define SL_ENGINE_LOCAL_CACHE_MB_MAX 65536
/* Candidate list length of the HNSW searches of stores above the crossover (docs/index.md, "At
 * scale"): recall against time. Measured at 10^5 images (bench/results/scale.md), recall@100 of
 * the candidate stage against an exact scan: 0.979 at ef 200, 0.991 at 300, 0.996 at 400, for
 * +8-12 % and +21-23 % of its CPU time; 300 is the smallest measured value above 0.98. */
#define SL_ENGINE_HNSW_EF_DEFAULT 300
#define SL_ENGINE_HNSW_EF_MIN 16
#define SL_ENGINE_HNSW_EF_MAX 4096
/* Up to this many indexed images the automatic ef is SL_ENGINE_HNSW_EF_DEFAULT; above, it grows
 * by SL_ENGINE_HNSW_EF_DEFAULT per decade of images (sl_engine_hnsw_ef_auto). Measured at 10^6
 * images (bench/results/scale.md): recall@100 0.951 at ef 300, 0.985 at ef 600. */
#define SL_ENGINE_HNSW_EF_SCALE_FROM 100000
/* Longest side catalog and query images are decoded at (shrink-on-load). */
#define SL_ENGINE_MAX_SIDE_DEFAULT 640
#define SL_ENGINE_MAX_SIDE_MIN 64
#define SL_ENGINE_MAX_SIDE_MAX 4096
/* A search region (sl_query.region_*) is at least this many pixels on each side; coordinates
 * and sizes above SL_ENGINE_REGION_COORD_MAX are refused when parsed. */
#define SL_ENGINE_REGION_MIN 16
#define SL_ENGINE_REGION_COORD_MAX 1000000
/* The store keeps its own copy of every catalog image (images/<sha256 of the copy>.<ext>), so
 * that thumbnails, retraining and `shoplens verify` never depend on the feed's files: the
 * original bytes when its longest side is at most SL_ENGINE_COPY_MAX_SIDE pixels, else the image
 * decoded at that longest side and encoded as JPEG of quality SL_ENGINE_COPY_QUALITY. 1024
 * serves every thumbnail the API offers (up to 1024 px) and retraining at the default decode
 * size (640) and above, at about a tenth of the bytes of a 12 Mpx photo (4000 x 3000 generated
 * shopper photos of 0.49-1.13 MB: copies of 68-99 KB); quality 90 keeps JPEG artefacts below
 * what the 640-pixel decode for features resolves. Vectors made by `retrain` come from the
 * copies (identical bytes for originals up to 1024 px). */
#define SL_ENGINE_COPY_MAX_SIDE 1024
#define SL_ENGINE_COPY_QUALITY 90
/* sync removes at most this share of the stored products unless told otherwise (rounded up). */
#define SL_ENGINE_SYNC_MAX_REMOVALS_PERCENT_DEFAULT 10.0

/* ---- opening ------------------------------------------------------------------------------- */

typedef struct sl_engine_opts {
    int create;             /* nonzero: create the store when absent (shoplens init) */
    const char *features;   /* with create: feature spec of a new store (NULL = default);
                               refused (SL_E_STATE) when it differs from an existing store's */
    int read_only;          /* nonzero: no writes; several readers may open one store */
    const char *index_kind; /* "flat", "hnsw" or NULL/"auto" (flat up to 50000 images, HNSW
                               above: decided when the index is built and after each ingest
                               or sl_engine_put_described);
                               recorded at creation */
    int no_index;           /* nonzero: no vector index is loaded or kept: writes, product
                               reads, check and query description only (searches, similar,
                               classify and dedup answer SL_E_STATE). What a cluster's workers
                               and write front ends use on the shared store. */
} sl_engine_opts;

/* Opens (or creates) the store in dir (NULL = sl_store_default_dir()), loads the features and
 * the index (rebuilding the index from the store's vectors when its file is missing or behind).
 * opts may be NULL (open existing, read-write). Errors: as sl_store_open, plus SL_E_CORRUPT /
 * SL_E_VERSION from the features file. On failure *out = NULL. */
sl_status sl_engine_open(const char *dir, const sl_engine_opts *opts, sl_engine **out,
                         sl_error *err);
/* Saves the index when it changed, then frees. NULL is a no-op. */
void sl_engine_free(sl_engine *e);

/* The underlying store (owned by the engine). Use for metadata reads only. */
sl_store *sl_engine_store(sl_engine *e);

/* Picks up changes committed by another process (store generation moved): reloads features
 * when retrained and brings the index up to date. Cheap when nothing changed. */
sl_status sl_engine_refresh(sl_engine *e, sl_error *err);

/* Persists the index file now (done by sl_engine_free and at the end of an ingest). */
sl_status sl_engine_flush(sl_engine *e, sl_error *err);

/* Setters for the tunables above (clamped to MIN..MAX). Not for use while other threads call. */
void sl_engine_set_candidates(sl_engine *e, int n);
void sl_engine_set_verify_top(sl_engine *e, int n);
void sl_engine_set_max_side(sl_engine *e, int side);
/* Budget of the verification cache in MiB (clamped; 0 turns it off and frees it). */
void sl_engine_set_local_cache_mb(sl_engine *e, int mb);
/* HNSW candidate list length (clamped); used from the next search on. ef <= 0 (the default):
 * automatic, sl_engine_hnsw_ef_auto of the index's size at each search. */
void sl_engine_set_hnsw_ef(sl_engine *e, int ef);
/* The automatic ef for an index of n images: SL_ENGINE_HNSW_EF_DEFAULT up to
 * SL_ENGINE_HNSW_EF_SCALE_FROM images, then SL_ENGINE_HNSW_EF_DEFAULT x (1 + log10(n /
 * SL_ENGINE_HNSW_EF_SCALE_FROM)) rounded up (600 at 10^6 images, 900 at 10^7; only 10^5 and
 * 10^6 are measured), at most SL_ENGINE_HNSW_EF_MAX. Non-decreasing in n. */
int sl_engine_hnsw_ef_auto(uint64_t n);

/* ---- search -------------------------------------------------------------------------------- */

/* How --text / q= combines with the image ranking. */
typedef enum sl_text_mode {
    SL_TEXT_RESTRICT = 0,   /* only products whose title/description match (default) */
    SL_TEXT_BOOST = 1       /* all products; matching ones get SL_ENGINE_TEXT_BOOST_DEFAULT */
} sl_text_mode;

/* A query. Zero-initialize, then set what you need: zeros mean k = SL_ENGINE_K_DEFAULT and
 * no filter. Filters are applied inside the index search (an allowed-id set), never after,
 * so k results are returned whenever k products pass the filter. */
typedef struct sl_query {
    int k;
    int offset;                     /* skip this many products first (paging): 0..
                                       SL_ENGINE_OFFSET_MAX with offset + k <= SL_ENGINE_RANK_MAX
                                       (SL_E_INVALID otherwise). Pages of one ranking: the
                                       results of (k, offset) are ranks offset+1..offset+k of
                                       the query with k' = offset + k. */
    const char *category;           /* exact category, NULL = any */
    double min_price, max_price;    /* inclusive; used when has_min_price / has_max_price */
    int has_min_price, has_max_price;
    const char *text;               /* FTS5 words on title + description, NULL = none */
    sl_text_mode text_mode;
    /* Search only this rectangle of the query image when region_w > 0: pixels of the image as
     * given, upright (after EXIF orientation, as a browser shows it), x/y from its top-left
     * corner. It is cut out before any feature is computed (from a larger decode when the
     * image is big and the region small, so the region keeps its detail). It must lie inside
     * the image and be at least SL_ENGINE_REGION_MIN pixels on each side, else SL_E_INVALID
     * naming the image size. Ignored by sl_engine_similar. */
    int region_x, region_y, region_w, region_h;
    /* HNSW candidate list length of this search (the ef of Malkov & Yashunin 2018): 0 = the
     * engine's (sl_engine_set_hnsw_ef; unless set, sl_engine_hnsw_ef_auto of the index size), else
     * SL_ENGINE_HNSW_EF_MIN..SL_ENGINE_HNSW_EF_MAX (SL_E_INVALID naming the range otherwise).
     * Larger finds more of the exact nearest images for more time (docs/index.md, "At scale").
     * A store searched by exact scan (flat, up to the crossover) accepts and ignores it. */
    int ef;
} sl_query;

/* Parses a region "x,y,w,h" (four decimal integers, no spaces, each at most
 * SL_ENGINE_REGION_COORD_MAX, w and h at least 1) into q's region fields. SL_E_INVALID (message
 * says what is wrong) leaves q unchanged. Whether it fits the image is checked when searching. */
sl_status sl_engine_parse_region(const char *text, sl_query *q, sl_error *err);

/* One product in a result list. Scores and confidence (docs/learn.md):
 *  - score: the product's best image's, -1..1, higher is better: the global cosine similarity,
 *    or with verification (g + w v) / (1 + w) where v in 0..1 grows with the RANSAC inliers and
 *    w is the spec's verify weight; in SL_TEXT_BOOST mode (score + 0.1 t) / 1.1, t = 1 for
 *    products matching the text.
 *  - confidence: 0..1, the calibrated probability that the product is the one in the photo (the
 *    store's calibration, map SL_CALIB_RESULT, of the image score against the photo's nearest
 *    other products, filters not applied); never reorders results. For `similar` the query is
 *    the product's own images: confidence then says how likely the result is the same product
 *    (e.g. a duplicate listing).
 *  - match: confidence >= the calibration's operating point (learn.h). */
typedef struct sl_match {
    char *product_id;
    double score;           /* -1..1, see above */
    double confidence;      /* 0..1 */
    int match;              /* nonzero: confidence reaches the operating point */
    char *title;
    char *category;
    double price;           /* valid when has_price */
    int has_price;
    int64_t image_id;       /* the product's best-matching catalog image */
    char *image;            /* that image's source path (the store's copy for an upload) */
    int inliers;            /* geometric verification inliers of that image, -1 if not verified */
    char *url;              /* the product's page ("" when none) */
    char *currency;         /* ISO 4217 code of price ("" when unknown) */
} sl_match;

typedef struct sl_matches {
    sl_match *items;        /* best first */
    size_t n;
} sl_matches;

/* Frees the contents and zeroes *m; NULL is a no-op. */
void sl_matches_free(sl_matches *m);

/* Searches with a decoded image. q may be NULL (defaults). *out is filled (possibly n = 0). */
sl_status sl_engine_search(sl_engine *e, const sl_image *img, const sl_query *q,
                           sl_matches *out, sl_error *err);
/* Same from encoded bytes (any format image.h decodes; limits of sl_image_load_buffer).
 * Decode errors are returned as is (SL_E_UNSUPPORTED, SL_E_CORRUPT, SL_E_TOO_LARGE). */
sl_status sl_engine_search_bytes(sl_engine *e, const void *data, size_t len, const sl_query *q,
                                 sl_matches *out, sl_error *err);
/* Same from a file. */
sl_status sl_engine_search_file(sl_engine *e, const char *path, const sl_query *q,
                                sl_matches *out, sl_error *err);

/* A catalog image found by sl_engine_nearest. */
typedef struct sl_image_hit {
    int64_t image_id;
    double score;           /* cosine similarity of the global vectors */
} sl_image_hit;

/* The candidate stage alone, for a global vector (sl_engine_describe): the k catalog images
 * nearest to vec (dim = the store's), q's filters applied inside the index search as in
 * sl_engine_search, with exact scores, best first. No re-ranking, no grouping by product. out
 * holds k entries; *n_out receives how many were found. k: 1..SL_ENGINE_CANDIDATES_MAX.
 * Errors: SL_E_INVALID (k, dim or vec), SL_E_STATE (no trained features). */
sl_status sl_engine_nearest(sl_engine *e, const float *vec, size_t dim, const sl_query *q, size_t k,
                            sl_image_hit *out, size_t *n_out, sl_error *err);

/* Products that look like product_id (itself excluded): each of its images queries the index,
 * a product's score is its best. q filters apply. SL_E_NOT_FOUND for an unknown product. */
sl_status sl_engine_similar(sl_engine *e, const char *product_id, const sl_query *q,
                            sl_matches *out, sl_error *err);

/* ---- products ------------------------------------------------------------------------------ */

/* Metadata of a product and its images. *images (may be NULL to skip) is freed with
 * sl_image_refs_free. SL_E_NOT_FOUND when absent. */
sl_status sl_engine_get_product(sl_engine *e, const char *product_id, sl_product *out,
                                sl_image_ref **images, size_t *n_images, sl_error *err);

/* An image given for a product: either a file path (recorded as its source) or encoded bytes.
 * Either way the store keeps its own copy (SL_ENGINE_COPY_MAX_SIDE). */
typedef struct sl_image_input {
    const char *path;       /* used when data is NULL */
    const void *data;
    size_t len;
} sl_image_input;

/* What a put changed. */
typedef enum sl_put_outcome { SL_PUT_ADDED = 0, SL_PUT_UPDATED = 1, SL_PUT_UNCHANGED = 2 }
    sl_put_outcome;

/* Inserts or replaces a product: metadata as given; its images become exactly the given ones
 * (images with the same content hash are kept without re-extraction, others are extracted,
 * old ones not given are removed). n_images may be 0 only to update metadata of an existing
 * product (its images stay). All or nothing: on failure the store is unchanged. The first put
 * into a store whose features need training trains them on these images.
 * Errors: SL_E_INVALID (bad id), image decode errors (the message names the image index). */
sl_status sl_engine_put_product(sl_engine *e, const sl_product *p, const sl_image_input *images,
                                size_t n_images, sl_put_outcome *outcome, sl_error *err);

/* Partial update: applies a JSON merge patch (RFC 7396; fields as sl_product_apply_json) to
 * the metadata of an existing product, atomically with respect to other writers. patch may be
 * NULL (metadata unchanged). n_images > 0: the product's images become exactly these, as in
 * sl_engine_put_product; 0: they stay. Errors: SL_E_NOT_FOUND, SL_E_INVALID (the message names
 * the field), as sl_engine_put_product. */
sl_status sl_engine_patch_product(sl_engine *e, const char *product_id, const char *patch,
                                  size_t patch_len, const sl_image_input *images,
                                  size_t n_images, sl_put_outcome *outcome, sl_error *err);

/* Removes a product and its images (their files too, once no product uses them).
 * SL_E_NOT_FOUND when absent. */
sl_status sl_engine_delete_product(sl_engine *e, const char *product_id, sl_error *err);

/* ---- images described elsewhere ------------------------------------------------------------ */

/* Describes a decoded image with the store's features, exactly as sl_engine_put_product would
 * before storing it: *vec the global vector (*dim floats, malloc'ed), *local the serialized
 * local features (malloc'ed; NULL/0 when the features do not verify; local and local_len may be
 * NULL to skip them), *features_version the version of the features used. For query vectors
 * (sl_engine_nearest) and analysis; sl_engine_describe_bytes makes a whole catalog image's
 * descriptor. Thread-safe; runs in parallel with searches. Errors: SL_E_STATE before the first
 * training (empty store), SL_E_NOMEM; on failure every output is NULL/0. */
sl_status sl_engine_describe(sl_engine *e, const sl_image *img, float **vec, size_t *dim,
                             void **local, size_t *local_len, int64_t *features_version,
                             sl_error *err);

/* Everything sl_engine_put_described stores for a catalog image: its identity, the store's copy
 * of its pixels, and its descriptors with the version of the features that made them.
 * sl_engine_describe_bytes fills one (owned: release with sl_image_descriptor_clear); a caller
 * may also fill one itself (then it owns and frees the parts, and never calls clear). */
typedef struct sl_image_descriptor {
    char *source;           /* where the image came from (path or URL), informational; may be
                               NULL */
    char hash[65];          /* SHA-256 of the image bytes, 64 lowercase hex digits: its identity
                               (an image the product already has with this hash is kept) */
    int64_t size;           /* bytes of the image */
    void *copy;             /* the store's copy of the image (SL_ENGINE_COPY_MAX_SIDE): encoded
                               bytes of format copy_ext ("jpeg", "png", "webp", "gif", "tiff" or
                               "heif"; their signature is checked), written to the store ... */
    size_t copy_len;
    char copy_ext[16];
    char *file;             /* ... or, when copy is NULL, a copy already in this store,
                               "images/<64 hex digits>.<ext>" or that path under the store's
                               directory (sl_image_ref.file): shared with the images naming it */
    float *vec;             /* the global vector, dim floats */
    size_t dim;
    void *local;            /* serialized local features; present exactly when the store's
                               features verify */
    size_t local_len;
    int64_t features_version; /* the store's features version that made vec and local */
} sl_image_descriptor;

/* Frees the parts of a descriptor filled by sl_engine_describe_bytes and zeroes it; NULL is a
 * no-op. */
void sl_image_descriptor_clear(sl_image_descriptor *d);

/* Reads, hashes, decodes and describes the encoded bytes of a catalog image (any format
 * sl_image_load_buffer decodes) and makes the store's copy of it, exactly as
 * sl_engine_put_product would: *out is ready for sl_engine_put_described, here or in another
 * process holding the same store's features. source (may be NULL) is recorded as is.
 * Thread-safe. Errors: the decode errors of sl_image_load_buffer, SL_E_STATE before the first
 * training, SL_E_NOMEM; on failure *out is zeroed. */
sl_status sl_engine_describe_bytes(sl_engine *e, const void *data, size_t len, const char *source,
                                   sl_image_descriptor *out, sl_error *err);

typedef struct sl_described_product {
    const sl_product *product;
    const sl_image_descriptor *images;
    size_t n_images;        /* 0: metadata only (the product must exist, its images stay) */
} sl_described_product;

/* Writes n products with precomputed descriptors, like n sl_engine_put_product calls that read,
 * decode and describe nothing, in ONE transaction: all are durable together when it returns
 * SL_OK, none on failure. Each product's images become exactly the given ones (kept by hash, as
 * put). For bulk loads and for images described elsewhere (other machines); the index is
 * updated under the exclusive lock, so concurrent searches wait for the batch: keep batches to
 * a few thousand images while serving. An "auto" store whose flat index grows past the
 * crossover switches to HNSW afterwards (as after an ingest). outcomes (may be NULL) receives n
 * outcomes. Errors, before anything is written: SL_E_STATE (read-only; no trained features yet
 * - add images first; descriptors of another features version, e.g. retrained since: describe
 * them again), SL_E_INVALID naming the product and image (bad product id or hash, vector of
 * another dimension, non-finite or zero, local features missing, undecodable or given to a store
 * that does not verify, a copy that is not of its format or an unknown file; a product without
 * images that does not exist), SL_E_IO (writing a copy). */
sl_status sl_engine_put_described(sl_engine *e, const sl_described_product *items, size_t n,
                                  sl_put_outcome *outcomes, sl_error *err);

/* ---- ingest of a feed (shoplens add / sync) ------------------------------------------------- */

/* Progress: called from the ingesting thread once with done = 0 when extraction starts (after
 * any training), then after products at most every 100 ms, and once at the end (done ==
 * total). elapsed_s counts from the start of extraction. */
typedef void (*sl_progress_fn)(void *ctx, size_t done, size_t total, double elapsed_s);

/* Image URLs (http/https) in feeds: fetched before extraction, jobs at once (8 when jobs is 0),
 * each attempt within fetch_timeout_s, retried fetch_retries times with backoff on transient
 * failures (see docs/cli.md). */
#define SL_ENGINE_FETCH_TIMEOUT_DEFAULT 30
#define SL_ENGINE_FETCH_TIMEOUT_MIN 1
#define SL_ENGINE_FETCH_TIMEOUT_MAX 600
#define SL_ENGINE_FETCH_RETRIES_DEFAULT 3
#define SL_ENGINE_FETCH_RETRIES_MIN 0
#define SL_ENGINE_FETCH_RETRIES_MAX 10
#define SL_ENGINE_FETCH_PARALLEL_DEFAULT 8

typedef struct sl_ingest_opts {
    int jobs;                   /* extraction threads and downloads at once; 0 = all cores
                                   (and SL_ENGINE_FETCH_PARALLEL_DEFAULT downloads) */
    int sync;                   /* nonzero: also remove products absent from the feed */
    int dry_run;                /* nonzero: read, hash and decode, report what would be added,
                                   updated and removed (report->*_ids), write nothing */
    const char *currency;       /* currency of rows that give none (NULL = none); 3 letters */
    /* sync: refuse (SL_E_STATE, before any change) when the feed would remove more products
     * than max_removals (when max_removals_set) or than max_removals_percent of the stored
     * products, rounded up (0 = SL_ENGINE_SYNC_MAX_REMOVALS_PERCENT_DEFAULT). A feed without
     * any row is always refused. */
    size_t max_removals;
    int max_removals_set;
    double max_removals_percent;
    size_t train_sample;        /* 0 = SL_ENGINE_TRAIN_SAMPLE_DEFAULT */
    double fetch_timeout_s;     /* per download attempt; 0 = SL_ENGINE_FETCH_TIMEOUT_DEFAULT */
    int fetch_retries;          /* further attempts after a transient failure; used when
                                   fetch_retries_set, else SL_ENGINE_FETCH_RETRIES_DEFAULT */
    int fetch_retries_set;
    sl_progress_fn progress;    /* may be NULL */
    void *progress_ctx;
    sl_progress_fn fetch_progress; /* downloads done of total (distinct URLs), may be NULL */
    void *fetch_progress_ctx;
    volatile int *cancel;       /* may be NULL; set nonzero to stop (SL_E_INTERRUPTED) */
    int no_wait;                /* a cluster store: return once every product is queued; the
                                   workers commit them later (report->queued counts them) */
    /* Progress of an automatic catalog calibration at the end of the run (sl_engine_calibrate:
     * augmented copies done, total), may be NULL. */
    sl_progress_fn calib_progress;
    void *calib_progress_ctx;
} sl_ingest_opts;

/* One failed row (or product). */
typedef struct sl_ingest_failure {
    size_t row;                 /* 1-based data row / line of the feed; 0 = not row-specific */
    char *product_id;           /* may be NULL (row without a parsable id) */
    char *file;                 /* the image path named by the row, may be NULL */
    sl_status status;
    char *message;
} sl_ingest_failure;

/* A list of product ids (malloc'ed strings). */
typedef struct sl_id_list {
    char **ids;
    size_t n;
} sl_id_list;

typedef struct sl_ingest_report {
    size_t rows;                /* data rows read */
    size_t products;            /* distinct product ids in the feed */
    size_t added, updated, skipped, removed; /* products (dry run: would be) */
    size_t failed;              /* rows that failed (their product is not written) */
    size_t images_extracted;    /* images whose features were computed */
    double seconds;
    sl_ingest_failure *failures;
    size_t n_failures;
    int calibrated;             /* nonzero: the run ended with an automatic catalog calibration
                                   (a cluster store: after the workers committed the products;
                                   never with no_wait) */
    char *calibration_error;    /* why that calibration failed (the products are committed and
                                   the previous calibration stays), NULL when it did not */
    int dry_run;                /* nothing was written */
    sl_id_list added_ids, updated_ids, removed_ids; /* the products counted above, in feed
                                   order (removed: by id) */
    char *refused;              /* dry run of a sync: why the real run would be refused (the
                                   bound or an empty feed), NULL when it would go ahead */
    size_t queued;              /* a cluster store with no_wait: products left to the workers
                                   (not counted as added or updated) */
} sl_ingest_report;

void sl_ingest_report_free(sl_ingest_report *r);

/* Ingests a CSV or JSONL feed with upsert semantics. Image paths are relative to the feed's
 * directory; the store keeps its own copy of every image (SL_ENGINE_COPY_MAX_SIDE). A product is committed (durable) with all its images at once, in feed order; a
 * product with any failed row is not written (its rows are reported) and keeps its previous
 * state. Extraction runs on opts->jobs threads. Trains the learned parts first when the store
 * has none yet (on a deterministic sample of the feed's images). Crash-safe: after a kill at
 * any point, ingesting the same feed again yields the same store as an uninterrupted run.
 * Returns SL_OK when the run completed (even with failed rows: see report->failed), or an
 * error that stopped the whole run (unreadable feed, store write failure, cancel). */
sl_status sl_engine_ingest(sl_engine *e, const char *catalog_path, const sl_ingest_opts *opts,
                           sl_ingest_report *report, sl_error *err);

/* Re-learns the learned parts from a sample of the stored images (the store's copies),
 * re-extracts every image and rebuilds the index; then calibrates from the catalog
 * (sl_engine_calibrate; its failure is not the retrain's: the store then uses the fallback until
 * calibrated). On a cluster store the images are re-described in this process, in one
 * PostgreSQL transaction that holds the features version row (workers and API writes wait for
 * it, then describe with the new features); the search nodes make new copies from its log
 * entry. SL_E_BUSY when another process changed the features meanwhile (nothing changed). */
sl_status sl_engine_retrain(sl_engine *e, const sl_ingest_opts *opts, sl_error *err);

/* ---- learning from the shop's photos (shoplens train) -------------------------------------- */

/* A photo known to show a product (a review photo, a confirmed search, a staff photo). */
typedef struct sl_train_photo {
    const char *path;
    const char *product_id;
} sl_train_photo;

typedef struct sl_train_opts {
    const sl_train_photo *photos; /* NULL / 0: train from augmented catalog images alone */
    size_t n_photos;
    const sl_head_train_opts *head; /* NULL = defaults (learn.h) */
    uint64_t seed;              /* used when has_seed (head initialisation, batches, augmentation) */
    int has_seed;
    int jobs;                   /* threads describing photos and multiplying matrices; 0 = all
                                   cores; the result does not depend on it */
    sl_progress_fn progress;    /* photos described so far (done, total), may be NULL */
    void *progress_ctx;
    volatile int *cancel;       /* may be NULL; nonzero stops with SL_E_INTERRUPTED, store unchanged */
    sl_progress_fn calib_progress; /* the calibration after training (sl_engine_calibrate), may be NULL */
    void *calib_progress_ctx;
    int no_references;          /* nonzero: the labelled photos train the head only; otherwise
                                   they also become the references of their products (store.h),
                                   replacing the previous ones (a run without photos or with this
                                   set removes them). A PostgreSQL store keeps none. */
} sl_train_opts;

typedef struct sl_train_failure {
    char *file;                 /* the photo, may be NULL */
    char *product_id;           /* may be NULL */
    sl_status status;
    char *message;
} sl_train_failure;

typedef struct sl_train_report {
    size_t photos;              /* photos (or augmented copies) the head was trained on */
    size_t products;            /* products they show */
    size_t unknown;             /* photos naming a product the store does not have (skipped) */
    size_t failed;              /* photos that could not be read or described (skipped) */
    int augmented;              /* nonzero: trained from augmented catalog images */
    int64_t features_version;   /* the new features version */
    double describe_seconds, train_seconds, seconds;
    sl_train_failure *failures; /* unknown and failed photos (not for augmented copies) */
    size_t n_failures;
    sl_calib_info calibration;  /* the calibration fitted after the head (source SL_CALIB_NONE
                                   when it failed: see calibration_error) */
    char *calibration_error;    /* NULL, or why the calibration failed (the head is installed) */
    size_t references;          /* labelled photos installed as references of their products */
    size_t calibration_heldout; /* labelled photos held out of the head's training to calibrate
                                   it (through a stand-in head trained on the others); 0: too few
                                   photos, calibrated on all of them through the head itself, or
                                   from the catalog */
    double head_lambda;         /* the head's map: its lambda (>= 0), -1 = no head (validation kept
                                   the identity), -2 = centring only (learn.h sl_head_choice) */
    size_t prototypes;          /* trained labels the head mixes its output with (0: none; learn.h
                                   sl_head_prototypes) and their weight */
    double prototype_weight;
} sl_train_report;

void sl_train_report_free(sl_train_report *r);

/* Learns a projection head for the store's global descriptors (learn.h): photos of a product are
 * pulled towards its catalog images and away from other products, the products' categories as
 * weaker labels. The catalog's stored descriptors are used as they are (nothing is
 * re-described); the photos are described once. The head and a calibration of confidence for it
 * are saved with the features as one new features version, then committed in one transaction
 * and the index rebuilt through the head; later ingests and every query apply it. The
 * calibration comes from photos the head did not learn from: the photos of a seeded set of
 * products (whole products until a quarter of the photos, at least 30, at most 1,000; the same for
 * a seed and any number of jobs) are held out of a stand-in head trained like the final one
 * (sl_head_train_as) on the other products' photos, and calibrated through it on a private copy
 * of the query path (the check map; when the photos become references, on check's scores with
 * them: that private copy holds every photo as a reference and scores each held-out photo
 * without its own); the search map comes from all photos (at most 1,000)
 * through the final head; the final head is trained on all photos. With fewer than 60 photos the calibration uses all of them through the final head
 * (optimistic); without photos, pseudo shopper photos of the catalog. When the calibration
 * fails the head is installed without one (report->calibration_error). Interrupted or killed
 * at any point, the store stays on its previous features. Training again replaces the head; `retrain` (new codebook) drops it.
 * Errors: SL_E_STATE (read-only, empty store), SL_E_INVALID (no usable photo: every photo is
 * then listed in the report), head training errors, SL_E_INTERRUPTED, store errors. */
sl_status sl_engine_train(sl_engine *e, const sl_train_opts *opts, sl_train_report *report,
                          sl_error *err);

/* ---- calibrated confidence (shoplens calibrate; learn.h) ------------------------------------ */

typedef struct sl_calibrate_opts {
    const sl_train_photo *photos; /* labelled photos; NULL / 0: shelf photos of the catalog images */
    size_t n_photos;
    uint64_t seed;              /* used when has_seed: which photos, copies and negatives */
    int has_seed;
    double far;                 /* operating point's false accept bound, 0 = SL_CALIB_FAR_DEFAULT */
    int jobs;                   /* threads; 0 = all cores; the result does not depend on it */
    sl_progress_fn progress;    /* photos (or copies) done, may be NULL */
    void *progress_ctx;
    volatile int *cancel;       /* may be NULL; nonzero stops with SL_E_INTERRUPTED, store unchanged */
} sl_calibrate_opts;

typedef struct sl_calibrate_report {
    size_t photos;              /* photos (or copies) that gave pairs */
    size_t products;            /* distinct products they show */
    size_t unknown, failed;     /* photos skipped: product not in the store, unreadable */
    int augmented;              /* nonzero: from shelf photos of the catalog images */
    int64_t features_version;   /* the new features version */
    double seconds;
    sl_calib_info info;         /* the fitted calibration */
    sl_train_failure *failures; /* unknown and failed photos (not for augmented copies) */
    size_t n_failures;
} sl_calibrate_report;

void sl_calibrate_report_free(sl_calibrate_report *r);

/* Fits the store's calibration (learn.h) and installs it as a new features version (the index
 * is kept: scores do not change, only their confidence). With photos, each photo (at most
 * 1,000, an evenly spaced sample) is a genuine pair with its product; without, shelf photos of
 * the catalog images (6 per image, 40..600 in all; learn.h sl_learn_shelf_photo, each between
 * SL_LEARN_SHELF_OTHERS images of other products of the store) are. Negatives: each photo against 16 random
 * other products (check) and the first wrong products of its result list, with and without its
 * product in the catalog (search). Deterministic for (store, photos, seed). Interrupted or killed,
 * the store keeps its previous calibration. Errors: SL_E_STATE (read-only, no catalog),
 * SL_E_INVALID (too few usable photos or products: a calibration needs 20 genuine pairs and 50
 * negatives per map), SL_E_INTERRUPTED, store and image errors. The store calibrates itself from
 * its catalog at the first ingest reaching 5 products, when an ingest finds the catalog twice the
 * size its catalog calibration saw, at the first put reaching 5 products, after retrain and after
 * train (from train's photos when given). */
sl_status sl_engine_calibrate(sl_engine *e, const sl_calibrate_opts *opts, sl_calibrate_report *rep,
                              sl_error *err);

/* The store's calibration now (source SL_CALIB_NONE: none, the fallback applies). */
sl_status sl_engine_calibration(sl_engine *e, sl_calib_info *out, sl_error *err);

/* ---- duplicates, classification, review photos ------------------------------------------- */

typedef struct sl_dup_group {
    int64_t *image_ids;         /* >= 2 images, of >= 2 different products */
    char **product_ids;         /* product of each image (parallel to image_ids) */
    size_t n;
    double score;               /* lowest pairwise similarity that joined the group */
} sl_dup_group;

typedef struct sl_dup_groups {
    sl_dup_group *groups;
    size_t n;
} sl_dup_groups;

void sl_dup_groups_free(sl_dup_groups *g);

/* Groups of near-duplicate images across different products: pairs with similarity >=
 * threshold (0 = default), confirmed by geometric verification when the spec uses verify,
 * joined transitively. Sorted by first image id. */
sl_status sl_engine_dedup(sl_engine *e, double threshold, sl_dup_groups *out, sl_error *err);

typedef struct sl_category_vote {
    char *category;
    double weight;              /* share of the vote, sums to 1 over all entries */
} sl_category_vote;

typedef struct sl_classification {
    char *category;             /* the winner, NULL when the catalog is empty */
    double confidence;          /* its share of the vote, 0..1 */
    sl_category_vote *votes;    /* all categories that got votes, best first */
    size_t n_votes;
} sl_classification;

void sl_classification_free(sl_classification *c);

/* Likely category of a photo: a similarity-weighted vote of its k nearest catalog images
 * (k <= 0: 10). */
sl_status sl_engine_classify(sl_engine *e, const sl_image *img, int k, sl_classification *out,
                             sl_error *err);

typedef struct sl_check_result {
    int match;                  /* nonzero: confidence >= threshold */
    double confidence;          /* 0..1: calibrated probability that the photo shows the product
                                   (map SL_CALIB_PAIR of learn.h) */
    double score;               /* the product's score against the photo, -1..1, as search gives
                                   it (sl_match.score): its best catalog image's score, with
                                   references the mean with its best reference's put on the
                                   catalog's scale of this photo */
    int64_t image_id;           /* that catalog image (0 when the product has no image; never a
                                   reference) */
    char *image;                /* its source path (malloc'ed) */
    int inliers;                /* -1 when not verified */
    double threshold;           /* the confidence threshold applied */
} sl_check_result;

void sl_check_result_free(sl_check_result *r);

/* Does this photo (e.g. a review photo) show this product? Compares the photo with each of the
 * product's images (global similarity, verified geometrically when the spec uses verify) and,
 * when the store keeps references (the labelled photos of `train`, store.h), with the product's
 * references (the 5 best by global similarity verified), folded into its score exactly as
 * search folds them for this photo (the mean of the catalog score and the best reference's
 * score put on the catalog's scale, docs/learn.md "References"; none with a store trained with
 * no_references), and with its nearest other products (the match score of learn.h, from the
 * same ranking as search's), then applies the store's calibration (train fits it on these
 * scores, docs/learn.md). threshold: a confidence in 0..1; 0 = the calibration's operating point (at most
 * 2% of photos of other products accepted on the calibration data). SL_E_NOT_FOUND for an
 * unknown product, SL_E_INVALID for a threshold outside 0..1, SL_E_STATE on an engine opened
 * with no_index (the nearest other products need the index). */
sl_status sl_engine_check(sl_engine *e, const char *product_id, const sl_image *img,
                          double threshold, sl_check_result *out, sl_error *err);
/* The same for n products at once (the photo is described and ranked once): out[i] for
 * product_ids[i] (free each with sl_check_result_free). With status non-NULL, a product that
 * fails (SL_E_NOT_FOUND) gets status[i] and a zeroed result and the others go on; with status
 * NULL the first failure fails the call (then every out[i] is zeroed). */
sl_status sl_engine_check_products(sl_engine *e, const sl_image *img, const char *const *product_ids,
                                   size_t n, double threshold, sl_check_result *out, sl_status *status,
                                   sl_error *err);

/* ---- catalog views ------------------------------------------------------------------------ */

/* Categories with product counts (see sl_store_categories). */
sl_status sl_engine_categories(sl_engine *e, char ***names, int64_t **counts, size_t *n,
                               sl_error *err);

typedef struct sl_engine_stats {
    int64_t products, images;
    int64_t indexed;            /* vectors in the index */
    size_t dim;                 /* global vector dimension (0 before training) */
    char features[512];         /* canonical feature spec */
    char index_kind[16];        /* "flat" or "hnsw" */
    int64_t db_bytes, index_bytes, features_bytes, images_bytes, total_bytes;
    int64_t generation;
    int64_t images_outside;     /* read from outside the store (schema 1 stores not copied in) */
    char quantization[2048];    /* the bf16 / int8 CNN part's quantization calibration on the
                                   catalog images (sl_features_calibration_describe); "" otherwise
                                   (the confidence calibration is sl_engine_calibration) */
} sl_engine_stats;

sl_status sl_engine_stats_get(sl_engine *e, sl_engine_stats *out, sl_error *err);
/* Number of images whose file does not exist (one stat per image; `shoplens info`). */
sl_status sl_engine_missing_files(sl_engine *e, int64_t *missing, sl_error *err);

/* A catalog image as a JPEG thumbnail whose longest side is at most max_side (0 = 256),
 * metadata stripped. *jpeg malloc'ed (free()). SL_E_NOT_FOUND for an unknown id; SL_E_IO when
 * its file is missing or does not decode (the message names the file). */
sl_status sl_engine_thumbnail(sl_engine *e, int64_t image_id, int max_side, void **jpeg,
                              size_t *len, sl_error *err);

/* ---- verification of a store (shoplens verify) ------------------------------------------- */

typedef struct sl_verify_problem {
    char *kind;                 /* "sqlite", "missing_file", "damaged_file", "outside_store",
                                   "no_features", "index", "orphan_file", "pending_deletion",
                                   "no_images" */
    char *subject;              /* what it is about: "image 17", "product P1", a file name */
    char *message;
    int repaired;               /* nonzero when --repair fixed it */
} sl_verify_problem;

typedef struct sl_verify_report {
    sl_verify_problem *items;
    size_t n;
    size_t problems;            /* items not repaired */
    int64_t products, images, files_checked;
} sl_verify_report;

typedef struct sl_verify_opts {
    int repair;                 /* fix what can be fixed: delete orphan and pending files, copy
                                   images from outside into the store, re-describe images
                                   without features, rebuild the index and text rows */
    int quick;                  /* check that files exist, without hashing their bytes */
} sl_verify_opts;

void sl_verify_report_free(sl_verify_report *r);

/* Checks the store: SQLite integrity, the full-text rows, every image row's features against
 * the feature pipeline (dimension, local features when it verifies) and against the index,
 * every image file (exists; bytes match its content-addressed name unless quick), files nobody
 * references, deletions still pending, products without images. Each finding is an item of
 * *r. Returns SL_OK when the check ran (look at r->problems), an error when it could not.
 * repair needs a read-write engine (SL_E_STATE otherwise). */
sl_status sl_engine_verify(sl_engine *e, const sl_verify_opts *opts, sl_verify_report *r,
                           sl_error *err);

/* ---- a cluster's search nodes (shoplens/cluster.h, docs/cluster.md) ---------------------------
 * A search node keeps its shard in a local store and answers the two phases of a distributed
 * search; the router describes the query, merges and slices. Merged, the phases give exactly
 * what sl_engine_search gives on one store holding every shard (same features, exact index):
 * phase 1 returns each shard's best `candidates` images per query vector (the depth the whole
 * search would use, since they may all come from one shard), the router keeps the best
 * `candidates` of all shards (ties by ascending image id) and flags the first `verify_top` of
 * them (of references only the first SL_ENGINE_VERIFY_REFS: sl_engine_verify_pick); phase 2
 * re-ranks exactly those on their shards and returns each shard's best products. */

/* An image of a product as the cluster's system of record holds it. */
typedef struct sl_replica_image {
    int64_t id;                 /* the cluster's image id (kept by the replica) */
    const char *source;
    const char *hash;           /* SHA-256 of the bytes as ingested */
    int64_t size;
    const char *file;           /* the store copy's name ("images/<sha256>.<ext>"; the replica
                                   does not hold the file: the cluster store does) */
    const float *vec;           /* dim floats (NULL: none) */
    size_t dim;
    const void *local;          /* serialized local features (NULL/0: none) */
    size_t local_len;
} sl_replica_image;

/* A product's state: its metadata and exactly these images, or removed. An image whose id is
 * SL_STORE_REF_ID_BASE or above is one of the product's references (store.h: a labelled photo,
 * indexed, never shown) under its index id: the replica keeps exactly those too (hash, size and
 * file are unused for them; vec is required). */
typedef struct sl_replica_product {
    const char *id;
    int removed;
    const sl_product *product;  /* when not removed */
    const sl_replica_image *images;
    size_t n;
} sl_replica_product;

/* Writes n product states into the engine's local store in one transaction, together with the
 * meta key/value (the change log position they reflect; key may be NULL), and updates the
 * index: afterwards the store holds each product exactly as given (idempotent). Images and
 * references keep the ids given. Errors: SL_E_STATE (a cluster store, read-only, or vectors of another
 * dimension than the features'), store errors (nothing applied). */
sl_status sl_engine_replicate(sl_engine *e, const sl_replica_product *v, size_t n,
                              const char *meta_key, const char *meta_value, sl_error *err);

/* The depths of a search with q on this engine: candidate images per query vector and how many
 * of the best are verified geometrically (0 when the features do not verify). SL_E_INVALID for
 * a bad k / offset (as sl_engine_search). */
sl_status sl_engine_plan(sl_engine *e, const sl_query *q, size_t *candidates, size_t *verify_top,
                         sl_error *err);

/* The version of the features the engine uses (meta "features_version"; 0 before training). */
int64_t sl_engine_features_version(sl_engine *e);

/* sl_engine_describe of a query photo's encoded bytes, decoded as sl_engine_search_bytes does
 * (q's region cut first; q may be NULL). Decode errors as there. */
sl_status sl_engine_describe_query_bytes(sl_engine *e, const void *data, size_t len, const sl_query *q,
                                         float **vec, size_t *dim, void **local, size_t *local_len,
                                         int64_t *features_version, sl_error *err);
/* The query of "similar products": the stored vectors of the product's images through the
 * gallery side of the features' head, as the index holds them (*n rows of *dim floats in *vecs,
 * malloc'ed) and their serialized local features ((*locals)[i] malloc'ed or
 * NULL, lengths in (*local_lens)[i]; free with sl_engine_product_query_free). SL_E_NOT_FOUND. */
sl_status sl_engine_product_query(sl_engine *e, const char *product_id, float **vecs, size_t *n,
                                  size_t *dim, void ***locals, size_t **local_lens, sl_error *err);
void sl_engine_product_query_free(float *vecs, void **locals, size_t *local_lens, size_t n);

/* One candidate image of phase 1 / 2. */
typedef struct sl_candidate {
    int64_t image_id;
    double score;               /* the index's score; with `reranked` its re-ranked score */
    int verify;                 /* phase 2: verify it geometrically */
    int reranked;               /* phase 2b: score and inliers are phase 2a's re-ranking of it
                                   (sl_engine_rerank_fold_parts): taken as they are, nothing is
                                   verified again */
    int inliers;                /* with reranked: its verification's inliers (-1: not verified) */
} sl_candidate;

/* Phase 1 on a shard: for each of nq query vectors (nq x dim floats) the best `candidates`
 * images of this engine that pass q's filters (q's text only when it restricts), never an image
 * of product `exclude` (may be NULL), best first with ties by ascending image id. lists[i]
 * receives a malloc'ed array of counts[i] entries. SL_E_STATE when dim is not the features'. */
sl_status sl_engine_candidates(sl_engine *e, const float *vecs, size_t nq, size_t dim,
                               const sl_query *q, const char *exclude, size_t candidates,
                               sl_candidate **lists, size_t *counts, sl_error *err);
/* Frees lists[0..nq) of sl_engine_candidates (not the arrays themselves) and zeroes counts. */
void sl_candidate_lists_clear(sl_candidate **lists, size_t *counts, size_t nq);
/* Phase 2 on a shard: re-ranks the candidates of each query vector i (lists[i], in the merged
 * order, with their verify flags) with its serialized local features (locals[i], NULL for
 * none), keeps each product's best image, applies q's text boost and returns this shard's best
 * `depth` products (score, then product id) with their metadata. Candidates unknown here are
 * skipped; candidates marked `reranked` keep their score and inliers (not verified again). */
sl_status sl_engine_rerank(sl_engine *e, const void *const *locals, const size_t *local_lens,
                           size_t nq, sl_candidate *const *lists, const size_t *counts,
                           const sl_query *q, size_t depth, sl_matches *out, sl_error *err);
/* References (store.h) enter a product's score through a fold whose scale is measured on each
 * query vector's whole candidate list (docs/learn.md, "References"): the mean and standard
 * deviation of the best scores of the K products best by their catalog images ([0]) and by
 * their references ([1]), and the lowest catalog candidate's score. Over a cluster every shard
 * holds part of the list: phase 2a re-ranks each shard's candidates and gives its part (its K
 * best of each kind and its lowest), sl_ref_fold_merge makes the whole list's fold of them,
 * phase 2b folds the candidates phase 2a re-ranked with it.
 * Merged so, the phases give exactly what one store holding every shard gives. */
typedef struct sl_ref_fold {
    double mean[2], sd[2];
    double lowest;              /* INFINITY: no catalog candidate */
} sl_ref_fold;
typedef struct sl_ref_fold_part {
    double *best[2];            /* per kind: the best score of each of the K products best by
                                   that kind, best first (malloc'ed) */
    size_t n[2];
    double lowest;              /* INFINITY: no catalog candidate */
} sl_ref_fold_part;
/* Frees a part's arrays and empties it (NULL is a no-op). */
void sl_ref_fold_part_clear(sl_ref_fold_part *p);
/* The fold of the whole list from the parts of every shard (n of them). Out of memory: a fold
 * without spread (references then leave that query's ranking). */
void sl_ref_fold_merge(const sl_ref_fold_part *parts, size_t n, sl_ref_fold *out);
/* Phase 2a: re-ranks lists as sl_engine_rerank and fills parts[0..nq) (cleared on failure).
 * The candidates are re-ranked in place: each one's score becomes its re-ranked score, inliers
 * its verification's (-1: none), reranked 1 - phase 2b sends them back so that every candidate
 * is verified once. On failure the lists may be partly re-ranked. */
sl_status sl_engine_rerank_fold_parts(sl_engine *e, const void *const *locals, const size_t *local_lens,
                                      size_t nq, sl_candidate *const *lists, const size_t *counts,
                                      sl_ref_fold_part *parts, sl_error *err);
/* Phase 2b: sl_engine_rerank with folds[qi] as query vector qi's fold (folds NULL: each list's
 * own, which is sl_engine_rerank). */
sl_status sl_engine_rerank_folded(sl_engine *e, const void *const *locals, const size_t *local_lens,
                                  size_t nq, sl_candidate *const *lists, const size_t *counts,
                                  const sl_ref_fold *folds, const sl_query *q, size_t depth,
                                  sl_matches *out, sl_error *err);
/* Entries of the engine's index (catalog images and references) and how many are references:
 * a search's candidate depth grows with the references' share (docs/learn.md), so a cluster's
 * router adds the shards' up. */
void sl_engine_index_counts(sl_engine *e, int64_t *entries, int64_t *refs);
/* Geometric verifications (RANSAC over local features) e has run since it was opened: search's
 * re-rank, check, duplicates; the counter of /metrics' shoplens_verifications_total. 0 for NULL.
 * Thread-safe; owns nothing. */
uint64_t sl_engine_verifications(sl_engine *e);
/* Whether a search verifies the candidate at 0-based `rank` of its list (best first) whose id is
 * image_id: one of the first verify_top, and a reference only while fewer than
 * SL_ENGINE_VERIFY_REFS references have been picked. *refs counts the references picked; start
 * it at 0 for each list and call in rank order. Search's re-rank and a cluster's router (which
 * flags the merged list for phase 2) both pick by it, so they verify the same candidates. */
int sl_engine_verify_pick(size_t rank, int64_t image_id, size_t verify_top, size_t *refs);
/* The candidate depth a search with `candidates` per query vector (sl_engine_plan) takes on an
 * index of `entries` entries, `refs` of them references. */
size_t sl_engine_ref_depth(size_t candidates, int64_t entries, int64_t refs);
/* Orders matches best first as a search does (score, then product id) and keeps ranks
 * offset+1 .. offset+k of them (q's k and offset): the router's merge. */
void sl_matches_merge_slice(sl_matches *m, const sl_query *q);
/* K of e's confidence: a result's confidence compares its score with the mean score of the K
 * best other products of its query (learn.h, sl_calib_cohort of the store's calibration). */
int sl_engine_confidence_cohort(sl_engine *e);
/* Sets the confidence and the match flag of every match of m as a search of e does, before any
 * text boost: its score against the mean of the K best other products of `cohort` and against
 * the best other one (the margin) (any order; the same query's matches without its filters, or
 * NULL when the query has none: m itself).
 * The router computes them so over the merged shards, which is what a single store's search
 * returns. On failure (SL_E_NOMEM) m is unchanged. */
sl_status sl_engine_matches_confidence(sl_engine *e, sl_matches *m, const sl_matches *cohort);
/* The category vote of sl_engine_classify from its k nearest products (already searched). */
sl_status sl_classification_from_matches(const sl_matches *m, sl_classification *out,
                                         sl_error *err);

/* ---- cluster workers (docs/cluster.md) ------------------------------------------------------
 * On a cluster store (a PostgreSQL URL), `shoplens add` and `sync` queue one job per product to
 * add or update, with the bytes of its new images; workers, on any number of machines, describe
 * them and commit the products. */

typedef struct sl_work_opts {
    const char *name;           /* this worker in the cluster's node list (NULL: host:pid) */
    double idle_exit_s;         /* return after this many seconds without a job (0: never) */
    size_t max_jobs;            /* return after this many jobs (0: no limit) */
    volatile int *cancel;       /* may be NULL; set nonzero to stop after the job in progress */
    /* one call per finished job (what: "added", "updated", "unchanged", "failed: <message>"),
     * and for every trouble that did not stop the worker (product_id NULL, what the message);
     * may be NULL */
    void (*log)(void *ctx, const char *product_id, const char *what, double ms);
    void *log_ctx;
} sl_work_opts;

typedef struct sl_work_stats {
    size_t jobs;                /* jobs finished by this call */
    size_t failed;              /* of which failed (a row of the product could not be described) */
    size_t images;              /* images described */
    double seconds;
} sl_work_stats;

/* Processes the job queue of a cluster store: claims the oldest free job (its row stays locked
 * until the job's transaction ends, so a worker that dies loses nothing: PostgreSQL rolls the
 * transaction back and the job is free again), decodes and describes its new images with the
 * store's features, keeps the images it already has, and commits the product and the end of the
 * job in one transaction: each job is done exactly once. A product whose image cannot be read
 * is left as it was and the job reports the row. Waits for new jobs (LISTEN) when there are
 * none; a lost connection to PostgreSQL is retried every second, not fatal. The engine must be
 * opened on a cluster store with no_index. Returns SL_OK after idle_exit_s, max_jobs or cancel;
 * errors only for misuse (SL_E_UNSUPPORTED not a cluster store, SL_E_STATE) or no memory. */
sl_status sl_engine_work(sl_engine *e, const sl_work_opts *opts, sl_work_stats *stats,
                         sl_error *err);

#ifdef __cplusplus
}
#endif
#endif
