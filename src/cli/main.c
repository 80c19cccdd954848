/* lemonpc: dispatches `lemonpc <command> [args]` to src/cli/cmd_*.c. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "lemonpc.h"

typedef struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
} command;

static const command COMMANDS[] = {
    {"info", cmd_info, "show a GGUF model's metadata and tensor table"},
    {"quantize", cmd_quantize, "convert a GGUF model to Q8_0, Q4_0, Q4_1, F16, BF16 or F32"},
    {"tokenize", cmd_tokenize, "show the token ids of a text under a model's tokenizer"},
    {"generate", cmd_generate, "complete one prompt (for scripts)"},
    {"chat", cmd_chat, "chat with a model in the terminal"},
    {"talk", cmd_talk, "talk to an NPC of a world, with its memory of events and players"},
    {"serve", cmd_serve, "serve a world's NPCs over an OpenAI-compatible HTTP API"},
    {"check", cmd_check, "validate a world/character sheet folder"},
    {"import", cmd_import, "import a Character Card (V1/V2/V3; JSON, PNG or CHARX) as a sheet"},
    {"export", cmd_export, "export a character sheet as a Character Card V2/V3 (JSON, PNG or CHARX)"},
    {"dataset", cmd_dataset, "show what training will see of a JSONL chat dataset"},
    {"filter", cmd_filter, "run the dataset filters over a JSONL chat dataset"},
    {"review", cmd_review, "review generated samples: accept, reject, edit, promote"},
    {"datagen", cmd_datagen, "generate a character's conversation dataset through a teacher model"},
    {"train", cmd_train, "fine-tune a model (LoRA or full) on a JSONL chat dataset"},
    {"pairs", cmd_pairs, "make DPO preference pairs from an NPC's own samples and rejected answers"},
    {"merge", cmd_merge, "merge a LoRA adapter into its base model (GGUF F32..Q4_1)"},
    {"peft", cmd_peft, "export a LoRA adapter GGUF as a PEFT folder"},
    {"stamp", cmd_stamp, "stamp an adapter trained by hand with its persona policy"},
    {"eval", cmd_eval, "have an NPC answer a question file and report how it stays in character"},
    {"build", cmd_build, "build an NPC from a sheet folder: dataset, fine-tune, eval, export"},
};

static void usage(FILE *out) {
    fprintf(out, "lemonpc %s: turn a game character into a small language model\n\n"
                 "usage: lemonpc <command> [options]\n\ncommands:\n", LEMONPC_VERSION);
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        fprintf(out, "  %-10s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
    fprintf(out, "\n`lemonpc <command> --help` or `lemonpc help <command>` describes a command.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) { usage(stderr); return 2; }
    const char *name = argv[1];
    if (!strcmp(name, "help") && argc > 2) {
        /* `lemonpc help train` is `lemonpc train --help` */
        for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
            if (!strcmp(argv[2], COMMANDS[i].name)) {
                char *sub[] = {argv[2], (char *)"--help", NULL};
                return COMMANDS[i].fn(2, sub);
            }
        fprintf(stderr, "lemonpc: unknown command '%s'\n\n", argv[2]);
        usage(stderr);
        return 2;
    }
    if (!strcmp(name, "--help") || !strcmp(name, "-h") || !strcmp(name, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(name, "--version")) { printf("lemonpc %s\n", LEMONPC_VERSION); return 0; }
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        if (!strcmp(name, COMMANDS[i].name)) return COMMANDS[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "lemonpc: unknown command '%s'\n\n", name);
    usage(stderr);
    return 2;
}
