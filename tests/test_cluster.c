/*
 * tests/test_cluster.c - the parts of the cluster module that need no PostgreSQL: the router's
 * merge of the shards' candidates (sl__merge_candidates) and the JSON of the two search phases
 * (proto.c), both sides.
 *
 * The merge is checked against its promise, on random catalogs split into shards: the merged
 * picks are exactly the catalog's best nc images in (score desc, image id asc) order - what a
 * single store's candidate stage takes - with the first vt flagged, whatever the shard split
 * and with many tied scores; the references' fold merged from the shards' parts is the whole
 * list's, to the bit. The wire format must give back the same bytes (vectors, local features)
 * and the same doubles (scores, folds, the candidates phase 2a re-ranked and 2b sends back), and
 * refuse malformed requests naming the field.
 * The cluster itself (PostgreSQL, nodes, workers, failures) is tested by tests/e2e_cluster.sh.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cluster_internal.h"

/* ---- the merge ------------------------------------------------------------------------------ */

static int cmp_cand(const void *a, const void *b) {
    const sl_candidate *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return (x->image_id > y->image_id) - (x->image_id < y->image_id);
}

static int cmp_dbl_desc(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rng(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* A catalog of n images (scores from few levels: many ties) split over S shards by a random
 * owner; every shard answers its best nc per query vector; the merge must equal the catalog's
 * best nc with the first vt flagged. Shard `down` (or -1) does not answer: the merge is then
 * the best nc of the other shards. */
static void check_merge(size_t n, size_t S, size_t nq, size_t nc, size_t vt, int down) {
    sl_candidate ***lists = calloc(S, sizeof *lists);
    size_t **counts = calloc(S, sizeof *counts);
    sl_candidate **all = calloc(nq, sizeof *all); /* per query vector: the answering catalog */
    size_t *nall = calloc(nq, sizeof *nall);
    assert_non_null(lists);
    assert_non_null(counts);
    assert_non_null(all);
    assert_non_null(nall);
    int *owner = malloc(n * sizeof *owner);
    assert_non_null(owner);
    for (size_t i = 0; i < n; i++) owner[i] = (int)(rng() % S);
    for (size_t s = 0; s < S; s++) {
        lists[s] = calloc(nq, sizeof *lists[s]);
        counts[s] = (int)s == down ? NULL : calloc(nq, sizeof *counts[s]);
        assert_non_null(lists[s]);
    }
    for (size_t qi = 0; qi < nq; qi++) {
        all[qi] = calloc(n + 1, sizeof *all[qi]);
        assert_non_null(all[qi]);
        sl_candidate *cat = calloc(n + 1, sizeof *cat);
        assert_non_null(cat);
        for (size_t i = 0; i < n; i++) {
            cat[i].image_id = (int64_t)(i * 7 + 3); /* ids not in score order */
            cat[i].score = (double)(rng() % 11) / 10.0;
        }
        for (size_t s = 0; s < S; s++) {
            sl_candidate *mine = calloc(n + 1, sizeof *mine);
            assert_non_null(mine);
            size_t m = 0;
            for (size_t i = 0; i < n; i++)
                if (owner[i] == (int)s) mine[m++] = cat[i];
            qsort(mine, m, sizeof *mine, cmp_cand);
            if ((int)s != down) {
                counts[s][qi] = m < nc ? m : nc;
                for (size_t i = 0; i < m; i++) all[qi][nall[qi]++] = mine[i];
            }
            lists[s][qi] = mine;
        }
        free(cat);
        qsort(all[qi], nall[qi], sizeof *all[qi], cmp_cand);
    }
    sl_candidate ***per = NULL;
    size_t **pcount = NULL;
    sl_error err;
    assert_int_equal(sl__merge_candidates(S, nq, lists, counts, nc, vt, &per, &pcount, &err), SL_OK);
    for (size_t qi = 0; qi < nq; qi++) {
        size_t want = nall[qi] < nc ? nall[qi] : nc;
        sl_candidate *got = calloc(want + 1, sizeof *got);
        assert_non_null(got);
        size_t m = 0;
        for (size_t s = 0; s < S; s++) {
            if ((int)s == down) assert_int_equal(pcount[s][qi], 0);
            for (size_t i = 0; i < pcount[s][qi]; i++) {
                assert_true(m < want);
                /* handed to the shard that owns it, in merged order within the shard */
                assert_int_equal(owner[(per[s][qi][i].image_id - 3) / 7], (int)s);
                if (i) assert_true(cmp_cand(&per[s][qi][i - 1], &per[s][qi][i]) < 0);
                got[m++] = per[s][qi][i];
            }
        }
        assert_int_equal(m, want);
        qsort(got, m, sizeof *got, cmp_cand);
        for (size_t i = 0; i < m; i++) {
            assert_int_equal(got[i].image_id, all[qi][i].image_id);
            assert_true(got[i].score == all[qi][i].score);
            assert_int_equal(got[i].verify, i < vt);
        }
        free(got);
    }
    sl__merged_free(per, pcount, S, nq);
    for (size_t s = 0; s < S; s++) {
        for (size_t qi = 0; qi < nq; qi++) free(lists[s][qi]);
        free(lists[s]);
        free(counts[s]);
    }
    for (size_t qi = 0; qi < nq; qi++) free(all[qi]);
    free(all);
    free(nall);
    free(lists);
    free(counts);
    free(owner);
}

static void test_merge_equals_catalog_top(void **state) {
    (void)state;
    for (int round = 0; round < 40; round++) {
        size_t S = 1 + (size_t)(rng() % 5);
        size_t n = (size_t)(rng() % 300);
        size_t nc = 1 + (size_t)(rng() % 120);
        size_t vt = (size_t)(rng() % (nc + 3));
        check_merge(n, S, 1 + (size_t)(rng() % 3), nc, vt, -1);
    }
}

static void test_merge_missing_shard(void **state) {
    (void)state;
    for (int round = 0; round < 20; round++) {
        size_t S = 2 + (size_t)(rng() % 4);
        check_merge(50 + (size_t)(rng() % 200), S, 2, 30, 10, (int)(rng() % S));
    }
}

/* One shard holding all of the best: the other shards' lists must not push them out. */
static void test_merge_one_shard_holds_the_best(void **state) {
    (void)state;
    sl_candidate a[3] = {{10, 0.9, 0, 0, 0}, {11, 0.8, 0, 0, 0}, {12, 0.7, 0, 0, 0}};
    sl_candidate b[3] = {{1, 0.5, 0, 0, 0}, {2, 0.4, 0, 0, 0}, {3, 0.3, 0, 0, 0}};
    sl_candidate c[1] = {{4, 0.8, 0, 0, 0}}; /* ties 11's score: the smaller id comes first */
    sl_candidate *la[1] = {a}, *lb[1] = {b}, *lc[1] = {c};
    sl_candidate **lists[3] = {la, lb, lc};
    size_t ca[1] = {3}, cb[1] = {3}, cc[1] = {1};
    size_t *counts[3] = {ca, cb, cc};
    sl_candidate ***per = NULL;
    size_t **pc = NULL;
    sl_error err;
    assert_int_equal(sl__merge_candidates(3, 1, lists, counts, 3, 2, &per, &pc, &err), SL_OK);
    assert_int_equal(pc[0][0], 2);
    assert_int_equal(pc[1][0], 0);
    assert_int_equal(pc[2][0], 1);
    assert_int_equal(per[0][0][0].image_id, 10);
    assert_int_equal(per[0][0][0].verify, 1);
    assert_int_equal(per[2][0][0].image_id, 4); /* second: verified */
    assert_int_equal(per[2][0][0].verify, 1);
    assert_int_equal(per[0][0][1].image_id, 11); /* third: not verified */
    assert_int_equal(per[0][0][1].verify, 0);
    sl__merged_free(per, pc, 3, 1);
}

/* ---- the phases on the wire ----------------------------------------------------------------- */

static void test_candidates_round_trip(void **state) {
    (void)state;
    float v[2][5] = {{0.0f, -1.5f, 3.25e-38f, 1e30f, 0.1f}, {-0.0f, 2.0f, -3.0f, 4.5f, 1e-45f}};
    sl_query q;
    memset(&q, 0, sizeof q);
    q.category = "mugs \"blue\"";
    q.has_min_price = 1;
    q.min_price = 4.99;
    q.text = "café";
    q.text_mode = SL_TEXT_BOOST;
    q.ef = 640;
    char *js = sl__phase_candidates_json(1, 3, 42, &q, "P7", 150, &v[0][0], 2, 5);
    assert_non_null(js);
    sl__phase_req r;
    sl_error err;
    assert_int_equal(sl__phase_req_parse(js, strlen(js), 0, &r, &err), SL_OK);
    assert_int_equal(r.shard, 1);
    assert_int_equal(r.shards, 3);
    assert_int_equal(r.features_version, 42);
    assert_int_equal(r.candidates, 150);
    assert_int_equal(r.nq, 2);
    assert_int_equal(r.dim, 5);
    assert_memory_equal(r.vecs, &v[0][0], sizeof v);
    assert_string_equal(r.q.category, "mugs \"blue\"");
    assert_string_equal(r.q.text, "café");
    assert_string_equal(r.exclude, "P7");
    assert_int_equal(r.q.text_mode, SL_TEXT_BOOST);
    assert_true(r.q.has_min_price && r.q.min_price == 4.99);
    assert_false(r.q.has_max_price);
    assert_int_equal(r.q.ef, 640); /* the search's HNSW ef reaches the shards */
    sl__phase_req_clear(&r);
    /* a request of the other phase is refused */
    assert_int_equal(sl__phase_req_parse(js, strlen(js), 1, &r, &err), SL_E_INVALID);
    free(js);
}

static void test_rerank_and_answers_round_trip(void **state) {
    (void)state;
    sl_candidate l0[2] = {{5, 0.1 + 0.2, 1, 0, 0}, {9, 1.0 / 3.0, 0, 0, 0}};
    sl_candidate *lists[2] = {l0, NULL};
    size_t counts[2] = {2, 0};
    unsigned char loc[7] = {0, 1, 2, 0xff, 0xfe, 'x', 0};
    void *locals[2] = {loc, NULL};
    size_t lens[2] = {sizeof loc, 0};
    sl_query q;
    memset(&q, 0, sizeof q);
    char *js = sl__phase_rerank_json(0, 2, 3, &q, 25, locals, lens, 2, lists, counts, 0, NULL);
    assert_non_null(js);
    sl__phase_req r;
    sl_error err;
    assert_int_equal(sl__phase_req_parse(js, strlen(js), 1, &r, &err), SL_OK);
    assert_false(r.fold_parts);
    assert_null(r.folds);
    assert_int_equal(r.depth, 25);
    assert_int_equal(r.nq, 2);
    assert_int_equal(r.local_lens[0], sizeof loc);
    assert_memory_equal(r.locals[0], loc, sizeof loc);
    assert_null(r.locals[1]);
    assert_int_equal(r.counts[0], 2);
    assert_int_equal(r.counts[1], 0);
    assert_int_equal(r.lists[0][0].image_id, 5);
    assert_true(r.lists[0][0].score == 0.1 + 0.2); /* the same double, not a rounded one */
    assert_int_equal(r.lists[0][0].verify, 1);
    assert_true(r.lists[0][1].score == 1.0 / 3.0);
    assert_int_equal(r.lists[0][1].verify, 0);
    sl__phase_req_clear(&r);
    free(js);
    /* phase 2a asks for the fold parts; 2b carries the folds: the same doubles, no catalog
     * candidate (INFINITY) as null */
    js = sl__phase_rerank_json(0, 2, 3, &q, 25, locals, lens, 2, lists, counts, 1, NULL);
    assert_int_equal(sl__phase_req_parse(js, strlen(js), 1, &r, &err), SL_OK);
    assert_true(r.fold_parts);
    sl__phase_req_clear(&r);
    free(js);
    sl_ref_fold folds[2] = {{{0.1 + 0.2, 1.0 / 3.0}, {1.0 / 7.0, 2.0 / 9.0}, -0.5 / 3.0}, {{0, 0}, {0, 0}, INFINITY}};
    js = sl__phase_rerank_json(0, 2, 3, &q, 25, locals, lens, 2, lists, counts, 0, folds);
    assert_non_null(strstr(js, "null]"));
    assert_int_equal(sl__phase_req_parse(js, strlen(js), 1, &r, &err), SL_OK);
    assert_non_null(r.folds);
    assert_memory_equal(&r.folds[0], &folds[0], sizeof folds[0]);
    assert_true(isinf(r.folds[1].lowest) && r.folds[1].sd[1] == 0);
    sl__phase_req_clear(&r);
    free(js);

    /* phase 2b sends candidates phase 2a re-ranked as [id, score, verify, inliers]: they keep
     * their score and inliers (a node of an older build refuses such a list) */
    sl_candidate rr[2] = {{5, 2.0 / 3.0, 1, 1, 17}, {9, -1.0 / 7.0, 0, 0, 0}};
    sl_candidate *rlists[2] = {rr, NULL};
    js = sl__phase_rerank_json(0, 2, 3, &q, 25, locals, lens, 2, rlists, counts, 0, folds);
    assert_non_null(strstr(js, ",1,17]"));
    assert_int_equal(sl__phase_req_parse(js, strlen(js), 1, &r, &err), SL_OK);
    assert_true(r.lists[0][0].reranked && r.lists[0][0].inliers == 17 && r.lists[0][0].score == 2.0 / 3.0);
    assert_true(!r.lists[0][1].reranked && r.lists[0][1].score == -1.0 / 7.0);
    sl__phase_req_clear(&r);
    free(js);

    /* phase 2a answer: each list's part, and the candidates re-ranked (the same doubles) */
    double cat[3] = {0.9, 1.0 / 3.0, -0.25}, ref[1] = {2.0 / 3.0};
    sl_ref_fold_part parts[2] = {{{cat, ref}, {3, 1}, 0.1 + 0.2}, {{NULL, NULL}, {0, 0}, INFINITY}};
    js = sl__phase_parts_json(parts, rlists, counts, 2);
    assert_non_null(js);
    sl_ref_fold_part pb[2];
    sl_candidate back2[2] = {{5, 0.5, 1, 0, 0}, {9, 0.25, 0, 0, 0}};
    sl_candidate *blists[2] = {back2, NULL};
    assert_int_equal(sl__phase_parts_parse(js, strlen(js), 2, pb, blists, counts, &err), SL_OK);
    assert_true(back2[0].reranked && back2[0].score == 2.0 / 3.0 && back2[0].inliers == 17);
    assert_true(back2[1].reranked && back2[1].score == -1.0 / 7.0 && back2[1].inliers == 0);
    assert_int_equal(pb[0].n[0], 3);
    assert_int_equal(pb[0].n[1], 1);
    assert_memory_equal(pb[0].best[0], cat, sizeof cat);
    assert_true(pb[0].best[1][0] == 2.0 / 3.0 && pb[0].lowest == 0.1 + 0.2);
    assert_true(pb[1].n[0] == 0 && pb[1].n[1] == 0 && isinf(pb[1].lowest));
    sl_ref_fold_part_clear(&pb[0]);
    sl_ref_fold_part_clear(&pb[1]);
    sl_ref_fold_part pb3[3]; /* an answer for another number of query vectors is refused */
    assert_int_equal(sl__phase_parts_parse(js, strlen(js), 3, pb3, NULL, NULL, &err), SL_E_CORRUPT);
    assert_null(pb3[0].best[0]);
    /* re-ranked candidates that are not the lists asked about fail the answer, taking nothing */
    size_t counts3[2] = {3, 0};
    sl_candidate back3[3] = {{5, 0.5, 1, 0, 0}, {9, 0.25, 0, 0, 0}, {11, 0.125, 0, 0, 0}};
    sl_candidate *b3lists[2] = {back3, NULL};
    assert_int_equal(sl__phase_parts_parse(js, strlen(js), 2, pb, b3lists, counts3, &err), SL_E_CORRUPT);
    assert_true(!back3[0].reranked && back3[0].score == 0.5);
    assert_null(pb[0].best[0]);
    free(js);
    /* an answer of a node of an older build (parts only): the lists stay to be re-ranked */
    static const char old_parts[] = "{\"parts\":[{\"catalog\":[0.5],\"references\":[],\"lowest\":0.5},"
                                    "{\"catalog\":[],\"references\":[],\"lowest\":null}]}";
    back2[0].reranked = back2[1].reranked = 0;
    assert_int_equal(sl__phase_parts_parse(old_parts, strlen(old_parts), 2, pb, blists, counts, &err), SL_OK);
    assert_true(!back2[0].reranked && !back2[1].reranked && pb[0].n[0] == 1);
    sl_ref_fold_part_clear(&pb[0]);
    sl_ref_fold_part_clear(&pb[1]);

    /* phase 1 answer, with the shard index's entries and references */
    js = sl__phase_lists_json(77, 40, 9, lists, counts, 2);
    assert_non_null(js);
    sl_candidate *back[2] = {NULL, NULL};
    size_t bc[2] = {9, 9};
    int64_t entries = 0, nrefs = 0;
    assert_int_equal(sl__phase_lists_parse(js, strlen(js), 2, back, bc, &entries, &nrefs, &err), SL_OK);
    assert_int_equal(entries, 40);
    assert_int_equal(nrefs, 9);
    assert_int_equal(bc[0], 2);
    assert_int_equal(bc[1], 0);
    assert_true(back[0][1].score == 1.0 / 3.0);
    assert_int_equal(back[0][1].image_id, 9);
    sl_candidate_lists_clear(back, bc, 2);
    /* an answer for another number of query vectors is refused */
    assert_int_equal(sl__phase_lists_parse(js, strlen(js), 3, back, bc, &entries, &nrefs, &err), SL_E_CORRUPT);
    free(js);

    /* phase 2 answer */
    sl_match it[1];
    memset(it, 0, sizeof it);
    it[0].product_id = "P1";
    it[0].title = "Blue mug";
    it[0].category = "mugs";
    it[0].currency = "EUR";
    it[0].url = "";
    it[0].image = "";
    it[0].score = 2.0 / 7.0;
    it[0].has_price = 1;
    it[0].price = 12.5;
    it[0].image_id = 5;
    it[0].inliers = 17;
    it[0].confidence = 0.875;
    it[0].match = 1;
    sl_matches m = {it, 1};
    js = sl__phase_matches_json(&m);
    assert_non_null(js);
    sl_matches out = {NULL, 0};
    assert_int_equal(sl__phase_matches_parse(js, strlen(js), &out, &err), SL_OK);
    assert_int_equal(out.n, 1);
    assert_string_equal(out.items[0].product_id, "P1");
    assert_string_equal(out.items[0].title, "Blue mug");
    assert_true(out.items[0].score == 2.0 / 7.0);
    assert_true(out.items[0].has_price && out.items[0].price == 12.5);
    assert_int_equal(out.items[0].image_id, 5);
    assert_int_equal(out.items[0].inliers, 17);
    /* the calibrated confidence and match flag cross to the router */
    assert_true(out.items[0].confidence == 0.875);
    assert_true(out.items[0].match);
    sl_matches_free(&out);
    free(js);
    /* an answer without them (a node of an older build): no confidence, no match */
    static const char old_node[] = "{\"results\": [{\"product_id\": \"P2\", \"score\": 0.5}]}";
    assert_int_equal(sl__phase_matches_parse(old_node, strlen(old_node), &out, &err), SL_OK);
    assert_int_equal(out.n, 1);
    assert_true(out.items[0].confidence == 0 && !out.items[0].match);
    sl_matches_free(&out);
}

/* The references' fold merged from the shards' parts is the whole list's: the K best of every
 * kind over all shards, the same mean and deviation to the bit, the lowest catalog score of all. */
static void test_fold_merge_equals_whole(void **state) {
    (void)state;
    for (int trial = 0; trial < 50; trial++) {
        size_t S = 1 + rng() % 4, n[2] = {rng() % 30, rng() % 30};
        double *all[2], lowest = INFINITY;
        sl_ref_fold_part *parts = calloc(S, sizeof *parts);
        assert_non_null(parts);
        for (size_t s = 0; s < S; s++) parts[s].lowest = INFINITY;
        for (int kind = 0; kind < 2; kind++) {
            all[kind] = calloc(n[kind] + 1, sizeof **all);
            for (size_t s = 0; s < S; s++) parts[s].best[kind] = calloc(n[kind] + 1, sizeof(double));
            for (size_t i = 0; i < n[kind]; i++) {
                double x = (double)(rng() % 64) / 37.0 - 0.5; /* few levels: ties */
                size_t s = rng() % S;
                all[kind][i] = x;
                parts[s].best[kind][parts[s].n[kind]++] = x;
                if (kind == 0 && x - 0.25 < parts[s].lowest) parts[s].lowest = x - 0.25;
                if (kind == 0 && x - 0.25 < lowest) lowest = x - 0.25;
            }
        }
        /* each shard keeps its K best, best first (what a shard answers) */
        for (size_t s = 0; s < S; s++)
            for (int kind = 0; kind < 2; kind++) {
                qsort(parts[s].best[kind], parts[s].n[kind], sizeof(double), cmp_dbl_desc);
                if (parts[s].n[kind] > SL_CALIB_COHORT_DEFAULT) parts[s].n[kind] = SL_CALIB_COHORT_DEFAULT;
            }
        sl_ref_fold f;
        sl_ref_fold_merge(parts, S, &f);
        for (int kind = 0; kind < 2; kind++) {
            qsort(all[kind], n[kind], sizeof(double), cmp_dbl_desc);
            size_t m = n[kind] < SL_CALIB_COHORT_DEFAULT ? n[kind] : SL_CALIB_COHORT_DEFAULT;
            double sum = 0, ss = 0, mean = 0;
            for (size_t i = 0; i < m; i++) sum += all[kind][i];
            if (m) mean = sum / (double)m;
            for (size_t i = 0; i < m; i++) ss += (all[kind][i] - mean) * (all[kind][i] - mean);
            assert_true(f.mean[kind] == mean);
            assert_true(f.sd[kind] == (m ? sqrt(ss / (double)m) : 0));
            free(all[kind]);
        }
        assert_true(f.lowest == lowest);
        for (size_t s = 0; s < S; s++) sl_ref_fold_part_clear(&parts[s]);
        free(parts);
    }
}

static void test_phase_requests_refused(void **state) {
    (void)state;
    static const struct { int rerank; const char *body, *names; } bad[] = {
        {0, "not json", "not a JSON object"},
        {0, "[1]", "not a JSON object"},
        {0, "{\"shard\":3,\"shards\":3,\"features_version\":1,\"candidates\":5,\"dim\":1,\"vectors\":[\"AAAAAA==\"]}", "shard/shards"},
        {0, "{\"shard\":0,\"shards\":0,\"features_version\":1,\"candidates\":5,\"dim\":1,\"vectors\":[\"AAAAAA==\"]}", "shard/shards"},
        {0, "{\"shard\":0,\"shards\":1,\"features_version\":-1,\"candidates\":5,\"dim\":1,\"vectors\":[\"AAAAAA==\"]}", "features_version"},
        {0, "{\"shard\":0,\"shards\":1,\"features_version\":1,\"candidates\":0,\"dim\":1,\"vectors\":[\"AAAAAA==\"]}", "candidates"},
        {0, "{\"shard\":0,\"shards\":1,\"features_version\":1,\"candidates\":5,\"dim\":0,\"vectors\":[\"AAAAAA==\"]}", "dim"},
        {0, "{\"shard\":0,\"shards\":1,\"features_version\":1,\"candidates\":5,\"dim\":2,\"vectors\":[\"AAAAAA==\"]}", "vectors"},
        {0, "{\"shard\":0,\"shards\":1,\"features_version\":1,\"candidates\":5,\"dim\":1,\"vectors\":[]}", "vectors"},
        {0, "{\"shard\":0,\"shards\":1,\"features_version\":1,\"candidates\":5,\"dim\":1,\"vectors\":[\"AA*AAA==\"]}", "vectors"},
        /* +Inf as float32 bytes: 00 00 80 7f */
        {0, "{\"shard\":0,\"shards\":1,\"features_version\":1,\"candidates\":5,\"dim\":1,\"vectors\":[\"AACAfw==\"]}", "vectors"},
        {0, "{\"shard\":0,\"shards\":1,\"features_version\":1,\"candidates\":5,\"dim\":1,\"category\":7,\"vectors\":[\"AAAAAA==\"]}", "filters"},
        {0, "{\"shard\":0,\"shards\":1,\"features_version\":1,\"candidates\":5,\"dim\":1,\"ef\":15,\"vectors\":[\"AAAAAA==\"]}", "ef"},
        {0, "{\"shard\":0,\"shards\":1,\"features_version\":1,\"candidates\":5,\"dim\":1,\"ef\":\"300\",\"vectors\":[\"AAAAAA==\"]}", "ef"},
        {0, "{\"shard\":0,\"shards\":1,\"features_version\":1,\"text_mode\":\"loud\",\"candidates\":5,\"dim\":1,\"vectors\":[\"AAAAAA==\"]}", "text/text_mode"},
        {1, "{\"shard\":0,\"shards\":1,\"features_version\":1,\"depth\":0,\"locals\":[null],\"lists\":[[]]}", "depth"},
        {1, "{\"shard\":0,\"shards\":1,\"features_version\":1,\"depth\":5,\"locals\":[null,null],\"lists\":[[]]}", "locals/lists"},
        {1, "{\"shard\":0,\"shards\":1,\"features_version\":1,\"depth\":5,\"locals\":[7],\"lists\":[[]]}", "locals"},
        {1, "{\"shard\":0,\"shards\":1,\"features_version\":1,\"depth\":5,\"locals\":[\"A\"],\"lists\":[[]]}", "locals"},
        {1, "{\"shard\":0,\"shards\":1,\"features_version\":1,\"depth\":5,\"locals\":[null],\"lists\":[[[1,0.5]]]}", "lists"},
        {1, "{\"shard\":0,\"shards\":1,\"features_version\":1,\"depth\":5,\"locals\":[null],\"lists\":[[[1,\"x\",0]]]}", "lists"},
        {1, "{\"shard\":0,\"shards\":1,\"features_version\":1,\"depth\":5,\"locals\":[null],\"lists\":[[[1,0.5,1,-2]]]}", "lists"},
        {1, "{\"shard\":0,\"shards\":1,\"features_version\":1,\"depth\":5,\"locals\":[null],\"lists\":[[[1,0.5,1,0.5]]]}", "lists"},
        {1, "{\"shard\":0,\"shards\":1,\"features_version\":1,\"depth\":5,\"locals\":[null],\"lists\":[[[1,0.5,1,3,0]]]}", "lists"},
        {1, "{\"shard\":0,\"shards\":1,\"features_version\":1,\"depth\":5,\"locals\":[null],\"lists\":[[]],\"fold\":[[0,1,0,1,null],[0,1,0,1,0]]}", "fold"},
        {1, "{\"shard\":0,\"shards\":1,\"features_version\":1,\"depth\":5,\"locals\":[null],\"lists\":[[]],\"fold\":[[0,1,0,\"x\",null]]}", "fold"},
        {1, "{\"shard\":0,\"shards\":1,\"features_version\":1,\"depth\":5,\"locals\":[null],\"lists\":[[]],\"fold_parts\":1}", "fold_parts"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sl__phase_req r;
        sl_error err;
        memset(&err, 0, sizeof err);
        sl_status st = sl__phase_req_parse(bad[i].body, strlen(bad[i].body), bad[i].rerank, &r, &err);
        if (st != SL_E_INVALID || !strstr(err.message, bad[i].names))
            fail_msg("body %zu: status %d, message '%s', expected one naming '%s'", i, (int)st, err.message,
                     bad[i].names);
        assert_null(r.json); /* cleared */
        assert_null(r.vecs);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merge_equals_catalog_top),
        cmocka_unit_test(test_merge_missing_shard),
        cmocka_unit_test(test_merge_one_shard_holds_the_best),
        cmocka_unit_test(test_candidates_round_trip),
        cmocka_unit_test(test_rerank_and_answers_round_trip),
        cmocka_unit_test(test_fold_merge_equals_whole),
        cmocka_unit_test(test_phase_requests_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
