/*
 * feature/vlad.c - VLAD, the vector of locally aggregated descriptors (Jegou, Douze, Schmid &
 * Perez, CVPR 2010).
 *
 * Each descriptor is assigned to its nearest centroid (hard assignment) and the residual x - c is
 * accumulated in that centroid's block; the k blocks of dim floats are concatenated. Then, as
 * flags ask: power normalization (signed square root, Jegou et al. PAMI 2012) to damp bursty
 * components, intra-normalization (each block L2-normalized, Arandjelovic & Zisserman CVPR 2013)
 * so a single dominant visual word cannot take the whole vector, and always a final global L2
 * normalization. Invariants: output norm is 1, or the vector is all zero when n == 0 (or every
 * residual is zero). Deterministic; no allocation.
 */
#include <math.h>
#include <string.h>
#include "shoplens/feature.h"

static void l2n(float *v, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)v[i] * v[i];
    if (s <= 0.0) return;
    float inv = (float)(1.0 / sqrt(s));
    for (size_t i = 0; i < n; i++) v[i] *= inv;
}

void sl_vlad(const float *centroids, size_t k, size_t dim, const float *desc, size_t n,
             unsigned flags, float *out) {
    size_t total = k * dim;
    memset(out, 0, total * sizeof *out);
    for (size_t i = 0; i < n; i++) {
        const float *x = desc + i * dim;
        size_t c = sl_kmeans_nearest(centroids, k, dim, x, NULL);
        const float *cc = centroids + c * dim;
        float *o = out + c * dim;
        for (size_t j = 0; j < dim; j++) o[j] += x[j] - cc[j];
    }
    if (flags & SL_VLAD_POWER)
        for (size_t i = 0; i < total; i++) out[i] = out[i] >= 0.0f ? sqrtf(out[i]) : -sqrtf(-out[i]);
    if (flags & SL_VLAD_INTRA)
        for (size_t c = 0; c < k; c++) l2n(out + c * dim, dim);
    l2n(out, total);
}
