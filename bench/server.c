/*
 * bench/server.c - the in-process peer of bench/server/run.sh: the same search the HTTP
 * benchmark sends (encoded image bytes -> sl_engine_search_bytes, k = 10), called directly on
 * one thread, so the report can show what HTTP adds. Prints "p50 X ms, p99 Y ms (N searches)".
 * Usage: bench_server STORE_DIR IMAGE [N]
 */
#include "shoplens/engine.h"
#include "util/util.h"

#include <stdio.h>
#include <stdlib.h>

static int sl__cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: %s STORE IMAGE [N]\n", argv[0]); return 2; }
    int n = argc > 3 ? atoi(argv[3]) : 200;
    if (n < 1 || n > 1000000) n = 200;
    FILE *f = fopen(argv[2], "rb");
    if (!f) { perror(argv[2]); return 1; }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = len > 0 ? malloc((size_t)len) : NULL;
    if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len) { fclose(f); fprintf(stderr, "cannot read %s\n", argv[2]); return 1; }
    fclose(f);
    sl_engine_opts o = { 0 };
    o.read_only = 1;
    sl_engine *e = NULL;
    sl_error err;
    if (sl_engine_open(argv[1], &o, &e, &err) != SL_OK) { fprintf(stderr, "%s\n", err.message); return 1; }
    double *t = malloc(sizeof *t * (size_t)n);
    sl_query q = { 0 };
    q.k = 10;
    for (int i = -3; i < n; i++) {
        sl_matches m = { 0 };
        double t0 = sl__now();
        if (sl_engine_search_bytes(e, buf, (size_t)len, &q, &m, &err) != SL_OK) { fprintf(stderr, "%s\n", err.message); return 1; }
        if (i >= 0) t[i] = (sl__now() - t0) * 1e3;
        sl_matches_free(&m);
    }
    qsort(t, (size_t)n, sizeof *t, sl__cmp);
    printf("p50 %.2f ms, p99 %.2f ms (%d searches)\n", t[n / 2], t[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1], n);
    free(t);
    free(buf);
    sl_engine_free(e);
    return 0;
}
