/*
 * catalog/pg.h - internals of the PostgreSQL store (not public): the connection wrapper every
 * libpq user of shoplens goes through, the PostgreSQL implementation of the store operations
 * (store_pg.c; store.c dispatches to them for a "postgresql://" store), the job queue of the
 * distributed ingest (pg_jobs.c) and the change log, snapshots and node registry the search
 * nodes read (pg_log.c). Schema: docs/formats/cluster.md.
 *
 * Every SQL statement shoplens sends to PostgreSQL is in these three files, so the schema has
 * one owner. Results are requested in binary format (bytea without hex decoding); parameters
 * are text except bytea, which is sent as binary.
 */
#ifndef SL_CATALOG_PG_H
#define SL_CATALOG_PG_H

#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

#include "shoplens/store.h"

/* ---- connections ---------------------------------------------------------------------------- */

/* One libpq connection that reconnects by itself: when the server went away (restart, network),
 * the next sl__pgc_ok resets it (channels it listened to are listened to again). Not
 * thread-safe: one user at a time. */
typedef struct sl__pgc {
    char *conninfo;
    char *label;              /* the URL without its password, for messages */
    PGconn *conn;
    char listen[4][40];       /* channels to LISTEN to again after a reconnect */
    int n_listen;
    int keep_going;           /* set while a transaction is open: no silent reconnect */
    unsigned connects;        /* connections made (a change: the server was away meanwhile) */
} sl__pgc;

/* Connects (SL_E_BUSY when the server cannot be reached, SL_E_INVALID for a bad URL). Every
 * session uses the schema "shoplens" (search_path) and the client encoding UTF8. */
sl_status sl__pgc_open(sl__pgc *c, const char *conninfo, sl_error *err);
void sl__pgc_close(sl__pgc *c);
/* A working connection: reconnects when it was lost. SL_E_BUSY when the server is down. */
sl_status sl__pgc_ok(sl__pgc *c, sl_error *err);
/* Runs sql with n parameters (vals[i] NULL = SQL NULL; bins[i] nonzero: vals[i] is lens[i] raw
 * bytes for a bytea; lens and bins may be NULL = all text). Binary results. Returns the result
 * (PQclear it) or NULL with err set: SL_E_BUSY for a lost connection, a serialization failure
 * or a deadlock (retry), SL_E_EXISTS for a unique violation, SL_E_IO otherwise. */
PGresult *sl__pgc_exec(sl__pgc *c, const char *sql, int n, const char *const *vals,
                       const int *lens, const int *bins, sl_error *err);
/* sl__pgc_exec for statements without a result worth keeping. */
sl_status sl__pgc_run(sl__pgc *c, const char *sql, int n, const char *const *vals, sl_error *err);
/* Runs several statements without parameters (schema migrations). */
sl_status sl__pgc_script(sl__pgc *c, const char *sql, sl_error *err);
/* LISTEN channel (remembered for reconnects). */
sl_status sl__pgc_listen(sl__pgc *c, const char *channel, sl_error *err);
/* Waits up to timeout_s for a notification on a listened channel: 1 when one (or more) came, 0
 * on timeout, or a negative status when the connection failed. */
int sl__pgc_wait(sl__pgc *c, double timeout_s);

/* Binary result values. */
int64_t sl__pgv_i64(const PGresult *r, int row, int col);
double sl__pgv_f64(const PGresult *r, int row, int col);
const char *sl__pgv_str(const PGresult *r, int row, int col);
char *sl__pgv_dup(const PGresult *r, int row, int col);   /* malloc'ed, "" for NULL */
int sl__pgv_null(const PGresult *r, int row, int col);

/* "{...}" literals of a bigint[] / text[] parameter (malloc'ed; NULL when out of memory). */
char *sl__pg_int_array(const int64_t *v, size_t n);
char *sl__pg_text_array(const char *const *v, size_t n);

/* Nonzero for a libpq connection URI ("postgresql://" or "postgres://"). */
int sl__pg_is_url(const char *s);
/* The shard key of a product id: the top 31 bits of its 64-bit FNV-1a hash. A product belongs
 * to shard (key % S) of a cluster of S shards. */
int32_t sl__shard_key(const char *product_id);

/* ---- the store operations (store.c dispatches to these for a PostgreSQL store) -------------- */

typedef struct sl__pg sl__pg;

sl_status sl__pg_open(const char *url, int create, int read_only, sl__pg **out, sl_error *err);
void sl__pg_free(sl__pg *p);
const char *sl__pg_label(const sl__pg *p);
const char *sl__pg_conninfo(const sl__pg *p);
sl_status sl__pg_meta_get(sl__pg *p, const char *key, char **value, sl_error *err);
sl_status sl__pg_meta_set(sl__pg *p, const char *key, const char *value, sl_error *err);
sl_status sl__pg_begin(sl__pg *p, sl_error *err);
sl_status sl__pg_commit(sl__pg *p, sl_error *err);
void sl__pg_rollback(sl__pg *p);
sl_status sl__pg_put_product(sl__pg *p, const sl_product *prod, sl_error *err);
sl_status sl__pg_get_product(sl__pg *p, const char *id, sl_product *out, sl_error *err);
sl_status sl__pg_remove_product(sl__pg *p, const char *id, int64_t **removed, size_t *n_removed,
                                sl_error *err);
sl_status sl__pg_add_image(sl__pg *p, int64_t want_id, const char *product_id, const char *source,
                           const char *hash, int64_t size, const char *file, const float *vec,
                           size_t dim, const void *local, size_t local_len, int64_t *id,
                           sl_error *err);
sl_status sl__pg_remove_image(sl__pg *p, int64_t image_id, sl_error *err);
sl_status sl__pg_set_image_file(sl__pg *p, int64_t image_id, const char *file, sl_error *err);
sl_status sl__pg_set_image_features(sl__pg *p, int64_t image_id, const float *vec, size_t dim,
                                    const void *local, size_t local_len, sl_error *err);
sl_status sl__pg_gc(sl__pg *p, size_t *deleted, sl_error *err);
sl_status sl__pg_pending_files(sl__pg *p, char ***files, size_t *n, sl_error *err);
sl_status sl__pg_orphan_files(sl__pg *p, int remove, char ***names, size_t *n, sl_error *err);
sl_status sl__pg_image_products(sl__pg *p, const int64_t *ids, size_t n, char ***products,
                                sl_error *err);
sl_status sl__pg_product_images(sl__pg *p, const char *product_id, sl_image_ref **refs,
                                size_t *n, sl_error *err);
sl_status sl__pg_get_image(sl__pg *p, int64_t image_id, sl_image_ref *ref, sl_error *err);
sl_status sl__pg_image_features(sl__pg *p, int64_t image_id, float **vec, size_t *dim,
                                void **local, size_t *local_len, sl_error *err);
sl_status sl__pg_image_local(sl__pg *p, int64_t image_id, void **local, size_t *local_len,
                             sl_error *err);
sl_status sl__pg_each_vector(sl__pg *p, sl_store_vector_fn fn, void *ctx, sl_error *err);
/* References (store.h): the table refs, schema 3; index id = SL_STORE_REF_ID_BASE + refs.id.
 * sl__pg_replace_refs needs the caller's transaction and names every product that had or gets
 * references in the change log. */
sl_status sl__pg_replace_refs(sl__pg *p, const sl_store_ref *refs, size_t n, size_t dim,
                              sl_error *err);
sl_status sl__pg_each_ref_vector(sl__pg *p, sl_store_vector_fn fn, void *ctx, sl_error *err);
sl_status sl__pg_product_ref_ids(sl__pg *p, const char *product_id, int64_t **ids, size_t *n,
                                 sl_error *err);
sl_status sl__pg_count_refs(sl__pg *p, int64_t *n, sl_error *err);
sl_status sl__pg_ref_of_source(sl__pg *p, const char *product_id, const char *source, int64_t *id,
                               sl_error *err);
sl_status sl__pg_product_ids(sl__pg *p, char ***ids, size_t *n, sl_error *err);
sl_status sl__pg_filter_images(sl__pg *p, const sl_store_filter *f, int64_t **ids, size_t *n,
                               sl_error *err);
sl_status sl__pg_list_products(sl__pg *p, const sl_store_filter *f, const char *after,
                               size_t limit, sl_product **out, size_t *n, int *more,
                               sl_error *err);
sl_status sl__pg_count_products(sl__pg *p, const sl_store_filter *f, int64_t *n, sl_error *err);
sl_status sl__pg_check(sl__pg *p, char ***problems, size_t *n, sl_error *err);
sl_status sl__pg_categories(sl__pg *p, char ***names, int64_t **counts, size_t *n,
                            sl_error *err);
sl_status sl__pg_counts(sl__pg *p, sl_store_counts *c, sl_error *err);
sl_status sl__pg_generation(sl__pg *p, int64_t *gen, sl_error *err);
sl_status sl__pg_file_put(sl__pg *p, const char *name, const void *data, size_t len,
                          sl_error *err);
sl_status sl__pg_file_get(sl__pg *p, const char *name, size_t max, void **data, size_t *len,
                          sl_error *err);
int64_t sl__pg_file_size(sl__pg *p, const char *name);
sl_status sl__pg_lock_product(sl__pg *p, const char *id, sl_error *err);

/* The connection the calling thread must use inside its open transaction (writer), or NULL
 * when it has none. For pg_jobs.c. */
sl__pgc *sl__pg_txn_conn(sl__pg *p);
/* A connection for a read: the caller's transaction (writer) or else the reader, locked;
 * release it with sl__pg_release. */
sl__pgc *sl__pg_acquire(sl__pg *p);
/* The reader, locked, even inside a transaction (a statement that must commit on its own). */
sl__pgc *sl__pg_acquire_reader(sl__pg *p);
void sl__pg_release(sl__pg *p, sl__pgc *c);
/* Waits up to timeout_s for a NOTIFY on channel, on a listening connection of the store's own
 * (opened on first use). 1: notified, 0: timeout, < 0: connection trouble (it retries). */
int sl__pg_wait(sl__pg *p, const char *channel, double timeout_s);
/* The PostgreSQL side of a store (NULL for a SQLite store). */
sl__pg *sl__store_pg(sl_store *s);
/* Reads the features version (meta features_version, 0 when absent) in the calling thread's
 * open transaction and locks its row until the transaction ends: FOR SHARE (exclusive = 0) by a
 * writer of products (a worker's job, an API write) before anything else it locks, FOR UPDATE
 * by a retrain before it lists the images it re-describes. So no product described with the old
 * features is committed after a retrain listed the images, and the lock order (this row first)
 * cannot deadlock. SL_E_STATE outside a transaction. */
sl_status sl__pg_lock_features(sl__pg *p, int exclusive, int64_t *version, sl_error *err);

/* ---- the job queue of the distributed ingest (pg_jobs.c) ------------------------------------ */

/* One image of a product job: its original bytes, or (data NULL) an image the product already
 * has with this content hash, which the worker keeps. */
typedef struct sl__job_image {
    int64_t image_id;         /* id given to a new image (assigned at enqueue, in feed order) */
    size_t row;               /* the feed's row */
    char *source;
    char hash[65];
    int64_t size;
    void *data;
    size_t len;
} sl__job_image;

typedef struct sl__job {
    int64_t id, batch;
    int attempts;             /* earlier claims that never finished (workers that died) */
    sl_product meta;
    sl__job_image *images;
    size_t n;
} sl__job;

void sl__job_clear(sl__job *j);

/* What a finished job did. */
enum { SL__JOB_QUEUED = 0, SL__JOB_DONE = 1, SL__JOB_FAILED = 2 };
enum { SL__JOB_ADDED = 1, SL__JOB_UPDATED = 2, SL__JOB_UNCHANGED = 3 };

/* A new batch (one `shoplens add`), labelled for `shoplens info`. */
sl_status sl__jobs_batch_new(sl_store *s, const char *label, int64_t *batch, sl_error *err);
/* Queues one product with its images (one transaction; assigns the ids of new images). */
sl_status sl__jobs_add(sl_store *s, int64_t batch, const sl_product *p, sl__job_image *imgs,
                       size_t n, sl_error *err);
typedef struct sl__batch_status {
    int64_t total, done, failed;
} sl__batch_status;
sl_status sl__jobs_batch_status(sl_store *s, int64_t batch, sl__batch_status *bs, sl_error *err);
/* The finished jobs of a batch, in queue order. */
typedef struct sl__job_result {
    char *product_id;
    int state, outcome;
    size_t row;
    char *file, *status, *message;
} sl__job_result;
sl_status sl__jobs_batch_results(sl_store *s, int64_t batch, sl__job_result **out, size_t *n,
                                 sl_error *err);
void sl__job_results_free(sl__job_result *r, size_t n);
/* Inside the caller's transaction: claims the oldest job no other worker holds and no older job
 * of the same product precedes (SELECT ... FOR UPDATE SKIP LOCKED: the row lock is the lease;
 * a dead worker's session ends, its transaction rolls back and the job is free again), records
 * the attempt, and reads the job. SL_E_NOT_FOUND when there is none. */
sl_status sl__jobs_claim(sl_store *s, const char *worker, sl__job *job, sl_error *err);
/* Inside the claiming transaction: marks the job done (outcome) or failed (row, file, status,
 * message) and drops its image bytes. */
sl_status sl__jobs_finish(sl_store *s, int64_t job, int state, int outcome, size_t row,
                          const char *file, sl_status st, const char *message, sl_error *err);
/* Waits up to timeout_s for a NOTIFY: channel "shoplens_jobs" (jobs queued) or
 * "shoplens_done" (jobs finished). See sl__pg_wait. */
int sl__jobs_wait(sl_store *s, const char *channel, double timeout_s);
/* Unfinished claims after which a job is failed instead of processed again. */
int sl__jobs_max_attempts(void);
typedef struct sl__queue_status {
    int64_t queued, done, failed, batches;
} sl__queue_status;
sl_status sl__jobs_status(sl_store *s, sl__queue_status *q, sl_error *err);

/* ---- the change log, shard snapshots and the node registry (pg_log.c) ----------------------- */

/* An image as the system of record holds it. */
typedef struct sl__pg_image {
    int64_t id;
    char *source, *file;
    char hash[65];
    int64_t size;
    float *vec;
    size_t dim;
    void *local;
    size_t local_len;
} sl__pg_image;

/* A product's current state (exists == 0: it was removed): its images by id, then its
 * references (labelled photos, store.h) under their index ids (>= SL_STORE_REF_ID_BASE; hash
 * and file '', size 0). */
typedef struct sl__pg_state {
    sl_product p;
    int exists;
    sl__pg_image *images;
    size_t n;
} sl__pg_state;

void sl__pg_states_free(sl__pg_state *v, size_t n);

enum { SL__LOG_PRODUCT = 1, SL__LOG_FEATURES = 2 };

/* What a search node reads from the log in one consistent snapshot. */
typedef struct sl__log_batch {
    int64_t pos;              /* the node's new position: everything up to it is in `states` */
    int64_t head;             /* the log's head in that snapshot */
    int64_t start;            /* the oldest position still in the log (a node behind it reloads) */
    int features;             /* a features change is among the entries: reload everything */
    int64_t entries;          /* log entries of this shard read */
    sl__pg_state *states;     /* one per product named by the entries, by product id */
    size_t n;
} sl__log_batch;

void sl__log_batch_free(sl__log_batch *b);
/* Reads at most `limit` entries after `after` for shard `shard` of `shards` (features entries
 * for every shard) and the current state of their products, in one REPEATABLE READ snapshot. */
sl_status sl__log_read(sl__pgc *c, int64_t after, int shard, int shards, size_t limit,
                       sl__log_batch *out, sl_error *err);

/* A full copy of a shard, streamed product by product in one REPEATABLE READ snapshot: fn is
 * called with batches of products (ascending ids); *pos receives the log head of the snapshot. */
typedef sl_status (*sl__snapshot_fn)(void *ctx, sl__pg_state *states, size_t n, sl_error *err);
sl_status sl__log_snapshot(sl__pgc *c, int shard, int shards, size_t batch, sl__snapshot_fn fn,
                           void *ctx, int64_t *pos, sl_error *err);
/* The current features file of the cluster: version and bytes (malloc'ed; NULL/0 before the
 * first training). */
sl_status sl__log_features(sl__pgc *c, int64_t *version, void **data, size_t *len, char **spec,
                           sl_error *err);
/* Cluster meta values read or set on a connection of the caller's. */
sl_status sl__log_meta(sl__pgc *c, const char *key, char **value, sl_error *err);
/* Sets key to value unless it is set; *value_out receives what is set now (malloc'ed). */
sl_status sl__log_meta_init(sl__pgc *c, const char *key, const char *value, char **value_out,
                            sl_error *err);

/* Nodes (search nodes, routers, workers) and their heartbeats. */
typedef struct sl__node_row {
    char *name, *role, *url, *host;
    int shard, shards;
    int64_t log_pos;
    double age_s;             /* seconds since its last heartbeat, by the server's clock */
    int pid;
} sl__node_row;
void sl__node_rows_free(sl__node_row *v, size_t n);
sl_status sl__nodes_beat(sl__pgc *c, const sl__node_row *me, sl_error *err);
sl_status sl__nodes_list(sl__pgc *c, sl__node_row **out, size_t *n, sl_error *err);
sl_status sl__nodes_forget(sl__pgc *c, const char *name, sl_error *err);

#endif
