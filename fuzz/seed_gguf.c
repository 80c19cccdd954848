/* Writes a few small valid GGUF files (one per tensor type, one with every
 * kv type, one with a custom alignment) into DIR as the fuzzer's seeds.
 * usage: seed_gguf DIR */
#include <stdio.h>
#include <string.h>

#include "gguf/gguf.h"

static int one(const char *dir, const char *name, lm_dtype type, uint32_t align, int kvs) {
    lm_err err;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.gguf", dir, name);
    gguf_writer *w = gguf_writer_new();
    int rc = w ? 0 : -1;
    uint8_t bytes[2 * 64 * 4];
    for (size_t i = 0; i < sizeof bytes; i++) bytes[i] = (uint8_t)(i * 37 + 11);
    float norm[8] = {1, 1, 1, 1, 0.5f, 0.5f, 2, 2};
    int64_t ne2[2] = {64, 2}, ne1[1] = {8};
    if (!rc) rc = gguf_set_str(w, "general.architecture", "llama", &err);
    if (!rc && align) rc = gguf_set_u32(w, "general.alignment", align, &err);
    if (!rc && kvs) {
        const char *toks[] = {"<|endoftext|>", "a", "Ġb"};
        int32_t tt[3] = {3, 1, 1};
        double f64[2] = {1.5, -2};
        rc = gguf_set_u32(w, "llama.block_count", 1, &err) || gguf_set_i32(w, "i32", -1, &err) ||
             gguf_set_u64(w, "u64", 5, &err) || gguf_set_f32(w, "llama.rope.freq_base", 1e5f, &err) ||
             gguf_set_bool(w, "tokenizer.ggml.add_bos_token", false, &err) ||
             gguf_set_arr_str(w, "tokenizer.ggml.tokens", toks, 3, &err) ||
             gguf_set_arr(w, "tokenizer.ggml.token_type", GGUF_I32, tt, 3, &err) ||
             gguf_set_arr(w, "f64s", GGUF_F64, f64, 2, &err);
    }
    if (!rc) rc = gguf_add_tensor(w, "output_norm.weight", LM_F32, 1, ne1, norm, sizeof norm, &err);
    if (!rc) {
        size_t nb = lm_dtype_row_bytes(type, 64) * 2;
        rc = gguf_add_tensor(w, "blk.0.attn_q.weight", type, 2, ne2, bytes, nb, &err);
    }
    if (!rc) rc = gguf_write(w, path, &err);
    gguf_writer_free(w);
    if (rc) fprintf(stderr, "seed_gguf: %s: %s\n", path, rc ? err.msg : "");
    return rc;
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: seed_gguf DIR\n"); return 2; }
    const char *d = argv[1];
    int rc = one(d, "f32", LM_F32, 0, 1) | one(d, "f16", LM_F16, 0, 0) | one(d, "bf16", LM_BF16, 0, 0) |
             one(d, "q8_0", LM_Q8_0, 0, 0) | one(d, "q4_0", LM_Q4_0, 16, 0) | one(d, "q4_1", LM_Q4_1, 64, 1);
    return rc ? 1 : 0;
}
