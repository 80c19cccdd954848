/* Question requests: who asks the character what, where and why.
 *
 * Every choice for request i comes from a PRNG seeded by (seed, i) alone,
 * so the same seed gives the same requests, and growing --n keeps the first
 * ones unchanged. Per request: the kind (by the mix), an asker (the world's
 * important people, minus the character, then a default pool of common
 * folk), an emotion, a location (the world's places, else a default list),
 * a reason for meeting, how well the asker knows the character (low /
 * medium / high), a topic (in-world: an opinion or objective half of the
 * time; off-topic: an everyday subject; protective: a thing from outside
 * the character's world; adversarial: a tactic), and up to
 * LM_QSPEC_MAX_EXAMPLES example questions of that kind from the template
 * set. Templates then turn the spec into a system and a user message. */
#ifndef LM_DATAGEN_QUESTION_H
#define LM_DATAGEN_QUESTION_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "datagen/prompt.h"
#include "sheet/sheet.h"

#define LM_QSPEC_MAX_EXAMPLES 3

typedef struct lm_asker {
    char *name, *role;
    char *temperament;       /* NULL: drawn from a pool per request */
    char *relationship;      /* the character's relationship text naming them, or NULL */
} lm_asker;

/* Weights of the kinds (need not sum to 1; at least one > 0). */
typedef struct lm_qmix {
    double w[LM_Q_KINDS];
} lm_qmix;

/* in-world 0.6, off-topic 0.15, protective 0.15, adversarial 0.1 */
lm_qmix lm_qmix_default(void);
/* "in-world=0.6,off-topic=0.15,..." ; kinds not named get 0. */
int lm_qmix_parse(const char *spec, lm_qmix *m, lm_err *err);
/* The same form, normalised to sum 1 ("in-world=0.6,..."), into buf. */
void lm_qmix_format(const lm_qmix *m, char *buf, size_t cap);

typedef struct lm_qspec {
    size_t index;
    uint64_t seed;           /* this request's own seed (also the teacher's sampling seed) */
    lm_qkind kind;
    const lm_asker *asker;   /* borrowed from the generator */
    const char *temperament;
    const char *emotion, *location, *reason, *familiarity;
    const char *topic_type;  /* "opinion", "objective", "everyday", "outside-world", "tactic" or NULL */
    const char *topic;       /* its title / text */
    const char *topic_text;  /* an opinion's body, else NULL */
    const char *examples[LM_QSPEC_MAX_EXAMPLES];
    size_t n_examples;
} lm_qspec;

typedef struct lm_qgen lm_qgen;

/* c, w (may be NULL) and tpl are borrowed and must outlive the generator. */
lm_qgen *lm_qgen_new(const lm_character *c, const lm_world *w, const lm_prompt_set *tpl,
                     const lm_qmix *mix, uint64_t seed, lm_err *err);
void lm_qgen_free(lm_qgen *g);

size_t lm_qgen_n_askers(const lm_qgen *g);
const lm_asker *lm_qgen_asker(const lm_qgen *g, size_t i);

/* Spec of request `index`; a pure function of (generator, index). */
void lm_qgen_draw(const lm_qgen *g, size_t index, lm_qspec *s);

/* The request's two messages rendered from the templates (malloc'd). */
int lm_qgen_messages(const lm_qgen *g, const lm_qspec *s, char **system, char **user, lm_err *err);

/* {"index","seed","kind","asker","asker_role","temperament","emotion",
 *  "location","reason","familiarity","topic_type","topic"} (malloc'd JSON). */
char *lm_qspec_meta_json(const lm_qspec *s);

/* Cleans a teacher's reply into one question: drops labels ("Question:",
 * "<asker>:"), wrapping quotes, narration in *asterisks*, and keeps the
 * first paragraph holding a '?' (else the first paragraph), as one line.
 * Returns a malloc'd string, or NULL with the reason in why when nothing
 * usable is left. */
char *lm_question_clean(const char *reply, const char *asker_name, char *why, size_t why_cap);

/* Shared small helpers (also used by answer.c). */
uint64_t lm_dg_mix(uint64_t seed, uint64_t index);
uint64_t lm_dg_next(uint64_t *state);                 /* splitmix64 */
/* Drops one leading "Label:" / "**Label:**" for any of labels (case-insensitive). */
const char *lm_dg_skip_label(const char *s, const char *const *labels, size_t n);
/* The first n sentences of text (malloc'd). */
char *lm_dg_sentences(const char *text, int n, size_t max_bytes);

#endif
