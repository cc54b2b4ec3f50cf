/*
 * catalog/pg_log.c - what a cluster's search nodes read from PostgreSQL: the change log after a
 * position with the current state of the products it names, a full copy of one shard, the
 * features file, and the node registry with its heartbeats (docs/cluster.md).
 *
 * Invariants: a log read and the product states it returns come from one REPEATABLE READ
 * snapshot, and log positions are given in commit order (store_pg.c), so "position N applied"
 * means every change committed up to N is in the node's copy; applying a product's current state
 * is idempotent, so reading an entry twice (after a crash between applying and recording the
 * position) is harmless. A shard copy is read in one snapshot too, with the log head of that
 * snapshot as the position to go on from.
 */
#include "catalog/pg.h"
#include "catalog/catalog.h"
#include "util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void sl__pg_image_clear(sl__pg_image *im) {
    free(im->source);
    free(im->file);
    free(im->vec);
    free(im->local);
    memset(im, 0, sizeof *im);
}

static void sl__pg_state_clear(sl__pg_state *s) {
    sl_product_clear(&s->p);
    for (size_t k = 0; k < s->n; k++) sl__pg_image_clear(&s->images[k]);
    free(s->images);
    memset(s, 0, sizeof *s);
}

void sl__pg_states_free(sl__pg_state *v, size_t n) {
    if (!v) return;
    for (size_t i = 0; i < n; i++) sl__pg_state_clear(&v[i]);
    free(v);
}

void sl__log_batch_free(sl__log_batch *b) {
    if (!b) return;
    sl__pg_states_free(b->states, b->n);
    memset(b, 0, sizeof *b);
}

/* Columns of the product + image join, grouped by product (ids ascending, byte order). */
#define SL__STATE_COLS \
    "p.id, p.title, p.category, p.price, p.description, p.url, p.attrs, p.currency," \
    " i.id, i.source, i.hash, i.size, i.file, i.vec, i.local"
/* A product's images and, after them, its references under their index ids (hash, file '',
 * size 0): what a state's images hold (pg.h). */
#define SL__STATE_IMAGES \
    "(SELECT id, product_id, source, hash, size, file, vec, local FROM images UNION ALL" \
    " SELECT id + " SL__REF_BASE_SQL ", product_id, source, '', 0, '', vec, local FROM refs) i"

static sl_status sl__dup_bytes(const PGresult *r, int row, int col, void **out, size_t *len) {
    *out = NULL;
    *len = 0;
    if (sl__pgv_null(r, row, col) || PQgetlength(r, row, col) <= 0) return SL_OK;
    size_t n = (size_t)PQgetlength(r, row, col);
    if (!(*out = malloc(n))) return SL_E_NOMEM;
    memcpy(*out, PQgetvalue(r, row, col), n);
    *len = n;
    return SL_OK;
}

/* Appends the image of row `row` (when it has one) to state s. */
static sl_status sl__state_image(sl__pg_state *s, const PGresult *r, int row, sl_error *err) {
    if (sl__pgv_null(r, row, 8)) return SL_OK;
    sl__pg_image *ni = sl__reallocarray(s->images, s->n + 1, sizeof *ni);
    if (!ni) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    s->images = ni;
    sl__pg_image *im = &ni[s->n];
    memset(im, 0, sizeof *im);
    s->n++;
    im->id = sl__pgv_i64(r, row, 8);
    im->source = sl__pgv_dup(r, row, 9);
    snprintf(im->hash, sizeof im->hash, "%s", sl__pgv_str(r, row, 10));
    im->size = sl__pgv_i64(r, row, 11);
    im->file = sl__pgv_dup(r, row, 12);
    void *vec = NULL;
    size_t vlen = 0;
    if (!im->source || !im->file || sl__dup_bytes(r, row, 13, &vec, &vlen) != SL_OK ||
        sl__dup_bytes(r, row, 14, &im->local, &im->local_len) != SL_OK) {
        free(vec);
        return sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    if (vlen % sizeof(float)) {
        free(vec);
        return sl__err_set(err, SL_E_CORRUPT, "image %lld: vector of %zu bytes", (long long)im->id, vlen);
    }
    im->vec = vec;
    im->dim = vlen / sizeof(float);
    return SL_OK;
}

/* Groups join rows [from, to) into states appended to *v (*n of them, capacity *cap). */
static sl_status sl__group_rows(const PGresult *r, int from, int to, sl__pg_state **v, size_t *n,
                                size_t *cap, sl_error *err) {
    for (int row = from; row < to; row++) {
        const char *id = sl__pgv_str(r, row, 0);
        if (*n == 0 || strcmp((*v)[*n - 1].p.id, id) != 0) {
            if (*n == *cap) {
                size_t nc = *cap ? *cap * 2 : 64;
                sl__pg_state *nv = sl__reallocarray(*v, nc, sizeof *nv);
                if (!nv) return sl__err_set(err, SL_E_NOMEM, "out of memory");
                *v = nv;
                *cap = nc;
            }
            sl__pg_state *s = &(*v)[(*n)++];
            memset(s, 0, sizeof *s);
            s->exists = 1;
            sl_product *p = &s->p;
            p->id = sl__pgv_dup(r, row, 0);
            p->title = sl__pgv_dup(r, row, 1);
            p->category = sl__pgv_dup(r, row, 2);
            p->has_price = !sl__pgv_null(r, row, 3);
            p->price = p->has_price ? sl__pgv_f64(r, row, 3) : 0;
            p->description = sl__pgv_dup(r, row, 4);
            p->url = sl__pgv_dup(r, row, 5);
            p->attrs_json = sl__pgv_dup(r, row, 6);
            p->currency = sl__pgv_dup(r, row, 7);
            if (!p->id || !p->title || !p->category || !p->description || !p->url || !p->attrs_json || !p->currency)
                return sl__err_set(err, SL_E_NOMEM, "out of memory");
        }
        sl_status st = sl__state_image(&(*v)[*n - 1], r, row, err);
        if (st != SL_OK) return st;
    }
    return SL_OK;
}

static int sl__cmp_cstr(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

sl_status sl__log_read(sl__pgc *c, int64_t after, int shard, int shards, size_t limit,
                       sl__log_batch *out, sl_error *err) {
    memset(out, 0, sizeof *out);
    char **ids = NULL;
    size_t n_ids = 0, cap = 0;
    PGresult *r = NULL;
    sl_status st = sl__pgc_run(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL, err);
    if (st != SL_OK) return st;
    if (!(r = sl__pgc_exec(c, "SELECT (SELECT seq FROM log_head), (SELECT COALESCE(min(seq), 0) FROM log)",
                           0, NULL, NULL, NULL, err)))
        goto fail_io;
    out->head = sl__pgv_i64(r, 0, 0);
    out->start = sl__pgv_i64(r, 0, 1);
    if (out->start == 0) out->start = out->head + 1; /* an empty log */
    PQclear(r);
    char ab[24], sb[16], nb[16], lb[24];
    snprintf(ab, sizeof ab, "%lld", (long long)after);
    snprintf(sb, sizeof sb, "%d", shard);
    snprintf(nb, sizeof nb, "%d", shards);
    snprintf(lb, sizeof lb, "%zu", limit ? limit : 1);
    const char *v[4] = {ab, sb, nb, lb};
    if (!(r = sl__pgc_exec(c, "SELECT seq, kind, product_id FROM log WHERE seq > $1::bigint"
                              " AND (kind <> 1 OR shard_key % $3::int = $2::int) ORDER BY seq LIMIT $4::bigint",
                           4, v, NULL, NULL, err)))
        goto fail_io;
    int rows = PQntuples(r);
    out->entries = rows;
    out->pos = (size_t)rows == (limit ? limit : 1) ? sl__pgv_i64(r, rows - 1, 0) : out->head;
    if (out->pos < after) out->pos = after;
    for (int i = 0; i < rows && st == SL_OK; i++) {
        if (sl__pgv_i64(r, i, 1) == SL__LOG_FEATURES) out->features = 1;
        if (sl__pgv_i64(r, i, 1) != SL__LOG_PRODUCT || sl__pgv_null(r, i, 2)) continue;
        if (n_ids == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            char **nv = sl__reallocarray(ids, ncap, sizeof *nv);
            if (!nv) {
                st = sl__err_set(err, SL_E_NOMEM, "out of memory");
                break;
            }
            ids = nv;
            cap = ncap;
        }
        if (!(ids[n_ids] = sl__pgv_dup(r, i, 2))) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        else n_ids++;
    }
    PQclear(r);
    r = NULL;
    if (st != SL_OK) goto fail;
    if (n_ids > 1) qsort(ids, n_ids, sizeof *ids, sl__cmp_cstr);
    size_t u = 0;
    for (size_t i = 0; i < n_ids; i++) {
        if (u && strcmp(ids[u - 1], ids[i]) == 0) {
            free(ids[i]);
            continue;
        }
        ids[u++] = ids[i];
    }
    n_ids = u;
    if (n_ids && !out->features) {
        char *arr = sl__pg_text_array((const char *const *)ids, n_ids);
        if (!arr) {
            st = sl__err_set(err, SL_E_NOMEM, "out of memory");
            goto fail;
        }
        const char *pv[1] = {arr};
        r = sl__pgc_exec(c, "SELECT " SL__STATE_COLS " FROM products p LEFT JOIN " SL__STATE_IMAGES " ON i.product_id = p.id"
                            " WHERE p.id = ANY($1::text[]) ORDER BY p.id COLLATE \"C\", i.id", 1, pv, NULL, NULL, err);
        free(arr);
        if (!r) goto fail_io;
        size_t scap = 0;
        sl__pg_state *found = NULL;
        size_t nf = 0;
        st = sl__group_rows(r, 0, PQntuples(r), &found, &nf, &scap, err);
        PQclear(r);
        r = NULL;
        if (st == SL_OK && !(out->states = sl__callocarray(n_ids, sizeof *out->states)))
            st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        /* both lists are in byte order of the ids: a merge gives each id its state */
        for (size_t i = 0, k = 0; st == SL_OK && i < n_ids; i++) {
            sl__pg_state *s = &out->states[out->n++];
            if (k < nf && strcmp(found[k].p.id, ids[i]) == 0) {
                *s = found[k];
                memset(&found[k], 0, sizeof found[k]);
                k++;
            } else if (!(s->p.id = sl__strdup(ids[i]))) {
                st = sl__err_set(err, SL_E_NOMEM, "out of memory");
            }
        }
        sl__pg_states_free(found, nf);
        if (st != SL_OK) goto fail;
    }
    sl_strings_free(ids, n_ids);
    return sl__pgc_run(c, "COMMIT", 0, NULL, err);
fail_io:
    st = err ? err->code : SL_E_IO;
fail:
    PQclear(r);
    sl_strings_free(ids, n_ids);
    sl__log_batch_free(out);
    (void)sl__pgc_run(c, "ROLLBACK", 0, NULL, NULL);
    return st;
}

sl_status sl__log_snapshot(sl__pgc *c, int shard, int shards, size_t batch, sl__snapshot_fn fn,
                           void *ctx, int64_t *pos, sl_error *err) {
    *pos = 0;
    if (batch == 0) batch = 500;
    sl_status st = sl__pgc_run(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL, err);
    if (st != SL_OK) return st;
    PGresult *r = sl__pgc_exec(c, "SELECT seq FROM log_head", 0, NULL, NULL, NULL, err);
    sl__pg_state *v = NULL;
    size_t n = 0, cap = 0;
    if (!r) goto fail_io;
    *pos = sl__pgv_i64(r, 0, 0);
    PQclear(r);
    r = NULL;
    char sql[1024];
    /* two integers of ours: no parameters needed (DECLARE takes none) */
    snprintf(sql, sizeof sql, "DECLARE sl_snap NO SCROLL CURSOR FOR SELECT " SL__STATE_COLS
             " FROM products p LEFT JOIN " SL__STATE_IMAGES " ON i.product_id = p.id WHERE p.shard_key %% %d = %d"
             " ORDER BY p.id COLLATE \"C\", i.id", shards, shard);
    if ((st = sl__pgc_run(c, sql, 0, NULL, err)) != SL_OK) goto fail;
    char fetch[48];
    snprintf(fetch, sizeof fetch, "FETCH %zu FROM sl_snap", batch * 4);
    for (;;) {
        if (!(r = sl__pgc_exec(c, fetch, 0, NULL, NULL, NULL, err))) goto fail_io;
        int rows = PQntuples(r);
        st = sl__group_rows(r, 0, rows, &v, &n, &cap, err);
        PQclear(r);
        r = NULL;
        if (st != SL_OK) goto fail;
        /* the last product may go on in the next fetch: hand over the ones before it */
        size_t ready = rows == 0 ? n : (n > 0 ? n - 1 : 0);
        if (ready > 0 && (ready >= batch || rows == 0)) {
            st = fn(ctx, v, ready, err);
            for (size_t i = 0; i < ready; i++) sl__pg_state_clear(&v[i]);
            memmove(v, v + ready, (n - ready) * sizeof *v);
            n -= ready;
            if (st != SL_OK) goto fail;
        }
        if (rows == 0) break;
    }
    sl__pg_states_free(v, n);
    return sl__pgc_run(c, "COMMIT", 0, NULL, err);
fail_io:
    st = err ? err->code : SL_E_IO;
fail:
    PQclear(r);
    sl__pg_states_free(v, n);
    (void)sl__pgc_run(c, "ROLLBACK", 0, NULL, NULL);
    return st;
}

sl_status sl__log_meta(sl__pgc *c, const char *key, char **value, sl_error *err) {
    *value = NULL;
    const char *v[1] = {key};
    PGresult *r = sl__pgc_exec(c, "SELECT value FROM meta WHERE key = $1", 1, v, NULL, NULL, err);
    if (!r) return err ? err->code : SL_E_IO;
    sl_status st = SL_OK;
    if (PQntuples(r) == 0) st = sl__err_set(err, SL_E_NOT_FOUND, "meta key %s not set", key);
    else if (!(*value = sl__pgv_dup(r, 0, 0))) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    PQclear(r);
    return st;
}

sl_status sl__log_meta_init(sl__pgc *c, const char *key, const char *value, char **value_out,
                            sl_error *err) {
    *value_out = NULL;
    const char *v[2] = {key, value};
    sl_status st = sl__pgc_run(c, "INSERT INTO meta(key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING", 2, v, err);
    return st == SL_OK ? sl__log_meta(c, key, value_out, err) : st;
}

sl_status sl__log_features(sl__pgc *c, int64_t *version, void **data, size_t *len, char **spec,
                           sl_error *err) {
    *version = 0;
    *data = NULL;
    *len = 0;
    *spec = NULL;
    PGresult *r = sl__pgc_exec(c, "SELECT (SELECT value FROM meta WHERE key = 'features_version'),"
                                  " (SELECT value FROM meta WHERE key = 'features_spec')", 0, NULL, NULL, NULL, err);
    if (!r) return err ? err->code : SL_E_IO;
    *version = strtoll(sl__pgv_str(r, 0, 0), NULL, 10);
    *spec = sl__pgv_dup(r, 0, 1);
    PQclear(r);
    if (!*spec) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    if (**spec == '\0') {
        free(*spec);
        *spec = NULL;
        return sl__err_set(err, SL_E_NOT_FOUND, "%s: the cluster has no feature specification yet (shoplens init)", c->label);
    }
    if (*version <= 0) return SL_OK;
    char name[48];
    snprintf(name, sizeof name, "features-%lld.bin", (long long)*version);
    const char *v[1] = {name};
    if (!(r = sl__pgc_exec(c, "SELECT data FROM files WHERE name = $1", 1, v, NULL, NULL, err))) {
        free(*spec);
        *spec = NULL;
        return err ? err->code : SL_E_IO;
    }
    sl_status st = SL_OK;
    if (PQntuples(r) == 0) st = sl__err_set(err, SL_E_CORRUPT, "%s: %s is missing", c->label, name);
    else if (sl__dup_bytes(r, 0, 0, data, len) != SL_OK) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    PQclear(r);
    if (st != SL_OK) {
        free(*spec);
        *spec = NULL;
    }
    return st;
}

/* ---- nodes ---------------------------------------------------------------------------------- */

void sl__node_rows_free(sl__node_row *v, size_t n) {
    if (!v) return;
    for (size_t i = 0; i < n; i++) {
        free(v[i].name);
        free(v[i].role);
        free(v[i].url);
        free(v[i].host);
    }
    free(v);
}

sl_status sl__nodes_beat(sl__pgc *c, const sl__node_row *me, sl_error *err) {
    char pid[16], sh[16], shs[16], pos[24];
    snprintf(pid, sizeof pid, "%d", me->pid);
    snprintf(sh, sizeof sh, "%d", me->shard);
    snprintf(shs, sizeof shs, "%d", me->shards);
    snprintf(pos, sizeof pos, "%lld", (long long)me->log_pos);
    const char *v[8] = {me->name, me->role, me->url ? me->url : "", me->host ? me->host : "", pid,
                        me->shards > 0 ? sh : NULL, me->shards > 0 ? shs : NULL, pos};
    return sl__pgc_run(c, "INSERT INTO nodes(name, role, url, host, pid, shard, shards, log_pos)"
                          " VALUES ($1, $2, $3, $4, $5::int, $6::int, $7::int, $8::bigint)"
                          " ON CONFLICT (name) DO UPDATE SET role = EXCLUDED.role, url = EXCLUDED.url,"
                          " host = EXCLUDED.host, shard = EXCLUDED.shard, shards = EXCLUDED.shards,"
                          " log_pos = EXCLUDED.log_pos, heartbeat = now(),"
                          " started = CASE WHEN nodes.pid = EXCLUDED.pid THEN nodes.started ELSE now() END,"
                          " pid = EXCLUDED.pid", 8, v, err);
}

sl_status sl__nodes_list(sl__pgc *c, sl__node_row **out, size_t *n, sl_error *err) {
    *out = NULL;
    *n = 0;
    PGresult *r = sl__pgc_exec(c, "SELECT name, role, url, host, pid, COALESCE(shard, -1), COALESCE(shards, 0), log_pos,"
                                  " extract(epoch FROM now() - heartbeat)::float8 FROM nodes"
                                  " ORDER BY role, shard, name COLLATE \"C\"", 0, NULL, NULL, NULL, err);
    if (!r) return err ? err->code : SL_E_IO;
    size_t cnt = (size_t)PQntuples(r);
    sl__node_row *v = sl__callocarray(cnt + 1, sizeof *v);
    sl_status st = v ? SL_OK : sl__err_set(err, SL_E_NOMEM, "out of memory");
    for (size_t i = 0; st == SL_OK && i < cnt; i++) {
        int row = (int)i;
        v[i].name = sl__pgv_dup(r, row, 0);
        v[i].role = sl__pgv_dup(r, row, 1);
        v[i].url = sl__pgv_dup(r, row, 2);
        v[i].host = sl__pgv_dup(r, row, 3);
        v[i].pid = (int)sl__pgv_i64(r, row, 4);
        v[i].shard = (int)sl__pgv_i64(r, row, 5);
        v[i].shards = (int)sl__pgv_i64(r, row, 6);
        v[i].log_pos = sl__pgv_i64(r, row, 7);
        v[i].age_s = sl__pgv_f64(r, row, 8);
        if (!v[i].name || !v[i].role || !v[i].url || !v[i].host) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    PQclear(r);
    if (st != SL_OK) {
        sl__node_rows_free(v, cnt);
        return st;
    }
    *out = v;
    *n = cnt;
    return SL_OK;
}

sl_status sl__nodes_forget(sl__pgc *c, const char *name, sl_error *err) {
    const char *v[1] = {name};
    return sl__pgc_run(c, "DELETE FROM nodes WHERE name = $1", 1, v, err);
}
