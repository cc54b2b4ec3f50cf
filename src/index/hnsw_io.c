/*
 * index/hnsw_io.c - saving and loading index files (format: docs/formats/index.md).
 *
 * Save: the file is written to "<path>.tmp.XXXXXX" in the same directory, fsynced, renamed over
 * path, and the directory is fsynced: a crash at any point leaves either the old or the new file.
 * Load: the whole file is memory-mapped read-only; the header, the section table and every
 * section are checksummed (CRC-32C) and every structural invariant is checked (sizes, counts,
 * neighbour ids < n, neighbour levels, entry point, unique live ids) before anything is used,
 * so a truncated, corrupt or foreign file is refused with SL_E_CORRUPT naming the section and can
 * never make a search read out of bounds. Ids, flags, levels and links are copied into the heap
 * (they change with adds/removes); vectors and codes stay mapped until the index is modified.
 */
#include "index/index_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "index files are little-endian; add byte swapping for big-endian hosts"
#endif

#define SL__MAGIC "SLINDEX\0"
#define SL__VERSION 1u
#define SL__HDR 128u
#define SL__NSEC 7u
#define SL__SECENT 32u
#define SL__ALIGN 64u

enum { SEC_IDS, SEC_DEAD, SEC_LEVL, SEC_LNK0, SEC_LNKU, SEC_VECS, SEC_CODE };
static const char sl__tags[SL__NSEC][5] = { "IDS ", "DEAD", "LEVL", "LNK0", "LNKU", "VECS", "CODE" };

static void put32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* ---- save ------------------------------------------------------------------------------ */

typedef struct sl__sec { uint64_t off, size; uint32_t crc; } sl__sec;

static int sl__write_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int sl__pad(int fd, uint64_t *pos) {
    static const unsigned char zero[SL__ALIGN];
    size_t r = (size_t)(*pos % SL__ALIGN);
    if (!r) return 0;
    if (sl__write_all(fd, zero, SL__ALIGN - r) != 0) return -1;
    *pos += SL__ALIGN - r;
    return 0;
}

/* Writes the index to fd (caller holds wmu and rw shared). */
static int sl__write_index(sl_index *idx, int fd) {
    size_t n = idx->n, d = (size_t)idx->dim;
    int hnsw = idx->kind == SL_INDEX_HNSW;
    sl__sec sec[SL__NSEC];
    memset(sec, 0, sizeof sec);
    sec[SEC_IDS].size = n * 8;
    sec[SEC_IDS].crc = sl__crc32c(0, idx->ids, n * 8);
    sec[SEC_DEAD].size = n;
    sec[SEC_DEAD].crc = sl__crc32c(0, idx->dead, n);
    sec[SEC_LEVL].size = n;
    sec[SEC_LEVL].crc = sl__crc32c(0, idx->levels, n);
    size_t l0 = (size_t)(1 + idx->M0) * 4, lu = (size_t)(1 + idx->M) * 4;
    if (hnsw) {
        sec[SEC_LNK0].size = n * l0;
        sec[SEC_LNK0].crc = sl__crc32c(0, idx->link0, n * l0);
        uint32_t c = 0;
        uint64_t total = 0;
        for (size_t s = 0; s < n; s++) {
            if (!idx->levels[s]) continue;
            c = sl__crc32c(c, idx->upper[s], idx->levels[s] * lu);
            total += idx->levels[s] * lu;
        }
        sec[SEC_LNKU].size = total;
        sec[SEC_LNKU].crc = c;
    } else {
        sec[SEC_LNK0].crc = sl__crc32c(0, "", 0);
        sec[SEC_LNKU].crc = sec[SEC_LNK0].crc;
    }
    sec[SEC_VECS].size = sl__codes_only(idx) ? 0 : n * d * 4;
    sec[SEC_VECS].crc = sl__crc32c(0, idx->vec ? (const void *)idx->vec : "", (size_t)sec[SEC_VECS].size);
    sec[SEC_CODE].size = n * idx->code_size;
    sec[SEC_CODE].crc = sl__crc32c(0, idx->codes ? (const void *)idx->codes : "", n * idx->code_size);
    uint64_t pos = SL__HDR + SL__NSEC * SL__SECENT;
    for (unsigned i = 0; i < SL__NSEC; i++) {
        pos = (pos + SL__ALIGN - 1) / SL__ALIGN * SL__ALIGN;
        sec[i].off = pos;
        pos += sec[i].size;
    }
    unsigned char table[SL__NSEC * SL__SECENT];
    memset(table, 0, sizeof table);
    for (unsigned i = 0; i < SL__NSEC; i++) {
        unsigned char *e = table + i * SL__SECENT;
        memcpy(e, sl__tags[i], 4);
        put64(e + 8, sec[i].off);
        put64(e + 16, sec[i].size);
        put32(e + 24, sec[i].crc);
    }
    unsigned char h[SL__HDR];
    memset(h, 0, sizeof h);
    memcpy(h, SL__MAGIC, 8);
    put32(h + 8, SL__VERSION);
    put32(h + 12, SL__HDR);
    put32(h + 16, 0x01020304u);
    put32(h + 20, (uint32_t)idx->dim);
    put32(h + 24, (uint32_t)idx->metric);
    put32(h + 28, (uint32_t)idx->kind);
    put32(h + 32, (uint32_t)idx->storage);
    put32(h + 36, (uint32_t)idx->M);
    put32(h + 40, (uint32_t)idx->ef_construction);
    put32(h + 44, (uint32_t)atomic_load(&idx->ef_search));
    uint64_t ep = atomic_load(&idx->ep);
    put32(h + 48, ep == SL__EP_EMPTY ? UINT32_MAX : (uint32_t)(ep >> 32));
    put32(h + 52, ep == SL__EP_EMPTY ? UINT32_MAX : (uint32_t)ep);
    put64(h + 56, n);
    put64(h + 64, idx->n_dead);
    put64(h + 72, idx->seed);
    put32(h + 80, (uint32_t)idx->code_size);
    put32(h + 84, SL__NSEC);
    put64(h + 88, SL__HDR);
    put32(h + 96, sl__crc32c(0, table, sizeof table));
    put32(h + 124, sl__crc32c(0, h, SL__HDR - 4));
    if (sl__write_all(fd, h, sizeof h) != 0 || sl__write_all(fd, table, sizeof table) != 0) return -1;
    pos = SL__HDR + sizeof table;
    const void *data[SL__NSEC] = { idx->ids, idx->dead, idx->levels, idx->link0, NULL, idx->vec, idx->codes };
    for (unsigned i = 0; i < SL__NSEC; i++) {
        if (sl__pad(fd, &pos) != 0) return -1;
        if (pos != sec[i].off) return -1;
        if (i == SEC_LNKU) {
            if (hnsw)
                for (size_t s = 0; s < n; s++)
                    if (idx->levels[s] && sl__write_all(fd, idx->upper[s], idx->levels[s] * lu) != 0) return -1;
        } else if (sec[i].size && sl__write_all(fd, data[i], (size_t)sec[i].size) != 0) {
            return -1;
        }
        pos += sec[i].size;
    }
    return 0;
}

sl_status sl_index_save(sl_index *idx, const char *path) {
    if (!idx) return SL_E_INVALID;
    if (!path || !*path) return sl__idx_fail(idx, SL_E_INVALID, "index save: empty path");
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16), *dcopy = sl__strdup(path);
    if (!tmp || !dcopy) { free(tmp); free(dcopy); return sl__idx_fail(idx, SL_E_NOMEM, "index save: out of memory"); }
    snprintf(tmp, plen + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int e = errno;
        free(dcopy);
        sl_status st = sl__idx_fail(idx, SL_E_IO, "index save: create %s: %s", tmp, strerror(e));
        free(tmp);
        return st;
    }
    /* mkstemp creates 0600: keep the mode of the file we replace, else rw-r--r-- */
    struct stat old;
    (void)fchmod(fd, stat(path, &old) == 0 ? (old.st_mode & 07777) : 0644);
    pthread_mutex_lock(&idx->wmu);
    pthread_rwlock_rdlock(&idx->rw);
    int r = sl__write_index(idx, fd);
    int e = errno;
    pthread_rwlock_unlock(&idx->rw);
    pthread_mutex_unlock(&idx->wmu);
    const char *step = "write";
    if (r == 0) { step = "fsync"; r = fsync(fd); e = errno; }
    if (close(fd) != 0 && r == 0) { step = "close"; r = -1; e = errno; }
    if (r == 0) { step = "rename"; r = rename(tmp, path); e = errno; }
    if (r != 0) {
        unlink(tmp);
        sl_status st = sl__idx_fail(idx, SL_E_IO, "index save: %s %s: %s", step, tmp, strerror(e));
        free(tmp);
        free(dcopy);
        return st;
    }
    /* Make the rename itself durable. */
    int dfd = open(dirname(dcopy), O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) { (void)fsync(dfd); close(dfd); }
    free(tmp);
    free(dcopy);
    return SL_OK;
}

/* ---- load ------------------------------------------------------------------------------ */

#define CORRUPT(...) do { st = sl__err_set(err, SL_E_CORRUPT, __VA_ARGS__); goto fail; } while (0)

/* Parses and validates a file image `base` of `len` bytes. On success the index owns the image
 * (unmapped or freed with it). `name` is used in messages. */
static sl_status sl__parse(sl_index **out, void *base, size_t len, int is_heap, const char *name,
                           const sl_index_params *over, sl_error *err) {
    const unsigned char *b = base;
    sl_index *idx = NULL;
    sl_status st = SL_OK;
    *out = NULL;
    if (len < 8 || memcmp(b, SL__MAGIC, 8) != 0) CORRUPT("%s: header: not a shoplens index file (bad magic)", name);
    if (len < SL__HDR) CORRUPT("%s: header: truncated (%zu bytes)", name, len);
    if (get32(b + 124) != sl__crc32c(0, b, SL__HDR - 4)) CORRUPT("%s: header: checksum mismatch", name);
    if (get32(b + 8) != SL__VERSION) {
        st = sl__err_set(err, SL_E_VERSION, "%s: header: format version %u, this build reads %u", name, get32(b + 8), SL__VERSION);
        goto fail;
    }
    if (get32(b + 12) != SL__HDR || get32(b + 16) != 0x01020304u || get32(b + 84) != SL__NSEC || get64(b + 88) != SL__HDR)
        CORRUPT("%s: header: bad header size, byte order or section count", name);
    uint32_t dim = get32(b + 20), metric = get32(b + 24), kind = get32(b + 28), storage = get32(b + 32);
    uint32_t M = get32(b + 36), efc = get32(b + 40), efs = get32(b + 44);
    uint32_t ep_level = get32(b + 48), ep_slot = get32(b + 52), code_size = get32(b + 80);
    uint64_t n = get64(b + 56), n_dead = get64(b + 64), seed = get64(b + 72);
    for (unsigned i = 96 + 4; i < 124; i++)
        if (b[i]) CORRUPT("%s: header: reserved bytes are not zero", name);
    if (n > SL__SLOTS_MAX || n_dead > n) CORRUPT("%s: header: slot counts out of range", name);
    if (M > SL_INDEX_M_MAX || efc > SL_INDEX_EF_CONSTRUCTION_MAX || efs > SL_INDEX_EF_SEARCH_MAX ||
        dim > SL_INDEX_DIM_MAX || metric > 2 || kind > 1 || storage > 3)
        CORRUPT("%s: header: parameter out of range", name);
    sl_index_params p;
    sl_index_params_default(&p);
    p.M = (int)M;
    p.ef_construction = (int)efc;
    p.ef_search = over && over->ef_search ? over->ef_search : (int)efs;
    p.threads = over ? over->threads : 0;
    p.seed = seed;
    p.storage = (sl_index_storage)storage;
    if (over && over->filter_exact_below != 0) p.filter_exact_below = over->filter_exact_below;
    sl_error e2;
    if (sl__index_alloc(&idx, (int)dim, (sl_index_metric)metric, (sl_index_kind)kind, &p, &e2) != SL_OK) {
        if (e2.code == SL_E_NOMEM) { st = sl__err_set(err, SL_E_NOMEM, "%s: out of memory", name); goto fail; }
        CORRUPT("%s: header: %s", name, e2.message);
    }
    if (code_size != idx->code_size) CORRUPT("%s: header: code size %u does not match storage", name, code_size);
    /* section table */
    size_t tbl = SL__NSEC * SL__SECENT;
    if (len < SL__HDR + tbl) CORRUPT("%s: section table: truncated", name);
    const unsigned char *t = b + SL__HDR;
    if (get32(b + 96) != sl__crc32c(0, t, tbl)) CORRUPT("%s: section table: checksum mismatch", name);
    size_t d = dim, l0 = (size_t)(1 + 2 * M) * 4, lu = (size_t)(1 + M) * 4;
    int hnsw = kind == SL_INDEX_HNSW;
    int codes_only = storage == SL_INDEX_INT8_ONLY;
    uint64_t want[SL__NSEC] = { n * 8, n, n, hnsw ? n * l0 : 0, 0, codes_only ? 0 : n * d * 4, n * code_size };
    const unsigned char *sp[SL__NSEC];
    uint64_t ssz[SL__NSEC];
    for (unsigned i = 0; i < SL__NSEC; i++) {
        const unsigned char *e = t + i * SL__SECENT;
        uint64_t off = get64(e + 8), size = get64(e + 16);
        if (memcmp(e, sl__tags[i], 4) != 0 || get32(e + 4) != 0 || get32(e + 28) != 0)
            CORRUPT("%s: section table: entry %u is not section %.4s", name, i, sl__tags[i]);
        if (off % SL__ALIGN || off < SL__HDR + tbl || off > len || size > len - off)
            CORRUPT("%s: section %.4s: offset or size outside the file (truncated?)", name, sl__tags[i]);
        if (i != SEC_LNKU && size != want[i])
            CORRUPT("%s: section %.4s: %llu bytes, expected %llu", name, sl__tags[i],
                    (unsigned long long)size, (unsigned long long)want[i]);
        if (get32(e + 24) != sl__crc32c(0, b + off, (size_t)size))
            CORRUPT("%s: section %.4s: checksum mismatch", name, sl__tags[i]);
        sp[i] = b + off;
        ssz[i] = size;
    }
    /* contents */
    size_t cap = n ? (size_t)n : 1;
    idx->ids = sl__mallocarray(cap, 8);
    idx->dead = calloc(cap, 1);
    idx->levels = calloc(cap, 1);
    if (hnsw) {
        idx->link0 = sl__mallocarray(cap, l0);
        idx->upper = sl__callocarray(cap, sizeof(uint32_t *));
    }
    if (!idx->ids || !idx->dead || !idx->levels || (hnsw && (!idx->link0 || !idx->upper))) {
        st = sl__err_set(err, SL_E_NOMEM, "%s: out of memory", name);
        goto fail;
    }
    idx->cap = (size_t)n;
    if (hnsw) sl__advise_huge(idx->link0, cap * l0);
    sl__advise_huge(base, len);  /* honoured only where the kernel has THP for the page cache */
    memcpy(idx->ids, sp[SEC_IDS], (size_t)n * 8);
    memcpy(idx->dead, sp[SEC_DEAD], (size_t)n);
    memcpy(idx->levels, sp[SEC_LEVL], (size_t)n);
    uint64_t dead = 0, upper_total = 0;
    for (size_t s = 0; s < n; s++) {
        if (idx->dead[s] > 1) CORRUPT("%s: section DEAD: slot %zu flag %u", name, s, idx->dead[s]);
        dead += idx->dead[s];
        if (idx->levels[s] > (hnsw ? SL__LEVEL_MAX : 0) || (hnsw && idx->levels[s] > ep_level))
            CORRUPT("%s: section LEVL: slot %zu level %u out of range", name, s, idx->levels[s]);
        upper_total += idx->levels[s] * lu;
    }
    idx->n = (size_t)n;  /* from here on sl_index_free releases the per-slot arrays */
    if (dead != n_dead) CORRUPT("%s: section DEAD: %llu removed slots, header says %llu", name,
                                (unsigned long long)dead, (unsigned long long)n_dead);
    idx->n_dead = n_dead;
    if (ssz[SEC_LNKU] != (hnsw ? upper_total : 0))
        CORRUPT("%s: section LNKU: %llu bytes, expected %llu", name, (unsigned long long)ssz[SEC_LNKU],
                (unsigned long long)upper_total);
    if (hnsw) {
        memcpy(idx->link0, sp[SEC_LNK0], (size_t)n * l0);
        const unsigned char *u = sp[SEC_LNKU];
        for (size_t s = 0; s < n; s++) {
            if (!idx->levels[s]) continue;
            size_t bytes = idx->levels[s] * lu;
            idx->upper[s] = malloc(bytes);
            if (!idx->upper[s]) { st = sl__err_set(err, SL_E_NOMEM, "%s: out of memory", name); goto fail; }
            memcpy(idx->upper[s], u, bytes);
            u += bytes;
        }
        for (size_t s = 0; s < n; s++) {
            for (int lev = 0; lev <= idx->levels[s]; lev++) {
                const uint32_t *l = sl__links(idx, (uint32_t)s, lev);
                if (l[0] > (uint32_t)sl__maxdeg(idx, lev))
                    CORRUPT("%s: section %s: slot %zu has %u links at layer %d", name, lev ? "LNKU" : "LNK0", s, l[0], lev);
                for (uint32_t j = 0; j < l[0]; j++)
                    if (l[1 + j] >= n || idx->levels[l[1 + j]] < lev)
                        CORRUPT("%s: section %s: slot %zu links to invalid slot %u", name, lev ? "LNKU" : "LNK0", s, l[1 + j]);
            }
        }
        if (ep_slot == UINT32_MAX && ep_level == UINT32_MAX) {
            if (n != n_dead) CORRUPT("%s: header: no entry point but %llu live slots", name, (unsigned long long)(n - n_dead));
            atomic_store(&idx->ep, SL__EP_EMPTY);
        } else {
            if (ep_slot >= n || idx->levels[ep_slot] != ep_level)
                CORRUPT("%s: header: entry point %u is not a top-level slot", name, ep_slot);
            atomic_store(&idx->ep, ((uint64_t)ep_level << 32) | ep_slot);
        }
    } else if (ep_slot != UINT32_MAX || ep_level != UINT32_MAX) {
        CORRUPT("%s: header: flat index with an entry point", name);
    }
    sl_status ms = sl__idmap_rebuild(idx);
    if (ms == SL_E_CORRUPT) CORRUPT("%s: section IDS: an id appears twice", name);
    if (ms != SL_OK) { st = sl__err_set(err, SL_E_NOMEM, "%s: out of memory", name); goto fail; }
    if (!codes_only) {
        idx->vec = (float *)(uintptr_t)sp[SEC_VECS];
        idx->vec_mapped = 1;
    }
    if (code_size) {
        idx->codes = (unsigned char *)(uintptr_t)sp[SEC_CODE];
        idx->codes_mapped = 1;
    }
    idx->map = base;
    idx->map_len = len;
    idx->map_is_heap = is_heap;
    *out = idx;
    return SL_OK;
fail:
    if (idx) sl_index_free(idx);
    if (is_heap) free(base);
    else munmap(base, len);
    return st;
}

sl_status sl_index_load(sl_index **out, const char *path, const sl_index_params *params, sl_error *err) {
    if (!out) return sl__err_set(err, SL_E_INVALID, "index load: out is NULL");
    *out = NULL;
    if (!path) return sl__err_set(err, SL_E_INVALID, "index load: path is NULL");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sl__err_set(err, SL_E_IO, "index load: open %s: %s", path, strerror(errno));
    struct stat stt;
    if (fstat(fd, &stt) != 0) {
        int e = errno;
        close(fd);
        return sl__err_set(err, SL_E_IO, "index load: stat %s: %s", path, strerror(e));
    }
    if (stt.st_size < (off_t)SL__HDR) {
        close(fd);
        return sl__err_set(err, SL_E_CORRUPT, "%s: header: truncated (%lld bytes)", path, (long long)stt.st_size);
    }
    size_t len = (size_t)stt.st_size;
    void *m = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (m == MAP_FAILED) return sl__err_set(err, SL_E_IO, "index load: mmap %s: %s", path, strerror(e));
    return sl__parse(out, m, len, 0, path, params, err);
}

sl_status sl_index_load_mem(sl_index **out, const void *data, size_t size,
                            const sl_index_params *params, sl_error *err) {
    if (!out) return sl__err_set(err, SL_E_INVALID, "index load: out is NULL");
    *out = NULL;
    if (!data && size) return sl__err_set(err, SL_E_INVALID, "index load: data is NULL");
    void *copy = malloc(size ? size : 1);
    if (!copy) return sl__err_set(err, SL_E_NOMEM, "index load: out of memory");
    if (size) memcpy(copy, data, size);
    return sl__parse(out, copy, size, 1, "index buffer", params, err);
}
