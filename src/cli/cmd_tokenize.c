/* Placeholder until the command lands (owner replaces this file). */
#include <stdio.h>

#include "cli/commands.h"

int cmd_tokenize(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "lemonpc tokenize: not built yet\n");
    return 1;
}
