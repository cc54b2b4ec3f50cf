/*
 * cluster/router.c - a search over a cluster (docs/cluster.md): describe the query once, ask one
 * live replica of every shard for its candidates (phase 1), merge them into the candidate list
 * of the whole catalog, ask the shards that hold the merged candidates to re-rank exactly those
 * (phase 2), merge the products and cut the page.
 *
 * Why this gives the single-store answer: a single store takes the best C images of the whole
 * catalog per query vector (C = sl_engine_plan's depth), verifies the first V of them and keeps
 * each product's best. Every one of those C is among the best C of its own shard, so asking
 * each shard for C and merging by (score, image id) gives the same C in the same order; phase 2
 * verifies exactly the first V of that order (flags), on the shard that holds each image, and
 * since a product lives in one shard its best image is found there. Asking each shard for fewer
 * than C would lose the candidates of a catalog whose best matches sit in one shard; letting
 * each shard verify its own best V would give the same list at S times the verification work.
 *
 * Failures: a replica that fails a call (refused, reset, timeout, an error status) is avoided
 * for SL__ROUTER_DOWN_S seconds and the call goes to the next live replica of its shard; when
 * every replica of a shard failed, the answer is marked partial and names the shard. Liveness
 * comes from the heartbeats in PostgreSQL (refreshed by the node's thread every second), so a
 * router never asks a node that stopped beating, and a node that died a moment ago costs one
 * refused connection.
 */
#include "cluster/cluster_internal.h"
#include "util/util.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SL__ROUTER_DOWN_S 5.0
#define SL__ROUTER_RESP_MAX ((size_t)64 << 20)

struct sl__router {
    sl_node *n;
    CURLSH *share;
    pthread_mutex_t locks[CURL_LOCK_DATA_LAST];
    int timeout_ms;
    /* the shards' index entries and references at the last search: the candidate depth of the
     * next one is asked for with them (and asked again when they grew meanwhile) */
    _Atomic int64_t entries, refs;
};

static pthread_once_t sl__curl_once = PTHREAD_ONCE_INIT;
static void sl__curl_init(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

static void sl__share_lock(CURL *h, curl_lock_data d, curl_lock_access a, void *u) {
    (void)h;
    (void)a;
    sl__router *r = u;
    if (d >= 0 && d < CURL_LOCK_DATA_LAST) pthread_mutex_lock(&r->locks[d]);
}

static void sl__share_unlock(CURL *h, curl_lock_data d, void *u) {
    (void)h;
    sl__router *r = u;
    if (d >= 0 && d < CURL_LOCK_DATA_LAST) pthread_mutex_unlock(&r->locks[d]);
}

sl_status sl__router_new(sl_node *n, sl__router **out, sl_error *err) {
    *out = NULL;
    pthread_once(&sl__curl_once, sl__curl_init);
    sl__router *r = calloc(1, sizeof *r);
    if (!r) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    r->n = n;
    r->timeout_ms = n->o.timeout_ms > 0 ? n->o.timeout_ms : SL_NODE_TIMEOUT_MS_DEFAULT;
    if (r->timeout_ms < SL_NODE_TIMEOUT_MS_MIN) r->timeout_ms = SL_NODE_TIMEOUT_MS_MIN;
    if (r->timeout_ms > SL_NODE_TIMEOUT_MS_MAX) r->timeout_ms = SL_NODE_TIMEOUT_MS_MAX;
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++) pthread_mutex_init(&r->locks[i], NULL);
    /* kept-alive connections to the replicas, shared by every request */
    r->share = curl_share_init();
    if (r->share) {
        curl_share_setopt(r->share, CURLSHOPT_LOCKFUNC, sl__share_lock);
        curl_share_setopt(r->share, CURLSHOPT_UNLOCKFUNC, sl__share_unlock);
        curl_share_setopt(r->share, CURLSHOPT_USERDATA, r);
        curl_share_setopt(r->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
        curl_share_setopt(r->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    }
    *out = r;
    return SL_OK;
}

void sl__router_free(sl__router *r) {
    if (!r) return;
    if (r->share) curl_share_cleanup(r->share);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++) pthread_mutex_destroy(&r->locks[i]);
    free(r);
}

/* ---- the replicas of a request ---------------------------------------------------------------- */

/* A request's view of the replicas: copied once, ordered per shard (round robin start, the
 * ones that failed lately last). */
typedef struct sl__view {
    int shards;
    size_t n;
    char **name, **url;
    int *shard;
    int *avoid;
} sl__view;

static void sl__view_free(sl__view *v) {
    for (size_t i = 0; i < v->n; i++) {
        free(v->name[i]);
        free(v->url[i]);
    }
    free(v->name);
    free(v->url);
    free(v->shard);
    free(v->avoid);
    memset(v, 0, sizeof *v);
}

static sl_status sl__view_take(sl_node *n, sl__view *v, sl_error *err) {
    memset(v, 0, sizeof *v);
    double now = sl__now();
    unsigned rr = atomic_fetch_add(&n->rr, 1u);
    pthread_mutex_lock(&n->mu);
    v->shards = n->shards;
    size_t m = n->n_replicas;
    v->name = sl__callocarray(m + 1, sizeof *v->name);
    v->url = sl__callocarray(m + 1, sizeof *v->url);
    v->shard = sl__callocarray(m + 1, sizeof *v->shard);
    v->avoid = sl__callocarray(m + 1, sizeof *v->avoid);
    sl_status st = v->name && v->url && v->shard && v->avoid ? SL_OK : sl__err_set(err, SL_E_NOMEM, "out of memory");
    for (size_t k = 0; st == SL_OK && k < m; k++) {
        size_t i = (k + rr) % m; /* spreads the load over a shard's replicas */
        v->name[v->n] = sl__strdup(n->replicas[i].name);
        v->url[v->n] = sl__strdup(n->replicas[i].url);
        v->shard[v->n] = n->replicas[i].shard;
        v->avoid[v->n] = atomic_load(&n->replicas[i].down_until) > now;
        if (!v->name[v->n] || !v->url[v->n]) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        v->n++;
    }
    pthread_mutex_unlock(&n->mu);
    if (st != SL_OK) sl__view_free(v);
    return st;
}

static void sl__mark_down(sl_node *n, const char *name) {
    pthread_mutex_lock(&n->mu);
    for (size_t i = 0; i < n->n_replicas; i++)
        if (strcmp(n->replicas[i].name, name) == 0) atomic_store(&n->replicas[i].down_until, sl__now() + SL__ROUTER_DOWN_S);
    pthread_mutex_unlock(&n->mu);
}

/* The next replica of shard s not tried yet (those to avoid after the others), or -1. */
static long sl__next_replica(const sl__view *v, int s, const unsigned char *tried, long prefer) {
    if (prefer >= 0 && !tried[prefer]) return prefer;
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < v->n; i++)
            if (v->shard[i] == s && !tried[i] && v->avoid[i] == pass) return (long)i;
    return -1;
}

/* ---- calls ------------------------------------------------------------------------------------ */

typedef struct sl__call {
    int shard;
    long replica;
    CURL *h;
    struct curl_slist *hdr;
    char *body;               /* the request (owned) */
    char *resp;
    size_t len, cap;
    int overflow;
    int run;                  /* asked in this round */
    int ok;
} sl__call;

static size_t sl__on_data(char *p, size_t size, size_t nm, void *u) {
    sl__call *c = u;
    size_t n = size * nm;
    if (c->len + n + 1 > SL__ROUTER_RESP_MAX) {
        c->overflow = 1;
        return 0;
    }
    if (c->len + n + 1 > c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 16384;
        while (nc < c->len + n + 1) nc *= 2;
        char *nb = realloc(c->resp, nc);
        if (!nb) return 0;
        c->resp = nb;
        c->cap = nc;
    }
    memcpy(c->resp + c->len, p, n);
    c->len += n;
    c->resp[c->len] = '\0';
    return n;
}

/* Runs the calls of this round (run) in parallel; sets ok on each. */
static void sl__run_calls(sl__router *r, const sl__view *v, const char *path, sl__call *calls, size_t nc) {
    CURLM *m = curl_multi_init();
    if (!m) return;
    for (size_t i = 0; i < nc; i++) {
        sl__call *c = &calls[i];
        if (!c->run) continue;
        c->len = 0;
        c->ok = c->overflow = 0;
        if (!c->h && !(c->h = curl_easy_init())) continue;
        curl_easy_reset(c->h);
        char url[1024];
        const char *base = v->url[c->replica];
        size_t bl = strlen(base);
        snprintf(url, sizeof url, "%.*s%s", (int)(bl && base[bl - 1] == '/' ? bl - 1 : bl), base, path);
        if (!c->hdr) {
            c->hdr = curl_slist_append(NULL, "Content-Type: application/json");
            c->hdr = curl_slist_append(c->hdr, "Expect:");
        }
        curl_easy_setopt(c->h, CURLOPT_URL, url);
        curl_easy_setopt(c->h, CURLOPT_POST, 1L);
        curl_easy_setopt(c->h, CURLOPT_POSTFIELDS, c->body);
        curl_easy_setopt(c->h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(c->body));
        curl_easy_setopt(c->h, CURLOPT_HTTPHEADER, c->hdr);
        curl_easy_setopt(c->h, CURLOPT_WRITEFUNCTION, sl__on_data);
        curl_easy_setopt(c->h, CURLOPT_WRITEDATA, c);
        curl_easy_setopt(c->h, CURLOPT_TIMEOUT_MS, (long)r->timeout_ms);
        curl_easy_setopt(c->h, CURLOPT_CONNECTTIMEOUT_MS, (long)(r->timeout_ms < 1000 ? r->timeout_ms : 1000));
        curl_easy_setopt(c->h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c->h, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(c->h, CURLOPT_PRIVATE, c);
        if (r->share) curl_easy_setopt(c->h, CURLOPT_SHARE, r->share);
        curl_multi_add_handle(m, c->h);
    }
    int running = 1;
    while (running) {
        if (curl_multi_perform(m, &running) != CURLM_OK) break;
        if (running && curl_multi_poll(m, NULL, 0, 100, NULL) != CURLM_OK) break;
    }
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(m, &left))) {
        if (msg->msg != CURLMSG_DONE) continue;
        sl__call *c = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&c);
        long code = 0;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &code);
        if (c) c->ok = msg->data.result == CURLE_OK && code == 200 && !c->overflow && c->resp;
    }
    for (size_t i = 0; i < nc; i++)
        if (calls[i].h && calls[i].run) curl_multi_remove_handle(m, calls[i].h);
    curl_multi_cleanup(m);
}

/* One phase: calls[s] (body NULL = nothing to ask shard s) go to a replica of their shard each,
 * retried on the next replica until one answers or none is left (then ok = 0). prefer[s]: the
 * replica to try first (-1: any). */
static void sl__phase(sl__router *r, const sl__view *v, const char *path, sl__call *calls, int shards,
                      const long *prefer) {
    size_t tsz;
    if (sl__mul_size((size_t)shards, v->n + 1, &tsz)) return;
    unsigned char *tried = calloc(tsz ? tsz : 1, 1);
    if (!tried) return;
    for (;;) {
        int any = 0;
        for (int s = 0; s < shards; s++) {
            sl__call *c = &calls[s];
            c->run = 0;
            if (!c->body || c->ok) continue;
            long i = sl__next_replica(v, s, tried + (size_t)s * (v->n + 1), prefer ? prefer[s] : -1);
            if (i < 0) continue;
            tried[(size_t)s * (v->n + 1) + (size_t)i] = 1;
            c->replica = i;
            c->run = any = 1;
        }
        if (!any) break;
        sl__run_calls(r, v, path, calls, (size_t)shards);
        for (int s = 0; s < shards; s++)
            if (calls[s].run && !calls[s].ok) sl__mark_down(r->n, v->name[calls[s].replica]);
    }
    /* the replica that answered stays in calls[s].replica for the next phase */
    free(tried);
}

static void sl__calls_free(sl__call *calls, int n) {
    for (int i = 0; calls && i < n; i++) {
        if (calls[i].h) curl_easy_cleanup(calls[i].h);
        curl_slist_free_all(calls[i].hdr);
        free(calls[i].body);
        free(calls[i].resp);
    }
    free(calls);
}

/* ---- the search ------------------------------------------------------------------------------- */

typedef struct sl__owned {
    sl_candidate c;
    int shard;
} sl__owned;

static int sl__cmp_owned(const void *a, const void *b) {
    const sl__owned *x = a, *y = b;
    if (x->c.score != y->c.score) return x->c.score > y->c.score ? -1 : 1;
    return (x->c.image_id > y->c.image_id) - (x->c.image_id < y->c.image_id);
}

void sl__merged_free(sl_candidate ***per, size_t **pcount, size_t shards, size_t nq) {
    for (size_t s = 0; per && s < shards; s++) {
        for (size_t qi = 0; per[s] && qi < nq; qi++) free(per[s][qi]);
        free(per[s]);
    }
    for (size_t s = 0; pcount && s < shards; s++) free(pcount[s]);
    free(per);
    free(pcount);
}

sl_status sl__merge_candidates(size_t shards, size_t nq, sl_candidate ***lists, size_t **counts,
                               size_t nc, size_t vt, sl_candidate ****per_out, size_t ***pcount_out,
                               sl_error *err) {
    sl_candidate ***per = sl__callocarray(shards + 1, sizeof *per);
    size_t **pcount = sl__callocarray(shards + 1, sizeof *pcount);
    sl_status st = per && pcount ? SL_OK : sl__err_set(err, SL_E_NOMEM, "out of memory");
    for (size_t s = 0; st == SL_OK && s < shards; s++) {
        per[s] = sl__callocarray(nq + 1, sizeof *per[s]);
        pcount[s] = sl__callocarray(nq + 1, sizeof *pcount[s]);
        if (!per[s] || !pcount[s]) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    sl__owned *all = NULL;
    for (size_t qi = 0; qi < nq && st == SL_OK; qi++) {
        size_t total = 0;
        for (size_t s = 0; s < shards; s++) total += counts[s] ? counts[s][qi] : 0;
        free(all);
        if (!(all = sl__mallocarray(total ? total : 1, sizeof *all))) {
            st = sl__err_set(err, SL_E_NOMEM, "out of memory");
            break;
        }
        size_t m = 0;
        for (size_t s = 0; s < shards; s++)
            for (size_t i = 0; counts[s] && i < counts[s][qi]; i++) {
                all[m].c = lists[s][qi][i];
                all[m].shard = (int)s;
                m++;
            }
        qsort(all, m, sizeof *all, sl__cmp_owned);
        if (m > nc) m = nc;
        size_t refs = 0;
        for (size_t i = 0; i < m && st == SL_OK; i++) {
            all[i].c.verify = sl_engine_verify_pick(i, all[i].c.image_id, vt, &refs);
            size_t s = (size_t)all[i].shard;
            if (!per[s][qi] && !(per[s][qi] = sl__mallocarray(m, sizeof *per[s][qi]))) {
                st = sl__err_set(err, SL_E_NOMEM, "out of memory");
                break;
            }
            per[s][qi][pcount[s][qi]++] = all[i].c;
        }
    }
    free(all);
    if (st != SL_OK) {
        sl__merged_free(per, pcount, shards, nq);
        per = NULL;
        pcount = NULL;
    }
    *per_out = per;
    *pcount_out = pcount;
    return st;
}

static void sl__missing(sl_server_search_info *info, int s) {
    for (int i = 0; i < info->n_missing; i++)
        if (info->missing[i] == s) return;
    info->partial = 1;
    if (info->n_missing < SL_SERVER_MISSING_MAX) info->missing[info->n_missing++] = s;
}

/* Phase 2a: every shard holding merged candidates re-ranks them and answers its part of each
 * list's references fold and the candidates re-ranked (per[s] takes them: phase 2b sends them
 * back, so nothing is verified twice; a node of an older build does not send them and re-ranks
 * again in 2b); *folds receives the folds of the whole lists (nq, malloc'ed). A shard that does
 * not answer is named missing and adds no part. */
static sl_status sl__route_folds(sl__router *r, const sl__view *v, int S, int64_t fv, const sl_query *q, size_t depth,
                                 void *const *locals, const size_t *local_lens, size_t nq, sl_candidate ***per,
                                 size_t **pcount, const long *prefer, sl__call *calls, sl_ref_fold **folds,
                                 sl_server_search_info *info, sl_error *err) {
    size_t total;
    *folds = NULL;
    if (sl__mul_size((size_t)S, nq, &total)) return sl__err_set(err, SL_E_NOMEM, "out of memory");
    sl_ref_fold_part *parts = sl__callocarray(total + 1, sizeof *parts), *one = sl__callocarray((size_t)S + 1, sizeof *one);
    unsigned char *got = sl__callocarray((size_t)S + 1, 1);
    sl_ref_fold *f = sl__callocarray(nq + 1, sizeof *f);
    sl_status st = parts && one && got && f ? SL_OK : sl__err_set(err, SL_E_NOMEM, "out of memory");
    for (int s = 0; s < S && st == SL_OK; s++) {
        size_t any = 0;
        for (size_t qi = 0; qi < nq; qi++) any += pcount[s][qi];
        if (any && !(calls[s].body = sl__phase_rerank_json(s, S, fv, q, depth, (void **)locals, (size_t *)local_lens, nq,
                                                           per[s], pcount[s], 1, NULL)))
            st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    if (st == SL_OK) sl__phase(r, v, "/v1/internal/rerank", calls, S, prefer);
    for (int s = 0; s < S; s++) {
        if (st == SL_OK && calls[s].body) {
            if (calls[s].ok && sl__phase_parts_parse(calls[s].resp, calls[s].len, nq, parts + (size_t)s * nq, per[s],
                                                     pcount[s], NULL) == SL_OK)
                got[s] = 1;
            else sl__missing(info, s);
        }
        free(calls[s].body);
        calls[s].body = NULL;
        calls[s].ok = 0;
    }
    for (size_t qi = 0; qi < nq && st == SL_OK; qi++) {
        size_t m = 0;
        for (int s = 0; s < S; s++)
            if (got[s]) one[m++] = parts[(size_t)s * nq + qi];
        sl_ref_fold_merge(one, m, &f[qi]);
    }
    for (size_t i = 0; parts && i < total; i++) sl_ref_fold_part_clear(&parts[i]);
    free(parts);
    free(one);
    free(got);
    if (st != SL_OK) {
        free(f);
        return st;
    }
    *folds = f;
    return SL_OK;
}

/* The two phases for described query vectors over the view v: every shard's candidates, the
 * merge, the re-ranking by the shards that hold the merged candidates; out receives every
 * shard's best `depth` products, unsorted (the caller merges). Shards that do not answer are
 * named in info. */
static sl_status sl__route(sl_node *n, const sl__view *v, const float *vecs, size_t nq, size_t dim,
                           void *const *locals, const size_t *local_lens, int64_t fv,
                           const char *product_id, const sl_query *q, size_t depth, sl_matches *out,
                           sl_server_search_info *info, sl_error *err) {
    sl__router *r = n->router;
    size_t nc = 0, vt = 0;
    sl_status st = sl_engine_plan(n->cluster, q, &nc, &vt, err);
    if (st != SL_OK) return st;
    int S = v->shards;
    sl__call *calls = sl__callocarray((size_t)S, sizeof *calls);
    sl_candidate ***lists = sl__callocarray((size_t)S, sizeof *lists); /* [shard][qi] */
    size_t **lcounts = sl__callocarray((size_t)S, sizeof *lcounts);
    long *prefer = sl__mallocarray((size_t)S, sizeof *prefer);
    if (!calls || !lists || !lcounts || !prefer) {
        st = sl__err_set(err, SL_E_NOMEM, "out of memory");
        goto out;
    }
    /* phase 1: every shard's best nc per query vector - the depth grown by the references'
     * share of the whole index (sl_engine_ref_depth), known from the last answers and checked
     * against these: asked again when they grew meanwhile */
    size_t asked = sl_engine_ref_depth(nc, atomic_load(&r->entries), atomic_load(&r->refs)), want = nc;
    for (int round = 0; round < 2 && st == SL_OK; round++) {
        int64_t entries = 0, refs = 0;
        for (int s = 0; s < S; s++) {
            free(calls[s].body);
            calls[s].body = sl__phase_candidates_json(s, S, fv, q, product_id, asked, vecs, nq, dim);
            calls[s].ok = 0;
            for (size_t qi = 0; lists[s] && qi < nq; qi++) free(lists[s][qi]);
            free(lists[s]);
            free(lcounts[s]);
            lists[s] = sl__callocarray(nq, sizeof *lists[s]);
            lcounts[s] = sl__callocarray(nq, sizeof *lcounts[s]);
            if (!calls[s].body || !lists[s] || !lcounts[s]) {
                st = sl__err_set(err, SL_E_NOMEM, "out of memory");
                goto out;
            }
        }
        sl__phase(r, v, "/v1/internal/candidates", calls, S, NULL);
        for (int s = 0; s < S; s++) {
            int64_t e1 = 0, r1 = 0;
            prefer[s] = calls[s].ok ? calls[s].replica : -1;
            if (!calls[s].ok || sl__phase_lists_parse(calls[s].resp, calls[s].len, nq, lists[s], lcounts[s], &e1, &r1, NULL) != SL_OK) {
                calls[s].ok = 0; /* a shard without an answer adds nothing */
                continue;
            }
            entries += e1;
            refs += r1;
        }
        atomic_store(&r->entries, entries);
        atomic_store(&r->refs, refs);
        want = sl_engine_ref_depth(nc, entries, refs);
        if (want <= asked) break;
        asked = want;
    }
    for (int s = 0; s < S; s++) {
        if (!calls[s].ok) sl__missing(info, s);
        free(calls[s].body);
        calls[s].body = NULL;
        calls[s].ok = 0;
    }
    /* the merge: the best `want` of all shards per query vector, the first vt flagged */
    sl_candidate ***per = NULL; /* [shard][qi] merged picks */
    size_t **pcount = NULL;
    st = sl__merge_candidates((size_t)S, nq, lists, lcounts, want, vt, &per, &pcount, err);
    /* with references among them, their fold is measured on the whole merged list: phase 2a
     * asks every shard holding merged candidates to re-rank them and for its part of the fold,
     * phase 2b folds the re-ranked candidates with it */
    int with_refs = 0;
    for (int s = 0; s < S && st == SL_OK; s++)
        for (size_t qi = 0; qi < nq; qi++)
            for (size_t k = 0; k < pcount[s][qi]; k++) with_refs |= per[s][qi][k].image_id >= SL_STORE_REF_ID_BASE;
    sl_ref_fold *folds = NULL;
    if (with_refs) st = sl__route_folds(r, v, S, fv, q, depth, locals, local_lens, nq, per, pcount, prefer, calls, &folds, info, err);
    /* phase 2: the shards holding merged candidates re-rank exactly those */
    for (int s = 0; s < S && st == SL_OK; s++) {
        size_t any = 0;
        for (size_t qi = 0; qi < nq; qi++) any += pcount[s][qi];
        if (!any) continue;
        calls[s].body = sl__phase_rerank_json(s, S, fv, q, depth, (void **)locals, (size_t *)local_lens, nq, per[s], pcount[s],
                                              0, folds);
        if (!calls[s].body) st = sl__err_set(err, SL_E_NOMEM, "out of memory");
    }
    if (st == SL_OK) sl__phase(r, v, "/v1/internal/rerank", calls, S, prefer);
    for (int s = 0; s < S && st == SL_OK; s++) {
        if (!calls[s].body) continue;
        if (!calls[s].ok || sl__phase_matches_parse(calls[s].resp, calls[s].len, out, NULL) != SL_OK) sl__missing(info, s);
    }
    free(folds);
    sl__merged_free(per, pcount, (size_t)S, nq);
out:
    for (int s = 0; lists && s < S; s++) {
        for (size_t qi = 0; lists[s] && qi < nq; qi++) free(lists[s][qi]);
        free(lists[s]);
        if (lcounts) free(lcounts[s]);
    }
    free(lists);
    free(lcounts);
    free(prefer);
    sl__calls_free(calls, S);
    return st;
}

sl_status sl__router_search(void *ctx, const void *image, size_t len, const char *product_id,
                            const sl_query *q, sl_matches *out, sl_server_search_info *info,
                            sl_error *err) {
    sl_node *n = ctx;
    memset(out, 0, sizeof *out);
    memset(info, 0, sizeof *info);
    sl_query q0;
    memset(&q0, 0, sizeof q0);
    if (!q) q = &q0;
    size_t nc = 0, vt = 0, nq = 0, dim = 0;
    sl_status st = sl_engine_plan(n->cluster, q, &nc, &vt, err); /* checks k and offset */
    if (st != SL_OK) return st;
    int k = q->k > 0 ? q->k : SL_ENGINE_K_DEFAULT;
    size_t depth = (size_t)q->offset + (size_t)k;
    float *vecs = NULL;
    void **locals = NULL;
    size_t *local_lens = NULL;
    int64_t fv = sl_engine_features_version(n->cluster);
    sl__view v;
    memset(&v, 0, sizeof v);
    sl_matches coh;
    memset(&coh, 0, sizeof coh);
    /* the query vectors: the photo's, or the product's images' (similar) */
    if (image) {
        void *local = NULL;
        size_t llen = 0;
        if ((st = sl_engine_describe_query_bytes(n->cluster, image, len, q, &vecs, &dim, &local, &llen, &fv, err)) != SL_OK)
            return st;
        locals = sl__callocarray(1, sizeof *locals);
        local_lens = sl__callocarray(1, sizeof *local_lens);
        if (!locals || !local_lens) {
            free(local);
            st = sl__err_set(err, SL_E_NOMEM, "out of memory");
            goto out;
        }
        locals[0] = local;
        local_lens[0] = llen;
        nq = vecs ? 1 : 0;
    } else {
        if ((st = sl_engine_product_query(n->cluster, product_id, &vecs, &nq, &dim, &locals, &local_lens, err)) != SL_OK)
            return st;
    }
    if ((st = sl__view_take(n, &v, err)) != SL_OK) goto out;
    info->shards = v.shards;
    if (v.shards <= 0) {
        st = sl__err_set(err, SL_E_BUSY, "no search node has joined the cluster yet");
        goto out;
    }
    if (nq == 0 || dim == 0) goto out; /* nothing described (untrained features, no images) */
    /* Each shard returns at least its K + 1 best products, so that the merged list holds the
     * whole catalog's K + 1 best: the cohort of a result's confidence (sl__finish on a single
     * store). A filtered query's cohort is the same query without its filters, as there. A
     * text boost changes the nodes' scores after their confidence: theirs are kept. */
    size_t ck = (size_t)sl_engine_confidence_cohort(n->cluster);
    int boosted = q->text && *q->text && q->text_mode == SL_TEXT_BOOST;
    int filtered = (q->category != NULL) | q->has_min_price | q->has_max_price |
                   (q->text && *q->text && q->text_mode == SL_TEXT_RESTRICT);
    st = sl__route(n, &v, vecs, nq, dim, locals, local_lens, fv, product_id, q,
                   depth > ck + 1 || boosted ? depth : ck + 1, out, info, err);
    if (st == SL_OK && !boosted && filtered) {
        sl_query qc;
        memset(&qc, 0, sizeof qc);
        qc.k = (int)ck + 1;
        qc.ef = q->ef; /* the same search, only without the filters */
        st = sl__route(n, &v, vecs, nq, dim, locals, local_lens, fv, product_id, &qc, ck + 1, &coh, info, err);
    }
    if (st == SL_OK && !boosted && (st = sl_engine_matches_confidence(n->cluster, out, filtered ? &coh : NULL)) != SL_OK)
        sl__err_set(err, st, "out of memory");
    if (st == SL_OK) sl_matches_merge_slice(out, q);
out:
    if (st != SL_OK) sl_matches_free(out);
    sl_matches_free(&coh);
    sl__view_free(&v);
    sl_engine_product_query_free(vecs, locals, local_lens, image ? 1 : nq);
    return st;
}
