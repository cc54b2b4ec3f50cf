/*
 * learn/select.c - sl_head_train: how strongly the head may move away from the identity (its
 * L2 pull `lambda`, or no map at all) is chosen by internal validation on the caller's own data,
 * then the head is trained on all of it with that choice (docs/learn.md, "Choosing lambda").
 *
 * The validation mirrors what a head must do in a shop: a seeded quarter of the products with
 * photos is held out entirely (products the head never saw: it must not make them worse than no
 * head), and a seeded fifth of the other products' photos is held out (photos of products it
 * learned: it should find them more often). Candidates - centring only, then the residual map
 * with lambda 0.1, 0.03, 0.01, 0 - are trained on the rest and scored, like no head at all (the
 * identity), by the reciprocal rank of each held-out photo's product among all catalog images.
 * The rule: a candidate is admissible unless its summed reciprocal rank over the unseen products'
 * photos is below the identity's by more than SELECT_Z standard errors of the paired difference;
 * among the admissible candidates the one with the highest mean of the two groups' mean
 * reciprocal ranks wins (seen and unseen products weigh the same: a shop's queries come from both
 * and their mix is unknown; ties: the more regularised); the identity stays when no candidate
 * beats its mean. Without labelled photos (augmented catalog
 * images, same_domain) every held-out view is scored against the catalog without the image it was
 * made from (its nearest catalog image of its own product); a product with a single catalog image
 * cannot be scored that way, and with nothing to score the identity is kept: nothing gets worse
 * on the word of augmentations alone.
 *
 * Broad labels (categories: SL_HEAD_PROTOTYPE_MIN_IMAGES catalog images per label on average) also
 * try prototypes (docs/learn.md, "Prototypes") with the chosen map: weights 1, 2, 4, prototypes
 * from the candidate's training photos, the best held-out seen score wins if it beats none.
 *
 * Invariants: deterministic for (data, opts) whatever opts->threads is - the split comes from a
 * PRNG seeded with opts->seed, scores are integer hit counts from the thread-independent
 * products of mm.c, and ties are broken by a fixed order. The caller's data is never modified.
 */
#include "learn/learn_internal.h"
#include "util/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Candidates, most regularised first (ties go to the earlier one). Epochs 0 = centring only. */
static const float cand_lambda[] = {-1.0f /* centring only */, 0.1f, 0.03f, 0.01f, 0.0f};
#define N_CAND (sizeof cand_lambda / sizeof cand_lambda[0])
/* Prototype weights tried with each of them (0 = no prototypes first: ties keep none). Not with
 * same_domain data: augmented copies of the catalog would make prototypes of the catalog images
 * the held-out views are scored against. */
static const float cand_beta[] = {0.0f, 1.0f, 2.0f, 4.0f};
#define N_BETA (sizeof cand_beta / sizeof cand_beta[0])
/* Validation needs this many products with photos and catalog images; with fewer, the head is
 * trained with SL_HEAD_LAMBDA_FALLBACK. */
#define SELECT_MIN_CLASSES 8
/* Held-out photos scored per group at most (seeded sample): bounds the cost on big catalogs. */
#define SELECT_QUERIES_MAX 1000
/* Training photos of a candidate at most (seeded sample): bounds the cost of validation on big
 * sets such as 6 augmented views of every image of a large catalog. */
#define SELECT_TRAIN_MAX 4000
/* With AUTO, training runs at least this many Adam steps (epochs grow on small sets, up to
 * SELECT_EPOCHS_MAX): the default 10 epochs of 64 photos are ~400 steps on 2,640 photos, and a
 * set of 360 photos got 60 steps from them (clothing: mAP 0.586 with 10 epochs, 0.614 with 70). */
#define SELECT_MIN_STEPS 400
#define SELECT_EPOCHS_MAX 100
/* A candidate is inadmissible when it is worse than no head on the unseen products by more than
 * this many standard errors of the paired difference: significantly worse in a one-sided test
 * at 5%. (With one standard error, 15 held-out grocery products rejected every head although the
 * 21 products the protocol holds out gained 0.286 -> 0.345 hit@1 with lambda 0.1.) */
#define SELECT_Z 1.645
/* Queries per block of the score product. */
#define SCORE_BLOCK 128

typedef struct progress_wrap {
    sl_head_progress_fn fn;
    void *ctx;
    int offset, total;
} progress_wrap;

static void progress_cb(void *ctx, int epoch, int epochs, double loss) {
    progress_wrap *p = ctx;
    (void)epochs;
    p->fn(p->ctx, p->offset + epoch, p->total, loss);
}

/* One group of held-out photos: rows, classes and the catalog image each must not be matched
 * with (SIZE_MAX: none). */
typedef struct vgroup {
    float *q;
    uint32_t *cls;
    size_t *excl;
    size_t n;
} vgroup;

static void vgroup_free(vgroup *v) {
    free(v->q);
    free(v->cls);
    free(v->excl);
}

/* Score of a group (sl__vscore): summed reciprocal rank of the first catalog image of each
 * photo's product among all catalog images; n < 0 when out of memory. */
typedef sl__vscore vscore;

/* Scores the group's photos (mapped by h's query side; h NULL = identity) against gt, the mapped
 * catalog images transposed (dim x ng). */
static vscore score_of(const sl_head *h, const vgroup *v, const float *gt, const uint32_t *gcls, size_t ng,
                       size_t d, int threads, double *rr) {
    vscore sc = {0, 0.0};
    if (v->n == 0) return sc;
    size_t blk = v->n < SCORE_BLOCK ? v->n : SCORE_BLOCK;
    float *q = sl__mallocarray(blk * d, sizeof *q), *s = sl__mallocarray(blk * ng, sizeof *s);
    if (!q || !s) { sc.n = -1; goto out; }
    for (size_t i0 = 0; i0 < v->n; i0 += blk) {
        size_t m = v->n - i0 < blk ? v->n - i0 : blk;
        if (h) {
            if (sl__head_map(h, SL_HEAD_QUERY, v->q + i0 * d, q, m, threads) != 0) { sc.n = -1; goto out; }
        } else {
            memcpy(q, v->q + i0 * d, m * d * sizeof *q);
            sl__head_normalize(q, m, d, NULL);
        }
        if (sl__mm(0, 0, m, ng, d, 1.0f, q, d, gt, ng, 0.0f, s, ng, threads) != 0) { sc.n = -1; goto out; }
        for (size_t i = 0; i < m; i++) {
            const float *r = s + i * ng;
            size_t ex = v->excl[i0 + i];
            uint32_t c = v->cls[i0 + i];
            float pos = -INFINITY;
            for (size_t j = 0; j < ng; j++)
                if (j != ex && gcls[j] == c && r[j] > pos) pos = r[j];
            size_t rank = 0; /* other products' images scoring at least as high */
            for (size_t j = 0; j < ng; j++)
                if (j != ex && gcls[j] != c && r[j] >= pos) rank++;
            sc.n++;
            sc.rr += 1.0 / (double)(rank + 1);
            rr[i0 + i] = 1.0 / (double)(rank + 1);
        }
    }
out:
    free(q);
    free(s);
    return sc;
}

/* Catalog images mapped by h's gallery side (h NULL = normalized copies), transposed: dim x n. */
static float *gallery_t(const sl_head *h, const sl_head_data *dt, int threads) {
    size_t d = dt->dim, g = dt->n_gallery;
    float *m = sl__mallocarray(g * d, sizeof *m), *t = sl__mallocarray(g * d, sizeof *t);
    int bad = !m || !t;
    if (!bad) {
        if (h) bad = sl__head_map(h, SL_HEAD_GALLERY, dt->gallery, m, g, threads) != 0;
        else {
            memcpy(m, dt->gallery, g * d * sizeof *m);
            sl__head_normalize(m, g, d, NULL);
        }
    }
    if (!bad)
        for (size_t i = 0; i < g; i++)
            for (size_t j = 0; j < d; j++) t[j * g + i] = m[i * d + j];
    free(m);
    if (bad) { free(t); return NULL; }
    return t;
}

/* The catalog image of class c nearest to photo p (raw cosine), or SIZE_MAX when class c has
 * fewer than two catalog images (nothing would be left to find). */
static size_t source_of(const sl_head_data *dt, const float *p, uint32_t c) {
    size_t d = dt->dim, best = SIZE_MAX, count = 0;
    double bs = 0.0;
    for (size_t i = 0; i < dt->n_gallery; i++) {
        if (dt->gallery_class[i] != c) continue;
        count++;
        double s = 0.0;
        for (size_t j = 0; j < d; j++) s += (double)p[j] * dt->gallery[i * d + j];
        if (best == SIZE_MAX || s > bs) { best = i; bs = s; }
    }
    return count >= 2 ? best : SIZE_MAX;
}

/* Appends photo i to group v (capacity checked by the caller); same_domain photos whose class has
 * a single catalog image are skipped. */
static void vgroup_add(vgroup *v, const sl_head_data *dt, size_t i) {
    size_t d = dt->dim, ex = SIZE_MAX;
    const float *p = dt->photos + i * d;
    if (dt->same_domain) {
        ex = source_of(dt, p, dt->photo_class[i]);
        if (ex == SIZE_MAX) return;
    }
    memcpy(v->q + v->n * d, p, d * sizeof *v->q);
    v->cls[v->n] = dt->photo_class[i];
    v->excl[v->n++] = ex;
}

static int vgroup_alloc(vgroup *v, size_t cap, size_t d) {
    memset(v, 0, sizeof *v);
    v->q = sl__mallocarray(cap * d + 1, sizeof *v->q);
    v->cls = sl__mallocarray(cap + 1, sizeof *v->cls);
    v->excl = sl__mallocarray(cap + 1, sizeof *v->excl);
    return v->q && v->cls && v->excl;
}

/* Standard error of the sum of the paired differences a[i] - b[i] over n photos:
 * sqrt(n / (n - 1) * sum (diff - mean diff)^2); 0 for n < 2. */
static double paired_se(const double *a, const double *b, size_t n) {
    if (n < 2) return 0.0;
    double m = 0.0, ss = 0.0;
    for (size_t i = 0; i < n; i++) m += a[i] - b[i];
    m /= (double)n;
    for (size_t i = 0; i < n; i++) ss += (a[i] - b[i] - m) * (a[i] - b[i] - m);
    return sqrt(ss * (double)n / (double)(n - 1));
}

/* What a candidate is chosen by: the mean of the seen and unseen groups' mean reciprocal ranks
 * (a group without photos to score is left out). */
static double balanced(vscore s, vscore u) {
    int k = (s.n > 0) + (u.n > 0);
    double m = (s.n > 0 ? s.rr / (double)s.n : 0.0) + (u.n > 0 ? u.rr / (double)u.n : 0.0);
    return k ? m / k : 0.0;
}

int sl__head_pick(vscore s0, vscore u0, const sl__cand_score *c, size_t n) {
    int choice = -1;
    double best = balanced(s0, u0);
    for (size_t i = 0; i < n; i++) {
        if (!c[i].valid) continue;
        /* not significantly worse than no head on products it never saw (paired over the same
         * photos) */
        if (c[i].unseen.rr - u0.rr < -SELECT_Z * c[i].se) continue;
        /* the higher mean over seen and unseen products wins: the highest seen score alone chose
         * the least regularised map wherever its loss on unseen products was not significant
         * (grocery, recommended fusion, 60 products trained: lambda 0, unseen mean reciprocal
         * rank 0.599 against the identity's 0.613, and the 21 products left out fell from 0.369
         * to 0.333 hit@1) */
        double obj = balanced(c[i].seen, c[i].unseen);
        if (obj > best) { choice = (int)i; best = obj; }
    }
    return choice;
}

static int cmp_size(const void *a, const void *b) {
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

/* opts->epochs, or more so that n photos in batches of opts->batch make SELECT_MIN_STEPS steps. */
static int auto_epochs(const sl_head_train_opts *o, size_t n) {
    size_t b = (size_t)o->batch < n ? (size_t)o->batch : n;
    size_t per = b ? (n + b - 1) / b : 1, need = (SELECT_MIN_STEPS + per - 1) / per;
    if (need > SELECT_EPOCHS_MAX) need = SELECT_EPOCHS_MAX;
    return (int)need > o->epochs ? (int)need : o->epochs;
}

/* Runs the validation; *choice = index into cand_lambda, or -1 for the identity; *beta = the
 * prototype weight chosen with it (0: none). */
static sl_status choose(const sl_head_data *dt, const sl_head_train_opts *o, progress_wrap *pw,
                        int *choice, float *beta, sl_error *err) {
    size_t d = dt->dim, n = dt->n_photos, g = dt->n_gallery, P = dt->n_classes;
    sl_status st = SL_OK;
    unsigned char *has_img = sl__callocarray(P, 1), *has_photo = sl__callocarray(P, 1), *held = sl__callocarray(P, 1);
    size_t *cls = sl__mallocarray(P, sizeof *cls), *seen_i = sl__mallocarray(n, sizeof *seen_i),
           *unseen_i = sl__mallocarray(n, sizeof *unseen_i), *train_i = sl__mallocarray(n, sizeof *train_i);
    float *tp = NULL, *gt = NULL;
    uint32_t *tc = NULL;
    double *rs = NULL, *ru0 = NULL, *ru = NULL;
    vgroup vs, vu;
    memset(&vs, 0, sizeof vs);
    memset(&vu, 0, sizeof vu);
    *choice = -1;
    *beta = 0.0f;
    if (!has_img || !has_photo || !held || !cls || !seen_i || !unseen_i || !train_i) goto nomem;
    for (size_t i = 0; i < g; i++) has_img[dt->gallery_class[i]] = 1;
    for (size_t i = 0; i < n; i++) has_photo[dt->photo_class[i]] = 1;
    size_t S = 0;
    for (size_t c = 0; c < P; c++)
        if (has_img[c] && has_photo[c]) cls[S++] = c;
    sl__rng rng;
    sl__rng_seed(&rng, o->seed ^ 0x5e1ec7ULL);
    sl__rng_shuffle(&rng, cls, S);
    size_t U = S / 4;
    for (size_t k = 0; k < U; k++) held[cls[k]] = 1;
    size_t ns = 0, nu = 0, nt = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = dt->photo_class[i];
        double u = sl__rng_uniform(&rng); /* drawn for every photo: the split does not shift */
        if (held[c]) unseen_i[nu++] = i;
        else if (has_img[c] && u < 0.2) seen_i[ns++] = i;
        else train_i[nt++] = i;
    }
    sl__rng_shuffle(&rng, seen_i, ns);
    sl__rng_shuffle(&rng, unseen_i, nu);
    if (ns > SELECT_QUERIES_MAX) ns = SELECT_QUERIES_MAX;
    if (nu > SELECT_QUERIES_MAX) nu = SELECT_QUERIES_MAX;
    if (!vgroup_alloc(&vs, ns, d) || !vgroup_alloc(&vu, nu, d)) goto nomem;
    for (size_t k = 0; k < ns; k++) vgroup_add(&vs, dt, seen_i[k]);
    for (size_t k = 0; k < nu; k++) vgroup_add(&vu, dt, unseen_i[k]);
    if (vs.n == 0 && vu.n == 0) goto out; /* nothing to judge a head by: the identity */
    if (nt > SELECT_TRAIN_MAX) { /* a seeded sample, kept in the original order */
        sl__rng_shuffle(&rng, train_i, nt);
        nt = SELECT_TRAIN_MAX;
        qsort(train_i, nt, sizeof *train_i, cmp_size);
    }
    /* training part: the photos not held out, in their original order */
    tp = sl__mallocarray(nt * d + 1, sizeof *tp);
    tc = sl__mallocarray(nt + 1, sizeof *tc);
    if (!tp || !tc) goto nomem;
    for (size_t k = 0; k < nt; k++) {
        memcpy(tp + k * d, dt->photos + train_i[k] * d, d * sizeof *tp);
        tc[k] = dt->photo_class[train_i[k]];
    }
    int ep_val = auto_epochs(o, nt);
    pw->total = (int)(N_CAND - 1) * ep_val + auto_epochs(o, n);
    sl_head_data td = *dt;
    td.photos = tp;
    td.photo_class = tc;
    td.n_photos = nt;
    if ((gt = gallery_t(NULL, dt, o->threads)) == NULL) goto nomem;
    rs = sl__mallocarray(vs.n + 1, sizeof *rs);
    ru0 = sl__mallocarray(vu.n + 1, sizeof *ru0);
    ru = sl__mallocarray(vu.n + 1, sizeof *ru);
    if (!rs || !ru0 || !ru) goto nomem;
    vscore s0 = score_of(NULL, &vs, gt, dt->gallery_class, g, d, o->threads, rs);
    vscore u0 = score_of(NULL, &vu, gt, dt->gallery_class, g, d, o->threads, ru0);
    free(gt);
    gt = NULL;
    if (s0.n < 0 || u0.n < 0) goto nomem;
    sl__cand_score cs[N_CAND * N_BETA];
    memset(cs, 0, sizeof cs);
    /* prototypes only for broad labels (categories): the mean number of catalog images of the
     * labels that have photos */
    size_t imgs = 0;
    for (size_t i = 0; i < g; i++) imgs += has_photo[dt->gallery_class[i]];
    size_t nb = !dt->same_domain && S && imgs >= (size_t)SL_HEAD_PROTOTYPE_MIN_IMAGES * S ? N_BETA : 1;
    for (size_t c = 0; c < N_CAND; c++) {
        sl_head_train_opts co = *o;
        if (cand_lambda[c] < 0.0f) co.epochs = 0;
        else { co.lambda = cand_lambda[c]; co.epochs = ep_val; }
        co.progress = pw->fn ? progress_cb : NULL;
        co.progress_ctx = pw;
        sl_head *h = NULL;
        st = sl__head_train_fixed(&td, &co, &h, err);
        pw->offset += co.epochs;
        if (st == SL_E_INVALID) { st = SL_OK; continue; } /* e.g. fewer than 2 products left */
        if (st != SL_OK) goto out;
        for (size_t b = 0; b < nb; b++) {
            if (b > 0) { /* prototypes of the training part's photos only */
                if ((st = sl__head_set_prototypes(h, &td, cand_beta[b], o->threads, err)) != SL_OK) {
                    sl_head_free(h);
                    goto out;
                }
                if (!sl_head_prototypes(h)) break; /* too many products for prototypes */
            }
            if ((gt = gallery_t(h, dt, o->threads)) == NULL) { sl_head_free(h); goto nomem; }
            vscore sc = score_of(h, &vs, gt, dt->gallery_class, g, d, o->threads, rs);
            vscore uc = score_of(h, &vu, gt, dt->gallery_class, g, d, o->threads, ru);
            free(gt);
            gt = NULL;
            if (sc.n < 0 || uc.n < 0) { sl_head_free(h); goto nomem; }
            sl__cand_score *cb = &cs[c * N_BETA + b];
            cb->seen = sc;
            cb->unseen = uc;
            cb->se = paired_se(ru, ru0, vu.n);
            cb->valid = 1;
        }
        sl_head_free(h);
    }
    /* lambda by the rule, without prototypes */
    sl__cand_score c0[N_CAND];
    for (size_t c = 0; c < N_CAND; c++) c0[c] = cs[c * N_BETA];
    *choice = sl__head_pick(s0, u0, c0, N_CAND);
    /* broad labels: later catalog images belong to labels the head knows, so the prototypes'
     * weight is chosen by the held-out photos of trained labels alone (ties: fewer) */
    if (*choice >= 0) {
        const sl__cand_score *row = &cs[(size_t)*choice * N_BETA];
        double best = row[0].seen.rr;
        for (size_t b = 1; b < nb; b++)
            if (row[b].valid && row[b].seen.rr > best) { best = row[b].seen.rr; *beta = cand_beta[b]; }
    }
    goto out;
nomem:
    st = sl__err_set(err, SL_E_NOMEM, "out of memory");
out:
    vgroup_free(&vs);
    vgroup_free(&vu);
    free(has_img); free(has_photo); free(held); free(cls); free(seen_i); free(unseen_i); free(train_i);
    free(tp); free(tc); free(gt); free(rs); free(ru0); free(ru);
    return st;
}

sl_status sl_head_train(const sl_head_data *dt, const sl_head_train_opts *opts, sl_head **out,
                        sl_error *err) {
    if (!out) return sl__err_set(err, SL_E_INVALID, "head training: NULL out");
    *out = NULL;
    sl_head_train_opts o;
    if (opts) o = *opts;
    else sl_head_train_opts_init(&o);
    sl_status st = sl__head_check(dt, &o, err);
    if (st != SL_OK) return st;
    if (o.lambda != SL_HEAD_LAMBDA_AUTO || o.epochs == 0) return sl__head_train_fixed(dt, &o, out, err);
    /* enough products for a held-out quarter? */
    size_t S = 0;
    {
        unsigned char *has_img = sl__callocarray(dt->n_classes, 1), *has_photo = sl__callocarray(dt->n_classes, 1);
        if (!has_img || !has_photo) { free(has_img); free(has_photo); return sl__err_set(err, SL_E_NOMEM, "out of memory"); }
        for (size_t i = 0; i < dt->n_gallery; i++) has_img[dt->gallery_class[i]] = 1;
        for (size_t i = 0; i < dt->n_photos; i++) has_photo[dt->photo_class[i]] = 1;
        for (size_t c = 0; c < dt->n_classes; c++) S += has_img[c] && has_photo[c];
        free(has_img);
        free(has_photo);
    }
    if (S < SELECT_MIN_CLASSES) {
        o.lambda = SL_HEAD_LAMBDA_FALLBACK;
        return sl__head_train_fixed(dt, &o, out, err);
    }
    progress_wrap pw = {o.progress, o.progress_ctx, 0, (int)(N_CAND) * o.epochs};
    int choice = -1;
    float beta = 0.0f;
    if ((st = choose(dt, &o, &pw, &choice, &beta, err)) != SL_OK) return st;
    if (choice < 0) { /* the identity: no head is better on held-out data */
        sl_head *h = sl__head_alloc(dt->dim, 0);
        if (!h) return sl__err_set(err, SL_E_NOMEM, "out of memory");
        h->choice = SL_HEAD_CHOICE_IDENTITY;
        if (o.progress) o.progress(o.progress_ctx, pw.total, pw.total, 0.0);
        *out = h;
        return SL_OK;
    }
    if (cand_lambda[choice] < 0.0f) o.epochs = 0;
    else { o.lambda = cand_lambda[choice]; o.epochs = auto_epochs(&o, dt->n_photos); }
    o.progress = pw.fn ? progress_cb : NULL;
    o.progress_ctx = &pw;
    if ((st = sl__head_train_fixed(dt, &o, out, err)) != SL_OK) return st;
    if ((st = sl__head_set_prototypes(*out, dt, beta, o.threads, err)) != SL_OK) {
        sl_head_free(*out);
        *out = NULL;
        return st;
    }
    if (o.epochs == 0 && pw.fn) pw.fn(pw.ctx, pw.total, pw.total, 0.0);
    return SL_OK;
}

sl_status sl_head_train_as(const sl_head *like, const sl_head_data *dt, const sl_head_train_opts *opts,
                           sl_head **out, sl_error *err) {
    if (!out) return sl__err_set(err, SL_E_INVALID, "head training: NULL out");
    *out = NULL;
    sl_head_train_opts o;
    if (opts) o = *opts;
    else sl_head_train_opts_init(&o);
    /* a fixed setting: sl_head_train trains exactly that, without validation */
    if (o.lambda != SL_HEAD_LAMBDA_AUTO || o.epochs == 0) return sl_head_train(dt, &o, out, err);
    float c = sl_head_choice(like);
    if (!(c >= 0.0f) && c != SL_HEAD_CHOICE_IDENTITY && c != SL_HEAD_CHOICE_CENTRING)
        return sl__err_set(err, SL_E_INVALID, "head training: the reference head's setting is unknown");
    sl_status st = sl__head_check(dt, &o, err);
    if (st != SL_OK) return st;
    if (c == SL_HEAD_CHOICE_IDENTITY) {
        sl_head *h = sl__head_alloc(dt->dim, 0);
        if (!h) return sl__err_set(err, SL_E_NOMEM, "out of memory");
        h->choice = SL_HEAD_CHOICE_IDENTITY;
        *out = h;
        return SL_OK;
    }
    /* as sl_head_train trains its final head with that choice */
    if (c == SL_HEAD_CHOICE_CENTRING) o.epochs = 0;
    else { o.lambda = c; o.epochs = auto_epochs(&o, dt->n_photos); }
    if ((st = sl__head_train_fixed(dt, &o, out, err)) != SL_OK) return st;
    /* with prototypes of these photos when `like` has them */
    if ((st = sl__head_set_prototypes(*out, dt, sl_head_prototype_weight(like), o.threads, err)) != SL_OK) {
        sl_head_free(*out);
        *out = NULL;
    }
    return st;
}
