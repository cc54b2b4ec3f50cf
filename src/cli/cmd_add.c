/*
 * cli/cmd_add.c - `shoplens add CATALOG` and the shared ingest driver used by `sync`:
 * upserts a CSV/JSONL feed with parallel extraction, a progress bar, per-row failure reports
 * and a summary. Exit 0, or 3 when any row failed, 1 when the run itself failed.
 */
#include "cli/cli.h"
#include "cli/product_cli.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

static volatile int sl__cancel_flag;
static void sl__on_signal(int sig) {
    (void)sig;
    sl__cancel_flag = 1;
}

int sl__cli_ingest(int argc, char **argv, int sync);

static json_t *sl__ids_json(const sl_id_list *l) {
    json_t *a = json_array();
    for (size_t i = 0; a && i < l->n; i++) json_array_append_new(a, sl__json_text(l->ids[i]));
    return a ? a : json_array();
}

static void sl__print_ids(const char *what, const sl_id_list *l) {
    printf("%s %zu:", what, l->n);
    for (size_t i = 0; i < l->n; i++) printf(" %s", l->ids[i]);
    printf("\n");
}

int sl__cli_ingest(int argc, char **argv, int sync) {
    sl__popts o;
    int rc = sl__popts_parse(argc, argv, SL__OPT_JOBS | SL__OPT_FEATURES | SL__OPT_INGEST |
                                             (sync ? SL__OPT_SYNC : 0), &o);
    if (rc) return rc;
    if (o.npos != 1) return sl__cli_usage_error(argv[0], "give exactly one CATALOG file");
    if (o.no_wait && !sl_store_is_url(o.store ? o.store : sl_store_default_dir()))
        return sl__cli_usage_error(argv[0], "--no-wait needs a cluster store (--store postgresql://...): "
                                   "a single store adds the products itself");
    sl_engine *e;
    /* add creates the store on first use; sync needs an existing one; a dry run writes nothing */
    if ((rc = sl__open_engine(argv[0], &o, !sync && !o.dry_run, o.dry_run, &e))) return rc;
    sl__progress pr, fpr;
    sl__progress_init(&pr, argv[0], o.quiet || o.json);
    sl__progress_init(&fpr, argv[0], o.quiet || o.json);
    fpr.unit = "images downloaded";
    sl_ingest_opts io;
    memset(&io, 0, sizeof io);
    io.jobs = o.jobs;
    io.sync = sync;
    io.dry_run = o.dry_run;
    io.no_wait = o.no_wait;
    io.currency = o.currency;
    io.max_removals = o.max_removals;
    io.max_removals_set = o.max_removals_set;
    io.max_removals_percent = o.max_removals_percent;
    io.progress = sl__progress_cb;
    io.progress_ctx = &pr;
    io.fetch_progress = sl__progress_cb;
    io.fetch_progress_ctx = &fpr;
    io.fetch_timeout_s = o.fetch_timeout;
    io.fetch_retries = o.fetch_retries;
    io.fetch_retries_set = o.fetch_retries_set;
    io.cancel = &sl__cancel_flag;
    sl__progress cpr; /* an automatic calibration at the end (docs/learn.md) */
    sl__progress_init(&cpr, "calibrating confidence", o.quiet || o.json);
    io.calib_progress = sl__progress_cb;
    io.calib_progress_ctx = &cpr;
    signal(SIGINT, sl__on_signal);
    signal(SIGTERM, sl__on_signal);
    sl_ingest_report rep;
    sl_error err;
    sl_error_clear(&err);
    sl_status st = sl_engine_ingest(e, o.pos[0], &io, &rep, &err);
    sl_engine_free(e);
    if (o.json) {
        json_t *fails = json_array();
        for (size_t i = 0; fails && i < rep.n_failures; i++) {
            const sl_ingest_failure *f = &rep.failures[i];
            json_array_append_new(fails, json_pack("{s:I, s:o, s:o, s:s, s:o}", "row", (json_int_t)f->row,
                "product_id", f->product_id ? sl__json_text(f->product_id) : json_null(),
                "file", f->file ? sl__json_text(f->file) : json_null(),
                "status", sl_status_name(f->status), "message", sl__json_text(f->message)));
        }
        json_t *o2 = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:o, s:b, s:o, s:o, s:o}",
            "rows", (json_int_t)rep.rows, "products", (json_int_t)rep.products,
            "added", (json_int_t)rep.added, "updated", (json_int_t)rep.updated,
            "skipped", (json_int_t)rep.skipped, "removed", (json_int_t)rep.removed,
            "failed", (json_int_t)rep.failed, "images_extracted", (json_int_t)rep.images_extracted,
            "seconds", rep.seconds, "failures", fails ? fails : json_array(), "dry_run", rep.dry_run,
            "added_ids", sl__ids_json(&rep.added_ids), "updated_ids", sl__ids_json(&rep.updated_ids),
            "removed_ids", sl__ids_json(&rep.removed_ids));
        if (o2 && sl_store_is_url(o.store ? o.store : sl_store_default_dir()))
            json_object_set_new(o2, "queued", json_integer((json_int_t)rep.queued));
        if (o2 && rep.dry_run && sync)
            json_object_set_new(o2, "refused", rep.refused ? sl__json_text(rep.refused) : json_null());
        if (o2) json_object_set_new(o2, "calibrated", json_boolean(rep.calibrated));
        if (o2 && rep.calibration_error)
            json_object_set_new(o2, "calibration_error", sl__json_text(rep.calibration_error));
        if (o2 && st != SL_OK)
            json_object_set_new(o2, "error", json_pack("{s:s, s:o}", "status", sl_status_name(st), "message", sl__json_text(err.message)));
        if (sl__print_json(o2)) st = SL_E_NOMEM;
    } else {
        for (size_t i = 0; i < rep.n_failures; i++) {
            const sl_ingest_failure *f = &rep.failures[i];
            fprintf(stderr, "row %zu: %s%s%s%s: %s: %s\n", f->row, f->product_id ? f->product_id : "",
                    f->product_id && f->file ? " " : "", f->file ? f->file : "",
                    f->product_id || f->file ? "" : "(unreadable row)", sl_status_name(f->status),
                    f->message ? f->message : "");
        }
        if (rep.dry_run) {
            /* the lists are what a dry run is asked for: printed even with --quiet */
            sl__print_ids("would add", &rep.added_ids);
            sl__print_ids("would update", &rep.updated_ids);
            if (sync) sl__print_ids("would remove", &rep.removed_ids);
            if (rep.refused) printf("the sync would be refused: %s\n", rep.refused);
        }
        if (rep.calibration_error) fprintf(stderr, "calibration skipped: %s\n", rep.calibration_error);
        if (!o.quiet) {
            printf("%s%zu rows, %zu products: %zu added, %zu updated, %zu skipped, %zu removed, %zu failed "
                   "(%zu images described in %.1f s)\n", rep.dry_run ? "dry run, nothing written: " : "",
                   rep.rows, rep.products, rep.added, rep.updated, rep.skipped, rep.removed, rep.failed,
                   rep.images_extracted, rep.seconds);
            if (rep.queued)
                printf("%zu products queued: the cluster's workers add them ('shoplens info --store ...' "
                       "shows the queue)\n", rep.queued);
            if (rep.calibrated) printf("confidence calibrated on augmented catalog images (shoplens info)\n");
            if (rep.n_failures) {
                printf("failed rows:");
                for (size_t i = 0; i < rep.n_failures && i < 50; i++) printf(" %zu", rep.failures[i].row);
                printf(rep.n_failures > 50 ? " ...\n" : "\n");
            }
        }
    }
    size_t failed = rep.failed;
    sl_ingest_report_free(&rep);
    if (st != SL_OK) {
        if (!o.json) sl__cli_fail(argv[0], &err);
        return SL_EXIT_ERROR;
    }
    return failed ? SL_EXIT_PARTIAL : SL_EXIT_OK;
}

static int sl__add_run(int argc, char **argv) { return sl__cli_ingest(argc, argv, 0); }

const sl__cli_cmd sl__cmd_add = {
    "add", "add or update the products of a CSV/JSONL catalog",
    "Usage: shoplens add CATALOG [--store DIR] [--jobs N] [--features SPEC] [--currency CODE]\n"
    "                    [--fetch-timeout S] [--fetch-retries N] [--dry-run] [--quiet] [--json]\n\n"
    "Upserts the catalog: new products are added, changed ones updated, unchanged images (same\n"
    "content hash) skipped. CATALOG is CSV (header row with product_id, image, title, category,\n"
    "price, currency, description, url, additional_images; other columns kept as attributes) or\n"
    "JSON Lines with those keys; Google Merchant feed names are read too (id, image_link,\n"
    "additional_image_link, product_type, link, price as \"12.99 USD\"). Image paths are relative\n"
    "to the catalog file; http(s) image URLs are downloaded (checked to be JPEG, PNG, WebP or\n"
    "HEIC, retried on timeouts and 5xx, never on 404). Several rows with one product_id, or\n"
    "additional images, are several images of one product. The store keeps its own copy of every image (longest\n"
    "side up to 1024 px), so the catalog's folder may move or go afterwards. Creates the store\n"
    "if needed (--features applies then); the first ingest learns the features' codebook/PCA\n"
    "from a sample of the catalog.\n"
    "A bad row or image is reported (row, file, status, message) and its product is left as it\n"
    "was; the rest goes on. A product counts as added once it is durable: after a crash or kill,\n"
    "running the same command again completes the store.\n"
    "On a cluster store (--store postgresql://..., docs/cluster.md) the products are queued and\n"
    "described by the cluster's 'shoplens worker' processes; add shows their progress and\n"
    "reports their failed rows like its own (it gives up waiting, jobs staying queued, when no\n"
    "worker has been alive for 30 s).\n"
    "  --jobs N        extraction threads and downloads at once, 0..256 (default 0: all cores,\n"
    "                  8 downloads)\n"
    "  --fetch-timeout S  seconds per download attempt, 1..600 (default 30)\n"
    "  --fetch-retries N  further attempts after a timeout, connection error, 408, 429 or 5xx,\n"
    "                  0..10 (default 3; waits 0.5 s, 1 s, 2 s, ... or the server's Retry-After)\n"
    "  --currency CODE currency of the prices of rows without a currency column (ISO 4217, e.g.\n"
    "                  EUR; default: none, the prices have no currency)\n"
    "  --dry-run       read, hash and decode everything and print what would be added and\n"
    "                  updated (ids); write nothing\n"
    "  --no-wait       a cluster store (postgresql://...): return once the products are queued\n"
    "                  instead of waiting for the workers to add them (\"queued\" counts them)\n"
    "  --quiet         no progress, no summary (failed rows are still printed on stderr)\n"
    "  --json          print {\"rows\", \"products\", \"added\", \"updated\", \"skipped\", \"removed\",\n"
    "                  \"failed\", \"images_extracted\", \"seconds\", \"failures\": [{\"row\",\n"
    "                  \"product_id\", \"file\", \"status\", \"message\"}], \"dry_run\", \"added_ids\",\n"
    "                  \"updated_ids\", \"removed_ids\", \"calibrated\", \"calibration_error\" (when it\n"
    "                  failed)}\n"
    "Once the store has 5 products, and again whenever its catalog has doubled, the run ends by\n"
    "calibrating confidence on augmented catalog images (shoplens calibrate; docs/learn.md); on\n"
    "a cluster store once the workers are done (with --no-wait: at the next add or sync that\n"
    "waits, or shoplens calibrate).\n"
    "Exit status: 0 all rows ok, 3 some rows failed, 1 the run failed.\n",
    sl__add_run};
