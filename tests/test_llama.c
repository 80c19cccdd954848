/* Llama model: tiny random-weight GGUFs written here with our GGUF writer.
 * The forward pass is checked against a plain double-precision reference
 * written below (a separate code path: no kernels, no cache), batch
 * against token-by-token decode, and config/shape/cache errors. */
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

#include "gguf/gguf.h"
#include "model/llama.h"
#include "tensor/ops.h"
#include "tensor/q4_0x8.h"
#include "train/train_model.h"

typedef struct {
    int n_layer, n_embd, n_head, n_head_kv, n_ff, n_vocab, n_ctx_train;
    float base, eps;
    int untied;
    int rope_freqs;            /* add Llama-3-style rope_freqs.weight divisors */
    lm_dtype wtype;            /* type of the 2-D weights */
    const char *omit;          /* tensor to leave out */
    const char *bad_shape;     /* tensor to write with one row too many */
    const char *extra;         /* unexpected tensor to add */
    float freq0;               /* nonzero: rope_freqs' first divisor */
    const char *key_str, *str_val;   /* an extra string key */
    const char *key_f32; float f32_val;
    const char *key_u32; uint32_t u32_val;
} spec;

typedef struct {               /* a generated tensor, kept for the reference */
    char name[64];
    int ne0, ne1;              /* ne1 = 1 for vectors */
    float *w;                  /* [ne1, ne0] */
} tensor;

typedef struct {
    spec s;
    tensor t[64];
    int n;
    char path[64];
} tiny;

static uint64_t rng_state = 88172645463325252ULL;
static float frand(void) {     /* uniform in [-1, 1) */
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
    return (float)((rng_state >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0);
}

static void add(tiny *m, gguf_writer *w, const char *name, int ne0, int ne1, float scale,
                float offset) {
    tensor *t = &m->t[m->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ne0 = ne0;
    t->ne1 = ne1;
    int rows = ne1;
    if (m->s.bad_shape && !strcmp(name, m->s.bad_shape)) rows++;
    t->w = malloc(sizeof(float) * (size_t)ne0 * (size_t)rows);
    for (size_t i = 0; i < (size_t)ne0 * (size_t)rows; i++) t->w[i] = offset + scale * frand();
    if (m->s.omit && !strcmp(name, m->s.omit)) return;
    lm_err err = {0};
    int64_t ne[2] = {ne0, rows};
    int vec = ne1 == 1 && (strstr(name, "norm") || strstr(name, "rope_freqs"));
    lm_dtype type = vec ? LM_F32 : m->s.wtype;
    size_t rb = lm_dtype_row_bytes(type, ne0);
    uint8_t *buf = malloc(rb * (size_t)rows);
    for (int r = 0; r < rows; r++) {
        if (type == LM_F32) memcpy(buf + rb * r, t->w + (size_t)r * ne0, rb);
        else lm_quant_row(type, t->w + (size_t)r * ne0, buf + rb * r, ne0);
    }
    /* The reference must see what the file holds: dequantize it back. */
    if (type != LM_F32)
        for (int r = 0; r < rows; r++) lm_dequant_row(type, buf + rb * r, t->w + (size_t)r * ne0, ne0);
    if (gguf_add_tensor(w, name, type, vec ? 1 : 2, ne, buf, rb * (size_t)rows, &err))
        fail_msg("add %s: %s", name, err.msg);
    free(buf);
}

static const float *W(const tiny *m, const char *name) {
    for (int i = 0; i < m->n; i++) if (!strcmp(m->t[i].name, name)) return m->t[i].w;
    fail_msg("no tensor %s", name);
    return NULL;
}

static void tiny_free(tiny *m) {
    for (int i = 0; i < m->n; i++) free(m->t[i].w);
    unlink(m->path);
    free(m);
}

static tiny *tiny_write(spec s) {
    tiny *m = calloc(1, sizeof *m);
    m->s = s;
    snprintf(m->path, sizeof m->path, "/tmp/lm_test_llama_XXXXXX");
    int fd = mkstemp(m->path);
    assert_true(fd >= 0);
    close(fd);
    gguf_writer *w = gguf_writer_new();
    lm_err err = {0};
    int hd = s.n_embd / s.n_head;
    assert_int_equal(gguf_set_str(w, "general.architecture", "llama", &err), 0);
    gguf_set_u32(w, "llama.block_count", (uint32_t)s.n_layer, &err);
    gguf_set_u32(w, "llama.embedding_length", (uint32_t)s.n_embd, &err);
    gguf_set_u32(w, "llama.feed_forward_length", (uint32_t)s.n_ff, &err);
    gguf_set_u32(w, "llama.attention.head_count", (uint32_t)s.n_head, &err);
    gguf_set_u32(w, "llama.attention.head_count_kv", (uint32_t)s.n_head_kv, &err);
    gguf_set_u32(w, "llama.context_length", (uint32_t)s.n_ctx_train, &err);
    gguf_set_f32(w, "llama.rope.freq_base", s.base, &err);
    gguf_set_f32(w, "llama.attention.layer_norm_rms_epsilon", s.eps, &err);
    float ws = 1.0f / sqrtf((float)s.n_embd);
    add(m, w, "token_embd.weight", s.n_embd, s.n_vocab, 1.0f, 0.0f);
    add(m, w, "output_norm.weight", s.n_embd, 1, 0.2f, 1.0f);
    if (s.untied) add(m, w, "output.weight", s.n_embd, s.n_vocab, ws, 0.0f);
    if (s.rope_freqs) add(m, w, "rope_freqs.weight", hd / 2, 1, 3.5f, 4.5f);   /* in [1, 8] */
    if (s.freq0) {
        float fr[64] = {0};
        for (int i = 0; i < hd / 2; i++) fr[i] = i ? 1.0f : s.freq0;
        int64_t ne[1] = {hd / 2};
        assert_int_equal(gguf_add_tensor(w, "rope_freqs.weight", LM_F32, 1, ne, fr,
                                         sizeof(float) * (size_t)(hd / 2), &err), 0);
    }
    if (s.key_str) gguf_set_str(w, s.key_str, s.str_val, &err);
    if (s.key_f32) gguf_set_f32(w, s.key_f32, s.f32_val, &err);
    if (s.key_u32) gguf_set_u32(w, s.key_u32, s.u32_val, &err);
    for (int l = 0; l < s.n_layer; l++) {
        char nm[64];
#define T(part, ne0, ne1, sc, off) \
        snprintf(nm, sizeof nm, "blk.%d." part ".weight", l); add(m, w, nm, ne0, ne1, sc, off)
        T("attn_norm", s.n_embd, 1, 0.2f, 1.0f);
        T("attn_q", s.n_embd, s.n_head * hd, 2 * ws, 0.0f);
        T("attn_k", s.n_embd, s.n_head_kv * hd, 2 * ws, 0.0f);
        T("attn_v", s.n_embd, s.n_head_kv * hd, ws, 0.0f);
        T("attn_output", s.n_head * hd, s.n_embd, ws, 0.0f);
        T("ffn_norm", s.n_embd, 1, 0.2f, 1.0f);
        T("ffn_gate", s.n_embd, s.n_ff, 2 * ws, 0.0f);
        T("ffn_up", s.n_embd, s.n_ff, ws, 0.0f);
        T("ffn_down", s.n_ff, s.n_embd, 1.0f / sqrtf((float)s.n_ff), 0.0f);
#undef T
    }
    if (s.extra) {
        float z[8] = {0};
        int64_t ne[1] = {8};
        assert_int_equal(gguf_add_tensor(w, s.extra, LM_F32, 1, ne, z, sizeof z, &err), 0);
    }
    if (gguf_write(w, m->path, &err)) fail_msg("gguf_write: %s", err.msg);
    gguf_writer_free(w);
    return m;
}

static spec base_spec(void) {
    spec s = {
        .n_layer = 2, .n_embd = 64, .n_head = 4, .n_head_kv = 2, .n_ff = 96,
        .n_vocab = 80, .n_ctx_train = 256, .base = 10000.0f, .eps = 1e-5f,
        .wtype = LM_F32,
    };
    return s;
}

/* ---- naive double-precision reference -------------------------------- */

static void ref_matvec(double *y, const float *w, const double *x, int n, int k) {
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int j = 0; j < k; j++) s += (double)w[(size_t)i * k + j] * x[j];
        y[i] = s;
    }
}

static void ref_rmsnorm(double *y, const double *x, const float *w, int d, double eps) {
    double ss = 0;
    for (int i = 0; i < d; i++) ss += x[i] * x[i];
    double r = 1.0 / sqrt(ss / d + eps);
    for (int i = 0; i < d; i++) y[i] = x[i] * r * w[i];
}

/* Adjacent-pair rope on one head vector; freqs (or NULL) divide theta. */
static void ref_rope(double *v, int hd, int pos, double base, const float *freqs) {
    for (int i = 0; i < hd / 2; i++) {
        double th = pos * pow(base, -2.0 * i / hd) / (freqs ? freqs[i] : 1.0);
        double a = v[2 * i], b = v[2 * i + 1];
        v[2 * i] = a * cos(th) - b * sin(th);
        v[2 * i + 1] = a * sin(th) + b * cos(th);
    }
}

static double round_f16(double x) { return lm_f16_to_f32(lm_f32_to_f16((float)x)); }

/* logits[n, n_vocab] for tokens[0..n) from scratch. kv16: as over an f16
 * KV cache, K and V stored rounded to f16, q and the attention weights
 * rounded to f16 before their products (what llama.cpp and our engine do). */
static void ref_forward_kv(const tiny *m, const int32_t *tok, int n, double *logits, int kv16) {
    const spec *s = &m->s;
    int d = s->n_embd, hd = d / s->n_head, kvd = s->n_head_kv * hd, ff = s->n_ff;
    double *K = calloc((size_t)s->n_layer * n * kvd, sizeof(double));
    double *V = calloc((size_t)s->n_layer * n * kvd, sizeof(double));
    double *x = malloc(sizeof(double) * d), *xn = malloc(sizeof(double) * d);
    double *q = malloc(sizeof(double) * d), *att = malloc(sizeof(double) * d);
    double *o = malloc(sizeof(double) * d), *g = malloc(sizeof(double) * ff);
    double *u = malloc(sizeof(double) * ff), *sc = malloc(sizeof(double) * n);
    char nm[64];
    for (int t = 0; t < n; t++) {
        const float *e = W(m, "token_embd.weight") + (size_t)tok[t] * d;
        for (int i = 0; i < d; i++) x[i] = e[i];
        for (int l = 0; l < s->n_layer; l++) {
#define WL(part) (snprintf(nm, sizeof nm, "blk.%d." part ".weight", l), W(m, nm))
            double *k = K + ((size_t)l * n + t) * kvd, *v = V + ((size_t)l * n + t) * kvd;
            ref_rmsnorm(xn, x, WL("attn_norm"), d, s->eps);
            ref_matvec(q, WL("attn_q"), xn, d, d);
            ref_matvec(k, WL("attn_k"), xn, kvd, d);
            ref_matvec(v, WL("attn_v"), xn, kvd, d);
            const float *fr = s->rope_freqs ? W(m, "rope_freqs.weight") : NULL;
            for (int h = 0; h < s->n_head; h++) ref_rope(q + h * hd, hd, t, s->base, fr);
            for (int h = 0; h < s->n_head_kv; h++) ref_rope(k + h * hd, hd, t, s->base, fr);
            if (kv16) {
                for (int i = 0; i < kvd; i++) { k[i] = round_f16(k[i]); v[i] = round_f16(v[i]); }
                for (int i = 0; i < d; i++) q[i] = round_f16(q[i]);
            }
            for (int h = 0; h < s->n_head; h++) {
                int kh = h / (s->n_head / s->n_head_kv);
                double mx = -1e300, z = 0;
                for (int p = 0; p <= t; p++) {
                    const double *kp = K + ((size_t)l * n + p) * kvd + kh * hd;
                    double dot = 0;
                    for (int i = 0; i < hd; i++) dot += q[h * hd + i] * kp[i];
                    sc[p] = dot / sqrt((double)hd);
                    if (sc[p] > mx) mx = sc[p];
                }
                for (int p = 0; p <= t; p++) z += sc[p] = exp(sc[p] - mx);
                for (int p = 0; p <= t; p++) sc[p] = kv16 ? round_f16(sc[p] / z) : sc[p] / z;
                for (int i = 0; i < hd; i++) {
                    double acc = 0;
                    for (int p = 0; p <= t; p++)
                        acc += sc[p] * V[((size_t)l * n + p) * kvd + kh * hd + i];
                    att[h * hd + i] = acc;
                }
            }
            ref_matvec(o, WL("attn_output"), att, d, d);
            for (int i = 0; i < d; i++) x[i] += o[i];
            ref_rmsnorm(xn, x, WL("ffn_norm"), d, s->eps);
            ref_matvec(g, WL("ffn_gate"), xn, ff, d);
            ref_matvec(u, WL("ffn_up"), xn, ff, d);
            for (int i = 0; i < ff; i++) g[i] = g[i] / (1.0 + exp(-g[i])) * u[i];
            ref_matvec(o, WL("ffn_down"), g, d, ff);
            for (int i = 0; i < d; i++) x[i] += o[i];
#undef WL
        }
        ref_rmsnorm(xn, x, W(m, "output_norm.weight"), d, s->eps);
        ref_matvec(logits + (size_t)t * s->n_vocab,
                   W(m, s->untied ? "output.weight" : "token_embd.weight"), xn, s->n_vocab, d);
    }
    free(K); free(V); free(x); free(xn); free(q); free(att); free(o); free(g); free(u); free(sc);
}

static void ref_forward(const tiny *m, const int32_t *tok, int n, double *logits) {
    ref_forward_kv(m, tok, n, logits, 0);
}

/* ---- tests ------------------------------------------------------------- */

static lm_model *load_ok(const tiny *m) {
    lm_err err = {0};
    lm_model *mod = lm_model_load(m->path, &err);
    if (!mod) fail_msg("load: %s", err.msg);
    return mod;
}

static void make_tokens(int32_t *tok, int n, int n_vocab) {
    for (int i = 0; i < n; i++) tok[i] = (int32_t)((i * 37 + 11) % n_vocab);
}

static void check_vs_reference(spec s, int n, lm_pool *pool) {
    tiny *m = tiny_write(s);
    lm_model *mod = load_ok(m);
    assert_int_equal(mod->cfg.n_vocab, s.n_vocab);
    assert_int_equal(mod->cfg.tied, !s.untied);
    lm_err err = {0};
    lm_ctx *c = lm_ctx_new(mod, 0, pool, &err);
    assert_non_null(c);
    int32_t *tok = malloc(sizeof(int32_t) * n);
    make_tokens(tok, n, s.n_vocab);
    float *got = malloc(sizeof(float) * n * s.n_vocab);
    double *want_l = malloc(sizeof(double) * n * s.n_vocab);
    if (lm_eval(c, tok, n, LM_LOGITS_ALL, got, &err)) fail_msg("eval: %s", err.msg);
    assert_int_equal(lm_ctx_n_past(c), n);
    ref_forward(m, tok, n, want_l);
    double worst = 0;
    for (size_t i = 0; i < (size_t)n * s.n_vocab; i++) {
        double e = fabs(got[i] - want_l[i]) / (1.0 + fabs(want_l[i]));
        if (e > worst) worst = e;
    }
    if (worst > 1e-4) fail_msg("logits differ from the double reference by %g", worst);
    free(tok); free(got); free(want_l);
    lm_ctx_free(c);
    lm_model_free(mod);
    tiny_free(m);
}

static void test_matches_reference_gqa(void **state) {
    (void)state;
    check_vs_reference(base_spec(), 20, NULL);
}

static void test_matches_reference_untied_mha(void **state) {
    (void)state;
    spec s = base_spec();
    s.untied = 1; s.n_head_kv = 4; s.base = 500000.0f; s.n_layer = 3;
    lm_err err = {0};
    lm_pool *pool = lm_pool_new(2, &err);
    assert_non_null(pool);
    check_vs_reference(s, 12, pool);
    lm_pool_free(pool);
}

/* Llama 3.x files carry rope_freqs.weight (per-pair theta divisors). */
static void test_matches_reference_rope_freqs(void **state) {
    (void)state;
    spec s = base_spec();
    s.rope_freqs = 1;
    s.base = 500000.0f;
    check_vs_reference(s, 16, NULL);
}

/* A long input crosses the internal batch size: chunk boundaries too. */
static void test_matches_reference_long(void **state) {
    (void)state;
    spec s = base_spec();
    s.n_layer = 1;
    check_vs_reference(s, 200, NULL);
}

static void check_batch_vs_decode(lm_dtype wtype, int threads) {
    spec s = base_spec();
    s.wtype = wtype;
    tiny *m = tiny_write(s);
    lm_model *mod = load_ok(m);
    lm_err err = {0};
    lm_pool *pool = lm_pool_new(threads, &err);
    lm_ctx *a = lm_ctx_new(mod, 64, pool, &err), *b = lm_ctx_new(mod, 64, pool, &err);
    assert_non_null(a);
    assert_non_null(b);
    enum { N = 24 };
    int32_t tok[N];
    make_tokens(tok, N, s.n_vocab);
    float *all = malloc(sizeof(float) * N * s.n_vocab), *one = malloc(sizeof(float) * s.n_vocab);
    /* batch of 10, then the rest: the second batch attends to cached keys */
    assert_int_equal(lm_eval(a, tok, 10, LM_LOGITS_ALL, all, &err), 0);
    assert_int_equal(lm_eval(a, tok + 10, N - 10, LM_LOGITS_ALL, all + 10 * s.n_vocab, &err), 0);
    /* Float weights are reduced one way for a lone token and another for a
     * batch (llama.cpp's asymmetry, kernels.h): last bits differ. F16
     * weights round activations to f16 first, so such a difference can flip
     * an f16 rounding (2^-11 of that activation) and grow from there. */
    const float tol = wtype == LM_F16 ? 2e-3f : 1e-4f;
    for (int t = 0; t < N; t++) {
        assert_int_equal(lm_eval(b, tok + t, 1, LM_LOGITS_LAST, one, &err), 0);
        for (int i = 0; i < s.n_vocab; i++) {
            float e = fabsf(one[i] - all[(size_t)t * s.n_vocab + i]);
            if (e > tol * (1.0f + fabsf(one[i])))
                fail_msg("%s pos %d logit %d: batch %g vs decode %g", lm_dtype_name(wtype), t, i,
                         (double)all[(size_t)t * s.n_vocab + i], (double)one[i]);
        }
    }
    /* LAST over a batch equals the last row of ALL */
    lm_ctx_truncate(b, 0);
    assert_int_equal(lm_eval(b, tok, N, LM_LOGITS_LAST, one, &err), 0);
    for (int i = 0; i < s.n_vocab; i++)
        assert_true(fabsf(one[i] - all[(size_t)(N - 1) * s.n_vocab + i]) <= 1e-4f * (1 + fabsf(one[i])));
    free(all); free(one);
    lm_ctx_free(a); lm_ctx_free(b);
    lm_pool_free(pool);
    lm_model_free(mod);
    tiny_free(m);
}

static void test_batch_equals_decode(void **state) {
    (void)state;
    check_batch_vs_decode(LM_F32, 1);
    check_batch_vs_decode(LM_Q8_0, 2);
    check_batch_vs_decode(LM_Q4_1, 1);
    check_batch_vs_decode(LM_F16, 2);
    check_batch_vs_decode(LM_Q4_0, 2);
}

static lm_ctx *ctx_kv(lm_model *mod, int n_ctx, lm_pool *pool, lm_dtype kv) {
    lm_err err = {0};
    lm_ctx *c = lm_ctx_new_kv(mod, n_ctx, pool, kv, &err);
    if (!c) fail_msg("lm_ctx_new_kv(%s): %s", lm_dtype_name(kv), err.msg);
    return c;
}

/* How a prompt is cut into batches does not change its last logits, as
 * long as no batch is a lone token: n tokens as one batch (crossing the
 * internal 128-token chunk), as 7 + 5 + the rest, as 2 + 3 + the rest,
 * give the same bits, with either cache type and any weight type. A lone
 * last token ((n-1) + 1) takes llama.cpp's other orders in the SIMD sets'
 * attention (lm_attn_heads' single: vec_dot where a batch has tinyBLAS;
 * llama.cpp's last-token logits differ the same way, docs/RUNTIME.md
 * "Determinism"); the scalar set has one order and gives the same bits
 * then too, the others agree closely. */
static void check_chunks_same_logits(lm_dtype wtype, lm_dtype kv, int threads) {
    spec s = base_spec();
    s.wtype = wtype;
    tiny *m = tiny_write(s);
    lm_model *mod = load_ok(m);
    lm_err err = {0};
    lm_pool *pool = lm_pool_new(threads, &err);
    assert_non_null(pool);
    enum { N = 150 };
    const int V = s.n_vocab;
    int32_t tok[N];
    make_tokens(tok, N, V);
    static const int cuts[][4] = {{N}, {7, 12, N}, {2, 5, N}, {N - 1, N}};
    float *want = malloc(sizeof(float) * V), *got = malloc(sizeof(float) * V);
    for (size_t w = 0; w < sizeof cuts / sizeof cuts[0]; w++) {
        lm_ctx *c = ctx_kv(mod, 200, pool, kv);
        float *out = w ? got : want;
        for (int i = 0, at = 0; at < N; at = cuts[w][i++])
            if (cuts[w][i] > at)
                assert_int_equal(lm_eval(c, tok + at, cuts[w][i] - at, LM_LOGITS_LAST, out, &err),
                                 0);
        lm_ctx_free(c);
        if (!w) continue;
        int lone = cuts[w][0] == N - 1;
        if (!lone || !strcmp(lm_kernels_name(), "scalar")) {
            for (int i = 0; i < V; i++)
                if (memcmp(&want[i], &got[i], sizeof(float)))
                    fail_msg("%s weights, %s cache, %s kernels, cut %d+%d+...: logit %d is %.9g, "
                             "%.9g as one batch", lm_dtype_name(wtype), lm_dtype_name(kv),
                             lm_kernels_name(), cuts[w][0], cuts[w][1] - cuts[w][0], i,
                             (double)got[i], (double)want[i]);
            continue;
        }
        for (int i = 0; i < V; i++)
            if (!(fabsf(got[i] - want[i]) <= 2e-3f * (1.0f + fabsf(want[i]))))
                fail_msg("%s weights, %s cache: a lone last token's logit %d is %g, %g in the batch",
                         lm_dtype_name(wtype), lm_dtype_name(kv), i, (double)got[i],
                         (double)want[i]);
    }
    free(want); free(got);
    lm_pool_free(pool);
    lm_model_free(mod);
    tiny_free(m);
}

static void test_chunks_same_logits(void **state) {
    (void)state;
    const lm_dtype wt[] = {LM_Q4_1, LM_Q8_0, LM_Q4_0, LM_F32, LM_F16};
    for (size_t i = 0; i < sizeof wt / sizeof wt[0]; i++) {
        check_chunks_same_logits(wt[i], LM_F16, 1 + (int)(i % 2));
        check_chunks_same_logits(wt[i], LM_F32, 2 - (int)(i % 2));
    }
}

/* Q4_0 matrices with a multiple of 8 rows are repacked at load (a tied
 * output too, the embedding lookup then reading the copy): the logits are
 * those of the weights used in place (LEMONPC_REPACK=0), bit for bit with
 * the scalar kernels; the avx2 ones follow llama.cpp, whose repacked GEMM
 * sums in another order than its vec_dot, so there they agree closely. A
 * vocabulary that is not a multiple of 8 leaves the output in place. */
static void assert_logits_agree(const float *a, const float *b, size_t n) {
    if (!strcmp(lm_kernels_name(), "scalar")) {
        assert_memory_equal(a, b, sizeof(float) * n);
        return;
    }
    float scale = 0, worst = 0;
    for (size_t i = 0; i < n; i++) {
        scale = fmaxf(scale, fabsf(a[i]));
        worst = fmaxf(worst, fabsf(a[i] - b[i]));
    }
    if (!(worst <= 2e-3f * scale)) fail_msg("repacked logits differ by %g (max |logit| %g)", worst, scale);
}

static void check_repacked(int n_vocab, int untied, int threads) {
    spec s = base_spec();
    s.wtype = LM_Q4_0;
    s.n_vocab = n_vocab;
    s.untied = untied;
    tiny *m = tiny_write(s);
    setenv("LEMONPC_REPACK", "0", 1);
    lm_model *plain = load_ok(m);
    unsetenv("LEMONPC_REPACK");
    lm_model *rep = load_ok(m);
    assert_int_equal(plain->layers[0].wq.type, LM_Q4_0);
    assert_int_equal(rep->layers[0].wq.type, LM_Q4_0_X8);
    assert_int_equal(rep->layers[1].w_down.type, LM_Q4_0_X8);
    assert_int_equal(rep->output.type, n_vocab % 8 ? LM_Q4_0 : LM_Q4_0_X8);
    lm_err err = {0};
    lm_pool *pool = lm_pool_new(threads, &err);
    assert_non_null(pool);
    lm_ctx *a = lm_ctx_new(plain, 64, pool, &err), *b = lm_ctx_new(rep, 64, pool, &err);
    assert_true(a && b);
    enum { N = 13 };
    int32_t tok[N + 1];
    make_tokens(tok, N + 1, n_vocab);
    float *ya = malloc(sizeof(float) * N * n_vocab), *yb = malloc(sizeof(float) * N * n_vocab);
    assert_true(ya && yb);
    assert_int_equal(lm_eval(a, tok, N, LM_LOGITS_ALL, ya, &err), 0);
    assert_int_equal(lm_eval(b, tok, N, LM_LOGITS_ALL, yb, &err), 0);
    assert_logits_agree(ya, yb, (size_t)N * n_vocab);
    assert_int_equal(lm_eval(a, tok + N, 1, LM_LOGITS_LAST, ya, &err), 0);
    assert_int_equal(lm_eval(b, tok + N, 1, LM_LOGITS_LAST, yb, &err), 0);
    assert_logits_agree(ya, yb, (size_t)n_vocab);
    free(ya); free(yb);
    lm_ctx_free(a); lm_ctx_free(b);
    lm_pool_free(pool);
    lm_model_free(plain);
    lm_model_free(rep);
    tiny_free(m);
}

static void test_q4_0_repacked(void **state) {
    (void)state;
    check_repacked(80, 0, 1);
    check_repacked(80, 0, 2);
    check_repacked(80, 1, 2);
    check_repacked(81, 0, 1);
}

/* lm_ctx_set_trace: every named intermediate of a batch, in graph order,
 * with its shape; the last is the logits themselves. */
typedef struct {
    int n, bad;
    char first[32], last[32];
    float last0;
} trace_seen;

static void on_trace(void *user, const char *name, const float *data, int rows, int cols) {
    trace_seen *t = user;
    const int d = 64, kv = 2 * 16, ff = 96, V = 80, B = 7;   /* base_spec's sizes */
    int want = !strncmp(name, "Kcur", 4) || !strncmp(name, "Vcur", 4) ? kv
             : !strncmp(name, "ffn_gate", 8) || !strncmp(name, "ffn_up", 6) ||
                       !strncmp(name, "ffn_swiglu", 10) ? ff
             : !strcmp(name, "result_output") ? V : d;
    if (rows != B || cols != want || !isfinite(data[(size_t)rows * cols - 1])) t->bad++;
    if (t->n++ == 0) snprintf(t->first, sizeof t->first, "%s", name);
    snprintf(t->last, sizeof t->last, "%s", name);
    t->last0 = data[0];
}

static void test_trace(void **state) {
    (void)state;
    tiny *m = tiny_write(base_spec());
    lm_model *mod = load_ok(m);
    lm_err err = {0};
    lm_ctx *c = lm_ctx_new(mod, 32, NULL, &err);
    assert_non_null(c);
    int32_t tok[7];
    make_tokens(tok, 7, 80);
    float logits[7 * 80];
    trace_seen t = {0};
    lm_ctx_set_trace(c, on_trace, &t);
    assert_int_equal(lm_eval(c, tok, 7, LM_LOGITS_ALL, logits, &err), 0);
    assert_int_equal(t.n, 13 * 2 + 2);
    assert_int_equal(t.bad, 0);
    assert_string_equal(t.first, "attn_norm-0");
    assert_string_equal(t.last, "result_output");
    assert_true(t.last0 == logits[0]);
    lm_ctx_set_trace(c, NULL, NULL);   /* off: no more calls */
    lm_ctx_truncate(c, 0);
    assert_int_equal(lm_eval(c, tok, 7, LM_LOGITS_ALL, logits, &err), 0);
    assert_int_equal(t.n, 28);
    lm_ctx_free(c);
    lm_model_free(mod);
    tiny_free(m);
}

/* The engine refuses the file with a message holding both needles; where
 * the config reader refuses it (config), the trainer does too, with the
 * same message: the two read one config. */
static void expect_errors(spec s, int config, const char *needle1, const char *needle2) {
    tiny *m = tiny_write(s);
    lm_err err = {0};
    lm_model *mod = lm_model_load(m->path, &err);
    assert_null(mod);
    if (!strstr(err.msg, needle1) || (needle2 && !strstr(err.msg, needle2)))
        fail_msg("error '%s' lacks '%s' / '%s'", err.msg, needle1, needle2 ? needle2 : "");
    if (config) {
        lm_err terr = {0};
        lm_tmodel *tm = lm_tmodel_load(m->path, &terr);
        assert_null(tm);
        assert_string_equal(terr.msg, err.msg);
    }
    tiny_free(m);
}

static void expect_load_error(spec s, const char *needle1, const char *needle2) {
    expect_errors(s, 0, needle1, needle2);
}

static void test_config_errors(void **state) {
    (void)state;
    spec s = base_spec();
    s.omit = "blk.1.ffn_up.weight";
    expect_load_error(s, "missing tensor 'blk.1.ffn_up.weight'", NULL);
    s = base_spec();
    s.bad_shape = "blk.0.attn_k.weight";
    expect_load_error(s, "'blk.0.attn_k.weight'", "expected [64, 32]");
    s = base_spec();
    s.bad_shape = "token_embd.weight";   /* vocab grows; output is tied, so shape is ok... */
    s.untied = 1;                        /* ...but the untied head now mismatches */
    expect_load_error(s, "'output.weight'", "expected [64, 81]");
    s = base_spec();
    s.extra = "blk.0.attn_q.bias";
    expect_load_error(s, "unexpected tensor 'blk.0.attn_q.bias'", NULL);
    s = base_spec();
    s.n_head_kv = 3;
    expect_load_error(s, "head_count_kv", NULL);
}

/* What the graph does not implement is refused by the one config reader, for
 * the engine and the trainer alike, naming the key or tensor. */
static void test_config_unsupported(void **state) {
    (void)state;
    spec s = base_spec();
    s.extra = "blk.0.attn_q.bias";   /* would be ignored: refused by both */
    expect_errors(s, 1, "unexpected tensor 'blk.0.attn_q.bias'", NULL);
    s = base_spec();
    s.key_str = "llama.rope.scaling.type";
    s.str_val = "yarn";
    expect_errors(s, 1, "rope scaling 'yarn'", "not supported");
    s = base_spec();   /* llama.cpp's default scaling type is linear */
    s.key_f32 = "llama.rope.scaling.factor";
    s.f32_val = 8.0f;
    expect_errors(s, 1, "rope scaling 'linear' with factor 8", NULL);
    s = base_spec();   /* the old key */
    s.key_f32 = "llama.rope.scale_linear";
    s.f32_val = 4.0f;
    expect_errors(s, 1, "factor 4", NULL);
    s = base_spec();
    s.key_u32 = "llama.expert_count";
    s.u32_val = 8;
    expect_errors(s, 1, "expert_count is 8", "mixture-of-experts");
    s = base_spec();
    s.key_u32 = "llama.attention.key_length";
    s.u32_val = 32;
    expect_errors(s, 1, "key_length 32", "differ from embedding_length / head_count = 16");
    s = base_spec();
    s.freq0 = -1.0f;
    expect_errors(s, 1, "'rope_freqs.weight' element 0 is -1", NULL);
    s.freq0 = INFINITY;
    expect_errors(s, 1, "'rope_freqs.weight' element 0 is inf", NULL);
    /* what is supported loads in both: no scaling said explicitly, factor 1,
     * divisors */
    const char *types[] = {"none", "linear"};
    for (int i = 0; i < 2; i++) {
        s = base_spec();
        s.rope_freqs = 1;
        s.key_str = "llama.rope.scaling.type";
        s.str_val = types[i];
        s.key_f32 = "llama.rope.scaling.factor";
        s.f32_val = 1.0f;
        tiny *m = tiny_write(s);
        lm_model *mod = load_ok(m);
        lm_err err = {0};
        lm_tmodel *tm = lm_tmodel_load(m->path, &err);
        if (!tm) fail_msg("trainer: %s", err.msg);
        assert_non_null(mod->cfg.rope_freqs);
        assert_non_null(tm->rope_freqs);
        assert_memory_equal(tm->rope_freqs, mod->cfg.rope_freqs, 8 * sizeof(float));
        assert_memory_equal(tm->rope_freqs, W(m, "rope_freqs.weight"), 8 * sizeof(float));
        assert_int_equal(tm->cfg.tied, mod->cfg.tied);
        assert_int_equal(tm->cfg.n_ctx, mod->cfg.n_ctx_train);
        lm_tmodel_free(tm);
        lm_model_free(mod);
        tiny_free(m);
    }
}

static void test_context_errors(void **state) {
    (void)state;
    tiny *m = tiny_write(base_spec());
    lm_model *mod = load_ok(m);
    lm_err err = {0};
    assert_null(lm_ctx_new(mod, 257, NULL, &err));
    assert_non_null(strstr(err.msg, "context_length 256"));
    lm_ctx *c = lm_ctx_new(mod, 8, NULL, &err);
    assert_non_null(c);
    int32_t tok[8];
    make_tokens(tok, 8, 80);
    float *lg = malloc(sizeof(float) * 80);
    assert_int_equal(lm_eval(c, tok, 6, LM_LOGITS_LAST, lg, &err), 0);
    assert_int_equal(lm_eval(c, tok, 3, LM_LOGITS_LAST, lg, &err), -1);
    assert_non_null(strstr(err.msg, "context full"));
    assert_int_equal(lm_ctx_n_past(c), 6);
    int32_t bad = 80;
    assert_int_equal(lm_eval(c, &bad, 1, LM_LOGITS_LAST, lg, &err), -1);
    assert_non_null(strstr(err.msg, "outside the vocabulary"));
    assert_int_equal(lm_ctx_n_past(c), 6);
    assert_int_equal(lm_eval(c, tok, 2, LM_LOGITS_LAST, lg, &err), 0);
    assert_int_equal(lm_ctx_n_past(c), 8);
    free(lg);
    lm_ctx_free(c);
    lm_model_free(mod);
    tiny_free(m);
}

/* Two contexts over one model, interleaved, do not disturb each other. */
static void test_shared_model_contexts(void **state) {
    (void)state;
    spec s = base_spec();
    tiny *m = tiny_write(s);
    lm_model *mod = load_ok(m);
    lm_err err = {0};
    lm_ctx *a = lm_ctx_new(mod, 32, NULL, &err), *b = lm_ctx_new(mod, 32, NULL, &err);
    int32_t ta[6] = {1, 2, 3, 4, 5, 6}, tb[6] = {9, 8, 7, 6, 5, 4};
    float la[80], lb[80], solo[80];
    for (int i = 0; i < 6; i++) {
        assert_int_equal(lm_eval(a, ta + i, 1, LM_LOGITS_LAST, la, &err), 0);
        assert_int_equal(lm_eval(b, tb + i, 1, LM_LOGITS_LAST, lb, &err), 0);
    }
    lm_ctx *c = lm_ctx_new(mod, 32, NULL, &err);
    assert_int_equal(lm_eval(c, ta, 6, LM_LOGITS_LAST, solo, &err), 0);
    for (int i = 0; i < 80; i++) assert_true(fabsf(solo[i] - la[i]) <= 1e-4f * (1 + fabsf(la[i])));
    /* a context moved to a wider pool mid-sequence (per-thread scratch grows) */
    lm_pool *pool3 = lm_pool_new(3, &err);
    assert_non_null(pool3);
    lm_ctx_truncate(c, 0);
    assert_int_equal(lm_eval(c, tb, 3, LM_LOGITS_NONE, NULL, &err), 0);
    lm_ctx_set_pool(c, pool3);
    assert_int_equal(lm_eval(c, tb + 3, 3, LM_LOGITS_LAST, solo, &err), 0);
    for (int i = 0; i < 80; i++) assert_true(fabsf(solo[i] - lb[i]) <= 1e-4f * (1 + fabsf(lb[i])));
    lm_ctx_set_pool(c, NULL);
    lm_ctx_truncate(c, 5);
    assert_int_equal(lm_eval(c, tb + 5, 1, LM_LOGITS_LAST, solo, &err), 0);
    for (int i = 0; i < 80; i++) assert_true(fabsf(solo[i] - lb[i]) <= 1e-4f * (1 + fabsf(lb[i])));
    lm_ctx_free(a); lm_ctx_free(b); lm_ctx_free(c);
    lm_pool_free(pool3);
    lm_model_free(mod);
    tiny_free(m);
}

/* lm_ctx_trim gives the batch scratch back between evaluations (the next
 * lm_eval allocates it again): the logits are those of a context never
 * trimmed, bit for bit, through a batch, lone tokens, cache growth and a
 * wider pool; the cache stays. */
static void test_trim_keeps_logits(void **state) {
    (void)state;
    spec s = base_spec();
    s.n_ctx_train = 1024;
    tiny *m = tiny_write(s);
    lm_model *mod = load_ok(m);
    lm_err err = {0};
    enum { N = 300 };
    const int V = s.n_vocab;
    int32_t tok[N];
    make_tokens(tok, N, V);
    lm_pool *pool3 = lm_pool_new(3, &err);
    assert_non_null(pool3);
    float *want = malloc(sizeof(float) * N * V), *got = malloc(sizeof(float) * N * V);
    for (int pass = 0; pass < 2; pass++) {
        float *out = pass ? got : want;
        lm_ctx *c = lm_ctx_new_kv(mod, 1000, NULL, LM_F16, &err);
        assert_non_null(c);
        assert_int_equal(lm_ctx_scratch_bytes(c), 0);   /* nothing before the first eval */
        const int cuts[] = {40, 41, 42, 43, 200, 250, 290};
        int at = 0;
        for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; at = cuts[i++]) {
            if (i == 4) lm_ctx_set_pool(c, pool3);
            assert_int_equal(lm_eval(c, tok + at, cuts[i] - at, LM_LOGITS_ALL,
                                     out + (size_t)at * V, &err), 0);
            if (pass) {
                assert_true(lm_ctx_scratch_bytes(c) > 0);
                lm_ctx_trim(c);
                assert_int_equal(lm_ctx_scratch_bytes(c), 0);
                assert_int_equal(lm_ctx_n_past(c), cuts[i]);
            }
        }
        for (; at < N; at++)
            assert_int_equal(lm_eval(c, tok + at, 1, LM_LOGITS_LAST, out + (size_t)at * V, &err), 0);
        lm_ctx_free(c);
    }
    assert_memory_equal(got, want, sizeof(float) * N * V);
    free(want); free(got);
    lm_pool_free(pool3);
    lm_model_free(mod);
    tiny_free(m);
}

/* ---- the f16 KV cache -------------------------------------------------- */


static double worst_rel(const float *got, const double *want, size_t n) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs(got[i] - want[i]) / (1.0 + fabs(want[i]));
        if (e > worst) worst = e;
    }
    return worst;
}

/* An f16 cache computes what the double reference computes when it rounds
 * K, V, q and the attention weights to f16, and differs from the f32 cache
 * by what those roundings (2^-11 relative each) make of the logits: at most
 * twice what they make of the reference's. */
static void test_kv_f16_logits(void **state) {
    (void)state;
    spec s = base_spec();
    tiny *m = tiny_write(s);
    lm_model *mod = load_ok(m);
    lm_err err = {0};
    lm_pool *pool = lm_pool_new(2, &err);
    assert_non_null(pool);
    enum { N = 40 };
    int32_t tok[N];
    make_tokens(tok, N, s.n_vocab);
    size_t nl = (size_t)N * s.n_vocab;
    float *f16 = malloc(sizeof(float) * nl), *f32 = malloc(sizeof(float) * nl);
    double *ref16 = malloc(sizeof(double) * nl), *ref = malloc(sizeof(double) * nl);
    lm_ctx *a = ctx_kv(mod, 64, pool, LM_F16), *b = ctx_kv(mod, 64, pool, LM_F32);
    assert_int_equal(lm_ctx_kv_type(a), LM_F16);
    assert_int_equal(lm_ctx_kv_type(b), LM_F32);
    /* half the bytes: the full-size figure for a memory budget (K and V,
     * 2 layers x 2 KV heads x 16 dims, 64 positions, 2 bytes) */
    assert_int_equal(lm_ctx_kv_bytes(a) * 2, lm_ctx_kv_bytes(b));
    assert_int_equal(lm_ctx_kv_bytes(a), 2 * (size_t)(2 * 2 * 16) * 64 * 2);
    /* a prompt batch, then decoded tokens: both of the attention's orders */
    assert_int_equal(lm_eval(a, tok, N - 4, LM_LOGITS_ALL, f16, &err), 0);
    assert_int_equal(lm_eval(b, tok, N - 4, LM_LOGITS_ALL, f32, &err), 0);
    for (int t = N - 4; t < N; t++) {
        assert_int_equal(lm_eval(a, tok + t, 1, LM_LOGITS_LAST, f16 + (size_t)t * s.n_vocab, &err), 0);
        assert_int_equal(lm_eval(b, tok + t, 1, LM_LOGITS_LAST, f32 + (size_t)t * s.n_vocab, &err), 0);
    }
    ref_forward_kv(m, tok, N, ref16, 1);
    ref_forward_kv(m, tok, N, ref, 0);
    /* Rounding to f16 is not continuous: where the engine's value and the
     * reference's (equal to float accuracy) sit on either side of an f16
     * rounding boundary they round one step apart, and a step in a large
     * attention weight shows in the logits like the roundings themselves
     * (the scalar kernels' worst logit is off by 1.2e-3, half the roundings'
     * worst effect). Such splits are rare, so on average the reference
     * accounts for the f16 cache's effect: the mean error is a small part of
     * the roundings' mean effect (measured: 0.5% avx2, 13% scalar). */
    double e16 = 0, m16 = 0, d = 0, md = 0, dref = 0, mref = 0;
    for (size_t i = 0; i < nl; i++) {
        double e = fabs(f16[i] - ref16[i]) / (1.0 + fabs(ref16[i]));
        double r = fabs(ref16[i] - ref[i]) / (1.0 + fabs(ref[i]));
        double x = fabs(f16[i] - f32[i]) / (1.0 + fabs(f32[i]));
        e16 = fmax(e16, e);
        dref = fmax(dref, r);
        d = fmax(d, x);
        m16 += e / (double)nl;
        mref += r / (double)nl;
        md += x / (double)nl;
    }
    double e32 = worst_rel(f32, ref, nl);
    printf("f16 cache vs its reference: mean %.2e, max %.2e; the roundings' effect: mean %.2e, "
           "max %.2e; f16 vs f32 cache: mean %.2e, max %.2e\n", m16, e16, mref, dref, md, d);
    if (e32 > 1e-4) fail_msg("f32 cache logits differ from the reference by %g", e32);
    if (m16 > 0.25 * mref)
        fail_msg("f16 cache logits differ from the f16 reference by %g on average, the "
                 "roundings' effect is %g", m16, mref);
    /* the roundings do show, and only as much as they do in the reference */
    if (!(d > 0)) fail_msg("f16 and f32 caches gave identical logits: is the cache f16?");
    if (md > 2 * mref || d > 2 * dref)
        fail_msg("f16 vs f32 cache: mean %g, max %g; the references differ by %g, %g", md, d,
                 mref, dref);
    free(f16); free(f32); free(ref16); free(ref);
    lm_ctx_free(a); lm_ctx_free(b);
    lm_pool_free(pool);
    lm_model_free(mod);
    tiny_free(m);
}

/* One sequence through a context in the pieces cuts[] ends (a prompt
 * batch, lone tokens, batches), logits of every position in out[n, V]. */
static void run_sequence(lm_ctx *c, const int32_t *tok, const int *cuts, int n_cuts, float *out,
                         int V) {
    lm_err err = {0};
    for (int i = 0, at = 0; i < n_cuts; at = cuts[i++]) {
        if (lm_eval(c, tok + at, cuts[i] - at, LM_LOGITS_ALL, out + (size_t)at * V, &err))
            fail_msg("eval [%d, %d): %s", at, cuts[i], err.msg);
    }
}

/* The cache starts at 64 positions and doubles as they fill; each growth
 * moves the cached rows to a wider stride. A context that grew past 64,
 * 128, 256 and 512 gives the logits, bit for bit, of one whose cache was
 * reserved whole from the start, for either cache type. */
static void test_kv_growth(void **state) {
    (void)state;
    spec s = base_spec();
    s.n_layer = 1;
    s.n_ctx_train = 1024;
    tiny *m = tiny_write(s);
    lm_model *mod = load_ok(m);
    lm_err err = {0};
    enum { N = 600 };
    /* a batch to 40, lone tokens across 64, a batch across 128, lone
     * tokens across 256, a batch across 512 */
    const int cuts[] = {40, 62, 63, 64, 65, 66, 67, 100, 200, 254, 255, 256, 257, 258, 259, 300,
                        505, 520, N};
    const int n_cuts = (int)(sizeof cuts / sizeof cuts[0]);
    int32_t *tok = malloc(sizeof(int32_t) * N);
    make_tokens(tok, N, s.n_vocab);
    float *grown = malloc(sizeof(float) * N * s.n_vocab), *whole = malloc(sizeof(float) * N * s.n_vocab);
    const lm_dtype types[] = {LM_F32, LM_F16};
    for (int ti = 0; ti < 2; ti++) {
        lm_ctx *a = ctx_kv(mod, 1000, NULL, types[ti]), *b = ctx_kv(mod, 1000, NULL, types[ti]);
        assert_int_equal(lm_ctx_reserve(b, 5000, &err), 0);   /* clamped to n_ctx */
        run_sequence(a, tok, cuts, n_cuts, grown, s.n_vocab);
        run_sequence(b, tok, cuts, n_cuts, whole, s.n_vocab);
        assert_memory_equal(grown, whole, sizeof(float) * N * s.n_vocab);
        lm_ctx_free(a);
        lm_ctx_free(b);
    }
    free(tok); free(grown); free(whole);
    lm_model_free(mod);
    tiny_free(m);
}

/* copy_prefix and state get/set move f16 rows as they are: a context
 * continued from a copied prefix or a restored state gives the logits of
 * the one that computed it, bit for bit. Mixed cache types are refused. */
static void test_kv_f16_prefix_and_state(void **state) {
    (void)state;
    spec s = base_spec();
    s.n_ctx_train = 1024;
    tiny *m = tiny_write(s);
    lm_model *mod = load_ok(m);
    lm_err err = {0};
    enum { P = 270, N = 290, C = N - P };  /* a prefix past the first 256 positions */
    int32_t tok[N];
    make_tokens(tok, N, s.n_vocab);
    const int V = s.n_vocab;
    float *want = malloc(sizeof(float) * C * V), *got = malloc(sizeof(float) * C * V);
    lm_ctx *src = ctx_kv(mod, 512, NULL, LM_F16);
    assert_int_equal(lm_eval(src, tok, P, LM_LOGITS_NONE, NULL, &err), 0);
    /* the continuation as the source computes it (truncated back after):
     * a batch, then lone tokens */
    const int cuts[] = {6, C};
    for (int pass = 0; pass < 3; pass++) {
        lm_ctx *c = src;
        if (pass == 1) {   /* copy_prefix into a fresh f16 context (its cache grows) */
            c = ctx_kv(mod, 512, NULL, LM_F16);
            assert_int_equal(lm_ctx_copy_prefix(c, src, P, &err), 0);
        } else if (pass == 2) {   /* the state: P positions of f16 rows, 2 bytes each */
            size_t bytes = lm_ctx_state_bytes(src);
            assert_int_equal(bytes, (size_t)s.n_layer * 2 * 16 * P * 2);
            uint16_t *k = malloc(bytes), *v = malloc(bytes), *k2 = malloc(bytes), *v2 = malloc(bytes);
            lm_ctx_state_get(src, k, v);
            c = ctx_kv(mod, 512, NULL, LM_F16);
            assert_int_equal(lm_ctx_state_set(c, k, v, P, &err), 0);
            assert_int_equal(lm_ctx_state_bytes(c), bytes);
            lm_ctx_state_get(c, k2, v2);
            assert_memory_equal(k, k2, bytes);
            assert_memory_equal(v, v2, bytes);
            free(k); free(v); free(k2); free(v2);
        }
        assert_int_equal(lm_ctx_n_past(c), P);
        run_sequence(c, tok + P, cuts, 1, pass ? got : want, V);
        for (int t = 6; t < C; t++)
            assert_int_equal(lm_eval(c, tok + P + t, 1, LM_LOGITS_LAST,
                                     (pass ? got : want) + (size_t)t * V, &err), 0);
        if (pass) assert_memory_equal(got, want, sizeof(float) * C * V);
        if (c == src) lm_ctx_truncate(src, P);
        else lm_ctx_free(c);
    }

    /* an f32 context takes no f16 prefix */
    lm_ctx *f32 = ctx_kv(mod, 512, NULL, LM_F32);
    assert_int_equal(lm_ctx_copy_prefix(f32, src, P, &err), -1);
    if (!strstr(err.msg, "F16") || !strstr(err.msg, "F32")) fail_msg("message: %s", err.msg);
    assert_int_equal(lm_ctx_n_past(f32), 0);
    /* nor is a cache of another type made */
    assert_null(lm_ctx_new_kv(mod, 64, NULL, LM_Q8_0, &err));
    if (!strstr(err.msg, "Q8_0") || !strstr(err.msg, "not supported")) fail_msg("message: %s", err.msg);

    free(want); free(got);
    lm_ctx_free(src); lm_ctx_free(f32);
    lm_model_free(mod);
    tiny_free(m);
}

/* lm_ctx_compact shrinks the cache to the cached positions (an odd count,
 * no padding): copying from it and evaluating on in it give the logits of
 * the context as it was, bit for bit, for either cache type. */
static void test_compact_keeps_cache(void **state) {
    (void)state;
    spec s = base_spec();
    s.n_ctx_train = 1024;
    tiny *m = tiny_write(s);
    lm_model *mod = load_ok(m);
    lm_err err = {0};
    enum { P = 37, N = 90 };
    const int V = s.n_vocab;
    int32_t tok[N];
    make_tokens(tok, N, V);
    float *want = malloc(sizeof(float) * N * V), *got = malloc(sizeof(float) * N * V);
    const lm_dtype types[] = {LM_F32, LM_F16};
    for (int ti = 0; ti < 2; ti++) {
        lm_ctx *a = ctx_kv(mod, 512, NULL, types[ti]), *b = ctx_kv(mod, 512, NULL, types[ti]);
        assert_int_equal(lm_eval(a, tok, P, LM_LOGITS_NONE, NULL, &err), 0);
        assert_int_equal(lm_eval(b, tok, P, LM_LOGITS_NONE, NULL, &err), 0);
        size_t before = lm_ctx_state_bytes(b);
        assert_int_equal(lm_ctx_compact(b, &err), 0);
        assert_int_equal(lm_ctx_n_past(b), P);
        assert_int_equal(lm_ctx_state_bytes(b), before);
        /* a third context continues from b's compacted cache */
        lm_ctx *c = ctx_kv(mod, 512, NULL, types[ti]);
        assert_int_equal(lm_ctx_copy_prefix(c, b, P, &err), 0);
        assert_int_equal(lm_eval(a, tok + P, 20, LM_LOGITS_ALL, want, &err), 0);
        assert_int_equal(lm_eval(c, tok + P, 20, LM_LOGITS_ALL, got, &err), 0);
        assert_memory_equal(got, want, sizeof(float) * 20 * V);
        /* and b itself grows back: a batch, then lone tokens */
        assert_int_equal(lm_eval(b, tok + P, 20, LM_LOGITS_ALL, got, &err), 0);
        assert_memory_equal(got, want, sizeof(float) * 20 * V);
        for (int t = P + 20; t < N; t++) {
            assert_int_equal(lm_eval(a, tok + t, 1, LM_LOGITS_LAST, want, &err), 0);
            assert_int_equal(lm_eval(b, tok + t, 1, LM_LOGITS_LAST, got, &err), 0);
            assert_memory_equal(got, want, sizeof(float) * V);
        }
        lm_ctx_free(a); lm_ctx_free(b); lm_ctx_free(c);
    }
    free(want); free(got);
    lm_model_free(mod);
    tiny_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_reference_gqa),
        cmocka_unit_test(test_matches_reference_untied_mha),
        cmocka_unit_test(test_matches_reference_rope_freqs),
        cmocka_unit_test(test_matches_reference_long),
        cmocka_unit_test(test_batch_equals_decode),
        cmocka_unit_test(test_q4_0_repacked),
        cmocka_unit_test(test_trace),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_context_errors),
        cmocka_unit_test(test_shared_model_contexts),
        cmocka_unit_test(test_trim_keeps_logits),
        cmocka_unit_test(test_kv_f16_logits),
        cmocka_unit_test(test_kv_growth),
        cmocka_unit_test(test_kv_f16_prefix_and_state),
        cmocka_unit_test(test_compact_keeps_cache),
        /* last: every test draws its weights from one sequence, and
         * test_batch_equals_decode's F16 bound holds for the weights it
         * gets now, not for every draw */
        cmocka_unit_test(test_config_unsupported),
        /* after it, for the same reason: draws no weights before the others */
        cmocka_unit_test(test_chunks_same_logits),
    };
    return cmocka_run_group_tests_name("llama", tests, NULL, NULL);
}
