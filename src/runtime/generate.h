/* A chat completion on our engine: model + tokenizer + context + sampler.
 * Messages in, reply text out; decoding stops at <|im_end|> / eos (or any
 * control token), at max_tokens, at a stop string, or when the context is
 * full. Each call starts from an empty cache, so a reply depends only on
 * the messages and the params (seeded sampler: reproducible).
 *
 * The prompt is rendered with the model's chat template, but the messages'
 * content is tokenized apart from the template, without special-token
 * parsing: a user writing "<|im_end|>" gets those characters, not a turn
 * boundary. */
#ifndef LM_RUNTIME_GENERATE_H
#define LM_RUNTIME_GENERATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "base/pool.h"
#include "base/strbuf.h"
#include "model/llama.h"
#include "model/sampler.h"
#include "tokenizer/tokenizer.h"

typedef struct lm_generator lm_generator;

/* n_ctx <= 0: min(2048, the model's); threads <= 0: all online CPUs. */
lm_generator *lm_generator_open(const char *model_path, int n_ctx, int threads, lm_err *err);
void lm_generator_free(lm_generator *g);

const lm_tokenizer *lm_generator_tokenizer(const lm_generator *g);

/* Applies a LoRA adapter GGUF at run time (scale multiplies alpha/r);
 * path NULL removes it. The generator owns the loaded adapter. */
int lm_generator_set_adapter(lm_generator *g, const char *path, float scale, lm_err *err);

/* Teacher-forced score of the last message (an assistant turn) given the
 * ones before it: *nll is the summed negative log-likelihood (nats) of its
 * tokens and, when closed, the <|im_end|> that closes it (a reply cut at
 * its token limit never drew one), *n_tokens their count. Scoring several
 * replies to the same messages in a row evaluates them once (when no
 * generation ran in between): the same computation, so the same sums. */
int lm_generator_score(lm_generator *g, const lm_chat_msg *msgs, size_t n, bool closed, double *nll,
                       int *n_tokens, lm_err *err);

typedef struct lm_gen_params {
    lm_sampler_params sp;
    int max_tokens;              /* <= 0: until a stop or the context ends */
    bool logp;                   /* sum the reply's log-probabilities into lm_gen_info.logp */
    const char *const *stop;     /* [n_stop] strings that end the reply (cut off) */
    size_t n_stop;
} lm_gen_params;

typedef struct lm_gen_info {
    int n_prompt, n_gen;
    bool hit_max, hit_ctx;       /* why it stopped, if not at a stop token/string */
    bool hit_stop;               /* a stop string ended it */
    double first_token_at;       /* CLOCK_MONOTONIC seconds at the first sample; 0: none */
    /* with lm_gen_params.logp: log p of each token returned and of the end
     * token that closed the reply, under the model's own distribution (the
     * logits before sampling), summed; n_logp of them */
    double logp;
    int n_logp;
} lm_gen_info;

/* log softmax(logits)[token], in double. */
double lm_token_logp(const float *logits, int n_vocab, int32_t token);

/* Tokens of the rendered prompt (template pieces with special tokens,
 * content as plain text), ending with the generation prompt. *out malloc'd. */
int lm_generate_prompt(const lm_tokenizer *t, const lm_chat_msg *msgs, size_t n,
                       int32_t **out, size_t *n_out, lm_err *err);

/* The same with some contents given as tokens: pre[i].p, when not NULL,
 * replaces the tokenization of msgs[i].content (a reply kept as the tokens
 * that were sampled, which a cache holds; they need not be the canonical
 * tokenization of its text). pre may be NULL. */
typedef struct lm_tok_span {
    const int32_t *p;
    size_t n;
} lm_tok_span;
int lm_generate_prompt_pre(const lm_tokenizer *t, const lm_chat_msg *msgs,
                           const lm_tok_span *pre, size_t n, int32_t **out, size_t *n_out,
                           lm_err *err);

/* *reply is malloc'd UTF-8 text (a character cut by max_tokens is dropped);
 * info may be NULL. */
int lm_generate_chat(lm_generator *g, const lm_chat_msg *msgs, size_t n,
                     const lm_gen_params *p, char **reply, lm_gen_info *info, lm_err *err);

/* Each decoded token's bytes, as soon as they are known (before stop
 * strings are looked for); nonzero stops decoding as an error. */
typedef int (*lm_gen_piece_fn)(void *ud, const char *piece, size_t n, lm_err *err);

/* The decode loop under lm_generate_chat, for a caller that owns its
 * context and sampler (a chat keeping its cache between turns). On entry
 * logits hold the last prompt row and the sampler has seen the prompt. */
typedef struct lm_decoder {
    lm_ctx *ctx;
    const lm_tokenizer *tok;
    lm_sampler *smp;
    float *logits;               /* [n_vocab] */
    int32_t eos, im_end;         /* stop tokens (-1 if absent); control tokens stop too */
    bool eval_last;              /* evaluate the token that spends max_tokens, so the cache
                                    holds every token returned */
    lm_gen_piece_fn on_piece;    /* may be NULL */
    void *ud;
    /* Each sampled token that is part of the reply, before it is evaluated
     * (may be NULL); nonzero stops decoding as an error. */
    int (*on_token)(void *ud, int32_t token, lm_err *err);
} lm_decoder;

/* Samples until a stop token, max_tokens, a stop string or a full context.
 * The reply's bytes (cut at a stop string) are appended to text when it is
 * not NULL; info->n_gen, hit_max, hit_ctx and first_token_at are set (the
 * caller zeroes info). */
int lm_decode(const lm_decoder *d, const lm_gen_params *p, lm_sb *text, lm_gen_info *info,
              lm_err *err);

#endif
