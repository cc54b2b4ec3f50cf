/*
 * cli/cli.h - the `shoplens` command table and helpers shared by the subcommands.
 *
 * Each subcommand lives in src/cli/cmd_<name>.c and defines
 *     const sl__cli_cmd sl__cmd_<name> = { "<name>", "summary", "usage...", run };
 * The build generates the table from the file names (CMakeLists.txt), so adding a command
 * touches no shared file. `run` gets argv with argv[0] = the command name and returns the
 * process exit status (SL_EXIT_*). Only the CLI prints; only main may exit.
 */
#ifndef SL_CLI_H
#define SL_CLI_H

#include <stddef.h>
#include "shoplens/error.h"

enum {
    SL_EXIT_OK = 0,       /* everything succeeded */
    SL_EXIT_ERROR = 1,    /* the command failed */
    SL_EXIT_USAGE = 2,    /* bad command line */
    SL_EXIT_PARTIAL = 3   /* the command ran, but some items (rows, images) failed */
};

typedef struct sl__cli_cmd {
    const char *name;
    const char *summary; /* one line, shown by `shoplens --help` */
    const char *usage;   /* full help, shown by `shoplens <name> --help` */
    int (*run)(int argc, char **argv);
} sl__cli_cmd;

/* Prints "shoplens <cmd>: <status name>: <message>" to stderr; returns SL_EXIT_ERROR. */
int sl__cli_fail(const char *cmd, const sl_error *err);
/* Prints "shoplens <cmd>: <printf message>" and a hint to use --help; returns SL_EXIT_USAGE. */
int sl__cli_usage_error(const char *cmd, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* True when argv contains -h or --help. */
int sl__cli_wants_help(int argc, char **argv);
/* Parses one "key=value" head training option (epochs, seed, rank, lambda, temperature,
 * category, batch, lr) into *o; -1 when the key is unknown or the value out of range. */
struct sl_head_train_opts;
int sl__cli_head_opt(struct sl_head_train_opts *o, const char *kv);
/* Finds a command by name in the generated table, NULL if none. */
const sl__cli_cmd *sl__cli_find(const char *name);

#endif
