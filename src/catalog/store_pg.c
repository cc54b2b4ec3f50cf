/*
 * catalog/store_pg.c - the store on PostgreSQL (a cluster's system of record, docs/cluster.md):
 * the same operations as the SQLite store (store.h), on the schema "shoplens" of a database
 * (docs/formats/cluster.md), plus the ordered change log every search node follows.
 *
 * Invariants:
 *  - Two connections: the writer (transactions, and the writer thread's own reads inside them)
 *    and the reader (everyone else, one at a time). A transaction belongs to the thread that
 *    began it and holds the writer for its whole life; nested begins count.
 *  - The change log: every transaction that changes a product (metadata, images, vectors) or
 *    the features version appends one entry per product (kind 1) / one features entry (kind 2)
 *    just before its COMMIT, numbered from log_head, whose row it updates: that row lock orders
 *    the writers of the log, so log positions are given in commit order and a reader that saw
 *    position N (in one snapshot) has seen every change up to N. NOTIFY shoplens_log wakes the
 *    nodes at commit.
 *  - Files (image copies and features files) are rows of `files`; images.file references them
 *    (foreign key). A writer holds a lock on every file row its uncommitted images need
 *    (sl__pg_file_size inside a transaction takes FOR SHARE, sl__pg_file_put the upsert's row
 *    lock); sl__pg_gc deletes a file only under FOR UPDATE SKIP LOCKED and only when no
 *    committed image references it, so it never deletes a file a commit needs.
 *  - Schema migrations run in one transaction under an advisory lock; meta.schema_version
 *    records the version (SL__PG_SCHEMA_VERSION).
 */
#include "catalog/pg.h"
#include "catalog/catalog.h"
#include "util/util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Version of the PostgreSQL schema this build writes; migrations[v - 1] upgrades v - 1 to v. */
#define SL__PG_SCHEMA_VERSION 3
#define SL__PG_MAGIC "shoplens-cluster"
/* The advisory lock key of schema changes ("shoplens" in ASCII). */
#define SL__PG_LOCK_SCHEMA "7526752266766755443"

static const char *const sl__pg_migrations[SL__PG_SCHEMA_VERSION] = {
    /* 1: the first schema */
    "CREATE TABLE meta(key text PRIMARY KEY, value text NOT NULL);"
    "CREATE TABLE products("
    " id text PRIMARY KEY, title text NOT NULL DEFAULT '', category text NOT NULL DEFAULT '',"
    " price double precision, description text NOT NULL DEFAULT '', url text NOT NULL DEFAULT '',"
    " attrs text NOT NULL DEFAULT '{}', currency text NOT NULL DEFAULT '',"
    " shard_key integer NOT NULL,"
    " tsv tsvector GENERATED ALWAYS AS (to_tsvector('simple', title || ' ' || description)) STORED);"
    "CREATE INDEX products_category ON products(category);"
    "CREATE INDEX products_tsv ON products USING gin(tsv);"
    "CREATE INDEX products_shard ON products(shard_key);"
    "CREATE TABLE files(name text PRIMARY KEY, size bigint NOT NULL, data bytea NOT NULL,"
    " created timestamptz NOT NULL DEFAULT now());"
    "CREATE SEQUENCE image_ids;"
    "CREATE TABLE images("
    " id bigint PRIMARY KEY DEFAULT nextval('image_ids'),"
    " product_id text NOT NULL REFERENCES products(id) ON DELETE CASCADE,"
    " source text NOT NULL, hash text NOT NULL, size bigint NOT NULL,"
    " file text NOT NULL REFERENCES files(name), vec bytea, local bytea);"
    "CREATE INDEX images_product ON images(product_id);"
    "CREATE INDEX images_file ON images(file);"
    "CREATE TABLE pending_deletions(name text PRIMARY KEY);"
    "CREATE FUNCTION release_image_file() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN"
    " INSERT INTO pending_deletions(name) VALUES (OLD.file) ON CONFLICT DO NOTHING; RETURN NULL;"
    " END $f$;"
    "CREATE TRIGGER images_release_file AFTER DELETE ON images FOR EACH ROW"
    " EXECUTE FUNCTION release_image_file();"
    "CREATE TRIGGER images_replace_file AFTER UPDATE OF file ON images FOR EACH ROW"
    " WHEN (OLD.file <> NEW.file) EXECUTE FUNCTION release_image_file();"
    "CREATE TABLE log_head(one smallint PRIMARY KEY CHECK (one = 1), seq bigint NOT NULL);"
    "INSERT INTO log_head VALUES (1, 0);"
    "CREATE TABLE log(seq bigint PRIMARY KEY, kind smallint NOT NULL, product_id text,"
    " shard_key integer, at timestamptz NOT NULL DEFAULT now());"
    "CREATE TABLE batches(id bigserial PRIMARY KEY, label text NOT NULL,"
    " created timestamptz NOT NULL DEFAULT now());"
    "CREATE TABLE jobs(id bigserial PRIMARY KEY, batch bigint NOT NULL REFERENCES batches(id)"
    " ON DELETE CASCADE, product_id text NOT NULL, title text NOT NULL, category text NOT NULL,"
    " price double precision, description text NOT NULL, url text NOT NULL, attrs text NOT NULL,"
    " currency text NOT NULL, state smallint NOT NULL DEFAULT 0, outcome smallint,"
    " worker text, fail_row bigint, fail_file text, fail_status text, fail_message text,"
    " created timestamptz NOT NULL DEFAULT now(), finished timestamptz);"
    "CREATE INDEX jobs_queue ON jobs(id) WHERE state = 0;"
    "CREATE INDEX jobs_product ON jobs(product_id, id) WHERE state = 0;"
    "CREATE INDEX jobs_batch ON jobs(batch, id);"
    "CREATE TABLE job_images(job_id bigint NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
    " pos integer NOT NULL, image_id bigint NOT NULL, feed_row bigint NOT NULL,"
    " source text NOT NULL, hash text NOT NULL, size bigint NOT NULL, data bytea,"
    " PRIMARY KEY(job_id, pos));"
    /* no foreign key: an attempt is recorded while the claiming transaction holds the job row */
    "CREATE TABLE job_attempts(job_id bigint NOT NULL, worker text NOT NULL,"
    " at timestamptz NOT NULL DEFAULT now());"
    "CREATE INDEX job_attempts_job ON job_attempts(job_id);"
    "CREATE TABLE nodes(name text PRIMARY KEY, role text NOT NULL, url text NOT NULL DEFAULT '',"
    " host text NOT NULL DEFAULT '', pid integer NOT NULL DEFAULT 0, shard integer,"
    " shards integer, log_pos bigint NOT NULL DEFAULT 0,"
    " started timestamptz NOT NULL DEFAULT now(), heartbeat timestamptz NOT NULL DEFAULT now());",
    /* 2: price filters (sl__pg_filter_images, the --min-price/--max-price of the CLI on a
     * cluster store) read a range of products_price and look up each product's image ids in
     * images_product, both covering (index-only scans), instead of reading every products and
     * images row: a 1 % range at 10^5 products 53-67 -> 2.2-3.5 ms (bench/results/cluster.md,
     * "Price filter"). The SQLite store has the same two (products_price; its images_product
     * holds the rowid, the image id). Plain CREATE INDEX: the migration's transaction blocks
     * writes to the two tables while it builds (reads go on). */
    "CREATE INDEX products_price ON products(price, id);"
    "DROP INDEX images_product;"
    "CREATE INDEX images_product ON images(product_id, id);",
    /* 3: references, the labelled photos `train --photos` keeps of a product (store.h): what
     * the SQLite store's schema 3 added, with their own sequence (index id = 2^48 + id) */
    "CREATE SEQUENCE ref_ids;"
    "CREATE TABLE refs("
    " id bigint PRIMARY KEY DEFAULT nextval('ref_ids'),"
    " product_id text NOT NULL REFERENCES products(id) ON DELETE CASCADE,"
    " source text NOT NULL DEFAULT '', vec bytea NOT NULL, local bytea);"
    "CREATE INDEX refs_product ON refs(product_id, id);",
};

struct sl__pg {
    char *url;
    sl__pgc w, r;
    sl__pgc l;                /* LISTEN connection of sl__pg_wait (opened on first use) */
    int has_writer, has_listener;
    pthread_mutex_t lmu;
    pthread_mutex_t rmu;      /* the reader */
    pthread_mutex_t wmu;      /* the writer, held from the outermost begin to commit/rollback */
    pthread_mutex_t mu;       /* txn_depth / txn_owner */
    int txn_depth;
    pthread_t txn_owner;
    /* what the open transaction changed (for the change log) */
    char **touched;
    size_t n_touched, cap_touched;
    int features_changed;
};

const char *sl__pg_label(const sl__pg *p) { return p->r.label; }
const char *sl__pg_conninfo(const sl__pg *p) { return p->url; }

static int sl__pg_in_txn(sl__pg *p) {
    pthread_mutex_lock(&p->mu);
    int mine = p->txn_depth > 0 && pthread_equal(p->txn_owner, pthread_self());
    pthread_mutex_unlock(&p->mu);
    return mine;
}

sl__pgc *sl__pg_txn_conn(sl__pg *p) { return sl__pg_in_txn(p) ? &p->w : NULL; }

sl__pgc *sl__pg_acquire(sl__pg *p) {
    if (sl__pg_in_txn(p)) return &p->w;
    pthread_mutex_lock(&p->rmu);
    return &p->r;
}

sl__pgc *sl__pg_acquire_reader(sl__pg *p) {
    pthread_mutex_lock(&p->rmu);
    return &p->r;
}

int sl__pg_wait(sl__pg *p, const char *channel, double timeout_s) {
    pthread_mutex_lock(&p->lmu);
    int rc = 0;
    if (!p->has_listener) {
        if (sl__pgc_open(&p->l, p->url, NULL) == SL_OK) p->has_listener = 1;
        else rc = SL_E_BUSY;
    }
    if (p->has_listener && sl__pgc_listen(&p->l, channel, NULL) != SL_OK) rc = SL_E_BUSY;
    if (rc == 0) rc = sl__pgc_wait(&p->l, timeout_s);
    pthread_mutex_unlock(&p->lmu);
    if (rc < 0 && timeout_s > 0) { /* no busy loop while the server is away */
        struct timespec ts = { (time_t)timeout_s, (long)((timeout_s - (double)(time_t)timeout_s) * 1e9) };
        nanosleep(&ts, NULL);
    }
    return rc;
}

void sl__pg_release(sl__pg *p, sl__pgc *c) {
    if (c == &p->r) pthread_mutex_unlock(&p->rmu);
}

static sl_status sl__pg_need_writer(sl__pg *p, sl_error *err) {
    return p->has_writer ? SL_OK : sl__err_set(err, SL_E_STATE, "%s: store opened read-only", p->r.label);
}

/* Runs a query on the right connection (see sl__pg_acquire). */
static PGresult *sl__pg_q(sl__pg *p, const char *sql, int n, const char *const *vals,
                          const int *lens, const int *bins, sl_error *err) {
    sl__pgc *c = sl__pg_acquire(p);
    PGresult *r = sl__pgc_exec(c, sql, n, vals, lens, bins, err);
    sl__pg_release(p, c);
    return r;
}

static PGresult *sl__pg_q1(sl__pg *p, const char *sql, const char *v, sl_error *err) {
    const char *vals[1] = {v};
    return sl__pg_q(p, sql, 1, vals, NULL, NULL, err);
}

/* ---- schema -------------------------------------------------------------------------------- */

/* Reads magic and schema version on c; *version = 0 when there is no shoplens schema. */
static sl_status sl__pg_version(sl__pgc *c, long *version, sl_error *err) {
    *version = 0;
    PGresult *r = sl__pgc_exec(c, "SELECT to_regclass('shoplens.meta') IS NOT NULL", 0, NULL, NULL, NULL, err);
    if (!r) return err ? err->code : SL_E_IO;
    int has = PQntuples(r) == 1 && sl__pgv_i64(r, 0, 0);
    PQclear(r);
    if (!has) return SL_OK;
    r = sl__pgc_exec(c, "SELECT (SELECT value FROM meta WHERE key = 'magic'),"
                        " (SELECT value FROM meta WHERE key = 'schema_version')", 0, NULL, NULL, NULL, err);
    if (!r) return err ? err->code : SL_E_IO;
    sl_status st = SL_OK;
    if (strcmp(sl__pgv_str(r, 0, 0), SL__PG_MAGIC) != 0)
        st = sl__err_set(err, SL_E_CORRUPT, "%s: the schema shoplens is not a shoplens cluster store (no meta.magic)", c->label);
    else
        *version = strtol(sl__pgv_str(r, 0, 1), NULL, 10);
    PQclear(r);
    if (st == SL_OK && *version <= 0)
        st = sl__err_set(err, SL_E_CORRUPT, "%s: cluster store without a schema version", c->label);
    return st;
}

/* Creates or upgrades the schema to SL__PG_SCHEMA_VERSION in one transaction. */
static sl_status sl__pg_migrate(sl__pgc *c, int create, sl_error *err) {
    sl_status st = sl__pgc_run(c, "BEGIN", 0, NULL, err);
    if (st != SL_OK) return st;
    long v = 0;
    if ((st = sl__pgc_run(c, "SELECT pg_advisory_xact_lock(" SL__PG_LOCK_SCHEMA ")", 0, NULL, err)) != SL_OK ||
        (st = sl__pg_version(c, &v, err)) != SL_OK)
        goto fail;
    if (v == 0 && !create) {
        st = sl__err_set(err, SL_E_NOT_FOUND, "no shoplens store in the database %s (create one with "
                         "'shoplens init --store %s')", c->label, c->label);
        goto fail;
    }
    if (v == 0 && (st = sl__pgc_run(c, "CREATE SCHEMA IF NOT EXISTS shoplens", 0, NULL, err)) != SL_OK) goto fail;
    for (long k = v; k < SL__PG_SCHEMA_VERSION; k++)
        if ((st = sl__pgc_script(c, sl__pg_migrations[k], err)) != SL_OK) {
            sl__err_prefix(err, "%s: migrating the schema to version %ld", c->label, k + 1);
            goto fail;
        }
    if (v < SL__PG_SCHEMA_VERSION) {
        char ver[16], fmt[16];
        snprintf(ver, sizeof ver, "%d", SL__PG_SCHEMA_VERSION);
        snprintf(fmt, sizeof fmt, "%d", SL_STORE_FORMAT_VERSION);
        const char *vals[3] = {SL__PG_MAGIC, ver, fmt};
        if ((st = sl__pgc_run(c, "INSERT INTO meta(key, value) VALUES ('magic', $1), ('schema_version', $2),"
                                 " ('format_version', $3) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                              3, vals, err)) != SL_OK)
            goto fail;
    }
    return sl__pgc_run(c, "COMMIT", 0, NULL, err);
fail:
    (void)sl__pgc_run(c, "ROLLBACK", 0, NULL, NULL);
    return st;
}

void sl__pg_free(sl__pg *p) {
    if (!p) return;
    sl__pgc_close(&p->w);
    sl__pgc_close(&p->r);
    if (p->has_listener) sl__pgc_close(&p->l);
    pthread_mutex_destroy(&p->lmu);
    sl_strings_free(p->touched, p->n_touched);
    pthread_mutex_destroy(&p->rmu);
    pthread_mutex_destroy(&p->wmu);
    pthread_mutex_destroy(&p->mu);
    free(p->url);
    free(p);
}

sl_status sl__pg_open(const char *url, int create, int read_only, sl__pg **out, sl_error *err) {
    *out = NULL;
    sl__pg *p = calloc(1, sizeof *p);
    if (!p) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    pthread_mutex_init(&p->rmu, NULL);
    pthread_mutex_init(&p->lmu, NULL);
    pthread_mutex_init(&p->wmu, NULL);
    pthread_mutex_init(&p->mu, NULL);
    p->url = sl__strdup(url);
    sl_status st = p->url ? sl__pgc_open(&p->r, url, err) : sl__err_set(err, SL_E_NOMEM, "out of memory");
    if (st != SL_OK) goto fail;
    if (!read_only) {
        if ((st = sl__pgc_open(&p->w, url, err)) != SL_OK) goto fail;
        p->has_writer = 1;
    }
    long v = 0;
    if ((st = sl__pg_version(&p->r, &v, err)) != SL_OK) goto fail;
    if (v > SL__PG_SCHEMA_VERSION) {
        st = sl__err_set(err, SL_E_VERSION, "%s: cluster store schema %ld is newer than this shoplens "
                         "(schema %d); use a shoplens of the matching version", p->r.label, v, SL__PG_SCHEMA_VERSION);
        goto fail;
    }
    if (v < SL__PG_SCHEMA_VERSION) {
        if (v == 0 && (!create || read_only)) {
            st = sl__err_set(err, SL_E_NOT_FOUND, "no shoplens store in the database %s (create one "
                             "with 'shoplens init --store %s')", p->r.label, p->r.label);
            goto fail;
        }
        if (read_only) {
            st = sl__err_set(err, SL_E_VERSION, "%s: cluster store schema %ld must be upgraded to %d, which "
                             "needs write access", p->r.label, v, SL__PG_SCHEMA_VERSION);
            goto fail;
        }
        if ((st = sl__pg_migrate(&p->w, create, err)) != SL_OK) goto fail;
    }
    *out = p;
    return SL_OK;
fail:
    sl__pg_free(p);
    return st;
}

/* ---- transactions and the change log ------------------------------------------------------- */

static sl_status sl__pg_touch(sl__pg *p, const char *product_id) {
    if (p->n_touched == p->cap_touched) {
        size_t nc = p->cap_touched ? p->cap_touched * 2 : 16;
        char **nv = sl__reallocarray(p->touched, nc, sizeof *nv);
        if (!nv) return SL_E_NOMEM;
        p->touched = nv;
        p->cap_touched = nc;
    }
    if (!(p->touched[p->n_touched] = sl__strdup(product_id))) return SL_E_NOMEM;
    p->n_touched++;
    return SL_OK;
}

static void sl__pg_untouch(sl__pg *p) {
    for (size_t i = 0; i < p->n_touched; i++) free(p->touched[i]);
    p->n_touched = 0;
    p->features_changed = 0;
}

sl_status sl__pg_begin(sl__pg *p, sl_error *err) {
    sl_status st = sl__pg_need_writer(p, err);
    if (st != SL_OK) return st;
    if (sl__pg_in_txn(p)) {
        pthread_mutex_lock(&p->mu);
        p->txn_depth++;
        pthread_mutex_unlock(&p->mu);
        return SL_OK;
    }
    pthread_mutex_lock(&p->wmu);
    if ((st = sl__pgc_run(&p->w, "BEGIN", 0, NULL, err)) != SL_OK) {
        pthread_mutex_unlock(&p->wmu);
        return st;
    }
    p->w.keep_going = 1;
    sl__pg_untouch(p);
    pthread_mutex_lock(&p->mu);
    p->txn_depth = 1;
    p->txn_owner = pthread_self();
    pthread_mutex_unlock(&p->mu);
    return SL_OK;
}

static int sl__cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Appends the transaction's log entries (see the file comment). */
static sl_status sl__pg_log_append(sl__pg *p, sl_error *err) {
    if (p->n_touched > 1) qsort(p->touched, p->n_touched, sizeof *p->touched, sl__cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < p->n_touched; i++) {
        if (u && strcmp(p->touched[u - 1], p->touched[i]) == 0) {
            free(p->touched[i]);
            continue;
        }
        p->touched[u++] = p->touched[i];
    }
    p->n_touched = u;
    size_t n = u + (p->features_changed ? 1 : 0);
    if (n == 0) return SL_OK;
    int64_t *keys = sl__mallocarray(u ? u : 1, sizeof *keys);
    if (!keys) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    for (size_t i = 0; i < u; i++) keys[i] = sl__shard_key(p->touched[i]);
    char *ids = sl__pg_text_array((const char *const *)p->touched, u);
    char *ks = sl__pg_int_array(keys, u);
    free(keys);
    char cnt[24];
    snprintf(cnt, sizeof cnt, "%zu", n);
    sl_status st = SL_OK;
    PGresult *r = NULL;
    if (!ids || !ks) {
        st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        goto out;
    }
    const char *v1[1] = {cnt};
    /* the row lock taken here orders the log's writers until COMMIT */
    r = sl__pgc_exec(&p->w, "UPDATE log_head SET seq = seq + $1::bigint WHERE one = 1 RETURNING seq", 1, v1, NULL, NULL, err);
    if (!r || PQntuples(r) != 1) {
        st = r ? sl__err_set(err, SL_E_CORRUPT, "%s: the log head row is missing", p->w.label) : err->code;
        goto out;
    }
    char head[24];
    snprintf(head, sizeof head, "%lld", (long long)sl__pgv_i64(r, 0, 0));
    PQclear(r);
    r = NULL;
    const char *v[4] = {head, cnt, ids, ks};
    if ((st = sl__pgc_run(&p->w, "INSERT INTO log(seq, kind, product_id, shard_key)"
                                 " SELECT $1::bigint - $2::bigint + t.ord, 1, t.id, t.k"
                                 " FROM unnest($3::text[], $4::int[]) WITH ORDINALITY AS t(id, k, ord)",
                          4, v, err)) != SL_OK)
        goto out;
    if (p->features_changed &&
        (st = sl__pgc_run(&p->w, "INSERT INTO log(seq, kind) VALUES ($1::bigint, 2)", 1, v, err)) != SL_OK)
        goto out;
    st = sl__pgc_run(&p->w, "SELECT pg_notify('shoplens_log', $1)", 1, v, err);
out:
    PQclear(r);
    free(ids);
    free(ks);
    return st;
}

static void sl__pg_end(sl__pg *p) {
    p->w.keep_going = 0;
    sl__pg_untouch(p);
    pthread_mutex_lock(&p->mu);
    p->txn_depth = 0;
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_unlock(&p->wmu);
}

sl_status sl__pg_commit(sl__pg *p, sl_error *err) {
    if (!sl__pg_in_txn(p)) return sl__err_set(err, SL_E_STATE, "commit without a transaction");
    pthread_mutex_lock(&p->mu);
    int depth = p->txn_depth;
    if (depth > 1) p->txn_depth--;
    pthread_mutex_unlock(&p->mu);
    if (depth > 1) return SL_OK;
    sl_status st = sl__pg_log_append(p, err);
    if (st == SL_OK) st = sl__pgc_run(&p->w, "COMMIT", 0, NULL, err);
    if (st != SL_OK) (void)sl__pgc_run(&p->w, "ROLLBACK", 0, NULL, NULL);
    sl__pg_end(p);
    return st;
}

void sl__pg_rollback(sl__pg *p) {
    if (!sl__pg_in_txn(p)) return;
    (void)sl__pgc_run(&p->w, "ROLLBACK", 0, NULL, NULL);
    sl__pg_end(p);
}

/* Runs f inside a transaction of its own unless the caller has one. */
#define SL__PG_TXN(p, err, body)                                   \
    do {                                                           \
        sl_status st_ = sl__pg_begin((p), (err));                  \
        if (st_ != SL_OK) return st_;                              \
        st_ = (body);                                              \
        if (st_ != SL_OK) {                                        \
            sl__pg_rollback(p);                                    \
            return st_;                                            \
        }                                                          \
        return sl__pg_commit((p), (err));                          \
    } while (0)

/* ---- meta ---------------------------------------------------------------------------------- */

sl_status sl__pg_meta_get(sl__pg *p, const char *key, char **value, sl_error *err) {
    sl__pgc *c = sl__pg_acquire(p);
    sl_status st = sl__log_meta(c, key, value, err);
    sl__pg_release(p, c);
    return st;
}

static sl_status sl__pg_meta_set_txn(sl__pg *p, const char *key, const char *value, sl_error *err) {
    const char *v[2] = {key, value};
    sl_status st = sl__pgc_run(&p->w, "INSERT INTO meta(key, value) VALUES ($1, $2) ON CONFLICT (key) "
                                      "DO UPDATE SET value = EXCLUDED.value", 2, v, err);
    if (st == SL_OK && strcmp(key, "features_version") == 0) p->features_changed = 1;
    return st;
}

sl_status sl__pg_meta_set(sl__pg *p, const char *key, const char *value, sl_error *err) {
    SL__PG_TXN(p, err, sl__pg_meta_set_txn(p, key, value, err));
}

sl_status sl__pg_lock_features(sl__pg *p, int exclusive, int64_t *version, sl_error *err) {
    *version = 0;
    if (!sl__pg_in_txn(p)) return sl__err_set(err, SL_E_STATE, "locking the features version needs a transaction");
    PGresult *r = sl__pgc_exec(&p->w, exclusive ? "SELECT value FROM meta WHERE key = 'features_version' FOR UPDATE"
                                                : "SELECT value FROM meta WHERE key = 'features_version' FOR SHARE",
                               0, NULL, NULL, NULL, err);
    if (!r) return err ? err->code : SL_E_IO;
    if (PQntuples(r) == 1) *version = strtoll(sl__pgv_str(r, 0, 0), NULL, 10);
    PQclear(r);
    return SL_OK;
}

/* ---- products ------------------------------------------------------------------------------ */

static sl_status sl__pg_put_product_txn(sl__pg *p, const sl_product *prod, const char *cur,
                                        sl_error *err) {
    char price[40], key[16];
    if (prod->has_price) snprintf(price, sizeof price, "%.17g", prod->price);
    snprintf(key, sizeof key, "%ld", (long)sl__shard_key(prod->id));
    const char *v[9] = {prod->id, prod->title ? prod->title : "", prod->category ? prod->category : "",
                        prod->has_price ? price : NULL, prod->description ? prod->description : "",
                        prod->url ? prod->url : "",
                        prod->attrs_json && *prod->attrs_json ? prod->attrs_json : "{}", cur, key};
    sl_status st = sl__pgc_run(&p->w, "INSERT INTO products(id, title, category, price, description, url, attrs,"
                                      " currency, shard_key) VALUES ($1, $2, $3, $4::float8, $5, $6, $7, $8, $9::int)"
                                      " ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title,"
                                      " category = EXCLUDED.category, price = EXCLUDED.price,"
                                      " description = EXCLUDED.description, url = EXCLUDED.url,"
                                      " attrs = EXCLUDED.attrs, currency = EXCLUDED.currency",
                               9, v, err);
    if (st == SL_OK && sl__pg_touch(p, prod->id) != SL_OK) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    return st;
}

sl_status sl__pg_put_product(sl__pg *p, const sl_product *prod, sl_error *err) {
    sl_status st = sl__pg_need_writer(p, err);
    if (st != SL_OK) return st;
    char cur[SL_PRODUCT_CURRENCY_LEN + 1];
    if ((st = sl__product_check(prod, cur, err)) != SL_OK) return st;
    SL__PG_TXN(p, err, sl__pg_put_product_txn(p, prod, cur, err));
}

static const char *const sl__pg_product_cols =
    "p.id, p.title, p.category, p.price, p.description, p.url, p.attrs, p.currency";

/* A product from columns col..col+7 of a row. -1 when out of memory. */
static int sl__pg_fill_product(const PGresult *r, int row, int col, sl_product *p) {
    memset(p, 0, sizeof *p);
    p->id = sl__pgv_dup(r, row, col);
    p->title = sl__pgv_dup(r, row, col + 1);
    p->category = sl__pgv_dup(r, row, col + 2);
    p->has_price = !sl__pgv_null(r, row, col + 3);
    p->price = p->has_price ? sl__pgv_f64(r, row, col + 3) : 0;
    p->description = sl__pgv_dup(r, row, col + 4);
    p->url = sl__pgv_dup(r, row, col + 5);
    p->attrs_json = sl__pgv_dup(r, row, col + 6);
    p->currency = sl__pgv_dup(r, row, col + 7);
    if (p->id && p->title && p->category && p->description && p->url && p->attrs_json && p->currency) return 0;
    sl_product_clear(p);
    return -1;
}

sl_status sl__pg_get_product(sl__pg *p, const char *id, sl_product *out, sl_error *err) {
    memset(out, 0, sizeof *out);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT %s FROM products p WHERE p.id = $1", sl__pg_product_cols);
    PGresult *r = sl__pg_q1(p, sql, id, err);
    if (!r) return err ? err->code : SL_E_IO;
    sl_status st = SL_OK;
    if (PQntuples(r) == 0) st = sl__err_set(err, SL_E_NOT_FOUND, "no product '%s'", id);
    else if (sl__pg_fill_product(r, 0, 0, out) != 0) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    PQclear(r);
    return st;
}

/* The int64 first column of every row (malloc'ed). */
static sl_status sl__pg_ids(PGresult *r, int64_t **ids, size_t *n, sl_error *err) {
    size_t cnt = (size_t)PQntuples(r);
    int64_t *v = sl__mallocarray(cnt ? cnt : 1, sizeof *v);
    if (!v) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    for (size_t i = 0; i < cnt; i++) v[i] = sl__pgv_i64(r, (int)i, 0);
    *ids = v;
    *n = cnt;
    return SL_OK;
}

static sl_status sl__pg_remove_product_txn(sl__pg *p, const char *id, int64_t **removed, size_t *n,
                                           sl_error *err) {
    const char *v[1] = {id};
    /* its references go with it (ON DELETE CASCADE), under their index ids */
    PGresult *r = sl__pgc_exec(&p->w, "SELECT id FROM images WHERE product_id = $1 UNION ALL SELECT id + "
                                      SL__REF_BASE_SQL " FROM refs WHERE product_id = $1 ORDER BY 1",
                               1, v, NULL, NULL, err);
    if (!r) return err ? err->code : SL_E_IO;
    sl_status st = sl__pg_ids(r, removed, n, err);
    PQclear(r);
    if (st != SL_OK) return st;
    r = sl__pgc_exec(&p->w, "DELETE FROM products WHERE id = $1", 1, v, NULL, NULL, err);
    if (!r) st = err ? err->code : SL_E_IO;
    else if (strcmp(PQcmdTuples(r), "0") == 0) st = sl__err_set(err, SL_E_NOT_FOUND, "no product '%s'", id);
    PQclear(r);
    if (st == SL_OK && sl__pg_touch(p, id) != SL_OK) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    if (st != SL_OK) {
        free(*removed);
        *removed = NULL;
        *n = 0;
    }
    return st;
}

sl_status sl__pg_remove_product(sl__pg *p, const char *id, int64_t **removed, size_t *n_removed,
                                sl_error *err) {
    int64_t *ids = NULL;
    size_t n = 0;
    if (removed) *removed = NULL;
    if (n_removed) *n_removed = 0;
    sl_status st = sl__pg_need_writer(p, err);
    if (st != SL_OK) return st;
    if ((st = sl__pg_begin(p, err)) != SL_OK) return st;
    if ((st = sl__pg_remove_product_txn(p, id, &ids, &n, err)) != SL_OK) {
        sl__pg_rollback(p);
        return st;
    }
    if ((st = sl__pg_commit(p, err)) != SL_OK) {
        free(ids);
        return st;
    }
    if (removed) *removed = ids;
    else free(ids);
    if (n_removed) *n_removed = n;
    return SL_OK;
}

sl_status sl__pg_lock_product(sl__pg *p, const char *id, sl_error *err) {
    if (!sl__pg_in_txn(p)) return sl__err_set(err, SL_E_STATE, "locking a product outside a transaction");
    const char *v[1] = {id};
    return sl__pgc_run(&p->w, "SELECT 1 FROM products WHERE id = $1 FOR UPDATE", 1, v, err);
}

/* ---- images -------------------------------------------------------------------------------- */

static sl_status sl__pg_vec_bytes(size_t dim, size_t local_len, size_t *vb, sl_error *err) {
    if (sl__mul_size(dim, sizeof(float), vb) || *vb > (size_t)1 << 30 || local_len > (size_t)1 << 30)
        return sl__err_set(err, SL_E_TOO_LARGE, "vector or local features too large");
    return SL_OK;
}

/* Runs an image statement returning product_id and touches that product; SL_E_NOT_FOUND when no
 * row changed. */
static sl_status sl__pg_image_change(sl__pg *p, const char *sql, int n, const char *const *v,
                                     const int *lens, const int *bins, int64_t image_id,
                                     sl_error *err) {
    PGresult *r = sl__pgc_exec(&p->w, sql, n, v, lens, bins, err);
    if (!r) return err ? err->code : SL_E_IO;
    sl_status st = SL_OK;
    if (PQntuples(r) == 0) st = sl__err_set(err, SL_E_NOT_FOUND, "no image %lld", (long long)image_id);
    else if (sl__pg_touch(p, sl__pgv_str(r, 0, 0)) != SL_OK) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    PQclear(r);
    return st;
}

static sl_status sl__pg_add_image_txn(sl__pg *p, int64_t want_id, const char *product_id,
                                      const char *source, const char *hash, int64_t size,
                                      const char *file, const float *vec, size_t vb,
                                      const void *local, size_t local_len, int64_t *id,
                                      sl_error *err) {
    char idb[24], sz[24];
    snprintf(idb, sizeof idb, "%lld", (long long)want_id);
    snprintf(sz, sizeof sz, "%lld", (long long)size);
    const char *v[8] = {want_id > 0 ? idb : NULL, product_id, source ? source : "", hash ? hash : "", sz, file,
                        vec && vb ? (const char *)vec : NULL, local && local_len ? (const char *)local : NULL};
    int lens[8] = {0, 0, 0, 0, 0, 0, (int)vb, (int)local_len};
    int bins[8] = {0, 0, 0, 0, 0, 0, 1, 1};
    PGresult *r = sl__pgc_exec(&p->w, "INSERT INTO images(id, product_id, source, hash, size, file, vec, local)"
                                      " VALUES (COALESCE($1::bigint, nextval('image_ids')), $2, $3, $4, $5::bigint,"
                                      " $6, $7::bytea, $8::bytea) RETURNING id",
                               8, v, lens, bins, err);
    if (!r) return err ? err->code : SL_E_IO;
    if (id) *id = sl__pgv_i64(r, 0, 0);
    PQclear(r);
    return sl__pg_touch(p, product_id) == SL_OK ? SL_OK : sl__err_set(err, SL_E_NOMEM, "out of memory");
}

sl_status sl__pg_add_image(sl__pg *p, int64_t want_id, const char *product_id, const char *source,
                           const char *hash, int64_t size, const char *file, const float *vec,
                           size_t dim, const void *local, size_t local_len, int64_t *id,
                           sl_error *err) {
    size_t vb = 0;
    sl_status st = sl__pg_need_writer(p, err);
    if (st == SL_OK) st = sl__pg_vec_bytes(vec ? dim : 0, local ? local_len : 0, &vb, err);
    if (st != SL_OK) return st;
    if (!file || !sl__image_file_valid(file))
        return sl__err_set(err, SL_E_INVALID, "bad image file name (images/<sha256>.<ext>)");
    SL__PG_TXN(p, err, sl__pg_add_image_txn(p, want_id, product_id, source, hash, size, file, vec, vb,
                                            local, local_len, id, err));
}

sl_status sl__pg_remove_image(sl__pg *p, int64_t image_id, sl_error *err) {
    sl_status st = sl__pg_need_writer(p, err);
    if (st != SL_OK) return st;
    char idb[24];
    snprintf(idb, sizeof idb, "%lld", (long long)image_id);
    const char *v[1] = {idb};
    SL__PG_TXN(p, err, sl__pg_image_change(p, "DELETE FROM images WHERE id = $1::bigint RETURNING product_id",
                                           1, v, NULL, NULL, image_id, err));
}

sl_status sl__pg_set_image_file(sl__pg *p, int64_t image_id, const char *file, sl_error *err) {
    sl_status st = sl__pg_need_writer(p, err);
    if (st != SL_OK) return st;
    if (!file || !sl__image_file_valid(file))
        return sl__err_set(err, SL_E_INVALID, "bad image file name (images/<sha256>.<ext>)");
    char idb[24];
    snprintf(idb, sizeof idb, "%lld", (long long)image_id);
    const char *v[2] = {file, idb};
    SL__PG_TXN(p, err, sl__pg_image_change(p, "UPDATE images SET file = $1 WHERE id = $2::bigint RETURNING product_id",
                                           2, v, NULL, NULL, image_id, err));
}

sl_status sl__pg_set_image_features(sl__pg *p, int64_t image_id, const float *vec, size_t dim,
                                    const void *local, size_t local_len, sl_error *err) {
    size_t vb = 0;
    sl_status st = sl__pg_need_writer(p, err);
    if (st == SL_OK) st = sl__pg_vec_bytes(vec ? dim : 0, local ? local_len : 0, &vb, err);
    if (st != SL_OK) return st;
    char idb[24];
    snprintf(idb, sizeof idb, "%lld", (long long)image_id);
    const char *v[3] = {vec && vb ? (const char *)vec : NULL, local && local_len ? (const char *)local : NULL, idb};
    int lens[3] = {(int)vb, (int)local_len, 0};
    int bins[3] = {1, 1, 0};
    SL__PG_TXN(p, err, sl__pg_image_change(p, "UPDATE images SET vec = $1::bytea, local = $2::bytea WHERE id = $3::bigint"
                                           " RETURNING product_id", 3, v, lens, bins, image_id, err));
}

/* A ref from columns (id, product_id, source, hash, size, file). */
static sl_status sl__pg_fill_ref(const PGresult *r, int row, sl_image_ref *ref, sl_error *err) {
    memset(ref, 0, sizeof *ref);
    ref->id = sl__pgv_i64(r, row, 0);
    ref->product_id = sl__pgv_dup(r, row, 1);
    ref->source = sl__pgv_dup(r, row, 2);
    snprintf(ref->hash, sizeof ref->hash, "%s", sl__pgv_str(r, row, 3));
    ref->size = sl__pgv_i64(r, row, 4);
    ref->file = sl__pgv_dup(r, row, 5);
    ref->in_store = 1;
    if (!ref->product_id || !ref->source || !ref->file) {
        sl_image_ref_clear(ref);
        return sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    return SL_OK;
}

sl_status sl__pg_product_images(sl__pg *p, const char *product_id, sl_image_ref **refs,
                                size_t *n, sl_error *err) {
    *refs = NULL;
    *n = 0;
    PGresult *r = product_id
        ? sl__pg_q1(p, "SELECT id, product_id, source, hash, size, file FROM images WHERE product_id = $1 ORDER BY id",
                    product_id, err)
        : sl__pg_q(p, "SELECT id, product_id, source, hash, size, file FROM images ORDER BY id", 0, NULL, NULL, NULL, err);
    if (!r) return err ? err->code : SL_E_IO;
    size_t cnt = (size_t)PQntuples(r);
    sl_image_ref *v = sl__callocarray(cnt ? cnt : 1, sizeof *v);
    sl_status st = v ? SL_OK : sl__err_set(err, SL_E_NOMEM, "out of memory");
    size_t done = 0;
    for (; st == SL_OK && done < cnt; done++)
        if ((st = sl__pg_fill_ref(r, (int)done, &v[done], err)) != SL_OK) break;
    PQclear(r);
    if (st != SL_OK) {
        sl_image_refs_free(v, done);
        return st;
    }
    *refs = v;
    *n = cnt;
    return SL_OK;
}

sl_status sl__pg_get_image(sl__pg *p, int64_t image_id, sl_image_ref *ref, sl_error *err) {
    memset(ref, 0, sizeof *ref);
    char idb[24];
    snprintf(idb, sizeof idb, "%lld", (long long)image_id);
    PGresult *r = sl__pg_q1(p, "SELECT id, product_id, source, hash, size, file FROM images WHERE id = $1::bigint", idb, err);
    if (!r) return err ? err->code : SL_E_IO;
    sl_status st = PQntuples(r) == 0 ? sl__err_set(err, SL_E_NOT_FOUND, "no image %lld", (long long)image_id)
                                     : sl__pg_fill_ref(r, 0, ref, err);
    PQclear(r);
    return st;
}

sl_status sl__pg_image_products(sl__pg *p, const int64_t *ids, size_t n, char ***products,
                                sl_error *err) {
    *products = sl__callocarray(n + 1, sizeof **products);
    if (!*products) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    if (n == 0) return SL_OK;
    char *arr = sl__pg_int_array(ids, n);
    if (!arr) {
        free(*products);
        *products = NULL;
        return sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    PGresult *r = sl__pg_q1(p, "SELECT t.ord - 1, i.product_id FROM unnest($1::bigint[]) WITH ORDINALITY AS t(id, ord)"
                               " JOIN images i ON i.id = t.id UNION ALL SELECT t.ord - 1, r.product_id"
                               " FROM unnest($1::bigint[]) WITH ORDINALITY AS t(id, ord)"
                               " JOIN refs r ON r.id = t.id - " SL__REF_BASE_SQL, arr, err);
    free(arr);
    sl_status st = r ? SL_OK : (err ? err->code : SL_E_IO);
    for (int i = 0; r && i < PQntuples(r) && st == SL_OK; i++) {
        int64_t k = sl__pgv_i64(r, i, 0);
        if (k < 0 || (size_t)k >= n || (*products)[k]) continue;
        if (!((*products)[k] = sl__pgv_dup(r, i, 1))) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    PQclear(r);
    if (st != SL_OK) {
        sl_strings_free(*products, n);
        *products = NULL;
    }
    return st;
}

/* Copies a bytea value (NULL/0 when NULL or empty). */
static sl_status sl__pg_bytes(const PGresult *r, int row, int col, void **out, size_t *len,
                              sl_error *err) {
    *out = NULL;
    *len = 0;
    int n = PQgetlength(r, row, col);
    if (sl__pgv_null(r, row, col) || n <= 0) return SL_OK;
    if (!(*out = malloc((size_t)n))) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    memcpy(*out, PQgetvalue(r, row, col), (size_t)n);
    *len = (size_t)n;
    return SL_OK;
}

sl_status sl__pg_image_features(sl__pg *p, int64_t image_id, float **vec, size_t *dim,
                                void **local, size_t *local_len, sl_error *err) {
    *vec = NULL;
    *dim = 0;
    if (local) *local = NULL;
    if (local_len) *local_len = 0;
    char idb[24];
    snprintf(idb, sizeof idb, "%lld", (long long)image_id);
    PGresult *r = sl__pg_q1(p, "SELECT vec, local FROM images WHERE id = $1::bigint UNION ALL"
                               " SELECT vec, local FROM refs WHERE id = $1::bigint - " SL__REF_BASE_SQL, idb, err);
    if (!r) return err ? err->code : SL_E_IO;
    sl_status st = SL_OK;
    if (PQntuples(r) == 0) {
        st = sl__err_set(err, SL_E_NOT_FOUND, "no image %lld", (long long)image_id);
    } else if (PQgetlength(r, 0, 0) % (int)sizeof(float)) {
        st = sl__err_set(err, SL_E_CORRUPT, "image %lld: vector of %d bytes", (long long)image_id, PQgetlength(r, 0, 0));
    } else {
        void *vb = NULL;
        size_t vl = 0, ll = 0;
        st = sl__pg_bytes(r, 0, 0, &vb, &vl, err);
        if (st == SL_OK && local) st = sl__pg_bytes(r, 0, 1, local, &ll, err);
        if (st == SL_OK) {
            *vec = vb;
            *dim = vl / sizeof(float);
            if (local_len) *local_len = ll;
        } else {
            free(vb);
        }
    }
    PQclear(r);
    return st;
}

sl_status sl__pg_image_local(sl__pg *p, int64_t image_id, void **local, size_t *local_len,
                             sl_error *err) {
    *local = NULL;
    *local_len = 0;
    char idb[24];
    snprintf(idb, sizeof idb, "%lld", (long long)image_id);
    PGresult *r = sl__pg_q1(p, "SELECT local FROM images WHERE id = $1::bigint UNION ALL"
                               " SELECT local FROM refs WHERE id = $1::bigint - " SL__REF_BASE_SQL, idb, err);
    if (!r) return err ? err->code : SL_E_IO;
    sl_status st = PQntuples(r) == 0 ? sl__err_set(err, SL_E_NOT_FOUND, "no image %lld", (long long)image_id)
                                     : sl__pg_bytes(r, 0, 0, local, local_len, err);
    PQclear(r);
    return st;
}

/* Calls fn for every row of r (id, vec) with a vector. */
static sl_status sl__pg_vec_rows(PGresult *r, sl_store_vector_fn fn, void *ctx, sl_error *err) {
    for (int i = 0; i < PQntuples(r); i++) {
        int nb = PQgetlength(r, i, 1);
        if (sl__pgv_null(r, i, 1) || nb <= 0) continue;
        if (nb % (int)sizeof(float))
            return sl__err_set(err, SL_E_CORRUPT, "image %lld: vector of %d bytes", (long long)sl__pgv_i64(r, i, 0), nb);
        float *v = malloc((size_t)nb); /* libpq's buffer is not guaranteed float-aligned */
        if (!v) return sl__err_set(err, SL_E_NOMEM, "out of memory");
        memcpy(v, PQgetvalue(r, i, 1), (size_t)nb);
        sl_status st = fn(ctx, sl__pgv_i64(r, i, 0), v, (size_t)nb / sizeof(float));
        free(v);
        if (st != SL_OK) return st;
    }
    return SL_OK;
}

/* Calls fn for every (id, vec) row of `sql` (its rows: vectors only, ordered). */
static sl_status sl__pg_each_vec(sl__pg *p, const char *sql, sl_store_vector_fn fn, void *ctx, sl_error *err) {
    sl__pgc *c = sl__pg_acquire(p);
    sl_status st = SL_OK;
    PGresult *r = NULL;
    if (c == &p->w) { /* inside the caller's transaction: one result */
        if (!(r = sl__pgc_exec(c, sql, 0, NULL, NULL, NULL, err))) st = err ? err->code : SL_E_IO;
        else st = sl__pg_vec_rows(r, fn, ctx, err);
        PQclear(r);
        sl__pg_release(p, c);
        return st;
    }
    /* a cursor, so a large catalog is never held in memory at once */
    char decl[256];
    snprintf(decl, sizeof decl, "DECLARE sl_vecs NO SCROLL CURSOR FOR %s", sql);
    if ((st = sl__pgc_run(c, "BEGIN READ ONLY", 0, NULL, err)) != SL_OK ||
        (st = sl__pgc_run(c, decl, 0, NULL, err)) != SL_OK)
        goto out;
    for (;;) {
        if (!(r = sl__pgc_exec(c, "FETCH 2000 FROM sl_vecs", 0, NULL, NULL, NULL, err))) {
            st = err ? err->code : SL_E_IO;
            break;
        }
        int got = PQntuples(r);
        st = sl__pg_vec_rows(r, fn, ctx, err);
        PQclear(r);
        if (st != SL_OK || got == 0) break;
    }
out:
    (void)sl__pgc_run(c, st == SL_OK ? "COMMIT" : "ROLLBACK", 0, NULL, NULL);
    sl__pg_release(p, c);
    return st;
}

sl_status sl__pg_each_vector(sl__pg *p, sl_store_vector_fn fn, void *ctx, sl_error *err) {
    return sl__pg_each_vec(p, "SELECT id, vec FROM images WHERE vec IS NOT NULL ORDER BY id", fn, ctx, err);
}

/* ---- references (store.h; the SQLite store's schema 3, here schema 3 too) ------------------ */

sl_status sl__pg_each_ref_vector(sl__pg *p, sl_store_vector_fn fn, void *ctx, sl_error *err) {
    return sl__pg_each_vec(p, "SELECT id + " SL__REF_BASE_SQL ", vec FROM refs ORDER BY id", fn, ctx, err);
}

/* Touches the product of every row of r (column 0). */
static sl_status sl__pg_touch_rows(sl__pg *p, const PGresult *r, sl_error *err) {
    for (int i = 0; i < PQntuples(r); i++)
        if (sl__pg_touch(p, sl__pgv_str(r, i, 0)) != SL_OK) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    return SL_OK;
}

sl_status sl__pg_replace_refs(sl__pg *p, const sl_store_ref *refs, size_t n, size_t dim, sl_error *err) {
    sl_status st = sl__pg_need_writer(p, err);
    if (st != SL_OK) return st;
    if (!sl__pg_in_txn(p)) return sl__err_set(err, SL_E_STATE, "replacing references outside a transaction");
    /* every product that had or gets references changed: the log names it (a search node reads
     * its references again with it) */
    PGresult *r = sl__pgc_exec(&p->w, "DELETE FROM refs RETURNING product_id", 0, NULL, NULL, NULL, err);
    if (!r) return err ? err->code : SL_E_IO;
    st = sl__pg_touch_rows(p, r, err);
    PQclear(r);
    for (size_t i = 0; i < n && st == SL_OK; i++) {
        size_t vb = 0;
        if (!refs[i].product_id || !refs[i].vec || dim == 0)
            return sl__err_set(err, SL_E_INVALID, "reference %zu: no product or no vector", i);
        if ((st = sl__pg_vec_bytes(dim, refs[i].local ? refs[i].local_len : 0, &vb, err)) != SL_OK) break;
        int has_local = refs[i].local && refs[i].local_len;
        const char *v[4] = {refs[i].product_id, refs[i].source ? refs[i].source : "", (const char *)refs[i].vec,
                            has_local ? (const char *)refs[i].local : NULL};
        int lens[4] = {0, 0, (int)vb, has_local ? (int)refs[i].local_len : 0};
        int bins[4] = {0, 0, 1, 1};
        if (!(r = sl__pgc_exec(&p->w, "INSERT INTO refs(product_id, source, vec, local) SELECT id, $2, $3::bytea,"
                                      " $4::bytea FROM products WHERE id = $1 RETURNING product_id",
                               4, v, lens, bins, err)))
            return err ? err->code : SL_E_IO;
        if (PQntuples(r) == 0) st = sl__err_set(err, SL_E_NOT_FOUND, "reference %zu: no product '%s'", i, refs[i].product_id);
        else st = sl__pg_touch_rows(p, r, err);
        PQclear(r);
    }
    return st;
}

sl_status sl__pg_product_ref_ids(sl__pg *p, const char *product_id, int64_t **ids, size_t *n,
                                 sl_error *err) {
    *ids = NULL;
    *n = 0;
    PGresult *r = sl__pg_q1(p, "SELECT id + " SL__REF_BASE_SQL " FROM refs WHERE product_id = $1 ORDER BY id",
                            product_id, err);
    if (!r) return err ? err->code : SL_E_IO;
    sl_status st = PQntuples(r) ? sl__pg_ids(r, ids, n, err) : SL_OK;
    PQclear(r);
    return st;
}

sl_status sl__pg_ref_of_source(sl__pg *p, const char *product_id, const char *source, int64_t *id,
                               sl_error *err) {
    *id = -1;
    const char *vals[2] = {product_id, source};
    PGresult *r = sl__pg_q(p, "SELECT min(id) + " SL__REF_BASE_SQL " FROM refs WHERE product_id = $1 AND source = $2", 2,
                           vals, NULL, NULL, err);
    if (!r) return err ? err->code : SL_E_IO;
    if (PQntuples(r) == 1 && !PQgetisnull(r, 0, 0)) *id = sl__pgv_i64(r, 0, 0);
    PQclear(r);
    return SL_OK;
}

sl_status sl__pg_count_refs(sl__pg *p, int64_t *n, sl_error *err) {
    *n = 0;
    PGresult *r = sl__pg_q(p, "SELECT count(*) FROM refs", 0, NULL, NULL, NULL, err);
    if (!r) return err ? err->code : SL_E_IO;
    *n = sl__pgv_i64(r, 0, 0);
    PQclear(r);
    return SL_OK;
}

/* The text first column (and, with counts, the int64 second) of every row. */
static sl_status sl__pg_strings(PGresult *r, char ***out, int64_t **counts, size_t *n,
                                sl_error *err) {
    size_t cnt = (size_t)PQntuples(r);
    char **v = sl__callocarray(cnt + 1, sizeof *v);
    int64_t *c = counts ? sl__callocarray(cnt + 1, sizeof *c) : NULL;
    if (!v || (counts && !c)) {
        free(v);
        free(c);
        return sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < cnt; i++) {
        if (!(v[i] = sl__pgv_dup(r, (int)i, 0))) {
            sl_strings_free(v, i);
            free(c);
            return sl__err_set(err, SL_E_NOMEM, "out of memory");
        }
        if (c) c[i] = sl__pgv_i64(r, (int)i, 1);
    }
    *out = v;
    if (counts) *counts = c;
    *n = cnt;
    return SL_OK;
}

static sl_status sl__pg_query_strings(sl__pg *p, const char *sql, char ***out, size_t *n, sl_error *err) {
    *out = NULL;
    *n = 0;
    PGresult *r = sl__pg_q(p, sql, 0, NULL, NULL, NULL, err);
    if (!r) return err ? err->code : SL_E_IO;
    sl_status st = sl__pg_strings(r, out, NULL, n, err);
    PQclear(r);
    return st;
}

sl_status sl__pg_product_ids(sl__pg *p, char ***ids, size_t *n, sl_error *err) {
    return sl__pg_query_strings(p, "SELECT id FROM products ORDER BY id COLLATE \"C\"", ids, n, err);
}

sl_status sl__pg_categories(sl__pg *p, char ***names, int64_t **counts, size_t *n, sl_error *err) {
    *names = NULL;
    *counts = NULL;
    *n = 0;
    PGresult *r = sl__pg_q(p, "SELECT category, count(*) FROM products WHERE category <> '' GROUP BY category"
                              " ORDER BY category COLLATE \"C\"", 0, NULL, NULL, NULL, err);
    if (!r) return err ? err->code : SL_E_IO;
    sl_status st = sl__pg_strings(r, names, counts, n, err);
    PQclear(r);
    return st;
}

/* ---- filters ------------------------------------------------------------------------------- */

/* The filter's conditions on products p (parameters $1 category, $2 min, $3 max, $4 words) into
 * sql, values into v[0..3]. Returns 0 when the text has no word (nothing can match). */
static int sl__pg_filter(const sl_store_filter *f, char *sql, size_t cap, const char *v[4],
                         char lo[40], char hi[40]) {
    v[0] = v[1] = v[2] = v[3] = NULL;
    if (f && f->text && *f->text) {
        if (strspn(f->text, " \t\r\n") == strlen(f->text)) return 0;
        v[3] = f->text;
        strncat(sql, " AND p.tsv @@ plainto_tsquery('simple', $4::text)", cap - strlen(sql) - 1);
    }
    if (f && f->category && *f->category) {
        v[0] = f->category;
        strncat(sql, " AND p.category = $1::text", cap - strlen(sql) - 1);
    }
    if (f && f->has_min_price) {
        snprintf(lo, 40, "%.17g", f->min_price);
        v[1] = lo;
        strncat(sql, " AND p.price >= $2::float8", cap - strlen(sql) - 1);
    }
    if (f && f->has_max_price) {
        snprintf(hi, 40, "%.17g", f->max_price);
        v[2] = hi;
        strncat(sql, " AND p.price <= $3::float8", cap - strlen(sql) - 1);
    }
    /* unused parameters still need a type */
    strncat(sql, " AND ($1::text IS NULL OR TRUE) AND ($2::float8 IS NULL OR TRUE) AND ($3::float8 IS NULL OR TRUE)"
                 " AND ($4::text IS NULL OR TRUE)", cap - strlen(sql) - 1);
    return 1;
}

sl_status sl__pg_filter_images(sl__pg *p, const sl_store_filter *f, int64_t **ids, size_t *n,
                               sl_error *err) {
    *ids = NULL;
    *n = 0;
    char cond[640] = "", sql[1600], lo[40], hi[40];
    const char *v[4];
    if (!sl__pg_filter(f, cond, sizeof cond, v, lo, hi)) return SL_OK;
    /* no ORDER BY: it can make the planner walk images in id order instead of driving the join
     * from products_price; the caller sorts (sl_store_filter_images). The products' references
     * too, under their index ids. */
    snprintf(sql, sizeof sql, "SELECT i.id FROM images i JOIN products p ON p.id = i.product_id WHERE TRUE%s"
             " UNION ALL SELECT r.id + " SL__REF_BASE_SQL " FROM refs r JOIN products p ON p.id = r.product_id"
             " WHERE TRUE%s", cond, cond);
    PGresult *r = sl__pg_q(p, sql, 4, v, NULL, NULL, err);
    if (!r) return err ? err->code : SL_E_IO;
    sl_status st = sl__pg_ids(r, ids, n, err);
    PQclear(r);
    return st;
}

sl_status sl__pg_list_products(sl__pg *p, const sl_store_filter *f, const char *after,
                               size_t limit, sl_product **out, size_t *n, int *more,
                               sl_error *err) {
    *out = NULL;
    *n = 0;
    *more = 0;
    if (limit < 1 || limit > SL_STORE_LIST_MAX)
        return sl__err_set(err, SL_E_INVALID, "limit must be in 1..%d", SL_STORE_LIST_MAX);
    char sql[1024], lo[40], hi[40], lim[24];
    snprintf(sql, sizeof sql, "SELECT %s FROM products p WHERE TRUE", sl__pg_product_cols);
    const char *v[6];
    if (!sl__pg_filter(f, sql, sizeof sql, v, lo, hi)) return SL_OK;
    /* byte order of the ids, as the SQLite store (and the cursors) use */
    strncat(sql, " AND p.id COLLATE \"C\" > $5::text ORDER BY p.id COLLATE \"C\" LIMIT $6::bigint",
            sizeof sql - strlen(sql) - 1);
    snprintf(lim, sizeof lim, "%zu", limit + 1);
    v[4] = after ? after : "";
    v[5] = lim;
    PGresult *r = sl__pg_q(p, sql, 6, v, NULL, NULL, err);
    if (!r) return err ? err->code : SL_E_IO;
    size_t cnt = (size_t)PQntuples(r);
    if (cnt > limit) {
        *more = 1;
        cnt = limit;
    }
    sl_product *pv = sl__callocarray(cnt + 1, sizeof *pv);
    sl_status st = pv ? SL_OK : sl__err_set(err, SL_E_NOMEM, "out of memory");
    size_t done = 0;
    for (; st == SL_OK && done < cnt; done++)
        if (sl__pg_fill_product(r, (int)done, 0, &pv[done]) != 0) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    PQclear(r);
    if (st != SL_OK) {
        sl_products_free(pv, done);
        *more = 0;
        return st;
    }
    *out = pv;
    *n = cnt;
    return SL_OK;
}

sl_status sl__pg_count_products(sl__pg *p, const sl_store_filter *f, int64_t *n, sl_error *err) {
    *n = 0;
    char sql[1024] = "SELECT count(*) FROM products p WHERE TRUE", lo[40], hi[40];
    const char *v[4];
    if (!sl__pg_filter(f, sql, sizeof sql, v, lo, hi)) return SL_OK;
    PGresult *r = sl__pg_q(p, sql, 4, v, NULL, NULL, err);
    if (!r) return err ? err->code : SL_E_IO;
    *n = sl__pgv_i64(r, 0, 0);
    PQclear(r);
    return SL_OK;
}

/* ---- counts, generation, consistency ------------------------------------------------------- */

sl_status sl__pg_counts(sl__pg *p, sl_store_counts *c, sl_error *err) {
    memset(c, 0, sizeof *c);
    PGresult *r = sl__pg_q(p, "SELECT (SELECT count(*) FROM products), (SELECT count(*) FROM images),"
                              " (SELECT COALESCE(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c"
                              "  JOIN pg_namespace n ON n.oid = c.relnamespace"
                              "  WHERE n.nspname = 'shoplens' AND c.relkind IN ('r', 'm'))",
                           0, NULL, NULL, NULL, err);
    if (!r) return err ? err->code : SL_E_IO;
    c->products = sl__pgv_i64(r, 0, 0);
    c->images = sl__pgv_i64(r, 0, 1);
    c->db_bytes = sl__pgv_i64(r, 0, 2);
    PQclear(r);
    return SL_OK;
}

sl_status sl__pg_generation(sl__pg *p, int64_t *gen, sl_error *err) {
    *gen = 0;
    PGresult *r = sl__pg_q(p, "SELECT seq FROM log_head", 0, NULL, NULL, NULL, err);
    if (!r) return err ? err->code : SL_E_IO;
    sl_status st = PQntuples(r) == 1 ? SL_OK : sl__err_set(err, SL_E_CORRUPT, "%s: the log head row is missing", p->r.label);
    if (st == SL_OK) *gen = sl__pgv_i64(r, 0, 0);
    PQclear(r);
    return st;
}

sl_status sl__pg_check(sl__pg *p, char ***problems, size_t *n, sl_error *err) {
    *problems = NULL;
    *n = 0;
    /* the database enforces keys and references itself; what it cannot know: */
    PGresult *r = sl__pg_q(p, "SELECT 'the log head row is missing' WHERE NOT EXISTS (SELECT 1 FROM log_head)"
                              " UNION ALL SELECT 'log entry ' || seq || ' is beyond the log head ' || (SELECT seq FROM log_head)"
                              "  FROM log WHERE seq > (SELECT seq FROM log_head)"
                              " UNION ALL SELECT 'image ' || id || ' has no vector' FROM images WHERE vec IS NULL",
                           0, NULL, NULL, NULL, err);
    if (!r) return err ? err->code : SL_E_IO;
    sl_status st = sl__pg_strings(r, problems, NULL, n, err);
    PQclear(r);
    return st;
}

/* ---- files --------------------------------------------------------------------------------- */

static sl_status sl__pg_file_put_txn(sl__pg *p, const char *name, const void *data, size_t len,
                                     sl_error *err) {
    char sz[24];
    snprintf(sz, sizeof sz, "%zu", len);
    const char *v[3] = {name, sz, len ? (const char *)data : ""};
    int lens[3] = {0, 0, (int)len};
    int bins[3] = {0, 0, 1};
    /* the upsert locks the row until the caller's commit (see the file comment); a row of
     * another length (a damaged copy) is replaced */
    PGresult *r = sl__pgc_exec(&p->w, "INSERT INTO files(name, size, data) VALUES ($1, $2::bigint, $3::bytea)"
                                      " ON CONFLICT (name) DO UPDATE SET"
                                      " data = CASE WHEN files.size = EXCLUDED.size THEN files.data ELSE EXCLUDED.data END,"
                                      " size = EXCLUDED.size",
                               3, v, lens, bins, err);
    if (!r) return err ? err->code : SL_E_IO;
    PQclear(r);
    return SL_OK;
}

sl_status sl__pg_file_put(sl__pg *p, const char *name, const void *data, size_t len,
                          sl_error *err) {
    sl_status st = sl__pg_need_writer(p, err);
    if (st != SL_OK) return st;
    if (len > (size_t)1 << 30) return sl__err_set(err, SL_E_TOO_LARGE, "%s: larger than 1 GiB", name);
    SL__PG_TXN(p, err, sl__pg_file_put_txn(p, name, data, len, err));
}

sl_status sl__pg_file_get(sl__pg *p, const char *name, size_t max, void **data, size_t *len,
                          sl_error *err) {
    *data = NULL;
    *len = 0;
    PGresult *r = sl__pg_q1(p, "SELECT data FROM files WHERE name = $1", name, err);
    if (!r) return err ? err->code : SL_E_IO;
    sl_status st = SL_OK;
    if (PQntuples(r) == 0) {
        st = sl__err_set(err, SL_E_NOT_FOUND, "%s: not in the store", name);
    } else if (max && (size_t)PQgetlength(r, 0, 0) > max) {
        st = sl__err_set(err, SL_E_TOO_LARGE, "%s: larger than %zu bytes", name, max);
    } else {
        size_t n = (size_t)PQgetlength(r, 0, 0);
        /* a NUL after the data, as sl__read_file gives */
        if (!(*data = malloc(n + 1))) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        else {
            memcpy(*data, PQgetvalue(r, 0, 0), n);
            ((char *)*data)[n] = '\0';
            *len = n;
        }
    }
    PQclear(r);
    return st;
}

int64_t sl__pg_file_size(sl__pg *p, const char *name) {
    /* inside a transaction the row stays locked (FOR SHARE) until it ends: no deletion can
     * remove the file a commit is about to reference */
    int txn = sl__pg_in_txn(p);
    PGresult *r = sl__pg_q1(p, txn ? "SELECT size FROM files WHERE name = $1 FOR SHARE"
                                   : "SELECT size FROM files WHERE name = $1", name, NULL);
    int64_t n = r && PQntuples(r) == 1 ? sl__pgv_i64(r, 0, 0) : -1;
    PQclear(r);
    return n;
}

sl_status sl__pg_pending_files(sl__pg *p, char ***files, size_t *n, sl_error *err) {
    return sl__pg_query_strings(p, "SELECT name FROM pending_deletions ORDER BY name COLLATE \"C\"", files, n, err);
}

/* Inside the writer's transaction: deletes file `name` when no committed image uses it and no
 * writer holds it. *state: 1 deleted, 0 in use (forget it), -1 held by a writer (keep it). */
static sl_status sl__pg_try_delete(sl__pg *p, const char *name, int *state, sl_error *err) {
    const char *v[1] = {name};
    *state = 0;
    PGresult *r = sl__pgc_exec(&p->w, "SELECT name FROM files WHERE name = $1 FOR UPDATE SKIP LOCKED", 1, v, NULL, NULL, err);
    if (!r) return err ? err->code : SL_E_IO;
    int got = PQntuples(r) == 1;
    PQclear(r);
    if (!got) {
        r = sl__pgc_exec(&p->w, "SELECT 1 FROM files WHERE name = $1", 1, v, NULL, NULL, err);
        if (!r) return err ? err->code : SL_E_IO;
        *state = PQntuples(r) == 1 ? -1 : 0;
        PQclear(r);
        return SL_OK;
    }
    r = sl__pgc_exec(&p->w, "DELETE FROM files f WHERE f.name = $1 AND NOT EXISTS (SELECT 1 FROM images i WHERE i.file = $1)",
                     1, v, NULL, NULL, err);
    if (!r) return err ? err->code : SL_E_IO;
    *state = strcmp(PQcmdTuples(r), "1") == 0;
    PQclear(r);
    return SL_OK;
}

sl_status sl__pg_gc(sl__pg *p, size_t *deleted, sl_error *err) {
    if (deleted) *deleted = 0;
    sl_status st = sl__pg_need_writer(p, err);
    if (st != SL_OK) return st;
    if (sl__pg_in_txn(p)) return sl__err_set(err, SL_E_STATE, "file deletion inside a transaction");
    if ((st = sl__pg_begin(p, err)) != SL_OK) return st;
    PGresult *r = sl__pgc_exec(&p->w, "SELECT name FROM pending_deletions ORDER BY name FOR UPDATE SKIP LOCKED",
                               0, NULL, NULL, NULL, err);
    size_t gone = 0;
    if (!r) st = err ? err->code : SL_E_IO;
    for (int i = 0; r && st == SL_OK && i < PQntuples(r); i++) {
        const char *name = sl__pgv_str(r, i, 0);
        int state = 0;
        if (sl__image_file_valid(name) && (st = sl__pg_try_delete(p, name, &state, err)) != SL_OK) break;
        if (state > 0) gone++;
        if (state < 0) continue; /* a writer holds it: the next run decides */
        const char *v[1] = {name};
        st = sl__pgc_run(&p->w, "DELETE FROM pending_deletions WHERE name = $1", 1, v, err);
    }
    PQclear(r);
    if (st != SL_OK) {
        sl__pg_rollback(p);
        return st;
    }
    if ((st = sl__pg_commit(p, err)) == SL_OK && deleted) *deleted = gone;
    return st;
}

sl_status sl__pg_orphan_files(sl__pg *p, int remove, char ***names, size_t *n, sl_error *err) {
    if (names) *names = NULL;
    if (n) *n = 0;
    static const char *const sql =
        "SELECT f.name FROM files f WHERE f.name LIKE 'images/%'"
        " AND NOT EXISTS (SELECT 1 FROM images i WHERE i.file = f.name)"
        " AND NOT EXISTS (SELECT 1 FROM pending_deletions d WHERE d.name = f.name) ORDER BY f.name COLLATE \"C\"";
    char **v = NULL;
    size_t cnt = 0;
    sl_status st;
    if (!remove) {
        st = sl__pg_query_strings(p, sql, &v, &cnt, err);
    } else {
        if ((st = sl__pg_need_writer(p, err)) != SL_OK) return st;
        if (sl__pg_in_txn(p)) return sl__err_set(err, SL_E_STATE, "file deletion inside a transaction");
        if ((st = sl__pg_begin(p, err)) != SL_OK) return st;
        PGresult *r = sl__pgc_exec(&p->w, sql, 0, NULL, NULL, NULL, err);
        if (!r) st = err ? err->code : SL_E_IO;
        else st = sl__pg_strings(r, &v, NULL, &cnt, err);
        PQclear(r);
        size_t k = 0; /* the deleted ones are swapped to the front */
        for (size_t i = 0; st == SL_OK && i < cnt; i++) {
            int state = 0;
            if ((st = sl__pg_try_delete(p, v[i], &state, err)) != SL_OK) break;
            if (state > 0) {
                char *t = v[k];
                v[k++] = v[i];
                v[i] = t;
            }
        }
        if (st != SL_OK) sl__pg_rollback(p);
        else st = sl__pg_commit(p, err);
        if (st == SL_OK) {
            for (size_t i = k; i < cnt; i++) free(v[i]);
            cnt = k;
        }
    }
    if (st != SL_OK) {
        sl_strings_free(v, cnt);
        return st;
    }
    if (names) *names = v;
    else sl_strings_free(v, cnt);
    if (n) *n = cnt;
    return SL_OK;
}
