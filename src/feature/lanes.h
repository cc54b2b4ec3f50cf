/*
 * feature/lanes.h - the fixed 16-lane summation shared by the vectorized float kernels of k-means
 * (squared distance) and PCA (centred projection).
 *
 * A kernel accumulates element i into lane i mod SL__LANES and ends with sl__lanes_sum: the
 * compiler vectorizes the lanes without reassociating anything (-std=c11 keeps FMA contraction
 * off), and the lanes are added in one fixed tree, so every build and ISA clone gives the same bits.
 */
#ifndef SL_FEATURE_LANES_H
#define SL_FEATURE_LANES_H
#include <stddef.h>

#define SL__LANES 16

/* Adds the lanes pairwise in a fixed tree (acc is overwritten) and returns the total. */
static inline float sl__lanes_sum(float acc[SL__LANES]) {
    for (size_t w = SL__LANES / 2; w > 0; w /= 2)
        for (size_t l = 0; l < w; l++) acc[l] += acc[l + w];
    return acc[0];
}

#endif
