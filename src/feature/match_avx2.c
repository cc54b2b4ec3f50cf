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
 * scalar scan. vpmaddubsw multiplies 32 byte pairs at once: the candidate's 6-bit values
 * (unsigned) by the query's minus 32 (signed, -32..31, the 32 sum c added back through the
 * candidate's norm term), so a lane sums two products of magnitude <= 2016 without saturating
 * and 8 steps still fit a 16-bit lane (32256) before one vpmaddwd widens to 32 bits: about half
 * the multiply-unit work of 16-bit products (round 5: 8 steps instead of 4 per widening, with
 * the query as 0..63; 6% fewer operations).
 * Candidates are transposed into blocks of 8 (a 32-bit lane = 4 consecutive dimensions of one
 * candidate), so no horizontal sums are needed; 4 query rows share every candidate load.
 * Nearest / second nearest are kept as keys, (distance << 12) | index in one unsigned word (see
 * KEY_SHIFT): one unsigned min keeps a nearest with its index and the first index on ties, so a
 * query row costs 7 vector operations per block of 8 candidates (compare-and-blend bookkeeping
 * took 17) and the lane reduction is vectorized too. The 6-bit forms are built once per set (its first use as query
 * or as candidate) and kept with it, so a catalog image held in the engine's cache of local
 * features is prepared once.
 * Only reached after a CPU check (sl__match_scan_avx2 returns -2 without AVX2). Plain target
 * attributes (no ifunc), so it is also built and checked under the sanitizers.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include "feature/match.h"
#include "util/util.h"

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>

#define SL__AVX2_TARGET __attribute__((target("avx2")))

enum { D = SL_SIFT_DESC_DIM, STEPS = D / 4, KEY_SHIFT = 12 };

/* Keys: a distance and an index in one unsigned 32-bit word, (d << KEY_SHIFT) | index. Indices
 * are below SL__LOCAL_MAX = 2^KEY_SHIFT and 6-bit distances below 128 * 63^2 < 2^19, so keys are
 * exact, and the smaller key is the smaller distance, the smaller index on ties: the order of the
 * scalar scan ("first index wins"). One unsigned min then keeps a nearest and its index. */
_Static_assert(SL__LOCAL_MAX <= (1 << KEY_SHIFT), "indices must fit below the key's distance");
_Static_assert((uint64_t)D * 63 * 63 < (1u << (32 - KEY_SHIFT)), "6-bit distances must fit in a key");
#define SL__KEY_NONE UINT32_MAX /* no candidate (padding lanes; never a real key: d < 2^19) */

/* Prepared forms, built on a set's first use as query or as candidate and kept with it (a set
 * that is matched against many others, a cached catalog image or the query of a search, is
 * prepared once). One allocation each, freed with free(). Both hold the descriptors at matching
 * precision (sl__desc6: 0..63). */
typedef struct qpack {        /* as query: 6-bit rows and their squared norms */
    uint32_t n;
    int32_t *qn;
    uint8_t *qx;              /* n x D, 0..63 (sl__match_rows6) */
    int8_t *qs;               /* n x D, the same minus 32 (-32..31): what the kernel multiplies,
                               * 4 dimensions per 32-bit word, broadcast */
} qpack;
typedef struct cpack {        /* as candidate: blocks of 8, see the file comment */
    uint32_t n;
    size_t nb;
    uint32_t *kc;             /* nb x 8: (|c|^2 - 64 sum c) << KEY_SHIFT modulo 2^32 (the query
                               * is multiplied as q - 32: q.c = (q - 32).c + 32 sum c), 0 in
                               * padding lanes */
    uint32_t *cid;            /* nb x 8: candidate index, SL__KEY_NONE in padding lanes */
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
    qpack *p = aligned_alloc(64, h + a + 2 * b); /* sizes bounded: nq <= SL__LOCAL_MAX */
    if (!p) return NULL;
    p->n = nq;
    p->qn = (int32_t *)(void *)((char *)p + h);
    p->qx = (uint8_t *)p + h + a;
    p->qs = (int8_t *)((char *)p + h + a + b);
    for (uint32_t i = 0; i < nq; i++) {
        p->qn[i] = desc6_row(qd + (size_t)i * D, p->qx + (size_t)i * D);
        for (int t = 0; t < D; t++) p->qs[(size_t)i * D + (size_t)t] = (int8_t)(p->qx[(size_t)i * D + (size_t)t] - 32);
    }
    return p;
}

static cpack *cpack_build(const uint8_t *cd, uint32_t nc) {
    size_t nb = ((size_t)nc + 7) / 8;
    size_t h = up64(sizeof(cpack)), a = up64(nb * 8 * sizeof(uint32_t)), b = nb * STEPS * 32;
    cpack *p = aligned_alloc(64, h + 2 * a + up64(b));
    if (!p) return NULL;
    p->n = nc;
    p->nb = nb;
    p->kc = (uint32_t *)(void *)((char *)p + h);
    p->cid = (uint32_t *)(void *)((char *)p + h + a);
    p->ct = (uint8_t *)p + h + 2 * a;
    memset(p->ct, 0, b);
    for (size_t j = 0; j < nb * 8; j++) {
        p->kc[j] = 0;
        p->cid[j] = j < nc ? (uint32_t)j : SL__KEY_NONE;
    }
    uint8_t row[D];
    for (uint32_t j = 0; j < nc; j++) {
        uint32_t n2 = (uint32_t)desc6_row(cd + (size_t)j * D, row), sum = 0;
        for (int t = 0; t < D; t++) sum += row[t];
        p->kc[j] = (n2 - 64u * sum) << KEY_SHIFT; /* modulo 2^32, see cpack */
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

/* The smallest unsigned lane, in every lane. */
SL__AVX2_TARGET static inline __m256i hmin_epu32(__m256i x) {
    x = _mm256_min_epu32(x, _mm256_permute2x128_si256(x, x, 1));
    x = _mm256_min_epu32(x, _mm256_shuffle_epi32(x, 0x4e));
    return _mm256_min_epu32(x, _mm256_shuffle_epi32(x, 0xb1));
}

/* A query row's result from its lane-wise smallest and second smallest keys: the smallest key
 * overall, and the second smallest (the smallest of the other lanes' firsts and its lane's
 * second; keys are unique: each holds a candidate index). */
SL__AVX2_TARGET static inline void row_finish(__m256i k1, __m256i k2, uint32_t *bq, uint32_t *d1,
                                              uint32_t *d2) {
    __m256i m = hmin_epu32(k1);
    __m256i rest = _mm256_blendv_epi8(k1, k2, _mm256_cmpeq_epi32(k1, m));
    uint32_t first = (uint32_t)_mm256_cvtsi256_si32(m), second = (uint32_t)_mm256_cvtsi256_si32(hmin_epu32(rest));
    *bq = first & ((1u << KEY_SHIFT) - 1);
    *d1 = first >> KEY_SHIFT;
    *d2 = second == SL__KEY_NONE ? UINT32_MAX : second >> KEY_SHIFT; /* none, as the scalar scan */
}

/* 16-bit partial dot products of 4 query rows with 8 candidates over 8 steps (32 dimensions):
 * the candidate bytes (0..63) are vpmaddubsw's unsigned operand and the query's q - 32
 * (-32..31) its signed one, so every lane sums two products in [-2016, 1953] and 8 steps stay
 * within [-32256, 31248], inside int16 (with q itself 4 steps were the limit: 31752); then
 * widened to 32 bits (vpmaddwd with ones) and added. Half the widening operations. */
#define SL__STEP(k)                                                                              \
    do {                                                                                         \
        __m256i cv = _mm256_load_si256((const __m256i *)(const void *)(cb + (size_t)(k) * 32)); \
        s0 = _mm256_add_epi16(s0, _mm256_maddubs_epi16(cv, _mm256_set1_epi32(w0[k])));           \
        s1 = _mm256_add_epi16(s1, _mm256_maddubs_epi16(cv, _mm256_set1_epi32(w1[k])));           \
        s2 = _mm256_add_epi16(s2, _mm256_maddubs_epi16(cv, _mm256_set1_epi32(w2[k])));           \
        s3 = _mm256_add_epi16(s3, _mm256_maddubs_epi16(cv, _mm256_set1_epi32(w3[k])));           \
        SL__PIN(s0, s1, s2, s3);                                                                 \
    } while (0)
/* Keeps each step's sums in their registers: without it GCC 12 reassociates the 8 steps' integer
 * additions, computes all 32 products first and spills them to the stack (10% slower). An empty
 * asm that "modifies" the accumulators costs no instruction. */
#define SL__PIN(a, b, c, d) __asm__("" : "+x"(a), "+x"(b), "+x"(c), "+x"(d))

/* One query row's keys against a block: k = (|q|^2 + |c|^2 - 2 q.c) << KEY_SHIFT, computed
 * modulo 2^32 as |q|^2 + (|c|^2 - 64 sum c) - 2 (q - 32).c from the shifted terms (exact: the
 * result fits). Its lane-wise first and second smallest (candidate index in the key) and the
 * block's nearest query (query index in it). */
#define SL__ROW(r)                                                                               \
    do {                                                                                         \
        __m256i base = _mm256_sub_epi32(_mm256_add_epi32(qk[r], kc), _mm256_slli_epi32(a##r, KEY_SHIFT + 1)); \
        __m256i key = _mm256_or_si256(base, cid);                                                \
        __m256i hi = _mm256_max_epu32(k1[r], key);                                               \
        k1[r] = _mm256_min_epu32(k1[r], key);                                                    \
        k2[r] = _mm256_min_epu32(k2[r], hi);                                                     \
        bc = _mm256_min_epu32(bc, _mm256_or_si256(base, qi[r]));                                 \
    } while (0)

SL__AVX2_TARGET static int scan(const qpack *qp, const cpack *cp, uint32_t *bq, uint32_t *d1,
                               uint32_t *d2, uint32_t *best_c) {
    uint32_t nq = qp->n, nc = cp->n;
    size_t nb = cp->nb;
    uint32_t *bck = aligned_alloc(32, nb * 8 * sizeof *bck); /* per candidate: nearest query key */
    if (!bck) return -1;
    const __m256i none = _mm256_set1_epi32(-1), ones = _mm256_set1_epi16(1);
    for (size_t j = 0; j < nb * 8; j++) bck[j] = SL__KEY_NONE;
    for (uint32_t i0 = 0; i0 < nq; i0 += 4) {
        uint32_t nr = nq - i0 < 4 ? nq - i0 : 4;
        const int32_t *w[4];   /* 4 dimensions per word; a missing row repeats the group's first */
        __m256i qk[4], qi[4], k1[4], k2[4];
        for (uint32_t r = 0; r < 4; r++) {
            uint32_t i = i0 + (r < nr ? r : 0);
            w[r] = (const int32_t *)(const void *)(qp->qs + (size_t)i * D);
            qk[r] = _mm256_set1_epi32((int32_t)((uint32_t)qp->qn[i] << KEY_SHIFT));
            qi[r] = _mm256_set1_epi32((int32_t)i);
            k1[r] = k2[r] = none;
        }
        const int32_t *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3];
        for (size_t b = 0; b < nb; b++) {
            const uint8_t *cb = cp->ct + b * STEPS * 32;
            __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
            for (int k = 0; k < STEPS; k += 8) {
                __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
                SL__STEP(k); SL__STEP(k + 1); SL__STEP(k + 2); SL__STEP(k + 3);
                SL__STEP(k + 4); SL__STEP(k + 5); SL__STEP(k + 6); SL__STEP(k + 7);
                a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(s0, ones));
                a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(s1, ones));
                a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(s2, ones));
                a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(s3, ones));
            }
            size_t o = b * 8;
            __m256i kc = _mm256_load_si256((const __m256i *)(const void *)(cp->kc + o));
            __m256i cid = _mm256_load_si256((const __m256i *)(const void *)(cp->cid + o));
            __m256i bc = _mm256_load_si256((const __m256i *)(const void *)(bck + o));
            SL__ROW(0); SL__ROW(1); SL__ROW(2); SL__ROW(3);
            _mm256_store_si256((__m256i *)(void *)(bck + o), bc);
        }
        for (uint32_t r = 0; r < nr; r++) row_finish(k1[r], k2[r], &bq[i0 + r], &d1[i0 + r], &d2[i0 + r]);
    }
    for (uint32_t j = 0; j < nc; j++) best_c[j] = bck[j] & ((1u << KEY_SHIFT) - 1);
    free(bck);
    return 0;
}
#undef SL__STEP
#undef SL__PIN
#undef SL__ROW

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
    return up64(sizeof(cpack)) + 2 * up64(nb * 8 * sizeof(uint32_t)) + up64(nb * STEPS * 32);
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
