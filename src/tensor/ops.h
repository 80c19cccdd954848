/* Compute kernels for the forward pass. Shapes in comments use row-major
 * [rows, cols]. Weights W are [n, k]: n rows of k elements in dtype wtype
 * (the GGUF layout: ne[0] = k is the row length). SIMD variants (AVX-512,
 * AVX2, portable C) are chosen once at run time from what the CPU has. */
#ifndef LM_TENSOR_OPS_H
#define LM_TENSOR_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "base/pool.h"
#include "tensor/dtype.h"

/* y[m, n] = x[m, k] @ W[n, k]^T. For quantized W the activations are first
 * quantized to 8 bit per block (Q8_0, or Q8_1 for Q4_1) and dotted with
 * integer arithmetic, as llama.cpp does. Rows of W are split over the pool. */
void lm_matmul(lm_pool *pool, float *y, const float *x, const void *W,
               lm_dtype wtype, int m, int n, int k);

/* Several matmuls of the same x[m, k] with weights of one type:
 * ys[p][m, ns[p]] = x @ Ws[p][ns[p], k]^T for p < count (<=
 * LM_MATMUL_MAX_PARTS). x is quantized once and all of them run in one
 * pool dispatch (Q/K/V, gate/up); each y is bit-identical to lm_matmul's. */
#define LM_MATMUL_MAX_PARTS 4
void lm_matmul_multi(lm_pool *pool, int count, float *const *ys, const void *const *Ws,
                     const int *ns, lm_dtype wtype, const float *x, int m, int k);

/* out[m, d] = x[m, d] / rms(x) * w[d] */
void lm_rmsnorm(float *out, const float *x, const float *w, int m, int d, float eps);

/* Rotates q[n_tokens, n_heads, head_dim] in place at positions pos[t],
 * "normal" (adjacent pairs 2i, 2i+1) rope as llama.cpp applies to GGUF
 * llama weights: theta_i = pos * base^(-2i/head_dim). */
void lm_rope(float *q, int n_tokens, int n_heads, int head_dim,
             const int32_t *pos, float base);

/* One query head's causal attention over n_keys cached positions:
 * out[hd] = softmax(scale * K q) V, where row p of K and V is at
 * K + p*kv_stride, V + p*kv_stride (a head's slice of a [n_ctx, kv_dim]
 * cache). scores[n_keys] is caller scratch (left holding the weights).
 * SIMD like lm_matmul; the result does not depend on the thread that runs it. */
void lm_attn_head(float *out, const float *q, const float *K, const float *V, size_t kv_stride,
                  int n_keys, int head_dim, float scale, float *scores);

/* x[n] = softmax(x[n]) in place, max-subtracted. */
void lm_softmax(float *x, int n);

/* out[i] = silu(gate[i]) * up[i] */
void lm_swiglu(float *out, const float *gate, const float *up, int n);

/* Name of the kernel set in use ("avx512-vnni", "avx2", "scalar"). */
const char *lm_kernels_name(void);

#endif
