/* Element types: names, block layouts, half-float conversions and the
 * reference (scalar) row quantizers. The quantizers follow ggml's
 * quantize_row_*_ref step for step -- the same f32 operations in the same
 * order -- because "bit-identical to llama.cpp's quantize" is the contract.
 * Each arithmetic step is its own statement so no compiler contracts
 * x*id + c into an FMA (which would round differently). */
#include "tensor/dtype.h"

#include <ctype.h>
#include <float.h>
#include <math.h>
#include <string.h>

_Static_assert(sizeof(lm_block_q8_0) == 34, "Q8_0 block is 34 bytes on disk");
_Static_assert(sizeof(lm_block_q4_0) == 18, "Q4_0 block is 18 bytes on disk");
_Static_assert(sizeof(lm_block_q4_1) == 20, "Q4_1 block is 20 bytes on disk");
_Static_assert(sizeof(lm_block_q8_1) == 36, "Q8_1 block is 36 bytes on disk");

/* Names for every ggml type id, so errors can say "Q6_K (14)" even for the
 * ids we cannot load. Index = id. */
static const char *const TYPE_NAMES[] = {
    [0] = "F32",   [1] = "F16",   [2] = "Q4_0",  [3] = "Q4_1",
    [6] = "Q5_0",  [7] = "Q5_1",  [8] = "Q8_0",  [9] = "Q8_1",
    [10] = "Q2_K", [11] = "Q3_K", [12] = "Q4_K", [13] = "Q5_K",
    [14] = "Q6_K", [15] = "Q8_K", [16] = "IQ2_XXS", [17] = "IQ2_XS",
    [18] = "IQ3_XXS", [19] = "IQ1_S", [20] = "IQ4_NL", [21] = "IQ3_S",
    [22] = "IQ2_S", [23] = "IQ4_XS", [24] = "I8",  [25] = "I16",
    [26] = "I32",  [27] = "I64",  [28] = "F64",  [29] = "IQ1_M",
    [30] = "BF16", [34] = "TQ1_0", [35] = "TQ2_0",
};

const char *lm_dtype_name(int type) {
    if (type < 0 || (size_t)type >= sizeof TYPE_NAMES / sizeof TYPE_NAMES[0]) return NULL;
    return TYPE_NAMES[type];
}

int lm_dtype_parse(const char *name) {
    if (!name) return -1;
    char up[16];
    size_t n = strlen(name);
    if (n == 0 || n >= sizeof up) return -1;
    for (size_t i = 0; i <= n; i++) up[i] = (char)toupper((unsigned char)name[i]);
    for (size_t i = 0; i < sizeof TYPE_NAMES / sizeof TYPE_NAMES[0]; i++)
        if (TYPE_NAMES[i] && !strcmp(TYPE_NAMES[i], up)) return (int)i;
    return -1;
}

int lm_dtype_supported(int type) {
    switch (type) {
    case LM_F32: case LM_F16: case LM_BF16: case LM_Q8_0: case LM_Q4_0: case LM_Q4_1:
        return 1;
    default:
        return 0;
    }
}

size_t lm_dtype_block_elems(lm_dtype t) {
    switch (t) {
    case LM_F32: case LM_F16: case LM_BF16: return 1;
    case LM_Q8_0: case LM_Q8_1: case LM_Q4_0: case LM_Q4_1: return LM_QK;
    }
    return 0;
}

size_t lm_dtype_block_bytes(lm_dtype t) {
    switch (t) {
    case LM_F32: return 4;
    case LM_F16: case LM_BF16: return 2;
    case LM_Q8_0: return sizeof(lm_block_q8_0);
    case LM_Q8_1: return sizeof(lm_block_q8_1);
    case LM_Q4_0: return sizeof(lm_block_q4_0);
    case LM_Q4_1: return sizeof(lm_block_q4_1);
    }
    return 0;
}

size_t lm_dtype_row_bytes(lm_dtype t, int64_t n) {
    size_t be = lm_dtype_block_elems(t);
    if (be == 0 || n < 0 || (uint64_t)n % be) return 0;
    uint64_t blocks = (uint64_t)n / be;
    size_t bb = lm_dtype_block_bytes(t);
    if (blocks > SIZE_MAX / bb) return 0;
    return (size_t)blocks * bb;
}

/* ---- half floats ---------------------------------------------------- */

static inline uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float lm_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    if (exp == 0x1f) /* inf / NaN: keep the payload, shifted to the top */
        return bits_f32(sign | 0x7f800000u | (man << 13));
    if (exp == 0) { /* zero or subnormal: man * 2^-24, exact in f32 */
        float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t lm_f32_to_f16(float f) {
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) /* NaN: quiet, keep the top payload bits */
        return (uint16_t)(sign | 0x7e00 | ((ax >> 13) & 0x3ff));
    if (ax >= 0x477ff000u) /* >= 65520 rounds to infinity (as does inf) */
        return (uint16_t)(sign | 0x7c00);
    if (ax < 0x38800000u) { /* below 2^-14: half subnormal or zero */
        if (ax < 0x33000000u) return sign; /* <= 2^-25 rounds to 0 (tie to even) */
        uint32_t e = ax >> 23, m = (ax & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; /* value / 2^-24 = m / 2^shift, shift in 14..24 */
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return (uint16_t)(sign | q);
    }
    /* Normal: rebias the exponent (127 -> 15), round the 13 dropped bits
     * to nearest even; a mantissa carry correctly bumps the exponent. */
    uint32_t r = ax - 0x38000000u;
    r = (r + 0xfffu + ((r >> 13) & 1)) >> 13;
    return (uint16_t)(sign | r);
}

float lm_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t lm_f32_to_bf16(float f) {
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

/* ---- quantizers (ggml reference order of operations) ----------------- */

/* roundf then the int8 cast, made total: NaN (from inf inputs) gives 0
 * and out-of-range values saturate instead of being undefined behaviour. */
static inline int8_t q8_round(float v) {
    if (!(v == v)) return 0;
    if (v >= 127.0f) return 127;
    if (v <= -128.0f) return -128;
    return (int8_t)roundf(v);
}

static void quant_q8_0(const float *x, lm_block_q8_0 *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += LM_QK) {
        float amax = 0.0f;
        for (int j = 0; j < LM_QK; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = lm_f32_to_f16(d);
        for (int j = 0; j < LM_QK; j++) {
            const float v = x[j] * id;
            y[i].q[j] = q8_round(v);
        }
    }
}

static void quant_q8_1(const float *x, lm_block_q8_1 *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += LM_QK) {
        float amax = 0.0f;
        for (int j = 0; j < LM_QK; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = lm_f32_to_f16(d);
        int sum = 0;
        for (int j = 0; j < LM_QK / 2; j++) {
            const float v0 = x[j] * id;
            const float v1 = x[LM_QK / 2 + j] * id;
            y[i].q[j] = q8_round(v0);
            y[i].q[LM_QK / 2 + j] = q8_round(v1);
            sum += y[i].q[j] + y[i].q[LM_QK / 2 + j];
        }
        const float s = (float)sum * d;
        y[i].s = lm_f32_to_f16(s);
    }
}

/* Clamps a float the way ggml's (int8_t) cast then MIN(15, .) acts on the
 * values that can occur; the explicit range check keeps NaN/huge inputs from
 * being undefined behaviour in C (ggml relies on them not occurring). */
static inline uint8_t nib_trunc(float v) {
    if (!(v >= 0.0f)) return 0; /* also NaN */
    if (v >= 15.0f) return 15;
    return (uint8_t)(int8_t)v;
}

static void quant_q4_0(const float *x, lm_block_q4_0 *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += LM_QK) {
        float amax = 0.0f, max = 0.0f; /* max: the signed value of largest magnitude */
        for (int j = 0; j < LM_QK; j++) {
            if (amax < fabsf(x[j])) { amax = fabsf(x[j]); max = x[j]; }
        }
        const float d = max / -8.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = lm_f32_to_f16(d);
        for (int j = 0; j < LM_QK / 2; j++) {
            const float x0 = x[j] * id;
            const float x1 = x[LM_QK / 2 + j] * id;
            const float s0 = x0 + 8.5f;
            const float s1 = x1 + 8.5f;
            y[i].q[j] = (uint8_t)(nib_trunc(s0) | (nib_trunc(s1) << 4));
        }
    }
}

static void quant_q4_1(const float *x, lm_block_q4_1 *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += LM_QK) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < LM_QK; j++) {
            if (x[j] < min) min = x[j];
            if (x[j] > max) max = x[j];
        }
        const float d = (max - min) / 15.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = lm_f32_to_f16(d);
        y[i].m = lm_f32_to_f16(min);
        for (int j = 0; j < LM_QK / 2; j++) {
            const float x0 = (x[j] - min) * id;
            const float x1 = (x[LM_QK / 2 + j] - min) * id;
            const float s0 = x0 + 0.5f;
            const float s1 = x1 + 0.5f;
            y[i].q[j] = (uint8_t)(nib_trunc(s0) | (nib_trunc(s1) << 4));
        }
    }
}

void lm_quant_row(lm_dtype t, const float *src, void *dst, int64_t n) {
    switch (t) {
    case LM_F32:
        memcpy(dst, src, (size_t)n * sizeof(float));
        return;
    case LM_F16: {
        uint16_t *o = dst;
        for (int64_t i = 0; i < n; i++) o[i] = lm_f32_to_f16(src[i]);
        return;
    }
    case LM_BF16: {
        uint16_t *o = dst;
        for (int64_t i = 0; i < n; i++) o[i] = lm_f32_to_bf16(src[i]);
        return;
    }
    case LM_Q8_0: quant_q8_0(src, dst, n / LM_QK); return;
    case LM_Q8_1: quant_q8_1(src, dst, n / LM_QK); return;
    case LM_Q4_0: quant_q4_0(src, dst, n / LM_QK); return;
    case LM_Q4_1: quant_q4_1(src, dst, n / LM_QK); return;
    }
}

void lm_dequant_row(lm_dtype t, const void *src, float *dst, int64_t n) {
    switch (t) {
    case LM_F32:
        memcpy(dst, src, (size_t)n * sizeof(float));
        return;
    case LM_F16: {
        const uint16_t *s = src;
        for (int64_t i = 0; i < n; i++) dst[i] = lm_f16_to_f32(s[i]);
        return;
    }
    case LM_BF16: {
        const uint16_t *s = src;
        for (int64_t i = 0; i < n; i++) dst[i] = lm_bf16_to_f32(s[i]);
        return;
    }
    case LM_Q8_0: {
        const lm_block_q8_0 *b = src;
        for (int64_t i = 0; i < n / LM_QK; i++, dst += LM_QK) {
            const float d = lm_f16_to_f32(b[i].d);
            for (int j = 0; j < LM_QK; j++) dst[j] = (float)b[i].q[j] * d;
        }
        return;
    }
    case LM_Q8_1: {
        const lm_block_q8_1 *b = src;
        for (int64_t i = 0; i < n / LM_QK; i++, dst += LM_QK) {
            const float d = lm_f16_to_f32(b[i].d);
            for (int j = 0; j < LM_QK; j++) dst[j] = (float)b[i].q[j] * d;
        }
        return;
    }
    case LM_Q4_0: {
        const lm_block_q4_0 *b = src;
        for (int64_t i = 0; i < n / LM_QK; i++, dst += LM_QK) {
            const float d = lm_f16_to_f32(b[i].d);
            for (int j = 0; j < LM_QK / 2; j++) {
                dst[j] = (float)((b[i].q[j] & 0x0f) - 8) * d;
                dst[j + LM_QK / 2] = (float)((b[i].q[j] >> 4) - 8) * d;
            }
        }
        return;
    }
    case LM_Q4_1: {
        const lm_block_q4_1 *b = src;
        for (int64_t i = 0; i < n / LM_QK; i++, dst += LM_QK) {
            const float d = lm_f16_to_f32(b[i].d);
            const float m = lm_f16_to_f32(b[i].m);
            for (int j = 0; j < LM_QK / 2; j++) {
                const float v0 = (float)(b[i].q[j] & 0x0f) * d;
                const float v1 = (float)(b[i].q[j] >> 4) * d;
                dst[j] = v0 + m;
                dst[j + LM_QK / 2] = v1 + m;
            }
        }
        return;
    }
    }
}
