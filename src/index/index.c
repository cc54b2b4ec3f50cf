/*
 * index/index.c - the vector index handle: parameters, slot storage (float32 plus optional float16
 * or int8 codes, and 4-bit prefilter rows built from the int8 codes), the id map,
 * adds/replaces, removes, compaction, exact (flat) search, filters and the search entry points
 * that dispatch to HNSW (hnsw_search.c).
 *
 * Invariants:
 * - Slots 0..n-1 hold complete vectors before n is published; n only grows under the exclusive
 *   lock, so a search (shared lock) never sees a half-written vector.
 * - hkey/hval map every live id to its slot and nothing else; dead[s] == 1 exactly for removed
 *   (or replaced) slots, n_dead counts them.
 * - Distances are "lower is better" internally: -dot for cosine/IP, squared L2 for L2; cosine
 *   vectors and queries are normalized, so the cosine score is -distance.
 * - Filtered search: the selectivity is measured (exactly for an id list, by sampling otherwise);
 *   below filter_exact_below the allowed items are scanned exactly, above it the graph search
 *   keeps exploring until ef allowed items are found (as in hnswlib's filtered search).
 * - With the prefilter on (c4 != NULL), every slot 0..n-1 has its 4-bit row, written with its
 *   int8 code under the exclusive lock.
 * - With codes only (SL_INDEX_INT8_ONLY) vec is NULL: nothing reads float32 rows, scans and
 *   searches keep the code distances as the final ones (no re-scoring).
 */
#include "index/index_impl.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

sl_status sl__idx_fail(sl_index *idx, sl_status code, const char *fmt, ...) {
    if (!idx) return code;
    pthread_mutex_lock(&idx->err_mu);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(idx->errmsg, sizeof idx->errmsg, fmt, ap);
    va_end(ap);
    pthread_mutex_unlock(&idx->err_mu);
    return code;
}

const char *sl_index_errmsg(const sl_index *idx) { return idx ? idx->errmsg : "no index"; }

void sl_index_params_default(sl_index_params *p) {
    if (!p) return;
    memset(p, 0, sizeof *p);
    p->M = SL_INDEX_M_DEFAULT;
    p->ef_construction = SL_INDEX_EF_CONSTRUCTION_DEFAULT;
    p->ef_search = SL_INDEX_EF_SEARCH_DEFAULT;
    p->threads = SL_INDEX_THREADS_DEFAULT;
    p->seed = SL_INDEX_SEED_DEFAULT;
    p->storage = SL_INDEX_F32;
    p->filter_exact_below = SL_INDEX_FILTER_EXACT_BELOW_DEFAULT;
}

static int sl__ncpu(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    if (n > SL_INDEX_THREADS_MAX) n = SL_INDEX_THREADS_MAX;
    return (int)n;
}

/* ---- id map ---------------------------------------------------------------------------- */

static inline size_t sl__hash64(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL; x ^= x >> 33;
    return (size_t)x;
}

uint32_t sl__idmap_get(const sl_index *idx, uint64_t id) {
    if (!idx->hcap) return SL__NO_SLOT;
    size_t mask = idx->hcap - 1, i = sl__hash64(id) & mask;
    while (idx->hval[i] != SL__NO_SLOT) {
        if (idx->hkey[i] == id) return idx->hval[i];
        i = (i + 1) & mask;
    }
    return SL__NO_SLOT;
}

static sl_status sl__idmap_grow(sl_index *idx, size_t need) {
    if (need * 10 < idx->hcap * 7) return SL_OK;
    size_t cap = idx->hcap ? idx->hcap : 64;
    while (need * 10 >= cap * 7) {
        if (cap > SIZE_MAX / 4) return SL_E_NOMEM;
        cap *= 2;
    }
    uint64_t *k = sl__mallocarray(cap, sizeof *k);
    uint32_t *v = sl__mallocarray(cap, sizeof *v);
    if (!k || !v) { free(k); free(v); return SL_E_NOMEM; }
    memset(v, 0xff, cap * sizeof *v);
    for (size_t i = 0; i < idx->hcap; i++) {
        if (idx->hval[i] == SL__NO_SLOT) continue;
        size_t j = sl__hash64(idx->hkey[i]) & (cap - 1);
        while (v[j] != SL__NO_SLOT) j = (j + 1) & (cap - 1);
        k[j] = idx->hkey[i];
        v[j] = idx->hval[i];
    }
    free(idx->hkey); free(idx->hval);
    idx->hkey = k; idx->hval = v; idx->hcap = cap;
    return SL_OK;
}

sl_status sl__idmap_put(sl_index *idx, uint64_t id, uint32_t slot) {
    if (sl__idmap_grow(idx, idx->hcount + 1) != SL_OK) return SL_E_NOMEM;
    size_t mask = idx->hcap - 1, i = sl__hash64(id) & mask;
    while (idx->hval[i] != SL__NO_SLOT) {
        if (idx->hkey[i] == id) { idx->hval[i] = slot; return SL_OK; }
        i = (i + 1) & mask;
    }
    idx->hkey[i] = id;
    idx->hval[i] = slot;
    idx->hcount++;
    return SL_OK;
}

/* Backward-shift deletion keeps probe sequences intact without tombstones. */
void sl__idmap_del(sl_index *idx, uint64_t id) {
    if (!idx->hcap) return;
    size_t mask = idx->hcap - 1, i = sl__hash64(id) & mask;
    while (idx->hval[i] != SL__NO_SLOT && idx->hkey[i] != id) i = (i + 1) & mask;
    if (idx->hval[i] == SL__NO_SLOT) return;
    idx->hcount--;
    for (;;) {
        idx->hval[i] = SL__NO_SLOT;
        size_t j = i;
        for (;;) {
            j = (j + 1) & mask;
            if (idx->hval[j] == SL__NO_SLOT) return;
            size_t h = sl__hash64(idx->hkey[j]) & mask;
            /* move j to i if its home h is not cyclically in (i, j] */
            if ((i <= j) ? (h <= i || h > j) : (h <= i && h > j)) break;
        }
        idx->hkey[i] = idx->hkey[j];
        idx->hval[i] = idx->hval[j];
        i = j;
    }
}

sl_status sl__idmap_rebuild(sl_index *idx) {
    free(idx->hkey); free(idx->hval);
    idx->hkey = NULL; idx->hval = NULL; idx->hcap = idx->hcount = 0;
    if (sl__idmap_grow(idx, idx->n + 1) != SL_OK) return SL_E_NOMEM;
    for (size_t s = 0; s < idx->n; s++) {
        if (idx->dead[s]) continue;
        if (sl__idmap_get(idx, idx->ids[s]) != SL__NO_SLOT) return SL_E_CORRUPT;
        if (sl__idmap_put(idx, idx->ids[s], (uint32_t)s) != SL_OK) return SL_E_NOMEM;
    }
    return SL_OK;
}

/* ---- construction ---------------------------------------------------------------------- */

sl_status sl__index_alloc(sl_index **out, int dim, sl_index_metric metric, sl_index_kind kind,
                          const sl_index_params *params, sl_error *err) {
    *out = NULL;
    sl_index_params p;
    sl_index_params_default(&p);
    if (params) {
        if (params->M) p.M = params->M;
        if (params->ef_construction) p.ef_construction = params->ef_construction;
        if (params->ef_search) p.ef_search = params->ef_search;
        p.threads = params->threads;
        if (params->seed) p.seed = params->seed;
        p.storage = params->storage;
        if (params->filter_exact_below != 0) p.filter_exact_below = params->filter_exact_below;
    }
    if (dim < SL_INDEX_DIM_MIN || dim > SL_INDEX_DIM_MAX)
        return sl__err_set(err, SL_E_INVALID, "index: dim %d out of [%d, %d]", dim, SL_INDEX_DIM_MIN, SL_INDEX_DIM_MAX);
    if (metric != SL_INDEX_COSINE && metric != SL_INDEX_IP && metric != SL_INDEX_L2)
        return sl__err_set(err, SL_E_INVALID, "index: unknown metric %d", (int)metric);
    if (kind != SL_INDEX_FLAT && kind != SL_INDEX_HNSW)
        return sl__err_set(err, SL_E_INVALID, "index: unknown kind %d", (int)kind);
    if (p.storage != SL_INDEX_F32 && p.storage != SL_INDEX_F16 && p.storage != SL_INDEX_INT8 &&
        p.storage != SL_INDEX_INT8_ONLY)
        return sl__err_set(err, SL_E_INVALID, "index: unknown storage %d", (int)p.storage);
    if (p.M < SL_INDEX_M_MIN || p.M > SL_INDEX_M_MAX)
        return sl__err_set(err, SL_E_INVALID, "index: M %d out of [%d, %d]", p.M, SL_INDEX_M_MIN, SL_INDEX_M_MAX);
    if (p.ef_construction < SL_INDEX_EF_CONSTRUCTION_MIN || p.ef_construction > SL_INDEX_EF_CONSTRUCTION_MAX)
        return sl__err_set(err, SL_E_INVALID, "index: ef_construction %d out of [%d, %d]", p.ef_construction,
                           SL_INDEX_EF_CONSTRUCTION_MIN, SL_INDEX_EF_CONSTRUCTION_MAX);
    if (p.ef_search < SL_INDEX_EF_SEARCH_MIN || p.ef_search > SL_INDEX_EF_SEARCH_MAX)
        return sl__err_set(err, SL_E_INVALID, "index: ef_search %d out of [%d, %d]", p.ef_search,
                           SL_INDEX_EF_SEARCH_MIN, SL_INDEX_EF_SEARCH_MAX);
    if (p.threads < 0 || p.threads > SL_INDEX_THREADS_MAX)
        return sl__err_set(err, SL_E_INVALID, "index: threads %d out of [0, %d]", p.threads, SL_INDEX_THREADS_MAX);
    if (!(p.filter_exact_below >= SL_INDEX_FILTER_EXACT_BELOW_MIN && p.filter_exact_below <= SL_INDEX_FILTER_EXACT_BELOW_MAX))
        return sl__err_set(err, SL_E_INVALID, "index: filter_exact_below out of [0, 1]");

    sl_index *idx = calloc(1, sizeof *idx);
    if (!idx) return sl__err_set(err, SL_E_NOMEM, "index: out of memory");
    idx->dim = dim;
    idx->metric = metric;
    idx->kind = kind;
    idx->storage = p.storage;
    idx->M = p.M;
    idx->M0 = 2 * p.M;
    idx->ef_construction = p.ef_construction;
    atomic_init(&idx->ef_search, p.ef_search);
    atomic_init(&idx->filter_exact_below, p.filter_exact_below);
    atomic_init(&idx->rescore_below, SL_INDEX_RESCORE_BELOW_ALL);
    atomic_init(&idx->threads, p.threads ? p.threads : sl__ncpu());
    idx->seed = p.seed;
    idx->level_mult = 1.0 / log((double)p.M);
    idx->K = sl__dist_best();
    idx->layer_f32 = idx->K->level == 3 ? sl__layer_f32_avx512(dim) : NULL;
    if (p.storage == SL_INDEX_F16) idx->code_size = (size_t)dim * 2;
    else if (p.storage == SL_INDEX_INT8 || p.storage == SL_INDEX_INT8_ONLY)
        idx->code_size = 16 + (((size_t)dim + 7) & ~(size_t)7);
    atomic_init(&idx->ep, SL__EP_EMPTY);
    sl__rng_seed(&idx->rng, p.seed);
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&idx->rw, &ra);
    pthread_rwlockattr_destroy(&ra);
    pthread_mutex_init(&idx->wmu, NULL);
    pthread_mutex_init(&idx->err_mu, NULL);
    pthread_mutex_init(&idx->pool_mu, NULL);
    for (int i = 0; i < SL__NODE_LOCKS; i++) pthread_mutex_init(&idx->node_mu[i], NULL);
    *out = idx;
    return SL_OK;
}

sl_status sl_index_new(sl_index **out, int dim, sl_index_metric metric, sl_index_kind kind,
                       const sl_index_params *params, sl_error *err) {
    if (!out) return sl__err_set(err, SL_E_INVALID, "index: out is NULL");
    return sl__index_alloc(out, dim, metric, kind, params, err);
}

static void sl__unmap(sl_index *idx) {
    if (!idx->map) return;
    if (idx->map_is_heap) free(idx->map);
    else munmap(idx->map, idx->map_len);
    idx->map = NULL;
    idx->map_len = 0;
    idx->vec_mapped = idx->codes_mapped = 0;
}

void sl_index_free(sl_index *idx) {
    if (!idx) return;
    if (!idx->vec_mapped) free(idx->vec);
    if (!idx->codes_mapped) free(idx->codes);
    free(idx->c4);
    free(idx->c4h);
    sl__unmap(idx);
    if (idx->upper)
        for (size_t s = 0; s < idx->n; s++) free(idx->upper[s]);
    free(idx->upper);
    free(idx->link0);
    free(idx->ids);
    free(idx->dead);
    free(idx->levels);
    free(idx->hkey);
    free(idx->hval);
    for (size_t i = 0; i < idx->npool; i++) sl__scratch_free(idx->pool[i]);
    free(idx->pool);
    pthread_rwlock_destroy(&idx->rw);
    pthread_mutex_destroy(&idx->wmu);
    pthread_mutex_destroy(&idx->err_mu);
    pthread_mutex_destroy(&idx->pool_mu);
    for (int i = 0; i < SL__NODE_LOCKS; i++) pthread_mutex_destroy(&idx->node_mu[i]);
    free(idx);
}

/* ---- distances ------------------------------------------------------------------------- */

static void sl__encode(const sl_index *idx, const float *v, unsigned char *c) {
    size_t d = (size_t)idx->dim;
    if (idx->storage == SL_INDEX_F16) {
        uint16_t *h = (uint16_t *)(void *)c;
        for (size_t i = 0; i < d; i++) h[i] = sl__f32_to_f16(v[i]);
        return;
    }
    float mx = 0;
    for (size_t i = 0; i < d; i++) mx = fmaxf(mx, fabsf(v[i]));
    float scale = mx > 0 ? mx / 127.0f : 1.0f, n2 = 0;
    int8_t *q = (int8_t *)(c + 16);
    memset(c, 0, idx->code_size);
    int32_t sum = 0;
    for (size_t i = 0; i < d; i++) {
        float r = roundf(v[i] / scale);
        if (r > 127) r = 127;
        if (r < -127) r = -127;
        q[i] = (int8_t)r;
        sum += (int32_t)r;
        n2 += (r * scale) * (r * scale);
    }
    float hdr[2] = { scale, n2 };
    memcpy(c, hdr, sizeof hdr);
    memcpy(c + 8, &sum, sizeof sum);
}

/* The 4-bit prefilter row (see index_impl.h) of a vector from its int8 code c (sl__encode's
 * layout), not from the floats: a loaded index then reads the int8 codes (a quarter of the
 * floats' bytes, memory-mapped) to build its rows, and a vector gets the same row whether it was
 * added or loaded. The scale clips at 8 x the RMS of the code (or its largest magnitude when
 * smaller) over the 7 steps above zero: clipping the rare large values keeps resolution for the
 * many small ones, which measured a better recall of the int8 candidates than plain max
 * scaling (docs/index.md). */
static void sl__encode4(const sl_index *idx, const unsigned char *c, uint8_t *row, float *hdr) {
    size_t d = (size_t)idx->dim;
    const int8_t *x = (const int8_t *)(c + 16);
    float h8[2];
    memcpy(h8, c, sizeof h8);
    int mx;
    uint32_t ss;
    idx->K->q4_stats(x, d, &mx, &ss);
    float clip = (float)(8.0 * sqrt((double)ss / (double)d)), lim = (float)mx < clip ? (float)mx : clip;
    float step = lim > 0 ? lim / 7.0f : 1.0f, inv = 1.0f / step;
    /* u(v) = floor(v / step + 8.5) clamped to 0..15 is non-decreasing in v, so u(x) counts the
     * k = 1..15 whose threshold t[k - 1] = the smallest v with u(v) >= k is <= x */
    int8_t t[15];
    int k = 1;
    for (int v = -128; v < 128 && k <= 15; v++) {
        float f = (float)v * inv + 8.5f;
        int u = (int)(f < 0.0f ? 0.0f : f > 15.0f ? 15.0f : f);
        while (k <= u && k <= 15) t[k++ - 1] = (int8_t)v;
    }
    while (k <= 15) t[k++ - 1] = 127; /* not reached with codes <= 127 in magnitude */
    idx->K->q4_pack(x, d, t, row);
    hdr[0] = h8[0] * step; /* value of one 4-bit step */
    hdr[1] = h8[1];        /* |v|^2 of the int8 code */
}

size_t sl__mem_bytes(const sl_index *idx) {
    size_t b = sizeof *idx, d = (size_t)idx->dim;
    b += idx->cap * (sizeof(uint64_t) + 2);
    if (!idx->vec_mapped && !sl__codes_only(idx)) b += idx->cap * d * sizeof(float);
    if (idx->codes && !idx->codes_mapped) b += idx->cap * idx->code_size;
    if (idx->c4) b += idx->cap * (idx->c4_row + 2 * sizeof(float));
    if (idx->kind == SL_INDEX_HNSW) {
        b += idx->cap * ((size_t)(1 + idx->M0) * 4 + sizeof(uint32_t *));
        for (size_t s = 0; s < idx->n; s++) b += (size_t)idx->levels[s] * (size_t)(1 + idx->M) * 4;
    }
    b += idx->hcap * (sizeof(uint64_t) + sizeof(uint32_t));
    return b;
}

/* ---- storage --------------------------------------------------------------------------- */

/* Asks for transparent huge pages on the 2 MiB-aligned interior of a large array: the graph and
 * vectors are read at random, and 4 KiB pages make nearly every access a TLB miss. Advisory. */
void sl__advise_huge(void *p, size_t bytes) {
#ifdef MADV_HUGEPAGE
    const uintptr_t huge = (uintptr_t)2 << 20;
    uintptr_t a = ((uintptr_t)p + huge - 1) & ~(huge - 1), e = ((uintptr_t)p + bytes) & ~(huge - 1);
    if (bytes >= 2 * huge && e > a) (void)madvise((void *)a, e - a, MADV_HUGEPAGE);
#else
    (void)p; (void)bytes;
#endif
}

static void *sl__grow_array(void *p, size_t old_n, size_t new_n, size_t elem) {
    void *q = sl__reallocarray(p, new_n, elem);
    if (!q) return NULL;
    sl__advise_huge(q, new_n * elem);  /* before the first touch, or the pages are already 4 KiB */
    if (new_n > old_n) memset((char *)q + old_n * elem, 0, (new_n - old_n) * elem);
    return q;
}

/* Copies memory-mapped vectors/codes into the heap so they can grow (caller holds rw excl). */
static sl_status sl__materialize(sl_index *idx, size_t cap) {
    size_t d = (size_t)idx->dim, bytes;
    if (idx->vec_mapped) {
        if (sl__mul_size(cap, d * sizeof(float), &bytes) != 0) return SL_E_NOMEM;
        float *v = malloc(bytes ? bytes : 1);
        if (!v) return SL_E_NOMEM;
        sl__advise_huge(v, bytes);
        if (idx->n) memcpy(v, idx->vec, idx->n * d * sizeof(float));
        idx->vec = v;
        idx->vec_mapped = 0;
    }
    if (idx->codes_mapped) {
        if (sl__mul_size(cap, idx->code_size, &bytes) != 0) return SL_E_NOMEM;
        unsigned char *c = malloc(bytes ? bytes : 1);
        if (!c) return SL_E_NOMEM;
        sl__advise_huge(c, bytes);
        if (idx->n) memcpy(c, idx->codes, idx->n * idx->code_size);
        idx->codes = c;
        idx->codes_mapped = 0;
    }
    sl__unmap(idx);
    return SL_OK;
}

/* Ensures room for `need` slots (caller holds rw exclusively). */
static sl_status sl__reserve(sl_index *idx, size_t need) {
    if (need > SL__SLOTS_MAX) return SL_E_TOO_LARGE;
    if (need <= idx->cap && !idx->vec_mapped && !idx->codes_mapped) return SL_OK;
    size_t cap = idx->cap;
    if (need > cap) {
        cap = cap < 64 ? 64 : cap + cap / 2;
        if (cap < need) cap = need;
        if (cap > SL__SLOTS_MAX) cap = SL__SLOTS_MAX;
    }
    if (sl__materialize(idx, cap) != SL_OK) return SL_E_NOMEM;
    size_t old = idx->cap, d = (size_t)idx->dim, row;
    if (cap == old) return SL_OK;
    if (sl__mul_size(d, sizeof(float), &row) != 0) return SL_E_NOMEM;
    void *p;
    if (!sl__codes_only(idx)) {
        if (!(p = sl__grow_array(idx->vec, old, cap, row))) return SL_E_NOMEM;
        idx->vec = p;
    }
    if (idx->code_size) {
        if (!(p = sl__grow_array(idx->codes, old, cap, idx->code_size))) return SL_E_NOMEM;
        idx->codes = p;
    }
    if (idx->c4) {
        if (!(p = sl__grow_array(idx->c4, old, cap, idx->c4_row))) return SL_E_NOMEM;
        idx->c4 = p;
        if (!(p = sl__grow_array(idx->c4h, old, cap, 2 * sizeof(float)))) return SL_E_NOMEM;
        idx->c4h = p;
    }
    if (!(p = sl__grow_array(idx->ids, old, cap, sizeof(uint64_t)))) return SL_E_NOMEM;
    idx->ids = p;
    if (!(p = sl__grow_array(idx->dead, old, cap, 1))) return SL_E_NOMEM;
    idx->dead = p;
    if (!(p = sl__grow_array(idx->levels, old, cap, 1))) return SL_E_NOMEM;
    idx->levels = p;
    if (idx->kind == SL_INDEX_HNSW) {
        if (!(p = sl__grow_array(idx->link0, old, cap, (size_t)(1 + idx->M0) * 4))) return SL_E_NOMEM;
        idx->link0 = p;
        if (!(p = sl__grow_array(idx->upper, old, cap, sizeof(uint32_t *)))) return SL_E_NOMEM;
        idx->upper = p;
    }
    idx->cap = cap;
    return SL_OK;
}

static int sl__check_vec(const sl_index *idx, const float *v, float *norm_out) {
    double n2 = 0;
    for (int i = 0; i < idx->dim; i++) {
        if (!isfinite(v[i])) return -1;
        n2 += (double)v[i] * v[i];
    }
    if (!isfinite(n2)) return -1;
    if (idx->metric == SL_INDEX_COSINE && !(n2 > 0)) return -2;
    *norm_out = (float)sqrt(n2);
    return 0;
}

/* Writes vector v into slot s (caller holds rw exclusively); with codes only the normalized
 * vector goes through tmp (dim floats) into the code. */
static void sl__store(sl_index *idx, uint32_t s, const float *v, float norm, float *tmp) {
    size_t d = (size_t)idx->dim;
    float *dst = sl__codes_only(idx) ? tmp : idx->vec + (size_t)s * d;
    if (idx->metric == SL_INDEX_COSINE) {
        float inv = 1.0f / norm;
        for (size_t i = 0; i < d; i++) dst[i] = v[i] * inv;
    } else {
        memcpy(dst, v, d * sizeof(float));
    }
    if (idx->code_size) sl__encode(idx, dst, idx->codes + (size_t)s * idx->code_size);
    if (idx->c4)
        sl__encode4(idx, idx->codes + (size_t)s * idx->code_size, idx->c4 + (size_t)s * idx->c4_row,
                    idx->c4h + 2 * (size_t)s);
}

static int sl__random_level(sl_index *idx) {
    double u = sl__rng_uniform(&idx->rng);
    if (u <= 0) u = 1e-300;
    double l = -log(u) * idx->level_mult;
    return l >= SL__LEVEL_MAX ? SL__LEVEL_MAX : (int)l;
}

/* Marks slot s removed and repairs the graph around it (caller holds rw exclusively). */
static void sl__kill_slot(sl_index *idx, uint32_t s) {
    idx->dead[s] = 1;
    idx->n_dead++;
    if (idx->kind == SL_INDEX_HNSW) {
        sl__hnsw_repair(idx, s);
        uint64_t ep = atomic_load(&idx->ep);
        if (ep != SL__EP_EMPTY && (uint32_t)ep == s) sl__hnsw_pick_entry(idx);
    }
}

sl_status sl_index_add_batch(sl_index *idx, size_t n, const uint64_t *ids, const float *vecs) {
    if (!idx) return SL_E_INVALID;
    if (n == 0) return SL_OK;
    if (!ids || !vecs) return sl__idx_fail(idx, SL_E_INVALID, "index add: NULL ids or vectors");
    float *norms = sl__mallocarray(n, sizeof *norms);
    float *tmp = sl__codes_only(idx) ? sl__mallocarray((size_t)idx->dim, sizeof *tmp) : NULL;
    if (!norms || (sl__codes_only(idx) && !tmp)) {
        free(norms);
        free(tmp);
        return sl__idx_fail(idx, SL_E_NOMEM, "index add: out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        int r = sl__check_vec(idx, vecs + i * (size_t)idx->dim, &norms[i]);
        if (r != 0) {
            free(norms);
            free(tmp);
            return sl__idx_fail(idx, SL_E_INVALID, "index add: vector %zu (id %llu) %s", i,
                                (unsigned long long)ids[i], r == -1 ? "has a non-finite value" : "is zero (cosine)");
        }
    }
    pthread_mutex_lock(&idx->wmu);
    pthread_rwlock_wrlock(&idx->rw);
    size_t first = idx->n;
    sl_status st = SL_OK;
    if (first + n > SL__SLOTS_MAX) st = SL_E_TOO_LARGE;
    if (st == SL_OK) st = sl__reserve(idx, first + n);
    if (st == SL_OK && sl__idmap_grow(idx, idx->hcount + n) != SL_OK) st = SL_E_NOMEM;
    if (st != SL_OK) {
        pthread_rwlock_unlock(&idx->rw);
        pthread_mutex_unlock(&idx->wmu);
        free(norms);
        free(tmp);
        return sl__idx_fail(idx, st, "index add: cannot grow to %zu slots", first + n);
    }
    /* Nothing below can fail: the id map and arrays have room. */
    size_t m = first;
    for (size_t i = 0; i < n; i++) {
        uint32_t old = sl__idmap_get(idx, ids[i]);
        uint32_t s;
        if (old != SL__NO_SLOT && old >= first) {
            s = old;  /* repeated inside this batch: last vector wins */
        } else {
            if (old != SL__NO_SLOT) sl__kill_slot(idx, old);
            s = (uint32_t)m++;
            idx->ids[s] = ids[i];
            idx->dead[s] = 0;
            int lv = idx->kind == SL_INDEX_HNSW ? sl__random_level(idx) : 0;
            idx->levels[s] = (uint8_t)lv;
            if (idx->kind == SL_INDEX_HNSW) {
                idx->link0[(size_t)s * (size_t)(1 + idx->M0)] = 0;
                idx->upper[s] = NULL;
                if (lv > 0) {
                    idx->upper[s] = calloc((size_t)lv * (size_t)(1 + idx->M), sizeof(uint32_t));
                    if (!idx->upper[s]) { idx->levels[s] = 0; }  /* degrade: layer 0 only */
                }
            }
            (void)sl__idmap_put(idx, ids[i], s);
        }
        sl__store(idx, s, vecs + i * (size_t)idx->dim, norms[i], tmp);
    }
    idx->n = m;
    pthread_rwlock_unlock(&idx->rw);
    free(norms);
    free(tmp);
    if (idx->kind == SL_INDEX_HNSW && m > first) {
        pthread_rwlock_rdlock(&idx->rw);
        st = sl__hnsw_link(idx, first, m, idx->threads);
        pthread_rwlock_unlock(&idx->rw);
    }
    pthread_mutex_unlock(&idx->wmu);
    if (st != SL_OK) return sl__idx_fail(idx, st, "index add: linking failed (out of memory)");
    return SL_OK;
}

sl_status sl_index_add(sl_index *idx, uint64_t id, const float *vec) {
    return sl_index_add_batch(idx, 1, &id, vec);
}

sl_status sl_index_remove(sl_index *idx, uint64_t id) {
    if (!idx) return SL_E_INVALID;
    pthread_mutex_lock(&idx->wmu);
    pthread_rwlock_wrlock(&idx->rw);
    uint32_t s = sl__idmap_get(idx, id);
    if (s != SL__NO_SLOT) {
        sl__idmap_del(idx, id);
        sl__kill_slot(idx, s);
    }
    pthread_rwlock_unlock(&idx->rw);
    pthread_mutex_unlock(&idx->wmu);
    if (s == SL__NO_SLOT)
        return sl__idx_fail(idx, SL_E_NOT_FOUND, "index remove: id %llu not in the index", (unsigned long long)id);
    return SL_OK;
}

/* The new slot of every live slot: HNSW in breadth-first order of the layer-0 graph from the
 * entry point (neighbours in list order; live slots it does not reach follow in slot order), so
 * nodes that are searched together sit together in memory (graph reordering, Coleman et al.,
 * "Graph Reordering for Cache-Efficient Near Neighbor Search", NeurIPS 2022: BFS is one of the
 * orders measured there). Flat: slot order. Removed slots get SL__NO_SLOT. 0, or -1 (memory). */
static int sl__compact_order(const sl_index *idx, uint32_t *newslot) {
    size_t n = idx->n, j = 0;
    for (size_t s = 0; s < n; s++) newslot[s] = SL__NO_SLOT;
    uint64_t ep = atomic_load(&idx->ep);
    if (idx->kind == SL_INDEX_HNSW && ep != SL__EP_EMPTY && n) {
        uint32_t *queue = sl__mallocarray(n, sizeof *queue);
        if (!queue) return -1;
        size_t head = 0, tail = 0;
        uint32_t root = (uint32_t)ep;
        for (size_t r = 0; r <= n; r++) {
            /* the entry point first, then every live slot not reached yet, in slot order */
            uint32_t start = r == 0 ? root : (uint32_t)(r - 1);
            if (start >= n || idx->dead[start] || newslot[start] != SL__NO_SLOT) continue;
            newslot[start] = (uint32_t)j++;
            queue[tail++] = start;
            while (head < tail) {
                uint32_t c = queue[head++];
                const uint32_t *l = sl__links(idx, c, 0);
                size_t cnt = l[0] < (uint32_t)idx->M0 ? l[0] : (size_t)idx->M0;
                for (size_t t = 0; t < cnt; t++) {
                    uint32_t e = l[1 + t];
                    if (e >= n || idx->dead[e] || newslot[e] != SL__NO_SLOT) continue;
                    newslot[e] = (uint32_t)j++;
                    queue[tail++] = e;
                }
            }
        }
        free(queue);
        return 0;
    }
    for (size_t s = 0; s < n; s++)
        if (!idx->dead[s]) newslot[s] = (uint32_t)j++;
    return 0;
}

sl_status sl_index_compact(sl_index *idx) {
    if (!idx) return SL_E_INVALID;
    pthread_mutex_lock(&idx->wmu);
    pthread_rwlock_wrlock(&idx->rw);
    sl_status st = SL_OK;
    size_t n = idx->n, m = n - (size_t)idx->n_dead, d = (size_t)idx->dim;
    uint32_t *newslot = sl__mallocarray(n ? n : 1, sizeof *newslot);
    float *vec = sl__codes_only(idx) ? NULL : sl__mallocarray(m ? m : 1, d * sizeof(float));
    unsigned char *codes = idx->code_size ? sl__mallocarray(m ? m : 1, idx->code_size) : NULL;
    uint8_t *c4 = idx->c4 ? sl__mallocarray(m ? m : 1, idx->c4_row) : NULL;
    float *c4h = idx->c4 ? sl__mallocarray(m ? m : 1, 2 * sizeof(float)) : NULL;
    uint64_t *ids = sl__mallocarray(m ? m : 1, sizeof *ids);
    uint8_t *dead = calloc(m ? m : 1, 1), *levels = calloc(m ? m : 1, 1);
    uint32_t *link0 = NULL, **upper = NULL;
    if (idx->kind == SL_INDEX_HNSW) {
        link0 = sl__callocarray(m ? m : 1, (size_t)(1 + idx->M0) * 4);
        upper = sl__callocarray(m ? m : 1, sizeof *upper);
    }
    if (!newslot || (!vec && !sl__codes_only(idx)) || (idx->code_size && !codes) || (idx->c4 && (!c4 || !c4h)) || !ids || !dead || !levels ||
        (idx->kind == SL_INDEX_HNSW && (!link0 || !upper))) st = SL_E_NOMEM;
    if (st == SL_OK) {
        if (vec) sl__advise_huge(vec, (m ? m : 1) * d * sizeof(float));
        if (codes) sl__advise_huge(codes, (m ? m : 1) * idx->code_size);
        if (link0) sl__advise_huge(link0, (m ? m : 1) * (size_t)(1 + idx->M0) * 4);
    }
    if (st == SL_OK && sl__compact_order(idx, newslot) != 0) st = SL_E_NOMEM;
    if (st == SL_OK) {
        for (size_t s = 0; s < n; s++) {
            if (idx->dead[s]) continue;
            size_t j = newslot[s];
            if (vec) memcpy(vec + j * d, idx->vec + s * d, d * sizeof(float));
            if (codes) memcpy(codes + j * idx->code_size, idx->codes + s * idx->code_size, idx->code_size);
            if (c4) {
                memcpy(c4 + j * idx->c4_row, idx->c4 + s * idx->c4_row, idx->c4_row);
                memcpy(c4h + 2 * j, idx->c4h + 2 * s, 2 * sizeof(float));
            }
            ids[j] = idx->ids[s];
            levels[j] = idx->levels[s];
        }
        if (idx->kind == SL_INDEX_HNSW) st = sl__hnsw_compact_links(idx, newslot, m, link0, upper);
    }
    if (st != SL_OK) {
        free(newslot); free(vec); free(codes); free(c4); free(c4h); free(ids); free(dead); free(levels); free(link0);
        if (upper) for (size_t j = 0; j < m; j++) free(upper[j]);
        free(upper);
        pthread_rwlock_unlock(&idx->rw);
        pthread_mutex_unlock(&idx->wmu);
        return sl__idx_fail(idx, st, "index compact: out of memory");
    }
    uint64_t ep = atomic_load(&idx->ep);
    uint32_t eps = ep == SL__EP_EMPTY ? SL__NO_SLOT : newslot[(uint32_t)ep];
    if (!idx->vec_mapped) free(idx->vec);
    if (!idx->codes_mapped) free(idx->codes);
    free(idx->c4);
    free(idx->c4h);
    sl__unmap(idx);
    if (idx->upper) for (size_t s = 0; s < n; s++) free(idx->upper[s]);
    free(idx->upper); free(idx->link0); free(idx->ids); free(idx->dead); free(idx->levels);
    idx->vec = vec; idx->codes = codes; idx->ids = ids; idx->dead = dead; idx->levels = levels;
    idx->c4 = c4; idx->c4h = c4h;
    idx->link0 = link0; idx->upper = upper;
    idx->n = idx->cap = m;
    idx->n_dead = 0;
    if (idx->kind == SL_INDEX_HNSW) {
        if (eps == SL__NO_SLOT) sl__hnsw_pick_entry(idx);
        else atomic_store(&idx->ep, ((uint64_t)idx->levels[eps] << 32) | eps);
    }
    st = sl__idmap_rebuild(idx);
    free(newslot);
    pthread_rwlock_unlock(&idx->rw);
    pthread_mutex_unlock(&idx->wmu);
    if (st != SL_OK) return sl__idx_fail(idx, st, "index compact: id map");
    return SL_OK;
}

/* ---- accessors ------------------------------------------------------------------------- */

uint64_t sl_index_count(const sl_index *idx) {
    if (!idx) return 0;
    sl_index *w = (sl_index *)(uintptr_t)idx;
    pthread_rwlock_rdlock(&w->rw);
    uint64_t c = (uint64_t)idx->n - idx->n_dead;
    pthread_rwlock_unlock(&w->rw);
    return c;
}

int sl_index_contains(sl_index *idx, uint64_t id) {
    if (!idx) return 0;
    pthread_rwlock_rdlock(&idx->rw);
    int r = sl__idmap_get(idx, id) != SL__NO_SLOT;
    pthread_rwlock_unlock(&idx->rw);
    return r;
}

sl_status sl_index_get(sl_index *idx, uint64_t id, float *out) {
    if (!idx || !out) return SL_E_INVALID;
    pthread_rwlock_rdlock(&idx->rw);
    uint32_t s = sl__idmap_get(idx, id);
    if (s != SL__NO_SLOT && sl__codes_only(idx)) {
        const unsigned char *c = idx->codes + (size_t)s * idx->code_size;
        const int8_t *x = (const int8_t *)(c + 16);
        float scale;
        memcpy(&scale, c, sizeof scale);
        for (int i = 0; i < idx->dim; i++) out[i] = (float)x[i] * scale;
    } else if (s != SL__NO_SLOT) {
        memcpy(out, idx->vec + (size_t)s * (size_t)idx->dim, (size_t)idx->dim * sizeof(float));
    }
    pthread_rwlock_unlock(&idx->rw);
    if (s == SL__NO_SLOT)
        return sl__idx_fail(idx, SL_E_NOT_FOUND, "index get: id %llu not in the index", (unsigned long long)id);
    return SL_OK;
}

static int sl__u64_cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

sl_status sl_index_ids(sl_index *idx, uint64_t **ids, size_t *n) {
    if (ids) *ids = NULL;
    if (n) *n = 0;
    if (!idx) return SL_E_INVALID;
    if (!ids || !n) return sl__idx_fail(idx, SL_E_INVALID, "index ids: NULL argument");
    pthread_rwlock_rdlock(&idx->rw);
    size_t live = idx->n - (size_t)idx->n_dead, m = 0;
    uint64_t *v = live ? sl__mallocarray(live, sizeof *v) : NULL;
    if (v)
        for (size_t s = 0; s < idx->n; s++)
            if (!idx->dead[s]) v[m++] = idx->ids[s];
    pthread_rwlock_unlock(&idx->rw);
    if (live && !v) return sl__idx_fail(idx, SL_E_NOMEM, "index ids: out of memory");
    if (m > 1) qsort(v, m, sizeof *v, sl__u64_cmp);
    *ids = v;
    *n = m;
    return SL_OK;
}

int sl_index_dim(const sl_index *idx) { return idx ? idx->dim : 0; }
sl_index_metric sl_index_metric_of(const sl_index *idx) { return idx ? idx->metric : SL_INDEX_COSINE; }
sl_index_kind sl_index_kind_of(const sl_index *idx) { return idx ? idx->kind : SL_INDEX_FLAT; }

void sl_index_get_stats(sl_index *idx, sl_index_stats *st) {
    if (!st) return;
    memset(st, 0, sizeof *st);
    st->max_level = -1;
    if (!idx) return;
    pthread_rwlock_rdlock(&idx->rw);
    st->slots = idx->n;
    st->deleted = idx->n_dead;
    st->count = idx->n - idx->n_dead;
    st->memory_bytes = sl__mem_bytes(idx);
    st->mapped_bytes = idx->map && !idx->map_is_heap ? idx->map_len : 0;
    uint64_t ep = atomic_load(&idx->ep);
    if (idx->kind == SL_INDEX_HNSW && ep != SL__EP_EMPTY) st->max_level = (int)(ep >> 32);
    st->simd = idx->K->level;
    pthread_rwlock_unlock(&idx->rw);
}

sl_status sl_index_set_ef_search(sl_index *idx, int ef) {
    if (!idx) return SL_E_INVALID;
    if (ef < SL_INDEX_EF_SEARCH_MIN || ef > SL_INDEX_EF_SEARCH_MAX)
        return sl__idx_fail(idx, SL_E_INVALID, "index: ef_search %d out of [%d, %d]", ef, SL_INDEX_EF_SEARCH_MIN, SL_INDEX_EF_SEARCH_MAX);
    atomic_store(&idx->ef_search, ef);
    return SL_OK;
}

sl_status sl_index_set_threads(sl_index *idx, int threads) {
    if (!idx) return SL_E_INVALID;
    if (threads < 0 || threads > SL_INDEX_THREADS_MAX)
        return sl__idx_fail(idx, SL_E_INVALID, "index: threads %d out of [0, %d]", threads, SL_INDEX_THREADS_MAX);
    pthread_mutex_lock(&idx->wmu);
    idx->threads = threads ? threads : sl__ncpu();
    pthread_mutex_unlock(&idx->wmu);
    return SL_OK;
}

sl_status sl_index_set_filter_exact_below(sl_index *idx, double selectivity) {
    if (!idx) return SL_E_INVALID;
    if (!(selectivity >= SL_INDEX_FILTER_EXACT_BELOW_MIN && selectivity <= SL_INDEX_FILTER_EXACT_BELOW_MAX))
        return sl__idx_fail(idx, SL_E_INVALID, "index: filter_exact_below out of [0, 1]");
    atomic_store(&idx->filter_exact_below, selectivity);
    return SL_OK;
}

sl_status sl_index_set_rescore_below(sl_index *idx, uint64_t id) {
    if (!idx) return SL_E_INVALID;
    atomic_store(&idx->rescore_below, id);
    return SL_OK;
}

sl_status sl_index_set_prefilter(sl_index *idx, double factor) {
    if (!idx) return SL_E_INVALID;
    if (!(factor == 0.0 || (factor >= SL_INDEX_PREFILTER_MIN && factor <= SL_INDEX_PREFILTER_MAX)))
        return sl__idx_fail(idx, SL_E_INVALID, "index: prefilter factor %g is neither 0 nor in [%g, %g]",
                            factor, SL_INDEX_PREFILTER_MIN, SL_INDEX_PREFILTER_MAX);
    if (factor > 0 && !sl__is_int8(idx))
        return sl__idx_fail(idx, SL_E_INVALID, "index: the 4-bit prefilter needs int8 storage");
    pthread_mutex_lock(&idx->wmu);
    pthread_rwlock_wrlock(&idx->rw);
    sl_status st = SL_OK;
    if (factor == 0.0) {
        free(idx->c4);
        free(idx->c4h);
        idx->c4 = NULL;
        idx->c4h = NULL;
    } else if (!idx->c4) {
        size_t row = 32 * (((size_t)idx->dim + 63) / 64), cap = idx->cap ? idx->cap : 1;
        uint8_t *c4 = sl__mallocarray(cap, row);
        float *c4h = sl__mallocarray(cap, 2 * sizeof(float));
        if (!c4 || !c4h) {
            free(c4);
            free(c4h);
            st = SL_E_NOMEM;
        } else {
            sl__advise_huge(c4, cap * row);
            idx->c4_row = row;
            idx->c4 = c4;
            idx->c4h = c4h;
            for (size_t s = 0; s < idx->n; s++)
                sl__encode4(idx, idx->codes + s * idx->code_size, c4 + s * row, c4h + 2 * s);
        }
    }
    if (st == SL_OK) idx->prefilter = factor;
    pthread_rwlock_unlock(&idx->rw);
    pthread_mutex_unlock(&idx->wmu);
    if (st != SL_OK) return sl__idx_fail(idx, st, "index: out of memory for the 4-bit prefilter");
    return SL_OK;
}

/* ---- filters and search ---------------------------------------------------------------- */

int sl__filt_pass(const sl_index *idx, const sl__filt *f, uint32_t s) {
    if (!f) return 1;
    if (f->slotbits && !(f->slotbits[s >> 3] & (1u << (s & 7)))) return 0;
    const sl_index_filter *u = f->f;
    uint64_t id = idx->ids[s];
    if (u->bits && (id >= u->nbits || !(u->bits[id >> 6] & ((uint64_t)1 << (id & 63))))) return 0;
    if (u->pred && !u->pred(id, u->pred_ctx)) return 0;
    return 1;
}

/* Prepares the query in scratch (normalized copy for cosine). */
static sl_status sl__prep_query(const sl_index *idx, sl__scratch *sc, const float *query, sl__query *q) {
    float norm;
    int r = sl__check_vec(idx, query, &norm);
    if (r == -1) return SL_E_INVALID;
    if (r == -2) return SL_E_INVALID;
    size_t d = (size_t)idx->dim;
    if (idx->metric == SL_INDEX_COSINE) {
        float inv = 1.0f / norm;
        for (size_t i = 0; i < d; i++) sc->q[i] = query[i] * inv;
    } else {
        memcpy(sc->q, query, d * sizeof(float));
    }
    q->q = sc->q;
    q->qn2 = idx->metric == SL_INDEX_COSINE ? 1.0f : norm * norm;
    q->use_codes = idx->code_size != 0;
    q->qu = sc->qu;
    q->qscale = 1.0f;
    if (sl__is_int8(idx)) {
        float mx = 0;
        for (size_t i = 0; i < d; i++) mx = fmaxf(mx, fabsf(sc->q[i]));
        q->qscale = mx > 0 ? mx / 127.0f : 1.0f;
        for (size_t i = 0; i < d; i++) {
            float t = roundf(sc->q[i] / q->qscale);
            sc->qu[i] = (uint8_t)(int)(128.0f + (t > 127 ? 127 : (t < -127 ? -127 : t)));
        }
    }
    return SL_OK;
}

static int sl__pair_slot_cmp(const void *a, const void *b) {
    uint32_t x = ((const sl__pair *)a)->s, y = ((const sl__pair *)b)->s;
    return (x > y) - (x < y);
}

/* Offers (dd, s) to the max-heap h of at most r pairs (the one-by-one scan's rule: a later
 * slot must be strictly closer to replace the worst). */
static inline void sl__offer(sl__heap *h, size_t r, float dd, uint32_t s) {
    if (h->n < r) sl__maxheap_push(h, (sl__pair){ dd, s });
    else if (dd < h->a[0].d) {
        sl__maxheap_pop(h);
        sl__maxheap_push(h, (sl__pair){ dd, s });
    }
}

/* The prefiltered form of sl__scan's int8 path (sl_index_set_prefilter): a pass over the 4-bit
 * rows keeps the best ceil(prefilter * r) in sc->cand, which are then offered to sc->res on their
 * int8 distances in slot order - the order of the plain scan, so whenever they include its r
 * best the result is the same, ties included. Chunks are read 4 rows at a time from 4 places a
 * quarter chunk apart as in sl__scan. */
static int sl__scan_prefilter(sl_index *idx, sl__scratch *sc, const sl__query *q, size_t r,
                              size_t r4, const sl__filt *filt) {
    size_t d = (size_t)idx->dim, row = idx->c4_row, nblk = row / 32, total = idx->n;
    if (!sc->q4 && !(sc->q4 = malloc(nblk * 64))) return -1;
    if (sl__heap_reserve(&sc->cand, r4 + 2) != 0 || sl__heap_reserve(&sc->res, r + 2) != 0) return -1;
    int8_t *q4 = sc->q4;
    int32_t qsum = 0;
    memset(q4, 0, nblk * 64);
    for (size_t i = 0; i < d; i++) {
        q4[i] = (int8_t)((int)q->qu[i] - 128);
        qsum += q4[i];
    }
    int l2 = idx->metric == SL_INDEX_L2;
    enum { CHUNK = 2048 };
    float dbuf[CHUNK];
    sl__heap *h = &sc->cand;
    h->n = 0;
    for (size_t i = 0; i < total; i += CHUNK) {
        size_t n = total - i < CHUNK ? total - i : CHUNK, qtr = (n + 3) / 4;
        for (size_t j = 0; j < qtr; j++) {
            const uint8_t *c[4];
            size_t at[4];
            int32_t dot[4];
            for (int t = 0; t < 4; t++) {
                at[t] = j + (size_t)t * qtr < n ? i + j + (size_t)t * qtr : i + j; /* past the end: repeat */
                c[t] = idx->c4 + at[t] * row;
            }
            idx->K->dot_q4_x4(q4, c, nblk, dot);
            for (int t = 0; t < 4; t++) {
                const float *hd = idx->c4h + 2 * at[t];
                float ip = q->qscale * hd[0] * (float)(dot[t] - 8 * qsum);
                dbuf[at[t] - i] = l2 ? q->qn2 - 2.0f * ip + hd[1] : -ip;
            }
        }
        for (size_t j = 0; j < n; j++) {
            uint32_t s = (uint32_t)(i + j);
            if (idx->dead[s] || (filt && !sl__filt_pass(idx, filt, s))) continue;
            sl__offer(h, r4, dbuf[j], s);
        }
    }
    /* the survivors in slot order, re-scored on the int8 codes (4 rows per call when the
     * kernel has it: the same sums, so the same distances as sl__dist_query) */
    size_t m = h->n;
    qsort(h->a, m, sizeof *h->a, sl__pair_slot_cmp);
    sc->res.n = 0;
    for (size_t i = 0; i < m; i += 4) {
        size_t g = m - i < 4 ? m - i : 4;
        float dd[4];
        if (g == 4 && idx->K->dot_q8s8_x4) {
            const int8_t *cc[4];
            int32_t dot[4];
            for (int t = 0; t < 4; t++) cc[t] = (const int8_t *)(idx->codes + (size_t)h->a[i + t].s * idx->code_size + 16);
            idx->K->dot_q8s8_x4(q->qu, cc, d, dot);
            for (int t = 0; t < 4; t++)
                dd[t] = sl__dist_int8(idx, q, idx->codes + (size_t)h->a[i + t].s * idx->code_size, dot[t]);
        } else
            for (size_t t = 0; t < g; t++) dd[t] = sl__dist_query(idx, q, h->a[i + t].s);
        for (size_t t = 0; t < g; t++) sl__offer(&sc->res, r, dd[t], h->a[i + t].s);
    }
    h->n = 0;
    return 0;
}

/* Exact scan of `slots` (or of every slot when slots == NULL) into sc->res (max-heap of r). */
static int sl__scan(sl_index *idx, sl__scratch *sc, const sl__query *q, const uint32_t *slots,
                    size_t ns, size_t r, const sl__filt *filt) {
    sc->res.n = 0;
    if (sl__heap_reserve(&sc->res, r + 2) != 0) return -1;
    size_t total = slots ? ns : idx->n;
    if (!slots && idx->c4 && q->use_codes) { /* c4 is non-NULL exactly while prefilter > 0 */
        double want = ceil(idx->prefilter * (double)r);
        if (want < (double)(idx->n - idx->n_dead)) return sl__scan_prefilter(idx, sc, q, r, (size_t)want, filt);
    }
    /* int8 codes of every slot: distances of a chunk computed 4 rows at a time from 4 places a
     * quarter chunk apart (more memory streams in flight), then offered to the heap in slot order
     * exactly as the one-by-one loop does */
    enum { CHUNK = 2048 };
    float dbuf[CHUNK];
    int batched = !slots && q->use_codes && sl__is_int8(idx) && idx->K->dot_q8s8_x4;
    size_t d = (size_t)idx->dim;
    for (size_t i = 0; i < total; i++) {
        if (batched && i % CHUNK == 0) {
            size_t n = total - i < CHUNK ? total - i : CHUNK, h = n / 4;
            for (size_t j = 0; j < h; j++) {
                const unsigned char *c[4];
                const int8_t *cc[4];
                int32_t dot[4];
                for (int t = 0; t < 4; t++) {
                    c[t] = idx->codes + (i + j + (size_t)t * h) * idx->code_size;
                    cc[t] = (const int8_t *)(c[t] + 16);
                }
                idx->K->dot_q8s8_x4(q->qu, cc, d, dot);
                for (int t = 0; t < 4; t++) dbuf[j + (size_t)t * h] = sl__dist_int8(idx, q, c[t], dot[t]);
            }
            for (size_t j = 4 * h; j < n; j++) dbuf[j] = sl__dist_query(idx, q, (uint32_t)(i + j));
        }
        uint32_t s = slots ? slots[i] : (uint32_t)i;
        if (idx->dead[s]) continue;
        if (filt && !sl__filt_pass(idx, filt, s)) continue;
        sl__offer(&sc->res, r, batched ? dbuf[i % CHUNK] : sl__dist_query(idx, q, s), s);
    }
    return 0;
}

static int sl__u32_cmp(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static float sl__score(const sl_index *idx, float d) { return idx->metric == SL_INDEX_L2 ? d : -d; }

/* One search with the shared lock held. */
static sl_status sl__search_locked(sl_index *idx, sl__scratch *sc, const float *query, size_t k,
                                   const sl_index_filter *filter, const sl_index_search_params *sp,
                                   sl_index_result *results, size_t *n_out) {
    sl__query q;
    if (sl__prep_query(idx, sc, query, &q) != SL_OK) return SL_E_INVALID;
    int ef = sp && sp->ef > 0 ? sp->ef : atomic_load(&idx->ef_search);
    if (ef > SL_INDEX_EF_SEARCH_MAX) ef = SL_INDEX_EF_SEARCH_MAX;
    size_t efz = (size_t)ef < k ? k : (size_t)ef;
    int exact = idx->kind == SL_INDEX_FLAT || (sp && sp->exact);
    size_t live = idx->n - idx->n_dead;
    sl__filt filt = { filter, NULL }, *fp = NULL;
    uint8_t *bits = NULL;
    uint32_t *list = NULL;
    size_t nlist = 0;
    double thr = atomic_load(&idx->filter_exact_below);
    if (filter && (filter->allowed_ids || filter->bits || filter->pred)) {
        fp = &filt;
        if (filter->allowed_ids) {
            /* Compile the id list into slots: exact selectivity, and the slots to scan. */
            list = sl__mallocarray(filter->n_allowed ? filter->n_allowed : 1, sizeof *list);
            if (!list) return SL_E_NOMEM;
            for (size_t i = 0; i < filter->n_allowed; i++) {
                uint32_t s = sl__idmap_get(idx, filter->allowed_ids[i]);
                if (s != SL__NO_SLOT) list[nlist++] = s;
            }
            if (!exact && (double)nlist >= thr * (double)live && nlist > efz) {
                bits = calloc((idx->n + 7) / 8 + 1, 1);
                if (!bits) { free(list); return SL_E_NOMEM; }
                for (size_t i = 0; i < nlist; i++) bits[list[i] >> 3] |= (uint8_t)(1u << (list[i] & 7));
                filt.slotbits = bits;
            } else {
                exact = 2;  /* scan only the listed slots, once each */
                qsort(list, nlist, sizeof *list, sl__u32_cmp);
                size_t u = 0;
                for (size_t i = 0; i < nlist; i++)
                    if (u == 0 || list[u - 1] != list[i]) list[u++] = list[i];
                nlist = u;
            }
        } else if (!exact && live) {
            /* Estimate the selectivity on an evenly spaced sample of live slots. */
            size_t want = live < 1024 ? live : 1024, seen = 0, pass = 0;
            size_t step = idx->n / want ? idx->n / want : 1;
            for (size_t s = 0; s < idx->n && seen < want; s += step) {
                if (idx->dead[s]) continue;
                seen++;
                pass += (size_t)sl__filt_pass(idx, &filt, (uint32_t)s);
            }
            double sel = seen ? (double)pass / (double)seen : 0;
            if (sel < thr || (double)pass * (double)live / (double)(seen ? seen : 1) <= (double)efz) exact = 1;
        }
    }
    int rescore = q.use_codes && !sl__codes_only(idx);  /* codes only: the code distances are final */
    size_t r = rescore ? efz : k;
    sl_status st = SL_OK;
    if (live == 0) sc->res.n = 0;
    else if (exact == 2) { if (sl__scan(idx, sc, &q, list, nlist, r, fp) != 0) st = SL_E_NOMEM; }
    else if (exact) { if (sl__scan(idx, sc, &q, NULL, 0, r, fp) != 0) st = SL_E_NOMEM; }
    else if (sl__hnsw_search(idx, sc, &q, efz, fp) != 0) st = SL_E_NOMEM;
    free(list);
    free(bits);
    if (st != SL_OK) return st;
    /* Re-score compressed candidates exactly, sort, keep k. */
    size_t m = sc->res.n;
    sl__pair *a = sc->res.a;
    if (rescore) {
        /* in slot order (ascending addresses, the next row's head prefetched): the sort below
         * breaks ties by slot, so the order of re-scoring changes no result */
        qsort(a, m, sizeof *a, sl__pair_slot_cmp);
        size_t row = (size_t)idx->dim * sizeof(float);
        uint64_t below = atomic_load(&idx->rescore_below);
        size_t next = 0; /* the next candidate re-scored, after i */
        while (next < m && idx->ids[a[next].s] >= below) next++;
        for (size_t i = next; i < m; i = next) {
            for (next = i + 1; next < m && idx->ids[a[next].s] >= below; next++) {}
            if (next < m) {
                const char *nx = (const char *)(idx->vec + (size_t)a[next].s * (size_t)idx->dim);
                for (size_t o = 0; o < row && o < 1024; o += 64) __builtin_prefetch(nx + o);
            }
            a[i].d = sl__dist_vec(idx, q.q, a[i].s);
        }
    } else
        for (; sc->res.n > k; m--) sl__maxheap_pop(&sc->res);  /* still a max-heap: drop the worst */
    sl__pair_sort(a, m);
    if (m > k) m = k;
    for (size_t i = 0; i < m; i++) {
        results[i].id = idx->ids[a[i].s];
        results[i].score = sl__score(idx, a[i].d);
    }
    *n_out = m;
    return SL_OK;
}

sl_status sl_index_search(sl_index *idx, const float *query, size_t k,
                          const sl_index_filter *filter, const sl_index_search_params *params,
                          sl_index_result *results, size_t *n_out) {
    if (n_out) *n_out = 0;
    if (!idx) return SL_E_INVALID;
    if (!query || !results || !n_out) return sl__idx_fail(idx, SL_E_INVALID, "index search: NULL argument");
    if (k < 1 || k > SL_INDEX_K_MAX) return sl__idx_fail(idx, SL_E_INVALID, "index search: k %zu out of [1, %d]", k, SL_INDEX_K_MAX);
    pthread_rwlock_rdlock(&idx->rw);
    sl__scratch *sc = sl__scratch_get(idx);
    sl_status st = sc ? sl__search_locked(idx, sc, query, k, filter, params, results, n_out) : SL_E_NOMEM;
    if (sc) sl__scratch_put(idx, sc);
    pthread_rwlock_unlock(&idx->rw);
    if (st == SL_E_INVALID) return sl__idx_fail(idx, st, "index search: query has a non-finite value or is zero (cosine)");
    if (st != SL_OK) return sl__idx_fail(idx, st, "index search: out of memory");
    return SL_OK;
}

typedef struct sl__batch_job {
    sl_index *idx;
    const float *queries;
    size_t nq, k;
    const sl_index_filter *filter;
    const sl_index_search_params *params;
    sl_index_result *results;
    size_t *n_out;
    _Atomic size_t next;
    _Atomic int status;
} sl__batch_job;

static void *sl__batch_worker(void *arg) {
    sl__batch_job *j = arg;
    for (;;) {
        size_t i = atomic_fetch_add(&j->next, 1);
        if (i >= j->nq) break;
        sl_status st = sl_index_search(j->idx, j->queries + i * (size_t)j->idx->dim, j->k, j->filter,
                                       j->params, j->results + i * j->k, &j->n_out[i]);
        if (st != SL_OK) atomic_store(&j->status, (int)st);
    }
    return NULL;
}

sl_status sl_index_search_batch(sl_index *idx, const float *queries, size_t nq, size_t k,
                                const sl_index_filter *filter,
                                const sl_index_search_params *params,
                                sl_index_result *results, size_t *n_out) {
    if (!idx) return SL_E_INVALID;
    if (nq == 0) return SL_OK;
    if (!queries || !results || !n_out) return sl__idx_fail(idx, SL_E_INVALID, "index search: NULL argument");
    memset(n_out, 0, nq * sizeof *n_out);
    if (k < 1 || k > SL_INDEX_K_MAX) return sl__idx_fail(idx, SL_E_INVALID, "index search: k %zu out of [1, %d]", k, SL_INDEX_K_MAX);
    int nt = params && params->threads > 0 ? params->threads : idx->threads;
    if (nt > SL_INDEX_THREADS_MAX) nt = SL_INDEX_THREADS_MAX;
    if ((size_t)nt > nq) nt = (int)nq;
    sl__batch_job j = { idx, queries, nq, k, filter, params, results, n_out, 0, SL_OK };
    pthread_t th[SL_INDEX_THREADS_MAX];
    int started = 0;
    for (int t = 1; t < nt; t++) {
        if (pthread_create(&th[started], NULL, sl__batch_worker, &j) != 0) break;
        started++;
    }
    sl__batch_worker(&j);
    for (int t = 0; t < started; t++) pthread_join(th[t], NULL);
    int st = atomic_load(&j.status);
    if (st != SL_OK) {
        memset(n_out, 0, nq * sizeof *n_out);
        return (sl_status)st;
    }
    return SL_OK;
}
