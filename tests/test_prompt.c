/* Templates: substitution, #if/else, #each with this/@index, standalone
 * block lines, comments, every structural error with its line, the shipped
 * template files, and the examples file format. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "datagen/prompt.h"

/* Renders text with vars; returns malloc'd output or NULL (error in err). */
static char *render(const char *text, const lm_tpl_vars *vs, lm_err *err) {
    lm_tpl *t = lm_tpl_parse("t.txt", text, strlen(text), err);
    if (!t) return NULL;
    char *out = lm_tpl_render(t, vs, err);
    lm_tpl_free(t);
    return out;
}

static void expect(const char *text, const lm_tpl_vars *vs, const char *want) {
    lm_err err = {{0}};
    char *out = render(text, vs, &err);
    if (!out) fail_msg("render failed: %s", err.msg);
    assert_string_equal(out, want);
    free(out);
}

static void expect_error(const char *text, const lm_tpl_vars *vs, const char *part) {
    lm_err err = {{0}};
    char *out = render(text, vs, &err);
    if (out) fail_msg("expected an error with '%s', got output '%s'", part, out);
    if (!strstr(err.msg, part)) fail_msg("error '%s' lacks '%s'", err.msg, part);
}

static void vars(lm_tpl_vars *v) {
    lm_err err = {{0}};
    memset(v, 0, sizeof *v);
    const char *items[] = {"red", "green", "blue"};
    assert_int_equal(lm_tpl_set(v, "name", "Orlando", &err), 0);
    assert_int_equal(lm_tpl_set(v, "empty", "", &err), 0);
    assert_int_equal(lm_tpl_set_list(v, "colors", items, 3, &err), 0);
    assert_int_equal(lm_tpl_set_list(v, "none", NULL, 0, &err), 0);
    assert_int_equal(lm_tpl_setf(v, &err, "n", "%d-%s", 7, "x"), 0);
}

static void test_substitution(void **state) {
    (void)state;
    lm_tpl_vars v;
    vars(&v);
    expect("Hello {{name}}!", &v, "Hello Orlando!");
    expect("{{ name }}/{{n}}/{{empty}}.", &v, "Orlando/7-x/.");
    expect("no tags at all\n", &v, "no tags at all\n");
    expect("", &v, "");
    expect("a { b } {c} }}", &v, "a { b } {c} }}");
    /* A later set replaces the earlier value. */
    lm_err err = {{0}};
    assert_int_equal(lm_tpl_set(&v, "name", "Elena", &err), 0);
    expect("{{name}}", &v, "Elena");
    lm_tpl_vars_free(&v);
}

static void test_if_else(void **state) {
    (void)state;
    lm_tpl_vars v;
    vars(&v);
    expect("{{#if name}}yes{{/if}}", &v, "yes");
    expect("{{#if empty}}yes{{else}}no{{/if}}", &v, "no");
    expect("{{#if unset}}yes{{else}}no{{/if}}", &v, "no");
    expect("{{#if colors}}L{{/if}}{{#if none}}N{{/if}}", &v, "L");
    expect("{{#if name}}{{#if empty}}a{{else}}b{{/if}}{{/if}}", &v, "b");
    lm_tpl_vars_free(&v);
}

static void test_each(void **state) {
    (void)state;
    lm_tpl_vars v;
    vars(&v);
    expect("{{#each colors}}{{@index}}={{this}};{{/each}}", &v, "1=red;2=green;3=blue;");
    expect("[{{#each none}}x{{/each}}]", &v, "[]");
    expect("[{{#each unset}}x{{/each}}]", &v, "[]");
    /* Nested: the inner loop's this shadows the outer one, restored after. */
    expect("{{#each colors}}{{#each none}}{{/each}}{{this}}{{/each}}", &v, "redgreenblue");
    expect("{{#each colors}}{{#if this}}+{{/if}}{{/each}}", &v, "+++");
    lm_tpl_vars_free(&v);
}

static void test_standalone_lines(void **state) {
    (void)state;
    lm_tpl_vars v;
    vars(&v);
    /* Block tags on their own lines leave no blank lines behind. */
    expect("A\n{{#if name}}\nB\n{{/if}}\nC\n", &v, "A\nB\nC\n");
    expect("A\n  {{#if empty}}\nB\n{{else}}\nD\n{{/if}}  \nC", &v, "A\nD\nC");
    expect("List:\n{{#each colors}}\n- {{this}}\n{{/each}}\nend\n", &v,
           "List:\n- red\n- green\n- blue\nend\n");
    expect("{{! a comment\n spanning lines }}\nText {{! inline }}here\n", &v, "Text here\n");
    /* A variable tag alone on a line keeps its line. */
    expect("x\n{{name}}\ny", &v, "x\nOrlando\ny");
    lm_tpl_vars_free(&v);
}

static void test_errors(void **state) {
    (void)state;
    lm_tpl_vars v;
    vars(&v);
    expect_error("line one\n{{unknown}}", &v, "t.txt:2: unknown variable '{{unknown}}'");
    expect_error("a\nb {{name", &v, "t.txt:2: '{{' without a closing '}}'");
    expect_error("{{#if name}}x", &v, "t.txt:1: '{{#if name}}' is never closed with '{{/if}}'");
    expect_error("{{#each colors}}x{{/if}}", &v, "'{{/if}}' where '{{/each}}' (opened on line 1)");
    expect_error("x\n\n{{/if}}", &v, "t.txt:3: '{{/if}}' without an opening block");
    expect_error("{{else}}", &v, "without an opening block");
    expect_error("{{#each colors}}{{else}}{{/each}}", &v, "'{{else}}' where '{{/each}}'");
    expect_error("{{#unless x}}{{/unless}}", &v, "unknown block");
    expect_error("{{#if}}{{/if}}", &v, "needs one variable name");
    expect_error("{{#if a b}}{{/if}}", &v, "needs one variable name");
    expect_error("{{bad name}}", &v, "bad tag");
    expect_error("{{colors}}", &v, "is a list: use {{#each colors}}");
    expect_error("{{#each name}}{{/each}}", &v, "over a text, not a list");
    expect_error("{{this}}", &v, "outside {{#each}}");
    lm_err err = {{0}};
    char nul[] = "a\0b";
    assert_null(lm_tpl_parse("nul.txt", nul, 3, &err));
    assert_non_null(strstr(err.msg, "NUL"));
    /* Depth limit: LM_TPL_MAX_DEPTH nested blocks parse, one more does not. */
    char deep[1024] = "", deeper[1100];
    for (int i = 0; i < LM_TPL_MAX_DEPTH; i++) strcat(deep, "{{#if name}}");
    for (int i = 0; i < LM_TPL_MAX_DEPTH; i++) strcat(deep, "{{/if}}");
    expect(deep, &v, "");
    snprintf(deeper, sizeof deeper, "{{#if name}}%s{{/if}}", deep);
    expect_error(deeper, &v, "nested deeper than");
    lm_tpl_vars_free(&v);
}

static void test_output_cap(void **state) {
    (void)state;
    /* 32^5 repetitions of a 4-byte body is far over the cap: refused, not
     * allocated without bound. */
    lm_tpl_vars v = {0};
    lm_err err = {{0}};
    const char *items[32];
    for (int i = 0; i < 32; i++) items[i] = "x";
    assert_int_equal(lm_tpl_set_list(&v, "l", items, 32, &err), 0);
    expect_error("{{#each l}}{{#each l}}{{#each l}}{{#each l}}{{#each l}}abcd"
                 "{{/each}}{{/each}}{{/each}}{{/each}}{{/each}}", &v, "output over");
    lm_tpl_vars_free(&v);
}

static void test_examples_format(void **state) {
    (void)state;
    lm_prompt_set s;
    memset(&s, 0, sizeof s);
    lm_err err = {{0}};
    const char *ok = "# comment\n\n## In-world\n- What is that?\n*   Why?  \n\n## adversarial\n- Are you an AI?\n";
    assert_int_equal(lm_prompt_parse_examples(&s, "ex.txt", ok, strlen(ok), &err), 0);
    assert_int_equal(s.n_examples[LM_Q_IN_WORLD], 2);
    assert_string_equal(s.examples[LM_Q_IN_WORLD][1], "Why?");
    assert_int_equal(s.n_examples[LM_Q_ADVERSARIAL], 1);
    assert_int_equal(s.n_examples[LM_Q_OFF_TOPIC], 0);
    for (int k = 0; k < LM_Q_KINDS; k++) {
        for (size_t i = 0; i < s.n_examples[k]; i++) free(s.examples[k][i]);
        free(s.examples[k]);
    }
    memset(&s, 0, sizeof s);
    const char *bad1 = "- orphan\n";
    assert_int_equal(lm_prompt_parse_examples(&s, "ex.txt", bad1, strlen(bad1), &err), -1);
    assert_non_null(strstr(err.msg, "ex.txt:1: example before any '## kind' heading"));
    const char *bad2 = "## in-world\n- ok\n## small-talk\n";
    assert_int_equal(lm_prompt_parse_examples(&s, "ex.txt", bad2, strlen(bad2), &err), -1);
    assert_non_null(strstr(err.msg, "ex.txt:3: unknown kind 'small-talk'"));
    const char *bad3 = "## in-world\nplain text\n";
    assert_int_equal(lm_prompt_parse_examples(&s, "ex.txt", bad3, strlen(bad3), &err), -1);
    assert_non_null(strstr(err.msg, "ex.txt:2: expected"));
    for (int k = 0; k < LM_Q_KINDS; k++) {
        for (size_t i = 0; i < s.n_examples[k]; i++) free(s.examples[k][i]);
        free(s.examples[k]);
    }
}

static void test_kind_names(void **state) {
    (void)state;
    for (int k = 0; k < LM_Q_KINDS; k++) assert_int_equal(lm_qkind_parse(lm_qkind_name(k)), k);
    assert_int_equal(lm_qkind_parse("offtopic"), -1);
    assert_int_equal(lm_qkind_parse(NULL), -1);
}

static void test_shipped_templates(void **state) {
    (void)state;
    lm_err err = {{0}};
    lm_prompt_set *s = lm_prompt_set_load("datagen/templates", &err);
    if (!s) fail_msg("%s", err.msg);
    for (int k = 0; k < LM_Q_KINDS; k++) assert_true(s->n_examples[k] >= 3);
    lm_prompt_set_free(s);
    assert_null(lm_prompt_set_load("/nonexistent/templates", &err));
    assert_non_null(strstr(err.msg, "/nonexistent/templates/question_persona.txt"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_substitution),   cmocka_unit_test(test_if_else),
        cmocka_unit_test(test_each),           cmocka_unit_test(test_standalone_lines),
        cmocka_unit_test(test_errors),         cmocka_unit_test(test_output_cap),
        cmocka_unit_test(test_examples_format), cmocka_unit_test(test_kind_names),
        cmocka_unit_test(test_shipped_templates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
