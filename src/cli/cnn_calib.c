/*
 * cli/cnn_calib.c - calibration options for `shoplens cnn info|run|embed` (see cnn_calib.h):
 * parsing, reading the sample (tensors from .npy, or every image file of a directory in name
 * order), and the record files of --calib-save / --calib-load.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cnn_calib.h"
#include "nn/npy.h"
#include "shoplens/image.h"
#include "util/util.h"

#define SL__CLI_CALIB_FILES_MAX 4096

const char sl__cli_calib_usage[] =
    "calibration (bf16 / int8; without it the first run calibrates on synthetic images):\n"
    "  --calibrate PATH      sample images: a .npy of input tensors, or a directory of images\n"
    "  --calib-method M      minmax, percentile, mse (default) or entropy\n"
    "  --calib-percentile P  for percentile (default 99.99)\n"
    "  --calib-images N      images used, a seeded sample (default 64)\n"
    "  --calib-sens N        images measuring each layer's sensitivity (default 8; 0 keeps none)\n"
    "  --calib-budget B      mean 1 - cosine the reduced layers may add (default per precision)\n"
    "  --calib-per-tensor    no per-channel steps for depthwise convolutions\n"
    "  --calib-keep-fp32     int8: layers kept out of int8 run at fp32 (default: bf16 where the\n"
    "                        CPU has AVX-512-BF16, within a tenth of the budget)\n"
    "  --calib-seed S        seed of the sample (default 17)\n"
    "  --calib-save FILE     write the calibration record; --calib-load FILE reads one\n";

void sl__cli_calib_init(sl__cli_calib *c) {
    memset(c, 0, sizeof *c);
    sl_nn_calib_opts_init(&c->o);
}

int sl__cli_calib_arg(const char *cmd, sl__cli_calib *c, int argc, char **argv, int i) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strncmp(a, "--calib", 7)) return 0;
    if (!strcmp(a, "--calib-per-tensor")) { c->o.per_channel = 0; return 1; }
    if (!strcmp(a, "--calib-keep-fp32")) { c->o.keep_bf16 = 0; return 1; }
    if (!v) { sl__cli_usage_error(cmd, "%s needs a value", a); return -1; }
    char *end = NULL;
    if (!strcmp(a, "--calibrate")) c->from = v;
    else if (!strcmp(a, "--calib-save")) c->save = v;
    else if (!strcmp(a, "--calib-load")) c->load = v;
    else if (!strcmp(a, "--calib-method")) {
        static const char *const names[] = {"minmax", "percentile", "mse", "entropy"};
        int k = 0;
        while (k < 4 && strcmp(v, names[k])) k++;
        if (k == 4) { sl__cli_usage_error(cmd, "--calib-method must be minmax, percentile, mse or entropy"); return -1; }
        c->o.method = (sl_nn_calib_method)k;
    } else if (!strcmp(a, "--calib-percentile")) c->o.percentile = strtod(v, &end);
    else if (!strcmp(a, "--calib-budget")) c->o.budget = strtod(v, &end);
    else if (!strcmp(a, "--calib-images")) c->o.max_images = (size_t)strtoull(v, &end, 10);
    else if (!strcmp(a, "--calib-sens")) c->o.sens_images = (size_t)strtoull(v, &end, 10);
    else if (!strcmp(a, "--calib-seed")) c->o.seed = strtoull(v, &end, 10);
    else { sl__cli_usage_error(cmd, "unknown option '%s'", a); return -1; }
    if (end && (end == v || *end)) { sl__cli_usage_error(cmd, "%s: '%s' is not a number", a, v); return -1; }
    return 2;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Calibrates on every readable image of a directory (name order; unreadable files are named on
 * stderr and skipped). */
static sl_status calib_dir(const char *cmd, const sl__cli_calib *c, sl_nn *m, sl_error *e) {
    DIR *d = opendir(c->from);
    if (!d) return sl__err_set(e, SL_E_IO, "%s: cannot open the directory", c->from);
    char **names = NULL;
    size_t n = 0;
    sl_status st = SL_OK;
    struct dirent *de;
    while ((de = readdir(d)) && !st) {
        if (de->d_name[0] == '.') continue;
        if (n == SL__CLI_CALIB_FILES_MAX) { st = sl__err_set(e, SL_E_TOO_LARGE, "%s: more than %d files", c->from, SL__CLI_CALIB_FILES_MAX); break; }
        char **nn = sl__reallocarray(names, n + 1, sizeof *nn);
        if (!nn || !(nn[n] = sl__strdup(de->d_name))) { if (nn) names = nn; st = sl__err_set(e, SL_E_NOMEM, "out of memory"); break; }
        names = nn;
        n++;
    }
    closedir(d);
    sl_image **imgs = st ? NULL : sl__callocarray(n ? n : 1, sizeof *imgs);
    if (!st && !imgs) st = sl__err_set(e, SL_E_NOMEM, "out of memory");
    size_t k = 0;
    if (!st) {
        qsort(names, n, sizeof *names, by_name);
        for (size_t i = 0; i < n; i++) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", c->from, names[i]);
            sl_error ie;
            if (sl_image_load_file(path, NULL, &imgs[k], NULL, &ie) == SL_OK) k++;
            else fprintf(stderr, "shoplens %s: calibration: %s skipped: %s\n", cmd, path, ie.message);
        }
        st = k ? sl_nn_calibrate(m, (const sl_image *const *)imgs, k, &c->o, e)
               : sl__err_set(e, SL_E_INVALID, "%s: no readable image", c->from);
    }
    for (size_t i = 0; i < k; i++) sl_image_free(imgs[i]);
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(imgs);
    free(names);
    return st;
}

static sl_status read_file(const char *path, uint8_t **buf, size_t *len, sl_error *e) {
    FILE *f = fopen(path, "rb");
    if (!f) return sl__err_set(e, SL_E_IO, "%s: cannot open", path);
    long sz = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (sz < 0 || fseek(f, 0, SEEK_SET)) { fclose(f); return sl__err_set(e, SL_E_IO, "%s: cannot read", path); }
    *buf = malloc(sz ? (size_t)sz : 1);
    if (!*buf) { fclose(f); return sl__err_set(e, SL_E_NOMEM, "out of memory"); }
    *len = fread(*buf, 1, (size_t)sz, f);
    fclose(f);
    if (*len != (size_t)sz) { free(*buf); return sl__err_set(e, SL_E_IO, "%s: short read", path); }
    return SL_OK;
}

int sl__cli_calib_apply(const char *cmd, const sl__cli_calib *c, sl_nn *m) {
    sl_error e;
    sl_error_clear(&e);
    sl_status st = SL_OK;
    if (c->load) {
        uint8_t *buf = NULL;
        size_t len = 0;
        if (!(st = read_file(c->load, &buf, &len, &e)) && (st = sl_nn_calibration_load(m, buf, len, &e)))
            sl__err_prefix(&e, "%s", c->load);
        free(buf);
    } else if (c->from) {
        size_t L = strlen(c->from);
        if (L > 4 && !strcmp(c->from + L - 4, ".npy")) {
            float *x = NULL;
            int64_t dims[8];
            int rank = 0;
            size_t cnt = 0;
            if (!(st = sl__npy_read(c->from, &x, dims, &rank, &cnt, &e)))
                st = rank > 0 && dims[0] > 0 ? sl_nn_calibrate_tensor(m, x, (size_t)dims[0], &c->o, &e)
                                             : sl__err_set(&e, SL_E_INVALID, "%s: empty array", c->from);
            free(x);
        } else {
            st = calib_dir(cmd, c, m, &e);
        }
    }
    if (!st && c->save) {
        uint8_t *buf = NULL;
        size_t len = 0;
        if (!(st = sl_nn_calibration_save(m, &buf, &len, &e))) {
            FILE *f = fopen(c->save, "wb");
            if (!f || fwrite(buf, 1, len, f) != len) st = sl__err_set(&e, SL_E_IO, "%s: cannot write", c->save);
            if (f && fclose(f) && !st) st = sl__err_set(&e, SL_E_IO, "%s: cannot write", c->save);
        }
        free(buf);
    }
    return st ? sl__cli_fail(cmd, &e) : SL_EXIT_OK;
}
