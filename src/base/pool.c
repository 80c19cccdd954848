/* Thread pool for the forward pass. Decode calls lm_pool_run a few hundred
 * times per token, so a call must cost microseconds: idle workers spin on
 * the job word for a while (the next call usually comes within tens of
 * microseconds) and only then block on a condition variable.
 *
 * The whole job state that a worker must agree on lives in one 64-bit word:
 *   bits 40..63  generation (which job)
 *   bits 20..39  n_tasks
 *   bits  0..19  next task to hand out
 * A worker claims a task with a compare-and-swap on that word, so a worker
 * that wakes up late can never take a task of a newer job while believing
 * it belongs to an older one: the CAS fails as soon as any field differs.
 * fn/ctx are written before the word is published and rewritten only after
 * every task of the job has finished, which is after every successful claim
 * and therefore after every read of them made for that job. */
#include "base/pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

#define TASK_BITS 20
#define TASK_MASK ((UINT64_C(1) << TASK_BITS) - 1)
#define GEN_SHIFT (2 * TASK_BITS)
#define MAX_TASKS ((int)TASK_MASK)

/* How long an idle worker spins before sleeping. Long enough to bridge the
 * gap between two matmuls of one token, short enough not to burn a core
 * between tokens of a slow game loop. */
#define SPIN_NS 200000
/* How long the caller spins for the last tasks before blocking. */
#define CALLER_SPIN_NS 50000

typedef struct worker {
    lm_pool *pool;
    int index;
    pthread_t tid;
} worker;

struct lm_pool {
    int n_threads;            /* including the caller */
    worker *workers;          /* n_threads - 1 of them */
    _Atomic uint64_t job;     /* gen | n_tasks | next, see above */
    _Atomic(lm_pool_fn) fn;
    _Atomic(void *) ctx;
    _Atomic int done;         /* tasks finished in the current job */
    _Atomic int sleepers;     /* workers blocked (or about to) on wake */
    _Atomic int caller_waits; /* the caller is blocked (or about to) on done_cv */
    _Atomic int stop;
    pthread_mutex_t mu;
    pthread_mutex_t run_mu;   /* one job at a time: callers on other threads queue here */
    pthread_cond_t wake;
    pthread_cond_t done_cv;
};

static inline uint64_t job_gen(uint64_t w) { return w >> GEN_SHIFT; }
static inline int job_n(uint64_t w) { return (int)((w >> TASK_BITS) & TASK_MASK); }
static inline int job_next(uint64_t w) { return (int)(w & TASK_MASK); }

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Claims and runs tasks of the job whose generation is gen until none is
 * left (or the job word moved on). */
static void work_on(lm_pool *p, uint64_t gen, int thread) {
    lm_pool_fn fn = atomic_load_explicit(&p->fn, memory_order_acquire);
    void *ctx = atomic_load_explicit(&p->ctx, memory_order_acquire);
    uint64_t w = atomic_load_explicit(&p->job, memory_order_acquire);
    for (;;) {
        if (job_gen(w) != gen || job_next(w) >= job_n(w)) return;
        if (!atomic_compare_exchange_weak_explicit(&p->job, &w, w + 1, memory_order_acq_rel,
                                                   memory_order_acquire))
            continue;
        fn(ctx, job_next(w), job_n(w), thread);
        /* The last task to finish wakes a caller that stopped spinning.
         * done is raised before caller_waits is read and the caller does
         * the reverse (both seq_cst), so a blocked caller is always seen. */
        if (atomic_fetch_add(&p->done, 1) + 1 == job_n(w) && thread != 0 &&
            atomic_load(&p->caller_waits)) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_broadcast(&p->done_cv);
            pthread_mutex_unlock(&p->mu);
        }
        w = atomic_load_explicit(&p->job, memory_order_acquire);
    }
}

static void *worker_main(void *arg) {
    worker *self = arg;
    lm_pool *p = self->pool;
    /* The generation the pool was created with (the job word starts at 0
     * and no run is published before lm_pool_new returns), not the word's
     * value now: a worker that starts after the first run was published
     * must take part in it, not take it for one it has already seen. */
    uint64_t seen = 0;
    for (;;) {
        /* Spin, checking the clock only now and then. */
        uint64_t w = atomic_load_explicit(&p->job, memory_order_acquire);
        uint64_t t0 = 0;
        for (unsigned i = 1; job_gen(w) == seen && !atomic_load_explicit(&p->stop, memory_order_relaxed); i++) {
            cpu_relax();
            if ((i & 255) == 0) {
                uint64_t t = now_ns();
                if (!t0) t0 = t;
                else if (t - t0 > SPIN_NS) break;
            }
            w = atomic_load_explicit(&p->job, memory_order_acquire);
        }
        if (job_gen(w) == seen && !atomic_load(&p->stop)) {
            /* Sleep. sleepers is raised before re-checking the job word, and
             * the caller publishes the word before reading sleepers (both
             * seq_cst), so one of the two always sees the other. */
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            while (job_gen(w = atomic_load(&p->job)) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->wake, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop)) return NULL;
        seen = job_gen(w);
        work_on(p, seen, self->index);
    }
}

lm_pool *lm_pool_new(int n_threads, lm_err *err) {
    if (n_threads <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = c > 0 ? (int)c : 1;
    }
    if (n_threads > 1024) n_threads = 1024;
    lm_pool *p = calloc(1, sizeof *p);
    if (!p) {
        lm_errf(err, "pool: out of memory");
        return NULL;
    }
    p->n_threads = n_threads;
    atomic_init(&p->job, 0);
    atomic_init(&p->fn, NULL);
    atomic_init(&p->ctx, NULL);
    atomic_init(&p->done, 0);
    atomic_init(&p->sleepers, 0);
    atomic_init(&p->caller_waits, 0);
    atomic_init(&p->stop, 0);
    if (pthread_mutex_init(&p->mu, NULL)) {
        free(p);
        lm_errf(err, "pool: pthread_mutex_init failed");
        return NULL;
    }
    if (pthread_mutex_init(&p->run_mu, NULL)) {
        pthread_mutex_destroy(&p->mu);
        free(p);
        lm_errf(err, "pool: pthread_mutex_init failed");
        return NULL;
    }
    if (pthread_cond_init(&p->wake, NULL)) {
        pthread_mutex_destroy(&p->run_mu);
        pthread_mutex_destroy(&p->mu);
        free(p);
        lm_errf(err, "pool: pthread_cond_init failed");
        return NULL;
    }
    if (pthread_cond_init(&p->done_cv, NULL)) {
        pthread_cond_destroy(&p->wake);
        pthread_mutex_destroy(&p->run_mu);
        pthread_mutex_destroy(&p->mu);
        free(p);
        lm_errf(err, "pool: pthread_cond_init failed");
        return NULL;
    }
    if (n_threads > 1) {
        p->workers = calloc((size_t)n_threads - 1, sizeof *p->workers);
        if (!p->workers) {
            lm_pool_free(p);
            lm_errf(err, "pool: out of memory for %d workers", n_threads - 1);
            return NULL;
        }
        for (int i = 0; i < n_threads - 1; i++) {
            p->workers[i].pool = p;
            p->workers[i].index = i + 1;
            int rc = pthread_create(&p->workers[i].tid, NULL, worker_main, &p->workers[i]);
            if (rc) {
                p->n_threads = i + 1; /* lm_pool_free joins only those started */
                lm_pool_free(p);
                lm_errf(err, "pool: cannot start thread %d of %d (error %d)", i + 2, n_threads, rc);
                return NULL;
            }
        }
    }
    return p;
}

void lm_pool_free(lm_pool *p) {
    if (!p) return;
    if (p->workers) {
        pthread_mutex_lock(&p->mu);
        atomic_store(&p->stop, 1);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mu);
        for (int i = 0; i < p->n_threads - 1; i++) pthread_join(p->workers[i].tid, NULL);
        free(p->workers);
    }
    pthread_cond_destroy(&p->done_cv);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->run_mu);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

int lm_pool_threads(const lm_pool *p) { return p ? p->n_threads : 1; }

void lm_pool_run(lm_pool *p, lm_pool_fn fn, void *ctx, int n_tasks) {
    if (n_tasks <= 0) return;
    if (!p || p->n_threads == 1 || n_tasks == 1) {
        for (int t = 0; t < n_tasks; t++) fn(ctx, t, n_tasks, 0);
        return;
    }
    /* More tasks than the job word can count: nothing we call does this,
     * so run them inline rather than add a second protocol. */
    if (n_tasks > MAX_TASKS) {
        for (int t = 0; t < n_tasks; t++) fn(ctx, t, n_tasks, 0);
        return;
    }
    pthread_mutex_lock(&p->run_mu);
    atomic_store_explicit(&p->fn, fn, memory_order_relaxed);
    atomic_store_explicit(&p->ctx, ctx, memory_order_relaxed);
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    uint64_t old = atomic_load_explicit(&p->job, memory_order_relaxed);
    uint64_t gen = (job_gen(old) + 1) & ((UINT64_C(1) << (64 - GEN_SHIFT)) - 1);
    atomic_store(&p->job, (gen << GEN_SHIFT) | ((uint64_t)n_tasks << TASK_BITS));
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mu);
    }
    work_on(p, gen, 0);
    /* Wait for tasks other threads claimed. They are running now, so this
     * is usually short; if it is not (a worker preempted on a busy
     * machine), block instead of burning the core that worker needs. */
    uint64_t t0 = 0;
    for (unsigned i = 1; atomic_load_explicit(&p->done, memory_order_acquire) < n_tasks; i++) {
        cpu_relax();
        if ((i & 255) == 0) {
            uint64_t t = now_ns();
            if (!t0) t0 = t;
            else if (t - t0 > CALLER_SPIN_NS) {
                pthread_mutex_lock(&p->mu);
                atomic_store(&p->caller_waits, 1);
                while (atomic_load(&p->done) < n_tasks) pthread_cond_wait(&p->done_cv, &p->mu);
                atomic_store(&p->caller_waits, 0);
                pthread_mutex_unlock(&p->mu);
                break;
            }
        }
    }
    pthread_mutex_unlock(&p->run_mu);
}
