/*
 * cluster/cluster_internal.h - what the files of the cluster module share (not public):
 *   node.c     a node: the shard's local copy, the thread that follows the change log and
 *              beats the heart, the answers to the two search phases
 *   router.c   the scatter-gather of a search over one live replica of every shard
 *   proto.c    the JSON of the two phases (docs/cluster.md), both sides
 *   status.c   sl_cluster_status_get
 */
#ifndef SL_CLUSTER_INTERNAL_H
#define SL_CLUSTER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "shoplens/cluster.h"
#include "shoplens/engine.h"
#include "shoplens/index.h"
#include "shoplens/server.h"
#include "catalog/pg.h"

/* ---- the phases on the wire (proto.c) ------------------------------------------------------- */

/* A phase request, decoded. Vectors and local features are raw bytes (base64 on the wire). */
typedef struct sl__phase_req {
    int shard, shards;
    int64_t features_version;
    sl_query q;               /* filters, text and its mode, k and offset (strings point into
                                 `json`) */
    const char *exclude;      /* candidates: the product whose images never count (similar) */
    size_t candidates;        /* candidates: depth per query vector */
    size_t depth;             /* rerank: products to return */
    size_t nq, dim;
    float *vecs;              /* candidates: nq x dim */
    void **locals;            /* rerank: nq serialized local features (entries may be NULL) */
    size_t *local_lens;
    sl_candidate **lists;     /* rerank: nq lists (entries may come re-ranked: phase 2b) */
    size_t *counts;
    int fold_parts;           /* rerank: answer the references' fold parts (phase 2a) */
    sl_ref_fold *folds;       /* rerank: nq folds of the whole lists (phase 2b), or NULL */
    json_t *json;             /* the parsed document the strings point into */
} sl__phase_req;

void sl__phase_req_clear(sl__phase_req *r);
/* Parses a request body (SL_E_INVALID naming what is wrong). */
sl_status sl__phase_req_parse(const void *body, size_t len, int rerank, sl__phase_req *r,
                              sl_error *err);

/* Builds a request (malloc'ed JSON text). */
char *sl__phase_candidates_json(int shard, int shards, int64_t fv, const sl_query *q,
                                const char *exclude, size_t candidates, const float *vecs,
                                size_t nq, size_t dim);
/* parts: ask for the fold parts (phase 2a); folds (may be NULL): nq folds to re-rank with. */
char *sl__phase_rerank_json(int shard, int shards, int64_t fv, const sl_query *q, size_t depth,
                            void *const *locals, const size_t *local_lens, size_t nq,
                            sl_candidate *const *lists, const size_t *counts, int parts,
                            const sl_ref_fold *folds);

/* Answers (malloc'ed JSON text) and their parsers. */
/* Candidates, with the shard index's entries and references (sl_engine_index_counts; an
 * answer without them parses as 0, 0). */
char *sl__phase_lists_json(int64_t log_pos, int64_t entries, int64_t refs, sl_candidate *const *lists,
                           const size_t *counts, size_t nq);
sl_status sl__phase_lists_parse(const char *json, size_t len, size_t nq, sl_candidate **lists,
                                size_t *counts, int64_t *entries, int64_t *refs, sl_error *err);
/* The answer of phase 2a: the fold parts, nq of them, and (lists not NULL) the lists as
 * sl_engine_rerank_fold_parts re-ranked them ("scored": each candidate's score and inliers).
 * The parser fills parts[] (cleared on failure) and, when lists is not NULL and the answer has
 * "scored" (nodes of older builds do not send it), re-ranks lists[i][0..counts[i]) in place
 * with them; a "scored" that does not match the lists fails the whole answer. */
char *sl__phase_parts_json(const sl_ref_fold_part *parts, sl_candidate *const *lists, const size_t *counts,
                           size_t nq);
sl_status sl__phase_parts_parse(const char *json, size_t len, size_t nq, sl_ref_fold_part *parts,
                                sl_candidate *const *lists, const size_t *counts, sl_error *err);
char *sl__phase_matches_json(const sl_matches *m);
/* Appends the matches of an answer to *m. */
sl_status sl__phase_matches_parse(const char *json, size_t len, sl_matches *m, sl_error *err);

/* ---- the node (node.c) and the router (router.c) -------------------------------------------- */

typedef struct sl__replica {
    char *name, *url;
    int shard;
    _Atomic double down_until; /* a failed call: avoided until then (monotonic seconds) */
} sl__replica;

typedef struct sl__router sl__router;

struct sl_node {
    sl_node_opts o;
    char *store_url, *data_dir, *name, *url, *host;
    sl_engine *cluster;       /* the cluster store, no index: writes, reads, describing queries */
    sl_engine *local;         /* the shard's copy (NULL for a router) */
    pthread_rwlock_t llock;   /* held shared while `local` is used, exclusively to replace it */
    int lock_fd;              /* flock of the data directory */
    _Atomic int64_t log_pos;  /* applied change log position */
    _Atomic int ready;        /* the local copy is current (answers the phases) */
    _Atomic uint64_t verified;/* verifications of local copies replaced meanwhile (metrics) */
    _Atomic uint64_t verified_seen; /* the highest count /metrics reported */
    int shards;               /* the cluster's shard count */
    sl__pgc pg;               /* the follower's connection (LISTEN shoplens_log) */
    pthread_t th;
    int started;
    _Atomic int stop;
    sl__router *router;
    sl_server_router hook;
    /* the replicas of every shard, refreshed from the node list */
    pthread_mutex_t mu;
    sl__replica *replicas;
    size_t n_replicas;
    _Atomic unsigned rr;      /* round robin */
    double pg_back;           /* when the heartbeats got through again after a failure */
    unsigned seen_connects;   /* pg.connects at the last heartbeat */
};

/* The merge of phase 1: lists[s][qi] (counts[s][qi] entries; counts[s] NULL for a shard that
 * did not answer) are shard s's candidates for query vector qi, each by (score, image id); the
 * best nc of all shards per query vector, in that order, the first vt flagged for verification,
 * are handed out per shard: (*per)[s][qi], (*pcount)[s][qi] (free with sl__merged_free). */
sl_status sl__merge_candidates(size_t shards, size_t nq, sl_candidate ***lists, size_t **counts,
                               size_t nc, size_t vt, sl_candidate ****per, size_t ***pcount,
                               sl_error *err);
void sl__merged_free(sl_candidate ***per, size_t **pcount, size_t shards, size_t nq);

sl_status sl__router_new(sl_node *n, sl__router **out, sl_error *err);
void sl__router_free(sl__router *r);
/* The search hook (sl_server_router.search). */
sl_status sl__router_search(void *ctx, const void *image, size_t len, const char *product_id,
                            const sl_query *q, sl_matches *out, sl_server_search_info *info,
                            sl_error *err);
/* The phase hook (sl_server_router.shard). */
sl_status sl__node_phase(void *ctx, const char *op, const void *body, size_t len, char **json,
                         sl_error *err);
/* Replaces the replica list from the node registry (node.c calls it every heartbeat); keep_old:
 * replicas of the old list stay even when their heartbeat is old (PostgreSQL was away: the
 * others may not have beaten again yet). */
void sl__node_set_replicas(sl_node *n, const sl__node_row *rows, size_t nrows, int keep_old);

#endif
