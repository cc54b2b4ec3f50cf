/*
 * cli/cmd_sample.c - `shoplens sample`: writes the built-in sample universe to disk.
 *   sample catalog DIR  -> DIR/images/<id>_<view>.jpg, DIR/catalog.csv (one row per image),
 *                          DIR/queries/<id>/<k>.jpg shopper photos (ImageFolder layout)
 *   sample image|photo  -> one catalog image or shopper photo, to -o FILE (.jpg or .png)
 */
#include "cli/cli.h"
#include "shoplens/sample.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
    const char *dir, *out;
    long products, views, photos, size, product, index;
    uint64_t seed;
    int quiet;
} sl__sample_args;

static int sl__num(const char *cmd, const char *opt, const char *v, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || !*v || x < lo || x > hi)
        return sl__cli_usage_error(cmd, "bad value '%s' for %s: must be an integer in %ld..%ld", v, opt, lo, hi);
    *out = x;
    return 0;
}

static int sl__parse(int argc, char **argv, int first, sl__sample_args *a) {
    const char *cmd = "sample";
    for (int i = first; i < argc; i++) {
        const char *o = argv[i];
        if (o[0] != '-') {
            if (a->dir) return sl__cli_usage_error(cmd, "unexpected argument '%s'", o);
            a->dir = o;
            continue;
        }
        if (strcmp(o, "--quiet") == 0) {
            a->quiet = 1;
            continue;
        }
        if (i + 1 >= argc) return sl__cli_usage_error(cmd, "%s needs a value", o);
        const char *v = argv[++i];
        int rc = 0;
        if (strcmp(o, "--products") == 0) rc = sl__num(cmd, o, v, 1, 1000000, &a->products);
        else if (strcmp(o, "--views") == 0) rc = sl__num(cmd, o, v, 1, 64, &a->views);
        else if (strcmp(o, "--photos") == 0) rc = sl__num(cmd, o, v, 0, 1000, &a->photos);
        else if (strcmp(o, "--size") == 0) rc = sl__num(cmd, o, v, 16, 4096, &a->size);
        else if (strcmp(o, "--product") == 0) rc = sl__num(cmd, o, v, 0, 4294967295L, &a->product);
        else if (strcmp(o, "--view") == 0 || strcmp(o, "--variant") == 0) rc = sl__num(cmd, o, v, 0, 4294967295L, &a->index);
        else if (strcmp(o, "-o") == 0 || strcmp(o, "--output") == 0) a->out = v;
        else if (strcmp(o, "--seed") == 0) {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 10);
            if (errno || *end || !*v || v[0] == '-')
                return sl__cli_usage_error(cmd, "bad value '%s' for --seed: must be an integer in 0..%llu", v, (unsigned long long)UINT64_MAX);
            a->seed = (uint64_t)s;
        } else return sl__cli_usage_error(cmd, "unknown option '%s'", o);
        if (rc) return rc;
    }
    return 0;
}

static int sl__mkdir(const char *path) {
    if (mkdir(path, 0777) == 0 || errno == EEXIST) return 0;
    fprintf(stderr, "shoplens sample: cannot create %s: %s\n", path, strerror(errno));
    return -1;
}

/* Writes s as a CSV field (quoted when it holds a comma, quote or newline). */
static void sl__csv(FILE *f, const char *s) {
    if (!strpbrk(s, ",\"\n\r")) { fputs(s, f); return; }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static int sl__write(sl_image *img, const char *path, const char *cmd) {
    sl_error err;
    sl_error_clear(&err);
    sl_status st = sl_image_save_file(img, path, 90, &err);
    sl_image_free(img);
    return st ? sl__cli_fail(cmd, &err) : 0;
}

static int sl__catalog(const sl__sample_args *a) {
    if (!a->dir) return sl__cli_usage_error("sample", "catalog needs a directory");
    char path[4096];
    if (sl__mkdir(a->dir)) return SL_EXIT_ERROR;
    snprintf(path, sizeof path, "%s/images", a->dir);
    if (sl__mkdir(path)) return SL_EXIT_ERROR;
    if (a->photos > 0) {
        snprintf(path, sizeof path, "%s/queries", a->dir);
        if (sl__mkdir(path)) return SL_EXIT_ERROR;
    }
    snprintf(path, sizeof path, "%s/catalog.csv", a->dir);
    FILE *csv = fopen(path, "w");
    if (!csv) {
        fprintf(stderr, "shoplens sample: cannot write %s: %s\n", path, strerror(errno));
        return SL_EXIT_ERROR;
    }
    fputs("product_id,image,title,category,price,description,url\n", csv);
    int sz = (int)a->size;
    for (long p = 0; p < a->products; p++) {
        sl_sample_product info;
        sl_sample_product_info(a->seed, (uint32_t)p, &info);
        for (long v = 0; v < a->views; v++) {
            sl_image *img = NULL;
            sl_error err;
            sl_error_clear(&err);
            if (sl_sample_catalog_image(a->seed, (uint32_t)p, (uint32_t)v, sz, sz, &img, &err)) {
                fclose(csv);
                return sl__cli_fail("sample", &err);
            }
            char rel[128];
            snprintf(rel, sizeof rel, "images/%s_%ld.jpg", info.id, v);
            snprintf(path, sizeof path, "%s/%s", a->dir, rel);
            if (sl__write(img, path, "sample")) { fclose(csv); return SL_EXIT_ERROR; }
            char price[32], url[96];
            snprintf(price, sizeof price, "%.2f", info.price);
            snprintf(url, sizeof url, "https://shop.example/products/%s", info.id);
            const char *fields[7] = { info.id, rel, info.title, info.category, price, info.description, url };
            for (int k = 0; k < 7; k++) {
                if (k) fputc(',', csv);
                sl__csv(csv, fields[k]);
            }
            fputc('\n', csv);
        }
        if (a->photos > 0) {
            snprintf(path, sizeof path, "%s/queries/%s", a->dir, info.id);
            if (sl__mkdir(path)) { fclose(csv); return SL_EXIT_ERROR; }
        }
        for (long k = 0; k < a->photos; k++) {
            sl_image *img = NULL;
            sl_error err;
            sl_error_clear(&err);
            if (sl_sample_shopper_photo(a->seed, (uint32_t)p, (uint32_t)k, sz, sz * 3 / 4 < 16 ? 16 : sz * 3 / 4, &img, &err)) {
                fclose(csv);
                return sl__cli_fail("sample", &err);
            }
            snprintf(path, sizeof path, "%s/queries/%s/%ld.jpg", a->dir, info.id, k);
            if (sl__write(img, path, "sample")) { fclose(csv); return SL_EXIT_ERROR; }
        }
    }
    if (fclose(csv) != 0) {
        fprintf(stderr, "shoplens sample: write failed: %s/catalog.csv\n", a->dir);
        return SL_EXIT_ERROR;
    }
    if (!a->quiet)
        printf("%ld products, %ld catalog images, %ld shopper photos in %s\n", a->products,
               a->products * a->views, a->products * a->photos, a->dir);
    return SL_EXIT_OK;
}

static int sl__sample_run(int argc, char **argv) {
    if (argc < 2) return sl__cli_usage_error("sample", "missing mode (catalog, image or photo)");
    sl__sample_args a = { NULL, NULL, 50, 1, 2, 512, 0, 0, 1, 0 };
    const char *mode = argv[1];
    int rc = sl__parse(argc, argv, 2, &a);
    if (rc) return rc;
    if (strcmp(mode, "catalog") == 0) return sl__catalog(&a);
    int photo = strcmp(mode, "photo") == 0;
    if (!photo && strcmp(mode, "image") != 0) return sl__cli_usage_error("sample", "unknown mode '%s'", mode);
    if (!a.out) return sl__cli_usage_error("sample", "%s needs -o FILE", mode);
    if (a.dir) return sl__cli_usage_error("sample", "unexpected argument '%s'", a.dir);
    sl_image *img = NULL;
    sl_error err;
    sl_error_clear(&err);
    int sz = (int)a.size;
    sl_status st = photo ? sl_sample_shopper_photo(a.seed, (uint32_t)a.product, (uint32_t)a.index, sz, sz * 3 / 4 < 16 ? 16 : sz * 3 / 4, &img, &err)
                         : sl_sample_catalog_image(a.seed, (uint32_t)a.product, (uint32_t)a.index, sz, sz, &img, &err);
    if (st) return sl__cli_fail("sample", &err);
    return sl__write(img, a.out, "sample") ? SL_EXIT_ERROR : SL_EXIT_OK;
}

const sl__cli_cmd sl__cmd_sample = {
    "sample",
    "write the built-in sample catalog, or one sample image or shopper photo",
    "Usage: shoplens sample catalog DIR [--products N] [--views V] [--photos P] [--seed S] [--size PX]\n"
    "                              [--quiet]\n"
    "       shoplens sample image --product ID [--view V] [--seed S] [--size PX] -o FILE\n"
    "       shoplens sample photo --product ID [--variant K] [--seed S] [--size PX] -o FILE\n\n"
    "Draws product-like images deterministically from a seed (same output on every machine).\n"
    "catalog writes DIR/images/<product_id>_<view>.jpg (PX x PX), DIR/catalog.csv with the columns\n"
    "product_id,image,title,category,price,description,url (one row per image, image relative to\n"
    "DIR) and P shopper photos per product (PX x 3/4 PX) as DIR/queries/<product_id>/<k>.jpg.\n"
    "Defaults: --products 50 --views 1 --photos 2 --seed 1 --size 512.\n"
    "image writes catalog view V (0 = packshot on white) of a product; photo writes shopper photo K\n"
    "(perspective, clutter, lighting, blur, noise, JPEG). FILE ends in .jpg, .jpeg or .png.\n",
    sl__sample_run,
};
