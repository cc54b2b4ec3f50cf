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

void sl__maxheap_push(sl__heap *h, sl__pair p) {
    size_t i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!(h->a[parent].d < p.d)) break;
        h->a[i] = h->a[parent];
        i = parent;
    }
    h->a[i] = p;
}

void sl__maxheap_pop(sl__heap *h) {
    sl__pair last = h->a[--h->n];
    size_t i = 0, n = h->n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && h->a[c + 1].d > h->a[c].d) c++;
        if (!(h->a[c].d > last.d)) break;
        h->a[i] = h->a[c];
        i = c;
    }
    if (n) h->a[i] = last;
}

void sl__minheap_push(sl__heap *h, sl__pair p) {
    size_t i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!(h->a[parent].d > p.d)) break;
        h->a[i] = h->a[parent];
        i = parent;
    }
    h->a[i] = p;
}

void sl__minheap_pop(sl__heap *h) {
    sl__pair last = h->a[--h->n];
    size_t i = 0, n = h->n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && h->a[c + 1].d < h->a[c].d) c++;
        if (!(h->a[c].d < last.d)) break;
        h->a[i] = h->a[c];
        i = c;
    }
    if (n) h->a[i] = last;
}

/* Ascending by distance (NaN last), ties by slot: a total order, so sorting is deterministic. */
int sl__pair_cmp(const void *a, const void *b) {
    const sl__pair *x = a, *y = b;
    int xn = x->d != x->d, yn = y->d != y->d;
    if (xn != yn) return xn - yn;
    if (!xn && x->d != y->d) return x->d < y->d ? -1 : 1;
    return (x->s > y->s) - (x->s < y->s);
}

/* ---- scratch pool ---------------------------------------------------------------------- */

void sl__scratch_free(sl__scratch *s) {
    if (!s) return;
    free(s->tags);
    free(s->cand.a);
    free(s->res.a);
    free(s->q);
    free(s->qu);
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

static inline uint16_t sl__next_epoch(sl__scratch *s) {
    if (++s->epoch == 0) {
        memset(s->tags, 0, s->ntags * sizeof *s->tags);
        s->epoch = 1;
    }
    return s->epoch;
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

int sl__search_layer(sl_index *idx, sl__scratch *s, const sl__query *q, const float *v,
                     uint32_t self, uint32_t ep, int level, size_t ef, const sl__filt *filt) {
    uint16_t epoch = sl__next_epoch(s);
    uint16_t *tags = s->tags;
    uint32_t n = (uint32_t)idx->n;
    int maxdeg = sl__maxdeg(idx, level);
    s->cand.n = 0;
    s->res.n = 0;
    if (sl__heap_reserve(&s->res, ef + 2) != 0) return -1;
    float d = sl__d(idx, q, v, ep);
    tags[ep] = epoch;
    sl__minheap_push(&s->cand, (sl__pair){ d, ep });
    float lower = __builtin_inff();
    if (ep != self && !idx->dead[ep] && (!filt || sl__filt_pass(idx, filt, ep))) {
        sl__maxheap_push(&s->res, (sl__pair){ d, ep });
        lower = d;
    }
    while (s->cand.n) {
        sl__pair c = s->cand.a[0];
        if (c.d > lower && s->res.n >= ef) break;
        sl__minheap_pop(&s->cand);
        if (level == 0 && s->cand.n) __builtin_prefetch(sl__links(idx, s->cand.a[0].s, 0), 0, 3);
        if (level > idx->levels[c.s]) continue;
        const uint32_t *l = sl__links(idx, c.s, level);
        uint32_t cnt = __atomic_load_n(&l[0], __ATOMIC_ACQUIRE);
        if (cnt > (uint32_t)maxdeg) cnt = (uint32_t)maxdeg;
        size_t nn = 0;
        for (uint32_t j = 0; j < cnt; j++) {
            uint32_t x = __atomic_load_n(&l[1 + j], __ATOMIC_RELAXED);
            if (x >= n || tags[x] == epoch) continue;
            tags[x] = epoch;
            s->nb[nn++] = x;
            sl__prefetch_vec(idx, q, x);
        }
        if (sl__heap_reserve(&s->cand, s->cand.n + nn + 1) != 0) return -1;
        for (size_t j = 0; j < nn; j++) {
            uint32_t x = s->nb[j];
            float dx = sl__d(idx, q, v, x);
            if (s->res.n < ef || dx < lower) {
                sl__minheap_push(&s->cand, (sl__pair){ dx, x });
                if (x != self && !idx->dead[x] && (!filt || sl__filt_pass(idx, filt, x))) {
                    sl__maxheap_push(&s->res, (sl__pair){ dx, x });
                    if (s->res.n > ef) sl__maxheap_pop(&s->res);
                    lower = s->res.a[0].d;
                }
            }
        }
    }
    return 0;
}

int sl__hnsw_search(sl_index *idx, sl__scratch *s, const sl__query *q, size_t ef,
                    const sl__filt *filt) {
    s->res.n = 0;
    uint64_t ep = atomic_load(&idx->ep);
    if (ep == SL__EP_EMPTY) return 0;
    uint32_t cur = sl__greedy(idx, q, NULL, (uint32_t)ep, (int)(ep >> 32), 0);
    return sl__search_layer(idx, s, q, NULL, SL__NO_SLOT, cur, 0, ef, filt);
}
