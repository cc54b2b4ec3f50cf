/*
 * cli/cmd_sync.c - `shoplens sync CATALOG`: like add, then removes the products that are no
 * longer in the feed, so the store equals the feed.
 */
#include "cli/cli.h"

int sl__cli_ingest(int argc, char **argv, int sync);

static int sl__sync_run(int argc, char **argv) { return sl__cli_ingest(argc, argv, 1); }

const sl__cli_cmd sl__cmd_sync = {
    "sync", "make the store equal to a catalog (add, update, remove)",
    "Usage: shoplens sync CATALOG [--store DIR] [--jobs N] [--max-removals N|P%] [--dry-run]\n"
    "                     [--currency CODE] [--fetch-timeout S] [--fetch-retries N] [--quiet]\n"
    "                     [--json]\n\n"
    "Same as 'shoplens add CATALOG', then removes every product that is not in CATALOG (products\n"
    "whose rows failed stay as they were), and the image files no product uses any more.\n"
    "Protection against a truncated or wrong feed: before changing anything, sync refuses (exit\n"
    "1, nothing written) a feed without rows, a feed none of whose rows names a product, and a\n"
    "feed that would remove more than the limit of products.\n"
    "  --max-removals N|P%  the limit: N products, or P percent of the stored products (rounded\n"
    "                       up); default 10%\n"
    "  --dry-run            print what would be added, updated and removed (ids), and whether\n"
    "                       the sync would be refused; write nothing\n"
    "Other options, output and exit status as for add; --json adds \"refused\" (the reason, or\n"
    "null) to a dry run.\n",
    sl__sync_run};
