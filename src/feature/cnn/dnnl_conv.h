/*
 * feature/cnn/dnnl_conv.h - convolutions through oneDNN's C API (libdnnl): one primitive per
 * Conv node and batch size, channels-last fp32 activations, weights reordered once into the
 * layout the primitive prefers, fused activations and residual sum as post-ops, user-managed
 * scratchpad so one primitive serves concurrent callers.
 */
#ifndef SL_CNN_DNNL_CONV_H
#define SL_CNN_DNNL_CONV_H

#include "feature/cnn/cnn_internal.h"

typedef struct sl__dconv sl__dconv;
typedef struct sl__dctx sl__dctx;

/* Nonzero when oneDNN is usable (CPU engine created). */
int sl__dnnl_available(void);
/* Creates the primitive for node n (x: NHWC input view, w: weights, b: bias or NULL, y: NHWC
 * output view). precision: SL_CNN_PRECISION_*. *scratch = scratchpad bytes needed. */
sl_status sl__dconv_create(const sl__node *n, const sl__tv *x, const sl__tv *w, const sl__tv *b,
                           const sl__tv *y, int precision, sl__dconv **out, size_t *scratch,
                           sl_error *err);
void sl__dconv_free(sl__dconv *c);
/* Per-context bindings of step k to arena addresses. */
sl__dctx *sl__dctx_new(size_t nsteps);
int sl__dctx_bind(sl__dctx *d, size_t k, const sl__dconv *c, float *src, float *dst, void *scratch);
sl_status sl__dctx_exec(sl__dctx *d, size_t k, const sl__dconv *c, sl_error *err);
void sl__dctx_free(sl__dctx *d);
/* Short name of the implementation oneDNN picked (for `cnn info` / benchmarks). */
const char *sl__dconv_impl(const sl__dconv *c);

#endif
