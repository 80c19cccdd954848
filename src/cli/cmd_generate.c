/* lemonpc generate: one prompt in, the model's reply streamed to stdout. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fileio.h"
#include "cli/cli_gen.h"
#include "cli/commands.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: lemonpc generate MODEL -p PROMPT [options]\n\n"
            "Completes one prompt and streams the reply to stdout. By default PROMPT is a\n"
            "user message rendered through the model's chat template, with the assistant\n"
            "turn opened; --raw feeds it as-is (special tokens such as <|im_start|> in it\n"
            "are recognised).\n\n"
            "  -p, --prompt TEXT     the prompt ('-' reads it from stdin)\n"
            "  -s, --system TEXT     system message (default: the template's own)\n"
            "  --raw                 no chat template\n"
            "%s"
            "  -h, --help            this help\n",
            CLI_GEN_FLAGS_HELP);
}

int cmd_generate(int argc, char **argv) {
    cli_gen_opts o;
    cli_gen_opts_init(&o, 256);
    o.sp.repeat_penalty = 1.0f;   /* llama.cpp's default: one answer, as llama-cli gives it */
    const char *prompt = NULL;
    bool raw = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int r = cli_gen_parse_flag("generate", argc, argv, &i, &o);
        if (r < 0) return 2;
        if (r > 0) continue;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        if (!strcmp(a, "--raw")) { raw = true; continue; }
        if (!strcmp(a, "-p") || !strcmp(a, "--prompt") || !strcmp(a, "-s") ||
            !strcmp(a, "--system")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "lemonpc generate: %s needs a value\n", a);
                return 2;
            }
            if (a[1] == 'p' || a[2] == 'p') prompt = argv[++i];
            else o.system = argv[++i];
            continue;
        }
        if (a[0] == '-' && a[1]) {
            fprintf(stderr, "lemonpc generate: unknown option '%s' (see --help)\n", a);
            return 2;
        }
        if (o.model) {
            fprintf(stderr, "lemonpc generate: unexpected argument '%s' (model is '%s')\n", a,
                    o.model);
            return 2;
        }
        o.model = a;
    }
    if (!o.model || !prompt) {
        fprintf(stderr, "lemonpc generate: %s\n\n", !o.model ? "no MODEL given" : "no prompt (-p)");
        usage(stderr);
        return 2;
    }
    if (raw && (o.guard.retries || o.guard.best_of > 1)) {
        fprintf(stderr, "lemonpc generate: --guard and --best-of check a reply to a line; a --raw "
                "completion has none\n");
        return 2;
    }
    if (raw && (o.system || o.character)) {
        fprintf(stderr, "lemonpc generate: --system/--character have no effect with --raw\n");
        return 2;
    }

    lemonpc_error err = {0};
    lm_err lerr = {{0}};
    cli_npc n = {0};
    char *stdin_text = NULL;
    lemonpc_conversation *conv = NULL;
    int rc = 1;
    if (!strcmp(prompt, "-")) {
        size_t len;
        if (lm_read_file("-", &stdin_text, &len, false, &lerr)) {
            fprintf(stderr, "lemonpc generate: %s\n", lerr.msg);
            return 1;
        }
        prompt = stdin_text;
    }
    if (cli_npc_open(&n, &o, &err)) goto done;
    lemonpc_reply_info info;
    lemonpc_status st;
    if (raw) {
        st = lemonpc_complete(n.npc, prompt, cli_put_text, stdout, NULL, &info, &err);
    } else {
        if (!(conv = lemonpc_conversation_open(n.npc, o.asker, o.place, &err))) goto done;
        st = lemonpc_say(conv, prompt, cli_put_text, stdout, NULL, &info, &err);
    }
    if (st) goto done;
    printf("\n");
    if (info.stop == LEMONPC_STOP_CONTEXT_FULL)
        fprintf(stderr, "lemonpc generate: stopped: context full at %d tokens (raise --ctx)\n",
                o.n_ctx > 0 ? o.n_ctx : 2048);
    if (o.verbose) cli_print_reply_stats(&info);
    rc = 0;
done:
    if (rc) fprintf(stderr, "lemonpc generate: %s\n", err.message);
    free(stdin_text);
    lemonpc_conversation_close(conv);
    cli_npc_close(&n);
    return rc;
}
