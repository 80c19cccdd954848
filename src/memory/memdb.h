/* The world's memory, in one SQLite file (WAL: a process killed at any
 * moment loses at most the statement it was running; every call below is
 * one transaction).
 *
 *   memories   what happened or was said: kind, text, place, game time,
 *              importance 1..10 (set by the game, never by the model),
 *              the player it concerns, and an FTS5 index of the text
 *   knows      which NPC knows which memory: a world event reaches only
 *              its witnesses and those told of it
 *   turns      every exchange of every conversation, by (npc, player)
 *   convs      a conversation's saved state (turns + KV cache), optional
 *   meta       schema version, the game clock
 *
 * NPCs and players are named by strings the game chooses (an NPC by its
 * character's name). Nothing here calls the model. */
#ifndef LM_MEMORY_MEMDB_H
#define LM_MEMORY_MEMDB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

typedef struct lm_memdb lm_memdb;

typedef enum { LM_MEM_EVENT = 0, LM_MEM_SAID = 1, LM_MEM_FACT = 2 } lm_mem_kind;

typedef struct lm_memory {
    int64_t id;
    lm_mem_kind kind;
    const char *text;
    const char *place;      /* or NULL */
    const char *player;     /* who said it / whom it is about, or NULL */
    double time;            /* game hours */
    int importance;         /* 1..10 */
    bool witnessed;         /* the NPC saw it (else: was told) */
} lm_memory;

/* Opens (creating if missing) a world file. A file that is not a LeMoNPC
 * world, or a damaged one, is refused with a message naming it. */
lm_memdb *lm_memdb_open(const char *path, lm_err *err);
void lm_memdb_close(lm_memdb *db);
const char *lm_memdb_path(const lm_memdb *db);

double lm_memdb_time(lm_memdb *db);
int lm_memdb_set_time(lm_memdb *db, double hours, lm_err *err);

/* Adds m (its id, time ignored: the clock's) known by knowers (witnessed:
 * they saw it). Returns the new id, or -1. */
int64_t lm_memdb_add(lm_memdb *db, const lm_memory *m, const char *const *knowers,
                     size_t n_knowers, bool witnessed, lm_err *err);
/* npc learns of memory id (was told); a no-op if it knew. */
int lm_memdb_tell(lm_memdb *db, int64_t id, const char *npc, lm_err *err);

/* The memories npc knows that best fit query: full-text relevance (bm25),
 * recency in game time and importance, each in [0, 1], summed; at most
 * limit, best first. Without a query (or no word in it) recency and
 * importance alone. fn is called per hit (strings valid during the call);
 * nonzero from fn stops. */
typedef int (*lm_memory_fn)(void *ud, const lm_memory *m, double score);
int lm_memdb_recall(lm_memdb *db, const char *npc, const char *query, int limit,
                    lm_memory_fn fn, void *ud, lm_err *err);
/* Every memory npc knows (of player, when not NULL), oldest first. */
int lm_memdb_list(lm_memdb *db, const char *npc, const char *player, lm_memory_fn fn, void *ud,
                  lm_err *err);
/* npc forgets what it knows of player (what was said, facts about them);
 * *n_forgotten how many. */
int lm_memdb_forget(lm_memdb *db, const char *npc, const char *player, int *n_forgotten,
                    lm_err *err);

/* Appends a conversation turn (role "user" or "assistant"). */
int lm_memdb_add_turn(lm_memdb *db, const char *npc, const char *player, const char *role,
                      const char *text, lm_err *err);
/* The turns of (npc, player), oldest first; *n of them. */
typedef int (*lm_turn_fn)(void *ud, const char *role, const char *text);
int lm_memdb_turns(lm_memdb *db, const char *npc, const char *player, lm_turn_fn fn, void *ud,
                   int *n, lm_err *err);

/* A conversation's saved state (opaque bytes) covering its first n_turns
 * turns; get: *state NULL (and 0) when none was saved. */
int lm_memdb_put_state(lm_memdb *db, const char *npc, const char *player, const void *state,
                       size_t n, int n_turns, lm_err *err);
int lm_memdb_get_state(lm_memdb *db, const char *npc, const char *player, void **state,
                       size_t *n, int *n_turns, lm_err *err);

/* A consistent copy of the whole world into path, atomically: written
 * beside it, checked, then renamed over it (the previous file at path stays
 * whole if anything fails). */
int lm_memdb_save_as(lm_memdb *db, const char *path, lm_err *err);

/* The world becomes the save at path (a file save_as wrote), atomically:
 * the file is checked first (undamaged, a LeMoNPC world of this schema
 * version) in the same read transaction that copies it, and the copy into
 * the world is one transaction, so the world is either the save or left as
 * it was. Returns 0, or -1 (an I/O failure), LM_MEMDB_MISSING (no file at
 * path) or LM_MEMDB_NOT_A_WORLD (damaged, empty, or not a world). */
#define LM_MEMDB_MISSING (-2)
#define LM_MEMDB_NOT_A_WORLD (-3)
int lm_memdb_load(lm_memdb *db, const char *path, lm_err *err);

#endif
