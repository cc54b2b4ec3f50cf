/*
 * nn/qlinear.c - the quantized operators: ONNX QuantizeLinear / DequantizeLinear (opsets 10-21,
 * per tensor or per axis), QLinearConv, QLinearMatMul (opset 10), and onnxruntime's
 * com.microsoft QLinearAdd and QLinearGlobalAveragePool - what the ONNX model zoo's int8 models
 * (written by onnxruntime's quantization tool) use. Specification:
 * https://onnx.ai/onnx/operators/ and onnxruntime's docs/ContribOperators.md.
 *
 * Arithmetic (as onnxruntime computes it): a quantized tensor q with scale s and zero point z
 * stands for s * (q - z). QuantizeLinear: q = sat(round(x / s) + z). DequantizeLinear:
 * (q - z) * s. QLinearConv / QLinearMatMul: exact integer sums acc = sum (x - zx)(w - zw) (+ B),
 * then y = sat(round(acc * (sx * sw / sy)) + zy), sw per output channel / column.
 * QLinearAdd: y = sat(round((sa / sc)(a - za) + (sb / sc)(b - zb)) + zc). QLinearGlobalAveragePool:
 * y = sat(round((sum x - zx * S) * (sx / (sy * S))) + zy) over the S positions. round = to nearest,
 * ties to even (lrintf in the default rounding mode); sat = clamp to the type's range.
 *
 * Kernels: plain C (any layout the plan gives: channels-last or row-major views), and for
 * QLinearConv a oneDNN int8 convolution when it computes the same integers: weights s8 after
 * removing their zero point, the input zero point as oneDNN's source zero point (padding counts
 * as the zero point, i.e. real 0), int32 sums out; bias, scale, rounding and output zero point
 * are then applied by the own code (letting oneDNN requantize - scales in fused multiply-adds,
 * the zero point added before rounding - flipped about 1 in 10^5 values by one step against
 * onnxruntime, which then spread through the network). Without VNNI, oneDNN's int8
 * kernels add pairs of u8 x s8 products in 16 bits with saturation (vpmaddubsw) and scale s8
 * weights by 0.5 for s8 inputs, so there a oneDNN convolution is used only for u8 inputs with
 * 7-bit weights (|w| <= 63: a pair stays below 2^15); anything else runs the own kernel.
 *
 * Invariants: shape inference (sl__q_infer) has checked every parameter - constant, type,
 * length, positive finite scales - before a kernel runs, so kernels index only inside their views;
 * integer sums are exact, held as int32 like onnxruntime's (wrapping, never undefined).
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <oneapi/dnnl/dnnl.h>

#include "nn/qlinear.h"
#include "util/util.h"

/* Hot loops for AVX-512, AVX2 and baseline x86-64, picked at load (as in ops.c). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(SL_SANITIZE)
#define SL__QSIMD __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SL__QSIMD
#endif

/* ---- types and small helpers -------------------------------------------------------------- */

size_t sl__dtype_size(int dtype) {
    switch (dtype) {
    case SL__DT_I64: return 8;
    case SL__DT_U8: case SL__DT_S8: case SL__DT_Q8: return 1;
    default: return 4;
    }
}

void *sl__tv_data(const sl__tv *t) {
    if (t->dtype == SL__DT_I64) return t->i;
    if (t->dtype == SL__DT_U8 || t->dtype == SL__DT_S8) return t->q;
    return t->f;
}

int sl__value_alloc(sl__value *v) {
    size_t n = v->count ? v->count : 1;
    if (v->dtype == SL__DT_F32) return (v->f = sl__mallocarray(n, sizeof(float))) ? 0 : -1;
    if (v->dtype == SL__DT_U8 || v->dtype == SL__DT_S8) return (v->q = malloc(n)) ? 0 : -1;
    return (v->i = sl__mallocarray(n, sizeof(int64_t))) ? 0 : -1;
}

const char *sl__dtype_name(int dtype) {
    switch (dtype) {
    case SL__DT_F32: return "float32";
    case SL__DT_U8: return "uint8";
    case SL__DT_S8: return "int8";
    case SL__DT_I64: return "int64";
    default: return "int8 (chain)";
    }
}

static int is_q8(int dtype) { return dtype == SL__DT_U8 || dtype == SL__DT_S8; }

/* Element k of a uint8 / int8 / integer tensor. */
static inline int32_t qget(const sl__tv *t, size_t k) {
    if (t->dtype == SL__DT_U8) return t->q[k];
    if (t->dtype == SL__DT_S8) return (int8_t)t->q[k];
    return (int32_t)t->i[k];
}
/* Scale / zero point for index k (per-tensor parameters have one element). */
static inline float sc_at(const sl__tv *t, size_t k) { return t->f[t->count == 1 ? 0 : k]; }
static inline int32_t zp_at(const sl__tv *t, size_t k) { return t ? qget(t, t->count == 1 ? 0 : k) : 0; }

/* round to nearest even, add the zero point, saturate to the type (NaN -> zero point) */
static inline uint8_t qsat(float v, int32_t zp, int dtype) {
    int32_t lo = dtype == SL__DT_S8 ? -128 : 0, hi = dtype == SL__DT_S8 ? 127 : 255;
    if (!(v == v)) v = 0.0f;
    v = v > 1e9f ? 1e9f : v < -1e9f ? -1e9f : v;
    int32_t r = (int32_t)lrintf(v) + zp;
    r = r < lo ? lo : r > hi ? hi : r;
    return (uint8_t)(r & 0xff); /* int8: two's complement byte */
}

/* An integer sum as onnxruntime's int32 holds it (wrapping on overflow, without undefined
 * behaviour). */
static inline int32_t wrap32(int64_t v) { return (int32_t)(uint32_t)(uint64_t)v; }

void sl__q_from_float(const float *x, size_t n, int dtype, uint8_t *y) {
    for (size_t k = 0; k < n; k++) y[k] = qsat(x[k], 0, dtype);
}

void sl__q_to_float(const uint8_t *x, size_t n, int dtype, float *y) {
    for (size_t k = 0; k < n; k++) y[k] = dtype == SL__DT_S8 ? (float)(int8_t)x[k] : (float)x[k];
}

/* ---- operator table and attributes -------------------------------------------------------- */

static const struct {
    const char *name; sl__op op; int ms; int minin, maxin; /* ms: also in com.microsoft */
    const char *const pn[SL__MAX_IN];
} k_ops[] = {
    {"QuantizeLinear", SL__OP_QUANTIZE, 1, 2, 3, {"x", "y_scale", "y_zero_point"}},
    {"DequantizeLinear", SL__OP_DEQUANTIZE, 1, 2, 3, {"x", "x_scale", "x_zero_point"}},
    {"QLinearConv", SL__OP_QCONV, 0, 8, 9,
     {"x", "x_scale", "x_zero_point", "w", "w_scale", "w_zero_point", "y_scale", "y_zero_point", "B"}},
    {"QLinearMatMul", SL__OP_QMATMUL, 0, 8, 8,
     {"a", "a_scale", "a_zero_point", "b", "b_scale", "b_zero_point", "y_scale", "y_zero_point"}},
    {"QLinearAdd", SL__OP_QADD, 2, 7, 8,
     {"A", "A_scale", "A_zero_point", "B", "B_scale", "B_zero_point", "C_scale", "C_zero_point"}},
    {"QLinearGlobalAveragePool", SL__OP_QGAP, 2, 4, 5,
     {"X", "x_scale", "x_zero_point", "y_scale", "y_zero_point"}},
};
#define NQOPS (sizeof k_ops / sizeof k_ops[0])

int sl__q_op(const char *domain, const char *op, int *minin, int *maxin) {
    int std = !domain || !domain[0] || !strcmp(domain, "ai.onnx"), ms = domain && !strcmp(domain, "com.microsoft");
    for (size_t k = 0; k < NQOPS; k++) {
        if (strcmp(op, k_ops[k].name)) continue;
        /* ms 0: default domain only; 1: both; 2: com.microsoft only */
        if ((std && k_ops[k].ms != 2) || (ms && k_ops[k].ms != 0)) {
            *minin = k_ops[k].minin;
            *maxin = k_ops[k].maxin;
            return (int)k_ops[k].op;
        }
    }
    return -1;
}

int sl__q_is(sl__op op) { return op >= SL__OP_QUANTIZE && op <= SL__OP_QGAP; }

static const char *pname(const sl__node *n, int j) {
    for (size_t k = 0; k < NQOPS; k++)
        if (k_ops[k].op == n->op) return k_ops[k].pn[j] ? k_ops[k].pn[j] : "?";
    return "?";
}

sl_status sl__q_attrs(const sl__onnx_node *o, sl__node *n, int64_t opset, sl_error *err) {
    (void)opset;
    const sl__onnx_attr *a;
    const char *nm = o->name ? o->name : "";
    if (n->op == SL__OP_QUANTIZE || n->op == SL__OP_DEQUANTIZE) {
        a = sl__onnx_attr_find(o, "axis");
        n->axis = a ? a->i : 1;
        if ((a = sl__onnx_attr_find(o, "block_size")) && a->i != 0)
            return sl__err_set(err, SL_E_UNSUPPORTED, "node '%s' (%s): blocked quantization (block_size %lld)", nm,
                               o->op, (long long)a->i);
        if (n->op == SL__OP_QUANTIZE && (a = sl__onnx_attr_find(o, "output_dtype")) && a->i != 0) {
            if (a->i != SL__DT_U8 && a->i != SL__DT_S8)
                return sl__err_set(err, SL_E_UNSUPPORTED, "node '%s' (QuantizeLinear): output_dtype %lld (only "
                                   "uint8 = 2 and int8 = 3)", nm, (long long)a->i);
            n->qtype = (int)a->i;
        }
    } else if (n->op == SL__OP_QGAP) {
        a = sl__onnx_attr_find(o, "channels_last");
        n->clast = a && a->i != 0;
    }
    return SL_OK;
}

/* ---- shape inference and parameter checks --------------------------------------------------- */

static const sl__value *inp(const sl__node *n, const sl__value *vals, int j) {
    return j < n->nin && n->in[j] >= 0 ? &vals[n->in[j]] : NULL;
}

/* A scale: constant float32 scalar or 1-D with 1 or len (> 1) elements, each finite and > 0.
 * per: what one of len elements belongs to (for the message). */
static sl_status chk_scale(const sl__node *n, const sl__value *vals, int j, size_t len, const char *per,
                           sl_error *err) {
    const sl__value *v = inp(n, vals, j);
    if (!v) return sl__err_set(err, SL_E_CORRUPT, "missing input %s", pname(n, j));
    if (!v->is_const) return sl__err_set(err, SL_E_UNSUPPORTED, "%s must be a constant (an initializer)", pname(n, j));
    if (v->dtype != SL__DT_F32)
        return sl__err_set(err, SL_E_UNSUPPORTED, "%s is %s, expected float32", pname(n, j), sl__dtype_name(v->dtype));
    if (v->rank > 1 || (v->count != 1 && (len <= 1 || v->count != len))) {
        if (len > 1)
            return sl__err_set(err, SL_E_CORRUPT, "%s has %zu elements (rank %d), expected a scalar or 1 or %zu "
                               "(one per %s)", pname(n, j), v->count, v->rank, len, per);
        return sl__err_set(err, SL_E_CORRUPT, "%s has %zu elements (rank %d), expected a scalar", pname(n, j),
                           v->count, v->rank);
    }
    for (size_t k = 0; k < v->count; k++)
        if (!(v->f[k] > 0.0f) || !isfinite(v->f[k]))
            return sl__err_set(err, SL_E_CORRUPT, "%s[%zu] = %g is not a positive finite number", pname(n, j), k,
                               (double)v->f[k]);
    return SL_OK;
}

/* A zero point (may be absent): constant uint8 / int8 of type `want` (0: either), with as many
 * elements as the scale at input `sj`. */
static sl_status chk_zp(const sl__node *n, const sl__value *vals, int j, int want, int sj, sl_error *err) {
    const sl__value *v = inp(n, vals, j), *s = inp(n, vals, sj);
    if (!v) return SL_OK;
    if (!v->is_const) return sl__err_set(err, SL_E_UNSUPPORTED, "%s must be a constant (an initializer)", pname(n, j));
    if (!is_q8(v->dtype))
        return sl__err_set(err, SL_E_UNSUPPORTED, "%s is %s; zero points must be uint8 or int8", pname(n, j),
                           v->elem == 6 ? "int32" : sl__dtype_name(v->dtype));
    if (want && v->dtype != want)
        return sl__err_set(err, SL_E_CORRUPT, "%s is %s but the tensor it belongs to is %s", pname(n, j),
                           sl__dtype_name(v->dtype), sl__dtype_name(want));
    if (v->rank > 1 || v->count != s->count)
        return sl__err_set(err, SL_E_CORRUPT, "%s has %zu elements (rank %d) but %s has %zu", pname(n, j), v->count,
                           v->rank, pname(n, sj), s->count);
    return SL_OK;
}

/* A quantized tensor input: uint8 or int8. */
static sl_status chk_q(const sl__node *n, const sl__value *vals, int j, sl_error *err) {
    const sl__value *v = inp(n, vals, j);
    if (!v) return sl__err_set(err, SL_E_CORRUPT, "missing input %s", pname(n, j));
    if (!is_q8(v->dtype))
        return sl__err_set(err, SL_E_UNSUPPORTED, "%s is %s, expected uint8 or int8", pname(n, j),
                           v->elem == 6 ? "int32" : sl__dtype_name(v->dtype));
    return SL_OK;
}

/* Per-axis geometry: elements after the axis (inner) and its length. */
static sl_status axis_len(const sl__node *n, const sl__value *x, int64_t *ax, sl_error *err) {
    int r = x->rank;
    if (r == 0) { *ax = 0; return SL_OK; }
    if (n->axis < -r || n->axis >= r)
        return sl__err_set(err, SL_E_CORRUPT, "axis %lld out of range for rank %d", (long long)n->axis, r);
    *ax = n->axis < 0 ? n->axis + r : n->axis;
    return SL_OK;
}

static sl_status infer_qdq(const sl__node *n, sl__value *vals, sl__value *o, sl_error *err) {
    const sl__value *x = inp(n, vals, 0), *s = inp(n, vals, 1);
    sl_status st;
    int64_t ax = 0;
    size_t len = 1;
    /* the axis matters only for per-axis parameters (a per-tensor scale ignores it) */
    if (s && s->count > 1) {
        if ((st = axis_len(n, x, &ax, err))) return st;
        len = x->rank ? (size_t)x->dims[ax] : 1;
    }
    if (n->op == SL__OP_QUANTIZE) {
        if (x->dtype != SL__DT_F32)
            return sl__err_set(err, SL_E_UNSUPPORTED, "x is %s; only float32 input is supported", sl__dtype_name(x->dtype));
        const sl__value *z = inp(n, vals, 2);
        if ((st = chk_scale(n, vals, 1, len, "element of the axis", err)) || (st = chk_zp(n, vals, 2, n->qtype, 1, err)))
            return st;
        o->dtype = z ? z->dtype : n->qtype ? n->qtype : SL__DT_U8;
    } else {
        int i32 = x->dtype == SL__DT_I64 && x->is_const && x->elem == 6;
        if (!i32 && (st = chk_q(n, vals, 0, err))) return st;
        if ((st = chk_scale(n, vals, 1, len, "element of the axis", err))) return st;
        const sl__value *z = inp(n, vals, 2);
        if (i32 && z) {
            /* int32 input (a quantized bias): the zero point must be an int32 0 */
            if (!z->is_const || z->dtype != SL__DT_I64 || z->count != vals[n->in[1]].count)
                return sl__err_set(err, SL_E_UNSUPPORTED, "x_zero_point of an int32 x must be a constant int32 0");
            for (size_t k = 0; k < z->count; k++)
                if (z->i[k] != 0) return sl__err_set(err, SL_E_CORRUPT, "x_zero_point of an int32 x must be 0");
        } else if ((st = chk_zp(n, vals, 2, x->dtype, 1, err))) return st;
        o->dtype = SL__DT_F32;
    }
    return SL_OK;
}

/* Output shape through the float operator's rule (Conv, MatMul, Add) on the tensor inputs. */
static sl_status infer_as(const sl_nn *m, const sl__node *n, sl__op op, int a, int b, sl__value *vals,
                          sl_error *err) {
    sl__node t = *n;
    t.op = op;
    for (int j = 0; j < SL__MAX_IN; j++) t.in[j] = -1;
    t.in[0] = n->in[a];
    t.in[1] = n->in[b];
    t.nin = 2;
    t.sum_in = -1;
    t.npre = t.npost = 0;
    t.qtype = -1; /* shape only: the inputs are quantized on purpose */
    return sl__infer_shape(m, &t, vals, err);
}

sl_status sl__q_infer(const sl_nn *m, const sl__node *n, sl__value *vals, sl_error *err) {
    sl__value *o = &vals[n->out];
    const sl__value *x = inp(n, vals, 0);
    sl_status st = SL_OK;
    if (!x) return sl__err_set(err, SL_E_CORRUPT, "missing input %s", pname(n, 0));
    for (int j = 0; j < n->nin; j++)
        if (n->in[j] >= 0 && vals[n->in[j]].rank < 0) return sl__err_set(err, SL_E_CORRUPT, "inconsistent shapes: input shape unknown");
    switch (n->op) {
    case SL__OP_QUANTIZE: case SL__OP_DEQUANTIZE:
        o->rank = x->rank;
        memcpy(o->dims, x->dims, sizeof o->dims);
        o->count = x->count;
        return infer_qdq(n, vals, o, err);
    case SL__OP_QCONV: {
        if ((st = chk_q(n, vals, 0, err)) || (st = chk_q(n, vals, 3, err))) return st;
        const sl__value *w = inp(n, vals, 3), *zy = inp(n, vals, 7), *b = inp(n, vals, 8);
        if (!w->is_const) return sl__err_set(err, SL_E_UNSUPPORTED, "w must be a constant (an initializer)");
        if (x->rank != 4 || w->rank != 4)
            return sl__err_set(err, SL_E_UNSUPPORTED, "only 2-D convolutions (4-D x and w) are supported");
        size_t M = (size_t)w->dims[0];
        if ((st = chk_scale(n, vals, 1, 1, "", err)) || (st = chk_zp(n, vals, 2, x->dtype, 1, err)) ||
            (st = chk_scale(n, vals, 4, M, "output channel", err)) || (st = chk_zp(n, vals, 5, w->dtype, 4, err)) ||
            (st = chk_scale(n, vals, 6, 1, "", err)) || (st = chk_zp(n, vals, 7, 0, 6, err)))
            return st;
        if (b && (!b->is_const || b->dtype != SL__DT_I64 || b->rank != 1 || b->count != M))
            return sl__err_set(err, b && !b->is_const ? SL_E_UNSUPPORTED : SL_E_CORRUPT,
                               "B must be a constant int32 vector of %zu elements (one per output channel)", M);
        if ((st = infer_as(m, n, SL__OP_CONV, 0, 3, vals, err))) return st;
        o->dtype = zy ? zy->dtype : SL__DT_U8;
        return SL_OK;
    }
    case SL__OP_QMATMUL: {
        if ((st = chk_q(n, vals, 0, err)) || (st = chk_q(n, vals, 3, err))) return st;
        if ((st = infer_as(m, n, SL__OP_MATMUL, 0, 3, vals, err))) return st;
        const sl__value *b = inp(n, vals, 3), *zy = inp(n, vals, 7);
        size_t rows = x->rank == 2 ? (size_t)x->dims[0] : 1, cols = (size_t)b->dims[b->rank - 1];
        if ((st = chk_scale(n, vals, 1, rows, "row of a", err)) || (st = chk_zp(n, vals, 2, x->dtype, 1, err)) ||
            (st = chk_scale(n, vals, 4, cols, "column of b", err)) || (st = chk_zp(n, vals, 5, b->dtype, 4, err)) ||
            (st = chk_scale(n, vals, 6, rows, "row of a", err)) || (st = chk_zp(n, vals, 7, 0, 6, err)))
            return st;
        o->dtype = zy ? zy->dtype : SL__DT_U8;
        return SL_OK;
    }
    case SL__OP_QADD: {
        if ((st = chk_q(n, vals, 0, err)) || (st = chk_q(n, vals, 3, err))) return st;
        const sl__value *b = inp(n, vals, 3);
        if (b->dtype != x->dtype)
            return sl__err_set(err, SL_E_CORRUPT, "A is %s but B is %s", sl__dtype_name(x->dtype), sl__dtype_name(b->dtype));
        if ((st = chk_scale(n, vals, 1, 1, "", err)) || (st = chk_zp(n, vals, 2, x->dtype, 1, err)) ||
            (st = chk_scale(n, vals, 4, 1, "", err)) || (st = chk_zp(n, vals, 5, x->dtype, 4, err)) ||
            (st = chk_scale(n, vals, 6, 1, "", err)) || (st = chk_zp(n, vals, 7, x->dtype, 6, err)))
            return st;
        if ((st = infer_as(m, n, SL__OP_ADD, 0, 3, vals, err))) return st;
        o->dtype = x->dtype;
        return SL_OK;
    }
    case SL__OP_QGAP: {
        if ((st = chk_q(n, vals, 0, err))) return st;
        if (x->rank < 3) return sl__err_set(err, SL_E_CORRUPT, "inconsistent shapes: X needs rank >= 3");
        if ((st = chk_scale(n, vals, 1, 1, "", err)) || (st = chk_zp(n, vals, 2, x->dtype, 1, err)) ||
            (st = chk_scale(n, vals, 3, 1, "", err)) || (st = chk_zp(n, vals, 4, x->dtype, 3, err)))
            return st;
        o->rank = x->rank;
        memcpy(o->dims, x->dims, sizeof o->dims);
        for (int d = 1; d < x->rank; d++)
            if (n->clast ? d < x->rank - 1 : d >= 2) o->dims[d] = 1;
        o->count = 1;
        for (int d = 0; d < o->rank; d++) o->count *= (size_t)o->dims[d];
        o->dtype = x->dtype;
        return SL_OK;
    }
    default:
        return sl__err_set(err, SL_E_INTERNAL, "no shape rule for %s", sl__op_name(n->op));
    }
}

sl_status sl__q_check_inputs(const sl__node *n, const sl__value *vals, sl_error *err) {
    switch (n->op) {
    case SL__OP_IDENTITY: case SL__OP_FLATTEN: case SL__OP_RESHAPE: case SL__OP_SQUEEZE: case SL__OP_UNSQUEEZE:
    case SL__OP_CONCAT: case SL__OP_TRANSPOSE: case SL__OP_GATHER: case SL__OP_SHAPE: case SL__OP_TO_NHWC:
    case SL__OP_TO_PLAIN:
        return SL_OK;
    default: break;
    }
    if (sl__q_is(n->op) || n->qtype < 0) return SL_OK;
    for (int j = 0; j < n->nin; j++)
        if (n->in[j] >= 0 && is_q8(vals[n->in[j]].dtype))
            return sl__err_set(err, SL_E_UNSUPPORTED, "input %d is %s tensor; %s computes on float32 (dequantize "
                               "it first)", j + 1, vals[n->in[j]].dtype == SL__DT_S8 ? "an int8" : "a uint8",
                               sl__op_name(n->op));
    return SL_OK;
}

/* ---- kernels -------------------------------------------------------------------------------- */

/* QuantizeLinear / DequantizeLinear; per axis only on plain views (plan.c converts). */
static void qdq(const sl__node *n, sl__tv *const *in, sl__tv *out, int threads) {
    const sl__tv *x = in[0], *s = in[1], *z = n->nin > 2 ? in[2] : NULL;
    size_t inner = 1, len = 1, cnt = x->count;
    if (s->count > 1) {
        int64_t ax = n->axis < 0 ? n->axis + x->rank : n->axis;
        len = (size_t)x->dims[ax];
        for (int d = (int)ax + 1; d < x->rank; d++) inner *= (size_t)x->dims[d];
    }
    (void)threads;
    if (n->op == SL__OP_QUANTIZE) {
#pragma omp parallel for schedule(static) num_threads(threads) if (cnt > 65536)
        for (size_t k = 0; k < cnt; k++) {
            size_t c = (k / inner) % len;
            out->q[k] = qsat(x->f[k] / sc_at(s, c), zp_at(z, c), out->dtype);
        }
    } else {
#pragma omp parallel for schedule(static) num_threads(threads) if (cnt > 65536)
        for (size_t k = 0; k < cnt; k++) {
            size_t c = (k / inner) % len;
            out->f[k] = (float)(qget(x, k) - zp_at(z, c)) * sc_at(s, c);
        }
    }
}

/* QLinearConv, direct: every output element sums its window exactly; padding contributes 0. */
static void qconv(const sl__node *n, sl__tv *const *in, sl__tv *out, int threads) {
    const sl__tv *x = in[0], *w = in[3], *wz = n->nin > 5 ? in[5] : NULL, *B = n->nin > 8 ? in[8] : NULL;
    const sl__tv *xz = n->nin > 2 ? in[2] : NULL, *yz = n->nin > 7 ? in[7] : NULL;
    float xs = in[1]->f[0], ys = in[6]->f[0];
    int64_t N = x->dims[0], C = x->dims[1], H = x->dims[2], W = x->dims[3];
    int64_t CO = out->dims[1], OH = out->dims[2], OW = out->dims[3];
    int64_t G = n->group, cig = C / G, cog = CO / G, KH = w->dims[2], KW = w->dims[3];
    int64_t p[4], xst[4], yst[4];
    sl__conv_pads(n, H, W, (int)KH, (int)KW, p);
    sl__view_strides(x, xst);
    sl__view_strides(out, yst);
    int32_t zx = zp_at(xz, 0), zy = zp_at(yz, 0);
    (void)threads;
#pragma omp parallel for schedule(static) num_threads(threads) if (out->count > 4096)
    for (int64_t r = 0; r < N * OH; r++) {
        int64_t b = r / OH, oy = r % OH;
        for (int64_t ox = 0; ox < OW; ox++)
            for (int64_t co = 0; co < CO; co++) {
                int64_t g = co / cog, acc = B ? B->i[co] : 0;
                int32_t zw = zp_at(wz, (size_t)co);
                for (int64_t ci = 0; ci < cig; ci++)
                    for (int64_t ky = 0; ky < KH; ky++) {
                        int64_t iy = oy * n->sh - p[0] + ky * n->dh;
                        if (iy < 0 || iy >= H) continue;
                        for (int64_t kx = 0; kx < KW; kx++) {
                            int64_t ix = ox * n->sw - p[1] + kx * n->dw;
                            if (ix < 0 || ix >= W) continue;
                            int64_t xo = b * xst[0] + (g * cig + ci) * xst[1] + iy * xst[2] + ix * xst[3];
                            int32_t wv = qget(w, (size_t)(((co * cig + ci) * KH + ky) * KW + kx));
                            acc += (int64_t)(qget(x, (size_t)xo) - zx) * (wv - zw);
                        }
                    }
                float scale = xs * sc_at(in[4], (size_t)co) / ys;
                out->q[b * yst[0] + co * yst[1] + oy * yst[2] + ox * yst[3]] =
                    qsat((float)wrap32(acc) * scale, zy, out->dtype);
            }
    }
}

/* QLinearMatMul (row-major, numpy broadcasting of the batch dimensions). Scratch: acc, N sums;
 * bz, K x N values b - zb of the current batch matrix. */
static void qmatmul(const sl__node *n, sl__tv *const *in, sl__tv *o, int64_t *acc, int16_t *bzv) {
    const sl__tv *a = in[0], *b = in[3], *az = n->nin > 2 ? in[2] : NULL, *bz = n->nin > 5 ? in[5] : NULL;
    const sl__tv *yz = n->nin > 7 ? in[7] : NULL;
    int r = o->rank;
    int64_t M = o->dims[r - 2], N = o->dims[r - 1], K = a->dims[a->rank - 1];
    size_t batches = M > 0 && N > 0 ? o->count / (size_t)(M * N) : 0;
    int64_t idx[SL__NN_MAX_RANK] = {0};
    size_t prev_ob = SIZE_MAX;
    for (size_t q = 0; q < batches; q++) {
        size_t oa = 0, ob = 0, ma = 1, mb = 1;
        for (int d = r - 3; d >= 0; d--) {
            int da = d - (r - a->rank), db = d - (r - b->rank);
            if (da >= 0) { if (a->dims[da] != 1) oa += (size_t)idx[d] * ma; ma *= (size_t)a->dims[da]; }
            if (db >= 0) { if (b->dims[db] != 1) ob += (size_t)idx[d] * mb; mb *= (size_t)b->dims[db]; }
        }
        oa *= (size_t)(M * K);
        ob *= (size_t)(K * N);
        if (ob != prev_ob)
            for (int64_t k = 0; k < K; k++)
                for (int64_t j = 0; j < N; j++)
                    bzv[k * N + j] = (int16_t)(qget(b, ob + (size_t)(k * N + j)) - zp_at(bz, (size_t)j));
        prev_ob = ob;
        for (int64_t i = 0; i < M; i++) {
            int32_t za = zp_at(az, (size_t)i);
            memset(acc, 0, (size_t)N * sizeof *acc);
            for (int64_t k = 0; k < K; k++) {
                int64_t av = qget(a, oa + (size_t)(i * K + k)) - za;
                const int16_t *br = bzv + k * N;
                if (av)
                    for (int64_t j = 0; j < N; j++) acc[j] += av * br[j];
            }
            for (int64_t j = 0; j < N; j++) {
                float scale = sc_at(in[1], (size_t)i) * sc_at(in[4], (size_t)j) / sc_at(in[6], (size_t)i);
                o->q[q * (size_t)(M * N) + (size_t)(i * N + j)] = qsat((float)wrap32(acc[j]) * scale, zp_at(yz, (size_t)i), o->dtype);
            }
        }
        for (int d = r - 3; d >= 0; d--) { if (++idx[d] < o->dims[d]) break; idx[d] = 0; }
    }
}

/* QLinearAdd with numpy broadcasting, iterated in the output's physical order. */
static void qadd(const sl__node *n, sl__tv *const *in, sl__tv *o, int threads) {
    const sl__tv *a = in[0], *b = in[3];
    int32_t za = zp_at(n->nin > 2 ? in[2] : NULL, 0), zb = zp_at(n->nin > 5 ? in[5] : NULL, 0);
    int32_t zc = zp_at(n->nin > 7 ? in[7] : NULL, 0);
    float ra = in[1]->f[0] / in[6]->f[0], rb = in[4]->f[0] / in[6]->f[0];
    sl__bcast g;
    sl__bcast_init(&g, a, b, o);
    (void)threads;
#pragma omp parallel for schedule(static) num_threads(threads) if (o->count > 32768)
    for (int64_t q = 0; q < g.rows; q++) {
        int64_t oa, ob, oo;
        sl__bcast_row(&g, q, &oa, &ob, &oo);
        for (int64_t k = 0; k < g.inner; k++) {
            float v = ra * (float)(qget(a, (size_t)(oa + k * g.ia)) - za) + rb * (float)(qget(b, (size_t)(ob + k * g.ib)) - zb);
            o->q[oo + k] = qsat(v, zc, o->dtype);
        }
    }
}

/* QLinearGlobalAveragePool over the positions of each (image, channel); the input may be a
 * channels-last view (or channels_last data). acc: C sums. */
static void qgap(const sl__node *n, sl__tv *const *in, sl__tv *o, int64_t *acc) {
    const sl__tv *x = in[0];
    int32_t zx = zp_at(n->nin > 2 ? in[2] : NULL, 0), zy = zp_at(n->nin > 4 ? in[4] : NULL, 0);
    int r = x->rank;
    int64_t N = x->dims[0], C = n->clast ? x->dims[r - 1] : x->dims[1];
    size_t S = N > 0 && C > 0 ? x->count / (size_t)(N * C) : 0;
    float scale = in[1]->f[0] / (in[3]->f[0] * (float)S);
    int cl = n->clast || (x->nhwc && r == 4); /* channel is the fastest index in memory */
    for (int64_t b = 0; b < N; b++) {
        size_t base = (size_t)b * S * (size_t)C;
        for (int64_t c = 0; c < C; c++) acc[c] = 0;
        if (cl) {
            for (size_t s = 0; s < S; s++)
                for (int64_t c = 0; c < C; c++) acc[c] += qget(x, base + s * (size_t)C + (size_t)c);
        } else {
            for (int64_t c = 0; c < C; c++)
                for (size_t s = 0; s < S; s++) acc[c] += qget(x, base + (size_t)c * S + s);
        }
        for (int64_t c = 0; c < C; c++)
            o->q[b * C + c] = qsat((float)wrap32(acc[c] - (int64_t)zx * (int64_t)S) * scale, zy, o->dtype);
    }
}

/* ---- oneDNN QLinearConv ------------------------------------------------------------------------- */

/* The primitive computes the exact int32 sums sum (x - zx)(w - zw) into scratch (s32, NHWC);
 * requantization (bias, scale, rounding, zero point) is then the own kernel's arithmetic, so both
 * paths give the same bytes. */
typedef struct qprim {
    dnnl_primitive_t prim;
    dnnl_memory_t wmem, zpmem; /* zpmem: the source zero point when passed at run time */
    dnnl_memory_desc_t src_md, acc_md, scr_md;
    size_t scr_bytes;          /* oneDNN's scratchpad, rounded up to 64; the sums follow it */
    float *scale;              /* per output channel: sx * sw[c] / sy (as qconv() computes it) */
    int32_t *bias;             /* per output channel: B (0 without) */
} qprim;

static dnnl_engine_t g_qeng;
static pthread_once_t g_qonce = PTHREAD_ONCE_INIT;
static void qeng_init(void) {
    if (dnnl_engine_create(&g_qeng, dnnl_cpu, 0) != dnnl_success) g_qeng = NULL;
}

int sl__dnnl_has_vnni(void) {
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    return isa == dnnl_cpu_isa_avx2_vnni ||
           ((unsigned)isa & (unsigned)dnnl_cpu_isa_avx512_core_vnni) == (unsigned)dnnl_cpu_isa_avx512_core_vnni;
}

static void qprim_free(qprim *q) {
    if (!q) return;
    if (q->prim) dnnl_primitive_destroy(q->prim);
    if (q->wmem) dnnl_memory_destroy(q->wmem);
    if (q->zpmem) dnnl_memory_destroy(q->zpmem);
    free(q->scale);
    free(q->bias);
    free(q);
}

void sl__q_release(sl__node *n) {
    qprim_free(n->qprim);
    n->qprim = NULL;
}

/* Primitive descriptor for the convolution; runtime_zp: the source zero point is given at run
 * time (some oneDNN kernels take only that form). NULL when oneDNN has no such kernel. */
static dnnl_primitive_desc_t qconv_pd(const dnnl_convolution_desc_t *cd, int32_t zx, int runtime_zp) {
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    int32_t zpv = runtime_zp ? DNNL_RUNTIME_S32_VAL : zx;
    if (dnnl_primitive_attr_create(&attr) ||
        (zx && dnnl_primitive_attr_set_zero_points(attr, DNNL_ARG_SRC, 1, 0, &zpv)) ||
        dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) ||
        dnnl_primitive_desc_create(&pd, cd, attr, g_qeng, NULL) != dnnl_success)
        pd = NULL;
    if (attr) dnnl_primitive_attr_destroy(attr);
    return pd;
}

sl_status sl__q_prepare(sl__node *n, sl__tv *const *in, const sl__tv *out, int backend, sl_error *err) {
    n->qprim = NULL;
    if (n->op != SL__OP_QCONV || backend == SL_NN_BACKEND_REF) return SL_OK;
    pthread_once(&g_qonce, qeng_init);
    if (!g_qeng) return SL_OK;
    const sl__tv *x = in[0], *w = in[3], *wz = n->nin > 5 ? in[5] : NULL;
    int64_t G = n->group, OC = out->dims[1], IC = x->dims[1], KH = w->dims[2], KW = w->dims[3];
    size_t per = w->count / (size_t)OC;
    int vnni = sl__dnnl_has_vnni(), maxabs = 0;
    int8_t *w8 = malloc(w->count ? w->count : 1);
    qprim *q = calloc(1, sizeof *q);
    sl_status st = SL_OK;
    dnnl_primitive_desc_t pd = NULL, rpd = NULL;
    dnnl_primitive_t reo = NULL;
    dnnl_memory_t wusr = NULL;
    dnnl_stream_t stream = NULL;
    if (!w8 || !q || !(q->scale = sl__mallocarray((size_t)OC, sizeof(float))) ||
        !(q->bias = sl__mallocarray((size_t)OC, sizeof(int32_t)))) {
        st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        goto done;
    }
    const sl__tv *B = n->nin > 8 ? in[8] : NULL;
    for (int64_t o = 0; o < OC; o++) {
        q->scale[o] = in[1]->f[0] * sc_at(in[4], (size_t)o) / in[6]->f[0];
        q->bias[o] = B ? wrap32(B->i[o]) : 0;
    }
    int ok = 1;
    for (int64_t o = 0; o < OC && ok; o++) {
        int32_t z = zp_at(wz, (size_t)o);
        for (size_t j = 0; j < per; j++) {
            int32_t v = qget(w, (size_t)o * per + j) - z;
            if (v < -128 || v > 127) { ok = 0; break; }
            w8[(size_t)o * per + j] = (int8_t)v;
            if (abs(v) > maxabs) maxabs = abs(v);
        }
    }
    /* without VNNI only u8 inputs with 7-bit weights are exact in oneDNN (header comment) */
    if (!ok || (!vnni && (x->dtype != SL__DT_U8 || maxabs > 63))) goto done;
    int32_t zx = zp_at(n->nin > 2 ? in[2] : NULL, 0);
    dnnl_dims_t sd = {x->dims[0], IC, x->dims[2], x->dims[3]}, dd = {out->dims[0], OC, out->dims[2], out->dims[3]};
    dnnl_dims_t wd5 = {G, OC / G, IC / G, KH, KW}, wd4 = {OC, IC, KH, KW};
    dnnl_dims_t strides = {n->sh, n->sw}, dil = {n->dh - 1, n->dw - 1}, pl, pr;
    int64_t p[4];
    sl__conv_pads(n, x->dims[2], x->dims[3], (int)KH, (int)KW, p);
    pl[0] = p[0]; pl[1] = p[1]; pr[0] = p[2]; pr[1] = p[3];
    dnnl_memory_desc_t wany, wuser;
    dnnl_convolution_desc_t cd;
    if (dnnl_memory_desc_init_by_tag(&q->src_md, 4, sd, x->dtype == SL__DT_S8 ? dnnl_s8 : dnnl_u8, dnnl_nhwc) ||
        dnnl_memory_desc_init_by_tag(&q->acc_md, 4, dd, dnnl_s32, dnnl_nhwc) ||
        dnnl_memory_desc_init_by_tag(&wany, G > 1 ? 5 : 4, G > 1 ? wd5 : wd4, dnnl_s8, dnnl_format_tag_any) ||
        dnnl_memory_desc_init_by_tag(&wuser, G > 1 ? 5 : 4, G > 1 ? wd5 : wd4, dnnl_s8, G > 1 ? dnnl_goihw : dnnl_oihw) ||
        dnnl_dilated_convolution_forward_desc_init(&cd, dnnl_forward_inference, dnnl_convolution_direct, &q->src_md,
                                                   &wany, NULL, &q->acc_md, strides, dil, pl, pr))
        goto done;
    int runtime_zp = 0;
    if (!(pd = qconv_pd(&cd, zx, 0)) && zx) pd = qconv_pd(&cd, zx, runtime_zp = 1);
    if (!pd) goto done;
    const dnnl_memory_desc_t *wmd = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    q->scr_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    q->scr_bytes = (dnnl_memory_desc_get_size(&q->scr_md) + 63) / 64 * 64;
    dnnl_status_t s;
    if ((s = dnnl_primitive_create(&q->prim, pd)) || (s = dnnl_memory_create(&q->wmem, wmd, g_qeng, DNNL_MEMORY_ALLOCATE)) ||
        (s = dnnl_memory_create(&wusr, &wuser, g_qeng, w8)) ||
        (s = dnnl_reorder_primitive_desc_create(&rpd, &wuser, g_qeng, wmd, g_qeng, NULL)) ||
        (s = dnnl_primitive_create(&reo, rpd)) || (s = dnnl_stream_create(&stream, g_qeng, dnnl_stream_default_flags))) {
        if (s == dnnl_out_of_memory) st = sl__err_set(err, SL_E_NOMEM, "out of memory (oneDNN QLinearConv)");
        goto done;
    }
    dnnl_exec_arg_t ra[2] = {{DNNL_ARG_FROM, wusr}, {DNNL_ARG_TO, q->wmem}};
    if (dnnl_primitive_execute(reo, stream, 2, ra) || dnnl_stream_wait(stream)) goto done;
    if (runtime_zp) {
        dnnl_memory_desc_t zmd;
        dnnl_dims_t zd = {1};
        void *zp = NULL;
        if (dnnl_memory_desc_init_by_tag(&zmd, 1, zd, dnnl_s32, dnnl_x) ||
            dnnl_memory_create(&q->zpmem, &zmd, g_qeng, DNNL_MEMORY_ALLOCATE) || dnnl_memory_get_data_handle(q->zpmem, &zp))
            goto done;
        memcpy(zp, &zx, sizeof zx);
    }
    n->qprim = q;
    q = NULL;
done:
    if (q) qprim_free(q);
    if (stream) dnnl_stream_destroy(stream);
    if (reo) dnnl_primitive_destroy(reo);
    if (rpd) dnnl_primitive_desc_destroy(rpd);
    if (wusr) dnnl_memory_destroy(wusr);
    if (pd) dnnl_primitive_desc_destroy(pd);
    free(w8);
    return st;
}

/* One pixel's channels: y = sat(round((acc + bias) * scale) + zy), as qsat() computes it (the
 * value is clamped first to the integer bounds minus zy, which commutes with rounding; the sum
 * of two int32 cannot give a NaN). */
SL__QSIMD static void requant_row(const int32_t *restrict acc, const int32_t *restrict bias,
                                  const float *restrict scale, int64_t C, int32_t zy, int dtype,
                                  uint8_t *restrict y) {
    float lo = (float)((dtype == SL__DT_S8 ? -128 : 0) - zy), hi = (float)((dtype == SL__DT_S8 ? 127 : 255) - zy);
    for (int64_t c = 0; c < C; c++) {
        float f = (float)(int32_t)((uint32_t)acc[c] + (uint32_t)bias[c]) * scale[c];
        f = f > hi ? hi : f;
        f = f < lo ? lo : f;
        y[c] = (uint8_t)(((int32_t)rintf(f) + zy) & 0xff);
    }
}

/* Runs the primitive into scratch (after its scratchpad), then requantizes like qconv(). */
static sl_status qprim_exec(const sl__node *n, sl__tv *const *in, sl__tv *y, void *scratch, int threads,
                            sl_error *err) {
    const qprim *q = n->qprim;
    const sl__tv *yz = n->nin > 7 ? in[7] : NULL;
    int32_t *acc = (int32_t *)(void *)((char *)scratch + q->scr_bytes);
    dnnl_stream_t stream = NULL;
    dnnl_memory_t src = NULL, dst = NULL, scr = NULL;
    dnnl_status_t s;
    if ((s = dnnl_stream_create(&stream, g_qeng, dnnl_stream_default_flags)) ||
        (s = dnnl_memory_create(&src, &q->src_md, g_qeng, in[0]->q)) ||
        (s = dnnl_memory_create(&dst, &q->acc_md, g_qeng, acc)) ||
        (s = dnnl_memory_create(&scr, &q->scr_md, g_qeng, q->scr_bytes ? scratch : DNNL_MEMORY_NONE))) {
    } else {
        dnnl_exec_arg_t a[5] = {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, q->wmem}, {DNNL_ARG_DST, dst},
                                {DNNL_ARG_SCRATCHPAD, scr}, {DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_SRC, q->zpmem}};
        if (!(s = dnnl_primitive_execute(q->prim, stream, q->zpmem ? 5 : 4, a))) s = dnnl_stream_wait(stream);
    }
    if (src) dnnl_memory_destroy(src);
    if (dst) dnnl_memory_destroy(dst);
    if (scr) dnnl_memory_destroy(scr);
    if (stream) dnnl_stream_destroy(stream);
    if (s) return sl__err_set(err, s == dnnl_out_of_memory ? SL_E_NOMEM : SL_E_INTERNAL, "oneDNN QLinearConv failed (status %d)",
                              (int)s);
    int64_t C = y->dims[1], pix = (int64_t)(y->count / (size_t)C), yst[4];
    sl__view_strides(y, yst);
    int32_t zy = zp_at(yz, 0);
    (void)threads;
    if (y->nhwc || C == 1 || y->dims[2] * y->dims[3] == 1) { /* output bytes in the sums' order */
#pragma omp parallel for schedule(static) num_threads(threads) if (y->count > 65536)
        for (int64_t px = 0; px < pix; px++)
            requant_row(acc + px * C, q->bias, q->scale, C, zy, y->dtype, y->q + px * C);
        return SL_OK;
    }
#pragma omp parallel for schedule(static) num_threads(threads) if (y->count > 65536)
    for (int64_t px = 0; px < pix; px++) {
        /* acc is NHWC: pixel px = (b, oy, ox) in row-major order */
        int64_t b = px / (y->dims[2] * y->dims[3]), oy = px / y->dims[3] % y->dims[2], ox = px % y->dims[3];
        for (int64_t c = 0; c < C; c++) {
            int64_t v = (int64_t)acc[px * C + c] + q->bias[c];
            y->q[b * yst[0] + c * yst[1] + oy * yst[2] + ox * yst[3]] = qsat((float)wrap32(v) * q->scale[c], zy, y->dtype);
        }
    }
    return SL_OK;
}

/* ---- embeddings of quantized tensors ------------------------------------------------------------ */

void sl__q_embed_dequant(const sl_nn *m, float *v, size_t n) {
    int x = m->output;
    /* through data movement back to the quantized operator that made the tensor */
    while (x >= 0 && m->vals[x].producer >= 0) {
        const sl__node *p = &m->nodes[m->vals[x].producer];
        int si = -1;
        switch (p->op) {
        case SL__OP_RESHAPE: case SL__OP_FLATTEN: case SL__OP_SQUEEZE: case SL__OP_UNSQUEEZE: case SL__OP_IDENTITY:
            x = p->in[0];
            continue;
        case SL__OP_QUANTIZE: si = 1; break;
        case SL__OP_QCONV: case SL__OP_QMATMUL: case SL__OP_QADD: si = 6; break;
        case SL__OP_QGAP: si = 3; break;
        default: return;
        }
        const sl__value *s = &m->vals[p->in[si]], *z = si + 1 < p->nin && p->in[si + 1] >= 0 ? &m->vals[p->in[si + 1]] : NULL;
        if (!s->is_const || s->dtype != SL__DT_F32 || s->count != 1) return;
        int32_t zp = z && z->count == 1 && z->q ? (z->dtype == SL__DT_S8 ? (int8_t)z->q[0] : z->q[0]) : 0;
        for (size_t k = 0; k < n; k++) v[k] = (v[k] - (float)zp) * s->f[0];
        return;
    }
}

/* ---- dispatch ------------------------------------------------------------------------------------ */

size_t sl__q_scratch(const sl__node *n, sl__tv *const *in, const sl__tv *out) {
    if (n->op == SL__OP_QCONV && n->qprim) return ((const qprim *)n->qprim)->scr_bytes + out->count * sizeof(int32_t);
    if (n->op == SL__OP_QMATMUL) { /* sums, then b - zb (K x N int16) */
        size_t N = (size_t)out->dims[out->rank - 1], K = (size_t)in[0]->dims[in[0]->rank - 1];
        return N * sizeof(int64_t) + K * N * sizeof(int16_t);
    }
    if (n->op == SL__OP_QGAP) {
        const sl__tv *x = in[0];
        return (size_t)(n->clast ? x->dims[x->rank - 1] : x->dims[1]) * sizeof(int64_t);
    }
    return 0;
}

sl_status sl__q_exec(const sl__node *n, sl__tv *const *in, sl__tv *out, void *scratch, int threads,
                     sl_error *err) {
    switch (n->op) {
    case SL__OP_QUANTIZE: case SL__OP_DEQUANTIZE: qdq(n, in, out, threads); return SL_OK;
    case SL__OP_QCONV:
        if (n->qprim) return qprim_exec(n, in, out, scratch, threads, err);
        qconv(n, in, out, threads);
        return SL_OK;
    case SL__OP_QMATMUL:
        qmatmul(n, in, out, scratch, (int16_t *)(void *)((int64_t *)scratch + out->dims[out->rank - 1]));
        return SL_OK;
    case SL__OP_QADD: qadd(n, in, out, threads); return SL_OK;
    case SL__OP_QGAP: qgap(n, in, out, scratch); return SL_OK;
    default: return sl__err_set(err, SL_E_INTERNAL, "no kernel for %s", sl__op_name(n->op));
    }
}
