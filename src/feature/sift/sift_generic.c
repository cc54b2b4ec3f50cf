/*
 * feature/sift/sift_generic.c - SIFT inner loops compiled for the baseline instruction set (any CPU).
 * The loops themselves are in sift_kernels.h.
 */
#define SL__SIFT_SUFFIX generic
#include "feature/sift/sift_kernels.h"
