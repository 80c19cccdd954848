/* Style examples from a chat JSONL file (answer.h). */
#include "datagen/answer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "train/chat_jsonl.h"

void lm_style_examples_free(lm_style_example *v, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free((char *)v[i].question);
        free((char *)v[i].answer);
    }
    free(v);
}

int lm_style_examples_load(const char *path, lm_style_example **out, size_t *n_out, lm_err *err) {
    *out = NULL;
    *n_out = 0;
    lm_chat_jsonl_opts ro = {.strict = true};
    lm_chat_jsonl *in = lm_chat_jsonl_open(path, &ro, err);
    if (!in) return -1;
    size_t n = 0;
    int rc;
    lm_style_example *v = NULL;
    lm_chat_line l;
    while ((rc = lm_chat_jsonl_next(in, &l, err)) == LM_JSONL_OK) {
        /* the last user message and the assistant answer after it */
        const char *q = NULL, *a = NULL;
        for (size_t i = 0; i < l.n; i++) {
            if (!strcmp(l.msgs[i].role, "user")) { q = l.msgs[i].content; a = NULL; }
            else if (!strcmp(l.msgs[i].role, "assistant") && q) a = l.msgs[i].content;
        }
        if (!q || !a) {
            rc = lm_errf(err, "%s:%d: messages: a user message followed by an assistant message expected",
                         path, l.line);
            break;
        }
        lm_style_example *nv = realloc(v, (n + 1) * sizeof *nv);
        if (!nv) { rc = lm_errf(err, "out of memory"); break; }
        v = nv;
        v[n].question = strdup(q);
        v[n].answer = strdup(a);
        n++;
        if (!v[n - 1].question || !v[n - 1].answer) { rc = lm_errf(err, "out of memory"); break; }
    }
    lm_chat_jsonl_close(in);
    if (rc) { lm_style_examples_free(v, n); return -1; }
    *out = v;
    *n_out = n;
    return 0;
}
