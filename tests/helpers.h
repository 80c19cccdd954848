/* Fixtures the C tests share: temporary directories and files, the lemonpc
 * binary the CLI tests run, two
 * training runs compared bit for bit, the toy
 * model and toy chat "language" of the trainer tests, a training config
 * for them, metrics.jsonl fields, and a byte-level ChatML tokenizer with
 * the token sequences it gives, spelled by hand. Header only, every
 * function static inline (a test file uses what it needs without unused
 * warnings); include after <cmocka.h>. */
#ifndef LM_TESTS_HELPERS_H
#define LM_TESTS_HELPERS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tokenizer/tokenizer.h"
#include "train/data.h"
#include "train/train_config.h"
#include "train/train_model.h"

/* ---- files ----------------------------------------------------------------- */

/* A new directory /tmp/<prefix>_XXXXXX; malloc'd path. */
static inline char *th_tmpdir(const char *prefix) {
    char tmpl[256];
    snprintf(tmpl, sizeof tmpl, "/tmp/%s_XXXXXX", prefix);
    char *d = strdup(tmpl);
    assert_non_null(d);
    assert_non_null(mkdtemp(d));
    return d;
}

static inline void th_rm_rf(const char *d) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    assert_int_equal(system(cmd), 0);
}

/* The whole file (NUL after it); fails the test when it cannot be read. */
static inline void *th_slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("%s missing", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)len + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    b[len] = 0;
    *n = (size_t)len;
    return b;
}

/* Writes text to path (created or truncated); fails the test when it cannot. */
static inline void th_write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) fail_msg("%s: cannot write", path);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* The lemonpc binary the CLI tests run, in LEMONPC_BUILD (make unit sets it)
 * or build/. make unit builds it before any test, so a missing one is a
 * broken build: the test fails naming the path, it does not skip. */
static inline void th_lemonpc(char *path, size_t n) {
    const char *build = getenv("LEMONPC_BUILD");
    snprintf(path, n, "%s/lemonpc", build ? build : "build");
    if (access(path, X_OK) != 0)
        fail_msg("%s: no lemonpc binary there (make builds it; LEMONPC_BUILD names its folder)",
                 path);
}

static inline void th_assert_same_file(const char *a, const char *b) {
    size_t na, nb;
    void *x = th_slurp(a, &na), *y = th_slurp(b, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(x, y, na);
    free(x);
    free(y);
}

/* ---- the trainer tests' toy task ------------------------------------------- */

static inline uint64_t th_rng_next(uint64_t *s) {   /* splitmix64 */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Token roles of the toy chat "language" (ChatML in miniature) of TOY_V
 * tokens. A conversation: START u0 u1 u2 END ASSIST | AYE w END, where the
 * user words u are pseudo-random and the answer word w = W0 + (u0 % 4):
 * the answer is learnable from the prompt. */
enum { TK_START = 0, TK_END = 1, TK_ASSIST = 2, TK_AYE = 3, TK_W0 = 4, TOY_V = 16 };
enum { PROMPT_LEN = 6, CONV_LEN = 9 };

/* A tiny random-model shape for the toy language (const lm_tconfig *). */
#define TH_TOY                                                                                   \
    (&(const lm_tconfig){.n_vocab = TOY_V, .dim = 16, .n_layers = 2, .n_heads = 2,               \
                         .n_kv_heads = 1, .head_dim = 8, .ffn_dim = 32, .rope_base = 10000.0f,   \
                         .rms_eps = 1e-5f, .tied = 1})

/* The prompt START u0 u1 u2 END ASSIST with its words drawn from *s. */
static inline void th_toy_prompt(uint64_t *s, int32_t *p) {
    p[0] = TK_START;
    for (int i = 1; i <= 3; i++) p[i] = TK_W0 + (int32_t)(th_rng_next(s) % (TOY_V - TK_W0));
    p[4] = TK_END;
    p[5] = TK_ASSIST;
}
static inline int32_t th_toy_answer_word(const int32_t *p) { return TK_W0 + p[1] % 4; }
/* A prompt of 1..max_words user words (the count drawn from *s too), for
 * conversations of different lengths; returns its length (words + 3). */
static inline int th_toy_prompt_var(uint64_t *s, int32_t *p, int max_words) {
    int words = 1 + (int)(th_rng_next(s) % (uint64_t)max_words);
    p[0] = TK_START;
    for (int i = 1; i <= words; i++) p[i] = TK_W0 + (int32_t)(th_rng_next(s) % (TOY_V - TK_W0));
    p[words + 1] = TK_END;
    p[words + 2] = TK_ASSIST;
    return words + 3;
}

/* Runs fn(arg) once per training kernel set (train_matmul.c: the default,
 * the portable loops, AVX2), setting LEMONPC_TRAIN_KERNELS for each. */
static inline void th_each_train_kernels(void (*fn)(void *), void *arg) {
    static const char *const kinds[] = {NULL, "generic", "avx2"};
    for (int i = 0; i < 3; i++) {
        if (kinds[i]) setenv("LEMONPC_TRAIN_KERNELS", kinds[i], 1);
        else unsetenv("LEMONPC_TRAIN_KERNELS");
        fn(arg);
    }
    unsetenv("LEMONPC_TRAIN_KERNELS");
}

/* The settings the trainer tests start from, for a run into out: LoRA rank
 * 4 (or full), 3 epochs of batches of 4 at seq 12, 2 threads, seed 5; the
 * caller sets the data (cfg->data or cfg->dpo) and what it varies, then
 * lm_train_cfg_finish. */
static inline void th_train_cfg(lm_train_cfg *c, const char *out, int full) {
    lm_train_cfg_defaults(c);
    strcpy(c->model, "(test)");
    snprintf(c->out, sizeof c->out, "%s", out);
    c->full = full;
    c->lora_rank = 4;
    c->lora_alpha = 8;
    c->lr = full ? 3e-3f : 1e-2f;
    c->epochs = 3;
    c->batch = 4;
    c->seq = 12;
    c->threads = 2;
    c->seed = 5;
}

/* The text of a field over every line of RUN_DIR/metrics.jsonl that has
 * it, joined by spaces; *count lines. */
static inline char *th_metrics_field(const char *dir, const char *name, int *count) {
    char p[600];
    snprintf(p, sizeof p, "%s/metrics.jsonl", dir);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    size_t cap = 1 << 16, len = 0;
    char *out = calloc(cap, 1), line[4096], pat[64];
    assert_non_null(out);
    snprintf(pat, sizeof pat, "\"%s\": ", name);
    *count = 0;
    while (fgets(line, sizeof line, f)) {
        char *s = strstr(line, pat);
        if (!s) continue;
        s += strlen(pat);
        size_t n = strcspn(s, ",}");
        assert_true(len + n + 2 < cap);
        memcpy(out + len, s, n);
        len += n;
        out[len++] = ' ';
        (*count)++;
    }
    fclose(f);
    return out;
}

/* The same as numbers; malloc'd [*count + 1]. */
static inline double *th_metrics_values(const char *dir, const char *name, int *count) {
    char *s = th_metrics_field(dir, name, count);
    double *v = calloc((size_t)*count + 1, sizeof *v);
    assert_non_null(v);
    char *p = s;
    for (int i = 0; i < *count; i++) v[i] = strtod(p, &p);
    free(s);
    return v;
}

/* Two training runs that must agree bit for bit: each metrics.jsonl field
 * in fields (logged at least 3 times, as often in both, the same text) and
 * each file in files (relative to the run folders), byte for byte. Both
 * lists end with NULL. */
static inline void th_assert_runs_equal(const char *a, const char *b, const char *const *fields,
                                        const char *const *files) {
    for (; *fields; fields++) {
        int na, nb;
        char *la = th_metrics_field(a, *fields, &na), *lb = th_metrics_field(b, *fields, &nb);
        if (na < 3) fail_msg("%s/metrics.jsonl: %s logged %d times, want 3 or more", a, *fields, na);
        assert_int_equal(na, nb);
        assert_string_equal(la, lb);
        free(la);
        free(lb);
    }
    for (; *files; files++) {
        char pa[1024], pb[1024];
        snprintf(pa, sizeof pa, "%s/%s", a, *files);
        snprintf(pb, sizeof pb, "%s/%s", b, *files);
        th_assert_same_file(pa, pb);
    }
}

/* ---- loaders' warnings ---------------------------------------------------- */

/* lm_sft_opts.warn's messages, the first 8 kept, all counted. */
typedef struct th_warnings { char msg[8][LM_ERR_MAX]; int n; } th_warnings;

static inline void th_collect(void *ctx, const char *msg) {
    th_warnings *w = ctx;
    if (w->n < 8) snprintf(w->msg[w->n], LM_ERR_MAX, "%s", msg);
    w->n++;
}

/* ---- a byte-level ChatML tokenizer ----------------------------------------- */

/* Ids: the three specials, then one token per byte; with nlnl, one more
 * token "\n\n" (and its merge), so BPE has something to merge. */
enum { T_EOT = 0, T_IMS = 1, T_IME = 2, T_BYTE0 = 3, T_NLNL = 259 };

/* SmolLM2's template shape with a default system turn "Be Brann.". */
#define TH_TEMPLATE_WITH_SYSTEM                                                                     \
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"         \
    "{{ '<|im_start|>system\\nBe Brann.<|im_end|>\\n' }}"                                          \
    "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + " \
    "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"

/* GPT-2's byte -> code point map, from its definition: printable Latin-1
 * bytes map to themselves, the rest to 256, 257, ... in byte order. */
static inline uint32_t th_byte_cp(int b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) return (uint32_t)b;
    int k = 0;
    for (int c = 0; c < b; c++)
        if (!((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174 && c <= 255))) k++;
    return 256u + (uint32_t)k;
}

static inline void th_put_utf8(char *o, uint32_t cp) {
    if (cp < 0x80) { o[0] = (char)cp; o[1] = 0; }
    else { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); o[2] = 0; }
}

/* chat_template NULL: plain ChatML. Fails the test if it cannot be built. */
static inline lm_tokenizer *th_tiny_tokenizer(const char *chat_template, int nlnl) {
    char bytes[256][4];   /* the tokenizer copies its strings */
    const char *tok[T_NLNL + 1];
    int32_t type[T_NLNL + 1];
    tok[T_EOT] = "<|endoftext|>"; tok[T_IMS] = "<|im_start|>"; tok[T_IME] = "<|im_end|>";
    type[0] = type[1] = type[2] = 3;
    for (int b = 0; b < 256; b++) {
        th_put_utf8(bytes[b], th_byte_cp(b));
        tok[T_BYTE0 + b] = bytes[b];
        type[T_BYTE0 + b] = 1;
    }
    char nl[4], pair[8], merge[12];
    th_put_utf8(nl, th_byte_cp('\n'));
    snprintf(pair, sizeof pair, "%s%s", nl, nl);
    snprintf(merge, sizeof merge, "%s %s", nl, nl);
    tok[T_NLNL] = pair;
    type[T_NLNL] = 1;
    const char *merges[1] = {merge};
    lm_tokenizer_spec s = {
        .model = "gpt2", .pre = "smollm", .tokens = tok, .n_tokens = nlnl ? T_NLNL + 1 : T_NLNL,
        .token_types = type, .merges = nlnl ? merges : NULL, .n_merges = nlnl ? 1 : 0,
        .bos = T_IMS, .eos = T_IME, .unk = -1, .pad = T_IME, .chat_template = chat_template,
    };
    lm_err err = {{0}};
    lm_tokenizer *t = lm_tokenizer_new(&s, &err);
    if (!t) fail_msg("tiny tokenizer: %s", err.msg);
    return t;
}

/* Expected token sequences, spelled by hand: mask m on every token. */
typedef struct th_seq { int32_t tok[512]; uint8_t mask[512]; int n; } th_seq;

static inline void th_spell(th_seq *s, const char *text, uint8_t m) {
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        s->tok[s->n] = T_BYTE0 + *p;
        s->mask[s->n++] = m;
    }
}
static inline void th_special(th_seq *s, int32_t id, uint8_t m) {
    s->tok[s->n] = id;
    s->mask[s->n++] = m;
}

/* One ChatML turn: the header and the "\n" after <|im_end|> untrained, the
 * content and <|im_end|> with mask m. */
static inline void th_turn(th_seq *s, const char *role, const char *content, uint8_t m) {
    th_special(s, T_IMS, 0);
    th_spell(s, role, 0);
    th_spell(s, "\n", 0);
    th_spell(s, content, m);
    th_special(s, T_IME, m);
    th_spell(s, "\n", 0);
}

static inline void th_assert_seq(const lm_sft_example *e, const th_seq *want) {
    assert_int_equal(e->n, want->n);
    assert_memory_equal(e->tokens, want->tok, (size_t)want->n * sizeof(int32_t));
    assert_memory_equal(e->mask, want->mask, (size_t)want->n);
    int k = 0;
    for (int i = 1; i < want->n; i++) k += want->mask[i];
    assert_int_equal(e->n_trained, k);
}

#endif
