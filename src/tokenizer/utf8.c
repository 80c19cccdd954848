/* UTF-8 validation for the tokenizer. llama.cpp replaces each byte that
 * does not start a decodable sequence with U+FFFD and moves on one byte; we
 * do the same, with one difference: llama.cpp decodes overlong forms,
 * surrogates and code points above U+10FFFF leniently, we treat them as
 * invalid too (see docs/TOKENIZER.md). */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/internal.h"

static bool cont(uint8_t b) { return (b & 0xC0) == 0x80; }

int lm_utf8_seq_len(const uint8_t *s, size_t n) {
    if (n == 0) return 0;
    uint8_t b = s[0];
    if (b < 0x80) return 1;
    if (b < 0xC2) return 0;                 /* continuation byte, or overlong C0/C1 */
    if (b < 0xE0) return (n >= 2 && cont(s[1])) ? 2 : 0;
    if (b < 0xF0) {
        if (n < 3 || !cont(s[1]) || !cont(s[2])) return 0;
        if (b == 0xE0 && s[1] < 0xA0) return 0;   /* overlong */
        if (b == 0xED && s[1] >= 0xA0) return 0;  /* surrogate */
        return 3;
    }
    if (b < 0xF5) {
        if (n < 4 || !cont(s[1]) || !cont(s[2]) || !cont(s[3])) return 0;
        if (b == 0xF0 && s[1] < 0x90) return 0;   /* overlong */
        if (b == 0xF4 && s[1] >= 0x90) return 0;  /* > U+10FFFF */
        return 4;
    }
    return 0;
}

int lm_utf8_sanitize(const char *s, size_t n, char **out, size_t *n_out) {
    const uint8_t *u = (const uint8_t *)s;
    /* Worst case every byte becomes 3. */
    char *buf = malloc(n * 3 + 1);
    if (!buf) return -1;
    size_t i = 0, o = 0;
    while (i < n) {
        int k = lm_utf8_seq_len(u + i, n - i);
        if (k > 0) {
            memcpy(buf + o, u + i, (size_t)k);
            o += (size_t)k;
            i += (size_t)k;
        } else {
            memcpy(buf + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i += 1;
        }
    }
    buf[o] = '\0';
    *out = buf;
    *n_out = o;
    return 0;
}
