/*
 * feature/lanes.h - the fixed 16-lane summation shared by the vectorized float kernels of k-means
 * (squared distance) and PCA (centred projection).
 *
 * A kernel accumulates element i into lane i mod SL__LANES and ends with sl__lanes_sum: the
 * compiler vectorizes the lanes without reassociating anything (-std=c11 keeps FMA contraction
 * off), and the lanes are added in one fixed tree, so every build and ISA clone gives the same bits.
 */
#ifndef SL_FEATURE_LANES_H
#define SL_FEATURE_LANES_H
#include <stddef.h>

#define SL__LANES 16

/* Adds the lanes pairwise in a fixed tree (acc is overwritten) and returns the total. */
static inline float sl__lanes_sum(float acc[SL__LANES]) {
    for (size_t w = SL__LANES / 2; w > 0; w /= 2)
        for (size_t l = 0; l < w; l++) acc[l] += acc[l + w];
    return acc[0];
}

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
/* sl__lanes_sum of lanes 0-7 in lo and 8-15 in hi, in registers: the same tree (l += l + 8, + 4,
 * + 2, + 1), so the same bits. For kernels with a target("avx2") attribute. */
__attribute__((target("avx2"))) static inline float sl__lanes_sum_avx2(__m256 lo, __m256 hi) {
    __m256 v = _mm256_add_ps(lo, hi);
    __m128 t = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    t = _mm_add_ps(t, _mm_movehl_ps(t, t));
    t = _mm_add_ss(t, _mm_shuffle_ps(t, t, 1));
    return _mm_cvtss_f32(t);
}
#endif

#endif
