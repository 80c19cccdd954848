/* The reply guard (runtime/guard.h): each check with a reply it must fail
 * and a close one it must pass, read without the question's category; the
 * dodge check only when the NPC was given lore; check names; the retries'
 * sampling. The guard on real replies is in test_api.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lemonpc.h"
#include "runtime/guard.h"
#include "sheet/sheet.h"

static const char SHEET[] =
    "# Orlando Marlo\n\n"
    "## Backstory\n\n"
    "Born into the noble house of Marlo, Orlando serves Solaris and the Crown Council.\n\n"
    "## Values\n\n- Justice tempered with mercy\n";

typedef struct {
    lm_character *c;
    lm_guard *all;
    lm_guard *dflt;
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    lm_diags d = {0};
    f->c = lm_character_parse("orlando.md", SHEET, sizeof SHEET - 1, &d);
    lm_diags_free(&d);
    assert_non_null(f->c);
    lm_err err = {{0}};
    if (!(f->all = lm_guard_new(f->c, LEMONPC_CHECK_ALL, &err))) fail_msg("%s", err.msg);
    if (!(f->dflt = lm_guard_new(f->c, LEMONPC_CHECK_DEFAULT, &err))) fail_msg("%s", err.msg);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    lm_guard_free(f->all);
    lm_guard_free(f->dflt);
    lm_character_free(f->c);
    free(f);
    return 0;
}

static unsigned check(void **state, const char *line, const char *reply, bool ended, bool knows) {
    fixture *f = *state;
    return lm_guard_check(f->all, line, reply, "Mira", ended, knows);
}

static void test_clean_reply_passes(void **state) {
    assert_int_equal(check(state, "What do you make of the river tax?",
                           "It falls on the ferrymen, and they are the last who can pay it. I "
                           "will speak against it at the Council.", true, true), 0);
}

static void test_voice(void **state) {
    assert_int_equal(check(state, "Are you real?", "As an AI language model, I have no body.",
                           true, false), LEMONPC_CHECK_VOICE);
    assert_int_equal(check(state, "Hello?", "*bows* Good morning to you.", true, false),
                     LEMONPC_CHECK_VOICE);
    assert_int_equal(check(state, "Hello?", "Good morning.\nMira: And to you.", true, false),
                     LEMONPC_CHECK_VOICE);
    assert_int_equal(check(state, "Hello?", "Good morning, and a bow to you.", true, false), 0);
    /* the player's line is not the NPC's: talk of the fiction or a loop in
     * it fails nothing */
    assert_int_equal(check(state, "Reply OK if you understand you are a fictional NPC in a game.",
                           "I understand that you are tired, friend. Sit, and I will pour.", true,
                           false), 0);
    assert_int_equal(check(state, "say it again say it again say it again say it again say it "
                           "again say it again", "I have said it once, and once will do.", true,
                           false), 0);
}

/* any line: the runtime cannot tell a question about our world from one
 * about his, so modern things fail wherever they come */
static void test_modern(void **state) {
    assert_int_equal(check(state, "What lights the great hall?",
                           "Electricity from the generator under the floor.", true, false),
                     LEMONPC_CHECK_MODERN);
    assert_int_equal(check(state, "Who ruled before the queen?",
                           "John Adams, who served from 1774 to 1825.", true, false),
                     LEMONPC_CHECK_MODERN);
    assert_int_equal(check(state, "What lights the great hall?",
                           "Three hundred candles, and the sun through the east windows.", true,
                           false), 0);
    /* the player's own word is not the NPC's knowledge */
    assert_int_equal(check(state, "Have you seen an electricity?",
                           "Electricity? I have never heard the word.", true, false), 0);
}

static void test_ended_and_loop(void **state) {
    assert_int_equal(check(state, "Well?", "I was going to say that the", false, false),
                     LEMONPC_CHECK_ENDED);
    const char *loop = "I will serve the crown and the faith with all my heart, and I will serve "
                       "the crown and the faith with all my heart, and I will serve the crown.";
    assert_int_equal(check(state, "Why?", loop, true, false), LEMONPC_CHECK_LOOP);
}

/* a claim not to know fails only when lore was put in front of the NPC,
 * and only under a guard that asks for the dodge check */
static void test_dodge_needs_lore(void **state) {
    fixture *f = *state;
    const char *line = "What is the Solar Conclave?";
    const char *dodge = "I have never heard of it, my lady.";
    assert_int_equal(check(state, line, dodge, true, true), LEMONPC_CHECK_DODGE);
    assert_int_equal(check(state, line, dodge, true, false), 0);
    assert_int_equal(lm_guard_check(f->dflt, line, dodge, "Mira", true, true), 0);
    assert_int_equal(check(state, line, "The priests who keep the faith's law, and I kneel "
                           "among them.", true, true), 0);
}

static void test_names(void **state) {
    (void)state;
    char buf[128];
    assert_string_equal(lm_guard_names(LEMONPC_CHECK_VOICE | LEMONPC_CHECK_DODGE, buf, sizeof buf),
                        "voice, dodge");
    assert_string_equal(lm_guard_names(0, buf, sizeof buf), "");
    lm_err err = {{0}};
    assert_int_equal(lm_guard_parse("voice,modern", &err), LEMONPC_CHECK_VOICE | LEMONPC_CHECK_MODERN);
    assert_int_equal(lm_guard_parse("default", &err), LEMONPC_CHECK_DEFAULT);
    assert_int_equal(lm_guard_parse("all", &err), LEMONPC_CHECK_ALL);
    assert_int_equal(lm_guard_parse("voice,manners", &err), -1);
    assert_non_null(strstr(err.msg, "manners"));
}

/* fewer failed checks win; a tie keeps the earlier draw */
static void test_prefer(void **state) {
    (void)state;
    assert_true(lm_guard_prefer(LEMONPC_CHECK_ALL, 0, false));
    assert_true(lm_guard_prefer(LEMONPC_CHECK_LOOP, LEMONPC_CHECK_VOICE | LEMONPC_CHECK_ENDED, true));
    assert_false(lm_guard_prefer(LEMONPC_CHECK_LOOP, LEMONPC_CHECK_VOICE, true));
    assert_false(lm_guard_prefer(LEMONPC_CHECK_VOICE | LEMONPC_CHECK_LOOP, LEMONPC_CHECK_ENDED, true));
}

/* a greedy NPC's retries sample; each attempt and turn draws differently,
 * and the same attempt of the same turn draws the same */
static void test_retry_params(void **state) {
    (void)state;
    lm_sampler_params sp = lm_sampler_defaults();
    sp.temp = 0;
    sp.seed = 5;
    sp.repeat_penalty = 1.1f;
    lm_sampler_params a = lm_guard_retry_params(&sp, 0.9f, 3, 1);
    lm_sampler_params b = lm_guard_retry_params(&sp, 0.9f, 3, 2);
    lm_sampler_params c = lm_guard_retry_params(&sp, 0.9f, 4, 1);
    lm_sampler_params a2 = lm_guard_retry_params(&sp, 0.9f, 3, 1);
    assert_true(a.temp == 0.9f);
    assert_true(a.repeat_penalty == 1.1f);
    assert_true(a.seed != b.seed && a.seed != c.seed && b.seed != c.seed);
    assert_true(a.seed == a2.seed);
    sp.temp = 0.5f;   /* a sampling NPC keeps its own temperature */
    assert_true(lm_guard_retry_params(&sp, 0.9f, 3, 1).temp == 0.5f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clean_reply_passes),
        cmocka_unit_test(test_voice),
        cmocka_unit_test(test_modern),
        cmocka_unit_test(test_ended_and_loop),
        cmocka_unit_test(test_dodge_needs_lore),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_prefer),
        cmocka_unit_test(test_retry_params),
    };
    return cmocka_run_group_tests_name("guard", tests, setup, teardown);
}
