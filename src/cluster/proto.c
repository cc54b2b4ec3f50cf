/*
 * cluster/proto.c - the JSON of the two phases of a distributed search (docs/cluster.md), built
 * by the router and parsed by the search nodes, and back. Query vectors and local features
 * travel as base64 of their bytes (float32 little-endian, the serialized local features);
 * scores as JSON numbers with 17 significant digits, which read back as the same doubles, so
 * the router merges exactly the scores the shards computed.
 *
 * Every field of a request is checked (type, range, sizes against the limits below) before
 * use: a phase request is input from the network.
 */
#include "cluster/cluster_internal.h"
#include "server/srv.h"
#include "util/util.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SL__PHASE_DIM_MAX 65536
#define SL__PHASE_NQ_MAX 1024
#define SL__PHASE_JSON_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(17))

/* ---- base64 (RFC 4648) ---------------------------------------------------------------------- */

static const char sl__b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *sl__b64_encode(const void *data, size_t len) {
    size_t out;
    if (sl__mul_size((len + 2) / 3, 4, &out) || sl__add_size(out, 1, &out)) return NULL;
    char *s = malloc(out), *o = s;
    const unsigned char *p = data;
    if (!s) return NULL;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < len ? (uint32_t)p[i + 1] << 8 : 0) | (i + 2 < len ? p[i + 2] : 0);
        *o++ = sl__b64[v >> 18 & 63];
        *o++ = sl__b64[v >> 12 & 63];
        *o++ = i + 1 < len ? sl__b64[v >> 6 & 63] : '=';
        *o++ = i + 2 < len ? sl__b64[v & 63] : '=';
    }
    *o = '\0';
    return s;
}

static int sl__b64_val(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Decodes base64 into a malloc'ed buffer; -1 when it is not base64. */
static int sl__b64_decode(const char *s, size_t n, void **out, size_t *len) {
    *out = NULL;
    *len = 0;
    if (n % 4) return -1;
    size_t cap = n / 4 * 3;
    unsigned char *b = malloc(cap ? cap : 1);
    if (!b) return -1;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4];
        for (int k = 0; k < 4; k++) {
            v[k] = s[i + k] == '=' && i + 4 == n && k >= 2 ? 0 : sl__b64_val(s[i + k]);
            if (v[k] < 0) {
                free(b);
                return -1;
            }
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        b[o++] = (unsigned char)(w >> 16);
        if (s[i + 2] != '=') b[o++] = (unsigned char)(w >> 8);
        if (s[i + 3] != '=') b[o++] = (unsigned char)w;
        if (s[i + 2] == '=' && s[i + 3] != '=') {
            free(b);
            return -1;
        }
    }
    *out = b;
    *len = o;
    return 0;
}

/* ---- helpers --------------------------------------------------------------------------------- */

/* A JSON string of catalog text (invalid UTF-8 bytes as '?': the server's rule). */
static json_t *sl__jtext(const char *s) { return sl__api_str(s); }

static char *sl__dump(json_t *root) {
    char *s = root ? json_dumps(root, SL__PHASE_JSON_FLAGS) : NULL;
    json_decref(root);
    return s;
}

static void sl__put_query(json_t *o, const sl_query *q, int filters) {
    if (filters) {
        json_object_set_new(o, "category", q->category ? sl__jtext(q->category) : json_null());
        json_object_set_new(o, "min_price", q->has_min_price ? json_real(q->min_price) : json_null());
        json_object_set_new(o, "max_price", q->has_max_price ? json_real(q->max_price) : json_null());
        if (q->ef) json_object_set_new(o, "ef", json_integer(q->ef)); /* absent: the node's */
    }
    json_object_set_new(o, "text", q->text ? sl__jtext(q->text) : json_null());
    json_object_set_new(o, "text_mode", json_string(q->text_mode == SL_TEXT_BOOST ? "boost" : "restrict"));
}

char *sl__phase_candidates_json(int shard, int shards, int64_t fv, const sl_query *q,
                                const char *exclude, size_t candidates, const float *vecs,
                                size_t nq, size_t dim) {
    json_t *o = json_pack("{s:i, s:i, s:I, s:I, s:I, s:o}", "shard", shard, "shards", shards,
                          "features_version", (json_int_t)fv, "candidates", (json_int_t)candidates,
                          "dim", (json_int_t)dim, "exclude", exclude ? sl__jtext(exclude) : json_null());
    json_t *vs = json_array();
    if (!o || !vs) {
        json_decref(o);
        json_decref(vs);
        return NULL;
    }
    sl__put_query(o, q, 1);
    for (size_t i = 0; i < nq; i++) {
        char *b = sl__b64_encode(vecs + i * dim, dim * sizeof *vecs);
        json_array_append_new(vs, b ? json_string(b) : json_null());
        free(b);
    }
    json_object_set_new(o, "vectors", vs);
    return sl__dump(o);
}

/* A double that may be infinite (the fold's "no catalog candidate"): null for it. */
static json_t *sl__jfinite(double x) { return isfinite(x) ? json_real(x) : json_null(); }

char *sl__phase_rerank_json(int shard, int shards, int64_t fv, const sl_query *q, size_t depth,
                            void *const *locals, const size_t *local_lens, size_t nq,
                            sl_candidate *const *lists, const size_t *counts, int parts,
                            const sl_ref_fold *folds) {
    json_t *o = json_pack("{s:i, s:i, s:I, s:I}", "shard", shard, "shards", shards,
                          "features_version", (json_int_t)fv, "depth", (json_int_t)depth);
    json_t *fs = folds ? json_array() : NULL;
    for (size_t i = 0; fs && i < nq; i++)
        json_array_append_new(fs, json_pack("[f, f, f, f, o]", folds[i].mean[0], folds[i].sd[0], folds[i].mean[1],
                                            folds[i].sd[1], sl__jfinite(folds[i].lowest)));
    if (o && parts) json_object_set_new(o, "fold_parts", json_true());
    if (o && folds) json_object_set_new(o, "fold", fs ? fs : json_null());
    json_t *ls = json_array(), *cs = json_array();
    if (!o || !ls || !cs) {
        json_decref(o);
        json_decref(ls);
        json_decref(cs);
        return NULL;
    }
    sl__put_query(o, q, 0);
    for (size_t i = 0; i < nq; i++) {
        char *b = locals && locals[i] ? sl__b64_encode(locals[i], local_lens[i]) : NULL;
        json_array_append_new(ls, b ? json_string(b) : json_null());
        free(b);
        json_t *l = json_array();
        for (size_t k = 0; l && k < counts[i]; k++) {
            const sl_candidate *x = &lists[i][k];
            json_array_append_new(l, x->reranked ? json_pack("[I, f, i, i]", (json_int_t)x->image_id, x->score, x->verify,
                                                             x->inliers)
                                                 : json_pack("[I, f, i]", (json_int_t)x->image_id, x->score, x->verify));
        }
        json_array_append_new(cs, l ? l : json_array());
    }
    json_object_set_new(o, "locals", ls);
    json_object_set_new(o, "lists", cs);
    return sl__dump(o);
}

/* ---- requests, parsed on the search node ------------------------------------------------------ */

void sl__phase_req_clear(sl__phase_req *r) {
    if (!r) return;
    free(r->vecs);
    for (size_t i = 0; i < r->nq; i++) {
        if (r->locals) free(r->locals[i]);
        if (r->lists) free(r->lists[i]);
    }
    free(r->locals);
    free(r->local_lens);
    free(r->lists);
    free(r->counts);
    free(r->folds);
    json_decref(r->json);
    memset(r, 0, sizeof *r);
}

static int sl__opt_str(json_t *o, const char *key, const char **out) {
    json_t *v = json_object_get(o, key);
    *out = NULL;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_string(v)) return -1;
    *out = json_string_value(v);
    return 0;
}

static int sl__opt_num(json_t *o, const char *key, double *out, int *has) {
    json_t *v = json_object_get(o, key);
    *has = 0;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) return -1;
    *out = json_number_value(v);
    *has = 1;
    return isfinite(*out) ? 0 : -1;
}

static int sl__int_in(json_t *o, const char *key, json_int_t lo, json_int_t hi, json_int_t *out) {
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v)) return -1;
    *out = json_integer_value(v);
    return *out >= lo && *out <= hi ? 0 : -1;
}

sl_status sl__phase_req_parse(const void *body, size_t len, int rerank, sl__phase_req *r,
                              sl_error *err) {
    memset(r, 0, sizeof *r);
    json_error_t je;
    r->json = json_loadb(body, len, 0, &je);
    if (!json_is_object(r->json)) {
        sl__phase_req_clear(r);
        return sl__err_set(err, SL_E_INVALID, "phase request: not a JSON object (%s)", je.text);
    }
    json_t *o = r->json;
    json_int_t sh, shs, fv, n;
    const char *mode = NULL;
    const char *bad = NULL;
    if (sl__int_in(o, "shards", 1, SL_CLUSTER_SHARDS_MAX, &shs) || sl__int_in(o, "shard", 0, shs - 1, &sh)) bad = "shard/shards";
    else if (sl__int_in(o, "features_version", 0, INT64_MAX, &fv)) bad = "features_version";
    else if (sl__opt_str(o, "text", &r->q.text) || sl__opt_str(o, "text_mode", &mode) ||
             (mode && strcmp(mode, "boost") != 0 && strcmp(mode, "restrict") != 0)) bad = "text/text_mode";
    if (bad) goto invalid;
    r->shard = (int)sh;
    r->shards = (int)shs;
    r->features_version = fv;
    r->q.text_mode = mode && strcmp(mode, "boost") == 0 ? SL_TEXT_BOOST : SL_TEXT_RESTRICT;
    if (!rerank) {
        json_int_t dim;
        json_t *vs = json_object_get(o, "vectors");
        if (sl__int_in(o, "candidates", 1, SL_INDEX_K_MAX, &n)) { bad = "candidates"; goto invalid; }
        if (sl__int_in(o, "dim", 1, SL__PHASE_DIM_MAX, &dim)) { bad = "dim"; goto invalid; }
        if (sl__opt_str(o, "category", &r->q.category) || sl__opt_str(o, "exclude", &r->exclude) ||
            sl__opt_num(o, "min_price", &r->q.min_price, &r->q.has_min_price) ||
            sl__opt_num(o, "max_price", &r->q.max_price, &r->q.has_max_price)) { bad = "filters"; goto invalid; }
        json_int_t ef = 0;
        if (json_object_get(o, "ef") && sl__int_in(o, "ef", SL_ENGINE_HNSW_EF_MIN, SL_ENGINE_HNSW_EF_MAX, &ef)) { bad = "ef"; goto invalid; }
        r->q.ef = (int)ef;
        if (!json_is_array(vs) || json_array_size(vs) < 1 || json_array_size(vs) > SL__PHASE_NQ_MAX) { bad = "vectors"; goto invalid; }
        r->candidates = (size_t)n;
        r->dim = (size_t)dim;
        r->nq = json_array_size(vs);
        size_t total;
        if (sl__mul_size(r->nq, r->dim, &total) || !(r->vecs = sl__mallocarray(total, sizeof *r->vecs))) {
            sl__phase_req_clear(r);
            return sl__err_set(err, SL_E_NOMEM, "out of memory");
        }
        for (size_t i = 0; i < r->nq; i++) {
            json_t *v = json_array_get(vs, i);
            void *b = NULL;
            size_t bl = 0;
            if (!json_is_string(v) || sl__b64_decode(json_string_value(v), json_string_length(v), &b, &bl) != 0 ||
                bl != r->dim * sizeof(float)) {
                free(b);
                bad = "vectors";
                goto invalid;
            }
            memcpy(r->vecs + i * r->dim, b, bl);
            free(b);
            for (size_t k = 0; k < r->dim; k++)
                if (!isfinite(r->vecs[i * r->dim + k])) { bad = "vectors"; goto invalid; }
        }
        return SL_OK;
    }
    json_t *ls = json_object_get(o, "locals"), *cs = json_object_get(o, "lists");
    if (sl__int_in(o, "depth", 1, SL_ENGINE_RANK_MAX, &n)) { bad = "depth"; goto invalid; }
    if (!json_is_array(ls) || !json_is_array(cs) || json_array_size(ls) != json_array_size(cs) ||
        json_array_size(cs) < 1 || json_array_size(cs) > SL__PHASE_NQ_MAX) { bad = "locals/lists"; goto invalid; }
    r->depth = (size_t)n;
    r->nq = json_array_size(cs);
    r->locals = sl__callocarray(r->nq, sizeof *r->locals);
    r->local_lens = sl__callocarray(r->nq, sizeof *r->local_lens);
    r->lists = sl__callocarray(r->nq, sizeof *r->lists);
    r->counts = sl__callocarray(r->nq, sizeof *r->counts);
    if (!r->locals || !r->local_lens || !r->lists || !r->counts) {
        sl__phase_req_clear(r);
        return sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < r->nq; i++) {
        json_t *l = json_array_get(ls, i), *c = json_array_get(cs, i);
        if (json_is_string(l) &&
            sl__b64_decode(json_string_value(l), json_string_length(l), &r->locals[i], &r->local_lens[i]) != 0) {
            bad = "locals";
            goto invalid;
        }
        if (!json_is_null(l) && !json_is_string(l)) { bad = "locals"; goto invalid; }
        if (!json_is_array(c) || json_array_size(c) > SL_INDEX_K_MAX) { bad = "lists"; goto invalid; }
        size_t m = json_array_size(c);
        if (!(r->lists[i] = sl__callocarray(m + 1, sizeof *r->lists[i]))) {
            sl__phase_req_clear(r);
            return sl__err_set(err, SL_E_NOMEM, "out of memory");
        }
        for (size_t k = 0; k < m; k++) {
            /* [id, score, verify], or [id, re-ranked score, verify, inliers] (phase 2b) */
            json_t *e = json_array_get(c, k);
            json_t *id = json_array_get(e, 0), *sc = json_array_get(e, 1), *vf = json_array_get(e, 2);
            json_t *in = json_array_get(e, 3);
            size_t es = json_array_size(e);
            if (!json_is_array(e) || (es != 3 && es != 4) || !json_is_integer(id) || !json_is_number(sc) ||
                !json_is_integer(vf) || !isfinite(json_number_value(sc)) ||
                (in && (!json_is_integer(in) || json_integer_value(in) < -1 || json_integer_value(in) > INT_MAX))) {
                bad = "lists";
                goto invalid;
            }
            r->lists[i][k].image_id = json_integer_value(id);
            r->lists[i][k].score = json_number_value(sc);
            r->lists[i][k].verify = json_integer_value(vf) != 0;
            r->lists[i][k].reranked = in != NULL;
            r->lists[i][k].inliers = in ? (int)json_integer_value(in) : -1;
        }
        r->counts[i] = m;
    }
    /* phase 2a (fold_parts) or 2b (fold: one [mean_c, sd_c, mean_r, sd_r, lowest|null] per list) */
    json_t *fp = json_object_get(o, "fold_parts"), *fs = json_object_get(o, "fold");
    if (fp && !json_is_boolean(fp)) { bad = "fold_parts"; goto invalid; }
    r->fold_parts = json_is_true(fp);
    if (fs && !json_is_null(fs)) {
        if (!json_is_array(fs) || json_array_size(fs) != r->nq) { bad = "fold"; goto invalid; }
        if (!(r->folds = sl__callocarray(r->nq, sizeof *r->folds))) {
            sl__phase_req_clear(r);
            return sl__err_set(err, SL_E_NOMEM, "out of memory");
        }
        for (size_t i = 0; i < r->nq; i++) {
            json_t *f = json_array_get(fs, i);
            double *d[4] = {&r->folds[i].mean[0], &r->folds[i].sd[0], &r->folds[i].mean[1], &r->folds[i].sd[1]};
            if (!json_is_array(f) || json_array_size(f) != 5) { bad = "fold"; goto invalid; }
            for (size_t k = 0; k < 4; k++) {
                json_t *x = json_array_get(f, k);
                if (!json_is_number(x) || !isfinite(*d[k] = json_number_value(x))) { bad = "fold"; goto invalid; }
            }
            json_t *lo = json_array_get(f, 4);
            if (!json_is_null(lo) && (!json_is_number(lo) || !isfinite(json_number_value(lo)))) { bad = "fold"; goto invalid; }
            r->folds[i].lowest = json_is_null(lo) ? INFINITY : json_number_value(lo);
        }
    }
    return SL_OK;
invalid:
    sl__phase_req_clear(r);
    return sl__err_set(err, SL_E_INVALID, "phase request: bad or missing %s", bad);
}

/* ---- answers ---------------------------------------------------------------------------------- */

char *sl__phase_lists_json(int64_t log_pos, int64_t entries, int64_t refs, sl_candidate *const *lists,
                           const size_t *counts, size_t nq) {
    json_t *ls = json_array();
    for (size_t i = 0; ls && i < nq; i++) {
        json_t *l = json_array();
        for (size_t k = 0; l && k < counts[i]; k++)
            json_array_append_new(l, json_pack("[I, f]", (json_int_t)lists[i][k].image_id, lists[i][k].score));
        json_array_append_new(ls, l ? l : json_array());
    }
    return ls ? sl__dump(json_pack("{s:I, s:I, s:I, s:o}", "log_pos", (json_int_t)log_pos, "entries", (json_int_t)entries,
                                   "refs", (json_int_t)refs, "lists", ls))
              : NULL;
}

sl_status sl__phase_lists_parse(const char *json, size_t len, size_t nq, sl_candidate **lists,
                                size_t *counts, int64_t *entries, int64_t *refs, sl_error *err) {
    json_error_t je;
    json_t *root = json_loadb(json, len, 0, &je);
    json_t *ls = json_object_get(root, "lists");
    sl_status st = SL_OK;
    /* absent from nodes of older builds: no references */
    json_t *en = json_object_get(root, "entries"), *rf = json_object_get(root, "refs");
    *entries = json_is_integer(en) && json_integer_value(en) > 0 ? json_integer_value(en) : 0;
    *refs = json_is_integer(rf) && json_integer_value(rf) > 0 && json_integer_value(rf) <= *entries ? json_integer_value(rf) : 0;
    if (!json_is_array(ls) || json_array_size(ls) != nq) {
        json_decref(root);
        return sl__err_set(err, SL_E_CORRUPT, "a search node answered candidates that do not parse");
    }
    for (size_t i = 0; i < nq && st == SL_OK; i++) {
        json_t *l = json_array_get(ls, i);
        size_t m = json_is_array(l) ? json_array_size(l) : 0;
        if (!json_is_array(l) || m > SL_INDEX_K_MAX || !(lists[i] = sl__callocarray(m + 1, sizeof *lists[i]))) {
            st = sl__err_set(err, SL_E_CORRUPT, "a search node answered candidates that do not parse");
            break;
        }
        for (size_t k = 0; k < m; k++) {
            json_t *e = json_array_get(l, k);
            json_t *id = json_array_get(e, 0), *sc = json_array_get(e, 1);
            if (!json_is_integer(id) || !json_is_number(sc)) {
                st = sl__err_set(err, SL_E_CORRUPT, "a search node answered candidates that do not parse");
                break;
            }
            lists[i][k].image_id = json_integer_value(id);
            lists[i][k].score = json_number_value(sc);
        }
        counts[i] = m;
    }
    json_decref(root);
    if (st != SL_OK) sl_candidate_lists_clear(lists, counts, nq);
    return st;
}

char *sl__phase_matches_json(const sl_matches *m) {
    json_t *a = json_array();
    for (size_t i = 0; a && i < m->n; i++) {
        const sl_match *x = &m->items[i];
        json_array_append_new(a, json_pack("{s:o, s:f, s:o, s:o, s:o, s:o, s:o, s:I, s:o, s:i, s:f, s:b}",
            "product_id", sl__jtext(x->product_id), "score", x->score, "title", sl__jtext(x->title),
            "category", sl__jtext(x->category), "price", x->has_price ? json_real(x->price) : json_null(),
            "currency", sl__jtext(x->currency ? x->currency : ""), "url", sl__jtext(x->url ? x->url : ""),
            "image_id", (json_int_t)x->image_id, "image", sl__jtext(x->image ? x->image : ""), "inliers", x->inliers,
            "confidence", x->confidence, "match", x->match));
    }
    return a ? sl__dump(json_pack("{s:o}", "results", a)) : NULL;
}

char *sl__phase_parts_json(const sl_ref_fold_part *parts, sl_candidate *const *lists, const size_t *counts,
                           size_t nq) {
    json_t *a = json_array(), *sc = lists ? json_array() : NULL;
    for (size_t i = 0; sc && i < nq; i++) {
        json_t *l = json_array();
        for (size_t k = 0; l && k < counts[i]; k++)
            json_array_append_new(l, json_pack("[f, i]", lists[i][k].score, lists[i][k].inliers));
        json_array_append_new(sc, l ? l : json_null());
    }
    for (size_t i = 0; a && i < nq; i++) {
        json_t *k[2];
        for (int kind = 0; kind < 2; kind++) {
            k[kind] = json_array();
            for (size_t j = 0; k[kind] && j < parts[i].n[kind]; j++) json_array_append_new(k[kind], json_real(parts[i].best[kind][j]));
        }
        json_array_append_new(a, json_pack("{s:o, s:o, s:o}", "catalog", k[0] ? k[0] : json_array(),
                                           "references", k[1] ? k[1] : json_array(), "lowest", sl__jfinite(parts[i].lowest)));
    }
    if (!a || (lists && !sc)) {
        json_decref(a);
        json_decref(sc);
        return NULL;
    }
    json_t *o = json_pack("{s:o}", "parts", a);
    if (o && sc) json_object_set_new(o, "scored", sc);
    return sl__dump(o);
}

/* The "scored" of a phase 2a answer (nq lists of [score, inliers], counts[i] each): -1 when it
 * does not match the lists, else 0 with the lists re-ranked in place. */
static int sl__phase_scored(json_t *sc, size_t nq, sl_candidate *const *lists, const size_t *counts) {
    if (!json_is_array(sc) || json_array_size(sc) != nq) return -1;
    for (size_t i = 0; i < nq; i++) { /* all checked before any is taken */
        json_t *l = json_array_get(sc, i);
        if (!json_is_array(l) || json_array_size(l) != counts[i]) return -1;
        for (size_t k = 0; k < counts[i]; k++) {
            json_t *e = json_array_get(l, k), *x = json_array_get(e, 0), *in = json_array_get(e, 1);
            if (json_array_size(e) != 2 || !json_is_number(x) || !isfinite(json_number_value(x)) ||
                !json_is_integer(in) || json_integer_value(in) < -1 || json_integer_value(in) > INT_MAX)
                return -1;
        }
    }
    for (size_t i = 0; i < nq; i++)
        for (size_t k = 0; k < counts[i]; k++) {
            json_t *e = json_array_get(json_array_get(sc, i), k);
            lists[i][k].score = json_number_value(json_array_get(e, 0));
            lists[i][k].inliers = (int)json_integer_value(json_array_get(e, 1));
            lists[i][k].reranked = 1;
        }
    return 0;
}

sl_status sl__phase_parts_parse(const char *json, size_t len, size_t nq, sl_ref_fold_part *parts,
                                sl_candidate *const *lists, const size_t *counts, sl_error *err) {
    json_error_t je;
    json_t *root = json_loadb(json, len, 0, &je);
    json_t *a = json_object_get(root, "parts");
    sl_status st = json_is_array(a) && json_array_size(a) == nq ? SL_OK
                 : sl__err_set(err, SL_E_CORRUPT, "a search node answered fold parts that do not parse");
    for (size_t i = 0; i < nq; i++) {
        memset(&parts[i], 0, sizeof parts[i]);
        parts[i].lowest = INFINITY;
    }
    for (size_t i = 0; i < nq && st == SL_OK; i++) {
        json_t *o = json_array_get(a, i), *lo = json_object_get(o, "lowest");
        const char *key[2] = {"catalog", "references"};
        for (int kind = 0; kind < 2 && st == SL_OK; kind++) {
            json_t *l = json_object_get(o, key[kind]);
            size_t m = json_is_array(l) ? json_array_size(l) : 0;
            if (!json_is_array(l) || m > SL_CALIB_COHORT_MAX || !(parts[i].best[kind] = sl__callocarray(m + 1, sizeof(double)))) {
                st = sl__err_set(err, SL_E_CORRUPT, "a search node answered fold parts that do not parse");
                break;
            }
            for (size_t j = 0; j < m && st == SL_OK; j++) {
                json_t *x = json_array_get(l, j);
                if (!json_is_number(x) || !isfinite(json_number_value(x)))
                    st = sl__err_set(err, SL_E_CORRUPT, "a search node answered fold parts that do not parse");
                else parts[i].best[kind][j] = json_number_value(x);
            }
            parts[i].n[kind] = m;
        }
        if (st == SL_OK && !json_is_null(lo) && !json_is_number(lo))
            st = sl__err_set(err, SL_E_CORRUPT, "a search node answered fold parts that do not parse");
        if (st == SL_OK && json_is_number(lo)) parts[i].lowest = json_number_value(lo);
    }
    /* absent from nodes of older builds: phase 2b re-ranks (and verifies) the lists again */
    json_t *sc = json_object_get(root, "scored");
    if (st == SL_OK && lists && sc && sl__phase_scored(sc, nq, lists, counts) != 0)
        st = sl__err_set(err, SL_E_CORRUPT, "a search node answered re-ranked candidates that do not parse");
    json_decref(root);
    for (size_t i = 0; st != SL_OK && i < nq; i++) sl_ref_fold_part_clear(&parts[i]);
    return st;
}

static char *sl__dupj(json_t *o, const char *key) {
    const char *s = json_string_value(json_object_get(o, key));
    return sl__strdup(s ? s : "");
}

sl_status sl__phase_matches_parse(const char *json, size_t len, sl_matches *m, sl_error *err) {
    json_error_t je;
    json_t *root = json_loadb(json, len, 0, &je);
    json_t *a = json_object_get(root, "results");
    if (!json_is_array(a) || json_array_size(a) > SL_ENGINE_RANK_MAX) {
        json_decref(root);
        return sl__err_set(err, SL_E_CORRUPT, "a search node answered results that do not parse");
    }
    size_t add = json_array_size(a);
    sl_match *nv = sl__reallocarray(m->items, m->n + add + 1, sizeof *nv);
    if (!nv) {
        json_decref(root);
        return sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    m->items = nv;
    sl_status st = SL_OK;
    for (size_t i = 0; i < add; i++) {
        json_t *o = json_array_get(a, i);
        json_t *price = json_object_get(o, "price");
        if (!json_is_object(o) || !json_is_string(json_object_get(o, "product_id")) ||
            !json_is_number(json_object_get(o, "score"))) {
            st = sl__err_set(err, SL_E_CORRUPT, "a search node answered results that do not parse");
            break;
        }
        sl_match *x = &m->items[m->n];
        memset(x, 0, sizeof *x);
        x->product_id = sl__dupj(o, "product_id");
        x->title = sl__dupj(o, "title");
        x->category = sl__dupj(o, "category");
        x->currency = sl__dupj(o, "currency");
        x->url = sl__dupj(o, "url");
        x->image = sl__dupj(o, "image");
        x->score = json_number_value(json_object_get(o, "score"));
        x->has_price = json_is_number(price);
        x->price = x->has_price ? json_number_value(price) : 0;
        x->image_id = json_integer_value(json_object_get(o, "image_id"));
        x->inliers = (int)json_integer_value(json_object_get(o, "inliers"));
        /* absent from nodes of older builds: no confidence, no match */
        double conf = json_number_value(json_object_get(o, "confidence"));
        x->confidence = isfinite(conf) && conf >= 0 && conf <= 1 ? conf : 0;
        x->match = json_is_true(json_object_get(o, "match"));
        m->n++;
        if (!x->product_id || !x->title || !x->category || !x->currency || !x->url || !x->image) {
            st = sl__err_set(err, SL_E_NOMEM, "out of memory");
            break;
        }
    }
    json_decref(root);
    return st;
}
