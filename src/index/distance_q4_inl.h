/*
 * index/distance_q4_inl.h - the AVX2 kernel of the 4-bit prefilter scan (dot_q4_x4 in
 * distance.h), included by distance_avx2.c and distance_avx512.c (both compiled with AVX2), so
 * each table holds its own copy and no file calls into another's instruction set.
 *
 * Rows are blocks of 32 bytes for 64 dimensions: byte j holds dimension j in its low nibble and
 * dimension j + 32 in its high one, so two masks and one shift unpack a block into two vectors
 * that line up with two plain 32-byte loads of the query. vpmaddubsw multiplies the unsigned
 * nibbles (0..15) by the signed query bytes (-127..127): a 16-bit lane sums two products, at most
 * 2 * 15 * 127 = 3810 in magnitude, so the two halves of 4 blocks (8 vpmaddubsw, 30480) add up in
 * 16 bits before one vpmaddwd widens them: exact, equal to the scalar kernel (distance.c).
 * 4 rows share every query load.
 */
#ifndef SL_INDEX_DISTANCE_Q4_INL_H
#define SL_INDEX_DISTANCE_Q4_INL_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline int32_t sl__q4_hsum(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* 16-bit sums of one block of row c against the query halves q0, q1, added to s. */
#define SL__Q4_BLOCK(s, c, b)                                                                    \
    do {                                                                                         \
        __m256i v_ = _mm256_loadu_si256((const __m256i *)(const void *)((c) + (b) * 32));        \
        __m256i lo_ = _mm256_and_si256(v_, m4), hi_ = _mm256_and_si256(_mm256_srli_epi16(v_, 4), m4); \
        s = _mm256_add_epi16(s, _mm256_add_epi16(_mm256_maddubs_epi16(lo_, q0), _mm256_maddubs_epi16(hi_, q1))); \
    } while (0)

static void sl__avx2_dot_q4_x4(const int8_t *q, const uint8_t *const c[4], size_t nblk, int32_t out[4]) {
    const __m256i m4 = _mm256_set1_epi8(15), ones = _mm256_set1_epi16(1);
    const uint8_t *c0 = c[0], *c1 = c[1], *c2 = c[2], *c3 = c[3];
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t b0 = 0; b0 < nblk; b0 += 4) {
        size_t b1 = b0 + 4 < nblk ? b0 + 4 : nblk;
        __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
        for (size_t b = b0; b < b1; b++) {
            __m256i q0 = _mm256_loadu_si256((const __m256i *)(const void *)(q + b * 64));
            __m256i q1 = _mm256_loadu_si256((const __m256i *)(const void *)(q + b * 64 + 32));
            SL__Q4_BLOCK(s0, c0, b);
            SL__Q4_BLOCK(s1, c1, b);
            SL__Q4_BLOCK(s2, c2, b);
            SL__Q4_BLOCK(s3, c3, b);
        }
        a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(s0, ones));
        a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(s1, ones));
        a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(s2, ones));
        a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(s3, ones));
    }
    out[0] = sl__q4_hsum(a0);
    out[1] = sl__q4_hsum(a1);
    out[2] = sl__q4_hsum(a2);
    out[3] = sl__q4_hsum(a3);
}
#undef SL__Q4_BLOCK

/* max |x| and sum x^2 of d int8 values (as the scalar q4_stats): |x| as unsigned bytes (the
 * absolute value of -128 is 128), zero-extended to 16 bits, squared and pair-summed into 32-bit
 * lanes by vpmaddwd. */
static void sl__avx2_q4_stats(const int8_t *x, size_t d, int *amax, uint32_t *sumsq) {
    const __m256i zero = _mm256_setzero_si256();
    __m256i mx = zero, ss = zero;
    size_t i = 0;
    for (; i + 32 <= d; i += 32) {
        __m256i a = _mm256_abs_epi8(_mm256_loadu_si256((const __m256i *)(const void *)(x + i)));
        mx = _mm256_max_epu8(mx, a);
        __m256i lo = _mm256_unpacklo_epi8(a, zero), hi = _mm256_unpackhi_epi8(a, zero);
        ss = _mm256_add_epi32(ss, _mm256_add_epi32(_mm256_madd_epi16(lo, lo), _mm256_madd_epi16(hi, hi)));
    }
    __m128i m = _mm_max_epu8(_mm256_castsi256_si128(mx), _mm256_extracti128_si256(mx, 1));
    m = _mm_max_epu8(m, _mm_srli_si128(m, 8));
    m = _mm_max_epu8(m, _mm_srli_si128(m, 4));
    m = _mm_max_epu8(m, _mm_srli_si128(m, 2));
    m = _mm_max_epu8(m, _mm_srli_si128(m, 1));
    int best = _mm_cvtsi128_si32(m) & 0xff;
    uint32_t sum = (uint32_t)sl__q4_hsum(ss);
    for (; i < d; i++) {
        int a = x[i] < 0 ? -x[i] : x[i];
        best = a > best ? a : best;
        sum += (uint32_t)(a * a);
    }
    *amax = best;
    *sumsq = sum;
}

/* Nibbles by counting thresholds (as the scalar q4_pack): per 32 values, 15 minus the number of
 * thresholds above x (15 signed compares t > x, each adding its mask of -1s). */
static void sl__avx2_q4_pack(const int8_t *x, size_t d, const int8_t t[15], uint8_t *row) {
    const __m256i m4 = _mm256_set1_epi8(15);
    __m256i tv[15];
    for (int k = 0; k < 15; k++) tv[k] = _mm256_set1_epi8(t[k]);
    for (size_t b = 0; b * 64 < d; b++) {
        int8_t buf[64];
        const int8_t *src = x + b * 64;
        size_t m = d - b * 64;
        if (m < 64) { /* the tail block: zero padding, nibble 0 as the scalar code leaves it */
            memcpy(buf, src, m);
            memset(buf + m, 0, 64 - m);
            src = buf;
        }
        __m256i u[2];
        for (int h = 0; h < 2; h++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(src + 32 * h));
            __m256i c = _mm256_set1_epi8(15); /* 15 minus the thresholds above v */
            for (int k = 0; k < 15; k++) c = _mm256_add_epi8(c, _mm256_cmpgt_epi8(tv[k], v));
            u[h] = c;
        }
        if (m < 64) { /* padding dimensions must be 0 */
            uint8_t lo[32], hi[32];
            _mm256_storeu_si256((__m256i *)(void *)lo, u[0]);
            _mm256_storeu_si256((__m256i *)(void *)hi, u[1]);
            for (size_t j = 0; j < 32; j++) {
                if (j >= m) lo[j] = 0;
                if (j + 32 >= m) hi[j] = 0;
            }
            u[0] = _mm256_loadu_si256((const __m256i *)(const void *)lo);
            u[1] = _mm256_loadu_si256((const __m256i *)(const void *)hi);
        }
        __m256i packed = _mm256_or_si256(_mm256_and_si256(u[0], m4),
                                         _mm256_slli_epi16(_mm256_and_si256(u[1], m4), 4));
        _mm256_storeu_si256((__m256i *)(void *)(row + b * 32), packed);
    }
}

#endif
