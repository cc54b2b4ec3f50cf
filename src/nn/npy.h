/*
 * nn/npy.h - minimal NumPy .npy reader/writer (float32, C order) for `shoplens cnn run`
 * and the CNN tests.
 */
#ifndef SL_NN_NPY_H
#define SL_NN_NPY_H
#include <stddef.h>
#include <stdint.h>
#include "shoplens/error.h"

/* Reads a '<f4' C-order array; *data malloc'ed (caller frees), dims[8], *rank, *count. */
sl_status sl__npy_read(const char *path, float **data, int64_t *dims, int *rank, size_t *count,
                       sl_error *err);
/* Writes a '<f4' C-order array (format 1.0). */
sl_status sl__npy_write(const char *path, const float *data, const int64_t *dims, int rank,
                        sl_error *err);
#endif
