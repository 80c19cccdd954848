/* The reply guard: checks an NPC's reply before the player sees it, with
 * the same text checks `lemonpc eval` scores (eval/metrics.h), and says
 * which failed, so the runtime can draw the reply again.
 *
 * The runtime does not know what kind of line the player said, so the
 * checks are those that hold for any line: the modern-knowledge check runs
 * on every reply (our world's words or years the line did not bring: 1 of
 * 1,470 of the writers' own Orlando answers trips it), and the dodge check
 * ("I do not know", "I would rather not say") only when the lorebook or the
 * NPC's memory put something about the line in front of it and the line is
 * not about our world; the ignorance check asks a line about our world
 * (lm_guard_line_is_ours) for a reply that says it does not know.
 *
 *     lm_guard *g = lm_guard_new(character, world, LEMONPC_CHECK_DEFAULT, &err);
 *     unsigned failed = lm_guard_check(g, line, reply, "Mira", ended, knows);
 *     for (attempt = 1; failed && attempt <= retries; attempt++) {
 *         lm_sampler_params sp = lm_guard_retry_params(&npc_sp, temperature, turn, attempt);
 *         ... draw again with sp, check again ...
 *     }
 *
 * A guard is read-only after creation and may be shared by threads. */
#ifndef LM_RUNTIME_GUARD_H
#define LM_RUNTIME_GUARD_H

#include <stdbool.h>
#include <stdint.h>

#include "base/err.h"
#include "model/sampler.h"

struct lm_character;
struct lm_world;
typedef struct lm_guard lm_guard;

/* checks: LEMONPC_CHECK_x bits (include/lemonpc.h); character and world
 * may be NULL (no name, sheet or world to check against). Every word of
 * the two is what the NPC knows of names (check/vocab.h). */
lm_guard *lm_guard_new(const struct lm_character *character, const struct lm_world *world,
                       unsigned checks, lm_err *err);
void lm_guard_free(lm_guard *g);

/* Whether the player's line is about our world: it names something neither
 * the sheet nor its world holds ("Napoleon", "SQL"), or brings modern words
 * or years of our calendar. */
bool lm_guard_line_is_ours(const lm_guard *g, const char *line);

/* The checks reply fails, as LEMONPC_CHECK_x bits (0: it passes). line: the
 * player's line; player: their name or NULL; ended: the model ended its
 * turn itself; knows: the lorebook or memory block was given for it. */
unsigned lm_guard_check(const lm_guard *g, const char *line, const char *reply,
                        const char *player, bool ended, bool knows);

/* Whether a draw failing `failed` replaces the best so far (have: there
 * is one; it fails best_failed): fewer failed checks win, the earlier
 * draw on a tie. */
bool lm_guard_prefer(unsigned failed, unsigned best_failed, bool have);

/* "voice, modern" of the bits into buf (always NUL-terminated). */
char *lm_guard_names(unsigned checks, char *buf, size_t cap);
/* The bits of a comma-separated list of check names ("voice,modern",
 * "default", "all"), or -1 with err naming the unknown one. */
long lm_guard_parse(const char *list, lm_err *err);

/* The sampling of retry `attempt` (1, 2, ...) of a reply: the NPC's own
 * when it samples, else the runtime's defaults at temperature; the seed
 * comes from the NPC's seed, the turn and the attempt, so a conversation
 * restored from a save retries with the same draws. */
lm_sampler_params lm_guard_retry_params(const lm_sampler_params *sp, float temperature,
                                        uint64_t turn, int attempt);

#endif
