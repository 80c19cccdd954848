/* Prompt templates: the text files a writer edits to steer the teacher
 * (docs/DATAGEN.md). A deliberately tiny language:
 *
 *   {{name}}                 the variable's text; an unknown name is an error
 *   {{#if name}}..{{else}}..{{/if}}   a string is true when non-empty, a
 *                            list when it has items, an unset name is false
 *   {{#each name}}..{{/each}}  once per item of a list: {{this}} is the
 *                            item, {{@index}} its 1-based number
 *   {{! comment }}           dropped
 *
 * A block tag ({{#if}}, {{else}}, {{/if}}, {{#each}}, {{/each}}, {{!..}})
 * alone on its line takes the whole line with it, so templates can put
 * tags on their own lines without leaving blank lines behind. Templates
 * are parsed when loaded, so a typo is reported (file:line) before any
 * request is sent. Nesting is limited to LM_TPL_MAX_DEPTH. */
#ifndef LM_DATAGEN_PROMPT_H
#define LM_DATAGEN_PROMPT_H

#include <stddef.h>

#include "base/err.h"

#define LM_TPL_MAX_DEPTH 16
/* Rendering stops with an error past this (nested #each can multiply). */
#define LM_TPL_MAX_OUTPUT (4u << 20)

/* Kinds of generated question (docs/DATAGEN.md says what each is for). */
typedef enum {
    LM_Q_IN_WORLD = 0,  /* about the character, their world, opinions, goals */
    LM_Q_OFF_TOPIC,     /* everyday small talk unrelated to the sheet */
    LM_Q_PROTECTIVE,    /* things the character cannot know: answered with honest ignorance */
    LM_Q_ADVERSARIAL,   /* attempts to break character */
    LM_Q_KINDS
} lm_qkind;

/* "in-world", "off-topic", "protective", "adversarial". */
const char *lm_qkind_name(lm_qkind k);
/* -1 when name is none of them. */
int lm_qkind_parse(const char *name);

typedef struct lm_tpl lm_tpl;

/* Parses a template; name (a file path) is used in error messages. */
lm_tpl *lm_tpl_parse(const char *name, const char *text, size_t len, lm_err *err);
lm_tpl *lm_tpl_load(const char *path, lm_err *err);
void lm_tpl_free(lm_tpl *t);

/* Variables: strings and lists of strings, by name (later set wins). */
typedef struct lm_tpl_var {
    char *name;
    char *value;        /* string; NULL for a list */
    char **items;       /* list */
    size_t n_items;
} lm_tpl_var;

typedef struct lm_tpl_vars {
    lm_tpl_var *v;
    size_t n, cap;
} lm_tpl_vars;

/* value NULL sets "" (so {{name}} renders nothing and #if is false). */
int lm_tpl_set(lm_tpl_vars *vs, const char *name, const char *value, lm_err *err);
int lm_tpl_setf(lm_tpl_vars *vs, lm_err *err, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int lm_tpl_set_list(lm_tpl_vars *vs, const char *name, const char *const *items, size_t n,
                    lm_err *err);
void lm_tpl_vars_free(lm_tpl_vars *vs);

/* malloc'd text; fails (naming template:line) on an unknown variable or a
 * string used by #each / a list used as {{name}}. */
char *lm_tpl_render(const lm_tpl *t, const lm_tpl_vars *vs, lm_err *err);

/* The template files of one generator setup, from a directory (see
 * datagen/templates/). Every file is required except the examples file. */
typedef struct lm_prompt_set {
    char *dir;
    lm_tpl *question_persona;     /* question_persona.txt: system message of a question request */
    lm_tpl *question_instruction; /* question_instruction.txt: its user message */
    lm_tpl *answer_persona;       /* answer_persona.txt: first part of the answer system message */
    lm_tpl *answer_instruction;   /* answer_instruction.txt: its second part (rules, context) */
    /* question_examples.txt: example questions per kind, "## kind" headings
     * followed by "- question" bullets. */
    char **examples[LM_Q_KINDS];   /* [kind][i] */
    size_t n_examples[LM_Q_KINDS];
} lm_prompt_set;

lm_prompt_set *lm_prompt_set_load(const char *dir, lm_err *err);
void lm_prompt_set_free(lm_prompt_set *s);

/* Parses the examples format into s->examples (exposed for tests). */
int lm_prompt_parse_examples(lm_prompt_set *s, const char *path, const char *text, size_t len,
                             lm_err *err);

#endif
