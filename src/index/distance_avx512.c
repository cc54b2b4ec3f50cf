/*
 * index/distance_avx512.c - AVX-512F distance kernels (compiled with -mavx512f -mavx512bw
 * -mfma -mf16c by module.cmake; only reached through sl__dist_avx512(), which checks the CPU).
 * Invariant: same values as the scalar kernels up to float rounding; the tail (d % 16) uses
 * masked loads, so any dimension works and no byte past d elements is read.
 */
#include "index/distance.h"

#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>

static inline __mmask16 tailmask(size_t r) { return (__mmask16)((1u << r) - 1u); }

static float a5_dot_f32(const float *a, const float *b, size_t d) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= d; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    }
    for (; i + 16 <= d; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    if (i < d) {
        __mmask16 m = tailmask(d - i);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

static float a5_l2_f32(const float *a, const float *b, size_t d) {
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
        __mmask16 m = tailmask(d - i);
        __m512 t = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i));
        s1 = _mm512_fmadd_ps(t, t, s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

static inline __m512 load_f16(const uint16_t *c, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, c));
}

static float a5_dot_f16(const float *q, const uint16_t *c, size_t d) {
    __m512 s0 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= d; i += 16)
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i),
                             _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(c + i))), s0);
    if (i < d) {
        __mmask16 m = tailmask(d - i);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + i), load_f16(c + i, m), s0);
    }
    return _mm512_reduce_add_ps(s0);
}

static float a5_l2_f16(const float *q, const uint16_t *c, size_t d) {
    __m512 s0 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= d; i += 16) {
        __m512 t = _mm512_sub_ps(_mm512_loadu_ps(q + i),
                                 _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(c + i))));
        s0 = _mm512_fmadd_ps(t, t, s0);
    }
    if (i < d) {
        __mmask16 m = tailmask(d - i);
        __m512 t = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, q + i), load_f16(c + i, m));
        s0 = _mm512_fmadd_ps(t, t, s0);
    }
    return _mm512_reduce_add_ps(s0);
}

static float a5_dot_i8(const float *q, const int8_t *c, size_t d) {
    __m512 s0 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= d; i += 16) {
        __m512 v = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(c + i))));
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), v, s0);
    }
    if (i < d) {
        __mmask16 m = tailmask(d - i);
        __m512 v = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, c + i)));
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + i), v, s0);
    }
    return _mm512_reduce_add_ps(s0);
}

static const sl__dist_kernels sl__avx512_table = {
    "avx512", 3, a5_dot_f32, a5_l2_f32, a5_dot_f16, a5_l2_f16, a5_dot_i8
};

const sl__dist_kernels *sl__dist_avx512(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c"))
        return &sl__avx512_table;
    return NULL;
}
#else
const sl__dist_kernels *sl__dist_avx512(void) { return NULL; }
#endif
