// bench/index/peer_common.h - shared I/O and timing for the peer benchmark programs
// (hnswlib_bench.cpp, faiss_bench.cpp). Data files: int32 n, int32 d, then n*d float32
// (".fbin"); ground truth: int32 nq, int32 k, then nq*k int32 row numbers (".ibin").
// Every program prints one JSON object on stdout with the same keys as bench_index.
#pragma once
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

struct Mat { int n = 0, d = 0; std::vector<float> v; };
struct Gt { int nq = 0, k = 0; std::vector<int> v; };

static inline Mat read_fbin(const char *p) {
    Mat m; FILE *f = std::fopen(p, "rb");
    if (!f || std::fread(&m.n, 4, 1, f) != 1 || std::fread(&m.d, 4, 1, f) != 1) { std::fprintf(stderr, "read %s\n", p); std::exit(1); }
    m.v.resize((size_t)m.n * m.d);
    if (std::fread(m.v.data(), 4, m.v.size(), f) != m.v.size()) { std::fprintf(stderr, "read %s\n", p); std::exit(1); }
    std::fclose(f); return m;
}
static inline Gt read_ibin(const char *p) {
    Gt g; FILE *f = std::fopen(p, "rb");
    if (!f || std::fread(&g.nq, 4, 1, f) != 1 || std::fread(&g.k, 4, 1, f) != 1) { std::fprintf(stderr, "read %s\n", p); std::exit(1); }
    g.v.resize((size_t)g.nq * g.k);
    if (std::fread(g.v.data(), 4, g.v.size(), f) != g.v.size()) { std::fprintf(stderr, "read %s\n", p); std::exit(1); }
    std::fclose(f); return g;
}
static inline double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
#include <time.h>
// CPU seconds of the calling thread / of the process: the machine is shared (load far above the
// core count), so throughput is measured in CPU time, not wall time, for every system alike.
static inline double thread_cpu_s() { timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static inline double proc_cpu_s() { timespec t; clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static inline long rss_kb() {
    FILE *f = std::fopen("/proc/self/status", "r"); char line[256]; long kb = 0;
    while (f && std::fgets(line, sizeof line, f)) if (!std::strncmp(line, "VmRSS:", 6)) kb = std::atol(line + 6);
    if (f) std::fclose(f); return kb;
}
// recall@10 of one result row against the ground truth row (first 10 of gt)
static inline double recall_row(const long *got, int ngot, const int *gt, int k) {
    int hit = 0;
    for (int i = 0; i < k; i++) for (int j = 0; j < ngot; j++) if (got[j] == gt[i]) { hit++; break; }
    return (double)hit / k;
}
static inline std::vector<int> parse_list(const char *s) {
    std::vector<int> v; while (*s) { v.push_back(std::atoi(s)); while (*s && *s != ',') s++; if (*s) s++; } return v;
}
