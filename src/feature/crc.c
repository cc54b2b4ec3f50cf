/*
 * feature/crc.c - CRC-32 (IEEE 802.3 polynomial, reflected, as in zlib/PNG) guarding every
 * section of the features file and the serialized local features against silent damage.
 * Invariant: the table is computed exactly once (pthread_once), then only read.
 */
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include "feature/features_internal.h"

static uint32_t table[256];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void table_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        table[i] = c;
    }
}

uint32_t sl__feature_crc32(const void *data, size_t len) {
    pthread_once(&table_once, table_init);
    const uint8_t *p = data;
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

