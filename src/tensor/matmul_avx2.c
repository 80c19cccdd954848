/* AVX2 + FMA + F16C kernel set (x86-64 since Haswell / Zen 1). Compiled
 * with per-function target attributes so the build needs no -march flag;
 * matmul.c only hands these out when the CPU reports the features.
 *
 * Quantized dot products do what ggml's AVX2 path does per block of 32 --
 * an exact integer dot product (maddubs + madd), scaled by d_w*d_x in f32
 * -- but reduce 8 pairs' integer sums into one vector first (see below).
 * Float-weight dot products accumulate 8 lanes with fma and sum them at
 * the end. Each dot product runs the same operation sequence in every tile
 * shape (see kernels.h); only the number of them in flight differs. */
#include "tensor/kernels.h"
#include "tensor/ops.h"

#ifdef LM_HAVE_X86_KERNELS

#include <immintrin.h>
#include <math.h>
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

static AVX2 void quant_x(const float *x, int k, int8_t *q, float *d, float *s, int32_t *qsum,
                         int stride) {
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
        d[(size_t)b * stride] = lm_round_f16(db);
        if (s || qsum) {
            __m256i t = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
            __m128i t4 = _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
            t4 = _mm_add_epi32(t4, _mm_shuffle_epi32(t4, 0x4e));
            t4 = _mm_add_epi32(t4, _mm_shuffle_epi32(t4, 0xb1));
            const int sum = _mm_cvtsi128_si32(t4);
            if (s) {
                const float sb = (float)sum * db;
                s[(size_t)b * stride] = lm_round_f16(sb);
            }
            if (qsum) qsum[(size_t)b * stride] = sum;
        }
        /* packs interleave 128-bit lanes; the permute restores element order */
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)q, p);
    }
}

/* ---- quantized tiles ------------------------------------------------
 *
 * A tile handles 8 (x row, W row) pairs at a time. Per block, each pair's
 * exact int32 dot product is reduced to one lane, so the float work -- the
 * conversion, the scale d_w*d_x and the fma into the accumulator -- is one
 * instruction for all 8 pairs, not one each. Lane p of the accumulator is
 * pair p's sum over blocks, acc = fma(isum_b, dw_b*dx_b, acc) in block
 * order, whichever tile shape grouped the pairs: decode (1 x 8) and batch
 * (4 x 2) tiles give identical numbers. */

/* 32 nibbles of a Q4 block as bytes 0..15 in element order. */
INLINE __m256i unpack_nibbles(const uint8_t *qs) {
    const __m128i q = _mm_loadu_si128((const __m128i *)qs);
    const __m256i v = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0f));
}

/* Signed i8 x i8 block dot into 8 int32 lanes. maddubs wants one unsigned
 * operand: aw = |w|, and x takes w's sign. No i16 overflow: |w| <= 128 and
 * |x| <= 127 (quant_x never writes -128). */
INLINE __m256i bdot_s(__m256i aw, __m256i w, __m256i x) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(x, w)), _mm256_set1_epi16(1));
}

/* Unsigned nibble x i8 (Q4_1): 15*127*2 fits i16. */
INLINE __m256i bdot_u(__m256i w, __m256i x) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1));
}

/* Lane p of the result = sum of the 8 lanes of v[p]. */
INLINE __m256i hsum8_epi32(const __m256i *v) {
    const __m256i a = _mm256_hadd_epi32(v[0], v[1]), b = _mm256_hadd_epi32(v[2], v[3]);
    const __m256i c = _mm256_hadd_epi32(v[4], v[5]), d = _mm256_hadd_epi32(v[6], v[7]);
    const __m256i ab = _mm256_hadd_epi32(a, b), cd = _mm256_hadd_epi32(c, d);
    return _mm256_add_epi32(_mm256_permute2x128_si256(ab, cd, 0x20),
                            _mm256_permute2x128_si256(ab, cd, 0x31));
}

enum { QK_Q8_0, QK_Q4_0, QK_Q4_1 };

/* Block b of W row r for kind: the 32 weights as bytes (signed for Q8_0,
 * the raw nibbles 0..15 for Q4_0 and Q4_1), and the f16 d (and m) fields.
 * Q4_0's weights are nib - 8: the kernels take sum(nib*x) - 8*sum(x),
 * exact in integers, which saves recentring and sign tricks per pair. */
INLINE __m256i load_wblock(const void *row, int b, int kind, uint16_t *d, uint16_t *m) {
    if (kind == QK_Q8_0) {
        const lm_block_q8_0 *blk = (const lm_block_q8_0 *)row + b;
        *d = blk->d;
        return _mm256_loadu_si256((const __m256i *)blk->q);
    }
    if (kind == QK_Q4_0) {
        const lm_block_q4_0 *blk = (const lm_block_q4_0 *)row + b;
        *d = blk->d;
        return unpack_nibbles(blk->q);
    }
    const lm_block_q4_1 *blk = (const lm_block_q4_1 *)row + b;
    *d = blk->d;
    *m = blk->m;
    return unpack_nibbles(blk->q);
}

/* Decode streams 8 W rows at once from DRAM; the hardware prefetcher
 * alone leaves 15-35% on the table here (measured on Zen 3, Q8_0/Q4_0):
 * ask for each row's bytes PF_DIST ahead. Rows are short (612 bytes for
 * Q8_0 at k = 576) and a tile's 8 rows are adjacent, so the distance must
 * reach past the tile into the next ones: 512 fetched what the tile was
 * about to read anyway; 4-16 KiB cut CPU time per decoded token by ~20%
 * (Q8_0) and ~25% (Q4_0) on Zen 3. A prefetch past the end of the matrix
 * is harmless (it never faults). */
#ifndef PF_DIST
#define PF_DIST 8192
#endif
/* Decode: one x row against 8 W rows; lane j = W row j. */
INLINE void dec_q(int k, const void *const *w, const lm_xtile *x, float *out, const int kind) {
    __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    for (int b = 0; b < k / LM_QK; b++) {
        const __m256i xv = _mm256_loadu_si256((const __m256i *)(x->q + b * LM_QK));
        __m256i p[8];
        uint16_t d[8], m[8] = {0};
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            if (PF_DIST) {
                const size_t bb = kind == QK_Q8_0 ? sizeof(lm_block_q8_0)
                                : kind == QK_Q4_0 ? sizeof(lm_block_q4_0) : sizeof(lm_block_q4_1);
                _mm_prefetch((const char *)w[j] + (size_t)b * bb + PF_DIST, _MM_HINT_T0);
            }
            const __m256i wv = load_wblock(w[j], b, kind, &d[j], &m[j]);
            p[j] = kind == QK_Q8_0 ? bdot_s(_mm256_sign_epi8(wv, wv), wv, xv) : bdot_u(wv, xv);
        }
        __m256i isum = hsum8_epi32(p);
        if (kind == QK_Q4_0)
            isum = _mm256_sub_epi32(isum, _mm256_set1_epi32(8 * x->qsum[b * LM_XQ_GROUP]));
        const __m256 dw = _mm256_cvtph_ps(_mm_setr_epi16((short)d[0], (short)d[1], (short)d[2], (short)d[3],
                                                         (short)d[4], (short)d[5], (short)d[6], (short)d[7]));
        const __m256 scale = _mm256_mul_ps(dw, _mm256_set1_ps(x->d[b * LM_XQ_GROUP]));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc);
        if (kind == QK_Q4_1) {
            const __m256 mw = _mm256_cvtph_ps(_mm_setr_epi16((short)m[0], (short)m[1], (short)m[2], (short)m[3],
                                                             (short)m[4], (short)m[5], (short)m[6], (short)m[7]));
            accm = _mm256_add_ps(accm, _mm256_mul_ps(mw, _mm256_set1_ps(x->s[b * LM_XQ_GROUP])));
        }
    }
    _mm256_storeu_ps(out, kind == QK_Q4_1 ? _mm256_add_ps(acc, accm) : acc);
}

/* Batch: 4 x rows (one scale group) against NR = 2*NG W rows, in NG
 * groups of 8 pairs; in group g, lane p holds x row p/2 with W row
 * 2g + p%2. */
INLINE void gemm_q(int k, const void *const *w, const lm_xtile *x, float *out, const int kind,
                   const int NG) {
    __m256 acc[4], accm[4];
    for (int g = 0; g < NG; g++) acc[g] = accm[g] = _mm256_setzero_ps();
    const __m256i rows_of_lanes = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
    for (int b = 0; b < k / LM_QK; b++) {
        __m256i wv[8], aw[8];
        uint16_t d[8], m[8] = {0};
#pragma GCC unroll 8
        for (int j = 0; j < 2 * NG; j++) {
            wv[j] = load_wblock(w[j], b, kind, &d[j], &m[j]);
            if (kind == QK_Q8_0) aw[j] = _mm256_sign_epi8(wv[j], wv[j]);
        }
        __m256i p[4][8];
#pragma GCC unroll 4
        for (int i = 0; i < LM_XQ_GROUP; i++) {
            const __m256i xv = _mm256_loadu_si256((const __m256i *)(x->q + (size_t)i * k + b * LM_QK));
#pragma GCC unroll 8
            for (int j = 0; j < 2 * NG; j++)
                p[j / 2][2 * i + j % 2] = kind == QK_Q8_0 ? bdot_s(aw[j], wv[j], xv) : bdot_u(wv[j], xv);
        }
        const __m256 dx = _mm256_permutevar8x32_ps(
            _mm256_castps128_ps256(_mm_loadu_ps(x->d + b * LM_XQ_GROUP)), rows_of_lanes);
        __m256i qs8 = _mm256_setzero_si256(); /* 8*qsum of each lane's x row (Q4_0) */
        if (kind == QK_Q4_0)
            qs8 = _mm256_slli_epi32(_mm256_permutevar8x32_epi32(
                _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(x->qsum + b * LM_XQ_GROUP))),
                rows_of_lanes), 3);
        __m256 sx = _mm256_setzero_ps();
        if (kind == QK_Q4_1)
            sx = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(x->s + b * LM_XQ_GROUP)),
                                          rows_of_lanes);
#pragma GCC unroll 4
        for (int g = 0; g < NG; g++) {
            __m256i isum = hsum8_epi32(p[g]);
            if (kind == QK_Q4_0) isum = _mm256_sub_epi32(isum, qs8);
            const __m256 dw = _mm256_cvtph_ps(_mm_set1_epi32((int)((uint32_t)d[2 * g] | (uint32_t)d[2 * g + 1] << 16)));
            acc[g] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dw, dx), acc[g]);
            if (kind == QK_Q4_1) {
                const __m256 mw = _mm256_cvtph_ps(_mm_set1_epi32((int)((uint32_t)m[2 * g] | (uint32_t)m[2 * g + 1] << 16)));
                accm[g] = _mm256_add_ps(accm[g], _mm256_mul_ps(mw, sx));
            }
        }
    }
    float t[4][8];
#pragma GCC unroll 4
    for (int g = 0; g < NG; g++)
        _mm256_storeu_ps(t[g], kind == QK_Q4_1 ? _mm256_add_ps(acc[g], accm[g]) : acc[g]);
    for (int i = 0; i < LM_XQ_GROUP; i++)
        for (int j = 0; j < 2 * NG; j++) out[i * 2 * NG + j] = t[j / 2][2 * i + j % 2];
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
    INLINE void NAME(int k, const void *const *w, const lm_xtile *x, float *out, const int MR,   \
                     const int NR) {                                                             \
        __m256 acc[LM_TILE_MAX_MR][LM_TILE_MAX_NR];                                              \
        _Pragma("GCC unroll 8") for (int i = 0; i < MR; i++)                                     \
            _Pragma("GCC unroll 8") for (int j = 0; j < NR; j++) acc[i][j] = _mm256_setzero_ps(); \
        const int k8 = k & ~7;                                                                   \
        for (int e = 0; e < k8; e += 8) {                                                        \
            __m256 wv[LM_TILE_MAX_NR];                                                           \
            _Pragma("GCC unroll 8") for (int j = 0; j < NR; j++) wv[j] = LOAD(w[j], e);          \
            _Pragma("GCC unroll 8") for (int i = 0; i < MR; i++) {                               \
                const __m256 xv = _mm256_loadu_ps(x->f[i] + e);                                   \
                _Pragma("GCC unroll 8") for (int j = 0; j < NR; j++)                             \
                    acc[i][j] = _mm256_fmadd_ps(wv[j], xv, acc[i][j]);                           \
            }                                                                                    \
        }                                                                                        \
        _Pragma("GCC unroll 8") for (int i = 0; i < MR; i++)                                     \
            _Pragma("GCC unroll 8") for (int j = 0; j < NR; j++) {                               \
                float t = hsum_ps(acc[i][j]);                                                    \
                for (int e = k8; e < k; e++) t += ELEM(w[j], e) * x->f[i][e];                     \
                out[i * NR + j] = t;                                                             \
            }                                                                                    \
    }

DEFINE_FLOAT_TILE(tile_f32, load_f32, elem_f32)
DEFINE_FLOAT_TILE(tile_f16, load_f16, elem_f16)
DEFINE_FLOAT_TILE(tile_bf16, load_bf16, elem_bf16)

/* ---- exp, softmax, swiglu ------------------------------------------- */

/* e^x for x <= 88.7 (larger x is clamped there; softmax and silu never
 * need more): x = n*ln2 + r with |r| <= ln2/2, e^r by its degree-6 Taylor
 * polynomial (truncation < 1.3e-7 relative), times 2^n built in the
 * exponent bits. Below -87.3, where 2^n leaves the normal range, 0. */
INLINE __m256 exp_ps(__m256 x) {
    const __m256 hi = _mm256_set1_ps(88.7f), lo = _mm256_set1_ps(-87.3f);
    const __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_max_ps(_mm256_min_ps(x, hi), lo);
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    /* ln2 split in two so n*ln2_hi is exact */
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145752f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.42860677e-6f), r);
    __m256 p = _mm256_set1_ps(1.0f / 720);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    /* n in [-126, 128]: 2^n as (n + 127) << 23; n = 128 (x near 88.7) is
     * split as 2^127 * 2 to stay finite */
    const __m256i ni = _mm256_cvtps_epi32(n);
    const __m256i big = _mm256_cmpgt_epi32(ni, _mm256_set1_epi32(127));
    const __m256i e = _mm256_sub_epi32(ni, _mm256_and_si256(big, _mm256_set1_epi32(1)));
    const __m256 two_n = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(e, _mm256_set1_epi32(127)), 23));
    p = _mm256_mul_ps(p, two_n);
    p = _mm256_blendv_ps(p, _mm256_add_ps(p, p), _mm256_castsi256_ps(big));
    return _mm256_andnot_ps(under, p);
}

static AVX2 void softmax(float *x, int n) {
    if (n <= 0) return;
    __m256 mv = _mm256_set1_ps(-INFINITY);
    int i = 0;
    for (; i + 8 <= n; i += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(x + i));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mv), _mm256_extractf128_ps(mv, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float max = _mm_cvtss_f32(m4);
    for (; i < n; i++) max = x[i] > max ? x[i] : max;
    /* the denominator in double, as the scalar version and ggml sum it */
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    const __m256 mb = _mm256_set1_ps(max);
    for (i = 0; i + 8 <= n; i += 8) {
        const __m256 e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), mb));
        _mm256_storeu_ps(x + i, e);
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    double sd[4];
    _mm256_storeu_pd(sd, _mm256_add_pd(s0, s1));
    double sum = (sd[0] + sd[1]) + (sd[2] + sd[3]);
    for (; i < n; i++) {
        float t[8] = {x[i] - max};
        _mm256_storeu_ps(t, exp_ps(_mm256_loadu_ps(t)));
        x[i] = t[0];
        sum += t[0];
    }
    const __m256 inv = _mm256_set1_ps((float)(1.0 / sum));
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
    for (; i < n; i++) x[i] *= (float)(1.0 / sum);
}

/* silu(g)*u = g / (1 + e^-g) * u */
static AVX2 void swiglu(float *out, const float *gate, const float *up, int n) {
    int i = 0;
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    for (; i + 8 <= n; i += 8) {
        const __m256 g = _mm256_loadu_ps(gate + i);
        const __m256 e = exp_ps(_mm256_xor_ps(g, sign));
        const __m256 silu = _mm256_div_ps(g, _mm256_add_ps(one, e));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(silu, _mm256_loadu_ps(up + i)));
    }
    if (i < n) lm_swiglu_scalar(out + i, gate + i, up + i, n - i);
}

/* ---- attention ------------------------------------------------------ */

/* hd a multiple of 8: scores with 8-lane fma dot products, then the
 * weighted sum of V rows with the output held in registers, 64 floats
 * (8 vectors) of the head at a time. */
static AVX2 void attn_head(float *out, const float *q, const float *K, const float *V,
                           size_t kv_stride, int n_keys, int hd, float scale, float *s) {
    if (hd % 8) {
        lm_kernels_scalar.attn_head(out, q, K, V, kv_stride, n_keys, hd, scale, s);
        return;
    }
    for (int p = 0; p < n_keys; p++) {
        const float *k = K + (size_t)p * kv_stride;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        int i = 0;
        for (; i + 16 <= hd; i += 16) {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(k + i), a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), _mm256_loadu_ps(k + i + 8), a1);
        }
        if (i < hd) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(k + i), a0);
        s[p] = hsum_ps(_mm256_add_ps(a0, a1)) * scale;
    }
    softmax(s, n_keys);
    for (int c = 0; c < hd; c += 64) {
        const int nv = (hd - c) / 8 < 8 ? (hd - c) / 8 : 8;
        __m256 acc[8];
        for (int v = 0; v < 8; v++) acc[v] = _mm256_setzero_ps();
        if (nv == 8) {
            for (int p = 0; p < n_keys; p++) {
                const float *row = V + (size_t)p * kv_stride + c;
                const __m256 wp = _mm256_set1_ps(s[p]);
#pragma GCC unroll 8
                for (int v = 0; v < 8; v++) acc[v] = _mm256_fmadd_ps(wp, _mm256_loadu_ps(row + 8 * v), acc[v]);
            }
        } else {
            for (int p = 0; p < n_keys; p++) {
                const float *row = V + (size_t)p * kv_stride + c;
                const __m256 wp = _mm256_set1_ps(s[p]);
                for (int v = 0; v < nv; v++) acc[v] = _mm256_fmadd_ps(wp, _mm256_loadu_ps(row + 8 * v), acc[v]);
            }
        }
        for (int v = 0; v < nv; v++) _mm256_storeu_ps(out + c + 8 * v, acc[v]);
    }
}

/* ---- instantiations ------------------------------------------------- */

#define INSTANCE(NAME, BODY, MR, NR)                                                     \
    static AVX2 void NAME(int k, const void *const *w, const lm_xtile *x, float *out) { \
        BODY(k, w, x, out, MR, NR);                                                      \
    }
#define QINSTANCE(NAME, BODY, ...)                                                       \
    static AVX2 void NAME(int k, const void *const *w, const lm_xtile *x, float *out) { \
        BODY(k, w, x, out, __VA_ARGS__);                                                 \
    }
/* W rows per batch tile: 2 * Q_NG. 4 (a 4 x 8 tile, 32 pairs per block)
 * spends ~12% less CPU on a 512-token prompt than 2 (Q4_0 and Q8_0, Zen 3):
 * each W block unpacked serves more x rows' worth of pairs per hsum. */
#ifndef Q_NG
#define Q_NG 4
#endif

#define DEC_NR 4
#define F_MR 4
#define F_NR 3

INSTANCE(dec_f32, tile_f32, 1, DEC_NR)
INSTANCE(dec_f16, tile_f16, 1, DEC_NR)
INSTANCE(dec_bf16, tile_bf16, 1, DEC_NR)
INSTANCE(gemm_f32, tile_f32, F_MR, F_NR)
INSTANCE(gemm_f16, tile_f16, F_MR, F_NR)
INSTANCE(gemm_bf16, tile_bf16, F_MR, F_NR)
QINSTANCE(dec_q8_0, dec_q, QK_Q8_0)
QINSTANCE(dec_q4_0, dec_q, QK_Q4_0)
QINSTANCE(dec_q4_1, dec_q, QK_Q4_1)
QINSTANCE(gemm_q8_0, gemm_q, QK_Q8_0, Q_NG)
QINSTANCE(gemm_q4_0, gemm_q, QK_Q4_0, Q_NG)
QINSTANCE(gemm_q4_1, gemm_q, QK_Q4_1, Q_NG)

const lm_kernels lm_kernels_avx2 = {
    .name = "avx2",
    .quant_x = quant_x,
    .softmax = softmax,
    .swiglu = swiglu,
    .attn_head = attn_head,
    .dec = {
        [LM_WT_F32] = {dec_f32, 1, DEC_NR},   [LM_WT_F16] = {dec_f16, 1, DEC_NR},
        [LM_WT_BF16] = {dec_bf16, 1, DEC_NR}, [LM_WT_Q8_0] = {dec_q8_0, 1, 8},
        [LM_WT_Q4_0] = {dec_q4_0, 1, 8},      [LM_WT_Q4_1] = {dec_q4_1, 1, 8},
    },
    .gemm = {
        [LM_WT_F32] = {gemm_f32, F_MR, F_NR},   [LM_WT_F16] = {gemm_f16, F_MR, F_NR},
        [LM_WT_BF16] = {gemm_bf16, F_MR, F_NR}, [LM_WT_Q8_0] = {gemm_q8_0, LM_XQ_GROUP, 2 * Q_NG},
        [LM_WT_Q4_0] = {gemm_q4_0, LM_XQ_GROUP, 2 * Q_NG}, [LM_WT_Q4_1] = {gemm_q4_1, LM_XQ_GROUP, 2 * Q_NG},
    },
};

#endif
