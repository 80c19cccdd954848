/* Token sampler with llama.cpp semantics. The chain, in llama.cpp's order:
 *   repetition penalty (each distinct token among the last N accepted:
 *   positive logit / penalty, non-positive logit * penalty)
 *   -> top-k -> top-p -> min-p (these three judge probabilities at
 *   temperature 1, as llama.cpp does) -> temperature -> draw.
 * temp <= 0 means greedy: the argmax of the penalised logits (lowest id on
 * ties). The PRNG (xoshiro256**, seeded through splitmix64) lives in the
 * sampler, so a seed gives the same sequence on every run and platform. */
#ifndef LM_MODEL_SAMPLER_H
#define LM_MODEL_SAMPLER_H

#include <stdint.h>

#include "base/err.h"

typedef struct lm_sampler_params {
    float temp;            /* <= 0: greedy */
    int top_k;             /* <= 0 or >= n_vocab: off */
    float top_p;           /* >= 1: off */
    float min_p;           /* <= 0: off */
    float repeat_penalty;  /* 1: off */
    int repeat_last_n;     /* how many accepted tokens the penalty looks at */
    uint64_t seed;
} lm_sampler_params;

/* llama.cpp's defaults: temp 0.8, top_k 40, top_p 0.95, min_p 0.05,
 * repeat_penalty 1.0 (off), last_n 64, seed 0. */
lm_sampler_params lm_sampler_defaults(void);

/* Checks ranges (temp finite, top_p in (0,1], min_p in [0,1],
 * repeat_penalty > 0, repeat_last_n >= 0); the message names the field. */
int lm_sampler_params_check(const lm_sampler_params *p, lm_err *err);

typedef struct lm_sampler lm_sampler;

lm_sampler *lm_sampler_new(const lm_sampler_params *p, int n_vocab, lm_err *err);
void lm_sampler_free(lm_sampler *s);

/* Picks a token from logits[n_vocab] (left untouched). Does not record it:
 * call lm_sampler_accept with the token actually fed to the model (prompt
 * tokens too, if they should count for the repetition penalty). Returns -1,
 * drawing nothing, when the candidates' memory cannot be had. */
int32_t lm_sampler_sample(lm_sampler *s, const float *logits);
/* Gives back the candidate arrays (12 bytes per vocabulary entry: ~0.6 MB
 * for a 49k vocabulary); the next draw allocates them again. The PRNG
 * state and the history are kept, so the draws go on exactly as without
 * it. For samplers that sit idle between replies. */
void lm_sampler_trim(lm_sampler *s);
void lm_sampler_accept(lm_sampler *s, int32_t token);
/* Forgets the accepted history (the PRNG state goes on). */
void lm_sampler_reset(lm_sampler *s);
/* The PRNG state, to save a conversation and go on with the same draws. */
void lm_sampler_rng_get(const lm_sampler *s, uint64_t st[4]);
void lm_sampler_rng_set(lm_sampler *s, const uint64_t st[4]);

#endif
