/* libFuzzer target: the model's chat template (tokenizer/chat.c). We do not
 * run Jinja: lm_chat_parse_template reads SmolLM2's default system turn
 * out of the template text and lm_chat_render writes ChatML. The input is
 * the template, given to a small tokenizer as GGUF's
 * tokenizer.chat_template would be. Checks: no crash or sanitizer report;
 * a refused template says why; a rendered conversation is exactly ChatML,
 * turn by turn, with the default system turn (the one parsed out of the
 * template) first when the conversation does not open with a system
 * message and the template has one. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/strbuf.h"
#include "tokenizer/internal.h"
#include "tokenizer/tokenizer.h"

static void turn(lm_sb *b, const char *role, const char *content) {
    lm_sb_printf(b, "<|im_start|>%s\n%s<|im_end|>\n", role, content);
}

static void check_render(const lm_tokenizer *t, const char *tmpl, const char *def,
                         const lm_chat_msg *m, size_t n) {
    lm_err err = {{0}};
    char *got = lm_chat_render(t, m, n, true, &err);
    if (!got) {   /* only a template that is not ChatML is refused */
        if (!err.msg[0] || (strstr(tmpl, "<|im_start|>") && strstr(tmpl, "<|im_end|>"))) abort();
        return;
    }
    lm_sb want = {0};
    lm_sb_str(&want, "");
    for (size_t i = 0; i < n; i++) {
        if (i == 0 && def && strcmp(m[0].role, "system")) turn(&want, "system", def);
        turn(&want, m[i].role, m[i].content);
    }
    lm_sb_str(&want, "<|im_start|>assistant\n");
    char *w = lm_sb_take(&want);
    if (!w || strcmp(got, w)) abort();
    free(w);
    free(got);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *tmpl = malloc(size + 1);
    if (!tmpl) return 0;
    memcpy(tmpl, data, size);
    tmpl[size] = 0;

    /* The parser alone: the default system turn, if any, is a string. */
    char *def = NULL;
    lm_err err = {{0}};
    int rc = lm_chat_parse_template(tmpl, &def, &err);
    if (rc && (def || !err.msg[0])) abort();

    static const char *const tokens[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "a"};
    static const int32_t types[] = {3, 3, 3, 1};
    lm_tokenizer_spec s = {.model = "gpt2", .pre = "smollm", .tokens = tokens, .n_tokens = 4,
                           .token_types = types, .bos = 1, .eos = 2, .unk = -1, .pad = 2,
                           .chat_template = tmpl};
    lm_err terr = {{0}};
    lm_tokenizer *t = lm_tokenizer_new(&s, &terr);
    if ((t == NULL) != (rc != 0)) abort();   /* the tokenizer refuses what the parser refuses */
    if (t) {
        const lm_chat_msg user[] = {{"user", "Who are you?"}, {"assistant", "Brann."}};
        const lm_chat_msg sys[] = {{"system", "You are Brann."}, {"user", "Hi"}};
        check_render(t, tmpl, def, user, 2);
        check_render(t, tmpl, def, sys, 2);
        check_render(t, tmpl, def, user, 0);
        lm_tokenizer_free(t);
    } else if (!terr.msg[0]) {
        abort();
    }
    free(def);
    free(tmpl);
    return 0;
}
