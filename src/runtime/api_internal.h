/* What the public handles of include/lemonpc.h hold. Shared by the files
 * that implement the API (api_model.c, api_conv.c, api_state.c); nothing
 * outside src/runtime sees it. */
#ifndef LM_RUNTIME_API_INTERNAL_H
#define LM_RUNTIME_API_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/err.h"
#include "base/pool.h"
#include "lemonpc.h"
#include "model/adapter.h"
#include "model/llama.h"
#include "memory/memdb.h"
#include "model/sampler.h"
#include "runtime/generate.h"
#include "runtime/guard.h"
#include "sheet/sheet.h"
#include "tokenizer/tokenizer.h"

struct lemonpc_model {
    lm_model *m;
    lm_tokenizer *tok;
    lm_pool *pool;           /* shared by every context of every NPC */
    int n_ctx;
    lm_dtype kv_type;        /* of every conversation's and NPC prefix's KV cache */
    int32_t eos, im_end;
    uint64_t fingerprint;    /* of the weights: a saved conversation must match */
    atomic_int n_npcs;       /* alive, for the check in lemonpc_model_free */
};

struct lemonpc_world {
    lm_memdb *db;
    atomic_int n_npcs;       /* NPCs living in it, for the check in lemonpc_world_close */
};

struct lemonpc_npc {
    lemonpc_model *model;
    lemonpc_world *world;    /* or NULL: no memory beyond the conversation */
    char *wid;               /* its name in the world */
    int memory_tokens;       /* budget of the recalled block */
    char *name;
    char warning[512];
    lm_character *ch;        /* the sheet, or NULL */
    lm_world *w;
    int mode;                /* lm_persona_mode served */
    char *system;            /* a literal system turn (params.system), or NULL */
    lm_adapter *adapter;     /* or NULL */
    float adapter_scale;
    lm_sampler_params sp;
    int max_tokens;
    lm_guard *guard;         /* or NULL: replies are not checked */
    int guard_retries;
    int guard_best_of;       /* 1: no ranking */
    float guard_temperature;
    char **stop;             /* the params' stop strings, owned */
    size_t n_stop;
    uint64_t fingerprint;    /* model + adapter + persona */
    /* The persona prefix: tokens every conversation of this NPC starts
     * with, evaluated once into pctx by the first reply. */
    pthread_mutex_t mu;
    bool prefix_ready;
    int32_t *prefix;
    int n_prefix;
    lm_ctx *pctx;
    atomic_int n_convs;
};

typedef struct lm_turns {
    lm_chat_msg *m;          /* role: "user"/"assistant" (static); content owned */
    lm_tok_span *tk;         /* [n]: a reply's sampled tokens (owned), p NULL when
                                they are not its text's tokens or it is a user turn */
    size_t n, cap;
} lm_turns;

struct lemonpc_conversation {
    lemonpc_npc *npc;
    char *player, *place;
    char *who;               /* the player's short name ("Mira" of "Mira, an acolyte"), or NULL */
    char *system;            /* the system turn with this conversation's scene, or NULL */
    char *memory;            /* the recalled block of the last reply, or NULL */
    lm_turns turns;
    lm_ctx *ctx;
    int32_t *toks;           /* what the cache holds: n_toks == lm_ctx_n_past(ctx) */
    size_t n_toks, cap_toks;
    lm_sampler *smp;
    float *logits;           /* [n_vocab] (lm_pages) during a reply, else NULL */
    char **stop;             /* the NPC's and "\n<player>:" (owned), then the extra ones */
    size_t n_stop;
    size_t n_stop_base;      /* stop[0, n_stop_base): the NPC's and the player's */
    lm_sampler_params sp;    /* the NPC's, or lemonpc_conversation_set_sampling's */
    int max_tokens;
    atomic_bool cancel;
    atomic_flag busy;
};

/* err (may be NULL) gets code and message; returns code. */
lemonpc_status lm_api_fail(lemonpc_error *err, lemonpc_status code, const lm_err *e);
lemonpc_status lm_api_failf(lemonpc_error *err, lemonpc_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Which status a library message means ("out of memory" -> NOMEM, ...). */
lemonpc_status lm_api_code_of(const lm_err *e, lemonpc_status fallback);

uint64_t lm_api_fnv(uint64_t h, const void *p, size_t n);

/* The sampler's parameters of a lemonpc_sampling, checked ("sampling: ..."). */
int lm_api_sampling_params(const lemonpc_sampling *s, lm_sampler_params *p, lm_err *e);
/* Evaluates (once) the NPC's persona prefix. */
int lm_api_npc_prefix(lemonpc_npc *npc, lm_err *err);
/* A conversation of npc with the scene; its cache empty. */
lemonpc_conversation *lm_api_conv_new(lemonpc_npc *npc, const char *player, const char *place,
                                      lm_err *err);
/* Appends a turn (tk: its tokens, copied, or NULL). */
int lm_api_turns_push(lm_turns *t, const char *role, const char *content, const int32_t *tk,
                      size_t ntk);
void lm_api_turns_clear(lm_turns *t);
/* A conversation's save (api_state.c's format) as bytes, and back: buf is
 * taken (freed) by _from_bytes; path names it in messages. */
int lm_api_conv_to_bytes(const lemonpc_conversation *c, void **out, size_t *n, lm_err *e);
lemonpc_conversation *lm_api_conv_from_bytes(lemonpc_npc *npc, uint8_t *buf, size_t size,
                                             const char *path, lemonpc_error *err);
/* The NPC's recalled block for a reply to line (NULL: nothing). */
int lm_api_recall(lemonpc_conversation *c, const char *line, char **block, lm_err *e);
/* Records a finished exchange in the NPC's world (no-op without one). */
int lm_api_record(lemonpc_conversation *c, const char *line, const char *reply, lm_err *e);
/* Makes room for n tokens in conv->toks. */
int lm_api_toks_reserve(lemonpc_conversation *c, size_t n);

#endif
