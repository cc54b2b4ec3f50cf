/*
 * cli/cmd_verify.c - `shoplens verify [--repair] [--quick]`: checks that a store is whole
 * (sl_engine_verify) and lists what is wrong. Exit 0 when nothing is wrong, 3 when problems
 * remain (listed), 1 when the check itself could not run.
 */
#include "cli/cli.h"
#include "cli/product_cli.h"

#include <stdio.h>

static int sl__verify_run(int argc, char **argv) {
    sl__popts o;
    int rc = sl__popts_parse(argc, argv, SL__OPT_VERIFY, &o);
    if (rc) return rc;
    if (o.npos) return sl__cli_usage_error(argv[0], "unexpected argument '%s'", o.pos[0]);
    sl_engine *e;
    if ((rc = sl__open_engine(argv[0], &o, 0, !o.repair, &e))) return rc;
    sl_verify_opts vo = {0};
    vo.repair = o.repair;
    vo.quick = o.quick;
    sl_verify_report r;
    sl_error err;
    sl_error_clear(&err);
    sl_status st = sl_engine_verify(e, &vo, &r, &err);
    const char *dir = sl_store_dir(sl_engine_store(e));
    if (st != SL_OK) {
        sl_engine_free(e);
        return sl__cli_fail(argv[0], &err);
    }
    if (o.json) {
        json_t *items = json_array();
        for (size_t i = 0; items && i < r.n; i++)
            json_array_append_new(items, json_pack("{s:s, s:s, s:s, s:b}", "kind", r.items[i].kind,
                                                   "subject", r.items[i].subject, "message", r.items[i].message,
                                                   "repaired", r.items[i].repaired));
        rc = sl__print_json(json_pack("{s:s, s:b, s:I, s:I, s:I, s:I, s:I, s:o}", "store", dir,
                                      "ok", r.problems == 0, "products", (json_int_t)r.products,
                                      "images", (json_int_t)r.images, "files_checked", (json_int_t)r.files_checked,
                                      "problems", (json_int_t)r.problems, "repaired", (json_int_t)(r.n - r.problems),
                                      "items", items ? items : json_array()));
    } else {
        for (size_t i = 0; i < r.n; i++)
            printf("%s %s: %s%s\n", r.items[i].repaired ? "repaired" : "PROBLEM", r.items[i].kind,
                   r.items[i].message, "");
        if (!o.quiet)
            printf("store %s: %lld products, %lld images, %lld files checked%s: %zu problem%s%s\n", dir,
                   (long long)r.products, (long long)r.images, (long long)r.files_checked,
                   o.quick ? " (existence only)" : "", r.problems, r.problems == 1 ? "" : "s",
                   r.n > r.problems ? " left after repair" : "");
    }
    size_t problems = r.problems;
    sl_verify_report_free(&r);
    sl_engine_free(e);
    if (rc) return rc;
    return problems ? SL_EXIT_PARTIAL : SL_EXIT_OK;
}

const sl__cli_cmd sl__cmd_verify = {
    "verify", "check (and repair) the store: database, features, index, image files",
    "Usage: shoplens verify [--repair] [--quick] [--store DIR] [--quiet] [--json]\n\n"
    "Checks catalog.sqlite (SQLite integrity_check, foreign keys, the full-text rows), that every\n"
    "image has features of the store's pipeline and is in the index, that every image file\n"
    "exists and holds the bytes its content-addressed name says, and finds files no image uses\n"
    "(left by an interrupted write), deletions still pending and products without images.\n"
    "Every problem is printed as 'PROBLEM <kind>: <message>'.\n"
    "  --repair  fix what can be fixed: rebuild the full-text rows and the index, describe\n"
    "            images without features again, copy images from outside the store in (stores\n"
    "            made before schema 2) or again from their source when the copy is missing or\n"
    "            damaged, delete orphan files, finish pending deletions\n"
    "  --quick   check that files exist, without reading them\n"
    "  --quiet   no summary line\n"
    "  --json    print {\"store\", \"ok\", \"products\", \"images\", \"files_checked\", \"problems\",\n"
    "            \"repaired\", \"items\": [{\"kind\", \"subject\", \"message\", \"repaired\"}]}\n"
    "Exit status: 0 nothing wrong (or all repaired), 3 problems remain, 1 the check failed.\n",
    sl__verify_run};
