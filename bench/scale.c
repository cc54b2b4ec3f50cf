/*
 * bench/scale.c - the program behind bench/scale/run.sh: stores of 10^4..10^6 images built
 * cheaply from real descriptors, and what a search costs in them.
 *
 *   bench_scale grow SEED_STORE STORE N [SEED]
 *       Adds replicas to STORE (a copy of SEED_STORE) until it holds N images. Every replica is
 *       written through the public API (sl_engine_put_described, 1000 products per call); its
 *       descriptors come from a seed image (the real images described in SEED_STORE) with a
 *       seeded perturbation: the global vector moves by a random combination of the
 *       differences to the seed's 10 nearest seed vectors (weights N(0, 0.25^2)), each
 *       component is multiplied by exp(N(0, 0.1^2)) and the result is L2-normalized; the local
 *       features are the seed's (so verifying a replica costs what verifying the real image
 *       costs). Metadata: the seed's title and category, a price drawn from exp(N(3, 1)).
 *       Replica j depends only on (SEED, j): an interrupted run continues where it stopped
 *       and gives the same store.
 *   bench_scale kind STORE flat|hnsw|auto
 *       Sets the store's recorded index kind (meta index_kind), to measure both kinds on one
 *       store, and opens it once read-write: an index.bin of the other kind is rebuilt and
 *       saved (auto keeps whichever kind index.bin holds).
 *   bench_scale measure STORE QUERIES [searches=N] [clients=1,4] [recall=1] [e2e=1] [efs=A,B..]
 *       QUERIES is a file of image paths (shopper photos). Opens STORE read-only and prints one
 *       JSON object: open time, RSS (anonymous and file-backed) after the open and at the end,
 *       disk by part, the candidate stage (sl_engine_nearest, k = 100: the images the engine
 *       verifies) per query - latency and recall@100 against brute force over every stored
 *       vector, without and with category / price filters, and without filters for each HNSW
 *       ef in `efs` (sl_engine_set_hnsw_ef) - and end-to-end searches
 *       (sl_engine_search_bytes, k = 10): one pass over the queries first (their candidates'
 *       data mostly not in memory yet), then `searches` searches with 1 and with 4 client
 *       threads.
 */
#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shoplens/engine.h"
#include "shoplens/index.h"
#include "util/util.h"

#define K 100          /* candidates measured: the engine's default (SL_ENGINE_CANDIDATES_DEFAULT) */
#define NN 10          /* seed neighbours a replica moves towards */
#define BATCH 1000     /* products per sl_engine_put_described call */

static void die(const char *what, const sl_error *err) {
    fprintf(stderr, "bench_scale: %s: %s\n", what, err ? err->message : "");
    exit(1);
}

static double cpu_now(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* kB fields of /proc/self/status */
static long status_kb(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    size_t n = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, key, n) && line[n] == ':') kb = atol(line + n + 1);
    if (f) fclose(f);
    return kb;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double p) {
    if (!n) return NAN;
    qsort(v, n, sizeof *v, cmp_d);
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

/* ---- grow ------------------------------------------------------------------------------- */

typedef struct seed {
    float *vec;
    void *local;
    size_t local_len;
    char *title, *category, *source;
    char *file;            /* its copy, "images/<sha256>.<ext>": in the grown store too */
    int64_t size;
    int nn[NN];
} seed;

static seed *load_seeds(const char *dir, size_t *n_out, size_t *dim_out) {
    sl_store *s = NULL;
    sl_error err;
    if (sl_store_open(dir, 0, 1, &s, &err) != SL_OK) die(dir, &err);
    sl_image_ref *refs = NULL;
    size_t n = 0, dim = 0;
    if (sl_store_all_images(s, &refs, &n, &err) != SL_OK) die("seed images", &err);
    seed *sd = calloc(n ? n : 1, sizeof *sd);
    float *all = NULL;
    for (size_t i = 0; i < n; i++) {
        size_t d = 0;
        if (sl_store_image_features(s, refs[i].id, &sd[i].vec, &d, &sd[i].local, &sd[i].local_len, &err) != SL_OK)
            die("seed features", &err);
        if (!dim) {
            dim = d;
            all = malloc(n * dim * sizeof *all);
        }
        if (d != dim || !all) die("seed vectors of different sizes", NULL);
        memcpy(all + i * dim, sd[i].vec, dim * sizeof *all);
        sl_product p = { 0 };
        if (sl_store_get_product(s, refs[i].product_id, &p, &err) != SL_OK) die("seed product", &err);
        sd[i].title = p.title ? strdup(p.title) : NULL;
        sd[i].category = p.category ? strdup(p.category) : NULL;
        sd[i].source = strdup(refs[i].source);
        const char *rel = refs[i].in_store && refs[i].file ? strstr(refs[i].file, "images/") : NULL;
        if (!rel) die("a seed image without its copy in the seed store", NULL);
        sd[i].file = strdup(rel);
        sd[i].size = refs[i].size;
        sl_product_clear(&p);
    }
    /* each seed's nearest seeds: exact search over the seed vectors */
    sl_index *idx = NULL;
    uint64_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = i;
    if (sl_index_new(&idx, (int)dim, SL_INDEX_IP, SL_INDEX_FLAT, NULL, &err) != SL_OK) die("index", &err);
    if (sl_index_add_batch(idx, n, ids, all) != SL_OK) die("index add", NULL);
    sl_index_result *res = malloc(n * (NN + 1) * sizeof *res);
    size_t *got = malloc(n * sizeof *got);
    if (sl_index_search_batch(idx, all, n, NN + 1, NULL, NULL, res, got) != SL_OK) die("seed neighbours", NULL);
    for (size_t i = 0; i < n; i++) {
        size_t k = 0;
        for (size_t j = 0; j < got[i] && k < NN; j++)
            if (res[i * (NN + 1) + j].id != i) sd[i].nn[k++] = (int)res[i * (NN + 1) + j].id;
        while (k < NN) sd[i].nn[k++] = (int)i;
    }
    sl_index_free(idx);
    free(res);
    free(got);
    free(ids);
    free(all);
    sl_image_refs_free(refs, n);
    sl_store_free(s);
    *n_out = n;
    *dim_out = dim;
    return sd;
}

static int cmd_grow(int argc, char **argv) {
    if (argc < 5) return 2;
    size_t target = (size_t)atol(argv[4]);
    uint64_t seedv = argc > 5 ? strtoull(argv[5], NULL, 0) : 42;
    size_t ns = 0, dim = 0;
    double t0 = sl__now();
    seed *sd = load_seeds(argv[2], &ns, &dim);
    fprintf(stderr, "bench_scale grow: %zu seed images (d = %zu) in %.1f s\n", ns, dim, sl__now() - t0);
    sl_engine *e = NULL;
    sl_error err;
    if (sl_engine_open(argv[3], NULL, &e, &err) != SL_OK) die(argv[3], &err);
    sl_engine_stats st;
    if (sl_engine_stats_get(e, &st, &err) != SL_OK) die("stats", &err);
    char *fvs = NULL;
    if (sl_store_meta_get(sl_engine_store(e), "features_version", &fvs, &err) != SL_OK) die("features version", &err);
    int64_t fv = strtoll(fvs, NULL, 10);
    free(fvs);
    if ((size_t)st.images < ns) die("the store does not hold the seed images (copy the seed store first)", NULL);
    size_t j0 = (size_t)st.images - ns, total = target > ns ? target - ns : 0;
    float *vecs = malloc((size_t)BATCH * dim * sizeof *vecs);
    sl_image_descriptor *im = calloc(BATCH, sizeof *im);
    sl_product *pr = calloc(BATCH, sizeof *pr);
    sl_described_product *it = calloc(BATCH, sizeof *it);
    char (*ids)[32] = calloc(BATCH, sizeof *ids);
    char (*hash)[65] = calloc(BATCH, sizeof *hash);
    double t1 = sl__now(), last = t1;
    for (size_t j = j0; j < total;) {
        size_t m = total - j < BATCH ? total - j : BATCH;
        for (size_t b = 0; b < m; b++) {
            sl__rng r;
            sl__rng_seed(&r, seedv ^ ((uint64_t)(j + b + 1) * 0x9e3779b97f4a7c15ULL));
            const seed *a = &sd[sl__rng_below(&r, ns)];
            float *v = vecs + b * dim;
            double w[NN], n2 = 0;
            for (int k = 0; k < NN; k++) w[k] = 0.25 * sl__rng_normal(&r);
            for (size_t i = 0; i < dim; i++) {
                double x = a->vec[i];
                for (int k = 0; k < NN; k++) x += w[k] * (sd[a->nn[k]].vec[i] - a->vec[i]);
                x *= exp(0.1 * sl__rng_normal(&r));
                v[i] = (float)x;
                n2 += x * x;
            }
            for (size_t i = 0; i < dim; i++) v[i] = (float)(v[i] / sqrt(n2));
            for (int k = 0; k < 4; k++) snprintf(hash[b] + 16 * k, 17, "%016llx", (unsigned long long)sl__rng_next(&r));
            snprintf(ids[b], sizeof ids[b], "rep%07zu", j + b);
            memset(&pr[b], 0, sizeof pr[b]);
            pr[b].id = ids[b];
            pr[b].title = a->title;
            pr[b].category = a->category;
            pr[b].price = floor(exp(3.0 + sl__rng_normal(&r)) * 100.0 + 0.5) / 100.0;
            pr[b].has_price = 1;
            /* the replica shares its seed's copy (the grown store is a copy of the seed store) */
            memset(&im[b], 0, sizeof im[b]);
            im[b].source = a->source;
            memcpy(im[b].hash, hash[b], 65);
            im[b].size = a->size;
            im[b].file = a->file;
            im[b].vec = v;
            im[b].dim = dim;
            im[b].local = a->local;
            im[b].local_len = a->local_len;
            im[b].features_version = fv;
            it[b] = (sl_described_product){ &pr[b], &im[b], 1 };
        }
        if (sl_engine_put_described(e, it, m, NULL, &err) != SL_OK) die("put_described", &err);
        j += m;
        double now = sl__now();
        if (now - last > 30 || j == total) {
            fprintf(stderr, "bench_scale grow: %zu / %zu images, %.0f images/s, %.0f s, RSS %ld MB\n", ns + j, target,
                    (double)(j - j0) / (now - t1), now - t0, status_kb("VmRSS") / 1024);
            last = now;
        }
    }
    double tw = sl__now();
    if (sl_engine_flush(e, &err) != SL_OK) die("flush", &err);
    fprintf(stderr, "bench_scale grow: index saved in %.1f s; %.0f s in all, peak RSS %ld MB\n", sl__now() - tw,
            sl__now() - t0, status_kb("VmHWM") / 1024);
    sl_engine_free(e);
    for (size_t i = 0; i < ns; i++) {
        free(sd[i].vec);
        free(sd[i].local);
        free(sd[i].title);
        free(sd[i].category);
        free(sd[i].source);
        free(sd[i].file);
    }
    free(sd);
    free(vecs);
    free(im);
    free(pr);
    free(it);
    free(ids);
    free(hash);
    return 0;
}

static int cmd_kind(int argc, char **argv) {
    if (argc < 4) return 2;
    sl_store *s = NULL;
    sl_error err;
    if (sl_store_open(argv[2], 0, 0, &s, &err) != SL_OK) die(argv[2], &err);
    if (sl_store_meta_set(s, "index_kind", argv[3], &err) != SL_OK) die("index_kind", &err);
    sl_store_free(s);
    /* a read-write open builds the index of that kind when index.bin holds the other, and
     * saves it, so measurements load it */
    double t0 = sl__now();
    sl_engine *e = NULL;
    if (sl_engine_open(argv[2], NULL, &e, &err) != SL_OK) die(argv[2], &err);
    double t1 = sl__now();
    sl_engine_free(e);
    fprintf(stderr, "bench_scale kind %s: opened in %.1f s (an index of the other kind is rebuilt), saved in %.1f s\n",
            argv[3], t1 - t0, sl__now() - t1);
    return 0;
}

/* ---- measure ---------------------------------------------------------------------------- */

typedef struct filt {
    char name[96];
    sl_query q;
    char cat[256];
    uint64_t *bits;        /* allowed image ids (NULL: all) */
    size_t allowed;
} filt;

typedef struct truth {     /* best K of one (query, filter) */
    int64_t id[K];
    float s[K];
    size_t n;
} truth;

/* Share of the exact best (t) that hits holds: recall@|t|. */
static double recall_of(const sl_image_hit *hits, size_t n, const truth *t) {
    size_t hit = 0;
    for (size_t a = 0; a < n; a++)
        for (size_t b = 0; b < t->n; b++)
            if (hits[a].image_id == t->id[b]) {
                hit++;
                break;
            }
    return t->n ? (double)hit / (double)t->n : 1.0;
}

static void offer(truth *t, int64_t id, float s) {
    if (t->n == K && s <= t->s[K - 1]) return;
    size_t i = t->n < K ? t->n++ : K - 1;
    while (i > 0 && t->s[i - 1] < s) {
        t->s[i] = t->s[i - 1];
        t->id[i] = t->id[i - 1];
        i--;
    }
    t->s[i] = s;
    t->id[i] = id;
}

typedef struct gt_ctx {
    size_t dim, nq, nf, fill;
    const float *q;        /* nq x dim */
    filt *f;
    truth *t;              /* nq x nf */
    int64_t ids[512];
    float *x, *sc;         /* 512 x dim, nq x 512 */
} gt_ctx;

static void gt_flush(gt_ctx *g) {
    if (!g->fill) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)g->nq, (int)g->fill, (int)g->dim, 1.0f, g->q,
                (int)g->dim, g->x, (int)g->dim, 0.0f, g->sc, 512);
    for (size_t f = 0; f < g->nf; f++)
        for (size_t b = 0; b < g->fill; b++) {
            uint64_t id = (uint64_t)g->ids[b];
            if (g->f[f].bits && !((g->f[f].bits[id >> 6] >> (id & 63)) & 1)) continue;
            for (size_t qi = 0; qi < g->nq; qi++) offer(&g->t[qi * g->nf + f], g->ids[b], g->sc[qi * 512 + b]);
        }
    g->fill = 0;
}

static sl_status gt_add(void *ctx, int64_t id, const float *vec, size_t dim) {
    gt_ctx *g = ctx;
    if (dim != g->dim) return SL_E_CORRUPT;
    memcpy(g->x + g->fill * dim, vec, dim * sizeof *vec);
    g->ids[g->fill++] = id;
    if (g->fill == 512) gt_flush(g);
    return SL_OK;
}

typedef struct qimg { void *data; size_t len; } qimg;

typedef struct client {
    sl_engine *e;
    const qimg *q;
    size_t nq, first, step, count;
    double *lat;
    int failed;
} client;

static void *client_run(void *arg) {
    client *c = arg;
    sl_query q = { 0 };
    q.k = 10;
    for (size_t i = 0; i < c->count; i++) {
        const qimg *x = &c->q[(c->first + i * c->step) % c->nq];
        sl_matches m;
        sl_error err;
        double t = sl__now();
        if (sl_engine_search_bytes(c->e, x->data, x->len, &q, &m, &err) != SL_OK) c->failed++;
        c->lat[i] = (sl__now() - t) * 1e3;
        sl_matches_free(&m);
    }
    return NULL;
}

/* n searches over `clients` threads: "p50, p99, searches/s, CPU ms per search" */
static void run_clients(sl_engine *e, const qimg *q, size_t nq, int clients, size_t n, FILE *out) {
    client c[16];
    pthread_t th[16];
    double *lat = malloc(n * sizeof *lat);
    size_t per = n / (size_t)clients;
    double t0 = sl__now(), c0 = cpu_now(CLOCK_PROCESS_CPUTIME_ID);
    for (int i = 0; i < clients; i++) {
        c[i] = (client){ e, q, nq, (size_t)i * 7, (size_t)clients, per, lat + (size_t)i * per, 0 };
        pthread_create(&th[i], NULL, client_run, &c[i]);
    }
    int failed = 0;
    for (int i = 0; i < clients; i++) {
        pthread_join(th[i], NULL);
        failed += c[i].failed;
    }
    double wall = sl__now() - t0, cpu = cpu_now(CLOCK_PROCESS_CPUTIME_ID) - c0;
    size_t done = per * (size_t)clients;
    fprintf(out, "{\"clients\": %d, \"searches\": %zu, \"failed\": %d, \"p50_ms\": %.1f, \"p99_ms\": %.1f, "
                 "\"per_s\": %.2f, \"cpu_ms\": %.1f}",
            clients, done, failed, pct(lat, done, 0.50), pct(lat, done, 0.99), (double)done / wall,
            cpu * 1e3 / (double)done);
    free(lat);
}

static int cmd_measure(int argc, char **argv) {
    if (argc < 4) return 2;
    const char *dir = argv[2];
    size_t searches = 300;
    int recall = 1, e2e = 1, clients[4] = { 1, 4 }, nclients = 2, efs[8], nefs = 0;
    for (int i = 4; i < argc; i++) {
        if (!strncmp(argv[i], "searches=", 9)) searches = (size_t)atol(argv[i] + 9);
        else if (!strncmp(argv[i], "recall=", 7)) recall = atoi(argv[i] + 7);
        else if (!strncmp(argv[i], "e2e=", 4)) e2e = atoi(argv[i] + 4);
        else if (!strncmp(argv[i], "efs=", 4))
            for (char *p = argv[i] + 4; *p && nefs < 8; p = strchr(p, ',') ? strchr(p, ',') + 1 : p + strlen(p))
                efs[nefs++] = atoi(p);
        else if (!strncmp(argv[i], "clients=", 8)) {
            nclients = 0;
            for (char *p = argv[i] + 8; *p && nclients < 4; p = strchr(p, ',') ? strchr(p, ',') + 1 : p + strlen(p))
                clients[nclients++] = atoi(p);
        }
    }
    /* query images */
    FILE *lf = fopen(argv[3], "r");
    if (!lf) die(argv[3], NULL);
    qimg *qs = NULL;
    size_t nq = 0;
    char line[4096];
    while (fgets(line, sizeof line, lf)) {
        line[strcspn(line, "\r\n")] = 0;
        if (!*line) continue;
        FILE *f = fopen(line, "rb");
        if (!f) die(line, NULL);
        fseek(f, 0, SEEK_END);
        long len = ftell(f);
        fseek(f, 0, SEEK_SET);
        qs = realloc(qs, (nq + 1) * sizeof *qs);
        qs[nq].data = malloc((size_t)len);
        qs[nq].len = fread(qs[nq].data, 1, (size_t)len, f);
        fclose(f);
        nq++;
    }
    fclose(lf);
    long rss0 = status_kb("VmRSS");
    sl_engine_opts o = { 0 };
    o.read_only = 1;
    sl_engine *e = NULL;
    sl_error err;
    double t0 = sl__now();
    if (sl_engine_open(dir, &o, &e, &err) != SL_OK) die(dir, &err);
    double open_s = sl__now() - t0;
    printf("{\"store\": \"%s\", \"open_s\": %.2f, \"rss_open_mb\": {\"total\": %ld, \"anon\": %ld, \"file\": %ld, "
           "\"before\": %ld}",
           dir, open_s, status_kb("VmRSS") / 1024, status_kb("RssAnon") / 1024, status_kb("RssFile") / 1024, rss0 / 1024);
    sl_engine_stats st;
    if (sl_engine_stats_get(e, &st, &err) != SL_OK) die("stats", &err);
    printf(", \"images\": %lld, \"products\": %lld, \"index\": \"%s\", \"dim\": %zu, \"disk_mb\": {\"sqlite\": %.1f, "
           "\"index\": %.1f, \"features\": %.1f}",
           (long long)st.images, (long long)st.products, st.index_kind, st.dim, (double)st.db_bytes / 1048576.0,
           (double)st.index_bytes / 1048576.0, (double)st.features_bytes / 1048576.0);
    fflush(stdout);
    if (e2e) { /* first: every query once, the candidates' rows mostly not read yet */
        printf(", \"first_pass\": ");
        run_clients(e, qs, nq, 1, nq, stdout);
        fflush(stdout);
    }
    /* query vectors */
    size_t dim = st.dim;
    float *qv = malloc(nq * dim * sizeof *qv);
    double *dl = malloc(nq * sizeof *dl);
    for (size_t i = 0; i < nq; i++) {
        sl_image_load_opts lo = { 0 };
        lo.max_side = SL_ENGINE_MAX_SIDE_DEFAULT;
        sl_image *img = NULL;
        if (sl_image_load_buffer(qs[i].data, qs[i].len, &lo, &img, NULL, &err) != SL_OK) die("query", &err);
        float *v = NULL;
        size_t d = 0;
        int64_t fv;
        double t = cpu_now(CLOCK_THREAD_CPUTIME_ID);
        if (sl_engine_describe(e, img, &v, &d, NULL, NULL, &fv, &err) != SL_OK) die("describe", &err);
        dl[i] = (cpu_now(CLOCK_THREAD_CPUTIME_ID) - t) * 1e3;
        memcpy(qv + i * dim, v, dim * sizeof *qv);
        free(v);
        sl_image_free(img);
    }
    printf(", \"describe_cpu_ms_p50\": %.1f", pct(dl, nq, 0.5));
    /* filters: none, categories of about 10%, 1% and 0.1% of the products, price ranges of
     * about 50%, 5% and 1% (prices are exp(N(3, 1)) in replicas: ranges around e^3) */
    filt fs[8];
    size_t nf = 0;
    memset(fs, 0, sizeof fs);
    snprintf(fs[nf++].name, sizeof fs[0].name, "none");
    if (recall) {
        char **names = NULL;
        int64_t *counts = NULL;
        size_t nc = 0;
        if (sl_engine_categories(e, &names, &counts, &nc, &err) != SL_OK) die("categories", &err);
        const double want[3] = { 0.10, 0.01, 0.001 };
        for (int w = 0; w < 3 && nc; w++) {
            size_t best = 0;
            for (size_t c = 1; c < nc; c++)
                if (fabs(log((double)counts[c] / (double)st.products / want[w])) <
                    fabs(log((double)counts[best] / (double)st.products / want[w])))
                    best = c;
            filt *f = &fs[nf++];
            snprintf(f->cat, sizeof f->cat, "%s", names[best]);
            snprintf(f->name, sizeof f->name, "category %s", names[best]);
            f->q.category = f->cat;
        }
        sl_strings_free(names, nc);
        free(counts);
        const double z[3] = { 0.0, 0.0627, 0.01253 }; /* Phi(z) - Phi(-z) = 5%, 1% */
        for (int w = 0; w < 3; w++) {
            filt *f = &fs[nf++];
            f->q.has_max_price = 1;
            f->q.max_price = exp(3.0 + z[w]);
            if (w) {
                f->q.has_min_price = 1;
                f->q.min_price = exp(3.0 - z[w]);
            }
            snprintf(f->name, sizeof f->name, "price %.2f..%.2f", f->q.has_min_price ? f->q.min_price : 0.0, f->q.max_price);
        }
        int64_t *all = NULL;
        size_t nall = 0;
        if (sl_store_image_ids(sl_engine_store(e), &all, &nall, &err) != SL_OK) die("ids", &err);
        uint64_t maxid = nall ? (uint64_t)all[nall - 1] : 0;
        free(all);
        for (size_t f = 1; f < nf; f++) {
            sl_store_filter sf = { fs[f].q.category, fs[f].q.min_price, fs[f].q.max_price, fs[f].q.has_min_price,
                                   fs[f].q.has_max_price, NULL };
            int64_t *ids = NULL;
            size_t n = 0;
            if (sl_store_filter_images(sl_engine_store(e), &sf, &ids, &n, &err) != SL_OK) die("filter", &err);
            fs[f].bits = calloc(maxid / 64 + 1, sizeof *fs[f].bits);
            for (size_t i = 0; i < n; i++) fs[f].bits[(uint64_t)ids[i] >> 6] |= 1ULL << ((uint64_t)ids[i] & 63);
            fs[f].allowed = n;
            free(ids);
        }
        fs[0].allowed = (size_t)st.images;
        /* brute force over every stored vector */
        gt_ctx g = { dim, nq, nf, 0, qv, fs, calloc(nq * nf, sizeof(truth)), { 0 }, malloc(512 * dim * sizeof(float)),
                     malloc(nq * 512 * sizeof(float)) };
        double tg = sl__now();
        if (sl_store_each_vector(sl_engine_store(e), gt_add, &g, &err) != SL_OK) die("vectors", &err);
        gt_flush(&g);
        printf(", \"ground_truth_s\": %.1f, \"candidates\": [", sl__now() - tg);
        double *lat = malloc(nq * sizeof *lat), *cpu = malloc(nq * sizeof *cpu);
        sl_image_hit hits[K];
        for (size_t f = 0; f < nf; f++) {
            double sum = 0, worst = 1;
            for (size_t i = 0; i < nq; i++) {
                size_t n = 0;
                double t = sl__now(), c = cpu_now(CLOCK_THREAD_CPUTIME_ID);
                if (sl_engine_nearest(e, qv + i * dim, dim, &fs[f].q, K, hits, &n, &err) != SL_OK) die("nearest", &err);
                cpu[i] = (cpu_now(CLOCK_THREAD_CPUTIME_ID) - c) * 1e3;
                lat[i] = (sl__now() - t) * 1e3;
                double r = recall_of(hits, n, &g.t[i * nf + f]);
                sum += r;
                worst = fmin(worst, r);
            }
            printf("%s{\"filter\": \"%s\", \"selectivity\": %.5f, \"recall_mean\": %.4f, \"recall_min\": %.2f, "
                   "\"p50_ms\": %.2f, \"p99_ms\": %.2f, \"cpu_p50_ms\": %.2f, \"cpu_p99_ms\": %.2f}",
                   f ? ", " : "", fs[f].name, (double)fs[f].allowed / (double)(st.images ? st.images : 1),
                   sum / (double)nq, worst, pct(lat, nq, 0.5), pct(lat, nq, 0.99), pct(cpu, nq, 0.5), pct(cpu, nq, 0.99));
            fflush(stdout);
        }
        printf("]");
        /* HNSW: recall and time of the unfiltered candidate stage for other ef values */
        if (nefs && !strcmp(st.index_kind, "hnsw")) {
            printf(", \"ef_sweep\": [");
            for (int x = 0; x < nefs; x++) {
                sl_engine_set_hnsw_ef(e, efs[x]);
                double sum = 0, worst = 1;
                for (size_t i = 0; i < nq; i++) {
                    size_t n = 0;
                    double c = cpu_now(CLOCK_THREAD_CPUTIME_ID);
                    if (sl_engine_nearest(e, qv + i * dim, dim, NULL, K, hits, &n, &err) != SL_OK) die("nearest", &err);
                    cpu[i] = (cpu_now(CLOCK_THREAD_CPUTIME_ID) - c) * 1e3;
                    double r = recall_of(hits, n, &g.t[i * nf]);
                    sum += r;
                    worst = fmin(worst, r);
                }
                printf("%s{\"ef\": %d, \"recall_mean\": %.4f, \"recall_min\": %.2f, \"cpu_p50_ms\": %.2f, "
                       "\"cpu_p99_ms\": %.2f}",
                       x ? ", " : "", efs[x], sum / (double)nq, worst, pct(cpu, nq, 0.5), pct(cpu, nq, 0.99));
                fflush(stdout);
            }
            printf("]");
            sl_engine_set_hnsw_ef(e, 0); /* back to automatic */
        }
        free(lat);
        free(cpu);
        free(g.t);
        free(g.x);
        free(g.sc);
        for (size_t f = 0; f < nf; f++) free(fs[f].bits);
    } else { /* latency of the unfiltered candidate stage only */
        double *lat = malloc(nq * sizeof *lat), *cpu = malloc(nq * sizeof *cpu);
        sl_image_hit hits[K];
        for (int round = 0; round < 2; round++) /* the first round warms up */
            for (size_t i = 0; i < nq; i++) {
                size_t n = 0;
                double t = sl__now(), c = cpu_now(CLOCK_THREAD_CPUTIME_ID);
                if (sl_engine_nearest(e, qv + i * dim, dim, NULL, K, hits, &n, &err) != SL_OK) die("nearest", &err);
                cpu[i] = (cpu_now(CLOCK_THREAD_CPUTIME_ID) - c) * 1e3;
                lat[i] = (sl__now() - t) * 1e3;
            }
        printf(", \"candidates\": [{\"filter\": \"none\", \"p50_ms\": %.2f, \"p99_ms\": %.2f, \"cpu_p50_ms\": %.2f, "
               "\"cpu_p99_ms\": %.2f}]",
               pct(lat, nq, 0.5), pct(lat, nq, 0.99), pct(cpu, nq, 0.5), pct(cpu, nq, 0.99));
        free(lat);
        free(cpu);
    }
    if (e2e) {
        printf(", \"searches\": [");
        for (int c = 0; c < nclients; c++) {
            if (c) printf(", ");
            run_clients(e, qs, nq, clients[c], searches, stdout);
            fflush(stdout);
        }
        printf("]");
    }
    printf(", \"rss_end_mb\": {\"total\": %ld, \"anon\": %ld, \"file\": %ld, \"peak\": %ld}}\n", status_kb("VmRSS") / 1024,
           status_kb("RssAnon") / 1024, status_kb("RssFile") / 1024, status_kb("VmHWM") / 1024);
    sl_engine_free(e);
    for (size_t i = 0; i < nq; i++) free(qs[i].data);
    free(qs);
    free(qv);
    free(dl);
    return 0;
}

int main(int argc, char **argv) {
    int rc = 2;
    if (argc > 1 && !strcmp(argv[1], "grow")) rc = cmd_grow(argc, argv);
    else if (argc > 1 && !strcmp(argv[1], "kind")) rc = cmd_kind(argc, argv);
    else if (argc > 1 && !strcmp(argv[1], "measure")) rc = cmd_measure(argc, argv);
    if (rc == 2)
        fprintf(stderr, "usage: bench_scale grow SEED_STORE STORE N [SEED] | kind STORE flat|hnsw|auto |\n"
                        "       measure STORE QUERIES [searches=N] [clients=1,4] [recall=0|1] [e2e=0|1] [efs=A,B..]\n");
    return rc;
}
