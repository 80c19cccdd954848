/* lemonpc chat: interactive conversation, a thin user of the public API
 * (include/lemonpc.h): one NPC, one conversation. The KV cache keeps the
 * whole conversation, so each turn evaluates only its new tokens. Reads
 * lines from stdin, so a pipe works too. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli_gen.h"
#include "cli/commands.h"
#include "sheet/sheet.h"

/* Ctrl-C: set by the handler, read by the stream callback (stops the reply)
 * and after reading input (leaves). A signal handler has nowhere else to
 * write. */
static volatile sig_atomic_t g_interrupted;

static void on_sigint(int sig) {
    (void)sig;
    g_interrupted = 1;
}

/* Streams the reply; nonzero (stop) once Ctrl-C was pressed. */
static int put_reply(void *user, const char *text, size_t len) {
    if (g_interrupted) return 1;
    return cli_put_text(user, text, len);
}

/* The sheet's first message opens the conversation: shown, and kept as the
 * NPC's first turn, so the player's answer to it makes sense to the model. */
static int greet(lemonpc_conversation *conv, const char *greeting, lemonpc_error *err) {
    if (!greeting) return 0;
    lemonpc_turn t = {"assistant", greeting};
    if (lemonpc_conversation_set_turns(conv, &t, 1, err)) return -1;
    printf("%s\n", greeting);
    fflush(stdout);
    return 0;
}

static void usage(FILE *out) {
    fprintf(out,
            "usage: lemonpc chat MODEL [options]\n\n"
            "Chats with a model: each line of input is a user message, answered as it is\n"
            "generated. Commands: /reset (forget the conversation), /save FILE and /load FILE\n"
            "(the conversation with its cache), /quit (or end of input). Ctrl-C stops a reply\n"
            "(the exchange is forgotten); at the prompt, it leaves. With --character, the\n"
            "sheet's first message opens the conversation.\n\n"
            "  -s, --system TEXT     system message (default: the template's own)\n"
            "%s"
            "  -h, --help            this help\n",
            CLI_GEN_FLAGS_HELP);
}

int cmd_chat(int argc, char **argv) {
    cli_gen_opts o;
    cli_gen_opts_init(&o, 512);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int r = cli_gen_parse_flag("chat", argc, argv, &i, &o);
        if (r < 0) return 2;
        if (r > 0) continue;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        if (!strcmp(a, "-s") || !strcmp(a, "--system")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "lemonpc chat: %s needs a value\n", a);
                return 2;
            }
            o.system = argv[++i];
            continue;
        }
        if (a[0] == '-' && a[1]) {
            fprintf(stderr, "lemonpc chat: unknown option '%s' (see --help)\n", a);
            return 2;
        }
        if (o.model) {
            fprintf(stderr, "lemonpc chat: unexpected argument '%s' (model is '%s')\n", a, o.model);
            return 2;
        }
        o.model = a;
    }
    if (!o.model) {
        fprintf(stderr, "lemonpc chat: no MODEL given\n\n");
        usage(stderr);
        return 2;
    }

    lemonpc_error err = {0};
    cli_npc n;
    lemonpc_conversation *conv = NULL;
    bool tty = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
    int rc = 1;
    char *line = NULL, *greeting = NULL;
    size_t line_cap = 0;
    if (cli_npc_open(&n, &o, &err)) goto done;
    if (!(conv = lemonpc_conversation_open(n.npc, o.asker, o.place, &err))) goto done;
    if (o.character) {   /* the NPC loaded it: it reads */
        lm_diags d = {0};
        lm_character *c = lm_character_load(o.character, &d);
        lm_err gerr = {{0}};
        greeting = lm_character_greeting(c, NULL, &gerr);
        if (!greeting && gerr.msg[0])
            fprintf(stderr, "lemonpc chat: %s (the conversation starts without it)\n", gerr.msg);
        lm_character_free(c);
        lm_diags_free(&d);
    }
    /* no SA_RESTART: Ctrl-C at the prompt interrupts the read */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    if (tty)
        fprintf(stderr, "chatting with %s (context %d tokens); /reset forgets, /quit or Ctrl-C "
                "leaves, Ctrl-C during a reply stops it\n", o.model, o.n_ctx > 0 ? o.n_ctx : 2048);
    if (greet(conv, greeting, &err)) goto done;
    for (;;) {
        if (tty) { printf("> "); fflush(stdout); }
        ssize_t len = getline(&line, &line_cap, stdin);
        if (g_interrupted) {   /* at the prompt: leave as a shell command does */
            if (tty) fprintf(stderr, "\n");
            rc = 130;
            goto done;
        }
        if (len < 0 && errno == EINTR) { clearerr(stdin); continue; }
        if (len < 0) break;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
        if (len == 0) continue;
        if (!strcmp(line, "/quit") || !strcmp(line, "/exit")) break;
        lemonpc_error terr = {0};
        if (!strcmp(line, "/reset")) {
            if (lemonpc_conversation_reset(conv, &terr)) {
                fprintf(stderr, "lemonpc chat: %s\n", terr.message);
            } else {
                fprintf(stderr, "(conversation reset)\n");
                if (greet(conv, greeting, &terr)) fprintf(stderr, "lemonpc chat: %s\n", terr.message);
            }
            continue;
        }
        if (!strncmp(line, "/save ", 6) || !strncmp(line, "/load ", 6)) {
            const char *path = line + 6;
            if (line[1] == 's') {
                if (lemonpc_conversation_save(conv, path, &terr))
                    fprintf(stderr, "lemonpc chat: %s\n", terr.message);
                else
                    fprintf(stderr, "(saved to %s)\n", path);
            } else {
                lemonpc_conversation *back = lemonpc_conversation_restore(n.npc, path, &terr);
                if (!back) {
                    fprintf(stderr, "lemonpc chat: %s\n", terr.message);
                } else {
                    lemonpc_conversation_close(conv);
                    conv = back;
                    fprintf(stderr, "(loaded %s: %d turns)\n", path,
                            lemonpc_conversation_n_turns(conv));
                }
            }
            continue;
        }
        if (line[0] == '/' && line[1] && !strchr(line, ' ')) {
            fprintf(stderr, "lemonpc chat: unknown command '%s' (/reset, /save, /load, /quit)\n",
                    line);
            continue;
        }
        lemonpc_reply_info info;
        lemonpc_status st = lemonpc_say(conv, line, put_reply, stdout, NULL, &info, &terr);
        printf("\n");
        fflush(stdout);
        int stopped = st == LEMONPC_ERR_CANCELLED && g_interrupted;
        g_interrupted = 0;   /* a Ctrl-C after the last token stopped nothing */
        if (stopped) {
            fprintf(stderr, "(reply stopped; the exchange is forgotten)\n");
            continue;
        }
        if (st) {
            fprintf(stderr, "lemonpc chat: %s\n", terr.message);
            continue;
        }
        if (o.verbose) cli_print_reply_stats(&info);
        if (info.n_dropped_turns)
            fprintf(stderr, "lemonpc chat: the oldest %d turns no longer fit the context and were "
                    "left out\n", info.n_dropped_turns);
        if (info.stop == LEMONPC_STOP_CONTEXT_FULL)
            fprintf(stderr, "lemonpc chat: context full: /reset to start over, or restart with "
                    "a larger --ctx\n");
    }
    rc = 0;
done:
    if (rc && rc != 130) fprintf(stderr, "lemonpc chat: %s\n", err.message);
    free(line);
    free(greeting);
    lemonpc_conversation_close(conv);
    cli_npc_close(&n);
    return rc;
}
