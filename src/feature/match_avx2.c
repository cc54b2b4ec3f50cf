/*
 * feature/match_avx2.c - AVX2 kernel of local-descriptor matching (verify.c), for CPUs without
 * AVX-512 VNNI (AMD Zen 2/3, older Intel): for every query descriptor its nearest and
 * second-nearest candidate distance and the nearest's index, and for every candidate descriptor
 * its nearest query index; squared L2 on RootSIFT at matching precision (6 bits).
 *
 * Precision: descriptors are matched at 6 bits (sl__desc6: the stored 8-bit RootSIFT / 4, rounded,
 * 0..63), on every path (this kernel, the VNNI one and the scalar scan get the same 6-bit bytes),
 * so results do not depend on the CPU. Against 8-bit matching, bench/results/quality.md measured
 * the same or slightly better retrieval and the 10k-store check the same hit@1; lower ranks
 * reshuffle where inlier counts sit at the threshold. Arithmetic is integer and exact on those
 * values, ties included (first index wins on both sides), so this kernel is bit-identical to the
 * scalar scan. With values <= 63, vpmaddubsw multiplies 32 byte pairs at once without saturating
 * (a lane sums two products <= 3969), and 4 steps of them still fit a 16-bit lane (31752) before
 * one vpmaddwd widens to 32 bits: about half the multiply-unit work of 16-bit products.
 * Candidates are transposed into blocks of 8 (a 32-bit lane = 4 consecutive dimensions of one
 * candidate), so no horizontal sums are needed; 4 query rows share every candidate load.
 * Distances are below 2^20 and padding lanes sit at 2^30, so the signed compares of AVX2 order
 * them as the unsigned scan does. The 6-bit forms are built once per set (its first use as query
 * or as candidate) and kept with it, so a catalog image held in the engine's cache of local
 * features is prepared once.
 * Only reached after a CPU check (sl__match_scan_avx2 returns -2 without AVX2). Plain target
 * attributes (no ifunc), so it is also built and checked under the sanitizers.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include "feature/features_internal.h"
#include "util/util.h"

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>

#define SL__AVX2_TARGET __attribute__((target("avx2")))

enum { D = SL_SIFT_DESC_DIM, STEPS = D / 4, PAD = 1 << 30 };

/* Row state: lane-wise nearest, second nearest and the nearest's index (8 lanes). */
typedef struct { __m256i d1, d2, i1; } row_state;

SL__AVX2_TARGET static inline void row_update(row_state *s, __m256i d, __m256i idx) {
    __m256i lt1 = _mm256_cmpgt_epi32(s->d1, d);
    __m256i lt2 = _mm256_cmpgt_epi32(s->d2, d);
    s->d2 = _mm256_blendv_epi8(s->d2, d, lt2);
    s->d2 = _mm256_blendv_epi8(s->d2, s->d1, lt1);
    s->d1 = _mm256_blendv_epi8(s->d1, d, lt1);
    s->i1 = _mm256_blendv_epi8(s->i1, idx, lt1);
}

/* Across lanes: the smallest d1 (first index on ties) and the second smallest overall. */
static void row_finish(const int32_t *d1v, const int32_t *d2v, const int32_t *i1v, uint32_t *bq,
                       uint32_t *d1, uint32_t *d2) {
    int32_t m = INT32_MAX, bi = INT32_MAX;
    int bl = 0;
    for (int l = 0; l < 8; l++)
        if (d1v[l] < m || (d1v[l] == m && i1v[l] < bi)) { m = d1v[l]; bi = i1v[l]; bl = l; }
    int32_t s = d2v[bl];
    for (int l = 0; l < 8; l++)
        if (l != bl && d1v[l] < s) s = d1v[l];
    *bq = (uint32_t)bi;
    *d1 = (uint32_t)m;
    *d2 = s >= PAD ? UINT32_MAX : (uint32_t)s; /* padding or none: "none", as the scalar scan */
}

/* Prepared forms, built on a set's first use as query or as candidate and kept with it (a set
 * that is matched against many others, a cached catalog image or the query of a search, is
 * prepared once). One allocation each, freed with free(). Both hold the descriptors at matching
 * precision (sl__desc6: 0..63). */
typedef struct qpack {        /* as query: 6-bit rows (4 dimensions per 32-bit word, broadcast
                               * by the kernel) and their squared norms */
    uint32_t n;
    int32_t *qn;
    uint8_t *qx;              /* n x D */
} qpack;
typedef struct cpack {        /* as candidate: blocks of 8, see the file comment */
    uint32_t n;
    size_t nb;
    int32_t *kc;              /* nb x 8: |c|^2, PAD in padding lanes */
    uint8_t *ct;              /* nb x STEPS x 8 lanes x 4 bytes */
} cpack;

static size_t up64(size_t x) { return (x + 63) & ~(size_t)63; }

/* One descriptor to 6 bits (sl__desc6 of every byte: a saturating +2, then / 4, which is exact
 * up to 253 and saturates to 63 above, as sl__desc6 does) and its squared norm. */
SL__AVX2_TARGET static int32_t desc6_row(const uint8_t *src, uint8_t *dst) {
    const __m256i two = _mm256_set1_epi8(2), low6 = _mm256_set1_epi8(0x3f), ones = _mm256_set1_epi16(1);
    __m256i n2 = _mm256_setzero_si256();
    for (int t = 0; t < D; t += 32) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(src + t));
        v = _mm256_and_si256(_mm256_srli_epi16(_mm256_adds_epu8(v, two), 2), low6);
        _mm256_storeu_si256((__m256i *)(void *)(dst + t), v);
        n2 = _mm256_add_epi32(n2, _mm256_madd_epi16(_mm256_maddubs_epi16(v, v), ones));
    }
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(n2), _mm256_extracti128_si256(n2, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

static qpack *qpack_build(const uint8_t *qd, uint32_t nq) {
    size_t h = up64(sizeof(qpack)), a = up64((size_t)nq * sizeof(int32_t)), b = up64((size_t)nq * D);
    qpack *p = aligned_alloc(64, h + a + b); /* sizes bounded: nq <= SL__LOCAL_MAX */
    if (!p) return NULL;
    p->n = nq;
    p->qn = (int32_t *)(void *)((char *)p + h);
    p->qx = (uint8_t *)p + h + a;
    for (uint32_t i = 0; i < nq; i++) p->qn[i] = desc6_row(qd + (size_t)i * D, p->qx + (size_t)i * D);
    return p;
}

static cpack *cpack_build(const uint8_t *cd, uint32_t nc) {
    size_t nb = ((size_t)nc + 7) / 8;
    size_t h = up64(sizeof(cpack)), a = up64(nb * 8 * sizeof(int32_t)), b = nb * STEPS * 32;
    cpack *p = aligned_alloc(64, h + a + up64(b));
    if (!p) return NULL;
    p->n = nc;
    p->nb = nb;
    p->kc = (int32_t *)(void *)((char *)p + h);
    p->ct = (uint8_t *)p + h + a;
    memset(p->ct, 0, b);
    for (size_t j = 0; j < nb * 8; j++) p->kc[j] = PAD;
    uint8_t row[D];
    for (uint32_t j = 0; j < nc; j++) {
        p->kc[j] = desc6_row(cd + (size_t)j * D, row);
        uint8_t *dst = p->ct + (j / 8) * STEPS * 32 + (j % 8) * 4;
        for (int s = 0; s < STEPS; s++) memcpy(dst + (size_t)s * 32, row + 4 * s, 4);
    }
    return p;
}

/* The set's pack in *slot, built and published on first use. Racing builders (threads sharing a
 * cached candidate) each build one; the first published wins, the others are freed. The slot is
 * a cache inside a logically const set. */
static void *pack_get(void **slot, int cand, const uint8_t *desc, uint32_t n) {
    void *p = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (p) return p;
    p = cand ? (void *)cpack_build(desc, n) : (void *)qpack_build(desc, n);
    if (!p) return NULL;
    void *expected = NULL;
    if (!__atomic_compare_exchange_n(slot, &expected, p, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        free(p);
        p = expected;
    }
    return p;
}

/* 16-bit partial dot products of 4 query rows with 8 candidates over 4 steps (16 dimensions):
 * every vpmaddubsw lane sums two products of at most 63 * 63, so 4 steps stay below
 * 4 * 2 * 3969 = 31752 < 2^15; then widened to 32 bits (vpmaddwd with ones) and added. */
#define SL__STEP(k)                                                                              \
    do {                                                                                         \
        __m256i cv = _mm256_load_si256((const __m256i *)(const void *)(cb + (size_t)(k) * 32)); \
        int32_t w0, w1, w2, w3;                                                                  \
        memcpy(&w0, q[0] + 4 * (k), 4); memcpy(&w1, q[1] + 4 * (k), 4);                          \
        memcpy(&w2, q[2] + 4 * (k), 4); memcpy(&w3, q[3] + 4 * (k), 4);                          \
        s0 = _mm256_add_epi16(s0, _mm256_maddubs_epi16(cv, _mm256_set1_epi32(w0)));              \
        s1 = _mm256_add_epi16(s1, _mm256_maddubs_epi16(cv, _mm256_set1_epi32(w1)));              \
        s2 = _mm256_add_epi16(s2, _mm256_maddubs_epi16(cv, _mm256_set1_epi32(w2)));              \
        s3 = _mm256_add_epi16(s3, _mm256_maddubs_epi16(cv, _mm256_set1_epi32(w3)));              \
    } while (0)

SL__AVX2_TARGET static int scan(const qpack *qp, const cpack *cp, uint32_t *bq, uint32_t *d1,
                               uint32_t *d2, uint32_t *best_c) {
    uint32_t nq = qp->n, nc = cp->n;
    size_t nb = cp->nb;
    int32_t *bcd = aligned_alloc(32, nb * 8 * sizeof *bcd * 2); /* nearest query distance */
    if (!bcd) return -1;
    int32_t *bci = bcd + nb * 8;                                 /* and its index */
    for (size_t j = 0; j < nb * 8; j++) {
        bcd[j] = INT32_MAX;
        bci[j] = INT32_MAX;
    }
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i none = _mm256_set1_epi32(INT32_MAX), ones = _mm256_set1_epi16(1);
    for (uint32_t i0 = 0; i0 < nq; i0 += 4) {
        uint32_t nr = nq - i0 < 4 ? nq - i0 : 4;
        const uint8_t *q[4];
        row_state rs[4];
        __m256i qnv[4];
        for (uint32_t r = 0; r < 4; r++) {
            uint32_t i = i0 + (r < nr ? r : 0);
            q[r] = qp->qx + (size_t)i * D;
            rs[r].d1 = rs[r].d2 = none;
            rs[r].i1 = _mm256_setzero_si256();
            qnv[r] = _mm256_set1_epi32(qp->qn[i]);
        }
        for (size_t b = 0; b < nb; b++) {
            const uint8_t *cb = cp->ct + b * STEPS * 32;
            __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
            for (int k = 0; k < STEPS; k += 4) {
                __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
                SL__STEP(k); SL__STEP(k + 1); SL__STEP(k + 2); SL__STEP(k + 3);
                a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(s0, ones));
                a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(s1, ones));
                a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(s2, ones));
                a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(s3, ones));
            }
            __m256i acc[4] = {a0, a1, a2, a3};
            size_t o = b * 8;
            __m256i kv = _mm256_load_si256((const __m256i *)(const void *)(cp->kc + o));
            __m256i idx = _mm256_add_epi32(iota, _mm256_set1_epi32((int)o));
            __m256i bd = _mm256_load_si256((const __m256i *)(const void *)(bcd + o));
            __m256i bi = _mm256_load_si256((const __m256i *)(const void *)(bci + o));
            for (uint32_t r = 0; r < nr; r++) {
                /* |q|^2 + |c|^2 - 2 q.c */
                __m256i d = _mm256_sub_epi32(_mm256_add_epi32(qnv[r], kv), _mm256_slli_epi32(acc[r], 1));
                row_update(&rs[r], d, idx);
                __m256i lt = _mm256_cmpgt_epi32(bd, d);
                bd = _mm256_blendv_epi8(bd, d, lt);
                bi = _mm256_blendv_epi8(bi, _mm256_set1_epi32((int)(i0 + r)), lt);
            }
            _mm256_store_si256((__m256i *)(void *)(bcd + o), bd);
            _mm256_store_si256((__m256i *)(void *)(bci + o), bi);
        }
        for (uint32_t r = 0; r < nr; r++) {
            int32_t v1[8], v2[8], vi[8];
            _mm256_storeu_si256((__m256i *)(void *)v1, rs[r].d1);
            _mm256_storeu_si256((__m256i *)(void *)v2, rs[r].d2);
            _mm256_storeu_si256((__m256i *)(void *)vi, rs[r].i1);
            row_finish(v1, v2, vi, &bq[i0 + r], &d1[i0 + r], &d2[i0 + r]);
        }
    }
    for (uint32_t j = 0; j < nc; j++) best_c[j] = (uint32_t)bci[j];
    free(bcd);
    return 0;
}
#undef SL__STEP

int sl__match_scan_avx2(const sl_local_features *q, const sl_local_features *c, uint32_t *bq,
                        uint32_t *d1, uint32_t *d2, uint32_t *best_c) {
    if (!sl__cpu_avx2() || !q || !c || q->n == 0 || c->n == 0) return -2;
    sl_local_features *qm = (sl_local_features *)(uintptr_t)q, *cm = (sl_local_features *)(uintptr_t)c;
    const qpack *qp = pack_get(&qm->qpack, 0, q->desc, q->n);
    const cpack *cp = qp ? pack_get(&cm->cpack, 1, c->desc, c->n) : NULL;
    if (!qp || !cp) return -1;
    return scan(qp, cp, bq, d1, d2, best_c);
}

const uint8_t *sl__match_rows6(const sl_local_features *q) {
    if (!sl__cpu_avx2() || !q || q->n == 0) return NULL;
    sl_local_features *qm = (sl_local_features *)(uintptr_t)q;
    const qpack *qp = pack_get(&qm->qpack, 0, q->desc, q->n);
    return qp ? qp->qx : NULL;
}

size_t sl__match_cpack_bytes(uint32_t n) {
    size_t nb = ((size_t)n + 7) / 8;
    return up64(sizeof(cpack)) + up64(nb * 8 * sizeof(int32_t)) + up64(nb * STEPS * 32);
}
#else
int sl__match_scan_avx2(const sl_local_features *q, const sl_local_features *c, uint32_t *bq,
                        uint32_t *d1, uint32_t *d2, uint32_t *best_c) {
    (void)q; (void)c; (void)bq; (void)d1; (void)d2; (void)best_c;
    return -2;
}

const uint8_t *sl__match_rows6(const sl_local_features *q) { (void)q; return NULL; }

size_t sl__match_cpack_bytes(uint32_t n) { (void)n; return 0; }
#endif
