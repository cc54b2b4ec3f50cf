/*
 * server/api.c - the /v1 handlers over the engine (placeholder until the engine lands: every
 * handler answers 503).
 */
#include "server/srv.h"

#define SL__API_PENDING(fn)                                                          \
    void fn(sl__req *req, sl__resp *resp) {                                          \
        (void)req;                                                                   \
        sl__resp_error(resp, 503, "unavailable", "no catalog store is open");       \
        resp->retry_after = 5;                                                       \
    }
SL__API_PENDING(sl__h_search)
SL__API_PENDING(sl__h_categories)
SL__API_PENDING(sl__h_product_get)
SL__API_PENDING(sl__h_product_put)
SL__API_PENDING(sl__h_product_delete)
SL__API_PENDING(sl__h_similar)
SL__API_PENDING(sl__h_check)
SL__API_PENDING(sl__h_classify)
SL__API_PENDING(sl__h_image)

void sl__api_gauges(sl_server *srv, sl__gauges *g) {
    (void)srv;
    g->products = g->images = g->index_bytes = -1;
}
