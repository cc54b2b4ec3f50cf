/*
 * util/util.h - internal helpers shared by every module (not part of the public API).
 *
 * - sl__err_set: fill an sl_error (NULL allowed) with a status and a printf-style message and
 *   return the status, so callers write `return sl__err_set(err, SL_E_IO, "open %s: %s", ...)`.
 * - Overflow-checked size arithmetic (stb style): every size computed from untrusted input goes
 *   through sl__mul_size / sl__add_size.
 * - Monotonic clock for progress and benchmarks.
 */
#ifndef SL_UTIL_H
#define SL_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include "shoplens/error.h"

#if defined(__GNUC__)
#define SL__PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define SL__PRINTF(a, b)
#endif

sl_status sl__err_set(sl_error *err, sl_status code, const char *fmt, ...) SL__PRINTF(3, 4);

/* Prepends "prefix: " to an existing message (keeps the code). Returns err->code. */
sl_status sl__err_prefix(sl_error *err, const char *fmt, ...) SL__PRINTF(2, 3);

/* *out = a * b; returns 0 on success, -1 on overflow (then *out is untouched). */
static inline int sl__mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return -1;
    *out = a * b;
    return 0;
}
static inline int sl__add_size(size_t a, size_t b, size_t *out) {
    if (b > SIZE_MAX - a) return -1;
    *out = a + b;
    return 0;
}

/* malloc(n * size) with overflow check; NULL on overflow or failure. */
void *sl__mallocarray(size_t n, size_t size);
/* calloc wrapper kept for symmetry (calloc checks overflow itself). */
void *sl__callocarray(size_t n, size_t size);
/* realloc(p, n * size) with overflow check; on failure p is untouched and NULL returned. */
void *sl__reallocarray(void *p, size_t n, size_t size);
/* strdup that returns NULL for NULL. */
char *sl__strdup(const char *s);
/* 1 when s[0..n) is well-formed UTF-8 (RFC 3629: shortest forms, no surrogates, <= U+10FFFF). */
int sl__utf8_valid(const char *s, size_t n);
/* In place: every byte of the NUL-terminated s that is not part of a well-formed UTF-8 sequence
 * becomes '?'; well-formed text is left as it is. s may be NULL (no-op). */
void sl__utf8_scrub(char *s);

/* Seconds from an arbitrary fixed point, monotonic. */
double sl__now(void);

/* 1 if the CPU has AVX2 (checked once; for kernels compiled with a target attribute). */
int sl__cpu_avx2(void);

/* Small deterministic PRNG (splitmix64 seeding xoshiro256**); used wherever "seeded" matters. */
typedef struct sl__rng { uint64_t s[4]; } sl__rng;
void sl__rng_seed(sl__rng *r, uint64_t seed);
uint64_t sl__rng_next(sl__rng *r);
/* Uniform in [0, 1). */
double sl__rng_uniform(sl__rng *r);
/* Uniform integer in [0, n), n > 0. */
uint64_t sl__rng_below(sl__rng *r, uint64_t n);
/* Standard normal (Box-Muller). */
double sl__rng_normal(sl__rng *r);
/* Shuffles a[0..n) in place (Fisher-Yates: i from n down to 2 swaps a[i-1] with a[below(i)]). */
void sl__rng_shuffle(sl__rng *r, size_t *a, size_t n);

#endif
