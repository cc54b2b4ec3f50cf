/*
 * feature/sift/sift.c - SIFT keypoints and descriptors (D. G. Lowe, "Distinctive Image Features
 * from Scale-Invariant Keypoints", IJCV 60(2), 2004), dense SIFT and RootSIFT (R. Arandjelovic
 * and A. Zisserman, "Three things everyone should know to improve object retrieval", CVPR 2012).
 *
 * Pipeline on a grey float image in [0,1]:
 *  1. Gaussian scale space: per octave `levels + 3` images, each blurred incrementally from the
 *     previous one (separable kernels, radius ceil(4 sigma), replicated borders); the next octave
 *     starts from image `levels` of the previous one subsampled by 2 (every second pixel, so a
 *     pixel centre x of octave o sits at x * 2^o in the input). With `upsample`, octave -1 is
 *     the input doubled by bilinear interpolation (half-pixel aligned, as OpenCV; positions are
 *     corrected for the resulting 1/4-pixel shift).
 *  2. Difference of Gaussians; candidates are pixels whose |DoG| > 0.5 * contrast / levels and
 *     that are >= (or <=) their 26 neighbours, at least 5 pixels from the border.
 *  3. Sub-pixel / sub-scale refinement by fitting a quadratic (up to 5 Newton steps, Lowe s.4);
 *     rejected when |D(x^)| * levels < contrast_threshold or when the ratio of principal
 *     curvatures exceeds edge_threshold (tr^2 / det >= (r+1)^2 / r).
 *  4. Orientation (Lowe s.5): 36-bin histogram of gradient orientations weighted by magnitude
 *     and a Gaussian of 1.5 sigma in radius 4.5 sigma, smoothed [1 4 6 4 1]/16; every local
 *     peak >= 0.8 of the maximum gives a keypoint, its angle refined by a parabola.
 *  5. Descriptor (Lowe s.6): 4x4 cells of 3 sigma, 8 orientation bins, samples rotated into the
 *     keypoint frame and spread by trilinear interpolation, Gaussian window of half the
 *     descriptor width; L2-normalized, clipped at 0.2, renormalized.
 *
 * Conventions: image y points down; angles are atan2(dy, dx) in image coordinates, [0, 2pi).
 * Keypoints are returned sorted by decreasing response (ties broken by position), exact
 * duplicates removed, then cut to max_keypoints; the order is independent of `threads`.
 * Determinism: every value is computed by the same sequence of operations whatever the thread
 * split, so one build on one machine always returns the same keypoints and descriptors.
 * Inner loops live in sift_kernels.h (compiled per instruction set, chosen at run time).
 */
#include "shoplens/feature.h"
#include "feature/sift/sift_internal.h"
#include "util/util.h"

#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define SIFT_BORDER 5
#define SIFT_MAX_INTERP 5
#define SIFT_ORI_BINS 36
#define SIFT_ORI_SIG_FCTR 1.5f
#define SIFT_ORI_RADIUS (3.0f * SIFT_ORI_SIG_FCTR)
#define SIFT_ORI_PEAK 0.8f
#define SIFT_D 4
#define SIFT_N 8
#define SIFT_DESCR_SCL 3.0f
#define SIFT_DESCR_MAG_THR 0.2f
#define SIFT_TWO_PI 6.283185307179586f
#define SIFT_MAX_THREADS 16
#define SIFT_SCRATCH_ARRAYS 17 /* 8 sample arrays, 8 spread amounts, cell indices */
#define SIFT_PAR_MIN_PIXELS 40000 /* octaves smaller than this run on the calling thread */

/* ---- kernel selection ------------------------------------------------------------------- */

static const sl__sift_kernels *sl__sift_kern;
static const char *sl__sift_kern_name = "generic";
static pthread_once_t sl__sift_kern_once = PTHREAD_ONCE_INIT;

static void sl__sift_kern_init(void) {
    sl__sift_kern = &sl__sift_kernels_generic;
    sl__sift_kern_name = "generic";
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
    const char *force = getenv("SL_SIFT_KERNELS");
    __builtin_cpu_init();
    int has512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                 __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
    int has2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (force && strcmp(force, "generic") == 0) return;
    /* AVX-512 only where it pays: on AMD Zen 4 (512-bit ops split in two) the AVX2 table
     * measured faster (bench/results/sift.md), so AMD gets AVX2 unless forced. */
    int want512 = force ? strcmp(force, "avx512") == 0 : !__builtin_cpu_is("amd");
    if (has512 && want512 && !(force && strcmp(force, "avx2") == 0)) {
        sl__sift_kern = &sl__sift_kernels_avx512;
        sl__sift_kern_name = "avx512";
    } else if (has2) {
        sl__sift_kern = &sl__sift_kernels_avx2;
        sl__sift_kern_name = "avx2";
    }
#endif
}

const sl__sift_kernels *sl__sift_kernels_get(void) {
    pthread_once(&sl__sift_kern_once, sl__sift_kern_init);
    return sl__sift_kern;
}

const char *sl__sift_kernels_name(void) {
    pthread_once(&sl__sift_kern_once, sl__sift_kern_init);
    return sl__sift_kern_name;
}

/* ---- parameters ------------------------------------------------------------------------- */

void sl_sift_params_init(sl_sift_params *p) {
    if (!p) return;
    memset(p, 0, sizeof *p);
    p->max_keypoints = SL_SIFT_MAX_KEYPOINTS_DEFAULT;
    p->upright = 0;
    p->octaves = 0;
    p->levels = SL_SIFT_LEVELS_DEFAULT;
    p->sigma = SL_SIFT_SIGMA_DEFAULT;
    p->contrast_threshold = SL_SIFT_CONTRAST_DEFAULT;
    p->edge_threshold = SL_SIFT_EDGE_DEFAULT;
    p->upsample = SL_SIFT_UPSAMPLE_DEFAULT;
    p->threads = 1;
    p->input_sigma = SL_SIFT_INPUT_SIGMA_DEFAULT;
}

static sl_status sift_check_params(const sl_sift_params *p, sl_error *err) {
    if (p->max_keypoints < 0)
        return sl__err_set(err, SL_E_INVALID, "sift: max_keypoints %d < 0", p->max_keypoints);
    if (p->octaves < 0 || p->octaves > SL_SIFT_OCTAVES_MAX)
        return sl__err_set(err, SL_E_INVALID, "sift: octaves %d outside 0..%d", p->octaves,
                           SL_SIFT_OCTAVES_MAX);
    if (p->levels < SL_SIFT_LEVELS_MIN || p->levels > SL_SIFT_LEVELS_MAX)
        return sl__err_set(err, SL_E_INVALID, "sift: levels %d outside %d..%d", p->levels,
                           SL_SIFT_LEVELS_MIN, SL_SIFT_LEVELS_MAX);
    if (!(p->sigma >= SL_SIFT_SIGMA_MIN && p->sigma <= SL_SIFT_SIGMA_MAX))
        return sl__err_set(err, SL_E_INVALID, "sift: sigma %g outside %g..%g", (double)p->sigma,
                           (double)SL_SIFT_SIGMA_MIN, (double)SL_SIFT_SIGMA_MAX);
    if (!(p->contrast_threshold >= 0.0f && p->contrast_threshold <= 1.0f))
        return sl__err_set(err, SL_E_INVALID, "sift: contrast_threshold %g outside 0..1",
                           (double)p->contrast_threshold);
    if (!(p->edge_threshold >= 1.0f && p->edge_threshold <= SL_SIFT_EDGE_MAX))
        return sl__err_set(err, SL_E_INVALID, "sift: edge_threshold %g outside 1..%g",
                           (double)p->edge_threshold, (double)SL_SIFT_EDGE_MAX);
    if (p->threads < 0 || p->threads > SL_SIFT_THREADS_MAX)
        return sl__err_set(err, SL_E_INVALID, "sift: threads %d outside 0..%d", p->threads,
                           SL_SIFT_THREADS_MAX);
    if (!(p->input_sigma >= 0.0f && p->input_sigma < p->sigma))
        return sl__err_set(err, SL_E_INVALID, "sift: input_sigma %g outside [0, sigma)",
                           (double)p->input_sigma);
    return SL_OK;
}

/* ---- a tiny fork-join pool for the threads of one call ---------------------------------- */

typedef void (*sift_job_fn)(void *ctx, int tid, int nt);

typedef struct sift_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv_start, cv_done;
    unsigned gen;
    int pending, quit, nt, started;
    sift_job_fn fn;
    void *ctx;
    pthread_t th[SIFT_MAX_THREADS];
    struct sift_worker { struct sift_pool *pool; int tid; } wk[SIFT_MAX_THREADS];
} sift_pool;

static void *sift_worker_main(void *arg) {
    struct sift_worker *w = arg;
    sift_pool *p = w->pool;
    unsigned seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->gen == seen && !p->quit) pthread_cond_wait(&p->cv_start, &p->mu);
        if (p->quit) break;
        seen = p->gen;
        sift_job_fn fn = p->fn;
        void *ctx = p->ctx;
        int nt = p->nt;
        pthread_mutex_unlock(&p->mu);
        fn(ctx, w->tid, nt);
        pthread_mutex_lock(&p->mu);
        if (--p->pending == 0) pthread_cond_signal(&p->cv_done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Starts up to want-1 helper threads; on any failure runs with fewer (at least the caller). */
static void sift_pool_start(sift_pool *p, int want) {
    memset(p, 0, sizeof *p);
    p->nt = 1;
    if (want <= 1) return;
    if (want > SIFT_MAX_THREADS) want = SIFT_MAX_THREADS;
    if (pthread_mutex_init(&p->mu, NULL) != 0) return;
    if (pthread_cond_init(&p->cv_start, NULL) != 0) {
        pthread_mutex_destroy(&p->mu);
        return;
    }
    if (pthread_cond_init(&p->cv_done, NULL) != 0) {
        pthread_cond_destroy(&p->cv_start);
        pthread_mutex_destroy(&p->mu);
        return;
    }
    p->started = 1;
    pthread_mutex_lock(&p->mu);
    for (int i = 1; i < want; i++) {
        p->wk[i].pool = p;
        p->wk[i].tid = i;
        if (pthread_create(&p->th[i], NULL, sift_worker_main, &p->wk[i]) != 0) break;
        p->nt = i + 1;
    }
    pthread_mutex_unlock(&p->mu);
}

static void sift_pool_stop(sift_pool *p) {
    if (!p->started) return;
    pthread_mutex_lock(&p->mu);
    p->quit = 1;
    pthread_cond_broadcast(&p->cv_start);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->nt; i++) pthread_join(p->th[i], NULL);
    pthread_cond_destroy(&p->cv_done);
    pthread_cond_destroy(&p->cv_start);
    pthread_mutex_destroy(&p->mu);
}

/* Runs fn on every thread of the pool (or only the caller when parallel is 0). */
static void sift_pool_run(sift_pool *p, int parallel, sift_job_fn fn, void *ctx) {
    if (!parallel || p->nt <= 1) {
        fn(ctx, 0, 1);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->pending = p->nt - 1;
    p->gen++;
    pthread_cond_broadcast(&p->cv_start);
    pthread_mutex_unlock(&p->mu);
    fn(ctx, 0, p->nt);
    pthread_mutex_lock(&p->mu);
    while (p->pending > 0) pthread_cond_wait(&p->cv_done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

/* ---- per-thread scratch ----------------------------------------------------------------- */

typedef struct sift_scratch {
    float *buf;   /* SIFT_SCRATCH_ARRAYS arrays of cap floats (samples of one keypoint) */
    size_t cap;
    float *row;   /* blur row buffer */
    size_t row_cap;
    uint8_t *mask;  /* extremum candidates of one row */
    int failed;
} sift_scratch;

static float *sift_scratch_samples(sift_scratch *s, size_t n) {
    if (n > s->cap) {
        size_t cap = n + n / 2 + 64;
        float *b = sl__mallocarray(cap, SIFT_SCRATCH_ARRAYS * sizeof(float));
        if (!b) {
            s->failed = 1;
            return NULL;
        }
        free(s->buf);
        s->buf = b;
        s->cap = cap;
    }
    return s->buf;
}

static void sift_scratch_free(sift_scratch *s) {
    free(s->buf);
    free(s->row);
    free(s->mask);
}

/* ---- Gaussian kernels and blurs ---------------------------------------------------------- */

typedef struct sift_kernel1d {
    float k[64];
    int r;
} sift_kernel1d;

static void sift_make_kernel(float sigma, sift_kernel1d *kk) {
    int r = (int)ceilf(4.0f * sigma);
    if (r < 1) r = 1;
    if (r > 63) r = 63;
    double sum = 0.0, tmp[64];
    for (int i = 0; i <= r; i++) {
        tmp[i] = exp(-(double)i * i / (2.0 * (double)sigma * sigma));
        sum += i == 0 ? tmp[i] : 2.0 * tmp[i];
    }
    for (int i = 0; i <= r; i++) kk->k[i] = (float)(tmp[i] / sum);
    kk->r = r;
}

typedef struct sift_blur_job {
    const sl__sift_kernels *kern;
    const float *src;
    float *dst;
    int w, h;
    const sift_kernel1d *kk;
    sift_scratch *scr;
    float *dog; /* NULL, or where the DoG dst - src goes */
} sift_blur_job;

static void sift_blur_fn(void *ctx, int tid, int nt) {
    sift_blur_job *j = ctx;
    int y0 = (int)((long)j->h * tid / nt), y1 = (int)((long)j->h * (tid + 1) / nt);
    j->kern->blur_rows(j->src, j->dst, j->w, j->h, j->kk->k, j->kk->r, j->scr[tid].row, y0, y1,
                       j->dog);
}

/* ---- the scale space --------------------------------------------------------------------- */

typedef struct sift_octave {
    int w, h, o;     /* size; octave index (-1 when upsampled) */
    float *g;        /* levels + 3 planes of w*h (a cached block of gsize bytes) */
    size_t gsize;
} sift_octave;

typedef struct sift_ctx {
    const sl_sift_params *p;
    const sl__sift_kernels *kern;
    sift_pool pool;
    sift_scratch scr[SIFT_MAX_THREADS];
    sift_octave oct[SL_SIFT_OCTAVES_MAX + 1];
    int noct, nlev;  /* octaves; planes per octave (levels + 3) */
    float *dog;      /* levels + 2 planes of the largest octave (dogsize bytes) */
    size_t dogsize;
} sift_ctx;

static int sift_par(const sift_ctx *c, int w, int h) {
    return c->pool.nt > 1 && (long)w * h >= SIFT_PAR_MIN_PIXELS;
}

/* dst = src blurred by sigma; when dog is not NULL also dog = dst - src (the same values as
 * subtracting afterwards, computed while the rows are in cache). */
static void sift_blur(sift_ctx *c, const float *src, float *dst, int w, int h, float sigma,
                      float *dog) {
    sift_kernel1d kk;
    sift_make_kernel(sigma, &kk);
    sift_blur_job j = { c->kern, src, dst, w, h, &kk, c->scr, dog };
    sift_pool_run(&c->pool, sift_par(c, w, h), sift_blur_fn, &j);
}

/* ---- a bounded cache of scale-space blocks ------------------------------------------------
 * The scale space of a doubled 640x480 image is ~64 MB, above malloc's mmap threshold: every
 * call would map fresh pages and the kernel would fault and zero them (measured ~30% of the
 * time of upsampled SIFT). Freed blocks are kept here, at most SIFT_CACHE_BLOCKS blocks and
 * SL_SIFT_CACHE_MAX_BYTES in all, and handed to later calls (any thread) needing a block of
 * between half and all of a cached block's size. sl_sift_cache_release() frees them. */
#define SIFT_CACHE_BLOCKS 16
static pthread_mutex_t sl__sift_cache_mu = PTHREAD_MUTEX_INITIALIZER;
static struct { void *p; size_t size; } sl__sift_cache[SIFT_CACHE_BLOCKS];
static size_t sl__sift_cache_bytes;

/* A block of at least n floats (its real size in *size), or NULL. */
static float *sift_block_get(size_t n, size_t *size) {
    size_t bytes;
    if (sl__mul_size(n, sizeof(float), &bytes)) return NULL;
    pthread_mutex_lock(&sl__sift_cache_mu);
    int best = -1;
    for (int i = 0; i < SIFT_CACHE_BLOCKS; i++) {
        size_t sz = sl__sift_cache[i].size;
        if (sl__sift_cache[i].p && sz >= bytes && sz / 2 <= bytes &&
            (best < 0 || sz < sl__sift_cache[best].size))
            best = i;
    }
    void *p = NULL;
    if (best >= 0) {
        p = sl__sift_cache[best].p;
        bytes = sl__sift_cache[best].size;
        sl__sift_cache[best].p = NULL;
        sl__sift_cache[best].size = 0;
        sl__sift_cache_bytes -= bytes;
    }
    pthread_mutex_unlock(&sl__sift_cache_mu);
    if (!p) p = malloc(bytes ? bytes : 1);
    *size = bytes;
    return p;
}

/* Returns a block to the cache, or frees it when the cache is full. p NULL is a no-op. */
static void sift_block_put(float *p, size_t size) {
    if (!p) return;
    pthread_mutex_lock(&sl__sift_cache_mu);
    if (sl__sift_cache_bytes + size <= SL_SIFT_CACHE_MAX_BYTES) {
        for (int i = 0; i < SIFT_CACHE_BLOCKS; i++)
            if (!sl__sift_cache[i].p) {
                sl__sift_cache[i].p = p;
                sl__sift_cache[i].size = size;
                sl__sift_cache_bytes += size;
                p = NULL;
                break;
            }
    }
    pthread_mutex_unlock(&sl__sift_cache_mu);
    free(p);
}

void sl_sift_cache_release(void) {
    pthread_mutex_lock(&sl__sift_cache_mu);
    for (int i = 0; i < SIFT_CACHE_BLOCKS; i++) {
        free(sl__sift_cache[i].p);
        sl__sift_cache[i].p = NULL;
        sl__sift_cache[i].size = 0;
    }
    sl__sift_cache_bytes = 0;
    pthread_mutex_unlock(&sl__sift_cache_mu);
}

/* Allocates the pyramid (one cached block per octave) and the per-thread row buffers for a
 * base of bw x bh pixels. */
static sl_status sift_alloc(sift_ctx *c, int bw, int bh, int noct, sl_error *err) {
    size_t base = (size_t)bw * (size_t)bh, n;
    int w = bw, h = bh;
    for (int o = 0; o < noct; o++) {
        c->oct[o].w = w;
        c->oct[o].h = h;
        if (sl__mul_size((size_t)w * (size_t)h, (size_t)c->nlev, &n))
            return sl__err_set(err, SL_E_TOO_LARGE, "sift: image too large");
        c->oct[o].g = sift_block_get(n, &c->oct[o].gsize);
        if (!c->oct[o].g) return sl__err_set(err, SL_E_NOMEM, "sift: out of memory");
        w = w / 2;
        h = h / 2;
    }
    if (sl__mul_size(base, (size_t)(c->nlev - 1), &n))
        return sl__err_set(err, SL_E_TOO_LARGE, "sift: image too large");
    c->dog = sift_block_get(n, &c->dogsize);
    if (!c->dog) return sl__err_set(err, SL_E_NOMEM, "sift: out of memory");
    for (int t = 0; t < c->pool.nt; t++) {
        c->scr[t].row_cap = 2 * ((size_t)bw + 2 * 64) + 16; /* blur_rows: 2 (w + 2r) */
        c->scr[t].row = sl__mallocarray(c->scr[t].row_cap, sizeof(float));
        c->scr[t].mask = malloc((size_t)bw + 16);
        if (!c->scr[t].row || !c->scr[t].mask)
            return sl__err_set(err, SL_E_NOMEM, "sift: out of memory");
    }
    c->noct = noct;
    return SL_OK;
}

static float *sift_plane(const sift_octave *oc, int s) {
    return oc->g + (size_t)s * (size_t)oc->w * (size_t)oc->h;
}

/* sig[s], s = 1..nlev-1: the blur taking plane s-1 of an octave to plane s. */
static void sift_sigmas(const sift_ctx *c, float *sig) {
    const sl_sift_params *p = c->p;
    double k = pow(2.0, 1.0 / p->levels);
    sig[0] = p->sigma;
    for (int s = 1; s < c->nlev; s++) {
        double prev = pow(k, s - 1) * p->sigma, tot = prev * k;
        sig[s] = (float)sqrt(tot * tot - prev * prev);
    }
}

/* Builds the Gaussian planes of octave o and its DoG planes (c->dog, plane s - 1 = Gaussian
 * s minus Gaussian s - 1). Octave 0 starts from base (w x h, not inside plane 0), the
 * (possibly upsampled) input with blur `cur_sigma` (in octave-0 pixels), blurred into plane
 * 0; octave o > 0 from plane `levels` of octave o - 1, which must still be intact. */
static void sift_build_octave(sift_ctx *c, int o, const float *sig, const float *base,
                              float cur_sigma) {
    const sl_sift_params *p = c->p;
    sift_octave *oc = &c->oct[o];
    size_t plane = (size_t)oc->w * (size_t)oc->h;
    if (o == 0) {
        float d2 = p->sigma * p->sigma - cur_sigma * cur_sigma;
        float sd = sqrtf(d2 > 0.01f ? d2 : 0.01f);
        sift_blur(c, base, sift_plane(oc, 0), oc->w, oc->h, sd, NULL);
    } else {
        const sift_octave *pv = &c->oct[o - 1];
        const float *src = sift_plane(pv, p->levels);
        float *dst = sift_plane(oc, 0);
        for (int y = 0; y < oc->h; y++) {
            const float *sr = src + (size_t)(2 * y) * (size_t)pv->w;
            float *dr = dst + (size_t)y * (size_t)oc->w;
            for (int x = 0; x < oc->w; x++) dr[x] = sr[2 * x];
        }
    }
    for (int s = 1; s < c->nlev; s++)
        sift_blur(c, sift_plane(oc, s - 1), sift_plane(oc, s), oc->w, oc->h, sig[s],
                  c->dog + (size_t)(s - 1) * plane);
}

/* ---- detection ----------------------------------------------------------------------------- */

typedef struct sift_kp {
    sl_keypoint kp;
    float xo, yo, so;   /* position and sigma in octave pixels */
    int oi, layer;      /* octave slot, Gaussian plane used for orientation and descriptor */
} sift_kp;

typedef struct sift_kpvec {
    sift_kp *v;
    size_t n, cap;
} sift_kpvec;

static int sift_kpvec_push(sift_kpvec *kv, const sift_kp *k) {
    if (kv->n == kv->cap) {
        size_t cap = kv->cap ? kv->cap * 2 : 256;
        sift_kp *v = sl__reallocarray(kv->v, cap, sizeof *v);
        if (!v) return -1;
        kv->v = v;
        kv->cap = cap;
    }
    kv->v[kv->n++] = *k;
    return 0;
}

/* Quadratic refinement (Lowe s.4, as in Brown & Lowe 2002). On success fills the refined
 * position/scale offsets and the interpolated contrast; 0 when the point is rejected. */
static int sift_refine(const float *dog, int w, int h, int levels, float contrast, float edge,
                       int *ps, int *py, int *px, float *oxs, float *oys, float *oss,
                       float *contr) {
    int s = *ps, y = *py, x = *px, i;
    size_t plane = (size_t)w * (size_t)h;
    double xs = 0, xr = 0, xc = 0, dD[3] = { 0, 0, 0 }, dxx = 0, dyy = 0, dxy = 0;
    const float *img = NULL;
    for (i = 0; i < SIFT_MAX_INTERP; i++) {
        img = dog + (size_t)s * plane;
        const float *prv = img - plane, *nxt = img + plane;
        size_t o = (size_t)y * (size_t)w + (size_t)x;
        double v2 = 2.0 * img[o];
        dD[0] = (img[o + 1] - img[o - 1]) * 0.5;
        dD[1] = (img[o + w] - img[o - w]) * 0.5;
        dD[2] = (nxt[o] - prv[o]) * 0.5;
        dxx = img[o + 1] + img[o - 1] - v2;
        dyy = img[o + w] + img[o - w] - v2;
        double dss = nxt[o] + prv[o] - v2;
        dxy = (img[o + w + 1] - img[o + w - 1] - img[o - w + 1] + img[o - w - 1]) * 0.25;
        double dxs = (nxt[o + 1] - nxt[o - 1] - prv[o + 1] + prv[o - 1]) * 0.25;
        double dys = (nxt[o + w] - nxt[o - w] - prv[o + w] + prv[o - w]) * 0.25;
        /* solve H X = dD by the adjugate */
        double a = dxx, b = dxy, cc = dxs, d = dyy, e = dys, f = dss;
        double A = d * f - e * e, B = cc * e - b * f, C = b * e - cc * d;
        double det = a * A + b * B + cc * C;
        if (fabs(det) < 1e-30) return 0;
        double D = a * f - cc * cc, E = b * cc - a * e, F = a * d - b * b;
        double X0 = (A * dD[0] + B * dD[1] + C * dD[2]) / det;
        double X1 = (B * dD[0] + D * dD[1] + E * dD[2]) / det;
        double X2 = (C * dD[0] + E * dD[1] + F * dD[2]) / det;
        xc = -X0;
        xr = -X1;
        xs = -X2;
        if (fabs(xc) < 0.5 && fabs(xr) < 0.5 && fabs(xs) < 0.5) break;
        if (fabs(xc) > 1e4 || fabs(xr) > 1e4 || fabs(xs) > 1e4) return 0;
        x += (int)lround(xc);
        y += (int)lround(xr);
        s += (int)lround(xs);
        if (s < 1 || s > levels || x < SIFT_BORDER || x >= w - SIFT_BORDER || y < SIFT_BORDER ||
            y >= h - SIFT_BORDER)
            return 0;
    }
    if (i >= SIFT_MAX_INTERP) return 0;
    double t = dD[0] * xc + dD[1] * xr + dD[2] * xs;
    double cv = img[(size_t)y * (size_t)w + (size_t)x] + 0.5 * t;
    if (fabs(cv) * levels < contrast) return 0;
    double tr = dxx + dyy, det2 = dxx * dyy - dxy * dxy;
    if (det2 <= 0 || tr * tr * edge >= (edge + 1.0) * (edge + 1.0) * det2) return 0;
    *ps = s;
    *py = y;
    *px = x;
    *oxs = (float)xc;
    *oys = (float)xr;
    *oss = (float)xs;
    *contr = (float)fabs(cv);
    return 1;
}

/* Samples of one row of the orientation window: n pixels from r0 (stride w), their central
 * differences and window weights wy * ex[t]; a run without branches the compiler vectorizes. */
static void sift_ori_run(const float *restrict r0, int w, int n, float wy,
                         const float *restrict ex, float *restrict dx, float *restrict dy,
                         float *restrict wt) {
    const float *restrict up = r0 - w, *restrict dn = r0 + w;
    for (int t = 0; t < n; t++) {
        dx[t] = r0[t + 1] - r0[t - 1];
        dy[t] = dn[t] - up[t];
        wt[t] = wy * ex[t];
    }
}

/* Orientation histogram (Lowe s.5) around (px, py) of plane g; fills hist[36] (smoothed)
 * and returns its maximum, or -1 when out of memory. */
static float sift_ori_hist(const sl__sift_kernels *kern, sift_scratch *scr, const float *g,
                           int w, int h, int px, int py, float so, float *hist) {
    int R = (int)lroundf(SIFT_ORI_RADIUS * so);
    float sigw = SIFT_ORI_SIG_FCTR * so;
    float ex[2 * 64 + 1];
    if (R > 64) R = 64;
    for (int i = -R; i <= R; i++) ex[i + R] = expf(-(float)(i * i) / (2.0f * sigw * sigw));
    size_t cap = (size_t)(2 * R + 1) * (size_t)(2 * R + 1);
    float *buf = sift_scratch_samples(scr, cap);
    if (!buf) return -1.0f;
    float *dx = buf, *dy = buf + scr->cap, *wt = buf + 2 * scr->cap, *mag = buf + 3 * scr->cap,
          *ori = buf + 4 * scr->cap;
    int n = 0;
    int ya = py - R < 1 ? 1 : py - R, yb = py + R > h - 2 ? h - 2 : py + R;
    int xa = px - R < 1 ? 1 : px - R, xb = px + R > w - 2 ? w - 2 : px + R;
    for (int y = ya; y <= yb && xa <= xb; y++) {
        sift_ori_run(g + (size_t)y * (size_t)w + xa, w, xb - xa + 1, ex[y - py + R],
                     ex + xa - px + R, dx + n, dy + n, wt + n);
        n += xb - xa + 1;
    }
    kern->grad(dx, dy, mag, ori, n);
    float raw[SIFT_ORI_BINS + 4];
    memset(raw, 0, sizeof raw);
    const float scale = SIFT_ORI_BINS / SIFT_TWO_PI;
    for (int i = 0; i < n; i++) {
        int b = (int)(ori[i] * scale + 0.5f); /* ori >= 0: rounds to nearest */
        if (b >= SIFT_ORI_BINS) b -= SIFT_ORI_BINS;
        if (b < 0) b += SIFT_ORI_BINS;
        raw[b + 2] += wt[i] * mag[i];
    }
    raw[0] = raw[SIFT_ORI_BINS];
    raw[1] = raw[SIFT_ORI_BINS + 1];
    raw[SIFT_ORI_BINS + 2] = raw[2];
    raw[SIFT_ORI_BINS + 3] = raw[3];
    float mx = 0.0f;
    for (int i = 0; i < SIFT_ORI_BINS; i++) {
        float v = (raw[i] + raw[i + 4]) * (1.0f / 16.0f) + (raw[i + 1] + raw[i + 3]) * (4.0f / 16.0f) +
                  raw[i + 2] * (6.0f / 16.0f);
        hist[i] = v;
        if (v > mx) mx = v;
    }
    return mx;
}

/* Second stage of the extremum test: the centre rr[4][x] (already >= / <= its 8 neighbours in
 * its own layer) against the 18 neighbours in the layers below and above. */
static int sift_extremum_18(const float *const *rr, int x) {
    float v = rr[4][x];
    const int layers[2] = { 0, 6 };
    if (v > 0) {
        for (int l = 0; l < 2; l++)
            for (int q = 0; q < 3; q++) {
                const float *r = rr[layers[l] + q];
                if (v < r[x - 1] || v < r[x] || v < r[x + 1]) return 0;
            }
    } else {
        for (int l = 0; l < 2; l++)
            for (int q = 0; q < 3; q++) {
                const float *r = rr[layers[l] + q];
                if (v > r[x - 1] || v > r[x] || v > r[x + 1]) return 0;
            }
    }
    return 1;
}

typedef struct sift_detect_job {
    sift_ctx *c;
    int oi;
    sift_kpvec kv[SIFT_MAX_THREADS];
    int failed[SIFT_MAX_THREADS];
} sift_detect_job;

static void sift_detect_fn(void *ctx, int tid, int nt) {
    sift_detect_job *j = ctx;
    sift_ctx *c = j->c;
    const sl_sift_params *p = c->p;
    const sift_octave *oc = &c->oct[j->oi];
    int w = oc->w, h = oc->h, levels = p->levels;
    size_t plane = (size_t)w * (size_t)h;
    sift_scratch *scr = &c->scr[tid];
    float thr = 0.5f * p->contrast_threshold / (float)levels;
    int rows = h - 2 * SIFT_BORDER;
    if (rows <= 0 || w - 2 * SIFT_BORDER <= 0) return;
    int ya = SIFT_BORDER + (int)((long)rows * tid / nt);
    int yb = SIFT_BORDER + (int)((long)rows * (tid + 1) / nt);
    double pscale = ldexp(1.0, oc->o);
    double shift = p->upsample ? -0.25 : 0.0; /* upsampled pixel u sits at u/2 - 1/4 */
    for (int s = 1; s <= levels; s++) {
        const float *d0 = c->dog + (size_t)(s - 1) * plane;
        for (int y = ya; y < yb; y++) {
            const float *rr[9];
            for (int l = 0; l < 3; l++)
                for (int q = 0; q < 3; q++)
                    rr[l * 3 + q] = d0 + (size_t)l * plane + (size_t)(y - 1 + q) * (size_t)w;
            c->kern->extrema_row(rr, SIFT_BORDER, w - SIFT_BORDER, thr, scr->mask);
            for (int x = SIFT_BORDER; x < w - SIFT_BORDER; x++) {
                uint64_t word;
                if (x + 8 <= w - SIFT_BORDER) { /* skip 8 empty mask bytes at once */
                    memcpy(&word, scr->mask + x, sizeof word);
                    if (word == 0) {
                        x += 7;
                        continue;
                    }
                }
                if (!scr->mask[x] || !sift_extremum_18(rr, x)) continue;
                int ks = s, ky = y, kx = x;
                float ox, oy, os, contr;
                if (!sift_refine(c->dog, w, h, levels, p->contrast_threshold, p->edge_threshold,
                                 &ks, &ky, &kx, &ox, &oy, &os, &contr))
                    continue;
                sift_kp k;
                memset(&k, 0, sizeof k);
                k.xo = (float)kx + ox;
                k.yo = (float)ky + oy;
                k.so = p->sigma * (float)pow(2.0, ((double)ks + os) / levels);
                k.oi = j->oi;
                k.layer = ks;
                k.kp.x = (float)(k.xo * pscale + shift);
                k.kp.y = (float)(k.yo * pscale + shift);
                k.kp.scale = (float)(k.so * pscale);
                k.kp.response = contr;
                k.kp.octave = oc->o;
                if (p->upright) {
                    k.kp.angle = 0.0f;
                    if (sift_kpvec_push(&j->kv[tid], &k)) j->failed[tid] = 1;
                    continue;
                }
                float hist[SIFT_ORI_BINS];
                float mx = sift_ori_hist(c->kern, scr, sift_plane(oc, ks), w, h,
                                         (int)lroundf(k.xo), (int)lroundf(k.yo), k.so, hist);
                if (mx < 0) {
                    j->failed[tid] = 1;
                    return;
                }
                float pk = SIFT_ORI_PEAK * mx;
                for (int b = 0; b < SIFT_ORI_BINS; b++) {
                    float l = hist[b > 0 ? b - 1 : SIFT_ORI_BINS - 1];
                    float r = hist[b < SIFT_ORI_BINS - 1 ? b + 1 : 0];
                    float v = hist[b];
                    if (!(v > l && v > r && v >= pk)) continue;
                    float den = l - 2.0f * v + r;
                    float bin = (float)b + (den != 0.0f ? 0.5f * (l - r) / den : 0.0f);
                    if (bin < 0) bin += SIFT_ORI_BINS;
                    if (bin >= SIFT_ORI_BINS) bin -= SIFT_ORI_BINS;
                    float ang = bin * (SIFT_TWO_PI / SIFT_ORI_BINS);
                    if (ang >= SIFT_TWO_PI) ang -= SIFT_TWO_PI;
                    if (ang < 0) ang = 0;
                    k.kp.angle = ang;
                    if (sift_kpvec_push(&j->kv[tid], &k)) {
                        j->failed[tid] = 1;
                        return;
                    }
                }
            }
        }
    }
}

/* ---- descriptors ------------------------------------------------------------------------- */

/* Shrinks [*ja, *jb] towards the integers j with -1 < a + b j < hi (keeping a margin of one). */
static void sift_narrow(float a, float b, float hi, int *ja, int *jb) {
    if (fabsf(b) < 1e-12f) return;
    float t0 = (-1.0f - a) / b, t1 = (hi - a) / b;
    if (t0 > t1) {
        float t = t0;
        t0 = t1;
        t1 = t;
    }
    /* keep the conversions to int defined for nearly axis-parallel rows */
    t0 = t0 < -1e6f ? -1e6f : t0 > 1e6f ? 1e6f : t0;
    t1 = t1 < -1e6f ? -1e6f : t1 > 1e6f ? 1e6f : t1;
    if (t0 - 1.0f > (float)*ja) *ja = (int)floorf(t0) - 1;
    if (t1 + 1.0f < (float)*jb) *jb = (int)ceilf(t1) + 1;
}

/* floats in a padded descriptor histogram, (d+2) x (d+2) x (nb+2) */
#define SIFT_HN ((SIFT_D + 2) * (SIFT_D + 2) * (SIFT_N + 2))
static void sift_hist_finish(float *hist, float *out);
static void sift_hist_finish2(float *ha, float *oa, float *hb, float *ob);

/* The window test of descriptor sample jj of a row (bin coordinates inside (-1, d)). */
static inline int sift_in_window(int jj, float cos_t, float sin_t, float ri_c, float ri_r,
                                 float half, float d) {
    float c_rot = (float)jj * cos_t + ri_c;
    float r_rot = ri_r - (float)jj * sin_t;
    float rbin = r_rot + half, cbin = c_rot + half;
    return rbin > -1.0f && rbin < d && cbin > -1.0f && cbin < d;
}

/* Samples jj = ja..jb of one descriptor row (all inside the window): gradients from row r0
 * (stride w) at columns px + jj, bin coordinates and window weights (exr centred at 0). */
static void sift_sample_run(const float *restrict r0, int w, int px, int ja, int jb,
                            float cos_t, float sin_t, float ri_c, float ri_r, float half,
                            float wy, const float *restrict exr, float *restrict dx,
                            float *restrict dy, float *restrict rb, float *restrict cb,
                            float *restrict wt) {
    const float *restrict up = r0 - w, *restrict dn = r0 + w;
    int cnt = jb - ja + 1;
    r0 += px + ja;
    up += px + ja;
    dn += px + ja;
    exr += ja;
    for (int t = 0; t < cnt; t++) {
        float jj = (float)(ja + t);
        float c_rot = jj * cos_t + ri_c;
        float r_rot = ri_r - jj * sin_t;
        dx[t] = r0[t + 1] - r0[t - 1];
        dy[t] = dn[t] - up[t];
        rb[t] = r_rot + half;
        cb[t] = c_rot + half;
        wt[t] = wy * exr[t];
    }
}

/* Computes the descriptor histogram of a keypoint at (xo, yo) with sigma so and angle ang on
 * plane g (octave pixels) into hist2[0..SIFT_HN) (hist2 holds 2 SIFT_HN floats, the second
 * half is scratch); sift_hist_finish makes the descriptor of it. Returns 0, or -1 when out of
 * memory. */
static int sift_descriptor(const sl__sift_kernels *kern, sift_scratch *scr, const float *g,
                           int w, int h, float xo, float yo, float so, float ang,
                           float *hist2) {
    const int d = SIFT_D, nb = SIFT_N;
    int px = (int)lroundf(xo), py = (int)lroundf(yo);
    float hw = SIFT_DESCR_SCL * so;
    int R = (int)lroundf(hw * 1.41421356f * (d + 1) * 0.5f);
    float diag = sqrtf((float)w * w + (float)h * h);
    if ((float)R > diag) R = (int)diag;
    float cos_t = cosf(ang) / hw, sin_t = sinf(ang) / hw;
    /* samples come only from rows 1..h-2 and columns 1..w-2 of the window */
    long ny = (long)(py + R < h - 2 ? py + R : h - 2) - (py - R > 1 ? py - R : 1) + 1;
    long nx = (long)(px + R < w - 2 ? px + R : w - 2) - (px - R > 1 ? px - R : 1) + 1;
    size_t cap = ny > 0 && nx > 0 ? (size_t)ny * (size_t)nx : 0;
    if (cap < (size_t)(2 * R + 1)) cap = (size_t)(2 * R + 1); /* the ex table */
    float *buf = sift_scratch_samples(scr, cap);
    if (!buf) return -1;
    float *dx = buf, *dy = buf + scr->cap, *wt = buf + 2 * scr->cap, *rb = buf + 3 * scr->cap,
          *cb = buf + 4 * scr->cap, *gm = buf + 5 * scr->cap, *go = buf + 6 * scr->cap,
          *ex = buf + 7 * scr->cap;
    float es = -1.0f / (0.5f * d * d * hw * hw);
    for (int i = -R; i <= R; i++) ex[i + R] = expf((float)(i * i) * es);
    int n = 0;
    const float half = d / 2.0f - 0.5f;
    for (int i = -R; i <= R; i++) {
        int y = py + i;
        if (y <= 0 || y >= h - 1) continue;
        const float *r0 = g + (size_t)y * (size_t)w;
        float ri_c = (float)i * sin_t, ri_r = (float)i * cos_t, wy = ex[i + R];
        int ja = -R, jb = R;
        /* narrow [ja, jb] to where both bin coordinates can be inside (-1, d); the exact test
         * stays in the loop, the bounds only skip samples it would reject */
        sift_narrow(ri_r + half, -sin_t, (float)d, &ja, &jb);
        sift_narrow(ri_c + half, cos_t, (float)d, &ja, &jb);
        if (px + ja < 1) ja = 1 - px;
        if (px + jb > w - 2) jb = w - 2 - px;
        /* Each bin coordinate is a monotone function of jj (rounding is monotone), so the
         * samples inside the window form one run: trim the ends with the exact test, then
         * take the run without a branch (a loop the compiler vectorizes). Same operations on
         * the same values as testing every sample. */
        while (ja <= jb && !sift_in_window(ja, cos_t, sin_t, ri_c, ri_r, half, (float)d)) ja++;
        while (jb >= ja && !sift_in_window(jb, cos_t, sin_t, ri_c, ri_r, half, (float)d)) jb--;
        if (ja > jb) continue;
        sift_sample_run(r0, w, px, ja, jb, cos_t, sin_t, ri_c, ri_r, half, wy, ex + R,
                        dx + n, dy + n, rb + n, cb + n, wt + n);
        n += jb - ja + 1;
    }
    /* two interleaved histograms: neighbouring samples mostly hit the same cells, and
     * alternating between copies halves the chains of dependent read-modify-writes */
    enum { HN = SIFT_HN };
    memset(hist2, 0, 2 * HN * sizeof *hist2);
    kern->grad(dx, dy, gm, go, n);
    /* spread amounts: 4 pair arrays (2 cap floats each) after the 8 sample arrays, cell
     * indices after those */
    float *v01 = buf + 8 * scr->cap, *v23 = buf + 10 * scr->cap, *v45 = buf + 12 * scr->cap,
          *v67 = buf + 14 * scr->cap;
    int32_t *idx = (int32_t *)(void *)(buf + 16 * scr->cap);
    kern->desc_spread(rb, cb, go, gm, wt, ang, d, nb, n, idx, v01, v23, v45, v67);
    const int o1 = nb + 2, o2 = (d + 2) * (nb + 2), o3 = (d + 3) * (nb + 2);
    for (int k = 0; k < n; k++) {
        float *hist = hist2 + (k & 1) * HN + idx[k];
        hist[0] += v01[2 * k];
        hist[1] += v01[2 * k + 1];
        hist[o1] += v23[2 * k];
        hist[o1 + 1] += v23[2 * k + 1];
        hist[o2] += v45[2 * k];
        hist[o2 + 1] += v45[2 * k + 1];
        hist[o3] += v67[2 * k];
        hist[o3 + 1] += v67[2 * k + 1];
    }
    for (int i = 0; i < HN; i++) hist2[i] += hist2[HN + i];
    return 0;
}

/* The 128-d descriptors from n (1 or 2) padded (d+2) x (d+2) x (nb+2) histograms (Lowe
 * s.6.1): the orientation wrap folded in, L2-normalized, clipped at 0.2, renormalized. The two
 * norms are sums of 128 dependent additions; doing two descriptors in one loop runs their
 * chains side by side (each still summed in order). */
static inline void sift_hist_finish_n(float *const *hist, float *const *out, int n) {
    const int d = SIFT_D, nb = SIFT_N;
    for (int q = 0; q < n; q++)
        for (int i = 0; i < d; i++)
            for (int jj = 0; jj < d; jj++) {
                float *h = hist[q];
                int cell = ((i + 1) * (d + 2) + (jj + 1)) * (nb + 2);
                h[cell] += h[cell + nb];
                h[cell + 1] += h[cell + nb + 1];
                for (int k = 0; k < nb; k++) out[q][(i * d + jj) * nb + k] = h[cell + k];
            }
    float nrm[2] = { 0.0f, 0.0f }, thr[2];
    for (int k = 0; k < SL_SIFT_DESC_DIM; k++)
        for (int q = 0; q < n; q++) nrm[q] += out[q][k] * out[q][k];
    for (int q = 0; q < n; q++) {
        thr[q] = sqrtf(nrm[q]) * SIFT_DESCR_MAG_THR;
        nrm[q] = 0.0f;
    }
    for (int k = 0; k < SL_SIFT_DESC_DIM; k++)
        for (int q = 0; q < n; q++) {
            float c = out[q][k] > thr[q] ? thr[q] : out[q][k];
            out[q][k] = c;
            nrm[q] += c * c;
        }
    for (int q = 0; q < n; q++) {
        float sc = nrm[q] > 0.0f ? 1.0f / sqrtf(nrm[q]) : 0.0f;
        for (int k = 0; k < SL_SIFT_DESC_DIM; k++) out[q][k] *= sc;
    }
}

static void sift_hist_finish(float *hist, float *out) {
    sift_hist_finish_n(&hist, &out, 1);
}

/* Two descriptors at once (oa and ob distinct). */
static void sift_hist_finish2(float *ha, float *oa, float *hb, float *ob) {
    float *hist[2] = { ha, hb }, *out[2] = { oa, ob };
    sift_hist_finish_n(hist, out, 2);
}

/* Finishes descriptors in pairs: fill sift_pair_slot(p), then sift_pair_push(p, out) (out
 * is written once a second histogram arrives, or by sift_pair_flush). */
typedef struct sift_pair {
    float h[2][2 * SIFT_HN]; /* 2 SIFT_HN: room for sift_descriptor's scratch half */
    float *pend;             /* output of h[0] while it waits for a partner, or NULL */
} sift_pair;

static float *sift_pair_slot(sift_pair *p) {
    return p->h[p->pend ? 1 : 0];
}

static void sift_pair_push(sift_pair *p, float *out) {
    if (p->pend) {
        sift_hist_finish2(p->h[0], p->pend, p->h[1], out);
        p->pend = NULL;
    } else {
        p->pend = out;
    }
}

static void sift_pair_flush(sift_pair *p) {
    if (p->pend) sift_hist_finish(p->h[0], p->pend);
    p->pend = NULL;
}

typedef struct sift_desc_job {
    sift_ctx *c;
    const sift_kp *kps;
    const size_t *order; /* keypoints in plane/row order, so windows reuse the cache */
    size_t n;
    float *desc;
    int failed[SIFT_MAX_THREADS];
} sift_desc_job;

static void sift_desc_fn(void *ctx, int tid, int nt) {
    sift_desc_job *j = ctx;
    size_t a = j->n * (size_t)tid / (size_t)nt, b = j->n * (size_t)(tid + 1) / (size_t)nt;
    sift_pair fp;
    fp.pend = NULL;
    for (size_t q = a; q < b; q++) {
        size_t i = j->order[q];
        const sift_kp *k = &j->kps[i];
        const sift_octave *oc = &j->c->oct[k->oi];
        if (sift_descriptor(j->c->kern, &j->c->scr[tid], sift_plane(oc, k->layer), oc->w, oc->h,
                            k->xo, k->yo, k->so, k->kp.angle, sift_pair_slot(&fp))) {
            j->failed[tid] = 1;
            return;
        }
        sift_pair_push(&fp, j->desc + i * SL_SIFT_DESC_DIM);
    }
    sift_pair_flush(&fp);
}

/* Memory order for descriptor computation: octave, plane, row, column (then index). */
typedef struct sift_memkey {
    int oi, layer;
    float yo, xo;
    size_t idx;
} sift_memkey;

static int sift_mem_cmp(const void *pa, const void *pb) {
    const sift_memkey *a = pa, *b = pb;
    if (a->oi != b->oi) return a->oi < b->oi ? -1 : 1;
    if (a->layer != b->layer) return a->layer < b->layer ? -1 : 1;
    if (a->yo != b->yo) return a->yo < b->yo ? -1 : 1;
    if (a->xo != b->xo) return a->xo < b->xo ? -1 : 1;
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

/* order[q] = index of the q-th keypoint in memory order; NULL when out of memory. */
static size_t *sift_mem_order(const sift_kp *k, size_t n) {
    sift_memkey *mk = sl__mallocarray(n, sizeof *mk);
    size_t *order = sl__mallocarray(n, sizeof *order);
    if (!mk || !order) {
        free(mk);
        free(order);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        mk[i].oi = k[i].oi;
        mk[i].layer = k[i].layer;
        mk[i].yo = k[i].yo;
        mk[i].xo = k[i].xo;
        mk[i].idx = i;
    }
    qsort(mk, n, sizeof *mk, sift_mem_cmp);
    for (size_t i = 0; i < n; i++) order[i] = mk[i].idx;
    free(mk);
    return order;
}

/* Total order: response descending, then octave, plane, position, angle, scale. */
static int sift_kp_cmp(const void *pa, const void *pb) {
    const sift_kp *a = pa, *b = pb;
#define SIFT_CMP(x, y) if ((x) != (y)) return (x) < (y) ? -1 : 1
    SIFT_CMP(b->kp.response, a->kp.response);
    SIFT_CMP(a->kp.octave, b->kp.octave);
    SIFT_CMP(a->layer, b->layer);
    SIFT_CMP(a->yo, b->yo);
    SIFT_CMP(a->xo, b->xo);
    SIFT_CMP(a->kp.angle, b->kp.angle);
    SIFT_CMP(a->so, b->so);
#undef SIFT_CMP
    return 0;
}

static void sift_ctx_free(sift_ctx *c) {
    sift_pool_stop(&c->pool);
    for (int t = 0; t < SIFT_MAX_THREADS; t++) sift_scratch_free(&c->scr[t]);
    for (int o = 0; o < SL_SIFT_OCTAVES_MAX + 1; o++) sift_block_put(c->oct[o].g, c->oct[o].gsize);
    sift_block_put(c->dog, c->dogsize);
}

/* Copies a strided grey image into dst (w x h contiguous), doubled when up is nonzero (then
 * tmp, 2w x h floats, is scratch). */
static void sift_load_base(const float *grey, int w, int h, size_t stride, int up, float *dst,
                           float *tmp) {
    if (!up) {
        for (int y = 0; y < h; y++)
            memcpy(dst + (size_t)y * (size_t)w, grey + (size_t)y * stride,
                   (size_t)w * sizeof(float));
        return;
    }
    /* bilinear with half-pixel alignment: up[2x] = .75 in[x] + .25 in[x-1],
     * up[2x+1] = .75 in[x] + .25 in[x+1] (borders replicated); up pixel u sits at u/2 - 0.25.
     * Horizontal pass into tmp (h rows of 2w), vertical pass into dst. */
    size_t W = 2 * (size_t)w;
    for (int y = 0; y < h; y++) {
        const float *s = grey + (size_t)y * stride;
        float *d = tmp + (size_t)y * W;
        for (int x = 0; x < w; x++) {
            float l = x > 0 ? s[x - 1] : s[x], r = x + 1 < w ? s[x + 1] : s[x];
            d[2 * x] = 0.75f * s[x] + 0.25f * l;
            d[2 * x + 1] = 0.75f * s[x] + 0.25f * r;
        }
    }
    for (int y = 0; y < h; y++) {
        const float *c = tmp + (size_t)y * W;
        const float *u = y > 0 ? c - W : c, *dn = y + 1 < h ? c + W : c;
        float *o0 = dst + (size_t)(2 * y) * W, *o1 = o0 + W;
        for (size_t x = 0; x < W; x++) o0[x] = 0.75f * c[x] + 0.25f * u[x];
        for (size_t x = 0; x < W; x++) o1[x] = 0.75f * c[x] + 0.25f * dn[x];
    }
}

static sl_status sift_check_image(const float *grey, int width, int height, size_t stride,
                                  sl_keypoint **kps, float **desc, size_t *n, sl_error *err) {
    if (!kps || !desc || !n) return sl__err_set(err, SL_E_INVALID, "sift: NULL output argument");
    *kps = NULL;
    *desc = NULL;
    *n = 0;
    if (!grey) return sl__err_set(err, SL_E_INVALID, "sift: NULL image");
    if (width < 1 || height < 1 || width > SL_SIFT_SIDE_MAX || height > SL_SIFT_SIDE_MAX)
        return sl__err_set(err, SL_E_INVALID, "sift: image size %dx%d outside 1..%d", width,
                           height, SL_SIFT_SIDE_MAX);
    if (stride < (size_t)width)
        return sl__err_set(err, SL_E_INVALID, "sift: stride %zu < width %d", stride, width);
    return SL_OK;
}

/* Hands the first n keypoints of ks (and their descriptors) to the caller. */
static sl_status sift_output(const sift_kp *ks, size_t n, float *dsc, sl_keypoint **kps,
                             float **desc, size_t *nout, sl_error *err) {
    if (n == 0) {
        free(dsc);
        return SL_OK;
    }
    sl_keypoint *out = sl__mallocarray(n, sizeof *out);
    if (!out) {
        free(dsc);
        return sl__err_set(err, SL_E_NOMEM, "sift: out of memory");
    }
    for (size_t i = 0; i < n; i++) out[i] = ks[i].kp;
    *kps = out;
    *desc = dsc;
    *nout = n;
    return SL_OK;
}

sl_status sl_sift_extract_grey(const float *grey, int width, int height, size_t stride,
                               const sl_sift_params *params, sl_keypoint **kps, float **desc,
                               size_t *n, sl_error *err) {
    sl_status st = sift_check_image(grey, width, height, stride, kps, desc, n, err);
    if (st) return st;
    sl_sift_params defp;
    if (!params) {
        sl_sift_params_init(&defp);
        params = &defp;
    }
    if ((st = sift_check_params(params, err))) return st;
    int up = params->upsample != 0;
    int bw = up ? 2 * width : width, bh = up ? 2 * height : height;
    int mn = bw < bh ? bw : bh, noct = 0;
    while ((mn >> (noct + 3)) > 0) noct++; /* floor(log2(mn)) - 2 */
    if (params->octaves > 0 && params->octaves < noct) noct = params->octaves;
    if (noct > SL_SIFT_OCTAVES_MAX) noct = SL_SIFT_OCTAVES_MAX;
    if (noct < 1) return SL_OK;

    sift_ctx *c = calloc(1, sizeof *c);
    if (!c) return sl__err_set(err, SL_E_NOMEM, "sift: out of memory");
    c->p = params;
    c->kern = sl__sift_kernels_get();
    c->nlev = params->levels + 3;
    sift_pool_start(&c->pool, params->threads);
    sift_kpvec all = { NULL, 0, 0 };
    float *dsc = NULL;
    if ((st = sift_alloc(c, bw, bh, noct, err))) goto done;
    for (int o = 0; o < noct; o++) c->oct[o].o = o - up;
    /* octave 0's plane 0 is the input blurred: straight from grey when it is contiguous,
     * else from a copy (upsampled or not) in plane 1 (plane 2 as scratch) */
    const float *base = grey;
    if (up || stride != (size_t)width) {
        sift_load_base(grey, width, height, stride, up, sift_plane(&c->oct[0], 1),
                       sift_plane(&c->oct[0], 2));
        base = sift_plane(&c->oct[0], 1);
    }
    float sig[SL_SIFT_LEVELS_MAX + 3];
    sift_sigmas(c, sig);

    for (int o = 0; o < noct; o++) {
        sift_detect_job *j = calloc(1, sizeof *j);
        if (!j) {
            st = sl__err_set(err, SL_E_NOMEM, "sift: out of memory");
            goto done;
        }
        j->c = c;
        j->oi = o;
        int par = sift_par(c, c->oct[o].w, c->oct[o].h);
        /* octave o's DoG shares c->dog with the others: detect before building the next */
        sift_build_octave(c, o, sig, base, params->input_sigma * (up ? 2.0f : 1.0f));
        sift_pool_run(&c->pool, par, sift_detect_fn, j);
        int failed = 0;
        for (int t = 0; t < SIFT_MAX_THREADS; t++) {
            failed |= j->failed[t] | c->scr[t].failed;
            for (size_t i = 0; i < j->kv[t].n && !failed; i++)
                if (sift_kpvec_push(&all, &j->kv[t].v[i])) failed = 1;
            free(j->kv[t].v);
        }
        free(j);
        if (failed) {
            st = sl__err_set(err, SL_E_NOMEM, "sift: out of memory");
            goto done;
        }
    }
    if (all.n > 1) qsort(all.v, all.n, sizeof *all.v, sift_kp_cmp);
    size_t m = 0;
    for (size_t i = 0; i < all.n; i++) {
        if (m > 0 && sift_kp_cmp(&all.v[m - 1], &all.v[i]) == 0) continue;
        all.v[m++] = all.v[i];
    }
    if (params->max_keypoints > 0 && m > (size_t)params->max_keypoints)
        m = (size_t)params->max_keypoints;
    if (m > 0) {
        dsc = sl__mallocarray(m, SL_SIFT_DESC_DIM * sizeof(float));
        if (!dsc) {
            st = sl__err_set(err, SL_E_NOMEM, "sift: out of memory");
            goto done;
        }
        size_t *order = sift_mem_order(all.v, m);
        if (!order) {
            st = sl__err_set(err, SL_E_NOMEM, "sift: out of memory");
            goto done;
        }
        sift_desc_job dj;
        memset(&dj, 0, sizeof dj);
        dj.c = c;
        dj.kps = all.v;
        dj.order = order;
        dj.n = m;
        dj.desc = dsc;
        sift_pool_run(&c->pool, m >= 64, sift_desc_fn, &dj);
        free(order);
        for (int t = 0; t < SIFT_MAX_THREADS; t++)
            if (dj.failed[t]) st = sl__err_set(err, SL_E_NOMEM, "sift: out of memory");
        if (st) goto done;
    }
    st = sift_output(all.v, m, dsc, kps, desc, n, err);
    dsc = NULL;
done:
    free(dsc);
    free(all.v);
    sift_ctx_free(c);
    free(c);
    return st;
}

/* ---- dense SIFT ------------------------------------------------------------------------- */

/* Dense descriptors are upright (angle 0) and share one scale, which makes the histogram of
 * sift_descriptor separable: a sample's row bin depends only on its row offset, its column
 * bin only on its column offset, its orientation bin only on its pixel, and the Gaussian
 * window is a row weight times a column weight. So each pixel's gradient is split over its
 * two orientation bins once per plane (8 amounts per pixel, the wrap folded in), the offset
 * tables are computed once per call, and a descriptor sums each of its rows over (column
 * cell, orientation) (kernel dense_row) before spreading the row sum over its two row cells.
 * A row sum depends only on the image row and the centre column, so descriptors are taken
 * column by column and each row sum is computed once per column and reused (the same values
 * as recomputing it for every descriptor).
 * The samples, bins and weights are those of sift_descriptor with angle 0 (with sin = 0 its
 * window test keeps a rectangle of rows x columns); only the association of the products and
 * sums differs, so the values agree to float rounding. */
typedef struct sift_dense_tab {
    int lo, hi;        /* offsets t in [lo, hi] have their bin inside (-1, d) */
    int32_t *cell;     /* (lower bin + 1) per offset, indexed t + R */
    float *w0, *w1;    /* window weight x (1 - frac) and x frac per offset */
} sift_dense_tab;

typedef struct sift_dense_ord {
    int px;   /* centre column (octave pixels) */
    size_t k; /* descriptor index */
} sift_dense_ord;

static int sift_dense_ord_cmp(const void *pa, const void *pb) {
    const sift_dense_ord *a = pa, *b = pb;
    if (a->px != b->px) return a->px < b->px ? -1 : 1;
    return a->k < b->k ? -1 : a->k > b->k;
}

static int sift_dense_descriptors(const sl__sift_kernels *kern, const float *g, int w, int h,
                                  const sift_kp *ks, size_t nk, float so, float *dsc) {
    const int d = SIFT_D, nb = SIFT_N;
    enum { RW = (SIFT_D + 2) * (SIFT_N + 2), HN = (SIFT_D + 2) * RW, SW = (SIFT_D + 2) * 8 };
    _Static_assert(SIFT_N == 8, "dense_row sums 8 orientations per cell");
    size_t plane = (size_t)w * (size_t)h;
    float hw = SIFT_DESCR_SCL * so;
    int R = (int)lroundf(hw * 1.41421356f * (d + 1) * 0.5f);
    float diag = sqrtf((float)w * w + (float)h * h);
    if ((float)R > diag) R = (int)diag;
    float cos_t = cosf(0.0f) / hw, es = -1.0f / (0.5f * d * d * hw * hw);
    const float half = d / 2.0f - 0.5f, bpr = (float)nb / SIFT_TWO_PI;
    size_t nt = 2 * (size_t)R + 1, rowlen = w > 2 ? (size_t)w - 2 : 1;
    /* only rows and columns 1..size-2 are written and read */
    float *pv = sl__mallocarray(plane, 8 * sizeof *pv);
    float *tmp = sl__mallocarray(rowlen, 4 * sizeof *tmp);
    float *rows = sl__mallocarray((size_t)h, SW * sizeof *rows); /* row sums of one column */
    int *rowpx = sl__mallocarray((size_t)h, sizeof *rowpx); /* column each row sum is for */
    sift_dense_ord *ord = sl__mallocarray(nk, sizeof *ord);
    sift_dense_tab tb = { 0, -1, sl__mallocarray(nt, sizeof(int32_t)),
                          sl__mallocarray(nt, sizeof(float)), sl__mallocarray(nt, sizeof(float)) };
    int rc = -1;
    if (!pv || !tmp || !rows || !rowpx || !ord || !tb.cell || !tb.w0 || !tb.w1) goto out;
    /* per pixel (rows and columns 1..size-2): gradient magnitude split over orientation bins
     * o0 and o0 + 1 (mod nb) */
    for (int y = 1; y < h - 1 && w > 2; y++) {
        const float *r0 = g + (size_t)y * (size_t)w;
        float *dx = tmp, *dy = tmp + rowlen, *gm = tmp + 2 * rowlen, *go = tmp + 3 * rowlen;
        for (int x = 1; x < w - 1; x++) {
            dx[x - 1] = r0[x + 1] - r0[x - 1];
            dy[x - 1] = r0[x + w] - r0[x - w];
        }
        kern->grad(dx, dy, gm, go, w - 2);
        for (int x = 1; x < w - 1; x++) {
            float obin = go[x - 1] * bpr;
            int o0 = (int)(obin + (float)nb) - nb;
            obin -= (float)o0;
            o0 = o0 < 0 ? o0 + nb : o0;
            o0 = o0 >= nb ? o0 - nb : o0;
            float m1 = gm[x - 1] * obin;
            float *v = pv + ((size_t)y * (size_t)w + (size_t)x) * 8;
            for (int o = 0; o < 8; o++) v[o] = 0.0f;
            v[o0] = gm[x - 1] - m1;
            v[(o0 + 1) % nb] += m1;
        }
    }
    /* per offset: bin cell and the two weights (same expressions as sift_descriptor) */
    tb.lo = R + 1;
    for (int t = -R; t <= R; t++) {
        float bin = (float)t * cos_t + half;
        if (!(bin > -1.0f && bin < (float)d)) continue;
        if (tb.lo > t) tb.lo = t;
        tb.hi = t;
        int b0 = (int)(bin + 1.0f) - 1;
        b0 = b0 > d - 1 ? d - 1 : b0;
        float fr = bin - (float)b0, ex = expf((float)(t * t) * es);
        tb.cell[t + R] = b0 + 1;
        tb.w1[t + R] = ex * fr;
        tb.w0[t + R] = ex - tb.w1[t + R];
    }
    /* descriptors in order of their centre column (then index): a row sum depends only on
     * the image row and the centre column, so the descriptors of one column share them */
    for (size_t k = 0; k < nk; k++) {
        ord[k].px = (int)lroundf(ks[k].xo);
        ord[k].k = k;
    }
    qsort(ord, nk, sizeof *ord, sift_dense_ord_cmp);
    for (int y = 0; y < h; y++) rowpx[y] = INT_MIN;
    sift_pair fp;
    fp.pend = NULL;
    _Static_assert(HN == SIFT_HN, "dense and oriented histograms have one layout");
    for (size_t q = 0; q < nk; q++) {
        size_t k = ord[q].k;
        int px = ord[q].px, py = (int)lroundf(ks[k].yo);
        float *hist = sift_pair_slot(&fp);
        memset(hist, 0, HN * sizeof *hist);
        int ia = tb.lo > 1 - py ? tb.lo : 1 - py, ib = tb.hi < h - 2 - py ? tb.hi : h - 2 - py;
        int ja = tb.lo > 1 - px ? tb.lo : 1 - px, jb = tb.hi < w - 2 - px ? tb.hi : w - 2 - px;
        for (int i = ia; i <= ib && ja <= jb; i++) {
            float *S = rows + (size_t)(py + i) * SW;
            if (rowpx[py + i] != px) { /* row py + i not yet summed for this column */
                size_t row = (size_t)(py + i) * (size_t)w + (size_t)(px + ja);
                memset(S, 0, SW * sizeof *S);
                kern->dense_row(pv + row * 8, tb.cell + ja + R, tb.w0 + ja + R, tb.w1 + ja + R,
                                jb - ja + 1, S);
                rowpx[py + i] = px;
            }
            float r0w = tb.w0[i + R], r1w = tb.w1[i + R];
            float *hr = hist + (size_t)tb.cell[i + R] * RW;
            for (int c = 0; c < d + 2; c++)
                for (int o = 0; o < 8; o++) {
                    float v = S[c * 8 + o];
                    hr[c * (nb + 2) + o] += r0w * v;
                    hr[RW + c * (nb + 2) + o] += r1w * v;
                }
        }
        sift_pair_push(&fp, dsc + k * SL_SIFT_DESC_DIM);
    }
    sift_pair_flush(&fp);
    rc = 0;
out:
    free(pv);
    free(tmp);
    free(rows);
    free(rowpx);
    free(ord);
    free(tb.cell);
    free(tb.w0);
    free(tb.w1);
    return rc;
}

sl_status sl_sift_dense_grey(const float *grey, int width, int height, size_t stride, int step,
                             float size, sl_keypoint **kps, float **desc, size_t *n,
                             sl_error *err) {
    sl_status st = sift_check_image(grey, width, height, stride, kps, desc, n, err);
    if (st) return st;
    if (step < 1) return sl__err_set(err, SL_E_INVALID, "sift dense: step %d < 1", step);
    if (!(size >= SL_SIFT_DENSE_SIZE_MIN && size <= SL_SIFT_DENSE_SIZE_MAX))
        return sl__err_set(err, SL_E_INVALID, "sift dense: size %g outside %g..%g",
                           (double)size, (double)SL_SIFT_DENSE_SIZE_MIN,
                           (double)SL_SIFT_DENSE_SIZE_MAX);
    size_t gx = ((size_t)width - (size_t)step / 2 + (size_t)step - 1) / (size_t)step;
    size_t gy = ((size_t)height - (size_t)step / 2 + (size_t)step - 1) / (size_t)step;
    if ((size_t)step / 2 >= (size_t)width || (size_t)step / 2 >= (size_t)height) return SL_OK;
    size_t count, plane = (size_t)width * (size_t)height;
    if (sl__mul_size(gx, gy, &count)) return sl__err_set(err, SL_E_TOO_LARGE, "sift dense: grid");

    sift_ctx *c = calloc(1, sizeof *c);
    sift_kp *ks = NULL;
    float *dsc = NULL, *a = NULL, *b = NULL;
    if (!c) return sl__err_set(err, SL_E_NOMEM, "sift dense: out of memory");
    c->kern = sl__sift_kernels_get();
    sift_pool_start(&c->pool, 1);
    c->scr[0].row = sl__mallocarray(2 * ((size_t)width + 2 * 64) + 16, sizeof(float));
    a = sl__mallocarray(plane, sizeof(float));
    b = sl__mallocarray(plane, sizeof(float));
    ks = sl__mallocarray(count, sizeof *ks);
    dsc = sl__mallocarray(count, SL_SIFT_DESC_DIM * sizeof(float));
    if (!c->scr[0].row || !a || !b || !ks || !dsc) {
        st = sl__err_set(err, SL_E_NOMEM, "sift dense: out of memory");
        goto done;
    }
    /* img: the current image (grey itself while that is contiguous, else a) */
    const float *img = grey;
    if (stride != (size_t)width) {
        sift_load_base(grey, width, height, stride, 0, a, NULL);
        img = a;
    }
    /* Halve the image while the target blur allows it (blur to 1.6 px, keep every 2nd pixel),
     * then blur to `size` in the pixels of that octave. Only the even rows of the blur before
     * a halving are kept, so only they are computed. */
    const float base = SL_SIFT_SIGMA_DEFAULT;
    float cur = SL_SIFT_INPUT_SIGMA_DEFAULT;
    int w = width, h = height, o = 0;
    while (size / (float)(1 << (o + 1)) >= base && w / 2 >= 16 && h / 2 >= 16) {
        sift_kernel1d kk;
        sift_make_kernel(sqrtf(base * base - cur * cur), &kk);
        int w2 = w / 2, h2 = h / 2;
        for (int y = 0; y < h2; y++)
            c->kern->blur_rows(img, b, w, h, kk.k, kk.r, c->scr[0].row, 2 * y, 2 * y + 1, NULL);
        for (int y = 0; y < h2; y++)
            for (int x = 0; x < w2; x++)
                a[(size_t)y * (size_t)w2 + (size_t)x] = b[(size_t)(2 * y) * (size_t)w + (size_t)(2 * x)];
        img = a;
        w = w2;
        h = h2;
        cur = base / 2.0f;
        o++;
    }
    float so = size / (float)(1 << o);
    if (so > cur) {
        sift_blur(c, img, b, w, h, sqrtf(so * so - cur * cur), NULL);
        float *t = a;
        a = b;
        b = t;
    } else if (img != a) {
        sift_load_base(grey, width, height, stride, 0, a, NULL);
    }
    size_t k = 0;
    for (int y = step / 2; y < height; y += step)
        for (int x = step / 2; x < width; x += step) {
            sift_kp *q = &ks[k];
            memset(q, 0, sizeof *q);
            q->xo = (float)x / (float)(1 << o);
            q->yo = (float)y / (float)(1 << o);
            q->so = so;
            q->kp.x = (float)x;
            q->kp.y = (float)y;
            q->kp.scale = size;
            q->kp.octave = o;
            k++;
        }
    if (k > 0 && sift_dense_descriptors(c->kern, a, w, h, ks, k, so, dsc)) {
        st = sl__err_set(err, SL_E_NOMEM, "sift dense: out of memory");
        goto done;
    }
    st = sift_output(ks, k, dsc, kps, desc, n, err);
    dsc = NULL;
done:
    free(dsc);
    free(ks);
    free(a);
    free(b);
    sift_ctx_free(c);
    free(c);
    return st;
}

/* ---- RootSIFT ------------------------------------------------------------------------------ */

/* Each descriptor's L1 norm is a chain of dim dependent additions (summed in order; the result's
 * bits depend on it): four descriptors' chains run side by side, each still in order. */
static void rootsift_apply(float *v, size_t dim, float l1) {
    if (!(l1 > 0.0f)) return;
    float inv = 1.0f / l1;
    for (size_t k = 0; k < dim; k++) {
        float s = sqrtf(fabsf(v[k]) * inv);
        v[k] = v[k] < 0.0f ? -s : s;
    }
}

void sl_rootsift(float *desc, size_t n, size_t dim) {
    if (!desc || dim == 0) return;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        float *v0 = desc + i * dim, *v1 = v0 + dim, *v2 = v1 + dim, *v3 = v2 + dim;
        float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
        for (size_t k = 0; k < dim; k++) {
            s0 += fabsf(v0[k]);
            s1 += fabsf(v1[k]);
            s2 += fabsf(v2[k]);
            s3 += fabsf(v3[k]);
        }
        rootsift_apply(v0, dim, s0);
        rootsift_apply(v1, dim, s1);
        rootsift_apply(v2, dim, s2);
        rootsift_apply(v3, dim, s3);
    }
    for (; i < n; i++) {
        float *v = desc + i * dim, l1 = 0.0f;
        for (size_t k = 0; k < dim; k++) l1 += fabsf(v[k]);
        rootsift_apply(v, dim, l1);
    }
}
