/* tests/test_index.c - the vector index: SIMD kernels vs scalar, HNSW recall vs exact search,
 * filters at 1/10/50% selectivity, deletes against a model, compaction, compressed storage,
 * save/load round trips, byte flips and truncations of files, concurrent readers + writer.
 * Sizes shrink under the sanitizer build (SL_SANITIZED) but the assertions do not. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <dirent.h>
#include <unistd.h>

#include "shoplens/index.h"
#include "index/distance.h"
#include "index/index_impl.h"
#include "util/util.h"

static int sanitized(void) { return getenv("SL_SANITIZED") != NULL; }

/* Clustered data: `nc` Gaussian clusters in d dimensions; the clusters depend on `seed` only,
 * the points also on `draw` (so queries come from the same clusters as the base). */
static float *clustered_draw(size_t n, int d, int nc, uint64_t seed, uint64_t draw) {
    sl__rng r;
    sl__rng_seed(&r, seed);
    float *c = malloc((size_t)nc * (size_t)d * sizeof *c), *x = malloc(n * (size_t)d * sizeof *x);
    assert_non_null(c);
    assert_non_null(x);
    for (size_t i = 0; i < (size_t)nc * (size_t)d; i++) c[i] = (float)sl__rng_normal(&r);
    if (draw) sl__rng_seed(&r, seed ^ (draw * 0x9e3779b97f4a7c15ULL));
    for (size_t i = 0; i < n; i++) {
        size_t k = sl__rng_below(&r, (uint64_t)nc);
        for (int j = 0; j < d; j++) x[i * (size_t)d + (size_t)j] = c[k * (size_t)d + (size_t)j] + 0.6f * (float)sl__rng_normal(&r);
    }
    free(c);
    return x;
}
static float *clustered(size_t n, int d, int nc, uint64_t seed) { return clustered_draw(n, d, nc, seed, 0); }
/* queries: same clusters as clustered(.., seed), other points */
static float *queries(size_t n, int d, int nc, uint64_t seed) { return clustered_draw(n, d, nc, seed, 1); }

static uint64_t *seq_ids(size_t n, uint64_t mul, uint64_t add) {
    uint64_t *ids = malloc(n * sizeof *ids);
    assert_non_null(ids);
    for (size_t i = 0; i < n; i++) ids[i] = i * mul + add;
    return ids;
}

static double overlap(const sl_index_result *a, size_t na, const sl_index_result *b, size_t nb) {
    size_t hit = 0;
    for (size_t i = 0; i < na; i++)
        for (size_t j = 0; j < nb; j++)
            if (a[i].id == b[j].id) { hit++; break; }
    return nb ? (double)hit / (double)nb : 1.0;
}

/* Mean recall@k of idx against exact search on the same index. */
static double recall(sl_index *idx, const float *q, size_t nq, size_t k, const sl_index_filter *f) {
    sl_index_result *a = malloc(k * sizeof *a), *b = malloc(k * sizeof *b);
    sl_index_search_params ex = { 0, 1, 0 };
    double sum = 0;
    for (size_t i = 0; i < nq; i++) {
        size_t na, nb;
        const float *qi = q + i * (size_t)sl_index_dim(idx);
        assert_int_equal(sl_index_search(idx, qi, k, f, NULL, a, &na), SL_OK);
        assert_int_equal(sl_index_search(idx, qi, k, f, &ex, b, &nb), SL_OK);
        for (size_t j = 1; j < na; j++) {
            if (sl_index_metric_of(idx) == SL_INDEX_L2) assert_true(a[j - 1].score <= a[j].score);
            else assert_true(a[j - 1].score >= a[j].score);
        }
        assert_true(na <= nb);
        sum += overlap(a, na, b, nb);
    }
    free(a);
    free(b);
    return sum / (double)nq;
}

/* ---- kernels --------------------------------------------------------------------------- */

static void check_table(const sl__dist_kernels *k) {
    const sl__dist_kernels *s = sl__dist_scalar();
    static const size_t dims[] = { 1, 3, 7, 9, 15, 17, 31, 33, 47, 63, 65, 100, 129, 257, 515 };
    sl__rng r;
    sl__rng_seed(&r, 7);
    float *a = malloc(600 * sizeof *a), *b = malloc(600 * sizeof *b);
    uint16_t *h = malloc(600 * sizeof *h);
    int8_t *c = malloc(600);
    for (size_t t = 0; t < sizeof dims / sizeof dims[0]; t++) {
        size_t d = dims[t];
        double mag = 0;
        for (size_t i = 0; i < d; i++) {
            a[i] = (float)sl__rng_normal(&r);
            b[i] = (float)sl__rng_normal(&r);
            h[i] = sl__f32_to_f16(b[i]);
            c[i] = (int8_t)((int)sl__rng_below(&r, 255) - 127);
            mag += fabs(a[i]) * (fabs(b[i]) + 1) + (double)(a[i] - b[i]) * (a[i] - b[i]);
        }
        double tol = 1e-5 * mag + 1e-6;
        assert_true(fabs(k->dot_f32(a, b, d) - s->dot_f32(a, b, d)) <= tol);
        assert_true(fabs(k->l2_f32(a, b, d) - s->l2_f32(a, b, d)) <= tol);
        assert_true(fabs(k->dot_f16(a, h, d) - s->dot_f16(a, h, d)) <= tol);
        assert_true(fabs(k->l2_f16(a, h, d) - s->l2_f16(a, h, d)) <= tol);
        uint8_t *u = (uint8_t *)h;  /* reuse: any bytes are valid unsigned inputs */
        assert_int_equal(k->dot_u8s8(u, c, d), s->dot_u8s8(u, c, d));
        if (k->dot_q8s8) { /* query bytes in [1, 255], codes over the whole int8 range */
            uint8_t qb[600];
            int8_t cb[600];
            int64_t sumc = 0;
            for (size_t i = 0; i < d; i++) {
                qb[i] = (uint8_t)(i % 5 == 0 ? 1 : i % 5 == 1 ? 255 : 1 + sl__rng_below(&r, 255));
                cb[i] = (int8_t)(i % 3 == 0 ? -128 : i % 3 == 1 ? 127 : (int)sl__rng_below(&r, 256) - 128);
                sumc += cb[i];
            }
            assert_int_equal(k->dot_q8s8(qb, cb, d), (int64_t)s->dot_u8s8(qb, cb, d) - 128 * sumc);
            if (k->dot_q8s8_x4) { /* 4 rows at once: each the one-row result */
                int8_t rows[4][600];
                const int8_t *rp[4];
                int32_t got[4];
                for (int w = 0; w < 4; w++) {
                    for (size_t i = 0; i < d; i++) rows[w][i] = (int8_t)((int)sl__rng_below(&r, 256) - 128);
                    rp[w] = rows[w];
                }
                k->dot_q8s8_x4(qb, rp, d, got);
                for (int w = 0; w < 4; w++) assert_int_equal(got[w], k->dot_q8s8(qb, rows[w], d));
            }
        }
        /* 4-bit rows (the prefilter): against a reference that unpacks nibbles by dimension,
         * extremes included (q = -127 / 127, nibbles 0 / 15), 1..nblk blocks */
        {
            enum { NB = 9 };
            int8_t q4[NB * 64];
            uint8_t rows[4][NB * 32];
            const uint8_t *rp[4] = { rows[0], rows[1], rows[2], rows[3] };
            for (size_t i = 0; i < NB * 64; i++)
                q4[i] = (int8_t)(i % 7 == 0 ? -127 : i % 7 == 1 ? 127 : (int)sl__rng_below(&r, 255) - 127);
            for (int w = 0; w < 4; w++)
                for (size_t i = 0; i < NB * 32; i++)
                    rows[w][i] = (uint8_t)(w == 0 ? 0xff : w == 1 ? (i % 2 ? 0xf0 : 0x0f) : sl__rng_below(&r, 256));
            size_t nblk = 1 + t % NB;
            int32_t got[4], ref[4];
            k->dot_q4_x4(q4, rp, nblk, got);
            for (int w = 0; w < 4; w++) {
                ref[w] = 0;
                for (size_t i = 0; i < nblk * 64; i++) {
                    uint8_t byte = rows[w][(i / 64) * 32 + i % 32];
                    ref[w] += (int32_t)q4[i] * (i % 64 < 32 ? byte & 15 : byte >> 4);
                }
                assert_int_equal(got[w], ref[w]);
            }
        }
        /* building 4-bit rows: stats and packing as the scalar kernels (which the reference
         * loop checks), -128 included, tails of every length via the dims above */
        {
            int8_t xv[600];
            uint8_t rk[320], rs[320];
            for (size_t i = 0; i < d; i++)
                xv[i] = (int8_t)(i % 11 == 0 ? -128 : i % 11 == 1 ? 127 : (int)sl__rng_below(&r, 256) - 128);
            int8_t th[15];
            for (int j = 0; j < 15; j++) th[j] = (int8_t)(-112 + 16 * j - (j % 3)); /* ascending */
            int ma, mb;
            uint32_t sa, sb;
            k->q4_stats(xv, d, &ma, &sa);
            s->q4_stats(xv, d, &mb, &sb);
            assert_int_equal(ma, mb);
            assert_int_equal(sa, sb);
            int64_t ref = 0;
            int refmax = 0;
            for (size_t i = 0; i < d; i++) {
                ref += (int64_t)xv[i] * xv[i];
                refmax = abs(xv[i]) > refmax ? abs(xv[i]) : refmax;
            }
            assert_int_equal(sb, ref);
            assert_int_equal(mb, refmax);
            memset(rk, 0xa5, sizeof rk);
            k->q4_pack(xv, d, th, rk);
            s->q4_pack(xv, d, th, rs);
            assert_memory_equal(rk, rs, 32 * ((d + 63) / 64));
            for (size_t i = 0; i < 64 * ((d + 63) / 64); i++) { /* nibble i counts thresholds <= x */
                uint8_t byte = rs[(i / 64) * 32 + i % 32];
                int nib = i % 64 < 32 ? byte & 15 : byte >> 4, want = 0;
                for (int j = 0; i < d && j < 15; j++) want += xv[i] >= th[j];
                assert_int_equal(nib, want);
            }
        }
        /* and the scalar kernel against a double-precision reference */
        double ref = 0;
        for (size_t i = 0; i < d; i++) ref += (double)a[i] * b[i];
        assert_true(fabs(s->dot_f32(a, b, d) - ref) <= tol);
    }
    free(a); free(b); free(h); free(c);
}

static void test_kernels_match_scalar(void **state) {
    (void)state;
    int tested = 0;
    if (sl__dist_avx2()) { check_table(sl__dist_avx2()); tested++; }
    if (sl__dist_avx512()) { check_table(sl__dist_avx512()); tested++; }
    if (sl__dist_avx512_plain()) { check_table(sl__dist_avx512_plain()); tested++; }
    check_table(sl__dist_scalar());
    assert_non_null(sl__dist_best());
    if (!tested) print_message("note: no SIMD kernels on this CPU, scalar only\n");
}

uint32_t sl__crc32c(uint32_t crc, const void *data, size_t n);

static void test_crc32c(void **state) {
    (void)state;
    /* the check value of CRC-32C, and continuation equals one pass (hardware and table paths) */
    assert_int_equal(sl__crc32c(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(sl__crc32c(sl__crc32c(0, "12345", 5), "6789", 4), 0xE3069283u);
    assert_int_equal(sl__crc32c(0, "", 0), 0);
}

static void test_half_float(void **state) {
    (void)state;
    assert_int_equal(sl__f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(sl__f32_to_f16(-2.0f), 0xc000);
    assert_int_equal(sl__f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(sl__f32_to_f16(1e6f), 0x7c00);
    assert_int_equal(sl__f32_to_f16(5.9604645e-8f), 0x0001);
    assert_true(sl__f16_to_f32(0x3555) > 0.333f && sl__f16_to_f32(0x3555) < 0.3334f);
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue;  /* NaN payloads */
        assert_int_equal(sl__f32_to_f16(sl__f16_to_f32((uint16_t)h)), h);
    }
}

/* ---- parameters and errors ------------------------------------------------------------- */

static void test_params_and_errors(void **state) {
    (void)state;
    sl_index *idx = NULL;
    sl_error e;
    sl_index_params p;
    sl_index_params_default(&p);
    assert_int_equal(p.M, SL_INDEX_M_DEFAULT);
    p.M = SL_INDEX_M_MAX + 1;
    assert_int_equal(sl_index_new(&idx, 8, SL_INDEX_L2, SL_INDEX_HNSW, &p, &e), SL_E_INVALID);
    assert_null(idx);
    assert_non_null(strstr(e.message, "M"));
    assert_int_equal(sl_index_new(&idx, 0, SL_INDEX_L2, SL_INDEX_HNSW, NULL, &e), SL_E_INVALID);
    assert_int_equal(sl_index_new(&idx, 4, (sl_index_metric)7, SL_INDEX_HNSW, NULL, &e), SL_E_INVALID);
    assert_int_equal(sl_index_new(&idx, 4, SL_INDEX_COSINE, SL_INDEX_HNSW, NULL, &e), SL_OK);
    float zero[4] = { 0 }, nan4[4] = { 1, NAN, 0, 0 }, v[4] = { 1, 2, 3, 4 };
    assert_int_equal(sl_index_add(idx, 1, zero), SL_E_INVALID);
    assert_int_equal(sl_index_add(idx, 1, nan4), SL_E_INVALID);
    assert_int_equal(sl_index_count(idx), 0);
    assert_int_equal(sl_index_add(idx, 1, v), SL_OK);
    sl_index_result r[2];
    size_t n = 99;
    assert_int_equal(sl_index_search(idx, v, 0, NULL, NULL, r, &n), SL_E_INVALID);
    assert_int_equal(n, 0);
    assert_int_equal(sl_index_search(idx, zero, 1, NULL, NULL, r, &n), SL_E_INVALID);
    assert_int_equal(sl_index_search(idx, v, 2, NULL, NULL, r, &n), SL_OK);
    assert_int_equal(n, 1);
    assert_int_equal(r[0].id, 1);
    assert_true(fabsf(r[0].score - 1.0f) < 1e-5f);
    assert_int_equal(sl_index_remove(idx, 2), SL_E_NOT_FOUND);
    assert_non_null(strstr(sl_index_errmsg(idx), "2"));
    assert_int_equal(sl_index_set_ef_search(idx, 0), SL_E_INVALID);
    assert_int_equal(sl_index_set_filter_exact_below(idx, 2.0), SL_E_INVALID);
    sl_index_free(idx);
    sl_index_free(NULL);
    assert_int_equal(sl_index_load(&idx, "/nonexistent/x.idx", NULL, &e), SL_E_IO);
    assert_int_equal(sl_index_load_mem(&idx, "hello world, not an index at all, really not.", 45, NULL, &e), SL_E_CORRUPT);
    assert_non_null(strstr(e.message, "header"));
}

/* ---- recall ---------------------------------------------------------------------------- */

static void recall_case(sl_index_metric metric, sl_index_storage storage, int threads, double min_recall) {
    size_t n = sanitized() ? 3000 : 20000, nq = sanitized() ? 60 : 200;
    int d = 40;
    float *x = clustered(n, d, 50, 11), *q = queries(nq, d, 50, 11);
    uint64_t *ids = seq_ids(n, 7, 1000);
    sl_index_params p = { 0 };
    p.threads = threads;
    p.storage = storage;
    sl_index *idx;
    assert_int_equal(sl_index_new(&idx, d, metric, SL_INDEX_HNSW, &p, NULL), SL_OK);
    assert_int_equal(sl_index_add_batch(idx, n, ids, x), SL_OK);
    assert_int_equal(sl_index_count(idx), n);
    double rc = recall(idx, q, nq, 10, NULL);
    print_message("recall@10 metric=%d storage=%d threads=%d: %.4f\n", (int)metric, (int)storage, threads, rc);
    assert_true(rc >= min_recall);
    /* scores are exact even with compressed storage */
    sl_index_result res[10];
    size_t nr;
    assert_int_equal(sl_index_search(idx, q, 10, NULL, NULL, res, &nr), SL_OK);
    assert_int_equal(nr, 10);
    float *v = malloc((size_t)d * sizeof *v);
    assert_int_equal(sl_index_get(idx, res[0].id, v), SL_OK);
    double s = 0, qn = 0;
    for (int j = 0; j < d; j++) {
        if (metric == SL_INDEX_L2) s += (double)(q[j] - v[j]) * (q[j] - v[j]);
        else s += (double)q[j] * v[j];
        qn += (double)q[j] * q[j];
    }
    if (metric == SL_INDEX_COSINE) s /= sqrt(qn);
    /* exact, except with codes only: then the code's quantization error (sl_index_get gives the
     * code's vector, so s is what the code stands for up to the query's own rounding) */
    assert_true(fabs(s - res[0].score) <= (storage == SL_INDEX_INT8_ONLY ? 2e-2 : 1e-4) * (1 + fabs(s)));
    free(v);
    sl_index_free(idx);
    free(x); free(q); free(ids);
}

static void test_recall_cosine(void **state) { (void)state; recall_case(SL_INDEX_COSINE, SL_INDEX_F32, 1, 0.95); }
static void test_recall_l2_threads(void **state) { (void)state; recall_case(SL_INDEX_L2, SL_INDEX_F32, 2, 0.95); }
static void test_recall_f16(void **state) { (void)state; recall_case(SL_INDEX_COSINE, SL_INDEX_F16, 2, 0.95); }
static void test_recall_int8(void **state) { (void)state; recall_case(SL_INDEX_IP, SL_INDEX_INT8, 2, 0.93); }
static void test_recall_int8_only(void **state) { (void)state; recall_case(SL_INDEX_COSINE, SL_INDEX_INT8_ONLY, 2, 0.93); }

/* ---- codes only (SL_INDEX_INT8_ONLY) --------------------------------------------------- */

/* Codes only keeps no float32 rows (memory), returns what the codes stand for (get, scores
 * within the quantization error of the exact ones, ranking close to exact), lists its ids, and
 * takes the 4-bit prefilter; flat and HNSW, three metrics. */
static void test_int8_only_storage(void **state) {
    (void)state;
    size_t n = sanitized() ? 1200 : 3000, nq = 20;
    int d = 50;
    float *x = clustered(n, d, 20, 81), *q = queries(nq, d, 20, 81);
    uint64_t *ids = seq_ids(n, 5, 3);
    static const sl_index_metric metrics[] = { SL_INDEX_L2, SL_INDEX_IP, SL_INDEX_COSINE };
    for (int kind = 0; kind < 2; kind++)
        for (int m = 0; m < 3; m++) {
            sl_index_params p = { 0 }, p8 = { 0 };
            p.storage = SL_INDEX_INT8_ONLY;
            p8.storage = SL_INDEX_INT8;
            sl_index *a, *b;
            assert_int_equal(sl_index_new(&a, d, metrics[m], (sl_index_kind)kind, &p, NULL), SL_OK);
            assert_int_equal(sl_index_new(&b, d, metrics[m], (sl_index_kind)kind, &p8, NULL), SL_OK);
            assert_int_equal(sl_index_add_batch(a, n, ids, x), SL_OK);
            assert_int_equal(sl_index_add_batch(b, n, ids, x), SL_OK);
            sl_index_stats sa, sb;
            sl_index_get_stats(a, &sa);
            sl_index_get_stats(b, &sb);
            assert_true(sa.memory_bytes + n * (size_t)d * 4 <= sb.memory_bytes);
            /* get: the code's vector, within half a step of each (normalized) component */
            float v[50];
            for (size_t i = 0; i < n; i += 101) {
                assert_int_equal(sl_index_get(a, ids[i], v), SL_OK);
                double nn = 0, mx = 0;
                for (int j = 0; j < d; j++) nn += (double)x[i * (size_t)d + (size_t)j] * x[i * (size_t)d + (size_t)j];
                double sc = metrics[m] == SL_INDEX_COSINE ? 1.0 / sqrt(nn) : 1.0;
                for (int j = 0; j < d; j++) mx = fmax(mx, fabs(x[i * (size_t)d + (size_t)j] * sc));
                for (int j = 0; j < d; j++)
                    assert_true(fabs(v[j] - x[i * (size_t)d + (size_t)j] * sc) <= mx / 127.0 * 0.5 + 1e-6);
            }
            /* exact scan: scores close to the exact ones, ranking close to exact */
            sl_index_search_params ex = { 0, 1, 0 };
            double overl = 0;
            for (size_t i = 0; i < nq; i++) {
                sl_index_result ra[20], rb[20];
                size_t na, nb;
                const float *qi = q + i * (size_t)d;
                assert_int_equal(sl_index_search(a, qi, 20, NULL, &ex, ra, &na), SL_OK);
                assert_int_equal(sl_index_search(b, qi, 20, NULL, &ex, rb, &nb), SL_OK);
                assert_int_equal(na, 20);
                overl += overlap(ra, na, rb, nb);
                double qn = 0;
                for (int j = 0; j < d; j++) qn += (double)qi[j] * qi[j];
                for (size_t r = 0; r < na; r++) {
                    const float *xv = x + (ra[r].id - 3) / 5 * (size_t)d;
                    double s = 0, xn = 0;
                    for (int j = 0; j < d; j++) {
                        s += metrics[m] == SL_INDEX_L2 ? (double)(qi[j] - xv[j]) * (qi[j] - xv[j]) : (double)qi[j] * xv[j];
                        xn += (double)xv[j] * xv[j];
                    }
                    if (metrics[m] == SL_INDEX_COSINE) s /= sqrt(qn * xn);
                    double scale = metrics[m] == SL_INDEX_COSINE ? 1.0 : metrics[m] == SL_INDEX_L2 ? qn + xn : sqrt(qn * xn);
                    assert_true(fabs(ra[r].score - s) <= 0.02 * scale);
                    if (r) {
                        if (metrics[m] == SL_INDEX_L2) assert_true(ra[r - 1].score <= ra[r].score);
                        else assert_true(ra[r - 1].score >= ra[r].score);
                    }
                }
            }
            print_message("int8 only, kind %d metric %d: top-20 overlap with exact %.3f\n", kind, (int)metrics[m], overl / (double)nq);
            assert_true(overl / (double)nq >= 0.85);
            /* ids: every live id, ascending */
            for (size_t i = 0; i < n; i += 3) assert_int_equal(sl_index_remove(a, ids[i]), SL_OK);
            uint64_t *all = NULL;
            size_t nall = 0;
            assert_int_equal(sl_index_ids(a, &all, &nall), SL_OK);
            assert_int_equal(nall, n - (n + 2) / 3);
            for (size_t i = 0, j = 0; i < n; i++) {
                if (i % 3 == 0) continue;
                assert_int_equal(all[j++], ids[i]);
            }
            free(all);
            size_t dummy = 1;
            assert_int_equal(sl_index_ids(a, NULL, &dummy), SL_E_INVALID);
            assert_int_equal(dummy, 0);
            assert_int_equal(sl_index_set_prefilter(a, 2.0), SL_OK);
            assert_int_equal(sl_index_compact(a), SL_OK);
            assert_int_equal(sl_index_count(a), nall);
            sl_index_free(a);
            sl_index_free(b);
        }
    sl_index *e;
    assert_int_equal(sl_index_new(&e, d, SL_INDEX_IP, SL_INDEX_HNSW, NULL, NULL), SL_OK);
    uint64_t *none = (uint64_t *)1;
    size_t nn = 7;
    assert_int_equal(sl_index_ids(e, &none, &nn), SL_OK);
    assert_null(none);
    assert_int_equal(nn, 0);
    sl_index_free(e);
    free(x); free(q); free(ids);
}

/* HNSW recall@100 against exact search of the same index (pgvector's protocol: the same query
 * through the index and as a sequential scan), without and with filters: id lists and bitmaps
 * of 50%, 20%, 5% and 1% of the items picked at random, and a filter that keeps only clusters
 * far from most queries (the allowed items are not where the graph search starts looking).
 * Float32 and codes-only storage, the engine's graph parameters (M 32) and ef 200 for k 100. */
static void test_hnsw_recall_vs_exact_with_filters(void **state) {
    (void)state;
    size_t n = sanitized() ? 4000 : 20000, nq = sanitized() ? 20 : 60, k = 100;
    int d = 32, nc = 60;
    float *x = clustered(n, d, nc, 91), *q = queries(nq, d, nc, 91);
    uint64_t *ids = seq_ids(n, 1, 0);
    /* cluster of each item: the nearest of the 60 centres is not known here, so use the
     * partition of clustered_draw's own assignment: redraw it with the same seed */
    uint32_t *cl = malloc(n * sizeof *cl);
    assert_non_null(cl);
    {
        sl__rng r;
        sl__rng_seed(&r, 91);
        for (size_t i = 0; i < (size_t)nc * (size_t)d; i++) (void)sl__rng_normal(&r);
        for (size_t i = 0; i < n; i++) {
            cl[i] = (uint32_t)sl__rng_below(&r, (uint64_t)nc);
            for (int j = 0; j < d; j++) (void)sl__rng_normal(&r);
        }
    }
    static const sl_index_storage stors[] = { SL_INDEX_F32, SL_INDEX_INT8_ONLY };
    for (int si = 0; si < 2; si++) {
        sl_index_params p = { 0 };
        p.M = 32;
        p.storage = stors[si];
        sl_index *idx;
        assert_int_equal(sl_index_new(&idx, d, SL_INDEX_COSINE, SL_INDEX_HNSW, &p, NULL), SL_OK);
        assert_int_equal(sl_index_add_batch(idx, n, ids, x), SL_OK);
        static const double sels[] = { 1.0, 0.5, 0.2, 0.05, 0.01, -0.1 };
        for (int fi = 0; fi < 6; fi++) {
            uint64_t *bits = calloc(sl_index_bitmap_words(n), sizeof *bits), *list = malloc(n * sizeof *list);
            assert_non_null(bits);
            assert_non_null(list);
            size_t nl = 0;
            sl__rng r;
            sl__rng_seed(&r, 1000 + (uint64_t)fi);
            for (size_t i = 0; i < n; i++) {
                /* sels < 0: the 10% of the clusters with the highest numbers */
                int keep = sels[fi] < 0 ? cl[i] >= (uint32_t)(nc - nc / 10) : sl__rng_uniform(&r) < sels[fi];
                if (keep) { sl_index_bitmap_set(bits, i); list[nl++] = i; }
            }
            sl_index_filter fl = { 0 }, fb = { 0 };
            fl.allowed_ids = list; fl.n_allowed = nl;
            fb.bits = bits; fb.nbits = n;
            const sl_index_filter *fs[2] = { sels[fi] >= 1.0 ? NULL : &fl, &fb };
            for (int form = 0; form < (sels[fi] >= 1.0 ? 1 : 2); form++) {
                sl_index_result *a = malloc(k * sizeof *a), *b = malloc(k * sizeof *b);
                sl_index_search_params sp = { 200, 0, 0 }, ex = { 0, 1, 0 };
                double sum = 0, worst = 1;
                for (size_t i = 0; i < nq; i++) {
                    size_t na, nb;
                    const float *qi = q + i * (size_t)d;
                    assert_int_equal(sl_index_search(idx, qi, k, fs[form], &sp, a, &na), SL_OK);
                    assert_int_equal(sl_index_search(idx, qi, k, fs[form], &ex, b, &nb), SL_OK);
                    assert_int_equal(nb, nl < k && fs[form] ? nl : k);
                    assert_int_equal(na, nb);
                    for (size_t j = 0; j < na; j++) assert_true(!fs[form] || (bits[a[j].id >> 6] >> (a[j].id & 63)) & 1);
                    double rc = overlap(a, na, b, nb);
                    sum += rc;
                    worst = fmin(worst, rc);
                }
                print_message("hnsw recall@100 storage %d filter %.2f (%zu allowed, form %d): mean %.4f, worst %.2f\n",
                              (int)stors[si], sels[fi], nl, form, sum / (double)nq, worst);
                assert_true(sum / (double)nq >= 0.98);
                free(a);
                free(b);
            }
            free(bits);
            free(list);
        }
        sl_index_free(idx);
    }
    free(cl); free(x); free(q); free(ids);
}

static void test_flat_exact_and_batch(void **state) {
    (void)state;
    size_t n = 2000, nq = 20;
    int d = 13;
    float *x = clustered(n, d, 10, 3), *q = queries(nq, d, 10, 3);
    uint64_t *ids = seq_ids(n, 1, 0);
    sl_index *idx;
    assert_int_equal(sl_index_new(&idx, d, SL_INDEX_L2, SL_INDEX_FLAT, NULL, NULL), SL_OK);
    assert_int_equal(sl_index_add_batch(idx, n, ids, x), SL_OK);
    sl_index_result *rb = malloc(nq * 5 * sizeof *rb), r[5];
    size_t nb[20], nr;
    sl_index_search_params sp = { 0, 0, 3 };
    assert_int_equal(sl_index_search_batch(idx, q, nq, 5, NULL, &sp, rb, nb), SL_OK);
    for (size_t i = 0; i < nq; i++) {
        /* brute force in the test */
        double best = INFINITY;
        uint64_t bid = 0;
        for (size_t s = 0; s < n; s++) {
            double dd = 0;
            for (int j = 0; j < d; j++) dd += (double)(q[i * d + j] - x[s * d + j]) * (q[i * d + j] - x[s * d + j]);
            if (dd < best) { best = dd; bid = s; }
        }
        assert_int_equal(sl_index_search(idx, q + i * d, 5, NULL, NULL, r, &nr), SL_OK);
        assert_int_equal(nr, 5);
        assert_int_equal(nb[i], 5);
        assert_int_equal(r[0].id, bid);
        assert_true(fabs(r[0].score - best) < 1e-3);
        for (size_t j = 0; j < 5; j++) assert_int_equal(rb[i * 5 + j].id, r[j].id);
    }
    free(rb); free(x); free(q); free(ids);
    sl_index_free(idx);
}

/* ---- filters --------------------------------------------------------------------------- */

typedef struct { uint64_t mod, keep; } pred_ctx;
static int pred_mod(uint64_t id, void *ctx) {
    const pred_ctx *c = ctx;
    return (id * 2654435761u >> 7) % c->mod < c->keep;
}

static void test_filtered_recall(void **state) {
    (void)state;
    size_t n = sanitized() ? 4000 : 20000, nq = sanitized() ? 40 : 100;
    int d = 32;
    float *x = clustered(n, d, 40, 21), *q = queries(nq, d, 40, 21);
    uint64_t *ids = seq_ids(n, 1, 0);
    sl_index *idx;
    assert_int_equal(sl_index_new(&idx, d, SL_INDEX_COSINE, SL_INDEX_HNSW, NULL, NULL), SL_OK);
    assert_int_equal(sl_index_add_batch(idx, n, ids, x), SL_OK);
    static const double sels[] = { 0.01, 0.10, 0.50 };
    for (int si = 0; si < 3; si++) {
        pred_ctx pc = { 1000, (uint64_t)(sels[si] * 1000) };
        uint64_t *bits = calloc(sl_index_bitmap_words(n), sizeof *bits), *list = malloc(n * sizeof *list);
        size_t nl = 0;
        for (size_t i = 0; i < n; i++)
            if (pred_mod(i, &pc)) { sl_index_bitmap_set(bits, i); list[nl++] = i; }
        sl_index_filter fl = { 0 }, fb = { 0 }, fp = { 0 };
        fl.allowed_ids = list; fl.n_allowed = nl;
        fb.bits = bits; fb.nbits = n;
        fp.pred = pred_mod; fp.pred_ctx = &pc;
        const sl_index_filter *fs[3] = { &fl, &fb, &fp };
        for (int k = 0; k < 3; k++) {
            double rc = recall(idx, q, nq, 10, fs[k]);
            print_message("filtered recall sel=%.2f form=%d: %.4f\n", sels[si], k, rc);
            assert_true(rc >= 0.95);
            sl_index_result r[10];
            size_t nr;
            assert_int_equal(sl_index_search(idx, q, 10, fs[k], NULL, r, &nr), SL_OK);
            assert_int_equal(nr, 10);
            for (size_t j = 0; j < nr; j++) assert_true(pred_mod(r[j].id, &pc));
        }
        free(bits);
        free(list);
    }
    /* the two strategies separately: always-exact is exact, never-exact (graph) keeps recall */
    {
        pred_ctx pc = { 1000, 100 };
        sl_index_filter fp = { 0 };
        fp.pred = pred_mod;
        fp.pred_ctx = &pc;
        assert_int_equal(sl_index_set_filter_exact_below(idx, 1.0), SL_OK);
        assert_true(recall(idx, q, nq, 10, &fp) == 1.0);
        assert_int_equal(sl_index_set_filter_exact_below(idx, 0.0), SL_OK);
        double rg = recall(idx, q, nq, 10, &fp);
        print_message("filtered recall sel=0.10 graph forced: %.4f\n", rg);
        assert_true(rg >= 0.95);
        assert_int_equal(sl_index_set_filter_exact_below(idx, SL_INDEX_FILTER_EXACT_BELOW_DEFAULT), SL_OK);
    }
    /* empty list: nothing allowed; list with unknown ids and duplicates */
    sl_index_filter f0 = { 0 };
    uint64_t none = 0, dup[4] = { 5, 5, 999999999, 7 };
    f0.allowed_ids = &none;
    sl_index_result r[10];
    size_t nr;
    assert_int_equal(sl_index_search(idx, q, 10, &f0, NULL, r, &nr), SL_OK);
    assert_int_equal(nr, 0);
    f0.allowed_ids = dup;
    f0.n_allowed = 4;
    assert_int_equal(sl_index_search(idx, q, 10, &f0, NULL, r, &nr), SL_OK);
    assert_int_equal(nr, 2);
    assert_true((r[0].id == 5 && r[1].id == 7) || (r[0].id == 7 && r[1].id == 5));
    sl_index_free(idx);
    free(x); free(q); free(ids);
}

/* ---- deletes against a model ----------------------------------------------------------- */

static void test_deletes_model(void **state) {
    (void)state;
    int d = 16;
    size_t universe = sanitized() ? 800 : 3000, steps = sanitized() ? 3000 : 12000;
    float *pool = clustered(universe * 2, d, 20, 5);  /* two vector versions per id */
    uint8_t *live = calloc(universe, 1);
    uint8_t *ver = calloc(universe, 1);
    sl_index *idx;
    sl_index_params p = { 0 };
    p.threads = 1;
    assert_int_equal(sl_index_new(&idx, d, SL_INDEX_L2, SL_INDEX_HNSW, &p, NULL), SL_OK);
    sl__rng r;
    sl__rng_seed(&r, 99);
    size_t nlive = 0;
    sl_index_result res[20];
    size_t nr;
    float *got = malloc((size_t)d * sizeof *got);
    for (size_t st = 0; st < steps; st++) {
        uint64_t id = sl__rng_below(&r, universe);
        uint64_t op = sl__rng_below(&r, 10);
        if (op < 6) {  /* add or replace */
            ver[id] = (uint8_t)sl__rng_below(&r, 2);
            assert_int_equal(sl_index_add(idx, id, pool + (id * 2 + ver[id]) * (size_t)d), SL_OK);
            if (!live[id]) nlive++;
            live[id] = 1;
        } else if (op < 9) {
            sl_status s = sl_index_remove(idx, id);
            assert_int_equal(s, live[id] ? SL_OK : SL_E_NOT_FOUND);
            if (live[id]) nlive--;
            live[id] = 0;
        } else if (sl__rng_below(&r, 20) == 0) {
            assert_int_equal(sl_index_compact(idx), SL_OK);
            sl_index_stats stt;
            sl_index_get_stats(idx, &stt);
            assert_int_equal(stt.deleted, 0);
        }
        assert_int_equal(sl_index_count(idx), nlive);
        if (st % 7 == 0) {
            const float *qv = pool + sl__rng_below(&r, universe * 2) * (size_t)d;
            assert_int_equal(sl_index_search(idx, qv, 20, NULL, NULL, res, &nr), SL_OK);
            assert_int_equal(nr, nlive < 20 ? nlive : 20);
            for (size_t j = 0; j < nr; j++) assert_true(live[res[j].id]);
            uint64_t pid = sl__rng_below(&r, universe);
            assert_int_equal(sl_index_contains(idx, pid), live[pid]);
            if (live[pid]) {
                assert_int_equal(sl_index_get(idx, pid, got), SL_OK);
                assert_memory_equal(got, pool + (pid * 2 + ver[pid]) * (size_t)d, (size_t)d * sizeof *got);
            }
        }
    }
    /* graph stays navigable: recall over the survivors, before and after compaction */
    float *q = queries(50, d, 20, 5);
    double rc = recall(idx, q, 50, 10, NULL);
    print_message("recall after %zu random ops: %.4f\n", steps, rc);
    assert_true(rc >= 0.95);
    assert_int_equal(sl_index_compact(idx), SL_OK);
    double rc2 = recall(idx, q, 50, 10, NULL);
    print_message("recall after compaction: %.4f\n", rc2);
    assert_true(rc2 >= 0.95);
    assert_int_equal(sl_index_count(idx), nlive);
    /* remove everything: searches return nothing, adding works again */
    for (uint64_t id = 0; id < universe; id++)
        if (live[id]) assert_int_equal(sl_index_remove(idx, id), SL_OK);
    assert_int_equal(sl_index_search(idx, q, 5, NULL, NULL, res, &nr), SL_OK);
    assert_int_equal(nr, 0);
    assert_int_equal(sl_index_add(idx, 42, q), SL_OK);
    assert_int_equal(sl_index_search(idx, q, 5, NULL, NULL, res, &nr), SL_OK);
    assert_int_equal(nr, 1);
    assert_int_equal(res[0].id, 42);
    free(q); free(got); free(pool); free(live); free(ver);
    sl_index_free(idx);
}

/* A large deletion: 40% of a clustered index, recall of the remainder stays high. */
static void test_mass_delete_recall(void **state) {
    (void)state;
    size_t n = sanitized() ? 3000 : 12000;
    int d = 24;
    float *x = clustered(n, d, 30, 31), *q = queries(60, d, 30, 31);
    uint64_t *ids = seq_ids(n, 3, 0);
    sl_index *idx;
    assert_int_equal(sl_index_new(&idx, d, SL_INDEX_COSINE, SL_INDEX_HNSW, NULL, NULL), SL_OK);
    assert_int_equal(sl_index_add_batch(idx, n, ids, x), SL_OK);
    size_t removed = 0;
    for (size_t i = 0; i < n; i++)
        if (i % 5 < 2) { assert_int_equal(sl_index_remove(idx, ids[i]), SL_OK); removed++; }
    double rc = recall(idx, q, 60, 10, NULL);
    print_message("recall after removing 40%%: %.4f\n", rc);
    assert_true(rc >= 0.95);
    sl_index_stats before, after;
    sl_index_get_stats(idx, &before);
    assert_int_equal(sl_index_compact(idx), SL_OK);
    sl_index_get_stats(idx, &after);
    assert_true(after.memory_bytes < before.memory_bytes);
    assert_int_equal(after.slots, n - removed);
    assert_int_equal(after.count, n - removed);
    double rc2 = recall(idx, q, 60, 10, NULL);
    assert_true(rc2 >= 0.95);
    free(x); free(q); free(ids);
    sl_index_free(idx);
}

/* ---- files ----------------------------------------------------------------------------- */

static char *tmp_path(const char *name) {
    char *p = malloc(256);
    snprintf(p, 256, "test_index_%ld_%s", (long)getpid(), name);
    return p;
}

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

static void same_results(sl_index *a, sl_index *b, const float *q, size_t nq, size_t k) {
    sl_index_result *ra = malloc(k * sizeof *ra), *rb = malloc(k * sizeof *rb);
    for (size_t i = 0; i < nq; i++) {
        size_t na, nb;
        assert_int_equal(sl_index_search(a, q + i * (size_t)sl_index_dim(a), k, NULL, NULL, ra, &na), SL_OK);
        assert_int_equal(sl_index_search(b, q + i * (size_t)sl_index_dim(b), k, NULL, NULL, rb, &nb), SL_OK);
        assert_int_equal(na, nb);
        for (size_t j = 0; j < na; j++) {
            assert_int_equal(ra[j].id, rb[j].id);
            assert_true(ra[j].score == rb[j].score);
        }
    }
    free(ra); free(rb);
}

/* The flat int8 scan of every slot (distances computed 4 rows at a time in chunks) returns exactly
 * what the one-by-one scan returns: the latter runs when an allowed-id list names the slots, so a
 * list of all ids must give the same ids and scores. Sizes that are not multiples of the chunk or
 * of 4, a dimension that is not a multiple of 32, removed slots, two metrics. */
static void test_flat_int8_chunked_scan_equals_slot_scan(void **state) {
    (void)state;
    size_t n = 4099;
    int d = 37;
    float *x = clustered(n, d, 30, 5), *q = queries(20, d, 30, 5);
    uint64_t *ids = seq_ids(n, 1u << 20, 9);
    static const sl_index_metric metrics[] = { SL_INDEX_L2, SL_INDEX_IP };
    for (int m = 0; m < 2; m++) {
        sl_index_params p = { 0 };
        p.storage = SL_INDEX_INT8;
        sl_index *a;
        assert_int_equal(sl_index_new(&a, d, metrics[m], SL_INDEX_FLAT, &p, NULL), SL_OK);
        assert_int_equal(sl_index_add_batch(a, n, ids, x), SL_OK);
        for (size_t i = 0; i < n; i += 7) assert_int_equal(sl_index_remove(a, ids[i]), SL_OK);
        sl_index_filter f = { 0 };
        f.allowed_ids = ids;
        f.n_allowed = n;
        sl_index_result ra[50], rb[50];
        for (size_t i = 0; i < 20; i++) {
            size_t na, nb;
            assert_int_equal(sl_index_search(a, q + i * (size_t)d, 50, NULL, NULL, ra, &na), SL_OK);
            assert_int_equal(sl_index_search(a, q + i * (size_t)d, 50, &f, NULL, rb, &nb), SL_OK);
            assert_int_equal(na, 50);
            assert_int_equal(na, nb);
            for (size_t j = 0; j < na; j++) {
                assert_int_equal(ra[j].id, rb[j].id);
                assert_true(ra[j].score == rb[j].score);
            }
        }
        sl_index_free(a);
    }
    free(x); free(q); free(ids);
}

/* sl_index_set_rescore_below: on int8 storage, ids below it get their exact score
 * (the default search's), ids from it keep their code score (what codes-only storage of the same
 * vectors gives, which differs from the exact one), and the mixed list is still sorted;
 * SL_INDEX_RESCORE_BELOW_ALL (the default) re-scores every candidate. Three metrics, the whole
 * index as candidates. */
static void test_flat_rescore_below(void **state) {
    (void)state;
    size_t n = 400;
    int d = 50;
    float *x = clustered(n, d, 10, 21), *q = queries(4, d, 10, 21);
    uint64_t *ids = seq_ids(n, 1, 0), below = 200; /* ids 0..399: half each side */
    static const sl_index_metric metrics[] = { SL_INDEX_L2, SL_INDEX_IP, SL_INDEX_COSINE };
    sl_index_result *re = malloc(n * sizeof *re), *rc = malloc(n * sizeof *rc), *rm = malloc(n * sizeof *rm);
    float *ex = malloc(n * sizeof *ex), *co = malloc(n * sizeof *co);
    assert_non_null(re); assert_non_null(rc); assert_non_null(rm); assert_non_null(ex); assert_non_null(co);
    for (int m = 0; m < 3; m++) {
        sl_index_params p8 = { 0 }, po = { 0 };
        p8.storage = SL_INDEX_INT8;
        po.storage = SL_INDEX_INT8_ONLY;
        sl_index *a, *b;
        assert_int_equal(sl_index_new(&a, d, metrics[m], SL_INDEX_FLAT, &p8, NULL), SL_OK);
        assert_int_equal(sl_index_new(&b, d, metrics[m], SL_INDEX_FLAT, &po, NULL), SL_OK);
        assert_int_equal(sl_index_add_batch(a, n, ids, x), SL_OK);
        assert_int_equal(sl_index_add_batch(b, n, ids, x), SL_OK);
        for (size_t i = 0; i < 4; i++) {
            const float *qi = q + i * (size_t)d;
            size_t ne, nc, nm, differ = 0;
            sl_index_search_params sp = { (int)n, 0, 0 };
            assert_int_equal(sl_index_set_rescore_below(a, SL_INDEX_RESCORE_BELOW_ALL), SL_OK);
            assert_int_equal(sl_index_search(a, qi, n, NULL, &sp, re, &ne), SL_OK);
            assert_int_equal(sl_index_search(b, qi, n, NULL, &sp, rc, &nc), SL_OK);
            assert_int_equal(sl_index_set_rescore_below(a, below), SL_OK);
            assert_int_equal(sl_index_search(a, qi, n, NULL, &sp, rm, &nm), SL_OK);
            assert_int_equal(ne, n); assert_int_equal(nc, n); assert_int_equal(nm, n);
            for (size_t j = 0; j < n; j++) {
                ex[re[j].id] = re[j].score;
                co[rc[j].id] = rc[j].score;
            }
            for (size_t j = 0; j < n; j++) {
                uint64_t id = rm[j].id;
                assert_true(rm[j].score == (id < below ? ex[id] : co[id]));
                differ += id >= below && co[id] != ex[id];
                if (j) {
                    if (metrics[m] == SL_INDEX_L2) assert_true(rm[j - 1].score <= rm[j].score);
                    else assert_true(rm[j - 1].score >= rm[j].score);
                }
            }
            assert_true(differ > n / 4); /* code scores are not the exact ones */
        }
        sl_index_free(a);
        sl_index_free(b);
    }
    free(re); free(rc); free(rm); free(ex); free(co);
    free(x); free(q); free(ids);
}

/* The 4-bit prefilter (sl_index_set_prefilter) returns what the int8 scan returns - ids and
 * exact scores - on clustered data, where the 4-bit pass's 2r best hold the int8 scan's r best:
 * enabled with half the vectors stored (they are encoded then) and the rest added after, with
 * removed slots, a predicate filter, after compaction, three metrics, vector norms that differ
 * 4-fold, a dimension that is not a multiple of 64 and sizes that are not multiples of the chunk. Broken 4-bit rows or distances
 * lose cluster members at this depth and fail it. Also its argument checks and its memory. */
static int even_id(uint64_t id, void *ctx) { (void)ctx; return (id & 1) == 0; }
static void test_flat_int8_prefilter_equals_int8_scan(void **state) {
    (void)state;
    size_t n = 5003, h = 2001;
    int d = 100;
    float *x = clustered(n, d, 40, 11), *q = queries(20, d, 40, 11);
    for (size_t i = 0; i < n; i++) /* norms from 0.5x to 2x: per-vector scales that differ */
        for (int j = 0; j < d; j++) x[i * (size_t)d + (size_t)j] *= 0.5f + 1.5f * (float)((i * 37) % 101) / 100.0f;
    uint64_t *ids = seq_ids(n, 3, 1);
    static const sl_index_metric metrics[] = { SL_INDEX_L2, SL_INDEX_IP, SL_INDEX_COSINE };
    for (int m = 0; m < 3; m++) {
        sl_index_params p = { 0 };
        p.storage = SL_INDEX_INT8;
        sl_index *a, *b;
        assert_int_equal(sl_index_new(&a, d, metrics[m], SL_INDEX_FLAT, &p, NULL), SL_OK);
        assert_int_equal(sl_index_new(&b, d, metrics[m], SL_INDEX_FLAT, &p, NULL), SL_OK);
        assert_int_equal(sl_index_add_batch(a, n, ids, x), SL_OK);
        assert_int_equal(sl_index_add_batch(b, h, ids, x), SL_OK);
        sl_index_stats s0, s1;
        sl_index_get_stats(b, &s0);
        assert_int_equal(sl_index_set_prefilter(b, 2.0), SL_OK);
        sl_index_get_stats(b, &s1);
        assert_true(s1.memory_bytes >= s0.memory_bytes + h * (size_t)(d / 2));
        assert_int_equal(sl_index_add_batch(b, n - h, ids + h, x + h * (size_t)d), SL_OK);
        for (size_t i = 0; i < n; i += 7) {
            assert_int_equal(sl_index_remove(a, ids[i]), SL_OK);
            assert_int_equal(sl_index_remove(b, ids[i]), SL_OK);
        }
        sl_index_filter f = { 0 };
        f.pred = even_id;
        for (int round = 0; round < 2; round++) {
            for (size_t i = 0; i < 20; i++) {
                sl_index_result ra[40], rb[40];
                size_t na, nb;
                const sl_index_filter *fi = i % 2 ? &f : NULL;
                assert_int_equal(sl_index_search(a, q + i * (size_t)d, 40, fi, NULL, ra, &na), SL_OK);
                assert_int_equal(sl_index_search(b, q + i * (size_t)d, 40, fi, NULL, rb, &nb), SL_OK);
                assert_int_equal(na, 40);
                assert_int_equal(na, nb);
                for (size_t j = 0; j < na; j++) {
                    assert_int_equal(ra[j].id, rb[j].id);
                    assert_true(ra[j].score == rb[j].score);
                    if (fi) assert_int_equal(rb[j].id & 1, 0);
                }
            }
            assert_int_equal(sl_index_compact(a), SL_OK);
            assert_int_equal(sl_index_compact(b), SL_OK);
        }
        assert_int_equal(sl_index_set_prefilter(b, -1.0), SL_E_INVALID);
        assert_int_equal(sl_index_set_prefilter(b, 0.5), SL_E_INVALID);
        assert_int_equal(sl_index_set_prefilter(b, SL_INDEX_PREFILTER_MAX + 1), SL_E_INVALID);
        assert_non_null(strstr(sl_index_errmsg(b), "prefilter"));
        assert_int_equal(sl_index_set_prefilter(b, 0.0), SL_OK);
        sl_index_get_stats(b, &s1);
        sl_index_get_stats(a, &s0);
        assert_int_equal(s1.memory_bytes, s0.memory_bytes);
        sl_index_free(a);
        sl_index_free(b);
    }
    sl_index *c;
    assert_int_equal(sl_index_new(&c, d, SL_INDEX_L2, SL_INDEX_FLAT, NULL, NULL), SL_OK);
    assert_int_equal(sl_index_set_prefilter(c, 2.0), SL_E_INVALID);
    assert_non_null(strstr(sl_index_errmsg(c), "int8"));
    sl_index_free(c);
    free(x); free(q); free(ids);
}

static void test_save_load_roundtrip(void **state) {
    (void)state;
    size_t n = sanitized() ? 1500 : 5000;
    int d = 20;
    float *x = clustered(n, d, 20, 41), *q = queries(30, d, 20, 41);
    uint64_t *ids = seq_ids(n, 1u << 20, 77);
    char *path = tmp_path("rt.idx");
    static const sl_index_kind kinds[] = { SL_INDEX_HNSW, SL_INDEX_FLAT };
    static const sl_index_storage stors[] = { SL_INDEX_F32, SL_INDEX_INT8, SL_INDEX_F16, SL_INDEX_INT8_ONLY };
    size_t flen_int8 = 0;
    for (int ki = 0; ki < 2; ki++)
        for (int si = 0; si < 4; si++) {
            sl_index_params p = { 0 };
            p.storage = stors[si];
            p.threads = 1;
            sl_index *a, *b;
            assert_int_equal(sl_index_new(&a, d, SL_INDEX_COSINE, kinds[ki], &p, NULL), SL_OK);
            assert_int_equal(sl_index_add_batch(a, n, ids, x), SL_OK);
            for (size_t i = 0; i < n; i += 9) assert_int_equal(sl_index_remove(a, ids[i]), SL_OK);
            assert_int_equal(sl_index_save(a, path), SL_OK);
            size_t flen;
            unsigned char *fimg = read_file(path, &flen);
            free(fimg);
            /* codes only: the int8 file without its float32 section (same levels, so the same
             * section sizes otherwise; up to the alignment padding) */
            if (stors[si] == SL_INDEX_INT8) flen_int8 = flen;
            if (stors[si] == SL_INDEX_INT8_ONLY) assert_true(flen + n * (size_t)d * 4 <= flen_int8 + 64 &&
                                                             flen + n * (size_t)d * 4 + 64 >= flen_int8);
            sl_error e;
            assert_int_equal(sl_index_load(&b, path, NULL, &e), SL_OK);
            sl_index_stats sa, sb;
            sl_index_get_stats(a, &sa);
            sl_index_get_stats(b, &sb);
            assert_int_equal(sa.count, sb.count);
            assert_int_equal(sa.deleted, sb.deleted);
            assert_int_equal(sa.max_level, sb.max_level);
            assert_true(sb.mapped_bytes > 0);
            same_results(a, b, q, 30, 10);
            /* the loaded index can be modified the same way as the original */
            assert_int_equal(sl_index_add(a, 5, q), SL_OK);
            assert_int_equal(sl_index_add(b, 5, q), SL_OK);
            assert_int_equal(sl_index_remove(a, ids[1]), SL_OK);
            assert_int_equal(sl_index_remove(b, ids[1]), SL_OK);
            same_results(a, b, q, 30, 10);
            assert_int_equal(sl_index_compact(b), SL_OK);
            sl_index_result r[3];
            size_t nr;
            assert_int_equal(sl_index_search(b, q, 3, NULL, NULL, r, &nr), SL_OK);
            assert_int_equal(r[0].id, 5);
            sl_index_free(a);
            sl_index_free(b);
        }
    /* save replaces atomically and leaves no temporary file behind */
    sl_index *c;
    assert_int_equal(sl_index_new(&c, d, SL_INDEX_L2, SL_INDEX_HNSW, NULL, NULL), SL_OK);
    assert_int_equal(sl_index_add(c, 1, x), SL_OK);
    assert_int_equal(sl_index_save(c, path), SL_OK);
    sl_index *c2;
    assert_int_equal(sl_index_load(&c2, path, NULL, NULL), SL_OK);
    assert_int_equal(sl_index_count(c2), 1);
    sl_index_free(c2);
    assert_int_equal(sl_index_save(c, "/nonexistent-dir/x.idx"), SL_E_IO);
    DIR *dir = opendir(".");
    struct dirent *de;
    while ((de = readdir(dir))) assert_null(strstr(de->d_name, ".tmp."));
    closedir(dir);
    sl_index_free(c);
    /* same seed, one thread -> byte-identical files */
    sl_index_params p1 = { 0 };
    p1.threads = 1;
    char *p2 = tmp_path("det.idx");
    for (int t = 0; t < 2; t++) {
        sl_index *g;
        assert_int_equal(sl_index_new(&g, d, SL_INDEX_L2, SL_INDEX_HNSW, &p1, NULL), SL_OK);
        assert_int_equal(sl_index_add_batch(g, n / 2, ids, x), SL_OK);
        assert_int_equal(sl_index_save(g, t ? p2 : path), SL_OK);
        sl_index_free(g);
    }
    size_t l1, l2;
    unsigned char *b1 = read_file(path, &l1), *b2 = read_file(p2, &l2);
    assert_int_equal(l1, l2);
    assert_memory_equal(b1, b2, l1);
    free(b1); free(b2);
    unlink(path);
    unlink(p2);
    free(path); free(p2);
    free(x); free(q); free(ids);
}

static void test_corrupt_files(void **state) {
    (void)state;
    int d = 6;
    size_t n = 40;
    float *x = clustered(n, d, 4, 51);
    uint64_t *ids = seq_ids(n, 3, 1);
    char *path = tmp_path("flip.idx");
    for (int kind = 0; kind < 2; kind++) {
        sl_index_params p = { 0 };
        p.M = 4;
        p.storage = kind ? SL_INDEX_INT8 : SL_INDEX_F32;
        sl_index *a;
        assert_int_equal(sl_index_new(&a, d, SL_INDEX_L2, kind ? SL_INDEX_FLAT : SL_INDEX_HNSW, &p, NULL), SL_OK);
        assert_int_equal(sl_index_add_batch(a, n, ids, x), SL_OK);
        assert_int_equal(sl_index_remove(a, ids[3]), SL_OK);
        assert_int_equal(sl_index_save(a, path), SL_OK);
        size_t len;
        unsigned char *img = read_file(path, &len);
        size_t rejected = 0;
        for (size_t i = 0; i < len; i++) {
            img[i] ^= 0xff;
            sl_index *b = NULL;
            sl_error e;
            sl_status st = sl_index_load_mem(&b, img, len, NULL, &e);
            if (st == SL_OK) {
                same_results(a, b, x, 5, 5);  /* harmless: padding */
                sl_index_free(b);
            } else {
                assert_true(st == SL_E_CORRUPT || st == SL_E_VERSION);
                assert_true(strstr(e.message, "header") || strstr(e.message, "section"));
                rejected++;
            }
            img[i] ^= 0xff;
        }
        assert_true(rejected > len * 3 / 4);
        for (size_t cut = 0; cut < len; cut += (cut < 300 ? 1 : 37)) {
            sl_index *b = NULL;
            sl_error e;
            assert_int_equal(sl_index_load_mem(&b, img, cut, NULL, &e), SL_E_CORRUPT);
            assert_null(b);
        }
        /* a flip in the middle of the link section names that section */
        sl_index *b = NULL;
        sl_error e;
        size_t off;
        memcpy(&off, img + 128 + 3 * 32 + 8, 8);
        if (!kind) {
            img[off + 4] ^= 1;
            assert_int_equal(sl_index_load_mem(&b, img, len, NULL, &e), SL_E_CORRUPT);
            assert_non_null(strstr(e.message, "LNK0"));
        }
        free(img);
        sl_index_free(a);
    }
    unlink(path);
    free(path); free(x); free(ids);
}

/* Recomputes every checksum of an index image in place (see docs/formats/index.md), so that a
 * damaged byte has to be caught by the structural checks instead of a CRC. */
static void refresh_crcs(unsigned char *img, size_t len) {
    for (int i = 0; i < 7; i++) {
        unsigned char *e = img + 128 + i * 32;
        uint64_t off, size;
        memcpy(&off, e + 8, 8);
        memcpy(&size, e + 16, 8);
        if (off > len || size > len - off) continue;
        uint32_t c = sl__crc32c(0, img + off, (size_t)size);
        memcpy(e + 24, &c, 4);
    }
    uint32_t t = sl__crc32c(0, img + 128, 7 * 32), h;
    memcpy(img + 96, &t, 4);
    h = sl__crc32c(0, img, 124);
    memcpy(img + 124, &h, 4);
}

static void test_corrupt_files_valid_checksums(void **state) {
    (void)state;
    int d = 5;
    size_t n = 30;
    float *x = clustered(n, d, 3, 61);
    uint64_t *ids = seq_ids(n, 5, 2);
    sl_index_params p = { 0 };
    p.M = 4;
    p.storage = SL_INDEX_INT8;
    sl_index *a;
    assert_int_equal(sl_index_new(&a, d, SL_INDEX_COSINE, SL_INDEX_HNSW, &p, NULL), SL_OK);
    assert_int_equal(sl_index_add_batch(a, n, ids, x), SL_OK);
    assert_int_equal(sl_index_remove(a, ids[7]), SL_OK);
    char *path = tmp_path("crc.idx");
    assert_int_equal(sl_index_save(a, path), SL_OK);
    size_t len;
    unsigned char *img = read_file(path, &len);
    /* a newer format version with valid checksums is SL_E_VERSION, not a crash or CORRUPT */
    sl_index *b = NULL;
    sl_error e;
    img[8] = 2;
    refresh_crcs(img, len);
    assert_int_equal(sl_index_load_mem(&b, img, len, NULL, &e), SL_E_VERSION);
    img[8] = 1;
    refresh_crcs(img, len);
    assert_int_equal(sl_index_load_mem(&b, img, len, NULL, &e), SL_OK);
    sl_index_free(b);
    /* every byte set to two hostile values, checksums fixed up: rejected or usable, never a crash */
    size_t accepted = 0, rejected = 0;
    static const unsigned char vals[2] = { 0xff, 0x80 };
    for (size_t i = 0; i < len; i++) {
        for (int v = 0; v < 2; v++) {
            unsigned char old = img[i];
            if (old == vals[v]) continue;
            img[i] = vals[v];
            refresh_crcs(img, len);
            b = NULL;
            sl_status st = sl_index_load_mem(&b, img, len, NULL, &e);
            if (st == SL_OK) {
                sl_index_result r[5];
                size_t nr;
                assert_int_equal(sl_index_search(b, x, 5, NULL, NULL, r, &nr), SL_OK);
                assert_true(nr <= 5);
                (void)sl_index_add(b, 999, x + d);
                (void)sl_index_remove(b, ids[0]);
                assert_int_equal(sl_index_compact(b), SL_OK);
                assert_int_equal(sl_index_search(b, x, 5, NULL, NULL, r, &nr), SL_OK);
                sl_index_free(b);
                accepted++;
            } else {
                assert_true(st == SL_E_CORRUPT || st == SL_E_VERSION);
                assert_null(b);
                rejected++;
            }
            img[i] = old;
        }
    }
    refresh_crcs(img, len);
    print_message("valid-checksum corruptions: %zu rejected, %zu harmless\n", rejected, accepted);
    assert_true(rejected > 0 && accepted > 0);
    unlink(path);
    free(path); free(img); free(x); free(ids);
    sl_index_free(a);
}

/* ---- concurrency ----------------------------------------------------------------------- */

#define CC_D 12
static void cc_vec(uint64_t id, float *v) {
    sl__rng r;
    sl__rng_seed(&r, id * 31 + 7);
    for (int j = 0; j < CC_D; j++) v[j] = (float)sl__rng_normal(&r) + (float)(id % 5);
}

typedef struct {
    sl_index *idx;
    _Atomic int stop;
    _Atomic uint64_t removed_upto;   /* ids 0..removed_upto-1 (the doomed range) are gone */
    _Atomic long searches, bad;
    uint64_t doomed_base;
} cc_state;

static void *cc_reader(void *arg) {
    cc_state *s = arg;
    float q[CC_D], v[CC_D];
    sl_index_result r[10];
    uint64_t it = 0;
    while (!atomic_load(&s->stop)) {
        uint64_t gone = atomic_load(&s->removed_upto);
        cc_vec(1000000 + it++, q);
        size_t nr;
        if (sl_index_search(s->idx, q, 10, NULL, NULL, r, &nr) != SL_OK) { atomic_fetch_add(&s->bad, 1); continue; }
        for (size_t j = 0; j < nr; j++) {
            if (r[j].id >= s->doomed_base && r[j].id < s->doomed_base + gone) atomic_fetch_add(&s->bad, 1);
            /* the score matches the full vector of that id: never a half-written vector */
            cc_vec(r[j].id, v);
            double dd = 0;
            for (int k = 0; k < CC_D; k++) dd += (double)(q[k] - v[k]) * (q[k] - v[k]);
            if (fabs(dd - r[j].score) > 1e-3 * (1 + dd)) atomic_fetch_add(&s->bad, 1);
            if (j && r[j].score < r[j - 1].score) atomic_fetch_add(&s->bad, 1);
        }
        atomic_fetch_add(&s->searches, 1);
    }
    return NULL;
}

static void test_concurrent_readers_writer(void **state) {
    (void)state;
    cc_state s;
    memset(&s, 0, sizeof s);
    size_t base_n = sanitized() ? 1000 : 4000, rounds = sanitized() ? 30 : 100;
    s.doomed_base = 0;
    sl_index_params p = { 0 };
    p.threads = 2;
    assert_int_equal(sl_index_new(&s.idx, CC_D, SL_INDEX_L2, SL_INDEX_HNSW, &p, NULL), SL_OK);
    float *buf = malloc(base_n * CC_D * sizeof *buf);
    uint64_t *ids = malloc(base_n * sizeof *ids);
    for (size_t i = 0; i < base_n; i++) { ids[i] = i; cc_vec(i, buf + i * CC_D); }
    assert_int_equal(sl_index_add_batch(s.idx, base_n, ids, buf), SL_OK);
    pthread_t th[3];
    for (int t = 0; t < 3; t++) assert_int_equal(pthread_create(&th[t], NULL, cc_reader, &s), 0);
    uint64_t next = 100000;
    for (size_t r = 0; r < rounds; r++) {
        size_t m = 20;
        for (size_t i = 0; i < m; i++) { ids[i] = next + i; cc_vec(next + i, buf + i * CC_D); }
        next += m;
        assert_int_equal(sl_index_add_batch(s.idx, m, ids, buf), SL_OK);
        for (int k = 0; k < 5; k++) {
            uint64_t id = atomic_load(&s.removed_upto);
            if (id < base_n) {
                assert_int_equal(sl_index_remove(s.idx, s.doomed_base + id), SL_OK);
                atomic_store(&s.removed_upto, id + 1);
            }
        }
        if (r % 25 == 24) assert_int_equal(sl_index_compact(s.idx), SL_OK);
        if (r % 10 == 5) {
            /* replace an existing id with its own vector: readers must still see a full vector */
            float v[CC_D];
            cc_vec(next - 3, v);
            assert_int_equal(sl_index_add(s.idx, next - 3, v), SL_OK);
        }
    }
    atomic_store(&s.stop, 1);
    for (int t = 0; t < 3; t++) pthread_join(th[t], NULL);
    print_message("concurrent: %ld searches\n", (long)atomic_load(&s.searches));
    assert_int_equal(atomic_load(&s.bad), 0);
    assert_true(atomic_load(&s.searches) > 0);
    assert_int_equal(sl_index_count(s.idx), base_n + rounds * 20 - atomic_load(&s.removed_upto));
    sl_index_free(s.idx);
    free(buf); free(ids);
}


/* ---- the inlined float32 layer search, slot reordering, pair sort ---------------------- */

/* Builds an HNSW index (1 thread) and runs nq searches; with portable != 0 the index uses the
 * portable layer search (kernels through the table) for its build and its searches. */
static void layer_run(int d, sl_index_metric metric, int portable, const float *x, size_t n,
                      const float *q, size_t nq, sl_index_result *out, int *inlined) {
    sl_index_params p = { 0 };
    p.threads = 1;
    p.ef_construction = 64;
    sl_index *idx;
    assert_int_equal(sl_index_new(&idx, d, metric, SL_INDEX_HNSW, &p, NULL), SL_OK);
    *inlined = idx->layer_f32 != NULL;
    if (portable) idx->layer_f32 = NULL;
    uint64_t *ids = seq_ids(n, 3, 5);
    assert_int_equal(sl_index_add_batch(idx, n, ids, x), SL_OK);
    sl_index_search_params sp = { 48, 0, 1 };
    for (size_t i = 0; i < nq; i++) {
        size_t nr;
        assert_int_equal(sl_index_search(idx, q + i * (size_t)d, 10, NULL, &sp, out + i * 10, &nr), SL_OK);
        assert_int_equal(nr, 10);
    }
    sl_index_free(idx);
    free(ids);
}

/* The AVX-512 layer search (dimension-specialised instances for 128 and 512, runtime d
 * otherwise) must build the same graph and return the same ids and bit-identical scores as the
 * portable one, for every metric. */
static void test_inlined_layer_matches_portable(void **state) {
    (void)state;
    static const int dims[] = { 128, 512, 37 };
    static const sl_index_metric metrics[] = { SL_INDEX_COSINE, SL_INDEX_L2, SL_INDEX_IP };
    size_t nq = 20;
    for (size_t a = 0; a < 3; a++)
        for (size_t b = 0; b < 3; b++) {
            int d = dims[a];
            size_t n = sanitized() ? 300 : (d == 512 ? 1200 : 2500);
            float *x = clustered(n, d, 20, 31 + a), *q = queries(nq, d, 20, 31 + a);
            sl_index_result *r1 = malloc(nq * 10 * sizeof *r1), *r2 = malloc(nq * 10 * sizeof *r2);
            assert_non_null(r1);
            assert_non_null(r2);
            int inl1, inl2;
            layer_run(d, metrics[b], 0, x, n, q, nq, r1, &inl1);
            layer_run(d, metrics[b], 1, x, n, q, nq, r2, &inl2);
            if (!inl1) print_message("no AVX-512 layer search on this CPU: both runs portable (d=%d)\n", d);
            for (size_t i = 0; i < nq * 10; i++) {
                assert_int_equal(r1[i].id, r2[i].id);
                assert_memory_equal(&r1[i].score, &r2[i].score, sizeof(float));
            }
            free(r1); free(r2); free(x); free(q);
        }
}

/* Compaction renumbers the slots (breadth-first graph order): the ids, their vectors and every
 * search result (ids and scores) stay the same, with and without removed items, and the index
 * keeps working for adds afterwards. */
static void test_compact_reorder_keeps_results(void **state) {
    (void)state;
    size_t n = sanitized() ? 1500 : 5000, nq = 40;
    int d = 24;
    float *x = clustered(n, d, 30, 41), *q = queries(nq, d, 30, 41);
    uint64_t *ids = seq_ids(n, 11, 7);
    sl_index_params p = { 0 };
    p.threads = 1;
    sl_index *idx;
    assert_int_equal(sl_index_new(&idx, d, SL_INDEX_COSINE, SL_INDEX_HNSW, &p, NULL), SL_OK);
    assert_int_equal(sl_index_add_batch(idx, n, ids, x), SL_OK);
    for (int round = 0; round < 2; round++) {
        if (round == 1)
            for (size_t i = 0; i < n; i += 9) assert_int_equal(sl_index_remove(idx, ids[i]), SL_OK);
        sl_index_result before[40 * 10], after[40 * 10];
        size_t nb[40], na[40];
        sl_index_search_params sp = { 64, 0, 1 };
        for (size_t i = 0; i < nq; i++)
            assert_int_equal(sl_index_search(idx, q + i * (size_t)d, 10, NULL, &sp, before + i * 10, &nb[i]), SL_OK);
        uint32_t slot_before = sl__idmap_get(idx, ids[n / 2 + 1]);
        assert_int_equal(sl_index_compact(idx), SL_OK);
        if (round == 0) /* no removals: only the reordering can move a slot */
            assert_true(sl__idmap_get(idx, ids[n / 2 + 1]) != slot_before);
        for (size_t i = 0; i < nq; i++) {
            assert_int_equal(sl_index_search(idx, q + i * (size_t)d, 10, NULL, &sp, after + i * 10, &na[i]), SL_OK);
            assert_int_equal(na[i], nb[i]);
            for (size_t j = 0; j < na[i]; j++) {
                assert_int_equal(after[i * 10 + j].id, before[i * 10 + j].id);
                assert_memory_equal(&after[i * 10 + j].score, &before[i * 10 + j].score, sizeof(float));
                if (round == 1) assert_true((after[i * 10 + j].id - 7) / 11 % 9 != 0);  /* removed */
            }
        }
        float v[24], w[24];
        for (size_t i = 1; i < n; i += 97) {
            if (round == 1 && i % 9 == 0) { assert_int_equal(sl_index_get(idx, ids[i], v), SL_E_NOT_FOUND); continue; }
            assert_int_equal(sl_index_get(idx, ids[i], v), SL_OK);
            double nn = 0;
            for (int j = 0; j < d; j++) nn += (double)x[i * (size_t)d + (size_t)j] * x[i * (size_t)d + (size_t)j];
            for (int j = 0; j < d; j++) w[j] = x[i * (size_t)d + (size_t)j] / (float)sqrt(nn);
            for (int j = 0; j < d; j++) assert_true(fabsf(v[j] - w[j]) < 1e-5f);
        }
    }
    /* still a working index: add one more and find it */
    assert_int_equal(sl_index_add(idx, 99999, q), SL_OK);
    sl_index_result r[1];
    size_t nr;
    assert_int_equal(sl_index_search(idx, q, 1, NULL, NULL, r, &nr), SL_OK);
    assert_int_equal(r[0].id, 99999);
    sl_index_free(idx);
    free(x); free(q); free(ids);
}

/* Slots of layer 0 reachable from the entry point (breadth-first over link0). */
static size_t reachable_from_entry(sl_index *idx) {
    size_t n = idx->n, head = 0, tail = 0;
    uint64_t ep = atomic_load(&idx->ep);
    if (ep == SL__EP_EMPTY) return 0;
    uint8_t *seen = calloc(n, 1);
    uint32_t *queue = malloc(n * sizeof *queue);
    assert_non_null(seen);
    assert_non_null(queue);
    queue[tail++] = (uint32_t)ep;
    seen[(uint32_t)ep] = 1;
    while (head < tail) {
        const uint32_t *l = sl__links(idx, queue[head++], 0);
        for (uint32_t j = 0; j < l[0]; j++)
            if (!seen[l[1 + j]]) { seen[l[1 + j]] = 1; queue[tail++] = l[1 + j]; }
    }
    free(seen);
    free(queue);
    return tail;
}

/* A multi-threaded build over near-duplicates added together (a product's views, a catalog's
 * replicas): concurrent inserts pick each other as neighbours while their own lists are still
 * being written. All but a rare node (below) must stay reachable from the entry point and
 * nearly all find themselves; a build that searched from nodes whose lists were not written yet and overwrote
 * the links other threads had added left ~3% of such nodes unreachable (recall@100 capped near
 * 0.97 whatever ef). */
static void test_parallel_build_near_duplicates(void **state) {
    (void)state;
    size_t groups = sanitized() ? 80 : 200, per = 18, n = groups * per;
    int d = 24;
    float *c = clustered(groups, d, (int)groups, 71), *x = malloc(n * (size_t)d * sizeof *x);
    assert_non_null(x);
    sl__rng r;
    sl__rng_seed(&r, 72);
    for (size_t i = 0; i < n; i++) /* 18 views of a group, in a row: nearly the same vector */
        for (int j = 0; j < d; j++)
            x[i * (size_t)d + (size_t)j] = c[(i / per) * (size_t)d + (size_t)j] + 0.05f * (float)sl__rng_normal(&r);
    uint64_t *ids = seq_ids(n, 1, 1);
    for (int threads = 2; threads <= 4; threads += 2) {
        sl_index_params p = { 0 };
        p.threads = threads;
        sl_index *idx;
        assert_int_equal(sl_index_new(&idx, d, SL_INDEX_COSINE, SL_INDEX_HNSW, &p, NULL), SL_OK);
        assert_int_equal(sl_index_add_batch(idx, n, ids, x), SL_OK);
        size_t reach = reachable_from_entry(idx);
        print_message("parallel build, %d threads: %zu of %zu nodes reachable\n", threads, reach, n);
        /* at most one in a thousand unreachable: the broken build left ~3%. Not none: a node
         * whose every in-link a later insert's heuristic pruning drops (a near-duplicate of a
         * node already in that list) stays unreachable - HNSW does not guarantee reachability,
         * and this build has no repair pass yet; seen once here, 3599 of 3600 with 2 threads
         * while other jobs held the cores, none in 32 runs since */
        assert_true((n - reach) * 1000 <= n);
        /* two near-duplicates inserted at the same moment cannot see each other (neither is
         * reachable yet), as in any parallel HNSW build, so a rare one is found only through a
         * detour: allow 0.5% of self-searches to miss (the broken build missed 2-3%) */
        sl_index_search_params sp = { 64, 0, 0 };
        size_t missed = 0;
        for (size_t i = 0; i < n; i++) {
            sl_index_result res[1];
            size_t got;
            assert_int_equal(sl_index_search(idx, x + i * (size_t)d, 1, NULL, &sp, res, &got), SL_OK);
            assert_int_equal(got, 1);
            missed += !(res[0].id == ids[i] || res[0].score >= 1.0f - 1e-6f);
        }
        print_message("parallel build, %d threads: %zu of %zu self-searches missed\n", threads, missed, n);
        assert_true(missed * 200 <= n);
        sl_index_free(idx);
    }
    free(c); free(x); free(ids);
}

/* sl__pair_sort (insertion sort up to 64, qsort above) orders exactly as qsort(sl__pair_cmp):
 * ties broken by slot, NaN last. */
static void test_pair_sort(void **state) {
    (void)state;
    sl__rng r;
    sl__rng_seed(&r, 5);
    sl__pair a[200], b[200];
    for (size_t n = 0; n <= 200; n += (n < 70 ? 1 : 13)) {
        for (size_t i = 0; i < n; i++) {
            uint64_t u = sl__rng_below(&r, 10);
            a[i].d = u == 9 ? NAN : (float)sl__rng_below(&r, 8);
            a[i].s = (uint32_t)sl__rng_below(&r, 1000);
        }
        memcpy(b, a, n * sizeof *a);
        sl__pair_sort(a, n);
        if (n) qsort(b, n, sizeof *b, sl__pair_cmp);
        assert_memory_equal(a, b, n * sizeof *a);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kernels_match_scalar),
        cmocka_unit_test(test_half_float),
        cmocka_unit_test(test_crc32c),
        cmocka_unit_test(test_params_and_errors),
        cmocka_unit_test(test_flat_exact_and_batch),
        cmocka_unit_test(test_recall_cosine),
        cmocka_unit_test(test_recall_l2_threads),
        cmocka_unit_test(test_recall_f16),
        cmocka_unit_test(test_recall_int8),
        cmocka_unit_test(test_recall_int8_only),
        cmocka_unit_test(test_int8_only_storage),
        cmocka_unit_test(test_hnsw_recall_vs_exact_with_filters),
        cmocka_unit_test(test_filtered_recall),
        cmocka_unit_test(test_deletes_model),
        cmocka_unit_test(test_mass_delete_recall),
        cmocka_unit_test(test_flat_int8_chunked_scan_equals_slot_scan),
        cmocka_unit_test(test_flat_int8_prefilter_equals_int8_scan),
        cmocka_unit_test(test_flat_rescore_below),
        cmocka_unit_test(test_save_load_roundtrip),
        cmocka_unit_test(test_corrupt_files),
        cmocka_unit_test(test_corrupt_files_valid_checksums),
        cmocka_unit_test(test_concurrent_readers_writer),
        cmocka_unit_test(test_inlined_layer_matches_portable),
        cmocka_unit_test(test_compact_reorder_keeps_results),
        cmocka_unit_test(test_pair_sort),
        cmocka_unit_test(test_parallel_build_near_duplicates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
