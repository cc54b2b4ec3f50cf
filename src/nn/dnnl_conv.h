/*
 * nn/dnnl_conv.h - convolutions through oneDNN's C API (libdnnl): one primitive per
 * Conv node and batch size, channels-last fp32 activations, weights reordered once into the
 * layout the primitive prefers, fused activations and residual sum as post-ops, user-managed
 * scratchpad so one primitive serves concurrent callers. fp32, bf16 (input converted into
 * scratch) or int8 (input quantized into scratch with a calibrated scale, s8 weights).
 */
#ifndef SL_NN_DNNL_CONV_H
#define SL_NN_DNNL_CONV_H

#include "nn/nn_internal.h"

typedef struct sl__dconv sl__dconv;
typedef struct sl__dctx sl__dctx;

/* int8 quantization of a Conv's input (from calibration): scale and signedness. */
typedef struct sl__dq {
    float sx;                  /* real value of one quantization step of the input */
    int is_signed;             /* s8 input (calibration saw negative values) or u8 */
    const float *sxc;          /* depthwise convolutions: one step per channel (NULL: sx for all) */
} sl__dq;

/* Nonzero when oneDNN is usable (CPU engine created). */
int sl__dnnl_available(void);
/* Creates the primitive for node n (x: NHWC input view, w: weights, b: bias or NULL, y: NHWC
 * output view). precision: SL_NN_PRECISION_*; q: the input quantization for int8 (NULL:
 * fp32 convolution even in int8 mode); in_q: the input tensor is already stored quantized
 * (u8/s8 with q's step); oq: store the output quantized with that step (activations then
 * limited to Relu/Clip). *scratch = scratchpad bytes needed. */
sl_status sl__dconv_create(const sl__node *n, const sl__tv *x, const sl__tv *w, const sl__tv *b,
                           const sl__tv *y, int precision, const sl__dq *q, int in_q, const sl__dq *oq,
                           sl__dconv **out, size_t *scratch, sl_error *err);
void sl__dconv_free(sl__dconv *c);
/* Per-context bindings of step k to arena addresses. */
sl__dctx *sl__dctx_new(size_t nsteps);
int sl__dctx_bind(sl__dctx *d, size_t k, const sl__dconv *c, float *src, float *dst, void *scratch);
sl_status sl__dctx_exec(sl__dctx *d, size_t k, const sl__dconv *c, sl_error *err);
void sl__dctx_free(sl__dctx *d);
/* Bounds [lo, hi] of a fused Relu / Clip in the units the convolution's post-ops see: real
 * values (oq NULL), or steps of oq when the output is stored quantized; with one step per
 * channel (oq->sxc, nch channels) a bound must be 0, infinite, or applied in every channel by
 * the u8 / s8 conversion's saturation (then it is dropped). Returns 0 when it cannot be
 * expressed (other activations: 0 when oq is given). */
int sl__dq_act_bounds(const sl__actp *a, const sl__dq *oq, int64_t nch, float *lo, float *hi);
/* Short name of the implementation oneDNN picked (for `cnn info` / benchmarks). */
const char *sl__dconv_impl(const sl__dconv *c);

#endif
