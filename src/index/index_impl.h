/*
 * index/index_impl.h - the internal layout of sl_index shared by index.c (storage, ids, flat
 * search, deletes, compaction), hnsw_build.c, hnsw_search.c and hnsw_io.c.
 *
 * Slots: every stored vector lives in a slot 0..n-1 (uint32). ids[s] is its caller id, dead[s]
 * is 1 once removed (the slot keeps its vector and links until sl_index_compact).
 * Graph (HNSW): link0 holds, per slot, 1 + M0 uint32 (count, then neighbours) for layer 0;
 * upper[s] holds levels[s] lists of 1 + M uint32 for layers 1..levels[s]. Neighbour ids are
 * always < n. Lists are written under the node's stripe lock with atomic stores (count last,
 * release) and read lock-free with atomic loads, so readers see a possibly stale but always
 * valid list.
 *
 * Locking (docs/index.md): `rw` is held shared by searches and by the linking phase of an add;
 * exclusively by anything that moves or frees memory (growing arrays, writing vectors, remove,
 * compact). `wmu` serializes writers. `ep` packs (level << 32 | slot) of the entry point and is
 * updated atomically.
 */
#ifndef SL_INDEX_IMPL_H
#define SL_INDEX_IMPL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stddef.h>
#include <string.h>

#include "shoplens/index.h"
#include "index/distance.h"
#include "util/util.h"

#define SL__NO_SLOT UINT32_MAX
#define SL__EP_EMPTY UINT64_MAX
#define SL__LEVEL_MAX 15
#define SL__NODE_LOCKS 4096
#define SL__SLOTS_MAX ((uint64_t)UINT32_MAX - 1)

typedef struct sl__pair { float d; uint32_t s; } sl__pair;

/* Binary heap of pairs; max-heap (worst on top) or min-heap (best on top). */
typedef struct sl__heap { sl__pair *a; size_t n, cap; } sl__heap;

/* Per-search scratch, taken from the index's pool: visited tags with epochs, heaps, query. */
typedef struct sl__scratch {
    uint16_t *tags; size_t ntags; uint16_t epoch;
    sl__heap cand, res;
    float *q;            /* prepared query (normalized for cosine) */
    uint8_t *qu;         /* query quantized for int8 storage (offset by 128) */
    int8_t *q4;          /* the same, signed, zero-padded to 64-dimension blocks (prefilter) */
    uint32_t *nb;        /* neighbour staging, capacity M0 + 1 */
    sl__pair *tmp; size_t ntmp;
} sl__scratch;

/* A prepared query: how to compute the traversal distance to a slot. */
typedef struct sl__query {
    const float *q;
    float qn2;           /* |q|^2 (int8 L2) */
    int use_codes;       /* traverse compressed codes (then re-score exactly unless codes only) */
    const uint8_t *qu;   /* int8 storage: round(q / qscale) + 128 */
    float qscale;
} sl__query;

/* Filter compiled for one search. */
typedef struct sl__filt {
    const sl_index_filter *f;
    const uint8_t *slotbits;  /* allowed-list compiled to a slot bitmap, or NULL */
} sl__filt;

/* A layer search (sl__search_layer's signature); see hnsw_layer.h. */
typedef int (*sl__layer_fn)(sl_index *idx, sl__scratch *s, const sl__query *q, const float *v,
                            uint32_t self, uint32_t ep, int level, size_t ef, const sl__filt *filt);

struct sl_index {
    int dim;
    sl_index_metric metric;
    sl_index_kind kind;
    sl_index_storage storage;
    int M, M0, ef_construction;
    _Atomic int threads;
    _Atomic int ef_search;
    _Atomic double filter_exact_below;
    _Atomic uint64_t rescore_below; /* sl_index_set_rescore_below */
    uint64_t seed;
    double level_mult;
    const sl__dist_kernels *K;
    sl__layer_fn layer_f32;     /* float32 traversal with inlined kernels, or NULL (portable) */
    size_t code_size;           /* bytes per vector in codes (0 for F32) */

    pthread_rwlock_t rw;
    pthread_mutex_t wmu;
    pthread_mutex_t node_mu[SL__NODE_LOCKS];
    pthread_mutex_t err_mu;
    char errmsg[SL_ERROR_MSG_MAX];

    size_t n, cap;              /* slots used, allocated */
    uint64_t n_dead;
    uint64_t *ids;
    uint8_t *dead;
    uint8_t *levels;
    float *vec;                 /* n * dim floats (heap or mapped); NULL with SL_INDEX_INT8_ONLY */
    unsigned char *codes;       /* n * code_size (heap or mapped), NULL for F32 */
    uint32_t *link0;            /* cap * (1 + M0) */
    uint32_t **upper;           /* cap pointers */
    _Atomic uint64_t ep;
    sl__rng rng;

    /* id -> slot, open addressing with linear probing; hval == SL__NO_SLOT is empty */
    uint64_t *hkey;
    uint32_t *hval;
    size_t hcap, hcount;

    /* 4-bit prefilter of flat int8 scans (sl_index_set_prefilter; heap only, never saved): c4
     * holds cap rows of c4_row bytes (dot_q4_x4's layout; nibble u = v / scale + 8, rounded
     * half up and clamped to 0..15), c4h cap pairs (scale, |v|^2). NULL while it is off. */
    double prefilter;           /* 0 off, else the 4-bit pass keeps ceil(prefilter * r) */
    size_t c4_row;
    uint8_t *c4;
    float *c4h;

    /* memory-mapped (or, for load_mem, heap-copied) file image holding vec/codes */
    void *map; size_t map_len; int map_is_heap;
    int vec_mapped, codes_mapped;

    pthread_mutex_t pool_mu;
    sl__scratch **pool; size_t npool, cappool;
};

/* ---- index.c ---- */
sl_status sl__idx_fail(sl_index *idx, sl_status code, const char *fmt, ...) SL__PRINTF(3, 4);
uint32_t sl__idmap_get(const sl_index *idx, uint64_t id);
sl_status sl__idmap_put(sl_index *idx, uint64_t id, uint32_t slot);
void sl__idmap_del(sl_index *idx, uint64_t id);
sl_status sl__idmap_rebuild(sl_index *idx);
sl_status sl__index_alloc(sl_index **out, int dim, sl_index_metric metric, sl_index_kind kind,
                          const sl_index_params *params, sl_error *err);
int sl__filt_pass(const sl_index *idx, const sl__filt *f, uint32_t s);
size_t sl__mem_bytes(const sl_index *idx);
/* madvise(MADV_HUGEPAGE) on the 2 MiB-aligned interior of a large array (advisory). */
void sl__advise_huge(void *p, size_t bytes);

/* ---- heaps (hnsw_search.c) ---- */
int sl__heap_reserve(sl__heap *h, size_t cap);
int sl__pair_cmp(const void *a, const void *b);
/* Sorts by sl__pair_cmp (insertion sort for short arrays, the inner loop of every search). */
void sl__pair_sort(sl__pair *a, size_t n);

/* Inline: they run for every distance computed by a search. Capacity is the caller's job. */
static inline void sl__maxheap_push(sl__heap *h, sl__pair p) {
    size_t i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!(h->a[parent].d < p.d)) break;
        h->a[i] = h->a[parent];
        i = parent;
    }
    h->a[i] = p;
}

static inline void sl__maxheap_pop(sl__heap *h) {
    sl__pair last = h->a[--h->n];
    size_t i = 0, n = h->n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && h->a[c + 1].d > h->a[c].d) c++;
        if (!(h->a[c].d > last.d)) break;
        h->a[i] = h->a[c];
        i = c;
    }
    if (n) h->a[i] = last;
}

static inline void sl__minheap_push(sl__heap *h, sl__pair p) {
    size_t i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!(h->a[parent].d > p.d)) break;
        h->a[i] = h->a[parent];
        i = parent;
    }
    h->a[i] = p;
}

static inline void sl__minheap_pop(sl__heap *h) {
    sl__pair last = h->a[--h->n];
    size_t i = 0, n = h->n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && h->a[c + 1].d < h->a[c].d) c++;
        if (!(h->a[c].d < last.d)) break;
        h->a[i] = h->a[c];
        i = c;
    }
    if (n) h->a[i] = last;
}

/* Replaces the top of a max-heap by p and restores the heap (= push p then pop the top, when
 * p is not worse than the top, in one sift). */
static inline void sl__maxheap_replace_top(sl__heap *h, sl__pair p) {
    size_t i = 0, n = h->n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && h->a[c + 1].d > h->a[c].d) c++;
        if (!(h->a[c].d > p.d)) break;
        h->a[i] = h->a[c];
        i = c;
    }
    h->a[i] = p;
}

/* The next visited-tag epoch of a scratch (tags are cleared only when the epoch wraps). */
static inline uint16_t sl__next_epoch(sl__scratch *s) {
    if (++s->epoch == 0) {
        memset(s->tags, 0, s->ntags * sizeof *s->tags);
        s->epoch = 1;
    }
    return s->epoch;
}

/* ---- hnsw_search.c ---- */
sl__scratch *sl__scratch_get(sl_index *idx);
void sl__scratch_put(sl_index *idx, sl__scratch *s);
void sl__scratch_free(sl__scratch *s);
/* ef-search of one layer from entry `ep`; results (passing the filter, live unless
 * include_dead) are left in s->res (a max-heap). `self` is excluded (build), or SL__NO_SLOT.
 * q == NULL means the exact distance to slot `self`'s vector `v`. */
int sl__search_layer(sl_index *idx, sl__scratch *s, const sl__query *q, const float *v,
                     uint32_t self, uint32_t ep, int level, size_t ef, const sl__filt *filt);
/* Greedy descent from the entry point to layer `stop_level` + 1 ... returns the start slot. */
uint32_t sl__greedy(const sl_index *idx, const sl__query *q, const float *v, uint32_t cur,
                    int from_level, int to_level);
/* The float32 layer search with inlined AVX-512 kernels for dimension dim
 * (hnsw_search_avx512.c), or NULL when the library was built without AVX-512 support. Call it
 * only when the kernel table in use is an AVX-512 one (level 3: the CPU has it and
 * SL_INDEX_SIMD does not cap it); the function itself is compiled with -mavx512f. */
sl__layer_fn sl__layer_f32_avx512(int dim);
/* Graph search into s->res (max-heap of at most ef). */
int sl__hnsw_search(sl_index *idx, sl__scratch *s, const sl__query *q, size_t ef,
                    const sl__filt *filt);


/* Exact distance (lower is better) of vector v to slot b; traversal distance of a prepared
 * query to slot s (codes when compressed). Inline: they are the inner loop of every search. */
static inline float sl__dist_raw(const sl_index *idx, const float *a, const float *b) {
    if (idx->metric == SL_INDEX_L2) return idx->K->l2_f32(a, b, (size_t)idx->dim);
    return -idx->K->dot_f32(a, b, (size_t)idx->dim);
}

static inline float sl__dist_vec(const sl_index *idx, const float *v, uint32_t b) {
    return sl__dist_raw(idx, v, idx->vec + (size_t)b * (size_t)idx->dim);
}

/* Storage tests: int8 codes (with or without the float32 rows), codes only. */
static inline int sl__is_int8(const sl_index *idx) {
    return idx->storage == SL_INDEX_INT8 || idx->storage == SL_INDEX_INT8_ONLY;
}
static inline int sl__codes_only(const sl_index *idx) { return idx->storage == SL_INDEX_INT8_ONLY; }

/* Traversal distance of an int8 code row c (header: scale, |x|^2 of the reconstruction, sum of
 * the codes) from its exact integer dot product with the query's codes, sum (qu - 128) * code. */
static inline float sl__dist_int8(const sl_index *idx, const sl__query *q, const unsigned char *c,
                                  int64_t dot) {
    float hdr[2];
    memcpy(hdr, c, sizeof hdr);
    float ip = q->qscale * hdr[0] * (float)dot;
    if (idx->metric == SL_INDEX_L2) return q->qn2 - 2.0f * ip + hdr[1];
    return -ip;
}

static inline float sl__dist_query(const sl_index *idx, const sl__query *q, uint32_t s) {
    size_t d = (size_t)idx->dim;
    if (!q->use_codes) return sl__dist_raw(idx, q->q, idx->vec + (size_t)s * d);
    const unsigned char *c = idx->codes + (size_t)s * idx->code_size;
    if (idx->storage == SL_INDEX_F16) {
        const uint16_t *h = (const uint16_t *)(const void *)c;
        if (idx->metric == SL_INDEX_L2) return idx->K->l2_f16(q->q, h, d);
        return -idx->K->dot_f16(q->q, h, d);
    }
    int64_t dot;
    if (idx->K->dot_q8s8) {
        /* the query bytes are in [1, 255] (sl__prep_query clamps to +-127), as dot_q8s8 needs */
        dot = idx->K->dot_q8s8(q->qu, (const int8_t *)(c + 16), d);
    } else {
        int32_t sumc; /* 64-bit below: sumc comes from the file and is only trusted as a number */
        memcpy(&sumc, c + 8, sizeof sumc);
        dot = (int64_t)idx->K->dot_u8s8(q->qu, (const int8_t *)(c + 16), d) - 128 * (int64_t)sumc;
    }
    return sl__dist_int8(idx, q, c, dot);
}

/* A stored slot as the base of distances between stored vectors (build, repair, compaction):
 * its float32 row, or with codes only (no rows) its int8 code read as a prepared query - the
 * same bytes sl__prep_query makes from the vector the code was encoded from (both round v /
 * (max |v| / 127) and clamp to +-127), so a node is searched for during its insert exactly as a
 * query equal to its vector would be. qu: dim bytes of the caller's scratch, used with codes
 * only, valid while the base is in use. */
typedef struct sl__base { const float *v; sl__query q; } sl__base;

static inline void sl__base_of(const sl_index *idx, uint32_t s, uint8_t *qu, sl__base *b) {
    size_t d = (size_t)idx->dim;
    if (!sl__codes_only(idx)) {
        b->v = idx->vec + (size_t)s * d;
        return;
    }
    const unsigned char *c = idx->codes + (size_t)s * idx->code_size;
    const int8_t *x = (const int8_t *)(c + 16);
    float hdr[2];
    memcpy(hdr, c, sizeof hdr);
    for (size_t i = 0; i < d; i++) qu[i] = (uint8_t)(x[i] + 128);
    b->v = NULL;
    b->q.q = NULL;
    b->q.qn2 = hdr[1];
    b->q.use_codes = 1;
    b->q.qu = qu;
    b->q.qscale = hdr[0];
}

/* Distance of slot x from a base. */
static inline float sl__dist_base(const sl_index *idx, const sl__base *b, uint32_t x) {
    return b->v ? sl__dist_vec(idx, b->v, x) : sl__dist_query(idx, &b->q, x);
}

static inline uint32_t *sl__links(const sl_index *idx, uint32_t s, int level) {
    if (level == 0) return idx->link0 + (size_t)s * (size_t)(1 + idx->M0);
    return idx->upper[s] + (size_t)(level - 1) * (size_t)(1 + idx->M);
}
static inline int sl__maxdeg(const sl_index *idx, int level) { return level == 0 ? idx->M0 : idx->M; }

/* ---- hnsw_build.c ---- */
/* Links slots [from, to) into the graph with `threads` threads (caller holds rw shared). */
sl_status sl__hnsw_link(sl_index *idx, size_t from, size_t to, int threads);
/* Heuristic neighbour selection (Malkov & Yashunin, Algorithm 4) of at most m among cand
 * (sorted ascending by distance to the base), in place; returns the count kept. */
size_t sl__select_heuristic(const sl_index *idx, sl__pair *cand, size_t n, size_t m, uint8_t *qu);
/* Repairs the lists pointing at removed slot `s` (caller holds rw exclusively). */
void sl__hnsw_repair(sl_index *idx, uint32_t s);
/* Picks a live entry point with the highest level (after removals). */
void sl__hnsw_pick_entry(sl_index *idx);
sl_status sl__hnsw_compact_links(sl_index *idx, const uint32_t *newslot, size_t n_new,
                                 uint32_t *link0_new, uint32_t **upper_new);

/* ---- crc32c.c ---- */
uint32_t sl__crc32c(uint32_t crc, const void *data, size_t n);

#endif
