/* A whole generation round against an in-process fake teacher (canned,
 * deterministic replies; some of them bad on purpose): the files, the
 * sample format, rejections with reasons, the split, statistics, the
 * same seed giving the same bytes, cancel + rerun giving exactly the
 * uninterrupted result without asking twice, and run.json guarding a
 * folder against a rerun with other options. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "datagen/pipeline.h"

/* ---- the fake teacher -------------------------------------------------- */

typedef struct {
    lm_teacher base;
    int calls;
    int cancel_after;                 /* > 0: set *cancel on that call */
    volatile sig_atomic_t *cancel;
} fake;

static uint64_t fnv(const char *s) {
    uint64_t h = 0xCBF29CE484222325ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001B3ull;
    return h;
}

static const char *const WORDS[] = {"dawn", "bread", "river", "sword", "council", "vineyard",
                                    "lantern", "harvest", "archive", "bell", "orchard", "road",
                                    "winter", "chapel", "market", "horse"};

/* Questions and answers built from a hash of the request, so replies are
 * varied (they must pass near-duplicate filtering) yet fixed per request. */
static int fake_complete(lm_teacher *t, const lm_chat_msg *m, size_t n, const lm_teacher_params *p,
                         char **reply, lm_err *err) {
    fake *f = (fake *)t;
    f->calls++;
    if (f->cancel_after > 0 && f->calls == f->cancel_after) *f->cancel = 1;
    const char *last = m[n - 1].content;
    uint64_t h = fnv(last) ^ (p && p->has_seed ? p->seed : 0);
    const char *a = WORDS[h % 16], *b = WORDS[(h >> 8) % 16], *c = WORDS[(h >> 16) % 16];
    const char *d = WORDS[(h >> 24) % 16];
    bool answer = strstr(m[0].content, "Answer their next message") != NULL;
    char buf[512];
    if (!answer) {
        switch (h % 10) {
        case 0: snprintf(buf, sizeof buf, "Question: Is the %s near the %s, and the %s by the %s?", a, b, c, d); break;
        case 1: snprintf(buf, sizeof buf, "   \n  "); break;                       /* nothing usable */
        default: snprintf(buf, sizeof buf, "Tell me, what of the %s and the %s, or the %s past the %s?", a, b, c, d);
        }
    } else {
        switch (h % 8) {
        case 0: snprintf(buf, sizeof buf, "As an AI language model, I cannot talk about the %s.", a); break;
        case 1: snprintf(buf, sizeof buf, "*smiles warmly* The %s is fine, friend, and so is the %s.", a, b); break;
        default:
            snprintf(buf, sizeof buf, "Orlando: The %s and the %s are dear to me, friend; I think of the %s at every %s.",
                     a, b, c, d);
        }
    }
    *reply = strdup(buf);
    return *reply ? 0 : lm_errf(err, "oom");
}

static void fake_free(lm_teacher *t) { (void)t; }
static const lm_teacher_vt fake_vt = {fake_complete, NULL, fake_free};

static void fake_init(fake *f) {
    memset(f, 0, sizeof *f);
    f->base.vt = &fake_vt;
    snprintf(f->base.name, sizeof f->base.name, "fake:canned");
}

/* ---- fixture ----------------------------------------------------------- */

typedef struct {
    lm_sheet_dir *sd;
    const lm_character *c;
    lm_prompt_set *tpl;
    char dir[64];
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    lm_diags d = {0};
    lm_err err = {{0}};
    f->sd = lm_sheet_dir_load("examples/luminara", &d);
    lm_diags_free(&d);
    if (!f->sd || !(f->c = lm_sheet_find(f->sd, "Orlando Marlo"))) return -1;
    if (!(f->tpl = lm_prompt_set_load("datagen/templates", &err))) return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/lm_pipeline_XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (getenv("LM_TEST_KEEP")) fprintf(stderr, "kept %s\n", f->dir);   /* to look at the files */
    else if (system(cmd)) return -1;
    lm_prompt_set_free(f->tpl);
    lm_sheet_dir_free(f->sd);
    free(f);
    return 0;
}

static char *slurp(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    size_t r = fread(s, 1, (size_t)n, fp);
    s[r] = 0;
    fclose(fp);
    return s;
}

static char *file_in(const char *dir, const char *sub, const char *name) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s/%s", dir, sub, name);
    return slurp(path);
}

static size_t count_lines(const char *s) {
    size_t n = 0;
    for (; s && *s; s++) n += *s == '\n';
    return n;
}

static int run_round(fixture *f, fake *t, const char *sub, size_t n, uint64_t seed,
                     lm_dg_system sys, volatile sig_atomic_t *cancel, lm_datagen_summary *s,
                     lm_err *err) {
    char out[256];
    snprintf(out, sizeof out, "%s/%s", f->dir, sub);
    lm_datagen_opts o = lm_datagen_opts_default();
    o.out_dir = out;
    o.n = n;
    o.seed = seed;
    o.system = sys;
    o.cancel = cancel;
    return lm_datagen_run(&t->base, f->c, f->sd->world, f->tpl, &o, s, err);
}

static void test_round(void **state) {
    fixture *f = *state;
    fake t;
    fake_init(&t);
    lm_datagen_summary s;
    lm_err err = {{0}};
    if (run_round(f, &t, "a", 60, 42, LM_DG_SYSTEM_NONE, NULL, &s, &err)) fail_msg("%s", err.msg);
    assert_false(s.cancelled);
    assert_int_equal(s.requested, 60);
    assert_int_equal(s.q_ok, 60);
    assert_int_equal(s.q_failed, 0);
    /* One teacher call per question and per question that survived. */
    assert_int_equal((size_t)t.calls, 60 + (60 - s.q_rejected));
    /* Every request ends up in exactly one place. */
    assert_int_equal(s.q_rejected + s.a_rejected + s.kept + s.a_failed, 60);
    assert_true(s.q_rejected > 0 && s.a_rejected > 0 && s.kept > 10);
    assert_int_equal(s.train + s.validation + s.test, s.kept);

    char *ds = file_in(f->dir, "a", "dataset.jsonl");
    char *rej = file_in(f->dir, "a", "rejected.jsonl");
    char *tr = file_in(f->dir, "a", "train.jsonl"), *va = file_in(f->dir, "a", "validation.jsonl");
    char *te = file_in(f->dir, "a", "test.jsonl"), *md = file_in(f->dir, "a", "stats.md");
    char *sj = file_in(f->dir, "a", "stats.json");
    assert_true(ds && rej && tr && va && te && md && sj);
    assert_int_equal(count_lines(ds), s.kept);
    assert_int_equal(count_lines(tr) + count_lines(va) + count_lines(te), s.kept);
    assert_int_equal(count_lines(rej), s.q_rejected + s.a_rejected);

    /* Sample lines: user then assistant, cleaned, with the metadata. */
    size_t kinds_seen = 0;
    for (char *line = strtok(ds, "\n"); line; line = strtok(NULL, "\n")) {
        json_error_t je;
        json_t *o = json_loads(line, 0, &je);
        assert_non_null(o);
        json_t *msgs = json_object_get(o, "messages"), *meta = json_object_get(o, "meta");
        assert_int_equal(json_array_size(msgs), 2);
        assert_string_equal(json_string_value(json_object_get(json_array_get(msgs, 0), "role")), "user");
        assert_string_equal(json_string_value(json_object_get(json_array_get(msgs, 1), "role")), "assistant");
        const char *q = json_string_value(json_object_get(json_array_get(msgs, 0), "content"));
        const char *a = json_string_value(json_object_get(json_array_get(msgs, 1), "content"));
        assert_null(strstr(q, "Question:"));      /* label cleaned */
        assert_true(strncmp(a, "Orlando:", 8));   /* label cleaned */
        assert_null(strstr(a, "As an AI"));       /* filtered */
        assert_null(strstr(a, "*smiles"));        /* filtered */
        const char *keys[] = {"asker", "emotion", "location", "kind", "teacher", "seed", "id"};
        for (size_t k = 0; k < 7; k++) assert_non_null(json_string_value(json_object_get(meta, keys[k])));
        assert_string_equal(json_string_value(json_object_get(meta, "teacher")), "fake:canned");
        assert_int_equal(json_integer_value(json_object_get(meta, "round")), 1);
        assert_true(json_array_size(json_object_get(meta, "filters_passed")) >= 5);
        kinds_seen |= 1u << lm_qkind_parse(json_string_value(json_object_get(meta, "kind")));
        json_decref(o);
    }
    assert_true(kinds_seen == 0xF);
    /* Rejections name the filter that caught them. */
    assert_non_null(strstr(rej, "\"assistant-speech\""));
    assert_non_null(strstr(rej, "\"stage-direction\""));
    assert_non_null(strstr(rej, "empty question"));
    /* Statistics agree with the summary. */
    json_error_t je;
    json_t *st = json_loads(sj, 0, &je);
    assert_non_null(st);
    json_t *counts = json_object_get(st, "counts");
    assert_int_equal(json_integer_value(json_object_get(counts, "kept")), s.kept);
    json_int_t by_kind = 0;
    const char *key;
    json_t *val;
    json_object_foreach(json_object_get(st, "kind"), key, val) by_kind += json_integer_value(val);
    assert_int_equal(by_kind, s.kept);
    double d1 = json_real_value(json_object_get(json_object_get(st, "diversity"), "question_distinct_1"));
    assert_true(d1 > 0 && d1 <= 1);
    json_decref(st);
    assert_non_null(strstr(md, "| **kept** |"));
    assert_non_null(strstr(md, "## rejection reason"));
    free(ds); free(rej); free(tr); free(va); free(te); free(md); free(sj);

    /* A rerun of a finished round asks nothing and writes the same bytes. */
    char *before = file_in(f->dir, "a", "dataset.jsonl");
    t.calls = 0;
    if (run_round(f, &t, "a", 60, 42, LM_DG_SYSTEM_NONE, NULL, &s, &err)) fail_msg("%s", err.msg);
    assert_int_equal(t.calls, 0);
    char *after = file_in(f->dir, "a", "dataset.jsonl");
    assert_string_equal(before, after);
    free(before);
    free(after);
    /* Another seed in the same folder is refused, naming run.json. */
    assert_int_equal(run_round(f, &t, "a", 60, 43, LM_DG_SYSTEM_NONE, NULL, &s, &err), -1);
    assert_non_null(strstr(err.msg, "run.json"));
    assert_non_null(strstr(err.msg, "seed"));
}

static void test_same_seed_same_bytes(void **state) {
    fixture *f = *state;
    fake t1, t2, t3;
    fake_init(&t1);
    fake_init(&t2);
    fake_init(&t3);
    lm_datagen_summary s;
    lm_err err = {{0}};
    if (run_round(f, &t1, "s1", 30, 9, LM_DG_SYSTEM_NONE, NULL, &s, &err)) fail_msg("%s", err.msg);
    if (run_round(f, &t2, "s2", 30, 9, LM_DG_SYSTEM_NONE, NULL, &s, &err)) fail_msg("%s", err.msg);
    if (run_round(f, &t3, "s3", 30, 10, LM_DG_SYSTEM_NONE, NULL, &s, &err)) fail_msg("%s", err.msg);
    char *a = file_in(f->dir, "s1", "dataset.jsonl"), *b = file_in(f->dir, "s2", "dataset.jsonl");
    char *c = file_in(f->dir, "s3", "dataset.jsonl");
    char *qa = file_in(f->dir, "s1", "questions.jsonl"), *qc = file_in(f->dir, "s3", "questions.jsonl");
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    assert_true(strlen(qa) > 0 && strcmp(qa, qc));
    free(a); free(b); free(c); free(qa); free(qc);
}

static void test_cancel_and_resume(void **state) {
    fixture *f = *state;
    lm_datagen_summary s;
    lm_err err = {{0}};
    fake ref;
    fake_init(&ref);
    if (run_round(f, &ref, "ref", 40, 5, LM_DG_SYSTEM_NONE, NULL, &s, &err)) fail_msg("%s", err.msg);
    size_t kept = s.kept;
    int total_calls = ref.calls;

    /* Stop during the questions, then during the answers, then finish. */
    volatile sig_atomic_t cancel = 0;
    fake t;
    fake_init(&t);
    t.cancel = &cancel;
    t.cancel_after = 15;
    assert_int_equal(run_round(f, &t, "res", 40, 5, LM_DG_SYSTEM_NONE, &cancel, &s, &err), 0);
    assert_true(s.cancelled);
    char path[256];
    snprintf(path, sizeof path, "%s/res/dataset.jsonl", f->dir);
    assert_int_not_equal(access(path, F_OK), 0);   /* nothing written half-way */
    int calls = t.calls;
    cancel = 0;
    t.calls = 0;
    t.cancel_after = 45;
    assert_int_equal(run_round(f, &t, "res", 40, 5, LM_DG_SYSTEM_NONE, &cancel, &s, &err), 0);
    assert_true(s.cancelled);
    calls += t.calls;
    cancel = 0;
    t.calls = 0;
    t.cancel_after = 0;
    if (run_round(f, &t, "res", 40, 5, LM_DG_SYSTEM_NONE, &cancel, &s, &err)) fail_msg("%s", err.msg);
    assert_false(s.cancelled);
    calls += t.calls;
    assert_int_equal(s.kept, kept);
    /* Requests in flight at a cancel are abandoned, not answered: with a
     * one-at-a-time teacher the call that cancels is the only one lost. */
    assert_true(calls >= total_calls && calls <= total_calls + 2);
    char *a = file_in(f->dir, "ref", "dataset.jsonl"), *b = file_in(f->dir, "res", "dataset.jsonl");
    assert_string_equal(a, b);
    free(a);
    free(b);
}

static void test_system_persona(void **state) {
    fixture *f = *state;
    fake t;
    fake_init(&t);
    lm_datagen_summary s;
    lm_err err = {{0}};
    if (run_round(f, &t, "sys", 12, 1, LM_DG_SYSTEM_PERSONA, NULL, &s, &err)) fail_msg("%s", err.msg);
    assert_true(s.kept > 0);
    char *ds = file_in(f->dir, "sys", "dataset.jsonl");
    json_error_t je;
    json_t *o = json_loadb(ds, strcspn(ds, "\n"), 0, &je);
    assert_non_null(o);
    json_t *m0 = json_array_get(json_object_get(o, "messages"), 0);
    assert_string_equal(json_string_value(json_object_get(m0, "role")), "system");
    assert_non_null(strstr(json_string_value(json_object_get(m0, "content")), "Orlando Marlo"));
    assert_int_equal(json_array_size(json_object_get(o, "messages")), 3);
    json_decref(o);
    free(ds);
}

static void test_distinct_n(void **state) {
    (void)state;
    /* Hand-counted: "a b a b" has unigrams {a,b} of 4, bigrams {ab,ba} of 3. */
    const char *t1[] = {"a b a b"};
    assert_true(lm_distinct_n(t1, 1, 1) == 0.5);
    assert_true(lm_distinct_n(t1, 1, 2) == 2.0 / 3.0);
    /* Case and punctuation do not make words distinct; n-grams do not
     * cross texts. */
    const char *t2[] = {"Dawn, dawn!", "DAWN"};
    assert_true(lm_distinct_n(t2, 2, 1) == 1.0 / 3.0);
    assert_true(lm_distinct_n(t2, 2, 2) == 1.0);
    assert_true(lm_distinct_n(NULL, 0, 1) == 0);
}

static void test_style_examples_load(void **state) {
    fixture *f = *state;
    char path[256];
    snprintf(path, sizeof path, "%s/promoted.jsonl", f->dir);
    FILE *fp = fopen(path, "w");
    fputs("{\"messages\":[{\"role\":\"user\",\"content\":\"Q1\"},{\"role\":\"assistant\",\"content\":\"A1\"}],\"meta\":{}}\n\n"
          "{\"messages\":[{\"role\":\"system\",\"content\":\"S\"},{\"role\":\"user\",\"content\":\"Q2\"},"
          "{\"role\":\"assistant\",\"content\":\"A2\"}]}\n", fp);
    fclose(fp);
    lm_style_example *v;
    size_t n;
    lm_err err = {{0}};
    assert_int_equal(lm_style_examples_load(path, &v, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(v[1].question, "Q2");
    assert_string_equal(v[1].answer, "A2");
    lm_style_examples_free(v, n);
    fp = fopen(path, "w");
    fputs("{\"messages\":[{\"role\":\"user\",\"content\":\"Q1\"}]}\n", fp);
    fclose(fp);
    assert_int_equal(lm_style_examples_load(path, &v, &n, &err), -1);
    assert_non_null(strstr(err.msg, "promoted.jsonl:1: messages"));
    fp = fopen(path, "w");
    fputs("{\"messages\": [\n", fp);
    fclose(fp);
    assert_int_equal(lm_style_examples_load(path, &v, &n, &err), -1);
    assert_non_null(strstr(err.msg, "promoted.jsonl:1:"));
}

/* The round's reading of a runner result file on resume: replies land at
 * their "q<index>" ids; strtoull alone took "q 5", "q+5" and "q-1" (found
 * writing fuzz/fuzz_datagen_journal.c), which the runner never writes. */
static void test_results_parse(void **state) {
    (void)state;
    char *r[4] = {0};
    lm_err err = {{0}};
    const char *ok = "{\"id\":\"q2\",\"reply\":\"two\"}\n{\"id\":\"q9\",\"reply\":\"past n\"}\n"
                     "{\"id\":\"q2\",\"reply\":\"again\"}";
    assert_int_equal(lm_datagen_results_parse("a.jsonl", ok, strlen(ok), "q", r, 4, &err), 0);
    assert_string_equal(r[2], "two");
    assert_null(r[0]);
    free(r[2]);
    r[2] = NULL;
    const char *bad[] = {"{\"id\":\"q 5\",\"reply\":\"x\"}", "{\"id\":\"q+1\",\"reply\":\"x\"}",
                         "{\"id\":\"q-1\",\"reply\":\"x\"}", "{\"id\":\"q\",\"reply\":\"x\"}",
                         "{\"id\":\"a1\",\"reply\":\"x\"}", "{\"id\":\"q1x\",\"reply\":\"x\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(lm_datagen_results_parse("a.jsonl", bad[i], strlen(bad[i]), "q", r, 4, &err), -1);
        if (!strstr(err.msg, "a.jsonl:1: id ")) fail_msg("%zu: %s", i, err.msg);
        for (int k = 0; k < 4; k++) assert_null(r[k]);
    }
    const char *notjson = "{\"id\":\"q1\",\"reply\":\"x\"}\nnot json\n";
    assert_int_equal(lm_datagen_results_parse("a.jsonl", notjson, strlen(notjson), "q", r, 4, &err), -1);
    assert_non_null(strstr(err.msg, "a.jsonl:2: invalid JSON at column"));
    const char *noid = "{\"id\":\"q1\",\"reply\":\"x\"}\n\n{\"reply\":\"x\"}\n";
    assert_int_equal(lm_datagen_results_parse("a.jsonl", noid, strlen(noid), "q", r, 4, &err), -1);
    assert_non_null(strstr(err.msg, "a.jsonl:3: not a runner result line"));
    free(r[1]);
    r[1] = NULL;
    free(r[1]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round),
        cmocka_unit_test(test_same_seed_same_bytes),
        cmocka_unit_test(test_cancel_and_resume),
        cmocka_unit_test(test_system_persona),
        cmocka_unit_test(test_distinct_n),
        cmocka_unit_test(test_style_examples_load),
        cmocka_unit_test(test_results_parse),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
