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

#define SL__API_K_MAX 100              /* results per request over HTTP */
#define SL__API_TEXT_MAX 200           /* bytes of the q parameter */
#define SL__API_PRICE_MAX 1e12
#define SL__API_METADATA_MAX (64 << 10) /* bytes of the metadata JSON of a PUT */
#define SL__API_THUMB_DEFAULT 256
#define SL__API_THUMB_MIN 16
#define SL__API_THUMB_MAX 1024

/* A JSON string from catalog text: as is when valid UTF-8, else with the offending bytes
 * replaced by '?'. NULL text gives JSON null. */
static json_t *sl__jstr(const char *s) {
    if (!s) return json_null();
    json_t *j = json_string(s);
    if (j) return j;
    char *c = sl__strdup(s);
    if (!c) return NULL;
    for (char *p = c; *p; p++)
        if ((unsigned char)*p >= 0x80) *p = '?';
    j = json_string(c);
    free(c);
    return j;
}

static json_t *sl__jprice(int has, double price) { return has ? json_real(price) : json_null(); }

static void sl__image_url(char *out, size_t cap, int64_t id) {
    snprintf(out, cap, "/v1/images/%lld", (long long)id);
}

char *sl_server_results_json(const sl_matches *m, double took_ms) {
    json_t *arr = json_array();
    for (size_t i = 0; arr && m && i < m->n; i++) {
        const sl_match *x = &m->items[i];
        char url[48];
        sl__image_url(url, sizeof url, x->image_id);
        json_t *o = json_pack("{s:I,s:o,s:f,s:f,s:b,s:o,s:o,s:o,s:I,s:s,s:o}",
                              "rank", (json_int_t)(i + 1),
                              "product_id", sl__jstr(x->product_id),
                              "score", round(x->score * 1e6) / 1e6,
                              "confidence", round(x->confidence * 1e6) / 1e6,
                              "match", x->match != 0,
                              "title", sl__jstr(x->title),
                              "category", sl__jstr(x->category),
                              "price", sl__jprice(x->has_price, x->price),
                              "image_id", (json_int_t)x->image_id,
                              "image_url", url,
                              "inliers", x->inliers >= 0 ? json_integer(x->inliers) : json_null());
        if (!o || json_array_append_new(arr, o) != 0) { json_decref(arr); arr = NULL; }
    }
    if (!arr) return NULL;
    json_t *root = json_pack("{s:o,s:I,s:f}", "results", arr, "count",
                             (json_int_t)(m ? m->n : 0), "took_ms", round(took_ms * 100) / 100);
    char *s = root ? json_dumps(root, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(12)) : NULL;
    json_decref(root);
    return s;
}

static void sl__resp_results(sl__resp *resp, const sl_matches *m, double t0) {
    char *s = sl_server_results_json(m, (sl__now() - t0) * 1e3);
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

/* Engine failures: the library's status and message, with two server-specific refinements. */
static void sl__fail(sl__resp *resp, const sl_error *e) {
    if (e->code == SL_E_STATE)
        sl__resp_error(resp, 409, "conflict", "%s", e->message[0] ? e->message : "not possible now");
    else if (e->code == SL_E_INTERRUPTED)
        sl__resp_error(resp, 503, "unavailable", "%s", "the server is stopping");
    else
        sl__resp_status(resp, e->code, e->message);
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
        sl__fail(resp, &e);
        return -1;
    }
    return 0;
}

/* k, category, prices, q -> query. Returns 0, or -1 with resp holding a 400. */
static int sl__query(sl__req *req, sl__resp *resp, sl_query *q) {
    memset(q, 0, sizeof *q);
    const sl__target *t = &req->target;
    sl_error e;
    sl_error_clear(&e);
    long k = SL_ENGINE_K_DEFAULT;
    double lo = 0, hi = 0;
    if (sl__param_int(t, "k", 1, SL__API_K_MAX, &k, &e) != SL_OK ||
        sl__param_double(t, "min_price", 0, SL__API_PRICE_MAX, &lo, &e) != SL_OK ||
        sl__param_double(t, "max_price", 0, SL__API_PRICE_MAX, &hi, &e) != SL_OK) {
        sl__resp_error(resp, 400, "bad_request", "%s", e.message);
        return -1;
    }
    q->k = (int)k;
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
    sl_matches m = { 0 };
    sl_error e;
    sl_error_clear(&e);
    if (sl_engine_search_bytes(req->srv->engine, data, len, &q, &m, &e) != SL_OK) {
        sl__fail(resp, &e);
        return;
    }
    sl__resp_results(resp, &m, t0);
    sl_matches_free(&m);
}

void sl__h_similar(sl__req *req, sl__resp *resp) {
    double t0 = sl__now();
    sl_query q;
    if (sl__query(req, resp, &q) != 0) return;
    sl_matches m = { 0 };
    sl_error e;
    sl_error_clear(&e);
    if (sl_engine_similar(req->srv->engine, req->target.seg[2], &q, &m, &e) != SL_OK) {
        sl__fail(resp, &e);
        return;
    }
    sl__resp_results(resp, &m, t0);
    sl_matches_free(&m);
}

void sl__h_categories(sl__req *req, sl__resp *resp) {
    char **names = NULL;
    int64_t *counts = NULL;
    size_t n = 0;
    sl_error e;
    sl_error_clear(&e);
    if (sl_engine_categories(req->srv->engine, &names, &counts, &n, &e) != SL_OK) {
        sl__fail(resp, &e);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) {
        json_t *o = json_pack("{s:o,s:I}", "name", sl__jstr(names[i]), "products", (json_int_t)counts[i]);
        if (!o || json_array_append_new(arr, o) != 0) { json_decref(arr); arr = NULL; }
    }
    sl_strings_free(names, n);
    free(counts);
    sl__resp_json(resp, 200, arr ? json_pack("{s:o}", "categories", arr) : NULL);
    resp->cache = "no-cache";
}

void sl__h_product_get(sl__req *req, sl__resp *resp) {
    sl_product p = { 0 };
    sl_image_ref *imgs = NULL;
    size_t n = 0;
    sl_error e;
    sl_error_clear(&e);
    if (sl_engine_get_product(req->srv->engine, req->target.seg[2], &p, &imgs, &n, &e) != SL_OK) {
        sl__fail(resp, &e);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) {
        char url[48];
        sl__image_url(url, sizeof url, imgs[i].id);
        json_t *o = json_pack("{s:I,s:s,s:s,s:I}", "id", (json_int_t)imgs[i].id, "url", url,
                              "sha256", imgs[i].hash, "bytes", (json_int_t)imgs[i].size);
        if (!o || json_array_append_new(arr, o) != 0) { json_decref(arr); arr = NULL; }
    }
    json_t *attrs = p.attrs_json ? json_loads(p.attrs_json, 0, NULL) : NULL;
    if (!json_is_object(attrs)) { json_decref(attrs); attrs = json_object(); }
    json_t *o = arr ? json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o}",
                                "id", sl__jstr(p.id), "title", sl__jstr(p.title),
                                "category", sl__jstr(p.category),
                                "description", sl__jstr(p.description), "url", sl__jstr(p.url),
                                "price", sl__jprice(p.has_price, p.price), "attrs", attrs,
                                "images", arr)
                    : (json_decref(attrs), NULL);
    sl_product_clear(&p);
    sl_image_refs_free(imgs, n);
    sl__resp_json(resp, 200, o);
}

/* Reads the metadata JSON of a PUT into *p (strings point into *root, which the caller
 * releases). Returns 0, or -1 with resp holding a 400. */
static int sl__metadata(sl__req *req, sl__resp *resp, json_t **root, sl_product *p,
                        char **attrs) {
    const char *id = req->target.seg[2];
    const sl__mp_part *part = sl__mp_find(req->mp, "metadata", 0);
    memset(p, 0, sizeof *p);
    p->id = (char *)id;
    *root = NULL;
    *attrs = NULL;
    if (!part) {
        sl__resp_error(resp, 400, "bad_request", "the form has no field named 'metadata' (a JSON object)");
        return -1;
    }
    if (sl__mp_find(req->mp, "metadata", 1) || part->len > SL__API_METADATA_MAX) {
        sl__resp_error(resp, 400, "bad_request", "send one 'metadata' field of at most %d bytes", SL__API_METADATA_MAX);
        return -1;
    }
    json_error_t je;
    json_t *j = json_loadb((const char *)part->data, part->len, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(j)) {
        json_decref(j);
        sl__resp_error(resp, 400, "bad_request", "'metadata' is not a JSON object (%s at line %d)",
                       j ? "not an object" : je.text, je.line);
        return -1;
    }
    *root = j;
    const char *key;
    json_t *v;
    json_object_foreach(j, key, v) {
        char **dst = NULL;
        if (strcmp(key, "title") == 0) dst = &p->title;
        else if (strcmp(key, "category") == 0) dst = &p->category;
        else if (strcmp(key, "description") == 0) dst = &p->description;
        else if (strcmp(key, "url") == 0) dst = &p->url;
        if (dst) {
            if (json_is_null(v)) continue;
            if (!json_is_string(v)) {
                sl__resp_error(resp, 400, "bad_request", "metadata field '%s' must be a string", key);
                return -1;
            }
            *dst = (char *)json_string_value(v);
        } else if (strcmp(key, "price") == 0) {
            if (json_is_null(v)) continue;
            if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > SL__API_PRICE_MAX) {
                sl__resp_error(resp, 400, "bad_request", "metadata field 'price' must be a number >= 0");
                return -1;
            }
            p->price = json_number_value(v);
            p->has_price = 1;
        } else if (strcmp(key, "id") == 0 || strcmp(key, "product_id") == 0) {
            if (!json_is_string(v) || strcmp(json_string_value(v), id) != 0) {
                sl__resp_error(resp, 400, "bad_request", "metadata field '%s' differs from the id in the path", key);
                return -1;
            }
        } else if (strcmp(key, "attrs") == 0) {
            if (!json_is_object(v)) {
                sl__resp_error(resp, 400, "bad_request", "metadata field 'attrs' must be a JSON object");
                return -1;
            }
            *attrs = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
            if (!*attrs) {
                sl__resp_status(resp, SL_E_NOMEM, NULL);
                return -1;
            }
            p->attrs_json = *attrs;
        } else {
            char safe[40];
            snprintf(safe, sizeof safe, "%s", key);
            sl__resp_error(resp, 400, "bad_request",
                           "unknown metadata field '%s' (use title, category, price, description, url, attrs)", safe);
            return -1;
        }
    }
    return 0;
}

void sl__h_product_put(sl__req *req, sl__resp *resp) {
    json_t *root = NULL;
    char *attrs = NULL;
    sl_product p;
    if (sl__metadata(req, resp, &root, &p, &attrs) != 0) {
        json_decref(root);
        free(attrs);
        return;
    }
    sl_image_input imgs[SL__MP_PARTS_MAX];
    size_t n = 0;
    for (size_t i = 0; i < sl__mp_count(req->mp); i++) {
        const sl__mp_part *part = sl__mp_part_at(req->mp, i);
        if (strcmp(part->name, "image") != 0) {
            if (strcmp(part->name, "metadata") != 0) {
                sl__resp_error(resp, 400, "bad_request", "unknown form field (use 'metadata' and 'image')");
                json_decref(root);
                free(attrs);
                return;
            }
            continue;
        }
        if (part->len == 0) {
            sl__resp_error(resp, 400, "bad_request", "image field %zu is empty", n + 1);
            json_decref(root);
            free(attrs);
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
    json_decref(root);
    free(attrs);
    if (st != SL_OK) {
        sl__fail(resp, &e);
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
        sl__fail(resp, &e);
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
        sl__fail(resp, &e);
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
    sl_image *img = NULL;
    if (sl__decode(req, resp, &img) != 0) return;
    sl_classification c = { 0 };
    sl_status st = sl_engine_classify(req->srv->engine, img, (int)k, &c, &e);
    sl_image_free(img);
    if (st != SL_OK) {
        sl__fail(resp, &e);
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
        sl__fail(resp, &e);
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
