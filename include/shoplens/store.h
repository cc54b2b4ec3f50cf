/*
 * shoplens/store.h - the catalog store (a directory holding catalog.sqlite in WAL mode, the
 * feature configuration with its learned parts, and the index file) and the parsers of the
 * shop's product feeds (CSV per RFC 4180, JSON Lines).
 *
 * Most programs use the engine (engine.h), which owns a store and keeps the index and the
 * features in step with it. This header is the lower layer: metadata, images, vectors and full
 * text search, with no feature extraction and no index.
 *
 * Layout of a store directory (byte-level formats in docs/formats/store.md):
 *   catalog.sqlite   products, images (with their global vectors and local features), FTS5 table,
 *                    meta (format/schema version, feature spec, generation counters)
 *   features-N.bin   the feature pipeline with its learned parts (sl_features_save); N is
 *                    meta "features_version", committed together with the vectors it made
 *   index.bin        the vector index (derived: rebuilt from catalog.sqlite when stale)
 *   images/          the store's own copy of every catalog image, named by the SHA-256 of the
 *                    copy's bytes (images/<sha256>.<ext>); see SL_ENGINE_COPY_MAX_SIDE
 *
 * Thread safety: an sl_store may be used from several threads; calls are serialized by an
 * internal mutex (SQLite "serialized" mode). Several processes may open one store: SQLite's WAL
 * lets readers proceed while one writer commits.
 * Ownership: strings inside structs returned by the store are malloc'ed and released by the
 * matching *_clear / *_free function; inputs are copied and never retained.
 */
#ifndef SHOPLENS_STORE_H
#define SHOPLENS_STORE_H

#include <stddef.h>
#include <stdint.h>
#include "shoplens/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Version of the store directory layout and of the SQLite schema. A store recorded with another
 * version is refused with SL_E_VERSION and a message naming both versions. */
#define SL_STORE_FORMAT_VERSION 1
#define SL_STORE_SCHEMA_VERSION 3
/* The oldest schema sl_store_open upgrades in place (one transaction; see docs/formats/store.md:
 * schema 1 stores referenced catalog images by their absolute path outside the store; schema 2
 * had no table of references). */
#define SL_STORE_SCHEMA_UPGRADABLE_FROM 1

/* Longest product id accepted (bytes); ids are non-empty UTF-8 without control characters. */
#define SL_STORE_ID_MAX 128

/* Prices: a number in SL_PRODUCT_PRICE_MIN..SL_PRODUCT_PRICE_MAX, the one limit of every entry
 * point (feeds, the HTTP API, the CLI's filters). */
#define SL_PRODUCT_PRICE_MIN 0.0
#define SL_PRODUCT_PRICE_MAX 1e12
/* Currencies: ISO 4217 alphabetic codes, three letters ("USD", "EUR"); stored upper-case.
 * A product without one has currency "" (unknown: the store never guesses). */
#define SL_PRODUCT_CURRENCY_LEN 3

/* The store directory used when none is given: $SHOPLENS_STORE, else "./shoplens-data".
 * Returns a static string or the environment's. */
const char *sl_store_default_dir(void);

/* ---- product metadata -------------------------------------------------------------------- */

/* A product as the store holds it. As input every pointer may be NULL (= empty), except id.
 * As output (sl_store_get_product, sl_engine_get_product) strings are malloc'ed; release them
 * with sl_product_clear. */
typedef struct sl_product {
    char *id;           /* the shop's product id (unique) */
    char *title;
    char *category;
    char *description;
    char *url;
    char *attrs_json;   /* other feed columns as a JSON object ("{}" when none) */
    double price;       /* valid when has_price */
    int has_price;
    char *currency;     /* ISO 4217 code of the price ("" or NULL = unknown) */
} sl_product;

/* Frees the strings of *p and zeroes it; NULL is a no-op. */
void sl_product_clear(sl_product *p);

/* Checks a currency code: NULL or "" (none) or three ASCII letters. When out is non-NULL it
 * receives the upper-case code ("" for none). Returns 1 when valid, 0 otherwise. */
int sl_product_currency_valid(const char *code, char out[SL_PRODUCT_CURRENCY_LEN + 1]);

/* Checks a product id: 1..SL_STORE_ID_MAX bytes of UTF-8 text (RFC 3629) without control
 * characters - the rule of every writer (feeds, the HTTP API, the library). Returns NULL when
 * valid, else a static sentence saying what is wrong ("is empty", "is not UTF-8 text", ...). */
const char *sl_product_id_check(const char *id);

/* A deep copy of *src into *dst (strings malloc'ed; NULL strings stay NULL). SL_E_NOMEM. */
sl_status sl_product_copy(sl_product *dst, const sl_product *src, sl_error *err);

/* How sl_product_apply_json treats the fields the JSON object does not name. */
typedef enum sl_apply_mode {
    SL_APPLY_REPLACE = 0,   /* the object is the whole metadata: an absent field is cleared */
    SL_APPLY_MERGE = 1      /* a JSON merge patch (RFC 7396): absent fields stay as they are,
                               null clears a field, "attrs" is merged key by key */
} sl_apply_mode;

/* Applies a JSON object of product metadata to *p (which keeps its id). Keys: title, category,
 * description, url (strings), price (a number in SL_PRODUCT_PRICE_MIN..MAX), currency (a
 * three-letter code), attrs (an object); null clears any of them; "id" / "product_id" may be
 * given and must equal p->id. Any other key is refused. The messages name the field and the
 * allowed values. On success *p holds malloc'ed strings (release with sl_product_clear); on
 * failure *p is unchanged. blanked (may be NULL): in REPLACE mode, a malloc'ed list like
 * "title, description" of the fields that had a value in *p and are cleared only because the
 * object does not name them (NULL when none) - a PUT refuses such a body, see docs/openapi.yaml.
 * Errors: SL_E_INVALID (not a JSON object, bad field), SL_E_NOMEM. */
sl_status sl_product_apply_json(sl_product *p, const char *json, size_t len, sl_apply_mode mode,
                                char **blanked, sl_error *err);

/* A catalog image of a product. */
typedef struct sl_image_ref {
    int64_t id;         /* image id (stable for the life of the image in the store) */
    char *product_id;
    char *source;       /* where it came from: the feed's path as ingested (absolute) or URL;
                           "" for an image uploaded as bytes. Informational: never read. */
    char hash[65];      /* SHA-256 of the bytes as ingested, lowercase hex */
    int64_t size;       /* bytes as ingested */
    char *file;         /* the file holding the pixels: the store's copy (<store dir>/images/
                           <sha256 of the copy>.<ext>), or, for an image of a schema 1 store not
                           yet copied in (in_store == 0), its original path (= source) */
    int in_store;       /* nonzero when `file` is the store's own copy */
} sl_image_ref;

/* Frees the strings of n refs and the array itself; NULL is a no-op. */
void sl_image_refs_free(sl_image_ref *refs, size_t n);

/* ---- the store --------------------------------------------------------------------------- */

typedef struct sl_store sl_store;

/* Opens the store in directory dir. create nonzero: create the directory and an empty store
 * when there is none (an existing store is opened as is). read_only nonzero: no writes
 * (SQLITE_OPEN_READONLY). Errors: SL_E_NOT_FOUND (no store and !create), SL_E_VERSION (store
 * of another format/schema version: the message names both), SL_E_CORRUPT (not a shoplens
 * store), SL_E_IO. On failure *out = NULL.
 * dir may instead be a PostgreSQL URL ("postgresql://user@host:5432/db", any libpq connection
 * URI): the shared store of a cluster (docs/cluster.md; schema "shoplens" of that database,
 * docs/formats/cluster.md). Every operation of this header works on it the same way; its files
 * (image copies, features files) are rows instead of files, sl_store_path returns NULL, and
 * every committed change is also appended to the cluster's change log. create makes the schema
 * (the database must exist); SL_E_BUSY when the server cannot be reached. */
sl_status sl_store_open(const char *dir, int create, int read_only, sl_store **out,
                        sl_error *err);
void sl_store_free(sl_store *s);

/* The directory (static for the life of s) and the path of a file in it (malloc'ed). For a
 * PostgreSQL store: its URL with any password masked, and NULL. */
const char *sl_store_dir(const sl_store *s);
char *sl_store_path(const sl_store *s, const char *name);

/* Nonzero when `where` names a PostgreSQL store (a "postgresql://" or "postgres://" URL). */
int sl_store_is_url(const char *where);
/* Nonzero for a PostgreSQL (cluster) store. */
int sl_store_is_shared(const sl_store *s);

/* ---- the store's files: image copies ("images/<sha256>.<ext>") and features files --------- *
 * Files in the store directory for SQLite, rows for PostgreSQL. name is relative to the store;
 * file_get and file_size also take the `file` of an sl_image_ref. */
/* Writes a file durably (SQLite: temporary file, fsync, rename; PostgreSQL: a row, in the
 * caller's transaction when it has one); nothing to do when it exists with that size. */
sl_status sl_store_file_put(sl_store *s, const char *name, const void *data, size_t len,
                            sl_error *err);
/* Reads a whole file (at most max bytes, 0 = no limit) into *data (malloc'ed, a NUL after the
 * bytes). SL_E_NOT_FOUND, SL_E_TOO_LARGE, SL_E_IO. */
sl_status sl_store_file_get(sl_store *s, const char *name, size_t max, void **data, size_t *len,
                            sl_error *err);
/* Its size in bytes, -1 when absent. Inside a transaction of a PostgreSQL store the file stays
 * locked against deletion until the transaction ends. */
int64_t sl_store_file_size(sl_store *s, const char *name);

/* Key/value metadata (meta table). get: *value malloc'ed, SL_E_NOT_FOUND when absent. */
sl_status sl_store_meta_get(sl_store *s, const char *key, char **value, sl_error *err);
sl_status sl_store_meta_set(sl_store *s, const char *key, const char *value, sl_error *err);

/* Transactions (nestable by counting; only the outermost commits). Everything written between
 * begin and commit is durable together once commit returns SL_OK, or not at all. */
sl_status sl_store_begin(sl_store *s, sl_error *err);
sl_status sl_store_commit(sl_store *s, sl_error *err);
void sl_store_rollback(sl_store *s);

/* Inserts or replaces the metadata of a product (images untouched), and its FTS row. */
sl_status sl_store_put_product(sl_store *s, const sl_product *p, sl_error *err);
/* Metadata of a product; SL_E_NOT_FOUND when absent. *out filled (sl_product_clear). */
sl_status sl_store_get_product(sl_store *s, const char *id, sl_product *out, sl_error *err);
/* Removes a product, its images and FTS row. *removed_images (may be NULL) receives the ids
 * of the removed images (malloc'ed) and *n_removed their count. SL_E_NOT_FOUND when absent. */
sl_status sl_store_remove_product(sl_store *s, const char *id, int64_t **removed_images,
                                  size_t *n_removed, sl_error *err);

/* Adds an image to an existing product, with its global vector (dim floats) and serialized
 * local features (may be NULL/0). file is the store's copy relative to the store directory,
 * "images/<64 hex digits>.<ext>" (SL_E_INVALID otherwise; the caller writes the file, durably,
 * before the transaction commits). *id receives the new image id. */
sl_status sl_store_add_image(sl_store *s, const char *product_id, const char *source,
                             const char *hash, int64_t size, const char *file, const float *vec,
                             size_t dim, const void *local, size_t local_len, int64_t *id,
                             sl_error *err);
/* Inserts (or replaces) image `id` as given: how a cluster's search node copies the images of
 * its shard, under the ids the cluster gave them. Same arguments and errors as add_image. */
sl_status sl_store_put_image(sl_store *s, int64_t id, const char *product_id, const char *source,
                             const char *hash, int64_t size, const char *file, const float *vec,
                             size_t dim, const void *local, size_t local_len, sl_error *err);
/* Inside a transaction: no other writer may change product id until it ends (SQLite: the
 * transaction holds the whole database already; PostgreSQL: a row lock). SL_E_STATE outside
 * a transaction. */
sl_status sl_store_lock_product(sl_store *s, const char *id, sl_error *err);
/* Removes an image row. Its file (when it is the store's copy) is queued for deletion in the
 * same transaction; see sl_store_gc. */
sl_status sl_store_remove_image(sl_store *s, int64_t image_id, sl_error *err);
/* Points an image at a store copy ("images/<sha256>.<ext>", written before the commit): used to
 * copy the images of a schema 1 store in. The previous copy, if any, is queued for deletion. */
sl_status sl_store_set_image_file(sl_store *s, int64_t image_id, const char *file,
                                  sl_error *err);

/* ---- image files nobody references any more ------------------------------------------------
 * Every transaction that removes an image row (or changes its file) records the file in the
 * table pending_deletions, in the same transaction (an SQLite trigger). sl_store_gc, run after
 * that commit, deletes those of the files that no image row references any more, under the
 * write lock (so no writer can be between "the file exists" and "the row that needs it
 * commits"), then forgets them. A crash between the commit and the deletion leaves the rows in
 * pending_deletions: sl_store_open (read-write) finishes the job. Only names of the form
 * images/<64 hex>.<ext> are ever deleted, never a file outside the store. */
sl_status sl_store_gc(sl_store *s, size_t *deleted, sl_error *err);
/* Files queued for deletion (relative to the store directory); free with sl_strings_free. */
sl_status sl_store_pending_files(sl_store *s, char ***files, size_t *n, sl_error *err);
/* Deletes files under images/ that neither an image row nor pending_deletions names (left by a
 * writer killed between writing a copy and committing its row), under the write lock. Names
 * receives the deleted names (may be NULL; free with sl_strings_free). */
sl_status sl_store_delete_orphans(sl_store *s, char ***names, size_t *n, sl_error *err);
/* Files under images/ that neither an image row nor pending_deletions names (a read-only view
 * of what sl_store_delete_orphans would delete). */
sl_status sl_store_orphan_files(sl_store *s, char ***names, size_t *n, sl_error *err);
/* Replaces the vector and local features of an existing image (retraining). */
sl_status sl_store_set_image_features(sl_store *s, int64_t image_id, const float *vec, size_t dim,
                                      const void *local, size_t local_len, sl_error *err);
/* The product of each of n image ids in one query: (*products)[i] is malloc'ed, or NULL when
 * image ids[i] does not exist. Free with sl_strings_free(*products, n). */
sl_status sl_store_image_products(sl_store *s, const int64_t *ids, size_t n, char ***products,
                                  sl_error *err);
/* Every image id (ascending) with its source path; free with sl_image_refs_free. */
sl_status sl_store_all_images(sl_store *s, sl_image_ref **refs, size_t *n, sl_error *err);
/* Images of a product, by id order. */
sl_status sl_store_product_images(sl_store *s, const char *product_id, sl_image_ref **refs,
                                  size_t *n, sl_error *err);
/* One image by id; SL_E_NOT_FOUND when absent. *ref filled; release with sl_image_ref_clear. */
sl_status sl_store_get_image(sl_store *s, int64_t image_id, sl_image_ref *ref, sl_error *err);
void sl_image_ref_clear(sl_image_ref *r);
/* The stored vector (dim floats, malloc'ed) and local features (malloc'ed, may be NULL/0). */
sl_status sl_store_image_features(sl_store *s, int64_t image_id, float **vec, size_t *dim,
                                  void **local, size_t *local_len, sl_error *err);
/* Only the stored local features of an image (malloc'ed into *local, NULL/0 when it has none);
 * the hot read of verification: no vector is read and the statement is reused. Thread-safe.
 * SL_E_NOT_FOUND when there is no such image; on failure *local = NULL. */
sl_status sl_store_image_local(sl_store *s, int64_t image_id, void **local, size_t *local_len,
                               sl_error *err);

/* The stored vectors of n images in one pass (the engine's exact re-scoring of its candidates):
 * out receives n * dim floats, row i for ids[i] when found[i] is set to 1; found[i] = 0 for an
 * image that does not exist or has no vector (its row is left as is). Thread-safe; the
 * statement is reused. Errors: SL_E_CORRUPT (a stored vector of another length), SL_E_IO. */
sl_status sl_store_image_vectors(sl_store *s, const int64_t *ids, size_t n, size_t dim, float *out,
                                 unsigned char *found, sl_error *err);
/* Every image id, ascending, in *ids (malloc'ed, NULL when there is none), count in *n: read
 * from the small images_product index, not the table rows, so it stays quick at millions of
 * images. On failure *ids = NULL, *n = 0. */
sl_status sl_store_image_ids(sl_store *s, int64_t **ids, size_t *n, sl_error *err);

/* Calls fn for every image in id order with its vector; stops and returns fn's status when it
 * is not SL_OK. Used to rebuild the index. Catalog images only (no reference). */
typedef sl_status (*sl_store_vector_fn)(void *ctx, int64_t image_id, const float *vec,
                                        size_t dim);
sl_status sl_store_each_vector(sl_store *s, sl_store_vector_fn fn, void *ctx, sl_error *err);

/* ---- references: labelled photos of a product kept as extra search references ------------
 * A shop's labelled photos (review photos, confirmed searches: what `shoplens train --photos`
 * receives) are kept as references of their product next to its catalog images: searched in
 * the same index, never shown as catalog images (they are not images of the product's page:
 * sl_store_product_images, sl_store_all_images, sl_store_get_image and the counts never return
 * them). A reference's index id is SL_STORE_REF_ID_BASE + its row id; the functions that take
 * index ids (sl_store_image_products, sl_store_image_local, sl_store_image_vectors,
 * sl_store_image_ids, sl_store_filter_images, sl_store_remove_product's removed ids) cover
 * references under those ids. Deleting a product deletes its references. SQLite and
 * PostgreSQL stores alike (docs/formats/store.md, docs/formats/cluster.md). */
#define SL_STORE_REF_ID_BASE ((int64_t)1 << 48)
typedef struct sl_store_ref {
    const char *product_id;     /* an existing product */
    const char *source;         /* where the photo came from (a path or URL; informational) */
    const float *vec;           /* dim floats: the descriptor before any head */
    const void *local;          /* serialized local features, may be NULL/0 */
    size_t local_len;
} sl_store_ref;
/* Inside a transaction (SL_E_STATE otherwise): replaces every reference by the n given (n = 0
 * removes them all). SL_E_NOT_FOUND names a reference whose product does not exist. */
sl_status sl_store_replace_refs(sl_store *s, const sl_store_ref *refs, size_t n, size_t dim,
                                sl_error *err);
/* Calls fn for every reference (by index id, ascending) with its vector. */
sl_status sl_store_each_ref_vector(sl_store *s, sl_store_vector_fn fn, void *ctx, sl_error *err);
/* Index ids of a product's references, ascending (malloc'ed, NULL when none). */
sl_status sl_store_product_ref_ids(sl_store *s, const char *product_id, int64_t **ids, size_t *n,
                                   sl_error *err);
/* The first reference (smallest index id) of a product kept from the photo `source` (as given to
 * sl_store_replace_refs), in *id; -1 when there is none. A calibration photo that is also a
 * reference is scored without it (engine/calibrate.c). */
sl_status sl_store_ref_of_source(sl_store *s, const char *product_id, const char *source, int64_t *id,
                                 sl_error *err);
/* Number of references. */
sl_status sl_store_count_refs(sl_store *s, int64_t *n, sl_error *err);
/* Every reference's index id (ascending) with its product: (*ids)[i] belongs to (*products)[i].
 * Both malloc'ed (NULL when there are none); free with free(*ids) and
 * sl_strings_free(*products, *n). On failure nothing is returned. SL_E_UNSUPPORTED on a
 * PostgreSQL store (a cluster's search nodes hold the references). */
sl_status sl_store_ref_products(sl_store *s, int64_t **ids, char ***products, size_t *n, sl_error *err);

/* All product ids (sorted), malloc'ed array of malloc'ed strings; free with sl_strings_free. */
sl_status sl_store_product_ids(sl_store *s, char ***ids, size_t *n, sl_error *err);
void sl_strings_free(char **v, size_t n);

/* Ids of the images whose product passes the filter, sorted ascending (malloc'ed). Any filter
 * part may be NULL / unset. text is an FTS5 query over title + description (words are ANDed;
 * quoted as plain terms, so FTS5 operators in user input are not interpreted). */
typedef struct sl_store_filter {
    const char *category;
    double min_price, max_price;
    int has_min_price, has_max_price;
    const char *text;
} sl_store_filter;
sl_status sl_store_filter_images(sl_store *s, const sl_store_filter *f, int64_t **ids,
                                 size_t *n, sl_error *err);
/* Nonzero when no filter part is set. */
int sl_store_filter_empty(const sl_store_filter *f);

/* A page of the catalog: products passing the filter (f may be NULL) whose id sorts after
 * `after` (NULL or "" = from the start), by id (byte order), at most limit (1..
 * SL_STORE_LIST_MAX). *out is a malloc'ed array of *n products (free each with
 * sl_product_clear, then the array); *more is set nonzero when products follow the last one. */
#define SL_STORE_LIST_MAX 10000
sl_status sl_store_list_products(sl_store *s, const sl_store_filter *f, const char *after,
                                 size_t limit, sl_product **out, size_t *n, int *more,
                                 sl_error *err);
/* Page cursors: an opaque, URL-safe form of the last id of a page ("c" + hex of its bytes),
 * what `GET /v1/products` and `shoplens list` hand out. encode: out gets the cursor of id.
 * decode: out gets the id; returns 0, or -1 when the text is not a cursor. */
#define SL_STORE_CURSOR_MAX (1 + 2 * SL_STORE_ID_MAX)
void sl_store_cursor_encode(const char *id, char out[SL_STORE_CURSOR_MAX + 1]);
int sl_store_cursor_decode(const char *cursor, char out[SL_STORE_ID_MAX + 1]);
/* Number of products passing the filter (f may be NULL). */
sl_status sl_store_count_products(sl_store *s, const sl_store_filter *f, int64_t *n,
                                  sl_error *err);
/* Frees an array of n products from sl_store_list_products; NULL is a no-op. */
void sl_products_free(sl_product *v, size_t n);

/* Consistency of catalog.sqlite itself: PRAGMA integrity_check, foreign keys, the full-text
 * index (FTS5 integrity-check, one text row per product). Each problem found is a malloc'ed
 * message in *problems (free with sl_strings_free); *n = 0 when all is well. */
sl_status sl_store_check(sl_store *s, char ***problems, size_t *n, sl_error *err);
/* Rebuilds the full-text rows of every product from the products table (one transaction). */
sl_status sl_store_rebuild_text(sl_store *s, sl_error *err);

/* Categories with their product counts, sorted by name. */
sl_status sl_store_categories(sl_store *s, char ***names, int64_t **counts, size_t *n,
                              sl_error *err);

/* Counts. */
typedef struct sl_store_counts {
    int64_t products, images;
    int64_t db_bytes;     /* catalog.sqlite + its WAL */
    int64_t images_outside; /* images read from outside the store (schema 1 stores, until
                               copied in by `shoplens verify --repair`) */
} sl_store_counts;
sl_status sl_store_counts_get(sl_store *s, sl_store_counts *c, sl_error *err);

/* A monotone counter bumped by every committed change (meta "generation"), so that another
 * process (or an index file) can tell whether it is behind. */
sl_status sl_store_generation(sl_store *s, int64_t *gen, sl_error *err);
sl_status sl_store_bump_generation(sl_store *s, sl_error *err);

/* ---- product feeds: CSV (RFC 4180) and JSON Lines ---------------------------------------- */

/* One record of a feed. Fields are malloc'ed and owned by the reader until the next call.
 * Recognized columns/keys: product_id, image, title, category, price, currency, description,
 * url; any other column is kept in attrs_json. price_text and currency are the raw text (may
 * be invalid: the ingest reports it). */
typedef struct sl_catalog_row {
    size_t row;          /* 1-based record number (CSV: data rows after the header; JSONL: line) */
    const char *product_id, *image, *title, *category, *price_text, *description, *url;
    const char *attrs_json;
    const char *currency;
    const char *more_images; /* more images of the product, comma-separated (column/key
                                additional_images or Google Merchant's additional_image_link;
                                JSONL: a string or a list of strings), or NULL */
    const char *not_utf8;    /* CSV: the name of the first column whose value is not UTF-8
                                text (image columns are paths or URLs and exempt), or NULL;
                                the ingest fails such a row (JSONL is UTF-8 by definition) */
} sl_catalog_row;

typedef struct sl_catalog_reader sl_catalog_reader;

/* Opens a feed: format from the extension (.csv, .jsonl/.ndjson; anything else is sniffed:
 * '{' first = JSONL). Columns/keys: product_id, image, title, category, price, description,
 * url, currency, additional_images - or their Google Merchant names id, image_link,
 * product_type, link, additional_image_link (price "12.99 USD" is parsed by the ingest); any
 * other column is an attribute. Errors: SL_E_IO, SL_E_CORRUPT (CSV header without product_id
 * or id). */
sl_status sl_catalog_open(const char *path, sl_catalog_reader **out, sl_error *err);
/* Same over a memory buffer (copied); is_jsonl selects the format. For tests and fuzzing. */
sl_status sl_catalog_open_buffer(const void *data, size_t len, int is_jsonl,
                                 sl_catalog_reader **out, sl_error *err);
void sl_catalog_close(sl_catalog_reader *r);
/* Reads the next record into *row. Returns SL_OK with a row, SL_E_NOT_FOUND at the end, or
 * a per-record error (SL_E_CORRUPT: unterminated quote, bad JSON, wrong field count ...) with
 * the message in err and row->row set: the caller reports it and may continue reading. */
sl_status sl_catalog_next(sl_catalog_reader *r, sl_catalog_row *row, sl_error *err);

#ifdef __cplusplus
}
#endif
#endif
