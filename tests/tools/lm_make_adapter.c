/* lm_make_adapter: writes a LoRA adapter GGUF (llama.cpp format) with
 * random non-zero A and B for a base model, for the export oracle tests
 * (a trained adapter would do, but this one is fast and has no B = 0).
 *
 *   lm_make_adapter BASE.gguf OUT.gguf [--rank R] [--alpha A] [--seed S]
 *                   [--b-std X] [--targets all|q,k,v,o,gate,up,down]
 *                   [--type f32|f16]
 *
 * A ~ U(-1/sqrt(in), 1/sqrt(in)) as PEFT initialises it, B ~ N(0, X^2),
 * drawn in f32; --type f16 stores them rounded to f16 (the same draws),
 * converted by lm_adapter_convert as `lemonpc build --adapter-type f16`
 * converts its adapter, so the oracle tests hold that F16 file to llama.cpp. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/adapter.h"
#include "gguf/gguf.h"
#include "model/llama.h"

static uint64_t next(uint64_t *s) {
    *s ^= *s << 13; *s ^= *s >> 7; *s ^= *s << 17;
    return *s;
}
static double unif(uint64_t *s) { return ((next(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: lm_make_adapter BASE.gguf OUT.gguf [--rank R] [--alpha A] "
                        "[--seed S] [--b-std X] [--targets LIST] [--type f32|f16]\n");
        return 2;
    }
    int rank = 8;
    double alpha = 16, b_std = 0.01;
    uint64_t seed = 1;
    const char *targets = "all";
    lm_dtype type = LM_F32;
    for (int i = 3; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--rank")) rank = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--alpha")) alpha = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--seed")) seed = strtoull(argv[i + 1], NULL, 10) * 2654435761ULL + 1;
        else if (!strcmp(argv[i], "--b-std")) b_std = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--targets")) targets = argv[i + 1];
        else if (!strcmp(argv[i], "--type")) {
            if (!strcmp(argv[i + 1], "f32")) type = LM_F32;
            else if (!strcmp(argv[i + 1], "f16")) type = LM_F16;
            else { fprintf(stderr, "lm_make_adapter: --type f32 or f16, not %s\n", argv[i + 1]); return 2; }
        }
        else { fprintf(stderr, "lm_make_adapter: unknown option %s\n", argv[i]); return 2; }
    }
    static const char *const short_names[LM_ADAPT_N] = {"q", "k", "v", "o", "gate", "up", "down"};
    unsigned mask = 0;
    for (int p = 0; p < LM_ADAPT_N; p++) {
        char pat[16];
        snprintf(pat, sizeof pat, ",%s,", short_names[p]);
        char list[256];
        snprintf(list, sizeof list, ",%s,", targets);
        if (!strcmp(targets, "all") || strstr(list, pat)) mask |= 1u << p;
    }
    if (rank < 1 || !mask) { fprintf(stderr, "lm_make_adapter: bad --rank or --targets\n"); return 2; }
    lm_err err = {0};
    lm_model *m = lm_model_load(argv[1], &err);
    if (!m) { fprintf(stderr, "lm_make_adapter: %s\n", err.msg); return 1; }
    gguf_writer *w = gguf_writer_new();
    gguf_set_str(w, "general.architecture", m->cfg.arch, &err);
    gguf_set_str(w, "general.type", "adapter", &err);
    gguf_set_str(w, "adapter.type", "lora", &err);
    gguf_set_f32(w, "adapter.lora.alpha", (float)alpha, &err);
    int rc = 0;
    for (int l = 0; l < m->cfg.n_layer && !rc; l++)
        for (int p = 0; p < LM_ADAPT_N && !rc; p++) {
            if (!(mask & (1u << p))) continue;
            const lm_weight *bw = lm_adapter_base_weight(m, l, p);
            size_t na = (size_t)rank * bw->k, nb = (size_t)bw->n * rank;
            float *a = malloc(sizeof(float) * na), *b = malloc(sizeof(float) * nb);
            double bound = 1.0 / sqrt((double)bw->k);
            for (size_t i = 0; i < na; i++) a[i] = (float)((2 * unif(&seed) - 1) * bound);
            for (size_t i = 0; i < nb; i++)   /* Box-Muller */
                b[i] = (float)(b_std * sqrt(-2 * log(unif(&seed))) * cos(6.283185307179586 * unif(&seed)));
            char na_[96], nb_[96];
            snprintf(na_, sizeof na_, "blk.%d.%s.weight.lora_a", l, lm_adapter_proj_name(p));
            snprintf(nb_, sizeof nb_, "blk.%d.%s.weight.lora_b", l, lm_adapter_proj_name(p));
            int64_t nea[2] = {bw->k, rank}, neb[2] = {rank, bw->n};
            rc = gguf_add_tensor(w, na_, LM_F32, 2, nea, a, sizeof(float) * na, &err) ||
                 gguf_add_tensor(w, nb_, LM_F32, 2, neb, b, sizeof(float) * nb, &err);
            free(a); free(b);
        }
    if (!rc) rc = gguf_write(w, argv[2], &err);
    if (!rc && type == LM_F16) rc = lm_adapter_convert(argv[2], argv[2], LM_F16, &err);
    if (rc) fprintf(stderr, "lm_make_adapter: %s\n", err.msg);
    gguf_writer_free(w);
    lm_model_free(m);
    return rc ? 1 : 0;
}
