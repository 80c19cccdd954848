/* Placeholder until the command lands (owner replaces this file). */
#include <stdio.h>

#include "cli/commands.h"

int cmd_import(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "lemonpc import: not built yet\n");
    return 1;
}
