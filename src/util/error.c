/*
 * util/error.c - status names and messages, the sl_error record, and small shared helpers
 * (checked allocation, clock, PRNG, CPU check).
 * Invariant: sl_strerror/sl_status_name return static strings for every int, known or not.
 */
#include "util/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <time.h>

static const struct { int code; const char *name; const char *text; } sl__statuses[] = {
    { SL_OK, "SL_OK", "success" },
    { SL_E_NOMEM, "SL_E_NOMEM", "out of memory" },
    { SL_E_INVALID, "SL_E_INVALID", "invalid argument" },
    { SL_E_IO, "SL_E_IO", "input/output error" },
    { SL_E_UNSUPPORTED, "SL_E_UNSUPPORTED", "unsupported format or feature" },
    { SL_E_CORRUPT, "SL_E_CORRUPT", "corrupt or truncated data" },
    { SL_E_TOO_LARGE, "SL_E_TOO_LARGE", "input exceeds a limit" },
    { SL_E_NOT_FOUND, "SL_E_NOT_FOUND", "not found" },
    { SL_E_EXISTS, "SL_E_EXISTS", "already exists" },
    { SL_E_VERSION, "SL_E_VERSION", "incompatible version" },
    { SL_E_BUSY, "SL_E_BUSY", "resource busy" },
    { SL_E_STATE, "SL_E_STATE", "invalid state for this operation" },
    { SL_E_INTERNAL, "SL_E_INTERNAL", "internal error" },
    { SL_E_AUTH, "SL_E_AUTH", "authentication required or failed" },
    { SL_E_INTERRUPTED, "SL_E_INTERRUPTED", "interrupted" },
};

const char *sl_strerror(int status) {
    for (size_t i = 0; i < sizeof sl__statuses / sizeof sl__statuses[0]; i++)
        if (sl__statuses[i].code == status) return sl__statuses[i].text;
    return "unknown status";
}

const char *sl_status_name(int status) {
    for (size_t i = 0; i < sizeof sl__statuses / sizeof sl__statuses[0]; i++)
        if (sl__statuses[i].code == status) return sl__statuses[i].name;
    return "SL_E_UNKNOWN";
}

const char *sl_version(void) { return SL_VERSION; }

void sl_error_clear(sl_error *err) {
    if (!err) return;
    err->code = SL_OK;
    err->message[0] = '\0';
}

sl_status sl__err_set(sl_error *err, sl_status code, const char *fmt, ...) {
    if (err) {
        err->code = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

sl_status sl__err_prefix(sl_error *err, const char *fmt, ...) {
    if (!err) return SL_E_INTERNAL;
    char prefix[SL_ERROR_MSG_MAX], old[SL_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->message, sizeof old);
    /* Truncation is intended: the message buffer is fixed-size. */
    size_t n = strlen(prefix);
    if (n > sizeof err->message - 1) n = sizeof err->message - 1;
    memcpy(err->message, prefix, n);
    size_t rest = sizeof err->message - 1 - n;
    const char *sep = ": ";
    for (int i = 0; sep[i] && rest; i++, rest--) err->message[n++] = sep[i];
    size_t ol = strlen(old);
    if (ol > rest) ol = rest;
    memcpy(err->message + n, old, ol);
    err->message[n + ol] = '\0';
    return err->code;
}

void *sl__mallocarray(size_t n, size_t size) {
    size_t total;
    if (sl__mul_size(n, size, &total) != 0) return NULL;
    return malloc(total ? total : 1);
}

void *sl__callocarray(size_t n, size_t size) {
    return calloc(n ? n : 1, size ? size : 1);
}

void *sl__reallocarray(void *p, size_t n, size_t size) {
    size_t total;
    if (sl__mul_size(n, size, &total) != 0) return NULL;
    return realloc(p, total ? total : 1);
}

char *sl__strdup(const char *s) {
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

double sl__now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t sl__splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void sl__rng_seed(sl__rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = sl__splitmix64(&seed);
}

static inline uint64_t sl__rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t sl__rng_next(sl__rng *r) {
    uint64_t *s = r->s;
    uint64_t result = sl__rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t;
    s[3] = sl__rotl(s[3], 45);
    return result;
}

double sl__rng_uniform(sl__rng *r) { return (double)(sl__rng_next(r) >> 11) * 0x1.0p-53; }

uint64_t sl__rng_below(sl__rng *r, uint64_t n) {
    /* Lemire-style rejection to avoid modulo bias. */
    uint64_t threshold = (0 - n) % n, x;
    do { x = sl__rng_next(r); } while (x < threshold);
    return x % n;
}

void sl__rng_shuffle(sl__rng *r, size_t *a, size_t n) {
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)sl__rng_below(r, i);
        size_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

double sl__rng_normal(sl__rng *r) {
    double u1 = sl__rng_uniform(r), u2 = sl__rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

int sl__cpu_avx2(void) {
#if defined(__GNUC__) && defined(__x86_64__)
    static int have = -1; /* -1 unknown, else 0/1; racing first calls store the same value */
    int h = __atomic_load_n(&have, __ATOMIC_RELAXED);
    if (h < 0) {
        __builtin_cpu_init();
        h = __builtin_cpu_supports("avx2") ? 1 : 0;
        __atomic_store_n(&have, h, __ATOMIC_RELAXED);
    }
    return h;
#else
    return 0;
#endif
}
