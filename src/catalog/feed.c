/*
 * catalog/feed.c - readers of product feeds: CSV (RFC 4180: comma separated, fields optionally
 * in double quotes, "" inside quotes is a quote, quoted fields may span lines, CRLF or LF, an
 * optional UTF-8 BOM) and JSON Lines (one JSON object per line, parsed with jansson).
 *
 * Invariants: the reader owns one copy of the whole input (NUL-terminated); a record never
 * reads past its end; every per-record problem is returned as a status with the record number
 * and the reader stays usable for the next record (resynchronizing at the next line break for
 * JSONL, at the end of the broken record for CSV). Fields of the last row stay valid until the
 * next call to sl_catalog_next or sl_catalog_close.
 */
#include "shoplens/store.h"
#include "catalog/catalog.h"
#include "util/util.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* Upper bound of a feed we read into memory. */
#define SL__FEED_MAX_BYTES ((size_t)4 << 30)
#define SL__CSV_MAX_COLUMNS 4096

enum { SL__COL_ID, SL__COL_IMAGE, SL__COL_TITLE, SL__COL_CATEGORY, SL__COL_PRICE,
       SL__COL_DESC, SL__COL_URL, SL__COL_CURRENCY, SL__COL_MORE, SL__COL_N };
/* The names each field goes by: shoplens's own first, then Google Merchant's product feed
 * attribute (id, image_link, additional_image_link, product_type, link; price is the same name,
 * "12.99 USD"). When a feed has two names of one field, the earlier one wins and the other is
 * kept as an attribute. */
#define SL__COL_ALIASES 2
static const char *const sl__col_names[SL__COL_N][SL__COL_ALIASES] = {
    { "product_id", "id" }, { "image", "image_link" }, { "title", NULL }, { "category", "product_type" },
    { "price", NULL }, { "description", NULL }, { "url", "link" }, { "currency", NULL },
    { "additional_images", "additional_image_link" } };

/* Alias index of name for field k, or -1. */
static int sl__alias(int k, const char *name) {
    for (int a = 0; a < SL__COL_ALIASES; a++)
        if (sl__col_names[k][a] && strcmp(name, sl__col_names[k][a]) == 0) return a;
    return -1;
}

struct sl_catalog_reader {
    char *data;
    size_t len, pos;
    int jsonl;
    size_t record;          /* records returned so far (data rows / lines) */
    /* CSV */
    char **header;
    size_t n_header;
    int col_of[SL__COL_N];  /* header column of each known field, -1 when absent */
    int col_alias[SL__COL_N]; /* which of its names that column has */
    /* current record */
    char **fields;          /* CSV: field strings; JSONL: owned strings of known keys */
    size_t n_fields, cap_fields;
    char *fieldbuf;         /* CSV: storage for unescaped fields */
    size_t fieldbuf_cap;
    char *attrs;            /* JSON text of the other columns */
    char *jstr[SL__COL_N];  /* JSONL: known fields */
};

static void sl__reader_reset_record(sl_catalog_reader *r) {
    free(r->attrs);
    r->attrs = NULL;
    for (int i = 0; i < SL__COL_N; i++) {
        free(r->jstr[i]);
        r->jstr[i] = NULL;
    }
}

void sl_catalog_close(sl_catalog_reader *r) {
    if (!r) return;
    sl__reader_reset_record(r);
    sl_strings_free(r->header, r->n_header);
    free(r->fields);
    free(r->fieldbuf);
    free(r->data);
    free(r);
}

/* ---- CSV ----------------------------------------------------------------------------------- */

/* Parses one CSV record at r->pos into r->fields (pointers into r->fieldbuf). Returns SL_OK,
 * SL_E_NOT_FOUND at the end of input, SL_E_CORRUPT for an unterminated quote or junk after a
 * closing quote (the record is consumed up to its end). */
static sl_status sl__csv_record(sl_catalog_reader *r, sl_error *err) {
    r->n_fields = 0;
    if (r->pos >= r->len) return SL_E_NOT_FOUND;
    /* The unescaped record is never longer than the raw bytes it comes from. */
    size_t start = r->pos, need = r->len - start + 1;
    if (need > r->fieldbuf_cap) {
        /* Bound by the rest of the input; grow geometrically. */
        size_t cap = r->fieldbuf_cap ? r->fieldbuf_cap : 4096;
        while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        char *nb = realloc(r->fieldbuf, cap);
        if (!nb) return sl__err_set(err, SL_E_NOMEM, "out of memory");
        r->fieldbuf = nb;
        r->fieldbuf_cap = cap;
    }
    char *out = r->fieldbuf;
    size_t o = 0;
    sl_status bad = SL_OK;
    const char *badmsg = NULL;
    for (;;) {
        /* start a field */
        if (r->n_fields == r->cap_fields) {
            size_t nc = r->cap_fields ? r->cap_fields * 2 : 16;
            char **nf = sl__reallocarray(r->fields, nc, sizeof *nf);
            if (!nf) return sl__err_set(err, SL_E_NOMEM, "out of memory");
            r->fields = nf;
            r->cap_fields = nc;
        }
        r->fields[r->n_fields++] = out + o;
        int at_end = 0;
        if (r->pos < r->len && r->data[r->pos] == '"') {
            r->pos++;
            for (;;) {
                if (r->pos >= r->len) {
                    bad = SL_E_CORRUPT;
                    badmsg = "unterminated quoted field";
                    at_end = 1;
                    break;
                }
                char c = r->data[r->pos++];
                if (c == '"') {
                    if (r->pos < r->len && r->data[r->pos] == '"') {
                        out[o++] = '"';
                        r->pos++;
                    } else {
                        break;
                    }
                } else {
                    out[o++] = c;
                }
            }
            /* after the closing quote: separator, line end or end of input */
            if (!at_end && r->pos < r->len && r->data[r->pos] != ',' && r->data[r->pos] != '\n' &&
                r->data[r->pos] != '\r') {
                bad = SL_E_CORRUPT;
                badmsg = "unexpected character after a closing quote";
                while (r->pos < r->len && r->data[r->pos] != ',' && r->data[r->pos] != '\n' &&
                       r->data[r->pos] != '\r')
                    r->pos++;
            }
        } else {
            while (r->pos < r->len) {
                char c = r->data[r->pos];
                if (c == ',' || c == '\n' || c == '\r') break;
                if (c == '"' && !bad) {
                    bad = SL_E_CORRUPT;
                    badmsg = "quote inside an unquoted field";
                }
                out[o++] = c;
                r->pos++;
            }
        }
        out[o++] = '\0';
        if (r->n_fields > SL__CSV_MAX_COLUMNS && !bad) {
            bad = SL_E_TOO_LARGE;
            badmsg = "more than 4096 columns";
        }
        if (r->pos >= r->len) break;
        char c = r->data[r->pos];
        if (c == ',') {
            r->pos++;
            continue;
        }
        if (c == '\r') r->pos++;
        if (r->pos < r->len && r->data[r->pos] == '\n') r->pos++;
        break;
    }
    if (bad) return sl__err_set(err, bad, "%s", badmsg);
    return SL_OK;
}

static int sl__csv_blank(const sl_catalog_reader *r) {
    return r->n_fields == 1 && r->fields[0][0] == '\0';
}

static sl_status sl__csv_header(sl_catalog_reader *r, sl_error *err) {
    if (r->len >= 3 && (unsigned char)r->data[0] == 0xEF && (unsigned char)r->data[1] == 0xBB &&
        (unsigned char)r->data[2] == 0xBF)
        r->pos = 3;
    sl_status st;
    do {
        st = sl__csv_record(r, err);
    } while (st == SL_OK && sl__csv_blank(r));
    if (st == SL_E_NOT_FOUND) return sl__err_set(err, SL_E_CORRUPT, "CSV: no header row");
    if (st != SL_OK) return sl__err_prefix(err, "CSV header");
    r->header = calloc(r->n_fields, sizeof *r->header);
    if (!r->header) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    r->n_header = r->n_fields;
    for (int k = 0; k < SL__COL_N; k++) r->col_of[k] = -1;
    for (size_t i = 0; i < r->n_fields; i++) {
        /* trim surrounding blanks of header names */
        const char *h = r->fields[i];
        while (*h == ' ' || *h == '\t') h++;
        size_t hl = strlen(h);
        while (hl && (h[hl - 1] == ' ' || h[hl - 1] == '\t')) hl--;
        r->header[i] = malloc(hl + 1);
        if (!r->header[i]) return sl__err_set(err, SL_E_NOMEM, "out of memory");
        memcpy(r->header[i], h, hl);
        r->header[i][hl] = '\0';
        if (!sl__utf8_valid(r->header[i], hl))
            return sl__err_set(err, SL_E_CORRUPT, "CSV header: the name of column %zu is not UTF-8 "
                               "text (save the feed as UTF-8)", i + 1);
        for (int k = 0; k < SL__COL_N; k++) {
            int a = sl__alias(k, r->header[i]);
            if (a >= 0 && (r->col_of[k] < 0 || a < r->col_alias[k])) {
                r->col_of[k] = (int)i;
                r->col_alias[k] = a;
            }
        }
    }
    if (r->col_of[SL__COL_ID] < 0)
        return sl__err_set(err, SL_E_CORRUPT, "CSV header has no product_id (or id) column");
    return SL_OK;
}

static sl_status sl__csv_next(sl_catalog_reader *r, sl_catalog_row *row, sl_error *err) {
    sl_status st;
    do {
        st = sl__csv_record(r, err);
    } while (st == SL_OK && sl__csv_blank(r));
    if (st == SL_E_NOT_FOUND) return st;
    row->row = ++r->record;
    if (st != SL_OK) return st;
    if (r->n_fields != r->n_header)
        return sl__err_set(err, SL_E_CORRUPT, "%zu fields, the header has %zu", r->n_fields,
                           r->n_header);
    const char **dst[SL__COL_N] = {&row->product_id, &row->image, &row->title, &row->category,
                                   &row->price_text, &row->description, &row->url, &row->currency,
                                   &row->more_images};
    for (int k = 0; k < SL__COL_N; k++) *dst[k] = r->col_of[k] >= 0 ? r->fields[r->col_of[k]] : NULL;
    for (size_t i = 0; i < r->n_fields && !row->not_utf8; i++)
        if ((int)i != r->col_of[SL__COL_IMAGE] && (int)i != r->col_of[SL__COL_MORE] &&
            !sl__utf8_valid(r->fields[i], strlen(r->fields[i])))
            row->not_utf8 = r->header[i];
    json_t *attrs = json_object();
    if (!attrs) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    for (size_t i = 0; i < r->n_fields; i++) {
        int known = 0;
        for (int k = 0; k < SL__COL_N; k++) known |= r->col_of[k] == (int)i;
        /* an empty cell is no value (CSV cannot tell "" from absent): no attribute, so an
         * export, whose columns are every product's attributes, reads back unchanged */
        if (known || r->header[i][0] == '\0' || r->fields[i][0] == '\0') continue;
        json_t *v = json_stringn(r->fields[i], strlen(r->fields[i]));
        if (!v) v = json_string("");  /* invalid UTF-8 (row->not_utf8 names it): no value */
        json_object_set_new(attrs, r->header[i], v);
    }
    r->attrs = json_dumps(attrs, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(attrs);
    if (!r->attrs) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    row->attrs_json = r->attrs;
    return SL_OK;
}

/* ---- JSONL --------------------------------------------------------------------------------- */

static char *sl__json_scalar_text(json_t *v) {
    char buf[64];
    if (json_is_string(v)) return sl__strdup(json_string_value(v));
    if (json_is_array(v)) { /* a list of strings (additional images): comma-separated */
        size_t n = 1, i;
        json_t *x;
        json_array_foreach(v, i, x) {
            if (!json_is_string(x)) return NULL;
            n += strlen(json_string_value(x)) + 1;
        }
        char *t = malloc(n);
        if (!t) return NULL;
        t[0] = '\0';
        json_array_foreach(v, i, x) {
            if (i) strcat(t, ",");
            strcat(t, json_string_value(x));
        }
        return t;
    }
    if (json_is_integer(v)) {
        snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(v));
        return sl__strdup(buf);
    }
    if (json_is_real(v)) {
        snprintf(buf, sizeof buf, "%.17g", json_real_value(v));
        return sl__strdup(buf);
    }
    return NULL;
}

static sl_status sl__jsonl_next(sl_catalog_reader *r, sl_catalog_row *row, sl_error *err) {
    for (;;) {
        if (r->pos >= r->len) return SL_E_NOT_FOUND;
        size_t s = r->pos;
        const char *nl = memchr(r->data + s, '\n', r->len - s);
        size_t e = nl ? (size_t)(nl - r->data) : r->len;
        r->pos = nl ? e + 1 : r->len;
        r->record++;
        size_t a = s;
        while (a < e && (r->data[a] == ' ' || r->data[a] == '\t' || r->data[a] == '\r')) a++;
        if (a == e) continue; /* blank line */
        row->row = r->record;
        json_error_t jerr;
        json_t *obj = json_loadb(r->data + s, e - s, JSON_REJECT_DUPLICATES, &jerr);
        if (!obj) return sl__err_set(err, SL_E_CORRUPT, "bad JSON at column %d: %s", jerr.column, jerr.text);
        if (!json_is_object(obj)) {
            json_decref(obj);
            return sl__err_set(err, SL_E_CORRUPT, "not a JSON object");
        }
        json_t *attrs = json_object();
        if (!attrs) {
            json_decref(obj);
            return sl__err_set(err, SL_E_NOMEM, "out of memory");
        }
        sl_status st = SL_OK;
        const char *key;
        json_t *val;
        /* the best name each field has in this object (earlier aliases win) */
        int best[SL__COL_N];
        for (int k = 0; k < SL__COL_N; k++) best[k] = SL__COL_ALIASES;
        json_object_foreach(obj, key, val)
            for (int k = 0; k < SL__COL_N; k++) {
                int al = sl__alias(k, key);
                if (al >= 0 && al < best[k] && !json_is_null(val)) best[k] = al;
            }
        json_object_foreach(obj, key, val) {
            int k, al = -1;
            for (k = 0; k < SL__COL_N; k++)
                if ((al = sl__alias(k, key)) >= 0) break;
            if (k == SL__COL_N || (al != best[k] && !json_is_null(val))) {
                json_object_set(attrs, key, val);
                continue;
            }
            if (json_is_null(val)) continue;
            char *t = sl__json_scalar_text(val);
            if (!t) {
                st = sl__err_set(err, SL_E_CORRUPT, "\"%s\" must be a string or a number%s", key,
                                 k == SL__COL_MORE ? " (or a list of strings)" : "");
                break;
            }
            free(r->jstr[k]);
            r->jstr[k] = t;
        }
        if (st == SL_OK) {
            r->attrs = json_dumps(attrs, JSON_COMPACT | JSON_PRESERVE_ORDER);
            if (!r->attrs) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        }
        json_decref(attrs);
        json_decref(obj);
        if (st != SL_OK) return st;
        row->product_id = r->jstr[SL__COL_ID];
        row->image = r->jstr[SL__COL_IMAGE];
        row->title = r->jstr[SL__COL_TITLE];
        row->category = r->jstr[SL__COL_CATEGORY];
        row->price_text = r->jstr[SL__COL_PRICE];
        row->description = r->jstr[SL__COL_DESC];
        row->url = r->jstr[SL__COL_URL];
        row->currency = r->jstr[SL__COL_CURRENCY];
        row->more_images = r->jstr[SL__COL_MORE];
        row->attrs_json = r->attrs;
        return SL_OK;
    }
}

/* ---- common -------------------------------------------------------------------------------- */

static sl_status sl__reader_start(char *data, size_t len, int jsonl, sl_catalog_reader **out,
                                  sl_error *err) {
    sl_catalog_reader *r = calloc(1, sizeof *r);
    if (!r) {
        free(data);
        return sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    r->data = data;
    r->len = len;
    r->jsonl = jsonl;
    if (!jsonl) {
        sl_status st = sl__csv_header(r, err);
        if (st != SL_OK) {
            sl_catalog_close(r);
            return st;
        }
    }
    *out = r;
    return SL_OK;
}

static int sl__ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcasecmp(s + a - b, suf) == 0;
}

sl_status sl_catalog_open(const char *path, sl_catalog_reader **out, sl_error *err) {
    *out = NULL;
    void *data;
    size_t len;
    sl_status st = sl__read_file(path, SL__FEED_MAX_BYTES, &data, &len, err);
    if (st != SL_OK) return st;
    int jsonl;
    if (sl__ends_with(path, ".jsonl") || sl__ends_with(path, ".ndjson")) jsonl = 1;
    else if (sl__ends_with(path, ".csv")) jsonl = 0;
    else {
        const char *p = data;
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
        jsonl = *p == '{';
    }
    st = sl__reader_start(data, len, jsonl, out, err);
    if (st != SL_OK) sl__err_prefix(err, "%s", path);
    return st;
}

sl_status sl_catalog_open_buffer(const void *data, size_t len, int is_jsonl,
                                 sl_catalog_reader **out, sl_error *err) {
    *out = NULL;
    size_t n;
    if (sl__add_size(len, 1, &n)) return sl__err_set(err, SL_E_TOO_LARGE, "feed too large");
    char *copy = malloc(n);
    if (!copy) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    if (len) memcpy(copy, data, len);
    copy[len] = '\0';
    return sl__reader_start(copy, len, is_jsonl, out, err);
}

sl_status sl_catalog_next(sl_catalog_reader *r, sl_catalog_row *row, sl_error *err) {
    memset(row, 0, sizeof *row);
    sl__reader_reset_record(r);
    return r->jsonl ? sl__jsonl_next(r, row, err) : sl__csv_next(r, row, err);
}
