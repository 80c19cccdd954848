/* The trainer's blocked GEMM (src/train/tmm_x86.c) against the definition
 * it promises: every element of C is the chain c = fmaf(a_k, b_k, c) over
 * k = 0..K-1, from 0 or from C. That is checked bit for bit with libm's
 * fmaf on shapes that cross every blocking edge (K past one KC slice, M
 * past one row block and not a multiple of the tile, N not a multiple of
 * a panel) and for every stride pattern the trainer uses: A row-major or
 * read down its columns (packed), B row-major or read down its columns
 * (transposed while packing); with 1 and 2 threads. The bf16 GEMM
 * (--precision bf16) likewise against its own definition (vdpbf16ps's
 * order on bf16-rounded inputs). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/pool.h"
#include "tensor/kernels.h"
#include "train/tmm.h"

static void fill(float *v, size_t n, uint32_t seed) {
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        v[i] = (float)(seed >> 8) / (float)(1u << 24) * 2.0f - 1.0f;
    }
}

typedef struct gemm_case { int M, N, K, a_cols, b_cols, accumulate; } gemm_case;

/* a_cols: A stored as its transpose (element (i, k) at k*M + i), as dy^T is;
 * b_cols: B stored as its transpose (element (k, j) at j*K + k), as W^T is. */
static void run_case(const gemm_case *g, int kind, lm_pool *pool) {
    int M = g->M, N = g->N, K = g->K;
    float *A = malloc(sizeof(float) * (size_t)M * K), *B = malloc(sizeof(float) * (size_t)K * N);
    float *C = malloc(sizeof(float) * (size_t)M * N), *R = malloc(sizeof(float) * (size_t)M * N);
    assert_true(A && B && C && R);
    fill(A, (size_t)M * K, 1); fill(B, (size_t)K * N, 2); fill(C, (size_t)M * N, 3);
    memcpy(R, C, sizeof(float) * (size_t)M * N);
    long rsa = g->a_cols ? 1 : K, csa = g->a_cols ? M : 1;
    long rsb = g->b_cols ? 1 : N, csb = g->b_cols ? K : 1;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float c = g->accumulate ? R[(size_t)i * N + j] : 0.0f;
            for (int k = 0; k < K; k++) c = fmaf(A[i * rsa + k * csa], B[k * rsb + j * csb], c);
            R[(size_t)i * N + j] = c;
        }
    assert_int_equal(lm_tmm(pool, kind, C, N, A, rsa, csa, B, rsb, csb, M, N, K, g->accumulate), 0);
    for (size_t i = 0; i < (size_t)M * N; i++)
        if (memcmp(&C[i], &R[i], sizeof(float)) != 0)
            fail_msg("kind %d M=%d N=%d K=%d a_cols=%d b_cols=%d acc=%d: element %zu is %.9g, fma chain %.9g",
                     kind, M, N, K, g->a_cols, g->b_cols, g->accumulate, i, C[i], R[i]);
    free(A); free(B); free(C); free(R);
}

static void test_tmm_equals_fma_chain(void **state) {
    (void)state;
    /* the kinds of the kernel sets this machine runs (train_matmul.c maps
     * avx2 and avx512 onto them) */
    int kinds[2], n_kinds = 0;
    if (lm_kernels_by_name("avx2")) kinds[n_kinds++] = LM_TMM_AVX2;
    if (lm_kernels_by_name("avx512")) kinds[n_kinds++] = LM_TMM_AVX512;
    if (n_kinds == 0) skip();
    const gemm_case cases[] = {
        { 530, 70, 300, 0, 0, 0 }, { 530, 70, 300, 0, 1, 1 },   /* y = x W^T shapes */
        { 37, 131, 600, 1, 0, 1 }, { 1100, 45, 19, 1, 0, 0 },   /* dW += dy^T x */
        { 7, 600, 513, 0, 0, 1 },  { 1, 1, 1, 0, 0, 0 },        /* dx += dy W, degenerate */
        { 13, 17, 9, 1, 1, 1 },
    };
    lm_err err = {{0}};
    lm_pool *pool = lm_pool_new(2, &err);
    assert_non_null(pool);
    for (int t = 0; t < n_kinds; t++)
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            run_case(&cases[i], kinds[t], NULL);
            run_case(&cases[i], kinds[t], pool);
        }
    lm_pool_free(pool);
}

/* bf16 as lm_tmm_bf16 rounds it (nearest even; the test data has no
 * denormals or NaNs), back as f32. */
static float bf16_round(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* lm_tmm_bf16 against its definition: per pair p of k, fma of the odd k
 * then of the even k, on bf16-rounded inputs (vdpbf16ps's order). */
static void run_case_bf16(const gemm_case *g, lm_pool *pool) {
    int M = g->M, N = g->N, K = g->K;
    float *A = malloc(sizeof(float) * (size_t)M * K), *B = malloc(sizeof(float) * (size_t)K * N);
    float *C = malloc(sizeof(float) * (size_t)M * N), *R = malloc(sizeof(float) * (size_t)M * N);
    assert_true(A && B && C && R);
    fill(A, (size_t)M * K, 1); fill(B, (size_t)K * N, 2); fill(C, (size_t)M * N, 3);
    memcpy(R, C, sizeof(float) * (size_t)M * N);
    long rsa = g->a_cols ? 1 : K, csa = g->a_cols ? M : 1;
    long rsb = g->b_cols ? 1 : N, csb = g->b_cols ? K : 1;
    int differs = 0;   /* from the f32 chain somewhere: the rounding really happened */
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float c = g->accumulate ? R[(size_t)i * N + j] : 0.0f, f = c;
            for (int k = 0; k < K; k += 2) {
                if (k + 1 < K)
                    c = fmaf(bf16_round(A[i * rsa + (k + 1) * csa]), bf16_round(B[(k + 1) * rsb + j * csb]), c);
                c = fmaf(bf16_round(A[i * rsa + k * csa]), bf16_round(B[k * rsb + j * csb]), c);
            }
            for (int k = 0; k < K; k++) f = fmaf(A[i * rsa + k * csa], B[k * rsb + j * csb], f);
            R[(size_t)i * N + j] = c;
            differs |= c != f;
        }
    assert_true(differs || K == 0);
    assert_int_equal(lm_tmm_bf16(pool, C, N, A, rsa, csa, B, rsb, csb, M, N, K, g->accumulate), 0);
    for (size_t i = 0; i < (size_t)M * N; i++)
        if (memcmp(&C[i], &R[i], sizeof(float)) != 0)
            fail_msg("bf16 M=%d N=%d K=%d a_cols=%d b_cols=%d acc=%d: element %zu is %.9g, definition %.9g",
                     M, N, K, g->a_cols, g->b_cols, g->accumulate, i, C[i], R[i]);
    free(A); free(B); free(C); free(R);
}

static void test_tmm_bf16_equals_definition(void **state) {
    (void)state;
    if (!lm_kernels_by_name("avx512")) {
        /* no AVX-512 BF16: refused, C untouched */
        float a = 1, b = 1, c = 5;
        assert_int_equal(lm_tmm_bf16(NULL, &c, 1, &a, 1, 1, &b, 1, 1, 1, 1, 1, 0), -1);
        assert_true(c == 5.0f);
        skip();
    }
    const gemm_case cases[] = {
        { 530, 70, 300, 0, 1, 0 }, { 530, 70, 301, 0, 1, 1 },   /* y = x W^T, odd K */
        { 37, 131, 600, 1, 0, 1 }, { 1100, 45, 19, 1, 0, 0 },   /* dW += dy^T x */
        { 7, 600, 513, 0, 0, 1 },  { 1, 1, 1, 0, 0, 0 },        /* dx += dy W, degenerate */
        { 13, 17, 9, 1, 1, 1 },    { 9, 33, 2, 0, 0, 0 },
    };
    lm_err err = {{0}};
    lm_pool *pool = lm_pool_new(2, &err);
    assert_non_null(pool);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        run_case_bf16(&cases[i], NULL);
        run_case_bf16(&cases[i], pool);
    }
    lm_pool_free(pool);
}

static void test_tmm_rejects_unknown_kind(void **state) {
    (void)state;
    float a = 1, b = 1, c = 5;
    assert_int_equal(lm_tmm(NULL, LM_TMM_NONE, &c, 1, &a, 1, 1, &b, 1, 1, 1, 1, 1, 0), -1);
    assert_true(c == 5.0f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tmm_equals_fma_chain),
        cmocka_unit_test(test_tmm_bf16_equals_definition),
        cmocka_unit_test(test_tmm_rejects_unknown_kind),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
