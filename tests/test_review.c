/* Review decisions store: replay/resume, undo, edits, promote file, export,
 * torn and bad decision lines, ids. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "datagen/review.h"

#include "helpers.h"

typedef struct {
    char dir[64];
    char ds[128], dec[128], prom[128], out[128];
} paths;

static const char *QS[] = {"Where were you born?", "What do you fear?", "Do you like wine?", "Who is the king?"};
static const char *AS[] = {"In the house of Marlo.", "Only the silence of Solaris.", "A cup, at feasts.", "Aldric, fourth of his name."};

static char *read_file(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    char *s = NULL;
    size_t n = 0;
    FILE *m = open_memstream(&s, &n);
    int c;
    while ((c = fgetc(f)) != EOF) fputc(c, m);
    fclose(m), fclose(f);
    return s;
}

static int setup(void **state) {
    paths *p = calloc(1, sizeof *p);
    strcpy(p->dir, "/tmp/lm_review_XXXXXX");
    assert_non_null(mkdtemp(p->dir));
    snprintf(p->ds, sizeof p->ds, "%s/set.jsonl", p->dir);
    snprintf(p->dec, sizeof p->dec, "%s/set.decisions.jsonl", p->dir);
    snprintf(p->prom, sizeof p->prom, "%s/set.promoted.jsonl", p->dir);
    snprintf(p->out, sizeof p->out, "%s/out.jsonl", p->dir);
    FILE *f = fopen(p->ds, "w");
    for (int i = 0; i < 4; i++) {
        json_t *o = json_pack("{s:[{s:s,s:s},{s:s,s:s}], s:{s:s, s:[s]}}", "messages", "role", "user", "content", QS[i],
                              "role", "assistant", "content", AS[i], "meta", "kind", "in-world", "filter_notes",
                              "length: fine");
        char *s = json_dumps(o, JSON_COMPACT);
        fprintf(f, "%s\n", s);
        free(s), json_decref(o);
    }
    fclose(f);
    *state = p;
    return 0;
}

static int teardown(void **state) {
    paths *p = *state;
    th_rm_rf(p->dir);
    free(p);
    return 0;
}

static lm_review *open_ok(const paths *p) {
    lm_err err = {{0}};
    lm_review *r = lm_review_open(p->ds, NULL, &err);
    if (!r) fail_msg("%s", err.msg);
    return r;
}

static void test_resume_and_counts(void **state) {
    paths *p = *state;
    lm_err err = {{0}};
    lm_review *r = open_ok(p);
    assert_int_equal(lm_review_count(r), 4);
    assert_string_equal(lm_review_decisions_path(r), p->dec);
    assert_string_equal(lm_review_get(r, 2)->question, QS[2]);
    assert_string_equal(lm_review_get(r, 2)->notes, "length: fine");
    assert_int_equal(lm_review_get(r, 3)->line, 4);
    assert_int_equal(lm_review_next_undecided(r, 0), 0);
    assert_int_equal(lm_review_decide(r, 0, LM_REVIEW_ACCEPT, NULL, &err), 0);
    assert_int_equal(lm_review_decide(r, 1, LM_REVIEW_REJECT, NULL, &err), 0);
    lm_review_close(r);
    /* every key press is already on disk */
    char *log = read_file(p->dec);
    assert_non_null(strstr(log, "\"action\":\"accept\""));
    assert_non_null(strstr(log, "\"action\":\"reject\""));
    free(log);
    r = open_ok(p);
    assert_int_equal(lm_review_next_undecided(r, 0), 2);
    lm_review_counts c = lm_review_tally(r);
    assert_int_equal(c.accepted, 1);
    assert_int_equal(c.rejected, 1);
    assert_int_equal(c.undecided, 2);
    assert_int_equal(lm_review_get(r, 0)->state, LM_REVIEW_ACCEPTED);
    assert_int_equal(lm_review_get(r, 1)->state, LM_REVIEW_REJECTED);
    /* wraps around to earlier undecided samples */
    assert_int_equal(lm_review_decide(r, 2, LM_REVIEW_ACCEPT, NULL, &err), 0);
    assert_int_equal(lm_review_decide(r, 3, LM_REVIEW_ACCEPT, NULL, &err), 0);
    assert_int_equal(lm_review_next_undecided(r, 3), -1);
    lm_review_close(r);
}

static void test_undo(void **state) {
    paths *p = *state;
    lm_err err = {{0}};
    lm_review *r = open_ok(p);
    long w;
    assert_int_equal(lm_review_undo(r, &w, &err), 0);
    assert_int_equal(w, -1);
    assert_int_equal(lm_review_decide(r, 0, LM_REVIEW_REJECT, NULL, &err), 0);
    assert_int_equal(lm_review_decide(r, 0, LM_REVIEW_ACCEPT, NULL, &err), 0); /* changed my mind */
    assert_int_equal(lm_review_decide(r, 1, LM_REVIEW_EDIT, "Fire.", &err), 0);
    assert_int_equal(lm_review_undo(r, &w, &err), 0);
    assert_int_equal(w, 1);
    assert_int_equal(lm_review_get(r, 1)->state, LM_REVIEW_UNDECIDED);
    assert_string_equal(lm_review_get(r, 1)->answer, AS[1]);
    assert_int_equal(lm_review_undo(r, &w, &err), 0);
    assert_int_equal(w, 0);
    assert_int_equal(lm_review_get(r, 0)->state, LM_REVIEW_REJECTED); /* back to the earlier decision */
    lm_review_close(r);
    r = open_ok(p); /* the undos replay the same way */
    assert_int_equal(lm_review_get(r, 0)->state, LM_REVIEW_REJECTED);
    assert_int_equal(lm_review_get(r, 1)->state, LM_REVIEW_UNDECIDED);
    assert_int_equal(lm_review_next_undecided(r, 0), 1);
    lm_review_close(r);
}

static void test_edit_promote_export(void **state) {
    paths *p = *state;
    lm_err err = {{0}};
    lm_review *r = open_ok(p);
    char id1[33];
    strcpy(id1, lm_review_get(r, 1)->id);
    assert_int_equal(lm_review_decide(r, 0, LM_REVIEW_ACCEPT, NULL, &err), 0);
    assert_int_equal(lm_review_decide(r, 1, LM_REVIEW_EDIT, "Only \"silence\",\nfriend.", &err), 0);
    assert_int_equal(lm_review_decide(r, 2, LM_REVIEW_REJECT, NULL, &err), 0);
    assert_int_equal(lm_review_decide(r, 3, LM_REVIEW_PROMOTE, NULL, &err), 0);
    assert_int_equal(lm_review_decide(r, 1, LM_REVIEW_PROMOTE, NULL, &err), 0);
    lm_review_close(r);

    r = open_ok(p);
    const lm_review_item *it = lm_review_get(r, 1);
    assert_string_equal(it->id, id1); /* edits do not change the id */
    assert_true(it->edited && it->promoted);
    assert_string_equal(it->answer, "Only \"silence\",\nfriend.");
    assert_string_equal(it->original, AS[1]);
    lm_review_counts c = lm_review_tally(r);
    assert_int_equal(c.accepted, 3);
    assert_int_equal(c.edited, 1);
    assert_int_equal(c.promoted, 2);
    size_t n;
    assert_int_equal(lm_review_export(r, p->out, &n, &err), 0);
    assert_int_equal(n, 3);
    lm_review_close(r);

    /* the export: samples 0, 1 (edited), 3, in dataset order */
    FILE *f = fopen(p->out, "r");
    char line[1024];
    const char *want_a[] = {AS[0], "Only \"silence\",\nfriend.", AS[3]};
    const char *want_rev[] = {"accepted", "promoted", "promoted"};
    for (int i = 0; i < 3; i++) {
        assert_non_null(fgets(line, sizeof line, f));
        json_t *o = json_loads(line, 0, NULL);
        assert_non_null(o);
        json_t *msgs = json_object_get(o, "messages");
        assert_string_equal(json_string_value(json_object_get(json_array_get(msgs, 1), "content")), want_a[i]);
        assert_string_equal(json_string_value(json_object_get(json_object_get(o, "meta"), "review")), want_rev[i]);
        assert_string_equal(json_string_value(json_object_get(json_object_get(o, "meta"), "kind")), "in-world");
        json_decref(o);
    }
    assert_null(fgets(line, sizeof line, f));
    fclose(f);

    /* promoted file: 1 and 3, with ids */
    char *prom = read_file(p->prom);
    assert_non_null(prom);
    assert_non_null(strstr(prom, id1));
    assert_non_null(strstr(prom, "Aldric, fourth"));
    assert_null(strstr(prom, "In the house of Marlo"));
    free(prom);

    /* undoing the promotion rewrites the promoted file */
    r = open_ok(p);
    long w;
    assert_int_equal(lm_review_undo(r, &w, &err), 0);
    assert_int_equal(w, 1);
    assert_true(lm_review_get(r, 1)->edited);
    assert_false(lm_review_get(r, 1)->promoted);
    prom = read_file(p->prom);
    assert_null(strstr(prom, id1));
    assert_non_null(strstr(prom, "Aldric, fourth"));
    free(prom);
    lm_review_close(r);
}

static void test_torn_and_bad_lines(void **state) {
    paths *p = *state;
    lm_err err = {{0}};
    lm_review *r = open_ok(p);
    char id0[33];
    strcpy(id0, lm_review_get(r, 0)->id);
    lm_review_close(r);
    char text[512];
    /* a crash mid-write leaves a fragment: dropped, and cut off the file */
    snprintf(text, sizeof text, "{\"id\":\"%s\",\"action\":\"accept\"}\n{\"id\":\"%s\",\"act", id0, id0);
    th_write_text(p->dec, text);
    r = open_ok(p);
    assert_int_equal(lm_review_get(r, 0)->state, LM_REVIEW_ACCEPTED);
    assert_int_equal(lm_review_decide(r, 1, LM_REVIEW_ACCEPT, NULL, &err), 0);
    lm_review_close(r);
    char *log = read_file(p->dec);
    /* two whole lines: the fragment was cut before the new decision */
    int lines = 0;
    for (char *save = NULL, *l = strtok_r(log, "\n", &save); l; l = strtok_r(NULL, "\n", &save), lines++) {
        json_t *o = json_loads(l, 0, NULL);
        if (!o) fail_msg("decisions line %d is not JSON: %s", lines + 1, l);
        json_decref(o);
    }
    assert_int_equal(lines, 2);
    r = open_ok(p);
    assert_int_equal(lm_review_get(r, 1)->state, LM_REVIEW_ACCEPTED);
    lm_review_close(r);
    free(log);
    /* a bad complete line is an error naming path:line */
    snprintf(text, sizeof text, "{\"id\":\"%s\",\"action\":\"accept\"}\n{\"id\":\"x\",\"action\":\"maybe\"}\n", id0);
    th_write_text(p->dec, text);
    assert_null(lm_review_open(p->ds, NULL, &err));
    char want[200];
    snprintf(want, sizeof want, "%s:2:", p->dec);
    if (!strstr(err.msg, want)) fail_msg("%s", err.msg);
    /* unknown ids are kept (another dataset version) and ignored */
    th_write_text(p->dec, "{\"id\":\"0000000000000000\",\"action\":\"reject\"}\n");
    r = open_ok(p);
    assert_int_equal(lm_review_tally(r).undecided, 4);
    lm_review_close(r);
    /* a dataset line that is not a chat sample (no answer to review) */
    th_write_text(p->out, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}\n");
    assert_null(lm_review_open(p->out, p->dec, &err));
    snprintf(want, sizeof want, "%s:1: messages: no assistant message", p->out);
    if (!strstr(err.msg, want)) fail_msg("%s", err.msg);
    /* the pipeline's rejected samples carry reasons as {filter, reason} */
    th_write_text(p->out, "{\"messages\":[{\"role\":\"user\",\"content\":\"Q\"},{\"role\":\"assistant\","
                       "\"content\":\"A\"}],\"meta\":{\"reasons\":[{\"filter\":\"length\",\"reason\":"
                       "\"answer has 1 words (min 3)\"},{\"filter\":\"x\",\"reason\":\"y\"}]}}\n");
    lm_review *r2 = lm_review_open(p->out, p->dec, &err);
    assert_non_null(r2);
    assert_string_equal(lm_review_get(r2, 0)->notes, "length: answer has 1 words (min 3); x: y");
    lm_review_close(r2);
    assert_null(lm_review_open("/nonexistent/x.jsonl", NULL, &err));
    assert_non_null(strstr(err.msg, "/nonexistent/x.jsonl"));
}

static void test_ids(void **state) {
    paths *p = *state;
    lm_err err = {{0}};
    th_write_text(p->out,
               "{\"messages\":[{\"role\":\"user\",\"content\":\"Q\"},{\"role\":\"assistant\",\"content\":\"A\"}]}\n"
               "{\"messages\":[{\"role\":\"user\",\"content\":\"Q\"},{\"role\":\"assistant\",\"content\":\"A\"}]}\n"
               "{\"messages\":[{\"role\":\"user\",\"content\":\"Q\"},{\"role\":\"assistant\",\"content\":\"A\"}],"
               "\"meta\":{\"id\":\"q-0042\"}}\n");
    char dec[160];
    snprintf(dec, sizeof dec, "%s/other.decisions.jsonl", p->dir);
    lm_review *r = lm_review_open(p->out, dec, &err);
    assert_non_null(r);
    /* FNV-1a 64 of "Q\x1f" "A", computed independently:
     * python3 -c "h=0xcbf29ce484222325\nfor b in b'Q\x1fA': h=((h^b)*0x100000001b3)%2**64\nprint('%016x'%h)" */
    assert_string_equal(lm_review_get(r, 0)->id, "85455019ef5f0288");
    assert_string_equal(lm_review_get(r, 1)->id, "85455019ef5f0288-2");
    assert_string_equal(lm_review_get(r, 2)->id, "q-0042");
    assert_int_equal(lm_review_decide(r, 1, LM_REVIEW_REJECT, NULL, &err), 0);
    lm_review_close(r);
    r = lm_review_open(p->out, dec, &err);
    assert_int_equal(lm_review_get(r, 0)->state, LM_REVIEW_UNDECIDED);
    assert_int_equal(lm_review_get(r, 1)->state, LM_REVIEW_REJECTED);
    lm_review_close(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_resume_and_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_undo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_edit_promote_export, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_and_bad_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ids, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
