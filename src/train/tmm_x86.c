/* f32 GEMM for training on x86-64 (AVX-512 or AVX2 + FMA): C[M, N] (+)= A[M, K] B[K, N], with A
 * and B given by (row, column) strides so one routine serves y = x W^T,
 * dx += dy W and dW += dy^T x without transposed copies.
 *
 * BLIS-style: per task, an MB x NC block of C; per KC slice of K, B is
 * packed into NR-column panels [kc][NR] (zero padded), A is read in place
 * (any strides: its MR rows are broadcast one element at a time), and a register tile (8 x 32 in 16 zmm accumulators, or
 * 6 x 16 in 12 ymm) runs over each pair. Every C element is the sequence c = fma(a_k, b_k, c) for
 * k = 0, 1, ..., K-1 starting from 0 or from C, whatever the blocking or
 * the number of threads, so results are bitwise thread-count independent.
 *
 * Compiled for every x86-64 target through __attribute__((target)); the
 * caller picks the kernel with lm_tmm_best(). */
#include <stdlib.h>
#include <string.h>

#include "train/tmm.h"

/* Register tile MR x NR: 8 x 32 (AVX-512), 6 x 16 (AVX2). */
#define KC 256
#define MB 240   /* rows of C per task; multiple of both MRs */
#define NC 256   /* multiple of both NRs */

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define TGT512 __attribute__((target("avx512f,fma")))
#define TGT2 __attribute__((target("avx2,fma")))

int lm_tmm_best(void) {
    if (__builtin_cpu_supports("avx512f")) return LM_TMM_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return LM_TMM_AVX2;
    return LM_TMM_NONE;
}

typedef struct tmm_ctx {
    float *c;
    long ldc;
    const float *a, *b;
    long rsa, csa, rsb, csb;
    int M, N, K, accumulate, nnb, nc_task;
    int kind, mr, nr;
    float *scratch;          /* per thread: KC*NC floats, the packed B block */
} tmm_ctx;

/* pb[p][k][j] = B[k0 + k, n0 + p*NR + j], zero past nc */
static void pack_b(float *pb, const tmm_ctx *c, int n0, int nc, int k0, int kc) {
    const int NR = c->nr;
    for (int p = 0; p < nc; p += NR) {
        int cols = nc - p < NR ? nc - p : NR;
        float *dst = pb + (long)p * kc;
        if (c->csb == 1) {
            for (int k = 0; k < kc; k++) {
                const float *src = c->b + (long)(k0 + k) * c->rsb + n0 + p;
                memcpy(dst + k * NR, src, (size_t)cols * sizeof(float));
                for (int j = cols; j < NR; j++) dst[k * NR + j] = 0.0f;
            }
        } else {
            for (int j = 0; j < cols; j++) {
                const float *src = c->b + (long)(n0 + p + j) * c->csb + (long)k0 * c->rsb;
                if (c->rsb == 1)
                    for (int k = 0; k < kc; k++) dst[k * NR + j] = src[k];
                else
                    for (int k = 0; k < kc; k++) dst[k * NR + j] = src[(long)k * c->rsb];
            }
            for (int j = cols; j < NR; j++)
                for (int k = 0; k < kc; k++) dst[k * NR + j] = 0.0f;
        }
    }
}

/* C[MR, NR] (+)= A[MR rows at ar[], kc] pb[kc][NR] on full tiles; load: start from C
 * instead of 0. Edge tiles go through a local full tile (tile_edge). */
TGT512 static void ukernel_avx512(int kc, const float *const ar[8], long csa,
                                  const float *restrict pb, float *c, long ldc, int load) {
    const float *a0 = ar[0], *a1 = ar[1], *a2 = ar[2], *a3 = ar[3];
    const float *a4 = ar[4], *a5 = ar[5], *a6 = ar[6], *a7 = ar[7];
    __m512 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71;
    c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = _mm512_setzero_ps();
    c40 = c41 = c50 = c51 = c60 = c61 = c70 = c71 = _mm512_setzero_ps();
#define LD(i, x0, x1) x0 = _mm512_loadu_ps(c + i * ldc); x1 = _mm512_loadu_ps(c + i * ldc + 16);
    if (load) {
        LD(0, c00, c01) LD(1, c10, c11) LD(2, c20, c21) LD(3, c30, c31)
        LD(4, c40, c41) LD(5, c50, c51) LD(6, c60, c61) LD(7, c70, c71)
    }
#undef LD
    for (int k = 0; k < kc; k++) {
        __m512 b0 = _mm512_loadu_ps(pb), b1 = _mm512_loadu_ps(pb + 16);
        __m512 a;
#define FM(i, x0, x1) a = _mm512_set1_ps(*a##i); a##i += csa; \
        x0 = _mm512_fmadd_ps(a, b0, x0); x1 = _mm512_fmadd_ps(a, b1, x1);
        FM(0, c00, c01) FM(1, c10, c11) FM(2, c20, c21) FM(3, c30, c31)
        FM(4, c40, c41) FM(5, c50, c51) FM(6, c60, c61) FM(7, c70, c71)
#undef FM
        pb += 32;
    }
#define ST(i, x0, x1) _mm512_storeu_ps(c + i * ldc, x0); _mm512_storeu_ps(c + i * ldc + 16, x1);
    ST(0, c00, c01) ST(1, c10, c11) ST(2, c20, c21) ST(3, c30, c31)
    ST(4, c40, c41) ST(5, c50, c51) ST(6, c60, c61) ST(7, c70, c71)
#undef ST
}

/* 6 x 16 on AVX2 + FMA: 12 ymm accumulators, 2 for B, 1 broadcast. */
TGT2 static void ukernel_avx2(int kc, const float *const ar[8], long csa,
                              const float *restrict pb, float *c, long ldc, int load) {
    const float *a0 = ar[0], *a1 = ar[1], *a2 = ar[2], *a3 = ar[3], *a4 = ar[4], *a5 = ar[5];
    __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
    c00 = c01 = c10 = c11 = c20 = c21 = _mm256_setzero_ps();
    c30 = c31 = c40 = c41 = c50 = c51 = _mm256_setzero_ps();
#define LD(i, x0, x1) x0 = _mm256_loadu_ps(c + i * ldc); x1 = _mm256_loadu_ps(c + i * ldc + 8);
    if (load) {
        LD(0, c00, c01) LD(1, c10, c11) LD(2, c20, c21)
        LD(3, c30, c31) LD(4, c40, c41) LD(5, c50, c51)
    }
#undef LD
    for (int k = 0; k < kc; k++) {
        __m256 b0 = _mm256_loadu_ps(pb), b1 = _mm256_loadu_ps(pb + 8);
        __m256 a;
#define FM(i, x0, x1) a = _mm256_broadcast_ss(a##i); a##i += csa; \
        x0 = _mm256_fmadd_ps(a, b0, x0); x1 = _mm256_fmadd_ps(a, b1, x1);
        FM(0, c00, c01) FM(1, c10, c11) FM(2, c20, c21)
        FM(3, c30, c31) FM(4, c40, c41) FM(5, c50, c51)
#undef FM
        pb += 16;
    }
#define ST(i, x0, x1) _mm256_storeu_ps(c + i * ldc, x0); _mm256_storeu_ps(c + i * ldc + 8, x1);
    ST(0, c00, c01) ST(1, c10, c11) ST(2, c20, c21)
    ST(3, c30, c31) ST(4, c40, c41) ST(5, c50, c51)
#undef ST
}

static void ukernel(const tmm_ctx *c, int kc, const float *const ar[8], const float *pb,
                    float *dst, long ldc, int load) {
    if (c->kind == LM_TMM_AVX512) ukernel_avx512(kc, ar, c->csa, pb, dst, ldc, load);
    else ukernel_avx2(kc, ar, c->csa, pb, dst, ldc, load);
}

/* A partial tile (mr < MR or nr < NR) runs the same kernel into a local
 * full tile (missing A rows repeat row 0, B is zero padded), so each of
 * its elements sees exactly the operations it would in a full tile. */
static void tile(const tmm_ctx *c, int kc, const float *const ar[8], const float *pb,
                 float *dst, long ldc, int mr, int nr, int load) {
    if (mr == c->mr && nr == c->nr) {
        ukernel(c, kc, ar, pb, dst, ldc, load);
        return;
    }
    float t[8 * 32] = {0};
    if (load)
        for (int i = 0; i < mr; i++) memcpy(t + i * c->nr, dst + i * ldc, (size_t)nr * sizeof(float));
    ukernel(c, kc, ar, pb, t, c->nr, load);
    for (int i = 0; i < mr; i++) memcpy(dst + i * ldc, t + i * c->nr, (size_t)nr * sizeof(float));
}

/* A task owns rows [m0, m0 + MB) x columns [n0, n0 + nc) of C. Per KC
 * slice the B block [kc, nc] is packed once (L2) and every MR-row strip of
 * A, read in place (L1), runs across all of its NR-column panels. */
static void tmm_task(void *vctx, int task, int n_tasks, int thread) {
    const tmm_ctx *c = vctx;
    const int MR = c->mr, NR = c->nr;
    int m0 = (task / c->nnb) * MB, n0 = (task % c->nnb) * c->nc_task;
    int mc = c->M - m0 < MB ? c->M - m0 : MB;
    int nc = c->N - n0 < c->nc_task ? c->N - n0 : c->nc_task;
    float *pb = c->scratch + (size_t)thread * (KC * NC);
    for (int k0 = 0; k0 < c->K; k0 += KC) {
        int kc = c->K - k0 < KC ? c->K - k0 : KC;
        int load = c->accumulate || k0 > 0;
        pack_b(pb, c, n0, nc, k0, kc);
        for (int i = 0; i < mc; i += MR) {
            int mr = mc - i < MR ? mc - i : MR;
            const float *ar[8];
            for (int r = 0; r < 8; r++)
                ar[r] = c->a + (long)(m0 + i + (r < mr ? r : 0)) * c->rsa + (long)k0 * c->csa;
            for (int j = 0; j < nc; j += NR)
                tile(c, kc, ar, pb + (long)j * kc, c->c + (long)(m0 + i) * c->ldc + n0 + j,
                     c->ldc, mr, nc - j < NR ? nc - j : NR, load);
        }
    }
}

int lm_tmm(lm_pool *pool, int kind, float *C, long ldc, const float *A, long rsa, long csa,
                  const float *B, long rsb, long csb, int M, int N, int K, int accumulate) {
    if (kind != LM_TMM_AVX512 && kind != LM_TMM_AVX2) return -1;
    if (M <= 0 || N <= 0) return 0;
    const int NR = kind == LM_TMM_AVX512 ? 32 : 16;
    if (K <= 0) {
        if (!accumulate)
            for (int i = 0; i < M; i++) memset(C + (long)i * ldc, 0, (size_t)N * sizeof(float));
        return 0;
    }
    int threads = lm_pool_threads(pool);
    float *scratch = aligned_alloc(64, (size_t)threads * KC * NC * sizeof(float));
    if (!scratch) return -1;
    /* narrower column blocks when few row blocks would leave threads idle
     * (the LM head's dx: 64 rows, 576 columns, K = 49152) */
    int nmb = (M + MB - 1) / MB, nc_task = NC;
    while (nc_task > NR && nmb * ((N + nc_task - 1) / nc_task) < 4 * threads) nc_task -= NR;
    int nnb = (N + nc_task - 1) / nc_task;
    tmm_ctx c = { C, ldc, A, B, rsa, csa, rsb, csb, M, N, K, accumulate, nnb, nc_task,
                  kind, kind == LM_TMM_AVX512 ? 8 : 6, NR, scratch };
    lm_pool_run(pool, tmm_task, &c, nmb * nnb);
    free(scratch);
    return 0;
}

#else

int lm_tmm_avx512_ok(void) { return 0; }

int lm_tmm(lm_pool *pool, int kind, float *C, long ldc, const float *A, long rsa, long csa,
                  const float *B, long rsb, long csb, int M, int N, int K, int accumulate) {
    return -1;
}

#endif
