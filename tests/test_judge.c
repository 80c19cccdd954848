/* The LLM judge's reply parser and prompt (eval/judge.h): the scores read
 * from clean JSON, from JSON wrapped in prose or a code fence, and every
 * malformed reply refused with a message that says why. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "eval/judge.h"

static void expect_scores(const char *reply, int m, int v, int p, int h, int s) {
    int sc[LM_JUDGE_N] = {0};
    lm_err err = {{0}};
    if (lm_judge_parse(reply, sc, &err)) fail_msg("%s: %s", reply, err.msg);
    int want[LM_JUDGE_N] = {m, v, p, h, s};
    for (int d = 0; d < LM_JUDGE_N; d++) assert_int_equal(sc[d], want[d]);
}

static void expect_refused(const char *reply, const char *why) {
    int sc[LM_JUDGE_N] = {0};
    lm_err err = {{0}};
    assert_int_not_equal(lm_judge_parse(reply, sc, &err), 0);
    if (!strstr(err.msg, why)) fail_msg("'%s' -> '%s', wanted '%s'", reply ? reply : "(null)", err.msg, why);
}

static void test_parse_clean(void **state) {
    (void)state;
    expect_scores("{\"memorization\": 5, \"values\": 6, \"personality\": 4, \"hallucination\": 7, "
                  "\"stability\": 3}", 5, 6, 4, 7, 3);
    /* key order does not matter, extra keys are ignored */
    expect_scores("{\"stability\":1,\"hallucination\":2,\"personality\":3,\"values\":4,"
                  "\"memorization\":7,\"reason\":\"fine\"}", 7, 4, 3, 2, 1);
}

static void test_parse_wrapped(void **state) {
    (void)state;
    expect_scores("Here are my scores:\n```json\n{\"memorization\": 2, \"values\": 3, \"personality\": 4, "
                  "\"hallucination\": 5, \"stability\": 6}\n```\nHope that helps.", 2, 3, 4, 5, 6);
    /* an object without the scores first (a preamble in braces), then the real one */
    expect_scores("{note} {\"a\": 1} then {\"memorization\": 1, \"values\": 1, \"personality\": 1, "
                  "\"hallucination\": 1, \"stability\": 7}", 1, 1, 1, 1, 7);
    /* nested: the outer object lacks the keys, the inner one has them */
    expect_scores("{\"scores\": {\"memorization\": 6, \"values\": 6, \"personality\": 6, "
                  "\"hallucination\": 6, \"stability\": 6}}", 6, 6, 6, 6, 6);
}

static void test_parse_refused(void **state) {
    (void)state;
    expect_refused("The reply is in character, I would give it a 6.", "no JSON object");
    expect_refused("The reply is in character", "reply starts \"The reply is in character\"");
    expect_refused(NULL, "no JSON object");
    expect_refused("", "no JSON object");
    expect_refused("{\"memorization\": 5, \"values\": 6, \"personality\": 4, \"hallucination\": 7}",
                   "no \"stability\"");
    expect_refused("{\"memorization\": 8, \"values\": 6, \"personality\": 4, \"hallucination\": 7, "
                   "\"stability\": 3}", "\"memorization\" is not an integer from 1 to 7");
    expect_refused("{\"memorization\": 0, \"values\": 6, \"personality\": 4, \"hallucination\": 7, "
                   "\"stability\": 3}", "\"memorization\" is not an integer from 1 to 7");
    expect_refused("{\"memorization\": 5, \"values\": \"6\", \"personality\": 4, \"hallucination\": 7, "
                   "\"stability\": 3}", "\"values\" is not an integer");
    expect_refused("{\"memorization\": 5, \"values\": 6, \"personality\": 4.5, \"hallucination\": 7, "
                   "\"stability\": 3}", "\"personality\" is not an integer");
    expect_refused("{\"memorization\": 5, \"values\": 6, \"personality\": 4, \"hallucination\": 7, "
                   "\"stability\": 3", "no JSON object");   /* cut off */
    /* a long reply is quoted by its start only, on one line */
    char big[400];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    big[10] = '\n';
    int sc[LM_JUDGE_N];
    lm_err err = {{0}};
    assert_int_not_equal(lm_judge_parse(big, sc, &err), 0);
    assert_null(strchr(err.msg, '\n'));
    assert_true(strlen(err.msg) < 200);
}

static void test_prompt(void **state) {
    (void)state;
    char *p = lm_judge_prompt("Orlando Marlo, a knight of Luminara.", "a young acolyte", "the Great Cathedral",
                              "user: Good morning.\nassistant: And to you.\n", "Have you quarrelled?",
                              "No; we have not.");
    assert_non_null(p);
    const char *want[] = {"Orlando Marlo, a knight of Luminara.", "Speaking to the character: a young acolyte",
                          "Place: the Great Cathedral", "user: Good morning.", "Have you quarrelled?",
                          "No; we have not.", "memorization", "values", "personality", "hallucination",
                          "stability", "{\"memorization\": N"};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        if (!strstr(p, want[i])) fail_msg("prompt lacks '%s'", want[i]);
    free(p);
    /* no sheet, no scene, no history */
    p = lm_judge_prompt(NULL, NULL, NULL, NULL, "Q?", "A.");
    assert_non_null(p);
    assert_non_null(strstr(p, "(no sheet)"));
    assert_non_null(strstr(p, "Speaking to the character: unknown"));
    assert_null(strstr(p, "Earlier in the conversation"));
    free(p);
    assert_string_equal(lm_judge_dim_name(LM_JUDGE_HALLUCINATION), "hallucination");
    assert_null(lm_judge_dim_name(LM_JUDGE_N));
    assert_null(lm_judge_dim_name(-1));
    assert_non_null(strstr(lm_judge_system(), "JSON"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_clean),
        cmocka_unit_test(test_parse_wrapped),
        cmocka_unit_test(test_parse_refused),
        cmocka_unit_test(test_prompt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
