/* AVX2 + FMA + F16C kernel set (x86-64 since Haswell / Zen 1). Compiled
 * with per-function target attributes so the build needs no -march flag;
 * matmul.c only hands these out when the CPU reports the features.
 *
 * Quantized dot products follow ggml's AVX2 path: per block of 32, an
 * integer dot product into 8 int32 lanes (maddubs + madd), converted to
 * f32 and accumulated with fma(isum, d_w*d_x, acc); one horizontal sum at
 * the end. Each dot product runs the same instruction sequence in every
 * tile shape (see kernels.h), only the number of them in flight differs. */
#include "tensor/kernels.h"

#ifdef LM_HAVE_X86_KERNELS

#include <immintrin.h>
#include <string.h>

#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define INLINE static inline __attribute__((always_inline)) AVX2

INLINE float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

INLINE float f16_to_f32(uint16_t h) { return _cvtsh_ss(h); }

/* ---- activation quantizer ------------------------------------------- */

static AVX2 void quant_x(const float *x, int k, int8_t *q, float *d, float *s) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int b = 0; b < k / LM_QK; b++, x += LM_QK, q += LM_QK) {
        __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
        __m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
        __m256 mx = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1)),
                                  _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float amax = _mm_cvtss_f32(m4);
        const float db = amax / 127.0f;
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        const __m256 mul = _mm256_set1_ps(id);
        const int rnd = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v0, mul), rnd));
        __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v1, mul), rnd));
        __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v2, mul), rnd));
        __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v3, mul), rnd));
        d[b] = lm_round_f16(db);
        if (s) {
            __m256i t = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
            __m128i t4 = _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
            t4 = _mm_add_epi32(t4, _mm_shuffle_epi32(t4, 0x4e));
            t4 = _mm_add_epi32(t4, _mm_shuffle_epi32(t4, 0xb1));
            const float sb = (float)_mm_cvtsi128_si32(t4) * db;
            s[b] = lm_round_f16(sb);
        }
        /* packs interleave 128-bit lanes; the permute restores element order */
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)q, p);
    }
}

/* ---- quantized tiles ------------------------------------------------ */

/* 32 nibbles of a Q4 block as bytes 0..15 in element order. */
INLINE __m256i unpack_nibbles(const uint8_t *qs) {
    const __m128i q = _mm_loadu_si128((const __m128i *)qs);
    const __m256i v = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0f));
}

/* Signed i8 x i8 dot of 32 pairs into 8 f32 lanes. maddubs wants one
 * unsigned operand: |w| with x given w's sign. No i16 overflow: |w| <= 128
 * and |x| <= 127 (quant_x never writes -128). */
INLINE __m256 dot_i8(__m256i w, __m256i x) {
    const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1)));
}

/* Unsigned nibble x i8 dot (Q4_1): 15*127*2 fits i16. */
INLINE __m256 dot_u4i8(__m256i w, __m256i x) {
    const __m256i p = _mm256_maddubs_epi16(w, x);
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1)));
}

INLINE void tile_q8_0(int k, const void *const *w, const lm_xrow *x, float *out, const int MR,
                      const int NR) {
    __m256 acc[LM_TILE_MAX_MR][LM_TILE_MAX_NR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 8
        for (int j = 0; j < NR; j++) acc[i][j] = _mm256_setzero_ps();
    for (int b = 0; b < k / LM_QK; b++) {
        __m256i wv[LM_TILE_MAX_NR];
        float dw[LM_TILE_MAX_NR];
#pragma GCC unroll 8
        for (int j = 0; j < NR; j++) {
            const lm_block_q8_0 *blk = (const lm_block_q8_0 *)w[j] + b;
            wv[j] = _mm256_loadu_si256((const __m256i *)blk->q);
            dw[j] = f16_to_f32(blk->d);
        }
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) {
            const __m256i xv = _mm256_loadu_si256((const __m256i *)(x[i].q + b * LM_QK));
            const float dx = x[i].d[b];
#pragma GCC unroll 8
            for (int j = 0; j < NR; j++)
                acc[i][j] = _mm256_fmadd_ps(dot_i8(wv[j], xv), _mm256_set1_ps(dw[j] * dx), acc[i][j]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 8
        for (int j = 0; j < NR; j++) out[i * NR + j] = hsum_ps(acc[i][j]);
}

INLINE void tile_q4_0(int k, const void *const *w, const lm_xrow *x, float *out, const int MR,
                      const int NR) {
    __m256 acc[LM_TILE_MAX_MR][LM_TILE_MAX_NR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 8
        for (int j = 0; j < NR; j++) acc[i][j] = _mm256_setzero_ps();
    for (int b = 0; b < k / LM_QK; b++) {
        __m256i wv[LM_TILE_MAX_NR];
        float dw[LM_TILE_MAX_NR];
#pragma GCC unroll 8
        for (int j = 0; j < NR; j++) {
            const lm_block_q4_0 *blk = (const lm_block_q4_0 *)w[j] + b;
            wv[j] = _mm256_sub_epi8(unpack_nibbles(blk->q), _mm256_set1_epi8(8));
            dw[j] = f16_to_f32(blk->d);
        }
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) {
            const __m256i xv = _mm256_loadu_si256((const __m256i *)(x[i].q + b * LM_QK));
            const float dx = x[i].d[b];
#pragma GCC unroll 8
            for (int j = 0; j < NR; j++)
                acc[i][j] = _mm256_fmadd_ps(dot_i8(wv[j], xv), _mm256_set1_ps(dw[j] * dx), acc[i][j]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 8
        for (int j = 0; j < NR; j++) out[i * NR + j] = hsum_ps(acc[i][j]);
}

INLINE void tile_q4_1(int k, const void *const *w, const lm_xrow *x, float *out, const int MR,
                      const int NR) {
    __m256 acc[LM_TILE_MAX_MR][LM_TILE_MAX_NR];
    float accm[LM_TILE_MAX_MR][LM_TILE_MAX_NR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 8
        for (int j = 0; j < NR; j++) acc[i][j] = _mm256_setzero_ps(), accm[i][j] = 0.0f;
    for (int b = 0; b < k / LM_QK; b++) {
        __m256i wv[LM_TILE_MAX_NR];
        float dw[LM_TILE_MAX_NR], mw[LM_TILE_MAX_NR];
#pragma GCC unroll 8
        for (int j = 0; j < NR; j++) {
            const lm_block_q4_1 *blk = (const lm_block_q4_1 *)w[j] + b;
            wv[j] = unpack_nibbles(blk->q);
            dw[j] = f16_to_f32(blk->d);
            mw[j] = f16_to_f32(blk->m);
        }
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) {
            const __m256i xv = _mm256_loadu_si256((const __m256i *)(x[i].q + b * LM_QK));
            const float dx = x[i].d[b], sx = x[i].s[b];
#pragma GCC unroll 8
            for (int j = 0; j < NR; j++) {
                acc[i][j] = _mm256_fmadd_ps(dot_u4i8(wv[j], xv), _mm256_set1_ps(dw[j] * dx), acc[i][j]);
                /* separate statements: no contraction into an fma here,
                 * so the scalar set's mw*s + accm rounds the same */
                const float ms = mw[j] * sx;
                accm[i][j] += ms;
            }
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 8
        for (int j = 0; j < NR; j++) out[i * NR + j] = hsum_ps(acc[i][j]) + accm[i][j];
}

/* ---- float-weight tiles --------------------------------------------- */

INLINE __m256 load_f32(const void *w, int i) { return _mm256_loadu_ps((const float *)w + i); }
INLINE __m256 load_f16(const void *w, int i) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i)));
}
INLINE __m256 load_bf16(const void *w, int i) {
    const __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
static inline float elem_f32(const void *w, int i) { return ((const float *)w)[i]; }
static inline float elem_f16(const void *w, int i) { return lm_f16_to_f32(((const uint16_t *)w)[i]); }
static inline float elem_bf16(const void *w, int i) { return lm_bf16_to_f32(((const uint16_t *)w)[i]); }

#define DEFINE_FLOAT_TILE(NAME, LOAD, ELEM)                                                        \
    INLINE void NAME(int k, const void *const *w, const lm_xrow *x, float *out, const int MR,    \
                     const int NR) {                                                             \
        __m256 acc[LM_TILE_MAX_MR][LM_TILE_MAX_NR];                                              \
        _Pragma("GCC unroll 8") for (int i = 0; i < MR; i++)                                     \
            _Pragma("GCC unroll 8") for (int j = 0; j < NR; j++) acc[i][j] = _mm256_setzero_ps(); \
        const int k8 = k & ~7;                                                                   \
        for (int e = 0; e < k8; e += 8) {                                                        \
            __m256 wv[LM_TILE_MAX_NR];                                                           \
            _Pragma("GCC unroll 8") for (int j = 0; j < NR; j++) wv[j] = LOAD(w[j], e);          \
            _Pragma("GCC unroll 8") for (int i = 0; i < MR; i++) {                               \
                const __m256 xv = _mm256_loadu_ps(x[i].f + e);                                   \
                _Pragma("GCC unroll 8") for (int j = 0; j < NR; j++)                             \
                    acc[i][j] = _mm256_fmadd_ps(wv[j], xv, acc[i][j]);                           \
            }                                                                                    \
        }                                                                                        \
        _Pragma("GCC unroll 8") for (int i = 0; i < MR; i++)                                     \
            _Pragma("GCC unroll 8") for (int j = 0; j < NR; j++) {                               \
                float t = hsum_ps(acc[i][j]);                                                    \
                for (int e = k8; e < k; e++) t += ELEM(w[j], e) * x[i].f[e];                     \
                out[i * NR + j] = t;                                                             \
            }                                                                                    \
    }

DEFINE_FLOAT_TILE(tile_f32, load_f32, elem_f32)
DEFINE_FLOAT_TILE(tile_f16, load_f16, elem_f16)
DEFINE_FLOAT_TILE(tile_bf16, load_bf16, elem_bf16)

/* ---- instantiations ------------------------------------------------- */

#define INSTANCE(NAME, BODY, MR, NR)                                                    \
    static AVX2 void NAME(int k, const void *const *w, const lm_xrow *x, float *out) { \
        BODY(k, w, x, out, MR, NR);                                                     \
    }

#define DEC_NR 4
#define Q_MR 4
#define Q_NR 2
#define F_MR 4
#define F_NR 3

INSTANCE(dec_f32, tile_f32, 1, DEC_NR)
INSTANCE(dec_f16, tile_f16, 1, DEC_NR)
INSTANCE(dec_bf16, tile_bf16, 1, DEC_NR)
INSTANCE(dec_q8_0, tile_q8_0, 1, DEC_NR)
INSTANCE(dec_q4_0, tile_q4_0, 1, DEC_NR)
INSTANCE(dec_q4_1, tile_q4_1, 1, DEC_NR)
INSTANCE(gemm_f32, tile_f32, F_MR, F_NR)
INSTANCE(gemm_f16, tile_f16, F_MR, F_NR)
INSTANCE(gemm_bf16, tile_bf16, F_MR, F_NR)
INSTANCE(gemm_q8_0, tile_q8_0, Q_MR, Q_NR)
INSTANCE(gemm_q4_0, tile_q4_0, Q_MR, Q_NR)
INSTANCE(gemm_q4_1, tile_q4_1, Q_MR, Q_NR)

const lm_kernels lm_kernels_avx2 = {
    .name = "avx2",
    .quant_x = quant_x,
    .dec = {
        [LM_WT_F32] = {dec_f32, 1, DEC_NR},   [LM_WT_F16] = {dec_f16, 1, DEC_NR},
        [LM_WT_BF16] = {dec_bf16, 1, DEC_NR}, [LM_WT_Q8_0] = {dec_q8_0, 1, DEC_NR},
        [LM_WT_Q4_0] = {dec_q4_0, 1, DEC_NR}, [LM_WT_Q4_1] = {dec_q4_1, 1, DEC_NR},
    },
    .gemm = {
        [LM_WT_F32] = {gemm_f32, F_MR, F_NR},   [LM_WT_F16] = {gemm_f16, F_MR, F_NR},
        [LM_WT_BF16] = {gemm_bf16, F_MR, F_NR}, [LM_WT_Q8_0] = {gemm_q8_0, Q_MR, Q_NR},
        [LM_WT_Q4_0] = {gemm_q4_0, Q_MR, Q_NR}, [LM_WT_Q4_1] = {gemm_q4_1, Q_MR, Q_NR},
    },
};

#endif
