/* lm_q4x8_matmul: y = x @ W^T through the repacked Q4_0 path, for the
 * oracle test against llama.cpp's repacked kernels.
 *
 *   lm_q4x8_matmul W.bin X.bin M N K THREADS Y.bin
 *
 * W.bin: N rows of K/32 Q4_0 blocks (raw, as in a GGUF); X.bin: f32 [M, K];
 * Y.bin gets f32 [M, N]. The kernel set is the default one (LEMONPC_KERNELS). */
#include <stdio.h>
#include <stdlib.h>

#include "base/pool.h"
#include "tensor/dtype.h"
#include "tensor/ops.h"
#include "tensor/q4_0x8.h"

static void *slurp(const char *path, size_t want) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); return NULL; }
    void *buf = malloc(want ? want : 1);
    size_t got = buf ? fread(buf, 1, want, f) : 0;
    fclose(f);
    if (got != want) {
        fprintf(stderr, "lm_q4x8_matmul: %s: expected %zu bytes\n", path, want);
        free(buf);
        return NULL;
    }
    return buf;
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: lm_q4x8_matmul W.bin X.bin M N K THREADS Y.bin\n");
        return 2;
    }
    const int m = atoi(argv[3]), n = atoi(argv[4]), k = atoi(argv[5]), threads = atoi(argv[6]);
    const size_t wbytes = lm_q4x8_bytes(n, k);
    if (m <= 0 || wbytes == 0 || threads <= 0) {
        fprintf(stderr, "lm_q4x8_matmul: need M > 0, N %% 8 == 0, K %% 32 == 0, THREADS > 0\n");
        return 2;
    }
    void *w = slurp(argv[1], wbytes);
    float *x = slurp(argv[2], sizeof(float) * (size_t)m * k);
    void *wp = malloc(wbytes);
    float *y = malloc(sizeof(float) * (size_t)m * n);
    lm_err err;
    lm_pool *pool = lm_pool_new(threads, &err);
    if (!w || !x || !wp || !y || !pool) return 1;
    lm_q4x8_repack(w, n, k, wp);
    lm_matmul(pool, y, x, wp, LM_Q4_0_X8, m, n, k);
    FILE *f = fopen(argv[7], "wb");
    if (!f || fwrite(y, sizeof(float), (size_t)m * n, f) != (size_t)m * n || fclose(f)) {
        perror(argv[7]);
        return 1;
    }
    lm_pool_free(pool);
    free(w); free(x); free(wp); free(y);
    return 0;
}
