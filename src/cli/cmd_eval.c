/*
 * cli/cmd_eval.c - `shoplens eval --gallery DIR [--queries DIR]`: retrieval quality of a
 * feature specification on ImageFolder directories (relevant = same sub-folder), optionally
 * with an HTML report.
 */
#include "cli/cli.h"
#include "shoplens/eval.h"
#include "shoplens/feature.h"

#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Images the evaluation had to skip: named on stderr (text) and kept for --json. */
typedef struct sl__skips {
    int json, quiet;
    json_t *list;
} sl__skips;

static void sl__on_skip(void *ctx, const char *path, const char *why) {
    sl__skips *k = ctx;
    if (k->json) {
        if (k->list) json_array_append_new(k->list, json_pack("{s:s, s:s}", "file", path, "reason", why));
    } else {
        fprintf(stderr, "shoplens eval: skipped %s: %s\n", path, why);
    }
}

static int sl__eval_run_cmd(int argc, char **argv) {
    sl_eval_opts o;
    memset(&o, 0, sizeof o);
    sl_head_train_opts ho;
    sl_head_train_opts_init(&ho);
    o.head = &ho;
    int json = 0, quiet = 0;
    const char *model = NULL;
    char mspec[4200];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--json") == 0) { json = 1; continue; }
        if (strcmp(a, "--train-catalog") == 0) { o.train_catalog = 1; continue; }
        if (strcmp(a, "--no-references") == 0) { o.no_references = 1; continue; }
        if (strcmp(a, "--quiet") == 0) { quiet = 1; continue; }
        if (!v) return sl__cli_usage_error(argv[0], "%s needs a value or is unknown", a);
        char *end;
        if (strcmp(a, "--gallery") == 0) o.gallery_dir = v;
        else if (strcmp(a, "--queries") == 0) o.queries_dir = v;
        else if (strcmp(a, "--features") == 0) o.features = v;
        else if (strcmp(a, "--report") == 0) o.report_html = v;
        else if (strcmp(a, "--train") == 0) o.train_dir = v;
        else if (strcmp(a, "--cache") == 0) o.cache_dir = v;
        else if (strcmp(a, "--model") == 0) model = v;
        else if (strcmp(a, "--train-opt") == 0) {
            if (sl__cli_head_opt(&ho, v) != 0) return sl__cli_usage_error(argv[0], "bad --train-opt '%s' (epochs=, seed=, rank=, lambda=, temperature=, category=, batch=, lr=)", v);
        }
        else if (strcmp(a, "-k") == 0 || strcmp(a, "--k") == 0) {
            long k = strtol(v, &end, 10);
            if (!*v || *end || k < SL_EVAL_K_MIN || k > SL_EVAL_K_MAX)
                return sl__cli_usage_error(argv[0], "bad value '%s' for -k: must be an integer in %d..%d", v,
                                           SL_EVAL_K_MIN, SL_EVAL_K_MAX);
            o.k = (int)k;
        } else if (strcmp(a, "--jobs") == 0) {
            long n = strtol(v, &end, 10);
            if (!*v || *end || n < 0 || n > 64)
                return sl__cli_usage_error(argv[0], "bad value '%s' for --jobs: must be an integer in 0..64", v);
            o.jobs = (int)n;
        } else if (strcmp(a, "--max-queries") == 0) {
            long n = strtol(v, &end, 10);
            if (!*v || *end || n < 0)
                return sl__cli_usage_error(argv[0], "bad value '%s' for --max-queries: must be an integer in 0..%ld (0: all)", v, LONG_MAX);
            o.max_queries = (size_t)n;
        } else {
            return sl__cli_usage_error(argv[0], "unknown option '%s'", a);
        }
        i++;
    }
    if (!o.gallery_dir) return sl__cli_usage_error(argv[0], "--gallery DIR is required");
    if (o.train_dir && o.train_catalog) return sl__cli_usage_error(argv[0], "--train and --train-catalog exclude each other");
    if (model && o.features) return sl__cli_usage_error(argv[0], "--model and --features exclude each other");
    if (model) {
        if (sl_features_model_spec(model, mspec, sizeof mspec) != SL_OK)
            return sl__cli_usage_error(argv[0], "bad --model '%s' (a path without '+' or ',')", model);
        o.features = mspec;
    }
    sl__skips skips = {json, quiet, json ? json_array() : NULL};
    o.skipped_fn = sl__on_skip;
    o.skipped_ctx = &skips;
    sl_eval_metrics m;
    sl_error err;
    sl_error_clear(&err);
    if (sl_eval_run(&o, &m, &err) != SL_OK) {
        json_decref(skips.list);
        return sl__cli_fail(argv[0], &err);
    }
    if (json) {
        char *js = NULL;
        json_t *root = NULL;
        if (sl_eval_metrics_json(&m, o.features ? o.features : SL_FEATURES_SPEC_DEFAULT, &js) == SL_OK)
            root = json_loads(js, JSON_DECODE_ANY, NULL);
        free(js);
        if (root) json_object_set_new(root, "skipped_files", skips.list ? skips.list : json_array());
        else json_decref(skips.list);
        char *out = root ? json_dumps(root, JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10)) : NULL;
        json_decref(root);
        if (!out) {
            fprintf(stderr, "shoplens eval: out of memory\n");
            return SL_EXIT_ERROR;
        }
        puts(out);
        free(out);
    } else {
        printf("queries %zu, gallery %zu, k %d, skipped %zu\n", m.queries, m.gallery, m.k, m.skipped);
        printf("mAP %.4f  P@1 %.4f  P@k %.4f  R@k %.4f  F1@k %.4f\n", m.map, m.precision_1,
               m.precision_k, m.recall_k, m.f1_k);
        printf("hit@1 %.4f  hit@5 %.4f  hit@k %.4f  hits@4 %.3f\n", m.hit_1, m.hit_5, m.hit_k, m.hits_4);
        printf("index %.1f images/s, query p50 %.1f ms, p99 %.1f ms\n", m.index_images_per_s,
               m.query_ms_p50, m.query_ms_p99);
        if (m.trained_photos && !quiet)
            printf("head trained on %zu %s in %.1f s\n", m.trained_photos, o.train_dir ? "photos" : "augmented images",
                   m.train_seconds);
        if (o.report_html && !quiet) printf("report: %s\n", o.report_html);
    }
    return SL_EXIT_OK;
}

const sl__cli_cmd sl__cmd_eval = {
    "eval", "measure retrieval quality on labelled image folders",
    "Usage: shoplens eval --gallery DIR [--queries DIR] [--features SPEC | --model M.onnx] [-k 10]\n"
    "                     [--jobs N] [--max-queries N] [--report FILE.html] [--quiet] [--json]\n"
    "                     [--train DIR | --train-catalog] [--train-opt KEY=VALUE]... [--no-references]\n"
    "                     [--cache DIR]\n\n"
    "DIR follows the ImageFolder convention: one sub-folder per label; two images are relevant\n"
    "to each other when they share a label. Without --queries every gallery image queries all\n"
    "the others (leave-one-out). The whole gallery is ranked (exact search, geometric re-rank of\n"
    "the top 50 when the features verify); metrics are averaged over queries.\n"
    "  --json     print {\"queries\", \"gallery\", \"k\", \"map\", \"precision@1\", \"precision@k\",\n"
    "             \"recall@k\", \"hit@1\", \"hit@5\", \"hit@k\", \"f1@k\", \"hits@4\",\n"
    "             \"index_images_per_s\", \"query_ms_p50\", \"query_ms_p99\", \"skipped\", \"features\",\n"
    "             \"skipped_files\": [{\"file\", \"reason\"}]}\n"
    "Images that cannot be read (gallery or queries) are skipped: counted in \"skipped\" (with\n"
    "the queries that have no relevant image) and named on stderr (or in \"skipped_files\").\n"
    "  --report   write a self-contained HTML page: metrics, precision-recall curve, and sample\n"
    "             queries with their top results outlined green (relevant) or red\n"
    "  --model    the recommended features for an ONNX model (as shoplens init --model)\n"
    "  --train    first train a head (shoplens train) on DIR, an ImageFolder in the gallery's\n"
    "             label space; --train-catalog: on augmented gallery images instead. With\n"
    "             --queries, DIR's photos also become references of their labels (as train\n"
    "             --photos does in a store); --no-references: the head alone\n"
    "  --train-opt epochs=, seed=, rank=, lambda=, temperature=, category=, batch=, lr=\n"
    "  --cache    keep described image sets in DIR between runs (same results, less work)\n",
    sl__eval_run_cmd};
