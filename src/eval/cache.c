/*
 * eval/cache.c - a cache of described image sets for `shoplens eval --cache DIR`, so repeated
 * evaluations (other heads, other training options) skip describing the same images again.
 * Format in docs/formats/features.md ("Evaluation cache").
 *
 * Invariants: an entry is keyed by the SHA-256 of everything the descriptions depend on (the
 * canonical spec, the decode size, whether local features were kept, and path, size and
 * modification time of every image of the gallery - which trains the codebook - and of the set);
 * a file that does not parse exactly is ignored (and rewritten), never trusted partly. Files
 * are written atomically. Nothing here changes results: a hit gives the bytes a miss computes.
 */
#include "eval/eval_internal.h"
#include "catalog/catalog.h"
#include "util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CACHE_MAGIC "SLEVALC1"

static void key_set(sl__sha256 *c, const sl__eval_set *s) {
    for (size_t i = 0; s && i < s->n; i++) {
        struct stat sb;
        char buf[96];
        memset(&sb, 0, sizeof sb);
        (void)stat(s->paths[i], &sb);
        sl__sha256_update(c, s->paths[i], strlen(s->paths[i]) + 1);
        int n = snprintf(buf, sizeof buf, "%lld %lld.%09ld|", (long long)sb.st_size, (long long)sb.st_mtim.tv_sec,
                         (long)sb.st_mtim.tv_nsec);
        sl__sha256_update(c, buf, (size_t)n);
    }
}

char *sl__eval_cache_path(const char *dir, const char *spec, int max_side, int want_locals,
                          const sl__eval_set *gallery, const sl__eval_set *set) {
    sl__sha256 c;
    sl__sha256_init(&c);
    char buf[64];
    int n = snprintf(buf, sizeof buf, "%d %d|", max_side, want_locals);
    sl__sha256_update(&c, CACHE_MAGIC, 8);
    sl__sha256_update(&c, spec, strlen(spec) + 1);
    sl__sha256_update(&c, buf, (size_t)n);
    key_set(&c, gallery);
    sl__sha256_update(&c, "|set|", 5);
    key_set(&c, set);
    char hex[65];
    sl__sha256_hex(&c, hex);
    size_t pl = strlen(dir) + 80;
    char *p = malloc(pl);
    if (p) snprintf(p, pl, "%s/%.32s.bin", dir, hex);
    return p;
}

static uint64_t rd64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

int sl__eval_cache_load(const char *path, size_t n, size_t dim, float *vecs,
                        sl_local_features **locals, unsigned char *ok) {
    void *data = NULL;
    size_t len = 0;
    if (sl__read_file(path, (size_t)1 << 34, &data, &len, NULL) != SL_OK) return 0;
    const uint8_t *p = data, *end = p + len;
    int good = len >= 24 && memcmp(p, CACHE_MAGIC, 8) == 0 && rd64(p + 8) == n && rd64(p + 16) == dim;
    p += 24;
    for (size_t i = 0; good && i < n; i++) {
        if ((size_t)(end - p) < 1 + 4 * dim + 8) { good = 0; break; }
        ok[i] = p[0];
        memcpy(vecs + i * dim, p + 1, 4 * dim); /* little-endian hosts only write and read it */
        uint64_t ll = rd64(p + 1 + 4 * dim);
        p += 1 + 4 * dim + 8;
        if ((uint64_t)(end - p) < ll) { good = 0; break; }
        if (ll && locals && sl_local_features_deserialize(p, (size_t)ll, &locals[i], NULL) != SL_OK) good = 0;
        p += ll;
    }
    if (good && p != end) good = 0;
    if (!good) {
        for (size_t i = 0; locals && i < n; i++) { sl_local_features_free(locals[i]); locals[i] = NULL; }
        memset(ok, 0, n);
    }
    free(data);
    return good;
}

void sl__eval_cache_save(const char *dir, const char *path, size_t n, size_t dim, const float *vecs,
                         sl_local_features *const *locals, const unsigned char *ok) {
    (void)mkdir(dir, 0777);
    size_t cap = 24 + n * (1 + 4 * dim + 8), len = 0;
    uint8_t *b = malloc(cap);
    if (!b) return;
    memcpy(b, CACHE_MAGIC, 8);
    for (int i = 0; i < 8; i++) { b[8 + i] = (uint8_t)((uint64_t)n >> (8 * i)); b[16 + i] = (uint8_t)((uint64_t)dim >> (8 * i)); }
    len = 24;
    for (size_t i = 0; i < n; i++) {
        void *lb = NULL;
        size_t ll = 0;
        if (locals && locals[i] && sl_local_features_serialize(locals[i], &lb, &ll, NULL) != SL_OK) { free(b); return; }
        uint8_t *nb = realloc(b, len + 1 + 4 * dim + 8 + ll);
        if (!nb) { free(lb); free(b); return; }
        b = nb;
        b[len] = ok[i];
        memcpy(b + len + 1, vecs + i * dim, 4 * dim);
        for (int k = 0; k < 8; k++) b[len + 1 + 4 * dim + (size_t)k] = (uint8_t)((uint64_t)ll >> (8 * k));
        if (ll) memcpy(b + len + 1 + 4 * dim + 8, lb, ll);
        len += 1 + 4 * dim + 8 + ll;
        free(lb);
    }
    (void)sl__write_file_atomic(path, b, len, NULL);
    free(b);
}
