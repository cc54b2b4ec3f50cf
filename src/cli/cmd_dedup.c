/*
 * cli/cmd_dedup.c - `shoplens dedup`: groups of near-duplicate images across different
 * products (duplicate listings).
 */
#include "cli/cli.h"
#include "cli/product_cli.h"

#include <stdio.h>

static int sl__dedup_run(int argc, char **argv) {
    sl__popts o;
    int rc = sl__popts_parse(argc, argv, SL__OPT_THRESHOLD, &o);
    if (rc) return rc;
    if (o.npos) return sl__cli_usage_error(argv[0], "unexpected argument '%s'", o.pos[0]);
    if (o.threshold > 1) return sl__cli_usage_error(argv[0], "--threshold is a similarity in 0..1");
    sl_engine *e;
    if ((rc = sl__open_engine(argv[0], &o, 0, 1, &e))) return rc;
    sl_dup_groups g = {0};
    sl_error err;
    sl_error_clear(&err);
    sl_status st = sl_engine_dedup(e, o.threshold, &g, &err);
    if (st != SL_OK) {
        sl_engine_free(e);
        return sl__cli_fail(argv[0], &err);
    }
    json_t *arr = o.json ? json_array() : NULL;
    for (size_t i = 0; i < g.n; i++) {
        const sl_dup_group *d = &g.groups[i];
        if (o.json) {
            json_t *imgs = json_array();
            for (size_t j = 0; imgs && j < d->n; j++) {
                sl_image_ref r = {0};
                (void)sl_store_get_image(sl_engine_store(e), d->image_ids[j], &r, NULL);
                json_array_append_new(imgs, json_pack("{s:I, s:s, s:s}", "image_id", (json_int_t)d->image_ids[j],
                                                      "product_id", d->product_ids[j],
                                                      "image", r.source && *r.source ? r.source : r.file ? r.file : ""));
                sl_image_ref_clear(&r);
            }
            json_array_append_new(arr, json_pack("{s:f, s:o}", "score", d->score, "images", imgs));
        } else {
            printf("group %zu (similarity >= %.3f):", i + 1, d->score);
            for (size_t j = 0; j < d->n; j++) printf(" %s#%lld", d->product_ids[j], (long long)d->image_ids[j]);
            printf("\n");
        }
    }
    sl_engine_free(e);
    if (o.json) rc = sl__print_json(json_pack("{s:o}", "groups", arr ? arr : json_array()));
    else if (g.n == 0) printf("no duplicates\n");
    sl_dup_groups_free(&g);
    return rc;
}

const sl__cli_cmd sl__cmd_dedup = {
    "dedup", "find near-duplicate images across different products",
    "Usage: shoplens dedup [--threshold T] [--store DIR] [--json]\n\n"
    "Pairs of images of different products with similarity >= T (default 0.95), confirmed by\n"
    "geometric verification when the features use verify, joined into groups.\n"
    "  --json   print {\"groups\": [{\"score\", \"images\": [{\"image_id\", \"product_id\", \"image\"}]}]}\n",
    sl__dedup_run};
