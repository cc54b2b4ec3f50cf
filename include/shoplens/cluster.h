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

#ifdef __cplusplus
}
#endif
#endif
