/* DPO (src/train/dpo*.c): preference pairs in TRL's format (every accepted
 * shape gives the same tokens, only completion tokens are scored, errors
 * name file:line and field), fitting and the split; the loss terms against
 * closed forms and finite differences; the per-position weights and
 * per-row log-likelihoods it adds to the SFT trainer; and the loop on a
 * tiny random model: step 1 is log 2 (the policy starts as the
 * reference), a few steps raise the reward accuracy and margin, a stopped
 * and resumed run equals an uninterrupted one bit for bit and reads the
 * cached reference instead of recomputing it, a changed pair set is
 * refused on resume, and a full run from a merged adapter has the
 * reference a LoRA run continuing that adapter has. The gradients
 * themselves are checked against PyTorch in tests/torch/test_dpo.py. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "tokenizer/tokenizer.h"
#include "train/dpo.h"
#include "train/lora.h"
#include "train/train_config.h"
#include "train/train_model.h"

#include "helpers.h"

/* The byte-level ChatML tokenizer of helpers.h, without the "\n\n" token. */
static lm_tokenizer *tiny(const char *chat_template) { return th_tiny_tokenizer(chat_template, 0); }

static lm_dpo_set *load(const lm_tokenizer *t, const char *text, const lm_sft_opts *o, lm_err *err) {
    lm_dpo_set *s = NULL;
    if (lm_dpo_load_mem("p.jsonl", text, strlen(text), t, o, &s, err)) return NULL;
    return s;
}

/* ---- pairs ---------------------------------------------------------------- */

#define U(c) "{\"role\":\"user\",\"content\":\"" c "\"}"
#define A(c) "{\"role\":\"assistant\",\"content\":\"" c "\"}"
#define GOOD "{\"prompt\":[" U("hi") "],\"chosen\":[" A("yo!") "],\"rejected\":[" A("no.") "]}"

static void test_pair_shapes(void **state) {
    (void)state;
    lm_tokenizer *t = tiny(NULL);
    const char *text =
        GOOD "\n"
        "{\"prompt\":\"hi\",\"chosen\":\"yo!\",\"rejected\":\"no.\",\"score\":3}\n"
        "\n"
        "{\"chosen\":[" U("hi") "," A("yo!") "],\"rejected\":[" U("hi") "," A("no.") "]}\r\n"
        "{\"rejected\":\"no.\",\"chosen\":[" A("yo!") "],\"prompt\":[" U("hi") "]}\n";
    lm_sft_opts o = lm_sft_opts_default();
    o.strict = true;
    lm_err err = {{0}};
    lm_dpo_set *s = load(t, text, &o, &err);
    if (!s) fail_msg("%s", err.msg);
    assert_int_equal(s->n, 4);
    int lines[4] = {1, 2, 4, 5};
    th_seq c = {.n = 0}, r = {.n = 0};
    th_turn(&c, "user", "hi", 0);
    th_turn(&r, "user", "hi", 0);
    int n_prompt = c.n;
    th_turn(&c, "assistant", "yo!", 1);
    th_turn(&r, "assistant", "no.", 1);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(s->p[i].line, lines[i]);
        assert_int_equal(s->p[i].n_prompt, n_prompt);
        th_assert_seq(&s->p[i].seq[LM_DPO_CHOSEN], &c);
        th_assert_seq(&s->p[i].seq[LM_DPO_REJECTED], &r);
        assert_true(s->p[i].hash == s->p[0].hash);   /* the split key ignores the shape */
    }
    assert_int_equal(s->p[0].seq[0].n_trained, 4);  /* y o ! <|im_end|> */
    assert_int_equal(s->stats.pairs, 4);
    assert_int_equal(s->stats.trained_tokens, 4 * 8);
    assert_int_equal(s->pad_id, T_IME);
    lm_dpo_set_free(s);
    lm_tokenizer_free(t);

    /* The default system turn, a prompt holding an assistant turn (never
     * scored: only the completion is) and a two-message completion. */
    t = tiny(TH_TEMPLATE_WITH_SYSTEM);
    const char *multi = "{\"prompt\":[" U("a?") "," A("b.") "," U("c?") "],\"chosen\":[" A("d.") "," A("e") "],"
                        "\"rejected\":\"f\"}";
    assert_non_null(s = load(t, multi, &o, &err));
    th_seq want = {.n = 0}, wr = {.n = 0};
    th_turn(&want, "system", "Be Brann.", 0);
    th_turn(&want, "user", "a?", 0);
    th_turn(&want, "assistant", "b.", 0);
    th_turn(&want, "user", "c?", 0);
    memcpy(&wr, &want, sizeof want);
    assert_int_equal(s->p[0].n_prompt, want.n);
    th_turn(&want, "assistant", "d.", 1);
    th_turn(&want, "assistant", "e", 1);
    th_turn(&wr, "assistant", "f", 1);
    th_assert_seq(&s->p[0].seq[0], &want);
    th_assert_seq(&s->p[0].seq[1], &wr);
    /* the implicit prompt splits after the last shared message */
    const char *imp = "{\"chosen\":[" U("a?") "," A("b.") "," U("c?") "," A("d.") "," A("e") "],"
                      "\"rejected\":[" U("a?") "," A("b.") "," U("c?") "," A("f") "]}";
    lm_dpo_set *s2 = load(t, imp, &o, &err);
    assert_non_null(s2);
    assert_int_equal(s2->p[0].n_prompt, s->p[0].n_prompt);
    th_assert_seq(&s2->p[0].seq[0], &want);
    th_assert_seq(&s2->p[0].seq[1], &wr);
    lm_dpo_set_free(s2);
    lm_dpo_set_free(s);
    lm_tokenizer_free(t);
}

static void test_pair_errors(void **state) {
    (void)state;
    lm_tokenizer *t = tiny(NULL);
    static const struct { const char *line, *msg; } cases[] = {
        {"{\"prompt\":\"hi\",\"chosen\":\"a\"}", "p.jsonl:2: rejected: missing"},
        {"{\"prompt\":\"hi\",\"rejected\":\"a\"}", "p.jsonl:2: chosen: missing"},
        {"{\"prompt\":\"hi\",\"chosen\":\"a\",\"rejected\":\"a\"}",
         "p.jsonl:2: chosen and rejected are the same completion"},
        {"{\"prompt\":\"hi\",\"chosen\":[" A("a") "],\"rejected\":\"a\"}",
         "p.jsonl:2: chosen and rejected are the same completion"},
        {"{\"prompt\":\"hi\",\"chosen\":[" U("a") "],\"rejected\":\"b\"}",
         "p.jsonl:2: chosen[0].role: a completion holds assistant messages, got 'user'"},
        {"{\"prompt\":\"hi\",\"chosen\":\"a\",\"rejected\":[" A("b") ",{\"role\":\"system\",\"content\":\"x\"}]}",
         "p.jsonl:2: rejected[1].role: a completion holds assistant messages, got 'system'"},
        {"{\"prompt\":[],\"chosen\":\"a\",\"rejected\":\"b\"}", "p.jsonl:2: prompt: empty"},
        {"{\"prompt\":7,\"chosen\":\"a\",\"rejected\":\"b\"}",
         "p.jsonl:2: prompt: expected a string or an array of messages"},
        {"{\"prompt\":\"hi\",\"chosen\":{},\"rejected\":\"b\"}",
         "p.jsonl:2: chosen: expected a string or an array of messages"},
        {"{\"prompt\":[{\"role\":\"bot\",\"content\":\"x\"}],\"chosen\":\"a\",\"rejected\":\"b\"}",
         "p.jsonl:2: prompt[0].role: expected one of system/user/assistant, got 'bot'"},
        {"{\"prompt\":[{\"role\":\"user\"}],\"chosen\":\"a\",\"rejected\":\"b\"}",
         "p.jsonl:2: prompt[0].content: missing"},
        {"{\"prompt\":[{\"content\":\"x\"}],\"chosen\":\"a\",\"rejected\":\"b\"}",
         "p.jsonl:2: prompt[0].role: missing"},
        {"{\"prompt\":[3],\"chosen\":\"a\",\"rejected\":\"b\"}", "p.jsonl:2: prompt[0]: expected an object"},
        {"{\"prompt\":\"hi\",\"chosen\":[{\"role\":\"assistant\",\"content\":1}],\"rejected\":\"b\"}",
         "p.jsonl:2: chosen[0].content: expected a string"},
        {"{\"chosen\":\"a\",\"rejected\":\"b\"}",
         "p.jsonl:2: no \"prompt\": chosen and rejected must then be whole conversations"},
        {"{\"chosen\":[" U("x") "," A("a") "],\"rejected\":[" U("y") "," A("b") "]}",
         "p.jsonl:2: no \"prompt\", and chosen and rejected share no leading message"},
        {"{\"chosen\":[" U("x") "," A("a") "],\"rejected\":[" U("x") "," A("a") "," A("b") "]}",
         "p.jsonl:2: chosen: nothing after the prompt"},
        {"[1]", "p.jsonl:2: expected a JSON object per line"},
        {"{\"prompt\":", "p.jsonl:2: invalid JSON at column"},
        {"{\"prompt\":\"\xff\",\"chosen\":\"a\",\"rejected\":\"b\"}", "p.jsonl:2: invalid JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[1024];
        snprintf(text, sizeof text, GOOD "\n%s\n" GOOD "\n", cases[i].line);
        th_warnings w = {.n = 0};
        lm_sft_opts o = lm_sft_opts_default();
        o.warn = th_collect;
        o.warn_ctx = &w;
        lm_err err = {{0}};
        lm_dpo_set *s = load(t, text, &o, &err);
        if (!s) fail_msg("case %zu: %s", i, err.msg);
        assert_int_equal(s->n, 2);
        assert_int_equal(s->p[1].line, 3);
        assert_int_equal(s->stats.skipped, 1);
        assert_int_equal(w.n, 1);
        if (!strstr(w.msg[0], cases[i].msg)) fail_msg("case %zu: '%s' lacks '%s'", i, w.msg[0], cases[i].msg);
        lm_dpo_set_free(s);
        o.strict = true;
        memset(&err, 0, sizeof err);
        assert_null(load(t, text, &o, &err));
        if (!strstr(err.msg, cases[i].msg)) fail_msg("case %zu strict: '%s'", i, err.msg);
    }
    /* too many bad lines, and nothing usable */
    lm_sft_opts o = lm_sft_opts_default();
    o.max_skipped = 1;
    lm_err err = {{0}};
    assert_null(load(t, GOOD "\nx\ny\n", &o, &err));
    assert_non_null(strstr(err.msg, "p.jsonl: more than 1 bad lines"));
    assert_null(load(t, "\n\n", &o, &err));
    assert_non_null(strstr(err.msg, "p.jsonl: no usable pair"));
    /* a missing file names itself */
    lm_dpo_set *s = NULL;
    assert_int_equal(lm_dpo_load("/nonexistent/p.jsonl", t, &o, &s, &err), -1);
    assert_non_null(strstr(err.msg, "/nonexistent/p.jsonl"));
    lm_tokenizer_free(t);
}

static void test_fit_and_split(void **state) {
    (void)state;
    lm_tokenizer *t = tiny(NULL);
    /* prompt "hi": 10 tokens; completions of 2..13 content bytes */
    char text[8192] = "";
    for (int i = 0; i < 12; i++) {
        char line[256], cc[32], rr[32];
        memset(cc, 'a' + i, (size_t)i + 2);
        cc[i + 2] = 0;
        memset(rr, 'z' - i, 3);
        rr[3] = 0;
        snprintf(line, sizeof line, "{\"prompt\":\"hi\",\"chosen\":\"%s\",\"rejected\":\"%s\"}\n", cc, rr);
        strcat(text, line);
    }
    lm_sft_opts o = lm_sft_opts_default();
    lm_err err = {{0}};
    lm_dpo_set *s = load(t, text, &o, &err);
    assert_non_null(s);
    assert_int_equal(s->n, 12);
    int n_prompt = s->p[0].n_prompt;
    assert_int_equal(n_prompt, 10);
    /* A side is prompt (10) + "<|im_start|>assistant\n" (11) + content +
     * <|im_end|> + "\n": chosen i has 25 + i tokens, rejected 26.
     * max_len 18 cuts every side inside its header: no pair is left. */
    lm_dpo_set *tr = NULL, *va = NULL;
    assert_int_equal(lm_dpo_split(s, 0.0, 1, &tr, &va, &err), 0);
    lm_dpo_fit(tr, 18, LM_SFT_TRUNCATE);
    assert_int_equal(tr->n, 0);
    assert_int_equal(tr->stats.dropped, 12);
    lm_dpo_set_free(tr);
    lm_dpo_set_free(va);
    /* max_len 25: a side keeps its first 4 completion tokens */
    assert_int_equal(lm_dpo_split(s, 0.0, 1, &tr, &va, &err), 0);
    lm_dpo_fit(tr, 25, LM_SFT_TRUNCATE);
    assert_int_equal(tr->n, 12);
    for (int i = 0; i < tr->n; i++) {
        for (int k = 0; k < 2; k++) assert_true(tr->p[i].seq[k].n <= 25);
        int full = 25 + i;
        assert_int_equal(tr->p[i].seq[0].truncated, full > 25);
        assert_int_equal(tr->p[i].seq[0].n_trained, full > 25 ? 4 : i + 3);
        assert_int_equal(tr->p[i].seq[1].n_trained, 4);   /* 3 bytes + <|im_end|> */
    }
    assert_int_equal(tr->stats.truncated, 12);         /* every rejected side was cut */
    lm_dpo_set_free(tr);
    lm_dpo_set_free(va);
    /* drop policy: only pairs fitting whole stay */
    assert_int_equal(lm_dpo_split(s, 0.0, 1, &tr, &va, &err), 0);
    lm_dpo_fit(tr, 27, LM_SFT_DROP);
    assert_int_equal(tr->n, 3);                        /* chosen of 25..27 tokens */
    assert_int_equal(tr->stats.dropped, 9);
    lm_dpo_set_free(tr);
    lm_dpo_set_free(va);
    /* split: a partition, by content, the same for the same seed */
    assert_int_equal(lm_dpo_split(s, 0.3, 7, &tr, &va, &err), 0);
    assert_int_equal(tr->n + va->n, 12);
    assert_true(va->n >= 1 && tr->n >= 1);
    lm_dpo_set *tr2, *va2;
    assert_int_equal(lm_dpo_split(s, 0.3, 7, &tr2, &va2, &err), 0);
    assert_int_equal(va2->n, va->n);
    for (int i = 0; i < va->n; i++) assert_int_equal(va2->p[i].line, va->p[i].line);
    for (int i = 0; i < tr->n; i++)
        for (int j = 0; j < va->n; j++) assert_int_not_equal(tr->p[i].line, va->p[j].line);
    lm_dpo_set_free(tr2);
    lm_dpo_set_free(va2);
    lm_dpo_set_free(tr);
    lm_dpo_set_free(va);
    assert_int_equal(lm_dpo_split(s, 1.5, 7, &tr, &va, &err), -1);
    lm_dpo_set_free(s);
    lm_tokenizer_free(t);
}

/* ---- the loss ------------------------------------------------------------------ */

static double loss_at(lm_dpo_kind k, double beta, double nll, double pc, double pr, double rc,
                      double rr, int nc, int nr) {
    lm_dpo_terms t;
    lm_dpo_pair_terms(k, beta, nll, pc, pr, rc, rr, nc, nr, &t);
    return t.loss;
}

static void test_loss_terms(void **state) {
    (void)state;
    lm_dpo_terms t;
    /* policy == reference: log 2, gradient -+beta/2, no reward */
    lm_dpo_pair_terms(LM_DPO_SIGMOID, 0.1, 0, -12, -30, -12, -30, 4, 9, &t);
    assert_true(t.loss == log(2.0));
    assert_true(fabs(t.dc + 0.05) < 1e-15 && fabs(t.dr - 0.05) < 1e-15);
    assert_true(t.reward_c == 0 && t.reward_r == 0);
    lm_dpo_pair_terms(LM_DPO_IPO, 0.1, 0, -12, -30, -12, -30, 4, 9, &t);
    assert_true(fabs(t.loss - 25.0) < 1e-12);            /* (0 - 1 / 0.2)^2 */
    assert_true(fabs(t.dc - (-10.0 / 4)) < 1e-12 && fabs(t.dr - 10.0 / 9) < 1e-12);
    /* the paper's formula by hand: beta 0.5, chosen up 1, rejected down 2 */
    lm_dpo_pair_terms(LM_DPO_SIGMOID, 0.5, 0, -9, -32, -10, -30, 4, 9, &t);
    assert_true(fabs(t.loss - log1p(exp(-1.5))) < 1e-15);
    assert_true(fabs(t.reward_c - 0.5) < 1e-15 && fabs(t.reward_r + 1.0) < 1e-15);
    /* length-normalised: the same on per-token means */
    lm_dpo_pair_terms(LM_DPO_SIGMOID_NORM, 0.5, 0, -9, -32, -10, -30, 4, 8, &t);
    assert_true(fabs(t.loss - log1p(exp(-0.5 * (0.25 + 0.25)))) < 1e-15);
    assert_true(fabs(t.reward_c - 0.125) < 1e-15 && fabs(t.reward_r + 0.125) < 1e-15);
    /* the NLL term (RPO): + nll * (-pc / nc) on top of the same DPO loss,
     * rewards unchanged, chosen's gradient down by nll / nc */
    lm_dpo_terms u;
    lm_dpo_pair_terms(LM_DPO_SIGMOID, 0.5, 0, -9, -32, -10, -30, 4, 9, &t);
    lm_dpo_pair_terms(LM_DPO_SIGMOID, 0.5, 2.0, -9, -32, -10, -30, 4, 9, &u);
    assert_true(fabs(u.loss - (t.loss + 2.0 * 9 / 4)) < 1e-12);
    assert_true(u.reward_c == t.reward_c && u.reward_r == t.reward_r && u.dr == t.dr);
    assert_true(fabs(u.dc - (t.dc - 0.5)) < 1e-15);
    /* derivatives against central differences, every kind, with and without NLL */
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < 20; i++) {
            double pc = -5 - i, pr = -7 + 0.3 * i, rc = -6 + 0.1 * i, rr = -8, beta = 0.05 + 0.1 * (i % 4);
            double nll = (i % 3) * 0.5;
            int nc = 1 + i % 5, nr = 2 + i % 3;
            lm_dpo_pair_terms((lm_dpo_kind)k, beta, nll, pc, pr, rc, rr, nc, nr, &t);
            double e = 1e-5;
            double fc = (loss_at(k, beta, nll, pc + e, pr, rc, rr, nc, nr) -
                         loss_at(k, beta, nll, pc - e, pr, rc, rr, nc, nr)) / (2 * e);
            double fr = (loss_at(k, beta, nll, pc, pr + e, rc, rr, nc, nr) -
                         loss_at(k, beta, nll, pc, pr - e, rc, rr, nc, nr)) / (2 * e);
            if (fabs(fc - t.dc) > 1e-6 * (1 + fabs(fc)) || fabs(fr - t.dr) > 1e-6 * (1 + fabs(fr)))
                fail_msg("kind %d case %d: dc %g vs %g, dr %g vs %g", k, i, t.dc, fc, t.dr, fr);
        }
    /* far from 0 nothing overflows */
    lm_dpo_pair_terms(LM_DPO_SIGMOID, 1.0, 0, 0, -1e4, 0, 0, 1, 1, &t);
    assert_true(t.loss == 0 && t.dc == 0 && isfinite(t.dr));
    lm_dpo_pair_terms(LM_DPO_SIGMOID, 1.0, 0, -1e4, 0, 0, 0, 1, 1, &t);
    assert_true(fabs(t.loss - 1e4) < 1e-9 && fabs(t.dc + 1.0) < 1e-15);
}

/* ---- the trainer additions: weights and per-row log-likelihoods -------------------- */

static void test_weights_and_logprobs(void **state) {
    (void)state;
    lm_err err = {{0}};
    lm_tmodel *m = lm_tmodel_new_random(TH_TOY, 3, 0.3f, &err);
    assert_non_null(m);
    lm_lora *l = lm_lora_new(m, 4, 8, LM_LORA_ALL, 9, &err);
    assert_non_null(l);
    for (size_t i = 0; i < l->n_params; i++) l->params[i] = 0.05f * (float)((int)(i * 7919 % 21) - 10);
    enum { B = 2, T = 7 };
    int32_t tok[B * T], tgt[B * T];
    uint8_t mask[B * T] = {0, 0, 1, 1, 1, 0, 0, /**/ 0, 1, 1, 0, 1, 1, 1};
    for (int i = 0; i < B * T; i++) {
        tok[i] = (i * 5 + 3) % 16;
        tgt[i] = (i * 3 + 1) % 16;
    }
    lm_tacts *a = lm_tacts_new(m, l, B, T, 3, &err);
    assert_non_null(a);
    lm_tbatch b = {.B = B, .T = T, .tokens = tok, .targets = tgt, .mask = mask};
    double lp[B], loss;
    assert_int_equal(lm_train_forward(m, l, a, &b, NULL, &err), 0);
    assert_int_equal(lm_train_seq_logprobs(m, a, &b, NULL, lp, &err), 0);
    /* each row's sum is minus its nll sum from lm_train_loss on that row alone */
    for (int r = 0; r < B; r++) {
        uint8_t one[B * T] = {0};
        memcpy(one + r * T, mask + r * T, T);
        lm_tbatch br = b;
        br.mask = one;
        br.loss_norm = 1;
        assert_int_equal(lm_train_loss(m, a, &br, NULL, 0, NULL, &loss, &err), 0);
        assert_true(fabs(lp[r] + loss) <= 1e-12 * fabs(loss));
        assert_true(lp[r] < 0);
    }
    /* weights: the gradient is linear in them, row by row */
    float w[B * T];
    for (int i = 0; i < B * T; i++) w[i] = i < T ? 0.7f : -1.3f;
    size_t n = l->n_params;
    float *g0 = calloc(n, sizeof *g0), *g1 = calloc(n, sizeof *g1);
    assert_non_null(g0);
    assert_non_null(g1);
    for (int r = 0; r < B; r++) {
        uint8_t one[B * T] = {0};
        memcpy(one + r * T, mask + r * T, T);
        lm_tbatch br = b;
        br.mask = one;
        br.loss_norm = 1;
        lm_lora_zero_grads(l);
        assert_int_equal(lm_train_grad(m, l, a, &br, NULL, &loss, &err), 0);
        for (size_t i = 0; i < n; i++) g0[i] += (r ? -1.3f : 0.7f) * l->grads[i];
    }
    lm_tbatch bw = b;
    bw.weight = w;
    bw.loss_norm = 1;
    lm_lora_zero_grads(l);
    assert_int_equal(lm_train_grad(m, l, a, &bw, NULL, &loss, &err), 0);
    assert_true(fabs(loss - (-0.7 * lp[0] + 1.3 * lp[1])) < 1e-5 * fabs(loss));
    memcpy(g1, l->grads, n * sizeof *g1);
    double md = 0, mr = 0;
    for (size_t i = 0; i < n; i++) {
        md = fmax(md, fabs((double)g1[i] - g0[i]));
        mr = fmax(mr, fabs((double)g0[i]));
    }
    assert_true(mr > 0 && md <= 1e-5 * mr);
    free(g0);
    free(g1);
    lm_tacts_free(a);
    lm_lora_free(l);
    lm_tmodel_free(m);
}

/* ---- the loop on a toy task ------------------------------------------------------- */

/* Pair i: prompt START u0 u1 u2 END ASSIST; chosen AYE w END with the
 * word the prompt calls for (4 + u0 % 4), rejected AYE w' END with another. */
static lm_dpo_set *toy_pairs(int n, uint64_t key0) {
    lm_dpo_set *s = calloc(1, sizeof *s);
    assert_non_null(s);
    assert_non_null(s->p = calloc((size_t)n, sizeof *s->p));
    s->n = n;
    s->pad_id = TK_END;
    for (int i = 0; i < n; i++) {
        uint64_t r = key0 + (uint64_t)i;
        int32_t p[PROMPT_LEN];
        th_toy_prompt(&r, p);
        int32_t good = th_toy_answer_word(p), bad = TK_W0 + (p[1] + 1 + (int32_t)(th_rng_next(&r) % 3)) % 4;
        for (int side = 0; side < 2; side++) {
            lm_sft_example *e = &s->p[i].seq[side];
            assert_non_null(e->tokens = malloc(CONV_LEN * sizeof(int32_t)));
            assert_non_null(e->mask = calloc(CONV_LEN, 1));
            memcpy(e->tokens, p, sizeof p);
            e->tokens[6] = TK_AYE;
            e->tokens[7] = side ? bad : good;
            e->tokens[8] = TK_END;
            e->mask[6] = e->mask[7] = e->mask[8] = 1;
            e->n = CONV_LEN;
            e->n_trained = 3;
            e->line = i + 1;
        }
        s->p[i].n_prompt = PROMPT_LEN;
        s->p[i].line = i + 1;
        s->p[i].hash = key0 + (uint64_t)i;
    }
    return s;
}

static void base_cfg(lm_train_cfg *c, const char *out, int full) {
    th_train_cfg(c, out, full);
    strcpy(c->dpo, "(test)");
    c->warmup = 0;
    c->schedule = LM_LR_CONSTANT;
    lm_err err = {{0}};
    assert_int_equal(lm_train_cfg_finish(c, &err), 0);
}

static int run(const lm_train_cfg *c, const lm_lora *init_b, const lm_dpo_set *tr, const lm_dpo_set *va,
               int resume, long stop_after, lm_sft_report *rep, lm_err *err) {
    lm_tmodel *m = lm_tmodel_new_random(TH_TOY, 11, 0.3f, err);
    assert_non_null(m);
    lm_lora *init = NULL;
    if (init_b) {   /* the same adapter on this fresh model */
        init = lm_lora_new(m, init_b->rank, init_b->alpha, init_b->targets, 1, err);
        assert_non_null(init);
        memcpy(init->params, init_b->params, init->n_params * sizeof(float));
    }
    lm_sft_ctl ctl = {.resume = resume, .stop_after = stop_after, .progress = 0};
    int rc = lm_dpo_train(c, m, init, tr, va, &ctl, rep, NULL, NULL, err);
    lm_lora_free(init);
    lm_tmodel_free(m);
    return rc;
}

static void test_dpo_learns(void **state) {
    (void)state;
    char *dir = th_tmpdir("test_dpo");
    lm_dpo_set *tr = toy_pairs(64, 100), *va = toy_pairs(16, 900);
    lm_train_cfg c;
    base_cfg(&c, dir, 0);
    c.epochs = 3;
    c.batch = 8;
    c.eval_every = 4;
    c.dpo_beta = 0.5f;
    lm_sft_report rep;
    lm_err err = {{0}};
    if (run(&c, NULL, tr, va, 0, 0, &rep, &err)) fail_msg("%s", err.msg);
    assert_int_equal(rep.steps, 24);
    assert_true(rep.dpo && !rep.ref_cached);
    int n, nv;
    double *loss = th_metrics_values(dir, "loss", &n), *acc = th_metrics_values(dir, "rewards/accuracies", &n);
    double *margin = th_metrics_values(dir, "rewards/margins", &n), *vacc = th_metrics_values(dir, "val_rewards/accuracies", &nv);
    double *vmargin = th_metrics_values(dir, "val_rewards/margins", &nv), *vloss = th_metrics_values(dir, "val_loss", &nv);
    assert_int_equal(n, 24);
    assert_int_equal(nv, 6);
    /* the policy starts as the reference: margin 0, loss log 2 */
    assert_true(fabs(loss[0] - log(2.0)) < 1e-15);
    assert_true(margin[0] == 0 && acc[0] == 0);
    /* and learns to prefer the chosen answers (steps are noisy: batches of
     * 8 pairs), held-out ones too */
    double l_end = 0, a_end = 0, m_end = 0;
    for (int i = 20; i < 24; i++) {
        l_end += loss[i] / 4;
        a_end += acc[i] / 4;
        m_end += margin[i] / 4;
    }
    assert_true(l_end < 0.6 * log(2.0) && a_end >= 0.8 && m_end > 0.5);
    assert_true(vacc[nv - 1] >= 0.75 && vmargin[nv - 1] > vmargin[0] + 0.3 && vloss[nv - 1] < vloss[0] - 0.1);
    assert_true(rep.reward_acc == vacc[nv - 1]);
    /* TRL's other metric names are there */
    int k;
    free(th_metrics_field(dir, "rewards/chosen", &k));
    assert_int_equal(k, 24);
    free(th_metrics_field(dir, "logps/rejected", &k));
    assert_int_equal(k, 24);
    char p[600];
    struct stat sb;
    snprintf(p, sizeof p, "%s/loss.svg", dir);
    size_t len;
    char *svg = th_slurp(p, &len);
    svg[len] = 0;
    assert_true(!strncmp(svg, "<svg", 4) && strstr(svg, "</svg>"));
    assert_non_null(strstr(svg, ">DPO loss<"));
    assert_non_null(strstr(svg, ">reward margin<"));
    assert_non_null(strstr(svg, ">reward accuracy<"));
    free(svg);
    snprintf(p, sizeof p, "%s/ref_logps.bin", dir);
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal((long)sb.st_size, 32 + 8 * 2 * (64 + 16));
    snprintf(p, sizeof p, "%s/best/adapter.gguf", dir);
    assert_int_equal(stat(p, &sb), 0);
    free(loss); free(acc); free(margin); free(vacc); free(vmargin); free(vloss);
    lm_dpo_set_free(tr);
    lm_dpo_set_free(va);
    th_rm_rf(dir);
    free(dir);
}

static void resume_case(int full, int grad_accum, float dropout, lm_dpo_kind kind) {
    char *a = th_tmpdir("test_dpo"), *b = th_tmpdir("test_dpo");
    lm_dpo_set *tr = toy_pairs(22, 1000), *va = toy_pairs(5, 5000);
    lm_train_cfg ca, cb;
    base_cfg(&ca, a, full);
    ca.grad_accum = grad_accum;
    ca.lora_dropout = dropout;
    ca.dpo_loss = kind;
    ca.eval_every = 2;
    ca.weight_decay = 0.01f;
    cb = ca;
    snprintf(cb.out, sizeof cb.out, "%s", b);
    lm_sft_report ra, rb;
    lm_err err = {{0}};
    if (run(&ca, NULL, tr, va, 0, 0, &ra, &err)) fail_msg("%s", err.msg);
    assert_int_equal(run(&cb, NULL, tr, va, 0, 3, &rb, &err), 0);
    assert_true(rb.stopped && !rb.ref_cached);
    assert_int_equal(rb.steps, 3);
    assert_int_equal(run(&cb, NULL, tr, va, 1, 2, &rb, &err), 0);
    assert_int_equal(rb.steps, 5);
    assert_true(rb.ref_cached);   /* read back, not recomputed */
    assert_int_equal(run(&cb, NULL, tr, va, 1, 0, &rb, &err), 0);
    assert_false(rb.stopped);
    assert_int_equal(rb.steps, ra.steps);
    th_assert_runs_equal(a, b,
                         (const char *const[]){"loss", "val_loss", "rewards/margins",
                                               "val_rewards/margins", NULL},
                         (const char *const[]){full ? "last/model.gguf" : "last/adapter.gguf",
                                               "last/optim.bin", "ref_logps.bin", NULL});
    char pa[600];
    /* a run resumed with other pairs than it started with is refused */
    if (!full) {
        lm_dpo_set *other = toy_pairs(22, 1001);
        snprintf(pa, sizeof pa, "%s/last", b);
        lm_train_cfg cc = cb;
        th_rm_rf(pa);
        snprintf(pa, sizeof pa, "%s/best", b);
        th_rm_rf(pa);
        assert_int_equal(run(&cc, NULL, other, va, 0, 1, &rb, &err), 0);   /* fresh: recomputed */
        assert_false(rb.ref_cached);
        assert_int_equal(run(&cc, NULL, tr, va, 1, 1, &rb, &err), -1);
        assert_non_null(strstr(err.msg, "ref_logps.bin: made for other pairs"));
        lm_dpo_set_free(other);
    }
    lm_dpo_set_free(tr);
    lm_dpo_set_free(va);
    th_rm_rf(a);
    th_rm_rf(b);
    free(a);
    free(b);
}

static void test_resume_lora_accum_dropout(void **state) { (void)state; resume_case(0, 2, 0.2f, LM_DPO_SIGMOID); }
static void test_resume_full_ipo(void **state) { (void)state; resume_case(1, 1, 0.0f, LM_DPO_IPO); }
static void test_resume_lora_norm(void **state) { (void)state; resume_case(0, 3, 0.0f, LM_DPO_SIGMOID_NORM); }

/* ---- rows cut to the longest side == rows of seq ------------------------ */

/* toy_pairs with prompts of 1..14 words: sides of 7 to 20 tokens. */
static lm_dpo_set *toy_pairs_var(int n, uint64_t key0) {
    lm_dpo_set *s = calloc(1, sizeof *s);
    assert_non_null(s);
    assert_non_null(s->p = calloc((size_t)n, sizeof *s->p));
    s->n = n;
    s->pad_id = TK_END;
    for (int i = 0; i < n; i++) {
        uint64_t r = key0 + (uint64_t)i;
        int32_t p[32];
        int k = th_toy_prompt_var(&r, p, 14);
        int32_t good = th_toy_answer_word(p), bad = TK_W0 + (p[1] + 1 + (int32_t)(th_rng_next(&r) % 3)) % 4;
        for (int side = 0; side < 2; side++) {
            lm_sft_example *e = &s->p[i].seq[side];
            int n_side = k + 3 + side * (int)(th_rng_next(&r) % 2);   /* rejected: maybe one more */
            assert_non_null(e->tokens = malloc((size_t)n_side * sizeof(int32_t)));
            assert_non_null(e->mask = calloc((size_t)n_side, 1));
            memcpy(e->tokens, p, (size_t)k * sizeof(int32_t));
            for (int t = k; t < n_side; t++) {
                e->tokens[t] = t == k ? TK_AYE : t == n_side - 1 ? TK_END : side ? bad : good;
                e->mask[t] = 1;
            }
            e->n = n_side;
            e->n_trained = n_side - k;
            e->line = i + 1;
        }
        s->p[i].n_prompt = k;
        s->p[i].line = i + 1;
        s->p[i].hash = key0 + (uint64_t)i;
    }
    return s;
}

typedef struct { int full, grad_accum; float dropout; lm_dpo_kind kind; } trim_args;

/* The same DPO run with rows of seq (ctl.full_rows) and with rows cut to
 * each micro-batch's longest side, the latter stopped and resumed: the
 * same reference log-likelihoods, losses, rewards, weights and optimizer
 * state, bit for bit (see test_sft.c's trim_case for why bits and not a
 * tolerance). */
static void trim_case(void *arg) {
    const trim_args *t = arg;
    char *a = th_tmpdir("test_dpo"), *b = th_tmpdir("test_dpo");
    lm_dpo_set *tr = toy_pairs_var(19, 400), *va = toy_pairs_var(5, 8000);
    lm_train_cfg ca, cb;
    base_cfg(&ca, a, t->full);
    ca.seq = 32;
    ca.grad_accum = t->grad_accum;
    ca.lora_dropout = t->dropout;
    ca.dpo_loss = t->kind;
    ca.eval_every = 2;
    ca.epochs = 2;
    cb = ca;
    snprintf(cb.out, sizeof cb.out, "%s", b);
    lm_sft_report ra, rb;
    lm_err err = {{0}};
    lm_tmodel *m = lm_tmodel_new_random(TH_TOY, 11, 0.3f, &err);
    assert_non_null(m);
    lm_sft_ctl full_rows = {.full_rows = 1};
    if (lm_dpo_train(&ca, m, NULL, tr, va, &full_rows, &ra, NULL, NULL, &err)) fail_msg("%s", err.msg);
    lm_tmodel_free(m);
    if (run(&cb, NULL, tr, va, 0, 3, &rb, &err) || run(&cb, NULL, tr, va, 1, 0, &rb, &err))
        fail_msg("%s", err.msg);
    assert_true(rb.ref_cached);
    assert_int_equal(rb.steps, ra.steps);
    th_assert_runs_equal(a, b,
                         (const char *const[]){"loss", "val_loss", "grad_norm", "rewards/margins",
                                               "val_rewards/margins", "logps/rejected", "tokens",
                                               NULL},
                         (const char *const[]){t->full ? "last/model.gguf" : "last/adapter.gguf",
                                               "last/optim.bin", "ref_logps.bin", NULL});
    lm_dpo_set_free(tr);
    lm_dpo_set_free(va);
    th_rm_rf(a);
    th_rm_rf(b);
    free(a);
    free(b);
}

static void test_trim_lora_dropout(void **state) {
    (void)state;
    th_each_train_kernels(trim_case, &(trim_args){.grad_accum = 2, .dropout = 0.2f, .kind = LM_DPO_SIGMOID});
}
static void test_trim_full_norm(void **state) {
    (void)state;
    th_each_train_kernels(trim_case, &(trim_args){.full = 1, .grad_accum = 1, .kind = LM_DPO_SIGMOID_NORM});
}

/* The reference with an SFT adapter: a LoRA run continuing it and a full
 * run from the merged weights score the pairs alike, and both start at
 * log 2 (their own reference is their start). */
static void test_adapter_reference(void **state) {
    (void)state;
    char *a = th_tmpdir("test_dpo"), *b = th_tmpdir("test_dpo");
    lm_err err = {{0}};
    lm_tmodel *m = lm_tmodel_new_random(TH_TOY, 11, 0.3f, &err);
    assert_non_null(m);
    lm_lora *sft = lm_lora_new(m, 4, 8, LM_LORA_ALL, 3, &err);
    assert_non_null(sft);
    for (size_t i = 0; i < sft->n_params; i++) sft->params[i] = 0.1f * (float)((int)(i * 7919 % 17) - 8);
    lm_dpo_set *tr = toy_pairs(8, 77);
    lm_train_cfg ca, cb;
    base_cfg(&ca, a, 0);
    base_cfg(&cb, b, 1);
    ca.epochs = cb.epochs = 1;
    lm_sft_report ra, rb;
    if (run(&ca, sft, tr, NULL, 0, 0, &ra, &err) || run(&cb, sft, tr, NULL, 0, 0, &rb, &err))
        fail_msg("%s", err.msg);
    char pa[600], pb[600];
    snprintf(pa, sizeof pa, "%s/ref_logps.bin", a);
    snprintf(pb, sizeof pb, "%s/ref_logps.bin", b);
    size_t na, nb;
    char *x = th_slurp(pa, &na), *y = th_slurp(pb, &nb);
    assert_int_equal(na, 32 + 8 * 16);
    assert_int_equal(na, nb);
    double dx[16], dy[16], base[16];
    memcpy(dx, x + 32, sizeof dx);
    memcpy(dy, y + 32, sizeof dy);
    for (int i = 0; i < 16; i++) assert_true(fabs(dx[i] - dy[i]) <= 1e-5 * fabs(dx[i]));
    free(x);
    free(y);
    /* and the adapter mattered: the base alone scores them otherwise */
    char *c = th_tmpdir("test_dpo");
    lm_train_cfg cc;
    base_cfg(&cc, c, 0);
    cc.epochs = 1;
    assert_int_equal(run(&cc, NULL, tr, NULL, 0, 0, &rb, &err), 0);
    snprintf(pa, sizeof pa, "%s/ref_logps.bin", c);
    x = th_slurp(pa, &na);
    memcpy(base, x + 32, sizeof base);
    free(x);
    double diff = 0;
    for (int i = 0; i < 16; i++) diff = fmax(diff, fabs(base[i] - dx[i]));
    assert_true(diff > 1e-2);
    int n;
    const char *dirs[3] = {a, b, c};
    for (int i = 0; i < 3; i++) {
        double *l = th_metrics_values(dirs[i], "loss", &n);
        assert_true(n == 2 && fabs(l[0] - log(2.0)) < 1e-15);
        free(l);
        th_rm_rf(dirs[i]);
    }
    lm_dpo_set_free(tr);
    lm_lora_free(sft);
    lm_tmodel_free(m);
    free(a);
    free(b);
    free(c);
}

static void test_config(void **state) {
    (void)state;
    lm_train_cfg c, d;
    lm_err err = {{0}};
    lm_train_cfg_defaults(&c);
    assert_true(c.dpo_beta == 0.1f && c.dpo_loss == LM_DPO_SIGMOID && c.dpo_nll == 0);
    assert_int_equal(lm_train_cfg_parse_json(&c, "run.json",
        "{\"model\": \"m.gguf\", \"dpo\": \"p.jsonl\", \"adapter\": \"sft.gguf\", \"out\": \"r\", "
        "\"dpo_beta\": 0.25, \"dpo-loss\": \"ipo\", \"dpo-nll\": 0.5}", &err), 0);
    assert_int_equal(lm_train_cfg_finish(&c, &err), 0);
    assert_true(c.lr == 2e-5f);   /* the DPO LoRA default */
    char *js = lm_train_cfg_to_json(&c);
    assert_non_null(js);
    lm_train_cfg_defaults(&d);
    assert_int_equal(lm_train_cfg_parse_json(&d, "ckpt", js, &err), 0);
    assert_string_equal(d.dpo, "p.jsonl");
    assert_string_equal(d.adapter, "sft.gguf");
    assert_true(d.dpo_beta == 0.25f && d.dpo_loss == LM_DPO_IPO && d.dpo_nll == 0.5f);
    free(js);
    assert_int_equal(lm_train_cfg_set(&c, "dpo-loss", "hinge", &err), -1);
    assert_non_null(strstr(err.msg, "dpo-loss: expected sigmoid, ipo or sigmoid-norm, got 'hinge'"));
    assert_int_equal(lm_train_cfg_set(&c, "dpo-loss", "sigmoid-norm", &err), 0);
    assert_true(c.dpo_loss == LM_DPO_SIGMOID_NORM);
    assert_int_equal(lm_train_cfg_set(&c, "dpo-beta", "0", &err), -1);
    strcpy(c.data, "d.jsonl");
    assert_int_equal(lm_train_cfg_finish(&c, &err), -1);
    assert_non_null(strstr(err.msg, "data and dpo"));
    c.data[0] = 0;
    c.pack = 1;
    assert_int_equal(lm_train_cfg_finish(&c, &err), -1);
    assert_non_null(strstr(err.msg, "pack: not for a DPO run"));
    c.pack = 0;
    strcpy(c.data, "d.jsonl");
    c.dpo[0] = 0;
    assert_int_equal(lm_train_cfg_finish(&c, &err), -1);
    assert_non_null(strstr(err.msg, "adapter: only for a DPO run"));
    c.adapter[0] = 0;
    c.data[0] = 0;
    assert_int_equal(lm_train_cfg_finish(&c, &err), -1);
    assert_non_null(strstr(err.msg, "or dpo"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pair_shapes),
        cmocka_unit_test(test_pair_errors),
        cmocka_unit_test(test_fit_and_split),
        cmocka_unit_test(test_loss_terms),
        cmocka_unit_test(test_weights_and_logprobs),
        cmocka_unit_test(test_dpo_learns),
        cmocka_unit_test(test_resume_lora_accum_dropout),
        cmocka_unit_test(test_resume_full_ipo),
        cmocka_unit_test(test_resume_lora_norm),
        cmocka_unit_test(test_trim_lora_dropout),
        cmocka_unit_test(test_trim_full_norm),
        cmocka_unit_test(test_adapter_reference),
        cmocka_unit_test(test_config),
    };
    return cmocka_run_group_tests_name("dpo", tests, NULL, NULL);
}
