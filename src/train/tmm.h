/* Blocked f32 GEMM kernels for the training matmuls (train_matmul.c picks
 * one at run time). Internal to src/train. */
#ifndef LM_TRAIN_TMM_H
#define LM_TRAIN_TMM_H

#include "base/pool.h"

/* 1 when this CPU runs lm_tmm_avx512. */
int lm_tmm_avx512_ok(void);
/* C[M, N] (+)= A[M, K] B[K, N]; element (i, k) of A is A[i*rsa + k*csa],
 * (k, j) of B is B[k*rsb + j*csb], row i of C starts at C + i*ldc. Results
 * do not depend on the pool's thread count. -1: out of memory (C is then
 * untouched) or no AVX-512 build. */
int lm_tmm_avx512(lm_pool *pool, float *C, long ldc, const float *A, long rsa, long csa,
                  const float *B, long rsb, long csb, int M, int N, int K, int accumulate);

#endif
