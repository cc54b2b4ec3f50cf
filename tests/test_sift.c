/*
 * tests/test_sift.c - SIFT / dense SIFT / RootSIFT (src/feature/sift/).
 *
 * Inputs are generated analytically (sums of Gaussian blobs), so a rotated or scaled view is the
 * same function evaluated at transformed coordinates, with no resampling error: what differs
 * between views is only what SIFT itself must be invariant to.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "shoplens/feature.h"
#include "shoplens/image.h"
#include "feature/sift/sift_internal.h"
#include "util/util.h"

#define PI 3.14159265358979

typedef struct blob { double x, y, s, a; } blob;

/* Random texture: n blobs of sigma 2.5..9 and amplitude +-0.3 over a 0.5 background. */
static blob *make_blobs(int n, double extent, uint64_t seed) {
    sl__rng r;
    sl__rng_seed(&r, seed);
    blob *b = malloc(sizeof *b * (size_t)n);
    assert_non_null(b);
    for (int i = 0; i < n; i++) {
        b[i].x = sl__rng_uniform(&r) * extent;
        b[i].y = sl__rng_uniform(&r) * extent;
        b[i].s = 2.5 + 6.5 * sl__rng_uniform(&r);
        b[i].a = (sl__rng_uniform(&r) - 0.5) * 0.6;
    }
    return b;
}

/* Renders the texture seen through p_tex = M (p_img - t) where p_img is a pixel centre of a
 * w x h image: M = R(-angle) / scale, i.e. the image shows the texture rotated by `angle`
 * about (cx, cy) and scaled by `scale`. */
static float *render(const blob *b, int nb, int w, int h, double angle, double scale, double cx,
                     double cy, double tcx, double tcy) {
    float *g = malloc(sizeof(float) * (size_t)w * (size_t)h);
    assert_non_null(g);
    double ca = cos(angle), sa = sin(angle);
    for (int i = 0; i < w * h; i++) g[i] = 0.5f;
    for (int k = 0; k < nb; k++) {
        /* blob centre in image coordinates */
        double dx = b[k].x - tcx, dy = b[k].y - tcy;
        double ix = cx + scale * (ca * dx - sa * dy), iy = cy + scale * (sa * dx + ca * dy);
        double s = b[k].s * scale, rad = 4.0 * s;
        int x0 = (int)floor(ix - rad), x1 = (int)ceil(ix + rad);
        int y0 = (int)floor(iy - rad), y1 = (int)ceil(iy + rad);
        if (x0 < 0) x0 = 0;
        if (y0 < 0) y0 = 0;
        if (x1 > w - 1) x1 = w - 1;
        if (y1 > h - 1) y1 = h - 1;
        for (int y = y0; y <= y1; y++)
            for (int x = x0; x <= x1; x++) {
                double ex = x - ix, ey = y - iy;
                g[(size_t)y * (size_t)w + (size_t)x] +=
                    (float)(b[k].a * exp(-(ex * ex + ey * ey) / (2.0 * s * s)));
            }
    }
    return g;
}

/* A w x h view of nb random blobs spread over extent x extent, rotated by angle about the
 * texture centre, which sits at the image centre. */
static float *texture(int w, int h, int nb, double extent, uint64_t seed, double angle) {
    blob *b = make_blobs(nb, extent, seed);
    float *g = render(b, nb, w, h, angle, 1.0, w / 2.0, h / 2.0, extent / 2, extent / 2);
    free(b);
    return g;
}

static float gaussian_value(double x, double y, double cx, double cy, double s) {
    return (float)exp(-((x - cx) * (x - cx) + (y - cy) * (y - cy)) / (2.0 * s * s));
}

/* Two isolated bright blobs of sigma 5 and 10: one keypoint location each, at the blob centre,
 * with scale sigma_blob / sqrt(k) (the DoG response of a Gaussian of sigma s0 peaks there). */
static void test_blobs_position_scale(void **state) {
    (void)state;
    int w = 200, h = 160;
    float *g = malloc(sizeof(float) * (size_t)w * (size_t)h);
    assert_non_null(g);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            g[y * w + x] = 0.1f + 0.7f * gaussian_value(x, y, 60.3, 70.6, 5.0) +
                           0.6f * gaussian_value(x, y, 140.0, 90.0, 10.0);
    sl_sift_params p;
    sl_sift_params_init(&p);
    sl_keypoint *k = NULL;
    float *d = NULL;
    size_t n = 0;
    assert_int_equal(sl_sift_extract_grey(g, w, h, (size_t)w, &p, &k, &d, &n, NULL), SL_OK);
    assert_true(n >= 2);
    const double cx[2] = { 60.3, 140.0 }, cy[2] = { 70.6, 90.0 }, cs[2] = { 5.0, 10.0 };
    const double expect_ratio = 1.0 / sqrt(pow(2.0, 1.0 / 3.0));
    for (int b = 0; b < 2; b++) {
        int found = 0;
        for (size_t i = 0; i < n; i++) {
            double dx = k[i].x - cx[b], dy = k[i].y - cy[b];
            if (dx * dx + dy * dy < 0.3 * 0.3) {
                double ratio = k[i].scale / cs[b];
                assert_true(fabs(ratio / expect_ratio - 1.0) < 0.06);
                found++;
            }
        }
        assert_true(found >= 1);
    }
    /* every keypoint is on one of the blobs (nothing on the flat background) */
    for (size_t i = 0; i < n; i++) {
        double d0 = hypot(k[i].x - cx[0], k[i].y - cy[0]), d1 = hypot(k[i].x - cx[1], k[i].y - cy[1]);
        assert_true(d0 < 3.0 || d1 < 6.0);
        assert_true(k[i].angle >= 0.0f && k[i].angle < 2 * PI);
    }
    /* descriptors are unit vectors with non-negative entries */
    for (size_t i = 0; i < n; i++) {
        double s = 0;
        for (int j = 0; j < SL_SIFT_DESC_DIM; j++) {
            assert_true(d[i * SL_SIFT_DESC_DIM + j] >= 0.0f);
            s += d[i * SL_SIFT_DESC_DIM + j] * d[i * SL_SIFT_DESC_DIM + j];
        }
        assert_true(fabs(s - 1.0) < 1e-4);
    }
    free(k);
    free(d);
    /* with upsampling, the same blob is found at the same place and scale (octave -1 exists) */
    p.upsample = 1;
    assert_int_equal(sl_sift_extract_grey(g, w, h, (size_t)w, &p, &k, &d, &n, NULL), SL_OK);
    int found = 0;
    for (size_t i = 0; i < n; i++)
        if (hypot(k[i].x - cx[0], k[i].y - cy[0]) < 0.3 &&
            fabs(k[i].scale / cs[0] / expect_ratio - 1.0) < 0.06)
            found++;
    assert_true(found >= 1);
    free(k);
    free(d);
    free(g);
}

typedef struct view {
    sl_keypoint *k;
    float *d;
    size_t n;
} view;

static view extract(const float *g, int w, int h, const sl_sift_params *p) {
    view v;
    assert_int_equal(sl_sift_extract_grey(g, w, h, (size_t)w, p, &v.k, &v.d, &v.n, NULL), SL_OK);
    return v;
}

static double cosine(const float *a, const float *b) {
    double s = 0;
    for (int j = 0; j < SL_SIFT_DESC_DIM; j++) s += (double)a[j] * b[j];
    return s;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* For keypoints of A well inside both views, finds the keypoint of B at the predicted place,
 * scale and angle; returns how many were found and their median descriptor cosine. */
static void compare_views(const view *a, const view *b, int w, int h, double angle, double scale,
                          double *repeat, double *median_cos, int *found) {
    double ca = cos(angle), sa = sin(angle), cx = w / 2.0, cy = h / 2.0;
    double *cs = malloc(sizeof(double) * (a->n + 1));
    assert_non_null(cs);
    int considered = 0, nf = 0;
    for (size_t i = 0; i < a->n; i++) {
        double dx = a->k[i].x - cx, dy = a->k[i].y - cy;
        double px = cx + scale * (ca * dx - sa * dy), py = cy + scale * (sa * dx + ca * dy);
        double margin = 12.0 + 4.0 * a->k[i].scale;
        if (hypot(dx, dy) > w / 2.0 - margin || px < margin || py < margin || px > w - margin ||
            py > h - margin)
            continue;
        considered++;
        double best = -1.0;
        for (size_t j = 0; j < b->n; j++) {
            double e = hypot(b->k[j].x - px, b->k[j].y - py);
            double sr = b->k[j].scale / (scale * a->k[i].scale);
            double da = fmod(b->k[j].angle - a->k[i].angle - angle + 6 * PI, 2 * PI);
            if (da > PI) da = 2 * PI - da;
            if (e < 1.5 * scale && sr > 0.85 && sr < 1.18 && da < 15.0 * PI / 180.0) {
                double c = cosine(a->d + i * SL_SIFT_DESC_DIM, b->d + j * SL_SIFT_DESC_DIM);
                if (c > best) best = c;
            }
        }
        if (best >= 0) cs[nf++] = best;
    }
    assert_true(considered > 0);
    qsort(cs, (size_t)nf, sizeof(double), cmp_double);
    *repeat = (double)nf / considered;
    *median_cos = nf ? cs[nf / 2] : 0.0;
    *found = nf;
    free(cs);
}

/* Renders texture seed_a plainly and texture seed_b rotated/scaled, then compares the views. */
static void compare_textures(uint64_t seed_a, uint64_t seed_b, double angle, double scale,
                             double *rep, double *med, int *found) {
    int w = 240, h = 240, nb = 260;
    blob *b1 = make_blobs(nb, 300.0, seed_a), *b2 = make_blobs(nb, 300.0, seed_b);
    float *ga = render(b1, nb, w, h, 0.0, 1.0, w / 2.0, h / 2.0, 150.0, 150.0);
    float *gb = render(b2, nb, w, h, angle, scale, w / 2.0, h / 2.0, 150.0, 150.0);
    sl_sift_params p;
    sl_sift_params_init(&p);
    view va = extract(ga, w, h, &p), vb = extract(gb, w, h, &p);
    compare_views(&va, &vb, w, h, angle, scale, rep, med, found);
    free(va.k);
    free(va.d);
    free(vb.k);
    free(vb.d);
    free(ga);
    free(gb);
    free(b1);
    free(b2);
}

static void check_invariance(double angle, double scale) {
    double rep, med;
    int found;
    compare_textures(42, 42, angle, scale, &rep, &med, &found);
    assert_true(found >= 15);
    assert_true(rep >= 0.5);
    assert_true(med >= 0.9);
}

static void test_rotation_invariance(void **state) {
    (void)state;
    check_invariance(30.0 * PI / 180.0, 1.0);
    check_invariance(-100.0 * PI / 180.0, 1.0);
}

static void test_scale_invariance(void **state) {
    (void)state;
    check_invariance(0.0, 0.7);
    check_invariance(20.0 * PI / 180.0, 1.4);
}

/* An unrelated texture gives few geometric matches: the invariance test can fail. */
static void test_unrelated_views_differ(void **state) {
    (void)state;
    double rep, med;
    int found;
    compare_textures(42, 7, 0.0, 1.0, &rep, &med, &found);
    assert_true(rep < 0.3);
}

static void test_deterministic_and_threads(void **state) {
    (void)state;
    int w = 256, h = 200, nb = 300;
    float *g = texture(w, h, nb, 300.0, 3, 0.3);
    sl_sift_params p;
    sl_sift_params_init(&p);
    view v1 = extract(g, w, h, &p), v2 = extract(g, w, h, &p);
    p.threads = 2;
    view v3 = extract(g, w, h, &p);
    assert_true(v1.n > 50);
    assert_int_equal(v1.n, v2.n);
    assert_int_equal(v1.n, v3.n);
    assert_memory_equal(v1.k, v2.k, v1.n * sizeof(sl_keypoint));
    assert_memory_equal(v1.d, v2.d, v1.n * SL_SIFT_DESC_DIM * sizeof(float));
    assert_memory_equal(v1.k, v3.k, v1.n * sizeof(sl_keypoint));
    assert_memory_equal(v1.d, v3.d, v1.n * SL_SIFT_DESC_DIM * sizeof(float));
    /* sorted by response, strongest first */
    for (size_t i = 1; i < v1.n; i++) assert_true(v1.k[i - 1].response >= v1.k[i].response);

    /* the cap keeps exactly the strongest prefix */
    sl_sift_params_init(&p);
    p.max_keypoints = 40;
    view v4 = extract(g, w, h, &p);
    assert_int_equal(v4.n, 40);
    assert_memory_equal(v4.k, v1.k, 40 * sizeof(sl_keypoint));
    assert_memory_equal(v4.d, v1.d, 40 * SL_SIFT_DESC_DIM * sizeof(float));

    /* upright: angle 0 everywhere, never more keypoints than locations */
    sl_sift_params_init(&p);
    p.upright = 1;
    view v5 = extract(g, w, h, &p);
    assert_true(v5.n > 0 && v5.n <= v1.n);
    for (size_t i = 0; i < v5.n; i++) assert_true(v5.k[i].angle == 0.0f);

    view *vs[] = { &v1, &v2, &v3, &v4, &v5 };
    for (int i = 0; i < 5; i++) {
        free(vs[i]->k);
        free(vs[i]->d);
    }
    free(g);
}

static void test_rootsift_hand_computed(void **state) {
    (void)state;
    float v[8] = { 1.0f, 3.0f, 0.0f, 0.0f, /* second vector */ 0.0f, 0.0f, 0.0f, 0.0f };
    sl_rootsift(v, 2, 4);
    /* L1 = 4 -> (0.25, 0.75) -> sqrt */
    assert_float_equal(v[0], 0.5f, 1e-6);
    assert_float_equal(v[1], sqrtf(0.75f), 1e-6);
    assert_float_equal(v[2], 0.0f, 0.0);
    assert_float_equal(v[3], 0.0f, 0.0);
    /* an all-zero descriptor stays zero (no division by zero) */
    for (int i = 4; i < 8; i++) assert_float_equal(v[i], 0.0f, 0.0);
    float u[3] = { 2.0f, 2.0f, 4.0f };
    sl_rootsift(u, 1, 3);
    assert_float_equal(u[0], 0.5f, 1e-6);
    assert_float_equal(u[1], 0.5f, 1e-6);
    assert_float_equal(u[2], sqrtf(0.5f), 1e-6);
    /* RootSIFT of a SIFT descriptor has unit L2 norm */
    double s = 0;
    for (int i = 0; i < 3; i++) s += u[i] * u[i];
    assert_float_equal(s, 1.0, 1e-6);
    sl_rootsift(NULL, 3, 3); /* no-op */
    /* descriptors done four at a time give the bits of one-at-a-time calls (each L1 norm summed
     * in the same order), zero and negative descriptors included */
    enum { N = 11, D = 128 };
    static float a[N * D], b[N * D];
    uint32_t x = 12345;
    for (int i = 0; i < N * D; i++) {
        x = x * 1664525u + 1013904223u;
        a[i] = (float)(x >> 8) / 16777216.0f * ((x & 1) ? -0.3f : 0.7f);
    }
    memset(a + 5 * D, 0, D * sizeof *a);
    memcpy(b, a, sizeof a);
    sl_rootsift(a, N, D);
    for (int i = 0; i < N; i++) sl_rootsift(b + i * D, 1, D);
    assert_memory_equal(a, b, sizeof a);
}

static void test_dense_grid(void **state) {
    (void)state;
    int w = 100, h = 70, nb = 80;
    float *g = texture(w, h, nb, 120.0, 9, 0.0);
    sl_keypoint *k = NULL;
    float *d = NULL;
    size_t n = 0;
    assert_int_equal(sl_sift_dense_grey(g, w, h, (size_t)w, 10, 2.0f, &k, &d, &n, NULL), SL_OK);
    assert_int_equal(n, 10 * 7);
    assert_float_equal(k[0].x, 5.0f, 0.0);
    assert_float_equal(k[0].y, 5.0f, 0.0);
    assert_float_equal(k[11].x, 15.0f, 0.0);
    assert_float_equal(k[11].y, 15.0f, 0.0);
    for (size_t i = 0; i < n; i++) {
        assert_float_equal(k[i].angle, 0.0f, 0.0);
        assert_float_equal(k[i].scale, 2.0f, 0.0);
        double s = 0;
        for (int j = 0; j < SL_SIFT_DESC_DIM; j++) s += d[i * 128 + j] * d[i * 128 + j];
        assert_true(fabs(s - 1.0) < 1e-4 || s == 0.0);
    }
    free(k);
    free(d);
    /* a large size uses a subsampled image but reports input coordinates */
    assert_int_equal(sl_sift_dense_grey(g, w, h, (size_t)w, 20, 8.0f, &k, &d, &n, NULL), SL_OK);
    assert_int_equal(n, 5 * 3);
    assert_float_equal(k[n - 1].x, 90.0f, 0.0);
    assert_float_equal(k[n - 1].y, 50.0f, 0.0);
    assert_int_equal(k[0].octave, 2); /* 8 / 2^2 = 2 >= 1.6: two halvings */
    free(k);
    free(d);
    free(g);
    /* a strip too thin to halve with the largest size: windows are clipped to the image */
    int sw = 600, sh = 16;
    float *strip = calloc((size_t)sw * (size_t)sh, sizeof(float));
    assert_non_null(strip);
    for (int i = 0; i < sw * sh; i++) strip[i] = (float)((i * 7919) % 101) / 101.0f;
    assert_int_equal(sl_sift_dense_grey(strip, sw, sh, (size_t)sw, 20, SL_SIFT_DENSE_SIZE_MAX,
                                        &k, &d, &n, NULL), SL_OK);
    assert_int_equal(n, 30); /* x = 10, 30, ..., 590 on the one row y = 10 */
    free(k);
    free(d);
    free(strip);
}

static void test_bad_arguments(void **state) {
    (void)state;
    float g[64 * 64];
    for (int i = 0; i < 64 * 64; i++) g[i] = (float)(i % 7) / 7.0f;
    sl_keypoint *k = (sl_keypoint *)1;
    float *d = (float *)1;
    size_t n = 99;
    sl_error e;
    sl_sift_params p;
    sl_sift_params_init(&p);
    assert_int_equal(sl_sift_extract_grey(NULL, 64, 64, 64, &p, &k, &d, &n, &e), SL_E_INVALID);
    assert_null(k);
    assert_null(d);
    assert_int_equal(n, 0);
    assert_int_equal(sl_sift_extract_grey(g, 0, 64, 64, &p, &k, &d, &n, &e), SL_E_INVALID);
    assert_int_equal(sl_sift_extract_grey(g, 64, -1, 64, &p, &k, &d, &n, &e), SL_E_INVALID);
    assert_int_equal(sl_sift_extract_grey(g, 64, 64, 32, &p, &k, &d, &n, &e), SL_E_INVALID);
    assert_non_null(strstr(e.message, "stride"));
    assert_int_equal(sl_sift_extract_grey(g, 64, 64, 64, &p, NULL, &d, &n, &e), SL_E_INVALID);
    struct { int field; float value; } bad[] = {
        { 0, 0.0f }, { 0, 9.0f }, { 1, NAN }, { 1, 0.1f }, { 2, -0.01f }, { 3, 0.5f },
        { 4, 99.0f }, { 5, -1.0f }, { 6, -1.0f }, { 7, 2.0f },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sl_sift_params_init(&p);
        switch (bad[i].field) {
        case 0: p.levels = (int)bad[i].value; break;
        case 1: p.sigma = bad[i].value; break;
        case 2: p.contrast_threshold = bad[i].value; break;
        case 3: p.edge_threshold = bad[i].value; break;
        case 4: p.threads = (int)bad[i].value; break;
        case 5: p.max_keypoints = (int)bad[i].value; break;
        case 6: p.octaves = (int)bad[i].value; break;
        case 7: p.input_sigma = bad[i].value; break;
        }
        e.code = SL_OK;
        assert_int_equal(sl_sift_extract_grey(g, 64, 64, 64, &p, &k, &d, &n, &e), SL_E_INVALID);
        assert_int_equal(e.code, SL_E_INVALID);
        assert_non_null(strstr(e.message, "sift"));
    }
    assert_int_equal(sl_sift_dense_grey(g, 64, 64, 64, 0, 2.0f, &k, &d, &n, &e), SL_E_INVALID);
    assert_int_equal(sl_sift_dense_grey(g, 64, 64, 64, 4, 0.0f, &k, &d, &n, &e), SL_E_INVALID);
    assert_int_equal(sl_sift_dense_grey(g, 64, 64, 64, 4, NAN, &k, &d, &n, &e), SL_E_INVALID);
    /* a tiny or flat image is not an error: no keypoints, NULL arrays */
    assert_int_equal(sl_sift_extract_grey(g, 5, 5, 64, NULL, &k, &d, &n, &e), SL_OK);
    assert_int_equal(n, 0);
    assert_null(k);
    assert_null(d);
    float flat[64 * 64];
    for (int i = 0; i < 64 * 64; i++) flat[i] = 0.5f;
    assert_int_equal(sl_sift_extract_grey(flat, 64, 64, 64, NULL, &k, &d, &n, &e), SL_OK);
    assert_int_equal(n, 0);
}

/* Noise (the most keypoints per pixel) at awkward sizes and parameters: every descriptor is a
 * finite unit vector, every keypoint lies inside the image. Under ASan this also guards the
 * histogram and window index arithmetic. */
static void test_noise_images(void **state) {
    (void)state;
    const int sizes[][2] = { { 17, 300 }, { 300, 17 }, { 64, 64 }, { 97, 131 }, { 8, 8 } };
    sl__rng r;
    sl__rng_seed(&r, 11);
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        int w = sizes[si][0], h = sizes[si][1];
        float *g = malloc(sizeof(float) * (size_t)w * (size_t)h);
        assert_non_null(g);
        for (int i = 0; i < w * h; i++) g[i] = (float)sl__rng_uniform(&r);
        for (int variant = 0; variant < 4; variant++) {
            sl_sift_params p;
            sl_sift_params_init(&p);
            p.upsample = variant & 1;
            p.upright = variant == 2;
            p.threads = variant == 3 ? 2 : 1;
            p.levels = variant == 2 ? 5 : 3;
            p.sigma = variant == 3 ? 2.5f : 1.6f;
            p.contrast_threshold = 0.01f;
            view v = extract(g, w, h, &p);
            for (size_t i = 0; i < v.n; i++) {
                assert_true(v.k[i].x >= -0.5f && v.k[i].x <= w - 0.5f);
                assert_true(v.k[i].y >= -0.5f && v.k[i].y <= h - 0.5f);
                assert_true(v.k[i].scale > 0.0f);
                double ss = 0;
                for (int j = 0; j < SL_SIFT_DESC_DIM; j++) {
                    float x = v.d[i * SL_SIFT_DESC_DIM + j];
                    assert_true(isfinite(x) && x >= 0.0f);
                    ss += (double)x * x;
                }
                assert_true(fabs(ss - 1.0) < 1e-4 || ss == 0.0);
            }
            free(v.k);
            free(v.d);
        }
        /* dense on the same noise, with a size that halves the image */
        sl_keypoint *k;
        float *d;
        size_t n;
        assert_int_equal(sl_sift_dense_grey(g, w, h, (size_t)w, 5, 4.0f, &k, &d, &n, NULL), SL_OK);
        for (size_t i = 0; i < n * SL_SIFT_DESC_DIM; i++) assert_true(isfinite(d[i]));
        free(k);
        free(d);
        free(g);
    }
}

/* sl_sift_extract / sl_sift_dense on an sl_image: a grey image gives exactly what the float
 * API gives on pixel / 255; an RGB image with equal channels gives the same keypoints. */
static void test_image_front_end(void **state) {
    (void)state;
    int w = 160, h = 120, nb = 120;
    float *g = texture(w, h, nb, 200.0, 5, 0.2);
    uint8_t *grey = malloc((size_t)w * (size_t)h), *rgb = malloc((size_t)w * (size_t)h * 3);
    assert_non_null(grey);
    assert_non_null(rgb);
    for (int i = 0; i < w * h; i++) {
        float v = g[i] < 0 ? 0 : g[i] > 1 ? 1 : g[i];
        grey[i] = (uint8_t)lroundf(v * 255.0f);
        rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = grey[i];
        g[i] = (float)grey[i] * (1.0f / 255.0f);
    }
    sl_image *ig = sl_image_from_pixels(w, h, 1, grey, (size_t)w);
    sl_image *ic = sl_image_from_pixels(w, h, 3, rgb, (size_t)w * 3);
    assert_non_null(ig);
    assert_non_null(ic);
    view vf = extract(g, w, h, NULL), vg, vc;
    assert_true(vf.n > 20);
    assert_int_equal(sl_sift_extract(ig, NULL, &vg.k, &vg.d, &vg.n, NULL), SL_OK);
    assert_int_equal(vg.n, vf.n);
    assert_memory_equal(vg.k, vf.k, vf.n * sizeof(sl_keypoint));
    assert_memory_equal(vg.d, vf.d, vf.n * SL_SIFT_DESC_DIM * sizeof(float));
    assert_int_equal(sl_sift_extract(ic, NULL, &vc.k, &vc.d, &vc.n, NULL), SL_OK);
    assert_true(vc.n + vc.n / 20 >= vf.n && vf.n + vf.n / 20 >= vc.n);
    for (int i = 0; i < 10; i++)
        assert_true(hypotf(vc.k[i].x - vf.k[i].x, vc.k[i].y - vf.k[i].y) < 0.05f);
    sl_keypoint *k;
    float *d;
    size_t n;
    assert_int_equal(sl_sift_dense(ic, 16, 3.0f, &k, &d, &n, NULL), SL_OK);
    assert_int_equal(n, 10 * 7);
    free(k);
    free(d);
    sl_error e;
    assert_int_equal(sl_sift_extract(NULL, NULL, &k, &d, &n, &e), SL_E_INVALID);
    assert_int_equal(sl_sift_dense(NULL, 4, 2.0f, &k, &d, &n, &e), SL_E_INVALID);
    assert_int_equal(sl_sift_dense(ig, 0, 2.0f, &k, &d, &n, &e), SL_E_INVALID);
    assert_null(k);
    view *vs[] = { &vf, &vg, &vc };
    for (int i = 0; i < 3; i++) {
        free(vs[i]->k);
        free(vs[i]->d);
    }
    sl_image_free(ig);
    sl_image_free(ic);
    free(grey);
    free(rgb);
    free(g);
}

typedef struct conc_arg {
    const float *g;
    int w, h, upsample;
    view v;
} conc_arg;

static void *conc_main(void *p) {
    conc_arg *a = p;
    sl_sift_params prm;
    sl_sift_params_init(&prm);
    prm.upsample = a->upsample;
    a->v.k = NULL;
    if (sl_sift_extract_grey(a->g, a->w, a->h, (size_t)a->w, &prm, &a->v.k, &a->v.d, &a->v.n,
                             NULL) != SL_OK)
        a->v.n = (size_t)-1;
    return NULL;
}

/* Calls on several threads at once (sharing the block cache) give the results of one call
 * alone, before and after the cache is released. */
static void test_concurrent_calls_and_cache(void **state) {
    (void)state;
    int w = 200, h = 150, nb = 150;
    float *g = texture(w, h, nb, 220.0, 21, 0.1);
    sl_sift_params p;
    sl_sift_params_init(&p);
    view ref0 = extract(g, w, h, &p);
    p.upsample = 1;
    view ref1 = extract(g, w, h, &p);
    for (int round = 0; round < 2; round++) {
        conc_arg a[4];
        pthread_t th[4];
        for (int i = 0; i < 4; i++) {
            a[i].g = g;
            a[i].w = w;
            a[i].h = h;
            a[i].upsample = i & 1;
            assert_int_equal(pthread_create(&th[i], NULL, conc_main, &a[i]), 0);
        }
        for (int i = 0; i < 4; i++) {
            assert_int_equal(pthread_join(th[i], NULL), 0);
            const view *r = (i & 1) ? &ref1 : &ref0;
            assert_int_equal(a[i].v.n, r->n);
            assert_memory_equal(a[i].v.k, r->k, r->n * sizeof(sl_keypoint));
            assert_memory_equal(a[i].v.d, r->d, r->n * SL_SIFT_DESC_DIM * sizeof(float));
            free(a[i].v.k);
            free(a[i].v.d);
        }
        sl_sift_cache_release();
    }
    free(ref0.k);
    free(ref0.d);
    free(ref1.k);
    free(ref1.d);
    free(g);
}

/* tabs[0] the generic kernel table, tabs[1] / tabs[2] the AVX2 / AVX-512 ones when this CPU
 * runs them (else NULL). */
static void kernel_tables(const sl__sift_kernels *tabs[3]) {
    tabs[0] = &sl__sift_kernels_generic;
    tabs[1] = tabs[2] = NULL;
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        tabs[1] = &sl__sift_kernels_avx2;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        tabs[2] = &sl__sift_kernels_avx512;
#endif
}

/* Every compiled kernel table this CPU runs agrees with the generic one. */
static void test_kernel_tables_agree(void **state) {
    (void)state;
    const sl__sift_kernels *tabs[3];
    kernel_tables(tabs);
    int w = 53, h = 31, r = 7;
    float src[53 * 31], ref[53 * 31], out[53 * 31], tmp[2 * (53 + 2 * 7)], k[8];
    sl__rng rng;
    sl__rng_seed(&rng, 5);
    for (int i = 0; i < w * h; i++) src[i] = (float)sl__rng_uniform(&rng);
    double ks = 0;
    for (int i = 0; i <= r; i++) ks += (i ? 2 : 1) * (k[i] = expf(-(float)(i * i) / 8.0f));
    for (int i = 0; i <= r; i++) k[i] = (float)(k[i] / ks);
    tabs[0]->blur_rows(src, ref, w, h, k, r, tmp, 0, h, NULL);
    /* the blur of a constant is that constant; of a delta, the kernel */
    float c[53 * 31], cd[53 * 31];
    for (int i = 0; i < w * h; i++) c[i] = 0.25f;
    tabs[0]->blur_rows(c, cd, w, h, k, r, tmp, 0, h, NULL);
    for (int i = 0; i < w * h; i++) assert_float_equal(cd[i], 0.25f, 1e-6);
    float dx[100], dy[100], mag[100], ori[100];
    for (int i = 0; i < 100; i++) {
        double a = 2 * PI * i / 100.0 + 0.01;
        dx[i] = (float)(cos(a) * (i + 1));
        dy[i] = (float)(sin(a) * (i + 1));
    }
    for (int t = 0; t < 3; t++) {
        if (!tabs[t]) continue;
        tabs[t]->blur_rows(src, out, w, h, k, r, tmp, 0, h, NULL);
        for (int i = 0; i < w * h; i++) assert_float_equal(out[i], ref[i], 1e-5);
        /* trilinear spreading at the extreme bin coordinates stays inside the histogram
         * (a sample just below the upper edge once rounded to the next cell) */
        {
            const int d = 4, nb = 8, hn = (d + 2) * (d + 2) * (nb + 2);
            float rb[4] = { nextafterf(4.0f, 0.0f), nextafterf(-1.0f, 0.0f), 3.5f, 0.0f };
            float cb[4] = { nextafterf(4.0f, 0.0f), nextafterf(-1.0f, 0.0f), 0.0f, 3.5f };
            float go[4] = { 6.2831853f, 0.0f, 3.0f, nextafterf(6.2831853f, 0.0f) };
            float one[4] = { 1, 1, 1, 1 }, vv[4][8];
            int32_t idx[4];
            tabs[t]->desc_spread(rb, cb, go, one, one, 0.0f, d, nb, 4, idx, vv[0], vv[1], vv[2],
                                 vv[3]);
            for (int q = 0; q < 4; q++) {
                assert_true(idx[q] >= 0 && idx[q] + (d + 3) * (nb + 2) + 1 < hn);
                double sum = 0;
                for (int j = 0; j < 8; j++) sum += vv[j / 2][2 * q + j % 2];
                assert_float_equal(sum, 1.0, 1e-5); /* the amounts split the sample's weight */
            }
        }
        tabs[t]->grad(dx, dy, mag, ori, 100);
        for (int i = 0; i < 100; i++) {
            double a = 2 * PI * i / 100.0 + 0.01;
            assert_float_equal(mag[i], i + 1, 1e-3 * (i + 1));
            assert_float_equal(ori[i], a, 2e-4);
        }
    }
}

/* The blur kernels: each table equals a plain loop with the documented operation order at
 * every width (whole vectors, partial blocks, widths below 8) - the generic one without FMA
 * (this file, like sift_generic.c, is built without contraction), the SIMD ones (built with
 * -ffp-contract=fast) with each tap fused, c = fmaf(k[i], a + b, c); every table gives
 * bit-identical rows whatever the split of [0, h) into calls (one- and two-row paths), and
 * its DoG output is exactly dst - src. */
static void test_blur_rows_paths(void **state) {
    (void)state;
    const sl__sift_kernels *tabs[3];
    kernel_tables(tabs);
    enum { MW = 75, MH = 13, MR = 9 };
    static float src[MW * MH], refs[2][MW * MH], out[MW * MH], part[MW * MH], dog[MW * MH];
    static float tmp[2 * (MW + 2 * MR)], t[MW + 2 * MR];
    sl__rng rng;
    sl__rng_seed(&rng, 11);
    for (int i = 0; i < MW * MH; i++) src[i] = (float)sl__rng_uniform(&rng);
    const int rs[3] = { 1, 4, MR };
    for (int ri = 0; ri < 3; ri++) {
        int r = rs[ri];
        float k[MR + 1];
        double ks = 0;
        for (int i = 0; i <= r; i++) ks += (i ? 2 : 1) * (k[i] = expf(-(float)(i * i) / 6.0f));
        for (int i = 0; i <= r; i++) k[i] = (float)(k[i] / ks);
        for (int w = 1; w <= MW; w += (w < 20 ? 1 : 7)) {
            int h = MH - w % 3; /* odd and even heights */
            /* references (refs[1] fused): vertical then horizontal pass, taps in order */
            float *tt = t + r;
            for (int fu = 0; fu < 2; fu++)
                for (int y = 0; y < h; y++) {
                    for (int x = 0; x < w; x++) {
                        float c = k[0] * src[y * w + x];
                        for (int i = 1; i <= r; i++) {
                            int ya = y - i < 0 ? 0 : y - i, yb = y + i >= h ? h - 1 : y + i;
                            float ab = src[ya * w + x] + src[yb * w + x];
                            c = fu ? fmaf(k[i], ab, c) : c + k[i] * ab;
                        }
                        tt[x] = c;
                    }
                    for (int i = 1; i <= r; i++) {
                        tt[-i] = tt[0];
                        tt[w - 1 + i] = tt[w - 1];
                    }
                    for (int x = 0; x < w; x++) {
                        float c = k[0] * tt[x];
                        for (int i = 1; i <= r; i++) {
                            float ab = tt[x - i] + tt[x + i];
                            c = fu ? fmaf(k[i], ab, c) : c + k[i] * ab;
                        }
                        refs[fu][y * w + x] = c;
                    }
                }
            for (int ti = 0; ti < 3; ti++) {
                if (!tabs[ti]) continue;
                tabs[ti]->blur_rows(src, out, w, h, k, r, tmp, 0, h, dog);
                assert_memory_equal(out, refs[ti > 0], sizeof(float) * (size_t)(w * h));
                for (int i = 0; i < w * h; i++) {
                    float dd = out[i] - src[i];
                    assert_memory_equal(&dog[i], &dd, sizeof dd);
                }
                /* rows in uneven pieces: 1, 2, 3, ... rows per call */
                for (int y0 = 0, step = 1; y0 < h; y0 += step, step++) {
                    int y1 = y0 + step < h ? y0 + step : h;
                    tabs[ti]->blur_rows(src, part, w, h, k, r, tmp, y0, y1, NULL);
                }
                assert_memory_equal(part, out, sizeof(float) * (size_t)(w * h));
            }
        }
    }
}

/* Two outputs (non-empty) are the same bytes; frees both. */
static void assert_same_output(sl_keypoint *k1, float *d1, size_t n1, sl_keypoint *k2, float *d2,
                               size_t n2) {
    assert_true(n1 > 0);
    assert_int_equal(n1, n2);
    assert_memory_equal(k1, k2, n1 * sizeof *k1);
    assert_memory_equal(d1, d2, n1 * SL_SIFT_DESC_DIM * sizeof(float));
    free(k1);
    free(d1);
    free(k2);
    free(d2);
}

/* The float API on a strided plane gives what it gives on a contiguous copy (the contiguous
 * input is read in place, the strided one copied first), for SIFT and for dense SIFT with
 * sizes that halve the image, only blur it, or neither. */
static void test_stride_matches_contiguous(void **state) {
    (void)state;
    int w = 97, h = 83;
    size_t stride = 104;
    float *g = texture(w, h, 60, 110.0, 21, 0.3);
    float *gs = malloc(sizeof(float) * stride * (size_t)h);
    assert_non_null(gs);
    for (size_t i = 0; i < stride * (size_t)h; i++) gs[i] = -1.0f;
    for (int y = 0; y < h; y++)
        memcpy(gs + (size_t)y * stride, g + (size_t)y * w, sizeof(float) * (size_t)w);
    sl_keypoint *k1, *k2;
    float *d1, *d2;
    size_t n1, n2;
    assert_int_equal(sl_sift_extract_grey(g, w, h, (size_t)w, NULL, &k1, &d1, &n1, NULL), SL_OK);
    assert_int_equal(sl_sift_extract_grey(gs, w, h, stride, NULL, &k2, &d2, &n2, NULL), SL_OK);
    assert_same_output(k1, d1, n1, k2, d2, n2);
    const float sizes[4] = { 0.5f, 1.0f, 4.0f, 12.0f };
    for (int q = 0; q < 4; q++) {
        assert_int_equal(sl_sift_dense_grey(g, w, h, (size_t)w, 6, sizes[q], &k1, &d1, &n1,
                                            NULL), SL_OK);
        assert_int_equal(sl_sift_dense_grey(gs, w, h, stride, 6, sizes[q], &k2, &d2, &n2, NULL),
                         SL_OK);
        assert_same_output(k1, d1, n1, k2, d2, n2);
    }
    free(g);
    free(gs);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blobs_position_scale),
        cmocka_unit_test(test_rotation_invariance),
        cmocka_unit_test(test_scale_invariance),
        cmocka_unit_test(test_unrelated_views_differ),
        cmocka_unit_test(test_deterministic_and_threads),
        cmocka_unit_test(test_rootsift_hand_computed),
        cmocka_unit_test(test_dense_grid),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_noise_images),
        cmocka_unit_test(test_image_front_end),
        cmocka_unit_test(test_concurrent_calls_and_cache),
        cmocka_unit_test(test_kernel_tables_agree),
        cmocka_unit_test(test_blur_rows_paths),
        cmocka_unit_test(test_stride_matches_contiguous),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
