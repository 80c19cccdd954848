/* libFuzzer target: any byte string through gguf_open_mem. A file that
 * opens must be fully usable: every kv readable, every tensor byte inside
 * the buffer (ASan checks), every row dequantizable, and the whole file
 * accepted by the writer (copy_kvs + add_tensor) without complaint. Then
 * the llama config reader the engine and the trainer share: a config or an
 * error that says why. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gguf/gguf.h"
#include "model/llama.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void walk_kv(const gguf_file *f, const gguf_kv *kv, volatile uint64_t *sink) {
    lm_err err;
    uint32_t u;
    float x;
    if (!gguf_get_u32(f, kv->key, &u, &err)) *sink += u;
    if (!gguf_get_f32(f, kv->key, &x, &err)) *sink += (uint64_t)(x == x);
    char *s = gguf_get_str(f, kv->key, &err);
    if (s) *sink += strlen(s);
    free(s);
    if (kv->type != GGUF_ARRAY) return;
    for (uint64_t i = 0; i < kv->arr_n; i++) {
        if (kv->arr_type == GGUF_STRING) {
            const gguf_str *st = &kv->arr_strs[i];
            for (uint64_t j = 0; j < st->len; j++) *sink += (uint8_t)st->ptr[j];
        } else {
            *sink += (uint64_t)gguf_arr_get_i64(kv, i);
            double d = gguf_arr_get_f64(kv, i);
            *sink += (uint64_t)(d == d);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lm_err err;
    gguf_file *f = gguf_open_mem(data, size, "fuzz", &err);
    if (!f) {
        if (!err.msg[0]) abort(); /* every failure must say why */
        return 0;
    }
    volatile uint64_t sink = 0;
    for (uint64_t i = 0; i < f->n_kv; i++) walk_kv(f, &f->kv[i], &sink);
    gguf_writer *w = gguf_writer_new();
    if (gguf_copy_kvs(w, f, &err)) abort();
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        if (gguf_find_tensor(f, t->name) != t) abort();
        const uint8_t *p = t->data;
        if (p < f->map || t->nbytes > f->size || p + t->nbytes > f->map + f->size) abort();
        for (size_t j = 0; j < t->nbytes; j++) sink += p[j];
        size_t row = lm_dtype_row_bytes(t->type, t->ne[0]);
        if (!row || t->nbytes % row) abort();
        float *tmp = malloc((size_t)t->ne[0] * sizeof *tmp);
        if (tmp) {
            for (size_t r = 0; r < t->nbytes / row; r++) lm_dequant_row(t->type, p + r * row, tmp, t->ne[0]);
            free(tmp);
        }
        /* names over 63 bytes are legal to read but refused by the writer */
        if (strlen(t->name) < 64 &&
            gguf_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, t->nbytes, &err))
            abort();
    }
    gguf_writer_free(w);
    lm_llama_config cfg;
    err.msg[0] = '\0';
    if (lm_llama_config_read(f, &cfg, &err)) {
        if (!err.msg[0]) abort();
    } else if (cfg.rope_freqs) {
        for (int i = 0; i < cfg.head_dim / 2; i++)
            if (!(cfg.rope_freqs[i] > 0.0f)) abort();
    }
    gguf_close(f);
    return 0;
}
