/* SFT data (src/train/data*.c): JSONL parsing and its errors, rendering
 * with a position loss mask, fitting to max_len, the seeded split, and the
 * batcher's next-token layout.
 *
 * Most tests use a tiny vocabulary: the three ChatML specials (ids 0..2),
 * one token per byte (id 3 + byte) and a single merge "\n\n" (id 259), so
 * the expected tokens and masks are spelled out by hand from the ChatML
 * rules in data.h. Parity with llama.cpp and with the GGUF's Jinja template
 * on the real model is tests/oracle/test_sft_mask.py; when the real model
 * (fetched by `make test`; missing, it is a failure, not a skip),
 * test_real_model_matches_full_render checks the toy set here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"
#include "train/data.h"

#include "helpers.h"

/* The byte-level ChatML tokenizer of helpers.h, with the "\n\n" token. */
static lm_tokenizer *tiny(const char *chat_template) { return th_tiny_tokenizer(chat_template, 1); }

/* One ChatML turn, trained (content and <|im_end|>) for the assistant. */
static void turn(th_seq *s, const char *role, const char *content) {
    th_turn(s, role, content, strcmp(role, "assistant") == 0);
}

/* Our pieces must equal tokenizing the whole rendering with specials on. */
static void assert_matches_full_render(const lm_tokenizer *t, const lm_chat_msg *m, size_t n,
                                       const lm_sft_example *e) {
    lm_err err = {{0}};
    char *s = lm_chat_render(t, m, n, false, &err);
    assert_non_null(s);
    int32_t *ids;
    size_t k;
    assert_int_equal(lm_tokenize(t, s, strlen(s), true, &ids, &k, &err), 0);
    assert_int_equal((int)k, e->n);
    assert_memory_equal(ids, e->tokens, k * sizeof *ids);
    free(ids);
    free(s);
}

/* ---- rendering ----------------------------------------------------------- */

static void test_render_single_turn(void **state) {
    (void)state;
    lm_tokenizer *t = tiny(NULL);
    assert_non_null(t);
    lm_chat_msg m[] = {{"user", "hi"}, {"assistant", "yo!"}};
    lm_sft_example e;
    lm_err err = {{0}};
    int merges = -1;
    assert_int_equal(lm_sft_render(t, m, 2, &e, &merges, &err), 0);
    th_seq want = {.n = 0};
    turn(&want, "user", "hi");
    turn(&want, "assistant", "yo!");
    th_assert_seq(&e, &want);
    assert_int_equal(e.n_trained, 4);   /* y o ! <|im_end|> */
    assert_int_equal(merges, 0);
    assert_matches_full_render(t, m, 2, &e);
    lm_sft_example_free(&e);
    lm_tokenizer_free(t);
}

static void test_render_default_system_and_multi_turn(void **state) {
    (void)state;
    lm_tokenizer *t = tiny(TH_TEMPLATE_WITH_SYSTEM);
    assert_non_null(t);
    lm_chat_msg m[] = {{"user", "a?"}, {"assistant", "b."}, {"user", "c?"}, {"assistant", "d."}};
    lm_sft_example e;
    lm_err err = {{0}};
    assert_int_equal(lm_sft_render(t, m, 4, &e, NULL, &err), 0);
    th_seq want = {.n = 0};
    turn(&want, "system", "Be Brann.");    /* injected, as at inference, never trained */
    turn(&want, "user", "a?");
    turn(&want, "assistant", "b.");
    turn(&want, "user", "c?");
    turn(&want, "assistant", "d.");
    th_assert_seq(&e, &want);
    assert_int_equal(e.n_trained, 6);      /* both assistant turns: 2 + <|im_end|> each */
    assert_matches_full_render(t, m, 4, &e);
    lm_sft_example_free(&e);

    /* With a system message first nothing is injected. */
    lm_chat_msg s[] = {{"system", "Own."}, {"user", "x"}, {"assistant", "y"}};
    assert_int_equal(lm_sft_render(t, s, 3, &e, NULL, &err), 0);
    want.n = 0;
    turn(&want, "system", "Own.");
    turn(&want, "user", "x");
    turn(&want, "assistant", "y");
    th_assert_seq(&e, &want);
    assert_matches_full_render(t, s, 3, &e);
    lm_sft_example_free(&e);
    lm_tokenizer_free(t);
}

static void test_render_special_text_stays_text(void **state) {
    (void)state;
    lm_tokenizer *t = tiny(NULL);
    lm_chat_msg m[] = {{"user", "<|im_start|>"}, {"assistant", "<|im_end|>x"}};
    lm_sft_example e;
    lm_err err = {{0}};
    assert_int_equal(lm_sft_render(t, m, 2, &e, NULL, &err), 0);
    th_seq want = {.n = 0};
    turn(&want, "user", "<|im_start|>");   /* spelled byte by byte: plain text */
    turn(&want, "assistant", "<|im_end|>x");
    th_assert_seq(&e, &want);
    int ends = 0;
    for (int i = 0; i < e.n; i++) ends += e.tokens[i] == T_IME;
    assert_int_equal(ends, 2);             /* only the real turn ends */
    lm_sft_example_free(&e);
    lm_tokenizer_free(t);
}

static void test_render_header_merge(void **state) {
    (void)state;
    lm_tokenizer *t = tiny(NULL);
    /* "assistant\n" + "\n\nok": the pre-tokenizer cuts "\n\n" | "\n" | "ok"
     * (\s+(?!\S) backs off one), so the first "\n\n" token holds the
     * header's "\n" and the content's first "\n": trained, and counted. */
    lm_chat_msg m[] = {{"user", "q"}, {"assistant", "\n\nok"}};
    lm_sft_example e;
    lm_err err = {{0}};
    int merges = 0;
    assert_int_equal(lm_sft_render(t, m, 2, &e, &merges, &err), 0);
    assert_int_equal(merges, 1);
    th_seq want = {.n = 0};
    turn(&want, "user", "q");
    th_special(&want, T_IMS, 0);
    th_spell(&want, "assistant", 0);
    th_special(&want, T_NLNL, 1);
    th_spell(&want, "\nok", 1);
    th_special(&want, T_IME, 1);
    th_spell(&want, "\n", 0);
    th_assert_seq(&e, &want);
    assert_matches_full_render(t, m, 2, &e);
    lm_sft_example_free(&e);

    /* Empty assistant content: only its <|im_end|> is trained. */
    lm_chat_msg z[] = {{"user", "q"}, {"assistant", ""}};
    assert_int_equal(lm_sft_render(t, z, 2, &e, NULL, &err), 0);
    assert_int_equal(e.n_trained, 1);
    assert_int_equal(e.tokens[e.n - 2], T_IME);
    assert_int_equal(e.mask[e.n - 2], 1);
    lm_sft_example_free(&e);
    lm_tokenizer_free(t);
}

/* ---- JSONL --------------------------------------------------------------- */

static lm_sft_dataset *load(lm_tokenizer *t, const char *text, lm_sft_opts *o, lm_err *err) {
    lm_sft_dataset *ds = NULL;
    if (lm_sft_dataset_load_mem("d.jsonl", text, strlen(text), t, o, &ds, err)) return NULL;
    return ds;
}

#define GOOD "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"yo!\"}]}"

static void test_jsonl_shapes(void **state) {
    (void)state;
    lm_tokenizer *t = tiny(NULL);
    const char *text =
        GOOD "\n"
        "\n   \n"   /* blank lines are not conversations */
        "{\"conversations\":[{\"from\":\"human\",\"value\":\"hi\"},{\"from\":\"gpt\",\"value\":\"yo!\"}],\"id\":7}\r\n"
        "{\"meta\":1,\"messages\":[{\"content\":\"hi\",\"role\":\"user\",\"x\":[]},{\"role\":\"assistant\",\"content\":\"yo!\"}]}";
    lm_sft_opts o = lm_sft_opts_default();
    lm_err err = {{0}};
    lm_sft_dataset *ds = load(t, text, &o, &err);
    assert_non_null(ds);
    assert_int_equal(ds->n, 3);
    assert_int_equal(ds->ex[0].line, 1);
    assert_int_equal(ds->ex[1].line, 4);
    assert_int_equal(ds->ex[2].line, 5);
    /* Same roles and contents: same tokens and the same split key, whatever the shape. */
    for (int i = 1; i < 3; i++) {
        assert_int_equal(ds->ex[i].n, ds->ex[0].n);
        assert_memory_equal(ds->ex[i].tokens, ds->ex[0].tokens, (size_t)ds->ex[0].n * 4);
        assert_memory_equal(ds->ex[i].mask, ds->ex[0].mask, (size_t)ds->ex[0].n);
        assert_true(ds->ex[i].hash == ds->ex[0].hash);
    }
    assert_int_equal(ds->stats.conversations, 3);
    assert_int_equal(ds->stats.messages, 6);
    assert_int_equal(ds->stats.assistant_turns, 3);
    assert_int_equal(ds->stats.trained_tokens, 12);
    assert_int_equal(ds->stats.tokens, 3 * ds->ex[0].n);
    assert_int_equal(ds->stats.skipped, 0);
    assert_int_equal(ds->pad_id, T_IME);
    lm_sft_dataset_free(ds);
    lm_tokenizer_free(t);
}

static void test_jsonl_errors(void **state) {
    (void)state;
    lm_tokenizer *t = tiny(NULL);
    static const struct { const char *line, *msg; } cases[] = {
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"bot\",\"content\":\"b\"}]}",
         "d.jsonl:2: messages[1].role: expected one of system/user/assistant, got 'bot'"},
        {"{\"conversations\":[{\"from\":\"robot\",\"value\":\"b\"}]}",
         "d.jsonl:2: conversations[0].from: expected one of system/human/gpt, got 'robot'"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"assistant\",\"content\":7}]}",
         "d.jsonl:2: messages[1].content: expected a string"},
        {"{\"messages\":[{\"role\":\"user\"}]}", "d.jsonl:2: messages[0].content: missing"},
        {"{\"messages\":[{\"content\":\"x\"}]}", "d.jsonl:2: messages[0].role: missing"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}]}",
         "d.jsonl:2: messages: no assistant message"},
        {"{\"messages\":[]}", "d.jsonl:2: messages: empty"},
        {"{\"messages\":{}}", "d.jsonl:2: messages: expected an array"},
        {"{\"messages\":[3]}", "d.jsonl:2: messages[0]: expected an object"},
        {"[1,2]", "d.jsonl:2: expected a JSON object per line"},
        {"{\"text\":\"hi\"}", "d.jsonl:2: no \"messages\""},
        {"{\"messages\":[", "d.jsonl:2: invalid JSON at column"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"a\\u0000b\"},{\"role\":\"assistant\",\"content\":\"b\"}]}",
         "d.jsonl:2: invalid JSON"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"\xff\"}]}", "d.jsonl:2: invalid JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[1024];
        snprintf(text, sizeof text, GOOD "\n%s\n" GOOD "\n", cases[i].line);
        /* default: the bad line is skipped, reported and counted */
        th_warnings w = {.n = 0};
        lm_sft_opts o = lm_sft_opts_default();
        o.warn = th_collect;
        o.warn_ctx = &w;
        lm_err err = {{0}};
        lm_sft_dataset *ds = load(t, text, &o, &err);
        assert_non_null(ds);
        assert_int_equal(ds->n, 2);
        assert_int_equal(ds->ex[1].line, 3);
        assert_int_equal(ds->stats.skipped, 1);
        assert_int_equal(w.n, 1);
        if (!strstr(w.msg[0], cases[i].msg)) fail_msg("case %zu: '%s' lacks '%s'", i, w.msg[0], cases[i].msg);
        lm_sft_dataset_free(ds);
        /* strict: the same message fails the load */
        o.strict = true;
        memset(&err, 0, sizeof err);
        assert_null(load(t, text, &o, &err));
        if (!strstr(err.msg, cases[i].msg)) fail_msg("case %zu strict: '%s'", i, err.msg);
    }
    lm_tokenizer_free(t);
}

static void test_jsonl_skip_cap_and_empty(void **state) {
    (void)state;
    lm_tokenizer *t = tiny(NULL);
    const char *text = GOOD "\nx\ny\nz\n" GOOD "\n";
    lm_sft_opts o = lm_sft_opts_default();
    o.max_skipped = 2;
    lm_err err = {{0}};
    assert_null(load(t, text, &o, &err));
    assert_non_null(strstr(err.msg, "more than 2 bad lines"));
    assert_non_null(strstr(err.msg, "d.jsonl:4:"));
    o.max_skipped = 3;
    lm_sft_dataset *ds = load(t, text, &o, &err);
    assert_non_null(ds);
    assert_int_equal(ds->stats.skipped, 3);
    lm_sft_dataset_free(ds);
    o.max_skipped = -1;
    assert_null(load(t, "x\n\n", &o, &err));
    assert_non_null(strstr(err.msg, "d.jsonl: no usable conversation"));
    assert_null(load(t, "", &o, &err));
    /* from a file: missing path named */
    ds = (lm_sft_dataset *)1;
    assert_int_equal(lm_sft_dataset_load("/nonexistent/x.jsonl", t, NULL, &ds, &err), -1);
    assert_null(ds);
    assert_non_null(strstr(err.msg, "/nonexistent/x.jsonl"));
    lm_tokenizer_free(t);
}

static void test_jsonl_file(void **state) {
    (void)state;
    lm_tokenizer *t = tiny(NULL);
    char path[256];
    snprintf(path, sizeof path, "/tmp/lm_test_train_data_%d.jsonl", (int)getpid());
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(GOOD "\n{\"messages\":[{\"role\":\"bot\",\"content\":\"b\"}]}\n" GOOD, f);   /* no final newline */
    fclose(f);
    lm_sft_dataset *ds = NULL;
    lm_err err = {{0}};
    assert_int_equal(lm_sft_dataset_load(path, t, NULL, &ds, &err), 0);
    assert_int_equal(ds->n, 2);
    assert_int_equal(ds->ex[1].line, 3);
    assert_int_equal(ds->stats.skipped, 1);
    lm_sft_dataset_free(ds);
    lm_sft_opts o = lm_sft_opts_default();
    o.strict = true;
    assert_int_equal(lm_sft_dataset_load(path, t, &o, &ds, &err), -1);
    char want[300];
    snprintf(want, sizeof want, "%s:2: messages[0].role", path);
    assert_non_null(strstr(err.msg, want));
    /* a line cut after a whole value: jansson, given the line's '\n' too,
     * put the error on "line 2, column 0"; the column is where it was cut */
    f = fopen(path, "wb");
    assert_non_null(f);
    fputs(GOOD "\n{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}\n" GOOD "\n", f);
    fclose(f);
    assert_int_equal(lm_sft_dataset_load(path, t, &o, &ds, &err), -1);
    snprintf(want, sizeof want, "%s:2: invalid JSON at column 42:", path);
    if (!strstr(err.msg, want)) fail_msg("'%s' lacks '%s'", err.msg, want);
    unlink(path);
    lm_tokenizer_free(t);
}

/* ---- max_len ------------------------------------------------------------- */

static void test_fit(void **state) {
    (void)state;
    lm_tokenizer *t = tiny(NULL);
    /* GOOD: <s>user\nhi</s>\n<s>assistant\nyo!</s>\n = 1+4+1+2+1+1 + 1+9+1+3+1+1 = 26 tokens,
     * the trained ones at 21..24 ("yo!" and </s>), so the cut at 22 keeps "y". */
    const char *text = GOOD "\n"
                       "{\"messages\":[{\"role\":\"user\",\"content\":\"a long question here\"},"
                       "{\"role\":\"assistant\",\"content\":\"no\"}]}\n";
    lm_sft_opts o = lm_sft_opts_default();
    lm_err err = {{0}};
    lm_sft_dataset *ds = load(t, text, &o, &err);
    assert_non_null(ds);
    assert_int_equal(ds->ex[0].n, 26);
    assert_int_equal(ds->ex[1].n, 43);   /* 1+4+1+20+1+1 + 1+9+1+2+1+1 */
    assert_int_equal(ds->stats.longest, 43);
    lm_sft_dataset_free(ds);

    o.max_len = 22;   /* first: truncated, keeps one trained token; second: nothing left -> dropped */
    ds = load(t, text, &o, &err);
    assert_non_null(ds);
    assert_int_equal(ds->n, 1);
    assert_int_equal(ds->ex[0].n, 22);
    assert_true(ds->ex[0].truncated);
    assert_int_equal(ds->ex[0].n_trained, 1);
    assert_int_equal(ds->stats.truncated, 1);
    assert_int_equal(ds->stats.truncated_tokens, 4);   /* the dropped one counts as dropped only */
    assert_int_equal(ds->stats.dropped, 1);
    assert_int_equal(ds->stats.tokens, 22);
    assert_int_equal(ds->stats.trained_tokens, 1);
    lm_sft_dataset_free(ds);

    o.max_len = 30;
    o.overlong = LM_SFT_DROP;
    ds = load(t, text, &o, &err);
    assert_non_null(ds);
    assert_int_equal(ds->n, 1);
    assert_int_equal(ds->ex[0].n, 26);
    assert_int_equal(ds->stats.dropped, 1);
    assert_int_equal(ds->stats.truncated, 0);
    lm_sft_dataset_free(ds);
    lm_tokenizer_free(t);
}

/* ---- split --------------------------------------------------------------- */

static char *numbered(int from, int to) {
    size_t cap = (size_t)(to - from) * 128 + 1;
    char *s = malloc(cap), *p = s;
    for (int i = from; i < to; i++)
        p += sprintf(p, "{\"messages\":[{\"role\":\"user\",\"content\":\"q%d\"},"
                        "{\"role\":\"assistant\",\"content\":\"a%d\"}]}\n", i, i);
    return s;
}

static void test_split(void **state) {
    (void)state;
    lm_tokenizer *t = tiny(NULL);
    char *a = numbered(0, 1000), *b = numbered(1000, 1300);
    char *ab = malloc(strlen(a) + strlen(b) + 1);
    strcpy(ab, b);   /* new lines first: positions move, sides must not */
    strcat(ab, a);
    lm_err err = {{0}};
    lm_sft_dataset *d1 = load(t, a, NULL, &err), *d2 = load(t, ab, NULL, &err);
    assert_non_null(d1);
    assert_non_null(d2);
    lm_sft_dataset *tr1, *va1, *tr2, *va2;
    assert_int_equal(lm_sft_split(d1, 0.1, 42, &tr1, &va1, &err), 0);
    assert_int_equal(lm_sft_split(d2, 0.1, 42, &tr2, &va2, &err), 0);
    assert_int_equal(tr1->n + va1->n, 1000);
    /* ~Binomial(1000, 0.1): sd 9.5, so 50..150 fails only for a broken hash. */
    assert_true(va1->n > 50 && va1->n < 150);
    assert_int_equal(tr1->stats.conversations, tr1->n);
    assert_int_equal(tr1->stats.tokens + va1->stats.tokens, d1->stats.tokens);
    /* Every old validation example is still in validation, every old training one in training. */
    for (int i = 0; i < va1->n; i++) {
        int found = 0;
        for (int j = 0; j < va2->n; j++) found += va2->ex[j].hash == va1->ex[i].hash;
        assert_int_equal(found, 1);
    }
    for (int i = 0; i < tr1->n; i++) {
        int found = 0;
        for (int j = 0; j < va2->n; j++) found += va2->ex[j].hash == tr1->ex[i].hash;
        assert_int_equal(found, 0);
    }
    /* Copies keep order and data. */
    assert_true(tr1->ex[0].line < tr1->ex[1].line);
    lm_sft_dataset *tr3, *va3;
    assert_int_equal(lm_sft_split(d1, 0.1, 43, &tr3, &va3, &err), 0);
    int same = va3->n == va1->n;
    for (int i = 0; same && i < va1->n; i++) same = va3->ex[i].hash == va1->ex[i].hash;
    assert_false(same);   /* another seed, another split */
    lm_sft_dataset_free(tr3); lm_sft_dataset_free(va3);
    lm_sft_dataset_free(tr1); lm_sft_dataset_free(va1);
    lm_sft_dataset_free(tr2); lm_sft_dataset_free(va2);

    /* val_frac 0: everything trains; tiny sets still get one of each. */
    assert_int_equal(lm_sft_split(d1, 0, 1, &tr1, &va1, &err), 0);
    assert_int_equal(tr1->n, 1000);
    assert_int_equal(va1->n, 0);
    lm_sft_dataset_free(tr1); lm_sft_dataset_free(va1);
    lm_sft_dataset *two = load(t, GOOD "\n{\"messages\":[{\"role\":\"assistant\",\"content\":\"x\"}]}\n", NULL, &err);
    assert_non_null(two);
    for (double f = 0.001; f < 1; f += 0.3) {
        assert_int_equal(lm_sft_split(two, f, 7, &tr1, &va1, &err), 0);
        assert_int_equal(tr1->n, 1);
        assert_int_equal(va1->n, 1);
        lm_sft_dataset_free(tr1); lm_sft_dataset_free(va1);
    }
    assert_int_equal(lm_sft_split(two, 1.0, 7, &tr1, &va1, &err), -1);
    assert_non_null(strstr(err.msg, "validation fraction"));
    lm_sft_dataset_free(two);
    lm_sft_dataset_free(d1);
    lm_sft_dataset_free(d2);
    free(a); free(b); free(ab);
    lm_tokenizer_free(t);
}

/* ---- batcher ------------------------------------------------------------- */

static void test_batch_targets_off_by_one(void **state) {
    (void)state;
    lm_tokenizer *t = tiny(NULL);
    lm_err err = {{0}};
    lm_sft_dataset *ds = load(t, GOOD "\n", NULL, &err);
    assert_non_null(ds);
    lm_batcher *b = lm_batcher_new(ds, &(lm_batcher_opts){.B = 2, .T = 32}, &err);
    assert_non_null(b);
    lm_batch x;
    assert_int_equal(lm_batcher_next(b, &x, &err), 0);
    /* Row 0 holds the 26 tokens of GOOD (see test_fit):
     *   ... 10 <s> 11..19 "assistant" 20 "\n" 21 'y' 22 'o' 23 '!' 24 </s> 25 "\n"
     * Position t predicts token t+1, so the trained positions are 20..23:
     * "\n" (predicts 'y') through '!' (predicts </s>); 24 predicts "\n": not trained. */
    assert_int_equal(x.lengths[0], 26);
    assert_int_equal(x.tokens[20], T_BYTE0 + '\n');
    assert_int_equal(x.tokens[21], T_BYTE0 + 'y');
    assert_int_equal(x.tokens[24], T_IME);
    for (int p = 0; p < 32; p++) {
        int trained = p >= 20 && p <= 23;
        if (x.loss_mask[p] != trained) fail_msg("loss_mask[%d] = %d", p, x.loss_mask[p]);
        if (p < 25) assert_int_equal(x.targets[p], x.tokens[p + 1]);
        else assert_int_equal(x.targets[p], ds->pad_id);   /* last real token and padding */
        assert_int_equal(x.valid[p], p < 26);
        assert_int_equal(x.segments[p], p < 26);
        assert_int_equal(x.pos[p], p < 26 ? p : 0);
    }
    assert_int_equal(x.targets[23], T_IME);   /* the model learns to stop */
    assert_int_equal(x.n_trained, 4);
    /* The second row is padding. */
    assert_int_equal(x.n_rows, 1);
    assert_int_equal(x.lengths[1], 0);
    for (int p = 32; p < 64; p++) {
        assert_int_equal(x.tokens[p], T_IME);
        assert_int_equal(x.loss_mask[p] | x.valid[p], 0);
    }
    assert_true(x.epoch_end);
    assert_int_equal(x.epoch, 0);
    assert_int_equal(lm_batcher_next(b, &x, &err), 0);
    assert_int_equal(x.epoch, 1);
    assert_int_equal(x.step, 1);
    lm_batcher_free(b);
    /* Longer than T: refused, naming the line. */
    assert_null(lm_batcher_new(ds, &(lm_batcher_opts){.B = 1, .T = 25}, &err));
    assert_non_null(strstr(err.msg, "line 1 has 26 tokens"));
    lm_sft_dataset_free(ds);
    lm_tokenizer_free(t);
}

/* Which example a row holds, by its first token after "<s>user\nq". */
static int row_id(const lm_batch *x, int r, int off) {
    int v = 0;
    for (int p = off + 7; x->tokens[(size_t)r * x->T + p] != T_IME; p++)
        v = v * 10 + (x->tokens[(size_t)r * x->T + p] - T_BYTE0 - '0');
    return v;
}

static void test_batch_shuffle_epochs(void **state) {
    (void)state;
    lm_tokenizer *t = tiny(NULL);
    char *text = numbered(0, 10);
    lm_err err = {{0}};
    lm_sft_dataset *ds = load(t, text, NULL, &err);
    assert_non_null(ds);
    lm_batcher_opts o = {.B = 4, .T = 64, .seed = 5, .shuffle = true};
    lm_batcher *b1 = lm_batcher_new(ds, &o, &err), *b2 = lm_batcher_new(ds, &o, &err);
    assert_int_equal(lm_batcher_batches_per_epoch(b1), 3);
    int order[3][10];
    for (int e = 0; e < 3; e++) {
        int seen[10] = {0}, k = 0;
        for (int i = 0; i < 3; i++) {
            lm_batch x, y;
            assert_int_equal(lm_batcher_next(b1, &x, &err), 0);
            assert_int_equal(x.epoch, e);
            assert_int_equal(x.batch_in_epoch, i);
            assert_int_equal(x.n_rows, i < 2 ? 4 : 2);
            assert_int_equal(x.epoch_end, i == 2);
            for (int r = 0; r < x.n_rows; r++) {
                int id = row_id(&x, r, 0);
                assert_true(id >= 0 && id < 10);
                seen[id]++;
                order[e][k++] = id;
            }
            int32_t copy[4 * 64];
            memcpy(copy, x.tokens, sizeof copy);
            assert_int_equal(lm_batcher_next(b2, &y, &err), 0);   /* same seed: same batches */
            assert_memory_equal(copy, y.tokens, sizeof copy);
        }
        for (int i = 0; i < 10; i++) assert_int_equal(seen[i], 1);
    }
    assert_true(memcmp(order[0], order[1], sizeof order[0]) || memcmp(order[1], order[2], sizeof order[0]));
    lm_batcher_free(b1);
    lm_batcher_free(b2);
    /* No shuffle: file order, every epoch. */
    o.shuffle = false;
    b1 = lm_batcher_new(ds, &o, &err);
    for (int i = 0; i < 6; i++) {
        lm_batch x;
        lm_batcher_next(b1, &x, &err);
        for (int r = 0; r < x.n_rows; r++) assert_int_equal(row_id(&x, r, 0), (i % 3) * 4 + r);
    }
    lm_batcher_free(b1);
    lm_sft_dataset_free(ds);
    free(text);
    lm_tokenizer_free(t);
}

static void test_batch_packing(void **state) {
    (void)state;
    lm_tokenizer *t = tiny(NULL);
    char *text = numbered(0, 10);   /* each 10 + 15 tokens: "q0".."q9" / "a0".."a9" */
    lm_err err = {{0}};
    lm_sft_dataset *ds = load(t, text, NULL, &err);
    assert_non_null(ds);
    assert_int_equal(ds->ex[0].n, 25);
    lm_batcher *b = lm_batcher_new(ds, &(lm_batcher_opts){.B = 2, .T = 60, .pack = true}, &err);
    assert_non_null(b);
    assert_int_equal(lm_batcher_batches_per_epoch(b), 3);   /* 2 per row, 5 rows */
    lm_batch x;
    assert_int_equal(lm_batcher_next(b, &x, &err), 0);
    assert_int_equal(x.lengths[0], 50);
    assert_int_equal(row_id(&x, 0, 0), 0);
    assert_int_equal(row_id(&x, 0, 25), 1);
    assert_int_equal(row_id(&x, 1, 25), 3);
    for (int p = 0; p < 60; p++) {
        assert_int_equal(x.segments[p], p < 25 ? 1 : p < 50 ? 2 : 0);
        assert_int_equal(x.pos[p], p < 25 ? p : p < 50 ? p - 25 : 0);
    }
    /* The boundary: the first conversation's last token predicts nothing,
     * never the next conversation's first token. */
    assert_int_equal(x.targets[22], T_IME);
    assert_int_equal(x.loss_mask[22], 1);
    assert_int_equal(x.targets[23], T_BYTE0 + '\n');
    assert_int_equal(x.loss_mask[23], 0);
    assert_int_equal(x.targets[24], ds->pad_id);
    assert_int_equal(x.loss_mask[24], 0);
    assert_int_equal(x.targets[25], x.tokens[26]);
    assert_int_equal(x.n_trained, 4 * ds->ex[0].n_trained);
    lm_batcher_free(b);
    lm_sft_dataset_free(ds);
    free(text);
    lm_tokenizer_free(t);
}

/* A batcher with trim gives each batch as the untrimmed one's first n_rows
 * rows and first lm_batch_span(longest) positions; everything cut away is
 * padding. */
static void test_batch_trim(void **state) {
    (void)state;
    assert_int_equal(lm_batch_span(25, 64), 28);
    assert_int_equal(lm_batch_span(28, 64), 28);
    assert_int_equal(lm_batch_span(62, 64), 64);
    assert_int_equal(lm_batch_span(29, 30), 30);   /* never past T */
    lm_tokenizer *t = tiny(NULL);
    char *text = numbered(0, 13);   /* 25 tokens ("q0"), 27 ("q10") */
    lm_err err = {{0}};
    lm_sft_dataset *ds = load(t, text, NULL, &err);
    assert_non_null(ds);
    for (int pack = 0; pack < 2; pack++) {
        lm_batcher_opts o = {.B = 4, .T = 64, .seed = 5, .shuffle = true, .pack = pack};
        lm_batcher *full = lm_batcher_new(ds, &o, &err);
        o.trim = true;
        lm_batcher *cut = lm_batcher_new(ds, &o, &err);
        assert_non_null(full);
        assert_non_null(cut);
        int shorter = 0;
        for (int i = 0; i < 3 * lm_batcher_batches_per_epoch(full); i++) {
            lm_batch y, x;
            assert_int_equal(lm_batcher_next(full, &y, &err), 0);
            assert_int_equal(lm_batcher_next(cut, &x, &err), 0);
            assert_int_equal(y.B, 4);
            assert_int_equal(y.T, 64);
            int longest = 0;
            for (int r = 0; r < y.n_rows; r++) longest = y.lengths[r] > longest ? y.lengths[r] : longest;
            assert_int_equal(x.B, y.n_rows);
            assert_int_equal(x.T, lm_batch_span(longest, 64));
            assert_true(x.T >= longest && x.T % 4 == 0);
            shorter += x.T < 64 || x.B < 4;
            assert_int_equal(x.n_rows, y.n_rows);
            assert_int_equal(x.n_trained, y.n_trained);
            assert_int_equal(x.epoch, y.epoch);
            assert_int_equal(x.epoch_end, y.epoch_end);
            assert_memory_equal(x.lengths, y.lengths, 4 * sizeof *x.lengths);
            for (int r = 0; r < 4; r++)
                for (int p = 0; p < 64; p++) {
                    size_t fy = (size_t)r * 64 + p, fx = (size_t)r * x.T + p;
                    if (r >= x.B || p >= x.T) {
                        assert_int_equal(y.valid[fy] | y.loss_mask[fy], 0);
                        continue;
                    }
                    assert_int_equal(x.tokens[fx], y.tokens[fy]);
                    assert_int_equal(x.targets[fx], y.targets[fy]);
                    assert_int_equal(x.loss_mask[fx], y.loss_mask[fy]);
                    assert_int_equal(x.valid[fx], y.valid[fy]);
                    assert_int_equal(x.segments[fx], y.segments[fy]);
                    assert_int_equal(x.pos[fx], y.pos[fy]);
                }
        }
        assert_true(shorter > 0);
        lm_batcher_free(full);
        lm_batcher_free(cut);
    }
    lm_sft_dataset_free(ds);
    free(text);
    lm_tokenizer_free(t);
}

/* ---- the real model ------------------------------------------------------ */

static void test_real_model_matches_full_render(void **state) {
    (void)state;
    const char *path = getenv("LEMONPC_MODEL");
    char buf[512];
    if (!path) {
        const char *home = getenv("HOME");
        snprintf(buf, sizeof buf, "%s/.cache/lemonpc/SmolLM2-135M-Instruct.Q4_1.gguf", home ? home : "");
        path = buf;
    }
    /* fetched by `make test` (scripts/fetch_model.sh): absent, this fails */
    if (access(path, R_OK) != 0) fail_msg("%s: no model there (scripts/fetch_model.sh fetches it; LEMONPC_MODEL names another)", path);
    lm_err err = {{0}};
    gguf_file *f = gguf_open(path, &err);
    lm_tokenizer *t = f ? lm_tokenizer_load(f, &err) : NULL;
    gguf_close(f);
    assert_non_null(t);
    lm_sft_opts o = lm_sft_opts_default();
    o.strict = true;
    lm_sft_dataset *ds = NULL;
    const char *data = "tests/data/sft_toy.jsonl";
    if (access(data, R_OK) != 0) data = "../tests/data/sft_toy.jsonl";
    assert_int_equal(lm_sft_dataset_load(data, t, &o, &ds, &err), 0);
    assert_int_equal(ds->n, 40);
    assert_true(ds->stats.header_merges >= 1);
    /* Every toy line, parsed here with jansson, rendered by lm_chat_render and
     * tokenized whole with specials, gives exactly the tokens we train on. */
    FILE *in = fopen(data, "rb");
    assert_non_null(in);
    char *line = NULL;
    size_t cap = 0;
    for (int i = 0; i < ds->n; i++) {
        assert_true(getline(&line, &cap, in) > 0);
        json_t *root = json_loads(line, 0, NULL);
        assert_non_null(root);
        json_t *list = json_object_get(root, "messages");
        int sharegpt = list == NULL;
        if (sharegpt) list = json_object_get(root, "conversations");
        size_t n = json_array_size(list);
        lm_chat_msg m[16];
        assert_true(n > 0 && n <= 16);
        for (size_t k = 0; k < n; k++) {
            json_t *mo = json_array_get(list, k);
            const char *role = json_string_value(json_object_get(mo, sharegpt ? "from" : "role"));
            if (sharegpt) role = !strcmp(role, "human") ? "user" : !strcmp(role, "gpt") ? "assistant" : role;
            m[k] = (lm_chat_msg){role, json_string_value(json_object_get(mo, sharegpt ? "value" : "content"))};
        }
        assert_int_equal(ds->ex[i].line, i + 1);
        assert_matches_full_render(t, m, n, &ds->ex[i]);
        json_decref(root);
    }
    free(line);
    fclose(in);
    /* The full-render equality on conversations of the toy set's kinds. */
    lm_chat_msg convs[][4] = {
        {{"user", "Can you fix my sword?"}, {"assistant", "Leave it on the bench."}},
        {{"system", "You are Brann."}, {"user", "Hi"}, {"assistant", "\n\n1. Tongs"}},
        {{"user", "A"}, {"assistant", "  two spaces"}, {"user", "B"}, {"assistant", "Caf\xc3\xa9 \xf0\x9f\x94\xa8"}},
    };
    size_t ns[] = {2, 3, 4};
    for (int c = 0; c < 3; c++) {
        lm_sft_example e;
        assert_int_equal(lm_sft_render(t, convs[c], ns[c], &e, NULL, &err), 0);
        assert_matches_full_render(t, convs[c], ns[c], &e);
        lm_sft_example_free(&e);
    }
    lm_sft_dataset_free(ds);
    lm_tokenizer_free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_single_turn),
        cmocka_unit_test(test_render_default_system_and_multi_turn),
        cmocka_unit_test(test_render_special_text_stays_text),
        cmocka_unit_test(test_render_header_merge),
        cmocka_unit_test(test_jsonl_shapes),
        cmocka_unit_test(test_jsonl_errors),
        cmocka_unit_test(test_jsonl_skip_cap_and_empty),
        cmocka_unit_test(test_jsonl_file),
        cmocka_unit_test(test_fit),
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_batch_targets_off_by_one),
        cmocka_unit_test(test_batch_shuffle_epochs),
        cmocka_unit_test(test_batch_packing),
        cmocka_unit_test(test_batch_trim),
        cmocka_unit_test(test_real_model_matches_full_render),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
