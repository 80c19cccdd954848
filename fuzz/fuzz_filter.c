/* libFuzzer: the dataset filters over arbitrary text. Input: NUL-separated
 * fields name, backstory, question, answer, asker; the first byte picks
 * the kind and the truncated flag. Checks the result's invariants and that
 * an accepted sample is a duplicate of itself; and the known words of the
 * backstory (check/vocab.h): a foreign name found in the question lies in
 * it, is capitalised and is not known. */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check/filter.h"
#include "check/vocab.h"
#include "sheet/sheet.h"

static int popcount(unsigned x) {
    int n = 0;
    for (; x; x &= x - 1) n++;
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    static const char *const kinds[] = {"in-world", "off-topic", "protective", "adversarial", NULL, "bogus"};
    const char *kind = kinds[data[0] % 6];
    int truncated = (data[0] >> 3) & 1;
    char *buf = malloc(size);
    if (!buf) return 0;
    memcpy(buf, data + 1, size - 1);
    buf[size - 1] = 0;
    char *f[5] = {0};
    char *p = buf;
    for (int i = 0; i < 5 && p < buf + size - 1; i++) {
        f[i] = p;
        p += strlen(p) + 1;
    }
    lm_character c;
    memset(&c, 0, sizeof c);
    c.name = f[0];
    c.backstory = f[1];
    lm_err err;
    lm_filter_set *s = lm_filter_set_new(NULL, f[0] ? &c : NULL, &err);
    lm_dedup *d = lm_dedup_new(NULL, &err);
    if (!s || !d) abort();
    lm_filter_sample x = {f[2], f[3], kind, NULL, f[4], truncated, 0};
    lm_filter_result r;
    int pass = lm_filter_run(s, &x, &r);
    char reasons[2048];
    lm_filter_reasons(&r, reasons, sizeof reasons);
    if (pass != r.pass || pass != (r.failed == 0) || (r.failed & ~r.checked) ||
        (size_t)popcount(r.failed) != r.n_notes)
        abort();
    for (size_t i = 0; i < r.n_notes; i++)
        if (!memchr(r.notes[i].reason, 0, sizeof r.notes[i].reason) || !r.notes[i].reason[0]) abort();
    x.question = x.question ? x.question : "";
    lm_filter_result r2;
    memset(&r2, 0, sizeof r2), r2.pass = 1;
    lm_dedup_check(d, &x, &r2);
    if (!r2.pass || lm_dedup_add(d, &x, &err) != 0) abort();
    memset(&r2, 0, sizeof r2), r2.pass = 1;
    if (lm_dedup_check(d, &x, &r2) || !(r2.failed & (1u << LM_FILTER_DUP))) abort();
    lm_vocab *v = lm_vocab_new(&err);
    if (!v || lm_vocab_add_text(v, f[1], &err) || lm_vocab_add_text(v, f[0], &err)) abort();
    size_t n = 0;
    const char *q = f[2] ? f[2] : "";
    const char *name = lm_vocab_foreign_name(v, q, &n);
    if (name && (name < q || name + n > q + strlen(q) || n < 2 || !isupper((unsigned char)*name) ||
                 lm_vocab_has(v, name, n)))
        abort();
    if (f[1] && *f[1] && !lm_vocab_has(v, f[1], strcspn(f[1], " ")) && isalpha((unsigned char)*f[1]) &&
        strcspn(f[1], " ") == strspn(f[1], "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") &&
        strcspn(f[1], " ") < 64)
        abort(); /* the backstory's first word, all letters, was added */
    lm_vocab_free(v);
    lm_dedup_free(d);
    lm_filter_set_free(s);
    free(buf);
    return 0;
}
