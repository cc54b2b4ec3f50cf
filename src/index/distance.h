/*
 * index/distance.h - distance kernels of the vector index (internal).
 *
 * Three implementations of the same table: scalar (distance.c, any CPU), AVX2+FMA+F16C
 * (distance_avx2.c) and AVX-512F/BW (distance_avx512.c). Each SIMD file is compiled with its own
 * flags (module.cmake) and only called after CPU detection (sl__dist_best). The kernels agree with
 * the scalar one up to float rounding (summation order differs); tests check every kernel on odd
 * dimensions.
 */
#ifndef SL_INDEX_DISTANCE_H
#define SL_INDEX_DISTANCE_H

#include <stddef.h>
#include <stdint.h>

typedef struct sl__dist_kernels {
    const char *name;
    int level;  /* 0 scalar, 2 AVX2, 3 AVX-512 */
    float (*dot_f32)(const float *a, const float *b, size_t d);
    float (*l2_f32)(const float *a, const float *b, size_t d);      /* squared */
    float (*dot_f16)(const float *q, const uint16_t *c, size_t d);
    float (*l2_f16)(const float *q, const uint16_t *c, size_t d);
    int32_t (*dot_u8s8)(const uint8_t *q, const int8_t *c, size_t d); /* exact, d <= 65536 */
    /* exact sum (q[i] - 128) * c[i] for q[i] in [1, 255], d <= 65536 (= dot_u8s8 - 128 sum c,
     * without the second term); NULL where dot_u8s8 is the faster way */
    int32_t (*dot_q8s8)(const uint8_t *q, const int8_t *c, size_t d);
    /* dot_q8s8 against 4 rows at once (out[r] for c[r]); NULL with dot_q8s8 */
    void (*dot_q8s8_x4)(const uint8_t *q, const int8_t *const c[4], size_t d, int32_t out[4]);
    /* 4-bit prefilter rows (index.c, docs/index.md): out[r] = sum over the nblk blocks of 64
     * dimensions of q[i] * u_r[i], u the unsigned nibbles 0..15 of c[r] (byte j of a 32-byte
     * block: dimension j in the low nibble, j + 32 in the high one), q in [-127, 127] padded
     * with zeros to 64 * nblk. Exact (integer), the same on every kernel. */
    void (*dot_q4_x4)(const int8_t *q, const uint8_t *const c[4], size_t nblk, int32_t out[4]);
    /* Builds such a row from d int8 values x: *amax = max |x|, *sumsq = sum x^2 (stats), and
     * (pack) nibble i = the number of k in 1..15 with x[i] >= t[k - 1] (t ascending), the rest
     * of the 32 * ceil(d / 64) bytes zero. Exact, the same on every kernel. */
    void (*q4_stats)(const int8_t *x, size_t d, int *amax, uint32_t *sumsq);
    void (*q4_pack)(const int8_t *x, size_t d, const int8_t t[15], uint8_t *row);
} sl__dist_kernels;

const sl__dist_kernels *sl__dist_scalar(void);
/* NULL when the CPU (or the compiler) lacks the instruction set. */
const sl__dist_kernels *sl__dist_avx2(void);
const sl__dist_kernels *sl__dist_avx512(void);
/* The AVX-512 table without VNNI (to test both u8 x s8 kernels on a VNNI machine). */
const sl__dist_kernels *sl__dist_avx512_plain(void);
/* The fastest table this CPU runs; SL_INDEX_SIMD=scalar|avx2|avx512 in the environment caps it. */
const sl__dist_kernels *sl__dist_best(void);

/* 1 if the CPU has F16C (cpuid; __builtin_cpu_supports lacks "f16c" in some compilers). */
int sl__cpu_has_f16c(void);

/* IEEE 754 binary16 conversions (round to nearest even; overflow to inf). */
uint16_t sl__f32_to_f16(float f);
float sl__f16_to_f32(uint16_t h);

#endif
