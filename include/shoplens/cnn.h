/*
 * shoplens/cnn.h - CNN embeddings from ONNX models, run by shoplens' own engine on the CPU.
 *
 * A model is loaded once and shared: sl_cnn_embed may be called from any number of threads on
 * one sl_cnn at once. Preprocessing per model (resize shorter side, centre-crop, mean/std) comes
 * from a sidecar JSON next to the model (<model>.json) or from options, defaulting to
 * torchvision's ImageNet convention. The embedding is the output of a named tensor, by default the
 * input of the final classifier layer (globally pooled features), L2-normalized.
 */
#ifndef SHOPLENS_CNN_H
#define SHOPLENS_CNN_H

#include <stddef.h>
#include "shoplens/error.h"
#include "shoplens/image.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sl_cnn sl_cnn;

/* Loads an ONNX model. opts may be NULL (defaults; see sl_cnn_opts in this header once
 * defined by the CNN module). Errors: SL_E_IO, SL_E_CORRUPT (names what is wrong),
 * SL_E_UNSUPPORTED (names the operator and the node). */
sl_status sl_cnn_load(const char *path, sl_cnn **out, sl_error *err);
void sl_cnn_free(sl_cnn *m);

/* Dimension of the embedding vector. */
size_t sl_cnn_embed_dim(const sl_cnn *m);

/* Preprocesses n images and writes n L2-normalized embeddings (n * dim floats) to out.
 * Thread-safe. */
sl_status sl_cnn_embed(const sl_cnn *m, const sl_image *const *images, size_t n, float *out,
                       sl_error *err);

#ifdef __cplusplus
}
#endif
#endif
