/* progress line: what it draws, rate limiting, silence without a stream. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "base/progress.h"

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
    lm_progress_begin_file(&p, f, "quantize", 3, "tensors");
    lm_progress_update(&p, 1, "blk.0.attn_q.weight");
    lm_progress_update(&p, 2, "second");  /* within 0.1 s of the first: not drawn */
    lm_progress_update(&p, 3, "third");
    lm_progress_end(&p);
    lm_progress_end(&p); /* no-op */
    char buf[2048];
    read_all(f, buf, sizeof buf);
    assert_non_null(strstr(buf, "\rquantize  1/3 tensors   33%"));
    assert_non_null(strstr(buf, "blk.0.attn_q.weight"));
    assert_null(strstr(buf, "second"));
    assert_non_null(strstr(buf, "3/3 tensors  100%"));
    assert_non_null(strstr(buf, "done in 0:00"));
    assert_int_equal(buf[strlen(buf) - 1], '\n');
    int lines = 0;
    for (char *c = buf; *c; c++) lines += *c == '\n';
    assert_int_equal(lines, 1); /* redrawn in place, one newline at the end */
    fclose(f);
}

static void test_unknown_total_and_silent(void **state) {
    (void)state;
    FILE *f = tmpfile();
    lm_progress p;
    lm_progress_begin_file(&p, f, "generate", 0, NULL);
    lm_progress_update(&p, 5, NULL);
    lm_progress_end(&p);
    char buf[1024];
    read_all(f, buf, sizeof buf);
    assert_non_null(strstr(buf, "generate  5 steps"));
    assert_null(strstr(buf, "%"));
    assert_null(strstr(buf, "ETA"));
    fclose(f);
    lm_progress_begin_file(&p, NULL, "x", 10, "y"); /* silent: must simply not crash */
    lm_progress_update(&p, 4, "z");
    lm_progress_end(&p);
    assert_int_equal(p.done, 4);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_draws_and_limits),
        cmocka_unit_test(test_unknown_total_and_silent),
    };
    return cmocka_run_group_tests_name("progress", tests, NULL, NULL);
}
