/*
 * cli/cmd_calibrate.c - `shoplens calibrate`: fits the store's calibration of match scores into
 * confidence (docs/learn.md) from photos labelled with products (--photos DIR|CSV) or, without,
 * from shelf photos made from the catalog images, and installs it. Progress on stderr, a summary (or JSON) on
 * stdout. Exit 0, 3 when some photos were skipped, 1 on failure (the store keeps its calibration).
 */
#include "cli/cli.h"
#include "cli/learn_cli.h"
#include "cli/product_cli.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile int sl__calib_cancel;
static void sl__calib_on_signal(int sig) {
    (void)sig;
    sl__calib_cancel = 1;
}

static int sl__calibrate_run(int argc, char **argv) {
    const char *photos = NULL;
    sl_calibrate_opts co;
    memset(&co, 0, sizeof co);
    char **rest = calloc((size_t)argc + 1, sizeof *rest);
    if (!rest) return SL_EXIT_ERROR;
    int nrest = 0, rc = 0;
    rest[nrest++] = argv[0];
    for (int i = 1; i < argc && !rc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end;
        if (strcmp(a, "--photos") == 0 || strcmp(a, "--seed") == 0 || strcmp(a, "--far") == 0) {
            if (!v) { rc = sl__cli_usage_error(argv[0], "%s needs a value", a); break; }
            i++;
            if (strcmp(a, "--photos") == 0) {
                photos = v;
            } else if (strcmp(a, "--seed") == 0) {
                if (!(rc = sl__cli_seed(argv[0], v, &co.seed))) co.has_seed = 1;
            } else {
                errno = 0;
                double d = strtod(v, &end);
                if (*end || errno || !*v || !(d >= SL_CALIB_FAR_MIN && d <= SL_CALIB_FAR_MAX))
                    rc = sl__cli_usage_error(argv[0], "bad --far '%s' (a false accept rate in %g..%g)", v,
                                             SL_CALIB_FAR_MIN, SL_CALIB_FAR_MAX);
                else co.far = d;
            }
        } else {
            rest[nrest++] = argv[i];
        }
    }
    sl__popts o;
    sl__plist pl;
    sl_engine *e;
    if (!rc) rc = sl__learn_cmd_open(nrest, rest, photos, &o, &pl, &e);
    free(rest);
    if (rc) return rc;
    sl__progress pr;
    sl__progress_init(&pr, photos ? "calibrate: photos" : "calibrate: shelf photos from the catalog", o.quiet || o.json);
    co.photos = pl.v;
    co.n_photos = pl.n;
    co.jobs = o.jobs;
    co.progress = sl__progress_cb;
    co.progress_ctx = &pr;
    co.cancel = &sl__calib_cancel;
    signal(SIGINT, sl__calib_on_signal);
    signal(SIGTERM, sl__calib_on_signal);
    sl_calibrate_report rep;
    sl_error err;
    sl_error_clear(&err);
    sl_status st = sl_engine_calibrate(e, &co, &rep, &err);
    sl_engine_free(e);
    sl__plist_free(&pl);
    if (!o.json) sl__failures_print(argv[0], rep.failures, rep.n_failures);
    if (st != SL_OK) {
        sl_calibrate_report_free(&rep);
        return sl__cli_fail(argv[0], &err);
    }
    int partial = rep.n_failures > 0;
    if (o.json) {
        json_t *fails = sl__failures_json(rep.failures, rep.n_failures);
        rc = sl__print_json(json_pack("{s:I, s:I, s:I, s:I, s:b, s:I, s:f, s:o, s:o}",
            "photos", (json_int_t)rep.photos, "products", (json_int_t)rep.products,
            "unknown", (json_int_t)rep.unknown, "failed", (json_int_t)rep.failed, "augmented", rep.augmented,
            "features_version", (json_int_t)rep.features_version, "seconds", rep.seconds,
            "calibration", sl__calib_json(&rep.info), "failures", fails ? fails : json_array()));
    } else if (!o.quiet) {
        char line[512];
        sl__calib_line(&rep.info, line, sizeof line);
        printf("calibrated %s (features version %lld, %.1f s)\n", line, (long long)rep.features_version, rep.seconds);
    }
    sl_calibrate_report_free(&rep);
    return rc ? rc : partial ? SL_EXIT_PARTIAL : SL_EXIT_OK;
}

const sl__cli_cmd sl__cmd_calibrate = {
    "calibrate", "calibrate confidence: when a photo counts as a match",
    "Usage: shoplens calibrate [--store DIR] [--photos DIR|CSV] [--seed N] [--far F] [--jobs N]\n"
    "                          [--quiet] [--json]\n\n"
    "Learns how the store's scores translate into the probability that a photo shows a product\n"
    "(the confidence of search, similar and check) and where \"match\" starts (docs/learn.md).\n"
    "  --photos DIR   photos known to show products: DIR/<product_id>/<photo>\n"
    "  --photos CSV   columns photo (or image) and product_id; paths relative to the CSV\n"
    "  (none)         shelf photos made from the catalog images (each among other products'\n"
    "                 images) stand in for shopper photos\n"
    "  --far F        false accepts allowed at the operating point (default 0.02: at most 2% of\n"
    "                 photos of other products are a match on the calibration data)\n"
    "  --seed N       which photos, copies and other products are drawn (default fixed)\n"
    "The store calibrates itself from its catalog when it reaches 5 products and after retrain and\n"
    "train; run this after adding labelled photos or a much larger catalog. Photos of products the\n"
    "store does not have, or that cannot be read, are skipped and listed (exit 3).\n"
    "  --json   print {\"photos\", \"products\", \"unknown\", \"failed\", \"augmented\",\n"
    "           \"features_version\", \"seconds\", \"calibration\": {...as in info}, \"failures\"}\n",
    sl__calibrate_run};
