/* f32 GEMM for training on AVX-512: C[M, N] (+)= A[M, K] B[K, N], with A
 * and B given by (row, column) strides so one routine serves y = x W^T,
 * dx += dy W and dW += dy^T x without transposed copies.
 *
 * BLIS-style: per task, an MC x NC block of C; per KC slice of K, A is
 * packed into MR-row panels [kc][MR] and B into NR-column panels [kc][NR]
 * (zero padded), and an 8 x 32 register tile (16 zmm accumulators) runs
 * over each pair. Every C element is the sequence c = fma(a_k, b_k, c) for
 * k = 0, 1, ..., K-1 starting from 0 or from C, whatever the blocking or
 * the number of threads, so results are bitwise thread-count independent.
 *
 * Compiled for every x86-64 target through __attribute__((target)); the
 * caller asks lm_tmm_avx512_ok() first. */
#include <stdlib.h>
#include <string.h>

#include "train/tmm.h"

#define MR 8
#define NR 32
#define KC 256
#define MC 128   /* multiple of MR */
#define NC 256   /* multiple of NR */

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_TMM 1
#define TGT __attribute__((target("avx512f,avx512vl,fma")))

int lm_tmm_avx512_ok(void) {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
}

typedef struct tmm_ctx {
    float *c;
    long ldc;
    const float *a, *b;
    long rsa, csa, rsb, csb;
    int M, N, K, accumulate, nnb, nc_task;
    float *scratch;          /* per thread: MC*KC + KC*NC floats */
} tmm_ctx;

/* pa[p][k][i] = A[m0 + p*MR + i, k0 + k], zero past mc */
static void pack_a(float *pa, const tmm_ctx *c, int m0, int mc, int k0, int kc) {
    for (int p = 0; p < mc; p += MR) {
        int rows = mc - p < MR ? mc - p : MR;
        for (int i = 0; i < rows; i++) {
            const float *src = c->a + (long)(m0 + p + i) * c->rsa + (long)k0 * c->csa;
            float *dst = pa + (long)p * kc + i;
            if (c->csa == 1)
                for (int k = 0; k < kc; k++) dst[k * MR] = src[k];
            else
                for (int k = 0; k < kc; k++) dst[k * MR] = src[(long)k * c->csa];
        }
        for (int i = rows; i < MR; i++)
            for (int k = 0; k < kc; k++) pa[(long)p * kc + k * MR + i] = 0.0f;
    }
}

/* pb[p][k][j] = B[k0 + k, n0 + p*NR + j], zero past nc */
static void pack_b(float *pb, const tmm_ctx *c, int n0, int nc, int k0, int kc) {
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

/* C[mr, nr] (+)= pa[kc][MR] pb[kc][NR]; load: start from C instead of 0 */
TGT static void ukernel(int kc, const float *restrict pa, const float *restrict pb,
                        float *c, long ldc, int mr, int nr, int load) {
    __mmask16 m0 = nr >= 16 ? 0xffff : (__mmask16)((1u << nr) - 1);
    __mmask16 m1 = nr >= 32 ? 0xffff : nr <= 16 ? 0 : (__mmask16)((1u << (nr - 16)) - 1);
    __m512 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71;
    c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = _mm512_setzero_ps();
    c40 = c41 = c50 = c51 = c60 = c61 = c70 = c71 = _mm512_setzero_ps();
#define LD(i, x0, x1) if (load && mr > i) { \
        x0 = _mm512_maskz_loadu_ps(m0, c + i * ldc); x1 = _mm512_maskz_loadu_ps(m1, c + i * ldc + 16); }
    LD(0, c00, c01) LD(1, c10, c11) LD(2, c20, c21) LD(3, c30, c31)
    LD(4, c40, c41) LD(5, c50, c51) LD(6, c60, c61) LD(7, c70, c71)
#undef LD
    for (int k = 0; k < kc; k++) {
        __m512 b0 = _mm512_load_ps(pb), b1 = _mm512_load_ps(pb + 16);
        __m512 a;
#define FM(i, x0, x1) a = _mm512_set1_ps(pa[i]); \
        x0 = _mm512_fmadd_ps(a, b0, x0); x1 = _mm512_fmadd_ps(a, b1, x1);
        FM(0, c00, c01) FM(1, c10, c11) FM(2, c20, c21) FM(3, c30, c31)
        FM(4, c40, c41) FM(5, c50, c51) FM(6, c60, c61) FM(7, c70, c71)
#undef FM
        pa += MR;
        pb += NR;
    }
#define ST(i, x0, x1) if (mr > i) { \
        _mm512_mask_storeu_ps(c + i * ldc, m0, x0); _mm512_mask_storeu_ps(c + i * ldc + 16, m1, x1); }
    ST(0, c00, c01) ST(1, c10, c11) ST(2, c20, c21) ST(3, c30, c31)
    ST(4, c40, c41) ST(5, c50, c51) ST(6, c60, c61) ST(7, c70, c71)
#undef ST
}

static void tmm_task(void *vctx, int task, int n_tasks, int thread) {
    const tmm_ctx *c = vctx;
    int m0 = (task / c->nnb) * MC, n0 = (task % c->nnb) * c->nc_task;
    int mc = c->M - m0 < MC ? c->M - m0 : MC;
    int nc = c->N - n0 < c->nc_task ? c->N - n0 : c->nc_task;
    float *pa = c->scratch + (size_t)thread * (MC * KC + KC * NC);
    float *pb = pa + MC * KC;
    for (int k0 = 0; k0 < c->K; k0 += KC) {
        int kc = c->K - k0 < KC ? c->K - k0 : KC;
        int load = c->accumulate || k0 > 0;
        pack_a(pa, c, m0, mc, k0, kc);
        pack_b(pb, c, n0, nc, k0, kc);
        for (int j = 0; j < nc; j += NR)
            for (int i = 0; i < mc; i += MR)
                ukernel(kc, pa + (long)i * kc, pb + (long)j * kc,
                        c->c + (long)(m0 + i) * c->ldc + n0 + j, c->ldc,
                        mc - i < MR ? mc - i : MR, nc - j < NR ? nc - j : NR, load);
    }
}

int lm_tmm_avx512(lm_pool *pool, float *C, long ldc, const float *A, long rsa, long csa,
                  const float *B, long rsb, long csb, int M, int N, int K, int accumulate) {
    if (M <= 0 || N <= 0) return 0;
    if (K <= 0) {
        if (!accumulate)
            for (int i = 0; i < M; i++) memset(C + (long)i * ldc, 0, (size_t)N * sizeof(float));
        return 0;
    }
    int threads = lm_pool_threads(pool);
    float *scratch = aligned_alloc(64, (size_t)threads * (MC * KC + KC * NC) * sizeof(float));
    if (!scratch) return -1;
    /* narrower column blocks when few row blocks would leave threads idle
     * (the LM head's dx: 64 rows, 576 columns, K = 49152) */
    int nmb = (M + MC - 1) / MC, nc_task = NC;
    while (nc_task > NR && nmb * ((N + nc_task - 1) / nc_task) < 4 * threads) nc_task -= NR;
    int nnb = (N + nc_task - 1) / nc_task;
    tmm_ctx c = { C, ldc, A, B, rsa, csa, rsb, csb, M, N, K, accumulate, nnb, nc_task, scratch };
    lm_pool_run(pool, tmm_task, &c, nmb * nnb);
    free(scratch);
    return 0;
}

#else

int lm_tmm_avx512_ok(void) { return 0; }

int lm_tmm_avx512(lm_pool *pool, float *C, long ldc, const float *A, long rsa, long csa,
                  const float *B, long rsb, long csb, int M, int N, int K, int accumulate) {
    return -1;
}

#endif
