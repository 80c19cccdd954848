/* src/base/strbuf, fileio and pages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fileio.h"
#include "base/pages.h"
#include "base/strbuf.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

/* lm_pages_release gives back whole pages below `to`, from `from`, and
 * nothing else (under ASan the buffer is calloc'd: same offsets, no release). */
static void test_pages_release(void **state) {
    (void)state;
    size_t ps = (size_t)sysconf(_SC_PAGESIZE), n = 32 * ps;
    unsigned char *p = lm_pages_alloc(n);
    assert_non_null(p);
    memset(p, 0xab, n);
    size_t at = lm_pages_release(p, 0, 10 * ps + ps / 2);
    assert_int_equal(at, 10 * ps);
    assert_int_equal(lm_pages_release(p, at, at + ps / 2), at);   /* less than a page: nothing */
    at = lm_pages_release(p, at, 20 * ps);
    assert_int_equal(at, 20 * ps);
#ifndef UNDER_ASAN
    unsigned char res[32];
    assert_int_equal(mincore(p, n, res), 0);
    for (size_t i = 0; i < 32; i++) {
        assert_int_equal(res[i] & 1, i < 20 ? 0 : 1);   /* given back, or still held */
        assert_int_equal(p[i * ps + 7], i < 20 ? 0 : 0xab);
    }
#else
    for (size_t i = 0; i < 32; i++) assert_int_equal(p[i * ps + 7], 0xab);
#endif
    lm_pages_free(p, n);
}

static void test_strbuf(void **state) {
    (void)state;
    lm_sb b = {0};
    lm_sb_str(&b, "abc");
    lm_sb_add(&b, "defXYZ", 3);
    lm_sb_printf(&b, "-%d-%s", 42, "x");
    assert_string_equal(b.p, "abcdef-42-x");
    assert_int_equal(b.len, strlen("abcdef-42-x"));
    for (int i = 0; i < 1000; i++) lm_sb_str(&b, "0123456789");
    assert_int_equal(b.len, 11 + 10000);
    assert_memory_equal(b.p + 11 + 9990, "0123456789", 10);
    char *s = lm_sb_take(&b);
    assert_non_null(s);
    assert_null(b.p);
    free(s);
    s = lm_sb_take(&b); /* empty buffer gives "" */
    assert_string_equal(s, "");
    free(s);
    char t[] = " \t hello world \n";
    lm_str_trim(t);
    assert_string_equal(t, "hello world");
    char e[] = "  \n";
    lm_str_trim(e);
    assert_string_equal(e, "");
}

static void test_file_roundtrip(void **state) {
    (void)state;
    char dir[] = "/tmp/lm_base_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/f.bin", dir);
    lm_err err = {{0}};
    char *data;
    size_t len;
    assert_int_equal(lm_read_file(path, &data, &len, true, &err), 0);
    assert_null(data);
    assert_int_equal(lm_read_file(path, &data, &len, false, &err), -1);
    assert_non_null(strstr(err.msg, path));
    const char bytes[] = {'a', 0, 'b', '\n'};
    assert_int_equal(lm_write_file_atomic(path, bytes, sizeof bytes, &err), 0);
    assert_int_equal(lm_read_file(path, &data, &len, false, &err), 0);
    assert_int_equal(len, sizeof bytes);
    assert_memory_equal(data, bytes, sizeof bytes);
    assert_int_equal(data[len], 0);
    free(data);
    /* a bound: exactly max bytes read, one more refused with the path */
    assert_int_equal(lm_read_file_max(path, sizeof bytes, &data, &len, &err), 0);
    assert_int_equal(len, sizeof bytes);
    assert_memory_equal(data, bytes, sizeof bytes);
    free(data);
    assert_int_equal(lm_read_file_max(path, sizeof bytes - 1, &data, &len, &err), -1);
    assert_null(data);
    char want[320];
    snprintf(want, sizeof want, "%s: larger than %zu bytes", path, sizeof bytes - 1);
    assert_string_equal(err.msg, want);
    /* a file past the first 64 KiB read, still refused at its bound */
    char *big = calloc(1, 200000);
    assert_non_null(big);
    assert_int_equal(lm_write_file_atomic(path, big, 200000, &err), 0);
    free(big);
    assert_int_equal(lm_read_file_max(path, 150000, &data, &len, &err), -1);
    assert_non_null(strstr(err.msg, "larger than 150000 bytes"));
    assert_int_equal(lm_read_file_max(path, 200000, &data, &len, &err), 0);
    assert_int_equal(len, 200000);
    free(data);
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    struct stat st;
    assert_int_not_equal(stat(tmp, &st), 0); /* no temp file left behind */
    char bad[300];
    snprintf(bad, sizeof bad, "%s/no/such/dir/x", dir);
    assert_int_equal(lm_write_file_atomic(bad, "x", 1, &err), -1);
    assert_non_null(strstr(err.msg, "no/such/dir"));
    unlink(path);
    rmdir(dir);
}

/* Output folders are made with their parents; a file in the way is named. */
static void test_mkdir_p(void **state) {
    (void)state;
    char dir[] = "/tmp/lm_base_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char p[300], q[300];
    lm_err err = {{0}};
    snprintf(p, sizeof p, "%s/a/b//c/", dir);
    assert_int_equal(lm_mkdir_p(p, &err), 0);
    snprintf(q, sizeof q, "%s/a/b/c", dir);
    struct stat st;
    assert_int_equal(stat(q, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(lm_mkdir_p(q, &err), 0);   /* there already: fine */
    snprintf(q, sizeof q, "%s/a/file", dir);
    assert_int_equal(lm_write_file_atomic(q, "x", 1, &err), 0);
    snprintf(p, sizeof p, "%s/a/file/sub", dir);
    assert_int_equal(lm_mkdir_p(p, &err), -1);
    assert_non_null(strstr(err.msg, "a/file"));
    assert_int_equal(lm_mkdir_p("", &err), -1);
    unlink(q);
    snprintf(q, sizeof q, "%s/a/b/c", dir); rmdir(q);
    snprintf(q, sizeof q, "%s/a/b", dir); rmdir(q);
    snprintf(q, sizeof q, "%s/a", dir); rmdir(q);
    assert_int_equal(rmdir(dir), 0);   /* nothing else was left behind */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strbuf),
        cmocka_unit_test(test_pages_release),
        cmocka_unit_test(test_file_roundtrip),
        cmocka_unit_test(test_mkdir_p),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
