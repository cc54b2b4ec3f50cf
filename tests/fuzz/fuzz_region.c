/*
 * tests/fuzz/fuzz_region.c - fuzz target for the search-region parser (sl_engine_parse_region,
 * the `region=x,y,w,h` parameter of POST /v1/search and `shoplens search --region`).
 *
 * Checks its promises: an accepted region has coordinates in 0..SL_ENGINE_REGION_COORD_MAX and
 * sizes in 1..SL_ENGINE_REGION_COORD_MAX and prints back to exactly the input; a refusal
 * leaves the query unchanged and says why.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shoplens/engine.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char text[64];
    if (size >= sizeof text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    sl_query q;
    memset(&q, 0, sizeof q);
    q.region_x = -7;
    sl_error err;
    if (sl_engine_parse_region(text, &q, &err) != SL_OK) {
        if (q.region_x != -7 || !err.message[0]) abort();
        return 0;
    }
    if (q.region_x < 0 || q.region_y < 0 || q.region_w < 1 || q.region_h < 1 ||
        q.region_x > SL_ENGINE_REGION_COORD_MAX || q.region_y > SL_ENGINE_REGION_COORD_MAX ||
        q.region_w > SL_ENGINE_REGION_COORD_MAX || q.region_h > SL_ENGINE_REGION_COORD_MAX)
        abort();
    /* leading zeros aside, the text is the four numbers */
    char back[64];
    snprintf(back, sizeof back, "%d,%d,%d,%d", q.region_x, q.region_y, q.region_w, q.region_h);
    if (strchr(text, ' ') || strchr(text, '+') || strchr(text, '-')) abort();
    if (strlen(back) > strlen(text)) abort();
    return 0;
}
