/*
 * catalog/catalog.h - internal helpers of the catalog module (not public): SHA-256 content
 * hashes and whole-file reads used by the store and the ingest.
 */
#ifndef SL_CATALOG_INTERNAL_H
#define SL_CATALOG_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include "shoplens/error.h"
#include "shoplens/store.h"

typedef struct sl__sha256 {
    uint32_t h[8];
    uint64_t len;
    uint8_t buf[64];
    size_t fill;
} sl__sha256;

void sl__sha256_init(sl__sha256 *c);
void sl__sha256_update(sl__sha256 *c, const void *data, size_t n);
/* Finishes and writes the digest as 64 lowercase hex characters + NUL. */
void sl__sha256_hex(sl__sha256 *c, char hex[65]);
void sl__sha256_buffer(const void *data, size_t n, char hex[65]);

/* Names of the store's image copies, relative to the store directory:
 * "images/<64 lowercase hex digits>.<ext>" with ext 1..8 lowercase letters or digits. */
#define SL__IMAGE_FILE_MAX 96
/* Nonzero when rel is such a name (nothing else is ever written or deleted under images/). */
int sl__image_file_valid(const char *rel);
/* Writes "images/<hash>.<ext>" into out (ext: lowercase letters/digits, else "img"). */
void sl__image_file_name(char out[SL__IMAGE_FILE_MAX], const char hash[65], const char *ext);

/* Reads a whole file (at most max bytes, 0 = no limit) into a malloc'ed buffer with a NUL after
 * the data. Errors: SL_E_IO (errno text), SL_E_TOO_LARGE, SL_E_NOMEM. */
sl_status sl__read_file(const char *path, size_t max, void **data, size_t *len, sl_error *err);

/* sl_store_filter_images without the final sort: the ids in no particular order (the query
 * path hands them to the index, which needs no order; sorting 5x10^4 ids cost ~6 % of a 50 %
 * price filter's candidate stage at 10^5 images). Same errors. */
sl_status sl__store_filter_images_any_order(sl_store *s, const sl_store_filter *f, int64_t **ids,
                                           size_t *n, sl_error *err);

/* Writes a buffer to path atomically: temp file in the same directory, fsync, rename, fsync of
 * the directory. */
sl_status sl__write_file_atomic(const char *path, const void *data, size_t len, sl_error *err);

/* SL_STORE_REF_ID_BASE as SQL text (2^48), for the statements of both stores that give
 * references their index ids; test_store checks that they agree. */
#define SL__REF_BASE_SQL "281474976710656"

/* A search node's copy (engine/replica.c): puts reference `ref_id` (its row id, index id minus
 * SL_STORE_REF_ID_BASE, as the cluster numbered it) of an existing product with its pre-head
 * vector and local features, replacing a reference of that id; removes one (a missing one is
 * no error). Inside the caller's transaction (SL_E_STATE otherwise); SL_E_NOT_FOUND when the
 * product does not exist. SQLite stores only (SL_E_UNSUPPORTED on PostgreSQL). */
sl_status sl__store_put_ref(sl_store *s, int64_t ref_id, const char *product_id, const char *source,
                            const float *vec, size_t dim, const void *local, size_t local_len,
                            sl_error *err);
sl_status sl__store_remove_ref(sl_store *s, int64_t ref_id, sl_error *err);

/* The checks every backend makes before writing a product: id (sl_product_id_check), currency (cur receives it upper-case), price range. SL_E_INVALID. */
struct sl_product;
sl_status sl__product_check(const struct sl_product *p, char cur[4], sl_error *err);

#endif
