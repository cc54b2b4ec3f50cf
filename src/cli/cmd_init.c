/*
 * cli/cmd_init.c - `shoplens init [--store DIR] [--features SPEC] [--index flat|hnsw|auto]`:
 * creates a store. The feature specification is fixed for the life of the store.
 */
#include "cli/cli.h"
#include "cli/product_cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int sl__init_run(int argc, char **argv) {
    /* --model M: the recommended features for the model (taken out before the shared parser) */
    const char *model = NULL;
    char mspec[4200];
    char **rest = calloc((size_t)argc + 1, sizeof *rest);
    if (!rest) return SL_EXIT_ERROR;
    int nrest = 0;
    for (int i = 0; i < argc; i++) {
        if (i > 0 && strcmp(argv[i], "--model") == 0) {
            if (i + 1 >= argc) { free(rest); return sl__cli_usage_error(argv[0], "--model needs a value"); }
            model = argv[++i];
        } else {
            rest[nrest++] = argv[i];
        }
    }
    sl__popts o;
    int rc = sl__popts_parse(nrest, rest, SL__OPT_FEATURES | SL__OPT_INDEX, &o);
    free(rest);
    if (rc) return rc;
    if (model) {
        if (o.features) return sl__cli_usage_error(argv[0], "--model and --features exclude each other");
        if (sl_features_model_spec(model, mspec, sizeof mspec) != SL_OK)
            return sl__cli_usage_error(argv[0], "bad --model '%s' (a path without '+' or ',')", model);
        o.features = mspec;
    }
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
    "Usage: shoplens init [--store DIR] [--features SPEC | --model M.onnx] [--index flat|hnsw|auto]\n"
    "                     [--json]\n\n"
    "Creates the store in DIR (default $SHOPLENS_STORE or ./shoplens-data). An existing store is\n"
    "opened as is; asking for other features than it has is an error.\n"
    "  --features SPEC  feature specification, e.g. color, vlad, color+vlad+verify\n"
    "                   (default " SL_FEATURES_SPEC_DEFAULT ")\n"
    "  --model M.onnx   the recommended features for a CNN model: its embedding (averaged over\n"
    "                   two scales and their mirror images) and colour, both centred on the\n"
    "                   catalog's mean, colour weight 0.2, plus verification\n"
    "  --index KIND     flat (exact), hnsw, or auto (hnsw above 50000 images; default)\n"
    "  --json           print {\"store\", \"features\", \"index\", \"products\"}\n",
    sl__init_run};
