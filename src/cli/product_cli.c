/*
 * cli/product_cli.c - shared option parsing, output and progress for the product subcommands
 * (see product_cli.h). Only the CLI prints; JSON shapes are documented in docs/cli.md.
 */
#include "cli/product_cli.h"
#include "cli/cli.h"
#include "util/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A number option in lo..hi (an integer when integer is set); the message gives the range. */
static int sl__num_arg(const char *cmd, const char *name, const char *v, double lo, double hi,
                       int integer, double *out) {
    char *end;
    double d = strtod(v, &end);
    if (!*v || *end || !isfinite(d) || d < lo || d > hi || (integer && d != floor(d)))
        return sl__cli_usage_error(cmd, "bad value '%s' for %s: must be %s in %.15g..%.15g", v, name,
                                   integer ? "an integer" : "a number", lo, hi);
    *out = d;
    return 0;
}

int sl__popts_parse(int argc, char **argv, unsigned allowed, sl__popts *o) {
    memset(o, 0, sizeof *o);
    const char *cmd = argv[0];
    int only_pos = 0, has_k = 0;
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (only_pos || a[0] != '-' || !a[1]) {
            if (o->npos == SL__MAX_POS) return sl__cli_usage_error(cmd, "too many arguments");
            o->pos[o->npos++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_pos = 1;
            continue;
        }
        /* --name=value or --name value */
        char name[64];
        const char *val = NULL;
        const char *eq = strchr(a, '=');
        if (eq && (size_t)(eq - a) < sizeof name) {
            memcpy(name, a, (size_t)(eq - a));
            name[eq - a] = '\0';
            val = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", a);
        }
#define SL__TAKE()                                                                           \
    do {                                                                                     \
        if (!val) {                                                                          \
            if (i + 1 >= argc) return sl__cli_usage_error(cmd, "%s needs a value", name);    \
            val = argv[++i];                                                                 \
        }                                                                                    \
    } while (0)
        double d;
        int rc;
        if (strcmp(name, "--json") == 0 && !val) o->json = 1;
        else if (strcmp(name, "--quiet") == 0 && !val) o->quiet = 1;
        else if (strcmp(name, "--store") == 0) { SL__TAKE(); o->store = val; }
        else if ((strcmp(name, "-k") == 0 || strcmp(name, "--k") == 0) && (allowed & SL__OPT_K)) {
            SL__TAKE();
            if ((rc = sl__num_arg(cmd, name, val, SL_ENGINE_K_MIN, SL_ENGINE_K_MAX, 1, &d))) return rc;
            o->q.k = (int)d;
            has_k = 1;
        } else if (strcmp(name, "--offset") == 0 && (allowed & SL__OPT_OFFSET)) {
            SL__TAKE();
            if ((rc = sl__num_arg(cmd, name, val, 0, SL_ENGINE_OFFSET_MAX, 1, &d))) return rc;
            o->q.offset = (int)d;
        } else if (strcmp(name, "--ef") == 0 && (allowed & SL__OPT_EF)) {
            SL__TAKE();
            if ((rc = sl__num_arg(cmd, name, val, SL_ENGINE_HNSW_EF_MIN, SL_ENGINE_HNSW_EF_MAX, 1, &d))) return rc;
            o->q.ef = (int)d;
        } else if (strcmp(name, "--region") == 0 && (allowed & SL__OPT_REGION)) {
            SL__TAKE();
            sl_error rerr;
            sl_error_clear(&rerr);
            if (sl_engine_parse_region(val, &o->q, &rerr) != SL_OK)
                return sl__cli_usage_error(cmd, "bad value '%s' for --region: %s (x, y from the photo's "
                                           "top-left corner, w and h at least %d, in pixels)", val,
                                           rerr.message, SL_ENGINE_REGION_MIN);
        } else if (strcmp(name, "--category") == 0 && (allowed & SL__OPT_FILTERS)) {
            SL__TAKE();
            o->q.category = val;
        } else if (strcmp(name, "--min-price") == 0 && (allowed & SL__OPT_FILTERS)) {
            SL__TAKE();
            if ((rc = sl__num_arg(cmd, name, val, SL_PRODUCT_PRICE_MIN, SL_PRODUCT_PRICE_MAX, 0, &o->q.min_price))) return rc;
            o->q.has_min_price = 1;
        } else if (strcmp(name, "--max-price") == 0 && (allowed & SL__OPT_FILTERS)) {
            SL__TAKE();
            if ((rc = sl__num_arg(cmd, name, val, SL_PRODUCT_PRICE_MIN, SL_PRODUCT_PRICE_MAX, 0, &o->q.max_price))) return rc;
            o->q.has_max_price = 1;
        } else if (strcmp(name, "--text") == 0 && (allowed & SL__OPT_FILTERS)) {
            SL__TAKE();
            o->q.text = val;
        } else if (strcmp(name, "--text-mode") == 0 && (allowed & SL__OPT_FILTERS)) {
            SL__TAKE();
            if (strcmp(val, "restrict") == 0) o->q.text_mode = SL_TEXT_RESTRICT;
            else if (strcmp(val, "boost") == 0) o->q.text_mode = SL_TEXT_BOOST;
            else return sl__cli_usage_error(cmd, "--text-mode is restrict or boost, not '%s'", val);
        } else if (strcmp(name, "--jobs") == 0 && (allowed & SL__OPT_JOBS)) {
            SL__TAKE();
            if ((rc = sl__num_arg(cmd, name, val, 0, 256, 1, &d))) return rc;
            o->jobs = (int)d;
        } else if (strcmp(name, "--threshold") == 0 && (allowed & SL__OPT_THRESHOLD)) {
            SL__TAKE();
            if ((rc = sl__num_arg(cmd, name, val, 0, 1, 0, &o->threshold))) return rc;
        } else if (strcmp(name, "--features") == 0 && (allowed & SL__OPT_FEATURES)) {
            SL__TAKE();
            o->features = val;
        } else if (strcmp(name, "--index") == 0 && (allowed & SL__OPT_INDEX)) {
            SL__TAKE();
            o->index_kind = val;
        } else if (strcmp(name, "--limit") == 0 && (allowed & SL__OPT_PAGE)) {
            SL__TAKE();
            if ((rc = sl__num_arg(cmd, name, val, 1, SL_STORE_LIST_MAX, 1, &d))) return rc;
            o->limit = (size_t)d;
        } else if (strcmp(name, "--cursor") == 0 && (allowed & SL__OPT_PAGE)) {
            SL__TAKE();
            o->cursor = val;
        } else if (strcmp(name, "--format") == 0 && (allowed & SL__OPT_EXPORT)) {
            SL__TAKE();
            if (strcmp(val, "csv") != 0 && strcmp(val, "jsonl") != 0)
                return sl__cli_usage_error(cmd, "--format is csv or jsonl, not '%s'", val);
            o->format = val;
        } else if (strcmp(name, "--out") == 0 && (allowed & SL__OPT_EXPORT)) {
            SL__TAKE();
            o->out = val;
        } else if (strcmp(name, "--dry-run") == 0 && !val && (allowed & SL__OPT_INGEST)) {
            o->dry_run = 1;
        } else if (strcmp(name, "--no-wait") == 0 && !val && (allowed & SL__OPT_INGEST)) {
            o->no_wait = 1;
        } else if (strcmp(name, "--currency") == 0 && (allowed & SL__OPT_INGEST)) {
            SL__TAKE();
            if (!*val || !sl_product_currency_valid(val, NULL))
                return sl__cli_usage_error(cmd, "bad value '%s' for --currency: must be a three-letter ISO 4217 code such as USD or EUR", val);
            o->currency = val;
        } else if (strcmp(name, "--fetch-timeout") == 0 && (allowed & SL__OPT_INGEST)) {
            SL__TAKE();
            if ((rc = sl__num_arg(cmd, name, val, SL_ENGINE_FETCH_TIMEOUT_MIN, SL_ENGINE_FETCH_TIMEOUT_MAX, 0, &d))) return rc;
            o->fetch_timeout = d;
        } else if (strcmp(name, "--fetch-retries") == 0 && (allowed & SL__OPT_INGEST)) {
            SL__TAKE();
            if ((rc = sl__num_arg(cmd, name, val, SL_ENGINE_FETCH_RETRIES_MIN, SL_ENGINE_FETCH_RETRIES_MAX, 1, &d))) return rc;
            o->fetch_retries = (int)d;
            o->fetch_retries_set = 1;
        } else if (strcmp(name, "--max-removals") == 0 && (allowed & SL__OPT_SYNC)) {
            SL__TAKE();
            size_t vl = strlen(val);
            if (vl > 1 && val[vl - 1] == '%') {
                char num[64];
                snprintf(num, sizeof num, "%.*s", (int)(vl - 1), val);
                char *end;
                d = strtod(num, &end);
                if (!*num || *end || !isfinite(d) || d < 0 || d > 100)
                    return sl__cli_usage_error(cmd, "bad value '%s' for --max-removals: must be a count (0 or more) or a percentage in 0%%..100%%", val);
                o->max_removals_percent = d;
                if (d == 0) { o->max_removals = 0; o->max_removals_set = 1; }
            } else {
                char *end;
                unsigned long long n = strtoull(val, &end, 10);
                if (!*val || *end || val[0] == '-')
                    return sl__cli_usage_error(cmd, "bad value '%s' for --max-removals: must be a count (0 or more) or a percentage in 0%%..100%%", val);
                o->max_removals = (size_t)n;
                o->max_removals_set = 1;
            }
        } else if (strcmp(name, "--repair") == 0 && !val && (allowed & SL__OPT_VERIFY)) {
            o->repair = 1;
        } else if (strcmp(name, "--quick") == 0 && !val && (allowed & SL__OPT_VERIFY)) {
            o->quick = 1;
        } else {
            return sl__cli_usage_error(cmd, "unknown option '%s'", a);
        }
#undef SL__TAKE
    }
    if (o->q.has_min_price && o->q.has_max_price && o->q.min_price > o->q.max_price)
        return sl__cli_usage_error(cmd, "--min-price is above --max-price");
    int k = has_k ? o->q.k : SL_ENGINE_K_DEFAULT;
    if (o->q.offset + k > SL_ENGINE_RANK_MAX)
        return sl__cli_usage_error(cmd, "--offset + -k must be at most %d (offset %d, k %d)", SL_ENGINE_RANK_MAX,
                                   o->q.offset, k);
    return 0;
}

void sl__popts_filter(const sl__popts *o, sl_store_filter *f) {
    memset(f, 0, sizeof *f);
    f->category = o->q.category;
    f->has_min_price = o->q.has_min_price;
    f->min_price = o->q.min_price;
    f->has_max_price = o->q.has_max_price;
    f->max_price = o->q.max_price;
    f->text = o->q.text;
}

int sl__open_engine(const char *cmd, const sl__popts *o, int create, int read_only, sl_engine **e) {
    sl_engine_opts eo;
    memset(&eo, 0, sizeof eo);
    eo.create = create;
    eo.read_only = read_only;
    eo.features = o->features;
    eo.index_kind = o->index_kind;
    /* on a cluster store only the commands that search (train and calibrate search the catalog
     * for their photos, check for the photo's nearest other products) load the vectors of the
     * whole catalog */
    static const char *const searchers[] = {"search", "similar", "classify", "dedup", "eval", "train", "calibrate",
                                            "check", NULL};
    int searches = 0;
    for (int i = 0; searchers[i]; i++) searches |= strcmp(cmd, searchers[i]) == 0;
    eo.no_index = sl_store_is_url(o->store ? o->store : sl_store_default_dir()) && !searches;
    sl_error err;
    sl_error_clear(&err);
    if (sl_engine_open(o->store, &eo, e, &err) != SL_OK) return sl__cli_fail(cmd, &err);
    return 0;
}

json_t *sl__matches_json(const sl_matches *m, size_t rank0) {
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < m->n; i++) {
        const sl_match *r = &m->items[i];
        json_t *o = json_object();
        if (!o) break;
        json_object_set_new(o, "rank", json_integer((json_int_t)(rank0 + i + 1)));
        json_object_set_new(o, "product_id", sl__json_text(r->product_id));
        json_object_set_new(o, "score", json_real(round(r->score * 1e6) / 1e6));
        json_object_set_new(o, "confidence", json_real(round(r->confidence * 1e6) / 1e6));
        json_object_set_new(o, "match", json_boolean(r->match));
        json_object_set_new(o, "title", sl__json_text(r->title));
        json_object_set_new(o, "category", sl__json_text(r->category));
        json_object_set_new(o, "price", r->has_price ? json_real(r->price) : json_null());
        json_object_set_new(o, "currency", r->currency && *r->currency ? json_string(r->currency) : json_null());
        json_object_set_new(o, "url", r->url && *r->url ? sl__json_text(r->url) : json_null());
        json_object_set_new(o, "image", sl__json_text(r->image));
        json_object_set_new(o, "image_id", json_integer(r->image_id));
        json_object_set_new(o, "inliers", r->inliers >= 0 ? json_integer(r->inliers) : json_null());
        json_array_append_new(arr, o);
    }
    json_t *root = json_object();
    if (root) json_object_set_new(root, "results", arr ? arr : json_array());
    return root;
}

void sl__print_cell(const char *s, int w) {
    if (!s) s = "";
    size_t n = strlen(s);
    if (n <= (size_t)w) {
        printf("%-*s", w, s);
        return;
    }
    /* cut before a UTF-8 continuation byte never, and mark the cut */
    size_t keep = w > 3 ? (size_t)w - 3 : 0;
    while (keep > 0 && ((unsigned char)s[keep] & 0xC0) == 0x80) keep--;
    printf("%.*s...%*s", (int)keep, s, (int)((size_t)w - 3 - keep), "");
}

void sl__format_price(char *buf, size_t cap, int has_price, double price, const char *currency) {
    if (!has_price) snprintf(buf, cap, "-");
    else if (currency && *currency) snprintf(buf, cap, "%.2f %s", price, currency);
    else snprintf(buf, cap, "%.2f", price);
}

void sl__print_matches(const sl_matches *m, size_t rank0) {
    if (m->n == 0) {
        printf("no results\n");
        return;
    }
    int wid = 7, wcat = 8; /* "product", "category" */
    size_t matches = 0;
    for (size_t i = 0; i < m->n; i++) {
        int l = (int)strlen(m->items[i].product_id);
        if (l > wid) wid = l;
        l = m->items[i].category ? (int)strlen(m->items[i].category) : 0;
        if (l > wcat) wcat = l < 24 ? l : 24;
        matches += m->items[i].match != 0;
    }
    printf("%-4s %-*s %8s %5s %-7s  %-32s %-*s %14s\n", "#", wid, "product", "score", "conf", "", "title", wcat,
           "category", "price");
    for (size_t i = 0; i < m->n; i++) {
        const sl_match *r = &m->items[i];
        char price[48];
        sl__format_price(price, sizeof price, r->has_price, r->price, r->currency);
        printf("%-4zu %-*s %8.4f %5.2f %-7s  ", rank0 + i + 1, wid, r->product_id, r->score, r->confidence,
               r->match ? "match" : "similar");
        sl__print_cell(r->title, 32);
        putchar(' ');
        sl__print_cell(r->category, wcat);
        printf(" %14s\n", price);
    }
    /* a later page says nothing about the first one */
    if (matches == 0 && rank0 == 0) printf("no close match: the results are similar products\n");
}

json_t *sl__json_text(const char *s) {
    json_t *j = json_string(s ? s : "");
    if (j) return j;
    char *c = strdup(s);
    if (!c) return NULL;
    sl__utf8_scrub(c);
    j = json_string(c);
    free(c);
    return j;
}

json_t *sl__product_json(const sl_product *p, const sl_image_ref *images, size_t n_images) {
    json_t *attrs = p->attrs_json ? json_loads(p->attrs_json, 0, NULL) : NULL;
    if (!json_is_object(attrs)) {
        json_decref(attrs);
        attrs = json_object();
    }
    json_t *imgs = json_array();
    for (size_t i = 0; imgs && i < n_images; i++)
        json_array_append_new(imgs, json_pack("{s:I, s:s, s:I, s:o, s:o}", "id", (json_int_t)images[i].id,
                                              "sha256", images[i].hash, "bytes", (json_int_t)images[i].size,
                                              "file", sl__json_text(images[i].file), "source", sl__json_text(images[i].source)));
    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "id", sl__json_text(p->id),
                     "title", sl__json_text(p->title), "category", sl__json_text(p->category),
                     "description", sl__json_text(p->description), "url", sl__json_text(p->url),
                     "price", p->has_price ? json_real(p->price) : json_null(),
                     "currency", p->currency && *p->currency ? json_string(p->currency) : json_null(),
                     "attrs", attrs, "images", imgs ? imgs : json_array());
}

int sl__print_json(json_t *v) {
    if (!v) {
        fprintf(stderr, "shoplens: out of memory\n");
        return SL_EXIT_ERROR;
    }
    char *s = json_dumps(v, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    json_decref(v);
    if (!s) {
        fprintf(stderr, "shoplens: out of memory\n");
        return SL_EXIT_ERROR;
    }
    puts(s);
    free(s);
    return 0;
}

void sl__progress_init(sl__progress *p, const char *what, int quiet) {
    memset(p, 0, sizeof *p);
    p->what = what;
    p->unit = "products";
    p->tty = isatty(2);
    p->quiet = quiet;
    p->last = -1e9;
}

void sl__progress_cb(void *ctx, size_t done, size_t total, double elapsed) {
    sl__progress *p = ctx;
    if (p->quiet) return;
    double rate = elapsed > 0 ? (double)done / elapsed : 0;
    double eta = rate > 0 ? (double)(total - done) / rate : 0;
    int pct = total ? (int)(100.0 * (double)done / (double)total) : 100;
    if (p->tty) {
        char bar[31];
        int fill = total ? (int)(30.0 * (double)done / (double)total) : 30;
        for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
        bar[30] = '\0';
        fprintf(stderr, "\r%s [%s] %zu/%zu %3d%% %.1f/s ETA %d:%02d ", p->what, bar, done, total,
                pct, rate, (int)eta / 60, (int)eta % 60);
        if (done == total) fputc('\n', stderr);
        fflush(stderr);
    } else if (elapsed - p->last >= 2.0 || done == total) {
        fprintf(stderr, "%s: %zu/%zu %s (%d%%), %.1f/s, ETA %.0fs\n", p->what, done, total, p->unit,
                pct, rate, eta);
        p->last = elapsed;
    }
}

int sl__cli_matches_cmd(int argc, char **argv, int similar) {
    sl__popts o;
    int rc = sl__popts_parse(argc, argv, SL__OPT_K | SL__OPT_OFFSET | SL__OPT_FILTERS | SL__OPT_EF | (similar ? 0 : SL__OPT_REGION), &o);
    if (rc) return rc;
    if (similar ? o.npos != 1 : o.npos < 1)
        return sl__cli_usage_error(argv[0], similar ? "give exactly one PRODUCT_ID" : "give at least one IMAGE");
    sl_engine *e;
    if ((rc = sl__open_engine(argv[0], &o, 0, 1, &e))) return rc;
    int failed = 0;
    size_t rank0 = o.q.offset > 0 ? (size_t)o.q.offset : 0;
    for (int i = 0; i < o.npos && rc == 0; i++) {
        sl_matches m;
        sl_error err;
        sl_error_clear(&err);
        sl_status st = similar ? sl_engine_similar(e, o.pos[i], &o.q, &m, &err)
                               : sl_engine_search_file(e, o.pos[i], &o.q, &m, &err);
        if (st != SL_OK) {
            if (o.npos == 1) {
                sl_engine_free(e);
                return sl__cli_fail(argv[0], &err);
            }
            fprintf(stderr, "shoplens %s: %s: %s: %s\n", argv[0], o.pos[i], sl_status_name(st), err.message);
            failed = 1;
            continue;
        }
        if (o.npos > 1) { /* several images: one line per image (JSON Lines with --json) */
            if (o.json) {
                json_t *j = sl__matches_json(&m, rank0);
                if (j) json_object_set_new(j, "image", sl__json_text(o.pos[i]));
                char *s2 = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10)) : NULL;
                json_decref(j);
                if (!s2) rc = SL_EXIT_ERROR;
                else puts(s2);
                free(s2);
            } else {
                printf("%s\n", o.pos[i]);
                sl__print_matches(&m, rank0);
            }
        } else if (o.json) {
            rc = sl__print_json(sl__matches_json(&m, rank0));
        } else {
            sl__print_matches(&m, rank0);
        }
        sl_matches_free(&m);
    }
    sl_engine_free(e);
    return rc ? rc : failed ? SL_EXIT_ERROR : SL_EXIT_OK;
}

int sl__cli_image_cmd(int argc, char **argv, unsigned allowed, int npos, int img_pos,
                      const char *usage_msg, sl__popts *o, sl_engine **e, sl_image **img) {
    *e = NULL;
    *img = NULL;
    int rc = sl__popts_parse(argc, argv, allowed, o);
    if (rc) return rc;
    if (o->npos != npos) return sl__cli_usage_error(argv[0], "%s", usage_msg);
    sl_error err;
    sl_error_clear(&err);
    sl_image_load_opts lo;
    memset(&lo, 0, sizeof lo);
    lo.max_side = SL_ENGINE_MAX_SIDE_DEFAULT;
    if (sl_image_load_file(o->pos[img_pos], &lo, img, NULL, &err) != SL_OK) return sl__cli_fail(argv[0], &err);
    if ((rc = sl__open_engine(argv[0], o, 0, 1, e))) {
        sl_image_free(*img);
        *img = NULL;
    }
    return rc;
}
