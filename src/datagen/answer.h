/* Answer requests: the teacher plays the character and answers one
 * generated question.
 *
 * The system message is answer_persona.txt followed by
 * answer_instruction.txt, rendered with: the persona (lm_persona_prompt
 * without its example lines), the catchphrases, style examples (the sheet's
 * example conversations, then the promoted examples from review, newest
 * last), the question's context (asker, location, kind) and the rules
 * (direct speech only, no stage directions or tone descriptions, no
 * self-introduction, stay in the world, honest in-character ignorance for
 * protective questions, stay in character against adversarial ones). The
 * user message is the question itself. */
#ifndef LM_DATAGEN_ANSWER_H
#define LM_DATAGEN_ANSWER_H

#include <stddef.h>

#include "base/err.h"
#include "datagen/prompt.h"
#include "datagen/question.h"
#include "sheet/sheet.h"

/* A question and the character's answer, used as a style example. */
typedef struct lm_style_example {
    const char *question, *answer;
} lm_style_example;

/* Style examples from a JSONL file of {"messages": [..user.., ..assistant..]}
 * lines (the last user/assistant pair of each), e.g. review's promoted
 * answers (style_examples.c). Strings owned by *out (free with
 * lm_style_examples_free). */
int lm_style_examples_load(const char *path, lm_style_example **out, size_t *n, lm_err *err);
void lm_style_examples_free(lm_style_example *v, size_t n);

typedef struct lm_agen lm_agen;

/* c, w (may be NULL) and tpl are borrowed; promoted examples are copied.
 * max_examples caps the style examples shown per request (0: 8); when
 * there are more, each request shows a seeded selection. max_bytes (0: no
 * limit) caps the system message: the persona gets at most half of it and
 * style examples are dropped until the message fits. */
lm_agen *lm_agen_new(const lm_character *c, const lm_world *w, const lm_prompt_set *tpl,
                     const lm_style_example *promoted, size_t n_promoted, size_t max_examples,
                     size_t max_bytes, lm_err *err);
void lm_agen_free(lm_agen *g);

size_t lm_agen_n_examples(const lm_agen *g);

/* The system message for answering s's question (malloc'd). */
char *lm_agen_system(const lm_agen *g, const lm_qspec *s, lm_err *err);

/* Cleans the teacher's answer: drops a leading "<Name>:" label, wrapping
 * quotes, and anything from a line where another speaker starts talking
 * ("User:", "<asker>:"). NULL with the reason in why when nothing is left. */
char *lm_answer_clean(const char *reply, const char *character, const char *asker,
                      char *why, size_t why_cap);

#endif
