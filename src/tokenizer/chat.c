/* Chat template. We do not run Jinja: we render ChatML
 *   <|im_start|>{role}\n{content}<|im_end|>\n   per message
 * and read from the model's template the one thing SmolLM2's varies on:
 * the default system turn it injects when messages[0] is not a system
 * message. A template that is not ChatML is refused at render time. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/internal.h"

#define SYS_OPEN "<|im_start|>system\n"
#define TURN_END "<|im_end|>"

/* Undoes the escapes a Jinja string literal may use (\n, \t, \\, \', \"). */
static char *unescape(const char *s, size_t n) {
    char *o = malloc(n + 1);
    if (!o) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\' && i + 1 < n) {
            char c = s[++i];
            o[k++] = c == 'n' ? '\n' : c == 't' ? '\t' : c;
        } else {
            o[k++] = s[i];
        }
    }
    o[k] = '\0';
    return o;
}

int lm_chat_parse_template(const char *tmpl, char **out, lm_err *err) {
    *out = NULL;
    /* The injection is conditional on the first message's role; look for that
     * test, then for the system turn literal that follows it. */
    const char *cond = strstr(tmpl, "messages[0]['role'] != 'system'");
    if (!cond) cond = strstr(tmpl, "messages[0][\"role\"] != \"system\"");
    if (!cond) return 0;
    const char *open = strstr(cond, SYS_OPEN);
    size_t open_len = strlen(SYS_OPEN);
    if (!open) {
        open = strstr(cond, "<|im_start|>system\\n");   /* escaped newline in the literal */
        open_len = strlen("<|im_start|>system\\n");
    }
    if (!open) return 0;
    const char *body = open + open_len;
    const char *end = strstr(body, TURN_END);
    if (!end) return lm_errf(err, "tokenizer.chat_template: default system turn has no " TURN_END);
    *out = unescape(body, (size_t)(end - body));
    if (!*out) return lm_errf(err, "out of memory");
    return 0;
}

typedef struct sbuf { char *p; size_t n, cap; } sbuf;

static int put(sbuf *b, const char *s) {
    size_t k = strlen(s);
    if (b->n + k + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 256;
        while (c < b->n + k + 1) c *= 2;
        char *q = realloc(b->p, c);
        if (!q) return -1;
        b->p = q;
        b->cap = c;
    }
    memcpy(b->p + b->n, s, k);
    b->n += k;
    b->p[b->n] = '\0';
    return 0;
}

static int turn(sbuf *b, const char *role, const char *content) {
    return put(b, "<|im_start|>") || put(b, role) || put(b, "\n") || put(b, content) ||
           put(b, TURN_END "\n");
}

char *lm_chat_render(const lm_tokenizer *t, const lm_chat_msg *msgs, size_t n,
                     bool add_generation_prompt, lm_err *err) {
    if (t->chat_template && (!strstr(t->chat_template, "<|im_start|>") || !strstr(t->chat_template, TURN_END))) {
        lm_errf(err, "tokenizer.chat_template is not ChatML (<|im_start|>role ... <|im_end|>); "
                     "only ChatML templates are supported");
        return NULL;
    }
    sbuf b = {0};
    int rc = put(&b, "");
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (!msgs[i].role || !msgs[i].content) {
            free(b.p);
            lm_errf(err, "chat message %zu has no %s", i, msgs[i].role ? "content" : "role");
            return NULL;
        }
        if (i == 0 && t->chat_default_system && strcmp(msgs[0].role, "system") != 0)
            rc = turn(&b, "system", t->chat_default_system);
        if (rc == 0) rc = turn(&b, msgs[i].role, msgs[i].content);
    }
    if (rc == 0 && add_generation_prompt) rc = put(&b, "<|im_start|>assistant\n");
    if (rc) {
        free(b.p);
        lm_errf(err, "out of memory");
        return NULL;
    }
    return b.p;
}
