/* OpenAI response bodies (oai_response.h), built with jansson. */
#include "server/oai_response.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/utf8.h"
#include "lemonpc.h"

const char *oai_finish_reason(int stop) {
    return stop == LEMONPC_STOP_MAX_TOKENS || stop == LEMONPC_STOP_CONTEXT_FULL ? "length" : "stop";
}

/* A JSON string of text[0, len): invalid UTF-8 bytes become U+FFFD. */
static json_t *jstr(const char *text, size_t len) {
    if (!text) return json_null();
    json_t *j = json_stringn(text, len);
    if (j) return j;
    size_t o;
    char *fixed = lm_utf8_clean(text, len, LM_UTF8_NO_NUL, &o);
    if (!fixed) return NULL;
    j = json_stringn(fixed, o);
    free(fixed);
    return j;
}

static char *dump(json_t *j) {
    if (!j) return NULL;
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return s;
}

static char *sse(json_t *j) {
    char *s = dump(j);
    if (!s) return NULL;
    size_t n = strlen(s);
    char *out = malloc(n + 9);
    if (out) {
        memcpy(out, "data: ", 6);
        memcpy(out + 6, s, n);
        memcpy(out + 6 + n, "\n\n", 3);
    }
    free(s);
    return out;
}

char *oai_error_json(const oai_error *e) {
    json_t *err = json_pack("{s:o, s:s, s:o, s:o}", "message", jstr(e->message, strlen(e->message)),
                            "type", e->type ? e->type : "server_error",
                            "param", e->param[0] ? jstr(e->param, strlen(e->param)) : json_null(),
                            "code", e->code ? json_string(e->code) : json_null());
    return dump(err ? json_pack("{s:o}", "error", err) : NULL);
}

char *oai_models_json(const char *const *ids, size_t n, long long created) {
    json_t *data = json_array();
    if (!data) return NULL;
    for (size_t i = 0; i < n; i++)
        json_array_append_new(data, json_pack("{s:o, s:s, s:I, s:s}", "id",
                                              jstr(ids[i], strlen(ids[i])), "object", "model",
                                              "created", (json_int_t)created, "owned_by", "lemonpc"));
    if (json_array_size(data) != n) { json_decref(data); return NULL; }
    return dump(json_pack("{s:s, s:o}", "object", "list", "data", data));
}

static json_t *usage_json(const oai_usage *u) {
    return json_pack("{s:i, s:i, s:i, s:{s:i}}", "prompt_tokens", u->prompt_tokens,
                     "completion_tokens", u->completion_tokens, "total_tokens",
                     u->prompt_tokens + u->completion_tokens, "prompt_tokens_details",
                     "cached_tokens", u->cached_tokens);
}

char *oai_completion_json(bool chat, const char *id, long long created, const char *model,
                          const char *text, size_t len, const char *finish, const oai_usage *u) {
    json_t *choice = chat
        ? json_pack("{s:i, s:{s:s, s:o}, s:n, s:s}", "index", 0, "message", "role", "assistant",
                    "content", jstr(text, len), "logprobs", "finish_reason", finish)
        : json_pack("{s:o, s:i, s:n, s:s}", "text", jstr(text, len), "index", 0, "logprobs",
                    "finish_reason", finish);
    if (!choice) return NULL;
    return dump(json_pack("{s:o, s:s, s:I, s:o, s:[o], s:o}", "id", jstr(id, strlen(id)), "object",
                          chat ? "chat.completion" : "text_completion", "created",
                          (json_int_t)created, "model", jstr(model, strlen(model)), "choices",
                          choice, "usage", usage_json(u)));
}

char *oai_chunk_sse(bool chat, const char *id, long long created, const char *model, bool first,
                    const char *text, size_t len, const char *finish, bool usage_null) {
    json_t *choice;
    if (chat) {
        json_t *delta = json_object();
        if (!delta) return NULL;
        if (first) json_object_set_new(delta, "role", json_string("assistant"));
        if (text) json_object_set_new(delta, "content", jstr(text, len));
        choice = json_pack("{s:i, s:o, s:n, s:o}", "index", 0, "delta", delta, "logprobs",
                           "finish_reason", finish ? json_string(finish) : json_null());
    } else {
        choice = json_pack("{s:o, s:i, s:n, s:o}", "text", jstr(text ? text : "", text ? len : 0),
                           "index", 0, "logprobs", "finish_reason",
                           finish ? json_string(finish) : json_null());
    }
    if (!choice) return NULL;
    json_t *j = json_pack("{s:o, s:s, s:I, s:o, s:[o]}", "id", jstr(id, strlen(id)), "object",
                          chat ? "chat.completion.chunk" : "text_completion", "created",
                          (json_int_t)created, "model", jstr(model, strlen(model)), "choices",
                          choice);
    if (j && usage_null) json_object_set_new(j, "usage", json_null());
    return sse(j);
}

char *oai_usage_chunk_sse(bool chat, const char *id, long long created, const char *model,
                          const oai_usage *u) {
    return sse(json_pack("{s:o, s:s, s:I, s:o, s:[], s:o}", "id", jstr(id, strlen(id)), "object",
                         chat ? "chat.completion.chunk" : "text_completion", "created",
                         (json_int_t)created, "model", jstr(model, strlen(model)), "choices",
                         "usage", usage_json(u)));
}
