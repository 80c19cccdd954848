/* Writes a small GGUF with our writer holding every kv type the setters
 * make, arrays of every element type, and one tensor of each storable type
 * (contents are simple formulas the oracle test recomputes).
 * usage: gguf_sample OUT.gguf */
#include <stdio.h>
#include <string.h>

#include "gguf/gguf.h"

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: gguf_sample OUT.gguf\n"); return 2; }
    lm_err err;
    gguf_writer *w = gguf_writer_new();
    const uint8_t u8[] = {0, 7, 255};
    const int8_t i8[] = {-128, 5, 127};
    const uint16_t u16[] = {1, 65535};
    const int16_t i16[] = {-32768, 12};
    const uint32_t u32[] = {4000000000u, 3};
    const int32_t i32[] = {-7, 2147483647};
    const float f32[] = {0.25f, -1e30f};
    const uint8_t bools[] = {1, 0};
    const uint64_t u64[] = {18446744073709551615ull, 9};
    const int64_t i64[] = {-9223372036854775807ll - 1, 42};
    const double f64[] = {3.141592653589793, -0.5};
    const char *strs[] = {"Ġhello", "", "naïve ✓", "<|im_end|>"};
    int rc = gguf_set_str(w, "general.architecture", "llama", &err) ||
             gguf_set_u32(w, "s.u32", 4000000000u, &err) || gguf_set_i32(w, "s.i32", -123456, &err) ||
             gguf_set_u64(w, "s.u64", 1ull << 50, &err) || gguf_set_f32(w, "s.f32", 1e-5f, &err) ||
             gguf_set_bool(w, "s.bool", true, &err) || gguf_set_str(w, "s.str", "line1\nline2 \"q\"", &err) ||
             gguf_set_arr(w, "a.u8", GGUF_U8, u8, 3, &err) || gguf_set_arr(w, "a.i8", GGUF_I8, i8, 3, &err) ||
             gguf_set_arr(w, "a.u16", GGUF_U16, u16, 2, &err) || gguf_set_arr(w, "a.i16", GGUF_I16, i16, 2, &err) ||
             gguf_set_arr(w, "a.u32", GGUF_U32, u32, 2, &err) || gguf_set_arr(w, "a.i32", GGUF_I32, i32, 2, &err) ||
             gguf_set_arr(w, "a.f32", GGUF_F32, f32, 2, &err) || gguf_set_arr(w, "a.bool", GGUF_BOOL, bools, 2, &err) ||
             gguf_set_arr(w, "a.u64", GGUF_U64, u64, 2, &err) || gguf_set_arr(w, "a.i64", GGUF_I64, i64, 2, &err) ||
             gguf_set_arr(w, "a.f64", GGUF_F64, f64, 2, &err) || gguf_set_arr_str(w, "a.str", strs, 4, &err);
    /* tensor k of type T, shape [64, 3]: element i = (i % 61 - 30) / 8 + k, quantized by us */
    const lm_dtype types[] = {LM_F32, LM_F16, LM_BF16, LM_Q8_0, LM_Q4_0, LM_Q4_1};
    const char *names[] = {"t.f32", "t.f16", "t.bf16", "t.q8_0", "t.q4_0", "t.q4_1"};
    float x[64 * 3];
    static uint8_t buf[64 * 3 * 4];
    int64_t ne[2] = {64, 3};
    for (int k = 0; !rc && k < 6; k++) {
        for (int i = 0; i < 64 * 3; i++) x[i] = (float)(i % 61 - 30) / 8.0f + (float)k;
        lm_quant_row(types[k], x, buf, 64 * 3);
        rc = gguf_add_tensor(w, names[k], types[k], 2, ne, buf, lm_dtype_row_bytes(types[k], 64) * 3, &err);
    }
    if (!rc) rc = gguf_write(w, argv[1], &err);
    gguf_writer_free(w);
    if (rc) { fprintf(stderr, "gguf_sample: %s\n", err.msg); return 1; }
    return 0;
}
