/* AVX-512 kernel set (F/BW/DQ/VL + VNNI + BF16, on top of AVX2/FMA/F16C:
 * Zen 4 and later, Intel since Ice Lake / Sapphire Rapids). Compiled with
 * per-function target attributes like matmul_avx2.c (no -march flag, no
 * per-file flags that could leak AVX-512 into code run elsewhere);
 * matmul.c hands it out only when CPUID and XCR0 say the CPU and the OS
 * run it.
 *
 * Numbers: every kernel here gives the avx2 set's results bit for bit. The
 * quantized dot products are where the time goes, and there llama.cpp's
 * AVX-512 build reduces exactly as its AVX2 build does: ggml's
 * vec_dot_q8_0_q8_0 / q4_0_q8_0 / q4_1_q8_1 and tinyBLAS's Q0 tiles have no
 * AVX-512 reduction of their own (they only swap maddubs+madd for vpdpbusd,
 * the same exact integers), and its repacked Q4_0 GEMM/GEMV keep one fma
 * chain per output lane over the blocks. So these kernels use VNNI and
 * 512-bit registers for the integer work while each output keeps the avx2
 * set's float operations in their order: two W rows (or, for repacked
 * Q4_0, two halves of one block's integer sum) share a zmm, each in its own
 * lanes, and every lane runs the fma chain its avx2 counterpart runs.
 *
 * Float weights (F32/F16/BF16), softmax, SiLU and attention are the avx2
 * set's functions. llama.cpp's AVX-512 build does reduce those differently
 * (16-lane ggml vec_dot and tinyBLAS, a scalef-based expf, BF16 through
 * vdpbf16ps), so against such a build the logits are held to parity.py's
 * tolerance policy, and bit-exact against its AVX2 build, like the avx2 set. */
#include "tensor/kernels.h"
#include "tensor/ops.h"
#include "tensor/q4_0x8.h"

#ifdef LM_HAVE_X86_KERNELS

#include <immintrin.h>
#include <string.h>

#define AVX512 \
    __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx512bf16,avx2,fma,f16c")))
#define INLINE static inline __attribute__((always_inline)) AVX512

/* The avx2 set's hsum_ps: (lanes 0-3 + lanes 4-7), then movehl, movehdup. */
INLINE float hsum4x2(__m128 lo, __m128 hi) {
    __m128 s = _mm_add_ps(lo, hi);
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* A zmm holds two W rows' 8-lane accumulators in one of two layouts:
 *  HALVES (Q8_0): row a in lanes 0-7, row b in lanes 8-15;
 *  SPLIT (Q4): 128-bit chunks [a 0-3, b 0-3, a 4-7, b 4-7], the order in
 *  which two rows' nibbles come out of one load without a shuffle.
 * Row r (0: a, 1: b) summed as the avx2 set sums its 8 lanes. */
INLINE float hsum_row(__m512 v, int r, const int split) {
    /* immediates spelled out: clang wants constants even after inlining */
    if (split)
        return r ? hsum4x2(_mm512_extractf32x4_ps(v, 1), _mm512_extractf32x4_ps(v, 3))
                 : hsum4x2(_mm512_extractf32x4_ps(v, 0), _mm512_extractf32x4_ps(v, 2));
    const __m256 h = r ? _mm512_extractf32x8_ps(v, 1) : _mm512_castps512_ps256(v);
    return hsum4x2(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

/* [a x8 | b x8] (HALVES) or [a x4, b x4, a x4, b x4] (SPLIT) */
INLINE __m512 pair_ps(float a, float b, const int split) {
    if (split) return _mm512_broadcast_f32x8(_mm256_setr_m128(_mm_set1_ps(a), _mm_set1_ps(b)));
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_set1_ps(a)), _mm256_set1_ps(b), 1);
}

enum { QK_Q8_0, QK_Q4_0, QK_Q4_1 };

/* ---- integer block dot products --------------------------------------
 *
 * Each 32-bit lane gets the exact sum of 4 adjacent byte products, the
 * lanes the avx2 set's maddubs+madd give (no i16 saturation there: |w| <=
 * 128, |x| <= 127). vpdpbusd wants one unsigned operand:
 *  Q8_0: x + 128 (x ^ 0x80) against w, minus 128 * (w's 4-byte sums);
 *  Q4_0: the raw nibbles 0..15 against x, minus 8 * (x's 4-byte sums);
 *  Q4_1: the raw nibbles against x. */

/* x block for the HALVES layout (Q8_0): [x | x], made unsigned */
INLINE __m512i xq_halves(const int8_t *xq) {
    return _mm512_xor_si512(_mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)xq)),
                            _mm512_set1_epi8((char)0x80));
}

/* x block for the SPLIT layout (Q4): [x 0-15, x 0-15, x 16-31, x 16-31] */
INLINE __m512i xq_split(const int8_t *xq) {
    const __m512i b = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)xq));
    return _mm512_shuffle_i64x2(b, b, _MM_SHUFFLE(1, 1, 0, 0));
}

/* Block b of W rows a and b as bytes in the kind's layout: Q8_0 signed
 * [a | b]; Q4 raw nibbles, SPLIT. */
INLINE __m512i w_pair(const void *ra, const void *rb, int b, const int kind) {
    if (kind == QK_Q8_0) {
        const lm_block_q8_0 *A = (const lm_block_q8_0 *)ra + b, *B = (const lm_block_q8_0 *)rb + b;
        return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)A->q)),
                                  _mm256_loadu_si256((const __m256i *)B->q), 1);
    }
    const uint8_t *qa, *qb;
    if (kind == QK_Q4_0) {
        qa = ((const lm_block_q4_0 *)ra + b)->q;
        qb = ((const lm_block_q4_0 *)rb + b)->q;
    } else {
        qa = ((const lm_block_q4_1 *)ra + b)->q;
        qb = ((const lm_block_q4_1 *)rb + b)->q;
    }
    const __m256i t = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)qa)),
                                              _mm_loadu_si128((const __m128i *)qb), 1);
    const __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(t), _mm256_srli_epi16(t, 4), 1);
    return _mm512_and_si512(z, _mm512_set1_epi8(0x0f));
}

/* The part of a pair's lanes that depends on W alone: Q8_0's 128*sum(w)
 * (zero for Q4). */
INLINE __m512i w_corr(__m512i wz, const int kind) {
    if (kind != QK_Q8_0) return _mm512_setzero_si512();
    return _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8((char)0x80), wz);
}

/* ... and on x alone: Q4_0's 8*sum(x) (zero otherwise). */
INLINE __m512i x_corr(__m512i xz, const int kind) {
    if (kind != QK_Q4_0) return _mm512_setzero_si512();
    return _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(8), xz);
}

/* The exact lanes of a (W pair, x) block. */
INLINE __m512i bdot(__m512i wz, __m512i wc, __m512i xz, __m512i xc, const int kind) {
    if (kind == QK_Q8_0) return _mm512_sub_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), xz, wz), wc);
    const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wz, xz);
    return kind == QK_Q4_0 ? _mm512_sub_epi32(p, xc) : p;
}

INLINE size_t block_bytes(const int kind) {
    return kind == QK_Q8_0 ? sizeof(lm_block_q8_0)
         : kind == QK_Q4_0 ? sizeof(lm_block_q4_0) : sizeof(lm_block_q4_1);
}

/* The f16 field at byte offset off of block b of 8 W rows, as 8 floats. */
INLINE __m256 load_half8(const void *const *w, int b, size_t bb, size_t off) {
    uint16_t h[8];
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++) memcpy(&h[j], (const char *)w[j] + (size_t)b * bb + off, 2);
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
}

INLINE float f16_to_f32(uint16_t h) { return _cvtsh_ss(h); }

/* Decode prefetch distance: matmul_avx2.c's PF_DIST, same reasoning. */
#define PF_DIST 8192

/* Decode: one x row against 8 W rows (4 pairs): the avx2 set's qdec with
 * each pair in one zmm. sc[j] = d_w[j]*d_x as there; Q4_1's m*s chain one
 * lane per row. */
INLINE void qdec(int k, const void *const *w, const lm_xtile *x, float *out, const int kind) {
    const int split = kind != QK_Q8_0;
    __m512 acc[4];
#pragma GCC unroll 4
    for (int p = 0; p < 4; p++) acc[p] = _mm512_setzero_ps();
    __m256 sm = _mm256_setzero_ps();
    const size_t bb = block_bytes(kind);
    /* lanes of sc (8 rows) into a pair's layout */
    __m512i idx[4];
#pragma GCC unroll 4
    for (int p = 0; p < 4; p++)
        idx[p] = split ? _mm512_setr_epi32(2 * p, 2 * p, 2 * p, 2 * p, 2 * p + 1, 2 * p + 1, 2 * p + 1,
                                           2 * p + 1, 2 * p, 2 * p, 2 * p, 2 * p, 2 * p + 1, 2 * p + 1,
                                           2 * p + 1, 2 * p + 1)
                       : _mm512_inserti64x4(_mm512_set1_epi32(2 * p), _mm256_set1_epi32(2 * p + 1), 1);
    for (int b = 0; b < k / LM_QK; b++) {
        const int8_t *xb = x->q + b * LM_QK;
        const __m512i xz = split ? xq_split(xb) : xq_halves(xb);
        const __m512i xc = x_corr(xz, kind);
        const __m512 sc = _mm512_castps256_ps512(
            _mm256_mul_ps(load_half8(w, b, bb, 0), _mm256_set1_ps(x->d[b * LM_XQ_GROUP])));
        if (kind == QK_Q4_1)
            sm = _mm256_fmadd_ps(load_half8(w, b, bb, 2), _mm256_set1_ps(x->s[b * LM_XQ_GROUP]), sm);
#pragma GCC unroll 4
        for (int p = 0; p < 4; p++) {
            _mm_prefetch((const char *)w[2 * p] + (size_t)b * bb + PF_DIST, _MM_HINT_T0);
            _mm_prefetch((const char *)w[2 * p + 1] + (size_t)b * bb + PF_DIST, _MM_HINT_T0);
            const __m512i wz = w_pair(w[2 * p], w[2 * p + 1], b, kind);
            const __m512i lanes = bdot(wz, w_corr(wz, kind), xz, xc, kind);
            acc[p] = _mm512_fmadd_ps(_mm512_permutexvar_ps(idx[p], sc), _mm512_cvtepi32_ps(lanes), acc[p]);
        }
    }
    float m[8];
    _mm256_storeu_ps(m, sm);
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++) {
        const float t = hsum_row(acc[j / 2], j % 2, split);
        out[j] = kind == QK_Q4_1 ? t + m[j] : t;
    }
}

/* Batch: LM_XQ_GROUP x rows against NR W rows (NR/2 pairs): the avx2 set's
 * qtile, sc[j][i] = d_w[j]*d_x[i] and sm[i][j] = fma(m_w[j], s_x[i], sm)
 * in the same order. */
INLINE void qtile(int k, const void *const *w, const lm_xtile *x, float *out, const int kind,
                  const int NR) {
    enum { MR = LM_XQ_GROUP };
    const int split = kind != QK_Q8_0;
    __m512 acc[MR][LM_TILE_MAX_NR / 2];
    __m256 sm[MR];
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++) {
        sm[i] = _mm256_setzero_ps();
#pragma GCC unroll 4
        for (int p = 0; p < NR / 2; p++) acc[i][p] = _mm512_setzero_ps();
    }
    const size_t bb = block_bytes(kind);
    for (int b = 0; b < k / LM_QK; b++) {
        __m512i wz[LM_TILE_MAX_NR / 2], wc[LM_TILE_MAX_NR / 2];
        __m512 dw[LM_TILE_MAX_NR / 2];
        float mw[8] = {0};
#pragma GCC unroll 4
        for (int p = 0; p < NR / 2; p++) {
            wz[p] = w_pair(w[2 * p], w[2 * p + 1], b, kind);
            wc[p] = w_corr(wz[p], kind);
            uint16_t da, db;
            memcpy(&da, (const char *)w[2 * p] + (size_t)b * bb, 2);
            memcpy(&db, (const char *)w[2 * p + 1] + (size_t)b * bb, 2);
            dw[p] = pair_ps(f16_to_f32(da), f16_to_f32(db), split);
            if (kind == QK_Q4_1) {
                uint16_t ma, mb;
                memcpy(&ma, (const char *)w[2 * p] + (size_t)b * bb + 2, 2);
                memcpy(&mb, (const char *)w[2 * p + 1] + (size_t)b * bb + 2, 2);
                mw[2 * p] = f16_to_f32(ma);
                mw[2 * p + 1] = f16_to_f32(mb);
            }
        }
        const __m256 mwv = _mm256_loadu_ps(mw);
#pragma GCC unroll 4
        for (int i = 0; i < MR; i++) {
            const int8_t *xb = x->q + (size_t)i * k + b * LM_QK;
            const __m512i xz = split ? xq_split(xb) : xq_halves(xb);
            const __m512i xc = x_corr(xz, kind);
            const __m512 dx = _mm512_set1_ps(x->d[b * LM_XQ_GROUP + i]);
#pragma GCC unroll 4
            for (int p = 0; p < NR / 2; p++) {
                const __m512i lanes = bdot(wz[p], wc[p], xz, xc, kind);
                acc[i][p] = _mm512_fmadd_ps(_mm512_mul_ps(dw[p], dx), _mm512_cvtepi32_ps(lanes), acc[i][p]);
            }
            if (kind == QK_Q4_1)
                sm[i] = _mm256_fmadd_ps(mwv, _mm256_set1_ps(x->s[b * LM_XQ_GROUP + i]), sm[i]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++) {
        float m[8];
        _mm256_storeu_ps(m, sm[i]);
#pragma GCC unroll 8
        for (int j = 0; j < NR; j++) {
            const float t = hsum_row(acc[i][j / 2], j % 2, split);
            out[i * NR + j] = kind == QK_Q4_1 ? t + m[j] : t;
        }
    }
}

#define QINSTANCE(NAME, BODY, ...)                                                         \
    static AVX512 void NAME(int k, const void *const *w, const lm_xtile *x, float *out) { \
        BODY(k, w, x, out, __VA_ARGS__);                                                   \
    }
/* W rows per batch tile (4 x rows each): 4 pairs keep 16 accumulators in
 * the 32 zmm registers. */
#define Q_NR 8
QINSTANCE(dec_q8_0, qdec, QK_Q8_0)
QINSTANCE(dec_q4_0, qdec, QK_Q4_0)
QINSTANCE(dec_q4_1, qdec, QK_Q4_1)
QINSTANCE(gemm_q8_0, qtile, QK_Q8_0, Q_NR)
QINSTANCE(gemm_q4_0, qtile, QK_Q4_0, Q_NR)
QINSTANCE(gemm_q4_1, qtile, QK_Q4_1, Q_NR)

/* ---- repacked Q4_0 (q4_0x8.h) ---------------------------------------
 *
 * The avx2 tile sums each row's block in 16-bit maddubs lanes and one madd;
 * here vpdpbusd sums the 4 byte products of each (row, 4 elements) straight
 * into 32 bits, the block's 128 bytes as two zmm (chunks c = 0,1 and 2,3 in
 * their 256-bit halves), and the halves are added at the end: the same
 * exact integer per row, then the avx2 tile's float steps. */
#define Q4X8_PF 2048

INLINE void q4x8_tile(int nb, const lm_block_q4_0x8 *w, const lm_q4x8_x *x, float *y, size_t ldy,
                      const int MR) {
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    /* x's 4-byte groups g for each 256-bit half: lo nibbles of chunk c hold
     * elements 4c.., hi nibbles 16+4c.. */
    const __m512i ia = _mm512_inserti64x4(_mm512_set1_epi32(0), _mm256_set1_epi32(1), 1);
    const __m512i ib = _mm512_inserti64x4(_mm512_set1_epi32(4), _mm256_set1_epi32(5), 1);
    const __m512i ic = _mm512_inserti64x4(_mm512_set1_epi32(2), _mm256_set1_epi32(3), 1);
    const __m512i id = _mm512_inserti64x4(_mm512_set1_epi32(6), _mm256_set1_epi32(7), 1);
    __m256 acc[LM_Q4X8_MR];
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++) acc[i] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const lm_block_q4_0x8 *blk = w + b;
        if (MR == 1) {
            _mm_prefetch((const char *)blk + Q4X8_PF, _MM_HINT_T0);
            _mm_prefetch((const char *)blk + Q4X8_PF + 64, _MM_HINT_T0);
            _mm_prefetch((const char *)blk + Q4X8_PF + 128, _MM_HINT_T0);
        }
        const __m512i r0 = _mm512_loadu_si512((const void *)blk->q);
        const __m512i r1 = _mm512_loadu_si512((const void *)(blk->q + 64));
        const __m512i lo0 = _mm512_and_si512(r0, m4), hi0 = _mm512_and_si512(_mm512_srli_epi16(r0, 4), m4);
        const __m512i lo1 = _mm512_and_si512(r1, m4), hi1 = _mm512_and_si512(_mm512_srli_epi16(r1, 4), m4);
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)blk->d));
#pragma GCC unroll 4
        for (int i = 0; i < MR; i++) {
            const int8_t *xb = x->q + (size_t)i * x->q_stride + (size_t)b * LM_QK;
            const __m512i xv = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)xb));
            __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo0, _mm512_permutexvar_epi32(ia, xv));
            s = _mm512_dpbusd_epi32(s, hi0, _mm512_permutexvar_epi32(ib, xv));
            s = _mm512_dpbusd_epi32(s, lo1, _mm512_permutexvar_epi32(ic, xv));
            s = _mm512_dpbusd_epi32(s, hi1, _mm512_permutexvar_epi32(id, xv));
            const size_t si = (size_t)i * x->s_stride + (size_t)b;
            const __m256i isum = _mm256_sub_epi32(
                _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64(s, 1)),
                _mm256_set1_epi32(8 * x->qsum[si]));
            const __m256 scale = _mm256_mul_ps(dw, _mm256_set1_ps(x->d[si]));
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[i]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++) _mm256_storeu_ps(y + (size_t)i * ldy, acc[i]);
}

static AVX512 void q4x8_row1(int nb, const lm_block_q4_0x8 *w, const lm_q4x8_x *x, float *y,
                             size_t ldy) {
    q4x8_tile(nb, w, x, y, ldy, 1);
}

static AVX512 void q4x8_rowsN(int nb, const lm_block_q4_0x8 *w, const lm_q4x8_x *x, float *y,
                              size_t ldy) {
    q4x8_tile(nb, w, x, y, ldy, LM_Q4X8_MR);
}

const lm_q4x8_tiles lm_q4x8_tiles_avx512 = {q4x8_row1, q4x8_rowsN};

/* ---- the set ---------------------------------------------------------- */

const lm_kernels lm_kernels_avx512 = {
    .name = "avx512",
    .quant_x = lm_avx2_quant_x, /* bit-identical output in every set (kernels.h) */
    .f16_x = 1,
    .bf16_x = 1,
    .softmax = lm_avx2_softmax,
    .swiglu = lm_avx2_swiglu,
    .attn_heads = lm_avx2_attn_heads,
    .dec = {
        [LM_WT_F32] = {lm_avx2_dec_f32, 1, LM_AVX2_DEC_NR},
        [LM_WT_F16] = {lm_avx2_dec_f16, 1, LM_AVX2_DEC_NR},
        [LM_WT_BF16] = {lm_avx2_dec_bf16, 1, LM_AVX2_DEC_NR},
        [LM_WT_Q8_0] = {dec_q8_0, 1, 8},
        [LM_WT_Q4_0] = {dec_q4_0, 1, 8},
        [LM_WT_Q4_1] = {dec_q4_1, 1, 8},
    },
    .gemm = {
        [LM_WT_F32] = {lm_avx2_gemm_f32, LM_AVX2_F_MR, LM_AVX2_F_NR},
        [LM_WT_F16] = {lm_avx2_gemm_f16, LM_AVX2_F_MR, LM_AVX2_F_NR},
        [LM_WT_BF16] = {lm_avx2_gemm_bf16, LM_AVX2_F_MR, LM_AVX2_F_NR},
        [LM_WT_Q8_0] = {gemm_q8_0, LM_XQ_GROUP, Q_NR},
        [LM_WT_Q4_0] = {gemm_q4_0, LM_XQ_GROUP, Q_NR},
        [LM_WT_Q4_1] = {gemm_q4_1, LM_XQ_GROUP, Q_NR},
    },
};

#endif
