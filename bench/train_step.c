/* Our side of the training benchmark (bench/bench_train.py runs it next to a
 * PyTorch loop on the same weights, tokens and thread count).
 *
 *   train_step MODEL TOKENS_FILE THREADS full|lora BATCH SEQ MICRO STEPS [RANK [f32|bf16]]
 *
 * The kernel set is LEMONPC_KERNELS's (else the widest this CPU runs); bf16
 * is --precision bf16 (matmul inputs in bf16, f32 sums; AVX-512 BF16).
 *
 * TOKENS_FILE holds BATCH rows of SEQ+1 token ids (whitespace separated):
 * inputs are the first SEQ, targets the last SEQ, every position counts in
 * the loss. One optimizer step = BATCH sequences, run as BATCH/MICRO
 * micro-batches whose gradients accumulate (the loss normalised over the
 * whole batch), then one AdamW update. The first step is a warm-up and not
 * timed. Prints one JSON line: tokens/s, wall and CPU seconds per step,
 * losses, peak RSS, model FLOP utilisation against threads x 100 GFLOP/s
 * f32 peak (Zen 3/4: two 256-bit FMAs per cycle per core at ~3 GHz). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "base/clock.h"
#include "tensor/ops.h"
#include "train/adamw.h"
#include "train/lora.h"
#include "train/train_model.h"

#define PEAK_FLOPS_PER_CORE 100e9

static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int read_tokens(const char *path, int32_t *t, int n) {
    FILE *f = fopen(path, "r");
    if (!f) { perror(path); return -1; }
    int i = 0;
    long v;
    while (i < n && fscanf(f, "%ld", &v) == 1) t[i++] = (int32_t)v;
    fclose(f);
    if (i != n) { fprintf(stderr, "train_step: %s holds %d tokens, need %d\n", path, i, n); return -1; }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 9 || argc > 11) {
        fprintf(stderr, "usage: train_step MODEL TOKENS_FILE THREADS full|lora BATCH SEQ MICRO STEPS "
                        "[RANK [f32|bf16]]\n");
        return 2;
    }
    int threads = atoi(argv[3]), lora_mode = strcmp(argv[4], "lora") == 0;
    int B = atoi(argv[5]), T = atoi(argv[6]), micro = atoi(argv[7]), steps = atoi(argv[8]);
    int rank = argc >= 10 ? atoi(argv[9]) : 8;
    int bf16 = argc == 11 && !strcmp(argv[10], "bf16");
    if (B <= 0 || T <= 0 || micro <= 0 || B % micro || steps <= 0) {
        fprintf(stderr, "train_step: BATCH must be a positive multiple of MICRO\n");
        return 2;
    }
    int32_t *rows = malloc(sizeof(int32_t) * (size_t)B * (T + 1));
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)micro * T);
    int32_t *tgt = malloc(sizeof(int32_t) * (size_t)micro * T);
    uint8_t *mask = malloc((size_t)micro * T);
    if (!rows || !tok || !tgt || !mask) return 1;
    if (read_tokens(argv[2], rows, B * (T + 1))) return 1;
    memset(mask, 1, (size_t)micro * T);

    lm_err err = {{0}};
    lm_tmodel *m = lm_tmodel_load(argv[1], &err);
    lm_pool *pool = m ? lm_pool_new(threads, &err) : NULL;
    lm_lora *lora = NULL;
    if (m && lora_mode) lora = lm_lora_new(m, rank, 2.0f * rank, LM_LORA_ALL, 1, &err);
    else if (m && lm_tmodel_alloc_grads(m, &err)) m = (lm_tmodel_free(m), NULL);
    lm_tacts *a = m && pool && (lora || !lora_mode) ? lm_tacts_new(m, lora, micro, T, 0, &err) : NULL;
    if (a && lm_tacts_set_precision(a, bf16 ? LM_TPREC_BF16 : LM_TPREC_F32, &err))
        a = (lm_tacts_free(a), NULL);
    size_t n_train = lora ? lora->n_params : (m ? m->n_params : 0);
    lm_adamw *opt = a ? lm_adamw_new(n_train, &err) : NULL;
    if (!opt) { fprintf(stderr, "train_step: %s\n", err.msg); return 1; }
    lm_adamw_cfg ocfg = lm_adamw_defaults();

    double t_total = 0, c_total = 0, first_loss = 0, last_loss = 0;
    for (int s = 0; s <= steps; s++) {
        double t0 = lm_now_s(), c0 = cpu_s(), step_loss = 0;
        if (lora) lm_lora_zero_grads(lora); else lm_tmodel_zero_grads(m);
        for (int mb = 0; mb < B / micro; mb++) {
            for (int r = 0; r < micro; r++) {
                const int32_t *row = rows + (size_t)(mb * micro + r) * (T + 1);
                memcpy(tok + (size_t)r * T, row, sizeof(int32_t) * T);
                memcpy(tgt + (size_t)r * T, row + 1, sizeof(int32_t) * T);
            }
            lm_tbatch b = { .B = micro, .T = T, .tokens = tok, .targets = tgt, .mask = mask,
                            .loss_norm = (long)B * T };
            double loss;
            if (lm_train_grad(m, lora, a, &b, pool, &loss, &err)) {
                fprintf(stderr, "train_step: %s\n", err.msg);
                return 1;
            }
            step_loss += loss;
        }
        if (lora)
            lm_adamw_step(pool, opt, &ocfg, 1e-4f, lora->params, lora->grads, lora->tensors, lora->n_tensors, NULL, &err);
        else
            lm_adamw_step(pool, opt, &ocfg, 1e-5f, m->params, m->grads, m->tensors, m->n_tensors, NULL, &err);
        double dt = lm_now_s() - t0;
        if (s == 0) first_loss = step_loss;
        else { t_total += dt; c_total += cpu_s() - c0; }
        last_loss = step_loss;
        fprintf(stderr, "step %d loss %.4f %.2fs\n", s, step_loss, dt);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    const lm_tconfig *c = &m->cfg;
    /* 2 FLOPs per weight forward, 2 for d(input), 2 for d(weight) (full
     * only); attention scores and values: 2 * 2 * T/2 * dim per layer
     * forward, twice that backward (causal, on average T/2 keys). */
    double n = (double)m->n_params, attn = 4.0 * c->n_layers * (T / 2.0) * c->n_heads * c->head_dim;
    double flop_tok = (lora_mode ? 4.0 : 6.0) * n + 3.0 * attn;
    double tps = (double)B * T * steps / t_total;
    printf("{\"impl\": \"lemonpc\", \"kernels\": \"%s\", \"precision\": \"%s\", \"mode\": \"%s\", "
           "\"threads\": %d, \"batch\": %d, \"seq\": %d, "
           "\"micro\": %d, \"steps\": %d, \"tok_s\": %.2f, \"s_per_step\": %.3f, \"cpu_s_per_step\": %.3f, "
           "\"loss_first\": %.5f, \"loss_last\": %.5f, \"peak_rss_mb\": %.1f, "
           "\"flop_per_token\": %.4g, \"mfu\": %.4f, \"act_mb\": %.1f}\n",
           lm_kernels_name(), bf16 ? "bf16" : "f32", argv[4], threads, B, T, micro, steps, tps,
           t_total / steps, c_total / steps, first_loss, last_loss,
           ru.ru_maxrss / 1024.0, flop_tok, tps * flop_tok / (threads * PEAK_FLOPS_PER_CORE),
           lm_tacts_bytes(a) / 1048576.0);
    lm_adamw_free(opt);
    lm_tacts_free(a);
    lm_lora_free(lora);
    lm_pool_free(pool);
    lm_tmodel_free(m);
    free(rows); free(tok); free(tgt); free(mask);
    return 0;
}
