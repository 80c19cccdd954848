/* A blind review of two NPCs: the same questions answered by both (two
 * `lemonpc eval` folders), each pair of replies shown in a shuffled order
 * to a reader who must not know which NPC wrote which, and the key kept
 * apart until the verdicts are in. What the metrics cannot read (does the
 * reply make sense? is it a line a writer would ship?) a person, or a judge
 * model, can; blind, their preference is a measurement.
 *
 *     lm_blind_write("evA", "evB", "review", 1, &err);
 *         review/items.jsonl  {"item", "line", "asker", "location", "history",
 *                              "reply_1", "reply_2"} per pair that differs
 *         review/items.md     the same to read
 *         review/key.json     which NPC wrote reply_1 of each item (do not open),
 *                             its question id, category and lorebook block
 *     ... the reader writes review/verdicts.jsonl: {"item": N, "better": "1"|"2"|"tie"}
 *     lm_blind_tally("review", &err);
 *         review/verdict.md, verdict.json: the wins of each NPC, ties, pairs
 *         that were the same, by category, and the two-sided sign test's p
 */
#ifndef LM_EVAL_BLIND_H
#define LM_EVAL_BLIND_H

#include <stdint.h>

#include "base/err.h"

/* Pairs the answers of dir_a and dir_b by id (both must hold the same ids);
 * the question's asker, place and earlier turns come from the question file
 * dir_a's report names, when it can be read. seed orders the items and sides. */
int lm_blind_write(const char *dir_a, const char *dir_b, const char *out, uint64_t seed,
                   lm_err *err);

/* Reads dir/key.json and dir/verdicts.jsonl (every item once) and writes the
 * verdict. */
int lm_blind_tally(const char *dir, lm_err *err);

/* The two-sided exact sign test: the probability, were neither NPC better,
 * of a split at least as uneven as wins_a to wins_b (ties left out). */
double lm_sign_test_p(int wins_a, int wins_b);

#endif
