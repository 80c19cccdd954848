/* Sampler: greedy, top-k/top-p/min-p filters, temperature statistics,
 * repetition penalty and seed reproducibility. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model/sampler.h"

static lm_sampler *mk(lm_sampler_params p, int n) {
    lm_err err = {0};
    lm_sampler *s = lm_sampler_new(&p, n, &err);
    if (!s) fail_msg("lm_sampler_new: %s", err.msg);
    return s;
}

/* Deterministic pseudo-random logits independent of the sampler's PRNG. */
static void fill_logits(float *l, int n, unsigned seed) {
    uint32_t x = seed * 2654435761u + 1;
    for (int i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 17; x ^= x << 5;
        l[i] = (float)((x % 20000) / 1000.0 - 10.0);
    }
}

static void test_greedy_argmax(void **state) {
    (void)state;
    enum { N = 1000 };
    float l[N];
    for (unsigned trial = 0; trial < 20; trial++) {
        fill_logits(l, N, trial);
        int best = 0;
        for (int i = 1; i < N; i++) if (l[i] > l[best]) best = i;
        lm_sampler_params p = lm_sampler_defaults();
        p.temp = 0.0f;
        lm_sampler *s = mk(p, N);
        assert_int_equal(lm_sampler_sample(s, l), best);
        lm_sampler_free(s);
    }
}

static void test_top_k1_equals_greedy(void **state) {
    (void)state;
    enum { N = 5000 };
    float *l = malloc(sizeof(float) * N);
    for (unsigned trial = 0; trial < 10; trial++) {
        fill_logits(l, N, 100 + trial);
        lm_sampler_params g = lm_sampler_defaults();
        g.temp = 0.0f;
        lm_sampler_params k = lm_sampler_defaults();
        k.temp = 1.5f; k.top_k = 1; k.top_p = 1.0f; k.min_p = 0.0f; k.seed = trial;
        lm_sampler *sg = mk(g, N), *sk = mk(k, N);
        int32_t a = lm_sampler_sample(sg, l);
        for (int r = 0; r < 5; r++) assert_int_equal(lm_sampler_sample(sk, l), a);
        lm_sampler_free(sg);
        lm_sampler_free(sk);
    }
    free(l);
}

static void draw_seq(uint64_t seed, int32_t *out, int n) {
    enum { N = 300 };
    float l[N];
    fill_logits(l, N, 7);
    for (int i = 0; i < N; i++) l[i] *= 0.2f;   /* flat: many tokens in play */
    lm_sampler_params p = lm_sampler_defaults();
    p.temp = 1.0f; p.top_k = 0; p.top_p = 1.0f; p.min_p = 0.0f; p.seed = seed;
    lm_sampler *s = mk(p, N);
    for (int i = 0; i < n; i++) out[i] = lm_sampler_sample(s, l);
    lm_sampler_free(s);
}

static void test_seed_reproducible(void **state) {
    (void)state;
    int32_t a[64], b[64], c[64];
    draw_seq(42, a, 64);
    draw_seq(42, b, 64);
    draw_seq(43, c, 64);
    assert_memory_equal(a, b, sizeof a);
    int diff = 0;
    for (int i = 0; i < 64; i++) diff += a[i] != c[i];
    assert_true(diff > 10);
}

/* Chi-square goodness of fit of temperature sampling against softmax(l/T). */
static void check_frequencies(float temp) {
    enum { N = 5, DRAWS = 200000 };
    const float l[N] = {1.0f, 2.0f, 0.5f, -1.0f, 1.5f};
    double p[N], z = 0;
    for (int i = 0; i < N; i++) z += p[i] = exp(l[i] / temp);
    for (int i = 0; i < N; i++) p[i] /= z;
    lm_sampler_params sp = lm_sampler_defaults();
    sp.temp = temp; sp.top_k = 0; sp.top_p = 1.0f; sp.min_p = 0.0f; sp.seed = 12345;
    lm_sampler *s = mk(sp, N);
    long cnt[N] = {0};
    for (int i = 0; i < DRAWS; i++) {
        int32_t t = lm_sampler_sample(s, l);
        assert_true(t >= 0 && t < N);
        cnt[t]++;
    }
    lm_sampler_free(s);
    double chi2 = 0;
    for (int i = 0; i < N; i++) {
        double e = p[i] * DRAWS;
        chi2 += (cnt[i] - e) * (cnt[i] - e) / e;
    }
    /* 4 degrees of freedom: P(chi2 > 23.5) ~ 1e-4 */
    if (chi2 > 23.5) fail_msg("temp %g: chi2 %.2f too large", (double)temp, chi2);
}

static void test_temperature_frequencies(void **state) {
    (void)state;
    check_frequencies(1.0f);
    check_frequencies(0.5f);
    check_frequencies(2.0f);
}

static void test_top_k_excludes(void **state) {
    (void)state;
    enum { N = 10 };
    const float l[N] = {0, 5, 1, 4, 2, 3, -1, 0.5f, 4.5f, 1.5f};
    /* top 3: ids 1 (5), 8 (4.5), 3 (4) */
    lm_sampler_params p = lm_sampler_defaults();
    p.temp = 5.0f; p.top_k = 3; p.top_p = 1.0f; p.min_p = 0.0f; p.seed = 1;
    lm_sampler *s = mk(p, N);
    int hit[N] = {0};
    for (int i = 0; i < 3000; i++) hit[lm_sampler_sample(s, l)]++;
    for (int i = 0; i < N; i++) {
        if (i == 1 || i == 8 || i == 3) assert_true(hit[i] > 0);
        else assert_int_equal(hit[i], 0);
    }
    lm_sampler_free(s);
}

static void test_top_p_excludes(void **state) {
    (void)state;
    /* probabilities 0.5, 0.3, 0.15, 0.05 (ids 2, 0, 3, 1) */
    const float l[4] = {logf(0.3f), logf(0.05f), logf(0.5f), logf(0.15f)};
    lm_sampler_params p = lm_sampler_defaults();
    p.temp = 1.0f; p.top_k = 0; p.min_p = 0.0f; p.seed = 3;
    int hit[4];
    /* top_p 0.7: {0.5, 0.3} reach 0.8 >= 0.7 */
    p.top_p = 0.7f;
    lm_sampler *s = mk(p, 4);
    memset(hit, 0, sizeof hit);
    for (int i = 0; i < 4000; i++) hit[lm_sampler_sample(s, l)]++;
    assert_true(hit[2] > 0 && hit[0] > 0);
    assert_int_equal(hit[3], 0);
    assert_int_equal(hit[1], 0);
    /* within the nucleus the renormalised ratio is 0.5 : 0.3 */
    double r = (double)hit[2] / hit[0];
    assert_true(r > 1.45 && r < 1.9);
    lm_sampler_free(s);
    /* top_p 0.45: the first token alone reaches it */
    p.top_p = 0.45f;
    s = mk(p, 4);
    for (int i = 0; i < 500; i++) assert_int_equal(lm_sampler_sample(s, l), 2);
    lm_sampler_free(s);
}

/* ---- top-p against a full sort ------------------------------------------
 * The reference nucleus: every (logit, id) of the vocabulary sorted by
 * probability (larger first, lower id first on ties: the sampler's total
 * order), then the shortest prefix whose probability at temperature 1
 * reaches top_p. The sampler's geometric prefix growth must keep exactly
 * that set, in every regime: a nucleus of one token, of dozens, across each
 * growth step (64, 256, 1024) and of nearly the whole vocabulary.
 *
 * Two checks, each able to see one token too many or too few:
 * - Replay: the header promises the draw is a function of the seed
 *   (xoshiro256** seeded through splitmix64): one 53-bit uniform u per
 *   draw, and the token where the running sum of exp((l - max)/T) over the
 *   nucleus, in rank order, first exceeds u times its total. The test
 *   reads the PRNG state before each draw (lm_sampler_rng_get) and computes
 *   the token from the reference nucleus; a nucleus that differs by one
 *   token changes the total and so, over a few hundred draws, the tokens.
 *   Summation order does not matter: a different order moves a boundary by
 *   rounding only, which u hits with probability ~1e-15.
 * - Black box: no draw falls outside the reference nucleus, and, where the
 *   nucleus is small enough to enumerate, every token in it is drawn. */

typedef struct ref_cand { float logit; int32_t id; } ref_cand;

static int ref_cmp(const void *pa, const void *pb) {
    const ref_cand *a = pa, *b = pb;
    if (a->logit != b->logit) return a->logit > b->logit ? -1 : 1;
    return (a->id > b->id) - (a->id < b->id);
}

static uint64_t ref_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

/* xoshiro256** (Blackman & Vigna), 53 bits to [0, 1). */
static double ref_uniform01(uint64_t st[4]) {
    uint64_t r = ref_rotl(st[1] * 5, 7) * 9, t = st[1] << 17;
    st[2] ^= st[0]; st[3] ^= st[1]; st[1] ^= st[2]; st[0] ^= st[3];
    st[2] ^= t; st[3] = ref_rotl(st[3], 45);
    return (double)(r >> 11) * 0x1p-53;
}

/* Sorts all n candidates into c and returns the nucleus size for top_p.
 * Fails the test if top_p falls within rounding of a prefix sum (the data
 * would not decide the set). */
static int ref_nucleus(const float *l, int n, float top_p, ref_cand *c) {
    for (int i = 0; i < n; i++) { c[i].logit = l[i]; c[i].id = i; }
    qsort(c, (size_t)n, sizeof *c, ref_cmp);
    double mx = c[0].logit, z = 0, cum = 0;
    for (int i = 0; i < n; i++) z += exp((double)l[i] - mx);
    for (int i = 0; i < n; i++) {
        double prev = cum;
        cum += exp((double)c[i].logit - mx) / z;
        if (cum >= top_p) {
            if (cum - top_p < 1e-9 || top_p - prev < 1e-9)
                fail_msg("test data: top_p %g within rounding of a prefix sum at rank %d", (double)top_p, i);
            return i + 1;
        }
    }
    return n;
}

static int32_t ref_draw(const ref_cand *c, int k, float temp, uint64_t st[4]) {
    double mx = c[0].logit, inv_t = 1.0 / temp, z = 0;
    for (int i = 0; i < k; i++) z += exp(((double)c[i].logit - mx) * inv_t);
    double u = ref_uniform01(st) * z, cum = 0;
    for (int i = 0; i < k; i++) {
        cum += exp(((double)c[i].logit - mx) * inv_t);
        if (u < cum) return c[i].id;
    }
    return c[k - 1].id;
}

static void check_top_p(const float *l, int n, float top_p, float temp, int draws, int min_k, int max_k) {
    ref_cand *c = malloc(sizeof *c * (size_t)n);
    unsigned char *kept = calloc((size_t)n, 1);
    int *hits = calloc((size_t)n, sizeof *hits);
    assert_non_null(c);
    assert_non_null(kept);
    assert_non_null(hits);
    int k = ref_nucleus(l, n, top_p, c);
    /* The case covers the regime it is meant to. */
    if (k < min_k || k > max_k) fail_msg("test data: nucleus of %d tokens, meant %d..%d", k, min_k, max_k);
    for (int i = 0; i < k; i++) kept[c[i].id] = 1;
    lm_sampler_params p = lm_sampler_defaults();
    p.temp = temp; p.top_k = 0; p.top_p = top_p; p.min_p = 0.0f; p.seed = (uint64_t)k * 7919u + 5;
    lm_sampler *s = mk(p, n);
    for (int d = 0; d < draws; d++) {
        uint64_t st[4], after[4];
        lm_sampler_rng_get(s, st);
        int32_t want = ref_draw(c, k, temp, st);
        int32_t got = lm_sampler_sample(s, l);
        assert_in_range(got, 0, n - 1);
        if (!kept[got])
            fail_msg("top_p %g (nucleus %d of %d): drew token %d, outside the nucleus", (double)top_p, k, n, got);
        if (got != want)
            fail_msg("top_p %g (nucleus %d of %d), draw %d: got token %d, the reference nucleus gives %d",
                     (double)top_p, k, n, d, got, want);
        lm_sampler_rng_get(s, after);
        assert_memory_equal(after, st, sizeof st); /* exactly one uniform per draw */
        hits[got]++;
    }
    if (k <= 200)
        for (int i = 0; i < k; i++)
            if (!hits[c[i].id]) fail_msg("top_p %g: token %d of the %d-token nucleus never drawn", (double)top_p, c[i].id, k);
    lm_sampler_free(s);
    free(c);
    free(kept);
    free(hits);
}

static void test_top_p_large_vocab(void **state) {
    (void)state;
    enum { N = 20000 };
    float *l = malloc(sizeof(float) * N), *base = malloc(sizeof(float) * N);
    assert_non_null(l);
    assert_non_null(base);
    fill_logits(base, N, 99); /* steps of 1e-3 over [-10, 10): many exact ties */
    const struct { float scale, top_p, temp; int draws, min_k, max_k; } cases[] = {
        {0.1f, 0.9f, 1.0f, 400, 10000, N},   /* flat: almost everything (full sort path) */
        {1.0f, 0.9f, 1.0f, 400, 1025, 4000},  /* past the 1024 prefix */
        {3.0f, 0.3f, 1.0f, 3000, 65, 200},    /* past the first 64, all enumerated */
        {3.0f, 0.9f, 0.7f, 1000, 257, 1024},  /* past 256; drawn at another temperature */
        {10.0f, 0.3f, 1.0f, 3000, 2, 64},     /* within the first prefix */
        {40.0f, 0.01f, 1.0f, 200, 1, 1},      /* one token */
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        for (int i = 0; i < N; i++) l[i] = base[i] * cases[ci].scale;
        check_top_p(l, N, cases[ci].top_p, cases[ci].temp, cases[ci].draws, cases[ci].min_k, cases[ci].max_k);
    }
    free(l);
    free(base);
}

static void test_min_p_excludes(void **state) {
    (void)state;
    /* p_max = 0.5; min_p 0.25 keeps p >= 0.125: ids 2 (0.5), 0 (0.3), 3 (0.15) */
    const float l[4] = {logf(0.3f), logf(0.05f), logf(0.5f), logf(0.15f)};
    lm_sampler_params p = lm_sampler_defaults();
    p.temp = 1.0f; p.top_k = 0; p.top_p = 1.0f; p.min_p = 0.25f; p.seed = 9;
    lm_sampler *s = mk(p, 4);
    int hit[4] = {0};
    for (int i = 0; i < 4000; i++) hit[lm_sampler_sample(s, l)]++;
    assert_true(hit[0] > 0 && hit[2] > 0 && hit[3] > 0);
    assert_int_equal(hit[1], 0);
    lm_sampler_free(s);
}

static void test_repeat_penalty(void **state) {
    (void)state;
    const float l[4] = {3.0f, 2.5f, -1.0f, -1.2f};
    lm_sampler_params p = lm_sampler_defaults();
    p.temp = 0.0f; p.repeat_penalty = 1.5f; p.repeat_last_n = 2;
    lm_sampler *s = mk(p, 4);
    assert_int_equal(lm_sampler_sample(s, l), 0);
    lm_sampler_accept(s, 0);          /* 3.0 / 1.5 = 2.0 < 2.5 */
    assert_int_equal(lm_sampler_sample(s, l), 1);
    lm_sampler_accept(s, 0);          /* still one distinct token: penalised once */
    assert_int_equal(lm_sampler_sample(s, l), 1);
    lm_sampler_accept(s, 1);          /* window {0, 1}: 2.0 vs 2.5/1.5 = 1.67 */
    assert_int_equal(lm_sampler_sample(s, l), 0);
    lm_sampler_reset(s);
    assert_int_equal(lm_sampler_sample(s, l), 0);
    lm_sampler_free(s);

    /* negative logits are multiplied: -1.0 * 1.5 = -1.5 < -1.2 */
    const float n[3] = {-1.0f, -1.2f, -5.0f};
    p.repeat_last_n = 8;
    s = mk(p, 3);
    assert_int_equal(lm_sampler_sample(s, n), 0);
    lm_sampler_accept(s, 0);
    assert_int_equal(lm_sampler_sample(s, n), 1);
    lm_sampler_free(s);
}

/* lm_sampler_trim gives back the candidate arrays between draws; the PRNG
 * and the penalty's history go on, so the draws are the ones of a sampler
 * never trimmed. */
static void test_trim_keeps_draws(void **state) {
    (void)state;
    enum { N = 300, DRAWS = 64 };
    float l[N];
    fill_logits(l, N, 9);
    for (int i = 0; i < N; i++) l[i] *= 0.2f;
    lm_sampler_params p = lm_sampler_defaults();
    p.temp = 1.0f; p.top_k = 50; p.top_p = 0.95f; p.min_p = 0.0f; p.seed = 77;
    p.repeat_penalty = 1.5f; p.repeat_last_n = 8;
    lm_sampler *a = mk(p, N), *b = mk(p, N);
    lm_sampler_trim(b);   /* before any draw: a no-op */
    for (int i = 0; i < DRAWS; i++) {
        int32_t ta = lm_sampler_sample(a, l), tb = lm_sampler_sample(b, l);
        assert_true(ta >= 0 && ta < N);
        assert_int_equal(ta, tb);
        lm_sampler_accept(a, ta);
        lm_sampler_accept(b, tb);
        if (i % 3 == 0) lm_sampler_trim(b);
    }
    lm_sampler_free(a);
    lm_sampler_free(b);
}

static void test_params_checked(void **state) {
    (void)state;
    lm_err err = {0};
    lm_sampler_params p = lm_sampler_defaults();
    p.top_p = 1.5f;
    assert_null(lm_sampler_new(&p, 10, &err));
    assert_non_null(strstr(err.msg, "top_p"));
    p = lm_sampler_defaults();
    p.repeat_penalty = 0.0f;
    assert_null(lm_sampler_new(&p, 10, &err));
    assert_non_null(strstr(err.msg, "repeat_penalty"));
    p = lm_sampler_defaults();
    p.min_p = -0.1f;
    assert_null(lm_sampler_new(&p, 10, &err));
    assert_non_null(strstr(err.msg, "min_p"));
    p = lm_sampler_defaults();
    assert_null(lm_sampler_new(&p, 0, &err));
    assert_non_null(strstr(err.msg, "n_vocab"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_argmax),
        cmocka_unit_test(test_top_k1_equals_greedy),
        cmocka_unit_test(test_seed_reproducible),
        cmocka_unit_test(test_temperature_frequencies),
        cmocka_unit_test(test_top_k_excludes),
        cmocka_unit_test(test_top_p_excludes),
        cmocka_unit_test(test_top_p_large_vocab),
        cmocka_unit_test(test_min_p_excludes),
        cmocka_unit_test(test_repeat_penalty),
        cmocka_unit_test(test_trim_keeps_draws),
        cmocka_unit_test(test_params_checked),
    };
    return cmocka_run_group_tests_name("sampler", tests, NULL, NULL);
}
