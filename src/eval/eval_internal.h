/*
 * eval/eval_internal.h - shared between the evaluation runner and its HTML report.
 */
#ifndef SL_EVAL_INTERNAL_H
#define SL_EVAL_INTERNAL_H

#include <stddef.h>
#include "shoplens/eval.h"
#include "shoplens/feature.h"

#define SL__EVAL_SHOW_TOP 5

/* Gallery images per exact index: a search returns at most SL_INDEX_K_MAX results, so a larger
 * gallery is split into parts ranked separately and merged. A variable so that a test can
 * exercise the merge on a small gallery; never changed otherwise. */
extern size_t sl__eval_part_size;

/* An ImageFolder: paths[i] has label labels[i] (index into label_names, sorted). */
typedef struct sl__eval_set {
    char **paths;
    int *labels;
    size_t n;
    char **label_names;
    size_t n_labels;
} sl__eval_set;

sl_status sl__eval_set_load(const char *dir, sl__eval_set *s, sl_error *err);
void sl__eval_set_free(sl__eval_set *s);

/* Evaluation cache (cache.c): the file of a described set (malloc'ed path), load (1 when the
 * file holds exactly n x dim descriptions, filled into vecs/locals/ok) and save (best effort). */
char *sl__eval_cache_path(const char *dir, const char *spec, int max_side, int want_locals,
                          const sl__eval_set *gallery, const sl__eval_set *set);
int sl__eval_cache_load(const char *path, size_t n, size_t dim, float *vecs,
                        sl_local_features **locals, unsigned char *ok);
void sl__eval_cache_save(const char *dir, const char *path, size_t n, size_t dim, const float *vecs,
                         sl_local_features *const *locals, const unsigned char *ok);

/* A query shown in the report with its top results (gallery indices). */
typedef struct sl__eval_shown {
    size_t query;
    size_t result[SL__EVAL_SHOW_TOP];
    unsigned char relevant[SL__EVAL_SHOW_TOP];
    size_t n;
} sl__eval_shown;

/* Writes the self-contained HTML report (metrics, PR curve as inline SVG, query thumbnails
 * with their top results outlined green when relevant, red otherwise). */
sl_status sl__eval_report(const char *path, const sl_eval_opts *opts, const char *spec,
                          const sl_eval_metrics *m, const sl__eval_set *g, const sl__eval_set *q,
                          const sl__eval_shown *shown, size_t n_shown, int max_side, sl_error *err);

#endif
