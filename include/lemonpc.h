/* LeMoNPC public C API: what a game links against (liblemonpc.so / .a,
 * `pkg-config --cflags --libs lemonpc`). This is the only header a game
 * includes; everything else in the library is hidden.
 *
 *   lemonpc_model        a base model (GGUF), loaded once, read-only, shared
 *   lemonpc_npc          a character on that model: its sheet, its persona
 *                        (the system turn, evaluated once and shared), an
 *                        optional LoRA adapter, its sampling settings
 *   lemonpc_conversation one NPC talking with one player: the turns so far
 *                        and their KV cache, saved to and restored from a file
 *
 * A reply to the player's line:
 *
 *   lemonpc_error err;
 *   lemonpc_model *m = lemonpc_model_load("SmolLM2-135M-Instruct.Q8_0.gguf", NULL, &err);
 *   lemonpc_npc_params np = lemonpc_npc_default_params();
 *   np.sheet = "world/characters/orlando.md";
 *   np.adapter = "orlando.adapter.gguf";
 *   lemonpc_npc *orlando = lemonpc_npc_load(m, &np, &err);
 *   lemonpc_conversation *c = lemonpc_conversation_open(orlando, "Mira", "the cathedral", &err);
 *   char *reply;
 *   if (lemonpc_say(c, "Who are the Unblessed?", NULL, NULL, &reply, NULL, &err) == LEMONPC_OK) {
 *       puts(reply);
 *       lemonpc_string_free(reply);
 *   } else fprintf(stderr, "%s\n", err.message);
 *
 * Errors: every fallible call returns a lemonpc_status (or NULL) and, when
 * err is not NULL, fills it with the code and a message that says what was
 * wrong and where. There is no global state and no "last error".
 *
 * Threads: handles of different conversations may be used from different
 * threads at once, including conversations of one NPC. One conversation is
 * used by one thread at a time (a second caller gets LEMONPC_ERR_BUSY),
 * except lemonpc_conversation_cancel, callable from any thread. All
 * conversations of a model share its worker threads: their forward passes
 * queue and take the workers one matrix product at a time, so four
 * conversations run side by side, each at about a quarter of the speed.
 * Free conversations before their NPC, NPCs before their model. */
#ifndef LEMONPC_H
#define LEMONPC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LEMONPC_VERSION_MAJOR 0
#define LEMONPC_VERSION_MINOR 3
#define LEMONPC_VERSION_PATCH 0
#define LEMONPC_VERSION "0.3.0"

#if defined(__GNUC__)
#define LEMONPC_API __attribute__((visibility("default")))
#else
#define LEMONPC_API
#endif

typedef enum lemonpc_status {
    LEMONPC_OK = 0,
    LEMONPC_ERR_INVALID = 1,      /* a bad argument (NULL handle, out-of-range setting) */
    LEMONPC_ERR_NOMEM = 2,        /* out of memory */
    LEMONPC_ERR_IO = 3,           /* a file cannot be opened, read or written */
    LEMONPC_ERR_FORMAT = 4,       /* a file is corrupt, truncated or of another kind */
    LEMONPC_ERR_MISMATCH = 5,     /* a saved conversation belongs to another NPC or model */
    LEMONPC_ERR_CONTEXT_FULL = 6, /* the player's line alone does not fit the context */
    LEMONPC_ERR_CANCELLED = 7,    /* lemonpc_conversation_cancel or the stream callback */
    LEMONPC_ERR_BUSY = 8,         /* the conversation is in use by another thread */
    LEMONPC_ERR_INTERNAL = 9,
    LEMONPC_ERR_NOT_FOUND = 10    /* no such event, or no saved conversation */
} lemonpc_status;

typedef struct lemonpc_error {
    lemonpc_status code;
    char message[1024];
} lemonpc_error;

/* "ok", "invalid argument", ...: a name for a code. [threads: any thread] */
LEMONPC_API const char *lemonpc_status_name(lemonpc_status code);
/* The library's version string (LEMONPC_VERSION of the build). Thread-safe.
 * [threads: any thread] */
LEMONPC_API const char *lemonpc_version(void);

/* ---- the base model ----------------------------------------------------- */

typedef struct lemonpc_model lemonpc_model;

/* What a conversation's KV cache (the attention keys and values of every
 * token it holds) stores. F16 halves the memory per token (SmolLM2-135M:
 * 23 KB instead of 46 KB) and is llama.cpp's default; either way the
 * replies are exactly llama.cpp's with the same cache type. */
typedef enum lemonpc_kv_type {
    LEMONPC_KV_DEFAULT = 0,  /* F16 */
    LEMONPC_KV_F16 = 1,
    LEMONPC_KV_F32 = 2
} lemonpc_kv_type;

typedef struct lemonpc_model_params {
    int threads;   /* worker threads shared by every conversation; <= 0: all CPUs */
    int n_ctx;     /* tokens per conversation; <= 0: min(2048, the model's) */
    lemonpc_kv_type kv_type;  /* of every conversation of the model; a save restores only
                                 into a model with the same type */
} lemonpc_model_params;

/* [threads: any thread] */
LEMONPC_API lemonpc_model_params lemonpc_model_default_params(void);
/* Maps a GGUF model (params NULL: defaults). [threads: any thread] */
LEMONPC_API lemonpc_model *lemonpc_model_load(const char *path, const lemonpc_model_params *params,
                                              lemonpc_error *err);
/* [threads: once every NPC of the model is freed] */
LEMONPC_API void lemonpc_model_free(lemonpc_model *model);

/* ---- NPCs --------------------------------------------------------------- */

typedef struct lemonpc_npc lemonpc_npc;

typedef enum lemonpc_persona {
    LEMONPC_PERSONA_AUTO = -1,  /* the mode the adapter was trained with (lemonpc build
                                   stamps it), else FULL */
    LEMONPC_PERSONA_NONE = 0,   /* no system turn from the sheet */
    LEMONPC_PERSONA_SHORT = 1,  /* one line naming the character and the world */
    LEMONPC_PERSONA_FULL = 2    /* the condensed sheet: what a base model needs */
} lemonpc_persona;

typedef struct lemonpc_sampling {
    float temperature;     /* <= 0: greedy (the same reply every time) */
    int top_k;             /* 0: off */
    float top_p;           /* 1: off */
    float min_p;           /* 0: off */
    float repeat_penalty;  /* 1: off */
    int repeat_last_n;     /* tokens the penalty looks back over */
    uint64_t seed;         /* each conversation's draws start from it */
    int max_tokens;        /* per reply; <= 0: until the NPC ends its turn */
} lemonpc_sampling;

/* temperature 0.7, top_k 40, top_p 0.95, min_p 0.05, repeat_penalty 1.1
 * over 64 tokens, seed 0, 160 tokens: varied but not rambling, and
 * repetition kept down. [threads: any thread] */
LEMONPC_API lemonpc_sampling lemonpc_sampling_defaults(void);

/* The reply guard: each reply is checked before the player sees it (the
 * text checks `lemonpc eval` scores), and one that fails is drawn again, up
 * to retries times; the player gets the first that passes, or, when none
 * does, the one that failed the fewest checks (the first of those). With
 * best_of N it draws N replies first and gives, of those failing the
 * fewest checks, the one most about the player's line (below). A
 * greedy NPC's retries sample (temperature, top_k 40, top_p 0.95, min_p
 * 0.05), seeded from its seed, the turn and the attempt. With a guard the
 * stream callback gets the reply whole once it is chosen, not token by
 * token; a retry costs a reply's decoding, not the prompt again. */
enum {
    LEMONPC_CHECK_VOICE = 1u << 0,  /* assistant speech, refusals, stage directions, a
                                       self-introduction, the player's line, talk of the
                                       fiction as fiction, code */
    LEMONPC_CHECK_MODERN = 1u << 1, /* our world's things the line did not bring: modern words
                                       ("electricity", "planets"), years of our calendar,
                                       explanations of technology */
    LEMONPC_CHECK_ENDED = 1u << 2,  /* ended its turn itself: not cut by max_tokens, the
                                       context or a stop string */
    LEMONPC_CHECK_LOOP = 1u << 3,   /* repeats itself */
    LEMONPC_CHECK_DODGE = 1u << 4,  /* claims not to know, or declines to say, though the
                                       lorebook or its memory gave it something on the line,
                                       and the line is not about our world (below) */
    LEMONPC_CHECK_IGNORANCE = 1u << 5, /* on a line about our world (modern words, years of our
                                          calendar, or a name neither the sheet nor its world
                                          holds: "Napoleon", "SQL"), says it does not know */
    LEMONPC_CHECK_DEFAULT = LEMONPC_CHECK_VOICE | LEMONPC_CHECK_MODERN | LEMONPC_CHECK_ENDED |
                            LEMONPC_CHECK_LOOP,
    LEMONPC_CHECK_ALL = LEMONPC_CHECK_DEFAULT | LEMONPC_CHECK_DODGE | LEMONPC_CHECK_IGNORANCE
};

typedef struct lemonpc_guard {
    int retries;          /* 0: no guard (the default) */
    unsigned checks;      /* LEMONPC_CHECK_x bits (LEMONPC_CHECK_DEFAULT) */
    float temperature;    /* of a greedy NPC's retries (0.7) */
    int best_of;          /* draw this many replies (0 or 1: one, the default), then
                             retries more while none passes; of those failing the
                             fewest checks the player gets the one most about the
                             line: the highest log p(reply | line) - log p(reply | an
                             empty line), per token, under the NPC's model. Turns the
                             guard on by itself; each draw costs a reply's decoding */
} lemonpc_guard;

typedef struct lemonpc_npc_params {
    const char *sheet;          /* character sheet (.md; world.md beside it is read too),
                                   or NULL with system */
    const char *system;         /* a literal system turn instead of a sheet's persona, or NULL
                                   (no sheet, no system: the model's default) */
    lemonpc_persona persona;    /* how much of the sheet goes in the system turn */
    const char *adapter;        /* LoRA adapter GGUF applied at run time, or NULL */
    float adapter_scale;        /* multiplies the adapter's alpha/r (1) */
    lemonpc_sampling sampling;
    const char *const *stop;    /* extra strings that end a reply, or NULL */
    size_t n_stop;
    lemonpc_guard guard;        /* off by default */
} lemonpc_npc_params;

/* [threads: any thread] */
LEMONPC_API lemonpc_npc_params lemonpc_npc_default_params(void);
/* Loads a character onto model. Thread-safe (per model). The persona is
 * evaluated once, by the first reply of any of its conversations. [threads: any thread] */
LEMONPC_API lemonpc_npc *lemonpc_npc_load(lemonpc_model *model, const lemonpc_npc_params *params,
                                          lemonpc_error *err);
/* After every conversation of the NPC is closed.
 * [threads: once its conversations are closed and no call on it runs] */
LEMONPC_API void lemonpc_npc_free(lemonpc_npc *npc);
/* The character's name ("" without a sheet). Valid while npc lives. [threads: any thread] */
LEMONPC_API const char *lemonpc_npc_name(const lemonpc_npc *npc);
/* A warning from loading ("" if none): e.g. the sheet changed since the
 * adapter was trained, or another persona mode was asked than trained. [threads: any thread] */
LEMONPC_API const char *lemonpc_npc_warning(const lemonpc_npc *npc);
/* Evaluates the NPC's persona now (during a loading screen) rather than in
 * its first reply. [threads: any thread] */
LEMONPC_API lemonpc_status lemonpc_npc_prepare(lemonpc_npc *npc, lemonpc_error *err);
/* Tokens of the NPC's shared persona prefix (0 until evaluated). [threads: any thread] */
LEMONPC_API int lemonpc_npc_prefix_tokens(const lemonpc_npc *npc);

/* ---- conversations ------------------------------------------------------ */

typedef struct lemonpc_conversation lemonpc_conversation;

/* One NPC talking with one player. player names who speaks to the NPC
 * ("Mira, a young acolyte"), place where; either may be NULL. With a sheet
 * they become the scene lines of the system turn, and a line starting with
 * the player's name and a colon ends a reply (the NPC does not speak for
 * the player). [threads: any thread] */
LEMONPC_API lemonpc_conversation *lemonpc_conversation_open(lemonpc_npc *npc, const char *player,
                                                            const char *place,
                                                            lemonpc_error *err);
/* [threads: when no call on the conversation runs] */
LEMONPC_API void lemonpc_conversation_close(lemonpc_conversation *conv);

/* Receives the reply as it is generated: text is valid UTF-8 (never half a
 * character, never the start of a stop string that then ends the reply),
 * len bytes, not NUL-terminated. Return nonzero to stop the reply
 * (lemonpc_say then returns LEMONPC_ERR_CANCELLED). */
typedef int (*lemonpc_stream_fn)(void *user, const char *text, size_t len);

typedef enum lemonpc_stop {
    LEMONPC_STOP_END = 0,          /* the NPC ended its turn */
    LEMONPC_STOP_MAX_TOKENS = 1,   /* sampling.max_tokens reached */
    LEMONPC_STOP_STRING = 2,       /* a stop string (the player's name, ...) ended it */
    LEMONPC_STOP_CONTEXT_FULL = 3, /* the context ran out mid-reply */
    LEMONPC_STOP_CANCELLED = 4
} lemonpc_stop;

typedef struct lemonpc_reply_info {
    int n_prompt;         /* tokens evaluated for this reply */
    int n_reused;         /* tokens taken from the cache (the persona, earlier turns) */
    int n_generated;
    int n_dropped_turns;  /* oldest turns left out so the conversation fits the context */
    lemonpc_stop stop;
    double prompt_seconds;      /* evaluating the new tokens */
    double first_token_seconds; /* from the call to the first token */
    double total_seconds;
    int attempts;               /* replies drawn: 1, or more when the guard drew again */
    unsigned failed_checks;     /* LEMONPC_CHECK_x bits the reply given still fails (0) */
    double relevance;           /* when the guard chose among draws (best_of): the reply's
                                   log p(reply | line) - log p(reply | empty line), per
                                   token; else 0 */
} lemonpc_reply_info;

/* The player says line; the NPC answers. The reply is streamed to on_text
 * (may be NULL; under the NPC's guard it gets the chosen reply once, whole)
 * and, when reply is not NULL, returned whole (free it with
 * lemonpc_string_free); info may be NULL. The exchange joins the
 * conversation only when the call succeeds: a cancelled or failed call
 * leaves it as it was. When the turns outgrow the context, the oldest are
 * left out of the prompt (the persona never is).
 * [threads: one thread per conversation at a time (another gets LEMONPC_ERR_BUSY)] */
LEMONPC_API lemonpc_status lemonpc_say(lemonpc_conversation *conv, const char *line,
                                       lemonpc_stream_fn on_text, void *user, char **reply,
                                       lemonpc_reply_info *info, lemonpc_error *err);
/* A raw completion on the NPC's model and adapter, outside any
 * conversation: prompt is fed as it is (no persona, no chat template;
 * special tokens such as <|im_start|> in it are recognised) and continued
 * with the NPC's sampling until an end token, max_tokens or a stop string.
 * Streams and returns as lemonpc_say does. [threads: any thread] */
LEMONPC_API lemonpc_status lemonpc_complete(lemonpc_npc *npc, const char *prompt,
                                            lemonpc_stream_fn on_text, void *user, char **reply,
                                            lemonpc_reply_info *info, lemonpc_error *err);
/* A raw completion, as lemonpc_complete, in the conversation's KV cache and
 * with its sampling (lemonpc_conversation_set_sampling) and stop strings:
 * what the cache holds in common with prompt is reused, the rest
 * evaluated. The conversation's turns are left as they are (its next reply
 * re-evaluates what the completion changed in the cache).
 * [threads: one thread per conversation at a time (LEMONPC_ERR_BUSY)] */
LEMONPC_API lemonpc_status lemonpc_conversation_complete(lemonpc_conversation *conv,
                                                         const char *prompt,
                                                         lemonpc_stream_fn on_text, void *user,
                                                         char **reply, lemonpc_reply_info *info,
                                                         lemonpc_error *err);
/* Stops the reply being generated, from any thread; a no-op when none is.
 * [threads: any thread, any time] */
LEMONPC_API void lemonpc_conversation_cancel(lemonpc_conversation *conv);
/* Forgets the turns (the persona prefix stays cached).
 * [threads: one thread per conversation at a time (LEMONPC_ERR_BUSY)] */
LEMONPC_API lemonpc_status lemonpc_conversation_reset(lemonpc_conversation *conv,
                                                      lemonpc_error *err);
/* Turns so far (a player line and its reply are two).
 * [threads: not during a call that changes the conversation] */
LEMONPC_API int lemonpc_conversation_n_turns(const lemonpc_conversation *conv);
/* The i-th turn: role "user" or "assistant" and its text; NULL out of range.
 * Valid until the next call that changes the conversation.
 * [threads: not during a call that changes the conversation] */
LEMONPC_API const char *lemonpc_conversation_turn(const lemonpc_conversation *conv, int i,
                                                  const char **role);
/* One turn of a conversation: role "user" or "assistant", and its text. */
typedef struct lemonpc_turn {
    const char *role;
    const char *text;
} lemonpc_turn;

/* Replaces the conversation's turns with turns[0, n) (a history the game or
 * a client keeps); nothing is generated, nor recorded in the world. The KV
 * cache is kept: the next reply evaluates only from the first token where
 * the prompt of the new turns differs from what the cache holds. A turn
 * equal to the one at its place keeps that turn's sampled tokens.
 * [threads: one thread per conversation at a time (LEMONPC_ERR_BUSY)] */
LEMONPC_API lemonpc_status lemonpc_conversation_set_turns(lemonpc_conversation *conv,
                                                          const lemonpc_turn *turns, size_t n,
                                                          lemonpc_error *err);
/* The conversation's own sampling and extra stop strings, from its next
 * reply on (sampling NULL: the NPC's again; stop[0, n_stop) replace the
 * extra ones set before and join the NPC's and the player's). The
 * sampler's draws restart from sampling->seed. Not kept in a save.
 * [threads: one thread per conversation at a time (LEMONPC_ERR_BUSY)] */
LEMONPC_API lemonpc_status lemonpc_conversation_set_sampling(lemonpc_conversation *conv,
                                                             const lemonpc_sampling *sampling,
                                                             const char *const *stop,
                                                             size_t n_stop, lemonpc_error *err);
/* Tokens held in the conversation's KV cache.
 * [threads: not during a call that changes the conversation] */
LEMONPC_API int lemonpc_conversation_n_cached(const lemonpc_conversation *conv);

/* Saves the turns, the KV cache and the sampler's state to path, atomically
 * (a temporary file renamed over it: a crash or a full disk leaves the
 * previous save whole). [threads: one thread per conversation at a time (LEMONPC_ERR_BUSY)] */
LEMONPC_API lemonpc_status lemonpc_conversation_save(lemonpc_conversation *conv, const char *path,
                                                     lemonpc_error *err);
/* Opens a conversation of npc from a save: it goes on exactly where it was
 * (the next reply is the one the saved conversation would have given). A
 * file from another NPC or model is LEMONPC_ERR_MISMATCH, a damaged one
 * LEMONPC_ERR_FORMAT. [threads: any thread] */
LEMONPC_API lemonpc_conversation *lemonpc_conversation_restore(lemonpc_npc *npc, const char *path,
                                                               lemonpc_error *err);

/* ---- the world's memory ------------------------------------------------ */

/* A world: what happened and what was said, and who knows it, in one SQLite
 * file the game keeps beside its save game. Nothing in it is written or
 * rated by the model: the game says what happened, where, how important it
 * is (1..10) and who saw it; an NPC knows only what reached it. Before each
 * reply the NPC recalls, within a token budget, the writer's lorebook
 * entries the recent turns call up (keys, secondary keys, constant,
 * insertion order) and its memories that best fit the player's line
 * (full-text relevance, recency in game time, importance); they go in a
 * short block just before the player's line. Every exchange is committed
 * when the reply ends, so a crash loses at most the reply being written.
 * All world functions are thread-safe. */
typedef struct lemonpc_world lemonpc_world;

/* Opens a world file, creating it if missing. A file that is not a
 * LeMoNPC world, or a damaged one, is LEMONPC_ERR_FORMAT. [threads: any thread] */
LEMONPC_API lemonpc_world *lemonpc_world_open(const char *path, lemonpc_error *err);
/* After every NPC that uses it is freed. [threads: once every NPC living in it is freed] */
LEMONPC_API void lemonpc_world_close(lemonpc_world *world);

/* The game clock, in game hours (recency is counted on it; 0 at creation). [threads: any thread] */
LEMONPC_API lemonpc_status lemonpc_world_set_time(lemonpc_world *world, double hours,
                                                  lemonpc_error *err);
/* [threads: any thread] */
LEMONPC_API double lemonpc_world_time(const lemonpc_world *world);

typedef struct lemonpc_event {
    const char *text;               /* what happened, in plain words */
    const char *place;              /* where, or NULL */
    int importance;                 /* 1 (trivial) .. 10 (life-changing) */
    const char *const *witnesses;   /* the NPCs who saw it (their names) */
    size_t n_witnesses;
} lemonpc_event;

/* Records an event at the current game time; *id (may be NULL) gets its id
 * for lemonpc_world_tell. Only the witnesses know of it. [threads: any thread] */
LEMONPC_API lemonpc_status lemonpc_world_event(lemonpc_world *world, const lemonpc_event *event,
                                               int64_t *id, lemonpc_error *err);
/* npc learns of an event it did not see (someone told it). [threads: any thread] */
LEMONPC_API lemonpc_status lemonpc_world_tell(lemonpc_world *world, int64_t event_id,
                                              const char *npc, lemonpc_error *err);
/* A fact npc knows about player (player may be NULL for a plain fact),
 * written by the game: "Mira is the blacksmith's daughter". [threads: any thread] */
LEMONPC_API lemonpc_status lemonpc_world_fact(lemonpc_world *world, const char *npc,
                                              const char *player, const char *text,
                                              int importance, lemonpc_error *err);

typedef struct lemonpc_memory {
    int64_t id;
    const char *kind;       /* "event", "said" (the player's words) or "fact" */
    const char *text;
    const char *place;      /* or NULL */
    const char *player;     /* or NULL */
    double time;            /* game hours */
    int importance;
    int witnessed;          /* 1: the NPC saw it; 0: was told or heard it */
} lemonpc_memory;

/* Calls fn for each memory npc has (of player; NULL: all), oldest first;
 * strings are valid during the call; nonzero from fn stops. */
typedef int (*lemonpc_memory_fn)(void *user, const lemonpc_memory *memory);
/* [threads: any thread] */
LEMONPC_API lemonpc_status lemonpc_world_memories(lemonpc_world *world, const char *npc,
                                                  const char *player, lemonpc_memory_fn fn,
                                                  void *user, lemonpc_error *err);
/* npc forgets player: what was said, facts about them, their conversation. [threads: any thread] */
LEMONPC_API lemonpc_status lemonpc_world_forget(lemonpc_world *world, const char *npc,
                                                const char *player, lemonpc_error *err);
/* A copy of the whole world into path (a save slot), atomically: the file
 * at path is replaced only by a complete, checked copy. [threads: any thread] */
LEMONPC_API lemonpc_status lemonpc_world_save_as(lemonpc_world *world, const char *path,
                                                 lemonpc_error *err);
/* The world becomes the save slot at path (one lemonpc_world_save_as
 * wrote): the file is checked first and copied in one transaction, so the
 * world is either the slot or left as it was. The slot is only read; the
 * world's own file keeps what follows. A missing file is
 * LEMONPC_ERR_NOT_FOUND, a damaged one or not a world LEMONPC_ERR_FORMAT.
 * NPCs stay in the world; open conversations keep their turns (what they
 * remember of the world before): close or reset them for the slot's.
 * [threads: any thread] */
LEMONPC_API lemonpc_status lemonpc_world_load(lemonpc_world *world, const char *path,
                                              lemonpc_error *err);

/* The NPC lives in world from now on, under id (NULL: its character's
 * name): its conversations with a named player recall its memories within
 * memory_tokens (<= 0: 256) and record what the player says.
 * [threads: while the NPC has no open conversation (LEMONPC_ERR_BUSY)] */
LEMONPC_API lemonpc_status lemonpc_npc_set_world(lemonpc_npc *npc, lemonpc_world *world,
                                                 const char *id, int memory_tokens,
                                                 lemonpc_error *err);
/* The memory block of the conversation's last reply ("" if none): what the
 * NPC had in mind. Valid until the next reply.
 * [threads: not during a call that changes the conversation] */
LEMONPC_API const char *lemonpc_conversation_memory(const lemonpc_conversation *conv);
/* Stores the conversation (turns and KV cache) in the NPC's world under
 * its player, replacing an earlier one.
 * [threads: one thread per conversation at a time (LEMONPC_ERR_BUSY)] */
LEMONPC_API lemonpc_status lemonpc_world_save_conversation(lemonpc_conversation *conv,
                                                           lemonpc_error *err);
/* The conversation of npc with player as it was: from its stored state
 * when the world has one for all its turns, else rebuilt from the recorded
 * turns (the cache is then refilled by the next reply). No turn recorded
 * and no state: LEMONPC_ERR_NOT_FOUND. [threads: any thread] */
LEMONPC_API lemonpc_conversation *lemonpc_world_load_conversation(lemonpc_npc *npc,
                                                                  const char *player,
                                                                  const char *place,
                                                                  lemonpc_error *err);

/* Frees a string the library returned. [threads: any thread] */
LEMONPC_API void lemonpc_string_free(char *s);

#ifdef __cplusplus
}
#endif

#endif
