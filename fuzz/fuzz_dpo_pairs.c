/* libFuzzer target: DPO preference pairs (train/dpo_data.c) -- parsing,
 * rendering, fitting, splitting -- and the DPO batch layout, on a tiny
 * byte-level vocabulary built in-process (ChatML specials, one token per
 * byte, SmolLM2-style default system turn). The first input byte picks
 * options (strict, max_len, drop); the rest is the JSONL text. Checks: no
 * crash or sanitizer report; every failure names the file; every kept
 * pair has ids in range, 0/1 masks that are 0 on the shared prompt and
 * count n_trained, both sides start with the same n_prompt tokens, n <=
 * max_len, at least one scored token a side; the split partitions the set;
 * a batch of the pairs puts each side's scored targets at the next token. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"
#include "train/dpo.h"

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
    if (!t) { fprintf(stderr, "fuzz_dpo_pairs: %s\n", err.msg); abort(); }
    return t;
}

static lm_tokenizer *g_tok;   /* built once: libFuzzer offers no context */

static void check_set(const lm_dpo_set *s, int max_len) {
    for (int i = 0; i < s->n; i++) {
        const lm_dpo_pair *p = &s->p[i];
        for (int k = 0; k < 2; k++) {
            const lm_sft_example *e = &p->seq[k];
            if (e->n < 1 || (max_len > 0 && e->n > max_len)) abort();
            int trained = 0;
            for (int j = 0; j < e->n; j++) {
                if (e->tokens[j] < 0 || e->tokens[j] >= NV || e->mask[j] > 1) abort();
                if (j < p->n_prompt && e->mask[j]) abort();   /* the prompt is never scored */
                if (j) trained += e->mask[j];
            }
            if (trained != e->n_trained || trained == 0) abort();
        }
        int shared = p->n_prompt;
        for (int k = 0; k < 2; k++)
            if (p->seq[k].n < shared) shared = p->seq[k].n;
        if (memcmp(p->seq[0].tokens, p->seq[1].tokens, (size_t)shared * sizeof(int32_t))) abort();
    }
}

static void check_batch(const lm_dpo_set *s, int T) {
    lm_dpo_batch b;
    lm_err err = {{0}};
    int B = s->n < 3 ? s->n : 3, idx[3];
    if (lm_dpo_batch_init(&b, B, T, &err)) abort();
    for (int k = 0; k < B; k++) idx[k] = k;
    lm_dpo_batch_fill(&b, s, idx, B, NULL);
    /* rows cut to the longest side (a multiple of 4 at most T) */
    int longest = 0;
    for (int k = 0; k < B; k++)
        for (int side = 0; side < 2; side++)
            if (s->p[k].seq[side].n > longest) longest = s->p[k].seq[side].n;
    if (b.span < longest || b.span > T || (b.span % 4 && b.span != T) || b.span - longest > 3) abort();
    if (b.rows != 2 * B) abort();
    for (int k = 0; k < B; k++)
        for (int side = 0; side < 2; side++) {
            const lm_sft_example *e = &s->p[k].seq[side];
            int row = side * B + k, scored = 0;
            for (int t = 0; t < b.span; t++) {
                size_t o = (size_t)row * b.span + t;
                if (!b.mask[o]) continue;
                scored++;
                if (t + 1 >= e->n || b.targets[o] != e->tokens[t + 1]) abort();
            }
            if (scored != e->n_trained || b.len[row] != e->n_trained) abort();
        }
    lm_dpo_batch_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_tok) g_tok = tiny();
    if (size < 1) return 0;
    uint8_t o = data[0];
    lm_sft_opts opts = lm_sft_opts_default();
    opts.strict = o & 1;
    opts.max_len = (o & 2) ? 24 + (o >> 4) * 8 : 0;
    opts.overlong = (o & 4) ? LM_SFT_DROP : LM_SFT_TRUNCATE;
    opts.max_skipped = 1000;
    lm_dpo_set *s = NULL;
    lm_err err = {{0}};
    if (lm_dpo_load_mem("fuzz.jsonl", (const char *)data + 1, size - 1, g_tok, &opts, &s, &err)) {
        if (!strstr(err.msg, "fuzz.jsonl")) abort();   /* every failure names the file */
        return 0;
    }
    check_set(s, opts.max_len);
    lm_dpo_set *tr = NULL, *va = NULL;
    if (lm_dpo_split(s, 0.25, o, &tr, &va, &err) == 0) {
        if (tr->n + va->n != s->n) abort();
        check_set(tr, opts.max_len);
        lm_dpo_set_free(tr);
        lm_dpo_set_free(va);
    }
    int T = s->stats.longest + 1;
    if (T > 4096) T = 4096;
    lm_dpo_fit(s, T, LM_SFT_TRUNCATE);
    if (s->n) check_batch(s, T);
    lm_dpo_set_free(s);
    return 0;
}
