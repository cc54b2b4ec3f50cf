/*
 * bench/learn_apply.c - what a learned head adds to a search: the time of sl_head_apply on one
 * query vector (query side), for a head of DIM x RANK (default 1280 x 256, MobileNetV2 with the
 * default rank), best of 5 runs of 2000 applications. Prints one JSON object. Compare with a
 * search's latency (bench/learn/run.sh does).
 * Usage: bench_learn_apply [DIM] [RANK]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "shoplens/learn.h"
#include "util/util.h"

int main(int argc, char **argv) {
    size_t dim = argc > 1 ? (size_t)atol(argv[1]) : 1280, rank = argc > 2 ? (size_t)atol(argv[2]) : 256;
    if (dim < 2 || dim > 65536 || rank < 1 || rank > 1024) { fprintf(stderr, "bad DIM or RANK\n"); return 2; }
    size_t n = 64, per = 4;
    float *g = malloc(n * dim * sizeof(float)), *p = malloc(n * per * dim * sizeof(float)), *out = malloc(dim * sizeof(float));
    uint32_t *gc = malloc(n * sizeof(uint32_t)), *pc = malloc(n * per * sizeof(uint32_t));
    if (!g || !p || !out || !gc || !pc) return 1;
    sl__rng r;
    sl__rng_seed(&r, 1);
    for (size_t i = 0; i < n * dim; i++) g[i] = (float)sl__rng_normal(&r);
    for (size_t i = 0; i < n * per * dim; i++) p[i] = g[(i / (per * dim)) * dim + i % dim] + 0.5f * (float)sl__rng_normal(&r);
    for (size_t i = 0; i < n; i++) gc[i] = (uint32_t)i;
    for (size_t i = 0; i < n * per; i++) pc[i] = (uint32_t)(i / per);
    sl_head_data d = {dim, p, pc, n * per, g, gc, n, n, NULL, 0};
    sl_head_train_opts o;
    sl_head_train_opts_init(&o);
    o.epochs = 1;
    o.rank = (int)rank;
    sl_head *h = NULL;
    sl_error e;
    if (sl_head_train(&d, &o, &h, &e) != SL_OK) { fprintf(stderr, "%s\n", e.message); return 1; }
    double best = 1e9;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = sl__now();
        for (int i = 0; i < 2000; i++) sl_head_apply(h, SL_HEAD_QUERY, p + (size_t)(i % 64) * dim, out, 1);
        double us = (sl__now() - t0) / 2000 * 1e6;
        if (us < best) best = us;
    }
    printf("{\"dim\": %zu, \"rank\": %zu, \"apply_us\": %.1f}\n", dim, sl_head_rank(h), best);
    sl_head_free(h);
    free(g); free(p); free(out); free(gc); free(pc);
    return 0;
}
