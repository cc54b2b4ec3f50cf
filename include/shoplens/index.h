/*
 * shoplens/index.h - nearest-neighbour search over catalog descriptors: exact (flat) and HNSW
 * (Malkov & Yashunin, arXiv 1603.09320), with filters, deletes, compressed storage and
 * crash-safe files.
 *
 * Ids are 64-bit values chosen by the caller (e.g. catalog image ids). Vectors are `dim` floats.
 *
 * Scores (sl_index_result.score), sorted best first:
 *   SL_INDEX_COSINE  cosine similarity in [-1, 1], higher is better. Vectors and queries are
 *                    L2-normalized by the index (a zero vector is refused with SL_E_INVALID).
 *   SL_INDEX_IP      inner product, higher is better.
 *   SL_INDEX_L2      squared Euclidean distance, lower is better.
 *
 * Filters: a search may be restricted by an allowed-id list, an allowed-id bitmap and/or a
 * predicate (all given ones must pass). The index estimates the selectivity and picks a
 * strategy: an exact scan of the allowed items below `filter_exact_below`, otherwise a graph
 * search that only returns allowed items and explores until it has ef of them.
 *
 * Thread safety (see docs/index.md): any number of threads may search at once while ONE thread
 * at a time calls a writing function (add, add_batch, remove, compact, set_*, load into...).
 * Writers are serialized by an internal mutex, so concurrent writers are safe but not parallel.
 * Searches never see a half-written vector: vectors are written under the exclusive lock, graph
 * links are published with atomic stores. sl_index_free needs exclusive access.
 *
 * Ownership: the caller owns every array it passes in and every result array it passes out;
 * the index copies vectors it stores. Errors: functions return sl_status; the handle keeps the
 * message of its last failure (sl_index_errmsg); sl_index_new/load take an optional sl_error.
 */
#ifndef SHOPLENS_INDEX_H
#define SHOPLENS_INDEX_H

#include <stddef.h>
#include <stdint.h>
#include "shoplens/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sl_index sl_index;

typedef enum sl_index_metric {
    SL_INDEX_COSINE = 0,  /* cosine similarity (vectors normalized on add) */
    SL_INDEX_IP = 1,      /* inner product */
    SL_INDEX_L2 = 2       /* squared Euclidean distance */
} sl_index_metric;

typedef enum sl_index_kind {
    SL_INDEX_FLAT = 0,    /* exact search: every query scans every vector */
    SL_INDEX_HNSW = 1     /* hierarchical navigable small-world graph */
} sl_index_kind;

/* How vectors are held for scanning / graph traversal. F16 and INT8 keep the float32 vectors
 * too (in memory, or memory-mapped after load) and re-score the final candidates exactly, so
 * their scores are exact. INT8_ONLY keeps nothing but the int8 codes: a quarter of the memory
 * and file of INT8 (dim + 16 bytes per vector instead of 5 dim + 16), for indexes too large to
 * hold float32 vectors; everything (build, search, scores, sl_index_get) then works on the
 * codes, so a score differs from the exact one by the quantization error (about 1e-3 of |q||v|
 * on catalog vectors) and the ranking near the k-th result can differ from an exact one. Ask
 * for more than k and re-score them from your own float32 copy when that matters (the engine
 * does). */
typedef enum sl_index_storage {
    SL_INDEX_F32 = 0,     /* float32 only */
    SL_INDEX_F16 = 1,     /* traverse with IEEE half floats (2 bytes / dim) */
    SL_INDEX_INT8 = 2,    /* traverse with int8 scalar quantization, one scale per vector */
    SL_INDEX_INT8_ONLY = 3 /* int8 codes only, no float32 copy (scores from the codes) */
} sl_index_storage;

#define SL_INDEX_DIM_MIN 1
#define SL_INDEX_DIM_MAX 65536
#define SL_INDEX_M_DEFAULT 16               /* graph degree on upper layers (2M on layer 0) */
#define SL_INDEX_M_MIN 4
#define SL_INDEX_M_MAX 64
#define SL_INDEX_EF_CONSTRUCTION_DEFAULT 128
#define SL_INDEX_EF_CONSTRUCTION_MIN 8
#define SL_INDEX_EF_CONSTRUCTION_MAX 4096
#define SL_INDEX_EF_SEARCH_DEFAULT 96       /* candidate list length of a search (>= k used) */
#define SL_INDEX_EF_SEARCH_MIN 1
#define SL_INDEX_EF_SEARCH_MAX 32768
#define SL_INDEX_THREADS_DEFAULT 0          /* 0: number of online CPUs */
#define SL_INDEX_THREADS_MAX 256
#define SL_INDEX_SEED_DEFAULT 0x5eed1e55ULL
#define SL_INDEX_FILTER_EXACT_BELOW_DEFAULT 0.03  /* selectivity below which filters scan */
#define SL_INDEX_FILTER_EXACT_BELOW_MIN 0.0
#define SL_INDEX_FILTER_EXACT_BELOW_MAX 1.0
#define SL_INDEX_K_MAX 32768
#define SL_INDEX_PREFILTER_DEFAULT 0.0      /* 4-bit first pass off (see sl_index_set_prefilter) */
#define SL_INDEX_PREFILTER_MIN 1.0          /* smallest nonzero factor */
#define SL_INDEX_PREFILTER_MAX 64.0

/* Construction parameters. Zero-initialize and set what you need: a zero field means its
 * default (seed 0 means SL_INDEX_SEED_DEFAULT; storage 0 is SL_INDEX_F32). Ignored for FLAT
 * except storage, ef_search (re-scoring depth of compressed storage) and threads (batched
 * search). With threads == 1 the graph is a deterministic function of the seed and the order
 * of the adds. */
typedef struct sl_index_params {
    int M;
    int ef_construction;
    int ef_search;
    int threads;
    uint64_t seed;
    sl_index_storage storage;
    double filter_exact_below;
} sl_index_params;

/* Per-search options; pass NULL for the index defaults. Zero fields mean the index default. */
typedef struct sl_index_search_params {
    int ef;        /* candidate list length (HNSW), re-scoring depth (compressed storage) */
    int exact;     /* nonzero: exact scan even on an HNSW index (ground truth) */
    int threads;   /* sl_index_search_batch only: 0 = the index's thread count */
} sl_index_search_params;

/* A predicate on ids: return nonzero to allow the id. Called from the searching thread,
 * possibly many times per search; it must be thread-safe if searches run concurrently. */
typedef int (*sl_index_pred)(uint64_t id, void *ctx);

/* A filter: every non-empty part must allow an id for it to be returned. Zero-initialize.
 * - allowed_ids/n_allowed: a list of allowed ids in any order (e.g. from an SQL query on category
 *   and price); ids not in the index are ignored. n_allowed == 0 with allowed_ids != NULL means
 *   nothing is allowed. The simplest form and the fastest for selective filters; it costs one
 *   hash lookup per listed id per search, so for large sets reused by many searches prefer the
 *   bitmap.
 * - bits/nbits: bitmap over the id space, id i allowed iff i < nbits and bit (i % 64) of
 *   bits[i / 64] is set (see sl_index_bitmap_set). Fine for dense ids (SQLite rowids).
 * - pred/ctx: arbitrary predicate.
 * The arrays are only read during the call. */
typedef struct sl_index_filter {
    const uint64_t *allowed_ids;
    size_t n_allowed;
    const uint64_t *bits;
    uint64_t nbits;
    sl_index_pred pred;
    void *pred_ctx;
} sl_index_filter;

/* Number of uint64_t words of a bitmap able to hold ids 0..nbits-1. */
static inline uint64_t sl_index_bitmap_words(uint64_t nbits) { return (nbits + 63) / 64; }
static inline void sl_index_bitmap_set(uint64_t *bits, uint64_t id) {
    bits[id >> 6] |= (uint64_t)1 << (id & 63);
}

typedef struct sl_index_result {
    uint64_t id;
    float score;  /* see the metric table at the top */
} sl_index_result;

typedef struct sl_index_stats {
    uint64_t count;        /* live ids */
    uint64_t deleted;      /* removed ids still occupying slots (reclaimed by compact) */
    uint64_t slots;        /* count + deleted */
    uint64_t memory_bytes; /* heap memory held (vectors, codes, graph, id map) */
    uint64_t mapped_bytes; /* bytes memory-mapped from a loaded file */
    int max_level;         /* HNSW top layer, -1 when empty or FLAT */
    int simd;              /* distance kernels in use: 0 scalar, 2 AVX2, 3 AVX-512 */
} sl_index_stats;

/* Fills *p with every default (M, ef's, threads, seed, storage F32, filter threshold). */
void sl_index_params_default(sl_index_params *p);

/* Creates an empty index. params may be NULL (all defaults). Out-of-range parameters give
 * SL_E_INVALID naming the field. On failure *out is NULL. Free with sl_index_free. */
sl_status sl_index_new(sl_index **out, int dim, sl_index_metric metric, sl_index_kind kind,
                       const sl_index_params *params, sl_error *err);

/* Frees the index and unmaps its file. NULL is a no-op. Needs exclusive access. */
void sl_index_free(sl_index *idx);

/* Adds (or replaces, when the id exists) one vector of dim floats. Writer call.
 * Errors: SL_E_INVALID (NULL, non-finite value, zero vector with cosine), SL_E_NOMEM.
 * On failure the index is unchanged. */
sl_status sl_index_add(sl_index *idx, uint64_t id, const float *vec);

/* Adds n vectors (vecs is n * dim floats, row-major) with ids[i]; HNSW links them with
 * params.threads threads. An id repeated inside the batch keeps the last vector. Same errors as
 * sl_index_add; the batch is validated before anything is changed. */
sl_status sl_index_add_batch(sl_index *idx, size_t n, const uint64_t *ids, const float *vecs);

/* Removes an id: it is never returned again. The graph is repaired around it; its memory is
 * reclaimed by sl_index_compact. SL_E_NOT_FOUND if the id is not in the index. Writer call. */
sl_status sl_index_remove(sl_index *idx, uint64_t id);

/* Drops removed items for good: renumbers slots, repairs links and frees their memory (and
 * copies memory-mapped data into the heap). HNSW slots are renumbered in breadth-first order of
 * the graph, which makes searches faster (better memory locality); ids and results do not
 * change, so calling it after a large batch of adds is worthwhile even without removals.
 * Writer call; blocks searches while it runs. */
sl_status sl_index_compact(sl_index *idx);

/* Live ids in the index. */
uint64_t sl_index_count(const sl_index *idx);
/* 1 if id is in the index (not removed), else 0. */
int sl_index_contains(sl_index *idx, uint64_t id);
/* Copies the stored vector of id into out (dim floats; normalized for cosine; with INT8_ONLY
 * the vector its code stands for). SL_E_NOT_FOUND if absent. */
sl_status sl_index_get(sl_index *idx, uint64_t id, float *out);
/* Every live id, ascending, in *ids (malloc'ed; free() it; NULL when the index is empty) and
 * their count in *n. Errors: SL_E_INVALID (NULL), SL_E_NOMEM (then *ids = NULL, *n = 0). */
sl_status sl_index_ids(sl_index *idx, uint64_t **ids, size_t *n);
int sl_index_dim(const sl_index *idx);
sl_index_metric sl_index_metric_of(const sl_index *idx);
sl_index_kind sl_index_kind_of(const sl_index *idx);
void sl_index_get_stats(sl_index *idx, sl_index_stats *st);

/* Searches the k best ids for query (dim floats). results must hold k entries; *n_out receives
 * how many were found (< k when fewer items pass the filter). filter and params may be NULL.
 * Safe to call from many threads at once. Errors: SL_E_INVALID (k out of 1..SL_INDEX_K_MAX,
 * NULL, non-finite or zero cosine query), SL_E_NOMEM; then *n_out is 0. */
sl_status sl_index_search(sl_index *idx, const float *query, size_t k,
                          const sl_index_filter *filter, const sl_index_search_params *params,
                          sl_index_result *results, size_t *n_out);

/* nq searches at once (queries nq * dim floats) over params->threads threads (0: the index's
 * thread count). results holds nq * k entries (row q at q * k); n_out[q] the count of row q.
 * The same filter applies to every query. On failure every n_out is 0. */
sl_status sl_index_search_batch(sl_index *idx, const float *queries, size_t nq, size_t k,
                                const sl_index_filter *filter,
                                const sl_index_search_params *params,
                                sl_index_result *results, size_t *n_out);

/* Setters of tunables (writer calls); SL_E_INVALID when out of range. */
sl_status sl_index_set_ef_search(sl_index *idx, int ef);
sl_status sl_index_set_threads(sl_index *idx, int threads);
sl_status sl_index_set_filter_exact_below(sl_index *idx, double selectivity);
/* Which candidates of a scan over SL_INDEX_INT8 storage are re-scored with their float32
 * vectors: ids below `id` (all of them with SL_INDEX_RESCORE_BELOW_ALL, the default). The others
 * keep their code score, within the int8 quantization error of the exact one (about 1e-3 of
 * |q||v|), and results are sorted on the mixed scores. Ids from `id` on then cost the scan their
 * codes only, not their float32 rows. A store's references (ids from SL_STORE_REF_ID_BASE) are
 * ranked so (docs/learn.md, "References"). No effect on other storage. Never fails but on NULL. */
#define SL_INDEX_RESCORE_BELOW_ALL UINT64_MAX
sl_status sl_index_set_rescore_below(sl_index *idx, uint64_t id);

/* 4-bit first pass of exact scans over SL_INDEX_INT8 or INT8_ONLY storage (FLAT, or HNSW with
 * params->exact), for scans that memory bandwidth bounds: every vector is also held at 4 bits
 * per dimension (a scale per vector clipped at 8 RMS; dim / 2 bytes more per vector, in memory
 * only, never saved), a scan reads those (half the bytes of the int8 codes), keeps the
 * ceil(factor x r) best, re-scores them on the int8 codes to the usual r = max(k, ef) and those
 * exactly as always. Results equal the int8 scan's whenever the 4-bit pass keeps the int8 scan's r
 * best, which is a recall question (docs/index.md measures it); scores stay exact. factor 0 turns
 * it off (the default, and the only value on other storage), else SL_INDEX_PREFILTER_MIN..MAX.
 * Enabling it encodes every stored vector (O(n dim)); later adds and compactions keep the 4-bit
 * rows. Errors: SL_E_INVALID (factor out of range), SL_E_NOMEM (then the prefilter stays off). */
sl_status sl_index_set_prefilter(sl_index *idx, double factor);

/* Writes the index to path as one file (docs/formats/index.md): a temporary file in the same
 * directory, fsynced, then renamed over path, so a crash leaves the old file intact. Waits for
 * the current writer; searches continue. SL_E_IO names the failing step. */
sl_status sl_index_save(sl_index *idx, const char *path);

/* Loads an index file; its vectors (and codes) are memory-mapped, the graph and ids are read into
 * memory. Every section's checksum and every structural invariant is checked first: a truncated,
 * corrupt or foreign file gives SL_E_CORRUPT with a message naming the section, a file of another
 * format version SL_E_VERSION, a missing file SL_E_IO. params may be NULL; its threads and
 * ef_search (when nonzero) override the stored ones. On failure *out is NULL. */
sl_status sl_index_load(sl_index **out, const char *path, const sl_index_params *params,
                        sl_error *err);

/* Same from a memory buffer (the bytes are copied). Used by the fuzzer. */
sl_status sl_index_load_mem(sl_index **out, const void *data, size_t size,
                            const sl_index_params *params, sl_error *err);

/* Message of the handle's last failure ("" if none); valid until the next failing call. */
const char *sl_index_errmsg(const sl_index *idx);

#ifdef __cplusplus
}
#endif
#endif
