/* UTF-8 validation and clean-up, for every module that takes text from
 * outside (tokenizer input, model output streamed to a game or a client,
 * teacher replies, sheets, phrase files).
 *
 * Well-formed means Unicode's Table 3-7 (what Python's and jansson's strict
 * decoders accept): no stray continuation bytes, no truncated sequences, no
 * overlong forms (C0, C1, E0 80..9F, F0 80..8F), no surrogates (ED A0..BF),
 * nothing above U+10FFFF (F4 90.., F5..FF). A clean-up replaces every byte
 * that is not part of a well-formed sequence by U+FFFD, one per byte: what
 * llama.cpp's tokenizer does. (Python's decode('utf-8', 'replace') puts one
 * U+FFFD per maximal ill-formed subpart instead, so "\xE2\x82" gives one
 * there and two here; the two agree on which input is valid.) */
#ifndef LM_BASE_UTF8_H
#define LM_BASE_UTF8_H

#include <stddef.h>
#include <stdint.h>

#include "base/strbuf.h"

/* 1..4: the length of the well-formed sequence at s[0, n); 0 when s[0]
 * starts none (or n == 0). NUL is a well-formed 1-byte sequence. */
int lm_utf8_seq_len(const uint8_t *s, size_t n);

/* The length (1..4) a sequence starting with byte b has when well-formed;
 * 0 when no well-formed sequence starts with b. For a stream that holds
 * back a character whose last bytes have not come yet. */
int lm_utf8_lead_len(uint8_t b);

/* The offset of the first byte of s[0, n) that is not part of a well-formed
 * sequence; n when s[0, n) is all valid UTF-8. */
size_t lm_utf8_check(const char *s, size_t n);

enum {
    /* NUL bytes become U+FFFD too: text for a C string or a JSON value. */
    LM_UTF8_NO_NUL = 1,
    /* A character cut by the end of s (a well-formed start whose last bytes
     * are missing) is dropped instead of replaced: the end of a stream. */
    LM_UTF8_DROP_TAIL = 2,
};

/* Appends s[0, n) to o with every byte not part of a well-formed sequence
 * replaced by U+FFFD (EF BF BD). flags: LM_UTF8_*. Out of memory: o->oom. */
void lm_utf8_clean_into(lm_sb *o, const char *s, size_t n, int flags);

/* The same into a fresh NUL-terminated malloc'd string, owned by the caller;
 * its length in *n_out (may be NULL; the text may hold NULs without
 * LM_UTF8_NO_NUL). NULL when out of memory. */
char *lm_utf8_clean(const char *s, size_t n, int flags, size_t *n_out);

#endif
