/*
 * shoplens/cluster.h - a cluster on PostgreSQL (docs/cluster.md): a cluster store (a store whose
 * --store is a "postgresql://" URL, store.h) is the system of record; workers describe the
 * products `add` queues (engine.h, sl_engine_work); search nodes each keep the products of one
 * shard in memory, loaded from PostgreSQL and kept current from its change log; any node, or a
 * router, answers a search by asking one live replica of every shard and merging their answers
 * into exactly the list a single store with the same features gives.
 *
 * This header: the status of a cluster (for `shoplens info`), the search node and the router.
 * Thread safety: a node or router may be used from any number of threads.
 * Ownership: structs filled by these functions are released with their *_clear / *_free.
 */
#ifndef SHOPLENS_CLUSTER_H
#define SHOPLENS_CLUSTER_H

#include <stddef.h>
#include <stdint.h>
#include "shoplens/error.h"
#include "shoplens/store.h"
#include "shoplens/server.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A node is alive while its last heartbeat (every SL_CLUSTER_BEAT_S seconds) is younger than
 * SL_CLUSTER_ALIVE_S (by PostgreSQL's clock, so machines' clocks do not matter). */
#define SL_CLUSTER_BEAT_S 1.0
#define SL_CLUSTER_ALIVE_S 5.0
#define SL_CLUSTER_SHARDS_MAX 1024

/* ---- status ------------------------------------------------------------------------------- */

typedef struct sl_cluster_node {
    char *name;               /* unique in the cluster */
    char *role;               /* "search" (a shard's replica), "router", "worker" */
    char *url;                /* where a search node or router answers ("" for a worker) */
    char *host;
    int pid;
    int shard, shards;        /* a search node's shard i of S (-1 / 0 otherwise) */
    int64_t log_pos;          /* the change log position a search node has applied */
    double age_s;             /* seconds since its last heartbeat */
    int alive;
} sl_cluster_node;

typedef struct sl_cluster_status {
    int64_t log_head;         /* position of the last committed change */
    int shards;               /* the cluster's number of shards (0 before the first node) */
    int64_t queued, done, failed; /* ingest jobs */
    sl_cluster_node *nodes;   /* by role, shard, name */
    size_t n_nodes;
} sl_cluster_status;

/* Reads the status of the cluster whose store s is (SL_E_UNSUPPORTED for a SQLite store). */
sl_status sl_cluster_status_get(sl_store *s, sl_cluster_status *out, sl_error *err);
void sl_cluster_status_clear(sl_cluster_status *st);

/* ---- search nodes and routers ---------------------------------------------------------------
 * `shoplens serve --store postgresql://... --shard I/S` (a search node) and `--router`. A node
 * keeps a local copy of its shard (a SQLite store in data_dir: the products whose id hashes to
 * shard I, their vectors and local features, read from the cluster store and kept current from
 * its change log; on restart it goes on from the position it had), answers the two phases of a
 * distributed search for its shard, and like a router answers /v1/search by asking one live
 * replica of every shard. Writes and product reads over its HTTP API go to the cluster store. */

typedef struct sl_node sl_node;

#define SL_NODE_TIMEOUT_MS_DEFAULT 3000
#define SL_NODE_TIMEOUT_MS_MIN 50
#define SL_NODE_TIMEOUT_MS_MAX 600000

typedef struct sl_node_opts {
    const char *store;        /* the cluster store (a PostgreSQL URL) */
    int shard, shards;        /* serve shard `shard` (0..shards-1) of `shards`; shards = 0: a
                                 router, which keeps no shard */
    const char *data_dir;     /* the shard's local copy (default ./shoplens-shard-I-of-S); a
                                 directory of another cluster or shard is refused */
    const char *name;         /* in the node list (default host:port, known at sl_node_start) */
    int timeout_ms;           /* a replica must answer a phase within this (0: the default),
                                 else the next replica of its shard is asked */
    int hnsw_ef;              /* a search node: the HNSW ef of its shard's searches that give
                                 none (sl_engine_set_hnsw_ef on the local copy; 0: the engine's
                                 default); a search's own (sl_query.ef) reaches it from the
                                 router. Ignored by a router. */
    void (*log)(void *ctx, const char *message); /* what the node does and meets; may be NULL */
    void *log_ctx;
} sl_node_opts;

/* Opens a node: connects to the cluster store, loads its features, and for a search node brings
 * the local copy of its shard up to the log's head (a full copy when there is none or it is of
 * other features; else only the changes after its position) before returning. The cluster's
 * shard count is recorded by the first search node; another S is refused (SL_E_STATE).
 * Errors: SL_E_BUSY (PostgreSQL unreachable), SL_E_STATE, SL_E_NOT_FOUND (no cluster store),
 * SL_E_IO (data_dir). On failure *out = NULL. */
sl_status sl_node_open(const sl_node_opts *o, sl_node **out, sl_error *err);
/* The engine to serve (sl_server_new): the cluster store, for product reads and writes. */
sl_engine *sl_node_engine(sl_node *n);
/* The hook to serve searches and the search phases with (sl_server_opts.router). */
const sl_server_router *sl_node_router(sl_node *n);
/* Starts following the change log and the heartbeats, announcing url (where the server of this
 * node answers, e.g. "http://10.0.0.5:8080") to the routers. */
sl_status sl_node_start(sl_node *n, const char *url, sl_error *err);
/* The change log position the local copy reflects (0 for a router). */
int64_t sl_node_log_pos(const sl_node *n);
/* Stops the follower (the local copy keeps its position for the next start) and frees. */
void sl_node_free(sl_node *n);

#ifdef __cplusplus
}
#endif
#endif
