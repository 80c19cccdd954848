/* Placeholder until the command lands (owner replaces this file). */
#include <stdio.h>

#include "cli/commands.h"

int cmd_chat(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "lemonpc chat: not built yet\n");
    return 1;
}
