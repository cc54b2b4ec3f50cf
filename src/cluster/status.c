/*
 * cluster/status.c - the status of a cluster for `shoplens info`: the change log's head, the
 * ingest queue, the shard count and every registered node with the age of its heartbeat.
 */
#include "shoplens/cluster.h"
#include "catalog/pg.h"
#include "util/util.h"

#include <stdlib.h>
#include <string.h>

void sl_cluster_status_clear(sl_cluster_status *st) {
    if (!st) return;
    for (size_t i = 0; i < st->n_nodes; i++) {
        free(st->nodes[i].name);
        free(st->nodes[i].role);
        free(st->nodes[i].url);
        free(st->nodes[i].host);
    }
    free(st->nodes);
    memset(st, 0, sizeof *st);
}

sl_status sl_cluster_status_get(sl_store *s, sl_cluster_status *out, sl_error *err) {
    memset(out, 0, sizeof *out);
    sl__pg *p = sl__store_pg(s);
    if (!p) return sl__err_set(err, SL_E_UNSUPPORTED, "%s is not a cluster store", sl_store_dir(s));
    sl_status st = sl_store_generation(s, &out->log_head, err);
    sl__queue_status q;
    if (st == SL_OK) st = sl__jobs_status(s, &q, err);
    if (st != SL_OK) return st;
    out->queued = q.queued;
    out->done = q.done;
    out->failed = q.failed;
    char *shards = NULL;
    if (sl_store_meta_get(s, "shards", &shards, NULL) == SL_OK) out->shards = atoi(shards);
    free(shards);
    sl__pgc *c = sl__pg_acquire_reader(p);
    sl__node_row *rows = NULL;
    size_t n = 0;
    st = sl__nodes_list(c, &rows, &n, err);
    sl__pg_release(p, c);
    if (st != SL_OK) return st;
    out->nodes = sl__callocarray(n + 1, sizeof *out->nodes);
    if (!out->nodes) {
        sl__node_rows_free(rows, n);
        return sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        sl_cluster_node *d = &out->nodes[i];
        /* the strings move over */
        d->name = rows[i].name;
        d->role = rows[i].role;
        d->url = rows[i].url;
        d->host = rows[i].host;
        rows[i].name = rows[i].role = rows[i].url = rows[i].host = NULL;
        d->pid = rows[i].pid;
        d->shard = rows[i].shard;
        d->shards = rows[i].shards;
        d->log_pos = rows[i].log_pos;
        d->age_s = rows[i].age_s;
        d->alive = rows[i].age_s < SL_CLUSTER_ALIVE_S;
    }
    out->n_nodes = n;
    sl__node_rows_free(rows, n);
    return SL_OK;
}
