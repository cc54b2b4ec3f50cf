/*
 * feature/match.h - descriptor matching kernels (verify.c, match_avx2.c, match_avx512.c),
 * verification settings and RANSAC's internal entry (ransac.c), on top of the local-feature
 * record (local.h).
 */
#ifndef SL_FEATURE_MATCH_H
#define SL_FEATURE_MATCH_H
#include <stdint.h>
#include "shoplens/feature.h"
#include "feature/local.h"

/* sl_ransac, with skip_repeats = 0: every draw fitted and counted, as before repeats were
 * skipped (the tests check both give the same bits). */
sl_status sl__ransac_impl(const float *src, const float *dst, size_t n, const sl_ransac_params *p,
                          double H[9], int *inliers, unsigned char *inlier_mask, int skip_repeats,
                          sl_error *err);

/* Verification settings of a pipeline (also used with f == NULL: the defaults). */
typedef struct sl__verify_cfg {
    int enabled;
    float weight;      /* blend weight of the inlier term */
    int top_n;         /* candidates re-ranked per query */
    int min_inliers;   /* fewer inliers than this add nothing */
    float half;        /* inliers above min at which the term reaches half its weight */
    float ratio;       /* Lowe ratio test (distance ratio) */
    sl_geo_model model;
    float threshold;   /* RANSAC threshold, pixels of the extraction image */
    int max_local;     /* local features kept per image */
} sl__verify_cfg;
/* The defaults with enabled = 1 (used when no pipeline is given). */
extern const sl__verify_cfg sl__verify_defaults;
/* The defaults, enabled = 0. */
void sl__verify_cfg_default(sl__verify_cfg *c);

/* Matches with ratio test + mutual nearest on the 6-bit descriptors (sl__desc6); writes pairs
 * (query index, candidate index) into pairs (capacity min(nq, nc) * 2). Returns the number of
 * matches, or -1 on out of memory. */
int sl__match_local(const sl_local_features *q, const sl_local_features *c, float ratio,
                    uint32_t *pairs);
/* sl__match_local with a chosen kernel: simd = 1 the fastest the CPU has (AVX-512 VNNI, else
 * AVX2, else scalar; the default), 0 the scalar scan, 2 the AVX2 kernel only (returns -2 when the
 * CPU lacks AVX2). Tests compare them; they must agree exactly. */
int sl__match_local_impl(const sl_local_features *q, const sl_local_features *c, float ratio,
                         uint32_t *pairs, int simd);
/* AVX-512 VNNI scan (match_avx512.c): per query descriptor (nq x 128 bytes at qd) the nearest
 * candidate bq, its squared distance d1 and the second nearest d2; per candidate (nc x 128 at cd)
 * the nearest query best_c; first index on ties. Returns 0, -1 out of memory, -2 when the CPU
 * lacks AVX-512 VNNI (or nq or nc is 0): nothing written, use the scalar scan. */
int sl__match_scan_vnni(const uint8_t *qd, uint32_t nq, const uint8_t *cd, uint32_t nc,
                        uint32_t *bq, uint32_t *d1, uint32_t *d2, uint32_t *best_c);
/* Whether the CPU has AVX-512 VNNI (checked once). */
int sl__match_have_vnni(void);
/* AVX2 scan (match_avx2.c) of the sets q and c at matching precision (sl__desc6): the results
 * sl__match_scan_vnni gives on 6-bit copies; builds and keeps the sets' 6-bit forms on first use
 * (safe when threads share c). -2 when the CPU lacks AVX2 (or a set is empty), -1 out of memory. */
int sl__match_scan_avx2(const sl_local_features *q, const sl_local_features *c, uint32_t *bq,
                        uint32_t *d1, uint32_t *d2, uint32_t *best_c);
/* The 6-bit rows (n x 128, sl__desc6) of set q as kept for the AVX2 kernel (built on first use,
 * owned by q), for the kernels that take plain rows; NULL without AVX2 or memory. */
const uint8_t *sl__match_rows6(const sl_local_features *q);
/* Bytes of the prepared candidate form of a set of n keypoints (0 without the AVX2 kernel). */
size_t sl__match_cpack_bytes(uint32_t n);
/* Full verification with explicit settings. */
sl_status sl__verify_with(const sl__verify_cfg *cfg, const sl_local_features *q,
                          const sl_local_features *c, sl_verify_result *res, sl_error *err);
double sl__rerank_with(const sl__verify_cfg *cfg, double global, const sl_verify_result *res);
#endif
