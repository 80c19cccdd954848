/* libFuzzer target: `lemonpc serve`'s request bodies (oai_parse_chat and
 * oai_parse_completion) and the responses built from what they accept.
 * Invariants: a refusal has a 4xx/5xx status, a type and a message, and
 * its error body is JSON; an accepted chat request has at least one
 * message, the last from the user, roles from the three known, limits
 * respected; every response built from accepted text is valid JSON. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "server/oai_request.h"
#include "server/oai_response.h"

static void check_json(char *s, int sse) {
    if (!s) abort();
    size_t n = strlen(s);
    json_t *j = sse ? json_loadb(s + 6, n - 8, 0, NULL) : json_loads(s, 0, NULL);
    if (!j) abort();
    json_decref(j);
    free(s);
}

static void check(int rc, const oai_request *r, const oai_error *e, const oai_limits *lim) {
    if (rc) {
        if (e->status < 400 || e->status > 599 || !e->type || !e->message[0]) abort();
        check_json(oai_error_json(e), 0);
        return;
    }
    if (!r->model || !r->model[0]) abort();
    if (r->max_tokens < 0 || r->max_tokens > lim->max_tokens || r->n_stop > OAI_MAX_STOP) abort();
    for (size_t i = 0; i < r->n_stop; i++)
        if (!r->stop[i][0] || strlen(r->stop[i]) > lim->max_stop_bytes) abort();
    if (r->chat) {
        if (!r->n_messages || r->n_messages > lim->max_messages) abort();
        for (size_t i = 0; i < r->n_messages; i++) {
            const char *role = r->messages[i].role;
            if (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant")) abort();
            if (!r->messages[i].content) abort();
        }
        if (strcmp(r->messages[r->n_messages - 1].role, "user")) abort();
    } else if (!r->prompt || !r->prompt[0]) {
        abort();
    }
    const char *text = r->chat ? r->messages[r->n_messages - 1].content : r->prompt;
    oai_usage u = {1, 2, 0};
    check_json(oai_completion_json(r->chat, "id", 1, r->model, text, strlen(text), "stop", &u), 0);
    check_json(oai_chunk_sse(r->chat, "id", 1, r->model, true, text, strlen(text), NULL,
                             r->include_usage), 1);
    if (r->user) check_json(oai_models_json((const char *const *)&r->user, 1, 0), 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const oai_limits lim = {.max_messages = 16, .max_tokens = 256, .max_stop_bytes = 64};
    oai_request r;
    oai_error e;
    memset(&e, 0, sizeof e);
    int rc = oai_parse_chat((const char *)data, size, &lim, &r, &e);
    check(rc, &r, &e, &lim);
    if (!rc) oai_request_free(&r);
    memset(&e, 0, sizeof e);
    rc = oai_parse_completion((const char *)data, size, &lim, &r, &e);
    check(rc, &r, &e, &lim);
    if (!rc) oai_request_free(&r);
    return 0;
}
