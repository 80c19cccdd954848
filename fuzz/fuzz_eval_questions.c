/* libFuzzer target: eval question files (lm_eval_load_questions) and the
 * metrics over arbitrary answer text. The input is written to a temp file
 * and loaded; every accepted question has a non-empty question string, a
 * string or integer id and a well-formed history. The input's text is also
 * checked as an answer to itself under each category: no crash, and the
 * flags are consistent (in_character is the absence of the failures). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "eval/eval.h"
#include "check/metrics.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[] = "/tmp/fuzz_evalq_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return 0;
    if (write(fd, data, size) != (ssize_t)size) { close(fd); unlink(path); return 0; }
    close(fd);
    lm_err err = {{0}};
    json_t *qs = lm_eval_load_questions(path, &err);
    unlink(path);
    if (qs) {
        size_t i;
        json_t *q;
        json_array_foreach(qs, i, q) {
            const char *text = json_string_value(json_object_get(q, "question"));
            if (!text || !text[0]) abort();
            json_t *id = json_object_get(q, "id");
            if (!json_is_string(id) && !json_is_integer(id)) abort();
        }
        json_decref(qs);
    } else if (!err.msg[0]) abort();   /* a refusal always says why */

    char *s = malloc(size + 1);
    if (!s) return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    lm_eval_checker *k = lm_eval_checker_new(NULL, &err);
    if (!k) abort();
    static const char *const cats[] = {"in-world", "off-topic", "protective", "adversarial", NULL};
    for (int c = 0; c < 5; c++) {
        lm_eval_flags f;
        lm_eval_check(k, s, s, cats[c], "Mara", size & 1, &f);
        bool fail = f.assistant || f.refusal || f.stage || f.self_intro || f.speaks_for_user ||
                    f.breaks || f.modern;
        if (f.in_character == fail || f.words < 0) abort();
    }
    lm_eval_checker_free(k);
    const char *texts[1] = {s};
    double d = lm_eval_distinct(texts, 1, 2);
    if (d < 0 || d > 1) abort();
    free(s);
    return 0;
}
