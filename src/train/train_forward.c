/* Training forward pass (saving activations) and the chunked, masked
 * cross-entropy fused with the LM head. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train/train_internal.h"

/* out [N, o] (+)= x W^T + scale * (xl A^T) B^T, saving xa = xl A^T [N, r];
 * xl is x, or dropout(x) in training (lora.h). dropout(x) [N, in] is built
 * in a->tmp ([N, max width], free here): it is needed only until xa is
 * made, before tmp takes xa B^T. */
static void linear_fwd(lm_pool *pool, lm_tacts *a, const lm_lora *lora, const lm_tbatch *b,
                       int l, int target, float *out, const float *x, const float *w, int in,
                       int outd, int acc) {
    int N = a->N;
    lm_mm_fwd(pool, a->bf16, out, x, w, N, in, outd, acc);
    if (!lora || !lora->a[l][target]) return;
    float *xa = a->lxa[l * LM_LORA_N + target];
    int r = lora->rank;
    const float *xl = x;
    if (b->lora_dropout > 0) {
        lm_lora_dropout_apply_rows(pool, a->tmp, x, N, in, b->lora_dropout,
                                   lm_lora_dropout_pkey(b->dropout_key, l, target), 0, a->T,
                                   b->dropout_T > 0 ? b->dropout_T : a->T);
        xl = a->tmp;
    }
    lm_mm_fwd(pool, a->bf16, xa, xl, lora->a[l][target], N, in, r, 0);
    lm_mm_fwd(pool, a->bf16, a->tmp, xa, lora->b[l][target], N, r, outd, 0);
    float s = lora->scale;
    for (size_t i = 0; i < (size_t)N * outd; i++) out[i] += s * a->tmp[i];
}

/* forward: b's shape must fit the buffers; loss: it must be the shape
 * forward took. */
static int check_batch(const lm_tmodel *m, const lm_tacts *a, const lm_tbatch *b, int forward,
                       lm_err *err) {
    if (forward && (b->B <= 0 || b->T <= 0 || b->B > a->cap_B || b->T > a->cap_T))
        return lm_errf(err, "batch is %dx%d but activations were sized for at most %dx%d", b->B,
                       b->T, a->cap_B, a->cap_T);
    if (!forward && (b->B != a->B || b->T != a->T))
        return lm_errf(err, "batch is %dx%d but the forward pass took %dx%d", b->B, b->T, a->B, a->T);
    if (!(b->lora_dropout >= 0.0f && b->lora_dropout < 1.0f))
        return lm_errf(err, "batch: LoRA dropout %g outside [0, 1)", (double)b->lora_dropout);
    if (b->dropout_T != 0 && b->dropout_T < b->T)
        return lm_errf(err, "batch: dropout row length %d is shorter than its rows (%d)", b->dropout_T, b->T);
    int N = b->B * b->T;
    for (int i = 0; i < N; i++) {
        if (b->tokens[i] < 0 || b->tokens[i] >= m->cfg.n_vocab)
            return lm_errf(err, "batch row %d position %d: token id %d outside vocab 0..%d",
                           i / b->T, i % b->T, b->tokens[i], m->cfg.n_vocab - 1);
        if (b->pos && (b->pos[i] < 0 || b->pos[i] >= b->T))
            return lm_errf(err, "batch row %d position %d: RoPE position %d outside 0..%d",
                           i / b->T, i % b->T, b->pos[i], b->T - 1);
        if (b->targets && b->mask && b->mask[i] &&
            (b->targets[i] < 0 || b->targets[i] >= m->cfg.n_vocab))
            return lm_errf(err, "batch row %d position %d: target id %d outside vocab 0..%d",
                           i / b->T, i % b->T, b->targets[i], m->cfg.n_vocab - 1);
    }
    return 0;
}

/* Segment starts and RoPE positions for every row position. */
static void layout(lm_tacts *a, const lm_tbatch *b) {
    for (int r = 0; r < b->B; r++) {
        int st = 0;
        for (int t = 0; t < b->T; t++) {
            size_t n = (size_t)r * b->T + t;
            if (b->segments && t > 0 && b->segments[n] != b->segments[n - 1]) st = t;
            a->tstart[n] = st;
            a->tpos[n] = b->pos ? b->pos[n] : t - st;
        }
    }
}

int lm_train_forward(const lm_tmodel *m, const lm_lora *lora, lm_tacts *a,
                     const lm_tbatch *b, lm_pool *pool, lm_err *err) {
    const lm_tconfig *c = &m->cfg;
    if (check_batch(m, a, b, 1, err)) return -1;
    if (lora && a->rank != lora->rank)
        return lm_errf(err, "activations sized for LoRA rank %d, adapter has %d", a->rank, lora->rank);
    a->B = b->B;
    a->T = b->T;
    a->N = b->B * b->T;
    int N = a->N, D = c->dim, H = c->n_heads, Hkv = c->n_kv_heads, hd = c->head_dim;
    int Q = H * hd, K = Hkv * hd, F = c->ffn_dim;
    layout(a, b);
    for (int i = 0; i < N; i++)
        memcpy(a->res[0] + (size_t)i * D, m->tok_embd + (size_t)b->tokens[i] * D, (size_t)D * sizeof(float));
    for (int l = 0; l < c->n_layers; l++) {
        float *const *w = m->layer[l];
        const float *x = a->res[l];
        lm_op_rmsnorm_fwd(a->ln1[l], a->rstd1[l], x, w[LM_TW_ATTN_NORM], N, D, c->rms_eps);
        linear_fwd(pool, a, lora, b, l, LM_LORA_Q, a->q[l], a->ln1[l], w[LM_TW_Q], D, Q, 0);
        linear_fwd(pool, a, lora, b, l, LM_LORA_K, a->k[l], a->ln1[l], w[LM_TW_K], D, K, 0);
        linear_fwd(pool, a, lora, b, l, LM_LORA_V, a->v[l], a->ln1[l], w[LM_TW_V], D, K, 0);
        lm_op_rope(a->q[l], a->rope_cos, a->rope_sin, a->tpos, a->B, a->T, H, hd, 0);
        lm_op_rope(a->k[l], a->rope_cos, a->rope_sin, a->tpos, a->B, a->T, Hkv, hd, 0);
        lm_op_attn_fwd(pool, a->atty[l], a->lse[l], a->q[l], a->k[l], a->v[l], a->tstart,
                       a->B, a->T, H, Hkv, hd, a->att_scratch);
        memcpy(a->res_mid[l], x, (size_t)N * D * sizeof(float));
        linear_fwd(pool, a, lora, b, l, LM_LORA_O, a->res_mid[l], a->atty[l], w[LM_TW_O], Q, D, 1);
        lm_op_rmsnorm_fwd(a->ln2[l], a->rstd2[l], a->res_mid[l], w[LM_TW_FFN_NORM], N, D, c->rms_eps);
        linear_fwd(pool, a, lora, b, l, LM_LORA_GATE, a->gate[l], a->ln2[l], w[LM_TW_GATE], D, F, 0);
        linear_fwd(pool, a, lora, b, l, LM_LORA_UP, a->up[l], a->ln2[l], w[LM_TW_UP], D, F, 0);
        lm_op_swiglu_fwd(pool, a->hmul[l], a->gate[l], a->up[l], (size_t)N * F);
        memcpy(a->res[l + 1], a->res_mid[l], (size_t)N * D * sizeof(float));
        linear_fwd(pool, a, lora, b, l, LM_LORA_DOWN, a->res[l + 1], a->hmul[l], w[LM_TW_DOWN], F, D, 1);
    }
    lm_op_rmsnorm_fwd(a->lnf, a->rstdf, a->res[c->n_layers], m->out_norm, N, D, c->rms_eps);
    return 0;
}

/* Rows go through the LM head a chunk at a time: only masked rows (all rows
 * when the caller wants logits), gathered into a contiguous [cn, dim] block
 * so prompt and padding positions cost nothing. row_logp (may be NULL):
 * per-row sums of log-likelihoods, [B], zeroed here. */
static int head_pass(const lm_tmodel *m, lm_tacts *a, const lm_tbatch *b, lm_pool *pool,
                     int want_grad, float *logits_out, double *loss, double *row_logp,
                     lm_err *err) {
    const lm_tconfig *c = &m->cfg;
    if (!b->targets || !b->mask) return lm_errf(err, "loss: batch has no targets or mask");
    if (check_batch(m, a, b, 0, err)) return -1;
    int N = a->N, D = c->dim, V = c->n_vocab;
    if (b->loss_norm < 0) return lm_errf(err, "loss: loss_norm %ld is negative", b->loss_norm);
    size_t n_mask = 0;
    for (int i = 0; i < N; i++) n_mask += b->mask[i] != 0;
    double denom = b->loss_norm > 0 ? (double)b->loss_norm : (double)n_mask;
    float inv = n_mask ? (float)(1.0 / denom) : 0.0f;
    float *dhead = want_grad ? lm_tgrad(m, m->lm_head) : NULL;
    if (want_grad) memset(a->dlnf, 0, (size_t)N * D * sizeof(float));
    double *nll = NULL;
    if (row_logp) {
        memset(row_logp, 0, (size_t)b->B * sizeof *row_logp);
        if (!(nll = malloc((size_t)a->loss_chunk * sizeof *nll)))
            return lm_errf(err, "loss: out of memory for %d rows", a->loss_chunk);
    }
    double total = 0;
    int next = 0;
    for (;;) {
        int cn = 0;
        for (; next < N && cn < a->loss_chunk; next++)
            if (logits_out || b->mask[next]) a->lrows[cn++] = next;
        if (cn == 0) break;
        for (int r = 0; r < cn; r++)
            memcpy(a->lx + (size_t)r * D, a->lnf + (size_t)a->lrows[r] * D, (size_t)D * sizeof(float));
        lm_mm_fwd(pool, a->bf16, a->logits, a->lx, m->lm_head, cn, D, V, 0);   /* [cn, V] */
        if (logits_out)
            for (int r = 0; r < cn; r++)
                memcpy(logits_out + (size_t)a->lrows[r] * V, a->logits + (size_t)r * V, (size_t)V * sizeof(float));
        if (lm_op_xent(pool, a->logits, cn, V, a->lrows, b->targets, b->mask, b->weight, inv,
                       want_grad, &total, nll)) {
            free(nll);
            return lm_errf(err, "loss: out of memory for %d rows", cn);
        }
        if (nll)   /* rows come in position order, so each row's sum is too */
            for (int r = 0; r < cn; r++)
                if (b->mask[a->lrows[r]]) row_logp[a->lrows[r] / b->T] -= nll[r];
        if (want_grad) {
            memset(a->ldx, 0, (size_t)cn * D * sizeof(float));
            lm_mm_bwd_x(pool, a->bf16, a->ldx, a->logits, m->lm_head, cn, D, V);
            for (int r = 0; r < cn; r++)
                memcpy(a->dlnf + (size_t)a->lrows[r] * D, a->ldx + (size_t)r * D, (size_t)D * sizeof(float));
            if (dhead) lm_mm_bwd_w(pool, a->bf16, dhead, a->logits, a->lx, cn, D, V);
        }
    }
    free(nll);
    if (loss) *loss = n_mask ? total / denom : 0.0;
    return 0;
}

int lm_train_loss(const lm_tmodel *m, lm_tacts *a, const lm_tbatch *b, lm_pool *pool,
                  int want_grad, float *logits_out, double *loss, lm_err *err) {
    return head_pass(m, a, b, pool, want_grad, logits_out, loss, NULL, err);
}

int lm_train_seq_logprobs(const lm_tmodel *m, lm_tacts *a, const lm_tbatch *b, lm_pool *pool,
                          double *out, lm_err *err) {
    lm_tbatch fb = *b;
    fb.weight = NULL;
    fb.loss_norm = 0;
    return head_pass(m, a, &fb, pool, 0, NULL, NULL, out, err);
}
