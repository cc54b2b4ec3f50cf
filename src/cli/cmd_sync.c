/*
 * cli/cmd_sync.c - `shoplens sync CATALOG`: like add, then removes the products that are no
 * longer in the feed, so the store equals the feed.
 */
#include "cli/cli.h"

int sl__cli_ingest(int argc, char **argv, int sync);

static int sl__sync_run(int argc, char **argv) { return sl__cli_ingest(argc, argv, 1); }

const sl__cli_cmd sl__cmd_sync = {
    "sync", "make the store equal to a catalog (add, update, remove)",
    "Usage: shoplens sync CATALOG [--store DIR] [--jobs N] [--quiet] [--json]\n\n"
    "Same as 'shoplens add CATALOG', then removes every product that is not in CATALOG (products\n"
    "whose rows failed stay as they were). Output and exit status as for add.\n",
    sl__sync_run};
