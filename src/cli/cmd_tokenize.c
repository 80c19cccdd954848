/* lemonpc tokenize: show how a model's tokenizer splits a text. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fileio.h"
#include "base/utf8.h"
#include "cli/commands.h"
#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: lemonpc tokenize MODEL.gguf (TEXT | --file FILE) [--ids] [--no-special]\n\n"
            "Prints the token ids of TEXT (or of FILE's bytes; '-' reads stdin) under\n"
            "MODEL's tokenizer. No BOS is added.\n\n"
            "  --ids          print only the ids, space-separated, on one line\n"
            "                 (default: one 'id<TAB>piece' line per token, with \\n, \\t,\n"
            "                 \\\\ and bytes that are not whole UTF-8 characters escaped)\n"
            "  --no-special   treat texts like <|im_start|> as plain text, not as\n"
            "                 control tokens\n"
            "  --file FILE    read the text from FILE instead of the command line\n");
}

static void print_piece(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        if (c == '\n') { fputs("\\n", stdout); i++; continue; }
        if (c == '\t') { fputs("\\t", stdout); i++; continue; }
        if (c == '\r') { fputs("\\r", stdout); i++; continue; }
        if (c == '\\') { fputs("\\\\", stdout); i++; continue; }
        int k = lm_utf8_seq_len(s + i, n - i);
        if (k == 0 || (k == 1 && (c < 0x20 || c == 0x7F))) {
            printf("\\x%02x", c);
            i++;
            continue;
        }
        fwrite(s + i, 1, (size_t)k, stdout);
        i += (size_t)k;
    }
}

int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *text = NULL, *file = NULL;
    bool ids_only = false, special = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        if (!strcmp(a, "--ids")) ids_only = true;
        else if (!strcmp(a, "--no-special")) special = false;
        else if (!strcmp(a, "--file")) {
            if (++i >= argc) { fprintf(stderr, "lemonpc tokenize: --file needs a path\n"); return 2; }
            file = argv[i];
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "lemonpc tokenize: unknown option '%s'\n\n", a);
            usage(stderr);
            return 2;
        } else if (!model) model = a;
        else if (!text) text = a;
        else {
            fprintf(stderr, "lemonpc tokenize: unexpected argument '%s' (quote the text)\n", a);
            return 2;
        }
    }
    if (!model || (!text && !file) || (text && file)) {
        fprintf(stderr, "lemonpc tokenize: %s\n\n",
                !model ? "missing MODEL" : text && file ? "give TEXT or --file, not both" : "missing TEXT or --file");
        usage(stderr);
        return 2;
    }
    size_t len = 0;
    char *buf = NULL;
    lm_err err = {{0}};
    if (file && lm_read_file(file, &buf, &len, false, &err)) {
        fprintf(stderr, "lemonpc tokenize: %s\n", err.msg);
        return 1;
    }
    gguf_file *f = gguf_open(model, &err);
    lm_tokenizer *t = f ? lm_tokenizer_load(f, &err) : NULL;
    gguf_close(f);
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = 1;
    if (!t || lm_tokenize(t, file ? buf : text, file ? len : strlen(text), special, &ids, &n, &err)) {
        fprintf(stderr, "lemonpc tokenize: %s\n", err.msg);
        goto done;
    }
    if (ids_only) {
        for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
        putchar('\n');
    } else {
        char small[256];
        for (size_t i = 0; i < n; i++) {
            int k = lm_token_bytes(t, ids[i], true, small, sizeof small);
            char *p = small;
            if (k > (int)sizeof small) {
                p = malloc((size_t)k);
                if (!p) { fprintf(stderr, "lemonpc tokenize: out of memory\n"); goto done; }
                lm_token_bytes(t, ids[i], true, p, (size_t)k);
            }
            printf("%d\t", ids[i]);
            print_piece((const unsigned char *)p, k > 0 ? (size_t)k : 0);
            putchar('\n');
            if (p != small) free(p);
        }
    }
    rc = fflush(stdout) ? 1 : 0;
done:
    free(ids);
    free(buf);
    lm_tokenizer_free(t);
    return rc;
}
