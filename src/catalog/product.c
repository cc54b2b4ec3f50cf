/*
 * catalog/product.c - product metadata as data: copies, currency codes, and product JSON applied
 * to a product, either as the whole metadata (PUT) or as a JSON merge patch (RFC 7396, PATCH).
 *
 * Invariants: one place validates metadata fields for every writer that takes JSON (the HTTP
 * API), with the limits of store.h (SL_PRODUCT_PRICE_MIN..MAX, ISO 4217 codes); a failed apply
 * leaves the product untouched; attrs always come out as a compact JSON object with sorted keys.
 */
#include "shoplens/store.h"
#include "util/util.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int sl_product_currency_valid(const char *code, char out[SL_PRODUCT_CURRENCY_LEN + 1]) {
    if (out) out[0] = '\0';
    if (!code || !*code) return 1;
    if (strlen(code) != SL_PRODUCT_CURRENCY_LEN) return 0;
    char up[SL_PRODUCT_CURRENCY_LEN + 1];
    for (int i = 0; i < SL_PRODUCT_CURRENCY_LEN; i++) {
        char c = code[i];
        if (c >= 'a' && c <= 'z') c = (char)(c - 'a' + 'A');
        if (c < 'A' || c > 'Z') return 0;
        up[i] = c;
    }
    up[SL_PRODUCT_CURRENCY_LEN] = '\0';
    if (out) memcpy(out, up, sizeof up);
    return 1;
}

_Static_assert(SL_STORE_ID_MAX == 128, "sl_product_id_check's message names the limit");

const char *sl_product_id_check(const char *id) {
    if (!id || !*id) return "is empty";
    size_t n = strlen(id);
    if (n > SL_STORE_ID_MAX) return "is longer than 128 bytes";
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)id[i] < 0x20 || id[i] == 0x7f) return "contains a control character";
    if (!sl__utf8_valid(id, n)) return "is not UTF-8 text";
    return NULL;
}

static int sl__dup_field(char **dst, const char *src) {
    *dst = NULL;
    if (!src) return 0;
    *dst = sl__strdup(src);
    return *dst ? 0 : -1;
}

sl_status sl_product_copy(sl_product *dst, const sl_product *src, sl_error *err) {
    memset(dst, 0, sizeof *dst);
    if (sl__dup_field(&dst->id, src->id) || sl__dup_field(&dst->title, src->title) ||
        sl__dup_field(&dst->category, src->category) ||
        sl__dup_field(&dst->description, src->description) || sl__dup_field(&dst->url, src->url) ||
        sl__dup_field(&dst->attrs_json, src->attrs_json) ||
        sl__dup_field(&dst->currency, src->currency)) {
        sl_product_clear(dst);
        return sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    dst->price = src->price;
    dst->has_price = src->has_price;
    return SL_OK;
}

/* RFC 7396 section 2: target := MergePatch(target, patch) for objects, recursively. */
static int sl__merge_patch(json_t *target, json_t *patch) {
    const char *key;
    json_t *v;
    json_object_foreach(patch, key, v) {
        if (json_is_null(v)) {
            json_object_del(target, key);
        } else if (json_is_object(v)) {
            json_t *t = json_object_get(target, key);
            if (!json_is_object(t)) {
                t = json_object();
                if (!t || json_object_set_new(target, key, t) != 0) return -1;
            }
            if (sl__merge_patch(t, v) != 0) return -1;
        } else if (json_object_set(target, key, v) != 0) {
            return -1;
        }
    }
    return 0;
}

static int sl__nonempty(const char *s) { return s && *s; }

static int sl__attrs_nonempty(const char *a) {
    if (!a || !*a) return 0;
    json_t *j = json_loads(a, 0, NULL);
    int ne = !json_is_object(j) || json_object_size(j) > 0;
    json_decref(j);
    return ne;
}

/* Appends ", name" (or "name") to a growing list. */
static int sl__list_add(char **list, const char *name) {
    size_t a = *list ? strlen(*list) : 0, b = strlen(name);
    char *n = realloc(*list, a + b + 3);
    if (!n) return -1;
    if (a) memcpy(n + a, ", ", 2), a += 2;
    memcpy(n + a, name, b + 1);
    *list = n;
    return 0;
}

sl_status sl_product_apply_json(sl_product *p, const char *json, size_t len, sl_apply_mode mode,
                                char **blanked, sl_error *err) {
    if (blanked) *blanked = NULL;
    json_error_t je;
    json_t *j = json_loadb(json ? json : "", json ? len : 0, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(j)) {
        json_decref(j);
        return j ? sl__err_set(err, SL_E_INVALID, "the metadata is not a JSON object")
                 : sl__err_set(err, SL_E_INVALID, "the metadata is not JSON (%s at line %d)", je.text, je.line);
    }
    sl_product n;
    sl_status st = SL_OK;
    char *list = NULL;
    if (mode == SL_APPLY_MERGE) {
        st = sl_product_copy(&n, p, err);
    } else {
        memset(&n, 0, sizeof n);
        if (p->id && !(n.id = sl__strdup(p->id))) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    if (st != SL_OK) {
        json_decref(j);
        return st;
    }
    static const char *const strs[] = {"title", "category", "description", "url"};
    char **const dst[] = {&n.title, &n.category, &n.description, &n.url};
    const char *const cur[] = {p->title, p->category, p->description, p->url};
    if (mode == SL_APPLY_REPLACE) {
        /* fields that have a value now and that the object does not mention */
        int miss = 0;
        for (int i = 0; i < 4 && !miss; i++)
            if (sl__nonempty(cur[i]) && !json_object_get(j, strs[i])) miss = sl__list_add(&list, strs[i]);
        if (!miss && p->has_price && !json_object_get(j, "price")) miss = sl__list_add(&list, "price");
        if (!miss && sl__nonempty(p->currency) && !json_object_get(j, "currency")) miss = sl__list_add(&list, "currency");
        if (!miss && sl__attrs_nonempty(p->attrs_json) && !json_object_get(j, "attrs")) miss = sl__list_add(&list, "attrs");
        if (miss) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    const char *key;
    json_t *v;
    json_object_foreach(j, key, v) {
        if (st != SL_OK) break;
        int k;
        for (k = 0; k < 4; k++)
            if (strcmp(key, strs[k]) == 0) break;
        if (k < 4) {
            if (!json_is_null(v) && !json_is_string(v)) {
                st = sl__err_set(err, SL_E_INVALID, "metadata field '%s' must be a string or null", key);
                break;
            }
            free(*dst[k]);
            *dst[k] = sl__strdup(json_is_null(v) ? "" : json_string_value(v));
            if (!*dst[k]) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        } else if (strcmp(key, "price") == 0) {
            if (json_is_null(v)) {
                n.has_price = 0;
                n.price = 0;
                continue;
            }
            double x = json_is_number(v) ? json_number_value(v) : NAN;
            if (!(x >= SL_PRODUCT_PRICE_MIN && x <= SL_PRODUCT_PRICE_MAX)) {
                st = sl__err_set(err, SL_E_INVALID, "metadata field 'price' must be a number in %.0f..%.0f, or null",
                                 SL_PRODUCT_PRICE_MIN, SL_PRODUCT_PRICE_MAX);
                break;
            }
            n.price = x;
            n.has_price = 1;
        } else if (strcmp(key, "currency") == 0) {
            char code[SL_PRODUCT_CURRENCY_LEN + 1];
            if (!json_is_null(v) && (!json_is_string(v) || !sl_product_currency_valid(json_string_value(v), code))) {
                st = sl__err_set(err, SL_E_INVALID, "metadata field 'currency' must be a three-letter "
                                 "ISO 4217 code such as USD or EUR, or null");
                break;
            }
            free(n.currency);
            n.currency = sl__strdup(json_is_null(v) ? "" : code);
            if (!n.currency) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        } else if (strcmp(key, "attrs") == 0) {
            if (!json_is_null(v) && !json_is_object(v)) {
                st = sl__err_set(err, SL_E_INVALID, "metadata field 'attrs' must be a JSON object or null");
                break;
            }
            json_t *a = NULL;
            if (json_is_object(v) && mode == SL_APPLY_MERGE) {
                a = n.attrs_json && *n.attrs_json ? json_loads(n.attrs_json, 0, NULL) : NULL;
                if (!json_is_object(a)) {
                    json_decref(a);
                    a = json_object();
                }
                if (!a || sl__merge_patch(a, v) != 0) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
            } else if (json_is_object(v)) {
                /* a replacement still follows RFC 7396 for null members: they are absent */
                a = json_object();
                if (!a || sl__merge_patch(a, v) != 0) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
            } else {
                a = json_object();
            }
            char *s = st == SL_OK && a ? json_dumps(a, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
            json_decref(a);
            if (st == SL_OK && !s) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
            if (st != SL_OK) break;
            free(n.attrs_json);
            n.attrs_json = s;
        } else if (strcmp(key, "id") == 0 || strcmp(key, "product_id") == 0) {
            if (!json_is_string(v) || !p->id || strcmp(json_string_value(v), p->id) != 0) {
                st = sl__err_set(err, SL_E_INVALID, "metadata field '%s' differs from the product id", key);
                break;
            }
        } else {
            st = sl__err_set(err, SL_E_INVALID, "unknown metadata field '%.40s' (use title, category, "
                             "description, url, price, currency, attrs)", key);
        }
    }
    json_decref(j);
    /* a replacement spells out what it cleared: "" and "{}", never NULL */
    char **const all[] = {&n.title, &n.category, &n.description, &n.url, &n.currency, &n.attrs_json};
    for (size_t i = 0; st == SL_OK && i < sizeof all / sizeof all[0]; i++)
        if (!*all[i] && !(*all[i] = sl__strdup(i == 5 ? "{}" : ""))) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    if (st != SL_OK) {
        sl_product_clear(&n);
        free(list);
        return st;
    }
    sl_product_clear(p);
    *p = n;
    if (blanked) *blanked = list;
    else free(list);
    return SL_OK;
}

void sl_store_cursor_encode(const char *id, char out[SL_STORE_CURSOR_MAX + 1]) {
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    out[o++] = 'c';
    for (const unsigned char *p = (const unsigned char *)id; *p && o + 2 <= SL_STORE_CURSOR_MAX; p++) {
        out[o++] = hex[*p >> 4];
        out[o++] = hex[*p & 15];
    }
    out[o] = '\0';
}

static int sl__hexval(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int sl_store_cursor_decode(const char *cursor, char out[SL_STORE_ID_MAX + 1]) {
    out[0] = '\0';
    if (!cursor || cursor[0] != 'c') return -1;
    size_t n = strlen(cursor + 1);
    if (n == 0 || n % 2 || n / 2 > SL_STORE_ID_MAX) return -1;
    for (size_t i = 0; i < n / 2; i++) {
        int hi = sl__hexval(cursor[1 + 2 * i]), lo = sl__hexval(cursor[2 + 2 * i]);
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) return -1;
        out[i] = (char)(hi << 4 | lo);
    }
    out[n / 2] = '\0';
    return 0;
}
