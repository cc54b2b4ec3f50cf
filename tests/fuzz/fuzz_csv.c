/* tests/fuzz/fuzz_csv.c - the CSV feed reader on arbitrary bytes (see feed_fuzz.h). */
#include "fuzz/feed_fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return sl__fuzz_feed(data, size, 0); }
