/*
 * learn/learn_internal.h - the head's fields, shared by head.c (apply, files) and train.c.
 */
#ifndef SL_LEARN_INTERNAL_H
#define SL_LEARN_INTERNAL_H
#include <stddef.h>
#include "shoplens/learn.h"

struct sl_head {
    size_t dim, rank;
    float *mean[2];     /* per side (SL_HEAD_QUERY, SL_HEAD_GALLERY), dim floats each */
    float *V;           /* dim x rank, row-major (NULL when rank = 0) */
    float *U;           /* rank x dim, row-major */
    float choice;       /* sl_head_choice (not serialized) */
};

/* A zeroed head of this shape (means 0, U = V = 0), or NULL when out of memory. */
sl_head *sl__head_alloc(size_t dim, size_t rank);
/* Centres rows on mean and L2-normalizes them in place (a zero row stays zero). */
void sl__head_center(float *x, size_t n, size_t dim, const float *mean);
/* L2-normalizes n rows in place; norms (may be NULL) receives each row's norm before. */
void sl__head_normalize(float *x, size_t n, size_t dim, float *norms);
/* C = alpha op(A) op(B) + beta C (row-major; op = transpose when ta / tb), on up to `threads`
 * threads with results independent of the thread count (mm.c). -1 when out of memory. */
int sl__mm(int ta, int tb, size_t m, size_t n, size_t k, float alpha, const float *a, size_t lda,
           const float *b, size_t ldb, float beta, float *c, size_t ldc, int threads);
/* Checks options and data as sl_head_train documents (SL_E_INVALID / SL_E_TOO_LARGE). */
sl_status sl__head_check(const sl_head_data *dt, const sl_head_train_opts *o, sl_error *err);
/* sl_head_train with a fixed lambda (opts->lambda >= 0) on checked data (train.c). */
sl_status sl__head_train_fixed(const sl_head_data *dt, const sl_head_train_opts *opts, sl_head **out,
                               sl_error *err);
/* Applies hd to n rows like sl_head_apply but with the thread-count independent products of
 * mm.c (validation must not depend on the thread count). out must not overlap in. -1 when out
 * of memory. */
int sl__head_map(const sl_head *hd, sl_head_side side, const float *in, float *out, size_t n, int threads);
/* The validation's score of one group of held-out photos: n photos, summed reciprocal rank rr of
 * each photo's product among the catalog images (select.c). */
typedef struct sl__vscore {
    long long n;
    double rr;
} sl__vscore;
/* One candidate's validation result: seen and unseen scores, the standard error of its unseen
 * sum's paired difference from the identity's, valid = 0 when it could not be trained. */
typedef struct sl__cand_score {
    sl__vscore seen, unseen;
    double se;
    int valid;
} sl__cand_score;
/* select.c's rule: the candidate (index into c, most regularised first) chosen against the
 * identity's scores s0 (seen) and u0 (unseen), or -1 for the identity. Candidates significantly
 * worse than the identity on the unseen photos are inadmissible; of the others, the highest mean
 * of the seen and unseen mean reciprocal ranks wins if it beats the identity's (ties: the earlier). */
int sl__head_pick(sl__vscore s0, sl__vscore u0, const sl__cand_score *c, size_t n);
#endif
