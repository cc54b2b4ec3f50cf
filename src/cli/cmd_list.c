/*
 * cli/cmd_list.c - `shoplens list`: the catalog as a table or JSON, by product id, with the
 * filters of search (category, price range, text) and cursor paging (--limit, --cursor).
 */
#include "cli/cli.h"
#include "cli/product_cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SL__LIST_PAGE 1000

static int sl__list_run(int argc, char **argv) {
    sl__popts o;
    int rc = sl__popts_parse(argc, argv, SL__OPT_FILTERS | SL__OPT_PAGE, &o);
    if (rc) return rc;
    if (o.npos) return sl__cli_usage_error(argv[0], "unexpected argument '%s'", o.pos[0]);
    char after[SL_STORE_ID_MAX + 1] = "";
    if (o.cursor && sl_store_cursor_decode(o.cursor, after) != 0)
        return sl__cli_usage_error(argv[0], "bad value '%s' for --cursor (use the next_cursor of a previous page)", o.cursor);
    sl_engine *e;
    if ((rc = sl__open_engine(argv[0], &o, 0, 1, &e))) return rc;
    sl_store *s = sl_engine_store(e);
    sl_store_filter f;
    sl__popts_filter(&o, &f);
    sl_error err;
    sl_error_clear(&err);
    int64_t total = 0;
    sl_status st = sl_store_count_products(s, &f, &total, &err);
    json_t *arr = o.json ? json_array() : NULL;
    size_t shown = 0;
    int more = 0, header = 0;
    char last[SL_STORE_ID_MAX + 1] = "";
    /* one page with --limit, else every page */
    while (st == SL_OK) {
        size_t want = o.limit ? o.limit - shown : SL__LIST_PAGE;
        if (want > SL__LIST_PAGE) want = SL__LIST_PAGE;
        sl_product *v = NULL;
        size_t n = 0;
        st = sl_store_list_products(s, &f, after, want, &v, &n, &more, &err);
        if (st != SL_OK) break;
        if (!o.json && !header && n) {
            int wid = 7;
            for (size_t i = 0; i < n; i++)
                if ((int)strlen(v[i].id) > wid) wid = (int)strlen(v[i].id);
            printf("%-*s  %-40s %-16s %14s %6s\n", wid, "product", "title", "category", "price", "images");
            header = wid;
        }
        for (size_t i = 0; i < n && st == SL_OK; i++) {
            sl_image_ref *imgs = NULL;
            size_t ni = 0;
            st = sl_store_product_images(s, v[i].id, &imgs, &ni, &err);
            if (st != SL_OK) break;
            if (o.json) {
                json_array_append_new(arr, sl__product_json(&v[i], imgs, ni));
            } else {
                char price[48];
                sl__format_price(price, sizeof price, v[i].has_price, v[i].price, v[i].currency);
                printf("%-*s  ", header > (int)strlen(v[i].id) ? header : (int)strlen(v[i].id), v[i].id);
                sl__print_cell(v[i].title, 40);
                putchar(' ');
                sl__print_cell(v[i].category, 16);
                printf(" %14s %6zu\n", price, ni);
            }
            sl_image_refs_free(imgs, ni);
        }
        if (n) snprintf(after, sizeof after, "%s", v[n - 1].id);
        if (n) snprintf(last, sizeof last, "%s", v[n - 1].id);
        shown += n;
        sl_products_free(v, n);
        if (!more || (o.limit && shown >= o.limit)) break;
    }
    sl_engine_free(e);
    if (st != SL_OK) {
        json_decref(arr);
        return sl__cli_fail(argv[0], &err);
    }
    char cursor[SL_STORE_CURSOR_MAX + 1] = "";
    if (more && last[0]) sl_store_cursor_encode(last, cursor);
    if (o.json)
        return sl__print_json(json_pack("{s:o, s:I, s:I, s:o}", "products", arr ? arr : json_array(),
                                        "count", (json_int_t)shown, "total", (json_int_t)total,
                                        "next_cursor", cursor[0] ? json_string(cursor) : json_null()));
    if (shown == 0) printf("no products\n");
    if (!o.quiet) {
        if (cursor[0]) printf("%zu of %lld products; next page: --cursor %s\n", shown, (long long)total, cursor);
        else printf("%zu of %lld products\n", shown, (long long)total);
    }
    return SL_EXIT_OK;
}

const sl__cli_cmd sl__cmd_list = {
    "list", "list the catalog's products (filters, paging)",
    "Usage: shoplens list [--category C] [--min-price X] [--max-price Y] [--text WORDS]\n"
    "                     [--limit N] [--cursor C] [--store DIR] [--quiet] [--json]\n\n"
    "Products by id (byte order), with the filters of search: --text matches title and\n"
    "description (FTS5, all words). Without --limit every product is listed; with --limit N\n"
    "(1..10000) one page, and the next one with --cursor set to the printed next cursor.\n"
    "  --quiet  no count line\n"
    "  --json   print {\"products\": [{\"id\", \"title\", \"category\", \"description\", \"url\",\n"
    "           \"price\", \"currency\", \"attrs\", \"images\": [{\"id\", \"sha256\", \"bytes\", \"file\",\n"
    "           \"source\"}]}], \"count\", \"total\", \"next_cursor\"}\n",
    sl__list_run};
