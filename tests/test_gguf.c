/* GGUF reader/writer: write -> read round trips of every kv type and tensor
 * type, and a table of corrupted, truncated and hostile files that must each
 * fail with a message naming what is wrong (never crash: run under ASan). */
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

/* ---- a byte builder for hand-made files (independent of our writer) ---- */

typedef struct buf { uint8_t *p; size_t n, cap; } buf;

static void b_put(buf *b, const void *p, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
}
static void b_le(buf *b, uint64_t v, size_t n) {
    for (size_t i = 0; i < n; i++) { uint8_t c = (uint8_t)(v >> (8 * i)); b_put(b, &c, 1); }
}
static void b_zeros(buf *b, size_t n) { while (n--) b_le(b, 0, 1); }
static void b_u32(buf *b, uint32_t v) { b_le(b, v, 4); }
static void b_u64(buf *b, uint64_t v) { b_le(b, v, 8); }
static void b_str(buf *b, const char *s) { b_u64(b, strlen(s)); b_put(b, s, strlen(s)); }
static void b_hdr(buf *b, uint32_t version, uint64_t n_t, uint64_t n_kv) {
    b_put(b, "GGUF", 4);
    b_u32(b, version);
    b_u64(b, n_t);
    b_u64(b, n_kv);
}
static void b_pad(buf *b, size_t a) { while (b->n % a) b_le(b, 0, 1); }
/* tensor info with n_dims dims */
static void b_ti(buf *b, const char *name, uint32_t nd, const uint64_t *ne, uint32_t type, uint64_t off) {
    b_str(b, name);
    b_u32(b, nd);
    for (uint32_t i = 0; i < nd; i++) b_u64(b, ne[i]);
    b_u32(b, type);
    b_u64(b, off);
}

/* Opens from memory, expects failure whose message contains `want`. */
static void expect_fail(const buf *b, const char *want) {
    lm_err err = {{0}};
    gguf_file *f = gguf_open_mem(b->p, b->n, "bad.gguf", &err);
    if (f) {
        gguf_close(f);
        fail_msg("expected failure containing '%s', but the file opened", want);
    }
    if (!strstr(err.msg, want)) fail_msg("message '%s' lacks '%s'", err.msg, want);
    assert_non_null(strstr(err.msg, "bad.gguf"));
}

static gguf_file *expect_ok(const buf *b) {
    lm_err err = {{0}};
    gguf_file *f = gguf_open_mem(b->p, b->n, "good.gguf", &err);
    if (!f) fail_msg("unexpected failure: %s", err.msg);
    return f;
}

static char *tmp_path(const char *tag) {
    char *p = malloc(256);
    snprintf(p, 256, "%s/lm_test_gguf_%d_%s.gguf", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid(), tag);
    return p;
}

static uint8_t *slurp(const char *path, size_t *n) {
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long sz = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *p = malloc((size_t)sz + 1);
    assert_int_equal(fread(p, 1, (size_t)sz, fp), (size_t)sz);
    fclose(fp);
    *n = (size_t)sz;
    return p;
}

/* ---- round trip -------------------------------------------------------- */

static const uint8_t A_U8[] = {0, 1, 255};
static const int8_t A_I8[] = {-128, 0, 127};
static const uint16_t A_U16[] = {0, 65535};
static const int16_t A_I16[] = {-32768, 32767, -1};
static const uint32_t A_U32[] = {0, 4294967295u};
static const int32_t A_I32[] = {INT32_MIN, 3, -3};
static const float A_F32[] = {1.5f, -0.0f, 3.4e38f};
static const uint8_t A_BOOL[] = {1, 0, 1, 1};
static const uint64_t A_U64[] = {UINT64_MAX, 0};
static const int64_t A_I64[] = {INT64_MIN, INT64_MAX};
static const double A_F64[] = {1e300, -2.5};

#define N(a) (sizeof(a) / sizeof((a)[0]))

typedef struct tspec { const char *name; lm_dtype type; int nd; int64_t ne[4]; } tspec;
static const tspec TS[] = {
    {"f32", LM_F32, 2, {8, 3, 1, 1}},
    {"f16", LM_F16, 1, {4, 1, 1, 1}},
    {"bf16", LM_BF16, 3, {2, 2, 2, 1}},
    {"q8_0", LM_Q8_0, 2, {64, 2, 1, 1}},
    {"q4_0", LM_Q4_0, 4, {32, 1, 1, 2}},
    {"blk.0.attn_q.weight", LM_Q4_1, 1, {32, 1, 1, 1}},
};

static size_t ts_bytes(const tspec *t) {
    return lm_dtype_row_bytes(t->type, t->ne[0]) * (size_t)(t->ne[1] * t->ne[2] * t->ne[3]);
}

/* Deterministic tensor contents: byte i of tensor k. */
static uint8_t tbyte(size_t k, size_t i) { return (uint8_t)(k * 31 + i * 7 + 1); }

static gguf_writer *build_writer(uint32_t alignment) {
    lm_err err = {{0}};
    gguf_writer *w = gguf_writer_new();
    assert_non_null(w);
    assert_int_equal(gguf_set_str(w, "general.architecture", "llama", &err), 0);
    assert_int_equal(gguf_set_u32(w, "u32", 7, &err), 0);
    assert_int_equal(gguf_set_u32(w, "u32", 4000000000u, &err), 0); /* replaces */
    assert_int_equal(gguf_set_i32(w, "i32", -5, &err), 0);
    assert_int_equal(gguf_set_u64(w, "u64", 1ull << 40, &err), 0);
    assert_int_equal(gguf_set_f32(w, "f32", 0.1f, &err), 0);
    assert_int_equal(gguf_set_bool(w, "bool", true, &err), 0);
    assert_int_equal(gguf_set_str(w, "empty", "", &err), 0);
    if (alignment) assert_int_equal(gguf_set_u32(w, "general.alignment", alignment, &err), 0);
    assert_int_equal(gguf_set_arr(w, "a.u8", GGUF_U8, A_U8, N(A_U8), &err), 0);
    assert_int_equal(gguf_set_arr(w, "a.i8", GGUF_I8, A_I8, N(A_I8), &err), 0);
    assert_int_equal(gguf_set_arr(w, "a.u16", GGUF_U16, A_U16, N(A_U16), &err), 0);
    assert_int_equal(gguf_set_arr(w, "a.i16", GGUF_I16, A_I16, N(A_I16), &err), 0);
    assert_int_equal(gguf_set_arr(w, "a.u32", GGUF_U32, A_U32, N(A_U32), &err), 0);
    assert_int_equal(gguf_set_arr(w, "a.i32", GGUF_I32, A_I32, N(A_I32), &err), 0);
    assert_int_equal(gguf_set_arr(w, "a.f32", GGUF_F32, A_F32, N(A_F32), &err), 0);
    assert_int_equal(gguf_set_arr(w, "a.bool", GGUF_BOOL, A_BOOL, N(A_BOOL), &err), 0);
    assert_int_equal(gguf_set_arr(w, "a.u64", GGUF_U64, A_U64, N(A_U64), &err), 0);
    assert_int_equal(gguf_set_arr(w, "a.i64", GGUF_I64, A_I64, N(A_I64), &err), 0);
    assert_int_equal(gguf_set_arr(w, "a.f64", GGUF_F64, A_F64, N(A_F64), &err), 0);
    assert_int_equal(gguf_set_arr(w, "a.empty", GGUF_I32, NULL, 0, &err), 0);
    const char *strs[] = {"Ġhello", "", "<|im_end|>"};
    assert_int_equal(gguf_set_arr_str(w, "a.str", strs, 3, &err), 0);
    for (size_t k = 0; k < N(TS); k++) {
        size_t nb = ts_bytes(&TS[k]);
        uint8_t *d = malloc(nb);
        for (size_t i = 0; i < nb; i++) d[i] = tbyte(k, i);
        if (TS[k].type == LM_F32) /* keep floats finite; irrelevant to the format */
            for (size_t i = 0; i < nb / 4; i++) ((float *)(void *)d)[i] = (float)i - 3.25f;
        assert_int_equal(gguf_add_tensor(w, TS[k].name, TS[k].type, TS[k].nd, TS[k].ne, d, nb, &err), 0);
        free(d);
    }
    return w;
}

static void check_arr(const gguf_file *f, const char *key, gguf_type et, const void *data, size_t n, size_t es) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    assert_non_null(kv);
    assert_int_equal(kv->type, GGUF_ARRAY);
    assert_int_equal(kv->arr_type, et);
    assert_int_equal(kv->arr_n, n);
    if (n) assert_memory_equal(kv->arr_data, data, n * es);
}

static void check_file(const gguf_file *f, size_t align) {
    lm_err err = {{0}};
    assert_int_equal(f->version, 3);
    assert_int_equal(f->alignment, align);
    assert_int_equal(f->data_offset % align, 0);
    char *s = gguf_get_str(f, "general.architecture", &err);
    assert_string_equal(s, "llama");
    free(s);
    uint32_t u = 0;
    assert_int_equal(gguf_get_u32(f, "u32", &u, &err), 0);
    assert_int_equal(u, 4000000000u);
    const gguf_kv *kv = gguf_find_kv(f, "i32");
    assert_int_equal(kv->type, GGUF_I32);
    assert_int_equal(kv->v.i, -5);
    kv = gguf_find_kv(f, "u64");
    assert_int_equal(kv->type, GGUF_U64);
    assert_true(kv->v.u == (1ull << 40));
    float x = 0;
    assert_int_equal(gguf_get_f32(f, "f32", &x, &err), 0);
    assert_true(x == 0.1f);
    kv = gguf_find_kv(f, "bool");
    assert_int_equal(kv->type, GGUF_BOOL);
    assert_true(kv->v.b);
    kv = gguf_find_kv(f, "empty");
    assert_int_equal(kv->type, GGUF_STRING);
    assert_int_equal(kv->v.s.len, 0);
    check_arr(f, "a.u8", GGUF_U8, A_U8, N(A_U8), 1);
    check_arr(f, "a.i8", GGUF_I8, A_I8, N(A_I8), 1);
    check_arr(f, "a.u16", GGUF_U16, A_U16, N(A_U16), 2);
    check_arr(f, "a.i16", GGUF_I16, A_I16, N(A_I16), 2);
    check_arr(f, "a.u32", GGUF_U32, A_U32, N(A_U32), 4);
    check_arr(f, "a.i32", GGUF_I32, A_I32, N(A_I32), 4);
    check_arr(f, "a.f32", GGUF_F32, A_F32, N(A_F32), 4);
    check_arr(f, "a.bool", GGUF_BOOL, A_BOOL, N(A_BOOL), 1);
    check_arr(f, "a.u64", GGUF_U64, A_U64, N(A_U64), 8);
    check_arr(f, "a.i64", GGUF_I64, A_I64, N(A_I64), 8);
    check_arr(f, "a.f64", GGUF_F64, A_F64, N(A_F64), 8);
    check_arr(f, "a.empty", GGUF_I32, NULL, 0, 4);
    kv = gguf_find_kv(f, "a.i16");
    assert_int_equal(gguf_arr_get_i64(kv, 0), -32768);
    assert_int_equal(gguf_arr_get_i64(kv, 2), -1);
    assert_int_equal(gguf_arr_get_i64(kv, 3), 0); /* out of range */
    assert_true(gguf_arr_get_f64(gguf_find_kv(f, "a.f64"), 1) == -2.5);
    assert_true(gguf_arr_get_i64(gguf_find_kv(f, "a.u64"), 0) == -1); /* UINT64_MAX bit pattern */
    kv = gguf_find_kv(f, "a.str");
    assert_int_equal(kv->arr_type, GGUF_STRING);
    assert_int_equal(kv->arr_n, 3);
    assert_int_equal(kv->arr_strs[0].len, strlen("Ġhello"));
    assert_memory_equal(kv->arr_strs[0].ptr, "Ġhello", strlen("Ġhello"));
    assert_int_equal(kv->arr_strs[1].len, 0);
    assert_memory_equal(kv->arr_strs[2].ptr, "<|im_end|>", 10);

    assert_int_equal(f->n_tensors, N(TS));
    for (size_t k = 0; k < N(TS); k++) {
        const gguf_tensor *t = gguf_find_tensor(f, TS[k].name);
        assert_non_null(t);
        assert_ptr_equal(t, &f->tensors[k]); /* order kept */
        assert_int_equal(t->type, TS[k].type);
        assert_int_equal(t->n_dims, TS[k].nd);
        for (int d = 0; d < 4; d++) assert_int_equal(t->ne[d], TS[k].ne[d]);
        assert_int_equal(t->nbytes, ts_bytes(&TS[k]));
        assert_int_equal(t->offset % align, 0);
        assert_int_equal(((const uint8_t *)t->data - f->map) % align, 0);
        const uint8_t *d = t->data;
        if (TS[k].type == LM_F32) {
            for (size_t i = 0; i < t->nbytes / 4; i++) {
                float v;
                memcpy(&v, d + 4 * i, 4);
                assert_true(v == (float)i - 3.25f);
            }
        } else {
            for (size_t i = 0; i < t->nbytes; i++) assert_int_equal(d[i], tbyte(k, i));
        }
    }
    assert_null(gguf_find_tensor(f, "nope"));
    assert_null(gguf_find_kv(f, "nope"));
}

static void test_round_trip(void **state) {
    (void)state;
    lm_err err = {{0}};
    uint32_t aligns[] = {0, 64, 8};
    for (size_t a = 0; a < N(aligns); a++) {
        gguf_writer *w = build_writer(aligns[a]);
        char *path = tmp_path("rt");
        if (gguf_write(w, path, &err)) fail_msg("%s", err.msg);
        gguf_writer_free(w);
        gguf_file *f = gguf_open(path, &err);
        if (!f) fail_msg("%s", err.msg);
        check_file(f, aligns[a] ? aligns[a] : 32);
        /* copy_kvs into a second writer reproduces the metadata exactly */
        gguf_writer *w2 = gguf_writer_new();
        assert_int_equal(gguf_copy_kvs(w2, f, &err), 0);
        for (uint64_t i = 0; i < f->n_tensors; i++) {
            const gguf_tensor *t = &f->tensors[i];
            assert_int_equal(gguf_add_tensor(w2, t->name, t->type, t->n_dims, t->ne, t->data, t->nbytes, &err), 0);
        }
        char *path2 = tmp_path("rt2");
        assert_int_equal(gguf_write(w2, path2, &err), 0);
        gguf_writer_free(w2);
        size_t n1, n2;
        uint8_t *b1 = slurp(path, &n1), *b2 = slurp(path2, &n2);
        assert_int_equal(n1, n2);
        assert_memory_equal(b1, b2, n1); /* byte-identical re-serialization */
        free(b1);
        free(b2);
        gguf_close(f);
        unlink(path);
        unlink(path2);
        free(path);
        free(path2);
    }
}

/* Scalars the setters cannot make (u8, i8, u16, i16, i64, f64) read from a
 * hand-built file, and survive gguf_copy_kvs + write. */
static void test_all_scalar_types(void **state) {
    (void)state;
    buf b = {0};
    b_hdr(&b, 2, 0, 6);
    b_str(&b, "u8"); b_u32(&b, GGUF_U8); b_le(&b, 200, 1);
    b_str(&b, "i8"); b_u32(&b, GGUF_I8); b_le(&b, 0x80, 1);
    b_str(&b, "u16"); b_u32(&b, GGUF_U16); b_le(&b, 65000, 2);
    b_str(&b, "i16"); b_u32(&b, GGUF_I16); b_le(&b, 0xfffe, 2);
    b_str(&b, "i64"); b_u32(&b, GGUF_I64); b_u64(&b, (uint64_t)-3);
    double d = -1.25e-300;
    uint64_t du;
    memcpy(&du, &d, 8);
    b_str(&b, "f64"); b_u32(&b, GGUF_F64); b_u64(&b, du);
    gguf_file *f = expect_ok(&b);
    assert_int_equal(f->version, 2);
    assert_int_equal(gguf_find_kv(f, "u8")->v.u, 200);
    assert_int_equal(gguf_find_kv(f, "i8")->v.i, -128);
    assert_int_equal(gguf_find_kv(f, "u16")->v.u, 65000);
    assert_int_equal(gguf_find_kv(f, "i16")->v.i, -2);
    assert_int_equal(gguf_find_kv(f, "i64")->v.i, -3);
    assert_true(gguf_find_kv(f, "f64")->v.f == d);
    lm_err err = {{0}};
    uint32_t u = 0;
    assert_int_equal(gguf_get_u32(f, "u8", &u, &err), 0);
    assert_int_equal(u, 200);
    assert_int_equal(gguf_get_u32(f, "i8", &u, &err), -1);
    assert_non_null(strstr(err.msg, "'i8'"));
    assert_int_equal(gguf_get_u32(f, "missing", &u, &err), -1);
    assert_non_null(strstr(err.msg, "key 'missing' missing"));
    u = 77;
    assert_int_equal(gguf_get_u32_opt(f, "missing", &u, &err), 0);
    assert_int_equal(u, 77);
    float x;
    assert_int_equal(gguf_get_f32(f, "u16", &x, &err), -1);
    assert_non_null(strstr(err.msg, "expected a float"));
    assert_int_equal(gguf_get_f32(f, "f64", &x, &err), 0);
    assert_null(gguf_get_str(f, "u8", &err));
    assert_non_null(strstr(err.msg, "expected a string"));

    gguf_writer *w = gguf_writer_new();
    assert_int_equal(gguf_copy_kvs(w, f, &err), 0);
    char *path = tmp_path("scal");
    assert_int_equal(gguf_write(w, path, &err), 0);
    gguf_writer_free(w);
    size_t n;
    uint8_t *out = slurp(path, &n);
    /* v3 header, then exactly the same kv bytes (they are already canonical) */
    assert_true(n >= b.n);
    assert_memory_equal(out + 24, b.p + 24, b.n - 24);
    gguf_close(f);
    free(out);
    unlink(path);
    free(path);
    free(b.p);
}

/* Every prefix of a valid file that cuts into metadata or tensor data must
 * fail cleanly; prefixes that only drop trailing padding stay valid. */
static void test_truncation(void **state) {
    (void)state;
    lm_err err = {{0}};
    gguf_writer *w = build_writer(0);
    char *path = tmp_path("trunc");
    assert_int_equal(gguf_write(w, path, &err), 0);
    gguf_writer_free(w);
    size_t n;
    uint8_t *full = slurp(path, &n);
    gguf_file *f = gguf_open_mem(full, n, "full", &err);
    assert_non_null(f);
    size_t end = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        size_t e = f->data_offset + (size_t)f->tensors[i].offset + f->tensors[i].nbytes;
        if (e > end) end = e;
    }
    gguf_close(f);
    for (size_t len = 0; len <= n; len++) {
        uint8_t *p = malloc(len ? len : 1); /* exact-size copy so ASan sees overreads */
        memcpy(p, full, len);
        lm_err e2 = {{0}};
        f = gguf_open_mem(p, len, "cut.gguf", &e2);
        if (len < end) {
            if (f) fail_msg("prefix of %zu bytes (of %zu) opened", len, n);
            assert_non_null(strstr(e2.msg, "cut.gguf"));
        } else {
            if (!f) fail_msg("prefix of %zu bytes failed: %s", len, e2.msg);
        }
        gguf_close(f);
        free(p);
    }
    free(full);
    unlink(path);
    free(path);
}

/* Random single-byte corruptions: any outcome but a crash is acceptable. */
static void test_byte_flips(void **state) {
    (void)state;
    lm_err err = {{0}};
    gguf_writer *w = build_writer(0);
    char *path = tmp_path("flip");
    assert_int_equal(gguf_write(w, path, &err), 0);
    gguf_writer_free(w);
    size_t n;
    uint8_t *full = slurp(path, &n);
    const uint8_t vals[] = {0x00, 0xff, 0x80, 0x7f, 0x01, 0x40};
    for (size_t i = 0; i < n; i++) {
        for (size_t v = 0; v < N(vals); v++) {
            uint8_t *p = malloc(n);
            memcpy(p, full, n);
            p[i] = vals[v];
            lm_err e2 = {{0}};
            gguf_file *f = gguf_open_mem(p, n, "flip.gguf", &e2);
            if (f) {
                unsigned sum = 0; /* touch every tensor byte */
                for (uint64_t t = 0; t < f->n_tensors; t++)
                    for (size_t j = 0; j < f->tensors[t].nbytes; j++) sum += ((const uint8_t *)f->tensors[t].data)[j];
                (void)sum;
                gguf_close(f);
            } else {
                assert_true(e2.msg[0] != '\0');
            }
            free(p);
        }
    }
    free(full);
    unlink(path);
    free(path);
}

/* ---- hostile inputs, each with the phrase its error must contain ------- */

static void test_hostile(void **state) {
    (void)state;
    buf b = {0};
    uint64_t ne1[1] = {32}, ne2[2] = {32, 2};

#define CASE(want, ...) do { b.n = 0; __VA_ARGS__; expect_fail(&b, want); } while (0)
    CASE("not a GGUF file", b_put(&b, "GGU", 3));
    CASE("not a GGUF file", b_put(&b, "GGML", 4); b_u32(&b, 3); b_u64(&b, 0); b_u64(&b, 0));
    CASE("version 1, expected 2 or 3", b_hdr(&b, 1, 0, 0));
    CASE("version 4", b_hdr(&b, 4, 0, 0));
    CASE("truncated", b_put(&b, "GGUF", 4); b_u32(&b, 3); b_u64(&b, 0));
    CASE("claims 1000000 metadata", b_hdr(&b, 3, 0, 1000000));
    CASE("claims 18446744073709551615 tensors", b_hdr(&b, 3, UINT64_MAX, 0));
    CASE("key of metadata entry 0 has length 18446744073709551615",
         b_hdr(&b, 3, 0, 1); b_u64(&b, UINT64_MAX); b_u32(&b, 0); b_le(&b, 0, 4));
    CASE("empty key", b_hdr(&b, 3, 0, 1); b_str(&b, ""); b_u32(&b, GGUF_U8); b_zeros(&b, 9));
    CASE("NUL", b_hdr(&b, 3, 0, 1); b_u64(&b, 3); b_put(&b, "a\0b", 3); b_u32(&b, GGUF_U8); b_le(&b, 0, 1));
    CASE("value type 13 is not a GGUF type",
         b_hdr(&b, 3, 0, 1); b_str(&b, "k"); b_u32(&b, 13); b_le(&b, 0, 8));
    CASE("string value of key 'k' has length 1000",
         b_hdr(&b, 3, 0, 1); b_str(&b, "k"); b_u32(&b, GGUF_STRING); b_u64(&b, 1000); b_put(&b, "abc", 3));
    CASE("bool value is 2", b_hdr(&b, 3, 0, 1); b_str(&b, "k"); b_u32(&b, GGUF_BOOL); b_le(&b, 2, 1));
    CASE("array element type 77",
         b_hdr(&b, 3, 0, 1); b_str(&b, "k"); b_u32(&b, GGUF_ARRAY); b_u32(&b, 77); b_u64(&b, 0));
    CASE("nested arrays",
         b_hdr(&b, 3, 0, 1); b_str(&b, "k"); b_u32(&b, GGUF_ARRAY); b_u32(&b, GGUF_ARRAY); b_u64(&b, 1);
         b_u32(&b, GGUF_U8); b_u64(&b, 0));
    CASE("array of 2305843009213693952 u64",
         b_hdr(&b, 3, 0, 1); b_str(&b, "k"); b_u32(&b, GGUF_ARRAY); b_u32(&b, GGUF_U64);
         b_u64(&b, 1ull << 61); b_u64(&b, 0));
    CASE("array of 4611686018427387904 strings",
         b_hdr(&b, 3, 0, 1); b_str(&b, "k"); b_u32(&b, GGUF_ARRAY); b_u32(&b, GGUF_STRING); b_u64(&b, 1ull << 62));
    CASE("element 1",
         b_hdr(&b, 3, 0, 1); b_str(&b, "k"); b_u32(&b, GGUF_ARRAY); b_u32(&b, GGUF_STRING); b_u64(&b, 2);
         b_str(&b, "x"); b_u64(&b, 500); b_u64(&b, 0));
    CASE("duplicate key 'k'",
         b_hdr(&b, 3, 0, 2); b_str(&b, "k"); b_u32(&b, GGUF_U8); b_le(&b, 1, 1);
         b_str(&b, "k"); b_u32(&b, GGUF_U8); b_le(&b, 1, 1));
    CASE("general.alignment is 48, expected a power of two",
         b_hdr(&b, 3, 0, 1); b_str(&b, "general.alignment"); b_u32(&b, GGUF_U32); b_u32(&b, 48));
    CASE("general.alignment is 0",
         b_hdr(&b, 3, 0, 1); b_str(&b, "general.alignment"); b_u32(&b, GGUF_U32); b_u32(&b, 0));
    CASE("general.alignment has type string, expected u32",
         b_hdr(&b, 3, 0, 1); b_str(&b, "general.alignment"); b_u32(&b, GGUF_STRING); b_str(&b, "32"));
    CASE("general.alignment has type u64, expected u32",
         b_hdr(&b, 3, 0, 1); b_str(&b, "general.alignment"); b_u32(&b, GGUF_U64); b_u64(&b, 32));
    CASE("tensor 't' has 0 dimensions", b_hdr(&b, 3, 1, 0); b_ti(&b, "t", 0, ne1, LM_F32, 0); b_pad(&b, 32));
    CASE("tensor 't' has 5 dimensions",
         b_hdr(&b, 3, 1, 0); uint64_t ne5[5] = {1, 1, 1, 1, 1}; b_ti(&b, "t", 5, ne5, LM_F32, 0); b_pad(&b, 32));
    CASE("tensor 't': ne[1] = 0", b_hdr(&b, 3, 1, 0); uint64_t z[2] = {32, 0}; b_ti(&b, "t", 2, z, LM_F32, 0));
    CASE("ne[0] = 18446744073709551615",
         b_hdr(&b, 3, 1, 0); uint64_t z[1] = {UINT64_MAX}; b_ti(&b, "t", 1, z, LM_F32, 0));
    CASE("element count overflows",
         b_hdr(&b, 3, 1, 0); uint64_t z[3] = {1ull << 31, 1ull << 31, 1ull << 31}; b_ti(&b, "t", 3, z, LM_F32, 0));
    CASE("byte size overflows",
         b_hdr(&b, 3, 1, 0); uint64_t z[2] = {1ull << 31, 1ull << 31}; b_ti(&b, "t", 2, z, LM_F32, 0));
    CASE("tensor 'blk.0.ffn_down.weight' has type Q6_K (14), which is not supported",
         b_hdr(&b, 3, 1, 0); b_ti(&b, "blk.0.ffn_down.weight", 2, ne2, 14, 0); b_pad(&b, 32); b_zeros(&b, 420));
    CASE("has type unknown (99)", b_hdr(&b, 3, 1, 0); b_ti(&b, "t", 1, ne1, 99, 0));
    CASE("Q8_1 (9)", b_hdr(&b, 3, 1, 0); b_ti(&b, "t", 1, ne1, LM_Q8_1, 0));
    CASE("row length ne[0] = 33 is not a multiple of the Q8_0 block size 32",
         b_hdr(&b, 3, 1, 0); uint64_t z[1] = {33}; b_ti(&b, "t", 1, z, LM_Q8_0, 0));
    CASE("data offset 4 is not a multiple of the alignment 32",
         b_hdr(&b, 3, 1, 0); b_ti(&b, "t", 1, ne1, LM_F32, 4); b_pad(&b, 32); b_zeros(&b, 160));
    CASE("runs past the end",
         b_hdr(&b, 3, 1, 0); b_ti(&b, "t", 1, ne1, LM_F32, 0); b_pad(&b, 32); b_zeros(&b, 127));
    CASE("runs past the end",
         b_hdr(&b, 3, 1, 0); b_ti(&b, "t", 1, ne1, LM_F32, UINT64_MAX - 31); b_pad(&b, 32); b_zeros(&b, 128));
    CASE("data section would start at offset",
         b_hdr(&b, 3, 1, 0); b_ti(&b, "t", 1, ne1, LM_F32, 0));
    CASE("overlap",
         b_hdr(&b, 3, 2, 0); b_ti(&b, "a", 1, ne1, LM_F32, 0); b_ti(&b, "b", 1, ne1, LM_F32, 96);
         b_pad(&b, 32); b_zeros(&b, 256));
    CASE("duplicate tensor name 'a'",
         b_hdr(&b, 3, 2, 0); b_ti(&b, "a", 1, ne1, LM_F32, 0); b_ti(&b, "a", 1, ne1, LM_F32, 128);
         b_pad(&b, 32); b_zeros(&b, 256));
    CASE("not 4-byte aligned",
         b_hdr(&b, 3, 1, 1); b_str(&b, "general.alignment"); b_u32(&b, GGUF_U32); b_u32(&b, 1);
         b_ti(&b, "t", 1, ne1, LM_F32, 0); b_zeros(&b, 128));
#undef CASE

    /* Sanity: the builder does make valid files (two adjacent tensors, v2). */
    b.n = 0;
    b_hdr(&b, 2, 2, 0);
    b_ti(&b, "a", 1, ne1, LM_F32, 0);
    b_ti(&b, "b", 2, ne2, LM_Q4_1, 128);
    b_pad(&b, 32);
    b_zeros(&b, 128 + 40);
    gguf_file *f = expect_ok(&b);
    assert_int_equal(f->tensors[1].nbytes, 40);
    gguf_close(f);
    free(b.p);
}

static void test_open_errors(void **state) {
    (void)state;
    lm_err err = {{0}};
    assert_null(gguf_open("/nonexistent/x.gguf", &err));
    assert_non_null(strstr(err.msg, "/nonexistent/x.gguf"));
    assert_null(gguf_open("/tmp", &err));
    assert_non_null(strstr(err.msg, "not a regular file"));
    char *path = tmp_path("empty");
    FILE *fp = fopen(path, "wb");
    fclose(fp);
    assert_null(gguf_open(path, &err));
    assert_non_null(strstr(err.msg, "empty"));
    unlink(path);
    free(path);
    gguf_close(NULL);
    gguf_writer_free(NULL);
}

static void test_writer_errors(void **state) {
    (void)state;
    lm_err err = {{0}};
    gguf_writer *w = gguf_writer_new();
    float d[64] = {0};
    int64_t ne[2] = {32, 2};
    assert_int_equal(gguf_add_tensor(w, "t", LM_F32, 2, ne, d, 256, &err), 0);
    assert_int_equal(gguf_add_tensor(w, "t", LM_F32, 2, ne, d, 256, &err), -1);
    assert_non_null(strstr(err.msg, "duplicate tensor 't'"));
    assert_int_equal(gguf_add_tensor(w, "u", LM_F32, 2, ne, d, 255, &err), -1);
    assert_non_null(strstr(err.msg, "255 bytes given"));
    int64_t bad[1] = {31};
    assert_int_equal(gguf_add_tensor(w, "v", LM_Q8_0, 1, bad, d, 34, &err), -1);
    assert_non_null(strstr(err.msg, "not a multiple"));
    assert_int_equal(gguf_add_tensor(w, "w", LM_Q8_1, 1, ne, d, 36, &err), -1);
    char longname[80];
    memset(longname, 'x', sizeof longname - 1);
    longname[79] = 0;
    assert_int_equal(gguf_add_tensor(w, longname, LM_F32, 1, ne, d, 128, &err), -1);
    assert_non_null(strstr(err.msg, "at most 63"));
    assert_int_equal(gguf_set_arr(w, "k", GGUF_STRING, d, 1, &err), -1);
    assert_int_equal(gguf_set_str(w, "general.alignment", "x", &err), 0);
    assert_int_equal(gguf_write(w, "/tmp/never_written.gguf", &err), -1);
    assert_non_null(strstr(err.msg, "expected u32"));
    assert_int_equal(gguf_set_u32(w, "general.alignment", 32, &err), 0);
    assert_int_equal(gguf_write(w, "/nonexistent-dir/x.gguf", &err), -1);
    assert_non_null(strstr(err.msg, "/nonexistent-dir/x.gguf.tmp"));
    gguf_writer_free(w);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_all_scalar_types),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_byte_flips),
        cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_writer_errors),
    };
    return cmocka_run_group_tests_name("gguf", tests, NULL, NULL);
}
