/*
 * shoplens/nn.h - the network runtime: ONNX models (CNN embeddings) run by shoplens' own engine
 * on the CPU.
 *
 * A model is loaded once and shared: sl_nn_embed may be called from any number of threads on
 * one sl_nn at once. Preprocessing per model (resize shorter side, centre-crop, mean/std) comes
 * from a sidecar JSON next to the model (<model>.json) or from options, defaulting to
 * torchvision's ImageNet convention. The embedding is the output of a named tensor, by default the
 * input of the final classifier layer (globally pooled features), L2-normalized.
 */
#ifndef SHOPLENS_NN_H
#define SHOPLENS_NN_H

#include <stddef.h>
#include <stdint.h>
#include "shoplens/error.h"
#include "shoplens/image.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sl_nn sl_nn;

/* Largest model file accepted (mapped, not read into memory twice). */
#define SL_NN_MAX_FILE_BYTES ((size_t)1 << 31)

#define SL_NN_THREADS_DEFAULT 0   /* 0 = one per online CPU */
#define SL_NN_THREADS_MIN 0
#define SL_NN_THREADS_MAX 256
#define SL_NN_MAX_BATCH_DEFAULT 8 /* images per forward pass inside sl_nn_embed */
#define SL_NN_MAX_BATCH_MIN 1
#define SL_NN_MAX_BATCH_MAX 1024

typedef enum sl_nn_precision {
    SL_NN_PRECISION_FP32 = 0,    /* exact: <= 1e-4 relative difference to PyTorch fp32 */
    SL_NN_PRECISION_BF16 = 1,    /* convolutions in bfloat16 through oneDNN primitives
                                     (AVX-512-BF16/AMX), the most sensitive ones kept at fp32
                                     (sl_nn_calibrate). A CPU without AVX-512-BF16 has no oneDNN
                                     bf16 convolution: those run in fp32 (sl_nn_info counts them) */
    SL_NN_PRECISION_INT8 = 2     /* convolutions as oneDNN int8 primitives (VNNI/AMX; 7-bit
                                     weights without VNNI): s8 weights per output channel,
                                     activations quantized per tensor (per channel into depthwise
                                     convolutions) with steps from sl_nn_calibrate, the most
                                     sensitive convolutions kept at fp32 (at bf16 where the CPU
                                     has AVX-512-BF16); accuracy in docs/cnn.md */
} sl_nn_precision;

typedef enum sl_nn_backend {
    SL_NN_BACKEND_AUTO = 0,      /* fastest measured (docs/cnn.md): oneDNN convolution
                                     primitives with fused post-ops (fp32 3x3 stride-1: Winograd
                                     where oneDNN has it; int8 mode: oneDNN int8 primitives),
                                     own kernels for the rest */
    SL_NN_BACKEND_REF = 1,       /* own convolution (im2col + OpenBLAS sgemm, direct depthwise):
                                     a second, independent implementation used by the tests */
    SL_NN_BACKEND_GEMM = 2       /* own convolution with oneDNN's JIT sgemm (in int8 mode the
                                     ref and gemm backends use an own im2col + u8s8 GEMM path) */
} sl_nn_backend;

/* Layout of the model's image input. */
#define SL_NN_LAYOUT_AUTO 0   /* from the input shape: [N,3,H,W] is NCHW, [N,H,W,3] NHWC */
#define SL_NN_LAYOUT_NCHW 1
#define SL_NN_LAYOUT_NHWC 2

/* Image preprocessing before the network: torchvision's classification transforms on a PIL
 * image (Resize, CenterCrop, ToTensor, Normalize), reproduced exactly: the shorter side is
 * resized to `resize` (the longer to int(resize * long / short)) with Pillow's antialiased
 * filter (sl_image_resize_filter), the centre crop starts at int(round((size - crop) / 2.0))
 * (round half to even, as Python) and pads with black when the image is smaller, then
 * (pixel * scale - mean[c]) / std[c] in float32. Defaults: ImageNet (256 / 224, bilinear, mean
 * 0.485 0.456 0.406, std 0.229 0.224 0.225, scale 1/255, RGB). */
typedef struct sl_nn_preproc {
    int resize;        /* shorter side after resizing (0 = resize straight to the input size;
                          -1 = torchvision's ratio: the input size x 256 / 224) */
    int crop;          /* square centre crop side; 0 = the model's input size */
    float mean[3], std[3];
    float scale;       /* pixel multiplier before mean/std (1/255 for [0,1] inputs) */
    int bgr;           /* nonzero: channel order B,G,R instead of R,G,B */
    sl_image_filter interp; /* resize filter (default SL_IMAGE_FILTER_BILINEAR) */
    int layout;        /* SL_NN_LAYOUT_*; AUTO is resolved at load (sl_nn_preproc_get) */
} sl_nn_preproc;

/* Sets torchvision's ImageNet preprocessing (256 / 224, bilinear, mean 0.485 0.456 0.406,
 * std 0.229 0.224 0.225, scale 1/255, RGB, layout from the model). */
void sl_nn_preproc_init(sl_nn_preproc *p);

/* Load options. Initialize with sl_nn_opts_init, then adjust. */
typedef struct sl_nn_opts {
    int threads;               /* threads per forward pass (0 = online CPUs). OpenMP: on machines
                                  shared with other work, start the process with
                                  OMP_WAIT_POLICY=passive (docs/cnn.md) */
    size_t max_batch;          /* images per forward pass in sl_nn_embed */
    const char *output;        /* tensor whose value is the embedding / run output; NULL =
                                  the globally pooled features (input of the classifier);
                                  "" = the graph's first output */
    int normalize;             /* L2-normalize embeddings (default 1) */
    sl_nn_precision precision;
    sl_nn_backend backend;
    int have_preproc;          /* nonzero: use `preproc` below and ignore the sidecar JSON */
    sl_nn_preproc preproc;
    const char *sidecar;       /* sidecar JSON path; NULL = "<model>.json" if it exists */
} sl_nn_opts;

void sl_nn_opts_init(sl_nn_opts *o);

/* Loads an ONNX model with the default options (sl_nn_load_opts with NULL opts).
 * On success *out is a new model owned by the caller (sl_nn_free); on failure *out = NULL.
 * Errors: SL_E_IO, SL_E_CORRUPT (names what is wrong), SL_E_UNSUPPORTED (names the operator and
 * the node), SL_E_TOO_LARGE, SL_E_NOMEM. */
sl_status sl_nn_load(const char *path, sl_nn **out, sl_error *err);
/* Same with options (NULL = defaults). The sidecar JSON (docs/cnn.md) is read when present.
 * SL_E_INVALID when opts are out of range or the output tensor does not exist. */
sl_status sl_nn_load_opts(const char *path, const sl_nn_opts *opts, sl_nn **out,
                           sl_error *err);
/* Frees a model; NULL is a no-op. No call on m may be running. */
void sl_nn_free(sl_nn *m);

/* Input tensor shape (NCHW; dims[0] = -1 when the batch is dynamic). Returns the rank. */
int sl_nn_input_shape(const sl_nn *m, int64_t dims[4]);
/* The preprocessing in effect. */
const sl_nn_preproc *sl_nn_preproc_get(const sl_nn *m);
/* Name of the tensor used as output (owned by m). */
const char *sl_nn_output_name(const sl_nn *m);

/* Human-readable description (inputs, outputs, operators with counts, parameter count, FLOPs
 * per image, load-time fusions). *text is malloc'ed, owned by the caller. */
sl_status sl_nn_info(const sl_nn *m, char **text, sl_error *err);
/* Parameter count and multiply-add FLOPs (x2) per image of the full graph. */
int64_t sl_nn_params(const sl_nn *m);
int64_t sl_nn_flops(const sl_nn *m);

/* Runs the raw graph: in = batch images as the model's input tensor (float32, NCHW, C order),
 * out = batch * sl_nn_embed_dim floats of the output tensor (logical layout, not normalized).
 * Thread-safe. Errors: SL_E_INVALID (batch does not match a fixed-batch model), SL_E_NOMEM. */
sl_status sl_nn_run(const sl_nn *m, const float *in, size_t batch, float *out,
                     sl_error *err);
/* Output shape for a given batch. Returns the rank. */
int sl_nn_output_shape(const sl_nn *m, size_t batch, int64_t dims[8]);

/* Dimension of the embedding vector (elements of the output tensor per image). */
size_t sl_nn_embed_dim(const sl_nn *m);

/* Embeds n already preprocessed images (model input tensors, float32 NCHW, C order): runs the
 * graph in chunks of max_batch and L2-normalizes (unless disabled). out: n * dim floats.
 * Thread-safe. */
sl_status sl_nn_embed_tensor(const sl_nn *m, const float *in, size_t n, float *out,
                              sl_error *err);

/* Preprocesses n images into the model's input tensor (n * per-image input floats, in the
 * model's layout), exactly what sl_nn_embed feeds the network: for comparing with another
 * runtime or preprocessing. Thread-safe. Errors: SL_E_INVALID (empty image), SL_E_UNSUPPORTED
 * (the input is not a 3-channel image tensor; builds without the image module), SL_E_NOMEM. */
sl_status sl_nn_preprocess(const sl_nn *m, const sl_image *const *images, size_t n, float *out,
                           sl_error *err);

/* sl_nn_preprocess with the shorter side resized to `resize` pixels instead of the model's own
 * (then the same centre crop): a closer view (larger resize) or a wider one, for multi-scale
 * embeddings (the feature spec's cnn `zoom`). resize 0 = the model's own. Errors as
 * sl_nn_preprocess, and SL_E_INVALID for a resize outside 0..SL_IMAGE_MAX_SIDE_MAX or a
 * non-zero resize on a model whose preprocessing does not resize (resize 0 in its sidecar). */
sl_status sl_nn_preprocess_resized(const sl_nn *m, const sl_image *const *images, size_t n, int resize,
                                   float *out, sl_error *err);

/* Preprocesses n images and writes n L2-normalized embeddings (n * dim floats) to out.
 * Thread-safe. Needs the image module (SL_E_UNSUPPORTED in builds without it). */
sl_status sl_nn_embed(const sl_nn *m, const sl_image *const *images, size_t n, float *out,
                       sl_error *err);

/* ---- reduced precision: calibration (docs/cnn.md "Precision") -------------------------------
 * A model loaded with precision bf16 or int8 learns, from sample images, which convolutions stay
 * at fp32 (the sensitive ones) and, for int8, every convolution input's quantization step. Without
 * a calibration, the first forward pass calibrates on built-in synthetic images; a catalog's own
 * images describe real activations better (shoplens stores calibrate on theirs and persist the
 * result). Calibration is deterministic for the same images, options and seed, on any number of
 * threads. */

typedef enum sl_nn_calib_method {
    SL_NN_CALIB_MINMAX = 0,      /* largest |x| seen */
    SL_NN_CALIB_PERCENTILE = 1,  /* the `percentile` of |x| */
    SL_NN_CALIB_MSE = 2,         /* least squared quantization error (clipping + rounding) */
    SL_NN_CALIB_ENTROPY = 3      /* least KL divergence (TensorRT's entropy calibration) */
} sl_nn_calib_method;

#define SL_NN_CALIB_METHOD_DEFAULT SL_NN_CALIB_MSE
#define SL_NN_CALIB_PERCENTILE_DEFAULT 99.99
#define SL_NN_CALIB_IMAGES_DEFAULT 64    /* images for the ranges (a seeded sample of those given) */
#define SL_NN_CALIB_IMAGES_MIN 1
#define SL_NN_CALIB_IMAGES_MAX 4096
#define SL_NN_CALIB_SENS_IMAGES_DEFAULT 8 /* images for the per-layer sensitivity (0: keep none) */
#define SL_NN_CALIB_SEED_DEFAULT 17

typedef struct sl_nn_calib_opts {
    sl_nn_calib_method method;   /* range estimator (int8) */
    double percentile;           /* SL_NN_CALIB_PERCENTILE: (50, 100] */
    size_t max_images;           /* images used: a seeded sample when more are given */
    size_t sens_images;          /* of those, images that measure each layer's sensitivity */
    double budget;               /* keep rule: the mean 1 - cosine of the embedding the reduced
                                    layers may add up to; 0 = the precision's default */
    int per_channel;             /* int8: one step per channel for depthwise convolution inputs */
    int keep_bf16;               /* int8: 1 (default) = where the CPU has AVX-512-BF16 dot products,
                                    convolutions kept out of int8 may run at bf16 (within a tenth
                                    of the budget) instead of fp32; 0 = always fp32 */
    uint64_t seed;               /* sample of the images */
    int threads;                 /* 0 = the model's thread count; results do not depend on it */
} sl_nn_calib_opts;

void sl_nn_calib_opts_init(sl_nn_calib_opts *o);

/* Calibrates model m (loaded with precision bf16 or int8) on n images (preprocessed as
 * sl_nn_embed does; a seeded sample of opts->max_images is used when n is larger); NULL opts =
 * defaults. Replaces any earlier calibration and drops the plans built with it: no other call on
 * m may run meanwhile. The images stay the caller's. Errors: SL_E_INVALID (fp32 model, bad
 * options, no image), SL_E_UNSUPPORTED (not an image model), SL_E_NOMEM; m is unchanged then. */
sl_status sl_nn_calibrate(sl_nn *m, const sl_image *const *images, size_t n, const sl_nn_calib_opts *opts,
                          sl_error *err);
/* The same on n already preprocessed input tensors (float32 NCHW, C order). */
sl_status sl_nn_calibrate_tensor(sl_nn *m, const float *in, size_t n, const sl_nn_calib_opts *opts,
                                 sl_error *err);
/* Serializes m's calibration (docs/formats/nn_calibration.md) into *buf (malloc'ed, *len bytes,
 * owned by the caller). SL_E_INVALID when m has none (fp32, or not calibrated yet). */
sl_status sl_nn_calibration_save(const sl_nn *m, uint8_t **buf, size_t *len, sl_error *err);
/* Installs a calibration sl_nn_calibration_save wrote, for the same model file and precision;
 * no other call on m may run meanwhile. SL_E_CORRUPT for damaged bytes, SL_E_INVALID when it
 * belongs to other weights, tensors or another precision (the message says which); m is
 * unchanged on failure. */
sl_status sl_nn_calibration_load(sl_nn *m, const uint8_t *buf, size_t len, sl_error *err);
/* 0: not calibrated, 1: calibrated on given images or a loaded record, 2: on the synthetic images. */
int sl_nn_calibrated(const sl_nn *m);
/* One line describing m's calibration into buf (n bytes, truncated, no newline): precision,
 * images, seed, range estimator, the convolutions kept at fp32 (and, int8, at bf16) with their
 * sensitivities (int8, and bf16 for those kept at bf16) and the
 * embedding cosine to fp32 it measured; "" for an fp32 model or one not calibrated yet (and when
 * buf is NULL or n is 0, nothing is written). The text `cnn info` shows after "calibration: ". */
void sl_nn_calibration_describe(const sl_nn *m, char *buf, size_t n);

#ifdef __cplusplus
}
#endif
#endif
