/* Training backward pass: reverse of lm_train_forward, starting from the
 * d(final norm output) that lm_train_loss left in a->dlnf. */
#include <string.h>

#include "train/train_internal.h"

/* Backward of out = x W^T + s (xl A^T) B^T, xl = x or x * m / (1 - p):
 *   dx += dy W + s ((dy B) A) * m / (1 - p),  dW += dy^T x,  dB += s dy^T xa,
 *   dA += s (dy B)^T xl.
 * With dropout the mask is regenerated (lora.h: a pure function of the
 * key) rather than kept from forward: xl, then (dy B) A, are built in
 * a->tmp ([N, max width], free once dB is done), so dropout costs no
 * memory. Keeping masks would cost a float copy of every adapted input
 * (~L * 7 * N * dim floats), or as bits still ~19 KB per token on
 * SmolLM2 (38 MB for 2048 tokens, which the LoRA 1 GB budget, 970 MB used,
 * can hardly spare); hashing three times per element (once forward, twice
 * here) costs ~2% of a step. */
static void linear_bwd(lm_pool *pool, lm_tmodel *m, lm_lora *lora, lm_tacts *a,
                       const lm_tbatch *b, int l, int target, float *dx, const float *dy,
                       const float *x, int in, int outd) {
    int N = a->N;
    const float *w = m->layer[l][lm_lora_base_index(target)];
    float *dw = lm_tgrad(m, w);
    if (dw) lm_mm_bwd_w(pool, a->bf16, dw, dy, x, N, in, outd);
    lm_mm_bwd_x(pool, a->bf16, dx, dy, w, N, in, outd);
    if (!lora || !lora->a[l][target]) return;
    int r = lora->rank;
    float s = lora->scale;
    const float *xa = a->lxa[l * LM_LORA_N + target];
    float *A = lora->a[l][target], *Bm = lora->b[l][target];
    float *dA = lora->grads + (A - lora->params), *dB = lora->grads + (Bm - lora->params);
    for (size_t i = 0; i < (size_t)N * r; i++) a->tmp[i] = s * xa[i];
    lm_mm_bwd_w(pool, a->bf16, dB, dy, a->tmp, N, r, outd);
    memset(a->dxa, 0, (size_t)N * r * sizeof(float));
    lm_mm_bwd_x(pool, a->bf16, a->dxa, dy, Bm, N, r, outd);
    for (size_t i = 0; i < (size_t)N * r; i++) a->dxa[i] *= s;
    if (b->lora_dropout > 0) {
        uint64_t pk = lm_lora_dropout_pkey(b->dropout_key, l, target);
        int kT = b->dropout_T > 0 ? b->dropout_T : a->T;
        lm_lora_dropout_apply_rows(pool, a->tmp, x, N, in, b->lora_dropout, pk, 0, a->T, kT);
        lm_mm_bwd_w(pool, a->bf16, dA, a->dxa, a->tmp, N, in, r);
        memset(a->tmp, 0, (size_t)N * in * sizeof(float));
        lm_mm_bwd_x(pool, a->bf16, a->tmp, a->dxa, A, N, in, r);
        lm_lora_dropout_apply_rows(pool, dx, a->tmp, N, in, b->lora_dropout, pk, 1, a->T, kT);
    } else {
        lm_mm_bwd_w(pool, a->bf16, dA, a->dxa, x, N, in, r);
        lm_mm_bwd_x(pool, a->bf16, dx, a->dxa, A, N, in, r);
    }
}

int lm_train_backward(lm_tmodel *m, lm_lora *lora, lm_tacts *a, const lm_tbatch *b,
                      lm_pool *pool, lm_err *err) {
    const lm_tconfig *c = &m->cfg;
    if (b->B != a->B || b->T != a->T)
        return lm_errf(err, "backward: batch is %dx%d but the forward pass took %dx%d",
                       b->B, b->T, a->B, a->T);
    if (lora && a->rank != lora->rank)
        return lm_errf(err, "backward: activations sized for LoRA rank %d, adapter has %d", a->rank, lora->rank);
    if (!(b->lora_dropout >= 0.0f && b->lora_dropout < 1.0f))
        return lm_errf(err, "backward: LoRA dropout %g outside [0, 1)", (double)b->lora_dropout);
    int N = a->N, D = c->dim, H = c->n_heads, Hkv = c->n_kv_heads, hd = c->head_dim;
    int Q = H * hd, K = Hkv * hd, F = c->ffn_dim, L = c->n_layers;
    size_t nD = (size_t)N * D;
    memset(a->dres, 0, nD * sizeof(float));
    lm_op_rmsnorm_bwd(a->dres, lm_tgrad(m, m->out_norm), a->dlnf, a->res[L], m->out_norm,
                      a->rstdf, N, D);
    for (int l = L - 1; l >= 0; l--) {
        float *const *w = m->layer[l];
        /* a->dres is d res[l+1] = d res_mid (identity path) before the adds below */
        lm_op_swiglu_fwd(pool, a->hmul[l], a->gate[l], a->up[l], (size_t)N * F);
        lm_op_rmsnorm_apply(a->ln2[l], a->res_mid[l], a->rstd2[l], w[LM_TW_FFN_NORM], N, D);
        memset(a->dhmul, 0, (size_t)N * F * sizeof(float));
        linear_bwd(pool, m, lora, a, b, l, LM_LORA_DOWN, a->dhmul, a->dres, a->hmul[l], F, D);
        lm_op_swiglu_bwd(pool, a->dgate, a->dup, a->dhmul, a->gate[l], a->up[l], (size_t)N * F);
        memset(a->dln, 0, nD * sizeof(float));
        linear_bwd(pool, m, lora, a, b, l, LM_LORA_GATE, a->dln, a->dgate, a->ln2[l], D, F);
        linear_bwd(pool, m, lora, a, b, l, LM_LORA_UP, a->dln, a->dup, a->ln2[l], D, F);
        lm_op_rmsnorm_bwd(a->dres, lm_tgrad(m, w[LM_TW_FFN_NORM]), a->dln, a->res_mid[l],
                          w[LM_TW_FFN_NORM], a->rstd2[l], N, D);
        /* a->dres is now d res_mid = d res[l] along the identity path */
        memset(a->datty, 0, (size_t)N * Q * sizeof(float));
        linear_bwd(pool, m, lora, a, b, l, LM_LORA_O, a->datty, a->dres, a->atty[l], Q, D);
        lm_op_attn_bwd(pool, a->dq, a->dk, a->dv, a->datty, a->atty[l], a->lse[l], a->q[l],
                       a->k[l], a->v[l], a->tstart, a->B, a->T, H, Hkv, hd, a->att_scratch);
        lm_op_rope(a->dq, a->rope_cos, a->rope_sin, a->tpos, a->B, a->T, H, hd, 1);
        lm_op_rope(a->dk, a->rope_cos, a->rope_sin, a->tpos, a->B, a->T, Hkv, hd, 1);
        lm_op_rmsnorm_apply(a->ln1[l], a->res[l], a->rstd1[l], w[LM_TW_ATTN_NORM], N, D);
        memset(a->dln, 0, nD * sizeof(float));
        linear_bwd(pool, m, lora, a, b, l, LM_LORA_Q, a->dln, a->dq, a->ln1[l], D, Q);
        linear_bwd(pool, m, lora, a, b, l, LM_LORA_K, a->dln, a->dk, a->ln1[l], D, K);
        linear_bwd(pool, m, lora, a, b, l, LM_LORA_V, a->dln, a->dv, a->ln1[l], D, K);
        lm_op_rmsnorm_bwd(a->dres, lm_tgrad(m, w[LM_TW_ATTN_NORM]), a->dln, a->res[l],
                          w[LM_TW_ATTN_NORM], a->rstd1[l], N, D);
    }
    float *demb = lm_tgrad(m, m->tok_embd);
    if (demb)
        for (int i = 0; i < N; i++) {
            float *g = demb + (size_t)b->tokens[i] * D;
            const float *d = a->dres + (size_t)i * D;
            for (int j = 0; j < D; j++) g[j] += d[j];
        }
    return 0;
}

int lm_train_grad(lm_tmodel *m, lm_lora *lora, lm_tacts *a, const lm_tbatch *b,
                  lm_pool *pool, double *loss, lm_err *err) {
    if (lm_train_forward(m, lora, a, b, pool, err) ||
        lm_train_loss(m, a, b, pool, 1, NULL, loss, err) ||
        lm_train_backward(m, lora, a, b, pool, err))
        return -1;
    return 0;
}
