/*
 * bench/index_descriptors.c - the datasets of the index benchmark (bench/index/run.sh), made
 * with the project's own feature code; built as bench_index_descriptors with BUILD_BENCH.
 *
 *   bench_index_descriptors DATA THREADS UPSAMPLE LOCAL NL NQL [GLOBAL NG NQG]
 *
 * DATA is an image folder (../shared/data); every .jpg/.jpeg/.png below it is used, in a fixed
 * pseudo-random order of the paths (so a prefix samples every sub-set). Every 10th image of that
 * order is held out: queries come only from held-out images, base vectors only from the others.
 *
 * (a) LOCAL.{base,query}.fbin: RootSIFT descriptors, d=128: sl_sift_extract (defaults;
 *     UPSAMPLE=1 doubles the image first, Lowe's octave -1) then sl_rootsift. Images are read
 *     until NL base and NQL query descriptors exist (in image order, all keypoints of an image).
 * (b) GLOBAL.{base,query}.fbin (optional): d=512 VLAD (sl_vlad, Jegou et al. CVPR 2010, power
 *     and intra normalization) of the RootSIFT descriptors inside random crops (40-100 % of each
 *     side) of every image, over a k=4 codebook learned with sl_kmeans on up to 50,000 base
 *     descriptors. Crops of held-out images are the queries.
 * Each prefix also gets a ".source" file with one line saying how it was made.
 * Files: ".fbin" = int32 n, int32 d, n*d float32. Deterministic for a given DATA folder and
 * thread count independent (images are processed in parallel, assembled in order).
 */
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "shoplens/feature.h"
#include "shoplens/image.h"
#include "util/util.h"

#define HOLDOUT 10
#define VLAD_K 4
#define CHUNK 64

typedef struct img {
    char *path;
    uint64_t key;
    int w, h, done;
    size_t n;
    float *desc;    /* n x 128 RootSIFT */
    float *xy;      /* n x 2 keypoint positions */
} img;

static img *imgs;
static size_t nimgs, capimgs, root_len;
static int upsample;

static uint64_t hash_str(const char *s) {  /* FNV-1a then a splitmix finaliser */
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    h ^= h >> 30; h *= 0xbf58476d1ce4e5b9ull; h ^= h >> 27; h *= 0x94d049bb133111ebull;
    return h ^ (h >> 31);
}

static int has_ext(const char *n) {
    const char *d = strrchr(n, '.');
    return d && (!strcasecmp(d, ".jpg") || !strcasecmp(d, ".jpeg") || !strcasecmp(d, ".png"));
}

static void walk(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        size_t len = strlen(dir) + strlen(e->d_name) + 2;
        char *p = malloc(len);
        if (!p) exit(1);
        snprintf(p, len, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) { walk(p); free(p); continue; }
        if (!has_ext(e->d_name)) { free(p); continue; }
        if (nimgs == capimgs) {
            capimgs = capimgs ? capimgs * 2 : 1024;
            imgs = realloc(imgs, capimgs * sizeof *imgs);
            if (!imgs) exit(1);
        }
        /* the order depends on the path below DATA only, not on how DATA was spelled */
        imgs[nimgs++] = (img){ .path = p, .key = hash_str(p + root_len) };
    }
    closedir(d);
}

static int img_cmp(const void *a, const void *b) {
    const img *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return strcmp(x->path + root_len, y->path + root_len);
}

static void extract(img *im) {
    sl_image_load_opts o = { 0 };
    o.grey = 1;
    sl_image *m;
    sl_error e;
    im->done = 1;
    if (sl_image_load_file(im->path, &o, &m, NULL, &e) != SL_OK) {
        fprintf(stderr, "index_descriptors: skip %s: %s\n", im->path, e.message);
        return;
    }
    sl_sift_params p;
    sl_sift_params_init(&p);
    p.upsample = upsample;
    sl_keypoint *k = NULL;
    if (sl_sift_extract(m, &p, &k, &im->desc, &im->n, &e) != SL_OK) {
        fprintf(stderr, "index_descriptors: sift %s: %s\n", im->path, e.message);
        im->n = 0;
    }
    im->w = sl_image_width(m);
    im->h = sl_image_height(m);
    sl_image_free(m);
    if (im->n) {
        sl_rootsift(im->desc, im->n, SL_SIFT_DESC_DIM);
        im->xy = malloc(im->n * 2 * sizeof(float));
        if (!im->xy) exit(1);
        for (size_t i = 0; i < im->n; i++) { im->xy[2 * i] = k[i].x; im->xy[2 * i + 1] = k[i].y; }
    }
    free(k);
}

typedef struct job { size_t from, to; _Atomic size_t next; } job;

static void *worker(void *arg) {
    job *j = arg;
    for (size_t i; (i = atomic_fetch_add(&j->next, 1) + j->from) < j->to;) extract(&imgs[i]);
    return NULL;
}

static void extract_range(size_t from, size_t to, int threads) {
    job j = { from, to, 0 };
    pthread_t th[16];
    if (threads > 16) threads = 16;
    for (int t = 1; t < threads; t++) pthread_create(&th[t], NULL, worker, &j);
    worker(&j);
    for (int t = 1; t < threads; t++) pthread_join(th[t], NULL);
}

typedef struct buf { float *v; size_t n, cap, d; } buf;

static void buf_add(buf *b, const float *v, size_t n) {
    if (b->n + n > b->cap) {
        while (b->n + n > b->cap) b->cap = b->cap ? b->cap * 2 : 4096;
        b->v = realloc(b->v, b->cap * b->d * sizeof(float));
        if (!b->v) exit(1);
    }
    memcpy(b->v + b->n * b->d, v, n * b->d * sizeof(float));
    b->n += n;
}

static void write_fbin(const char *prefix, const char *what, const buf *b, size_t n) {
    char p[4096];
    snprintf(p, sizeof p, "%s.%s.fbin", prefix, what);
    FILE *f = fopen(p, "wb");
    int32_t hdr[2] = { (int32_t)n, (int32_t)b->d };
    if (!f || fwrite(hdr, 4, 2, f) != 2 || fwrite(b->v, sizeof(float) * b->d, n, f) != n || fclose(f)) {
        fprintf(stderr, "index_descriptors: cannot write %s\n", p);
        exit(1);
    }
}

static void write_source(const char *prefix, const char *text) {
    char p[4096];
    snprintf(p, sizeof p, "%s.source", prefix);
    FILE *f = fopen(p, "w");
    if (!f || fputs(text, f) < 0 || fclose(f)) exit(1);
}

int main(int argc, char **argv) {
    if (argc != 7 && argc != 10) {
        fprintf(stderr, "usage: %s DATA THREADS UPSAMPLE LOCAL NL NQL [GLOBAL NG NQG]\n", argv[0]);
        return 2;
    }
    int threads = atoi(argv[2]);
    upsample = atoi(argv[3]);
    const char *lp = argv[4], *gp = argc == 10 ? argv[7] : NULL;
    size_t nl = strtoull(argv[5], NULL, 10), nql = strtoull(argv[6], NULL, 10);
    size_t ng = gp ? strtoull(argv[8], NULL, 10) : 0, nqg = gp ? strtoull(argv[9], NULL, 10) : 0;
    root_len = strlen(argv[1]);
    walk(argv[1]);
    if (!nimgs) { fprintf(stderr, "index_descriptors: no images under %s\n", argv[1]); return 1; }
    qsort(imgs, nimgs, sizeof *imgs, img_cmp);
    double t0 = sl__now();

    /* (a) local: images in order until both quotas are met (all images when (b) is wanted) */
    buf lb = { .d = 128 }, lq = { .d = 128 };
    size_t used = 0;
    while (used < nimgs && (gp || lb.n < nl || lq.n < nql)) {
        size_t to = used + CHUNK * (size_t)threads < nimgs ? used + CHUNK * (size_t)threads : nimgs;
        extract_range(used, to, threads);
        for (size_t i = used; i < to; i++) {
            img *im = &imgs[i];
            if (i % HOLDOUT == 0) { if (lq.n < nql) buf_add(&lq, im->desc, im->n < nql - lq.n ? im->n : nql - lq.n); }
            else if (lb.n < nl) buf_add(&lb, im->desc, im->n < nl - lb.n ? im->n : nl - lb.n);
        }
        used = to;
        if ((used / CHUNK / (size_t)threads) % 16 == 0 || used == nimgs)
            fprintf(stderr, "index_descriptors: %zu/%zu images, %zu base + %zu query descriptors, %.0f s\n",
                    used, nimgs, lb.n, lq.n, sl__now() - t0);
    }
    if (lb.n < nl || lq.n < nql) {
        fprintf(stderr, "index_descriptors: only %zu + %zu descriptors in %s (wanted %zu + %zu): "
                "use UPSAMPLE=1 or smaller sizes\n", lb.n, lq.n, argv[1], nl, nql);
        return 1;
    }
    write_fbin(lp, "base", &lb, nl);
    write_fbin(lp, "query", &lq, nql);
    char src[1024];
    snprintf(src, sizeof src, "project SIFT (sl_sift_extract, defaults, upsample=%d) + RootSIFT, "
             "d=128, from %zu images\n", upsample, used);
    write_source(lp, src);
    if (!gp) return 0;

    /* (b) global: codebook from the base descriptors, VLAD of random crops */
    size_t ns = lb.n < 50000 ? lb.n : 50000, step = lb.n / ns;
    float *sample = malloc(ns * 128 * sizeof(float)), cent[VLAD_K * 128];
    if (!sample) return 1;
    for (size_t i = 0; i < ns; i++) memcpy(sample + i * 128, lb.v + i * step * 128, 128 * sizeof(float));
    sl_kmeans_params kp;
    sl_kmeans_params_init(&kp);
    kp.seed = 1;
    sl_error e;
    if (sl_kmeans(sample, ns, 128, VLAD_K, &kp, cent, NULL, &e) != SL_OK) {
        fprintf(stderr, "index_descriptors: kmeans: %s\n", e.message);
        return 1;
    }
    free(sample);
    size_t nbase_img = 0, nq_img = 0;
    for (size_t i = 0; i < nimgs; i++)
        if (imgs[i].n >= 8) { if (i % HOLDOUT == 0) nq_img++; else nbase_img++; }
    if (!nbase_img || !nq_img) return 1;
    size_t per_b = (ng + nbase_img - 1) / nbase_img, per_q = (nqg + nq_img - 1) / nq_img;
    buf gb = { .d = VLAD_K * 128 }, gq = { .d = VLAD_K * 128 };
    float *sel = malloc(sizeof(float) * 128 * 100000), v[VLAD_K * 128];
    if (!sel) return 1;
    for (size_t i = 0; i < nimgs; i++) {
        img *im = &imgs[i];
        if (im->n < 8) continue;
        int q = i % HOLDOUT == 0;
        buf *b = q ? &gq : &gb;
        size_t want = q ? per_q : per_b, got = 0;
        sl__rng r;
        sl__rng_seed(&r, im->key);
        for (int tries = 0; got < want && tries < (int)want * 4; tries++) {
            double cw = im->w * (0.4 + 0.6 * sl__rng_uniform(&r)), ch = im->h * (0.4 + 0.6 * sl__rng_uniform(&r));
            double cx = (im->w - cw) * sl__rng_uniform(&r), cy = (im->h - ch) * sl__rng_uniform(&r);
            size_t m = 0;
            for (size_t k = 0; k < im->n && m < 100000; k++) {
                float x = im->xy[2 * k], y = im->xy[2 * k + 1];
                if (x >= cx && x < cx + cw && y >= cy && y < cy + ch) memcpy(sel + 128 * m++, im->desc + 128 * k, 128 * sizeof(float));
            }
            if (m < 4) continue;
            sl_vlad(cent, VLAD_K, 128, sel, m, SL_VLAD_POWER | SL_VLAD_INTRA, v);
            buf_add(b, v, 1);
            got++;
        }
    }
    free(sel);
    if (gb.n < ng || gq.n < nqg) {
        fprintf(stderr, "index_descriptors: only %zu + %zu global vectors (wanted %zu + %zu)\n", gb.n, gq.n, ng, nqg);
        return 1;
    }
    write_fbin(gp, "base", &gb, ng);
    write_fbin(gp, "query", &gq, nqg);
    snprintf(src, sizeof src, "project VLAD (sl_vlad, k=4 codebook by sl_kmeans, power+intra) of the "
             "project's RootSIFT inside random crops, d=512, from %zu images\n", used);
    write_source(gp, src);
    fprintf(stderr, "index_descriptors: done in %.0f s\n", sl__now() - t0);
    return 0;
}
