/* tests/test_store.c - the catalog store (schema, versions, products, images, filters, FTS)
 * and the feed parsers (CSV per RFC 4180, JSONL) including their per-row error reports; the
 * image files of removed images (queued in the same transaction, deleted after it, finished by
 * the next open), the upgrade of schema 1 stores, pages of products with filters and cursors,
 * product JSON applied as a replacement or a merge patch, and sl_store_check. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <cmocka.h>
#include <sqlite3.h>

#include "shoplens/store.h"
#include "shoplens/image.h"
#include "shoplens/sample.h"
#include "catalog/fetch.h"
#include "catalog/price.h"
#include "catalog/catalog.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>

/* store copy names (images/<64 hex>.<ext>) */
#define HEX64(c) c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c \
                 c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c
#define FILE_A "images/" HEX64("a") ".jpeg"
#define FILE_B "images/" HEX64("b") ".jpeg"
#define FILE_C "images/" HEX64("c") ".png"
#define FILE_D "images/" HEX64("d") ".jpeg"
#define FILE_E "images/" HEX64("e") ".jpeg"

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
    assert_int_equal(sl_store_add_image(s, "P1", "/a.jpg", "h1", 10, FILE_A, v, 4, "LF", 2, &i1, &e), SL_OK);
    assert_int_equal(sl_store_add_image(s, "P1", "/b.jpg", "h2", 11, FILE_B, v, 4, NULL, 0, &i2, &e), SL_OK);
    assert_int_equal(sl_store_add_image(s, "P2", "/c.jpg", "h3", 12, FILE_C, v, 4, NULL, 0, &i3, &e), SL_OK);
    assert_int_equal(sl_store_add_image(s, "P3", "/d.jpg", "h4", 13, FILE_D, v, 4, NULL, 0, &i4, &e), SL_OK);
    assert_true(i1 < i2 && i2 < i3 && i3 < i4);
    /* an image for a product that does not exist violates the foreign key */
    assert_int_not_equal(sl_store_add_image(s, "NOPE", "/x.jpg", "h", 1, FILE_A, v, 4, NULL, 0, NULL, &e), SL_OK);

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
    /* a price range alone: read through products_price, in price order (P3 at 20 before P2 at
     * 50), returned sorted by id; the engine's unsorted variant gives the same set */
    sl_store_filter pf = {0};
    pf.has_min_price = 1;
    pf.min_price = 15;
    assert_int_equal(sl_store_filter_images(s, &pf, &ids, &n, &e), SL_OK);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], i3);
    assert_int_equal(ids[1], i4);
    free(ids);
    assert_int_equal(sl__store_filter_images_any_order(s, &pf, &ids, &n, &e), SL_OK);
    assert_int_equal(n, 2);
    assert_true((ids[0] == i3 && ids[1] == i4) || (ids[0] == i4 && ids[1] == i3));
    free(ids);
    pf.has_max_price = 1;
    pf.max_price = 12;
    assert_int_equal(sl_store_filter_images(s, &pf, &ids, &n, &e), SL_OK);
    assert_int_equal(n, 0); /* min above max: nothing */
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
    assert_int_equal(sl_store_add_image(s, "P4", "/e.jpg", "h5", 1, FILE_E, v, 4, NULL, 0, &i5, &e), SL_OK);
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
    /* a store made before products_price (dropped here) is read as before by a read-only
     * open and gets the index from the next read-write open */
    char path[600];
    snprintf(path, sizeof path, "%s/catalog.sqlite", dir);
    sqlite3 *db;
    const char *has_index = "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'products_price'";
    for (int step = 0; step < 3; step++) {
        if (step) {
            assert_int_equal(sl_store_open(dir, 0, step == 1, &s, &e), SL_OK);
            sl_store_free(s);
        }
        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        if (step == 0) assert_int_equal(sqlite3_exec(db, "DROP INDEX products_price", 0, 0, 0), SQLITE_OK);
        sqlite3_stmt *q;
        assert_int_equal(sqlite3_prepare_v2(db, has_index, -1, &q, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(q), SQLITE_ROW);
        assert_int_equal(sqlite3_column_int(q, 0), step == 2);
        sqlite3_finalize(q);
        sqlite3_close(db);
    }
    /* a newer schema is refused with both versions named */
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
        "P6,g.jpg,Plain,1,\n"           /* an empty cell is no attribute */
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
    assert_string_equal(row.attrs_json, "{\"color\":\"blue\"}");
    assert_int_equal(sl_catalog_next(r, &row, &e), SL_OK);
    assert_string_equal(row.product_id, "P6");
    assert_string_equal(row.attrs_json, "{}");
    assert_int_equal(sl_catalog_next(r, &row, &e), SL_E_CORRUPT);
    assert_int_equal(row.row, 5);
    assert_non_null(strstr(e.message, "4 fields"));
    assert_int_equal(sl_catalog_next(r, &row, &e), SL_E_CORRUPT);
    assert_int_equal(row.row, 6);
    assert_non_null(strstr(e.message, "closing quote"));
    assert_int_equal(sl_catalog_next(r, &row, &e), SL_E_CORRUPT);
    assert_int_equal(row.row, 7);
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

/* Feeds are UTF-8 (the API and JSON are): a CSV value that is not is named per row (image
 * columns are paths or URLs and exempt), a header name that is not refuses the feed; product
 * ids are checked by one rule for every writer (sl_product_id_check). */
static void test_feed_utf8(void **state) {
    (void)state;
    const char *csv =
        "product_id,image,title,brand\n"
        "OK\xc3\xa9,caf\xe9.jpg,Caf\xc3\xa9,Nestl\xc3\xa9\n" /* UTF-8; a Latin-1 file name */
        "L1,a.jpg,caf\xe9,b\n"                                /* Latin-1 title */
        "L2,a.jpg,t,Nestl\xe9\n"                              /* Latin-1 attribute */
        "B\xff,a.jpg,t,b\n";                                  /* Latin-1 id */
    sl_catalog_reader *r;
    sl_error e;
    sl_catalog_row row;
    assert_int_equal(sl_catalog_open_buffer(csv, strlen(csv), 0, &r, &e), SL_OK);
    assert_int_equal(sl_catalog_next(r, &row, &e), SL_OK);
    assert_null(row.not_utf8);
    assert_int_equal(sl_catalog_next(r, &row, &e), SL_OK);
    assert_string_equal(row.not_utf8, "title");
    assert_int_equal(sl_catalog_next(r, &row, &e), SL_OK);
    assert_string_equal(row.not_utf8, "brand");
    assert_int_equal(sl_catalog_next(r, &row, &e), SL_OK);
    assert_string_equal(row.not_utf8, "product_id");
    assert_non_null(sl_product_id_check(row.product_id));
    assert_int_equal(sl_catalog_next(r, &row, &e), SL_E_NOT_FOUND);
    sl_catalog_close(r);
    const char *hdr = "product_id,image,Marqu\xe9\nA,a.jpg,x\n";
    assert_int_equal(sl_catalog_open_buffer(hdr, strlen(hdr), 0, &r, &e), SL_E_CORRUPT);
    assert_non_null(strstr(e.message, "column 3"));
    assert_non_null(strstr(e.message, "UTF-8"));

    assert_null(sl_product_id_check("caf\xc3\xa9"));
    assert_string_equal(sl_product_id_check("B\xff"), "is not UTF-8 text");
    assert_string_equal(sl_product_id_check("\xed\xa0\x80"), "is not UTF-8 text"); /* surrogate */
    assert_string_equal(sl_product_id_check(""), "is empty");
    assert_string_equal(sl_product_id_check(NULL), "is empty");
    assert_string_equal(sl_product_id_check("a\tb"), "contains a control character");
    char longid[SL_STORE_ID_MAX + 2];
    memset(longid, 'x', sizeof longid - 1);
    longid[SL_STORE_ID_MAX] = '\0';
    assert_null(sl_product_id_check(longid));
    longid[SL_STORE_ID_MAX] = 'x';
    longid[SL_STORE_ID_MAX + 1] = '\0';
    assert_non_null(strstr(sl_product_id_check(longid), "128"));

    /* the store itself refuses such an id (a library user bypassing feed and API) */
    char *dir = make_tmpdir();
    char sub[600];
    snprintf(sub, sizeof sub, "%s/st", dir);
    sl_store *s = NULL;
    assert_int_equal(sl_store_open(sub, 1, 0, &s, &e), SL_OK);
    sl_product p = { .id = "B\xff", .title = "t" };
    assert_int_equal(sl_store_put_product(s, &p, &e), SL_E_INVALID);
    assert_non_null(strstr(e.message, "UTF-8"));
    p.id = "caf\xc3\xa9";
    assert_int_equal(sl_store_put_product(s, &p, &e), SL_OK);
    sl_store_free(s);
    rm_rf(dir);
    free(dir);
}

/* ---- image URLs (catalog/fetch.c) against a local server ---------------------------------- */

/* Google Merchant's column names map to the fields; shoplens's own names win when both are there. */
static void test_feed_merchant_names(void **state) {
    (void)state;
    const char *csv =
        "id,title,description,link,image_link,additional_image_link,price,availability,brand,gtin,product_type\n"
        "A1,Mug,Big,https://s.example/a1,https://cdn.example/a1.jpg,\"https://cdn.example/b.jpg, c.jpg\",12.99 USD,in stock,Acme,40063,Home > Kitchen\n";
    sl_catalog_reader *r;
    sl_error e;
    sl_catalog_row row;
    assert_int_equal(sl_catalog_open_buffer(csv, strlen(csv), 0, &r, &e), SL_OK);
    assert_int_equal(sl_catalog_next(r, &row, &e), SL_OK);
    assert_string_equal(row.product_id, "A1");
    assert_string_equal(row.image, "https://cdn.example/a1.jpg");
    assert_string_equal(row.more_images, "https://cdn.example/b.jpg, c.jpg");
    assert_string_equal(row.url, "https://s.example/a1");
    assert_string_equal(row.category, "Home > Kitchen");
    assert_string_equal(row.price_text, "12.99 USD");
    assert_string_equal(row.attrs_json, "{\"availability\":\"in stock\",\"brand\":\"Acme\",\"gtin\":\"40063\"}");
    sl_catalog_close(r);
    /* both names: product_id and image win, id and image_link stay as attributes */
    const char *both = "id,product_id,image_link,image\nX,P1,u.jpg,f.jpg\n";
    assert_int_equal(sl_catalog_open_buffer(both, strlen(both), 0, &r, &e), SL_OK);
    assert_int_equal(sl_catalog_next(r, &row, &e), SL_OK);
    assert_string_equal(row.product_id, "P1");
    assert_string_equal(row.image, "f.jpg");
    assert_string_equal(row.attrs_json, "{\"id\":\"X\",\"image_link\":\"u.jpg\"}");
    sl_catalog_close(r);
    const char *none = "sku,image_link\nX,u.jpg\n";
    assert_int_equal(sl_catalog_open_buffer(none, strlen(none), 0, &r, &e), SL_E_CORRUPT);
    assert_non_null(strstr(e.message, "product_id (or id)"));
    /* JSONL: the same names; additional images as a list; the winner whatever the key order */
    const char *js = "{\"image_link\": \"u.jpg\", \"id\": \"X\", \"product_id\": \"P2\", \"additional_image_link\": [\"a.jpg\", \"b.jpg\"], \"link\": \"https://s/p2\"}\n"
                     "{\"id\": \"P3\", \"image_link\": \"v.jpg\", \"additional_image_link\": [1]}\n";
    assert_int_equal(sl_catalog_open_buffer(js, strlen(js), 1, &r, &e), SL_OK);
    assert_int_equal(sl_catalog_next(r, &row, &e), SL_OK);
    assert_string_equal(row.product_id, "P2");
    assert_string_equal(row.image, "u.jpg");
    assert_string_equal(row.more_images, "a.jpg,b.jpg");
    assert_string_equal(row.url, "https://s/p2");
    assert_string_equal(row.attrs_json, "{\"id\":\"X\"}");
    assert_int_equal(sl_catalog_next(r, &row, &e), SL_E_CORRUPT); /* a list of non-strings */
    assert_non_null(strstr(e.message, "additional_image_link"));
    sl_catalog_close(r);
}

static void test_price_text(void **state) {
    (void)state;
    static const struct { const char *text; int r; double v; const char *cur; } cases[] = {
        { "12.99", 1, 12.99, "" }, { "12.99 USD", 1, 12.99, "USD" }, { "  7 eur ", 1, 7, "EUR" },
        { "USD 12.99", 1, 12.99, "USD" }, { "15.00USD", 1, 15, "USD" }, { ".5", 1, 0.5, "" }, { "3.", 1, 3, "" },
        { "1000000000000 JPY", 1, 1e12, "JPY" }, { "", 0, 0, "" }, { "  ", 0, 0, "" },
        { "-1", -1, 0, "" }, { "+1", -1, 0, "" }, { "1e3", -1, 0, "" }, { "1,299.00 USD", -1, 0, "" },
        { "12,99 EUR", -1, 0, "" }, { "12.99 US", -1, 0, "C" }, { "12.99 USDX", -1, 0, "C" }, { "12.99 USD x", -1, 0, "" },
        { "USD", -1, 0, "" }, { "1.2.3", -1, 0, "" }, { "inf", -1, 0, "" }, { "nan", -1, 0, "" }, { "0x10", -1, 0, "" },
        { "1000000000001", -1, 0, "" }, { "USD 12.99 EUR", -1, 0, "" }, { "12.99 \xc3\xa9uro", -1, 0, "" },
        { "2e12", -1, 0, "" }, { "1E3 USD", -1, 0, "" }, { "US 12", -1, 0, "C" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double v = -1;
        char cur[4] = "zz";
        const char *why = NULL;
        int r = sl__price_parse(cases[i].text, &v, cur, &why);
        if (r != cases[i].r) fprintf(stderr, "'%s': %d (%s)\n", cases[i].text, r, why ? why : "");
        assert_int_equal(r, cases[i].r);
        if (r == 1) {
            assert_true(v == cases[i].v);
            assert_string_equal(cur, cases[i].cur);
        }
        if (r < 0) assert_non_null(strstr(why, "price"));
        /* a malformed number names the range; a malformed code says what a code is */
        if (r < 0) assert_non_null(strstr(why, cases[i].cur[0] == 'C' ? "3 letters" : "0..1000000000000"));
    }
}

static void test_sniff(void **state) {
    (void)state;
    assert_string_equal(sl__sniff_image((const uint8_t *)"\xff\xd8\xff\xe0\0\x10JFIF", 10), "jpeg");
    assert_string_equal(sl__sniff_image((const uint8_t *)"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16), "png");
    assert_string_equal(sl__sniff_image((const uint8_t *)"RIFF\x10\0\0\0WEBPVP8 ", 16), "webp");
    assert_string_equal(sl__sniff_image((const uint8_t *)"\0\0\0\x18" "ftypheic\0\0\0\0mif1heic", 24), "heic");
    assert_string_equal(sl__sniff_image((const uint8_t *)"\0\0\0\x18" "ftypmif1\0\0\0\0mif1heic", 24), "heic");
    assert_null(sl__sniff_image((const uint8_t *)"\0\0\0\x18" "ftypavif\0\0\0\0mif1avif", 24)); /* AVIF: no */
    assert_null(sl__sniff_image((const uint8_t *)"<!doctype html><html>", 21));
    assert_null(sl__sniff_image((const uint8_t *)"GIF89a\1\0\1\0", 10));
    assert_null(sl__sniff_image((const uint8_t *)"\xff\xd8", 2));
    assert_null(sl__sniff_image((const uint8_t *)"", 0));
    assert_true(sl__is_url("https://cdn.example.com/a.jpg") && sl__is_url("HTTP://x/y"));
    assert_false(sl__is_url("ftp://x/y") || sl__is_url("images/a.jpg") || sl__is_url("/abs/http://x"));
}

typedef struct { pid_t pid; int port; char dir[64]; } img_server;

/* Starts tests/feeds/image_server.py over a new directory holding a.jpg and b.png. */
static void img_server_start(img_server *s) {
    char *d = make_tmpdir();
    snprintf(s->dir, sizeof s->dir, "%s", d);
    free(d);
    sl_error err;
    sl_image *img = NULL;
    assert_int_equal(sl_sample_catalog_image(3, 1, 0, 64, 64, &img, &err), SL_OK);
    char path[128];
    snprintf(path, sizeof path, "%s/a.jpg", s->dir);
    assert_int_equal(sl_image_save_file(img, path, 90, &err), SL_OK);
    snprintf(path, sizeof path, "%s/b.png", s->dir);
    assert_int_equal(sl_image_save_file(img, path, 0, &err), SL_OK);
    sl_image_free(img);
    const char *src = getenv("SL_SOURCE_DIR");
    char script[512];
    snprintf(script, sizeof script, "%s/tests/feeds/image_server.py", src ? src : "..");
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    s->pid = fork();
    assert_true(s->pid >= 0);
    if (s->pid == 0) {
        /* gone with this process, also when a failed assertion skips img_server_stop: a server
         * left running would hold ctest's output pipe open and stall it until the timeout */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        dup2(fds[1], 1);
        close(fds[0]);
        execl("/usr/bin/python3", "python3", script, s->dir, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    FILE *f = fdopen(fds[0], "r");
    assert_non_null(f);
    assert_int_equal(fscanf(f, "port %d", &s->port), 1);
    fclose(f);
}

static void img_server_stop(img_server *s) {
    kill(s->pid, SIGTERM);
    waitpid(s->pid, NULL, 0);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s->dir);
    assert_int_equal(system(cmd), 0);
}

/* The server's request count for a path (and max_concurrent), from /stats. */
static int img_server_count(const img_server *s, const char *key) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 -c \"import json,urllib.request as u; "
             "print(json.load(u.urlopen('http://127.0.0.1:%d/stats')).get('%s', 0))\"", s->port, key);
    FILE *p = popen(cmd, "r");
    int n = -1;
    if (p) {
        if (fscanf(p, "%d", &n) != 1) n = -1;
        pclose(p);
    }
    return n;
}

static int done_calls[32];
static void on_done(void *ctx, size_t i) {
    (void)ctx;
    done_calls[i]++;
}

static void test_fetch_urls(void **state) {
    (void)state;
    img_server s;
    img_server_start(&s);
    static const struct { const char *path; sl_status st; const char *words; int attempts; } cases[] = {
        { "/delay/a.jpg", SL_OK, "", 1 },   /* three at once for half a second: parallel transfers */
        { "/delay/a.jpg", SL_OK, "", 1 },
        { "/delay/a.jpg", SL_OK, "", 1 },
        { "/img/a.jpg", SL_OK, "", 1 },
        { "/img/b.png", SL_OK, "", 1 },
        { "/redirect/a.jpg", SL_OK, "", 1 },
        { "/flaky/a.jpg", SL_OK, "", 2 },                                  /* 503, then fine */
        { "/missing/a.jpg", SL_E_NOT_FOUND, "HTTP 404 Not Found", 1 },     /* never retried */
        { "/gone/a.jpg", SL_E_NOT_FOUND, "HTTP 410 Gone", 1 },
        { "/down/a.jpg", SL_E_IO, "HTTP 503 Service Unavailable (2 attempts)", 2 },
        { "/html/a.jpg", SL_E_UNSUPPORTED, "not an image: the server sent an HTML or XML document (Content-Type: image/jpeg)", 1 },
        { "/loop/0", SL_E_IO, "more than 5 redirects", 1 },
        { "/slow/a.jpg", SL_E_IO, "timed out after 1.5 s (2 attempts)", 2 },
        { "/big/x.jpg", SL_E_TOO_LARGE, "larger than the limit of 1048576 bytes", 1 },
        { "/bigchunked/x.jpg", SL_E_TOO_LARGE, "larger than the limit of 1048576 bytes", 1 },
        { "/ftp/a.jpg", SL_E_INVALID, "only http and https", 1 },
    };
    enum { N = sizeof cases / sizeof cases[0] };
    sl__fetch_item items[N + 2];
    char urls[N + 2][128];
    memset(items, 0, sizeof items);
    for (size_t i = 0; i < N; i++) {
        snprintf(urls[i], sizeof urls[i], "http://127.0.0.1:%d%s", s.port, cases[i].path);
        items[i].url = urls[i];
    }
    items[N].url = "ftp://127.0.0.1/a.jpg";           /* not fetched at all */
    snprintf(urls[N + 1], sizeof urls[N + 1], "http://127.0.0.1:1/a.jpg"); /* refused: transient */
    items[N + 1].url = urls[N + 1];
    sl__fetch_opts o;
    sl__fetch_opts_init(&o);
    o.timeout_s = 1.5;
    o.retries = 1;
    o.backoff_s = 0.05;
    o.parallel = 4;
    o.max_bytes = 1 << 20;
    memset(done_calls, 0, sizeof done_calls);
    sl_error err;
    assert_int_equal(sl__fetch_all(items, N + 2, &o, on_done, NULL, NULL, &err), SL_OK);
    for (size_t i = 0; i < N; i++) {
        if (items[i].st != cases[i].st || !strstr(items[i].msg, cases[i].words) || items[i].attempts != cases[i].attempts)
            fprintf(stderr, "%s: %d '%s' after %d attempts\n", cases[i].path, items[i].st, items[i].msg, items[i].attempts);
        assert_int_equal(items[i].st, cases[i].st);
        assert_non_null(strstr(items[i].msg, cases[i].words));
        assert_int_equal(items[i].attempts, cases[i].attempts);
        assert_int_equal(done_calls[i], 1);
        if (cases[i].st == SL_OK) {
            assert_non_null(items[i].data);
            assert_string_equal(items[i].format, strstr(cases[i].path, ".png") ? "png" : "jpeg");
        } else {
            assert_null(items[i].data);
        }
        free(items[i].data);
    }
    assert_int_equal(items[N].st, SL_E_INVALID);
    assert_int_equal(items[N].attempts, 0);
    assert_int_equal(items[N + 1].st, SL_E_IO);
    assert_int_equal(items[N + 1].attempts, 2);
    assert_int_equal(done_calls[N] + done_calls[N + 1], 2);
    /* what the server saw: 404 asked once, 503 twice (retried), transfers in parallel */
    assert_int_equal(img_server_count(&s, "/missing/a.jpg"), 1);
    assert_int_equal(img_server_count(&s, "/down/a.jpg"), 2);
    assert_int_equal(img_server_count(&s, "/slow/a.jpg"), 2);
    assert_true(img_server_count(&s, "max_concurrent") >= 3);
    /* an interruption stops the batch */
    volatile int cancel = 1;
    assert_int_equal(sl__fetch_all(items, 2, &o, NULL, NULL, &cancel, &err), SL_E_INTERRUPTED);
    img_server_stop(&s);
}

/* ---- image files: queued in the transaction that removes them, deleted after it -------------- */

static void write_file(const char *dir, const char *rel, const char *text) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int file_exists(const char *dir, const char *rel) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    return access(path, F_OK) == 0;
}

static void add_img(sl_store *s, const char *pid, const char *file, int64_t *id) {
    float v[4] = {1, 0, 0, 0};
    sl_error e;
    assert_int_equal(sl_store_add_image(s, pid, "/feed/x.jpg", "h", 1, file, v, 4, NULL, 0, id, &e), SL_OK);
}

static size_t n_pending(sl_store *s) {
    char **f;
    size_t n;
    sl_error e;
    assert_int_equal(sl_store_pending_files(s, &f, &n, &e), SL_OK);
    sl_strings_free(f, n);
    return n;
}

static void test_store_image_files_gc(void **state) {
    (void)state;
    char *dir = make_tmpdir();
    sl_store *s;
    sl_error e;
    assert_int_equal(sl_store_open(dir, 1, 0, &s, &e), SL_OK);
    char sub[700];
    snprintf(sub, sizeof sub, "%s/images", dir);
    assert_int_equal(mkdir(sub, 0755), 0);
    write_file(dir, FILE_A, "a");
    write_file(dir, FILE_B, "b");
    write_file(dir, FILE_C, "c");
    write_file(dir, FILE_D, "orphan");
    write_file(dir, FILE_E ".tmp.1.2", "young temporary file of a writer");
    put(s, "P1", "One", "x", 1);
    put(s, "P2", "Two", "x", 2);
    int64_t ia, ib1, ib2, ic;
    add_img(s, "P1", FILE_A, &ia);
    add_img(s, "P1", FILE_B, &ib1);
    add_img(s, "P2", FILE_B, &ib2); /* the same content in two products */
    add_img(s, "P2", FILE_C, &ic);
    /* bad names are refused: nothing outside images/<sha256>.<ext> is ever named */
    float v[4] = {1, 0, 0, 0};
    assert_int_equal(sl_store_add_image(s, "P1", "/f", "h", 1, "images/../../etc/passwd", v, 4, NULL, 0, NULL, &e), SL_E_INVALID);
    assert_int_equal(sl_store_add_image(s, "P1", "/f", "h", 1, "images/abc.jpeg", v, 4, NULL, 0, NULL, &e), SL_E_INVALID);

    /* orphans: the unreferenced copy, not the young temporary file */
    char **names;
    size_t n;
    assert_int_equal(sl_store_orphan_files(s, &names, &n, &e), SL_OK);
    assert_int_equal(n, 1);
    assert_string_equal(names[0], FILE_D);
    sl_strings_free(names, n);

    /* removing P1 queues A and B in the same transaction; the GC deletes only A (P2 uses B) */
    assert_int_equal(sl_store_remove_product(s, "P1", NULL, NULL, &e), SL_OK);
    assert_int_equal(n_pending(s), 2);
    assert_true(file_exists(dir, FILE_A));
    size_t deleted = 0;
    assert_int_equal(sl_store_gc(s, &deleted, &e), SL_OK);
    assert_int_equal(deleted, 1);
    assert_false(file_exists(dir, FILE_A));
    assert_true(file_exists(dir, FILE_B) && file_exists(dir, FILE_C));
    assert_int_equal(n_pending(s), 0);
    /* never inside a transaction (it would delete before the commit) */
    assert_int_equal(sl_store_begin(s, &e), SL_OK);
    assert_int_equal(sl_store_gc(s, NULL, &e), SL_E_STATE);
    sl_store_rollback(s);
    /* a rolled-back removal queues nothing */
    assert_int_equal(sl_store_begin(s, &e), SL_OK);
    assert_int_equal(sl_store_remove_image(s, ic, &e), SL_OK);
    sl_store_rollback(s);
    assert_int_equal(n_pending(s), 0);

    /* a crash after the commit and before the deletion: the next read-write open finishes it */
    assert_int_equal(sl_store_remove_product(s, "P2", NULL, NULL, &e), SL_OK);
    assert_int_equal(n_pending(s), 2);
    sl_store_free(s);
    assert_true(file_exists(dir, FILE_B) && file_exists(dir, FILE_C));
    assert_int_equal(sl_store_open(dir, 0, 1, &s, &e), SL_OK); /* read-only: no deletion */
    assert_true(file_exists(dir, FILE_B));
    sl_store_free(s);
    assert_int_equal(sl_store_open(dir, 0, 0, &s, &e), SL_OK);
    assert_false(file_exists(dir, FILE_B) || file_exists(dir, FILE_C));
    assert_int_equal(n_pending(s), 0);

    /* a changed file queues the old one; a hostile queue entry is never followed */
    put(s, "P3", "Three", "x", 3);
    write_file(dir, FILE_A, "a");
    write_file(dir, FILE_B, "b");
    int64_t i3;
    add_img(s, "P3", FILE_A, &i3);
    assert_int_equal(sl_store_set_image_file(s, i3, FILE_B, &e), SL_OK);
    write_file(dir, "victim.txt", "must survive");
    char path[700];
    snprintf(path, sizeof path, "%s/catalog.sqlite", dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "INSERT INTO pending_deletions VALUES('images/../victim.txt')", 0, 0, 0), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(sl_store_gc(s, &deleted, &e), SL_OK);
    assert_int_equal(deleted, 1);
    assert_false(file_exists(dir, FILE_A));
    assert_true(file_exists(dir, FILE_B));
    assert_true(file_exists(dir, "victim.txt"));

    /* orphans deleted under the write lock */
    assert_int_equal(sl_store_delete_orphans(s, &names, &n, &e), SL_OK);
    assert_int_equal(n, 1);
    assert_string_equal(names[0], FILE_D);
    sl_strings_free(names, n);
    assert_false(file_exists(dir, FILE_D));
    assert_true(file_exists(dir, FILE_E ".tmp.1.2"));
    sl_store_free(s);
    rm_rf(dir);
    free(dir);
}

/* ---- schema 1 stores are upgraded in place ------------------------------------------------ */

static const char *const v1_schema =
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE products(id TEXT PRIMARY KEY, title TEXT NOT NULL DEFAULT '', category TEXT NOT NULL DEFAULT '',"
    " price REAL, description TEXT NOT NULL DEFAULT '', url TEXT NOT NULL DEFAULT '', attrs TEXT NOT NULL DEFAULT '{}');"
    "CREATE INDEX products_category ON products(category);"
    "CREATE TABLE images(id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " product_id TEXT NOT NULL REFERENCES products(id) ON DELETE CASCADE,"
    " source TEXT NOT NULL, hash TEXT NOT NULL, size INTEGER NOT NULL, vec BLOB, local BLOB);"
    "CREATE INDEX images_product ON images(product_id);"
    "CREATE VIRTUAL TABLE products_fts USING fts5(title, description, tokenize = 'unicode61 remove_diacritics 2');"
    "INSERT INTO meta VALUES('magic','shoplens-store'),('format_version','1'),('schema_version','1'),('generation','3');"
    "INSERT INTO products(id, title, price) VALUES('P1', 'Old mug', 4.5);"
    "INSERT INTO products_fts(rowid, title, description) VALUES(1, 'Old mug', '');";

static void make_v1_store(const char *dir, const char *external) {
    char path[700], sql[2048];
    snprintf(path, sizeof path, "%s/catalog.sqlite", dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA journal_mode=WAL", 0, 0, 0), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, v1_schema, 0, 0, 0), SQLITE_OK);
    /* an upload (a copy under images/ named by its hash) and an image read from the feed's folder */
    snprintf(sql, sizeof sql,
             "INSERT INTO images(product_id, source, hash, size) VALUES"
             "('P1', '%s/%s', '%s', 1), ('P1', '%s', 'feedhash', 5)",
             dir, FILE_A, HEX64("a"), external);
    assert_int_equal(sqlite3_exec(db, sql, 0, 0, 0), SQLITE_OK);
    sqlite3_close(db);
}

static void test_store_upgrade_from_schema1(void **state) {
    (void)state;
    char *dir = make_tmpdir();
    char *feed = make_tmpdir();
    char sub[700], external[700];
    snprintf(sub, sizeof sub, "%s/images", dir);
    assert_int_equal(mkdir(sub, 0755), 0);
    write_file(dir, FILE_A, "a");
    write_file(feed, "shop.jpg", "feed!");
    snprintf(external, sizeof external, "%s/shop.jpg", feed);
    make_v1_store(dir, external);
    sl_store *s;
    sl_error e;
    /* even a read-only open upgrades (the directory is writable) */
    assert_int_equal(sl_store_open(dir, 0, 1, &s, &e), SL_OK);
    char *v;
    assert_int_equal(sl_store_meta_get(s, "schema_version", &v, &e), SL_OK);
    assert_string_equal(v, "3");
    free(v);
    int64_t nrefs = -1;
    assert_int_equal(sl_store_count_refs(s, &nrefs, &e), SL_OK); /* the refs table exists */
    assert_int_equal(nrefs, 0);
    sl_product p;
    assert_int_equal(sl_store_get_product(s, "P1", &p, &e), SL_OK);
    assert_string_equal(p.title, "Old mug");
    assert_string_equal(p.currency, "");
    sl_product_clear(&p);
    sl_image_ref *refs;
    size_t n;
    assert_int_equal(sl_store_product_images(s, "P1", &refs, &n, &e), SL_OK);
    assert_int_equal(n, 2);
    assert_true(refs[0].in_store); /* the upload: its copy was already the store's */
    char want[800];
    snprintf(want, sizeof want, "%s/%s", dir, FILE_A);
    assert_string_equal(refs[0].file, want);
    assert_false(refs[1].in_store); /* read from the feed's folder until copied in */
    assert_string_equal(refs[1].file, external);
    sl_image_refs_free(refs, n);
    sl_store_counts c;
    assert_int_equal(sl_store_counts_get(s, &c, &e), SL_OK);
    assert_int_equal(c.images_outside, 1);
    sl_store_free(s);
    /* a second open finds schema 3; removing the product deletes the store's copy only */
    assert_int_equal(sl_store_open(dir, 0, 0, &s, &e), SL_OK);
    assert_int_equal(sl_store_remove_product(s, "P1", NULL, NULL, &e), SL_OK);
    assert_int_equal(sl_store_gc(s, NULL, &e), SL_OK);
    assert_false(file_exists(dir, FILE_A));
    assert_true(file_exists(feed, "shop.jpg")); /* the shop's own file is never touched */
    sl_store_free(s);
    rm_rf(dir);
    rm_rf(feed);
    free(dir);
    free(feed);
}

/* ---- references: labelled photos kept next to the catalog images ---------------------------- */

static sl_status count_vec(void *ctx, int64_t id, const float *vec, size_t dim) {
    (void)vec;
    int64_t *c = ctx;
    if (dim != 4 || id < SL_STORE_REF_ID_BASE) return SL_E_CORRUPT;
    (*c)++;
    return SL_OK;
}

static void test_store_refs(void **state) {
    (void)state;
    char *dir = make_tmpdir();
    sl_store *s;
    sl_error e;
    assert_int_equal(sl_store_open(dir, 1, 0, &s, &e), SL_OK);
    put(s, "P1", "Red mug", "kitchen", 9.5);
    put(s, "P2", "Blue shoe", "shoes", 50);
    float v[4] = {1, 0, 0, 0}, w[4] = {0, 1, 0, 0};
    int64_t i1;
    assert_int_equal(sl_store_add_image(s, "P1", "/a.jpg", "h1", 10, FILE_A, v, 4, NULL, 0, &i1, &e), SL_OK);
    sl_store_ref r[3] = {{"P1", "/photos/1.jpg", w, "LF", 2}, {"P2", "/photos/2.jpg", w, NULL, 0},
                         {"P2", "/photos/3.jpg", v, NULL, 0}};
    /* only inside a transaction; a reference to a missing product is refused, nothing kept */
    assert_int_equal(sl_store_replace_refs(s, r, 3, 4, &e), SL_E_STATE);
    sl_store_ref bad = {"NOPE", "", w, NULL, 0};
    assert_int_equal(sl_store_begin(s, &e), SL_OK);
    assert_int_equal(sl_store_replace_refs(s, &bad, 1, 4, &e), SL_E_NOT_FOUND);
    sl_store_rollback(s);
    assert_int_equal(sl_store_begin(s, &e), SL_OK);
    assert_int_equal(sl_store_replace_refs(s, r, 3, 4, &e), SL_OK);
    assert_int_equal(sl_store_commit(s, &e), SL_OK);
    int64_t nr = 0, seen = 0;
    assert_int_equal(sl_store_count_refs(s, &nr, &e), SL_OK);
    assert_int_equal(nr, 3);
    assert_int_equal(sl_store_each_ref_vector(s, count_vec, &seen, &e), SL_OK);
    assert_int_equal(seen, 3);
    /* index ids: images first, references from SL_STORE_REF_ID_BASE (the SQL's constant agrees) */
    int64_t *ids;
    size_t n;
    assert_int_equal(sl_store_image_ids(s, &ids, &n, &e), SL_OK);
    assert_int_equal(n, 4);
    assert_int_equal(ids[0], i1);
    assert_true(ids[1] > SL_STORE_REF_ID_BASE && ids[3] < SL_STORE_REF_ID_BASE + 1000);
    /* a reference by the photo it was kept from */
    int64_t bysrc = 0;
    assert_int_equal(sl_store_ref_of_source(s, "P2", "/photos/3.jpg", &bysrc, &e), SL_OK);
    assert_int_equal(bysrc, ids[3]);
    assert_int_equal(sl_store_ref_of_source(s, "P1", "/photos/3.jpg", &bysrc, &e), SL_OK);
    assert_int_equal(bysrc, -1); /* another product's photo */
    assert_int_equal(sl_store_ref_of_source(s, "P2", "/photos/9.jpg", &bysrc, &e), SL_OK);
    assert_int_equal(bysrc, -1);
    int64_t q[3] = {ids[1], ids[2], i1};
    char **prod;
    assert_int_equal(sl_store_image_products(s, q, 3, &prod, &e), SL_OK);
    assert_string_equal(prod[0], "P1");
    assert_string_equal(prod[1], "P2");
    assert_string_equal(prod[2], "P1");
    sl_strings_free(prod, 3);
    /* every reference with its product, by index id */
    int64_t *rid;
    char **rp;
    size_t nrp;
    assert_int_equal(sl_store_ref_products(s, &rid, &rp, &nrp, &e), SL_OK);
    assert_int_equal(nrp, 3);
    for (size_t k = 0; k < 3; k++) assert_int_equal(rid[k], ids[1 + k]);
    assert_string_equal(rp[0], "P1");
    assert_string_equal(rp[1], "P2");
    assert_string_equal(rp[2], "P2");
    free(rid);
    sl_strings_free(rp, nrp);
    void *lf;
    size_t llen;
    assert_int_equal(sl_store_image_local(s, ids[1], &lf, &llen, &e), SL_OK);
    assert_int_equal(llen, 2);
    assert_memory_equal(lf, "LF", 2);
    free(lf);
    float out[8];
    unsigned char found[2];
    int64_t two[2] = {ids[1], i1};
    assert_int_equal(sl_store_image_vectors(s, two, 2, 4, out, found, &e), SL_OK);
    assert_true(found[0] && found[1]);
    assert_float_equal(out[1], 1, 0); /* the reference's vector (w) */
    assert_float_equal(out[4], 1, 0); /* the image's (v) */
    /* never an image of the product: product_images, counts */
    sl_image_ref *im;
    size_t ni;
    assert_int_equal(sl_store_product_images(s, "P2", &im, &ni, &e), SL_OK);
    assert_int_equal(ni, 0);
    sl_image_refs_free(im, ni);
    sl_store_counts c;
    assert_int_equal(sl_store_counts_get(s, &c, &e), SL_OK);
    assert_int_equal(c.images, 1);
    /* a filter passes the references of the products it passes */
    int64_t *fi;
    size_t nf;
    sl_store_filter f = {0};
    f.category = "shoes";
    assert_int_equal(sl_store_filter_images(s, &f, &fi, &nf, &e), SL_OK);
    assert_int_equal(nf, 2);
    assert_int_equal(fi[0], ids[2]);
    assert_int_equal(fi[1], ids[3]);
    free(fi);
    /* deleting a product deletes its references and reports their index ids */
    int64_t *gone;
    size_t ng;
    assert_int_equal(sl_store_remove_product(s, "P2", &gone, &ng, &e), SL_OK);
    assert_int_equal(ng, 2);
    assert_int_equal(gone[0], ids[2]);
    assert_int_equal(gone[1], ids[3]);
    free(gone);
    assert_int_equal(sl_store_count_refs(s, &nr, &e), SL_OK);
    assert_int_equal(nr, 1);
    /* replacing: the new set only, under new ids */
    assert_int_equal(sl_store_begin(s, &e), SL_OK);
    assert_int_equal(sl_store_replace_refs(s, r, 1, 4, &e), SL_OK);
    assert_int_equal(sl_store_commit(s, &e), SL_OK);
    int64_t *ids2;
    size_t n2;
    assert_int_equal(sl_store_image_ids(s, &ids2, &n2, &e), SL_OK);
    assert_int_equal(n2, 2);
    assert_true(ids2[1] > ids[3]); /* never reused */
    assert_int_equal(sl_store_ref_products(s, &rid, &rp, &nrp, &e), SL_OK);
    assert_int_equal(nrp, 1);
    assert_int_equal(rid[0], ids2[1]);
    assert_string_equal(rp[0], "P1");
    free(rid);
    sl_strings_free(rp, nrp);
    free(ids2);
    free(ids);
    sl_store_free(s);
    rm_rf(dir);
    free(dir);
}

/* ---- the catalog as data: pages, filters, counts, cursors ------------------------------------ */

static void test_store_list_products(void **state) {
    (void)state;
    char *dir = make_tmpdir();
    sl_store *s;
    sl_error e;
    assert_int_equal(sl_store_open(dir, 1, 0, &s, &e), SL_OK);
    char id[16], title[32];
    for (int i = 0; i < 25; i++) {
        snprintf(id, sizeof id, "ID%02d", 24 - i); /* inserted out of order */
        snprintf(title, sizeof title, "%s lamp", i % 2 ? "red" : "blue");
        put(s, id, title, i % 3 ? "lamps" : "vases", i);
    }
    sl_product *v;
    size_t n;
    int more;
    char after[SL_STORE_ID_MAX + 1] = "";
    size_t seen = 0;
    int pages = 0;
    do {
        assert_int_equal(sl_store_list_products(s, NULL, after, 10, &v, &n, &more, &e), SL_OK);
        for (size_t i = 0; i < n; i++) {
            snprintf(id, sizeof id, "ID%02zu", seen + i);
            assert_string_equal(v[i].id, id); /* by id, no gap, no repeat */
        }
        seen += n;
        pages++;
        if (n) snprintf(after, sizeof after, "%s", v[n - 1].id);
        sl_products_free(v, n);
    } while (more);
    assert_int_equal(seen, 25);
    assert_int_equal(pages, 3);
    /* filters: category, price range, text; counts agree */
    sl_store_filter f = {0};
    f.category = "vases";
    f.has_min_price = 1;
    f.min_price = 5;
    int64_t total;
    assert_int_equal(sl_store_count_products(s, &f, &total, &e), SL_OK);
    assert_int_equal(sl_store_list_products(s, &f, NULL, 100, &v, &n, &more, &e), SL_OK);
    assert_int_equal((int64_t)n, total);
    assert_int_equal(n, 7); /* prices 6, 9, ..., 24 */
    assert_false(more);
    for (size_t i = 0; i < n; i++) assert_true(strcmp(v[i].category, "vases") == 0 && v[i].price >= 5);
    sl_products_free(v, n);
    sl_store_filter t = {0};
    t.text = "red";
    assert_int_equal(sl_store_count_products(s, &t, &total, &e), SL_OK);
    assert_int_equal(total, 12);
    assert_int_equal(sl_store_list_products(s, NULL, NULL, 0, &v, &n, &more, &e), SL_E_INVALID);
    /* cursors: opaque, URL-safe, and only ours are accepted */
    char cur[SL_STORE_CURSOR_MAX + 1], back[SL_STORE_ID_MAX + 1];
    sl_store_cursor_encode("a b/\xc3\xa9", cur);
    assert_null(strpbrk(cur, " /%&?="));
    assert_int_equal(sl_store_cursor_decode(cur, back), 0);
    assert_string_equal(back, "a b/\xc3\xa9");
    assert_int_equal(sl_store_cursor_decode("c6", back), -1);
    assert_int_equal(sl_store_cursor_decode("x6162", back), -1);
    assert_int_equal(sl_store_cursor_decode("c0061", back), -1);
    sl_store_free(s);
    rm_rf(dir);
    free(dir);
}

/* ---- product metadata as JSON: PUT (replace) and PATCH (merge patch, RFC 7396) ---------------- */

static void test_product_apply_json(void **state) {
    (void)state;
    sl_product p = {0};
    p.id = strdup("P1");
    p.title = strdup("Mug");
    p.category = strdup("kitchen");
    p.description = strdup("A mug");
    p.attrs_json = strdup("{\"colour\":\"red\",\"size\":{\"h\":10,\"w\":8}}");
    p.price = 9.5;
    p.has_price = 1;
    sl_error e;
    const char *m1 = "{\"price\": 2, \"currency\": \"eur\", \"attrs\": {\"colour\": null, \"size\": {\"w\": 9}, \"new\": 1}}";
    assert_int_equal(sl_product_apply_json(&p, m1, strlen(m1), SL_APPLY_MERGE, NULL, &e), SL_OK);
    assert_string_equal(p.title, "Mug"); /* untouched */
    assert_string_equal(p.description, "A mug");
    assert_float_equal(p.price, 2, 0);
    assert_string_equal(p.currency, "EUR");
    assert_string_equal(p.attrs_json, "{\"new\":1,\"size\":{\"h\":10,\"w\":9}}");
    const char *m2 = "{\"description\": null, \"price\": null}";
    assert_int_equal(sl_product_apply_json(&p, m2, strlen(m2), SL_APPLY_MERGE, NULL, &e), SL_OK);
    assert_string_equal(p.description, "");
    assert_false(p.has_price);
    /* refusals name the field and the allowed values; the product is left as it was */
    static const char *const bad[] = {
        "{\"price\": 1e13}", "0..1000000000000",
        "{\"price\": \"12\"}", "'price'",
        "{\"currency\": \"EURO\"}", "ISO 4217",
        "{\"title\": 5}", "'title'",
        "{\"attrs\": [1]}", "'attrs'",
        "{\"id\": \"P2\"}", "differs",
        "{\"colour\": \"red\"}", "unknown metadata field 'colour'",
        "[1, 2]", "not a JSON object",
        "{\"a\":", "not JSON",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i += 2) {
        assert_int_equal(sl_product_apply_json(&p, bad[i], strlen(bad[i]), SL_APPLY_MERGE, NULL, &e), SL_E_INVALID);
        if (!strstr(e.message, bad[i + 1])) fail_msg("'%s': message '%s' lacks '%s'", bad[i], e.message, bad[i + 1]);
        assert_string_equal(p.title, "Mug");
        assert_string_equal(p.currency, "EUR");
    }
    /* replace: fields not named are cleared, and reported when they had a value */
    char *blanked = NULL;
    const char *r1 = "{\"price\": 3, \"title\": null}";
    assert_int_equal(sl_product_apply_json(&p, r1, strlen(r1), SL_APPLY_REPLACE, &blanked, &e), SL_OK);
    assert_non_null(blanked);
    assert_string_equal(blanked, "category, currency, attrs"); /* title: cleared on purpose */
    free(blanked);
    assert_string_equal(p.title, "");
    assert_string_equal(p.category, "");
    assert_string_equal(p.attrs_json, "{}");
    const char *r2 = "{\"title\": \"T\", \"price\": 3}";
    assert_int_equal(sl_product_apply_json(&p, r2, strlen(r2), SL_APPLY_REPLACE, &blanked, &e), SL_OK);
    assert_null(blanked); /* nothing left to clear by accident */
    sl_product_clear(&p);
    char code[4];
    assert_true(sl_product_currency_valid("usd", code) && strcmp(code, "USD") == 0);
    assert_true(sl_product_currency_valid(NULL, code) && code[0] == '\0');
    assert_false(sl_product_currency_valid("U$D", code));
    assert_false(sl_product_currency_valid("US", code));
}

/* ---- sl_store_check: the database and its full-text rows ------------------------------------ */

static void test_store_check(void **state) {
    (void)state;
    char *dir = make_tmpdir();
    sl_store *s;
    sl_error e;
    assert_int_equal(sl_store_open(dir, 1, 0, &s, &e), SL_OK);
    put(s, "P1", "Red mug", "kitchen", 1);
    put(s, "P2", "Blue mug", "kitchen", 2);
    char **probs;
    size_t n;
    assert_int_equal(sl_store_check(s, &probs, &n, &e), SL_OK);
    assert_int_equal(n, 0);
    char path[700];
    snprintf(path, sizeof path, "%s/catalog.sqlite", dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "DELETE FROM products_fts WHERE rowid = 2;"
                                      "UPDATE products SET title = 'Green mug' WHERE id = 'P1'", 0, 0, 0), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(sl_store_check(s, &probs, &n, &e), SL_OK);
    assert_int_equal(n, 2);
    int text_row = 0, stale = 0;
    for (size_t i = 0; i < n; i++) {
        text_row |= strstr(probs[i], "'P2' has no full-text row") != NULL;
        stale |= strstr(probs[i], "'P1'") != NULL && strstr(probs[i], "another title") != NULL;
    }
    assert_true(text_row && stale);
    sl_strings_free(probs, n);
    assert_int_equal(sl_store_rebuild_text(s, &e), SL_OK);
    assert_int_equal(sl_store_check(s, &probs, &n, &e), SL_OK);
    assert_int_equal(n, 0);
    sl_store_filter t = {0};
    t.text = "green";
    int64_t *ids;
    assert_int_equal(sl_store_filter_images(s, &t, &ids, &n, &e), SL_OK);
    free(ids);
    int64_t total;
    assert_int_equal(sl_store_count_products(s, &t, &total, &e), SL_OK);
    assert_int_equal(total, 1);
    sl_store_free(s);
    rm_rf(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_store_products_images_filters),
        cmocka_unit_test(test_store_readonly_and_versions),
        cmocka_unit_test(test_csv_rfc4180),
        cmocka_unit_test(test_jsonl),
        cmocka_unit_test(test_feed_merchant_names),
        cmocka_unit_test(test_feed_utf8),
        cmocka_unit_test(test_price_text),
        cmocka_unit_test(test_sniff),
        cmocka_unit_test(test_fetch_urls),
        cmocka_unit_test(test_store_image_files_gc),
        cmocka_unit_test(test_store_upgrade_from_schema1),
        cmocka_unit_test(test_store_refs),
        cmocka_unit_test(test_store_list_products),
        cmocka_unit_test(test_product_apply_json),
        cmocka_unit_test(test_store_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
