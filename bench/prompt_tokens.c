/* The token ids of an NPC's first prompt, for bench/bench_runtime.py: what
 * llama.cpp is given so that it evaluates the same tokens our runtime does.
 *
 *   prompt_tokens MODEL SHEET full|short|none LINE [PLAYER [PLACE]]
 *
 * The prompt is the one lemonpc_say renders for a conversation's first
 * reply (include/lemonpc.h): the system turn of the persona policy
 * (lm_persona_system, the scene from PLAYER and PLACE; "" = none), the
 * player's LINE, the assistant turn opened. Prints the ids, space-separated,
 * on one line. (The public API does not expose the rendered prompt, hence
 * this helper on the library's internals.) */
#include <stdio.h>
#include <stdlib.h>

#include "gguf/gguf.h"
#include "runtime/generate.h"
#include "sheet/sheet.h"
#include "tokenizer/tokenizer.h"

int main(int argc, char **argv) {
    if (argc < 5 || argc > 7) {
        fprintf(stderr, "usage: prompt_tokens MODEL SHEET full|short|none LINE [PLAYER [PLACE]]\n");
        return 2;
    }
    int mode = lm_persona_mode_parse(argv[3]);
    if (mode < 0) {
        fprintf(stderr, "prompt_tokens: persona must be full, short or none, got '%s'\n", argv[3]);
        return 2;
    }
    const char *player = argc > 5 && argv[5][0] ? argv[5] : NULL;
    const char *place = argc > 6 && argv[6][0] ? argv[6] : NULL;
    lm_err err = {{0}};
    gguf_file *f = gguf_open(argv[1], &err);
    lm_tokenizer *t = f ? lm_tokenizer_load(f, &err) : NULL;
    gguf_close(f);
    lm_character *c = NULL;
    lm_world *w = NULL;
    char *sys = NULL;
    int32_t *toks = NULL;
    size_t n = 0;
    int rc = 1;
    if (!t) goto done;
    if (lm_sheet_load_character(argv[2], &c, &w, &err)) goto done;
    lm_scene sc = {player, place};
    sys = lm_persona_system(c, w, (lm_persona_mode)mode, &sc, &err);
    if (!sys && err.msg[0]) goto done;
    lm_chat_msg m[2] = {{"system", sys}, {"user", argv[4]}};
    if (lm_generate_prompt(t, sys ? m : m + 1, sys ? 2 : 1, &toks, &n, &err)) goto done;
    for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", (int)toks[i]);
    printf("\n");
    rc = 0;
done:
    if (rc) fprintf(stderr, "prompt_tokens: %s\n", err.msg);
    free(toks);
    free(sys);
    lm_world_free(w);
    lm_character_free(c);
    lm_tokenizer_free(t);
    return rc;
}
