/* SFT loop, checkpoints and config on a tiny random model with raw token
 * datasets (no tokenizer): loss falls on a repeated batch, a stopped and
 * resumed run equals an uninterrupted one bit for bit (LoRA with gradient
 * accumulation, with LoRA dropout, and full), the best checkpoint is the argmin of the
 * validation losses and holds those weights, a torn checkpoint save does
 * not break resume, config errors name the key, and the masking proof:
 * trained only on answer tokens + end-of-turn, the model stops on its own
 * on every held-out prompt. */
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

#include "train/checkpoint.h"
#include "train/lora.h"
#include "train/sft.h"
#include "train/train_config.h"
#include "train/train_model.h"

#include "helpers.h"

/* The toy task (helpers.h): mask = 1 only on AYE, w and the final END
 * (the assistant's content and its end-of-turn). */
static lm_sft_dataset *toy_ds(int n, uint64_t key0) {
    lm_sft_dataset *ds = calloc(1, sizeof *ds);
    assert_non_null(ds);
    ds->ex = calloc((size_t)n, sizeof *ds->ex);
    assert_non_null(ds->ex);
    ds->n = n;
    ds->pad_id = TK_END;
    for (int i = 0; i < n; i++) {
        lm_sft_example *e = &ds->ex[i];
        e->tokens = malloc(CONV_LEN * sizeof(int32_t));
        e->mask = calloc(CONV_LEN, 1);
        assert_non_null(e->tokens);
        assert_non_null(e->mask);
        uint64_t key = key0 + (uint64_t)i;
        th_toy_prompt(&key, e->tokens);
        e->tokens[6] = TK_AYE;
        e->tokens[7] = th_toy_answer_word(e->tokens);
        e->tokens[8] = TK_END;
        e->mask[6] = e->mask[7] = e->mask[8] = 1;
        e->n = CONV_LEN;
        e->line = i + 1;
        e->hash = key0 + (uint64_t)i;
    }
    lm_sft_dataset_recount(ds);
    return ds;
}

static void base_cfg(lm_train_cfg *c, const char *out, int full) {
    th_train_cfg(c, out, full);
    strcpy(c->data, "(test)");
    lm_err err = {{0}};
    assert_int_equal(lm_train_cfg_finish(c, &err), 0);
}

/* Runs one call of the loop on a fresh model from the same seed. */
static int run(const lm_train_cfg *c, const lm_sft_dataset *tr, const lm_sft_dataset *va,
               int resume, long stop_after, lm_sft_report *rep, lm_err *err) {
    lm_tmodel *m = lm_tmodel_new_random(TH_TOY, 11, 0.3f, err);
    assert_non_null(m);
    lm_sft_ctl ctl = {.resume = resume, .stop_after = stop_after, .progress = 0};
    int rc = lm_sft_train(c, m, tr, va, &ctl, rep, err);
    lm_tmodel_free(m);
    return rc;
}

/* ---- loss falls on a repeated batch ---------------------------------- */

static void test_loss_decreases(void **state) {
    (void)state;
    char *dir = th_tmpdir("test_sft");
    lm_sft_dataset *tr = toy_ds(4, 100);
    lm_train_cfg c;
    base_cfg(&c, dir, 1);
    c.epochs = 40;          /* one batch of 4 per epoch: the same batch 40 times */
    c.warmup = 0;
    c.schedule = LM_LR_CONSTANT;
    lm_sft_report rep;
    lm_err err = {{0}};
    assert_int_equal(run(&c, tr, NULL, 0, 0, &rep, &err), 0);
    assert_int_equal(rep.steps, 40);
    assert_int_equal(rep.total_steps, 40);
    int n;
    double *l = th_metrics_values(dir, "loss", &n);
    assert_int_equal(n, 40);
    assert_true(l[39] < 0.25 * l[0]);
    free(l);
    /* a second run into the same directory is refused */
    assert_int_equal(run(&c, tr, NULL, 0, 0, &rep, &err), -1);
    assert_non_null(strstr(err.msg, "--resume"));
    lm_sft_dataset_free(tr);
    th_rm_rf(dir);
    free(dir);
}

/* ---- resume == uninterrupted ----------------------------------------- */

static void resume_case(int full, int grad_accum, int pack, float dropout) {
    char *a = th_tmpdir("test_sft"), *b = th_tmpdir("test_sft");
    lm_sft_dataset *tr = toy_ds(22, 1000), *va = toy_ds(5, 5000);
    lm_train_cfg ca, cb;
    base_cfg(&ca, a, full);
    ca.grad_accum = grad_accum;
    ca.pack = pack;
    ca.lora_dropout = dropout;
    ca.eval_every = 2;
    ca.weight_decay = 0.01f;
    cb = ca;
    snprintf(cb.out, sizeof cb.out, "%s", b);
    lm_sft_report ra, rb;
    lm_err err = {{0}};
    assert_int_equal(run(&ca, tr, va, 0, 0, &ra, &err), 0);
    /* stop at steps that are not eval points and not epoch ends, twice */
    assert_int_equal(run(&cb, tr, va, 0, 3, &rb, &err), 0);
    assert_true(rb.stopped);
    assert_int_equal(rb.steps, 3);
    assert_int_equal(run(&cb, tr, va, 1, 4, &rb, &err), 0);
    assert_int_equal(rb.steps, 7);
    assert_int_equal(run(&cb, tr, va, 1, 0, &rb, &err), 0);
    assert_false(rb.stopped);
    assert_int_equal(rb.steps, ra.steps);
    th_assert_runs_equal(a, b, (const char *const[]){"loss", "val_loss", NULL},
                         (const char *const[]){full ? "last/model.gguf" : "last/adapter.gguf",
                                               "last/optim.bin", NULL});
    int na, nb;
    free(th_metrics_field(a, "loss", &na));   /* every step logged */
    assert_int_equal(na, ra.total_steps);
    assert_true(ra.best_val == rb.best_val);
    char pa[600];
    char *la, *lb;
    if (dropout > 0) {
        /* the dropout really acted (else the case would prove nothing):
         * the same run without it trains differently */
        char *c = th_tmpdir("test_sft");
        lm_train_cfg cc = ca;
        snprintf(cc.out, sizeof cc.out, "%s", c);
        cc.lora_dropout = 0.0f;
        lm_sft_report rc;
        assert_int_equal(run(&cc, tr, va, 0, 0, &rc, &err), 0);
        la = th_metrics_field(a, "loss", &na);
        lb = th_metrics_field(c, "loss", &nb);
        assert_int_equal(na, nb);
        assert_string_not_equal(la, lb);
        free(la);
        free(lb);
        /* and the adapter records it, for the PEFT export */
        lm_tmodel *m = lm_tmodel_new_random(TH_TOY, 11, 0.3f, &err);
        assert_non_null(m);
        snprintf(pa, sizeof pa, "%s/last/adapter.gguf", a);
        lm_lora *l = lm_lora_load(m, pa, &err);
        assert_non_null(l);
        assert_true(l->dropout == dropout);
        lm_lora_free(l);
        snprintf(pa, sizeof pa, "%s/last/adapter.gguf", c);
        assert_non_null(l = lm_lora_load(m, pa, &err));
        assert_true(l->dropout == 0.0f);
        lm_lora_free(l);
        lm_tmodel_free(m);
        th_rm_rf(c);
        free(c);
    }
    lm_sft_dataset_free(tr);
    lm_sft_dataset_free(va);
    th_rm_rf(a);
    th_rm_rf(b);
    free(a);
    free(b);
}

static void test_resume_lora_accum(void **state) { (void)state; resume_case(0, 2, 0, 0.0f); }
static void test_resume_full(void **state) { (void)state; resume_case(1, 1, 0, 0.0f); }
static void test_resume_lora_packed(void **state) { (void)state; resume_case(0, 1, 1, 0.0f); }
/* masks keyed by (seed, step, micro-batch): a resumed run draws the same */
static void test_resume_lora_dropout(void **state) { (void)state; resume_case(0, 2, 0, 0.3f); }

/* ---- batches cut to their longest row == rows of seq --------------------- */

/* Conversations of 8 to 19 tokens (mask on AYE w END), for rows of 32. */
static lm_sft_dataset *toy_ds_var(int n, uint64_t key0) {
    lm_sft_dataset *ds = calloc(1, sizeof *ds);
    assert_non_null(ds);
    assert_non_null(ds->ex = calloc((size_t)n, sizeof *ds->ex));
    ds->n = n;
    ds->pad_id = TK_END;
    for (int i = 0; i < n; i++) {
        lm_sft_example *e = &ds->ex[i];
        assert_non_null(e->tokens = malloc(32 * sizeof(int32_t)));
        assert_non_null(e->mask = calloc(32, 1));
        uint64_t key = key0 + (uint64_t)i;
        int k = th_toy_prompt_var(&key, e->tokens, 14);
        e->tokens[k] = TK_AYE;
        e->tokens[k + 1] = th_toy_answer_word(e->tokens);
        e->tokens[k + 2] = TK_END;
        e->mask[k] = e->mask[k + 1] = e->mask[k + 2] = 1;
        e->n = k + 3;
        e->line = i + 1;
        e->hash = key0 + (uint64_t)i;
    }
    lm_sft_dataset_recount(ds);
    return ds;
}

typedef struct { int full, grad_accum, pack; float dropout; } trim_args;

/* The same run with rows of seq (ctl.full_rows) and with batches cut to
 * their longest row, the latter stopped and resumed: the same losses,
 * validation losses, weights and optimizer state, bit for bit. Padding
 * positions contribute exact zeros, and every reduction over positions
 * adds them in an order the cut does not change (the GEMMs chain FMAs
 * over k; the portable loops group 4 rows, which the multiple-of-4 span
 * keeps aligned). */
static void trim_case(void *arg) {
    const trim_args *t = arg;
    char *a = th_tmpdir("test_sft"), *b = th_tmpdir("test_sft");
    lm_sft_dataset *tr = toy_ds_var(23, 300), *va = toy_ds_var(6, 7000);
    lm_train_cfg ca, cb;
    base_cfg(&ca, a, t->full);
    ca.seq = 32;
    ca.grad_accum = t->grad_accum;
    ca.pack = t->pack;
    ca.lora_dropout = t->dropout;
    ca.eval_every = 2;
    ca.epochs = 2;
    cb = ca;
    snprintf(cb.out, sizeof cb.out, "%s", b);
    lm_err err = {{0}};
    lm_sft_report ra, rb;
    lm_tmodel *m = lm_tmodel_new_random(TH_TOY, 11, 0.3f, &err);
    assert_non_null(m);
    lm_sft_ctl full_rows = {.full_rows = 1};
    if (lm_sft_train(&ca, m, tr, va, &full_rows, &ra, &err)) fail_msg("%s", err.msg);
    lm_tmodel_free(m);
    assert_int_equal(run(&cb, tr, va, 0, 3, &rb, &err), 0);
    assert_int_equal(run(&cb, tr, va, 1, 0, &rb, &err), 0);
    assert_int_equal(rb.steps, ra.steps);
    assert_int_equal(rb.tokens, ra.tokens);
    th_assert_runs_equal(a, b, (const char *const[]){"loss", "val_loss", "grad_norm", NULL},
                         (const char *const[]){t->full ? "last/model.gguf" : "last/adapter.gguf",
                                               "last/optim.bin",
                                               t->full ? "best/model.gguf" : "best/adapter.gguf",
                                               NULL});
    lm_sft_dataset_free(tr);
    lm_sft_dataset_free(va);
    th_rm_rf(a);
    th_rm_rf(b);
    free(a);
    free(b);
}

static void test_trim_lora_dropout_accum(void **state) {
    (void)state;
    th_each_train_kernels(trim_case, &(trim_args){.full = 0, .grad_accum = 2, .dropout = 0.3f});
}
static void test_trim_full(void **state) {
    (void)state;
    th_each_train_kernels(trim_case, &(trim_args){.full = 1, .grad_accum = 1});
}
static void test_trim_lora_packed(void **state) {
    (void)state;
    th_each_train_kernels(trim_case, &(trim_args){.full = 0, .grad_accum = 1, .pack = 1, .dropout = 0.2f});
}

/* ---- best checkpoint ------------------------------------------------- */

/* Mean validation loss of model m (+ lora) computed here, batch by batch,
 * independently of the loop's code. */
static double eval_loss(lm_tmodel *m, lm_lora *lora, const lm_sft_dataset *va) {
    lm_err err = {{0}};
    lm_tacts *acts = lm_tacts_new(m, lora, 1, CONV_LEN, 0, &err);
    assert_non_null(acts);
    double sum = 0;
    long n = 0;
    for (int i = 0; i < va->n; i++) {
        const lm_sft_example *e = &va->ex[i];
        int32_t tg[CONV_LEN];
        uint8_t mk[CONV_LEN];
        for (int t = 0; t < CONV_LEN; t++) {
            tg[t] = t + 1 < e->n ? e->tokens[t + 1] : TK_END;
            mk[t] = t + 1 < e->n ? e->mask[t + 1] : 0;
        }
        lm_tbatch b = {.B = 1, .T = CONV_LEN, .tokens = e->tokens, .targets = tg, .mask = mk};
        double l;
        assert_int_equal(lm_train_forward(m, lora, acts, &b, NULL, &err), 0);
        assert_int_equal(lm_train_loss(m, acts, &b, NULL, 0, NULL, &l, &err), 0);
        int k = 0;
        for (int t = 0; t < CONV_LEN; t++) k += mk[t];
        sum += l * k;
        n += k;
    }
    lm_tacts_free(acts);
    return sum / (double)n;
}

static void test_best_checkpoint(void **state) {
    (void)state;
    char *dir = th_tmpdir("test_sft");
    lm_sft_dataset *tr = toy_ds(16, 2000), *va = toy_ds(6, 7000);
    lm_train_cfg c;
    base_cfg(&c, dir, 0);
    c.lr = 0.05f;           /* high enough that validation loss goes down then up */
    c.epochs = 8;
    c.eval_every = 1;
    c.schedule = LM_LR_CONSTANT;
    lm_sft_report rep;
    lm_err err = {{0}};
    assert_int_equal(run(&c, tr, va, 0, 0, &rep, &err), 0);
    int n;
    double *v = th_metrics_values(dir, "val_loss", &n);
    assert_int_equal(n, rep.total_steps);      /* every step evaluated */
    int best = 0;
    for (int i = 1; i < n; i++) if (v[i] < v[best]) best = i;
    assert_int_equal(rep.best_step, best + 1);
    assert_true(rep.best_step < rep.total_steps);   /* best/ differs from last/ */
    char bdir[600];
    snprintf(bdir, sizeof bdir, "%s/best", dir);
    lm_train_cfg saved;
    lm_ckpt_state st;
    assert_int_equal(lm_ckpt_load_state(bdir, &saved, &st, &err), 0);
    assert_int_equal(st.step, best + 1);
    /* the best adapter really is the one with that loss (recomputed here) */
    lm_tmodel *m = lm_tmodel_new_random(TH_TOY, 11, 0.3f, &err);
    lm_lora *lora = NULL;
    assert_int_equal(lm_ckpt_load_weights(bdir, 0, m, &lora, &err), 0);
    double again = eval_loss(m, lora, va);
    assert_true(fabs(again - v[best]) <= 1e-6 * v[best]);
    /* and last/ holds the final step */
    snprintf(bdir, sizeof bdir, "%s/last", dir);
    assert_int_equal(lm_ckpt_load_state(bdir, &saved, &st, &err), 0);
    assert_int_equal(st.step, rep.total_steps);
    assert_int_equal(saved.lora_rank, c.lora_rank);
    lm_lora_free(lora);
    lm_tmodel_free(m);
    /* the loss curve */
    char p[600];
    snprintf(p, sizeof p, "%s/loss.svg", dir);
    size_t len;
    char *svg = th_slurp(p, &len);
    svg[len] = 0;
    assert_true(!strncmp(svg, "<svg", 4));
    assert_non_null(strstr(svg, "<polyline"));
    assert_non_null(strstr(svg, "validation"));
    assert_non_null(strstr(svg, "</svg>"));
    free(svg);
    free(v);
    lm_sft_dataset_free(tr);
    lm_sft_dataset_free(va);
    th_rm_rf(dir);
    free(dir);
}

/* ---- a save killed half-way ------------------------------------------ */

static void test_torn_checkpoint(void **state) {
    (void)state;
    char *a = th_tmpdir("test_sft"), *b = th_tmpdir("test_sft");
    lm_sft_dataset *tr = toy_ds(12, 3000);
    lm_train_cfg ca, cb;
    base_cfg(&ca, a, 0);
    cb = ca;
    snprintf(cb.out, sizeof cb.out, "%s", b);
    lm_sft_report ra, rb;
    lm_err err = {{0}};
    assert_int_equal(run(&ca, tr, NULL, 0, 0, &ra, &err), 0);
    assert_int_equal(run(&cb, tr, NULL, 0, 2, &rb, &err), 0);
    /* a later save died after writing half its files: a temp dir with a
     * torn adapter and no state.json */
    char p[700];
    snprintf(p, sizeof p, "%s/.last.tmp-dead01", b);
    assert_int_equal(mkdir(p, 0777), 0);
    snprintf(p, sizeof p, "%s/.last.tmp-dead01/adapter.gguf", b);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs("GGUF torn", f);
    fclose(f);
    /* and the fallback path's crash window: last/ already moved to last.old */
    char from[700], to[700];
    snprintf(from, sizeof from, "%s/last", b);
    snprintf(to, sizeof to, "%s/last.old", b);
    assert_int_equal(rename(from, to), 0);
    assert_int_equal(run(&cb, tr, NULL, 1, 0, &rb, &err), 0);
    int na, nb;
    char *la = th_metrics_field(a, "loss", &na), *lb = th_metrics_field(b, "loss", &nb);
    assert_int_equal(na, nb);
    assert_string_equal(la, lb);
    free(la);
    free(lb);
    struct stat sb;
    snprintf(p, sizeof p, "%s/.last.tmp-dead01", b);
    assert_int_not_equal(stat(p, &sb), 0);      /* cleaned by the next save */
    /* a run dir without a checkpoint cannot be resumed */
    char *c = th_tmpdir("test_sft");
    lm_train_cfg cc = ca;
    snprintf(cc.out, sizeof cc.out, "%s", c);
    assert_int_equal(run(&cc, tr, NULL, 1, 0, &rb, &err), -1);
    assert_non_null(strstr(err.msg, "no checkpoint"));
    /* a corrupt optimizer file is named */
    snprintf(p, sizeof p, "%s/last/optim.bin", b);
    assert_int_equal(truncate(p, 100), 0);
    assert_int_equal(run(&cb, tr, NULL, 1, 0, &rb, &err), -1);
    assert_non_null(strstr(err.msg, "optim.bin"));
    lm_sft_dataset_free(tr);
    th_rm_rf(a);
    th_rm_rf(b);
    th_rm_rf(c);
    free(a);
    free(b);
    free(c);
}

/* ---- config ---------------------------------------------------------- */

static void expect_json_error(const char *json, const char *needle) {
    lm_train_cfg c;
    lm_train_cfg_defaults(&c);
    lm_err err = {{0}};
    assert_int_equal(lm_train_cfg_parse_json(&c, "run.json", json, &err), -1);
    if (!strstr(err.msg, needle)) fail_msg("'%s' lacks '%s'", err.msg, needle);
    assert_non_null(strstr(err.msg, "run.json"));
}

static void test_config(void **state) {
    (void)state;
    expect_json_error("{\"lerning_rate\": 0.1}", "unknown setting 'lerning_rate'");
    expect_json_error("{\"lr\": \"fast\"}", "lr: expected a number, got 'fast'");
    expect_json_error("{\"epochs\": 0}", "epochs: 0 is out of range");
    expect_json_error("{\"batch\": 2.5}", "batch: expected an integer");
    expect_json_error("{\"schedule\": \"sine\"}", "schedule: expected cosine, linear or constant");
    expect_json_error("{\"precision\": \"fp8\"}", "precision: expected f32 or bf16, got 'fp8'");
    expect_json_error("{\"lora-dropout\": 1}", "lora-dropout: 1 is out of range [0, 1)");
    expect_json_error("{\"lora_dropout\": -0.1}", "lora_dropout: -0.1 is out of range [0, 1)");
    expect_json_error("{\"lora-dropout\": 0.99999999999}", "lora-dropout");   /* 1 as f32 */
    expect_json_error("{\"lora-dropout\": \"half\"}", "lora-dropout: expected a number");
    expect_json_error("{\"lora_targets\": \"q,x\"}", "lora_targets");
    expect_json_error("{\"pack\": [1]}", "pack: expected a string, number or boolean");
    expect_json_error("[1, 2]", "expected a JSON object");
    expect_json_error("{\"lr\": 1e-4,\n \"epochs\": }", "run.json:2:");

    lm_train_cfg c, d;
    lm_err err = {{0}};
    lm_train_cfg_defaults(&c);
    assert_int_equal(lm_train_cfg_parse_json(&c, "run.json",
        "{\"model\": \"m.gguf\", \"data\": \"d.jsonl\", \"out\": \"r\", \"full\": true,"
        " \"lora_rank\": 16, \"lr\": 3e-5, \"warmup\": 0.05, \"schedule\": \"linear\","
        " \"seed\": 7, \"lora-targets\": \"q,v\", \"pack\": true, \"lora_dropout\": 0.05,"
        " \"precision\": \"bf16\"}", &err), 0);
    assert_int_equal(c.bf16, 1);
    assert_true(c.lora_dropout == 0.05f);
    assert_int_equal(c.full, 1);
    assert_int_equal(c.lora_rank, 16);
    assert_true(c.lr == 3e-5f);
    assert_int_equal(c.schedule, LM_LR_LINEAR);
    assert_int_equal(c.lora_targets, (1u << LM_LORA_Q) | (1u << LM_LORA_V));
    /* flags applied after the file override it */
    assert_int_equal(lm_train_cfg_set(&c, "lora", "true", &err), 0);
    assert_int_equal(c.full, 0);
    assert_int_equal(lm_train_cfg_set(&c, "lr", "-1", &err), -1);
    assert_non_null(strstr(err.msg, "lr: -1 is out of range"));
    /* the JSON written into checkpoints reads back to the same settings */
    assert_int_equal(lm_train_cfg_finish(&c, &err), 0);
    char *js = lm_train_cfg_to_json(&c);
    assert_non_null(js);
    lm_train_cfg_defaults(&d);
    assert_int_equal(lm_train_cfg_parse_json(&d, "ckpt", js, &err), 0);
    char *js2 = lm_train_cfg_to_json(&d);
    assert_string_equal(js, js2);
    assert_true(d.lr == c.lr && d.warmup == c.warmup && d.seed == 7 && d.pack == 1 &&
                d.lora_dropout == 0.05f && d.bf16 == 1);
    assert_int_equal(lm_train_cfg_set(&c, "lora-dropout", "0", &err), 0);
    assert_true(c.lora_dropout == 0.0f);
    assert_int_equal(lm_train_cfg_set(&c, "lora-dropout", "0.999", &err), 0);
    assert_true(c.lora_dropout == 0.999f);
    free(js);
    free(js2);
    /* recipe defaults */
    lm_train_cfg_defaults(&c);
    strcpy(c.model, "m"); strcpy(c.data, "d"); strcpy(c.out, "o");
    assert_int_equal(lm_train_cfg_finish(&c, &err), 0);
    assert_true(c.lr == 2e-4f && c.lora_rank == 8 && c.lora_alpha == 16.0f);
    lm_train_cfg_defaults(&c);
    strcpy(c.model, "m"); strcpy(c.data, "d"); strcpy(c.out, "o");
    c.full = 1;
    assert_int_equal(lm_train_cfg_finish(&c, &err), 0);
    assert_true(c.lr == 5e-5f);
    assert_int_equal(lm_train_cfg_warmup_steps(&c, 95), 10);
    lm_train_cfg_defaults(&c);
    assert_int_equal(lm_train_cfg_finish(&c, &err), -1);
    assert_non_null(strstr(err.msg, "model: required"));
}

/* ---- masking proof: the model learns to stop -------------------------- */

/* A config at the bottom of a float setting's range loads again from its
 * own JSON (what --resume does with state.json): the range was checked on
 * the double, and (float)1e-12 is below 1e-12 (found by
 * fuzz/fuzz_train_state.c's round trip). */
static void test_config_roundtrip_bounds(void **state) {
    (void)state;
    const char *settings[][2] = {{"lr", "1e-12"}, {"lora-alpha", "1e-6"}, {"dpo-beta", "1e-6"},
                                 {"lr", "10"}, {"lora-alpha", "1e6"}, {"warmup", "1e9"}};
    for (size_t i = 0; i < sizeof settings / sizeof *settings; i++) {
        lm_train_cfg c, back;
        lm_train_cfg_defaults(&c);
        lm_err err = {{0}};
        if (lm_train_cfg_set(&c, settings[i][0], settings[i][1], &err)) fail_msg("%s", err.msg);
        char *j = lm_train_cfg_to_json(&c);
        assert_non_null(j);
        lm_train_cfg_defaults(&back);
        if (lm_train_cfg_parse_json(&back, "state.json", j, &err)) fail_msg("%s=%s: %s", settings[i][0], settings[i][1], err.msg);
        char *k = lm_train_cfg_to_json(&back);
        assert_string_equal(j, k);
        free(j);
        free(k);
    }
    /* still refused: below the range, and beyond a float */
    lm_train_cfg c;
    lm_train_cfg_defaults(&c);
    lm_err err = {{0}};
    assert_int_equal(lm_train_cfg_set(&c, "lr", "1e-13", &err), -1);
    assert_non_null(strstr(err.msg, "lr: 1e-13 is out of range"));
    assert_int_equal(lm_train_cfg_set(&c, "clip", "1e40", &err), -1);
    assert_non_null(strstr(err.msg, "clip: 1e+40 is out of range"));
}

/* A checkpoint's state.json with positions a long cannot hold: (long)1e300
 * is undefined behaviour (UBSan's float-cast-overflow), so it is refused,
 * as are negative and fractional counts (found writing
 * fuzz/fuzz_train_state.c). */
static void test_state_numbers(void **state) {
    (void)state;
    lm_train_cfg saved, cfg;
    lm_train_cfg_defaults(&saved);
    strcpy(saved.model, "m.gguf");
    char *cj = lm_train_cfg_to_json(&saved);
    assert_non_null(cj);
    const char *fields[] = {"\"step\": 1e300", "\"tokens\": -1", "\"micro\": 2.5", "\"best_step\": -1e300",
                            "\"metrics_bytes\": 9007199254740994"};
    const char *names[] = {"step", "tokens", "micro", "best_step", "metrics_bytes"};
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
        char text[8192];
        snprintf(text, sizeof text, "{\"step\": 3, \"micro\": 3, \"tokens\": 10, \"seconds\": 1, \"smooth\": 2, "
                 "\"best_val\": -1, \"best_step\": 0, \"metrics_bytes\": 0, %s, \"config\": %s}", fields[i], cj);
        lm_ckpt_state st;
        lm_err err = {{0}};
        assert_int_equal(lm_ckpt_parse_state("run/last/state.json", text, strlen(text), &cfg, &st, &err), -1);
        char want[64];
        snprintf(want, sizeof want, "run/last/state.json: %s: ", names[i]);
        if (!strstr(err.msg, want)) fail_msg("%s: %s", fields[i], err.msg);
    }
    char text[8192];
    snprintf(text, sizeof text, "{\"step\": 3, \"micro\": 4, \"tokens\": 9007199254740992, \"seconds\": 1.5, "
             "\"smooth\": 2, \"best_val\": -1, \"best_step\": 0, \"metrics_bytes\": 77, \"config\": %s}", cj);
    lm_ckpt_state st;
    lm_err err = {{0}};
    if (lm_ckpt_parse_state("s.json", text, strlen(text), &cfg, &st, &err)) fail_msg("%s", err.msg);
    assert_int_equal(st.step, 3);
    assert_int_equal(st.micro, 4);
    assert_true(st.tokens == 9007199254740992L);
    assert_int_equal(st.metrics_bytes, 77);
    assert_string_equal(cfg.model, "m.gguf");
    free(cj);
}

/* Greedy decoding with the training forward; returns how many tokens were
 * generated up to and including TK_END (0 if none within max). */
static int greedy_until_end(lm_tmodel *m, lm_lora *lora, const int32_t *prompt, int max,
                            int32_t *gen) {
    enum { TT = PROMPT_LEN + 32 };
    lm_err err = {{0}};
    lm_tacts *acts = lm_tacts_new(m, lora, 1, TT, 0, &err);
    assert_non_null(acts);
    int32_t tok[TT], tg[TT] = {0};
    uint8_t mk[TT] = {0};
    static float logits[TT * TOY_V];
    memcpy(tok, prompt, PROMPT_LEN * sizeof(int32_t));
    int n = PROMPT_LEN, out = 0;
    for (int g = 0; g < max && n < TT; g++) {
        for (int t = n; t < TT; t++) tok[t] = TK_END;
        lm_tbatch b = {.B = 1, .T = TT, .tokens = tok, .targets = tg, .mask = mk};
        double l;
        assert_int_equal(lm_train_forward(m, lora, acts, &b, NULL, &err), 0);
        assert_int_equal(lm_train_loss(m, acts, &b, NULL, 0, logits, &l, &err), 0);
        const float *z = logits + (size_t)(n - 1) * TOY_V;
        int best = 0;
        for (int v = 1; v < TOY_V; v++) if (z[v] > z[best]) best = v;
        gen[g] = best;
        tok[n++] = best;
        if (best == TK_END) { out = g + 1; break; }
    }
    lm_tacts_free(acts);
    return out;
}

static void test_learns_to_stop(void **state) {
    (void)state;
    char *dir = th_tmpdir("test_sft");
    lm_sft_dataset *tr = toy_ds(48, 9000);
    lm_train_cfg c;
    base_cfg(&c, dir, 0);
    c.lora_rank = 4;
    c.lr = 2e-2f;
    c.epochs = 12;
    c.batch = 8;
    lm_sft_report rep;
    lm_err err = {{0}};
    assert_int_equal(run(&c, tr, NULL, 0, 0, &rep, &err), 0);

    lm_tmodel *m = lm_tmodel_new_random(TH_TOY, 11, 0.3f, &err);
    lm_lora *lora = NULL;
    char ld[600];
    snprintf(ld, sizeof ld, "%s/last", dir);
    assert_int_equal(lm_ckpt_load_weights(ld, 0, m, &lora, &err), 0);
    int stopped = 0, base_stopped = 0, held = 0;
    for (uint64_t key = 50000; held < 10; key++) {
        int32_t p[PROMPT_LEN], gen[32];
        uint64_t ks = key;
        th_toy_prompt(&ks, p);
        int seen = 0;   /* held out: no training conversation has this prompt */
        for (int i = 0; i < tr->n; i++) seen |= !memcmp(tr->ex[i].tokens, p, sizeof p);
        if (seen) continue;
        held++;
        int k = greedy_until_end(m, lora, p, 32, gen);
        /* stops right after "AYE w": the end-of-turn was trained */
        if (k == 3 && gen[0] == TK_AYE && gen[1] >= TK_W0 && gen[1] < TK_W0 + 4) stopped++;
        else print_message("prompt %d %d %d: %d tokens, first %d %d %d\n", p[1], p[2], p[3], k, gen[0], gen[1], gen[2]);
        /* control: the untrained model (no adapter) does not answer so */
        int32_t g0[32];
        int k0 = greedy_until_end(m, NULL, p, 32, g0);
        base_stopped += k0 == 3 && g0[0] == TK_AYE;
    }
    assert_int_equal(stopped, 10);
    assert_true(base_stopped < 10);
    lm_lora_free(lora);
    lm_tmodel_free(m);
    lm_sft_dataset_free(tr);
    th_rm_rf(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_state_numbers),
        cmocka_unit_test(test_config_roundtrip_bounds),
        cmocka_unit_test(test_loss_decreases),
        cmocka_unit_test(test_resume_lora_accum),
        cmocka_unit_test(test_resume_full),
        cmocka_unit_test(test_resume_lora_packed),
        cmocka_unit_test(test_resume_lora_dropout),
        cmocka_unit_test(test_trim_lora_dropout_accum),
        cmocka_unit_test(test_trim_full),
        cmocka_unit_test(test_trim_lora_packed),
        cmocka_unit_test(test_best_checkpoint),
        cmocka_unit_test(test_torn_checkpoint),
        cmocka_unit_test(test_learns_to_stop),
    };
    return cmocka_run_group_tests_name("sft", tests, NULL, NULL);
}
