/*
 * shoplens/learn.h - what a store learns from the shop's own data: a projection head on the
 * global descriptors (trained from photos labelled with products, or from augmented catalog
 * images), applied to catalog images (gallery side) and to query photos (query side); and a
 * calibration of match scores into confidence (see "calibrated confidence" below).
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
/* Prototypes (docs/learn.md, "Prototypes"): a head keeps one per trained product, up to this many;
 * a training with more products with photos keeps none. */
#define SL_HEAD_PROTOTYPES_MAX 2048
/* Labels are broad (categories, not products) when those with photos have at least this many
 * catalog images each on average: only then does a head get prototypes. */
#define SL_HEAD_PROTOTYPE_MIN_IMAGES 8
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
 * photos' products; among those not significantly worse than no head on the held-out products
 * (one-sided, 5%) the choice is the one with the best mean of the held-out trained products' and
 * held-out products' mean reciprocal ranks, or no head (an identity head: rank 0, zero means)
 * when none beats it. Then it trains on all the data with that
 * choice (sl_head_choice tells which), with at least 400 Adam steps (more epochs on small sets).
 * Four candidate trainings (on ~60% of the photos, at least 400 steps each) and the final one:
 * up to five times one training; progress counts every epoch of them. Errors: SL_E_INVALID
 * (NULL or empty data, a label out of range, dim 0 or above SL_HEAD_DIM_MAX, an option out of
 * range: the message names it), SL_E_NOMEM, SL_E_INTERRUPTED (cancel). On failure *out = NULL. Deterministic for (data, opts) whatever
 * opts->threads is. */
sl_status sl_head_train(const sl_head_data *data, const sl_head_train_opts *opts, sl_head **out,
                        sl_error *err);

/* Trains a head on `data` with the setting `like` was trained with (sl_head_choice: the same
 * lambda, centring only, or no head), as sl_head_train trains its final head once it has chosen:
 * no validation runs. Used to train a stand-in for a head on part of its data (`shoplens train`
 * calibrates with a head that did not see the calibration photos). When opts fixes the setting
 * itself (lambda not SL_HEAD_LAMBDA_AUTO, or epochs 0) `like` is ignored and this is
 * sl_head_train. Errors: those of sl_head_train; SL_E_INVALID when like's setting is unknown
 * (NULL, or a head parsed from a file). On failure *out = NULL. Deterministic for (like's
 * setting, data, opts) whatever opts->threads is. */
sl_status sl_head_train_as(const sl_head *like, const sl_head_data *data, const sl_head_train_opts *opts,
                           sl_head **out, sl_error *err);

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
/* Prototypes the head mixes its output with (0: none) and their weight (0 when none):
 * out = normalize(y + weight softmax(y P^T / 0.05) P), P = the normalized mean of each trained
 * label's photos through the head (docs/learn.md, "Prototypes"). Only sl_head_train with
 * SL_HEAD_LAMBDA_AUTO on broad labels (SL_HEAD_PROTOTYPE_MIN_IMAGES) gives a head prototypes, with
 * the weight (1, 2 or 4, or none) chosen on held-out photos of trained labels; product labels, a
 * fixed lambda and same_domain data never do. */
size_t sl_head_prototypes(const sl_head *h);
float sl_head_prototype_weight(const sl_head *h);

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

/* A pseudo shopper photo of a catalog image, for calibrating confidence from the catalog alone
 * (src/learn/shopper.c): a seeded crop (75..100% of each side) placed at 30..75% of the frame
 * over a plain colour with a gradient, rotated up to 15 degrees with a perspective term,
 * then uneven lighting with a colour cast, Gaussian blur (1.2..3 pixels per 512 of the short
 * side), noise and JPEG (quality 50..85).
 * Same size as src, 3 channels. Deterministic for (src, seed) on every machine.
 * *out is a new image; errors of the image functions, SL_E_INVALID for an empty src. */
sl_status sl_learn_shopper_photo(const sl_image *src, uint64_t seed, sl_image **out, sl_error *err);

/* Height of the product in a shelf photo, as a share of the frame's height. */
#define SL_LEARN_SHELF_SCALE_MIN 0.3
#define SL_LEARN_SHELF_SCALE_MAX 0.55
/* Chance that a place on the shelf holds another facing of the product itself. */
#define SL_LEARN_SHELF_FACING 0.25
/* Other catalog images a shelf photo is filled with (sl__engine_calibrate draws them). */
#define SL_LEARN_SHELF_OTHERS 6

/* A pseudo shopper photo taken at a shelf, for calibrating confidence from the catalog alone
 * (src/learn/shopper.c): a crop (80..100% of each side) of src standing on a shelf board at
 * SL_LEARN_SHELF_SCALE_MIN..MAX of the frame's height, between other products - the images
 * `others` (other catalog products, cycled) and, at SL_LEARN_SHELF_FACING of the places, more
 * facings of src - with rows of them above and below, over a plain colour; seen zoomed in up to
 * 25%, rotated up to 10 degrees with a perspective term, then the camera of
 * sl_learn_shopper_photo (lighting, blur, noise, JPEG). A shop photo of a product shows its
 * neighbours too: against the other products it scores closer to what a real photo scores.
 * Same size as src, 3 channels. Deterministic for (src, others, seed) on every machine. n_others
 * may be 0 (facings only). Images are borrowed, never modified. *out is a new image;
 * SL_E_INVALID for an empty image or NULL others with n_others > 0, errors of the image
 * functions. */
sl_status sl_learn_shelf_photo(const sl_image *src, const sl_image *const *others, size_t n_others, uint64_t seed,
                               sl_image **out, sl_error *err);

/* ---- calibrated confidence (src/learn/calib.c) --------------------------------------------- */

/* A calibration maps a photo's match score and margin against a product to the probability that
 * the photo shows the product ("confidence", 0..1) and fixes an operating point ("match" =
 * confidence at least the point's).
 *
 * The match score of a photo x and a product P (computed by the engine, docs/learn.md) is
 *     m(x, P) = score(x, P) - mean of the K highest scores of x against the other products
 * where score is the engine's final score (global similarity blended with verification, in
 * -1..1), so m is in -2..2: the score relative to the photo's nearest other products (query-side
 * cohort normalization: T-norm without the variance, Auckenthaler et al., DSP 2000; the query term
 * of CSLS, Conneau et al., ICLR 2018). It removes the per-photo offset that makes raw scores of
 * shop photos and of catalog-like images incomparable. The margin
 *     g(x, P) = score(x, P) - the highest score of x against the other products
 * (-2..2; 0 - score when there is no other product) is positive only for the first result and
 * says by how much it beats the second: the difference form of Lowe's ratio test (Lowe, IJCV
 * 2004). A map combines them as s = (1 - lambda) m + lambda g, lambda in 0..1 fitted with it.
 *
 * Two maps are fitted on the same labelled pairs, because the two questions have different
 * alternatives:
 *  - SL_CALIB_PAIR (check: "does this photo show this product?"): negatives are the photo against
 *    random other products;
 *  - SL_CALIB_RESULT (search and similar results: "is this result the product in the photo?"):
 *    negatives are the wrong products that come first in a photo's result list, with its product
 *    in the catalog and left out of it (a photo of something the shop does not sell).
 * Each map is a logistic regression on (m, g), confidence = 1 / (1 + exp(-(a s + b))) with a > 0:
 * Platt scaling (Platt 1999) with the margin as a second input, both weights constrained to be
 * non-negative (fitted by Newton's method with backtracking as in Lin, Lin & Weng, Machine
 * Learning 2007; when the unconstrained fit gives a margin or score weight below 0, the better of
 * the two one-input fits is kept), on Platt's smoothed targets, positives and negatives weighted to
 * equal total weight (even prior odds). Confidence is non-decreasing in the engine's score for a
 * fixed photo (m and g both are), so it never reorders results.
 * Operating points:
 *  - the check map's is the lowest s at which the one-sided 95% Wilson upper bound of the false
 *    accept rate on its negatives is at most `far` (default 2%);
 *  - the search map's, when the data carry each calibration photo's first result (`top`), is the
 *    lowest s at which the one-sided 95% Wilson lower bound of the precision of the first results
 *    accepted (the share that are the photo's product) is at least `precision` (default 90%): a
 *    match is a first result that is right nine times in ten; without `top`, the FAR rule.
 * When the scores do not rank genuine pairs above a result map's negatives (search cannot tell
 * the right product from the best wrong one, e.g. colour-only features on cluttered photos), or
 * no point reaches the target, that map is flat or its point lies above every score seen: results
 * are never a match.
 * Without a calibration (NULL) the documented fallback applies: a = SL_CALIB_FALLBACK_A,
 * b = SL_CALIB_FALLBACK_B, lambda 0 for both maps, operating point confidence 0.5, cohort
 * SL_CALIB_COHORT_DEFAULT.
 *
 * Thread safety: a calibration is immutable once fitted or parsed. */
typedef struct sl_calib sl_calib;

typedef enum sl_calib_use { SL_CALIB_PAIR = 0, SL_CALIB_RESULT = 1 } sl_calib_use;

/* Where a calibration's positives came from. */
typedef enum sl_calib_source {
    SL_CALIB_NONE = 0,      /* no calibration: the fallback */
    SL_CALIB_PHOTOS = 1,    /* photos labelled with products (shoplens train/calibrate --photos) */
    SL_CALIB_CATALOG = 2    /* augmented copies of the catalog images (pseudo shopper photos) */
} sl_calib_source;

#define SL_CALIB_FAR_DEFAULT 0.02
#define SL_CALIB_FAR_MIN 0.001
#define SL_CALIB_FAR_MAX 0.5
/* Precision the search map's matches are held to (the result map's operating point). */
#define SL_CALIB_PRECISION_DEFAULT 0.9
#define SL_CALIB_PRECISION_MIN 0.5
#define SL_CALIB_PRECISION_MAX 0.999
/* Other products whose scores are averaged into the match score (fewer when the catalog has
 * fewer other products). */
#define SL_CALIB_COHORT_DEFAULT 10
#define SL_CALIB_COHORT_MAX 100
/* Least genuine pairs and least negatives (per map) a calibration is fitted from. */
#define SL_CALIB_MIN_POSITIVES 20
#define SL_CALIB_MIN_NEGATIVES 50
/* The fallback map (no calibration): confidence 0.5 at match score 0.1. */
#define SL_CALIB_FALLBACK_A 20.0
#define SL_CALIB_FALLBACK_B (-2.0)
/* Range of match scores. */
#define SL_CALIB_SCORE_MIN (-2.0)
#define SL_CALIB_SCORE_MAX 2.0

/* Match scores (and margins) to fit from. */
typedef struct sl_calib_data {
    const double *pos;          /* genuine pairs: a photo and its product */
    size_t n_pos;
    const double *neg[2];       /* per map (sl_calib_use): the negatives described above */
    size_t n_neg[2];
    /* Optional margins of the same pairs (NULL: unknown; the maps then use m alone, lambda 0). */
    const double *pos_margin;
    const double *neg_margin[2];
    /* Optional (n_top 0: the result map uses the FAR rule): each calibration photo's first result
     * with its product in the catalog, its match score and margin, and whether it is the photo's
     * product; n_top at least SL_CALIB_MIN_POSITIVES. */
    const double *top, *top_margin;
    const unsigned char *top_right;
    size_t n_top;
    double precision;           /* the search map's precision target (0 = the default) */
    sl_calib_source source;     /* SL_CALIB_PHOTOS or SL_CALIB_CATALOG */
    int cohort;                 /* K the match scores were computed with, 1..SL_CALIB_COHORT_MAX */
    uint64_t photos;            /* photos (or augmented copies) the pairs come from (informational) */
    uint64_t products;          /* products in the store when fitted (informational) */
    uint64_t seed;              /* seed that drew the pairs (informational) */
} sl_calib_data;

/* Fits both maps. far in SL_CALIB_FAR_MIN..MAX (0 = default), d->precision in
 * SL_CALIB_PRECISION_MIN..MAX (0 = default). Deterministic. Errors: SL_E_INVALID (NULL, a
 * non-finite or out-of-range score or margin, fewer than SL_CALIB_MIN_POSITIVES positives or
 * SL_CALIB_MIN_NEGATIVES negatives of a map, margins of the positives without the negatives',
 * fewer than SL_CALIB_MIN_POSITIVES first results or first results without scores or labels, a
 * bad source, cohort or precision target, or scores that do not rank positives above the pair
 * map's negatives: the message says which), SL_E_NOMEM.
 * *out = NULL on failure. */
sl_status sl_calib_fit(const sl_calib_data *d, double far, sl_calib **out, sl_error *err);

/* Frees; NULL is a no-op. */
void sl_calib_free(sl_calib *c);
/* A deep copy, or NULL when out of memory (or c is NULL). */
sl_calib *sl_calib_clone(const sl_calib *c);
/* A calibration with the check map (SL_CALIB_PAIR) of `pair` and the search map (SL_CALIB_RESULT)
 * of `result`, for maps fitted on different photos (`shoplens train`: check from photos held out
 * of a stand-in head, search from the head's own photos); source, cohort, photos, products and
 * seed are pair's. NULL when either is NULL, their cohorts differ, or out of memory. */
sl_calib *sl_calib_merge(const sl_calib *pair, const sl_calib *result);

/* Confidence (0..1) of a match score and margin; c NULL = the fallback. Non-decreasing in both. */
double sl_calib_confidence(const sl_calib *c, sl_calib_use use, double match_score, double margin);
/* The operating point as a confidence: "match" = confidence >= this. */
double sl_calib_threshold(const sl_calib *c, sl_calib_use use);
/* K of the match score this calibration expects (SL_CALIB_COHORT_DEFAULT for NULL). */
int sl_calib_cohort(const sl_calib *c);

/* What a calibration is, for `shoplens info` and the API. */
typedef struct sl_calib_map_info {
    double a, b;                /* confidence = 1 / (1 + exp(-(a s + b))) */
    double lambda;              /* s = (1 - lambda) m + lambda g */
    double score_threshold;     /* s at the operating point */
    double confidence_threshold;/* = confidence at score_threshold */
    double far_target;          /* the operating point's bound on false accepts */
    uint64_t positives, negatives;
    double tar, far;            /* accept rates of positives and negatives at the operating point
                                   on the calibration pairs themselves (0 for the fallback) */
    double precision_target;    /* search map with the precision rule: its target, else 0 */
    double precision, recall;   /* ... and at its point on the calibration photos' first results:
                                   the share of accepted ones that are right, and the share of
                                   right ones accepted (0 otherwise) */
    uint64_t tops;              /* calibration photos' first results the point was chosen on */
} sl_calib_map_info;

typedef struct sl_calib_info {
    sl_calib_source source;
    int cohort;
    uint64_t photos, products, seed;
    sl_calib_map_info map[2];   /* [SL_CALIB_PAIR], [SL_CALIB_RESULT] */
} sl_calib_info;

/* Fills *out (c NULL: the fallback, source SL_CALIB_NONE, counts 0). */
void sl_calib_get_info(const sl_calib *c, sl_calib_info *out);
/* Name of a source: "none", "photos", "catalog". */
const char *sl_calib_source_name(sl_calib_source s);

/* Serialized form (docs/formats/features.md, section CALB payload); *buf malloc'ed. */
sl_status sl_calib_serialize(const sl_calib *c, void **buf, size_t *len, sl_error *err);
/* Parses what sl_calib_serialize wrote: SL_E_CORRUPT naming the field, SL_E_VERSION. */
sl_status sl_calib_parse(const void *buf, size_t len, sl_calib **out, sl_error *err);

#ifdef __cplusplus
}
#endif
#endif
