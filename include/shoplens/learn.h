/*
 * shoplens/learn.h - what a store learns from the shop's own data: a projection head on the
 * global descriptors (trained from photos labelled with products, or from augmented catalog
 * images), applied to catalog images (gallery side) and to query photos (query side).
 *
 * The head (docs/learn.md; byte layout in docs/formats/features.md, section HEAD):
 *     side s in {query, gallery};  x = the pipeline's global vector (L2-normalized)
 *     c = (x - mean_s) / |x - mean_s|          per-domain centring (photo vs catalog domain)
 *     y = c + (c V) U                          low-rank residual map, V: dim x rank, U: rank x dim
 *     out = y / |y|                            (zeros when x = mean_s)
 * The map starts at the identity (U = 0) and is trained with a proxy-based softmax loss (Proxy-NCA,
 * Movshovitz-Attias et al., ICCV 2017; with normalized embeddings and a temperature as in
 * NormFace, Wang et al. 2017, and InfoNCE, van den Oord et al. 2018): each photo is pulled
 * towards its product's proxy and pushed from the other products' proxies, where a proxy is the
 * head's image of the product's catalog images (not a free parameter, so the head learns a
 * photo-to-catalog mapping rather than a product list), plus the same loss at the category level
 * (category proxy = normalized sum of its products' proxies) as a weaker label. An L2 penalty
 * pulls the map towards the identity so products the head never saw keep their untrained
 * neighbourhoods. Optimizer: Adam (Kingma & Ba, ICLR 2015), mini-batches. Training is
 * deterministic for a seed and any thread count: its matrix products are the library's own
 * (OpenBLAS changes the last bits with the thread count); applying a head uses OpenBLAS.
 *
 * Thread safety: a head is immutable once trained or parsed; any number of threads may apply it.
 * Ownership: sl_head_free releases a head; buffers returned through void ** are malloc'ed and
 * owned by the caller (free()).
 */
#ifndef SHOPLENS_LEARN_H
#define SHOPLENS_LEARN_H

#include <stddef.h>
#include <stdint.h>
#include "shoplens/error.h"
#include "shoplens/image.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sl_head sl_head;

/* Which side of the comparison a vector is on: query photos or catalog (gallery) images. */
typedef enum sl_head_side { SL_HEAD_QUERY = 0, SL_HEAD_GALLERY = 1 } sl_head_side;

/* ---- tunables (sl_head_train_opts) ---------------------------------------------------------- */
#define SL_HEAD_EPOCHS_DEFAULT 10
#define SL_HEAD_EPOCHS_MIN 0          /* 0: the centring alone, no map */
#define SL_HEAD_EPOCHS_MAX 1000
#define SL_HEAD_RANK_DEFAULT 256      /* capped at the descriptor dimension */
#define SL_HEAD_RANK_MIN 1
#define SL_HEAD_RANK_MAX 1024
/* L2 pull towards the identity map (docs/learn.md). The default, SL_HEAD_LAMBDA_AUTO, lets
 * sl_head_train choose it by internal validation (or keep no map at all); any value in
 * MIN..MAX trains with that value. */
#define SL_HEAD_LAMBDA_AUTO (-1.0f)
#define SL_HEAD_LAMBDA_DEFAULT SL_HEAD_LAMBDA_AUTO
/* Used by AUTO when fewer than 8 products have photos and catalog images (too few to hold a
 * quarter of them out). */
#define SL_HEAD_LAMBDA_FALLBACK 0.03f
#define SL_HEAD_LAMBDA_MIN 0.0f
#define SL_HEAD_LAMBDA_MAX 100.0f
#define SL_HEAD_TEMPERATURE_DEFAULT 0.05f
#define SL_HEAD_TEMPERATURE_MIN 0.005f
#define SL_HEAD_TEMPERATURE_MAX 10.0f
#define SL_HEAD_CATEGORY_WEIGHT_DEFAULT 0.5f
#define SL_HEAD_CATEGORY_WEIGHT_MIN 0.0f
#define SL_HEAD_CATEGORY_WEIGHT_MAX 10.0f
#define SL_HEAD_BATCH_DEFAULT 64
#define SL_HEAD_BATCH_MIN 2
#define SL_HEAD_BATCH_MAX 4096
#define SL_HEAD_LR_DEFAULT 1e-3f
#define SL_HEAD_LR_MIN 1e-6f
#define SL_HEAD_LR_MAX 1.0f
/* Proxies (products) in one step's softmax at most: beyond it, a step uses the products of its
 * batch plus a seeded sample of the others. */
#define SL_HEAD_PROXIES_MAX 2048
#define SL_HEAD_THREADS_MAX 64
/* Largest descriptor dimension a head accepts. */
#define SL_HEAD_DIM_MAX 65536

/* Called once per epoch from the training thread: epoch 1..epochs, mean loss of that epoch. */
typedef void (*sl_head_progress_fn)(void *ctx, int epoch, int epochs, double loss);

typedef struct sl_head_train_opts {
    int epochs;               /* passes over the photos */
    uint64_t seed;            /* initialisation, batch order, proxy samples */
    int rank;                 /* rank of the residual map */
    float lambda;             /* L2 penalty on the map (towards the identity), or
                                 SL_HEAD_LAMBDA_AUTO (the default): chosen by validation */
    float temperature;        /* softmax temperature on cosine similarities */
    float category_weight;    /* weight of the category-level loss (0 = off) */
    int batch;                /* photos per step */
    float lr;                 /* Adam step size */
    int threads;              /* threads of the matrix products (0 = 1); results do not depend
                                 on it */
    sl_head_progress_fn progress; /* may be NULL */
    void *progress_ctx;
    volatile int *cancel;     /* may be NULL; nonzero stops training with SL_E_INTERRUPTED */
} sl_head_train_opts;

/* Sets every field to its default. */
void sl_head_train_opts_init(sl_head_train_opts *o);

/* Training data: descriptors (the pipeline's global vectors before any head, row-major, dim
 * floats each) and integer labels. Classes are products (0 .. n_classes - 1); categories are
 * optional coarser labels of the classes. Only classes with at least one photo serve as proxies
 * (a product without photos is neither pulled nor pushed). */
typedef struct sl_head_data {
    size_t dim;
    const float *photos;            /* n_photos x dim: query-side examples */
    const uint32_t *photo_class;    /* n_photos labels < n_classes */
    size_t n_photos;
    const float *gallery;           /* n_gallery x dim: catalog images */
    const uint32_t *gallery_class;  /* n_gallery labels < n_classes */
    size_t n_gallery;
    size_t n_classes;
    const uint32_t *class_category; /* n_classes category ids, or NULL (no category loss) */
    int same_domain;                /* nonzero: photos are not a separate domain (e.g. augmented
                                       catalog images): both sides are centred on the gallery mean */
} sl_head_data;

/* Trains a head. With opts->lambda = SL_HEAD_LAMBDA_AUTO (the default) and epochs > 0 it first
 * chooses by internal validation (docs/learn.md, "Choosing lambda"): a seeded quarter of the
 * products with photos and a seeded fifth of the other photos are held out; no head, centring
 * only and the map at lambda 0.1, 0.03, 0.01, 0 are scored by the reciprocal rank of the held-out
 * photos' products; the choice is the best on held-out photos of trained products among those not
 * significantly worse than no head on the held-out products (one-sided, 5%), or no head (an
 * identity head: rank 0, zero means) when none beats it. Then it trains on all the data with that
 * choice (sl_head_choice tells which), with at least 400 Adam steps (more epochs on small sets).
 * Four candidate trainings (on ~60% of the photos, at least 400 steps each) and the final one:
 * up to five times one training; progress counts every epoch of them. Errors: SL_E_INVALID
 * (NULL or empty data, a label out of range, dim 0 or above SL_HEAD_DIM_MAX, an option out of
 * range: the message names it), SL_E_NOMEM, SL_E_INTERRUPTED (cancel). On failure *out = NULL. Deterministic for (data, opts) whatever
 * opts->threads is. */
sl_status sl_head_train(const sl_head_data *data, const sl_head_train_opts *opts, sl_head **out,
                        sl_error *err);

/* Frees a head; NULL is a no-op. */
void sl_head_free(sl_head *h);
/* A deep copy, or NULL when out of memory. */
sl_head *sl_head_clone(const sl_head *h);

/* What the head is (sl_head_choice): a trained map with lambda >= 0, or one of these. */
#define SL_HEAD_CHOICE_IDENTITY (-1.0f) /* no head: AUTO found nothing better than none */
#define SL_HEAD_CHOICE_CENTRING (-2.0f) /* per-domain centring only (epochs 0) */
#define SL_HEAD_CHOICE_UNKNOWN (-3.0f)  /* parsed from a file (the choice is not stored) */
/* The lambda the head's map was trained with (>= 0), or SL_HEAD_CHOICE_*; UNKNOWN for NULL. */
float sl_head_choice(const sl_head *h);

/* Input and output dimension (they are equal). */
size_t sl_head_dim(const sl_head *h);
/* Rank of the residual map (0 for a centring-only head). */
size_t sl_head_rank(const sl_head *h);

/* Applies the head to n vectors (row-major, sl_head_dim floats each): out may equal in.
 * Thread-safe. SL_E_INVALID on NULL arguments, SL_E_NOMEM (n > 1 uses a scratch buffer). */
sl_status sl_head_apply(const sl_head *h, sl_head_side side, const float *in, float *out,
                        size_t n);

/* Serialized form (docs/formats/features.md, section HEAD payload); *buf malloc'ed. */
sl_status sl_head_serialize(const sl_head *h, void **buf, size_t *len, sl_error *err);
/* Parses what sl_head_serialize wrote. SL_E_CORRUPT (names the field) or SL_E_VERSION. */
sl_status sl_head_parse(const void *buf, size_t len, sl_head **out, sl_error *err);

/* ---- pseudo shopper photos (training from the catalog alone) ------------------------------- */

/* Augmented copies of a catalog image per image when a store has no labelled photos. */
#define SL_LEARN_AUGMENT_PER_IMAGE 6

/* A pseudo shopper photo of a catalog image: a seeded random crop (60..100% of each side),
 * perspective turn, rotation (up to 12 degrees), brightness/contrast change, Gaussian noise and
 * JPEG re-encoding (src/image/augment.c). Deterministic for (image, seed) on every machine.
 * *out is a new image (sl_image_free). Errors from the image functions (SL_E_INVALID for an
 * empty image, SL_E_NOMEM); on failure *out = NULL. */
sl_status sl_learn_augment(const sl_image *src, uint64_t seed, sl_image **out, sl_error *err);

#ifdef __cplusplus
}
#endif
#endif
