/*
 * tests/fuzz/fuzz_price.c - fuzz target for the feed price parser (sl__price_parse: "12.99",
 * "12.99 USD", "USD 12.99").
 *
 * Checks its promises: an accepted price is finite, >= 0 and <= the limit, its currency is ""
 * or three upper-case ASCII letters that occur (in any case) in the input, and the input held
 * at least one digit; a refusal says why; an empty verdict only for blank text.
 */
#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "catalog/price.h"
#include "shoplens/store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char text[128];
    if (size >= sizeof text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    double v = -1;
    char cur[4] = "zz";
    const char *why = NULL;
    int r = sl__price_parse(text, &v, cur, &why);
    if (r == 1) {
        if (!isfinite(v) || v < 0 || v > SL_PRODUCT_PRICE_MAX || !strpbrk(text, "0123456789")) abort();
        if (cur[0]) {
            if (strlen(cur) != 3 || !strcasestr(text, cur)) abort();
            for (int i = 0; i < 3; i++)
                if (!isupper((unsigned char)cur[i])) abort();
        }
    } else if (r == 0) {
        for (const char *c = text; *c; c++)
            if (*c != ' ' && *c != '\t') abort();
    } else if (r != -1 || !why || !why[0]) {
        abort();
    }
    return 0;
}
