/*
 * catalog/catalog.h - internal helpers of the catalog module (not public): SHA-256 content
 * hashes and whole-file reads used by the store and the ingest.
 */
#ifndef SL_CATALOG_INTERNAL_H
#define SL_CATALOG_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include "shoplens/error.h"

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

/* Reads a whole file (at most max bytes, 0 = no limit) into a malloc'ed buffer with a NUL after
 * the data. Errors: SL_E_IO (errno text), SL_E_TOO_LARGE, SL_E_NOMEM. */
sl_status sl__read_file(const char *path, size_t max, void **data, size_t *len, sl_error *err);

/* Writes a buffer to path atomically: temp file in the same directory, fsync, rename, fsync of
 * the directory. */
sl_status sl__write_file_atomic(const char *path, const void *data, size_t len, sl_error *err);

#endif
