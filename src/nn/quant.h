/*
 * nn/quant.h - reduced precision of the engine's own convolutions (quant.c): calibration of
 * activation ranges on sample images, the range estimators, per-layer sensitivity and the choice
 * of layers kept at fp32, and the calibration record a store persists. Hooks for plan.c.
 */
#ifndef SL_NN_QUANT_H
#define SL_NN_QUANT_H

#include "nn/nn_internal.h"
#include "nn/dnnl_conv.h"

/* What was learned for one graph value (an input of a convolution). */
typedef struct sl__qrange {
    float amax;                /* clipping threshold of |x| chosen by the estimator (0: not observed) */
    int is_signed;             /* calibration saw negative values */
    int nch;                   /* > 0: per-channel thresholds (depthwise inputs) */
    float *ch;                 /* nch per-channel thresholds of |x| */
    float *chs;                /* the same as steps (threshold / 127 or / 255) */
} sl__qrange;

/* A model's calibration (owned by the sl_nn, m->calib). */
typedef struct sl__calib {
    size_t nvals;              /* m->nvals it was made for */
    sl__qrange *r;             /* per graph value */
    char *keep;                /* per graph node: SL__KEEP_* (0: runs at the reduced precision) */
    float *sens;               /* per graph node: measured sensitivity (mean 1 - cosine), -1 unmeasured */
    float *sens16;             /* int8: the same with the convolution alone at bf16, -1 unmeasured */
    int prec;                  /* the reduced precision it was made for (SL_NN_PRECISION_BF16 / _INT8) */
    int method;                /* SL_NN_CALIB_* */
    int images, sens_images;   /* images used for ranges / for the sensitivity */
    uint64_t seed;
    int synthetic;             /* made from the built-in synthetic images */
    double cos_mean, cos_min;  /* final check on the sensitivity images: embedding cosine to fp32 */
} sl__calib;

/* A convolution kept out of the reduced precision runs at fp32, or (int8 calibrations, on a CPU
 * with AVX-512-BF16 dot products; fp32 elsewhere) at bf16. */
#define SL__KEEP_FP32 1
#define SL__KEEP_BF16 2

void sl__calib_free(sl__calib *c);
/* The CPU has oneDNN bf16 convolutions with AVX-512-BF16 dot products (oneDNN's effective ISA,
 * which ONEDNN_MAX_CPU_ISA can cap); without, a bf16 convolution runs at fp32. */
int sl__quant_has_bf16(void);

/* A plan's view of the calibration: per graph node, 1 = the plan's reduced precision, 0 = fp32,
 * SL__KEEP_BF16 = bf16; NULL = the calibration's own choice. */
typedef struct sl__qsel {
    const sl__calib *cal;
    const char *only;
} sl__qsel;

/* The precision convolution graph node `node` runs at in a plan of precision prec, and for
 * int8 its input quantization (gin: the graph value it reads; is_input: that value is the graph
 * input, always quantized signed). */
int sl__quant_conv(const sl_nn *m, const sl__qsel *sel, int prec, int node, int gin, int is_input, sl__dq *q);
/* Makes sure a bf16 / int8 model has a calibration: when none was given (sl_nn_calibrate or a
 * stored record), calibrates on the built-in synthetic images. Called by plan.c under the model
 * lock; deterministic. */
sl_status sl__quant_ensure(const sl_nn *m, sl_error *err);

/* One line (or none for fp32) describing the calibration for sl_nn_info. */
void sl__quant_info(const sl_nn *m, char *buf, size_t n);

/* ---- plan.c services for calibration ------------------------------------------------------- */

/* Observes the float value every step produces (plan value v, its view t). */
typedef struct sl__observer {
    void (*fn)(void *u, const sl__plan *p, int v, const sl__tv *t);
    void *u;
} sl__observer;

/* A plan built with `threads` OpenMP threads per primitive (not cached in the model). */
sl_status sl__plan_new(const sl_nn *m, size_t batch, int prec, const sl__qsel *sel, int threads, sl__plan **out,
                       sl_error *err);
/* The same with int8 chains (chain 1, what sl__plan_new builds) or without (0: every int8
 * convolution quantizes its float input itself; tests compare the two). */
sl_status sl__plan_new_chain(const sl_nn *m, size_t batch, int prec, const sl__qsel *sel, int threads, int chain,
                             sl__plan **out, sl_error *err);
void sl__plan_delete(sl__plan *p);
/* Multiply-adds per image of the convolution graph node `node` runs in p (0 if p has none). */
int64_t sl__plan_conv_macs(const sl__plan *p, int node);
/* Runs p on `in` (p's batch of images) into out (the output value, logical layout) with a fresh
 * context, observing every step when obs is given; threads: OpenMP threads of the own kernels. */
sl_status sl__plan_run(sl__plan *p, const float *in, float *out, const sl__observer *obs, int threads, sl_error *err);
/* The graph value behind plan value v (through layout conversions); -1 for plan-only values. */
int sl__plan_source(const sl__plan *p, int v);

#endif
