/* Runtime LoRA adapters (model/adapter.h) and merging (train/merge.h) on a
 * tiny random model written here. The merged reference is built by this test
 * (W + s*alpha/r * B A in double, written as a plain F32 model), so the
 * runtime path and lm_merge_write are both checked against it. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "model/adapter.h"
#include "gguf/gguf.h"
#include "model/llama.h"
#include "tensor/kernels.h"
#include "train/merge.h"
#include "train/peft.h"

enum { NL = 2, D = 64, NH = 4, NKV = 2, HD = 16, FF = 96, V = 80, R = 4, NTOK = 7 };
static const char *const PROJ[7] = {"attn_q", "attn_k", "attn_v", "attn_output",
                                    "ffn_gate", "ffn_up", "ffn_down"};
static const int PIN[7] = {D, D, D, NH * HD, D, D, FF};
static const int POUT[7] = {NH * HD, NKV * HD, NKV * HD, D, FF, FF, D};

typedef struct { uint64_t s; } rng;
static float frand(rng *g) {   /* uniform in [-1, 1) */
    g->s ^= g->s << 13; g->s ^= g->s >> 7; g->s ^= g->s << 17;
    return (float)((g->s >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0);
}

typedef struct {
    float *w[NL][7];       /* base projections [out, in] */
    float *a[NL][7];       /* [R, in] */
    float *b[NL][7];       /* [out, R] */
    float *embd, *norm;    /* [V, D], [D] */
    float alpha;
} weights;

static void make_weights(weights *W, uint64_t seed) {
    rng g = {seed};
    W->embd = malloc(sizeof(float) * V * D);
    W->norm = malloc(sizeof(float) * D);
    for (int i = 0; i < V * D; i++) W->embd[i] = frand(&g);
    for (int i = 0; i < D; i++) W->norm[i] = 1.0f + 0.2f * frand(&g);
    for (int l = 0; l < NL; l++)
        for (int p = 0; p < 7; p++) {
            int in = PIN[p], out = POUT[p];
            W->w[l][p] = malloc(sizeof(float) * in * out);
            W->a[l][p] = malloc(sizeof(float) * R * in);
            W->b[l][p] = malloc(sizeof(float) * out * R);
            for (int i = 0; i < in * out; i++) W->w[l][p][i] = frand(&g) / sqrtf((float)in);
            for (int i = 0; i < R * in; i++) W->a[l][p][i] = frand(&g) / sqrtf((float)in);
            for (int i = 0; i < out * R; i++) W->b[l][p][i] = 0.3f * frand(&g);
        }
    W->alpha = 8.0f;
}

static void free_weights(weights *W) {
    free(W->embd); free(W->norm);
    for (int l = 0; l < NL; l++)
        for (int p = 0; p < 7; p++) { free(W->w[l][p]); free(W->a[l][p]); free(W->b[l][p]); }
}

static void tmp_path(char *p, size_t n, const char *tag) {
    snprintf(p, n, "/tmp/lm_test_adapter_%s_XXXXXX", tag);
    int fd = mkstemp(p);
    assert_true(fd >= 0);
    close(fd);
}

static void add_f32(gguf_writer *w, const char *name, int ne0, int ne1, const float *x) {
    lm_err err = {0};
    int64_t ne[2] = {ne0, ne1};
    if (gguf_add_tensor(w, name, LM_F32, ne1 == 1 ? 1 : 2, ne, x, sizeof(float) * ne0 * ne1,
                        &err))
        fail_msg("add %s: %s", name, err.msg);
}

/* Base model; with merge_mul != 0 the projections hold W + merge_mul * B A. */
static void write_model(const weights *W, const char *path, double merge_mul) {
    gguf_writer *w = gguf_writer_new();
    lm_err err = {0};
    gguf_set_str(w, "general.architecture", "llama", &err);
    gguf_set_u32(w, "llama.block_count", NL, &err);
    gguf_set_u32(w, "llama.embedding_length", D, &err);
    gguf_set_u32(w, "llama.feed_forward_length", FF, &err);
    gguf_set_u32(w, "llama.attention.head_count", NH, &err);
    gguf_set_u32(w, "llama.attention.head_count_kv", NKV, &err);
    gguf_set_u32(w, "llama.context_length", 64, &err);
    gguf_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f, &err);
    add_f32(w, "token_embd.weight", D, V, W->embd);
    add_f32(w, "output_norm.weight", D, 1, W->norm);
    float *tmp = malloc(sizeof(float) * FF * FF);
    for (int l = 0; l < NL; l++) {
        char nm[64];
        snprintf(nm, sizeof nm, "blk.%d.attn_norm.weight", l);
        add_f32(w, nm, D, 1, W->norm);
        snprintf(nm, sizeof nm, "blk.%d.ffn_norm.weight", l);
        add_f32(w, nm, D, 1, W->norm);
        for (int p = 0; p < 7; p++) {
            int in = PIN[p], out = POUT[p];
            for (int o = 0; o < out; o++)
                for (int i = 0; i < in; i++) {
                    double s = 0;
                    for (int j = 0; j < R; j++)
                        s += (double)W->b[l][p][o * R + j] * W->a[l][p][j * in + i];
                    tmp[o * in + i] = (float)(W->w[l][p][o * in + i] + merge_mul * s);
                }
            snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, PROJ[p]);
            add_f32(w, nm, in, out, tmp);
        }
    }
    free(tmp);
    if (gguf_write(w, path, &err)) fail_msg("gguf_write: %s", err.msg);
    gguf_writer_free(w);
}

typedef struct {               /* ways to spoil an adapter file */
    const char *arch, *type, *adapter_type;
    const char *skip;          /* tensor to leave out */
    const char *bad;           /* tensor written with one extra row */
    const char *extra;         /* unknown tensor to add */
    int only_attn;             /* adapt q,k,v,o only */
} aspec;

static void write_adapter(const weights *W, const char *path, aspec s) {
    gguf_writer *w = gguf_writer_new();
    lm_err err = {0};
    gguf_set_str(w, "general.architecture", s.arch ? s.arch : "llama", &err);
    gguf_set_str(w, "general.type", s.type ? s.type : "adapter", &err);
    gguf_set_str(w, "adapter.type", s.adapter_type ? s.adapter_type : "lora", &err);
    gguf_set_f32(w, "adapter.lora.alpha", W->alpha, &err);
    float *big = calloc((size_t)(FF + 1) * (FF + 1), sizeof(float));
    for (int l = 0; l < NL; l++)
        for (int p = 0; p < (s.only_attn ? 4 : 7); p++) {
            char na[64], nb[64];
            snprintf(na, sizeof na, "blk.%d.%s.weight.lora_a", l, PROJ[p]);
            snprintf(nb, sizeof nb, "blk.%d.%s.weight.lora_b", l, PROJ[p]);
            int extra_a = s.bad && !strcmp(s.bad, na), extra_b = s.bad && !strcmp(s.bad, nb);
            if (!(s.skip && !strcmp(s.skip, na))) {
                memcpy(big, W->a[l][p], sizeof(float) * R * PIN[p]);
                add_f32(w, na, PIN[p] + extra_a, R, extra_a ? big : W->a[l][p]);
            }
            if (!(s.skip && !strcmp(s.skip, nb)))
                add_f32(w, nb, R, POUT[p] + extra_b, extra_b ? big : W->b[l][p]);
        }
    if (s.extra) add_f32(w, s.extra, D, R, big);
    free(big);
    if (gguf_write(w, path, &err)) fail_msg("gguf_write: %s", err.msg);
    gguf_writer_free(w);
}

static const int32_t TOK[NTOK] = {3, 17, 42, 5, 79, 0, 11};

static void eval_all(lm_ctx *c, float *logits) {
    lm_err err = {0};
    lm_ctx_truncate(c, 0);
    /* a prompt batch then single-token decode: both paths see the adapter */
    if (lm_eval(c, TOK, 4, LM_LOGITS_ALL, logits, &err)) fail_msg("%s", err.msg);
    for (int t = 4; t < NTOK; t++)
        if (lm_eval(c, TOK + t, 1, LM_LOGITS_LAST, logits + (size_t)t * V, &err))
            fail_msg("%s", err.msg);
}

static float max_diff(const float *x, const float *y, int n) {
    float m = 0;
    for (int i = 0; i < n; i++) m = fmaxf(m, fabsf(x[i] - y[i]));
    return m;
}

typedef struct {
    weights W;
    char base[64], merged[64], adapter[64];
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    make_weights(&f->W, 0x1234567ULL);
    tmp_path(f->base, sizeof f->base, "base");
    tmp_path(f->merged, sizeof f->merged, "merged");
    tmp_path(f->adapter, sizeof f->adapter, "lora");
    write_model(&f->W, f->base, 0.0);
    write_model(&f->W, f->merged, 0.5 * f->W.alpha / R);   /* scale 0.5 */
    write_adapter(&f->W, f->adapter, (aspec){0});
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    unlink(f->base); unlink(f->merged); unlink(f->adapter);
    free_weights(&f->W);
    free(f);
    return 0;
}

static void test_runtime_equals_merged(void **state) {
    fixture *f = *state;
    lm_err err = {0};
    lm_model *base = lm_model_load(f->base, &err), *merged = lm_model_load(f->merged, &err);
    assert_non_null(base); assert_non_null(merged);
    lm_adapter *a = lm_adapter_load(base, f->adapter, &err);
    if (!a) fail_msg("%s", err.msg);
    assert_int_equal(a->rank, R);
    assert_int_equal(a->n_pairs, NL * 7);
    lm_ctx *c = lm_ctx_new(base, 32, NULL, &err), *cm = lm_ctx_new(merged, 32, NULL, &err);
    float *x = malloc(sizeof(float) * NTOK * V), *y = malloc(sizeof(float) * NTOK * V);
    float *b0 = malloc(sizeof(float) * NTOK * V);
    eval_all(c, b0);
    assert_int_equal(lm_ctx_set_adapter(c, a, 0.5f, &err), 0);
    eval_all(c, x);
    eval_all(cm, y);
    float dm = max_diff(x, y, NTOK * V), db = max_diff(x, b0, NTOK * V);
    assert_true(dm < 1e-5f);
    assert_true(db > 1e-2f);   /* the adapter really changes the output */

    /* lm_merge_write's F32 output is the same model */
    char out[64];
    tmp_path(out, sizeof out, "mw");
    if (lm_merge_write(f->base, f->adapter, out, LM_F32, 0.5f, 0.0, NULL, NULL, &err)) fail_msg("%s", err.msg);
    lm_model *mw = lm_model_load(out, &err);
    assert_non_null(mw);
    lm_ctx *cw = lm_ctx_new(mw, 32, NULL, &err);
    eval_all(cw, y);
    assert_true(max_diff(x, y, NTOK * V) < 1e-5f);
    lm_ctx_free(cw); lm_model_free(mw);
    /* quantized merge loads and stays close (Q8_0 of the merged weights) */
    if (lm_merge_write(f->base, f->adapter, out, LM_Q8_0, 0.5f, 0.0, NULL, NULL, &err)) fail_msg("%s", err.msg);
    mw = lm_model_load(out, &err);
    assert_non_null(mw);
    assert_int_equal(mw->layers[0].wq.type, LM_Q8_0);
    cw = lm_ctx_new(mw, 32, NULL, &err);
    eval_all(cw, y);
    /* Q8_0 error (~0.4% per weight, embeddings included) is well below the adapter's effect */
    float dq = max_diff(x, y, NTOK * V);
    if (!(dq < 0.25f * db)) fail_msg("q8_0 merge differs by %g, adapter effect %g", dq, db);
    lm_ctx_free(cw); lm_model_free(mw);
    unlink(out);

    /* scale 0 and removal give the base exactly */
    assert_int_equal(lm_ctx_set_adapter(c, a, 0.0f, &err), 0);
    eval_all(c, x);
    assert_memory_equal(x, b0, sizeof(float) * NTOK * V);
    assert_int_equal(lm_ctx_set_adapter(c, NULL, 1.0f, &err), 0);
    eval_all(c, x);
    assert_memory_equal(x, b0, sizeof(float) * NTOK * V);
    free(x); free(y); free(b0);
    lm_ctx_free(c); lm_ctx_free(cm);
    lm_adapter_free(a);
    lm_model_free(base); lm_model_free(merged);
}

/* lm_merge_report: the share of the adapter's change a merge wrote. A base
 * already on the Q4_1 grid with a change below Q4_1's step rounds back to
 * itself (the change erased; refused under min_kept, nothing written);
 * F32 keeps it exactly; Q8_0 (a finer step) nearly. */
static void test_merge_report(void **state) {
    fixture *f = *state;
    lm_err err = {0};
    char q41[64], out[64];
    tmp_path(q41, sizeof q41, "q41base");
    tmp_path(out, sizeof out, "q41merged");
    lm_merge_report rep;
    if (lm_merge_write(f->base, NULL, q41, LM_Q4_1, 1.0f, 0.0, &rep, NULL, &err)) fail_msg("%s", err.msg);
    assert_int_equal(rep.n_adapted, 0);
    const float small = 0.02f;   /* a fine-tune's size of change, not a random adapter's */
    assert_int_equal(lm_merge_write(q41, f->adapter, out, LM_F32, small, 0.9, &rep, NULL, &err), 0);
    assert_int_equal(rep.n_adapted, NL * 7);
    if (fabs(rep.kept - 1.0) > 1e-6) fail_msg("f32 kept %g", rep.kept);
    assert_int_equal(lm_merge_write(q41, f->adapter, out, LM_Q8_0, small, 0.9, &rep, NULL, &err), 0);
    if (!(rep.kept > 0.95)) fail_msg("q8_0 kept %g", rep.kept);
    /* rows merged on 3 threads: the same report to the bit (summed in row order) */
    lm_pool *pool = lm_pool_new(3, &err);
    assert_non_null(pool);
    lm_merge_report rep3;
    assert_int_equal(lm_merge_write(q41, f->adapter, out, LM_Q8_0, small, 0.9, &rep3, pool, &err), 0);
    assert_true(rep3.kept == rep.kept && rep3.n_adapted == rep.n_adapted);
    lm_pool_free(pool);
    unlink(out);
    assert_int_equal(lm_merge_write(q41, f->adapter, out, LM_Q4_1, small, 0.9, &rep, NULL, &err), -1);
    if (!(rep.kept < 0.5)) fail_msg("q4_1 kept %g", rep.kept);
    assert_non_null(strstr(err.msg, "of the adapter's change"));
    assert_int_equal(access(out, F_OK), -1);    /* refused: nothing written */
    /* min_kept 0 (--force) writes it, with the same report */
    double refused = rep.kept;
    assert_int_equal(lm_merge_write(q41, f->adapter, out, LM_Q4_1, small, 0.0, &rep, NULL, &err), 0);
    assert_true(rep.kept == refused);
    assert_int_equal(access(out, F_OK), 0);
    unlink(out);
    unlink(q41);
}

static void test_two_contexts_own_adapters(void **state) {
    fixture *f = *state;
    lm_err err = {0};
    weights W2;
    make_weights(&W2, 0xfeedULL);   /* a second adapter: same shapes, other values */
    char a2p[64];
    tmp_path(a2p, sizeof a2p, "lora2");
    write_adapter(&W2, a2p, (aspec){.only_attn = 1});
    lm_model *m = lm_model_load(f->base, &err);
    lm_adapter *a1 = lm_adapter_load(m, f->adapter, &err), *a2 = lm_adapter_load(m, a2p, &err);
    assert_non_null(a1); assert_non_null(a2);
    assert_int_equal(a2->targets, 0xfu);
    lm_ctx *c1 = lm_ctx_new(m, 32, NULL, &err), *c2 = lm_ctx_new(m, 32, NULL, &err);
    lm_ctx *c0 = lm_ctx_new(m, 32, NULL, &err);
    lm_ctx_set_adapter(c1, a1, 1.0f, &err);
    lm_ctx_set_adapter(c2, a2, 1.0f, &err);
    size_t n = (size_t)NTOK * V;
    float *r1 = malloc(sizeof(float) * n), *r2 = malloc(sizeof(float) * n);
    float *r0 = malloc(sizeof(float) * n), *s = malloc(sizeof(float) * n);
    eval_all(c1, r1); eval_all(c2, r2); eval_all(c0, r0);
    /* interleaved token by token: each context keeps its own adapter */
    float *o1 = malloc(sizeof(float) * n), *o2 = malloc(sizeof(float) * n);
    lm_ctx_truncate(c1, 0); lm_ctx_truncate(c2, 0); lm_ctx_truncate(c0, 0);
    for (int t = 0; t < NTOK; t++) {
        assert_int_equal(lm_eval(c1, TOK + t, 1, LM_LOGITS_LAST, o1 + t * V, &err), 0);
        assert_int_equal(lm_eval(c0, TOK + t, 1, LM_LOGITS_LAST, s + t * V, &err), 0);
        assert_int_equal(lm_eval(c2, TOK + t, 1, LM_LOGITS_LAST, o2 + t * V, &err), 0);
    }
    assert_true(max_diff(o1, r1, (int)n) < 1e-5f);
    assert_true(max_diff(o2, r2, (int)n) < 1e-5f);
    assert_true(max_diff(s, r0, (int)n) < 1e-5f);
    assert_true(max_diff(r1, r2, (int)n) > 1e-2f);
    assert_true(max_diff(r1, r0, (int)n) > 1e-2f && max_diff(r2, r0, (int)n) > 1e-2f);
    free(r1); free(r2); free(r0); free(s); free(o1); free(o2);
    lm_ctx_free(c0); lm_ctx_free(c1); lm_ctx_free(c2);
    lm_adapter_free(a1); lm_adapter_free(a2);
    lm_model_free(m);
    unlink(a2p);
    free_weights(&W2);
}

static void expect_error(fixture *f, aspec s, const char *want1, const char *want2) {
    char p[64];
    tmp_path(p, sizeof p, "bad");
    write_adapter(&f->W, p, s);
    lm_err err = {0};
    lm_model *m = lm_model_load(f->base, &err);
    assert_non_null(m);
    lm_adapter *a = lm_adapter_load(m, p, &err);
    assert_null(a);
    if (!strstr(err.msg, want1) || (want2 && !strstr(err.msg, want2)))
        fail_msg("error '%s' lacks '%s' / '%s'", err.msg, want1, want2 ? want2 : "");
    assert_non_null(strstr(err.msg, p));   /* and names the file */
    lm_model_free(m);
    unlink(p);
}

static void test_errors(void **state) {
    fixture *f = *state;
    expect_error(f, (aspec){.bad = "blk.1.ffn_up.weight.lora_b"}, "blk.1.ffn_up.weight.lora_b",
                 "shape");
    expect_error(f, (aspec){.bad = "blk.0.attn_k.weight.lora_a"}, "blk.0.attn_k.weight.lora_a",
                 "shape");
    expect_error(f, (aspec){.skip = "blk.1.attn_v.weight.lora_a"}, "blk.1.attn_v.weight.lora_a",
                 "missing");
    expect_error(f, (aspec){.skip = "blk.0.ffn_down.weight.lora_b"},
                 "blk.0.ffn_down.weight.lora_b", "missing");
    expect_error(f, (aspec){.arch = "qwen2"}, "qwen2", "llama");
    expect_error(f, (aspec){.type = "model"}, "general.type", NULL);
    expect_error(f, (aspec){.adapter_type = "ia3"}, "adapter.type", NULL);
    expect_error(f, (aspec){.extra = "output.weight.lora_a"}, "output.weight.lora_a", NULL);
    expect_error(f, (aspec){.extra = "blk.7.attn_q.weight.lora_a"}, "blk.7.attn_q.weight.lora_a",
                 NULL);
    /* a rank that differs from the others */
    {
        char p[64];
        tmp_path(p, sizeof p, "rank");
        gguf_writer *w = gguf_writer_new();
        lm_err err = {0};
        gguf_set_str(w, "general.architecture", "llama", &err);
        gguf_set_str(w, "general.type", "adapter", &err);
        gguf_set_str(w, "adapter.type", "lora", &err);
        add_f32(w, "blk.0.attn_q.weight.lora_a", D, R, f->W.a[0][0]);
        add_f32(w, "blk.0.attn_q.weight.lora_b", R, NH * HD, f->W.b[0][0]);
        add_f32(w, "blk.0.attn_v.weight.lora_a", D, R - 1, f->W.a[0][2]);
        add_f32(w, "blk.0.attn_v.weight.lora_b", R - 1, NKV * HD, f->W.b[0][2]);
        assert_int_equal(gguf_write(w, p, &err), 0);
        gguf_writer_free(w);
        lm_model *m = lm_model_load(f->base, &err);
        lm_adapter *a = lm_adapter_load(m, p, &err);
        assert_null(a);
        assert_non_null(strstr(err.msg, "blk.0.attn_v.weight.lora_a"));
        assert_non_null(strstr(err.msg, "rank"));
        lm_model_free(m);
        unlink(p);
    }
}

static int read_all(const char *path, char **buf, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    *buf = malloc(*n ? *n : 1);
    size_t got = fread(*buf, 1, *n, f);
    fclose(f);
    return got == *n ? 0 : -1;
}

/* GGUF -> PEFT -> GGUF gives the same file back (Q/K lora_B rows permuted
 * there and back); a broken folder is refused naming the file. Whether
 * peft reads the folder as we mean it is tests/peft's job. */
static void test_peft_round_trip(void **state) {
    fixture *f = *state;
    lm_err err = {0};
    lm_model *m = lm_model_load(f->base, &err);
    lm_adapter *a = lm_adapter_load(m, f->adapter, &err);
    assert_non_null(a);
    char dir[64], back[64];
    snprintf(dir, sizeof dir, "/tmp/lm_test_peft_XXXXXX");
    assert_non_null(mkdtemp(dir));
    tmp_path(back, sizeof back, "back");
    if (lm_peft_write(m, a, dir, "x/y", &err)) fail_msg("%s", err.msg);
    if (lm_peft_import(m, dir, back, &err)) fail_msg("%s", err.msg);
    char *x, *y;
    size_t nx, ny;
    assert_int_equal(read_all(f->adapter, &x, &nx), 0);
    assert_int_equal(read_all(back, &y, &ny), 0);
    assert_int_equal(nx, ny);
    assert_memory_equal(x, y, nx);
    free(x); free(y);
    /* the permutation really moves q rows: HF row 1 is GGUF row 2 */
    assert_int_equal(lm_peft_gguf_row(1, HD), 2);
    assert_int_equal(lm_peft_gguf_row(HD / 2, HD), 1);
    /* a truncated safetensors file */
    char st[128];
    snprintf(st, sizeof st, "%s/adapter_model.safetensors", dir);
    assert_int_equal(truncate(st, 100), 0);
    assert_int_equal(lm_peft_import(m, dir, back, &err), -1);
    assert_non_null(strstr(err.msg, "adapter_model.safetensors"));
    unlink(st);
    snprintf(st, sizeof st, "%s/adapter_config.json", dir);
    unlink(st);
    rmdir(dir);
    unlink(back);
    lm_adapter_free(a);
    lm_model_free(m);
}

/* Every factor of a's pair (l, p), widened to f32: [R * in] then [out * R]. */
static void pair_floats(const lm_adapter *a, int l, int p, float *fa, float *fb) {
    const lm_adapter_pair *pr = lm_adapter_get(a, l, p);
    lm_dequant_row(pr->type, pr->a, fa, (int64_t)R * pr->in);
    lm_dequant_row(pr->type, pr->b, fb, (int64_t)R * pr->out);
}

/* An adapter converted to F16 (lm_adapter_convert) stays F16 in memory, half
 * the bytes, its values the f32 ones rounded to nearest even; it runs through
 * the F16 matmul (activations rounded to f16, as llama.cpp runs an F16
 * adapter: tests/oracle/test_export_llamacpp.py holds it to llama.cpp's
 * logits), close to the same values widened to F32 and, with a kernel set
 * that rounds the activations, not equal to them. Converting back, merging
 * and the PEFT export see the widened values exactly. */
static void test_f16_adapter(void **state) {
    fixture *f = *state;
    lm_err err = {0};
    char p16[64], p32[64], merged[64];
    tmp_path(p16, sizeof p16, "f16");
    tmp_path(p32, sizeof p32, "back32");
    tmp_path(merged, sizeof merged, "m16");
    if (lm_adapter_convert(f->adapter, p16, LM_F16, &err)) fail_msg("%s", err.msg);
    lm_model *m = lm_model_load(f->base, &err);
    assert_non_null(m);
    lm_adapter *a32 = lm_adapter_load(m, f->adapter, &err);
    lm_adapter *a16 = lm_adapter_load(m, p16, &err);
    lm_adapter *w16 = lm_adapter_load(m, p16, &err);
    if (!a32 || !a16 || !w16) fail_msg("%s", err.msg);
    assert_true(lm_adapter_bytes(a16) * 10 < lm_adapter_bytes(a32) * 6);
    float fa[FF * R], fb[FF * R];
    for (int l = 0; l < NL; l++)
        for (int p = 0; p < 7; p++) {
            assert_int_equal(lm_adapter_get(a16, l, p)->type, LM_F16);
            assert_int_equal(lm_adapter_get(a32, l, p)->type, LM_F32);
            pair_floats(a16, l, p, fa, fb);
            for (int i = 0; i < R * PIN[p]; i++)
                assert_true(fa[i] == lm_f16_to_f32(lm_f32_to_f16(f->W.a[l][p][i])));
            for (int i = 0; i < R * POUT[p]; i++)
                assert_true(fb[i] == lm_f16_to_f32(lm_f32_to_f16(f->W.b[l][p][i])));
        }
    /* the same values as F32 */
    assert_int_equal(lm_adapter_to_f32(w16, &err), 0);
    assert_true(lm_adapter_bytes(w16) >= lm_adapter_bytes(a32));
    for (int l = 0; l < NL; l++)
        for (int p = 0; p < 7; p++) {
            assert_int_equal(lm_adapter_get(w16, l, p)->type, LM_F32);
            float ga[FF * R], gb[FF * R];
            pair_floats(a16, l, p, fa, fb);
            pair_floats(w16, l, p, ga, gb);
            assert_memory_equal(fa, ga, sizeof(float) * R * PIN[p]);
            assert_memory_equal(fb, gb, sizeof(float) * R * POUT[p]);
        }
    size_t n = (size_t)NTOK * V;
    float *x16 = malloc(sizeof(float) * n), *xw = malloc(sizeof(float) * n);
    float *x32 = malloc(sizeof(float) * n), *b0 = malloc(sizeof(float) * n);
    lm_ctx *c = lm_ctx_new(m, 32, NULL, &err);
    eval_all(c, b0);
    assert_int_equal(lm_ctx_set_adapter(c, a16, 1.0f, &err), 0);
    eval_all(c, x16);
    assert_int_equal(lm_ctx_set_adapter(c, w16, 1.0f, &err), 0);
    eval_all(c, xw);
    assert_int_equal(lm_ctx_set_adapter(c, a32, 1.0f, &err), 0);
    eval_all(c, x32);
    float effect = max_diff(x32, b0, (int)n), d16 = max_diff(x16, xw, (int)n);
    float dround = max_diff(xw, x32, (int)n);   /* what rounding the factors did */
    assert_true(effect > 1e-2f);
    if (!(d16 < 0.02f * effect))
        fail_msg("f16 adapter differs from its widened values by %g (adapter effect %g)",
                 (double)d16, (double)effect);
    if (lm_kernels_default()->f16_x && !(d16 > 0))
        fail_msg("the f16 adapter gave the widened adapter's logits: the F16 path did not run");
    assert_true(dround < 0.02f * effect);

    /* back to F32: the widened values, as a file */
    if (lm_adapter_convert(p16, p32, LM_F32, &err)) fail_msg("%s", err.msg);
    lm_adapter *b32 = lm_adapter_load(m, p32, &err);
    assert_non_null(b32);
    assert_int_equal(lm_ctx_set_adapter(c, b32, 1.0f, &err), 0);
    eval_all(c, x32);
    assert_memory_equal(x32, xw, sizeof(float) * n);
    lm_adapter_free(b32);
    /* merged: the widened values */
    if (lm_merge_write(f->base, p16, merged, LM_F32, 1.0f, 0.0, NULL, NULL, &err)) fail_msg("%s", err.msg);
    lm_model *mm = lm_model_load(merged, &err);
    assert_non_null(mm);
    lm_ctx *cm = lm_ctx_new(mm, 32, NULL, &err);
    eval_all(cm, x32);
    assert_true(max_diff(x32, xw, (int)n) < 1e-5f);
    lm_ctx_free(cm);
    lm_model_free(mm);
    /* PEFT: written from the F16 pairs, imported as the widened F32 */
    char dir[64];
    snprintf(dir, sizeof dir, "/tmp/lm_test_peft16_XXXXXX");
    assert_non_null(mkdtemp(dir));
    if (lm_peft_write(m, a16, dir, NULL, &err)) fail_msg("%s", err.msg);
    if (lm_peft_import(m, dir, p32, &err)) fail_msg("%s", err.msg);
    b32 = lm_adapter_load(m, p32, &err);
    assert_non_null(b32);
    for (int l = 0; l < NL; l++)
        for (int p = 0; p < 7; p++) {
            float ga[FF * R], gb[FF * R];
            pair_floats(a16, l, p, fa, fb);
            pair_floats(b32, l, p, ga, gb);
            assert_memory_equal(fa, ga, sizeof(float) * R * PIN[p]);
            assert_memory_equal(fb, gb, sizeof(float) * R * POUT[p]);
        }
    lm_adapter_free(b32);
    char st[128];
    snprintf(st, sizeof st, "%s/adapter_model.safetensors", dir);
    unlink(st);
    snprintf(st, sizeof st, "%s/adapter_config.json", dir);
    unlink(st);
    rmdir(dir);

    /* refused: another type, a file that is not an adapter */
    assert_int_equal(lm_adapter_convert(f->adapter, p32, LM_Q8_0, &err), -1);
    assert_non_null(strstr(err.msg, "Q8_0"));
    assert_int_equal(lm_adapter_convert(f->base, p32, LM_F16, &err), -1);
    assert_non_null(strstr(err.msg, "general.type"));
    assert_non_null(strstr(err.msg, f->base));

    free(x16); free(xw); free(x32); free(b0);
    lm_ctx_free(c);
    lm_adapter_free(a32); lm_adapter_free(a16); lm_adapter_free(w16);
    lm_model_free(m);
    unlink(p16); unlink(p32); unlink(merged);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_runtime_equals_merged),
        cmocka_unit_test(test_merge_report),
        cmocka_unit_test(test_two_contexts_own_adapters),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_peft_round_trip),
        cmocka_unit_test(test_f16_adapter),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
