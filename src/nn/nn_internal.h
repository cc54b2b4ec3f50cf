/*
 * nn/nn_internal.h - internal types of the CNN engine: the decoded ONNX model
 * (onnx.c), the optimized graph (graph.c), per-batch execution plans with one memory arena
 * (plan.c), and the kernels (ops.c reference/NHWC kernels, dnnl.c oneDNN convolutions).
 *
 * Tensors: float32 or int64, at most SL__NN_MAX_RANK dimensions, logical order as in ONNX
 * (NCHW for images). Rank-4 float activations are stored channels-last (NHWC) inside the engine
 * when `nhwc` is set on the value; everything else is stored row-major in logical order.
 */
#ifndef SL_NN_INTERNAL_H
#define SL_NN_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include "shoplens/nn.h"

#define SL__NN_MAX_RANK 8

/* ---- ONNX model as read from the file (onnx.c) ----------------------------------------- */

enum { SL__DT_F32 = 1, SL__DT_I64 = 7, SL__DT_Q8 = 3 /* plan-internal: int8 chain tensor */ };

typedef struct sl__onnx_tensor {
    char *name;
    int dtype;                 /* SL__DT_F32 (any float type converted) or SL__DT_I64 (ints) */
    int onnx_type;             /* data type as stored in the file */
    int rank;
    int64_t dims[SL__NN_MAX_RANK];
    size_t count;              /* product of dims */
    float *f;                  /* count floats when dtype == F32 (malloc'ed) */
    int64_t *i;                /* count ints when dtype == I64 (malloc'ed) */
} sl__onnx_tensor;

enum { SL__AT_FLOAT = 1, SL__AT_INT = 2, SL__AT_STRING = 3, SL__AT_TENSOR = 4,
       SL__AT_GRAPH = 5, SL__AT_FLOATS = 6, SL__AT_INTS = 7, SL__AT_STRINGS = 8 };

typedef struct sl__onnx_attr {
    char *name;
    int type;                  /* SL__AT_* (0 when the file did not say; inferred) */
    float f;
    int64_t i;
    char *s;
    float *floats; size_t nfloats;
    int64_t *ints; size_t nints;
    sl__onnx_tensor *t;
} sl__onnx_attr;

typedef struct sl__onnx_node {
    char *name, *op, *domain;
    char **in; int nin;        /* "" = absent optional input */
    char **out; int nout;
    sl__onnx_attr *attrs; int nattrs;
} sl__onnx_node;

typedef struct sl__onnx_value {
    char *name;
    int elem_type;
    int rank;                  /* -1 when no shape is given */
    int64_t dims[SL__NN_MAX_RANK]; /* -1 for a symbolic or unknown dimension */
} sl__onnx_value;

typedef struct sl__onnx_model {
    int64_t ir_version;
    int64_t opset;             /* version of the default ("" / "ai.onnx") domain */
    char *producer;
    char *graph_name;
    sl__onnx_node *nodes; size_t nnodes;
    sl__onnx_tensor *inits; size_t ninits;
    sl__onnx_value *inputs; size_t ninputs;
    sl__onnx_value *outputs; size_t noutputs;
} sl__onnx_model;

/* Parses a serialized ModelProto. On failure returns SL_E_CORRUPT (message names the message
 * and field), SL_E_UNSUPPORTED or SL_E_NOMEM, and *out is NULL. */
sl_status sl__onnx_parse(const uint8_t *data, size_t len, sl__onnx_model **out, sl_error *err);
/* Reads a file with mmap (up to SL_NN_MAX_FILE_BYTES) and parses it. */
sl_status sl__onnx_read_file(const char *path, sl__onnx_model **out, sl_error *err);
void sl__onnx_free(sl__onnx_model *m);
/* Parses one serialized TensorProto (e.g. an ONNX test's input_0.pb) into *t (cleared first;
 * sl__onnx_tensor_clear frees it). Errors as sl__onnx_parse. */
sl_status sl__onnx_parse_tensor(const uint8_t *data, size_t len, sl__onnx_tensor *t, sl_error *err);
/* sl_nn_load_opts on an already parsed model, which it takes over (freed on failure too);
 * `label` names the model in messages. The sidecar is not read. */
sl_status sl__nn_load_parsed(const char *label, sl__onnx_model *parsed, const sl_nn_opts *opts,
                             sl_nn **out, sl_error *err);
/* 1 when the engine converts operator `op` of `domain` ("" or "ai.onnx"), else 0: the op
 * registry the ONNX conformance test selects its tests with. */
int sl__nn_op_supported(const char *domain, const char *op);
void sl__onnx_tensor_clear(sl__onnx_tensor *t);
const sl__onnx_attr *sl__onnx_attr_find(const sl__onnx_node *n, const char *name);

/* ---- optimized graph (graph.c) --------------------------------------------------------- */

typedef enum sl__op {
    SL__OP_CONV, SL__OP_BN, SL__OP_RELU, SL__OP_CLIP, SL__OP_SIGMOID, SL__OP_HSIGMOID,
    SL__OP_HSWISH, SL__OP_ADD, SL__OP_SUB, SL__OP_MUL, SL__OP_DIV, SL__OP_MAXPOOL,
    SL__OP_AVGPOOL, SL__OP_GAP, SL__OP_FLATTEN, SL__OP_GEMM, SL__OP_MATMUL, SL__OP_RESHAPE,
    SL__OP_CONCAT, SL__OP_SQUEEZE, SL__OP_UNSQUEEZE, SL__OP_IDENTITY, SL__OP_SHAPE,
    SL__OP_GATHER, SL__OP_REDUCEMEAN, SL__OP_SOFTMAX, SL__OP_TRANSPOSE, SL__OP_SWISH,
    SL__OP_TO_NHWC, SL__OP_TO_PLAIN, SL__OP_COUNT
} sl__op;

/* Activation applied to a value in place (fused into a producer). */
typedef enum sl__act {
    SL__ACT_NONE = 0, SL__ACT_RELU, SL__ACT_CLIP, SL__ACT_SIGMOID, SL__ACT_HSIGMOID,
    SL__ACT_HSWISH, SL__ACT_SWISH
} sl__act;

typedef struct sl__actp { sl__act kind; float a, b; } sl__actp; /* clip: [a,b]; hsigmoid: a*x+b */

#define SL__MAX_FUSED_ACTS 2
#define SL__MAX_IN 8          /* node inputs */
#define SL__SUM_SLOT SL__MAX_IN /* kernel view index of the fused sum operand */

typedef struct sl__node {
    sl__op op;
    char *name;                /* ONNX node name (or "op#k") for messages */
    int in[SL__MAX_IN]; int nin; /* value indices; -1 = absent */
    int out;                   /* one output value */
    /* Conv / pools */
    int kh, kw, sh, sw, dh, dw, pt, pl, pb, pr, group;
    int ceil_mode, count_include_pad;
    int auto_pad;              /* 0 NOTSET, 1 SAME_UPPER, 2 SAME_LOWER, 3 VALID */
    /* Gemm */
    float alpha, beta; int trans_a, trans_b;
    /* axis-style attributes */
    int64_t axis;
    int64_t axes[SL__NN_MAX_RANK]; int naxes; int has_axes; int keepdims;
    int64_t perm[SL__NN_MAX_RANK];
    float cmin, cmax, eps;     /* Clip bounds, BN epsilon, HardSigmoid alpha/beta in cmin/cmax */
    /* fusion (Conv, Gemm, Add): activations before the sum, then sum, then activations after */
    sl__actp pre[SL__MAX_FUSED_ACTS]; int npre;
    int sum_in;                /* value added to the result (-1: none) */
    sl__actp post[SL__MAX_FUSED_ACTS]; int npost;
    int dead;
    int wlayout;               /* Conv weight data: 0 OIHW (ONNX), 1 OHWI, 2 depthwise HWC */
    int gemm;                  /* Conv/Gemm GEMM library: 0 OpenBLAS, 1 oneDNN sgemm */
    int8_t *wq;                /* int8 mode, own kernels (--backend ref/gemm): weights (OHWI)
                                  quantized per output channel, owned by the model's node (plan
                                  copies share it; the oneDNN int8 path quantizes its own) */
    float *wsc;                /* int8 mode: per-output-channel weight scales */
} sl__node;

typedef struct sl__value {
    char *name;
    int dtype;                 /* SL__DT_F32 or SL__DT_I64 */
    int is_const;              /* data known at load time (initializer or folded) */
    int rank;
    int64_t dims[SL__NN_MAX_RANK];
    size_t count;
    float *f; int64_t *i;      /* const data (owned) */
    int nuses;                 /* consumers among live nodes */
    int producer;              /* node index or -1 */
} sl__value;

typedef struct sl__plan sl__plan;

struct sl_nn {
    sl__onnx_model *onnx;      /* kept for `cnn info`; freed parts: initializer data moved */
    sl__value *vals; size_t nvals, capvals;
    sl__node *nodes; size_t nnodes, capnodes;
    int input;                 /* the graph's image input value */
    int64_t in_dims[4]; int in_rank; int batch_fixed; /* in_dims[0] = -1 if dynamic */
    int output;                /* value whose output the embedding / run uses */
    int normalize;             /* L2-normalize embeddings */
    size_t embed_dim;          /* per-image element count of `output` */
    int threads;
    int precision;             /* SL_NN_PRECISION_* */
    int backend;               /* SL_NN_BACKEND_* */
    size_t max_batch;
    sl_nn_preproc pre;
    int64_t params, flops;     /* for info (flops per image) */
    int64_t acts;              /* activation elements the graph writes per image (micro-batching) */
    int fused_bn, fused_act, fused_sum, folded;
    void *lock;                /* pthread_mutex_t* guarding plans */
    sl__plan **plans; size_t nplans;
    char *path;
    /* embedding choice (graph.c), for `cnn info`: why `output` was taken, and the other
     * tensors a user may pick (global pools, classifier inputs, graph outputs) */
    char choice[320];
    struct sl__nn_alt { int value; size_t dim; char what[160]; } *alts;
    int nalts;
};

/* Builds the optimized graph from a parsed model (takes ownership of initializer data). */
sl_status sl__graph_build(sl_nn *m, const char *output_name, sl_error *err);
/* Adds a value; returns index or -1 on out of memory. */
int sl__graph_add_value(sl_nn *m, const char *name);
int sl__graph_find_value(const sl_nn *m, const char *name);
const char *sl__op_name(sl__op op);

/* ---- plans and execution (plan.c) ------------------------------------------------------ */

/* Runs the graph on `batch` images: in = batch * per-image input floats (NCHW), writes the
 * output value (logical layout) to out (batch * embed_dim floats). Thread-safe. */
sl_status sl__nn_forward(const sl_nn *m, const float *in, size_t batch, float *out,
                          sl_error *err);
/* Images per pass of the plan when sl__nn_forward runs `batch` images: the whole batch, or - for
 * models that write more activation elements per image than they have weights (MobileNets,
 * SqueezeNet: a batch's activations fall out of the caches while re-reading the weights per
 * image costs little) - micro-batches of one image per thread. */
size_t sl__nn_micro_batch(const sl_nn *m, size_t batch);
void sl__plans_free(sl_nn *m);
/* Runs the graph reps times (after a warm-up pass) timing every step; *text (malloc'ed, owned
 * by the caller) lists the time per operator type and per step, slowest first. For `cnn run
 * --profile`. On failure *text is NULL and err is set. */
sl_status sl__nn_profile(const sl_nn *m, const float *in, size_t batch, float *out, int reps, char **text,
                         sl_error *err);
/* Writes "F fp32, B bf16, I int8 (oneDNN), R own kernels; Q tensors kept in int8 between
 * convolutions": how the convolutions of the plan for
 * `batch` run (builds it if needed). Returns 0, or -1 with err set. */
int sl__plan_conv_summary(const sl_nn *m, size_t batch, char *buf, size_t n, sl_error *err);

/* Shape inference of one node from its input shapes (all values in m->vals; dims[0] of the
 * activations is the batch). Sets rank/dims/count/dtype of the output. */
sl_status sl__infer_shape(const sl_nn *m, const sl__node *n, sl__value *vals, sl_error *err);

/* ---- kernels (ops.c) ------------------------------------------------------------------- */

/* A tensor view for kernels. */
typedef struct sl__tv {
    float *f; int64_t *i;
    int rank; int64_t dims[SL__NN_MAX_RANK];
    size_t count;
    int nhwc;                  /* rank-4 float tensor stored channels-last */
    int dtype;
} sl__tv;

/* Executes one node on views (reference kernels, NHWC-aware). threads >= 1. */
sl_status sl__op_exec(const sl__node *n, sl__tv *const *in, sl__tv *out, void *scratch,
                      int threads, sl_error *err);
/* Scratch bytes sl__op_exec needs for this node (e.g. im2col buffer). */
size_t sl__op_scratch(const sl__node *n, sl__tv *const *in, const sl__tv *out);
void sl__act_apply(float *x, size_t n, const sl__actp *a, int na);
/* Effective pads (top, left, bottom, right) of a Conv/pool node for input ih x iw. */
void sl__conv_pads(const sl__node *n, int64_t ih, int64_t iw, int kh, int kw, int64_t p[4]);

#endif
