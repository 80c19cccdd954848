/* lemonpc chat: interactive conversation. The KV cache keeps the whole
 * conversation, so each turn evaluates only its new tokens: the rendered
 * conversation is compared with the text already in the cache and only the
 * suffix is tokenized and fed. Reads lines from stdin, so a pipe works too. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli_gen.h"
#include "cli/commands.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: lemonpc chat MODEL [options]\n\n"
            "Chats with a model: each line of input is a user message, answered as it is\n"
            "generated. Commands: /reset (forget the conversation), /quit (or end of input).\n\n"
            "  -s, --system TEXT     system message (default: the template's own)\n"
            "%s"
            "  -h, --help            this help\n",
            CLI_GEN_FLAGS_HELP);
}

typedef struct {
    lm_chat_msg *m;      /* role: static string; content: owned */
    size_t n, cap;
} history;

static int hist_push(history *h, const char *role, const char *content) {
    if (h->n == h->cap) {
        size_t c = h->cap ? h->cap * 2 : 16;
        lm_chat_msg *q = realloc(h->m, c * sizeof *q);
        if (!q) return -1;
        h->m = q;
        h->cap = c;
    }
    char *dup = strdup(content);
    if (!dup) return -1;
    h->m[h->n++] = (lm_chat_msg){role, dup};
    return 0;
}

static void hist_pop(history *h) {
    if (h->n) free((char *)h->m[--h->n].content);
}

static void hist_clear(history *h, size_t keep) {
    while (h->n > keep) hist_pop(h);
}

typedef struct {
    cli_gen g;
    history h;
    size_t n_fixed;      /* messages kept on /reset (the system message) */
    char *cached;        /* text whose tokens the KV cache holds */
    bool verbose, tty;
} chat;

/* One user turn. Returns 0 on success, -1 on an error that leaves the
 * conversation as it was before the turn. */
static int turn(chat *c, const char *line, lm_err *err) {
    lm_ctx *ctx = c->g.ctx;
    int n_past0 = lm_ctx_n_past(ctx);
    if (hist_push(&c->h, "user", line)) return lm_errf(err, "out of memory");
    char *full = lm_chat_render(c->g.tok, c->h.m, c->h.n, true, err);
    if (!full) { hist_pop(&c->h); return -1; }
    size_t nc = strlen(c->cached);
    const char *suffix = full + nc;
    if (strncmp(full, c->cached, nc) != 0) {
        /* the template rendered the past differently: start the cache over */
        lm_ctx_truncate(ctx, 0);
        suffix = full;
    }
    int32_t *toks = NULL;
    size_t n_toks = 0;
    char *reply = NULL;
    cli_gen_stats st;
    bool ctx_end = false;
    int rc = lm_tokenize(c->g.tok, suffix, strlen(suffix), true, &toks, &n_toks, err);
    if (!rc) rc = cli_gen_reply(&c->g, toks, n_toks, stdout, &reply, &ctx_end, &st, err);
    free(toks);
    if (rc) {
        hist_pop(&c->h);
        if (suffix == full) {   /* the cache was dropped: it no longer matches c->cached */
            lm_ctx_truncate(ctx, 0);
            c->cached[0] = '\0';
        } else {
            lm_ctx_truncate(ctx, n_past0);
        }
        free(full);
        return -1;
    }
    printf("\n");
    fflush(stdout);
    size_t nf = strlen(full), nr = strlen(reply);
    char *cached = malloc(nf + nr + 1);
    if (!cached || hist_push(&c->h, "assistant", reply)) {
        free(cached);
        free(full);
        free(reply);
        return lm_errf(err, "out of memory");
    }
    memcpy(cached, full, nf);
    memcpy(cached + nf, reply, nr + 1);
    free(c->cached);
    c->cached = cached;
    free(full);
    free(reply);
    if (c->verbose) cli_gen_print_stats(&st);
    if (ctx_end)
        fprintf(stderr, "lemonpc chat: context full (%d tokens): /reset to start over, or "
                        "restart with a larger --ctx\n", lm_ctx_n_ctx(ctx));
    return 0;
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

    lm_err err = {0};
    chat c = {0};
    c.verbose = o.verbose;
    c.tty = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
    int rc = 1;
    char *line = NULL;
    size_t line_cap = 0;
    if (cli_gen_open(&c.g, &o, &err)) goto done;
    c.g.eval_all = true;
    c.cached = calloc(1, 1);
    const char *sys = cli_gen_system(&c.g, &o);
    if (!c.cached || (sys && hist_push(&c.h, "system", sys))) {
        lm_errf(&err, "out of memory");
        goto done;
    }
    c.n_fixed = c.h.n;
    if (c.tty)
        fprintf(stderr, "chatting with %s (context %d tokens); /reset forgets, /quit leaves\n",
                o.model, lm_ctx_n_ctx(c.g.ctx));
    for (;;) {
        if (c.tty) { printf("> "); fflush(stdout); }
        ssize_t n = getline(&line, &line_cap, stdin);
        if (n < 0) break;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
        if (n == 0) continue;
        if (!strcmp(line, "/quit") || !strcmp(line, "/exit")) break;
        if (!strcmp(line, "/reset")) {
            hist_clear(&c.h, c.n_fixed);
            lm_ctx_truncate(c.g.ctx, 0);
            lm_sampler_reset(c.g.smp);
            c.cached[0] = '\0';
            fprintf(stderr, "(conversation reset)\n");
            continue;
        }
        if (line[0] == '/' && line[1] && !strchr(line, ' ')) {
            fprintf(stderr, "lemonpc chat: unknown command '%s' (/reset, /quit)\n", line);
            continue;
        }
        lm_err terr = {0};
        if (turn(&c, line, &terr)) {
            printf("\n");
            fflush(stdout);
            fprintf(stderr, "lemonpc chat: %s\n", terr.msg);
        }
    }
    rc = 0;
done:
    if (rc) fprintf(stderr, "lemonpc chat: %s\n", err.msg);
    free(line);
    free(c.cached);
    hist_clear(&c.h, 0);
    free(c.h.m);
    cli_gen_close(&c.g);
    return rc;
}
