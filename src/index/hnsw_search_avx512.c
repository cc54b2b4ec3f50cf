/*
 * index/hnsw_search_avx512.c - the HNSW layer search (hnsw_layer.h) for float32 storage with the
 * AVX-512 kernels inlined (distance_avx512_inl.h), compiled with -mavx512f by module.cmake and
 * chosen at index creation only when the kernel table in use is the AVX-512 one (so the CPU has
 * it and SL_INDEX_SIMD did not cap it). Instances with the dimension a constant (128: SIFT,
 * 512: global descriptors) let the compiler unroll the kernel completely and prefetch each vector
 * with straight-line code; any other dimension uses the runtime-d instance.
 *
 * Invariant: distances are bit-identical to the table's a5_dot_f32 / a5_l2_f32 (same inline
 * bodies), so results, scores and the built graph do not depend on which path computed them.
 */
#include "index/index_impl.h"

#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512BW__)
#include "index/distance_avx512_inl.h"

/* Distance of the float32 traversal query (search: prepared query; build: slot vector v). */
#define SL__A5_DIST(D, x)                                                                         \
    (idx->metric == SL_INDEX_L2                                                                   \
         ? sl__a5_l2_f32(qv, idx->vec + (size_t)(x) * (D), (D))                                  \
         : -sl__a5_dot_f32(qv, idx->vec + (size_t)(x) * (D), (D)))
/* Prefetch: the first two lines of every unvisited neighbour at once (one adjacent-line pair,
 * so the misses overlap), then the rest of the next vector while the current one is computed.
 * Measured on 100k SIFT (bench/results/index.md): 2 lines + pipelined rest >= whole vectors at
 * once (which stalls on the line fill buffers) > 2 lines only > none. */
#define SL__A5_PREFETCH(D, x)                                                                     \
    do {                                                                                          \
        const char *p_ = (const char *)(idx->vec + (size_t)(x) * (D));                           \
        __builtin_prefetch(p_, 0, 3);                                                             \
        if ((D) > 16) __builtin_prefetch(p_ + 64, 0, 3);                                          \
    } while (0)
#define SL__A5_PREFETCH_REST(D, x)                                                                \
    do {                                                                                          \
        const char *p_ = (const char *)(idx->vec + (size_t)(x) * (D));                           \
        for (size_t o_ = 128; o_ < (D) * 4; o_ += 64) __builtin_prefetch(p_ + o_, 0, 3);        \
    } while (0)

#define SL__LAYER_NAME layer_d128
#define SL__LAYER_DIST(x) SL__A5_DIST((size_t)128, x)
#define SL__LAYER_PREFETCH(x) SL__A5_PREFETCH((size_t)128, x)
#define SL__LAYER_PREFETCH_NEXT(x) SL__A5_PREFETCH_REST((size_t)128, x)
#include "index/hnsw_layer.h"

#define SL__LAYER_NAME layer_d512
#define SL__LAYER_DIST(x) SL__A5_DIST((size_t)512, x)
#define SL__LAYER_PREFETCH(x) SL__A5_PREFETCH((size_t)512, x)
#define SL__LAYER_PREFETCH_NEXT(x) SL__A5_PREFETCH_REST((size_t)512, x)
#include "index/hnsw_layer.h"

#define SL__LAYER_NAME layer_dn
#define SL__LAYER_DIST(x) SL__A5_DIST((size_t)idx->dim, x)
#define SL__LAYER_PREFETCH(x) SL__A5_PREFETCH((size_t)idx->dim, x)
#define SL__LAYER_PREFETCH_NEXT(x) SL__A5_PREFETCH_REST((size_t)idx->dim, x)
#include "index/hnsw_layer.h"

sl__layer_fn sl__layer_f32_avx512(int dim) {
    return dim == 128 ? layer_d128 : dim == 512 ? layer_d512 : layer_dn;
}
#else
sl__layer_fn sl__layer_f32_avx512(int dim) { (void)dim; return NULL; }
#endif
