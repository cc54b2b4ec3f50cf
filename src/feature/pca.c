/*
 * feature/pca.c - PCA with whitening for global descriptors (Jegou & Chum, "Negative evidences
 * and co-occurrences in image retrieval: the benefit of PCA and whitening", ECCV 2012).
 *
 * Training centres the samples and finds the top principal directions: from the d x d covariance
 * when n >= d, else from the n x n Gram matrix (the eigenvectors of X X^T map to those of X^T X
 * through u = X^T v / sqrt(lambda)), with LAPACK dsyevr (OpenBLAS) computing only the wanted
 * eigenpairs. Whitening divides component j by sqrt(lambda_j + eps * lambda_1); the eps term is
 * the usual regularization that keeps near-zero-variance directions from being blown up.
 * The projection matrix stores the scaled directions, so project = P (x - mean), then L2.
 * Invariants: eigenvector signs are fixed (largest-magnitude coordinate positive) so training is
 * deterministic; out_dim <= min(in_dim, n - 1); an sl_pca is read-only after training.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>
#include "feature/lanes.h"
#include "feature/pca_internal.h"
#include "util/util.h"

/* LAPACK (gfortran calling convention, hidden string lengths at the end). */
extern void dsyevr_(const char *jobz, const char *range, const char *uplo, const int *n, double *a,
                    const int *lda, const double *vl, const double *vu, const int *il,
                    const int *iu, const double *abstol, int *m, double *w, double *z,
                    const int *ldz, int *isuppz, double *work, const int *lwork, int *iwork,
                    const int *liwork, int *info, size_t l1, size_t l2, size_t l3);

void sl_pca_free(sl_pca *p) {
    if (!p) return;
    free(p->mean);
    free(p->proj);
    free(p->eigval);
    free(p);
}

size_t sl_pca_in_dim(const sl_pca *p) { return p ? p->in_dim : 0; }
size_t sl_pca_out_dim(const sl_pca *p) { return p ? p->out_dim : 0; }

/* Dot product of r with x - mean in SL__LANES partial sums (feature/lanes.h: same bits on every
 * ISA clone). */
static inline float centred_dot(const float *r, const float *x, const float *mean, size_t d) {
    float acc[SL__LANES] = {0};
    size_t i = 0;
    for (; i + SL__LANES <= d; i += SL__LANES)
        for (size_t l = 0; l < SL__LANES; l++) acc[l] += r[i + l] * (x[i + l] - mean[i + l]);
    for (size_t l = 0; i < d; i++, l++) acc[l] += r[i] * (x[i] - mean[i]);
    return sl__lanes_sum(acc);
}

#if defined(__GNUC__) && defined(__x86_64__)
/* The projections of 4 rows at a time (in_dim a multiple of 16), each with centred_dot's
 * operations - lane l adds r[i] * xc[i] for i = l mod 16 in order, xc[i] = x[i] - mean[i] being the
 * same float however often it is computed - and its lane tree: the same bits. x - mean is formed
 * once instead of once per output, and 4 matrix rows are read side by side (4 memory streams:
 * the 8 MB matrix of the default VLAD PCA is read once per query). */
__attribute__((target("avx2"))) static void project_avx2(const sl_pca *p, const float *x,
                                                         const float *xc, float *out) {
    size_t d = p->in_dim, j = 0;
    for (; j + 4 <= p->out_dim; j += 4) {
        const float *r0 = p->proj + j * d;
        __m256 a[8];
        for (int t = 0; t < 8; t++) a[t] = _mm256_setzero_ps();
        for (size_t i = 0; i < d; i += 16) {
            __m256 x0 = _mm256_loadu_ps(xc + i), x1 = _mm256_loadu_ps(xc + i + 8);
            for (int t = 0; t < 4; t++) {
                const float *r = r0 + (size_t)t * d + i;
                a[2 * t] = _mm256_add_ps(a[2 * t], _mm256_mul_ps(_mm256_loadu_ps(r), x0));
                a[2 * t + 1] = _mm256_add_ps(a[2 * t + 1], _mm256_mul_ps(_mm256_loadu_ps(r + 8), x1));
            }
        }
        for (int t = 0; t < 4; t++) out[j + (size_t)t] = sl__lanes_sum_avx2(a[2 * t], a[2 * t + 1]);
    }
    for (; j < p->out_dim; j++) out[j] = centred_dot(p->proj + j * d, x, p->mean, d);
}
#endif

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__) && !defined(SL_SANITIZE)
__attribute__((target_clones("avx2", "default")))
#endif
static void project_plain(const sl_pca *p, const float *x, float *out) {
    for (size_t j = 0; j < p->out_dim; j++) out[j] = centred_dot(p->proj + j * p->in_dim, x, p->mean, p->in_dim);
}

void sl_pca_project(const sl_pca *p, const float *x, float *out) {
    size_t d = p->in_dim;
    int fast = 0;
#if defined(__GNUC__) && defined(__x86_64__)
    int h = sl__cpu_avx2();
    float *xc = h && d % SL__LANES == 0 && d > 0 ? sl__mallocarray(d, sizeof *xc) : NULL;
    if (xc) {
        for (size_t i = 0; i < d; i++) xc[i] = x[i] - p->mean[i];
        project_avx2(p, x, xc, out);
        free(xc);
        fast = 1;
    }
#endif
    if (!fast) project_plain(p, x, out);
    double s = 0.0;
    for (size_t j = 0; j < p->out_dim; j++) s += (double)out[j] * out[j];
    if (s > 0.0) {
        float inv = (float)(1.0 / sqrt(s));
        for (size_t j = 0; j < p->out_dim; j++) out[j] *= inv;
    }
}

sl_pca *sl__pca_alloc(size_t in_dim, size_t out_dim) {
    sl_pca *p = calloc(1, sizeof *p);
    size_t pd;
    if (!p || sl__mul_size(in_dim, out_dim, &pd) != 0) { free(p); return NULL; }
    p->in_dim = in_dim;
    p->out_dim = out_dim;
    p->mean = sl__callocarray(in_dim, sizeof *p->mean);
    p->proj = sl__callocarray(pd, sizeof *p->proj);
    p->eigval = sl__callocarray(out_dim ? out_dim : 1, sizeof *p->eigval);
    if (!p->mean || !p->proj || !p->eigval) { sl_pca_free(p); return NULL; }
    return p;
}

/* Top `want` eigenpairs of the symmetric m x m matrix a (column-major = row-major, symmetric),
 * in descending order: vals[want], vecs[want][m] (row j = eigenvector j). */
static int top_eigen(double *a, int m, int want, double *vals, double *vecs) {
    int il = m - want + 1, iu = m, found = 0, info = 0, lwork = -1, liwork = -1, iwq = 0;
    double vl = 0, vu = 0, abstol = 0, wq = 0;
    double *w = malloc((size_t)m * sizeof *w);
    double *z = sl__mallocarray((size_t)m * (size_t)want, sizeof *z);
    int *isuppz = sl__mallocarray(2 * (size_t)want, sizeof *isuppz);
    if (!w || !z || !isuppz) { free(w); free(z); free(isuppz); return -1; }
    dsyevr_("V", "I", "U", &m, a, &m, &vl, &vu, &il, &iu, &abstol, &found, w, z, &m, isuppz, &wq,
            &lwork, &iwq, &liwork, &info, 1, 1, 1);
    if (info != 0) { free(w); free(z); free(isuppz); return -1; }
    lwork = (int)wq;
    liwork = iwq;
    double *work = sl__mallocarray((size_t)lwork, sizeof *work);
    int *iwork = sl__mallocarray((size_t)liwork, sizeof *iwork);
    if (!work || !iwork) { free(w); free(z); free(isuppz); free(work); free(iwork); return -1; }
    dsyevr_("V", "I", "U", &m, a, &m, &vl, &vu, &il, &iu, &abstol, &found, w, z, &m, isuppz, work,
            &lwork, iwork, &liwork, &info, 1, 1, 1);
    free(work); free(iwork); free(isuppz);
    if (info != 0 || found != want) { free(w); free(z); return -1; }
    for (int j = 0; j < want; j++) { /* ascending -> descending */
        int src = want - 1 - j;
        vals[j] = w[src];
        memcpy(vecs + (size_t)j * (size_t)m, z + (size_t)src * (size_t)m, (size_t)m * sizeof *vecs);
    }
    free(w); free(z);
    return 0;
}

sl_status sl_pca_train(const float *data, size_t n, size_t in_dim, size_t out_dim, int whiten,
                       float eps, sl_pca **out, sl_error *err) {
    if (out) *out = NULL;
    if (!data || !out || in_dim == 0 || out_dim == 0)
        return sl__err_set(err, SL_E_INVALID, "pca: empty input");
    if (n < 2) return sl__err_set(err, SL_E_INVALID, "pca: needs at least 2 samples, got %zu", n);
    if (!(eps >= 0.0f)) return sl__err_set(err, SL_E_INVALID, "pca: eps must be >= 0");
    if (n > 20000 || in_dim > 100000)
        return sl__err_set(err, SL_E_TOO_LARGE, "pca: %zu samples of %zu dims is too large", n,
                           in_dim);
    size_t maxout = in_dim < n - 1 ? in_dim : n - 1;
    if (out_dim > maxout) out_dim = maxout;
    int gram = n < in_dim;
    size_t m = gram ? n : in_dim;
    size_t nd, mm;
    if (sl__mul_size(n, in_dim, &nd) != 0 || sl__mul_size(m, m, &mm) != 0)
        return sl__err_set(err, SL_E_TOO_LARGE, "pca: size overflow");
    sl_pca *p = sl__pca_alloc(in_dim, out_dim);
    float *xc = sl__mallocarray(nd, sizeof *xc);
    float *g = sl__mallocarray(mm, sizeof *g);
    double *a = sl__mallocarray(mm, sizeof *a);
    double *vals = sl__mallocarray(out_dim, sizeof *vals);
    double *vecs = sl__mallocarray(out_dim * m, sizeof *vecs);
    sl_status st = SL_OK;
    if (!p || !xc || !g || !a || !vals || !vecs) {
        st = sl__err_set(err, SL_E_NOMEM, "pca: out of memory (%zu x %zu)", n, in_dim);
        goto done;
    }
    {
        double *mu = calloc(in_dim, sizeof *mu);
        if (!mu) { st = sl__err_set(err, SL_E_NOMEM, "pca: out of memory"); goto done; }
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < in_dim; j++) mu[j] += data[i * in_dim + j];
        for (size_t j = 0; j < in_dim; j++) p->mean[j] = (float)(mu[j] / (double)n);
        free(mu);
    }
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < in_dim; j++) xc[i * in_dim + j] = data[i * in_dim + j] - p->mean[j];
    if (gram) /* G = Xc Xc^T (n x n) */
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (int)n, (int)in_dim, 1.0f, xc,
                    (int)in_dim, 0.0f, g, (int)n);
    else      /* C = Xc^T Xc (d x d) */
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)in_dim, (int)n, 1.0f, xc,
                    (int)in_dim, 0.0f, g, (int)in_dim);
    for (size_t i = 0; i < m; i++) /* symmetric fill (row-major upper -> full) */
        for (size_t j = i; j < m; j++) a[i * m + j] = a[j * m + i] = g[i * m + j];
    if (top_eigen(a, (int)m, (int)out_dim, vals, vecs) != 0) {
        st = sl__err_set(err, SL_E_INTERNAL, "pca: eigen decomposition failed (%zu x %zu)", m, m);
        goto done;
    }
    {
        double top = vals[0] > 0.0 ? vals[0] : 1.0;
        if (gram) { /* U = V^T Xc, row j scaled by 1 / sqrt(lambda_j) */
            float *vf = g; /* reuse: out_dim * n <= n * n floats */
            for (size_t j = 0; j < out_dim; j++) {
                double s = vals[j] > 0.0 ? 1.0 / sqrt(vals[j]) : 0.0;
                for (size_t i = 0; i < n; i++) vf[j * n + i] = (float)(vecs[j * m + i] * s);
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)out_dim, (int)in_dim,
                        (int)n, 1.0f, vf, (int)n, xc, (int)in_dim, 0.0f, p->proj, (int)in_dim);
        }
        for (size_t j = 0; j < out_dim; j++) {
            double lam = vals[j] > 0.0 ? vals[j] : 0.0;
            float *row = p->proj + j * in_dim;
            if (!gram)
                for (size_t d = 0; d < in_dim; d++) row[d] = (float)vecs[j * m + d];
            size_t arg = 0; /* sign convention */
            for (size_t d = 1; d < in_dim; d++) if (fabsf(row[d]) > fabsf(row[arg])) arg = d;
            float sign = row[arg] < 0.0f ? -1.0f : 1.0f;
            double var = lam / (double)n;
            p->eigval[j] = (float)var;
            float sc = whiten ? (float)(1.0 / sqrt(var + (double)eps * top / (double)n + 1e-12)) : 1.0f;
            for (size_t d = 0; d < in_dim; d++) row[d] *= sign * sc;
        }
    }
    p->out_dim = out_dim;
    *out = p;
    p = NULL;
done:
    sl_pca_free(p);
    free(xc); free(g); free(a); free(vals); free(vecs);
    return st;
}
