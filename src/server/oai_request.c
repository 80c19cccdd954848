/* OpenAI request bodies (oai_request.h), parsed with jansson. */
#include "server/oai_request.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/strbuf.h"

int oai_fail(oai_error *e, int status, const char *type, const char *param, const char *code,
             const char *fmt, ...) {
    e->status = status;
    e->type = type;
    e->code = code;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}

#define BAD(e, param, ...) oai_fail(e, 400, "invalid_request_error", param, NULL, __VA_ARGS__)

void oai_request_free(oai_request *r) {
    if (!r) return;
    free(r->model);
    for (size_t i = 0; i < r->n_messages; i++) free(r->messages[i].content);
    free(r->messages);
    free(r->prompt);
    for (size_t i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->user);
    memset(r, 0, sizeof *r);
}

static const char *type_name(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE: case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

static json_t *load(const char *body, size_t len, oai_error *e) {
    json_error_t je;
    json_t *root = json_loadb(body, len, 0, &je);
    if (!root) {
        oai_fail(e, 400, "invalid_request_error", NULL, NULL,
                 "We could not parse the JSON body of your request: %s (line %d, column %d)",
                 je.text, je.line, je.column);
        return NULL;
    }
    if (!json_is_object(root)) {
        BAD(e, NULL, "the request body must be a JSON object, got %s", type_name(root));
        json_decref(root);
        return NULL;
    }
    return root;
}

static int dup_string(const json_t *v, const char *param, char **out, oai_error *e) {
    if (!json_is_string(v)) return BAD(e, param, "%s must be a string, got %s", param, type_name(v));
    if (!(*out = strndup(json_string_value(v), json_string_length(v))))
        return oai_fail(e, 500, "server_error", NULL, NULL, "out of memory");
    return 0;
}

/* Fields both kinds of request share. */
static int parse_common(json_t *root, const oai_limits *lim, oai_request *r, oai_error *e) {
    json_t *v = json_object_get(root, "model");
    if (!v) return BAD(e, "model", "you must provide a model parameter");
    if (dup_string(v, "model", &r->model, e)) return -1;
    if (!r->model[0]) return BAD(e, "model", "model must not be empty");

    if ((v = json_object_get(root, "stream")) && !json_is_null(v)) {
        if (!json_is_boolean(v)) return BAD(e, "stream", "stream must be a boolean, got %s", type_name(v));
        r->stream = json_is_true(v);
    }
    if ((v = json_object_get(root, "stream_options")) && !json_is_null(v)) {
        if (!json_is_object(v))
            return BAD(e, "stream_options", "stream_options must be an object, got %s", type_name(v));
        if (!r->stream)
            return BAD(e, "stream_options", "stream_options is only allowed when stream is true");
        json_t *u = json_object_get(v, "include_usage");
        if (u && !json_is_null(u)) {
            if (!json_is_boolean(u))
                return BAD(e, "stream_options.include_usage", "stream_options.include_usage must "
                           "be a boolean, got %s", type_name(u));
            r->include_usage = json_is_true(u);
        }
    }
    static const char *const tok_fields[] = {"max_tokens", "max_completion_tokens"};
    for (size_t i = 0; i < 2; i++) {
        if (!(v = json_object_get(root, tok_fields[i])) || json_is_null(v)) continue;
        if (!json_is_integer(v))
            return BAD(e, tok_fields[i], "%s must be an integer, got %s", tok_fields[i], type_name(v));
        json_int_t n = json_integer_value(v);
        if (n < 1 || n > lim->max_tokens)
            return BAD(e, tok_fields[i], "%s must be in [1, %d], got %lld", tok_fields[i],
                       lim->max_tokens, (long long)n);
        r->max_tokens = (int)n;
    }
    if ((v = json_object_get(root, "temperature")) && !json_is_null(v)) {
        if (!json_is_number(v))
            return BAD(e, "temperature", "temperature must be a number, got %s", type_name(v));
        double t = json_number_value(v);
        if (!(t >= 0 && t <= 2)) return BAD(e, "temperature", "temperature must be in [0, 2], got %g", t);
        r->has_temperature = true;
        r->temperature = t;
    }
    if ((v = json_object_get(root, "top_p")) && !json_is_null(v)) {
        if (!json_is_number(v)) return BAD(e, "top_p", "top_p must be a number, got %s", type_name(v));
        double p = json_number_value(v);
        if (!(p > 0 && p <= 1)) return BAD(e, "top_p", "top_p must be in (0, 1], got %g", p);
        r->has_top_p = true;
        r->top_p = p;
    }
    if ((v = json_object_get(root, "seed")) && !json_is_null(v)) {
        if (!json_is_integer(v)) return BAD(e, "seed", "seed must be an integer, got %s", type_name(v));
        r->has_seed = true;
        r->seed = (uint64_t)json_integer_value(v);
    }
    if ((v = json_object_get(root, "stop")) && !json_is_null(v)) {
        json_t *one = json_is_string(v) ? v : NULL;
        size_t n = one ? 1 : json_is_array(v) ? json_array_size(v) : 0;
        if (!one && !json_is_array(v))
            return BAD(e, "stop", "stop must be a string or an array of strings, got %s", type_name(v));
        if (n > OAI_MAX_STOP)
            return BAD(e, "stop", "stop holds at most %d strings, got %zu", OAI_MAX_STOP, n);
        for (size_t i = 0; i < n; i++) {
            json_t *s = one ? one : json_array_get(v, i);
            if (!json_is_string(s))
                return BAD(e, "stop", "stop[%zu] must be a string, got %s", i, type_name(s));
            if (json_string_length(s) > lim->max_stop_bytes)
                return BAD(e, "stop", "stop[%zu] is longer than %zu bytes", i, lim->max_stop_bytes);
            if (json_string_length(s) == 0) continue;   /* an empty stop string stops nothing */
            if (dup_string(s, "stop", &r->stop[r->n_stop], e)) return -1;
            r->n_stop++;
        }
    }
    if ((v = json_object_get(root, "user")) && !json_is_null(v)) {
        if (dup_string(v, "user", &r->user, e)) return -1;
        if (strlen(r->user) != json_string_length(v) || strlen(r->user) > 256)
            return BAD(e, "user", "user must be at most 256 bytes, without NUL");
        if (!r->user[0]) { free(r->user); r->user = NULL; }
    }
    if ((v = json_object_get(root, "n")) && !json_is_null(v)) {
        if (!json_is_integer(v)) return BAD(e, "n", "n must be an integer, got %s", type_name(v));
        if (json_integer_value(v) != 1)
            return BAD(e, "n", "only n = 1 is supported, got %lld", (long long)json_integer_value(v));
    }
    if ((v = json_object_get(root, "logprobs")) && json_is_true(v))
        return BAD(e, "logprobs", "logprobs are not supported");
    return 0;
}

/* A message's content: a string, null (an assistant's tool call: ""), or
 * an array of {"type": "text", "text": ...} parts joined by newlines. */
static int message_content(const json_t *c, size_t i, char **out, oai_error *e) {
    char param[48];
    snprintf(param, sizeof param, "messages[%zu].content", i);
    if (!c || json_is_null(c)) {
        *out = strdup("");
    } else if (json_is_string(c)) {
        *out = strndup(json_string_value(c), json_string_length(c));
    } else if (json_is_array(c)) {
        lm_sb sb = {0};
        for (size_t k = 0; k < json_array_size(c); k++) {
            json_t *part = json_array_get(c, k), *type = json_object_get(part, "type");
            json_t *text = json_object_get(part, "text");
            if (!json_is_object(part) || !json_is_string(type))
                return lm_sb_free(&sb), BAD(e, param, "%s[%zu] must be an object with a type", param, k);
            if (strcmp(json_string_value(type), "text"))
                return lm_sb_free(&sb), BAD(e, param, "%s[%zu]: only text parts are supported, got "
                                           "\"%.32s\"", param, k, json_string_value(type));
            if (!json_is_string(text))
                return lm_sb_free(&sb), BAD(e, param, "%s[%zu].text must be a string", param, k);
            if (k) lm_sb_add(&sb, "\n", 1);
            lm_sb_add(&sb, json_string_value(text), json_string_length(text));
        }
        *out = lm_sb_take(&sb);
    } else {
        return BAD(e, param, "%s must be a string or an array of text parts, got %s", param,
                   type_name(c));
    }
    if (!*out) return oai_fail(e, 500, "server_error", NULL, NULL, "out of memory");
    return 0;
}

int oai_parse_chat(const char *body, size_t len, const oai_limits *lim, oai_request *r,
                   oai_error *e) {
    memset(r, 0, sizeof *r);
    r->chat = true;
    json_t *root = load(body, len, e);
    if (!root) return -1;
    if (parse_common(root, lim, r, e)) goto fail;
    json_t *ms = json_object_get(root, "messages");
    if (!ms) { BAD(e, "messages", "you must provide a messages parameter"); goto fail; }
    if (!json_is_array(ms)) {
        BAD(e, "messages", "messages must be an array, got %s", type_name(ms));
        goto fail;
    }
    size_t n = json_array_size(ms);
    if (n == 0) { BAD(e, "messages", "messages must not be empty"); goto fail; }
    if (n > lim->max_messages) {
        BAD(e, "messages", "messages holds at most %zu entries, got %zu", lim->max_messages, n);
        goto fail;
    }
    json_t *tools = json_object_get(root, "tools");
    if (json_is_array(tools) && json_array_size(tools) > 0) {
        BAD(e, "tools", "tools are not supported");
        goto fail;
    }
    if (!(r->messages = calloc(n, sizeof *r->messages))) {
        oai_fail(e, 500, "server_error", NULL, NULL, "out of memory");
        goto fail;
    }
    size_t n_chat = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(ms, i);
        char param[48];
        snprintf(param, sizeof param, "messages[%zu]", i);
        if (!json_is_object(m)) {
            BAD(e, param, "%s must be an object, got %s", param, type_name(m));
            goto fail;
        }
        json_t *role = json_object_get(m, "role");
        snprintf(param, sizeof param, "messages[%zu].role", i);
        if (!json_is_string(role)) {
            BAD(e, param, "%s must be a string, got %s", param, role ? type_name(role) : "nothing");
            goto fail;
        }
        const char *rs = json_string_value(role);
        const char *norm = !strcmp(rs, "system") || !strcmp(rs, "developer") ? "system"
                         : !strcmp(rs, "user") ? "user" : !strcmp(rs, "assistant") ? "assistant"
                         : NULL;
        if (!norm) {
            BAD(e, param, "%s must be system, developer, user or assistant, got \"%.32s\"%s",
                param, rs, !strcmp(rs, "tool") || !strcmp(rs, "function")
                               ? " (tool calls are not supported)" : "");
            goto fail;
        }
        json_t *content = json_object_get(m, "content");
        if (!content && strcmp(norm, "assistant")) {
            snprintf(param, sizeof param, "messages[%zu].content", i);
            BAD(e, param, "%s is missing", param);
            goto fail;
        }
        r->messages[i].role = norm;
        if (message_content(content, i, &r->messages[i].content, e)) goto fail;
        r->n_messages = i + 1;
        if (strcmp(norm, "system")) n_chat++;
    }
    if (n_chat == 0) {
        BAD(e, "messages", "messages holds only system messages: the NPC answers a user message");
        goto fail;
    }
    if (strcmp(r->messages[n - 1].role, "user")) {
        char param[48];
        snprintf(param, sizeof param, "messages[%zu].role", n - 1);
        BAD(e, param, "the last message must be the user's (the line the NPC answers), got %s",
            r->messages[n - 1].role);
        goto fail;
    }
    json_decref(root);
    return 0;
fail:
    json_decref(root);
    oai_request_free(r);
    return -1;
}

int oai_parse_completion(const char *body, size_t len, const oai_limits *lim, oai_request *r,
                         oai_error *e) {
    memset(r, 0, sizeof *r);
    json_t *root = load(body, len, e);
    if (!root) return -1;
    if (parse_common(root, lim, r, e)) goto fail;
    json_t *p = json_object_get(root, "prompt");
    if (!p) { BAD(e, "prompt", "you must provide a prompt parameter"); goto fail; }
    if (json_is_array(p)) {
        if (json_array_size(p) != 1 || !json_is_string(json_array_get(p, 0))) {
            BAD(e, "prompt", "prompt must be a string or an array of one string");
            goto fail;
        }
        p = json_array_get(p, 0);
    }
    if (dup_string(p, "prompt", &r->prompt, e)) goto fail;
    if (!r->prompt[0]) { BAD(e, "prompt", "prompt must not be empty"); goto fail; }
    json_t *v;
    if ((v = json_object_get(root, "echo")) && json_is_true(v)) {
        BAD(e, "echo", "echo is not supported");
        goto fail;
    }
    if ((v = json_object_get(root, "suffix")) && !json_is_null(v)) {
        BAD(e, "suffix", "suffix is not supported");
        goto fail;
    }
    if ((v = json_object_get(root, "best_of")) && !json_is_null(v) &&
        !(json_is_integer(v) && json_integer_value(v) == 1)) {
        BAD(e, "best_of", "only best_of = 1 is supported");
        goto fail;
    }
    json_decref(root);
    return 0;
fail:
    json_decref(root);
    oai_request_free(r);
    return -1;
}
