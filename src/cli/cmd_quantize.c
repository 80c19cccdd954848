/* Placeholder until the command lands (owner replaces this file). */
#include <stdio.h>

#include "cli/commands.h"

int cmd_quantize(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "lemonpc quantize: not built yet\n");
    return 1;
}
