/*
 * cli/cmd_search.c - `shoplens search IMAGE...`: the K best products for a photo, with filters
 * applied inside the index search, each with its calibrated confidence and match flag. The query
 * image is only read, never stored or logged.
 */
#include "cli/cli.h"
#include "cli/product_cli.h"

static int sl__search_run(int argc, char **argv) { return sl__cli_matches_cmd(argc, argv, 0); }

const sl__cli_cmd sl__cmd_search = {
    "search", "find the products shown in a photo",
    "Usage: shoplens search IMAGE... [-k 10] [--offset N] [--category C] [--min-price X]\n"
    "                       [--max-price Y] [--text WORDS] [--text-mode restrict|boost]\n"
    "                       [--region X,Y,W,H] [--ef N] [--store DIR] [--json]\n\n"
    "Prints the K best products (a product's score is its best image's, -1..1; after train\n"
    "--photos averaged with its best reference photo's, docs/learn.md), with the matching\n"
    "catalog image, the confidence that it is the product in the photo (0..1) and whether that\n"
    "makes it a match (the store's calibration, docs/learn.md); \"no close match\" when none is.\n"
    "Filters are applied inside the index search, so K results come back whenever K products\n"
    "pass them. Several images: one block (or one JSON line with \"image\") per image.\n"
    "  -k K           products to print, 1..1000\n"
    "  --offset N     skip the N best first (a next page: ranks N+1..N+K); offset + K <= 1000\n"
    "  --text WORDS   full-text match (FTS5) on title and description, all words required.\n"
    "                 By default it RESTRICTS the results to matching products; with\n"
    "                 --text-mode boost every product stays and matching ones get +0.1.\n"
    "  --region X,Y,W,H  search only this rectangle of IMAGE: pixels of the upright photo\n"
    "                 (EXIF orientation applied) from its top-left corner, at least 16x16\n"
    "  --ef N         HNSW candidate list length, 16..4096 (default: 300, more above 10^5\n"
    "                 images): higher finds more of the exact nearest images and takes\n"
    "                 longer. Only stores above the\n"
    "                 crossover (50,000 images) search HNSW (docs/index.md); others ignore it\n"
    "  --json         print {\"results\": [{\"rank\", \"product_id\", \"score\", \"confidence\",\n"
    "                 \"match\", \"title\", \"category\", \"price\", \"currency\", \"url\", \"image\",\n"
    "                 \"image_id\", \"inliers\"}]}; image is where the catalog image came from\n"
    "The photo is never written to the store or to any log.\n",
    sl__search_run};
