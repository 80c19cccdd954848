/* `lemonpc serve`'s request parsing (src/server/oai_request.c) and
 * response building (src/server/oai_response.c), without model or network:
 * valid requests give the fields, each bad one a 400 naming the field in
 * OpenAI's error shape; responses parse back as OpenAI's objects. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "lemonpc.h"
#include "server/oai_request.h"
#include "server/oai_response.h"

static const oai_limits LIM = {.max_messages = 8, .max_tokens = 512, .max_stop_bytes = 32};

static int chat(const char *body, oai_request *r, oai_error *e) {
    memset(e, 0, sizeof *e);
    return oai_parse_chat(body, strlen(body), &LIM, r, e);
}

static void test_chat_fields(void **state) {
    (void)state;
    oai_request r;
    oai_error e;
    const char *body =
        "{\"model\": \"orlando\", \"messages\": ["
        "{\"role\": \"system\", \"content\": \"be nice\"},"
        "{\"role\": \"user\", \"content\": \"Hi\"},"
        "{\"role\": \"assistant\", \"content\": \"Hello, traveller.\"},"
        "{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"Who\"},"
        "                               {\"type\": \"text\", \"text\": \"are you?\"}]}],"
        "\"stream\": true, \"stream_options\": {\"include_usage\": true}, \"max_tokens\": 32,"
        "\"temperature\": 0, \"top_p\": 0.5, \"seed\": -1, \"stop\": [\"\\n\", \"\", \"Mira:\"],"
        "\"user\": \"Mira\", \"n\": 1, \"frequency_penalty\": 0, \"logit_bias\": {}}";
    assert_int_equal(chat(body, &r, &e), 0);
    assert_true(r.chat);
    assert_string_equal(r.model, "orlando");
    assert_int_equal(r.n_messages, 4);
    assert_string_equal(r.messages[0].role, "system");
    assert_string_equal(r.messages[2].role, "assistant");
    assert_string_equal(r.messages[2].content, "Hello, traveller.");
    assert_string_equal(r.messages[3].content, "Who\nare you?");
    assert_true(r.stream && r.include_usage);
    assert_int_equal(r.max_tokens, 32);
    assert_true(r.has_temperature && r.temperature == 0);
    assert_true(r.has_top_p && r.top_p == 0.5);
    assert_true(r.has_seed && r.seed == UINT64_MAX);
    assert_int_equal(r.n_stop, 2);   /* the empty one stops nothing */
    assert_string_equal(r.stop[1], "Mira:");
    assert_string_equal(r.user, "Mira");
    oai_request_free(&r);

    /* the least: model and one user message; developer is a system role */
    assert_int_equal(chat("{\"model\":\"x\",\"messages\":[{\"role\":\"developer\",\"content\":\"d\"},"
                          "{\"role\":\"user\",\"content\":\"\"}],\"stop\":\"END\","
                          "\"max_completion_tokens\":7,\"temperature\":null}", &r, &e), 0);
    assert_string_equal(r.messages[0].role, "system");
    assert_false(r.stream || r.has_temperature || r.has_seed || r.user);
    assert_int_equal(r.n_stop, 1);
    assert_int_equal(r.max_tokens, 7);
    oai_request_free(&r);
}

/* Each bad body: status, param, and a word of the message. */
static void test_chat_errors(void **state) {
    (void)state;
    static const struct { const char *body, *param, *word; int status; } cases[] = {
        {"", "", "parse", 400},
        {"{\"model\": \"x\", \"messages\": [", "", "parse", 400},
        {"[1, 2]", "", "object", 400},
        {"{\"messages\": [{\"role\":\"user\",\"content\":\"hi\"}]}", "model", "model", 400},
        {"{\"model\": 3, \"messages\": [{\"role\":\"user\",\"content\":\"hi\"}]}", "model", "string", 400},
        {"{\"model\": \"x\"}", "messages", "messages", 400},
        {"{\"model\": \"x\", \"messages\": []}", "messages", "empty", 400},
        {"{\"model\": \"x\", \"messages\": {}}", "messages", "array", 400},
        {"{\"model\": \"x\", \"messages\": [1]}", "messages[0]", "object", 400},
        {"{\"model\": \"x\", \"messages\": [{\"content\":\"hi\"}]}", "messages[0].role", "string", 400},
        {"{\"model\": \"x\", \"messages\": [{\"role\":\"tool\",\"content\":\"hi\"}]}",
         "messages[0].role", "tool", 400},
        {"{\"model\": \"x\", \"messages\": [{\"role\":\"user\"}]}", "messages[0].content", "missing", 400},
        {"{\"model\": \"x\", \"messages\": [{\"role\":\"user\",\"content\":5}]}",
         "messages[0].content", "string", 400},
        {"{\"model\": \"x\", \"messages\": [{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}",
         "messages[0].content", "text parts", 400},
        {"{\"model\": \"x\", \"messages\": [{\"role\":\"system\",\"content\":\"s\"}]}", "messages",
         "only system", 400},
        {"{\"model\": \"x\", \"messages\": [{\"role\":\"user\",\"content\":\"a\"},"
         "{\"role\":\"assistant\",\"content\":\"b\"}]}", "messages[1].role", "last", 400},
        {"{\"model\": \"x\", \"messages\": [{\"role\":\"user\",\"content\":\"a\"}], \"stream\": 1}",
         "stream", "boolean", 400},
        {"{\"model\": \"x\", \"messages\": [{\"role\":\"user\",\"content\":\"a\"}], \"max_tokens\": 0}",
         "max_tokens", "[1, 512]", 400},
        {"{\"model\": \"x\", \"messages\": [{\"role\":\"user\",\"content\":\"a\"}], \"max_tokens\": 513}",
         "max_tokens", "[1, 512]", 400},
        {"{\"model\": \"x\", \"messages\": [{\"role\":\"user\",\"content\":\"a\"}], \"max_tokens\": 1.5}",
         "max_tokens", "integer", 400},
        {"{\"model\": \"x\", \"messages\": [{\"role\":\"user\",\"content\":\"a\"}], \"temperature\": \"hot\"}",
         "temperature", "number", 400},
        {"{\"model\": \"x\", \"messages\": [{\"role\":\"user\",\"content\":\"a\"}], \"temperature\": 3}",
         "temperature", "[0, 2]", 400},
        {"{\"model\": \"x\", \"messages\": [{\"role\":\"user\",\"content\":\"a\"}], \"top_p\": 0}",
         "top_p", "(0, 1]", 400},
        {"{\"model\": \"x\", \"messages\": [{\"role\":\"user\",\"content\":\"a\"}], \"seed\": 1.5}",
         "seed", "integer", 400},
        {"{\"model\": \"x\", \"messages\": [{\"role\":\"user\",\"content\":\"a\"}], "
         "\"stop\": [\"a\",\"b\",\"c\",\"d\",\"e\"]}", "stop", "at most 4", 400},
        {"{\"model\": \"x\", \"messages\": [{\"role\":\"user\",\"content\":\"a\"}], \"stop\": [1]}",
         "stop", "stop[0]", 400},
        {"{\"model\": \"x\", \"messages\": [{\"role\":\"user\",\"content\":\"a\"}], "
         "\"stop\": \"0123456789012345678901234567890123456789\"}", "stop", "longer", 400},
        {"{\"model\": \"x\", \"messages\": [{\"role\":\"user\",\"content\":\"a\"}], \"user\": 7}",
         "user", "string", 400},
        {"{\"model\": \"x\", \"messages\": [{\"role\":\"user\",\"content\":\"a\"}], \"n\": 2}",
         "n", "n = 1", 400},
        {"{\"model\": \"x\", \"messages\": [{\"role\":\"user\",\"content\":\"a\"}], \"logprobs\": true}",
         "logprobs", "not supported", 400},
        {"{\"model\": \"x\", \"messages\": [{\"role\":\"user\",\"content\":\"a\"}], "
         "\"stream_options\": {\"include_usage\": true}}", "stream_options", "stream is true", 400},
        {"{\"model\": \"x\", \"messages\": [{\"role\":\"user\",\"content\":\"a\\u0000b\"}]}", "",
         "parse", 400},
        {"{\"model\": \"x\", \"messages\": [{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"user\","
         "\"content\":\"a\"},{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"user\",\"content\":\"a\"},"
         "{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"user\","
         "\"content\":\"a\"},{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"user\",\"content\":\"a\"}]}",
         "messages", "at most 8", 400},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        oai_request r;
        oai_error e;
        int rc = chat(cases[i].body, &r, &e);
        if (rc != -1 || e.status != cases[i].status || strcmp(e.param, cases[i].param) ||
            !strstr(e.message, cases[i].word) || strcmp(e.type, "invalid_request_error"))
            fail_msg("case %zu (%s): rc %d status %d param '%s' message '%s'", i, cases[i].body,
                     rc, e.status, e.param, e.message);
        /* the error body is OpenAI's shape */
        char *js = oai_error_json(&e);
        json_t *j = json_loads(js, 0, NULL);
        assert_non_null(j);
        json_t *err = json_object_get(j, "error");
        assert_string_equal(json_string_value(json_object_get(err, "message")), e.message);
        assert_string_equal(json_string_value(json_object_get(err, "type")), "invalid_request_error");
        if (e.param[0]) assert_string_equal(json_string_value(json_object_get(err, "param")), e.param);
        else assert_true(json_is_null(json_object_get(err, "param")));
        assert_true(json_is_null(json_object_get(err, "code")));
        json_decref(j);
        free(js);
    }
}

static void test_completion_request(void **state) {
    (void)state;
    oai_request r;
    oai_error e;
    const char *ok = "{\"model\": \"orlando\", \"prompt\": [\"Once upon\"], \"max_tokens\": 4}";
    assert_int_equal(oai_parse_completion(ok, strlen(ok), &LIM, &r, &e), 0);
    assert_false(r.chat);
    assert_string_equal(r.prompt, "Once upon");
    assert_int_equal(r.n_messages, 0);
    oai_request_free(&r);
    static const char *const bad[][2] = {
        {"{\"model\": \"x\"}", "prompt"},
        {"{\"model\": \"x\", \"prompt\": [\"a\", \"b\"]}", "prompt"},
        {"{\"model\": \"x\", \"prompt\": \"\"}", "prompt"},
        {"{\"model\": \"x\", \"prompt\": 5}", "prompt"},
        {"{\"model\": \"x\", \"prompt\": \"a\", \"echo\": true}", "echo"},
        {"{\"model\": \"x\", \"prompt\": \"a\", \"best_of\": 3}", "best_of"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&e, 0, sizeof e);
        assert_int_equal(oai_parse_completion(bad[i][0], strlen(bad[i][0]), &LIM, &r, &e), -1);
        assert_int_equal(e.status, 400);
        assert_string_equal(e.param, bad[i][1]);
    }
    /* the body need not end in NUL: only len bytes are read */
    const char buf[] = "{\"model\":\"x\",\"prompt\":\"a\"}GARBAGE";
    assert_int_equal(oai_parse_completion(buf, strlen(buf) - 7, &LIM, &r, &e), 0);
    oai_request_free(&r);
}

static json_t *parse(char *s) {
    assert_non_null(s);
    json_t *j = json_loads(s, 0, NULL);
    if (!j) fail_msg("not JSON: %s", s);
    free(s);
    return j;
}

static json_t *parse_sse(char *s) {
    assert_non_null(s);
    size_t n = strlen(s);
    assert_true(n > 8 && !strncmp(s, "data: ", 6) && !strcmp(s + n - 2, "\n\n"));
    assert_null(memchr(s, '\n', n - 2));   /* one line: a newline would end the event */
    json_t *j = json_loadb(s + 6, n - 8, 0, NULL);
    if (!j) fail_msg("not JSON: %s", s);
    free(s);
    return j;
}

static void test_responses(void **state) {
    (void)state;
    oai_usage u = {.prompt_tokens = 40, .completion_tokens = 5, .cached_tokens = 30};
    json_t *j = parse(oai_completion_json(true, "chatcmpl-1", 1700000000, "orlando",
                                          "Hello \"there\"\n", 14, "stop", &u));
    assert_string_equal(json_string_value(json_object_get(j, "object")), "chat.completion");
    assert_int_equal(json_integer_value(json_object_get(j, "created")), 1700000000);
    json_t *c = json_array_get(json_object_get(j, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(c, "finish_reason")), "stop");
    json_t *msg = json_object_get(c, "message");
    assert_string_equal(json_string_value(json_object_get(msg, "role")), "assistant");
    assert_string_equal(json_string_value(json_object_get(msg, "content")), "Hello \"there\"\n");
    json_t *us = json_object_get(j, "usage");
    assert_int_equal(json_integer_value(json_object_get(us, "total_tokens")), 45);
    assert_int_equal(json_integer_value(json_object_get(
                         json_object_get(us, "prompt_tokens_details"), "cached_tokens")), 30);
    json_decref(j);

    j = parse(oai_completion_json(false, "cmpl-1", 1, "m", "abc", 2, "length", &u));
    assert_string_equal(json_string_value(json_object_get(j, "object")), "text_completion");
    c = json_array_get(json_object_get(j, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(c, "text")), "ab");
    assert_string_equal(json_string_value(json_object_get(c, "finish_reason")), "length");
    json_decref(j);

    /* stream events: the role first, pieces, the finish, then usage */
    j = parse_sse(oai_chunk_sse(true, "chatcmpl-1", 1, "m", true, NULL, 0, NULL, true));
    assert_string_equal(json_string_value(json_object_get(j, "object")), "chat.completion.chunk");
    c = json_array_get(json_object_get(j, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(c, "delta"), "role")),
                        "assistant");
    assert_null(json_object_get(json_object_get(c, "delta"), "content"));
    assert_true(json_is_null(json_object_get(c, "finish_reason")));
    assert_true(json_is_null(json_object_get(j, "usage")));
    json_decref(j);
    j = parse_sse(oai_chunk_sse(true, "chatcmpl-1", 1, "m", false, "line\nnext", 9, NULL, false));
    c = json_array_get(json_object_get(j, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(c, "delta"), "content")),
                        "line\nnext");
    assert_null(json_object_get(j, "usage"));
    json_decref(j);
    j = parse_sse(oai_chunk_sse(true, "chatcmpl-1", 1, "m", false, NULL, 0, "length", false));
    c = json_array_get(json_object_get(j, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(c, "finish_reason")), "length");
    assert_int_equal(json_object_size(json_object_get(c, "delta")), 0);
    json_decref(j);
    j = parse_sse(oai_usage_chunk_sse(true, "chatcmpl-1", 1, "m", &u));
    assert_int_equal(json_array_size(json_object_get(j, "choices")), 0);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "usage"),
                                                        "completion_tokens")), 5);
    json_decref(j);
    j = parse_sse(oai_chunk_sse(false, "cmpl-1", 1, "m", false, "xy", 2, NULL, false));
    assert_string_equal(json_string_value(json_object_get(j, "object")), "text_completion");
    json_decref(j);
    assert_string_equal(OAI_SSE_DONE, "data: [DONE]\n\n");

    /* invalid UTF-8 (never from the runtime) still gives valid JSON */
    j = parse(oai_completion_json(true, "i", 1, "m", "a\xff\xc3", 3, "stop", &u));
    msg = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message");
    assert_string_equal(json_string_value(json_object_get(msg, "content")),
                        "a\xEF\xBF\xBD\xEF\xBF\xBD");
    json_decref(j);

    const char *ids[] = {"orlando", "elena"};
    j = parse(oai_models_json(ids, 2, 5));
    assert_string_equal(json_string_value(json_object_get(j, "object")), "list");
    assert_int_equal(json_array_size(json_object_get(j, "data")), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(j, "data"), 1),
                                                          "id")), "elena");
    json_decref(j);

    oai_error e = {0};
    oai_fail(&e, 404, "invalid_request_error", "model", "model_not_found",
             "The model `%s` does not exist", "bob");
    j = parse(oai_error_json(&e));
    json_t *err = json_object_get(j, "error");
    assert_string_equal(json_string_value(json_object_get(err, "code")), "model_not_found");
    assert_string_equal(json_string_value(json_object_get(err, "message")),
                        "The model `bob` does not exist");
    json_decref(j);

    assert_string_equal(oai_finish_reason(LEMONPC_STOP_END), "stop");
    assert_string_equal(oai_finish_reason(LEMONPC_STOP_STRING), "stop");
    assert_string_equal(oai_finish_reason(LEMONPC_STOP_MAX_TOKENS), "length");
    assert_string_equal(oai_finish_reason(LEMONPC_STOP_CONTEXT_FULL), "length");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chat_fields),
        cmocka_unit_test(test_chat_errors),
        cmocka_unit_test(test_completion_request),
        cmocka_unit_test(test_responses),
    };
    return cmocka_run_group_tests_name("server_json", tests, NULL, NULL);
}
