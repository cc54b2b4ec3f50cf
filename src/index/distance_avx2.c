/*
 * index/distance_avx2.c - AVX2 + FMA + F16C distance kernels (compiled with those flags by
 * module.cmake; only reached through sl__dist_avx2(), which checks the CPU first).
 * Invariant: same values as the scalar kernels up to float rounding; tails (d % 8) are handled
 * with scalar code, so any dimension works and nothing is read past d elements.
 */
#include "index/distance.h"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#include "index/distance_q4_inl.h"

static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static float a2_dot_f32(const float *a, const float *b, size_t d) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= d; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= d; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum256(_mm256_add_ps(s0, s1));
    for (; i < d; i++) s += a[i] * b[i];
    return s;
}

static float a2_l2_f32(const float *a, const float *b, size_t d) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= d; i += 16) {
        __m256 t0 = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
        __m256 t1 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8));
        s0 = _mm256_fmadd_ps(t0, t0, s0);
        s1 = _mm256_fmadd_ps(t1, t1, s1);
    }
    for (; i + 8 <= d; i += 8) {
        __m256 t = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
        s0 = _mm256_fmadd_ps(t, t, s0);
    }
    float s = hsum256(_mm256_add_ps(s0, s1));
    for (; i < d; i++) { float t = a[i] - b[i]; s += t * t; }
    return s;
}

static float a2_dot_f16(const float *q, const uint16_t *c, size_t d) {
    __m256 s0 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 8 <= d; i += 8) {
        __m256 v = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(c + i)));
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), v, s0);
    }
    float s = hsum256(s0);
    for (; i < d; i++) s += q[i] * sl__f16_to_f32(c[i]);
    return s;
}

static float a2_l2_f16(const float *q, const uint16_t *c, size_t d) {
    __m256 s0 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 8 <= d; i += 8) {
        __m256 v = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(c + i)));
        __m256 t = _mm256_sub_ps(_mm256_loadu_ps(q + i), v);
        s0 = _mm256_fmadd_ps(t, t, s0);
    }
    float s = hsum256(s0);
    for (; i < d; i++) { float t = q[i] - sl__f16_to_f32(c[i]); s += t * t; }
    return s;
}


/* Sum of the 8 int32 lanes. */
static inline int32_t hsum256i(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

static int32_t a2_dot_u8s8(const uint8_t *q, const int8_t *c, size_t d) {
    __m256i acc = _mm256_setzero_si256();
    size_t i = 0;
    for (; i + 16 <= d; i += 16) {
        __m256i a = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(q + i)));
        __m256i b = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(c + i)));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));  /* exact: |a*b + a*b| < 2^16 */
    }
    int32_t r = hsum256i(acc);
    for (; i < d; i++) r += (int32_t)q[i] * (int32_t)c[i];
    return r;
}

/* sum (q[i] - 128) * c[i] for q in [1, 255] (so q - 128 is in [-127, 127]): 32 pairs per step by
 * vpmaddubsw on |c| (unsigned, <= 128) and q - 128 carrying the sign of c (vpsignb), so every
 * 16-bit pair sum is at most 2 * 128 * 127 = 32512 in magnitude and nothing saturates: exact.
 * Half the instructions of a2_dot_u8s8's widening loop, and no separate sum of the codes.
 * One step: acc += the 32 products of qx = q ^ 0x80 (= q - 128) and the codes c, in 8 int32 lanes. */
static inline __m256i q8s8_step(__m256i acc, __m256i qx, const int8_t *c) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i cv = _mm256_loadu_si256((const __m256i *)(const void *)c);
    __m256i p = _mm256_maddubs_epi16(_mm256_abs_epi8(cv), _mm256_sign_epi8(qx, cv));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones));
}

static inline __m256i q8s8_query(const uint8_t *q) {
    return _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(const void *)q), _mm256_set1_epi8((char)0x80));
}

static int32_t a2_dot_q8s8(const uint8_t *q, const int8_t *c, size_t d) {
    __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
    size_t i = 0;
    for (; i + 64 <= d; i += 64) { /* two chains */
        acc0 = q8s8_step(acc0, q8s8_query(q + i), c + i);
        acc1 = q8s8_step(acc1, q8s8_query(q + i + 32), c + i + 32);
    }
    for (; i + 32 <= d; i += 32) acc0 = q8s8_step(acc0, q8s8_query(q + i), c + i);
    int32_t r = hsum256i(_mm256_add_epi32(acc0, acc1));
    for (; i < d; i++) r += ((int32_t)q[i] - 128) * (int32_t)c[i];
    return r;
}

/* a2_dot_q8s8 of one query against 4 code rows at once (same sums, so the same results): a flat
 * scan reading 4 rows far apart in memory keeps 4 streams in flight, and a single core then
 * pulls ~1.5x the memory bandwidth of one sequential stream (measured on AMD Zen 3). */
static void a2_dot_q8s8_x4(const uint8_t *q, const int8_t *const c[4], size_t d, int32_t out[4]) {
    __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                      _mm256_setzero_si256()};
    size_t i = 0;
    for (; i + 32 <= d; i += 32) {
        __m256i qx = q8s8_query(q + i);
        for (int r = 0; r < 4; r++) acc[r] = q8s8_step(acc[r], qx, c[r] + i);
    }
    for (int r = 0; r < 4; r++) {
        int32_t v = hsum256i(acc[r]);
        for (size_t j = i; j < d; j++) v += ((int32_t)q[j] - 128) * (int32_t)c[r][j];
        out[r] = v;
    }
}

static const sl__dist_kernels sl__avx2_table = {
    "avx2", 2, a2_dot_f32, a2_l2_f32, a2_dot_f16, a2_l2_f16, a2_dot_u8s8, a2_dot_q8s8, a2_dot_q8s8_x4,
    sl__avx2_dot_q4_x4, sl__avx2_q4_stats, sl__avx2_q4_pack
};

const sl__dist_kernels *sl__dist_avx2(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        sl__cpu_has_f16c())
        return &sl__avx2_table;
    return NULL;
}
#else
const sl__dist_kernels *sl__dist_avx2(void) { return NULL; }
#endif
