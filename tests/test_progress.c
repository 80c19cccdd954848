/* progress line: what it draws, rate limiting, silence without a stream.
 * The clock is the test's (lm_progress_begin_clock), so the rate limit, the
 * rate, the ETA and the elapsed time are checked exactly and nothing depends
 * on how busy the machine is. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "base/progress.h"

static double fake_t;
static double fake_now(void) { return fake_t; }

static size_t read_all(FILE *f, char *buf, size_t cap) {
    fflush(f);
    rewind(f);
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    return n;
}

static void test_draws_and_limits(void **state) {
    (void)state;
    FILE *f = tmpfile();
    assert_non_null(f);
    lm_progress p;
    fake_t = 100.0;
    lm_progress_begin_clock(&p, f, "quantize", 3, "tensors", fake_now);
    lm_progress_update(&p, 1, "blk.0.attn_q.weight"); /* the first update is drawn; no rate yet */
    fake_t = 100.05;
    lm_progress_update(&p, 2, "second");  /* 0.05 s after the last draw: not drawn */
    fake_t = 100.0999;
    lm_progress_update(&p, 2, "still");   /* just under 0.1 s: not drawn */
    fake_t = 102.0;
    lm_progress_update(&p, 2, "later");   /* drawn: 2 in 2 s, 1 left */
    fake_t = 102.01;
    lm_progress_update(&p, 3, "third");   /* not drawn */
    fake_t = 125.0;
    lm_progress_end(&p);                  /* 3 in 25 s */
    lm_progress_end(&p); /* no-op */
    char buf[2048];
    read_all(f, buf, sizeof buf);
    const char *want =
        "\rquantize  1/3 tensors   33%  0.0 tensors/s  ETA --:--  blk.0.attn_q.weight"
        "\rquantize  2/3 tensors   66%  1.0 tensors/s  ETA 0:01  later" "               "
        "\rquantize  3/3 tensors  100%  0.1 tensors/s  done in 0:25" "   \n";
    /* each line blanks what the one before it left over (74 - 59, 59 - 56) */
    assert_string_equal(buf, want);
    fclose(f);
}

/* The elapsed time and ETA formats: m:ss, h:mm:ss, and --:-- past 99 h. */
static void test_time_formats(void **state) {
    (void)state;
    char buf[1024];
    FILE *f = tmpfile();
    assert_non_null(f);
    lm_progress p;
    fake_t = 0.0;
    lm_progress_begin_clock(&p, f, "train", 1000, NULL, fake_now);
    fake_t = 3723.4;                      /* 1 step in 1:02:03: 999 left, 3719 h */
    lm_progress_update(&p, 1, NULL);
    fake_t = 3723.6;
    lm_progress_end(&p);                  /* rounds to 1:02:04 */
    read_all(f, buf, sizeof buf);
    assert_non_null(strstr(buf, "\rtrain  1/1000 steps    0%  0.0 steps/s  ETA --:--"));
    assert_non_null(strstr(buf, "  done in 1:02:04"));
    fclose(f);

    f = tmpfile();
    assert_non_null(f);
    fake_t = 10.0;
    lm_progress_begin_clock(&p, f, "x", 10, "u", fake_now);
    fake_t = 70.0;                        /* 4 in 60 s: 6 left at 1/15 per s = 1:30 */
    lm_progress_update(&p, 4, NULL);
    read_all(f, buf, sizeof buf);
    assert_string_equal(buf, "\rx  4/10 u   40%  0.1 u/s  ETA 1:30");
    fclose(f);
}

static void test_unknown_total_and_silent(void **state) {
    (void)state;
    FILE *f = tmpfile();
    assert_non_null(f);
    lm_progress p;
    fake_t = 5.0;
    lm_progress_begin_clock(&p, f, "generate", 0, NULL, fake_now);
    fake_t = 7.0;
    lm_progress_update(&p, 5, NULL);
    lm_progress_end(&p);
    char buf[1024];
    read_all(f, buf, sizeof buf);
    assert_string_equal(buf, "\rgenerate  5 steps  2.5 steps/s"
                             "\rgenerate  5 steps  2.5 steps/s  done in 0:02\n");
    fclose(f);
    lm_progress_begin_file(&p, NULL, "x", 10, "y"); /* silent: must simply not crash */
    lm_progress_update(&p, 4, "z");
    lm_progress_end(&p);
    assert_int_equal(p.done, 4);
}

/* No bar (not a terminal): updates print nothing, each milestone one plain
 * line to the log; on a bar a milestone redraws at once, rate limit or not. */
static void test_marks(void **state) {
    (void)state;
    FILE *log = tmpfile();
    assert_non_null(log);
    lm_progress p;
    fake_t = 1.0;
    lm_progress_begin_clock(&p, NULL, "train", 15, "steps", fake_now);
    p.log = log;
    lm_progress_update(&p, 3, "loss 2.0");
    lm_progress_mark(&p, 5, "epoch 1/3  loss 1.5");
    lm_progress_update(&p, 7, "loss 1.4");
    lm_progress_mark(&p, 10, NULL);
    lm_progress_end(&p);
    char buf[1024];
    read_all(log, buf, sizeof buf);
    assert_string_equal(buf, "train  5/15 steps  epoch 1/3  loss 1.5\ntrain  10/15 steps\n");
    fclose(log);

    FILE *f = tmpfile();
    lm_progress_begin_clock(&p, f, "train", 15, "steps", fake_now);
    lm_progress_update(&p, 1, NULL);          /* drawn: the first */
    lm_progress_update(&p, 2, NULL);          /* same instant: skipped */
    lm_progress_mark(&p, 3, "val 1.2");       /* same instant: drawn anyway */
    read_all(f, buf, sizeof buf);
    assert_non_null(strstr(buf, "3/15 steps"));
    assert_null(strstr(buf, "2/15 steps"));
    assert_non_null(strstr(buf, "val 1.2"));
    fclose(f);
}

/* The real clock: what is drawn must not depend on the time taken. */
static void test_real_clock(void **state) {
    (void)state;
    FILE *f = tmpfile();
    assert_non_null(f);
    lm_progress p;
    lm_progress_begin_file(&p, f, "quantize", 2, "tensors");
    lm_progress_update(&p, 1, "first");
    lm_progress_update(&p, 2, NULL);
    lm_progress_end(&p);
    char buf[1024];
    read_all(f, buf, sizeof buf);
    assert_true(strncmp(buf, "\rquantize  1/2 tensors   50%", 28) == 0);
    assert_non_null(strstr(buf, "first"));
    assert_non_null(strstr(buf, "\rquantize  2/2 tensors  100%"));
    assert_non_null(strstr(buf, "  done in "));
    assert_int_equal(buf[strlen(buf) - 1], '\n');
    int lines = 0;
    for (char *c = buf; *c; c++) lines += *c == '\n';
    assert_int_equal(lines, 1); /* redrawn in place, one newline at the end */
    fclose(f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_draws_and_limits),
        cmocka_unit_test(test_time_formats),
        cmocka_unit_test(test_unknown_total_and_silent),
        cmocka_unit_test(test_marks),
        cmocka_unit_test(test_real_clock),
    };
    return cmocka_run_group_tests_name("progress", tests, NULL, NULL);
}
