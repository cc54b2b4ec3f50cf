/* tests/test_engine.c - the engine API used by the server: put/get/delete with upsert outcomes,
 * uploads kept by content hash, search/similar/classify/check, thumbnails, stats, a second
 * handle catching up with sl_engine_refresh, and searches running concurrently with a writer
 * that never see a half-written product; the verification cache of local features (hits,
 * emptied on a new catalog state, LRU budget, entries kept alive while referenced); calibrated
 * confidence (the store calibrates itself, accepts generated shopper photos of a product far
 * more than of other products, fields in range, no match for a photo of nothing); train's
 * calibration from the photos of whole products held out of a stand-in head (a seeded order),
 * installed with the final head in one version, nothing installed when interrupted, the same for
 * any jobs. Small generated
 * images, "color" features (no training) so it stays fast under ASan. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <pthread.h>
#include <cmocka.h>

#include "shoplens/engine.h"
#include "shoplens/sample.h"
#include "shoplens/server.h"
#include <vips/vips.h>
#include "engine/engine_internal.h"
#include "engine/lcache.h"
#include "feature/features_internal.h"

#define SEED 21
#define SIDE 96

typedef struct fixture {
    char dir[64];
    sl_engine *e;
    void *jpg[8][2];
    size_t len[8][2];
} fixture;

static void encode_view(uint32_t product, uint32_t view, void **jpg, size_t *len) {
    sl_image *img = NULL;
    sl_error err;
    assert_int_equal(sl_sample_catalog_image(SEED, product, view, SIDE, SIDE, &img, &err), SL_OK);
    assert_int_equal(sl_image_encode(img, "jpeg", 90, jpg, len, &err), SL_OK);
    sl_image_free(img);
}

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/sl_test_engine_XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    sl_engine_opts o = {0};
    o.create = 1;
    o.features = "color";
    sl_error err;
    if (sl_engine_open(f->dir, &o, &f->e, &err) != SL_OK) {
        fprintf(stderr, "open: %s\n", err.message);
        return -1;
    }
    for (uint32_t p = 0; p < 8; p++)
        for (uint32_t v = 0; v < 2; v++) encode_view(p, v, &f->jpg[p][v], &f->len[p][v]);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    sl_engine_free(f->e);
    for (int p = 0; p < 8; p++)
        for (int v = 0; v < 2; v++) free(f->jpg[p][v]);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0) return -1;
    free(f);
    return 0;
}

static sl_status put(fixture *f, int p, const char *title, int nviews, sl_put_outcome *out) {
    char id[16], cat[16];
    snprintf(id, sizeof id, "P%d", p);
    snprintf(cat, sizeof cat, "cat%d", p % 3);
    sl_product prod = {0};
    prod.id = id;
    prod.title = (char *)title;
    prod.category = cat;
    prod.price = 10.0 * (p + 1);
    prod.has_price = 1;
    sl_image_input in[2] = {{NULL, f->jpg[p][0], f->len[p][0]}, {NULL, f->jpg[p][1], f->len[p][1]}};
    sl_error err;
    sl_status st = sl_engine_put_product(f->e, &prod, in, (size_t)nviews, out, &err);
    if (st != SL_OK) fprintf(stderr, "put: %s\n", err.message);
    return st;
}

static void test_put_get_search_delete(void **state) {
    fixture *f = *state;
    sl_put_outcome out;
    sl_error err;
    for (int p = 0; p < 6; p++) {
        assert_int_equal(put(f, p, "Thing", 2, &out), SL_OK);
        assert_int_equal(out, SL_PUT_ADDED);
    }
    assert_int_equal(put(f, 2, "Thing", 2, &out), SL_OK);
    assert_int_equal(out, SL_PUT_UNCHANGED);
    assert_int_equal(put(f, 2, "Renamed", 2, &out), SL_OK);
    assert_int_equal(out, SL_PUT_UPDATED);
    assert_int_equal(put(f, 2, "Renamed", 1, &out), SL_OK); /* one image dropped */
    assert_int_equal(out, SL_PUT_UPDATED);

    sl_product p;
    sl_image_ref *refs;
    size_t n;
    assert_int_equal(sl_engine_get_product(f->e, "P2", &p, &refs, &n, &err), SL_OK);
    assert_string_equal(p.title, "Renamed");
    assert_int_equal(n, 1);
    /* an upload is kept in the store, named by its content hash; it has no source */
    assert_true(refs[0].in_store);
    assert_non_null(strstr(refs[0].file, "/images/"));
    assert_string_equal(refs[0].source, "");
    int64_t img2 = refs[0].id;
    sl_product_clear(&p);
    sl_image_refs_free(refs, n);
    assert_int_equal(sl_engine_get_product(f->e, "NOPE", &p, NULL, NULL, &err), SL_E_NOT_FOUND);
    /* a new product needs an image */
    sl_product bare = {0};
    bare.id = (char *)"NEW";
    assert_int_equal(sl_engine_put_product(f->e, &bare, NULL, 0, &out, &err), SL_E_INVALID);

    /* search by bytes: the exact catalog image comes first */
    sl_query q = {0};
    q.k = 3;
    sl_matches m;
    assert_int_equal(sl_engine_search_bytes(f->e, f->jpg[4][1], f->len[4][1], &q, &m, &err), SL_OK);
    assert_true(m.n == 3);
    assert_string_equal(m.items[0].product_id, "P4");
    assert_true(m.items[0].score > 0.99);
    assert_true(m.items[0].has_price && m.items[0].price == 50.0);
    sl_matches_free(&m);
    /* filter inside the search: only cat1 (P1, P4) */
    q.k = 10;
    q.category = "cat1";
    assert_int_equal(sl_engine_search_bytes(f->e, f->jpg[0][0], f->len[0][0], &q, &m, &err), SL_OK);
    assert_int_equal(m.n, 2);
    for (size_t i = 0; i < m.n; i++) assert_string_equal(m.items[i].category, "cat1");
    sl_matches_free(&m);
    /* not an image */
    assert_int_not_equal(sl_engine_search_bytes(f->e, "hello", 5, NULL, &m, &err), SL_OK);

    /* similar excludes the product itself */
    q.category = NULL;
    q.k = 5;
    assert_int_equal(sl_engine_similar(f->e, "P1", &q, &m, &err), SL_OK);
    assert_int_equal(m.n, 5);
    for (size_t i = 0; i < m.n; i++) assert_string_not_equal(m.items[i].product_id, "P1");
    sl_matches_free(&m);

    /* thumbnail of a catalog image */
    void *jpg;
    size_t len;
    assert_int_equal(sl_engine_thumbnail(f->e, img2, 32, &jpg, &len, &err), SL_OK);
    assert_true(len > 100 && ((unsigned char *)jpg)[0] == 0xFF && ((unsigned char *)jpg)[1] == 0xD8);
    free(jpg);
    assert_int_equal(sl_engine_thumbnail(f->e, 99999, 32, &jpg, &len, &err), SL_E_NOT_FOUND);

    /* check and classify */
    sl_image *img = NULL;
    assert_int_equal(sl_image_load_buffer(f->jpg[5][0], f->len[5][0], NULL, &img, NULL, &err), SL_OK);
    sl_check_result cr;
    assert_int_equal(sl_engine_check(f->e, "P5", img, 0, &cr, &err), SL_OK);
    assert_true(cr.match && cr.score > 0.99);
    sl_check_result_free(&cr);
    sl_classification c;
    assert_int_equal(sl_engine_classify(f->e, img, 1, &c, &err), SL_OK);
    assert_string_equal(c.category, "cat2"); /* its own image is the nearest */
    assert_true(c.confidence > 0.999 && c.n_votes == 1);
    sl_classification_free(&c);
    sl_image_free(img);

    sl_engine_stats s;
    assert_int_equal(sl_engine_stats_get(f->e, &s, &err), SL_OK);
    assert_int_equal(s.products, 6);
    assert_int_equal(s.images, 11);
    assert_int_equal(s.indexed, 11);
    assert_true(s.images_bytes > 0);

    /* a second handle (another process) catches up with refresh */
    sl_engine *other;
    assert_int_equal(sl_engine_open(f->dir, NULL, &other, &err), SL_OK);
    assert_int_equal(sl_engine_delete_product(f->e, "P4", &err), SL_OK);
    assert_int_equal(sl_engine_delete_product(f->e, "P4", &err), SL_E_NOT_FOUND);
    assert_int_equal(sl_engine_refresh(other, &err), SL_OK);
    assert_int_equal(sl_engine_stats_get(other, &s, &err), SL_OK);
    assert_int_equal(s.indexed, 9);
    q.k = 10;
    assert_int_equal(sl_engine_search_bytes(other, f->jpg[4][1], f->len[4][1], &q, &m, &err), SL_OK);
    for (size_t i = 0; i < m.n; i++) assert_string_not_equal(m.items[i].product_id, "P4");
    sl_matches_free(&m);
    sl_engine_free(other);
}

/* Two handles writing to one store (two processes): a handle that missed the other's commit
 * must not record its index file as current, so a later open still finds everything. */
static void test_two_writers_index_file(void **state) {
    fixture *f = *state;
    sl_error err;
    sl_engine *b;
    assert_int_equal(sl_engine_open(f->dir, NULL, &b, &err), SL_OK);
    sl_put_outcome out;
    assert_int_equal(put(f, 3, "Changed by A", 2, &out), SL_OK); /* through handle A */
    assert_int_equal(put(f, 3, "Changed by A", 2, &out), SL_OK);
    sl_product prod = {0};
    prod.id = (char *)"FROM_B";
    prod.category = (char *)"b";
    sl_image_input in = {NULL, f->jpg[0][1], f->len[0][1]};
    assert_int_equal(sl_engine_put_product(b, &prod, &in, 1, &out, &err), SL_OK);
    sl_engine_free(b); /* B's index lacks A's change: it must not be taken as current */
    assert_int_equal(sl_engine_delete_product(f->e, "P0", &err), SL_OK); /* A stale too now */
    assert_int_equal(sl_engine_flush(f->e, &err), SL_OK);
    sl_engine *c;
    assert_int_equal(sl_engine_open(f->dir, NULL, &c, &err), SL_OK);
    sl_engine_stats s;
    assert_int_equal(sl_engine_stats_get(c, &s, &err), SL_OK);
    assert_int_equal(s.indexed, s.images);
    sl_query q = {0};
    q.k = 1;
    sl_matches m;
    assert_int_equal(sl_engine_search_bytes(c, f->jpg[0][1], f->len[0][1], &q, &m, &err), SL_OK);
    assert_int_equal(m.n, 1);
    assert_string_equal(m.items[0].product_id, "FROM_B");
    sl_matches_free(&m);
    sl_engine_free(c);
    /* A catches up */
    assert_int_equal(sl_engine_refresh(f->e, &err), SL_OK);
    assert_int_equal(sl_engine_stats_get(f->e, &s, &err), SL_OK);
    assert_int_equal(s.indexed, s.images);
}

typedef struct race {
    fixture *f;
    volatile int stop;
    int bad, searches;
} race;

static void *reader(void *arg) {
    race *r = arg;
    sl_error err;
    sl_query q = {0};
    q.k = 8;
    while (!r->stop) {
        sl_matches m;
        if (sl_engine_search_bytes(r->f->e, r->f->jpg[7][0], r->f->len[7][0], &q, &m, &err) != SL_OK) {
            r->bad++;
            continue;
        }
        /* every product returned is complete: its metadata is there and it has its images */
        for (size_t i = 0; i < m.n; i++) {
            if (!m.items[i].title || !m.items[i].image || !m.items[i].image[0]) r->bad++;
        }
        sl_matches_free(&m);
        r->searches++;
    }
    return NULL;
}

static void test_concurrent_search_and_writes(void **state) {
    fixture *f = *state;
    race r = {f, 0, 0, 0};
    pthread_t th[2];
    for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&th[i], NULL, reader, &r), 0);
    sl_put_outcome out;
    sl_error err;
    for (int round = 0; round < 4; round++) {
        for (int p = 6; p < 8; p++) assert_int_equal(put(f, p, round % 2 ? "Odd" : "Even", 2, &out), SL_OK);
        assert_int_equal(sl_engine_delete_product(f->e, "P6", &err), SL_OK);
    }
    r.stop = 1;
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    assert_int_equal(r.bad, 0);
    assert_true(r.searches > 0);
    assert_int_equal(sl_engine_flush(f->e, &err), SL_OK);
}

/* Local features with n keypoints whose first descriptor byte is `tag`. */
static sl_local_features *tagged_local(uint32_t n, uint8_t tag) {
    sl_local_features *lf = sl__local_alloc(n);
    assert_non_null(lf);
    memset(lf->kp, 0, sizeof(float) * 4 * n);
    memset(lf->desc, 0, (size_t)n * SL_SIFT_DESC_DIM);
    lf->desc[0] = tag;
    return lf;
}

static uint8_t tag_of(const sl__lref *r) { return sl__lref_features(r)->desc[0]; }

static void test_local_cache(void **state) {
    (void)state;
    /* room for about two entries of 100 keypoints (14.4 KB each + the matching kernel's form) */
    sl_local_features *probe = tagged_local(100, 0);
    size_t one = sl_local_features_bytes(probe) + 256;
    sl_local_features_free(probe);
    assert_true(one >= 14400);
    sl__lcache *c = sl__lcache_new(2 * one + one / 2);
    assert_non_null(c);
    assert_null(sl__lcache_get(c, 5, 1, 10));
    sl__lref *a = sl__lcache_put(c, 5, 1, 10, tagged_local(100, 10));
    assert_non_null(a);
    sl__lcache_release(c, a);
    sl__lref *h = sl__lcache_get(c, 5, 1, 10);
    assert_non_null(h);
    assert_int_equal(tag_of(h), 10);
    /* a second insert of the same id shares the cached entry (the new copy is dropped) */
    sl__lref *dup = sl__lcache_put(c, 5, 1, 10, tagged_local(100, 99));
    assert_ptr_equal(dup, h);
    sl__lcache_release(c, dup);
    /* two more entries overflow the budget: the least recently used one (10) goes, but the
     * reference still held keeps its features alive (ASan would flag a use after free) */
    sl__lcache_release(c, sl__lcache_put(c, 5, 1, 11, tagged_local(100, 11)));
    sl__lcache_release(c, sl__lcache_put(c, 5, 1, 12, tagged_local(100, 12)));
    assert_int_equal(tag_of(h), 10);
    sl__lcache_release(c, h);
    assert_null(sl__lcache_get(c, 5, 1, 10));
    sl__lref *b = sl__lcache_get(c, 5, 1, 12);
    assert_non_null(b);
    assert_int_equal(tag_of(b), 12);
    sl__lcache_release(c, b);
    sl__lcache_info info;
    sl__lcache_stats(c, &info);
    assert_true(info.bytes <= info.max_bytes);
    assert_int_equal(info.entries, 2);
    /* another store generation or features version empties the cache */
    assert_null(sl__lcache_get(c, 6, 1, 12));
    sl__lcache_release(c, sl__lcache_put(c, 6, 1, 12, tagged_local(100, 13)));
    b = sl__lcache_get(c, 6, 1, 12);
    assert_non_null(b);
    assert_int_equal(tag_of(b), 13);
    sl__lcache_release(c, b);
    assert_null(sl__lcache_get(c, 6, 2, 12));
    /* an engine behind another process (generation -1) never caches */
    sl__lref *u = sl__lcache_put(c, -1, 2, 14, tagged_local(100, 14));
    assert_non_null(u);
    assert_int_equal(tag_of(u), 14);
    sl__lcache_release(c, u);
    assert_null(sl__lcache_get(c, -1, 2, 14));
    sl__lcache_stats(c, &info);
    assert_int_equal(info.entries, 0);
    /* entries larger than the whole budget are served but not kept */
    u = sl__lcache_put(c, 6, 2, 15, tagged_local(400, 15));
    assert_int_equal(tag_of(u), 15);
    sl__lcache_release(c, u);
    assert_null(sl__lcache_get(c, 6, 2, 15));
    /* a budget of 0 turns it off */
    sl__lcache_set_max(c, 0);
    sl__lcache_release(c, sl__lcache_put(c, 6, 2, 16, tagged_local(10, 16)));
    assert_null(sl__lcache_get(c, 6, 2, 16));
    sl__lcache_free(c);
}

/* Verified searches on one engine from several threads while a writer commits (each commit
 * empties the verification cache under the searches' feet): every search still finds the
 * exact catalog image first with inliers, and the cache is used. */
typedef struct vrace {
    fixture *f;
    sl_engine *e;
    volatile int stop;
    int bad, searches;
} vrace;

static void *verified_reader(void *arg) {
    vrace *r = arg;
    sl_error err;
    sl_query q = {0};
    q.k = 3;
    while (!r->stop || r->searches < 4) {
        sl_matches m;
        if (sl_engine_search_bytes(r->e, r->f->jpg[1][0], r->f->len[1][0], &q, &m, &err) != SL_OK) {
            r->bad++;
            break;
        }
        if (m.n == 0 || strcmp(m.items[0].product_id, "P1") != 0 || m.items[0].inliers < 6) r->bad++;
        sl_matches_free(&m);
        r->searches++;
    }
    return NULL;
}

static void test_verified_search_cache_under_writes(void **state) {
    fixture *f = *state;
    char dir[64];
    snprintf(dir, sizeof dir, "/tmp/sl_test_engine_v_XXXXXX");
    assert_non_null(mkdtemp(dir));
    sl_engine_opts o = {0};
    o.create = 1;
    o.features = "color+verify";
    sl_error err;
    sl_engine *e = NULL;
    assert_int_equal(sl_engine_open(dir, &o, &e, &err), SL_OK);
    sl_engine *keep = f->e;
    f->e = e; /* put() writes to f->e */
    sl_put_outcome out;
    for (int p = 0; p < 4; p++) assert_int_equal(put(f, p, "Thing", 2, &out), SL_OK);
    vrace r[2];
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        r[i] = (vrace){f, e, 0, 0, 0};
        assert_int_equal(pthread_create(&th[i], NULL, verified_reader, &r[i]), 0);
    }
    for (int round = 0; round < 3; round++)
        for (int p = 4; p < 6; p++) assert_int_equal(put(f, p, round % 2 ? "Odd" : "Even", 2, &out), SL_OK);
    for (int i = 0; i < 2; i++) r[i].stop = 1;
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(r[i].bad, 0);
        assert_true(r[i].searches >= 4);
    }
    sl__lcache_info info;
    sl__lcache_stats(e->lcache, &info);
    assert_true(info.hits > 0);
    assert_true(info.entries > 0 && info.bytes <= info.max_bytes);
    /* the cache off: same answer */
    sl_engine_set_local_cache_mb(e, 0);
    sl_query q = {0};
    q.k = 3;
    sl_matches m;
    assert_int_equal(sl_engine_search_bytes(e, f->jpg[1][0], f->len[1][0], &q, &m, &err), SL_OK);
    assert_string_equal(m.items[0].product_id, "P1");
    assert_true(m.items[0].inliers >= 6);
    sl_matches_free(&m);
    sl__lcache_stats(e->lcache, &info);
    assert_int_equal(info.entries, 0);
    f->e = keep;
    sl_engine_free(e);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}


/* ---- calibrated confidence --------------------------------------------------------------- */

#define CAL_P 16      /* products */
#define CAL_SIDE 128

static void put_photo_product(sl_engine *e, uint32_t p) {
    sl_image *img = NULL;
    void *jpg = NULL;
    size_t len = 0;
    sl_error err;
    assert_int_equal(sl_sample_catalog_image(SEED, p, 0, CAL_SIDE, CAL_SIDE, &img, &err), SL_OK);
    assert_int_equal(sl_image_encode(img, "jpeg", 90, &jpg, &len, &err), SL_OK);
    sl_image_free(img);
    char id[16];
    snprintf(id, sizeof id, "C%02u", p);
    sl_product prod = {0};
    prod.id = id;
    prod.title = (char *)"Thing";
    sl_image_input in = {NULL, jpg, len};
    assert_int_equal(sl_engine_put_product(e, &prod, &in, 1, NULL, &err), SL_OK);
    free(jpg);
}

/* Checks shopper photos (variants 1..n) of every product against their own product and against
 * the next product; returns the accepted shares. */
static void accept_rates(sl_engine *e, int variants, double *tar, double *far) {
    size_t yes = 0, fa = 0, n = 0;
    for (uint32_t p = 0; p < CAL_P; p++)
        for (int v = 1; v <= variants; v++) {
            sl_image *img = NULL;
            assert_int_equal(sl_sample_shopper_photo(SEED, p, (uint32_t)v + 10, CAL_SIDE, CAL_SIDE, &img, NULL), SL_OK);
            char own[16], other[16];
            snprintf(own, sizeof own, "C%02u", p);
            snprintf(other, sizeof other, "C%02u", (p + 1 + (uint32_t)v) % CAL_P);
            const char *ids[2] = {own, other};
            sl_check_result r[2];
            sl_status sts[2];
            sl_error err;
            assert_int_equal(sl_engine_check_products(e, img, ids, 2, 0, r, sts, &err), SL_OK);
            for (int k = 0; k < 2; k++) {
                assert_int_equal(sts[k], SL_OK);
                assert_true(r[k].confidence >= 0 && r[k].confidence <= 1);
                assert_true(r[k].score >= -1 && r[k].score <= 1);
                assert_true(r[k].match == (r[k].confidence >= r[k].threshold));
            }
            yes += r[0].match != 0;
            fa += r[1].match != 0;
            sl_check_result_free(&r[0]);
            sl_check_result_free(&r[1]);
            n++;
            sl_image_free(img);
        }
    *tar = (double)yes / (double)n;
    *far = (double)fa / (double)n;
}

/* A new store in dir (a mkdtemp template) with the calibration tests' features. */
static sl_engine *open_calib_store(char *dir) {
    assert_non_null(mkdtemp(dir));
    sl_engine_opts o = {0};
    o.create = 1;
    o.features = "color+verify";
    sl_engine *e = NULL;
    sl_error err;
    assert_int_equal(sl_engine_open(dir, &o, &e, &err), SL_OK);
    return e;
}

static void test_calibrated_confidence(void **state) {
    (void)state;
    char dir[] = "/tmp/sl_test_calib_XXXXXX";
    sl_engine *e = open_calib_store(dir);
    sl_error err;
    sl_calib_info ci;
    for (uint32_t p = 0; p < CAL_P; p++) {
        put_photo_product(e, p);
        assert_int_equal(sl_engine_calibration(e, &ci, &err), SL_OK);
        /* the store calibrates itself from its catalog at the 5th product */
        assert_int_equal(ci.source, p + 1 < SL__ENGINE_CALIB_MIN_PRODUCTS ? SL_CALIB_NONE : SL_CALIB_CATALOG);
    }
    /* products added one by one do not refresh it; calibrate does, deterministically */
    assert_int_equal(ci.products, SL__ENGINE_CALIB_MIN_PRODUCTS);
    sl_calibrate_report rep, rep2;
    /* ... the same with any thread count (each shelf photo draws its neighbours from its
     * position and the seed) */
    sl_calibrate_opts one = {0}, three = {0};
    one.jobs = 1;
    three.jobs = 3;
    assert_int_equal(sl_engine_calibrate(e, &one, &rep, &err), SL_OK);
    assert_int_equal(sl_engine_calibrate(e, &three, &rep2, &err), SL_OK);
    assert_true(rep.augmented && rep.photos >= SL__ENGINE_CALIB_COPIES_MIN - 1 && rep.products == CAL_P);
    assert_int_equal(rep.info.products, CAL_P);
    assert_memory_equal(&rep.info, &rep2.info, sizeof rep.info);
    assert_true(rep2.features_version == rep.features_version + 1);
    sl_calibrate_report_free(&rep);
    sl_calibrate_report_free(&rep2);
    assert_int_equal(sl_engine_calibration(e, &ci, &err), SL_OK);
    assert_int_equal(ci.source, SL_CALIB_CATALOG);
    /* from pseudo shopper photos: the match score alone and the false accept rule for both maps */
    for (int u = 0; u < 2; u++) assert_true(ci.map[u].lambda == 0 && ci.map[u].precision_target == 0);
    /* genuine shopper photos are accepted far more often than photos of other products */
    double tar, far;
    accept_rates(e, 3, &tar, &far);
    print_message("catalog calibration: genuine accepted %.2f, other products %.2f\n", tar, far);
    assert_true(tar >= far + 0.4);
    assert_true(far <= 0.15);
    /* search: fields in range; match = confidence at the operating point */
    sl_image *img = NULL;
    assert_int_equal(sl_sample_shopper_photo(SEED, 3, 10, CAL_SIDE, CAL_SIDE, &img, NULL), SL_OK);
    sl_query q = {0};
    q.k = CAL_P;
    sl_matches m;
    assert_int_equal(sl_engine_search(e, img, &q, &m, &err), SL_OK);
    assert_int_equal(m.n, CAL_P);
    for (size_t i = 0; i < m.n; i++) {
        assert_true(m.items[i].score >= -1 && m.items[i].score <= 1);
        assert_true(m.items[i].confidence >= 0 && m.items[i].confidence <= 1);
        assert_true(m.items[i].match == (m.items[i].confidence >= ci.map[SL_CALIB_RESULT].confidence_threshold));
        if (i) assert_true(m.items[i].confidence <= m.items[i - 1].confidence + 1e-12); /* never reorders */
    }
    sl_matches_free(&m);
    sl_image_free(img);
    /* similar: scores stay in -1..1 (an exact duplicate verified scored above 1 before) */
    assert_int_equal(sl_engine_similar(e, "C03", &q, &m, &err), SL_OK);
    for (size_t i = 0; i < m.n; i++) assert_true(m.items[i].score <= 1 && m.items[i].confidence <= 1);
    sl_matches_free(&m);
    /* a photo of nothing in the catalog: no result is a match */
    sl_image *noise = sl_image_new(CAL_SIDE, CAL_SIDE, 3), *unrel = NULL;
    assert_non_null(noise);
    assert_int_equal(sl_image_noise(noise, 60, 5, &unrel, &err), SL_OK);
    assert_int_equal(sl_engine_search(e, unrel, &q, &m, &err), SL_OK);
    for (size_t i = 0; i < m.n; i++) assert_false(m.items[i].match);
    sl_matches_free(&m);
    sl_image_free(noise);
    sl_image_free(unrel);
    /* a confidence threshold out of range is refused */
    assert_int_equal(sl_sample_shopper_photo(SEED, 1, 1, CAL_SIDE, CAL_SIDE, &img, NULL), SL_OK);
    sl_check_result cr;
    assert_int_equal(sl_engine_check(e, "C01", img, 1.5, &cr, &err), SL_E_INVALID);
    assert_int_equal(sl_engine_check(e, "NOPE", img, 0, &cr, &err), SL_E_NOT_FOUND);
    sl_image_free(img);
    /* from labelled photos: the source says so */
    sl_train_photo ph[CAL_P * 3];
    char paths[CAL_P * 3][96], ids[CAL_P][16];
    for (uint32_t p = 0; p < CAL_P; p++) {
        snprintf(ids[p], sizeof ids[p], "C%02u", p);
        for (int v = 0; v < 3; v++) {
            size_t k = p * 3 + (size_t)v;
            snprintf(paths[k], sizeof paths[k], "%s/photo_%u_%d.jpg", dir, p, v);
            assert_int_equal(sl_sample_shopper_photo(SEED, p, (uint32_t)v + 1, CAL_SIDE, CAL_SIDE, &img, NULL), SL_OK);
            assert_int_equal(sl_image_save_file(img, paths[k], 90, &err), SL_OK);
            sl_image_free(img);
            ph[k].path = paths[k];
            ph[k].product_id = ids[p];
        }
    }
    sl_calibrate_opts co = {0};
    co.photos = ph;
    co.n_photos = CAL_P * 3;
    assert_int_equal(sl_engine_calibrate(e, &co, &rep, &err), SL_OK);
    assert_int_equal(rep.info.source, SL_CALIB_PHOTOS);
    assert_int_equal(rep.photos, CAL_P * 3);
    /* labelled photos on a store without a head: the margin is an input and search's point
     * follows the precision rule on the photos' first results */
    assert_true(rep.info.map[SL_CALIB_RESULT].precision_target == SL_CALIB_PRECISION_DEFAULT);
    assert_int_equal(rep.info.map[SL_CALIB_RESULT].tops, CAL_P * 3);
    assert_true(rep.info.map[SL_CALIB_PAIR].precision_target == 0);
    print_message("photo calibration: margin weight check %.2f search %.2f; search point precision %.2f recall %.2f\n",
                  rep.info.map[0].lambda, rep.info.map[1].lambda, rep.info.map[1].precision, rep.info.map[1].recall);
    sl_calibrate_report_free(&rep);
    accept_rates(e, 3, &tar, &far);
    print_message("photo calibration: genuine accepted %.2f, other products %.2f\n", tar, far);
    assert_true(tar >= far + 0.4);
    /* a search's confidence is the result map of the match score m (against the 10 best other
     * products) and the margin g (against the best other one), both from the result list */
    assert_int_equal(sl_engine_calibration(e, &ci, &err), SL_OK);
    for (uint32_t p = 0; p < CAL_P; p += 5) {
        assert_int_equal(sl_sample_shopper_photo(SEED, p, 21, CAL_SIDE, CAL_SIDE, &img, NULL), SL_OK);
        assert_int_equal(sl_engine_search(e, img, &q, &m, &err), SL_OK);
        assert_int_equal(m.n, CAL_P);
        const sl_calib_map_info *rm = &ci.map[SL_CALIB_RESULT];
        for (size_t i = 0; i < 3; i++) {
            double sum = 0, best = -9;
            int cnt = 0;
            for (size_t j = 0; j < m.n; j++) {
                if (j == i) continue;
                if (cnt < 10) sum += m.items[j].score, cnt++;
                if (m.items[j].score > best) best = m.items[j].score;
            }
            double mm = m.items[i].score - sum / cnt, g = m.items[i].score - best;
            double s = (1 - rm->lambda) * mm + rm->lambda * g, want = 1 / (1 + exp(-(rm->a * s + rm->b)));
            assert_true(fabs(m.items[i].confidence - want) < 1e-5);
        }
        sl_matches_free(&m);
        sl_image_free(img);
    }
    /* too few photos: refused, the calibration stays */
    co.n_photos = 5;
    assert_int_equal(sl_engine_calibrate(e, &co, &rep, &err), SL_E_INVALID);
    sl_calibrate_report_free(&rep);
    assert_int_equal(sl_engine_calibration(e, &ci, &err), SL_OK);
    assert_int_equal(ci.source, SL_CALIB_PHOTOS);
    /* another handle loads it with the features */
    sl_engine *e2 = NULL;
    sl_engine_opts ro = {0};
    ro.read_only = 1;
    assert_int_equal(sl_engine_open(dir, &ro, &e2, &err), SL_OK);
    sl_calib_info c2;
    assert_int_equal(sl_engine_calibration(e2, &c2, &err), SL_OK);
    assert_memory_equal(&ci, &c2, sizeof ci);
    sl_engine_free(e2);
    sl_engine_free(e);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* ---- train: the calibration comes from photos held out of a stand-in head -------------------- */

static void cancel_at_calibration(void *ctx, size_t done, size_t total, double seconds) {
    (void)done;
    (void)total;
    (void)seconds;
    *(volatile int *)ctx = 1;
}

static void test_train_heldout_calibration(void **state) {
    (void)state;
    /* the held-out photos: whole products (in a seeded order) until a quarter of the photos,
     * 30..1,000; none below 60 photos or with fewer than 2 products on a side */
    enum { BIG = 100000 };
    unsigned char *a = malloc(BIG), *b = malloc(BIG);
    uint32_t *cls = malloc(BIG * sizeof *cls);
    assert_true(a && b && cls);
    for (size_t i = 0; i < BIG; i++) cls[i] = (uint32_t)(i % 80); /* 80 products, interleaved */
    assert_int_equal(sl__train_holdout(cls, 59, 80, 1, a), 0);
    for (size_t i = 0; i < 59; i++) assert_int_equal(a[i], 0);
    assert_int_equal(sl__train_holdout(cls, 2640, 80, 1, a), 660); /* 20 products of 33 photos */
    size_t cnt = 0;
    for (size_t i = 0; i < 2640; i++) {
        cnt += a[i];
        if (i >= 80) assert_int_equal(a[i], a[i - 80]); /* a product is in or out as a whole */
    }
    assert_int_equal(cnt, 660);
    assert_int_equal(sl__train_holdout(cls, 2640, 80, 1, b), 660);
    assert_memory_equal(a, b, 2640); /* the same for a seed */
    assert_int_equal(sl__train_holdout(cls, 2640, 80, 2, b), 660);
    assert_true(memcmp(a, b, 2640) != 0); /* another seed, other products */
    for (size_t i = 0; i < BIG; i++) cls[i] = (uint32_t)(i % 800);
    assert_int_equal(sl__train_holdout(cls, BIG, 800, 1, a), SL__ENGINE_CALIB_PHOTOS_MAX); /* 8 of 125 */
    /* one product holds almost every photo: nothing to split */
    for (size_t i = 0; i < 100; i++) cls[i] = i < 97 ? 0 : (uint32_t)i;
    assert_int_equal(sl__train_holdout(cls, 100, 100, 1, a), 0);
    free(a);
    free(b);
    free(cls);

    /* a store of CAL_P products (calibrated from the catalog) and 5 labelled photos of each */
    char dir[] = "/tmp/sl_test_trainhold_XXXXXX";
    sl_engine *e = open_calib_store(dir);
    sl_error err;
    for (uint32_t p = 0; p < CAL_P; p++) put_photo_product(e, p);
    enum { PER = 5, NPH = CAL_P * PER };
    sl_train_photo ph[NPH];
    char paths[NPH][96], ids[CAL_P][16];
    float *vecs = malloc(NPH * sl_features_dim(e->feat) * sizeof(float));
    assert_non_null(vecs);
    size_t dim = sl_features_dim(e->feat);
    for (uint32_t p = 0; p < CAL_P; p++) {
        snprintf(ids[p], sizeof ids[p], "C%02u", p);
        for (int v = 0; v < PER; v++) {
            size_t k = p * PER + (size_t)v;
            sl_image *img = NULL;
            snprintf(paths[k], sizeof paths[k], "%s/photo_%u_%d.jpg", dir, p, v);
            assert_int_equal(sl_sample_shopper_photo(SEED, p, (uint32_t)v + 1, CAL_SIDE, CAL_SIDE, &img, NULL), SL_OK);
            assert_int_equal(sl_image_save_file(img, paths[k], 90, &err), SL_OK);
            sl_image_free(img);
            ph[k].path = paths[k];
            ph[k].product_id = ids[p];
            /* the descriptor train computes for it */
            sl_image_load_opts lo = {0};
            lo.max_side = e->max_side;
            assert_int_equal(sl_image_load_file(paths[k], &lo, &img, NULL, &err), SL_OK);
            assert_int_equal(sl_features_extract(e->feat, img, vecs + k * dim, NULL, &err), SL_OK);
            sl_image_free(img);
        }
    }
    int64_t v0 = e->features_version;
    sl_head_train_opts ho;
    sl_head_train_opts_init(&ho);
    ho.epochs = 3;
    ho.rank = 8;
    ho.lambda = 0.1f;
    sl_train_opts to = {0};
    to.photos = ph;
    to.n_photos = NPH;
    to.head = &ho;
    to.seed = 4;
    to.has_seed = 1;
    to.jobs = 1;
    /* interrupted while calibrating: nothing installed (the head waits for its calibration) */
    volatile int cancel = 0;
    to.cancel = &cancel;
    to.calib_progress = cancel_at_calibration;
    to.calib_progress_ctx = (void *)&cancel;
    sl_train_report rep;
    assert_int_equal(sl_engine_train(e, &to, &rep, &err), SL_E_INTERRUPTED);
    sl_train_report_free(&rep);
    assert_int_equal(e->features_version, v0);
    assert_null(sl_features_head(e->feat));
    sl_calib_info ci;
    assert_int_equal(sl_engine_calibration(e, &ci, &err), SL_OK);
    assert_int_equal(ci.source, SL_CALIB_CATALOG);
    /* trained: the final head and the held-out calibration in one new version */
    cancel = 0;
    to.calib_progress = NULL;
    assert_int_equal(sl_engine_train(e, &to, &rep, &err), SL_OK);
    assert_int_equal(rep.features_version, v0 + 1);
    assert_int_equal(e->features_version, v0 + 1);
    assert_int_equal(rep.photos, NPH);
    assert_int_equal(rep.calibration_heldout, 30);
    assert_null(rep.calibration_error);
    assert_int_equal(sl_engine_calibration(e, &ci, &err), SL_OK);
    assert_memory_equal(&ci, &rep.calibration, sizeof ci);
    assert_int_equal(ci.source, SL_CALIB_PHOTOS);
    assert_int_equal(ci.photos, 30);
    /* check's map from the 30 held-out photos; search's from all 80 through the final head (the
     * match score alone and the 2% rule: held-out products say nothing of its first results) */
    assert_int_equal(ci.map[SL_CALIB_PAIR].positives, 30);
    assert_int_equal(ci.map[SL_CALIB_RESULT].positives, NPH);
    assert_true(ci.map[SL_CALIB_RESULT].precision_target == 0 && ci.map[SL_CALIB_RESULT].lambda == 0);
    /* the installed head is the final one, trained on all photos: its photo-side mean is the
     * mean of all 80 descriptors (the stand-in's would be that of the other 50) */
    const sl_head *h = sl_features_head(e->feat);
    assert_non_null(h);
    float *q = malloc(dim * sizeof(float)), *want = malloc(dim * sizeof(float));
    assert_true(q && want);
    {
        double *mean = calloc(dim, sizeof *mean), *m2 = calloc(dim, sizeof *m2);
        assert_true(mean && m2);
        for (size_t k = 0; k < NPH; k++)
            for (size_t j = 0; j < dim; j++) mean[j] += vecs[k * dim + j];
        for (size_t j = 0; j < dim; j++) want[j] = (float)(mean[j] / NPH);
        /* the mean itself is mapped to zero by the query side (x - mean = 0) */
        assert_int_equal(sl_head_apply(h, SL_HEAD_QUERY, want, q, 1), SL_OK);
        double nz = 0;
        for (size_t j = 0; j < dim; j++) nz += fabs(q[j]);
        assert_true(nz < 1e-3);
        /* and the stand-in's mean is not: the mean of the photos not held out */
        unsigned char held[NPH];
        uint32_t pc[NPH];
        for (size_t k = 0; k < NPH; k++) pc[k] = (uint32_t)(k / PER);
        assert_int_equal(sl__train_holdout(pc, NPH, CAL_P, 4, held), 30);
        for (size_t k = 0; k < NPH; k++)
            if (!held[k])
                for (size_t j = 0; j < dim; j++) m2[j] += vecs[k * dim + j];
        for (size_t j = 0; j < dim; j++) want[j] = (float)(m2[j] / (NPH - 30));
        assert_int_equal(sl_head_apply(h, SL_HEAD_QUERY, want, q, 1), SL_OK);
        nz = 0;
        for (size_t j = 0; j < dim; j++) nz += fabs(q[j]);
        assert_true(nz > 0.1);
        free(mean);
        free(m2);
    }
    free(q);
    free(want);
    free(vecs);
    sl_train_report_free(&rep);
    /* the same for the seed whatever the jobs: another store trained with 3 jobs */
    void *h1 = NULL, *c1 = NULL;
    size_t hl1, cl1;
    assert_int_equal(sl_head_serialize(sl_features_head(e->feat), &h1, &hl1, &err), SL_OK);
    assert_int_equal(sl_calib_serialize(sl_features_calib(e->feat), &c1, &cl1, &err), SL_OK);
    sl_engine_free(e);
    char dir2[] = "/tmp/sl_test_trainhold2_XXXXXX";
    e = open_calib_store(dir2);
    for (uint32_t p = 0; p < CAL_P; p++) put_photo_product(e, p);
    to.jobs = 3;
    to.cancel = NULL;
    assert_int_equal(sl_engine_train(e, &to, &rep, &err), SL_OK);
    sl_train_report_free(&rep);
    void *h2 = NULL, *c2 = NULL;
    size_t hl2, cl2;
    assert_int_equal(sl_head_serialize(sl_features_head(e->feat), &h2, &hl2, &err), SL_OK);
    assert_int_equal(sl_calib_serialize(sl_features_calib(e->feat), &c2, &cl2, &err), SL_OK);
    assert_int_equal(hl1, hl2);
    assert_memory_equal(h1, h2, hl1);
    assert_int_equal(cl1, cl2);
    assert_memory_equal(c1, c2, cl1);
    free(h1);
    free(h2);
    free(c1);
    free(c2);
    sl_engine_free(e);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", dir, dir2);
    assert_int_equal(system(cmd), 0);
}

/* ---- check with references (the labelled photos train keeps) -------------------------------- */

/* Trains the store in dir on the photos ph (centring only: no map to learn them), with or without
 * keeping them as references, and returns the engine. */
static sl_engine *refs_store(char *dir, sl_train_photo *ph, size_t n, int no_references) {
    sl_engine *e = open_calib_store(dir);
    for (uint32_t p = 0; p < CAL_P; p++) put_photo_product(e, p);
    sl_head_train_opts ho;
    sl_head_train_opts_init(&ho);
    ho.epochs = 0;
    sl_train_opts to = {.photos = ph, .n_photos = n, .head = &ho, .jobs = 1, .no_references = no_references};
    sl_train_report rep;
    sl_error err;
    assert_int_equal(sl_engine_train(e, &to, &rep, &err), SL_OK);
    assert_int_equal(rep.references, no_references ? 0 : n);
    sl_train_report_free(&rep);
    return e;
}

/* Writes shopper photo v of product p of the generated shop `seed` to `path` and labels it. */
static void labelled_photo(sl_train_photo *ph, const char *path, uint32_t seed, uint32_t p, uint32_t v,
                           const char *product_id) {
    sl_image *img = NULL;
    sl_error err;
    assert_int_equal(sl_sample_shopper_photo(seed, p, v, CAL_SIDE, CAL_SIDE, &img, NULL), SL_OK);
    assert_int_equal(sl_image_save_file(img, path, 90, &err), SL_OK);
    sl_image_free(img);
    ph->path = path;
    ph->product_id = product_id;
}

/* A product whose catalog image is unlike a photo of it, with references like that photo: check
 * counts them (a higher score and confidence than on the same store trained without
 * references), on the scale search folds them on (check's score of a product is the score search
 * gives it), and a photo that is itself a reference is scored without it when asked to
 * (calibrations). */
static void test_check_references(void **state) {
    (void)state;
    char dir[] = "/tmp/sl_test_chkref_XXXXXX";
    assert_non_null(mkdtemp(dir));
    enum { PER = 3, ALIEN = 3, NPH = CAL_P * PER + ALIEN + 1 };
    sl_train_photo ph[NPH];
    char paths[NPH][96], ids[CAL_P][16];
    sl_error err;
    sl_image *img = NULL;
    for (uint32_t p = 0; p < CAL_P; p++) {
        snprintf(ids[p], sizeof ids[p], "C%02u", p);
        for (uint32_t v = 0; v < PER; v++) {
            size_t k = p * PER + v;
            snprintf(paths[k], sizeof paths[k], "%s/shop_%u_%u.jpg", dir, p, v);
            labelled_photo(&ph[k], paths[k], SEED, p, v + 1, ids[p]);
        }
    }
    /* C05's other photos: shopper photos of a product of another shop (nothing like C05's
     * catalog image), labelled C05 */
    for (uint32_t v = 0; v < ALIEN; v++) {
        size_t k = CAL_P * PER + v;
        snprintf(paths[k], sizeof paths[k], "%s/alien_%u.jpg", dir, v);
        labelled_photo(&ph[k], paths[k], SEED + 1000, 2, v + 1, ids[5]);
    }
    /* and one photo of a third shop's product labelled C07 */
    snprintf(paths[NPH - 1], sizeof paths[NPH - 1], "%s/lone.jpg", dir);
    labelled_photo(&ph[NPH - 1], paths[NPH - 1], SEED + 2000, 4, 1, ids[7]);
    char t1[96], t2[96]; /* open_calib_store's templates */
    snprintf(t1, sizeof t1, "%s/with_XXXXXX", dir);
    snprintf(t2, sizeof t2, "%s/without_XXXXXX", dir);
    sl_engine *e = refs_store(t1, ph, NPH, 0), *n = refs_store(t2, ph, NPH, 1);
    /* a photo of the other shop's product as one of the references shows it (so that its
     * references are among the first the query ranks, the ones search and check verify) */
    assert_int_equal(sl_sample_shopper_photo(SEED + 1000, 2, 1, CAL_SIDE, CAL_SIDE, &img, NULL), SL_OK);
    sl_check_result rw, rn;
    assert_int_equal(sl_engine_check(e, "C05", img, 0, &rw, &err), SL_OK);
    assert_int_equal(sl_engine_check(n, "C05", img, 0, &rn, &err), SL_OK);
    print_message("check of a photo like C05's references: score %.3f / %.3f, confidence %.3f / %.3f with / without\n",
                  rw.score, rn.score, rw.confidence, rn.confidence);
    assert_true(rw.score > rn.score + 0.05);
    assert_true(rw.confidence > rn.confidence);
    /* what check shows is a catalog image, never a reference */
    assert_true(rw.image_id > 0 && rw.image_id < SL_STORE_REF_ID_BASE);
    /* search gives C05 the same score (check scores references as the query's ranking did) */
    sl_query q = {0};
    q.k = CAL_P;
    sl_matches m;
    uint64_t v0 = sl_engine_verifications(e);
    assert_int_equal(sl_engine_search(e, img, &q, &m, &err), SL_OK);
    uint64_t v1 = sl_engine_verifications(e);
    /* all 16 catalog images and NPH references are among its first 100 candidates: every catalog
     * image is verified, only the first SL_ENGINE_VERIFY_REFS references */
    assert_int_equal(v1 - v0, CAL_P + SL_ENGINE_VERIFY_REFS);
    sl_check_result again;
    assert_int_equal(sl_engine_check(e, "C05", img, 0, &again, &err), SL_OK);
    /* check: that ranking, and C05's one catalog image; no reference verified again */
    assert_int_equal(sl_engine_verifications(e) - v1, CAL_P + SL_ENGINE_VERIFY_REFS + 1);
    assert_true(again.score == rw.score);
    sl_check_result_free(&again);
    int seen = 0;
    for (size_t i = 0; i < m.n; i++)
        if (strcmp(m.items[i].product_id, "C05") == 0) {
            seen = 1;
            assert_true(fabs(m.items[i].score - rw.score) < 1e-4);
        }
    assert_true(seen);
    /* the same store through an HNSW index (codes only): catalog images re-scored from the store,
     * references on their codes as the flat index scores them (sl_index_set_rescore_below), so
     * the same products with the same scores */
    assert_int_equal(sl_store_meta_set(e->store, "index_kind", "hnsw", &err), SL_OK); /* kept from create */
    sl_engine *h = NULL;
    assert_int_equal(sl_engine_open(t1, NULL, &h, &err), SL_OK);
    sl_engine_stats hs;
    assert_int_equal(sl_engine_stats_get(h, &hs, &err), SL_OK);
    assert_string_equal(hs.index_kind, "hnsw");
    sl_matches mh;
    assert_int_equal(sl_engine_search(h, img, &q, &mh, &err), SL_OK);
    assert_int_equal(mh.n, m.n);
    for (size_t i = 0; i < m.n; i++) {
        assert_string_equal(mh.items[i].product_id, m.items[i].product_id);
        assert_true(fabs(mh.items[i].score - m.items[i].score) < 1e-5);
    }
    sl_matches_free(&mh);
    sl_engine_free(h);
    sl_matches_free(&m);
    sl_check_result_free(&rw);
    sl_check_result_free(&rn);
    sl_image_free(img);
    /* the photo labelled C07 (its only reference like it): with its own reference left out (the
     * store's, found by its source) it scores far lower than with it */
    int64_t self = -1;
    assert_int_equal(sl_store_ref_of_source(e->store, "C07", paths[NPH - 1], &self, &err), SL_OK);
    assert_true(self >= SL_STORE_REF_ID_BASE);
    sl_image_load_opts lo = {0};
    lo.max_side = e->max_side;
    assert_int_equal(sl_image_load_file(paths[NPH - 1], &lo, &img, NULL, &err), SL_OK);
    size_t dim = sl_features_dim(e->feat);
    float *vec = malloc(dim * sizeof *vec);
    assert_non_null(vec);
    sl_local_features *lf = NULL;
    assert_int_equal(sl_features_extract(e->feat, img, vec, &lf, &err), SL_OK);
    assert_int_equal(sl_features_project(e->feat, SL_HEAD_QUERY, vec, vec, 1), SL_OK);
    double sc[2];
    for (int k = 0; k < 2; k++) {
        int64_t skip = k ? self : -1;
        sl__pscore *rank = NULL, ps;
        size_t nr = 0;
        sl__refscale scale;
        pthread_rwlock_rdlock(&e->lock);
        assert_int_equal(sl__engine_rank_check(e, vec, lf, 11, skip, &rank, &nr, &scale, &err), SL_OK);
        assert_true(scale.usable);
        assert_int_equal(sl__engine_product_score(e, "C07", vec, lf, &scale, skip, &ps, NULL, &err), SL_OK);
        pthread_rwlock_unlock(&e->lock);
        sc[k] = ps.score;
        sl__pscores_free(rank, nr);
    }
    print_message("the photo labelled C07: %.3f with itself as a reference, %.3f without\n", sc[0], sc[1]);
    assert_true(sc[0] > sc[1] + 0.02);
    free(vec);
    sl_local_features_free(lf);
    sl_image_free(img);
    sl_engine_free(e);
    sl_engine_free(n);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* Score of product `pid` in m (-2 when absent). */
static double score_of(const sl_matches *m, const char *pid) {
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->items[i].product_id, pid) == 0) return m->items[i].score;
    return -2;
}

/* A search finds the products of its reference candidates in memory (e->refmap), loaded for the
 * store's generation: after the same photos are kept again as references of another product (the
 * same number of references, new ids) the search follows them, and after that product is
 * deleted (its references with it) nothing stands for it. A map that kept the first references'
 * products fails both. */
static void test_ref_products_follow_the_store(void **state) {
    (void)state;
    char dir[] = "/tmp/sl_test_refmap_XXXXXX";
    assert_non_null(mkdtemp(dir));
    enum { PER = 2, ALIEN = 3, NPH = CAL_P * PER + ALIEN };
    sl_train_photo ph[NPH];
    char paths[NPH][96], ids[CAL_P][16];
    sl_error err;
    for (uint32_t p = 0; p < CAL_P; p++) {
        snprintf(ids[p], sizeof ids[p], "C%02u", p);
        for (uint32_t v = 0; v < PER; v++) {
            size_t k = p * PER + v;
            snprintf(paths[k], sizeof paths[k], "%s/shop_%u_%u.jpg", dir, p, v);
            labelled_photo(&ph[k], paths[k], SEED, p, v + 1, ids[p]);
        }
    }
    for (uint32_t v = 0; v < ALIEN; v++) { /* another shop's product, labelled C05 */
        size_t k = CAL_P * PER + v;
        snprintf(paths[k], sizeof paths[k], "%s/alien_%u.jpg", dir, v);
        labelled_photo(&ph[k], paths[k], SEED + 1000, 2, v + 1, ids[5]);
    }
    char t1[96];
    snprintf(t1, sizeof t1, "%s/store_XXXXXX", dir);
    sl_engine *e = refs_store(t1, ph, NPH, 0);
    sl_image *img = NULL;
    assert_int_equal(sl_sample_shopper_photo(SEED + 1000, 2, 1, CAL_SIDE, CAL_SIDE, &img, NULL), SL_OK);
    sl_query q = {0};
    q.k = CAL_P;
    sl_matches m0, m1, m2;
    assert_int_equal(sl_engine_search(e, img, &q, &m0, &err), SL_OK);
    /* the alien photos become references of C06 instead: as many references as before */
    for (uint32_t v = 0; v < ALIEN; v++) ph[CAL_P * PER + v].product_id = ids[6];
    sl_head_train_opts ho;
    sl_head_train_opts_init(&ho);
    ho.epochs = 0;
    sl_train_opts to = {.photos = ph, .n_photos = NPH, .head = &ho, .jobs = 1};
    sl_train_report rep;
    assert_int_equal(sl_engine_train(e, &to, &rep, &err), SL_OK);
    assert_int_equal(rep.references, NPH);
    sl_train_report_free(&rep);
    assert_int_equal(sl_engine_search(e, img, &q, &m1, &err), SL_OK);
    print_message("C05 / C06 with the alien photos as C05's references: %.3f / %.3f, as C06's: %.3f / %.3f\n",
                  score_of(&m0, "C05"), score_of(&m0, "C06"), score_of(&m1, "C05"), score_of(&m1, "C06"));
    assert_true(score_of(&m1, "C06") > score_of(&m0, "C06") + 0.05);
    assert_true(score_of(&m1, "C05") < score_of(&m0, "C05") - 0.05);
    /* C06 deleted, its references with it */
    assert_int_equal(sl_engine_delete_product(e, "C06", &err), SL_OK);
    assert_int_equal(sl_engine_search(e, img, &q, &m2, &err), SL_OK);
    assert_true(score_of(&m2, "C06") == -2);
    assert_true(fabs(score_of(&m2, "C05") - score_of(&m1, "C05")) < 0.05);
    sl_matches_free(&m0);
    sl_matches_free(&m1);
    sl_matches_free(&m2);
    sl_image_free(img);
    sl_engine_free(e);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* The references' fold groups candidates by product wherever they stand in the list: a product's
 * catalog candidates take the mean with its best reference on the catalog's scale, the other
 * references drop out, a reference of a product with no catalog candidate stands for it with the
 * lowest catalog score; the cohorts hold each product's best, once. Here both cohorts' spreads
 * are equal (deviations 0.3, -0.1, -0.2 and 0.2, 0.1, -0.3 around 0.6), so a reference's score
 * maps onto itself: the fold is the plain mean. */
static void test_ref_fold_groups_by_product(void **state) {
    (void)state;
    const int64_t R = SL_STORE_REF_ID_BASE;
    sl__cand c[8] = {
        {1, 0.9, -1, 0, 0},     /* A */
        {2, 0.5, -1, 0, 0},     /* B */
        {R + 1, 0.8, -1, 0, 0}, /* A's reference */
        {3, 0.4, -1, 0, 0},     /* C, no reference */
        {R + 2, 0.3, -1, 0, 0}, /* B's reference */
        {4, 0.6, -1, 0, 0},     /* A again */
        {R + 3, 0.7, -1, 0, 0}, /* D's reference, no catalog candidate of D */
        {5, 0.95, -1, 0, 0},    /* a product removed meanwhile */
    };
    char a[] = "A", a2[] = "A", b[] = "B", b2[] = "B", cc[] = "C", d[] = "D";
    char *prod[8] = {a, b, a2, cc, b2, a, d, NULL};
    sl_error err;
    sl_ref_fold_part part;
    memset(&part, 0, sizeof part);
    sl__cand before[8];
    memcpy(before, c, sizeof c);
    assert_int_equal(sl__refs_on_catalog_scale(c, 8, prod, NULL, &part, NULL, &err), SL_OK);
    assert_memory_equal(c, before, sizeof c); /* a part changes nothing */
    double want_cat[3] = {0.9, 0.5, 0.4}, want_ref[3] = {0.8, 0.7, 0.3};
    assert_int_equal(part.n[0], 3);
    assert_int_equal(part.n[1], 3);
    assert_memory_equal(part.best[0], want_cat, sizeof want_cat);
    assert_memory_equal(part.best[1], want_ref, sizeof want_ref);
    assert_true(part.lowest == 0.4);
    sl_ref_fold_part_clear(&part);
    sl__refscale scale;
    assert_int_equal(sl__refs_on_catalog_scale(c, 8, prod, NULL, NULL, &scale, &err), SL_OK);
    assert_true(scale.usable);
    assert_true(fabs(scale.sd[0] - scale.sd[1]) < 1e-12 && fabs(scale.mean[0] - 0.6) < 1e-12);
    double want[8] = {0.85, 0.4, -INFINITY, 0.4, -INFINITY, 0.7, 0.55, 0.95};
    for (size_t i = 0; i < 8; i++)
        if (isinf(want[i]) ? c[i].score != want[i] : fabs(c[i].score - want[i]) > 1e-9)
            fail_msg("candidate %zu: %.17g, expected %.17g", i, c[i].score, want[i]);
}

/* ---- search regions ----------------------------------------------------------------------- */

/* JPEG of two catalog views side by side (upright: product a left, b right), scaled by `scale`,
 * stored turned a quarter counter-clockwise with EXIF orientation 6 when `exif`. */
static void two_products(uint32_t a, uint32_t b, int scale, int exif, void **jpg, size_t *len) {
    sl_image *ia = NULL, *ib = NULL;
    sl_error err;
    assert_int_equal(sl_sample_catalog_image(SEED, a, 0, SIDE, SIDE, &ia, &err), SL_OK);
    assert_int_equal(sl_sample_catalog_image(SEED, b, 0, SIDE, SIDE, &ib, &err), SL_OK);
    sl_image *both = sl_image_new(2 * SIDE, SIDE, 3);
    assert_non_null(both);
    for (int y = 0; y < SIDE; y++) {
        memcpy(sl_image_pixels(both) + (size_t)y * sl_image_stride(both), sl_image_cpixels(ia) + (size_t)y * sl_image_stride(ia), SIDE * 3);
        memcpy(sl_image_pixels(both) + (size_t)y * sl_image_stride(both) + SIDE * 3, sl_image_cpixels(ib) + (size_t)y * sl_image_stride(ib), SIDE * 3);
    }
    VipsImage *v = vips_image_new_from_memory_copy(sl_image_cpixels(both), sl_image_stride(both) * SIDE, 2 * SIDE, SIDE, 3,
                                                   VIPS_FORMAT_UCHAR), *t = NULL;
    v->Type = VIPS_INTERPRETATION_sRGB;
    if (scale > 1) {
        assert_int_equal(vips_resize(v, &t, (double)scale, "kernel", VIPS_KERNEL_NEAREST, NULL), 0);
        g_object_unref(v);
        v = t;
    }
    if (exif) {
        assert_int_equal(vips_rot(v, &t, VIPS_ANGLE_D270, NULL), 0);
        g_object_unref(v);
        v = t;
        vips_image_set_int(v, VIPS_META_ORIENTATION, 6);
    }
    assert_int_equal(vips_jpegsave_buffer(v, jpg, len, "Q", 92, NULL), 0);
    g_object_unref(v);
    sl_image_free(ia);
    sl_image_free(ib);
    sl_image_free(both);
}

static const char *top_of_region(fixture *f, const void *jpg, size_t len, const char *region, sl_matches *m) {
    sl_query q = {0};
    q.k = 3;
    sl_error err;
    assert_int_equal(sl_engine_parse_region(region, &q, &err), SL_OK);
    sl_status st = sl_engine_search_bytes(f->e, jpg, len, &q, m, &err);
    if (st != SL_OK) fprintf(stderr, "region %s: %s\n", region, err.message);
    assert_int_equal(st, SL_OK);
    assert_true(m->n > 0);
    return m->items[0].product_id;
}

/* A photo of two products: the region picks which one is searched, in pixels of the upright
 * photo whatever its size or EXIF orientation; bad regions are refused with the image size. */
static void test_search_region(void **state) {
    fixture *f = *state;
    sl_put_outcome out;
    for (int p = 0; p < 6; p++) assert_int_equal(put(f, p, "Thing", 1, &out), SL_OK);
    static const struct { int scale, exif; } kinds[] = { { 1, 0 }, { 1, 1 }, { 10, 0 }, { 10, 1 } };
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        void *jpg = NULL;
        size_t len = 0;
        two_products(1, 4, kinds[k].scale, kinds[k].exif, &jpg, &len);
        int s = SIDE * kinds[k].scale;
        char left[64], right[64], mid[64];
        snprintf(left, sizeof left, "0,0,%d,%d", s, s);
        snprintf(right, sizeof right, "%d,0,%d,%d", s, s, s);
        snprintf(mid, sizeof mid, "%d,%d,%d,%d", s + s / 8, s / 8, s * 3 / 4, s * 3 / 4); /* inside b */
        sl_matches m;
        assert_string_equal(top_of_region(f, jpg, len, left, &m), "P1");
        sl_matches_free(&m);
        assert_string_equal(top_of_region(f, jpg, len, right, &m), "P4");
        sl_matches_free(&m);
        assert_string_equal(top_of_region(f, jpg, len, mid, &m), "P4");
        sl_matches_free(&m);
        /* outside the upright image (which is 2s x s, also when stored s x 2s) */
        sl_query q = {0};
        sl_error err;
        char bad[64], dims[32];
        snprintf(bad, sizeof bad, "%d,0,%d,%d", s, s + 1, s);
        assert_int_equal(sl_engine_parse_region(bad, &q, &err), SL_OK);
        assert_int_equal(sl_engine_search_bytes(f->e, jpg, len, &q, &m, &err), SL_E_INVALID);
        snprintf(dims, sizeof dims, "%dx%d image", 2 * s, s);
        assert_non_null(strstr(err.message, dims));
        assert_int_equal(sl_engine_parse_region("0,0,15,40", &q, &err), SL_OK);
        assert_int_equal(sl_engine_search_bytes(f->e, jpg, len, &q, &m, &err), SL_E_INVALID);
        assert_non_null(strstr(err.message, "too small"));
        g_free(jpg);
    }
    /* a decoded image: the region is in its pixels */
    void *jpg = NULL;
    size_t len = 0;
    two_products(1, 4, 1, 0, &jpg, &len);
    sl_image *img = NULL;
    sl_error err;
    assert_int_equal(sl_image_load_buffer(jpg, len, NULL, &img, NULL, &err), SL_OK);
    sl_query q = {0};
    q.k = 3;
    assert_int_equal(sl_engine_parse_region("96,0,96,96", &q, &err), SL_OK);
    sl_matches m;
    assert_int_equal(sl_engine_search(f->e, img, &q, &m, &err), SL_OK);
    assert_string_equal(m.items[0].product_id, "P4");
    sl_matches_free(&m);
    q.region_x = 100; /* 100 + 96 > 192 */
    assert_int_equal(sl_engine_search(f->e, img, &q, &m, &err), SL_E_INVALID);
    sl_image_free(img);
    g_free(jpg);
}

static void test_parse_region(void **state) {
    (void)state;
    sl_query q = {0};
    sl_error err;
    assert_int_equal(sl_engine_parse_region("1,2,30,40", &q, &err), SL_OK);
    assert_true(q.region_x == 1 && q.region_y == 2 && q.region_w == 30 && q.region_h == 40);
    assert_int_equal(sl_engine_parse_region("0,0,1000000,1", &q, &err), SL_OK);
    static const char *bad[] = { "", "1,2,3", "1,2,3,4,5", "-1,0,5,5", "1, 2,3,4", "a,b,c,d", "0,0,0,5",
                                 "0,0,5,0", "1,2,3,4x", "2000000,0,1,1", "1,2,3,99999999999999999999", ",1,2,3",
                                 "1,,2,3", "+1,2,3,4", " 1,2,3,4" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        q.region_w = 7;
        assert_int_equal(sl_engine_parse_region(bad[i], &q, &err), SL_E_INVALID);
        assert_int_equal(q.region_w, 7); /* unchanged */
        assert_non_null(strstr(err.message, "region"));
    }
    assert_int_equal(sl_engine_parse_region(NULL, &q, &err), SL_E_INVALID);
}

/* ---- the store owns its images ------------------------------------------------------------- */

static void write_bytes(const char *path, const void *data, size_t len) {
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, len, fp), len);
    fclose(fp);
}

static int exists(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (fp) fclose(fp);
    return fp != NULL;
}

static void test_store_owns_images(void **state) {
    fixture *f = *state;
    sl_error err;
    /* a big original (1500 x 1100) given by path, and a small one (96 px) given by bytes */
    sl_image *big = NULL;
    assert_int_equal(sl_sample_catalog_image(SEED, 7, 0, 1500, 1100, &big, &err), SL_OK);
    void *bjpg = NULL;
    size_t blen = 0;
    assert_int_equal(sl_image_encode(big, "jpeg", 95, &bjpg, &blen, &err), SL_OK);
    sl_image_free(big);
    char feed[128];
    snprintf(feed, sizeof feed, "%s/feed-big.jpg", f->dir);
    write_bytes(feed, bjpg, blen);
    sl_product prod = {0};
    prod.id = (char *)"OWN";
    prod.title = (char *)"Owned";
    sl_image_input in[2] = {{feed, NULL, 0}, {NULL, f->jpg[6][0], f->len[6][0]}};
    sl_put_outcome out;
    assert_int_equal(sl_engine_put_product(f->e, &prod, in, 2, &out, &err), SL_OK);
    sl_product p;
    sl_image_ref *refs;
    size_t n;
    assert_int_equal(sl_engine_get_product(f->e, "OWN", &p, &refs, &n, &err), SL_OK);
    assert_int_equal(n, 2);
    for (size_t i = 0; i < n; i++) assert_true(refs[i].in_store);
    assert_non_null(strstr(refs[0].source, "feed-big.jpg")); /* where it came from */
    /* the big one: a JPEG at the copy size; the small one: its bytes as given */
    sl_image *copy = NULL;
    sl_image_info info;
    assert_int_equal(sl_image_load_file(refs[0].file, NULL, &copy, &info, &err), SL_OK);
    assert_string_equal(info.format, "jpeg");
    assert_int_equal(info.width > info.height ? info.width : info.height, SL_ENGINE_COPY_MAX_SIDE);
    sl_image_free(copy);
    FILE *fp = fopen(refs[1].file, "rb");
    assert_non_null(fp);
    char *small = malloc(f->len[6][0] + 1);
    assert_int_equal(fread(small, 1, f->len[6][0] + 1, fp), f->len[6][0]);
    fclose(fp);
    assert_memory_equal(small, f->jpg[6][0], f->len[6][0]);
    free(small);
    char big_copy[512], small_copy[512];
    snprintf(big_copy, sizeof big_copy, "%s", refs[0].file);
    snprintf(small_copy, sizeof small_copy, "%s", refs[1].file);
    int64_t big_id = refs[0].id;
    sl_product_clear(&p);
    sl_image_refs_free(refs, n);
    /* the original goes away: thumbnails and checks still work, from the store's copy */
    assert_int_equal(remove(feed), 0);
    void *thumb = NULL;
    size_t tlen = 0;
    assert_int_equal(sl_engine_thumbnail(f->e, big_id, 64, &thumb, &tlen, &err), SL_OK);
    free(thumb);
    /* putting the same bytes again, or the copy itself (an export), changes nothing */
    sl_image_input again[2] = {{big_copy, NULL, 0}, {small_copy, NULL, 0}};
    assert_int_equal(sl_engine_put_product(f->e, &prod, again, 2, &out, &err), SL_OK);
    assert_int_equal(out, SL_PUT_UNCHANGED);
    /* another product shares the small image; replacing OWN's images deletes only the big copy */
    prod.id = (char *)"SHARE";
    assert_int_equal(sl_engine_put_product(f->e, &prod, &in[1], 1, &out, &err), SL_OK);
    prod.id = (char *)"OWN";
    sl_image_input other[1] = {{NULL, f->jpg[7][1], f->len[7][1]}};
    assert_int_equal(sl_engine_put_product(f->e, &prod, other, 1, &out, &err), SL_OK);
    assert_int_equal(out, SL_PUT_UPDATED);
    assert_false(exists(big_copy));
    assert_true(exists(small_copy));
    assert_int_equal(sl_engine_thumbnail(f->e, big_id, 64, &thumb, &tlen, &err), SL_E_NOT_FOUND);
    /* deleting the last user of a file deletes it */
    assert_int_equal(sl_engine_delete_product(f->e, "SHARE", &err), SL_OK);
    assert_false(exists(small_copy)); /* OWN has view 7/1 only now */
    assert_int_equal(sl_engine_get_product(f->e, "OWN", &p, &refs, &n, &err), SL_OK);
    assert_int_equal(n, 1);
    char own_copy[512];
    snprintf(own_copy, sizeof own_copy, "%s", refs[0].file);
    sl_product_clear(&p);
    sl_image_refs_free(refs, n);
    assert_int_equal(sl_engine_delete_product(f->e, "OWN", &err), SL_OK);
    assert_false(exists(own_copy));
    free(bjpg);
}

/* A copy that a deleter removed between its write and the commit of its row is written again
 * inside the transaction (the deleter holds the same write lock). */
static void test_commit_restores_removed_copy(void **state) {
    fixture *f = *state;
    sl_error err;
    sl_image *img = NULL;
    sl_image_info info;
    assert_int_equal(sl__engine_decode(f->e, f->jpg[5][1], f->len[5][1], &img, &info, &err), SL_OK);
    sl__described d;
    memset(&d, 0, sizeof d);
    sl__sha256_buffer(f->jpg[5][1], f->len[5][1], d.hash);
    d.size = (int64_t)f->len[5][1];
    assert_int_equal(sl__engine_describe(f->e, img, &d.vec, &d.local, &d.local_len, &err), SL_OK);
    sl_image_free(img);
    assert_int_equal(sl__engine_keep_copy(f->e, f->jpg[5][1], f->len[5][1], &info, d.file, &err), SL_OK);
    d.copy = f->jpg[5][1];
    d.copy_len = f->len[5][1];
    char path[512];
    snprintf(path, sizeof path, "%s/%s", f->dir, d.file);
    assert_true(exists(path));
    assert_int_equal(remove(path), 0); /* the deleter's move */
    sl_product prod = {0};
    prod.id = (char *)"RACE";
    const char *src[1] = {""};
    pthread_mutex_lock(&f->e->wmu);
    sl_status st = sl__engine_commit_product(f->e, &prod, src, &d, 1, 0, &err);
    pthread_mutex_unlock(&f->e->wmu);
    assert_int_equal(st, SL_OK);
    assert_true(exists(path));
    sl__described_clear(&d);
    void *thumb = NULL;
    size_t tlen = 0;
    sl_image_ref *refs;
    size_t n;
    sl_product p;
    assert_int_equal(sl_engine_get_product(f->e, "RACE", &p, &refs, &n, &err), SL_OK);
    assert_int_equal(sl_engine_thumbnail(f->e, refs[0].id, 32, &thumb, &tlen, &err), SL_OK);
    free(thumb);
    sl_product_clear(&p);
    sl_image_refs_free(refs, n);
    assert_int_equal(sl_engine_delete_product(f->e, "RACE", &err), SL_OK);
}

/* ---- PATCH: partial updates ---------------------------------------------------------------- */

static void test_patch_product(void **state) {
    fixture *f = *state;
    sl_error err;
    sl_put_outcome out;
    sl_product prod = {0};
    prod.id = (char *)"PT";
    prod.title = (char *)"Lamp";
    prod.category = (char *)"lamps";
    prod.description = (char *)"A lamp";
    prod.url = (char *)"https://shop.example/pt";
    prod.attrs_json = (char *)"{\"colour\":\"red\"}";
    prod.price = 20;
    prod.has_price = 1;
    sl_image_input in[1] = {{NULL, f->jpg[1][0], f->len[1][0]}};
    assert_int_equal(sl_engine_put_product(f->e, &prod, in, 1, &out, &err), SL_OK);
    const char *patch = "{\"price\": 2, \"currency\": \"EUR\", \"attrs\": {\"size\": \"L\"}}";
    assert_int_equal(sl_engine_patch_product(f->e, "PT", patch, strlen(patch), NULL, 0, &out, &err), SL_OK);
    assert_int_equal(out, SL_PUT_UPDATED);
    sl_product p;
    sl_image_ref *refs;
    size_t n;
    assert_int_equal(sl_engine_get_product(f->e, "PT", &p, &refs, &n, &err), SL_OK);
    assert_string_equal(p.title, "Lamp"); /* everything not named stays */
    assert_string_equal(p.category, "lamps");
    assert_string_equal(p.description, "A lamp");
    assert_string_equal(p.url, "https://shop.example/pt");
    assert_string_equal(p.currency, "EUR");
    assert_float_equal(p.price, 2, 0);
    assert_string_equal(p.attrs_json, "{\"colour\":\"red\",\"size\":\"L\"}");
    assert_int_equal(n, 1);
    int64_t first = refs[0].id;
    sl_product_clear(&p);
    sl_image_refs_free(refs, n);
    /* the same patch again: unchanged; images given: they replace the old ones */
    assert_int_equal(sl_engine_patch_product(f->e, "PT", patch, strlen(patch), NULL, 0, &out, &err), SL_OK);
    assert_int_equal(out, SL_PUT_UNCHANGED);
    sl_image_input two[2] = {{NULL, f->jpg[2][0], f->len[2][0]}, {NULL, f->jpg[2][1], f->len[2][1]}};
    assert_int_equal(sl_engine_patch_product(f->e, "PT", NULL, 0, two, 2, &out, &err), SL_OK);
    assert_int_equal(sl_engine_get_product(f->e, "PT", &p, &refs, &n, &err), SL_OK);
    assert_int_equal(n, 2);
    assert_true(refs[0].id != first && refs[1].id != first);
    assert_string_equal(p.title, "Lamp");
    sl_product_clear(&p);
    sl_image_refs_free(refs, n);
    /* errors: unknown product, bad field (nothing changes) */
    assert_int_equal(sl_engine_patch_product(f->e, "NOPE", patch, strlen(patch), NULL, 0, &out, &err), SL_E_NOT_FOUND);
    const char *bad = "{\"price\": -1}";
    assert_int_equal(sl_engine_patch_product(f->e, "PT", bad, strlen(bad), NULL, 0, &out, &err), SL_E_INVALID);
    assert_non_null(strstr(err.message, "0..1000000000000"));
    assert_int_equal(sl_engine_get_product(f->e, "PT", &p, NULL, NULL, &err), SL_OK);
    assert_float_equal(p.price, 2, 0);
    sl_product_clear(&p);
    assert_int_equal(sl_engine_delete_product(f->e, "PT", &err), SL_OK);
}

/* ---- paging: offset, url and currency in results --------------------------------------------- */

static void test_search_offset(void **state) {
    fixture *f = *state;
    sl_put_outcome out;
    sl_error err;
    for (int p = 0; p < 8; p++) assert_int_equal(put(f, p, "Thing", 2, &out), SL_OK);
    sl_query q = {0};
    q.k = 6;
    sl_matches all, page;
    assert_int_equal(sl_engine_search_bytes(f->e, f->jpg[3][0], f->len[3][0], &q, &all, &err), SL_OK);
    assert_int_equal(all.n, 6);
    q.k = 3;
    q.offset = 3;
    assert_int_equal(sl_engine_search_bytes(f->e, f->jpg[3][0], f->len[3][0], &q, &page, &err), SL_OK);
    assert_int_equal(page.n, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_string_equal(page.items[i].product_id, all.items[3 + i].product_id);
        assert_true(page.items[i].score == all.items[3 + i].score);
        assert_non_null(page.items[i].url);
        assert_non_null(page.items[i].currency);
    }
    sl_matches_free(&page);
    sl_matches_free(&all);
    q.offset = 7; /* past the end of 8 products: what is left */
    assert_int_equal(sl_engine_search_bytes(f->e, f->jpg[3][0], f->len[3][0], &q, &page, &err), SL_OK);
    assert_int_equal(page.n, 1);
    sl_matches_free(&page);
    q.k = 10;
    q.offset = SL_ENGINE_RANK_MAX - 5;
    assert_int_equal(sl_engine_search_bytes(f->e, f->jpg[3][0], f->len[3][0], &q, &page, &err), SL_E_INVALID);
    assert_non_null(strstr(err.message, "1000"));
    q.offset = -1;
    assert_int_equal(sl_engine_similar(f->e, "P1", &q, &page, &err), SL_E_INVALID);
}

/* ---- scale: HNSW store, catch-up, described products, nearest, local features on demand --- */

/* A new store of `features` and index `kind` in a fresh temporary directory. */
static sl_engine *open_new(char dir[64], const char *features, const char *kind) {
    snprintf(dir, 64, "/tmp/sl_test_engine_s_XXXXXX");
    assert_non_null(mkdtemp(dir));
    sl_engine_opts o = {0};
    o.create = 1;
    o.features = features;
    o.index_kind = kind;
    sl_error err;
    sl_engine *e = NULL;
    assert_int_equal(sl_engine_open(dir, &o, &e, &err), SL_OK);
    return e;
}

static void remove_dir(const char *dir) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* Products P0..P(n-1) (two views each) into e, through put() of a fixture view. */
static void fill(fixture *f, sl_engine *e, int n) {
    sl_engine *keep = f->e;
    f->e = e;
    sl_put_outcome out;
    for (int p = 0; p < n; p++) assert_int_equal(put(f, p, "Thing", 2, &out), SL_OK);
    f->e = keep;
}

/* The k best images for vec by brute force over the stored vectors (cosine), ids best first,
 * restricted to category `cat` when given. */
typedef struct brute { const float *q; size_t dim; sl_store *s; const char *cat; sl_image_hit best[32]; size_t n, k; } brute;
static sl_status brute_one(void *ctx, int64_t id, const float *v, size_t dim) {
    brute *b = ctx;
    assert_int_equal(dim, b->dim);
    if (b->cat) {
        char **prod = NULL;
        sl_product p = {0};
        assert_int_equal(sl_store_image_products(b->s, &id, 1, &prod, NULL), SL_OK);
        assert_int_equal(sl_store_get_product(b->s, prod[0], &p, NULL), SL_OK);
        int keep = strcmp(p.category, b->cat) == 0;
        sl_product_clear(&p);
        sl_strings_free(prod, 1);
        if (!keep) return SL_OK;
    }
    double dot = 0, qn = 0;
    for (size_t j = 0; j < dim; j++) {
        dot += (double)b->q[j] * v[j];
        qn += (double)b->q[j] * b->q[j];
    }
    sl_image_hit h = {id, dot / sqrt(qn)};
    size_t i = b->n < b->k ? b->n++ : b->k;
    while (i > 0 && b->best[i - 1].score < h.score) {
        if (i < b->k) b->best[i] = b->best[i - 1];
        i--;
    }
    if (i < b->k) b->best[i] = h;
    return SL_OK;
}

/* The candidate stage on an HNSW store (int8 codes only, re-scored from the store's float32
 * vectors) returns exactly what brute force over the stored vectors returns, ids and scores,
 * with and without a filter; searches of the HNSW store and of a flat store with the same
 * products agree. */
static void test_hnsw_store_exact_candidates(void **state) {
    fixture *f = *state;
    char dh[64], dfl[64];
    sl_engine *h = open_new(dh, "color", "hnsw"), *fl = open_new(dfl, "color", "flat");
    fill(f, h, 8);
    fill(f, fl, 8);
    sl_engine_stats st;
    sl_error err;
    assert_int_equal(sl_engine_stats_get(h, &st, &err), SL_OK);
    assert_string_equal(st.index_kind, "hnsw");
    assert_int_equal(st.indexed, 16);
    for (int p = 0; p < 8; p++) {
        sl_image *img = NULL;
        assert_int_equal(sl_image_load_buffer(f->jpg[p][1], f->len[p][1], NULL, &img, NULL, &err), SL_OK);
        float *vec = NULL;
        size_t dim = 0;
        int64_t fv = -1;
        assert_int_equal(sl_engine_describe(h, img, &vec, &dim, NULL, NULL, &fv, &err), SL_OK);
        assert_int_equal(fv, sl_engine_features_version(h)); /* 1 or more: the store calibrated itself */
        for (int filt = 0; filt < 2; filt++) {
            sl_query q = {0};
            q.category = filt ? "cat1" : NULL;
            brute b = {vec, dim, sl_engine_store(h), q.category, {{0, 0}}, 0, 5};
            assert_int_equal(sl_store_each_vector(sl_engine_store(h), brute_one, &b, &err), SL_OK);
            sl_image_hit hits[5];
            size_t n = 0;
            assert_int_equal(sl_engine_nearest(h, vec, dim, &q, 5, hits, &n, &err), SL_OK);
            assert_int_equal(n, b.n);
            for (size_t i = 0; i < n; i++) {
                assert_int_equal(hits[i].image_id, b.best[i].image_id);
                assert_true(fabs(hits[i].score - b.best[i].score) < 1e-5);
            }
        }
        sl_matches mh, mf;
        sl_query q = {0};
        q.k = 4;
        assert_int_equal(sl_engine_search(h, img, &q, &mh, &err), SL_OK);
        assert_int_equal(sl_engine_search(fl, img, &q, &mf, &err), SL_OK);
        assert_int_equal(mh.n, mf.n);
        for (size_t i = 0; i < mh.n; i++) {
            assert_string_equal(mh.items[i].product_id, mf.items[i].product_id);
            assert_true(fabs(mh.items[i].score - mf.items[i].score) < 1e-5);
        }
        char want[8];
        snprintf(want, sizeof want, "P%d", p);
        assert_string_equal(mh.items[0].product_id, want);
        sl_matches_free(&mh);
        sl_matches_free(&mf);
        /* argument checks */
        sl_image_hit one[1];
        size_t n1;
        assert_int_equal(sl_engine_nearest(h, vec, dim - 1, NULL, 1, one, &n1, &err), SL_E_INVALID);
        assert_int_equal(sl_engine_nearest(h, vec, dim, NULL, 0, one, &n1, &err), SL_E_INVALID);
        free(vec);
        sl_image_free(img);
    }
    sl_engine_free(h);
    sl_engine_free(fl);
    remove_dir(dh);
    remove_dir(dfl);
}

/* index.bin behind the store (an older file put back, as a crash, a kill or two processes
 * saving at once can leave it, while the meta says it is current): opening catches it up by
 * comparing the id lists - no rebuild, every stored image indexed, removed ones gone - and so
 * does sl_engine_refresh on a handle whose index is behind. */
static void test_index_catch_up(void **state) {
    fixture *f = *state;
    for (int kind = 0; kind < 2; kind++) {
        char dir[64];
        sl_engine *e = open_new(dir, "color", kind ? "hnsw" : "flat");
        fill(f, e, 5);
        sl_error err;
        assert_int_equal(sl_engine_flush(e, &err), SL_OK);
        char path[128], old[128], cmd[300];
        snprintf(path, sizeof path, "%s/index.bin", dir);
        snprintf(old, sizeof old, "%s/index.old", dir);
        snprintf(cmd, sizeof cmd, "cp '%s' '%s'", path, old);
        assert_int_equal(system(cmd), 0);
        sl_engine *other = NULL;
        assert_int_equal(sl_engine_open(dir, NULL, &other, &err), SL_OK); /* a second process */
        fill(f, e, 7);                                                      /* adds P5, P6 */
        assert_int_equal(sl_engine_delete_product(e, "P1", &err), SL_OK);
        sl_engine_free(e);
        assert_int_equal(rename(old, path), 0);
        sl_engine *g = NULL;
        assert_int_equal(sl_engine_open(dir, NULL, &g, &err), SL_OK);
        assert_int_equal(g->index_builds, 0);
        sl_engine_stats st;
        assert_int_equal(sl_engine_stats_get(g, &st, &err), SL_OK);
        assert_int_equal(st.indexed, st.images);
        assert_int_equal(st.images, 12);
        for (int p = 0; p < 7; p++) {
            sl_query q = {0};
            q.k = 1;
            sl_matches m;
            assert_int_equal(sl_engine_search_bytes(g, f->jpg[p][0], f->len[p][0], &q, &m, &err), SL_OK);
            assert_int_equal(m.n, 1);
            char want[8];
            snprintf(want, sizeof want, "P%d", p);
            if (p == 1) assert_string_not_equal(m.items[0].product_id, want);
            else assert_string_equal(m.items[0].product_id, want);
            sl_matches_free(&m);
        }
        sl_engine_free(g);
        /* the second handle's index is behind: refresh catches it up in memory */
        assert_int_equal(sl_engine_refresh(other, &err), SL_OK);
        assert_int_equal(other->index_builds, 0);
        assert_int_equal(sl_engine_stats_get(other, &st, &err), SL_OK);
        assert_int_equal(st.indexed, 12);
        sl_engine_free(other);
        remove_dir(dir);
    }
}

/* Products written from precomputed descriptors (sl_engine_describe_bytes here, or in another
 * process): one transaction for the batch, upsert outcomes, every check before anything is
 * written, the store's copies written or shared, and an "auto" store switching to HNSW once it
 * grows past the threshold. */
static void test_put_described(void **state) {
    fixture *f = *state;
    char dir[64];
    sl_engine *e = open_new(dir, "color+verify", "auto");
    e->hnsw_above = 5;
    sl_error err;
    sl_image_descriptor im[4];
    for (int i = 0; i < 4; i++) {
        assert_int_equal(sl_engine_describe_bytes(e, f->jpg[i][0], f->len[i][0], "/elsewhere/x.jpg", &im[i], &err), SL_OK);
        assert_non_null(im[i].local);
        assert_non_null(im[i].copy);
        assert_string_equal(im[i].copy_ext, "jpeg");
        assert_int_equal(im[i].size, (int64_t)f->len[i][0]);
        assert_int_equal(im[i].features_version, 0);
    }
    sl_product pr[4];
    sl_described_product it[4];
    char ids[4][8];
    for (int i = 0; i < 4; i++) {
        snprintf(ids[i], sizeof ids[i], "D%d", i);
        pr[i] = (sl_product){0};
        pr[i].id = ids[i];
        pr[i].title = (char *)"Described";
        pr[i].category = (char *)(i % 2 ? "odd" : "even");
        it[i] = (sl_described_product){&pr[i], &im[i], 1};
    }
    sl_put_outcome out[4];
    sl_engine_stats st;
    /* refused before anything is written */
    im[1].features_version = 3;
    assert_int_equal(sl_engine_put_described(e, it, 3, out, &err), SL_E_STATE);
    assert_non_null(strstr(err.message, "version"));
    im[1].features_version = 0;
    im[1].hash[5] = 'X';
    assert_int_equal(sl_engine_put_described(e, it, 3, out, &err), SL_E_INVALID);
    assert_non_null(strstr(err.message, "'D1', image 0"));
    im[1].hash[5] = '0';
    im[2].dim--;
    assert_int_equal(sl_engine_put_described(e, it, 3, out, &err), SL_E_INVALID);
    im[2].dim++;
    void *keep = im[2].local;
    im[2].local = NULL;
    assert_int_equal(sl_engine_put_described(e, it, 3, out, &err), SL_E_INVALID);
    assert_non_null(strstr(err.message, "required"));
    unsigned char *bad = malloc(im[2].local_len);
    memcpy(bad, keep, im[2].local_len);
    bad[im[2].local_len / 2] ^= 0x40;
    im[2].local = bad;
    assert_int_equal(sl_engine_put_described(e, it, 3, out, &err), SL_E_INVALID);
    im[2].local = keep;
    float zero[4096] = {0};
    assert_true(im[0].dim <= 4096);
    float *v0 = im[0].vec;
    im[0].vec = zero;
    assert_int_equal(sl_engine_put_described(e, it, 3, out, &err), SL_E_INVALID);
    im[0].vec = v0;
    unsigned char c0 = ((unsigned char *)im[0].copy)[0];
    ((unsigned char *)im[0].copy)[0] = 'x'; /* not a JPEG */
    assert_int_equal(sl_engine_put_described(e, it, 3, out, &err), SL_E_INVALID);
    assert_non_null(strstr(err.message, "not a jpeg"));
    ((unsigned char *)im[0].copy)[0] = c0;
    sl_product ghost = {0};
    ghost.id = (char *)"GHOST";
    sl_described_product gi[2] = {it[0], {&ghost, NULL, 0}};
    assert_int_equal(sl_engine_put_described(e, gi, 2, out, &err), SL_E_INVALID); /* the 2nd fails */
    assert_int_equal(out[0], SL_PUT_UNCHANGED);
    assert_int_equal(sl_engine_stats_get(e, &st, &err), SL_OK);
    assert_int_equal(st.products, 0); /* all or nothing */
    /* one batch of three */
    assert_int_equal(sl_engine_put_described(e, it, 3, out, &err), SL_OK);
    for (int i = 0; i < 3; i++) assert_int_equal(out[i], SL_PUT_ADDED);
    assert_int_equal(sl_engine_put_described(e, it, 3, out, &err), SL_OK);
    for (int i = 0; i < 3; i++) assert_int_equal(out[i], SL_PUT_UNCHANGED);
    pr[1].title = (char *)"Renamed";
    assert_int_equal(sl_engine_put_described(e, it, 3, out, &err), SL_OK);
    assert_int_equal(out[0], SL_PUT_UNCHANGED);
    assert_int_equal(out[1], SL_PUT_UPDATED);
    sl_product got;
    sl_image_ref *refs = NULL;
    size_t nr = 0;
    assert_int_equal(sl_engine_get_product(e, "D1", &got, &refs, &nr, &err), SL_OK);
    assert_string_equal(got.title, "Renamed");
    assert_int_equal(nr, 1);
    assert_string_equal(refs[0].hash, im[1].hash);
    assert_string_equal(refs[0].source, "/elsewhere/x.jpg");
    assert_true(refs[0].in_store);
    char *copy_file = strdup(refs[0].file); /* the path in the store (also taken relative) */
    sl_product_clear(&got);
    sl_image_refs_free(refs, nr);
    /* the store's copy is there: thumbnails work */
    void *jpg = NULL;
    size_t jl = 0;
    assert_int_equal(sl_engine_get_product(e, "D2", &got, &refs, &nr, &err), SL_OK);
    assert_int_equal(sl_engine_thumbnail(e, refs[0].id, 64, &jpg, &jl, &err), SL_OK);
    free(jpg);
    sl_product_clear(&got);
    sl_image_refs_free(refs, nr);
    /* searchable and verified like any product */
    sl_query q = {0};
    q.k = 1;
    sl_matches m;
    assert_int_equal(sl_engine_search_bytes(e, f->jpg[2][0], f->len[2][0], &q, &m, &err), SL_OK);
    assert_string_equal(m.items[0].product_id, "D2");
    assert_true(m.items[0].inliers >= 6);
    sl_matches_free(&m);
    assert_int_equal(sl_engine_stats_get(e, &st, &err), SL_OK);
    assert_string_equal(st.index_kind, "flat");
    /* growing past the threshold (5 images here) switches an "auto" store to HNSW; these four
     * share D1's copy by name instead of carrying bytes */
    int builds = e->index_builds;
    sl_described_product more[4];
    sl_image_descriptor mim[4];
    sl_product mpr[4];
    char mids[4][8];
    for (int i = 0; i < 4; i++) {
        snprintf(mids[i], sizeof mids[i], "M%d", i);
        mim[i] = im[i];
        snprintf(mim[i].hash, 65, "%064x", 0xdef0 + i);
        mim[i].copy = NULL;
        mim[i].file = copy_file;
        mpr[i] = (sl_product){0};
        mpr[i].id = mids[i];
        more[i] = (sl_described_product){&mpr[i], &mim[i], 1};
    }
    char missing[96];
    snprintf(missing, sizeof missing, "images/%064x.jpeg", 7);
    mim[3].file = missing;
    assert_int_equal(sl_engine_put_described(e, more, 4, NULL, &err), SL_E_INVALID);
    assert_non_null(strstr(err.message, "no copy"));
    mim[3].file = copy_file;
    assert_int_equal(sl_engine_put_described(e, more, 4, NULL, &err), SL_OK);
    assert_int_equal(sl_engine_stats_get(e, &st, &err), SL_OK);
    assert_string_equal(st.index_kind, "hnsw");
    assert_int_equal(st.indexed, 7);
    assert_int_equal(e->index_builds, builds + 1);
    q.k = 2;
    q.category = "odd";
    assert_int_equal(sl_engine_search_bytes(e, f->jpg[1][0], f->len[1][0], &q, &m, &err), SL_OK);
    assert_int_equal(m.n, 1); /* only D1 is "odd" */
    assert_string_equal(m.items[0].product_id, "D1");
    sl_matches_free(&m);
    /* a read-only handle refuses; a store that does not verify refuses local features */
    sl_engine_opts ro = {0};
    ro.read_only = 1;
    sl_engine *r = NULL;
    assert_int_equal(sl_engine_open(dir, &ro, &r, &err), SL_OK);
    assert_int_equal(sl_engine_put_described(r, it, 1, NULL, &err), SL_E_STATE);
    sl_engine_free(r);
    char d2[64];
    sl_engine *c = open_new(d2, "color", "auto");
    assert_int_equal(sl_engine_put_described(c, it, 1, NULL, &err), SL_E_INVALID);
    assert_non_null(strstr(err.message, "do not verify"));
    sl_engine_free(c);
    remove_dir(d2);
    free(bad);
    free(copy_file);
    for (int i = 0; i < 4; i++) sl_image_descriptor_clear(&im[i]);
    sl_engine_free(e);
    remove_dir(dir);
}

/* The output of a shell command (at most cap - 1 bytes), its exit status in *rc. */
static void run_out(const char *cmd, char *out, size_t cap, int *rc) {
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    *rc = pclose(p);
}

/* The automatic ef: SL_ENGINE_HNSW_EF_DEFAULT up to SL_ENGINE_HNSW_EF_SCALE_FROM images, then
 * one more SL_ENGINE_HNSW_EF_DEFAULT per decade (600 at 10^6, where 300 measured recall@100 0.951
 * and 600 0.985), never above SL_ENGINE_HNSW_EF_MAX, never decreasing with the size. */
static void test_hnsw_ef_auto(void **state) {
    (void)state;
    assert_int_equal(sl_engine_hnsw_ef_auto(0), SL_ENGINE_HNSW_EF_DEFAULT);
    assert_int_equal(sl_engine_hnsw_ef_auto(SL_ENGINE_HNSW_EF_SCALE_FROM), SL_ENGINE_HNSW_EF_DEFAULT);
    assert_int_equal(sl_engine_hnsw_ef_auto(1000000), 2 * SL_ENGINE_HNSW_EF_DEFAULT);
    assert_int_equal(sl_engine_hnsw_ef_auto(10000000), 3 * SL_ENGINE_HNSW_EF_DEFAULT);
    assert_int_equal(sl_engine_hnsw_ef_auto(UINT64_MAX), SL_ENGINE_HNSW_EF_MAX);
    int prev = 0;
    for (uint64_t n = 1; n < UINT64_MAX / 3; n = n * 3 + 1) {
        int ef = sl_engine_hnsw_ef_auto(n);
        assert_true(ef >= prev && ef >= SL_ENGINE_HNSW_EF_DEFAULT && ef <= SL_ENGINE_HNSW_EF_MAX);
        prev = ef;
    }
    assert_true(sl_engine_hnsw_ef_auto(200000) > SL_ENGINE_HNSW_EF_DEFAULT);
}

/* The HNSW candidate list length of a query (sl_query.ef) reaches the index: on 1,500 random
 * vectors, ef = 16 misses some of the exact 10 nearest images that ef = 4096 (above the store's
 * size: every reachable image is looked at) finds for the same queries, through
 * sl_engine_nearest and through the cluster's candidate phase (sl_engine_candidates); values
 * outside SL_ENGINE_HNSW_EF_MIN..MAX are refused, naming the range. */
static void test_query_ef(void **state) {
    fixture *f = *state;
    char dir[64];
    sl_engine *e = open_new(dir, "color", "hnsw");
    fill(f, e, 1); /* trains the features */
    sl_error err;
    sl_image_descriptor base;
    assert_int_equal(sl_engine_describe_bytes(e, f->jpg[0][0], f->len[0][0], NULL, &base, &err), SL_OK);
    size_t dim = base.dim;
    sl_product bp = {0};
    bp.id = (char *)"R";
    sl_described_product bd = {&bp, &base, 1};
    assert_int_equal(sl_engine_put_described(e, &bd, 1, NULL, &err), SL_OK);
    sl_product got;
    sl_image_ref *refs = NULL;
    size_t nr = 0;
    assert_int_equal(sl_engine_get_product(e, "R", &got, &refs, &nr, &err), SL_OK);
    char *copy_file = strdup(refs[0].file);
    sl_product_clear(&got);
    sl_image_refs_free(refs, nr);
    enum { N = 1500, B = 500, NQ = 20 };
    float *vecs = malloc((size_t)N * dim * sizeof *vecs);
    sl_image_descriptor *im = calloc(B, sizeof *im);
    sl_product *pr = calloc(B, sizeof *pr);
    sl_described_product *dp = calloc(B, sizeof *dp);
    char (*ids)[16] = calloc(B, sizeof *ids);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < (size_t)N * dim; i++) { /* uniform in -1..1, each vector normalized below */
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        vecs[i] = (float)((double)(x >> 11) / 4503599627370496.0 - 1.0);
    }
    for (int i = 0; i < N; i++) {
        double n2 = 0;
        for (size_t j = 0; j < dim; j++) n2 += (double)vecs[(size_t)i * dim + j] * vecs[(size_t)i * dim + j];
        for (size_t j = 0; j < dim; j++) vecs[(size_t)i * dim + j] = (float)(vecs[(size_t)i * dim + j] / sqrt(n2));
    }
    for (int b0 = 0; b0 < N; b0 += B) {
        for (int i = 0; i < B; i++) {
            im[i] = base;
            im[i].copy = NULL;
            im[i].local = NULL;
            im[i].source = NULL;
            im[i].file = copy_file;
            im[i].vec = vecs + (size_t)(b0 + i) * dim;
            snprintf(im[i].hash, sizeof im[i].hash, "%064x", b0 + i + 1);
            snprintf(ids[i], sizeof ids[i], "V%d", b0 + i);
            pr[i] = (sl_product){0};
            pr[i].id = ids[i];
            dp[i] = (sl_described_product){&pr[i], &im[i], 1};
        }
        assert_int_equal(sl_engine_put_described(e, dp, B, NULL, &err), SL_OK);
    }
    sl_engine_stats st;
    assert_int_equal(sl_engine_stats_get(e, &st, &err), SL_OK);
    assert_string_equal(st.index_kind, "hnsw");
    assert_int_equal(st.indexed, N + 3);
    /* queries: stored vectors moved a little, so their neighbours are not trivially themselves */
    size_t hit_lo = 0, hit_hi = 0, hit_cand_lo = 0, hit_cand_hi = 0, total = 0;
    float *qv = malloc(dim * sizeof *qv);
    for (int qi = 0; qi < NQ; qi++) {
        for (size_t j = 0; j < dim; j++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            qv[j] = vecs[(size_t)(qi * 61) * dim + j] + 0.5f * (float)((double)(x >> 11) / 4503599627370496.0 - 1.0);
        }
        brute b = {qv, dim, sl_engine_store(e), NULL, {{0, 0}}, 0, 10};
        assert_int_equal(sl_store_each_vector(sl_engine_store(e), brute_one, &b, &err), SL_OK);
        assert_int_equal(b.n, 10);
        total += b.n;
        for (int hi = 0; hi < 2; hi++) {
            sl_query q = {0};
            q.ef = hi ? SL_ENGINE_HNSW_EF_MAX : SL_ENGINE_HNSW_EF_MIN;
            sl_image_hit hits[10];
            size_t n = 0;
            assert_int_equal(sl_engine_nearest(e, qv, dim, &q, 10, hits, &n, &err), SL_OK);
            sl_candidate *lists[1] = {NULL};
            size_t counts[1] = {0};
            assert_int_equal(sl_engine_candidates(e, qv, 1, dim, &q, NULL, 10, lists, counts, &err), SL_OK);
            for (size_t a = 0; a < b.n; a++) {
                for (size_t c = 0; c < n; c++)
                    if (hits[c].image_id == b.best[a].image_id) *(hi ? &hit_hi : &hit_lo) += 1;
                for (size_t c = 0; c < counts[0]; c++)
                    if (lists[0][c].image_id == b.best[a].image_id) *(hi ? &hit_cand_hi : &hit_cand_lo) += 1;
            }
            sl_candidate_lists_clear(lists, counts, 1);
        }
    }
    assert_int_equal(hit_hi, total);       /* ef 4096 > N: exact */
    assert_int_equal(hit_cand_hi, total);
    assert_true(hit_lo < total);           /* ef 16: some missed */
    assert_true(hit_cand_lo < total);
    /* the HTTP API (?ef=) passes it on: with 10 candidates per result (so that the candidate
     * stage asks the index for 15 images and ef 16 is what it searches with), the most similar
     * product of some products differs between ef 16 and ef 4096 */
    const char *bin = getenv("SHOPLENS_BIN");
    assert_non_null(bin);
    sl_engine_set_candidates(e, SL_ENGINE_CANDIDATES_MIN);
    sl_server_opts so;
    sl_server_opts_init(&so);
    so.listen = "127.0.0.1:0";
    so.threads = 1;
    sl_server *srv = NULL;
    assert_int_equal(sl_server_new(e, &so, &srv, &err), SL_OK);
    int http_diff = 0, rc;
    enum { STEP = 2, CAP = 1 << 19 };
    char *cmd = malloc(CAP), *out[2] = {malloc(CAP), malloc(CAP)};
    for (int hi = 0; hi < 2; hi++) { /* one curl for N / STEP requests */
        size_t len = (size_t)snprintf(cmd, CAP, "curl -sS");
        for (int p = 0; p < N; p += STEP)
            len += (size_t)snprintf(cmd + len, CAP - len, " '%sv1/products/V%d/similar?k=1&ef=%d'", sl_server_url(srv),
                                    p, hi ? SL_ENGINE_HNSW_EF_MAX : SL_ENGINE_HNSW_EF_MIN);
        assert_true(len < CAP);
        run_out(cmd, out[hi], CAP, &rc);
        assert_int_equal(rc, 0);
    }
    /* the answers in turn, each up to its "took_ms" */
    char *a = out[0], *b = out[1];
    for (int p = 0; p < N; p += STEP) {
        char *ta = strstr(a, ",\"took_ms\""), *tb = strstr(b, ",\"took_ms\"");
        assert_non_null(ta);
        assert_non_null(tb);
        assert_non_null(strstr(a, "\"results\":[{"));
        http_diff += ta - a != tb - b || memcmp(a, b, (size_t)(ta - a)) != 0;
        a = strchr(ta, '}');
        b = strchr(tb, '}');
        assert_non_null(a);
        assert_non_null(b);
    }
    assert_true(http_diff > 0);
    /* the CLI takes --ef on search and similar */
    for (int hi = 0; hi < 2; hi++) {
        snprintf(cmd, CAP, "'%s' similar V3 -k 3 --ef %d --json --store '%s'", bin,
                 hi ? SL_ENGINE_HNSW_EF_MAX : SL_ENGINE_HNSW_EF_MIN, dir);
        run_out(cmd, out[hi], CAP, &rc);
        assert_int_equal(rc, 0);
        assert_non_null(strstr(out[hi], "\"product_id\""));
    }
    /* out of range: refused by the CLI (usage, exit 2) and the API (400), naming the range */
    snprintf(cmd, CAP, "'%s' similar V0 --ef 4097 --store '%s' 2>&1", bin, dir);
    run_out(cmd, out[0], CAP, &rc);
    assert_true(WIFEXITED(rc) && WEXITSTATUS(rc) == 2);
    assert_non_null(strstr(out[0], "--ef: must be an integer in 16..4096"));
    snprintf(cmd, CAP, "curl -sS -w ' %%{http_code}' '%sv1/products/V0/similar?ef=15'", sl_server_url(srv));
    run_out(cmd, out[0], CAP, &rc);
    assert_non_null(strstr(out[0], "parameter 'ef' must be an integer in 16..4096"));
    assert_non_null(strstr(out[0], " 400"));
    sl_server_free(srv);
    free(cmd);
    free(out[0]);
    free(out[1]);
    /* out of range */
    for (int bad = 0; bad < 3; bad++) {
        sl_query q = {0};
        q.ef = bad == 0 ? SL_ENGINE_HNSW_EF_MIN - 1 : bad == 1 ? SL_ENGINE_HNSW_EF_MAX + 1 : -1;
        sl_image_hit hits[10];
        size_t n = 7;
        assert_int_equal(sl_engine_nearest(e, qv, dim, &q, 10, hits, &n, &err), SL_E_INVALID);
        assert_non_null(strstr(err.message, "ef must be in 16..4096"));
        assert_int_equal(n, 0);
        sl_matches m;
        assert_int_equal(sl_engine_search_bytes(e, f->jpg[0][0], f->len[0][0], &q, &m, &err), SL_E_INVALID);
        assert_non_null(strstr(err.message, "ef must be in 16..4096"));
        sl_candidate *lists[1] = {NULL};
        size_t counts[1] = {0};
        assert_int_equal(sl_engine_candidates(e, qv, 1, dim, &q, NULL, 10, lists, counts, &err), SL_E_INVALID);
    }
    free(qv);
    free(vecs);
    free(im);
    free(pr);
    free(dp);
    free(ids);
    free(copy_file);
    sl_image_descriptor_clear(&base);
    sl_engine_free(e);
    remove_dir(dir);
}

/* Local features are read from the store when a candidate is verified, never all at open, and
 * kept within the cache's budget: with room for about two images, searching the products in
 * turn evicts and reloads them (same inliers each time), and after a product's images are
 * replaced a search verifies against the new ones, never a cached copy of the old. */
static void test_local_features_on_demand(void **state) {
    fixture *f = *state;
    char dir[64];
    sl_engine *e = open_new(dir, "color+verify", "flat");
    fill(f, e, 6);
    sl_engine_free(e);
    sl_error err;
    assert_int_equal(sl_engine_open(dir, NULL, &e, &err), SL_OK);
    sl__lcache_info info;
    sl__lcache_stats(e->lcache, &info);
    assert_int_equal(info.entries, 0); /* nothing loaded at open */
    assert_int_equal(info.misses, 0);
    /* the size of one image's features, from a first verified search */
    sl_query q = {0};
    q.k = 1;
    sl_matches m;
    assert_int_equal(sl_engine_search_bytes(e, f->jpg[0][0], f->len[0][0], &q, &m, &err), SL_OK);
    sl_matches_free(&m);
    sl__lcache_stats(e->lcache, &info);
    assert_true(info.entries >= 1);
    size_t one = info.bytes / info.entries;
    sl_engine_set_verify_top(e, 2);
    sl__lcache_set_max(e->lcache, one * 5 / 2);
    int inl[6];
    for (int round = 0; round < 2; round++)
        for (int p = 0; p < 6; p++) {
            assert_int_equal(sl_engine_search_bytes(e, f->jpg[p][0], f->len[p][0], &q, &m, &err), SL_OK);
            char want[8];
            snprintf(want, sizeof want, "P%d", p);
            assert_string_equal(m.items[0].product_id, want);
            assert_true(m.items[0].inliers >= 6);
            if (round == 0) inl[p] = m.items[0].inliers;
            else assert_int_equal(m.items[0].inliers, inl[p]); /* reloaded, the same features */
            sl_matches_free(&m);
            sl__lcache_stats(e->lcache, &info);
            assert_true(info.bytes <= info.max_bytes);
            assert_true(info.entries <= 3);
        }
    uint64_t misses = info.misses;
    assert_true(misses >= 12); /* each product's images came back from the store in round 2 */
    /* replace P2's images by P5's views: the warm cache must not answer for the new images */
    sl__lcache_set_max(e->lcache, (size_t)64 << 20);
    assert_int_equal(sl_engine_search_bytes(e, f->jpg[2][0], f->len[2][0], &q, &m, &err), SL_OK);
    sl_matches_free(&m);
    sl_product pr = {0};
    pr.id = (char *)"P2";
    pr.title = (char *)"Thing";
    pr.category = (char *)"cat2";
    pr.price = 30.0;
    pr.has_price = 1;
    sl_image_input in[2] = {{NULL, f->jpg[5][0], f->len[5][0]}, {NULL, f->jpg[5][1], f->len[5][1]}};
    sl_put_outcome out;
    assert_int_equal(sl_engine_put_product(e, &pr, in, 2, &out, &err), SL_OK);
    q.k = 6;
    assert_int_equal(sl_engine_search_bytes(e, f->jpg[2][0], f->len[2][0], &q, &m, &err), SL_OK);
    for (size_t i = 0; i < m.n; i++)
        if (strcmp(m.items[i].product_id, "P2") == 0) assert_true(m.items[i].inliers < inl[2]);
    sl_matches_free(&m);
    sl_engine_free(e);
    remove_dir(dir);
}

/* A search node's copy (sl_engine_replicate) keeps a product's references exactly as given
 * (images with index ids >= SL_STORE_REF_ID_BASE) and indexes them: phase 1 finds a reference
 * under its index id, never for its own product (exclude), and a state without it, or the
 * product's removal, takes it out of the copy and of the index. Applying a state twice changes
 * nothing. */
static sl_status ref_candidates(sl_engine *e, const float *q, size_t dim, const char *exclude, sl_candidate **l,
                                size_t *n) {
    sl_error err;
    return sl_engine_candidates(e, q, 1, dim, NULL, exclude, 4, l, n, &err);
}

static void test_replicate_references(void **state) {
    fixture *f = *state;
    sl_engine *e = f->e;
    sl_store *s = sl_engine_store(e);
    sl_error err;
    size_t dim = sl_features_dim(e->feat);
    assert_true(dim > 0);
    float *v = calloc(4 * dim, sizeof *v); /* 3 images, 1 reference: orthogonal unit vectors */
    assert_non_null(v);
    for (size_t i = 0; i < 4; i++) v[i * dim + i] = 1.0f;
    const char *hash = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const char *file = "images/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.jpg";
    const int64_t ref = SL_STORE_REF_ID_BASE + 7;
    sl_replica_image im[4] = {
        {11, "a.jpg", hash, 1, file, v, dim, NULL, 0},
        {12, "b.jpg", hash, 1, file, v + dim, dim, NULL, 0},
        {13, "c.jpg", hash, 1, file, v + 2 * dim, dim, NULL, 0},
        {ref, "photo.jpg", "", 0, "", v + 3 * dim, dim, NULL, 0},
    };
    sl_product pa = {0}, pb = {0};
    pa.id = (char *)"A";
    pb.id = (char *)"B";
    sl_replica_product rp[2] = {{"A", 0, &pa, im, 2}, {"B", 0, &pb, im + 2, 2}}; /* B: image 13 + the reference */
    int64_t n = -1, *ids = NULL;
    size_t nid = 0, got = 0;
    sl_candidate *l = NULL;
    for (int twice = 0; twice < 2; twice++) {
        assert_int_equal(sl_engine_replicate(e, rp, 2, "log_pos", "1", &err), SL_OK);
        assert_int_equal(sl_store_count_refs(s, &n, &err), SL_OK);
        assert_int_equal(n, 1);
    }
    assert_int_equal(sl_store_product_ref_ids(s, "B", &ids, &nid, &err), SL_OK);
    assert_int_equal(nid, 1);
    assert_int_equal(ids[0], ref);
    free(ids);
    /* the reference's own vector finds it first, under its index id */
    assert_int_equal(ref_candidates(e, v + 3 * dim, dim, NULL, &l, &got), SL_OK);
    assert_true(got >= 1);
    assert_int_equal(l[0].image_id, ref);
    assert_true(l[0].score > 0.99);
    sl_candidate_lists_clear(&l, &got, 1);
    /* never for its own product */
    assert_int_equal(ref_candidates(e, v + 3 * dim, dim, "B", &l, &got), SL_OK);
    for (size_t i = 0; i < got; i++) assert_true(l[i].image_id != ref && l[i].image_id != 13);
    sl_candidate_lists_clear(&l, &got, 1);
    /* B without its reference: gone from the copy and the index */
    rp[1].n = 1;
    assert_int_equal(sl_engine_replicate(e, rp + 1, 1, "log_pos", "2", &err), SL_OK);
    assert_int_equal(sl_store_count_refs(s, &n, &err), SL_OK);
    assert_int_equal(n, 0);
    assert_int_equal(ref_candidates(e, v + 3 * dim, dim, NULL, &l, &got), SL_OK);
    for (size_t i = 0; i < got; i++) assert_true(l[i].image_id != ref);
    sl_candidate_lists_clear(&l, &got, 1);
    /* back, then B removed: its reference goes with it */
    rp[1].n = 2;
    assert_int_equal(sl_engine_replicate(e, rp + 1, 1, "log_pos", "3", &err), SL_OK);
    assert_int_equal(ref_candidates(e, v + 3 * dim, dim, NULL, &l, &got), SL_OK);
    assert_true(got >= 1 && l[0].image_id == ref);
    sl_candidate_lists_clear(&l, &got, 1);
    sl_replica_product gone = {"B", 1, NULL, NULL, 0};
    assert_int_equal(sl_engine_replicate(e, &gone, 1, "log_pos", "4", &err), SL_OK);
    assert_int_equal(sl_store_count_refs(s, &n, &err), SL_OK);
    assert_int_equal(n, 0);
    assert_int_equal(ref_candidates(e, v + 3 * dim, dim, NULL, &l, &got), SL_OK);
    for (size_t i = 0; i < got; i++) assert_true(l[i].image_id == 11 || l[i].image_id == 12);
    sl_candidate_lists_clear(&l, &got, 1);
    free(v);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_verified_search_cache_under_writes),
        cmocka_unit_test(test_local_cache),
        cmocka_unit_test(test_hnsw_ef_auto),
        cmocka_unit_test(test_put_get_search_delete),
        cmocka_unit_test(test_concurrent_search_and_writes),
        cmocka_unit_test(test_two_writers_index_file),
        cmocka_unit_test_setup_teardown(test_search_region, setup, teardown),
        cmocka_unit_test(test_parse_region),
        cmocka_unit_test_setup_teardown(test_store_owns_images, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_restores_removed_copy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_patch_product, setup, teardown),
        cmocka_unit_test_setup_teardown(test_search_offset, setup, teardown),
        cmocka_unit_test(test_hnsw_store_exact_candidates),
        cmocka_unit_test(test_index_catch_up),
        cmocka_unit_test(test_put_described),
        cmocka_unit_test(test_query_ef),
        cmocka_unit_test(test_local_features_on_demand),
        cmocka_unit_test_setup_teardown(test_replicate_references, setup, teardown),
        cmocka_unit_test(test_calibrated_confidence),
        cmocka_unit_test(test_train_heldout_calibration),
        cmocka_unit_test(test_check_references),
        cmocka_unit_test(test_ref_products_follow_the_store),
        cmocka_unit_test(test_ref_fold_groups_by_product),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
