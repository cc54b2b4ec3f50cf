/*
 * cli/cmd_train.c - `shoplens train`: learns the store's projection head from photos labelled
 * with products (an ImageFolder whose sub-folders are product ids, or a CSV with the columns
 * photo and product_id) or, without --photos, from augmented catalog images. Progress on
 * stderr, a summary (or JSON) on stdout. Exit 0, 3 when some photos were skipped, 1 on failure.
 */
#include "cli/cli.h"
#include "cli/product_cli.h"
#include "eval/eval_internal.h"
#include "util/util.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static volatile int sl__train_cancel;
static void sl__train_on_signal(int sig) {
    (void)sig;
    sl__train_cancel = 1;
}

/* The photos of a CSV (photo,product_id; paths relative to the CSV's folder). */
typedef struct sl__plist {
    sl_train_photo *v;
    char **own;          /* strings to free */
    size_t n, n_own;
} sl__plist;

static void sl__plist_free(sl__plist *p) {
    for (size_t i = 0; i < p->n_own; i++) free(p->own[i]);
    free(p->own);
    free(p->v);
    memset(p, 0, sizeof *p);
}

static int sl__plist_push(sl__plist *p, char *path, char *pid) {
    sl_train_photo *nv = sl__reallocarray(p->v, p->n + 1, sizeof *nv);
    if (nv) p->v = nv;
    char **no = sl__reallocarray(p->own, p->n_own + 2, sizeof *no);
    if (no) p->own = no;
    if (!nv || !no || !path || !pid) {
        free(path);
        free(pid);
        return -1;
    }
    p->own[p->n_own++] = path;
    p->own[p->n_own++] = pid;
    p->v[p->n].path = path;
    p->v[p->n].product_id = pid;
    p->n++;
    return 0;
}

static char *sl__join(const char *dir, const char *rel) {
    if (rel[0] == '/') return sl__strdup(rel);
    size_t n = strlen(dir) + strlen(rel) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, rel);
    return p;
}

static int sl__read_csv(const char *cmd, const char *path, sl__plist *out) {
    sl_catalog_reader *r = NULL;
    sl_error err;
    sl_error_clear(&err);
    if (sl_catalog_open(path, &r, &err) != SL_OK) return sl__cli_fail(cmd, &err);
    char *dir = sl__strdup(path);
    if (!dir) {
        sl_catalog_close(r);
        fprintf(stderr, "shoplens %s: out of memory\n", cmd);
        return SL_EXIT_ERROR;
    }
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else strcpy(dir, ".");
    int rc = 0;
    for (;;) {
        sl_catalog_row row;
        sl_status st = sl_catalog_next(r, &row, &err);
        if (st == SL_E_NOT_FOUND) break;
        if (st != SL_OK) {
            fprintf(stderr, "shoplens %s: %s: row %zu: %s\n", cmd, path, row.row, err.message);
            rc = SL_EXIT_ERROR;
            break;
        }
        const char *photo = row.image;
        json_t *attrs = NULL;
        if (!photo || !*photo) { /* the `photo` column lands among the other columns */
            attrs = row.attrs_json ? json_loads(row.attrs_json, 0, NULL) : NULL;
            photo = attrs ? json_string_value(json_object_get(attrs, "photo")) : NULL;
        }
        if (!photo || !*photo || !row.product_id || !*row.product_id) {
            fprintf(stderr, "shoplens %s: %s: row %zu: needs a photo (column photo or image) and a product_id\n",
                    cmd, path, row.row);
            json_decref(attrs);
            rc = SL_EXIT_ERROR;
            break;
        }
        if (sl__plist_push(out, sl__join(dir, photo), sl__strdup(row.product_id)) != 0) {
            json_decref(attrs);
            fprintf(stderr, "shoplens %s: out of memory\n", cmd);
            rc = SL_EXIT_ERROR;
            break;
        }
        json_decref(attrs);
    }
    free(dir);
    sl_catalog_close(r);
    if (rc == 0 && out->n == 0) {
        fprintf(stderr, "shoplens %s: %s: no photos listed\n", cmd, path);
        rc = SL_EXIT_ERROR;
    }
    return rc;
}

static int sl__read_folder(const char *cmd, const char *dir, sl__plist *out) {
    sl__eval_set s;
    sl_error err;
    sl_error_clear(&err);
    if (sl__eval_set_load(dir, &s, &err) != SL_OK) return sl__cli_fail(cmd, &err);
    int rc = 0;
    for (size_t i = 0; i < s.n && rc == 0; i++)
        if (sl__plist_push(out, sl__strdup(s.paths[i]), sl__strdup(s.label_names[s.labels[i]])) != 0) {
            fprintf(stderr, "shoplens %s: out of memory\n", cmd);
            rc = SL_EXIT_ERROR;
        }
    sl__eval_set_free(&s);
    return rc;
}

static void sl__epoch_cb(void *ctx, int epoch, int epochs, double loss) {
    const sl__popts *o = ctx;
    if (!o->quiet && !o->json) fprintf(stderr, "train: epoch %d/%d, loss %.4f\n", epoch, epochs, loss);
}

static int sl__train_run(int argc, char **argv) {
    const char *photos = NULL;
    sl_head_train_opts ho;
    sl_head_train_opts_init(&ho);
    int has_seed = 0;
    uint64_t seed = 0;
    /* our options first; the rest goes to the shared parser */
    char **rest = calloc((size_t)argc + 1, sizeof *rest);
    if (!rest) return SL_EXIT_ERROR;
    int nrest = 0;
    rest[nrest++] = argv[0];
    int rc = 0;
    for (int i = 1; i < argc && !rc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end;
        if (strcmp(a, "--photos") == 0 || strcmp(a, "--epochs") == 0 || strcmp(a, "--seed") == 0 ||
            strcmp(a, "--train-opt") == 0) {
            if (!v) { rc = sl__cli_usage_error(argv[0], "%s needs a value", a); break; }
            i++;
            if (strcmp(a, "--photos") == 0) photos = v;
            else if (strcmp(a, "--epochs") == 0) {
                errno = 0;
                long n = strtol(v, &end, 10);
                if (*end || errno || n < SL_HEAD_EPOCHS_MIN || n > SL_HEAD_EPOCHS_MAX)
                    rc = sl__cli_usage_error(argv[0], "bad --epochs '%s' (%d..%d)", v, SL_HEAD_EPOCHS_MIN, SL_HEAD_EPOCHS_MAX);
                else ho.epochs = (int)n;
            } else if (strcmp(a, "--seed") == 0) {
                errno = 0;
                unsigned long long n = strtoull(v, &end, 10);
                if (*end || errno || !*v || v[0] == '-') rc = sl__cli_usage_error(argv[0], "bad --seed '%s' (a non-negative integer)", v);
                else { seed = n; has_seed = 1; }
            } else if (sl__cli_head_opt(&ho, v) != 0) {
                rc = sl__cli_usage_error(argv[0], "bad --train-opt '%s' (epochs=, seed=, rank=, lambda=, temperature=, category=, batch=, lr=)", v);
            }
        } else {
            rest[nrest++] = argv[i];
        }
    }
    sl__popts o;
    if (!rc) rc = sl__popts_parse(nrest, rest, SL__OPT_JOBS | SL__OPT_QUIET, &o);
    free(rest);
    if (rc) return rc;
    if (o.npos) return sl__cli_usage_error(argv[0], "unexpected argument '%s'", o.pos[0]);
    sl__plist pl;
    memset(&pl, 0, sizeof pl);
    if (photos) {
        struct stat sb;
        if (stat(photos, &sb) != 0) {
            fprintf(stderr, "shoplens %s: --photos %s: %s\n", argv[0], photos, strerror(errno));
            return SL_EXIT_ERROR;
        }
        rc = S_ISDIR(sb.st_mode) ? sl__read_folder(argv[0], photos, &pl) : sl__read_csv(argv[0], photos, &pl);
        if (rc) {
            sl__plist_free(&pl);
            return rc;
        }
    }
    sl_engine *e;
    if ((rc = sl__open_engine(argv[0], &o, 0, 0, &e))) {
        sl__plist_free(&pl);
        return rc;
    }
    sl__progress pr;
    sl__progress_init(&pr, photos ? "train: describing photos" : "train: describing augmented catalog images",
                      o.quiet || o.json);
    ho.progress = sl__epoch_cb;
    ho.progress_ctx = &o;
    sl_train_opts to;
    memset(&to, 0, sizeof to);
    to.photos = pl.v;
    to.n_photos = pl.n;
    to.head = &ho;
    to.seed = seed;
    to.has_seed = has_seed;
    to.jobs = o.jobs;
    to.progress = sl__progress_cb;
    to.progress_ctx = &pr;
    to.cancel = &sl__train_cancel;
    signal(SIGINT, sl__train_on_signal);
    signal(SIGTERM, sl__train_on_signal);
    sl_train_report rep;
    sl_error err;
    sl_error_clear(&err);
    sl_status st = sl_engine_train(e, &to, &rep, &err);
    sl_engine_free(e);
    sl__plist_free(&pl);
    int partial = rep.n_failures > 0;
    if (o.json && st == SL_OK) {
        json_t *fails = json_array();
        for (size_t i = 0; fails && i < rep.n_failures; i++) {
            const sl_train_failure *f = &rep.failures[i];
            json_array_append_new(fails, json_pack("{s:o, s:o, s:s, s:s}",
                "file", f->file ? json_string(f->file) : json_null(),
                "product_id", f->product_id ? json_string(f->product_id) : json_null(),
                "status", sl_status_name(f->status), "message", f->message ? f->message : ""));
        }
        json_t *js = json_pack("{s:I, s:I, s:I, s:I, s:b, s:I, s:f, s:f, s:f, s:o}",
            "photos", (json_int_t)rep.photos, "products", (json_int_t)rep.products,
            "unknown", (json_int_t)rep.unknown, "failed", (json_int_t)rep.failed,
            "augmented", rep.augmented, "features_version", (json_int_t)rep.features_version,
            "describe_seconds", rep.describe_seconds, "train_seconds", rep.train_seconds,
            "seconds", rep.seconds, "failures", fails ? fails : json_array());
        sl_train_report_free(&rep);
        if (sl__print_json(js)) return SL_EXIT_ERROR;
        return partial ? SL_EXIT_PARTIAL : SL_EXIT_OK;
    }
    for (size_t i = 0; i < rep.n_failures && i < 20; i++)
        fprintf(stderr, "shoplens %s: %s (%s): %s\n", argv[0], rep.failures[i].file ? rep.failures[i].file : "?",
                rep.failures[i].product_id ? rep.failures[i].product_id : "?", rep.failures[i].message);
    if (rep.n_failures > 20) fprintf(stderr, "shoplens %s: ... %zu more skipped photos\n", argv[0], rep.n_failures - 20);
    if (st != SL_OK) {
        sl_train_report_free(&rep);
        return sl__cli_fail(argv[0], &err);
    }
    printf("trained on %zu %s of %zu products (%zu unknown, %zu unreadable skipped): features version %lld; "
           "described in %.1f s, trained in %.1f s\n",
           rep.photos, rep.augmented ? "augmented catalog images" : "photos", rep.products, rep.unknown,
           rep.failed, (long long)rep.features_version, rep.describe_seconds, rep.train_seconds);
    sl_train_report_free(&rep);
    return partial ? SL_EXIT_PARTIAL : SL_EXIT_OK;
}

const sl__cli_cmd sl__cmd_train = {
    "train", "learn from photos of the products: a projection head for search",
    "Usage: shoplens train [--store DIR] [--photos DIR|CSV] [--epochs N] [--seed N] [--jobs N]\n"
    "                      [--train-opt KEY=VALUE]... [--quiet] [--json]\n\n"
    "Learns a projection of the store's global descriptors that brings photos of a product close\n"
    "to its catalog images and away from other products (categories as weaker labels), and\n"
    "applies it to the catalog and to every search from then on (docs/learn.md).\n"
    "  --photos DIR   an ImageFolder: DIR/<product_id>/<photo>\n"
    "  --photos CSV   columns photo (or image) and product_id; paths relative to the CSV\n"
    "  (none)         train from augmented copies of the catalog images\n"
    "  --epochs N     passes over the photos (default 10; 0 = only align the photo domain)\n"
    "  --seed N       seed of initialisation, batch order and augmentation (default fixed)\n"
    "  --train-opt    rank=, lambda=, temperature=, category=, batch=, lr= (learn.h)\n"
    "Photos of products the store does not have, or that cannot be read, are skipped and listed\n"
    "(exit 3). The catalog is not described again; Ctrl-C or a kill leaves the store as it was.\n"
    "  --json   print {\"photos\", \"products\", \"unknown\", \"failed\", \"augmented\",\n"
    "           \"features_version\", \"describe_seconds\", \"train_seconds\", \"seconds\", \"failures\"}\n",
    sl__train_run};
