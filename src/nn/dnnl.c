/*
 * nn/dnnl.c - Conv nodes on oneDNN (https://oneapi-src.github.io/oneDNN/, v2.6 C API).
 *
 * Activations are nhwc fp32 (the engine's layout), so no reorders run per inference; weights
 * use format `any` and are reordered once at plan time. Post-ops reproduce the fused graph in
 * order: eltwise ops of `pre`, sum (residual), eltwise ops of `post` (HardSigmoid = linear then
 * clip). In bf16 mode inputs and weights are bfloat16 (the fp32 activation is converted by a
 * reorder into scratch right before the convolution), accumulation and outputs stay fp32, so
 * every other operator is unchanged; oneDNN uses AVX-512-BF16/AMX instructions when present and
 * emulates bf16 otherwise.
 *
 * In int8 mode (sl__dq given) a Conv runs as an oneDNN int8 convolution (VNNI / AMX): the fp32
 * input is quantized by a reorder into scratch (u8 when calibration saw no negative value, else
 * s8; static per-tensor scale sx = range / 255 or / 127), weights are quantized once per output
 * channel (symmetric, sw[oc] = max|w| / 127), the s32 accumulator plus the bias (divided by the
 * scale: oneDNN 2.x applies output scales after the bias) is dequantized by the primitive's
 * per-channel output scales sx * sw[oc], activations and the residual sum are applied in fp32
 * as post-ops. Between two int8 convolutions (plan.c decides) the tensor is stored quantized:
 * the producer requantizes into u8/s8 with the consumer's step (output scales sx*sw/sy, Clip
 * bounds divided by sy) - one per channel for a depthwise consumer (output scales sx*sw[c]/sy[c];
 * a Clip bound must then be 0, infinite or implied by the u8/s8 saturation in every channel,
 * sl__dq_act_bounds) - and the consumer reads it without conversion. Every other tensor stays
 * fp32.
 *
 * Winograd (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016): an
 * fp32 3x3 stride-1 convolution with channel counts that are multiples of 16 runs as oneDNN's
 * Winograd primitive (F(2x2,3x3) or F(4x4,3x3), oneDNN's choice; AVX-512 only - elsewhere primitive
 * creation fails and the direct convolution is used). It needs the blocked nChw16c layout, so
 * the nhwc input is reordered into scratch, the convolution writes a blocked output there (after a
 * reorder of the residual sum operand into it when a sum is fused) and a reorder brings it back
 * to nhwc; ResNet-50's 3x3 convolutions take 1.1-1.9 ms instead of 2.1-2.7 ms each at batch 1,
 * reorders included (docs/cnn.md). Its rounding differs from the direct convolution's by about
 * 1e-7 relative (measured: 2.6e-7 of the largest output on the real-weight ResNet body).
 *
 * Invariants: the engine is created once per process; primitives are immutable after creation
 * and executed with per-context streams, memories and scratchpads, which oneDNN documents as
 * thread-safe.
 */
#include <math.h>
#include <float.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <oneapi/dnnl/dnnl.h>

#include "nn/dnnl_conv.h"
#include "nn/qlinear.h"
#include "util/util.h"

static dnnl_engine_t g_eng;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void eng_init(void) {
    if (dnnl_engine_create(&g_eng, dnnl_cpu, 0) != dnnl_success) g_eng = NULL;
}

int sl__dnnl_available(void) {
    pthread_once(&g_once, eng_init);
    return g_eng != NULL;
}

struct sl__dconv {
    dnnl_primitive_t prim;
    dnnl_memory_t wmem, bmem;
    dnnl_memory_desc_t src_md, src16_md, dst_md, scr_md;
    dnnl_primitive_t cvt;    /* bf16 / int8 mode: fp32 -> bf16 / u8 / s8 reorder of the input */
    size_t scr_bytes;
    int wino;                /* Winograd on blocked copies of the input and output in scratch */
    dnnl_memory_desc_t xb_md, yb_md;
    dnnl_primitive_t r_in, r_out, r_sum;
    size_t xb_off, yb_off;
    char impl[32];
};

typedef struct bind {
    dnnl_memory_t src, dst, scr, src16, xb, yb;
} bind;

struct sl__dctx {
    dnnl_stream_t stream;
    bind *b;
    size_t n;
};

static sl_status dfail(sl_error *err, const char *what, dnnl_status_t s) {
    return sl__err_set(err, s == dnnl_out_of_memory ? SL_E_NOMEM : SL_E_UNSUPPORTED,
                       "oneDNN %s failed (status %d)", what, (int)s);
}

int sl__dq_act_bounds(const sl__actp *a, const sl__dq *oq, int64_t nch, float *lo, float *hi) {
    *lo = -FLT_MAX;
    *hi = FLT_MAX;
    if (a->kind == SL__ACT_RELU) { *lo = 0; return 1; }
    if (a->kind != SL__ACT_CLIP) return !oq;
    if (!oq) {
        if (!isinf(a->a)) *lo = a->a;
        if (!isinf(a->b)) *hi = a->b;
        return 1;
    }
    if (!oq->sxc) {
        if (!isinf(a->a)) *lo = a->a / oq->sx;
        if (!isinf(a->b)) *hi = a->b / oq->sx;
        return 1;
    }
    /* one step per channel: a bound stays when it is 0 (the same in every unit) or infinite, and
     * goes when the conversion's saturation applies it in every channel */
    float qlo = oq->is_signed ? -128.0f : 0.0f, qhi = oq->is_signed ? 127.0f : 255.0f;
    int lo_sat = 1, hi_sat = 1;
    for (int64_t c = 0; c < nch; c++) {
        lo_sat &= a->a / oq->sxc[c] <= qlo;
        hi_sat &= a->b / oq->sxc[c] >= qhi;
    }
    if (a->a == 0) *lo = 0;
    else if (!isinf(a->a) && !lo_sat) return 0;
    return isinf(a->b) || hi_sat;
}

/* An activation as a post-op; oq: the output is stored quantized with that step (only Relu and
 * Clip then, bounds from sl__dq_act_bounds). */
static dnnl_status_t add_act(dnnl_post_ops_t po, const sl__actp *a, const sl__dq *oq, int64_t nch) {
    float lo, hi;
    switch (a->kind) {
    case SL__ACT_RELU: return dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0, 0);
    case SL__ACT_CLIP:
        if (!sl__dq_act_bounds(a, oq, nch, &lo, &hi)) return dnnl_invalid_arguments;
        return dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_clip, lo, hi);
    case SL__ACT_SIGMOID: return dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_logistic, 0, 0);
    case SL__ACT_SWISH: return dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_swish, 1.0f, 0);
    case SL__ACT_HSWISH: return dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_hardswish, 0, 0);
    case SL__ACT_HSIGMOID: {
        dnnl_status_t s = dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_linear, a->a, a->b);
        return s ? s : dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_clip, 0.0f, 1.0f);
    }
    default: return dnnl_success;
    }
}

static void pads_of(const sl__node *n, const sl__tv *x, const sl__tv *w, dnnl_dims_t pl, dnnl_dims_t pr) {
    int64_t p[4];
    sl__conv_pads(n, x->dims[2], x->dims[3], (int)w->dims[2], (int)w->dims[3], p);
    pl[0] = p[0]; pl[1] = p[1]; pr[0] = p[2]; pr[1] = p[3];
}

/* The engine's weight layout (graph.c: OIHW, OHWI or depthwise HWC) as a oneDNN descriptor. */
static dnnl_status_t wuser_desc(dnnl_memory_desc_t *md, int wlayout, int64_t G, int64_t OC, int64_t IC,
                                int64_t KH, int64_t KW, dnnl_dims_t wd4, dnnl_dims_t wd5) {
    if (wlayout == 2) {
        dnnl_dims_t st = {1, KH * KW * G, KH * KW * G, KW * G, G};
        (void)OC; (void)IC;
        return dnnl_memory_desc_init_by_strides(md, 5, wd5, dnnl_f32, st);
    }
    if (G > 1) return dnnl_memory_desc_init_by_tag(md, 5, wd5, dnnl_f32, wlayout ? dnnl_gohwi : dnnl_goihw);
    return dnnl_memory_desc_init_by_tag(md, 4, wd4, dnnl_f32, wlayout ? dnnl_ohwi : dnnl_oihw);
}

/* Per-output-channel symmetric int8 scales of the weights in the engine's layout (levels: 127,
 * or 63 - 7-bit weights - where oneDNN's int8 kernels lack VNNI, see sl__dconv_create). */
static void weight_scales(const sl__tv *w, int wlayout, int64_t OC, float levels, float *sw) {
    size_t K = w->count / (size_t)OC;
    for (int64_t o = 0; o < OC; o++) {
        float mx = 0;
        for (size_t j = 0; j < K; j++) {
            /* depthwise HWC: channel o of every kernel tap is strided by OC */
            float v = wlayout == 2 ? w->f[j * (size_t)OC + (size_t)o] : w->f[(size_t)o * K + j];
            mx = fmaxf(mx, fabsf(v));
        }
        sw[o] = mx > 0 ? mx / levels : 1.0f;
    }
}

sl_status sl__dconv_create(const sl__node *n, const sl__tv *x, const sl__tv *w, const sl__tv *b,
                           const sl__tv *y, int precision, const sl__dq *q, int in_q, const sl__dq *oq,
                           sl__dconv **out, size_t *scratch, sl_error *err) {
    *out = NULL;
    if (!sl__dnnl_available()) return sl__err_set(err, SL_E_UNSUPPORTED, "oneDNN engine unavailable");
    sl__dconv *c = calloc(1, sizeof *c);
    if (!c) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    dnnl_status_t s;
    sl_status st = SL_OK;
    int64_t G = n->group, OC = y->dims[1], IC = x->dims[1], KH = w->dims[2], KW = w->dims[3];
    dnnl_dims_t sd = {x->dims[0], IC, x->dims[2], x->dims[3]};
    dnnl_dims_t dd = {y->dims[0], OC, y->dims[2], y->dims[3]};
    dnnl_dims_t wd5 = {G, OC / G, IC / G, KH, KW}, wd4 = {OC, IC, KH, KW}, bd = {OC};
    dnnl_dims_t strides = {n->sh, n->sw}, dil = {n->dh - 1, n->dw - 1}, pl, pr;
    pads_of(n, x, w, pl, pr);
    dnnl_memory_desc_t wany, wuser, bmd;
    dnnl_convolution_desc_t cd;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_stream_t stream = NULL;
    dnnl_memory_t wusr = NULL;
    dnnl_primitive_t reo = NULL;
    dnnl_primitive_desc_t rpd = NULL;
    int i8 = precision == SL_NN_PRECISION_INT8 && q;
    if (!i8) { in_q = 0; oq = NULL; }
    int bf = precision == SL_NN_PRECISION_BF16 || (i8 && !in_q); /* converted input in scratch */
    dnnl_data_type_t cdt = i8 ? dnnl_s8 : bf ? dnnl_bf16 : dnnl_f32;
    dnnl_data_type_t sdt = i8 ? (q->is_signed ? dnnl_s8 : dnnl_u8) : dnnl_bf16;
    float *sw = NULL, *osc = NULL;
    dnnl_primitive_attr_t cattr = NULL, wattr = NULL;
    if (i8) {
        sw = sl__mallocarray((size_t)OC, sizeof(float));
        osc = sl__mallocarray((size_t)OC, sizeof(float));
        if (!sw || !osc) { st = sl__err_set(err, SL_E_NOMEM, "out of memory"); goto done; }
        /* Without VNNI oneDNN sums pairs of u8 x s8 products in 16 bits with saturation
         * (vpmaddubsw): 7-bit weights keep a pair below 2^15 (OpenVINO's "saturation issue"
         * workaround); for s8 inputs oneDNN itself halves the weights, so they stay 8-bit. */
        weight_scales(w, n->wlayout, OC, sl__dnnl_has_vnni() || q->is_signed ? 127.0f : 63.0f, sw);
        for (int64_t o = 0; o < OC; o++) {
            osc[o] = (q->sxc ? q->sxc[o] : q->sx) * sw[o] / (!oq ? 1.0f : oq->sxc ? oq->sxc[o] : oq->sx);
            sw[o] = 1.0f / sw[o];
        }
    }
    if ((s = dnnl_memory_desc_init_by_tag(&c->src_md, 4, sd, in_q ? sdt : dnnl_f32, dnnl_nhwc)) ||
        (s = dnnl_memory_desc_init_by_tag(&c->src16_md, 4, sd, sdt, dnnl_nhwc)) ||
        (s = dnnl_memory_desc_init_by_tag(&c->dst_md, 4, dd, oq ? (oq->is_signed ? dnnl_s8 : dnnl_u8) : dnnl_f32,
                                          dnnl_nhwc)) ||
        (s = dnnl_memory_desc_init_by_tag(&wany, G > 1 ? 5 : 4, G > 1 ? wd5 : wd4, cdt, dnnl_format_tag_any)) ||
        (s = wuser_desc(&wuser, n->wlayout, G, OC, IC, KH, KW, wd4, wd5)) ||
        (s = dnnl_memory_desc_init_by_tag(&bmd, 1, bd, dnnl_f32, dnnl_x))) {
        st = dfail(err, "memory descriptor", s); goto done;
    }
    /* fp32 3x3 stride-1 convolutions: Winograd when oneDNN has it (AVX-512), on blocked copies */
    c->wino = precision == SL_NN_PRECISION_FP32 && G == 1 && KH == 3 && KW == 3 && n->sh == 1 && n->sw == 1 &&
              n->dh == 1 && n->dw == 1 && IC % 16 == 0 && OC % 16 == 0;
    if (c->wino) {
        if ((s = dnnl_memory_desc_init_by_tag(&c->xb_md, 4, sd, dnnl_f32, dnnl_aBcd16b)) ||
            (s = dnnl_memory_desc_init_by_tag(&c->yb_md, 4, dd, dnnl_f32, dnnl_aBcd16b)) ||
            dnnl_dilated_convolution_forward_desc_init(&cd, dnnl_forward_inference, dnnl_convolution_winograd,
                                                       &c->xb_md, &wany, &bmd, &c->yb_md, strides, dil, pl, pr))
            c->wino = 0;
    }
    if (!c->wino && (s = dnnl_dilated_convolution_forward_desc_init(&cd, dnnl_forward_inference, dnnl_convolution_direct,
                                                        bf ? &c->src16_md : &c->src_md, &wany, &bmd, &c->dst_md, strides, dil, pl, pr))) {
        st = dfail(err, "convolution descriptor", s); goto done;
    }
    if ((s = dnnl_primitive_attr_create(&attr)) || (s = dnnl_post_ops_create(&po))) { st = dfail(err, "attr", s); goto done; }
    if (i8 && (s = dnnl_primitive_attr_set_output_scales(attr, OC, 1 << 1, osc))) { st = dfail(err, "int8 output scales", s); goto done; }
    for (int k = 0; k < n->npre && !s; k++) s = add_act(po, &n->pre[k], i8 ? oq : NULL, OC);
    if (!s && n->sum_in >= 0) s = dnnl_post_ops_append_sum(po, 1.0f);
    for (int k = 0; k < n->npost && !s && n->sum_in >= 0; k++) s = add_act(po, &n->post[k], NULL, OC);
    if (s || (s = dnnl_primitive_attr_set_post_ops(attr, po)) ||
        (s = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user))) {
        st = dfail(err, "post-ops", s); goto done;
    }
    if (c->wino && dnnl_primitive_desc_create(&pd, &cd, attr, g_eng, NULL)) {
        c->wino = 0;
        pd = NULL;
        if ((s = dnnl_dilated_convolution_forward_desc_init(&cd, dnnl_forward_inference, dnnl_convolution_direct,
                                                            &c->src_md, &wany, &bmd, &c->dst_md, strides, dil, pl, pr))) {
            st = dfail(err, "convolution descriptor", s); goto done;
        }
    }
    if (!pd && (s = dnnl_primitive_desc_create(&pd, &cd, attr, g_eng, NULL))) { st = dfail(err, "convolution primitive descriptor", s); goto done; }
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl)
        snprintf(c->impl, sizeof c->impl, "%s", impl);
    const dnnl_memory_desc_t *wmd = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    const dnnl_memory_desc_t *scr = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    c->scr_md = *scr;
    c->scr_bytes = (dnnl_memory_desc_get_size(scr) + 63) / 64 * 64;
    *scratch = c->scr_bytes;
    if (bf) {
        /* bf16 / int8 mode: the fp32 activation is converted into scratch before the conv. */
        *scratch += dnnl_memory_desc_get_size(&c->src16_md);
        dnnl_primitive_desc_t cpd = NULL;
        float inv = i8 ? 1.0f / q->sx : 1.0f, *invc = NULL;
        if (i8 && q->sxc) { /* per-channel steps (depthwise: input channel = output channel) */
            if (!(invc = sl__mallocarray((size_t)IC, sizeof(float)))) { st = sl__err_set(err, SL_E_NOMEM, "out of memory"); goto done; }
            for (int64_t ch = 0; ch < IC; ch++) invc[ch] = 1.0f / q->sxc[ch];
        }
        if (i8 && ((s = dnnl_primitive_attr_create(&cattr)) ||
                   (s = dnnl_primitive_attr_set_output_scales(cattr, invc ? IC : 1, invc ? 1 << 1 : 0, invc ? invc : &inv)))) {
            free(invc);
            st = dfail(err, "int8 input quantization", s); goto done;
        }
        free(invc);
        if ((s = dnnl_reorder_primitive_desc_create(&cpd, &c->src_md, g_eng, &c->src16_md, g_eng, cattr)) ||
            (s = dnnl_primitive_create(&c->cvt, cpd))) {
            if (cpd) dnnl_primitive_desc_destroy(cpd);
            st = dfail(err, "bf16 conversion", s); goto done;
        }
        dnnl_primitive_desc_destroy(cpd);
    }
    if (c->wino) {
        /* scratch: oneDNN's scratchpad, then the blocked input, then the blocked output */
        c->xb_off = *scratch;
        *scratch += (dnnl_memory_desc_get_size(&c->xb_md) + 63) / 64 * 64;
        c->yb_off = *scratch;
        *scratch += (dnnl_memory_desc_get_size(&c->yb_md) + 63) / 64 * 64;
        dnnl_primitive_desc_t rp = NULL;
        if ((s = dnnl_reorder_primitive_desc_create(&rp, &c->src_md, g_eng, &c->xb_md, g_eng, NULL)) ||
            (s = dnnl_primitive_create(&c->r_in, rp))) { st = dfail(err, "reorder", s); goto done; }
        dnnl_primitive_desc_destroy(rp);
        if ((s = dnnl_reorder_primitive_desc_create(&rp, &c->yb_md, g_eng, &c->dst_md, g_eng, NULL)) ||
            (s = dnnl_primitive_create(&c->r_out, rp))) { st = dfail(err, "reorder", s); goto done; }
        dnnl_primitive_desc_destroy(rp);
        if (n->sum_in >= 0) {
            if ((s = dnnl_reorder_primitive_desc_create(&rp, &c->dst_md, g_eng, &c->yb_md, g_eng, NULL)) ||
                (s = dnnl_primitive_create(&c->r_sum, rp))) { st = dfail(err, "reorder", s); goto done; }
            dnnl_primitive_desc_destroy(rp);
        }
    }
    if ((s = dnnl_primitive_create(&c->prim, pd))) { st = dfail(err, "convolution primitive", s); goto done; }
    /* Weights: reorder once into the primitive's layout. */
    if ((s = dnnl_memory_create(&c->wmem, wmd, g_eng, DNNL_MEMORY_ALLOCATE)) ||
        (s = dnnl_memory_create(&wusr, &wuser, g_eng, w->f)) ||
        (i8 && ((s = dnnl_primitive_attr_create(&wattr)) ||
                (s = dnnl_primitive_attr_set_output_scales(wattr, OC, G > 1 ? 3 : 1, sw)))) ||
        (s = dnnl_stream_create(&stream, g_eng, dnnl_stream_default_flags)) ||
        (!c->wino && ((s = dnnl_reorder_primitive_desc_create(&rpd, &wuser, g_eng, wmd, g_eng, wattr)) ||
                      (s = dnnl_primitive_create(&reo, rpd))))) {
        st = dfail(err, "weight reorder", s); goto done;
    }
    if (c->wino) {
        /* oneDNN's reorder into Winograd weights takes plain OIHW only: OHWI -> OIHW -> Winograd */
        dnnl_memory_desc_t oihw;
        dnnl_memory_t tmp = NULL;
        dnnl_primitive_desc_t tpd = NULL;
        dnnl_primitive_t tre = NULL;
        if ((s = dnnl_memory_desc_init_by_tag(&oihw, 4, wd4, dnnl_f32, dnnl_oihw)) ||
            (s = dnnl_memory_create(&tmp, &oihw, g_eng, DNNL_MEMORY_ALLOCATE)) ||
            (s = dnnl_reorder_primitive_desc_create(&tpd, &wuser, g_eng, &oihw, g_eng, NULL)) ||
            (s = dnnl_primitive_create(&tre, tpd))) { st = dfail(err, "weight reorder", s); goto done; }
        dnnl_exec_arg_t ta[2] = {{DNNL_ARG_FROM, wusr}, {DNNL_ARG_TO, tmp}};
        s = dnnl_primitive_execute(tre, stream, 2, ta);
        if (!s) s = dnnl_stream_wait(stream);
        dnnl_primitive_destroy(tre);
        dnnl_primitive_desc_destroy(tpd);
        dnnl_memory_destroy(wusr);
        wusr = tmp;
        if (s || (s = dnnl_reorder_primitive_desc_create(&rpd, &oihw, g_eng, wmd, g_eng, NULL)) ||
            (s = dnnl_primitive_create(&reo, rpd))) { st = dfail(err, "weight reorder (winograd)", s); goto done; }
    }
    dnnl_exec_arg_t ra[2] = {{DNNL_ARG_FROM, wusr}, {DNNL_ARG_TO, c->wmem}};
    if ((s = dnnl_primitive_execute(reo, stream, 2, ra)) || (s = dnnl_stream_wait(stream))) {
        st = dfail(err, "weight reorder", s); goto done;
    }
    if ((s = dnnl_memory_create(&c->bmem, &bmd, g_eng, DNNL_MEMORY_ALLOCATE))) { st = dfail(err, "bias", s); goto done; }
    void *bp = NULL;
    if ((s = dnnl_memory_get_data_handle(c->bmem, &bp))) { st = dfail(err, "bias", s); goto done; }
    if (b && b->f) memcpy(bp, b->f, (size_t)OC * sizeof(float));
    else memset(bp, 0, (size_t)OC * sizeof(float));
    /* oneDNN 2.x int8: dst = output_scale * (accumulator + bias), so the bias is given in
     * accumulator units. */
    if (i8) for (int64_t o = 0; o < OC; o++) ((float *)bp)[o] /= osc[o] * (!oq ? 1.0f : oq->sxc ? oq->sxc[o] : oq->sx);
done:
    free(sw);
    free(osc);
    if (cattr) dnnl_primitive_attr_destroy(cattr);
    if (wattr) dnnl_primitive_attr_destroy(wattr);
    if (stream) dnnl_stream_destroy(stream);
    if (reo) dnnl_primitive_destroy(reo);
    if (rpd) dnnl_primitive_desc_destroy(rpd);
    if (wusr) dnnl_memory_destroy(wusr);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (po) dnnl_post_ops_destroy(po);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (st) { sl__dconv_free(c); return st; }
    *out = c;
    return SL_OK;
}

void sl__dconv_free(sl__dconv *c) {
    if (!c) return;
    if (c->prim) dnnl_primitive_destroy(c->prim);
    if (c->cvt) dnnl_primitive_destroy(c->cvt);
    if (c->r_in) dnnl_primitive_destroy(c->r_in);
    if (c->r_out) dnnl_primitive_destroy(c->r_out);
    if (c->r_sum) dnnl_primitive_destroy(c->r_sum);
    if (c->wmem) dnnl_memory_destroy(c->wmem);
    if (c->bmem) dnnl_memory_destroy(c->bmem);
    free(c);
}

const char *sl__dconv_impl(const sl__dconv *c) { return c ? c->impl : "ref"; }

sl__dctx *sl__dctx_new(size_t nsteps) {
    sl__dctx *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->b = calloc(nsteps ? nsteps : 1, sizeof *d->b);
    d->n = nsteps;
    if (!d->b || dnnl_stream_create(&d->stream, g_eng, dnnl_stream_default_flags) != dnnl_success) {
        free(d->b);
        free(d);
        return NULL;
    }
    return d;
}

int sl__dctx_bind(sl__dctx *d, size_t k, const sl__dconv *c, float *src, float *dst, void *scratch) {
    bind *b = &d->b[k];
    if (dnnl_memory_create(&b->src, &c->src_md, g_eng, src) != dnnl_success ||
        dnnl_memory_create(&b->dst, &c->dst_md, g_eng, dst) != dnnl_success ||
        dnnl_memory_create(&b->scr, &c->scr_md, g_eng, scratch ? scratch : DNNL_MEMORY_NONE) != dnnl_success)
        return -1;
    if (c->cvt && dnnl_memory_create(&b->src16, &c->src16_md, g_eng, (char *)scratch + c->scr_bytes) != dnnl_success)
        return -1;
    if (c->wino && (dnnl_memory_create(&b->xb, &c->xb_md, g_eng, (char *)scratch + c->xb_off) != dnnl_success ||
                    dnnl_memory_create(&b->yb, &c->yb_md, g_eng, (char *)scratch + c->yb_off) != dnnl_success))
        return -1;
    return 0;
}

sl_status sl__dctx_exec(sl__dctx *d, size_t k, const sl__dconv *c, sl_error *err) {
    bind *b = &d->b[k];
    dnnl_exec_arg_t a[5] = {{DNNL_ARG_SRC, c->cvt ? b->src16 : b->src}, {DNNL_ARG_WEIGHTS, c->wmem},
                            {DNNL_ARG_BIAS, c->bmem}, {DNNL_ARG_DST, b->dst}, {DNNL_ARG_SCRATCHPAD, b->scr}};
    dnnl_status_t s = dnnl_success;
    if (c->wino) {
        dnnl_exec_arg_t r1[2] = {{DNNL_ARG_FROM, b->src}, {DNNL_ARG_TO, b->xb}};
        dnnl_exec_arg_t r2[2] = {{DNNL_ARG_FROM, b->dst}, {DNNL_ARG_TO, b->yb}};
        dnnl_exec_arg_t r3[2] = {{DNNL_ARG_FROM, b->yb}, {DNNL_ARG_TO, b->dst}};
        a[0].memory = b->xb;
        a[3].memory = b->yb;
        s = dnnl_primitive_execute(c->r_in, d->stream, 2, r1);
        if (!s && c->r_sum) s = dnnl_primitive_execute(c->r_sum, d->stream, 2, r2);
        if (!s) s = dnnl_primitive_execute(c->prim, d->stream, 5, a);
        if (!s) s = dnnl_primitive_execute(c->r_out, d->stream, 2, r3);
        if (!s) s = dnnl_stream_wait(d->stream);
        return s ? dfail(err, "convolution", s) : SL_OK;
    }
    if (c->cvt) {
        dnnl_exec_arg_t ca[2] = {{DNNL_ARG_FROM, b->src}, {DNNL_ARG_TO, b->src16}};
        s = dnnl_primitive_execute(c->cvt, d->stream, 2, ca);
    }
    if (!s) s = dnnl_primitive_execute(c->prim, d->stream, 5, a);
    if (!s) s = dnnl_stream_wait(d->stream);
    return s ? dfail(err, "convolution", s) : SL_OK;
}

void sl__dctx_free(sl__dctx *d) {
    if (!d) return;
    for (size_t k = 0; k < d->n; k++) {
        if (d->b[k].src) dnnl_memory_destroy(d->b[k].src);
        if (d->b[k].dst) dnnl_memory_destroy(d->b[k].dst);
        if (d->b[k].scr) dnnl_memory_destroy(d->b[k].scr);
        if (d->b[k].src16) dnnl_memory_destroy(d->b[k].src16);
        if (d->b[k].xb) dnnl_memory_destroy(d->b[k].xb);
        if (d->b[k].yb) dnnl_memory_destroy(d->b[k].yb);
    }
    if (d->stream) dnnl_stream_destroy(d->stream);
    free(d->b);
    free(d);
}
