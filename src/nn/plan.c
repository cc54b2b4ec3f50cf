/*
 * nn/plan.c - execution plans: for one batch size, shape inference over the optimized
 * graph, folding of shape arithmetic (Shape, Gather, Concat, ... on known shapes become
 * constants), layout assignment (rank-4 activations channels-last between the operators that
 * handle it; conversions inserted where an operator needs the plain layout), and one memory
 * arena planned from tensor lifetimes (greedy by size, best offset; in-place for element-wise
 * operators and for the residual sum fused into a oneDNN convolution).
 *
 * In int8 mode (oneDNN backend) a plan is preceded by calibration: the fp32 plan for the same
 * batch runs fixed synthetic images and records every tensor's range, from which each
 * convolution's input quantization is taken (dnnl.c); both plans come from the same
 * build_steps, so their value numbering is identical (checked).
 *
 * Plans are built with the model's thread count set as the OpenMP thread count (oneDNN fixes
 * a primitive's team at creation); a forward pass sets it too and restores the caller's.
 *
 * Execution contexts (arena + scratch + oneDNN stream and memory objects bound to the arena)
 * are pooled per plan: a forward pass takes a free context, so concurrent callers never share
 * memory and steady-state inference allocates nothing.
 *
 * Invariants: values whose lifetimes overlap never overlap in the arena; a step reads only
 * values produced by earlier steps or constants; plans are immutable once published (only the
 * context pool, guarded by the model lock, changes).
 */
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn/nn_internal.h"
#include "nn/dnnl_conv.h"
#include "nn/qlinear.h"
#include "nn/quant.h"
#include "util/util.h"

#define ALIGN 64

typedef struct step {
    sl__node node;       /* copy of the graph node (in/out remapped to plan values) */
    int nin;             /* views passed to the kernel: in[0..nin) (+ sum at index 3) */
    size_t scratch;
    sl__dconv *dconv;    /* oneDNN convolution or NULL (reference kernel) */
    int copy_sum;        /* copy the sum operand into the output before a oneDNN conv */
    int prec;            /* oneDNN conv: the precision it was created with (SL_NN_PRECISION_*) */
    int gnode;           /* the graph node it runs (-1: a layout conversion) */
} step;

typedef struct ctx {
    char *arena;
    void *scratch;
    sl__dctx *dctx;      /* oneDNN stream + bound memories (NULL without oneDNN steps) */
    int busy;
} ctx;

struct sl__plan {
    size_t batch;
    sl__value *sv;       /* shapes and constant data per value (const data not owned unless owned[v]) */
    char *owned;
    char *nhwc;
    size_t nv, capv;
    size_t ngv;          /* values 0..ngv-1 are the graph's; later ones are the plan's own */
    int *root;
    size_t *off;
    step *steps; size_t nsteps, capsteps;
    size_t arena_bytes, scratch_bytes;
    int in_val, out_val;
    ctx **ctxs; size_t nctx;
};

static void ctx_free(ctx *c);

static void plan_free(sl__plan *p) {
    if (!p) return;
    for (size_t k = 0; k < p->nctx; k++) ctx_free(p->ctxs[k]);
    free(p->ctxs);
    for (size_t k = 0; k < p->nsteps; k++) { sl__dconv_free(p->steps[k].dconv); sl__q_release(&p->steps[k].node); }
    for (size_t v = 0; v < p->nv; v++)
        if (p->owned && p->owned[v]) { free(p->sv[v].f); free(p->sv[v].i); free(p->sv[v].q); }
    free(p->sv); free(p->owned); free(p->nhwc); free(p->root); free(p->off); free(p->steps);
    free(p);
}

void sl__plans_free(sl_nn *m) {
    for (size_t k = 0; k < m->nplans; k++) plan_free(m->plans[k]);
    free(m->plans);
    m->plans = NULL;
    m->nplans = 0;
}

static int add_pv(sl__plan *p) {
    if (p->nv == p->capv) {
        size_t nc = p->capv * 2 + 16;
        sl__value *a = sl__reallocarray(p->sv, nc, sizeof *a);
        if (!a) return -1;
        p->sv = a;
        char *o = realloc(p->owned, nc), *h;
        if (!o) return -1;
        p->owned = o;
        h = realloc(p->nhwc, nc);
        if (!h) return -1;
        p->nhwc = h;
        p->capv = nc;
    }
    memset(&p->sv[p->nv], 0, sizeof p->sv[0]);
    p->sv[p->nv].producer = -1;
    p->owned[p->nv] = 0;
    p->nhwc[p->nv] = 0;
    return (int)p->nv++;
}

static step *add_step(sl__plan *p) {
    if (p->nsteps == p->capsteps) {
        size_t nc = p->capsteps * 2 + 32;
        step *a = sl__reallocarray(p->steps, nc, sizeof *a);
        if (!a) return NULL;
        p->steps = a;
        p->capsteps = nc;
    }
    step *s = &p->steps[p->nsteps++];
    memset(s, 0, sizeof *s);
    s->gnode = -1;
    return s;
}

/* A rank-4 NHWC tensor whose bytes equal its plain layout. */
static int trivially_plain(const sl__value *v) {
    return v->rank != 4 || v->dims[1] == 1 || v->dims[2] * v->dims[3] == 1;
}

static void tv_of(const sl__plan *p, int v, sl__tv *t, char *arena) {
    const sl__value *x = &p->sv[v];
    memset(t, 0, sizeof *t);
    t->rank = x->rank;
    memcpy(t->dims, x->dims, sizeof t->dims);
    t->count = x->count;
    t->dtype = x->dtype;
    t->nhwc = p->nhwc[v] && x->rank == 4;
    if (x->is_const) { t->f = x->f; t->i = x->i; t->q = x->q; return; }
    char *base = arena ? arena + p->off[p->root[v]] : NULL;
    if (x->dtype == SL__DT_F32 || x->dtype == SL__DT_Q8) t->f = (float *)(void *)base;
    else if (x->dtype == SL__DT_U8 || x->dtype == SL__DT_S8) t->q = (uint8_t *)base;
    else t->i = (int64_t *)(void *)base;
}

/* Inserts a layout conversion of value v; returns the new value or -1. */
static int convert(sl__plan *p, int v, int to_nhwc, int *cache) {
    if (cache[v] >= 0) return cache[v];
    int nv = add_pv(p);
    if (nv < 0) return -1;
    p->sv[nv] = p->sv[v];
    p->sv[nv].is_const = 0; p->sv[nv].f = NULL; p->sv[nv].i = NULL; p->sv[nv].q = NULL;
    p->nhwc[nv] = (char)to_nhwc;
    step *s = add_step(p);
    if (!s) return -1;
    for (int k = 0; k < SL__MAX_IN; k++) s->node.in[k] = -1;
    s->node.op = to_nhwc ? SL__OP_TO_NHWC : SL__OP_TO_PLAIN;
    s->node.name = to_nhwc ? "to-nhwc" : "to-plain";
    s->node.in[0] = v;
    s->node.nin = 1;
    s->node.out = nv;
    s->node.sum_in = -1;
    s->nin = 1;
    cache[v] = nv;
    return nv;
}

static int want_plain(sl__plan *p, int v, int *cache_plain) {
    if (v < 0 || !p->nhwc[v] || trivially_plain(&p->sv[v])) return v;
    return convert(p, v, 0, cache_plain);
}
static int want_nhwc(sl__plan *p, int v, int *cache_nhwc) {
    if (v < 0 || p->nhwc[v] || p->sv[v].is_const) return v;
    if (trivially_plain(&p->sv[v]) && p->sv[v].rank == 4) {
        /* same bytes: share the storage through a free conversion-less alias */
        return convert(p, v, 1, cache_nhwc);
    }
    return convert(p, v, 1, cache_nhwc);
}

static sl_status fold_step(sl__plan *p, const sl__node *n, sl_error *err) {
    sl__tv tin[SL__MAX_IN + 1], *pin[SL__MAX_IN + 1] = {NULL}, tout;
    for (int j = 0; j < n->nin; j++)
        if (n->in[j] >= 0) { tv_of(p, n->in[j], &tin[j], NULL); tin[j].nhwc = 0; pin[j] = &tin[j]; }
    sl__value *o = &p->sv[n->out];
    tv_of(p, n->out, &tout, NULL);
    tout.nhwc = 0;
    if (sl__value_alloc(o)) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    tout.f = o->f; tout.i = o->i; tout.q = o->q;
    p->owned[n->out] = 1;
    o->is_const = 1;
    size_t sb = sl__op_scratch(n, pin, &tout);
    void *scr = sb ? malloc(sb) : NULL;
    if (sb && !scr) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    sl_status st = sl__op_exec(n, pin, &tout, scr, 1, err);
    free(scr);
    return st;
}

/* Shape pass shared by planning and probing. */
static sl_status build_steps(const sl_nn *m, sl__plan *p, int probe_only, sl_error *err) {
    size_t nv0 = m->nvals;
    p->nv = 0;
    p->ngv = nv0;
    for (size_t v = 0; v < nv0; v++) {
        if (add_pv(p) < 0) return sl__err_set(err, SL_E_NOMEM, "out of memory");
        sl__value *d = &p->sv[v];
        const sl__value *s = &m->vals[v];
        d->dtype = s->dtype;
        d->rank = -1;
        if (s->is_const) {
            d->is_const = 1; d->rank = s->rank; memcpy(d->dims, s->dims, sizeof d->dims);
            d->count = s->count; d->f = s->f; d->i = s->i; d->q = s->q; d->elem = s->elem;
        }
    }
    sl__value *in = &p->sv[m->input];
    in->rank = m->in_rank;
    memcpy(in->dims, m->in_dims, sizeof m->in_dims);
    in->dims[0] = (int64_t)p->batch;
    in->count = 1;
    for (int d = 0; d < in->rank; d++) in->count *= (size_t)in->dims[d];
    p->in_val = m->input;
    int *cache_plain = malloc(sizeof(int) * nv0), *cache_nhwc = malloc(sizeof(int) * nv0);
    if (!cache_plain || !cache_nhwc) { free(cache_plain); free(cache_nhwc); return sl__err_set(err, SL_E_NOMEM, "out of memory"); }
    for (size_t v = 0; v < nv0; v++) cache_plain[v] = cache_nhwc[v] = -1;
    sl_status st = SL_OK;
    for (size_t k = 0; k < m->nnodes && !st; k++) {
        const sl__node *n = &m->nodes[k];
        if (n->dead) continue;
        if ((st = sl__infer_shape(m, n, p->sv, err))) {
            sl__err_prefix(err, "node '%s' (%s)", n->name, sl__op_name(n->op));
            break;
        }
        int all_const = 1;
        for (int j = 0; j < n->nin; j++) if (n->in[j] >= 0 && !p->sv[n->in[j]].is_const) all_const = 0;
        if (n->sum_in >= 0 && !p->sv[n->sum_in].is_const) all_const = 0;
        if (n->op == SL__OP_SHAPE || all_const) {
            if ((st = fold_step(p, n, err))) sl__err_prefix(err, "node '%s' (%s)", n->name, sl__op_name(n->op));
            continue;
        }
        if (probe_only) continue;
        sl__node nn = *n;
        int r4 = p->sv[n->in[0]].rank == 4;
        int out_nhwc = 0;
        switch (n->op) {
        case SL__OP_CONV: case SL__OP_MAXPOOL: case SL__OP_AVGPOOL:
            nn.in[0] = want_nhwc(p, n->in[0], cache_nhwc);
            if (n->sum_in >= 0) nn.sum_in = want_nhwc(p, n->sum_in, cache_nhwc);
            out_nhwc = 1;
            break;
        case SL__OP_BN:
            if (r4) { nn.in[0] = want_nhwc(p, n->in[0], cache_nhwc); out_nhwc = 1; }
            break;
        case SL__OP_GAP: case SL__OP_REDUCEMEAN:
            break; /* any layout in, plain out */
        case SL__OP_QCONV:
            nn.in[0] = want_nhwc(p, n->in[0], cache_nhwc);
            out_nhwc = 1;
            break;
        case SL__OP_QGAP: /* any layout in when channels are axis 1, plain out */
            if (n->clast) nn.in[0] = want_plain(p, n->in[0], cache_plain);
            break;
        case SL__OP_QUANTIZE: case SL__OP_DEQUANTIZE: /* element-wise; per axis on the plain layout */
            if (p->sv[n->in[1]].count > 1) nn.in[0] = want_plain(p, n->in[0], cache_plain);
            else out_nhwc = p->nhwc[n->in[0]];
            break;
        case SL__OP_QADD: {
            const sl__value *o = &p->sv[n->out];
            for (int j = 0; j < 4; j += 3) {
                const sl__value *x = &p->sv[n->in[j]];
                if (o->rank == 4 && p->nhwc[n->in[j]] && x->rank == 4 && !memcmp(x->dims, o->dims, sizeof(int64_t) * 4))
                    out_nhwc = 1;
            }
            break;
        }
        case SL__OP_RELU: case SL__OP_CLIP: case SL__OP_SIGMOID: case SL__OP_HSIGMOID:
        case SL__OP_HSWISH: case SL__OP_SWISH: case SL__OP_IDENTITY:
            out_nhwc = p->nhwc[n->in[0]];
            break;
        case SL__OP_ADD: case SL__OP_SUB: case SL__OP_MUL: case SL__OP_DIV: {
            const sl__value *o = &p->sv[n->out];
            for (int j = 0; j < 2; j++) {
                const sl__value *x = &p->sv[n->in[j]];
                if (o->rank == 4 && p->nhwc[n->in[j]] && !memcmp(x->dims, o->dims, sizeof(int64_t) * 4) && x->rank == 4)
                    out_nhwc = 1;
            }
            break;
        }
        case SL__OP_CONCAT: {
            int64_t ax = n->axis < 0 ? n->axis + p->sv[n->out].rank : n->axis;
            int alln = p->sv[n->out].rank == 4 && ax == 1;
            for (int j = 0; j < n->nin; j++) if (!p->nhwc[n->in[j]]) alln = 0;
            if (alln) { out_nhwc = 1; break; }
            for (int j = 0; j < n->nin; j++) nn.in[j] = want_plain(p, n->in[j], cache_plain);
            break;
        }
        default:
            for (int j = 0; j < n->nin; j++) nn.in[j] = want_plain(p, n->in[j], cache_plain);
        }
        for (int j = 0; j < n->nin; j++) if (n->in[j] >= 0 && nn.in[j] < 0) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        if (n->sum_in >= 0 && nn.sum_in < 0) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        if (st) break;
        p->nhwc[n->out] = (char)(out_nhwc && p->sv[n->out].rank == 4);
        step *s = add_step(p);
        if (!s) { st = sl__err_set(err, SL_E_NOMEM, "out of memory"); break; }
        s->node = nn;
        s->nin = n->nin;
        s->gnode = (int)k;
    }
    free(cache_plain);
    free(cache_nhwc);
    if (st) return st;
    if (probe_only) return SL_OK;
    int ov = m->output;
    if (p->sv[ov].rank < 0) return sl__err_set(err, SL_E_INTERNAL, "output '%s' has no shape", m->vals[ov].name);
    if (p->sv[ov].is_const)
        return sl__err_set(err, SL_E_INVALID, "output '%s' does not depend on the input", m->vals[ov].name);
    if (p->nhwc[ov] && !trivially_plain(&p->sv[ov])) {
        int cp[1] = {-1};
        (void)cp;
        int nv = add_pv(p);
        if (nv < 0) return sl__err_set(err, SL_E_NOMEM, "out of memory");
        p->sv[nv] = p->sv[ov];
        p->nhwc[nv] = 0;
        step *s = add_step(p);
        if (!s) return sl__err_set(err, SL_E_NOMEM, "out of memory");
        for (int k = 0; k < SL__MAX_IN; k++) s->node.in[k] = -1;
        s->node.op = SL__OP_TO_PLAIN; s->node.name = "to-plain"; s->node.in[0] = ov; s->node.nin = 1;
        s->node.out = nv; s->node.sum_in = -1; s->nin = 1;
        ov = nv;
    }
    p->out_val = ov;
    return SL_OK;
}

sl_status sl__plan_probe_shapes(const sl_nn *m, size_t batch, sl__value **out, sl_error *err) {
    *out = NULL;
    sl__plan *p = calloc(1, sizeof *p);
    if (!p) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    p->batch = batch;
    sl_status st = build_steps(m, p, 1, err);
    if (!st) {
        sl__value *v = sl__mallocarray(m->nvals, sizeof *v);
        if (!v) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        else {
            memcpy(v, p->sv, m->nvals * sizeof *v);
            for (size_t k = 0; k < m->nvals; k++) { v[k].f = NULL; v[k].i = NULL; v[k].q = NULL; }
            *out = v;
        }
    }
    plan_free(p);
    return st;
}

static int is_inplace_op(sl__op op) {
    return op == SL__OP_RELU || op == SL__OP_CLIP || op == SL__OP_SIGMOID || op == SL__OP_HSIGMOID ||
           op == SL__OP_HSWISH || op == SL__OP_SWISH || op == SL__OP_IDENTITY ||
           op == SL__OP_FLATTEN || op == SL__OP_RESHAPE || op == SL__OP_SQUEEZE ||
           op == SL__OP_UNSQUEEZE;
}

static size_t vbytes(const sl__value *v) {
    size_t es = sl__dtype_size(v->dtype), b;
    if (sl__mul_size(v->count ? v->count : 1, es, &b)) return SIZE_MAX;
    return (b + ALIGN - 1) / ALIGN * ALIGN;
}

static sl_status plan_memory(sl__plan *p, int use_dnnl_alias, sl_error *err) {
    size_t nv = p->nv, ns = p->nsteps;
    long *first = malloc(sizeof(long) * nv), *last = malloc(sizeof(long) * nv);
    p->root = malloc(sizeof(int) * nv);
    p->off = calloc(nv, sizeof(size_t));
    size_t *order = malloc(sizeof(size_t) * nv);
    if (!first || !last || !p->root || !p->off || !order) {
        free(first); free(last); free(order);
        return sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    for (size_t v = 0; v < nv; v++) { first[v] = last[v] = -2; p->root[v] = (int)v; }
    first[p->in_val] = -1;
    last[p->in_val] = -1;
    for (size_t k = 0; k < ns; k++) {
        const step *s = &p->steps[k];
        for (int j = 0; j < s->node.nin; j++) {
            int v = s->node.in[j];
            if (v >= 0 && !p->sv[v].is_const) last[v] = (long)k;
        }
        if (s->node.sum_in >= 0 && !p->sv[s->node.sum_in].is_const) last[s->node.sum_in] = (long)k;
        first[s->node.out] = last[s->node.out] = (long)k;
    }
    last[p->out_val] = (long)ns;
    /* In-place: the output reuses the storage of an input that dies at this step. */
    for (size_t k = 0; k < ns; k++) {
        const step *s = &p->steps[k];
        int src = -1;
        if (is_inplace_op(s->node.op)) src = s->node.in[0];
        else if (s->node.op == SL__OP_CONV && s->node.sum_in >= 0 && use_dnnl_alias && s->dconv &&
                 p->root[s->node.sum_in] != p->root[s->node.in[0]])
            src = s->node.sum_in; /* never when the conv also reads that buffer as its input */
        if (src < 0 || p->sv[src].is_const || vbytes(&p->sv[src]) != vbytes(&p->sv[s->node.out])) continue;
        int rt = p->root[src];
        if (last[src] != (long)k || last[rt] != (long)k || src == p->in_val || rt == p->in_val) continue;
        p->root[s->node.out] = rt;
        last[rt] = last[s->node.out];
        if (s->node.op == SL__OP_CONV) ((step *)s)->copy_sum = 0;
    }
    /* Extend root lifetimes over their aliases. */
    for (size_t v = 0; v < nv; v++) {
        int r = p->root[v];
        if (r != (int)v && last[v] > last[r]) last[r] = last[v];
    }
    size_t nroots = 0;
    for (size_t v = 0; v < nv; v++)
        if (p->root[v] == (int)v && first[v] != -2 && !p->sv[v].is_const) order[nroots++] = v;
    /* Sort roots by size, largest first (insertion sort: a few hundred values). */
    for (size_t a = 1; a < nroots; a++) {
        size_t x = order[a], b = a;
        while (b > 0 && vbytes(&p->sv[order[b - 1]]) < vbytes(&p->sv[x])) { order[b] = order[b - 1]; b--; }
        order[b] = x;
    }
    size_t total = 0;
    for (size_t a = 0; a < nroots; a++) {
        size_t v = order[a], sz = vbytes(&p->sv[v]);
        if (sz == SIZE_MAX) { free(first); free(last); free(order); return sl__err_set(err, SL_E_TOO_LARGE, "tensor too large"); }
        /* Lowest offset that does not collide with an overlapping placed value. */
        size_t off = 0;
        for (int again = 1; again;) {
            again = 0;
            for (size_t b = 0; b < a; b++) {
                size_t u = order[b], usz = vbytes(&p->sv[u]);
                if (last[u] < first[v] || last[v] < first[u]) continue;
                if (off < p->off[u] + usz && p->off[u] < off + sz) { off = p->off[u] + usz; again = 1; }
            }
        }
        p->off[v] = off;
        if (off + sz > total) total = off + sz;
    }
    p->arena_bytes = total;
    free(first); free(last); free(order);
    return SL_OK;
}

/* Value v is the graph input or its layout conversion. */
static int reads_input(const sl__plan *p, int v) {
    if (v == p->in_val) return 1;
    for (size_t k = 0; k < p->nsteps; k++)
        if (p->steps[k].node.out == v)
            return (p->steps[k].node.op == SL__OP_TO_NHWC || p->steps[k].node.op == SL__OP_TO_PLAIN) &&
                   p->steps[k].node.in[0] == p->in_val;
    return 0;
}

int sl__plan_source(const sl__plan *p, int v) {
    while (v >= 0 && (size_t)v >= p->ngv) {
        int src = -1;
        for (size_t k = 0; k < p->nsteps && src < 0; k++) {
            const sl__node *n = &p->steps[k].node;
            if (n->out == v) src = n->op == SL__OP_TO_NHWC || n->op == SL__OP_TO_PLAIN ? n->in[0] : -2;
        }
        if (src < 0) return -1;
        v = src;
    }
    return v;
}

/* The precision each convolution step runs at (others: -1), from the calibration (quant.c);
 * q: its int8 input quantization. NULL on out of memory. */
static int *conv_precisions(const sl_nn *m, const sl__plan *p, int prec, const sl__qsel *sel, sl__dq *q) {
    int *cp = sl__mallocarray(p->nsteps ? p->nsteps : 1, sizeof(int));
    if (!cp) return NULL;
    for (size_t k = 0; k < p->nsteps; k++) {
        const step *s = &p->steps[k];
        cp[k] = -1;
        if (s->node.op != SL__OP_CONV) continue;
        int in = s->node.in[0];
        cp[k] = sl__quant_conv(m, sel, prec, s->gnode, sl__plan_source(p, in), reads_input(p, in), &q[k]);
    }
    return cp;
}

static int same_dq(const sl__dq *a, const sl__dq *b) {
    return a->sx == b->sx && a->is_signed == b->is_signed && a->sxc == b->sxc;
}

/* The fused activations of producer node n can be applied in the units of steps q (n's outputs
 * are q->sxc's channels when q has one step per channel). */
static int acts_fit(const sl__node *n, const sl__dq *q, int64_t nch) {
    for (int a = 0; a < n->npre; a++) {
        float lo, hi;
        if (!(n->pre[a].kind == SL__ACT_RELU || n->pre[a].kind == SL__ACT_CLIP) || !sl__dq_act_bounds(&n->pre[a], q, nch, &lo, &hi))
            return 0;
    }
    return 1;
}

/* int8 chains: for each value stored quantized, 1 + the step index of a convolution reading it
 * (whose input quantization the producer writes with), else 0. A value is chained when an int8
 * Conv without a fused sum and with only Relu/Clip fused produces it, it is not the plan output,
 * and every reader is an int8 Conv reading it as its input with the same quantization - one step
 * for the tensor, or one per channel (depthwise readers) when the producer's activation bounds
 * survive per-channel steps (sl__dq_act_bounds): the producer then requantizes each channel
 * with its own step, which spares the depthwise convolution the per-channel quantization of a
 * float copy. Returns a calloc'ed array, or NULL on out of memory. */
static int *chain_values(const sl__plan *p, const int *cp, const sl__dq *q) {
    int *c = calloc(p->nv ? p->nv : 1, sizeof(int));
    int *uses = calloc(p->nv ? p->nv : 1, sizeof(int));
    int *prod = calloc(p->nv ? p->nv : 1, sizeof(int));
    if (!c || !uses || !prod) { free(c); free(uses); free(prod); return NULL; }
    for (size_t k = 0; k < p->nsteps; k++) {
        const sl__node *n = &p->steps[k].node;
        if (n->op != SL__OP_CONV || cp[k] != SL_NN_PRECISION_INT8 || n->sum_in >= 0 || n->out == p->out_val) continue;
        int ok = 1;
        for (int a = 0; a < n->npre; a++) ok &= n->pre[a].kind == SL__ACT_RELU || n->pre[a].kind == SL__ACT_CLIP;
        c[n->out] = ok ? -1 : 0; /* candidate; reader not known yet */
        prod[n->out] = (int)k;
    }
    for (size_t k = 0; k < p->nsteps; k++) {
        const sl__node *n = &p->steps[k].node;
        for (int j = 0; j < n->nin; j++) {
            int v = n->in[j];
            if (v < 0) continue;
            uses[v]++;
            if (!(n->op == SL__OP_CONV && j == 0 && cp[k] == SL_NN_PRECISION_INT8)) c[v] = 0;
            else if (c[v] > 0 && !same_dq(&q[c[v] - 1], &q[k])) c[v] = 0;
            else if (c[v]) c[v] = (int)k + 1;
        }
        if (n->sum_in >= 0) c[n->sum_in] = 0;
    }
    for (size_t v = 0; v < p->nv; v++) {
        if (!uses[v] || c[v] < 0) c[v] = 0;
        if (c[v] > 0) {
            const sl__node *pn = &p->steps[prod[v]].node;
            if (!acts_fit(pn, &q[c[v] - 1], p->sv[pn->out].dims[1])) c[v] = 0;
        }
    }
    free(uses);
    free(prod);
    return c;
}

/* Builds the plan for `batch` at precision prec. sel (bf16 / int8 with oneDNN): which
 * convolutions run reduced and each int8 input quantization (quant.c); chain: keep tensors in
 * int8 between int8 convolutions. */
static sl_status plan_build(const sl_nn *m, size_t batch, int prec, const sl__qsel *sel,
                            int chain, sl__plan **out, sl_error *err) {
    *out = NULL;
    sl__plan *p = calloc(1, sizeof *p);
    if (!p) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    p->batch = batch;
    sl_status st = build_steps(m, p, 0, err);
    int *qv = NULL, *cp = NULL;
    sl__dq *dq = NULL;
    int calq = sel && prec != SL_NN_PRECISION_FP32; /* calibrated reduced precision (oneDNN) */
    if (!st && calq &&
        (!(dq = sl__callocarray(p->nsteps ? p->nsteps : 1, sizeof *dq)) || !(cp = conv_precisions(m, p, prec, sel, dq)) ||
         (prec == SL_NN_PRECISION_INT8 && chain && !(qv = chain_values(p, cp, dq)))))
        st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    /* oneDNN convolutions. */
    for (size_t k = 0; !st && k < p->nsteps; k++) {
        step *s = &p->steps[k];
        sl__tv tin[SL__MAX_IN + 1], *pin[SL__MAX_IN + 1] = {NULL}, tout;
        for (int j = 0; j < s->node.nin; j++) if (s->node.in[j] >= 0) { tv_of(p, s->node.in[j], &tin[j], NULL); pin[j] = &tin[j]; }
        if (s->node.sum_in >= 0) { tv_of(p, s->node.sum_in, &tin[SL__SUM_SLOT], NULL); pin[SL__SUM_SLOT] = &tin[SL__SUM_SLOT]; }
        tv_of(p, s->node.out, &tout, NULL);
        sl__dq oq, *qp = NULL, *oqp = NULL;
        int in_q = 0, cprec = calq && cp[k] >= 0 ? cp[k] : prec;
        if (prec != SL_NN_PRECISION_INT8 || calq) { s->node.wq = NULL; s->node.wsc = NULL; } /* not the own int8 kernels */
        if (cprec == SL_NN_PRECISION_INT8 && calq && s->node.op == SL__OP_CONV) {
            qp = &dq[k];
            in_q = qv && qv[s->node.in[0]];
            if (qv && qv[s->node.out]) { oq = dq[qv[s->node.out] - 1]; oqp = &oq; }
        }
        if (sl__q_is(s->node.op) && (st = sl__q_prepare(&s->node, pin, &tout, m->backend, err))) break;
        s->scratch = sl__op_scratch(&s->node, pin, &tout);
        s->node.gemm = m->backend != SL_NN_BACKEND_REF;
        if (s->node.op == SL__OP_CONV && !s->node.wq && sl__dnnl_available() &&
            (m->backend == SL_NN_BACKEND_AUTO || prec == SL_NN_PRECISION_BF16)) {
            size_t scr = 0;
            if (cprec == SL_NN_PRECISION_INT8 && !qp) cprec = SL_NN_PRECISION_FP32;
            st = sl__dconv_create(&s->node, pin[0], pin[1], pin[2], &tout, cprec, qp, in_q, oqp, &s->dconv, &scr, err);
            s->prec = cprec;
            if (st && (in_q || oqp)) { sl__err_prefix(err, "node '%s' (Conv, int8 chain)", s->node.name); break; }
            if (!st && oqp) p->sv[s->node.out].dtype = SL__DT_Q8;
            if (st && cprec != SL_NN_PRECISION_FP32) {
                /* no int8 / bf16 implementation for this convolution on this CPU (oneDNN has no
                 * bf16 convolution without AVX-512): fp32, counted as such in sl_nn_info */
                sl_error_clear(err);
                s->prec = SL_NN_PRECISION_FP32;
                st = sl__dconv_create(&s->node, pin[0], pin[1], pin[2], &tout, SL_NN_PRECISION_FP32, NULL, 0,
                                      NULL, &s->dconv, &scr, err);
            }
            if (st) { sl__err_prefix(err, "node '%s' (Conv)", s->node.name); break; }
            s->scratch = scr;
            s->copy_sum = s->node.sum_in >= 0;
        }
        if (s->scratch > p->scratch_bytes) p->scratch_bytes = s->scratch;
    }
    free(qv);
    free(cp);
    free(dq);
    if (!st) st = plan_memory(p, 1, err);
    if (st) { plan_free(p); return st; }
    *out = p;
    return SL_OK;
}

static sl_status ctx_new(const sl__plan *p, ctx **out, sl_error *err);
static sl_status run_steps(sl__plan *p, ctx *c, int threads, const sl__observer *obs, double *prof,
                           sl_error *err);

/* Builds with chains first; if oneDNN lacks a kernel one of them needs, without. */
static sl_status plan_build_chained(const sl_nn *m, size_t batch, int prec, const sl__qsel *sel, sl__plan **out,
                                    sl_error *err) {
    sl_status st = plan_build(m, batch, prec, sel, 1, out, err);
    if (st && st != SL_E_NOMEM && sel && prec == SL_NN_PRECISION_INT8) {
        sl_error_clear(err);
        st = plan_build(m, batch, prec, sel, 0, out, err);
    }
    return st;
}

/* The plan for `batch` at the model's precision (bf16 / int8 on oneDNN: calibrated first). */
static sl_status plan_make(const sl_nn *m, size_t batch, sl__plan **out, sl_error *err) {
    if (m->precision == SL_NN_PRECISION_FP32 || m->backend != SL_NN_BACKEND_AUTO || !sl__dnnl_available())
        return plan_build(m, batch, m->precision, NULL, 0, out, err);
    sl_status st = sl__quant_ensure(m, err);
    if (st) return sl__err_prefix(err, "calibration");
    sl__qsel sel = {m->calib, NULL};
    return plan_build_chained(m, batch, m->precision, &sel, out, err);
}

sl_status sl__plan_new_chain(const sl_nn *m, size_t batch, int prec, const sl__qsel *sel, int threads, int chain,
                             sl__plan **out, sl_error *err) {
    /* oneDNN fixes a primitive's threads when it is created (see get_plan) */
    int old = omp_get_max_threads();
    omp_set_num_threads(threads > 0 ? threads : 1);
    sl_status st = chain ? plan_build_chained(m, batch, prec, sel, out, err) : plan_build(m, batch, prec, sel, 0, out, err);
    omp_set_num_threads(old);
    return st;
}

sl_status sl__plan_new(const sl_nn *m, size_t batch, int prec, const sl__qsel *sel, int threads, sl__plan **out,
                       sl_error *err) {
    return sl__plan_new_chain(m, batch, prec, sel, threads, 1, out, err);
}

void sl__plan_delete(sl__plan *p) { plan_free(p); }

int64_t sl__plan_conv_macs(const sl__plan *p, int node) {
    for (size_t k = 0; k < p->nsteps; k++) {
        const sl__node *n = &p->steps[k].node;
        if (p->steps[k].gnode != node || n->op != SL__OP_CONV) continue;
        const sl__value *w = &p->sv[n->in[1]], *y = &p->sv[n->out];
        if (w->rank < 1 || w->dims[0] <= 0 || !p->batch) return 0;
        return (int64_t)(y->count / p->batch) * (int64_t)(w->count / (size_t)w->dims[0]);
    }
    return 0;
}

sl_status sl__plan_run(sl__plan *p, const float *in, float *out, const sl__observer *obs, int threads, sl_error *err) {
    ctx *c = NULL;
    sl_status st = ctx_new(p, &c, err);
    if (st) return st;
    sl__tv tin, to;
    tv_of(p, p->in_val, &tin, c->arena);
    if (tin.q) sl__q_from_float(in, tin.count, tin.dtype, tin.q);
    else memcpy(tin.f, in, tin.count * sizeof(float));
    if (obs) obs->fn(obs->u, p, p->in_val, &tin);
    st = run_steps(p, c, threads, obs, NULL, err);
    if (!st) {
        tv_of(p, p->out_val, &to, c->arena);
        if (to.q) sl__q_to_float(to.q, to.count, to.dtype, out);
        else memcpy(out, to.f, to.count * sizeof(float));
    }
    ctx_free(c);
    return st;
}

static sl_status get_plan(const sl_nn *m, size_t batch, sl__plan **out, sl_error *err) {
    pthread_mutex_t *mu = m->lock;
    pthread_mutex_lock(mu);
    for (size_t k = 0; k < m->nplans; k++)
        if (m->plans[k]->batch == batch) { *out = m->plans[k]; pthread_mutex_unlock(mu); return SL_OK; }
    sl__plan *p = NULL;
    /* oneDNN fixes a primitive's thread count (its work split and the size of the OpenMP team
     * it runs on) at creation, from the creating thread's OpenMP ICV: set it to the model's
     * count here, for every path that builds a plan (forward, output-shape queries). */
    int old = omp_get_max_threads();
    if (m->threads > 0) omp_set_num_threads(m->threads);
    sl_status st = plan_make(m, batch, &p, err);
    if (m->threads > 0) omp_set_num_threads(old);
    if (!st) {
        sl__plan **a = sl__reallocarray(m->plans, m->nplans + 1, sizeof *a);
        if (!a) { plan_free(p); st = sl__err_set(err, SL_E_NOMEM, "out of memory"); }
        else {
            sl_nn *mm = (sl_nn *)m; /* plan cache: logically const, guarded by the lock */
            mm->plans = a;
            mm->plans[mm->nplans++] = p;
            *out = p;
        }
    }
    pthread_mutex_unlock(mu);
    return st;
}

static sl_status ctx_new(const sl__plan *p, ctx **out, sl_error *err) {
    ctx *c = calloc(1, sizeof *c);
    if (!c) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    c->arena = aligned_alloc(ALIGN, p->arena_bytes ? p->arena_bytes : ALIGN);
    c->scratch = p->scratch_bytes ? aligned_alloc(ALIGN, (p->scratch_bytes + ALIGN - 1) / ALIGN * ALIGN) : NULL;
    if (!c->arena || (p->scratch_bytes && !c->scratch)) goto nomem;
    int any = 0;
    for (size_t k = 0; k < p->nsteps; k++) if (p->steps[k].dconv) any = 1;
    if (any) {
        if (!(c->dctx = sl__dctx_new(p->nsteps))) goto nomem;
        for (size_t k = 0; k < p->nsteps; k++) {
            const step *s = &p->steps[k];
            if (!s->dconv) continue;
            sl__tv x, y;
            tv_of(p, s->node.in[0], &x, c->arena);
            tv_of(p, s->node.out, &y, c->arena);
            if (sl__dctx_bind(c->dctx, k, s->dconv, x.f, y.f, c->scratch)) goto nomem;
        }
    }
    *out = c;
    return SL_OK;
nomem:
    sl__dctx_free(c->dctx);
    free(c->arena); free(c->scratch); free(c);
    return sl__err_set(err, SL_E_NOMEM, "out of memory for the inference arena (%zu bytes)", p->arena_bytes);
}

static void ctx_free(ctx *c) {
    if (!c) return;
    sl__dctx_free(c->dctx);
    free(c->arena);
    free(c->scratch);
    free(c);
}

static sl_status ctx_get(const sl_nn *m, sl__plan *p, ctx **out, sl_error *err) {
    pthread_mutex_t *mu = m->lock;
    pthread_mutex_lock(mu);
    for (size_t k = 0; k < p->nctx; k++)
        if (!p->ctxs[k]->busy) { p->ctxs[k]->busy = 1; *out = p->ctxs[k]; pthread_mutex_unlock(mu); return SL_OK; }
    ctx *c = NULL;
    sl_status st = ctx_new(p, &c, err);
    if (!st) {
        ctx **a = sl__reallocarray(p->ctxs, p->nctx + 1, sizeof *a);
        if (!a) { st = sl__err_set(err, SL_E_NOMEM, "out of memory"); ctx_free(c); }
        else { p->ctxs = a; p->ctxs[p->nctx++] = c; c->busy = 1; *out = c; }
    }
    pthread_mutex_unlock(mu);
    return st;
}

static void ctx_put(const sl_nn *m, ctx *c) {
    pthread_mutex_t *mu = m->lock;
    pthread_mutex_lock(mu);
    c->busy = 0;
    pthread_mutex_unlock(mu);
}

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Executes the plan's steps on context c (input already in the arena). obs (calibration): shown
 * every float value a step produces. prof (profiling): each step's wall time in seconds is added
 * to prof[2 step], its process CPU time to prof[2 step + 1]. */
static sl_status run_steps(sl__plan *p, ctx *c, int threads, const sl__observer *obs, double *prof,
                           sl_error *err) {
    sl_status st = SL_OK;
    for (size_t k = 0; k < p->nsteps && !st; k++) {
        step *s = &p->steps[k];
        double t0 = prof ? sl__now() : 0, c0 = prof ? cpu_now() : 0;
        sl__tv tv[SL__MAX_IN + 1], *pin[SL__MAX_IN + 1] = {NULL}, tout;
        for (int j = 0; j < s->node.nin; j++) if (s->node.in[j] >= 0) { tv_of(p, s->node.in[j], &tv[j], c->arena); pin[j] = &tv[j]; }
        if (s->node.sum_in >= 0) { tv_of(p, s->node.sum_in, &tv[SL__SUM_SLOT], c->arena); pin[SL__SUM_SLOT] = &tv[SL__SUM_SLOT]; }
        tv_of(p, s->node.out, &tout, c->arena);
        if (s->dconv) {
            if (s->copy_sum && pin[SL__SUM_SLOT]->f != tout.f) memcpy(tout.f, pin[SL__SUM_SLOT]->f, tout.count * sizeof(float));
            st = sl__dctx_exec(c->dctx, k, s->dconv, err);
        } else {
            st = sl__op_exec(&s->node, pin, &tout, c->scratch, threads, err);
        }
        if (prof) { prof[2 * k] += sl__now() - t0; prof[2 * k + 1] += cpu_now() - c0; }
        if (st) sl__err_prefix(err, "node '%s' (%s)", s->node.name, sl__op_name(s->node.op));
        if (!st && obs && tout.dtype == SL__DT_F32 && tout.f) obs->fn(obs->u, p, s->node.out, &tout);
    }
    return st;
}

static sl_status forward(const sl_nn *m, const float *in, size_t batch, float *out, double *prof,
                         sl__plan **plan, sl_error *err) {
    sl__plan *p = NULL;
    sl_status st = get_plan(m, batch, &p, err);
    if (st) return st;
    if (plan) *plan = p;
    ctx *c = NULL;
    if ((st = ctx_get(m, p, &c, err))) return st;
    /* The caller's OpenMP thread count is restored on return (it is per calling thread). */
    int old_threads = omp_get_max_threads();
    int threads = m->threads > 0 ? m->threads : old_threads;
    omp_set_num_threads(threads);
    sl__tv tin;
    tv_of(p, p->in_val, &tin, c->arena);
    if (tin.q) sl__q_from_float(in, tin.count, tin.dtype, tin.q); /* a uint8 / int8 input */
    else memcpy(tin.f, in, tin.count * sizeof(float));
    st = run_steps(p, c, threads, NULL, prof, err);
    if (!st) {
        sl__tv to;
        tv_of(p, p->out_val, &to, c->arena);
        if (to.q) sl__q_to_float(to.q, to.count, to.dtype, out);
        else memcpy(out, to.f, to.count * sizeof(float));
    }
    omp_set_num_threads(old_threads);
    ctx_put(m, c);
    return st;
}

size_t sl__nn_micro_batch(const sl_nn *m, size_t batch) {
    size_t t = (size_t)(m->threads > 0 ? m->threads : omp_get_max_threads());
    if (m->batch_fixed || batch <= t || m->params >= m->acts) return batch;
    return t;
}

sl_status sl__nn_forward(const sl_nn *m, const float *in, size_t batch, float *out,
                          sl_error *err) {
    size_t mb = sl__nn_micro_batch(m, batch);
    if (mb >= batch) return forward(m, in, batch, out, NULL, NULL, err);
    size_t per_in = 1;
    for (int d = 1; d < m->in_rank; d++) per_in *= (size_t)m->in_dims[d];
    sl_status st = SL_OK;
    for (size_t b = 0; b < batch && !st; b += mb) {
        size_t n = batch - b < mb ? batch - b : mb;
        st = forward(m, in + b * per_in, n, out + b * m->embed_dim, NULL, NULL, err);
    }
    return st;
}

/* Appends to o (cap bytes, *len used), truncating at the end. */
static void put(char *o, size_t cap, size_t *len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(o + *len, cap - *len, fmt, ap);
    va_end(ap);
    if (w > 0) *len += (size_t)w < cap - *len ? (size_t)w : cap - *len - 1;
}

/* The profile as text: time per operator type, then one line per step, by CPU time (t: wall
 * and CPU seconds per step, summed over reps passes). */
static char *profile_text(const sl__plan *p, const double *t, int reps) {
    size_t cap = 1024 + p->nsteps * 200, len = 0;
    char *o = malloc(cap);
    size_t *ord = sl__mallocarray(p->nsteps ? p->nsteps : 1, sizeof *ord);
    if (!o || !ord) { free(o); free(ord); return NULL; }
    double tot[2] = {0, 0}, per_op[SL__OP_COUNT][2] = {{0}};
    int cnt_op[SL__OP_COUNT] = {0};
    for (size_t k = 0; k < p->nsteps; k++) {
        for (int j = 0; j < 2; j++) { tot[j] += t[2 * k + j]; per_op[p->steps[k].node.op][j] += t[2 * k + j]; }
        cnt_op[p->steps[k].node.op]++;
        ord[k] = k;
    }
    for (size_t a = 1; a < p->nsteps; a++) {
        size_t x = ord[a], b = a;
        while (b > 0 && t[2 * ord[b - 1] + 1] < t[2 * x + 1]) { ord[b] = ord[b - 1]; b--; }
        ord[b] = x;
    }
#define PUT(...) put(o, cap, &len, __VA_ARGS__)
    PUT("profile: batch %zu, mean of %d passes: %.3f ms wall, %.3f ms CPU (all threads) per pass, %zu steps\n",
        p->batch, reps, 1e3 * tot[0] / reps, 1e3 * tot[1] / reps, p->nsteps);
    PUT("  %-18s %5s %10s %10s %6s\n", "operator", "steps", "wall ms", "CPU ms", "CPU %");
    for (int op = 0; op < SL__OP_COUNT; op++)
        if (cnt_op[op])
            PUT("  %-18s %5d %10.3f %10.3f %5.1f%%\n", sl__op_name((sl__op)op), cnt_op[op], 1e3 * per_op[op][0] / reps,
                1e3 * per_op[op][1] / reps, tot[1] > 0 ? 100 * per_op[op][1] / tot[1] : 0);
    PUT("  %4s  %-18s %9s %9s  %-20s %-16s %s\n", "step", "operator", "wall ms", "CPU ms", "kernel", "output",
        "node");
    for (size_t a = 0; a < p->nsteps; a++) {
        const step *s = &p->steps[ord[a]];
        const sl__value *v = &p->sv[s->node.out];
        char shp[64] = "";
        size_t sl = 0;
        for (int d = 0; d < v->rank && sl < sizeof shp - 24; d++)
            sl += (size_t)snprintf(shp + sl, sizeof shp - sl, "%s%lld", d ? "x" : "", (long long)v->dims[d]);
        PUT("  %4zu  %-18s %9.3f %9.3f  %-20.20s %-16s %s\n", ord[a], sl__op_name(s->node.op),
            1e3 * t[2 * ord[a]] / reps, 1e3 * t[2 * ord[a] + 1] / reps, s->dconv ? sl__dconv_impl(s->dconv) : "own",
            shp, s->node.name ? s->node.name : "");
    }
#undef PUT
    free(ord);
    return o;
}

sl_status sl__nn_profile(const sl_nn *m, const float *in, size_t batch, float *out, int reps, char **text,
                         sl_error *err) {
    *text = NULL;
    sl__plan *p = NULL;
    sl_status st = forward(m, in, batch, out, NULL, &p, err); /* builds the plan, warms up */
    if (st) return st;
    double *t = calloc(2 * p->nsteps + 1, sizeof *t);
    if (!t) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    if (reps < 1) reps = 1;
    for (int r = 0; r < reps && !st; r++) st = forward(m, in, batch, out, t, NULL, err);
    if (!st && !(*text = profile_text(p, t, reps))) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    free(t);
    return st;
}

int sl__plan_output_shape(const sl_nn *m, size_t batch, int64_t dims[8], sl_error *err) {
    sl__plan *p = NULL;
    if (!m->calib && m->precision != SL_NN_PRECISION_FP32 && m->backend == SL_NN_BACKEND_AUTO) {
        /* not calibrated yet: shapes only, so that asking for them (sl_nn_load does) does not
         * calibrate on synthetic images before the caller's sl_nn_calibrate */
        sl__value *v = NULL;
        if (sl__plan_probe_shapes(m, batch, &v, err)) return -1;
        memcpy(dims, v[m->output].dims, sizeof(int64_t) * 8);
        int r = v[m->output].rank;
        free(v);
        return r;
    }
    if (get_plan(m, batch, &p, err)) return -1;
    memcpy(dims, p->sv[p->out_val].dims, sizeof(int64_t) * 8);
    return p->sv[p->out_val].rank;
}

int sl__plan_conv_summary(const sl_nn *m, size_t batch, char *buf, size_t n, sl_error *err) {
    sl__plan *p = NULL;
    if (get_plan(m, batch, &p, err)) return -1;
    int cnt[3] = {0, 0, 0}, own = 0, qd = 0, qown = 0;
    for (size_t k = 0; k < p->nsteps; k++) {
        const step *s = &p->steps[k];
        if (s->node.op == SL__OP_QCONV) { if (s->node.qprim) qd++; else qown++; }
        if (s->node.op != SL__OP_CONV) continue;
        if (!s->dconv) own++;
        else cnt[s->prec]++;
    }
    int chained = 0;
    for (size_t v = 0; v < p->nv; v++) chained += p->sv[v].dtype == SL__DT_Q8;
    snprintf(buf, n, "%d fp32, %d bf16, %d int8 (oneDNN), %d own kernels; %d tensors kept in int8 between "
             "convolutions", cnt[SL_NN_PRECISION_FP32], cnt[SL_NN_PRECISION_BF16], cnt[SL_NN_PRECISION_INT8],
             own, chained);
    if (qd + qown) {
        size_t L = strlen(buf);
        snprintf(buf + L, n > L ? n - L : 0, "; QLinearConv: %d on oneDNN int8, %d on own kernels", qd, qown);
    }
    return 0;
}
