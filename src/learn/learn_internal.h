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
    size_t n_proto;     /* prototypes (0: none); <= SL_HEAD_PROTOTYPES_MAX */
    float beta, tau;    /* prototype weight (> 0 when n_proto) and softmax temperature */
    float *proto;       /* n_proto x dim, unit rows: the head's image of each trained product's
                           photos (NULL when n_proto = 0) */
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
/* Softmax of each of the m rows of p (m x k) in place (shift by the row's maximum, float exp,
 * double sum): the head's prototypes and the training loss use this one. */
void sl__softmax_rows(float *p, size_t m, size_t k);
/* Mixes n mapped, normalized rows y (n x dim) with the head's prototypes in place:
 * y = normalize(y + beta softmax(y P^T / tau) P). Nothing when the head has none. threads > 0:
 * thread-count independent products (mm.c); 0: OpenBLAS for blocks of 8 rows or more. -1 when out
 * of memory. */
int sl__head_mix(const sl_head *h, float *y, size_t n, int threads);
/* Gives h (which has none) the prototypes of dt's photos: each class with photos gets the
 * normalized sum of its photos mapped by h's query side; beta is their weight. Nothing (SL_OK)
 * when beta <= 0 or when there are more than SL_HEAD_PROTOTYPES_MAX such classes. */
sl_status sl__head_set_prototypes(sl_head *h, const sl_head_data *dt, float beta, int threads, sl_error *err);
/* Drops h's prototypes. */
void sl__head_drop_prototypes(sl_head *h);
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
