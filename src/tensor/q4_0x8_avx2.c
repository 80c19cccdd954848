/* AVX2 tiles for Q4_0 x8 weights (layout in q4_0x8.h). Per-function
 * target attributes, like matmul_avx2.c: the build needs no -march flag
 * and the driver hands these out only when the CPU has AVX2.
 *
 * Per block and x row: 8 maddubs of unsigned nibbles (0..15) against 4
 * bytes of x broadcast to every lane, summed in 16 bit, one madd to 32 bit
 * (lane r = W row r), then - 8*sum(x) to recentre the nibbles: the exact
 * integer dot product of each of the 8 rows, with no horizontal sum. i16
 * bound: a maddubs lane is at most 2*15*127 = 3810 and 8 of them sum to
 * 30480 < 32767 (quant_x never writes -128). */
#include "tensor/q4_0x8.h"

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>
#include <string.h>

#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define INLINE static inline __attribute__((always_inline)) AVX2

INLINE __m256i bcast4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return _mm256_set1_epi32(v);
}

/* Decode streams the weights from DRAM once; asking for them this far
 * ahead keeps more lines in flight than the hardware prefetcher does:
 * +20-25% on a 42 MB matrix vector product (Zen 3; 2-8 KiB all alike). */
#ifndef Q4X8_PF
#define Q4X8_PF 2048
#endif

INLINE void tile(int nb, const lm_block_q4_0x8 *w, const lm_q4x8_x *x, float *y, size_t ldy,
                 const int MR) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
    __m256 acc[LM_Q4X8_MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) acc[i] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const lm_block_q4_0x8 *blk = w + b;
        if (MR == 1 && Q4X8_PF) {
            _mm_prefetch((const char *)blk + Q4X8_PF, _MM_HINT_T0);
            _mm_prefetch((const char *)blk + Q4X8_PF + 64, _MM_HINT_T0);
            _mm_prefetch((const char *)blk + Q4X8_PF + 128, _MM_HINT_T0);
        }
        /* the block's 8 rows unpacked once for all x rows: lo[c] holds
         * elements 4c..4c+3 of each row, hi[c] elements 16+4c.. Then one x
         * row at a time: the 8 products per row summed in a chain keep
         * the compiler from spilling 4 rows' worth of them (measured ~10%
         * faster than interleaving the rows). */
        __m256i lo[4], hi[4];
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            const __m256i raw = _mm256_loadu_si256((const __m256i *)(blk->q + 32 * c));
            lo[c] = _mm256_and_si256(raw, m4);
            hi[c] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
        }
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)blk->d));
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) {
            const int8_t *xb = x->q + (size_t)i * x->q_stride + (size_t)b * LM_QK;
            __m256i s16 = _mm256_setzero_si256();
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++) {
                s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(lo[c], bcast4(xb + 4 * c)));
                s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(hi[c], bcast4(xb + 16 + 4 * c)));
            }
            const size_t si = (size_t)i * x->s_stride + (size_t)b;
            const __m256i isum = _mm256_sub_epi32(_mm256_madd_epi16(s16, ones),
                                                  _mm256_set1_epi32(8 * x->qsum[si]));
            const __m256 scale = _mm256_mul_ps(dw, _mm256_set1_ps(x->d[si]));
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[i]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) _mm256_storeu_ps(y + (size_t)i * ldy, acc[i]);
}

static AVX2 void row1(int nb, const lm_block_q4_0x8 *w, const lm_q4x8_x *x, float *y, size_t ldy) {
    tile(nb, w, x, y, ldy, 1);
}

static AVX2 void rowsN(int nb, const lm_block_q4_0x8 *w, const lm_q4x8_x *x, float *y, size_t ldy) {
    tile(nb, w, x, y, ldy, LM_Q4X8_MR);
}

const lm_q4x8_tiles lm_q4x8_tiles_avx2 = {row1, rowsN, NULL};

#endif
