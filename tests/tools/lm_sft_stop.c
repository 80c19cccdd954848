/* lm_sft_stop BASE.gguf ADAPTER.gguf PROMPTS.txt MAX_TOKENS MERGED.gguf
 *
 * For the masking proof (tests/oracle/test_train_stop.py): merges a LoRA
 * adapter into the base's f32 weights (W += alpha/r * B A, all in GGUF
 * layout), writes them to MERGED.gguf, loads that with the inference
 * engine, and greedy-decodes a reply to each line of PROMPTS.txt (one user
 * message each, chat template of the base). Prints one JSON line per
 * prompt: {"stopped": true|false, "n": tokens generated, "reply": "..."};
 * stopped means <|im_end|> (or eos) came within MAX_TOKENS. ADAPTER "-":
 * the base model alone. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/pool.h"
#include "gguf/gguf.h"
#include "model/llama.h"
#include "runtime/generate.h"
#include "tokenizer/tokenizer.h"
#include "train/lora.h"
#include "train/train_model.h"

static void merge(lm_tmodel *m, const lm_lora *l) {
    for (int layer = 0; layer < l->n_layers; layer++)
        for (int p = 0; p < LM_LORA_N; p++) {
            const float *A = l->a[layer][p], *B = l->b[layer][p];
            if (!A) continue;
            const lm_ttensor *t = NULL;
            float *W = m->layer[layer][lm_lora_base_index(p)];
            for (int i = 0; i < m->n_tensors; i++)
                if (m->params + m->tensors[i].offset == W) t = &m->tensors[i];
            int in = (int)t->ne[0], out = (int)t->ne[1], r = l->rank;
            for (int o = 0; o < out; o++)
                for (int k = 0; k < r; k++) {
                    float s = l->scale * B[(size_t)o * r + k];
                    const float *a = A + (size_t)k * in;
                    float *w = W + (size_t)o * in;
                    for (int i = 0; i < in; i++) w[i] += s * a[i];
                }
        }
}

static void json_str(const char *s, size_t n) {
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c == '\n') printf("\\n");
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: lm_sft_stop BASE.gguf ADAPTER.gguf PROMPTS.txt MAX_TOKENS MERGED.gguf\n");
        return 2;
    }
    int max_tokens = atoi(argv[4]);
    lm_err err = {{0}};
    gguf_file *f = gguf_open(argv[1], &err);
    lm_tokenizer *tok = f ? lm_tokenizer_load(f, &err) : NULL;
    lm_tmodel *tm = tok ? lm_tmodel_from_gguf(f, &err) : NULL;
    int no_adapter = !strcmp(argv[2], "-");   /* the base alone: the control */
    lm_lora *lora = tm && !no_adapter ? lm_lora_load(tm, argv[2], &err) : NULL;
    if (!tm || (!lora && !no_adapter)) { fprintf(stderr, "lm_sft_stop: %s\n", err.msg); return 1; }
    if (lora) merge(tm, lora);
    lm_lora_free(lora);
    /* the base's metadata (tokenizer, context length) with f32 tensors */
    gguf_writer *w = gguf_writer_new();
    int bad = !w || gguf_copy_kvs(w, f, &err) || gguf_set_u32(w, "general.file_type", 0, &err);
    for (int i = 0; !bad && i < tm->n_tensors; i++) {
        const lm_ttensor *t = &tm->tensors[i];
        bad = gguf_add_tensor(w, t->name, LM_F32, t->n_dims, t->ne, tm->params + t->offset,
                              t->numel * sizeof(float), &err);
    }
    if (bad || gguf_write(w, argv[5], &err)) { fprintf(stderr, "lm_sft_stop: %s\n", err.msg); return 1; }
    gguf_writer_free(w);
    gguf_close(f);
    int n_vocab = tm->cfg.n_vocab;
    lm_tmodel_free(tm);
    lm_model *m = lm_model_load(argv[5], &err);
    lm_pool *pool = m ? lm_pool_new(0, &err) : NULL;
    if (!pool) { fprintf(stderr, "lm_sft_stop: %s\n", err.msg); return 1; }
    int32_t im_end = lm_tokenizer_find(tok, "<|im_end|>"), eos = lm_tokenizer_eos(tok);
    FILE *pf = fopen(argv[3], "r");
    if (!pf) { perror(argv[3]); return 1; }
    float *logits = malloc((size_t)n_vocab * sizeof(float));
    char line[4096];
    int rc = 0;
    while (fgets(line, sizeof line, pf)) {
        line[strcspn(line, "\n")] = 0;
        if (!line[0]) continue;
        lm_chat_msg msg = {.role = "user", .content = line};
        int32_t *ptoks = NULL;
        size_t np = 0;
        lm_ctx *c = NULL;
        if (lm_generate_prompt(tok, &msg, 1, &ptoks, &np, &err) ||
            !(c = lm_ctx_new(m, (int)np + max_tokens + 1, pool, &err)) ||
            lm_eval(c, ptoks, (int)np, LM_LOGITS_LAST, logits, &err)) {
            fprintf(stderr, "lm_sft_stop: %s\n", err.msg);
            rc = 1;
            free(ptoks);
            lm_ctx_free(c);
            break;
        }
        char reply[8192];
        size_t rlen = 0;
        int n = 0, stopped = 0;
        while (n < max_tokens) {
            int32_t best = 0;
            for (int v = 1; v < n_vocab; v++) if (logits[v] > logits[best]) best = v;
            n++;
            if (best == im_end || best == eos) { stopped = 1; break; }
            char piece[256];
            int k = lm_token_bytes(tok, best, false, piece, sizeof piece);
            if (k > 0 && rlen + (size_t)k < sizeof reply) { memcpy(reply + rlen, piece, (size_t)k); rlen += (size_t)k; }
            if (lm_eval(c, &best, 1, LM_LOGITS_LAST, logits, &err)) { fprintf(stderr, "lm_sft_stop: %s\n", err.msg); rc = 1; break; }
        }
        printf("{\"stopped\": %s, \"n\": %d, \"reply\": ", stopped ? "true" : "false", n);
        json_str(reply, rlen);
        printf("}\n");
        fflush(stdout);
        free(ptoks);
        lm_ctx_free(c);
    }
    fclose(pf);
    free(logits);
    lm_pool_free(pool);
    lm_model_free(m);
    lm_tokenizer_free(tok);
    return rc;
}
