/*
 * bench/sift/benchio.h - shared by the SIFT benchmark programs (bench/sift.c for shoplens,
 * bench/sift/vlfeat_sift.c for VLFeat): reading the 8-bit binary PGM files that peer.py
 * prepares, listing them, timing, and writing features for the matching evaluation.
 *
 * Feature file (little-endian): uint32 n, then n records of 4 float32 (x, y, scale, angle),
 * then n * 128 float32 descriptors. peer.py reads it.
 */
#ifndef SL_BENCH_SIFT_IO_H
#define SL_BENCH_SIFT_IO_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct bimg {
    int w, h;
    uint8_t *px;
    char name[256];
} bimg;

static int bio_read_pgm(const char *path, bimg *im) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    int w = 0, h = 0, mx = 0;
    if (fscanf(f, "P5 %d %d %d", &w, &h, &mx) != 3 || w <= 0 || h <= 0 || mx != 255 ||
        fgetc(f) == EOF) {
        fclose(f);
        return -1;
    }
    im->px = malloc((size_t)w * (size_t)h);
    if (!im->px || fread(im->px, 1, (size_t)w * (size_t)h, f) != (size_t)w * (size_t)h) {
        free(im->px);
        fclose(f);
        return -1;
    }
    fclose(f);
    im->w = w;
    im->h = h;
    return 0;
}

static int bio_cmp_name(const void *a, const void *b) {
    return strcmp(((const bimg *)a)->name, ((const bimg *)b)->name);
}

/* Loads every DIR/<prefix>*.pgm, sorted by name. Returns the count (exits on error). */
static int bio_load_dir(const char *dir, const char *prefix, bimg **out) {
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "cannot open %s\n", dir);
        exit(1);
    }
    int n = 0, cap = 0;
    bimg *v = NULL;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (strncmp(e->d_name, prefix, strlen(prefix)) != 0 || l < 5 || l > 200 ||
            strcmp(e->d_name + l - 4, ".pgm") != 0)
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            v = realloc(v, sizeof *v * (size_t)cap);
            if (!v) exit(1);
        }
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        snprintf(v[n].name, sizeof v[n].name, "%s", e->d_name);
        if (bio_read_pgm(path, &v[n])) {
            fprintf(stderr, "bad pgm %s\n", path);
            exit(1);
        }
        n++;
    }
    closedir(d);
    qsort(v, (size_t)n, sizeof *v, bio_cmp_name);
    *out = v;
    return n;
}

static void bio_free(bimg *v, int n) {
    for (int i = 0; i < n; i++) free(v[i].px);
    free(v);
}

static double bio_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* CPU seconds used by the process (all threads): on a shared machine, less sensitive to waiting
 * for a core than wall time. */
static double bio_cpu(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Writes DIR/<name without .pgm>.<tag>.feat; frames are (x, y, scale, angle) per keypoint. */
static void bio_write_feat(const char *dir, const char *name, const char *tag, size_t n,
                           const float *frames, const float *desc) {
    char path[1200];
    int base = (int)strlen(name) - 4;
    snprintf(path, sizeof path, "%s/%.*s.%s.feat", dir, base, name, tag);
    FILE *f = fopen(path, "wb");
    uint32_t n32 = (uint32_t)n;
    if (!f || fwrite(&n32, 4, 1, f) != 1 || fwrite(frames, sizeof(float) * 4, n, f) != n ||
        fwrite(desc, sizeof(float) * 128, n, f) != n) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
    fclose(f);
}

#endif
