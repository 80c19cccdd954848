/* Pieces of the tokenizer shared between its files (not a public API):
 * the GPT-2 byte map, UTF-8 clean-up, the byte-string hash table, the
 * pre-tokenizer, and the tokenizer struct itself. */
#ifndef LM_TOKENIZER_INTERNAL_H
#define LM_TOKENIZER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "tokenizer/tokenizer.h"

/* ---- GPT-2 byte <-> unicode map (bytemap.c) ----------------------------
 * Byte-level BPE vocabularies store every byte as a printable code point:
 * bytes '!'..'~', 0xA1..0xAC and 0xAE..0xFF stand for themselves, the 68
 * others become U+0100.. in increasing byte order (space -> U+0120 'Ġ'). */
uint32_t lm_byte_to_cp(uint8_t b);
/* The byte a code point stands for, or -1 if it is not in the map. */
int lm_cp_to_byte(uint32_t cp);
/* Decodes mapped UTF-8 text (a token as stored in GGUF) into raw bytes.
 * out needs len bytes. Returns the byte count, or -1 if the text holds a
 * character outside the map (or invalid UTF-8). */
long lm_bytemap_decode(const char *s, size_t len, uint8_t *out);

/* ---- byte-string -> int32 hash table (strmap.c) ------------------------ */

typedef struct lm_strmap {
    uint32_t *slots;      /* 0 = empty, else entry index + 1 */
    size_t n_slots;       /* power of two */
    size_t n;             /* entries */
    size_t cap;
    uint32_t *key_off;    /* into keys */
    uint32_t *key_len;
    int32_t *val;
    char *keys;
    size_t keys_len, keys_cap;
} lm_strmap;

int lm_strmap_init(lm_strmap *m, size_t expected);
void lm_strmap_free(lm_strmap *m);
/* Inserts key -> val. If the key is present: keeps the old value when
 * keep_first, else replaces it. Returns 0, or -1 on allocation failure. */
int lm_strmap_put(lm_strmap *m, const void *key, size_t len, int32_t val, bool keep_first);
/* Value for key, or -1. */
int32_t lm_strmap_get(const lm_strmap *m, const void *key, size_t len);

/* ---- pre-tokenizer (pretok.c) ------------------------------------------ */

typedef struct lm_pretok lm_pretok;

typedef struct lm_span { size_t off, len; } lm_span;

/* Compiles the pre-tokenizer named by tokenizer.ggml.pre ("smollm",
 * "gpt2"); unknown names are refused with a message naming them. */
lm_pretok *lm_pretok_new(const char *name, lm_err *err);
void lm_pretok_free(lm_pretok *p);
const char *lm_pretok_name(const lm_pretok *p);
/* Splits well-formed UTF-8 text[0..len) into words; appends their spans
 * (relative to text) to *spans (realloc'd; *n and *cap updated). */
int lm_pretok_split(const lm_pretok *p, const char *text, size_t len,
                    lm_span **spans, size_t *n, size_t *cap, lm_err *err);

/* ---- the tokenizer ----------------------------------------------------- */

enum {
    LM_TT_NORMAL = 1, LM_TT_UNKNOWN = 2, LM_TT_CONTROL = 3,
    LM_TT_USER_DEFINED = 4, LM_TT_UNUSED = 5, LM_TT_BYTE = 6,
};

struct lm_tokenizer {
    int32_t n_vocab;
    uint8_t *type;          /* [n_vocab] LM_TT_* */
    /* Token text as stored in the file: text + text_off[i], text_len[i]. */
    char *text;
    uint32_t *text_off, *text_len;
    /* Raw bytes each token decodes to (the byte map undone for normal and
     * byte tokens, the stored text for the others). */
    uint8_t *piece;
    uint32_t *piece_off, *piece_len;
    lm_strmap by_text;      /* stored text -> id (last id wins, as llama.cpp) */
    lm_strmap by_bytes;     /* decoded bytes -> id, tokens whose text is all mapped */
    lm_strmap merges;       /* u32 len(left) | left | right (raw bytes) -> rank */
    int32_t *specials;      /* control/user-defined/unknown ids, longest text first */
    int32_t n_specials;
    lm_pretok *pre;
    int32_t bos, eos, unk, pad;
    char *chat_template;    /* NULL when the file has none */
    char *chat_default_system; /* injected when messages[0] is not "system"; NULL: none */
};

/* Appends the ids of one pre-tokenized word (raw bytes) to out. Scratch
 * buffers live in *ws so one call to lm_tokenize allocates them once. */
typedef struct lm_bpe_ws lm_bpe_ws;
lm_bpe_ws *lm_bpe_ws_new(void);
void lm_bpe_ws_free(lm_bpe_ws *ws);
int lm_bpe_word(const lm_tokenizer *t, lm_bpe_ws *ws, const uint8_t *w, size_t n,
                int32_t **out, size_t *n_out, size_t *cap_out);

/* Parses the default system prompt out of a ChatML template (chat.c).
 * Sets *out to a malloc'd string or NULL when the template injects none. */
int lm_chat_parse_template(const char *tmpl, char **out, lm_err *err);

#endif
