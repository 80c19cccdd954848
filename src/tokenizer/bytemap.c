/* The GPT-2 byte <-> unicode map, computed rather than tabled: bytes that
 * are printable Latin-1 keep their code point, the 68 others (0x00..0x20,
 * 0x7F..0xA0, 0xAD) are numbered from U+0100 in increasing byte order. */
#include "tokenizer/internal.h"

static bool printable(unsigned b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

uint32_t lm_byte_to_cp(uint8_t b) {
    if (printable(b)) return b;
    if (b <= 0x20) return 0x100 + b;                 /* 33 bytes: U+0100..U+0120 */
    if (b <= 0xA0) return 0x100 + 33 + (b - 0x7F);   /* 34 bytes: U+0121..U+0142 */
    return 0x100 + 67;                               /* 0xAD: U+0143 */
}

int lm_cp_to_byte(uint32_t cp) {
    if (cp < 0x100) return printable(cp) ? (int)cp : -1;
    if (cp <= 0x120) return (int)(cp - 0x100);
    if (cp <= 0x142) return (int)(cp - 0x121 + 0x7F);
    if (cp == 0x143) return 0xAD;
    return -1;
}

long lm_bytemap_decode(const char *s, size_t len, uint8_t *out) {
    const uint8_t *u = (const uint8_t *)s;
    size_t i = 0, n = 0;
    while (i < len) {
        /* Mapped characters are U+0021..U+0143: one or two UTF-8 bytes. */
        uint32_t cp;
        if (u[i] < 0x80) {
            cp = u[i++];
        } else if ((u[i] & 0xE0) == 0xC0 && i + 1 < len && (u[i + 1] & 0xC0) == 0x80) {
            cp = ((uint32_t)(u[i] & 0x1F) << 6) | (u[i + 1] & 0x3F);
            if (cp < 0x80) return -1;  /* overlong */
            i += 2;
        } else {
            return -1;
        }
        int b = lm_cp_to_byte(cp);
        if (b < 0) return -1;
        out[n++] = (uint8_t)b;
    }
    return (long)n;
}
