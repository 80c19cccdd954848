/* Fixed-size thread pool. Work is split into n_tasks pieces; threads pull
 * the next piece from an atomic counter so faster cores take more. The
 * calling thread works too. A pool with 1 thread runs everything inline. */
#ifndef LM_BASE_POOL_H
#define LM_BASE_POOL_H

#include "base/err.h"

typedef struct lm_pool lm_pool;

/* fn(ctx, task, n_tasks, thread_index) for task in [0, n_tasks). */
typedef void (*lm_pool_fn)(void *ctx, int task, int n_tasks, int thread);

/* n_threads <= 0 means the number of online CPUs. */
lm_pool *lm_pool_new(int n_threads, lm_err *err);
void lm_pool_free(lm_pool *p);
int lm_pool_threads(const lm_pool *p);
/* Runs fn over all tasks and returns when every task is done. p may be
 * NULL: the tasks then run inline on the caller (thread index 0); so does
 * lm_pool_threads(NULL) report 1. Callers on several threads may share a
 * pool: their runs queue and take the workers one job at a time (so many
 * contexts can share one pool; their passes interleave job by job). Not
 * reentrant: fn must not call lm_pool_run on the same pool. */
void lm_pool_run(lm_pool *p, lm_pool_fn fn, void *ctx, int n_tasks);

#endif
