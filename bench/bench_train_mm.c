/* The trainer's three linear-layer matmuls at SmolLM2-135M shapes (one
 * micro-batch of 2 x 256 tokens; the LM head on a 256-row loss chunk), in
 * GFLOP/s: the part of a training step that the blocked GEMM owns.
 *
 *   build/bench/bench_train_mm [THREADS] [REPS] [f32|bf16]
 *
 * LEMONPC_KERNELS picks the kernel set (f32); bf16 is --precision bf16's
 * GEMM (AVX-512 BF16).
 *
 * Use it to compare kernel changes; bench_train.py is the end-to-end
 * comparison with PyTorch. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/pool.h"
#include "tensor/ops.h"
#include "train/train_internal.h"

static float *randv(size_t n, unsigned seed) {
    float *v = malloc(n * sizeof *v);
    if (!v) return NULL;
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        v[i] = (float)(seed >> 8) / (float)(1u << 24) - 0.5f;
    }
    return v;
}

typedef struct shape { const char *name; int n, in, out; } shape;

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2, reps = argc > 2 ? atoi(argv[2]) : 3;
    int bf16 = argc > 3 && !strcmp(argv[3], "bf16");
    const shape shapes[] = {
        { "q/o 576x576", 512, 576, 576 },   { "k/v 576->192", 512, 576, 192 },
        { "gate/up 576->1536", 512, 576, 1536 }, { "down 1536->576", 512, 1536, 576 },
        { "lm_head 576->49152", 256, 576, 49152 },
    };
    lm_err err;
    lm_pool *pool = lm_pool_new(threads, &err);
    if (!pool) { fprintf(stderr, "pool: %s\n", err.msg); return 1; }
    printf("| shape | rows | fwd GFLOP/s | bwd_x GFLOP/s | bwd_w GFLOP/s |\n|---|---|---|---|---|\n");
    double total_t = 0, total_f = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const shape *sh = &shapes[s];
        size_t nx = (size_t)sh->n * sh->in, ny = (size_t)sh->n * sh->out, nw = (size_t)sh->in * sh->out;
        float *x = randv(nx, 1), *w = randv(nw, 2), *dy = randv(ny, 3);
        float *y = calloc(ny, sizeof *y), *dx = calloc(nx, sizeof *dx), *dw = calloc(nw, sizeof *dw);
        if (!x || !w || !dy || !y || !dx || !dw) { fprintf(stderr, "out of memory\n"); return 1; }
        double flop = 2.0 * sh->n * sh->in * sh->out, best[3] = { 1e30, 1e30, 1e30 };
        for (int r = 0; r < reps; r++) {
            double t0 = lm_now_s();
            lm_mm_fwd(pool, bf16, y, x, w, sh->n, sh->in, sh->out, 0);
            double t1 = lm_now_s();
            lm_mm_bwd_x(pool, bf16, dx, dy, w, sh->n, sh->in, sh->out);
            double t2 = lm_now_s();
            lm_mm_bwd_w(pool, bf16, dw, dy, x, sh->n, sh->in, sh->out);
            double t3 = lm_now_s();
            double t[3] = { t1 - t0, t2 - t1, t3 - t2 };
            for (int k = 0; k < 3; k++) best[k] = t[k] < best[k] ? t[k] : best[k];
        }
        printf("| %s | %d | %.1f | %.1f | %.1f |\n", sh->name, sh->n, flop / best[0] * 1e-9,
               flop / best[1] * 1e-9, flop / best[2] * 1e-9);
        total_t += best[0] + best[1] + best[2];
        total_f += 3 * flop;
        free(x); free(w); free(dy); free(y); free(dx); free(dw);
    }
    printf("\nall shapes: %.1f GFLOP/s (%d threads, %s)\n", total_f / total_t * 1e-9, threads,
           bf16 ? "bf16" : lm_kernels_name());
    lm_pool_free(pool);
    return 0;
}
