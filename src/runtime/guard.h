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
 *     // draw(ud, attempt, d): sample with lm_guard_retry_params(&npc_sp,
 *     // temperature, turn, attempt) past the first, then
 *     // d->failed = lm_guard_check(g, line, d->text, "Mira", ended, knows)
 *     lm_guard_draw_all(best_of, retries, draw, empty, ud, &draws, &chosen, &err);
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

/* One reply the guard drew. The draw function fills everything but
 * relevance; the guard owns nothing in it (lm_guard_draws_free frees text
 * and tokens). */
typedef struct lm_guard_draw {
    char *text;          /* malloc'd */
    int32_t *tokens;     /* malloc'd: the sampled tokens, when they spell text; else NULL */
    size_t n_tokens;
    unsigned failed;     /* LEMONPC_CHECK_x bits it fails */
    double logp;         /* log p(reply and its end token | the prompt), best_of > 1 only */
    int n_logp;          /* the tokens logp sums over */
    double relevance;    /* set by lm_guard_draw_all when it ranks: per token,
                            logp - log p(reply | the line left out) */
    int stop, n_gen;     /* the caller's own: why it stopped, tokens generated */
} lm_guard_draw;

typedef struct lm_guard_draws {
    lm_guard_draw *d;
    size_t n, cap;
} lm_guard_draws;

void lm_guard_draws_free(lm_guard_draws *ds);

/* Draws reply `attempt` (0: the NPC's own sampling; then
 * lm_guard_retry_params) into *d (zeroed), checks included. */
typedef int (*lm_guard_draw_fn)(void *ud, int attempt, lm_guard_draw *d, lm_err *err);
/* log p(d's reply and its end token) when the player's line, and the
 * lorebook block it called up, are left out of the prompt: an empty line. */
typedef int (*lm_guard_empty_fn)(void *ud, const lm_guard_draw *d, double *logp, lm_err *err);

/* The guard's draws for one reply: best_of replies (at least one), then,
 * while none passes the checks, up to retries more, one at a time. The
 * reply given (*chosen) is among those failing the fewest checks; with
 * best_of > 1 it is the one among them most about the line: the highest
 * pointwise mutual information per token between the reply and the line,
 * log p(reply | line) - log p(reply | empty line) (Li et al. 2016, "A
 * Diversity-Promoting Objective Function for Neural Conversation Models").
 * "I have never heard of it" is as likely after any line; a reply that
 * takes up the line's own matter is likelier after it than after none.
 * Otherwise, and on a tie, the earliest. empty may be NULL when
 * best_of <= 1. On failure *ds holds the draws made so far. */
int lm_guard_draw_all(int best_of, int retries, lm_guard_draw_fn draw, lm_guard_empty_fn empty,
                      void *ud, lm_guard_draws *ds, size_t *chosen, lm_err *err);

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
