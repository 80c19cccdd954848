/* Style examples from a chat JSONL file (answer.h). */
#include "datagen/answer.h"

#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "base/err.h"
#include "base/fileio.h"

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
    FILE *f = fopen(path, "rb");
    if (!f) return lm_errno(err, "%s", path);
    char *line = NULL;
    size_t cap = 0, n = 0;
    ssize_t len;
    int ln = 0, rc = 0;
    lm_style_example *v = NULL;
    while ((len = getline(&line, &cap, f)) > 0) {
        ln++;
        size_t k = 0;
        while (k < (size_t)len && isspace((unsigned char)line[k])) k++;
        if (k == (size_t)len) continue;
        json_error_t je;
        json_t *o = json_loadb(line, lm_line_len(line, (size_t)len), 0, &je);
        if (!o) { rc = lm_errf(err, "%s:%d:%d: %s", path, ln, je.column, je.text); break; }
        json_t *msgs = json_object_get(o, "messages");
        const char *q = NULL, *a = NULL;
        for (size_t i = 0; json_is_array(msgs) && i < json_array_size(msgs); i++) {
            json_t *m = json_array_get(msgs, i);
            const char *role = json_string_value(json_object_get(m, "role"));
            const char *content = json_string_value(json_object_get(m, "content"));
            if (!role || !content) continue;
            if (!strcmp(role, "user")) { q = content; a = NULL; }
            else if (!strcmp(role, "assistant") && q) a = content;
        }
        if (!q || !a) {
            json_decref(o);
            rc = lm_errf(err, "%s:%d: messages: a user message followed by an assistant message expected",
                         path, ln);
            break;
        }
        lm_style_example *nv = realloc(v, (n + 1) * sizeof *nv);
        if (!nv) { json_decref(o); rc = lm_errf(err, "out of memory"); break; }
        v = nv;
        v[n].question = strdup(q);
        v[n].answer = strdup(a);
        n++;
        json_decref(o);
        if (!v[n - 1].question || !v[n - 1].answer) { rc = lm_errf(err, "out of memory"); break; }
    }
    free(line);
    fclose(f);
    if (rc) { lm_style_examples_free(v, n); return -1; }
    *out = v;
    *n_out = n;
    return 0;
}
