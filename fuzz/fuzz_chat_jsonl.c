/* libFuzzer target: the chat JSONL reader (train/chat_jsonl.h, on
 * train/jsonl.h) that the trainer, filter, review and datagen share. The
 * first input byte picks the options (strict, ShareGPT, the roles a line
 * needs); the rest is the file. Checks: no crash, leak or sanitizer
 * report; lenient, every non-blank line comes back exactly once, good or
 * bad, in order, with its 1-based line number, and the count of bad lines
 * is what was returned; strict stops at the first bad one; every error
 * names "fuzz.jsonl:LINE:"; a good line's messages are non-empty, have a
 * known role, NUL-free content taken from the kept object, and hold the
 * needed roles. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "train/chat_jsonl.h"

/* The 1-based numbers of the lines that are not blank (spaces, tabs, CR),
 * counted apart from the reader as its oracle. */
static int non_blank(const char *s, size_t n, int *lines) {
    int k = 0, line = 0;
    for (size_t at = 0; at < n;) {
        const char *nl = memchr(s + at, '\n', n - at);
        size_t end = nl ? (size_t)(nl - s) : n;
        line++;
        for (size_t i = at; i < end; i++)
            if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r') {
                lines[k++] = line;
                break;
            }
        at = end + 1;
    }
    return k;
}

static void check_line(const lm_chat_line *l, unsigned need) {
    if (!json_is_object(l->root) || l->n == 0) abort();
    unsigned have = 0;
    for (size_t i = 0; i < l->n; i++) {
        const char *r = l->msgs[i].role, *c = l->msgs[i].content;
        if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant")) abort();
        if (!c || lm_chat_last(l, r) < (long)i) abort();
        have |= !strcmp(r, "user") ? LM_CHAT_NEED_USER : !strcmp(r, "assistant") ? LM_CHAT_NEED_ASSISTANT : 0;
        /* the view points into the kept object */
        json_t *list = json_object_get(l->root, "messages");
        const char *key = list ? "content" : "value";   /* ShareGPT otherwise */
        if (!list) list = json_object_get(l->root, "conversations");
        json_t *cv = json_object_get(json_array_get(list, i), key);
        if (json_string_value(cv) != c || strlen(c) != json_string_length(cv)) abort();
    }
    if (need & ~have) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    lm_chat_jsonl_opts o = {.strict = data[0] & 1, .sharegpt = (data[0] >> 1) & 1, .need = (data[0] >> 2) & 3};
    const char *text = (const char *)data + 1;
    size_t n = size - 1;
    int *lines = malloc((n + 1) * sizeof *lines);
    if (!lines) return 0;
    int want = non_blank(text, n, lines);
    lm_err err = {{0}};
    lm_chat_jsonl *r = lm_chat_jsonl_open_mem("fuzz.jsonl", text, n, &o, &err);
    if (!r) abort();
    int k = 0, rc;
    long bad = 0;
    lm_chat_line l;
    while ((rc = lm_chat_jsonl_next(r, &l, &err)) != LM_JSONL_END) {
        if (k >= want) abort();   /* more lines than the file has */
        if (rc == LM_JSONL_OK) {
            if (l.line != lines[k]) abort();
            check_line(&l, o.need);
        } else {
            char where[64];
            snprintf(where, sizeof where, "fuzz.jsonl:%d: ", lines[k]);
            if (strncmp(err.msg, where, strlen(where)) || l.root) abort();
            bad++;
            if (rc == -1) {
                if (!o.strict) abort();
                break;
            }
            if (o.strict || rc != LM_JSONL_BAD) abort();
        }
        k++;
    }
    if (rc == LM_JSONL_END && k != want) abort();   /* a line lost */
    if (lm_chat_jsonl_bad(r) != bad) abort();
    lm_chat_jsonl_close(r);
    free(lines);
    return 0;
}
