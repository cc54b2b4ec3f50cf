/*
 * examples/build_store.c - builds a shoplens store from a shop's catalog (CSV or JSON Lines)
 * through the installed library, then prints what the store holds (what `shoplens add` and
 * `shoplens info` do, in a few lines).
 *
 *   cc -o build_store build_store.c $(pkg-config --cflags --libs shoplens)
 *   ./build_store CATALOG.csv STORE [FEATURES]
 *
 * FEATURES is a feature specification for a new store (default "color+vlad+verify"; see
 * docs/features.md). Adding the same catalog again updates the store (upsert).
 * Exit status: 0 every row ingested, 3 some rows failed (listed on stderr), 1 error, 2 usage.
 */
#include <shoplens/engine.h>

#include <stdio.h>
#include <stdlib.h>

/* Called by the ingest from time to time (ctx: the last tenth printed): a line per 10%. */
static void progress(void *ctx, size_t done, size_t total, double elapsed_s) {
    int *printed = ctx;
    int tenth = total ? (int)(done * 10 / total) : 10;
    if (tenth <= *printed) return;
    *printed = tenth;
    fprintf(stderr, "%zu/%zu products, %.1f s\n", done, total, elapsed_s);
}

static int fail(const char *prog, const sl_error *err) {
    fprintf(stderr, "%s: %s: %s\n", prog, sl_status_name(err->code), err->message);
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: %s CATALOG STORE [FEATURES]\n", argv[0]);
        return 2;
    }
    sl_error err;
    sl_error_clear(&err);
    sl_engine_opts opts = {0};
    opts.create = 1;
    opts.features = argc > 3 ? argv[3] : NULL;
    sl_engine *engine = NULL;
    if (sl_engine_open(argv[2], &opts, &engine, &err) != SL_OK) return fail(argv[0], &err);

    sl_ingest_opts ingest = {0};
    int printed = -1;
    ingest.progress = progress;
    ingest.progress_ctx = &printed;
    sl_ingest_report report = {0};
    if (sl_engine_ingest(engine, argv[1], &ingest, &report, &err) != SL_OK) {
        sl_engine_free(engine);
        return fail(argv[0], &err);
    }
    printf("ingested    %zu rows: %zu added, %zu updated, %zu unchanged, %zu failed\n",
           report.rows, report.added, report.updated, report.skipped, report.failed);
    for (size_t i = 0; i < report.n_failures; i++) {
        const sl_ingest_failure *f = &report.failures[i];
        fprintf(stderr, "row %zu (%s): %s: %s\n", f->row, f->product_id ? f->product_id : "?",
                sl_status_name(f->status), f->message);
    }
    int rc = report.failed ? 3 : 0;
    sl_ingest_report_free(&report);

    sl_engine_stats stats;
    if (sl_engine_stats_get(engine, &stats, &err) != SL_OK) {
        sl_engine_free(engine);
        return fail(argv[0], &err);
    }
    printf("store       %s\n", argv[2]);
    printf("products    %lld\n", (long long)stats.products);
    printf("images      %lld (%lld indexed)\n", (long long)stats.images, (long long)stats.indexed);
    printf("features    %s (dim %zu)\n", stats.features, stats.dim);
    printf("index       %s\n", stats.index_kind);
    printf("on disk     %.1f MiB\n", (double)stats.total_bytes / 1048576.0);

    char **names = NULL;
    int64_t *counts = NULL;
    size_t n = 0;
    if (sl_engine_categories(engine, &names, &counts, &n, &err) != SL_OK) {
        sl_engine_free(engine);
        return fail(argv[0], &err);
    }
    for (size_t i = 0; i < n; i++) printf("category    %-24s %lld\n", names[i], (long long)counts[i]);
    sl_strings_free(names, n);
    free(counts);
    sl_engine_free(engine); /* saves the index */
    return rc;
}
