/* Writes checkpoint weight files of the toy model fuzz/fuzz_train_state.c
 * loads into, as that target's seeds: adapter.gguf of a LoRA run (mode
 * byte 3, then the file) and model.gguf of a full run (mode byte 4).
 * usage: seed_train_state DIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fileio.h"
#include "train/lora.h"
#include "train/train_model.h"

/* DIR/name: the mode byte, then the bytes of the file at tmp. */
static int seed(const char *dir, const char *name, char mode, const char *tmp) {
    char *data;
    size_t len;
    lm_err err = {{0}};
    if (lm_read_file(tmp, &data, &len, false, &err)) {
        fprintf(stderr, "seed_train_state: %s\n", err.msg);
        return 1;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    int bad = !f || fputc(mode, f) == EOF || fwrite(data, 1, len, f) != len;
    if (f) bad |= fclose(f) != 0;
    if (bad) fprintf(stderr, "seed_train_state: cannot write %s\n", path);
    free(data);
    remove(tmp);
    return bad;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: seed_train_state DIR\n");
        return 2;
    }
    /* the shape of fuzz_train_state.c's TOY */
    const lm_tconfig toy = {.n_vocab = 16, .dim = 8, .n_layers = 1, .n_heads = 2, .n_kv_heads = 1,
                            .head_dim = 4, .ffn_dim = 16, .rope_base = 10000.0f, .rms_eps = 1e-5f,
                            .tied = 1};
    lm_err err = {{0}};
    lm_tmodel *m = lm_tmodel_new_random(&toy, 1, 0.1f, &err);
    lm_lora *l = m ? lm_lora_new(m, 2, 4.0f, LM_LORA_ALL, 7, &err) : NULL;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s/.seed.gguf", argv[1]);
    int bad = !l || lm_lora_save(l, tmp, &err) || seed(argv[1], "weights_adapter", 3, tmp);
    bad = bad || lm_tmodel_save(m, tmp, NULL, &err) || seed(argv[1], "weights_model", 4, tmp);
    if (bad && err.msg[0]) fprintf(stderr, "seed_train_state: %s\n", err.msg);
    lm_lora_free(l);
    lm_tmodel_free(m);
    return bad;
}
