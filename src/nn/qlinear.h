/*
 * nn/qlinear.h - the quantized ONNX operators (qlinear.c): QuantizeLinear, DequantizeLinear,
 * QLinearConv, QLinearMatMul and onnxruntime's com.microsoft QLinearAdd and
 * QLinearGlobalAveragePool, on uint8 / int8 tensors. Hooks called by graph.c (conversion),
 * ops.c (shape inference, kernels) and plan.c (oneDNN primitives, layouts).
 */
#ifndef SL_NN_QLINEAR_H
#define SL_NN_QLINEAR_H

#include "nn/nn_internal.h"

/* The engine operator for an ONNX (domain, op_type), or -1 when it is not a quantized operator.
 * *minin / *maxin: the accepted input counts. */
int sl__q_op(const char *domain, const char *op, int *minin, int *maxin);
/* Nonzero for the quantized operators. */
int sl__q_is(sl__op op);
/* Node attributes of a quantized operator (axis, channels_last; Conv attributes are read by
 * graph.c). */
sl_status sl__q_attrs(const sl__onnx_node *o, sl__node *n, int64_t opset, sl_error *err);

/* Bytes per element of a value type. */
size_t sl__dtype_size(int dtype);
/* The data pointer of a view (f, i or q by its type). */
void *sl__tv_data(const sl__tv *t);
/* Allocates the data of a constant value by its type (count elements, at least one). -1 on
 * out of memory. */
int sl__value_alloc(sl__value *v);
/* Name of a value type for messages ("float32", "uint8", "int8", "int64"). */
const char *sl__dtype_name(int dtype);

/* Shape inference of a quantized operator; checks every parameter (constant, type, length). */
sl_status sl__q_infer(const sl_nn *m, const sl__node *n, sl__value *vals, sl_error *err);
/* SL_E_UNSUPPORTED naming the input when an operator that computes on floats is given a uint8
 * or int8 tensor (only data movement - Reshape, Flatten, Squeeze, Unsqueeze, Identity, Concat,
 * Transpose, Gather, Shape, layout conversions - passes them through). */
sl_status sl__q_check_inputs(const sl__node *n, const sl__value *vals, sl_error *err);

/* Scratch bytes and execution of a quantized operator (own kernels, or the oneDNN primitive a
 * QLinearConv step was given by sl__q_prepare). */
size_t sl__q_scratch(const sl__node *n, sl__tv *const *in, const sl__tv *out);
sl_status sl__q_exec(const sl__node *n, sl__tv *const *in, sl__tv *out, void *scratch, int threads,
                     sl_error *err);

/* Plan time: gives a QLinearConv step its oneDNN int8 convolution when oneDNN can compute it
 * exactly (s8 weights after removing their zero point, VNNI or 7-bit weights with u8 input, see
 * qlinear.c); otherwise the step keeps the own kernel (n->qprim NULL). Other nodes: no-op.
 * Errors only for out of memory. */
sl_status sl__q_prepare(sl__node *n, sl__tv *const *in, const sl__tv *out, int backend, sl_error *err);
/* Frees what sl__q_prepare attached to a step's node. */
void sl__q_release(sl__node *n);
/* Nonzero when oneDNN's int8 kernels on this CPU have VNNI (u8 x s8 products summed in 32 bits);
 * without it pairs of products are summed in 16 bits with saturation. */
int sl__dnnl_has_vnni(void);

/* Converts a run's input floats to a uint8 / int8 input tensor (rounded to nearest even,
 * saturated) and a uint8 / int8 output tensor to floats. */
void sl__q_from_float(const float *x, size_t n, int dtype, uint8_t *y);
void sl__q_to_float(const uint8_t *x, size_t n, int dtype, float *y);

/* Embeddings: when the model's output tensor is quantized (made by a quantized operator with a
 * per-tensor scale, possibly reshaped), turns the n raw integer values sl_nn_run gives into the
 * real values they stand for, (q - zero point) * scale. Otherwise no-op. */
void sl__q_embed_dequant(const sl_nn *m, float *v, size_t n);

#endif
