/* Runner: request loading and its errors, the resume scan (torn last line,
 * corrupt lines), and whole runs against a scripted in-process teacher:
 * exactly-once output, rerun skipping, failures retried, cancel + resume. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "datagen/runner.h"

#include "helpers.h"

static void tmp_file(const char *dir, const char *name, char *out, size_t cap) {
    snprintf(out, cap, "%s/%s", dir, name);
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return strdup("");
    char *b = calloc(1, 1 << 16);
    size_t n = fread(b, 1, (1 << 16) - 1, f);
    b[n] = '\0';
    fclose(f);
    return b;
}

/* ---- resume scan ------------------------------------------------------ */

static void free_ids(char **ids, size_t n) {
    for (size_t i = 0; i < n; i++) free(ids[i]);
    free(ids);
}

static void test_scan_torn_tail(void **state) {
    (void)state;
    char *d = th_tmpdir("lm_runner");
    char p[128];
    tmp_file(d, "out.jsonl", p, sizeof p);
    char **ids;
    size_t n, torn;
    lm_err err = {{0}};
    assert_int_equal(lm_runner_scan(p, true, &ids, &n, &torn, &err), 0);   /* missing: empty */
    assert_int_equal(n, 0);
    const char *good = "{\"id\":\"a\",\"reply\":\"x\"}\n\n{\"id\":\"b\",\"reply\":\"{\\\"id\\\":1}\"}\n";
    const char *tail = "{\"id\":\"c\",\"rep";
    char full[256];
    snprintf(full, sizeof full, "%s%s", good, tail);
    th_write_text(p, full);
    /* Without fix_tail the file is left alone. */
    assert_int_equal(lm_runner_scan(p, false, &ids, &n, &torn, &err), 0);
    assert_int_equal(n, 2);
    assert_int_equal(torn, strlen(tail));
    assert_string_equal(ids[0], "a");
    assert_string_equal(ids[1], "b");
    free_ids(ids, n);
    char *t = read_text(p);
    assert_string_equal(t, full);
    free(t);
    /* With it, the file ends at the last complete line. */
    assert_int_equal(lm_runner_scan(p, true, &ids, &n, &torn, &err), 0);
    assert_int_equal(n, 2);
    free_ids(ids, n);
    t = read_text(p);
    assert_string_equal(t, good);
    free(t);
    assert_int_equal(lm_runner_scan(p, true, &ids, &n, &torn, &err), 0);
    assert_int_equal(torn, 0);
    free_ids(ids, n);
    /* A complete line that is not ours is an error with file:line. */
    th_write_text(p, "{\"id\":\"a\"}\n{\"no_id\":1}\n");
    assert_int_equal(lm_runner_scan(p, true, &ids, &n, &torn, &err), -1);
    char want[256];
    snprintf(want, sizeof want, "%s:2: not a result line (no string \"id\")", p);
    assert_non_null(strstr(err.msg, want));
    th_write_text(p, "garbage\n");
    assert_int_equal(lm_runner_scan(p, true, &ids, &n, &torn, &err), -1);
    assert_non_null(strstr(err.msg, ":1: not a result line"));
    th_rm_rf(d);
    free(d);
}

/* ---- request loading -------------------------------------------------- */

static void expect_load_error(const char *text, const char *want) {
    char *d = th_tmpdir("lm_runner");
    char p[128];
    tmp_file(d, "req.jsonl", p, sizeof p);
    th_write_text(p, text);
    lm_request_list l = {0};
    lm_err err = {{0}};
    assert_int_equal(lm_requests_load_jsonl(&l, p, &err), -1);
    if (!strstr(err.msg, want)) fail_msg("got '%s', want '%s'", err.msg, want);
    lm_request_list_free(&l);
    th_rm_rf(d);
    free(d);
}

#define MSG "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"

static void test_load_requests(void **state) {
    (void)state;
    char *d = th_tmpdir("lm_runner");
    char p[128];
    tmp_file(d, "req.jsonl", p, sizeof p);
    th_write_text(p, "{\"id\":\"a\"," MSG ",\"params\":{\"temperature\":0.2,\"seed\":9,"
                  "\"stop\":[\"X\"],\"max_tokens\":5},\"metadata\":{\"kind\":\"off-topic\"}}\n"
                  "\n{\"id\":\"b\"," MSG "}\n");
    lm_request_list l = {0};
    lm_err err = {{0}};
    assert_int_equal(lm_requests_load_jsonl(&l, p, &err), 0);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.items[0].id, "a");
    assert_float_equal(l.items[0].params.temperature, 0.2, 1e-6);
    assert_true(l.items[0].params.has_seed);
    assert_int_equal(l.items[0].params.seed, 9);
    assert_int_equal(l.items[0].params.n_stop, 1);
    assert_string_equal(l.items[0].params.stop[0], "X");
    assert_string_equal(l.items[0].metadata, "{\"kind\":\"off-topic\"}");
    assert_string_equal(l.items[1].metadata, "{}");
    assert_true(l.items[1].params.temperature < 0);
    assert_int_equal(lm_request_list_add(&l, "a", l.items[1].msgs, 1, NULL, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "request 'a': duplicate id"));
    assert_int_equal(lm_request_list_add(&l, "z", l.items[1].msgs, 1, NULL, "[1]", &err), -1);
    assert_non_null(strstr(err.msg, "metadata is not a JSON object"));
    lm_request_list_free(&l);
    th_rm_rf(d);
    free(d);

    expect_load_error("{\"id\":\"a\"," MSG "}\n{\"id\":\"a\"," MSG "}\n", ":2: request 'a': duplicate id");
    expect_load_error("\n{\"id\":\"a\",\n", ":2: invalid JSON at column");
    expect_load_error("{\"id\":\"\"," MSG "}\n", ":1: field 'id'");
    expect_load_error("{\"id\":\"a\",\"messages\":[]}\n", "field 'messages': expected a non-empty array");
    expect_load_error("{\"id\":\"a\",\"messages\":[{\"role\":\"user\",\"content\":3}]}\n",
                      "field 'messages[0].content': expected a string");
    expect_load_error("{\"id\":\"a\"," MSG ",\"params\":{\"temprature\":1}}\n",
                      "field 'params.temprature': unknown");
    expect_load_error("{\"id\":\"a\"," MSG ",\"params\":{\"stop\":[\"\"]}}\n",
                      "field 'params.stop[0]'");
    /* a stop list before a bad key is freed with the line (a leak under unit-san before) */
    expect_load_error("{\"id\":\"a\"," MSG ",\"params\":{\"stop\":[\"X\"],\"seed\":-1}}\n",
                      "field 'params.seed'");
    expect_load_error("{\"id\":\"a\"," MSG ",\"params\":{\"max_tokens\":0}}\n",
                      "field 'params.max_tokens'");
    expect_load_error("{\"id\":\"a\"," MSG ",\"metadata\":[]}\n", "field 'metadata'");
    expect_load_error("{\"id\":\"a\"," MSG ",\"extra\":1}\n", "field 'extra': unknown");
    expect_load_error("{\"id\":\"a\",\"messages\":[{\"role\":\"user\",\"content\":\"a\\u0000b\"}]}\n",
                      ":1: invalid JSON at column");
}

/* ---- whole runs with a scripted teacher ------------------------------- */

/* Replies "R:<content>"; content with "FAIL" fails while fail_left > 0;
 * content "BADUTF" gets a reply with a stray byte and an encoded surrogate
 * (which jansson refuses too); raises cancel after
 * cancel_after calls. */
typedef struct script {
    lm_teacher base;
    int calls, fail_left, cancel_after;
    volatile sig_atomic_t *cancel;
    char asked[64][16];
} script;

static int script_complete(lm_teacher *t, const lm_chat_msg *msgs, size_t n,
                           const lm_teacher_params *p, char **reply, lm_err *err) {
    (void)p;
    script *s = (script *)t;
    const char *c = msgs[n - 1].content;
    snprintf(s->asked[s->calls % 64], sizeof s->asked[0], "%s", c);
    s->calls++;
    if (s->cancel && s->calls == s->cancel_after) *s->cancel = 1;
    if (strstr(c, "FAIL") && s->fail_left > 0) {
        s->fail_left--;
        return lm_errf(err, "scripted failure for '%s'", c);
    }
    if (!strcmp(c, "BADUTF")) {
        *reply = strdup("ok \xff \xed\xa0\x80 end");
        return 0;
    }
    *reply = malloc(strlen(c) + 3);
    sprintf(*reply, "R:%s", c);
    return 0;
}
static void script_free(lm_teacher *t) { (void)t; }
static const lm_teacher_vt script_vt = {script_complete, NULL, script_free};

static void make_list(lm_request_list *l, int n, const char *fail_one) {
    lm_err err = {{0}};
    for (int i = 0; i < n; i++) {
        char id[16], content[32], md[32];
        snprintf(id, sizeof id, "q%d", i);
        snprintf(content, sizeof content, "c%d", i);
        snprintf(md, sizeof md, "{\"i\":%d}", i);
        lm_chat_msg m[] = {{"user", fail_one && i == 3 ? fail_one : content}};
        assert_int_equal(lm_request_list_add(l, id, m, 1, NULL, md, &err), 0);
    }
}

/* Counts lines per id across both files; every id in [0, n) once. */
static void check_once(const char *out, const char *fail, int n, int *n_ok, int *n_fail) {
    int seen[64] = {0};
    *n_ok = *n_fail = 0;
    const char *paths[] = {out, fail};
    for (int k = 0; k < 2; k++) {
        char *t = read_text(paths[k]);
        for (char *line = strtok(t, "\n"); line; line = strtok(NULL, "\n")) {
            json_error_t je;
            json_t *o = json_loads(line, 0, &je);
            if (!o) fail_msg("%s: bad line '%s': %s", paths[k], line, je.text);
            int i = atoi(json_string_value(json_object_get(o, "id")) + 1);
            assert_true(i >= 0 && i < n);
            seen[i]++;
            assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "metadata"), "i")), i);
            if (k == 0) {
                char want[32];
                const char *c = json_string_value(json_object_get(
                    json_array_get(json_object_get(o, "messages"), 0), "content"));
                snprintf(want, sizeof want, "R:%s", c);
                if (strcmp(c, "BADUTF"))
                    assert_string_equal(json_string_value(json_object_get(o, "reply")), want);
                (*n_ok)++;
            } else {
                assert_non_null(strstr(json_string_value(json_object_get(o, "error")),
                                       "scripted failure"));
                (*n_fail)++;
            }
            json_decref(o);
        }
        free(t);
    }
    for (int i = 0; i < n; i++)
        if (seen[i] > 1) fail_msg("q%d written %d times", i, seen[i]);
}

static void test_run_resume_and_failures(void **state) {
    (void)state;
    char *d = th_tmpdir("lm_runner");
    char out[128], fail[128];
    tmp_file(d, "out.jsonl", out, sizeof out);
    tmp_file(d, "out.failures.jsonl", fail, sizeof fail);
    lm_request_list l = {0};
    make_list(&l, 10, "please FAIL");
    script s = {{&script_vt, "script"}, 0, 1, 0, NULL, {{0}}};
    lm_runner_opts o = lm_runner_opts_default();
    o.out_path = out;
    o.progress = false;
    lm_runner_summary sum;
    lm_err err = {{0}};
    assert_int_equal(lm_runner_run(&s.base, &l, &o, &sum, &err), 0);
    assert_int_equal(sum.total, 10);
    assert_int_equal(sum.ok, 9);
    assert_int_equal(sum.failed, 1);
    int nok, nfail;
    check_once(out, fail, 10, &nok, &nfail);
    assert_int_equal(nok, 9);
    assert_int_equal(nfail, 1);

    /* Rerun: only the failure is asked again, and it now succeeds. */
    s.calls = 0;
    assert_int_equal(lm_runner_run(&s.base, &l, &o, &sum, &err), 0);
    assert_int_equal(sum.skipped, 9);
    assert_int_equal(sum.ok, 1);
    assert_int_equal(s.calls, 1);
    assert_string_equal(s.asked[0], "please FAIL");
    check_once(out, fail, 10, &nok, &nfail);
    assert_int_equal(nok, 10);
    assert_int_equal(nfail, 0);

    /* A torn last line: cut, and that request asked again. */
    FILE *f = fopen(out, "ab");
    fputs("{\"id\":\"q9\",\"mess", f);
    fclose(f);
    lm_request_list_free(&l);
    make_list(&l, 12, NULL);   /* two new requests as well */
    s.calls = 0;
    assert_int_equal(lm_runner_run(&s.base, &l, &o, &sum, &err), 0);
    assert_int_equal(sum.torn_bytes, strlen("{\"id\":\"q9\",\"mess"));
    assert_int_equal(sum.skipped, 10);
    assert_int_equal(s.calls, 2);
    check_once(out, fail, 12, &nok, &nfail);
    assert_int_equal(nok, 12);
    lm_request_list_free(&l);
    th_rm_rf(d);
    free(d);
}

static void test_run_cancel_then_resume(void **state) {
    (void)state;
    char *d = th_tmpdir("lm_runner");
    char out[128], fail[128];
    tmp_file(d, "o.jsonl", out, sizeof out);
    tmp_file(d, "fails.jsonl", fail, sizeof fail);
    lm_request_list l = {0};
    make_list(&l, 20, "BADUTF");
    volatile sig_atomic_t stop = 0;
    script s = {{&script_vt, "script"}, 0, 0, 7, &stop, {{0}}};
    lm_runner_opts o = lm_runner_opts_default();
    o.out_path = out;
    o.failures_path = fail;
    o.progress = false;
    o.cancel = &stop;
    lm_runner_summary sum;
    lm_err err = {{0}};
    assert_int_equal(lm_runner_run(&s.base, &l, &o, &sum, &err), 0);
    assert_true(sum.cancelled);
    assert_int_equal(sum.ok, 7);   /* the 7th finished; the cancel is seen before the 8th */
    stop = 0;
    s.cancel = NULL;
    s.calls = 0;
    assert_int_equal(lm_runner_run(&s.base, &l, &o, &sum, &err), 0);
    assert_false(sum.cancelled);
    assert_int_equal(sum.skipped, 7);
    assert_int_equal(s.calls, 13);
    int nok, nfail;
    check_once(out, fail, 20, &nok, &nfail);
    assert_int_equal(nok, 20);
    /* Each bad byte became U+FFFD: the line is valid JSON. */
    char *t = read_text(out);
    assert_non_null(strstr(t, "\"reply\":\"ok \xef\xbf\xbd \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd end\""));
    free(t);
    /* A second run on a file another run holds is refused. */
    int fd = open(out, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(flock(fd, LOCK_EX), 0);
    assert_int_equal(lm_runner_run(&s.base, &l, &o, &sum, &err), -1);
    assert_non_null(strstr(err.msg, "another run is writing to this file"));
    close(fd);
    /* Same path for both files is refused. */
    o.failures_path = out;
    assert_int_equal(lm_runner_run(&s.base, &l, &o, &sum, &err), -1);
    assert_non_null(strstr(err.msg, "must differ"));
    lm_request_list_free(&l);
    th_rm_rf(d);
    free(d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scan_torn_tail),
        cmocka_unit_test(test_load_requests),
        cmocka_unit_test(test_run_resume_and_failures),
        cmocka_unit_test(test_run_cancel_then_resume),
    };
    return cmocka_run_group_tests_name("runner", tests, NULL, NULL);
}
