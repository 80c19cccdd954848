/* LoRA dropout (lora.h): the hash is splitmix64 (known outputs), the SIMD
 * and scalar kernels give the spec's mask bit for bit, the keep
 * rate is 1 - p over many elements, kept values are scaled by 1/(1 - p),
 * masks are independent across projections and keys and do not depend on
 * the thread count; in the model, p = 0 is bit-identical to no dropout, a
 * mask is a pure function of its key, and the gradient with dropout
 * matches finite differences of the (fixed-mask) loss; the value reaches
 * the PEFT export and comes back from its import. tests/torch/ checks
 * the same masks, built by numpy, against PyTorch. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/pool.h"
#include "model/adapter.h"
#include "gguf/gguf.h"
#include "model/llama.h"
#include "train/peft.h"
#include "train/lora.h"
#include "train/train_internal.h"
#include "train/train_model.h"

#include "helpers.h"

/* splitmix64 seeded with 0 starts 0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4
 * (Vigna's reference splitmix64.c); pkey(0, 0, t) is its t-th output. */
static void test_hash_is_splitmix64(void **state) {
    (void)state;
    assert_true(lm_lora_dropout_pkey(0, 0, 0) == 0xe220a8397b1dcdafull);
    assert_true(lm_lora_dropout_pkey(0, 0, 1) == 0x6e789e6aa1b965f4ull);
    /* layer-major counter: (layer 1, target 0) follows (layer 0, target 6) */
    assert_true(lm_lora_dropout_pkey(5, 1, 0) == lm_lora_dropout_pkey(5, 0, LM_LORA_N));
    assert_true(lm_lora_dropout_key(42, 0, 0) != lm_lora_dropout_key(42, 0, 1));
    assert_true(lm_lora_dropout_key(42, 1, 0) != lm_lora_dropout_key(42, 0, 1));
    assert_true(lm_lora_dropout_key(42, 0, 0) != lm_lora_dropout_key(43, 0, 0));
}

/* The spec of lora.h written out element by element, independently of
 * lora_dropout.c's row-wise loops. */
static uint64_t spec_at(uint64_t h, uint64_t i) {
    uint64_t z = h + (i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static int spec_kept(uint64_t pkey, uint64_t e, float p) {
    uint64_t w = spec_at(pkey, e / 2);
    uint32_t u = e % 2 ? (uint32_t)w : (uint32_t)(w >> 32);
    return u >= (uint32_t)floor((double)p * 4294967296.0);
}

/* Odd and even row lengths (rows starting on odd elements), shorter and
 * longer than one SIMD block: the SIMD and scalar kernels and the spec
 * agree on every element, with and without accumulation. */
static void test_spec_simd_scalar(void **state) {
    (void)state;
    const int shapes[][2] = {{1, 1}, {3, 7}, {5, 9}, {4, 16}, {7, 17}, {33, 53}, {2, 576}};
    const float ps[] = {0.1f, 0.5f, 0.97f};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (size_t k = 0; k < sizeof ps / sizeof *ps; k++) {
            int N = shapes[s][0], in = shapes[s][1];
            size_t n = (size_t)N * in;
            float *x = malloc(n * sizeof(float)), *a = malloc(n * sizeof(float)),
                  *b = malloc(n * sizeof(float));
            assert_non_null(x);
            assert_non_null(a);
            assert_non_null(b);
            float p = ps[k], scale = (float)(1.0 / (1.0 - (double)p));
            uint64_t pk = lm_lora_dropout_pkey(lm_lora_dropout_key(1u << 31, s, k), 1, LM_LORA_UP);
            for (size_t i = 0; i < n; i++) x[i] = (float)((i * 37) % 101) / 7.0f - 5.0f;
            for (int acc = 0; acc < 2; acc++) {
                for (size_t i = 0; i < n; i++) a[i] = b[i] = acc ? 0.5f : NAN;
                lm_lora_dropout_apply_isa(NULL, a, x, N, in, p, pk, acc, 0, 0, 1);
                lm_lora_dropout_apply_isa(NULL, b, x, N, in, p, pk, acc, 0, 0, 0);
                assert_memory_equal(a, b, n * sizeof(float));
                for (size_t i = 0; i < n; i++) {
                    float want = (spec_kept(pk, i, p) ? x[i] * scale : 0.0f) + (acc ? 0.5f : 0.0f);
                    if (a[i] != want)
                        fail_msg("%dx%d p %g acc %d: element %zu is %g, spec %g", N, in, (double)p,
                                 acc, i, (double)a[i], (double)want);
                }
            }
            free(x);
            free(a);
            free(b);
        }
}

enum { RN = 600, RIN = 1000 };   /* 600k elements */

static void test_keep_rate(void **state) {
    (void)state;
    size_t n = (size_t)RN * RIN;
    float *x = malloc(n * sizeof(float)), *o = malloc(n * sizeof(float)),
          *o2 = malloc(n * sizeof(float));
    assert_non_null(x);
    assert_non_null(o);
    assert_non_null(o2);
    for (size_t i = 0; i < n; i++) x[i] = 1.0f;
    const float ps[] = {0.05f, 0.1f, 0.5f, 0.9f};
    uint64_t key = lm_lora_dropout_key(42, 7, 1);
    for (size_t k = 0; k < sizeof ps / sizeof *ps; k++) {
        float p = ps[k], scale = (float)(1.0 / (1.0 - (double)p));
        lm_lora_dropout_apply(NULL, o, x, RN, RIN, p, lm_lora_dropout_pkey(key, 3, LM_LORA_Q), 0);
        lm_lora_dropout_apply(NULL, o2, x, RN, RIN, p, lm_lora_dropout_pkey(key, 3, LM_LORA_K), 0);
        size_t kept = 0, both = 0, row0 = 0;
        for (size_t i = 0; i < n; i++) {
            if (o[i] != 0.0f && o[i] != scale) fail_msg("p %g: element %zu is %g", (double)p, i, (double)o[i]);
            kept += o[i] != 0.0f;
            both += (o[i] != 0.0f) == (o2[i] != 0.0f);
            if (i < RIN) row0 += o[i] != 0.0f;
        }
        /* binomial sd sqrt(p (1 - p) / n) <= 6.5e-4: 6 sd */
        double rate = (double)kept / (double)n;
        if (fabs(rate - (1.0 - p)) > 4e-3) fail_msg("p %g: keep rate %.5f", (double)p, rate);
        /* q and k masks on the same input are independent: they agree with
         * probability p^2 + (1 - p)^2, not 1 */
        double agree = (double)both / (double)n, want = p * p + (1 - p) * (1 - p);
        if (fabs(agree - want) > 4e-3) fail_msg("p %g: q/k masks agree %.5f, want %.5f", (double)p, agree, want);
        /* rows differ too (the counter runs over rows), not one row repeated */
        if (fabs((double)row0 / RIN - (1.0 - p)) > 0.08) fail_msg("p %g: row 0 keeps %zu", (double)p, row0);
    }
    free(x);
    free(o);
    free(o2);
}

/* Values are x / (1 - p) where kept; acc adds; the pool's thread count and
 * NULL give the same result bit for bit. */
static void test_apply_values_threads(void **state) {
    (void)state;
    enum { N = 37, IN = 53 };
    float x[N * IN], a[N * IN], b[N * IN], c[N * IN], d[N * IN];
    for (int i = 0; i < N * IN; i++) x[i] = (float)((i * 37) % 101) / 7.0f - 5.0f;
    float p = 0.3f, scale = (float)(1.0 / (1.0 - (double)p));
    uint64_t pk = lm_lora_dropout_pkey(lm_lora_dropout_key(1, 2, 3), 0, LM_LORA_DOWN);
    lm_err err = {{0}};
    lm_pool *p1 = lm_pool_new(1, &err), *p3 = lm_pool_new(3, &err);
    assert_non_null(p1);
    assert_non_null(p3);
    lm_lora_dropout_apply(NULL, a, x, N, IN, p, pk, 0);
    lm_lora_dropout_apply(p1, b, x, N, IN, p, pk, 0);
    lm_lora_dropout_apply(p3, c, x, N, IN, p, pk, 0);
    assert_memory_equal(a, b, sizeof a);
    assert_memory_equal(a, c, sizeof a);
    for (int i = 0; i < N * IN; i++) {
        d[i] = 1.0f;
        if (a[i] != 0.0f && a[i] != x[i] * scale) fail_msg("element %d: %g from %g", i, (double)a[i], (double)x[i]);
    }
    lm_lora_dropout_apply(p3, d, x, N, IN, p, pk, 1);
    for (int i = 0; i < N * IN; i++) assert_true(d[i] == 1.0f + a[i]);
    lm_pool_free(p1);
    lm_pool_free(p3);
}

/* ---- in the model ------------------------------------------------------ */

static const lm_tconfig tiny = {
    .n_vocab = 11, .dim = 8, .n_layers = 2, .n_heads = 2, .n_kv_heads = 1, .head_dim = 4,
    .ffn_dim = 12, .rope_base = 10000.0f, .rms_eps = 1e-5f, .tied = 0,
};
enum { MB = 2, MT = 6, MN = MB * MT };

typedef struct mcase {
    lm_tmodel *m;
    lm_lora *lora;
    lm_tacts *a;
    int32_t tokens[MN], targets[MN];
    uint8_t mask[MN];
    lm_tbatch b;
} mcase;

static void mc_init(mcase *c) {
    lm_err err = {{0}};
    c->m = lm_tmodel_new_random(&tiny, 7, 0.5f, &err);
    assert_non_null(c->m);
    c->lora = lm_lora_new(c->m, 3, 6.0f, LM_LORA_ALL, 3, &err);
    assert_non_null(c->lora);
    /* B != 0, so the adapters change the output and dropout matters */
    for (int i = 0; i < c->lora->n_tensors; i++) {
        const lm_ttensor *t = &c->lora->tensors[i];
        if (strstr(t->name, "lora_b"))
            for (size_t j = 0; j < t->numel; j++)
                c->lora->params[t->offset + j] = 0.3f * (float)sin(1.7 * (double)(j + 13 * i));
    }
    c->a = lm_tacts_new(c->m, c->lora, MB, MT, 0, &err);
    assert_non_null(c->a);
    for (int i = 0; i < MN; i++) {
        c->tokens[i] = (int32_t)(i * 7 % 11);
        c->targets[i] = (int32_t)((i * 5 + 3) % 11);
        c->mask[i] = (uint8_t)(i % 6 != 0);
    }
    c->b = (lm_tbatch){.B = MB, .T = MT, .tokens = c->tokens, .targets = c->targets, .mask = c->mask};
}

static void mc_free(mcase *c) {
    lm_tacts_free(c->a);
    lm_lora_free(c->lora);
    lm_tmodel_free(c->m);
}

/* loss and LoRA gradients (copied to g, [n_params]) of batch b */
static double grad(mcase *c, const lm_tbatch *b, float *g) {
    lm_err err = {{0}};
    double loss;
    lm_lora_zero_grads(c->lora);
    if (lm_train_grad(c->m, c->lora, c->a, b, NULL, &loss, &err)) fail_msg("%s", err.msg);
    if (g) memcpy(g, c->lora->grads, c->lora->n_params * sizeof(float));
    return loss;
}

static double loss_of(mcase *c, const lm_tbatch *b) {
    lm_err err = {{0}};
    double loss;
    if (lm_train_forward(c->m, c->lora, c->a, b, NULL, &err) ||
        lm_train_loss(c->m, c->a, b, NULL, 0, NULL, &loss, &err))
        fail_msg("%s", err.msg);
    return loss;
}

static void test_model_p0_and_keys(void **state) {
    (void)state;
    mcase c;
    mc_init(&c);
    size_t np = c.lora->n_params;
    float *g0 = malloc(np * sizeof(float)), *g1 = malloc(np * sizeof(float)),
          *g2 = malloc(np * sizeof(float));
    assert_non_null(g0);
    assert_non_null(g1);
    assert_non_null(g2);
    double l0 = grad(&c, &c.b, g0);
    /* p = 0 with a key is the no-dropout path, bit for bit */
    lm_tbatch b = c.b;
    b.dropout_key = lm_lora_dropout_key(42, 3, 0);
    double l1 = grad(&c, &b, g1);
    assert_true(l0 == l1);
    assert_memory_equal(g0, g1, np * sizeof(float));
    /* p > 0: a pure function of the key (same key twice: same bits) */
    b.lora_dropout = 0.4f;
    l1 = grad(&c, &b, g1);
    double l2 = grad(&c, &b, g2);
    assert_true(l1 == l2);
    assert_memory_equal(g1, g2, np * sizeof(float));
    assert_true(l1 != l0);
    /* another step's key draws other masks */
    lm_tbatch b2 = b;
    b2.dropout_key = lm_lora_dropout_key(42, 4, 0);
    assert_true(grad(&c, &b2, g2) != l1);
    /* the loss seen in forward is the training loss (eval uses the batch) */
    assert_true(loss_of(&c, &b) == l1);
    assert_true(loss_of(&c, &c.b) == l0);
    /* out of range p is an error, not a crash */
    lm_err err = {{0}};
    b.lora_dropout = 1.0f;
    assert_int_equal(lm_train_forward(c.m, c.lora, c.a, &b, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "dropout"));
    b.lora_dropout = NAN;
    assert_int_equal(lm_train_forward(c.m, c.lora, c.a, &b, NULL, &err), -1);
    b.lora_dropout = -0.1f;
    assert_int_equal(lm_train_backward(c.m, c.lora, c.a, &b, NULL, &err), -1);
    free(g0);
    free(g1);
    free(g2);
    mc_free(&c);
}

/* With the masks fixed by the key the loss is smooth in the adapters: the
 * gradient along random directions equals central differences, which
 * checks dropout's backward (dA from the masked input, and dx through the
 * mask into the layers below). */
static void test_model_grad_fd(void **state) {
    (void)state;
    mcase c;
    mc_init(&c);
    lm_tbatch b = c.b;
    b.lora_dropout = 0.35f;
    b.dropout_key = lm_lora_dropout_key(9, 1, 2);
    size_t np = c.lora->n_params;
    float *g = malloc(np * sizeof(float)), *v = malloc(np * sizeof(float)),
          *p0 = malloc(np * sizeof(float));
    assert_non_null(g);
    assert_non_null(v);
    assert_non_null(p0);
    grad(&c, &b, g);
    memcpy(p0, c.lora->params, np * sizeof(float));
    uint64_t s = 77;
    for (int trial = 0; trial < 4; trial++) {
        double gv = 0;
        for (size_t i = 0; i < np; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            v[i] = (float)((double)(s >> 11) / 9007199254740992.0 - 0.5);
            gv += (double)g[i] * v[i];
        }
        /* Richardson: steps h and h/2, truncation error O(h^4) */
        double fdh[2];
        for (int k = 0; k < 2; k++) {
            float h = k ? 1e-3f : 2e-3f;
            for (size_t i = 0; i < np; i++) c.lora->params[i] = p0[i] + h * v[i];
            double lp = loss_of(&c, &b);
            for (size_t i = 0; i < np; i++) c.lora->params[i] = p0[i] - h * v[i];
            double lm = loss_of(&c, &b);
            fdh[k] = (lp - lm) / (2.0 * (double)h);
        }
        memcpy(c.lora->params, p0, np * sizeof(float));
        double fd = (4.0 * fdh[1] - fdh[0]) / 3.0;
        if (fabs(fd - gv) > 1e-3 + 1e-2 * fabs(gv))
            fail_msg("direction %d: gradient %.6g, finite differences %.6g", trial, gv, fd);
    }
    free(g);
    free(v);
    free(p0);
    mc_free(&c);
}

/* The dropout trained with travels: adapter.gguf (adapter.lora.dropout,
 * absent when 0) -> lm_adapter -> the PEFT export's lora_dropout -> back
 * through the import. */
static void test_export_records_dropout(void **state) {
    (void)state;
    char dir[] = "/tmp/lm_test_ldrop_XXXXXX", path[96], base[96], peft[96], back[96];
    assert_non_null(mkdtemp(dir));
    snprintf(base, sizeof base, "%s/base.gguf", dir);
    snprintf(path, sizeof path, "%s/adapter.gguf", dir);
    snprintf(peft, sizeof peft, "%s/peft", dir);
    snprintf(back, sizeof back, "%s/back.gguf", dir);
    lm_err err = {{0}};
    lm_tmodel *tm = lm_tmodel_new_random(&tiny, 7, 0.5f, &err);
    assert_non_null(tm);
    /* the runtime model needs llama.context_length, which a training
     * checkpoint's model.gguf lacks: written here */
    gguf_writer *w = gguf_writer_new();
    assert_non_null(w);
    int rc = gguf_set_str(w, "general.architecture", "llama", &err) ||
             gguf_set_u32(w, "llama.block_count", (uint32_t)tiny.n_layers, &err) ||
             gguf_set_u32(w, "llama.embedding_length", (uint32_t)tiny.dim, &err) ||
             gguf_set_u32(w, "llama.feed_forward_length", (uint32_t)tiny.ffn_dim, &err) ||
             gguf_set_u32(w, "llama.attention.head_count", (uint32_t)tiny.n_heads, &err) ||
             gguf_set_u32(w, "llama.attention.head_count_kv", (uint32_t)tiny.n_kv_heads, &err) ||
             gguf_set_u32(w, "llama.context_length", 64, &err) ||
             gguf_set_f32(w, "llama.attention.layer_norm_rms_epsilon", tiny.rms_eps, &err);
    for (int i = 0; !rc && i < tm->n_tensors; i++) {
        const lm_ttensor *t = &tm->tensors[i];
        rc = gguf_add_tensor(w, t->name, LM_F32, t->n_dims, t->ne, tm->params + t->offset,
                             t->numel * sizeof(float), &err);
    }
    if (rc || gguf_write(w, base, &err)) fail_msg("%s", err.msg);
    gguf_writer_free(w);
    lm_model *m = lm_model_load(base, &err);
    if (!m) fail_msg("%s", err.msg);
    const float ps[] = {0.0f, 0.25f};
    for (int k = 0; k < 2; k++) {
        lm_lora *l = lm_lora_new(tm, 2, 4.0f, LM_LORA_ALL, 1, &err);
        assert_non_null(l);
        l->dropout = ps[k];
        if (lm_lora_save(l, path, &err)) fail_msg("%s", err.msg);
        lm_lora_free(l);
        lm_adapter *a = lm_adapter_load(m, path, &err);
        if (!a) fail_msg("%s", err.msg);
        assert_true(a->dropout == ps[k]);
        if (lm_peft_write(m, a, peft, NULL, &err)) fail_msg("%s", err.msg);
        lm_adapter_free(a);
        char cj[160], buf[4096];
        snprintf(cj, sizeof cj, "%s/adapter_config.json", peft);
        FILE *f = fopen(cj, "r");
        assert_non_null(f);
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        assert_non_null(strstr(buf, k ? "\"lora_dropout\": 0.25," : "\"lora_dropout\": 0.0,"));
        if (lm_peft_import(m, peft, back, &err)) fail_msg("%s", err.msg);
        a = lm_adapter_load(m, back, &err);
        if (!a) fail_msg("%s", err.msg);
        assert_true(a->dropout == ps[k]);
        lm_adapter_free(a);
    }
    lm_model_free(m);
    lm_tmodel_free(tm);
    th_rm_rf(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_is_splitmix64),
        cmocka_unit_test(test_spec_simd_scalar),
        cmocka_unit_test(test_keep_rate),
        cmocka_unit_test(test_apply_values_threads),
        cmocka_unit_test(test_model_p0_and_keys),
        cmocka_unit_test(test_model_grad_fd),
        cmocka_unit_test(test_export_records_dropout),
    };
    return cmocka_run_group_tests_name("lora_dropout", tests, NULL, NULL);
}
