/*
 * eval/metrics.c - retrieval metrics accumulated over queries (definitions in eval.h; Manning,
 * Raghavan & Schuetze, "Introduction to Information Retrieval", 2008, ch. 8: average precision,
 * precision/recall at k, 11-point interpolated precision-recall curve).
 *
 * Invariants: sums are over evaluated queries only (n_relevant > 0); latencies are kept to
 * compute exact percentiles (nearest-rank); the JSON keys are exactly those documented in
 * docs/cli.md for `shoplens eval --json`.
 */
#include "shoplens/eval.h"
#include "util/util.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct sl_eval_acc {
    int k;
    size_t queries, skipped;
    double ap, p1, pk, rk, h1, h5, hk, f1, h4;
    double pr[SL_EVAL_PR_POINTS];
    double *ms;
    size_t n_ms, cap_ms;
};

sl_eval_acc *sl_eval_acc_new(int k) {
    if (k < SL_EVAL_K_MIN || k > SL_EVAL_K_MAX) return NULL;
    sl_eval_acc *a = calloc(1, sizeof *a);
    if (a) a->k = k;
    return a;
}

void sl_eval_acc_free(sl_eval_acc *a) {
    if (!a) return;
    free(a->ms);
    free(a);
}

sl_status sl_eval_acc_add(sl_eval_acc *a, const unsigned char *rel, size_t n_ranked,
                          size_t n_relevant, double query_ms) {
    if (!a || (n_ranked && !rel)) return SL_E_INVALID;
    size_t total_rel = 0;
    for (size_t i = 0; i < n_ranked; i++) total_rel += rel[i] != 0;
    if (total_rel > n_relevant) return SL_E_INVALID;
    if (query_ms >= 0) {
        if (a->n_ms == a->cap_ms) {
            size_t nc = a->cap_ms ? a->cap_ms * 2 : 256;
            double *nm = sl__reallocarray(a->ms, nc, sizeof *nm);
            if (!nm) return SL_E_NOMEM;
            a->ms = nm;
            a->cap_ms = nc;
        }
        a->ms[a->n_ms++] = query_ms;
    }
    if (n_relevant == 0) {
        a->skipped++;
        return SL_OK;
    }
    size_t k = (size_t)a->k, found = 0, in1 = 0, in4 = 0, in5 = 0, ink = 0;
    double ap = 0;
    /* precision at each rank where recall rises, for the interpolated curve */
    double best_after[SL_EVAL_PR_POINTS] = {0};
    for (size_t i = 0; i < n_ranked; i++) {
        if (!rel[i]) continue;
        found++;
        double prec = (double)found / (double)(i + 1);
        ap += prec;
        if (i < 1) in1++;
        if (i < 4) in4++;
        if (i < 5) in5++;
        if (i < k) ink++;
        double recall = (double)found / (double)n_relevant;
        /* interpolated precision at level r = max precision at any recall >= r */
        for (int p = 0; p < SL_EVAL_PR_POINTS; p++)
            if (recall + 1e-12 >= (double)p / (SL_EVAL_PR_POINTS - 1) && prec > best_after[p])
                best_after[p] = prec;
    }
    double pk = (double)ink / (double)k, rk = (double)ink / (double)n_relevant;
    a->queries++;
    a->ap += ap / (double)n_relevant;
    a->p1 += (double)in1;
    a->pk += pk;
    a->rk += rk;
    a->h1 += in1 > 0;
    a->h5 += in5 > 0;
    a->hk += ink > 0;
    a->f1 += pk + rk > 0 ? 2 * pk * rk / (pk + rk) : 0;
    a->h4 += (double)in4;
    for (int p = 0; p < SL_EVAL_PR_POINTS; p++) a->pr[p] += best_after[p];
    return SL_OK;
}

static int sl__cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

/* Nearest-rank percentile of a sorted array. */
static double sl__percentile(const double *v, size_t n, double q) {
    if (n == 0) return 0;
    double r = ceil(q * (double)n);
    size_t i = r < 1 ? 0 : (size_t)r - 1;
    return v[i < n ? i : n - 1];
}

void sl_eval_acc_result(const sl_eval_acc *a, sl_eval_metrics *m) {
    memset(m, 0, sizeof *m);
    if (!a) return;
    m->k = a->k;
    m->queries = a->queries;
    m->skipped = a->skipped;
    if (a->queries) {
        double q = (double)a->queries;
        m->map = a->ap / q;
        m->precision_1 = a->p1 / q;
        m->precision_k = a->pk / q;
        m->recall_k = a->rk / q;
        m->hit_1 = a->h1 / q;
        m->hit_5 = a->h5 / q;
        m->hit_k = a->hk / q;
        m->f1_k = a->f1 / q;
        m->hits_4 = a->h4 / q;
        for (int p = 0; p < SL_EVAL_PR_POINTS; p++) m->pr_curve[p] = a->pr[p] / q;
    }
    if (a->n_ms) {
        double *s = sl__mallocarray(a->n_ms, sizeof *s);
        if (s) {
            memcpy(s, a->ms, a->n_ms * sizeof *s);
            qsort(s, a->n_ms, sizeof *s, sl__cmp_double);
            m->query_ms_p50 = sl__percentile(s, a->n_ms, 0.50);
            m->query_ms_p99 = sl__percentile(s, a->n_ms, 0.99);
            free(s);
        }
    }
}

/* Rounds to 6 significant decimals so the JSON is stable and readable. */
static json_t *sl__num(double v) { return json_real(round(v * 1e6) / 1e6); }

sl_status sl_eval_metrics_json(const sl_eval_metrics *m, const char *spec, char **json) {
    *json = NULL;
    json_t *o = json_object();
    if (!o) return SL_E_NOMEM;
    json_object_set_new(o, "queries", json_integer((json_int_t)m->queries));
    json_object_set_new(o, "gallery", json_integer((json_int_t)m->gallery));
    json_object_set_new(o, "k", json_integer(m->k));
    if (m->trained_photos) {
        json_object_set_new(o, "trained_photos", json_integer((json_int_t)m->trained_photos));
        json_object_set_new(o, "train_seconds", sl__num(m->train_seconds));
    }
    json_object_set_new(o, "map", sl__num(m->map));
    json_object_set_new(o, "precision@1", sl__num(m->precision_1));
    json_object_set_new(o, "precision@k", sl__num(m->precision_k));
    json_object_set_new(o, "recall@k", sl__num(m->recall_k));
    json_object_set_new(o, "hit@1", sl__num(m->hit_1));
    json_object_set_new(o, "hit@5", sl__num(m->hit_5));
    json_object_set_new(o, "hit@k", sl__num(m->hit_k));
    json_object_set_new(o, "f1@k", sl__num(m->f1_k));
    json_object_set_new(o, "hits@4", sl__num(m->hits_4));
    json_object_set_new(o, "index_images_per_s", sl__num(m->index_images_per_s));
    json_object_set_new(o, "query_ms_p50", sl__num(m->query_ms_p50));
    json_object_set_new(o, "query_ms_p99", sl__num(m->query_ms_p99));
    json_object_set_new(o, "skipped", json_integer((json_int_t)m->skipped));
    if (spec) json_object_set_new(o, "features", json_string(spec));
    *json = json_dumps(o, JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    json_decref(o);
    return *json ? SL_OK : SL_E_NOMEM;
}
