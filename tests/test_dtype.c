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

static void test_error_bounds(void **state) {
    (void)state;
    enum { N = 32 * 256 };
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    uint8_t *buf = malloc(N * 4);
    uint64_t s = 12345;
    for (int i = 0; i < N; i++) x[i] = frand(&s) * (i % 64 < 32 ? 0.05f : 3.0f) + (i % 96 < 32 ? 0.2f : 0.0f);

    lm_quant_row(LM_Q8_0, x, buf, N);
    lm_dequant_row(LM_Q8_0, buf, y, N);
    for (int b = 0; b < N / 32; b++) {
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[b * 32 + j]));
        float d = amax / 127, d16 = lm_f16_to_f32(((lm_block_q8_0 *)buf)[b].d);
        float bound = 0.5f * d + 127 * fabsf(d - d16) + 1e-7f;
        for (int j = 0; j < 32; j++) assert_true(fabsf(x[b * 32 + j] - y[b * 32 + j]) <= bound);
    }
    lm_quant_row(LM_Q4_0, x, buf, N);
    lm_dequant_row(LM_Q4_0, buf, y, N);
    for (int b = 0; b < N / 32; b++) {
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[b * 32 + j]));
        float d = amax / 8, d16 = fabsf(lm_f16_to_f32(((lm_block_q4_0 *)buf)[b].d));
        /* d/2 from rounding, but the extreme opposite the scale sign clamps (16 -> 15): d */
        float bound = d + 8 * fabsf(d - d16) + 1e-7f;
        for (int j = 0; j < 32; j++) assert_true(fabsf(x[b * 32 + j] - y[b * 32 + j]) <= bound);
    }
    lm_quant_row(LM_Q4_1, x, buf, N);
    lm_dequant_row(LM_Q4_1, buf, y, N);
    for (int b = 0; b < N / 32; b++) {
        float mn = INFINITY, mx = -INFINITY;
        for (int j = 0; j < 32; j++) { mn = fminf(mn, x[b * 32 + j]); mx = fmaxf(mx, x[b * 32 + j]); }
        const lm_block_q4_1 *q = &((lm_block_q4_1 *)buf)[b];
        float d = (mx - mn) / 15, d16 = lm_f16_to_f32(q->d), m16 = lm_f16_to_f32(q->m);
        float bound = 0.5f * d + 15 * fabsf(d - d16) + fabsf(mn - m16) + 1e-6f;
        for (int j = 0; j < 32; j++) assert_true(fabsf(x[b * 32 + j] - y[b * 32 + j]) <= bound);
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
