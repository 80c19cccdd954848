/* Blocked f32 GEMM kernels for the training matmuls (train_matmul.c picks
 * the one of the kernel set in use: tensor/ops.h lm_kernels_name). Internal
 * to src/train. */
#ifndef LM_TRAIN_TMM_H
#define LM_TRAIN_TMM_H

#include "base/pool.h"

enum { LM_TMM_NONE, LM_TMM_AVX2, LM_TMM_AVX512 };
/* C[M, N] (+)= A[M, K] B[K, N]; element (i, k) of A is A[i*rsa + k*csa],
 * (k, j) of B is B[k*rsb + j*csb], row i of C starts at C + i*ldc. Results
 * do not depend on the pool's thread count. Both kinds compute every element
 * as the same chain of FMAs over k, so they agree bitwise. -1: out of
 * memory (C untouched) or kind not built here. */
int lm_tmm(lm_pool *pool, int kind, float *C, long ldc, const float *A, long rsa, long csa,
           const float *B, long rsb, long csb, int M, int N, int K, int accumulate);
/* The same product with A and B rounded to bf16 and multiplied with
 * vdpbf16ps (AVX-512 BF16), sums in f32: every element is, from 0 or C, for
 * each pair p of k in order, c = fma(a[2p+1], b[2p+1], c) then
 * c = fma(a[2p], b[2p], c), on inputs rounded to nearest even (denormals
 * flushed to zero, in and out). --precision bf16. -1: out of memory or no
 * AVX-512 BF16 here (C untouched). */
int lm_tmm_bf16(lm_pool *pool, float *C, long ldc, const float *A, long rsa, long csa, const float *B,
                long rsb, long csb, int M, int N, int K, int accumulate);

#endif
