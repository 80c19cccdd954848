/* Byte-level BPE tokenizer read from GGUF (tokenizer.ggml.model = "gpt2"):
 * tokens, merges, token types and special ids; pre-tokenizer chosen by
 * tokenizer.ggml.pre (unknown values are refused, not guessed). */
#ifndef LM_TOKENIZER_TOKENIZER_H
#define LM_TOKENIZER_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "gguf/gguf.h"

typedef struct lm_tokenizer lm_tokenizer;

/* Copies what it needs: the gguf_file may be closed afterwards. */
lm_tokenizer *lm_tokenizer_load(const gguf_file *f, lm_err *err);

/* The same from in-memory arrays (tests, fuzzers, tools building a vocab
 * by hand); lm_tokenizer_load reads these fields from tokenizer.ggml.*.
 * Strings are len bytes (NULL lens: NUL-terminated). Everything is copied. */
typedef struct lm_tokenizer_spec {
    const char *model;              /* must be "gpt2" */
    const char *pre;                /* "smollm" or "gpt2" */
    const char *const *tokens;      /* [n_tokens], byte-mapped text as in GGUF */
    const size_t *token_lens;
    int32_t n_tokens;
    const int32_t *token_types;     /* [n_tokens] 1..6 as in GGUF; NULL: all normal */
    const char *const *merges;      /* [n_merges] "left right", rank = index */
    const size_t *merge_lens;
    int32_t n_merges;
    int32_t bos, eos, unk, pad;     /* -1: none */
    const char *chat_template;      /* NULL: plain ChatML, no default system turn */
} lm_tokenizer_spec;

lm_tokenizer *lm_tokenizer_new(const lm_tokenizer_spec *spec, lm_err *err);
void lm_tokenizer_free(lm_tokenizer *t);

int32_t lm_tokenizer_n_vocab(const lm_tokenizer *t);
int32_t lm_tokenizer_bos(const lm_tokenizer *t);  /* -1 if none */
int32_t lm_tokenizer_eos(const lm_tokenizer *t);
/* Id of a token by its exact text (e.g. "<|im_end|>"), -1 if absent. */
int32_t lm_tokenizer_find(const lm_tokenizer *t, const char *text);
/* 1 for control tokens (eos, <|im_start|>...), which decode to nothing
 * unless asked to render specials. */
bool lm_tokenizer_is_control(const lm_tokenizer *t, int32_t id);

/* Encodes text[0..len). With parse_special, control/user-defined token
 * texts in the input (e.g. "<|im_start|>") become their ids; otherwise
 * they are ordinary text. Never adds BOS. *out is malloc'd (caller frees). */
int lm_tokenize(const lm_tokenizer *t, const char *text, size_t len,
                bool parse_special, int32_t **out, size_t *n_out, lm_err *err);

/* Bytes of one token (GPT-2 byte map undone). Writes up to cap bytes and
 * returns the token's full byte length (may exceed cap), or -1 for an
 * out-of-range id. Control tokens give their text if render_special, else 0. */
int lm_token_bytes(const lm_tokenizer *t, int32_t id, bool render_special,
                   char *buf, size_t cap);

/* Decodes a sequence into a malloc'd NUL-terminated string. */
char *lm_detokenize(const lm_tokenizer *t, const int32_t *ids, size_t n,
                    bool render_special, lm_err *err);
/* Same, also giving the byte length (the text may hold NUL bytes). */
char *lm_detokenize_n(const lm_tokenizer *t, const int32_t *ids, size_t n,
                      bool render_special, size_t *len_out, lm_err *err);

/* ---- chat template ----------------------------------------------------- */

typedef struct lm_chat_msg {
    const char *role;     /* "system", "user", "assistant" */
    const char *content;
} lm_chat_msg;

/* Renders messages with the model's chat template (ChatML for SmolLM2:
 * "<|im_start|>role\ncontent<|im_end|>\n" per message; when the first
 * message is not a system message, SmolLM2's template injects its default
 * system turn). add_generation_prompt appends "<|im_start|>assistant\n".
 * Returns a malloc'd string to be tokenized with parse_special = true. */
char *lm_chat_render(const lm_tokenizer *t, const lm_chat_msg *msgs, size_t n,
                     bool add_generation_prompt, lm_err *err);

#endif
