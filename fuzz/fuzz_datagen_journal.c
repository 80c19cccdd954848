/* libFuzzer target: the datagen journals, what a rerun reads back to
 * resume (datagen/runner.c, datagen/pipeline.c): the runner's result file
 * scan (lm_runner_scan_mem), the request list (lm_requests_parse_jsonl,
 * each request then rendered as the teacher's HTTP body) and the round's
 * reading of replies by "q<index>" ids (lm_datagen_results_parse). The
 * first input byte picks which; the rest is the file. Checks: no crash or
 * sanitizer report; every refusal names the file; the scan's ids are
 * strings and a torn tail is the bytes after the last newline; requests
 * have unique non-empty ids, messages and a JSON-object metadata, and
 * their HTTP body is JSON that carries every message unchanged; replies
 * land only at indexes below n. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "datagen/pipeline.h"
#include "datagen/runner.h"
#include "datagen/teacher.h"

#define NAME "fuzz/answers.jsonl"

static void fuzz_scan(const char *text, size_t len) {
    char **ids = NULL;
    size_t n = 0, torn = 0;
    lm_err err = {{0}};
    if (lm_runner_scan_mem(NAME, text, len, &ids, &n, &torn, &err)) {
        if (ids || n || !strstr(err.msg, NAME)) abort();
        return;
    }
    const char *last_nl = len ? memrchr(text, '\n', len) : NULL;
    size_t want_torn = last_nl ? len - (size_t)(last_nl - text) - 1 : len;
    if (torn != want_torn) abort();
    for (size_t i = 0; i < n; i++) {
        if (!ids[i]) abort();
        free(ids[i]);
    }
    free(ids);
}

static void check_body(const lm_request *r) {
    lm_err err = {{0}};
    char *body = lm_teacher_http_body("m", r->msgs, r->n_msgs, &r->params, &err);
    if (!body) {
        if (!err.msg[0]) abort();
        return;
    }
    json_error_t je;
    json_t *o = json_loads(body, 0, &je);
    json_t *ms = json_object_get(o, "messages");
    if (!o || json_array_size(ms) != r->n_msgs) abort();
    for (size_t i = 0; i < r->n_msgs; i++) {
        json_t *m = json_array_get(ms, i);
        const char *role = json_string_value(json_object_get(m, "role"));
        const char *content = json_string_value(json_object_get(m, "content"));
        if (!role || !content || strcmp(role, r->msgs[i].role) || strcmp(content, r->msgs[i].content))
            abort();
    }
    json_decref(o);
    free(body);
}

static void fuzz_requests(const char *text, size_t len) {
    lm_request_list l = {0};
    lm_err err = {{0}};
    if (lm_requests_parse_jsonl(&l, NAME, text, len, &err)) {
        if (!strstr(err.msg, NAME)) abort();
        lm_request_list_free(&l);
        return;
    }
    for (size_t i = 0; i < l.n; i++) {
        const lm_request *r = &l.items[i];
        if (!r->id || !r->id[0] || !r->n_msgs || !r->metadata) abort();
        for (size_t j = 0; j < i; j++)
            if (!strcmp(l.items[j].id, r->id)) abort();
        json_t *md = json_loads(r->metadata, 0, NULL);
        if (!json_is_object(md)) abort();
        json_decref(md);
        check_body(r);
    }
    lm_request_list_free(&l);
}

static void fuzz_results(const char *text, size_t len) {
    enum { N = 8 };
    char *replies[N + 1] = {0};   /* [N]: a canary the reader must not touch */
    lm_err err = {{0}};
    int rc = lm_datagen_results_parse(NAME, text, len, "q", replies, N, &err);
    if (rc && !strstr(err.msg, NAME) && !strstr(err.msg, "out of memory")) abort();
    if (replies[N]) abort();
    for (int i = 0; i < N; i++) free(replies[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    /* an exact-size copy: reading past the file is an ASan report */
    char *text = malloc(size - 1 ? size - 1 : 1);
    if (!text) return 0;
    memcpy(text, data + 1, size - 1);
    switch (data[0] % 3) {
    case 0: fuzz_scan(text, size - 1); break;
    case 1: fuzz_requests(text, size - 1); break;
    default: fuzz_results(text, size - 1); break;
    }
    free(text);
    return 0;
}
