/* Batch driver for tests/oracle/test_tokenizer_parity.py.
 *   lm_tokenize_lines MODEL.gguf [--no-special]
 * Reads one case per stdin line, hex-encoded (so any bytes, newlines and
 * invalid UTF-8 included, fit on a line). Prints one line per case:
 *   space-separated ids <TAB> hex of detokenize(ids) (specials rendered)
 * Exit status 1 with a message on stderr for any error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3 || (argc == 3 && strcmp(argv[2], "--no-special"))) {
        fprintf(stderr, "usage: lm_tokenize_lines MODEL.gguf [--no-special] < hex-lines\n");
        return 2;
    }
    bool special = argc == 2;
    lm_err err = {{0}};
    gguf_file *f = gguf_open(argv[1], &err);
    lm_tokenizer *t = f ? lm_tokenizer_load(f, &err) : NULL;
    gguf_close(f);
    if (!t) { fprintf(stderr, "lm_tokenize_lines: %s\n", err.msg); return 1; }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long lineno = 0;
    int rc = 0;
    while ((n = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) n--;
        if (n % 2) { fprintf(stderr, "line %ld: odd hex length\n", lineno); rc = 1; break; }
        size_t len = (size_t)n / 2;
        char *buf = malloc(len + 1);
        for (size_t i = 0; i < len; i++) {
            int hi = hexval(line[2 * i]), lo = hexval(line[2 * i + 1]);
            if (hi < 0 || lo < 0) { fprintf(stderr, "line %ld: bad hex\n", lineno); free(buf); rc = 1; goto out; }
            buf[i] = (char)(hi * 16 + lo);
        }
        int32_t *ids;
        size_t n_ids;
        if (lm_tokenize(t, buf, len, special, &ids, &n_ids, &err)) {
            fprintf(stderr, "line %ld: %s\n", lineno, err.msg);
            free(buf);
            rc = 1;
            break;
        }
        for (size_t i = 0; i < n_ids; i++) printf(i ? " %d" : "%d", ids[i]);
        size_t n_dec;
        char *dec = lm_detokenize_n(t, ids, n_ids, true, &n_dec, &err);
        if (!dec) { fprintf(stderr, "line %ld: %s\n", lineno, err.msg); free(ids); free(buf); rc = 1; break; }
        putchar('\t');
        for (size_t i = 0; i < n_dec; i++) printf("%02x", (unsigned char)dec[i]);
        putchar('\n');
        free(dec);
        free(ids);
        free(buf);
    }
out:
    free(line);
    lm_tokenizer_free(t);
    return rc;
}
