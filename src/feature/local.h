/*
 * feature/local.h - the compact local-feature record: a set of keypoints with 8-bit RootSIFT
 * descriptors (sl_local_features), its serialized form (docs/formats/features.md, "local
 * features") and the 6-bit matching precision every kernel compares. The bottom of the feature
 * module: it includes nothing of the module; the matchers (match.h, verify.c, match_avx*.c),
 * RANSAC and the pipeline (features.c) build on it.
 */
#ifndef SL_FEATURE_LOCAL_H
#define SL_FEATURE_LOCAL_H
#include <stddef.h>
#include <stdint.h>
#include "shoplens/feature.h"

/* Upper bound on keypoints in one sl_local_features (serialized or built). */
#define SL__LOCAL_MAX 4096
#define SL__LOCAL_RECORD 144 /* bytes per keypoint in the serialized form */

struct sl_local_features {
    uint32_t n;
    float *kp;      /* n x 4: x, y, scale, angle (pixels of the extraction image) */
    uint8_t *desc;  /* n x 128: RootSIFT scaled by SL__ROOTSIFT_Q and rounded */
    /* prepared 6-bit forms for the AVX2 matching kernel (match_avx2.c), NULL until the set is first
     * matched as query / as candidate; published atomically, immutable after, freed with the set.
     * desc must not change once the set has been matched. */
    void *qpack, *cpack;
};
#define SL__ROOTSIFT_Q 512.0f
/* Matching precision: a stored descriptor byte (RootSIFT x 512) as the 6-bit value every matching
 * kernel compares (round(v / 4), at most 63). */
static inline uint8_t sl__desc6(uint8_t v) { return (uint8_t)(v >= 252 ? 63 : (v + 2) >> 2); }

/* A new empty set with room for n keypoints (n <= SL__LOCAL_MAX), or NULL. */
sl_local_features *sl__local_alloc(uint32_t n);

/* CRC-32 (IEEE) of len bytes (crc.c). */
uint32_t sl__feature_crc32(const void *data, size_t len);
#endif
