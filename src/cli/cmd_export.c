/*
 * cli/cmd_export.c - `shoplens export`: the catalog as a feed that `shoplens add` reads back
 * (CSV per RFC 4180 or JSON Lines): one row per image, the image being the store's own copy
 * (absolute path), attributes as extra columns / keys.
 *
 * Round trip: adding an export to a new store gives the same products, metadata and images;
 * adding it to the store it came from changes nothing (a copy's name is its content hash, which
 * the ingest recognizes). CSV holds text only: attributes that are not strings (from JSON Lines
 * or the API) are written as their JSON text and come back as strings; JSON Lines keeps them.
 */
#include "cli/cli.h"
#include "cli/product_cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SL__EXPORT_PAGE 1000

static const char *const sl__known[] = {"product_id", "image", "title", "category", "price",
                                        "currency", "description", "url"};
enum { SL__N_KNOWN = sizeof sl__known / sizeof sl__known[0] };

static int sl__is_known(const char *k) {
    for (int i = 0; i < SL__N_KNOWN; i++)
        if (strcmp(k, sl__known[i]) == 0) return 1;
    return 0;
}

/* The shortest decimal text that reads back as the same double. */
static void sl__price_text(char *buf, size_t cap, double v) {
    snprintf(buf, cap, "%.15g", v);
    if (strtod(buf, NULL) != v) snprintf(buf, cap, "%.17g", v);
}

static void sl__csv_field(FILE *f, const char *s) {
    if (!s) s = "";
    if (!strpbrk(s, ",\"\r\n") && s[0] != ' ' && (!*s || s[strlen(s) - 1] != ' ')) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

/* Text of an attribute value in a CSV cell. malloc'ed. */
static char *sl__attr_text(json_t *v) {
    if (json_is_string(v)) return strdup(json_string_value(v));
    return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
}

typedef struct sl__exp {
    sl_store *s;
    sl_store_filter f;
    int jsonl;
    FILE *out;
    char **cols;            /* CSV: attribute columns, sorted */
    size_t n_cols;
    size_t products, rows, skipped_keys;
} sl__exp;

static int sl__cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Calls fn for every product passing the filter, with its images. */
static sl_status sl__each(sl__exp *x, sl_status (*fn)(sl__exp *, const sl_product *, const sl_image_ref *, size_t, sl_error *),
                          sl_error *err) {
    char after[SL_STORE_ID_MAX + 1] = "";
    int more = 1;
    sl_status st = SL_OK;
    while (more && st == SL_OK) {
        sl_product *v = NULL;
        size_t n = 0;
        if ((st = sl_store_list_products(x->s, &x->f, after, SL__EXPORT_PAGE, &v, &n, &more, err)) != SL_OK) break;
        for (size_t i = 0; i < n && st == SL_OK; i++) {
            sl_image_ref *imgs = NULL;
            size_t ni = 0;
            if ((st = sl_store_product_images(x->s, v[i].id, &imgs, &ni, err)) == SL_OK) st = fn(x, &v[i], imgs, ni, err);
            sl_image_refs_free(imgs, ni);
        }
        if (n) snprintf(after, sizeof after, "%s", v[n - 1].id);
        sl_products_free(v, n);
        if (!n) break;
    }
    return st;
}

/* Pass 1 of CSV: the union of attribute keys. */
static sl_status sl__collect_cols(sl__exp *x, const sl_product *p, const sl_image_ref *imgs, size_t ni, sl_error *err) {
    (void)imgs;
    (void)ni;
    json_t *a = p->attrs_json ? json_loads(p->attrs_json, 0, NULL) : NULL;
    const char *k;
    json_t *v;
    sl_status st = SL_OK;
    if (json_is_object(a)) {
        json_object_foreach(a, k, v) {
            if (sl__is_known(k) || !*k) continue;
            int seen = 0;
            for (size_t i = 0; i < x->n_cols && !seen; i++) seen = strcmp(x->cols[i], k) == 0;
            if (seen) continue;
            char **nc = realloc(x->cols, (x->n_cols + 1) * sizeof *nc);
            if (!nc || !(nc[x->n_cols] = strdup(k))) {
                if (nc) x->cols = nc;
                st = SL_E_NOMEM;
                if (err) { err->code = SL_E_NOMEM; snprintf(err->message, sizeof err->message, "out of memory"); }
                break;
            }
            x->cols = nc;
            x->n_cols++;
        }
    }
    json_decref(a);
    return st;
}

static sl_status sl__write_product(sl__exp *x, const sl_product *p, const sl_image_ref *imgs, size_t ni, sl_error *err) {
    (void)err;
    json_t *a = p->attrs_json ? json_loads(p->attrs_json, 0, NULL) : NULL;
    if (!json_is_object(a)) {
        json_decref(a);
        a = json_object();
    }
    char price[64] = "";
    if (p->has_price) sl__price_text(price, sizeof price, p->price);
    for (size_t i = 0; i < ni; i++) {
        char *abs = realpath(imgs[i].file, NULL);
        const char *img = abs ? abs : imgs[i].file;
        if (x->jsonl) {
            json_t *o = json_object();
            json_object_set_new(o, "product_id", sl__json_text(p->id));
            json_object_set_new(o, "image", sl__json_text(img));
            json_object_set_new(o, "title", sl__json_text(p->title));
            json_object_set_new(o, "category", sl__json_text(p->category));
            if (p->has_price) json_object_set_new(o, "price", json_real(p->price));
            if (p->currency && *p->currency) json_object_set_new(o, "currency", json_string(p->currency));
            json_object_set_new(o, "description", sl__json_text(p->description));
            json_object_set_new(o, "url", sl__json_text(p->url));
            const char *k;
            json_t *v;
            json_object_foreach(a, k, v) {
                if (sl__is_known(k)) {
                    if (i == 0) x->skipped_keys++;
                    continue;
                }
                json_object_set(o, k, v);
            }
            /* the shortest digits that read back as the same price */
            int prec = p->has_price && strtod(price, NULL) == p->price && strlen(price) <= 15 ? 15 : 17;
            char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(prec));
            json_decref(o);
            if (line) {
                fputs(line, x->out);
                fputc('\n', x->out);
                free(line);
            }
        } else {
            const char *fields[SL__N_KNOWN] = {p->id, img, p->title, p->category, price, p->currency,
                                              p->description, p->url};
            for (int c = 0; c < SL__N_KNOWN; c++) {
                if (c) fputc(',', x->out);
                sl__csv_field(x->out, fields[c]);
            }
            for (size_t c = 0; c < x->n_cols; c++) {
                fputc(',', x->out);
                json_t *v = json_object_get(a, x->cols[c]);
                char *t = v ? sl__attr_text(v) : NULL;
                sl__csv_field(x->out, t ? t : "");
                free(t);
            }
            fputs("\r\n", x->out);
        }
        free(abs);
        x->rows++;
    }
    if (!x->jsonl && ni) {
        const char *k;
        json_t *v;
        json_object_foreach(a, k, v) x->skipped_keys += sl__is_known(k);
    }
    json_decref(a);
    x->products++;
    return SL_OK;
}

static int sl__export_run(int argc, char **argv) {
    sl__popts o;
    int rc = sl__popts_parse(argc, argv, SL__OPT_FILTERS | SL__OPT_EXPORT, &o);
    if (rc) return rc;
    if (o.npos) return sl__cli_usage_error(argv[0], "unexpected argument '%s'", o.pos[0]);
    if (o.json) return sl__cli_usage_error(argv[0], "--json does not apply: use --format jsonl");
    const char *fmt = o.format;
    if (!fmt) {
        size_t n = o.out ? strlen(o.out) : 0;
        fmt = n > 6 && (strcmp(o.out + n - 6, ".jsonl") == 0 || (n > 7 && strcmp(o.out + n - 7, ".ndjson") == 0)) ? "jsonl" : "csv";
    }
    sl_engine *e;
    if ((rc = sl__open_engine(argv[0], &o, 0, 1, &e))) return rc;
    sl__exp x;
    memset(&x, 0, sizeof x);
    x.s = sl_engine_store(e);
    x.jsonl = strcmp(fmt, "jsonl") == 0;
    sl__popts_filter(&o, &x.f);
    sl_error err;
    sl_error_clear(&err);
    sl_status st = SL_OK;
    if (!x.jsonl) {
        st = sl__each(&x, sl__collect_cols, &err);
        if (st == SL_OK && x.n_cols > 1) qsort(x.cols, x.n_cols, sizeof *x.cols, sl__cmp_str);
    }
    char *tmp = NULL;
    if (st == SL_OK) {
        if (o.out) {
            /* written next to the target, renamed at the end: an interrupted export leaves no half file */
            size_t n = strlen(o.out) + 16;
            tmp = malloc(n);
            if (tmp) snprintf(tmp, n, "%s.tmp", o.out);
            x.out = tmp ? fopen(tmp, "wb") : NULL;
            if (!x.out) {
                fprintf(stderr, "shoplens export: cannot write %s: %s\n", o.out, strerror(errno));
                free(tmp);
                for (size_t i = 0; i < x.n_cols; i++) free(x.cols[i]);
                free(x.cols);
                sl_engine_free(e);
                return SL_EXIT_ERROR;
            }
        } else {
            x.out = stdout;
        }
        if (!x.jsonl) {
            for (int c = 0; c < SL__N_KNOWN; c++) fprintf(x.out, c ? ",%s" : "%s", sl__known[c]);
            for (size_t c = 0; c < x.n_cols; c++) {
                fputc(',', x.out);
                sl__csv_field(x.out, x.cols[c]);
            }
            fputs("\r\n", x.out);
        }
        st = sl__each(&x, sl__write_product, &err);
    }
    sl_engine_free(e);
    for (size_t i = 0; i < x.n_cols; i++) free(x.cols[i]);
    free(x.cols);
    int io_fail = x.out && (ferror(x.out) || fflush(x.out) != 0);
    if (x.out && x.out != stdout && fclose(x.out) != 0) io_fail = 1;
    if (tmp) {
        if (st == SL_OK && !io_fail && rename(tmp, o.out) != 0) io_fail = 1;
        if (st != SL_OK || io_fail) remove(tmp);
        free(tmp);
    }
    if (st != SL_OK) return sl__cli_fail(argv[0], &err);
    if (io_fail) {
        fprintf(stderr, "shoplens export: cannot write %s: %s\n", o.out ? o.out : "stdout", strerror(errno));
        return SL_EXIT_ERROR;
    }
    if (x.skipped_keys)
        fprintf(stderr, "shoplens export: %zu attribute(s) named like a feed column were left out\n", x.skipped_keys);
    if (!o.quiet)
        fprintf(stderr, "exported %zu products (%zu rows) as %s%s%s\n", x.products, x.rows, fmt,
                o.out ? " to " : "", o.out ? o.out : "");
    return SL_EXIT_OK;
}

const sl__cli_cmd sl__cmd_export = {
    "export", "write the catalog as a CSV or JSONL feed (reads back with add)",
    "Usage: shoplens export [--format csv|jsonl] [--out FILE] [--category C] [--min-price X]\n"
    "                       [--max-price Y] [--text WORDS] [--store DIR] [--quiet]\n\n"
    "Writes the products (by id; the filters of list apply) as a feed: one row per image, with\n"
    "the columns product_id, image, title, category, price, currency, description, url and one\n"
    "column per attribute (CSV) or the attributes as keys (JSONL). image is the absolute path\n"
    "of the store's copy of the image. 'shoplens add' reads the file back: into a new store it\n"
    "gives the same catalog; into the same store it changes nothing. CSV holds text, so\n"
    "attributes that are numbers or objects come back as their JSON text; JSONL keeps them.\n"
    "  --format   csv (default, or from --out's extension .jsonl/.ndjson) or jsonl\n"
    "  --out FILE write FILE (atomically) instead of standard output\n"
    "  --quiet    no summary line on stderr\n",
    sl__export_run};
