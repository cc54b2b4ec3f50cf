/*
 * index/distance_avx512.c - AVX-512F distance kernels (compiled with -mavx512f -mavx512bw
 * -mfma -mf16c by module.cmake; only reached through sl__dist_avx512(), which checks the CPU).
 * Invariant: same values as the scalar kernels up to float rounding; the tail (d % 16) uses
 * masked loads, so any dimension works and no byte past d elements is read.
 */
#include "index/distance.h"

#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
#include "index/distance_q4_inl.h"
#include "index/distance_avx512_inl.h"

/* The float32 kernels are always-inline bodies shared with the HNSW layer search
 * (hnsw_search_avx512.c), so both compute bit-identical distances. */
static float a5_dot_f32(const float *a, const float *b, size_t d) { return sl__a5_dot_f32(a, b, d); }
static float a5_l2_f32(const float *a, const float *b, size_t d) { return sl__a5_l2_f32(a, b, d); }

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
        __mmask16 m = sl__a5_tailmask(d - i);
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
        __mmask16 m = sl__a5_tailmask(d - i);
        __m512 t = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, q + i), load_f16(c + i, m));
        s0 = _mm512_fmadd_ps(t, t, s0);
    }
    return _mm512_reduce_add_ps(s0);
}


/* u8 x s8 without VNNI: widen to 16 bits, madd pairs into 32 bits (exact). */
static int32_t a5_dot_u8s8(const uint8_t *q, const int8_t *c, size_t d) {
    __m512i acc = _mm512_setzero_si512();
    size_t i = 0;
    for (; i + 32 <= d; i += 32) {
        __m512i a = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(const void *)(q + i)));
        __m512i b = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(const void *)(c + i)));
        acc = _mm512_add_epi32(acc, _mm512_madd_epi16(a, b));
    }
    if (i < d) {
        __mmask32 m = (__mmask32)((1ull << (d - i)) - 1);
        __m512i a = _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(m, q + i));
        __m512i b = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, c + i));
        acc = _mm512_add_epi32(acc, _mm512_madd_epi16(a, b));
    }
    return _mm512_reduce_add_epi32(acc);
}

/* u8 x s8 with AVX512-VNNI (vpdpbusd: 64 products per instruction). */
__attribute__((target("avx512vnni")))
static int32_t a5v_dot_u8s8(const uint8_t *q, const int8_t *c, size_t d) {
    __m512i acc = _mm512_setzero_si512();
    size_t i = 0;
    for (; i + 64 <= d; i += 64)
        acc = _mm512_dpbusd_epi32(acc, _mm512_loadu_si512((const void *)(q + i)), _mm512_loadu_si512((const void *)(c + i)));
    if (i < d) {
        __mmask64 m = (__mmask64)((~0ull) >> (64 - (d - i)));
        acc = _mm512_dpbusd_epi32(acc, _mm512_maskz_loadu_epi8(m, q + i), _mm512_maskz_loadu_epi8(m, c + i));
    }
    return _mm512_reduce_add_epi32(acc);
}

static const sl__dist_kernels sl__avx512_table = {
    "avx512", 3, a5_dot_f32, a5_l2_f32, a5_dot_f16, a5_l2_f16, a5_dot_u8s8, NULL, NULL,
    sl__avx2_dot_q4_x4, sl__avx2_q4_stats, sl__avx2_q4_pack
};
static const sl__dist_kernels sl__avx512vnni_table = {
    "avx512vnni", 3, a5_dot_f32, a5_l2_f32, a5_dot_f16, a5_l2_f16, a5v_dot_u8s8, NULL, NULL,
    sl__avx2_dot_q4_x4, sl__avx2_q4_stats, sl__avx2_q4_pack
};

const sl__dist_kernels *sl__dist_avx512(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma") &&
        sl__cpu_has_f16c())
        return __builtin_cpu_supports("avx512vnni") ? &sl__avx512vnni_table : &sl__avx512_table;
    return NULL;
}

const sl__dist_kernels *sl__dist_avx512_plain(void) {
    return sl__dist_avx512() ? &sl__avx512_table : NULL;
}
#else
const sl__dist_kernels *sl__dist_avx512(void) { return NULL; }
const sl__dist_kernels *sl__dist_avx512_plain(void) { return NULL; }
#endif
