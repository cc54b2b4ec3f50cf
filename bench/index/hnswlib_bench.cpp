// bench/index/hnswlib_bench.cpp - the hnswlib peer (Debian libhnswlib-dev, header-only), built by
// run.sh with -O3 -march=native. Usage: hnswlib_bench base.fbin query.fbin gt.ibin M efc threads efs
// Inner product on L2-normalized vectors (= cosine), as the product uses.
#include <hnswlib/hnswlib.h>
#include <thread>
#include "peer_common.h"

int main(int argc, char **argv) {
    if (argc < 8) { std::fprintf(stderr, "usage: %s base query gt M efc threads efs[,..] [flat]\n", argv[0]); return 2; }
    Mat b = read_fbin(argv[1]), q = read_fbin(argv[2]); Gt g = read_ibin(argv[3]);
    int M = std::atoi(argv[4]), efc = std::atoi(argv[5]), T = std::atoi(argv[6]);
    std::vector<int> efs = parse_list(argv[7]);
    int flat = argc > 8 && std::atoi(argv[8]);
    const int k = 10;
    hnswlib::InnerProductSpace space(b.d);
    long r0 = rss_kb();
    double t0 = now_s(), c0 = proc_cpu_s();
    // HNSWLIB_CACHE=FILE (profiling): load the index from FILE if it exists, else build and save it
    const char *cache = std::getenv("HNSWLIB_CACHE");
    FILE *cf = cache ? std::fopen(cache, "rb") : nullptr;
    if (cf) std::fclose(cf);
    auto *h = cf ? new hnswlib::HierarchicalNSW<float>(&space, cache) : new hnswlib::HierarchicalNSW<float>(&space, b.n, M, efc, 100);
    if (cf) {
    } else if (T <= 1) {
        for (int i = 0; i < b.n; i++) h->addPoint(&b.v[(size_t)i * b.d], (size_t)i);
    } else {
        std::vector<std::thread> th;
        std::atomic<int> next(0);
        for (int t = 0; t < T; t++) th.emplace_back([&] {
            for (int i; (i = next++) < b.n;) h->addPoint(&b.v[(size_t)i * b.d], (size_t)i);
        });
        for (auto &x : th) x.join();
    }
    if (cache && !cf) h->saveIndex(cache);
    double build = now_s() - t0, build_cpu = proc_cpu_s() - c0;
    long mem = rss_kb() - r0;
    std::printf("{\"system\":\"hnswlib\",\"n\":%d,\"d\":%d,\"M\":%d,\"efc\":%d,\"threads\":%d,\"build_s\":%.3f,\"build_cpu_s\":%.3f,\"mem_mb\":%.1f,\"points\":[",
                b.n, b.d, M, efc, T, build, build_cpu, mem / 1024.0);
    std::vector<long> got(k);
    for (size_t e = 0; e < efs.size(); e++) {
        h->setEf(efs[e]);
        double rec = 0; double t1 = 0;
        int repeat = std::getenv("BENCH_INDEX_REPEAT") ? std::atoi(std::getenv("BENCH_INDEX_REPEAT")) : 1;
        for (int rep = 0; rep < (repeat > 0 ? repeat : 1); rep++) {
        rec = 0; t1 = thread_cpu_s();
        for (int i = 0; i < q.n; i++) {
            auto res = h->searchKnn(&q.v[(size_t)i * q.d], k);
            int n = 0;
            while (!res.empty()) { got[n++] = (long)res.top().second; res.pop(); }
            rec += recall_row(got.data(), n, &g.v[(size_t)i * g.k], k);
        }
        }
        double dt = thread_cpu_s() - t1;
        std::printf("%s{\"ef\":%d,\"recall\":%.4f,\"qps\":%.1f}", e ? "," : "", efs[e], rec / q.n, q.n / dt);
    }
    std::printf("]");
    if (flat) {
        hnswlib::BruteforceSearch<float> bf(&space, b.n);
        for (int i = 0; i < b.n; i++) bf.addPoint(&b.v[(size_t)i * b.d], (size_t)i);
        int nq = q.n < 200 ? q.n : 200;
        double t1 = thread_cpu_s(), rec = 0;
        for (int i = 0; i < nq; i++) {
            auto res = bf.searchKnn(&q.v[(size_t)i * q.d], k);
            int n = 0;
            while (!res.empty()) { got[n++] = (long)res.top().second; res.pop(); }
            rec += recall_row(got.data(), n, &g.v[(size_t)i * g.k], k);
        }
        std::printf(",\"flat_qps\":%.1f,\"flat_recall\":%.4f", nq / (thread_cpu_s() - t1), rec / nq);
    }
    std::printf("}\n");
    delete h;
    return 0;
}
