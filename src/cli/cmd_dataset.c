/* `lemonpc dataset stats DATA.jsonl --model MODEL ...`: what the trainer
 * will see of an SFT dataset -- counts, token lengths, the trained share,
 * truncation, the validation split -- and one conversation as rendered,
 * its trained tokens highlighted. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/commands.h"
#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"
#include "train/data.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: lemonpc dataset stats DATA.jsonl --model MODEL.gguf [options]\n\n"
            "Loads an SFT dataset (one conversation per line: {\"messages\": [{\"role\":\n"
            "\"system|user|assistant\", \"content\": ...}]} or ShareGPT's {\"conversations\":\n"
            "[{\"from\": \"system|human|gpt\", \"value\": ...}]}), renders it with MODEL's chat\n"
            "template and prints the statistics the trainer will see, plus one\n"
            "conversation with its trained tokens highlighted (the assistant's content\n"
            "and its <|im_end|>).\n\n"
            "  --model FILE     the GGUF model whose tokenizer and template to use\n"
            "  --max-len N      tokens per conversation; longer ones are truncated\n"
            "                   (default: no limit)\n"
            "  --drop-long      drop conversations over --max-len instead\n"
            "  --val-frac F     validation fraction, split by a seeded hash of each\n"
            "                   conversation (default 0.1)\n"
            "  --seed S         split seed (default 42)\n"
            "  --strict         fail on the first bad line (default: skip and report,\n"
            "                   up to 100)\n"
            "  --sample N       show the N-th kept conversation (default 1; 0: none)\n"
            "  --color, --no-color  highlight with colour / with [[ ]] (default: colour\n"
            "                   on a terminal)\n");
}

static void warn(void *ctx, const char *msg) {
    (void)ctx;
    fprintf(stderr, "lemonpc dataset: skipped %s\n", msg);
}

static int parse_long(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

/* Prints bytes with \n shown as a visible mark before the line break. */
static void put_text(const char *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n') fputs("\\n\n", stdout);
        else putchar(p[i]);
    }
}

static void show(const lm_tokenizer *t, const lm_sft_example *e, int index, bool color) {
    const char *on = color ? "\x1b[1;32m" : "[[", *off = color ? "\x1b[0m" : "]]";
    printf("\nconversation %d (line %d): %d tokens, %d trained%s\n", index, e->line, e->n, e->n_trained,
           e->truncated ? ", truncated" : "");
    printf("trained tokens are shown %s\n\n", color ? "in green" : "between [[ and ]]");
    bool in = false;
    char small[256];
    for (int i = 0; i < e->n; i++) {
        if (e->mask[i] != in) {
            fputs(e->mask[i] ? on : off, stdout);
            in = e->mask[i];
        }
        int k = lm_token_bytes(t, e->tokens[i], true, small, sizeof small);
        if (k > (int)sizeof small) {
            char *big = malloc((size_t)k);
            if (big) {
                lm_token_bytes(t, e->tokens[i], true, big, (size_t)k);
                put_text(big, (size_t)k);
            }
            free(big);
        } else if (k > 0) {
            put_text(small, (size_t)k);
        }
    }
    if (in) fputs(off, stdout);
    putchar('\n');
}

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

static void print_stats(const lm_sft_dataset *ds, const lm_sft_dataset *tr, const lm_sft_dataset *va,
                        double val_frac, unsigned long long seed) {
    const lm_sft_stats *s = &ds->stats;
    int *len = malloc((size_t)ds->n * sizeof *len);
    printf("conversations     %ld (%ld bad lines skipped, %ld dropped)\n", s->conversations, s->skipped,
           s->dropped);
    printf("messages          %ld (%ld assistant turns, all trained)\n", s->messages, s->assistant_turns);
    printf("tokens            %ld\n", s->tokens);
    printf("trained tokens    %ld (%.1f%% of tokens)\n", s->trained_tokens,
           s->tokens ? 100.0 * (double)s->trained_tokens / (double)s->tokens : 0.0);
    if (len) {
        for (int i = 0; i < ds->n; i++) len[i] = ds->ex[i].n;
        qsort(len, (size_t)ds->n, sizeof *len, cmp_int);
        printf("tokens per conv.  min %d, median %d, p95 %d, max %d (longest before truncation %d)\n",
               len[0], len[ds->n / 2], len[(ds->n * 95) / 100 < ds->n ? (ds->n * 95) / 100 : ds->n - 1],
               len[ds->n - 1], s->longest);
        free(len);
    }
    printf("truncated         %ld conversations, %ld tokens cut\n", s->truncated, s->truncated_tokens);
    if (s->header_merges)
        printf("header merges     %ld assistant turns start with whitespace that BPE joins to the header\n",
               s->header_merges);
    printf("split (f=%.3g, seed %llu)  train %d conversations / %ld trained tokens, "
           "validation %d / %ld\n", val_frac, seed, tr->n, tr->stats.trained_tokens, va->n,
           va->stats.trained_tokens);
}

int cmd_dataset(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "stats")) {
        fprintf(stderr, "lemonpc dataset: unknown subcommand '%s' (known: stats)\n", argv[1]);
        return 2;
    }
    const char *data = NULL, *model = NULL;
    double val_frac = 0.1;
    long seed = 42, sample = 1, max_len = 0;
    int color = -1;
    lm_sft_opts opts = lm_sft_opts_default();
    opts.warn = warn;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        if (!strcmp(a, "--strict")) { opts.strict = true; continue; }
        if (!strcmp(a, "--drop-long")) { opts.overlong = LM_SFT_DROP; continue; }
        if (!strcmp(a, "--color")) { color = 1; continue; }
        if (!strcmp(a, "--no-color")) { color = 0; continue; }
        int bad = 0;
        if (!strcmp(a, "--model")) bad = !(model = v);
        else if (!strcmp(a, "--max-len")) bad = !v || parse_long(v, 2, 1 << 24, &max_len);
        else if (!strcmp(a, "--seed")) bad = !v || parse_long(v, 0, __LONG_MAX__, &seed);
        else if (!strcmp(a, "--sample")) bad = !v || parse_long(v, 0, __INT_MAX__, &sample);
        else if (!strcmp(a, "--val-frac")) {
            char *end;
            bad = !v || (val_frac = strtod(v, &end), *end || end == v || !(val_frac >= 0 && val_frac < 1));
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "lemonpc dataset: unknown option '%s'\n\n", a);
            usage(stderr);
            return 2;
        } else if (!data) {
            data = a;
            continue;
        } else {
            fprintf(stderr, "lemonpc dataset: unexpected argument '%s'\n", a);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "lemonpc dataset: %s needs %s\n", a,
                    !strcmp(a, "--val-frac") ? "a number in [0, 1)" : !strcmp(a, "--model") ? "a path"
                                                                                            : "a valid integer");
            return 2;
        }
        i++;
    }
    if (!data || !model) {
        fprintf(stderr, "lemonpc dataset: missing %s\n\n", !data ? "DATA.jsonl" : "--model");
        usage(stderr);
        return 2;
    }
    opts.max_len = (int)max_len;
    if (color < 0) color = isatty(STDOUT_FILENO);

    lm_err err = {{0}};
    gguf_file *f = gguf_open(model, &err);
    lm_tokenizer *t = f ? lm_tokenizer_load(f, &err) : NULL;
    gguf_close(f);
    lm_sft_dataset *ds = NULL, *tr = NULL, *va = NULL;
    int rc = 1;
    if (!t || lm_sft_dataset_load(data, t, &opts, &ds, &err) ||
        lm_sft_split(ds, val_frac, (uint64_t)seed, &tr, &va, &err)) {
        fprintf(stderr, "lemonpc dataset: %s\n", err.msg);
        goto done;
    }
    printf("%s (model %s)\n", data, model);
    print_stats(ds, tr, va, val_frac, (unsigned long long)seed);
    if (sample > 0 && sample <= ds->n) show(t, &ds->ex[sample - 1], (int)sample, color);
    else if (sample > ds->n) fprintf(stderr, "lemonpc dataset: --sample %ld: only %d conversations\n", sample, ds->n);
    rc = fflush(stdout) ? 1 : 0;
done:
    lm_sft_dataset_free(tr);
    lm_sft_dataset_free(va);
    lm_sft_dataset_free(ds);
    lm_tokenizer_free(t);
    return rc;
}
