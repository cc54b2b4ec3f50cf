/*
 * server/shard.c - the internal routes of a cluster's search node: POST /v1/internal/candidates
 * and /v1/internal/rerank, the two phases of a distributed search (docs/cluster.md). The body
 * (JSON) goes to the router hook of the server options, which answers JSON; a server without a
 * hook is not a search node (404). The phases only read, like /v1/search.
 */
#include "server/srv.h"

#include <stdlib.h>
#include <string.h>

void sl__h_shard(sl__req *req, sl__resp *resp) {
    const sl_server_router *r = req->srv->o.router;
    if (!r || !r->shard) {
        sl__resp_error(resp, 404, "not_found", "this server is not a search node of a cluster");
        return;
    }
    if (!req->raw_image || !req->raw || req->raw_len == 0) {
        sl__resp_error(resp, 400, "bad_request", "send the phase request as application/json");
        return;
    }
    char *json = NULL;
    sl_error e;
    sl_error_clear(&e);
    if (r->shard(r->ctx, req->target.seg[2], req->raw, req->raw_len, &json, &e) != SL_OK) {
        sl__api_fail(req, resp, &e);
        return;
    }
    sl__resp_free(resp);
    resp->status = 200;
    resp->ctype = "application/json";
    resp->body = json;
    resp->len = strlen(json);
    resp->body_static = 0;
}
