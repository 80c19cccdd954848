/* src/base/utf8: validation and clean-up, against a reference written here
 * another way (decode the code point, then rule out overlong forms,
 * surrogates and > U+10FFFF), over named cases and every short string built
 * from the bytes where the rules change. One U+FFFD per bad byte, as
 * llama.cpp's tokenizer does (see utf8.h for how Python differs). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "base/utf8.h"

#define FFFD "\xEF\xBF\xBD"

/* ---- the reference ----------------------------------------------------------- */

static int ref_len(const uint8_t *s, size_t n) {
    if (n == 0) return 0;
    unsigned c = s[0], cp, min;
    size_t k;
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) k = 2, cp = c & 0x1F, min = 0x80;
    else if ((c & 0xF0) == 0xE0) k = 3, cp = c & 0x0F, min = 0x800;
    else if ((c & 0xF8) == 0xF0) k = 4, cp = c & 0x07, min = 0x10000;
    else return 0;
    if (k > n) return 0;
    for (size_t j = 1; j < k; j++) {
        if ((s[j] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[j] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return (int)k;
}

/* Whether s[0, n) is the start of some well-formed sequence longer than n:
 * tried with every second byte (when n == 1) and 80s after. */
static int ref_cut(const uint8_t *s, size_t n) {
    if (n == 0 || n >= 4 || s[0] < 0x80) return 0;
    for (unsigned b = 0x80; b <= 0xBF; b++) {
        uint8_t t[4] = {0x80, 0x80, 0x80, 0x80};
        memcpy(t, s, n);
        if (n == 1) t[1] = (uint8_t)b;
        for (size_t k = n + 1; k <= 4; k++)
            if (ref_len(t, k) == (int)k) return 1;
        if (n > 1) break;
    }
    return 0;
}

/* The clean-up, byte by byte, into out (n * 3 + 1 bytes); its length. */
static size_t ref_clean(const uint8_t *s, size_t n, int flags, char *out) {
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        int k = ref_len(s + i, n - i);
        if (k > 0 && !(s[i] == 0 && (flags & LM_UTF8_NO_NUL))) {
            memcpy(out + o, s + i, (size_t)k);
            o += (size_t)k;
            i += (size_t)k;
            continue;
        }
        if ((flags & LM_UTF8_DROP_TAIL) && ref_cut(s + i, n - i)) break;
        memcpy(out + o, FFFD, 3);
        o += 3;
        i++;
    }
    out[o] = 0;
    return o;
}

static size_t ref_check(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        int k = ref_len(s + i, n - i);
        if (!k) return i;
        i += (size_t)k;
    }
    return n;
}

/* ---- named cases --------------------------------------------------------------- */

static void clean_is(const char *in, size_t n, int flags, const char *want, size_t n_want) {
    size_t n_out = 99;
    char *out = lm_utf8_clean(in, n, flags, &n_out);
    assert_non_null(out);
    assert_int_equal(n_out, n_want);
    assert_memory_equal(out, want, n_want);
    assert_int_equal(out[n_out], 0);
    free(out);
}
#define CLEAN(in, flags, want) clean_is(in, sizeof in - 1, flags, want, sizeof want - 1)

static void test_named_cases(void **state) {
    (void)state;
    CLEAN("", 0, "");
    CLEAN("caf\xc3\xa9 \xf0\x9f\x91\x8d", 0, "caf\xc3\xa9 \xf0\x9f\x91\x8d");
    CLEAN("\xff", 0, FFFD);
    CLEAN("a\x80" "b", 0, "a" FFFD "b");                 /* stray continuation */
    CLEAN("\xe2\x82", 0, FFFD FFFD);                      /* truncated: one per byte */
    CLEAN("\xe2\x82x", 0, FFFD FFFD "x");
    CLEAN("\xf0\x9f\x91", 0, FFFD FFFD FFFD);
    CLEAN("\xc0\x80", 0, FFFD FFFD);                      /* overlong NUL */
    CLEAN("\xc1\xbf", 0, FFFD FFFD);
    CLEAN("\xe0\x9f\xbf", 0, FFFD FFFD FFFD);             /* overlong U+07FF */
    CLEAN("\xf0\x8f\xbf\xbf", 0, FFFD FFFD FFFD FFFD);    /* overlong U+FFFF */
    CLEAN("\xed\xa0\x80", 0, FFFD FFFD FFFD);             /* surrogate U+D800 */
    CLEAN("\xed\xbf\xbf", 0, FFFD FFFD FFFD);             /* surrogate U+DFFF */
    CLEAN("\xf4\x90\x80\x80", 0, FFFD FFFD FFFD FFFD);    /* U+110000 */
    CLEAN("\xf5\x80\x80\x80", 0, FFFD FFFD FFFD FFFD);
    /* the edges that stay */
    const char *ok[] = {"\x7f", "\xc2\x80", "\xdf\xbf", "\xe0\xa0\x80", "\xed\x9f\xbf",
                        "\xee\x80\x80", "\xef\xbf\xbf", "\xf0\x90\x80\x80", "\xf4\x8f\xbf\xbf"};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        size_t n = strlen(ok[i]);
        clean_is(ok[i], n, 0, ok[i], n);
        assert_int_equal(lm_utf8_seq_len((const uint8_t *)ok[i], n), (int)n);
        assert_int_equal(lm_utf8_seq_len((const uint8_t *)ok[i], n - 1), 0);
        assert_int_equal(lm_utf8_lead_len((uint8_t)ok[i][0]), (int)n);
    }
    /* NUL: kept as a character, unless the text is bound for a C string */
    CLEAN("a\0b", 0, "a\0b");
    CLEAN("a\0b", LM_UTF8_NO_NUL, "a" FFFD "b");
    /* the end of a stream: a character cut there is dropped, a bad one is not */
    CLEAN("a\xe2\x82", LM_UTF8_DROP_TAIL, "a");
    CLEAN("a\xc3", LM_UTF8_DROP_TAIL, "a");
    CLEAN("a\xf0\x9f\x91", LM_UTF8_DROP_TAIL, "a");
    CLEAN("a\xe0\x80", LM_UTF8_DROP_TAIL, "a" FFFD FFFD);  /* no completion is well-formed */
    CLEAN("a\xed\xa0", LM_UTF8_DROP_TAIL, "a" FFFD FFFD);
    CLEAN("\xe2\x82" "b\xe2\x82", LM_UTF8_DROP_TAIL, FFFD FFFD "b");
    CLEAN("a\xff", LM_UTF8_DROP_TAIL, "a" FFFD);
    CLEAN("a\0", LM_UTF8_DROP_TAIL | LM_UTF8_NO_NUL, "a" FFFD);

    assert_int_equal(lm_utf8_check("ab\xc3\xa9" "c", 5), 5);
    assert_int_equal(lm_utf8_check("ab\xc3(c", 5), 2);
    assert_int_equal(lm_utf8_check("ab\xc3", 3), 2);
    assert_int_equal(lm_utf8_check("", 0), 0);
    assert_int_equal(lm_utf8_seq_len((const uint8_t *)"", 0), 0);
    assert_int_equal(lm_utf8_lead_len(0x80), 0);
    assert_int_equal(lm_utf8_lead_len(0xC1), 0);
    assert_int_equal(lm_utf8_lead_len(0xF5), 0);
}

/* ---- against the reference ----------------------------------------------------- */

static void agree(const uint8_t *s, size_t n) {
    char want[64];
    assert_int_equal(lm_utf8_seq_len(s, n), ref_len(s, n));
    assert_int_equal(lm_utf8_check((const char *)s, n), ref_check(s, n));
    static const int flag_sets[] = {0, LM_UTF8_NO_NUL, LM_UTF8_DROP_TAIL,
                                    LM_UTF8_NO_NUL | LM_UTF8_DROP_TAIL};
    for (size_t f = 0; f < 4; f++) {
        size_t n_want = ref_clean(s, n, flag_sets[f], want);
        size_t n_out;
        char *out = lm_utf8_clean((const char *)s, n, flag_sets[f], &n_out);
        assert_non_null(out);
        if (n_out != n_want || memcmp(out, want, n_want))
            fail_msg("clean of %zu bytes %02x %02x %02x %02x (flags %d) differs", n,
                     n > 0 ? s[0] : 0, n > 1 ? s[1] : 0, n > 2 ? s[2] : 0, n > 3 ? s[3] : 0,
                     flag_sets[f]);
        /* what comes out is valid, and stays as it is */
        assert_int_equal(lm_utf8_check(out, n_out), n_out);
        free(out);
    }
}

static void test_every_two_bytes(void **state) {
    (void)state;
    for (unsigned a = 0; a < 256; a++) {
        uint8_t s1[1] = {(uint8_t)a};
        agree(s1, 1);
        for (unsigned b = 0; b < 256; b++) {
            uint8_t s[2] = {(uint8_t)a, (uint8_t)b};
            agree(s, 2);
        }
    }
}

/* Every lead byte, then three bytes from where the ranges of Table 3-7
 * begin and end (and ASCII, NUL, and leads). */
static void test_every_lead_with_edge_bytes(void **state) {
    (void)state;
    static const uint8_t edge[] = {0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F,
                                   0xA0, 0xBF, 0xC0, 0xC2, 0xE2, 0xF0, 0xFF};
    const size_t ne = sizeof edge;
    for (unsigned a = 0; a < 256; a++)
        for (size_t i = 0; i < ne; i++)
            for (size_t j = 0; j < ne; j++)
                for (size_t k = 0; k < ne; k++) {
                    uint8_t s[4] = {(uint8_t)a, edge[i], edge[j], edge[k]};
                    agree(s, 3);
                    agree(s, 4);
                }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_named_cases),
        cmocka_unit_test(test_every_two_bytes),
        cmocka_unit_test(test_every_lead_with_edge_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
