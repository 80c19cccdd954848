/* libFuzzer target: tokenizes and detokenizes arbitrary bytes, with and
 * without special-token parsing, on a tiny vocabulary built in-process
 * (or on the model in $LEMONPC_MODEL). Checks: no crash or sanitizer
 * report, ids in range, and detokenize(tokenize(x)) == x whenever x is
 * valid UTF-8 made of bytes that all have a token.
 * Inputs starting with "VOCAB\n" instead build a vocabulary from the input
 * (after that line: the text to encode, then one entry per line: "m..." a
 * merge, "c..." a control token, "u..." a user-defined token, anything else
 * a normal token) to shake out lm_tokenizer_new on odd vocabularies. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/utf8.h"
#include "gguf/gguf.h"
#include "tokenizer/internal.h"
#include "tokenizer/tokenizer.h"

/* The fuzzer's one tokenizer, built once (libFuzzer offers no context). */
static lm_tokenizer *g_tok;

static const char *MERGES[] = {
    "\xc4\xa0 t", "\xc4\xa0 a", "h e", "i n", "r e", "o n", "\xc4\xa0t he", "e r",
    "\xc4\xa0 s", "a t", "\xc4\xa0 w", "\xc4\xa0 o", "e n", "\xc4\xa0 c", "i t", "i s",
    "a n", "o r", "e s", "\xc4\xa0 b", "e d", "\xc4\xa0 f", "in g", "\xc4\x8a \xc4\x8a",
    "\xc4\xa0 \xc4\xa0", "\xc4\xa0\xc4\xa0 \xc4\xa0\xc4\xa0", "\xc3\xb0 \xc5\x81",
};
static const char *MERGED[] = {
    "\xc4\xa0t", "\xc4\xa0" "a", "he", "in", "re", "on", "\xc4\xa0the", "er",
    "\xc4\xa0s", "at", "\xc4\xa0w", "\xc4\xa0o", "en", "\xc4\xa0" "c", "it", "is",
    "an", "or", "es", "\xc4\xa0" "b", "ed", "\xc4\xa0" "f", "ing", "\xc4\x8a\xc4\x8a",
    "\xc4\xa0\xc4\xa0", "\xc4\xa0\xc4\xa0\xc4\xa0\xc4\xa0", "\xc3\xb0\xc5\x81",
};
#define N_MERGES (sizeof MERGES / sizeof MERGES[0])

static lm_tokenizer *tiny(void) {
    static const char *sp[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool>"};
    enum { NS = 4, N = NS + 256 + (int)N_MERGES };
    char *tok[N];
    int32_t type[N];
    char bytes[256][3];
    int n = 0;
    for (int i = 0; i < NS; i++) { tok[n] = (char *)sp[i]; type[n++] = i == 3 ? 4 : 3; }
    for (int b = 0; b < 256; b++) {
        uint32_t cp = lm_byte_to_cp((uint8_t)b);
        if (cp < 0x80) { bytes[b][0] = (char)cp; bytes[b][1] = 0; }
        else { bytes[b][0] = (char)(0xC0 | (cp >> 6)); bytes[b][1] = (char)(0x80 | (cp & 0x3F)); bytes[b][2] = 0; }
        tok[n] = bytes[b];
        type[n++] = 1;
    }
    for (size_t i = 0; i < N_MERGES; i++) { tok[n] = (char *)MERGED[i]; type[n++] = 1; }
    lm_tokenizer_spec s = {
        .model = "gpt2", .pre = "smollm", .tokens = (const char *const *)tok, .n_tokens = n,
        .token_types = type, .merges = MERGES, .n_merges = (int32_t)N_MERGES,
        .bos = 1, .eos = 2, .unk = 0, .pad = 2,
    };
    lm_err err = {{0}};
    lm_tokenizer *t = lm_tokenizer_new(&s, &err);
    if (!t) fprintf(stderr, "fuzz_tokenizer: %s\n", err.msg);
    return t;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    const char *path = getenv("LEMONPC_MODEL");
    lm_err err = {{0}};
    if (path && *path) {
        gguf_file *f = gguf_open(path, &err);
        g_tok = f ? lm_tokenizer_load(f, &err) : NULL;
        gguf_close(f);
        if (!g_tok) fprintf(stderr, "fuzz_tokenizer: %s\n", err.msg);
    } else {
        g_tok = tiny();
    }
    if (!g_tok) abort();
    return 0;
}

static void check_encode(const lm_tokenizer *t, const uint8_t *data, size_t size, bool lossless);

/* Vocabulary from the input; the rest of the checks as usual. */
static void fuzz_vocab(const uint8_t *data, size_t size) {
    enum { MAX = 512 };
    const char *tok[MAX], *mer[MAX];
    size_t tl[MAX], ml[MAX];
    int32_t ty[MAX];
    int nt = 0, nm = 0;
    const uint8_t *text = NULL;
    size_t text_len = 0;
    for (size_t i = 0; i <= size && nt < MAX && nm < MAX;) {
        const uint8_t *nl = memchr(data + i, '\n', size - i);
        size_t end = nl ? (size_t)(nl - data) : size;
        const char *line = (const char *)data + i;
        size_t len = end - i;
        if (!text) { text = data + i; text_len = len; }
        else if (len && line[0] == 'm') { mer[nm] = line + 1; ml[nm++] = len - 1; }
        else if (len && (line[0] == 'c' || line[0] == 'u')) {
            tok[nt] = line + 1; tl[nt] = len - 1; ty[nt++] = line[0] == 'c' ? 3 : 4;
        } else { tok[nt] = line; tl[nt] = len; ty[nt++] = 1; }
        i = end + 1;
    }
    lm_tokenizer_spec s = {
        .model = "gpt2", .pre = "smollm", .tokens = tok, .token_lens = tl, .n_tokens = nt,
        .token_types = ty, .merges = mer, .merge_lens = ml, .n_merges = nm,
        .bos = -1, .eos = -1, .unk = -1, .pad = -1,
    };
    lm_err err = {{0}};
    lm_tokenizer *t = lm_tokenizer_new(&s, &err);
    if (!t) return;   /* refused with a message: fine */
    check_encode(t, text, text_len, false);
    lm_tokenizer_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size >= 6 && !memcmp(data, "VOCAB\n", 6)) {
        fuzz_vocab(data + 6, size - 6);
        return 0;
    }
    const lm_tokenizer *t = g_tok;
    bool all_bytes = true;
    for (size_t i = 0; i < size && all_bytes; i++)
        all_bytes = lm_strmap_get(&t->by_bytes, data + i, 1) >= 0;
    check_encode(t, data, size, all_bytes && lm_utf8_check((const char *)data, size) == size);
    return 0;
}

static void check_encode(const lm_tokenizer *t, const uint8_t *data, size_t size, bool lossless) {
    for (int special = 0; special < 2; special++) {
        int32_t *ids;
        size_t n;
        lm_err err = {{0}};
        if (lm_tokenize(t, (const char *)data, size, special, &ids, &n, &err)) abort();
        for (size_t i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= lm_tokenizer_n_vocab(t)) abort();
        size_t len;
        char *s = lm_detokenize_n(t, ids, n, true, &len, &err);
        if (!s) abort();
        if (lossless && (len != size || memcmp(s, data, size) != 0)) abort();
        free(s);
        free(ids);
    }
}
