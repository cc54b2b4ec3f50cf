/*
 * shoplens/feature.h - features that describe an image: colour histograms, SIFT/RootSIFT local
 * features, VLAD over a learned codebook, PCA-whitening, CNN embeddings (cnn.h), their fusion
 * into one global vector per image, and geometric verification (RANSAC) for re-ranking.
 *
 * Two levels:
 *  1. Building blocks (SIFT, k-means, VLAD, PCA, colour, RANSAC) as plain functions.
 *  2. The pipeline `sl_features`, built from a feature specification string such as
 *     "color", "vlad", "color+vlad", "color+vlad+verify", "cnn:model.onnx+color". It turns an
 *     image into one L2-normalized global vector of sl_features_dim() floats (for the index),
 *     and optionally into compact local features (for geometric verification).
 *
 * Thread safety: after training (or loading), an sl_features is read-only: any number of threads
 * may call sl_features_extract / sl_features_verify on it at once. Training and freeing need
 * exclusive access.
 * Ownership: arrays returned through pointer-to-pointer arguments are malloc'ed and owned by the
 * caller (free()), unless a dedicated free function is named.
 */
#ifndef SHOPLENS_FEATURE_H
#define SHOPLENS_FEATURE_H

#include <stddef.h>
#include <stdint.h>
#include "shoplens/error.h"
#include "shoplens/image.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- local features (src/feature/sift*.c) ------------------------------------------------ */

/* A keypoint in input-image pixel coordinates. */
typedef struct sl_keypoint {
    float x, y;       /* position (pixels, origin at the centre of the top-left pixel) */
    float scale;      /* sigma of the detection scale, in input pixels */
    float angle;      /* orientation in radians, [0, 2pi); 0 for upright */
    float response;   /* |DoG| contrast at the extremum (for ranking) */
    int octave;       /* octave index (-1 when the image was upsampled) */
} sl_keypoint;

#define SL_SIFT_DESC_DIM 128

/* SIFT parameters (Lowe, IJCV 2004). Initialize with sl_sift_params_init, then adjust. */
typedef struct sl_sift_params {
    int max_keypoints;      /* keep the strongest N by response (0 = no cap) */
    int upright;            /* nonzero: no orientation assignment (angle 0) */
    int octaves;            /* number of octaves (0 = as many as the image allows) */
    int levels;             /* scales per octave (Lowe: 3) */
    float sigma;            /* base blur (Lowe: 1.6) */
    float contrast_threshold; /* DoG peak threshold on [0,1] intensities (Lowe: 0.03/levels) */
    float edge_threshold;   /* principal curvature ratio r (Lowe: 10) */
    int upsample;           /* nonzero: double the image first (octave -1) */
    int threads;            /* worker threads for one image (0 or 1 = the calling thread) */
    /* ---- SIFT work may add fields below; sl_sift_params_init sets them all ---- */
} sl_sift_params;

/* Sets the defaults. */
void sl_sift_params_init(sl_sift_params *p);

/* Detects keypoints and computes 128-d SIFT descriptors (L2-normalized, clipped at 0.2,
 * renormalized) on an image (colour is converted to grey). On success *kps (n keypoints) and
 * *desc (n * 128 floats, row-major) are malloc'ed and owned by the caller (free()); n may be 0,
 * then both are NULL. On failure nothing is allocated. Thread-safe; deterministic. */
sl_status sl_sift_extract(const sl_image *img, const sl_sift_params *p, sl_keypoint **kps,
                          float **desc, size_t *n, sl_error *err);

/* Dense SIFT: descriptors on a regular grid (step pixels, one scale `size`), upright. Same
 * ownership as sl_sift_extract. */
sl_status sl_sift_dense(const sl_image *img, int step, float size, sl_keypoint **kps,
                        float **desc, size_t *n, sl_error *err);

/* In place: SIFT -> RootSIFT (Arandjelovic & Zisserman, CVPR 2012): L1-normalize, square root.
 * n descriptors of `dim` floats. */
void sl_rootsift(float *desc, size_t n, size_t dim);

/* ---- SIFT work: further SIFT declarations go above this line ----------------------------- */


/* ---- building blocks: colour, k-means, VLAD, PCA, RANSAC (src/feature/)  --------------- */
/* ---- feature work: building-block declarations go above this line ------------------------ */

/* ---- the pipeline (src/feature/features.c) ----------------------------------------------- */

typedef struct sl_features sl_features;
typedef struct sl_local_features sl_local_features;

/* The default specification: the best combination measured (bench/results/quality.md). */
#define SL_FEATURES_SPEC_DEFAULT "color+vlad+verify"

/* Parses a specification and creates an untrained pipeline. spec NULL = the default.
 * Errors: SL_E_INVALID with a message pointing at the bad token; SL_E_IO / SL_E_CORRUPT /
 * SL_E_UNSUPPORTED from loading a CNN model named by "cnn:PATH". */
sl_status sl_features_new(const char *spec, sl_features **out, sl_error *err);
void sl_features_free(sl_features *f);

/* Canonical form of the specification (static for the life of f). */
const char *sl_features_spec(const sl_features *f);
/* Last error message on this handle. */
const char *sl_features_errmsg(const sl_features *f);

/* Nonzero when the pipeline has learned parts (codebook, PCA) and sl_features_train must run
 * before extraction. */
int sl_features_needs_training(const sl_features *f);
/* Nonzero when training is done or none is needed. */
int sl_features_ready(const sl_features *f);
/* Nonzero when the specification asks for geometric verification (local features kept). */
int sl_features_uses_verify(const sl_features *f);

/* Learns the codebook / PCA from a sample of catalog images (the caller picks the sample, e.g.
 * up to a few thousand images). Deterministic for a seed. Calling it again re-learns. */
sl_status sl_features_train(sl_features *f, const sl_image *const *images, size_t n,
                            uint64_t seed);

/* Dimension of the global vector; 0 before training when training is needed. */
size_t sl_features_dim(const sl_features *f);

/* Saves the specification and every learned part to one file (format: docs/formats/features.md),
 * atomically (temp file + rename). */
sl_status sl_features_save(const sl_features *f, const char *path);
/* Loads what sl_features_save wrote. A damaged file -> SL_E_CORRUPT naming the section. */
sl_status sl_features_load(const char *path, sl_features **out, sl_error *err);

/* Extracts the global vector of an image into vec (capacity sl_features_dim floats),
 * L2-normalized. If local is non-NULL and the pipeline uses verification, *local receives the
 * compact local features (free with sl_local_features_free), else *local = NULL.
 * Thread-safe on a ready pipeline. Errors go to err (the handle is not written). */
sl_status sl_features_extract(const sl_features *f, const sl_image *img, float *vec,
                              sl_local_features **local, sl_error *err);

/* Compact local features: keypoints + 8-bit RootSIFT descriptors (at most a few hundred). */
void sl_local_features_free(sl_local_features *lf);
size_t sl_local_features_count(const sl_local_features *lf);
/* Serialized form for storage (format in docs/formats/features.md); *buf malloc'ed. */
sl_status sl_local_features_serialize(const sl_local_features *lf, void **buf, size_t *len,
                                      sl_error *err);
sl_status sl_local_features_deserialize(const void *buf, size_t len, sl_local_features **out,
                                        sl_error *err);

/* Result of geometric verification between a query and a candidate. */
typedef struct sl_verify_result {
    int matches;      /* tentative matches (ratio test + mutual nearest) */
    int inliers;      /* RANSAC inliers of the fitted model */
    double H[9];      /* fitted model, maps query -> candidate (row-major 3x3) */
} sl_verify_result;

/* Matches and fits a model between two sets of local features. Thread-safe, deterministic. */
sl_status sl_features_verify(const sl_features *f, const sl_local_features *query,
                             const sl_local_features *candidate, sl_verify_result *res,
                             sl_error *err);

/* The re-ranking score of a candidate: the global similarity blended with its verification
 * (inliers). Monotone in both. Scores are comparable across candidates of one query. */
double sl_features_rerank_score(const sl_features *f, double global_score,
                                const sl_verify_result *res);

#ifdef __cplusplus
}
#endif
#endif
