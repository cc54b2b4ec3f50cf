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

int sl__cli_ingest(int argc, char **argv, int sync) {
    sl__popts o;
    int rc = sl__popts_parse(argc, argv, SL__OPT_JOBS | SL__OPT_FEATURES | SL__OPT_QUIET, &o);
    if (rc) return rc;
    if (o.npos != 1) return sl__cli_usage_error(argv[0], "give exactly one CATALOG file");
    sl_engine *e;
    /* add creates the store on first use; sync needs an existing one */
    if ((rc = sl__open_engine(argv[0], &o, !sync, 0, &e))) return rc;
    sl__progress pr;
    sl__progress_init(&pr, argv[0], o.quiet || o.json);
    sl_ingest_opts io;
    memset(&io, 0, sizeof io);
    io.jobs = o.jobs;
    io.sync = sync;
    io.progress = sl__progress_cb;
    io.progress_ctx = &pr;
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
            json_array_append_new(fails, json_pack("{s:I, s:o, s:o, s:s, s:s}", "row", (json_int_t)f->row,
                "product_id", f->product_id ? json_string(f->product_id) : json_null(),
                "file", f->file ? json_string(f->file) : json_null(),
                "status", sl_status_name(f->status), "message", f->message ? f->message : ""));
        }
        json_t *o2 = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:o}",
            "rows", (json_int_t)rep.rows, "products", (json_int_t)rep.products,
            "added", (json_int_t)rep.added, "updated", (json_int_t)rep.updated,
            "skipped", (json_int_t)rep.skipped, "removed", (json_int_t)rep.removed,
            "failed", (json_int_t)rep.failed, "images_extracted", (json_int_t)rep.images_extracted,
            "seconds", rep.seconds, "failures", fails ? fails : json_array());
        if (o2) json_object_set_new(o2, "calibrated", json_boolean(rep.calibrated));
        if (o2 && rep.calibration_error) json_object_set_new(o2, "calibration_error", json_string(rep.calibration_error));
        if (o2 && st != SL_OK)
            json_object_set_new(o2, "error", json_pack("{s:s, s:s}", "status", sl_status_name(st), "message", err.message));
        if (sl__print_json(o2)) st = SL_E_NOMEM;
    } else {
        for (size_t i = 0; i < rep.n_failures; i++) {
            const sl_ingest_failure *f = &rep.failures[i];
            fprintf(stderr, "row %zu: %s%s%s%s: %s: %s\n", f->row, f->product_id ? f->product_id : "",
                    f->product_id && f->file ? " " : "", f->file ? f->file : "",
                    f->product_id || f->file ? "" : "(unreadable row)", sl_status_name(f->status),
                    f->message ? f->message : "");
        }
        printf("%zu rows, %zu products: %zu added, %zu updated, %zu skipped, %zu removed, %zu failed "
               "(%zu images described in %.1f s)\n", rep.rows, rep.products, rep.added, rep.updated,
               rep.skipped, rep.removed, rep.failed, rep.images_extracted, rep.seconds);
        if (rep.calibrated) printf("confidence calibrated on augmented catalog images (shoplens info)\n");
        if (rep.calibration_error) fprintf(stderr, "calibration skipped: %s\n", rep.calibration_error);
        if (rep.n_failures) {
            printf("failed rows:");
            for (size_t i = 0; i < rep.n_failures && i < 50; i++) printf(" %zu", rep.failures[i].row);
            printf(rep.n_failures > 50 ? " ...\n" : "\n");
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
    "Usage: shoplens add CATALOG [--store DIR] [--jobs N] [--features SPEC] [--quiet] [--json]\n\n"
    "Upserts the catalog: new products are added, changed ones updated, unchanged images (same\n"
    "content hash) skipped. CATALOG is CSV (header row with product_id, image, title, category,\n"
    "price, description, url; other columns kept as attributes) or JSON Lines with those keys.\n"
    "Image paths are relative to the catalog file; several rows with one product_id are several\n"
    "images of one product. Creates the store if needed (--features applies then); the first\n"
    "ingest learns the features' codebook/PCA from a sample of the catalog.\n"
    "A bad row or image is reported (row, file, status, message) and its product is left as it\n"
    "was; the rest goes on. A product counts as added once it is durable: after a crash or kill,\n"
    "running the same command again completes the store.\n"
    "  --jobs N   extraction threads (default: all cores)\n"
    "  --json     print {\"rows\", \"products\", \"added\", \"updated\", \"skipped\", \"removed\",\n"
    "             \"failed\", \"images_extracted\", \"seconds\", \"failures\": [{\"row\", \"product_id\",\n"
    "             \"file\", \"status\", \"message\"}], \"calibrated\", \"calibration_error\" (when it\n"
    "             failed)}\n"
    "Once the store has 5 products, and again whenever its catalog has doubled, the run ends by\n"
    "calibrating confidence on augmented catalog images (shoplens calibrate; docs/learn.md).\n"
    "Exit status: 0 all rows ok, 3 some rows failed, 1 the run failed.\n",
    sl__add_run};
