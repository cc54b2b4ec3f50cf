/*
 * nn/ops.c - shape inference and the reference kernels of every operator, following
 * the ONNX operator specification (https://onnx.ai/onnx/operators/, opsets 7-17).
 *
 * Layout: a rank-4 float tensor view may be channels-last (`nhwc`); Conv, BatchNormalization,
 * pools, GlobalAveragePool, the element-wise operators and channel Concat handle it natively;
 * every other operator receives plain row-major views (plan.c converts). Convolution is im2col
 * (contiguous runs of input channels, weights pre-arranged OHWI at load) + one sgemm over the
 * whole batch per group (oneDNN's JIT sgemm, or OpenBLAS for the reference backend), a plain
 * GEMM without im2col for 1x1/stride-1 convolutions, and a direct channel-vectorized loop with
 * HWC weights for depthwise convolutions. Threads: OpenMP, `threads` per call. Fused activations and the fused residual sum
 * are applied in the order graph.c recorded them.
 *
 * Invariants: kernels never allocate (scratch comes from the caller, sized by sl__op_scratch);
 * shape inference rejects every inconsistent shape with SL_E_CORRUPT before a kernel runs, so
 * kernels index only inside their views.
 */
#include <cblas.h>
#include <oneapi/dnnl/dnnl.h>
#include <math.h>
#include <string.h>

#include "nn/nn_internal.h"
#include "util/util.h"

/* Hot loops are compiled for AVX-512, AVX2 and baseline x86-64 and picked at load time (GCC
 * function multiversioning), so the binary stays portable. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(SL_SANITIZE)
#define SL__SIMD __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SL__SIMD
#endif

/* ---- shape inference --------------------------------------------------------------------- */

static sl_status shp_err(sl_error *err, const char *what) {
    return sl__err_set(err, SL_E_CORRUPT, "inconsistent shapes: %s", what);
}

static int set_count(sl__value *o) {
    size_t c = 1;
    for (int d = 0; d < o->rank; d++) {
        if (o->dims[d] < 0 || sl__mul_size(c, (size_t)o->dims[d], &c)) return -1;
    }
    if (c > ((size_t)1 << 34)) return -1;
    o->count = c;
    return 0;
}

/* Effective pads (top, left, bottom, right) for spatial input (ih, iw), auto_pad resolved. */
void sl__conv_pads(const sl__node *n, int64_t ih, int64_t iw, int kh, int kw, int64_t p[4]) {
    p[0] = n->pt; p[1] = n->pl; p[2] = n->pb; p[3] = n->pr;
    if (n->auto_pad == 3) { p[0] = p[1] = p[2] = p[3] = 0; return; }
    if (n->auto_pad == 1 || n->auto_pad == 2) {
        int64_t in[2] = {ih, iw}, s[2] = {n->sh, n->sw}, d[2] = {n->dh, n->dw}, k[2] = {kh, kw};
        for (int a = 0; a < 2; a++) {
            int64_t o = (in[a] + s[a] - 1) / s[a];
            int64_t tot = (o - 1) * s[a] + d[a] * (k[a] - 1) + 1 - in[a];
            if (tot < 0) tot = 0;
            int64_t small = tot / 2, big = tot - small;
            p[a] = n->auto_pad == 1 ? small : big;
            p[a + 2] = n->auto_pad == 1 ? big : small;
        }
    }
}

static int64_t out_extent(int64_t in, int64_t pb, int64_t pe, int k, int d, int s, int ceil_mode) {
    int64_t span = in + pb + pe - (int64_t)d * (k - 1) - 1;
    if (span < 0) return -1;
    int64_t o = (ceil_mode ? (span + s - 1) / s : span / s) + 1;
    if (ceil_mode && (o - 1) * s >= in + pb) o--;
    return o;
}

static int norm_axis(int64_t a, int rank, int64_t *out) {
    if (a < -rank || a >= rank) return -1;
    *out = a < 0 ? a + rank : a;
    return 0;
}

/* Axes from attribute or a constant second input. Returns count or -1. */
static int get_axes(const sl__node *n, const sl__value *vals, int64_t *axes) {
    if (n->has_axes) { memcpy(axes, n->axes, sizeof(int64_t) * (size_t)n->naxes); return n->naxes; }
    if (n->nin >= 2 && n->in[1] >= 0) {
        const sl__value *a = &vals[n->in[1]];
        if (!a->is_const || a->dtype != SL__DT_I64 || a->count > SL__NN_MAX_RANK) return -1;
        memcpy(axes, a->i, sizeof(int64_t) * a->count);
        return (int)a->count;
    }
    return 0;
}

sl_status sl__infer_shape(const sl_nn *m, const sl__node *n, sl__value *vals, sl_error *err) {
    (void)m;
    sl__value *o = &vals[n->out];
    const sl__value *a = n->in[0] >= 0 ? &vals[n->in[0]] : NULL;
    const sl__value *b = n->nin > 1 && n->in[1] >= 0 ? &vals[n->in[1]] : NULL;
    if (!a) return shp_err(err, "missing first input");
    for (int j = 0; j < n->nin; j++)
        if (n->in[j] >= 0 && vals[n->in[j]].rank < 0) return shp_err(err, "input shape unknown");
    o->dtype = SL__DT_F32;
    o->rank = a->rank;
    memcpy(o->dims, a->dims, sizeof o->dims);
    int r = a->rank;
    switch (n->op) {
    case SL__OP_CONV: {
        if (r != 4 || !b || b->rank != 4 || !b->is_const) return shp_err(err, "Conv needs 4-D input and constant 4-D weight");
        int64_t ci = a->dims[1], co = b->dims[0];
        int kh = (int)b->dims[2], kw = (int)b->dims[3];
        if (n->kh && (n->kh != kh || n->kw != kw)) return shp_err(err, "Conv kernel_shape differs from weight");
        if (co % n->group || ci != b->dims[1] * n->group || co <= 0) return shp_err(err, "Conv channels / group");
        if (n->nin > 2 && n->in[2] >= 0) {
            const sl__value *bi = &vals[n->in[2]];
            if (!bi->is_const || bi->count != (size_t)co) return shp_err(err, "Conv bias");
        }
        int64_t p[4];
        sl__conv_pads(n, a->dims[2], a->dims[3], kh, kw, p);
        o->dims[1] = co;
        o->dims[2] = out_extent(a->dims[2], p[0], p[2], kh, n->dh, n->sh, 0);
        o->dims[3] = out_extent(a->dims[3], p[1], p[3], kw, n->dw, n->sw, 0);
        if (o->dims[2] <= 0 || o->dims[3] <= 0) return shp_err(err, "Conv output is empty");
        if (n->sum_in >= 0) {
            const sl__value *s = &vals[n->sum_in];
            if (s->rank != 4 || memcmp(s->dims, o->dims, 4 * sizeof(int64_t))) return shp_err(err, "fused sum shape");
        }
        break;
    }
    case SL__OP_MAXPOOL: case SL__OP_AVGPOOL: {
        if (r != 4) return shp_err(err, "pooling needs 4-D input");
        int64_t p[4];
        sl__conv_pads(n, a->dims[2], a->dims[3], n->kh, n->kw, p);
        int dh = n->op == SL__OP_MAXPOOL ? n->dh : 1, dw = n->op == SL__OP_MAXPOOL ? n->dw : 1;
        o->dims[2] = out_extent(a->dims[2], p[0], p[2], n->kh, dh, n->sh, n->ceil_mode);
        o->dims[3] = out_extent(a->dims[3], p[1], p[3], n->kw, dw, n->sw, n->ceil_mode);
        if (o->dims[2] <= 0 || o->dims[3] <= 0) return shp_err(err, "pool output is empty");
        if (p[0] >= n->kh * dh || p[2] >= n->kh * dh || p[1] >= n->kw * dw || p[3] >= n->kw * dw)
            return shp_err(err, "pool padding larger than the kernel");
        break;
    }
    case SL__OP_GAP:
        if (r < 3) return shp_err(err, "GlobalAveragePool needs rank >= 3");
        for (int d = 2; d < r; d++) o->dims[d] = 1;
        break;
    case SL__OP_BN:
        if (r < 2) return shp_err(err, "BatchNormalization needs rank >= 2");
        for (int j = 1; j < 5; j++) {
            const sl__value *p = &vals[n->in[j]];
            if (!p->is_const || p->dtype != SL__DT_F32 || p->count != (size_t)a->dims[1])
                return shp_err(err, "BatchNormalization parameters must be constant, one per channel");
        }
        break;
    case SL__OP_RELU: case SL__OP_SIGMOID: case SL__OP_HSIGMOID: case SL__OP_HSWISH:
    case SL__OP_SWISH: case SL__OP_TO_NHWC: case SL__OP_TO_PLAIN:
        if (a->dtype != SL__DT_F32) return shp_err(err, "float input expected");
        break;
    case SL__OP_CLIP:
        for (int j = 1; j < n->nin; j++)
            if (n->in[j] >= 0 && (!vals[n->in[j]].is_const || vals[n->in[j]].count != 1))
                return shp_err(err, "Clip bounds must be constant scalars");
        break;
    case SL__OP_IDENTITY:
        o->dtype = a->dtype;
        break;
    case SL__OP_ADD: case SL__OP_SUB: case SL__OP_MUL: case SL__OP_DIV: {
        if (!b) return shp_err(err, "binary op needs two inputs");
        if (a->dtype != b->dtype) return shp_err(err, "binary operands differ in type");
        o->dtype = a->dtype;
        int rr = a->rank > b->rank ? a->rank : b->rank;
        o->rank = rr;
        for (int d = 0; d < rr; d++) {
            int da = d - (rr - a->rank), db = d - (rr - b->rank);
            int64_t x = da >= 0 ? a->dims[da] : 1, y = db >= 0 ? b->dims[db] : 1;
            if (x != y && x != 1 && y != 1) return shp_err(err, "operands do not broadcast");
            o->dims[d] = x == 1 ? y : x;
        }
        break;
    }
    case SL__OP_FLATTEN: {
        /* axis in [-r, r]; a negative one counts from the back: -r is 0 (not r + 1 - r) */
        int64_t ax = n->axis < 0 ? n->axis + r : n->axis;
        if (ax < 0 || ax > r) return shp_err(err, "Flatten axis");
        int64_t p = 1, q = 1;
        for (int d = 0; d < r; d++) { if (d < ax) p *= a->dims[d]; else q *= a->dims[d]; }
        o->rank = 2; o->dims[0] = p; o->dims[1] = q;
        o->dtype = a->dtype;
        break;
    }
    case SL__OP_GEMM: {
        if (r != 2 || !b || b->rank != 2) return shp_err(err, "Gemm needs 2-D operands");
        int64_t M = n->trans_a ? a->dims[1] : a->dims[0], K = n->trans_a ? a->dims[0] : a->dims[1];
        int64_t K2 = n->trans_b ? b->dims[1] : b->dims[0], N = n->trans_b ? b->dims[0] : b->dims[1];
        if (K != K2) return shp_err(err, "Gemm inner dimensions differ");
        o->dims[0] = M; o->dims[1] = N;
        if (n->nin > 2 && n->in[2] >= 0) {
            const sl__value *c = &vals[n->in[2]];
            if (c->rank > 2) return shp_err(err, "Gemm C rank");
            int64_t c0 = c->rank == 2 ? c->dims[0] : 1, c1 = c->rank >= 1 ? c->dims[c->rank - 1] : 1;
            if ((c0 != 1 && c0 != M) || (c1 != 1 && c1 != N)) return shp_err(err, "Gemm C does not broadcast");
        }
        break;
    }
    case SL__OP_MATMUL: {
        if (!b || r < 1 || b->rank < 1) return shp_err(err, "MatMul operands");
        if (r < 2 || b->rank < 2) return sl__err_set(err, SL_E_UNSUPPORTED, "MatMul with 1-D operands");
        if (a->dims[r - 1] != b->dims[b->rank - 2]) return shp_err(err, "MatMul inner dimensions differ");
        int rr = r > b->rank ? r : b->rank;
        o->rank = rr;
        for (int d = 0; d < rr - 2; d++) {
            int da = d - (rr - r), db = d - (rr - b->rank);
            int64_t x = da >= 0 ? a->dims[da] : 1, y = db >= 0 ? b->dims[db] : 1;
            if (x != y && x != 1 && y != 1) return shp_err(err, "MatMul batch dims do not broadcast");
            o->dims[d] = x == 1 ? y : x;
        }
        o->dims[rr - 2] = a->dims[r - 2];
        o->dims[rr - 1] = b->dims[b->rank - 1];
        break;
    }
    case SL__OP_RESHAPE: {
        if (!b || !b->is_const || b->dtype != SL__DT_I64 || b->count > SL__NN_MAX_RANK)
            return sl__err_set(err, SL_E_UNSUPPORTED, "Reshape target shape is not a constant (after folding)");
        o->rank = (int)b->count;
        o->dtype = a->dtype;
        int infer = -1;
        size_t known = 1;
        for (int d = 0; d < o->rank; d++) {
            int64_t v = b->i[d];
            if (v == 0 && !n->keepdims) { if (d >= r) return shp_err(err, "Reshape 0 beyond input rank"); v = a->dims[d]; }
            if (v == -1) { if (infer >= 0) return shp_err(err, "Reshape with two -1"); infer = d; v = 1; }
            else if (v < 0) return shp_err(err, "Reshape negative dimension");
            o->dims[d] = v;
            if (sl__mul_size(known, (size_t)v, &known)) return shp_err(err, "Reshape overflow");
        }
        if (infer >= 0) {
            if (known == 0 || a->count % known) return shp_err(err, "Reshape -1 does not divide");
            o->dims[infer] = (int64_t)(a->count / known);
        }
        break;
    }
    case SL__OP_SQUEEZE: case SL__OP_UNSQUEEZE: {
        int64_t axes[SL__NN_MAX_RANK];
        int na = get_axes(n, vals, axes);
        if (na < 0) return sl__err_set(err, SL_E_UNSUPPORTED, "axes input is not constant");
        o->dtype = a->dtype;
        if (n->op == SL__OP_SQUEEZE) {
            char drop[SL__NN_MAX_RANK] = {0};
            if (na == 0) for (int d = 0; d < r; d++) drop[d] = a->dims[d] == 1;
            for (int k = 0; k < na; k++) {
                int64_t ax;
                if (norm_axis(axes[k], r, &ax) || a->dims[ax] != 1) return shp_err(err, "Squeeze axis");
                drop[ax] = 1;
            }
            o->rank = 0;
            for (int d = 0; d < r; d++) if (!drop[d]) o->dims[o->rank++] = a->dims[d];
        } else {
            int rr = r + na;
            if (rr > SL__NN_MAX_RANK) return shp_err(err, "Unsqueeze rank");
            char ins[SL__NN_MAX_RANK] = {0};
            for (int k = 0; k < na; k++) {
                int64_t ax;
                if (norm_axis(axes[k], rr, &ax) || ins[ax]) return shp_err(err, "Unsqueeze axis");
                ins[ax] = 1;
            }
            int s = 0;
            for (int d = 0; d < rr; d++) o->dims[d] = ins[d] ? 1 : a->dims[s++];
            o->rank = rr;
        }
        break;
    }
    case SL__OP_CONCAT: {
        int64_t ax;
        if (norm_axis(n->axis, r, &ax)) return shp_err(err, "Concat axis");
        o->dtype = a->dtype;
        int64_t tot = 0;
        for (int j = 0; j < n->nin; j++) {
            const sl__value *x = &vals[n->in[j]];
            if (x->rank != r || x->dtype != a->dtype) return shp_err(err, "Concat inputs differ in rank or type");
            for (int d = 0; d < r; d++) if (d != ax && x->dims[d] != a->dims[d]) return shp_err(err, "Concat dims");
            tot += x->dims[ax];
        }
        o->dims[ax] = tot;
        break;
    }
    case SL__OP_SHAPE: {
        int64_t s = 0, e = r;
        if (n->has_axes) {
            s = n->axes[0] < 0 ? n->axes[0] + r : n->axes[0];
            e = n->axes[1] == INT64_MAX ? r : n->axes[1] < 0 ? n->axes[1] + r : n->axes[1];
            if (s < 0) s = 0;
            if (e > r) e = r;
            if (e < s) e = s;
        }
        o->dtype = SL__DT_I64; o->rank = 1; o->dims[0] = e - s;
        break;
    }
    case SL__OP_GATHER: {
        int64_t ax;
        if (!b || b->dtype != SL__DT_I64) return shp_err(err, "Gather indices must be integers");
        if (norm_axis(n->axis, r, &ax) || r - 1 + b->rank > SL__NN_MAX_RANK) return shp_err(err, "Gather axis");
        o->dtype = a->dtype;
        int k = 0;
        for (int d = 0; d < ax; d++) o->dims[k++] = a->dims[d];
        for (int d = 0; d < b->rank; d++) o->dims[k++] = b->dims[d];
        for (int d = (int)ax + 1; d < r; d++) o->dims[k++] = a->dims[d];
        o->rank = k;
        break;
    }
    case SL__OP_REDUCEMEAN: {
        int64_t axes[SL__NN_MAX_RANK];
        int na = get_axes(n, vals, axes);
        if (na < 0) return sl__err_set(err, SL_E_UNSUPPORTED, "axes input is not constant");
        char red[SL__NN_MAX_RANK] = {0};
        if (na == 0) memset(red, 1, sizeof red);
        for (int k = 0; k < na; k++) {
            int64_t ax;
            if (norm_axis(axes[k], r, &ax)) return shp_err(err, "ReduceMean axis");
            red[ax] = 1;
        }
        o->rank = 0;
        for (int d = 0; d < r; d++) {
            if (!red[d]) o->dims[o->rank++] = a->dims[d];
            else if (n->keepdims) o->dims[o->rank++] = 1;
        }
        break;
    }
    case SL__OP_SOFTMAX: {
        int64_t ax;
        if (norm_axis(n->axis, r, &ax)) return shp_err(err, "Softmax axis");
        break;
    }
    case SL__OP_TRANSPOSE: {
        char seen[SL__NN_MAX_RANK] = {0};
        if (n->has_axes && n->naxes != r) return shp_err(err, "Transpose perm length");
        for (int d = 0; d < r; d++) {
            int64_t p = n->has_axes ? n->perm[d] : r - 1 - d;
            if (p < 0 || p >= r || seen[p]) return shp_err(err, "Transpose perm");
            seen[p] = 1;
            o->dims[d] = a->dims[p];
        }
        o->dtype = a->dtype;
        break;
    }
    default:
        return sl__err_set(err, SL_E_INTERNAL, "no shape rule for %s", sl__op_name(n->op));
    }
    if (set_count(o)) return shp_err(err, "tensor too large");
    return SL_OK;
}

/* ---- activations ------------------------------------------------------------------------- */

static float act1(float x, const sl__actp *a) {
    switch (a->kind) {
    case SL__ACT_RELU: return x > 0 ? x : 0;
    case SL__ACT_CLIP: return x < a->a ? a->a : x > a->b ? a->b : x;
    case SL__ACT_SIGMOID: return 1.0f / (1.0f + expf(-x));
    case SL__ACT_SWISH: return x / (1.0f + expf(-x));
    case SL__ACT_HSIGMOID: { float y = a->a * x + a->b; return y < 0 ? 0 : y > 1 ? 1 : y; }
    case SL__ACT_HSWISH: { float y = x + 3.0f; y = y < 0 ? 0 : y > 6 ? 6 : y; return x * y / 6.0f; }
    default: return x;
    }
}

SL__SIMD void sl__act_apply(float *x, size_t n, const sl__actp *a, int na) {
    for (int k = 0; k < na; k++) {
        const sl__actp *p = &a[k];
        if (p->kind == SL__ACT_RELU) { for (size_t i = 0; i < n; i++) x[i] = x[i] > 0 ? x[i] : 0; }
        else if (p->kind == SL__ACT_CLIP) {
            float lo = p->a, hi = p->b;
            for (size_t i = 0; i < n; i++) x[i] = x[i] < lo ? lo : x[i] > hi ? hi : x[i];
        } else for (size_t i = 0; i < n; i++) x[i] = act1(x[i], p);
    }
}

/* ---- helpers ------------------------------------------------------------------------------ */

/* Strides of a view in logical dim order (elements). */
static void view_strides(const sl__tv *t, int64_t *st) {
    if (t->nhwc && t->rank == 4) {
        int64_t C = t->dims[1], H = t->dims[2], W = t->dims[3];
        st[0] = H * W * C; st[1] = 1; st[2] = W * C; st[3] = C;
        return;
    }
    int64_t s = 1;
    for (int d = t->rank - 1; d >= 0; d--) { st[d] = s; s *= t->dims[d]; }
}

/* ---- convolution -------------------------------------------------------------------------- */

static int conv_direct(const sl__node *n, const sl__tv *w) {
    return w->dims[2] == 1 && w->dims[3] == 1 && n->sh == 1 && n->sw == 1 && n->group == 1 &&
           !n->pt && !n->pl && !n->pb && !n->pr && n->auto_pad != 1 && n->auto_pad != 2;
}
static int conv_depthwise(const sl__node *n, const sl__tv *w) {
    return n->group > 1 && w->dims[1] == 1 && w->dims[0] == n->group;
}

#define A64(x) (((x) + 63) / 64 * 64)

size_t sl__op_scratch(const sl__node *n, sl__tv *const *in, const sl__tv *out) {
    if (n->op == SL__OP_BN) return 2 * (size_t)in[0]->dims[1] * sizeof(float);
    if (n->op != SL__OP_CONV) return 0;
    const sl__tv *w = in[1];
    if (n->wq) {
        size_t M = (size_t)(out->dims[0] * out->dims[2] * out->dims[3]);
        size_t K = (size_t)(w->dims[1] * w->dims[2] * w->dims[3]);
        size_t cog = (size_t)(w->dims[0] / n->group);
        return A64(in[0]->count) + (conv_direct(n, w) ? 0 : A64(M * K)) + A64(M * cog * 4);
    }
    if (conv_depthwise(n, w) || conv_direct(n, w)) return 0;
    size_t k = (size_t)(w->dims[1] * w->dims[2] * w->dims[3]);
    return (size_t)(out->dims[0] * out->dims[2] * out->dims[3]) * k * sizeof(float);
}

/* General row-major sgemm through oneDNN (kind 1) or OpenBLAS (kind 0). */
static void sgemm(int kind, int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
                  const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                  int64_t ldc) {
    if (kind) dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    else cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                     (int)M, (int)N, (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

/* C[M x N] = A[M x K] * B[N x K]^T, row-major, leading dimensions given. */
static void sgemm_nt(int kind, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                     const float *B, int64_t ldb, float *C, int64_t ldc) {
    sgemm(kind, 0, 1, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, ldc);
}

/* bias, activations before the sum, residual sum, activations after it - on `pixels` rows. */
SL__SIMD static void epilogue_rows(const sl__node *n, float *y, size_t pixels, int64_t co,
                                   const float *bias, const float *sum) {
    for (size_t p = 0; p < pixels; p++) {
        float *row = y + p * (size_t)co;
        if (bias) for (int64_t c = 0; c < co; c++) row[c] += bias[c];
        sl__act_apply(row, (size_t)co, n->pre, n->npre);
        if (sum) {
            const float *s = sum + p * (size_t)co;
            for (int64_t c = 0; c < co; c++) row[c] += s[c];
            sl__act_apply(row, (size_t)co, n->post, n->npost);
        }
    }
}

#define SL__ROWS 16 /* pixels per parallel chunk of the epilogue */

static void conv_epilogue(const sl__node *n, float *y, size_t pixels, int64_t co,
                          const float *bias, const float *sum, int threads) {
    size_t chunks = (pixels + SL__ROWS - 1) / SL__ROWS;
    (void)threads;
#pragma omp parallel for schedule(static) num_threads(threads) if (pixels * (size_t)co > 32768)
    for (size_t q = 0; q < chunks; q++) {
        size_t p0 = q * SL__ROWS, np = pixels - p0 < SL__ROWS ? pixels - p0 : SL__ROWS;
        epilogue_rows(n, y + p0 * (size_t)co, np, co, bias, sum ? sum + p0 * (size_t)co : NULL);
    }
}

/* One output row (b, oy) of a depthwise convolution with its epilogue. */
SL__SIMD static void dw_row(const sl__node *n, const sl__tv *x, const sl__tv *w, sl__tv *out,
                            const int64_t *p, int64_t b, int64_t oy, const float *bias, const float *sum) {
    int64_t C = x->dims[1], H = x->dims[2], W = x->dims[3];
    int64_t OH = out->dims[2], OW = out->dims[3], KH = w->dims[2], KW = w->dims[3];
    int64_t ws = n->wlayout == 2 ? 1 : KH * KW; /* stride between channels */
    const float *xi = x->f + b * H * W * C;
    for (int64_t ox = 0; ox < OW; ox++) {
        float *yr = out->f + ((b * OH + oy) * OW + ox) * C;
        memset(yr, 0, sizeof(float) * (size_t)C);
        for (int64_t ky = 0; ky < KH; ky++) {
            int64_t iy = oy * n->sh - p[0] + ky * n->dh;
            if (iy < 0 || iy >= H) continue;
            for (int64_t kx = 0; kx < KW; kx++) {
                int64_t ix = ox * n->sw - p[1] + kx * n->dw;
                if (ix < 0 || ix >= W) continue;
                const float *xr = xi + (iy * W + ix) * C;
                const float *wr = n->wlayout == 2 ? w->f + (ky * KW + kx) * C : w->f + ky * KW + kx;
                if (ws == 1) for (int64_t c = 0; c < C; c++) yr[c] += xr[c] * wr[c];
                else for (int64_t c = 0; c < C; c++) yr[c] += xr[c] * wr[c * ws];
            }
        }
    }
    size_t off = (size_t)((b * OH + oy) * OW * C);
    epilogue_rows(n, out->f + off, (size_t)OW, C, bias, sum ? sum + off : NULL);
}

/* Depthwise convolution, NHWC, weights in HWC layout (wlayout 2) or OIHW (0), epilogue fused. */
static void conv_dw(const sl__node *n, const sl__tv *x, const sl__tv *w, sl__tv *out,
                    const int64_t *p, const float *bias, const float *sum, int threads) {
    int64_t N = x->dims[0], C = x->dims[1], OH = out->dims[2], OW = out->dims[3];
    (void)threads;
#pragma omp parallel for collapse(2) schedule(static) num_threads(threads) if (N * OH * OW * C > 32768)
    for (int64_t b = 0; b < N; b++)
        for (int64_t oy = 0; oy < OH; oy++) dw_row(n, x, w, out, p, b, oy, bias, sum);
}

/* im2col for NHWC input and OHWI weights: col[(b, oy, ox)][(ky, kx, ci)] of group g, on
 * elements of `es` bytes (fp32 or u8); padding bytes are `pad` (0, or the u8 zero point). */
static void im2col(const sl__node *n, const void *xv, const int64_t *xd, size_t es, int pad,
                   int64_t KH, int64_t KW, int64_t g, int64_t cig, const int64_t *p, int64_t OH,
                   int64_t OW, void *colv, int threads) {
    int64_t N = xd[0], C = xd[1], H = xd[2], W = xd[3], K = KH * KW * cig;
    const char *x = xv;
    char *col = colv;
    size_t run = (size_t)cig * es;
    (void)threads;
#pragma omp parallel for collapse(2) schedule(static) num_threads(threads) if (N * OH * OW * K > 65536)
    for (int64_t b = 0; b < N; b++)
        for (int64_t oy = 0; oy < OH; oy++) {
            const char *xi = x + (size_t)(b * H * W * C + g * cig) * es;
            for (int64_t ox = 0; ox < OW; ox++) {
                char *cr = col + (size_t)(((b * OH + oy) * OW + ox) * K) * es;
                for (int64_t ky = 0; ky < KH; ky++) {
                    int64_t iy = oy * n->sh - p[0] + ky * n->dh;
                    for (int64_t kx = 0; kx < KW; kx++, cr += run) {
                        int64_t ix = ox * n->sw - p[1] + kx * n->dw;
                        if (iy < 0 || iy >= H || ix < 0 || ix >= W) memset(cr, pad, run);
                        else memcpy(cr, xi + (size_t)((iy * W + ix) * C) * es, run);
                    }
                }
            }
        }
}

/* Naive convolution for OIHW weights (only used when folding constants before the weight
 * layout pass). */
static void conv_naive(const sl__node *n, const sl__tv *x, const sl__tv *w, sl__tv *out, const int64_t *p) {
    int64_t N = x->dims[0], C = x->dims[1], H = x->dims[2], W = x->dims[3];
    int64_t CO = out->dims[1], OH = out->dims[2], OW = out->dims[3], KH = w->dims[2], KW = w->dims[3];
    int64_t cig = C / n->group, cog = CO / n->group;
    for (int64_t b = 0; b < N; b++)
        for (int64_t oy = 0; oy < OH; oy++)
            for (int64_t ox = 0; ox < OW; ox++)
                for (int64_t co = 0; co < CO; co++) {
                    int64_t g = co / cog;
                    double acc = 0;
                    for (int64_t ci = 0; ci < cig; ci++)
                        for (int64_t ky = 0; ky < KH; ky++) {
                            int64_t iy = oy * n->sh - p[0] + ky * n->dh;
                            if (iy < 0 || iy >= H) continue;
                            for (int64_t kx = 0; kx < KW; kx++) {
                                int64_t ix = ox * n->sw - p[1] + kx * n->dw;
                                if (ix < 0 || ix >= W) continue;
                                acc += (double)x->f[((b * H + iy) * W + ix) * C + g * cig + ci] *
                                       w->f[((co * cig + ci) * KH + ky) * KW + kx];
                            }
                        }
                    out->f[((b * OH + oy) * OW + ox) * CO + co] = (float)acc;
                }
}

/* int8 path: u8 activations (per-tensor scale and zero point computed now), s8 weights per
 * output channel, s32 accumulation with oneDNN's u8s8s32 GEMM (VNNI), dequantized to fp32. */
static void conv_int8(const sl__node *n, const sl__tv *x, const sl__tv *w, sl__tv *out,
                      const int64_t *p, unsigned char *scr, int threads) {
    int64_t N = x->dims[0], C = x->dims[1];
    int64_t CO = out->dims[1], OH = out->dims[2], OW = out->dims[3];
    int64_t G = n->group, cig = C / G, cog = CO / G, KH = w->dims[2], KW = w->dims[3];
    int64_t K = cig * KH * KW, M = N * OH * OW;
    size_t cnt = x->count;
    float lo = 0, hi = 0;
    (void)threads;
#pragma omp parallel for reduction(min : lo) reduction(max : hi) num_threads(threads) if (cnt > 65536)
    for (size_t k = 0; k < cnt; k++) { lo = fminf(lo, x->f[k]); hi = fmaxf(hi, x->f[k]); }
    float sa = hi > lo ? (hi - lo) / 255.0f : 1.0f;
    long zl = lrintf(-lo / sa);
    uint8_t za = (uint8_t)(zl < 0 ? 0 : zl > 255 ? 255 : zl);
    float inv = 1.0f / sa;
    uint8_t *xq = scr;
    int direct = conv_direct(n, w);
    uint8_t *col = direct ? NULL : scr + A64(cnt);
    int32_t *acc = (int32_t *)(void *)(scr + A64(cnt) + (direct ? 0 : A64((size_t)(M * K))));
#pragma omp parallel for num_threads(threads) if (cnt > 65536)
    for (size_t k = 0; k < cnt; k++) {
        long q = lrintf(x->f[k] * inv) + za;
        xq[k] = (uint8_t)(q < 0 ? 0 : q > 255 ? 255 : q);
    }
    int32_t zero = 0;
    for (int64_t g = 0; g < G; g++) {
        const uint8_t *A = xq;
        int64_t lda = C;
        if (!direct) {
            im2col(n, xq, x->dims, 1, za, KH, KW, g, cig, p, OH, OW, col, threads);
            A = col;
            lda = K;
        }
        dnnl_gemm_u8s8s32('N', 'T', 'F', M, cog, K, 1.0f, A, lda, za, n->wq + g * cog * K, K, 0, 0.0f,
                          acc, cog, &zero);
        const float *ws = n->wsc + g * cog;
#pragma omp parallel for num_threads(threads) if (M * cog > 32768)
        for (int64_t m = 0; m < M; m++) {
            float *y = out->f + m * CO + g * cog;
            const int32_t *a = acc + m * cog;
            for (int64_t o = 0; o < cog; o++) y[o] = (float)a[o] * sa * ws[o];
        }
    }
}

static sl_status conv_gemm(const sl__node *n, sl__tv *const *in, sl__tv *out, float *col, int threads) {
    const sl__tv *x = in[0], *w = in[1];
    const float *bias = n->nin > 2 && in[2] ? in[2]->f : NULL;
    const float *sum = n->sum_in >= 0 ? in[SL__SUM_SLOT]->f : NULL;
    int64_t N = x->dims[0], C = x->dims[1], H = x->dims[2], W = x->dims[3];
    int64_t CO = out->dims[1], OH = out->dims[2], OW = out->dims[3];
    int64_t G = n->group, cig = C / G, cog = CO / G, KH = w->dims[2], KW = w->dims[3];
    int64_t p[4];
    sl__conv_pads(n, H, W, (int)KH, (int)KW, p);
    int64_t K = cig * KH * KW, M = N * OH * OW;
    if (n->wq) conv_int8(n, x, w, out, p, (unsigned char *)col, threads);
    else if (conv_depthwise(n, w)) { conv_dw(n, x, w, out, p, bias, sum, threads); return SL_OK; }
    else if (n->wlayout == 0 && !conv_direct(n, w)) conv_naive(n, x, w, out, p);
    else if (conv_direct(n, w)) sgemm_nt(n->gemm, M, CO, C, x->f, C, w->f, C, out->f, CO);
    else {
        for (int64_t g = 0; g < G; g++) {
            im2col(n, x->f, x->dims, sizeof(float), 0, KH, KW, g, cig, p, OH, OW, col, threads);
            sgemm_nt(n->gemm, M, cog, K, col, K, w->f + g * cog * K, K, out->f + g * cog, CO);
        }
    }
    conv_epilogue(n, out->f, (size_t)M, CO, bias, sum, threads);
    return SL_OK;
}

/* ---- pooling ------------------------------------------------------------------------------ */

/* One output row (fixed image b and output row oy) of a max/average pool, channels-last. */
SL__SIMD static void pool_row(const sl__node *n, const sl__tv *x, sl__tv *out, const int64_t *p, int64_t b,
                              int64_t oy) {
    int64_t C = x->dims[1], H = x->dims[2], W = x->dims[3], OH = out->dims[2], OW = out->dims[3];
    int mx = n->op == SL__OP_MAXPOOL;
    int dh = mx ? n->dh : 1, dw = mx ? n->dw : 1;
    for (int64_t ox = 0; ox < OW; ox++) {
        float *restrict yr = out->f + ((b * OH + oy) * OW + ox) * C;
        for (int64_t c = 0; c < C; c++) yr[c] = mx ? -INFINITY : 0.0f;
        int64_t cnt = 0, cnt_pad = 0;
        for (int64_t ky = 0; ky < n->kh; ky++) {
            int64_t iy = oy * n->sh - p[0] + ky * dh;
            for (int64_t kx = 0; kx < n->kw; kx++) {
                int64_t ix = ox * n->sw - p[1] + kx * dw;
                if (iy < H + p[2] && ix < W + p[3]) cnt_pad++;
                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                cnt++;
                const float *restrict xr = x->f + ((b * H + iy) * W + ix) * C;
                if (mx) { for (int64_t c = 0; c < C; c++) yr[c] = xr[c] > yr[c] ? xr[c] : yr[c]; }
                else for (int64_t c = 0; c < C; c++) yr[c] += xr[c];
            }
        }
        if (!mx) {
            float inv = 1.0f / (float)(n->count_include_pad ? cnt_pad : cnt ? cnt : 1);
            for (int64_t c = 0; c < C; c++) yr[c] *= inv;
        }
    }
}

/* Pools in parallel over output rows; each row's arithmetic is independent of the split. */
static void pool_nhwc(const sl__node *n, const sl__tv *x, sl__tv *out, int threads) {
    int64_t rows = x->dims[0] * out->dims[2];
    int64_t p[4];
    sl__conv_pads(n, x->dims[2], x->dims[3], n->kh, n->kw, p);
    (void)threads;
#pragma omp parallel for schedule(static) num_threads(threads) if (out->count > 32768)
    for (int64_t r = 0; r < rows; r++) pool_row(n, x, out, p, r / out->dims[2], r % out->dims[2]);
}

/* Sums channels [c0, c1) of one channels-last image over its S pixels (in pixel order). */
SL__SIMD static void gap_block(const float *restrict xb, size_t S, int64_t C, int64_t c0, int64_t c1,
                               float *restrict y) {
    for (int64_t c = c0; c < c1; c++) y[c] = 0;
    for (size_t s = 0; s < S; s++)
        for (int64_t c = c0; c < c1; c++) y[c] += xb[s * (size_t)C + (size_t)c];
    for (int64_t c = c0; c < c1; c++) y[c] /= (float)S;
}

#define SL__GAP_CB 64 /* channels per parallel block of the channels-last global average pool */

static void gap(const sl__tv *x, sl__tv *out, int threads) {
    int64_t N = x->dims[0], C = x->dims[1];
    size_t S = x->count / (size_t)(N * C);
    (void)threads;
    if (x->nhwc && x->rank == 4) {
        int64_t nb = (C + SL__GAP_CB - 1) / SL__GAP_CB;
#pragma omp parallel for schedule(static) num_threads(threads) if (x->count > 65536)
        for (int64_t q = 0; q < N * nb; q++) {
            int64_t b = q / nb, c0 = q % nb * SL__GAP_CB, c1 = c0 + SL__GAP_CB < C ? c0 + SL__GAP_CB : C;
            gap_block(x->f + (size_t)b * S * (size_t)C, S, C, c0, c1, out->f + b * C);
        }
    } else {
#pragma omp parallel for schedule(static) num_threads(threads) if (x->count > 65536)
        for (size_t k = 0; k < (size_t)(N * C); k++) {
            double acc = 0;
            for (size_t s = 0; s < S; s++) acc += x->f[k * S + s];
            out->f[k] = (float)(acc / (double)S);
        }
    }
}

/* ---- element-wise --------------------------------------------------------------------------- */

/* One innermost row of a float element-wise operator (strides ia, ib: 0 = broadcast). */
SL__SIMD static void bin_row(sl__op op, const float *pa, int64_t ia, const float *pb, int64_t ib, float *po,
                             int64_t inner) {
    switch (op) {
    case SL__OP_ADD: for (int64_t k = 0; k < inner; k++) po[k] = pa[k * ia] + pb[k * ib]; break;
    case SL__OP_SUB: for (int64_t k = 0; k < inner; k++) po[k] = pa[k * ia] - pb[k * ib]; break;
    case SL__OP_MUL: for (int64_t k = 0; k < inner; k++) po[k] = pa[k * ia] * pb[k * ib]; break;
    default: for (int64_t k = 0; k < inner; k++) po[k] = pa[k * ia] / pb[k * ib]; break;
    }
}

static sl_status binary(const sl__node *n, const sl__tv *a, const sl__tv *b, sl__tv *o, int threads) {
    int r = o->rank;
    int64_t sa[SL__NN_MAX_RANK], sb[SL__NN_MAX_RANK], so[SL__NN_MAX_RANK];
    int64_t ta[SL__NN_MAX_RANK], tb[SL__NN_MAX_RANK];
    view_strides(a, ta);
    view_strides(b, tb);
    view_strides(o, so);
    for (int d = 0; d < r; d++) {
        int da = d - (r - a->rank), db = d - (r - b->rank);
        sa[d] = da >= 0 && a->dims[da] != 1 ? ta[da] : 0;
        sb[d] = db >= 0 && b->dims[db] != 1 ? tb[db] : 0;
    }
    /* Iterate in the output's physical order. */
    int order[SL__NN_MAX_RANK];
    if (o->nhwc && r == 4) { order[0] = 0; order[1] = 2; order[2] = 3; order[3] = 1; }
    else for (int d = 0; d < r; d++) order[d] = d;
    size_t total = o->count;
    if (r == 0) total = 1;
    int last = r > 0 ? order[r - 1] : 0;
    int64_t inner = r > 0 ? o->dims[last] : 1;
    int64_t ia = r > 0 ? sa[last] : 0, ib = r > 0 ? sb[last] : 0;
    int64_t rows = inner ? (int64_t)(total / (size_t)inner) : 0;
    if (o->dtype == SL__DT_F32) {
        (void)threads;
#pragma omp parallel for schedule(static) num_threads(threads) if (total > 32768)
        for (int64_t q = 0; q < rows; q++) {
            int64_t oa = 0, ob = 0, oo = 0, rem = q;
            for (int d = r - 2; d >= 0; d--) {
                int ax = order[d];
                int64_t i = rem % o->dims[ax];
                rem /= o->dims[ax];
                oa += i * sa[ax]; ob += i * sb[ax]; oo += i * so[ax];
            }
            bin_row(n->op, a->f + oa, ia, b->f + ob, ib, o->f + oo, inner);
        }
        return SL_OK;
    }
    int64_t idx[SL__NN_MAX_RANK] = {0};
    for (size_t done = 0; done < total; done += (size_t)inner) {
        int64_t oa = 0, ob = 0, oo = 0;
        for (int d = 0; d < r; d++) { oa += idx[d] * sa[d]; ob += idx[d] * sb[d]; oo += idx[d] * so[d]; }
        const int64_t *pa = a->i + oa, *pb = b->i + ob;
        int64_t *po = o->i + oo;
        for (int64_t k = 0; k < inner; k++) {
            int64_t xv = pa[k * ia], yv = pb[k * ib];
            switch (n->op) {
            case SL__OP_ADD: po[k] = (int64_t)((uint64_t)xv + (uint64_t)yv); break;
            case SL__OP_SUB: po[k] = (int64_t)((uint64_t)xv - (uint64_t)yv); break;
            case SL__OP_MUL: po[k] = (int64_t)((uint64_t)xv * (uint64_t)yv); break;
            default:
                if (yv == 0 || (xv == INT64_MIN && yv == -1)) return SL_E_CORRUPT;
                po[k] = xv / yv;
            }
        }
        for (int d = r - 2; d >= 0; d--) {
            int ax = order[d];
            if (++idx[ax] < o->dims[ax]) break;
            idx[ax] = 0;
        }
    }
    return SL_OK;
}

/* ---- data movement ------------------------------------------------------------------------ */

static void copy_data(const sl__tv *x, sl__tv *o) {
    size_t es = x->dtype == SL__DT_I64 ? 8 : 4;
    const void *s = x->dtype == SL__DT_I64 ? (const void *)x->i : (const void *)x->f;
    void *d = o->dtype == SL__DT_I64 ? (void *)o->i : (void *)o->f;
    if (s != d && x->count) memmove(d, s, x->count * es);
}

#define SL__LAYOUT_PIX 1024 /* pixels per parallel block of a layout conversion */

static void to_layout(const sl__tv *x, sl__tv *o, int to_nhwc, int threads) {
    int64_t N = x->dims[0], C = x->dims[1], S = x->dims[2] * x->dims[3];
    int64_t nb = (S + SL__LAYOUT_PIX - 1) / SL__LAYOUT_PIX;
    (void)threads;
#pragma omp parallel for schedule(static) num_threads(threads) if (x->count > 65536)
    for (int64_t q = 0; q < N * nb; q++) {
        int64_t b = q / nb, s0 = q % nb * SL__LAYOUT_PIX, s1 = s0 + SL__LAYOUT_PIX < S ? s0 + SL__LAYOUT_PIX : S;
        const float *xb = x->f + b * C * S;
        float *ob = o->f + b * C * S;
        if (to_nhwc) { for (int64_t c = 0; c < C; c++) for (int64_t s = s0; s < s1; s++) ob[s * C + c] = xb[c * S + s]; }
        else for (int64_t s = s0; s < s1; s++) for (int64_t c = 0; c < C; c++) ob[c * S + s] = xb[s * C + c];
    }
}

static void concat(const sl__node *n, sl__tv *const *in, sl__tv *o) {
    int r = o->rank;
    int64_t ax = n->axis < 0 ? n->axis + r : n->axis;
    size_t es = o->dtype == SL__DT_I64 ? 8 : 4;
    char *dst = o->dtype == SL__DT_I64 ? (char *)o->i : (char *)o->f;
    if (o->nhwc && r == 4 && ax == 1) {
        size_t pix = (size_t)(o->dims[0] * o->dims[2] * o->dims[3]), C = (size_t)o->dims[1], off = 0;
        for (int j = 0; j < n->nin; j++) {
            size_t cj = (size_t)in[j]->dims[1];
            for (size_t p = 0; p < pix; p++) memcpy(o->f + p * C + off, in[j]->f + p * cj, cj * 4);
            off += cj;
        }
        return;
    }
    size_t outer = 1, inner = 1;
    for (int d = 0; d < ax; d++) outer *= (size_t)o->dims[d];
    for (int d = (int)ax + 1; d < r; d++) inner *= (size_t)o->dims[d];
    size_t orow = (size_t)o->dims[ax] * inner, off = 0;
    for (int j = 0; j < n->nin; j++) {
        size_t rowj = (size_t)in[j]->dims[ax] * inner;
        const char *src = in[j]->dtype == SL__DT_I64 ? (const char *)in[j]->i : (const char *)in[j]->f;
        for (size_t q = 0; q < outer; q++)
            if (rowj) memcpy(dst + (q * orow + off) * es, src + q * rowj * es, rowj * es);
        off += rowj;
    }
}

static sl_status gather(const sl__node *n, const sl__tv *x, const sl__tv *ind, sl__tv *o) {
    int r = x->rank;
    int64_t ax = n->axis < 0 ? n->axis + r : n->axis;
    size_t outer = 1, inner = 1, es = x->dtype == SL__DT_I64 ? 8 : 4;
    for (int d = 0; d < ax; d++) outer *= (size_t)x->dims[d];
    for (int d = (int)ax + 1; d < r; d++) inner *= (size_t)x->dims[d];
    int64_t A = x->dims[ax];
    const char *src = x->dtype == SL__DT_I64 ? (const char *)x->i : (const char *)x->f;
    char *dst = o->dtype == SL__DT_I64 ? (char *)o->i : (char *)o->f;
    size_t ni = ind->count;
    for (size_t q = 0; q < outer; q++)
        for (size_t k = 0; k < ni; k++) {
            int64_t id = ind->i[k];
            if (id < 0) id += A;
            if (id < 0 || id >= A) return SL_E_CORRUPT;
            memcpy(dst + (q * ni + k) * inner * es, src + (q * (size_t)A + (size_t)id) * inner * es, inner * es);
        }
    return SL_OK;
}

static void transpose(const sl__node *n, const sl__tv *x, sl__tv *o) {
    int r = x->rank;
    int64_t st[SL__NN_MAX_RANK], ps[SL__NN_MAX_RANK], idx[SL__NN_MAX_RANK] = {0};
    view_strides(x, st);
    for (int d = 0; d < r; d++) ps[d] = st[n->has_axes ? n->perm[d] : r - 1 - d];
    size_t es = x->dtype == SL__DT_I64 ? 8 : 4;
    const char *src = x->dtype == SL__DT_I64 ? (const char *)x->i : (const char *)x->f;
    char *dst = o->dtype == SL__DT_I64 ? (char *)o->i : (char *)o->f;
    for (size_t k = 0; k < o->count; k++) {
        int64_t off = 0;
        for (int d = 0; d < r; d++) off += idx[d] * ps[d];
        memcpy(dst + k * es, src + (size_t)off * es, es);
        for (int d = r - 1; d >= 0; d--) { if (++idx[d] < o->dims[d]) break; idx[d] = 0; }
    }
}

static void reduce_mean(const sl__node *n, sl__tv *const *in, sl__tv *o) {
    const sl__tv *x = in[0];
    int r = x->rank;
    char red[SL__NN_MAX_RANK] = {0};
    const int64_t *axes = n->axes;
    int na = n->naxes;
    if (!n->has_axes) { na = n->nin > 1 && in[1] ? (int)in[1]->count : 0; axes = na ? in[1]->i : NULL; }
    if (na == 0) memset(red, 1, sizeof red);
    for (int k = 0; k < na; k++) red[axes[k] < 0 ? axes[k] + r : axes[k]] = 1;
    int64_t xs[SL__NN_MAX_RANK], ost[SL__NN_MAX_RANK], idx[SL__NN_MAX_RANK] = {0};
    view_strides(x, xs);
    int64_t s = 1;
    size_t cnt = 1;
    for (int d = r - 1; d >= 0; d--) {
        if (red[d]) { ost[d] = 0; cnt *= (size_t)x->dims[d]; }
        else { ost[d] = s; s *= x->dims[d]; }
    }
    for (size_t k = 0; k < o->count; k++) o->f[k] = 0;
    for (size_t k = 0; k < x->count; k++) {
        int64_t off = 0, src = 0;
        for (int d = 0; d < r; d++) { off += idx[d] * ost[d]; src += idx[d] * xs[d]; }
        o->f[off] += x->f[src];
        for (int d = r - 1; d >= 0; d--) { if (++idx[d] < x->dims[d]) break; idx[d] = 0; }
    }
    for (size_t k = 0; k < o->count; k++) o->f[k] /= (float)(cnt ? cnt : 1);
}

static void softmax(const sl__node *n, const sl__tv *x, sl__tv *o) {
    int r = x->rank;
    int64_t ax = n->axis < 0 ? n->axis + r : n->axis;
    size_t outer = 1, len = 1, inner = 1;
    for (int d = 0; d < ax; d++) outer *= (size_t)x->dims[d];
    if (n->has_axes) { for (int d = (int)ax; d < r; d++) len *= (size_t)x->dims[d]; }
    else {
        len = (size_t)x->dims[ax];
        for (int d = (int)ax + 1; d < r; d++) inner *= (size_t)x->dims[d];
    }
    for (size_t q = 0; q < outer; q++)
        for (size_t i = 0; i < inner; i++) {
            const float *xs = x->f + q * len * inner + i;
            float *ys = o->f + q * len * inner + i;
            float mx = -INFINITY;
            for (size_t k = 0; k < len; k++) if (xs[k * inner] > mx) mx = xs[k * inner];
            double sum = 0;
            for (size_t k = 0; k < len; k++) { ys[k * inner] = expf(xs[k * inner] - mx); sum += ys[k * inner]; }
            for (size_t k = 0; k < len; k++) ys[k * inner] = (float)(ys[k * inner] / sum);
        }
}

static void gemm(const sl__node *n, sl__tv *const *in, sl__tv *o) {
    const sl__tv *a = in[0], *b = in[1], *c = n->nin > 2 ? in[2] : NULL;
    int M = (int)o->dims[0], N = (int)o->dims[1];
    int K = (int)(n->trans_a ? a->dims[0] : a->dims[1]);
    float beta = 0.0f;
    if (c && n->beta != 0.0f) {
        int c0 = c->rank == 2 ? (int)c->dims[0] : 1, c1 = c->rank >= 1 ? (int)c->dims[c->rank - 1] : 1;
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) o->f[(size_t)i * (size_t)N + (size_t)j] = c->f[(c0 == 1 ? 0 : i) * c1 + (c1 == 1 ? 0 : j)];
        beta = n->beta;
    }
    sgemm(n->gemm, n->trans_a, n->trans_b, M, N, K, n->alpha, a->f, a->dims[1], b->f, b->dims[1],
          beta, o->f, N);
    sl__act_apply(o->f, o->count, n->pre, n->npre);
}

static void matmul(const sl__node *n, const sl__tv *a, const sl__tv *b, sl__tv *o) {
    int r = o->rank;
    int M = (int)o->dims[r - 2], N = (int)o->dims[r - 1], K = (int)a->dims[a->rank - 1];
    size_t batches = o->count / ((size_t)M * (size_t)N);
    if (!o->count) return;
    int64_t idx[SL__NN_MAX_RANK] = {0};
    for (size_t q = 0; q < batches; q++) {
        size_t oa = 0, ob = 0, sa = (size_t)M * (size_t)K, sbt = (size_t)K * (size_t)N;
        size_t ma = 1, mb = 1;
        for (int d = r - 3; d >= 0; d--) {
            int da = d - (r - a->rank), db = d - (r - b->rank);
            if (da >= 0) { if (a->dims[da] != 1) oa += (size_t)idx[d] * ma; ma *= (size_t)a->dims[da]; }
            if (db >= 0) { if (b->dims[db] != 1) ob += (size_t)idx[d] * mb; mb *= (size_t)b->dims[db]; }
        }
        sgemm(n->gemm, 0, 0, M, N, K, 1.0f, a->f + oa * sa, K, b->f + ob * sbt, N, 0.0f,
              o->f + q * (size_t)M * (size_t)N, N);
        for (int d = r - 3; d >= 0; d--) { if (++idx[d] < o->dims[d]) break; idx[d] = 0; }
    }
}

/* y = x * s[c] + t[c] then the fused activations, on `rows` channels-last rows of C. */
SL__SIMD static void bn_rows(const float *x, float *y, size_t rows, size_t C, const float *s, const float *t,
                             const sl__node *n) {
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * C;
        float *yr = y + r * C;
        for (size_t c = 0; c < C; c++) yr[c] = xr[c] * s[c] + t[c];
        sl__act_apply(yr, C, n->pre, n->npre);
    }
}

/* y = x * s + t then the fused activations, on one plain channel plane of S values. */
SL__SIMD static void bn_plane(const float *x, float *y, size_t S, float s, float t, const sl__node *n) {
    for (size_t p = 0; p < S; p++) y[p] = x[p] * s + t;
    sl__act_apply(y, S, n->pre, n->npre);
}

#define SL__BN_ROWS 64 /* channels-last rows per parallel chunk */

/* Inference BatchNormalization (scale and shift per channel from the constant statistics, in
 * scratch: 2 C floats) with the activations graph.c fused into it. */
static void batchnorm(const sl__node *n, sl__tv *const *in, sl__tv *o, void *scratch, int threads) {
    const sl__tv *x = in[0];
    int64_t N = x->dims[0], C = x->dims[1];
    size_t S = x->count / (size_t)(N * C);
    const float *g = in[1]->f, *be = in[2]->f, *mu = in[3]->f, *var = in[4]->f;
    float *sc = scratch, *sh = sc + C;
    for (int64_t c = 0; c < C; c++) {
        sc[c] = g[c] / sqrtf(var[c] + n->eps);
        sh[c] = be[c] - mu[c] * sc[c];
    }
    if (x->nhwc) {
        size_t rows = (size_t)N * S, chunks = (rows + SL__BN_ROWS - 1) / SL__BN_ROWS;
#pragma omp parallel for schedule(static) num_threads(threads) if (chunks > 1 && rows * (size_t)C > 16384)
        for (size_t q = 0; q < chunks; q++) {
            size_t r0 = q * SL__BN_ROWS, nr = rows - r0 < SL__BN_ROWS ? rows - r0 : SL__BN_ROWS;
            bn_rows(x->f + r0 * (size_t)C, o->f + r0 * (size_t)C, nr, (size_t)C, sc, sh, n);
        }
        return;
    }
    size_t planes = (size_t)(N * C);
#pragma omp parallel for schedule(static) num_threads(threads) if (planes > 1 && planes * S > 16384)
    for (size_t q = 0; q < planes; q++) {
        size_t c = q % (size_t)C;
        bn_plane(x->f + q * S, o->f + q * S, S, sc[c], sh[c], n);
    }
}

#define SL__ACT_CHUNK 32768 /* elements per parallel chunk of a standalone activation */

sl_status sl__op_exec(const sl__node *n, sl__tv *const *in, sl__tv *out, void *scratch,
                      int threads, sl_error *err) {
    if (threads < 1) threads = 1;
    const sl__tv *x = in[0];
    sl__actp a = {SL__ACT_NONE, 0, 0};
    switch (n->op) {
    case SL__OP_CONV: return conv_gemm(n, in, out, scratch, threads);
    case SL__OP_BN: batchnorm(n, in, out, scratch, threads); return SL_OK;
    case SL__OP_RELU: a.kind = SL__ACT_RELU; break;
    case SL__OP_SIGMOID: a.kind = SL__ACT_SIGMOID; break;
    case SL__OP_SWISH: a.kind = SL__ACT_SWISH; break;
    case SL__OP_HSWISH: a.kind = SL__ACT_HSWISH; break;
    case SL__OP_HSIGMOID: a.kind = SL__ACT_HSIGMOID; a.a = n->cmin; a.b = n->cmax; break;
    case SL__OP_CLIP:
        a.kind = SL__ACT_CLIP; a.a = n->cmin; a.b = n->cmax;
        if (n->nin > 1 && in[1]) a.a = in[1]->f[0];
        if (n->nin > 2 && in[2]) a.b = in[2]->f[0];
        break;
    case SL__OP_ADD: case SL__OP_SUB: case SL__OP_MUL: case SL__OP_DIV:
        if (binary(n, in[0], in[1], out, threads))
            return sl__err_set(err, SL_E_CORRUPT, "integer division by zero");
        return SL_OK;
    case SL__OP_MAXPOOL: case SL__OP_AVGPOOL: pool_nhwc(n, x, out, threads); return SL_OK;
    case SL__OP_GAP: gap(x, out, threads); return SL_OK;
    case SL__OP_FLATTEN: case SL__OP_RESHAPE: case SL__OP_SQUEEZE: case SL__OP_UNSQUEEZE:
    case SL__OP_IDENTITY:
        copy_data(x, out); return SL_OK;
    case SL__OP_TO_NHWC: to_layout(x, out, 1, threads); return SL_OK;
    case SL__OP_TO_PLAIN: to_layout(x, out, 0, threads); return SL_OK;
    case SL__OP_GEMM: gemm(n, in, out); return SL_OK;
    case SL__OP_MATMUL: matmul(n, in[0], in[1], out); return SL_OK;
    case SL__OP_CONCAT: concat(n, in, out); return SL_OK;
    case SL__OP_SHAPE: {
        int64_t s = 0;
        if (n->has_axes) { s = n->axes[0] < 0 ? n->axes[0] + x->rank : n->axes[0]; if (s < 0) s = 0; }
        for (size_t k = 0; k < out->count; k++) out->i[k] = x->dims[s + (int64_t)k];
        return SL_OK;
    }
    case SL__OP_GATHER:
        if (gather(n, x, in[1], out)) return sl__err_set(err, SL_E_CORRUPT, "Gather index out of range");
        return SL_OK;
    case SL__OP_REDUCEMEAN: reduce_mean(n, in, out); return SL_OK;
    case SL__OP_SOFTMAX: softmax(n, x, out); return SL_OK;
    case SL__OP_TRANSPOSE: transpose(n, x, out); return SL_OK;
    default:
        return sl__err_set(err, SL_E_INTERNAL, "no kernel for %s", sl__op_name(n->op));
    }
    if (out->f != x->f) memcpy(out->f, x->f, x->count * sizeof(float));
    size_t chunks = (out->count + SL__ACT_CHUNK - 1) / SL__ACT_CHUNK;
#pragma omp parallel for schedule(static) num_threads(threads) if (chunks > 1)
    for (size_t q = 0; q < chunks; q++) {
        size_t k0 = q * SL__ACT_CHUNK;
        sl__act_apply(out->f + k0, out->count - k0 < SL__ACT_CHUNK ? out->count - k0 : SL__ACT_CHUNK, &a, 1);
    }
    return SL_OK;
}
