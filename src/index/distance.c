/*
 * index/distance.c - scalar distance kernels, half-float conversion and run-time selection of
 * the SIMD kernels (distance_avx2.c, distance_avx512.c).
 *
 * Invariants: every kernel of a table computes the same mathematical value; the scalar table is
 * the reference. Selection happens once (pthread_once) from __builtin_cpu_supports, so a binary
 * built on any x86-64 runs the widest kernels the CPU has and never an instruction it lacks.
 */
#include "index/distance.h"

#include <pthread.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif
#include <stdlib.h>
#include <string.h>

static float sc_dot_f32(const float *a, const float *b, size_t d) {
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= d; i += 4) {
        s0 += a[i] * b[i]; s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2]; s3 += a[i + 3] * b[i + 3];
    }
    for (; i < d; i++) s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

static float sc_l2_f32(const float *a, const float *b, size_t d) {
    float s0 = 0, s1 = 0;
    size_t i = 0;
    for (; i + 2 <= d; i += 2) {
        float t0 = a[i] - b[i], t1 = a[i + 1] - b[i + 1];
        s0 += t0 * t0; s1 += t1 * t1;
    }
    for (; i < d; i++) { float t = a[i] - b[i]; s0 += t * t; }
    return s0 + s1;
}

uint16_t sl__f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t exp = (x >> 23) & 0xffu;
    uint32_t man = x & 0x7fffffu;
    if (exp == 0xffu) return (uint16_t)(sign | 0x7c00u | (man ? 0x200u : 0)); /* inf / nan */
    int e = (int)exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00u);                          /* overflow */
    if (e <= 0) {                                                             /* subnormal */
        if (e < -10) return (uint16_t)sign;
        man |= 0x800000u;
        int shift = 14 - e;
        uint32_t h = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1u))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)e << 10) | (man >> 13);
    uint32_t rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;                   /* may carry to inf */
    return (uint16_t)(sign | h);
}

float sl__f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, x;
    if (exp == 0) {
        if (man == 0) x = sign;
        else {
            int e = -1;
            do { man <<= 1; e++; } while (!(man & 0x400u));
            x = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31) x = sign | 0x7f800000u | (man << 13);
    else x = sign | ((exp - 15 + 127) << 23) | (man << 13);
    float f;
    memcpy(&f, &x, 4);
    return f;
}

static float sc_dot_f16(const float *q, const uint16_t *c, size_t d) {
    float s = 0;
    for (size_t i = 0; i < d; i++) s += q[i] * sl__f16_to_f32(c[i]);
    return s;
}

static float sc_l2_f16(const float *q, const uint16_t *c, size_t d) {
    float s = 0;
    for (size_t i = 0; i < d; i++) { float t = q[i] - sl__f16_to_f32(c[i]); s += t * t; }
    return s;
}


static int32_t sc_dot_u8s8(const uint8_t *q, const int8_t *c, size_t d) {
    int32_t s = 0;
    for (size_t i = 0; i < d; i++) s += (int32_t)q[i] * (int32_t)c[i];
    return s;
}

static void sc_dot_q4_x4(const int8_t *q, const uint8_t *const c[4], size_t nblk, int32_t out[4]) {
    for (int r = 0; r < 4; r++) {
        int32_t s = 0;
        for (size_t b = 0; b < nblk; b++) {
            const int8_t *qb = q + b * 64;
            const uint8_t *cb = c[r] + b * 32;
            for (int j = 0; j < 32; j++)
                s += (int32_t)qb[j] * (cb[j] & 15) + (int32_t)qb[j + 32] * (cb[j] >> 4);
        }
        out[r] = s;
    }
}

static void sc_q4_stats(const int8_t *x, size_t d, int *amax, uint32_t *sumsq) {
    int mx = 0;
    uint32_t ss = 0; /* d <= 65536: at most 65536 * 128^2 = 2^30 */
    for (size_t i = 0; i < d; i++) {
        int a = x[i] < 0 ? -x[i] : x[i];
        mx = a > mx ? a : mx;
        ss += (uint32_t)(a * a);
    }
    *amax = mx;
    *sumsq = ss;
}

static void sc_q4_pack(const int8_t *x, size_t d, const int8_t t[15], uint8_t *row) {
    memset(row, 0, 32 * ((d + 63) / 64));
    for (size_t i = 0; i < d; i++) {
        int u = 0;
        for (int k = 0; k < 15; k++) u += x[i] >= t[k];
        size_t j = i % 64;
        row[(i / 64) * 32 + (j & 31)] |= (uint8_t)(j < 32 ? u : u << 4);
    }
}

static const sl__dist_kernels sl__scalar_table = {
    "scalar", 0, sc_dot_f32, sc_l2_f32, sc_dot_f16, sc_l2_f16, sc_dot_u8s8, NULL, NULL,
    sc_dot_q4_x4, sc_q4_stats, sc_q4_pack
};

int sl__cpu_has_f16c(void) {
#if defined(__x86_64__)
    unsigned a, b, c, d;
    if (__get_cpuid(1, &a, &b, &c, &d)) return (c & bit_F16C) != 0;
#endif
    return 0;
}

const sl__dist_kernels *sl__dist_scalar(void) { return &sl__scalar_table; }

static const sl__dist_kernels *sl__best;
static pthread_once_t sl__best_once = PTHREAD_ONCE_INIT;

static void sl__pick(void) {
    const char *cap = getenv("SL_INDEX_SIMD");
    const sl__dist_kernels *k = NULL;
    if (!cap || strcmp(cap, "avx512") == 0 || cap[0] == '\0') k = sl__dist_avx512();
    if (!k && (!cap || cap[0] == '\0' || strcmp(cap, "scalar") != 0)) k = sl__dist_avx2();
    sl__best = k ? k : &sl__scalar_table;
}

const sl__dist_kernels *sl__dist_best(void) {
    pthread_once(&sl__best_once, sl__pick);
    return sl__best;
}
