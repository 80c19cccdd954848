/* src/eval/blind: the blind review of two NPCs' answers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "eval/blind.h"

/* binomial tails written out by hand: 10-0 is 2/1024; 9-1 is 2 * 11/1024;
 * an even split and no pairs are 1 */
static void test_sign_test(void **state) {
    (void)state;
    assert_true(fabs(lm_sign_test_p(10, 0) - 2.0 / 1024) < 1e-12);
    assert_true(fabs(lm_sign_test_p(1, 9) - 22.0 / 1024) < 1e-12);
    assert_true(fabs(lm_sign_test_p(5, 5) - 1) < 1e-12);
    assert_true(fabs(lm_sign_test_p(0, 0) - 1) < 1e-12);
    /* 3-2: 2 * (1 + 5 + 10) / 32 = 1 */
    assert_true(fabs(lm_sign_test_p(3, 2) - 1) < 1e-12);
    /* 2-6: 2 * (1 + 8 + 28) / 256 */
    assert_true(fabs(lm_sign_test_p(2, 6) - 74.0 / 256) < 1e-12);
    assert_true(lm_sign_test_p(1000, 900) < 0.05 && lm_sign_test_p(1000, 990) > 0.05);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* Two eval folders answering q1..q4 (q3 alike on both); the questions file
 * the first report names, for the asker and the earlier turns. */
static void make_evals(const char *dir) {
    char p[512];
    snprintf(p, sizeof p, "%s/questions.jsonl", dir);
    write_text(p, "{\"id\": \"q1\", \"question\": \"Who rules?\", \"category\": \"in-world\", "
                  "\"asker\": \"a squire\"}\n"
                  "{\"id\": \"q2\", \"question\": \"What is a phone?\", \"category\": \"protective\"}\n"
                  "{\"id\": \"q3\", \"question\": \"Rain?\", \"category\": \"off-topic\"}\n"
                  "{\"id\": \"q4\", \"question\": \"And then?\", \"category\": \"in-world\", "
                  "\"history\": [{\"role\": \"user\", \"content\": \"Tell me of the king.\"}, "
                  "{\"role\": \"assistant\", \"content\": \"He is old.\"}]}\n");
    const char *sides[2] = {"A", "B"};
    for (int s = 0; s < 2; s++) {
        snprintf(p, sizeof p, "%s/ev%s", dir, sides[s]);
        assert_int_equal(mkdir(p, 0755), 0);
        snprintf(p, sizeof p, "%s/ev%s/report.json", dir, sides[s]);
        char rep[1024];
        snprintf(rep, sizeof rep, "{\"label\": \"npc %s\", \"questions\": \"%s/questions.jsonl\"}",
                 sides[s], dir);
        write_text(p, rep);
        snprintf(p, sizeof p, "%s/ev%s/answers.jsonl", dir, sides[s]);
        char ans[2048];
        snprintf(ans, sizeof ans,
                 "{\"id\": \"q1\", \"category\": \"in-world\", \"question\": \"Who rules?\", "
                 "\"answer\": \"The king, says %s.\"}\n"
                 "{\"id\": \"q2\", \"category\": \"protective\", \"question\": \"What is a phone?\", "
                 "\"answer\": \"Never heard of it, says %s.\"}\n"
                 "{\"id\": \"q3\", \"category\": \"off-topic\", \"question\": \"Rain?\", "
                 "\"answer\": \"Soon.\"}\n"
                 "{\"id\": \"q4\", \"category\": \"in-world\", \"question\": \"And then?\", "
                 "\"answer\": \"Then war, says %s.\"}\n",
                 sides[s], sides[s], sides[s]);
        write_text(p, ans);
    }
}

static json_t *load(const char *dir, const char *name) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    json_t *j = json_load_file(p, 0, NULL);
    assert_non_null(j);
    return j;
}

/* Only pairs that differ are shown, each reply under a side the key alone
 * knows, with the line's asker and earlier turns; a reader's verdicts are
 * counted for the NPC that wrote the reply chosen. */
static void test_write_and_tally(void **state) {
    (void)state;
    char dir[] = "/tmp/lm_blind_XXXXXX";
    assert_non_null(mkdtemp(dir));
    make_evals(dir);
    char a[512], b[512], out[512], p[600];
    snprintf(a, sizeof a, "%s/evA", dir);
    snprintf(b, sizeof b, "%s/evB", dir);
    snprintf(out, sizeof out, "%s/review", dir);
    lm_err err = {{0}};
    assert_int_equal(lm_blind_write(a, b, out, 7, &err), 0);
    json_t *key = load(out, "key.json");
    json_t *items = json_object_get(key, "items");
    assert_int_equal(json_array_size(items), 3);
    assert_int_equal(json_integer_value(json_object_get(key, "same")), 1);
    assert_string_equal(json_string_value(json_object_get(key, "a")), "npc A");
    /* the items as the reader sees them: no side named, context given */
    snprintf(p, sizeof p, "%s/items.jsonl", out);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    char line[4096];
    int n = 0, with_asker = 0, with_history = 0;
    char verdicts[1024] = "";
    while (fgets(line, sizeof line, f)) {
        json_t *it = json_loads(line, 0, NULL);
        assert_non_null(it);
        n++;
        assert_int_equal(json_integer_value(json_object_get(it, "item")), n);
        json_t *k = json_array_get(items, (size_t)n - 1);
        const char *first = json_string_value(json_object_get(k, "reply_1"));
        const char *r1 = json_string_value(json_object_get(it, "reply_1"));
        /* reply_1 is the side the key says */
        assert_non_null(strstr(r1, !strcmp(first, "a") ? "says A" : "says B"));
        assert_null(strstr(line, "npc A"));
        with_asker += json_object_get(it, "asker") != NULL;
        with_history += json_array_size(json_object_get(it, "history")) == 2;
        /* the reader prefers B's reply on every line but the first, a tie */
        char v[96];
        snprintf(v, sizeof v, "{\"item\": %d, \"better\": \"%s\", \"why\": \"x\"}\n", n,
                 n == 1 ? "tie" : !strcmp(first, "b") ? "1" : "2");
        strcat(verdicts, v);
        json_decref(it);
    }
    fclose(f);
    assert_int_equal(n, 3);
    assert_int_equal(with_asker, 1);
    assert_int_equal(with_history, 1);
    /* the same seed draws the same review */
    snprintf(p, sizeof p, "%s/review2", dir);
    assert_int_equal(lm_blind_write(a, b, p, 7, &err), 0);
    json_t *key2 = load(p, "key.json");
    assert_true(json_equal(json_object_get(key, "items"), json_object_get(key2, "items")));
    json_decref(key2);
    /* no verdicts yet: an error naming the file */
    assert_int_equal(lm_blind_tally(out, &err), -1);
    assert_non_null(strstr(err.msg, "verdicts.jsonl"));
    snprintf(p, sizeof p, "%s/verdicts.jsonl", out);
    write_text(p, verdicts);
    assert_int_equal(lm_blind_tally(out, &err), 0);
    json_t *v = load(out, "verdict.json");
    assert_int_equal(json_integer_value(json_object_get(v, "wins_a")), 0);
    assert_int_equal(json_integer_value(json_object_get(v, "wins_b")), 2);
    assert_int_equal(json_integer_value(json_object_get(v, "ties")), 1);
    assert_int_equal(json_integer_value(json_object_get(v, "same")), 1);
    json_t *off = json_object_get(json_object_get(v, "by_category"), "off-topic");
    assert_int_equal(json_integer_value(json_object_get(off, "same")), 1);
    json_decref(v);
    /* a verdict missing, twice, or not 1, 2 or tie: errors naming it */
    const char *bad[][2] = {
        {"{\"item\": 1, \"better\": \"1\"}\n{\"item\": 2, \"better\": \"2\"}\n", "item 3"},
        {"{\"item\": 1, \"better\": \"1\"}\n{\"item\": 1, \"better\": \"2\"}\n", "twice"},
        {"{\"item\": 1, \"better\": \"both\"}\n", "\"better\""},
        {"{\"item\": 9, \"better\": \"1\"}\n", "from 1 to 3"},
        {"{\"item\": 1, \"better\": \"1\"\n", "verdicts.jsonl:1"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_text(p, bad[i][0]);
        assert_int_equal(lm_blind_tally(out, &err), -1);
        if (!strstr(err.msg, bad[i][1])) fail_msg("%s: %s", bad[i][1], err.msg);
    }
    /* two folders that answered different questions are not a review */
    snprintf(p, sizeof p, "%s/answers.jsonl", b);
    write_text(p, "{\"id\": \"q9\", \"category\": \"in-world\", \"question\": \"?\", \"answer\": \"!\"}\n");
    assert_int_equal(lm_blind_write(a, b, out, 7, &err), -1);
    assert_non_null(strstr(err.msg, "q9"));
    json_decref(key);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sign_test),
        cmocka_unit_test(test_write_and_tally),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
