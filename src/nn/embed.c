/*
 * nn/embed.c - the public CNN API (nn.h): loading a model with options and its
 * sidecar JSON, model information, raw graph runs, and image embeddings (torchvision-style
 * preprocessing: resize the shorter side, centre-crop, scale, mean/std; then the forward pass
 * and L2 normalization).
 *
 * Invariants: a loaded sl_nn is immutable except for the plan cache and context pool, which are
 * guarded by its mutex, so every const entry point is thread-safe. Options are validated before
 * any work; the sidecar is optional but, when present, must be valid (SL_E_CORRUPT otherwise).
 */
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "nn/nn_internal.h"
#include "nn/qlinear.h"
#include "nn/quant.h"
#include "util/util.h"

int sl__plan_output_shape(const sl_nn *m, size_t batch, int64_t dims[8], sl_error *err);

void sl_nn_preproc_init(sl_nn_preproc *p) {
    memset(p, 0, sizeof *p);
    p->resize = 256;
    p->crop = 224;
    p->mean[0] = 0.485f; p->mean[1] = 0.456f; p->mean[2] = 0.406f;
    p->std[0] = 0.229f; p->std[1] = 0.224f; p->std[2] = 0.225f;
    p->scale = 1.0f / 255.0f;
    p->bgr = 0;
    p->interp = SL_IMAGE_FILTER_BILINEAR;
    p->layout = SL_NN_LAYOUT_AUTO;
}

void sl_nn_opts_init(sl_nn_opts *o) {
    memset(o, 0, sizeof *o);
    o->threads = SL_NN_THREADS_DEFAULT;
    o->max_batch = SL_NN_MAX_BATCH_DEFAULT;
    o->normalize = 1;
    o->precision = SL_NN_PRECISION_FP32;
    o->backend = SL_NN_BACKEND_AUTO;
    sl_nn_preproc_init(&o->preproc);
}

static sl_status read_sidecar(const char *path, int must_exist, sl_nn_preproc *pre,
                              char **output, int *normalize, int *crop_set, sl_error *err) {
    struct stat sb;
    if (stat(path, &sb) != 0) {
        if (must_exist) return sl__err_set(err, SL_E_IO, "sidecar %s: not found", path);
        return SL_OK;
    }
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) return sl__err_set(err, SL_E_CORRUPT, "sidecar %s: line %d: %s", path, je.line, je.text);
    sl_status st = SL_OK;
    if (!json_is_object(j)) { st = sl__err_set(err, SL_E_CORRUPT, "sidecar %s: not a JSON object", path); goto done; }
    const char *key;
    json_t *v;
    json_object_foreach(j, key, v) {
        if (!strcmp(key, "resize") || !strcmp(key, "crop")) {
            if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 8192) {
                st = sl__err_set(err, SL_E_CORRUPT, "sidecar %s: '%s' must be an integer 0..8192", path, key); goto done;
            }
            if (!strcmp(key, "resize")) pre->resize = (int)json_integer_value(v);
            else { pre->crop = (int)json_integer_value(v); *crop_set = 1; }
        } else if (!strcmp(key, "mean") || !strcmp(key, "std")) {
            float *dst = !strcmp(key, "mean") ? pre->mean : pre->std;
            if (!json_is_array(v) || json_array_size(v) != 3) {
                st = sl__err_set(err, SL_E_CORRUPT, "sidecar %s: '%s' must be an array of 3 numbers", path, key); goto done;
            }
            for (size_t k = 0; k < 3; k++) {
                json_t *e = json_array_get(v, k);
                if (!json_is_number(e)) { st = sl__err_set(err, SL_E_CORRUPT, "sidecar %s: '%s' must be numbers", path, key); goto done; }
                dst[k] = (float)json_number_value(e);
                if (!strcmp(key, "std") && !(dst[k] > 0)) { st = sl__err_set(err, SL_E_CORRUPT, "sidecar %s: std must be > 0", path); goto done; }
            }
        } else if (!strcmp(key, "scale")) {
            if (!json_is_number(v) || !(json_number_value(v) > 0)) { st = sl__err_set(err, SL_E_CORRUPT, "sidecar %s: 'scale' must be a positive number", path); goto done; }
            pre->scale = (float)json_number_value(v);
        } else if (!strcmp(key, "channel_order")) {
            const char *s = json_string_value(v);
            if (!s || (strcmp(s, "rgb") && strcmp(s, "bgr"))) { st = sl__err_set(err, SL_E_CORRUPT, "sidecar %s: 'channel_order' must be \"rgb\" or \"bgr\"", path); goto done; }
            pre->bgr = !strcmp(s, "bgr");
        } else if (!strcmp(key, "interpolation")) {
            const char *s = json_string_value(v);
            static const char *const names[] = {"bilinear", "bicubic", "area", "nearest", "box"};
            static const sl_image_filter fl[] = {SL_IMAGE_FILTER_BILINEAR, SL_IMAGE_FILTER_BICUBIC,
                                                 SL_IMAGE_FILTER_BOX, SL_IMAGE_FILTER_NEAREST, SL_IMAGE_FILTER_BOX};
            size_t k = 0;
            while (s && k < 5 && strcmp(s, names[k])) k++;
            if (!s || k == 5) { st = sl__err_set(err, SL_E_CORRUPT, "sidecar %s: 'interpolation' must be \"bilinear\", \"bicubic\", \"area\" or \"nearest\"", path); goto done; }
            pre->interp = fl[k];
        } else if (!strcmp(key, "layout")) {
            const char *s = json_string_value(v);
            if (!s || (strcmp(s, "nchw") && strcmp(s, "nhwc"))) { st = sl__err_set(err, SL_E_CORRUPT, "sidecar %s: 'layout' must be \"nchw\" or \"nhwc\"", path); goto done; }
            pre->layout = !strcmp(s, "nhwc") ? SL_NN_LAYOUT_NHWC : SL_NN_LAYOUT_NCHW;
        } else if (!strcmp(key, "output")) {
            const char *s = json_string_value(v);
            if (!s) { st = sl__err_set(err, SL_E_CORRUPT, "sidecar %s: 'output' must be a string", path); goto done; }
            free(*output);
            if (!(*output = sl__strdup(s))) { st = sl__err_set(err, SL_E_NOMEM, "out of memory"); goto done; }
        } else if (!strcmp(key, "normalize")) {
            if (!json_is_boolean(v)) { st = sl__err_set(err, SL_E_CORRUPT, "sidecar %s: 'normalize' must be true or false", path); goto done; }
            *normalize = json_is_true(v);
        } else if (strcmp(key, "comment")) {
            st = sl__err_set(err, SL_E_CORRUPT, "sidecar %s: unknown key '%s'", path, key);
            goto done;
        }
    }
done:
    json_decref(j);
    return st;
}

sl_status sl_nn_load(const char *path, sl_nn **out, sl_error *err) {
    return sl_nn_load_opts(path, NULL, out, err);
}

static sl_status load_impl(const char *path, sl__onnx_model *parsed, const sl_nn_opts *opts, sl_nn **out,
                           sl_error *err);

sl_status sl_nn_load_opts(const char *path, const sl_nn_opts *opts, sl_nn **out,
                           sl_error *err) {
    return load_impl(path, NULL, opts, out, err);
}

sl_status sl__nn_load_parsed(const char *label, sl__onnx_model *parsed, const sl_nn_opts *opts,
                             sl_nn **out, sl_error *err) {
    sl_nn_opts o;
    if (opts) o = *opts; else sl_nn_opts_init(&o);
    if (!o.have_preproc) { o.have_preproc = 1; sl_nn_preproc_init(&o.preproc); o.preproc.crop = o.preproc.resize = 0; }
    if (!parsed) return sl__err_set(err, SL_E_INVALID, "sl__nn_load_parsed: NULL model");
    return load_impl(label, parsed, &o, out, err);
}

/* Loads `path`, or takes over `parsed` (not NULL: already read; freed on every path). */
static sl_status load_impl(const char *path, sl__onnx_model *parsed, const sl_nn_opts *opts, sl_nn **out,
                           sl_error *err) {
    if (out) *out = NULL;
    if (!path || !out) { sl__onnx_free(parsed); return sl__err_set(err, SL_E_INVALID, "sl_nn_load: NULL argument"); }
    sl_nn_opts def;
    if (!opts) { sl_nn_opts_init(&def); opts = &def; }
    if (opts->threads < SL_NN_THREADS_MIN || opts->threads > SL_NN_THREADS_MAX)
        return sl__onnx_free(parsed), sl__err_set(err, SL_E_INVALID, "threads %d out of range %d..%d", opts->threads,
                           SL_NN_THREADS_MIN, SL_NN_THREADS_MAX);
    if (opts->max_batch < SL_NN_MAX_BATCH_MIN || opts->max_batch > SL_NN_MAX_BATCH_MAX)
        return sl__onnx_free(parsed), sl__err_set(err, SL_E_INVALID, "max_batch %zu out of range %d..%d", opts->max_batch,
                           SL_NN_MAX_BATCH_MIN, SL_NN_MAX_BATCH_MAX);
    if (opts->precision != SL_NN_PRECISION_FP32 && opts->precision != SL_NN_PRECISION_BF16 &&
        opts->precision != SL_NN_PRECISION_INT8)
        return sl__onnx_free(parsed), sl__err_set(err, SL_E_INVALID, "unknown precision %d", (int)opts->precision);
    if (opts->backend != SL_NN_BACKEND_AUTO && opts->backend != SL_NN_BACKEND_REF &&
        opts->backend != SL_NN_BACKEND_GEMM)
        return sl__onnx_free(parsed), sl__err_set(err, SL_E_INVALID, "unknown backend %d", (int)opts->backend);
    sl_nn *m = calloc(1, sizeof *m);
    pthread_mutex_t *mu = malloc(sizeof *mu);
    if (!m || !mu) { free(m); free(mu); sl__onnx_free(parsed); return sl__err_set(err, SL_E_NOMEM, "out of memory"); }
    pthread_mutex_init(mu, NULL);
    m->lock = mu;
    m->threads = opts->threads;
    m->max_batch = opts->max_batch;
    m->precision = opts->precision;
    m->backend = opts->backend;
    m->normalize = opts->normalize;
    sl_nn_preproc_init(&m->pre);
    char *output = opts->output ? sl__strdup(opts->output) : NULL;
    sl_status st = SL_OK;
    int crop_set = opts->have_preproc;
    int layout_set = opts->have_preproc && opts->preproc.layout != SL_NN_LAYOUT_AUTO;
    if (!(m->path = sl__strdup(path))) { st = sl__err_set(err, SL_E_NOMEM, "out of memory"); goto fail; }
    if (opts->have_preproc) m->pre = opts->preproc;
    else {
        char side[4096];
        const char *sc = opts->sidecar;
        if (!sc) {
            size_t L = strlen(path);
            if (L > 5 && !strcmp(path + L - 5, ".onnx")) snprintf(side, sizeof side, "%.*s.json", (int)(L - 5), path);
            else snprintf(side, sizeof side, "%s.json", path);
            sc = side;
        }
        char *sc_out = NULL;
        int norm = m->normalize;
        m->pre.layout = SL_NN_LAYOUT_AUTO;
        st = read_sidecar(sc, opts->sidecar != NULL, &m->pre, &sc_out, &norm, &crop_set, err);
        if (st) { free(sc_out); goto fail; }
        m->normalize = norm;
        layout_set = m->pre.layout != SL_NN_LAYOUT_AUTO;
        if (sc_out && !output) output = sc_out; else free(sc_out);
    }
    if (m->pre.crop < 0 || m->pre.resize < -1 || m->pre.resize > SL_IMAGE_MAX_SIDE_MAX ||
        m->pre.crop > SL_IMAGE_MAX_SIDE_MAX || !(m->pre.scale > 0) || !(m->pre.std[0] > 0) ||
        !(m->pre.std[1] > 0) || !(m->pre.std[2] > 0)) {
        st = sl__err_set(err, SL_E_INVALID, "preprocessing: crop must be 0..%d, resize -1..that, scale and std > 0",
                         SL_IMAGE_MAX_SIDE_MAX);
        goto fail;
    }
    if ((unsigned)m->pre.interp > (unsigned)SL_IMAGE_FILTER_NEAREST || m->pre.layout < SL_NN_LAYOUT_AUTO ||
        m->pre.layout > SL_NN_LAYOUT_NHWC) {
        st = sl__err_set(err, SL_E_INVALID, "preprocessing: unknown interpolation %d or layout %d",
                         (int)m->pre.interp, m->pre.layout);
        goto fail;
    }
    if (parsed) { m->onnx = parsed; parsed = NULL; }
    else if ((st = sl__onnx_read_file(path, &m->onnx, err))) goto fail;
    if ((st = sl__graph_build(m, output, err))) { sl__err_prefix(err, "%s", path); goto fail; }
    {
        /* Per-image size of the output, from a batch-1 plan (or the fixed batch). */
        int64_t dims[8];
        size_t b = m->batch_fixed ? (size_t)m->in_dims[0] : 1;
        int r = sl__plan_output_shape(m, b, dims, err);
        if (r < 0) { sl__err_prefix(err, "%s", path); st = err ? err->code : SL_E_INTERNAL; goto fail; }
        size_t cnt = 1;
        for (int d = 0; d < r; d++) cnt *= (size_t)dims[d];
        if (r == 0 || dims[0] != (int64_t)b) {
            st = sl__err_set(err, SL_E_UNSUPPORTED, "%s: output '%s' has no batch dimension", path,
                             m->vals[m->output].name);
            goto fail;
        }
        m->embed_dim = cnt / b;
    }
    if (m->in_rank == 4) {
        if (m->pre.layout == SL_NN_LAYOUT_AUTO)
            m->pre.layout = m->in_dims[1] != 3 && m->in_dims[3] == 3 ? SL_NN_LAYOUT_NHWC : SL_NN_LAYOUT_NCHW;
        int nhwc = m->pre.layout == SL_NN_LAYOUT_NHWC;
        if (layout_set && m->in_dims[nhwc ? 3 : 1] != 3) {
            st = sl__err_set(err, SL_E_INVALID, "%s: layout %s, but the input [%lld, %lld, %lld, %lld] has no 3 channels there",
                             path, nhwc ? "nhwc" : "nchw", (long long)m->in_dims[0], (long long)m->in_dims[1],
                             (long long)m->in_dims[2], (long long)m->in_dims[3]);
            goto fail;
        }
        int64_t H = m->in_dims[nhwc ? 1 : 2], W = m->in_dims[nhwc ? 2 : 3];
        if (!crop_set && (m->pre.crop != H || H != W)) {
            /* Default preprocessing on a model that is not 224x224: crop to its input size and keep
             * torchvision's resize ratio (256/224). */
            int64_t s = H < W ? H : W;
            m->pre.crop = (int)s;
            m->pre.resize = (int)((s * 256 + 112) / 224);
        } else if (m->pre.crop && (m->pre.crop != H || m->pre.crop != W)) {
            st = sl__err_set(err, SL_E_INVALID, "%s: crop %d does not match the model input %lldx%lld", path,
                             m->pre.crop, (long long)W, (long long)H);
            goto fail;
        }
        if (m->pre.resize < 0) m->pre.resize = (int)(((H < W ? H : W) * 256 + 112) / 224);
    }
    free(output);
    *out = m;
    return SL_OK;
fail:
    sl__onnx_free(parsed);
    free(output);
    sl_nn_free(m);
    return st;
}

void sl_nn_free(sl_nn *m) {
    if (!m) return;
    sl__plans_free(m);
    for (size_t k = 0; k < m->nvals; k++) { free(m->vals[k].name); free(m->vals[k].f); free(m->vals[k].i); free(m->vals[k].q); }
    for (size_t k = 0; k < m->nnodes; k++) {
        free(m->nodes[k].name);
        free(m->nodes[k].wq);
        free(m->nodes[k].wsc);
    }
    free(m->vals);
    free(m->nodes);
    sl__calib_free(m->calib);
    free(m->alts);
    sl__onnx_free(m->onnx);
    if (m->lock) { pthread_mutex_destroy(m->lock); free(m->lock); }
    free(m->path);
    free(m);
}

size_t sl_nn_embed_dim(const sl_nn *m) { return m ? m->embed_dim : 0; }

int sl_nn_input_shape(const sl_nn *m, int64_t dims[4]) {
    for (int d = 0; d < 4; d++) dims[d] = d < m->in_rank ? m->in_dims[d] : 0;
    if (!m->batch_fixed) dims[0] = -1;
    return m->in_rank;
}

const sl_nn_preproc *sl_nn_preproc_get(const sl_nn *m) { return &m->pre; }
const char *sl_nn_output_name(const sl_nn *m) { return m->vals[m->output].name; }
int64_t sl_nn_params(const sl_nn *m) { return m->params; }
int64_t sl_nn_flops(const sl_nn *m) { return m->flops; }

int sl_nn_output_shape(const sl_nn *m, size_t batch, int64_t dims[8]) {
    return sl__plan_output_shape(m, batch, dims, NULL);
}

sl_status sl_nn_run(const sl_nn *m, const float *in, size_t batch, float *out, sl_error *err) {
    if (!m || !in || !out || batch == 0) return sl__err_set(err, SL_E_INVALID, "sl_nn_run: bad argument");
    if (m->batch_fixed && batch != (size_t)m->in_dims[0])
        return sl__err_set(err, SL_E_INVALID, "model has a fixed batch of %lld, got %zu",
                           (long long)m->in_dims[0], batch);
    if (batch > SL_NN_MAX_BATCH_MAX) return sl__err_set(err, SL_E_INVALID, "batch %zu too large", batch);
    return sl__nn_forward(m, in, batch, out, err);
}

/* ---- info ---------------------------------------------------------------------------------- */

typedef struct sbuf { char *p; size_t n, cap; int oom; } sbuf;
static void sb_printf(sbuf *b, const char *fmt, ...) SL__PRINTF(2, 3);
#include <stdarg.h>
static void sb_printf(sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) { b->oom = 1; return; }
        if (b->p && b->n + (size_t)k < b->cap) { b->n += (size_t)k; return; }
        size_t nc = (b->cap + (size_t)k + 1) * 2;
        char *q = realloc(b->p, nc);
        if (!q) { b->oom = 1; return; }
        b->p = q;
        b->cap = nc;
    }
}

static void dims_str(sbuf *b, int rank, const int64_t *d) {
    sb_printf(b, "[");
    for (int k = 0; k < rank; k++) {
        if (d[k] < 0) sb_printf(b, "%sN", k ? ", " : "");
        else sb_printf(b, "%s%lld", k ? ", " : "", (long long)d[k]);
    }
    sb_printf(b, "]");
}

sl_status sl_nn_info(const sl_nn *m, char **text, sl_error *err) {
    *text = NULL;
    sbuf b = {0};
    const sl__onnx_model *o = m->onnx;
    sb_printf(&b, "model: %s\nproducer: %s, ir_version %lld, opset %lld\n", m->path,
              o->producer ? o->producer : "?", (long long)o->ir_version, (long long)o->opset);
    sb_printf(&b, "inputs:\n");
    for (size_t k = 0; k < o->ninputs; k++) {
        if (sl__graph_find_value(m, o->inputs[k].name) != m->input) continue;
        sb_printf(&b, "  %s float32 ", o->inputs[k].name);
        dims_str(&b, o->inputs[k].rank, o->inputs[k].dims);
        sb_printf(&b, "\n");
    }
    sb_printf(&b, "outputs:\n");
    for (size_t k = 0; k < o->noutputs; k++) {
        sb_printf(&b, "  %s ", o->outputs[k].name);
        dims_str(&b, o->outputs[k].rank, o->outputs[k].dims);
        sb_printf(&b, "\n");
    }
    sb_printf(&b, "operators (%zu nodes):\n", o->nnodes);
    /* Count op types in file order of first appearance. */
    for (size_t k = 0; k < o->nnodes; k++) {
        int seen = 0;
        for (size_t j = 0; j < k && !seen; j++) seen = !strcmp(o->nodes[j].op, o->nodes[k].op);
        if (seen) continue;
        size_t c = 0;
        for (size_t j = k; j < o->nnodes; j++) c += !strcmp(o->nodes[j].op, o->nodes[k].op);
        sb_printf(&b, "  %-20s %zu\n", o->nodes[k].op, c);
    }
    sb_printf(&b, "parameters: %lld\n", (long long)m->params);
    sb_printf(&b, "FLOPs per image: %lld (%.3f GFLOPs)\n", (long long)m->flops, (double)m->flops / 1e9);
    size_t live = 0;
    for (size_t k = 0; k < m->nnodes; k++) live += !m->nodes[k].dead;
    sb_printf(&b, "embedding: '%s', %zu floats%s: %s\n", m->vals[m->output].name, m->embed_dim,
              m->normalize ? ", L2-normalized" : "", m->choice);
    /* the other tensors one may embed with (--output NAME or "output" in the sidecar) */
    int nalt = 0;
    for (int k = 0; k < m->nalts; k++) {
        if (m->alts[k].value == m->output) continue;
        if (!nalt++) sb_printf(&b, "alternatives (--output NAME, or \"output\" in the sidecar):\n");
        sb_printf(&b, "  %-24s %zu floats, %s\n", m->vals[m->alts[k].value].name, m->alts[k].dim, m->alts[k].what);
    }
    for (size_t k = 0; k < o->noutputs; k++) {
        int v = sl__graph_find_value(m, o->outputs[k].name), seen = v == m->output;
        for (int j = 0; j < m->nalts && !seen; j++) seen = m->alts[j].value == v;
        if (seen) continue;
        if (!nalt++) sb_printf(&b, "alternatives (--output NAME, or \"output\" in the sidecar):\n");
        sb_printf(&b, "  %-24s graph output\n", o->outputs[k].name);
    }
    sb_printf(&b, "load-time graph: %zu nodes to run; %d BatchNorm folded, %d activations and %d sums fused, %d nodes constant-folded\n",
              live, m->fused_bn, m->fused_act, m->fused_sum, m->folded);
    static const char *const interp[] = {"bilinear", "bicubic", "area", "nearest"};
    sb_printf(&b, "preprocessing: resize %d (shorter side, %s as Pillow), crop %d, scale %g, mean [%g, %g, %g], "
              "std [%g, %g, %g], %s, %s\n",
              m->pre.resize, interp[m->pre.interp], m->pre.crop, (double)m->pre.scale, (double)m->pre.mean[0],
              (double)m->pre.mean[1], (double)m->pre.mean[2], (double)m->pre.std[0],
              (double)m->pre.std[1], (double)m->pre.std[2], m->pre.bgr ? "BGR" : "RGB",
              m->pre.layout == SL_NN_LAYOUT_NHWC ? "NHWC" : "NCHW");
    char conv[160];
    sl_error pe;
    sl_error_clear(&pe);
    size_t pb = m->batch_fixed && m->in_dims[0] > 0 ? (size_t)m->in_dims[0] : 1;
    if (sl__plan_conv_summary(m, pb, conv, sizeof conv, &pe)) {
        free(b.p);
        if (err) *err = pe;
        return pe.code;
    }
    sb_printf(&b, "convolutions at %s precision: %s\n", m->precision == SL_NN_PRECISION_INT8 ? "int8"
              : m->precision == SL_NN_PRECISION_BF16 ? "bf16" : "fp32", conv);
    sb_printf(&b, "batches: %s (%lld activation elements written per image, %lld weights)\n",
              m->batch_fixed ? "fixed by the model" : m->params >= m->acts ? "run whole"
              : "run as micro-batches of one image per thread", (long long)m->acts, (long long)m->params);
    char cal[4096];
    sl__quant_info(m, cal, sizeof cal);
    sb_printf(&b, "%s", cal);
    if (b.oom) { free(b.p); return sl__err_set(err, SL_E_NOMEM, "out of memory"); }
    *text = b.p;
    return SL_OK;
}

/* ---- embeddings ---------------------------------------------------------------------------- */

static void l2norm(float *v, size_t n) {
    double s = 0;
    for (size_t k = 0; k < n; k++) s += (double)v[k] * v[k];
    if (s <= 0) return;
    float inv = (float)(1.0 / sqrt(s));
    for (size_t k = 0; k < n; k++) v[k] *= inv;
}


sl_status sl_nn_embed_tensor(const sl_nn *m, const float *in, size_t n, float *out, sl_error *err) {
    size_t per = 1;
    for (int d = 1; d < m->in_rank; d++) per *= (size_t)m->in_dims[d];
    size_t step = m->batch_fixed ? (size_t)m->in_dims[0] : m->max_batch;
    for (size_t s = 0; s < n; s += step) {
        size_t b = n - s < step ? n - s : step;
        if (m->batch_fixed && b != step)
            return sl__err_set(err, SL_E_INVALID, "model has a fixed batch of %zu; %zu images left", step, b);
        sl_status st = sl__nn_forward(m, in + s * per, b, out + s * m->embed_dim, err);
        if (st) return st;
    }
    sl__q_embed_dequant(m, out, n * m->embed_dim); /* a quantized output: its real values */
    if (m->normalize) for (size_t k = 0; k < n; k++) l2norm(out + k * m->embed_dim, m->embed_dim);
    return SL_OK;
}

/* Python's round(k / 2.0) for an integer k >= 0: halves go to the even neighbour. */
static int half_round_even(int k) {
    int q = k / 2;
    return (k & 1) && (q & 1) ? q + 1 : q;
}

/* Start of the centre crop of `crop` in `size` (torchvision's center_crop): negative when the
 * image is padded (by (crop - size) / 2 on the low side). */
static int crop_start(int size, int crop) {
    return crop > size ? -((crop - size) / 2) : half_round_even(size - crop);
}

/* Checks the model takes a 3-channel image; per-image floats in *per. */
static sl_status image_input(const sl_nn *m, size_t *per, sl_error *err) {
    int nhwc = m->pre.layout == SL_NN_LAYOUT_NHWC;
    if (m->in_rank != 4 || m->in_dims[nhwc ? 3 : 1] != 3)
        return sl__err_set(err, SL_E_UNSUPPORTED, "model input is not an RGB image tensor (%s)",
                           nhwc ? "[N,H,W,3]" : "[N,3,H,W]");
    *per = (size_t)(m->in_dims[1] * m->in_dims[2] * m->in_dims[3]);
    return SL_OK;
}

#ifdef SL_NN_HAVE_IMAGE
/* Resize (shorter side -> resize, the model's p->resize unless given, Pillow's filter),
 * centre-crop (padding with black) to the model's H x W, then normalized floats in the model's
 * layout. */
static sl_status preprocess(const sl_nn *m, const sl_image *img, int resize, float *dst, sl_error *err) {
    const sl_nn_preproc *p = &m->pre;
    if (resize <= 0) resize = p->resize;
    int nhwc = p->layout == SL_NN_LAYOUT_NHWC;
    int H = (int)m->in_dims[nhwc ? 1 : 2], W = (int)m->in_dims[nhwc ? 2 : 3];
    int w = img ? sl_image_width(img) : 0, h = img ? sl_image_height(img) : 0;
    if (w <= 0 || h <= 0) return sl__err_set(err, SL_E_INVALID, "empty image");
    int rw = W, rh = H;
    if (resize > 0) {
        /* torchvision: the shorter side becomes `resize`, the longer int(resize * long / short) */
        double l = (double)resize * (w <= h ? h : w) / (w <= h ? w : h);
        int nl = l >= SL_IMAGE_MAX_SIDE_MAX ? SL_IMAGE_MAX_SIDE_MAX : l < 1 ? 1 : (int)l;
        if (w <= h) { rw = resize; rh = nl; } else { rh = resize; rw = nl; }
    }
    sl_image *r = NULL;
    const sl_image *use = img;
    if (rw != w || rh != h) {
        sl_status st = sl_image_resize_filter(img, rw, rh, p->interp, &r, err);
        if (st) return st;
        use = r;
    }
    int x0 = crop_start(rw, W), y0 = crop_start(rh, H), ch = sl_image_channels(use);
    const uint8_t *px = sl_image_cpixels(use);
    size_t stride = sl_image_stride(use), plane = (size_t)H * (size_t)W;
    float zero[3]; /* a padded (black) pixel */
    for (int c = 0; c < 3; c++) zero[c] = (0.0f * p->scale - p->mean[c]) / p->std[c];
    for (int y = 0; y < H; y++) {
        int sy = y0 + y;
        for (int x = 0; x < W; x++) {
            int sx = x0 + x;
            int in = sy >= 0 && sy < rh && sx >= 0 && sx < rw;
            const uint8_t *q = in ? px + (size_t)sy * stride + (size_t)sx * (size_t)ch : NULL;
            for (int c = 0; c < 3; c++) {
                int src = ch == 1 ? 0 : p->bgr ? 2 - c : c;
                float v = in ? ((float)q[src] * p->scale - p->mean[c]) / p->std[c] : zero[c];
                size_t at = nhwc ? ((size_t)y * (size_t)W + (size_t)x) * 3 + (size_t)c
                                 : (size_t)c * plane + (size_t)y * (size_t)W + (size_t)x;
                dst[at] = v;
            }
        }
    }
    sl_image_free(r);
    return SL_OK;
}
#endif

sl_status sl_nn_preprocess(const sl_nn *m, const sl_image *const *images, size_t n, float *out,
                           sl_error *err) {
    return sl_nn_preprocess_resized(m, images, n, 0, out, err);
}

sl_status sl_nn_preprocess_resized(const sl_nn *m, const sl_image *const *images, size_t n, int resize,
                                   float *out, sl_error *err) {
    if (!m || (!images && n) || (!out && n)) return sl__err_set(err, SL_E_INVALID, "sl_nn_preprocess: NULL argument");
    if (resize < 0 || resize > SL_IMAGE_MAX_SIDE_MAX)
        return sl__err_set(err, SL_E_INVALID, "preprocessing: resize %d out of range 0..%d", resize, SL_IMAGE_MAX_SIDE_MAX);
    if (resize > 0 && m->pre.resize <= 0)
        return sl__err_set(err, SL_E_INVALID, "preprocessing: the model's images are not resized (resize %d), so they cannot be resized to %d",
                           m->pre.resize, resize);
#ifdef SL_NN_HAVE_IMAGE
    size_t per = 0;
    sl_status st = image_input(m, &per, err);
    for (size_t k = 0; k < n && !st; k++)
        if ((st = preprocess(m, images[k], resize, out + k * per, err))) sl__err_prefix(err, "image %zu", k);
    return st;
#else
    return sl__err_set(err, SL_E_UNSUPPORTED, "this build has no image module: use sl_nn_run on tensors");
#endif
}

sl_status sl_nn_embed(const sl_nn *m, const sl_image *const *images, size_t n, float *out,
                       sl_error *err) {
    if (!m || (!images && n) || (!out && n)) return sl__err_set(err, SL_E_INVALID, "sl_nn_embed: NULL argument");
    size_t per = 0;
    sl_status st = image_input(m, &per, err);
    if (st) return st;
    size_t step = m->batch_fixed ? (size_t)m->in_dims[0] : m->max_batch;
    float *buf = sl__mallocarray(per, step * sizeof(float));
    if (!buf) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    for (size_t s = 0; s < n && !st; s += step) {
        size_t b = n - s < step ? n - s : step;
        st = sl_nn_preprocess(m, images + s, b, buf, err);
        if (st) { sl__err_prefix(err, "batch from %zu", s); break; }
        st = sl_nn_embed_tensor(m, buf, b, out + s * m->embed_dim, err);
    }
    free(buf);
    return st;
}
