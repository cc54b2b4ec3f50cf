/*
 * cli/learn_cli.h - what `train`, `calibrate` and `check --photos` share: the labelled photos
 * given as an ImageFolder (DIR/<product_id>/<photo>) or a CSV (columns photo or image, and
 * product_id; paths relative to the CSV's folder), and the calibration as JSON.
 */
#ifndef SL_LEARN_CLI_H
#define SL_LEARN_CLI_H

#include <jansson.h>
#include <stddef.h>
#include "shoplens/engine.h"

typedef struct sl__plist {
    sl_train_photo *v;
    char **own;          /* strings to free */
    size_t n, n_own;
} sl__plist;

void sl__plist_free(sl__plist *p);
/* Reads the photos named by a --photos argument (folder or CSV) into *out (zeroed first).
 * Returns 0, or an exit status after printing why (no photo listed, unreadable CSV, bad row). */
int sl__read_photos(const char *cmd, const char *arg, sl__plist *out);
/* The rest of a learning command's command line (--store, --jobs, --quiet, --json; argv[0] the
 * command) into *o, then the --photos list (NULL: none) into *pl and the store opened for
 * writing into *e. Returns 0, or an exit status after printing why (then nothing to free). */
struct sl__popts;
int sl__learn_cmd_open(int argc, char **argv, const char *photos, struct sl__popts *o, sl__plist *pl,
                       sl_engine **e);
/* --seed VALUE: a non-negative integer. 0, or the usage error's exit status. */
int sl__cli_seed(const char *cmd, const char *v, uint64_t *seed);
/* The skipped photos of a train or calibrate run: as a JSON array (new reference), or the first
 * 20 on stderr as "shoplens CMD: FILE (PRODUCT): MESSAGE". */
json_t *sl__failures_json(const sl_train_failure *f, size_t n);
void sl__failures_print(const char *cmd, const sl_train_failure *f, size_t n);
/* {"source", "photos", "products", "cohort", "check": {...}, "search": {...}} of a calibration
 * (docs/cli.md "calibrate"). New reference, NULL when out of memory. */
json_t *sl__calib_json(const sl_calib_info *ci);
/* One line describing a calibration, e.g. "from 40 shelf photos made from catalog images of 20 products:
 * check accepts 95% at 1.2% false accepts". */
void sl__calib_line(const sl_calib_info *ci, char *buf, size_t cap);

#endif
