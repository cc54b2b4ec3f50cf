/*
 * catalog/store.c - the catalog store: SQLite (WAL mode, synchronous=FULL) holding products,
 * images with their vectors and local features, an FTS5 index of title + description, and a
 * meta table with the format/schema versions, the feature spec and a generation counter.
 * Schema and byte layout: docs/formats/store.md.
 *
 * Invariants:
 *  - Two connections: `db` for writes (and for the writer's own reads inside a transaction),
 *    `rdb` for everyone else. In WAL mode rdb only ever sees committed transactions, so a reader
 *    never observes a half-written product.
 *  - products_fts rowid == products rowid; both are written in the same transaction.
 *  - image ids come from AUTOINCREMENT: never reused, assigned in commit order, so the same
 *    sequence of commits gives the same ids (crash-safe re-runs are identical).
 *  - meta.generation grows by one per committed change set (bumped by the writer inside it).
 *  - Hot reads (a candidate's local features, many per search) reuse prepared statements of
 *    rdb from a small pool: a statement is held by one thread between take and give back (reset
 *    and unbound), and all are finalized before rdb is closed.
 */
#include "shoplens/store.h"
#include "catalog/catalog.h"
#include "util/util.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SL__STMT_POOL 16     /* idle prepared statements kept per kind */

/* The read statements kept prepared (sl__pooled_sql). */
enum { SL__Q_LOCAL, SL__Q_PRODUCT, SL__Q_IMAGE, SL__Q_IMAGE_PRODUCTS, SL__Q_KINDS };

struct sl_store {
    char *dir;
    sqlite3 *db;            /* writer; NULL when read-only */
    sqlite3 *rdb;           /* readers */
    pthread_mutex_t mu;     /* guards txn_depth / txn_owner and the statement pool */
    int txn_depth;
    pthread_t txn_owner;
    /* idle prepared statements of rdb, per kind (sl__pooled_sql): the reads a search makes for
     * every candidate or result, prepared once instead of per call */
    sqlite3_stmt *pool[SL__Q_KINDS][SL__STMT_POOL];
    int n_pool[SL__Q_KINDS];
};

static sl_status sl__take_stmt(sl_store *s, sqlite3 *conn, int k, sqlite3_stmt **st, sl_error *err);
static void sl__give_stmt(sl_store *s, sqlite3 *conn, int k, sqlite3_stmt *st);
static const char *const sl__pooled_sql[SL__Q_KINDS] = {
    "SELECT local FROM images WHERE id = ?",
    "SELECT id, title, category, price, description, url, attrs FROM products WHERE id = ?",
    "SELECT id, product_id, source, hash, size FROM images WHERE id = ?",
    "SELECT j.key, i.product_id FROM json_each(?) j JOIN images i ON i.id = j.value",
};

static const char *const sl__schema =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS products("
    " id TEXT PRIMARY KEY, title TEXT NOT NULL DEFAULT '', category TEXT NOT NULL DEFAULT '',"
    " price REAL, description TEXT NOT NULL DEFAULT '', url TEXT NOT NULL DEFAULT '',"
    " attrs TEXT NOT NULL DEFAULT '{}');"
    "CREATE INDEX IF NOT EXISTS products_category ON products(category);"
    "CREATE TABLE IF NOT EXISTS images("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " product_id TEXT NOT NULL REFERENCES products(id) ON DELETE CASCADE,"
    " source TEXT NOT NULL, hash TEXT NOT NULL, size INTEGER NOT NULL,"
    " vec BLOB, local BLOB);"
    "CREATE INDEX IF NOT EXISTS images_product ON images(product_id);"
    "CREATE VIRTUAL TABLE IF NOT EXISTS products_fts USING fts5(title, description,"
    " tokenize = 'unicode61 remove_diacritics 2');";

const char *sl_store_default_dir(void) {
    const char *e = getenv("SHOPLENS_STORE");
    return e && *e ? e : "./shoplens-data";
}

void sl_product_clear(sl_product *p) {
    if (!p) return;
    free(p->id);
    free(p->title);
    free(p->category);
    free(p->description);
    free(p->url);
    free(p->attrs_json);
    memset(p, 0, sizeof *p);
}

void sl_image_ref_clear(sl_image_ref *r) {
    if (!r) return;
    free(r->product_id);
    free(r->source);
    memset(r, 0, sizeof *r);
}

void sl_image_refs_free(sl_image_ref *refs, size_t n) {
    if (!refs) return;
    for (size_t i = 0; i < n; i++) sl_image_ref_clear(&refs[i]);
    free(refs);
}

void sl_strings_free(char **v, size_t n) {
    if (!v) return;
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

static sl_status sl__sqlerr(sl_error *err, sqlite3 *db, const char *what) {
    int code = sqlite3_extended_errcode(db);
    sl_status st = SL_E_IO;
    if ((code & 0xff) == SQLITE_BUSY || (code & 0xff) == SQLITE_LOCKED) st = SL_E_BUSY;
    else if ((code & 0xff) == SQLITE_CORRUPT || (code & 0xff) == SQLITE_NOTADB) st = SL_E_CORRUPT;
    else if ((code & 0xff) == SQLITE_NOMEM) st = SL_E_NOMEM;
    else if ((code & 0xff) == SQLITE_READONLY) st = SL_E_STATE;
    return sl__err_set(err, st, "catalog.sqlite: %s: %s", what, sqlite3_errmsg(db));
}

/* The connection the calling thread must use for reads. */
static sqlite3 *sl__rconn(sl_store *s) {
    sqlite3 *c = s->rdb;
    pthread_mutex_lock(&s->mu);
    if (s->txn_depth > 0 && pthread_equal(s->txn_owner, pthread_self())) c = s->db;
    pthread_mutex_unlock(&s->mu);
    return c;
}

static sl_status sl__exec(sqlite3 *db, const char *sql, sl_error *err) {
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        sl_status st = sl__err_set(err, SL_E_IO, "catalog.sqlite: %s", msg ? msg : "error");
        if ((sqlite3_errcode(db) & 0xff) == SQLITE_BUSY) st = err ? (err->code = SL_E_BUSY) : SL_E_BUSY;
        if ((sqlite3_errcode(db) & 0xff) == SQLITE_CORRUPT || (sqlite3_errcode(db) & 0xff) == SQLITE_NOTADB)
            st = err ? (err->code = SL_E_CORRUPT) : SL_E_CORRUPT;
        sqlite3_free(msg);
        return st;
    }
    return SL_OK;
}

static sl_status sl__prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st, sl_error *err) {
    if (sqlite3_prepare_v2(db, sql, -1, st, NULL) != SQLITE_OK) return sl__sqlerr(err, db, "prepare");
    return SL_OK;
}

static char *sl__col_strdup(sqlite3_stmt *st, int i) {
    const unsigned char *t = sqlite3_column_text(st, i);
    return sl__strdup(t ? (const char *)t : "");
}

static sl_status sl__open_conn(const char *path, int flags, sqlite3 **out, sl_error *err) {
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, flags | SQLITE_OPEN_FULLMUTEX, NULL);
    if (rc != SQLITE_OK) {
        sl_status st = sl__err_set(err, SL_E_IO, "%s: %s", path, db ? sqlite3_errmsg(db) : "cannot open");
        sqlite3_close(db);
        return st;
    }
    sqlite3_busy_timeout(db, 10000);
    *out = db;
    return SL_OK;
}

static sl_status sl__meta_get_conn(sqlite3 *db, const char *key, char **value, sl_error *err) {
    *value = NULL;
    sqlite3_stmt *st;
    sl_status rc = sl__prepare(db, "SELECT value FROM meta WHERE key = ?", &st, err);
    if (rc != SL_OK) return rc;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) {
        *value = sl__col_strdup(st, 0);
        rc = *value ? SL_OK : sl__err_set(err, SL_E_NOMEM, "out of memory");
    } else if (r == SQLITE_DONE) {
        rc = sl__err_set(err, SL_E_NOT_FOUND, "meta key %s not set", key);
    } else {
        rc = sl__sqlerr(err, db, "read meta");
    }
    sqlite3_finalize(st);
    return rc;
}

static sl_status sl__meta_set_conn(sqlite3 *db, const char *key, const char *value, sl_error *err) {
    sqlite3_stmt *st;
    sl_status rc = sl__prepare(db, "INSERT INTO meta(key, value) VALUES(?, ?) "
                                   "ON CONFLICT(key) DO UPDATE SET value = excluded.value", &st, err);
    if (rc != SL_OK) return rc;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) rc = sl__sqlerr(err, db, "write meta");
    sqlite3_finalize(st);
    return rc;
}

/* Checks (or, for a new file, writes) the format and schema versions. */
static sl_status sl__check_versions(sl_store *s, sqlite3 *db, int fresh, sl_error *err) {
    char *fmt = NULL, *sch = NULL;
    sl_status st;
    if (fresh) {
        char buf[32];
        snprintf(buf, sizeof buf, "%d", SL_STORE_FORMAT_VERSION);
        if ((st = sl__meta_set_conn(db, "format_version", buf, err)) != SL_OK) return st;
        snprintf(buf, sizeof buf, "%d", SL_STORE_SCHEMA_VERSION);
        if ((st = sl__meta_set_conn(db, "schema_version", buf, err)) != SL_OK) return st;
        if ((st = sl__meta_set_conn(db, "generation", "0", err)) != SL_OK) return st;
        return sl__meta_set_conn(db, "magic", "shoplens-store", err);
    }
    char *magic = NULL;
    st = sl__meta_get_conn(db, "magic", &magic, err);
    if (st != SL_OK || strcmp(magic, "shoplens-store") != 0) {
        free(magic);
        return sl__err_set(err, SL_E_CORRUPT, "%s: not a shoplens store (no meta.magic)", s->dir);
    }
    free(magic);
    if ((st = sl__meta_get_conn(db, "format_version", &fmt, err)) != SL_OK ||
        (st = sl__meta_get_conn(db, "schema_version", &sch, err)) != SL_OK) {
        free(fmt);
        return sl__err_set(err, SL_E_CORRUPT, "%s: store without a format/schema version", s->dir);
    }
    long f = strtol(fmt, NULL, 10), c = strtol(sch, NULL, 10);
    free(fmt);
    free(sch);
    if (f != SL_STORE_FORMAT_VERSION || c != SL_STORE_SCHEMA_VERSION)
        return sl__err_set(err, SL_E_VERSION,
                           "%s: store format %ld schema %ld is %s than this shoplens (format %d "
                           "schema %d); use a shoplens of the matching version%s",
                           s->dir, f, c,
                           (f < SL_STORE_FORMAT_VERSION ||
                            (f == SL_STORE_FORMAT_VERSION && c < SL_STORE_SCHEMA_VERSION)) ? "older" : "newer",
                           SL_STORE_FORMAT_VERSION, SL_STORE_SCHEMA_VERSION,
                           f < SL_STORE_FORMAT_VERSION || c < SL_STORE_SCHEMA_VERSION
                               ? " or re-create the store (shoplens init) and re-add the catalog" : "");
    return SL_OK;
}

void sl_store_free(sl_store *s) {
    if (!s) return;
    for (int k = 0; k < SL__Q_KINDS; k++)
        for (int i = 0; i < s->n_pool[k]; i++) sqlite3_finalize(s->pool[k][i]);
    sqlite3_close(s->rdb);
    sqlite3_close(s->db);
    pthread_mutex_destroy(&s->mu);
    free(s->dir);
    free(s);
}

sl_status sl_store_open(const char *dir, int create, int read_only, sl_store **out,
                        sl_error *err) {
    *out = NULL;
    if (!dir) dir = sl_store_default_dir();
    sl_store *s = calloc(1, sizeof *s);
    if (!s) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    pthread_mutex_init(&s->mu, NULL);
    s->dir = sl__strdup(dir);
    char *path = s->dir ? sl_store_path(s, "catalog.sqlite") : NULL;
    if (!path) {
        sl_store_free(s);
        return sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    sl_status st = SL_OK;
    struct stat sb;
    int exists = stat(path, &sb) == 0;
    if (!exists) {
        if (!create || read_only) {
            st = sl__err_set(err, SL_E_NOT_FOUND, "no shoplens store in %s (create one with "
                             "'shoplens init --store %s')", dir, dir);
            goto fail;
        }
        if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
            st = sl__err_set(err, SL_E_IO, "mkdir %s: %s", dir, strerror(errno));
            goto fail;
        }
    }
    if (!read_only) {
        if ((st = sl__open_conn(path, SQLITE_OPEN_READWRITE | (exists ? 0 : SQLITE_OPEN_CREATE),
                                &s->db, err)) != SL_OK)
            goto fail;
        /* A brand-new file: schema + versions in one transaction, so a crash leaves either no
         * store or a complete empty one. */
        int fresh = 0;
        {
            sqlite3_stmt *q;
            if ((st = sl__prepare(s->db, "SELECT count(*) FROM sqlite_master", &q, err)) != SL_OK) goto fail;
            if (sqlite3_step(q) == SQLITE_ROW) fresh = sqlite3_column_int(q, 0) == 0;
            else {
                st = sl__sqlerr(err, s->db, "read schema");
                sqlite3_finalize(q);
                if (st == SL_E_IO) st = err ? (err->code = SL_E_CORRUPT) : SL_E_CORRUPT;
                goto fail;
            }
            sqlite3_finalize(q);
        }
        if ((st = sl__exec(s->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                                  "PRAGMA foreign_keys=ON;", err)) != SL_OK)
            goto fail;
        if (fresh) {
            if ((st = sl__exec(s->db, "BEGIN IMMEDIATE", err)) != SL_OK) goto fail;
            if ((st = sl__exec(s->db, sl__schema, err)) != SL_OK ||
                (st = sl__check_versions(s, s->db, 1, err)) != SL_OK) {
                sl__exec(s->db, "ROLLBACK", NULL);
                goto fail;
            }
            if ((st = sl__exec(s->db, "COMMIT", err)) != SL_OK) goto fail;
        } else if ((st = sl__check_versions(s, s->db, 0, err)) != SL_OK) {
            goto fail;
        }
    }
    if ((st = sl__open_conn(path, SQLITE_OPEN_READONLY, &s->rdb, err)) != SL_OK) goto fail;
    if ((st = sl__exec(s->rdb, "PRAGMA foreign_keys=ON;", err)) != SL_OK) goto fail;
    if (read_only && (st = sl__check_versions(s, s->rdb, 0, err)) != SL_OK) goto fail;
    free(path);
    *out = s;
    return SL_OK;
fail:
    free(path);
    sl_store_free(s);
    return st;
}

const char *sl_store_dir(const sl_store *s) { return s->dir; }

char *sl_store_path(const sl_store *s, const char *name) {
    size_t n = strlen(s->dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", s->dir, name);
    return p;
}

static sl_status sl__need_writer(sl_store *s, sl_error *err) {
    if (!s->db) return sl__err_set(err, SL_E_STATE, "%s: store opened read-only", s->dir);
    return SL_OK;
}

sl_status sl_store_meta_get(sl_store *s, const char *key, char **value, sl_error *err) {
    return sl__meta_get_conn(sl__rconn(s), key, value, err);
}

sl_status sl_store_meta_set(sl_store *s, const char *key, const char *value, sl_error *err) {
    sl_status st = sl__need_writer(s, err);
    return st != SL_OK ? st : sl__meta_set_conn(s->db, key, value, err);
}

sl_status sl_store_begin(sl_store *s, sl_error *err) {
    sl_status st = sl__need_writer(s, err);
    if (st != SL_OK) return st;
    pthread_mutex_lock(&s->mu);
    int depth = s->txn_depth;
    pthread_mutex_unlock(&s->mu);
    if (depth == 0 && (st = sl__exec(s->db, "BEGIN IMMEDIATE", err)) != SL_OK) return st;
    pthread_mutex_lock(&s->mu);
    s->txn_depth++;
    s->txn_owner = pthread_self();
    pthread_mutex_unlock(&s->mu);
    return SL_OK;
}

sl_status sl_store_commit(sl_store *s, sl_error *err) {
    pthread_mutex_lock(&s->mu);
    int depth = s->txn_depth;
    pthread_mutex_unlock(&s->mu);
    if (depth <= 0) return sl__err_set(err, SL_E_STATE, "commit without a transaction");
    sl_status st = SL_OK;
    if (depth == 1) {
        st = sl__exec(s->db, "COMMIT", err);
        if (st != SL_OK) {
            sl_store_rollback(s);
            return st;
        }
    }
    pthread_mutex_lock(&s->mu);
    s->txn_depth--;
    pthread_mutex_unlock(&s->mu);
    return st;
}

void sl_store_rollback(sl_store *s) {
    if (!s->db) return;
    pthread_mutex_lock(&s->mu);
    int depth = s->txn_depth;
    s->txn_depth = 0;
    pthread_mutex_unlock(&s->mu);
    if (depth > 0 || !sqlite3_get_autocommit(s->db)) sl__exec(s->db, "ROLLBACK", NULL);
}

static void sl__bind_opt_text(sqlite3_stmt *st, int i, const char *v) {
    sqlite3_bind_text(st, i, v ? v : "", -1, SQLITE_STATIC);
}

static int sl__valid_id(const char *id) {
    if (!id || !*id) return 0;
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++, n++)
        if (*p < 0x20 || *p == 0x7f) return 0;
    return n <= SL_STORE_ID_MAX;
}

sl_status sl_store_put_product(sl_store *s, const sl_product *p, sl_error *err) {
    sl_status rc = sl__need_writer(s, err);
    if (rc != SL_OK) return rc;
    if (!sl__valid_id(p->id))
        return sl__err_set(err, SL_E_INVALID, "bad product id (empty, over %d bytes or control "
                           "characters)", SL_STORE_ID_MAX);
    if ((rc = sl_store_begin(s, err)) != SL_OK) return rc;
    sqlite3_stmt *st = NULL;
    rc = sl__prepare(s->db,
                     "INSERT INTO products(id, title, category, price, description, url, attrs) "
                     "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(id) DO UPDATE SET "
                     "title = ?2, category = ?3, price = ?4, description = ?5, url = ?6, attrs = ?7 "
                     "RETURNING rowid", &st, err);
    if (rc != SL_OK) goto out;
    sqlite3_bind_text(st, 1, p->id, -1, SQLITE_STATIC);
    sl__bind_opt_text(st, 2, p->title);
    sl__bind_opt_text(st, 3, p->category);
    if (p->has_price) sqlite3_bind_double(st, 4, p->price);
    else sqlite3_bind_null(st, 4);
    sl__bind_opt_text(st, 5, p->description);
    sl__bind_opt_text(st, 6, p->url);
    sqlite3_bind_text(st, 7, p->attrs_json && *p->attrs_json ? p->attrs_json : "{}", -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_ROW) {
        rc = sl__sqlerr(err, s->db, "write product");
        goto out;
    }
    sqlite3_int64 rowid = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    st = NULL;
    if ((rc = sl__prepare(s->db, "DELETE FROM products_fts WHERE rowid = ?", &st, err)) != SL_OK) goto out;
    sqlite3_bind_int64(st, 1, rowid);
    if (sqlite3_step(st) != SQLITE_DONE) {
        rc = sl__sqlerr(err, s->db, "write text index");
        goto out;
    }
    sqlite3_finalize(st);
    st = NULL;
    if ((rc = sl__prepare(s->db, "INSERT INTO products_fts(rowid, title, description) VALUES(?, ?, ?)",
                          &st, err)) != SL_OK)
        goto out;
    sqlite3_bind_int64(st, 1, rowid);
    sl__bind_opt_text(st, 2, p->title);
    sl__bind_opt_text(st, 3, p->description);
    if (sqlite3_step(st) != SQLITE_DONE) rc = sl__sqlerr(err, s->db, "write text index");
out:
    sqlite3_finalize(st);
    if (rc != SL_OK) {
        sl_store_rollback(s);
        return rc;
    }
    return sl_store_commit(s, err);
}

sl_status sl_store_get_product(sl_store *s, const char *id, sl_product *out, sl_error *err) {
    memset(out, 0, sizeof *out);
    sqlite3 *db = sl__rconn(s);
    sqlite3_stmt *st;
    sl_status rc = sl__take_stmt(s, db, SL__Q_PRODUCT, &st, err);
    if (rc != SL_OK) return rc;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) {
        out->id = sl__col_strdup(st, 0);
        out->title = sl__col_strdup(st, 1);
        out->category = sl__col_strdup(st, 2);
        out->has_price = sqlite3_column_type(st, 3) != SQLITE_NULL;
        out->price = out->has_price ? sqlite3_column_double(st, 3) : 0;
        out->description = sl__col_strdup(st, 4);
        out->url = sl__col_strdup(st, 5);
        out->attrs_json = sl__col_strdup(st, 6);
        if (!out->id || !out->title || !out->category || !out->description || !out->url ||
            !out->attrs_json) {
            sl_product_clear(out);
            rc = sl__err_set(err, SL_E_NOMEM, "out of memory");
        }
    } else if (r == SQLITE_DONE) {
        rc = sl__err_set(err, SL_E_NOT_FOUND, "no product '%s'", id);
    } else {
        rc = sl__sqlerr(err, db, "read product");
    }
    sl__give_stmt(s, db, SL__Q_PRODUCT, st);
    return rc;
}

/* Collects the int64 first column of a statement into a malloc'ed array. */
static sl_status sl__collect_ids(sqlite3 *db, sqlite3_stmt *st, int64_t **ids, size_t *n,
                                 sl_error *err) {
    size_t cap = 0, cnt = 0;
    int64_t *v = NULL;
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        if (cnt == cap) {
            size_t nc = cap ? cap * 2 : 64;
            int64_t *nv = sl__reallocarray(v, nc, sizeof *nv);
            if (!nv) {
                free(v);
                return sl__err_set(err, SL_E_NOMEM, "out of memory");
            }
            v = nv;
            cap = nc;
        }
        v[cnt++] = sqlite3_column_int64(st, 0);
    }
    if (r != SQLITE_DONE) {
        free(v);
        return sl__sqlerr(err, db, "read ids");
    }
    *ids = v;
    *n = cnt;
    return SL_OK;
}

sl_status sl_store_remove_product(sl_store *s, const char *id, int64_t **removed_images,
                                  size_t *n_removed, sl_error *err) {
    if (removed_images) *removed_images = NULL;
    if (n_removed) *n_removed = 0;
    sl_status rc = sl__need_writer(s, err);
    if (rc != SL_OK) return rc;
    if ((rc = sl_store_begin(s, err)) != SL_OK) return rc;
    sqlite3_stmt *st = NULL;
    int64_t *ids = NULL;
    size_t n = 0;
    sqlite3_int64 rowid = 0;
    if ((rc = sl__prepare(s->db, "SELECT rowid FROM products WHERE id = ?", &st, err)) != SL_OK) goto out;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int r = sqlite3_step(st);
    if (r == SQLITE_DONE) {
        rc = sl__err_set(err, SL_E_NOT_FOUND, "no product '%s'", id);
        goto out;
    }
    if (r != SQLITE_ROW) {
        rc = sl__sqlerr(err, s->db, "read product");
        goto out;
    }
    rowid = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if ((rc = sl__prepare(s->db, "SELECT id FROM images WHERE product_id = ? ORDER BY id", &st, err)) != SL_OK)
        goto out;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    if ((rc = sl__collect_ids(s->db, st, &ids, &n, err)) != SL_OK) goto out;
    sqlite3_finalize(st);
    if ((rc = sl__prepare(s->db, "DELETE FROM images WHERE product_id = ?", &st, err)) != SL_OK) goto out;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) {
        rc = sl__sqlerr(err, s->db, "delete images");
        goto out;
    }
    sqlite3_finalize(st);
    if ((rc = sl__prepare(s->db, "DELETE FROM products_fts WHERE rowid = ?", &st, err)) != SL_OK) goto out;
    sqlite3_bind_int64(st, 1, rowid);
    if (sqlite3_step(st) != SQLITE_DONE) {
        rc = sl__sqlerr(err, s->db, "delete text");
        goto out;
    }
    sqlite3_finalize(st);
    if ((rc = sl__prepare(s->db, "DELETE FROM products WHERE id = ?", &st, err)) != SL_OK) goto out;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) rc = sl__sqlerr(err, s->db, "delete product");
out:
    sqlite3_finalize(st);
    if (rc != SL_OK) {
        free(ids);
        sl_store_rollback(s);
        return rc;
    }
    if ((rc = sl_store_commit(s, err)) != SL_OK) {
        free(ids);
        return rc;
    }
    if (removed_images) *removed_images = ids;
    else free(ids);
    if (n_removed) *n_removed = n;
    return SL_OK;
}

/* Writer check + byte sizes of a vector and local features that SQLite can bind. */
static sl_status sl__blob_check(sl_store *s, size_t dim, size_t local_len, size_t *vbytes,
                                sl_error *err) {
    sl_status rc = sl__need_writer(s, err);
    if (rc != SL_OK) return rc;
    if (sl__mul_size(dim, sizeof(float), vbytes) || *vbytes > INT_MAX || local_len > INT_MAX)
        return sl__err_set(err, SL_E_TOO_LARGE, "vector or local features too large");
    return SL_OK;
}

sl_status sl_store_add_image(sl_store *s, const char *product_id, const char *source,
                             const char *hash, int64_t size, const float *vec, size_t dim,
                             const void *local, size_t local_len, int64_t *id, sl_error *err) {
    size_t vbytes;
    sl_status rc = sl__blob_check(s, dim, local_len, &vbytes, err);
    if (rc != SL_OK) return rc;
    sqlite3_stmt *st;
    if ((rc = sl__prepare(s->db, "INSERT INTO images(product_id, source, hash, size, vec, local) "
                                 "VALUES(?, ?, ?, ?, ?, ?)", &st, err)) != SL_OK)
        return rc;
    sqlite3_bind_text(st, 1, product_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, source ? source : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, hash ? hash : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, size);
    if (vec && dim) sqlite3_bind_blob(st, 5, vec, (int)vbytes, SQLITE_STATIC);
    else sqlite3_bind_null(st, 5);
    if (local && local_len) sqlite3_bind_blob(st, 6, local, (int)local_len, SQLITE_STATIC);
    else sqlite3_bind_null(st, 6);
    if (sqlite3_step(st) != SQLITE_DONE) rc = sl__sqlerr(err, s->db, "write image");
    else if (id) *id = sqlite3_last_insert_rowid(s->db);
    sqlite3_finalize(st);
    return rc;
}

sl_status sl_store_remove_image(sl_store *s, int64_t image_id, sl_error *err) {
    sl_status rc = sl__need_writer(s, err);
    if (rc != SL_OK) return rc;
    sqlite3_stmt *st;
    if ((rc = sl__prepare(s->db, "DELETE FROM images WHERE id = ?", &st, err)) != SL_OK) return rc;
    sqlite3_bind_int64(st, 1, image_id);
    if (sqlite3_step(st) != SQLITE_DONE) rc = sl__sqlerr(err, s->db, "delete image");
    else if (sqlite3_changes(s->db) == 0) rc = sl__err_set(err, SL_E_NOT_FOUND, "no image %lld", (long long)image_id);
    sqlite3_finalize(st);
    return rc;
}

sl_status sl_store_set_image_features(sl_store *s, int64_t image_id, const float *vec, size_t dim,
                                      const void *local, size_t local_len, sl_error *err) {
    size_t vbytes;
    sl_status rc = sl__blob_check(s, dim, local_len, &vbytes, err);
    if (rc != SL_OK) return rc;
    sqlite3_stmt *st;
    if ((rc = sl__prepare(s->db, "UPDATE images SET vec = ?, local = ? WHERE id = ?", &st, err)) != SL_OK)
        return rc;
    if (vec && dim) sqlite3_bind_blob(st, 1, vec, (int)vbytes, SQLITE_STATIC);
    else sqlite3_bind_null(st, 1);
    if (local && local_len) sqlite3_bind_blob(st, 2, local, (int)local_len, SQLITE_STATIC);
    else sqlite3_bind_null(st, 2);
    sqlite3_bind_int64(st, 3, image_id);
    if (sqlite3_step(st) != SQLITE_DONE) rc = sl__sqlerr(err, s->db, "update image");
    else if (sqlite3_changes(s->db) == 0) rc = sl__err_set(err, SL_E_NOT_FOUND, "no image %lld", (long long)image_id);
    sqlite3_finalize(st);
    return rc;
}

static sl_status sl__fill_ref(sqlite3_stmt *st, sl_image_ref *r, sl_error *err) {
    memset(r, 0, sizeof *r);
    r->id = sqlite3_column_int64(st, 0);
    r->product_id = sl__col_strdup(st, 1);
    r->source = sl__col_strdup(st, 2);
    const unsigned char *h = sqlite3_column_text(st, 3);
    snprintf(r->hash, sizeof r->hash, "%s", h ? (const char *)h : "");
    r->size = sqlite3_column_int64(st, 4);
    if (!r->product_id || !r->source) {
        sl_image_ref_clear(r);
        return sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    return SL_OK;
}

sl_status sl_store_image_products(sl_store *s, const int64_t *ids, size_t n, char ***products,
                                  sl_error *err) {
    *products = sl__callocarray(n + 1, sizeof **products);
    if (!*products) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    if (n == 0) return SL_OK;
    /* the ids go in as one JSON array: a single statement whatever n is */
    size_t cap;
    if (sl__mul_size(n, 24, &cap) || sl__add_size(cap, 3, &cap)) {
        free(*products);
        *products = NULL;
        return sl__err_set(err, SL_E_TOO_LARGE, "too many ids");
    }
    char *js = malloc(cap), *o = js;
    if (!js) {
        free(*products);
        *products = NULL;
        return sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    *o++ = '[';
    for (size_t i = 0; i < n; i++) o += snprintf(o, 24, i ? ",%lld" : "%lld", (long long)ids[i]);
    *o++ = ']';
    *o = '\0';
    sqlite3 *db = sl__rconn(s);
    sqlite3_stmt *st;
    sl_status rc = sl__take_stmt(s, db, SL__Q_IMAGE_PRODUCTS, &st, err);
    if (rc == SL_OK) {
        sqlite3_bind_text(st, 1, js, -1, SQLITE_STATIC);
        int r;
        while ((r = sqlite3_step(st)) == SQLITE_ROW) {
            sqlite3_int64 k = sqlite3_column_int64(st, 0);
            if (k < 0 || (size_t)k >= n || (*products)[k]) continue;
            if (!((*products)[k] = sl__col_strdup(st, 1))) {
                rc = sl__err_set(err, SL_E_NOMEM, "out of memory");
                break;
            }
        }
        if (rc == SL_OK && r != SQLITE_DONE) rc = sl__sqlerr(err, db, "read images");
        sl__give_stmt(s, db, SL__Q_IMAGE_PRODUCTS, st); /* reset before js is freed */
    }
    free(js);
    if (rc != SL_OK) {
        sl_strings_free(*products, n);
        *products = NULL;
    }
    return rc;
}

sl_status sl_store_all_images(sl_store *s, sl_image_ref **refs, size_t *n, sl_error *err) {
    return sl_store_product_images(s, NULL, refs, n, err);
}

sl_status sl_store_product_images(sl_store *s, const char *product_id, sl_image_ref **refs,
                                  size_t *n, sl_error *err) {
    *refs = NULL;
    *n = 0;
    sqlite3 *db = sl__rconn(s);
    sqlite3_stmt *st;
    sl_status rc = sl__prepare(db, product_id ? "SELECT id, product_id, source, hash, size FROM images "
                                                "WHERE product_id = ? ORDER BY id"
                                              : "SELECT id, product_id, source, hash, size FROM images ORDER BY id",
                               &st, err);
    if (rc != SL_OK) return rc;
    if (product_id) sqlite3_bind_text(st, 1, product_id, -1, SQLITE_STATIC);
    size_t cap = 0, cnt = 0;
    sl_image_ref *v = NULL;
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        if (cnt == cap) {
            size_t nc = cap ? cap * 2 : 8;
            sl_image_ref *nv = sl__reallocarray(v, nc, sizeof *nv);
            if (!nv) {
                rc = sl__err_set(err, SL_E_NOMEM, "out of memory");
                break;
            }
            v = nv;
            cap = nc;
        }
        if ((rc = sl__fill_ref(st, &v[cnt], err)) != SL_OK) break;
        cnt++;
    }
    if (rc == SL_OK && r != SQLITE_DONE) rc = sl__sqlerr(err, db, "read images");
    sqlite3_finalize(st);
    if (rc != SL_OK) {
        sl_image_refs_free(v, cnt);
        return rc;
    }
    *refs = v;
    *n = cnt;
    return SL_OK;
}

sl_status sl_store_get_image(sl_store *s, int64_t image_id, sl_image_ref *ref, sl_error *err) {
    memset(ref, 0, sizeof *ref);
    sqlite3 *db = sl__rconn(s);
    sqlite3_stmt *st;
    sl_status rc = sl__take_stmt(s, db, SL__Q_IMAGE, &st, err);
    if (rc != SL_OK) return rc;
    sqlite3_bind_int64(st, 1, image_id);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) rc = sl__fill_ref(st, ref, err);
    else if (r == SQLITE_DONE) rc = sl__err_set(err, SL_E_NOT_FOUND, "no image %lld", (long long)image_id);
    else rc = sl__sqlerr(err, db, "read image");
    sl__give_stmt(s, db, SL__Q_IMAGE, st);
    return rc;
}

/* A malloc'ed copy of column col's blob (NULL/0 when it is NULL or empty). */
static sl_status sl__blob_copy(sqlite3_stmt *st, int col, void **out, size_t *len, sl_error *err) {
    *out = NULL;
    *len = 0;
    const void *b = sqlite3_column_blob(st, col);
    int nb = sqlite3_column_bytes(st, col);
    if (!b || nb <= 0) return SL_OK;
    *out = malloc((size_t)nb);
    if (!*out) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    memcpy(*out, b, (size_t)nb);
    *len = (size_t)nb;
    return SL_OK;
}

static sl_status sl__blob_vec(sqlite3_stmt *st, int col, float **vec, size_t *dim, sl_error *err) {
    *vec = NULL;
    *dim = 0;
    int nb = sqlite3_column_bytes(st, col);
    if (nb % (int)sizeof(float)) return sl__err_set(err, SL_E_CORRUPT, "catalog.sqlite: vector of %d bytes", nb);
    void *b = NULL;
    size_t len = 0;
    sl_status rc = sl__blob_copy(st, col, &b, &len, err);
    *vec = b;
    *dim = len / sizeof(float);
    return rc;
}

sl_status sl_store_image_features(sl_store *s, int64_t image_id, float **vec, size_t *dim,
                                  void **local, size_t *local_len, sl_error *err) {
    *vec = NULL;
    *dim = 0;
    if (local) *local = NULL;
    if (local_len) *local_len = 0;
    sqlite3 *db = sl__rconn(s);
    sqlite3_stmt *st;
    sl_status rc = sl__prepare(db, "SELECT vec, local FROM images WHERE id = ?", &st, err);
    if (rc != SL_OK) return rc;
    sqlite3_bind_int64(st, 1, image_id);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) {
        rc = sl__blob_vec(st, 0, vec, dim, err);
        if (rc == SL_OK && local) {
            size_t len = 0;
            rc = sl__blob_copy(st, 1, local, &len, err);
            if (rc != SL_OK) {
                free(*vec);
                *vec = NULL;
            } else if (local_len) {
                *local_len = len;
            }
        }
    } else if (r == SQLITE_DONE) {
        rc = sl__err_set(err, SL_E_NOT_FOUND, "no image %lld", (long long)image_id);
    } else {
        rc = sl__sqlerr(err, db, "read image");
    }
    sqlite3_finalize(st);
    return rc;
}

/* A prepared statement of kind k for conn: from the pool when conn is rdb. */
static sl_status sl__take_stmt(sl_store *s, sqlite3 *conn, int k, sqlite3_stmt **st, sl_error *err) {
    *st = NULL;
    if (conn == s->rdb) {
        pthread_mutex_lock(&s->mu);
        if (s->n_pool[k] > 0) *st = s->pool[k][--s->n_pool[k]];
        pthread_mutex_unlock(&s->mu);
        if (*st) return SL_OK;
    }
    return sl__prepare(conn, sl__pooled_sql[k], st, err);
}

/* Resets st and keeps it for the next reader (or finalizes it when the pool is full). */
static void sl__give_stmt(sl_store *s, sqlite3 *conn, int k, sqlite3_stmt *st) {
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (conn == s->rdb) {
        pthread_mutex_lock(&s->mu);
        if (s->n_pool[k] < SL__STMT_POOL) {
            s->pool[k][s->n_pool[k]++] = st;
            st = NULL;
        }
        pthread_mutex_unlock(&s->mu);
    }
    sqlite3_finalize(st);
}

sl_status sl_store_image_local(sl_store *s, int64_t image_id, void **local, size_t *local_len,
                               sl_error *err) {
    *local = NULL;
    *local_len = 0;
    sqlite3 *db = sl__rconn(s);
    sqlite3_stmt *st;
    sl_status rc = sl__take_stmt(s, db, SL__Q_LOCAL, &st, err);
    if (rc != SL_OK) return rc;
    sqlite3_bind_int64(st, 1, image_id);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) {
        rc = sl__blob_copy(st, 0, local, local_len, err);
    } else if (r == SQLITE_DONE) {
        rc = sl__err_set(err, SL_E_NOT_FOUND, "no image %lld", (long long)image_id);
    } else {
        rc = sl__sqlerr(err, db, "read image");
    }
    sl__give_stmt(s, db, SL__Q_LOCAL, st);
    return rc;
}

sl_status sl_store_each_vector(sl_store *s, sl_store_vector_fn fn, void *ctx, sl_error *err) {
    sqlite3 *db = sl__rconn(s);
    sqlite3_stmt *st;
    sl_status rc = sl__prepare(db, "SELECT id, vec FROM images ORDER BY id", &st, err);
    if (rc != SL_OK) return rc;
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        int nb = sqlite3_column_bytes(st, 1);
        const void *b = sqlite3_column_blob(st, 1);
        if (!b || nb <= 0) continue;
        if (nb % (int)sizeof(float)) {
            rc = sl__err_set(err, SL_E_CORRUPT, "catalog.sqlite: image %lld: vector of %d bytes",
                             (long long)sqlite3_column_int64(st, 0), nb);
            break;
        }
        /* blobs are not guaranteed float-aligned: copy */
        float *v = malloc((size_t)nb);
        if (!v) {
            rc = sl__err_set(err, SL_E_NOMEM, "out of memory");
            break;
        }
        memcpy(v, b, (size_t)nb);
        rc = fn(ctx, sqlite3_column_int64(st, 0), v, (size_t)nb / sizeof(float));
        free(v);
        if (rc != SL_OK) break;
    }
    if (rc == SL_OK && r != SQLITE_DONE) rc = sl__sqlerr(err, db, "read vectors");
    sqlite3_finalize(st);
    return rc;
}

/* Collects the text first column of a statement. */
static sl_status sl__collect_strings(sqlite3 *db, sqlite3_stmt *st, char ***out, int64_t **counts,
                                     size_t *n, sl_error *err) {
    size_t cap = 0, cnt = 0;
    char **v = NULL;
    int64_t *c = NULL;
    int r;
    sl_status rc = SL_OK;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        if (cnt == cap) {
            size_t nc = cap ? cap * 2 : 64;
            char **nv = sl__reallocarray(v, nc, sizeof *nv);
            if (nv) v = nv;
            int64_t *ncnt = counts ? sl__reallocarray(c, nc, sizeof *ncnt) : NULL;
            if (ncnt) c = ncnt;
            if (!nv || (counts && !ncnt)) {
                rc = sl__err_set(err, SL_E_NOMEM, "out of memory");
                break;
            }
            cap = nc;
        }
        v[cnt] = sl__col_strdup(st, 0);
        if (!v[cnt]) {
            rc = sl__err_set(err, SL_E_NOMEM, "out of memory");
            break;
        }
        if (counts) c[cnt] = sqlite3_column_int64(st, 1);
        cnt++;
    }
    if (rc == SL_OK && r != SQLITE_DONE) rc = sl__sqlerr(err, db, "read");
    if (rc != SL_OK) {
        sl_strings_free(v, cnt);
        free(c);
        return rc;
    }
    *out = v;
    if (counts) *counts = c;
    *n = cnt;
    return SL_OK;
}

sl_status sl_store_product_ids(sl_store *s, char ***ids, size_t *n, sl_error *err) {
    *ids = NULL;
    *n = 0;
    sqlite3 *db = sl__rconn(s);
    sqlite3_stmt *st;
    sl_status rc = sl__prepare(db, "SELECT id FROM products ORDER BY id", &st, err);
    if (rc != SL_OK) return rc;
    rc = sl__collect_strings(db, st, ids, NULL, n, err);
    sqlite3_finalize(st);
    return rc;
}

sl_status sl_store_categories(sl_store *s, char ***names, int64_t **counts, size_t *n,
                              sl_error *err) {
    *names = NULL;
    *counts = NULL;
    *n = 0;
    sqlite3 *db = sl__rconn(s);
    sqlite3_stmt *st;
    sl_status rc = sl__prepare(db, "SELECT category, count(*) FROM products WHERE category <> '' "
                                   "GROUP BY category ORDER BY category", &st, err);
    if (rc != SL_OK) return rc;
    rc = sl__collect_strings(db, st, names, counts, n, err);
    sqlite3_finalize(st);
    return rc;
}

int sl_store_filter_empty(const sl_store_filter *f) {
    return !f || (!(f->category && *f->category) && !f->has_min_price && !f->has_max_price &&
                  !(f->text && *f->text));
}

/* Turns user words into an FTS5 query of quoted terms joined by AND: no FTS5 syntax from the
 * user is interpreted. NULL when there is no word. */
static char *sl__fts_query(const char *text) {
    size_t n = strlen(text), cap;
    if (sl__mul_size(n, 3, &cap) || sl__add_size(cap, 8, &cap)) return NULL;
    char *q = malloc(cap), *o = q;
    if (!q) return NULL;
    const char *p = text;
    int words = 0;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
        if (!*p) break;
        if (words++) *o++ = ' ';
        *o++ = '"';
        while (*p && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            if (*p == '"') *o++ = '"';
            *o++ = *p++;
        }
        *o++ = '"';
    }
    *o = '\0';
    if (!words) {
        free(q);
        return NULL;
    }
    return q;
}

sl_status sl_store_filter_images(sl_store *s, const sl_store_filter *f, int64_t **ids,
                                 size_t *n, sl_error *err) {
    *ids = NULL;
    *n = 0;
    char sql[512] = "SELECT i.id FROM images i JOIN products p ON p.id = i.product_id WHERE 1";
    char *fq = NULL;
    if (f && f->text && *f->text) {
        fq = sl__fts_query(f->text);
        if (!fq) return SL_OK; /* no words: nothing matches */
        strcat(sql, " AND p.rowid IN (SELECT rowid FROM products_fts WHERE products_fts MATCH ?4)");
    }
    if (f && f->category && *f->category) strcat(sql, " AND p.category = ?1");
    if (f && f->has_min_price) strcat(sql, " AND p.price >= ?2");
    if (f && f->has_max_price) strcat(sql, " AND p.price <= ?3");
    strcat(sql, " ORDER BY i.id");
    sqlite3 *db = sl__rconn(s);
    sqlite3_stmt *st;
    sl_status rc = sl__prepare(db, sql, &st, err);
    if (rc != SL_OK) {
        free(fq);
        return rc;
    }
    if (f && f->category && *f->category) sqlite3_bind_text(st, 1, f->category, -1, SQLITE_STATIC);
    if (f && f->has_min_price) sqlite3_bind_double(st, 2, f->min_price);
    if (f && f->has_max_price) sqlite3_bind_double(st, 3, f->max_price);
    if (fq) sqlite3_bind_text(st, 4, fq, -1, SQLITE_STATIC);
    rc = sl__collect_ids(db, st, ids, n, err);
    sqlite3_finalize(st);
    free(fq);
    return rc;
}

static int64_t sl__file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (int64_t)sb.st_size : 0;
}

sl_status sl_store_counts_get(sl_store *s, sl_store_counts *c, sl_error *err) {
    memset(c, 0, sizeof *c);
    sqlite3 *db = sl__rconn(s);
    sqlite3_stmt *st;
    sl_status rc = sl__prepare(db, "SELECT (SELECT count(*) FROM products), (SELECT count(*) FROM images)",
                               &st, err);
    if (rc != SL_OK) return rc;
    if (sqlite3_step(st) == SQLITE_ROW) {
        c->products = sqlite3_column_int64(st, 0);
        c->images = sqlite3_column_int64(st, 1);
    } else {
        rc = sl__sqlerr(err, db, "count");
    }
    sqlite3_finalize(st);
    char *p = sl_store_path(s, "catalog.sqlite");
    char *w = sl_store_path(s, "catalog.sqlite-wal");
    if (p) c->db_bytes += sl__file_size(p);
    if (w) c->db_bytes += sl__file_size(w);
    free(p);
    free(w);
    return rc;
}

sl_status sl_store_generation(sl_store *s, int64_t *gen, sl_error *err) {
    char *v = NULL;
    sl_status rc = sl_store_meta_get(s, "generation", &v, err);
    *gen = rc == SL_OK ? strtoll(v, NULL, 10) : 0;
    free(v);
    return rc;
}

sl_status sl_store_bump_generation(sl_store *s, sl_error *err) {
    sl_status rc = sl__need_writer(s, err);
    if (rc != SL_OK) return rc;
    return sl__exec(s->db, "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'", err);
}
