/*
 * bench/index.c - the shoplens side of the index benchmark (bench/index/run.sh), built as
 * bench_index with -DBUILD_BENCH=ON.
 *
 *   bench_index gt BASE QUERY K OUT         exact ground truth (inner product, flat index, 2 threads)
 *   bench_index run BASE QUERY GT M EFC THREADS EFS [FLAT] [STORAGE]
 *                                           build HNSW (cosine; add_batch then sl_index_compact,
 *                                           which orders the slots for locality), sweep ef (EFS
 *                                           may be empty: build only), print one JSON object
 *   bench_index synth N D NC SEED OUT       clustered Gaussian data (for runs without images)
 *
 * Files: ".fbin" = int32 n, int32 d, n*d float32; ".ibin" = int32 n, int32 k, n*k int32 (row
 * numbers). Same protocol as the peers (hnswlib_bench.cpp, faiss_bench.cpp): single queries on one thread,
 * recall@10 against GT, memory = RSS growth during the build.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shoplens/index.h"
#include "util/util.h"

typedef struct { int n, d; float *v; } mat;

static int read_fbin(const char *p, mat *m) {
    FILE *f = fopen(p, "rb");
    if (!f) return -1;
    int ok = fread(&m->n, 4, 1, f) == 1 && fread(&m->d, 4, 1, f) == 1 && m->n > 0 && m->d > 0;
    size_t cnt = ok ? (size_t)m->n * (size_t)m->d : 0;
    m->v = ok ? malloc(cnt * sizeof(float)) : NULL;
    ok = ok && m->v && fread(m->v, sizeof(float), cnt, f) == cnt;
    fclose(f);
    return ok ? 0 : -1;
}

static int write_bin(const char *p, int n, int d, const void *data, size_t elem) {
    FILE *f = fopen(p, "wb");
    if (!f) return -1;
    int ok = fwrite(&n, 4, 1, f) == 1 && fwrite(&d, 4, 1, f) == 1 &&
             fwrite(data, elem, (size_t)n * (size_t)d, f) == (size_t)n * (size_t)d;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

/* CPU seconds of this thread / process (the machine is shared: see run.sh). */
static double cpu_s(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static long rss_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) kb = atol(line + 6);
    if (f) fclose(f);
    return kb;
}

static sl_index *build(const mat *b, sl_index_kind kind, int M, int efc, int threads, int storage, double *secs, double *cpu) {
    sl_index_params p = { 0 };
    p.M = M;
    p.ef_construction = efc;
    p.threads = threads;
    p.storage = (sl_index_storage)storage;
    sl_index *idx;
    sl_error e;
    if (sl_index_new(&idx, b->d, SL_INDEX_COSINE, kind, &p, &e) != SL_OK) {
        fprintf(stderr, "bench_index: %s\n", e.message);
        exit(1);
    }
    uint64_t *ids = malloc((size_t)b->n * sizeof *ids);
    for (int i = 0; i < b->n; i++) ids[i] = (uint64_t)i;
    double t0 = sl__now(), c0 = cpu_s(CLOCK_PROCESS_CPUTIME_ID);
    if (sl_index_add_batch(idx, (size_t)b->n, ids, b->v) != SL_OK) {
        fprintf(stderr, "bench_index: add: %s\n", sl_index_errmsg(idx));
        exit(1);
    }
    /* compaction renumbers the slots in graph (BFS) order for locality: part of the build */
    if (kind == SL_INDEX_HNSW && sl_index_compact(idx) != SL_OK) {
        fprintf(stderr, "bench_index: compact: %s\n", sl_index_errmsg(idx));
        exit(1);
    }
    *secs = sl__now() - t0;
    *cpu = cpu_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
    free(ids);
    return idx;
}

static int cmd_gt(int argc, char **argv) {
    if (argc < 6) return 2;
    mat b, q;
    if (read_fbin(argv[2], &b) || read_fbin(argv[3], &q) || b.d != q.d) { fprintf(stderr, "bench_index: bad input\n"); return 1; }
    int k = atoi(argv[4]);
    double secs, cpu;
    sl_index *idx = build(&b, SL_INDEX_FLAT, 0, 0, 2, 0, &secs, &cpu);
    sl_index_result *r = malloc((size_t)q.n * (size_t)k * sizeof *r);
    size_t *nr = malloc((size_t)q.n * sizeof *nr);
    sl_index_search_params sp = { 0, 1, 2 };
    if (sl_index_search_batch(idx, q.v, (size_t)q.n, (size_t)k, NULL, &sp, r, nr) != SL_OK) return 1;
    int *g = malloc((size_t)q.n * (size_t)k * sizeof *g);
    for (size_t i = 0; i < (size_t)q.n * (size_t)k; i++) g[i] = (int)r[i].id;
    int rc = write_bin(argv[5], q.n, k, g, sizeof *g);
    sl_index_free(idx);
    free(r); free(nr); free(g); free(b.v); free(q.v);
    return rc ? 1 : 0;
}

static int cmd_run(int argc, char **argv) {
    if (argc < 9) return 2;
    mat b, q, gm;
    if (read_fbin(argv[2], &b) || read_fbin(argv[3], &q) || read_fbin(argv[4], &gm) || b.d != q.d) {
        fprintf(stderr, "bench_index: bad input\n");
        return 1;
    }
    const int *gt = (const int *)(const void *)gm.v;  /* .ibin has the same layout */
    int M = atoi(argv[5]), efc = atoi(argv[6]), T = atoi(argv[7]);
    const char *efs = argv[8];
    int flat = argc > 9 && atoi(argv[9]);
    int storage = argc > 10 ? atoi(argv[10]) : 0;
    const int k = 10;
    long r0 = rss_kb();
    double secs, cpu;
    /* BENCH_INDEX_CACHE=FILE (profiling): load the index from FILE if it exists, else build and
     * save it there; BENCH_INDEX_REPEAT=R runs the ef sweep R times (the last one is printed). */
    const char *cache = getenv("BENCH_INDEX_CACHE");
    int repeat = getenv("BENCH_INDEX_REPEAT") ? atoi(getenv("BENCH_INDEX_REPEAT")) : 1;
    sl_index *idx = NULL;
    secs = cpu = 0;
    if (cache && sl_index_load(&idx, cache, NULL, NULL) != SL_OK) idx = NULL;
    if (!idx) idx = build(&b, SL_INDEX_HNSW, M, efc, T, storage, &secs, &cpu);
    if (cache && secs > 0 && sl_index_save(idx, cache) != SL_OK) fprintf(stderr, "bench_index: save: %s\n", sl_index_errmsg(idx));
    long mem = rss_kb() - r0;
    sl_index_stats st;
    sl_index_get_stats(idx, &st);
    printf("{\"system\":\"shoplens\",\"n\":%d,\"d\":%d,\"M\":%d,\"efc\":%d,\"threads\":%d,\"storage\":%d,"
           "\"simd\":%d,\"build_s\":%.3f,\"build_cpu_s\":%.3f,\"mem_mb\":%.1f,\"points\":[",
           b.n, b.d, M, efc, T, storage, st.simd, secs, cpu, (double)mem / 1024.0);
    sl_index_result r[10];
    size_t nr;
    int first = 1;
    for (const char *s = efs; *s;) {
        int ef = atoi(s);
        while (*s && *s != ',') s++;
        if (*s) s++;
        sl_index_search_params sp = { ef, 0, 1 };
        double rec = 0, t0 = 0;
        for (int rep = 0; rep < (repeat > 0 ? repeat : 1); rep++) {
            rec = 0;
            t0 = cpu_s(CLOCK_THREAD_CPUTIME_ID);
            for (int i = 0; i < q.n; i++) {
                sl_index_search(idx, q.v + (size_t)i * (size_t)q.d, (size_t)k, NULL, &sp, r, &nr);
                int hit = 0;
                for (int a = 0; a < k; a++)
                    for (size_t c = 0; c < nr; c++)
                        if ((int)r[c].id == gt[(size_t)i * (size_t)gm.d + (size_t)a]) { hit++; break; }
                rec += hit / (double)k;
            }
        }
        double dt = cpu_s(CLOCK_THREAD_CPUTIME_ID) - t0;
        printf("%s{\"ef\":%d,\"recall\":%.4f,\"qps\":%.1f}", first ? "" : ",", ef, rec / q.n, q.n / dt);
        first = 0;
    }
    printf("]");
    sl_index_free(idx);
    if (flat) {
        double s2, c2;
        sl_index *fl = build(&b, SL_INDEX_FLAT, 0, 0, 1, 0, &s2, &c2);
        int nq = q.n < 200 ? q.n : 200;
        double t0 = cpu_s(CLOCK_THREAD_CPUTIME_ID), rec = 0;
        for (int i = 0; i < nq; i++) {
            sl_index_search(fl, q.v + (size_t)i * (size_t)q.d, (size_t)k, NULL, NULL, r, &nr);
            int hit = 0;
            for (int a = 0; a < k; a++)
                for (size_t c = 0; c < nr; c++)
                    if ((int)r[c].id == gt[(size_t)i * (size_t)gm.d + (size_t)a]) { hit++; break; }
            rec += hit / (double)k;
        }
        printf(",\"flat_qps\":%.1f,\"flat_recall\":%.4f", nq / (cpu_s(CLOCK_THREAD_CPUTIME_ID) - t0), rec / nq);
        sl_index_free(fl);
    }
    printf("}\n");
    free(b.v); free(q.v); free(gm.v);
    return 0;
}

static int cmd_synth(int argc, char **argv) {
    if (argc < 7) return 2;
    int n = atoi(argv[2]), d = atoi(argv[3]), nc = atoi(argv[4]);
    sl__rng r;
    sl__rng_seed(&r, (uint64_t)atoll(argv[5]));
    float *c = malloc((size_t)nc * (size_t)d * sizeof *c), *x = malloc((size_t)n * (size_t)d * sizeof *x);
    for (size_t i = 0; i < (size_t)nc * (size_t)d; i++) c[i] = (float)sl__rng_normal(&r);
    for (int i = 0; i < n; i++) {
        size_t kk = sl__rng_below(&r, (uint64_t)nc);
        double nn = 0;
        float *xi = x + (size_t)i * (size_t)d;
        for (int j = 0; j < d; j++) { xi[j] = c[kk * (size_t)d + (size_t)j] + 0.35f * (float)sl__rng_normal(&r); nn += xi[j] * xi[j]; }
        for (int j = 0; j < d; j++) xi[j] /= (float)(nn > 0 ? __builtin_sqrt(nn) : 1);
    }
    int rc = write_bin(argv[6], n, d, x, sizeof *x);
    free(c); free(x);
    return rc ? 1 : 0;
}

int main(int argc, char **argv) {
    int rc = 2;
    if (argc > 1 && !strcmp(argv[1], "gt")) rc = cmd_gt(argc, argv);
    else if (argc > 1 && !strcmp(argv[1], "run")) rc = cmd_run(argc, argv);
    else if (argc > 1 && !strcmp(argv[1], "synth")) rc = cmd_synth(argc, argv);
    if (rc == 2)
        fprintf(stderr, "usage: bench_index gt BASE QUERY K OUT | run BASE QUERY GT M EFC THREADS EFS [FLAT] [STORAGE]"
                        " | synth N D NC SEED OUT\n");
    return rc;
}
