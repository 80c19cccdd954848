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
 * llama weights: theta_i = pos * base^(-2i/head_dim) / freqs[i], freqs
 * [head_dim/2] the per-pair divisors of Llama 3.x (rope_freqs.weight) or
 * NULL for none. */
void lm_rope(float *q, int n_tokens, int n_heads, int head_dim,
             const int32_t *pos, float base, const float *freqs);

/* Causal attention of n_q query heads that share one KV head (GQA) over
 * n_keys cached positions: out[h][hd] = softmax(scale * K q[h]) V for
 * h < n_q, q and out [n_q, hd] contiguous. K and V of the KV head are
 * stored transposed: value i of key p at Kt[i*stride + p] (Vt alike), rows
 * read up to n_keys rounded up to 32 (their weight there is 0; the values
 * must be finite). kv_type is the cache's element type, LM_F32 or LM_F16;
 * with f16, q and the softmax weights are rounded to f16 before their dot
 * products, as llama.cpp converts a matmul's f32 operand to its f16
 * weights' type. scores[n_q, n_keys rounded up to 32] is caller scratch
 * (left holding the weights). The reduction orders are llama.cpp's
 * non-flash ones: f32 cache, ggml_vec_dot_f32 for the scores, tinyBLAS for
 * the weighted sum of a batch of several tokens, ggml_vec_dot_f32 when
 * single is set (the token is alone in its batch); f16 cache, tinyBLAS for
 * both products in a batch, ggml_vec_dot_f16 for both when single. So
 * logits match it bit for bit. The result does not depend on the thread
 * that runs it, nor on n_q. */
#define LM_ATTN_PAD 32
void lm_attn_heads(float *out, const float *q, int n_q, const void *Kt, const void *Vt,
                   lm_dtype kv_type, size_t stride, int n_keys, int head_dim, float scale,
                   int single, float *scores);

/* x[n] = softmax(x[n]) in place, max-subtracted. */
void lm_softmax(float *x, int n);

/* out[i] = silu(gate[i]) * up[i] */
void lm_swiglu(float *out, const float *gate, const float *up, int n);

/* Name of the kernel set in use ("avx512", "avx2", "scalar"). */
const char *lm_kernels_name(void);

#endif
