/*
 * cli/cmd_check.c - `shoplens check PRODUCT_ID IMAGE`: does this photo (e.g. a review photo)
 * show this product? Exit 0 for yes, 3 for no (so scripts can branch), 1 on error.
 */
#include "cli/cli.h"
#include "cli/product_cli.h"

#include <stdio.h>

static int sl__check_run(int argc, char **argv) {
    sl__popts o;
    sl_engine *e;
    sl_image *img;
    int rc = sl__cli_image_cmd(argc, argv, SL__OPT_THRESHOLD, 2, 1, "give PRODUCT_ID and IMAGE", &o, &e, &img);
    if (rc) return rc;
    sl_error err;
    sl_error_clear(&err);
    sl_check_result r = {0};
    sl_status st = sl_engine_check(e, o.pos[0], img, o.threshold, &r, &err);
    sl_image_free(img);
    sl_engine_free(e);
    if (st != SL_OK) return sl__cli_fail(argv[0], &err);
    if (o.json) {
        rc = sl__print_json(json_pack("{s:s, s:b, s:f, s:f, s:I, s:s, s:o}", "product_id", o.pos[0],
                                      "match", r.match, "score", r.score, "threshold", r.threshold,
                                      "image_id", (json_int_t)r.image_id, "image", r.image ? r.image : "",
                                      "inliers", r.inliers >= 0 ? json_integer(r.inliers) : json_null()));
    } else {
        printf("%s: %s (score %.4f, threshold %.2f, best image %lld %s)\n", o.pos[0],
               r.match ? "yes" : "no", r.score, r.threshold, (long long)r.image_id, r.image ? r.image : "");
    }
    int match = r.match;
    sl_check_result_free(&r);
    return rc ? rc : match ? SL_EXIT_OK : SL_EXIT_PARTIAL;
}

const sl__cli_cmd sl__cmd_check = {
    "check", "does a photo (e.g. a review photo) show a given product?",
    "Usage: shoplens check PRODUCT_ID IMAGE [--threshold T] [--store DIR] [--json]\n\n"
    "Compares the photo with every image of the product (global similarity, verified\n"
    "geometrically when the store's features use verify). Yes when the score reaches the\n"
    "threshold (default 0.5) or enough keypoints agree geometrically.\n"
    "  --json   print {\"product_id\", \"match\", \"score\", \"threshold\", \"image_id\", \"image\",\n"
    "           \"inliers\"}\n"
    "Exit status: 0 yes, 3 no, 1 error (e.g. unknown product).\n",
    sl__check_run};
