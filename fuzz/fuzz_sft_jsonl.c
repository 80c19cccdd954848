/* libFuzzer target: SFT JSONL loading, rendering, fitting, splitting and
 * batching on a tiny byte-level vocabulary built in-process (ChatML
 * specials, one token per byte, SmolLM2-style default system turn).
 * The first input byte picks options (strict, max_len, drop, pack, B/T);
 * the rest is the JSONL text. Checks: no crash or sanitizer report; every
 * kept example has ids in range, a 0/1 mask, n_trained equal to its mask,
 * n <= max_len; the split partitions the set; batches train only real
 * positions and their targets are the next token of the same segment. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"
#include "train/data.h"

enum { NV = 3 + 256 };

static int printable(int b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174; }

static lm_tokenizer *tiny(void) {
    static char bytes[256][4];
    const char *tok[NV];
    int32_t type[NV];
    tok[0] = "<|endoftext|>"; tok[1] = "<|im_start|>"; tok[2] = "<|im_end|>";
    type[0] = type[1] = type[2] = 3;
    int k = 0;
    for (int b = 0; b < 256; b++) {
        unsigned cp = printable(b) ? (unsigned)b : 256u + (unsigned)k++;
        if (cp < 0x80) { bytes[b][0] = (char)cp; bytes[b][1] = 0; }
        else { bytes[b][0] = (char)(0xC0 | (cp >> 6)); bytes[b][1] = (char)(0x80 | (cp & 0x3F)); bytes[b][2] = 0; }
        tok[3 + b] = bytes[b];
        type[3 + b] = 1;
    }
    lm_tokenizer_spec s = {
        .model = "gpt2", .pre = "smollm", .tokens = tok, .n_tokens = NV, .token_types = type,
        .bos = 1, .eos = 2, .unk = -1, .pad = 2,
        .chat_template = "{% if loop.first and messages[0]['role'] != 'system' %}"
                         "{{ '<|im_start|>system\\nYou are Brann.<|im_end|>\\n' }}{% endif %}"
                         "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n'}}",
    };
    lm_err err = {{0}};
    lm_tokenizer *t = lm_tokenizer_new(&s, &err);
    if (!t) { fprintf(stderr, "fuzz_sft_jsonl: %s\n", err.msg); abort(); }
    return t;
}

static lm_tokenizer *g_tok;   /* built once: libFuzzer offers no context */

static void check_ds(const lm_sft_dataset *ds, int max_len) {
    for (int i = 0; i < ds->n; i++) {
        const lm_sft_example *e = &ds->ex[i];
        if (e->n < 1 || (max_len > 0 && e->n > max_len)) abort();
        int k = 0;
        for (int j = 0; j < e->n; j++) {
            if (e->tokens[j] < 0 || e->tokens[j] >= NV || e->mask[j] > 1) abort();
            if (j) k += e->mask[j];
        }
        if (k != e->n_trained || k == 0) abort();
    }
}

static void check_batches(const lm_sft_dataset *ds, int B, int T, int pack, int trim) {
    lm_err err = {{0}};
    lm_batcher *b = lm_batcher_new(ds, &(lm_batcher_opts){.B = B, .T = T, .seed = 1, .shuffle = true,
                                                          .pack = pack, .trim = trim}, &err);
    if (!b) return;   /* an example longer than T */
    long trained = 0;
    for (;;) {
        lm_batch x;
        if (lm_batcher_next(b, &x, &err)) abort();
        if (trim && (x.B != x.n_rows || x.T > T)) abort();
        if (!trim && (x.B != B || x.T != T)) abort();
        for (int r = 0; r < x.n_rows; r++)
            if (x.lengths[r] > x.T) abort();
        for (int p = 0; p < x.B * x.T; p++) {
            if (x.loss_mask[p] && !x.valid[p]) abort();
            if (x.loss_mask[p] && (p + 1) % x.T && x.segments[p + 1] == x.segments[p] &&
                x.targets[p] != x.tokens[p + 1]) abort();
        }
        trained += x.n_trained;
        if (x.epoch_end) break;
    }
    if (trained != ds->stats.trained_tokens) abort();
    lm_batcher_free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_tok) g_tok = tiny();
    if (size < 1) return 0;
    uint8_t o = data[0];
    lm_sft_opts opts = lm_sft_opts_default();
    opts.strict = o & 1;
    opts.max_len = (o & 2) ? 16 + (o >> 4) * 8 : 0;
    opts.overlong = (o & 4) ? LM_SFT_DROP : LM_SFT_TRUNCATE;
    opts.max_skipped = 1000;
    lm_sft_dataset *ds = NULL;
    lm_err err = {{0}};
    if (lm_sft_dataset_load_mem("fuzz.jsonl", (const char *)data + 1, size - 1, g_tok, &opts, &ds, &err)) {
        if (!strstr(err.msg, "fuzz.jsonl")) abort();   /* every failure names the file */
        return 0;
    }
    check_ds(ds, opts.max_len);
    lm_sft_dataset *tr = NULL, *va = NULL;
    if (lm_sft_split(ds, 0.25, o, &tr, &va, &err) == 0) {
        if (tr->n + va->n != ds->n) abort();
        lm_sft_dataset_free(tr);
        lm_sft_dataset_free(va);
    }
    int T = ds->stats.longest + 1;
    if (T > 4096) T = 4096;
    check_batches(ds, 1 + (o & 3), T, (o >> 3) & 1, (o >> 4) & 1);
    lm_sft_dataset_free(ds);
    return 0;
}
