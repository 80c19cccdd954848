/* Kernel benchmark: pool call overhead, memory read bandwidth (the decode
 * roofline), matvec at SmolLM2-135M shapes per weight type / kernel set /
 * thread count, and m=512 prompt-shaped matmuls.
 *
 *   build/bench/bench_kernels [--quick] [--cached] [--set NAME] [--type NAME]
 *
 * Matvec weights cycle through enough copies to exceed the last-level
 * cache, so the numbers are what decode sees (weights from DRAM); with
 * --cached one copy stays in cache (the kernels' own speed). */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/pool.h"
#include "tensor/dtype.h"
#include "tensor/kernels.h"
#include "tensor/ops.h"
#include "tensor/q4_0x8.h"

static void noop(void *ctx, int task, int n_tasks, int thread) {
    (void)task, (void)n_tasks, (void)thread;
    atomic_fetch_add((_Atomic int *)ctx, 1);
}

static void bench_pool(int threads) {
    lm_err err;
    lm_pool *p = lm_pool_new(threads, &err);
    if (!p) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
    _Atomic int counter = 0;
    for (int i = 0; i < 1000; i++) lm_pool_run(p, noop, &counter, threads * 4);
    const int reps = 100000;
    double t0 = lm_now_s();
    for (int i = 0; i < reps; i++) lm_pool_run(p, noop, &counter, threads * 4);
    double dt = lm_now_s() - t0;
    printf("pool  %d thread%s  lm_pool_run(%2d empty tasks): %6.2f us/call\n", threads,
           threads > 1 ? "s" : " ", threads * 4, dt / reps * 1e6);
    lm_pool_free(p);
}

typedef struct bw_ctx {
    const float *a;
    size_t n;
    double sums[64];
} bw_ctx;

static void bw_task(void *ctx, int task, int n_tasks, int thread) {
    (void)thread;
    bw_ctx *c = ctx;
    size_t i0 = c->n * (size_t)task / (size_t)n_tasks, i1 = c->n * (size_t)(task + 1) / (size_t)n_tasks;
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
    for (size_t i = i0; i + 8 <= i1; i += 8) {
        s0 += c->a[i], s1 += c->a[i + 1], s2 += c->a[i + 2], s3 += c->a[i + 3];
        s4 += c->a[i + 4], s5 += c->a[i + 5], s6 += c->a[i + 6], s7 += c->a[i + 7];
    }
    c->sums[task] = s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7;
}

static void bench_bandwidth(int threads) {
    size_t n = (size_t)256 << 20 >> 2; /* 256 MB */
    float *a = malloc(n * sizeof *a);
    if (!a) return;
    for (size_t i = 0; i < n; i++) a[i] = (float)(i & 7);
    lm_err err;
    lm_pool *p = lm_pool_new(threads, &err);
    bw_ctx c = {.a = a, .n = n};
    lm_pool_run(p, bw_task, &c, threads);
    double best = 1e9;
    for (int r = 0; r < 3; r++) {
        double t0 = lm_now_s();
        lm_pool_run(p, bw_task, &c, threads);
        double dt = lm_now_s() - t0;
        if (dt < best) best = dt;
    }
    printf("memory read, %d thread%s: %6.1f GB/s (roofline for decode)\n", threads,
           threads > 1 ? "s" : " ", (double)n * 4 / best / 1e9);
    lm_pool_free(p);
    free(a);
}

static void fill_random(float *v, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        v[i] = ((float)(seed >> 8) / 16777216.0f - 0.5f);
    }
}

/* y = x @ W^T timed call by call; returns the fastest call in seconds.
 * The fastest, not the mean: this machine is shared, and preemption only
 * ever adds time. */
static double time_matmul(const lm_kernels *ks, lm_pool *p, float *y, const float *x,
                          unsigned char *W, size_t wbytes, int copies, lm_dtype t, int m, int n,
                          int k, double min_time) {
    int c = 0;
    lm_matmul_with(ks, p, y, x, W, t, m, n, k);
    double best = 1e9, start = lm_now_s();
    int reps = 0;
    while (reps < 5 || lm_now_s() - start < min_time) {
        double t0 = lm_now_s();
        lm_matmul_with(ks, p, y, x, W + (size_t)c * wbytes, t, m, n, k);
        double dt = lm_now_s() - t0;
        if (dt < best) best = dt;
        c = (c + 1) % copies;
        reps++;
    }
    return best;
}

static unsigned char *make_weights(lm_dtype t, int n, int k, int copies, size_t *wbytes) {
    size_t rb = lm_dtype_row_bytes(t, k);
    *wbytes = rb * (size_t)n;
    unsigned char *W = malloc(*wbytes * (size_t)copies);
    float *row = malloc((size_t)k * sizeof *row);
    if (!W || !row) {
        fprintf(stderr, "out of memory for %d x %d weights\n", n, k);
        exit(1);
    }
    for (int j = 0; j < n; j++) {
        fill_random(row, (size_t)k, (unsigned)j * 7919u + 1);
        lm_quant_row(t, row, W + (size_t)j * rb, k);
    }
    for (int c = 1; c < copies; c++) memcpy(W + (size_t)c * *wbytes, W, *wbytes);
    free(row);
    return W;
}

int main(int argc, char **argv) {
    int quick = 0, cached = 0;
    const char *only_set = NULL, *only_type = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--cached")) cached = 1;
        else if (!strcmp(argv[i], "--set") && i + 1 < argc) only_set = argv[++i];
        else if (!strcmp(argv[i], "--type") && i + 1 < argc) only_type = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--quick] [--cached] [--set scalar|avx2|avx512] [--type q8_0|...]\n", argv[0]);
            return 2;
        }
    }
    const double min_time = quick ? 0.1 : 0.3;
    printf("default kernel set: %s\n", lm_kernels_name());
    bench_pool(1);
    bench_pool(2);
    bench_bandwidth(1);
    bench_bandwidth(2);

    const char *set_names[] = {"avx512", "avx2", "scalar"};
    const size_t n_sets = sizeof set_names / sizeof set_names[0];
    const lm_dtype types[] = {LM_Q8_0, LM_Q4_0, LM_Q4_1, LM_F16, LM_BF16, LM_F32};
    const struct { int n, k; const char *what; } shapes[] = {
        {576, 576, "attn q/o"}, {1536, 576, "ffn gate/up"}, {576, 1536, "ffn down"},
        {49152, 576, "lm head"},
    };
    lm_err err;
    lm_pool *pools[2] = {lm_pool_new(1, &err), lm_pool_new(2, &err)};
    float *x = malloc(sizeof(float) * 512 * 1536), *y = malloc(sizeof(float) * 512 * 49152);
    if (!x || !y || !pools[0] || !pools[1]) return 1;
    fill_random(x, 512 * 1536, 99);

    printf("\nmatvec (m=1, decode; weights %s)\n", cached ? "cached" : "from DRAM");
    printf("%-7s %-5s %-12s %-11s %9s %8s %8s %9s %8s %8s\n", "set", "type", "shape", "use",
           "us 1T", "GB/s", "GFLOP/s", "us 2T", "GB/s", "GFLOP/s");
    for (size_t s = 0; s < n_sets; s++) {
        const lm_kernels *ks = lm_kernels_by_name(set_names[s]);
        if (!ks || (only_set && strcmp(only_set, set_names[s]))) continue;
        for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
            if (only_type && lm_dtype_parse(only_type) != (int)types[ti]) continue;
            for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
                int n = shapes[si].n, k = shapes[si].k;
                size_t wb = lm_dtype_row_bytes(types[ti], k) * (size_t)n;
                int copies = (int)(((size_t)192 << 20) / wb) + 1; /* > LLC */
                if (copies > 512) copies = 512;
                if (cached) copies = 1;
                unsigned char *W = make_weights(types[ti], n, k, copies, &wb);
                double t1 = time_matmul(ks, pools[0], y, x, W, wb, copies, types[ti], 1, n, k, min_time);
                double t2 = time_matmul(ks, pools[1], y, x, W, wb, copies, types[ti], 1, n, k, min_time);
                char shape[32];
                snprintf(shape, sizeof shape, "%dx%d", n, k);
                double fl = 2.0 * n * k;
                printf("%-7s %-5s %-12s %-11s %9.1f %8.1f %8.1f %9.1f %8.1f %8.1f\n", ks->name,
                       lm_dtype_name(types[ti]), shape, shapes[si].what, t1 * 1e6, wb / t1 / 1e9,
                       fl / t1 / 1e9, t2 * 1e6, wb / t2 / 1e9, fl / t2 / 1e9);
                free(W);
            }
        }
    }

    printf("\nprompt matmul (m=512; weights cached)\n");
    printf("%-7s %-5s %-12s %-11s %9s %8s %9s %8s\n", "set", "type", "shape", "use", "ms 1T",
           "GFLOP/s", "ms 2T", "GFLOP/s");
    for (size_t s = 0; s < n_sets; s++) {
        const lm_kernels *ks = lm_kernels_by_name(set_names[s]);
        if (!ks || (only_set && strcmp(only_set, set_names[s]))) continue;
        for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
            if (only_type && lm_dtype_parse(only_type) != (int)types[ti]) continue;
            for (size_t si = 0; si < 3; si++) {
                int n = shapes[si].n, k = shapes[si].k, m = 512;
                size_t wb;
                unsigned char *W = make_weights(types[ti], n, k, 1, &wb);
                double mt = !strcmp(ks->name, "scalar") ? min_time / 3 : min_time;
                double t1 = time_matmul(ks, pools[0], y, x, W, wb, 1, types[ti], m, n, k, mt);
                double t2 = time_matmul(ks, pools[1], y, x, W, wb, 1, types[ti], m, n, k, mt);
                char shape[32];
                snprintf(shape, sizeof shape, "%dx%d", n, k);
                double fl = 2.0 * m * n * k;
                printf("%-7s %-5s %-12s %-11s %9.2f %8.1f %9.2f %8.1f\n", ks->name,
                       lm_dtype_name(types[ti]), shape, shapes[si].what, t1 * 1e3, fl / t1 / 1e9,
                       t2 * 1e3, fl / t2 / 1e9);
                if (types[ti] == LM_Q4_0) {
                    /* what the model runs: Q4_0 repacked at load (tensor/q4_0x8.h) */
                    unsigned char *R = malloc(lm_q4x8_bytes(n, k));
                    if (!R) return 1;
                    lm_q4x8_repack(W, n, k, R);
                    t1 = time_matmul(ks, pools[0], y, x, R, wb, 1, LM_Q4_0_X8, m, n, k, mt);
                    t2 = time_matmul(ks, pools[1], y, x, R, wb, 1, LM_Q4_0_X8, m, n, k, mt);
                    printf("%-7s %-5s %-12s %-11s %9.2f %8.1f %9.2f %8.1f\n", ks->name, "Q4_0x8", shape,
                           shapes[si].what, t1 * 1e3, fl / t1 / 1e9, t2 * 1e3, fl / t2 / 1e9);
                    free(R);
                }
                free(W);
            }
        }
    }
    lm_pool_free(pools[0]);
    lm_pool_free(pools[1]);
    free(x);
    free(y);
    return 0;
}
