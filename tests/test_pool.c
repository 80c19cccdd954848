/* Thread pool: every task runs exactly once, on a valid thread index, for
 * pools of 1..4 threads, task counts below/above the thread count and many
 * back-to-back runs (the decode pattern); and the tasks of one run really
 * run on several threads at once (a rendezvous that only that passes). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/clock.h"
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

/* Rendezvous: each task marks its thread, then waits until every task of
 * the run has arrived. With n tasks on an n-thread pool this completes only
 * if the n tasks run at the same time on n distinct threads: a pool that ran
 * them one after another (or on fewer threads) leaves the first task
 * waiting, and it gives up after RENDEZVOUS_S seconds and records a failure
 * instead of hanging. The limit is far beyond any scheduling delay, so only
 * a pool that never brings the other threads in can hit it. */
#ifndef RENDEZVOUS_S
#define RENDEZVOUS_S 60
#endif

typedef struct meet_ctx {
    int n;                   /* tasks that must meet */
    _Atomic int arrived;
    _Atomic int timed_out;
    _Atomic int bad;
    _Atomic int task_thread[8]; /* thread index that ran each task, -1 before */
    _Atomic int thread_tasks[8]; /* tasks each thread index ran */
} meet_ctx;

static void meet_fn(void *ctx, int task, int n_tasks, int thread) {
    meet_ctx *m = ctx;
    if (task < 0 || task >= 8 || n_tasks != m->n || thread < 0 || thread >= 8) {
        atomic_fetch_add(&m->bad, 1);
        return;
    }
    atomic_store(&m->task_thread[task], thread);
    atomic_fetch_add(&m->thread_tasks[thread], 1);
    atomic_fetch_add(&m->arrived, 1);
    double t0 = lm_now_s();
    while (atomic_load(&m->arrived) < m->n) {
        if (atomic_load(&m->timed_out) || lm_now_s() - t0 > RENDEZVOUS_S) {
            atomic_store(&m->timed_out, 1);
            return;
        }
        struct timespec ts = {0, 100 * 1000}; /* 0.1 ms: leave the core to the others */
        nanosleep(&ts, NULL);
    }
}

static void check_meet(lm_pool *p, int n) {
    meet_ctx m;
    memset(&m, 0, sizeof m);
    m.n = n;
    for (int i = 0; i < 8; i++) atomic_store(&m.task_thread[i], -1);
    lm_pool_run(p, meet_fn, &m, n);
    assert_int_equal(atomic_load(&m.bad), 0);
    assert_int_equal(atomic_load(&m.timed_out), 0);
    assert_int_equal(atomic_load(&m.arrived), n);
    /* n tasks that all waited for each other: one per thread index, and
     * every index of the pool (the caller's 0 included) took one. */
    for (int t = 0; t < n; t++) {
        assert_int_equal(atomic_load(&m.thread_tasks[t]), 1);
        assert_in_range(atomic_load(&m.task_thread[t]), 0, n - 1);
    }
}

static void test_threads_run_together(void **state) {
    (void)state;
    for (int threads = 2; threads <= 4; threads++) {
        lm_err err = {{0}};
        lm_pool *p = lm_pool_new(threads, &err);
        assert_non_null(p);
        check_meet(p, threads);
        /* Again after the workers went to sleep (idle past the spin window):
         * the run must wake them, not finish on the caller alone. */
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
        check_meet(p, threads);
        /* And back to back, while they still spin. */
        for (int r = 0; r < 20; r++) check_meet(p, threads);
        lm_pool_free(p);
    }
}

/* Two tasks on a 4-thread pool: at least two threads must take part. */
static void test_fewer_tasks_than_threads_still_parallel(void **state) {
    (void)state;
    lm_err err = {{0}};
    lm_pool *p = lm_pool_new(4, &err);
    assert_non_null(p);
    for (int r = 0; r < 10; r++) {
        meet_ctx m;
        memset(&m, 0, sizeof m);
        m.n = 2;
        for (int i = 0; i < 8; i++) atomic_store(&m.task_thread[i], -1);
        lm_pool_run(p, meet_fn, &m, 2);
        assert_int_equal(atomic_load(&m.bad), 0);
        assert_int_equal(atomic_load(&m.timed_out), 0);
        assert_int_equal(atomic_load(&m.arrived), 2);
        assert_int_not_equal(atomic_load(&m.task_thread[0]), atomic_load(&m.task_thread[1]));
    }
    lm_pool_free(p);
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

/* Callers on several threads share one pool (as the runtime's
 * conversations share their model's): their runs queue, and each caller
 * gets its own tasks' results, every time. */
typedef struct caller {
    lm_pool *p;
    const int *in;
    int n, runs, tasks;
    long long want, bad;
} caller;

static void *caller_main(void *arg) {
    caller *c = arg;
    long long partial[41];
    for (int r = 0; r < c->runs; r++) {
        for (int t = 0; t < c->tasks; t++) partial[t] = -1;
        sum_ctx s = {c->in, partial, c->n};
        lm_pool_run(c->p, sum_fn, &s, c->tasks);
        long long got = 0;
        for (int t = 0; t < c->tasks; t++) got += partial[t];
        if (got != c->want) c->bad++;
    }
    return NULL;
}

static void test_callers_share_a_pool(void **state) {
    (void)state;
    enum { N = 20000, CALLERS = 3 };
    int *in = malloc(N * sizeof *in);
    assert_non_null(in);
    for (int i = 0; i < N; i++) in[i] = i % 977;
    lm_err err = {{0}};
    lm_pool *p = lm_pool_new(2, &err);
    assert_non_null(p);
    caller c[CALLERS];
    pthread_t th[CALLERS];
    for (int i = 0; i < CALLERS; i++) {
        /* each caller its own slice of the input and task count */
        c[i] = (caller){.p = p, .in = in + i * 1000, .n = N - i * 1000, .runs = 300,
                        .tasks = 7 + 17 * i};
        for (int k = 0; k < c[i].n; k++) c[i].want += c[i].in[k];
        assert_int_equal(pthread_create(&th[i], NULL, caller_main, &c[i]), 0);
    }
    for (int i = 0; i < CALLERS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(c[i].bad, 0);
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
        cmocka_unit_test(test_threads_run_together),
        cmocka_unit_test(test_fewer_tasks_than_threads_still_parallel),
        cmocka_unit_test(test_callers_share_a_pool),
        cmocka_unit_test(test_defaults_and_null),
    };
    return cmocka_run_group_tests_name("pool", tests, NULL, NULL);
}
