/* dtype: names, block layouts, half-float conversions (checked against IEEE
 * 754 bit patterns and, where the compiler has _Float16, its conversions),
 * quantizers on hand-worked blocks and error bounds on random rows. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tensor/dtype.h"

static uint32_t fbits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

static void test_names(void **state) {
    (void)state;
    assert_string_equal(lm_dtype_name(LM_F32), "F32");
    assert_string_equal(lm_dtype_name(LM_Q4_1), "Q4_1");
    assert_string_equal(lm_dtype_name(LM_BF16), "BF16");
    assert_string_equal(lm_dtype_name(14), "Q6_K");
    assert_null(lm_dtype_name(4)); /* removed Q4_2 */
    assert_null(lm_dtype_name(-1));
    assert_null(lm_dtype_name(1000));
    assert_int_equal(lm_dtype_parse("q4_1"), LM_Q4_1);
    assert_int_equal(lm_dtype_parse("Q8_0"), LM_Q8_0);
    assert_int_equal(lm_dtype_parse("bf16"), LM_BF16);
    assert_int_equal(lm_dtype_parse("f32"), LM_F32);
    assert_int_equal(lm_dtype_parse("q4"), -1);
    assert_int_equal(lm_dtype_parse(""), -1);
    assert_int_equal(lm_dtype_parse(NULL), -1);
    assert_int_equal(lm_dtype_parse("a_very_long_type_name"), -1);
    const int ok[] = {LM_F32, LM_F16, LM_BF16, LM_Q8_0, LM_Q4_0, LM_Q4_1};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) assert_true(lm_dtype_supported(ok[i]));
    assert_false(lm_dtype_supported(LM_Q8_1));
    assert_false(lm_dtype_supported(14));
    assert_false(lm_dtype_supported(-3));
}

/* Layouts from the GGUF/ggml block definitions (DESIGN.md "GGUF facts"). */
static void test_layout(void **state) {
    (void)state;
    assert_int_equal(lm_dtype_block_bytes(LM_Q8_0), 34);
    assert_int_equal(lm_dtype_block_bytes(LM_Q4_0), 18);
    assert_int_equal(lm_dtype_block_bytes(LM_Q4_1), 20);
    assert_int_equal(lm_dtype_block_bytes(LM_Q8_1), 36);
    assert_int_equal(lm_dtype_block_bytes(LM_F16), 2);
    assert_int_equal(lm_dtype_block_elems(LM_Q4_1), 32);
    assert_int_equal(lm_dtype_block_elems(LM_BF16), 1);
    assert_int_equal(offsetof(lm_block_q8_0, q), 2);
    assert_int_equal(offsetof(lm_block_q4_1, m), 2);
    assert_int_equal(offsetof(lm_block_q4_1, q), 4);
    assert_int_equal(offsetof(lm_block_q8_1, q), 4);
    assert_int_equal(lm_dtype_row_bytes(LM_Q4_1, 576), 18 * 20);
    assert_int_equal(lm_dtype_row_bytes(LM_Q8_0, 1536), 48 * 34);
    assert_int_equal(lm_dtype_row_bytes(LM_Q8_0, 33), 0);
    assert_int_equal(lm_dtype_row_bytes(LM_F32, 3), 12);
    assert_int_equal(lm_dtype_row_bytes(LM_F16, -1), 0);
}

static void test_f16_known(void **state) {
    (void)state;
    /* IEEE 754 binary16 encodings */
    const struct { uint16_t h; float f; } k[] = {
        {0x3c00, 1.0f}, {0xc000, -2.0f}, {0x7bff, 65504.0f}, {0x0400, 0x1p-14f},
        {0x0001, 0x1p-24f}, {0x03ff, 1023 * 0x1p-24f}, {0x3555, 0.333251953125f},
        {0x0000, 0.0f}, {0x3800, 0.5f}, {0x4248, 3.140625f},
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        assert_true(lm_f16_to_f32(k[i].h) == k[i].f);
        assert_int_equal(lm_f32_to_f16(k[i].f), k[i].h);
    }
    assert_int_equal(fbits(lm_f16_to_f32(0x8000)), 0x80000000u); /* -0 */
    assert_int_equal(lm_f32_to_f16(-0.0f), 0x8000);
    assert_true(isinf(lm_f16_to_f32(0x7c00)) && lm_f16_to_f32(0x7c00) > 0);
    assert_true(isinf(lm_f16_to_f32(0xfc00)) && lm_f16_to_f32(0xfc00) < 0);
    assert_true(isnan(lm_f16_to_f32(0x7e00)));
    assert_int_equal(lm_f32_to_f16(INFINITY), 0x7c00);
    assert_int_equal(lm_f32_to_f16(-INFINITY), 0xfc00);
    uint16_t n = lm_f32_to_f16(NAN);
    assert_true((n & 0x7c00) == 0x7c00 && (n & 0x3ff) != 0);
    /* rounding: ties to even, overflow to inf, underflow to 0 */
    assert_int_equal(lm_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);      /* tie, even is down */
    assert_int_equal(lm_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);  /* tie, even is up */
    assert_int_equal(lm_f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01);
    assert_int_equal(lm_f32_to_f16(65519.0f), 0x7bff);
    assert_int_equal(lm_f32_to_f16(65520.0f), 0x7c00);
    assert_int_equal(lm_f32_to_f16(1e10f), 0x7c00);
    assert_int_equal(lm_f32_to_f16(0x1p-25f), 0x0000);               /* tie to even 0 */
    assert_int_equal(lm_f32_to_f16(0x1p-25f * 1.0001f), 0x0001);
    assert_int_equal(lm_f32_to_f16(3 * 0x1p-25f), 0x0002);           /* tie to even 2 */
    assert_int_equal(lm_f32_to_f16(0x1p-14f - 0x1p-25f), 0x0400);    /* rounds up into normals */
    assert_int_equal(lm_f32_to_f16(1e-30f), 0x0000);
}

static void test_f16_exhaustive(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = lm_f16_to_f32((uint16_t)h);
        if (isnan(f)) {
            assert_true(isnan(lm_f16_to_f32(lm_f32_to_f16(f))));
            continue;
        }
        assert_int_equal(lm_f32_to_f16(f), h);
    }
#ifdef __FLT16_MAX__
    /* The compiler's own conversion is an independent oracle. */
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < 2000000; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        uint32_t u = (uint32_t)s;
        if (i & 1) u = (u & 0x80ffffffu) | ((uint32_t)(96 + (s >> 40) % 48) << 23); /* f16 range */
        float f;
        memcpy(&f, &u, 4);
        if (isnan(f)) continue;
        _Float16 r = (_Float16)f;
        uint16_t want;
        memcpy(&want, &r, 2);
        if (lm_f32_to_f16(f) != want) fail_msg("f32 %08x -> %04x, compiler says %04x", u, lm_f32_to_f16(f), want);
        assert_true(lm_f16_to_f32(want) == (float)r);
    }
#endif
}

static void test_bf16(void **state) {
    (void)state;
    assert_int_equal(lm_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(lm_f32_to_bf16(-2.0f), 0xc000);
    assert_int_equal(lm_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);         /* tie, even down */
    assert_int_equal(lm_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);     /* tie, even up */
    assert_int_equal(lm_f32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81);
    assert_int_equal(lm_f32_to_bf16(INFINITY), 0x7f80);
    assert_int_equal(lm_f32_to_bf16(3.4028235e38f), 0x7f80);          /* FLT_MAX rounds to inf */
    uint16_t n = lm_f32_to_bf16(NAN);
    assert_true((n & 0x7f80) == 0x7f80 && (n & 0x7f) != 0);
    uint32_t snan = 0x7f800001u; /* payload only in the dropped bits: must stay NaN */
    float fs;
    memcpy(&fs, &snan, 4);
    assert_true(isnan(lm_bf16_to_f32(lm_f32_to_bf16(fs))));
    for (uint32_t h = 0; h < 65536; h++) {
        float f = lm_bf16_to_f32((uint16_t)h);
        assert_int_equal(fbits(f), h << 16);
        if (!isnan(f)) assert_int_equal(lm_f32_to_bf16(f), h);
    }
}

/* ---- quantizers on hand-worked blocks ---------------------------------- */

static void test_q8_0_block(void **state) {
    (void)state;
    float x[32] = {0};
    x[0] = 127.0f;  /* amax -> d = 1 exactly */
    x[1] = -63.5f;  /* roundf: half away from zero -> -64 */
    x[2] = 0.5f;    /* -> 1 */
    x[3] = -0.49f;  /* -> 0 */
    x[31] = -127.0f;
    lm_block_q8_0 b;
    lm_quant_row(LM_Q8_0, x, &b, 32);
    assert_int_equal(b.d, 0x3c00);
    assert_int_equal(b.q[0], 127);
    assert_int_equal(b.q[1], -64);
    assert_int_equal(b.q[2], 1);
    assert_int_equal(b.q[3], 0);
    assert_int_equal(b.q[31], -127);
    float y[32];
    lm_dequant_row(LM_Q8_0, &b, y, 32);
    assert_true(y[1] == -64.0f && y[31] == -127.0f && y[5] == 0.0f);
}

static void test_q4_0_block(void **state) {
    (void)state;
    float x[32] = {0};
    x[0] = -8.0f;   /* largest magnitude, negative -> d = -8/-8 = 1 */
    x[16] = 7.0f;   /* 7 + 8.5 -> 15 */
    x[1] = 7.6f;    /* 16.1 -> clamped to 15 */
    x[2] = -0.5f;   /* 8.0 -> 8 */
    x[3] = -0.51f;  /* 7.99 -> 7 */
    lm_block_q4_0 b;
    lm_quant_row(LM_Q4_0, x, &b, 32);
    assert_int_equal(b.d, 0x3c00);
    assert_int_equal(b.q[0], 0xf0);          /* elem 0 low nibble 0, elem 16 high nibble 15 */
    assert_int_equal(b.q[1] & 0x0f, 15);
    assert_int_equal(b.q[2] & 0x0f, 8);
    assert_int_equal(b.q[3] & 0x0f, 7);
    assert_int_equal(b.q[5], 0x88);          /* zeros sit at nibble 8 */
    float y[32];
    lm_dequant_row(LM_Q4_0, &b, y, 32);
    assert_true(y[0] == -8.0f && y[16] == 7.0f && y[1] == 7.0f && y[3] == -1.0f && y[5] == 0.0f);

    /* positive extreme: d = 8/-8 = -1, the extreme itself lands on nibble 0 */
    memset(x, 0, sizeof x);
    x[7] = 8.0f;
    lm_quant_row(LM_Q4_0, x, &b, 32);
    assert_int_equal(b.d, 0xbc00);
    assert_int_equal(b.q[7] & 0x0f, 0);
    lm_dequant_row(LM_Q4_0, &b, y, 32);
    assert_true(y[7] == 8.0f);
}

static void test_q4_1_block(void **state) {
    (void)state;
    float x[32];
    for (int j = 0; j < 32; j++) x[j] = 1.0f;
    x[4] = 16.0f;   /* max; min 1 -> d = 1, m = 1 */
    x[20] = 8.5f;   /* 7.5 + 0.5 -> 8 */
    x[5] = 8.49f;   /* 7.49 + 0.5 -> 7 */
    lm_block_q4_1 b;
    lm_quant_row(LM_Q4_1, x, &b, 32);
    assert_int_equal(b.d, 0x3c00);
    assert_int_equal(b.m, 0x3c00);
    assert_int_equal(b.q[4], 0x8f);  /* elem 4 low nibble 15, elem 20 high nibble 8 */
    assert_int_equal(b.q[5], 0x07);  /* elem 5 -> 7, elem 21 (= min) -> 0 */
    assert_int_equal(b.q[0], 0x00);
    float y[32];
    lm_dequant_row(LM_Q4_1, &b, y, 32);
    assert_true(y[4] == 16.0f && y[20] == 9.0f && y[0] == 1.0f && y[5] == 8.0f);

    /* a hand-made block: d = 0.5, m = -1, q[0] = 0x21 -> elem 0 = 1*.5-1, elem 16 = 2*.5-1 */
    lm_block_q4_1 h = {.d = 0x3800, .m = 0xbc00};
    h.q[0] = 0x21;
    lm_dequant_row(LM_Q4_1, &h, y, 32);
    assert_true(y[0] == -0.5f && y[16] == 0.0f && y[1] == -1.0f);
}

static void test_q8_1_block(void **state) {
    (void)state;
    float x[32];
    for (int j = 0; j < 32; j++) x[j] = 1.0f;
    x[0] = 127.0f; /* d = 1; q = 127 then 31 ones; s = d * 158 */
    lm_block_q8_1 b;
    lm_quant_row(LM_Q8_1, x, &b, 32);
    assert_int_equal(b.d, 0x3c00);
    assert_int_equal(b.q[0], 127);
    assert_int_equal(b.q[31], 1);
    assert_true(lm_f16_to_f32(b.s) == 158.0f);
}

static void test_zero_and_nonfinite(void **state) {
    (void)state;
    float z[64] = {0};
    uint8_t out[128];
    const lm_dtype q[] = {LM_Q8_0, LM_Q4_0, LM_Q4_1, LM_Q8_1};
    for (size_t i = 0; i < 4; i++) {
        memset(out, 0xaa, sizeof out);
        lm_quant_row(q[i], z, out, 64);
        float y[64];
        lm_dequant_row(q[i], out, y, 64);
        for (int j = 0; j < 64; j++) assert_true(y[j] == 0.0f);
    }
    /* inf/NaN inputs must not be undefined behaviour (UBSan build checks) */
    float bad[32];
    for (int j = 0; j < 32; j++) bad[j] = j % 3 == 0 ? INFINITY : j % 3 == 1 ? NAN : -1e38f;
    for (size_t i = 0; i < 4; i++) lm_quant_row(q[i], bad, out, 32);
}

/* ---- error bounds on random rows --------------------------------------- */

static float frand(uint64_t *s) {
    *s ^= *s << 13; *s ^= *s >> 7; *s ^= *s << 17;
    return (float)((double)(*s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* The bounds come from the input alone: each block's max-abs (or min and
 * max) is computed here, the scale the quantizer should have chosen derived
 * from it (ggml's rule), and the scale's f16 rounding (at most half an ulp:
 * relative 2^-11, or 2^-25 below the normal range) enters the bound as a
 * multiple of that expected scale, never of the scale the quantizer stored.
 * A quantizer that picks a wrong scale (too coarse, off by a factor, badly
 * rounded) or a wrong offset fails here even when its codes are consistent
 * with the scale it stored. */
static float f16_err(float v) { return fabsf(v) * 0x1p-11f + 0x1p-25f; }

/* Rows with every kind of block: scales from 2^-12 (f16 subnormal scales)
 * to 2^10, offset blocks, one-sided blocks, a lone outlier, constants. */
static void fill_rows(float *x, int n, uint64_t *s) {
    for (int b = 0; b < n / 32; b++) {
        float *v = x + b * 32;
        float scale = ldexpf(1.0f, -12 + (int)(((uint32_t)(*s >> 20)) % 23));
        int kind = b % 6;
        for (int j = 0; j < 32; j++) {
            float r = frand(s);
            switch (kind) {
            case 0: v[j] = r * scale; break;
            case 1: v[j] = r * scale * 0.25f + scale; break;         /* offset, all > 0 */
            case 2: v[j] = -fabsf(r) * scale; break;                 /* all <= 0 */
            case 3: v[j] = r * scale * 1e-3f; break;                 /* tiny, then an outlier */
            case 4: v[j] = 0.75f * scale; break;                     /* constant */
            default: v[j] = r * (j % 2 ? scale : scale * 0.01f); break;
            }
        }
        if (kind == 3) v[b % 32] = (b % 4 ? -scale : scale);
        frand(s);
    }
}

static void test_error_bounds(void **state) {
    (void)state;
    enum { N = 32 * 600 };
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    uint8_t *buf = malloc(N * 4);
    assert_non_null(x);
    assert_non_null(y);
    assert_non_null(buf);
    uint64_t s = 12345;
    fill_rows(x, N, &s);

    /* Q8_0: d = amax/127, q = round(x/d): |x - q*d| <= d/2, and |q| <= 127
     * times the scale's rounding. 1e-4*d covers x*(1/d) in float. */
    lm_quant_row(LM_Q8_0, x, buf, N);
    lm_dequant_row(LM_Q8_0, buf, y, N);
    for (int b = 0; b < N / 32; b++) {
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[b * 32 + j]));
        float d = amax / 127;
        float d16 = lm_f16_to_f32(((lm_block_q8_0 *)buf)[b].d);
        if (!(fabsf(d16 - d) <= f16_err(d))) fail_msg("q8_0 block %d: scale %g, want %g", b, d16, d);
        float bound = 0.5f * d + 127 * f16_err(d) + 1e-4f * d;
        for (int j = 0; j < 32; j++)
            if (!(fabsf(x[b * 32 + j] - y[b * 32 + j]) <= bound))
                fail_msg("q8_0 block %d elem %d: %g -> %g, bound %g", b, j, x[b * 32 + j], y[b * 32 + j], bound);
    }

    /* Q4_0: d = -max/8 (max: the signed value of largest magnitude), codes
     * 0..15 for x/d + 8: |error| <= d/2, except the values on the other side
     * of the extreme beyond 7.5 steps, where 16 clamps to 15: <= d. */
    lm_quant_row(LM_Q4_0, x, buf, N);
    lm_dequant_row(LM_Q4_0, buf, y, N);
    for (int b = 0; b < N / 32; b++) {
        float amax = 0, max = 0;
        for (int j = 0; j < 32; j++)
            if (fabsf(x[b * 32 + j]) > amax) { amax = fabsf(x[b * 32 + j]); max = x[b * 32 + j]; }
        float d = amax / 8;
        float d16 = lm_f16_to_f32(((lm_block_q4_0 *)buf)[b].d);
        if (!(fabsf(d16 - (-max / 8)) <= f16_err(d))) fail_msg("q4_0 block %d: scale %g, want %g", b, d16, -max / 8);
        for (int j = 0; j < 32; j++) {
            float v = x[b * 32 + j];
            int clamps = (v > 0) != (max > 0) && v != 0 && fabsf(v) >= 7.5f * d * (1 - 1e-5f);
            float bound = (clamps ? d : 0.5f * d) + 8 * f16_err(d) + 1e-4f * d;
            if (!(fabsf(v - y[b * 32 + j]) <= bound))
                fail_msg("q4_0 block %d elem %d: %g -> %g, bound %g", b, j, v, y[b * 32 + j], bound);
        }
    }

    /* Q4_1: m = min, d = (max - min)/15, codes round((x - m)/d): |error| <=
     * d/2 plus 15 times the scale's rounding plus the offset's rounding. */
    lm_quant_row(LM_Q4_1, x, buf, N);
    lm_dequant_row(LM_Q4_1, buf, y, N);
    for (int b = 0; b < N / 32; b++) {
        float mn = INFINITY, mx = -INFINITY;
        for (int j = 0; j < 32; j++) { mn = fminf(mn, x[b * 32 + j]); mx = fmaxf(mx, x[b * 32 + j]); }
        const lm_block_q4_1 *q = &((lm_block_q4_1 *)buf)[b];
        float d = (mx - mn) / 15, d16 = lm_f16_to_f32(q->d), m16 = lm_f16_to_f32(q->m);
        if (!(fabsf(d16 - d) <= f16_err(d))) fail_msg("q4_1 block %d: scale %g, want %g", b, d16, d);
        if (!(fabsf(m16 - mn) <= f16_err(mn))) fail_msg("q4_1 block %d: offset %g, want %g", b, m16, mn);
        float bound = 0.5f * d + 15 * f16_err(d) + f16_err(mn) + 1e-4f * d + 1e-6f * fabsf(mn);
        for (int j = 0; j < 32; j++)
            if (!(fabsf(x[b * 32 + j] - y[b * 32 + j]) <= bound))
                fail_msg("q4_1 block %d elem %d: %g -> %g, bound %g", b, j, x[b * 32 + j], y[b * 32 + j], bound);
    }

    /* Q8_1 (activations): codes as Q8_0, and s = d * sum(q), which must be
     * the block's sum to within 32 half-steps plus the roundings. */
    lm_quant_row(LM_Q8_1, x, buf, N);
    lm_dequant_row(LM_Q8_1, buf, y, N);
    for (int b = 0; b < N / 32; b++) {
        float amax = 0;
        double sum = 0;
        for (int j = 0; j < 32; j++) {
            amax = fmaxf(amax, fabsf(x[b * 32 + j]));
            sum += x[b * 32 + j];
        }
        float d = amax / 127;
        const lm_block_q8_1 *q = &((lm_block_q8_1 *)buf)[b];
        float bound = 0.5f * d + 127 * f16_err(d) + 1e-4f * d;
        for (int j = 0; j < 32; j++)
            if (!(fabsf(x[b * 32 + j] - y[b * 32 + j]) <= bound))
                fail_msg("q8_1 block %d elem %d: %g -> %g, bound %g", b, j, x[b * 32 + j], y[b * 32 + j], bound);
        float s16 = lm_f16_to_f32(q->s);
        double sbound = 32 * (double)bound + f16_err((float)sum) + 32 * 127 * (double)f16_err(d);
        if (!(fabs(s16 - sum) <= sbound)) fail_msg("q8_1 block %d: s %g, block sum %g", b, s16, sum);
    }

    lm_quant_row(LM_F16, x, buf, N);
    lm_dequant_row(LM_F16, buf, y, N);
    for (int i = 0; i < N; i++) assert_true(fabsf(x[i] - y[i]) <= fabsf(x[i]) * 0x1p-11f + 0x1p-25f);
    lm_quant_row(LM_BF16, x, buf, N);
    lm_dequant_row(LM_BF16, buf, y, N);
    for (int i = 0; i < N; i++) assert_true(fabsf(x[i] - y[i]) <= fabsf(x[i]) * 0x1p-8f);
    lm_quant_row(LM_F32, x, buf, N);
    lm_dequant_row(LM_F32, buf, y, N);
    assert_memory_equal(x, y, N * sizeof *x);
    free(x);
    free(y);
    free(buf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_f16_known),
        cmocka_unit_test(test_f16_exhaustive),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_q8_0_block),
        cmocka_unit_test(test_q4_0_block),
        cmocka_unit_test(test_q4_1_block),
        cmocka_unit_test(test_q8_1_block),
        cmocka_unit_test(test_zero_and_nonfinite),
        cmocka_unit_test(test_error_bounds),
    };
    return cmocka_run_group_tests_name("dtype", tests, NULL, NULL);
}
