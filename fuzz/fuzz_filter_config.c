/* libFuzzer target: the dataset filters' files (check/filter.c): the
 * config (`key = value` lines, lm_filter_config_parse) and the writer's
 * assistant-speech phrases (one a line, lm_filter_phrases_add). The first
 * input byte picks which; the rest is the file. Checks: no crash or
 * sanitizer report; every refusal names the file; a config that parses
 * builds a filter set (the parser's ranges are the set's); the phrases'
 * pattern compiles and every phrase the file holds matches itself (the
 * escaping keeps a phrase literal). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <ctype.h>
#include <pcre2.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/strbuf.h"
#include "check/filter.h"
#include "check/filter_internal.h"

#define NAME "fuzz/filters.conf"

static void fuzz_config(const char *text, size_t len) {
    lm_filter_config c;
    lm_filter_config_default(&c);
    lm_err err = {{0}};
    if (lm_filter_config_parse(&c, NAME, text, len, &err)) {
        if (!strstr(err.msg, NAME)) abort();
        return;
    }
    lm_filter_set *s = lm_filter_set_new(&c, NULL, &err);
    if (!s) abort();
    lm_filter_set_free(s);
}

/* The phrase of each line as the reader sees it: trimmed, not a comment. */
static void check_self_match(const pcre2_code *re, const char *text, size_t len) {
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    if (!md) return;
    for (size_t at = 0; at < len;) {
        const char *nl = memchr(text + at, '\n', len - at);
        size_t n = (nl ? (size_t)(nl - text) : len) - at;
        const char *p = text + at;
        at += n + 1;
        while (n && isspace((unsigned char)*p)) p++, n--;
        while (n && isspace((unsigned char)p[n - 1])) n--;
        if (!n || *p == '#') continue;
        if (pcre2_match(re, (PCRE2_SPTR)p, n, 0, 0, md, NULL) < 0) abort();
    }
    pcre2_match_data_free(md);
}

static void fuzz_phrases(const char *text, size_t len) {
    lm_sb b = {0};
    lm_err err = {{0}};
    lm_sb_str(&b, "(?:(?!)");   /* an alternative that never matches, as the built-in list before */
    int rc = lm_filter_phrases_add(&b, NAME, text, len, &err);
    lm_sb_str(&b, ")");
    if (rc) {
        if (!strstr(err.msg, NAME)) abort();
        lm_sb_free(&b);
        return;
    }
    if (b.oom) { lm_sb_free(&b); return; }
    int ec;
    PCRE2_SIZE off;
    /* as filter.c compiles the assistant-speech pattern */
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)b.p, PCRE2_ZERO_TERMINATED, PCRE2_CASELESS, &ec, &off, NULL);
    if (!re) abort();
    check_self_match(re, text, len);
    pcre2_code_free(re);
    lm_sb_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    /* an exact-size copy: reading past the file is an ASan report */
    char *text = malloc(size - 1 ? size - 1 : 1);
    if (!text) return 0;
    memcpy(text, data + 1, size - 1);
    if (data[0] & 1) fuzz_phrases(text, size - 1);
    else fuzz_config(text, size - 1);
    free(text);
    return 0;
}
