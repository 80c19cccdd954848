/* An LLM judge for `lemonpc eval --judge-*`: a larger model scores each
 * answer 1-7 on Character-LLM's five dimensions (Shao et al. 2023), which
 * the cheap checks of metrics.h cannot see (taking a bribe in a knightly
 * voice passes them):
 *   memorization   consistent with the character's life, people and facts
 *   values         acts and speaks by the character's values and alignment
 *   personality    the character's manner, tone and way of speaking
 *   hallucination  avoids knowledge the character could not have (7: none)
 *   stability      stays the character: no assistant talk, no drift
 * The judge sees the sheet (the persona policy's full system turn), the
 * scene, the earlier turns, the question and the answer, and must reply
 * with one JSON object of the five integer scores (any text around it is
 * ignored). Any teacher backend serves (datagen/teacher.h): an OpenAI-
 * compatible server or a local GGUF. */
#ifndef LM_EVAL_JUDGE_H
#define LM_EVAL_JUDGE_H

#include "base/err.h"

enum {
    LM_JUDGE_MEMORIZATION,
    LM_JUDGE_VALUES,
    LM_JUDGE_PERSONALITY,
    LM_JUDGE_HALLUCINATION,
    LM_JUDGE_STABILITY,
    LM_JUDGE_N
};

/* "memorization", ...; NULL out of range. */
const char *lm_judge_dim_name(int d);

/* The judge's system turn (static text). */
const char *lm_judge_system(void);

/* The judge's user turn (malloc'd): profile (the sheet as text), the scene
 * (asker, location; may be NULL), earlier turns as "role: text" lines (may
 * be NULL), the question and the answer. NULL on out of memory. */
char *lm_judge_prompt(const char *profile, const char *asker, const char *location,
                      const char *history, const char *question, const char *answer);

/* Reads the five scores from a judge's reply: the first JSON object in it
 * that holds all five keys as integers 1..7 (numbers written as strings or
 * with a fraction are refused). On failure the error says what was wrong
 * and quotes the start of the reply. */
int lm_judge_parse(const char *reply, int scores[LM_JUDGE_N], lm_err *err);

#endif
