/* Placeholder until the command lands (owner replaces this file). */
#include <stdio.h>

#include "cli/commands.h"

int cmd_info(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "lemonpc info: not built yet\n");
    return 1;
}
