/*
 * tests/test_feature.c - the feature building blocks and pipeline: k-means, VLAD, PCA-whitening,
 * RANSAC, compact local features (serialization, matching), colour histograms, RootSIFT, the
 * specification grammar, save/load and determinism. Inputs are generated; no data files.
 */
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "shoplens/feature.h"
#include "feature/features_internal.h"
#include "feature/pca_internal.h"
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kmeans_separable_lloyd_and_minibatch),
        cmocka_unit_test(test_vlad_hand_computed),
        cmocka_unit_test(test_pca_covariance_path_hand_computed),
        cmocka_unit_test(test_pca_gram_path_matches_hand_computed),
        cmocka_unit_test(test_ransac_recovers_homography_with_outliers),
        cmocka_unit_test(test_ransac_recovers_affine_with_outliers),
        cmocka_unit_test(test_ransac_too_few_points),
        cmocka_unit_test(test_local_features_roundtrip_and_damage),
        cmocka_unit_test(test_match_and_verify_known_transform),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
