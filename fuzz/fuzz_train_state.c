/* libFuzzer target: what a training run reads back (train/checkpoint.c,
 * train/train_config.c): a checkpoint's state.json
 * (lm_ckpt_parse_state), a run config (`lemonpc train --config run.json`,
 * lm_train_cfg_parse_json, then lm_train_cfg_finish), optim.bin
 * (lm_ckpt_parse_optim; the harness writes the "LMADAMW1" magic and the
 * run's parameter count, 4, before the input, which is the step and the
 * moments), and the checkpoint's weights, adapter.gguf of a LoRA run and
 * model.gguf of a full one (lm_ckpt_load_weights on a small random model;
 * the input is written to a temp folder, as the loaders map a path). The
 * first input byte picks which; the rest is the file. fuzz/seed_train_state.c
 * writes real adapter and model files as seeds. Checks: no crash or
 * sanitizer report (a number too large for its field is a
 * float-cast-overflow report); refusals name the file; a loaded position is
 * non-negative; a config that loads survives its own JSON form (to_json,
 * parse, to_json gives the same text: what --resume relies on); loaded
 * weights are the model's shape. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/lora.h"
#include "train/train_config.h"
#include "train/train_model.h"

#define NAME "fuzz/last/state.json"

static void check_roundtrip(const lm_train_cfg *c) {
    char *a = lm_train_cfg_to_json(c);
    if (!a) return;   /* out of memory */
    lm_train_cfg back;
    lm_train_cfg_defaults(&back);
    lm_err err = {{0}};
    if (lm_train_cfg_parse_json(&back, "roundtrip", a, &err)) abort();
    char *b = lm_train_cfg_to_json(&back);
    if (!b || strcmp(a, b)) abort();
    free(a);
    free(b);
}

static void fuzz_state(const char *text, size_t len) {
    lm_train_cfg cfg;
    lm_ckpt_state st;
    lm_err err = {{0}};
    if (lm_ckpt_parse_state(NAME, text, len, &cfg, &st, &err)) {
        if (!strstr(err.msg, NAME)) abort();
        return;
    }
    if (st.step < 0 || st.micro < 0 || st.tokens < 0 || st.best_step < 0 || st.metrics_bytes < 0)
        abort();
    check_roundtrip(&cfg);
}

static void fuzz_config(const char *text) {
    lm_train_cfg cfg;
    lm_train_cfg_defaults(&cfg);
    lm_err err = {{0}};
    if (lm_train_cfg_parse_json(&cfg, "fuzz/run.json", text, &err)) {
        if (!strstr(err.msg, "fuzz/run.json")) abort();
        return;
    }
    check_roundtrip(&cfg);
    if (lm_train_cfg_finish(&cfg, &err) == 0) {
        if (!(cfg.lr > 0)) abort();
        long w = lm_train_cfg_warmup_steps(&cfg, 1000);
        if (w < 0) abort();
        check_roundtrip(&cfg);
    }
}

static void fuzz_optim(const uint8_t *data, size_t size) {
    size_t len = 16 + size;
    uint8_t *buf = malloc(len);
    if (!buf) return;
    uint64_t n = 4;
    memcpy(buf, "LMADAMW1", 8);
    memcpy(buf + 8, &n, 8);
    memcpy(buf + 16, data, size);
    lm_err err = {{0}};
    lm_adamw *o = lm_adamw_new(4, &err);
    if (!o) abort();
    if (lm_ckpt_parse_optim("fuzz/optim.bin", buf, len, o, &err) == 0) {
        if (len != 24 + 8 * sizeof(float) || o->step < 0) abort();
    } else if (!strstr(err.msg, "fuzz/optim.bin")) {
        abort();
    }
    lm_adamw_free(o);
    free(buf);
}

/* The run's model, and a folder for the weight files: made once
 * (libFuzzer offers no context), only read afterwards. */
static lm_tmodel *g_model;
static char g_dir[64];

/* The toy shape of fuzz/seed_train_state.c. */
static const lm_tconfig TOY = {.n_vocab = 16, .dim = 8, .n_layers = 1, .n_heads = 2, .n_kv_heads = 1,
                               .head_dim = 4, .ffn_dim = 16, .rope_base = 10000.0f, .rms_eps = 1e-5f,
                               .tied = 1};

static void remove_dir(void) { rmdir(g_dir); }

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    lm_err err = {{0}};
    snprintf(g_dir, sizeof g_dir, "/tmp/fuzz_train_state_XXXXXX");
    if (!mkdtemp(g_dir) || !(g_model = lm_tmodel_new_random(&TOY, 1, 0.1f, &err))) {
        fprintf(stderr, "fuzz_train_state: set-up failed: %s\n", err.msg);
        exit(1);
    }
    atexit(remove_dir);
    return 0;
}

static void fuzz_weights(const uint8_t *data, size_t size, int full) {
    char path[128];
    snprintf(path, sizeof path, "%s/%s", g_dir, full ? "model.gguf" : "adapter.gguf");
    FILE *f = fopen(path, "wb");
    if (!f) return;
    int ok = fwrite(data, 1, size, f) == size;
    if (fclose(f) || !ok) return;
    lm_err err = {{0}};
    lm_lora *lora = NULL;
    /* a full load replaces the model's weights: keep them for the next input */
    float *keep = full ? malloc(g_model->n_params * sizeof(float)) : NULL;
    if (full && !keep) return;
    if (full) memcpy(keep, g_model->params, g_model->n_params * sizeof(float));
    if (lm_ckpt_load_weights(g_dir, full, g_model, &lora, &err) == 0) {
        if (!full && (!lora || lora->rank < 1 || lora->n_layers != TOY.n_layers)) abort();
    } else if (!strstr(err.msg, path)) {
        abort();
    }
    if (full) {
        memcpy(g_model->params, keep, g_model->n_params * sizeof(float));
        free(keep);
    }
    lm_lora_free(lora);
    unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    /* NUL-terminated (the config parser takes a C string), exact size else */
    char *text = malloc(size);
    if (!text) return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = 0;
    switch (data[0] % 5) {
    case 0: fuzz_state(text, size - 1); break;
    case 1: fuzz_config(text); break;
    case 2: fuzz_optim(data + 1, size - 1); break;
    case 3: fuzz_weights(data + 1, size - 1, 0); break;
    default: fuzz_weights(data + 1, size - 1, 1); break;
    }
    free(text);
    return 0;
}
