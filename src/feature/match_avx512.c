/*
 * feature/match_avx512.c - AVX-512 VNNI kernel of local-descriptor matching (verify.c): for every
 * query descriptor its nearest and second-nearest candidate distance and the nearest's index,
 * and for every candidate descriptor its nearest query index; squared L2 on 8-bit RootSIFT.
 *
 * Exactness: integer arithmetic throughout, so the results are bit-identical to the scalar scan in
 * verify.c, ties included (first index wins on both sides). vpdpbusd multiplies unsigned by signed
 * bytes, so the query bytes are stored as q ^ 0x80 = q - 128 (signed) and the candidate bytes stay
 * unsigned: q.c = acc + 128 * sum(c). Candidates are transposed into blocks of 16 (4 bytes of each
 * candidate per 32-bit lane), so one vpdpbusd adds 4 dimensions of 16 pairs with no horizontal
 * sums; query rows are processed 4 at a time so each candidate chunk is loaded once per 4 rows.
 * Only reached after a CPU check (sl__match_scan_vnni returns -2 without AVX-512 VNNI). Plain
 * target attributes (no ifunc), so it is also built and checked under the sanitizers.
 */
#include <stdlib.h>
#include <string.h>
#include "feature/match.h"
#include "util/util.h"

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>

#define SL__VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

/* Row state: lane-wise nearest, second nearest and the nearest's index. */
typedef struct { __m512i d1, d2, i1; } row_state;

SL__VNNI_TARGET static inline void row_update(row_state *s, __m512i d, __m512i idx) {
    __mmask16 lt1 = _mm512_cmplt_epu32_mask(d, s->d1);
    __mmask16 lt2 = _mm512_cmplt_epu32_mask(d, s->d2);
    s->d2 = _mm512_mask_blend_epi32(lt2, s->d2, d);
    s->d2 = _mm512_mask_blend_epi32(lt1, s->d2, s->d1);
    s->d1 = _mm512_mask_blend_epi32(lt1, s->d1, d);
    s->i1 = _mm512_mask_blend_epi32(lt1, s->i1, idx);
}

/* Across lanes: the smallest d1 (first index on ties) and the second smallest overall. */
SL__VNNI_TARGET static inline void row_finish(const row_state *s, uint32_t *bq, uint32_t *d1,
                                              uint32_t *d2) {
    uint32_t m = _mm512_reduce_min_epu32(s->d1);
    __mmask16 eq = _mm512_cmpeq_epu32_mask(s->d1, _mm512_set1_epi32((int)m));
    uint32_t bi = _mm512_mask_reduce_min_epu32(eq, s->i1);
    __mmask16 sel = eq & _mm512_cmpeq_epu32_mask(s->i1, _mm512_set1_epi32((int)bi));
    uint32_t a = _mm512_mask_reduce_min_epu32(sel, s->d2);
    uint32_t b = _mm512_mask_reduce_min_epu32((__mmask16)~sel, s->d1);
    *bq = bi;
    *d1 = m;
    *d2 = a < b ? a : b;
}

SL__VNNI_TARGET static int scan(const uint8_t *qd, uint32_t nq, const uint8_t *cd, uint32_t nc,
                                uint32_t *bq, uint32_t *d1, uint32_t *d2, uint32_t *best_c) {
    enum { D = SL_SIFT_DESC_DIM, K = D / 4 };
    size_t nb = ((size_t)nc + 15) / 16;
    uint8_t *ct = aligned_alloc(64, nb * K * 64);
    int32_t *kc = aligned_alloc(64, nb * 16 * sizeof *kc);      /* |c|^2 - 256 sum(c) */
    uint32_t *bcd = aligned_alloc(64, nb * 16 * sizeof *bcd);   /* nearest query distance */
    uint32_t *bci = aligned_alloc(64, nb * 16 * sizeof *bci);   /* and its index */
    uint8_t *qx = malloc((size_t)nq * D);
    uint32_t *qn = malloc((size_t)nq * sizeof *qn);
    if (!ct || !kc || !bcd || !bci || !qx || !qn) {
        free(ct); free(kc); free(bcd); free(bci); free(qx); free(qn);
        return -1;
    }
    memset(ct, 0, nb * K * 64);
    for (size_t j = 0; j < nb * 16; j++) {
        bcd[j] = UINT32_MAX;
        bci[j] = UINT32_MAX;
        kc[j] = 1 << 30; /* padding lanes: farther than any real distance (< 2^23) */
    }
    for (uint32_t j = 0; j < nc; j++) {
        const uint8_t *c = cd + (size_t)j * D;
        int32_t s = 0, n2 = 0;
        size_t b = j / 16, l = j % 16;
        for (int k = 0; k < K; k++) memcpy(ct + (b * K + (size_t)k) * 64 + l * 4, c + 4 * k, 4);
        for (int i = 0; i < D; i++) { s += c[i]; n2 += c[i] * c[i]; }
        kc[j] = n2 - 256 * s;
    }
    for (uint32_t i = 0; i < nq; i++) {
        const uint8_t *q = qd + (size_t)i * D;
        uint32_t n2 = 0;
        for (int t = 0; t < D; t++) { n2 += (uint32_t)(q[t] * q[t]); qx[(size_t)i * D + t] = q[t] ^ 0x80u; }
        qn[i] = n2;
    }
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (uint32_t i0 = 0; i0 < nq; i0 += 4) {
        uint32_t nr = nq - i0 < 4 ? nq - i0 : 4;
        const uint8_t *q[4];
        row_state rs[4];
        __m512i qnv[4];
        for (uint32_t r = 0; r < 4; r++) {
            q[r] = qx + (size_t)(i0 + (r < nr ? r : 0)) * D;
            rs[r].d1 = rs[r].d2 = _mm512_set1_epi32(-1);
            rs[r].i1 = _mm512_setzero_si512();
            qnv[r] = _mm512_set1_epi32((int)qn[i0 + (r < nr ? r : 0)]);
        }
        for (size_t b = 0; b < nb; b++) {
            const uint8_t *cb = ct + b * K * 64;
            /* even and odd 4-byte groups in separate accumulators: eight independent chains
             * of vpdpbusd instead of four (the latency of a chain bounded the loop); integer
             * sums, so the split changes nothing in the results */
            __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
            __m512i e0 = a0, e1 = a0, e2 = a0, e3 = a0;
            for (int k = 0; k < K; k += 2) {
                __m512i cv = _mm512_load_si512((const void *)(cb + (size_t)k * 64));
                __m512i cw = _mm512_load_si512((const void *)(cb + (size_t)(k + 1) * 64));
                int32_t w0, w1, w2, w3, x0, x1, x2, x3;
                memcpy(&w0, q[0] + 4 * k, 4); memcpy(&w1, q[1] + 4 * k, 4);
                memcpy(&w2, q[2] + 4 * k, 4); memcpy(&w3, q[3] + 4 * k, 4);
                memcpy(&x0, q[0] + 4 * k + 4, 4); memcpy(&x1, q[1] + 4 * k + 4, 4);
                memcpy(&x2, q[2] + 4 * k + 4, 4); memcpy(&x3, q[3] + 4 * k + 4, 4);
                a0 = _mm512_dpbusd_epi32(a0, cv, _mm512_set1_epi32(w0));
                a1 = _mm512_dpbusd_epi32(a1, cv, _mm512_set1_epi32(w1));
                a2 = _mm512_dpbusd_epi32(a2, cv, _mm512_set1_epi32(w2));
                a3 = _mm512_dpbusd_epi32(a3, cv, _mm512_set1_epi32(w3));
                e0 = _mm512_dpbusd_epi32(e0, cw, _mm512_set1_epi32(x0));
                e1 = _mm512_dpbusd_epi32(e1, cw, _mm512_set1_epi32(x1));
                e2 = _mm512_dpbusd_epi32(e2, cw, _mm512_set1_epi32(x2));
                e3 = _mm512_dpbusd_epi32(e3, cw, _mm512_set1_epi32(x3));
            }
            __m512i kv = _mm512_load_si512((const void *)(kc + b * 16));
            __m512i idx = _mm512_add_epi32(iota, _mm512_set1_epi32((int)(b * 16)));
            __m512i acc[4] = {_mm512_add_epi32(a0, e0), _mm512_add_epi32(a1, e1),
                              _mm512_add_epi32(a2, e2), _mm512_add_epi32(a3, e3)};
            __m512i bd = _mm512_load_si512((const void *)(bcd + b * 16));
            __m512i bi = _mm512_load_si512((const void *)(bci + b * 16));
            for (uint32_t r = 0; r < nr; r++) {
                /* |q|^2 + |c|^2 - 2 q.c with q.c = acc + 128 sum(c) */
                __m512i d = _mm512_sub_epi32(_mm512_add_epi32(qnv[r], kv), _mm512_slli_epi32(acc[r], 1));
                row_update(&rs[r], d, idx);
                __mmask16 lt = _mm512_cmplt_epu32_mask(d, bd);
                bd = _mm512_mask_blend_epi32(lt, bd, d);
                bi = _mm512_mask_blend_epi32(lt, bi, _mm512_set1_epi32((int)(i0 + r)));
            }
            _mm512_store_si512((void *)(bcd + b * 16), bd);
            _mm512_store_si512((void *)(bci + b * 16), bi);
        }
        for (uint32_t r = 0; r < nr; r++) row_finish(&rs[r], &bq[i0 + r], &d1[i0 + r], &d2[i0 + r]);
    }
    memcpy(best_c, bci, (size_t)nc * sizeof *best_c);
    free(ct); free(kc); free(bcd); free(bci); free(qx); free(qn);
    return 0;
}

int sl__match_have_vnni(void) {
    static int cached = -1; /* -1 unknown, else 0/1; racing first calls store the same value */
    int have = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (have < 0) {
        __builtin_cpu_init();
        have = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
        __atomic_store_n(&cached, have, __ATOMIC_RELAXED);
    }
    return have;
}

int sl__match_scan_vnni(const uint8_t *qd, uint32_t nq, const uint8_t *cd, uint32_t nc,
                        uint32_t *bq, uint32_t *d1, uint32_t *d2, uint32_t *best_c) {
    if (!sl__match_have_vnni() || nq == 0 || nc == 0) return -2;
    return scan(qd, nq, cd, nc, bq, d1, d2, best_c);
}
#else
int sl__match_have_vnni(void) { return 0; }

int sl__match_scan_vnni(const uint8_t *qd, uint32_t nq, const uint8_t *cd, uint32_t nc,
                        uint32_t *bq, uint32_t *d1, uint32_t *d2, uint32_t *best_c) {
    (void)qd; (void)nq; (void)cd; (void)nc; (void)bq; (void)d1; (void)d2; (void)best_c;
    return -2;
}
#endif
