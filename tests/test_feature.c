/*
 * tests/test_feature.c - the feature building blocks and pipeline: k-means, VLAD, PCA-whitening,
 * RANSAC, compact local features (serialization, matching), colour histograms, RootSIFT, the
 * specification grammar, save/load and determinism. Inputs are generated; no data files.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "shoplens/feature.h"
#include "shoplens/nn.h"
#include "feature/features_internal.h"
#include "feature/pca_internal.h"
#include "feature/lanes.h"
#include "util/util.h"

/* ---- k-means ----------------------------------------------------------------------------- */

static float *blobs(size_t per, size_t dim, size_t k, const float *centres, uint64_t seed) {
    float *x = malloc(per * k * dim * sizeof *x);
    sl__rng r;
    sl__rng_seed(&r, seed);
    for (size_t c = 0; c < k; c++)
        for (size_t i = 0; i < per; i++)
            for (size_t d = 0; d < dim; d++)
                x[(c * per + i) * dim + d] = centres[c * dim + d] + 0.3f * (float)sl__rng_normal(&r);
    return x;
}

static void check_centres(const float *got, const float *want, size_t k, size_t dim, float tol) {
    for (size_t c = 0; c < k; c++) { /* every true centre has a learned centroid nearby */
        float d2;
        size_t j = sl_kmeans_nearest(got, k, dim, want + c * dim, &d2);
        (void)j;
        assert_true(sqrtf(d2) < tol);
    }
}

/* The nearest-centroid search (VLAD assignment on every query) must give the same index and the
 * same distance bits as the 16-lane reference, whichever kernel runs: dims that are and are not
 * multiples of 16, k not a multiple of the 4-centroid block, ties (duplicated centroids). */
static void test_kmeans_nearest_bits(void **state) {
    (void)state;
    static const size_t dims[] = {128, 16, 48, 20, 7};
    static const size_t ks[] = {64, 67, 1, 5};
    sl__rng r;
    sl__rng_seed(&r, 17);
    for (size_t a = 0; a < sizeof dims / sizeof dims[0]; a++)
        for (size_t b = 0; b < sizeof ks / sizeof ks[0]; b++) {
            size_t dim = dims[a], k = ks[b];
            float *cent = malloc(k * dim * sizeof *cent), *x = malloc(dim * sizeof *x);
            assert_non_null(cent);
            assert_non_null(x);
            for (size_t i = 0; i < k * dim; i++) cent[i] = (float)sl__rng_normal(&r);
            if (k > 3) memcpy(cent + 3 * dim, cent + 1 * dim, dim * sizeof *cent); /* a tie */
            for (int t = 0; t < 20; t++) {
                for (size_t i = 0; i < dim; i++)
                    x[i] = t == 0 && k > 3 ? cent[dim + i] : (float)sl__rng_normal(&r);
                size_t want = 0;
                float wd = 3.4e38f;
                for (size_t c = 0; c < k; c++) {
                    float acc[SL__LANES] = {0};
                    for (size_t i = 0; i < dim; i++) {
                        float d = x[i] - cent[c * dim + i];
                        acc[i % SL__LANES] += d * d;
                    }
                    float d = sl__lanes_sum(acc);
                    if (d < wd) { wd = d; want = c; }
                }
                float got_d;
                size_t got = sl_kmeans_nearest(cent, k, dim, x, &got_d);
                assert_int_equal(got, want);
                assert_memory_equal(&got_d, &wd, sizeof wd);
            }
            free(cent);
            free(x);
        }
}

static void test_kmeans_separable_lloyd_and_minibatch(void **state) {
    (void)state;
    enum { K = 4, D = 8, PER = 250 };
    float centres[K * D];
    for (int c = 0; c < K; c++)
        for (int d = 0; d < D; d++) centres[c * D + d] = (d == c) ? 10.0f : (d == c + 4 ? -10.0f : 0.0f);
    float *x = blobs(PER, D, K, centres, 7);
    float cent[K * D], cent2[K * D];
    double inertia = 0;
    sl_kmeans_params p;
    sl_kmeans_params_init(&p);
    p.seed = 42;
    assert_int_equal(sl_kmeans(x, PER * K, D, K, &p, cent, &inertia, NULL), SL_OK);
    check_centres(cent, centres, K, D, 0.15f);
    /* noise variance 0.09 per dimension -> mean squared distance ~ 8 * 0.09 */
    assert_true(inertia > 0.5 && inertia < 1.0);
    /* same seed -> bit-identical */
    assert_int_equal(sl_kmeans(x, PER * K, D, K, &p, cent2, NULL, NULL), SL_OK);
    assert_memory_equal(cent, cent2, sizeof cent);
    /* mini-batch path */
    p.batch_threshold = 100;
    p.batch = 64;
    assert_int_equal(sl_kmeans(x, PER * K, D, K, &p, cent2, &inertia, NULL), SL_OK);
    check_centres(cent2, centres, K, D, 0.3f);
    /* k > n is refused */
    sl_error e;
    assert_int_equal(sl_kmeans(x, 3, D, K, &p, cent2, NULL, &e), SL_E_INVALID);
    assert_non_null(strstr(e.message, "exceeds"));
    free(x);
}

/* ---- VLAD -------------------------------------------------------------------------------- */

static void test_vlad_hand_computed(void **state) {
    (void)state;
    const float cent[4] = {0, 0, 10, 0};
    const float desc[6] = {1, 0, 0, 2, 9, 1};
    float v[4];
    /* residuals: cluster 0: (1,0)+(0,2) = (1,2); cluster 1: (9,1)-(10,0) = (-1,1) */
    sl_vlad(cent, 2, 2, desc, 3, 0, v);
    float s = 1.0f / sqrtf(7.0f);
    assert_float_equal(v[0], 1 * s, 1e-6); assert_float_equal(v[1], 2 * s, 1e-6);
    assert_float_equal(v[2], -1 * s, 1e-6); assert_float_equal(v[3], 1 * s, 1e-6);
    /* intra: (1,2)/sqrt5 and (-1,1)/sqrt2, then the whole / sqrt2 */
    sl_vlad(cent, 2, 2, desc, 3, SL_VLAD_INTRA, v);
    assert_float_equal(v[0], 1 / sqrtf(5) / sqrtf(2), 1e-6);
    assert_float_equal(v[1], 2 / sqrtf(5) / sqrtf(2), 1e-6);
    assert_float_equal(v[2], -1 / sqrtf(2) / sqrtf(2), 1e-6);
    /* power: (1, sqrt2, -1, 1) / sqrt5 */
    sl_vlad(cent, 2, 2, desc, 3, SL_VLAD_POWER, v);
    assert_float_equal(v[1], sqrtf(2) / sqrtf(5), 1e-6);
    assert_float_equal(v[2], -1 / sqrtf(5), 1e-6);
    /* no descriptors: zero vector */
    sl_vlad(cent, 2, 2, desc, 0, SL_VLAD_POWER | SL_VLAD_INTRA, v);
    for (int i = 0; i < 4; i++) assert_float_equal(v[i], 0.0f, 0.0f);
}

/* ---- PCA --------------------------------------------------------------------------------- */

/* The projection (once per query) gives the bits of the 16-lane reference - lane l sums
 * r[i] * (x[i] - mean[i]) for i = l mod 16, then the lane tree, then the L2 normalization - for
 * input sizes that are and are not multiples of 16 and output sizes not multiples of 4. */
static void test_pca_project_bits(void **state) {
    (void)state;
    static const size_t shapes[][2] = {{8192 / 16, 7}, {256, 9}, {48, 4}, {20, 5}, {7, 3}};
    sl__rng r;
    sl__rng_seed(&r, 23);
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        size_t in = shapes[t][0], outd = shapes[t][1];
        sl_pca *p = sl__pca_alloc(in, outd);
        assert_non_null(p);
        for (size_t i = 0; i < in; i++) p->mean[i] = (float)sl__rng_normal(&r);
        for (size_t i = 0; i < in * outd; i++) p->proj[i] = (float)sl__rng_normal(&r);
        float *x = malloc(in * sizeof *x), *got = malloc(outd * sizeof *got), *want = malloc(outd * sizeof *want);
        assert_non_null(x);
        assert_non_null(got);
        assert_non_null(want);
        for (size_t i = 0; i < in; i++) x[i] = (float)sl__rng_normal(&r);
        double s2 = 0.0;
        for (size_t j = 0; j < outd; j++) {
            float acc[SL__LANES] = {0};
            for (size_t i = 0; i < in; i++) acc[i % SL__LANES] += p->proj[j * in + i] * (x[i] - p->mean[i]);
            want[j] = sl__lanes_sum(acc);
            s2 += (double)want[j] * want[j];
        }
        float inv = (float)(1.0 / sqrt(s2));
        for (size_t j = 0; j < outd; j++) want[j] *= inv;
        sl_pca_project(p, x, got);
        assert_memory_equal(got, want, outd * sizeof *got);
        free(x); free(got); free(want);
        sl_pca_free(p);
    }
}

static void test_pca_covariance_path_hand_computed(void **state) {
    (void)state;
    /* points on the diagonal plus a small anti-diagonal spread; mean 0 */
    const float x[12] = {-2, -2, -1, -1, 1, 1, 2, 2, 0.1f, -0.1f, -0.1f, 0.1f};
    sl_pca *p = NULL;
    assert_int_equal(sl_pca_train(x, 6, 2, 2, 0, 0.0f, &p, NULL), SL_OK);
    assert_int_equal(sl_pca_out_dim(p), 2);
    /* variance along (1,1)/sqrt2: (8+2+2+8)/6; along (1,-1)/sqrt2: 2 * 0.02 / 6 */
    assert_float_equal(p->eigval[0], 20.0f / 6.0f, 1e-4);
    assert_float_equal(p->eigval[1], 0.04f / 6.0f, 1e-5);
    assert_float_equal(p->proj[0], 1 / sqrtf(2), 1e-5);
    assert_float_equal(p->proj[1], 1 / sqrtf(2), 1e-5);
    float in[2] = {3, 3}, out[2];
    sl_pca_project(p, in, out);  /* pure first component, L2-normalized */
    assert_float_equal(out[0], 1.0f, 1e-5);
    assert_float_equal(out[1], 0.0f, 1e-5);
    sl_pca_free(p);
    /* whitening: components divided by their standard deviation (eps 0) */
    assert_int_equal(sl_pca_train(x, 6, 2, 2, 1, 0.0f, &p, NULL), SL_OK);
    float q[2] = {1, 0}; /* equal parts of both directions before whitening */
    sl_pca_project(p, q, out);
    float a = (1 / sqrtf(2)) / sqrtf(20.0f / 6.0f), b = (1 / sqrtf(2)) / sqrtf(0.04f / 6.0f);
    float nrm = sqrtf(a * a + b * b);
    assert_float_equal(fabsf(out[0]), a / nrm, 1e-3);
    assert_float_equal(fabsf(out[1]), b / nrm, 1e-3);
    sl_pca_free(p);
}

static void test_pca_gram_path_matches_hand_computed(void **state) {
    (void)state;
    /* 4 samples in 6 dims (n < d: Gram path): +-3 e1, +-1 e2 -> variances 4.5 and 0.5 */
    float x[24] = {0};
    x[0] = 3; x[6] = -3; x[12 + 1] = 1; x[18 + 1] = -1;
    sl_pca *p = NULL;
    assert_int_equal(sl_pca_train(x, 4, 6, 8, 0, 0.0f, &p, NULL), SL_OK);
    assert_int_equal(sl_pca_out_dim(p), 3); /* capped at n - 1 */
    assert_float_equal(p->eigval[0], 4.5f, 1e-4);
    assert_float_equal(p->eigval[1], 0.5f, 1e-4);
    assert_float_equal(fabsf(p->proj[0]), 1.0f, 1e-4);      /* e1 */
    assert_float_equal(fabsf(p->proj[6 + 1]), 1.0f, 1e-4);  /* e2 */
    assert_true(p->proj[0] > 0 && p->proj[7] > 0);          /* sign convention */
    sl_pca_free(p);
    sl_error e;
    assert_int_equal(sl_pca_train(x, 1, 6, 2, 0, 0.0f, &p, &e), SL_E_INVALID);
    assert_null(p);
}

/* ---- RANSAC ------------------------------------------------------------------------------ */

static void apply_h(const double H[9], float x, float y, float *u, float *v) {
    double w = H[6] * x + H[7] * y + H[8];
    *u = (float)((H[0] * x + H[1] * y + H[2]) / w);
    *v = (float)((H[3] * x + H[4] * y + H[5]) / w);
}

static void ransac_case(sl_geo_model model, const double Ht[9]) {
    enum { IN = 60, OUT = 40, N = IN + OUT };
    float src[2 * N], dst[2 * N];
    sl__rng r;
    sl__rng_seed(&r, 99);
    for (int i = 0; i < N; i++) {
        src[2 * i] = (float)(sl__rng_uniform(&r) * 500.0);
        src[2 * i + 1] = (float)(sl__rng_uniform(&r) * 400.0);
        if (i < IN) {
            apply_h(Ht, src[2 * i], src[2 * i + 1], &dst[2 * i], &dst[2 * i + 1]);
            dst[2 * i] += (float)(0.5 * sl__rng_normal(&r));
            dst[2 * i + 1] += (float)(0.5 * sl__rng_normal(&r));
        } else {
            dst[2 * i] = (float)(sl__rng_uniform(&r) * 500.0);
            dst[2 * i + 1] = (float)(sl__rng_uniform(&r) * 400.0);
        }
    }
    sl_ransac_params p;
    sl_ransac_params_init(&p);
    p.model = model;
    p.threshold = 3.0f;
    p.max_iters = 2000;
    double H[9];
    int inl = 0;
    unsigned char mask[N];
    assert_int_equal(sl_ransac(src, dst, N, &p, H, &inl, mask, NULL), SL_OK);
    assert_true(inl >= IN - 2 && inl <= IN + 3);
    int true_in = 0;
    for (int i = 0; i < IN; i++) true_in += mask[i];
    assert_true(true_in >= IN - 2);
    /* the model maps the grid corners where the true one does */
    for (int c = 0; c < 4; c++) {
        float x = (c & 1) ? 500.0f : 0.0f, y = (c & 2) ? 400.0f : 0.0f, u1, v1, u2, v2;
        apply_h(Ht, x, y, &u1, &v1);
        apply_h(H, x, y, &u2, &v2);
        assert_true(hypotf(u1 - u2, v1 - v2) < 3.0f);
    }
    /* deterministic */
    double H2[9];
    int inl2;
    assert_int_equal(sl_ransac(src, dst, N, &p, H2, &inl2, NULL, NULL), SL_OK);
    assert_int_equal(inl, inl2);
    assert_memory_equal(H, H2, sizeof H);
}

static void test_ransac_recovers_homography_with_outliers(void **state) {
    (void)state;
    const double Ht[9] = {0.9, 0.15, 20, -0.1, 1.05, 10, 2e-4, -1e-4, 1};
    ransac_case(SL_GEO_HOMOGRAPHY, Ht);
}

static void test_ransac_recovers_affine_with_outliers(void **state) {
    (void)state;
    const double c = cos(0.4), s = sin(0.4);
    const double Ht[9] = {1.3 * c, -1.3 * s, 40, 1.3 * s, 1.3 * c, -15, 0, 0, 1};
    ransac_case(SL_GEO_AFFINE, Ht);
}

static void test_ransac_too_few_points(void **state) {
    (void)state;
    const float pts[4] = {0, 0, 1, 1};
    double H[9];
    int inl = 5;
    assert_int_equal(sl_ransac(pts, pts, 2, NULL, H, &inl, NULL, NULL), SL_OK);
    assert_int_equal(inl, 0);
    assert_float_equal(H[0], 1.0, 0.0);
}

/* Skipping repeated samples (few pairs) changes no bit: for 3..18 pairs, both models, point
 * sets with a true map plus outliers, collinear (degenerate) sets and duplicated points, the
 * result with skipping equals the one that fits every draw. Also shows that the skipping ends
 * early: with 4 collinear pairs (no plausible affine map) it still gives 0 inliers. */
static void test_ransac_skip_repeats_same_result(void **state) {
    (void)state;
    sl__rng r;
    sl__rng_seed(&r, 4242);
    for (int model = 0; model < 2; model++)
        for (size_t n = 3; n <= 18; n++)
            for (int kind = 0; kind < 4; kind++) {
                float src[36], dst[36];
                for (size_t i = 0; i < n; i++) {
                    float x = (float)(sl__rng_uniform(&r) * 300), y = (float)(sl__rng_uniform(&r) * 200);
                    if (kind == 1) y = 0.5f * x + 3.0f;               /* collinear */
                    if (kind == 2 && i % 3 == 1) { x = src[0]; y = src[1]; } /* repeated point */
                    src[2 * i] = x;
                    src[2 * i + 1] = y;
                    int outlier = kind == 3 || sl__rng_below(&r, 3) == 0;
                    dst[2 * i] = outlier ? (float)(sl__rng_uniform(&r) * 300) : 1.1f * x - 0.2f * y + 7.0f;
                    dst[2 * i + 1] = outlier ? (float)(sl__rng_uniform(&r) * 200) : 0.1f * x + 0.9f * y - 4.0f;
                }
                sl_ransac_params p;
                sl_ransac_params_init(&p);
                p.model = model ? SL_GEO_HOMOGRAPHY : SL_GEO_AFFINE;
                double Ha[9], Hb[9];
                int ia = -1, ib = -2;
                unsigned char ma[18], mb[18];
                assert_int_equal(sl__ransac_impl(src, dst, n, &p, Ha, &ia, ma, 1, NULL), SL_OK);
                assert_int_equal(sl__ransac_impl(src, dst, n, &p, Hb, &ib, mb, 0, NULL), SL_OK);
                assert_int_equal(ia, ib);
                assert_memory_equal(Ha, Hb, sizeof Ha);
                assert_memory_equal(ma, mb, n);
            }
    /* 4 pairs on the true map among 6..9: the best hypothesis often comes late in the draws */
    for (int t = 0; t < 400; t++) {
        size_t n = 6 + (size_t)(t % 4);
        float src[18], dst[18];
        for (size_t i = 0; i < n; i++) {
            float x = (float)(sl__rng_uniform(&r) * 300), y = (float)(sl__rng_uniform(&r) * 200);
            src[2 * i] = x;
            src[2 * i + 1] = y;
            dst[2 * i] = i < 4 ? 0.8f * x + 0.3f * y + 5.0f : (float)(sl__rng_uniform(&r) * 300);
            dst[2 * i + 1] = i < 4 ? -0.2f * x + 1.1f * y : (float)(sl__rng_uniform(&r) * 200);
        }
        sl_ransac_params p;
        sl_ransac_params_init(&p);
        p.seed = (uint64_t)t;
        double Ha[9], Hb[9];
        int ia = -1, ib = -2;
        assert_int_equal(sl__ransac_impl(src, dst, n, &p, Ha, &ia, NULL, 1, NULL), SL_OK);
        assert_int_equal(sl__ransac_impl(src, dst, n, &p, Hb, &ib, NULL, 0, NULL), SL_OK);
        assert_int_equal(ia, ib);
        assert_memory_equal(Ha, Hb, sizeof Ha);
    }
}

/* ---- local features ---------------------------------------------------------------------- */

/* n random local features; kp positions uniform in 400x300. */
static sl_local_features *random_local(uint32_t n, uint64_t seed) {
    sl_local_features *lf = sl__local_alloc(n);
    sl__rng r;
    sl__rng_seed(&r, seed);
    for (uint32_t i = 0; i < n; i++) {
        lf->kp[4 * i] = (float)(sl__rng_uniform(&r) * 400);
        lf->kp[4 * i + 1] = (float)(sl__rng_uniform(&r) * 300);
        lf->kp[4 * i + 2] = 2.0f;
        lf->kp[4 * i + 3] = 0.0f;
        for (int d = 0; d < SL_SIFT_DESC_DIM; d++)
            lf->desc[i * SL_SIFT_DESC_DIM + d] = (uint8_t)sl__rng_below(&r, 120);
    }
    return lf;
}

static void test_local_features_roundtrip_and_damage(void **state) {
    (void)state;
    sl_local_features *lf = random_local(37, 5), *back = NULL;
    void *buf = NULL;
    size_t len = 0;
    assert_int_equal(sl_local_features_serialize(lf, &buf, &len, NULL), SL_OK);
    assert_int_equal(len, 12 + 37 * SL__LOCAL_RECORD + 4);
    assert_int_equal(sl_local_features_deserialize(buf, len, &back, NULL), SL_OK);
    assert_int_equal(sl_local_features_count(back), 37);
    assert_memory_equal(back->kp, lf->kp, 37 * 4 * sizeof(float));
    assert_memory_equal(back->desc, lf->desc, 37 * SL_SIFT_DESC_DIM);
    sl_local_features_free(back);
    sl_error e;
    uint8_t *b = buf;
    /* truncated, extended, every single-byte flip in header and body: all refused */
    for (size_t cut = 0; cut < len; cut += 97) {
        assert_int_not_equal(sl_local_features_deserialize(b, cut, &back, &e), SL_OK);
        assert_null(back);
    }
    for (size_t i = 0; i < len; i += 7) {
        b[i] ^= 0x10;
        sl_status st = sl_local_features_deserialize(b, len, &back, &e);
        assert_true(st == SL_E_CORRUPT || st == SL_E_VERSION);
        assert_null(back);
        b[i] ^= 0x10;
    }
    /* a huge count is refused before any allocation */
    b[8] = 0xff; b[9] = 0xff; b[10] = 0xff; b[11] = 0x7f;
    assert_int_equal(sl_local_features_deserialize(b, len, &back, &e), SL_E_CORRUPT);
    assert_non_null(strstr(e.message, "keypoints"));
    free(buf);
    sl_local_features_free(lf);
}

/* The SIMD matching kernel must agree exactly with the scalar scan, ties included: descriptors
 * drawn from a tiny alphabet (many equal distances), full-range bytes, sizes that are not
 * multiples of the kernels' blocks (4 query rows, 16 candidates), duplicated descriptors. Both
 * SIMD kernels are checked where the CPU has them (AVX-512 VNNI and AVX2). */
static void test_match_simd_equals_scalar(void **state) {
    (void)state;
    static const uint32_t sizes[][2] = {{1, 2}, {3, 17}, {5, 16}, {33, 31}, {120, 200}, {301, 77}};
    sl__rng r;
    sl__rng_seed(&r, 99);
    for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
        for (int alpha = 0; alpha < 4; alpha++) {
            sl_local_features *q = sl__local_alloc(sizes[t][0]), *c = sl__local_alloc(sizes[t][1]);
            assert_non_null(q);
            assert_non_null(c);
            sl_local_features *both[2] = {q, c};
            for (int s = 0; s < 2; s++)
                for (size_t k = 0; k < (size_t)both[s]->n * SL_SIFT_DESC_DIM; k++) {
                    size_t row = k / SL_SIFT_DESC_DIM;
                    /* alpha 3: whole rows at the extremes (all 0 or all 255 against all 255),
                     * the largest partial sums the kernels' 16-bit lanes can meet */
                    both[s]->desc[k] = alpha == 0 ? (uint8_t)(255 * sl__rng_below(&r, 2))
                                     : alpha == 1 ? (uint8_t)sl__rng_below(&r, 256)
                                     : alpha == 2 ? (uint8_t)(200 + sl__rng_below(&r, 3))
                                     : row % 3 == 2 ? (uint8_t)sl__rng_below(&r, 256)
                                                    : (uint8_t)(row % 3 == 0 ? 255 : 0);
                }
            if (c->n > 3) memcpy(c->desc + 2 * SL_SIFT_DESC_DIM, c->desc, SL_SIFT_DESC_DIM);
            memcpy(q->desc, c->desc, SL_SIFT_DESC_DIM);
            /* the kept 6-bit rows (what the VNNI path scans) are sl__desc6 of every byte */
            const uint8_t *rows = sl__match_rows6(q);
            if (rows)
                for (size_t k = 0; k < (size_t)q->n * SL_SIFT_DESC_DIM; k++)
                    assert_int_equal(rows[k], sl__desc6(q->desc[k]));
            uint32_t cap = 2 * (q->n < c->n ? q->n : c->n);
            uint32_t *pa = calloc(cap, sizeof *pa), *pb = calloc(cap, sizeof *pb);
            assert_non_null(pa);
            assert_non_null(pb);
            for (int rt = 0; rt < 2; rt++) {
                float ratio = rt ? 1.0f : 0.9f;
                int mb = sl__match_local_impl(q, c, ratio, pb, 0);
                for (int kern = 1; kern <= 2; kern++) { /* the CPU's best, then AVX2 alone */
                    int ma = sl__match_local_impl(q, c, ratio, pa, kern);
                    if (ma == -2) continue; /* no AVX2 on this CPU */
                    assert_int_equal(ma, mb);
                    assert_memory_equal(pa, pb, (size_t)ma * 2 * sizeof *pa);
                }
            }
            free(pa);
            free(pb);
            sl_local_features_free(q);
            sl_local_features_free(c);
        }
    }
}

/* CRC-32 (IEEE): the standard check value, and the sliced loop equals a bytewise reference at
 * every length and alignment (files written before the slicing must still verify). */
static void test_crc32_check_value_and_reference(void **state) {
    (void)state;
    assert_int_equal(sl__feature_crc32("123456789", 9), 0xCBF43926u);
    assert_int_equal(sl__feature_crc32("", 0), 0u);
    uint8_t buf[300];
    sl__rng r;
    sl__rng_seed(&r, 5);
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (uint8_t)sl__rng_below(&r, 256);
    for (size_t off = 0; off < 8; off++)
        for (size_t len = 0; len + off <= sizeof buf; len += 7) {
            uint32_t c = 0xFFFFFFFFu;
            for (size_t i = 0; i < len; i++) {
                c ^= buf[off + i];
                for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            }
            assert_int_equal(sl__feature_crc32(buf + off, len), c ^ 0xFFFFFFFFu);
        }
}

static void test_match_and_verify_known_transform(void **state) {
    (void)state;
    /* the candidate holds the query's descriptors (slightly perturbed, shuffled) at positions
     * moved by a known affine map, plus unrelated distractors */
    sl_local_features *q = random_local(120, 11), *noise = random_local(80, 12);
    sl_local_features *c = sl__local_alloc(200);
    sl__rng r;
    sl__rng_seed(&r, 13);
    const double A[9] = {0.8, -0.1, 30, 0.1, 0.8, 12, 0, 0, 1};
    for (uint32_t i = 0; i < 200; i++) {
        uint32_t t = (i * 37u) % 200u; /* permutation */
        if (i < 120) {
            apply_h(A, q->kp[4 * i], q->kp[4 * i + 1], &c->kp[4 * t], &c->kp[4 * t + 1]);
            for (int d = 0; d < SL_SIFT_DESC_DIM; d++) {
                int v = q->desc[i * SL_SIFT_DESC_DIM + d] + (int)sl__rng_below(&r, 5) - 2;
                c->desc[t * SL_SIFT_DESC_DIM + d] = (uint8_t)(v < 0 ? 0 : v);
            }
        } else {
            memcpy(c->kp + 4 * t, noise->kp + 4 * (i - 120), 4 * sizeof(float));
            memcpy(c->desc + t * SL_SIFT_DESC_DIM, noise->desc + (i - 120) * SL_SIFT_DESC_DIM, SL_SIFT_DESC_DIM);
        }
    }
    uint32_t pairs[240];
    int m = sl__match_local(q, c, 0.8f, pairs);
    assert_int_equal(m, 120);
    for (int k = 0; k < m; k++) assert_int_equal(pairs[2 * k + 1], (pairs[2 * k] * 37u) % 200u);
    sl__verify_cfg cfg;
    sl__verify_cfg_default(&cfg);
    cfg.enabled = 1;
    sl_verify_result res;
    assert_int_equal(sl__verify_with(&cfg, q, c, &res, NULL), SL_OK);
    assert_int_equal(res.matches, 120);
    assert_true(res.inliers >= 118);
    assert_float_equal(res.H[0], 0.8, 1e-3);
    assert_float_equal(res.H[2], 30, 0.1);
    /* unrelated images: few matches, no consensus */
    assert_int_equal(sl__verify_with(&cfg, q, noise, &res, NULL), SL_OK);
    assert_true(res.inliers < cfg.min_inliers);
    /* the re-ranking score is monotone in inliers and in the global score */
    sl_verify_result a = {0}, b = {0};
    a.inliers = 10; b.inliers = 40;
    double s0 = sl__rerank_with(&cfg, 0.5, &a), s1 = sl__rerank_with(&cfg, 0.5, &b);
    assert_true(s1 > s0 && s0 > 0.5);
    assert_true(sl__rerank_with(&cfg, 0.6, &a) > s0);
    a.inliers = 2;
    assert_float_equal(sl__rerank_with(&cfg, 0.5, &a), 0.5, 0.0);
    sl_local_features_free(q);
    sl_local_features_free(c);
    sl_local_features_free(noise);
}

/* ---- images for the pipeline tests ------------------------------------------------------ */

/* A textured colour scene: random rectangles and discs over a smooth gradient. */
static sl_image *scene(int w, int h, uint64_t seed) {
    sl_image *im = sl_image_new(w, h, 3);
    assert_non_null(im);
    uint8_t *px = sl_image_pixels(im);
    size_t st = sl_image_stride(im);
    sl__rng r;
    sl__rng_seed(&r, seed);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = px + (size_t)y * st + 3 * (size_t)x;
            p[0] = (uint8_t)(60 + x * 80 / w); p[1] = (uint8_t)(90 + y * 60 / h); p[2] = 120;
        }
    for (int s = 0; s < 40; s++) {
        int cx = (int)sl__rng_below(&r, (uint64_t)w), cy = (int)sl__rng_below(&r, (uint64_t)h);
        int rad = 4 + (int)sl__rng_below(&r, (uint64_t)(w / 8));
        uint8_t col[3] = {(uint8_t)sl__rng_below(&r, 256), (uint8_t)sl__rng_below(&r, 256), (uint8_t)sl__rng_below(&r, 256)};
        int disc = s & 1;
        for (int y = cy - rad; y <= cy + rad; y++)
            for (int x = cx - rad; x <= cx + rad; x++) {
                if (x < 0 || y < 0 || x >= w || y >= h) continue;
                if (disc && (x - cx) * (x - cx) + (y - cy) * (y - cy) > rad * rad) continue;
                memcpy(px + (size_t)y * st + 3 * (size_t)x, col, 3);
            }
    }
    return im;
}

static sl_image *solid(int w, int h, uint8_t r, uint8_t g, uint8_t b) {
    sl_image *im = sl_image_new(w, h, 3);
    uint8_t *px = sl_image_pixels(im);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = px + (size_t)y * sl_image_stride(im) + 3 * (size_t)x;
            p[0] = r; p[1] = g; p[2] = b;
        }
    return im;
}

static float dotf(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return (float)s;
}

/* ---- colour ------------------------------------------------------------------------------ */

static void test_color_histogram_properties(void **state) {
    (void)state;
    sl_color_params p;
    sl_color_params_init(&p);
    assert_int_equal(sl_color_dim(&p), (size_t)(p.hbins * p.sbins * p.vbins + p.vbins) * (1 + p.grid * p.grid));
    p.grid = 1;
    size_t d = sl_color_dim(&p);
    assert_int_equal(d, (size_t)(p.hbins * p.sbins * p.vbins + p.vbins));
    float *red = malloc(d * sizeof *red), *red2 = malloc(d * sizeof *red2), *green = malloc(d * sizeof *green);
    sl_image *r = solid(40, 30, 230, 20, 20), *r2 = solid(40, 30, 220, 40, 25), *g = solid(40, 30, 20, 220, 30);
    assert_int_equal(sl_color_hist(r, &p, red, NULL), SL_OK);
    assert_int_equal(sl_color_hist(r2, &p, red2, NULL), SL_OK);
    assert_int_equal(sl_color_hist(g, &p, green, NULL), SL_OK);
    assert_float_equal(dotf(red, red, d), 1.0f, 1e-5);       /* Hellinger: unit L2 norm */
    for (size_t i = 0; i < d; i++) assert_true(red[i] >= 0.0f);
    assert_true(dotf(red, red2, d) > 0.6f);                    /* similar reds stay close */
    assert_true(dotf(red, green, d) < 0.01f);                  /* different hues do not overlap */
    /* a grey image lands only in the achromatic bins */
    sl_image *grey = solid(20, 20, 128, 128, 128);
    assert_int_equal(sl_color_hist(grey, &p, green, NULL), SL_OK);
    size_t chrom = (size_t)(p.hbins * p.sbins * p.vbins);
    double mass = 0;
    for (size_t i = chrom; i < d; i++) mass += (double)green[i] * green[i];
    assert_float_equal(mass, 1.0, 1e-5);
    /* centre weighting: a red product in the middle of a large blue background */
    sl_image *framed = solid(100, 100, 20, 20, 230);
    uint8_t *px = sl_image_pixels(framed);
    for (int y = 30; y < 70; y++)
        for (int x = 30; x < 70; x++) {
            uint8_t *q = px + (size_t)y * sl_image_stride(framed) + 3 * (size_t)x;
            q[0] = 230; q[1] = 20; q[2] = 20;
        }
    sl_color_params flat = p;
    flat.center_sigma = SL_COLOR_CENTER_MAX;
    assert_int_equal(sl_color_hist(framed, &p, green, NULL), SL_OK);
    float weighted = dotf(red, green, d);
    assert_int_equal(sl_color_hist(framed, &flat, green, NULL), SL_OK);
    float uniform = dotf(red, green, d);
    assert_true(weighted > uniform + 0.1f);
    /* spatial grid adds blocks, still unit norm; bad parameters are refused */
    sl_color_params gp = p;
    gp.grid = 2;
    size_t gd = sl_color_dim(&gp);
    assert_int_equal(gd, 5 * d);
    float *gv = malloc(gd * sizeof *gv);
    assert_int_equal(sl_color_hist(framed, &gp, gv, NULL), SL_OK);
    assert_float_equal(dotf(gv, gv, gd), 1.0f, 1e-4);
    gp.hbins = 0;
    assert_int_equal(sl_color_dim(&gp), 0);
    assert_int_equal(sl_color_hist(framed, &gp, gv, NULL), SL_E_INVALID);
    free(gv);
    sl_image_free(framed); sl_image_free(grey);
    sl_image_free(r); sl_image_free(r2); sl_image_free(g);
    free(red); free(red2); free(green);
}

/* The colour histogram as first written (commit 70344d0), pixel by pixel: the reference that the
 * optimized sl_color_hist (AVX2 or portable) must reproduce bit for bit. Kept verbatim on purpose;
 * do not "simplify" it together with color.c. */
typedef struct ref_bins {
    int achrom;
    int hs[2], ss[2], vs[2];
    float whs[2], wss[2], wvs[2];
} ref_bins;

static void ref_soft_lin(float v, int n, int *b0, int *b1, float *w1) {
    float t = v - 0.5f;
    if (t <= 0.0f) { *b0 = *b1 = 0; *w1 = 0.0f; return; }
    if (t >= (float)(n - 1)) { *b0 = *b1 = n - 1; *w1 = 0.0f; return; }
    int i = (int)t;
    *b0 = i; *b1 = i + 1; *w1 = t - (float)i;
}

static void ref_bins_of(const sl_color_params *p, const uint8_t *px, int channels, ref_bins *pb) {
    float r, g, b;
    if (channels >= 3) { r = px[0] / 255.0f; g = px[1] / 255.0f; b = px[2] / 255.0f; }
    else { r = g = b = px[0] / 255.0f; }
    float mx = r > g ? (r > b ? r : b) : (g > b ? g : b);
    float mn = r < g ? (r < b ? r : b) : (g < b ? g : b);
    float v = mx, d = mx - mn;
    float s = mx > 0.0f ? d / mx : 0.0f;
    int v0, v1; float wv;
    ref_soft_lin(v * (float)p->vbins, p->vbins, &v0, &v1, &wv);
    pb->vs[0] = v0; pb->vs[1] = v1;
    pb->wvs[0] = 1.0f - wv; pb->wvs[1] = wv;
    pb->achrom = s < p->low_sat || d <= 0.0f;
    if (pb->achrom) return;
    float hue;
    if (mx == r) hue = (g - b) / d;
    else if (mx == g) hue = 2.0f + (b - r) / d;
    else hue = 4.0f + (r - g) / d;
    if (hue < 0.0f) hue += 6.0f;
    float hb = hue / 6.0f * (float)p->hbins - 0.5f;
    if (hb < 0.0f) hb += (float)p->hbins;
    int h0 = (int)hb;
    if (h0 >= p->hbins) h0 = p->hbins - 1;
    float wh = hb - (float)h0;
    int s0, s1; float ws;
    ref_soft_lin(s * (float)p->sbins, p->sbins, &s0, &s1, &ws);
    pb->hs[0] = h0; pb->hs[1] = (h0 + 1) % p->hbins;
    pb->ss[0] = s0; pb->ss[1] = s1;
    pb->whs[0] = 1.0f - wh; pb->whs[1] = wh;
    pb->wss[0] = 1.0f - ws; pb->wss[1] = ws;
}

static void ref_add(float *h, const sl_color_params *p, const ref_bins *pb, float w) {
    if (pb->achrom) {
        size_t chrom = (size_t)p->hbins * (size_t)p->sbins * (size_t)p->vbins;
        h[chrom + (size_t)pb->vs[0]] += w * pb->wvs[0];
        h[chrom + (size_t)pb->vs[1]] += w * pb->wvs[1];
        return;
    }
    for (int a = 0; a < 2; a++)
        for (int c = 0; c < 2; c++)
            for (int e = 0; e < 2; e++) {
                size_t idx = ((size_t)pb->hs[a] * (size_t)p->sbins + (size_t)pb->ss[c]) *
                             (size_t)p->vbins + (size_t)pb->vs[e];
                h[idx] += w * pb->whs[a] * pb->wss[c] * pb->wvs[e];
            }
}

static int ref_hellinger(float *h, size_t n) {
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) sum += h[i];
    if (!(sum > 0.0)) return 0;
    for (size_t i = 0; i < n; i++) h[i] = (float)sqrt(h[i] / sum);
    return 1;
}

static void ref_color_hist(const sl_image *img, const sl_color_params *p, float *out) {
    int w = sl_image_width(img), hgt = sl_image_height(img), ch = sl_image_channels(img);
    const uint8_t *pix = sl_image_cpixels(img);
    size_t stride = sl_image_stride(img);
    size_t bd = (size_t)p->hbins * p->sbins * p->vbins + (size_t)p->vbins, dim = sl_color_dim(p);
    memset(out, 0, dim * sizeof *out);
    int side = w > hgt ? w : hgt;
    int step = (side + 255) / 256;
    int g = p->grid;
    float cx = (float)(w - 1) * 0.5f, cy = (float)(hgt - 1) * 0.5f;
    float hx = w > 1 ? (float)w * 0.5f : 1.0f, hy = hgt > 1 ? (float)hgt * 0.5f : 1.0f;
    int weighted = p->center_sigma < SL_COLOR_CENTER_MAX;
    float inv2s2 = 1.0f / (2.0f * p->center_sigma * p->center_sigma);
    float wcol[257];
    for (int x = step / 2, i = 0; x < w && i < 257; x += step, i++) {
        float dx = ((float)x - cx) / hx;
        wcol[i] = weighted ? expf(-(dx * dx) * inv2s2) : 1.0f;
    }
    for (int y = step / 2; y < hgt; y += step) {
        const uint8_t *row = pix + (size_t)y * stride;
        float dy = ((float)y - cy) / hy;
        float wrow = weighted ? expf(-(dy * dy) * inv2s2) : 1.0f;
        int gy = g > 1 ? (int)((int64_t)y * g / hgt) : 0;
        for (int x = step / 2, i = 0; x < w; x += step, i++) {
            const uint8_t *px = row + (size_t)x * (size_t)ch;
            float wt = wrow * wcol[i];
            ref_bins pb;
            ref_bins_of(p, px, ch, &pb);
            ref_add(out, p, &pb, wt);
            if (g > 1) {
                int gx = (int)((int64_t)x * g / w);
                ref_add(out + bd * (size_t)(1 + gy * g + gx), p, &pb, 1.0f);
            }
        }
    }
    size_t blocks = dim / bd, live = 0;
    for (size_t b = 0; b < blocks; b++) live += (size_t)ref_hellinger(out + b * bd, bd);
    if (live > 1) {
        float sc = 1.0f / sqrtf((float)live);
        for (size_t i = 0; i < dim; i++) out[i] *= sc;
    }
}

/* One generated pixel of the given kind: 0 any of 256^3, 1 grey, 2 saturated (a channel at 0,
 * ties of the maximum), 3 saturation near low_sat, 4 extremes (0, 1, 254, 255 per channel),
 * 5 flat regions with a little noise (neighbours share bins), 6 a random kind per pixel. */
static void color_test_pixel(sl__rng *r, int kind, int x, int y, float low_sat, uint8_t rgb[3]) {
    if (kind == 6) kind = (int)sl__rng_below(r, 6);
    switch (kind) {
    case 0:
        for (int c = 0; c < 3; c++) rgb[c] = (uint8_t)sl__rng_below(r, 256);
        break;
    case 1:
        rgb[0] = rgb[1] = rgb[2] = (uint8_t)sl__rng_below(r, 256);
        break;
    case 2: {
        int hi = (int)sl__rng_below(r, 3), lo = (hi + 1 + (int)sl__rng_below(r, 2)) % 3;
        rgb[hi] = sl__rng_below(r, 2) ? 255 : (uint8_t)(1 + sl__rng_below(r, 255));
        rgb[lo] = 0;
        int mid = 3 - hi - lo, m = (int)sl__rng_below(r, 4);
        rgb[mid] = m == 0 ? rgb[hi] : m == 1 ? 0 : (uint8_t)sl__rng_below(r, rgb[hi] + 1u);
        break;
    }
    case 3: {
        int mx = 1 + (int)sl__rng_below(r, 255);
        int mn = (int)lrintf((float)mx * (1.0f - low_sat)) + (int)sl__rng_below(r, 5) - 2;
        mn = mn < 0 ? 0 : mn > mx ? mx : mn;
        int hi = (int)sl__rng_below(r, 3), lo = (hi + 1 + (int)sl__rng_below(r, 2)) % 3;
        rgb[hi] = (uint8_t)mx; rgb[lo] = (uint8_t)mn;
        rgb[3 - hi - lo] = (uint8_t)(mn + (int)sl__rng_below(r, (uint64_t)(mx - mn + 1)));
        break;
    }
    case 4: {
        static const uint8_t ext[4] = {0, 1, 254, 255};
        for (int c = 0; c < 3; c++) rgb[c] = ext[sl__rng_below(r, 4)];
        break;
    }
    default: { /* 5: 8 x 8 tiles of one colour each (hashed from the tile), +-1 noise */
        uint32_t t = (uint32_t)(x / 8) * 2654435761u ^ (uint32_t)(y / 8) * 40503u;
        for (int c = 0; c < 3; c++) {
            int v = (int)((t >> (8 * c)) & 0xff) + (int)sl__rng_below(r, 3) - 1;
            rgb[c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
        break;
    }
    }
}

static sl_image *color_test_image(int w, int h, int ch, int kind, float low_sat, uint64_t seed) {
    sl_image *im = sl_image_new(w, h, ch);
    assert_non_null(im);
    sl__rng r;
    sl__rng_seed(&r, seed);
    uint8_t *px = sl_image_pixels(im);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t rgb[3];
            color_test_pixel(&r, kind, x, y, low_sat, rgb);
            uint8_t *q = px + (size_t)y * sl_image_stride(im) + (size_t)x * (size_t)ch;
            for (int c = 0; c < ch; c++) q[c] = rgb[c];
        }
    return im;
}

/* The optimized histogram (the CPU's fastest path and the portable one) equals the reference
 * bit for bit: generated images of every pixel kind, odd sizes, grey and colour, and parameter
 * sets from 1 bin per axis (h0 == h1) to 64, grids 1..4, uniform and narrow centre weights. */
static void test_color_hist_bit_identical(void **state) {
    (void)state;
    static const int sizes[][2] = {{1, 1}, {3, 517}, {640, 480}, {1000, 7}, {1, 1000},
                                   {517, 3}, {257, 100}, {9, 9}};
    static const int nsizes = (int)(sizeof sizes / sizeof sizes[0]);
    sl_color_params ps[7];
    for (int i = 0; i < 7; i++) sl_color_params_init(&ps[i]);
    ps[1].grid = 1;
    ps[2].hbins = ps[2].sbins = ps[2].vbins = 1; ps[2].grid = 2;
    ps[3].hbins = 7; ps[3].sbins = 3; ps[3].vbins = 5; ps[3].grid = 4;
    ps[3].center_sigma = SL_COLOR_CENTER_MAX; ps[3].low_sat = 0.0f;
    ps[4].hbins = 5; ps[4].sbins = 2; ps[4].vbins = 3; ps[4].center_sigma = SL_COLOR_CENTER_MIN;
    ps[4].low_sat = 0.5f;
    ps[5].hbins = ps[5].sbins = ps[5].vbins = SL_COLOR_BINS_MAX; ps[5].grid = 1;
    ps[5].low_sat = 0.95f;
    ps[6].hbins = 64; ps[6].sbins = 1; ps[6].vbins = 2; ps[6].grid = 3;
    ps[6].center_sigma = 1.3f; ps[6].low_sat = 0.1f / 3.0f;
    size_t maxdim = 0;
    for (int i = 0; i < 7; i++) {
        assert_true(sl_color_dim(&ps[i]) > 0);
        if (sl_color_dim(&ps[i]) > maxdim) maxdim = sl_color_dim(&ps[i]);
    }
    float *want = malloc(maxdim * sizeof *want), *got = malloc(maxdim * sizeof *got);
    float *port = malloc(maxdim * sizeof *port);
    assert_non_null(want); assert_non_null(got); assert_non_null(port);
    int cases = 0;
    for (int si = 0; si < nsizes; si++)
        for (int ch = 1; ch <= 3; ch += 2)
            for (int kind = 0; kind <= 6; kind++)
                for (int pi = 0; pi < 7; pi++) {
                    /* the full product on small images; the 640 x 480 query size with every
                     * kind but only some parameter sets (it dominates the run time) */
                    if (sizes[si][0] * sizes[si][1] > 100000 && (pi + kind) % 3 != 0) continue;
                    const sl_color_params *p = &ps[pi];
                    uint64_t seed = 1000u * (uint64_t)si + 100u * (uint64_t)kind + 10u * (uint64_t)ch + (uint64_t)pi;
                    sl_image *im = color_test_image(sizes[si][0], sizes[si][1], ch, kind,
                                                    p->low_sat, seed);
                    size_t d = sl_color_dim(p);
                    ref_color_hist(im, p, want);
                    memset(got, 0xff, d * sizeof *got);
                    memset(port, 0xff, d * sizeof *port);
                    assert_int_equal(sl_color_hist(im, p, got, NULL), SL_OK);
                    assert_int_equal(sl__color_hist_impl(im, p, port, 0, NULL), SL_OK);
                    if (memcmp(want, got, d * sizeof *got) || memcmp(want, port, d * sizeof *port))
                        fail_msg("colour histogram differs from the reference: %dx%d, %d channels, "
                                 "pixel kind %d, parameter set %d (%s)", sizes[si][0],
                                 sizes[si][1], ch, kind, pi,
                                 memcmp(want, got, d * sizeof *got) ? "default path" : "portable path");
                    sl_image_free(im);
                    cases++;
                }
    assert_true(cases > 500);
    free(want); free(got); free(port);
}

/* ---- RootSIFT ---------------------------------------------------------------------------- */

static void test_rootsift_hand_computed(void **state) {
    (void)state;
    float d[2 * 4] = {1, 3, 0, 0, 2, 2, 4, 0};
    sl_rootsift(d, 2, 4);
    /* L1: (0.25, 0.75, 0, 0) -> sqrt; (0.25, 0.25, 0.5, 0) -> sqrt */
    assert_float_equal(d[0], 0.5f, 1e-6);
    assert_float_equal(d[1], sqrtf(0.75f), 1e-6);
    assert_float_equal(d[2], 0.0f, 1e-6);
    assert_float_equal(d[4], 0.5f, 1e-6);
    assert_float_equal(d[6], sqrtf(0.5f), 1e-6);
    assert_float_equal(dotf(d, d, 4), 1.0f, 1e-5); /* unit L2 norm */
}

/* ---- specification ----------------------------------------------------------------------- */

static void expect_bad_spec(const char *spec, const char *needle) {
    sl_features *f = (sl_features *)1;
    sl_error e;
    sl_error_clear(&e);
    assert_int_equal(sl_features_new(spec, &f, &e), SL_E_INVALID);
    assert_null(f);
    if (!strstr(e.message, needle)) fail_msg("spec \"%s\": message \"%s\" lacks \"%s\"", spec, e.message, needle);
}

static void test_spec_parsing(void **state) {
    (void)state;
    sl_features *f = NULL;
    assert_int_equal(sl_features_new("color:grid=1", &f, NULL), SL_OK);
    assert_false(sl_features_needs_training(f));
    assert_true(sl_features_ready(f));
    assert_false(sl_features_uses_verify(f));
    assert_int_equal(sl_features_dim(f), (size_t)(16 * 4 * 4 + 4));
    char cal[8] = "x";
    sl_features_calibration_describe(f, cal, sizeof cal); /* no CNN: no calibration */
    assert_string_equal(cal, "");
    sl_features_free(f);
    assert_int_equal(sl_features_new("color:w=0.5,bins=8x4x4+vlad:k=16,pca=0+verify:n=20", &f, NULL), SL_OK);
    assert_true(sl_features_needs_training(f));
    assert_false(sl_features_ready(f));
    assert_int_equal(sl_features_dim(f), 0);
    assert_true(sl_features_uses_verify(f));
    assert_int_equal(sl_features_verify_top_n(f), 20);
    const char *canon = sl_features_spec(f);
    assert_non_null(strstr(canon, "bins=8x4x4"));
    assert_non_null(strstr(canon, "k=16"));
    /* the canonical form parses to itself */
    sl_features *g = NULL;
    assert_int_equal(sl_features_new(canon, &g, NULL), SL_OK);
    assert_string_equal(sl_features_spec(g), canon);
    sl_features_free(g);
    sl_features_free(f);
    assert_int_equal(sl_features_new(NULL, &f, NULL), SL_OK); /* the default */
    sl_features_free(f);
    expect_bad_spec("colr", "unknown part");
    expect_bad_spec("color+vald", "\"vald\"");
    expect_bad_spec("color+vald", "offset 6");
    expect_bad_spec("color:w=abc", "bad value for 'w'");
    expect_bad_spec("color:bins=8x4", "bins");
    expect_bad_spec("color:hue=3", "unknown key for color");
    expect_bad_spec("color+", "stray '+'");
    expect_bad_spec("+color", "stray '+'");
    expect_bad_spec("color+color", "given twice");
    expect_bad_spec("verify", "no global part");
    expect_bad_spec("cnn:", "model path");
    expect_bad_spec("cnn:m.onnx,precision=int4", "fp32, bf16 or int8");
    expect_bad_spec("cnn:m.onnx,prec=int8", "unknown key for cnn (w, precision, mean, flip, zoom)");
    expect_bad_spec("cnn:m.onnx,flip=2", "bad value for 'flip'");
    expect_bad_spec("cnn:m.onnx,zoom=1.01", "0 = off, or 1.05..4");
    expect_bad_spec("cnn:m.onnx,zoom=5", "bad value for 'zoom'");
    expect_bad_spec("vlad:k=1", "bad value for 'k'");
    expect_bad_spec("vlad:k=2,pca=300", "exceeds");
    expect_bad_spec("verify:model=projective+color", "affine or homography");
    expect_bad_spec("color:w", "key=value");
    expect_bad_spec("color:w=1,", "trailing");
    expect_bad_spec("", "empty");
    /* cnn:PATH is passed to the CNN engine, whose failure is reported */
    sl_error e;
    assert_int_not_equal(sl_features_new("cnn:/nonexistent/model.onnx+color", &f, &e), SL_OK);
    assert_null(f);
}

/* ---- pipeline ---------------------------------------------------------------------------- */

#define PIPE_SPEC "color:bins=8x4x4,grid=1+vlad:k=8,pca=8,side=192,kp=300,dense=16+verify:local=120"

static sl_features *trained_pipeline(sl_image **imgs, size_t n) {
    sl_features *f = NULL;
    assert_int_equal(sl_features_new(PIPE_SPEC, &f, NULL), SL_OK);
    if (sl_features_train(f, (const sl_image *const *)imgs, n, 3) != SL_OK) fail_msg("train: %s", sl_features_errmsg(f));
    assert_true(sl_features_ready(f));
    assert_int_equal(sl_features_dim(f), 8 * 4 * 4 + 4 + 8);
    return f;
}

typedef struct thr_arg { const sl_features *f; const sl_image *img; float vec[256]; sl_status st; } thr_arg;
static void *thr_extract(void *a) {
    thr_arg *t = a;
    t->st = sl_features_extract(t->f, t->img, t->vec, NULL, NULL);
    return NULL;
}

/* A whole file in memory (malloc'ed), its size in *len. */
static uint8_t *slurp(const char *path, size_t *len) {
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    *len = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *buf = malloc(*len ? *len : 1);
    assert_int_equal(fread(buf, 1, *len, fp), *len);
    fclose(fp);
    return buf;
}

static void test_pipeline_train_extract_save_load(void **state) {
    (void)state;
    enum { N = 10 };
    sl_image *imgs[N];
    for (int i = 0; i < N; i++) imgs[i] = scene(160, 120, 100 + (uint64_t)i);
    sl_features *f = NULL;
    assert_int_equal(sl_features_new(PIPE_SPEC, &f, NULL), SL_OK);
    float v[256], w[256];
    assert_int_equal(sl_features_extract(f, imgs[0], v, NULL, NULL), SL_E_STATE);
    sl_features_free(f);
    f = trained_pipeline(imgs, N);
    size_t d = sl_features_dim(f);
    sl_local_features *l1 = NULL, *l2 = NULL;
    assert_int_equal(sl_features_extract(f, imgs[0], v, &l1, NULL), SL_OK);
    assert_float_equal(dotf(v, v, d), 1.0f, 1e-4);
    assert_non_null(l1);
    assert_true(sl_local_features_count(l1) > 10 && sl_local_features_count(l1) <= 120);
    /* same image -> same descriptor, also from two threads at once */
    assert_int_equal(sl_features_extract(f, imgs[0], w, &l2, NULL), SL_OK);
    assert_memory_equal(v, w, d * sizeof *v);
    pthread_t th[2];
    thr_arg ta[2] = {{f, imgs[0], {0}, SL_E_INTERNAL}, {f, imgs[0], {0}, SL_E_INTERNAL}};
    for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, thr_extract, &ta[i]);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 2; i++) { assert_int_equal(ta[i].st, SL_OK); assert_memory_equal(ta[i].vec, v, d * sizeof *v); }
    /* training does not depend on the thread count */
    sl_features *f2 = NULL;
    assert_int_equal(sl_features_new(PIPE_SPEC, &f2, NULL), SL_OK);
    assert_int_equal(sl_features_set_threads(f2, 0), SL_E_INVALID);
    assert_int_equal(sl_features_set_threads(f2, 2), SL_OK);
    assert_int_equal(sl_features_train(f2, (const sl_image *const *)imgs, N, 3), SL_OK);
    assert_int_equal(sl_features_extract(f2, imgs[0], w, NULL, NULL), SL_OK);
    assert_memory_equal(v, w, d * sizeof *v);
    sl_features_free(f2);
    /* an image verifies against itself, not against another scene */
    sl_verify_result res;
    assert_int_equal(sl_features_verify(f, l1, l2, &res, NULL), SL_OK);
    assert_true(res.inliers > 10);
    assert_true(sl_features_rerank_score(f, 0.5, &res) > 0.5);
    sl_local_features *l3 = NULL;
    assert_int_equal(sl_features_extract(f, imgs[1], w, &l3, NULL), SL_OK);
    assert_int_equal(sl_features_verify(f, l1, l3, &res, NULL), SL_OK);
    assert_true(res.inliers < 6);
    assert_true(dotf(v, w, d) < 0.99f);
    /* save / load round trip: same spec, same vectors */
    char path[] = "/tmp/sl_test_features_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(sl_features_save(f, path), SL_OK);
    sl_features *g = NULL;
    sl_error e;
    assert_int_equal(sl_features_load(path, &g, &e), SL_OK);
    assert_string_equal(sl_features_spec(g), sl_features_spec(f));
    assert_int_equal(sl_features_dim(g), d);
    assert_int_equal(sl_features_extract(g, imgs[0], w, NULL, NULL), SL_OK);
    assert_memory_equal(v, w, d * sizeof *v);
    /* damaged files: every byte flip is detected and names a section or the header */
    size_t len = 0;
    uint8_t *buf = slurp(path, &len);
    sl_features *h = NULL;
    for (size_t i = 0; i < len; i += 1 + len / 300) {
        buf[i] ^= 0x41;
        sl_status st = sl_features_parse(buf, len, "x", &h, &e);
        if (st != SL_E_CORRUPT && st != SL_E_VERSION) fail_msg("byte %zu: status %d (%s)", i, st, e.message);
        assert_null(h);
        buf[i] ^= 0x41;
    }
    /* the codebook section: named in the message */
    size_t cbk = 0;
    for (size_t i = 0; i + 4 < len; i++) if (!memcmp(buf + i, "CBK ", 4)) { cbk = i; break; }
    assert_true(cbk > 0);
    buf[cbk + 40] ^= 1;
    assert_int_equal(sl_features_parse(buf, len, "x", &h, &e), SL_E_CORRUPT);
    assert_non_null(strstr(e.message, "'CBK '"));
    buf[cbk + 40] ^= 1;
    for (size_t cut = 0; cut < len; cut += 1 + len / 50)
        assert_int_equal(sl_features_parse(buf, cut, "x", &h, &e), SL_E_CORRUPT);
    assert_int_equal(sl_features_parse(buf, len, "x", &h, &e), SL_OK);
    sl_features_free(h);
    assert_int_equal(sl_features_load("/nonexistent/dir/f.bin", &h, &e), SL_E_NOT_FOUND);
    assert_int_not_equal(sl_features_save(f, "/nonexistent/dir/f.bin"), SL_OK);
    assert_non_null(strstr(sl_features_errmsg(f), "/nonexistent/dir/f.bin"));
    free(buf);
    unlink(path);
    sl_local_features_free(l1); sl_local_features_free(l2); sl_local_features_free(l3);
    sl_features_free(g);
    sl_features_free(f);
    for (int i = 0; i < N; i++) sl_image_free(imgs[i]);
}

/* A CNN part at int8 / bf16: training calibrates the network on a seeded sample of the training
 * images (the same on any thread count), the features file keeps the calibration (section
 * 'CNNQ'), and the reloaded pipeline describes images with the same bits. */
static void test_pipeline_cnn_reduced_precision_persists(void **state) {
    (void)state;
    const char *src = getenv("SL_SOURCE_DIR");
    enum { N = 12 };
    sl_image *imgs[N];
    for (int i = 0; i < N; i++) imgs[i] = scene(96, 80, 300 + (uint64_t)i);
    static const char *const precs[] = {"int8", "bf16"};
    for (int pi = 0; pi < 2; pi++) {
        char spec[1400];
        snprintf(spec, sizeof spec, "cnn:%s/tests/models/tiny_mbv2.onnx,precision=%s+color:bins=8x4x4", src ? src : "..",
                 precs[pi]);
        sl_features *f = NULL, *f2 = NULL, *g = NULL;
        sl_error e;
        if (sl_features_new(spec, &f, &e)) fail_msg("%s: %s", spec, e.message);
        assert_non_null(strstr(sl_features_spec(f), precs[pi]));
        assert_true(sl_features_needs_training(f));
        assert_false(sl_features_ready(f));
        assert_int_equal(sl_features_set_threads(f, 1), SL_OK);
        assert_int_equal(sl_features_train(f, (const sl_image *const *)imgs, N, 11), SL_OK);
        assert_true(sl_features_ready(f));
        size_t d = sl_features_dim(f);
        float *v = calloc(d, sizeof(float)), *w = calloc(d, sizeof(float));
        assert_int_equal(sl_features_extract(f, imgs[0], v, NULL, NULL), SL_OK);
        /* the same training on 2 threads */
        assert_int_equal(sl_features_new(spec, &f2, &e), SL_OK);
        assert_int_equal(sl_features_set_threads(f2, 2), SL_OK);
        assert_int_equal(sl_features_train(f2, (const sl_image *const *)imgs, N, 11), SL_OK);
        assert_int_equal(sl_features_extract(f2, imgs[0], w, NULL, NULL), SL_OK);
        assert_memory_equal(v, w, d * sizeof *v);
        /* save, load: the same vector */
        char path[] = "/tmp/sl_test_cnnq_XXXXXX";
        int fd = mkstemp(path);
        close(fd);
        assert_int_equal(sl_features_save(f, path), SL_OK);
        assert_int_equal(sl_features_load(path, &g, &e), SL_OK);
        assert_true(sl_features_ready(g));
        /* the loaded pipeline describes the calibration it was trained with */
        char ca[2048], cb[2048];
        sl_features_calibration_describe(f, ca, sizeof ca);
        sl_features_calibration_describe(g, cb, sizeof cb);
        assert_string_equal(ca, cb);
        assert_true(strncmp(ca, precs[pi], 4) == 0);
        assert_non_null(strstr(ca, "12 images (seed 11)"));
        memset(w, 0, d * sizeof *w);
        assert_int_equal(sl_features_extract(g, imgs[0], w, NULL, NULL), SL_OK);
        assert_memory_equal(v, w, d * sizeof *v);
        /* CNNQ alone keeps version 1; it is read in any version (here as a version 2 file) */
        size_t len = 0;
        uint8_t *buf = slurp(path, &len);
        assert_int_equal(buf[8], 1);
        buf[8] = 2;
        sl_features *h2 = NULL;
        assert_int_equal(sl_features_parse(buf, len, "x", &h2, &e), SL_OK);
        assert_true(sl_features_ready(h2));
        sl_features_free(h2);
        buf[8] = 1;
        /* a damaged calibration section is named */
        size_t q = 0;
        for (size_t i = 0; i + 4 < len; i++) if (!memcmp(buf + i, "CNNQ", 4)) { q = i; break; }
        assert_true(q > 0);
        sl_features *h = NULL;
        buf[q + 30] ^= 4;
        assert_int_equal(sl_features_parse(buf, len, "x", &h, &e), SL_E_CORRUPT);
        assert_non_null(strstr(e.message, "'CNNQ'"));
        free(buf);
        unlink(path);
        free(v);
        free(w);
        sl_features_free(g);
        sl_features_free(f2);
        sl_features_free(f);
    }
    for (int i = 0; i < N; i++) sl_image_free(imgs[i]);
}

/* A CNN part at int8 with mean=1 (and a centred colour part): training calibrates the network
 * first and learns the means of the calibrated embeddings; the file holds CNNQ and MEAN at
 * version 2 (the lowest that allows MEAN), loads back to the same bits, and is refused as a
 * version 1 file (MEAN needs 2) or a version 3 file (3 means CALB). */
static void test_pipeline_cnn_precision_and_mean(void **state) {
    (void)state;
    const char *src = getenv("SL_SOURCE_DIR");
    enum { N = 8 };
    sl_image *imgs[N];
    for (int i = 0; i < N; i++) imgs[i] = scene(96, 80, 500 + (uint64_t)i);
    char spec[1400], plain_spec[1400];
    snprintf(spec, sizeof spec, "cnn:%s/tests/models/tiny_mbv2.onnx,precision=int8,mean=1+color:bins=8x4x4,mean=1",
             src ? src : "..");
    snprintf(plain_spec, sizeof plain_spec, "cnn:%s/tests/models/tiny_mbv2.onnx,precision=int8+color:bins=8x4x4",
             src ? src : "..");
    sl_features *f = NULL, *p = NULL, *g = NULL;
    sl_error e;
    if (sl_features_new(spec, &f, &e)) fail_msg("%s: %s", spec, e.message);
    assert_non_null(strstr(sl_features_spec(f), "precision=int8,mean=1"));
    assert_true(sl_features_needs_training(f));
    assert_false(sl_features_ready(f));
    assert_int_equal(sl_features_train(f, (const sl_image *const *)imgs, N, 5), SL_OK);
    assert_true(sl_features_ready(f));
    char ca[2048], cb[2048];
    sl_features_calibration_describe(f, ca, sizeof ca);
    assert_true(strncmp(ca, "int8", 4) == 0);
    size_t d = sl_features_dim(f);
    float *v = calloc(d, sizeof(float)), *w = calloc(d, sizeof(float));
    assert_true(v && w);
    assert_int_equal(sl_features_extract(f, imgs[0], v, NULL, NULL), SL_OK);
    /* the means are applied: the same calibrated network without mean=1 describes otherwise */
    assert_int_equal(sl_features_new(plain_spec, &p, &e), SL_OK);
    assert_int_equal(sl_features_train(p, (const sl_image *const *)imgs, N, 5), SL_OK);
    assert_int_equal(sl_features_dim(p), d);
    assert_int_equal(sl_features_extract(p, imgs[0], w, NULL, NULL), SL_OK);
    double dot = 0;
    for (size_t i = 0; i < d; i++) dot += (double)v[i] * w[i];
    assert_true(dot < 0.99);
    char path[] = "/tmp/sl_test_cnnq_mean_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    assert_int_equal(sl_features_save(f, path), SL_OK);
    assert_int_equal(sl_features_load(path, &g, &e), SL_OK);
    assert_true(sl_features_ready(g));
    sl_features_calibration_describe(g, cb, sizeof cb);
    assert_string_equal(ca, cb);
    memset(w, 0, d * sizeof *w);
    assert_int_equal(sl_features_extract(g, imgs[0], w, NULL, NULL), SL_OK);
    assert_memory_equal(v, w, d * sizeof *v);
    size_t len = 0;
    uint8_t *buf = slurp(path, &len);
    assert_int_equal(buf[8], 2);
    int has_q = 0, has_m = 0;
    for (size_t i = 0; i + 4 < len; i++) {
        if (!memcmp(buf + i, "CNNQ", 4)) has_q = 1;
        if (!memcmp(buf + i, "MEAN", 4)) has_m = 1;
    }
    assert_true(has_q && has_m);
    sl_features *h = NULL;
    buf[8] = 1;
    assert_int_equal(sl_features_parse(buf, len, "x", &h, &e), SL_E_CORRUPT);
    assert_non_null(strstr(e.message, "'MEAN'"));
    buf[8] = 3;
    assert_int_equal(sl_features_parse(buf, len, "x", &h, &e), SL_E_CORRUPT);
    assert_non_null(strstr(e.message, "'CALB'"));
    buf[8] = 2;
    assert_int_equal(sl_features_parse(buf, len, "x", &h, &e), SL_OK);
    sl_features_free(h);
    free(buf);
    unlink(path);
    free(v);
    free(w);
    sl_features_free(g);
    sl_features_free(p);
    sl_features_free(f);
    for (int i = 0; i < N; i++) sl_image_free(imgs[i]);
}

/* The mirror image of im (rows reversed left to right). */
static sl_image *mirror(const sl_image *im) {
    int w = sl_image_width(im), h = sl_image_height(im), c = sl_image_channels(im);
    sl_image *m = sl_image_new(w, h, c);
    assert_non_null(m);
    for (int y = 0; y < h; y++) {
        const uint8_t *a = sl_image_cpixels(im) + (size_t)y * sl_image_stride(im);
        uint8_t *b = sl_image_pixels(m) + (size_t)y * sl_image_stride(m);
        for (int x = 0; x < w; x++) memcpy(b + (size_t)x * (size_t)c, a + (size_t)(w - 1 - x) * (size_t)c, (size_t)c);
    }
    return m;
}

/* Euclidean distance of a / |a| and b / |b| (random-weight test models embed every image at
 * cosines near 1, so distances tell vectors apart where a cosine threshold would not). */
static double ndist(const float *a, const float *b, size_t d) {
    double aa = 0, bb = 0, s = 0;
    for (size_t i = 0; i < d; i++) { aa += (double)a[i] * a[i]; bb += (double)b[i] * b[i]; }
    for (size_t i = 0; i < d; i++) { double t = a[i] / sqrt(aa) - b[i] / sqrt(bb); s += t * t; }
    return sqrt(s);
}

/* cnn flip=1 (horizontal-flip test-time augmentation): an image and its mirror image get the
 * same CNN vector (96 x 74 -> 48 x 37 -> centre crop 32 at x 8..39: the same crop of either), where
 * the plain embedding tells them apart; the spec keeps the key, the trained means (mean=1) are
 * learned from the flipped embeddings, and a saved file describes the same. */
static void test_pipeline_cnn_flip(void **state) {
    (void)state;
    const char *src = getenv("SL_SOURCE_DIR");
    enum { N = 6 };
    sl_image *imgs[N], *mir[N];
    for (int i = 0; i < N; i++) { imgs[i] = scene(96, 74, 700 + (uint64_t)i); mir[i] = mirror(imgs[i]); }
    char spec[1400], plain_spec[1400];
    snprintf(spec, sizeof spec, "cnn:%s/tests/models/tiny_mbv2.onnx,flip=1,mean=1", src ? src : "..");
    snprintf(plain_spec, sizeof plain_spec, "cnn:%s/tests/models/tiny_mbv2.onnx,mean=1", src ? src : "..");
    sl_features *f = NULL, *p = NULL, *g = NULL;
    sl_error e;
    if (sl_features_new(spec, &f, &e)) fail_msg("%s: %s", spec, e.message);
    assert_non_null(strstr(sl_features_spec(f), ",mean=1,flip=1"));
    assert_int_equal(sl_features_new(plain_spec, &p, &e), SL_OK);
    assert_null(strstr(sl_features_spec(p), ",flip=")); /* (the model path may contain "flip") */
    assert_int_equal(sl_features_train(f, (const sl_image *const *)imgs, N, 3), SL_OK);
    assert_int_equal(sl_features_train(p, (const sl_image *const *)imgs, N, 3), SL_OK);
    size_t d = sl_features_dim(f);
    assert_int_equal(d, sl_features_dim(p));
    float *a = calloc(d, sizeof(float)), *b = calloc(d, sizeof(float));
    float *pa = calloc(d, sizeof(float)), *pb = calloc(d, sizeof(float));
    assert_true(a && b && pa && pb);
    double worst = 0, plain_best = 1e9, closest = 1e9;
    for (int i = 0; i < N; i++) {
        assert_int_equal(sl_features_extract(f, imgs[i], a, NULL, &e), SL_OK);
        assert_int_equal(sl_features_extract(f, mir[i], b, NULL, &e), SL_OK);
        assert_int_equal(sl_features_extract(p, imgs[i], pa, NULL, &e), SL_OK);
        assert_int_equal(sl_features_extract(p, mir[i], pb, NULL, &e), SL_OK);
        double c = ndist(a, b, d), pc = ndist(pa, pb, d), fp = ndist(a, pa, d);
        if (c > worst) worst = c;
        if (pc < plain_best) plain_best = pc;
        if (fp < closest) closest = fp;
    }
    assert_true(worst < 1e-5);      /* mirror-invariant */
    assert_true(plain_best > 1e-3); /* without flip the network sees a different input */
    assert_true(closest > 1e-3);    /* flip=1 is not the plain embedding */
    /* reference from the network itself: e_i = L2(L2(embed(image)) + L2(embed(mirror))), the
     * mean of the e_i learned by training, the vector = L2(e_0 - mean) */
    char mpath[1200];
    snprintf(mpath, sizeof mpath, "%s/tests/models/tiny_mbv2.onnx", src ? src : "..");
    sl_nn *nn = NULL;
    assert_int_equal(sl_nn_load(mpath, &nn, &e), SL_OK);
    assert_int_equal(sl_nn_embed_dim(nn), d);
    float *ref = calloc((size_t)N * d, sizeof(float)), *mu = calloc(d, sizeof(float));
    assert_true(ref && mu);
    for (int i = 0; i < N; i++) {
        float *r = ref + (size_t)i * d;
        assert_int_equal(sl_nn_embed(nn, (const sl_image *const *)&imgs[i], 1, r, &e), SL_OK);
        assert_int_equal(sl_nn_embed(nn, (const sl_image *const *)&mir[i], 1, b, &e), SL_OK);
        double n2 = 0;
        for (size_t k = 0; k < d; k++) { r[k] += b[k]; n2 += (double)r[k] * r[k]; }
        for (size_t k = 0; k < d; k++) { r[k] = (float)(r[k] / sqrt(n2)); mu[k] += r[k] / N; }
    }
    for (size_t k = 0; k < d; k++) b[k] = ref[k] - mu[k];
    assert_int_equal(sl_features_extract(f, imgs[0], a, NULL, &e), SL_OK);
    assert_true(ndist(a, b, d) < 1e-5);
    free(ref);
    free(mu);
    sl_nn_free(nn);
    char path[] = "/tmp/sl_test_cnn_flip_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(sl_features_save(f, path), SL_OK);
    assert_int_equal(sl_features_load(path, &g, &e), SL_OK);
    assert_string_equal(sl_features_spec(g), sl_features_spec(f));
    assert_int_equal(sl_features_extract(f, imgs[1], a, NULL, &e), SL_OK);
    assert_int_equal(sl_features_extract(g, imgs[1], b, NULL, &e), SL_OK);
    assert_memory_equal(a, b, d * sizeof(float));
    unlink(path);
    free(a); free(b); free(pa); free(pb);
    sl_features_free(g);
    sl_features_free(p);
    sl_features_free(f);
    for (int i = 0; i < N; i++) { sl_image_free(imgs[i]); sl_image_free(mir[i]); }
}

/* cnn zoom=z: the CNN vector is the normalized sum of the embeddings of the image preprocessed
 * as the model says (tiny_mbv2: shorter side 37, crop 32) and with its shorter side resized to z
 * times that (sl_nn_preprocess_resized, 74), computed here from the network directly; with flip=1
 * as well, the four views (both mirrored) make it mirror-invariant. */
static void test_pipeline_cnn_zoom(void **state) {
    (void)state;
    const char *src = getenv("SL_SOURCE_DIR");
    char spec[1400], mpath[1200];
    snprintf(mpath, sizeof mpath, "%s/tests/models/tiny_mbv2.onnx", src ? src : "..");
    snprintf(spec, sizeof spec, "cnn:%s,zoom=2", mpath);
    sl_features *f = NULL, *g = NULL;
    sl_nn *nn = NULL;
    sl_error e;
    if (sl_features_new(spec, &f, &e)) fail_msg("%s: %s", spec, e.message);
    assert_non_null(strstr(sl_features_spec(f), ",zoom=2"));
    assert_int_equal(sl_features_new(sl_features_spec(f), &g, &e), SL_OK);
    assert_string_equal(sl_features_spec(g), sl_features_spec(f));
    sl_features_free(g);
    assert_int_equal(sl_nn_load(mpath, &nn, &e), SL_OK);
    assert_int_equal(sl_nn_preproc_get(nn)->resize, 37);
    size_t d = sl_features_dim(f), per = 3 * 32 * 32;
    assert_int_equal(d, sl_nn_embed_dim(nn));
    float *v = calloc(d, sizeof(float)), *r = calloc(2 * d, sizeof(float)), *x = calloc(2 * per, sizeof(float));
    assert_true(v && r && x);
    for (int i = 0; i < 3; i++) {
        sl_image *im = scene(96, 74, 800 + (uint64_t)i);
        const sl_image *one = im;
        assert_int_equal(sl_nn_preprocess(nn, &one, 1, x, &e), SL_OK);
        assert_int_equal(sl_nn_preprocess_resized(nn, &one, 1, 74, x + per, &e), SL_OK);
        assert_true(memcmp(x, x + per, per * sizeof(float)) != 0);
        assert_int_equal(sl_nn_embed_tensor(nn, x, 2, r, &e), SL_OK);
        for (size_t k = 0; k < d; k++) r[k] += r[d + k];
        assert_int_equal(sl_features_extract(f, im, v, NULL, &e), SL_OK);
        assert_true(ndist(v, r, d) < 1e-5);
        assert_true(ndist(v, r + d, d) > 1e-3); /* not the closer view alone */
        /* resize 0 is the model's own preprocessing */
        assert_int_equal(sl_nn_preprocess_resized(nn, &one, 1, 0, x + per, &e), SL_OK);
        assert_memory_equal(x, x + per, per * sizeof(float));
        sl_image_free(im);
    }
    {
        sl_image *im = scene(40, 40, 1);
        const sl_image *one = im;
        assert_int_equal(sl_nn_preprocess_resized(nn, &one, 1, -1, x, &e), SL_E_INVALID);
        assert_non_null(strstr(e.message, "resize -1 out of range"));
        sl_image_free(im);
    }
    free(x);
    sl_features_free(f);
    /* zoom and flip: mirror-invariant */
    snprintf(spec, sizeof spec, "cnn:%s,flip=1,zoom=2", mpath);
    if (sl_features_new(spec, &f, &e)) fail_msg("%s: %s", spec, e.message);
    sl_image *im = scene(96, 74, 900), *mi = mirror(im);
    assert_int_equal(sl_features_extract(f, im, v, NULL, &e), SL_OK);
    assert_int_equal(sl_features_extract(f, mi, r, NULL, &e), SL_OK);
    assert_true(ndist(v, r, d) < 1e-5);
    sl_image_free(im);
    sl_image_free(mi);
    free(v);
    free(r);
    sl_nn_free(nn);
    sl_features_free(f);
}

/* The recommended configuration for a model (init/eval --model): the embedding over both scales
 * and mirrored, centred, colour centred at 0.2, verification; it parses to itself; bad paths and
 * short buffers are refused. */
static void test_model_spec(void **state) {
    (void)state;
    const char *src = getenv("SL_SOURCE_DIR");
    char mpath[1200], spec[2048];
    snprintf(mpath, sizeof mpath, "%s/tests/models/tiny_mbv2.onnx", src ? src : "..");
    assert_int_equal(sl_features_model_spec(mpath, spec, sizeof spec), SL_OK);
    sl_features *f = NULL;
    sl_error e;
    if (sl_features_new(spec, &f, &e)) fail_msg("%s: %s", spec, e.message);
    const char *c = sl_features_spec(f);
    assert_non_null(strstr(c, ",mean=1,flip=1,zoom=1.25+color:w=0.2,"));
    assert_non_null(strstr(c, "lowsat=0.1,mean=1+verify:"));
    assert_null(strstr(c, "vlad"));
    assert_true(sl_features_uses_verify(f));
    assert_true(sl_features_needs_training(f));
    sl_features_free(f);
    assert_int_equal(sl_features_model_spec("a+b.onnx", spec, sizeof spec), SL_E_INVALID);
    assert_int_equal(sl_features_model_spec("a,b.onnx", spec, sizeof spec), SL_E_INVALID);
    assert_int_equal(sl_features_model_spec("", spec, sizeof spec), SL_E_INVALID);
    assert_int_equal(sl_features_model_spec(mpath, spec, 20), SL_E_TOO_LARGE);
}

static void test_verify_survives_rotation_and_scale(void **state) {
    (void)state;
    sl_image *a = scene(200, 160, 7), *b = NULL, *c = NULL;
    assert_int_equal(sl_image_rotate(a, 20.0f, 0x808080, &b, NULL), SL_OK);
    assert_int_equal(sl_image_scale(b, 0.8f, &c, NULL), SL_OK);
    sl_features *f = NULL;
    assert_int_equal(sl_features_new("color:grid=1+verify", &f, NULL), SL_OK);
    float v[512];
    sl_local_features *la = NULL, *lc = NULL;
    assert_int_equal(sl_features_extract(f, a, v, &la, NULL), SL_OK);
    assert_int_equal(sl_features_extract(f, c, v, &lc, NULL), SL_OK);
    sl_verify_result r;
    assert_int_equal(sl_features_verify(f, la, lc, &r, NULL), SL_OK);
    assert_true(r.inliers >= 15);
    /* both images are brought to the same longest side, so the model is a rotation by ~20
     * degrees (either sense, depending on the y axis convention) with scale ~1 */
    double sc = sqrt(fabs(r.H[0] * r.H[4] - r.H[1] * r.H[3]));
    assert_float_equal(sc, 1.0, 0.1);
    assert_float_equal(fabs(atan2(r.H[3], r.H[0])) * 180.0 / M_PI, 20.0, 3.0);
    sl_local_features_free(la); sl_local_features_free(lc);
    sl_features_free(f);
    sl_image_free(a); sl_image_free(b); sl_image_free(c);
}

/* color:mean=1: training learns the mean histogram (section MEAN), extraction subtracts it, the
 * file round-trips, and a damaged or missing MEAN section is refused by name. */
static void test_mean_part_train_save_load(void **state) {
    (void)state;
    sl_features *f = NULL;
    sl_error e;
    assert_int_equal(sl_features_new("color:mean=1", &f, &e), SL_OK);
    assert_non_null(strstr(sl_features_spec(f), ",mean=1"));
    assert_true(sl_features_needs_training(f));
    assert_false(sl_features_ready(f));
    sl_image *imgs[4];
    for (int i = 0; i < 4; i++) {
        imgs[i] = sl_image_new(32, 24, 3);
        assert_non_null(imgs[i]);
        uint8_t *px = sl_image_pixels(imgs[i]);
        for (size_t k = 0; k < 32 * 24 * 3; k++) px[k] = (uint8_t)((k * (size_t)(7 + 13 * i)) & 0xff);
    }
    assert_int_equal(sl_features_train(f, (const sl_image *const *)imgs, 4, 1), SL_OK);
    assert_true(sl_features_ready(f));
    size_t d = sl_features_dim(f);
    float *a = malloc(d * sizeof(float)), *b = malloc(d * sizeof(float)), *plain = malloc(d * sizeof(float));
    assert_true(a && b && plain);
    assert_int_equal(sl_features_extract(f, imgs[0], a, NULL, &e), SL_OK);
    sl_features *g = NULL;
    assert_int_equal(sl_features_new("color", &g, &e), SL_OK);
    assert_int_equal(sl_features_extract(g, imgs[0], plain, NULL, &e), SL_OK);
    sl_features_free(g);
    /* centred: the four training images' vectors sum to ~0 before renormalization, and differ
     * from the plain histogram */
    assert_true(memcmp(a, plain, d * sizeof(float)) != 0);
    double dot = 0;
    for (size_t i = 0; i < d; i++) dot += (double)a[i] * plain[i];
    assert_true(dot < 0.99);
    char path[] = "/tmp/test_feature_mean_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(sl_features_save(f, path), SL_OK);
    assert_int_equal(sl_features_load(path, &g, &e), SL_OK);
    assert_int_equal(sl_features_extract(g, imgs[0], b, NULL, &e), SL_OK);
    assert_memory_equal(a, b, d * sizeof(float));
    sl_features_free(g);
    /* damage: a byte of the MEAN payload (CRC catches it), then a file without MEAN */
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)len);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)len, fp), (size_t)len);
    fclose(fp);
    uint8_t *m = NULL;
    for (long i = 0; i + 4 <= len; i++)
        if (memcmp(buf + i, "MEAN", 4) == 0) m = buf + i;
    assert_non_null(m);
    m[12 + 8] ^= 1;
    assert_int_equal(sl_features_parse(buf, (size_t)len, "x", &g, &e), SL_E_CORRUPT);
    assert_non_null(strstr(e.message, "MEAN"));
    m[12 + 8] ^= 1;
    memcpy(m, "HEAX", 4);
    assert_int_equal(sl_features_parse(buf, (size_t)len, "x", &g, &e), SL_E_CORRUPT);
    free(buf);
    unlink(path);
    assert_int_equal(sl_features_new("cnn:x.onnx,mean=2", &g, &e), SL_E_INVALID);
    free(a);
    free(b);
    free(plain);
    for (int i = 0; i < 4; i++) sl_image_free(imgs[i]);
    sl_features_free(f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kmeans_nearest_bits),
        cmocka_unit_test(test_pca_project_bits),
        cmocka_unit_test(test_kmeans_separable_lloyd_and_minibatch),
        cmocka_unit_test(test_vlad_hand_computed),
        cmocka_unit_test(test_pca_covariance_path_hand_computed),
        cmocka_unit_test(test_pca_gram_path_matches_hand_computed),
        cmocka_unit_test(test_ransac_recovers_homography_with_outliers),
        cmocka_unit_test(test_ransac_recovers_affine_with_outliers),
        cmocka_unit_test(test_ransac_too_few_points),
        cmocka_unit_test(test_ransac_skip_repeats_same_result),
        cmocka_unit_test(test_local_features_roundtrip_and_damage),
        cmocka_unit_test(test_match_and_verify_known_transform),
        cmocka_unit_test(test_match_simd_equals_scalar),
        cmocka_unit_test(test_crc32_check_value_and_reference),
        cmocka_unit_test(test_color_histogram_properties),
        cmocka_unit_test(test_color_hist_bit_identical),
        cmocka_unit_test(test_rootsift_hand_computed),
        cmocka_unit_test(test_spec_parsing),
        cmocka_unit_test(test_pipeline_train_extract_save_load),
        cmocka_unit_test(test_pipeline_cnn_reduced_precision_persists),
        cmocka_unit_test(test_pipeline_cnn_precision_and_mean),
        cmocka_unit_test(test_pipeline_cnn_flip),
        cmocka_unit_test(test_pipeline_cnn_zoom),
        cmocka_unit_test(test_model_spec),
        cmocka_unit_test(test_mean_part_train_save_load),
        cmocka_unit_test(test_verify_survives_rotation_and_scale),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
