/*
 * feature/pca_internal.h - the layout of sl_pca, shared by pca.c and the pipeline's file I/O.
 */
#ifndef SL_FEATURE_PCA_INTERNAL_H
#define SL_FEATURE_PCA_INTERNAL_H
#include "shoplens/feature.h"

struct sl_pca {
    size_t in_dim, out_dim;
    float *mean;    /* in_dim */
    float *proj;    /* out_dim x in_dim, rows already scaled by the whitening factor */
    float *eigval;  /* out_dim variances, descending (informational) */
};

/* A zeroed sl_pca of the given shape, or NULL (overflow / out of memory). */
sl_pca *sl__pca_alloc(size_t in_dim, size_t out_dim);
#endif
