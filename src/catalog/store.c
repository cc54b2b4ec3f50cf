/*
 * catalog/store.c - the catalog store: SQLite (WAL mode, synchronous=FULL) holding products,
 * images with their vectors and local features, references (labelled photos of a product, kept
 * for search only, index ids from SL_STORE_REF_ID_BASE), an FTS5 index of title + description,
 * and a meta table with the format/schema versions, the feature spec and a generation counter.
 * Schema and byte layout: docs/formats/store.md.
 *
 * Invariants:
 *  - Image files: images.file names the store's own copy ("images/<sha256 of the copy>.<ext>",
 *    '' only for rows of a schema 1 store not yet copied in). A trigger queues the file of every
 *    deleted image row (and the old file of a changed one) in pending_deletions inside the same
 *    transaction; sl_store_gc deletes the files nobody references any more, under the write
 *    lock, after that transaction committed, so a file is never deleted while a committed row
 *    needs it, and a crash in between is finished by the next read-write open.
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
#include "catalog/pg.h"
#include "util/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SL__STMT_POOL 16     /* idle prepared statements kept per kind */

/* The read statements kept prepared (sl__pooled_sql). */
enum { SL__Q_LOCAL, SL__Q_PRODUCT, SL__Q_IMAGE, SL__Q_IMAGE_PRODUCTS, SL__Q_VEC, SL__Q_KINDS };

struct sl_store {
    sl__pg *pg;             /* a PostgreSQL store (store_pg.c does the work): nothing below used */
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
    "SELECT local FROM images WHERE id = ?1"
    " UNION ALL SELECT local FROM refs WHERE id = ?1 - " SL__REF_BASE_SQL,
    "SELECT id, title, category, price, description, url, attrs, currency FROM products WHERE id = ?",
    "SELECT id, product_id, source, hash, size, file FROM images WHERE id = ?",
    "SELECT j.key, i.product_id FROM json_each(?1) j JOIN images i ON i.id = j.value"
    " UNION ALL SELECT j.key, r.product_id FROM json_each(?1) j JOIN refs r ON r.id = j.value - " SL__REF_BASE_SQL,
    "SELECT vec FROM images WHERE id = ?1"
    " UNION ALL SELECT vec FROM refs WHERE id = ?1 - " SL__REF_BASE_SQL,
};

static const char *const sl__schema =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS products("
    " id TEXT PRIMARY KEY, title TEXT NOT NULL DEFAULT '', category TEXT NOT NULL DEFAULT '',"
    " price REAL, description TEXT NOT NULL DEFAULT '', url TEXT NOT NULL DEFAULT '',"
    " attrs TEXT NOT NULL DEFAULT '{}', currency TEXT NOT NULL DEFAULT '');"
    "CREATE INDEX IF NOT EXISTS products_category ON products(category);"
    "CREATE TABLE IF NOT EXISTS images("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " product_id TEXT NOT NULL REFERENCES products(id) ON DELETE CASCADE,"
    " source TEXT NOT NULL, hash TEXT NOT NULL, size INTEGER NOT NULL,"
    " vec BLOB, local BLOB, file TEXT NOT NULL DEFAULT '');"
    "CREATE INDEX IF NOT EXISTS images_product ON images(product_id);"
    "CREATE VIRTUAL TABLE IF NOT EXISTS products_fts USING fts5(title, description,"
    " tokenize = 'unicode61 remove_diacritics 2');";

/* What schema 3 adds: references (labelled photos of a product, include/shoplens/store.h). */
static const char *const sl__schema3 =
    "CREATE TABLE IF NOT EXISTS refs("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " product_id TEXT NOT NULL REFERENCES products(id) ON DELETE CASCADE,"
    " source TEXT NOT NULL DEFAULT '', vec BLOB NOT NULL, local BLOB);"
    "CREATE INDEX IF NOT EXISTS refs_product ON refs(product_id);";

/* Indexes that only speed up reads: created by every read-write open when missing (an older
 * store gets them once, in a few seconds at 10^6 products; a shoplens without them just keeps
 * them up to date, SQLite does that). products_price: price filters (sl_store_filter_images)
 * read a range of it and look up the images of each product in images_product, instead of
 * scanning every images row (which holds the vectors: 130-150 ms per query at 10^5 images,
 * bench/results/scale.md); covering (price, id), so the products table is not read. */
static const char *const sl__read_indexes =
    "CREATE INDEX IF NOT EXISTS products_price ON products(price, id);";

/* What schema 2 adds to schema 1 (also run, after the schema above, for a new store). */
static const char *const sl__schema2 =
    "CREATE INDEX IF NOT EXISTS images_file ON images(file);"
    "CREATE TABLE IF NOT EXISTS pending_deletions(file TEXT PRIMARY KEY);"
    "CREATE TRIGGER IF NOT EXISTS images_release_file AFTER DELETE ON images"
    " WHEN old.file <> '' BEGIN"
    " INSERT OR IGNORE INTO pending_deletions(file) VALUES(old.file); END;"
    "CREATE TRIGGER IF NOT EXISTS images_replace_file AFTER UPDATE OF file ON images"
    " WHEN old.file <> '' AND old.file <> new.file BEGIN"
    " INSERT OR IGNORE INTO pending_deletions(file) VALUES(old.file); END;";

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
    free(p->currency);
    memset(p, 0, sizeof *p);
}

void sl_products_free(sl_product *v, size_t n) {
    if (!v) return;
    for (size_t i = 0; i < n; i++) sl_product_clear(&v[i]);
    free(v);
}

void sl_image_ref_clear(sl_image_ref *r) {
    if (!r) return;
    free(r->product_id);
    free(r->source);
    free(r->file);
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

/* Runs one statement whose only parameter ?1 is the text id to completion (a DELETE or UPDATE
 * by product id); what names it in the error. */
static sl_status sl__exec_id(sqlite3 *db, const char *sql, const char *id, const char *what, sl_error *err) {
    sqlite3_stmt *st = NULL;
    sl_status rc = sl__prepare(db, sql, &st, err);
    if (rc != SL_OK) return rc;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) rc = sl__sqlerr(err, db, what);
    sqlite3_finalize(st);
    return rc;
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

/* Reads the format and schema versions of an existing store (SL_E_CORRUPT when it is not a
 * shoplens store). */
static sl_status sl__read_versions(sl_store *s, sqlite3 *db, long *f, long *c, sl_error *err) {
    char *magic = NULL, *fmt = NULL, *sch = NULL;
    sl_status st = sl__meta_get_conn(db, "magic", &magic, err);
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
    *f = strtol(fmt, NULL, 10);
    *c = strtol(sch, NULL, 10);
    free(fmt);
    free(sch);
    return SL_OK;
}

static int sl__upgradable(long f, long c) {
    return f == SL_STORE_FORMAT_VERSION && c >= SL_STORE_SCHEMA_UPGRADABLE_FROM &&
           c < SL_STORE_SCHEMA_VERSION;
}

static sl_status sl__version_error(sl_store *s, long f, long c, sl_error *err) {
    int older = f < SL_STORE_FORMAT_VERSION || (f == SL_STORE_FORMAT_VERSION && c < SL_STORE_SCHEMA_VERSION);
    return sl__err_set(err, SL_E_VERSION,
                       "%s: store format %ld schema %ld is %s than this shoplens (format %d "
                       "schema %d); use a shoplens of the matching version%s",
                       s->dir, f, c, older ? "older" : "newer", SL_STORE_FORMAT_VERSION,
                       SL_STORE_SCHEMA_VERSION,
                       older ? " or re-create the store (shoplens init) and re-add the catalog" : "");
}

/* Writes the versions of a new store (inside its creating transaction). */
static sl_status sl__write_versions(sqlite3 *db, sl_error *err) {
    char buf[32];
    sl_status st;
    snprintf(buf, sizeof buf, "%d", SL_STORE_FORMAT_VERSION);
    if ((st = sl__meta_set_conn(db, "format_version", buf, err)) != SL_OK) return st;
    snprintf(buf, sizeof buf, "%d", SL_STORE_SCHEMA_VERSION);
    if ((st = sl__meta_set_conn(db, "schema_version", buf, err)) != SL_OK) return st;
    if ((st = sl__meta_set_conn(db, "generation", "0", err)) != SL_OK) return st;
    return sl__meta_set_conn(db, "magic", "shoplens-store", err);
}

/* Schema 1 -> 3 or 2 -> 3, in one transaction on the writer connection db. 1 -> 2: the currency
 * column, the images.file column with its index, pending_deletions and its triggers. 2 -> 3: the
 * refs table (empty). Images uploaded over
 * HTTP were already copies under images/ named by their SHA-256: their rows point at them.
 * Images a schema 1 store read from the feed's folder keep file = '' and are still read from
 * their source until `shoplens verify --repair` copies them in. Another process may have
 * upgraded meanwhile: the version is read again inside the transaction. */
static sl_status sl__upgrade(sl_store *s, sqlite3 *db, sl_error *err) {
    sl_status st = sl__exec(db, "BEGIN IMMEDIATE", err);
    if (st != SL_OK) return st;
    long f = 0, c = 0;
    if ((st = sl__read_versions(s, db, &f, &c, err)) != SL_OK) goto fail;
    if (!sl__upgradable(f, c)) {
        sl__exec(db, "ROLLBACK", NULL);
        return SL_OK; /* done by someone else (or not ours to do: the caller checks again) */
    }
    if ((st = sl__exec(db, sl__schema3, err)) != SL_OK) goto fail;
    if (c >= 2) goto done;
    if ((st = sl__exec(db, "ALTER TABLE products ADD COLUMN currency TEXT NOT NULL DEFAULT '';"
                           "ALTER TABLE images ADD COLUMN file TEXT NOT NULL DEFAULT '';", err)) != SL_OK ||
        (st = sl__exec(db, sl__schema2, err)) != SL_OK)
        goto fail;
    {
        sqlite3_stmt *q = NULL, *u = NULL;
        if ((st = sl__prepare(db, "SELECT id, source, hash FROM images", &q, err)) != SL_OK) goto fail;
        if ((st = sl__prepare(db, "UPDATE images SET file = ? WHERE id = ?", &u, err)) != SL_OK) {
            sqlite3_finalize(q);
            goto fail;
        }
        int r;
        while (st == SL_OK && (r = sqlite3_step(q)) == SQLITE_ROW) {
            const char *src = (const char *)sqlite3_column_text(q, 1);
            const char *hash = (const char *)sqlite3_column_text(q, 2);
            const char *base = src ? strrchr(src, '/') : NULL;
            if (!base || !hash || base - src < 7 || strncmp(base - 7, "/images", 7) != 0) continue;
            char rel[SL__IMAGE_FILE_MAX];
            snprintf(rel, sizeof rel, "images%s", base);
            if (!sl__image_file_valid(rel) || strncmp(rel + 7, hash, 64) != 0) continue;
            char *abs = sl_store_path(s, rel);
            struct stat sb;
            int here = abs && stat(abs, &sb) == 0 && S_ISREG(sb.st_mode);
            free(abs);
            if (!here) continue;
            sqlite3_bind_text(u, 1, rel, -1, SQLITE_TRANSIENT);
            sqlite3_bind_int64(u, 2, sqlite3_column_int64(q, 0));
            if (sqlite3_step(u) != SQLITE_DONE) st = sl__sqlerr(err, db, "upgrade images");
            sqlite3_reset(u);
        }
        if (st == SL_OK && r != SQLITE_DONE) st = sl__sqlerr(err, db, "upgrade images");
        sqlite3_finalize(q);
        sqlite3_finalize(u);
        if (st != SL_OK) goto fail;
    }
done:;
    char buf[32];
    snprintf(buf, sizeof buf, "%d", SL_STORE_SCHEMA_VERSION);
    if ((st = sl__meta_set_conn(db, "schema_version", buf, err)) != SL_OK) goto fail;
    if ((st = sl__exec(db, "COMMIT", err)) != SL_OK) goto fail;
    return SL_OK;
fail:
    sl__exec(db, "ROLLBACK", NULL);
    return sl__err_prefix(err, "%s: upgrading the store from schema %ld to %d", s->dir, c,
                          SL_STORE_SCHEMA_VERSION);
}

/* Checks the versions of an existing store on connection db, upgrading an older schema in
 * place when possible. writer: a read-write connection to upgrade with, or NULL (read-only
 * open: a temporary read-write connection is opened for the upgrade). */
static sl_status sl__check_versions(sl_store *s, sqlite3 *db, sqlite3 *writer, const char *path,
                                    sl_error *err) {
    long f = 0, c = 0;
    sl_status st = sl__read_versions(s, db, &f, &c, err);
    if (st != SL_OK) return st;
    if (f == SL_STORE_FORMAT_VERSION && c == SL_STORE_SCHEMA_VERSION) return SL_OK;
    if (!sl__upgradable(f, c)) return sl__version_error(s, f, c, err);
    sqlite3 *w = writer;
    if (!w) {
        sl_error e2;
        sl_error_clear(&e2);
        if (sl__open_conn(path, SQLITE_OPEN_READWRITE, &w, &e2) != SL_OK)
            return sl__err_set(err, SL_E_VERSION,
                               "%s: store schema %ld must be upgraded to %d, which needs write "
                               "access (%s); open it once with a shoplens that may write, e.g. "
                               "'shoplens verify --repair --store %s'", s->dir, c,
                               SL_STORE_SCHEMA_VERSION, e2.message, s->dir);
        (void)sl__exec(w, "PRAGMA foreign_keys=ON;", NULL);
    }
    st = sl__upgrade(s, w, err);
    if (w != writer) sqlite3_close(w);
    if (st != SL_OK) return st;
    if ((st = sl__read_versions(s, db, &f, &c, err)) != SL_OK) return st;
    if (f != SL_STORE_FORMAT_VERSION || c != SL_STORE_SCHEMA_VERSION) return sl__version_error(s, f, c, err);
    return SL_OK;
}

void sl_store_free(sl_store *s) {
    if (!s) return;
    sl__pg_free(s->pg);
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
    if (sl__pg_is_url(dir)) {
        sl_status pst = sl__pg_open(dir, create, read_only, &s->pg, err);
        if (pst != SL_OK) {
            sl_store_free(s);
            return pst;
        }
        *out = s;
        return SL_OK;
    }
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
                (st = sl__exec(s->db, sl__schema2, err)) != SL_OK ||
                (st = sl__exec(s->db, sl__schema3, err)) != SL_OK ||
                (st = sl__write_versions(s->db, err)) != SL_OK) {
                sl__exec(s->db, "ROLLBACK", NULL);
                goto fail;
            }
            if ((st = sl__exec(s->db, "COMMIT", err)) != SL_OK) goto fail;
        } else if ((st = sl__check_versions(s, s->db, s->db, path, err)) != SL_OK) {
            goto fail;
        }
        if ((st = sl__exec(s->db, sl__read_indexes, err)) != SL_OK) goto fail;
    }
    if ((st = sl__open_conn(path, SQLITE_OPEN_READONLY, &s->rdb, err)) != SL_OK) goto fail;
    /* The reader's page cache: 32 MiB (SQLite's default is 2) keeps the indexes a filter walks
     * (products_price and images_product: ~8 MB at 10^5 products) in memory between searches;
     * a 50 % price filter at 10^5 images went from 51 to 41 ms of CPU (pread of those pages
     * was 20 % of it). Pages are allocated as used, up to that bound. */
    if ((st = sl__exec(s->rdb, "PRAGMA foreign_keys=ON; PRAGMA cache_size=-32768;", err)) != SL_OK) goto fail;
    if (read_only && (st = sl__check_versions(s, s->rdb, NULL, path, err)) != SL_OK) goto fail;
    free(path);
    /* finish the file deletions a crash interrupted (a busy store: the next write does it) */
    if (!read_only) {
        char **pending = NULL;
        size_t np = 0;
        if (sl_store_pending_files(s, &pending, &np, NULL) == SL_OK && np > 0) (void)sl_store_gc(s, NULL, NULL);
        sl_strings_free(pending, np);
    }
    *out = s;
    return SL_OK;
fail:
    free(path);
    sl_store_free(s);
    return st;
}

const char *sl_store_dir(const sl_store *s) { return s->pg ? sl__pg_label(s->pg) : s->dir; }

char *sl_store_path(const sl_store *s, const char *name) {
    if (s->pg) return NULL;
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
    if (s->pg) return sl__pg_meta_get(s->pg, key, value, err);
    return sl__meta_get_conn(sl__rconn(s), key, value, err);
}

sl_status sl_store_meta_set(sl_store *s, const char *key, const char *value, sl_error *err) {
    if (s->pg) return sl__pg_meta_set(s->pg, key, value, err);
    sl_status st = sl__need_writer(s, err);
    return st != SL_OK ? st : sl__meta_set_conn(s->db, key, value, err);
}

sl_status sl_store_begin(sl_store *s, sl_error *err) {
    if (s->pg) return sl__pg_begin(s->pg, err);
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
    if (s->pg) return sl__pg_commit(s->pg, err);
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
    if (s->pg) {
        sl__pg_rollback(s->pg);
        return;
    }
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

sl_status sl__product_check(const sl_product *p, char cur[SL_PRODUCT_CURRENCY_LEN + 1], sl_error *err) {
    const char *bad_id = sl_product_id_check(p->id);
    if (bad_id) return sl__err_set(err, SL_E_INVALID, "bad product id: it %s", bad_id);
    if (!sl_product_currency_valid(p->currency, cur))
        return sl__err_set(err, SL_E_INVALID, "bad currency (a three-letter ISO 4217 code such as USD)");
    if (p->has_price && !(p->price >= SL_PRODUCT_PRICE_MIN && p->price <= SL_PRODUCT_PRICE_MAX))
        return sl__err_set(err, SL_E_INVALID, "price must be a number in %.0f..%.0f",
                           SL_PRODUCT_PRICE_MIN, SL_PRODUCT_PRICE_MAX);
    return SL_OK;
}

sl_status sl_store_put_product(sl_store *s, const sl_product *p, sl_error *err) {
    if (s->pg) return sl__pg_put_product(s->pg, p, err);
    sl_status rc = sl__need_writer(s, err);
    if (rc != SL_OK) return rc;
    char cur[SL_PRODUCT_CURRENCY_LEN + 1];
    if ((rc = sl__product_check(p, cur, err)) != SL_OK) return rc;
    if ((rc = sl_store_begin(s, err)) != SL_OK) return rc;
    sqlite3_stmt *st = NULL;
    rc = sl__prepare(s->db,
                     "INSERT INTO products(id, title, category, price, description, url, attrs, currency) "
                     "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT(id) DO UPDATE SET "
                     "title = ?2, category = ?3, price = ?4, description = ?5, url = ?6, attrs = ?7, "
                     "currency = ?8 RETURNING rowid", &st, err);
    if (rc != SL_OK) goto out;
    sqlite3_bind_text(st, 1, p->id, -1, SQLITE_STATIC);
    sl__bind_opt_text(st, 2, p->title);
    sl__bind_opt_text(st, 3, p->category);
    if (p->has_price) sqlite3_bind_double(st, 4, p->price);
    else sqlite3_bind_null(st, 4);
    sl__bind_opt_text(st, 5, p->description);
    sl__bind_opt_text(st, 6, p->url);
    sqlite3_bind_text(st, 7, p->attrs_json && *p->attrs_json ? p->attrs_json : "{}", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 8, cur, -1, SQLITE_TRANSIENT);
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

/* A product from a row (id, title, category, price, description, url, attrs, currency). -1
 * when out of memory (the caller clears *p). */
static int sl__fill_product(sqlite3_stmt *st, sl_product *p) {
    p->id = sl__col_strdup(st, 0);
    p->title = sl__col_strdup(st, 1);
    p->category = sl__col_strdup(st, 2);
    p->has_price = sqlite3_column_type(st, 3) != SQLITE_NULL;
    p->price = p->has_price ? sqlite3_column_double(st, 3) : 0;
    p->description = sl__col_strdup(st, 4);
    p->url = sl__col_strdup(st, 5);
    p->attrs_json = sl__col_strdup(st, 6);
    p->currency = sl__col_strdup(st, 7);
    return p->id && p->title && p->category && p->description && p->url && p->attrs_json && p->currency ? 0 : -1;
}

sl_status sl_store_get_product(sl_store *s, const char *id, sl_product *out, sl_error *err) {
    if (s->pg) return sl__pg_get_product(s->pg, id, out, err);
    memset(out, 0, sizeof *out);
    sqlite3 *db = sl__rconn(s);
    sqlite3_stmt *st;
    sl_status rc = sl__take_stmt(s, db, SL__Q_PRODUCT, &st, err);
    if (rc != SL_OK) return rc;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) {
        if (sl__fill_product(st, out) != 0) {
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
    if (s->pg) return sl__pg_remove_product(s->pg, id, removed_images, n_removed, err);
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
    if ((rc = sl__prepare(s->db, "SELECT id FROM images WHERE product_id = ?1 UNION ALL SELECT id + "
                                 SL__REF_BASE_SQL " FROM refs WHERE product_id = ?1 ORDER BY 1", &st, err)) != SL_OK)
        goto out;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    if ((rc = sl__collect_ids(s->db, st, &ids, &n, err)) != SL_OK) goto out;
    sqlite3_finalize(st);
    st = NULL;
    if ((rc = sl__exec_id(s->db, "DELETE FROM refs WHERE product_id = ?", id, "delete references", err)) != SL_OK ||
        (rc = sl__exec_id(s->db, "DELETE FROM images WHERE product_id = ?", id, "delete images", err)) != SL_OK)
        goto out;
    if ((rc = sl__prepare(s->db, "DELETE FROM products_fts WHERE rowid = ?", &st, err)) != SL_OK) goto out;
    sqlite3_bind_int64(st, 1, rowid);
    if (sqlite3_step(st) != SQLITE_DONE) {
        rc = sl__sqlerr(err, s->db, "delete text");
        goto out;
    }
    sqlite3_finalize(st);
    st = NULL;
    rc = sl__exec_id(s->db, "DELETE FROM products WHERE id = ?", id, "delete product", err);
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

/* INSERT of an image row; want_id > 0 inserts (or replaces) that id, else a new id is given. */
static sl_status sl__insert_image(sl_store *s, int64_t want_id, const char *product_id, const char *source,
                                  const char *hash, int64_t size, const char *file, const float *vec,
                                  size_t dim, const void *local, size_t local_len, int64_t *id,
                                  sl_error *err) {
    size_t vbytes;
    sl_status rc = sl__blob_check(s, dim, local_len, &vbytes, err);
    if (rc != SL_OK) return rc;
    if (!file || !sl__image_file_valid(file))
        return sl__err_set(err, SL_E_INVALID, "bad image file name (images/<sha256>.<ext>)");
    sqlite3_stmt *st;
    if ((rc = sl__prepare(s->db, want_id > 0 ? "INSERT OR REPLACE INTO images(product_id, source, hash, size, vec, local, file, id) "
                                               "VALUES(?, ?, ?, ?, ?, ?, ?, ?)"
                                             : "INSERT INTO images(product_id, source, hash, size, vec, local, file) "
                                               "VALUES(?, ?, ?, ?, ?, ?, ?)", &st, err)) != SL_OK)
        return rc;
    sqlite3_bind_text(st, 7, file, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 1, product_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, source ? source : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, hash ? hash : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, size);
    if (vec && dim) sqlite3_bind_blob(st, 5, vec, (int)vbytes, SQLITE_STATIC);
    else sqlite3_bind_null(st, 5);
    if (local && local_len) sqlite3_bind_blob(st, 6, local, (int)local_len, SQLITE_STATIC);
    else sqlite3_bind_null(st, 6);
    if (want_id > 0) sqlite3_bind_int64(st, 8, want_id);
    if (sqlite3_step(st) != SQLITE_DONE) rc = sl__sqlerr(err, s->db, "write image");
    else if (id) *id = want_id > 0 ? want_id : sqlite3_last_insert_rowid(s->db);
    sqlite3_finalize(st);
    return rc;
}

sl_status sl_store_add_image(sl_store *s, const char *product_id, const char *source,
                             const char *hash, int64_t size, const char *file, const float *vec,
                             size_t dim, const void *local, size_t local_len, int64_t *id,
                             sl_error *err) {
    if (s->pg) return sl__pg_add_image(s->pg, 0, product_id, source, hash, size, file, vec, dim, local, local_len, id, err);
    return sl__insert_image(s, 0, product_id, source, hash, size, file, vec, dim, local, local_len, id, err);
}

sl_status sl_store_remove_image(sl_store *s, int64_t image_id, sl_error *err) {
    if (s->pg) return sl__pg_remove_image(s->pg, image_id, err);
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

sl_status sl_store_set_image_file(sl_store *s, int64_t image_id, const char *file,
                                  sl_error *err) {
    if (s->pg) return sl__pg_set_image_file(s->pg, image_id, file, err);
    sl_status rc = sl__need_writer(s, err);
    if (rc != SL_OK) return rc;
    if (!file || !sl__image_file_valid(file))
        return sl__err_set(err, SL_E_INVALID, "bad image file name (images/<sha256>.<ext>)");
    sqlite3_stmt *st;
    if ((rc = sl__prepare(s->db, "UPDATE images SET file = ? WHERE id = ?", &st, err)) != SL_OK) return rc;
    sqlite3_bind_text(st, 1, file, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, image_id);
    if (sqlite3_step(st) != SQLITE_DONE) rc = sl__sqlerr(err, s->db, "update image");
    else if (sqlite3_changes(s->db) == 0) rc = sl__err_set(err, SL_E_NOT_FOUND, "no image %lld", (long long)image_id);
    sqlite3_finalize(st);
    return rc;
}

sl_status sl_store_set_image_features(sl_store *s, int64_t image_id, const float *vec, size_t dim,
                                      const void *local, size_t local_len, sl_error *err) {
    if (s->pg) return sl__pg_set_image_features(s->pg, image_id, vec, dim, local, local_len, err);
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

/* Fills a ref from a row (id, product_id, source, hash, size, file): file resolved against the
 * store directory, or the source for a row of a schema 1 store not copied in yet. */
static sl_status sl__fill_ref(sl_store *s, sqlite3_stmt *st, sl_image_ref *r, sl_error *err) {
    memset(r, 0, sizeof *r);
    r->id = sqlite3_column_int64(st, 0);
    r->product_id = sl__col_strdup(st, 1);
    r->source = sl__col_strdup(st, 2);
    const unsigned char *h = sqlite3_column_text(st, 3);
    snprintf(r->hash, sizeof r->hash, "%s", h ? (const char *)h : "");
    r->size = sqlite3_column_int64(st, 4);
    const char *file = (const char *)sqlite3_column_text(st, 5);
    r->in_store = file && *file;
    r->file = r->in_store ? sl_store_path(s, file) : sl__strdup(r->source ? r->source : "");
    if (!r->product_id || !r->source || !r->file) {
        sl_image_ref_clear(r);
        return sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    return SL_OK;
}

sl_status sl_store_image_products(sl_store *s, const int64_t *ids, size_t n, char ***products,
                                  sl_error *err) {
    if (s->pg) return sl__pg_image_products(s->pg, ids, n, products, err);
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
    if (s->pg) return sl__pg_product_images(s->pg, product_id, refs, n, err);
    *refs = NULL;
    *n = 0;
    sqlite3 *db = sl__rconn(s);
    sqlite3_stmt *st;
    sl_status rc = sl__prepare(db, product_id ? "SELECT id, product_id, source, hash, size, file FROM images "
                                                "WHERE product_id = ? ORDER BY id"
                                              : "SELECT id, product_id, source, hash, size, file FROM images ORDER BY id",
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
        if ((rc = sl__fill_ref(s, st, &v[cnt], err)) != SL_OK) break;
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
    if (s->pg) return sl__pg_get_image(s->pg, image_id, ref, err);
    memset(ref, 0, sizeof *ref);
    sqlite3 *db = sl__rconn(s);
    sqlite3_stmt *st;
    sl_status rc = sl__take_stmt(s, db, SL__Q_IMAGE, &st, err);
    if (rc != SL_OK) return rc;
    sqlite3_bind_int64(st, 1, image_id);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) rc = sl__fill_ref(s, st, ref, err);
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
    if (s->pg) return sl__pg_image_features(s->pg, image_id, vec, dim, local, local_len, err);
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
    if (s->pg) return sl__pg_image_local(s->pg, image_id, local, local_len, err);
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

sl_status sl_store_image_vectors(sl_store *s, const int64_t *ids, size_t n, size_t dim, float *out,
                                 unsigned char *found, sl_error *err) {
    if (n) memset(found, 0, n);
    if (n == 0) return SL_OK;
    size_t vbytes;
    if (sl__mul_size(dim, sizeof(float), &vbytes)) return sl__err_set(err, SL_E_TOO_LARGE, "vector too large");
    if (s->pg) { /* one image at a time: PostgreSQL stores are searched through their nodes */
        sl_status rc = SL_OK;
        for (size_t i = 0; i < n && rc == SL_OK; i++) {
            float *v = NULL;
            size_t d = 0;
            sl_error one = { SL_OK, "" };
            rc = sl__pg_image_features(s->pg, ids[i], &v, &d, NULL, NULL, &one);
            if (rc == SL_E_NOT_FOUND) {
                rc = SL_OK; /* removed meanwhile: not found, as in SQLite */
            } else if (rc != SL_OK) {
                if (err) *err = one;
            } else if (rc == SL_OK && v && d != dim) {
                rc = sl__err_set(err, SL_E_CORRUPT, "image %lld: vector of %zu floats, expected %zu",
                                 (long long)ids[i], d, dim);
            } else if (rc == SL_OK && v) {
                memcpy(out + i * dim, v, vbytes);
                found[i] = 1;
            }
            free(v);
        }
        return rc;
    }
    sqlite3 *db = sl__rconn(s);
    sqlite3_stmt *st;
    sl_status rc = sl__take_stmt(s, db, SL__Q_VEC, &st, err);
    if (rc != SL_OK) return rc;
    for (size_t i = 0; i < n && rc == SL_OK; i++) {
        sqlite3_bind_int64(st, 1, ids[i]);
        int r = sqlite3_step(st);
        if (r == SQLITE_ROW) {
            const void *b = sqlite3_column_blob(st, 0);
            int nb = sqlite3_column_bytes(st, 0);
            if (b && nb > 0 && (size_t)nb != vbytes)
                rc = sl__err_set(err, SL_E_CORRUPT, "catalog.sqlite: image %lld: vector of %d bytes, expected %zu",
                                 (long long)ids[i], nb, vbytes);
            else if (b && nb > 0) {
                memcpy(out + i * dim, b, vbytes);
                found[i] = 1;
            }
        } else if (r != SQLITE_DONE) {
            rc = sl__sqlerr(err, db, "read vectors");
        }
        sqlite3_reset(st);
    }
    sl__give_stmt(s, db, SL__Q_VEC, st);
    return rc;
}

static int sl__i64_cmp(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

sl_status sl_store_image_ids(sl_store *s, int64_t **ids, size_t *n, sl_error *err) {
    *ids = NULL;
    *n = 0;
    if (s->pg) return sl__err_set(err, SL_E_UNSUPPORTED, "image id lists of a PostgreSQL store are not kept");
    sqlite3 *db = sl__rconn(s);
    sqlite3_stmt *st;
    /* without ORDER BY SQLite scans the small covering index images_product instead of the
     * table, whose rows carry the vectors and local features (tens of GB at a million images) */
    sl_status rc = sl__prepare(db, "SELECT id FROM images UNION ALL SELECT id + " SL__REF_BASE_SQL " FROM refs", &st, err);
    if (rc != SL_OK) return rc;
    rc = sl__collect_ids(db, st, ids, n, err);
    sqlite3_finalize(st);
    if (rc == SL_OK && *n > 1) qsort(*ids, *n, sizeof **ids, sl__i64_cmp);
    return rc;
}

/* Calls fn for every row (id, vec) of sql; what names the rows in messages ("image", ...). */
static sl_status sl__each_vector(sl_store *s, const char *sql, const char *what, int64_t id_base,
                                 sl_store_vector_fn fn, void *ctx, sl_error *err) {
    sqlite3 *db = sl__rconn(s);
    sqlite3_stmt *st;
    sl_status rc = sl__prepare(db, sql, &st, err);
    if (rc != SL_OK) return rc;
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        int nb = sqlite3_column_bytes(st, 1);
        const void *b = sqlite3_column_blob(st, 1);
        if (!b || nb <= 0) continue;
        if (nb % (int)sizeof(float)) {
            rc = sl__err_set(err, SL_E_CORRUPT, "catalog.sqlite: %s %lld: vector of %d bytes", what,
                             (long long)(sqlite3_column_int64(st, 0) - id_base), nb);
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

sl_status sl_store_each_vector(sl_store *s, sl_store_vector_fn fn, void *ctx, sl_error *err) {
    if (s->pg) return sl__pg_each_vector(s->pg, fn, ctx, err);
    return sl__each_vector(s, "SELECT id, vec FROM images ORDER BY id", "image", 0, fn, ctx, err);
}

/* SL_OK inside a transaction (of the writer), SL_E_STATE naming `what` otherwise. */
static sl_status sl__need_txn(sl_store *s, const char *what, sl_error *err) {
    sl_status rc = sl__need_writer(s, err);
    if (rc != SL_OK) return rc;
    pthread_mutex_lock(&s->mu);
    int depth = s->txn_depth;
    pthread_mutex_unlock(&s->mu);
    return depth > 0 ? SL_OK : sl__err_set(err, SL_E_STATE, "%s outside a transaction", what);
}

/* Runs st, an INSERT of reference i into refs taking ?1 product id, ?2 source, ?3 vector, ?4
 * local features from r (a row only when the product exists: SL_E_NOT_FOUND otherwise). */
static sl_status sl__insert_ref(sl_store *s, sqlite3_stmt *st, size_t i, const sl_store_ref *r, size_t dim,
                                sl_error *err) {
    size_t vbytes;
    sl_status rc = sl__blob_check(s, dim, r->local_len, &vbytes, err);
    if (rc != SL_OK) return rc;
    if (!r->product_id || !r->vec || dim == 0) return sl__err_set(err, SL_E_INVALID, "reference %zu: no product or no vector", i);
    sqlite3_bind_text(st, 1, r->product_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, r->source ? r->source : "", -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 3, r->vec, (int)vbytes, SQLITE_STATIC);
    if (r->local && r->local_len) sqlite3_bind_blob(st, 4, r->local, (int)r->local_len, SQLITE_STATIC);
    else sqlite3_bind_null(st, 4);
    if (sqlite3_step(st) != SQLITE_DONE) rc = sl__sqlerr(err, s->db, "insert reference");
    else if (sqlite3_changes(s->db) == 0) rc = sl__err_set(err, SL_E_NOT_FOUND, "reference %zu: no product '%s'", i, r->product_id);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}

sl_status sl_store_replace_refs(sl_store *s, const sl_store_ref *refs, size_t n, size_t dim,
                                sl_error *err) {
    if (s->pg) return sl__pg_replace_refs(s->pg, refs, n, dim, err);
    sl_status rc = sl__need_txn(s, "replacing references", err);
    if (rc != SL_OK) return rc;
    if ((rc = sl__exec(s->db, "DELETE FROM refs", err)) != SL_OK) return rc;
    sqlite3_stmt *st = NULL;
    if ((rc = sl__prepare(s->db, "INSERT INTO refs(product_id, source, vec, local) "
                                 "SELECT id, ?2, ?3, ?4 FROM products WHERE id = ?1", &st, err)) != SL_OK)
        return rc;
    for (size_t i = 0; i < n && rc == SL_OK; i++) rc = sl__insert_ref(s, st, i, &refs[i], dim, err);
    sqlite3_finalize(st);
    return rc;
}

sl_status sl__store_put_ref(sl_store *s, int64_t ref_id, const char *product_id, const char *source,
                            const float *vec, size_t dim, const void *local, size_t local_len,
                            sl_error *err) {
    if (s->pg) return sl__err_set(err, SL_E_UNSUPPORTED, "references are put one by one only into a search node's copy");
    sl_status rc = sl__need_txn(s, "putting a reference", err);
    if (rc != SL_OK) return rc;
    if (ref_id <= 0 || ref_id >= SL_STORE_REF_ID_BASE) return sl__err_set(err, SL_E_INVALID, "reference id %lld out of range", (long long)ref_id);
    sqlite3_stmt *st = NULL;
    if ((rc = sl__prepare(s->db, "INSERT OR REPLACE INTO refs(id, product_id, source, vec, local) "
                                 "SELECT ?5, id, ?2, ?3, ?4 FROM products WHERE id = ?1", &st, err)) != SL_OK)
        return rc;
    sqlite3_bind_int64(st, 5, ref_id);
    sl_store_ref r = {product_id, source, vec, local, local_len};
    rc = sl__insert_ref(s, st, 0, &r, dim, err);
    sqlite3_finalize(st);
    return rc;
}

sl_status sl__store_remove_ref(sl_store *s, int64_t ref_id, sl_error *err) {
    if (s->pg) return sl__err_set(err, SL_E_UNSUPPORTED, "references are removed one by one only from a search node's copy");
    sl_status rc = sl__need_txn(s, "removing a reference", err);
    if (rc != SL_OK) return rc;
    sqlite3_stmt *st = NULL;
    if ((rc = sl__prepare(s->db, "DELETE FROM refs WHERE id = ?", &st, err)) != SL_OK) return rc;
    sqlite3_bind_int64(st, 1, ref_id);
    if (sqlite3_step(st) != SQLITE_DONE) rc = sl__sqlerr(err, s->db, "delete reference");
    sqlite3_finalize(st);
    return rc;
}

sl_status sl_store_each_ref_vector(sl_store *s, sl_store_vector_fn fn, void *ctx, sl_error *err) {
    if (s->pg) return sl__pg_each_ref_vector(s->pg, fn, ctx, err);
    return sl__each_vector(s, "SELECT id + " SL__REF_BASE_SQL ", vec FROM refs ORDER BY id", "reference",
                           SL_STORE_REF_ID_BASE, fn, ctx, err);
}

sl_status sl_store_product_ref_ids(sl_store *s, const char *product_id, int64_t **ids, size_t *n,
                                   sl_error *err) {
    *ids = NULL;
    *n = 0;
    if (s->pg) return sl__pg_product_ref_ids(s->pg, product_id, ids, n, err);
    sqlite3 *db = sl__rconn(s);
    sqlite3_stmt *st;
    sl_status rc = sl__prepare(db, "SELECT id + " SL__REF_BASE_SQL " FROM refs WHERE product_id = ? ORDER BY id", &st, err);
    if (rc != SL_OK) return rc;
    sqlite3_bind_text(st, 1, product_id, -1, SQLITE_STATIC);
    rc = sl__collect_ids(db, st, ids, n, err);
    sqlite3_finalize(st);
    return rc;
}

sl_status sl_store_ref_of_source(sl_store *s, const char *product_id, const char *source, int64_t *id,
                                 sl_error *err) {
    *id = -1;
    if (s->pg) return sl__pg_ref_of_source(s->pg, product_id, source, id, err);
    sqlite3 *db = sl__rconn(s);
    sqlite3_stmt *st;
    sl_status rc = sl__prepare(db, "SELECT min(id) + " SL__REF_BASE_SQL " FROM refs WHERE product_id = ? AND source = ?",
                               &st, err);
    if (rc != SL_OK) return rc;
    sqlite3_bind_text(st, 1, product_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, source, -1, SQLITE_STATIC);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) *id = sqlite3_column_int64(st, 0);
    else if (r != SQLITE_ROW && r != SQLITE_DONE) rc = sl__sqlerr(err, db, "find a reference");
    sqlite3_finalize(st);
    return rc;
}

sl_status sl_store_count_refs(sl_store *s, int64_t *n, sl_error *err) {
    *n = 0;
    if (s->pg) return sl__pg_count_refs(s->pg, n, err);
    sqlite3 *db = sl__rconn(s);
    sqlite3_stmt *st;
    sl_status rc = sl__prepare(db, "SELECT count(*) FROM refs", &st, err);
    if (rc != SL_OK) return rc;
    if (sqlite3_step(st) == SQLITE_ROW) *n = sqlite3_column_int64(st, 0);
    else rc = sl__sqlerr(err, db, "count references");
    sqlite3_finalize(st);
    return rc;
}

sl_status sl_store_ref_products(sl_store *s, int64_t **ids, char ***products, size_t *n, sl_error *err) {
    *ids = NULL;
    *products = NULL;
    *n = 0;
    if (s->pg) return sl__err_set(err, SL_E_UNSUPPORTED, "reference products are listed from a SQLite store only");
    sqlite3 *db = sl__rconn(s);
    sqlite3_stmt *st;
    sl_status rc = sl__prepare(db, "SELECT id + " SL__REF_BASE_SQL ", product_id FROM refs ORDER BY id", &st, err);
    if (rc != SL_OK) return rc;
    size_t cap = 0, cnt = 0;
    int64_t *iv = NULL;
    char **pv = NULL;
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        if (cnt == cap) {
            size_t nc = cap ? cap * 2 : 256;
            int64_t *ni = sl__reallocarray(iv, nc, sizeof *ni);
            if (ni) iv = ni;
            char **np = ni ? sl__reallocarray(pv, nc, sizeof *np) : NULL;
            if (np) pv = np;
            if (!ni || !np) {
                rc = sl__err_set(err, SL_E_NOMEM, "out of memory");
                break;
            }
            cap = nc;
        }
        iv[cnt] = sqlite3_column_int64(st, 0);
        if (!(pv[cnt] = sl__col_strdup(st, 1))) {
            rc = sl__err_set(err, SL_E_NOMEM, "out of memory");
            break;
        }
        cnt++;
    }
    if (rc == SL_OK && r != SQLITE_DONE) rc = sl__sqlerr(err, db, "read references");
    sqlite3_finalize(st);
    if (rc != SL_OK) {
        free(iv);
        sl_strings_free(pv, cnt);
        return rc;
    }
    *ids = iv;
    *products = pv;
    *n = cnt;
    return SL_OK;
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

/* The text first column of every row of a query without parameters. */
static sl_status sl__query_strings(sqlite3 *db, const char *sql, char ***out, size_t *n, sl_error *err) {
    *out = NULL;
    *n = 0;
    sqlite3_stmt *st;
    sl_status rc = sl__prepare(db, sql, &st, err);
    if (rc != SL_OK) return rc;
    rc = sl__collect_strings(db, st, out, NULL, n, err);
    sqlite3_finalize(st);
    return rc;
}

sl_status sl_store_product_ids(sl_store *s, char ***ids, size_t *n, sl_error *err) {
    if (s->pg) return sl__pg_product_ids(s->pg, ids, n, err);
    return sl__query_strings(sl__rconn(s), "SELECT id FROM products ORDER BY id", ids, n, err);
}

sl_status sl_store_categories(sl_store *s, char ***names, int64_t **counts, size_t *n,
                              sl_error *err) {
    if (s->pg) return sl__pg_categories(s->pg, names, counts, n, err);
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

/* Appends the conditions of a filter on products `p` to sql (bound as ?1 category, ?2 min
 * price, ?3 max price, ?4 FTS query). *fq receives the FTS query (malloc'ed) or NULL. Returns
 * 0 when the text filter has no word (nothing can match), 1 otherwise. */
static int sl__filter_where(const sl_store_filter *f, char *sql, size_t cap, char **fq) {
    *fq = NULL;
    if (f && f->text && *f->text) {
        *fq = sl__fts_query(f->text);
        if (!*fq) return 0;
        strncat(sql, " AND p.rowid IN (SELECT rowid FROM products_fts WHERE products_fts MATCH ?4)",
                cap - strlen(sql) - 1);
    }
    if (f && f->category && *f->category) strncat(sql, " AND p.category = ?1", cap - strlen(sql) - 1);
    if (f && f->has_min_price) strncat(sql, " AND p.price >= ?2", cap - strlen(sql) - 1);
    if (f && f->has_max_price) strncat(sql, " AND p.price <= ?3", cap - strlen(sql) - 1);
    return 1;
}

static void sl__filter_bind(sqlite3_stmt *st, const sl_store_filter *f, const char *fq) {
    if (f && f->category && *f->category) sqlite3_bind_text(st, 1, f->category, -1, SQLITE_STATIC);
    if (f && f->has_min_price) sqlite3_bind_double(st, 2, f->min_price);
    if (f && f->has_max_price) sqlite3_bind_double(st, 3, f->max_price);
    if (fq) sqlite3_bind_text(st, 4, fq, -1, SQLITE_STATIC);
}

/* Prepares base + the filter's conditions + tail on the reader connection with the filter
 * bound. *st = NULL (and SL_OK) when the text filter has no word: nothing can match. The caller
 * finalizes *st, then frees *fq (bound to it). */
static sl_status sl__filter_stmt(sl_store *s, const sl_store_filter *f, const char *base,
                                 const char *tail, sqlite3 **db, sqlite3_stmt **st, char **fq,
                                 sl_error *err) {
    *st = NULL;
    char sql[768];
    snprintf(sql, sizeof sql, "%s", base);
    if (!sl__filter_where(f, sql, sizeof sql, fq)) return SL_OK; /* no words: nothing matches */
    strncat(sql, tail, sizeof sql - strlen(sql) - 1);
    *db = sl__rconn(s);
    sl_status rc = sl__prepare(*db, sql, st, err);
    if (rc != SL_OK) {
        free(*fq);
        *fq = NULL;
        *st = NULL;
        return rc;
    }
    sl__filter_bind(*st, f, *fq);
    return SL_OK;
}

static int sl__cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

sl_status sl__store_filter_images_any_order(sl_store *s, const sl_store_filter *f, int64_t **ids,
                                           size_t *n, sl_error *err) {
    if (s->pg) return sl__pg_filter_images(s->pg, f, ids, n, err);
    *ids = NULL;
    *n = 0;
    sqlite3 *db = NULL;
    sqlite3_stmt *st;
    char *fq = NULL;
    /* No ORDER BY: it would make SQLite walk images in id order (every row, see
     * sl__read_indexes) instead of driving the join from the filter's index; sorted here. */
    sl_status rc = sl__filter_stmt(s, f, "SELECT i.id FROM images i JOIN products p ON p.id = i.product_id WHERE 1",
                                   "", &db, &st, &fq, err);
    if (rc != SL_OK || !st) return rc;
    rc = sl__collect_ids(db, st, ids, n, err);
    sqlite3_finalize(st);
    free(fq);
    fq = NULL;
    /* and the references of the same products, under their index ids */
    int64_t *rids = NULL;
    size_t nr = 0;
    if (rc == SL_OK)
        rc = sl__filter_stmt(s, f, "SELECT r.id + " SL__REF_BASE_SQL " FROM refs r JOIN products p ON p.id = r.product_id WHERE 1",
                             "", &db, &st, &fq, err);
    if (rc == SL_OK && st) {
        rc = sl__collect_ids(db, st, &rids, &nr, err);
        sqlite3_finalize(st);
    }
    free(fq);
    if (rc == SL_OK && nr) {
        int64_t *all = sl__reallocarray(*ids, *n + nr, sizeof *all);
        if (!all) rc = sl__err_set(err, SL_E_NOMEM, "out of memory");
        else {
            memcpy(all + *n, rids, nr * sizeof *rids);
            *ids = all;
            *n += nr;
        }
    }
    free(rids);
    if (rc != SL_OK) {
        free(*ids);
        *ids = NULL;
        *n = 0;
    }
    return rc;
}

sl_status sl_store_filter_images(sl_store *s, const sl_store_filter *f, int64_t **ids,
                                 size_t *n, sl_error *err) {
    sl_status rc = sl__store_filter_images_any_order(s, f, ids, n, err);
    if (rc == SL_OK && *n > 1) qsort(*ids, *n, sizeof **ids, sl__cmp_i64);
    return rc;
}

sl_status sl_store_list_products(sl_store *s, const sl_store_filter *f, const char *after,
                                 size_t limit, sl_product **out, size_t *n, int *more,
                                 sl_error *err) {
    if (s->pg) return sl__pg_list_products(s->pg, f, after, limit, out, n, more, err);
    *out = NULL;
    *n = 0;
    *more = 0;
    if (limit < 1 || limit > SL_STORE_LIST_MAX)
        return sl__err_set(err, SL_E_INVALID, "limit must be in 1..%d", SL_STORE_LIST_MAX);
    sqlite3 *db = NULL;
    sqlite3_stmt *st;
    char *fq = NULL;
    sl_status rc = sl__filter_stmt(s, f, "SELECT p.id, p.title, p.category, p.price, p.description, p.url, "
                                         "p.attrs, p.currency FROM products p WHERE 1",
                                   " AND p.id > ?5 ORDER BY p.id LIMIT ?6", &db, &st, &fq, err);
    if (rc != SL_OK || !st) return rc;
    sqlite3_bind_text(st, 5, after ? after : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, (sqlite3_int64)limit + 1);
    sl_product *v = sl__callocarray(limit + 1, sizeof *v);
    size_t cnt = 0;
    int r = SQLITE_DONE;
    if (!v) rc = sl__err_set(err, SL_E_NOMEM, "out of memory");
    while (rc == SL_OK && (r = sqlite3_step(st)) == SQLITE_ROW) {
        if (cnt == limit) {
            *more = 1;
            break;
        }
        if (sl__fill_product(st, &v[cnt++]) != 0) rc = sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    if (rc == SL_OK && r != SQLITE_DONE && r != SQLITE_ROW) rc = sl__sqlerr(err, db, "read products");
    sqlite3_finalize(st);
    free(fq);
    if (rc != SL_OK) {
        sl_products_free(v, cnt);
        *more = 0;
        return rc;
    }
    *out = v;
    *n = cnt;
    return SL_OK;
}

sl_status sl_store_count_products(sl_store *s, const sl_store_filter *f, int64_t *n,
                                  sl_error *err) {
    if (s->pg) return sl__pg_count_products(s->pg, f, n, err);
    *n = 0;
    sqlite3 *db = NULL;
    sqlite3_stmt *st;
    char *fq = NULL;
    sl_status rc = sl__filter_stmt(s, f, "SELECT count(*) FROM products p WHERE 1", "", &db, &st, &fq, err);
    if (rc != SL_OK || !st) return rc;
    if (sqlite3_step(st) == SQLITE_ROW) *n = sqlite3_column_int64(st, 0);
    else rc = sl__sqlerr(err, db, "count products");
    sqlite3_finalize(st);
    free(fq);
    return rc;
}

static int64_t sl__file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (int64_t)sb.st_size : 0;
}

sl_status sl_store_counts_get(sl_store *s, sl_store_counts *c, sl_error *err) {
    if (s->pg) return sl__pg_counts(s->pg, c, err);
    memset(c, 0, sizeof *c);
    sqlite3 *db = sl__rconn(s);
    sqlite3_stmt *st;
    sl_status rc = sl__prepare(db, "SELECT (SELECT count(*) FROM products), (SELECT count(*) FROM images), "
                                   "(SELECT count(*) FROM images WHERE file = '')", &st, err);
    if (rc != SL_OK) return rc;
    if (sqlite3_step(st) == SQLITE_ROW) {
        c->products = sqlite3_column_int64(st, 0);
        c->images = sqlite3_column_int64(st, 1);
        c->images_outside = sqlite3_column_int64(st, 2);
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
    if (s->pg) return sl__pg_generation(s->pg, gen, err);
    char *v = NULL;
    sl_status rc = sl_store_meta_get(s, "generation", &v, err);
    *gen = rc == SL_OK ? strtoll(v, NULL, 10) : 0;
    free(v);
    return rc;
}

sl_status sl_store_bump_generation(sl_store *s, sl_error *err) {
    if (s->pg) return SL_OK; /* its commit appends to the change log, which is the generation */
    sl_status rc = sl__need_writer(s, err);
    if (rc != SL_OK) return rc;
    return sl__exec(s->db, "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'", err);
}

/* ---- image files ------------------------------------------------------------------------- */

int sl__image_file_valid(const char *rel) {
    if (!rel || strncmp(rel, "images/", 7) != 0) return 0;
    const char *p = rel + 7;
    for (int i = 0; i < 64; i++, p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return 0;
    if (*p++ != '.') return 0;
    size_t n = 0;
    for (; *p; p++, n++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z'))) return 0;
    return n >= 1 && n <= 8;
}

void sl__image_file_name(char out[SL__IMAGE_FILE_MAX], const char hash[65], const char *ext) {
    int ok = ext && *ext && strlen(ext) <= 8;
    for (const char *c = ext; ok && *c; c++) ok = (*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'z');
    snprintf(out, SL__IMAGE_FILE_MAX, "images/%.64s.%s", hash, ok ? ext : "img");
}

static const char *const sl__pending_sql = "SELECT file FROM pending_deletions ORDER BY file";

sl_status sl_store_pending_files(sl_store *s, char ***files, size_t *n, sl_error *err) {
    if (s->pg) return sl__pg_pending_files(s->pg, files, n, err);
    return sl__query_strings(sl__rconn(s), sl__pending_sql, files, n, err);
}

/* fsync of the images directory: makes unlinks durable before the commit that forgets them. */
static void sl__sync_images_dir(sl_store *s) {
    char *d = sl_store_path(s, "images");
    int fd = d ? open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(d);
}

static sl_status sl__no_txn(sl_store *s, sl_error *err) {
    sl_status rc = sl__need_writer(s, err);
    if (rc != SL_OK) return rc;
    pthread_mutex_lock(&s->mu);
    int depth = s->txn_depth;
    pthread_mutex_unlock(&s->mu);
    return depth ? sl__err_set(err, SL_E_STATE, "file deletion inside a transaction") : SL_OK;
}

sl_status sl_store_gc(sl_store *s, size_t *deleted, sl_error *err) {
    if (s->pg) return sl__pg_gc(s->pg, deleted, err);
    if (deleted) *deleted = 0;
    sl_status rc = sl__no_txn(s, err);
    if (rc != SL_OK) return rc;
    if ((rc = sl_store_begin(s, err)) != SL_OK) return rc;
    char **files = NULL;
    size_t n = 0, gone = 0;
    sqlite3_stmt *ref = NULL, *del = NULL;
    if ((rc = sl__query_strings(s->db, sl__pending_sql, &files, &n, err)) != SL_OK) goto out;
    if ((rc = sl__prepare(s->db, "SELECT EXISTS(SELECT 1 FROM images WHERE file = ?)", &ref, err)) != SL_OK ||
        (rc = sl__prepare(s->db, "DELETE FROM pending_deletions WHERE file = ?", &del, err)) != SL_OK)
        goto out;
    for (size_t i = 0; i < n && rc == SL_OK; i++) {
        sqlite3_bind_text(ref, 1, files[i], -1, SQLITE_STATIC);
        int r = sqlite3_step(ref);
        int used = r == SQLITE_ROW && sqlite3_column_int(ref, 0);
        if (r != SQLITE_ROW) rc = sl__sqlerr(err, s->db, "read images");
        sqlite3_reset(ref);
        if (rc != SL_OK) break;
        int forget = 1;
        if (!used && sl__image_file_valid(files[i])) {
            char *path = sl_store_path(s, files[i]);
            if (!path) {
                rc = sl__err_set(err, SL_E_NOMEM, "out of memory");
                break;
            }
            if (unlink(path) == 0) gone++;
            else if (errno != ENOENT) forget = 0; /* kept for the next try; verify reports it */
            free(path);
        }
        if (!forget) continue;
        sqlite3_bind_text(del, 1, files[i], -1, SQLITE_STATIC);
        if (sqlite3_step(del) != SQLITE_DONE) rc = sl__sqlerr(err, s->db, "forget deleted files");
        sqlite3_reset(del);
    }
    if (rc == SL_OK && gone) sl__sync_images_dir(s);
out:
    sqlite3_finalize(ref);
    sqlite3_finalize(del);
    sl_strings_free(files, n);
    if (rc != SL_OK) {
        sl_store_rollback(s);
        return rc;
    }
    if ((rc = sl_store_commit(s, err)) == SL_OK && deleted) *deleted = gone;
    return rc;
}

static int sl__cmp_cstr(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A temporary file of sl__write_file_atomic for a valid name: "<images/hash.ext>.tmp.<...>". */
static int sl__image_tmp_name(const char *rel) {
    const char *t = strstr(rel, ".tmp.");
    if (!t || (size_t)(t - rel) >= SL__IMAGE_FILE_MAX) return 0;
    char base[SL__IMAGE_FILE_MAX];
    memcpy(base, rel, (size_t)(t - rel));
    base[t - rel] = '\0';
    return sl__image_file_valid(base);
}

/* Files under images/ nobody names: conn is the connection to read the references with. Only
 * valid copy names, and temporary files older than an hour (a writer may be writing a young
 * one), are candidates. */
static sl_status sl__orphans(sl_store *s, sqlite3 *db, char ***out, size_t *n_out, sl_error *err) {
    *out = NULL;
    *n_out = 0;
    char **refs = NULL, **pend = NULL;
    size_t nr = 0, np = 0;
    /* rows of a schema 1 store not copied in may read a file under images/ through their source */
    sl_status rc = sl__query_strings(db, "SELECT file FROM images WHERE file <> '' UNION "
                                         "SELECT 'images/' || replace(source, rtrim(source, replace(source, '/', '')), '') "
                                         "FROM images WHERE file = '' ORDER BY 1", &refs, &nr, err);
    if (rc != SL_OK) return rc;
    if ((rc = sl__query_strings(db, sl__pending_sql, &pend, &np, err)) != SL_OK) {
        sl_strings_free(refs, nr);
        return rc;
    }
    if (nr > 1) qsort(refs, nr, sizeof *refs, sl__cmp_cstr);
    char *dir = sl_store_path(s, "images");
    DIR *d = dir ? opendir(dir) : NULL;
    char **v = NULL;
    size_t cnt = 0, cap = 0;
    struct dirent *de;
    time_t now = time(NULL);
    while (d && rc == SL_OK && (de = readdir(d))) {
        char rel[sizeof de->d_name + 8];
        snprintf(rel, sizeof rel, "images/%s", de->d_name);
        int valid = sl__image_file_valid(rel);
        if (!valid) {
            if (!sl__image_tmp_name(rel)) continue;
            char *path = sl_store_path(s, rel);
            struct stat sb;
            int old = path && stat(path, &sb) == 0 && now - sb.st_mtime > 3600;
            free(path);
            if (!old) continue;
        } else {
            const char *key = rel;
            if ((nr && bsearch(&key, refs, nr, sizeof *refs, sl__cmp_cstr)) ||
                (np && bsearch(&key, pend, np, sizeof *pend, sl__cmp_cstr)))
                continue;
        }
        if (cnt == cap) {
            size_t nc = cap ? cap * 2 : 16;
            char **nv = sl__reallocarray(v, nc, sizeof *nv);
            if (!nv) {
                rc = sl__err_set(err, SL_E_NOMEM, "out of memory");
                break;
            }
            v = nv;
            cap = nc;
        }
        if (!(v[cnt] = sl__strdup(rel))) rc = sl__err_set(err, SL_E_NOMEM, "out of memory");
        else cnt++;
    }
    if (d) closedir(d);
    free(dir);
    sl_strings_free(refs, nr);
    sl_strings_free(pend, np);
    if (rc != SL_OK) {
        sl_strings_free(v, cnt);
        return rc;
    }
    if (cnt > 1) qsort(v, cnt, sizeof *v, sl__cmp_cstr);
    *out = v;
    *n_out = cnt;
    return SL_OK;
}

sl_status sl_store_orphan_files(sl_store *s, char ***names, size_t *n, sl_error *err) {
    if (s->pg) return sl__pg_orphan_files(s->pg, 0, names, n, err);
    return sl__orphans(s, sl__rconn(s), names, n, err);
}

sl_status sl_store_delete_orphans(sl_store *s, char ***names, size_t *n, sl_error *err) {
    if (s->pg) return sl__pg_orphan_files(s->pg, 1, names, n, err);
    if (names) *names = NULL;
    if (n) *n = 0;
    sl_status rc = sl__no_txn(s, err);
    if (rc != SL_OK) return rc;
    /* under the write lock: a writer re-checks its files inside its own transaction */
    if ((rc = sl_store_begin(s, err)) != SL_OK) return rc;
    char **v = NULL;
    size_t cnt = 0;
    rc = sl__orphans(s, s->db, &v, &cnt, err);
    for (size_t i = 0; rc == SL_OK && i < cnt; i++) {
        char *path = sl_store_path(s, v[i]);
        if (!path) rc = sl__err_set(err, SL_E_NOMEM, "out of memory");
        else if (unlink(path) != 0 && errno != ENOENT)
            rc = sl__err_set(err, SL_E_IO, "delete %s: %s", path, strerror(errno));
        free(path);
    }
    if (rc == SL_OK && cnt) sl__sync_images_dir(s);
    sl_store_rollback(s); /* nothing was written */
    if (rc != SL_OK) {
        sl_strings_free(v, cnt);
        return rc;
    }
    if (names) *names = v;
    else sl_strings_free(v, cnt);
    if (n) *n = cnt;
    return SL_OK;
}

/* ---- consistency ------------------------------------------------------------------------- */

/* Appends the printf message to a problem list. */
static int sl__problem(char ***v, size_t *n, const char *fmt, ...) SL__PRINTF(3, 4);
static int sl__problem(char ***v, size_t *n, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char **nv = sl__reallocarray(*v, *n + 1, sizeof *nv);
    if (!nv) return -1;
    *v = nv;
    if (!(nv[*n] = sl__strdup(buf))) return -1;
    (*n)++;
    return 0;
}

sl_status sl_store_check(sl_store *s, char ***problems, size_t *n, sl_error *err) {
    if (s->pg) return sl__pg_check(s->pg, problems, n, err);
    *problems = NULL;
    *n = 0;
    sqlite3 *db = sl__rconn(s);
    static const char *const q[] = {
        "PRAGMA integrity_check",
        "PRAGMA foreign_key_check",
        "SELECT 'product ' || quote(p.id) || ' has no full-text row' FROM products p "
        " WHERE NOT EXISTS (SELECT 1 FROM products_fts f WHERE f.rowid = p.rowid)",
        "SELECT 'full-text row ' || f.rowid || ' belongs to no product' FROM products_fts f "
        " WHERE NOT EXISTS (SELECT 1 FROM products p WHERE p.rowid = f.rowid)",
        "SELECT 'product ' || quote(p.id) || ': its full-text row has another title or description' "
        " FROM products p JOIN products_fts f ON f.rowid = p.rowid "
        " WHERE f.title IS NOT p.title OR f.description IS NOT p.description",
    };
    sl_status rc = SL_OK;
    for (size_t k = 0; k < sizeof q / sizeof q[0] && rc == SL_OK; k++) {
        sqlite3_stmt *st;
        if ((rc = sl__prepare(db, q[k], &st, err)) != SL_OK) break;
        int r;
        while ((r = sqlite3_step(st)) == SQLITE_ROW) {
            int bad;
            if (k == 0) {
                const char *t = (const char *)sqlite3_column_text(st, 0);
                if (t && strcmp(t, "ok") == 0) continue;
                bad = sl__problem(problems, n, "catalog.sqlite: integrity_check: %s", t ? t : "?");
            } else if (k == 1) {
                bad = sl__problem(problems, n, "catalog.sqlite: foreign key: %s row %lld refers to a missing %s",
                                  (const char *)sqlite3_column_text(st, 0), (long long)sqlite3_column_int64(st, 1),
                                  (const char *)sqlite3_column_text(st, 2));
            } else {
                bad = sl__problem(problems, n, "catalog.sqlite: %s", (const char *)sqlite3_column_text(st, 0));
            }
            if (bad) {
                rc = sl__err_set(err, SL_E_NOMEM, "out of memory");
                break;
            }
        }
        if (rc == SL_OK && r != SQLITE_DONE) {
            /* a damaged file: report it as a problem, not as a failure to check */
            if (sl__problem(problems, n, "catalog.sqlite: %s", sqlite3_errmsg(db))) rc = sl__err_set(err, SL_E_NOMEM, "out of memory");
        }
        sqlite3_finalize(st);
    }
    /* the FTS5 index's own structure (a read, despite the INSERT form) */
    if (rc == SL_OK) {
        sqlite3 *w = s->db ? s->db : NULL;
        if (w && sqlite3_exec(w, "INSERT INTO products_fts(products_fts) VALUES('integrity-check')", NULL, NULL, NULL) != SQLITE_OK &&
            sl__problem(problems, n, "catalog.sqlite: full-text index: %s", sqlite3_errmsg(w)))
            rc = sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    if (rc != SL_OK) {
        sl_strings_free(*problems, *n);
        *problems = NULL;
        *n = 0;
    }
    return rc;
}

sl_status sl_store_rebuild_text(sl_store *s, sl_error *err) {
    if (s->pg) return SL_OK; /* a generated column: always in step */
    sl_status rc = sl_store_begin(s, err);
    if (rc != SL_OK) return rc;
    if ((rc = sl__exec(s->db, "DELETE FROM products_fts;"
                              "INSERT INTO products_fts(rowid, title, description) "
                              "SELECT rowid, title, description FROM products;", err)) != SL_OK) {
        sl_store_rollback(s);
        return rc;
    }
    return sl_store_commit(s, err);
}

/* ---- backends, files, replication ------------------------------------------------------------ */

int sl_store_is_url(const char *where) { return sl__pg_is_url(where); }

int sl_store_is_shared(const sl_store *s) { return s && s->pg != NULL; }

sl__pg *sl__store_pg(sl_store *s) { return s ? s->pg : NULL; }

/* The path of a store file name (relative to the directory) or of an image ref's file (already
 * a path: absolute, or outside the store for a schema 1 image). */
/* name: a store-relative name ("images/<sha256>.<ext>"), an absolute path, or a path
 * sl_store_path made (an image ref's file: the store's directory, "/images/", the name), which
 * is used as it is - joining it again broke stores given by a relative directory. */
static char *sl__file_path(const sl_store *s, const char *name) {
    size_t d = strlen(s->dir);
    if (name[0] == '/' || (strncmp(name, s->dir, d) == 0 && strncmp(name + d, "/images/", 8) == 0))
        return sl__strdup(name);
    return sl_store_path(s, name);
}

sl_status sl_store_file_put(sl_store *s, const char *name, const void *data, size_t len,
                            sl_error *err) {
    if (s->pg) return sl__pg_file_put(s->pg, name, data, len, err);
    sl_status rc = sl__need_writer(s, err);
    if (rc != SL_OK) return rc;
    if (!name || !*name || name[0] == '/' || strstr(name, ".."))
        return sl__err_set(err, SL_E_INVALID, "bad store file name '%s'", name ? name : "");
    if (sl_store_file_size(s, name) == (int64_t)len) return SL_OK;
    const char *slash = strrchr(name, '/');
    if (slash) { /* images/ */
        char sub[64];
        snprintf(sub, sizeof sub, "%.*s", (int)(slash - name), name);
        char *dir = sl_store_path(s, sub);
        if (!dir) return sl__err_set(err, SL_E_NOMEM, "out of memory");
        if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
            rc = sl__err_set(err, SL_E_IO, "mkdir %s: %s", dir, strerror(errno));
            free(dir);
            return rc;
        }
        free(dir);
    }
    char *path = sl_store_path(s, name);
    if (!path) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    rc = sl__write_file_atomic(path, data, len, err);
    free(path);
    return rc;
}

sl_status sl_store_file_get(sl_store *s, const char *name, size_t max, void **data, size_t *len,
                            sl_error *err) {
    if (s->pg) return sl__pg_file_get(s->pg, name, max, data, len, err);
    *data = NULL;
    *len = 0;
    char *path = sl__file_path(s, name);
    if (!path) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    sl_status rc = sl__read_file(path, max, data, len, err);
    free(path);
    return rc;
}

int64_t sl_store_file_size(sl_store *s, const char *name) {
    if (s->pg) return sl__pg_file_size(s->pg, name);
    char *path = sl__file_path(s, name);
    struct stat sb;
    int64_t n = path && stat(path, &sb) == 0 && S_ISREG(sb.st_mode) ? (int64_t)sb.st_size : -1;
    free(path);
    return n;
}

sl_status sl_store_lock_product(sl_store *s, const char *id, sl_error *err) {
    if (s->pg) return sl__pg_lock_product(s->pg, id, err);
    /* BEGIN IMMEDIATE already holds the database's write lock */
    (void)id;
    pthread_mutex_lock(&s->mu);
    int mine = s->txn_depth > 0 && pthread_equal(s->txn_owner, pthread_self());
    pthread_mutex_unlock(&s->mu);
    return mine ? SL_OK : sl__err_set(err, SL_E_STATE, "locking a product outside a transaction");
}

sl_status sl_store_put_image(sl_store *s, int64_t id, const char *product_id, const char *source,
                             const char *hash, int64_t size, const char *file, const float *vec,
                             size_t dim, const void *local, size_t local_len, sl_error *err) {
    if (id <= 0) return sl__err_set(err, SL_E_INVALID, "image id must be positive");
    if (s->pg) return sl__pg_add_image(s->pg, id, product_id, source, hash, size, file, vec, dim, local, local_len, NULL, err);
    return sl__insert_image(s, id, product_id, source, hash, size, file, vec, dim, local, local_len, NULL, err);
}
