/*
 * feature/sift/sift_avx2.c - SIFT inner loops compiled with -mavx2 -mfma (src/feature/sift/module.cmake);
 * only called after a CPU check (sl__sift_kernels_get). The loops are in sift_kernels.h.
 */
#if defined(__x86_64__) || defined(__i386__)
#define SL__SIFT_SUFFIX avx2
#include "feature/sift/sift_kernels.h"
#else
typedef int sl__sift_avx2_unused;
#endif
