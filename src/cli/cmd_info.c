/*
 * cli/cmd_info.c - `shoplens info`: counts, feature spec, index kind, sizes on disk, quantization
 * and confidence calibration.
 */
#include "cli/cli.h"
#include "cli/learn_cli.h"
#include "cli/product_cli.h"
#include "shoplens/cluster.h"
#include "util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    sl_cluster_status cs;
    memset(&cs, 0, sizeof cs);
    int cluster = sl_store_is_shared(sl_engine_store(e));
    if (st == SL_OK && cluster) st = sl_cluster_status_get(sl_engine_store(e), &cs, &err);
    if (st != SL_OK) {
        sl_strings_free(cats, nc);
        free(counts);
        sl_engine_free(e);
        return sl__cli_fail(argv[0], &err);
    }
    sl__utf8_scrub(s.quantization); /* layer names come from the model file */
    if (o.json) {
        json_t *c = json_object();
        for (size_t i = 0; c && i < nc; i++) json_object_set_new(c, cats[i], json_integer(counts[i]));
        json_t *sizes = json_pack("{s:I, s:I, s:I, s:I, s:I}", "catalog", (json_int_t)s.db_bytes,
                                  "index", (json_int_t)s.index_bytes, "features", (json_int_t)s.features_bytes,
                                  "images", (json_int_t)s.images_bytes, "total", (json_int_t)s.total_bytes);
        json_t *root = json_pack("{s:s, s:I, s:I, s:I, s:s, s:I, s:s, s:o, s:o, s:I, s:I, s:I, s:I, s:o, s:o}",
            "store", dir, "products", (json_int_t)s.products, "images", (json_int_t)s.images,
            "indexed", (json_int_t)s.indexed, "features", s.features, "dim", (json_int_t)s.dim,
            "index", s.index_kind, "categories", c ? c : json_object(), "bytes", sizes ? sizes : json_object(),
            "format_version", (json_int_t)SL_STORE_FORMAT_VERSION, "schema_version", (json_int_t)SL_STORE_SCHEMA_VERSION,
            "images_outside", (json_int_t)s.images_outside, "files_missing", (json_int_t)missing,
            "quantization", s.quantization[0] ? json_string(s.quantization) : json_null(),
            "calibration", sl__calib_json(&ci));
        if (root && cluster) {
            json_t *nodes = json_array();
            for (size_t i = 0; nodes && i < cs.n_nodes; i++) {
                const sl_cluster_node *n = &cs.nodes[i];
                json_array_append_new(nodes, json_pack("{s:s, s:s, s:s, s:s, s:i, s:o, s:o, s:I, s:f, s:b}",
                    "name", n->name, "role", n->role, "url", n->url, "host", n->host, "pid", n->pid,
                    "shard", n->shards > 0 ? json_integer(n->shard) : json_null(),
                    "shards", n->shards > 0 ? json_integer(n->shards) : json_null(),
                    "log_pos", (json_int_t)n->log_pos, "age_s", n->age_s, "alive", n->alive));
            }
            json_object_set_new(root, "cluster", json_pack("{s:I, s:i, s:{s:I, s:I, s:I}, s:o}",
                "log_head", (json_int_t)cs.log_head, "shards", cs.shards, "jobs", "queued", (json_int_t)cs.queued,
                "done", (json_int_t)cs.done, "failed", (json_int_t)cs.failed, "nodes", nodes ? nodes : json_array()));
        }
        rc = sl__print_json(root);
    } else {
        printf("store       %s (format %d, schema %d)\n", dir, SL_STORE_FORMAT_VERSION, SL_STORE_SCHEMA_VERSION);
        if (cluster)
            printf("products    %lld\nimages      %lld (indexed by the search nodes)\n", (long long)s.products,
                   (long long)s.images);
        else
            printf("products    %lld\nimages      %lld (%lld indexed)\n", (long long)s.products,
                   (long long)s.images, (long long)s.indexed);
        printf("features    %s (dim %zu)\n", s.features, s.dim);
        if (s.quantization[0]) printf("quantization %s\n", s.quantization);
        printf("index       %s\n", s.index_kind);
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
        if (cluster) {
            printf("log head    %lld\nshards      %d\njobs        %lld queued, %lld done, %lld failed\n",
                   (long long)cs.log_head, cs.shards, (long long)cs.queued, (long long)cs.done, (long long)cs.failed);
            for (size_t i = 0; i < cs.n_nodes; i++) {
                const sl_cluster_node *n = &cs.nodes[i];
                char shard[32] = "";
                if (n->shards > 0) snprintf(shard, sizeof shard, " shard %d/%d", n->shard, n->shards);
                printf("node        %s %s%s %s%s log %lld, heartbeat %.1f s ago%s\n", n->role, n->name, shard,
                       n->url, *n->url ? "," : "", (long long)n->log_pos, n->age_s, n->alive ? "" : " (down)");
            }
        }
    }
    sl_cluster_status_clear(&cs);
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
    "           \"files_missing\", \"quantization\", \"calibration\": {\"source\", \"photos\", \"products\",\n"
    "           \"cohort\", \"check\": {...}, \"search\": {...}}}\n"
    "images_outside counts images of a store made before schema 2 still read from their original\n"
    "files ('shoplens verify --repair' copies them in); files_missing the images whose file is gone;\n"
    "quantization (null unless the spec's cnn runs at bf16 / int8) how the store calibrated that\n"
    "precision on its catalog images: images, seed, layers kept at fp32, the measured embedding\n"
    "cosine to fp32. The calibration says where the confidence of check and search comes from:\n"
    "labelled photos, augmented catalog images, or none (the fallback); docs/cli.md has its fields.\n",
    sl__info_run};
