/*
 * index/distance_avx512_inl.h - the AVX-512 float32 dot product and squared L2 distance as
 * always-inline functions. Included only by files compiled with -mavx512f (distance_avx512.c,
 * which puts them in the kernel table, and hnsw_search_avx512.c, which inlines them into the
 * layer search with the dimension as a constant), so both paths give bit-identical results:
 * same loads, same two accumulators, same reduction order. Any d; the tail uses masked loads.
 */
#ifndef SL_INDEX_DISTANCE_AVX512_INL_H
#define SL_INDEX_DISTANCE_AVX512_INL_H

#include <immintrin.h>
#include <stddef.h>

#define SL__A5_INLINE static inline __attribute__((always_inline))

SL__A5_INLINE __mmask16 sl__a5_tailmask(size_t r) { return (__mmask16)((1u << r) - 1u); }

SL__A5_INLINE float sl__a5_dot_f32(const float *a, const float *b, size_t d) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= d; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    }
    for (; i + 16 <= d; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    if (i < d) {
        __mmask16 m = sl__a5_tailmask(d - i);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

SL__A5_INLINE float sl__a5_l2_f32(const float *a, const float *b, size_t d) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= d; i += 32) {
        __m512 t0 = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
        __m512 t1 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16));
        s0 = _mm512_fmadd_ps(t0, t0, s0);
        s1 = _mm512_fmadd_ps(t1, t1, s1);
    }
    for (; i + 16 <= d; i += 16) {
        __m512 t = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
        s0 = _mm512_fmadd_ps(t, t, s0);
    }
    if (i < d) {
        __mmask16 m = sl__a5_tailmask(d - i);
        __m512 t = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i));
        s1 = _mm512_fmadd_ps(t, t, s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

#endif
