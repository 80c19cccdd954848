/* The per-op forward/backward pairs of the training graph, exposed so the
 * unit test can check each backward against finite differences. Backward
 * functions accumulate (+=) into dx/dw unless they say "writes". */
#ifndef LM_TRAIN_OPS_H
#define LM_TRAIN_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "base/pool.h"

/* y = x / sqrt(mean(x^2) + eps) * w.  x, y [n, d]; rstd [n] saved. */
void lm_op_rmsnorm_fwd(float *y, float *rstd, const float *x, const float *w,
                       int n, int d, float eps);
/* dx [n, d] +=, dw [d] += (dw may be NULL). */
/* y = x * rstd * w with a saved rstd: the same bits lm_op_rmsnorm_fwd wrote,
 * so backward can recompute the norm output instead of keeping it. */
void lm_op_rmsnorm_apply(float *y, const float *x, const float *rstd, const float *w, int n, int d);
void lm_op_rmsnorm_bwd(float *dx, float *dw, const float *dy, const float *x,
                       const float *w, const float *rstd, int n, int d);

/* cos/sin tables [T, hd/2]: angle(t, i) = t * base^(-2i/hd) / freqs[i], in
 * double; freqs [hd/2] are Llama 3.x's per-pair divisors (rope_freqs.weight),
 * NULL for none. */
void lm_op_rope_table(float *cos_t, float *sin_t, int T, int hd, float base,
                      const float *freqs);
/* In place on x [B*T, n_heads*hd], rotating adjacent pairs (2i, 2i+1) of each
 * head by angle(pos[n], i); pos [B*T] holds positions in [0, T). inverse
 * rotates back, which is also the backward of the forward rotation (the
 * transpose of a rotation, by the same angles, divisors or not). */
void lm_op_rope(float *x, const float *cos_t, const float *sin_t, const int32_t *pos,
                int B, int T, int n_heads, int hd, int inverse);

/* Causal grouped-query attention, scale 1/sqrt(hd). q [B*T, H*hd],
 * k, v [B*T, Hkv*hd] -> out [B*T, H*hd], lse [B*T, H] (log-sum-exp of each
 * score row, so backward recomputes probabilities instead of storing
 * [B, H, T, T]). Position t of a row attends to positions start[t]..t of
 * the same row (start [B*T], row-relative: 0 for one sequence per row, the
 * first position of t's segment when rows are packed). scratch:
 * lm_op_attn_scratch floats. */
size_t lm_op_attn_scratch(int B, int T, int H, int Hkv, int hd);
void lm_op_attn_fwd(lm_pool *pool, float *out, float *lse, const float *q, const float *k,
                    const float *v, const int32_t *start, int B, int T, int H, int Hkv, int hd,
                    float *scratch);
/* Writes dq, dk, dv (no accumulation). */
void lm_op_attn_bwd(lm_pool *pool, float *dq, float *dk, float *dv, const float *dout,
                    const float *out, const float *lse, const float *q, const float *k,
                    const float *v, const int32_t *start, int B, int T, int H, int Hkv, int hd,
                    float *scratch);

/* h = silu(gate) * up, elementwise over n. */
void lm_op_swiglu_fwd(lm_pool *pool, float *h, const float *gate, const float *up, size_t n);
/* Writes dgate, dup. */
void lm_op_swiglu_bwd(lm_pool *pool, float *dgate, float *dup, const float *dh, const float *gate,
                      const float *up, size_t n);

/* Cross-entropy over logits z [rows, V]: row r is sequence position
 * pos[r], which counts when mask[pos[r]] is set, with target
 * targets[pos[r]]. Adds -log softmax(z)[target] of each counted row to
 * *sum, times weight[pos[r]] when weight is given, in row order (the same
 * bits for any thread count or chunking); nll (may be NULL) gets each
 * row's unweighted -log softmax(z)[target] (0 on rows that do not count).
 * With want_grad z becomes scale * weight[pos[r]] * (softmax(z) - onehot)
 * on counted rows (weight NULL: 1) and 0 on the others. -1 only when out
 * of memory (z untouched). */
int lm_op_xent(lm_pool *pool, float *z, int rows, int V, const int *pos, const int32_t *targets,
               const uint8_t *mask, const float *weight, float scale, int want_grad, double *sum,
               double *nll);

#endif
