/* Question specs and prompts: determinism by seed and index, the kind mix,
 * askers and places from the world, prompts that carry the context but not
 * the whole backstory, and the cleaning of questions and answers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "datagen/answer.h"
#include "datagen/question.h"

typedef struct {
    lm_sheet_dir *sd;
    const lm_character *c;
    lm_prompt_set *tpl;
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    lm_diags d = {0};
    lm_err err = {{0}};
    f->sd = lm_sheet_dir_load("examples/luminara", &d);
    lm_diags_free(&d);
    if (!f->sd) return -1;
    f->c = lm_sheet_find(f->sd, "orlando");
    f->tpl = lm_prompt_set_load("datagen/templates", &err);
    if (!f->c || !f->tpl) return -1;
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    lm_prompt_set_free(f->tpl);
    lm_sheet_dir_free(f->sd);
    free(f);
    return 0;
}

static lm_qgen *gen(fixture *f, const char *mix, uint64_t seed) {
    lm_err err = {{0}};
    lm_qmix m = lm_qmix_default();
    if (mix) assert_int_equal(lm_qmix_parse(mix, &m, &err), 0);
    lm_qgen *g = lm_qgen_new(f->c, f->sd->world, f->tpl, &m, seed, &err);
    if (!g) fail_msg("%s", err.msg);
    return g;
}

static void test_mix_parse(void **state) {
    (void)state;
    lm_err err = {{0}};
    lm_qmix m;
    assert_int_equal(lm_qmix_parse("in-world=3,adversarial=1", &m, &err), 0);
    assert_true(m.w[LM_Q_IN_WORLD] == 3 && m.w[LM_Q_ADVERSARIAL] == 1 && m.w[LM_Q_OFF_TOPIC] == 0);
    char buf[256];
    lm_qmix_format(&m, buf, sizeof buf);
    assert_string_equal(buf, "in-world=0.75,off-topic=0,protective=0,adversarial=0.25");
    assert_int_equal(lm_qmix_parse("in-world=1,smalltalk=1", &m, &err), -1);
    assert_non_null(strstr(err.msg, "unknown kind 'smalltalk'"));
    assert_int_equal(lm_qmix_parse("in-world=-1", &m, &err), -1);
    assert_int_equal(lm_qmix_parse("in-world=abc", &m, &err), -1);
    assert_int_equal(lm_qmix_parse("in-world", &m, &err), -1);
    assert_int_equal(lm_qmix_parse("in-world=0,protective=0", &m, &err), -1);
    assert_non_null(strstr(err.msg, "every weight is 0"));
}

static void specs_equal(const lm_qspec *a, const lm_qspec *b) {
    assert_true(a->seed == b->seed);
    assert_int_equal(a->kind, b->kind);
    assert_string_equal(a->asker->name, b->asker->name);
    assert_string_equal(a->emotion, b->emotion);
    assert_string_equal(a->location, b->location);
    assert_string_equal(a->reason, b->reason);
    assert_string_equal(a->familiarity, b->familiarity);
    assert_int_equal(a->n_examples, b->n_examples);
    for (size_t i = 0; i < a->n_examples; i++) assert_string_equal(a->examples[i], b->examples[i]);
}

static void test_determinism(void **state) {
    fixture *f = *state;
    lm_qgen *a = gen(f, NULL, 7), *b = gen(f, NULL, 7), *c = gen(f, NULL, 8);
    size_t differ = 0;
    /* Drawing in another order gives the same specs: each one depends only
     * on (seed, index), so growing --n keeps the earlier requests. */
    for (size_t i = 0; i < 50; i++) {
        lm_qspec x, y, z;
        lm_qgen_draw(a, i, &x);
        lm_qgen_draw(b, 49 - i, &y);
        lm_qgen_draw(b, i, &y);
        specs_equal(&x, &y);
        lm_qgen_draw(c, i, &z);
        differ += x.seed != z.seed && (x.kind != z.kind || strcmp(x.asker->name, z.asker->name) ||
                                       strcmp(x.emotion, z.emotion));
        char *s1, *u1, *s2, *u2;
        lm_err err = {{0}};
        assert_int_equal(lm_qgen_messages(a, &x, &s1, &u1, &err), 0);
        assert_int_equal(lm_qgen_messages(b, &y, &s2, &u2, &err), 0);
        assert_string_equal(s1, s2);
        assert_string_equal(u1, u2);
        free(s1); free(u1); free(s2); free(u2);
    }
    assert_true(differ > 40);   /* another seed: other choices */
    lm_qgen_free(a);
    lm_qgen_free(b);
    lm_qgen_free(c);
}

static void test_mix_frequencies(void **state) {
    fixture *f = *state;
    lm_qgen *g = gen(f, NULL, 1);
    size_t cnt[LM_Q_KINDS] = {0}, n = 4000;
    for (size_t i = 0; i < n; i++) {
        lm_qspec s;
        lm_qgen_draw(g, i, &s);
        cnt[s.kind]++;
    }
    /* Default weights 0.6/0.15/0.15/0.1; 4000 draws: sd <= 31, so 5 sd < 160. */
    const double w[] = {0.6, 0.15, 0.15, 0.1};
    for (int k = 0; k < LM_Q_KINDS; k++) {
        double dev = (double)cnt[k] - w[k] * (double)n;
        if (dev < -160 || dev > 160) fail_msg("kind %d: %zu of %zu", k, cnt[k], n);
    }
    lm_qgen_free(g);
    g = gen(f, "adversarial=1", 1);
    for (size_t i = 0; i < 200; i++) {
        lm_qspec s;
        lm_qgen_draw(g, i, &s);
        assert_int_equal(s.kind, LM_Q_ADVERSARIAL);
        assert_string_equal(s.topic_type, "tactic");
        /* Examples come from the adversarial list of the template set. */
        for (size_t e = 0; e < s.n_examples; e++) {
            int found = 0;
            for (size_t j = 0; j < f->tpl->n_examples[LM_Q_ADVERSARIAL]; j++)
                found |= s.examples[e] == f->tpl->examples[LM_Q_ADVERSARIAL][j];
            assert_true(found);
            for (size_t e2 = 0; e2 < e; e2++) assert_ptr_not_equal(s.examples[e], s.examples[e2]);
        }
    }
    lm_qgen_free(g);
}

static void test_askers_and_places(void **state) {
    fixture *f = *state;
    lm_qgen *g = gen(f, NULL, 3);
    /* The world's important people are askers, never the character; Elena
     * carries the relationship text from Orlando's sheet. */
    int elena = 0, seraphina = 0;
    for (size_t i = 0; i < lm_qgen_n_askers(g); i++) {
        const lm_asker *a = lm_qgen_asker(g, i);
        assert_null(strstr(a->name, "Orlando"));
        if (!strcmp(a->name, "Elena Solwind")) {
            elena = 1;
            assert_string_equal(a->role, "the royal historian, keeper of the royal archives, scholarly and reserved");
            assert_non_null(a->relationship);
            assert_non_null(strstr(a->relationship, "trusted friend"));
        }
        seraphina |= !strcmp(a->name, "Seraphina the Seer");
        /* "Orlando's late father" asks nothing. */
        assert_string_not_equal(a->name, "Lord Edric Marlo");
    }
    assert_true(elena && seraphina);
    /* Someone with a relationship to the character never knows them "low". */
    for (size_t i = 0; i < 300; i++) {
        lm_qspec s;
        lm_qgen_draw(g, i, &s);
        if (s.asker->relationship) assert_string_not_equal(s.familiarity, "low");
    }
    /* Locations are the world's places. */
    const lm_world_section *places = lm_world_section_get(f->sd->world, "Places");
    for (size_t i = 0; i < 100; i++) {
        lm_qspec s;
        lm_qgen_draw(g, i, &s);
        int found = 0;
        for (size_t j = 0; j < places->n_entries; j++) found |= !strcmp(places->entries[j].name, s.location);
        assert_true(found);
    }
    lm_qgen_free(g);
}

static void test_prompt_content(void **state) {
    fixture *f = *state;
    lm_qgen *g = gen(f, "in-world=1,off-topic=1,protective=1,adversarial=1", 11);
    int seen[LM_Q_KINDS] = {0};
    for (size_t i = 0; i < 80; i++) {
        lm_qspec s;
        lm_qgen_draw(g, i, &s);
        char *sys, *user;
        lm_err err = {{0}};
        assert_int_equal(lm_qgen_messages(g, &s, &sys, &user, &err), 0);
        seen[s.kind] = 1;
        assert_non_null(strstr(sys, s.asker->name));
        assert_non_null(strstr(sys, s.emotion));
        assert_non_null(strstr(user, s.location));
        assert_non_null(strstr(user, s.reason));
        assert_non_null(strstr(user, "ONE short, direct question"));
        assert_non_null(strstr(user, "Do not restate"));
        /* The prototype's failure: the whole backstory in the prompt. Only
         * its first two sentences are given. */
        assert_non_null(strstr(user, "Born into the noble house of Marlo"));
        assert_null(strstr(user, "deathbed confession"));
        if (s.topic) assert_non_null(strstr(user, s.topic));
        if (s.kind == LM_Q_PROTECTIVE) assert_non_null(strstr(user, "another time and place"));
        if (s.kind == LM_Q_ADVERSARIAL) assert_non_null(strstr(user, "hostile or mocking"));
        for (size_t e = 0; e < s.n_examples; e++) assert_non_null(strstr(user, s.examples[e]));
        /* No template syntax leaks and no blank-line runs from block tags. */
        assert_null(strstr(user, "{{"));
        assert_null(strstr(sys, "{{"));
        assert_null(strstr(user, "\n\n\n"));
        char *meta = lm_qspec_meta_json(&s);
        assert_non_null(strstr(meta, lm_qkind_name(s.kind)));
        free(meta);
        free(sys);
        free(user);
    }
    for (int k = 0; k < LM_Q_KINDS; k++) assert_true(seen[k]);
    lm_qgen_free(g);
}

static void test_answer_prompt(void **state) {
    fixture *f = *state;
    lm_err err = {{0}};
    lm_style_example promoted[] = {{"Do you like wine?", "Only the Marlo red, and only at feasts."}};
    lm_agen *a = lm_agen_new(f->c, f->sd->world, f->tpl, promoted, 1, 0, 0, &err);
    if (!a) fail_msg("%s", err.msg);
    assert_int_equal(lm_agen_n_examples(a), f->c->n_examples + 1);
    lm_qgen *g = gen(f, "protective=1", 5);
    lm_qspec s;
    lm_qgen_draw(g, 0, &s);
    char *sys = lm_agen_system(a, &s, &err);
    if (!sys) fail_msg("%s", err.msg);
    assert_non_null(strstr(sys, "Orlando Marlo"));
    assert_non_null(strstr(sys, "May the dawn find you well."));          /* catchphrase */
    assert_non_null(strstr(sys, "Only the Marlo red"));                   /* promoted example, always shown */
    assert_non_null(strstr(sys, "No stage directions"));
    assert_non_null(strstr(sys, "Do not introduce yourself"));
    assert_non_null(strstr(sys, "does not exist in your world"));         /* protective rule */
    assert_non_null(strstr(sys, s.topic));
    assert_null(strstr(sys, "trying to make you break character"));       /* not adversarial */
    assert_null(strstr(sys, "{{"));
    /* Style examples are capped at 8 per request (the sheet has 10 + 1). */
    size_t shown = 0;
    for (const char *p = sys; (p = strstr(p, "\nExample ")); p++) shown++;
    assert_int_equal(shown, 8);
    free(sys);
    lm_agen_free(a);
    /* A byte budget drops examples (and caps the persona) until it fits;
     * the rules always stay. */
    size_t budgets[] = {6000, 4000, 2500};
    for (size_t b = 0; b < 3; b++) {
        a = lm_agen_new(f->c, f->sd->world, f->tpl, promoted, 1, 0, budgets[b], &err);
        sys = lm_agen_system(a, &s, &err);
        assert_non_null(sys);
        if (strlen(sys) > budgets[b]) fail_msg("%zu bytes over a %zu budget", strlen(sys), budgets[b]);
        assert_non_null(strstr(sys, "No stage directions"));
        assert_non_null(strstr(sys, "Orlando Marlo"));
        free(sys);
        lm_agen_free(a);
    }
    lm_qgen_free(g);
}

static void q_clean(const char *in, const char *want) {
    char why[128];
    char *out = lm_question_clean(in, "Elena Solwind", why, sizeof why);
    if (!want) {
        if (out) fail_msg("'%s' should be rejected, got '%s'", in ? in : "(null)", out);
        return;
    }
    if (!out) fail_msg("'%s' rejected: %s", in, why);
    assert_string_equal(out, want);
    free(out);
}

static void test_question_clean(void **state) {
    (void)state;
    q_clean("  What do you fear?  ", "What do you fear?");
    q_clean("Question: What do you fear?", "What do you fear?");
    q_clean("**Elena Solwind:** Why now?", "Why now?");
    q_clean("Elena: \"Why now?\"", "Why now?");
    q_clean("\xe2\x80\x9cWhy now?\xe2\x80\x9d", "Why now?");
    q_clean("*leans closer* Why do you\npray at dawn?", "Why do you pray at dawn?");
    /* The prototype's failure mode: a preamble paragraph, then the question. */
    q_clean("Orlando Marlo... a name well known.\n\nTell me, why the Cathedral?\n\nI await.",
            "Tell me, why the Cathedral?");
    q_clean("You are a fraud.", "You are a fraud.");
    q_clean("", NULL);
    q_clean("  \n\n ", NULL);
    q_clean("Question:", NULL);
    q_clean(NULL, NULL);
}

static void test_answer_clean(void **state) {
    (void)state;
    char why[128];
    char *a = lm_answer_clean("Orlando: \"I rise before the sun.\"", "Orlando Marlo", "Elena", why, sizeof why);
    assert_string_equal(a, "I rise before the sun.");
    free(a);
    a = lm_answer_clean("I rise early.\nUser: And then?\nOrlando: Then I pray.", "Orlando Marlo", "Elena",
                        why, sizeof why);
    assert_string_equal(a, "I rise early.");
    free(a);
    a = lm_answer_clean("I rise early.\nElena: Really?", "Orlando Marlo", "Elena Solwind", why, sizeof why);
    assert_string_equal(a, "I rise early.");
    free(a);
    a = lm_answer_clean("First line.\nSecond line stays.", "Orlando Marlo", "Elena", why, sizeof why);
    assert_string_equal(a, "First line.\nSecond line stays.");
    free(a);
    assert_null(lm_answer_clean("**Orlando:**   ", "Orlando Marlo", "Elena", why, sizeof why));
    assert_string_equal(why, "empty answer");
}

static void test_sentences(void **state) {
    (void)state;
    char *s = lm_dg_sentences("One. Two! Three? Four.", 2, 0);
    assert_string_equal(s, "One. Two!");
    free(s);
    s = lm_dg_sentences("No end", 2, 0);
    assert_string_equal(s, "No end");
    free(s);
    s = lm_dg_sentences("3.5 is a number. Next.", 1, 0);
    assert_string_equal(s, "3.5 is a number.");
    free(s);
    /* A byte cap never splits a UTF-8 sequence: "é" is 2 bytes at 1..2. */
    s = lm_dg_sentences("a\xc3\xa9" "bc", 1, 2);
    assert_string_equal(s, "a");
    free(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mix_parse),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_mix_frequencies),
        cmocka_unit_test(test_askers_and_places),
        cmocka_unit_test(test_prompt_content),
        cmocka_unit_test(test_answer_prompt),
        cmocka_unit_test(test_question_clean),
        cmocka_unit_test(test_answer_clean),
        cmocka_unit_test(test_sentences),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
