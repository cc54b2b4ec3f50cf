/*
 * cli/cmd_train.c - `shoplens train`: learns the store's projection head from photos labelled
 * with products (an ImageFolder whose sub-folders are product ids, or a CSV with the columns
 * photo and product_id) or, without --photos, from augmented catalog images. Progress on
 * stderr, a summary (or JSON) on stdout. Exit 0, 3 when some photos were skipped, 1 on failure.
 */
#include "cli/cli.h"
#include "cli/product_cli.h"
#include "cli/learn_cli.h"
#include "eval/eval_internal.h"
#include "util/util.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static volatile int sl__train_cancel;
static void sl__train_on_signal(int sig) {
    (void)sig;
    sl__train_cancel = 1;
}

static void sl__epoch_cb(void *ctx, int epoch, int epochs, double loss) {
    const sl__popts *o = ctx;
    if (!o->quiet && !o->json) fprintf(stderr, "train: epoch %d/%d, loss %.4f\n", epoch, epochs, loss);
}

static int sl__train_run(int argc, char **argv) {
    const char *photos = NULL;
    sl_head_train_opts ho;
    sl_head_train_opts_init(&ho);
    int has_seed = 0, no_refs = 0;
    uint64_t seed = 0;
    /* our options first; the rest goes to the shared parser */
    char **rest = calloc((size_t)argc + 1, sizeof *rest);
    if (!rest) return SL_EXIT_ERROR;
    int nrest = 0;
    rest[nrest++] = argv[0];
    int rc = 0;
    for (int i = 1; i < argc && !rc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end;
        if (strcmp(a, "--no-references") == 0) { no_refs = 1; continue; }
        if (strcmp(a, "--photos") == 0 || strcmp(a, "--epochs") == 0 || strcmp(a, "--seed") == 0 ||
            strcmp(a, "--train-opt") == 0) {
            if (!v) { rc = sl__cli_usage_error(argv[0], "%s needs a value", a); break; }
            i++;
            if (strcmp(a, "--photos") == 0) photos = v;
            else if (strcmp(a, "--epochs") == 0) {
                errno = 0;
                long n = strtol(v, &end, 10);
                if (*end || errno || n < SL_HEAD_EPOCHS_MIN || n > SL_HEAD_EPOCHS_MAX)
                    rc = sl__cli_usage_error(argv[0], "bad --epochs '%s' (%d..%d)", v, SL_HEAD_EPOCHS_MIN, SL_HEAD_EPOCHS_MAX);
                else ho.epochs = (int)n;
            } else if (strcmp(a, "--seed") == 0) {
                if (!(rc = sl__cli_seed(argv[0], v, &seed))) has_seed = 1;
            } else if (sl__cli_head_opt(&ho, v) != 0) {
                rc = sl__cli_usage_error(argv[0], "bad --train-opt '%s' (epochs=, seed=, rank=, lambda=, temperature=, category=, batch=, lr=)", v);
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
    sl__progress_init(&pr, photos ? "train: describing photos" : "train: describing augmented catalog images",
                      o.quiet || o.json);
    ho.progress = sl__epoch_cb;
    ho.progress_ctx = &o;
    sl_train_opts to;
    memset(&to, 0, sizeof to);
    to.photos = pl.v;
    to.n_photos = pl.n;
    to.head = &ho;
    to.seed = seed;
    to.has_seed = has_seed;
    to.no_references = no_refs;
    to.jobs = o.jobs;
    to.progress = sl__progress_cb;
    to.progress_ctx = &pr;
    to.cancel = &sl__train_cancel;
    sl__progress cpr;
    sl__progress_init(&cpr, "train: calibrating confidence", o.quiet || o.json);
    to.calib_progress = sl__progress_cb;
    to.calib_progress_ctx = &cpr;
    signal(SIGINT, sl__train_on_signal);
    signal(SIGTERM, sl__train_on_signal);
    sl_train_report rep;
    sl_error err;
    sl_error_clear(&err);
    sl_status st = sl_engine_train(e, &to, &rep, &err);
    sl_engine_free(e);
    sl__plist_free(&pl);
    int partial = rep.n_failures > 0;
    if (o.json && st == SL_OK) {
        json_t *fails = sl__failures_json(rep.failures, rep.n_failures);
        json_t *js = json_pack("{s:I, s:I, s:I, s:I, s:b, s:I, s:f, s:f, s:f, s:o, s:o, s:I, s:I}",
            "photos", (json_int_t)rep.photos, "products", (json_int_t)rep.products,
            "unknown", (json_int_t)rep.unknown, "failed", (json_int_t)rep.failed,
            "augmented", rep.augmented, "features_version", (json_int_t)rep.features_version,
            "describe_seconds", rep.describe_seconds, "train_seconds", rep.train_seconds,
            "seconds", rep.seconds, "failures", fails ? fails : json_array(),
            "calibration", sl__calib_json(&rep.calibration),
            "calibration_heldout", (json_int_t)rep.calibration_heldout,
            "references", (json_int_t)rep.references);
        if (js) {
            json_t *hd = json_pack("{s:f, s:I, s:f}", "lambda", rep.head_lambda, "prototypes",
                                   (json_int_t)rep.prototypes, "prototype_weight", rep.prototype_weight);
            if (hd) json_object_set_new(js, "head", hd);
        }
        if (js && rep.calibration_error) json_object_set_new(js, "calibration_error", json_string(rep.calibration_error));
        sl_train_report_free(&rep);
        if (sl__print_json(js)) return SL_EXIT_ERROR;
        return partial ? SL_EXIT_PARTIAL : SL_EXIT_OK;
    }
    sl__failures_print(argv[0], rep.failures, rep.n_failures);
    if (st != SL_OK) {
        sl_train_report_free(&rep);
        return sl__cli_fail(argv[0], &err);
    }
    printf("trained on %zu %s of %zu products (%zu unknown, %zu unreadable skipped): features version %lld; "
           "described in %.1f s, trained in %.1f s\n",
           rep.photos, rep.augmented ? "augmented catalog images" : "photos", rep.products, rep.unknown,
           rep.failed, (long long)rep.features_version, rep.describe_seconds, rep.train_seconds);
    if (rep.head_lambda == -1.0) printf("head: none (no head beat the untrained descriptors on held-out photos)\n");
    else if (rep.head_lambda == -2.0) printf("head: centring only");
    else printf("head: map with lambda %g", rep.head_lambda);
    if (rep.head_lambda != -1.0) {
        if (rep.prototypes) printf(", mixed with the prototypes of %zu trained labels (weight %g)\n", rep.prototypes, rep.prototype_weight);
        else printf("\n");
    }
    if (rep.references) printf("%zu photos kept as references of their products\n", rep.references);
    char line[512];
    sl__calib_line(&rep.calibration, line, sizeof line);
    if (rep.calibration_error) fprintf(stderr, "shoplens %s: calibration failed: %s\n", argv[0], rep.calibration_error);
    else if (rep.calibration_heldout)
        printf("confidence calibrated on %zu photos held out of a stand-in head's training %s\n",
               rep.calibration_heldout, line);
    else printf("confidence calibrated %s\n", line);
    sl_train_report_free(&rep);
    return partial ? SL_EXIT_PARTIAL : SL_EXIT_OK;
}

const sl__cli_cmd sl__cmd_train = {
    "train", "learn from photos of the products: a projection head for search",
    "Usage: shoplens train [--store DIR] [--photos DIR|CSV] [--no-references] [--epochs N]\n"
    "                      [--seed N] [--jobs N] [--train-opt KEY=VALUE]... [--quiet] [--json]\n\n"
    "Learns a projection of the store's global descriptors that brings photos of a product close\n"
    "to its catalog images and away from other products (categories as weaker labels), and\n"
    "applies it to the catalog and to every search from then on (docs/learn.md).\n"
    "  --photos DIR   an ImageFolder: DIR/<product_id>/<photo>\n"
    "  --photos CSV   columns photo (or image) and product_id; paths relative to the CSV\n"
    "  (none)         train from augmented copies of the catalog images\n"
    "  --no-references  the photos train the head only; by default they also become\n"
    "                 references of their products: searched next to the catalog images,\n"
    "                 never shown (they replace the previous ones; a run without photos or\n"
    "                 with this option removes them; a cluster store keeps none)\n"
    "  --epochs N     passes over the photos (default 10; 0 = only align the photo domain)\n"
    "  --seed N       seed of initialisation, batch order and augmentation (default fixed)\n"
    "  --train-opt    rank=, lambda=, temperature=, category=, batch=, lr= (learn.h)\n"
    "Photos of products the store does not have, or that cannot be read, are skipped and listed\n"
    "(exit 3). The catalog is not described again; Ctrl-C or a kill leaves the store as it was.\n"
    "  --json   print {\"photos\", \"products\", \"unknown\", \"failed\", \"augmented\",\n"
    "           \"features_version\", \"describe_seconds\", \"train_seconds\", \"seconds\", \"failures\",\n"
    "           \"calibration\" (as in info), \"calibration_heldout\", \"references\",\n"
    "           \"calibration_error\"\n"
    "           (when calibrating failed)}\n"
    "The head changes every score, so train also calibrates confidence (as shoplens calibrate)\n"
    "and installs both at once. With --photos it holds the photos of a seeded quarter of the\n"
    "products (30..1,000 photos) out of a stand-in head trained like the final one on the\n"
    "others (a second series of epochs) and calibrates check through it: photos the head never\n"
    "learned from; search's calibration and the final head use all photos. Without --photos:\n"
    "augmented catalog images.\n",
    sl__train_run};
