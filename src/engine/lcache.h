/*
 * engine/lcache.h - bounded LRU cache of catalog images' deserialized local features, used by
 * verification (lcache.c has the invariants). Internal to the engine.
 */
#ifndef SL_ENGINE_LCACHE_H
#define SL_ENGINE_LCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "shoplens/feature.h"

typedef struct sl__lcache sl__lcache;
typedef struct sl__lref sl__lref;   /* a referenced entry */

typedef struct sl__lcache_info {
    size_t bytes, max_bytes, entries;
    uint64_t hits, misses;
} sl__lcache_info;

/* A cache holding at most max_bytes (0: caches nothing). NULL when out of memory. */
sl__lcache *sl__lcache_new(size_t max_bytes);
/* Frees the cache; no entry may still be referenced. NULL is a no-op. */
void sl__lcache_free(sl__lcache *c);
/* Image id's features cached for catalog state (gen, fver), referenced (release it), or NULL.
 * A state other than the cache's empties it first; gen < 0 never hits. c may be NULL. */
sl__lref *sl__lcache_get(sl__lcache *c, int64_t gen, int64_t fver, int64_t id);
/* Takes ownership of lf (read for image id under state (gen, fver)), caches it when it fits
 * and returns a reference to release: to lf, or to an equal entry another search inserted
 * first (lf is then freed). NULL only when lf is NULL or out of memory (lf freed). */
sl__lref *sl__lcache_put(sl__lcache *c, int64_t gen, int64_t fver, int64_t id,
                         sl_local_features *lf);
/* The features of a reference (valid until it is released). */
const sl_local_features *sl__lref_features(const sl__lref *r);
/* Drops a reference from get/put (c the same cache, may be NULL when it was). NULL r: no-op. */
void sl__lcache_release(sl__lcache *c, sl__lref *r);
/* Shrinks or grows the budget (evicting the least recently used entries). */
void sl__lcache_set_max(sl__lcache *c, size_t max_bytes);
void sl__lcache_stats(sl__lcache *c, sl__lcache_info *out);

#endif
