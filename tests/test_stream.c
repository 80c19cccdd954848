/* The reply stream (runtime/stream.h): what a game receives piece by piece
 * is valid UTF-8, never shows the start of a stop string that then ends the
 * reply, and adds up to exactly the returned reply. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/utf8.h"
#include "runtime/stream.h"

typedef struct sink {
    char buf[1024];
    size_t n;
    int calls;
    int stop_after;   /* > 0: the callback cancels on this call */
} sink;

static int collect(void *ud, const char *t, size_t n) {
    sink *s = ud;
    assert_true(n > 0);
    assert_true(s->n + n < sizeof s->buf);
    memcpy(s->buf + s->n, t, n);
    s->n += n;
    s->buf[s->n] = '\0';
    s->calls++;
    return s->stop_after && s->calls >= s->stop_after;
}

/* Valid UTF-8 with no NUL (what every emitted piece must be). */
static int valid_utf8(const char *s, size_t n) {
    return lm_utf8_check(s, n) == n && !memchr(s, 0, n);
}

static char *run(const char *const *pieces, size_t np, const char *const *stop, size_t ns,
                 sink *k) {
    lm_stream st;
    lm_err err = {{0}};
    lm_stream_init(&st, stop, ns, collect, k);
    for (size_t i = 0; i < np; i++) {
        size_t before = k->n;
        assert_int_equal(lm_stream_push(&st, pieces[i], strlen(pieces[i]), &err), 0);
        assert_true(valid_utf8(k->buf + before, k->n - before));
    }
    assert_int_equal(lm_stream_finish(&st, &err), 0);
    char *r = lm_stream_take(&st);
    lm_stream_free(&st);
    assert_non_null(r);
    return r;
}

static void test_split_characters_wait_for_their_end(void **state) {
    (void)state;
    /* "né €" with é and € cut between tokens */
    const char *pieces[] = {"n", "\xC3", "\xA9 ", "\xE2\x82", "\xAC!"};
    sink k = {0};
    char *r = run(pieces, 5, NULL, 0, &k);
    assert_string_equal(r, "n\xC3\xA9 \xE2\x82\xAC!");
    assert_string_equal(k.buf, r);
    free(r);
}

static void test_invalid_bytes_become_replacement(void **state) {
    (void)state;
    const char *pieces[] = {"a\xFF", "b", "\xC3(", "\xE2\x82"};  /* last: incomplete at the end */
    sink k = {0};
    char *r = run(pieces, 4, NULL, 0, &k);
    assert_string_equal(r, "a\xEF\xBF\xBD" "b\xEF\xBF\xBD(");
    assert_string_equal(k.buf, r);
    free(r);
}

/* Well-formed means no overlong forms, surrogates or code points above
 * U+10FFFF either: a game (or jansson) would reject them. */
static void test_ill_formed_sequences_become_replacement(void **state) {
    (void)state;
    const char *pieces[] = {"a\xED\xA0", "\x80", "b\xC0\xAF", "\xF4\x90\x80\x80" "c", "\xF0\x9F"};
    sink k = {0};
    char *r = run(pieces, 5, NULL, 0, &k);
    assert_string_equal(r, "a\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD" "b\xEF\xBF\xBD\xEF\xBF\xBD"
                           "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD" "c");
    assert_string_equal(k.buf, r);
    free(r);
}

static void test_stop_string_across_pieces_never_shown(void **state) {
    (void)state;
    const char *stop[] = {"\nMira:", "\nUser:"};
    const char *pieces[] = {"Go in peace.", "\n", "Mi", "ra", ": thanks", " more"};
    sink k = {0};
    char *r = run(pieces, 6, stop, 2, &k);
    assert_string_equal(r, "Go in peace.");
    assert_string_equal(k.buf, r);
    assert_null(strchr(k.buf, '\n'));
    free(r);
}

static void test_stop_inside_one_piece(void **state) {
    (void)state;
    const char *stop[] = {"\nUser:"};
    const char *pieces[] = {"Yes.\nUser: and you?"};
    sink k = {0};
    char *r = run(pieces, 1, stop, 1, &k);
    assert_string_equal(r, "Yes.");
    assert_string_equal(k.buf, "Yes.");
    free(r);
}

static void test_near_miss_is_released(void **state) {
    (void)state;
    const char *stop[] = {"\nMira:"};
    const char *pieces[] = {"Ask", "\nMir", "acles happen."};
    sink k = {0};
    char *r = run(pieces, 3, stop, 1, &k);
    assert_string_equal(r, "Ask\nMiracles happen.");
    assert_string_equal(k.buf, r);
    free(r);
}

static void test_callback_cancels(void **state) {
    (void)state;
    lm_stream st;
    lm_err err = {{0}};
    sink k = {.stop_after = 1};
    lm_stream_init(&st, NULL, 0, collect, &k);
    assert_int_equal(lm_stream_push(&st, "one ", 4, &err), -1);
    assert_true(st.cancelled);
    assert_non_null(strstr(err.msg, "cancel"));
    assert_int_equal(lm_stream_push(&st, "two", 3, &err), 0);   /* dropped */
    assert_int_equal(k.calls, 1);
    lm_stream_free(&st);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_characters_wait_for_their_end),
        cmocka_unit_test(test_invalid_bytes_become_replacement),
        cmocka_unit_test(test_ill_formed_sequences_become_replacement),
        cmocka_unit_test(test_stop_string_across_pieces_never_shown),
        cmocka_unit_test(test_stop_inside_one_piece),
        cmocka_unit_test(test_near_miss_is_released),
        cmocka_unit_test(test_callback_cancels),
    };
    return cmocka_run_group_tests_name("stream", tests, NULL, NULL);
}
