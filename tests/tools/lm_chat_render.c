/* Prints lm_chat_render's output for tests/oracle/test_tokenizer_parity.py.
 *   lm_chat_render MODEL.gguf [--gen] [ROLE CONTENT]...
 * --gen appends the assistant generation prompt. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: lm_chat_render MODEL.gguf [--gen] [ROLE CONTENT]...\n"); return 2; }
    int i = 2;
    bool gen = false;
    if (i < argc && !strcmp(argv[i], "--gen")) { gen = true; i++; }
    if ((argc - i) % 2) { fprintf(stderr, "lm_chat_render: ROLE without CONTENT\n"); return 2; }
    lm_err err = {{0}};
    gguf_file *f = gguf_open(argv[1], &err);
    lm_tokenizer *t = f ? lm_tokenizer_load(f, &err) : NULL;
    gguf_close(f);
    if (!t) { fprintf(stderr, "lm_chat_render: %s\n", err.msg); return 1; }
    size_t n = (size_t)(argc - i) / 2;
    lm_chat_msg *msgs = calloc(n + 1, sizeof *msgs);
    for (size_t k = 0; k < n; k++) msgs[k] = (lm_chat_msg){argv[i + 2 * k], argv[i + 2 * k + 1]};
    char *s = lm_chat_render(t, msgs, n, gen, &err);
    int rc = 0;
    if (s) fputs(s, stdout);
    else { fprintf(stderr, "lm_chat_render: %s\n", err.msg); rc = 1; }
    free(s);
    free(msgs);
    lm_tokenizer_free(t);
    return rc;
}
