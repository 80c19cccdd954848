/* libFuzzer target: a PEFT folder read back (train/peft.c,
 * lm_peft_import_mem): adapter_config.json and adapter_model.safetensors
 * (u64 header length, JSON header of tensors with dtype, shape and
 * data_offsets, the data). The input is the config text, a NUL byte, then
 * the safetensors bytes. The base is a small model described in memory (2
 * layers, n_embd 8, 2 heads of 4, 1 KV head, n_ff 16: only the shapes are
 * read), and the adapter GGUF is built but not written. Checks: no crash
 * or sanitizer report, and a refusal names the file it is about. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/llama.h"
#include "train/peft.h"

#define CPATH "fuzz/adapter_config.json"
#define SPATH "fuzz/adapter_model.safetensors"

static lm_model g_base;   /* shapes only; set up once (libFuzzer offers no context) */
static lm_llama_layer g_layers[2];

static void base_init(void) {
    lm_llama_config *c = &g_base.cfg;
    strcpy(c->arch, "llama");
    c->n_layer = 2, c->n_embd = 8, c->n_ff = 16, c->n_head = 2, c->n_head_kv = 1;
    c->head_dim = 4, c->n_rot = 4, c->n_vocab = 16;
    for (int l = 0; l < 2; l++) {
        lm_llama_layer *L = &g_layers[l];
        L->wq = (lm_weight){NULL, LM_F32, 8, 8};
        L->wk = L->wv = (lm_weight){NULL, LM_F32, 4, 8};
        L->wo = (lm_weight){NULL, LM_F32, 8, 8};
        L->w_gate = L->w_up = (lm_weight){NULL, LM_F32, 16, 8};
        L->w_down = (lm_weight){NULL, LM_F32, 8, 16};
    }
    g_base.layers = g_layers;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_base.layers) base_init();
    const uint8_t *nul = memchr(data, 0, size);
    size_t nc = nul ? (size_t)(nul - data) : size;
    const char *st = nul ? (const char *)nul + 1 : "";
    size_t ns = nul ? size - nc - 1 : 0;
    /* Exact-size copies, so reading past either file is an ASan report. */
    char *conf = malloc(nc ? nc : 1), *tens = malloc(ns ? ns : 1);
    if (!conf || !tens) { free(conf); free(tens); return 0; }
    memcpy(conf, data, nc);
    memcpy(tens, st, ns);
    lm_err err = {{0}};
    if (lm_peft_import_mem(&g_base, CPATH, conf, nc, SPATH, tens, ns, NULL, &err) &&
        !strstr(err.msg, CPATH) && !strstr(err.msg, SPATH) && !strstr(err.msg, "out of memory"))
        abort();
    free(conf);
    free(tens);
    return 0;
}
