/* tests/fuzz/feed_fuzz.h - shared body of the feed-reader fuzz targets (fuzz_csv, fuzz_jsonl):
 * every record of arbitrary bytes is either returned or reported, never a crash, a leak or a
 * read past the input; each returned price goes through the price parser the ingest uses. */
#ifndef SL_FEED_FUZZ_H
#define SL_FEED_FUZZ_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "shoplens/store.h"
#include "catalog/price.h"

static int sl__fuzz_feed(const uint8_t *data, size_t size, int is_jsonl) {
    sl_catalog_reader *r = NULL;
    sl_error e;
    if (sl_catalog_open_buffer(data, size, is_jsonl, &r, &e) != SL_OK) return 0;
    sl_catalog_row row;
    size_t sum = 0;
    for (int i = 0; i < 100000; i++) {
        sl_status st = sl_catalog_next(r, &row, &e);
        if (st == SL_E_NOT_FOUND) break;
        if (st == SL_OK) {
            /* touch every field so ASan checks they are valid strings */
            const char *f[] = {row.product_id, row.image, row.title, row.category,
                               row.price_text, row.description, row.url, row.attrs_json,
                               row.currency, row.more_images};
            for (size_t k = 0; k < sizeof f / sizeof f[0]; k++)
                if (f[k]) sum += strlen(f[k]);
            double price;
            char cur[4];
            const char *why;
            sum += (size_t)(sl__price_parse(row.price_text, &price, cur, &why) + 1);
        }
    }
    (void)sum;
    sl_catalog_close(r);
    return 0;
}
#endif
