/*
 * feature/sift/sift_internal.h - internal interface between the SIFT driver (sift.c), its image
 * front end (sift_image.c) and the SIMD-compiled kernels (sift_kernels.h included by
 * sift_generic.c, sift_avx2.c, sift_avx512.c). Not part of the public API.
 */
#ifndef SL_FEATURE_SIFT_INTERNAL_H
#define SL_FEATURE_SIFT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

typedef struct sl__sift_kernels {
    void (*blur_rows)(const float *src, float *dst, int w, int h, const float *k, int r,
                      float *tmp, int y0, int y1, float *dog);
    void (*extrema_row)(const float *const *rows, int x0, int x1, float thr, uint8_t *mask);
    void (*grad)(const float *dx, const float *dy, float *mag, float *ori, int n);
    void (*desc_spread)(const float *rb, const float *cb, const float *go, const float *gm,
                        const float *wt, float ang, int d, int nb, int n, int32_t *idx,
                        float *v01, float *v23, float *v45, float *v67);
    void (*dense_row)(const float *pv, const int32_t *cell, const float *w0, const float *w1,
                      int n, float *s);
} sl__sift_kernels;

extern const sl__sift_kernels sl__sift_kernels_generic;
#if defined(__x86_64__) || defined(__i386__)
extern const sl__sift_kernels sl__sift_kernels_avx2;
extern const sl__sift_kernels sl__sift_kernels_avx512;
#endif

/* The best kernel table this CPU runs. SL_SIFT_KERNELS=generic|avx2|avx512 in the environment
 * forces one (benchmarks, tests of the fallbacks); an unsupported choice is ignored. */
const sl__sift_kernels *sl__sift_kernels_get(void);
/* Name of the table sl__sift_kernels_get returns ("generic", "avx2", "avx512"). */
const char *sl__sift_kernels_name(void);

#endif
