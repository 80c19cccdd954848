/* Blocked f32 GEMM kernels for the training matmuls (train_matmul.c picks
 * one at run time). Internal to src/train. */
#ifndef LM_TRAIN_TMM_H
#define LM_TRAIN_TMM_H

#include "base/pool.h"

enum { LM_TMM_NONE, LM_TMM_AVX2, LM_TMM_AVX512 };
/* The best kernel this CPU runs (LM_TMM_NONE: use the portable loops). */
int lm_tmm_best(void);
/* C[M, N] (+)= A[M, K] B[K, N]; element (i, k) of A is A[i*rsa + k*csa],
 * (k, j) of B is B[k*rsb + j*csb], row i of C starts at C + i*ldc. Results
 * do not depend on the pool's thread count. Both kinds compute every element
 * as the same chain of FMAs over k, so they agree bitwise. -1: out of
 * memory (C untouched) or kind not built here. */
int lm_tmm(lm_pool *pool, int kind, float *C, long ldc, const float *A, long rsa, long csa,
           const float *B, long rsb, long csb, int M, int N, int K, int accumulate);

#endif
