/* lm_train_logits: the trainer's forward pass, for oracle tests against
 * llama.cpp (which runs the same GGUF, optionally with a LoRA adapter).
 *
 *   lm_train_logits MODEL TOKENS --out FILE [--lora ADAPTER]
 *                   [--write-lora ADAPTER --rank R --alpha A --seed S --targets q,k,...]
 *
 * TOKENS is a comma-separated id list, run as one sequence. Writes logits
 * as raw little-endian f32 [n_tokens, n_vocab] to FILE and prints
 * "n_vocab V" and "loss L" (mean next-token loss over the sequence).
 * --write-lora makes a PEFT-initialised adapter (default: on all seven
 * projections) with B ~ N(0, 0.02^2) (so it changes the output), saves it
 * and uses it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/lora.h"
#include "train/train_internal.h"
#include "train/train_model.h"

static int parse_tokens(const char *s, int32_t **out, int *n) {
    int cap = 16, k = 0;
    int32_t *t = malloc((size_t)cap * sizeof *t);
    while (t && *s) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || end == s || v < 0 || v > INT32_MAX || (*end && *end != ',')) break;
        if (k == cap) {
            int32_t *nt = realloc(t, (size_t)(cap *= 2) * sizeof *t);
            if (!nt) break;
            t = nt;
        }
        t[k++] = (int32_t)v;
        s = *end ? end + 1 : end;
    }
    if (!t || *s || k == 0) { free(t); return -1; }
    *out = t;
    *n = k;
    return 0;
}

int main(int argc, char **argv) {
    const char *out = NULL, *lora_in = NULL, *lora_out = NULL;
    int rank = 8;
    float alpha = 16.0f;
    unsigned long long seed = 1;
    unsigned targets = LM_LORA_ALL;
    lm_err err = {{0}};
    if (argc < 3) goto usage;
    for (int i = 3; i < argc; i++) {
        if (i + 1 >= argc) goto usage;
        if (!strcmp(argv[i], "--out")) out = argv[++i];
        else if (!strcmp(argv[i], "--lora")) lora_in = argv[++i];
        else if (!strcmp(argv[i], "--write-lora")) lora_out = argv[++i];
        else if (!strcmp(argv[i], "--rank")) rank = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--alpha")) alpha = strtof(argv[++i], NULL);
        else if (!strcmp(argv[i], "--seed")) seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--targets")) {
            if (lm_lora_parse_targets(argv[++i], &targets, &err)) {
                fprintf(stderr, "lm_train_logits: %s\n", err.msg);
                return 2;
            }
        }
        else goto usage;
    }
    if (!out) goto usage;
    int32_t *tok = NULL;
    int T = 0;
    if (parse_tokens(argv[2], &tok, &T)) {
        fprintf(stderr, "lm_train_logits: bad token list '%s'\n", argv[2]);
        return 2;
    }
    int rc = 1;
    lm_tmodel *m = lm_tmodel_load(argv[1], &err);
    lm_lora *lora = NULL;
    lm_tacts *a = NULL;
    float *logits = NULL;
    int32_t *tgt = calloc((size_t)T, sizeof *tgt);
    uint8_t *mask = calloc((size_t)T, 1);
    if (!m || !tgt || !mask) goto done;
    if (lora_in && !(lora = lm_lora_load(m, lora_in, &err))) goto done;
    if (lora_out) {
        if (!(lora = lm_lora_new(m, rank, alpha, targets, seed, &err))) goto done;
        lm_trng r;
        lm_trng_seed(&r, seed + 1);
        for (int i = 1; i < lora->n_tensors; i += 2) {
            const lm_ttensor *t = &lora->tensors[i];
            for (size_t j = 0; j < t->numel; j++)
                lora->params[t->offset + j] = 0.02f * (float)lm_trng_normal(&r);
        }
        if (lm_lora_save(lora, lora_out, &err)) goto done;
    }
    for (int i = 0; i < T; i++) {
        tgt[i] = i + 1 < T ? tok[i + 1] : 0;
        mask[i] = i + 1 < T;
    }
    lm_tbatch b = { .B = 1, .T = T, .tokens = tok, .targets = tgt, .mask = mask };
    double loss;
    int V = 0;
    if (!(a = lm_tacts_new(m, lora, 1, T, 0, &err))) goto done;
    V = m->cfg.n_vocab;
    if (!(logits = malloc((size_t)T * V * sizeof(float)))) { lm_errf(&err, "out of memory"); goto done; }
    if (lm_train_forward(m, lora, a, &b, NULL, &err) ||
        lm_train_loss(m, a, &b, NULL, 0, logits, &loss, &err))
        goto done;
    FILE *f = fopen(out, "wb");
    if (!f) { lm_errno(&err, "%s: cannot open", out); goto done; }
    size_t wrote = fwrite(logits, sizeof(float), (size_t)T * V, f);
    if (fclose(f) || wrote != (size_t)T * V) { lm_errno(&err, "%s: cannot write", out); goto done; }
    printf("n_vocab %d\nloss %.6f\n", V, loss);
    rc = 0;
done:
    if (rc) fprintf(stderr, "lm_train_logits: %s\n", err.msg);
    free(logits); free(tgt); free(mask); free(tok);
    lm_tacts_free(a);
    lm_lora_free(lora);
    lm_tmodel_free(m);
    return rc;
usage:
    fprintf(stderr, "usage: %s MODEL TOKENS --out FILE [--lora ADAPTER] "
                    "[--write-lora ADAPTER --rank R --alpha A --seed S --targets LIST]\n", argv[0]);
    return 2;
}
