/* Kernels: every kernel set this CPU can run, against a double-precision
 * naive matmul on dequantized weights; thread-count and batch-size
 * independence (bit for bit); rmsnorm, rope, softmax and swiglu against
 * their textbook formulas in double.
 *
 * Tolerances. With quantized W the kernels dot W with x quantized to 8 bit,
 * so they are compared two ways:
 *  - tight, against sum(deq(W) * deq8(x)) in double, where deq8(x) = q*d
 *    from the same activation quantizer: only f32 rounding differs, bounded
 *    by (terms + 8) * 2^-23 * sum|w*x| (recursive-summation bound; the int
 *    block sums are exact);
 *  - loose, against sum(deq(W) * x) with the original x: the 8-bit step
 *    moves each x by at most d/2 (rounding) + 127*d*2^-11 (d stored as f16)
 *    <= 0.57*d, so |err| <= sum |w_e| * 0.57 * d_block (plus, for Q4_1, the
 *    f16 rounding of s = d*sum(q)). */
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

/* ---- helpers -------------------------------------------------------- */

typedef struct rng { uint64_t s; } rng;
static uint32_t rng_u32(rng *r) {
    r->s ^= r->s << 13, r->s ^= r->s >> 7, r->s ^= r->s << 17;
    return (uint32_t)(r->s >> 11);
}
static float rng_f(rng *r) { return (float)((double)rng_u32(r) / 2147483648.0 - 1.0); } /* [-1, 1) */

/* Values with a spread of magnitudes per block, as real activations have;
 * one block of zeros to exercise amax == 0. */
static void fill(rng *r, float *v, size_t n, int zero_block) {
    for (size_t i = 0; i < n; i++) {
        float scale = (float)(1 + (i / 32) % 5) * 0.7f;
        v[i] = rng_f(r) * scale;
        if (rng_u32(r) % 50 == 0) v[i] *= 8.0f; /* outliers */
    }
    if (zero_block && n >= 64) memset(v + 32, 0, 32 * sizeof(float));
}

/* Every set this CPU runs. A set it lacks is skipped, not failed: CI hosts
 * may be AVX2-only; the avx512 set is tested wherever the machine has it
 * (test_avx512_quant_is_avx2 says when it is skipped). */
static const lm_kernels *const *sets(int *count) {
    static const lm_kernels *list[4];
    int n = 0;
    const char *names[] = {"scalar", "avx2", "avx512"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const lm_kernels *ks = lm_kernels_by_name(names[i]);
        if (ks) list[n++] = ks;
    }
    *count = n;
    return list;
}

static const lm_dtype ALL_TYPES[] = {LM_F32, LM_F16, LM_BF16, LM_Q8_0, LM_Q4_0, LM_Q4_1};
#define N_TYPES (sizeof ALL_TYPES / sizeof ALL_TYPES[0])

static int is_quant(lm_dtype t) { return t == LM_Q8_0 || t == LM_Q4_0 || t == LM_Q4_1; }

/* W[n, k] in type t from random floats; wf gets deq(W). */
static void *make_weights(rng *r, lm_dtype t, int n, int k, float *wf) {
    float *src = malloc((size_t)n * k * sizeof *src);
    size_t rb = lm_dtype_row_bytes(t, k);
    unsigned char *w = malloc((size_t)n * rb);
    assert_non_null(src);
    assert_non_null(w);
    fill(r, src, (size_t)n * k, 0);
    for (int j = 0; j < n; j++) {
        lm_quant_row(t, src + (size_t)j * k, w + (size_t)j * rb, k);
        lm_dequant_row(t, w + (size_t)j * rb, wf + (size_t)j * k, k);
    }
    free(src);
    return w;
}

typedef struct pools { lm_pool *p[3]; } pools;

static int setup_pools(void **state) {
    pools *ps = calloc(1, sizeof *ps);
    if (!ps) return -1;
    lm_err err;
    for (int i = 0; i < 3; i++)
        if (!(ps->p[i] = lm_pool_new(i + 1, &err))) return -1;
    *state = ps;
    return 0;
}

static int teardown_pools(void **state) {
    pools *ps = *state;
    for (int i = 0; i < 3; i++) lm_pool_free(ps->p[i]);
    free(ps);
    return 0;
}

/* Checks y[m, n] from one kernel set against both references. */
static void check_against_reference(const lm_kernels *ks, lm_dtype t, const float *y,
                                    const float *x, const float *wf, int m, int n, int k) {
    const int nb = k / LM_QK;
    int8_t *q = malloc((size_t)k);
    float *d = malloc((size_t)(nb + 1) * sizeof *d), *s = malloc((size_t)(nb + 1) * sizeof *s);
    assert_true(q && d && s);
    for (int i = 0; i < m; i++) {
        const float *xi = x + (size_t)i * k;
        if (is_quant(t)) ks->quant_x(xi, k, q, d, s, NULL, 1);
        for (int j = 0; j < n; j++) {
            const float *wj = wf + (size_t)j * k;
            double exact = 0, abs_terms = 0, truth = 0, loose = 0;
            if (!is_quant(t)) {
                /* a set with f16_x / bf16_x rounds x to the weights' type
                 * first, as llama.cpp does: exact on the rounded x, loose on x */
                const int rx16 = t == LM_F16 && ks->f16_x, rxb = t == LM_BF16 && ks->bf16_x;
                for (int e = 0; e < k; e++) {
                    const double xe = rx16 ? lm_round_f16(xi[e])
                                    : rxb ? lm_bf16_to_f32(lm_f32_to_bf16(xi[e])) : xi[e];
                    exact += (double)wj[e] * xe;
                    abs_terms += fabs((double)wj[e] * xe);
                    truth += (double)wj[e] * xi[e];
                    loose += fabs((double)wj[e] * xi[e]) * (rx16 ? 0x1p-11 : rxb ? 0x1p-8 : 0);
                }
            } else {
                for (int b = 0; b < nb; b++) {
                    for (int e = b * LM_QK; e < (b + 1) * LM_QK; e++) {
                        double x8 = (double)q[e] * d[b];
                        exact += (double)wj[e] * x8;
                        abs_terms += fabs((double)wj[e] * x8);
                        truth += (double)wj[e] * xi[e];
                        loose += fabs((double)wj[e]) * 0.57 * d[b] * 1.0001;
                    }
                }
            }
            double got = y[(size_t)i * n + j];
            double tight = (double)(k + 8) * 0x1p-23 * abs_terms + 1e-30;
            /* Q4_1 splits w into dw*nib + mw: see check_q41 */
            if (t == LM_Q4_1) continue;
            if (fabs(got - exact) > tight)
                fail_msg("%s %s m=%d n=%d k=%d y[%d,%d]=%.9g exact %.9g (tol %.3g)", ks->name,
                         lm_dtype_name(t), m, n, k, i, j, got, exact, tight);
            double ltol = loose + tight;
            if (fabs(got - truth) > ltol)
                fail_msg("%s %s m=%d n=%d k=%d y[%d,%d]=%.9g true %.9g (tol %.3g)", ks->name,
                         lm_dtype_name(t), m, n, k, i, j, got, truth, ltol);
        }
    }
    free(q);
    free(d);
    free(s);
}

/* Q4_1, from the block headers. Tight: sum_b dw*dx*isum + mw*s with s as
 * the quantizer stored it. Loose, against the original x: the error is
 * dw*sum(nib*(x - x8)) + mw*(sum(x) - s), where |x - x8| <= 0.57*d and s
 * differs from sum(x8) by its f16 rounding and d's (<= |s|*2^-10). */
static void check_q41(const lm_kernels *ks, const float *y, const float *x, const void *W,
                      int m, int n, int k) {
    const int nb = k / LM_QK;
    int8_t *q = malloc((size_t)k);
    float *d = malloc((size_t)nb * sizeof *d), *s = malloc((size_t)nb * sizeof *s);
    assert_true(q && d && s);
    const lm_block_q4_1 *wb = W;
    for (int i = 0; i < m; i++) {
        ks->quant_x(x + (size_t)i * k, k, q, d, s, NULL, 1);
        for (int j = 0; j < n; j++) {
            const float *xi = x + (size_t)i * k;
            double exact = 0, abs_terms = 0, truth = 0, loose = 0;
            for (int b = 0; b < nb; b++) {
                const lm_block_q4_1 *blk = wb + (size_t)j * nb + b;
                double dw = lm_f16_to_f32(blk->d), mw = lm_f16_to_f32(blk->m);
                long isum = 0, aisum = 0, nsum = 0;
                for (int e = 0; e < LM_QK / 2; e++) {
                    int lo = blk->q[e] & 15, hi = blk->q[e] >> 4;
                    isum += lo * q[b * LM_QK + e] + hi * q[b * LM_QK + e + 16];
                    aisum += labs((long)lo * q[b * LM_QK + e]) + labs((long)hi * q[b * LM_QK + e + 16]);
                    nsum += lo + hi;
                    truth += (dw * lo + mw) * xi[b * LM_QK + e] + (dw * hi + mw) * xi[b * LM_QK + e + 16];
                }
                exact += dw * d[b] * (double)isum + mw * s[b];
                abs_terms += fabs(dw * d[b]) * (double)aisum + fabs(mw * s[b]);
                loose += (fabs(dw) * nsum + fabs(mw) * LM_QK) * 0.57 * d[b] * 1.0001 +
                         fabs(mw * s[b]) * 0x1p-10;
            }
            double got = y[(size_t)i * n + j];
            double tight = (double)(2 * nb + 8) * 0x1p-23 * abs_terms + 1e-30;
            if (fabs(got - exact) > tight)
                fail_msg("%s Q4_1 m=%d n=%d k=%d y[%d,%d]=%.9g exact %.9g (tol %.3g)", ks->name, m,
                         n, k, i, j, got, exact, tight);
            if (fabs(got - truth) > loose + tight)
                fail_msg("%s Q4_1 m=%d n=%d k=%d y[%d,%d]=%.9g true %.9g (tol %.3g)", ks->name, m,
                         n, k, i, j, got, truth, loose + tight);
        }
    }
    free(q);
    free(d);
    free(s);
}

/* ---- matmul tests --------------------------------------------------- */

static void run_matmul_case(pools *ps, lm_dtype t, int m, int n, int k, uint64_t seed) {
    rng r = {seed};
    float *wf = malloc((size_t)n * k * sizeof *wf);
    float *x = malloc((size_t)m * k * sizeof *x);
    float *y[3], *y1 = malloc((size_t)n * sizeof *y1);
    assert_true(wf && x && y1);
    void *W = make_weights(&r, t, n, k, wf);
    fill(&r, x, (size_t)m * k, 1);
    int ns;
    const lm_kernels *const *ks = sets(&ns);
    for (int s = 0; s < ns; s++) {
        for (int p = 0; p < 3; p++) {
            y[p] = malloc((size_t)m * n * sizeof(float));
            assert_non_null(y[p]);
            for (size_t i = 0; i < (size_t)m * n; i++) y[p][i] = NAN;
            lm_matmul_with(ks[s], ps->p[p], y[p], x, W, t, m, n, k);
        }
        /* 1, 2 and 3 threads: bit-identical */
        assert_memory_equal(y[0], y[1], (size_t)m * n * sizeof(float));
        assert_memory_equal(y[0], y[2], (size_t)m * n * sizeof(float));
        check_against_reference(ks[s], t, y[0], x, wf, m, n, k);
        if (t == LM_Q4_1) check_q41(ks[s], y[0], x, W, m, n, k);
        /* a row alone (decode) equals the same row inside the batch, except
         * for float weights, which llama.cpp (whose orders we follow)
         * reduces one way for a single token and another for a batch */
        int rows[] = {0, m / 2, m - 1};
        for (int ri = 0; ri < 3; ri++) {
            lm_matmul_with(ks[s], ps->p[1], y1, x + (size_t)rows[ri] * k, W, t, 1, n, k);
            if (t == LM_F32 || t == LM_F16 || t == LM_BF16)
                check_against_reference(ks[s], t, y1, x + (size_t)rows[ri] * k, wf, 1, n, k);
            else
                assert_memory_equal(y1, y[0] + (size_t)rows[ri] * n, (size_t)n * sizeof(float));
        }
        for (int p = 0; p < 3; p++) free(y[p]);
    }
    free(W);
    free(wf);
    free(x);
    free(y1);
}

static void test_matmul_shapes(void **state) {
    pools *ps = *state;
    const int ms[] = {1, 7, 64};
    const int ns_[] = {1, 5, 37};
    const int ks_[] = {32, 96, 576};
    uint64_t seed = 1;
    for (size_t ti = 0; ti < N_TYPES; ti++)
        for (size_t a = 0; a < 3; a++)
            for (size_t b = 0; b < 3; b++)
                for (size_t c = 0; c < 3; c++)
                    run_matmul_case(ps, ALL_TYPES[ti], ms[a], ns_[b], ks_[c], seed++ * 0x9e3779b97f4a7c15u);
}

/* SmolLM2-sized: more W rows than tasks and tiles, m not a tile multiple. */
static void test_matmul_model_shapes(void **state) {
    pools *ps = *state;
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        run_matmul_case(ps, ALL_TYPES[ti], 1, 1536, 576, 77 + ti);
        run_matmul_case(ps, ALL_TYPES[ti], 13, 301, 1536, 91 + ti);
    }
}

/* lm_matmul_multi (fused Q/K/V, gate/up) gives each part exactly what a
 * lone lm_matmul gives, for every thread count, m and part sizes that do
 * not fill a task or tile (one empty part too). */
static void test_matmul_multi(void **state) {
    pools *ps = *state;
    const int k = 96, ns[3] = {37, 0, 5};
    const int ms[] = {1, 7};
    uint64_t seed = 4242;
    int nsets;
    const lm_kernels *const *ks = sets(&nsets);
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        rng r = {seed++};
        void *W[3];
        float *wf = malloc((size_t)64 * k * sizeof *wf), *x = malloc((size_t)7 * k * sizeof *x);
        assert_true(wf && x);
        for (int p = 0; p < 3; p++) W[p] = make_weights(&r, ALL_TYPES[ti], ns[p] ? ns[p] : 1, k, wf);
        fill(&r, x, (size_t)7 * k, 1);
        for (int s = 0; s < nsets; s++)
            for (size_t mi = 0; mi < 2; mi++)
                for (int th = 0; th < 3; th++) {
                    const int m = ms[mi];
                    float *y[3], *ref[3];
                    for (int p = 0; p < 3; p++) {
                        y[p] = malloc((size_t)m * (ns[p] + 1) * sizeof(float));
                        ref[p] = malloc((size_t)m * (ns[p] + 1) * sizeof(float));
                        assert_true(y[p] && ref[p]);
                        for (int i = 0; i < m * (ns[p] + 1); i++) y[p][i] = ref[p][i] = -1.0f;
                        lm_matmul_with(ks[s], ps->p[0], ref[p], x, W[p], ALL_TYPES[ti], m, ns[p], k);
                    }
                    const void *Wc[3] = {W[0], W[1], W[2]};
                    lm_matmul_multi_with(ks[s], ps->p[th], 3, y, Wc, ns, ALL_TYPES[ti], x, m, k);
                    for (int p = 0; p < 3; p++) {
                        /* the row past the part is untouched (-1) in both */
                        assert_memory_equal(y[p], ref[p], (size_t)m * (ns[p] + 1) * sizeof(float));
                        free(y[p]);
                        free(ref[p]);
                    }
                }
        for (int p = 0; p < 3; p++) free(W[p]);
        free(wf);
        free(x);
    }
}

/* Float weights take any k, not just multiples of 32. */
static void test_matmul_float_odd_k(void **state) {
    pools *ps = *state;
    const int ks_[] = {1, 7, 45, 100};
    for (int i = 0; i < 4; i++) {
        run_matmul_case(ps, LM_F32, 5, 11, ks_[i], 300 + i);
        run_matmul_case(ps, LM_F16, 1, 9, ks_[i], 400 + i);
        run_matmul_case(ps, LM_BF16, 6, 3, ks_[i], 500 + i);
    }
}

/* Q8_0 weights may hold -128 (our quantizer never writes it, other tools
 * might): |w| = 128 must not overflow the 16-bit pair sums. */
static void test_q8_0_extremes(void **state) {
    pools *ps = *state;
    enum { N = 3, K = 64 };
    lm_block_q8_0 W[N * K / LM_QK];
    float wf[N * K], x[K];
    for (int b = 0; b < N * K / LM_QK; b++) {
        W[b].d = lm_f32_to_f16(0.5f);
        for (int j = 0; j < LM_QK; j++) W[b].q[j] = (int8_t)((b + j) % 3 == 0 ? -128 : (j % 2 ? 127 : -127));
    }
    lm_dequant_row(LM_Q8_0, W, wf, N * K);
    for (int e = 0; e < K; e++) x[e] = (e % 2) ? -3.0f : 3.0f; /* quantizes to +-127 */
    int ns;
    const lm_kernels *const *ks = sets(&ns);
    for (int s = 0; s < ns; s++) {
        float y[N];
        lm_matmul_with(ks[s], ps->p[0], y, x, W, LM_Q8_0, 1, N, K);
        check_against_reference(ks[s], LM_Q8_0, y, x, wf, 1, N, K);
    }
}

/* The activation quantizer: every set writes the same bytes as the scalar
 * one, and the scalar one meets its definition. */
static void test_quant_x(void **state) {
    (void)state;
    enum { K = 576, NB = K / LM_QK };
    rng r = {42};
    float x[K];
    fill(&r, x, K, 1);
    x[100] = 1e-30f; /* tiny values round to zero, no UB */
    int8_t q0[K], q1[K];
    float d0[NB], s0[NB], d1[NB], s1[NB];
    int32_t qs0[NB], qs1[NB];
    int ns;
    const lm_kernels *const *ks = sets(&ns);
    ks[0]->quant_x(x, K, q0, d0, s0, qs0, 1);
    for (int b = 0; b < NB; b++) {
        float amax = 0;
        int sum = 0, qmax = 0;
        for (int e = 0; e < LM_QK; e++) amax = fmaxf(amax, fabsf(x[b * LM_QK + e]));
        double dd = amax / 127.0;
        assert_true(fabs(d0[b] - dd) <= dd * 0x1p-11);
        for (int e = 0; e < LM_QK; e++) {
            int qq = q0[b * LM_QK + e];
            sum += qq;
            qmax = abs(qq) > qmax ? abs(qq) : qmax;
            assert_true(qq >= -127 && qq <= 127);
            assert_true(fabs(qq * dd - x[b * LM_QK + e]) <= dd * 0.5 * 1.0001 + 1e-38);
        }
        assert_int_equal(qmax, amax > 0 ? 127 : 0);
        assert_true(fabs(s0[b] - sum * dd) <= fabs(sum * dd) * 0x1p-10 + 1e-38);
        assert_int_equal(qs0[b], sum);
    }
    for (int s = 1; s < ns; s++) {
        memset(q1, 0x55, sizeof q1);
        ks[s]->quant_x(x, K, q1, d1, s1, qs1, 1);
        assert_memory_equal(q0, q1, sizeof q0);
        assert_memory_equal(d0, d1, sizeof d0);
        assert_memory_equal(s0, s1, sizeof s0);
        assert_memory_equal(qs0, qs1, sizeof qs0);
        memset(q1, 0x55, sizeof q1);
        ks[s]->quant_x(x, K, q1, d1, NULL, NULL, 1); /* s and qsum are optional */
        assert_memory_equal(q0, q1, sizeof q0);
        memset(qs1, 0, sizeof qs1);
        ks[s]->quant_x(x, K, q1, d1, NULL, qs1, 1); /* qsum alone */
        assert_memory_equal(qs0, qs1, sizeof qs0);
    }
}

static void test_kernels_name(void **state) {
    (void)state;
    const char *name = lm_kernels_name();
    assert_non_null(name);
    assert_non_null(lm_kernels_by_name(name));
    assert_null(lm_kernels_by_name("no-such-set"));
    /* LEMONPC_KERNELS=scalar (say) forces that set when this CPU has it */
    const char *forced = getenv("LEMONPC_KERNELS");
    if (forced && *forced) assert_string_equal(name, forced);
    assert_null(lm_kernels_by_name(NULL));
    lm_err err = {{0}};
    assert_int_equal(lm_kernels_check(&err), 0);
}

/* LEMONPC_KERNELS's values: unset or empty picks the best set; a known set
 * this CPU runs is that set; anything else is an error naming the value and
 * the sets the machine has, never a silent fallback. */
static void test_kernels_select(void **state) {
    (void)state;
    const lm_kernels *ks = NULL;
    lm_err err = {{0}};
    assert_int_equal(lm_kernels_select(NULL, &ks, &err), 0);
    assert_non_null(ks);
    const lm_kernels *best = ks;
    assert_int_equal(lm_kernels_select("", &ks, &err), 0);
    assert_ptr_equal(ks, best);
#ifdef LM_HAVE_X86_KERNELS
    /* the best set is the widest this CPU runs */
    assert_ptr_equal(best, lm_kernels_by_name("avx512") ? &lm_kernels_avx512
                           : lm_kernels_by_name("avx2") ? &lm_kernels_avx2 : &lm_kernels_scalar);
#endif
    assert_int_equal(lm_kernels_select("scalar", &ks, &err), 0);
    assert_ptr_equal(ks, &lm_kernels_scalar);
    assert_int_equal(lm_kernels_select("avx1024", &ks, &err), -1);
    assert_null(ks);
    assert_non_null(strstr(err.msg, "LEMONPC_KERNELS=avx1024: unknown kernel set"));
    assert_non_null(strstr(err.msg, "scalar"));
    const char *names[] = {"avx2", "avx512"};
    for (int i = 0; i < 2; i++) {
        err.msg[0] = '\0';
        const int rc = lm_kernels_select(names[i], &ks, &err);
        if (lm_kernels_by_name(names[i])) {
            assert_int_equal(rc, 0);
            assert_string_equal(ks->name, names[i]);
        } else {
            assert_int_equal(rc, -1);
            assert_null(ks);
            assert_non_null(strstr(err.msg, "does not support"));
            assert_non_null(strstr(err.msg, names[i]));
        }
    }
}

/* Quantized weights: llama.cpp reduces them alike in its AVX2 and AVX-512
 * builds, so the avx512 set computes every output with the avx2 set's float
 * operations in the same order (matmul_avx512.c): bit for bit the same y,
 * decode and batch tiles, partial tiles, any thread count. (Float weights
 * follow each build's own order: against the reference in
 * test_matmul_shapes, against llama.cpp in tests/oracle.) Skipped, with a
 * note, where the CPU has no AVX-512. */
static void test_avx512_quant_is_avx2(void **state) {
    pools *ps = *state;
    const lm_kernels *a2 = lm_kernels_by_name("avx2"), *a5 = lm_kernels_by_name("avx512");
    if (!a2 || !a5) {
        print_message("avx512 vs avx2: skipped, this CPU lacks %s\n", a2 ? "AVX-512" : "AVX2");
        skip();
    }
    const int ms[] = {1, 2, 4, 5, 13, 64};
    const int ns_[] = {1, 7, 8, 9, 24, 301};
    const int ks_[] = {32, 64, 576, 1536};
    uint64_t seed = 777;
    for (size_t ti = 0; ti < N_TYPES; ti++)
        for (size_t c = 0; c < 4; c++)
            for (size_t b = 0; b < 6; b++) {
                if (!is_quant(ALL_TYPES[ti])) continue;
                const int n = ns_[b], k = ks_[c];
                rng r = {seed++ * 0x9e3779b97f4a7c15u};
                float *wf = malloc((size_t)n * k * sizeof *wf), *x = malloc((size_t)64 * k * sizeof *x);
                float *y2 = malloc((size_t)64 * n * sizeof *y2), *y5 = malloc((size_t)64 * n * sizeof *y5);
                assert_true(wf && x && y2 && y5);
                void *W = make_weights(&r, ALL_TYPES[ti], n, k, wf);
                fill(&r, x, (size_t)64 * k, 1);
                for (size_t a = 0; a < 6; a++) {
                    const int m = ms[a];
                    lm_matmul_with(a2, ps->p[0], y2, x, W, ALL_TYPES[ti], m, n, k);
                    lm_matmul_with(a5, ps->p[a % 3], y5, x, W, ALL_TYPES[ti], m, n, k);
                    if (memcmp(y2, y5, (size_t)m * n * sizeof(float)))
                        fail_msg("%s m=%d n=%d k=%d: avx512 differs from avx2",
                                 lm_dtype_name((int)ALL_TYPES[ti]), m, n, k);
                }
                free(W);
                free(wf);
                free(x);
                free(y2);
                free(y5);
            }
    /* -128 weights (which our quantizer never writes, other tools might) */
    enum { N = 8, K = 64 };
    lm_block_q8_0 W8[N * K / LM_QK];
    rng r = {5};
    for (int i = 0; i < N * K / LM_QK; i++) {
        W8[i].d = lm_f32_to_f16(0.01f * (float)(i + 1));
        for (int e = 0; e < LM_QK; e++) W8[i].q[e] = (int8_t)((rng_u32(&r) % 3 == 0) ? -128 : (int)(rng_u32(&r) % 255) - 127);
    }
    float x[4 * K], y2[4 * N], y5[4 * N];
    fill(&r, x, 4 * K, 0);
    for (int m = 1; m <= 4; m += 3) {
        lm_matmul_with(a2, ps->p[0], y2, x, W8, LM_Q8_0, m, N, K);
        lm_matmul_with(a5, ps->p[0], y5, x, W8, LM_Q8_0, m, N, K);
        assert_memory_equal(y2, y5, sizeof(float) * (size_t)m * N);
    }
}

/* ---- attention ------------------------------------------------------ */

/* Against softmax(scale*K q) V in double. A score's f32 error is at most
 * hd*2^-23*scale*sum|q_i k_i|; an error e in the scores moves every weight
 * by a factor within exp(+-2e); the weighted sum adds (n+4) ulps and expf
 * about one. With an f16 cache (kv 1) the reference takes K, V and q
 * rounded to f16 as the kernels do, and the weights' own rounding to f16
 * adds 2^-11 of each. */
static void test_attn_heads(void **state) {
    (void)state;
    const int hds[] = {64, 24, 12, 128, 40};
    const int nks[] = {1, 5, 100, 333};
    rng r = {21};
    int ns;
    const lm_kernels *const *ks = sets(&ns);
    for (int kv = 0; kv < 2; kv++)
    for (int a = 0; a < 5; a++)
        for (int b = 0; b < 4; b++) {
            const lm_dtype kt = kv ? LM_F16 : LM_F32;
            const size_t es = kv ? 2 : 4;
            const int hd = hds[a], nk = nks[b], stride = 3 * hd + 5, off = hd;
            /* K and V transposed: value i of key p at Kt[i * vt_stride + p],
             * rows padded to a multiple of LM_ATTN_PAD and read up to there */
            const int vt_stride = (nk + LM_ATTN_PAD - 1) / LM_ATTN_PAD * LM_ATTN_PAD + 3;
            float *K = malloc((size_t)nk * stride * sizeof *K), *V = malloc((size_t)nk * stride * sizeof *V);
            unsigned char *Vt = calloc((size_t)hd * vt_stride, es);
            unsigned char *Kt = calloc((size_t)hd * vt_stride, es);
            float q[128], qr[128], out[128], out1[128], sc[352];
            double want[128], wsum[128], e[333], maxerr = 0, z = 0, mx = -INFINITY;
            assert_true(K && V && Vt && Kt);
            fill(&r, K, (size_t)nk * stride, 0);
            fill(&r, V, (size_t)nk * stride, 0);
            fill(&r, q, (size_t)hd, 0);
            if (kv) {
                for (size_t i = 0; i < (size_t)nk * stride; i++) {
                    K[i] = lm_round_f16(K[i]);
                    V[i] = lm_round_f16(V[i]);
                }
            }
            for (int i = 0; i < hd; i++) qr[i] = kv ? lm_round_f16(q[i]) : q[i];
            for (int p = 0; p < nk; p++)
                for (int i = 0; i < hd; i++) {
                    size_t at = (size_t)i * vt_stride + p;
                    float vv = V[(size_t)p * stride + off + i], kk = K[(size_t)p * stride + off + i];
                    if (kv) {
                        ((uint16_t *)Vt)[at] = lm_f32_to_f16(vv);
                        ((uint16_t *)Kt)[at] = lm_f32_to_f16(kk);
                    } else {
                        ((float *)Vt)[at] = vv;
                        ((float *)Kt)[at] = kk;
                    }
                }
            const float scale = 1.0f / sqrtf((float)hd);
            for (int p = 0; p < nk; p++) {
                double dot = 0, adot = 0;
                for (int i = 0; i < hd; i++) {
                    dot += (double)qr[i] * K[(size_t)p * stride + off + i];
                    adot += fabs((double)qr[i] * K[(size_t)p * stride + off + i]);
                }
                e[p] = dot * scale;
                mx = fmax(mx, e[p]);
                maxerr = fmax(maxerr, hd * 0x1p-23 * adot * scale + fabs(e[p]) * 0x1p-23);
            }
            for (int p = 0; p < nk; p++) z += exp(e[p] - mx);
            for (int i = 0; i < hd; i++) want[i] = wsum[i] = 0;
            for (int p = 0; p < nk; p++) {
                double w = exp(e[p] - mx) / z;
                for (int i = 0; i < hd; i++) {
                    want[i] += w * V[(size_t)p * stride + off + i];
                    wsum[i] += w * fabs(V[(size_t)p * stride + off + i]);
                }
            }
            for (int si = 0; si < ns; si++) {
                /* single (the token alone in its batch) only changes the
                 * summation order of the weighted sum */
                ks[si]->attn_heads(out, q, 1, Kt, Vt, kt, (size_t)vt_stride, nk, hd, scale, 0, sc);
                ks[si]->attn_heads(out1, q, 1, Kt, Vt, kt, (size_t)vt_stride, nk, hd, scale, 1, sc);
                for (int i = 0; i < hd; i++) {
                    double tol = wsum[i] * (expm1(2 * maxerr) + (nk + 6) * 0x1p-23 +
                                            (kv ? 0x1p-11 : 0)) + 1e-30;
                    if (fabs(out[i] - want[i]) > tol || fabs(out1[i] - want[i]) > tol)
                        fail_msg("%s attn %s hd=%d n=%d out[%d]=%.9g / %.9g want %.9g tol %.3g",
                                 ks[si]->name, lm_dtype_name(kt), hd, nk, i, out[i], out1[i],
                                 want[i], tol);
                }
                /* a group of 5 query heads sharing the KV head: each head's
                 * output is exactly what it gets alone */
                enum { G = 5 };
                float qs[G * 128], og[G * 128], o1[128], sg[G * 352];
                fill(&r, qs, (size_t)G * hd, 0);
                for (int single = 0; single < 2; single++) {
                    ks[si]->attn_heads(og, qs, G, Kt, Vt, kt, (size_t)vt_stride, nk, hd, scale,
                                       single, sg);
                    for (int h = 0; h < G; h++) {
                        ks[si]->attn_heads(o1, qs + h * hd, 1, Kt, Vt, kt, (size_t)vt_stride, nk,
                                           hd, scale, single, sc);
                        assert_memory_equal(o1, og + h * hd, sizeof(float) * (size_t)hd);
                    }
                }
            }
            free(Vt);
            free(Kt);
            free(K);
            free(V);
        }
}

/* ---- element-wise ops ---------------------------------------------- */

static void test_rmsnorm(void **state) {
    (void)state;
    enum { M = 3, D = 576 };
    rng r = {7};
    float x[M * D], w[D], out[M * D];
    fill(&r, x, M * D, 0);
    fill(&r, w, D, 0);
    for (int i = 0; i < D; i++) x[2 * D + i] = 0.0f; /* all-zero row: eps keeps it finite */
    const float eps = 1e-5f;
    lm_rmsnorm(out, x, w, M, D, eps);
    for (int r0 = 0; r0 < M; r0++) {
        double ss = 0;
        for (int i = 0; i < D; i++) ss += (double)x[r0 * D + i] * x[r0 * D + i];
        double inv = 1.0 / sqrt(ss / D + eps);
        for (int i = 0; i < D; i++) {
            double want = x[r0 * D + i] * inv * w[i];
            assert_true(fabs(out[r0 * D + i] - want) <= 4e-7 * fabs(want) + 1e-30);
        }
    }
    /* in place is allowed (the forward pass normalises into its input) */
    float y[D];
    memcpy(y, x, sizeof y);
    lm_rmsnorm(y, y, w, 1, D, eps);
    assert_memory_equal(y, out, sizeof y);
}

/* Without and with per-pair divisors (Llama 3.x rope_freqs): the angle of
 * pair i is pos * base^(-2i/hd) / freqs[i]. */
static void test_rope(void **state) {
    (void)state;
    enum { T = 6, H = 3, HD = 64 };
    const int32_t pos[T] = {0, 1, 7, 100, 1000, 8191};
    const float base = 100000.0f;
    float freqs[HD / 2];
    for (int i = 0; i < HD / 2; i++) freqs[i] = i < 8 ? 1.0f : i < 16 ? 1.0f + (float)(i - 8) : 32.0f;
    for (int with = 0; with < 2; with++) {
        const float *fr = with ? freqs : NULL;
        rng r = {9};
        float q[T * H * HD], q0[T * H * HD];
        fill(&r, q, T * H * HD, 0);
        memcpy(q0, q, sizeof q);
        lm_rope(q, T, H, HD, pos, base, fr);
        int moved = 0;   /* the divisors changed the result where they are not 1 */
        for (int t = 0; t < T; t++)
            for (int h = 0; h < H; h++)
                for (int i = 0; i < HD / 2; i++) {
                    const float *a = q0 + ((size_t)t * H + h) * HD, *b = q + ((size_t)t * H + h) * HD;
                    double th = pos[t] * pow(base, -2.0 * i / HD) / (fr ? fr[i] : 1.0);
                    double x0 = a[2 * i], x1 = a[2 * i + 1];
                    double w0 = x0 * cos(th) - x1 * sin(th), w1 = x0 * sin(th) + x1 * cos(th);
                    /* theta is built by i float multiplications (ggml's way)
                     * and one division: relative error <= (i + 3) ulp, plus
                     * ~1 ulp for cos/sin */
                    double dth = th * (i + 3) * 0x1p-23 + 0x1p-22;
                    double tol = (fabs(x0) + fabs(x1)) * (dth + 0x1p-22);
                    if (fabs(b[2 * i] - w0) > tol || fabs(b[2 * i + 1] - w1) > tol)
                        fail_msg("rope (freqs %d) pos %d i %d: (%g,%g) want (%g,%g) tol %g", with,
                                 pos[t], i, b[2 * i], b[2 * i + 1], w0, w1, tol);
                    double th1 = pos[t] * pow(base, -2.0 * i / HD);
                    if (fr && fr[i] != 1.0f && fabs(th1 - th) > 1e-3 &&
                        fabs(b[2 * i] - (x0 * cos(th1) - x1 * sin(th1))) > 10 * tol)
                        moved++;
                }
        if (with) assert_true(moved > 0);
        /* position 0 is the identity, exactly */
        assert_memory_equal(q, q0, H * HD * sizeof(float));
    }
}

static void test_softmax(void **state) {
    (void)state;
    enum { N = 1003 };
    rng r = {11};
    float x0[N], x[N];
    for (int i = 0; i < N; i++) x0[i] = rng_f(&r) * 30.0f;
    x0[5] = 500.0f;  /* would overflow expf without the max shift */
    x0[6] = 470.0f;  /* e^-30: still counts */
    x0[7] = 410.0f;  /* e^-90: below float range, must give ~0 not garbage */
    double mx = -INFINITY, sum = 0;
    for (int i = 0; i < N; i++) mx = fmax(mx, x0[i]);
    for (int i = 0; i < N; i++) sum += exp((double)x0[i] - mx);
    int ns;
    const lm_kernels *const *ks = sets(&ns);
    for (int s = 0; s <= ns; s++) {
        memcpy(x, x0, sizeof x);
        if (s == ns) lm_softmax(x, N); /* the public entry point */
        else ks[s]->softmax(x, N);
        double total = 0;
        for (int i = 0; i < N; i++) {
            double want = exp((double)x0[i] - mx) / sum;
            /* exp: <= 2^-22 relative; normalising adds two roundings */
            if (!(fabs(x[i] - want) <= 1e-6 * want + 1e-37))
                fail_msg("%s softmax[%d] = %.9g want %.9g", s < ns ? ks[s]->name : "lm_softmax", i,
                         x[i], want);
            total += x[i];
        }
        assert_true(fabs(total - 1.0) < 1e-5);
        float few[3] = {3.0f, 3.0f, -INFINITY}; /* masked entry: weight 0 */
        if (s < ns) ks[s]->softmax(few, 3);
        else lm_softmax(few, 3);
        assert_true(few[0] == 0.5f && few[1] == 0.5f && few[2] == 0.0f);
    }
}

static void test_swiglu(void **state) {
    (void)state;
    enum { N = 1541 };
    rng r = {13};
    float g[N], u[N], out[N];
    for (int i = 0; i < N; i++) g[i] = rng_f(&r) * 20.0f, u[i] = rng_f(&r) * 3.0f;
    g[0] = -100.0f; /* e^100 is inf in float: silu must give ~-0, not NaN */
    g[1] = 100.0f;
    g[2] = -87.5f;
    g[N - 1] = -100.0f; /* in the scalar tail of SIMD versions */
    int ns;
    const lm_kernels *const *ks = sets(&ns);
    for (int s = 0; s <= ns; s++) {
        if (s == ns) lm_swiglu(out, g, u, N);
        else ks[s]->swiglu(out, g, u, N);
        for (int i = 0; i < N; i++) {
            double want = g[i] / (1.0 + exp(-(double)g[i])) * u[i];
            if (!(fabs(out[i] - want) <= 1e-6 * fabs(want) + 1e-30))
                fail_msg("%s swiglu[%d] g=%g: %.9g want %.9g", s < ns ? ks[s]->name : "lm_swiglu", i,
                         g[i], out[i], want);
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quant_x),
        cmocka_unit_test(test_kernels_name),
        cmocka_unit_test(test_kernels_select),
        cmocka_unit_test(test_matmul_shapes),
        cmocka_unit_test(test_matmul_model_shapes),
        cmocka_unit_test(test_matmul_multi),
        cmocka_unit_test(test_matmul_float_odd_k),
        cmocka_unit_test(test_q8_0_extremes),
        cmocka_unit_test(test_avx512_quant_is_avx2),
        cmocka_unit_test(test_attn_heads),
        cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_rope),
        cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_swiglu),
    };
    return cmocka_run_group_tests_name("ops", tests, setup_pools, teardown_pools);
}
