/*
 * server/routes.c - the route table: method + path pattern -> handler, and matching.
 *
 * Patterns are fixed segment lists where "*" matches exactly one (already decoded, validated)
 * segment; the table is small, so matching is a linear scan. A path that exists for other
 * methods gives 405 with an Allow list, anything else 404. HEAD is served as GET.
 * Docs: every route here is specified in docs/openapi.yaml (tests/e2e_server.sh checks both).
 */
#include "server/srv.h"

#include <string.h>

static const char *const sl__p_search[] = { "k", "offset", "category", "min_price", "max_price", "q", "ef", NULL };
static const char *const sl__p_search_image[] = { "k", "offset", "category", "min_price", "max_price", "q", "region", "ef", NULL };
static const char *const sl__p_list[] = { "limit", "cursor", "category", "min_price", "max_price", "q", NULL };
static const char *const sl__p_k[] = { "k", NULL };
static const char *const sl__p_check[] = { "threshold", NULL };
static const char *const sl__p_image[] = { "size", NULL };
static const char *const sl__p_none[] = { NULL };

const sl__route sl__routes[] = {
    { "page",           "GET",    { NULL },                                  0, 0, SL__BODY_NONE,  sl__p_none,   sl__h_page },
    { "favicon",        "GET",    { "favicon.ico", NULL },                   0, 0, SL__BODY_NONE,  sl__p_none,   sl__h_favicon },
    { "healthz",        "GET",    { "healthz", NULL },                       0, 0, SL__BODY_NONE,  sl__p_none,   sl__h_healthz },
    { "metrics",        "GET",    { "metrics", NULL },                       0, 0, SL__BODY_NONE,  sl__p_none,   sl__h_metrics },
    { "search",         "POST",   { "v1", "search", NULL },                  0, 1, SL__BODY_IMAGE, sl__p_search_image, sl__h_search },
    { "categories",     "GET",    { "v1", "categories", NULL },              0, 1, SL__BODY_NONE,  sl__p_none,   sl__h_categories },
    { "products_list",  "GET",    { "v1", "products", NULL },                0, 1, SL__BODY_NONE,  sl__p_list,   sl__h_products_list },
    { "product_get",    "GET",    { "v1", "products", "*", NULL },           0, 1, SL__BODY_NONE,  sl__p_none,   sl__h_product_get },
    { "product_put",    "PUT",    { "v1", "products", "*", NULL },           1, 1, SL__BODY_FORM,  sl__p_none,   sl__h_product_put },
    { "product_patch",  "PATCH",  { "v1", "products", "*", NULL },           1, 1, SL__BODY_PATCH, sl__p_none,   sl__h_product_patch },
    { "product_delete", "DELETE", { "v1", "products", "*", NULL },           1, 1, SL__BODY_NONE,  sl__p_none,   sl__h_product_delete },
    { "similar",        "GET",    { "v1", "products", "*", "similar", NULL },0, 1, SL__BODY_NONE,  sl__p_search, sl__h_similar },
    { "check",          "POST",   { "v1", "products", "*", "check", NULL },  0, 1, SL__BODY_IMAGE, sl__p_check,  sl__h_check },
    { "classify",       "POST",   { "v1", "classify", NULL },                0, 1, SL__BODY_IMAGE, sl__p_k,      sl__h_classify },
    { "image",          "GET",    { "v1", "images", "*", NULL },             0, 1, SL__BODY_NONE,  sl__p_image,  sl__h_image },
    /* a cluster's search phases (docs/cluster.md): 404 on a server that is not a search node */
    { "shard_candidates", "POST", { "v1", "internal", "candidates", NULL },  0, 1, SL__BODY_PATCH, sl__p_none,   sl__h_shard },
    { "shard_rerank",   "POST",   { "v1", "internal", "rerank", NULL },      0, 1, SL__BODY_PATCH, sl__p_none,   sl__h_shard },
};
const size_t sl__nroutes = sizeof sl__routes / sizeof sl__routes[0];

_Static_assert(sizeof sl__routes / sizeof sl__routes[0] < SL__M_ROUTES, "metrics need a slot per route + none");

static int sl__path_matches(const sl__route *r, const sl__target *t) {
    size_t n = 0;
    while (n < SL__TARGET_MAX_SEGS && r->path[n]) n++;
    if (n != t->nseg) return 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(r->path[i], "*") != 0 && strcmp(r->path[i], t->seg[i]) != 0) return 0;
    return 1;
}

const sl__route *sl__route_match(const char *method, const sl__target *t, int *path_known,
                                 char *allow, size_t allow_cap) {
    const char *m = strcmp(method, "HEAD") == 0 ? "GET" : method;
    *path_known = 0;
    if (allow_cap) allow[0] = '\0';
    for (size_t i = 0; i < sl__nroutes; i++) {
        const sl__route *r = &sl__routes[i];
        if (!sl__path_matches(r, t)) continue;
        if (strcmp(r->method, m) == 0) return r;
        *path_known = 1;
        size_t used = strlen(allow);
        if (used + strlen(r->method) + 3 < allow_cap) {
            if (used) strcat(allow, ", ");
            strcat(allow, r->method);
        }
    }
    return NULL;
}

int sl__route_index(const sl__route *r) {
    if (!r) return SL__M_ROUTES - 1;
    return (int)(r - sl__routes);
}
