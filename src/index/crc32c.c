/*
 * index/crc32c.c - CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the per-section
 * checksum of index files (docs/formats/index.md). Uses the SSE4.2 crc32 instruction when the CPU
 * has it (checked at run time), else a byte-wise table; both give identical values.
 * Convention: sl__crc32c(0, data, n) is the standard CRC-32C of the bytes (init and final xor
 * 0xFFFFFFFF inside), and sl__crc32c(c, more, m) continues a previous value c.
 */
#include "index/index_impl.h"

#include <stdlib.h>
#include <string.h>

static uint32_t sl__crc_table[256];
static pthread_once_t sl__crc_once = PTHREAD_ONCE_INIT;
static int sl__crc_hw;

static void sl__crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
        sl__crc_table[i] = c;
    }
#if defined(__x86_64__)
    __builtin_cpu_init();
    sl__crc_hw = __builtin_cpu_supports("sse4.2") && getenv("SL_INDEX_NO_HWCRC") == NULL;
#endif
}

#if defined(__x86_64__)
__attribute__((target("sse4.2")))
static uint32_t sl__crc_hw_run(uint32_t c, const unsigned char *p, size_t n) {
    uint64_t c64 = c;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c64 = __builtin_ia32_crc32di(c64, w);
        p += 8;
        n -= 8;
    }
    c = (uint32_t)c64;
    while (n--) c = __builtin_ia32_crc32qi(c, *p++);
    return c;
}
#endif

uint32_t sl__crc32c(uint32_t crc, const void *data, size_t n) {
    pthread_once(&sl__crc_once, sl__crc_init);
    const unsigned char *p = data;
    uint32_t c = ~crc;
#if defined(__x86_64__)
    if (sl__crc_hw) return ~sl__crc_hw_run(c, p, n);
#endif
    while (n--) c = sl__crc_table[(c ^ *p++) & 0xffu] ^ (c >> 8);
    return ~c;
}
