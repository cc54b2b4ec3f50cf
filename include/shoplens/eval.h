/*
 * shoplens/eval.h - retrieval quality metrics and the evaluation of a feature specification on
 * an image folder (ImageFolder convention: one sub-folder per label; relevant = same label).
 *
 * Metrics per query, then averaged over queries (Manning et al., "Introduction to Information
 * Retrieval", ch. 8):
 *   AP        = (1/R) * sum over ranks i with a relevant result of precision@i, R = relevant
 *               items that exist in the gallery (so a truncated ranking is not rewarded)
 *   P@k       = relevant in the top k / k
 *   R@k       = relevant in the top k / R
 *   hit@k     = 1 when at least one relevant result is in the top k
 *   F1@k      = 2 P@k R@k / (P@k + R@k) (0 when both are 0)
 *   hits@4    = number of relevant results among the top 4 (0..4; the UKBench/COIL "N-S score")
 * Queries with R = 0 are skipped (counted in `skipped`).
 */
#ifndef SHOPLENS_EVAL_H
#define SHOPLENS_EVAL_H

#include <stddef.h>
#include <stdint.h>
#include "shoplens/error.h"
#include "shoplens/learn.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SL_EVAL_K_DEFAULT 10
#define SL_EVAL_K_MIN 1
#define SL_EVAL_K_MAX 1000
/* Points on the interpolated precision-recall curve (recall 0, 0.1, ..., 1). */
#define SL_EVAL_PR_POINTS 11

typedef struct sl_eval_metrics {
    size_t queries;           /* queries evaluated (R > 0) */
    size_t skipped;           /* queries without any relevant item */
    size_t gallery;           /* gallery size */
    int k;
    double map, precision_1, precision_k, recall_k, hit_1, hit_5, hit_k, f1_k, hits_4;
    double index_images_per_s;  /* gallery images described+indexed per second (0 if unknown) */
    double query_ms_p50, query_ms_p99;
    double pr_curve[SL_EVAL_PR_POINTS]; /* mean interpolated precision at recall i/10 */
    size_t trained_photos;      /* photos (or augmented images) a head was trained on, 0 = none */
    double train_seconds;       /* describing them + training the head */
} sl_eval_metrics;

/* Accumulates per-query rankings. */
typedef struct sl_eval_acc sl_eval_acc;

/* k in SL_EVAL_K_MIN..MAX. NULL on bad k or out of memory. */
sl_eval_acc *sl_eval_acc_new(int k);
void sl_eval_acc_free(sl_eval_acc *a);

/* Adds one query: rel[i] nonzero when the result at rank i (0 = best) is relevant, for the
 * n_ranked results returned; n_relevant = relevant items that exist (R); query_ms its latency
 * (< 0: unknown). SL_E_INVALID when the ranking holds more relevant results than n_relevant. */
sl_status sl_eval_acc_add(sl_eval_acc *a, const unsigned char *rel, size_t n_ranked,
                          size_t n_relevant, double query_ms);

/* Averages so far into *m (gallery and index_images_per_s are left 0 for the caller). */
void sl_eval_acc_result(const sl_eval_acc *a, sl_eval_metrics *m);

/* The metrics as one JSON object with exactly the keys queries, gallery, map, precision@1,
 * precision@k, recall@k, hit@1, hit@5, hit@k, f1@k, hits@4, index_images_per_s, query_ms_p50,
 * query_ms_p99 (plus "k", "skipped" and "features" when spec is non-NULL). *json malloc'ed. */
sl_status sl_eval_metrics_json(const sl_eval_metrics *m, const char *spec, char **json);

/* ---- evaluating a feature specification on image folders (src/eval/run.c) ----------------- */

typedef struct sl_eval_opts {
    const char *gallery_dir;    /* ImageFolder */
    const char *queries_dir;    /* ImageFolder, NULL = leave-one-out over the gallery */
    const char *features;       /* spec, NULL = SL_FEATURES_SPEC_DEFAULT */
    int k;                      /* 0 = SL_EVAL_K_DEFAULT */
    int jobs;                   /* extraction threads, 0 = all cores */
    int max_side;               /* decode size, 0 = 640 */
    size_t max_queries;         /* 0 = all; else a deterministic sample of the queries */
    const char *report_html;    /* NULL or a path: write the HTML report there */
    size_t report_queries;      /* queries shown in the report, 0 = 24 */
    /* Learning (shoplens train): a head is trained before the gallery is indexed, as `shoplens
     * train` does on a store whose catalog is the gallery (one product per gallery label). */
    const char *train_dir;      /* ImageFolder of labelled photos in the gallery's label space
                                   (labels absent from the gallery are skipped), or NULL */
    int train_catalog;          /* nonzero (without train_dir): train from augmented gallery
                                   images alone (SL_LEARN_AUGMENT_PER_IMAGE per image) */
    const sl_head_train_opts *head; /* NULL = defaults */
    int no_references;          /* train_dir with queries_dir: nonzero = the head only; else the
                                   training photos are also references of their gallery label
                                   (each label's score: its best catalog image or reference, as
                                   a store's search does after `train --photos`). Leave-one-out
                                   never uses references (its labels are classes, not products) */
    const char *cache_dir;      /* NULL, or a folder keeping described image sets between runs
                                   (keyed by spec, files and their sizes and times) */
    /* called (from the calling thread, in folder order) for every image that is skipped because
     * it cannot be read or decoded, gallery and queries alike; may be NULL */
    void (*skipped_fn)(void *ctx, const char *path, const char *why);
    void *skipped_ctx;
} sl_eval_opts;

/* Trains the features on a sample of the gallery, describes every gallery image, ranks the
 * whole gallery for each query by global similarity (re-ranked geometrically at the top when
 * the spec verifies), and computes the metrics. The ranking is exact at any gallery size (a
 * gallery above the index's SL_INDEX_K_MAX results per search is ranked in parts, merged).
 * Errors: SL_E_NOT_FOUND / SL_E_IO for the folders, SL_E_INVALID (no labelled images), feature
 * errors. Unreadable images (gallery or queries) are skipped, counted in m->skipped and named
 * to opts->skipped_fn. */
sl_status sl_eval_run(const sl_eval_opts *opts, sl_eval_metrics *m, sl_error *err);

#ifdef __cplusplus
}
#endif
#endif
