/*
 * shoplens/feature.h - features that describe an image: colour histograms, SIFT/RootSIFT local
 * features, VLAD over a learned codebook, PCA-whitening, CNN embeddings (nn.h), their fusion
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
#include "shoplens/learn.h"

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
    float input_sigma;      /* blur assumed already present in the input (Lowe: 0.5) */
} sl_sift_params;

/* Sets the defaults. */
void sl_sift_params_init(sl_sift_params *p);

/* Detects keypoints and computes 128-d SIFT descriptors (L2-normalized, clipped at 0.2,
 * renormalized) on an image (colour is converted to grey). On success *kps (n keypoints) and
 * *desc (n * 128 floats, row-major) are malloc'ed and owned by the caller (free()); n may be 0,
 * then both are NULL. On failure nothing is allocated. Thread-safe; deterministic.
 * p NULL = defaults. Keypoints come sorted by decreasing response (a cap keeps a prefix).
 * Errors: SL_E_INVALID (NULL image/outputs, parameter out of range), SL_E_NOMEM. */
sl_status sl_sift_extract(const sl_image *img, const sl_sift_params *p, sl_keypoint **kps,
                          float **desc, size_t *n, sl_error *err);

/* Dense SIFT: descriptors on a regular grid (step pixels, one scale `size`), upright. Same
 * ownership as sl_sift_extract. Grid and `size` as sl_sift_dense_grey below (size = keypoint
 * sigma: each descriptor covers 12 * size pixels). */
sl_status sl_sift_dense(const sl_image *img, int step, float size, sl_keypoint **kps,
                        float **desc, size_t *n, sl_error *err);

/* In place: SIFT -> RootSIFT (Arandjelovic & Zisserman, CVPR 2012): L1-normalize, square root.
 * n descriptors of `dim` floats. */
void sl_rootsift(float *desc, size_t n, size_t dim);

/* Defaults and limits of sl_sift_params (docs/sift.md). The defaults are OpenCV's except
 * upsample (off: ~2.7x faster; bench/results/sift.md measures both). */
#define SL_SIFT_MAX_KEYPOINTS_DEFAULT 0
#define SL_SIFT_OCTAVES_MAX 12
#define SL_SIFT_LEVELS_DEFAULT 3
#define SL_SIFT_LEVELS_MIN 1
#define SL_SIFT_LEVELS_MAX 8
#define SL_SIFT_SIGMA_DEFAULT 1.6f
#define SL_SIFT_SIGMA_MIN 0.8f
#define SL_SIFT_SIGMA_MAX 4.0f
#define SL_SIFT_CONTRAST_DEFAULT 0.04f   /* applied as |D(x)| * levels >= contrast */
#define SL_SIFT_EDGE_DEFAULT 10.0f
#define SL_SIFT_EDGE_MAX 1000.0f
#define SL_SIFT_UPSAMPLE_DEFAULT 0
#define SL_SIFT_INPUT_SIGMA_DEFAULT 0.5f
#define SL_SIFT_THREADS_MAX 16
#define SL_SIFT_SIDE_MAX 65535
#define SL_SIFT_DENSE_SIZE_MIN 0.5f
#define SL_SIFT_DENSE_SIZE_MAX 256.0f

/* sl_sift_extract on a grey float image: width x height values in [0,1], rows `stride` floats
 * apart (stride >= width). p NULL = defaults. Keypoints come sorted by decreasing response.
 * Errors: SL_E_INVALID (NULL pointers, sizes, parameters out of range; message names it),
 * SL_E_NOMEM. Same ownership as sl_sift_extract. */
sl_status sl_sift_extract_grey(const float *grey, int width, int height, size_t stride,
                               const sl_sift_params *p, sl_keypoint **kps, float **desc,
                               size_t *n, sl_error *err);

/* sl_sift_dense on a grey float image (as sl_sift_extract_grey). Grid points are
 * (step/2 + i*step, step/2 + j*step), row-major; `size` is the keypoint sigma (input pixels,
 * SL_SIFT_DENSE_SIZE_MIN..MAX), so each descriptor covers 12 * size pixels square. */
sl_status sl_sift_dense_grey(const float *grey, int width, int height, size_t stride, int step,
                             float size, sl_keypoint **kps, float **desc, size_t *n,
                             sl_error *err);

/* SIFT keeps the large scale-space blocks of finished calls for later calls (any thread), at
 * most SL_SIFT_CACHE_MAX_BYTES in all, which saves the page faults of fresh memory. This frees
 * them (e.g. after a batch); later calls simply allocate again. Thread-safe. */
#define SL_SIFT_CACHE_MAX_BYTES ((size_t)160 << 20)
void sl_sift_cache_release(void);

/* ---- SIFT work: further SIFT declarations go above this line ----------------------------- */


/* ---- building blocks: colour, k-means, VLAD, PCA, RANSAC (src/feature/) --------------- */
/* Colour: a joint HSV histogram, centre-weighted, Hellinger-normalized (square root of the
 * L1-normalized histogram, so its L2 norm is 1 and dot products are Bhattacharyya coefficients).
 * Pixels with saturation below low_sat carry no reliable hue: they go to vbins extra achromatic
 * bins (by value) so greys and whites do not smear over hues. Assignment is soft (trilinear,
 * hue circular) so small colour shifts move mass gradually. */
#define SL_COLOR_BINS_DEFAULT_H 16
#define SL_COLOR_BINS_DEFAULT_S 4
#define SL_COLOR_BINS_DEFAULT_V 4
#define SL_COLOR_BINS_MIN 1
#define SL_COLOR_BINS_MAX 64
#define SL_COLOR_CENTER_DEFAULT 0.4f /* sigma of the Gaussian weight, in half-sides */
#define SL_COLOR_CENTER_MIN 0.05f
#define SL_COLOR_CENTER_MAX 100.0f  /* large = uniform weight */
#define SL_COLOR_GRID_DEFAULT 3     /* 1 = one histogram; g > 1 adds g x g region histograms */
#define SL_COLOR_GRID_MAX 4

typedef struct sl_color_params {
    int hbins, sbins, vbins;   /* joint bins per channel */
    float center_sigma;        /* Gaussian centre weighting (>= SL_COLOR_CENTER_MAX: none) */
    int grid;                  /* spatial layout: 1 = global only */
    float low_sat;             /* saturation in [0,1] under which hue is ignored (default 0.1) */
} sl_color_params;

/* Sets the defaults above. */
void sl_color_params_init(sl_color_params *p);
/* Dimension: (hbins * sbins * vbins + vbins) * (1 + grid^2 when grid > 1); 0 when out of range. */
size_t sl_color_dim(const sl_color_params *p);
/* Computes the histogram of a colour (or grey) image into out (sl_color_dim floats). Large images
 * are sampled on a grid of at most ~256x256 points. Errors: SL_E_INVALID (parameters, empty
 * image). Thread-safe, deterministic. */
sl_status sl_color_hist(const sl_image *img, const sl_color_params *p, float *out,
                        sl_error *err);

/* k-means (Lloyd) with k-means++ seeding (Arthur & Vassilvitskii, SODA 2007); samples larger
 * than batch_threshold use mini-batch updates (Sculley, WWW 2010). Deterministic per seed. */
#define SL_KMEANS_ITERS_DEFAULT 25
#define SL_KMEANS_BATCH_THRESHOLD_DEFAULT 50000
#define SL_KMEANS_BATCH_DEFAULT 4096
typedef struct sl_kmeans_params {
    int iters;                 /* Lloyd iterations, or mini-batch epochs-equivalent */
    size_t batch_threshold;    /* n above this: mini-batch */
    size_t batch;              /* mini-batch size */
    uint64_t seed;
} sl_kmeans_params;
void sl_kmeans_params_init(sl_kmeans_params *p);
/* Clusters n points of dim floats (row-major) into k centroids written to centroids (k * dim
 * floats, caller-allocated). k <= n required (SL_E_INVALID otherwise). *inertia (may be NULL)
 * receives the final mean squared distance to the nearest centroid. */
sl_status sl_kmeans(const float *data, size_t n, size_t dim, size_t k, const sl_kmeans_params *p,
                    float *centroids, double *inertia, sl_error *err);
/* Index of the nearest centroid (squared L2); *dist2 (may be NULL) receives the distance. */
size_t sl_kmeans_nearest(const float *centroids, size_t k, size_t dim, const float *x,
                         float *dist2);

/* VLAD (Jegou et al., CVPR 2010): per cluster, the sum of residuals of the descriptors assigned
 * to it, concatenated (k * dim floats). Flags choose the normalizations, applied in this order:
 * power (signed square root, Jegou et al. PAMI 2012), intra (L2 per cluster block, Arandjelovic
 * & Zisserman CVPR 2013), then a global L2 normalization always. n = 0 gives a zero vector. */
#define SL_VLAD_POWER 1u
#define SL_VLAD_INTRA 2u
void sl_vlad(const float *centroids, size_t k, size_t dim, const float *desc, size_t n,
             unsigned flags, float *out);

/* PCA with optional whitening (Jegou & Chum, ECCV 2012). Learns the mean and the top out_dim
 * principal directions of n samples of in_dim floats (via the n x n Gram matrix when n < in_dim).
 * Whitening divides each component by sqrt(eigenvalue + eps * largest eigenvalue). */
typedef struct sl_pca sl_pca;
#define SL_PCA_EPS_DEFAULT 0.01f
sl_status sl_pca_train(const float *data, size_t n, size_t in_dim, size_t out_dim, int whiten,
                       float eps, sl_pca **out, sl_error *err);
void sl_pca_free(sl_pca *p);
size_t sl_pca_in_dim(const sl_pca *p);
/* The learned output dimension (at most min(out_dim, n - 1, in_dim) asked). */
size_t sl_pca_out_dim(const sl_pca *p);
/* out (out_dim floats) = whitened projection of x (in_dim floats), then L2-normalized. */
void sl_pca_project(const sl_pca *p, const float *x, float *out);

/* RANSAC (Fischler & Bolles, CACM 1981): fits a model mapping src -> dst points (n pairs of x,y
 * floats) and returns the consensus set. Models: affine (3-point minimal sample) or homography
 * (4-point DLT); the best hypothesis is re-estimated on its inliers by least squares. */
typedef enum sl_geo_model { SL_GEO_AFFINE = 0, SL_GEO_HOMOGRAPHY = 1 } sl_geo_model;
#define SL_RANSAC_ITERS_DEFAULT 500
typedef struct sl_ransac_params {
    sl_geo_model model;
    float threshold;          /* inlier reprojection error, pixels */
    int max_iters;            /* hypotheses at most (adaptive stop at 99% confidence) */
    uint64_t seed;
} sl_ransac_params;
void sl_ransac_params_init(sl_ransac_params *p);
/* H (row-major 3x3, src -> dst), *inliers count; inlier_mask (n bytes, may be NULL) marks the
 * consensus set. Fewer than the minimal sample: *inliers = 0, H = identity, SL_OK. */
sl_status sl_ransac(const float *src, const float *dst, size_t n, const sl_ransac_params *p,
                    double H[9], int *inliers, unsigned char *inlier_mask, sl_error *err);
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
/* Memory a set holds once it has been matched as a candidate (sl_features_verify adds a prepared
 * form on first use, about twice the descriptors), for caches that keep catalog images' sets
 * under a byte budget. 0 for NULL. */
size_t sl_local_features_bytes(const sl_local_features *lf);
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

/* Worker threads sl_features_train uses (extraction is single-threaded per call; callers run
 * several calls in parallel). Results do not depend on the thread count. SL_E_INVALID out of
 * range (then the handle's error message says so). */
#define SL_FEATURES_THREADS_DEFAULT 1
#define SL_FEATURES_THREADS_MIN 1
#define SL_FEATURES_THREADS_MAX 16
sl_status sl_features_set_threads(sl_features *f, int threads);

/* How many top candidates of a query the pipeline wants re-ranked by verification ("verify:n=",
 * default 50); 0 when the specification has no verify part. */
int sl_features_verify_top_n(const sl_features *f);

/* The calibration of the spec's bf16 / int8 CNN part (sl_nn_calibration_describe: images, seed,
 * layers kept at fp32, measured cosine to fp32) into buf (n bytes, truncated); "" when the spec
 * has no CNN part at reduced precision or it is not calibrated yet. Nothing is written when buf
 * is NULL or n is 0. */
void sl_features_calibration_describe(const sl_features *f, char *buf, size_t n);

/* Parses a features file already in memory (what sl_features_save writes); `name` labels the
 * messages. Same errors as sl_features_load. Used by the loader and the fuzz target. */
sl_status sl_features_parse(const void *data, size_t len, const char *name, sl_features **out,
                            sl_error *err);

/* ---- the recommended configuration for a model (shoplens init/eval --model) ------------------ */

/* Colour's weight next to a model's embedding (1) in the recommended fusion. */
#define SL_FEATURES_MODEL_COLOR_WEIGHT 0.2
/* The recommended embedding's second scale: the centre 1/1.25 of each side (cnn key `zoom`). */
#define SL_FEATURES_MODEL_ZOOM 1.25
/* Writes the recommended specification for an ONNX model into buf (cap bytes, NUL-terminated):
 * "cnn:PATH,mean=1,flip=1,zoom=1.25+color:w=0.2,mean=1+verify" - the embedding averaged over the
 * image, its centre and both mirrored, and the colour histogram, each centred on the catalog's
 * mean (learned at the first ingest), colour at a fifth of the weight, and geometric
 * verification; one rule for every catalog (docs/features.md "Recommended configuration").
 * SL_E_INVALID when path is NULL/empty or holds '+' or ',' (the spec separators),
 * SL_E_TOO_LARGE when buf is too small. */
sl_status sl_features_model_spec(const char *model_path, char *buf, size_t cap);

/* ---- the learned head (learn.h; `shoplens train`) ------------------------------------------ */

/* sl_features_extract gives the global vector before any head (what the store keeps); the head,
 * when one was trained, maps it differently on the query side (photos) and on the gallery side
 * (catalog images) before indexing and searching. */

/* Installs a head (ownership passes to f; NULL removes the current one). The head's dimension
 * must equal sl_features_dim (SL_E_INVALID otherwise, the head is then not taken). Not while
 * other threads use f. Saved and loaded with the features (section HEAD). */
sl_status sl_features_set_head(sl_features *f, sl_head *head);
/* The installed head, or NULL. */
const sl_head *sl_features_head(const sl_features *f);
/* Applies the head on `side` to n vectors (n x sl_features_dim floats, out may equal in);
 * without a head a copy. Thread-safe. SL_E_INVALID on NULL, SL_E_NOMEM. */
sl_status sl_features_project(const sl_features *f, sl_head_side side, const float *in, float *out,
                              size_t n);

/* ---- the score calibration (learn.h "calibrated confidence") -------------------------------- */

/* Installs a calibration (ownership passes to f, also on failure; NULL removes it: the fallback
 * applies). SL_E_STATE when the features are not trained. Saved and loaded with the features
 * (section CALB). Installing a head, or training the features again, drops the calibration: it
 * was fitted on the scores before. Not while other threads use f. */
sl_status sl_features_set_calib(sl_features *f, sl_calib *calib);
/* The installed calibration, or NULL (then sl_calib_* give the fallback). */
const sl_calib *sl_features_calib(const sl_features *f);
/* Supremum of sl_features_rerank_score for a global score of 1: 1 + the verification weight, or 1
 * without verification. Final scores divided by it lie in -1..1 (the engine's `score`). */
double sl_features_rerank_max(const sl_features *f);

#ifdef __cplusplus
}
#endif
#endif
