/*
 * index/hnsw_layer.h - the layer search of HNSW (Malkov & Yashunin, arXiv 1603.09320,
 * Algorithm 2), written once and instantiated per distance implementation: hnsw_search.c
 * includes it for the portable path (kernels through the table, any storage) and
 * hnsw_search_avx512.c for float32 storage with the AVX-512 kernels inlined and the dimension a
 * compile-time constant (128, 512) where it matches. No include guard on purpose.
 *
 * Before including, define:
 *   SL__LAYER_NAME        the function's name (it is static)
 *   SL__LAYER_DIST(x)     traversal distance (lower is better) of slot x; may use idx, q, v and
 *                         qv (the float32 traversal vector: the prepared query, or v in a build)
 *   SL__LAYER_PREFETCH(x) prefetch (the start of) what SL__LAYER_DIST(x) will read, issued for
 *                         all unvisited neighbours of a node before any distance is computed
 *   SL__LAYER_PREFETCH_NEXT(x)  optional: prefetch the rest, issued one distance ahead
 *
 * Invariants (as documented in hnsw_search.c): visited tags with epochs; neighbour lists read
 * with atomic loads and every id checked against n; removed and filtered-out slots are traversed
 * but never enter the results; results are capped at ef; the search stops when ef passing items
 * are held and the nearest candidate is worse than all of them. Each expansion first collects
 * the unvisited neighbours and prefetches their vectors, then computes the distances.
 */
static int SL__LAYER_NAME(sl_index *idx, sl__scratch *s, const sl__query *q, const float *v,
                          uint32_t self, uint32_t ep, int level, size_t ef, const sl__filt *filt) {
    uint16_t epoch = sl__next_epoch(s);
    uint16_t *tags = s->tags;
    uint32_t n = (uint32_t)idx->n;
    uint32_t maxdeg = (uint32_t)sl__maxdeg(idx, level);
    int any_dead = idx->n_dead != 0;
    const uint8_t *dead = idx->dead;
    uint32_t *nb = s->nb;
    const float *qv = q ? q->q : v;
    (void)qv;
    s->cand.n = 0;
    s->res.n = 0;
    if (sl__heap_reserve(&s->res, ef + 2) != 0) return -1;
    float d = SL__LAYER_DIST(ep);
    tags[ep] = epoch;
    sl__minheap_push(&s->cand, (sl__pair){ d, ep });
    float lower = __builtin_inff();
    if (ep != self && !dead[ep] && (!filt || sl__filt_pass(idx, filt, ep))) {
        sl__maxheap_push(&s->res, (sl__pair){ d, ep });
        lower = d;
    }
    while (s->cand.n) {
        sl__pair c = s->cand.a[0];
        if (c.d > lower && s->res.n >= ef) break;
        sl__minheap_pop(&s->cand);
        if (level == 0 && s->cand.n) __builtin_prefetch(sl__links(idx, s->cand.a[0].s, 0), 0, 3);
        if (level && level > idx->levels[c.s]) continue;
        const uint32_t *l = sl__links(idx, c.s, level);
        uint32_t cnt = __atomic_load_n(&l[0], __ATOMIC_ACQUIRE);
        if (cnt > maxdeg) cnt = maxdeg;
        size_t nn = 0;
        for (uint32_t j = 0; j < cnt; j++) {
            uint32_t x = __atomic_load_n(&l[1 + j], __ATOMIC_RELAXED);
            if (x >= n || tags[x] == epoch) continue;
            tags[x] = epoch;
            nb[nn++] = x;
            SL__LAYER_PREFETCH(x);
        }
        if (sl__heap_reserve(&s->cand, s->cand.n + nn + 1) != 0) return -1;
        for (size_t j = 0; j < nn; j++) {
            uint32_t x = nb[j];
#ifdef SL__LAYER_PREFETCH_NEXT
            if (j + 1 < nn) SL__LAYER_PREFETCH_NEXT(nb[j + 1]);
#endif
            float dx = SL__LAYER_DIST(x);
            if (s->res.n < ef || dx < lower) {
                sl__minheap_push(&s->cand, (sl__pair){ dx, x });
                if (x != self && !(any_dead && dead[x]) && (!filt || sl__filt_pass(idx, filt, x))) {
                    if (s->res.n < ef) sl__maxheap_push(&s->res, (sl__pair){ dx, x });
                    else sl__maxheap_replace_top(&s->res, (sl__pair){ dx, x });
                    lower = s->res.a[0].d;
                }
            }
        }
    }
    return 0;
}

#undef SL__LAYER_NAME
#undef SL__LAYER_DIST
#undef SL__LAYER_PREFETCH
#undef SL__LAYER_PREFETCH_NEXT
