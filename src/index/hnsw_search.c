/*
 * index/hnsw_search.c - HNSW graph search (Malkov & Yashunin, arXiv 1603.09320, Algorithms 2
 * and 5): greedy descent through the upper layers, then a best-first beam search of width ef on
 * layer 0. Also the heaps and the pool of per-search scratch space.
 *
 * Invariants and speed notes:
 * - The visited set is a uint16 tag per slot compared with a per-search epoch, so starting a
 *   search costs nothing; tags are cleared only when the epoch wraps (every 65535 searches).
 * - Neighbour lists are read with atomic loads (count with acquire) and every neighbour id is
 *   checked against n, so a list being rewritten by the writer is read as a valid old or new
 *   list, never as garbage. Each expansion first collects the unvisited neighbours and prefetches
 *   their vectors, then computes the distances (memory-level parallelism).
 * - Removed slots are traversed (they keep the graph connected) but never enter the results;
 *   filtered-out slots likewise. Results are capped at ef; the search continues until ef passing
 *   items are held and the nearest candidate is worse than all of them.
 */
#include "index/index_impl.h"

#include <stdlib.h>
#include <string.h>

/* ---- heaps ----------------------------------------------------------------------------- */

int sl__heap_reserve(sl__heap *h, size_t cap) {
    if (cap <= h->cap) return 0;
    size_t nc = h->cap ? h->cap : 64;
    while (nc < cap) nc *= 2;
    sl__pair *a = sl__reallocarray(h->a, nc, sizeof *a);
    if (!a) return -1;
    h->a = a;
    h->cap = nc;
    return 0;
}

/* Ascending by distance (NaN last), ties by slot: a total order, so sorting is deterministic. */
int sl__pair_cmp(const void *a, const void *b) {
    const sl__pair *x = a, *y = b;
    int xn = x->d != x->d, yn = y->d != y->d;
    if (xn != yn) return xn - yn;
    if (!xn && x->d != y->d) return x->d < y->d ? -1 : 1;
    return (x->s > y->s) - (x->s < y->s);
}

void sl__pair_sort(sl__pair *a, size_t n) {
    if (n > 64) { qsort(a, n, sizeof *a, sl__pair_cmp); return; }
    for (size_t i = 1; i < n; i++) {
        sl__pair t = a[i];
        size_t j = i;
        while (j > 0 && sl__pair_cmp(&t, &a[j - 1]) < 0) { a[j] = a[j - 1]; j--; }
        a[j] = t;
    }
}

/* ---- scratch pool ---------------------------------------------------------------------- */

void sl__scratch_free(sl__scratch *s) {
    if (!s) return;
    free(s->tags);
    free(s->cand.a);
    free(s->res.a);
    free(s->q);
    free(s->qu);
    free(s->q4);
    free(s->nb);
    free(s->tmp);
    free(s);
}

sl__scratch *sl__scratch_get(sl_index *idx) {
    sl__scratch *s = NULL;
    pthread_mutex_lock(&idx->pool_mu);
    if (idx->npool) s = idx->pool[--idx->npool];
    pthread_mutex_unlock(&idx->pool_mu);
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s) return NULL;
        s->q = sl__mallocarray((size_t)idx->dim, sizeof(float));
        s->qu = malloc((size_t)idx->dim);
        s->nb = sl__mallocarray((size_t)idx->M0 + 1, sizeof(uint32_t));
        if (!s->q || !s->qu || !s->nb || sl__heap_reserve(&s->cand, 256) || sl__heap_reserve(&s->res, 256)) {
            sl__scratch_free(s);
            return NULL;
        }
    }
    if (s->ntags < idx->n) {
        size_t nt = idx->n + idx->n / 4 + 64;
        uint16_t *t = sl__reallocarray(s->tags, nt, sizeof *t);
        if (!t) { sl__scratch_put(idx, s); return NULL; }
        memset(t, 0, nt * sizeof *t);
        s->tags = t;
        s->ntags = nt;
        s->epoch = 0;
    }
    return s;
}

void sl__scratch_put(sl_index *idx, sl__scratch *s) {
    pthread_mutex_lock(&idx->pool_mu);
    if (idx->npool == idx->cappool) {
        size_t nc = idx->cappool ? idx->cappool * 2 : 8;
        sl__scratch **p = sl__reallocarray(idx->pool, nc, sizeof *p);
        if (!p) { pthread_mutex_unlock(&idx->pool_mu); sl__scratch_free(s); return; }
        idx->pool = p;
        idx->cappool = nc;
    }
    idx->pool[idx->npool++] = s;
    pthread_mutex_unlock(&idx->pool_mu);
}

/* ---- search ---------------------------------------------------------------------------- */

static inline float sl__d(const sl_index *idx, const sl__query *q, const float *v, uint32_t x) {
    return q ? sl__dist_query(idx, q, x) : sl__dist_vec(idx, v, x);
}

#define SL__PREFETCH_BYTES 512
static inline void sl__prefetch_vec(const sl_index *idx, const sl__query *q, uint32_t x) {
    const char *p;
    size_t bytes;
    if (q && q->use_codes) { p = (const char *)idx->codes + (size_t)x * idx->code_size; bytes = idx->code_size; }
    else { p = (const char *)(idx->vec + (size_t)x * (size_t)idx->dim); bytes = (size_t)idx->dim * 4; }
    if (bytes > SL__PREFETCH_BYTES) bytes = SL__PREFETCH_BYTES;
    for (size_t o = 0; o < bytes; o += 64) __builtin_prefetch(p + o, 0, 3);
}

uint32_t sl__greedy(const sl_index *idx, const sl__query *q, const float *v, uint32_t cur,
                    int from_level, int to_level) {
    float curd = sl__d(idx, q, v, cur);
    uint32_t n = (uint32_t)idx->n;
    for (int lev = from_level; lev > to_level; lev--) {
        int changed = 1;
        while (changed) {
            changed = 0;
            if (lev > idx->levels[cur]) break;
            const uint32_t *l = sl__links(idx, cur, lev);
            uint32_t cnt = __atomic_load_n(&l[0], __ATOMIC_ACQUIRE);
            if (cnt > (uint32_t)idx->M) cnt = (uint32_t)idx->M;
            for (uint32_t j = 0; j < cnt; j++) {
                uint32_t x = __atomic_load_n(&l[1 + j], __ATOMIC_RELAXED);
                if (x >= n) continue;
                float d = sl__d(idx, q, v, x);
                if (d < curd) { curd = d; cur = x; changed = 1; }
            }
        }
    }
    return cur;
}

/* The portable instantiation of the layer search (any storage; kernels through idx->K). */
#define SL__LAYER_NAME sl__search_layer_generic
#define SL__LAYER_DIST(x) sl__d(idx, q, v, (x))
#define SL__LAYER_PREFETCH(x) sl__prefetch_vec(idx, q, (x))
#include "index/hnsw_layer.h"

int sl__search_layer(sl_index *idx, sl__scratch *s, const sl__query *q, const float *v,
                     uint32_t self, uint32_t ep, int level, size_t ef, const sl__filt *filt) {
    if (idx->layer_f32 && !(q && q->use_codes))
        return idx->layer_f32(idx, s, q, v, self, ep, level, ef, filt);
    return sl__search_layer_generic(idx, s, q, v, self, ep, level, ef, filt);
}

int sl__hnsw_search(sl_index *idx, sl__scratch *s, const sl__query *q, size_t ef,
                    const sl__filt *filt) {
    s->res.n = 0;
    uint64_t ep = atomic_load(&idx->ep);
    if (ep == SL__EP_EMPTY) return 0;
    uint32_t cur = sl__greedy(idx, q, NULL, (uint32_t)ep, (int)(ep >> 32), 0);
    return sl__search_layer(idx, s, q, NULL, SL__NO_SLOT, cur, 0, ef, filt);
}
