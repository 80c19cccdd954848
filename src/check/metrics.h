/* Cheap in-character metrics of an NPC's answers, without a judge model.
 *
 *     lm_eval_checker *k = lm_eval_checker_new(character, &err);   // character may be NULL
 *     lm_eval_flags f;
 *     lm_eval_check(k, question, answer, "protective", stopped_at_eos, &f);
 *     lm_eval_tally_add(&tally, &f, "protective");  ... lm_eval_tally_rates(...)
 *
 * Each flag is one check a reader could make by hand, with a unit test of
 * text it must flag and text it must pass (tests/test_eval_metrics.c):
 *   eos              the model ended its turn itself (<|im_end|>), not cut by
 *                    max tokens or the context
 *   assistant        assistant speech ("as an AI", "How can I help you today",
 *                    "I am an AI"): the dataset filter of the same name; and
 *                    code or markdown in backticks
 *   refusal          moralising refusals ("I can't help with that")
 *   stage            stage directions (*smiles*, (laughs), "Orlando nods.")
 *   self_intro       opens with "I am <name>", "My name is", "<name> here"
 *   speaks_for_user  writes the other side's line: a line opening with
 *                    "User:", "Player:", "You:", "Traveller:", "Human:",
 *                    "{{user}}" or the asker's name and a colon, or a turn
 *                    tag (<|im_start|>)
 *   breaks           talks of the fiction as fiction ("role-play", "as a
 *                    character", "in this story")
 *   modern           (protective questions only) explains modern things with
 *                    confidence ("a smartphone is a", "the internet is"), or
 *                    brings in modern words the question did not use (atoms,
 *                    electricity, planets, code: "A reactor splits atoms"), or a
 *                    year of our calendar it did not bring ("served from
 *                    1774 to 1825")
 *   ignorant         (protective questions only) says it does not know: "never
 *                    heard", "I do not know", "no idea", "a strange word", or
 *                    opens by echoing the word as a question ("A tele-phone?")
 *   repetition       a loop: an 8-word n-gram twice, or distinct 3-grams below
 *                    80% in an answer of >= 30 words
 *   dodges           (in-world questions only) claims not to know or declines:
 *                    "never heard/seen", "I do not know", "cannot say",
 *                    "no idea", "would rather not say": on his own world a
 *                    fine-tuned NPC learned these from its protective data
 *                    and used them as fillers (4 in 10 in-world answers)
 *   recital          (off-topic questions only) recites the sheet: 12
 *                    consecutive words of the sheet, or 3 or more of the
 *                    sheet's proper names (Solaris, Chancellor, Unblessed, ...)
 *                    that the question did not use: the prototype's failure,
 *                    the biography instead of an answer
 *   catchphrase      uses one of the sheet's catchphrases
 * in_character = none of assistant, refusal, stage, self_intro,
 * speaks_for_user, breaks, modern. An answer passes when it is in
 * character and ended its turn, and for a protective question also shows
 * honest ignorance. None of this sees values: taking a bribe in a knightly
 * voice passes (read the answers; an LLM judge would be the next step). */
#ifndef LM_CHECK_METRICS_H
#define LM_CHECK_METRICS_H

#include <stdbool.h>
#include <stddef.h>

#include "base/err.h"

struct lm_character;

typedef struct lm_eval_flags {
    bool eos, assistant, refusal, stage, self_intro, speaks_for_user, breaks, modern,
         repetition, recital, catchphrase, ignorant, dodges;
    bool in_character;   /* derived, see above */
    int words;
} lm_eval_flags;

typedef struct lm_eval_checker lm_eval_checker;

lm_eval_checker *lm_eval_checker_new(const struct lm_character *c, lm_err *err);
void lm_eval_checker_free(lm_eval_checker *k);

/* category: "in-world", "off-topic", "protective", "adversarial" (anything
 * else counts as in-world); asker may be NULL. */
void lm_eval_check(const lm_eval_checker *k, const char *question, const char *answer,
                   const char *category, const char *asker, bool eos, lm_eval_flags *f);

/* Running counts over a set of answers, overall and per category. */
enum { LM_EVAL_CAT_IN_WORLD, LM_EVAL_CAT_OFF_TOPIC, LM_EVAL_CAT_PROTECTIVE,
       LM_EVAL_CAT_ADVERSARIAL, LM_EVAL_NCAT };
int lm_eval_category(const char *name);           /* LM_EVAL_CAT_x (in-world if unknown) */
const char *lm_eval_category_name(int cat);

typedef struct lm_eval_counts {
    size_t n, eos, assistant, refusal, stage, self_intro, speaks_for_user, breaks, modern,
           repetition, recital, catchphrase, ignorant, dodges, in_character, passed;
    double words;
} lm_eval_counts;

typedef struct lm_eval_tally {
    lm_eval_counts all, cat[LM_EVAL_NCAT];
} lm_eval_tally;

void lm_eval_tally_add(lm_eval_tally *t, const lm_eval_flags *f, const char *category);

/* distinct-n over a set of texts: unique word n-grams / all word n-grams
 * (lowercased ASCII words); 0 for no n-grams. */
double lm_eval_distinct(const char *const *texts, size_t n_texts, int n);

#endif
