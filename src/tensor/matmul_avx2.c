/* AVX2 + FMA + F16C kernel set (x86-64 since Haswell / Zen 1). Compiled
 * with per-function target attributes so the build needs no -march flag;
 * matmul.c only hands these out when the CPU reports the features.
 *
 * Every floating-point operation follows llama.cpp's AVX2 build in kind
 * and order (ggml's vec_dot, llamafile's tinyBLAS, ggml_v_expf, its
 * attention), so logits agree with it bit for bit: docs/ENGINE.md. Each dot
 * product runs the same operation sequence in every tile shape (see
 * kernels.h); only the number of them in flight differs. */
#include "tensor/kernels.h"
#include "tensor/ops.h"

#ifdef LM_HAVE_X86_KERNELS

#include <immintrin.h>
#include <math.h>
#include <string.h>

/* round to nearest even, no exceptions: a constant (clang wants one for _mm256_round_ps) */
#define LM_RND (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

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

AVX2 void lm_avx2_quant_x(const float *x, int k, int8_t *q, float *d, float *s, int32_t *qsum,
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
        __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v0, mul), LM_RND));
        __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v1, mul), LM_RND));
        __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v2, mul), LM_RND));
        __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v3, mul), LM_RND));
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
 * Each (x row, W row) dot product is computed exactly as ggml's AVX2
 * vec_dot_q8_0_q8_0 / vec_dot_q4_1_q8_1 and llamafile's tinyBLAS compute it,
 * so that our logits are llama.cpp's bit for bit: per block of 32, the
 * exact int32 sums of 4 adjacent byte products (maddubs + madd) form 8
 * lanes; acc = fma(d_w*d_x, lanes, acc) over the blocks in order; the 8
 * lanes are summed at the end (hsum_ps, ggml's order). Q4_1 adds
 * sum_b m_w*s_x, a scalar fma chain in block order, after the lane sum.
 * Any reduction order would do for speed; this one is llama.cpp's, whose
 * activation quantization turns every last-bit difference into a flipped
 * rounding that grows through the layers (see docs on logit parity). */

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

enum { QK_Q8_0, QK_Q4_0, QK_Q4_1 };

/* Block b of W row r for kind as signed bytes (Q8_0; Q4_0 recentred to
 * nib - 8) or raw nibbles 0..15 (Q4_1), and its f16 d (and m). */
INLINE __m256i load_wblock(const void *row, int b, int kind, uint16_t *d, uint16_t *m) {
    if (kind == QK_Q8_0) {
        const lm_block_q8_0 *blk = (const lm_block_q8_0 *)row + b;
        *d = blk->d;
        return _mm256_loadu_si256((const __m256i *)blk->q);
    }
    if (kind == QK_Q4_0) {
        const lm_block_q4_0 *blk = (const lm_block_q4_0 *)row + b;
        *d = blk->d;
        return _mm256_sub_epi8(unpack_nibbles(blk->q), _mm256_set1_epi8(8));
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

/* The f16 field at byte offset off of block b of 8 W rows, as 8 floats. */
INLINE __m256 load_half8(const void *const *w, int b, size_t bb, size_t off) {
    uint16_t h[8];
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++) memcpy(&h[j], (const char *)w[j] + (size_t)b * bb + off, 2);
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
}

/* Decode: one x row against 8 W rows, a row at a time so the 8
 * accumulators and the x block stay in registers. The 8 scales d_w*d_x of
 * a block are formed in one vector and broadcast from memory. */
INLINE void qdec(int k, const void *const *w, const lm_xtile *x, float *out, const int kind) {
    __m256 acc[8], sm = _mm256_setzero_ps();
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++) acc[j] = _mm256_setzero_ps();
    const size_t bb = kind == QK_Q8_0 ? sizeof(lm_block_q8_0)
                    : kind == QK_Q4_0 ? sizeof(lm_block_q4_0) : sizeof(lm_block_q4_1);
    for (int b = 0; b < k / LM_QK; b++) {
        const __m256i xv = _mm256_loadu_si256((const __m256i *)(x->q + b * LM_QK));
        const __m256 dx = _mm256_set1_ps(x->d[b * LM_XQ_GROUP]);
        float sc[8];
        _mm256_storeu_ps(sc, _mm256_mul_ps(load_half8(w, b, bb, 0), dx));
        if (kind == QK_Q4_1) /* lane j: fma(m_j, s_x, sm_j), each row's scalar chain */
            sm = _mm256_fmadd_ps(load_half8(w, b, bb, 2), _mm256_set1_ps(x->s[b * LM_XQ_GROUP]), sm);
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            _mm_prefetch((const char *)w[j] + (size_t)b * bb + PF_DIST, _MM_HINT_T0);
            __m256i p;
            if (kind == QK_Q4_1) {
                p = bdot_u(unpack_nibbles(((const lm_block_q4_1 *)w[j] + b)->q), xv);
            } else {
                uint16_t d;
                const __m256i wv = load_wblock(w[j], b, kind, &d, &d);
                /* |w| unsigned, as ggml: a -128 weight stays exact */
                p = bdot_s(_mm256_sign_epi8(wv, wv), wv, xv);
            }
            acc[j] = _mm256_fmadd_ps(_mm256_broadcast_ss(&sc[j]), _mm256_cvtepi32_ps(p), acc[j]);
        }
    }
    float m[8];
    _mm256_storeu_ps(m, sm);
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++) {
        const float t = hsum_ps(acc[j]);
        out[j] = kind == QK_Q4_1 ? t + m[j] : t;
    }
}

/* Batch: LM_XQ_GROUP x rows (x->d[b*LM_XQ_GROUP + i]) against NR W rows. */
INLINE void qtile(int k, const void *const *w, const lm_xtile *x, float *out, const int kind,
                  const int NR) {
    enum { MR = LM_XQ_GROUP };
    __m256 acc[MR][LM_TILE_MAX_NR];
    float sm[MR][LM_TILE_MAX_NR];
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (int j = 0; j < NR; j++) { acc[i][j] = _mm256_setzero_ps(); sm[i][j] = 0.0f; }
    for (int b = 0; b < k / LM_QK; b++) {
        __m256i wv[LM_TILE_MAX_NR], aw[LM_TILE_MAX_NR];
        float sc[LM_TILE_MAX_NR][MR], mw[LM_TILE_MAX_NR];
        const __m128 dx = _mm_loadu_ps(x->d + b * LM_XQ_GROUP);
#pragma GCC unroll 8
        for (int j = 0; j < NR; j++) {
            uint16_t d, m = 0;
            wv[j] = load_wblock(w[j], b, kind, &d, &m);
            if (kind != QK_Q4_1) aw[j] = _mm256_sign_epi8(wv[j], wv[j]);
            _mm_storeu_ps(sc[j], _mm_mul_ps(_mm_set1_ps(f16_to_f32(d)), dx));
            mw[j] = f16_to_f32(m);
        }
        /* one (x row, W row) pair; which loop runs outer only changes what
         * stays in registers: 2 W rows x 4 x rows fit with x rows outer,
         * 3 or 4 W rows need the W rows outer (x blocks reloaded from L1) */
#define QTILE_PAIR(i, j)                                                                        \
    do {                                                                                        \
        const __m256i xv = _mm256_loadu_si256((const __m256i *)(x->q + (size_t)(i) * k + b * LM_QK)); \
        const __m256i p = kind == QK_Q4_1 ? bdot_u(wv[j], xv) : bdot_s(aw[j], wv[j], xv);       \
        acc[i][j] = _mm256_fmadd_ps(_mm256_broadcast_ss(&sc[j][i]), _mm256_cvtepi32_ps(p), acc[i][j]); \
        if (kind == QK_Q4_1) sm[i][j] = fmaf(mw[j], x->s[b * LM_XQ_GROUP + (i)], sm[i][j]);    \
    } while (0)
        if (NR > 2) {
#pragma GCC unroll 8
            for (int j = 0; j < NR; j++)
#pragma GCC unroll 4
                for (int i = 0; i < MR; i++) QTILE_PAIR(i, j);
        } else {
#pragma GCC unroll 4
            for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
                for (int j = 0; j < NR; j++) QTILE_PAIR(i, j);
        }
#undef QTILE_PAIR
    }
#pragma GCC unroll 4
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (int j = 0; j < NR; j++) {
            const float t = hsum_ps(acc[i][j]);
            out[i * NR + j] = kind == QK_Q4_1 ? t + sm[i][j] : t;
        }
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

/* e^x as ggml's AVX2 ggml_v_expf computes it (the scheme of ARM's
 * optimized-routines vector expf), bit for bit, so softmax and SiLU agree
 * with llama.cpp's: x = n*ln2 + b with n = round(x/ln2) by the 1.5*2^23
 * shift trick and ln2 in two parts, e^b - 1 by a degree-5 polynomial in
 * Estrin form, 2^n added into the exponent bits. |n| > 126 (results near
 * the ends of the float range) takes a slower path that splits the scale
 * in two; |n| > 192 saturates to 0 or inf. Max error about 1.5 ulp. */
INLINE __m256 exp_ps(__m256 x) {
    const __m256 shift = _mm256_set1_ps(0x1.8p23f);
    const __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), shift);
    const __m256 n = _mm256_sub_ps(z, shift);
    const __m256 b = _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.7f7d1cp-20f),
                                      _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.62e4p-1f), x));
    const __m256i e = _mm256_slli_epi32(_mm256_castps_si256(z), 23);
    const __m256 k = _mm256_castsi256_ps(_mm256_add_epi32(e, _mm256_castps_si256(_mm256_set1_ps(1.0f))));
    const __m256 absn = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), n);
    const __m256 big = _mm256_cmp_ps(absn, _mm256_set1_ps(126.0f), _CMP_GT_OQ);
    const __m256 u = _mm256_mul_ps(b, b);
    const __m256 hi = _mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f));
    const __m256 lo = _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b, _mm256_set1_ps(0x1.fffdb6p-2f));
    const __m256 j = _mm256_fmadd_ps(_mm256_fmadd_ps(hi, u, lo), u,
                                     _mm256_mul_ps(_mm256_set1_ps(0x1.ffffecp-1f), b));
    if (!_mm256_movemask_ps(big)) return _mm256_fmadd_ps(j, k, k);
    /* scale = s1 * s2 with both factors representable */
    const __m256i g = _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ)),
                                       _mm256_set1_epi32((int)0x82000000u));
    const __m256 s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f000000)));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
    const __m256 huge = _mm256_cmp_ps(absn, _mm256_set1_ps(192.0f), _CMP_GT_OQ);
    const __m256 split = _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1);
    const __m256 normal = _mm256_fmadd_ps(k, j, k);
    return _mm256_or_ps(_mm256_and_ps(huge, _mm256_mul_ps(s1, s1)),
                        _mm256_andnot_ps(huge, _mm256_or_ps(_mm256_and_ps(big, split),
                                                            _mm256_andnot_ps(big, normal))));
}

/* Sum of 8 lanes into a double, in ggml's order (vec_soft_max_f32). */
INLINE double hsum_pd(__m256 v) { return (double)hsum_ps(v); }

static AVX2 void softmax(float *x, int n) {
    if (n <= 0) return;
    float max = -INFINITY;
    for (int i = 0; i < n; i++) max = x[i] > max ? x[i] : max;
    /* ggml_vec_soft_max_f32: groups of 8 through exp_ps, each group's sum
     * added to a double; the tail through expf */
    double sum = 0.0;
    int i = 0;
    const __m256 mb = _mm256_set1_ps(max);
    for (; i + 8 <= n; i += 8) {
        const __m256 e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), mb));
        _mm256_storeu_ps(x + i, e);
        sum += hsum_pd(e);
    }
    for (; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += (double)x[i];
    }
    const float inv = (float)(1.0 / sum);
    for (i = 0; i < n; i++) x[i] *= inv;
}

/* silu(g)*u = g / (1 + e^-g) * u, as ggml_vec_swiglu_f32 */
static AVX2 void swiglu(float *out, const float *gate, const float *up, int n) {
    int i = 0;
    const __m256 one = _mm256_set1_ps(1.0f);
    for (; i + 8 <= n; i += 8) {
        const __m256 g = _mm256_loadu_ps(gate + i);
        const __m256 e = exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), g));
        const __m256 silu = _mm256_div_ps(g, _mm256_add_ps(one, e));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(silu, _mm256_loadu_ps(up + i)));
    }
    if (i < n) lm_swiglu_scalar(out + i, gate + i, up + i, n - i);
}

/* ---- attention ------------------------------------------------------
 *
 * llama.cpp (no flash attention, f32 cache) computes a head's scores with
 * ggml_vec_dot_f32, the softmax over its cache window padded to 256 keys
 * with masked keys at -inf, and the weighted sum of V with tinyBLAS when
 * the batch has several tokens, ggml_vec_dot_f32 when it has one. We
 * follow the same orders; the masked keys contribute exact zeros, so only
 * the key-group boundaries (multiples of 8 and 32 from key 0) matter, not
 * the padding. */

/* ggml_vec_dot_f32: 4 accumulators over steps of 32, reduced pairwise,
 * then the leftovers as GCC built them: rounded products added one by one
 * in runs of 8 and 4, the last 3 or fewer fused. */
/* ggml's float dot products over their whole steps of 32: 4 accumulators,
 * s_j += w[i+8j..] * x[i+8j..] fused, w converted from its type (wt). */
INLINE void dot_acc4(const void *w, const float *x, int np, const int wt, __m256 *s) {
    s[0] = s[1] = s[2] = s[3] = _mm256_setzero_ps();
    for (int i = 0; i < np; i += 32)
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            const int e = i + 8 * j;
            const __m256 wv = wt == LM_WT_F32 ? load_f32(w, e) : wt == LM_WT_F16 ? load_f16(w, e)
                                                                   : load_bf16(w, e);
            s[j] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + e), s[j]);
        }
}

/* (s0+s2)+(s1+s3), lanes l and l+4, then two hadd levels: ggml's
 * GGML_F32x8_REDUCE (vec_dot_f32 and vec_dot_f16). */
INLINE float reduce_hadd(const __m256 *s) {
    const __m256 a = _mm256_add_ps(_mm256_add_ps(s[0], s[2]), _mm256_add_ps(s[1], s[3]));
    __m128 t = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    t = _mm_hadd_ps(t, t);
    t = _mm_hadd_ps(t, t);
    return _mm_cvtss_f32(t);
}

INLINE float dot_f32_ggml(const void *wv, const float *y, int n) {
    const float *x = wv;
    __m256 s[4];
    const int np = n & ~31;
    dot_acc4(x, y, np, LM_WT_F32, s);
    float sum = reduce_hadd(s);
    int i = np;
    for (; n - i >= 8; i += 8)
        for (int e = 0; e < 8; e++) sum += x[i + e] * y[i + e];
    if (n - i >= 4)
        for (int e = 0; e < 4; e++, i++) sum += x[i] * y[i];
    for (; i < n; i++) sum = fmaf(x[i], y[i], sum);
    return sum;
}

/* ggml_vec_dot_f16 on x already rounded to f16: dot_f32_ggml's structure
 * on converted halves, the leftovers summed in double. */
INLINE float dot_f16_ggml(const void *w, const float *x, int n) {
    __m256 s[4];
    const int np = n & ~31;
    dot_acc4(w, x, np, LM_WT_F16, s);
    double sum = reduce_hadd(s);
    for (int i = np; i < n; i++) sum += (double)(f16_to_f32(((const uint16_t *)w)[i]) * x[i]);
    return (float)sum;
}

/* ggml_vec_dot_bf16 on x already rounded to bf16: its mul+add (which GCC
 * fuses into fma) in 4 accumulators, (c1+c3)+(c2+c4) in hsum_float_8
 * order, the leftovers summed in double. */
INLINE float dot_bf16_ggml(const void *w, const float *x, int n) {
    __m256 s[4];
    const int np = n & ~31;
    dot_acc4(w, x, np, LM_WT_BF16, s);
    double sum = hsum_ps(_mm256_add_ps(_mm256_add_ps(s[0], s[2]), _mm256_add_ps(s[1], s[3])));
    for (int i = np; i < n; i++) sum += (double)(lm_bf16_to_f32(((const uint16_t *)w)[i]) * x[i]);
    return (float)sum;
}

/* 8 consecutive cache values at element offset off: f32, or f16 widened
 * (exact). f16 is a compile-time constant in every caller. */
INLINE __m256 load_kv(const void *base, size_t off, const int f16) {
    if (f16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)base + off)));
    return _mm256_loadu_ps((const float *)base + off);
}

/* x rounded to the nearest f16, back as f32 (what llama.cpp's
 * ggml_cpu_fp32_to_fp16 stores and the f16 dot products widen again) */
INLINE __m256 round_f16_ps(__m256 x) {
    return _mm256_cvtph_ps(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

/* Scores of 8 keys at once (keys p..p+7) for HG query heads sharing the KV
 * head, keys in lanes (Kt[i*stride + p]), each K vector loaded once for all
 * HG heads. Each lane runs ggml_vec_dot_f32's exact sequence for its key --
 * acc_j for dims 8j+l (mod 32) fused over the steps of 32,
 * (acc0+acc2)+(acc1+acc3), then lane l with l+4, then the two hadd levels
 * -- so for a head_dim that is a multiple of 32 the result is
 * dot_f32_ggml's, bit for bit. With an f16 cache (q already rounded to f16)
 * it is ggml_vec_dot_f16's, which runs the same sequence on widened halves.
 * res[h] = the 8 scores of head h (q of head h at q + h*hd). */
INLINE void scores8(const float *q, int hd, const void *Kt, size_t p, size_t stride, __m256 *res,
                    const int HG, const int f16) {
    __m256 t[3][8];
#pragma GCC unroll 8
    for (int l = 0; l < 8; l++) {
        __m256 a[3][4];
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            const int i = 8 * j + l;
            __m256 kv = load_kv(Kt, (size_t)i * stride + p, f16);
#pragma GCC unroll 3
            for (int h = 0; h < HG; h++) a[h][j] = _mm256_mul_ps(kv, _mm256_broadcast_ss(q + h * hd + i));
            for (int r = 32; r < hd; r += 32) {
                kv = load_kv(Kt, (size_t)(i + r) * stride + p, f16);
#pragma GCC unroll 3
                for (int h = 0; h < HG; h++)
                    a[h][j] = _mm256_fmadd_ps(kv, _mm256_broadcast_ss(q + h * hd + i + r), a[h][j]);
            }
        }
#pragma GCC unroll 3
        for (int h = 0; h < HG; h++)
            t[h][l] = _mm256_add_ps(_mm256_add_ps(a[h][0], a[h][2]), _mm256_add_ps(a[h][1], a[h][3]));
    }
#pragma GCC unroll 3
    for (int h = 0; h < HG; h++) {
        const __m256 u0 = _mm256_add_ps(t[h][0], t[h][4]), u1 = _mm256_add_ps(t[h][1], t[h][5]);
        const __m256 u2 = _mm256_add_ps(t[h][2], t[h][6]), u3 = _mm256_add_ps(t[h][3], t[h][7]);
        res[h] = _mm256_add_ps(_mm256_add_ps(u0, u1), _mm256_add_ps(u2, u3));
    }
}

/* Scores of keys p..p+7 in tinyBLAS's order, what llama.cpp computes for a
 * batch of several tokens over an f16 cache (q rounded to f16 and
 * contiguous then, so its matmul goes to tinyBLAS): per key one 8-lane
 * accumulator, lane l fused over dims l, l+8, l+16, ..., then hsum's
 * (l + l+4), (0+2)+(1+3). Lanes here are keys: a[l] holds lane l of 8
 * keys. hd a multiple of 8. A head at a time keeps the 8 accumulators in
 * registers (K rows come again from L1 for the next head). */
INLINE void scores8_tb(const float *q, int hd, const void *Kt, size_t p, size_t stride,
                       __m256 *res, const int HG) {
#pragma GCC unroll 3
    for (int h = 0; h < HG; h++) {
        __m256 a[8];
#pragma GCC unroll 8
        for (int l = 0; l < 8; l++) a[l] = _mm256_setzero_ps();
        for (int g = 0; g < hd; g += 8)
#pragma GCC unroll 8
            for (int l = 0; l < 8; l++)
                a[l] = _mm256_fmadd_ps(load_kv(Kt, (size_t)(g + l) * stride + p, 1),
                                       _mm256_broadcast_ss(q + h * hd + g + l), a[l]);
        const __m256 u0 = _mm256_add_ps(a[0], a[4]), u1 = _mm256_add_ps(a[1], a[5]);
        const __m256 u2 = _mm256_add_ps(a[2], a[6]), u3 = _mm256_add_ps(a[3], a[7]);
        res[h] = _mm256_add_ps(_mm256_add_ps(u0, u2), _mm256_add_ps(u1, u3));
    }
}

/* Softmax in place of one head's scores s[n_keys] (scaled), as ggml's
 * soft_max: groups of 8 from key 0 with the masked tail at -inf, each
 * group's sum added to a double; zeros up to the next multiple of 32.
 * With an f16 cache the weights are then rounded to f16, as llama.cpp
 * converts them for the f16 matmul with V. */
INLINE void attn_softmax(float *s, int n_keys, const int f16) {
    const int n8 = (n_keys + 7) & ~7, n32 = (n_keys + 31) & ~31;
    float max = -INFINITY;
    for (int p = 0; p < n_keys; p++) max = s[p] > max ? s[p] : max;
    for (int p = n_keys; p < n8; p++) s[p] = -INFINITY;
    double sum = 0.0;
    const __m256 mb = _mm256_set1_ps(max);
    for (int p = 0; p < n8; p += 8) {
        const __m256 e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(s + p), mb));
        _mm256_storeu_ps(s + p, e);
        sum += hsum_pd(e);
    }
    for (int p = n8; p < n32; p++) s[p] = 0.0f;
    const __m256 inv = _mm256_set1_ps((float)(1.0 / sum));
    for (int p = 0; p < n8; p += 8) {
        const __m256 w = _mm256_mul_ps(_mm256_loadu_ps(s + p), inv);
        _mm256_storeu_ps(s + p, f16 ? round_f16_ps(w) : w);
    }
}

/* Weights of HG heads (s + h*sstride) over n_keys keys. q is rounded to
 * f16 already when f16. */
INLINE void attn_weights(const float *q, int hd, const void *Kt, size_t stride, int n_keys,
                         float scale, float *s, size_t sstride, int single, const int HG,
                         const int f16) {
    const int n8 = (n_keys + 7) & ~7;
    const __m256 sc = _mm256_set1_ps(scale);
    if (f16 && !single) {
        for (int p = 0; p < n8; p += 8) {
            __m256 r[3];
            scores8_tb(q, hd, Kt, (size_t)p, stride, r, HG);
#pragma GCC unroll 3
            for (int h = 0; h < HG; h++) _mm256_storeu_ps(s + h * sstride + p, _mm256_mul_ps(r[h], sc));
        }
    } else if (hd % 32 == 0) {
        for (int p = 0; p < n8; p += 8) {
            __m256 r[3];
            scores8(q, hd, Kt, (size_t)p, stride, r, HG, f16);
#pragma GCC unroll 3
            for (int h = 0; h < HG; h++) _mm256_storeu_ps(s + h * sstride + p, _mm256_mul_ps(r[h], sc));
        }
    } else if (f16) {
        uint16_t k[LM_ATTN_MAX_HD];
        for (int p = 0; p < n_keys; p++) {
            for (int i = 0; i < hd; i++) k[i] = ((const uint16_t *)Kt)[(size_t)i * stride + p];
            for (int h = 0; h < HG; h++) s[h * sstride + p] = dot_f16_ggml(k, q + h * hd, hd) * scale;
        }
    } else {
        float k[LM_ATTN_MAX_HD];
        for (int p = 0; p < n_keys; p++) {
            for (int i = 0; i < hd; i++) k[i] = ((const float *)Kt)[(size_t)i * stride + p];
            for (int h = 0; h < HG; h++) s[h * sstride + p] = dot_f32_ggml(k, q + h * hd, hd) * scale;
        }
    }
    for (int h = 0; h < HG; h++) attn_softmax(s + h * sstride, n_keys, f16);
}

/* tinyBLAS order for a batch: per output one 8-lane accumulator over
 * groups of 8 keys, hsum at the end. 4 dims x HG heads at a time, each V
 * vector loaded once for the HG heads. */
INLINE void attn_values(float *out, int hd, const void *Vt, size_t stride, int n_keys,
                        const float *s, size_t sstride, const int HG, const int f16) {
    const int n8 = (n_keys + 7) & ~7;
    for (int i = 0; i < hd; i += 4) {
        __m256 a[3][4];
#pragma GCC unroll 3
        for (int h = 0; h < HG; h++)
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++) a[h][r] = _mm256_setzero_ps();
        for (int p = 0; p < n8; p += 8) {
            __m256 w[3];
#pragma GCC unroll 3
            for (int h = 0; h < HG; h++) w[h] = _mm256_loadu_ps(s + h * sstride + p);
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++) {
                const __m256 v = load_kv(Vt, (size_t)(i + r) * stride + (size_t)p, f16);
#pragma GCC unroll 3
                for (int h = 0; h < HG; h++) a[h][r] = _mm256_fmadd_ps(v, w[h], a[h][r]);
            }
        }
#pragma GCC unroll 3
        for (int h = 0; h < HG; h++)
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++) out[h * hd + i + r] = hsum_ps(a[h][r]);
    }
}

INLINE void attn_group(float *out, const float *q, const void *Kt, const void *Vt,
                       size_t stride, int n_keys, int hd, float scale, int single, float *s,
                       const int HG, const int f16) {
    const size_t sstride = (size_t)((n_keys + 31) & ~31);
    float qr[3 * LM_ATTN_MAX_HD];
    if (f16) {
        /* llama.cpp converts q to f16 for the matmul with the f16 K cache */
        for (int e = 0; e < HG * hd; e += 8) _mm256_storeu_ps(qr + e, round_f16_ps(_mm256_loadu_ps(q + e)));
        q = qr;
    }
    attn_weights(q, hd, Kt, stride, n_keys, scale, s, sstride, single, HG, f16);
    if (single) {
        /* ggml_vec_dot_f32 / _f16 over the weights, whole groups of 32 */
        for (int h = 0; h < HG; h++)
            for (int i = 0; i < hd; i++)
                out[h * hd + i] = f16 ? dot_f16_ggml((const uint16_t *)Vt + (size_t)i * stride,
                                                     s + h * sstride, (int)sstride)
                                      : dot_f32_ggml((const float *)Vt + (size_t)i * stride,
                                                     s + h * sstride, (int)sstride);
        return;
    }
    attn_values(out, hd, Vt, stride, n_keys, s, sstride, HG, f16);
}

/* One group of up to 3 query heads, the kv type a constant inside. */
#define ATTN_GROUP_FOR(F16)                                                                      \
    do {                                                                                         \
        if (g == 3) attn_group(o, qh, Kt, Vt, stride, n_keys, hd, scale, single, sc, 3, F16);   \
        else if (g == 2) attn_group(o, qh, Kt, Vt, stride, n_keys, hd, scale, single, sc, 2, F16); \
        else attn_group(o, qh, Kt, Vt, stride, n_keys, hd, scale, single, sc, 1, F16);          \
    } while (0)

/* hd a multiple of 8 (4 for the value loop) and at most LM_ATTN_MAX_HD;
 * the query heads go through in threes (the register budget), which
 * changes no result. */
static AVX2 void attn_heads(float *out, const float *q, int n_q, const void *Kt,
                            const void *Vt, lm_dtype kv_type, size_t stride, int n_keys, int hd,
                            float scale, int single, float *s) {
    if (hd % 8 || hd > LM_ATTN_MAX_HD) {
        lm_kernels_scalar.attn_heads(out, q, n_q, Kt, Vt, kv_type, stride, n_keys, hd, scale,
                                     single, s);
        return;
    }
    const size_t sstride = (size_t)((n_keys + 31) & ~31);
    for (int h = 0; h < n_q;) {
        const int g = n_q - h >= 3 ? 3 : n_q - h;
        float *o = out + (size_t)h * hd, *sc = s + (size_t)h * sstride;
        const float *qh = q + (size_t)h * hd;
        if (kv_type == LM_F16) ATTN_GROUP_FOR(1);
        else ATTN_GROUP_FOR(0);
        h += g;
    }
}
#undef ATTN_GROUP_FOR

/* ---- instantiations ------------------------------------------------- */

#define INSTANCE(NAME, BODY, MR, NR)                                                     \
    static AVX2 void NAME(int k, const void *const *w, const lm_xtile *x, float *out) { \
        BODY(k, w, x, out, MR, NR);                                                      \
    }
#define QINSTANCE(NAME, BODY, ...)                                                       \
    static AVX2 void NAME(int k, const void *const *w, const lm_xtile *x, float *out) { \
        BODY(k, w, x, out, __VA_ARGS__);                                                 \
    }
/* W rows per batch tile (4 x rows each). Q8_0/Q4_0 with 4 W rows ran ~7%
 * faster than with 2 on Zen 3 (the x blocks are reused 4 times, the
 * accumulators partly spill to L1); 6 and 8 ran ~20% slower. Q4_1, whose
 * m*s chains add scalar work per pair, is no faster at 4 than at 2. */
#define Q_NR_S 4
#define Q_NR_U 2

#define DEC_NR 4
#define F_MR 4
#define F_NR 3

/* Float weights as llama.cpp multiplies them (F16/BF16 on x rounded to
 * their type by the driver, f16_x/bf16_x): ggml's vec_dot for a single
 * token, tinyBLAS (one 8-lane fma accumulator per output, the float tile)
 * for a batch when k is a multiple of 8, the vec_dot otherwise. */
#define DEFINE_FLOAT_GGML(T)                                                                     \
    static AVX2 void dec_##T(int k, const void *const *w, const lm_xtile *x, float *out) {      \
        for (int j = 0; j < DEC_NR; j++) out[j] = dot_##T##_ggml(w[j], x->f[0], k);             \
    }                                                                                            \
    static AVX2 void gemm_##T(int k, const void *const *w, const lm_xtile *x, float *out) {     \
        if (k % 8 == 0) {                                                                        \
            tile_##T(k, w, x, out, F_MR, F_NR);                                                  \
            return;                                                                              \
        }                                                                                        \
        for (int i = 0; i < F_MR; i++)                                                           \
            for (int j = 0; j < F_NR; j++) out[i * F_NR + j] = dot_##T##_ggml(w[j], x->f[i], k); \
    }
DEFINE_FLOAT_GGML(f32)
DEFINE_FLOAT_GGML(f16)
DEFINE_FLOAT_GGML(bf16)
QINSTANCE(dec_q8_0, qdec, QK_Q8_0)
QINSTANCE(dec_q4_0, qdec, QK_Q4_0)
QINSTANCE(dec_q4_1, qdec, QK_Q4_1)
QINSTANCE(gemm_q8_0, qtile, QK_Q8_0, Q_NR_S)
QINSTANCE(gemm_q4_0, qtile, QK_Q4_0, Q_NR_S)
QINSTANCE(gemm_q4_1, qtile, QK_Q4_1, Q_NR_U)

const lm_kernels lm_kernels_avx2 = {
    .name = "avx2",
    .quant_x = lm_avx2_quant_x,
    .f16_x = 1,
    .bf16_x = 1,
    .softmax = softmax,
    .swiglu = swiglu,
    .attn_heads = attn_heads,
    .dec = {
        [LM_WT_F32] = {dec_f32, 1, DEC_NR},   [LM_WT_F16] = {dec_f16, 1, DEC_NR},
        [LM_WT_BF16] = {dec_bf16, 1, DEC_NR}, [LM_WT_Q8_0] = {dec_q8_0, 1, 8},
        [LM_WT_Q4_0] = {dec_q4_0, 1, 8},      [LM_WT_Q4_1] = {dec_q4_1, 1, 8},
    },
    .gemm = {
        [LM_WT_F32] = {gemm_f32, F_MR, F_NR},   [LM_WT_F16] = {gemm_f16, F_MR, F_NR},
        [LM_WT_BF16] = {gemm_bf16, F_MR, F_NR}, [LM_WT_Q8_0] = {gemm_q8_0, LM_XQ_GROUP, Q_NR_S},
        [LM_WT_Q4_0] = {gemm_q4_0, LM_XQ_GROUP, Q_NR_S}, [LM_WT_Q4_1] = {gemm_q4_1, LM_XQ_GROUP, Q_NR_U},
    },
};

#endif
