/* Our side of the inference benchmark (bench/bench_infer.py runs it next to
 * llama.cpp on the same GGUF, tokens and thread count).
 *
 *   infer MODEL TOKENS_FILE THREADS N_GEN REPS [f32|f16]
 *
 * TOKENS_FILE holds the prompt's token ids, space-separated. For each rep:
 * a fresh sequence, prompt evaluated in one batch (logits of the last token
 * only), then N_GEN greedy decode steps. Prints one JSON line with the
 * best rep's numbers and the process's peak RSS. The last argument is the
 * KV cache's element type (default f32). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "base/clock.h"
#include "model/llama.h"

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static int32_t *read_tokens(const char *path, int *n_out) {
    FILE *f = fopen(path, "r");
    if (!f) { perror(path); return NULL; }
    int cap = 1024, n = 0;
    int32_t *t = malloc(sizeof *t * (size_t)cap);
    long v;
    while (t && fscanf(f, "%ld", &v) == 1) {
        if (n == cap) {
            cap *= 2;
            int32_t *nt = realloc(t, sizeof *t * (size_t)cap);
            if (!nt) { free(t); t = NULL; break; }
            t = nt;
        }
        t[n++] = (int32_t)v;
    }
    fclose(f);
    *n_out = n;
    return t;
}

int main(int argc, char **argv) {
    if ((argc != 6 && argc != 7) ||
        (argc == 7 && strcmp(argv[6], "f32") && strcmp(argv[6], "f16"))) {
        fprintf(stderr, "usage: infer MODEL TOKENS_FILE THREADS N_GEN REPS [f32|f16]\n");
        return 2;
    }
    lm_dtype kv_type = argc == 7 && !strcmp(argv[6], "f16") ? LM_F16 : LM_F32;
    int threads = atoi(argv[3]), n_gen = atoi(argv[4]), reps = atoi(argv[5]);
    int n_prompt = 0;
    int32_t *prompt = read_tokens(argv[2], &n_prompt);
    if (!prompt || n_prompt == 0) { fprintf(stderr, "infer: no tokens in %s\n", argv[2]); return 1; }

    lm_err err = {{0}};
    double t0 = lm_now_s();
    lm_model *m = lm_model_load(argv[1], &err);
    if (!m) { fprintf(stderr, "infer: %s\n", err.msg); return 1; }
    double load_s = lm_now_s() - t0;
    lm_pool *pool = lm_pool_new(threads, &err);
    lm_ctx *c = pool ? lm_ctx_new_kv(m, n_prompt + n_gen + 8, pool, kv_type, &err) : NULL;
    float *logits = malloc(sizeof(float) * (size_t)m->cfg.n_vocab);
    if (!c || !logits) { fprintf(stderr, "infer: %s\n", err.msg); return 1; }

    double best_pp = 0, best_tg = 0, best_ttft = 1e30;
    for (int r = 0; r < reps; r++) {
        lm_ctx_truncate(c, 0);
        double a = lm_now_s();
        if (lm_eval(c, prompt, n_prompt, LM_LOGITS_LAST, logits, &err)) {
            fprintf(stderr, "infer: %s\n", err.msg);
            return 1;
        }
        int32_t tok = argmax(logits, m->cfg.n_vocab);
        double b = lm_now_s();
        for (int i = 0; i < n_gen; i++) {
            if (lm_eval(c, &tok, 1, LM_LOGITS_LAST, logits, &err)) {
                fprintf(stderr, "infer: %s\n", err.msg);
                return 1;
            }
            tok = argmax(logits, m->cfg.n_vocab);
        }
        double e = lm_now_s();
        double pp = n_prompt / (b - a), tg = n_gen / (e - b);
        if (pp > best_pp) best_pp = pp;
        if (tg > best_tg) best_tg = tg;
        if (b - a < best_ttft) best_ttft = b - a;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"load_s\": %.4f, \"pp_tps\": %.2f, \"tg_tps\": %.2f, \"ttft_s\": %.4f, "
           "\"peak_rss_mb\": %.1f, \"kv_mb\": %.1f}\n",
           load_s, best_pp, best_tg, best_ttft, ru.ru_maxrss / 1024.0,
           lm_ctx_kv_bytes(c) / 1048576.0);
    free(logits);
    lm_ctx_free(c);
    lm_pool_free(pool);
    lm_model_free(m);
    free(prompt);
    return 0;
}
