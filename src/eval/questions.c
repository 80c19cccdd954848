/* Question files and JSONL reading for `lemonpc eval` (eval.h); apart from
 * eval.c so that what parses a file does not pull in the model. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "eval/eval.h"
#include "check/metrics.h"
#include "train/jsonl.h"

/* Reads a JSONL file into an array of objects; blank lines skipped, any
 * other bad line is an error naming path:line. */
json_t *lm_eval_read_jsonl(const char *path, lm_err *err) {
    lm_jsonl *in = lm_jsonl_open(path, err);
    if (!in) return NULL;
    json_t *arr = json_array(), *o;
    int got;
    while ((got = lm_jsonl_next(in, &o, err)) == LM_JSONL_OK) {
        json_object_set_new(o, "_line", json_integer(lm_jsonl_line(in)));
        json_array_append(arr, o);
    }
    lm_jsonl_close(in);
    if (got == LM_JSONL_END) return arr;
    json_decref(arr);
    return NULL;
}

static const char *str_field(json_t *o, const char *k) {
    return json_string_value(json_object_get(o, k));
}

/* A question line's fields checked, or an error naming path:line. */
static int check_question(json_t *q, const char *path, lm_err *err) {
    long line = (long)json_integer_value(json_object_get(q, "_line"));
    if (!str_field(q, "id") && !json_is_integer(json_object_get(q, "id")))
        return lm_errf(err, "%s:%ld: \"id\" missing (a string or an integer)", path, line);
    if (!str_field(q, "question") || !str_field(q, "question")[0])
        return lm_errf(err, "%s:%ld: \"question\" missing or not a non-empty string", path, line);
    json_t *h = json_object_get(q, "history");
    if (h && !json_is_array(h)) return lm_errf(err, "%s:%ld: \"history\" must be an array", path, line);
    size_t i;
    json_t *m;
    json_array_foreach(h, i, m) {
        const char *r = str_field(m, "role");
        if (!r || (strcmp(r, "user") && strcmp(r, "assistant")) || !str_field(m, "content"))
            return lm_errf(err, "%s:%ld: history[%zu]: wants {\"role\": \"user\"|\"assistant\", "
                                "\"content\": text}", path, line, i);
    }
    const char *c = str_field(q, "category");
    if (c && lm_eval_category(c) == LM_EVAL_CAT_IN_WORLD && strcmp(c, "in-world"))
        return lm_errf(err, "%s:%ld: category '%s': expected in-world, off-topic, protective or "
                            "adversarial", path, line, c);
    return 0;
}

json_t *lm_eval_load_questions(const char *path, lm_err *err) {
    json_t *qs = lm_eval_read_jsonl(path, err);
    if (!qs) return NULL;
    if (json_array_size(qs) == 0) {
        json_decref(qs);
        lm_errf(err, "%s: no questions", path);
        return NULL;
    }
    size_t i;
    json_t *q;
    json_array_foreach(qs, i, q) if (check_question(q, path, err)) {
        json_decref(qs);
        return NULL;
    }
    return qs;
}

