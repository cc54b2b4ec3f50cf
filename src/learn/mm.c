/*
 * learn/mm.c - the matrix products of head training: C = alpha op(A) op(B) + beta C, row-major,
 * computed so that every output element is the same sum in the same order whatever the number
 * of threads: threads take whole rows of C, and each element accumulates k = 0, 1, ... in turn
 * (vectorized across the columns of C, never across k). OpenBLAS is not used here because its
 * threaded products change the last bits of some results with the thread count (measured:
 * `shoplens train` gave different heads with 1 and 2 threads), and a head must not.
 *
 * Invariant: results depend only on the inputs (and the CPU's instruction set), never on
 * `threads`.
 */
#include "learn/learn_internal.h"
#include "util/util.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct mm_job {
    size_t m, n, k;
    float alpha, beta;
    const float *a, *b;   /* row-major m x k and k x n (already transposed when asked) */
    float *c;
    size_t ldc;
    size_t r0, r1;
} mm_job;

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__) && !defined(SL_SANITIZE)
__attribute__((target_clones("avx2", "default")))
#endif
static void mm_rows(const float *restrict a, const float *restrict b, float *restrict c, size_t ldc,
                    size_t n, size_t k, float alpha, float beta, size_t r0, size_t r1, float *restrict acc) {
    for (size_t i = r0; i < r1; i++) {
        memset(acc, 0, n * sizeof *acc);
        const float *ar = a + i * k;
        for (size_t p = 0; p < k; p++) {
            float av = ar[p];
            const float *br = b + p * n;
            for (size_t j = 0; j < n; j++) acc[j] += av * br[j];
        }
        float *cr = c + i * ldc;
        if (beta == 0.0f)
            for (size_t j = 0; j < n; j++) cr[j] = alpha * acc[j];
        else
            for (size_t j = 0; j < n; j++) cr[j] = beta * cr[j] + alpha * acc[j];
    }
}

static void *mm_worker(void *arg) {
    mm_job *j = arg;
    float *acc = sl__mallocarray(j->n ? j->n : 1, sizeof *acc);
    if (!acc) return (void *)1;
    mm_rows(j->a, j->b, j->c, j->ldc, j->n, j->k, j->alpha, j->beta, j->r0, j->r1, acc);
    free(acc);
    return NULL;
}

/* Row-major copy of the transpose of a (rows x cols, leading dimension ld). */
static float *transpose(const float *a, size_t rows, size_t cols, size_t ld) {
    float *t = sl__mallocarray(rows * cols + 1, sizeof *t);
    if (!t) return NULL;
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < cols; j++) t[j * rows + i] = a[i * ld + j];
    return t;
}

int sl__mm(int ta, int tb, size_t m, size_t n, size_t k, float alpha, const float *a, size_t lda,
           const float *b, size_t ldb, float beta, float *c, size_t ldc, int threads) {
    if (m == 0 || n == 0) return 0;
    float *at = NULL, *bt = NULL;
    /* op(A) must be m x k with rows k apart, op(B) k x n with rows n apart */
    if (ta) at = transpose(a, k, m, lda);
    else if (lda != k) { at = sl__mallocarray(m * k + 1, sizeof *at); if (at) for (size_t i = 0; i < m; i++) memcpy(at + i * k, a + i * lda, k * sizeof *at); }
    if (tb) bt = transpose(b, n, k, ldb);
    else if (ldb != n) { bt = sl__mallocarray(k * n + 1, sizeof *bt); if (bt) for (size_t i = 0; i < k; i++) memcpy(bt + i * n, b + i * ldb, n * sizeof *bt); }
    int need_a = ta || lda != k, need_b = tb || ldb != n;
    if ((need_a && !at) || (need_b && !bt)) { free(at); free(bt); return -1; }
    mm_job base = {m, n, k, alpha, beta, need_a ? at : a, need_b ? bt : b, c, ldc, 0, m};
    if (threads < 1) threads = 1;
    if ((size_t)threads > m) threads = (int)m;
    /* small products are not worth a thread */
    if ((double)m * (double)n * (double)k < 1e6) threads = 1;
    mm_job jobs[SL_HEAD_THREADS_MAX];
    pthread_t th[SL_HEAD_THREADS_MAX];
    int started = 0, bad = 0;
    if (threads > SL_HEAD_THREADS_MAX) threads = SL_HEAD_THREADS_MAX;
    for (int t = 0; t < threads; t++) {
        jobs[t] = base;
        jobs[t].r0 = m * (size_t)t / (size_t)threads;
        jobs[t].r1 = m * (size_t)(t + 1) / (size_t)threads;
    }
    for (int t = 1; t < threads; t++) {
        if (pthread_create(&th[t], NULL, mm_worker, &jobs[t]) != 0) break;
        started = t;
    }
    if (mm_worker(&jobs[0])) bad = 1;
    for (int t = 1; t <= started; t++) {
        void *r = NULL;
        pthread_join(th[t], &r);
        if (r) bad = 1;
    }
    for (int t = started + 1; t < threads; t++) /* threads that could not start: run here */
        if (mm_worker(&jobs[t])) bad = 1;
    free(at);
    free(bt);
    return bad ? -1 : 0;
}
