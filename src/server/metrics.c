/*
 * server/metrics.c - request counters and latency histograms for /metrics.
 *
 * Lock-free: every cell is a relaxed atomic counter, so observing a request costs a few atomic
 * increments and never blocks a request thread. Buckets are stored non-cumulative and summed
 * when rendered (Prometheus text exposition format 0.0.4 wants cumulative `le` buckets).
 * Status codes outside the tracked list land in the last ("other") slot.
 */
#include "server/srv.h"

const double sl__m_bucket_le[SL__M_BUCKETS - 1] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0
};

const int sl__m_status_codes[SL__M_STATUSES - 1] = {
    200, 201, 204, 400, 401, 403, 404, 405, 408, 409, 413, 414, 415, 431, 500, 501, 503, 505, 0
};

void sl__metrics_observe(sl__metrics *m, int route, int status, double seconds, size_t bytes_in) {
    if (route < 0 || route >= SL__M_ROUTES) route = SL__M_ROUTES - 1;
    int s = SL__M_STATUSES - 1;
    for (int i = 0; i < SL__M_STATUSES - 1; i++)
        if (sl__m_status_codes[i] == status) { s = i; break; }
    int b = SL__M_BUCKETS - 1;
    for (int i = 0; i < SL__M_BUCKETS - 1; i++)
        if (seconds <= sl__m_bucket_le[i]) { b = i; break; }
    if (seconds < 0) seconds = 0;
    atomic_fetch_add_explicit(&m->count[route][s], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->bucket[route][b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->sum_us[route], (uint64_t)(seconds * 1e6 + 0.5), memory_order_relaxed);
    atomic_fetch_add_explicit(&m->bytes_in, (uint64_t)bytes_in, memory_order_relaxed);
}
