/* Tokenizer: GPT-2 byte map, UTF-8 clean-up, the smollm/gpt2 pre-tokenizer,
 * BPE merge order on a tiny hand-made vocabulary, special-token partition,
 * decoding, ChatML rendering, loading from GGUF and its errors. Expected
 * results are worked out by hand from the rules (GPT-2 byte map, GPT-2
 * regex, "lowest rank first, leftmost among equals"); parity with
 * llama.cpp on the real model is tests/oracle/test_tokenizer_parity.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "gguf/gguf.h"
#include "tokenizer/internal.h"
#include "tokenizer/tokenizer.h"

/* ---- byte map and UTF-8 ----------------------------------------------- */

static void test_bytemap(void **state) {
    (void)state;
    /* Well-known points of GPT-2's map. */
    assert_int_equal(lm_byte_to_cp(' '), 0x120);   /* Ġ */
    assert_int_equal(lm_byte_to_cp('\n'), 0x10A);  /* Ċ */
    assert_int_equal(lm_byte_to_cp('\t'), 0x109);  /* ĉ */
    assert_int_equal(lm_byte_to_cp(0x00), 0x100);
    assert_int_equal(lm_byte_to_cp(0x7F), 0x121);
    assert_int_equal(lm_byte_to_cp(0xA0), 0x142);
    assert_int_equal(lm_byte_to_cp(0xAD), 0x143);
    assert_int_equal(lm_byte_to_cp('A'), 'A');
    assert_int_equal(lm_byte_to_cp(0xE9), 0xE9);
    /* A bijection from bytes onto 256 code points in [0x21, 0x143]. */
    int seen[0x144] = {0};
    for (int b = 0; b < 256; b++) {
        uint32_t cp = lm_byte_to_cp((uint8_t)b);
        assert_true(cp >= 0x21 && cp <= 0x143);
        assert_int_equal(seen[cp]++, 0);
        assert_int_equal(lm_cp_to_byte(cp), b);
    }
    assert_int_equal(lm_cp_to_byte(' '), -1);
    assert_int_equal(lm_cp_to_byte(0x144), -1);
    assert_int_equal(lm_cp_to_byte(0xAD), -1);
    uint8_t out[8];
    assert_int_equal(lm_bytemap_decode("\xc4\xa0hi\xc4\x8a", 6, out), 4);
    assert_memory_equal(out, " hi\n", 4);
    assert_int_equal(lm_bytemap_decode("a b", 3, out), -1);     /* raw space is not mapped */
    assert_int_equal(lm_bytemap_decode("\xe2\x96\x81", 3, out), -1);
    assert_int_equal(lm_bytemap_decode("\xc4", 1, out), -1);
}

/* ---- pre-tokenizer ------------------------------------------------------- */

/* Pieces of text joined with '|'. */
static void split_is(const char *pre, const char *text, const char *want) {
    lm_err err = {{0}};
    lm_pretok *p = lm_pretok_new(pre, &err);
    assert_non_null(p);
    lm_span *sp = NULL;
    size_t n = 0, cap = 0;
    assert_int_equal(lm_pretok_split(p, text, strlen(text), &sp, &n, &cap, &err), 0);
    char got[512] = "";
    size_t o = 0, covered = 0;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(sp[i].off, covered);   /* pieces tile the text */
        covered += sp[i].len;
        if (i) got[o++] = '|';
        memcpy(got + o, text + sp[i].off, sp[i].len);
        o += sp[i].len;
        got[o] = '\0';
    }
    assert_int_equal(covered, strlen(text));
    if (strcmp(got, want)) fail_msg("%s split of [%s]: got [%s], want [%s]", pre, text, got, want);
    free(sp);
    lm_pretok_free(p);
}

static void test_pretok_smollm(void **state) {
    (void)state;
    split_is("smollm", "Hello world", "Hello| world");
    split_is("smollm", "1234567", "1|2|3|4|5|6|7");
    split_is("smollm", "abc 123", "abc| |1|2|3");
    split_is("smollm", "3.14 and 1,000", "3|.|1|4| and| |1|,|0|0|0");
    split_is("smollm", "x\xc2\xb2 \xc2\xbd", "x|\xc2\xb2| |\xc2\xbd");   /* x² ½: \p{N} includes No */
    split_is("smollm", "he's", "he|'s");
    split_is("smollm", " 's", " '|s");
    split_is("smollm", "I'LL we've", "I|'|LL| we|'ve");                 /* contractions are lowercase only */
    split_is("smollm", "\n\n  ", "\n\n  ");
    split_is("smollm", "\n\n  x", "\n\n | x");
    split_is("smollm", "a\tb", "a|\t|b");
    split_is("smollm", "a   b", "a|  | b");
    split_is("smollm", "trailing   ", "trailing|   ");
    split_is("smollm", "\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd!", "\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd!");
    split_is("smollm", "hi \xf0\x9f\x91\x8d", "hi| \xf0\x9f\x91\x8d");
    split_is("smollm", "l'amico dell'uomo", "l|'|amico| dell|'|uomo");
    split_is("smollm", "caff\xc3\xa8?", "caff\xc3\xa8|?");
    /* U+0085 (NEL) and U+00A0 are White_Space, as in llama.cpp. */
    split_is("smollm", "a\xc2\x85" "b", "a|\xc2\x85|b");
    split_is("smollm", "a\xc2\xa0\xc2\xa0" "b", "a|\xc2\xa0|\xc2\xa0|b");
    split_is("smollm", "int x=1;", "int| x|=|1|;");
}

static void test_pretok_gpt2(void **state) {
    (void)state;
    split_is("gpt2", "1234567", "1234567");
    split_is("gpt2", "abc 123", "abc| 123");
    split_is("gpt2", "Hello world", "Hello| world");
}

static void test_pretok_unknown(void **state) {
    (void)state;
    lm_err err = {{0}};
    assert_null(lm_pretok_new("llama3", &err));
    assert_non_null(strstr(err.msg, "'llama3'"));
}

/* ---- a tiny vocabulary ----------------------------------------------------- */

/* ids 0..5 specials, then one token per byte except 0x04, then merges. */
enum { T_EOT, T_IMS, T_IME, T_TOOL, T_A, T_AB, N_SPECIAL };

static const char *MERGES[] = {
    "a b",            /* 0 */
    "ab c",           /* 1 */
    "\xc4\xa0 a",     /* 2: Ġ a */
    "a a",            /* 3 */
    "x y",            /* 4 */
    "y z",            /* 5 */
    "q r",            /* 6 */
    "p q",            /* 7 */
    "b c",            /* 8 */
};
static const char *MERGED[] = {"ab", "abc", "\xc4\xa0" "a", "aa", "xy", "yz", "qr", "pq", "bc"};
#define N_MERGES (sizeof MERGES / sizeof MERGES[0])

typedef struct vocab {
    char *tok[N_SPECIAL + 256 + N_MERGES];
    int32_t type[N_SPECIAL + 256 + N_MERGES];
    int32_t n;
} vocab;

static void put_utf8(char *o, uint32_t cp) {
    if (cp < 0x80) { o[0] = (char)cp; o[1] = 0; }
    else { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); o[2] = 0; }
}

static void vocab_build(vocab *v) {
    static const char *sp[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool>", "[A]", "[A][B]"};
    static const int32_t sty[] = {3, 3, 3, 4, 3, 3};
    v->n = 0;
    for (int i = 0; i < N_SPECIAL; i++) { v->tok[v->n] = strdup(sp[i]); v->type[v->n++] = sty[i]; }
    for (int b = 0; b < 256; b++) {
        if (b == 0x04) continue;   /* a byte with no token, like SmolLM2's */
        char s[4];
        put_utf8(s, lm_byte_to_cp((uint8_t)b));
        v->tok[v->n] = strdup(s);
        v->type[v->n++] = 1;
    }
    for (size_t i = 0; i < N_MERGES; i++) { v->tok[v->n] = strdup(MERGED[i]); v->type[v->n++] = 1; }
}

static void vocab_free(vocab *v) {
    for (int32_t i = 0; i < v->n; i++) free(v->tok[i]);
}

static const char *SMOL_TEMPLATE =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

static lm_tokenizer_spec tiny_spec(const vocab *v) {
    return (lm_tokenizer_spec){
        .model = "gpt2", .pre = "smollm",
        .tokens = (const char *const *)v->tok, .n_tokens = v->n, .token_types = v->type,
        .merges = MERGES, .n_merges = (int32_t)N_MERGES,
        .bos = T_IMS, .eos = T_IME, .unk = T_EOT, .pad = T_IME,
        .chat_template = SMOL_TEMPLATE,
    };
}

typedef struct fixture { vocab v; lm_tokenizer *t; } fixture;

static int setup(void **state) {
    fixture *fx = calloc(1, sizeof *fx);
    vocab_build(&fx->v);
    lm_tokenizer_spec s = tiny_spec(&fx->v);
    lm_err err = {{0}};
    fx->t = lm_tokenizer_new(&s, &err);
    if (!fx->t) { fprintf(stderr, "%s\n", err.msg); return -1; }
    *state = fx;
    return 0;
}

static int teardown(void **state) {
    fixture *fx = *state;
    lm_tokenizer_free(fx->t);
    vocab_free(&fx->v);
    free(fx);
    return 0;
}

static int32_t id(const lm_tokenizer *t, const char *mapped) {
    int32_t i = lm_tokenizer_find(t, mapped);
    if (i < 0) fail_msg("no token '%s'", mapped);
    return i;
}

/* Tokenizes text and compares with the ids of the given mapped token texts
 * (NULL-terminated list; "#n" stands for id n). */
static void tok_is(const lm_tokenizer *t, const char *text, size_t len, bool special, ...) {
    int32_t want[64];
    size_t nw = 0;
    va_list ap;
    va_start(ap, special);
    for (const char *s; (s = va_arg(ap, const char *));)
        want[nw++] = s[0] == '#' ? atoi(s + 1) : id(t, s);
    va_end(ap);
    int32_t *ids;
    size_t n;
    lm_err err = {{0}};
    assert_int_equal(lm_tokenize(t, text, len, special, &ids, &n, &err), 0);
    if (n != nw || memcmp(ids, want, n * sizeof *ids)) {
        char g[512] = "", w[512] = "";
        for (size_t i = 0; i < n; i++) snprintf(g + strlen(g), sizeof g - strlen(g), " %d", ids[i]);
        for (size_t i = 0; i < nw; i++) snprintf(w + strlen(w), sizeof w - strlen(w), " %d", want[i]);
        free(ids);
        fail_msg("tokenize [%.*s]: got%s, want%s", (int)len, text, g, w);
    }
    free(ids);
}
#define TOK(t, text, special, ...) tok_is(t, text, strlen(text), special, __VA_ARGS__, NULL)

static void test_bpe_merge_order(void **state) {
    const lm_tokenizer *t = ((fixture *)*state)->t;
    TOK(t, "abc", true, "abc");
    TOK(t, "ab", true, "ab");
    /* (a,b) has rank 0 and goes before (Ġ,a) rank 2: Ġa never forms. */
    TOK(t, " abc", true, "\xc4\xa0", "abc");
    TOK(t, " a", true, "\xc4\xa0" "a");
    /* Equal ranks: leftmost first. */
    TOK(t, "aaa", true, "aa", "a");
    TOK(t, "aaaa", true, "aa", "aa");
    /* Lower rank wins over position: (q,r)=6 before (p,q)=7. */
    TOK(t, "pqr", true, "p", "qr");
    TOK(t, "xyz", true, "xy", "z");
    /* Bytes outside the merges stay single. */
    TOK(t, "cab", true, "c", "ab");
    TOK(t, "\n", true, "\xc4\x8a");
}

static void test_bpe_edges(void **state) {
    const lm_tokenizer *t = ((fixture *)*state)->t;
    int32_t *ids;
    size_t n;
    lm_err err = {{0}};
    assert_int_equal(lm_tokenize(t, "", 0, true, &ids, &n, &err), 0);
    assert_int_equal(n, 0);
    assert_non_null(ids);
    free(ids);
    /* Byte 0x04 has no token: dropped (llama.cpp does the same). */
    TOK(t, "a\x04" "b", true, "a", "b");
    /* Invalid UTF-8 becomes U+FFFD = EF BF BD, one per bad byte. */
    TOK(t, "a\xff", true, "a", "\xc3\xaf", "\xc2\xbf", "\xc2\xbd");
    /* Digits one by one. */
    TOK(t, "12", true, "1", "2");
    /* NUL is an ordinary byte. */
    tok_is(t, "a\0", 2, true, "a", "\xc4\x80", NULL);
}

static void test_specials(void **state) {
    const lm_tokenizer *t = ((fixture *)*state)->t;
    TOK(t, "x<|im_start|>ab", true, "x", "#1", "ab");
    TOK(t, "<|im_end|><|im_end|>", true, "#2", "#2");
    /* Without parse_special the control text is ordinary text... */
    TOK(t, "<|im_end|>", false, "<", "|", "i", "m", "_", "e", "n", "d", "|", ">");
    /* ...but user-defined tokens are still split out. */
    TOK(t, "a<tool>b", false, "a", "#3", "b");
    TOK(t, "a<tool>b", true, "a", "#3", "b");
    /* Longest special first: "[A][B]" (6 bytes) before "[A]". */
    TOK(t, "[A][B][A]", true, "#5", "#4");
    TOK(t, "[A][A][B]", true, "#4", "#5");
    /* Broken special texts are text. */
    TOK(t, "<|im_start|", true, "<", "|", "i", "m", "_", "s", "t", "a", "r", "t", "|");
}

static void test_special_queries(void **state) {
    const lm_tokenizer *t = ((fixture *)*state)->t;
    assert_int_equal(lm_tokenizer_n_vocab(t), N_SPECIAL + 255 + (int)N_MERGES);
    assert_int_equal(lm_tokenizer_bos(t), T_IMS);
    assert_int_equal(lm_tokenizer_eos(t), T_IME);
    assert_int_equal(lm_tokenizer_find(t, "<|im_end|>"), T_IME);
    assert_int_equal(lm_tokenizer_find(t, "nope"), -1);
    assert_true(lm_tokenizer_is_control(t, T_IME));
    assert_false(lm_tokenizer_is_control(t, T_TOOL));
    assert_false(lm_tokenizer_is_control(t, id(t, "ab")));
    assert_false(lm_tokenizer_is_control(t, -1));
    assert_false(lm_tokenizer_is_control(t, 1 << 20));
}

static void test_decode(void **state) {
    const lm_tokenizer *t = ((fixture *)*state)->t;
    int32_t ids[] = {T_IMS, id(t, "\xc4\xa0"), id(t, "abc"), id(t, "\xc4\x8a"), T_TOOL, T_IME};
    lm_err err = {{0}};
    char *s = lm_detokenize(t, ids, 6, false, &err);
    assert_string_equal(s, " abc\n<tool>");
    free(s);
    s = lm_detokenize(t, ids, 6, true, &err);
    assert_string_equal(s, "<|im_start|> abc\n<tool><|im_end|>");
    free(s);
    char buf[2];
    assert_int_equal(lm_token_bytes(t, id(t, "abc"), false, buf, sizeof buf), 3);
    assert_memory_equal(buf, "ab", 2);
    assert_int_equal(lm_token_bytes(t, T_IME, false, buf, sizeof buf), 0);
    assert_int_equal(lm_token_bytes(t, T_IME, true, NULL, 0), 10);
    assert_int_equal(lm_token_bytes(t, -1, true, buf, sizeof buf), -1);
    assert_int_equal(lm_token_bytes(t, 100000, true, buf, sizeof buf), -1);
    int32_t bad[] = {id(t, "a"), 99999};
    assert_null(lm_detokenize(t, bad, 2, false, &err));
    assert_non_null(strstr(err.msg, "99999"));
    assert_non_null(strstr(err.msg, "position 1"));
    /* NUL bytes survive with the length-returning variant. */
    int32_t nul[] = {id(t, "a"), id(t, "\xc4\x80"), id(t, "b")};
    size_t len;
    s = lm_detokenize_n(t, nul, 3, false, &len, &err);
    assert_int_equal(len, 3);
    assert_memory_equal(s, "a\0b", 3);
    free(s);
}

static void round_trip(const lm_tokenizer *t, const char *text, size_t len, bool special) {
    int32_t *ids;
    size_t n, dl;
    lm_err err = {{0}};
    assert_int_equal(lm_tokenize(t, text, len, special, &ids, &n, &err), 0);
    char *d = lm_detokenize_n(t, ids, n, true, &dl, &err);
    assert_non_null(d);
    assert_int_equal(dl, len);
    assert_memory_equal(d, text, len);
    free(d);
    free(ids);
}

static void test_round_trip(void **state) {
    const lm_tokenizer *t = ((fixture *)*state)->t;
    const char *cases[] = {
        "Hello, world!", "l'amico dell'uomo \xc3\xa8 qui", " \n\n\t  x  ", "1234567 3.14 1,000",
        "<|im_start|>user\nabc<|im_end|>\n", "\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd \xe4\xbd\xa0\xe5\xa5\xbd",
        "pqrxyzaaaa", "[A][B][A]<tool>",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        round_trip(t, cases[i], strlen(cases[i]), true);
        round_trip(t, cases[i], strlen(cases[i]), false);
    }
}

/* ---- chat template ----------------------------------------------------------- */

static void test_chat(void **state) {
    const lm_tokenizer *t = ((fixture *)*state)->t;
    lm_err err = {{0}};
    lm_chat_msg user_only[] = {{"user", "Hi"}};
    char *s = lm_chat_render(t, user_only, 1, true, &err);
    assert_string_equal(s,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    free(s);
    lm_chat_msg with_sys[] = {{"system", "You are Aldric."}, {"user", "Who?"}, {"assistant", "A knight."}};
    s = lm_chat_render(t, with_sys, 3, false, &err);
    assert_string_equal(s,
        "<|im_start|>system\nYou are Aldric.<|im_end|>\n<|im_start|>user\nWho?<|im_end|>\n"
        "<|im_start|>assistant\nA knight.<|im_end|>\n");
    free(s);
    s = lm_chat_render(t, NULL, 0, true, &err);
    assert_string_equal(s, "<|im_start|>assistant\n");
    free(s);
    lm_chat_msg no_content[] = {{"user", NULL}};
    assert_null(lm_chat_render(t, no_content, 1, true, &err));
    assert_non_null(strstr(err.msg, "message 0"));
    /* The rendered prompt tokenizes into control tokens around the turns. */
    s = lm_chat_render(t, with_sys, 1, false, &err);
    int32_t *ids;
    size_t n;
    assert_int_equal(lm_tokenize(t, s, strlen(s), true, &ids, &n, &err), 0);
    assert_int_equal(ids[0], T_IMS);
    assert_int_equal(ids[n - 2], T_IME);
    free(ids);
    free(s);
}

static void test_chat_other_templates(void **state) {
    vocab *v = &((fixture *)*state)->v;
    lm_tokenizer_spec s = tiny_spec(v);
    lm_err err = {{0}};
    lm_chat_msg m[] = {{"user", "Hi"}};
    /* No template: plain ChatML, nothing injected. */
    s.chat_template = NULL;
    lm_tokenizer *t = lm_tokenizer_new(&s, &err);
    char *r = lm_chat_render(t, m, 1, false, &err);
    assert_string_equal(r, "<|im_start|>user\nHi<|im_end|>\n");
    free(r);
    lm_tokenizer_free(t);
    /* A ChatML template with an escaped newline and its own default. */
    s.chat_template = "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nBe brief.<|im_end|>\\n' }}"
                      "{% endif %}...<|im_start|>...<|im_end|>";
    t = lm_tokenizer_new(&s, &err);
    r = lm_chat_render(t, m, 1, false, &err);
    assert_string_equal(r, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
    free(r);
    lm_tokenizer_free(t);
    /* Not ChatML: refused when rendering. */
    s.chat_template = "{% for m in messages %}[INST] {{ m.content }} [/INST]{% endfor %}";
    t = lm_tokenizer_new(&s, &err);
    assert_non_null(t);
    assert_null(lm_chat_render(t, m, 1, false, &err));
    assert_non_null(strstr(err.msg, "ChatML"));
    lm_tokenizer_free(t);
}

/* ---- construction errors --------------------------------------------------- */

static void new_fails(lm_tokenizer_spec s, const char *needle) {
    lm_err err = {{0}};
    lm_tokenizer *t = lm_tokenizer_new(&s, &err);
    if (t) { lm_tokenizer_free(t); fail_msg("expected failure mentioning '%s'", needle); }
    if (!strstr(err.msg, needle)) fail_msg("error '%s' does not mention '%s'", err.msg, needle);
}

static void test_new_errors(void **state) {
    vocab *v = &((fixture *)*state)->v;
    lm_tokenizer_spec s = tiny_spec(v);
    s.pre = "llama3"; new_fails(s, "'llama3'");
    s = tiny_spec(v); s.pre = NULL; new_fails(s, "tokenizer.ggml.pre");
    s = tiny_spec(v); s.model = "llama"; new_fails(s, "'llama'");
    s = tiny_spec(v); s.n_tokens = 0; new_fails(s, "tokens");
    static const char *bad_merges[] = {"a b", "ab"};
    s = tiny_spec(v); s.merges = bad_merges; s.n_merges = 2; new_fails(s, "merges[1]");
    s = tiny_spec(v); s.eos = 1 << 20; new_fails(s, "eos_token_id");
    int32_t types[N_SPECIAL + 256 + N_MERGES];
    memcpy(types, v->type, sizeof types);
    types[7] = 9;
    s = tiny_spec(v); s.token_types = types; new_fails(s, "token_type[7]");
}

/* ---- from GGUF --------------------------------------------------------------- */

static char *write_gguf(const vocab *v, const char *model, const char *pre, bool with_merges) {
    lm_err err = {{0}};
    gguf_writer *w = gguf_writer_new();
    assert_non_null(w);
    assert_int_equal(gguf_set_str(w, "general.architecture", "llama", &err), 0);
    if (model) assert_int_equal(gguf_set_str(w, "tokenizer.ggml.model", model, &err), 0);
    if (pre) assert_int_equal(gguf_set_str(w, "tokenizer.ggml.pre", pre, &err), 0);
    assert_int_equal(gguf_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v->tok, (uint64_t)v->n, &err), 0);
    assert_int_equal(gguf_set_arr(w, "tokenizer.ggml.token_type", GGUF_I32, v->type, (uint64_t)v->n, &err), 0);
    if (with_merges) assert_int_equal(gguf_set_arr_str(w, "tokenizer.ggml.merges", MERGES, N_MERGES, &err), 0);
    assert_int_equal(gguf_set_u32(w, "tokenizer.ggml.bos_token_id", T_IMS, &err), 0);
    assert_int_equal(gguf_set_u32(w, "tokenizer.ggml.eos_token_id", T_IME, &err), 0);
    assert_int_equal(gguf_set_u32(w, "tokenizer.ggml.padding_token_id", T_IME, &err), 0);
    assert_int_equal(gguf_set_i32(w, "tokenizer.ggml.unknown_token_id", -1, &err), 0);  /* = none */
    assert_int_equal(gguf_set_str(w, "tokenizer.chat_template", SMOL_TEMPLATE, &err), 0);
    char *path = strdup("/tmp/lm_test_tokenizer_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    if (gguf_write(w, path, &err)) fail_msg("%s", err.msg);
    gguf_writer_free(w);
    return path;
}

static lm_tokenizer *load_path(const char *path, lm_err *err) {
    gguf_file *f = gguf_open(path, err);
    if (!f) fail_msg("%s", err->msg);
    lm_tokenizer *t = lm_tokenizer_load(f, err);
    gguf_close(f);   /* the tokenizer must not point into the file */
    return t;
}

static void test_gguf_load(void **state) {
    vocab *v = &((fixture *)*state)->v;
    char *path = write_gguf(v, "gpt2", "smollm", true);
    lm_err err = {{0}};
    lm_tokenizer *t = load_path(path, &err);
    if (!t) fail_msg("%s", err.msg);
    TOK(t, " abc<|im_end|>", true, "\xc4\xa0", "abc", "#2");
    assert_int_equal(lm_tokenizer_eos(t), T_IME);
    lm_chat_msg m[] = {{"user", "Hi"}};
    char *r = lm_chat_render(t, m, 1, false, &err);
    assert_non_null(strstr(r, "named SmolLM"));
    free(r);
    lm_tokenizer_free(t);
    unlink(path);
    free(path);
}

static void load_fails(const vocab *v, const char *model, const char *pre, bool merges, const char *needle) {
    char *path = write_gguf(v, model, pre, merges);
    lm_err err = {{0}};
    lm_tokenizer *t = load_path(path, &err);
    if (t) { lm_tokenizer_free(t); fail_msg("expected failure mentioning '%s'", needle); }
    if (!strstr(err.msg, needle)) fail_msg("error '%s' does not mention '%s'", err.msg, needle);
    if (!strstr(err.msg, path)) fail_msg("error '%s' does not name the file", err.msg);
    unlink(path);
    free(path);
}

static void test_gguf_errors(void **state) {
    vocab *v = &((fixture *)*state)->v;
    load_fails(v, "gpt2", "smollm", false, "tokenizer.ggml.merges");
    load_fails(v, "gpt2", "qwen2", true, "'qwen2'");
    load_fails(v, "gpt2", NULL, true, "tokenizer.ggml.pre");
    load_fails(v, "llama", "smollm", true, "'llama'");
    load_fails(v, NULL, "smollm", true, "tokenizer.ggml.model");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bytemap),
        cmocka_unit_test(test_pretok_smollm),
        cmocka_unit_test(test_pretok_gpt2),
        cmocka_unit_test(test_pretok_unknown),
        cmocka_unit_test_setup_teardown(test_bpe_merge_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bpe_edges, setup, teardown),
        cmocka_unit_test_setup_teardown(test_specials, setup, teardown),
        cmocka_unit_test_setup_teardown(test_special_queries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decode, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chat, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chat_other_templates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_new_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gguf_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gguf_errors, setup, teardown),
    };
    return cmocka_run_group_tests_name("tokenizer", tests, NULL, NULL);
}
