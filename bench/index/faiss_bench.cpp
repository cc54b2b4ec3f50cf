// bench/index/faiss_bench.cpp - the FAISS peer (Debian libfaiss-dev: IndexHNSWFlat, IndexFlatIP),
// built by run.sh with -O3 -march=native. Usage: faiss_bench base.fbin query.fbin gt.ibin M efc
// threads efs[,..] [flat]. Inner product on L2-normalized vectors (= cosine); the build uses
// `threads` OpenMP threads, searches are single queries on one thread.
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <omp.h>
#include "peer_common.h"

int main(int argc, char **argv) {
    if (argc < 8) { std::fprintf(stderr, "usage: %s base query gt M efc threads efs[,..] [flat]\n", argv[0]); return 2; }
    Mat b = read_fbin(argv[1]), q = read_fbin(argv[2]); Gt g = read_ibin(argv[3]);
    int M = std::atoi(argv[4]), efc = std::atoi(argv[5]), T = std::atoi(argv[6]);
    std::vector<int> efs = parse_list(argv[7]);
    int flat = argc > 8 && std::atoi(argv[8]);
    const int k = 10;
    omp_set_num_threads(T);
    long r0 = rss_kb();
    double t0 = now_s(), c0 = proc_cpu_s();
    faiss::IndexHNSWFlat index(b.d, M, faiss::METRIC_INNER_PRODUCT);
    index.hnsw.efConstruction = efc;
    index.add(b.n, b.v.data());
    double build = now_s() - t0, build_cpu = proc_cpu_s() - c0;
    long mem = rss_kb() - r0;
    omp_set_num_threads(1);
    std::printf("{\"system\":\"faiss\",\"n\":%d,\"d\":%d,\"M\":%d,\"efc\":%d,\"threads\":%d,\"build_s\":%.3f,\"build_cpu_s\":%.3f,\"mem_mb\":%.1f,\"points\":[",
                b.n, b.d, M, efc, T, build, build_cpu, mem / 1024.0);
    std::vector<float> D(k);
    std::vector<faiss::Index::idx_t> I(k);
    std::vector<long> got(k);
    for (size_t e = 0; e < efs.size(); e++) {
        index.hnsw.efSearch = efs[e];  /* FAISS 1.7.3 ignores SearchParametersHNSW here */
        double rec = 0, t1 = thread_cpu_s();
        for (int i = 0; i < q.n; i++) {
            index.search(1, &q.v[(size_t)i * q.d], k, D.data(), I.data());
            int n = 0;
            for (int j = 0; j < k; j++) if (I[j] >= 0) got[n++] = (long)I[j];
            rec += recall_row(got.data(), n, &g.v[(size_t)i * g.k], k);
        }
        double dt = thread_cpu_s() - t1;
        std::printf("%s{\"ef\":%d,\"recall\":%.4f,\"qps\":%.1f}", e ? "," : "", efs[e], rec / q.n, q.n / dt);
    }
    std::printf("]");
    if (flat) {
        faiss::IndexFlatIP fl(b.d);
        fl.add(b.n, b.v.data());
        int nq = q.n < 200 ? q.n : 200;
        double t1 = thread_cpu_s(), rec = 0;
        for (int i = 0; i < nq; i++) {
            fl.search(1, &q.v[(size_t)i * q.d], k, D.data(), I.data());
            int n = 0;
            for (int j = 0; j < k; j++) if (I[j] >= 0) got[n++] = (long)I[j];
            rec += recall_row(got.data(), n, &g.v[(size_t)i * g.k], k);
        }
        std::printf(",\"flat_qps\":%.1f,\"flat_recall\":%.4f", nq / (thread_cpu_s() - t1), rec / nq);
    }
    std::printf("}\n");
    return 0;
}
