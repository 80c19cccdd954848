/* What an NPC has in mind for one reply: the writer's lorebook entries that
 * the recent turns call up, and the memories that best fit the player's
 * line (memdb.h), packed into a token budget as a short block of text. The
 * runtime puts it beside the persona, just before the player's line. */
#ifndef LM_MEMORY_RECALL_H
#define LM_MEMORY_RECALL_H

#include <stddef.h>

#include "base/err.h"
#include "memory/memdb.h"
#include "sheet/sheet.h"
#include "tokenizer/tokenizer.h"

typedef struct lm_recall {
    const lm_lore *lore[2];   /* the character's and the world's lorebooks (either NULL) */
    lm_memdb *db;             /* or NULL: lore only */
    const char *npc;          /* whose memories */
    int budget;               /* tokens for the whole block */
    int max_memories;         /* memories considered, best first */
    const char *const *skip;  /* [n_skip] texts already in the prompt (the conversation's
                                 own turns): memories saying them again are left out */
    size_t n_skip;
} lm_recall;

/* scan[0, n_scan): the texts lorebook keys are looked for in (the last
 * turns and the player's line); query: the player's line. *out is the
 * block (malloc'd) or NULL when nothing applies; *n_tokens its tokens,
 * never above r->budget. */
int lm_recall_block(const lm_recall *r, const lm_tokenizer *t, const char *const *scan,
                    size_t n_scan, const char *query, char **out, int *n_tokens, lm_err *err);

/* What lemonpc_say scans for lorebook keys besides the player's line, and
 * the block's budget when the NPC has no world memory: the lorebook block
 * below is built with them, so that training and evaluation show the model
 * the context a game gives it. */
#define LM_RECALL_SCAN_TURNS 4
#define LM_RECALL_LORE_BUDGET 256
/* The block's first line. */
#define LM_RECALL_HEADING "Things you know:"

/* The lorebooks' block alone (no world memory) for the player's line after
 * turns[0, n_turns) (the conversation's earlier texts, oldest first): what
 * lemonpc_say puts just before that line as a system turn. ch, w: the
 * character's and the world's lorebooks (either NULL). *out NULL when no
 * entry applies. */
int lm_recall_lore(const lm_lore *ch, const lm_lore *w, const lm_tokenizer *t,
                   const char *const *turns, size_t n_turns, const char *line, char **out,
                   lm_err *err);

/* "yesterday", "3 days ago", ...: how long ago, in game hours, in words. */
void lm_recall_when(double hours_ago, char *buf, size_t cap);

#endif
