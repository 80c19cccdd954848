/* A character's training set from what a writer keeps in the sheet folder:
 * the curated conversations (the .jsonl files of WORLD/data/<character>, in file-name
 * order) plus, optionally, teacher-generated ones (lemonpc datagen's
 * output), screened and split the same way:
 *
 *   - every user/assistant pair of every conversation runs the dataset
 *     filters (filter.h); a conversation with a failing pair is rejected
 *     whole, with its reasons, into rejected.jsonl;
 *   - near-duplicates are dropped, curated lines first, so a teacher sample
 *     that repeats a writer's line is the one that goes;
 *   - each conversation goes to test (10%), validation (10%) or train by a
 *     hash of the seed and its meta.id (its text when it has no id), so a
 *     conversation stays in its split when others are added;
 *   - the system turn is the persona policy's (sheet.h) with the scene from
 *     meta.asker and meta.location; a conversation that brings its own
 *     system turn keeps it;
 *   - with a tokenizer, the lorebook block lemonpc_say would put before the
 *     last user line (memory/recall.h: the character's and the world's
 *     entries whose keys that line or the four turns before it bring up)
 *     goes there as a system turn, so the model learns from the context a
 *     game gives it. Earlier user lines get none: the runtime does not keep
 *     a block once its reply is made.
 *
 * Writes OUT/train.jsonl, OUT/val.jsonl, OUT/test.jsonl, OUT/rejected.jsonl,
 * OUT/test_questions.jsonl (the test split as eval questions: the last user
 * line, the turns before it as history) and OUT/stats.json. */
#ifndef LM_DATAGEN_ASSEMBLE_H
#define LM_DATAGEN_ASSEMBLE_H

#include <stdint.h>

#include <jansson.h>

#include "base/err.h"

struct lm_character;
struct lm_world;
struct lm_tokenizer;

typedef struct lm_assemble_opts {
    const char *const *files;   /* curated JSONL files, in order */
    size_t n_files;
    const char *const *extra;   /* teacher-generated JSONL files */
    size_t n_extra;
    int persona;                /* lm_persona_mode */
    uint64_t seed;
    int test_pct, val_pct;      /* 10, 10 */
    const char *out;            /* folder (created) */
    const struct lm_tokenizer *tok; /* the model's, for the lorebook block; NULL: no block */
} lm_assemble_opts;

typedef struct lm_assemble_stats {
    size_t read, rejected, duplicates, train, val, test, multi_turn;
    size_t with_lore;           /* kept conversations given a lorebook block */
    size_t per_kind[4];         /* in-world, off-topic, protective, adversarial (kept) */
} lm_assemble_stats;

/* The lorebook block lemonpc_say would put before the last user turn of
 * msgs (a JSON array of {"role", "content"}), inserted there as a system
 * turn, unless a block is already right before that turn. 1 when one was
 * added, 0 when none applies or one is there, -1 on error (err set).
 * Earlier system turns (the persona) are not scanned for keys. */
int lm_assemble_add_lore(json_t *msgs, const struct lm_character *c, const struct lm_world *w,
                         const struct lm_tokenizer *t, lm_err *err);

int lm_assemble(const lm_assemble_opts *o, const struct lm_character *c, const struct lm_world *w,
                lm_assemble_stats *st, lm_err *err);

#endif
