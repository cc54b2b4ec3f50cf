/*
 * engine/lcache.c - a bounded LRU cache of the stored local features of catalog images, as
 * verification reads them (deserialized, checksum checked): a search verifies its top
 * candidates, and popular products are candidates of many searches, so most of those reads
 * (an SQLite lookup, a copy, a CRC-32 and a decode per candidate) can be skipped.
 *
 * Invariants:
 *  - Entries belong to one state of the catalog: the cache remembers the store generation and
 *    the features version it was filled under and empties itself when a lookup or insert comes
 *    with another pair (a write committed, a refresh or a retraining happened). Callers hold
 *    the engine lock shared, so both values are stable during one search. A negative
 *    generation (the engine is behind another process) bypasses the cache.
 *  - An entry handed out is referenced; eviction only unlinks it, and the last release frees
 *    it, so a search never sees its features freed under it. Entries are immutable.
 *  - Memory: the summed size of linked entries stays <= max_bytes (entries larger than that are
 *    never linked). One mutex guards the table and the LRU list.
 */
#include "engine/lcache.h"
#include "util/util.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct sl__lref {
    int64_t id;
    sl_local_features *lf;
    size_t bytes;
    int refs;
    int linked;                 /* in the table and the LRU list */
    struct sl__lref *hnext;     /* hash chain */
    struct sl__lref *prev, *next; /* LRU list: head = most recent */
};

struct sl__lcache {
    pthread_mutex_t mu;
    size_t max_bytes, bytes, count;
    int64_t gen, fver;
    sl__lref **tab;
    size_t nb;                  /* buckets, a power of two (0 until the first insert) */
    sl__lref *head, *tail;
    uint64_t hits, misses;
};

sl__lcache *sl__lcache_new(size_t max_bytes) {
    sl__lcache *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    if (pthread_mutex_init(&c->mu, NULL) != 0) {
        free(c);
        return NULL;
    }
    c->max_bytes = max_bytes;
    c->gen = -1;
    return c;
}

static size_t sl__bucket(const sl__lcache *c, int64_t id) {
    uint64_t h = (uint64_t)id * 0x9e3779b97f4a7c15ULL;
    return (size_t)(h >> 32) & (c->nb - 1);
}

static void sl__lref_free(sl__lref *r) {
    sl_local_features_free(r->lf);
    free(r);
}

/* Unlinks r from table and list; frees it when nobody holds it. Caller holds mu. */
static void sl__unlink(sl__lcache *c, sl__lref *r) {
    sl__lref **pp = &c->tab[sl__bucket(c, r->id)];
    while (*pp && *pp != r) pp = &(*pp)->hnext;
    if (*pp) *pp = r->hnext;
    if (r->prev) r->prev->next = r->next;
    else c->head = r->next;
    if (r->next) r->next->prev = r->prev;
    else c->tail = r->prev;
    r->prev = r->next = r->hnext = NULL;
    r->linked = 0;
    c->bytes -= r->bytes;
    c->count--;
    if (r->refs == 0) sl__lref_free(r);
}

static void sl__clear_locked(sl__lcache *c) {
    while (c->tail) sl__unlink(c, c->tail);
}

/* Empties the cache when (gen, fver) is another catalog state. Caller holds mu. */
static void sl__epoch(sl__lcache *c, int64_t gen, int64_t fver) {
    if (c->gen == gen && c->fver == fver) return;
    sl__clear_locked(c);
    c->gen = gen;
    c->fver = fver;
}

static void sl__to_front(sl__lcache *c, sl__lref *r) {
    if (c->head == r) return;
    if (r->prev) r->prev->next = r->next;
    if (r->next) r->next->prev = r->prev;
    else c->tail = r->prev;
    r->prev = NULL;
    r->next = c->head;
    if (c->head) c->head->prev = r;
    c->head = r;
    if (!c->tail) c->tail = r;
}

sl__lref *sl__lcache_get(sl__lcache *c, int64_t gen, int64_t fver, int64_t id) {
    if (!c || gen < 0 || c->max_bytes == 0) return NULL;
    pthread_mutex_lock(&c->mu);
    sl__epoch(c, gen, fver);
    sl__lref *r = c->nb ? c->tab[sl__bucket(c, id)] : NULL;
    while (r && r->id != id) r = r->hnext;
    if (r) {
        r->refs++;
        sl__to_front(c, r);
        c->hits++;
    } else {
        c->misses++;
    }
    pthread_mutex_unlock(&c->mu);
    return r;
}

/* Doubles the table when it holds more entries than buckets. Caller holds mu. */
static void sl__grow(sl__lcache *c) {
    if (c->nb && c->count < c->nb) return;
    size_t nb = c->nb ? c->nb * 2 : 1024;
    sl__lref **t = sl__callocarray(nb, sizeof *t);
    if (!t) return; /* longer chains, still correct */
    for (size_t i = 0; i < c->nb; i++)
        for (sl__lref *r = c->tab[i], *nx; r; r = nx) {
            nx = r->hnext;
            size_t b = (size_t)(((uint64_t)r->id * 0x9e3779b97f4a7c15ULL) >> 32) & (nb - 1);
            r->hnext = t[b];
            t[b] = r;
        }
    free(c->tab);
    c->tab = t;
    c->nb = nb;
}

sl__lref *sl__lcache_put(sl__lcache *c, int64_t gen, int64_t fver, int64_t id,
                         sl_local_features *lf) {
    if (!lf) return NULL;
    sl__lref *r = calloc(1, sizeof *r);
    if (!r) {
        sl_local_features_free(lf);
        return NULL;
    }
    r->id = id;
    r->lf = lf;
    r->refs = 1;
    /* the entry and the set with its arrays and the matching kernel's prepared forms */
    r->bytes = sizeof *r + sl_local_features_bytes(lf);
    if (!c || gen < 0 || r->bytes > c->max_bytes) return r; /* not cached: freed on release */
    pthread_mutex_lock(&c->mu);
    sl__epoch(c, gen, fver);
    sl__grow(c);
    if (!c->nb) { /* no table: serve uncached */
        pthread_mutex_unlock(&c->mu);
        return r;
    }
    size_t b = sl__bucket(c, id);
    sl__lref *old = c->tab[b];
    while (old && old->id != id) old = old->hnext;
    if (old) { /* another search read it meanwhile: share that one */
        old->refs++;
        sl__to_front(c, old);
        pthread_mutex_unlock(&c->mu);
        sl__lref_free(r);
        return old;
    }
    while (c->tail && c->bytes + r->bytes > c->max_bytes) sl__unlink(c, c->tail);
    r->hnext = c->tab[b];
    c->tab[b] = r;
    r->linked = 1;
    r->next = c->head;
    if (c->head) c->head->prev = r;
    c->head = r;
    if (!c->tail) c->tail = r;
    c->bytes += r->bytes;
    c->count++;
    pthread_mutex_unlock(&c->mu);
    return r;
}

const sl_local_features *sl__lref_features(const sl__lref *r) { return r ? r->lf : NULL; }

void sl__lcache_release(sl__lcache *c, sl__lref *r) {
    if (!r) return;
    if (!c) {
        sl__lref_free(r);
        return;
    }
    pthread_mutex_lock(&c->mu);
    int drop = --r->refs == 0 && !r->linked;
    pthread_mutex_unlock(&c->mu);
    if (drop) sl__lref_free(r);
}

void sl__lcache_stats(sl__lcache *c, sl__lcache_info *out) {
    memset(out, 0, sizeof *out);
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    out->bytes = c->bytes;
    out->max_bytes = c->max_bytes;
    out->entries = c->count;
    out->hits = c->hits;
    out->misses = c->misses;
    pthread_mutex_unlock(&c->mu);
}

void sl__lcache_set_max(sl__lcache *c, size_t max_bytes) {
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    c->max_bytes = max_bytes;
    while (c->tail && c->bytes > c->max_bytes) sl__unlink(c, c->tail);
    pthread_mutex_unlock(&c->mu);
}

void sl__lcache_free(sl__lcache *c) {
    if (!c) return;
    sl__clear_locked(c); /* no search runs any more: every entry is unreferenced */
    free(c->tab);
    pthread_mutex_destroy(&c->mu);
    free(c);
}
