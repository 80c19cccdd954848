/* lm_adapter_convert (model/adapter.h), which writes through the model
 * converter (model/convert.h, LM_CONVERT_ADAPTER): an adapter's factors in
 * F16 or F32 with the file's metadata exactly as it was (a model's
 * general.file_type would misdescribe an adapter; llama.cpp and our loader
 * read alpha, the architecture and our persona stamp from these kvs), its
 * alignment, and nothing lost when a conversion is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "gguf/gguf.h"
#include "helpers.h"
#include "model/adapter.h"

enum { IN = 64, R = 4, OUT = 48 };

/* Factors with values F16 rounds, saturates and flushes, so the types show. */
static void fill(float *x, int n, uint64_t seed) {
    for (int i = 0; i < n; i++) x[i] = (float)((double)(th_rng_next(&seed) >> 11) * 0x1p-53 - 0.5);
    x[0] = 1e-8f;       /* below F16's smallest subnormal: 0 */
    x[1] = 70000.0f;    /* above F16's largest: inf */
    x[2] = -0.0f;
}

/* An adapter with kvs of every kind a file may carry and alignment 64. */
static void write_src(const char *path) {
    gguf_writer *w = gguf_writer_new();
    lm_err e = {0};
    const char *const strs[] = {"short", "full", ""};
    const int32_t ints[] = {7, -3, 1 << 30};
    int rc = gguf_set_str(w, "general.architecture", "llama", &e) ||
             gguf_set_str(w, "general.type", "adapter", &e) ||
             gguf_set_u32(w, "general.alignment", 64, &e) ||
             gguf_set_str(w, "adapter.type", "lora", &e) ||
             gguf_set_f32(w, "adapter.lora.alpha", 16.0f, &e) ||
             gguf_set_str(w, "lemonpc.character", "Orlando Marlo", &e) ||
             gguf_set_i32(w, "test.i32", -5, &e) || gguf_set_u64(w, "test.u64", 1ull << 40, &e) ||
             gguf_set_bool(w, "test.bool", true, &e) ||
             gguf_set_arr(w, "test.arr_i32", GGUF_I32, ints, 3, &e) ||
             gguf_set_arr_str(w, "test.arr_str", strs, 3, &e);
    float a[R * IN], b[OUT * R];
    fill(a, R * IN, 1);
    fill(b, OUT * R, 2);
    const int64_t nea[2] = {IN, R}, neb[2] = {R, OUT};
    rc = rc || gguf_add_tensor(w, "blk.0.attn_q.weight.lora_a", LM_F32, 2, nea, a, sizeof a, &e) ||
         gguf_add_tensor(w, "blk.0.attn_q.weight.lora_b", LM_F32, 2, neb, b, sizeof b, &e) ||
         gguf_write(w, path, &e);
    if (rc) fail_msg("%s", e.msg);
    gguf_writer_free(w);
}

static void assert_same_kvs(const gguf_file *x, const gguf_file *y) {
    assert_int_equal(x->n_kv, y->n_kv);
    for (uint64_t i = 0; i < x->n_kv; i++) {
        const gguf_kv *a = &x->kv[i], *b = &y->kv[i];
        assert_string_equal(a->key, b->key);
        assert_int_equal(a->type, b->type);
        if (a->type == GGUF_STRING) {
            assert_int_equal(a->v.s.len, b->v.s.len);
            assert_memory_equal(a->v.s.ptr, b->v.s.ptr, a->v.s.len);
        } else if (a->type == GGUF_ARRAY) {
            assert_int_equal(a->arr_type, b->arr_type);
            assert_int_equal(a->arr_n, b->arr_n);
            for (uint64_t j = 0; j < a->arr_n; j++)
                if (a->arr_type == GGUF_STRING) {
                    assert_int_equal(a->arr_strs[j].len, b->arr_strs[j].len);
                    assert_memory_equal(a->arr_strs[j].ptr, b->arr_strs[j].ptr, a->arr_strs[j].len);
                } else {
                    assert_int_equal(gguf_arr_get_i64(a, j), gguf_arr_get_i64(b, j));
                }
        } else {
            assert_memory_equal(&a->v, &b->v, sizeof a->v);
        }
    }
}

/* Every kv of the source in its order, none added (no general.file_type or
 * quantization_version), alignment 64 kept; the factors in the type asked
 * for, rounded to nearest even; F16 to F16 copies the file; dst may be src. */
static void test_keeps_metadata(void **state) {
    (void)state;
    char *d = th_tmpdir("lm_test_adconv");
    char src[300], p16[300], p32[300], again[300];
    snprintf(src, sizeof src, "%s/src.gguf", d);
    snprintf(p16, sizeof p16, "%s/f16.gguf", d);
    snprintf(p32, sizeof p32, "%s/f32.gguf", d);
    snprintf(again, sizeof again, "%s/f16again.gguf", d);
    write_src(src);
    lm_err e = {0};
    if (lm_adapter_convert(src, p16, LM_F16, &e) || lm_adapter_convert(p16, p32, LM_F32, &e) ||
        lm_adapter_convert(p16, again, LM_F16, &e))
        fail_msg("%s", e.msg);
    gguf_file *s = gguf_open(src, &e), *h = gguf_open(p16, &e), *f = gguf_open(p32, &e);
    if (!s || !h || !f) fail_msg("%s", e.msg);
    const gguf_file *outs[2] = {h, f};
    for (int k = 0; k < 2; k++) {
        const gguf_file *o = outs[k];
        assert_same_kvs(s, o);
        assert_null(gguf_find_kv(o, "general.file_type"));
        assert_int_equal(o->alignment, 64);
        assert_int_equal(o->n_tensors, s->n_tensors);
        for (uint64_t i = 0; i < s->n_tensors; i++) {
            const gguf_tensor *ts = &s->tensors[i], *to = &o->tensors[i];
            assert_string_equal(ts->name, to->name);
            assert_int_equal(to->type, k ? LM_F32 : LM_F16);
            assert_int_equal(to->n_dims, 2);
            assert_memory_equal(ts->ne, to->ne, sizeof ts->ne);
            assert_int_equal(to->offset % 64, 0);
            const float *x = ts->data;
            for (int64_t j = 0; j < ts->ne[0] * ts->ne[1]; j++) {
                uint16_t want = lm_f32_to_f16(x[j]);
                if (k) assert_memory_equal(&(float){lm_f16_to_f32(want)}, (const float *)to->data + j, 4);
                else assert_int_equal(((const uint16_t *)to->data)[j], want);
            }
        }
    }
    th_assert_same_file(p16, again);
    /* in place, as lemonpc build --adapter-type f16 converts its export */
    assert_int_equal(lm_adapter_convert(p32, p32, LM_F16, &e), 0);
    th_assert_same_file(p32, p16);
    gguf_close(s); gguf_close(h); gguf_close(f);
    th_rm_rf(d);
    free(d);
}

/* Refused, writing nothing (an existing dst keeps its bytes), with what was
 * wrong: a type other than F32/F16, a file that is not an adapter. */
static void test_refusals(void **state) {
    (void)state;
    char *d = th_tmpdir("lm_test_adconv");
    char src[300], dst[300], model[300];
    snprintf(src, sizeof src, "%s/src.gguf", d);
    snprintf(dst, sizeof dst, "%s/dst.gguf", d);
    snprintf(model, sizeof model, "%s/model.gguf", d);
    write_src(src);
    th_write_text(dst, "keep me");
    const lm_dtype bad[] = {LM_Q8_0, LM_Q4_0, LM_BF16};
    for (int i = 0; i < 3; i++) {
        lm_err e = {0};
        assert_int_equal(lm_adapter_convert(src, dst, bad[i], &e), -1);
        assert_non_null(strstr(e.msg, "F32 or F16"));
        assert_non_null(strstr(e.msg, lm_dtype_name(bad[i])));
    }
    gguf_writer *w = gguf_writer_new();
    lm_err e = {0};
    const int64_t ne[2] = {4, 2};
    const float x[8] = {0};
    if (gguf_set_str(w, "general.architecture", "llama", &e) ||
        gguf_add_tensor(w, "token_embd.weight", LM_F32, 2, ne, x, sizeof x, &e) ||
        gguf_write(w, model, &e))
        fail_msg("%s", e.msg);
    gguf_writer_free(w);
    assert_int_equal(lm_adapter_convert(model, dst, LM_F16, &e), -1);
    assert_non_null(strstr(e.msg, "general.type"));
    assert_non_null(strstr(e.msg, model));
    size_t n;
    char *kept = th_slurp(dst, &n);
    assert_string_equal(kept, "keep me");
    free(kept);
    th_rm_rf(d);
    free(d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keeps_metadata),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
