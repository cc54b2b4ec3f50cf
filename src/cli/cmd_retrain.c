/*
 * cli/cmd_retrain.c - `shoplens retrain`: re-learns the features' codebook/PCA from a sample
 * of the stored images, re-describes every image and rebuilds the index (atomically; on a
 * cluster store in one PostgreSQL transaction, sl_engine_retrain).
 */
#include "cli/cli.h"
#include "cli/product_cli.h"

#include <stdio.h>
#include <string.h>

static int sl__retrain_run(int argc, char **argv) {
    sl__popts o;
    int rc = sl__popts_parse(argc, argv, SL__OPT_JOBS | SL__OPT_QUIET, &o);
    if (rc) return rc;
    if (o.npos) return sl__cli_usage_error(argv[0], "unexpected argument '%s'", o.pos[0]);
    sl_engine *e;
    if ((rc = sl__open_engine(argv[0], &o, 0, 0, &e))) return rc;
    sl__progress pr;
    sl__progress_init(&pr, "retrain", o.quiet || o.json);
    sl_ingest_opts io;
    memset(&io, 0, sizeof io);
    io.jobs = o.jobs;
    io.progress = sl__progress_cb;
    io.progress_ctx = &pr;
    sl_error err;
    sl_error_clear(&err);
    sl_status st = sl_engine_retrain(e, &io, &err);
    sl_engine_stats s;
    if (st == SL_OK) st = sl_engine_stats_get(e, &s, &err);
    sl_engine_free(e);
    if (st != SL_OK) return sl__cli_fail(argv[0], &err);
    if (o.json)
        return sl__print_json(json_pack("{s:I, s:s, s:I}", "images", (json_int_t)s.images, "features",
                                        s.features, "dim", (json_int_t)s.dim)) ? SL_EXIT_ERROR : SL_EXIT_OK;
    if (!o.quiet) printf("retrained %s on %lld images (dim %zu)\n", s.features, (long long)s.images, s.dim);
    return SL_EXIT_OK;
}

const sl__cli_cmd sl__cmd_retrain = {
    "retrain", "re-learn the features from the stored images and re-index",
    "Usage: shoplens retrain [--store DIR] [--jobs N] [--quiet] [--json]\n\n"
    "Learns the codebook/PCA again from a sample of the stored images, re-describes every image\n"
    "and rebuilds the index. Searches see the old state until the new one is committed.\n"
    "On a cluster store (--store postgresql://...) the images are read from PostgreSQL and\n"
    "described on this machine in one transaction; workers and API writes wait for it, then\n"
    "use the new features; the search nodes copy their shards again (docs/cluster.md).\n"
    "  --jobs N   threads, 0..256 (default 0: all cores)\n"
    "  --quiet    no progress, no summary line\n"
    "  --json   print {\"images\", \"features\", \"dim\"}\n",
    sl__retrain_run};
