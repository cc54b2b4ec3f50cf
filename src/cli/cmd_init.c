/*
 * cli/cmd_init.c - `shoplens init [--store DIR] [--features SPEC] [--index flat|hnsw|auto]`:
 * creates a store. The feature specification is fixed for the life of the store.
 */
#include "cli/cli.h"
#include "cli/product_cli.h"

#include <stdio.h>

static int sl__init_run(int argc, char **argv) {
    sl__popts o;
    int rc = sl__popts_parse(argc, argv, SL__OPT_FEATURES | SL__OPT_INDEX, &o);
    if (rc) return rc;
    if (o.npos) return sl__cli_usage_error(argv[0], "unexpected argument '%s'", o.pos[0]);
    sl_engine *e;
    if ((rc = sl__open_engine(argv[0], &o, 1, 0, &e))) return rc;
    sl_engine_stats s;
    sl_error err;
    sl_error_clear(&err);
    if (sl_engine_stats_get(e, &s, &err) != SL_OK) {
        sl_engine_free(e);
        return sl__cli_fail(argv[0], &err);
    }
    const char *dir = sl_store_dir(sl_engine_store(e));
    if (o.json) {
        rc = sl__print_json(json_pack("{s:s, s:s, s:s, s:I}", "store", dir, "features", s.features,
                                      "index", s.index_kind, "products", (json_int_t)s.products));
    } else if (!o.quiet) {
        printf("store %s: features %s, index %s, %lld products\n", dir, s.features, s.index_kind,
               (long long)s.products);
    }
    sl_engine_free(e);
    return rc;
}

const sl__cli_cmd sl__cmd_init = {
    "init", "create a store (feature spec fixed per store)",
    "Usage: shoplens init [--store DIR] [--features SPEC] [--index flat|hnsw|auto] [--json]\n\n"
    "Creates the store in DIR (default $SHOPLENS_STORE or ./shoplens-data). An existing store is\n"
    "opened as is; asking for other features than it has is an error.\n"
    "  --features SPEC  feature specification, e.g. color, vlad, color+vlad+verify\n"
    "                   (default " SL_FEATURES_SPEC_DEFAULT ")\n"
    "  --index KIND     flat (exact), hnsw, or auto (hnsw above 50000 images; default)\n"
    "  --json           print {\"store\", \"features\", \"index\", \"products\"}\n",
    sl__init_run};
