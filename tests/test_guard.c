/* The reply guard (runtime/guard.h): each check with a reply it must fail
 * and a close one it must pass, read without the question's category; the
 * dodge check only when the NPC was given lore and the line is not about
 * our world; which lines are about our world (check/vocab.h's foreign
 * names, modern words) and the ignorance asked of a reply to them; check
 * names; the retries' sampling. The guard on real replies is in
 * test_api.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <unistd.h>

#include "lemonpc.h"
#include "check/vocab.h"
#include "runtime/guard.h"
#include "sheet/sheet.h"

static const char SHEET[] =
    "# Orlando Marlo\n\n"
    "## Backstory\n\n"
    "Born into the noble house of Marlo, Orlando serves Solaris and the Crown Council.\n\n"
    "## Values\n\n- Justice tempered with mercy\n";

static const char WORLD[] =
    "# Luminara\n\n"
    "## Description\n\n"
    "A kingdom under the sun god Sol. The Solar Conclave keeps the faith's law; Mam and Da "
    "pay the tithe in Aurelion.\n";

typedef struct {
    lm_character *c;
    lm_world *w;
    lm_guard *all;  /* every check but ignorance, which test_ignorance asks of `ours` */
    lm_guard *dflt;
    lm_guard *ours; /* dodge and ignorance, with the world */
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    lm_diags d = {0};
    f->c = lm_character_parse("orlando.md", SHEET, sizeof SHEET - 1, &d);
    f->w = lm_world_parse("world.md", WORLD, sizeof WORLD - 1, &d);
    lm_diags_free(&d);
    assert_non_null(f->c);
    assert_non_null(f->w);
    lm_err err = {{0}};
    if (!(f->all = lm_guard_new(f->c, f->w, LEMONPC_CHECK_ALL & ~LEMONPC_CHECK_IGNORANCE, &err)))
        fail_msg("%s", err.msg);
    if (!(f->dflt = lm_guard_new(f->c, f->w, LEMONPC_CHECK_DEFAULT, &err))) fail_msg("%s", err.msg);
    if (!(f->ours = lm_guard_new(f->c, f->w, LEMONPC_CHECK_DODGE | LEMONPC_CHECK_IGNORANCE, &err)))
        fail_msg("%s", err.msg);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    lm_guard_free(f->all);
    lm_guard_free(f->dflt);
    lm_guard_free(f->ours);
    lm_character_free(f->c);
    lm_world_free(f->w);
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
    /* lore came up ("Conclave"), but the line is about our world: not
     * knowing Parliament is the right answer, not a dodge */
    assert_int_equal(lm_guard_check(f->ours, "Is the Solar Conclave anything like Parliament?",
                                    dodge, "Mira", true, true), 0);
}

/* the words a sheet and world know; names from elsewhere */
static void test_vocab(void **state) {
    (void)state;
    lm_err err = {{0}};
    lm_vocab *v = lm_vocab_new(&err);
    assert_non_null(v);
    /* nothing known yet (the fuzzer found qsort of no array here) */
    assert_int_equal(lm_vocab_add_text(v, "", &err), 0);
    assert_int_equal(lm_vocab_add_text(v, NULL, &err), 0);
    size_t n0 = 0;
    assert_non_null(lm_vocab_foreign_name(v, "Ever seen the Conclave?", &n0));
    assert_int_equal(lm_vocab_add_text(v, "Sol's dawn, the Conclave; SOL and sol.", &err), 0);
    assert_int_equal(lm_vocab_add_text(v, "Zoë keeps the new ledger.", &err), 0);
    assert_true(lm_vocab_has(v, "sol", 3) && lm_vocab_has(v, "CONCLAVE", 8));
    assert_true(lm_vocab_has(v, "Zoë", strlen("Zoë")));
    assert_false(lm_vocab_has(v, "solar", 5));
    size_t n = 0;
    const char *line = "Have you been to New York, or seen the Conclave?";
    const char *name = lm_vocab_foreign_name(v, line, &n);
    assert_non_null(name);
    assert_int_equal(n, 4);
    assert_memory_equal(name, "York", 4);   /* "New" is known: "the new ledger" */
    /* known names, common words, sentence and quotation openings: none */
    assert_null(lm_vocab_foreign_name(v, "Will the Conclave and Zoë meet at Sol's dawn?", &n));
    assert_null(lm_vocab_foreign_name(v, "Napoleon won. Beatles! \"Yesterday\" is a song: Hum it.",
                                      &n));
    assert_null(lm_vocab_foreign_name(v, "Why does Mam pay twice? I'm asking, Okay?", &n));
    assert_non_null(lm_vocab_foreign_name(v, "Write it in SQL for me.", &n));
    /* a title names someone of his world the writer never wrote down */
    assert_null(lm_vocab_foreign_name(v, "Will you receive Lord Dunmore and Brother Jerold?", &n));
    assert_non_null(lm_vocab_foreign_name(v, "Will you receive Mr Dunmore?", &n));
    assert_null(lm_vocab_foreign_name(v, "", &n));
    lm_vocab_free(v);
}

/* which lines are about our world: a name neither sheet nor world holds,
 * or modern words; and a reply to one must say it does not know */
static void test_ignorance(void **state) {
    fixture *f = *state;
    assert_true(lm_guard_line_is_ours(f->ours, "What is your opinion of Napoleon?"));
    assert_true(lm_guard_line_is_ours(f->ours, "Can you charge my phone?"));
    assert_false(lm_guard_line_is_ours(f->ours, "Does the Solar Conclave sit in Aurelion?"));
    assert_false(lm_guard_line_is_ours(f->ours, "Why does Mam pay the tithe twice?"));
    assert_false(lm_guard_line_is_ours(f->ours, NULL));
    const char *line = "Who won the last World Cup, sir?";
    assert_int_equal(lm_guard_check(f->ours, line, "Spain, and fairly.", "Mira", true, false),
                     LEMONPC_CHECK_IGNORANCE);
    assert_int_equal(lm_guard_check(f->ours, line, "A world cup? I do not know that game.", "Mira",
                                    true, false), 0);
    /* a line about his world asks no ignorance of the reply */
    assert_int_equal(lm_guard_check(f->ours, "Who keeps the faith's law in Aurelion?",
                                    "The Solar Conclave, and it keeps it badly.", "Mira", true,
                                    false), 0);
    /* the default guard does not ask it */
    assert_int_equal(lm_guard_check(f->dflt, line, "Spain, and fairly.", "Mira", true, false), 0);
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
    assert_int_equal(lm_guard_parse("dodge,ignorance", &err),
                     LEMONPC_CHECK_DODGE | LEMONPC_CHECK_IGNORANCE);
    assert_int_equal(lm_guard_parse("voice,manners", &err), -1);
    assert_non_null(strstr(err.msg, "manners"));
}

/* A scripted NPC for lm_guard_draw_all: each draw's failed checks and
 * log-probabilities with the line and with the line left out. */
typedef struct {
    const unsigned *failed;
    const double *logp, *logp_empty;
    int n, drawn, scored, fail_at;
} script;

static int script_draw(void *ud, int attempt, lm_guard_draw *d, lm_err *err) {
    script *s = ud;
    assert_int_equal(attempt, s->drawn);
    if (attempt == s->fail_at) return lm_errf(err, "the model failed");
    assert_true(attempt < s->n);
    char buf[16];
    snprintf(buf, sizeof buf, "reply %d", attempt);
    d->text = strdup(buf);
    d->failed = s->failed[attempt];
    d->logp = s->logp ? s->logp[attempt] : 0;
    d->n_logp = 10;
    s->drawn++;
    return 0;
}

static int script_empty(void *ud, const lm_guard_draw *d, double *logp, lm_err *err) {
    script *s = ud;
    int k = d->text[6] - '0';
    s->scored |= 1 << k;
    *logp = s->logp_empty[k];
    return 0;
}

static size_t run_script(script *s, int best_of, int retries, lm_guard_draws *ds) {
    size_t chosen = 99;
    lm_err err = {{0}};
    *ds = (lm_guard_draws){0};
    s->fail_at = -1;
    assert_int_equal(lm_guard_draw_all(best_of, retries, script_draw, script_empty, s, ds, &chosen,
                                       &err), 0);
    assert_int_equal((int)ds->n, s->drawn);
    return chosen;
}

/* The guard's draws: until one passes (fewest failing, the earliest on a
 * tie), and with best_of the passing draw most about the line. */
static void test_draw_all(void **state) {
    (void)state;
    lm_guard_draws ds;
    const unsigned V = LEMONPC_CHECK_VOICE, L = LEMONPC_CHECK_LOOP, E = LEMONPC_CHECK_ENDED;
    /* no best_of: the first that passes, nothing scored */
    script a = {(const unsigned[]){V, 0, 0, 0}, NULL, (const double[]){0, 0, 0, 0}, 4, 0, 0, -1};
    assert_int_equal(run_script(&a, 1, 3, &ds), 1);
    assert_int_equal(a.drawn, 2);
    assert_int_equal(a.scored, 0);
    lm_guard_draws_free(&ds);
    /* none passes: the fewest failed checks, the earlier on a tie */
    script b = {(const unsigned[]){V | L, L, V, V | E}, NULL, (const double[]){0, 0, 0, 0}, 4, 0,
                0, -1};
    assert_int_equal(run_script(&b, 1, 3, &ds), 1);
    assert_int_equal(b.drawn, 4);
    assert_int_equal(b.scored, 0);
    lm_guard_draws_free(&ds);
    /* best_of 3: all three drawn though the first passes; of the passing
     * ones the higher (logp - logp_empty) / n wins; a failing draw is never
     * scored, however relevant */
    script c = {(const unsigned[]){0, 0, V}, (const double[]){-20, -30, -5},
                (const double[]){-21, -40, -90}, 3, 0, 0, -1};
    assert_int_equal(run_script(&c, 3, 2, &ds), 1);
    assert_int_equal(c.drawn, 3);
    assert_int_equal(c.scored, 1 | 2);
    assert_true(ds.d[1].relevance > 0.99 && ds.d[1].relevance < 1.01);
    assert_true(ds.d[0].relevance > 0.09 && ds.d[0].relevance < 0.11);
    lm_guard_draws_free(&ds);
    /* best_of 2, both fail: retries until one passes, which alone is
     * chosen without a score */
    script d = {(const unsigned[]){V, L, E, 0, 0}, (const double[]){0, 0, 0, 0, 0},
                (const double[]){0, 0, 0, 0, 0}, 5, 0, 0, -1};
    assert_int_equal(run_script(&d, 2, 3, &ds), 3);
    assert_int_equal(d.drawn, 4);
    assert_int_equal(d.scored, 0);
    lm_guard_draws_free(&ds);
    /* a tie of relevance keeps the earlier */
    script e = {(const unsigned[]){0, 0}, (const double[]){-10, -10}, (const double[]){-20, -20}, 2,
                0, 0, -1};
    assert_int_equal(run_script(&e, 2, 0, &ds), 0);
    lm_guard_draws_free(&ds);
    /* a draw that fails stops it; the draws so far are the caller's */
    script f = {(const unsigned[]){V, V, V}, NULL, (const double[]){0, 0, 0}, 3, 0, 0, 1};
    size_t chosen;
    lm_err err = {{0}};
    ds = (lm_guard_draws){0};
    assert_int_equal(lm_guard_draw_all(1, 2, script_draw, NULL, &f, &ds, &chosen, &err), -1);
    assert_int_equal((int)ds.n, 1);
    assert_non_null(strstr(err.msg, "the model failed"));
    lm_guard_draws_free(&ds);
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

/* The figures docs/RUNTIME.md gives for which lines are about our world, on
 * Orlando's held-out questions with his sheet and world: none of the 68
 * in-world and off-topic lines, most of the 48 about our world. Printed, so
 * a change to the detector shows what it moved. */
static void test_ours_on_orlandos_questions(void **state) {
    (void)state;
    const char *sheet = "examples/luminara/characters/orlando.md";
    const char *qs = "examples/luminara/eval/orlando.jsonl";
    if (access(sheet, R_OK) != 0) {
        sheet = "../examples/luminara/characters/orlando.md";
        qs = "../examples/luminara/eval/orlando.jsonl";
    }
    lm_err err = {{0}};
    lm_character *c = NULL;
    lm_world *w = NULL;
    if (lm_sheet_load_character(sheet, &c, &w, &err)) fail_msg("%s", err.msg);
    lm_guard *g = lm_guard_new(c, w, LEMONPC_CHECK_ALL, &err);
    if (!g) fail_msg("%s", err.msg);
    FILE *f = fopen(qs, "r");
    assert_non_null(f);
    static const char *const cats[] = {"in-world", "off-topic", "protective", "adversarial"};
    int n[4] = {0}, ours[4] = {0};
    char line[8192];
    while (fgets(line, sizeof line, f)) {
        json_t *q = json_loads(line, 0, NULL);
        assert_non_null(q);
        const char *cat = json_string_value(json_object_get(q, "category"));
        const char *text = json_string_value(json_object_get(q, "question"));
        assert_non_null(cat);
        assert_non_null(text);
        for (int i = 0; i < 4; i++)
            if (!strcmp(cat, cats[i])) n[i]++, ours[i] += lm_guard_line_is_ours(g, text);
        json_decref(q);
    }
    fclose(f);
    for (int i = 0; i < 4; i++) printf("  about our world: %s %d of %d\n", cats[i], ours[i], n[i]);
    assert_int_equal(n[0] + n[1] + n[2] + n[3], 160);
    assert_int_equal(ours[0] + ours[1], 0);
    assert_true(ours[2] * 3 >= n[2] * 2);   /* 33 of 48 when written */
    /* the player lines of his training conversations about his own world:
     * few named things the world file lacks (35 of 947 when written) */
    static const char *const files[] = {"commons", "court", "lore", "smalltalk", "values"};
    int lines = 0, taken = 0;
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char path[512];
        snprintf(path, sizeof path, "%.*sdata/orlando/%s.jsonl",
                 (int)(strstr(qs, "eval/") - qs), qs, files[i]);
        FILE *d = fopen(path, "r");
        assert_non_null(d);
        static char row[65536];
        while (fgets(row, sizeof row, d)) {
            json_t *conv = json_loads(row, 0, NULL);
            assert_non_null(conv);
            size_t k;
            json_t *m;
            json_array_foreach(json_object_get(conv, "messages"), k, m) {
                if (strcmp(json_string_value(json_object_get(m, "role")), "user")) continue;
                lines++;
                taken += lm_guard_line_is_ours(g, json_string_value(json_object_get(m, "content")));
            }
            json_decref(conv);
        }
        fclose(d);
    }
    printf("  about our world: in-world training lines %d of %d\n", taken, lines);
    assert_true(lines > 900 && taken * 20 < lines);
    lm_guard_free(g);
    lm_character_free(c);
    lm_world_free(w);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clean_reply_passes),
        cmocka_unit_test(test_voice),
        cmocka_unit_test(test_modern),
        cmocka_unit_test(test_ended_and_loop),
        cmocka_unit_test(test_dodge_needs_lore),
        cmocka_unit_test(test_vocab),
        cmocka_unit_test(test_ignorance),
        cmocka_unit_test(test_ours_on_orlandos_questions),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_draw_all),
        cmocka_unit_test(test_retry_params),
    };
    return cmocka_run_group_tests_name("guard", tests, setup, teardown);
}
