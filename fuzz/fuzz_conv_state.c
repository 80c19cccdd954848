/* libFuzzer target: a saved conversation (lm_api_conv_from_bytes, behind
 * lemonpc_conversation_restore). The checksum and the NPC fingerprint
 * would stop every mutated input at the door, so the harness writes them:
 * the input is the body after the fingerprint (player, place, turns, PRNG,
 * tokens, KV), the harness frames it as a valid v2 file for a small NPC on
 * the real model (LEMONPC_MODEL or ~/.cache/lemonpc), then restores it.
 * Whatever the body, the restore either fails with a message or gives a
 * conversation whose cache holds as many tokens as it says. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/api_internal.h"

static lemonpc_model *model;   /* set once by LLVMFuzzerInitialize, read-only after */
static lemonpc_npc *npc;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    char path[512];
    const char *p = getenv("LEMONPC_MODEL");
    if (p) snprintf(path, sizeof path, "%s", p);
    else snprintf(path, sizeof path, "%s/.cache/lemonpc/SmolLM2-135M-Instruct.Q4_1.gguf",
                  getenv("HOME") ? getenv("HOME") : "");
    lemonpc_error err;
    lemonpc_model_params mp = lemonpc_model_default_params();
    mp.threads = 1;
    mp.n_ctx = 256;
    if (!(model = lemonpc_model_load(path, &mp, &err))) {
        fprintf(stderr, "fuzz_conv_state: %s (set LEMONPC_MODEL)\n", err.message);
        exit(1);
    }
    lemonpc_npc_params np = lemonpc_npc_default_params();
    np.system = "You are Brom, a blacksmith.";
    if (!(npc = lemonpc_npc_load(model, &np, &err))) {
        fprintf(stderr, "fuzz_conv_state: %s\n", err.message);
        exit(1);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    size_t n = 24 + size + 8;
    uint8_t *buf = malloc(n);
    if (!buf) return 0;
    uint32_t version = 2, kv = (uint32_t)model->kv_type;
    memcpy(buf, "LMPCCONV", 8);
    memcpy(buf + 8, &version, 4);
    memcpy(buf + 12, &kv, 4);
    memcpy(buf + 16, &npc->fingerprint, 8);
    if (size) memcpy(buf + 24, data, size);
    uint64_t h = lm_api_fnv(0xcbf29ce484222325ULL, buf, n - 8);
    memcpy(buf + n - 8, &h, 8);
    lemonpc_error err;
    lemonpc_conversation *c = lm_api_conv_from_bytes(npc, buf, n, "fuzz", &err);   /* takes buf */
    if (c) {
        if (lemonpc_conversation_n_cached(c) != lm_ctx_n_past(c->ctx)) abort();
        lemonpc_conversation_close(c);
    } else if (!err.message[0]) {
        abort();   /* a refusal always says why */
    }
    return 0;
}
