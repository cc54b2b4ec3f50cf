/* tests/test_store.c - the catalog store (schema, versions, products, images, filters, FTS)
 * and the feed parsers (CSV per RFC 4180, JSONL) including their per-row error reports. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <sqlite3.h>

#include "shoplens/store.h"

static char *make_tmpdir(void) {
    char tmpl[] = "/tmp/sl_test_store_XXXXXX";
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    return strdup(d);
}

static void rm_rf(const char *dir) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void put(sl_store *s, const char *id, const char *title, const char *cat, double price) {
    sl_product p = {0};
    p.id = (char *)id;
    p.title = (char *)title;
    p.category = (char *)cat;
    p.description = (char *)"a fine thing";
    p.price = price;
    p.has_price = price >= 0;
    sl_error e;
    assert_int_equal(sl_store_put_product(s, &p, &e), SL_OK);
}

static void test_store_products_images_filters(void **state) {
    (void)state;
    char *dir = make_tmpdir();
    char sub[600];
    snprintf(sub, sizeof sub, "%s/st", dir);
    sl_store *s = NULL;
    sl_error e;
    assert_int_equal(sl_store_open(sub, 0, 0, &s, &e), SL_E_NOT_FOUND);
    assert_null(s);
    assert_int_equal(sl_store_open(sub, 1, 0, &s, &e), SL_OK);
    put(s, "P1", "Red mug", "kitchen", 9.5);
    put(s, "P2", "Blue shoe", "shoes", 50);
    put(s, "P3", "Green mug with handle", "kitchen", 20);
    put(s, "P1", "Red mug large", "kitchen", 12); /* update keeps one row */
    float v[4] = {1, 0, 0, 0};
    int64_t i1, i2, i3, i4;
    assert_int_equal(sl_store_add_image(s, "P1", "/a.jpg", "h1", 10, v, 4, "LF", 2, &i1, &e), SL_OK);
    assert_int_equal(sl_store_add_image(s, "P1", "/b.jpg", "h2", 11, v, 4, NULL, 0, &i2, &e), SL_OK);
    assert_int_equal(sl_store_add_image(s, "P2", "/c.jpg", "h3", 12, v, 4, NULL, 0, &i3, &e), SL_OK);
    assert_int_equal(sl_store_add_image(s, "P3", "/d.jpg", "h4", 13, v, 4, NULL, 0, &i4, &e), SL_OK);
    assert_true(i1 < i2 && i2 < i3 && i3 < i4);
    /* an image for a product that does not exist violates the foreign key */
    assert_int_not_equal(sl_store_add_image(s, "NOPE", "/x.jpg", "h", 1, v, 4, NULL, 0, NULL, &e), SL_OK);

    sl_store_counts c;
    assert_int_equal(sl_store_counts_get(s, &c, &e), SL_OK);
    assert_int_equal(c.products, 3);
    assert_int_equal(c.images, 4);
    assert_true(c.db_bytes > 0);

    sl_product p;
    assert_int_equal(sl_store_get_product(s, "P1", &p, &e), SL_OK);
    assert_string_equal(p.title, "Red mug large");
    assert_float_equal(p.price, 12, 1e-9);
    assert_string_equal(p.attrs_json, "{}");
    sl_product_clear(&p);
    assert_int_equal(sl_store_get_product(s, "P9", &p, &e), SL_E_NOT_FOUND);

    int64_t *ids;
    size_t n;
    sl_store_filter f = {0};
    f.category = "kitchen";
    assert_int_equal(sl_store_filter_images(s, &f, &ids, &n, &e), SL_OK);
    assert_int_equal(n, 3);
    free(ids);
    f.has_max_price = 15;
    f.max_price = 15;
    assert_int_equal(sl_store_filter_images(s, &f, &ids, &n, &e), SL_OK);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], i1);
    free(ids);
    sl_store_filter t = {0};
    t.text = "mug handle";  /* words are ANDed */
    assert_int_equal(sl_store_filter_images(s, &t, &ids, &n, &e), SL_OK);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], i4);
    free(ids);
    t.text = "\"mug\" OR NEAR("; /* FTS5 syntax is not interpreted */
    assert_int_equal(sl_store_filter_images(s, &t, &ids, &n, &e), SL_OK);
    assert_int_equal(n, 0);
    free(ids);
    assert_true(sl_store_filter_empty(NULL));
    assert_false(sl_store_filter_empty(&t));

    char **cats;
    int64_t *counts;
    assert_int_equal(sl_store_categories(s, &cats, &counts, &n, &e), SL_OK);
    assert_int_equal(n, 2);
    assert_string_equal(cats[0], "kitchen");
    assert_int_equal(counts[0], 2);
    sl_strings_free(cats, n);
    free(counts);

    float *vec;
    size_t dim;
    void *local;
    size_t llen;
    assert_int_equal(sl_store_image_features(s, i1, &vec, &dim, &local, &llen, &e), SL_OK);
    assert_int_equal(dim, 4);
    assert_int_equal(llen, 2);
    assert_memory_equal(local, "LF", 2);
    free(vec);
    free(local);
    /* the local features alone (pooled statement: read twice, then an unknown id) */
    for (int rep = 0; rep < 2; rep++) {
        assert_int_equal(sl_store_image_local(s, i1, &local, &llen, &e), SL_OK);
        assert_int_equal(llen, 2);
        assert_memory_equal(local, "LF", 2);
        free(local);
    }
    assert_int_equal(sl_store_image_local(s, 424242, &local, &llen, &e), SL_E_NOT_FOUND);
    assert_null(local);
    assert_int_equal(llen, 0);

    /* products of many images in one query, unknown ids give NULL */
    int64_t q[4] = {i3, 424242, i1, i4};
    char **prods;
    assert_int_equal(sl_store_image_products(s, q, 4, &prods, &e), SL_OK);
    assert_string_equal(prods[0], "P2");
    assert_null(prods[1]);
    assert_string_equal(prods[2], "P1");
    assert_string_equal(prods[3], "P3");
    sl_strings_free(prods, 4);

    int64_t *removed;
    assert_int_equal(sl_store_remove_product(s, "P1", &removed, &n, &e), SL_OK);
    assert_int_equal(n, 2);
    assert_int_equal(removed[0], i1);
    free(removed);
    assert_int_equal(sl_store_remove_product(s, "P1", NULL, NULL, &e), SL_E_NOT_FOUND);
    t.text = "red";
    assert_int_equal(sl_store_filter_images(s, &t, &ids, &n, &e), SL_OK);
    assert_int_equal(n, 0); /* the text row went with the product */
    free(ids);
    /* ids are never reused */
    put(s, "P4", "New", "x", -1);
    int64_t i5;
    assert_int_equal(sl_store_add_image(s, "P4", "/e.jpg", "h5", 1, v, 4, NULL, 0, &i5, &e), SL_OK);
    assert_true(i5 > i4);

    /* a rolled-back transaction leaves nothing */
    assert_int_equal(sl_store_begin(s, &e), SL_OK);
    put(s, "P5", "Ghost", "x", 1);
    sl_store_rollback(s);
    assert_int_equal(sl_store_get_product(s, "P5", &p, &e), SL_E_NOT_FOUND);

    int64_t g0, g1;
    assert_int_equal(sl_store_generation(s, &g0, &e), SL_OK);
    assert_int_equal(sl_store_bump_generation(s, &e), SL_OK);
    assert_int_equal(sl_store_generation(s, &g1, &e), SL_OK);
    assert_int_equal(g1, g0 + 1);
    sl_store_free(s);

    rm_rf(dir);
    free(dir);
}

static void test_store_readonly_and_versions(void **state) {
    (void)state;
    char *dir = make_tmpdir();
    sl_store *s;
    sl_error e;
    assert_int_equal(sl_store_open(dir, 1, 0, &s, &e), SL_OK);
    sl_store_free(s);
    assert_int_equal(sl_store_open(dir, 0, 1, &s, &e), SL_OK);
    sl_product p = {0};
    p.id = (char *)"X";
    assert_int_equal(sl_store_put_product(s, &p, &e), SL_E_STATE);
    sl_store_free(s);
    /* a newer schema is refused with both versions named */
    char path[600];
    snprintf(path, sizeof path, "%s/catalog.sqlite", dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "UPDATE meta SET value='99' WHERE key='schema_version'", 0, 0, 0), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(sl_store_open(dir, 0, 0, &s, &e), SL_E_VERSION);
    assert_non_null(strstr(e.message, "newer"));
    assert_non_null(strstr(e.message, "99"));
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "UPDATE meta SET value='0' WHERE key='schema_version'", 0, 0, 0), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(sl_store_open(dir, 0, 1, &s, &e), SL_E_VERSION);
    assert_non_null(strstr(e.message, "older"));
    /* not a store at all */
    FILE *fp = fopen(path, "wb");
    fputs("this is not sqlite at all, just some text that is long enough to be a header..........", fp);
    fclose(fp);
    char wal[620];
    snprintf(wal, sizeof wal, "%s-wal", path);
    unlink(wal);
    assert_int_equal(sl_store_open(dir, 0, 0, &s, &e), SL_E_CORRUPT);
    rm_rf(dir);
    free(dir);
}

static void test_csv_rfc4180(void **state) {
    (void)state;
    const char *csv =
        "\xEF\xBB\xBFproduct_id,image,title,price,color\r\n"
        "P1,a.jpg,\"Mug, red \"\"big\"\"\",9.50,red\r\n"
        "P1,b.jpg,\"multi\nline\",9.50,red\n"
        "\n"
        "P2,c.jpg,Shoe,abc,\"blue\"\n"
        "P3,d.jpg,Too,few\n"
        "P4,e.jpg,\"bad\"x,1,y\n"
        "P5,f.jpg,Last,2,\"unterminated\n";
    sl_catalog_reader *r;
    sl_error e;
    assert_int_equal(sl_catalog_open_buffer(csv, strlen(csv), 0, &r, &e), SL_OK);
    sl_catalog_row row;
    assert_int_equal(sl_catalog_next(r, &row, &e), SL_OK);
    assert_int_equal(row.row, 1);
    assert_string_equal(row.product_id, "P1");
    assert_string_equal(row.title, "Mug, red \"big\"");
    assert_string_equal(row.price_text, "9.50");
    assert_null(row.category);
    assert_string_equal(row.attrs_json, "{\"color\":\"red\"}");
    assert_int_equal(sl_catalog_next(r, &row, &e), SL_OK);
    assert_string_equal(row.title, "multi\nline");
    assert_string_equal(row.image, "b.jpg");
    assert_int_equal(sl_catalog_next(r, &row, &e), SL_OK);
    assert_int_equal(row.row, 3); /* the blank line is not a record */
    assert_string_equal(row.price_text, "abc");
    assert_int_equal(sl_catalog_next(r, &row, &e), SL_E_CORRUPT);
    assert_int_equal(row.row, 4);
    assert_non_null(strstr(e.message, "4 fields"));
    assert_int_equal(sl_catalog_next(r, &row, &e), SL_E_CORRUPT);
    assert_int_equal(row.row, 5);
    assert_non_null(strstr(e.message, "closing quote"));
    assert_int_equal(sl_catalog_next(r, &row, &e), SL_E_CORRUPT);
    assert_int_equal(row.row, 6);
    assert_non_null(strstr(e.message, "unterminated"));
    assert_int_equal(sl_catalog_next(r, &row, &e), SL_E_NOT_FOUND);
    sl_catalog_close(r);

    const char *nohdr = "title,image\nx,y\n";
    assert_int_equal(sl_catalog_open_buffer(nohdr, strlen(nohdr), 0, &r, &e), SL_E_CORRUPT);
    assert_non_null(strstr(e.message, "product_id"));
    assert_int_equal(sl_catalog_open_buffer("", 0, 0, &r, &e), SL_E_CORRUPT);
}

static void test_jsonl(void **state) {
    (void)state;
    const char *js =
        "{\"product_id\": \"P1\", \"image\": \"a.jpg\", \"price\": 9.5, \"brand\": {\"n\": 1}}\n"
        "\n"
        "{\"product_id\": 7, \"image\": \"b.jpg\", \"title\": \"T\"}\r\n"
        "{broken\n"
        "[1,2]\n"
        "{\"product_id\": [1], \"image\": \"c.jpg\"}\n"
        "{\"product_id\": \"P9\"}";
    sl_catalog_reader *r;
    sl_error e;
    assert_int_equal(sl_catalog_open_buffer(js, strlen(js), 1, &r, &e), SL_OK);
    sl_catalog_row row;
    assert_int_equal(sl_catalog_next(r, &row, &e), SL_OK);
    assert_string_equal(row.product_id, "P1");
    assert_string_equal(row.price_text, "9.5");
    assert_string_equal(row.attrs_json, "{\"brand\":{\"n\":1}}");
    assert_int_equal(sl_catalog_next(r, &row, &e), SL_OK);
    assert_int_equal(row.row, 3);
    assert_string_equal(row.product_id, "7");
    assert_int_equal(sl_catalog_next(r, &row, &e), SL_E_CORRUPT);
    assert_int_equal(row.row, 4);
    assert_int_equal(sl_catalog_next(r, &row, &e), SL_E_CORRUPT);
    assert_non_null(strstr(e.message, "not a JSON object"));
    assert_int_equal(sl_catalog_next(r, &row, &e), SL_E_CORRUPT);
    assert_non_null(strstr(e.message, "product_id"));
    assert_int_equal(sl_catalog_next(r, &row, &e), SL_OK);
    assert_int_equal(row.row, 7);
    assert_null(row.image);
    assert_int_equal(sl_catalog_next(r, &row, &e), SL_E_NOT_FOUND);
    sl_catalog_close(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_store_products_images_filters),
        cmocka_unit_test(test_store_readonly_and_versions),
        cmocka_unit_test(test_csv_rfc4180),
        cmocka_unit_test(test_jsonl),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
