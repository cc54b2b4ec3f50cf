/*
 * feature/kmeans.c - k-means for visual vocabularies.
 *
 * Seeding: k-means++ (Arthur & Vassilvitskii, SODA 2007) - each next centre is drawn with
 * probability proportional to the squared distance to the nearest chosen centre - run on a
 * deterministic subsample of at most SEED_SAMPLE points. Then either Lloyd iterations (n up to
 * batch_threshold) or mini-batch k-means (Sculley, WWW 2010: per-centre learning rate 1/count).
 * Empty clusters in Lloyd are re-seeded with the point farthest from its centre.
 * Invariants: everything is driven by sl__rng seeded from params->seed, loops run in a fixed
 * order, so the result is bit-identical for a seed on a given build; no threads.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "shoplens/feature.h"
#include "feature/lanes.h"
#include "util/util.h"

#define SEED_SAMPLE 20000

void sl_kmeans_params_init(sl_kmeans_params *p) {
    p->iters = SL_KMEANS_ITERS_DEFAULT;
    p->batch_threshold = SL_KMEANS_BATCH_THRESHOLD_DEFAULT;
    p->batch = SL_KMEANS_BATCH_DEFAULT;
    p->seed = 1;
}

/* Squared L2 distance in SL__LANES partial sums (feature/lanes.h: same bits on every ISA clone). */
static inline float dist2(const float *a, const float *b, size_t dim) {
    float acc[SL__LANES] = {0};
    size_t i = 0;
    for (; i + SL__LANES <= dim; i += SL__LANES)
        for (size_t l = 0; l < SL__LANES; l++) {
            float d = a[i + l] - b[i + l];
            acc[l] += d * d;
        }
    for (size_t l = 0; i < dim; i++, l++) { float d = a[i] - b[i]; acc[l] += d * d; }
    return sl__lanes_sum(acc);
}

static size_t nearest_plain(const float *centroids, size_t k, size_t dim, const float *x,
                            float *d2out) {
    size_t best = 0;
    float bd = FLT_MAX;
    for (size_t c = 0; c < k; c++) {
        float d = dist2(x, centroids + c * dim, dim);
        if (d < bd) { bd = d; best = c; }
    }
    if (d2out) *d2out = bd;
    return best;
}

#if defined(__GNUC__) && defined(__x86_64__)
/* dist2 of x to 4 centroids at once (dim a multiple of 16): each distance with the very same
 * operations as dist2 - lane l of the 16 gets elements l, l+16, ... as (a-b)*(a-b) added in order,
 * no FMA - and sl__lanes_sum's tree done in registers (lanes +8, +4, +2, +1), so the bits are
 * those of the plain loop; x is loaded once for the 4. (The plain loop spent most of its time
 * storing and re-adding the 16 lanes of every pair.) */
__attribute__((target("avx2"))) static size_t nearest_avx2(const float *centroids, size_t k,
                                                           size_t dim, const float *x,
                                                           float *d2out) {
    size_t best = 0;
    float bd = FLT_MAX;
    size_t c = 0;
    for (; c + 4 <= k; c += 4) {
        const float *c0 = centroids + c * dim;
        __m256 a[8];
        for (int t = 0; t < 8; t++) a[t] = _mm256_setzero_ps();
        for (size_t i = 0; i < dim; i += 16) {
            __m256 x0 = _mm256_loadu_ps(x + i), x1 = _mm256_loadu_ps(x + i + 8);
            for (int t = 0; t < 4; t++) {
                const float *cc = c0 + (size_t)t * dim + i;
                __m256 d0 = _mm256_sub_ps(x0, _mm256_loadu_ps(cc));
                __m256 d1 = _mm256_sub_ps(x1, _mm256_loadu_ps(cc + 8));
                a[2 * t] = _mm256_add_ps(a[2 * t], _mm256_mul_ps(d0, d0));
                a[2 * t + 1] = _mm256_add_ps(a[2 * t + 1], _mm256_mul_ps(d1, d1));
            }
        }
        for (int t = 0; t < 4; t++) {
            float d = sl__lanes_sum_avx2(a[2 * t], a[2 * t + 1]);
            if (d < bd) { bd = d; best = c + (size_t)t; }
        }
    }
    for (; c < k; c++) {
        float d = dist2(x, centroids + c * dim, dim);
        if (d < bd) { bd = d; best = c; }
    }
    if (d2out) *d2out = bd;
    return best;
}
#endif

size_t sl_kmeans_nearest(const float *centroids, size_t k, size_t dim, const float *x,
                         float *d2out) {
#if defined(__GNUC__) && defined(__x86_64__)
    int h = sl__cpu_avx2();
    if (h && dim % SL__LANES == 0 && dim > 0) return nearest_avx2(centroids, k, dim, x, d2out);
#endif
    return nearest_plain(centroids, k, dim, x, d2out);
}

/* k-means++ on the rows listed in idx (m of them). */
static void seed_pp(const float *data, const size_t *idx, size_t m, size_t dim, size_t k,
                    sl__rng *rng, float *cent, float *mind) {
    size_t first = idx[sl__rng_below(rng, m)];
    memcpy(cent, data + first * dim, dim * sizeof *cent);
    for (size_t i = 0; i < m; i++) mind[i] = dist2(data + idx[i] * dim, cent, dim);
    for (size_t c = 1; c < k; c++) {
        double tot = 0.0;
        for (size_t i = 0; i < m; i++) tot += mind[i];
        size_t pick = 0;
        if (tot > 0.0) {
            double r = sl__rng_uniform(rng) * tot, acc = 0.0;
            pick = m - 1;
            for (size_t i = 0; i < m; i++) {
                acc += mind[i];
                if (acc > r) { pick = i; break; }
            }
        } else {
            pick = (size_t)sl__rng_below(rng, m); /* all points coincide with centres */
        }
        float *cc = cent + c * dim;
        memcpy(cc, data + idx[pick] * dim, dim * sizeof *cc);
        for (size_t i = 0; i < m; i++) {
            float d = dist2(data + idx[i] * dim, cc, dim);
            if (d < mind[i]) mind[i] = d;
        }
    }
}

sl_status sl_kmeans(const float *data, size_t n, size_t dim, size_t k, const sl_kmeans_params *p,
                    float *centroids, double *inertia, sl_error *err) {
    sl_kmeans_params defp;
    if (!p) { sl_kmeans_params_init(&defp); p = &defp; }
    if (!data || !centroids || dim == 0 || k == 0)
        return sl__err_set(err, SL_E_INVALID, "kmeans: empty input (n %zu, dim %zu, k %zu)", n,
                           dim, k);
    if (k > n) return sl__err_set(err, SL_E_INVALID, "kmeans: k = %zu exceeds n = %zu points", k, n);
    if (p->iters < 1 || p->batch < 1)
        return sl__err_set(err, SL_E_INVALID, "kmeans: iters and batch must be >= 1");
    size_t kd;
    if (sl__mul_size(k, dim, &kd) != 0) return sl__err_set(err, SL_E_TOO_LARGE, "kmeans: k * dim overflows");
    sl__rng rng;
    sl__rng_seed(&rng, p->seed);
    size_t m = n < SEED_SAMPLE ? n : SEED_SAMPLE;
    size_t *idx = sl__mallocarray(m > p->batch ? m : p->batch, sizeof *idx);
    float *mind = sl__mallocarray(m, sizeof *mind);
    double *sum = sl__callocarray(kd, sizeof *sum);
    size_t *cnt = sl__callocarray(k, sizeof *cnt);
    size_t *assign = NULL;
    int mini = n > p->batch_threshold;
    if (!mini) assign = sl__mallocarray(n, sizeof *assign);
    if (!idx || !mind || !sum || !cnt || (!mini && !assign)) {
        free(idx); free(mind); free(sum); free(cnt); free(assign);
        return sl__err_set(err, SL_E_NOMEM, "kmeans: out of memory (n %zu, k %zu)", n, k);
    }
    if (m == n) {
        for (size_t i = 0; i < n; i++) idx[i] = i;
    } else { /* sample without replacement: partial Fisher-Yates over a virtual identity would
                need n memory; draw with replacement instead, good enough for seeding */
        for (size_t i = 0; i < m; i++) idx[i] = (size_t)sl__rng_below(&rng, n);
    }
    seed_pp(data, idx, m, dim, k, &rng, centroids, mind);

    if (!mini) {
        for (int it = 0; it < p->iters; it++) {
            memset(sum, 0, kd * sizeof *sum);
            memset(cnt, 0, k * sizeof *cnt);
            size_t changed = 0;
            for (size_t i = 0; i < n; i++) {
                const float *x = data + i * dim;
                size_t c = sl_kmeans_nearest(centroids, k, dim, x, NULL);
                if (it == 0 || c != assign[i]) changed++;
                assign[i] = c;
                cnt[c]++;
                double *s = sum + c * dim;
                for (size_t j = 0; j < dim; j++) s[j] += x[j];
            }
            for (size_t c = 0; c < k; c++) {
                float *cc = centroids + c * dim;
                if (cnt[c] == 0) { /* re-seed with the farthest point */
                    size_t far = 0;
                    float fd = -1.0f;
                    for (size_t i = 0; i < n; i++) {
                        float d = dist2(data + i * dim, centroids + assign[i] * dim, dim);
                        if (d > fd) { fd = d; far = i; }
                    }
                    memcpy(cc, data + far * dim, dim * sizeof *cc);
                    changed++;
                    continue;
                }
                for (size_t j = 0; j < dim; j++) cc[j] = (float)(sum[c * dim + j] / (double)cnt[c]);
            }
            if (it > 0 && changed == 0) break;
        }
    } else {
        int steps = p->iters * 4;
        for (int it = 0; it < steps; it++) {
            for (size_t b = 0; b < p->batch; b++) idx[b] = (size_t)sl__rng_below(&rng, n);
            for (size_t b = 0; b < p->batch; b++) {
                const float *x = data + idx[b] * dim;
                size_t c = sl_kmeans_nearest(centroids, k, dim, x, NULL);
                cnt[c]++;
                float lr = 1.0f / (float)cnt[c];
                float *cc = centroids + c * dim;
                for (size_t j = 0; j < dim; j++) cc[j] += lr * (x[j] - cc[j]);
            }
        }
    }
    if (inertia) {
        double tot = 0.0;
        size_t step = n > 200000 ? n / 200000 : 1, cntn = 0;
        for (size_t i = 0; i < n; i += step, cntn++) {
            float d;
            sl_kmeans_nearest(centroids, k, dim, data + i * dim, &d);
            tot += d;
        }
        *inertia = tot / (double)cntn;
    }
    free(idx); free(mind); free(sum); free(cnt); free(assign);
    return SL_OK;
}
