/* Trainer core: every backward op against central finite differences (no
 * PyTorch involved), the whole model's gradient against finite differences
 * of its loss (full and LoRA), matmul helpers against naive loops, chunked
 * == unchunked loss, position masks, padding inertness, LoRA B=0 identity,
 * AdamW against its formula, LR schedules, GGUF round trip and errors.
 * (tests/torch/ checks the same code against PyTorch.) */
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
#include "tensor/dtype.h"
#include "train/adamw.h"
#include "train/lora.h"
#include "train/train_internal.h"
#include "train/train_model.h"
#include "train/train_ops.h"

/* ---- helpers --------------------------------------------------------- */

static uint32_t rng_state = 12345;
static float frand(void) { /* uniform [-1, 1), test-local generator */
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 17; rng_state ^= rng_state << 5;
    return (float)((rng_state >> 8) * (1.0 / 8388608.0)) - 1.0f;
}
static void fill(float *x, size_t n, float scale) { for (size_t i = 0; i < n; i++) x[i] = scale * frand(); }

static double dotd(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* max|a - b| / max|b| */
static double rel(const float *a, const float *b, size_t n) {
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= md)) md = d;
        if (fabs(b[i]) > mb) mb = fabs(b[i]);
    }
    return mb > 0 ? md / mb : md;
}

/* Central differences of a scalar function of x[n] (x restored after),
 * Richardson-extrapolated from steps h and h/2 so the truncation error is
 * O(h^4) rather than O(h^2). */
typedef double (*scalar_fn)(void *ctx);
static double central(float *x, float h, scalar_fn f, void *ctx) {
    float keep = *x;
    *x = keep + h; double lp = f(ctx);
    *x = keep - h; double lm = f(ctx);
    *x = keep;
    return (lp - lm) / (2.0 * h);
}
static void fd_grad(float *x, size_t n, float h, scalar_fn f, void *ctx, float *out) {
    for (size_t i = 0; i < n; i++) {
        double d1 = central(&x[i], h, f, ctx), d2 = central(&x[i], h / 2, f, ctx);
        out[i] = (float)((4.0 * d2 - d1) / 3.0);
    }
}

/* With steps of 1e-2 the FD error is f32 rounding / h (~1e-5 of the
 * loss) plus O(h^4) truncation; 1e-2 of the largest component leaves a
 * wide margin over both and still catches any wrong term (those show up
 * as O(1) relative errors). */
#define FD_TOL 1e-2

/* ---- rmsnorm --------------------------------------------------------- */

enum { RN = 3, RD = 7 };
typedef struct { float x[RN * RD], w[RD], r[RN * RD]; } rms_case;

static double rms_loss(void *vc) {
    rms_case *c = vc;
    float y[RN * RD], rs[RN];
    lm_op_rmsnorm_fwd(y, rs, c->x, c->w, RN, RD, 1e-5f);
    return dotd(y, c->r, RN * RD);
}

static void test_rmsnorm_bwd(void **state) {
    (void)state;
    rms_case c;
    fill(c.x, RN * RD, 1.0f); fill(c.w, RD, 1.0f); fill(c.r, RN * RD, 1.0f);
    float y[RN * RD], rs[RN], dx[RN * RD] = {0}, dw[RD] = {0}, fx[RN * RD], fw[RD];
    lm_op_rmsnorm_fwd(y, rs, c.x, c.w, RN, RD, 1e-5f);
    lm_op_rmsnorm_bwd(dx, dw, c.r, c.x, c.w, rs, RN, RD);
    fd_grad(c.x, RN * RD, 1e-2f, rms_loss, &c, fx);
    fd_grad(c.w, RD, 1e-2f, rms_loss, &c, fw);
    assert_true(rel(dx, fx, RN * RD) < FD_TOL);
    assert_true(rel(dw, fw, RD) < FD_TOL);
}

/* ---- rope ------------------------------------------------------------ */

static void test_rope_inverse_and_bwd(void **state) {
    (void)state;
    enum { B = 2, T = 5, H = 3, HD = 6 };
    float cs[T * HD / 2], sn[T * HD / 2], x[B * T * H * HD], y[B * T * H * HD];
    int32_t pos[B * T];
    for (int n = 0; n < B * T; n++) pos[n] = n % T;
    lm_op_rope_table(cs, sn, T, HD, 10000.0f, NULL);
    fill(x, sizeof x / sizeof *x, 1.0f);
    memcpy(y, x, sizeof x);
    lm_op_rope(y, cs, sn, pos, B, T, H, HD, 0);
    /* position 0 is the identity; rotations keep every pair's norm */
    for (int i = 0; i < H * HD; i++) assert_float_equal(y[i], x[i], 0);
    for (size_t i = 0; i < sizeof x / sizeof *x; i += 2)
        assert_float_equal(hypotf(y[i], y[i + 1]), hypotf(x[i], x[i + 1]), 1e-5);
    /* pair i of head h at position t turns by t * 10000^(-2i/HD) */
    int t = 3, h = 1, i = 2;
    double ang = t * pow(10000.0, -2.0 * i / HD);
    const float *px = x + ((size_t)t * H + h) * HD + 2 * i, *py = y + ((size_t)t * H + h) * HD + 2 * i;
    assert_float_equal(py[0], px[0] * cos(ang) - px[1] * sin(ang), 1e-5);
    assert_float_equal(py[1], px[0] * sin(ang) + px[1] * cos(ang), 1e-5);
    /* the inverse (= the backward, rotations being orthogonal) undoes it */
    lm_op_rope(y, cs, sn, pos, B, T, H, HD, 1);
    assert_true(rel(y, x, sizeof x / sizeof *x) < 1e-6);
}

/* ---- attention ------------------------------------------------------- */

enum { AB = 2, AT = 5, AH = 4, AHK = 2, AHD = 4, AQ = AB * AT * AH * AHD, AK = AB * AT * AHK * AHD };
typedef struct { float q[AQ], k[AK], v[AK], r[AQ]; int32_t start[AB * AT]; } attn_case;

static double attn_loss(void *vc) {
    attn_case *c = vc;
    float out[AQ], lse[AB * AT * AH], scratch[AB * AH * 16 * (AT + AHD) + AB * AHK * 3 * AHD * 16];
    assert_true(lm_op_attn_scratch(AB, AT, AH, AHK, AHD) <= sizeof scratch / sizeof *scratch);
    lm_op_attn_fwd(NULL, out, lse, c->q, c->k, c->v, c->start, AB, AT, AH, AHK, AHD, scratch);
    return dotd(out, c->r, AQ);
}

static void test_attention_bwd(void **state) {
    (void)state;
    attn_case c;
    fill(c.q, AQ, 1.0f); fill(c.k, AK, 1.0f); fill(c.v, AK, 1.0f); fill(c.r, AQ, 1.0f);
    /* row 0: one sequence; row 1: segments [0, 2) and [2, 5) packed */
    for (int t = 0; t < AT; t++) { c.start[t] = 0; c.start[AT + t] = t < 2 ? 0 : 2; }
    float out[AQ], lse[AB * AT * AH], scratch[AB * AH * 16 * (AT + AHD) + AB * AHK * 3 * AHD * 16];
    assert_true(lm_op_attn_scratch(AB, AT, AH, AHK, AHD) <= sizeof scratch / sizeof *scratch);
    float dq[AQ], dk[AK], dv[AK], fq[AQ], fk[AK], fv[AK];
    lm_op_attn_fwd(NULL, out, lse, c.q, c.k, c.v, c.start, AB, AT, AH, AHK, AHD, scratch);
    /* position 0 attends only to itself: its output is its own v */
    for (int hh = 0; hh < AH; hh++)
        for (int i = 0; i < AHD; i++)
            assert_float_equal(out[hh * AHD + i], c.v[(hh / (AH / AHK)) * AHD + i], 1e-6);
    /* ... and so does the first position of a packed segment */
    for (int hh = 0; hh < AH; hh++)
        for (int i = 0; i < AHD; i++)
            assert_float_equal(out[((size_t)AT + 2) * AH * AHD + hh * AHD + i],
                               c.v[((size_t)AT + 2) * AHK * AHD + (hh / (AH / AHK)) * AHD + i], 1e-6);
    lm_op_attn_bwd(NULL, dq, dk, dv, c.r, out, lse, c.q, c.k, c.v, c.start, AB, AT, AH, AHK, AHD, scratch);
    fd_grad(c.q, AQ, 1e-2f, attn_loss, &c, fq);
    fd_grad(c.k, AK, 1e-2f, attn_loss, &c, fk);
    fd_grad(c.v, AK, 1e-2f, attn_loss, &c, fv);
    assert_true(rel(dq, fq, AQ) < FD_TOL);
    assert_true(rel(dk, fk, AK) < FD_TOL);
    assert_true(rel(dv, fv, AK) < FD_TOL);
}

/* The query blocks (16 rows) of the forward and the backward, a partial
 * last block, packed segments that start inside a block and head_dim's
 * 16-column path, against the formulas in double precision. */
enum { GB = 2, GT = 37, GH = 6, GHK = 2, GHD = 32, GQ = GB * GT * GH * GHD, GK = GB * GT * GHK * GHD };

static void test_attention_bwd_blocks(void **state) {
    (void)state;
    static float q[GQ], k[GK], v[GK], r[GQ], out[GQ], dq[GQ], dk[GK], dv[GK], lse[GB * GT * GH];
    static double rq[GQ], rk[GK], rv[GK];
    static float ro[GQ], rlse[GB * GT * GH];
    static float scratch[GB * GH * 16 * (GT + GHD) + GB * GHK * 3 * GHD * 16];
    int32_t start[GB * GT];
    assert_true(lm_op_attn_scratch(GB, GT, GH, GHK, GHD) <= sizeof scratch / sizeof *scratch);
    fill(q, GQ, 1.0f); fill(k, GK, 1.0f); fill(v, GK, 1.0f); fill(r, GQ, 1.0f);
    for (int t = 0; t < GT; t++) { start[t] = 0; start[GT + t] = t < 13 ? 0 : t < 30 ? 13 : 30; }
    lm_op_attn_fwd(NULL, out, lse, q, k, v, start, GB, GT, GH, GHK, GHD, scratch);
    lm_op_attn_bwd(NULL, dq, dk, dv, r, out, lse, q, k, v, start, GB, GT, GH, GHK, GHD, scratch);
    memset(rq, 0, sizeof rq); memset(rk, 0, sizeof rk); memset(rv, 0, sizeof rv);
    double scale = 1.0 / sqrt((double)GHD), p[GT];
    for (int b = 0; b < GB; b++)
        for (int h = 0; h < GH; h++)
            for (int t = 0; t < GT; t++) {
                int g = h / (GH / GHK), s0 = start[b * GT + t];
                const float *qt = q + ((size_t)(b * GT + t) * GH + h) * GHD, *rt = r + ((size_t)(b * GT + t) * GH + h) * GHD;
                double mx = -INFINITY, sum = 0, o[GHD] = {0}, D = 0;
                for (int s = s0; s <= t; s++) {
                    p[s] = scale * dotd(qt, k + ((size_t)(b * GT + s) * GHK + g) * GHD, GHD);
                    if (p[s] > mx) mx = p[s];
                }
                for (int s = s0; s <= t; s++) { p[s] = exp(p[s] - mx); sum += p[s]; }
                for (int s = s0; s <= t; s++) {
                    p[s] /= sum;
                    for (int i = 0; i < GHD; i++) o[i] += p[s] * v[((size_t)(b * GT + s) * GHK + g) * GHD + i];
                }
                for (int i = 0; i < GHD; i++) {
                    D += o[i] * rt[i];
                    ro[((size_t)(b * GT + t) * GH + h) * GHD + i] = (float)o[i];
                }
                rlse[(b * GT + t) * GH + h] = (float)(mx + log(sum));
                for (int s = s0; s <= t; s++) {
                    size_t ko = ((size_t)(b * GT + s) * GHK + g) * GHD;
                    double dp = dotd(rt, v + ko, GHD), ds = p[s] * (dp - D) * scale;
                    for (int i = 0; i < GHD; i++) {
                        rq[((size_t)(b * GT + t) * GH + h) * GHD + i] += ds * k[ko + i];
                        rk[ko + i] += ds * qt[i];
                        rv[ko + i] += p[s] * rt[i];
                    }
                }
            }
    float fq[GQ], fk[GK], fv[GK];
    for (size_t i = 0; i < GQ; i++) fq[i] = (float)rq[i];
    for (size_t i = 0; i < GK; i++) { fk[i] = (float)rk[i]; fv[i] = (float)rv[i]; }
    assert_true(rel(out, ro, GQ) < 1e-5);
    assert_true(rel(lse, rlse, GB * GT * GH) < 1e-5);
    assert_true(rel(dq, fq, GQ) < 1e-5);
    assert_true(rel(dk, fk, GK) < 1e-5);
    assert_true(rel(dv, fv, GK) < 1e-5);
}

/* ---- swiglu ---------------------------------------------------------- */

enum { SN = 17 };
typedef struct { float g[SN], u[SN], r[SN]; } swi_case;

static double swi_loss(void *vc) {
    swi_case *c = vc;
    float h[SN];
    lm_op_swiglu_fwd(NULL, h, c->g, c->u, SN);
    return dotd(h, c->r, SN);
}

static void test_swiglu_bwd(void **state) {
    (void)state;
    swi_case c;
    fill(c.g, SN, 4.0f); fill(c.u, SN, 1.0f); fill(c.r, SN, 1.0f);
    float h[SN], dg[SN], du[SN], fg[SN], fu[SN];
    lm_op_swiglu_fwd(NULL, h, c.g, c.u, SN);
    assert_float_equal(h[0], c.g[0] / (1 + exp(-c.g[0])) * c.u[0], 1e-6);
    lm_op_swiglu_bwd(NULL, dg, du, c.r, c.g, c.u, SN);
    fd_grad(c.g, SN, 1e-2f, swi_loss, &c, fg);
    fd_grad(c.u, SN, 1e-2f, swi_loss, &c, fu);
    assert_true(rel(dg, fg, SN) < FD_TOL);
    assert_true(rel(du, fu, SN) < FD_TOL);
}

/* ---- matmul helpers -------------------------------------------------- */

static void test_matmul_helpers(void **state) {
    (void)state;
    enum { N = 7, IN = 37, OUT = 131 }; /* odd sizes hit every tail loop */
    static float x[N * IN], w[OUT * IN], dy[N * OUT], y[N * OUT], dx[N * IN], dw[OUT * IN];
    static float ry[N * OUT], rdx[N * IN], rdw[OUT * IN];
    fill(x, N * IN, 1); fill(w, OUT * IN, 1); fill(dy, N * OUT, 1);
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OUT; o++) {
            double s = 0;
            for (int i = 0; i < IN; i++) s += (double)x[n * IN + i] * w[o * IN + i];
            ry[n * OUT + o] = (float)s;
        }
    for (int n = 0; n < N; n++)
        for (int i = 0; i < IN; i++) {
            double s = 0;
            for (int o = 0; o < OUT; o++) s += (double)dy[n * OUT + o] * w[o * IN + i];
            rdx[n * IN + i] = (float)s;
        }
    for (int o = 0; o < OUT; o++)
        for (int i = 0; i < IN; i++) {
            double s = 0;
            for (int n = 0; n < N; n++) s += (double)dy[n * OUT + o] * x[n * IN + i];
            rdw[o * IN + i] = (float)s;
        }
    lm_err err = {{0}};
    lm_pool *pool = lm_pool_new(2, &err);
    assert_non_null(pool);
    for (int p = 0; p < 2; p++) {
        lm_pool *use = p ? pool : NULL;
        memset(dx, 0, sizeof dx); memset(dw, 0, sizeof dw);
        lm_mm_fwd(use, 0, y, x, w, N, IN, OUT, 0);
        lm_mm_bwd_x(use, 0, dx, dy, w, N, IN, OUT);
        lm_mm_bwd_w(use, 0, dw, dy, x, N, IN, OUT);
        assert_true(rel(y, ry, N * OUT) < 1e-5);
        assert_true(rel(dx, rdx, N * IN) < 1e-5);
        assert_true(rel(dw, rdw, OUT * IN) < 1e-5);
        lm_mm_fwd(use, 0, y, x, w, N, IN, OUT, 1); /* accumulate: now twice */
        for (int i = 0; i < N * OUT; i++) assert_float_equal(y[i], 2 * ry[i], 1e-4);
    }
    lm_pool_free(pool);
}

/* dx += dy W with a W too big for cache (the LM-head path: split over W's
 * rows into fixed partial sums) against a double-precision loop, and the
 * same bits with and without threads. */
static void test_matmul_big_w(void **state) {
    (void)state;
    enum { N = 5, IN = 64, OUT = 70001 };
    float *w = malloc(sizeof(float) * OUT * IN), *dy = malloc(sizeof(float) * N * OUT);
    float dx[N * IN], dx2[N * IN], ref[N * IN];
    double acc[N * IN] = {0};
    assert_non_null(w);
    assert_non_null(dy);
    fill(w, (size_t)OUT * IN, 1); fill(dy, (size_t)N * OUT, 1);
    for (int o = 0; o < OUT; o++) dy[2 * OUT + o] = 0.0f;   /* an all-zero row, as masked rows are */
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OUT; o++)
            for (int i = 0; i < IN; i++) acc[n * IN + i] += (double)dy[(size_t)n * OUT + o] * w[(size_t)o * IN + i];
    for (int i = 0; i < N * IN; i++) ref[i] = (float)acc[i] + 1.0f;
    for (int i = 0; i < N * IN; i++) dx[i] = dx2[i] = 1.0f;   /* accumulates */
    lm_err err = {{0}};
    lm_pool *pool = lm_pool_new(2, &err);
    lm_mm_bwd_x(NULL, 0, dx, dy, w, N, IN, OUT);
    lm_mm_bwd_x(pool, 0, dx2, dy, w, N, IN, OUT);
    assert_true(rel(dx, ref, N * IN) < 1e-5);
    assert_memory_equal(dx, dx2, sizeof dx);
    for (int i = 0; i < IN; i++) assert_true(dx[2 * IN + i] == 1.0f);
    lm_pool_free(pool);
    free(w);
    free(dy);
}

/* ---- whole model ----------------------------------------------------- */

static const lm_tconfig tiny = {
    .n_vocab = 11, .dim = 8, .n_layers = 2, .n_heads = 2, .n_kv_heads = 1, .head_dim = 4,
    .ffn_dim = 12, .rope_base = 10000.0f, .rms_eps = 1e-5f, .tied = 1,
};
enum { MB = 2, MT = 5, MN = MB * MT };

typedef struct model_case {
    lm_tmodel *m;
    lm_lora *lora;
    lm_tacts *a;
    int32_t tokens[MN], targets[MN];
    uint8_t mask[MN];
    lm_tbatch b;
} model_case;

static void mc_init(model_case *c, int tied, int rank, int chunk) {
    lm_err err = {{0}};
    lm_tconfig cfg = tiny;
    cfg.tied = tied;
    c->m = lm_tmodel_new_random(&cfg, 7, 0.5f, &err);
    assert_non_null(c->m);
    assert_int_equal(lm_tmodel_alloc_grads(c->m, &err), 0);
    c->lora = NULL;
    if (rank) {
        c->lora = lm_lora_new(c->m, rank, 2.0f * rank, LM_LORA_ALL, 3, &err);
        assert_non_null(c->lora);
    }
    c->a = lm_tacts_new(c->m, c->lora, MB, MT, chunk, &err);
    assert_non_null(c->a);
    for (int i = 0; i < MN; i++) {
        c->tokens[i] = (int32_t)(i * 7 % 11);
        c->targets[i] = (int32_t)((i * 5 + 3) % 11);
        c->mask[i] = (uint8_t)(i % 5 != 0 && i != 9); /* row 1 ends in padding */
    }
    c->b = (lm_tbatch){ .B = MB, .T = MT, .tokens = c->tokens, .targets = c->targets, .mask = c->mask };
}

static void mc_free(model_case *c) {
    lm_tacts_free(c->a);
    lm_lora_free(c->lora);
    lm_tmodel_free(c->m);
}

static double mc_loss(void *vc) {
    model_case *c = vc;
    lm_err err = {{0}};
    double loss;
    assert_int_equal(lm_train_forward(c->m, c->lora, c->a, &c->b, NULL, &err), 0);
    assert_int_equal(lm_train_loss(c->m, c->a, &c->b, NULL, 0, NULL, &loss, &err), 0);
    return loss;
}

static void mc_grad(model_case *c, double *loss) {
    lm_err err = {{0}};
    lm_tmodel_zero_grads(c->m);
    if (c->lora) lm_lora_zero_grads(c->lora);
    assert_int_equal(lm_train_grad(c->m, c->lora, c->a, &c->b, NULL, loss, &err), 0);
}

static void check_table_fd(model_case *c, float *params, float *grads, const lm_ttensor *ts, int n) {
    for (int t = 0; t < n; t++) {
        size_t numel = ts[t].numel;
        float *fd = malloc(numel * sizeof(float));
        assert_non_null(fd);
        fd_grad(params + ts[t].offset, numel, 1e-2f, mc_loss, c, fd);
        double e = rel(grads + ts[t].offset, fd, numel);
        if (!(e < FD_TOL)) fail_msg("%s: rel err %g vs finite differences", ts[t].name, e);
        free(fd);
    }
}

static void test_model_grad_fd(void **state) {
    (void)state;
    for (int tied = 0; tied < 2; tied++) {
        model_case c;
        mc_init(&c, tied, 0, 3);
        double loss;
        mc_grad(&c, &loss);
        assert_true(loss > 0);
        check_table_fd(&c, c.m->params, c.m->grads, c.m->tensors, c.m->n_tensors);
        mc_free(&c);
    }
}

static void test_lora_grad_fd(void **state) {
    (void)state;
    model_case c;
    mc_init(&c, 1, 2, 4);
    for (size_t i = 0; i < c.lora->n_params; i++) c.lora->params[i] = 0.5f * frand(); /* B != 0 */
    free(c.m->grads);
    c.m->grads = NULL; /* frozen base: only adapter gradients */
    double loss;
    mc_grad(&c, &loss);
    check_table_fd(&c, c.lora->params, c.lora->grads, c.lora->tensors, c.lora->n_tensors);
    mc_free(&c);
}

static void test_chunked_loss_equals_unchunked(void **state) {
    (void)state;
    model_case ref;
    mc_init(&ref, 1, 0, MN);     /* one chunk: the whole [N, vocab] logits */
    double l_ref;
    mc_grad(&ref, &l_ref);
    int chunks[] = { 1, 3, 4, 7 };
    for (size_t k = 0; k < sizeof chunks / sizeof *chunks; k++) {
        model_case c;
        mc_init(&c, 1, 0, chunks[k]);
        double l;
        mc_grad(&c, &l);
        assert_float_equal(l, l_ref, 1e-6 * l_ref);
        assert_true(rel(c.m->grads, ref.m->grads, ref.m->n_params) < 1e-6);
        mc_free(&c);
    }
    mc_free(&ref);
}

/* Every pool task owns disjoint outputs and sums in a fixed order, so the
 * thread count cannot change a single bit. */
static void test_threads_bitwise_equal(void **state) {
    (void)state;
    model_case c, d;
    mc_init(&c, 0, 2, 3);
    mc_init(&d, 0, 2, 3);
    for (size_t i = 0; i < c.lora->n_params; i++) c.lora->params[i] = d.lora->params[i] = 0.3f * frand();
    lm_err err = {{0}};
    lm_pool *pool = lm_pool_new(2, &err);
    assert_non_null(pool);
    double lc, ld;
    mc_grad(&c, &lc);
    lm_tmodel_zero_grads(d.m);
    lm_lora_zero_grads(d.lora);
    assert_int_equal(lm_train_grad(d.m, d.lora, d.a, &d.b, pool, &ld, &err), 0);
    assert_true(lc == ld);
    assert_memory_equal(c.m->grads, d.m->grads, c.m->n_params * sizeof(float));
    assert_memory_equal(c.lora->grads, d.lora->grads, c.lora->n_params * sizeof(float));
    lm_pool_free(pool);
    mc_free(&c);
    mc_free(&d);
}

/* Two micro-batches with loss_norm = the total masked count accumulate
 * exactly the gradient of the whole batch, and their losses add up to it. */
static void test_grad_accumulation(void **state) {
    (void)state;
    model_case whole;
    mc_init(&whole, 1, 0, 3);
    double lw;
    mc_grad(&whole, &lw);
    lm_err err = {{0}};
    lm_tmodel *m = lm_tmodel_new_random(&tiny, 7, 0.5f, &err);  /* same seed as mc_init */
    assert_int_equal(lm_tmodel_alloc_grads(m, &err), 0);
    lm_tacts *a = lm_tacts_new(m, NULL, 1, MT, 3, &err);
    long total = 0;
    for (int i = 0; i < MN; i++) total += whole.mask[i];
    double sum = 0;
    for (int r = 0; r < MB; r++) {
        lm_tbatch half = { .B = 1, .T = MT, .tokens = whole.tokens + r * MT,
                           .targets = whole.targets + r * MT, .mask = whole.mask + r * MT,
                           .loss_norm = total };
        double l;
        assert_int_equal(lm_train_grad(m, NULL, a, &half, NULL, &l, &err), 0);
        sum += l;
    }
    assert_float_equal(sum, lw, 1e-6 * lw);
    assert_true(rel(m->grads, whole.m->grads, m->n_params) < 1e-5);
    lm_tacts_free(a);
    lm_tmodel_free(m);
    mc_free(&whole);
}

static void test_mask_by_position(void **state) {
    (void)state;
    model_case c, d;
    mc_init(&c, 1, 0, 3);
    mc_init(&d, 1, 0, 3);
    /* changing the target of a masked-out position changes nothing */
    for (int i = 0; i < MN; i++)
        if (!d.mask[i]) d.targets[i] = (d.targets[i] + 1) % 11;
    double lc, ld;
    mc_grad(&c, &lc);
    mc_grad(&d, &ld);
    assert_true(lc == ld);
    assert_memory_equal(c.m->grads, d.m->grads, c.m->n_params * sizeof(float));
    /* changing the target of a masked-in position does change the loss */
    d.targets[1] = (d.targets[1] + 1) % 11;
    mc_grad(&d, &ld);
    assert_true(lc != ld);
    /* the same id (2: eos == pad in SmolLM2) is trained at position 1 and
     * ignored at position 0: the mask follows positions, never ids */
    assert_true(c.mask[1] && !c.mask[0]);
    c.targets[0] = c.targets[1] = 2;
    double l2, l3;
    mc_grad(&c, &l2);
    c.targets[1] = 3;
    mc_grad(&c, &l3);
    assert_true(l2 != l3);
    c.targets[1] = 2;
    c.targets[0] = 3;
    mc_grad(&c, &l3);
    assert_true(l2 == l3);
    /* mean over masked positions: masking all but one gives that one's nll */
    memset(c.mask, 0, sizeof c.mask);
    c.mask[6] = 1;
    float logits[MN * 11];
    lm_err err = {{0}};
    double l1;
    assert_int_equal(lm_train_forward(c.m, NULL, c.a, &c.b, NULL, &err), 0);
    assert_int_equal(lm_train_loss(c.m, c.a, &c.b, NULL, 0, logits, &l1, &err), 0);
    double mx = -1e30, s = 0;
    for (int j = 0; j < 11; j++) mx = fmax(mx, logits[6 * 11 + j]);
    for (int j = 0; j < 11; j++) s += exp(logits[6 * 11 + j] - mx);
    assert_float_equal(l1, mx + log(s) - logits[6 * 11 + c.targets[6]], 1e-5);
    /* no masked position: zero loss, zero gradient */
    memset(c.mask, 0, sizeof c.mask);
    mc_grad(&c, &lc);
    assert_true(lc == 0.0);
    for (size_t i = 0; i < c.m->n_params; i++) assert_true(c.m->grads[i] == 0.0f);
    mc_free(&c);
    mc_free(&d);
}

static void test_padding_is_inert(void **state) {
    (void)state;
    model_case c, d;
    mc_init(&c, 1, 0, 3);
    mc_init(&d, 1, 0, 3);
    /* row 1 is padded from position 4 on (mask 0 there): its token may be anything */
    d.tokens[9] = (d.tokens[9] + 4) % 11;
    float lc[MN * 11], ld[MN * 11];
    double x, y;
    lm_err err = {{0}};
    assert_int_equal(lm_train_forward(c.m, NULL, c.a, &c.b, NULL, &err), 0);
    assert_int_equal(lm_train_loss(c.m, c.a, &c.b, NULL, 0, lc, &x, &err), 0);
    assert_int_equal(lm_train_forward(d.m, NULL, d.a, &d.b, NULL, &err), 0);
    assert_int_equal(lm_train_loss(d.m, d.a, &d.b, NULL, 0, ld, &y, &err), 0);
    assert_memory_equal(lc, ld, 9 * 11 * sizeof(float)); /* every real position */
    assert_true(memcmp(lc + 9 * 11, ld + 9 * 11, 11 * sizeof(float)) != 0);
    assert_true(x == y);
    mc_free(&c);
    mc_free(&d);
}

/* Two sequences packed into one row (segments, positions restarting at 0)
 * give the same logits, loss and gradients as the same sequences in rows
 * of their own. */
static void test_packing_equals_separate_rows(void **state) {
    (void)state;
    enum { LA = 4, LB = 3, T = LA + LB + 1 };
    lm_err err = {{0}};
    lm_tmodel *m1 = lm_tmodel_new_random(&tiny, 21, 0.5f, &err);
    lm_tmodel *m2 = lm_tmodel_new_random(&tiny, 21, 0.5f, &err);
    assert_int_equal(lm_tmodel_alloc_grads(m1, &err) | lm_tmodel_alloc_grads(m2, &err), 0);
    int32_t sa[LA] = { 3, 1, 4, 1 }, sb[LB] = { 5, 9, 2 };
    /* packed: [a0 a1 a2 a3 b0 b1 b2 pad] */
    int32_t ptok[T], ptgt[T], pseg[T], ppos[T];
    uint8_t pmask[T];
    for (int t = 0; t < T; t++) {
        int in_a = t < LA, in_b = !in_a && t < LA + LB;
        int i = in_a ? t : t - LA;
        ptok[t] = in_a ? sa[i] : in_b ? sb[i] : 2;
        ptgt[t] = in_a ? (i + 1 < LA ? sa[i + 1] : 2) : in_b ? (i + 1 < LB ? sb[i + 1] : 2) : 2;
        pmask[t] = (uint8_t)((in_a || in_b) && t != 0);
        pseg[t] = in_a ? 1 : in_b ? 2 : 0;
        ppos[t] = in_a || in_b ? i : 0;
    }
    /* separate: row 0 = a + pad, row 1 = b + pad */
    int32_t stok[2 * T], stgt[2 * T];
    uint8_t smask[2 * T];
    for (int r = 0; r < 2; r++)
        for (int t = 0; t < T; t++) {
            int src = r == 0 ? t : LA + t, real = r == 0 ? t < LA : t < LB;
            stok[r * T + t] = real ? ptok[src] : 2;
            stgt[r * T + t] = real ? ptgt[src] : 2;
            smask[r * T + t] = real ? pmask[src] : 0;
        }
    lm_tbatch pb = { .B = 1, .T = T, .tokens = ptok, .targets = ptgt, .mask = pmask,
                     .segments = pseg, .pos = ppos };
    lm_tbatch sbt = { .B = 2, .T = T, .tokens = stok, .targets = stgt, .mask = smask };
    lm_tacts *pa = lm_tacts_new(m1, NULL, 1, T, 3, &err), *sa_ = lm_tacts_new(m2, NULL, 2, T, 3, &err);
    float pl[T * 11], sl[2 * T * 11];
    double lp, ls;
    assert_int_equal(lm_train_forward(m1, NULL, pa, &pb, NULL, &err), 0);
    assert_int_equal(lm_train_loss(m1, pa, &pb, NULL, 0, pl, &lp, &err), 0);
    assert_int_equal(lm_train_forward(m2, NULL, sa_, &sbt, NULL, &err), 0);
    assert_int_equal(lm_train_loss(m2, sa_, &sbt, NULL, 0, sl, &ls, &err), 0);
    assert_true(rel(pl, sl, LA * 11) < 1e-6);                         /* sequence a */
    assert_true(rel(pl + LA * 11, sl + T * 11, LB * 11) < 1e-6);      /* sequence b */
    assert_float_equal(lp, ls, 1e-6 * ls);
    assert_int_equal(lm_train_grad(m1, NULL, pa, &pb, NULL, &lp, &err), 0);
    assert_int_equal(lm_train_grad(m2, NULL, sa_, &sbt, NULL, &ls, &err), 0);
    assert_true(rel(m1->grads, m2->grads, m1->n_params) < 1e-5);
    /* without the segments, b would see a: the check above is not vacuous */
    lm_tbatch nb = { .B = 1, .T = T, .tokens = ptok, .targets = ptgt, .mask = pmask, .pos = ppos };
    assert_int_equal(lm_train_forward(m1, NULL, pa, &nb, NULL, &err), 0);
    assert_int_equal(lm_train_loss(m1, pa, &nb, NULL, 0, pl, &lp, &err), 0);
    assert_true(rel(pl + LA * 11, sl + T * 11, LB * 11) > 1e-3);
    /* positions outside the row are refused */
    ppos[1] = T;
    assert_int_equal(lm_train_forward(m1, NULL, pa, &pb, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "RoPE position"));
    lm_tacts_free(pa);
    lm_tacts_free(sa_);
    lm_tmodel_free(m1);
    lm_tmodel_free(m2);
}

static void test_lora_zero_b_is_identity(void **state) {
    (void)state;
    model_case base, ad;
    mc_init(&base, 1, 0, 3);
    mc_init(&ad, 1, 4, 3);
    for (size_t k = 0; k < (size_t)ad.lora->n_tensors; k += 2) { /* A from PEFT init, non-zero */
        const lm_ttensor *ta = &ad.lora->tensors[k];
        assert_non_null(strstr(ta->name, ".lora_a"));
        double bound = 1.0 / sqrt((double)ta->ne[0]), mx = 0;
        for (size_t i = 0; i < ta->numel; i++) {
            float v = ad.lora->params[ta->offset + i];
            assert_true(fabs(v) <= bound);
            mx = fmax(mx, fabs(v));
        }
        assert_true(mx > 0.5 * bound);
        const lm_ttensor *tb = &ad.lora->tensors[k + 1];
        for (size_t i = 0; i < tb->numel; i++) assert_true(ad.lora->params[tb->offset + i] == 0.0f);
    }
    float lb[MN * 11], la[MN * 11];
    double x, y;
    lm_err err = {{0}};
    assert_int_equal(lm_train_forward(base.m, NULL, base.a, &base.b, NULL, &err), 0);
    assert_int_equal(lm_train_loss(base.m, base.a, &base.b, NULL, 0, lb, &x, &err), 0);
    assert_int_equal(lm_train_forward(ad.m, ad.lora, ad.a, &ad.b, NULL, &err), 0);
    assert_int_equal(lm_train_loss(ad.m, ad.a, &ad.b, NULL, 0, la, &y, &err), 0);
    assert_memory_equal(lb, la, sizeof lb);
    /* B = 0: A gets no gradient, B does */
    mc_grad(&ad, &y);
    double ga = 0, gb = 0;
    for (int k = 0; k < ad.lora->n_tensors; k++) {
        const lm_ttensor *t = &ad.lora->tensors[k];
        double s = lm_grad_norm(ad.lora->grads + t->offset, t->numel);
        if (k % 2) gb += s; else ga += s;
    }
    assert_true(ga == 0.0 && gb > 0.0);
    mc_free(&base);
    mc_free(&ad);
}

static void test_targets_parse(void **state) {
    (void)state;
    unsigned m = 0;
    lm_err err = {{0}};
    assert_int_equal(lm_lora_parse_targets("q,v", &m, &err), 0);
    assert_int_equal(m, (1u << LM_LORA_Q) | (1u << LM_LORA_V));
    assert_int_equal(lm_lora_parse_targets("all", &m, &err), 0);
    assert_int_equal(m, LM_LORA_ALL);
    assert_int_equal(lm_lora_parse_targets("q,qq", &m, &err), -1);
    assert_non_null(strstr(err.msg, "'qq'"));
}

/* l's tensors written as an adapter GGUF at path, less those whose name
 * starts with skip, plus an F32 tensor [8, 1] named extra (each NULL: none). */
static void write_adapter(const lm_lora *l, const char *path, const char *skip, const char *extra) {
    lm_err err = {{0}};
    gguf_writer *w = gguf_writer_new();
    assert_non_null(w);
    assert_int_equal(gguf_set_str(w, "general.architecture", "llama", &err), 0);
    assert_int_equal(gguf_set_str(w, "general.type", "adapter", &err), 0);
    assert_int_equal(gguf_set_str(w, "adapter.type", "lora", &err), 0);
    assert_int_equal(gguf_set_f32(w, "adapter.lora.alpha", l->alpha, &err), 0);
    for (int i = 0; i < l->n_tensors; i++) {
        const lm_ttensor *x = &l->tensors[i];
        if (skip && !strncmp(x->name, skip, strlen(skip))) continue;
        assert_int_equal(gguf_add_tensor(w, x->name, LM_F32, 2, x->ne, l->params + x->offset,
                                         x->numel * sizeof(float), &err), 0);
    }
    float v[8] = {0};
    int64_t ne[2] = {8, 1};
    if (extra) assert_int_equal(gguf_add_tensor(w, extra, LM_F32, 2, ne, v, sizeof v, &err), 0);
    assert_int_equal(gguf_write(w, path, &err), 0);
    gguf_writer_free(w);
}

static void test_lora_save_load(void **state) {
    (void)state;
    lm_err err = {{0}};
    lm_tmodel *m = lm_tmodel_new_random(&tiny, 5, 0.3f, &err);
    unsigned targets = (1u << LM_LORA_K) | (1u << LM_LORA_DOWN);
    lm_lora *l = lm_lora_new(m, 3, 6.0f, targets, 11, &err);
    assert_non_null(l);
    for (size_t i = 0; i < l->n_params; i++) l->params[i] = frand();
    char path[] = "/tmp/lm_test_lora_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(lm_lora_save(l, path, &err), 0);
    lm_lora *r = lm_lora_load(m, path, &err);
    if (!r) fail_msg("%s", err.msg);
    assert_int_equal(r->rank, 3);
    assert_int_equal(r->targets, targets);
    assert_float_equal(r->alpha, 6.0f, 0);
    assert_float_equal(r->scale, 2.0f, 0);
    assert_int_equal(r->n_params, l->n_params);
    assert_memory_equal(r->params, l->params, l->n_params * sizeof(float));
    const lm_ttensor *t = lm_lora_find(r, "blk.1.ffn_down.weight.lora_b");
    assert_non_null(t);
    assert_int_equal(t->ne[0], 3);     /* [r, out] in ggml order */
    assert_int_equal(t->ne[1], tiny.dim);
    lm_lora_free(r);
    /* F16 factors (lemonpc build --adapter-type f16) load widened, exactly */
    gguf_writer *w = gguf_writer_new();
    assert_non_null(w);
    assert_int_equal(gguf_set_str(w, "general.architecture", "llama", &err), 0);
    assert_int_equal(gguf_set_str(w, "general.type", "adapter", &err), 0);
    assert_int_equal(gguf_set_str(w, "adapter.type", "lora", &err), 0);
    assert_int_equal(gguf_set_f32(w, "adapter.lora.alpha", 6.0f, &err), 0);
    uint16_t *h = malloc(l->n_params * sizeof *h);
    assert_non_null(h);
    for (size_t i = 0; i < l->n_params; i++) h[i] = lm_f32_to_f16(l->params[i]);
    for (int i = 0; i < l->n_tensors; i++) {
        const lm_ttensor *x = &l->tensors[i];
        assert_int_equal(gguf_add_tensor(w, x->name, LM_F16, 2, x->ne, h + x->offset,
                                         x->numel * sizeof *h, &err), 0);
    }
    assert_int_equal(gguf_write(w, path, &err), 0);
    gguf_writer_free(w);
    r = lm_lora_load(m, path, &err);
    if (!r) fail_msg("%s", err.msg);
    assert_int_equal(r->n_params, l->n_params);
    for (size_t i = 0; i < l->n_params; i++) assert_true(r->params[i] == lm_f16_to_f32(h[i]));
    free(h);
    lm_lora_free(r);
    assert_int_equal(lm_lora_save(l, path, &err), 0);
    /* an adapter made for another model is refused with the tensor's name */
    lm_tconfig other = tiny;
    other.ffn_dim = 16;
    lm_tmodel *m2 = lm_tmodel_new_random(&other, 5, 0.3f, &err);
    assert_null(lm_lora_load(m2, path, &err));
    assert_non_null(strstr(err.msg, "ffn_down.weight.lora_a"));
    lm_tmodel_free(m2);
    /* the runtime's reader checks it (lm_adapter_read): a tensor that is no
     * adapter half is refused as a game would refuse it, and the trainer
     * also needs the same targets on every layer */
    write_adapter(l, path, NULL, "blk.0.attn_norm.weight");
    assert_null(lm_lora_load(m, path, &err));
    assert_non_null(strstr(err.msg, "'blk.0.attn_norm.weight' is not a lora_a/lora_b"));
    write_adapter(l, path, "blk.1.attn_k.", NULL);
    assert_null(lm_lora_load(m, path, &err));
    assert_non_null(strstr(err.msg, "'blk.1.attn_k.weight.lora_a' missing (every layer needs the same targets)"));
    write_adapter(l, path, NULL, NULL);
    assert_non_null(r = lm_lora_load(m, path, &err));
    assert_memory_equal(r->params, l->params, l->n_params * sizeof(float));
    lm_lora_free(r);
    unlink(path);
    lm_lora_free(l);
    lm_tmodel_free(m);
}

/* ---- optimizer ------------------------------------------------------- */

/* The update is split into chunks over the pool (tensor boundaries inside
 * chunks, clipping on): any thread count gives the bits of the serial run,
 * and the reported norm is lm_grad_norm's. */
static void test_adamw_threads_bitwise(void **state) {
    (void)state;
    enum { A = 70001, B = 100003, N = A + B };
    lm_ttensor ts[2] = {
        { .name = "w", .n_dims = 2, .ne = {1, A}, .offset = 0, .numel = A },
        { .name = "blk.0.attn_norm.weight", .n_dims = 1, .ne = {B, 1}, .offset = A, .numel = B },
    };
    float *p[2], *g[2];
    lm_adamw *o[2];
    lm_err err = {{0}};
    lm_pool *pool = lm_pool_new(3, &err);
    assert_non_null(pool);
    double norm[2];
    for (int k = 0; k < 2; k++) {
        p[k] = malloc(sizeof(float) * N);
        g[k] = malloc(sizeof(float) * N);
        assert_true(p[k] && g[k]);
        rng_state = 7;
        fill(p[k], N, 1.0f);
        o[k] = lm_adamw_new(N, &err);
        assert_non_null(o[k]);
    }
    lm_adamw_cfg cfg = lm_adamw_defaults();
    for (int step = 0; step < 3; step++)
        for (int k = 0; k < 2; k++) {
            rng_state = 100u + (uint32_t)step;
            fill(g[k], N, 0.05f);
            double want = lm_grad_norm(g[k], N);
            assert_int_equal(lm_adamw_step(k ? pool : NULL, o[k], &cfg, 1e-3f, p[k], g[k], ts, 2,
                                           &norm[k], &err), 0);
            assert_true(norm[k] == want);
            assert_true(want > cfg.grad_clip);   /* the clipping path ran */
        }
    assert_true(norm[0] == norm[1]);
    assert_memory_equal(p[0], p[1], sizeof(float) * N);
    assert_memory_equal(o[0]->m, o[1]->m, sizeof(float) * N);
    assert_memory_equal(o[0]->v, o[1]->v, sizeof(float) * N);
    for (int k = 0; k < 2; k++) { free(p[k]); free(g[k]); lm_adamw_free(o[k]); }
    lm_pool_free(pool);
}

static void test_adamw_formula(void **state) {
    (void)state;
    /* two tensors: a matrix (decays) and a norm weight (does not) */
    lm_ttensor ts[2] = {
        { .name = "m", .n_dims = 2, .ne = {2, 2}, .offset = 0, .numel = 4 },
        { .name = "n", .n_dims = 1, .ne = {2, 1}, .offset = 4, .numel = 2 },
    };
    float p[6] = { 0.5f, -1.0f, 2.0f, 0.0f, 1.0f, -0.25f }, g[6];
    double P[6], M[6] = {0}, V[6] = {0};
    for (int i = 0; i < 6; i++) P[i] = p[i];
    lm_err err = {{0}};
    lm_adamw *o = lm_adamw_new(6, &err);
    lm_adamw_cfg cfg = { 0.9f, 0.99f, 1e-8f, 0.1f, 0.0f };
    float lr = 0.01f;
    for (int step = 1; step <= 3; step++) {
        for (int i = 0; i < 6; i++) g[i] = 0.1f * (float)(i + 1) * (step % 2 ? 1.0f : -0.5f);
        assert_int_equal(lm_adamw_step(NULL, o, &cfg, lr, p, g, ts, 2, NULL, &err), 0);
        for (int i = 0; i < 6; i++) { /* Loshchilov & Hutter, as torch.optim.AdamW */
            double gi = g[i];
            if (i < 4) P[i] *= 1.0 - (double)lr * cfg.weight_decay;
            M[i] = 0.9 * M[i] + 0.1 * gi;
            V[i] = 0.99 * V[i] + 0.01 * gi * gi;
            double mh = M[i] / (1 - pow(0.9, step)), vh = V[i] / (1 - pow(0.99, step));
            P[i] -= lr * mh / (sqrt(vh) + 1e-8);
            assert_float_equal(p[i], P[i], 1e-6);
        }
    }
    lm_adamw_free(o);
    /* clipping scales the whole gradient to the max norm */
    float gg[6] = { 3, 4, 0, 0, 0, 0 };
    o = lm_adamw_new(6, &err);
    cfg.grad_clip = 1.0f;
    double norm;
    assert_int_equal(lm_adamw_step(NULL, o, &cfg, lr, p, gg, ts, 2, &norm, &err), 0);
    assert_float_equal(norm, 5.0, 1e-9);
    assert_float_equal(gg[0], 0.6, 1e-6);
    assert_float_equal(gg[1], 0.8, 1e-6);
    lm_adamw_free(o);
}

static void test_lr_schedules(void **state) {
    (void)state;
    assert_float_equal(lm_lr_at(LM_LR_COSINE, 1.0f, 0, 10, 110), 0.0, 1e-7);
    assert_float_equal(lm_lr_at(LM_LR_COSINE, 1.0f, 5, 10, 110), 0.5, 1e-7);
    assert_float_equal(lm_lr_at(LM_LR_COSINE, 1.0f, 10, 10, 110), 1.0, 1e-7);
    assert_float_equal(lm_lr_at(LM_LR_COSINE, 1.0f, 60, 10, 110), 0.5, 1e-6);
    assert_float_equal(lm_lr_at(LM_LR_COSINE, 1.0f, 110, 10, 110), 0.0, 1e-7);
    assert_float_equal(lm_lr_at(LM_LR_LINEAR, 2.0f, 35, 10, 110), 1.5, 1e-6);
    assert_float_equal(lm_lr_at(LM_LR_LINEAR, 2.0f, 500, 10, 110), 0.0, 1e-7);
    assert_float_equal(lm_lr_at(LM_LR_CONSTANT, 2.0f, 500, 10, 110), 2.0, 1e-7);
}

/* ---- GGUF and errors ------------------------------------------------- */

static void test_gguf_roundtrip_and_errors(void **state) {
    (void)state;
    lm_err err = {{0}};
    lm_tconfig cfg = tiny;
    cfg.tied = 0;
    lm_tmodel *m = lm_tmodel_new_random(&cfg, 9, 0.3f, &err);
    assert_non_null(m);
    char path[] = "/tmp/lm_test_train_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(lm_tmodel_save(m, path, NULL, &err), 0);
    lm_tmodel *r = lm_tmodel_load(path, &err);
    if (!r) fail_msg("%s", err.msg);
    assert_int_equal(r->cfg.tied, 0);
    assert_int_equal(r->cfg.n_kv_heads, 1);
    assert_int_equal(r->n_params, m->n_params);
    assert_memory_equal(r->params, m->params, m->n_params * sizeof(float));
    lm_tmodel_free(r);

    /* the same tensors under metadata claiming 2 KV heads: K no longer fits */
    gguf_file *f = gguf_open(path, &err);
    assert_non_null(f);
    gguf_writer *w = gguf_writer_new();
    assert_int_equal(gguf_copy_kvs(w, f, &err), 0);
    assert_int_equal(gguf_set_u32(w, "llama.attention.head_count_kv", 2, &err), 0);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        assert_int_equal(gguf_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, t->nbytes, &err), 0);
    }
    char bad[] = "/tmp/lm_test_train_bad_XXXXXX";
    fd = mkstemp(bad);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(gguf_write(w, bad, &err), 0);
    gguf_writer_free(w);
    gguf_close(f);
    assert_null(lm_tmodel_load(bad, &err));
    assert_non_null(strstr(err.msg, "blk.0.attn_k.weight"));
    assert_non_null(strstr(err.msg, bad));
    unlink(bad);
    unlink(path);

    /* token id outside the vocabulary: an error naming the position */
    lm_tacts *a = lm_tacts_new(m, NULL, 1, 3, 0, &err);
    int32_t tok[3] = { 1, 11, 2 }, tgt[3] = { 1, 2, 3 };
    uint8_t mask[3] = { 1, 1, 1 };
    lm_tbatch b = { .B = 1, .T = 3, .tokens = tok, .targets = tgt, .mask = mask };
    assert_int_equal(lm_train_forward(m, NULL, a, &b, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "position 1"));
    /* a batch of another shape than the activations */
    lm_tbatch b2 = { .B = 1, .T = 2, .tokens = tok, .targets = tgt, .mask = mask };
    assert_int_equal(lm_train_forward(m, NULL, a, &b2, NULL, &err), -1);
    lm_tacts_free(a);
    /* bad LoRA rank */
    assert_null(lm_lora_new(m, 0, 1.0f, LM_LORA_ALL, 1, &err));
    assert_non_null(strstr(err.msg, "rank"));
    lm_tmodel_free(m);
    /* missing file */
    assert_null(lm_tmodel_load("/nonexistent/x.gguf", &err));
    assert_non_null(strstr(err.msg, "/nonexistent/x.gguf"));
    /* bad config */
    cfg.n_kv_heads = 3;
    assert_null(lm_tmodel_new_random(&cfg, 1, 0.1f, &err));
    assert_non_null(strstr(err.msg, "head_count_kv"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rmsnorm_bwd),
        cmocka_unit_test(test_rope_inverse_and_bwd),
        cmocka_unit_test(test_attention_bwd),
        cmocka_unit_test(test_attention_bwd_blocks),
        cmocka_unit_test(test_swiglu_bwd),
        cmocka_unit_test(test_matmul_helpers),
        cmocka_unit_test(test_matmul_big_w),
        cmocka_unit_test(test_model_grad_fd),
        cmocka_unit_test(test_lora_grad_fd),
        cmocka_unit_test(test_chunked_loss_equals_unchunked),
        cmocka_unit_test(test_threads_bitwise_equal),
        cmocka_unit_test(test_grad_accumulation),
        cmocka_unit_test(test_mask_by_position),
        cmocka_unit_test(test_padding_is_inert),
        cmocka_unit_test(test_packing_equals_separate_rows),
        cmocka_unit_test(test_lora_zero_b_is_identity),
        cmocka_unit_test(test_targets_parse),
        cmocka_unit_test(test_lora_save_load),
        cmocka_unit_test(test_adamw_formula),
        cmocka_unit_test(test_adamw_threads_bitwise),
        cmocka_unit_test(test_lr_schedules),
        cmocka_unit_test(test_gguf_roundtrip_and_errors),
    };
    return cmocka_run_group_tests_name("train", tests, NULL, NULL);
}
