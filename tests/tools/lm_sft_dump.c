/* Prints each conversation of an SFT JSONL file as we train on it, for
 * tests/oracle/test_sft_mask.py:
 *   lm_sft_dump MODEL.gguf DATA.jsonl [--max-len N] [--strict]
 * One JSON object per kept conversation:
 *   {"line": L, "n_trained": K, "tokens": [...], "mask": [...]}
 * and, on stderr, one line per skipped bad line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"
#include "train/data.h"

static void warn(void *ctx, const char *msg) {
    (void)ctx;
    fprintf(stderr, "skipped: %s\n", msg);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: lm_sft_dump MODEL.gguf DATA.jsonl [--max-len N] [--strict]\n");
        return 2;
    }
    lm_sft_opts opts = lm_sft_opts_default();
    opts.warn = warn;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--max-len") && i + 1 < argc) opts.max_len = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--strict")) opts.strict = true;
        else { fprintf(stderr, "lm_sft_dump: unknown argument '%s'\n", argv[i]); return 2; }
    }
    lm_err err = {{0}};
    gguf_file *f = gguf_open(argv[1], &err);
    lm_tokenizer *t = f ? lm_tokenizer_load(f, &err) : NULL;
    gguf_close(f);
    lm_sft_dataset *ds = NULL;
    if (!t || lm_sft_dataset_load(argv[2], t, &opts, &ds, &err)) {
        fprintf(stderr, "lm_sft_dump: %s\n", err.msg);
        lm_tokenizer_free(t);
        return 1;
    }
    for (int i = 0; i < ds->n; i++) {
        const lm_sft_example *e = &ds->ex[i];
        printf("{\"line\": %d, \"n_trained\": %d, \"tokens\": [", e->line, e->n_trained);
        for (int k = 0; k < e->n; k++) printf(k ? ", %d" : "%d", e->tokens[k]);
        printf("], \"mask\": [");
        for (int k = 0; k < e->n; k++) printf(k ? ", %d" : "%d", e->mask[k]);
        printf("]}\n");
    }
    lm_sft_dataset_free(ds);
    lm_tokenizer_free(t);
    return fflush(stdout) ? 1 : 0;
}
