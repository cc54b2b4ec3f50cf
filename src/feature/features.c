/*
 * feature/features.c - the feature pipeline: specification parsing, training (codebook, PCA),
 * extraction of one fused global vector per image plus compact local features, and the
 * one-file save/load of everything learned (docs/formats/features.md).
 *
 * Global vector = concatenation, in the fixed order cnn, color, vlad, of each part L2-normalized
 * and scaled by sqrt(w_part / sum w), so the dot product of two global vectors is the weighted
 * mean of the per-part cosine similarities (and the whole vector has unit norm).
 * The cnn part is one embedding, or with flip / zoom the normalized sum of the embeddings of
 * several views of the image (cnn_embed), always the same views for catalog images and queries.
 * VLAD path: image -> longest side `side` -> grey -> SIFT (sl_sift_extract, strongest kp) [+
 * dense SIFT] -> RootSIFT -> VLAD over the k-means codebook (power + intra normalization) ->
 * PCA-whitening (Jegou & Chum, ECCV 2012) -> L2. Local features for verification are the
 * strongest `local` detected keypoints with RootSIFT quantized to 8 bits.
 * Invariants: a handle is immutable after sl_features_new / train / load except through train;
 * extraction writes only to its arguments (thread-safe); training is deterministic for a seed.
 */
#include <errno.h>
#include <pthread.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "feature/features_internal.h"
#include "feature/pca_internal.h"
#include "shoplens/learn.h"
#include "util/util.h"

#define SPEC_MAX 4096
#define TRAIN_DESC_MAX 200000   /* descriptors sampled for k-means */
#define TRAIN_PCA_MAX 4000      /* VLADs used to learn the PCA */

typedef struct color_cfg { int on; float w; sl_color_params p; int mean; float *mu; } color_cfg;
typedef struct vlad_cfg {
    int on; float w; int k, pca, whiten, kp, dense, side, power, intra;
} vlad_cfg;
typedef struct cnn_cfg {
    int on; float w; char *path; sl_nn *model;
    int precision;              /* SL_NN_PRECISION_*: bf16 / int8 are calibrated by training */
    int calibrated;             /* the model has its calibration (trained or loaded) */
    int mean; float *mu;        /* mean=1: the training images' mean embedding is subtracted */
    int flip;                   /* flip=1: mean of the embeddings of the input and its mirror image */
    float zoom;                 /* > 0: also the image's centre, 1/zoom of each side (cnn_embed) */
} cnn_cfg;

struct sl_features {
    char *spec;                 /* canonical form */
    char errmsg[SL_ERROR_MSG_MAX];
    color_cfg color;
    vlad_cfg vlad;
    cnn_cfg cnn;
    sl__verify_cfg verify;
    int sift_side, sift_kp;     /* SIFT extraction shared by vlad and verify */
    float *codebook;            /* vlad.k x 128 once trained */
    sl_pca *pca;                /* NULL when vlad.pca == 0 or not trained */
    int trained;
    int threads;                /* workers used by sl_features_train */
    sl_head *head;              /* learned projection (shoplens train), NULL = none */
    sl_calib *calib;            /* score calibration (learn.h), NULL = the fallback */
};

/* ---- handle basics ----------------------------------------------------------------------- */

static sl_status fail(sl_features *f, sl_status code, const char *fmt, ...) SL__PRINTF(3, 4);
static sl_status fail(sl_features *f, sl_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->errmsg, sizeof f->errmsg, fmt, ap);
    va_end(ap);
    return code;
}

void sl_features_free(sl_features *f) {
    if (!f) return;
    free(f->spec);
    free(f->cnn.path);
    sl_nn_free(f->cnn.model);
    free(f->cnn.mu);
    free(f->color.mu);
    free(f->codebook);
    sl_pca_free(f->pca);
    sl_head_free(f->head);
    sl_calib_free(f->calib);
    free(f);
}

const sl_head *sl_features_head(const sl_features *f) { return f ? f->head : NULL; }

sl_status sl_features_set_head(sl_features *f, sl_head *head) {
    if (!f) return SL_E_INVALID;
    if (head && (!sl_features_ready(f) || sl_head_dim(head) != sl_features_dim(f)))
        return fail(f, SL_E_INVALID, "head of dimension %zu does not fit features of dimension %zu",
                    sl_head_dim(head), sl_features_dim(f));
    sl_head_free(f->head);
    f->head = head;
    sl_calib_free(f->calib); /* fitted on the scores before this head */
    f->calib = NULL;
    return SL_OK;
}

const sl_calib *sl_features_calib(const sl_features *f) { return f ? f->calib : NULL; }

sl_status sl_features_set_calib(sl_features *f, sl_calib *calib) {
    if (!f) return SL_E_INVALID;
    if (calib && !sl_features_ready(f)) {
        sl_calib_free(calib);
        return fail(f, SL_E_STATE, "a calibration needs trained features");
    }
    sl_calib_free(f->calib);
    f->calib = calib;
    return SL_OK;
}

double sl_features_rerank_max(const sl_features *f) {
    const sl__verify_cfg *c = sl__features_verify_cfg(f);
    return c->enabled && c->weight > 0 ? 1.0 + (double)c->weight : 1.0;
}

sl_status sl_features_project(const sl_features *f, sl_head_side side, const float *in, float *out,
                              size_t n) {
    if (!f || !in || !out) return SL_E_INVALID;
    if (f->head) return sl_head_apply(f->head, side, in, out, n);
    size_t d = sl_features_dim(f), bytes;
    if (sl__mul_size(n, d * sizeof(float), &bytes)) return SL_E_INVALID;
    if (out != in) memmove(out, in, bytes);
    return SL_OK;
}

const char *sl_features_spec(const sl_features *f) { return f ? f->spec : ""; }
const char *sl_features_errmsg(const sl_features *f) { return f ? f->errmsg : "NULL handle"; }
/* bf16 / int8 CNN embeddings calibrate on the training images (nn.h sl_nn_calibrate). */
static int cnn_needs_calib(const sl_features *f) { return f->cnn.on && f->cnn.precision != SL_NN_PRECISION_FP32; }
/* Parts learned by sl_features_train and marked by f->trained: vlad, and the means (mean=1). */
static int needs_learned(const sl_features *f) {
    return f->vlad.on || (f->cnn.on && f->cnn.mean) || (f->color.on && f->color.mean);
}
int sl_features_needs_training(const sl_features *f) { return f && (needs_learned(f) || cnn_needs_calib(f)); }
int sl_features_ready(const sl_features *f) {
    return f && (!needs_learned(f) || f->trained) && (!cnn_needs_calib(f) || f->cnn.calibrated);
}
int sl_features_uses_verify(const sl_features *f) { return f && f->verify.enabled; }
int sl_features_verify_top_n(const sl_features *f) { return f && f->verify.enabled ? f->verify.top_n : 0; }

void sl_features_calibration_describe(const sl_features *f, char *buf, size_t n) {
    if (!buf || !n) return;
    buf[0] = 0;
    if (f && cnn_needs_calib(f) && f->cnn.calibrated) sl_nn_calibration_describe(f->cnn.model, buf, n);
}

sl_status sl_features_verify(const sl_features *f, const sl_local_features *query,
                             const sl_local_features *candidate, sl_verify_result *res,
                             sl_error *err) {
    return sl__verify_with(sl__features_verify_cfg(f), query, candidate, res, err);
}

double sl_features_rerank_score(const sl_features *f, double global_score,
                                const sl_verify_result *res) {
    return sl__rerank_with(sl__features_verify_cfg(f), global_score, res);
}

const sl__verify_cfg *sl__features_verify_cfg(const sl_features *f) {
    return f ? &f->verify : &sl__verify_defaults;
}

static size_t vlad_dim(const sl_features *f) {
    if (!f->vlad.on || !f->trained) return 0;
    return f->pca ? sl_pca_out_dim(f->pca) : (size_t)f->vlad.k * SL_SIFT_DESC_DIM;
}

size_t sl_features_dim(const sl_features *f) {
    if (!f || !sl_features_ready(f)) return 0;
    size_t d = 0;
    if (f->cnn.on) d += sl_nn_embed_dim(f->cnn.model);
    if (f->color.on) d += sl_color_dim(&f->color.p);
    d += vlad_dim(f);
    return d;
}

/* ---- specification ----------------------------------------------------------------------- */

typedef struct parse_ctx {
    const char *spec;
    sl_error *err;
} parse_ctx;

static sl_status perr(parse_ctx *c, const char *at, size_t len, const char *fmt, ...)
    SL__PRINTF(4, 5);
static sl_status perr(parse_ctx *c, const char *at, size_t len, const char *fmt, ...) {
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return sl__err_set(c->err, SL_E_INVALID, "feature spec \"%.200s\": %s at offset %d: \"%.*s\"",
                       c->spec, what, (int)(at - c->spec), (int)(len > 64 ? 64 : len), at);
}

static int parse_float(const char *v, size_t n, float lo, float hi, float *out) {
    char buf[64];
    if (n == 0 || n >= sizeof buf) return -1;
    memcpy(buf, v, n);
    buf[n] = 0;
    char *end;
    errno = 0;
    double d = strtod(buf, &end);
    if (*end || errno || !(d >= lo && d <= hi)) return -1;
    *out = (float)d;
    return 0;
}

static int parse_int(const char *v, size_t n, int lo, int hi, int *out) {
    char buf[32];
    if (n == 0 || n >= sizeof buf) return -1;
    memcpy(buf, v, n);
    buf[n] = 0;
    char *end;
    errno = 0;
    long l = strtol(buf, &end, 10);
    if (*end || errno || l < lo || l > hi) return -1;
    *out = (int)l;
    return 0;
}

#define KEY(s) (klen == sizeof(s) - 1 && memcmp(key, s, klen) == 0)
#define BADVAL(range) return perr(c, key, (size_t)(vend - key), "bad value for '%.*s' (" range ")", (int)klen, key)

static sl_status kv_color(parse_ctx *c, sl_features *f, const char *key, size_t klen,
                          const char *val, const char *vend) {
    size_t vlen = (size_t)(vend - val);
    if (KEY("w")) { if (parse_float(val, vlen, 0.0f, 100.0f, &f->color.w)) BADVAL("0..100"); }
    else if (KEY("bins")) {
        int b[3];
        const char *p = val;
        for (int i = 0; i < 3; i++) {
            const char *q = p;
            while (q < vend && *q != 'x') q++;
            if ((i < 2 && q == vend) || parse_int(p, (size_t)(q - p), SL_COLOR_BINS_MIN, SL_COLOR_BINS_MAX, &b[i]))
                BADVAL("HxSxV, each 1..64");
            p = q + 1;
        }
        if (p <= vend) BADVAL("HxSxV, each 1..64");
        f->color.p.hbins = b[0]; f->color.p.sbins = b[1]; f->color.p.vbins = b[2];
    } else if (KEY("center")) {
        if (parse_float(val, vlen, SL_COLOR_CENTER_MIN, SL_COLOR_CENTER_MAX, &f->color.p.center_sigma))
            BADVAL("0.05..100, 100 = no centre weighting");
    } else if (KEY("grid")) {
        if (parse_int(val, vlen, 1, SL_COLOR_GRID_MAX, &f->color.p.grid)) BADVAL("1..4");
    } else if (KEY("lowsat")) {
        if (parse_float(val, vlen, 0.0f, 0.99f, &f->color.p.low_sat)) BADVAL("0..0.99");
    } else if (KEY("mean")) {
        if (parse_int(val, vlen, 0, 1, &f->color.mean)) BADVAL("0 or 1");
    } else return perr(c, key, klen, "unknown key for color (w, bins, center, grid, lowsat, mean)");
    return SL_OK;
}

static sl_status kv_vlad(parse_ctx *c, sl_features *f, const char *key, size_t klen,
                         const char *val, const char *vend) {
    size_t vlen = (size_t)(vend - val);
    vlad_cfg *v = &f->vlad;
    if (KEY("w")) { if (parse_float(val, vlen, 0.0f, 100.0f, &v->w)) BADVAL("0..100"); }
    else if (KEY("k")) { if (parse_int(val, vlen, 2, 1024, &v->k)) BADVAL("2..1024"); }
    else if (KEY("pca")) {
        if (parse_int(val, vlen, 0, 4096, &v->pca) || v->pca == 1) BADVAL("0 = none, or 2..4096");
    } else if (KEY("whiten")) { if (parse_int(val, vlen, 0, 1, &v->whiten)) BADVAL("0 or 1"); }
    else if (KEY("power")) { if (parse_int(val, vlen, 0, 1, &v->power)) BADVAL("0 or 1"); }
    else if (KEY("intra")) { if (parse_int(val, vlen, 0, 1, &v->intra)) BADVAL("0 or 1"); }
    else if (KEY("kp")) { if (parse_int(val, vlen, 16, 20000, &f->sift_kp)) BADVAL("16..20000"); }
    else if (KEY("dense")) {
        if (parse_int(val, vlen, 0, 128, &v->dense) || (v->dense > 0 && v->dense < 4))
            BADVAL("0 = off, or a grid step 4..128");
    } else if (KEY("side")) { if (parse_int(val, vlen, 64, 4096, &f->sift_side)) BADVAL("64..4096"); }
    else return perr(c, key, klen, "unknown key for vlad (w, k, pca, whiten, power, intra, kp, dense, side)");
    return SL_OK;
}

static sl_status kv_verify(parse_ctx *c, sl_features *f, const char *key, size_t klen,
                           const char *val, const char *vend) {
    size_t vlen = (size_t)(vend - val);
    sl__verify_cfg *v = &f->verify;
    if (KEY("w")) { if (parse_float(val, vlen, 0.0f, 100.0f, &v->weight)) BADVAL("0..100"); }
    else if (KEY("n")) { if (parse_int(val, vlen, 1, 100000, &v->top_n)) BADVAL("1..100000"); }
    else if (KEY("min")) { if (parse_int(val, vlen, 3, 1000, &v->min_inliers)) BADVAL("3..1000"); }
    else if (KEY("half")) { if (parse_float(val, vlen, 0.5f, 1000.0f, &v->half)) BADVAL("0.5..1000"); }
    else if (KEY("ratio")) { if (parse_float(val, vlen, 0.5f, 0.99f, &v->ratio)) BADVAL("0.5..0.99"); }
    else if (KEY("thr")) { if (parse_float(val, vlen, 0.5f, 100.0f, &v->threshold)) BADVAL("0.5..100 pixels"); }
    else if (KEY("local")) { if (parse_int(val, vlen, 16, SL__LOCAL_MAX, &v->max_local)) BADVAL("16..4096"); }
    else if (KEY("model")) {
        if (vlen == 6 && memcmp(val, "affine", 6) == 0) v->model = SL_GEO_AFFINE;
        else if (vlen == 10 && memcmp(val, "homography", 10) == 0) v->model = SL_GEO_HOMOGRAPHY;
        else BADVAL("affine or homography");
    } else return perr(c, key, klen, "unknown key for verify (w, n, min, half, ratio, thr, local, model)");
    return SL_OK;
}

static sl_status kv_cnn(parse_ctx *c, sl_features *f, const char *key, size_t klen,
                        const char *val, const char *vend) {
    if (KEY("w")) { if (parse_float(val, (size_t)(vend - val), 0.0f, 100.0f, &f->cnn.w)) BADVAL("0..100"); }
    else if (KEY("precision")) {
        size_t vl = (size_t)(vend - val);
        if (vl == 4 && !memcmp(val, "fp32", 4)) f->cnn.precision = SL_NN_PRECISION_FP32;
        else if (vl == 4 && !memcmp(val, "bf16", 4)) f->cnn.precision = SL_NN_PRECISION_BF16;
        else if (vl == 4 && !memcmp(val, "int8", 4)) f->cnn.precision = SL_NN_PRECISION_INT8;
        else BADVAL("fp32, bf16 or int8");
    }
    else if (KEY("mean")) { if (parse_int(val, (size_t)(vend - val), 0, 1, &f->cnn.mean)) BADVAL("0 or 1"); }
    else if (KEY("flip")) { if (parse_int(val, (size_t)(vend - val), 0, 1, &f->cnn.flip)) BADVAL("0 or 1"); }
    else if (KEY("zoom")) {
        if (parse_float(val, (size_t)(vend - val), 0.0f, 4.0f, &f->cnn.zoom) || (f->cnn.zoom > 0 && f->cnn.zoom < 1.05f))
            BADVAL("0 = off, or 1.05..4");
    } else return perr(c, key, klen, "unknown key for cnn (w, precision, mean, flip, zoom)");
    return SL_OK;
}

typedef sl_status (*kv_fn)(parse_ctx *, sl_features *, const char *, size_t, const char *, const char *);

/* Parses "k=v,k=v" in [p, end). */
static sl_status parse_kvs(parse_ctx *c, sl_features *f, const char *p, const char *end, kv_fn fn) {
    while (p < end) {
        const char *q = p;
        while (q < end && *q != ',') q++;
        const char *eq = p;
        while (eq < q && *eq != '=') eq++;
        if (eq == q || eq == p || eq + 1 == q)
            return perr(c, p, (size_t)(q - p), "expected key=value");
        sl_status st = fn(c, f, p, (size_t)(eq - p), eq + 1, q);
        if (st != SL_OK) return st;
        p = q + (q < end);
        if (q < end && p == end) return perr(c, q, 1, "trailing ','");
    }
    return SL_OK;
}

static void set_defaults(sl_features *f) {
    f->color.w = 1.0f;
    sl_color_params_init(&f->color.p);
    f->vlad.w = 1.0f;
    f->vlad.k = 64;
    f->vlad.pca = 256;
    f->vlad.whiten = 1;
    f->vlad.power = 1;
    f->vlad.intra = 1;
    f->vlad.dense = 16;
    f->sift_side = 384;
    f->sift_kp = 1000;
    f->cnn.w = 1.0f;
    sl__verify_cfg_default(&f->verify);
    f->threads = SL_FEATURES_THREADS_DEFAULT;
}

static sl_status canonical(sl_features *f, sl_error *err) {
    char buf[SPEC_MAX + 512];
    size_t o = 0;
    buf[0] = 0;
#define APP(...) do { int r_ = snprintf(buf + o, sizeof buf - o, __VA_ARGS__); \
                      if (r_ < 0 || (size_t)r_ >= sizeof buf - o) return sl__err_set(err, SL_E_INVALID, "feature spec too long"); \
                      o += (size_t)r_; } while (0)
    if (f->cnn.on) APP("cnn:%s,w=%g%s%s%s", f->cnn.path, (double)f->cnn.w,
                       f->cnn.precision == SL_NN_PRECISION_INT8 ? ",precision=int8"
                       : f->cnn.precision == SL_NN_PRECISION_BF16 ? ",precision=bf16" : "",
                       f->cnn.mean ? ",mean=1" : "", f->cnn.flip ? ",flip=1" : "");
    if (f->cnn.on && f->cnn.zoom > 0) APP(",zoom=%g", (double)f->cnn.zoom);
    if (f->color.on)
        APP("%scolor:w=%g,bins=%dx%dx%d,center=%g,grid=%d,lowsat=%g", o ? "+" : "", (double)f->color.w,
            f->color.p.hbins, f->color.p.sbins, f->color.p.vbins, (double)f->color.p.center_sigma,
            f->color.p.grid, (double)f->color.p.low_sat);
    if (f->color.on && f->color.mean) APP(",mean=1");
    if (f->vlad.on)
        APP("%svlad:w=%g,k=%d,pca=%d,whiten=%d,power=%d,intra=%d,kp=%d,dense=%d,side=%d",
            o ? "+" : "", (double)f->vlad.w, f->vlad.k, f->vlad.pca, f->vlad.whiten, f->vlad.power,
            f->vlad.intra, f->sift_kp, f->vlad.dense, f->sift_side);
    if (f->verify.enabled)
        APP("%sverify:w=%g,n=%d,min=%d,half=%g,ratio=%g,thr=%g,local=%d,model=%s", o ? "+" : "",
            (double)f->verify.weight, f->verify.top_n, f->verify.min_inliers, (double)f->verify.half,
            (double)f->verify.ratio, (double)f->verify.threshold, f->verify.max_local,
            f->verify.model == SL_GEO_HOMOGRAPHY ? "homography" : "affine");
#undef APP
    f->spec = sl__strdup(buf);
    return f->spec ? SL_OK : sl__err_set(err, SL_E_NOMEM, "out of memory");
}

static sl_status parse_spec(sl_features *f, const char *spec, sl_error *err) {
    parse_ctx c = {spec, err};
    size_t len = strlen(spec);
    if (len == 0) return sl__err_set(err, SL_E_INVALID, "feature spec is empty (try \"%s\")", SL_FEATURES_SPEC_DEFAULT);
    if (len > SPEC_MAX) return sl__err_set(err, SL_E_INVALID, "feature spec longer than %d bytes", SPEC_MAX);
    const char *p = spec, *end = spec + len;
    while (p <= end) {
        const char *q = p;
        while (q < end && *q != '+') q++;
        if (q == p) return perr(&c, p, 1, "empty part (stray '+')");
        const char *colon = p;
        while (colon < q && *colon != ':') colon++;
        size_t nlen = (size_t)(colon - p);
        const char *args = colon < q ? colon + 1 : q;
        sl_status st;
        if (nlen == 5 && memcmp(p, "color", 5) == 0) {
            if (f->color.on) return perr(&c, p, nlen, "part given twice");
            f->color.on = 1;
            st = parse_kvs(&c, f, args, q, kv_color);
        } else if (nlen == 4 && memcmp(p, "vlad", 4) == 0) {
            if (f->vlad.on) return perr(&c, p, nlen, "part given twice");
            f->vlad.on = 1;
            st = parse_kvs(&c, f, args, q, kv_vlad);
        } else if (nlen == 6 && memcmp(p, "verify", 6) == 0) {
            if (f->verify.enabled) return perr(&c, p, nlen, "part given twice");
            f->verify.enabled = 1;
            st = parse_kvs(&c, f, args, q, kv_verify);
        } else if (nlen == 3 && memcmp(p, "cnn", 3) == 0) {
            if (f->cnn.on) return perr(&c, p, nlen, "part given twice");
            const char *pe = args;
            while (pe < q && *pe != ',') pe++;
            if (colon == q || pe == args) return perr(&c, p, (size_t)(q - p), "cnn needs a model path (cnn:PATH)");
            f->cnn.on = 1;
            f->cnn.path = malloc((size_t)(pe - args) + 1);
            if (!f->cnn.path) return sl__err_set(err, SL_E_NOMEM, "out of memory");
            memcpy(f->cnn.path, args, (size_t)(pe - args));
            f->cnn.path[pe - args] = 0;
            st = pe < q ? parse_kvs(&c, f, pe + 1, q, kv_cnn) : SL_OK;
            if (st == SL_OK && pe + 1 == q) st = perr(&c, pe, 1, "trailing ','");
        } else {
            return perr(&c, p, (size_t)(q - p), "unknown part (expected color, vlad, verify or cnn:PATH)");
        }
        if (st != SL_OK) return st;
        p = q + 1;
    }
    if (spec[len - 1] == '+') return perr(&c, end - 1, 1, "empty part (stray '+')");
    if (!f->color.on && !f->vlad.on && !f->cnn.on)
        return sl__err_set(err, SL_E_INVALID, "feature spec \"%.200s\": no global part (color, vlad or cnn:PATH)", spec);
    if ((f->color.on ? f->color.w : 0) + (f->vlad.on ? f->vlad.w : 0) + (f->cnn.on ? f->cnn.w : 0) <= 0.0f)
        return sl__err_set(err, SL_E_INVALID, "feature spec \"%.200s\": all part weights are 0", spec);
    if (f->vlad.on && f->vlad.pca > 0 && (size_t)f->vlad.pca > (size_t)f->vlad.k * SL_SIFT_DESC_DIM)
        return sl__err_set(err, SL_E_INVALID, "feature spec \"%.200s\": pca=%d exceeds the VLAD dimension %d",
                           spec, f->vlad.pca, f->vlad.k * SL_SIFT_DESC_DIM);
    return SL_OK;
}

sl_status sl_features_new(const char *spec, sl_features **out, sl_error *err) {
    if (!out) return sl__err_set(err, SL_E_INVALID, "sl_features_new: NULL out");
    *out = NULL;
    if (!spec) spec = SL_FEATURES_SPEC_DEFAULT;
    sl_features *f = calloc(1, sizeof *f);
    if (!f) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    set_defaults(f);
    sl_status st = parse_spec(f, spec, err);
    if (st == SL_OK) st = canonical(f, err);
    if (st == SL_OK && f->cnn.on) {
        sl_nn_opts no;
        sl_nn_opts_init(&no);
        no.precision = (sl_nn_precision)f->cnn.precision;
        st = sl_nn_load_opts(f->cnn.path, &no, &f->cnn.model, err);
        if (st == SL_OK && sl_nn_embed_dim(f->cnn.model) == 0)
            st = sl__err_set(err, SL_E_UNSUPPORTED, "%s: model has no embedding output", f->cnn.path);
    }
    if (st != SL_OK) { sl_features_free(f); return st; }
    *out = f;
    return SL_OK;
}

sl_status sl_features_model_spec(const char *model_path, char *buf, size_t cap) {
    if (!model_path || !*model_path || strpbrk(model_path, "+,") || !buf) return SL_E_INVALID;
    int n = snprintf(buf, cap, "cnn:%s,mean=1,flip=1,zoom=%g+color:w=%g,mean=1+verify", model_path,
                     SL_FEATURES_MODEL_ZOOM, SL_FEATURES_MODEL_COLOR_WEIGHT);
    return n < 0 || (size_t)n >= cap ? SL_E_TOO_LARGE : SL_OK;
}

static unsigned vlad_flags(const sl_features *f) {
    return (f->vlad.power ? SL_VLAD_POWER : 0u) | (f->vlad.intra ? SL_VLAD_INTRA : 0u);
}

/* ---- extraction -------------------------------------------------------------------------- */

/* The CNN part of one image into out (sl_nn_embed_dim floats, L2-normalized). Views of the image
 * beyond the model's own preprocessing, all in one forward pass when the batch is free, their
 * L2-normalized embeddings summed and normalized again:
 * - zoom=z: also the image with its shorter side resized to z times the model's resize (then
 *   the same centre crop): a closer view of the middle of the picture, where a shop photo's
 *   product is - a two-scale embedding (multi-scale descriptors: Gong et al., ECCV 2014;
 *   Radenovic et al., TPAMI 2018);
 * - flip=1: also the mirror image of every view's input tensor - horizontal-flip test-time
 *   augmentation (Krizhevsky et al., NIPS 2012; Simonyan & Zisserman, ICLR 2015), so an image and
 *   its mirror get the same vector. */
static void l2_scale(float *v, size_t n, float target);
static sl_status cnn_embed(const sl_features *f, const sl_image *img, float *out, sl_error *err) {
    const sl_nn *m = f->cnn.model;
    if (!f->cnn.flip && !(f->cnn.zoom > 0)) return sl_nn_embed(m, &img, 1, out, err);
    int64_t dims[4];
    if (sl_nn_input_shape(m, dims) != 4 || dims[1] <= 0 || dims[2] <= 0 || dims[3] <= 0)
        return sl__err_set(err, SL_E_UNSUPPORTED, "%s: flip and zoom need an image input [N,C,H,W] or [N,H,W,C]", f->cnn.path);
    size_t nv = f->cnn.zoom > 0 ? 2 : 1;
    size_t nt = f->cnn.flip ? 2 * nv : nv;
    int nhwc = sl_nn_preproc_get(m)->layout == SL_NN_LAYOUT_NHWC;
    size_t d = sl_nn_embed_dim(m), per = (size_t)(dims[1] * dims[2] * dims[3]);
    size_t w = (size_t)dims[nhwc ? 2 : 3], px = nhwc ? (size_t)dims[3] : 1; /* floats per pixel step */
    float *x = sl__mallocarray(per, nt * sizeof(float)), *e = sl__mallocarray(d, nt * sizeof(float));
    sl_status st = x && e ? sl_nn_preprocess(m, &img, 1, x, err) : sl__err_set(err, SL_E_NOMEM, "features: out of memory (cnn views)");
    if (st == SL_OK && nv == 2) {
        int r = sl_nn_preproc_get(m)->resize;
        double zr = (double)r * f->cnn.zoom;
        st = sl_nn_preprocess_resized(m, &img, 1, (int)lround(zr > SL_IMAGE_MAX_SIDE_MAX ? SL_IMAGE_MAX_SIDE_MAX : zr), x + per, err);
        if (st != SL_OK) sl__err_prefix(err, "%s: zoom", f->cnn.path);
    }
    if (st == SL_OK && f->cnn.flip)
        for (size_t v = 0; v < nv; v++) {
            /* rows of w pixels (px floats each) in either layout: reverse the pixels of every row */
            const float *a = x + v * per;
            float *b = x + (nv + v) * per;
            for (size_t r = 0; r < per / (w * px); r++)
                for (size_t i = 0; i < w; i++)
                    memcpy(b + (r * w + i) * px, a + (r * w + (w - 1 - i)) * px, px * sizeof(float));
        }
    if (st == SL_OK) st = sl_nn_embed_tensor(m, x, nt, e, err);
    if (st == SL_OK) {
        memset(out, 0, d * sizeof *out);
        for (size_t t = 0; t < nt; t++) {
            l2_scale(e + t * d, d, 1.0f);
            for (size_t i = 0; i < d; i++) out[i] += e[t * d + i];
        }
        l2_scale(out, d, 1.0f);
    }
    free(x);
    free(e);
    return st;
}

typedef struct sift_out {
    sl_keypoint *kps;       /* detected keypoints (n_det) */
    float *desc;            /* RootSIFT, (n_det + n_dense) x 128 */
    size_t n_det, n;
} sift_out;

static void sift_out_free(sift_out *s) { free(s->kps); free(s->desc); memset(s, 0, sizeof *s); }

static sl_status run_sift(const sl_features *f, const sl_image *img, int want_dense, sift_out *so,
                          sl_error *err) {
    memset(so, 0, sizeof *so);
    sl_image *small = NULL, *grey = NULL;
    sl_status st = sl_image_resize_longest(img, f->sift_side, 0, &small, err);
    if (st == SL_OK) st = sl_image_to_grey(small, &grey, err);
    sl_image_free(small);
    if (st != SL_OK) return st;
    sl_sift_params sp;
    sl_sift_params_init(&sp);
    sp.max_keypoints = f->sift_kp;
    int gw = 0, gh = 0;
    float *gf = sl__sift_grey(grey, &gw, &gh, err); /* one float plane for both passes */
    sl_image_free(grey);
    if (!gf) return err ? err->code : SL_E_NOMEM;
    st = sl_sift_extract_grey(gf, gw, gh, (size_t)gw, &sp, &so->kps, &so->desc, &so->n_det, err);
    so->n = so->n_det;
    if (st == SL_OK && want_dense && f->vlad.dense > 0) {
        sl_keypoint *dk = NULL;
        float *dd = NULL;
        size_t dn = 0;
        st = sl_sift_dense_grey(gf, gw, gh, (size_t)gw, f->vlad.dense, (float)f->vlad.dense * 0.75f, &dk, &dd, &dn, err);
        free(dk);
        if (st == SL_OK && dn > 0) {
            size_t tot, bytes;
            float *all = NULL;
            if (sl__add_size(so->n_det, dn, &tot) == 0 && sl__mul_size(tot, SL_SIFT_DESC_DIM * sizeof(float), &bytes) == 0)
                all = realloc(so->desc, bytes);
            if (!all) st = sl__err_set(err, SL_E_NOMEM, "features: out of memory (dense SIFT)");
            else {
                memcpy(all + so->n_det * SL_SIFT_DESC_DIM, dd, dn * SL_SIFT_DESC_DIM * sizeof(float));
                so->desc = all;
                so->n = tot;
            }
        }
        free(dd);
    }
    free(gf);
    if (st != SL_OK) { sift_out_free(so); return st; }
    if (so->n) sl_rootsift(so->desc, so->n, SL_SIFT_DESC_DIM);
    return SL_OK;
}

static void l2_scale(float *v, size_t n, float target) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)v[i] * v[i];
    float sc = s > 0.0 ? (float)(target / sqrt(s)) : 0.0f;
    for (size_t i = 0; i < n; i++) v[i] *= sc;
}

/* mean=1 parts: L2-normalize, then subtract the learned mean (mu NULL: nothing). */
static void center(float *v, size_t n, const float *mu) {
    if (!mu) return;
    l2_scale(v, n, 1.0f);
    for (size_t i = 0; i < n; i++) v[i] -= mu[i];
}

static int cmp_resp(const void *a, const void *b) {
    const float *x = *(const float *const *)a, *y = *(const float *const *)b;
    if (*x > *y) return -1;
    if (*x < *y) return 1;
    return x < y ? -1 : x > y;
}

static sl_status make_local(const sl_features *f, const sift_out *so, sl_local_features **out,
                            sl_error *err) {
    size_t n = so->n_det;
    size_t keep = n < (size_t)f->verify.max_local ? n : (size_t)f->verify.max_local;
    const float **ord = sl__mallocarray(n ? n : 1, sizeof *ord);
    sl_local_features *lf = sl__local_alloc((uint32_t)keep);
    if (!ord || !lf) {
        free(ord); sl_local_features_free(lf);
        return sl__err_set(err, SL_E_NOMEM, "features: out of memory (local features)");
    }
    for (size_t i = 0; i < n; i++) ord[i] = &so->kps[i].response;
    qsort(ord, n, sizeof *ord, cmp_resp);
    for (size_t t = 0; t < keep; t++) {
        size_t i = (size_t)((const char *)ord[t] - (const char *)&so->kps[0].response) / sizeof(sl_keypoint);
        const sl_keypoint *k = &so->kps[i];
        lf->kp[4 * t] = k->x; lf->kp[4 * t + 1] = k->y;
        lf->kp[4 * t + 2] = k->scale; lf->kp[4 * t + 3] = k->angle;
        const float *d = so->desc + i * SL_SIFT_DESC_DIM;
        uint8_t *q = lf->desc + t * SL_SIFT_DESC_DIM;
        for (int j = 0; j < SL_SIFT_DESC_DIM; j++) {
            float v = d[j] * SL__ROOTSIFT_Q + 0.5f;
            q[j] = (uint8_t)(v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v);
        }
    }
    free(ord);
    *out = lf;
    return SL_OK;
}

static float weight_sum(const sl_features *f) {
    return (f->cnn.on ? f->cnn.w : 0.0f) + (f->color.on ? f->color.w : 0.0f) + (f->vlad.on ? f->vlad.w : 0.0f);
}

sl_status sl_features_extract(const sl_features *f, const sl_image *img, float *vec,
                              sl_local_features **local, sl_error *err) {
    if (local) *local = NULL;
    if (!f || !img || !vec) return sl__err_set(err, SL_E_INVALID, "features: NULL argument");
    if (!sl_features_ready(f))
        return sl__err_set(err, SL_E_STATE, "features: pipeline \"%s\" must be trained first", f->spec);
    if (sl_image_width(img) <= 0 || sl_image_height(img) <= 0)
        return sl__err_set(err, SL_E_INVALID, "features: empty image");
    float wsum = weight_sum(f);
    float *o = vec;
    sl_status st = SL_OK;
    if (f->cnn.on) {
        size_t d = sl_nn_embed_dim(f->cnn.model);
        st = cnn_embed(f, img, o, err);
        if (st != SL_OK) return st;
        center(o, d, f->cnn.mu);
        l2_scale(o, d, sqrtf(f->cnn.w / wsum));
        o += d;
    }
    if (f->color.on) {
        size_t d = sl_color_dim(&f->color.p);
        st = sl_color_hist(img, &f->color.p, o, err);
        if (st != SL_OK) return st;
        center(o, d, f->color.mu);
        l2_scale(o, d, sqrtf(f->color.w / wsum));
        o += d;
    }
    int want_local = local && f->verify.enabled;
    if (f->vlad.on || want_local) {
        sift_out so;
        st = run_sift(f, img, f->vlad.on, &so, err);
        if (st != SL_OK) return st;
        if (f->vlad.on) {
            size_t raw = (size_t)f->vlad.k * SL_SIFT_DESC_DIM;
            unsigned flags = vlad_flags(f);
            if (f->pca) {
                float *tmp = sl__mallocarray(raw, sizeof *tmp);
                if (!tmp) { sift_out_free(&so); return sl__err_set(err, SL_E_NOMEM, "features: out of memory"); }
                sl_vlad(f->codebook, (size_t)f->vlad.k, SL_SIFT_DESC_DIM, so.desc, so.n, flags, tmp);
                sl_pca_project(f->pca, tmp, o);
                free(tmp);
            } else {
                sl_vlad(f->codebook, (size_t)f->vlad.k, SL_SIFT_DESC_DIM, so.desc, so.n, flags, o);
            }
            size_t d = vlad_dim(f);
            l2_scale(o, d, sqrtf(f->vlad.w / wsum));
            o += d;
        }
        if (want_local) st = make_local(f, &so, local, err);
        sift_out_free(&so);
    }
    return st;
}

/* ---- training ---------------------------------------------------------------------------- */

/* Training runs SIFT once per image (in f->threads workers): a uniform random subset of each
 * image's descriptors goes to the k-means pool, and all its descriptors are kept 8-bit quantized
 * (RootSIFT x 512, as in the local features) while the cache stays under TRAIN_CACHE_BYTES, so
 * the VLADs for the PCA need no second SIFT pass. Per-image random streams are seeded from
 * (seed, image index), so the result does not depend on the thread count or scheduling. */
#define TRAIN_CACHE_BYTES ((size_t)512 << 20)

typedef struct train_img {
    uint8_t *q;          /* cached quantized descriptors (n x 128), or NULL */
    size_t n;            /* descriptors in the image */
    float *pick;         /* sampled descriptors for k-means (npick x 128) */
    size_t npick;
} train_img;

typedef struct train_job {
    const sl_features *f;
    const sl_image *const *images;
    train_img *ti;
    size_t n, per, next;
    uint64_t seed;
    size_t cached_bytes;
    pthread_mutex_t mu;
    sl_status st;
    sl_error err;
    size_t bad;
    /* phase 2 */
    const float *cb;
    float *V;
    size_t m;
} train_job;

static int train_take(train_job *j, size_t limit, size_t *i) {
    pthread_mutex_lock(&j->mu);
    int ok = j->st == SL_OK && j->next < limit;
    if (ok) *i = j->next++;
    pthread_mutex_unlock(&j->mu);
    return ok;
}

static void train_fail(train_job *j, size_t i, sl_status st, const sl_error *e) {
    pthread_mutex_lock(&j->mu);
    if (j->st == SL_OK) { j->st = st; j->err = *e; j->bad = i; }
    pthread_mutex_unlock(&j->mu);
}

static void *train_sift_worker(void *arg) {
    train_job *j = arg;
    size_t i;
    while (train_take(j, j->n, &i)) {
        sift_out so;
        sl_error e;
        sl_error_clear(&e);
        sl_status st = run_sift(j->f, j->images[i], 1, &so, &e);
        if (st != SL_OK) { train_fail(j, i, st, &e); break; }
        train_img *t = &j->ti[i];
        t->n = so.n;
        size_t take = so.n < j->per ? so.n : j->per;
        sl__rng rng;
        sl__rng_seed(&rng, j->seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(i + 1)));
        t->pick = sl__mallocarray(take ? take : 1, SL_SIFT_DESC_DIM * sizeof(float));
        size_t bytes = so.n * SL_SIFT_DESC_DIM;
        int cache = 0;
        pthread_mutex_lock(&j->mu);
        if (j->cached_bytes + bytes <= TRAIN_CACHE_BYTES) { j->cached_bytes += bytes; cache = 1; }
        pthread_mutex_unlock(&j->mu);
        if (cache) t->q = malloc(bytes ? bytes : 1);
        if (!t->pick || (cache && !t->q)) {
            sift_out_free(&so);
            sl__err_set(&e, SL_E_NOMEM, "out of memory");
            train_fail(j, i, SL_E_NOMEM, &e);
            break;
        }
        if (t->q)
            for (size_t d = 0; d < bytes; d++) {
                float v = so.desc[d] * SL__ROOTSIFT_Q + 0.5f;
                t->q[d] = (uint8_t)(v > 255.0f ? 255.0f : v);
            }
        for (size_t u = 0; u < take; u++) { /* partial Fisher-Yates: a uniform subset */
            size_t r = u + (size_t)sl__rng_below(&rng, so.n - u);
            float *du = so.desc + u * SL_SIFT_DESC_DIM, *dr = so.desc + r * SL_SIFT_DESC_DIM;
            if (r != u)
                for (int d = 0; d < SL_SIFT_DESC_DIM; d++) { float tmp = du[d]; du[d] = dr[d]; dr[d] = tmp; }
            memcpy(t->pick + u * SL_SIFT_DESC_DIM, du, SL_SIFT_DESC_DIM * sizeof(float));
        }
        t->npick = take;
        sift_out_free(&so);
    }
    return NULL;
}

static void *train_vlad_worker(void *arg) {
    train_job *j = arg;
    size_t k = (size_t)j->f->vlad.k, raw = k * SL_SIFT_DESC_DIM, t;
    while (train_take(j, j->m, &t)) {
        size_t i = j->m == j->n ? t : (size_t)((double)t * (double)j->n / (double)j->m);
        train_img *ti = &j->ti[i];
        sift_out so;
        sl_error e;
        sl_error_clear(&e);
        if (ti->q) {
            memset(&so, 0, sizeof so);
            so.n = ti->n;
            so.desc = sl__mallocarray(ti->n ? ti->n : 1, SL_SIFT_DESC_DIM * sizeof(float));
            if (!so.desc) { sl__err_set(&e, SL_E_NOMEM, "out of memory"); train_fail(j, i, SL_E_NOMEM, &e); break; }
            for (size_t d = 0; d < ti->n * SL_SIFT_DESC_DIM; d++) so.desc[d] = (float)ti->q[d] / SL__ROOTSIFT_Q;
        } else {
            sl_status st = run_sift(j->f, j->images[i], 1, &so, &e);
            if (st != SL_OK) { train_fail(j, i, st, &e); break; }
        }
        sl_vlad(j->cb, k, SL_SIFT_DESC_DIM, so.desc, so.n, vlad_flags(j->f), j->V + t * raw);
        sift_out_free(&so);
    }
    return NULL;
}

static void run_workers(void *(*fn)(void *), train_job *j, int threads) {
    pthread_t th[SL_FEATURES_THREADS_MAX];
    int started = 0;
    j->next = 0;
    for (int i = 1; i < threads; i++)
        if (pthread_create(&th[started], NULL, fn, j) == 0) started++;
    fn(j);
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
}

sl_status sl_features_set_threads(sl_features *f, int threads) {
    if (!f) return SL_E_INVALID;
    if (threads < SL_FEATURES_THREADS_MIN || threads > SL_FEATURES_THREADS_MAX)
        return fail(f, SL_E_INVALID, "threads %d out of range %d..%d", threads,
                    SL_FEATURES_THREADS_MIN, SL_FEATURES_THREADS_MAX);
    f->threads = threads;
    return SL_OK;
}

/* ---- means of the mean=1 parts (cnn, color): the average L2-normalized part vector of the
 * training images, summed in image order (deterministic for any thread count) ---- */
typedef struct mean_job {
    const sl_features *f;
    const sl_image *const *images;
    size_t n, next, dc, dk;
    float *cv, *kv;              /* n x dc, n x dk */
    pthread_mutex_t mu;
    sl_status st;
    sl_error err;
    size_t bad;
} mean_job;

static void *mean_worker(void *arg) {
    mean_job *j = arg;
    for (;;) {
        pthread_mutex_lock(&j->mu);
        size_t i = j->next++;
        int stop = j->st != SL_OK || i >= j->n;
        pthread_mutex_unlock(&j->mu);
        if (stop) break;
        sl_error e;
        sl_error_clear(&e);
        sl_status st = SL_OK;
        if (j->cv) {
            st = cnn_embed(j->f, j->images[i], j->cv + i * j->dc, &e);
            if (st == SL_OK) l2_scale(j->cv + i * j->dc, j->dc, 1.0f);
        }
        if (st == SL_OK && j->kv) {
            st = sl_color_hist(j->images[i], &j->f->color.p, j->kv + i * j->dk, &e);
            if (st == SL_OK) l2_scale(j->kv + i * j->dk, j->dk, 1.0f);
        }
        if (st != SL_OK) {
            pthread_mutex_lock(&j->mu);
            if (j->st == SL_OK) { j->st = st; j->err = e; j->bad = i; }
            pthread_mutex_unlock(&j->mu);
            break;
        }
    }
    return NULL;
}

static float *mean_of(const float *v, size_t n, size_t d) {
    double *acc = calloc(d, sizeof *acc);
    float *m = sl__mallocarray(d, sizeof *m);
    if (!acc || !m) { free(acc); free(m); return NULL; }
    for (size_t i = 0; i < n; i++) for (size_t k = 0; k < d; k++) acc[k] += v[i * d + k];
    for (size_t k = 0; k < d; k++) m[k] = (float)(acc[k] / (double)n);
    free(acc);
    return m;
}

static sl_status train_means(sl_features *f, const sl_image *const *images, size_t n, float **cm, float **km) {
    *cm = *km = NULL;
    int want_c = f->cnn.on && f->cnn.mean, want_k = f->color.on && f->color.mean;
    if (!want_c && !want_k) return SL_OK;
    mean_job j;
    memset(&j, 0, sizeof j);
    j.f = f;
    j.images = images;
    j.n = n;
    j.dc = want_c ? sl_nn_embed_dim(f->cnn.model) : 0;
    j.dk = want_k ? sl_color_dim(&f->color.p) : 0;
    if (want_c) j.cv = sl__mallocarray(n, j.dc * sizeof(float));
    if (want_k) j.kv = sl__mallocarray(n, j.dk * sizeof(float));
    if ((want_c && !j.cv) || (want_k && !j.kv)) { free(j.cv); free(j.kv); return fail(f, SL_E_NOMEM, "train: out of memory"); }
    pthread_mutex_init(&j.mu, NULL);
    pthread_t th[SL_FEATURES_THREADS_MAX];
    int started = 0;
    for (int i = 1; i < f->threads; i++)
        if (pthread_create(&th[started], NULL, mean_worker, &j) == 0) started++;
    mean_worker(&j);
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    pthread_mutex_destroy(&j.mu);
    sl_status st = j.st;
    if (st != SL_OK) fail(f, st, "train: image %zu: %s", j.bad, j.err.message);
    if (st == SL_OK && want_c && !(*cm = mean_of(j.cv, n, j.dc))) st = fail(f, SL_E_NOMEM, "train: out of memory");
    if (st == SL_OK && want_k && !(*km = mean_of(j.kv, n, j.dk))) st = fail(f, SL_E_NOMEM, "train: out of memory");
    free(j.cv);
    free(j.kv);
    if (st != SL_OK) { free(*cm); free(*km); *cm = *km = NULL; }
    return st;
}

static sl_status train_vlad(sl_features *f, const sl_image *const *images, size_t n, uint64_t seed);

sl_status sl_features_train(sl_features *f, const sl_image *const *images, size_t n, uint64_t seed) {
    if (!f) return SL_E_INVALID;
    if (!sl_features_needs_training(f)) return SL_OK;
    if (!images || n == 0) return fail(f, SL_E_INVALID, "train: no images");
    for (size_t i = 0; i < n; i++)
        if (!images[i]) return fail(f, SL_E_INVALID, "train: image %zu is NULL", i);
    if (cnn_needs_calib(f)) {
        /* a seeded sample of the training images calibrates the bf16 / int8 network; first, so
         * that the means below are those of the embeddings the calibrated network gives */
        sl_nn_calib_opts co;
        sl_nn_calib_opts_init(&co);
        co.seed = seed;
        co.threads = f->threads;
        sl_error e;
        sl_status cs = sl_nn_calibrate(f->cnn.model, images, n, &co, &e);
        if (cs != SL_OK) return fail(f, cs, "train: %s: %s", f->cnn.path, e.message);
        f->cnn.calibrated = 1;
        sl_head_free(f->head); /* the embeddings changed: a head and a calibration no longer fit */
        f->head = NULL;
        sl_calib_free(f->calib);
        f->calib = NULL;
    }
    if (!needs_learned(f)) return SL_OK;
    float *cm = NULL, *km = NULL;
    sl_status st = train_means(f, images, n, &cm, &km);
    if (st == SL_OK && f->vlad.on) st = train_vlad(f, images, n, seed);
    if (st != SL_OK) { free(cm); free(km); return st; }
    free(f->cnn.mu);
    free(f->color.mu);
    f->cnn.mu = cm;
    f->color.mu = km;
    sl_head_free(f->head); /* a head belongs to the vectors it was trained on */
    f->head = NULL;
    sl_calib_free(f->calib); /* and so does a calibration */
    f->calib = NULL;
    f->trained = 1;
    return SL_OK;
}

static sl_status train_vlad(sl_features *f, const sl_image *const *images, size_t n, uint64_t seed) {
    train_job j;
    memset(&j, 0, sizeof j);
    j.f = f;
    j.images = images;
    j.n = n;
    j.seed = seed;
    j.per = TRAIN_DESC_MAX / n < 32 ? 32 : TRAIN_DESC_MAX / n;
    j.ti = sl__callocarray(n, sizeof *j.ti);
    if (!j.ti) return fail(f, SL_E_NOMEM, "train: out of memory");
    pthread_mutex_init(&j.mu, NULL);
    sl_status st = SL_OK;
    float *pool = NULL, *cb = NULL;
    sl_pca *pca = NULL;
    size_t k = (size_t)f->vlad.k, raw = k * SL_SIFT_DESC_DIM, cnt = 0;
    run_workers(train_sift_worker, &j, f->threads);
    if (j.st != SL_OK) { st = fail(f, j.st, "train: image %zu: %s", j.bad, j.err.message); goto done; }
    for (size_t i = 0; i < n; i++) cnt += j.ti[i].npick;
    if (cnt < k) {
        st = fail(f, SL_E_INVALID, "train: only %zu SIFT descriptors in %zu images, codebook needs k = %zu", cnt, n, k);
        goto done;
    }
    pool = sl__mallocarray(cnt, SL_SIFT_DESC_DIM * sizeof(float));
    cb = sl__mallocarray(raw, sizeof *cb);
    if (!pool || !cb) { st = fail(f, SL_E_NOMEM, "train: out of memory (%zu descriptors)", cnt); goto done; }
    cnt = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(pool + cnt * SL_SIFT_DESC_DIM, j.ti[i].pick, j.ti[i].npick * SL_SIFT_DESC_DIM * sizeof(float));
        cnt += j.ti[i].npick;
        free(j.ti[i].pick);
        j.ti[i].pick = NULL;
    }
    {
        sl_kmeans_params kp;
        sl_kmeans_params_init(&kp);
        kp.seed = seed;
        sl_error e;
        st = sl_kmeans(pool, cnt, SL_SIFT_DESC_DIM, k, &kp, cb, NULL, &e);
        free(pool);
        pool = NULL;
        if (st != SL_OK) { st = fail(f, st, "train: %s", e.message); goto done; }
    }
    if (f->vlad.pca > 0) {
        j.m = n < TRAIN_PCA_MAX ? n : TRAIN_PCA_MAX;
        if (j.m < 3) { st = fail(f, SL_E_INVALID, "train: PCA needs at least 3 images, got %zu", n); goto done; }
        j.V = sl__mallocarray(j.m, raw * sizeof(float));
        if (!j.V) { st = fail(f, SL_E_NOMEM, "train: out of memory (%zu VLADs)", j.m); goto done; }
        j.cb = cb;
        run_workers(train_vlad_worker, &j, f->threads);
        if (j.st != SL_OK) { st = fail(f, j.st, "train: image %zu: %s", j.bad, j.err.message); goto done; }
        sl_error e;
        st = sl_pca_train(j.V, j.m, raw, (size_t)f->vlad.pca, f->vlad.whiten, SL_PCA_EPS_DEFAULT, &pca, &e);
        if (st != SL_OK) { st = fail(f, st, "train: %s", e.message); goto done; }
    }
    free(f->codebook);
    sl_pca_free(f->pca);
    f->codebook = cb;
    f->pca = pca;
    cb = NULL;
    pca = NULL;
    f->trained = 1;
done:
    for (size_t i = 0; i < n; i++) { free(j.ti[i].q); free(j.ti[i].pick); }
    free(j.ti);
    free(j.V);
    free(pool);
    free(cb);
    sl_pca_free(pca);
    pthread_mutex_destroy(&j.mu);
    return st;
}

/* ---- save / load (docs/formats/features.md) ---------------------------------------------- */

#define FILE_MAGIC "SLFEAT\r\n"
/* A file is written with the lowest version that can describe what it holds: 3 with a CALB
 * section, else 2 with a HEAD or MEAN section, else 1. CNNQ does not raise the version: it is
 * allowed in any version (it was added to version 1 files before versions 2 and 3 existed). */
#define FILE_VERSION 2u        /* with a HEAD or MEAN section */
#define FILE_VERSION_NOHEAD 1u /* files without them keep version 1 (older builds read them) */
#define FILE_VERSION_CALIB 3u  /* with a CALB section */
#define FILE_MAX ((size_t)1 << 31)

typedef struct wbuf { uint8_t *p; size_t len, cap; int oom; } wbuf;

static void wb_put(wbuf *b, const void *d, size_t n) {
    if (b->oom) return;
    if (b->len + n > b->cap) {
        size_t nc = (b->len + n) * 2;
        uint8_t *np = realloc(b->p, nc);
        if (!np) { b->oom = 1; return; }
        b->p = np; b->cap = nc;
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
}
static void wb_u32(wbuf *b, uint32_t v) {
    uint8_t t[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    wb_put(b, t, 4);
}
static void wb_u64(wbuf *b, uint64_t v) { wb_u32(b, (uint32_t)v); wb_u32(b, (uint32_t)(v >> 32)); }
static void wb_f32s(wbuf *b, const float *v, size_t n) {
    for (size_t i = 0; i < n; i++) { uint32_t u; memcpy(&u, &v[i], 4); wb_u32(b, u); }
}
/* Section = tag[4], u64 payload length, payload, u32 CRC-32 of the payload. `start` is where the
 * payload began (the length was written as 0 before it and is patched here). */
static size_t wb_begin(wbuf *b, const char tag[4]) { wb_put(b, tag, 4); wb_u64(b, 0); return b->len; }
static void wb_end(wbuf *b, size_t start) {
    if (b->oom) return;
    uint64_t n = b->len - start;
    for (int i = 0; i < 8; i++) b->p[start - 8 + (size_t)i] = (uint8_t)(n >> (8 * i));
    wb_u32(b, sl__feature_crc32(b->p + start, (size_t)n));
}

sl_status sl_features_save(const sl_features *fc, const char *path) {
    sl_features *f = (sl_features *)fc; /* errmsg is the only field written */
    if (!f || !path) return SL_E_INVALID;
    wbuf b = {0};
    wb_put(&b, FILE_MAGIC, 8);
    wb_u32(&b, f->calib ? FILE_VERSION_CALIB : f->head || f->cnn.mu || f->color.mu ? FILE_VERSION : FILE_VERSION_NOHEAD);
    wb_u32(&b, 0);
    size_t s = wb_begin(&b, "SPEC");
    wb_put(&b, f->spec, strlen(f->spec));
    wb_end(&b, s);
    if (f->vlad.on && f->trained) {
        s = wb_begin(&b, "CBK ");
        wb_u32(&b, (uint32_t)f->vlad.k);
        wb_u32(&b, SL_SIFT_DESC_DIM);
        wb_f32s(&b, f->codebook, (size_t)f->vlad.k * SL_SIFT_DESC_DIM);
        wb_end(&b, s);
        if (f->pca) {
            s = wb_begin(&b, "PCA ");
            wb_u32(&b, (uint32_t)f->pca->in_dim);
            wb_u32(&b, (uint32_t)f->pca->out_dim);
            wb_f32s(&b, f->pca->mean, f->pca->in_dim);
            wb_f32s(&b, f->pca->eigval, f->pca->out_dim);
            wb_f32s(&b, f->pca->proj, f->pca->in_dim * f->pca->out_dim);
            wb_end(&b, s);
        }
    }
    if (cnn_needs_calib(f) && f->cnn.calibrated) {
        uint8_t *rec = NULL;
        size_t rlen = 0;
        sl_error e;
        if (sl_nn_calibration_save(f->cnn.model, &rec, &rlen, &e) != SL_OK) {
            free(b.p);
            return fail(f, e.code, "save %s: %s", path, e.message);
        }
        s = wb_begin(&b, "CNNQ");
        wb_put(&b, rec, rlen);
        wb_end(&b, s);
        free(rec);
    }
    if (f->trained && (f->cnn.mu || f->color.mu)) {
        s = wb_begin(&b, "MEAN");
        size_t dc = f->cnn.mu ? sl_nn_embed_dim(f->cnn.model) : 0, dk = f->color.mu ? sl_color_dim(&f->color.p) : 0;
        wb_u32(&b, (uint32_t)dc);
        if (dc) wb_f32s(&b, f->cnn.mu, dc);
        wb_u32(&b, (uint32_t)dk);
        if (dk) wb_f32s(&b, f->color.mu, dk);
        wb_end(&b, s);
    }
    if (f->head) {
        void *hb = NULL;
        size_t hl = 0;
        if (sl_head_serialize(f->head, &hb, &hl, NULL) != SL_OK) b.oom = 1;
        else {
            s = wb_begin(&b, "HEAD");
            wb_put(&b, hb, hl);
            wb_end(&b, s);
            free(hb);
        }
    }
    if (f->calib) {
        void *cb = NULL;
        size_t cl = 0;
        if (sl_calib_serialize(f->calib, &cb, &cl, NULL) != SL_OK) b.oom = 1;
        else {
            s = wb_begin(&b, "CALB");
            wb_put(&b, cb, cl);
            wb_end(&b, s);
            free(cb);
        }
    }
    s = wb_begin(&b, "END ");
    wb_end(&b, s);
    if (b.oom) { free(b.p); return fail(f, SL_E_NOMEM, "save %s: out of memory", path); }
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16);
    if (!tmp) { free(b.p); return fail(f, SL_E_NOMEM, "save %s: out of memory", path); }
    snprintf(tmp, plen + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int e = errno;
        free(tmp); free(b.p);
        return fail(f, SL_E_IO, "save %s: cannot create a temporary file: %s", path, strerror(e));
    }
    size_t off = 0;
    while (off < b.len) {
        ssize_t w = write(fd, b.p + off, b.len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        off += (size_t)w;
    }
    int ok = off == b.len && fsync(fd) == 0;
    int e = errno;
    ok = close(fd) == 0 && ok;
    free(b.p);
    if (!ok || rename(tmp, path) != 0) {
        if (ok) e = errno;
        unlink(tmp);
        free(tmp);
        return fail(f, SL_E_IO, "save %s: %s", path, strerror(e));
    }
    free(tmp);
    return SL_OK;
}

typedef struct rsec { char tag[5]; const uint8_t *p; uint64_t len; } rsec;

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static void rd_f32s(const uint8_t *p, float *v, size_t n) {
    for (size_t i = 0; i < n; i++) { uint32_t u = rd32(p + 4 * i); memcpy(&v[i], &u, 4); }
}
static int all_finite(const float *v, size_t n) {
    for (size_t i = 0; i < n; i++) if (!isfinite(v[i])) return 0;
    return 1;
}

/* Parses a whole features file held in memory. `name` is used in messages. */
sl_status sl_features_parse(const void *data, size_t len, const char *name, sl_features **out,
                            sl_error *err) {
    const uint8_t *d = data;
    if (!out) return sl__err_set(err, SL_E_INVALID, "sl_features_parse: NULL out");
    *out = NULL;
    if (!name) name = "features";
    if (!d && len) return sl__err_set(err, SL_E_INVALID, "sl_features_parse: NULL data");
    if (len < 16 || memcmp(d, FILE_MAGIC, 8) != 0)
        return sl__err_set(err, SL_E_CORRUPT, "%s: not a shoplens features file (bad magic)", name);
    uint32_t version = rd32(d + 8);
    if (version != FILE_VERSION && version != FILE_VERSION_NOHEAD && version != FILE_VERSION_CALIB)
        return sl__err_set(err, SL_E_VERSION, "%s: features file version %u (this build reads %u to %u)", name,
                           version, FILE_VERSION_NOHEAD, FILE_VERSION_CALIB);
    if (rd32(d + 12) != 0) return sl__err_set(err, SL_E_CORRUPT, "%s: header: reserved field set", name);
    rsec secs[8];
    int ns = 0, end = 0;
    size_t o = 16;
    static const char *const known[8] = {"SPEC", "CBK ", "PCA ", "CNNQ", "MEAN", "HEAD", "CALB", "END "};
    while (!end) {
        if (len - o < 12) return sl__err_set(err, SL_E_CORRUPT, "%s: truncated after %d sections (no END section)", name, ns);
        char tag[5];
        memcpy(tag, d + o, 4);
        tag[4] = 0;
        for (int i = 0; i < 4; i++) if (tag[i] < 0x20 || tag[i] > 0x7e) tag[i] = '?';
        int idx = -1;
        for (int i = 0; i < 8; i++) if (memcmp(d + o, known[i], 4) == 0) idx = i;
        if (idx < 0) return sl__err_set(err, SL_E_CORRUPT, "%s: unknown section '%s' at byte %zu", name, tag, o);
        for (int i = 0; i < ns; i++)
            if (memcmp(secs[i].tag, tag, 4) == 0) return sl__err_set(err, SL_E_CORRUPT, "%s: section '%s' repeated", name, tag);
        uint64_t n = rd64(d + o + 4);
        if (n > len - o - 12 || len - o - 12 - n < 4)
            return sl__err_set(err, SL_E_CORRUPT, "%s: section '%s': length %llu runs past the end of the file",
                               name, tag, (unsigned long long)n);
        const uint8_t *p = d + o + 12;
        if (rd32(p + n) != sl__feature_crc32(p, (size_t)n))
            return sl__err_set(err, SL_E_CORRUPT, "%s: section '%s': checksum mismatch", name, tag);
        memcpy(secs[ns].tag, tag, 5);
        secs[ns].p = p;
        secs[ns].len = n;
        ns++;
        o += 12 + (size_t)n + 4;
        end = idx == 7;
    }
    if (o != len) return sl__err_set(err, SL_E_CORRUPT, "%s: %zu bytes after the END section", name, len - o);
    const rsec *spec = NULL, *cbk = NULL, *pca = NULL, *cnnq = NULL, *head = NULL, *mean = NULL, *calb = NULL;
    for (int i = 0; i < ns; i++) {
        if (!memcmp(secs[i].tag, "CNNQ", 4)) cnnq = &secs[i];
        if (!memcmp(secs[i].tag, "CALB", 4)) calb = &secs[i];
        if (!memcmp(secs[i].tag, "MEAN", 4)) mean = &secs[i];
        if (!memcmp(secs[i].tag, "HEAD", 4)) head = &secs[i];
        if (!memcmp(secs[i].tag, "SPEC", 4)) spec = &secs[i];
        if (!memcmp(secs[i].tag, "CBK ", 4)) cbk = &secs[i];
        if (!memcmp(secs[i].tag, "PCA ", 4)) pca = &secs[i];
    }
    if (!spec || spec->len == 0 || spec->len > SPEC_MAX)
        return sl__err_set(err, SL_E_CORRUPT, "%s: section 'SPEC' missing or of bad length", name);
    char specbuf[SPEC_MAX + 1];
    memcpy(specbuf, spec->p, (size_t)spec->len);
    specbuf[spec->len] = 0;
    if (strlen(specbuf) != spec->len)
        return sl__err_set(err, SL_E_CORRUPT, "%s: section 'SPEC': embedded NUL", name);
    sl_features *f = NULL;
    sl_status st = sl_features_new(specbuf, &f, err);
    if (st != SL_OK) {
        if (err) {
            sl__err_prefix(err, "%s: section 'SPEC'", name);
            if (st == SL_E_INVALID) err->code = SL_E_CORRUPT;
        }
        return st == SL_E_INVALID ? SL_E_CORRUPT : st;
    }
    if ((f->cnn.on && f->cnn.mean) || (f->color.on && f->color.mean)) {
        size_t dc = f->cnn.on && f->cnn.mean ? sl_nn_embed_dim(f->cnn.model) : 0;
        size_t dk = f->color.on && f->color.mean ? sl_color_dim(&f->color.p) : 0;
        if (version < FILE_VERSION || !mean || mean->len != 8 + 4 * (uint64_t)(dc + dk) ||
            rd32(mean->p) != dc || rd32(mean->p + 4 + 4 * dc) != dk) {
            sl_features_free(f);
            return sl__err_set(err, SL_E_CORRUPT, "%s: section 'MEAN' missing or not of the spec's shape (%zu, %zu)", name, dc, dk);
        }
        if (dc) f->cnn.mu = sl__mallocarray(dc, sizeof(float));
        if (dk) f->color.mu = sl__mallocarray(dk, sizeof(float));
        if ((dc && !f->cnn.mu) || (dk && !f->color.mu)) { sl_features_free(f); return sl__err_set(err, SL_E_NOMEM, "%s: out of memory", name); }
        if (dc) rd_f32s(mean->p + 4, f->cnn.mu, dc);
        if (dk) rd_f32s(mean->p + 8 + 4 * dc, f->color.mu, dk);
        if ((dc && !all_finite(f->cnn.mu, dc)) || (dk && !all_finite(f->color.mu, dk))) {
            sl_features_free(f);
            return sl__err_set(err, SL_E_CORRUPT, "%s: section 'MEAN': non-finite value", name);
        }
        f->trained = 1;
    } else if (mean) {
        sl_features_free(f);
        return sl__err_set(err, SL_E_CORRUPT, "%s: section 'MEAN' present but no part of the spec has mean=1", name);
    }
    if (f->vlad.on) {
        size_t k = (size_t)f->vlad.k, raw = k * SL_SIFT_DESC_DIM;
        if (!cbk) { sl_features_free(f); return sl__err_set(err, SL_E_CORRUPT, "%s: section 'CBK ' missing (spec uses vlad)", name); }
        if (cbk->len != 8 + 4 * (uint64_t)raw || rd32(cbk->p) != k || rd32(cbk->p + 4) != SL_SIFT_DESC_DIM) {
            sl_features_free(f);
            return sl__err_set(err, SL_E_CORRUPT, "%s: section 'CBK ': shape does not match k=%zu x %d", name, k, SL_SIFT_DESC_DIM);
        }
        f->codebook = sl__mallocarray(raw, sizeof *f->codebook);
        if (!f->codebook) { sl_features_free(f); return sl__err_set(err, SL_E_NOMEM, "%s: out of memory", name); }
        rd_f32s(cbk->p + 8, f->codebook, raw);
        if (!all_finite(f->codebook, raw)) { sl_features_free(f); return sl__err_set(err, SL_E_CORRUPT, "%s: section 'CBK ': non-finite value", name); }
        if (f->vlad.pca > 0) {
            if (!pca || pca->len < 8) { sl_features_free(f); return sl__err_set(err, SL_E_CORRUPT, "%s: section 'PCA ' missing or short (spec uses pca=%d)", name, f->vlad.pca); }
            size_t in = rd32(pca->p), od = rd32(pca->p + 4);
            uint64_t want = 8 + 4 * ((uint64_t)in + od + (uint64_t)in * od);
            if (in != raw || od == 0 || od > (size_t)f->vlad.pca || pca->len != want) {
                sl_features_free(f);
                return sl__err_set(err, SL_E_CORRUPT, "%s: section 'PCA ': shape %zu -> %zu does not match the spec", name, in, od);
            }
            f->pca = sl__pca_alloc(in, od);
            if (!f->pca) { sl_features_free(f); return sl__err_set(err, SL_E_NOMEM, "%s: out of memory", name); }
            rd_f32s(pca->p + 8, f->pca->mean, in);
            rd_f32s(pca->p + 8 + 4 * in, f->pca->eigval, od);
            rd_f32s(pca->p + 8 + 4 * (in + od), f->pca->proj, in * od);
            if (!all_finite(f->pca->mean, in) || !all_finite(f->pca->proj, in * od)) {
                sl_features_free(f);
                return sl__err_set(err, SL_E_CORRUPT, "%s: section 'PCA ': non-finite value", name);
            }
        } else if (pca) {
            sl_features_free(f);
            return sl__err_set(err, SL_E_CORRUPT, "%s: section 'PCA ' present but the spec has pca=0", name);
        }
        f->trained = 1;
    } else if (cbk || pca) {
        sl_features_free(f);
        return sl__err_set(err, SL_E_CORRUPT, "%s: learned sections present but the spec has no vlad", name);
    }
    if (cnn_needs_calib(f) != (cnnq != NULL)) {
        sl_features_free(f);
        return sl__err_set(err, SL_E_CORRUPT, cnnq ? "%s: section 'CNNQ' present but the spec's cnn runs at fp32"
                                                   : "%s: section 'CNNQ' missing (the spec's cnn runs at bf16 / int8)", name);
    }
    if (cnnq) {
        st = sl_nn_calibration_load(f->cnn.model, cnnq->p, (size_t)cnnq->len, err);
        if (st != SL_OK) {
            sl_features_free(f);
            return sl__err_prefix(err, "%s: section 'CNNQ'", name);
        }
        f->cnn.calibrated = 1;
    }
    if (head) {
        if (version < FILE_VERSION) {
            sl_features_free(f);
            return sl__err_set(err, SL_E_CORRUPT, "%s: section 'HEAD' in a version %u file", name, version);
        }
        sl_head *h = NULL;
        st = sl_head_parse(head->p, (size_t)head->len, &h, err);
        if (st == SL_OK && sl_head_dim(h) != sl_features_dim(f)) {
            st = sl__err_set(err, SL_E_CORRUPT, "head: dimension %zu, the features have %zu", sl_head_dim(h), sl_features_dim(f));
            sl_head_free(h);
        }
        if (st != SL_OK) {
            sl_features_free(f);
            if (err) sl__err_prefix(err, "%s: section 'HEAD'", name);
            return st;
        }
        f->head = h;
    }
    if (calb) {
        if (version != FILE_VERSION_CALIB) {
            sl_features_free(f);
            return sl__err_set(err, SL_E_CORRUPT, "%s: section 'CALB' in a version %u file", name, version);
        }
        sl_calib *c = NULL;
        st = sl_calib_parse(calb->p, (size_t)calb->len, &c, err);
        if (st == SL_OK && !sl_features_ready(f)) {
            st = sl__err_set(err, SL_E_CORRUPT, "calibration present but the features are not trained");
            sl_calib_free(c);
        }
        if (st != SL_OK) {
            sl_features_free(f);
            if (err) sl__err_prefix(err, "%s: section 'CALB'", name);
            return st;
        }
        f->calib = c;
    } else if (version == FILE_VERSION_CALIB) {
        sl_features_free(f);
        return sl__err_set(err, SL_E_CORRUPT, "%s: version %u file without a 'CALB' section", name, version);
    }
    *out = f;
    return SL_OK;
}

sl_status sl_features_load(const char *path, sl_features **out, sl_error *err) {
    if (!out) return sl__err_set(err, SL_E_INVALID, "sl_features_load: NULL out");
    *out = NULL;
    if (!path) return sl__err_set(err, SL_E_INVALID, "sl_features_load: NULL path");
    FILE *fp = fopen(path, "rb");
    if (!fp) return sl__err_set(err, errno == ENOENT ? SL_E_NOT_FOUND : SL_E_IO, "%s: %s", path, strerror(errno));
    uint8_t *d = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            if (cap >= FILE_MAX) { fclose(fp); free(d); return sl__err_set(err, SL_E_TOO_LARGE, "%s: larger than %zu bytes", path, FILE_MAX); }
            size_t nc = cap ? cap * 2 : 1 << 16;
            uint8_t *nd = realloc(d, nc);
            if (!nd) { fclose(fp); free(d); return sl__err_set(err, SL_E_NOMEM, "%s: out of memory", path); }
            d = nd; cap = nc;
        }
        size_t r = fread(d + len, 1, cap - len, fp);
        len += r;
        if (r == 0) break;
    }
    int bad = ferror(fp);
    fclose(fp);
    if (bad) { free(d); return sl__err_set(err, SL_E_IO, "%s: read error", path); }
    sl_status st = sl_features_parse(d, len, path, out, err);
    free(d);
    return st;
}
