/*
 * cli/cmd_remove.c - `shoplens remove PRODUCT_ID...`: deletes products and their images.
 * Exit 3 when some ids were unknown.
 */
#include "cli/cli.h"
#include "cli/product_cli.h"

#include <stdio.h>

static int sl__remove_run(int argc, char **argv) {
    sl__popts o;
    int rc = sl__popts_parse(argc, argv, 0, &o);
    if (rc) return rc;
    if (o.npos == 0) return sl__cli_usage_error(argv[0], "give at least one PRODUCT_ID");
    sl_engine *e;
    if ((rc = sl__open_engine(argv[0], &o, 0, 0, &e))) return rc;
    json_t *removed = json_array(), *missing = json_array();
    int nmiss = 0, hard = 0;
    for (int i = 0; i < o.npos; i++) {
        sl_error err;
        sl_error_clear(&err);
        sl_status st = sl_engine_delete_product(e, o.pos[i], &err);
        if (st == SL_OK) {
            json_array_append_new(removed, sl__json_text(o.pos[i]));
            if (!o.json && !o.quiet) printf("removed %s\n", o.pos[i]);
        } else if (st == SL_E_NOT_FOUND) {
            nmiss++;
            json_array_append_new(missing, sl__json_text(o.pos[i]));
            if (!o.json) fprintf(stderr, "shoplens remove: no product '%s'\n", o.pos[i]);
        } else {
            hard = 1;
            sl__cli_fail(argv[0], &err);
            break;
        }
    }
    sl_engine_free(e);
    if (o.json) {
        if (sl__print_json(json_pack("{s:o, s:o}", "removed", removed, "not_found", missing))) return SL_EXIT_ERROR;
    } else {
        json_decref(removed);
        json_decref(missing);
    }
    return hard ? SL_EXIT_ERROR : nmiss ? SL_EXIT_PARTIAL : SL_EXIT_OK;
}

const sl__cli_cmd sl__cmd_remove = {
    "remove", "remove products (and their images) from the store",
    "Usage: shoplens remove PRODUCT_ID... [--store DIR] [--quiet] [--json]\n\n"
    "Removes the products, their images and the image files no other product uses.\n"
    "  --quiet  no 'removed' lines (unknown ids are still reported on stderr)\n"
    "  --json   print {\"removed\": [ids], \"not_found\": [ids]}\n"
    "Exit status: 0 all removed, 3 some ids were not in the store, 1 error.\n",
    sl__remove_run};
