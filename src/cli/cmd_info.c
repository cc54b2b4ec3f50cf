/*
 * cli/cmd_info.c - `shoplens info`: counts, feature spec, index kind, sizes on disk, calibration.
 */
#include "cli/cli.h"
#include "cli/learn_cli.h"
#include "cli/product_cli.h"

#include <stdio.h>
#include <stdlib.h>

static int sl__info_run(int argc, char **argv) {
    sl__popts o;
    int rc = sl__popts_parse(argc, argv, 0, &o);
    if (rc) return rc;
    if (o.npos) return sl__cli_usage_error(argv[0], "unexpected argument '%s'", o.pos[0]);
    sl_engine *e;
    if ((rc = sl__open_engine(argv[0], &o, 0, 1, &e))) return rc;
    sl_engine_stats s;
    sl_error err;
    sl_error_clear(&err);
    char **cats = NULL;
    int64_t *counts = NULL;
    size_t nc = 0;
    int64_t missing = 0;
    sl_calib_info ci;
    sl_status st = sl_engine_stats_get(e, &s, &err);
    if (st == SL_OK) st = sl_engine_categories(e, &cats, &counts, &nc, &err);
    if (st == SL_OK) st = sl_engine_missing_files(e, &missing, &err);
    if (st == SL_OK) st = sl_engine_calibration(e, &ci, &err);
    const char *dir = sl_store_dir(sl_engine_store(e));
    if (st != SL_OK) {
        sl_engine_free(e);
        return sl__cli_fail(argv[0], &err);
    }
    if (o.json) {
        json_t *c = json_object();
        for (size_t i = 0; c && i < nc; i++) json_object_set_new(c, cats[i], json_integer(counts[i]));
        json_t *sizes = json_pack("{s:I, s:I, s:I, s:I, s:I}", "catalog", (json_int_t)s.db_bytes,
                                  "index", (json_int_t)s.index_bytes, "features", (json_int_t)s.features_bytes,
                                  "images", (json_int_t)s.images_bytes, "total", (json_int_t)s.total_bytes);
        rc = sl__print_json(json_pack("{s:s, s:I, s:I, s:I, s:s, s:I, s:s, s:o, s:o, s:I, s:I, s:I, s:I, s:o}",
            "store", dir, "products", (json_int_t)s.products, "images", (json_int_t)s.images,
            "indexed", (json_int_t)s.indexed, "features", s.features, "dim", (json_int_t)s.dim,
            "index", s.index_kind, "categories", c ? c : json_object(), "bytes", sizes ? sizes : json_object(),
            "format_version", (json_int_t)SL_STORE_FORMAT_VERSION, "schema_version", (json_int_t)SL_STORE_SCHEMA_VERSION,
            "images_outside", (json_int_t)s.images_outside, "files_missing", (json_int_t)missing,
            "calibration", sl__calib_json(&ci)));
    } else {
        printf("store       %s (format %d, schema %d)\n", dir, SL_STORE_FORMAT_VERSION, SL_STORE_SCHEMA_VERSION);
        printf("products    %lld\nimages      %lld (%lld indexed)\n", (long long)s.products,
               (long long)s.images, (long long)s.indexed);
        printf("features    %s (dim %zu)\nindex       %s\n", s.features, s.dim, s.index_kind);
        printf("categories  %zu\n", nc);
        char line[512];
        sl__calib_line(&ci, line, sizeof line);
        printf("calibration %s\n", line);
        if (s.images_outside)
            printf("WARNING     %lld images are read from outside the store (made before schema 2): "
                   "moving or deleting those files breaks them; 'shoplens verify --repair' copies them in\n",
                   (long long)s.images_outside);
        if (missing)
            printf("WARNING     %lld image files are missing: 'shoplens verify' lists them\n", (long long)missing);
        printf("on disk     %.1f MiB (catalog %.1f, index %.1f, features %.1f, images %.1f)\n",
               (double)s.total_bytes / 1048576.0, (double)s.db_bytes / 1048576.0, (double)s.index_bytes / 1048576.0,
               (double)s.features_bytes / 1048576.0, (double)s.images_bytes / 1048576.0);
    }
    sl_strings_free(cats, nc);
    free(counts);
    sl_engine_free(e);
    return rc;
}

const sl__cli_cmd sl__cmd_info = {
    "info", "counts, feature spec, index kind and sizes of a store",
    "Usage: shoplens info [--store DIR] [--json]\n\n"
    "  --json   print {\"store\", \"products\", \"images\", \"indexed\", \"features\", \"dim\", \"index\",\n"
    "           \"categories\": {name: products}, \"bytes\": {\"catalog\", \"index\", \"features\",\n"
    "           \"images\", \"total\"}, \"format_version\", \"schema_version\", \"images_outside\",\n"
    "           \"files_missing\", \"calibration\": {\"source\", \"photos\", \"products\", \"cohort\",\n"
    "           \"check\": {...}, \"search\": {...}}}\n"
    "images_outside counts images of a store made before schema 2 still read from their original\n"
    "files ('shoplens verify --repair' copies them in); files_missing the images whose file is gone.\n"
    "The calibration says where the confidence of check and search comes from: labelled photos,\n"
    "augmented catalog images, or none (the fallback); docs/cli.md has its fields.\n",
    sl__info_run};
