/*
 * feature/sift/sift_avx512.c - SIFT inner loops compiled with -mavx512f -mavx512vl -mavx512bw and
 * 512-bit vectors preferred (src/feature/sift/module.cmake); only called after a CPU check
 * (sl__sift_kernels_get). The loops are in sift_kernels.h.
 */
#if defined(__x86_64__) || defined(__i386__)
#define SL__SIFT_SUFFIX avx512
#include "feature/sift/sift_kernels.h"
#else
typedef int sl__sift_avx512_unused;
#endif
