/*
 * cluster/node.c - a search node (or a router) of a cluster (docs/cluster.md).
 *
 * A search node of shard I of S keeps the products whose id hashes to I (sl__shard_key % S) in
 * a local store (data_dir, the single-node format). It is loaded from a REPEATABLE READ
 * snapshot of the cluster store (with the log position of that snapshot) and then follows the
 * change log: a thread LISTENs for shoplens_log, reads the entries after its position with the
 * current state of their products (one snapshot) and applies them with the new position in one
 * local transaction (sl_engine_replicate). Heartbeats go to the node registry every
 * SL_CLUSTER_BEAT_S seconds with the applied position; the same thread refreshes the list of
 * live replicas the router uses.
 *
 * Invariants:
 *  - The local copy and its recorded position always agree (one transaction), so a node killed
 *    at any point goes on from its position when restarted: no full reload.
 *  - A full copy is made only when there is none, when it is of other features (a features
 *    entry in the log: vectors of every product changed), or when its position is older than
 *    the oldest log entry kept. At runtime it is built beside the current one and swapped in
 *    (llock exclusive); meanwhile the node answers the phases with 503 and routers use another
 *    replica.
 *  - A data directory is used by one node at a time (flock on "<data_dir>.lock") and only ever
 *    replaced when it is a copy of this cluster's shard (meta cluster_id and cluster_shard);
 *    anything else is refused, never deleted.
 *  - The node only answers the phases (ready) while its copy is loaded; a phase request of other
 *    features or another shard count is refused (409), so a router never merges answers of
 *    different features.
 *  - A lost connection to PostgreSQL stops nothing that is already served: searches go on from
 *    the local copy; the follower retries every second and catches up when the server is back.
 */
#include "cluster/cluster_internal.h"
#include "util/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SL__NODE_LOG_BATCH 2000       /* log entries read per round */
#define SL__NODE_SNAPSHOT_BATCH 500   /* products per local transaction of a full copy */

static void sl__node_say(const sl_node *n, const char *fmt, ...) SL__PRINTF(2, 3);
static void sl__node_say(const sl_node *n, const char *fmt, ...) {
    if (!n->o.log) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    n->o.log(n->o.log_ctx, msg);
}

static void sl__sleep_s(double s) {
    struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };
    nanosleep(&ts, NULL);
}

/* ---- the local copy ------------------------------------------------------------------------- */

/* Deletes a directory tree we made (a local copy): regular files and subdirectories. */
static int sl__rm_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? 0 : -1;
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        size_t len = strlen(dir) + strlen(de->d_name) + 2;
        char *p = malloc(len);
        if (!p) {
            rc = -1;
            break;
        }
        snprintf(p, len, "%s/%s", dir, de->d_name);
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) rc |= sl__rm_tree(p);
        else if (unlink(p) != 0 && errno != ENOENT) rc = -1;
        free(p);
    }
    closedir(d);
    if (rmdir(dir) != 0 && errno != ENOENT) rc = -1;
    return rc;
}

/* What a local directory holds: 0 nothing, 1 a copy of this shard of this cluster, -1 anything
 * else (another cluster, shard or no shoplens copy: never touched). *ready, *pos, *fv of a copy. */
static int sl__copy_kind(const sl_node *n, const char *dir, const char *cluster_id, int *ready,
                         int64_t *pos, int64_t *fv, char *why, size_t why_cap) {
    *ready = 0;
    *pos = 0;
    *fv = -1;
    struct stat sb;
    if (stat(dir, &sb) != 0) return 0;
    if (!S_ISDIR(sb.st_mode)) {
        snprintf(why, why_cap, "%s is not a directory", dir);
        return -1;
    }
    DIR *d = opendir(dir);
    int empty = 1;
    struct dirent *de;
    while (d && (de = readdir(d)))
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) empty = 0;
    if (d) closedir(d);
    if (empty) return 0;
    sl_store *s = NULL;
    if (sl_store_open(dir, 0, 1, &s, NULL) != SL_OK) {
        snprintf(why, why_cap, "%s holds something that is not a shard copy of this cluster", dir);
        return -1;
    }
    char *cid = NULL, *sh = NULL, *st = NULL, *lp = NULL, *fvs = NULL;
    (void)sl_store_meta_get(s, "cluster_id", &cid, NULL);
    (void)sl_store_meta_get(s, "cluster_shard", &sh, NULL);
    (void)sl_store_meta_get(s, "replica_state", &st, NULL);
    (void)sl_store_meta_get(s, "log_pos", &lp, NULL);
    (void)sl_store_meta_get(s, "features_version", &fvs, NULL);
    char want[32];
    snprintf(want, sizeof want, "%d/%d", n->o.shard, n->shards);
    int kind = 1;
    if (!cid || strcmp(cid, cluster_id) != 0) {
        snprintf(why, why_cap, "%s holds %s; give this node another --data directory", dir,
                 cid ? "a shard copy of another cluster" : "a store that is not a shard copy");
        kind = -1;
    } else if (!sh || strcmp(sh, want) != 0) {
        snprintf(why, why_cap, "%s holds shard %s of this cluster, not %s; give this node another --data directory",
                 dir, sh ? sh : "?", want);
        kind = -1;
    }
    *ready = st && strcmp(st, "ready") == 0;
    *pos = lp ? strtoll(lp, NULL, 10) : 0;
    *fv = fvs ? strtoll(fvs, NULL, 10) : -1;
    free(cid);
    free(sh);
    free(st);
    free(lp);
    free(fvs);
    sl_store_free(s);
    return kind;
}

typedef struct sl__load {
    sl_node *n;
    sl_engine *e;
    size_t products, images, refs;
} sl__load;

/* Converts product states to replica products (pointing into the states). */
static sl_status sl__to_replica(sl__pg_state *v, size_t n, sl_replica_product **out,
                                sl_replica_image **imgs, sl_error *err) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++) total += v[i].n;
    *out = sl__callocarray(n + 1, sizeof **out);
    *imgs = sl__callocarray(total + 1, sizeof **imgs);
    if (!*out || !*imgs) {
        free(*out);
        free(*imgs);
        return sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        sl_replica_product *rp = &(*out)[i];
        rp->id = v[i].p.id;
        rp->removed = !v[i].exists;
        rp->product = &v[i].p;
        rp->images = *imgs + k;
        rp->n = v[i].n;
        for (size_t j = 0; j < v[i].n; j++, k++) {
            const sl__pg_image *im = &v[i].images[j];
            sl_replica_image *ri = &(*imgs)[k];
            ri->id = im->id;
            ri->source = im->source;
            ri->hash = im->hash;
            ri->size = im->size;
            ri->file = im->file;
            ri->vec = im->vec;
            ri->dim = im->dim;
            ri->local = im->local;
            ri->local_len = im->local_len;
        }
    }
    return SL_OK;
}

static sl_status sl__apply_states(sl_engine *e, sl__pg_state *v, size_t n, int64_t pos, sl_error *err) {
    sl_replica_product *rp = NULL;
    sl_replica_image *ri = NULL;
    sl_status st = sl__to_replica(v, n, &rp, &ri, err);
    if (st != SL_OK) return st;
    char ps[24];
    snprintf(ps, sizeof ps, "%lld", (long long)pos);
    st = sl_engine_replicate(e, rp, n, pos >= 0 ? "log_pos" : NULL, ps, err);
    free(rp);
    free(ri);
    return st;
}

static sl_status sl__load_batch(void *ctx, sl__pg_state *states, size_t n, sl_error *err) {
    sl__load *l = ctx;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < states[i].n; j++) {
            if (states[i].images[j].id >= SL_STORE_REF_ID_BASE) l->refs++;
            else l->images++;
        }
    l->products += n;
    return sl__apply_states(l->e, states, n, -1, err);
}

/* Makes a full copy of the shard in dir (which must not exist): the cluster's features file and
 * meta, then every product of the shard from one snapshot. The copy is left closed, ready. */
static sl_status sl__full_copy(sl_node *n, const char *dir, const char *cluster_id, int64_t *pos_out,
                               sl_error *err) {
    double t0 = sl__now();
    int64_t fv = 0;
    void *fbytes = NULL;
    size_t flen = 0;
    char *spec = NULL, *kind = NULL;
    sl_status st = sl__log_features(&n->pg, &fv, &fbytes, &flen, &spec, err);
    if (st != SL_OK) return st;
    (void)sl__log_meta(&n->pg, "index_kind", &kind, NULL);
    sl_store *s = NULL;
    if ((st = sl_store_open(dir, 1, 0, &s, err)) != SL_OK) goto out;
    char fvs[24], shard[32], fname[48];
    snprintf(fvs, sizeof fvs, "%lld", (long long)fv);
    snprintf(shard, sizeof shard, "%d/%d", n->o.shard, n->shards);
    snprintf(fname, sizeof fname, "features-%lld.bin", (long long)fv);
    if ((st = sl_store_begin(s, err)) != SL_OK) goto out;
    if ((st = sl_store_meta_set(s, "features_spec", spec, err)) != SL_OK ||
        (st = sl_store_meta_set(s, "index_kind", kind ? kind : "auto", err)) != SL_OK ||
        (st = sl_store_meta_set(s, "features_version", fvs, err)) != SL_OK ||
        (st = sl_store_meta_set(s, "cluster_id", cluster_id, err)) != SL_OK ||
        (st = sl_store_meta_set(s, "cluster_shard", shard, err)) != SL_OK ||
        (st = sl_store_meta_set(s, "replica_state", "loading", err)) != SL_OK ||
        (st = sl_store_meta_set(s, "log_pos", "0", err)) != SL_OK) {
        sl_store_rollback(s);
        goto out;
    }
    if ((st = sl_store_commit(s, err)) != SL_OK) goto out;
    if (fv > 0 && (st = sl_store_file_put(s, fname, fbytes, flen, err)) != SL_OK) goto out;
    sl_store_free(s);
    s = NULL;
    sl__load l;
    memset(&l, 0, sizeof l);
    l.n = n;
    if ((st = sl_engine_open(dir, NULL, &l.e, err)) != SL_OK) goto out;
    int64_t pos = 0;
    st = sl__log_snapshot(&n->pg, n->o.shard, n->shards, SL__NODE_SNAPSHOT_BATCH, sl__load_batch, &l, &pos, err);
    if (st == SL_OK) st = sl__apply_states(l.e, NULL, 0, pos, err); /* records the position */
    if (st == SL_OK) st = sl_store_meta_set(sl_engine_store(l.e), "replica_state", "ready", err);
    if (st == SL_OK) st = sl_engine_flush(l.e, err);
    sl_engine_free(l.e);
    if (st == SL_OK) {
        *pos_out = pos;
        sl__node_say(n, "shard %d/%d: copied %zu products, %zu images, %zu references at log position %lld (features %lld) in %.1f s",
                     n->o.shard, n->shards, l.products, l.images, l.refs, (long long)pos, (long long)fv, sl__now() - t0);
    }
out:
    sl_store_free(s);
    free(fbytes);
    free(spec);
    free(kind);
    return st;
}

/* Reads the cluster's id, features version and log start, then opens the local copy: as it is
 * when it is current enough, else a new full copy in its place. Caller holds llock exclusively
 * (or nothing runs yet). */
static sl_status sl__open_copy(sl_node *n, int force, sl_error *err) {
    char *cid = NULL;
    sl_status st = sl__log_meta(&n->pg, "cluster_id", &cid, err);
    if (st != SL_OK) return st;
    char *fvs = NULL;
    int64_t cfv = sl__log_meta(&n->pg, "features_version", &fvs, NULL) == SL_OK ? strtoll(fvs, NULL, 10) : 0;
    free(fvs);
    int ready = 0;
    int64_t pos = 0, fv = -1;
    char why[1024] = "";
    int kind = sl__copy_kind(n, n->data_dir, cid, &ready, &pos, &fv, why, sizeof why);
    if (kind < 0) {
        free(cid);
        return sl__err_set(err, SL_E_STATE, "%s", why);
    }
    sl__log_batch probe;
    memset(&probe, 0, sizeof probe);
    /* the oldest position the log still has (a copy behind it missed entries) */
    if (kind == 1 && ready && fv == cfv && !force) {
        if ((st = sl__log_read(&n->pg, pos, n->o.shard, n->shards, 1, &probe, err)) != SL_OK) {
            free(cid);
            return st;
        }
        int behind = pos + 1 < probe.start;
        int features = probe.features;
        sl__log_batch_free(&probe);
        if (!behind && !features) {
            st = sl_engine_open(n->data_dir, NULL, &n->local, err);
            if (st == SL_OK) {
                if (n->o.hnsw_ef) sl_engine_set_hnsw_ef(n->local, n->o.hnsw_ef);
                atomic_store(&n->log_pos, pos);
                sl__node_say(n, "shard %d/%d: the local copy in %s is at log position %lld; catching up",
                             n->o.shard, n->shards, n->data_dir, (long long)pos);
            }
            free(cid);
            return st;
        }
    }
    /* a new full copy, built beside the directory and moved in */
    size_t len = strlen(n->data_dir) + 16;
    char *next = malloc(len), *old = malloc(len);
    if (!next || !old) {
        free(next);
        free(old);
        free(cid);
        return sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    snprintf(next, len, "%s.next", n->data_dir);
    snprintf(old, len, "%s.old", n->data_dir);
    (void)sl__rm_tree(next);
    int64_t npos = 0;
    st = sl__full_copy(n, next, cid, &npos, err);
    if (st == SL_OK) {
        atomic_fetch_add(&n->verified, sl_engine_verifications(n->local));
        sl_engine_free(n->local);
        n->local = NULL;
        (void)sl__rm_tree(old);
        if (kind == 1 && rename(n->data_dir, old) != 0)
            st = sl__err_set(err, SL_E_IO, "rename %s: %s", n->data_dir, strerror(errno));
        else if (kind == 0) rmdir(n->data_dir); /* an empty directory given by the user */
        if (st == SL_OK && rename(next, n->data_dir) != 0)
            st = sl__err_set(err, SL_E_IO, "rename %s to %s: %s", next, n->data_dir, strerror(errno));
        if (st == SL_OK) st = sl_engine_open(n->data_dir, NULL, &n->local, err);
        if (st == SL_OK && n->o.hnsw_ef) sl_engine_set_hnsw_ef(n->local, n->o.hnsw_ef);
        if (st == SL_OK) atomic_store(&n->log_pos, npos);
        (void)sl__rm_tree(old);
    } else {
        (void)sl__rm_tree(next);
    }
    free(next);
    free(old);
    free(cid);
    return st;
}

/* One round of following the log: reads what came after the position and applies it. *more is
 * set when there may be more to read at once. */
static sl_status sl__follow(sl_node *n, int *more, sl_error *err) {
    *more = 0;
    int64_t pos = atomic_load(&n->log_pos);
    sl__log_batch b;
    sl_status st = sl__log_read(&n->pg, pos, n->o.shard, n->shards, SL__NODE_LOG_BATCH, &b, err);
    if (st != SL_OK) return st;
    if (b.features || pos + 1 < b.start) {
        sl__log_batch_free(&b);
        sl__node_say(n, "shard %d/%d: %s: making a new copy", n->o.shard, n->shards,
                     b.features ? "the cluster's features changed" : "the log no longer reaches back to this copy");
        atomic_store(&n->ready, 0);
        pthread_rwlock_wrlock(&n->llock);
        /* the cluster store's engine describes queries: it must have the new features too */
        st = sl_engine_refresh(n->cluster, err);
        if (st == SL_OK) st = sl__open_copy(n, 1, err);
        pthread_rwlock_unlock(&n->llock);
        if (st == SL_OK) atomic_store(&n->ready, 1);
        *more = st == SL_OK;
        return st;
    }
    if (b.n || b.pos != pos) {
        pthread_rwlock_rdlock(&n->llock);
        st = sl__apply_states(n->local, b.states, b.n, b.pos, err);
        pthread_rwlock_unlock(&n->llock);
        if (st == SL_OK) atomic_store(&n->log_pos, b.pos);
    }
    *more = st == SL_OK && b.entries >= SL__NODE_LOG_BATCH;
    sl__log_batch_free(&b);
    return st;
}

/* ---- heartbeats and the replica list --------------------------------------------------------- */

void sl__node_set_replicas(sl_node *n, const sl__node_row *rows, size_t nrows, int keep_old) {
    sl__replica *v = sl__callocarray(nrows + 1, sizeof *v);
    if (!v) return;
    size_t k = 0;
    pthread_mutex_lock(&n->mu);
    for (size_t i = 0; i < nrows; i++) {
        const sl__node_row *r = &rows[i];
        if (strcmp(r->role, "search") != 0 || r->shards != n->shards || !*r->url) continue;
        int known = 0;
        for (size_t j = 0; keep_old && j < n->n_replicas && !known; j++) known = strcmp(n->replicas[j].name, r->name) == 0;
        if (r->age_s >= SL_CLUSTER_ALIVE_S && !known) continue;
        v[k].name = sl__strdup(r->name);
        v[k].url = sl__strdup(r->url);
        v[k].shard = r->shard;
        double down = 0;
        for (size_t j = 0; j < n->n_replicas; j++)
            if (strcmp(n->replicas[j].name, r->name) == 0) down = atomic_load(&n->replicas[j].down_until);
        atomic_store(&v[k].down_until, down);
        if (!v[k].name || !v[k].url) {
            free(v[k].name);
            free(v[k].url);
            continue;
        }
        k++;
    }
    for (size_t j = 0; j < n->n_replicas; j++) {
        free(n->replicas[j].name);
        free(n->replicas[j].url);
    }
    free(n->replicas);
    n->replicas = v;
    n->n_replicas = k;
    pthread_mutex_unlock(&n->mu);
}

static sl_status sl__beat(sl_node *n, sl_error *err) {
    if (n->shards == 0) { /* a router learns the shard count from the first search node */
        char *s = NULL;
        if (sl__log_meta(&n->pg, "shards", &s, NULL) == SL_OK) n->shards = atoi(s);
        free(s);
    }
    if (n->o.shards == 0) { /* a router follows no log: it looks for new features at each beat */
        char *fvs = NULL;
        if (sl__log_meta(&n->pg, "features_version", &fvs, NULL) == SL_OK &&
            strtoll(fvs, NULL, 10) != sl_engine_features_version(n->cluster)) {
            sl_status st = sl_engine_refresh(n->cluster, err);
            if (st != SL_OK) {
                free(fvs);
                return st;
            }
            sl__node_say(n, "router: the cluster's features changed: now version %lld",
                         (long long)sl_engine_features_version(n->cluster));
        }
        free(fvs);
    }
    sl__node_row me;
    memset(&me, 0, sizeof me);
    me.name = n->name;
    me.role = n->o.shards > 0 ? "search" : "router";
    me.url = n->url;
    me.host = n->host;
    me.pid = (int)getpid();
    me.shard = n->o.shard;
    me.shards = n->o.shards;
    me.log_pos = atomic_load(&n->log_pos);
    sl_status st = SL_OK;
    if (n->o.shards == 0 || atomic_load(&n->ready)) st = sl__nodes_beat(&n->pg, &me, err);
    sl__node_row *rows = NULL;
    size_t nr = 0;
    double now = sl__now();
    if (n->pg.connects != n->seen_connects) { /* reconnected (maybe inside a retried statement) */
        n->seen_connects = n->pg.connects;
        n->pg_back = now;
    }
    if (st == SL_OK && (st = sl__nodes_list(&n->pg, &rows, &nr, err)) == SL_OK)
        sl__node_set_replicas(n, rows, nr, now - n->pg_back < SL_CLUSTER_ALIVE_S + 2 * SL_CLUSTER_BEAT_S);
    sl__node_rows_free(rows, nr);
    return st;
}

static void *sl__node_main(void *arg) {
    sl_node *n = arg;
    double last_beat = -1e9;
    int trouble = 0;
    while (!atomic_load(&n->stop)) {
        sl_error err;
        sl_error_clear(&err);
        int more = 0;
        sl_status st = SL_OK;
        if (n->o.shards > 0) st = sl__follow(n, &more, &err);
        double now = sl__now();
        if (st == SL_OK && now - last_beat >= SL_CLUSTER_BEAT_S) {
            st = sl__beat(n, &err);
            if (st == SL_OK) last_beat = now;
        }
        if (st != SL_OK) {
            if (!trouble) sl__node_say(n, "%s (searches go on from the local copy; retrying every second)", err.message);
            trouble = 1;
            sl__sleep_s(1.0);
            continue;
        }
        if (trouble) {
            n->pg_back = sl__now();
            sl__node_say(n, "PostgreSQL answers again; at log position %lld", (long long)atomic_load(&n->log_pos));
        }
        trouble = 0;
        if (more) continue;
        double wait = SL_CLUSTER_BEAT_S - (sl__now() - last_beat);
        if (sl__pgc_wait(&n->pg, wait > 0.05 ? wait : 0.05) < 0) sl__sleep_s(0.2);
    }
    return NULL;
}

/* ---- the phases ------------------------------------------------------------------------------ */

sl_status sl__node_phase(void *ctx, const char *op, const void *body, size_t len, char **json,
                         sl_error *err) {
    sl_node *n = ctx;
    *json = NULL;
    int rerank = strcmp(op, "rerank") == 0;
    if (!rerank && strcmp(op, "candidates") != 0) return sl__err_set(err, SL_E_NOT_FOUND, "no phase '%s'", op);
    if (n->o.shards == 0) return sl__err_set(err, SL_E_NOT_FOUND, "a router keeps no shard");
    sl__phase_req r;
    sl_status st = sl__phase_req_parse(body, len, rerank, &r, err);
    if (st != SL_OK) return st;
    pthread_rwlock_rdlock(&n->llock);
    if (!atomic_load(&n->ready) || !n->local) {
        st = sl__err_set(err, SL_E_BUSY, "shard %d/%d is loading its copy", n->o.shard, n->shards);
    } else if (r.shard != n->o.shard || r.shards != n->shards) {
        st = sl__err_set(err, SL_E_STATE, "this node serves shard %d/%d, not %d/%d", n->o.shard, n->shards, r.shard, r.shards);
    } else if (r.features_version != sl_engine_features_version(n->local)) {
        st = sl__err_set(err, SL_E_STATE, "this node has features version %lld, the query %lld",
                         (long long)sl_engine_features_version(n->local), (long long)r.features_version);
    } else if (!rerank) {
        sl_candidate **lists = sl__callocarray(r.nq, sizeof *lists);
        size_t *counts = sl__callocarray(r.nq, sizeof *counts);
        if (!lists || !counts) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        else st = sl_engine_candidates(n->local, r.vecs, r.nq, r.dim, &r.q, r.exclude, r.candidates, lists, counts, err);
        int64_t entries = 0, refs = 0;
        sl_engine_index_counts(n->local, &entries, &refs);
        if (st == SL_OK && !(*json = sl__phase_lists_json(atomic_load(&n->log_pos), entries, refs, lists, counts, r.nq)))
            st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        sl_candidate_lists_clear(lists, counts, r.nq);
        free(lists);
        free(counts);
    } else if (r.fold_parts) {
        sl_ref_fold_part *parts = sl__callocarray(r.nq, sizeof *parts);
        if (!parts) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        else st = sl_engine_rerank_fold_parts(n->local, (const void *const *)r.locals, r.local_lens, r.nq, r.lists,
                                              r.counts, parts, err);
        if (st == SL_OK && !(*json = sl__phase_parts_json(parts, r.lists, r.counts, r.nq)))
            st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        for (size_t i = 0; parts && i < r.nq; i++) sl_ref_fold_part_clear(&parts[i]);
        free(parts);
    } else {
        sl_matches m;
        st = sl_engine_rerank_folded(n->local, (const void *const *)r.locals, r.local_lens, r.nq, r.lists, r.counts,
                                     r.folds, &r.q, r.depth, &m, err);
        if (st == SL_OK && !(*json = sl__phase_matches_json(&m))) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        sl_matches_free(&m);
    }
    pthread_rwlock_unlock(&n->llock);
    sl__phase_req_clear(&r);
    return st;
}

/* The verifications of the shard's copies (sl_server_router.verifications). Never waits while
 * the copy is replaced (llock held exclusively for as long as a full copy takes): the highest
 * count reported so far then, so that the counter never goes back. */
static uint64_t sl__node_verifications(void *ctx) {
    sl_node *n = ctx;
    uint64_t v = atomic_load(&n->verified_seen);
    if (pthread_rwlock_tryrdlock(&n->llock) != 0) return v;
    uint64_t now = atomic_load(&n->verified) + sl_engine_verifications(n->local);
    pthread_rwlock_unlock(&n->llock);
    while (now > v && !atomic_compare_exchange_weak(&n->verified_seen, &v, now)) {}
    return now > v ? now : v;
}

/* ---- open / start / free --------------------------------------------------------------------- */

sl_engine *sl_node_engine(sl_node *n) { return n->cluster; }
const sl_server_router *sl_node_router(sl_node *n) { return &n->hook; }
int64_t sl_node_log_pos(const sl_node *n) { return atomic_load(&((sl_node *)n)->log_pos); }

void sl_node_free(sl_node *n) {
    if (!n) return;
    if (n->started) {
        atomic_store(&n->stop, 1);
        pthread_join(n->th, NULL);
    }
    sl__router_free(n->router);
    sl_engine_free(n->local);
    sl_engine_free(n->cluster);
    sl__pgc_close(&n->pg);
    for (size_t j = 0; j < n->n_replicas; j++) {
        free(n->replicas[j].name);
        free(n->replicas[j].url);
    }
    free(n->replicas);
    if (n->lock_fd >= 0) close(n->lock_fd);
    pthread_rwlock_destroy(&n->llock);
    pthread_mutex_destroy(&n->mu);
    free(n->store_url);
    free(n->data_dir);
    free(n->name);
    free(n->url);
    free(n->host);
    free(n);
}

/* mkdir -p of the directories above path. */
static void sl__mkdir_parents(const char *path) {
    char *p = sl__strdup(path);
    for (char *c = p ? p + 1 : NULL; c && *c; c++) {
        if (*c != '/') continue;
        *c = '\0';
        (void)mkdir(p, 0755);
        *c = '/';
    }
    free(p);
}

/* A random id for a new cluster (128 bits from the kernel, hex). */
static void sl__random_id(char out[33]) {
    unsigned char b[16] = {0};
    FILE *f = fopen("/dev/urandom", "rb");
    size_t got = f ? fread(b, 1, sizeof b, f) : 0;
    if (f) fclose(f);
    if (got != sizeof b) { /* no /dev/urandom: time and pid, unique enough for a label */
        uint64_t t = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
        memcpy(b, &t, sizeof t);
    }
    for (int i = 0; i < 16; i++) snprintf(out + 2 * i, 3, "%02x", b[i]);
}

sl_status sl_node_open(const sl_node_opts *o, sl_node **out, sl_error *err) {
    *out = NULL;
    if (!o || !o->store || !sl_store_is_url(o->store))
        return sl__err_set(err, SL_E_INVALID, "a node needs a cluster store (postgresql://...)");
    if (o->shards < 0 || o->shards > SL_CLUSTER_SHARDS_MAX || (o->shards > 0 && (o->shard < 0 || o->shard >= o->shards)))
        return sl__err_set(err, SL_E_INVALID, "bad shard %d/%d: I/S with 0 <= I < S <= %d", o->shard, o->shards,
                           SL_CLUSTER_SHARDS_MAX);
    sl_node *n = calloc(1, sizeof *n);
    if (!n) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    n->o = *o;
    n->lock_fd = -1;
    pthread_rwlock_init(&n->llock, NULL);
    pthread_mutex_init(&n->mu, NULL);
    n->hook.ctx = n;
    n->hook.search = sl__router_search;
    n->hook.shard = sl__node_phase;
    n->hook.verifications = sl__node_verifications;
    char host[96] = "localhost";
    (void)gethostname(host, sizeof host - 1);
    n->host = sl__strdup(host);
    n->store_url = sl__strdup(o->store);
    n->url = sl__strdup("");
    sl_status st = n->host && n->store_url && n->url ? SL_OK : sl__err_set(err, SL_E_NOMEM, "out of memory");
    sl_engine_opts eo;
    memset(&eo, 0, sizeof eo);
    eo.no_index = 1;
    if (st == SL_OK) st = sl_engine_open(o->store, &eo, &n->cluster, err);
    if (st == SL_OK) st = sl__pgc_open(&n->pg, o->store, err);
    if (st == SL_OK) st = sl__pgc_listen(&n->pg, "shoplens_log", err);
    char *v = NULL;
    char id[33];
    sl__random_id(id);
    if (st == SL_OK) st = sl__log_meta_init(&n->pg, "cluster_id", id, &v, err);
    free(v);
    v = NULL;
    if (st == SL_OK && o->shards > 0) {
        char want[16];
        snprintf(want, sizeof want, "%d", o->shards);
        if ((st = sl__log_meta_init(&n->pg, "shards", want, &v, err)) == SL_OK && strcmp(v, want) != 0)
            st = sl__err_set(err, SL_E_STATE, "the cluster has %s shards (set by its first search node); this node "
                             "was started with --shard %d/%d", v, o->shard, o->shards);
        n->shards = o->shards;
        free(v);
    } else if (st == SL_OK && sl__log_meta(&n->pg, "shards", &v, NULL) == SL_OK) {
        n->shards = atoi(v);
        free(v);
    }
    if (st == SL_OK && o->shards > 0) {
        char dflt[64];
        snprintf(dflt, sizeof dflt, "shoplens-shard-%d-of-%d", o->shard, o->shards);
        n->data_dir = sl__strdup(o->data_dir && *o->data_dir ? o->data_dir : dflt);
        size_t len = n->data_dir ? strlen(n->data_dir) + 8 : 0;
        char *lock = len ? malloc(len) : NULL;
        if (!lock) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        else {
            snprintf(lock, len, "%s.lock", n->data_dir);
            sl__mkdir_parents(lock);
            n->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
            if (n->lock_fd < 0) st = sl__err_set(err, SL_E_IO, "%s: %s", lock, strerror(errno));
            else if (flock(n->lock_fd, LOCK_EX | LOCK_NB) != 0)
                st = sl__err_set(err, SL_E_BUSY, "%s is used by another node on this machine (%s is locked)", n->data_dir, lock);
            free(lock);
        }
        if (st == SL_OK) st = sl__open_copy(n, 0, err);
        /* catch up before answering anything */
        int more = 1;
        while (st == SL_OK && more) st = sl__follow(n, &more, err);
        if (st == SL_OK) atomic_store(&n->ready, 1);
    }
    if (st == SL_OK) st = sl__router_new(n, &n->router, err);
    if (st != SL_OK) {
        sl_node_free(n);
        return st;
    }
    *out = n;
    return SL_OK;
}

sl_status sl_node_start(sl_node *n, const char *url, sl_error *err) {
    free(n->url);
    n->url = sl__strdup(url ? url : "");
    const char *hp = url && strstr(url, "://") ? strstr(url, "://") + 3 : (url ? url : "");
    char dflt[256];
    snprintf(dflt, sizeof dflt, "%.*s", (int)strcspn(hp, "/"), hp);
    free(n->name);
    n->name = sl__strdup(n->o.name && *n->o.name ? n->o.name : dflt);
    if (!n->url || !n->name) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    sl_error berr;
    sl_error_clear(&berr);
    if (sl__beat(n, &berr) != SL_OK) sl__node_say(n, "first heartbeat: %s", berr.message);
    if (pthread_create(&n->th, NULL, sl__node_main, n) != 0)
        return sl__err_set(err, SL_E_INTERNAL, "cannot start the log follower thread");
    n->started = 1;
    return SL_OK;
}
