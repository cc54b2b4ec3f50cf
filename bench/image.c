/*
 * bench/image.c - decode + resize to 224 px (longest side) throughput of the image layer.
 *
 *   bench_image gen DIR [N]          writes N (default 200) 1024x768 JPEGs (quality 85, 4:2:0)
 *                                    drawn by the sample generator (catalog views and photos)
 *   bench_image run DIR THREADS [P]  prints one JSON line per method with the best images/s
 *                                    (wall) and least CPU ms per image of P passes (default 3):
 *     shoplens_shrink   sl_image_load_file with max_side = 224 (libvips shrink-on-load)
 *     shoplens_full     full decode, then sl_image_resize_longest (area averaging)
 * Files are read from disk (page cache after the first pass) by THREADS pthreads taking files
 * from a shared counter. The peers (OpenCV, PIL) are measured
 * by bench/image/peers.py in the same run (bench/image/run.sh).
 */
#include "shoplens/image.h"
#include "shoplens/sample.h"

#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double clk(clockid_t id) {
    struct timespec t;
    clock_gettime(id, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}
static double now(void) { return clk(CLOCK_MONOTONIC); }

typedef struct {
    char **files;
    int n, full;
    atomic_int next, failed;
} job;

static void *worker(void *arg) {
    job *j = arg;
    for (;;) {
        int i = atomic_fetch_add(&j->next, 1);
        if (i >= j->n) break;
        sl_image_load_opts o = { 0 };
        sl_image *img = NULL, *small = NULL;
        if (!j->full) {
            o.max_side = 224;
            if (sl_image_load_file(j->files[i], &o, &img, NULL, NULL) != SL_OK) atomic_fetch_add(&j->failed, 1);
        } else if (sl_image_load_file(j->files[i], &o, &img, NULL, NULL) != SL_OK ||
                   sl_image_resize_longest(img, 224, 1, &small, NULL) != SL_OK) {
            atomic_fetch_add(&j->failed, 1);
        }
        if (img && !j->full && (sl_image_width(img) > 224 || sl_image_height(img) > 224)) atomic_fetch_add(&j->failed, 1);
        sl_image_free(img);
        sl_image_free(small);
    }
    return NULL;
}

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int run(const char *dir, int threads, int passes) {
    DIR *d = opendir(dir);
    if (!d) { perror(dir); return 1; }
    char **files = NULL;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strstr(e->d_name, ".jpg")) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            char **nf = realloc(files, sizeof *files * (size_t)cap);
            if (!nf) return 1;
            files = nf;
        }
        size_t len = strlen(dir) + strlen(e->d_name) + 2;
        files[n] = malloc(len);
        if (!files[n]) return 1;
        snprintf(files[n], len, "%s/%s", dir, e->d_name);
        n++;
    }
    closedir(d);
    if (n == 0) { fprintf(stderr, "no .jpg in %s\n", dir); return 1; }
    qsort(files, (size_t)n, sizeof *files, cmp);
    if (sl_image_global_init(NULL) != SL_OK) return 1;
    const char *names[2] = { "shoplens_shrink", "shoplens_full" };
    for (int m = 0; m < 2; m++) {
        double best = 0, cpu_best = 1e30;
        int failed = 0;
        for (int pass = 0; pass < passes; pass++) {
            job j = { files, n, m, 0, 0 };
            pthread_t th[64];
            double t0 = now(), c0 = clk(CLOCK_PROCESS_CPUTIME_ID);
            for (int t = 0; t < threads; t++) pthread_create(&th[t], NULL, worker, &j);
            for (int t = 0; t < threads; t++) pthread_join(th[t], NULL);
            double ips = n / (now() - t0), cpu = (clk(CLOCK_PROCESS_CPUTIME_ID) - c0) * 1e3 / n;
            if (ips > best) best = ips;
            if (cpu < cpu_best) cpu_best = cpu;
            failed += atomic_load(&j.failed);
        }
        printf("{\"method\": \"%s\", \"threads\": %d, \"images\": %d, \"images_per_s\": %.1f, "
               "\"cpu_ms_per_image\": %.3f, \"failed\": %d}\n", names[m], threads, n, best, cpu_best, failed);
        fflush(stdout);
    }
    for (int i = 0; i < n; i++) free(files[i]);
    free(files);
    return 0;
}

static int gen(const char *dir, int n) {
    char path[4096];
    for (int i = 0; i < n; i++) {
        sl_image *img = NULL;
        sl_error err;
        sl_status st = i % 2 ? sl_sample_shopper_photo(5, (uint32_t)i, 0, 1024, 768, &img, &err)
                             : sl_sample_catalog_image(5, (uint32_t)i, (uint32_t)(i / 2 % 4), 1024, 768, &img, &err);
        if (st == SL_OK) {
            snprintf(path, sizeof path, "%s/img%03d.jpg", dir, i);
            st = sl_image_save_file(img, path, 85, &err);
        }
        sl_image_free(img);
        if (st != SL_OK) { fprintf(stderr, "gen: %s\n", err.message); return 1; }
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "gen") == 0) return gen(argv[2], argc > 3 ? atoi(argv[3]) : 200);
    if (argc >= 4 && strcmp(argv[1], "run") == 0) {
        int t = atoi(argv[3]), passes = argc > 4 ? atoi(argv[4]) : 3;
        if (t < 1 || t > 64 || passes < 1) { fprintf(stderr, "threads 1..64, passes >= 1\n"); return 2; }
        return run(argv[2], t, passes);
    }
    fprintf(stderr, "usage: bench_image gen DIR [N] | run DIR THREADS [PASSES]\n");
    return 2;
}
