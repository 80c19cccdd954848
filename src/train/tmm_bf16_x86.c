/* bf16 GEMM for training (--precision bf16) on AVX-512 BF16:
 * C[M, N] (+)= bf16(A)[M, K] bf16(B)[K, N], f32 accumulation.
 *
 * vdpbf16ps multiplies 16 pairs of bf16 per zmm (twice the f32 FMA's 16
 * products per instruction). The inputs are rounded to bf16 once per call:
 * A into strips of MR rows and B into panels of NR columns, both laid out
 * [k pair][row or column] as 32-bit (k, k+1) pairs, which is the operand
 * shape vdpbf16ps wants (rows and columns past the edge and an odd K's last
 * k are zero). A task then runs the register tile (8 rows x 32 columns in
 * 16 zmm accumulators) over its block of C one KCP-pair slice at a time.
 *
 * What each C element is (test_tmm checks it bit for bit): starting from 0
 * or C, for each pair p = 0, 1, ... in order, c = fma(a[2p+1], b[2p+1], c)
 * then c = fma(a[2p], b[2p], c) (the odd k first: vdpbf16ps as the Intel
 * SDM defines it, and as this Zen 4 computes it), on inputs rounded to
 * nearest even, denormal inputs and results flushed to zero. The products
 * of two bf16 are exact in f32, so the only roundings are the f32 sums.
 * Results do not depend on the blocking or the thread count. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/kernels.h"
#include "train/tmm.h"

#define MR 8
#define NR 32
#define KCP 128 /* k pairs per slice: an A strip's slice 4 KB, a B panel's 16 KB (L1) */
#define MB_MAX 512
#define NC 256 /* columns per task at most, a multiple of NR */

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

/* f to bf16 as vcvtne2ps2bf16 rounds it: nearest even, denormals to a
 * signed zero, NaN kept a quiet NaN. */
static inline uint32_t bf16_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7f800000u) == 0) return (u >> 16) & 0x8000u;
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

static inline uint32_t pair(float lo, float hi) { return bf16_bits(lo) | bf16_bits(hi) << 16; }

typedef struct bf_ctx {
    float *c;
    long ldc;
    const float *a, *b;
    long rsa, csa, rsb, csb;
    int M, N, K, KP, accumulate;
    uint32_t *pa; /* [ceil(M/MR)][KP][MR] */
    uint32_t *pb; /* [ceil(N/NR)][KP][NR] */
    int mb, nnb, nc_task;
} bf_ctx;

/* dst[p * w + r] = (src(r, 2p), src(r, 2p+1)) for r < rows, p < KP, zero
 * for rows..w-1 and past K; src(r, k) = src[r * rs + k * ks]. The loops run
 * along whichever of r and k is contiguous in memory, 16 floats per
 * conversion (vcvtneps2bf16 rounds as bf16_bits does), so packing streams
 * its source: one pass per row of W^T or x, or per pair of rows of dy^T
 * or W. */
/* 8 rows x 16 pairs (x[i]: row i's pairs p0..p0+15) to dst[p * w + i]: an
 * 8 x 16 dword transpose in registers, a 128-bit store per 4 rows of a pair
 * (instead of 128 scalar stores). */
TGT static void store_8x16(uint32_t *dst, int w, const __m512i x[8]) {
    __m512i t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm512_unpacklo_epi32(x[i], x[i + 1]);       /* per lane: r_i[0] r_i+1[0] r_i[1] r_i+1[1] */
        t[i + 1] = _mm512_unpackhi_epi32(x[i], x[i + 1]);   /* r_i[2] r_i+1[2] r_i[3] r_i+1[3] */
    }
    for (int h = 0; h < 8; h += 4) {   /* rows h..h+3: u[h/4*4 + c] holds pair 4l + c in lane l */
        u[h + 0] = _mm512_unpacklo_epi64(t[h], t[h + 2]);
        u[h + 1] = _mm512_unpackhi_epi64(t[h], t[h + 2]);
        u[h + 2] = _mm512_unpacklo_epi64(t[h + 1], t[h + 3]);
        u[h + 3] = _mm512_unpackhi_epi64(t[h + 1], t[h + 3]);
    }
#define ST(c, l) \
    _mm_storeu_si128((__m128i *)(dst + (4 * l + c) * w), _mm512_extracti32x4_epi32(u[c], l)); \
    _mm_storeu_si128((__m128i *)(dst + (4 * l + c) * w + 4), _mm512_extracti32x4_epi32(u[4 + c], l));
#define ST4(c) ST(c, 0) ST(c, 1) ST(c, 2) ST(c, 3)
    ST4(0) ST4(1) ST4(2) ST4(3)
#undef ST4
#undef ST
}

TGT static void pack(uint32_t *dst, int w, const float *src, long rs, long ks, int rows, int K, int KP) {
    if (ks == 1) {
        int r0 = 0;
        for (; r0 + 8 <= rows; r0 += 8) {   /* 8 rows, 16 whole pairs at a time */
            int p = 0;
            for (; 2 * p + 32 <= K; p += 16) {
                __m512i x[8];
                for (int i = 0; i < 8; i++) {
                    const float *q = src + (long)(r0 + i) * rs + 2 * p;
                    x[i] = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(q + 16), _mm512_loadu_ps(q));
                }
                store_8x16(dst + (long)p * w + r0, w, x);
            }
            for (int r = r0; r < r0 + 8; r++) {
                const float *row = src + (long)r * rs;
                int q = p;
                for (; 2 * q + 1 < K; q++) dst[q * w + r] = pair(row[2 * q], row[2 * q + 1]);
                if (q < KP) dst[q * w + r] = pair(row[2 * q], 0.0f);
            }
        }
        for (int r = r0; r < rows; r++) {
            const float *row = src + (long)r * rs;
            int p = 0;
            for (; 2 * p + 32 <= K; p += 16) {   /* 16 whole pairs */
                uint32_t t[16];
                __m512 lo = _mm512_loadu_ps(row + 2 * p), hi = _mm512_loadu_ps(row + 2 * p + 16);
                _mm512_storeu_si512(t, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
                for (int i = 0; i < 16; i++) dst[(p + i) * w + r] = t[i];
            }
            for (; 2 * p + 1 < K; p++) dst[p * w + r] = pair(row[2 * p], row[2 * p + 1]);
            if (p < KP) dst[p * w + r] = pair(row[2 * p], 0.0f);
        }
    } else {
        for (int p = 0; p < KP; p++) {
            const float *k0 = src + 2L * p * ks, *k1 = k0 + ks;
            int two = 2 * p + 1 < K, r = 0;
            if (rs == 1)
                for (; r + 16 <= rows; r += 16) {
                    __m512i e = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(k0 + r)));
                    __m512i o = two ? _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(k1 + r)))
                                    : _mm512_setzero_si512();
                    _mm512_storeu_si512(dst + p * w + r, _mm512_or_si512(e, _mm512_slli_epi32(o, 16)));
                }
            if (rs == 1)   /* an 8-row strip of dy^T (dW's A) */
                for (; r + 8 <= rows; r += 8) {
                    __m256i e = _mm256_cvtepu16_epi32((__m128i)_mm256_cvtneps_pbh(_mm256_loadu_ps(k0 + r)));
                    __m256i o = two ? _mm256_cvtepu16_epi32((__m128i)_mm256_cvtneps_pbh(_mm256_loadu_ps(k1 + r)))
                                    : _mm256_setzero_si256();
                    _mm256_storeu_si256((__m256i *)(dst + p * w + r), _mm256_or_si256(e, _mm256_slli_epi32(o, 16)));
                }
            for (; r < rows; r++) dst[p * w + r] = pair(k0[(long)r * rs], two ? k1[(long)r * rs] : 0.0f);
        }
    }
    for (int p = 0; p < KP; p++)
        for (int r = rows; r < w; r++) dst[p * w + r] = 0;
}

/* Strips of A: pa[s][p][r] = (A[i, 2p], A[i, 2p+1]), i = s*MR + r. */
static void pack_a_task(void *vctx, int task, int n_tasks, int thread) {
    const bf_ctx *c = vctx;
    int strips = (c->M + MR - 1) / MR;
    for (int s = (int)((int64_t)strips * task / n_tasks); s < (int)((int64_t)strips * (task + 1) / n_tasks); s++) {
        int rows = c->M - s * MR < MR ? c->M - s * MR : MR;
        pack(c->pa + (size_t)s * c->KP * MR, MR, c->a + (long)s * MR * c->rsa, c->rsa, c->csa, rows, c->K, c->KP);
    }
}

/* Panels of B: pb[q][p][j] = (B[2p, n], B[2p+1, n]), n = q*NR + j. */
static void pack_b_task(void *vctx, int task, int n_tasks, int thread) {
    const bf_ctx *c = vctx;
    int panels = (c->N + NR - 1) / NR;
    for (int q = (int)((int64_t)panels * task / n_tasks); q < (int)((int64_t)panels * (task + 1) / n_tasks); q++) {
        int cols = c->N - q * NR < NR ? c->N - q * NR : NR;
        pack(c->pb + (size_t)q * c->KP * NR, NR, c->b + (long)q * NR * c->csb, c->csb, c->rsb, cols, c->K, c->KP);
    }
}

/* C[MR, NR] (+)= the tile's kp pairs; load: start from C instead of 0. */
TGT static void ukernel(int kp, const uint32_t *restrict pa, const uint32_t *restrict pb, float *c,
                        long ldc, int load) {
    __m512 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71;
    c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = _mm512_setzero_ps();
    c40 = c41 = c50 = c51 = c60 = c61 = c70 = c71 = _mm512_setzero_ps();
#define LD(i, x0, x1) x0 = _mm512_loadu_ps(c + i * ldc); x1 = _mm512_loadu_ps(c + i * ldc + 16);
    if (load) {
        LD(0, c00, c01) LD(1, c10, c11) LD(2, c20, c21) LD(3, c30, c31)
        LD(4, c40, c41) LD(5, c50, c51) LD(6, c60, c61) LD(7, c70, c71)
    }
#undef LD
    for (int p = 0; p < kp; p++) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512(pb), b1 = (__m512bh)_mm512_loadu_si512(pb + 16);
        __m512bh a;
#define DP(i, x0, x1) a = (__m512bh)_mm512_set1_epi32((int)pa[i]); \
        x0 = _mm512_dpbf16_ps(x0, a, b0); x1 = _mm512_dpbf16_ps(x1, a, b1);
        DP(0, c00, c01) DP(1, c10, c11) DP(2, c20, c21) DP(3, c30, c31)
        DP(4, c40, c41) DP(5, c50, c51) DP(6, c60, c61) DP(7, c70, c71)
#undef DP
        pa += MR;
        pb += NR;
    }
#define ST(i, x0, x1) _mm512_storeu_ps(c + i * ldc, x0); _mm512_storeu_ps(c + i * ldc + 16, x1);
    ST(0, c00, c01) ST(1, c10, c11) ST(2, c20, c21) ST(3, c30, c31)
    ST(4, c40, c41) ST(5, c50, c51) ST(6, c60, c61) ST(7, c70, c71)
#undef ST
}

/* A partial tile runs the full kernel into a local tile (zero rows and
 * columns of the packs give zeros there, which are dropped). */
static void tile(int kp, const uint32_t *pa, const uint32_t *pb, float *dst, long ldc, int mr, int nr,
                 int load) {
    if (mr == MR && nr == NR) {
        ukernel(kp, pa, pb, dst, ldc, load);
        return;
    }
    float t[MR * NR] = {0};
    if (load)
        for (int i = 0; i < mr; i++) memcpy(t + i * NR, dst + i * ldc, (size_t)nr * sizeof(float));
    ukernel(kp, pa, pb, t, NR, load);
    for (int i = 0; i < mr; i++) memcpy(dst + i * ldc, t + i * NR, (size_t)nr * sizeof(float));
}

/* Rows [m0, m0 + mb) x columns [n0, n0 + nc) of C: per slice of KCP pairs,
 * every strip across every panel (the block's B slice stays in L2). */
static void mm_task(void *vctx, int task, int n_tasks, int thread) {
    const bf_ctx *c = vctx;
    int m0 = (task / c->nnb) * c->mb, n0 = (task % c->nnb) * c->nc_task;
    int mc = c->M - m0 < c->mb ? c->M - m0 : c->mb;
    int nc = c->N - n0 < c->nc_task ? c->N - n0 : c->nc_task;
    for (int p0 = 0; p0 < c->KP; p0 += KCP) {
        int kp = c->KP - p0 < KCP ? c->KP - p0 : KCP;
        int load = c->accumulate || p0 > 0;
        for (int i = 0; i < mc; i += MR) {
            const uint32_t *pa = c->pa + ((size_t)(m0 + i) / MR * c->KP + p0) * MR;
            for (int j = 0; j < nc; j += NR) {
                const uint32_t *pb = c->pb + ((size_t)(n0 + j) / NR * c->KP + p0) * NR;
                tile(kp, pa, pb, c->c + (long)(m0 + i) * c->ldc + n0 + j, c->ldc,
                     mc - i < MR ? mc - i : MR, nc - j < NR ? nc - j : NR, load);
            }
        }
    }
}

int lm_tmm_bf16(lm_pool *pool, float *C, long ldc, const float *A, long rsa, long csa, const float *B,
                long rsb, long csb, int M, int N, int K, int accumulate) {
    if (!lm_kernels_by_name("avx512")) return -1;   /* CPUID and XCR0: BF16, zmm state */
    if (M <= 0 || N <= 0) return 0;
    if (K <= 0) {
        if (!accumulate)
            for (int i = 0; i < M; i++) memset(C + (long)i * ldc, 0, (size_t)N * sizeof(float));
        return 0;
    }
    int KP = (K + 1) / 2, strips = (M + MR - 1) / MR, panels = (N + NR - 1) / NR;
    uint32_t *pa = aligned_alloc(64, ((size_t)strips * KP * MR * sizeof(uint32_t) + 63) / 64 * 64);
    uint32_t *pb = aligned_alloc(64, ((size_t)panels * KP * NR * sizeof(uint32_t) + 63) / 64 * 64);
    if (!pa || !pb) {
        free(pa);
        free(pb);
        return -1;
    }
    int threads = lm_pool_threads(pool);
    /* Row blocks of equal height (whole strips), then column blocks narrow
     * enough to give every thread several tasks, as the f32 kernel does. */
    int nmb = (M + MB_MAX - 1) / MB_MAX;
    int mb = (M + nmb - 1) / nmb;
    mb = (mb + MR - 1) / MR * MR;
    nmb = (M + mb - 1) / mb;
    int want = (4 * threads + nmb - 1) / nmb, nnb = (N + NC - 1) / NC;
    if (nnb < want) nnb = want < panels ? want : panels;
    int nc_task = (panels + nnb - 1) / nnb * NR;
    nnb = (N + nc_task - 1) / nc_task;
    bf_ctx c = {C, ldc, A, B, rsa, csa, rsb, csb, M, N, K, KP, accumulate, pa, pb, mb, nnb, nc_task};
    lm_pool_run(pool, pack_a_task, &c, strips < 4 * threads ? strips : 4 * threads);
    lm_pool_run(pool, pack_b_task, &c, panels < 4 * threads ? panels : 4 * threads);
    lm_pool_run(pool, mm_task, &c, nmb * nnb);
    free(pa);
    free(pb);
    return 0;
}

#else

int lm_tmm_bf16(lm_pool *pool, float *C, long ldc, const float *A, long rsa, long csa, const float *B,
                long rsb, long csb, int M, int N, int K, int accumulate) {
    return -1;
}

#endif
