/*
 * cli/cmd_show.c - `shoplens show PRODUCT_ID`: one product's metadata and images (with the
 * store's file of each image and where it came from).
 */
#include "cli/cli.h"
#include "cli/product_cli.h"

#include <stdio.h>

static int sl__show_run(int argc, char **argv) {
    sl__popts o;
    int rc = sl__popts_parse(argc, argv, 0, &o);
    if (rc) return rc;
    if (o.npos != 1) return sl__cli_usage_error(argv[0], "give exactly one PRODUCT_ID");
    sl_engine *e;
    if ((rc = sl__open_engine(argv[0], &o, 0, 1, &e))) return rc;
    sl_product p;
    sl_image_ref *imgs = NULL;
    size_t n = 0;
    sl_error err;
    sl_error_clear(&err);
    sl_status st = sl_engine_get_product(e, o.pos[0], &p, &imgs, &n, &err);
    sl_engine_free(e);
    if (st != SL_OK) return sl__cli_fail(argv[0], &err);
    if (o.json) {
        rc = sl__print_json(sl__product_json(&p, imgs, n));
    } else {
        char price[48];
        sl__format_price(price, sizeof price, p.has_price, p.price, p.currency);
        printf("id           %s\ntitle        %s\ncategory     %s\nprice        %s\nurl          %s\n"
               "description  %s\nattrs        %s\nimages       %zu\n", p.id, p.title, p.category, price,
               p.url, p.description, p.attrs_json, n);
        for (size_t i = 0; i < n; i++)
            printf("  %lld  %s  (%lld bytes, from %s)\n", (long long)imgs[i].id, imgs[i].file,
                   (long long)imgs[i].size, imgs[i].source[0] ? imgs[i].source : "an upload");
    }
    sl_product_clear(&p);
    sl_image_refs_free(imgs, n);
    return rc;
}

const sl__cli_cmd sl__cmd_show = {
    "show", "show one product: metadata and images",
    "Usage: shoplens show PRODUCT_ID [--store DIR] [--json]\n\n"
    "  --json   print {\"id\", \"title\", \"category\", \"description\", \"url\", \"price\", \"currency\",\n"
    "           \"attrs\", \"images\": [{\"id\", \"sha256\", \"bytes\", \"file\", \"source\"}]}; file is the\n"
    "           store's copy, source where the image came from (\"\" for an upload)\n"
    "Exit status: 0, or 1 when there is no such product.\n",
    sl__show_run};
