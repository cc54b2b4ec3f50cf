/*
 * nn/graph.c - turns a parsed ONNX graph into the engine's graph and does the
 * load-time work: constant folding (Constant nodes, any node whose inputs are all constant),
 * folding BatchNormalization into the preceding Conv (W' = W*s, b' = (b-mean)*s + beta with
 * s = gamma/sqrt(var+eps); Ioffe & Szegedy 2015), fusing activations (Relu, Clip, Sigmoid,
 * HardSigmoid, HardSwish, x*sigmoid(x) = SiLU) and residual additions into the producing Conv
 * or Gemm, and dead-code elimination down to the requested output.
 *
 * Invariants: nodes stay in topological order (ONNX requires it; checked); every value has at
 * most one producer; a fused node computes exactly what the nodes it replaced computed, in the
 * same order of operations (activation(conv) then +sum then activation), so fp32 results match
 * the unfused graph to rounding. Shape-dependent folding (Shape -> Gather -> Concat -> Reshape)
 * happens per batch size in plan.c, where shapes are known.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/nn_internal.h"
#include "util/util.h"

static const char *const op_names[SL__OP_COUNT] = {
    "Conv", "BatchNormalization", "Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Add",
    "Sub", "Mul", "Div", "MaxPool", "AveragePool", "GlobalAveragePool", "Flatten", "Gemm",
    "MatMul", "Reshape", "Concat", "Squeeze", "Unsqueeze", "Identity", "Shape", "Gather",
    "ReduceMean", "Softmax", "Transpose", "Swish", "ToNHWC", "ToPlain"};

const char *sl__op_name(sl__op op) { return op < SL__OP_COUNT ? op_names[op] : "?"; }

int sl__graph_find_value(const sl_nn *m, const char *name) {
    for (size_t k = m->nvals; k-- > 0;)
        if (m->vals[k].name && !strcmp(m->vals[k].name, name)) return (int)k;
    return -1;
}

int sl__graph_add_value(sl_nn *m, const char *name) {
    if (m->nvals == m->capvals) {
        size_t nc = m->capvals ? m->capvals * 2 : 64;
        sl__value *p = sl__reallocarray(m->vals, nc, sizeof *p);
        if (!p) return -1;
        m->vals = p;
        m->capvals = nc;
    }
    sl__value *v = &m->vals[m->nvals];
    memset(v, 0, sizeof *v);
    v->producer = -1;
    v->dtype = SL__DT_F32;
    v->rank = -1;
    v->name = sl__strdup(name ? name : "");
    if (!v->name) return -1;
    return (int)m->nvals++;
}

static sl__node *add_node(sl_nn *m) {
    if (m->nnodes == m->capnodes) {
        size_t nc = m->capnodes ? m->capnodes * 2 : 64;
        sl__node *p = sl__reallocarray(m->nodes, nc, sizeof *p);
        if (!p) return NULL;
        m->nodes = p;
        m->capnodes = nc;
    }
    sl__node *n = &m->nodes[m->nnodes++];
    memset(n, 0, sizeof *n);
    for (int k = 0; k < SL__MAX_IN; k++) n->in[k] = -1;
    n->out = -1;
    n->sum_in = -1;
    return n;
}

static int64_t attr_i(const sl__onnx_node *o, const char *name, int64_t def) {
    const sl__onnx_attr *a = sl__onnx_attr_find(o, name);
    return a ? a->i : def;
}
static float attr_f(const sl__onnx_node *o, const char *name, float def) {
    const sl__onnx_attr *a = sl__onnx_attr_find(o, name);
    return a ? a->f : def;
}

/* Copies an INTS attribute of exactly `want` entries (or up to max if want < 0). Returns count
 * or -1 when absent, -2 when malformed. */
static int attr_ints(const sl__onnx_node *o, const char *name, int64_t *dst, int want, int max) {
    const sl__onnx_attr *a = sl__onnx_attr_find(o, name);
    if (!a) return -1;
    if ((want >= 0 && a->nints != (size_t)want) || a->nints > (size_t)max) return -2;
    for (size_t k = 0; k < a->nints; k++) dst[k] = a->ints[k];
    return (int)a->nints;
}

static sl_status bad_attr(const sl__onnx_node *o, const char *what, sl_error *err) {
    return sl__err_set(err, SL_E_CORRUPT, "node '%s' (%s): bad attribute %s",
                       o->name ? o->name : "", o->op, what);
}

static int fits_int(int64_t v) { return v >= 0 && v <= 1 << 24; }

/* Spatial attributes of Conv / pools (2-D only). */
static sl_status spatial_attrs(const sl__onnx_node *o, sl__node *n, int pool, sl_error *err) {
    int64_t v[4];
    int c = attr_ints(o, "kernel_shape", v, 2, 2);
    if (c == -2) {
        const sl__onnx_attr *a = sl__onnx_attr_find(o, "kernel_shape");
        if (a && a->nints != 2)
            return sl__err_set(err, SL_E_UNSUPPORTED, "node '%s' (%s): only 2-D is supported",
                               o->name ? o->name : "", o->op);
        return bad_attr(o, "kernel_shape", err);
    }
    if (c == 2) {
        if (!fits_int(v[0]) || !fits_int(v[1]) || !v[0] || !v[1]) return bad_attr(o, "kernel_shape", err);
        n->kh = (int)v[0]; n->kw = (int)v[1];
    } else if (pool) return bad_attr(o, "kernel_shape (missing)", err);
    n->sh = n->sw = n->dh = n->dw = 1;
    if ((c = attr_ints(o, "strides", v, 2, 2)) == -2) return bad_attr(o, "strides", err);
    if (c == 2) {
        if (!fits_int(v[0]) || !fits_int(v[1]) || !v[0] || !v[1]) return bad_attr(o, "strides", err);
        n->sh = (int)v[0]; n->sw = (int)v[1];
    }
    if ((c = attr_ints(o, "dilations", v, 2, 2)) == -2) return bad_attr(o, "dilations", err);
    if (c == 2) {
        if (!fits_int(v[0]) || !fits_int(v[1]) || !v[0] || !v[1]) return bad_attr(o, "dilations", err);
        n->dh = (int)v[0]; n->dw = (int)v[1];
    }
    if ((c = attr_ints(o, "pads", v, 4, 4)) == -2) return bad_attr(o, "pads", err);
    if (c == 4) {
        for (int k = 0; k < 4; k++) if (!fits_int(v[k])) return bad_attr(o, "pads", err);
        n->pt = (int)v[0]; n->pl = (int)v[1]; n->pb = (int)v[2]; n->pr = (int)v[3];
    }
    const sl__onnx_attr *ap = sl__onnx_attr_find(o, "auto_pad");
    if (ap && ap->s) {
        if (!strcmp(ap->s, "NOTSET")) n->auto_pad = 0;
        else if (!strcmp(ap->s, "SAME_UPPER")) n->auto_pad = 1;
        else if (!strcmp(ap->s, "SAME_LOWER")) n->auto_pad = 2;
        else if (!strcmp(ap->s, "VALID")) n->auto_pad = 3;
        else return bad_attr(o, "auto_pad", err);
    }
    n->ceil_mode = (int)attr_i(o, "ceil_mode", 0);
    n->count_include_pad = (int)attr_i(o, "count_include_pad", 0);
    int64_t g = attr_i(o, "group", 1);
    if (g < 1 || g > 1 << 24) return bad_attr(o, "group", err);
    n->group = (int)g;
    return SL_OK;
}

/* Makes a constant value from an ONNX tensor, taking its data. */
static int const_from_tensor(sl_nn *m, const char *name, sl__onnx_tensor *t) {
    int v = sl__graph_add_value(m, name);
    if (v < 0) return -1;
    sl__value *x = &m->vals[v];
    x->is_const = 1;
    x->dtype = t->dtype;
    x->rank = t->rank;
    memcpy(x->dims, t->dims, sizeof x->dims);
    x->count = t->count;
    x->f = t->f; t->f = NULL;
    x->i = t->i; t->i = NULL;
    return v;
}

static sl_status unsupported(const sl__onnx_node *o, sl_error *err) {
    return sl__err_set(err, SL_E_UNSUPPORTED, "operator '%s%s%s' (node '%s') is not supported",
                       o->domain && o->domain[0] ? o->domain : "",
                       o->domain && o->domain[0] ? "." : "", o->op, o->name ? o->name : "");
}

/* The operators the engine converts (besides Constant), with their input counts. This table is
 * also the engine's operator registry (sl__nn_op_supported): the ONNX conformance test
 * (tests/test_nn.c) runs the node tests of exactly these operators, so an operator converted
 * elsewhere must be reported by sl__nn_op_supported too, or its tests are skipped. */
static const struct { const char *name; sl__op op; int minin, maxin; } table[] = {
    {"Conv", SL__OP_CONV, 2, 3}, {"BatchNormalization", SL__OP_BN, 5, 5},
    {"Relu", SL__OP_RELU, 1, 1}, {"Clip", SL__OP_CLIP, 1, 3}, {"Sigmoid", SL__OP_SIGMOID, 1, 1},
    {"HardSigmoid", SL__OP_HSIGMOID, 1, 1}, {"HardSwish", SL__OP_HSWISH, 1, 1},
    {"Add", SL__OP_ADD, 2, 2}, {"Sub", SL__OP_SUB, 2, 2}, {"Mul", SL__OP_MUL, 2, 2},
    {"Div", SL__OP_DIV, 2, 2}, {"MaxPool", SL__OP_MAXPOOL, 1, 1},
    {"AveragePool", SL__OP_AVGPOOL, 1, 1}, {"GlobalAveragePool", SL__OP_GAP, 1, 1},
    {"Flatten", SL__OP_FLATTEN, 1, 1}, {"Gemm", SL__OP_GEMM, 2, 3},
    {"MatMul", SL__OP_MATMUL, 2, 2}, {"Reshape", SL__OP_RESHAPE, 2, 2},
    {"Concat", SL__OP_CONCAT, 1, SL__MAX_IN}, {"Squeeze", SL__OP_SQUEEZE, 1, 2},
    {"Unsqueeze", SL__OP_UNSQUEEZE, 1, 2}, {"Identity", SL__OP_IDENTITY, 1, 1},
    {"Dropout", SL__OP_IDENTITY, 1, 3}, {"Shape", SL__OP_SHAPE, 1, 1},
    {"Gather", SL__OP_GATHER, 2, 2}, {"ReduceMean", SL__OP_REDUCEMEAN, 1, 2},
    {"Softmax", SL__OP_SOFTMAX, 1, 1}, {"Transpose", SL__OP_TRANSPOSE, 1, 1},
};

int sl__nn_op_supported(const char *domain, const char *op) {
    if (domain && domain[0] && strcmp(domain, "ai.onnx")) return 0;
    if (!strcmp(op, "Constant")) return 1;
    for (size_t k = 0; k < sizeof table / sizeof table[0]; k++)
        if (!strcmp(op, table[k].name)) return 1;
    return 0;
}

/* 1 when value `name` is read by a node of the file or is a graph output. */
static int onnx_value_used(const sl__onnx_model *o, const char *name) {
    for (size_t k = 0; k < o->noutputs; k++) if (!strcmp(o->outputs[k].name, name)) return 1;
    for (size_t k = 0; k < o->nnodes; k++)
        for (int j = 0; j < o->nodes[k].nin; j++) if (!strcmp(o->nodes[k].in[j], name)) return 1;
    return 0;
}

/* Converts one ONNX node; appends 0 or 1 engine nodes. */
static sl_status convert_node(sl_nn *m, sl__onnx_node *o, size_t idx, sl_error *err) {
    const char *op = o->op;
    const char *nm = o->name && o->name[0] ? o->name : NULL;
    char namebuf[64];
    if (!nm) { snprintf(namebuf, sizeof namebuf, "%s#%zu", op, idx); nm = namebuf; }
    if (o->domain && o->domain[0] && strcmp(o->domain, "ai.onnx")) return unsupported(o, err);
    if (o->nout < 1 || !o->out[0][0])
        return sl__err_set(err, SL_E_CORRUPT, "node '%s' (%s) has no output", nm, op);
    if (sl__graph_find_value(m, o->out[0]) >= 0)
        return sl__err_set(err, SL_E_CORRUPT, "node '%s' (%s): output '%s' is produced twice", nm,
                           op, o->out[0]);

    if (!strcmp(op, "Constant")) {
        const sl__onnx_attr *a = o->nattrs == 1 ? &o->attrs[0] : NULL;
        sl__onnx_tensor t;
        memset(&t, 0, sizeof t);
        if (!a) return bad_attr(o, "(Constant needs exactly one)", err);
        if (!strcmp(a->name, "value") && a->t) {
            t = *a->t;
            t.name = NULL;
            memset(a->t, 0, sizeof *a->t);
        } else if (!strcmp(a->name, "value_float") || !strcmp(a->name, "value_floats")) {
            int one = !strcmp(a->name, "value_float");
            t.dtype = SL__DT_F32;
            t.rank = one ? 0 : 1;
            t.count = one ? 1 : a->nfloats;
            t.dims[0] = (int64_t)t.count;
            t.f = sl__mallocarray(t.count ? t.count : 1, sizeof(float));
            if (!t.f) return sl__err_set(err, SL_E_NOMEM, "out of memory");
            if (one) t.f[0] = a->f; else if (a->nfloats) memcpy(t.f, a->floats, a->nfloats * sizeof(float));
        } else if (!strcmp(a->name, "value_int") || !strcmp(a->name, "value_ints")) {
            int one = !strcmp(a->name, "value_int");
            t.dtype = SL__DT_I64;
            t.rank = one ? 0 : 1;
            t.count = one ? 1 : a->nints;
            t.dims[0] = (int64_t)t.count;
            t.i = sl__mallocarray(t.count ? t.count : 1, sizeof(int64_t));
            if (!t.i) return sl__err_set(err, SL_E_NOMEM, "out of memory");
            if (one) t.i[0] = a->i; else if (a->nints) memcpy(t.i, a->ints, a->nints * sizeof(int64_t));
        } else {
            return sl__err_set(err, SL_E_UNSUPPORTED, "node '%s' (Constant): attribute '%s' not supported",
                               nm, a->name);
        }
        int v = const_from_tensor(m, o->out[0], &t);
        sl__onnx_tensor_clear(&t);
        return v < 0 ? sl__err_set(err, SL_E_NOMEM, "out of memory") : SL_OK;
    }

    int t = -1;
    for (size_t k = 0; k < sizeof table / sizeof table[0]; k++)
        if (!strcmp(op, table[k].name)) { t = (int)k; break; }
    if (t < 0) return unsupported(o, err);
    int nin = o->nin;
    while (nin > 0 && !o->in[nin - 1][0]) nin--; /* trailing absent optionals */
    if (nin < table[t].minin || nin > table[t].maxin)
        return sl__err_set(err, t >= 0 && nin > table[t].maxin ? SL_E_UNSUPPORTED : SL_E_CORRUPT,
                           "node '%s' (%s): %d inputs, expected %d..%d", nm, op, nin,
                           table[t].minin, table[t].maxin);
    if (!strcmp(op, "Dropout")) {
        /* inference: identity. Training mode (random zeroing, opset 12+: a true training_mode
         * input) is refused unless the ratio is 0, where it is the identity too; so is a mask
         * output anything reads. */
        int tv = nin >= 3 && o->in[2][0] ? sl__graph_find_value(m, o->in[2]) : -2;
        const sl__value *tm = tv >= 0 ? &m->vals[tv] : NULL;
        if (tv == -1 || (tm && (!tm->is_const || tm->dtype != SL__DT_I64 || tm->count != 1)))
            return sl__err_set(err, SL_E_UNSUPPORTED, "node '%s' (Dropout): training_mode is not a constant", nm);
        if (tm && tm->i[0]) {
            int rv = nin >= 2 && o->in[1][0] ? sl__graph_find_value(m, o->in[1]) : -2;
            float ratio = rv == -2 ? 0.5f
                          : rv >= 0 && m->vals[rv].is_const && m->vals[rv].dtype == SL__DT_F32 && m->vals[rv].count == 1
                          ? m->vals[rv].f[0] : -1.0f;
            if (ratio != 0.0f)
                return sl__err_set(err, SL_E_UNSUPPORTED, "node '%s' (Dropout): training_mode = true (random dropout "
                                   "at training time) is not supported: export the model in eval mode", nm);
        }
        if (o->nout > 1 && o->out[1][0] && onnx_value_used(m->onnx, o->out[1]))
            return sl__err_set(err, SL_E_UNSUPPORTED, "node '%s' (Dropout): the mask output is not supported", nm);
        nin = 1;
    }
    if (o->nout > 1) {
        for (int k = 1; k < o->nout; k++)
            if (o->out[k][0] && strcmp(op, "Dropout"))
                return sl__err_set(err, SL_E_UNSUPPORTED, "node '%s' (%s): extra outputs", nm, op);
    }
    sl__node *n = add_node(m);
    if (!n) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    n->op = table[t].op;
    n->name = sl__strdup(nm);
    if (!n->name) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    n->nin = nin;
    for (int k = 0; k < nin; k++) {
        if (!o->in[k][0]) { n->in[k] = -1; continue; }
        int v = sl__graph_find_value(m, o->in[k]);
        if (v < 0)
            return sl__err_set(err, SL_E_CORRUPT,
                               "node '%s' (%s): input '%s' is not produced by any earlier node, "
                               "initializer or graph input", nm, op, o->in[k]);
        n->in[k] = v;
    }
    int ov = sl__graph_add_value(m, o->out[0]);
    if (ov < 0) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    n->out = ov;
    m->vals[ov].producer = (int)(n - m->nodes);

    sl_status st = SL_OK;
    switch (n->op) {
    case SL__OP_CONV: case SL__OP_MAXPOOL: case SL__OP_AVGPOOL:
        st = spatial_attrs(o, n, n->op != SL__OP_CONV, err);
        if (!st && n->op == SL__OP_MAXPOOL && attr_i(o, "storage_order", 0))
            st = sl__err_set(err, SL_E_UNSUPPORTED, "node '%s' (MaxPool): storage_order 1", nm);
        if (!st && o->nout > 1 && o->out[1][0])
            st = sl__err_set(err, SL_E_UNSUPPORTED, "node '%s' (MaxPool): Indices output", nm);
        break;
    case SL__OP_BN:
        n->eps = attr_f(o, "epsilon", 1e-5f);
        if (attr_i(o, "training_mode", 0)) st = sl__err_set(err, SL_E_UNSUPPORTED, "node '%s' (BatchNormalization): training_mode", nm);
        break;
    case SL__OP_CLIP:
        n->cmin = -INFINITY; n->cmax = INFINITY;
        if (m->onnx->opset < 11) { n->cmin = attr_f(o, "min", -INFINITY); n->cmax = attr_f(o, "max", INFINITY); }
        break;
    case SL__OP_HSIGMOID:
        n->cmin = attr_f(o, "alpha", 0.2f); n->cmax = attr_f(o, "beta", 0.5f);
        break;
    case SL__OP_FLATTEN: n->axis = attr_i(o, "axis", 1); break;
    case SL__OP_GEMM:
        n->alpha = attr_f(o, "alpha", 1.0f); n->beta = attr_f(o, "beta", 1.0f);
        n->trans_a = (int)attr_i(o, "transA", 0); n->trans_b = (int)attr_i(o, "transB", 0);
        break;
    case SL__OP_CONCAT: case SL__OP_GATHER:
        n->axis = attr_i(o, "axis", 0);
        if (n->op == SL__OP_CONCAT && !sl__onnx_attr_find(o, "axis")) st = bad_attr(o, "axis (missing)", err);
        break;
    case SL__OP_SOFTMAX: n->axis = attr_i(o, "axis", m->onnx->opset >= 13 ? -1 : 1); n->has_axes = m->onnx->opset < 13; break;
    case SL__OP_SQUEEZE: case SL__OP_UNSQUEEZE: case SL__OP_REDUCEMEAN: {
        int c = attr_ints(o, "axes", n->axes, -1, SL__NN_MAX_RANK);
        if (c == -2) st = bad_attr(o, "axes", err);
        else if (c >= 0) { n->naxes = c; n->has_axes = 1; }
        n->keepdims = (int)attr_i(o, "keepdims", 1);
        break;
    }
    case SL__OP_TRANSPOSE: {
        int c = attr_ints(o, "perm", n->perm, -1, SL__NN_MAX_RANK);
        if (c == -2) st = bad_attr(o, "perm", err);
        n->naxes = c < 0 ? 0 : c;
        n->has_axes = c >= 0;
        break;
    }
    case SL__OP_SHAPE:
        if (sl__onnx_attr_find(o, "start") || sl__onnx_attr_find(o, "end")) {
            n->axes[0] = attr_i(o, "start", 0);
            n->axes[1] = attr_i(o, "end", INT64_MAX);
            n->has_axes = 1;
        }
        break;
    case SL__OP_RESHAPE:
        n->keepdims = (int)attr_i(o, "allowzero", 0); /* reused field: allowzero */
        break;
    default: break;
    }
    return st;
}

/* ---- folding and fusion ------------------------------------------------------------------ */

static void count_uses(sl_nn *m) {
    for (size_t v = 0; v < m->nvals; v++) m->vals[v].nuses = 0;
    for (size_t k = 0; k < m->nnodes; k++) {
        sl__node *n = &m->nodes[k];
        if (n->dead) continue;
        for (int j = 0; j < n->nin; j++) if (n->in[j] >= 0) m->vals[n->in[j]].nuses++;
        if (n->sum_in >= 0) m->vals[n->sum_in].nuses++;
    }
    if (m->output >= 0) m->vals[m->output].nuses++;
}

/* Evaluates every live node whose inputs are all constant; its output becomes constant. */
static sl_status fold_constants(sl_nn *m, sl_error *err) {
    for (size_t k = 0; k < m->nnodes; k++) {
        sl__node *n = &m->nodes[k];
        if (n->dead || n->op == SL__OP_SHAPE) continue;
        int all = 1;
        for (int j = 0; j < n->nin; j++)
            if (n->in[j] >= 0 && !m->vals[n->in[j]].is_const) all = 0;
        if (!all) continue;
        sl__value *o = &m->vals[n->out];
        sl_status st = sl__infer_shape(m, n, m->vals, err);
        if (st) return sl__err_prefix(err, "node '%s' (%s)", n->name, sl__op_name(n->op));
        sl__tv tin[SL__MAX_IN + 1], *pin[SL__MAX_IN + 1] = {NULL}, tout;
        memset(tin, 0, sizeof tin);
        memset(&tout, 0, sizeof tout);
        for (int j = 0; j < n->nin; j++) {
            pin[j] = NULL;
            if (n->in[j] < 0) continue;
            sl__value *x = &m->vals[n->in[j]];
            tin[j].f = x->f; tin[j].i = x->i; tin[j].rank = x->rank; tin[j].count = x->count;
            tin[j].dtype = x->dtype;
            memcpy(tin[j].dims, x->dims, sizeof x->dims);
            pin[j] = &tin[j];
        }
        tout.rank = o->rank; tout.count = o->count; tout.dtype = o->dtype;
        memcpy(tout.dims, o->dims, sizeof o->dims);
        size_t cnt = o->count ? o->count : 1;
        if (o->dtype == SL__DT_F32) tout.f = o->f = sl__mallocarray(cnt, sizeof(float));
        else tout.i = o->i = sl__mallocarray(cnt, sizeof(int64_t));
        if (!o->f && !o->i) return sl__err_set(err, SL_E_NOMEM, "out of memory");
        size_t sb = sl__op_scratch(n, pin, &tout);
        void *scratch = sb ? malloc(sb) : NULL;
        if (sb && !scratch) return sl__err_set(err, SL_E_NOMEM, "out of memory");
        st = sl__op_exec(n, pin, &tout, scratch, 1, err);
        free(scratch);
        if (st) return sl__err_prefix(err, "node '%s' (%s)", n->name, sl__op_name(n->op));
        o->is_const = 1;
        o->producer = -1;
        n->dead = 1;
        m->folded++;
    }
    return SL_OK;
}

static int single_consumer(const sl_nn *m, int v, size_t after, size_t *which) {
    if (m->vals[v].nuses != 1 || v == m->output) return 0;
    for (size_t k = after; k < m->nnodes; k++) {
        const sl__node *n = &m->nodes[k];
        if (n->dead) continue;
        for (int j = 0; j < n->nin; j++) if (n->in[j] == v) { *which = k; return 1; }
        if (n->sum_in == v) return 0;
    }
    return 0;
}

static sl_status fold_bn(sl_nn *m, sl_error *err) {
    for (size_t k = 0; k < m->nnodes; k++) {
        sl__node *c = &m->nodes[k];
        if (c->dead || c->op != SL__OP_CONV || c->npre || c->sum_in >= 0) continue;
        size_t b;
        if (!single_consumer(m, c->out, k + 1, &b)) continue;
        sl__node *bn = &m->nodes[b];
        if (bn->op != SL__OP_BN || bn->in[0] != c->out) continue;
        int ok = m->vals[c->in[1]].is_const && m->vals[c->in[1]].rank == 4 &&
                 (c->nin < 3 || c->in[2] < 0 || m->vals[c->in[2]].is_const);
        int64_t co = m->vals[c->in[1]].dims[0];
        if (co <= 0) continue;
        for (int j = 1; j < 5; j++) {
            sl__value *p = &m->vals[bn->in[j]];
            if (!p->is_const || p->dtype != SL__DT_F32 || p->count != (size_t)co) ok = 0;
        }
        if (!ok) continue;
        /* New weight and bias constants (the originals may be shared). */
        sl__value *w = &m->vals[c->in[1]];
        size_t per = w->count / (size_t)co;
        float *nw = sl__mallocarray(w->count, sizeof(float));
        float *nb = sl__mallocarray((size_t)co, sizeof(float));
        if (!nw || !nb) { free(nw); free(nb); return sl__err_set(err, SL_E_NOMEM, "out of memory"); }
        const float *g = m->vals[bn->in[1]].f, *be = m->vals[bn->in[2]].f,
                    *mu = m->vals[bn->in[3]].f, *var = m->vals[bn->in[4]].f;
        const float *ob = c->nin >= 3 && c->in[2] >= 0 ? m->vals[c->in[2]].f : NULL;
        for (int64_t o = 0; o < co; o++) {
            double s = (double)g[o] / sqrt((double)var[o] + (double)bn->eps);
            for (size_t e = 0; e < per; e++) nw[(size_t)o * per + e] = (float)(w->f[(size_t)o * per + e] * s);
            nb[o] = (float)(((ob ? ob[o] : 0.0) - mu[o]) * s + be[o]);
        }
        int64_t wd[4];
        memcpy(wd, w->dims, sizeof wd);
        int vw = sl__graph_add_value(m, "bnfold.w"), vb = sl__graph_add_value(m, "bnfold.b");
        if (vw < 0 || vb < 0) { free(nw); free(nb); return sl__err_set(err, SL_E_NOMEM, "out of memory"); }
        c = &m->nodes[k];
        bn = &m->nodes[b];
        sl__value *W = &m->vals[vw], *B = &m->vals[vb];
        W->is_const = B->is_const = 1;
        W->rank = 4; memcpy(W->dims, wd, sizeof wd); W->count = per * (size_t)co; W->f = nw;
        B->rank = 1; B->dims[0] = co; B->count = (size_t)co; B->f = nb;
        c->in[1] = vw; c->in[2] = vb; c->nin = 3;
        /* The conv now produces the BN's output value. */
        m->vals[c->out].producer = -1;
        c->out = bn->out;
        m->vals[bn->out].producer = (int)k;
        bn->dead = 1;
        m->fused_bn++;
        count_uses(m);
    }
    return SL_OK;
}

static int act_of(const sl_nn *m, const sl__node *n, sl__actp *a) {
    switch (n->op) {
    case SL__OP_RELU: a->kind = SL__ACT_RELU; return 1;
    case SL__OP_SIGMOID: a->kind = SL__ACT_SIGMOID; return 1;
    case SL__OP_HSWISH: a->kind = SL__ACT_HSWISH; return 1;
    case SL__OP_SWISH: a->kind = SL__ACT_SWISH; return 1;
    case SL__OP_HSIGMOID: a->kind = SL__ACT_HSIGMOID; a->a = n->cmin; a->b = n->cmax; return 1;
    case SL__OP_CLIP: {
        a->kind = SL__ACT_CLIP;
        a->a = n->cmin; a->b = n->cmax;
        for (int j = 1; j < n->nin; j++) {
            if (n->in[j] < 0) continue;
            const sl__value *v = &m->vals[n->in[j]];
            if (!v->is_const || v->dtype != SL__DT_F32 || v->count != 1) return 0;
            if (j == 1) a->a = v->f[0]; else a->b = v->f[0];
        }
        return 1;
    }
    default: return 0;
    }
}

/* Rewrites Sigmoid(x) * x into Swish(x) (SiLU) and HardSigmoid(x; 1/6, 1/2) * x into
 * HardSwish(x) (how PyTorch exports nn.Hardswish before opset 14). */
static void fuse_swish(sl_nn *m) {
    for (size_t k = 0; k < m->nnodes; k++) {
        sl__node *s = &m->nodes[k];
        if (s->dead) continue;
        int hs = s->op == SL__OP_HSIGMOID && fabsf(s->cmin - 1.0f / 6.0f) < 1e-6f && s->cmax == 0.5f;
        if (s->op != SL__OP_SIGMOID && !hs) continue;
        int x = s->in[0];
        size_t mi;
        if (!single_consumer(m, s->out, k + 1, &mi)) continue;
        sl__node *mul = &m->nodes[mi];
        if (mul->op != SL__OP_MUL) continue;
        if (!((mul->in[0] == x && mul->in[1] == s->out) || (mul->in[1] == x && mul->in[0] == s->out)))
            continue;
        s->op = hs ? SL__OP_HSWISH : SL__OP_SWISH;
        m->vals[s->out].producer = -1;
        s->out = mul->out;
        m->vals[mul->out].producer = (int)k;
        mul->dead = 1;
        count_uses(m);
    }
}

/* Probe shapes (batch = probe_batch) are in `shp`; used to decide sum fusion. */
static void fuse_acts_and_sums(sl_nn *m, const sl__value *shp) {
    for (size_t k = 0; k < m->nnodes; k++) {
        sl__node *c = &m->nodes[k];
        /* BatchNormalization left standalone (pre-activation networks: BN, Relu, Conv) takes
         * its activations too, so they cost no pass of their own. */
        if (c->dead || (c->op != SL__OP_CONV && c->op != SL__OP_GEMM && c->op != SL__OP_BN)) continue;
        size_t cur = k;
        for (;;) {
            size_t nx;
            if (!single_consumer(m, c->out, cur + 1, &nx)) break;
            sl__node *x = &m->nodes[nx];
            sl__actp a = {SL__ACT_NONE, 0, 0};
            if (act_of(m, x, &a) && x->in[0] == c->out) {
                int *cnt = c->sum_in >= 0 ? &c->npost : &c->npre;
                sl__actp *arr = c->sum_in >= 0 ? c->post : c->pre;
                if (*cnt >= SL__MAX_FUSED_ACTS) break;
                arr[(*cnt)++] = a;
                m->fused_act++;
            } else if (x->op == SL__OP_ADD && c->op == SL__OP_CONV && c->sum_in < 0) {
                int other = x->in[0] == c->out ? x->in[1] : x->in[0];
                if (other == c->out || m->vals[other].is_const) break;
                const sl__value *a0 = &shp[other], *b0 = &shp[c->out];
                if (a0->rank != 4 || b0->rank != 4 || memcmp(a0->dims, b0->dims, 4 * sizeof(int64_t)))
                    break;
                c->sum_in = other;
                m->fused_sum++;
            } else break;
            /* The fused node takes the consumer's place in the order: a fused sum operand may
             * be produced between the two. */
            sl__node merged = *c;
            m->vals[c->out].producer = -1;
            merged.out = x->out;
            free(x->name);
            c->name = NULL;
            c->dead = 1;
            m->nodes[nx] = merged;
            m->vals[merged.out].producer = (int)nx;
            cur = nx;
            c = &m->nodes[cur];
            count_uses(m);
        }
    }
}

/* Marks nodes not needed for `output` dead. */
static void eliminate_dead(sl_nn *m) {
    char *need = calloc(m->nvals, 1);
    if (!need) return; /* not fatal: everything stays live */
    need[m->output] = 1;
    for (size_t k = m->nnodes; k-- > 0;) {
        sl__node *n = &m->nodes[k];
        if (n->dead) continue;
        if (!need[n->out]) { n->dead = 1; continue; }
        for (int j = 0; j < n->nin; j++) if (n->in[j] >= 0) need[n->in[j]] = 1;
        if (n->sum_in >= 0) need[n->sum_in] = 1;
    }
    free(need);
    count_uses(m);
}

/* Re-lays out constant Conv weights for the kernels: OHWI (im2col runs are contiguous input
 * channels), HWC for depthwise (channel-vectorized loop). The value keeps its logical OIHW dims. */
static sl_status layout_weights(sl_nn *m, sl_error *err) {
    for (size_t k = 0; k < m->nnodes; k++) {
        sl__node *n = &m->nodes[k];
        if (n->dead || n->op != SL__OP_CONV || n->wlayout || !m->vals[n->in[1]].is_const) continue;
        const sl__value *w = &m->vals[n->in[1]];
        if (w->rank != 4 || w->dtype != SL__DT_F32) continue;
        int64_t O = w->dims[0], I = w->dims[1], KH = w->dims[2], KW = w->dims[3];
        int dw = n->group > 1 && I == 1 && O == n->group;
        float *nw = sl__mallocarray(w->count ? w->count : 1, sizeof(float));
        if (!nw) return sl__err_set(err, SL_E_NOMEM, "out of memory");
        for (int64_t o = 0; o < O; o++)
            for (int64_t i = 0; i < I; i++)
                for (int64_t y = 0; y < KH; y++)
                    for (int64_t x = 0; x < KW; x++) {
                        float v = w->f[((o * I + i) * KH + y) * KW + x];
                        if (dw) nw[(y * KW + x) * O + o] = v;
                        else nw[((o * KH + y) * KW + x) * I + i] = v;
                    }
        int nv = sl__graph_add_value(m, "conv.w");
        if (nv < 0) { free(nw); return sl__err_set(err, SL_E_NOMEM, "out of memory"); }
        n = &m->nodes[k];
        w = &m->vals[n->in[1]];
        sl__value *W = &m->vals[nv];
        W->is_const = 1; W->rank = 4; memcpy(W->dims, w->dims, sizeof W->dims); W->count = w->count; W->f = nw;
        n->in[1] = nv;
        n->wlayout = dw ? 2 : 1;
    }
    count_uses(m);
    return SL_OK;
}

/* int8 mode: symmetric per-output-channel int8 weights for every dense/grouped convolution
 * except the stem (the one reading the image, kept fp32 for accuracy) and depthwise ones. */
static sl_status quantize_weights(sl_nn *m, sl_error *err) {
    for (size_t k = 0; k < m->nnodes; k++) {
        sl__node *n = &m->nodes[k];
        if (n->dead || n->op != SL__OP_CONV || n->wlayout != 1 || n->in[0] == m->input) continue;
        const sl__value *w = &m->vals[n->in[1]];
        if (w->dims[0] <= 0 || !w->count) continue;
        size_t O = (size_t)w->dims[0], K = w->count / O;
        n->wq = sl__mallocarray(w->count, 1);
        n->wsc = sl__mallocarray(O, sizeof(float));
        if (!n->wq || !n->wsc) return sl__err_set(err, SL_E_NOMEM, "out of memory");
        for (size_t o = 0; o < O; o++) {
            float mx = 0;
            for (size_t j = 0; j < K; j++) mx = fmaxf(mx, fabsf(w->f[o * K + j]));
            float s = mx > 0 ? mx / 127.0f : 1.0f;
            n->wsc[o] = s;
            for (size_t j = 0; j < K; j++) {
                long q = lrintf(w->f[o * K + j] / s);
                n->wq[o * K + j] = (int8_t)(q > 127 ? 127 : q < -127 ? -127 : q);
            }
        }
    }
    return SL_OK;
}

sl_status sl__plan_probe_shapes(const sl_nn *m, size_t batch, sl__value **out, sl_error *err);

/* A global pool: GlobalAveragePool, or an AveragePool/MaxPool/ReduceMean that takes a rank-4
 * map with more than one position to 1x1 (ReduceMean over axes 2 and 3, any keepdims). */
static int is_pool_to_1x1(const sl_nn *m, const sl__node *n, const sl__value *shp) {
    (void)m;
    const sl__value *o = &shp[n->out], *i = n->in[0] >= 0 ? &shp[n->in[0]] : NULL;
    if (n->op == SL__OP_GAP) return 1;
    if (!i || i->rank != 4 || i->dims[2] * i->dims[3] <= 1) return 0;
    if ((n->op == SL__OP_AVGPOOL || n->op == SL__OP_REDUCEMEAN || n->op == SL__OP_MAXPOOL) &&
        o->rank == 4 && o->dims[2] == 1 && o->dims[3] == 1)
        return 1;
    if (n->op == SL__OP_REDUCEMEAN && n->has_axes && n->naxes == 2) {
        int64_t a = n->axes[0] < 0 ? n->axes[0] + 4 : n->axes[0], b = n->axes[1] < 0 ? n->axes[1] + 4 : n->axes[1];
        return (a == 2 && b == 3) || (a == 3 && b == 2);
    }
    return 0;
}

/* Activation elements the fused graph writes per image (probe shapes at batch `probe`). */
static void count_acts(sl_nn *m, const sl__value *shp, size_t probe) {
    int64_t ac = 0;
    for (size_t k = 0; k < m->nnodes; k++)
        if (!m->nodes[k].dead && !shp[m->nodes[k].out].is_const) ac += (int64_t)(shp[m->nodes[k].out].count / probe);
    m->acts = ac;
}

/* Operators that pass a tensor through element by element (or unchanged): walking back over
 * them from a pool finds the layer that made the pooled map. */
static int is_pointwise(sl__op op) {
    return op == SL__OP_RELU || op == SL__OP_CLIP || op == SL__OP_SIGMOID || op == SL__OP_HSIGMOID ||
           op == SL__OP_HSWISH || op == SL__OP_SWISH || op == SL__OP_IDENTITY || op == SL__OP_BN;
}

static int add_alt(sl_nn *m, int v, const sl__value *shp, size_t probe, const char *what) {
    for (int k = 0; k < m->nalts; k++) if (m->alts[k].value == v) return 0;
    struct sl__nn_alt *p = sl__reallocarray(m->alts, (size_t)m->nalts + 1, sizeof *p);
    if (!p) return -1;
    m->alts = p;
    p[m->nalts].value = v;
    p[m->nalts].dim = probe ? shp[v].count / probe : 0;
    snprintf(p[m->nalts].what, sizeof p[m->nalts].what, "%s", what);
    m->nalts++;
    return 0;
}

/* The default embedding: the globally pooled features before the classifier, never class scores.
 * Rule (on the nodes the graph's first output depends on):
 *  1. take the last global pool P;
 *  2. if a Gemm, MatMul or Conv lies between P and the output, that is the classifier: P's output;
 *  3. otherwise, if P pools (through pointwise ops) a 1x1 convolution of a map X with more than
 *     one position, that convolution is the classifier (SqueezeNet/NiN: conv -> pool -> scores):
 *     the global average pool of X (an existing pool of X, else one added to the graph);
 *  4. otherwise P's output (a headless backbone ending in a pool);
 *  5. without a global pool: the input of the last Gemm/MatMul (VGG's fc7), else the output.
 * Records the reason and the alternatives for `cnn info`. Returns the value, or -1 (no memory). */
static int choose_embedding(sl_nn *m, const sl__value *shp, size_t probe) {
    size_t nv = m->nvals;
    char *anc = calloc(nv ? nv : 1, 1), *desc = calloc(nv ? nv : 1, 1);
    if (!anc || !desc) { free(anc); free(desc); return -1; }
    int gout = m->output, out = -1;
    anc[gout] = 1;
    for (size_t k = m->nnodes; k-- > 0;) {
        const sl__node *n = &m->nodes[k];
        if (n->dead || !anc[n->out]) continue;
        for (int j = 0; j < n->nin; j++) if (n->in[j] >= 0) anc[n->in[j]] = 1;
    }
    long P = -1, lastlin = -1;
    for (size_t k = 0; k < m->nnodes; k++) {
        const sl__node *n = &m->nodes[k];
        if (n->dead || !anc[n->out]) continue;
        if (is_pool_to_1x1(m, n, shp)) P = (long)k;
        if ((n->op == SL__OP_GEMM || n->op == SL__OP_MATMUL) && !m->vals[n->in[0]].is_const) lastlin = (long)k;
    }
    int fail = 0;
    char what[128];
    for (size_t k = 0; k < m->nnodes; k++) { /* alternatives: pools and classifier inputs */
        const sl__node *n = &m->nodes[k];
        if (n->dead || !anc[n->out]) continue;
        if (is_pool_to_1x1(m, n, shp) && n->in[0] >= 0) {
            snprintf(what, sizeof what, "global pool of '%s'", m->vals[n->in[0]].name);
            fail |= add_alt(m, n->out, shp, probe, what);
        } else if ((n->op == SL__OP_GEMM || n->op == SL__OP_MATMUL) && !m->vals[n->in[0]].is_const) {
            snprintf(what, sizeof what, "input of '%s' (%s)", n->name, sl__op_name(n->op));
            fail |= add_alt(m, n->in[0], shp, probe, what);
        }
    }
    if (P >= 0) {
        const sl__node *p = &m->nodes[P];
        desc[p->out] = 1;
        const sl__node *lin = NULL;
        for (size_t k = (size_t)P + 1; k < m->nnodes; k++) {
            const sl__node *n = &m->nodes[k];
            if (n->dead) continue;
            int d = 0;
            for (int j = 0; j < n->nin; j++) d |= n->in[j] >= 0 && desc[n->in[j]];
            if (!d) continue;
            desc[n->out] = 1;
            if (anc[n->out] && !lin && (n->op == SL__OP_GEMM || n->op == SL__OP_MATMUL || n->op == SL__OP_CONV))
                lin = n;
        }
        if (lin) {
            out = p->out;
            snprintf(m->choice, sizeof m->choice, "the last global pool, of '%s'; the classifier '%s' (%s) follows it",
                     m->vals[p->in[0]].name, lin->name, sl__op_name(lin->op));
        } else {
            /* walk back from the pool over pointwise ops to the layer that made the map */
            int v = p->in[0];
            const sl__node *c = NULL;
            while (v >= 0 && m->vals[v].producer >= 0) {
                const sl__node *q = &m->nodes[m->vals[v].producer];
                if (q->op == SL__OP_CONV) { c = q; break; }
                if (!is_pointwise(q->op)) break;
                v = q->in[0];
            }
            const sl__value *w = c ? &m->vals[c->in[1]] : NULL;
            int x = c ? c->in[0] : -1;
            if (c && c->group == 1 && w->rank == 4 && w->dims[2] == 1 && w->dims[3] == 1 && c->sum_in < 0 &&
                shp[x].rank == 4 && shp[x].dims[2] * shp[x].dims[3] > 1) {
                /* the feature map X, seen through Identity/Dropout */
                int root = x;
                while (m->vals[root].producer >= 0 && m->nodes[m->vals[root].producer].op == SL__OP_IDENTITY)
                    root = m->nodes[m->vals[root].producer].in[0];
                for (size_t k = 0; k < m->nnodes && out < 0; k++) {
                    const sl__node *n = &m->nodes[k];
                    if (!n->dead && n->op != SL__OP_MAXPOOL && is_pool_to_1x1(m, n, shp) && n->in[0] >= 0) {
                        int r = n->in[0];
                        while (m->vals[r].producer >= 0 && m->nodes[m->vals[r].producer].op == SL__OP_IDENTITY)
                            r = m->nodes[m->vals[r].producer].in[0];
                        if (r == root) out = n->out;
                    }
                }
                const char *how = "an existing pool";
                size_t ci = (size_t)(c - m->nodes);
                if (out < 0) { /* add GlobalAveragePool(X) */
                    char nm[300];
                    snprintf(nm, sizeof nm, "%s.pooled", m->vals[root].name);
                    int nvv = sl__graph_find_value(m, nm) < 0 ? sl__graph_add_value(m, nm) : -1;
                    sl__node *g = nvv >= 0 ? add_node(m) : NULL;
                    if (!g) { free(anc); free(desc); return -1; }
                    g->op = SL__OP_GAP;
                    g->name = sl__strdup(nm);
                    if (!g->name) { free(anc); free(desc); return -1; }
                    g->nin = 1;
                    g->in[0] = root;
                    g->out = nvv;
                    m->vals[nvv].producer = (int)(m->nnodes - 1);
                    out = nvv;
                    how = "added at load";
                }
                p = &m->nodes[P]; /* add_node may have moved the nodes */
                c = &m->nodes[ci];
                snprintf(m->choice, sizeof m->choice,
                         "global average pool of '%s' (%s), the input of the classifier convolution "
                         "'%s'; the last pool '%s' pools class scores", m->vals[root].name, how,
                         c->name, m->vals[p->out].name);
            } else {
                out = p->out;
                snprintf(m->choice, sizeof m->choice, "the last global pool, of '%s' (no classifier after it)",
                         m->vals[p->in[0]].name);
            }
        }
    } else if (lastlin >= 0) {
        out = m->nodes[lastlin].in[0];
        snprintf(m->choice, sizeof m->choice, "no global pool: the input of the last classifier layer '%s' (%s)",
                 m->nodes[lastlin].name, sl__op_name(m->nodes[lastlin].op));
    } else {
        out = gout;
        snprintf(m->choice, sizeof m->choice, "no global pool or classifier layer: the graph's first output");
    }
    free(anc);
    free(desc);
    return fail ? -1 : out;
}

/* FLOPs (2 x multiply-adds) per image and parameter count, from probe shapes at batch 1. */
static void count_cost(sl_nn *m, const sl__value *shp) {
    int64_t fl = 0, pa = 0;
    for (size_t k = 0; k < m->nnodes; k++) {
        const sl__node *n = &m->nodes[k];
        if (n->dead) continue;
        const sl__value *o = &shp[n->out];
        if (n->op == SL__OP_CONV) {
            const sl__value *w = &m->vals[n->in[1]];
            if (w->dims[0] > 0) fl += 2 * (int64_t)o->count * (int64_t)(w->count / (size_t)w->dims[0]);
        } else if (n->op == SL__OP_GEMM || n->op == SL__OP_MATMUL) {
            const sl__value *a = &shp[n->in[0]];
            int64_t kdim = a->rank >= 1 ? a->dims[n->op == SL__OP_GEMM && n->trans_a ? 0 : a->rank - 1] : 1;
            fl += 2 * (int64_t)o->count * kdim;
        } else fl += (int64_t)o->count;
    }
    for (size_t v = 0; v < m->nvals; v++)
        if (m->vals[v].is_const && m->vals[v].dtype == SL__DT_F32 && m->vals[v].nuses > 0)
            pa += (int64_t)m->vals[v].count;
    m->flops = fl;
    m->params = pa;
}

sl_status sl__graph_build(sl_nn *m, const char *output_name, sl_error *err) {
    sl__onnx_model *o = m->onnx;
    sl_status st;
    m->input = m->output = -1;
    if (o->opset > 0 && (o->opset < 7 || o->opset > 21))
        return sl__err_set(err, SL_E_UNSUPPORTED, "ONNX opset %lld not supported (7..21; tested 11..17)",
                           (long long)o->opset);
    for (size_t k = 0; k < o->ninits; k++) {
        if (sl__graph_find_value(m, o->inits[k].name) >= 0)
            return sl__err_set(err, SL_E_CORRUPT, "initializer '%s' defined twice", o->inits[k].name);
        if (const_from_tensor(m, o->inits[k].name, &o->inits[k]) < 0)
            return sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    /* The image input: the first graph input that is not an initializer. */
    for (size_t k = 0; k < o->ninputs; k++) {
        if (sl__graph_find_value(m, o->inputs[k].name) >= 0) continue;
        if (m->input >= 0)
            return sl__err_set(err, SL_E_UNSUPPORTED, "model has more than one input ('%s', '%s')",
                               m->vals[m->input].name, o->inputs[k].name);
        int v = sl__graph_add_value(m, o->inputs[k].name);
        if (v < 0) return sl__err_set(err, SL_E_NOMEM, "out of memory");
        m->input = v;
        const sl__onnx_value *iv = &o->inputs[k];
        if (iv->elem_type != 0 && iv->elem_type != 1)
            return sl__err_set(err, SL_E_UNSUPPORTED, "input '%s' has element type %d (need float32)",
                               iv->name, iv->elem_type);
        if (iv->rank < 1 || iv->rank > 4)
            return sl__err_set(err, SL_E_UNSUPPORTED, "input '%s': rank %d, need a known shape of rank 1..4",
                               iv->name, iv->rank);
        for (int d = 1; d < iv->rank; d++)
            if (iv->dims[d] <= 0)
                return sl__err_set(err, SL_E_UNSUPPORTED,
                                   "input '%s': dimension %d is not fixed (export with a fixed image size)",
                                   iv->name, d);
        {
            uint64_t per = 1;
            for (int d = 1; d < iv->rank; d++) {
                if (iv->dims[d] > (1 << 20)) per = UINT64_MAX; else per *= (uint64_t)iv->dims[d];
                if (per > ((uint64_t)1 << 30)) break;
            }
            if (per > ((uint64_t)1 << 30))
                return sl__err_set(err, SL_E_UNSUPPORTED, "input '%s': more than 2^30 elements per image", iv->name);
            if (iv->dims[0] > SL_NN_MAX_BATCH_MAX)
                return sl__err_set(err, SL_E_UNSUPPORTED, "input '%s': fixed batch %lld above %d", iv->name,
                                   (long long)iv->dims[0], SL_NN_MAX_BATCH_MAX);
        }
        m->in_rank = iv->rank;
        memcpy(m->in_dims, iv->dims, (size_t)iv->rank * sizeof(int64_t));
        m->batch_fixed = iv->dims[0] > 0;
    }
    if (m->input < 0) return sl__err_set(err, SL_E_CORRUPT, "model has no (non-initializer) input");
    for (size_t k = 0; k < o->nnodes; k++)
        if ((st = convert_node(m, &o->nodes[k], k, err))) return st;
    if (!o->noutputs) return sl__err_set(err, SL_E_CORRUPT, "graph has no outputs");
    for (size_t k = 0; k < o->noutputs; k++)
        if (sl__graph_find_value(m, o->outputs[k].name) < 0)
            return sl__err_set(err, SL_E_CORRUPT, "graph output '%s' is never produced", o->outputs[k].name);
    m->output = sl__graph_find_value(m, o->outputs[0].name);
    count_uses(m);
    if ((st = fold_constants(m, err))) return st;

    /* Probe shapes at the smallest batch to choose the default output and fusions. */
    sl__value *shp = NULL;
    size_t probe = m->batch_fixed ? (size_t)m->in_dims[0] : 1;
    if ((st = sl__plan_probe_shapes(m, probe, &shp, err))) return st;
    int out = -1;
    if (output_name && !output_name[0]) {
        out = m->output; /* "" = the graph's first output */
    } else if (output_name) {
        out = sl__graph_find_value(m, output_name);
        if (out < 0) { free(shp); return sl__err_set(err, SL_E_INVALID, "no tensor named '%s' in the model", output_name); }
    } else {
        size_t before = m->nnodes;
        out = choose_embedding(m, shp, probe);
        if (out < 0) { free(shp); return sl__err_set(err, SL_E_NOMEM, "out of memory"); }
        if (m->nnodes != before) { /* a pool was added: probe again */
            free(shp);
            shp = NULL;
            if ((st = sl__plan_probe_shapes(m, probe, &shp, err))) return st;
        }
    }
    if (output_name) snprintf(m->choice, sizeof m->choice, "%s", output_name[0] ? "chosen by name" : "the graph's first output");
    if (m->vals[out].dtype != SL__DT_F32 || m->vals[out].is_const) {
        free(shp);
        return sl__err_set(err, SL_E_INVALID, "tensor '%s' is not a float activation", m->vals[out].name);
    }
    /* Full-graph cost before pruning, for `cnn info`. */
    count_cost(m, shp);
    m->output = out;
    eliminate_dead(m);
    st = fold_bn(m, err);
    if (!st) fuse_swish(m);
    if (!st) fuse_acts_and_sums(m, shp);
    if (!st) count_acts(m, shp, probe ? probe : 1);
    free(shp);
    if (st) return st;
    eliminate_dead(m);
    st = layout_weights(m, err);
    if (!st && m->precision == SL_NN_PRECISION_INT8) st = quantize_weights(m, err);
    return st;
}
