/*
 * tests/test_sample.c - the sample universe: determinism (bit-identical images for the same
 * arguments), metadata (ids, categories, prices, titles), argument checks, and that products are
 * distinct from each other while shopper photos still resemble their own product more than
 * others (a crude colour-histogram retrieval must mostly find the right product).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <cmocka.h>

#include "shoplens/sample.h"

static sl_image *cat_img(uint64_t seed, uint32_t p, uint32_t v, int w, int h) {
    sl_image *img = NULL;
    sl_error err;
    if (sl_sample_catalog_image(seed, p, v, w, h, &img, &err) != SL_OK) fail_msg("%s", err.message);
    return img;
}
static sl_image *photo(uint64_t seed, uint32_t p, uint32_t v, int w, int h) {
    sl_image *img = NULL;
    sl_error err;
    if (sl_sample_shopper_photo(seed, p, v, w, h, &img, &err) != SL_OK) fail_msg("%s", err.message);
    return img;
}
static size_t nbytes(const sl_image *img) { return sl_image_stride(img) * (size_t)sl_image_height(img); }
static double mad(const sl_image *a, const sl_image *b) {
    double s = 0;
    for (size_t i = 0; i < nbytes(a); i++) s += abs(sl_image_cpixels(a)[i] - sl_image_cpixels(b)[i]);
    return s / nbytes(a);
}

static void test_determinism(void **st) {
    (void)st;
    sl_image *a = cat_img(7, 3, 0, 200, 160), *b = cat_img(7, 3, 0, 200, 160);
    assert_int_equal(sl_image_width(a), 200);
    assert_int_equal(sl_image_height(a), 160);
    assert_int_equal(sl_image_channels(a), 3);
    assert_memory_equal(sl_image_cpixels(a), sl_image_cpixels(b), nbytes(a));
    sl_image *c = cat_img(8, 3, 0, 200, 160), *d = cat_img(7, 3, 1, 200, 160);
    assert_true(mad(a, c) > 5.0); /* another universe: another product */
    assert_true(mad(a, d) > 5.0); /* another view */
    sl_image *p1 = photo(7, 3, 0, 200, 150), *p2 = photo(7, 3, 0, 200, 150), *p3 = photo(7, 3, 1, 200, 150);
    assert_memory_equal(sl_image_cpixels(p1), sl_image_cpixels(p2), nbytes(p1));
    assert_true(mad(p1, p3) > 5.0);
    sl_image_free(a); sl_image_free(b); sl_image_free(c); sl_image_free(d);
    sl_image_free(p1); sl_image_free(p2); sl_image_free(p3);
}

static void test_metadata(void **st) {
    (void)st;
    int n = sl_sample_category_count();
    assert_true(n >= 10);
    assert_null(sl_sample_category(n));
    assert_null(sl_sample_category(-1));
    int *seen = calloc((size_t)n, sizeof *seen);
    for (uint32_t p = 0; p < (uint32_t)n * 3; p++) {
        sl_sample_product a, b;
        assert_int_equal(sl_sample_product_info(42, p, &a), SL_OK);
        assert_int_equal(sl_sample_product_info(42, p, &b), SL_OK);
        assert_memory_equal(&a, &b, sizeof a);
        char id[32];
        snprintf(id, sizeof id, "P%06u", p);
        assert_string_equal(a.id, id);
        int cat = -1;
        for (int i = 0; i < n; i++)
            if (strcmp(a.category, sl_sample_category(i)) == 0) cat = i;
        assert_true(cat >= 0);
        seen[cat]++;
        assert_true(a.price > 0);
        assert_true(fabs(a.price * 100 - round(a.price * 100)) < 1e-6); /* two decimals */
        assert_true(strlen(a.title) > 5);
        assert_true(strlen(a.description) > 20);
        assert_non_null(strchr(a.title, '\''));
    }
    for (int i = 0; i < n; i++) assert_int_equal(seen[i], 3); /* categories rotate evenly */
    free(seen);
    assert_int_equal(sl_sample_product_info(1, 0, NULL), SL_E_INVALID);
    /* titles differ between products */
    sl_sample_product a, b;
    sl_sample_product_info(1, 0, &a);
    sl_sample_product_info(1, 1, &b);
    assert_string_not_equal(a.title, b.title);
}

static void test_arguments(void **st) {
    (void)st;
    sl_image *img = (sl_image *)1;
    sl_error err;
    assert_int_equal(sl_sample_catalog_image(1, 0, 0, 15, 100, &img, &err), SL_E_INVALID);
    assert_null(img);
    assert_int_equal(sl_sample_catalog_image(1, 0, 0, 100, 4097, &img, &err), SL_E_INVALID);
    assert_int_equal(sl_sample_shopper_photo(1, 0, 0, 100, 100, NULL, &err), SL_E_INVALID);
    /* extreme aspect ratios and the smallest size still work */
    img = cat_img(1, 5, 2, 16, 16);
    sl_image_free(img);
    img = cat_img(1, 6, 3, 400, 17);
    sl_image_free(img);
    img = photo(1, 7, 9, 17, 300);
    assert_int_equal(sl_image_width(img), 17);
    sl_image_free(img);
}

/* 4x4x4 RGB histogram of the central half of the image, L1-normalized. */
static void hist(const sl_image *img, double h[64]) {
    memset(h, 0, 64 * sizeof h[0]);
    int w = sl_image_width(img), ht = sl_image_height(img);
    double tot = 0;
    for (int y = ht / 4; y < ht * 3 / 4; y++)
        for (int x = w / 4; x < w * 3 / 4; x++) {
            const uint8_t *p = sl_image_cpixels(img) + (size_t)y * sl_image_stride(img) + (size_t)x * 3;
            if (p[0] > 240 && p[1] > 240 && p[2] > 240) continue; /* packshot background */
            h[(p[0] >> 6) * 16 + (p[1] >> 6) * 4 + (p[2] >> 6)] += 1;
            tot += 1;
        }
    for (int i = 0; i < 64; i++) h[i] /= tot > 0 ? tot : 1;
}

static void test_distinct_and_retrievable(void **st) {
    (void)st;
    enum { N = 12 };
    static double hc[N][64];
    sl_image *cat[N];
    for (int p = 0; p < N; p++) {
        cat[p] = cat_img(3, (uint32_t)p, 0, 160, 160);
        hist(cat[p], hc[p]);
    }
    for (int p = 0; p < N; p++)
        for (int q = p + 1; q < N; q++) assert_true(mad(cat[p], cat[q]) > 10.0);
    int right = 0;
    for (int p = 0; p < N; p++) {
        sl_image *ph = photo(3, (uint32_t)p, 0, 160, 120);
        double hp[64];
        hist(ph, hp);
        int best = -1;
        double bs = -1;
        for (int q = 0; q < N; q++) {
            double s = 0; /* histogram intersection */
            for (int i = 0; i < 64; i++) s += fmin(hp[i], hc[q][i]);
            if (s > bs) { bs = s; best = q; }
        }
        right += best == p;
        sl_image_free(ph);
    }
    for (int p = 0; p < N; p++) sl_image_free(cat[p]);
    print_message("colour-histogram top-1: %d / %d\n", right, N);
    assert_true(right >= N / 2); /* chance is 1/12: photos keep their product's colours */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_metadata),
        cmocka_unit_test(test_arguments),
        cmocka_unit_test(test_distinct_and_retrievable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
