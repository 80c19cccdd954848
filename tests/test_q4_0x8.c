/* Q4_0 x8 repacked weights (tensor/q4_0x8.h): the repack keeps every
 * value; with every kernel set, lm_matmul on the repacked matrix gives bit
 * for bit what it gives on the original Q4_0 rows (the same arithmetic by
 * design), agrees with a straightforward scalar reference, and does not
 * depend on the thread count nor on m (a token alone = the same token in a
 * batch), for m = 1, m not a multiple of the tile height, several n and k;
 * and the avx512 set gives the avx2 set's y bit for bit (as llama.cpp's
 * AVX-512 and AVX2 builds agree), where the CPU has it. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/pool.h"
#include "tensor/dtype.h"
#include "tensor/kernels.h"
#include "tensor/ops.h"
#include "tensor/q4_0x8.h"

typedef struct rng { uint64_t s; } rng;
static uint32_t rng_u32(rng *r) {
    r->s ^= r->s << 13, r->s ^= r->s >> 7, r->s ^= r->s << 17;
    return (uint32_t)(r->s >> 11);
}
static float rng_f(rng *r) { return (float)((double)rng_u32(r) / 2147483648.0 - 1.0); }

/* Block-varying magnitudes, a few outliers, one all-zero block (amax 0). */
static void fill(rng *r, float *v, size_t n) {
    for (size_t i = 0; i < n; i++) {
        v[i] = rng_f(r) * (float)(1 + (i / 32) % 5) * 0.7f;
        if (rng_u32(r) % 50 == 0) v[i] *= 8.0f;
    }
    if (n >= 64) memset(v + 32, 0, 32 * sizeof(float));
}

/* W[n, k] in Q4_0 from random floats. */
static void *make_q4_0(rng *r, int n, int k) {
    float *src = malloc((size_t)n * k * sizeof *src);
    const size_t rb = lm_dtype_row_bytes(LM_Q4_0, k);
    unsigned char *w = malloc((size_t)n * rb);
    assert_true(src && w);
    fill(r, src, (size_t)n * k);
    for (int j = 0; j < n; j++) lm_quant_row(LM_Q4_0, src + (size_t)j * k, w + (size_t)j * rb, k);
    free(src);
    return w;
}

static void *repack(const void *w, int n, int k) {
    const size_t bytes = lm_q4x8_bytes(n, k);
    assert_int_equal(bytes, (size_t)n * lm_dtype_row_bytes(LM_Q4_0, k));
    void *out = malloc(bytes);
    assert_non_null(out);
    lm_q4x8_repack(w, n, k, out);
    return out;
}

static const lm_kernels *const *sets(int *count) {
    /* sets this CPU lacks are skipped: a CI host may have no AVX-512 (the
     * avx512 set is tested wherever the machine has it) */
    static const lm_kernels *list[3];
    int n = 0;
    const char *names[] = {"scalar", "avx2", "avx512"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const lm_kernels *ks = lm_kernels_by_name(names[i]);
        if (ks) list[n++] = ks;
    }
    *count = n;
    return list;
}

static void test_bytes_and_dequant(void **state) {
    (void)state;
    assert_int_equal(lm_q4x8_bytes(12, 64), 0);
    assert_int_equal(lm_q4x8_bytes(16, 48), 0);
    assert_int_equal(lm_q4x8_bytes(0, 64), 0);
    rng r = {7};
    const int n = 24, k = 96;
    void *w = make_q4_0(&r, n, k), *p = repack(w, n, k);
    const size_t rb = lm_dtype_row_bytes(LM_Q4_0, k);
    float a[96], b[96];
    for (int j = 0; j < n; j++) {
        lm_dequant_row(LM_Q4_0, (const unsigned char *)w + (size_t)j * rb, a, k);
        lm_q4x8_dequant_row(p, j, k, b);
        assert_memory_equal(a, b, sizeof a);
    }
    free(w);
    free(p);
}

/* sum over blocks of isum * dw * dx in double: no rounding but the
 * inputs', so the kernels may differ only by f32 accumulation error. */
static void check_reference(const lm_kernels *ks, const float *y, const float *x, const void *w,
                            int m, int n, int k) {
    const int nb = k / LM_QK;
    int8_t *q = malloc((size_t)k);
    float *d = malloc((size_t)nb * sizeof *d);
    assert_true(q && d);
    const lm_block_q4_0 *blk = w;
    for (int i = 0; i < m; i++) {
        ks->quant_x(x + (size_t)i * k, k, q, d, NULL, NULL, 1);
        for (int j = 0; j < n; j++) {
            double ref = 0, mag = 0;
            for (int b = 0; b < nb; b++) {
                const lm_block_q4_0 *wb = blk + (size_t)j * nb + b;
                int isum = 0;
                for (int e = 0; e < LM_QK / 2; e++) {
                    isum += ((wb->q[e] & 0x0f) - 8) * q[b * LM_QK + e];
                    isum += ((wb->q[e] >> 4) - 8) * q[b * LM_QK + e + LM_QK / 2];
                }
                const double t = (double)isum * lm_f16_to_f32(wb->d) * d[b];
                ref += t;
                mag += fabs(t);
            }
            const double got = y[(size_t)i * n + j], tol = (nb + 4) * 0x1p-23 * mag + 1e-30;
            if (fabs(got - ref) > tol)
                fail_msg("%s m %d n %d k %d: y[%d,%d] = %.9g, reference %.9g (tol %g)", ks->name,
                         m, n, k, i, j, got, ref, tol);
        }
    }
    free(q);
    free(d);
}

static void test_matches_q4_0_and_reference(void **state) {
    lm_pool **pools = *state;
    int n_sets;
    const lm_kernels *const *ks = sets(&n_sets);
    const int ms[] = {1, 2, 3, 4, 5, 7, 13, 67};
    const int ns[] = {8, 16, 24, 136};
    const int kk[] = {32, 64, 96, 576};
    rng r = {12345};
    for (size_t ki = 0; ki < sizeof kk / sizeof kk[0]; ki++)
        for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
            const int n = ns[ni], k = kk[ki];
            void *w = make_q4_0(&r, n, k), *p = repack(w, n, k);
            for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++) {
                const int m = ms[mi];
                float *x = malloc(sizeof(float) * (size_t)m * k);
                float *want = malloc(sizeof(float) * (size_t)m * n);
                float *got = malloc(sizeof(float) * (size_t)m * n);
                /* the avx2 set's y, per thread count: llama.cpp's AVX-512 build
                 * runs the repacked GEMM with its AVX2 build's float steps, so
                 * the avx512 set (16 rows a tile where two groups are left)
                 * must give it bit for bit */
                float *y_avx2[2] = {malloc(sizeof(float) * (size_t)m * n), malloc(sizeof(float) * (size_t)m * n)};
                assert_true(x && want && got && y_avx2[0] && y_avx2[1]);
                fill(&r, x, (size_t)m * k);
                for (int s = 0; s < n_sets; s++)
                    for (int t = 0; t < 2; t++) {
                        lm_matmul_with(ks[s], pools[t], want, x, w, LM_Q4_0, m, n, k);
                        lm_matmul_with(ks[s], pools[t], got, x, p, LM_Q4_0_X8, m, n, k);
                        /* the avx2 set follows llama.cpp, whose repacked
                         * kernel sums in another order than its vec_dot */
                        if (!strcmp(ks[s]->name, "scalar") &&
                            memcmp(want, got, sizeof(float) * (size_t)m * n))
                            fail_msg("%s, %d threads, m %d n %d k %d: repacked differs from Q4_0",
                                     ks[s]->name, t + 1, m, n, k);
                        check_reference(ks[s], got, x, w, m, n, k);
                        if (!strcmp(ks[s]->name, "avx2"))
                            memcpy(y_avx2[t], got, sizeof(float) * (size_t)m * n);
                        if (!strcmp(ks[s]->name, "avx512") &&
                            memcmp(y_avx2[t], got, sizeof(float) * (size_t)m * n))
                            fail_msg("avx512, %d threads, m %d n %d k %d: repacked differs from avx2",
                                     t + 1, m, n, k);
                    }
                free(x);
                free(want);
                free(got);
                free(y_avx2[0]);
                free(y_avx2[1]);
            }
            free(w);
            free(p);
        }
}

/* Bit for bit: 1 vs 2 threads, each row of a batch vs that row alone. */
static void test_thread_and_batch_independence(void **state) {
    lm_pool **pools = *state;
    int n_sets;
    const lm_kernels *const *ks = sets(&n_sets);
    rng r = {99};
    const int m = 23, n = 1536, k = 576;
    void *w = make_q4_0(&r, n, k), *p = repack(w, n, k);
    float *x = malloc(sizeof(float) * (size_t)m * k);
    float *y1 = malloc(sizeof(float) * (size_t)m * n), *y2 = malloc(sizeof(float) * (size_t)m * n);
    float *one = malloc(sizeof(float) * (size_t)n);
    assert_true(x && y1 && y2 && one);
    fill(&r, x, (size_t)m * k);
    for (int s = 0; s < n_sets; s++) {
        lm_matmul_with(ks[s], pools[0], y1, x, p, LM_Q4_0_X8, m, n, k);
        lm_matmul_with(ks[s], pools[1], y2, x, p, LM_Q4_0_X8, m, n, k);
        assert_memory_equal(y1, y2, sizeof(float) * (size_t)m * n);
        for (int i = 0; i < m; i++) {
            lm_matmul_with(ks[s], pools[i % 2], one, x + (size_t)i * k, p, LM_Q4_0_X8, 1, n, k);
            if (memcmp(one, y1 + (size_t)i * n, sizeof(float) * (size_t)n))
                fail_msg("%s: row %d alone differs from the same row in a batch", ks[s]->name, i);
        }
    }
    free(x); free(y1); free(y2); free(one); free(w); free(p);
}

/* lm_matmul_multi over repacked parts = one lm_matmul per part. */
static void test_multi(void **state) {
    lm_pool **pools = *state;
    int n_sets;
    const lm_kernels *const *ks = sets(&n_sets);
    rng r = {4242};
    const int k = 64, ns[3] = {64, 16, 0};
    const int ms[] = {1, 6};
    void *w[3], *p[3];
    for (int i = 0; i < 3; i++) {
        const int n = ns[i] ? ns[i] : 8;
        w[i] = make_q4_0(&r, n, k);
        p[i] = repack(w[i], n, k);
    }
    for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++) {
        const int m = ms[mi];
        float x[6 * 64], ref[6 * 64], ys_buf[3][6 * 64];
        fill(&r, x, (size_t)m * k);
        float *ys[3] = {ys_buf[0], ys_buf[1], ys_buf[2]};
        const void *Ws[3] = {p[0], p[1], p[2]};
        for (int s = 0; s < n_sets; s++) {
            lm_matmul_multi_with(ks[s], pools[1], 3, ys, Ws, ns, LM_Q4_0_X8, x, m, k);
            for (int i = 0; i < 2; i++) {
                lm_matmul_with(ks[s], pools[0], ref, x, p[i], LM_Q4_0_X8, m, ns[i], k);
                assert_memory_equal(ref, ys[i], sizeof(float) * (size_t)m * ns[i]);
            }
        }
    }
    for (int i = 0; i < 3; i++) { free(w[i]); free(p[i]); }
}

static int setup(void **state) {
    lm_pool **pools = calloc(2, sizeof *pools);
    if (!pools) return -1;
    lm_err err;
    for (int i = 0; i < 2; i++)
        if (!(pools[i] = lm_pool_new(i + 1, &err))) return -1;
    *state = pools;
    return 0;
}

static int teardown(void **state) {
    lm_pool **pools = *state;
    for (int i = 0; i < 2; i++) lm_pool_free(pools[i]);
    free(pools);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bytes_and_dequant),
        cmocka_unit_test(test_matches_q4_0_and_reference),
        cmocka_unit_test(test_thread_and_batch_independence),
        cmocka_unit_test(test_multi),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
