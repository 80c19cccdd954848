/* Shared pieces of `lemonpc generate` and `lemonpc chat`: the common flags
 * (threads, context, sampling, character) and the NPC they make. */
#ifndef LM_CLI_GEN_H
#define LM_CLI_GEN_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "base/err.h"
#include "lemonpc.h"
#include "model/adapter.h"
#include "gguf/gguf.h"
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
    lemonpc_kv_type kv_type; /* the KV cache's element type (default f16) */
    const char *adapter;     /* LoRA adapter GGUF applied at run time, or NULL */
    float adapter_scale;     /* multiplies alpha/r (default 1) */
    bool verbose;
    lm_sampler_params sp;
    lemonpc_guard guard;     /* --guard, --guard-checks: off by default */
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

/* The model and the NPC a command talks to, through the public API
 * (include/lemonpc.h): --character/--system/--persona/--adapter and the
 * sampling flags become the NPC's parameters, -n its max_tokens. */
typedef struct cli_npc {
    lemonpc_model *model;
    lemonpc_npc *npc;
} cli_npc;

/* Prints the NPC's load warning, if any, on stderr. */
int cli_npc_open(cli_npc *n, const cli_gen_opts *o, lemonpc_error *err);
void cli_npc_close(cli_npc *n);

/* A lemonpc_stream_fn writing to the FILE * user, flushed per piece. */
int cli_put_text(void *user, const char *text, size_t len);

/* The default world file of the world folder dir, its folder created:
 * $XDG_DATA_HOME/lemonpc/<dir's name>.db, else ~/.local/share/lemonpc/...
 * -1 (errno set) when the folder cannot be made. */
int cli_default_world_file(const char *dir, char *out, size_t cap);

/* -v: prompt and decode rates, time to first token, on stderr. */
void cli_print_reply_stats(const lemonpc_reply_info *info);

#endif
