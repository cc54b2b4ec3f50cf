/*
 * feature/local.c - the compact local-feature record (local.h): allocation, release and the
 * serialized form.
 *
 * Serialized form (docs/formats/features.md, "local features"): "SLLF", u8 version 1, u8 0,
 * u16 0, u32 n, n records of {f32 x, f32 y, f32 scale, f32 angle, u8 desc[128]}, u32 CRC-32 of
 * everything before it; little-endian. Invariants: n <= SL__LOCAL_MAX, every float finite; the
 * prepared matching forms (qpack, cpack) are opaque here and only freed.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "feature/local.h"
#include "util/util.h"

sl_local_features *sl__local_alloc(uint32_t n) {
    if (n > SL__LOCAL_MAX) return NULL;
    sl_local_features *lf = calloc(1, sizeof *lf);
    if (!lf) return NULL;
    lf->n = n;
    lf->kp = sl__mallocarray(n ? 4 * (size_t)n : 1, sizeof *lf->kp);
    lf->desc = sl__mallocarray(n ? (size_t)n * SL_SIFT_DESC_DIM : 1, 1);
    if (!lf->kp || !lf->desc) { sl_local_features_free(lf); return NULL; }
    return lf;
}

void sl_local_features_free(sl_local_features *lf) {
    if (!lf) return;
    free(lf->kp);
    free(lf->desc);
    free(lf->qpack);
    free(lf->cpack);
    free(lf);
}

size_t sl_local_features_count(const sl_local_features *lf) { return lf ? lf->n : 0; }

static void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static void putf(uint8_t *p, float f) { uint32_t v; memcpy(&v, &f, 4); put32(p, v); }
static float getf(const uint8_t *p) { uint32_t v = get32(p); float f; memcpy(&f, &v, 4); return f; }

sl_status sl_local_features_serialize(const sl_local_features *lf, void **buf, size_t *len,
                                      sl_error *err) {
    if (buf) *buf = NULL;
    if (len) *len = 0;
    if (!lf || !buf || !len) return sl__err_set(err, SL_E_INVALID, "local features: NULL argument");
    size_t total = 12 + (size_t)lf->n * SL__LOCAL_RECORD + 4;
    uint8_t *b = malloc(total);
    if (!b) return sl__err_set(err, SL_E_NOMEM, "local features: out of memory");
    memcpy(b, "SLLF", 4);
    b[4] = 1; b[5] = 0; b[6] = 0; b[7] = 0;
    put32(b + 8, lf->n);
    uint8_t *p = b + 12;
    for (uint32_t i = 0; i < lf->n; i++, p += SL__LOCAL_RECORD) {
        for (int k = 0; k < 4; k++) putf(p + 4 * k, lf->kp[4 * (size_t)i + (size_t)k]);
        memcpy(p + 16, lf->desc + (size_t)i * SL_SIFT_DESC_DIM, SL_SIFT_DESC_DIM);
    }
    put32(p, sl__feature_crc32(b, total - 4));
    *buf = b;
    *len = total;
    return SL_OK;
}

sl_status sl_local_features_deserialize(const void *buf, size_t len, sl_local_features **out,
                                        sl_error *err) {
    if (out) *out = NULL;
    if (!out || (!buf && len)) return sl__err_set(err, SL_E_INVALID, "local features: NULL argument");
    const uint8_t *b = buf;
    if (len < 16 || memcmp(b, "SLLF", 4) != 0)
        return sl__err_set(err, SL_E_CORRUPT, "local features: bad magic or too short (%zu bytes)", len);
    if (b[4] != 1) return sl__err_set(err, SL_E_VERSION, "local features: version %u (expected 1)", b[4]);
    if (b[5] || b[6] || b[7]) return sl__err_set(err, SL_E_CORRUPT, "local features: reserved bytes set");
    uint32_t n = get32(b + 8);
    if (n > SL__LOCAL_MAX)
        return sl__err_set(err, SL_E_CORRUPT, "local features: %u keypoints exceed %d", n, SL__LOCAL_MAX);
    size_t need = 12 + (size_t)n * SL__LOCAL_RECORD + 4;
    if (len != need)
        return sl__err_set(err, SL_E_CORRUPT, "local features: %zu bytes, %zu expected for %u keypoints",
                           len, need, n);
    if (get32(b + need - 4) != sl__feature_crc32(b, need - 4))
        return sl__err_set(err, SL_E_CORRUPT, "local features: checksum mismatch");
    sl_local_features *lf = sl__local_alloc(n);
    if (!lf) return sl__err_set(err, SL_E_NOMEM, "local features: out of memory");
    const uint8_t *p = b + 12;
    for (uint32_t i = 0; i < n; i++, p += SL__LOCAL_RECORD) {
        for (int k = 0; k < 4; k++) {
            float v = getf(p + 4 * k);
            if (!isfinite(v) || fabsf(v) > 1e6f) {
                sl_local_features_free(lf);
                return sl__err_set(err, SL_E_CORRUPT, "local features: keypoint %u has a bad value", i);
            }
            lf->kp[4 * (size_t)i + (size_t)k] = v;
        }
        memcpy(lf->desc + (size_t)i * SL_SIFT_DESC_DIM, p + 16, SL_SIFT_DESC_DIM);
    }
    *out = lf;
    return SL_OK;
}
