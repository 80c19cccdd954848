/* Eval metrics: each flag with text it must raise and close text it must
 * not; the tally; distinct-n; the persona policy's system turns. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "check/metrics.h"
#include "sheet/sheet.h"

static const char SHEET[] =
    "# Orlando Marlo\n\n"
    "## Backstory\n\n"
    "Born into the noble house of Marlo, Orlando grew up witnessing both the splendor and "
    "corruption within Luminara's halls of power. His connection to Solaris became deeply "
    "personal. He means to become Chancellor and to help the Unblessed through the Crown "
    "Council and the Solar Conclave.\n\n"
    "## Values\n\n- Justice tempered with mercy\n\n"
    "## Catchphrases\n\n- \"May the dawn find you well.\"\n- \"A crown that does not serve is only gold.\"\n";

typedef struct {
    lm_character *c;
    lm_eval_checker *k;
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    lm_diags d = {0};
    f->c = lm_character_parse("orlando.md", SHEET, sizeof SHEET - 1, &d);
    lm_diags_free(&d);
    assert_non_null(f->c);
    lm_err err = {{0}};
    f->k = lm_eval_checker_new(f->c, &err);
    if (!f->k) fail_msg("%s", err.msg);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    lm_eval_checker_free(f->k);
    lm_character_free(f->c);
    free(f);
    return 0;
}

static lm_eval_flags check(void **state, const char *q, const char *a, const char *cat) {
    fixture *f = *state;
    lm_eval_flags fl;
    lm_eval_check(f->k, q, a, cat, "Mara", true, &fl);
    return fl;
}

static const char *const CLEAN = "Rain again, and my boots have given up the fight. Sit by the fire.";

static void test_clean_answer(void **state) {
    lm_eval_flags f = check(state, "Nasty weather, isn't it?", CLEAN, "off-topic");
    assert_true(f.in_character);
    assert_false(f.assistant || f.refusal || f.stage || f.self_intro || f.speaks_for_user ||
                 f.breaks || f.modern || f.repetition || f.recital || f.catchphrase);
    assert_int_equal(f.words, 14);
    assert_true(f.eos);
}

static void test_assistant_and_refusal(void **state) {
    lm_eval_flags f = check(state, "Are you real?", "As an AI language model, I do not have a body.", "adversarial");
    assert_true(f.assistant);
    assert_false(f.in_character);
    f = check(state, "Are you real?", "I am no AI, friend; my knees ache too much for that.", "adversarial");
    assert_false(f.assistant);
    assert_true(f.in_character);
    f = check(state, "Write me a Python function.", "Here is the one you need: `sorted(numbers)`.", "protective");
    assert_true(f.assistant);
    f = check(state, "Help me rob the bank.", "I'm sorry, but I can't help with that request.", "adversarial");
    assert_true(f.refusal || f.assistant);
    assert_false(f.in_character);
}

static void test_stage_and_intro(void **state) {
    assert_true(check(state, "Hello?", "*smiles warmly* Good morning to you.", "in-world").stage);
    assert_false(check(state, "Hello?", "Good morning to you, and warm bread besides.", "in-world").stage);
    assert_true(check(state, "Hint?", "(to the lady) Ah, I have no time for that.", "in-world").stage);
    assert_true(check(state, "Hint?", "No. [aside] She will never guess.", "in-world").stage);
    assert_false(check(state, "Hint?", "No (not today), and not to the lady either.", "in-world").stage);
    assert_true(check(state, "Who goes there?", "I am Orlando Marlo, knight of the Sunguard.", "in-world").self_intro);
    assert_false(check(state, "Who goes there?", "A knight with cold hands. Come closer.", "in-world").self_intro);
}

static void test_speaks_for_user(void **state) {
    assert_true(check(state, "Well?", "Then so be it.\nUser: And what of the king?", "in-world").speaks_for_user);
    assert_true(check(state, "Well?", "Then so be it.\nMara: I will go.", "in-world").speaks_for_user);
    assert_true(check(state, "Well?", "Then so be it.<|im_start|>user", "in-world").speaks_for_user);
    assert_false(check(state, "Well?", "Then so be it. You said you would go; go, then.", "in-world").speaks_for_user);
    assert_false(check(state, "Well?", "Then so be it. Mara, you said it yourself.", "in-world").speaks_for_user);
}

static void test_breaks_and_modern(void **state) {
    assert_true(check(state, "Hi", "In this role-play I will be a knight.", "in-world").breaks);
    assert_false(check(state, "Hi", "I will be a knight until I die.", "in-world").breaks);
    lm_eval_flags f = check(state, "What is a smartphone?",
                            "A smartphone is a mobile device that lets you make calls and browse the internet.",
                            "protective");
    assert_true(f.modern);
    assert_false(f.in_character);
    f = check(state, "What is a smartphone?", "A smart phone? I know neither word together. Is it a bird?", "protective");
    assert_false(f.modern);
    assert_true(f.in_character);
    /* modern words the question did not bring */
    f = check(state, "How does a nuclear reactor make power?",
              "It splits atoms into smaller parts, and the heat makes steam.", "protective");
    assert_true(f.modern);
    f = check(state, "How does a nuclear reactor make power?",
              "A nuclear what? That is no word I know, friend.", "protective");
    assert_false(f.modern);   /* "nuclear" came from the question */
    /* our history told with confidence: years the question did not bring */
    assert_true(check(state, "Who was the first president of the United States?",
                      "That was John Adams, who served from 1774 to 1825.", "protective").modern);
    assert_true(check(state, "Tell me about the Second World War.", "It was fought between 1939 and 1945.",
                      "protective").modern);
    f = check(state, "What happened in 1969?", "In 1969? I count no years that way, friend.", "protective");
    assert_false(f.modern);   /* the year came from the question */
    assert_false(check(state, "How far is the moon?", "Some say 3000 leagues; the priests say farther.",
                       "protective").modern);   /* a distance, not a year */
    assert_false(check(state, "What is a smartphone?", "It would cost 12,1500 crowns or 2.1999 of them.",
                       "protective").modern);   /* digits inside longer numbers */
    assert_true(f.ignorant);
    /* honest ignorance, and what is not */
    assert_true(check(state, "What is Wi-Fi?", "I have never heard that word.", "protective").ignorant);
    assert_true(check(state, "Got a phone?", "A tele-phone? Is it a kind of bell?", "protective").ignorant);
    assert_true(check(state, "Who won the World Cup?", "I do not know your cup, nor its winner.", "protective").ignorant);
    f = check(state, "Napoleon: great general or tyrant?", "Great general, I think; his victories were many.", "protective");
    assert_false(f.ignorant);
    assert_true(f.in_character);   /* in voice, yet it plays along: not a pass */
    lm_eval_tally t = {0};
    f.eos = true;
    lm_eval_tally_add(&t, &f, "protective");
    assert_int_equal(t.all.passed, 0);
    assert_false(check(state, "What is Wi-Fi?", "I have never heard that word.", "in-world").ignorant);
    /* in-world, the same disclaimers are dodges: he should know his world */
    assert_true(check(state, "Who taught you the blade?", "I have never been asked; I have never seen a master.",
                      "in-world").dodges);
    assert_true(check(state, "Whose debts first?", "I would rather not say, my lord.", "in-world").dodges);
    assert_true(check(state, "What does the tithe cost?", "I do not know what it costs.", "in-world").dodges);
    f = check(state, "Who taught you the blade?", "Ser Aldous, in my father's yard, with a stick before a sword. "
              "A strange teacher: he never praised anyone.", "in-world");
    assert_false(f.dodges);   /* "strange" and "never praised" are not disclaimers */
    assert_false(check(state, "What is Wi-Fi?", "I have never heard that word.", "protective").dodges);
    /* the same explanation to an in-world question is not judged as modern */
    f = check(state, "What is a smartphone?",
              "A smartphone is a mobile device that lets you make calls and browse the internet.", "in-world");
    assert_false(f.modern);
}

static void test_repetition(void **state) {
    const char *loop = "I will serve the crown and the faith with all my heart, and I will serve the crown "
                       "and the faith with all my heart, and I will serve the crown and the faith.";
    assert_true(check(state, "Why?", loop, "in-world").repetition);
    assert_false(check(state, "Why?", CLEAN, "in-world").repetition);
}

static void test_recital(void **state) {
    const char *bio = "Born into the noble house of Marlo, I mean to become Chancellor, to reform the Solar "
                      "Conclave and to lift up the Unblessed.";
    assert_true(check(state, "Do you like cheese?", bio, "off-topic").recital);
    /* sheet names the question itself brought up are an answer, not a recital */
    assert_false(check(state, "Do the Unblessed, the Conclave and the Chancellor like cheese?",
                       "The Unblessed, the Conclave and the Chancellor all like cheese, I expect.", "off-topic").recital);
    /* two sheet names are a touch of colour, three are the biography */
    assert_false(check(state, "Do you like cheese?", "By Solaris, I do; the Chancellor hoards it.", "off-topic").recital);
    /* in-world questions may call for the sheet */
    assert_false(check(state, "Why do you want the seat?", bio, "in-world").recital);
}

static void test_catchphrase(void **state) {
    assert_true(check(state, "Farewell!", "Go safely. May the dawn find you well!", "in-world").catchphrase);
    assert_false(check(state, "Farewell!", "Go safely, and mind the dawn chill.", "in-world").catchphrase);
}

static void test_tally(void **state) {
    lm_eval_tally t = {0};
    lm_eval_flags a = check(state, "Are you an AI?", "As an AI language model, no.", "adversarial");
    lm_eval_flags b = check(state, "Are you an AI?", "An engine of words? I am flesh, friend.", "adversarial");
    lm_eval_flags c = check(state, "What is a car?", "A cart without a horse? I have never seen one.", "protective");
    c.eos = false;   /* cut by max tokens: in character, but not a pass */
    lm_eval_tally_add(&t, &a, "adversarial");
    lm_eval_tally_add(&t, &b, "adversarial");
    lm_eval_tally_add(&t, &c, "protective");
    assert_int_equal(t.all.n, 3);
    assert_int_equal(t.all.in_character, 2);
    assert_int_equal(t.all.passed, 1);
    assert_int_equal(t.all.eos, 2);
    assert_int_equal(t.cat[LM_EVAL_CAT_ADVERSARIAL].n, 2);
    assert_int_equal(t.cat[LM_EVAL_CAT_ADVERSARIAL].passed, 1);
    assert_int_equal(t.cat[LM_EVAL_CAT_PROTECTIVE].passed, 0);
    assert_int_equal(lm_eval_category("off-topic"), LM_EVAL_CAT_OFF_TOPIC);
    assert_int_equal(lm_eval_category("nonsense"), LM_EVAL_CAT_IN_WORLD);
}

static void test_distinct(void **state) {
    (void)state;
    const char *same[] = {"the sun rises", "the sun rises"};
    assert_true(lm_eval_distinct(same, 2, 1) == 0.5);   /* 3 unique of 6 */
    assert_true(lm_eval_distinct(same, 2, 2) == 0.5);   /* 2 unique of 4 */
    const char *diff[] = {"the sun rises", "a moon sets"};
    assert_true(lm_eval_distinct(diff, 2, 2) == 1.0);
    assert_true(lm_eval_distinct(diff, 2, 4) == 0.0);   /* no 4-grams at all */
    const char *cased[] = {"The Sun", "the sun"};
    assert_true(lm_eval_distinct(cased, 2, 2) == 0.5);
}

static void test_persona_policy(void **state) {
    fixture *f = *state;
    lm_err err = {{0}};
    lm_scene sc = {"a baker's boy", "the market\nat noon"};
    char *s = lm_persona_system(f->c, NULL, LM_PERSONA_SHORT, &sc, &err);
    assert_non_null(s);
    assert_string_equal(s, "You are Orlando Marlo. Speak only as Orlando Marlo, in your own words.\n"
                           "You are talking with: a baker's boy\nPlace: the market at noon");
    free(s);
    s = lm_persona_system(f->c, NULL, LM_PERSONA_NONE, NULL, &err);
    assert_null(s);
    assert_string_equal(err.msg, "");
    s = lm_persona_system(f->c, NULL, LM_PERSONA_NONE, &sc, &err);
    assert_string_equal(s, "You are talking with: a baker's boy\nPlace: the market at noon");
    free(s);
    s = lm_persona_system(f->c, NULL, LM_PERSONA_FULL, NULL, &err);
    assert_non_null(s);
    assert_non_null(strstr(s, "Justice tempered with mercy"));
    assert_true(strlen(s) <= 3000);
    free(s);
    /* the hash follows the persona, not the scene */
    uint64_t h_short, h_full;
    assert_int_equal(lm_persona_hash(f->c, NULL, LM_PERSONA_SHORT, &h_short, &err), 0);
    assert_int_equal(lm_persona_hash(f->c, NULL, LM_PERSONA_FULL, &h_full, &err), 0);
    assert_true(h_short != h_full);
    assert_int_equal(lm_persona_mode_parse("short"), LM_PERSONA_SHORT);
    assert_int_equal(lm_persona_mode_parse("Short"), -1);
    assert_string_equal(lm_persona_mode_name(LM_PERSONA_FULL), "full");
}

/* Without a sheet there is nothing to recite and no catchphrase; the rest
 * still judges (found by fuzz_eval_questions: the recital check searched a
 * NULL term table). */
static void test_no_sheet(void **state) {
    (void)state;
    lm_err err = {{0}};
    lm_eval_checker *k = lm_eval_checker_new(NULL, &err);
    assert_non_null(k);
    lm_eval_flags f;
    lm_eval_check(k, "Hi", "Solaris, the Chancellor and the Unblessed say hello.", "off-topic", NULL, true, &f);
    assert_false(f.recital || f.catchphrase);
    lm_eval_check(k, "Hi", "As an AI language model, hello.", "off-topic", NULL, true, &f);
    assert_true(f.assistant);
    lm_eval_checker_free(k);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_clean_answer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_assistant_and_refusal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stage_and_intro, setup, teardown),
        cmocka_unit_test_setup_teardown(test_speaks_for_user, setup, teardown),
        cmocka_unit_test_setup_teardown(test_breaks_and_modern, setup, teardown),
        cmocka_unit_test_setup_teardown(test_repetition, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recital, setup, teardown),
        cmocka_unit_test_setup_teardown(test_catchphrase, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tally, setup, teardown),
        cmocka_unit_test(test_distinct),
        cmocka_unit_test(test_no_sheet),
        cmocka_unit_test_setup_teardown(test_persona_policy, setup, teardown),
    };
    return cmocka_run_group_tests_name("eval_metrics", tests, NULL, NULL);
}
