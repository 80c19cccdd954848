/* Portable kernel set: the reference the SIMD sets are tested against, and
 * what runs on CPUs without AVX2. Each dot product is a plain loop; tiles
 * just loop over their rows, so every tile size gives the same numbers. */
#include <math.h>
#include <string.h>

#include "tensor/kernels.h"
#include "tensor/ops.h"

float lm_round_f16(float f) { return lm_f16_to_f32(lm_f32_to_f16(f)); }

/* Round to nearest even, saturating, NaN -> 0 (the cast alone would be
 * undefined behaviour for values out of range). */
static inline int8_t q8_rne(float v) {
    if (!(v == v)) return 0;
    if (v >= 127.0f) return 127;
    if (v <= -128.0f) return -128;
    return (int8_t)nearbyintf(v);
}

static void quant_x(const float *x, int k, int8_t *q, float *d, float *s, int32_t *qsum,
                    int stride) {
    for (int b = 0; b < k / LM_QK; b++, x += LM_QK, q += LM_QK) {
        float amax = 0.0f;
        for (int j = 0; j < LM_QK; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float db = amax / 127.0f;
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        int sum = 0;
        for (int j = 0; j < LM_QK; j++) {
            const float v = x[j] * id;
            q[j] = q8_rne(v);
            sum += q[j];
        }
        d[(size_t)b * stride] = lm_round_f16(db);
        if (s) {
            const float sb = (float)sum * db;
            s[(size_t)b * stride] = lm_round_f16(sb);
        }
        if (qsum) qsum[(size_t)b * stride] = sum;
    }
}

/* ---- dot products, one x row with one W row ------------------------- */

static float dot_f32(int k, const float *w, const float *x) {
    float acc = 0.0f;
    for (int i = 0; i < k; i++) acc += w[i] * x[i];
    return acc;
}

static float dot_f16(int k, const uint16_t *w, const float *x) {
    float acc = 0.0f;
    for (int i = 0; i < k; i++) acc += lm_f16_to_f32(w[i]) * x[i];
    return acc;
}

static float dot_bf16(int k, const uint16_t *w, const float *x) {
    float acc = 0.0f;
    for (int i = 0; i < k; i++) acc += lm_bf16_to_f32(w[i]) * x[i];
    return acc;
}

static float dot_q8_0(int k, const lm_block_q8_0 *w, const int8_t *q, const float *d, const float *s) {
    (void)s;
    float acc = 0.0f;
    for (int b = 0; b < k / LM_QK; b++) {
        const int8_t *xq = q + b * LM_QK;
        int isum = 0;
        for (int j = 0; j < LM_QK; j++) isum += w[b].q[j] * xq[j];
        const float scale = lm_f16_to_f32(w[b].d) * d[b * LM_XQ_GROUP];
        acc += (float)isum * scale;
    }
    return acc;
}

static float dot_q4_0(int k, const lm_block_q4_0 *w, const int8_t *q, const float *d, const float *s) {
    (void)s;
    float acc = 0.0f;
    for (int b = 0; b < k / LM_QK; b++) {
        const int8_t *xq = q + b * LM_QK;
        int isum = 0;
        for (int j = 0; j < LM_QK / 2; j++) {
            isum += ((w[b].q[j] & 0x0f) - 8) * xq[j];
            isum += ((w[b].q[j] >> 4) - 8) * xq[j + LM_QK / 2];
        }
        const float scale = lm_f16_to_f32(w[b].d) * d[b * LM_XQ_GROUP];
        acc += (float)isum * scale;
    }
    return acc;
}

/* sum_j (nib_j*dw + mw) * q_j*dx = isum*dw*dx + mw*(dx*sum q): the second
 * term is why Q8_1 carries s. */
static float dot_q4_1(int k, const lm_block_q4_1 *w, const int8_t *q, const float *d, const float *s) {
    float acc = 0.0f, accm = 0.0f;
    for (int b = 0; b < k / LM_QK; b++) {
        const int8_t *xq = q + b * LM_QK;
        int isum = 0;
        for (int j = 0; j < LM_QK / 2; j++) {
            isum += (w[b].q[j] & 0x0f) * xq[j];
            isum += (w[b].q[j] >> 4) * xq[j + LM_QK / 2];
        }
        const float scale = lm_f16_to_f32(w[b].d) * d[b * LM_XQ_GROUP];
        acc += (float)isum * scale;
        accm += lm_f16_to_f32(w[b].m) * s[b * LM_XQ_GROUP];
    }
    return acc + accm;
}

/* ---- attention ------------------------------------------------------ */

/* Element p of a cache row: f32, or f16 widened (exact). */
static inline float kv_at(const void *row, int f16, size_t p) {
    return f16 ? lm_f16_to_f32(((const uint16_t *)row)[p]) : ((const float *)row)[p];
}

/* Plain loop order. With an f16 cache q and the weights are rounded to f16
 * first, as llama.cpp rounds them, so this set computes the same products
 * as the SIMD one and only sums them in another order. */
static void attn_head(float *out, const float *q, const void *Kt, const void *Vt, int f16,
                      size_t stride, int n_keys, int hd, float scale, float *s) {
    const size_t es = f16 ? 2 : 4;
    /* each score sums over i in order; i outer reads the transposed rows in order */
    for (int p = 0; p < n_keys; p++) s[p] = 0.0f;
    for (int i = 0; i < hd; i++) {
        const float qi = f16 ? lm_round_f16(q[i]) : q[i];
        const void *k = (const char *)Kt + (size_t)i * stride * es;
        for (int p = 0; p < n_keys; p++) s[p] += qi * kv_at(k, f16, (size_t)p);
    }
    for (int p = 0; p < n_keys; p++) s[p] *= scale;
    lm_softmax_scalar(s, n_keys);
    if (f16)
        for (int p = 0; p < n_keys; p++) s[p] = lm_round_f16(s[p]);
    for (int i = 0; i < hd; i++) {
        const void *v = (const char *)Vt + (size_t)i * stride * es;
        float acc = 0.0f;
        for (int p = 0; p < n_keys; p++) acc += s[p] * kv_at(v, f16, (size_t)p);
        out[i] = acc;
    }
}

static void attn_heads(float *out, const float *q, int n_q, const void *Kt, const void *Vt,
                       lm_dtype kv_type, size_t stride, int n_keys, int hd, float scale,
                       int single, float *s) {
    (void)single;
    size_t n32 = (size_t)(n_keys + LM_ATTN_PAD - 1) / LM_ATTN_PAD * LM_ATTN_PAD;
    for (int h = 0; h < n_q; h++)
        attn_head(out + (size_t)h * hd, q + (size_t)h * hd, Kt, Vt, kv_type == LM_F16, stride,
                  n_keys, hd, scale, s + (size_t)h * n32);
}

#define QROW(i) x->q + (size_t)(i) * k, x->d + (i), x->s ? x->s + (i) : NULL

#define DEFINE_TILE(NAME, MR, NR, EXPR)                                              \
    static void NAME(int k, const void *const *w, const lm_xtile *x, float *out) { \
        for (int i = 0; i < (MR); i++)                                               \
            for (int j = 0; j < (NR); j++) out[i * (NR) + j] = (EXPR);               \
    }

DEFINE_TILE(dec_f32, 1, 4, dot_f32(k, w[j], x->f[i]))
DEFINE_TILE(dec_f16, 1, 4, dot_f16(k, w[j], x->f[i]))
DEFINE_TILE(dec_bf16, 1, 4, dot_bf16(k, w[j], x->f[i]))
DEFINE_TILE(dec_q8_0, 1, 4, dot_q8_0(k, w[j], QROW(i)))
DEFINE_TILE(dec_q4_0, 1, 4, dot_q4_0(k, w[j], QROW(i)))
DEFINE_TILE(dec_q4_1, 1, 4, dot_q4_1(k, w[j], QROW(i)))
DEFINE_TILE(gemm_f32, 4, 4, dot_f32(k, w[j], x->f[i]))
DEFINE_TILE(gemm_f16, 4, 4, dot_f16(k, w[j], x->f[i]))
DEFINE_TILE(gemm_bf16, 4, 4, dot_bf16(k, w[j], x->f[i]))
DEFINE_TILE(gemm_q8_0, 4, 4, dot_q8_0(k, w[j], QROW(i)))
DEFINE_TILE(gemm_q4_0, 4, 4, dot_q4_0(k, w[j], QROW(i)))
DEFINE_TILE(gemm_q4_1, 4, 4, dot_q4_1(k, w[j], QROW(i)))

const lm_kernels lm_kernels_scalar = {
    .name = "scalar",
    .quant_x = quant_x,
    .softmax = lm_softmax_scalar,
    .swiglu = lm_swiglu_scalar,
    .attn_heads = attn_heads,
    .dec = {
        [LM_WT_F32] = {dec_f32, 1, 4},   [LM_WT_F16] = {dec_f16, 1, 4},
        [LM_WT_BF16] = {dec_bf16, 1, 4}, [LM_WT_Q8_0] = {dec_q8_0, 1, 4},
        [LM_WT_Q4_0] = {dec_q4_0, 1, 4}, [LM_WT_Q4_1] = {dec_q4_1, 1, 4},
    },
    .gemm = {
        [LM_WT_F32] = {gemm_f32, 4, 4},   [LM_WT_F16] = {gemm_f16, 4, 4},
        [LM_WT_BF16] = {gemm_bf16, 4, 4}, [LM_WT_Q8_0] = {gemm_q8_0, 4, 4},
        [LM_WT_Q4_0] = {gemm_q4_0, 4, 4}, [LM_WT_Q4_1] = {gemm_q4_1, 4, 4},
    },
};
