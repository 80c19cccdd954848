/* f32 GEMM for training on x86-64 (AVX-512 or AVX2 + FMA): C[M, N] (+)= A[M, K] B[K, N], with A
 * and B given by (row, column) strides so one routine serves y = x W^T,
 * dx += dy W and dW += dy^T x without transposed copies.
 *
 * BLIS-style: per task, an mb x nc block of C; per KC slice of K, B is
 * packed into NR-column panels [kc][NR] (zero padded), A is read in place
 * (any strides: its MR rows are broadcast one element at a time), and a register tile (8 x 32 in 16 zmm accumulators, or
 * 6 x 16 in 12 ymm) runs over each pair. Every C element is the sequence c = fma(a_k, b_k, c) for
 * k = 0, 1, ..., K-1 starting from 0 or from C, whatever the blocking or
 * the number of threads, so results are bitwise thread-count independent.
 *
 * Compiled for every x86-64 target through __attribute__((target)); the
 * caller picks the kind from the kernel set in use (train_matmul.c). */
#include <stdlib.h>
#include <string.h>

#include "train/tmm.h"

/* Register tile MR x NR: 8 x 32 (AVX-512), 6 x 16 (AVX2). */
#define KC 256
#define MB_MAX 512   /* most rows of C per task (before rounding up to MR) */
#define PA_ROWS (MB_MAX + 8)   /* packed A: mb rounded up to whole MR strips */
#define NC 256   /* multiple of both NRs */

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define TGT512 __attribute__((target("avx512f,fma")))
#define TGT2 __attribute__((target("avx2,fma")))

typedef struct tmm_ctx {
    float *c;
    long ldc;
    const float *a, *b;
    long rsa, csa, rsb, csb;
    int M, N, K, accumulate;
    int mb, nmb, nc_task, nnb;   /* task grid: nmb row blocks x nnb column blocks */
    int kind, mr, nr;
    float *scratch;          /* per thread: KC*NC floats (packed B) + PA_ROWS*KC (packed A) */
} tmm_ctx;

/* 8 x 8 transpose: d[k * ld + j] = s[j * ls + k], j, k < 8 (AVX2 shuffles). */
TGT2 static void transpose8(float *d, long ld, const float *s, long ls) {
    __m256 r0 = _mm256_loadu_ps(s), r1 = _mm256_loadu_ps(s + ls);
    __m256 r2 = _mm256_loadu_ps(s + 2 * ls), r3 = _mm256_loadu_ps(s + 3 * ls);
    __m256 r4 = _mm256_loadu_ps(s + 4 * ls), r5 = _mm256_loadu_ps(s + 5 * ls);
    __m256 r6 = _mm256_loadu_ps(s + 6 * ls), r7 = _mm256_loadu_ps(s + 7 * ls);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_storeu_ps(d, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(d + ld, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(d + 2 * ld, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(d + 3 * ld, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(d + 4 * ld, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(d + 5 * ld, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(d + 6 * ld, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(d + 7 * ld, _mm256_permute2f128_ps(u3, u7, 0x31));
}

/* pb[p][k][j] = B[k0 + k, n0 + p*NR + j], zero past nc. Packing is pure
 * data movement, so it must not cost much next to the kc*nc*mb FMAs it
 * feeds: full rows are fixed-size copies (inlined moves, not libc calls)
 * and a B read down its columns (y = x W^T: B = W^T) goes through 8 x 8
 * register transposes instead of one scattered store per element. */
static void pack_b(float *pb, const tmm_ctx *c, int n0, int nc, int k0, int kc) {
    const int NR = c->nr;
    for (int p = 0; p < nc; p += NR) {
        int cols = nc - p < NR ? nc - p : NR;
        float *dst = pb + (long)p * kc;
        if (c->csb == 1) {
            for (int k = 0; k < kc; k++) {
                const float *src = c->b + (long)(k0 + k) * c->rsb + n0 + p;
                if (cols == 16 && NR == 16) memcpy(dst + k * NR, src, 16 * sizeof(float));
                else if (cols == 32 && NR == 32) memcpy(dst + k * NR, src, 32 * sizeof(float));
                else {
                    memcpy(dst + k * NR, src, (size_t)cols * sizeof(float));
                    for (int j = cols; j < NR; j++) dst[k * NR + j] = 0.0f;
                }
            }
            continue;
        }
        int j = 0;
        if (c->rsb == 1)   /* full groups of 8 columns, 8 k at a time */
            for (; j + 8 <= cols; j += 8) {
                const float *src = c->b + (long)(n0 + p + j) * c->csb + k0;
                int k = 0;
                for (; k + 8 <= kc; k += 8) transpose8(dst + k * NR + j, NR, src + k, c->csb);
                for (; k < kc; k++)
                    for (int jj = 0; jj < 8; jj++) dst[k * NR + j + jj] = src[(long)jj * c->csb + k];
            }
        for (; j < cols; j++) {
            const float *src = c->b + (long)(n0 + p + j) * c->csb + (long)k0 * c->rsb;
            for (int k = 0; k < kc; k++) dst[k * NR + j] = src[(long)k * c->rsb];
        }
        for (j = cols; j < NR; j++)
            for (int k = 0; k < kc; k++) dst[k * NR + j] = 0.0f;
    }
}

/* pa[s][k][r] = A[m0 + s*MR + r, k0 + k] for an A read down its columns
 * (dW += dy^T x: consecutive k are a whole dy row apart, so reading A in
 * place would touch one page per k); rows past mc repeat the strip's first
 * row, as an in-place edge tile does. With rsa == 1 each (strip, k) is a
 * run of MR floats of one dy row: 8 rows at a time are copied across all
 * strips, so each source line is loaded once and each strip is written
 * sequentially. */
static void pack_a(float *pa, const tmm_ctx *c, int m0, int mc, int k0, int kc) {
    const int MR = c->mr;
    int full = c->rsa == 1 ? mc / MR * MR : 0;
    for (int kb = 0; kb < kc; kb += 8) {
        int ke = kb + 8 < kc ? kb + 8 : kc;
        for (int s = 0; s < full; s += MR) {
            float *dst = pa + (long)s * kc;
            const float *src = c->a + (long)(k0 + kb) * c->csa + m0 + s;
            for (int k = kb; k < ke; k++, src += c->csa) {
                if (MR == 6) memcpy(dst + k * 6, src, 6 * sizeof(float));
                else memcpy(dst + k * 8, src, 8 * sizeof(float));
            }
        }
    }
    for (int s = full; s < mc; s += MR) {
        int rows = mc - s < MR ? mc - s : MR;
        float *dst = pa + (long)s * kc;
        for (int k = 0; k < kc; k++) {
            const float *src = c->a + (long)(k0 + k) * c->csa + (long)(m0 + s) * c->rsa;
            for (int r = 0; r < MR; r++) dst[k * MR + r] = src[(long)(r < rows ? r : 0) * c->rsa];
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

static void ukernel(const tmm_ctx *c, int kc, const float *const ar[8], long csa,
                    const float *pb, float *dst, long ldc, int load) {
    if (c->kind == LM_TMM_AVX512) ukernel_avx512(kc, ar, csa, pb, dst, ldc, load);
    else ukernel_avx2(kc, ar, csa, pb, dst, ldc, load);
}

/* A partial tile (mr < MR or nr < NR) runs the same kernel into a local
 * full tile (missing A rows repeat row 0, B is zero padded), so each of
 * its elements sees exactly the operations it would in a full tile. */
static void tile(const tmm_ctx *c, int kc, const float *const ar[8], long csa, const float *pb,
                 float *dst, long ldc, int mr, int nr, int load) {
    if (mr == c->mr && nr == c->nr) {
        ukernel(c, kc, ar, csa, pb, dst, ldc, load);
        return;
    }
    float t[8 * 32] = {0};
    if (load)
        for (int i = 0; i < mr; i++) memcpy(t + i * c->nr, dst + i * ldc, (size_t)nr * sizeof(float));
    ukernel(c, kc, ar, csa, pb, t, c->nr, load);
    for (int i = 0; i < mr; i++) memcpy(dst + i * ldc, t + i * c->nr, (size_t)nr * sizeof(float));
}

/* A task owns rows [m0, m0 + mb) x columns [n0, n0 + nc) of C. Per KC
 * slice the B block [kc, nc] is packed once (L2) and every MR-row strip of
 * A (in place when its rows are contiguous, else packed) runs across all of
 * its NR-column panels from L1. */
static void tmm_task(void *vctx, int task, int n_tasks, int thread) {
    const tmm_ctx *c = vctx;
    const int MR = c->mr, NR = c->nr;
    int m0 = (task / c->nnb) * c->mb, n0 = (task % c->nnb) * c->nc_task;
    int mc = c->M - m0 < c->mb ? c->M - m0 : c->mb;
    int nc = c->N - n0 < c->nc_task ? c->N - n0 : c->nc_task;
    float *pb = c->scratch + (size_t)thread * (KC * NC + PA_ROWS * KC), *pa = pb + KC * NC;
    int packed_a = c->csa != 1;
    for (int k0 = 0; k0 < c->K; k0 += KC) {
        int kc = c->K - k0 < KC ? c->K - k0 : KC;
        int load = c->accumulate || k0 > 0;
        pack_b(pb, c, n0, nc, k0, kc);
        if (packed_a) pack_a(pa, c, m0, mc, k0, kc);
        for (int i = 0; i < mc; i += MR) {
            int mr = mc - i < MR ? mc - i : MR;
            const float *ar[8];
            for (int r = 0; r < 8; r++)
                ar[r] = packed_a ? pa + (long)i * kc + r
                                 : c->a + (long)(m0 + i + (r < mr ? r : 0)) * c->rsa + (long)k0 * c->csa;
            for (int j = 0; j < nc; j += NR)
                tile(c, kc, ar, packed_a ? MR : c->csa, pb + (long)j * kc,
                     c->c + (long)(m0 + i) * c->ldc + n0 + j, c->ldc, mr, nc - j < NR ? nc - j : NR, load);
        }
    }
}

int lm_tmm(lm_pool *pool, int kind, float *C, long ldc, const float *A, long rsa, long csa,
                  const float *B, long rsb, long csb, int M, int N, int K, int accumulate) {
    if (kind != LM_TMM_AVX512 && kind != LM_TMM_AVX2) return -1;
    if (M <= 0 || N <= 0) return 0;
    const int NR = kind == LM_TMM_AVX512 ? 32 : 16, MR = kind == LM_TMM_AVX512 ? 8 : 6;
    if (K <= 0) {
        if (!accumulate)
            for (int i = 0; i < M; i++) memset(C + (long)i * ldc, 0, (size_t)N * sizeof(float));
        return 0;
    }
    int threads = lm_pool_threads(pool);
    float *scratch = aligned_alloc(64, (size_t)threads * (KC * NC + PA_ROWS * KC) * sizeof(float));
    if (!scratch) return -1;
    /* Row blocks as tall as allowed and of equal height, so each packed B
     * block serves as many rows as possible (a 512-row micro-batch is one
     * block, not 240 + 240 + 32); then column blocks narrow enough to give
     * every thread several tasks (the LM head's dx: 256 rows, 576 columns). */
    int nmb = (M + MB_MAX - 1) / MB_MAX;
    int mb = (M + nmb - 1) / nmb;
    mb = (mb + MR - 1) / MR * MR;
    nmb = (M + mb - 1) / mb;
    int panels = (N + NR - 1) / NR, want = (4 * threads + nmb - 1) / nmb;
    int nnb = (N + NC - 1) / NC;
    if (nnb < want) nnb = want < panels ? want : panels;
    int nc_task = (panels + nnb - 1) / nnb * NR;
    nnb = (N + nc_task - 1) / nc_task;
    tmm_ctx c = { C, ldc, A, B, rsa, csa, rsb, csb, M, N, K, accumulate, mb, nmb, nc_task, nnb,
                  kind, MR, NR, scratch };
    lm_pool_run(pool, tmm_task, &c, nmb * nnb);
    free(scratch);
    return 0;
}

#else

int lm_tmm(lm_pool *pool, int kind, float *C, long ldc, const float *A, long rsa, long csa,
                  const float *B, long rsb, long csb, int M, int N, int K, int accumulate) {
    return -1;
}

#endif
