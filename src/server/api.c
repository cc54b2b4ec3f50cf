/*
 * server/api.c - the /v1 handlers: thin adapters between HTTP (parameters, bodies, JSON) and
 * the engine (engine.h). The JSON shapes are specified in docs/openapi.yaml.
 *
 * Invariants: handlers run only for requests whose route, auth, limits and body were already
 * validated by http.c; every string that goes into JSON passes sl__jstr (jansson refuses
 * invalid UTF-8, catalog text may contain it); server-side file paths (image sources) are never
 * sent to clients - images are addressed by id (/v1/images/{id}); uploaded query images are
 * decoded in memory and never written anywhere. Concurrency is the engine's (one writer, many
 * readers, a search never sees half a product).
 */
#include "server/srv.h"
#include "shoplens/engine.h"
#include "shoplens/shoplens.h"
#include "util/util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SL__API_K_MAX SL_ENGINE_K_MAX  /* results per request (the engine's deepest rank) */
#define SL__API_THUMB_DEFAULT 256
#define SL__API_THUMB_MIN 16
#define SL__API_THUMB_MAX 1024

static json_t *sl__jstr(const char *s) { return sl__api_str(s); }

/* "" (unknown / none) as JSON null. */
static json_t *sl__jopt(const char *s) { return s && *s ? sl__api_str(s) : json_null(); }

static json_t *sl__jprice(int has, double price) { return has ? json_real(price) : json_null(); }

static void sl__image_url(char *out, size_t cap, int64_t id) {
    snprintf(out, cap, "/v1/images/%lld", (long long)id);
}

/* Results whose first item has rank rank0 + 1 (a page after offset rank0); info (may be NULL):
 * what a cluster router says about the shards that answered. */
static char *sl__results_json(const sl_matches *m, size_t rank0, double took_ms,
                              const sl_server_search_info *info) {
    json_t *arr = json_array();
    for (size_t i = 0; arr && m && i < m->n; i++) {
        const sl_match *x = &m->items[i];
        char url[48];
        sl__image_url(url, sizeof url, x->image_id);
        json_t *o = json_pack("{s:I,s:o,s:f,s:f,s:b,s:o,s:o,s:o,s:o,s:o,s:I,s:s,s:o}",
                              "rank", (json_int_t)(i + 1 + rank0),
                              "product_id", sl__jstr(x->product_id),
                              "score", round(x->score * 1e6) / 1e6,
                              "confidence", round(x->confidence * 1e6) / 1e6,
                              "match", x->match != 0,
                              "title", sl__jstr(x->title),
                              "category", sl__jstr(x->category),
                              "price", sl__jprice(x->has_price, x->price),
                              "currency", sl__jopt(x->currency),
                              "url", sl__jopt(x->url),
                              "image_id", (json_int_t)x->image_id,
                              "image_url", url,
                              "inliers", x->inliers >= 0 ? json_integer(x->inliers) : json_null());
        if (!o || json_array_append_new(arr, o) != 0) { json_decref(arr); arr = NULL; }
    }
    if (!arr) return NULL;
    json_t *root = json_pack("{s:o,s:I,s:f}", "results", arr, "count",
                             (json_int_t)(m ? m->n : 0), "took_ms", round(took_ms * 100) / 100);
    if (root && info) {
        json_t *miss = json_array();
        for (int i = 0; miss && i < info->n_missing; i++) json_array_append_new(miss, json_integer(info->missing[i]));
        json_object_set_new(root, "partial", json_boolean(info->partial));
        json_object_set_new(root, "missing_shards", miss ? miss : json_array());
    }
    char *s = root ? json_dumps(root, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(12)) : NULL;
    json_decref(root);
    return s;
}

char *sl_server_results_json(const sl_matches *m, double took_ms) {
    return sl__results_json(m, 0, took_ms, NULL);
}

static void sl__resp_results(sl__resp *resp, const sl_matches *m, const sl_query *q, double t0,
                             const sl_server_search_info *info) {
    char *s = sl__results_json(m, q && q->offset > 0 ? (size_t)q->offset : 0, (sl__now() - t0) * 1e3, info);
    if (!s) {
        sl__resp_status(resp, SL_E_NOMEM, NULL);
        return;
    }
    sl__resp_free(resp);
    resp->status = 200;
    resp->ctype = "application/json";
    resp->body = s;
    resp->len = strlen(s);
    resp->body_static = 0;
}

/* Replaces every occurrence of `what` in msg by `with` (in place, msg holds cap bytes). */
static void sl__replace_all(char *msg, size_t cap, const char *what, const char *with) {
    size_t wl = strlen(what), rl = strlen(with);
    if (wl == 0) return;
    char *p = msg;
    while ((p = strstr(p, what))) {
        size_t tail = strlen(p + wl);
        if ((size_t)(p - msg) + rl + tail + 1 > cap) break;
        memmove(p + rl, p + wl, tail + 1);
        memcpy(p, with, rl);
        p += rl;
    }
}

/* Server file paths out of a message: the store directory (as given and absolute) becomes
 * "<store>", and any other absolute path (a token starting with '/' with another '/' in it)
 * becomes "<file>". */
static void sl__scrub(const sl__req *req, char *msg, size_t cap) {
    if (req && req->srv && req->srv->engine) {
        const char *dir = sl_store_dir(sl_engine_store(req->srv->engine));
        char *abs = realpath(dir, NULL);
        if (abs && strlen(abs) > 1) sl__replace_all(msg, cap, abs, "<store>");
        free(abs);
        if (strlen(dir) > 1) sl__replace_all(msg, cap, dir, "<store>");
    }
    char out[SL_ERROR_MSG_MAX];
    size_t o = 0;
    for (size_t i = 0; msg[i] && o + 8 < sizeof out;) {
        int start = msg[i] == '/' && (i == 0 || strchr(" '\"(=:[<", msg[i - 1]));
        size_t j = i;
        if (start) {
            while (msg[j] && !strchr(" '\"),;", msg[j]) && !(msg[j] == ':' && (msg[j + 1] == ' ' || !msg[j + 1]))) j++;
            const char *slash = memchr(msg + i + 1, '/', j - i - 1);
            if (slash) {
                memcpy(out + o, "<file>", 6);
                o += 6;
                i = j;
                continue;
            }
        }
        out[o++] = msg[i++];
    }
    out[o] = '\0';
    snprintf(msg, cap, "%s", out);
}

void sl__api_fail(const sl__req *req, sl__resp *resp, const sl_error *e) {
    char msg[SL_ERROR_MSG_MAX];
    snprintf(msg, sizeof msg, "%s", e->message);
    sl__scrub(req, msg, sizeof msg);
    if (e->code == SL_E_STATE)
        sl__resp_error(resp, 409, "conflict", "%s", msg[0] ? msg : "not possible now");
    else if (e->code == SL_E_INTERRUPTED)
        sl__resp_error(resp, 503, "unavailable", "%s", "the server is stopping");
    else
        sl__resp_status(resp, e->code, msg);
}

/* The image of an image-carrying request: a raw body or the single multipart field "image".
 * Returns 0 with data/len set, or -1 with resp holding a 400. */
static int sl__image_body(sl__req *req, sl__resp *resp, const uint8_t **data, size_t *len) {
    if (req->raw_image) {
        *data = req->raw;
        *len = req->raw_len;
    } else {
        const sl__mp_part *p = sl__mp_find(req->mp, "image", 0);
        if (!p) {
            sl__resp_error(resp, 400, "bad_request", "the form has no field named 'image'");
            return -1;
        }
        if (sl__mp_find(req->mp, "image", 1)) {
            sl__resp_error(resp, 400, "bad_request", "send one field named 'image', not several");
            return -1;
        }
        *data = p->data;
        *len = p->len;
    }
    if (!*data || *len == 0) {
        sl__resp_error(resp, 400, "bad_request", "the image is empty");
        return -1;
    }
    return 0;
}

/* Decodes the request's image for the calls that take pixels (check, classify). */
static int sl__decode(sl__req *req, sl__resp *resp, sl_image **img) {
    const uint8_t *data;
    size_t len;
    if (sl__image_body(req, resp, &data, &len) != 0) return -1;
    sl_image_load_opts o = { 0 };
    o.max_bytes = req->srv->o.max_body;
    o.max_side = SL_ENGINE_MAX_SIDE_DEFAULT;
    sl_error e;
    sl_error_clear(&e);
    if (sl_image_load_buffer(data, len, &o, img, NULL, &e) != SL_OK) {
        sl__api_fail(req, resp, &e);
        return -1;
    }
    return 0;
}

/* k, offset, ef, category, prices, q -> query. Returns 0, or -1 with resp holding a 400. */
static int sl__query(sl__req *req, sl__resp *resp, sl_query *q) {
    memset(q, 0, sizeof *q);
    const sl__target *t = &req->target;
    sl_error e;
    sl_error_clear(&e);
    long k = SL_ENGINE_K_DEFAULT, offset = 0, ef = 0;
    double lo = 0, hi = 0;
    if (sl__param_int(t, "k", 1, SL__API_K_MAX, &k, &e) != SL_OK ||
        sl__param_int(t, "offset", 0, SL_ENGINE_OFFSET_MAX, &offset, &e) != SL_OK ||
        sl__param_int(t, "ef", SL_ENGINE_HNSW_EF_MIN, SL_ENGINE_HNSW_EF_MAX, &ef, &e) != SL_OK ||
        sl__param_double(t, "min_price", SL_PRODUCT_PRICE_MIN, SL_PRODUCT_PRICE_MAX, &lo, &e) != SL_OK ||
        sl__param_double(t, "max_price", SL_PRODUCT_PRICE_MIN, SL_PRODUCT_PRICE_MAX, &hi, &e) != SL_OK) {
        sl__resp_error(resp, 400, "bad_request", "%s", e.message);
        return -1;
    }
    if (offset + k > SL_ENGINE_RANK_MAX) {
        sl__resp_error(resp, 400, "bad_request", "offset + k must be at most %d (offset %ld, k %ld)",
                       SL_ENGINE_RANK_MAX, offset, k);
        return -1;
    }
    q->k = (int)k;
    q->offset = (int)offset;
    q->ef = (int)ef; /* 0 (absent): the engine's, serve --ef */
    q->has_min_price = sl__target_param(t, "min_price") != NULL;
    q->has_max_price = sl__target_param(t, "max_price") != NULL;
    q->min_price = lo;
    q->max_price = hi;
    if (q->has_min_price && q->has_max_price && lo > hi) {
        sl__resp_error(resp, 400, "bad_request", "min_price is above max_price");
        return -1;
    }
    const char *cat = sl__target_param(t, "category");
    if (cat && cat[0]) q->category = cat;
    const char *text = sl__target_param(t, "q");
    if (text && strlen(text) > SL__API_TEXT_MAX) {
        sl__resp_error(resp, 400, "bad_request", "parameter 'q' is longer than %d bytes", SL__API_TEXT_MAX);
        return -1;
    }
    if (text && text[0]) q->text = text;
    return 0;
}

void sl__h_search(sl__req *req, sl__resp *resp) {
    double t0 = sl__now();
    sl_query q;
    const uint8_t *data;
    size_t len;
    if (sl__query(req, resp, &q) != 0 || sl__image_body(req, resp, &data, &len) != 0) return;
    const char *region = sl__target_param(&req->target, "region");
    sl_error re;
    sl_error_clear(&re);
    if (region && sl_engine_parse_region(region, &q, &re) != SL_OK) {
        sl__resp_error(resp, 400, "bad_request", "%s", re.message);
        return;
    }
    sl_matches m = { 0 };
    sl_error e;
    sl_error_clear(&e);
    const sl_server_router *r = req->srv->o.router;
    sl_server_search_info info = { 0 };
    if ((r && r->search ? r->search(r->ctx, data, len, NULL, &q, &m, &info, &e)
                        : sl_engine_search_bytes(req->srv->engine, data, len, &q, &m, &e)) != SL_OK) {
        sl__api_fail(req, resp, &e);
        return;
    }
    sl__resp_results(resp, &m, &q, t0, r && r->search ? &info : NULL);
    sl_matches_free(&m);
}

void sl__h_similar(sl__req *req, sl__resp *resp) {
    double t0 = sl__now();
    sl_query q;
    if (sl__query(req, resp, &q) != 0) return;
    sl_matches m = { 0 };
    sl_error e;
    sl_error_clear(&e);
    const sl_server_router *r = req->srv->o.router;
    sl_server_search_info info = { 0 };
    if ((r && r->search ? r->search(r->ctx, NULL, 0, req->target.seg[2], &q, &m, &info, &e)
                        : sl_engine_similar(req->srv->engine, req->target.seg[2], &q, &m, &e)) != SL_OK) {
        sl__api_fail(req, resp, &e);
        return;
    }
    sl__resp_results(resp, &m, &q, t0, r && r->search ? &info : NULL);
    sl_matches_free(&m);
}

void sl__h_categories(sl__req *req, sl__resp *resp) {
    char **names = NULL;
    int64_t *counts = NULL;
    size_t n = 0;
    sl_error e;
    sl_error_clear(&e);
    if (sl_engine_categories(req->srv->engine, &names, &counts, &n, &e) != SL_OK) {
        sl__api_fail(req, resp, &e);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) {
        json_t *o = json_pack("{s:o,s:I}", "name", sl__jstr(names[i]), "products", (json_int_t)counts[i]);
        if (!o || json_array_append_new(arr, o) != 0) { json_decref(arr); arr = NULL; }
    }
    sl_strings_free(names, n);
    free(counts);
    /* the catalog's size, products without a category included (the page's header) */
    sl_engine_stats st;
    json_int_t total = sl_engine_stats_get(req->srv->engine, &st, NULL) == SL_OK ? (json_int_t)st.products : -1;
    sl__resp_json(resp, 200, arr ? json_pack("{s:o,s:o}", "categories", arr, "products",
                                             total >= 0 ? json_integer(total) : json_null())
                                 : NULL);
    resp->cache = "no-cache";
}

void sl__h_product_get(sl__req *req, sl__resp *resp) {
    sl_product p = { 0 };
    sl_image_ref *imgs = NULL;
    size_t n = 0;
    sl_error e;
    sl_error_clear(&e);
    if (sl_engine_get_product(req->srv->engine, req->target.seg[2], &p, &imgs, &n, &e) != SL_OK) {
        sl__api_fail(req, resp, &e);
        return;
    }
    json_t *o = sl__product_obj(&p, imgs, n);
    sl_product_clear(&p);
    sl_image_refs_free(imgs, n);
    sl__resp_json(resp, 200, o);
}

/* Reads the metadata JSON of a PUT into *p: the whole metadata of the product (fields it does
 * not name are cleared). A body that would clear fields the product has only because it does
 * not name them is refused, naming them: a PUT is a full replacement, and a client that sends
 * {"price": 2} most likely meant a PATCH. Returns 0, or -1 with resp holding the error. */
static int sl__metadata(sl__req *req, sl__resp *resp, sl_product *p) {
    const char *id = req->target.seg[2];
    const sl__mp_part *part = sl__mp_find(req->mp, "metadata", 0);
    memset(p, 0, sizeof *p);
    if (!part) {
        sl__resp_error(resp, 400, "bad_request", "the form has no field named 'metadata' (a JSON object)");
        return -1;
    }
    if (sl__mp_find(req->mp, "metadata", 1) || part->len > SL__API_METADATA_MAX) {
        sl__resp_error(resp, 400, "bad_request", "send one 'metadata' field of at most %d bytes", SL__API_METADATA_MAX);
        return -1;
    }
    sl_error e;
    sl_error_clear(&e);
    /* the current metadata, to see what the replacement would clear */
    if (sl_engine_get_product(req->srv->engine, id, p, NULL, NULL, NULL) != SL_OK) {
        memset(p, 0, sizeof *p);
        if (!(p->id = sl__strdup(id))) {
            sl__resp_status(resp, SL_E_NOMEM, NULL);
            return -1;
        }
    }
    char *blanked = NULL;
    if (sl_product_apply_json(p, (const char *)part->data, part->len, SL_APPLY_REPLACE, &blanked, &e) != SL_OK) {
        sl_product_clear(p);
        sl__resp_error(resp, 400, "bad_request", "%s", e.message);
        return -1;
    }
    if (blanked) {
        sl__resp_error(resp, 400, "bad_request",
                       "PUT replaces the whole product, and this metadata would clear %s (not given). "
                       "Send them (null clears one on purpose), or use PATCH to change only some fields",
                       blanked);
        free(blanked);
        sl_product_clear(p);
        return -1;
    }
    return 0;
}

void sl__h_product_put(sl__req *req, sl__resp *resp) {
    sl_product p;
    if (sl__metadata(req, resp, &p) != 0) return;
    sl_image_input imgs[SL__MP_PARTS_MAX];
    size_t n = 0;
    for (size_t i = 0; i < sl__mp_count(req->mp); i++) {
        const sl__mp_part *part = sl__mp_part_at(req->mp, i);
        if (strcmp(part->name, "image") != 0) {
            if (strcmp(part->name, "metadata") != 0) {
                sl__resp_error(resp, 400, "bad_request", "unknown form field (use 'metadata' and 'image')");
                sl_product_clear(&p);
                return;
            }
            continue;
        }
        if (part->len == 0) {
            sl__resp_error(resp, 400, "bad_request", "image field %zu is empty", n + 1);
            sl_product_clear(&p);
            return;
        }
        imgs[n].path = NULL;
        imgs[n].data = part->data;
        imgs[n].len = part->len;
        n++;
    }
    sl_put_outcome outcome = SL_PUT_UNCHANGED;
    sl_error e;
    sl_error_clear(&e);
    sl_status st = sl_engine_put_product(req->srv->engine, &p, imgs, n, &outcome, &e);
    sl_product_clear(&p);
    if (st != SL_OK) {
        sl__api_fail(req, resp, &e);
        return;
    }
    static const char *const names[] = { "added", "updated", "unchanged" };
    sl__resp_json(resp, outcome == SL_PUT_ADDED ? 201 : 200,
                  json_pack("{s:o,s:s,s:I}", "id", sl__jstr(req->target.seg[2]),
                            "outcome", names[outcome <= SL_PUT_UNCHANGED ? outcome : 2],
                            "images", (json_int_t)n));
}

void sl__h_product_delete(sl__req *req, sl__resp *resp) {
    sl_error e;
    sl_error_clear(&e);
    if (sl_engine_delete_product(req->srv->engine, req->target.seg[2], &e) != SL_OK) {
        sl__api_fail(req, resp, &e);
        return;
    }
    sl__resp_json(resp, 200, json_pack("{s:o,s:b}", "id", sl__jstr(req->target.seg[2]), "deleted", 1));
}

void sl__h_check(sl__req *req, sl__resp *resp) {
    double thr = 0;
    sl_error e;
    sl_error_clear(&e);
    if (sl__param_double(&req->target, "threshold", 0, 1, &thr, &e) != SL_OK) {
        sl__resp_error(resp, 400, "bad_request", "%s", e.message);
        return;
    }
    sl_image *img = NULL;
    if (sl__decode(req, resp, &img) != 0) return;
    sl_check_result r = { 0 };
    sl_status st = sl_engine_check(req->srv->engine, req->target.seg[2], img, thr, &r, &e);
    sl_image_free(img);
    if (st != SL_OK) {
        sl__api_fail(req, resp, &e);
        return;
    }
    sl__resp_json(resp, 200,
                  json_pack("{s:o,s:b,s:f,s:f,s:f,s:o,s:o}", "product_id", sl__jstr(req->target.seg[2]),
                            "match", r.match != 0, "confidence", round(r.confidence * 1e6) / 1e6,
                            "score", round(r.score * 1e6) / 1e6, "threshold", r.threshold,
                            "image_id", r.image_id > 0 ? json_integer(r.image_id) : json_null(),
                            "inliers", r.inliers >= 0 ? json_integer(r.inliers) : json_null()));
    sl_check_result_free(&r);
}

void sl__h_classify(sl__req *req, sl__resp *resp) {
    long k = 10;
    sl_error e;
    sl_error_clear(&e);
    if (sl__param_int(&req->target, "k", 1, SL__API_K_MAX, &k, &e) != SL_OK) {
        sl__resp_error(resp, 400, "bad_request", "%s", e.message);
        return;
    }
    sl_classification c = { 0 };
    sl_status st;
    const sl_server_router *r = req->srv->o.router;
    if (r && r->search) {
        /* the k nearest products through the cluster, then the same vote */
        const uint8_t *data;
        size_t len;
        if (sl__image_body(req, resp, &data, &len) != 0) return;
        sl_query q = { 0 };
        q.k = (int)k;
        sl_matches m = { 0 };
        sl_server_search_info info = { 0 };
        st = r->search(r->ctx, data, len, NULL, &q, &m, &info, &e);
        if (st == SL_OK) st = sl_classification_from_matches(&m, &c, &e);
        sl_matches_free(&m);
    } else {
        sl_image *img = NULL;
        if (sl__decode(req, resp, &img) != 0) return;
        st = sl_engine_classify(req->srv->engine, img, (int)k, &c, &e);
        sl_image_free(img);
    }
    if (st != SL_OK) {
        sl__api_fail(req, resp, &e);
        return;
    }
    json_t *votes = json_array();
    for (size_t i = 0; votes && i < c.n_votes; i++) {
        json_t *o = json_pack("{s:o,s:f}", "category", sl__jstr(c.votes[i].category), "weight", c.votes[i].weight);
        if (!o || json_array_append_new(votes, o) != 0) { json_decref(votes); votes = NULL; }
    }
    sl__resp_json(resp, 200, votes ? json_pack("{s:o,s:f,s:o}", "category", sl__jstr(c.category),
                                               "confidence", c.confidence, "votes", votes)
                                   : NULL);
    sl_classification_free(&c);
}

void sl__h_image(sl__req *req, sl__resp *resp) {
    const char *s = req->target.seg[2];
    char *end = NULL;
    errno = 0;
    long long id = (s[0] >= '1' && s[0] <= '9') ? strtoll(s, &end, 10) : 0;
    if (!end || *end != '\0' || errno != 0 || id <= 0) {
        sl__resp_error(resp, 400, "bad_request", "an image id is a positive integer");
        return;
    }
    long size = SL__API_THUMB_DEFAULT;
    sl_error e;
    sl_error_clear(&e);
    if (sl__param_int(&req->target, "size", SL__API_THUMB_MIN, SL__API_THUMB_MAX, &size, &e) != SL_OK) {
        sl__resp_error(resp, 400, "bad_request", "%s", e.message);
        return;
    }
    void *jpeg = NULL;
    size_t len = 0;
    if (sl_engine_thumbnail(req->srv->engine, (int64_t)id, (int)size, &jpeg, &len, &e) != SL_OK) {
        sl__api_fail(req, resp, &e);
        return;
    }
    sl__resp_free(resp);
    resp->status = 200;
    resp->ctype = "image/jpeg";
    resp->body = jpeg;
    resp->len = len;
    resp->body_static = 0;
    /* An image id always names the same bytes while it exists. */
    resp->cache = "public, max-age=86400";
}

void sl__api_gauges(sl_server *srv, sl__gauges *g) {
    g->products = g->images = g->index_bytes = -1;
    if (!srv->engine) return;
    sl_engine_stats st;
    if (sl_engine_stats_get(srv->engine, &st, NULL) != SL_OK) return;
    g->products = st.products;
    g->images = st.indexed;
    g->index_bytes = st.index_bytes;
}
