/* train/jsonl and train/chat_jsonl: the one reader of JSONL chat files
 * (the trainer, filter, review, datagen): what it accepts, what it rejects
 * and how it names the place, strict and lenient. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "train/chat_jsonl.h"

#define UA "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"yo\"}]"

static lm_chat_jsonl *open_text(const char *text, bool strict, unsigned need) {
    lm_chat_jsonl_opts o = {.strict = strict, .need = need};
    lm_err err = {{0}};
    lm_chat_jsonl *r = lm_chat_jsonl_open_mem("d.jsonl", text, strlen(text), &o, &err);
    if (!r) fail_msg("%s", err.msg);
    return r;
}

/* CRLF line ends, blank lines (counted), a last line without "\n", the
 * object kept whole with fields the reader does not know. */
static void test_accepts(void **state) {
    (void)state;
    const char *text = UA ",\"meta\":{\"id\":\"a\",\"x\":[1]}}\r\n"
                       "\r\n  \t\n\n"
                       "{\"messages\":[{\"role\":\"system\",\"content\":\"S\"},{\"role\":\"user\",\"content\":\"q\"},"
                       "{\"role\":\"assistant\",\"content\":\"a1\"},{\"role\":\"user\",\"content\":\"q2\"},"
                       "{\"role\":\"assistant\",\"content\":\"a2\"}]}\r\n"
                       UA "}";
    lm_chat_jsonl *r = open_text(text, true, LM_CHAT_NEED_USER | LM_CHAT_NEED_ASSISTANT);
    lm_err err = {{0}};
    lm_chat_line l;
    assert_int_equal(lm_chat_jsonl_next(r, &l, &err), LM_JSONL_OK);
    assert_int_equal(l.line, 1);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.msgs[0].role, "user");
    assert_string_equal(l.msgs[1].content, "yo");
    char *meta = json_dumps(json_object_get(l.root, "meta"), JSON_COMPACT);
    assert_string_equal(meta, "{\"id\":\"a\",\"x\":[1]}");
    free(meta);
    json_t *kept = json_incref(l.root);   /* outlives the next line */
    assert_int_equal(lm_chat_jsonl_next(r, &l, &err), LM_JSONL_OK);
    assert_int_equal(l.line, 5);   /* lines 2-4 blank */
    assert_int_equal(l.n, 5);
    assert_int_equal(lm_chat_last(&l, "user"), 3);
    assert_int_equal(lm_chat_last(&l, "assistant"), 4);
    assert_int_equal(lm_chat_last(&l, "tool"), -1);
    assert_string_equal(l.msgs[4].content, "a2");
    assert_int_equal(lm_chat_jsonl_next(r, &l, &err), LM_JSONL_OK);
    assert_int_equal(l.line, 6);   /* no "\n" at the end: still a line */
    assert_int_equal(lm_chat_jsonl_next(r, &l, &err), LM_JSONL_END);
    assert_int_equal(lm_chat_jsonl_next(r, &l, &err), LM_JSONL_END);
    assert_int_equal(lm_chat_jsonl_bad(r), 0);
    lm_chat_jsonl_close(r);
    assert_string_equal(json_string_value(json_object_get(json_object_get(kept, "meta"), "id")), "a");
    json_decref(kept);
    /* empty and all-blank files hold no line */
    const char *empties[] = {"", "\n", "\r\n \n\t\n"};
    for (size_t i = 0; i < 3; i++) {
        r = open_text(empties[i], true, 0);
        assert_int_equal(lm_chat_jsonl_next(r, &l, &err), LM_JSONL_END);
        lm_chat_jsonl_close(r);
    }
}

static void test_sharegpt(void **state) {
    (void)state;
    const char *text = "{\"conversations\":[{\"from\":\"human\",\"value\":\"hi\"},{\"from\":\"gpt\",\"value\":\"yo\"},"
                       "{\"from\":\"user\",\"value\":\"q\"},{\"from\":\"assistant\",\"value\":\"a\"}]}\n";
    lm_chat_jsonl_opts o = {.strict = true, .sharegpt = true, .need = LM_CHAT_NEED_ASSISTANT};
    lm_err err = {{0}};
    lm_chat_jsonl *r = lm_chat_jsonl_open_mem("s.jsonl", text, strlen(text), &o, &err);
    assert_non_null(r);
    lm_chat_line l;
    assert_int_equal(lm_chat_jsonl_next(r, &l, &err), LM_JSONL_OK);
    assert_int_equal(l.n, 4);
    assert_string_equal(l.msgs[0].role, "user");
    assert_string_equal(l.msgs[1].role, "assistant");
    assert_string_equal(l.msgs[3].role, "assistant");
    lm_chat_jsonl_close(r);
    /* without the option the shape is not a chat line */
    r = open_text(text, true, 0);
    assert_int_equal(lm_chat_jsonl_next(r, &l, &err), -1);
    assert_string_equal(err.msg, "d.jsonl:1: no \"messages\" field");
    lm_chat_jsonl_close(r);
}

/* Each bad line between two good ones: strict fails with its message;
 * lenient returns it, counts it and goes on to the good line after it. */
static void test_rejects(void **state) {
    (void)state;
    static const struct { const char *line, *msg; } cases[] = {
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"bot\",\"content\":\"b\"}]}",
         "d.jsonl:2: messages[1].role: expected one of system/user/assistant, got 'bot'"},
        {"{\"messages\":[{\"role\":\"user\"},{\"role\":\"assistant\",\"content\":\"b\"}]}",
         "d.jsonl:2: messages[0].content: missing"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":null}]}", "d.jsonl:2: messages[0].content: expected a string"},
        {"{\"messages\":[{\"content\":\"x\"}]}", "d.jsonl:2: messages[0].role: missing"},
        {"{\"messages\":[{\"role\":1,\"content\":\"x\"}]}", "d.jsonl:2: messages[0].role: expected a string"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}]}", "d.jsonl:2: messages: no assistant message"},
        {"{\"messages\":[{\"role\":\"assistant\",\"content\":\"a\"}]}", "d.jsonl:2: messages: no user message"},
        {"{\"messages\":[]}", "d.jsonl:2: messages: empty"},
        {"{\"messages\":\"hi\"}", "d.jsonl:2: messages: expected an array"},
        {"{\"messages\":[3]}", "d.jsonl:2: messages[0]: expected an object"},
        {"[1,2]", "d.jsonl:2: expected a JSON object per line"},
        {"\"text\"", "d.jsonl:2: expected a JSON object per line"},
        {"42", "d.jsonl:2: expected a JSON object per line"},
        {"{\"text\":\"hi\"}", "d.jsonl:2: no \"messages\" field"},
        {"{\"messages\":[", "d.jsonl:2: invalid JSON at column 13: "},
        {UA "} trailing", "d.jsonl:2: invalid JSON at column"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"a\\u0000b\"}]}", "d.jsonl:2: invalid JSON"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"\xff\"}]}", "d.jsonl:2: invalid JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[1024];
        snprintf(text, sizeof text, UA "}\n%s\r\n" UA "}\n", cases[i].line);
        for (int strict = 0; strict < 2; strict++) {
            lm_chat_jsonl *r = open_text(text, strict, LM_CHAT_NEED_USER | LM_CHAT_NEED_ASSISTANT);
            lm_err err = {{0}};
            lm_chat_line l;
            assert_int_equal(lm_chat_jsonl_next(r, &l, &err), LM_JSONL_OK);
            int rc = lm_chat_jsonl_next(r, &l, &err);
            if (strncmp(err.msg, cases[i].msg, strlen(cases[i].msg)))
                fail_msg("case %zu: got '%s', want '%s...'", i, err.msg, cases[i].msg);
            assert_int_equal(rc, strict ? -1 : LM_JSONL_BAD);
            assert_null(l.root);
            assert_int_equal(lm_chat_jsonl_bad(r), 1);
            if (!strict) {
                assert_int_equal(lm_chat_jsonl_next(r, &l, &err), LM_JSONL_OK);
                assert_int_equal(l.line, 3);
                assert_int_equal(lm_chat_jsonl_next(r, &l, &err), LM_JSONL_END);
            }
            lm_chat_jsonl_close(r);
        }
    }
}

/* A last line cut short (a crash mid-write) is named as such, on its own
 * line and column, not at column 0 of a line after it. */
static void test_cut_at_eof(void **state) {
    (void)state;
    const char *text = UA "}\n{\"messages\":[{\"role\":\"user\",\"content\":\"hel";
    lm_chat_jsonl *r = open_text(text, false, 0);
    lm_err err = {{0}};
    lm_chat_line l;
    assert_int_equal(lm_chat_jsonl_next(r, &l, &err), LM_JSONL_OK);
    assert_int_equal(lm_chat_jsonl_next(r, &l, &err), LM_JSONL_BAD);
    if (!strstr(err.msg, "d.jsonl:2: invalid JSON at column 42:") ||
        !strstr(err.msg, "(the file ends inside this line)"))
        fail_msg("%s", err.msg);
    assert_int_equal(lm_chat_jsonl_next(r, &l, &err), LM_JSONL_END);
    lm_chat_jsonl_close(r);
    /* journals (review, pairs, judge) drop such a fragment and cut the file
     * back to the end of the last whole line */
    lm_jsonl *j = lm_jsonl_open_mem("j.jsonl", "{\"a\":1}\n{\"a\":", 14, &err);
    json_t *o;
    assert_int_equal(lm_jsonl_next(j, &o, &err), LM_JSONL_OK);
    assert_false(lm_jsonl_torn(j));
    assert_int_equal(lm_jsonl_offset(j), 8);
    assert_int_equal(lm_jsonl_next(j, &o, &err), LM_JSONL_BAD);
    assert_true(lm_jsonl_torn(j));
    assert_int_equal(lm_jsonl_offset(j), 14);
    lm_jsonl_close(j);
    /* the same error on a line with its "\n" is not called cut */
    r = open_text("{\"messages\":[\r\n", false, 0);
    assert_int_equal(lm_chat_jsonl_next(r, &l, &err), LM_JSONL_BAD);
    if (!strstr(err.msg, "d.jsonl:1: invalid JSON at column 13:") || strstr(err.msg, "ends inside"))
        fail_msg("%s", err.msg);
    lm_chat_jsonl_close(r);
}

/* The plain object reader: any object per line; files by path, named by
 * it; a missing file says which. */
static void test_objects_from_file(void **state) {
    (void)state;
    char *dir = th_tmpdir("chat_jsonl");
    char path[512];
    snprintf(path, sizeof path, "%s/q.jsonl", dir);
    th_write_text(path, "{\"id\":1}\n\n{\"id\":2}\nnope\n");
    lm_err err = {{0}};
    lm_jsonl *r = lm_jsonl_open(path, &err);
    assert_non_null(r);
    assert_string_equal(lm_jsonl_name(r), path);
    json_t *o;
    assert_int_equal(lm_jsonl_next(r, &o, &err), LM_JSONL_OK);
    assert_int_equal(json_integer_value(json_object_get(o, "id")), 1);
    assert_int_equal(lm_jsonl_offset(r), 9);   /* past "{"id":1}\n" */
    assert_int_equal(lm_jsonl_next(r, &o, &err), LM_JSONL_OK);
    assert_int_equal(lm_jsonl_line(r), 3);
    assert_int_equal(lm_jsonl_offset(r), 19);  /* the blank line and the second */
    assert_false(lm_jsonl_torn(r));
    assert_int_equal(lm_jsonl_next(r, &o, &err), LM_JSONL_BAD);
    assert_null(o);
    assert_false(lm_jsonl_torn(r));            /* bad, but whole: "nope\n" */
    char want[600];
    snprintf(want, sizeof want, "%s:4: invalid JSON at column", path);
    if (strncmp(err.msg, want, strlen(want))) fail_msg("%s", err.msg);
    assert_int_equal(lm_jsonl_next(r, &o, &err), LM_JSONL_END);
    lm_jsonl_close(r);
    unlink(path);
    assert_null(lm_jsonl_open(path, &err));
    assert_non_null(strstr(err.msg, path));
    lm_chat_jsonl_opts co = {0};
    assert_null(lm_chat_jsonl_open(path, &co, &err));
    assert_non_null(strstr(err.msg, path));
    th_rm_rf(dir);
    free(dir);
}

/* The message-list check alone (DPO's prompt and completions use it). */
static void test_parse_messages(void **state) {
    (void)state;
    json_t *v = json_loads("[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":\"a\"}]", 0, NULL);
    lm_chat_msg *m = NULL;
    lm_err err = {{0}};
    assert_int_equal(lm_chat_parse_messages(v, "chosen", &m, &err), 2);
    assert_string_equal(m[1].content, "a");
    free(m);
    json_decref(v);
    v = json_loads("[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"gpt\",\"content\":\"a\"}]", 0, NULL);
    assert_int_equal(lm_chat_parse_messages(v, "chosen", &m, &err), -1);
    assert_null(m);
    assert_string_equal(err.msg, "chosen[1].role: expected one of system/user/assistant, got 'gpt'");
    json_decref(v);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepts),
        cmocka_unit_test(test_sharegpt),
        cmocka_unit_test(test_rejects),
        cmocka_unit_test(test_cut_at_eof),
        cmocka_unit_test(test_objects_from_file),
        cmocka_unit_test(test_parse_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
