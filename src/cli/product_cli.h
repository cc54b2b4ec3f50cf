/*
 * cli/product_cli.h - helpers shared by the catalog/search subcommands (init, add, sync,
 * remove, retrain, search, similar, dedup, classify, check, info, eval): option parsing, opening
 * the store, JSON and table output, the ingest progress bar.
 */
#ifndef SL_PRODUCT_CLI_H
#define SL_PRODUCT_CLI_H

#include <jansson.h>
#include "shoplens/engine.h"
#include "shoplens/feature.h"

/* Options a command accepts besides --store, --json and --quiet (which every command takes:
 * --quiet drops progress and summaries, never errors nor the data a command prints). */
enum {
    SL__OPT_K = 1 << 0,        /* -k N */
    SL__OPT_FILTERS = 1 << 1,  /* --category --min-price --max-price --text --text-mode */
    SL__OPT_JOBS = 1 << 2,     /* --jobs N */
    SL__OPT_THRESHOLD = 1 << 3,/* --threshold T */
    SL__OPT_FEATURES = 1 << 4, /* --features SPEC */
    SL__OPT_INDEX = 1 << 5,    /* --index KIND */
    SL__OPT_QUIET = 1 << 6,    /* (always accepted; kept for the callers that name it) */
    SL__OPT_OFFSET = 1 << 7,   /* --offset N */
    SL__OPT_PAGE = 1 << 8,     /* --limit N --cursor C */
    SL__OPT_EXPORT = 1 << 9,   /* --format csv|jsonl --out FILE */
    SL__OPT_INGEST = 1 << 10,  /* --dry-run --currency CODE --fetch-timeout S --fetch-retries N */
    SL__OPT_SYNC = 1 << 11,    /* --max-removals N|P% */
    SL__OPT_VERIFY = 1 << 12,  /* --repair --quick */
    SL__OPT_REGION = 1 << 13,  /* --region x,y,w,h */
    SL__OPT_EF = 1 << 14       /* --ef N (HNSW candidate list length of the searches) */
};

#define SL__MAX_POS 4096

typedef struct sl__popts {
    const char *store;
    int json, quiet;
    sl_query q;
    int jobs;
    double threshold;
    const char *features;
    const char *index_kind;
    size_t limit;               /* --limit (0 = all) */
    const char *cursor;
    const char *format, *out;
    int dry_run;
    int no_wait;                /* --no-wait (add/sync on a cluster store) */
    const char *currency;
    double fetch_timeout;       /* --fetch-timeout S (0: default) */
    int fetch_retries;          /* --fetch-retries N, when fetch_retries_set */
    int fetch_retries_set;
    size_t max_removals;        /* --max-removals N */
    int max_removals_set;
    double max_removals_percent;/* --max-removals P% */
    int repair, quick;
    char *pos[SL__MAX_POS];
    int npos;
} sl__popts;

/* Parses argv (argv[0] = command) accepting --store/--json and the `allowed` options. Returns 0,
 * or the exit status of a usage error (already printed). */
int sl__popts_parse(int argc, char **argv, unsigned allowed, sl__popts *o);

/* Opens the engine of o->store (or $SHOPLENS_STORE / ./shoplens-data). Prints the error and
 * returns SL_EXIT_ERROR on failure, else 0. */
int sl__open_engine(const char *cmd, const sl__popts *o, int create, int read_only, sl_engine **e);

/* {"results": [...]} of a match list (the shape of search/similar --json); the first result
 * has "rank" rank0 + 1 (a page after --offset rank0). New reference. */
json_t *sl__matches_json(const sl_matches *m, size_t rank0);
/* A human table of matches on stdout, ranks from rank0 + 1: product ids are never cut. */
void sl__print_matches(const sl_matches *m, size_t rank0);
/* Prints s in a column of width w (bytes), cutting a longer s at a UTF-8 character boundary and
 * ending it with "..." (for titles; never used for ids). */
void sl__print_cell(const char *s, int w);
/* Formats a price with its currency ("12.50 EUR", "12.50", "-") into buf. */
void sl__format_price(char *buf, size_t cap, int has_price, double price, const char *currency);
/* The filter of --category --min-price --max-price --text as a store filter. */
void sl__popts_filter(const sl__popts *o, sl_store_filter *f);
/* A product as JSON: {"id", "title", "category", "description", "url", "price", "currency",
 * "attrs", "images": [{"id", "sha256", "bytes", "file", "source"}]} (images read from the
 * store; NULL images = none). New reference, NULL when out of memory. */
json_t *sl__product_json(const sl_product *p, const sl_image_ref *images, size_t n_images);
/* A JSON string of text from a feed, a store or the command line (NULL: ""); bytes that are
 * not UTF-8 (a Latin-1 file name, text stored before feeds were checked) become '?' instead of
 * the key going missing (jansson refuses them). New reference, NULL when out of memory. */
json_t *sl__json_text(const char *s);
/* Prints a JSON value (indented, keys in insertion order) and a newline, then frees it.
 * Returns 0 or SL_EXIT_ERROR when out of memory. */
int sl__print_json(json_t *v);

/* Progress reporter for sl_ingest_opts.progress: a bar with rate and ETA on a terminal,
 * plain lines every few seconds otherwise (stderr). */
typedef struct sl__progress {
    const char *what;
    const char *unit;           /* what is counted ("products", "images downloaded") */
    int tty;
    int quiet;
    double last;
} sl__progress;
void sl__progress_init(sl__progress *p, const char *what, int quiet);
void sl__progress_cb(void *ctx, size_t done, size_t total, double elapsed);

/* search (similar = 0: argument IMAGE) and similar (1: argument PRODUCT_ID): parse, open the
 * store read-only, query, print the matches. Returns the exit status. */
int sl__cli_matches_cmd(int argc, char **argv, int similar);

/* Parses options, checks there are npos positional arguments, opens the store read-only and
 * loads positional argument img_pos as the query image. Returns 0 or the exit status (printed);
 * on 0 the caller frees *e and *img. */
int sl__cli_image_cmd(int argc, char **argv, unsigned allowed, int npos, int img_pos,
                      const char *usage_msg, sl__popts *o, sl_engine **e, sl_image **img);

#endif
