/*
 * cli/cmd_similar.c - `shoplens similar PRODUCT_ID`: products that look like this one.
 */
#include "cli/cli.h"
#include "cli/product_cli.h"

static int sl__similar_run(int argc, char **argv) { return sl__cli_matches_cmd(argc, argv, 1); }

const sl__cli_cmd sl__cmd_similar = {
    "similar", "products that look like a given product",
    "Usage: shoplens similar PRODUCT_ID [-k 10] [--offset N] [--category C] [--min-price X]\n"
    "                        [--max-price Y] [--text WORDS] [--text-mode restrict|boost]\n"
    "                        [--ef N] [--store DIR] [--json]\n\n"
    "Every image of the product queries the index; the product itself is excluded. Same filters,\n"
    "--ef and JSON shape as 'shoplens search'; scores are -1..1, and confidence (0..1) says how\n"
    "likely a result is the same product (e.g. a duplicate listing): most similar products are not.\n",
    sl__similar_run};
