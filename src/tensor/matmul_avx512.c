/* AVX-512 kernel set (F/BW/DQ/VL + VNNI + BF16, on top of AVX2/FMA/F16C:
 * Zen 4 and later, Intel since Ice Lake / Sapphire Rapids). Compiled with
 * per-function target attributes like matmul_avx2.c (no -march flag, no
 * per-file flags that could leak AVX-512 into code run elsewhere);
 * matmul.c hands it out only when CPUID and XCR0 say the CPU and the OS
 * run it.
 *
 * Numbers: those of llama.cpp built for the same instructions (GGML_AVX512,
 * _VNNI, _BF16; scripts/setup_llama_avx512_venv.sh), bit for bit, as the
 * avx2 set's are those of its AVX2 build.
 *
 * Quantized weights: llama.cpp's AVX-512 build reduces them exactly as its
 * AVX2 build does (ggml's vec_dot_q8_0_q8_0 / q4_0_q8_0 / q4_1_q8_1 and
 * tinyBLAS's Q0 tiles only swap maddubs+madd for vpdpbusd, the same exact
 * integers; its repacked Q4_0 GEMM/GEMV keep one fma chain per output lane
 * over the blocks). So these kernels use VNNI and 512-bit registers for the
 * integer work while every output keeps the avx2 set's float operations in
 * their order: two W rows share a zmm, each in its own lanes (Q8_0's batch
 * tile interleaves them group by group), or, for repacked Q4_0, a zmm holds
 * 16 rows' block sums; every lane runs the fma chain its avx2 counterpart
 * runs. Same y as the avx2 set, bit for bit (tests/test_ops.c,
 * tests/test_q4_0x8.c).
 *
 * Float weights, softmax, SiLU and attention: llama.cpp's AVX-512 build has
 * its own orders there (16-lane vec_dot and tinyBLAS, a scalef-based expf,
 * BF16 through vdpbf16ps), and the functions in "float arithmetic" below
 * follow them; they differ from the avx2 set's in the last bits. */
#include "tensor/kernels.h"
#include "tensor/ops.h"
#include "tensor/q4_0x8.h"

#ifdef LM_HAVE_X86_KERNELS

#include <immintrin.h>
#include <math.h>
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
 * 128, |x| <= 127). vpdpbusd wants one unsigned operand, and AVX-512 has no
 * vpsignb for the avx2 set's sign trick, so W is made unsigned and x's
 * part is subtracted:
 *  Q8_0: w + 128 (w ^ 0x80) against x, minus 128 * (x's 4-byte sums);
 *  Q4_0: the raw nibbles 0..15 against x, minus 8 * (x's 4-byte sums);
 *  Q4_1: the raw nibbles against x.
 * The x part is computed once per x block, negated, and is vpdpbusd's
 * starting value: one instruction per (W pair, x row). */

/* x block for the HALVES layout (Q8_0): [x | x] */
INLINE __m512i xq_halves(const int8_t *xq) {
    return _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)xq));
}

/* x block for the SPLIT layout (Q4): [x 0-15, x 0-15, x 16-31, x 16-31] */
INLINE __m512i xq_split(const int8_t *xq) {
    const __m512i b = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)xq));
    return _mm512_shuffle_i64x2(b, b, _MM_SHUFFLE(1, 1, 0, 0));
}

/* Block b of W rows a and b as unsigned bytes in the kind's layout: Q8_0
 * w + 128, [a | b]; Q4 raw nibbles, SPLIT. */
INLINE __m512i w_pair(const void *ra, const void *rb, int b, const int kind) {
    if (kind == QK_Q8_0) {
        const lm_block_q8_0 *A = (const lm_block_q8_0 *)ra + b, *B = (const lm_block_q8_0 *)rb + b;
        const __m512i w = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)A->q)),
                                             _mm256_loadu_si256((const __m256i *)B->q), 1);
        return _mm512_xor_si512(w, _mm512_set1_epi8((char)0x80));
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

/* The x part of a block's lanes, negated: -128 (Q8_0) or -8 (Q4_0) times
 * x's 4-byte sums; zero for Q4_1. */
INLINE __m512i x_corr(__m512i xz, const int kind) {
    if (kind == QK_Q4_1) return _mm512_setzero_si512();
    const __m512i c = _mm512_set1_epi8(kind == QK_Q8_0 ? (char)0x80 : 8);
    return _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), c, xz));
}

/* The exact lanes of a (W pair, x) block (integer sums: any order gives
 * the same lanes). */
INLINE __m512i bdot(__m512i wz, __m512i xz, __m512i xc) { return _mm512_dpbusd_epi32(xc, wz, xz); }

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
            const __m512i lanes = bdot(wz, xz, xc);
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
        __m512i wz[LM_TILE_MAX_NR / 2];
        __m512 dw[LM_TILE_MAX_NR / 2];
        float mw[8] = {0};
#pragma GCC unroll 4
        for (int p = 0; p < NR / 2; p++) {
            wz[p] = w_pair(w[2 * p], w[2 * p + 1], b, kind);
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
                const __m512i lanes = bdot(wz[p], xz, xc);
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

/* Q8_0 batch: the same dot products with W pairs interleaved group by
 * group, lane 2g = row a's 4-byte group g and lane 2g+1 row b's, so that
 * the scale pair (d_a*d_x, d_b*d_x) is one 64-bit broadcast from memory,
 * where the halves layout needs a multiply per (x row, W pair). x comes
 * once per matmul in the matching form (prep_x_q8_0): its groups
 * duplicated, and the lanes' starting values -128 * (group sum) next to
 * them, so the inner loop is vpdpbusd, vcvtdq2ps and one fma per
 * accumulator. Each lane still runs its avx2 counterpart's fma chain.
 * [block b of row i at qx + i*LM_QX_BYTES(k) + 128*b: 64 bytes of x, 16
 * int32 starting values] */
static AVX512 void prep_x_q8_0(const int8_t *q, int k, int8_t *qx) {
    const __m512i dup = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    const __m512i c = _mm512_set1_epi8((char)0x80);
    for (int b = 0; b < k / LM_QK; b++) {
        const __m512i xv = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(q + b * LM_QK)));
        const __m512i xz = _mm512_permutexvar_epi32(dup, xv);
        const __m512i xc = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), c, xz));
        _mm512_storeu_si512((void *)(qx + (size_t)b * 128), xz);
        _mm512_storeu_si512((void *)(qx + (size_t)b * 128 + 64), xc);
    }
}

INLINE void qtile_q8_0_il(int k, const void *const *w, const lm_xtile *x, float *out, const int NR) {
    enum { MR = LM_XQ_GROUP };
    __m512 acc[MR][LM_TILE_MAX_NR / 2];
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (int p = 0; p < NR / 2; p++) acc[i][p] = _mm512_setzero_ps();
    const __m512i il = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const size_t bb = sizeof(lm_block_q8_0), qxb = LM_QX_BYTES(k);
    for (int b = 0; b < k / LM_QK; b++) {
        /* sc[i][j] = d_w[j]*d_x[i], as the avx2 set rounds it */
        _Alignas(32) float sc[MR][8];
        const __m256 dw = load_half8(w, b, bb, 0);
#pragma GCC unroll 4
        for (int i = 0; i < MR; i++)
            _mm256_store_ps(sc[i], _mm256_mul_ps(dw, _mm256_set1_ps(x->d[b * LM_XQ_GROUP + i])));
        /* read sc back from memory: a broadcast load costs no shuffle port,
         * which the compiler's register shuffles would take */
        __asm__ volatile("" ::: "memory");
        __m512i wz[LM_TILE_MAX_NR / 2];
#pragma GCC unroll 4
        for (int p = 0; p < NR / 2; p++) {
            const lm_block_q8_0 *A = (const lm_block_q8_0 *)w[2 * p] + b, *B = (const lm_block_q8_0 *)w[2 * p + 1] + b;
            const __m512i wa = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)A->q));
            const __m512i wb = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)B->q));
            wz[p] = _mm512_xor_si512(_mm512_permutex2var_epi32(wa, il, wb), _mm512_set1_epi8((char)0x80));
        }
#pragma GCC unroll 4
        for (int i = 0; i < MR; i++) {
            const int8_t *xb = x->qx + (size_t)i * qxb + (size_t)b * 128;
            const __m512i xz = _mm512_loadu_si512((const void *)xb);
            const __m512i xc = _mm512_loadu_si512((const void *)(xb + 64));
#pragma GCC unroll 4
            for (int p = 0; p < NR / 2; p++) {
                double pair;
                memcpy(&pair, &sc[i][2 * p], sizeof pair);
                const __m512i lanes = bdot(wz[p], xz, xc);
                acc[i][p] = _mm512_fmadd_ps(_mm512_castpd_ps(_mm512_set1_pd(pair)), _mm512_cvtepi32_ps(lanes),
                                            acc[i][p]);
            }
        }
    }
    /* row a's lanes are the even ones, in the avx2 set's order */
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (int p = 0; p < NR / 2; p++) {
            const __m512 v = _mm512_permutexvar_ps(ev, acc[i][p]);
            out[i * NR + 2 * p] = hsum_row(v, 0, 0);
            out[i * NR + 2 * p + 1] = hsum_row(v, 1, 0);
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
QINSTANCE(gemm_q8_0, qtile_q8_0_il, Q_NR)
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

/* Two groups (16 rows) against LM_Q4X8_MR x rows: lane r < 8 is row r of
 * group g, lane 8+r row r of group g+1. Every lane then needs the same 4
 * bytes of x, which vpdpbusd takes as a broadcast memory operand: no
 * shuffle per x row (q4x8_tile's four vpermd), and a block's 16 exact sums
 * and their float steps in one vector each. The same integer and float
 * steps per row as q4x8_tile. */
static AVX512 void q4x8_rowsN_16(int nb, const lm_block_q4_0x8 *w, const lm_q4x8_x *x, float *y,
                                 size_t ldy) {
    enum { MR = LM_Q4X8_MR };
    const lm_block_q4_0x8 *w2 = w + nb;
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    __m512 acc[MR];
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++) acc[i] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const lm_block_q4_0x8 *A = w + b, *B = w2 + b;
        /* chunk c: elements 4c..4c+3 (lo nibbles) and 16+4c.. (hi) of every row */
        __m512i lo[4], hi[4];
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            const __m512i r = _mm512_inserti64x4(
                _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(A->q + 32 * c))),
                _mm256_loadu_si256((const __m256i *)(B->q + 32 * c)), 1);
            lo[c] = _mm512_and_si512(r, m4);
            hi[c] = _mm512_and_si512(_mm512_srli_epi16(r, 4), m4);
        }
        const __m512 dw = _mm512_cvtph_ps(_mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)A->d)), _mm_loadu_si128((const __m128i *)B->d), 1));
#pragma GCC unroll 4
        for (int i = 0; i < MR; i++) {
            const int8_t *xb = x->q + (size_t)i * x->q_stride + (size_t)b * LM_QK;
            const size_t si = (size_t)i * x->s_stride + (size_t)b;
            int32_t g[8];
            memcpy(g, xb, sizeof g);
            /* two chains (lo, hi nibbles) for latency; integer sums, so the
             * order does not matter */
            __m512i s0 = _mm512_set1_epi32(-8 * x->qsum[si]), s1 = _mm512_setzero_si512();
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++) {
                s0 = _mm512_dpbusd_epi32(s0, lo[c], _mm512_set1_epi32(g[c]));
                s1 = _mm512_dpbusd_epi32(s1, hi[c], _mm512_set1_epi32(g[4 + c]));
            }
            const __m512 scale = _mm512_mul_ps(dw, _mm512_set1_ps(x->d[si]));
            acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)), scale, acc[i]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++) _mm512_storeu_ps(y + (size_t)i * ldy, acc[i]);
}

const lm_q4x8_tiles lm_q4x8_tiles_avx512 = {q4x8_row1, q4x8_rowsN, q4x8_rowsN_16};

/* ---- float arithmetic: llama.cpp's AVX-512 orders --------------------
 *
 * ggml's AVX-512 build reduces float dot products over 16 lanes: vec_dot
 * f32/f16 with 4 accumulators over steps of 64 ((a0+a2)+(a1+a3), then
 * _mm512_reduce_add_ps), tinyBLAS with one 16-lane accumulator per output
 * (steps of 16, then _mm512_reduce_add_ps), BF16 through vdpbf16ps (vec_dot:
 * 2 accumulators over steps of 64; tinyBLAS: one per output over steps of
 * 32); expf as ggml_v_expf's AVX-512 variant (scalef), softmax and SiLU 16
 * at a time. The functions below follow those orders, so this set's logits
 * are those of llama.cpp built for AVX-512 (tests/oracle, LEMONPC_KERNELS=
 * avx512 against scripts/setup_llama_avx512_venv.sh's build). */

/* _mm512_reduce_add_ps as GCC's header defines it (the compiler llama.cpp
 * is built with here): upper 8 + lower 8, upper 4 + lower 4, lanes 0+2 and
 * 1+3, then those two; written out so another compiler's reduction order
 * does not leak in. */
INLINE float reduce16(__m512 v) {
    const __m256 t = _mm256_add_ps(_mm512_extractf32x8_ps(v, 1), _mm512_castps512_ps256(v));
    return hsum4x2(_mm256_extractf128_ps(t, 1), _mm256_castps256_ps128(t));
}

INLINE __m512 load16_f32(const void *w, size_t i) { return _mm512_loadu_ps((const float *)w + i); }
INLINE __m512 load16_f16(const void *w, size_t i) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i)));
}
/* 32 floats that are bf16 values already (x rounded by the driver) as bf16 */
INLINE __m512bh x_bf16(const float *x) {
    return _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + 16), _mm512_loadu_ps(x));
}
INLINE __m512bh w_bf16(const void *w, size_t i) {
    return (__m512bh)_mm512_loadu_si512((const void *)((const uint16_t *)w + i));
}

/* ggml_vec_dot_f32 (AVX-512): 4 accumulators over steps of 64, then the
 * leftovers as GCC compiled its scalar loop for AVX-512 (objdump of
 * libggml-cpu.so): rounded products added one by one in runs of 16 while
 * 16 remain, then one run of 8, the last 7 or fewer fused. F16 (x rounded
 * to f16): ggml_vec_dot_f16, the same vector part into a double and the
 * leftovers summed in double. */
INLINE float vd_f32(const void *wv, const float *y, int n, const int f16) {
    __m512 a[4];
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) a[j] = _mm512_setzero_ps();
    const int np = n & ~63;
    for (int i = 0; i < np; i += 64)
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            const size_t e = (size_t)i + 16 * j;
            a[j] = _mm512_fmadd_ps(f16 ? load16_f16(wv, e) : load16_f32(wv, e), _mm512_loadu_ps(y + e), a[j]);
        }
    const float v = reduce16(_mm512_add_ps(_mm512_add_ps(a[0], a[2]), _mm512_add_ps(a[1], a[3])));
    if (f16) {
        double sum = v;
        for (int i = np; i < n; i++) sum += (double)(f16_to_f32(((const uint16_t *)wv)[i]) * y[i]);
        return (float)sum;
    }
    const float *x = wv;
    float sum = v;
    int i = np;
    for (; n - i >= 16; i += 16)
        for (int e = 0; e < 16; e++) sum += x[i + e] * y[i + e];
    if (n - i >= 8)
        for (int e = 0; e < 8; e++, i++) sum += x[i] * y[i];
    for (; i < n; i++) sum = fmaf(x[i], y[i], sum);
    return sum;
}

/* ggml_vec_dot_bf16 (AVX512_BF16): vdpbf16ps into c1 (elements i..i+31)
 * and c2 (i+32..i+63) over steps of 64, each reduced and added to a
 * double, the leftovers in double. */
INLINE float vd_bf16(const void *w, const float *y, int n) {
    __m512 c1 = _mm512_setzero_ps(), c2 = _mm512_setzero_ps();
    int i = 0;
    for (; i + 64 <= n; i += 64) {
        c1 = _mm512_dpbf16_ps(c1, w_bf16(w, (size_t)i), x_bf16(y + i));
        c2 = _mm512_dpbf16_ps(c2, w_bf16(w, (size_t)i + 32), x_bf16(y + i + 32));
    }
    double sum = 0;
    sum += (double)reduce16(c1);
    sum += (double)reduce16(c2);
    for (; i < n; i++) sum += (double)(lm_bf16_to_f32(((const uint16_t *)w)[i]) * y[i]);
    return (float)sum;
}

/* tinyBLAS (AVX-512): per output one 16-lane fma accumulator over steps of
 * 16 (BF16: vdpbf16ps over steps of 32), reduced at the end. MR x rows
 * against NR W rows. */
#define DEFINE_TB_TILE(NAME, STEP, ACC)                                                         \
    INLINE void NAME(int k, const void *const *w, const lm_xtile *x, float *out, const int MR, \
                     const int NR) {                                                          \
        __m512 acc[LM_TILE_MAX_MR][LM_TILE_MAX_NR];                                           \
        _Pragma("GCC unroll 8") for (int i = 0; i < MR; i++)                                  \
            _Pragma("GCC unroll 8") for (int j = 0; j < NR; j++) acc[i][j] = _mm512_setzero_ps(); \
        for (int e = 0; e < k; e += STEP) { ACC }                                             \
        _Pragma("GCC unroll 8") for (int i = 0; i < MR; i++)                                  \
            _Pragma("GCC unroll 8") for (int j = 0; j < NR; j++) out[i * NR + j] = reduce16(acc[i][j]); \
    }
#define TB_ACC(LOAD)                                                                  \
    __m512 wv[LM_TILE_MAX_NR];                                                        \
    _Pragma("GCC unroll 8") for (int j = 0; j < NR; j++) wv[j] = LOAD(w[j], (size_t)e); \
    _Pragma("GCC unroll 8") for (int i = 0; i < MR; i++) {                            \
        const __m512 xv = _mm512_loadu_ps(x->f[i] + e);                               \
        _Pragma("GCC unroll 8") for (int j = 0; j < NR; j++)                          \
            acc[i][j] = _mm512_fmadd_ps(wv[j], xv, acc[i][j]);                        \
    }
#define TB_ACC_BF16                                                                   \
    __m512bh wv[LM_TILE_MAX_NR];                                                      \
    _Pragma("GCC unroll 8") for (int j = 0; j < NR; j++) wv[j] = w_bf16(w[j], (size_t)e); \
    _Pragma("GCC unroll 8") for (int i = 0; i < MR; i++) {                            \
        const __m512bh xv = x_bf16(x->f[i] + e);                                      \
        _Pragma("GCC unroll 8") for (int j = 0; j < NR; j++)                          \
            acc[i][j] = _mm512_dpbf16_ps(acc[i][j], wv[j], xv);                       \
    }
DEFINE_TB_TILE(tb_f32, 16, TB_ACC(load16_f32))
DEFINE_TB_TILE(tb_f16, 16, TB_ACC(load16_f16))
DEFINE_TB_TILE(tb_bf16, 32, TB_ACC_BF16)

INLINE float vd_f32_w(const void *w, const float *x, int k) { return vd_f32(w, x, k, 0); }
INLINE float vd_f16_w(const void *w, const float *x, int k) { return vd_f32(w, x, k, 1); }

#define F_DEC_NR 4
#define F_MR 4
#define F_NR 4
/* A single token: ggml's vec_dot. A batch: tinyBLAS when k is a multiple of
 * its step (llama.cpp's condition), the vec_dot otherwise. */
#define DEFINE_FLOAT(T, VD, TB, STEP)                                                            \
    static AVX512 void dec_##T(int k, const void *const *w, const lm_xtile *x, float *out) {    \
        for (int j = 0; j < F_DEC_NR; j++) out[j] = VD(w[j], x->f[0], k);                        \
    }                                                                                            \
    static AVX512 void gemm_##T(int k, const void *const *w, const lm_xtile *x, float *out) {   \
        if (k % STEP == 0) {                                                                     \
            TB(k, w, x, out, F_MR, F_NR);                                                        \
            return;                                                                              \
        }                                                                                        \
        for (int i = 0; i < F_MR; i++)                                                           \
            for (int j = 0; j < F_NR; j++) out[i * F_NR + j] = VD(w[j], x->f[i], k);             \
    }
DEFINE_FLOAT(f32, vd_f32_w, tb_f32, 16)
DEFINE_FLOAT(f16, vd_f16_w, tb_f16, 16)
DEFINE_FLOAT(bf16, vd_bf16, tb_bf16, 32)

/* ---- exp, softmax, swiglu ------------------------------------------- */

/* ggml_v_expf's AVX-512 variant: the polynomial of the AVX2 one with the
 * +1 folded in and 2^n applied by vscalefps; |n| > 192 saturates to 0 or
 * inf. Not the avx2 set's numbers: each follows its llama.cpp build. */
INLINE __m512 exp16(__m512 x) {
    const __m512 r = _mm512_set1_ps(0x1.8p23f);
    const __m512 z = _mm512_fmadd_ps(x, _mm512_set1_ps(0x1.715476p+0f), r);
    const __m512 n = _mm512_sub_ps(z, r);
    const __m512 b = _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.7f7d1cp-20f),
                                      _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.62e4p-1f), x));
    const __mmask16 d = _mm512_cmp_ps_mask(_mm512_abs_ps(n), _mm512_set1_ps(192), _CMP_GT_OQ);
    const __m512 u = _mm512_mul_ps(b, b);
    const __m512 j = _mm512_fmadd_ps(
        _mm512_fmadd_ps(_mm512_fmadd_ps(_mm512_set1_ps(0x1.0e4020p-7f), b, _mm512_set1_ps(0x1.573e2ep-5f)), u,
                        _mm512_fmadd_ps(_mm512_set1_ps(0x1.555e66p-3f), b, _mm512_set1_ps(0x1.fffdb6p-2f))),
        u, _mm512_fmadd_ps(_mm512_set1_ps(0x1.ffffecp-1f), b, _mm512_set1_ps(1.0f)));
    const __m512 res = _mm512_scalef_ps(j, n);
    if (!d) return res;
    const __m512 alt = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(n, _mm512_setzero_ps(), _CMP_LE_OQ),
                                            _mm512_set1_ps(__builtin_inff()), _mm512_setzero_ps());
    return _mm512_mask_blend_ps(d, res, alt);
}

/* ggml_vec_soft_max_f32 (AVX-512): groups of 16, each group's reduced sum
 * added to a double, the tail through expf */
static AVX512 void softmax16(float *x, int n) {
    if (n <= 0) return;
    float max = -__builtin_inff();
    for (int i = 0; i < n; i++) max = x[i] > max ? x[i] : max;
    double sum = 0.0;
    int i = 0;
    const __m512 mb = _mm512_set1_ps(max);
    for (; i + 16 <= n; i += 16) {
        const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), mb));
        _mm512_storeu_ps(x + i, e);
        sum += (double)reduce16(e);
    }
    for (; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += (double)x[i];
    }
    const float inv = (float)(1.0 / sum);
    for (i = 0; i < n; i++) x[i] *= inv;
}

/* ggml_vec_swiglu_f32 (AVX-512): silu(g) = g / (1 + e^-g), 16 at a time */
static AVX512 void swiglu16(float *out, const float *gate, const float *up, int n) {
    int i = 0;
    const __m512 one = _mm512_set1_ps(1.0f);
    for (; i + 16 <= n; i += 16) {
        const __m512 g = _mm512_loadu_ps(gate + i);
        const __m512 silu = _mm512_div_ps(g, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), g))));
        _mm512_storeu_ps(out + i, _mm512_mul_ps(silu, _mm512_loadu_ps(up + i)));
    }
    if (i < n) lm_swiglu_scalar(out + i, gate + i, up + i, n - i);
}

/* ---- attention (llama.cpp's non-flash path, AVX-512) -----------------
 *
 * Same structure as the avx2 set's (ops.h), 16 keys per vector: scores by
 * ggml_vec_dot_f32/_f16 (a single token, or any batch over an f32 cache)
 * or tinyBLAS (a batch over an f16 cache), the softmax in groups of 16,
 * values by tinyBLAS (a batch) or vec_dot over the keys (single). Rows are
 * read up to n_keys rounded to LM_ATTN_PAD (32); the vec_dot over keys
 * steps by 64, and keys past that padding load as zeros (their weight is 0
 * there, as in llama.cpp's 256-padded window). */

/* 16 cache values at element offset off (keys off..off+15 of one dim),
 * f16 widened; lanes at or past lim (an element offset) load as 0. */
INLINE __m512 load_kv16(const void *base, size_t off, const int f16) {
    if (f16) return load16_f16(base, off);
    return _mm512_loadu_ps((const float *)base + off);
}
INLINE __m512 load_kv16_lim(const void *base, size_t off, size_t lim, const int f16) {
    if (off + 16 <= lim) return load_kv16(base, off, f16);
    const __mmask16 m = off >= lim ? 0 : (__mmask16)((1u << (lim - off)) - 1);
    if (f16) return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)base + off));
    return _mm512_maskz_loadu_ps(m, (const float *)base + off);
}

INLINE __m512 round_f16_16(__m512 x) {
    return _mm512_cvtph_ps(_mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

/* Reduction over the 16 vector lanes l of 16 keys' accumulators t[l]
 * (lanes of t are keys): _mm512_reduce_add_ps's pairing (reduce16). */
INLINE __m512 lanes_reduce16(__m512 *t) {
#pragma GCC unroll 8
    for (int l = 0; l < 8; l++) t[l] = _mm512_add_ps(t[l + 8], t[l]);
#pragma GCC unroll 4
    for (int l = 0; l < 4; l++) t[l] = _mm512_add_ps(t[l + 4], t[l]);
    return _mm512_add_ps(_mm512_add_ps(t[0], t[2]), _mm512_add_ps(t[1], t[3]));
}

/* Scores of keys p..p+15 for one head, ggml_vec_dot's order per key (hd a
 * multiple of 64): vector lane l of accumulator j holds dims 16j+l (+64r). */
INLINE __m512 scores16_vd(const float *q, int hd, const void *Kt, size_t p, size_t stride,
                          const int f16) {
    __m512 t[16];
#pragma GCC unroll 16
    for (int l = 0; l < 16; l++) {
        __m512 a[4];
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            const int i = 16 * j + l;
            a[j] = _mm512_mul_ps(load_kv16(Kt, (size_t)i * stride + p, f16), _mm512_set1_ps(q[i]));
            for (int r = 64; r < hd; r += 64)
                a[j] = _mm512_fmadd_ps(load_kv16(Kt, (size_t)(i + r) * stride + p, f16),
                                       _mm512_set1_ps(q[i + r]), a[j]);
        }
        t[l] = _mm512_add_ps(_mm512_add_ps(a[0], a[2]), _mm512_add_ps(a[1], a[3]));
    }
    return lanes_reduce16(t);
}

/* Scores of keys p..p+15 for one head in tinyBLAS's order (hd a multiple
 * of 16; f16 cache): lane l of a key's accumulator over dims l, l+16, ... */
INLINE __m512 scores16_tb(const float *q, int hd, const void *Kt, size_t p, size_t stride) {
    __m512 t[16];
#pragma GCC unroll 16
    for (int l = 0; l < 16; l++) t[l] = _mm512_setzero_ps();
    for (int g = 0; g < hd; g += 16)
#pragma GCC unroll 16
        for (int l = 0; l < 16; l++)
            t[l] = _mm512_fmadd_ps(load_kv16(Kt, (size_t)(g + l) * stride + p, 1),
                                   _mm512_set1_ps(q[g + l]), t[l]);
    return lanes_reduce16(t);
}

/* One head's softmax over its scaled scores s[n_keys]: groups of 16 from
 * key 0 (masked tail at -inf), group sums added to a double, zeros up to
 * LM_ATTN_PAD; with an f16 cache the weights rounded to f16. */
INLINE void attn_softmax16(float *s, int n_keys, const int f16) {
    const int n16 = (n_keys + 15) & ~15, n32 = (n_keys + 31) & ~31;
    float max = -__builtin_inff();
    for (int p = 0; p < n_keys; p++) max = s[p] > max ? s[p] : max;
    for (int p = n_keys; p < n16; p++) s[p] = -__builtin_inff();
    double sum = 0.0;
    const __m512 mb = _mm512_set1_ps(max);
    for (int p = 0; p < n16; p += 16) {
        const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(s + p), mb));
        _mm512_storeu_ps(s + p, e);
        sum += (double)reduce16(e);
    }
    for (int p = n16; p < n32; p++) s[p] = 0.0f;
    const __m512 inv = _mm512_set1_ps((float)(1.0 / sum));
    for (int p = 0; p < n16; p += 16) {
        const __m512 w = _mm512_mul_ps(_mm512_loadu_ps(s + p), inv);
        _mm512_storeu_ps(s + p, f16 ? round_f16_16(w) : w);
    }
}

/* ggml_vec_dot_f32 / _f16 of a V row (keys) with one head's weights over
 * the keys rounded up to 64 (llama.cpp's window is a multiple of 256 with
 * zero weights past n_keys); past n32 both load as zeros. */
INLINE float vd_keys(const void *Vrow, const float *w, int n32, const int f16) {
    const int n64 = (n32 + 63) & ~63;
    __m512 a[4];
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) a[j] = _mm512_setzero_ps();
    for (int i = 0; i < n64; i += 64)
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            const size_t e = (size_t)i + 16 * j;
            const __m512 v = load_kv16_lim(Vrow, e, (size_t)n32, f16);
            const __m512 ww = e + 16 <= (size_t)n32 ? _mm512_loadu_ps(w + e)
                            : load_kv16_lim(w, e, (size_t)n32, 0);
            a[j] = _mm512_fmadd_ps(v, ww, a[j]);
        }
    return reduce16(_mm512_add_ps(_mm512_add_ps(a[0], a[2]), _mm512_add_ps(a[1], a[3])));
}

static AVX512 void attn_heads16(float *out, const float *q, int n_q, const void *Kt, const void *Vt,
                                lm_dtype kv_type, size_t stride, int n_keys, int hd, float scale,
                                int single, float *s) {
    const int f16 = kv_type == LM_F16;
    if (hd % 4 || hd > LM_ATTN_MAX_HD) { /* no such model in practice */
        lm_kernels_scalar.attn_heads(out, q, n_q, Kt, Vt, kv_type, stride, n_keys, hd, scale,
                                     single, s);
        return;
    }
    const size_t sstride = (size_t)((n_keys + 31) & ~31);
    const int n16 = (n_keys + 15) & ~15;
    const __m512 sc = _mm512_set1_ps(scale);
    float qr[LM_ATTN_MAX_HD];
    for (int h = 0; h < n_q; h++) {
        const float *qh = q + (size_t)h * hd;
        float *sh = s + (size_t)h * sstride, *oh = out + (size_t)h * hd;
        if (f16) {
            /* llama.cpp converts q to f16 for the matmul with the f16 K cache */
            for (int e = 0; e < hd; e++) qr[e] = lm_round_f16(qh[e]);
            qh = qr;
        }
        if ((f16 && !single && hd % 16 == 0) || hd % 64 == 0) {
            for (int p = 0; p < n16; p += 16) {
                const __m512 r = f16 && !single ? scores16_tb(qh, hd, Kt, (size_t)p, stride)
                                                : scores16_vd(qh, hd, Kt, (size_t)p, stride, f16);
                _mm512_storeu_ps(sh + p, _mm512_mul_ps(r, sc));
            }
        } else {
            /* the vec_dot's leftovers are scalar code: a key at a time,
             * gathered from the transposed cache */
            union { float f[LM_ATTN_MAX_HD]; uint16_t h[LM_ATTN_MAX_HD]; } k;
            for (int p = 0; p < n_keys; p++) {
                for (int i = 0; i < hd; i++) {
                    if (f16) k.h[i] = ((const uint16_t *)Kt)[(size_t)i * stride + p];
                    else k.f[i] = ((const float *)Kt)[(size_t)i * stride + p];
                }
                sh[p] = vd_f32(f16 ? (const void *)k.h : (const void *)k.f, qh, hd, f16) * scale;
            }
        }
        attn_softmax16(sh, n_keys, f16);
        if (single) {
            for (int i = 0; i < hd; i++)
                oh[i] = vd_keys(f16 ? (const void *)((const uint16_t *)Vt + (size_t)i * stride)
                                    : (const void *)((const float *)Vt + (size_t)i * stride),
                                sh, (int)sstride, f16);
            continue;
        }
        /* tinyBLAS over the keys: one 16-lane accumulator per output */
        for (int i = 0; i < hd; i += 4) {
            __m512 a[4];
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++) a[r] = _mm512_setzero_ps();
            for (int p = 0; p < n16; p += 16) {
                const __m512 w = _mm512_loadu_ps(sh + p);
#pragma GCC unroll 4
                for (int r = 0; r < 4; r++)
                    a[r] = _mm512_fmadd_ps(load_kv16(Vt, (size_t)(i + r) * stride + (size_t)p, f16), w, a[r]);
            }
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++) oh[i + r] = reduce16(a[r]);
        }
    }
}

/* ---- the set ---------------------------------------------------------- */

const lm_kernels lm_kernels_avx512 = {
    .name = "avx512",
    .quant_x = lm_avx2_quant_x, /* bit-identical output in every set (kernels.h) */
    .f16_x = 1,
    .bf16_x = 1,
    .prep_x = {[LM_WT_Q8_0] = prep_x_q8_0},
    .softmax = softmax16,
    .swiglu = swiglu16,
    .attn_heads = attn_heads16,
    .dec = {
        [LM_WT_F32] = {dec_f32, 1, F_DEC_NR},
        [LM_WT_F16] = {dec_f16, 1, F_DEC_NR},
        [LM_WT_BF16] = {dec_bf16, 1, F_DEC_NR},
        [LM_WT_Q8_0] = {dec_q8_0, 1, 8},
        [LM_WT_Q4_0] = {dec_q4_0, 1, 8},
        [LM_WT_Q4_1] = {dec_q4_1, 1, 8},
    },
    .gemm = {
        [LM_WT_F32] = {gemm_f32, F_MR, F_NR},
        [LM_WT_F16] = {gemm_f16, F_MR, F_NR},
        [LM_WT_BF16] = {gemm_bf16, F_MR, F_NR},
        [LM_WT_Q8_0] = {gemm_q8_0, LM_XQ_GROUP, Q_NR},
        [LM_WT_Q4_0] = {gemm_q4_0, LM_XQ_GROUP, Q_NR},
        [LM_WT_Q4_1] = {gemm_q4_1, LM_XQ_GROUP, Q_NR},
    },
};

#endif
