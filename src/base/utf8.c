/* UTF-8 validation and clean-up: see utf8.h. */
#include "base/utf8.h"

#include <stdbool.h>

static bool cont(uint8_t b) { return (b & 0xC0) == 0x80; }

int lm_utf8_lead_len(uint8_t b) {
    return b < 0x80 ? 1 : b < 0xC2 ? 0 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : b < 0xF5 ? 4 : 0;
}

/* Whether b may follow lead as the second byte of a well-formed sequence:
 * the leads whose range is narrower than 80..BF rule out overlong forms,
 * surrogates and code points above U+10FFFF. */
static bool second_ok(uint8_t lead, uint8_t b) {
    switch (lead) {
    case 0xE0: return b >= 0xA0 && b <= 0xBF;
    case 0xED: return b >= 0x80 && b <= 0x9F;
    case 0xF0: return b >= 0x90 && b <= 0xBF;
    case 0xF4: return b >= 0x80 && b <= 0x8F;
    default: return cont(b);
    }
}

/* How many bytes of s[0, n) (n > 0) begin a well-formed sequence: the
 * sequence's length when it is whole, fewer when a byte is wrong or the
 * end cuts it, 0 when s[0] starts none. */
static size_t good_prefix(const uint8_t *s, size_t n) {
    size_t k = (size_t)lm_utf8_lead_len(s[0]);
    if (k <= 1) return k;
    if (n < 2 || !second_ok(s[0], s[1])) return 1;
    size_t m = 2;
    while (m < k && m < n && cont(s[m])) m++;
    return m;
}

int lm_utf8_seq_len(const uint8_t *s, size_t n) {
    if (n == 0) return 0;
    int k = lm_utf8_lead_len(s[0]);
    return k > 0 && good_prefix(s, n) == (size_t)k ? k : 0;
}

size_t lm_utf8_check(const char *s, size_t n) {
    const uint8_t *u = (const uint8_t *)s;
    size_t i = 0;
    while (i < n) {
        int k = lm_utf8_seq_len(u + i, n - i);
        if (!k) return i;
        i += (size_t)k;
    }
    return n;
}

void lm_utf8_clean_into(lm_sb *o, const char *s, size_t n, int flags) {
    const uint8_t *u = (const uint8_t *)s;
    size_t i = 0, from = 0;   /* s[from, i): valid, not yet copied */
    while (i < n) {
        int k = lm_utf8_seq_len(u + i, n - i);
        if (k > 0 && !(u[i] == 0 && (flags & LM_UTF8_NO_NUL))) {
            i += (size_t)k;
            continue;
        }
        if (i > from) lm_sb_add(o, s + from, i - from);
        if ((flags & LM_UTF8_DROP_TAIL) && u[i] && good_prefix(u + i, n - i) == n - i) {
            return;   /* a character the end cut: dropped */
        }
        lm_sb_add(o, "\xEF\xBF\xBD", 3);
        from = ++i;
    }
    if (i > from) lm_sb_add(o, s + from, i - from);
}

char *lm_utf8_clean(const char *s, size_t n, int flags, size_t *n_out) {
    lm_sb o = {0};
    lm_utf8_clean_into(&o, s, n, flags);
    size_t len = o.len;
    char *r = lm_sb_take(&o);
    if (n_out) *n_out = r ? len : 0;
    return r;
}
