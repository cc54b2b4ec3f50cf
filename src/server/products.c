/*
 * server/products.c - the catalog as data over HTTP: GET /v1/products (a page of products by
 * id, with the filters of search and an opaque cursor), PATCH /v1/products/{id} (a JSON merge
 * patch, RFC 7396, and optionally new images), and the Product JSON both share with
 * GET /v1/products/{id}. Shapes: docs/openapi.yaml.
 *
 * Invariants: as api.c - no server file path ever reaches a client (images are addressed by
 * id), every string goes through jansson as valid UTF-8; a PATCH is applied by the engine under
 * its writer lock (read, merge, write: no lost update between two PATCHes).
 */
#include "server/srv.h"
#include "shoplens/engine.h"
#include "util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SL__LIST_LIMIT_DEFAULT 100
#define SL__LIST_LIMIT_MAX 1000

json_t *sl__api_str(const char *s) {
    if (!s) return json_null();
    json_t *j = json_string(s);
    if (j) return j;
    char *c = sl__strdup(s);
    if (!c) return NULL;
    sl__utf8_scrub(c);
    j = json_string(c);
    free(c);
    return j;
}

json_t *sl__product_obj(const sl_product *p, const sl_image_ref *imgs, size_t n) {
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) {
        char url[48];
        snprintf(url, sizeof url, "/v1/images/%lld", (long long)imgs[i].id);
        json_t *o = json_pack("{s:I,s:s,s:s,s:I}", "id", (json_int_t)imgs[i].id, "url", url,
                              "sha256", imgs[i].hash, "bytes", (json_int_t)imgs[i].size);
        if (!o || json_array_append_new(arr, o) != 0) { json_decref(arr); arr = NULL; }
    }
    json_t *attrs = p->attrs_json ? json_loads(p->attrs_json, 0, NULL) : NULL;
    if (!json_is_object(attrs)) { json_decref(attrs); attrs = json_object(); }
    if (!arr) {
        json_decref(attrs);
        return NULL;
    }
    return json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o}",
                     "id", sl__api_str(p->id), "title", sl__api_str(p->title),
                     "category", sl__api_str(p->category), "description", sl__api_str(p->description),
                     "url", sl__api_str(p->url),
                     "price", p->has_price ? json_real(p->price) : json_null(),
                     "currency", p->currency && *p->currency ? json_string(p->currency) : json_null(),
                     "attrs", attrs, "images", arr);
}

void sl__h_products_list(sl__req *req, sl__resp *resp) {
    const sl__target *t = &req->target;
    sl_error e;
    sl_error_clear(&e);
    long limit = SL__LIST_LIMIT_DEFAULT;
    double lo = 0, hi = 0;
    if (sl__param_int(t, "limit", 1, SL__LIST_LIMIT_MAX, &limit, &e) != SL_OK ||
        sl__param_double(t, "min_price", SL_PRODUCT_PRICE_MIN, SL_PRODUCT_PRICE_MAX, &lo, &e) != SL_OK ||
        sl__param_double(t, "max_price", SL_PRODUCT_PRICE_MIN, SL_PRODUCT_PRICE_MAX, &hi, &e) != SL_OK) {
        sl__resp_error(resp, 400, "bad_request", "%s", e.message);
        return;
    }
    sl_store_filter f;
    memset(&f, 0, sizeof f);
    f.has_min_price = sl__target_param(t, "min_price") != NULL;
    f.has_max_price = sl__target_param(t, "max_price") != NULL;
    f.min_price = lo;
    f.max_price = hi;
    if (f.has_min_price && f.has_max_price && lo > hi) {
        sl__resp_error(resp, 400, "bad_request", "min_price is above max_price");
        return;
    }
    const char *cat = sl__target_param(t, "category");
    if (cat && *cat) f.category = cat;
    const char *q = sl__target_param(t, "q");
    if (q && strlen(q) > SL__API_TEXT_MAX) {
        sl__resp_error(resp, 400, "bad_request", "parameter 'q' is longer than %d bytes", SL__API_TEXT_MAX);
        return;
    }
    if (q && *q) f.text = q;
    char after[SL_STORE_ID_MAX + 1] = "";
    const char *cursor = sl__target_param(t, "cursor");
    if (cursor && *cursor && sl_store_cursor_decode(cursor, after) != 0) {
        sl__resp_error(resp, 400, "bad_request", "parameter 'cursor' is not a cursor (use next_cursor of the previous page)");
        return;
    }
    sl_store *s = sl_engine_store(req->srv->engine);
    sl_product *v = NULL;
    size_t n = 0;
    int more = 0;
    int64_t total = 0;
    if (sl_store_count_products(s, &f, &total, &e) != SL_OK ||
        sl_store_list_products(s, &f, after, (size_t)limit, &v, &n, &more, &e) != SL_OK) {
        sl__api_fail(req, resp, &e);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) {
        sl_image_ref *imgs = NULL;
        size_t ni = 0;
        json_t *o = NULL;
        if (sl_store_product_images(s, v[i].id, &imgs, &ni, &e) == SL_OK) o = sl__product_obj(&v[i], imgs, ni);
        sl_image_refs_free(imgs, ni);
        if (!o || json_array_append_new(arr, o) != 0) { json_decref(arr); arr = NULL; }
    }
    char next[SL_STORE_CURSOR_MAX + 1] = "";
    if (more && n) sl_store_cursor_encode(v[n - 1].id, next);
    sl_products_free(v, n);
    sl__resp_json(resp, 200, arr ? json_pack("{s:o,s:I,s:I,s:o}", "products", arr, "count", (json_int_t)n,
                                             "total", (json_int_t)total,
                                             "next_cursor", next[0] ? json_string(next) : json_null())
                                 : NULL);
    resp->cache = "no-cache";
}

void sl__h_product_patch(sl__req *req, sl__resp *resp) {
    const char *patch = NULL;
    size_t patch_len = 0;
    sl_image_input imgs[SL__MP_PARTS_MAX];
    size_t n = 0;
    if (req->raw_image) { /* the whole body is the merge patch */
        patch = (const char *)req->raw;
        patch_len = req->raw_len;
        if (!patch || patch_len == 0) {
            sl__resp_error(resp, 400, "bad_request", "the merge patch is empty (send a JSON object)");
            return;
        }
    } else {
        const sl__mp_part *m = sl__mp_find(req->mp, "metadata", 0);
        if (m && (sl__mp_find(req->mp, "metadata", 1) || m->len > SL__API_METADATA_MAX)) {
            sl__resp_error(resp, 400, "bad_request", "send one 'metadata' field of at most %d bytes", SL__API_METADATA_MAX);
            return;
        }
        if (m) {
            patch = (const char *)m->data;
            patch_len = m->len;
        }
        for (size_t i = 0; i < sl__mp_count(req->mp); i++) {
            const sl__mp_part *part = sl__mp_part_at(req->mp, i);
            if (strcmp(part->name, "metadata") == 0) continue;
            if (strcmp(part->name, "image") != 0) {
                sl__resp_error(resp, 400, "bad_request", "unknown form field (use 'metadata' and 'image')");
                return;
            }
            if (part->len == 0) {
                sl__resp_error(resp, 400, "bad_request", "image field %zu is empty", n + 1);
                return;
            }
            imgs[n].path = NULL;
            imgs[n].data = part->data;
            imgs[n].len = part->len;
            n++;
        }
        if (!m && n == 0) {
            sl__resp_error(resp, 400, "bad_request", "nothing to change: send a 'metadata' merge patch and/or 'image' fields");
            return;
        }
    }
    if (patch && patch_len > SL__API_METADATA_MAX) {
        sl__resp_error(resp, 413, "payload_too_large", "the merge patch is over %d bytes", SL__API_METADATA_MAX);
        return;
    }
    sl_put_outcome outcome = SL_PUT_UNCHANGED;
    sl_error e;
    sl_error_clear(&e);
    if (sl_engine_patch_product(req->srv->engine, req->target.seg[2], patch, patch_len, imgs, n, &outcome, &e) != SL_OK) {
        sl__api_fail(req, resp, &e);
        return;
    }
    sl_product p;
    sl_image_ref *refs = NULL;
    size_t nr = 0;
    if (sl_engine_get_product(req->srv->engine, req->target.seg[2], &p, &refs, &nr, &e) != SL_OK) {
        sl__api_fail(req, resp, &e); /* deleted right after: report it as it is now */
        return;
    }
    json_t *o = sl__product_obj(&p, refs, nr);
    sl_product_clear(&p);
    sl_image_refs_free(refs, nr);
    if (o) json_object_set_new(o, "outcome", json_string(outcome == SL_PUT_UPDATED ? "updated" : "unchanged"));
    sl__resp_json(resp, 200, o);
}
