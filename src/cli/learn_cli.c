/*
 * cli/learn_cli.c - what the learning commands share: head training options (--train-opt
 * key=value, `train` and `eval`), labelled photos (--photos DIR|CSV: `train`, `calibrate`,
 * `check --photos`) and the calibration as JSON or a line of text (learn_cli.h).
 */
#include "cli/cli.h"
#include "cli/learn_cli.h"
#include "cli/product_cli.h"
#include "eval/eval_internal.h"
#include "shoplens/learn.h"
#include "util/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int sl__cli_head_opt(struct sl_head_train_opts *o, const char *kv) {
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv || !eq[1]) return -1;
    size_t kl = (size_t)(eq - kv);
    const char *v = eq + 1;
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (*end || errno) return -1;
#define K(s) (kl == sizeof(s) - 1 && memcmp(kv, s, kl) == 0)
#define INT_IN(lo, hi) (d == (double)(long long)d && d >= (lo) && d <= (hi))
    if (K("epochs")) { if (!INT_IN(SL_HEAD_EPOCHS_MIN, SL_HEAD_EPOCHS_MAX)) return -1; o->epochs = (int)d; }
    else if (K("seed")) { if (!INT_IN(0, 9007199254740992.0)) return -1; o->seed = (uint64_t)d; }
    else if (K("rank")) { if (!INT_IN(SL_HEAD_RANK_MIN, SL_HEAD_RANK_MAX)) return -1; o->rank = (int)d; }
    else if (K("batch")) { if (!INT_IN(SL_HEAD_BATCH_MIN, SL_HEAD_BATCH_MAX)) return -1; o->batch = (int)d; }
    else if (K("lambda")) { if (!(d >= SL_HEAD_LAMBDA_MIN && d <= SL_HEAD_LAMBDA_MAX)) return -1; o->lambda = (float)d; }
    else if (K("temperature")) { if (!(d >= SL_HEAD_TEMPERATURE_MIN && d <= SL_HEAD_TEMPERATURE_MAX)) return -1; o->temperature = (float)d; }
    else if (K("category")) { if (!(d >= SL_HEAD_CATEGORY_WEIGHT_MIN && d <= SL_HEAD_CATEGORY_WEIGHT_MAX)) return -1; o->category_weight = (float)d; }
    else if (K("lr")) { if (!(d >= SL_HEAD_LR_MIN && d <= SL_HEAD_LR_MAX)) return -1; o->lr = (float)d; }
    else return -1;
#undef K
#undef INT_IN
    return 0;
}

/* ---- labelled photos ------------------------------------------------------------------------ */

void sl__plist_free(sl__plist *p) {
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

/* The photos of a CSV (photo,product_id; paths relative to the CSV's folder). */
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

int sl__read_photos(const char *cmd, const char *arg, sl__plist *out) {
    memset(out, 0, sizeof *out);
    struct stat sb;
    if (stat(arg, &sb) != 0) {
        fprintf(stderr, "shoplens %s: --photos %s: %s\n", cmd, arg, strerror(errno));
        return SL_EXIT_ERROR;
    }
    return S_ISDIR(sb.st_mode) ? sl__read_folder(cmd, arg, out) : sl__read_csv(cmd, arg, out);
}

/* ---- the calibration ------------------------------------------------------------------------- */

static json_t *sl__calib_map_json(const sl_calib_map_info *m) {
    json_t *o = json_pack("{s:f, s:f, s:f, s:I, s:I, s:f, s:f, s:f, s:f, s:f}",
                          "threshold", m->confidence_threshold, "score_threshold", m->score_threshold,
                          "far_target", m->far_target, "positives", (json_int_t)m->positives,
                          "negatives", (json_int_t)m->negatives, "accept_rate", m->tar,
                          "false_accept_rate", m->far, "a", m->a, "b", m->b, "margin_weight", m->lambda);
    if (o && m->precision_target > 0) /* the search map's precision rule */
        json_object_update_new(o, json_pack("{s:f, s:f, s:f, s:I}", "precision_target", m->precision_target,
                                            "precision", m->precision, "recall", m->recall,
                                            "first_results", (json_int_t)m->tops));
    return o;
}

json_t *sl__calib_json(const sl_calib_info *ci) {
    return json_pack("{s:s, s:I, s:I, s:i, s:o, s:o}", "source", sl_calib_source_name(ci->source),
                     "photos", (json_int_t)ci->photos, "products", (json_int_t)ci->products, "cohort", ci->cohort,
                     "check", sl__calib_map_json(&ci->map[SL_CALIB_PAIR]),
                     "search", sl__calib_map_json(&ci->map[SL_CALIB_RESULT]));
}

void sl__calib_line(const sl_calib_info *ci, char *buf, size_t cap) {
    const sl_calib_map_info *c = &ci->map[SL_CALIB_PAIR], *r = &ci->map[SL_CALIB_RESULT];
    if (ci->source == SL_CALIB_NONE) {
        snprintf(buf, cap, "none (fallback: match at confidence 0.5; calibrated once the store has 5 products, or "
                           "run shoplens calibrate)");
        return;
    }
    int n = snprintf(buf, cap,
                     "from %llu %s of %llu products; check: match at confidence %.3f (accepts %.1f%% of genuine pairs, "
                     "%.1f%% of other products); search: match at %.3f",
                     (unsigned long long)ci->photos,
                     ci->source == SL_CALIB_PHOTOS ? "labelled photos" : "shelf photos made from catalog images",
                     (unsigned long long)ci->products, c->confidence_threshold, 100 * c->tar, 100 * c->far,
                     r->confidence_threshold);
    if (n < 0 || (size_t)n >= cap) return;
    if (r->precision_target > 0)
        snprintf(buf + n, cap - (size_t)n, " (a match on %.1f%% of the first results that are right, %.1f%% of matches "
                 "right; target %.0f%%)", 100 * r->recall, 100 * r->precision, 100 * r->precision_target);
    else
        snprintf(buf + n, cap - (size_t)n, " (%.1f%% / %.1f%%)", 100 * r->tar, 100 * r->far);
}

/* ---- shared by train and calibrate -------------------------------------------------------------- */

int sl__learn_cmd_open(int argc, char **argv, const char *photos, struct sl__popts *o, sl__plist *pl,
                       sl_engine **e) {
    *e = NULL;
    memset(pl, 0, sizeof *pl);
    int rc = sl__popts_parse(argc, argv, SL__OPT_JOBS | SL__OPT_QUIET, o);
    if (rc) return rc;
    if (o->npos) return sl__cli_usage_error(argv[0], "unexpected argument '%s'", o->pos[0]);
    if (photos && (rc = sl__read_photos(argv[0], photos, pl)) != 0) {
        sl__plist_free(pl);
        return rc;
    }
    if ((rc = sl__open_engine(argv[0], o, 0, 0, e))) sl__plist_free(pl);
    return rc;
}

int sl__cli_seed(const char *cmd, const char *v, uint64_t *seed) {
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (*end || errno || !*v || v[0] == '-') return sl__cli_usage_error(cmd, "bad --seed '%s' (a non-negative integer)", v);
    *seed = n;
    return 0;
}

json_t *sl__failures_json(const sl_train_failure *f, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        json_array_append_new(a, json_pack("{s:o, s:o, s:s, s:s}", "file", f[i].file ? json_string(f[i].file) : json_null(),
                                           "product_id", f[i].product_id ? json_string(f[i].product_id) : json_null(),
                                           "status", sl_status_name(f[i].status), "message", f[i].message ? f[i].message : ""));
    return a;
}

void sl__failures_print(const char *cmd, const sl_train_failure *f, size_t n) {
    for (size_t i = 0; i < n && i < 20; i++)
        fprintf(stderr, "shoplens %s: %s (%s): %s\n", cmd, f[i].file ? f[i].file : "?",
                f[i].product_id ? f[i].product_id : "?", f[i].message ? f[i].message : "");
    if (n > 20) fprintf(stderr, "shoplens %s: ... %zu more skipped photos\n", cmd, n - 20);
}
