/*
 * tests/fuzz/fuzz_cluster_proto.c - fuzz target for the JSON of the two phases of a distributed
 * search (src/cluster/proto.c): the requests a search node parses (network input) and the
 * answers a router parses.
 *
 * The first byte picks the parser (0: candidates request, 1: re-rank request, 2: phase 1
 * answer for 1..4 query vectors, 3: phase 2 answer, or with bit 2 set the fold parts of phase 2a
 * for 1..4 query vectors); the rest is the body. Checks its promises: a refused request leaves
 * the result cleared and says why; an accepted candidates request has 1..n finite vectors of its
 * dimension and builds back into a request that parses to the same bytes; an accepted re-rank
 * request has a list per query vector, finite scores, inliers >= -1 and finite folds; parts hold
 * at most K_MAX finite scores, and the candidates asked about are re-ranked (all of them, with
 * finite scores) only by an answer that parses.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cluster_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void sl__fz_request(const uint8_t *body, size_t len, int rerank) {
    sl__phase_req r;
    sl_error err;
    err.message[0] = '\0';
    if (sl__phase_req_parse(body, len, rerank, &r, &err) != SL_OK) {
        if (r.json || r.vecs || r.lists || r.nq || !err.message[0]) abort();
        return;
    }
    if (r.nq < 1 || r.shard < 0 || r.shard >= r.shards) abort();
    if (!rerank) {
        if (r.dim < 1 || !r.vecs || r.candidates < 1) abort();
        for (size_t i = 0; i < r.nq * r.dim; i++)
            if (!isfinite(r.vecs[i])) abort();
        char *js = sl__phase_candidates_json(r.shard, r.shards, r.features_version, &r.q, r.exclude,
                                             r.candidates, r.vecs, r.nq, r.dim);
        if (js) {
            sl__phase_req b;
            if (sl__phase_req_parse(js, strlen(js), 0, &b, &err) != SL_OK) abort();
            if (b.nq != r.nq || b.dim != r.dim || memcmp(b.vecs, r.vecs, r.nq * r.dim * sizeof *r.vecs) != 0)
                abort();
            sl__phase_req_clear(&b);
            free(js);
        }
    } else {
        if (!r.lists || !r.counts || r.depth < 1) abort();
        for (size_t i = 0; i < r.nq; i++)
            if (!r.lists[i] || (!r.locals[i] && r.local_lens[i])) abort();
        for (size_t i = 0; i < r.nq; i++)
            for (size_t k = 0; k < r.counts[i]; k++)
                if (!isfinite(r.lists[i][k].score) || (r.lists[i][k].reranked && r.lists[i][k].inliers < -1)) abort();
        for (size_t i = 0; r.folds && i < r.nq; i++)
            if (!isfinite(r.folds[i].mean[0]) || !isfinite(r.folds[i].sd[1]) || isnan(r.folds[i].lowest)) abort();
    }
    sl__phase_req_clear(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int which = data[0] % 4;
    const uint8_t *body = data + 1;
    size_t len = size - 1;
    sl_error err;
    if (which <= 1) {
        sl__fz_request(body, len, which);
    } else if (which == 2) {
        size_t nq = 1 + (data[0] >> 2) % 4;
        sl_candidate *lists[4] = {NULL, NULL, NULL, NULL};
        size_t counts[4] = {0, 0, 0, 0};
        int64_t entries = -1, refs = -1;
        if (sl__phase_lists_parse((const char *)body, len, nq, lists, counts, &entries, &refs, &err) == SL_OK) {
            if (entries < 0 || refs < 0 || refs > entries) abort();
            for (size_t i = 0; i < nq; i++)
                if (!lists[i] || counts[i] > SL_INDEX_K_MAX) abort();
        } else {
            for (size_t i = 0; i < nq; i++)
                if (lists[i]) abort(); /* cleared on failure */
        }
        sl_candidate_lists_clear(lists, counts, nq);
    } else if (data[0] & 4) {
        size_t nq = 1 + (data[0] >> 3) % 4;
        sl_ref_fold_part parts[4];
        /* the candidates asked about: 2, 1, 0 and 3 per query vector, score 0.5, not re-ranked */
        sl_candidate cand[6];
        memset(cand, 0, sizeof cand);
        for (size_t i = 0; i < 6; i++) cand[i].score = 0.5;
        sl_candidate *lists[4] = {cand, cand + 2, cand + 3, cand + 3};
        size_t counts[4] = {2, 1, 0, 3};
        sl_status st = sl__phase_parts_parse((const char *)body, len, nq, parts, lists, counts, &err);
        if (st == SL_OK) {
            for (size_t i = 0; i < nq; i++)
                for (int k = 0; k < 2; k++) {
                    if (!parts[i].best[k] || parts[i].n[k] > SL_CALIB_COHORT_MAX) abort();
                    for (size_t j = 0; j < parts[i].n[k]; j++)
                        if (!isfinite(parts[i].best[k][j])) abort();
                }
        } else {
            for (size_t i = 0; i < nq; i++)
                if (parts[i].best[0] || parts[i].best[1]) abort(); /* cleared on failure */
        }
        /* re-ranked all or none, only with a parsed answer, with finite scores */
        int any = 0, all = 1;
        for (size_t i = 0; i < nq; i++)
            for (size_t k = 0; k < counts[i]; k++) {
                const sl_candidate *c = &lists[i][k];
                any |= c->reranked;
                all &= c->reranked;
                if (!c->reranked && c->score != 0.5) abort();
                if (c->reranked && (!isfinite(c->score) || c->inliers < -1)) abort();
            }
        if (any && (!all || st != SL_OK)) abort();
        for (size_t i = 0; i < nq; i++) sl_ref_fold_part_clear(&parts[i]);
    } else {
        sl_matches m = {NULL, 0};
        sl_status st = sl__phase_matches_parse((const char *)body, len, &m, &err);
        for (size_t i = 0; st == SL_OK && i < m.n; i++)
            if (!m.items[i].product_id || !m.items[i].title) abort();
        sl_matches_free(&m);
    }
    return 0;
}
