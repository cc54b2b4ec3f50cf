/*
 * cli/cmd_classify.c - `shoplens classify IMAGE`: the likely catalog category of a photo by a
 * similarity-weighted vote of its nearest catalog products.
 */
#include "cli/cli.h"
#include "cli/product_cli.h"

#include <stdio.h>

static int sl__classify_run(int argc, char **argv) {
    sl__popts o;
    sl_engine *e;
    sl_image *img;
    int rc = sl__cli_image_cmd(argc, argv, SL__OPT_K, 1, 0, "give exactly one IMAGE", &o, &e, &img);
    if (rc) return rc;
    sl_error err;
    sl_error_clear(&err);
    sl_classification c = {0};
    sl_status st = sl_engine_classify(e, img, o.q.k, &c, &err);
    sl_image_free(img);
    sl_engine_free(e);
    if (st != SL_OK) return sl__cli_fail(argv[0], &err);
    if (o.json) {
        json_t *votes = json_array();
        for (size_t i = 0; votes && i < c.n_votes; i++)
            json_array_append_new(votes, json_pack("{s:s, s:f}", "category", c.votes[i].category,
                                                   "weight", c.votes[i].weight));
        rc = sl__print_json(json_pack("{s:o, s:f, s:o}", "category",
                                      c.category ? json_string(c.category) : json_null(),
                                      "confidence", c.confidence, "votes", votes ? votes : json_array()));
    } else if (c.category) {
        printf("%s (confidence %.2f)\n", c.category, c.confidence);
        for (size_t i = 1; i < c.n_votes && i < 5; i++)
            printf("  or %s (%.2f)\n", c.votes[i].category, c.votes[i].weight);
    } else {
        printf("no category (empty catalog)\n");
    }
    sl_classification_free(&c);
    return rc;
}

const sl__cli_cmd sl__cmd_classify = {
    "classify", "the likely catalog category of a photo",
    "Usage: shoplens classify IMAGE [-k 10] [--store DIR] [--json]\n\n"
    "A weighted vote (by similarity) of the K most similar catalog products.\n"
    "  --json   print {\"category\", \"confidence\", \"votes\": [{\"category\", \"weight\"}]}\n",
    sl__classify_run};
