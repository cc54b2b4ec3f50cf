/*
 * cli/cmd_inspect.c - `shoplens inspect IMAGE... [--json]`: decodes each image with the default
 * limits and reports the detected format, stored size, EXIF orientation, size after loading, or
 * the error (status name + message). Exit 0 only if every image loaded, 3 if some failed.
 */
#include "cli/cli.h"
#include "cli/product_cli.h"
#include "shoplens/image.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int sl__inspect_run(int argc, char **argv) {
    int json = 0, quiet = 0, nfiles = 0, max_side = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) json = 1;
        else if (strcmp(argv[i], "--quiet") == 0) quiet = 1;
        else if (strcmp(argv[i], "--max-side") == 0 && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 0 || v > SL_IMAGE_MAX_SIDE_MAX)
                return sl__cli_usage_error(argv[0], "bad value '%s' for --max-side: must be an integer in 0..%d (0: no limit)", argv[i], SL_IMAGE_MAX_SIDE_MAX);
            max_side = (int)v;
        } else if (strcmp(argv[i], "--") == 0) { nfiles += argc - i - 1; break; }
        else if (argv[i][0] == '-' && argv[i][1]) return sl__cli_usage_error(argv[0], "unknown option '%s'", argv[i]);
        else nfiles++;
    }
    if (nfiles == 0) return sl__cli_usage_error(argv[0], "no image given");
    json_t *arr = json ? json_array() : NULL;
    if (json && !arr) { fprintf(stderr, "shoplens inspect: out of memory\n"); return SL_EXIT_ERROR; }
    int failed = 0, files_only = 0;
    for (int i = 1; i < argc; i++) {
        if (!files_only) {
            if (strcmp(argv[i], "--json") == 0 || strcmp(argv[i], "--quiet") == 0) continue;
            if (strcmp(argv[i], "--max-side") == 0) { i++; continue; }
            if (strcmp(argv[i], "--") == 0) { files_only = 1; continue; }
        }
        const char *path = argv[i];
        sl_image_load_opts opts = { 0 };
        opts.max_side = max_side;
        sl_image_info info;
        sl_error err;
        sl_error_clear(&err);
        sl_image *img = NULL;
        sl_status st = sl_image_load_file(path, &opts, &img, &info, &err);
        if (st) failed++;
        if (json) {
            json_t *o = json_pack("{s:o, s:b, s:s, s:i, s:i, s:i, s:i, s:i}", "file", sl__json_text(path),
                                  "ok", st == SL_OK, "format", info.format, "width", info.width,
                                  "height", info.height, "orientation", info.orientation,
                                  "bands", info.bands, "bits", info.bits);
            if (o && st == SL_OK) {
                json_object_set_new(o, "out_width", json_integer(info.out_width));
                json_object_set_new(o, "out_height", json_integer(info.out_height));
                json_object_set_new(o, "channels", json_integer(sl_image_channels(img)));
            } else if (o) {
                json_object_set_new(o, "status", json_string(sl_status_name(st)));
                json_object_set_new(o, "error", sl__json_text(err.message));
            }
            if (!o || json_array_append_new(arr, o) != 0) {
                sl_image_free(img);
                json_decref(arr);
                fprintf(stderr, "shoplens inspect: out of memory\n");
                return SL_EXIT_ERROR;
            }
        } else if (st == SL_OK) {
            if (!quiet)
                printf("%s: %s %dx%d, %d band%s, %d-bit, orientation %d -> loaded %dx%d\n", path,
                       info.format, info.width, info.height, info.bands, info.bands == 1 ? "" : "s",
                       info.bits, info.orientation, info.out_width, info.out_height);
        } else {
            printf("%s: %s: %s: %s\n", path, info.format, sl_status_name(st), err.message);
        }
        sl_image_free(img);
    }
    if (json) {
        char *s = json_dumps(arr, JSON_INDENT(2));
        json_decref(arr);
        if (!s) { fprintf(stderr, "shoplens inspect: out of memory\n"); return SL_EXIT_ERROR; }
        puts(s);
        free(s);
    }
    if (failed == 0) return SL_EXIT_OK;
    return failed == nfiles ? SL_EXIT_ERROR : SL_EXIT_PARTIAL;
}

const sl__cli_cmd sl__cmd_inspect = {
    "inspect",
    "decode images and show format, size, orientation or why they are refused",
    "Usage: shoplens inspect IMAGE... [--json] [--max-side N] [--quiet]\n\n"
    "Decodes each IMAGE as the engine would (limits: 32 MiB, 64 Mpx; JPEG, PNG, WebP, GIF,\n"
    "TIFF, HEIF/AVIF) and prints per image: detected format, stored size, bands, bit depth,\n"
    "EXIF orientation and the size after loading (upright), or the error status and message.\n\n"
    "  --json         print a JSON array, one object per image: file, ok, format, width, height,\n"
    "                 orientation, bands, bits, then out_width, out_height, channels when ok or\n"
    "                 status, error when not\n"
    "  --max-side N   shrink-on-load so the longest side is at most N (0..65535, 0: none)\n"
    "  --quiet        print only the images that failed\n\n"
    "Exit status: 0 all loaded, 1 none loaded, 2 usage error, 3 some failed.\n",
    sl__inspect_run,
};
