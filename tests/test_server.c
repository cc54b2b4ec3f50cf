/*
 * tests/test_server.c - the server's parsers and its HTTP behaviour at the C level.
 *
 * Parser tests: request targets (decoding, refusals, limits), header parameters, and the
 * multipart parser fed in every possible two-chunk split (the result must not depend on where
 * the network cut the body). HTTP tests start a real server on 127.0.0.1 port 0 without an
 * engine and talk raw HTTP over a socket, so hostile requests (bad targets, lying
 * Content-Length, oversized chunked bodies, slow clients) can be sent exactly.
 * The engine-backed endpoints are exercised end to end by tests/e2e_server.sh.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "server/parse.h"
#include "util/util.h"
#include "shoplens/engine.h"
#include "shoplens/server.h"

/* ---- request target ---------------------------------------------------------------------- */

static void test_target_basic(void **state) {
    (void)state;
    sl__target t;
    sl_error e;
    const char *raw = "/v1/products/P%20001/similar?k=5&q=red+mug&category=Home%20%26%20Garden&&x=";
    assert_int_equal(sl__target_parse(raw, strlen(raw), &t, &e), SL_OK);
    assert_int_equal(t.nseg, 4);
    assert_string_equal(t.seg[0], "v1");
    assert_string_equal(t.seg[2], "P 001");
    assert_string_equal(t.seg[3], "similar");
    assert_int_equal(t.nparam, 4);
    assert_string_equal(sl__target_param(&t, "q"), "red mug");
    assert_string_equal(sl__target_param(&t, "category"), "Home & Garden");
    assert_string_equal(sl__target_param(&t, "x"), "");
    assert_null(sl__target_param(&t, "missing"));
    assert_int_equal(sl__target_parse("/", 1, &t, &e), SL_OK);
    assert_int_equal(t.nseg, 0);
    /* '+' is literal in the path */
    assert_int_equal(sl__target_parse("/a+b", 4, &t, &e), SL_OK);
    assert_string_equal(t.seg[0], "a+b");
}

static void test_target_refusals(void **state) {
    (void)state;
    sl__target t;
    sl_error e;
    const char *bad[] = {
        "", "v1/search", "/v1//search", "/v1/search/", "/v1/%2e%2e/x", "/v1/../x", "/./x",
        "/a%2Fb", "/a%00b", "/a%zz", "/a%4", "/a?k=%0a", "/a?=1", "/a#frag", "/a b", "/a\x01",
        "/a?k=%", "/\xc3\xa9",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sl_error_clear(&e);
        sl_status st = sl__target_parse(bad[i], strlen(bad[i]), &t, &e);
        if (st != SL_E_INVALID) fprintf(stderr, "accepted bad target [%s]\n", bad[i]);
        assert_int_equal(st, SL_E_INVALID);
        assert_true(e.message[0] != '\0');
    }
    /* limits */
    char big[SL__TARGET_MAX_LEN + 2];
    memset(big, 'a', sizeof big);
    big[0] = '/';
    assert_int_equal(sl__target_parse(big, sizeof big, &t, &e), SL_E_TOO_LARGE);
    char many[512] = "/x?";
    for (int i = 0; i <= SL__TARGET_MAX_PARAMS; i++) strcat(many, "a=1&");
    assert_int_equal(sl__target_parse(many, strlen(many), &t, &e), SL_E_TOO_LARGE);
    const char *deep = "/a/b/c/d/e/f/g/h/i";
    assert_int_equal(sl__target_parse(deep, strlen(deep), &t, &e), SL_E_TOO_LARGE);
}

/* Decoded segments and parameters are UTF-8 (they become ids and JSON text). */
static void test_target_utf8(void **state) {
    (void)state;
    sl__target t;
    sl_error e;
    static const char *good[] = { "/v1/products/%C3%A9t%C3%A9", "/v1/products/%E2%82%AC", "/v1/products/%F0%9F%98%80",
                                  "/a?q=%E2%82%AC+5", "/a?%C3%A9=1", "/v1/products/%EF%BF%BF" };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        assert_int_equal(sl__target_parse(good[i], strlen(good[i]), &t, &e), SL_OK);
    static const char *bad[] = { "/v1/products/%ff", "/v1/products/%C0%AF" /* overlong '/' */,
                                 "/v1/products/%ED%A0%80" /* surrogate */, "/v1/products/%F4%90%80%80" /* > U+10FFFF */,
                                 "/v1/products/%C3", "/v1/products/%80", "/a?q=%ff", "/a?%fe=1", "/v1/products/%E2%82" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(sl__target_parse(bad[i], strlen(bad[i]), &t, &e), SL_E_INVALID);
        assert_non_null(strstr(e.message, "UTF-8"));
    }
    assert_true(sl__utf8_valid("", 0));
    assert_true(sl__utf8_valid("\xf4\x8f\xbf\xbf", 4));
    assert_false(sl__utf8_valid("\xf5\x80\x80\x80", 4));
    assert_false(sl__utf8_valid("\xe0\x9f\xbf", 3)); /* overlong 3-byte */
    assert_false(sl__utf8_valid("a\xc3", 2));
    /* scrubbing keeps well-formed sequences and replaces each stray byte */
    char s1[] = "caf\xc3\xa9 \xff\xfe \xe2\x82\xac \xed\xa0\x80 \xe2\x82";
    sl__utf8_scrub(s1);
    assert_string_equal(s1, "caf\xc3\xa9 ?? \xe2\x82\xac ??? ??");
    sl__utf8_scrub(NULL);
}

static void test_params(void **state) {
    (void)state;
    sl__target t;
    sl_error e;
    const char *raw = "/s?k=12&min_price=3.5&max_price=1e2&bad=12x&neg=-3&hex=0x10&inf=inf";
    assert_int_equal(sl__target_parse(raw, strlen(raw), &t, &e), SL_OK);
    long k = 10;
    assert_int_equal(sl__param_int(&t, "k", 1, 100, &k, &e), SL_OK);
    assert_int_equal(k, 12);
    assert_int_equal(sl__param_int(&t, "k", 1, 5, &k, &e), SL_E_INVALID);
    assert_non_null(strstr(e.message, "'k'"));
    assert_int_equal(sl__param_int(&t, "bad", 1, 100, &k, &e), SL_E_INVALID);
    assert_int_equal(sl__param_int(&t, "neg", 0, 100, &k, &e), SL_E_INVALID);
    assert_int_equal(sl__param_int(&t, "hex", 0, 100, &k, &e), SL_E_INVALID);
    long untouched = 7;
    assert_int_equal(sl__param_int(&t, "absent", 0, 100, &untouched, &e), SL_OK);
    assert_int_equal(untouched, 7);
    double p = 0;
    assert_int_equal(sl__param_double(&t, "min_price", 0, 1e12, &p, &e), SL_OK);
    assert_true(p == 3.5);
    assert_int_equal(sl__param_double(&t, "max_price", 0, 1e12, &p, &e), SL_OK);
    assert_true(p == 100.0);
    assert_int_equal(sl__param_double(&t, "inf", 0, 1e300, &p, &e), SL_E_INVALID);
    assert_int_equal(sl__param_double(&t, "hex", 0, 1e12, &p, &e), SL_E_INVALID);
    const char *const allowed[] = { "k", "min_price", "max_price", "bad", "neg", "hex", "inf", NULL };
    assert_int_equal(sl__target_check_params(&t, allowed, &e), SL_OK);
    const char *const fewer[] = { "k", NULL };
    assert_int_equal(sl__target_check_params(&t, fewer, &e), SL_E_INVALID);
    assert_non_null(strstr(e.message, "min_price"));
    const char *dup = "/s?k=1&k=2";
    assert_int_equal(sl__target_parse(dup, strlen(dup), &t, &e), SL_OK);
    assert_int_equal(sl__target_check_params(&t, fewer, &e), SL_E_INVALID);
    assert_non_null(strstr(e.message, "twice"));
}

static void test_header_params(void **state) {
    (void)state;
    char v[64];
    assert_int_equal(sl__header_param("form-data; name=\"image\"; filename=\"a \\\"b\\\";c.jpg\"", "filename", v, sizeof v), 1);
    assert_string_equal(v, "a \"b\";c.jpg");
    assert_int_equal(sl__header_param("form-data; name=\"image\"; filename=\"x\"", "NAME", v, sizeof v), 1);
    assert_string_equal(v, "image");
    assert_int_equal(sl__header_param("multipart/form-data; boundary=abc ", "boundary", v, sizeof v), 1);
    assert_string_equal(v, "abc");
    assert_int_equal(sl__header_param("form-data; name=\"image\"", "filename", v, sizeof v), 0);
    assert_int_equal(sl__header_param("form-data; name=\"unterminated", "name", v, sizeof v), -1);
    assert_int_equal(sl__header_param("form-data; name=\"0123456789\"", "name", v, 8), -1);
    assert_true(sl__media_is("Image/JPEG", "image/"));
    assert_false(sl__media_is("image/", "image/"));
    assert_true(sl__media_is(" multipart/form-data; boundary=x", "multipart/form-data"));
    assert_false(sl__media_is("multipart/form-datax", "multipart/form-data"));
    assert_false(sl__media_is(NULL, "image/"));
    char b[SL__MP_BOUNDARY_MAX + 1];
    sl_error e;
    assert_int_equal(sl__mp_boundary("multipart/form-data; boundary=\"----x y\"", b, &e), SL_OK);
    assert_string_equal(b, "----x y");
    assert_int_equal(sl__mp_boundary("multipart/form-data", b, &e), SL_E_INVALID);
    assert_int_equal(sl__mp_boundary("multipart/form-data; boundary=a\x01" "b", b, &e), SL_E_INVALID);
    assert_int_equal(sl__mp_boundary("text/plain; boundary=x", b, &e), SL_E_INVALID);
}

/* ---- multipart --------------------------------------------------------------------------- */

static const char sl__mp_body[] =
    "preamble to ignore\r\n"
    "--XyZ\r\n"
    "Content-Disposition: form-data; name=\"metadata\"\r\n"
    "Content-Type: application/json\r\n"
    "\r\n"
    "{\"title\":\"mug\"}\r\n"
    "--XyZ\r\n"
    "content-disposition: form-data; name=\"image\"; filename=\"m.jpg\"\r\n"
    "Content-Type: image/jpeg\r\n"
    "\r\n"
    "\xff\xd8\r\n--XyY\r\r\n-\r\n--Xy\xff\xd9\r\n"
    "--XyZ  \r\n"
    "Content-Disposition: form-data; name=\"empty\"\r\n"
    "\r\n"
    "\r\n"
    "--XyZ--\r\n"
    "epilogue";

static const char sl__mp_img[] = "\xff\xd8\r\n--XyY\r\r\n-\r\n--Xy\xff\xd9";

static void sl__check_mp(sl__mp *mp) {
    assert_int_equal(sl__mp_count(mp), 3);
    const sl__mp_part *m = sl__mp_find(mp, "metadata", 0);
    assert_non_null(m);
    assert_int_equal(m->len, 15);
    assert_memory_equal(m->data, "{\"title\":\"mug\"}", 15);
    assert_string_equal(m->content_type, "application/json");
    const sl__mp_part *img = sl__mp_find(mp, "image", 0);
    assert_non_null(img);
    assert_string_equal(img->filename, "m.jpg");
    assert_int_equal(img->len, sizeof sl__mp_img - 1);
    assert_memory_equal(img->data, sl__mp_img, sizeof sl__mp_img - 1);
    const sl__mp_part *empty = sl__mp_find(mp, "empty", 0);
    assert_non_null(empty);
    assert_int_equal(empty->len, 0);
    assert_null(sl__mp_find(mp, "image", 1));
}

static void test_multipart_splits(void **state) {
    (void)state;
    size_t n = sizeof sl__mp_body - 1;
    sl_error e;
    for (size_t cut = 0; cut <= n; cut++) {
        sl__mp *mp = sl__mp_new("XyZ", 1 << 20);
        assert_non_null(mp);
        assert_int_equal(sl__mp_feed(mp, sl__mp_body, cut, &e), SL_OK);
        assert_int_equal(sl__mp_feed(mp, sl__mp_body + cut, n - cut, &e), SL_OK);
        assert_int_equal(sl__mp_finish(mp, &e), SL_OK);
        sl__check_mp(mp);
        sl__mp_free(mp);
    }
    /* byte by byte */
    sl__mp *mp = sl__mp_new("XyZ", 1 << 20);
    for (size_t i = 0; i < n; i++) assert_int_equal(sl__mp_feed(mp, sl__mp_body + i, 1, &e), SL_OK);
    assert_int_equal(sl__mp_finish(mp, &e), SL_OK);
    sl__check_mp(mp);
    size_t len = 0;
    uint8_t *taken = sl__mp_take(mp, 1, &len);
    assert_non_null(taken);
    assert_int_equal(len, sizeof sl__mp_img - 1);
    free(taken);
    sl__mp_free(mp);
}

static sl_status sl__mp_parse_all(const char *body, size_t n, size_t max, sl_error *e) {
    sl__mp *mp = sl__mp_new("b", max);
    assert_non_null(mp);
    sl_status st = sl__mp_feed(mp, body, n, e);
    if (st == SL_OK) st = sl__mp_finish(mp, e);
    sl__mp_free(mp);
    return st;
}

static void test_multipart_refusals(void **state) {
    (void)state;
    sl_error e;
    struct { const char *body; sl_status want; } cases[] = {
        { "--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nxyz", SL_E_INVALID },   /* truncated */
        { "--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n--b", SL_E_INVALID },
        { "--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--", SL_E_INVALID },            /* no disposition */
        { "--b\r\nContent-Disposition: attachment\r\n\r\nx\r\n--b--", SL_E_INVALID },
        { "--b\nContent-Disposition: form-data\n\nx\n--b--", SL_E_INVALID },               /* bare LF */
        { "--bx\r\n", SL_E_INVALID },                                                       /* garbage after boundary */
        { "--b\r\n Content-Disposition: form-data\r\n\r\nx\r\n--b--", SL_E_INVALID },       /* folded */
        { "--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n0123456789abcdef\r\n--b--", SL_E_TOO_LARGE },
        { "no boundary at all", SL_E_INVALID },
        { "--b--", SL_OK },
        { "--b\r\nContent-Disposition: form-data; name=a\r\n\r\n0123456789\r\n--b--", SL_OK },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sl_error_clear(&e);
        sl_status st = sl__mp_parse_all(cases[i].body, strlen(cases[i].body), 10, &e);
        if (st != cases[i].want) fprintf(stderr, "multipart case %zu: got %d (%s)\n", i, st, e.message);
        assert_int_equal(st, cases[i].want);
    }
    /* too many parts, too long a header line */
    char *many = malloc(64 * (SL__MP_PARTS_MAX + 2));
    many[0] = '\0';
    for (int i = 0; i <= SL__MP_PARTS_MAX; i++) strcat(many, "--b\r\nContent-Disposition: form-data\r\n\r\n\r\n");
    strcat(many, "--b--");
    assert_int_equal(sl__mp_parse_all(many, strlen(many), 1000, &e), SL_E_TOO_LARGE);
    free(many);
    char *longline = malloc(SL__MP_HEADER_LINE_MAX + 64);
    strcpy(longline, "--b\r\nX-A: ");
    memset(longline + strlen(longline), 'a', SL__MP_HEADER_LINE_MAX);
    longline[SL__MP_HEADER_LINE_MAX + 10] = '\0';
    assert_int_equal(sl__mp_parse_all(longline, strlen(longline), 1000, &e), SL_E_TOO_LARGE);
    free(longline);
    /* after an error the parser stays dead */
    sl__mp *mp = sl__mp_new("b", 100);
    assert_int_equal(sl__mp_feed(mp, "--bx", 4, &e), SL_E_INVALID);
    assert_int_equal(sl__mp_feed(mp, "\r\n--b--", 7, &e), SL_E_INVALID);
    assert_int_equal(sl__mp_finish(mp, &e), SL_E_INVALID);
    sl__mp_free(mp);
    assert_null(sl__mp_new("bad\rboundary", 10));
    assert_null(sl__mp_new("", 10));
}

/* ---- results JSON -------------------------------------------------------------------------- */

static void test_results_json(void **state) {
    (void)state;
    sl_match items[2];
    memset(items, 0, sizeof items);
    items[0].product_id = "P1";
    items[0].score = 0.12345678;
    items[0].title = "Mug \"A\" \xc3\xa9";          /* valid UTF-8, quotes */
    items[0].category = "mugs";
    items[0].price = 12.5;
    items[0].has_price = 1;
    items[0].image_id = 7;
    items[0].image = "/secret/path/a.jpg";
    items[0].inliers = 12;
    items[0].confidence = 0.9876543;
    items[0].match = 1;
    items[0].currency = "EUR";
    items[0].url = "https://shop.example/p1";
    items[1].product_id = "P2";
    items[1].score = -0.5;
    items[1].title = "bad \xff\xfe utf8";            /* invalid UTF-8 */
    items[1].category = NULL;
    items[1].image_id = 9;
    items[1].inliers = -1;
    sl_matches m = { items, 2 };
    char *s = sl_server_results_json(&m, 12.3456);
    assert_non_null(s);
    assert_string_equal(s,
        "{\"results\":[{\"rank\":1,\"product_id\":\"P1\",\"score\":0.123457,\"confidence\":0.987654,\"match\":true,\"title\":\"Mug \\\"A\\\" \\u00E9\","
        "\"category\":\"mugs\",\"price\":12.5,\"currency\":\"EUR\",\"url\":\"https://shop.example/p1\","
        "\"image_id\":7,\"image_url\":\"/v1/images/7\",\"inliers\":12},"
        "{\"rank\":2,\"product_id\":\"P2\",\"score\":-0.5,\"confidence\":0.0,\"match\":false,\"title\":\"bad ?? utf8\",\"category\":null,"
        "\"price\":null,\"currency\":null,\"url\":null,\"image_id\":9,\"image_url\":\"/v1/images/9\",\"inliers\":null}],"
        "\"count\":2,\"took_ms\":12.35}");
    assert_null(strstr(s, "secret")); /* server paths never leave the server */
    free(s);
    s = sl_server_results_json(NULL, 0);
    assert_string_equal(s, "{\"results\":[],\"count\":0,\"took_ms\":0.0}");
    free(s);
}

/* ---- request head (the front door's check) ---------------------------------------------- */

static int sl__headp(const char *raw, sl__head *h) { return sl__head_parse(raw, strlen(raw), h); }

static void test_head_parse(void **state) {
    (void)state;
    sl__head h;
    const char *ok = "\r\nPOST /v1/search?k=3 HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\nbody...";
    assert_int_equal(sl__headp(ok, &h), SL__HEAD_DONE);
    assert_int_equal(h.status, 0);
    assert_string_equal(h.method, "POST");
    assert_string_equal(h.path, "/v1/search");
    assert_int_equal(h.minor, 1);
    assert_int_equal(h.len, strlen(ok) - strlen("body..."));
    /* bare LF line ends, HTTP/1.0 without Host, HTTP/1.2 read as 1.1, chunked */
    assert_int_equal(sl__headp("GET / HTTP/1.0\n\n", &h), SL__HEAD_DONE);
    assert_int_equal(h.status, 0);
    assert_int_equal(h.minor, 0);
    assert_int_equal(sl__headp("GET / HTTP/1.2\r\nhost:\r\n\r\n", &h), SL__HEAD_DONE);
    assert_int_equal(h.status, 0);
    assert_int_equal(h.minor, 1);
    assert_int_equal(sl__headp("PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551615\r\n\r\n", &h), SL__HEAD_DONE);
    assert_int_equal(h.status, 0); /* fits 64 bits: the route's limit answers it */
    assert_int_equal(sl__headp("PUT /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:  Chunked \r\n\r\n", &h), SL__HEAD_DONE);
    assert_int_equal(h.status, 0);
    /* every prefix of a good head asks for more (and never fails) */
    for (size_t n = 0; n < strlen(ok) - strlen("body..."); n++) {
        assert_int_equal(sl__head_parse(ok, n, &h), SL__HEAD_MORE);
        assert_int_equal(h.status, 0);
    }
    /* refusals: (head, status, a word of the message) */
    static const struct { const char *head; int status; const char *word; } bad[] = {
        { "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400, "Content-Length" },
        { "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000000000000000000\r\n\r\n", 413, "above" },
        { "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551616\r\n\r\n", 413, "above" },
        { "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n", 400, "Content-Length" },
        { "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 400, "Content-Length" },
        { "POST / HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\n", 400, "empty" },
        { "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "both" },
        { "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400, "both" },
        { "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501, "chunked" },
        { "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "Transfer-Encoding" },
        { "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "HTTP/1.0" },
        { "GET / HTTP/1.1\r\n\r\n", 400, "Host" },
        { "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "Host" },
        { "GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", 400, "Host" },
        { "GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400, "obs-fold" },
        { "GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400, "header line" },
        { "GET / HTTP/1.1\r\nBad Name: x\r\nHost: x\r\n\r\n", 400, "header line" },
        { "GET / HTTP/1.1\r\nHost: x\r\nNo-colon\r\n\r\n", 400, "header line" },
        { "GET / HTTP/1.1\r\nHost: x\001\r\n\r\n", 400, "control" },
        { "GET / HTTP/1.1\rHost: x\r\n\r\n", 400, "CR" },
        { "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "request line" },
        { "GET /\r\n\r\n", 400, "request line" },
        { "GET / HTTP/1.1 \r\nHost: x\r\n\r\n", 400, "version" },
        { "GET / http/1.1\r\nHost: x\r\n\r\n", 400, "version" },
        { "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505, "HTTP/1.1" },
        { "GET / HTTP/0.9\r\nHost: x\r\n\r\n", 505, "HTTP/1.1" },
        { "G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "request line" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int r = sl__headp(bad[i].head, &h);
        if (r != SL__HEAD_DONE || h.status != bad[i].status || !strstr(h.msg, bad[i].word))
            fprintf(stderr, "head %zu: got %d/%d '%s'\n", i, r, h.status, h.msg);
        assert_int_equal(r, SL__HEAD_DONE);
        assert_int_equal(h.status, bad[i].status);
        assert_non_null(strstr(h.msg, bad[i].word));
        assert_non_null(h.code);
    }
    /* a bad request line is refused before the rest arrives */
    assert_int_equal(sl__headp("G(T /", &h), SL__HEAD_DONE);
    assert_int_equal(h.status, 400);
    assert_int_equal(sl__headp(" GET", &h), SL__HEAD_DONE);
    /* limits: target length, head size, field count */
    char *big = malloc(SL__HEAD_MAX + 200);
    assert_non_null(big);
    memset(big, 'a', SL__HEAD_MAX + 100);
    memcpy(big, "GET /", 5);
    assert_int_equal(sl__head_parse(big, 4200, &h), SL__HEAD_DONE);
    assert_int_equal(h.status, 414);
    int n = snprintf(big, 64, "GET / HTTP/1.1\r\nHost: x\r\nX: ");
    memset(big + n, 'v', SL__HEAD_MAX);
    assert_int_equal(sl__head_parse(big, SL__HEAD_MAX + 1, &h), SL__HEAD_DONE);
    assert_int_equal(h.status, 431);
    n = snprintf(big, 64, "GET / HTTP/1.1\r\nHost: x\r\n");
    for (int i = 0; i < SL__HEAD_MAX_FIELDS; i++) n += snprintf(big + n, 16, "X-%d: 1\r\n", i);
    n += snprintf(big + n, 4, "\r\n");
    assert_int_equal(sl__head_parse(big, (size_t)n, &h), SL__HEAD_DONE);
    assert_int_equal(h.status, 431);
    free(big);
}

/* ---- HTTP -------------------------------------------------------------------------------- */

typedef struct {
    int status;
    char head[4096];
    char *body;
    size_t body_len;
} sl__http_resp;

static int sl__connect(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

static void sl__send_all(int fd, const void *data, size_t len) {
    const char *p = data;
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n <= 0) return; /* the server may close early (413): not an error here */
        p += n;
        len -= (size_t)n;
    }
}

/* Reads a whole response (until the server closes, or Content-Length is satisfied), with a
 * timeout. Returns 0 on a parsed response, -1 on timeout / closed without a status line. */
static int sl__read_resp(int fd, sl__http_resp *r, int timeout_ms) {
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    memset(r, 0, sizeof *r);
    ssize_t want = -1;
    for (;;) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (poll(&p, 1, timeout_ms) <= 0) break;
        if (len + 4096 > cap) { cap *= 2; buf = realloc(buf, cap); }
        ssize_t n = recv(fd, buf + len, cap - len - 1, 0);
        if (n <= 0) break;
        len += (size_t)n;
        buf[len] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (end && want < 0) {
            const char *cl = strcasestr(buf, "\r\nContent-Length:");
            if (cl && cl < end) want = (ssize_t)((size_t)(end + 4 - buf) + strtoul(cl + 17, NULL, 10));
        }
        if (want >= 0 && (ssize_t)len >= want) break;
    }
    buf[len] = '\0';
    char *end = strstr(buf, "\r\n\r\n");
    if (len < 12 || strncmp(buf, "HTTP/1.", 7) != 0 || !end) { free(buf); return -1; }
    r->status = atoi(buf + 9);
    size_t hl = (size_t)(end - buf);
    if (hl >= sizeof r->head) hl = sizeof r->head - 1;
    memcpy(r->head, buf, hl);
    r->head[hl] = '\0';
    r->body_len = len - (size_t)(end + 4 - buf);
    r->body = malloc(r->body_len + 1);
    memcpy(r->body, end + 4, r->body_len);
    r->body[r->body_len] = '\0';
    free(buf);
    return 0;
}

static int sl__http(int port, const char *req, size_t len, sl__http_resp *r) {
    int fd = sl__connect(port);
    sl__send_all(fd, req, len);
    int rc = sl__read_resp(fd, r, 5000);
    close(fd);
    return rc;
}

static int sl__http_s(int port, const char *req, sl__http_resp *r) {
    return sl__http(port, req, strlen(req), r);
}

/* Sends "METHOD target" with no body and returns the parsed response (asserting one came). */
static void sl__req0(int port, const char *method, const char *target, sl__http_resp *r) {
    char req[1024];
    snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", method, target);
    assert_int_equal(sl__http_s(port, req, r), 0);
}

static atomic_int sl__log_count;
static char sl__log_last[256];
static void sl__log(void *user, const sl_server_request_log *e) {
    (void)user;
    snprintf(sl__log_last, sizeof sl__log_last, "%s %s %s %d", e->method, e->path, e->route, e->status);
    atomic_fetch_add(&sl__log_count, 1);
}

static sl_server *sl__start(sl_server_opts *o) {
    sl_server *srv = NULL;
    sl_error e;
    o->listen = "127.0.0.1:0";
    o->log = sl__log;
    sl_status st = sl_server_new(NULL, o, &srv, &e);
    if (st != SL_OK) fprintf(stderr, "server: %s\n", e.message);
    assert_int_equal(st, SL_OK);
    assert_true(sl_server_port(srv) > 0);
    return srv;
}

static void sl__expect_error(const sl__http_resp *r, int status, const char *code) {
    if (r->status != status) fprintf(stderr, "expected %d, got %d: %s\n", status, r->status, r->body);
    assert_int_equal(r->status, status);
    char want[96];
    snprintf(want, sizeof want, "{\"error\":{\"code\":\"%s\",\"message\":\"", code);
    assert_non_null(r->body);
    assert_memory_equal(r->body, want, strlen(want));
    assert_non_null(strcasestr(r->head, "Content-Type: application/json"));
}

/* The value of the /metrics line that starts with line_prefix (0 when absent). */
static unsigned long long sl__metric(int port, const char *line_prefix) {
    sl__http_resp r;
    sl__req0(port, "GET", "/metrics", &r);
    const char *m = strstr(r.body, line_prefix);
    unsigned long long n = m ? strtoull(m + strlen(line_prefix), NULL, 10) : 0;
    free(r.body);
    return n;
}

/* /metrics into *r once it holds every one of the n lines (read again for at most 5 s: a request
 * is counted when it completes, which may trail its response by a moment); *r is the last page
 * read either way, for the caller's asserts. */
static void sl__metrics_with(int port, const char *const *lines, size_t n, sl__http_resp *r) {
    for (int tries = 0; tries < 50; tries++) {
        sl__req0(port, "GET", "/metrics", r);
        size_t seen = 0;
        while (seen < n && r->body && strstr(r->body, lines[seen])) seen++;
        if (seen == n || tries == 49) return;
        free(r->body);
        r->body = NULL;
        usleep(100000);
    }
}

/* shoplens_http_request_body_bytes_total from /metrics. */
static unsigned long long sl__body_bytes(int port) {
    return sl__metric(port, "\nshoplens_http_request_body_bytes_total ");
}

static void test_http_core(void **state) {
    (void)state;
    sl_server_opts o;
    sl_server_opts_init(&o);
    o.threads = 2;
    sl_server *srv = sl__start(&o);
    int port = sl_server_port(srv);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", port);
    assert_string_equal(sl_server_url(srv), url);
    sl__http_resp r;

    sl__req0(port, "GET", "/", &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strcasestr(r.head, "Content-Type: text/html"));
    assert_non_null(strcasestr(r.head, "Content-Security-Policy: default-src 'none'"));
    assert_non_null(strstr(r.body, "<html"));
    free(r.body);

    sl__req0(port, "GET", "/healthz", &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"status\":\"ok\""));
    free(r.body);

    sl__req0(port, "GET", "/nope", &r);
    sl__expect_error(&r, 404, "not_found");
    free(r.body);

    sl__req0(port, "DELETE", "/v1/search", &r);
    sl__expect_error(&r, 405, "method_not_allowed");
    assert_non_null(strcasestr(r.head, "Allow: POST"));
    free(r.body);

    sl__req0(port, "GET", "/v1/products/a%zz", &r);
    sl__expect_error(&r, 400, "bad_request");
    free(r.body);

    sl__req0(port, "GET", "/healthz?debug=1", &r);
    sl__expect_error(&r, 400, "bad_request");
    assert_non_null(strstr(r.body, "debug"));
    free(r.body);

    /* no engine: engine routes answer 503 with Retry-After */
    sl__req0(port, "GET", "/v1/products/P1", &r);
    sl__expect_error(&r, 503, "unavailable");
    assert_non_null(strcasestr(r.head, "Retry-After: "));
    free(r.body);

    /* 415: neither multipart nor an image */
    const char *txt = "POST /v1/search HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: text/plain\r\n"
                      "Content-Length: 5\r\n\r\nhello";
    assert_int_equal(sl__http_s(port, txt, &r), 0);
    sl__expect_error(&r, 415, "unsupported_media_type");
    free(r.body);

    /* 400: multipart without a boundary, and a malformed multipart body */
    const char *nob = "POST /v1/search HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: multipart/form-data\r\n"
                      "Content-Length: 5\r\n\r\nhello";
    assert_int_equal(sl__http_s(port, nob, &r), 0);
    sl__expect_error(&r, 400, "bad_request");
    free(r.body);
    const char *trunc = "POST /v1/search HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                        "Content-Length: 19\r\n\r\n--b\r\nX-A: 1\r\n\r\nabcd";
    assert_int_equal(sl__http_s(port, trunc, &r), 0);
    sl__expect_error(&r, 400, "bad_request");
    free(r.body);

    /* metrics: counters by route and status, histogram, in-flight. A request is counted when
     * it completes, which may trail its response by a moment (as the log below), so the
     * page is read again until the last requests have landed (at most 5 s). */
    static const char *const want[] = {
        "shoplens_http_requests_total{route=\"page\",status=\"200\"} 1\n",
        "shoplens_http_requests_total{route=\"none\",status=\"404\"} 1\n",
        "shoplens_http_requests_total{route=\"search\",status=\"415\"} 1\n",
        "shoplens_http_request_duration_seconds_bucket{route=\"healthz\",le=\"+Inf\"} 2\n",
        "\nshoplens_http_requests_in_flight ",
    };
    size_t nwant = sizeof want / sizeof want[0], seen = 0;
    for (int tries = 0; tries < 50; tries++) {
        sl__req0(port, "GET", "/metrics", &r);
        assert_int_equal(r.status, 200);
        assert_non_null(strcasestr(r.head, "Content-Type: text/plain; version=0.0.4"));
        for (seen = 0; seen < nwant && strstr(r.body, want[seen]); seen++) {}
        if (seen == nwant || tries == 49) break;
        free(r.body);
        r.body = NULL;
        usleep(100000);
    }
    for (size_t i = 0; i < nwant; i++) assert_non_null(strstr(r.body, want[i]));
    free(r.body);
    /* one log record per request (completion may trail the response by a moment) */
    for (int i = 0; i < 100 && atomic_load(&sl__log_count) < 11; i++) usleep(10000);
    assert_true(atomic_load(&sl__log_count) >= 11);

    assert_int_equal(sl_server_shutdown(srv, 5), SL_OK);
    assert_int_equal(sl_server_shutdown(srv, 5), SL_OK); /* idempotent */
    sl_server_free(srv);
}

static void test_http_limits(void **state) {
    (void)state;
    sl_server_opts o;
    sl_server_opts_init(&o);
    o.threads = 2;
    o.max_body = 4096;
    o.timeout_s = 1;
    sl_server *srv = sl__start(&o);
    int port = sl_server_port(srv);
    sl__http_resp r;

    /* Content-Length over the limit: 413 at once, before the body is sent */
    int fd = sl__connect(port);
    const char *big = "POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                      "Content-Length: 100000000\r\nExpect: 100-continue\r\n\r\n";
    sl__send_all(fd, big, strlen(big));
    assert_int_equal(sl__read_resp(fd, &r, 5000), 0);
    sl__expect_error(&r, 413, "payload_too_large");
    assert_non_null(strstr(r.body, "4096"));
    free(r.body);
    close(fd);

    /* chunked body crossing the limit: 413 and the connection is closed while we still send */
    fd = sl__connect(port);
    const char *ch = "POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n";
    sl__send_all(fd, ch, strlen(ch));
    char chunk[1100];
    int hl = snprintf(chunk, sizeof chunk, "400\r\n");
    memset(chunk + hl, 'x', 1024);
    memcpy(chunk + hl + 1024, "\r\n", 2);
    for (int i = 0; i < 6; i++) sl__send_all(fd, chunk, (size_t)hl + 1026);
    sl__send_all(fd, "0\r\n\r\n", 5);
    assert_int_equal(sl__read_resp(fd, &r, 5000), 0);
    sl__expect_error(&r, 413, "payload_too_large");
    free(r.body);
    close(fd);

    /* a chunked body far over the limit: closed without reading it all */
    fd = sl__connect(port);
    struct timeval tv = { 5, 0 }; /* a server that stopped reading without closing fails, not hangs */
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sl__send_all(fd, ch, strlen(ch));
    /* up to 64 MiB: more than loopback's socket buffers can hold (they absorbed all of 4 MiB
     * once, under the sanitizers, before the server's close was seen) */
    size_t sent = 0;
    for (int i = 0; i < 65536; i++) {
        ssize_t n = send(fd, chunk, (size_t)hl + 1026, MSG_NOSIGNAL);
        if (n <= 0) break;
        sent += (size_t)n;
    }
    assert_true(sent < (size_t)65536 * 1030); /* the connection was closed at some point */
    close(fd);
    /* and the server itself read little more than the limit (plus one read buffer) */
    unsigned long long read_bytes = sl__body_bytes(port);
    assert_true(read_bytes > 4096 && read_bytes < 4096 + (64 << 10) + (512 << 10));

    /* a slow client is dropped after the inactivity timeout */
    fd = sl__connect(port);
    sl__send_all(fd, "GET /healthz HTTP/1.1\r\nHo", 25);
    double t0 = (double)time(NULL);
    char tmp[64];
    struct pollfd p = { .fd = fd, .events = POLLIN };
    assert_int_equal(poll(&p, 1, 5000), 1);
    assert_true(recv(fd, tmp, sizeof tmp, 0) <= 0); /* closed without an answer */
    assert_true((double)time(NULL) - t0 <= 4);
    close(fd);

    /* the server is still fine */
    sl__req0(port, "GET", "/healthz", &r);
    assert_int_equal(r.status, 200);
    free(r.body);
    sl_server_free(srv);
}

typedef struct { sl_server *srv; double grace; sl_status st; } sl__shut_arg;
static void *sl__shut_thread(void *p) {
    sl__shut_arg *a = p;
    a->st = sl_server_shutdown(a->srv, a->grace);
    return NULL;
}

static int sl__connect_refused(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    close(fd);
    return rc != 0;
}

static void test_http_inflight_and_shutdown(void **state) {
    (void)state;
    sl_server_opts o;
    sl_server_opts_init(&o);
    o.threads = 2;
    o.max_inflight = 2;
    sl_server *srv = sl__start(&o);
    int port = sl_server_port(srv);
    sl__http_resp r;
    /* two requests held open: request line sent, headers not finished */
    const char *hold = "GET / HTTP/1.1\r\nHost: x\r\n";
    int a = sl__connect(port), b = sl__connect(port);
    sl__send_all(a, hold, strlen(hold));
    sl__send_all(b, hold, strlen(hold));
    for (int i = 0; i < 300 && sl_server_inflight(srv) < 2; i++) usleep(10000);
    assert_int_equal(sl_server_inflight(srv), 2);
    sl__req0(port, "GET", "/", &r);
    sl__expect_error(&r, 503, "overloaded");
    assert_non_null(strcasestr(r.head, "Retry-After: 1"));
    free(r.body);
    for (int i = 0; i < 300 && sl_server_inflight(srv) > 2; i++) usleep(10000);

    /* graceful shutdown: stops accepting, but both held requests still get their answer */
    sl__shut_arg arg = { srv, 10.0, SL_E_INTERNAL };
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, sl__shut_thread, &arg), 0);
    int refused = 0;
    for (int i = 0; i < 300 && !refused; i++) {
        usleep(10000);
        refused = sl__connect_refused(port);
    }
    assert_true(refused);
    const char *rest = "Connection: keep-alive\r\n\r\n";
    sl__send_all(a, rest, strlen(rest));
    sl__send_all(b, rest, strlen(rest));
    assert_int_equal(sl__read_resp(a, &r, 5000), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strcasestr(r.head, "Connection: close"));
    free(r.body);
    assert_int_equal(sl__read_resp(b, &r, 5000), 0);
    assert_int_equal(r.status, 200);
    free(r.body);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(arg.st, SL_OK);
    close(a);
    close(b);
    sl_server_free(srv);

    /* a request that never completes: the grace period runs out -> SL_E_BUSY */
    srv = sl__start(&o);
    port = sl_server_port(srv);
    a = sl__connect(port);
    sl__send_all(a, hold, strlen(hold));
    for (int i = 0; i < 300 && sl_server_inflight(srv) < 1; i++) usleep(10000);
    assert_int_equal(sl_server_shutdown(srv, 0.3), SL_E_BUSY);
    sl_server_free(srv);
    close(a);
}

static void test_http_body_budget(void **state) {
    (void)state;
    sl_server_opts o;
    sl_server_opts_init(&o);
    o.threads = 2;
    o.max_body = 4096;
    o.max_body_total = 6000;
    sl_server *srv = sl__start(&o);
    int port = sl_server_port(srv);
    sl__http_resp r;
    char head[256];
    snprintf(head, sizeof head, "POST /v1/search HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
             "Content-Type: image/png\r\nContent-Length: 4000\r\n\r\n");
    char body[4000];
    memset(body, 'x', sizeof body);
    /* A holds 3000 bytes of its upload */
    int a = sl__connect(port);
    sl__send_all(a, head, strlen(head));
    sl__send_all(a, body, 3000);
    for (int i = 0; i < 300 && sl__body_bytes(port) < 3000; i++) usleep(10000);
    /* B does not fit in what is left of the budget: 503 at once, before its body */
    int b = sl__connect(port);
    sl__send_all(b, head, strlen(head));
    assert_int_equal(sl__read_resp(b, &r, 5000), 0);
    sl__expect_error(&r, 503, "overloaded");
    assert_non_null(strcasestr(r.head, "Retry-After: 1"));
    free(r.body);
    close(b);
    /* A completes (and, with no engine, is answered 503 unavailable: its body was accepted) */
    sl__send_all(a, body + 3000, 1000);
    assert_int_equal(sl__read_resp(a, &r, 5000), 0);
    sl__expect_error(&r, 503, "unavailable");
    free(r.body);
    close(a);
    /* the budget is released: the same upload now goes through */
    usleep(100000);
    int c = sl__connect(port);
    sl__send_all(c, head, strlen(head));
    sl__send_all(c, body, sizeof body);
    assert_int_equal(sl__read_resp(c, &r, 5000), 0);
    sl__expect_error(&r, 503, "unavailable");
    free(r.body);
    close(c);
    sl_server_free(srv);
    /* the total may not be below the per-request limit */
    sl_error e;
    o.max_body_total = 100;
    o.listen = "127.0.0.1:0";
    assert_int_equal(sl_server_new(NULL, &o, &srv, &e), SL_E_INVALID);
}

/* Reads until the server closes the connection (or timeout_ms without data); NUL-terminated. */
static size_t sl__read_all(int fd, char *buf, size_t cap, int timeout_ms) {
    size_t len = 0;
    while (len + 1 < cap) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (poll(&p, 1, timeout_ms) <= 0) break;
        ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
        if (n <= 0) break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    return len;
}

/* Number of HTTP status lines in a byte stream (at its start or after a CRLF). */
static int sl__status_lines(const char *s) {
    int n = strncmp(s, "HTTP/1.", 7) == 0;
    for (const char *p = s; (p = strstr(p, "\r\nHTTP/1.")) != NULL; p += 2) n++;
    return n;
}

/* The malformed and ambiguous heads libmicrohttpd accepts or answers badly: each gets exactly
 * one complete JSON answer and the connection is closed; a kept-alive follow-up request gets
 * the same framing rules. */
static void test_http_framing(void **state) {
    (void)state;
    sl_server_opts o;
    sl_server_opts_init(&o);
    o.threads = 2;
    o.max_body = 4096;
    sl_server *srv = sl__start(&o);
    int port = sl_server_port(srv);
    static const struct { const char *req; int status; const char *code; } cases[] = {
        { "POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400, "bad_request" },
        { "POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000000000000000000\r\n\r\n", 413, "payload_too_large" },
        { "POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "bad_request" },
        { "POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde", 400, "bad_request" },
        { "GET /healthz HTTP/1.1\r\n\r\n", 400, "bad_request" },
        { "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "bad_request" },
        { "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n", 400, "bad_request" },
        { "POST /v1/search HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "not_implemented" },
        { "GET /healthz HTTP/3.0\r\nHost: x\r\n\r\n", 505, "http_version_not_supported" },
    };
    char *buf = malloc(1 << 16);
    assert_non_null(buf);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int fd = sl__connect(port);
        sl__send_all(fd, cases[i].req, strlen(cases[i].req));
        size_t len = sl__read_all(fd, buf, 1 << 16, 5000);
        close(fd);
        if (sl__status_lines(buf) != 1) fprintf(stderr, "case %zu: %zu bytes: %s\n", i, len, buf);
        assert_int_equal(sl__status_lines(buf), 1);
        sl__http_resp r;
        memset(&r, 0, sizeof r);
        char *end = strstr(buf, "\r\n\r\n");
        assert_non_null(end);
        r.status = atoi(buf + 9);
        snprintf(r.head, sizeof r.head, "%.*s", (int)(end - buf), buf);
        r.body = end + 4;
        sl__expect_error(&r, cases[i].status, cases[i].code);
        /* the body is exactly Content-Length long and nothing follows it */
        const char *cl = strcasestr(r.head, "\r\nContent-Length:");
        assert_non_null(cl);
        assert_int_equal(strtoul(cl + 17, NULL, 10), len - (size_t)(end + 4 - buf));
        assert_non_null(strcasestr(r.head, "Connection: close"));
    }
    /* a kept-alive connection: the follow-up request did not pass the door, the same rules hold */
    static const char *follow[] = {
        "POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "GET /healthz HTTP/1.1\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof follow / sizeof follow[0]; i++) {
        int fd = sl__connect(port);
        const char *first = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        sl__send_all(fd, first, strlen(first));
        sl__http_resp r;
        assert_int_equal(sl__read_resp(fd, &r, 5000), 0);
        assert_int_equal(r.status, 200);
        free(r.body);
        sl__send_all(fd, follow[i], strlen(follow[i]));
        assert_int_equal(sl__read_resp(fd, &r, 5000), 0);
        sl__expect_error(&r, 400, "bad_request");
        free(r.body);
        close(fd);
    }
    /* ids that are not UTF-8 once decoded: 400, whatever the route */
    sl__http_resp r;
    sl__req0(port, "PUT", "/v1/products/%ff", &r);
    sl__expect_error(&r, 400, "bad_request");
    assert_non_null(strstr(r.body, "UTF-8"));
    free(r.body);
    sl__req0(port, "GET", "/v1/products/%C3%A9/similar", &r);
    sl__expect_error(&r, 503, "unavailable"); /* valid: reaches the (missing) engine */
    free(r.body);
    /* valid UTF-8 a message quotes stays itself (JSON-escaped), not '??' */
    sl__req0(port, "GET", "/v1/products?caf%C3%A9=1", &r);
    sl__expect_error(&r, 400, "bad_request");
    assert_non_null(strstr(r.body, "'caf\\u00E9'"));
    free(r.body);
    /* a long name is cut between characters: 'a' and 15 of the 16 'é' */
    sl__req0(port, "GET", "/v1/products?a%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9"
                          "%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9=1", &r);
    sl__expect_error(&r, 400, "bad_request");
    assert_non_null(strstr(r.body, "'a\\u00E9\\u00E9\\u00E9\\u00E9\\u00E9\\u00E9\\u00E9\\u00E9\\u00E9"
                                   "\\u00E9\\u00E9\\u00E9\\u00E9\\u00E9\\u00E9...'"));
    free(r.body);
    /* counted and logged like any other request */
    static const char *const counted[] = {
        "shoplens_http_requests_total{route=\"none\",status=\"505\"} 1\n",
        "shoplens_http_requests_total{route=\"none\",status=\"501\"} 1\n",
        "shoplens_http_requests_total{route=\"none\",status=\"413\"} 1\n",
    };
    sl__metrics_with(port, counted, 3, &r);
    for (size_t i = 0; i < 3; i++) assert_non_null(strstr(r.body, counted[i]));
    free(r.body);
    free(buf);
    sl_server_free(srv);
}

/* A chunked body far over max_body gets its 413 while the client is still sending. */
static void test_http_chunked_413(void **state) {
    (void)state;
    sl_server_opts o;
    sl_server_opts_init(&o);
    o.threads = 2;
    o.max_body = 4096;
    sl_server *srv = sl__start(&o);
    int fd = sl__connect(sl_server_port(srv));
    const char *ch = "POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n";
    sl__send_all(fd, ch, strlen(ch));
    char chunk[1100];
    int hl = snprintf(chunk, sizeof chunk, "400\r\n");
    memset(chunk + hl, 'x', 1024);
    memcpy(chunk + hl + 1024, "\r\n", 2);
    int readable = 0;
    for (int i = 0; i < 8192 && !readable; i++) { /* up to 8 MiB, 2000 times the limit */
        struct pollfd p = { .fd = fd, .events = POLLIN | POLLOUT };
        if (poll(&p, 1, 1000) <= 0) break;
        if (p.revents & POLLIN) readable = 1;
        else if (send(fd, chunk, (size_t)hl + 1026, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno != EAGAIN) break;
    }
    sl__http_resp r;
    assert_int_equal(sl__read_resp(fd, &r, 5000), 0);
    sl__expect_error(&r, 413, "payload_too_large");
    assert_non_null(strstr(r.body, "4096"));
    free(r.body);
    close(fd);
    static const char *const counted[] = {"shoplens_http_requests_total{route=\"search\",status=\"413\"} 1\n"};
    sl__metrics_with(sl_server_port(srv), counted, 1, &r);
    assert_non_null(strstr(r.body, counted[0]));
    free(r.body);
    sl_server_free(srv);
}

/* Drips one byte every 100 ms to each open fd until told to stop. */
typedef struct { int fd[16]; int n; atomic_int stop; const char *bytes; } sl__drip;
static void *sl__drip_thread(void *p) {
    sl__drip *d = p;
    size_t k = 0, bl = strlen(d->bytes);
    while (!atomic_load(&d->stop)) {
        for (int i = 0; i < d->n; i++)
            if (d->fd[i] >= 0) (void)send(d->fd[i], d->bytes + k % bl, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        k++;
        usleep(100000);
    }
    return NULL;
}

/* Waits for an answer on a dripping connection; returns its status (0: closed without one)
 * and the seconds it took. */
static int sl__await(int fd, double *secs) {
    struct timeval t0, t1;
    gettimeofday(&t0, NULL);
    sl__http_resp r;
    int st = sl__read_resp(fd, &r, 8000) == 0 ? r.status : 0;
    if (st) {
        if (st == 408) sl__expect_error(&r, 408, "request_timeout");
        free(r.body);
    }
    gettimeofday(&t1, NULL);
    *secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_usec - t0.tv_usec) / 1e6;
    return st;
}

/* Clients that drip their head or body are closed at the deadline with 408 (counted), idle
 * kept-alive connections silently, and drippers holding every connection slot do not keep a
 * normal request waiting. */
static void test_http_slow_clients(void **state) {
    (void)state;
    sl_server_opts o;
    sl_server_opts_init(&o);
    o.threads = 2;
    o.head_timeout_s = 1;
    o.body_timeout_s = 1;
    o.max_connections = 4;
    sl_server *srv = sl__start(&o);
    int port = sl_server_port(srv);
    double secs;
    sl__drip d = { .n = 0, .bytes = "abcdefghijklmnopqrstuvwxyz" };
    pthread_t th;
    /* a head that never ends, a body that crawls, and a follow-up head on a kept-alive
     * connection (read by libmicrohttpd, not the door) */
    const char *head = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    const char *body = "POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n";
    int a = sl__connect(port), b = sl__connect(port), c = sl__connect(port);
    sl__send_all(a, head, strlen(head));
    sl__send_all(b, body, strlen(body));
    const char *get = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    sl__send_all(c, get, strlen(get));
    sl__http_resp r;
    assert_int_equal(sl__read_resp(c, &r, 5000), 0);
    assert_int_equal(r.status, 200);
    free(r.body);
    sl__send_all(c, head, strlen(head));
    d.fd[0] = a; d.fd[1] = b; d.fd[2] = c; d.n = 3;
    assert_int_equal(pthread_create(&th, NULL, sl__drip_thread, &d), 0);
    assert_int_equal(sl__await(a, &secs), 408);
    assert_true(secs < 4);
    assert_int_equal(sl__await(b, &secs), 408);
    assert_true(secs < 4);
    assert_int_equal(sl__await(c, &secs), 408);
    assert_true(secs < 4);
    atomic_store(&d.stop, 1);
    pthread_join(th, NULL);
    close(a); close(b); close(c);
    /* an idle kept-alive connection is closed without a word */
    int k = sl__connect(port);
    sl__send_all(k, get, strlen(get));
    assert_int_equal(sl__read_resp(k, &r, 5000), 0);
    free(r.body);
    char tmp[64];
    struct pollfd pk = { .fd = k, .events = POLLIN };
    assert_int_equal(poll(&pk, 1, 4000), 1);
    assert_true(recv(k, tmp, sizeof tmp, 0) <= 0);
    close(k);
    assert_true(sl__metric(port, "shoplens_http_slow_clients_closed_total{phase=\"head\"} ") >= 2);
    assert_int_equal(sl__metric(port, "shoplens_http_slow_clients_closed_total{phase=\"body\"} "), 1);
    /* more header drippers than connection slots: a normal request is still answered at once
     * (they wait in the door, not in libmicrohttpd's slots) */
    sl__drip d2 = { .n = 8, .bytes = "abcdefghijklmnopqrstuvwxyz" };
    for (int i = 0; i < 8; i++) {
        d2.fd[i] = sl__connect(port);
        sl__send_all(d2.fd[i], head, strlen(head));
    }
    assert_int_equal(pthread_create(&th, NULL, sl__drip_thread, &d2), 0);
    usleep(300000);
    struct timeval t0, t1;
    gettimeofday(&t0, NULL);
    sl__req0(port, "GET", "/healthz", &r);
    gettimeofday(&t1, NULL);
    assert_int_equal(r.status, 200);
    free(r.body);
    assert_true((double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_usec - t0.tv_usec) / 1e6 < 0.9);
    atomic_store(&d2.stop, 1);
    pthread_join(th, NULL);
    for (int i = 0; i < 8; i++) close(d2.fd[i]);
    /* the door full of connections that have not said anything yet (all younger than the 0.2 s
     * grace): the next client waits in the backlog a moment, then is served */
    int quiet[4];
    for (int i = 0; i < 4; i++) quiet[i] = sl__connect(port);
    usleep(20000);
    gettimeofday(&t0, NULL);
    sl__req0(port, "GET", "/healthz", &r);
    gettimeofday(&t1, NULL);
    assert_int_equal(r.status, 200);
    free(r.body);
    assert_true((double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_usec - t0.tv_usec) / 1e6 < 2.0);
    for (int i = 0; i < 4; i++) close(quiet[i]);
    sl_server_free(srv);
    /* uploads that hold every slot: 503 with Retry-After at once (never a hang), and the slots
     * come back at their body deadline (3 s here, so the check before it holds on a slow
     * machine) */
    o.body_timeout_s = 3;
    srv = sl__start(&o);
    port = sl_server_port(srv);
    sl__drip d3 = { .n = 4, .bytes = "abcdefghijklmnopqrstuvwxyz" };
    for (int i = 0; i < 4; i++) {
        d3.fd[i] = sl__connect(port);
        sl__send_all(d3.fd[i], body, strlen(body));
    }
    assert_int_equal(pthread_create(&th, NULL, sl__drip_thread, &d3), 0);
    usleep(300000);
    sl__req0(port, "GET", "/healthz", &r);
    sl__expect_error(&r, 503, "overloaded");
    assert_non_null(strcasestr(r.head, "Retry-After: 1"));
    free(r.body);
    for (int i = 0; i < 4; i++) assert_int_equal(sl__await(d3.fd[i], &secs), 408);
    atomic_store(&d3.stop, 1);
    pthread_join(th, NULL);
    for (int i = 0; i < 4; i++) close(d3.fd[i]);
    usleep(200000);
    sl__req0(port, "GET", "/healthz", &r);
    assert_int_equal(r.status, 200);
    free(r.body);
    sl_server_free(srv);
}

static void test_new_refusals(void **state) {
    (void)state;
    sl_server *srv = (sl_server *)1;
    sl_error e;
    sl_server_opts o;
    sl_server_opts_init(&o);
    o.listen = "0.0.0.0:0";
    assert_int_equal(sl_server_new(NULL, &o, &srv, &e), SL_E_AUTH);
    assert_null(srv);
    assert_non_null(strstr(e.message, "API key"));
    o.read_only = 1; /* read-only off loopback is allowed */
    assert_int_equal(sl_server_new(NULL, &o, &srv, &e), SL_OK);
    sl_server_free(srv);
    o.read_only = 0;
    o.api_key = "short";
    assert_int_equal(sl_server_new(NULL, &o, &srv, &e), SL_E_AUTH);
    o.api_key = "0123456789abcdef0123";
    assert_int_equal(sl_server_new(NULL, &o, &srv, &e), SL_OK);
    sl_server_free(srv);
    sl_server_opts_init(&o);
    const char *bad[] = { "127.0.0.1", "127.0.0.1:99999", "example.com:80", "[::1:80", ":80", "1.2.3.4:x" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        o.listen = bad[i];
        assert_int_equal(sl_server_new(NULL, &o, &srv, &e), SL_E_INVALID);
    }
    o.listen = "127.0.0.1:0";
    o.threads = 100000;
    assert_int_equal(sl_server_new(NULL, &o, &srv, &e), SL_E_INVALID);
    assert_non_null(strstr(e.message, "threads"));
    sl_server_free(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_target_basic),
        cmocka_unit_test(test_target_refusals),
        cmocka_unit_test(test_target_utf8),
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_header_params),
        cmocka_unit_test(test_multipart_splits),
        cmocka_unit_test(test_multipart_refusals),
        cmocka_unit_test(test_results_json),
        cmocka_unit_test(test_http_core),
        cmocka_unit_test(test_http_limits),
        cmocka_unit_test(test_http_inflight_and_shutdown),
        cmocka_unit_test(test_http_body_budget),
        cmocka_unit_test(test_new_refusals),
        cmocka_unit_test(test_head_parse),
        cmocka_unit_test(test_http_framing),
        cmocka_unit_test(test_http_chunked_413),
        cmocka_unit_test(test_http_slow_clients),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
