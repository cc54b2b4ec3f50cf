/*
 * cli/cmd_check.c - `shoplens check PRODUCT_ID IMAGE`: does this photo (e.g. a review photo)
 * show this product? With --photos DIR|CSV, every listed photo against its product (consecutive
 * rows of one photo are described once). Exit 0 for yes (every photo), 3 for no (some photo), 1
 * on error (with --photos: a photo or product that could not be checked).
 */
#include "cli/cli.h"
#include "cli/learn_cli.h"
#include "cli/product_cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *sl__check_json(const char *photo, const char *pid, const sl_check_result *r) {
    json_t *o = json_pack("{s:s, s:b, s:f, s:f, s:f, s:I, s:s, s:o}", "product_id", pid, "match", r->match,
                          "confidence", round(r->confidence * 1e6) / 1e6, "score", round(r->score * 1e6) / 1e6,
                          "threshold", r->threshold, "image_id", (json_int_t)r->image_id,
                          "image", r->image ? r->image : "",
                          "inliers", r->inliers >= 0 ? json_integer(r->inliers) : json_null());
    if (o && photo) json_object_set_new(o, "photo", json_string(photo));
    return o;
}

/* check --photos: every row, grouped by photo. */
static int sl__check_batch(const char *cmd, const char *photos, sl__popts *o) {
    sl__plist pl;
    int rc = sl__read_photos(cmd, photos, &pl);
    if (rc) {
        sl__plist_free(&pl);
        return rc;
    }
    sl_engine *e;
    if ((rc = sl__open_engine(cmd, o, 0, 1, &e))) {
        sl__plist_free(&pl);
        return rc;
    }
    json_t *arr = o->json ? json_array() : NULL;
    size_t yes = 0, no = 0, failed = 0;
    const char **ids = calloc(pl.n + 1, sizeof *ids);
    sl_check_result *res = calloc(pl.n + 1, sizeof *res);
    sl_status *sts = calloc(pl.n + 1, sizeof *sts);
    if (!ids || !res || !sts || (o->json && !arr)) {
        fprintf(stderr, "shoplens %s: out of memory\n", cmd);
        rc = SL_EXIT_ERROR;
    }
    for (size_t i = 0; i < pl.n && !rc;) {
        size_t j = i;
        while (j < pl.n && strcmp(pl.v[j].path, pl.v[i].path) == 0) ids[j - i] = pl.v[j].product_id, j++;
        sl_error err;
        sl_error_clear(&err);
        sl_image_load_opts lo;
        memset(&lo, 0, sizeof lo);
        lo.max_side = SL_ENGINE_MAX_SIDE_DEFAULT;
        sl_image *img = NULL;
        sl_status st = sl_image_load_file(pl.v[i].path, &lo, &img, NULL, &err);
        if (st == SL_OK) st = sl_engine_check_products(e, img, ids, j - i, o->threshold, res, sts, &err);
        sl_image_free(img);
        for (size_t k = i; k < j; k++) {
            const sl_check_result *r = &res[k - i];
            sl_status ks = st != SL_OK ? st : sts[k - i];
            const char *msg = st != SL_OK ? err.message : sl_strerror(ks);
            if (ks != SL_OK) {
                failed++;
                fprintf(stderr, "shoplens %s: %s (%s): %s: %s\n", cmd, pl.v[k].path, pl.v[k].product_id,
                        sl_status_name(ks), msg);
                if (arr)
                    json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:s}", "photo", pl.v[k].path, "product_id",
                                                         pl.v[k].product_id, "status", sl_status_name(ks),
                                                         "message", msg));
                continue;
            }
            if (r->match) yes++;
            else no++;
            if (arr) json_array_append_new(arr, sl__check_json(pl.v[k].path, pl.v[k].product_id, r));
            else if (!o->quiet)
                printf("%s %s: %s (confidence %.3f, threshold %.3f)\n", pl.v[k].path, pl.v[k].product_id,
                       r->match ? "yes" : "no", r->confidence, r->threshold);
        }
        for (size_t k = 0; st == SL_OK && k < j - i; k++) sl_check_result_free(&res[k]);
        i = j;
    }
    sl_engine_free(e);
    free(ids);
    free(res);
    free(sts);
    sl__plist_free(&pl);
    if (!rc && arr)
        rc = sl__print_json(json_pack("{s:I, s:I, s:I, s:o}", "accepted", (json_int_t)yes, "rejected", (json_int_t)no,
                                      "failed", (json_int_t)failed, "results", arr));
    else {
        json_decref(arr);
        if (!rc && !o->quiet)
            printf("%zu accepted, %zu rejected, %zu could not be checked\n", yes, no, failed);
    }
    return rc ? rc : failed ? SL_EXIT_ERROR : no ? SL_EXIT_PARTIAL : SL_EXIT_OK;
}

static int sl__check_run(int argc, char **argv) {
    /* --photos is ours; the rest goes to the shared parser */
    const char *photos = NULL;
    char **rest = calloc((size_t)argc + 1, sizeof *rest);
    if (!rest) return SL_EXIT_ERROR;
    int nrest = 0;
    for (int i = 0; i < argc; i++) {
        if (i > 0 && strcmp(argv[i], "--photos") == 0) {
            if (i + 1 >= argc) {
                free(rest);
                return sl__cli_usage_error(argv[0], "--photos needs a value");
            }
            photos = argv[++i];
        } else {
            rest[nrest++] = argv[i];
        }
    }
    sl__popts o;
    int rc;
    if (photos) {
        rc = sl__popts_parse(nrest, rest, SL__OPT_THRESHOLD | SL__OPT_QUIET, &o);
        free(rest);
        if (rc) return rc;
        if (o.npos) return sl__cli_usage_error(argv[0], "--photos takes no PRODUCT_ID or IMAGE");
        return sl__check_batch(argv[0], photos, &o);
    }
    sl_engine *e;
    sl_image *img;
    rc = sl__cli_image_cmd(nrest, rest, SL__OPT_THRESHOLD, 2, 1, "give PRODUCT_ID and IMAGE", &o, &e, &img);
    free(rest);
    if (rc) return rc;
    sl_error err;
    sl_error_clear(&err);
    sl_check_result r = {0};
    sl_status st = sl_engine_check(e, o.pos[0], img, o.threshold, &r, &err);
    sl_image_free(img);
    sl_engine_free(e);
    if (st != SL_OK) return sl__cli_fail(argv[0], &err);
    if (o.json) {
        rc = sl__print_json(sl__check_json(NULL, o.pos[0], &r));
    } else {
        printf("%s: %s (confidence %.3f, threshold %.3f; score %.4f, best image %lld %s)\n", o.pos[0],
               r.match ? "yes" : "no", r.confidence, r.threshold, r.score, (long long)r.image_id,
               r.image ? r.image : "");
    }
    int match = r.match;
    sl_check_result_free(&r);
    return rc ? rc : match ? SL_EXIT_OK : SL_EXIT_PARTIAL;
}

const sl__cli_cmd sl__cmd_check = {
    "check", "does a photo (e.g. a review photo) show a given product?",
    "Usage: shoplens check PRODUCT_ID IMAGE [--threshold C] [--store DIR] [--json]\n"
    "       shoplens check --photos DIR|CSV [--threshold C] [--store DIR] [--quiet] [--json]\n\n"
    "Compares the photo with every image of the product (global similarity, verified\n"
    "geometrically when the store's features use verify) and with its nearest other products,\n"
    "and turns that into a calibrated confidence (0..1; docs/learn.md). Yes when the confidence\n"
    "reaches the threshold: by default the store's operating point, where at most 2% of photos of\n"
    "other products were accepted on the store's calibration data (shoplens info shows it).\n"
    "  --threshold C  a confidence in 0..1 instead of the operating point\n"
    "  --photos       check many: an ImageFolder DIR/<product_id>/<photo>, or a CSV with the\n"
    "                 columns photo (or image) and product_id, paths relative to the CSV\n"
    "  --json   print {\"product_id\", \"match\", \"confidence\", \"score\", \"threshold\", \"image_id\",\n"
    "           \"image\", \"inliers\"}; with --photos {\"accepted\", \"rejected\", \"failed\",\n"
    "           \"results\": [{\"photo\", ... as above} or {\"photo\", \"product_id\", \"status\",\n"
    "           \"message\"}]}\n"
    "Exit status: 0 yes (every photo), 3 no (some photo), 1 error (e.g. unknown product; with\n"
    "--photos, any photo that could not be checked).\n",
    sl__check_run};
