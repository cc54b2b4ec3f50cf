/* tests/test_eval.c - retrieval metrics on hand-made rankings equal hand-computed values; the
 * evaluation runner ranks a gallery split into parts exactly like a whole one (a gallery above
 * the index's 32,768 results per search used to score 0), and counts and names unreadable
 * queries as skipped. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <jansson.h>

#include "shoplens/eval.h"
#include "shoplens/image.h"
#include "shoplens/index.h"
#include "shoplens/sample.h"
#include "eval/eval_internal.h"

#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#define EPS 1e-6

/* Query A: relevant at ranks 1, 3, 6 of 4 that exist. Query B: one relevant, found at rank 6.
 * Query C: nothing relevant exists (skipped). k = 3. */
static sl_eval_acc *two_queries(void) {
    sl_eval_acc *a = sl_eval_acc_new(3);
    assert_non_null(a);
    const unsigned char qa[] = {1, 0, 1, 0, 0, 1};
    const unsigned char qb[] = {0, 0, 0, 0, 0, 1};
    const unsigned char qc[] = {0, 0};
    assert_int_equal(sl_eval_acc_add(a, qa, 6, 4, 1.0), SL_OK);
    assert_int_equal(sl_eval_acc_add(a, qb, 6, 1, 2.0), SL_OK);
    assert_int_equal(sl_eval_acc_add(a, qc, 2, 0, 3.0), SL_OK);
    return a;
}

static void test_metrics_hand_computed(void **state) {
    (void)state;
    sl_eval_acc *a = two_queries();
    sl_eval_metrics m;
    sl_eval_acc_result(a, &m);
    assert_int_equal(m.queries, 2);
    assert_int_equal(m.skipped, 1);
    /* AP(A) = (1/1 + 2/3 + 3/6) / 4 = 0.541667; AP(B) = (1/6) / 1 */
    assert_float_equal(m.map, ((1.0 + 2.0 / 3 + 0.5) / 4 + 1.0 / 6) / 2, EPS);
    assert_float_equal(m.precision_1, 0.5, EPS);
    assert_float_equal(m.precision_k, (2.0 / 3 + 0) / 2, EPS);
    assert_float_equal(m.recall_k, (2.0 / 4 + 0) / 2, EPS);
    assert_float_equal(m.hit_1, 0.5, EPS);
    assert_float_equal(m.hit_5, 0.5, EPS);
    assert_float_equal(m.hit_k, 0.5, EPS);
    /* F1@3(A) = 2 * (2/3) * (1/2) / (2/3 + 1/2) = 4/7 */
    assert_float_equal(m.f1_k, (4.0 / 7) / 2, EPS);
    assert_float_equal(m.hits_4, (2.0 + 0) / 2, EPS);
    /* latencies 1, 2, 3 ms (nearest rank) */
    assert_float_equal(m.query_ms_p50, 2.0, EPS);
    assert_float_equal(m.query_ms_p99, 3.0, EPS);
    /* interpolated PR: A = 1 up to recall .25, 2/3 up to .5, 1/2 up to .75, 0 after; B = 1/6 */
    assert_float_equal(m.pr_curve[0], (1.0 + 1.0 / 6) / 2, EPS);
    assert_float_equal(m.pr_curve[5], (2.0 / 3 + 1.0 / 6) / 2, EPS);
    assert_float_equal(m.pr_curve[7], (0.5 + 1.0 / 6) / 2, EPS);
    assert_float_equal(m.pr_curve[10], (0 + 1.0 / 6) / 2, EPS);
    sl_eval_acc_free(a);
}

static void test_perfect_ranking(void **state) {
    (void)state;
    sl_eval_acc *a = sl_eval_acc_new(2);
    const unsigned char q[] = {1, 1, 0, 0};
    assert_int_equal(sl_eval_acc_add(a, q, 4, 2, -1), SL_OK);
    sl_eval_metrics m;
    sl_eval_acc_result(a, &m);
    assert_float_equal(m.map, 1.0, EPS);
    assert_float_equal(m.precision_k, 1.0, EPS);
    assert_float_equal(m.recall_k, 1.0, EPS);
    assert_float_equal(m.f1_k, 1.0, EPS);
    assert_float_equal(m.hits_4, 2.0, EPS);
    assert_float_equal(m.query_ms_p50, 0.0, EPS); /* no latency given */
    sl_eval_acc_free(a);
}

static void test_invalid_inputs(void **state) {
    (void)state;
    assert_null(sl_eval_acc_new(0));
    assert_null(sl_eval_acc_new(SL_EVAL_K_MAX + 1));
    sl_eval_acc *a = sl_eval_acc_new(5);
    const unsigned char q[] = {1, 1};
    /* more relevant results than exist */
    assert_int_equal(sl_eval_acc_add(a, q, 2, 1, 0), SL_E_INVALID);
    sl_eval_metrics m;
    sl_eval_acc_result(a, &m);
    assert_int_equal(m.queries, 0);
    assert_float_equal(m.map, 0.0, EPS);
    sl_eval_acc_free(a);
    sl_eval_acc_free(NULL);
}

static void test_json_keys_exact(void **state) {
    (void)state;
    sl_eval_acc *a = two_queries();
    sl_eval_metrics m;
    sl_eval_acc_result(a, &m);
    m.gallery = 42;
    char *js = NULL;
    assert_int_equal(sl_eval_metrics_json(&m, "color", &js), SL_OK);
    json_t *o = json_loads(js, 0, NULL);
    assert_non_null(o);
    static const char *const keys[] = {"queries", "gallery", "map", "precision@1", "precision@k",
        "recall@k", "hit@1", "hit@5", "hit@k", "f1@k", "hits@4", "index_images_per_s",
        "query_ms_p50", "query_ms_p99"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        assert_non_null(json_object_get(o, keys[i]));
    assert_int_equal(json_integer_value(json_object_get(o, "gallery")), 42);
    assert_int_equal(json_integer_value(json_object_get(o, "queries")), 2);
    assert_float_equal(json_real_value(json_object_get(o, "hits@4")), 1.0, EPS);
    assert_string_equal(json_string_value(json_object_get(o, "features")), "color");
    json_decref(o);
    free(js);
    sl_eval_acc_free(a);
}


/* ---- sl_eval_run on generated ImageFolders --------------------------------------------------- */

static void write_view(const char *dir, const char *label, const char *name, uint32_t product,
                       uint32_t view) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, label);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/%s/%s", dir, label, name);
    sl_image *img = NULL;
    sl_error e;
    assert_int_equal(sl_sample_catalog_image(5, product, view, 64, 64, &img, &e), SL_OK);
    assert_int_equal(sl_image_save_file(img, path, 90, &e), SL_OK);
    sl_image_free(img);
}

typedef struct skips { int n; char names[4][512]; } skips;

static void on_skip(void *ctx, const char *path, const char *why) {
    skips *k = ctx;
    assert_non_null(why);
    if (k->n < 4) snprintf(k->names[k->n], sizeof k->names[0], "%s", path);
    k->n++;
}

static void test_run_parts_and_skipped_queries(void **state) {
    (void)state;
    char tmpl[] = "/tmp/sl_test_eval_XXXXXX";
    char *dir = mkdtemp(tmpl);
    assert_non_null(dir);
    char g[600], q[600];
    snprintf(g, sizeof g, "%s/g", dir);
    snprintf(q, sizeof q, "%s/q", dir);
    mkdir(g, 0755);
    mkdir(q, 0755);
    char label[16], name[16];
    for (uint32_t p = 0; p < 4; p++)
        for (uint32_t v = 0; v < 3; v++) {
            snprintf(label, sizeof label, "L%u", p);
            snprintf(name, sizeof name, "v%u.jpg", v);
            write_view(g, label, name, p, v);
        }
    write_view(q, "L1", "photo.jpg", 1, 3);
    write_view(q, "L2", "photo.jpg", 2, 3);
    char bad[700];
    snprintf(bad, sizeof bad, "%s/L2/broken.jpg", q);
    FILE *fp = fopen(bad, "wb");
    assert_non_null(fp);
    fputs("not a picture", fp);
    fclose(fp);

    sl_eval_opts o;
    memset(&o, 0, sizeof o);
    o.gallery_dir = g;
    o.features = "color";
    o.k = 5;
    o.jobs = 2;
    sl_error e;
    sl_eval_metrics whole, parts;
    assert_int_equal(sl_eval_run(&o, &whole, &e), SL_OK);
    assert_int_equal(whole.queries, 12);
    assert_true(whole.map > 0);
    /* the same gallery ranked in parts of 5 (then 1) images: the same numbers */
    static const size_t part_sizes[] = {5, 1};
    for (size_t pi = 0; pi < 2; pi++) {
        sl__eval_part_size = part_sizes[pi];
        assert_int_equal(sl_eval_run(&o, &parts, &e), SL_OK);
        assert_int_equal(parts.queries, whole.queries);
        assert_int_equal(parts.gallery, whole.gallery);
        assert_float_equal(parts.map, whole.map, 1e-12);
        assert_float_equal(parts.precision_k, whole.precision_k, 1e-12);
        assert_float_equal(parts.hit_1, whole.hit_1, 1e-12);
        for (int i = 0; i < SL_EVAL_PR_POINTS; i++) assert_float_equal(parts.pr_curve[i], whole.pr_curve[i], 1e-12);
    }
    sl__eval_part_size = SL_INDEX_K_MAX;
    /* a query that does not decode is skipped, counted and named */
    skips k = {0};
    o.queries_dir = q;
    o.skipped_fn = on_skip;
    o.skipped_ctx = &k;
    assert_int_equal(sl_eval_run(&o, &parts, &e), SL_OK);
    assert_int_equal(parts.queries, 2);
    assert_int_equal(parts.skipped, 1);
    assert_int_equal(k.n, 1);
    assert_string_equal(k.names[0], bad);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_hand_computed),
        cmocka_unit_test(test_perfect_ranking),
        cmocka_unit_test(test_invalid_inputs),
        cmocka_unit_test(test_json_keys_exact),
        cmocka_unit_test(test_run_parts_and_skipped_queries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
