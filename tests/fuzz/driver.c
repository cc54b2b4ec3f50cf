/*
 * tests/fuzz/driver.c - runs a libFuzzer-style target without libFuzzer, for CTest.
 *
 * Usage: fuzz_<x> CORPUS_DIR [ITERATIONS]
 * Replays every file of CORPUS_DIR, then ITERATIONS (default $SL_FUZZ_ITERS or 3000)
 * deterministic mutations of them (bit flips, byte sets, truncation, duplication, splicing).
 * A crash or sanitizer report fails the test; `make fuzz` builds the same targets with libFuzzer
 * for open-ended, coverage-guided runs.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct { uint8_t *data; size_t size; } sl__blob;

static uint64_t sl__fz_state = 0x243f6a8885a308d3ULL;
static uint64_t sl__fz_next(void) {
    sl__fz_state ^= sl__fz_state << 13; sl__fz_state ^= sl__fz_state >> 7; sl__fz_state ^= sl__fz_state << 17;
    return sl__fz_state;
}

static int sl__fz_read(const char *path, sl__blob *b) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (n < 0) { fclose(f); return -1; }
    b->data = malloc((size_t)n + 1);
    b->size = (size_t)n;
    if (!b->data || fread(b->data, 1, b->size, f) != b->size) { fclose(f); free(b->data); return -1; }
    fclose(f);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s CORPUS_DIR [ITERATIONS]\n", argv[0]); return 2; }
    long iters = 3000;
    const char *env = getenv("SL_FUZZ_ITERS");
    if (env) iters = atol(env);
    if (argc > 2) iters = atol(argv[2]);
    sl__blob *corpus = NULL;
    size_t n = 0, cap = 0;
    DIR *d = opendir(argv[1]);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[1], e->d_name);
            sl__blob b;
            if (sl__fz_read(path, &b) != 0) continue;
            if (n == cap) { cap = cap ? cap * 2 : 16; corpus = realloc(corpus, cap * sizeof *corpus); if (!corpus) return 1; }
            corpus[n++] = b;
        }
        closedir(d);
    }
    /* Sort for a deterministic order whatever readdir returns. */
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && (corpus[j].size < corpus[j - 1].size ||
             (corpus[j].size == corpus[j - 1].size && memcmp(corpus[j].data, corpus[j - 1].data, corpus[j].size) < 0)); j--) {
            sl__blob t = corpus[j]; corpus[j] = corpus[j - 1]; corpus[j - 1] = t;
        }
    LLVMFuzzerTestOneInput((const uint8_t *)"", 0);
    for (size_t i = 0; i < n; i++) LLVMFuzzerTestOneInput(corpus[i].data, corpus[i].size);
    if (n == 0) { printf("fuzz: empty corpus, %ld random inputs\n", iters); }
    for (long it = 0; it < iters; it++) {
        size_t base = n ? (size_t)(sl__fz_next() % n) : 0;
        size_t size = n ? corpus[base].size : (size_t)(sl__fz_next() % 256);
        size_t cap2 = size * 2 + 64;
        uint8_t *buf = malloc(cap2);
        if (!buf) return 1;
        if (n) memcpy(buf, corpus[base].data, size);
        else for (size_t k = 0; k < size; k++) buf[k] = (uint8_t)sl__fz_next();
        int muts = 1 + (int)(sl__fz_next() % 8);
        for (int m = 0; m < muts; m++) {
            uint64_t r = sl__fz_next();
            switch (r % 6) {
            case 0: if (size) buf[sl__fz_next() % size] ^= (uint8_t)(1u << (r >> 8) % 8); break;
            case 1: if (size) buf[sl__fz_next() % size] = (uint8_t)(sl__fz_next()); break;
            case 2: if (size) size = (size_t)(sl__fz_next() % size); break;
            case 3: { /* set a byte to an interesting value */
                static const uint8_t v[] = { 0, 1, 0x7f, 0x80, 0xff, 0xfe };
                if (size) buf[sl__fz_next() % size] = v[(r >> 8) % sizeof v];
                break;
            }
            case 4: /* duplicate a chunk */
                if (size && size * 2 < cap2) { size_t off = sl__fz_next() % size, len = 1 + sl__fz_next() % (size - off);
                    if (size + len <= cap2) { memmove(buf + off + len, buf + off, size - off); size += len; } }
                break;
            case 5: /* splice from another corpus entry */
                if (n > 1 && size) { const sl__blob *o = &corpus[sl__fz_next() % n];
                    if (o->size) { size_t off = sl__fz_next() % size, len = sl__fz_next() % o->size;
                        if (off + len > cap2) len = cap2 - off;
                        memcpy(buf + off, o->data, len); if (off + len > size) size = off + len; } }
                break;
            }
        }
        LLVMFuzzerTestOneInput(buf, size);
        free(buf);
    }
    printf("fuzz: %zu corpus files, %ld mutations, no crash\n", n, iters);
    for (size_t i = 0; i < n; i++) free(corpus[i].data);
    free(corpus);
    return 0;
}
