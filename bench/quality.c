/*
 * bench/quality.c - bench_quality: ranks a gallery for every query with one feature
 * specification, as the search engine would (global cosine similarity, then geometric
 * re-ranking of the top N when the spec has "verify"), and writes the full rankings for
 * bench/quality/quality.py to score against the peers with one shared metric implementation.
 *
 * Usage: bench_quality GALLERY.tsv QUERIES.tsv|- SPEC OUT.bin [THREADS]
 *   *.tsv: one "path<TAB>label" per line. "-" = leave-one-out on the gallery (a query never
 *   ranks itself; it is put last).
 *   OUT.bin: int32 nq, int32 ng, then nq rows of ng int32 gallery indices, best first.
 * Training uses the gallery images (up to 2000, evenly spaced), seed 1.
 * Prints one JSON line of timings to stdout.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "shoplens/feature.h"
#include "util/util.h"

typedef struct list { char **path; size_t n; } list;

static int read_list(const char *file, list *l) {
    FILE *f = fopen(file, "r");
    if (!f) return -1;
    char line[8192];
    size_t cap = 0;
    l->path = NULL;
    l->n = 0;
    while (fgets(line, sizeof line, f)) {
        char *tab = strchr(line, '\t');
        if (tab) *tab = 0;
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0]) continue;
        if (l->n == cap) {
            cap = cap ? cap * 2 : 256;
            char **np = realloc(l->path, cap * sizeof *np);
            if (!np) { fclose(f); return -1; }
            l->path = np;
        }
        l->path[l->n++] = sl__strdup(line);
    }
    fclose(f);
    return 0;
}

typedef struct job {
    const sl_features *f;
    sl_image **img;
    float *vec;
    sl_local_features **local;
    size_t n, dim, next;
    pthread_mutex_t mu;
    int failed;
    /* verify phase */
    const float *gvec;
    size_t ng, nq;
    int loo;
    sl_local_features **glocal;
    int32_t *rank;
} job;

static size_t take(job *j) {
    pthread_mutex_lock(&j->mu);
    size_t i = j->next++;
    pthread_mutex_unlock(&j->mu);
    return i;
}

static void *extract_worker(void *arg) {
    job *j = arg;
    for (size_t i; (i = take(j)) < j->n;) {
        sl_error e;
        if (sl_features_extract(j->f, j->img[i], j->vec + i * j->dim, j->local ? &j->local[i] : NULL, &e) != SL_OK) {
            fprintf(stderr, "extract %zu: %s\n", i, e.message);
            j->failed = 1;
        }
    }
    return NULL;
}

typedef struct cand { double s; int32_t g; } cand;
static int cmp_cand(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->s > y->s) return -1;
    if (x->s < y->s) return 1;
    return x->g < y->g ? -1 : x->g > y->g;
}

static void *rank_worker(void *arg) {
    job *j = arg;
    cand *c = malloc(j->ng * sizeof *c);
    int topn = sl_features_verify_top_n(j->f);
    for (size_t q; (q = take(j)) < j->nq;) {
        const float *qv = j->vec + q * j->dim;
        for (size_t g = 0; g < j->ng; g++) {
            const float *gv = j->gvec + g * j->dim;
            double s = 0;
            for (size_t d = 0; d < j->dim; d++) s += (double)qv[d] * gv[d];
            c[g].s = (j->loo && g == q) ? -1e30 : s;
            c[g].g = (int32_t)g;
        }
        qsort(c, j->ng, sizeof *c, cmp_cand);
        if (topn > 0 && j->local && j->local[q]) {
            size_t top = (size_t)topn < j->ng ? (size_t)topn : j->ng;
            for (size_t t = 0; t < top; t++) {
                if (c[t].s < -1e29) continue;
                sl_verify_result r;
                if (sl_features_verify(j->f, j->local[q], j->glocal[c[t].g], &r, NULL) == SL_OK)
                    c[t].s = sl_features_rerank_score(j->f, c[t].s, &r);
            }
            qsort(c, top, sizeof *c, cmp_cand);
        }
        for (size_t g = 0; g < j->ng; g++) j->rank[q * j->ng + g] = c[g].g;
    }
    free(c);
    return NULL;
}

static void run_pool(void *(*fn)(void *), job *j, int threads) {
    pthread_t t[16];
    j->next = 0;
    for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, fn, j);
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
}

static sl_image **load_all(const list *l) {
    sl_image **img = calloc(l->n, sizeof *img);
    sl_image_load_opts o;
    memset(&o, 0, sizeof o);
    o.max_side = 1024;
    for (size_t i = 0; i < l->n; i++) {
        sl_error e;
        if (sl_image_load_file(l->path[i], &o, &img[i], NULL, &e) != SL_OK) {
            fprintf(stderr, "%s: %s\n", l->path[i], e.message);
            exit(1);
        }
    }
    return img;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--default-spec") == 0) {
        puts(SL_FEATURES_SPEC_DEFAULT);
        return 0;
    }
    if (argc < 5) {
        fprintf(stderr, "usage: %s GALLERY.tsv QUERIES.tsv|- SPEC OUT.bin [THREADS]\n", argv[0]);
        return 2;
    }
    int threads = argc > 5 ? atoi(argv[5]) : 2;
    if (threads < 1 || threads > 16) threads = 2;
    list gl, ql;
    int loo = strcmp(argv[2], "-") == 0;
    if (read_list(argv[1], &gl) != 0 || (!loo && read_list(argv[2], &ql) != 0)) {
        fprintf(stderr, "cannot read the lists\n");
        return 1;
    }
    if (loo) ql = gl;
    sl_error e;
    sl_features *f = NULL;
    if (sl_features_new(argv[3], &f, &e) != SL_OK) { fprintf(stderr, "%s\n", e.message); return 1; }
    sl_features_set_threads(f, threads);
    double t0 = sl__now();
    sl_image **gimg = load_all(&gl);
    sl_image **qimg = loo ? gimg : load_all(&ql);
    double t1 = sl__now();
    size_t ntr = gl.n < 2000 ? gl.n : 2000;
    const sl_image **tr = malloc(ntr * sizeof *tr);
    for (size_t i = 0; i < ntr; i++) tr[i] = gimg[i * gl.n / ntr];
    if (sl_features_train(f, (const sl_image *const *)tr, ntr, 1) != SL_OK) {
        fprintf(stderr, "train: %s\n", sl_features_errmsg(f));
        return 1;
    }
    double t2 = sl__now();
    size_t dim = sl_features_dim(f);
    int verify = sl_features_uses_verify(f);
    job j;
    memset(&j, 0, sizeof j);
    pthread_mutex_init(&j.mu, NULL);
    j.f = f;
    j.dim = dim;
    float *gvec = malloc(gl.n * dim * sizeof *gvec);
    sl_local_features **gloc = verify ? calloc(gl.n, sizeof *gloc) : NULL;
    j.img = gimg; j.vec = gvec; j.local = gloc; j.n = gl.n;
    run_pool(extract_worker, &j, threads);
    float *qvec = gvec;
    sl_local_features **qloc = gloc;
    if (!loo) {
        qvec = malloc(ql.n * dim * sizeof *qvec);
        qloc = verify ? calloc(ql.n, sizeof *qloc) : NULL;
        j.img = qimg; j.vec = qvec; j.local = qloc; j.n = ql.n;
        run_pool(extract_worker, &j, threads);
    }
    if (j.failed) return 1;
    double t3 = sl__now();
    j.vec = qvec; j.local = qloc; j.gvec = gvec; j.glocal = gloc;
    j.ng = gl.n; j.nq = ql.n; j.loo = loo;
    j.rank = malloc(ql.n * gl.n * sizeof *j.rank);
    run_pool(rank_worker, &j, threads);
    double t4 = sl__now();
    FILE *o = fopen(argv[4], "wb");
    int32_t hdr[2] = {(int32_t)ql.n, (int32_t)gl.n};
    if (!o || fwrite(hdr, sizeof hdr, 1, o) != 1 ||
        fwrite(j.rank, sizeof *j.rank, ql.n * gl.n, o) != ql.n * gl.n || fclose(o) != 0) {
        fprintf(stderr, "cannot write %s\n", argv[4]);
        return 1;
    }
    double lsum = 0;
    if (gloc) for (size_t i = 0; i < gl.n; i++) lsum += (double)sl_local_features_count(gloc[i]);
    printf("{\"spec\": \"%s\", \"dim\": %zu, \"load_s\": %.2f, \"train_s\": %.2f, \"extract_s\": %.2f, "
           "\"rank_s\": %.2f, \"images\": %zu, \"local_per_image\": %.1f, \"threads\": %d}\n",
           sl_features_spec(f), dim, t1 - t0, t2 - t1, t3 - t2, t4 - t3, gl.n + (loo ? 0 : ql.n),
           gl.n ? lsum / (double)gl.n : 0.0, threads);
    /* teardown */
    for (size_t i = 0; i < gl.n; i++) { sl_image_free(gimg[i]); if (gloc) sl_local_features_free(gloc[i]); free(gl.path[i]); }
    if (!loo) {
        for (size_t i = 0; i < ql.n; i++) { sl_image_free(qimg[i]); if (qloc) sl_local_features_free(qloc[i]); free(ql.path[i]); }
        free(qimg); free(qvec); free(qloc); free(ql.path);
    }
    free(gimg); free(gvec); free(gloc); free(gl.path); free(tr); free(j.rank);
    sl_features_free(f);
    return 0;
}
