/* libFuzzer: prompt templates (parse + render against a fixed set of
 * strings and lists), the example-questions format, and the question and
 * answer cleaners. Besides crashes, leaks and sanitizer reports it checks:
 * rendering is deterministic, output stays under LM_TPL_MAX_OUTPUT, no
 * "{{" survives a successful render (variables hold no braces), and the
 * cleaners return trimmed, non-empty text or NULL. */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "datagen/answer.h"
#include "datagen/prompt.h"
#include "datagen/question.h"

static void check_clean(const char *s) {
    if (!s) return;
    size_t n = strlen(s);
    if (!n || isspace((unsigned char)s[0]) || isspace((unsigned char)s[n - 1])) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lm_err err;
    lm_tpl_vars v = {0};
    const char *list[] = {"alpha", "", "gamma delta"};
    lm_tpl_set(&v, "name", "Orlando", &err);
    lm_tpl_set(&v, "empty", "", &err);
    lm_tpl_set(&v, "this_is_text", "x", &err);
    lm_tpl_set_list(&v, "items", list, 3, &err);
    lm_tpl_set_list(&v, "none", NULL, 0, &err);
    lm_tpl *t = lm_tpl_parse("fuzz.txt", (const char *)data, size, &err);
    if (t) {
        char *a = lm_tpl_render(t, &v, &err);
        char *b = lm_tpl_render(t, &v, &err);
        if (!!a != !!b) abort();
        if (a && (strcmp(a, b) || strlen(a) >= LM_TPL_MAX_OUTPUT || strstr(a, "{{"))) abort();
        free(a);
        free(b);
        lm_tpl_free(t);
    }
    lm_tpl_vars_free(&v);

    lm_prompt_set s;
    memset(&s, 0, sizeof s);
    lm_prompt_parse_examples(&s, "ex.txt", (const char *)data, size, &err);
    for (int k = 0; k < LM_Q_KINDS; k++) {
        for (size_t i = 0; i < s.n_examples[k]; i++) free(s.examples[k][i]);
        free(s.examples[k]);
    }

    char *z = malloc(size + 1);
    if (!z) return 0;
    memcpy(z, data, size);
    z[size] = 0;
    char why[128];
    char *q = lm_question_clean(z, "Elena Solwind", why, sizeof why);
    check_clean(q);
    free(q);
    char *an = lm_answer_clean(z, "Orlando Marlo", "Elena", why, sizeof why);
    check_clean(an);
    free(an);
    lm_qmix m;
    lm_qmix_parse(z, &m, &err);
    free(z);
    return 0;
}
