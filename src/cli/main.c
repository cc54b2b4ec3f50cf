/*
 * cli/main.c - entry point of the `shoplens` binary: global flags, dispatch to subcommands.
 * The subcommand table is generated at build time from src/cli/cmd_*.c (see cli.h).
 */
#include "cli/cli.h"
#include "shoplens/shoplens.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli_cmds.h"

static const sl__cli_cmd *const sl__cli_cmds[] = { SL__CLI_CMD_LIST };

const sl__cli_cmd *sl__cli_find(const char *name) {
    for (size_t i = 0; sl__cli_cmds[i]; i++)
        if (strcmp(sl__cli_cmds[i]->name, name) == 0) return sl__cli_cmds[i];
    return NULL;
}

int sl__cli_fail(const char *cmd, const sl_error *err) {
    fprintf(stderr, "shoplens %s: %s: %s\n", cmd, sl_status_name(err->code),
            err->message[0] ? err->message : sl_strerror(err->code));
    return SL_EXIT_ERROR;
}

int sl__cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "shoplens %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nRun 'shoplens %s --help' for usage.\n", cmd);
    return SL_EXIT_USAGE;
}

int sl__cli_wants_help(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) break;
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) return 1;
    }
    return 0;
}

static void sl__cli_help(FILE *out) {
    fprintf(out,
            "shoplens %s - visual product search\n\n"
            "Usage: shoplens <command> [options]\n"
            "       shoplens <command> --help\n"
            "       shoplens --version\n\nCommands:\n",
            sl_version());
    for (size_t i = 0; sl__cli_cmds[i]; i++)
        fprintf(out, "  %-12s %s\n", sl__cli_cmds[i]->name, sl__cli_cmds[i]->summary);
    fprintf(out, "\nExit status: 0 success, 1 error, 2 usage error, 3 some items failed.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        sl__cli_help(stderr);
        return SL_EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        if (argc > 2 && strcmp(argv[1], "help") == 0) {
            const sl__cli_cmd *c = sl__cli_find(argv[2]);
            if (c) { fputs(c->usage, stdout); return SL_EXIT_OK; }
        }
        sl__cli_help(stdout);
        return SL_EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
        printf("shoplens %s\n", sl_version());
        return SL_EXIT_OK;
    }
    const sl__cli_cmd *cmd = sl__cli_find(argv[1]);
    if (!cmd) {
        fprintf(stderr, "shoplens: unknown command '%s'\nRun 'shoplens --help' for the list.\n", argv[1]);
        return SL_EXIT_USAGE;
    }
    if (sl__cli_wants_help(argc - 1, argv + 1)) {
        fputs(cmd->usage, stdout);
        return SL_EXIT_OK;
    }
    return cmd->run(argc - 1, argv + 1);
}
