/* Shared pieces of `lemonpc generate` and `lemonpc chat`: the common flags
 * (threads, context, sampling) and a loaded model + tokenizer + context
 * that evaluates a prompt and streams a sampled reply. */
#ifndef LM_CLI_GEN_H
#define LM_CLI_GEN_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "base/err.h"
#include "model/adapter.h"
#include "model/gguf.h"
#include "model/llama.h"
#include "model/sampler.h"
#include "tokenizer/tokenizer.h"

typedef struct cli_gen_opts {
    const char *model;
    const char *system;      /* NULL: the template's default system turn */
    const char *character;   /* character sheet (.md): its persona becomes the system turn */
    int persona;             /* lm_persona_mode for --character; -1: the trained one, else full */
    const char *asker, *place; /* the scene lines of the persona, or NULL */
    int n_predict;           /* max tokens per reply */
    int threads;             /* 0: all online CPUs */
    int n_ctx;               /* 0: min(2048, context_length) */
    const char *adapter;     /* LoRA adapter GGUF applied at run time, or NULL */
    float adapter_scale;     /* multiplies alpha/r (default 1) */
    bool verbose;
    lm_sampler_params sp;
} cli_gen_opts;

struct lm_character;
struct lm_world;
/* The persona mode to serve a character with: the one stamped in the
 * adapter (or the model) by `lemonpc build` unless asked (>= 0) says
 * otherwise; fallback for an unstamped NPC. Prints a warning on stderr when
 * the asked mode or the sheet differs from what the NPC was trained with;
 * -1 (err set) when a file cannot be read. */
int cli_persona_mode(const char *model, const char *adapter, int asked, int fallback,
                     const struct lm_character *c, const struct lm_world *w, lm_err *err);

/* Help text for the shared flags. */
extern const char CLI_GEN_FLAGS_HELP[];

void cli_gen_opts_init(cli_gen_opts *o, int n_predict);
/* Tries to parse argv[*i] (and its value) as a shared flag. Returns 1 if
 * consumed (advancing *i past the value), 0 if not a shared flag, -1 on a
 * bad value (message printed to stderr, prefixed with cmd). */
int cli_gen_parse_flag(const char *cmd, int argc, char **argv, int *i, cli_gen_opts *o);

typedef struct cli_gen_stats {
    int n_prompt, n_gen;
    double prompt_s, gen_s;   /* wall time of prompt eval and of decoding */
    double ttft_s;            /* from the start of prompt eval to the first token out */
} cli_gen_stats;

typedef struct cli_gen {
    lm_model *model;
    lm_adapter *adapter;     /* --adapter, or NULL */
    lm_tokenizer *tok;
    lm_pool *pool;
    lm_ctx *ctx;
    lm_sampler *smp;
    float *logits;           /* [n_vocab] */
    int32_t eos, im_end;     /* stop tokens (-1 if absent) */
    int n_predict;
    char *persona;           /* system turn built from --character (owned), or NULL */
    bool eval_all;           /* also evaluate the last token of a reply cut by n_predict, so
                                the cache holds every token printed (chat continues from it) */
} cli_gen;

int cli_gen_open(cli_gen *g, const cli_gen_opts *o, lm_err *err);
void cli_gen_close(cli_gen *g);

/* The system message to use: --system, else the --character persona, else
 * NULL (the template's default). */
const char *cli_gen_system(const cli_gen *g, const cli_gen_opts *o);

/* Evaluates prompt tokens (appended to what the cache holds), then samples
 * until a stop token, n_predict tokens or the end of the context. A sampled
 * stop token is not printed nor evaluated (the caller's next prompt closes
 * the turn, e.g. starting with <|im_end|>). The text
 * is written to out as it comes (flushed per token) and, if reply is not
 * NULL, returned as a malloc'd string. *hit_ctx_end is set when decoding
 * stopped because the context is full. */
int cli_gen_reply(cli_gen *g, const int32_t *prompt, size_t n_prompt, FILE *out,
                  char **reply, bool *hit_ctx_end, cli_gen_stats *st, lm_err *err);

void cli_gen_print_stats(const cli_gen_stats *st);

#endif
