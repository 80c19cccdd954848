/* Thread pool: every task runs exactly once, on a valid thread index, for
 * pools of 1..4 threads, task counts below/above the thread count and many
 * back-to-back runs (the decode pattern). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/pool.h"

#define MAX_TASKS 4096

typedef struct count_ctx {
    _Atomic int hits[MAX_TASKS];
    _Atomic int bad;
    int n_threads;
    int expect_n;
    _Atomic int thread_used[8];
} count_ctx;

static void count_fn(void *ctx, int task, int n_tasks, int thread) {
    count_ctx *c = ctx;
    if (task < 0 || task >= n_tasks || n_tasks != c->expect_n || thread < 0 ||
        thread >= c->n_threads) {
        atomic_fetch_add(&c->bad, 1);
        return;
    }
    atomic_fetch_add(&c->hits[task], 1);
    if (thread < 8) atomic_store(&c->thread_used[thread], 1);
}

static void check_run(lm_pool *p, count_ctx *c, int n_tasks) {
    for (int i = 0; i < n_tasks; i++) atomic_store(&c->hits[i], 0);
    atomic_store(&c->bad, 0);
    c->expect_n = n_tasks;
    lm_pool_run(p, count_fn, c, n_tasks);
    assert_int_equal(atomic_load(&c->bad), 0);
    for (int i = 0; i < n_tasks; i++) assert_int_equal(atomic_load(&c->hits[i]), 1);
}

static void test_sizes(void **state) {
    (void)state;
    count_ctx *c = calloc(1, sizeof *c);
    assert_non_null(c);
    for (int threads = 1; threads <= 4; threads++) {
        lm_err err = {{0}};
        lm_pool *p = lm_pool_new(threads, &err);
        assert_non_null(p);
        assert_int_equal(lm_pool_threads(p), threads);
        c->n_threads = threads;
        const int sizes[] = {1, 2, 3, threads - 1, threads, threads + 1, 17, 100, MAX_TASKS};
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
            if (sizes[s] > 0) check_run(p, c, sizes[s]);
        lm_pool_run(p, count_fn, c, 0); /* no tasks: returns at once */
        lm_pool_free(p);
    }
    free(c);
}

static void test_many_small_runs(void **state) {
    (void)state;
    count_ctx *c = calloc(1, sizeof *c);
    assert_non_null(c);
    lm_err err = {{0}};
    lm_pool *p = lm_pool_new(3, &err);
    assert_non_null(p);
    c->n_threads = 3;
    unsigned seed = 12345;
    for (int r = 0; r < 20000; r++) {
        seed = seed * 1103515245u + 12345u;
        check_run(p, c, 1 + (int)((seed >> 16) % 40));
    }
    lm_pool_free(p);
    free(c);
}

/* Workers that went to sleep (idle longer than the spin window) must wake
 * for the next run. */
static void test_after_idle(void **state) {
    (void)state;
    count_ctx *c = calloc(1, sizeof *c);
    assert_non_null(c);
    lm_err err = {{0}};
    lm_pool *p = lm_pool_new(2, &err);
    assert_non_null(p);
    c->n_threads = 2;
    for (int r = 0; r < 5; r++) {
        check_run(p, c, 64);
        struct timespec ts = {0, 3 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    lm_pool_free(p);
    free(c);
}

typedef struct sum_ctx {
    const int *in;
    long long *partial;
    int n;
} sum_ctx;

/* Tasks write disjoint slices; the caller sees all writes on return. */
static void sum_fn(void *ctx, int task, int n_tasks, int thread) {
    (void)thread;
    sum_ctx *s = ctx;
    long long acc = 0;
    for (int i = (int)((long)s->n * task / n_tasks); i < (int)((long)s->n * (task + 1) / n_tasks); i++)
        acc += s->in[i];
    s->partial[task] = acc;
}

static void test_results_visible(void **state) {
    (void)state;
    enum { N = 100000, T = 37 };
    int *in = malloc(N * sizeof *in);
    long long partial[T];
    assert_non_null(in);
    for (int i = 0; i < N; i++) in[i] = i % 1000;
    long long want = 0;
    for (int i = 0; i < N; i++) want += in[i];
    lm_err err = {{0}};
    lm_pool *p = lm_pool_new(2, &err);
    assert_non_null(p);
    for (int r = 0; r < 200; r++) {
        for (int t = 0; t < T; t++) partial[t] = -1;
        sum_ctx s = {in, partial, N};
        lm_pool_run(p, sum_fn, &s, T);
        long long got = 0;
        for (int t = 0; t < T; t++) got += partial[t];
        assert_true(got == want);
    }
    lm_pool_free(p);
    free(in);
}

static void test_defaults_and_null(void **state) {
    (void)state;
    lm_err err = {{0}};
    lm_pool *p = lm_pool_new(0, &err);
    assert_non_null(p);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    assert_int_equal(lm_pool_threads(p), cpus > 0 ? (int)cpus : 1);
    lm_pool_free(p);
    lm_pool_free(NULL);
    /* A NULL pool runs inline on thread 0. */
    count_ctx *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->n_threads = 1;
    check_run(NULL, c, 10);
    assert_int_equal(lm_pool_threads(NULL), 1);
    free(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_many_small_runs),
        cmocka_unit_test(test_after_idle),
        cmocka_unit_test(test_results_visible),
        cmocka_unit_test(test_defaults_and_null),
    };
    return cmocka_run_group_tests_name("pool", tests, NULL, NULL);
}
