/*
 * feature/verify.c - descriptor matching of local-feature sets (local.h) and geometric
 * verification for re-ranking.
 *
 * Matching: all pairwise squared L2 distances between the descriptors at 6-bit precision (stored
 * bytes / 4, sl__desc6; integer arithmetic, exact, the same on every kernel: AVX-512 VNNI and the
 * scalar scan on 6-bit copies, AVX2 on 6-bit forms kept with the sets), Lowe's ratio test (IJCV 2004, sec. 7.1) on the two nearest candidate descriptors, and a
 * mutual-nearest-neighbour check (the candidate descriptor's nearest query descriptor must be the
 * same). Verification fits an affine map or a homography by RANSAC (Fischler & Bolles 1981,
 * ransac.c) and reports the inliers; re-ranking adds a saturating function of the inlier count
 * to the global similarity, in the spirit of Pastec / Philbin et al. (CVPR 2007).
 *
 * Memory of a set (sl_local_features_bytes) counts the prepared matching forms, which this layer
 * owns the layout of.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "feature/match.h"
#include "util/util.h"

/* enabled, weight, top_n, min_inliers, half, ratio, model, threshold, max_local */
const sl__verify_cfg sl__verify_defaults = {1, 1.0f, 100, 6, 12.0f, 0.85f, SL_GEO_AFFINE, 8.0f, 300};

void sl__verify_cfg_default(sl__verify_cfg *c) {
    *c = sl__verify_defaults;
    c->enabled = 0;
}

size_t sl_local_features_bytes(const sl_local_features *lf) {
    if (!lf) return 0;
    return sizeof *lf + (size_t)lf->n * (4 * sizeof(float) + SL_SIFT_DESC_DIM) + sl__match_cpack_bytes(lf->n);
}

/* Squared distances from descriptor a to the n descriptors of c: |a|^2 + |b|^2 - 2 a.b, exact in
 * 32 bits. Compiled for AVX2 and for the baseline, picked at load time (GCC function
 * multi-versioning); the fallback when neither SIMD kernel runs. */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__) && !defined(SL_SANITIZE)
__attribute__((target_clones("avx2", "default")))
#endif
static void dist_row(const uint8_t *a, const uint8_t *c, const uint32_t *cn, uint32_t n,
                     uint32_t *out) {
    uint32_t na = 0;
    for (int i = 0; i < SL_SIFT_DESC_DIM; i++) na += (uint32_t)(a[i] * a[i]);
    for (uint32_t j = 0; j < n; j++) {
        const uint8_t *b = c + (size_t)j * SL_SIFT_DESC_DIM;
        uint32_t s = 0;
        for (int i = 0; i < SL_SIFT_DESC_DIM; i++) s += (uint32_t)(a[i] * b[i]);
        out[j] = na + cn[j] - 2u * s;
    }
}

/* Scalar scan (of 6-bit descriptors): per query descriptor its nearest / second-nearest distance
 * and the nearest's index (first on ties), per candidate descriptor its nearest query (first on
 * ties). */
static int match_scan_scalar(const uint8_t *qd, uint32_t nq, const uint8_t *cd, uint32_t nc,
                             uint32_t *bq, uint32_t *qd1, uint32_t *qd2, uint32_t *best_c) {
    uint32_t *best_cd = malloc((size_t)nc * sizeof *best_cd);
    uint32_t *cn = malloc((size_t)nc * sizeof *cn), *row = malloc((size_t)nc * sizeof *row);
    if (!best_cd || !cn || !row) { free(best_cd); free(cn); free(row); return -1; }
    for (uint32_t j = 0; j < nc; j++) {
        const uint8_t *b = cd + (size_t)j * SL_SIFT_DESC_DIM;
        uint32_t s = 0;
        for (int i = 0; i < SL_SIFT_DESC_DIM; i++) s += (uint32_t)(b[i] * b[i]);
        cn[j] = s;
        best_cd[j] = UINT32_MAX;
        best_c[j] = UINT32_MAX;
    }
    for (uint32_t i = 0; i < nq; i++) {
        dist_row(qd + (size_t)i * SL_SIFT_DESC_DIM, cd, cn, nc, row);
        uint32_t d1 = UINT32_MAX, d2 = UINT32_MAX, b1 = 0;
        for (uint32_t j = 0; j < nc; j++) {
            uint32_t d = row[j];
            if (d < d1) { d2 = d1; d1 = d; b1 = j; }
            else if (d < d2) d2 = d;
            if (d < best_cd[j]) { best_cd[j] = d; best_c[j] = i; }
        }
        bq[i] = b1;
        qd1[i] = d1;
        qd2[i] = d2;
    }
    free(best_cd); free(cn); free(row);
    return 0;
}

/* A 6-bit copy of n descriptors (malloc'ed), for the kernels that take plain bytes. */
static uint8_t *desc6_copy(const uint8_t *d, uint32_t n) {
    size_t len = (size_t)n * SL_SIFT_DESC_DIM;
    uint8_t *o = malloc(len ? len : 1);
    if (o) for (size_t i = 0; i < len; i++) o[i] = sl__desc6(d[i]);
    return o;
}

/* The scan on 6-bit rows: VNNI when allowed and present, else scalar. The VNNI path takes the
 * query's rows kept with the set (one conversion per search, not one per candidate); the
 * candidate is converted per call, as the VNNI kernel transposes it per call anyway. */
static int match_scan_copies(const sl_local_features *q, const sl_local_features *c, int vnni,
                             uint32_t *bq, uint32_t *d1, uint32_t *d2, uint32_t *best_c) {
    const uint8_t *kept = vnni ? sl__match_rows6(q) : NULL;
    uint8_t *q6 = kept ? NULL : desc6_copy(q->desc, q->n), *c6 = desc6_copy(c->desc, c->n);
    const uint8_t *qr = kept ? kept : q6;
    int rc = -1;
    if (qr && c6) {
        rc = vnni ? sl__match_scan_vnni(qr, q->n, c6, c->n, bq, d1, d2, best_c) : -2;
        if (rc == -2) rc = match_scan_scalar(qr, q->n, c6, c->n, bq, d1, d2, best_c);
    }
    free(q6);
    free(c6);
    return rc;
}

int sl__match_local_impl(const sl_local_features *q, const sl_local_features *c, float ratio,
                         uint32_t *pairs, int simd) {
    uint32_t nq = q->n, nc = c->n;
    if (nq == 0 || nc < 2) return 0;
    uint32_t *best_c = malloc((size_t)nc * sizeof *best_c);   /* nearest query of each candidate */
    uint32_t *bq = malloc((size_t)nq * 3 * sizeof *bq);       /* nearest, d1, d2 per query */
    if (!best_c || !bq) { free(best_c); free(bq); return -1; }
    uint32_t *d1 = bq + nq, *d2 = bq + 2 * (size_t)nq;
    /* the AVX2 kernel keeps its 6-bit forms with the sets; on a VNNI CPU that kernel (on 6-bit
     * copies) is faster still */
    int rc = simd ? -2 : match_scan_copies(q, c, 0, bq, d1, d2, best_c);
    if (rc == -2 && simd == 1 && sl__match_have_vnni()) rc = match_scan_copies(q, c, 1, bq, d1, d2, best_c);
    if (rc == -2 && simd) rc = sl__match_scan_avx2(q, c, bq, d1, d2, best_c);
    if (rc == -2 && simd == 2) { free(best_c); free(bq); return -2; }
    if (rc == -2) rc = match_scan_copies(q, c, 0, bq, d1, d2, best_c);
    if (rc < 0) { free(best_c); free(bq); return -1; }
    double r2 = (double)ratio * ratio;
    int m = 0;
    for (uint32_t i = 0; i < nq; i++) {
        if (!((double)d1[i] < r2 * (double)d2[i]) || best_c[bq[i]] != i) continue;
        pairs[2 * m] = i;
        pairs[2 * m + 1] = bq[i];
        m++;
    }
    free(best_c); free(bq);
    return m;
}

int sl__match_local(const sl_local_features *q, const sl_local_features *c, float ratio,
                    uint32_t *pairs) {
    return sl__match_local_impl(q, c, ratio, pairs, 1);
}

sl_status sl__verify_with(const sl__verify_cfg *cfg, const sl_local_features *q,
                          const sl_local_features *c, sl_verify_result *res, sl_error *err) {
    static const double I[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
    if (!q || !c || !res) return sl__err_set(err, SL_E_INVALID, "verify: NULL argument");
    memset(res, 0, sizeof *res);
    memcpy(res->H, I, sizeof I);
    uint32_t cap = q->n < c->n ? q->n : c->n;
    if (cap == 0) return SL_OK;
    uint32_t *pairs = sl__mallocarray(2 * (size_t)cap, sizeof *pairs);
    if (!pairs) return sl__err_set(err, SL_E_NOMEM, "verify: out of memory");
    int m = sl__match_local(q, c, cfg->ratio, pairs);
    if (m < 0) { free(pairs); return sl__err_set(err, SL_E_NOMEM, "verify: out of memory"); }
    res->matches = m;
    sl_status st = SL_OK;
    if (m >= 3) {
        float *src = sl__mallocarray(2 * (size_t)m, sizeof *src);
        float *dst = sl__mallocarray(2 * (size_t)m, sizeof *dst);
        if (!src || !dst) {
            st = sl__err_set(err, SL_E_NOMEM, "verify: out of memory");
        } else {
            for (int k = 0; k < m; k++) {
                src[2 * k] = q->kp[4 * (size_t)pairs[2 * k]];
                src[2 * k + 1] = q->kp[4 * (size_t)pairs[2 * k] + 1];
                dst[2 * k] = c->kp[4 * (size_t)pairs[2 * k + 1]];
                dst[2 * k + 1] = c->kp[4 * (size_t)pairs[2 * k + 1] + 1];
            }
            sl_ransac_params rp;
            sl_ransac_params_init(&rp);
            rp.model = cfg->model;
            rp.threshold = cfg->threshold;
            st = sl_ransac(src, dst, (size_t)m, &rp, res->H, &res->inliers, NULL, err);
        }
        free(src); free(dst);
    }
    free(pairs);
    return st;
}

double sl__rerank_with(const sl__verify_cfg *cfg, double global, const sl_verify_result *res) {
    if (!res || !cfg->enabled) return global;
    double extra = (double)res->inliers - (double)cfg->min_inliers + 1.0;
    if (extra <= 0.0) return global;
    return global + cfg->weight * extra / (extra + cfg->half);
}
