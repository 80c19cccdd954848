/* Character and world sheets: the Markdown files a writer edits.
 *
 * A sheet folder holds world.md and characters/NAME.md; several characters
 * share one world. docs/SHEETS.md describes the format. Loading never stops
 * at the first problem: every problem becomes an lm_diag (file:line, level,
 * message, hint) and the loaded data keeps whatever could be read, so
 * `lemonpc check` can list everything at once. */
#ifndef LM_SHEET_SHEET_H
#define LM_SHEET_SHEET_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

/* Limits a sheet field is held to: past WARN a small model's context is
 * strained (warning); past MAX the sheet is refused (error). */
#define LM_SHEET_FIELD_WARN 8000
#define LM_SHEET_FIELD_MAX (1u << 20)
#define LM_SHEET_FILE_MAX (8u << 20)

typedef enum { LM_DIAG_WARNING = 1, LM_DIAG_ERROR = 2 } lm_diag_level;

typedef struct {
    lm_diag_level level;
    char *file;
    int line; /* 1-based; 0 = the file as a whole */
    char *msg;
    char *hint; /* NULL or a suggestion ("did you mean ...") */
} lm_diag;

/* oom: an allocation failed while adding a problem (so one is missing);
 * lm_diags_count counts it as an error, so a load that ran out of memory
 * is never taken for a clean one. */
typedef struct {
    lm_diag *v;
    size_t n, cap;
    int oom;
} lm_diags;

void lm_diags_add(lm_diags *d, lm_diag_level level, const char *file, int line,
                  const char *hint, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
size_t lm_diags_count(const lm_diags *d, lm_diag_level level);
/* Sorts by file, then line (stable), so reports read top to bottom. */
void lm_diags_sort(lm_diags *d);
void lm_diags_free(lm_diags *d);

typedef struct {
    char *key, *value;
    int line;
} lm_kv;

typedef struct {
    char *title, *text;
    int line;
} lm_titled;

typedef enum { LM_ROLE_USER = 0, LM_ROLE_CHAR = 1 } lm_role;

typedef struct {
    lm_role role;
    char *text;
    int line;
} lm_turn;

typedef struct {
    char *title;
    int line;
    lm_turn *turns;
    size_t n_turns;
} lm_example;

/* A named item: a relationship ("Name: text"), a world entry. */
typedef struct {
    char *name, *text;
    int line;
} lm_named;
typedef lm_named lm_relation;
typedef lm_named lm_entry;

/* One lorebook entry (Character Card character_book entry). */
typedef struct {
    char **keys;
    size_t n_keys;
    char **secondary_keys;
    size_t n_secondary_keys;
    int enabled, constant, selective; /* 0/1; -1 = not given */
    int has_insertion_order;
    double insertion_order;
    char *comment; /* NULL = not given */
    char *content;
    int line;
} lm_lore_entry;

typedef struct {
    lm_lore_entry *v;
    size_t n;
} lm_lore;

typedef struct {
    char **v;
    size_t n;
} lm_strlist;

typedef struct lm_character {
    char *path;
    char *name; /* `# Name` */
    int name_line;
    lm_kv *meta; /* front matter, in file order */
    size_t n_meta;
    char *backstory, *alignment, *speaking_style, *knowledge_limits;
    char *scenario, *creator_notes, *system_prompt, *post_history;
    lm_strlist values, objectives, catchphrases;
    lm_titled *opinions;
    size_t n_opinions;
    lm_relation *relationships;
    size_t n_relationships;
    lm_titled *greetings; /* first one = the card's first_mes */
    size_t n_greetings;
    lm_example *examples;
    size_t n_examples;
    lm_lore lore;
    lm_titled *extra; /* sections with unknown headings, kept verbatim */
    size_t n_extra;
} lm_character;

typedef struct {
    char *title; /* as written */
    int line;
    char *text; /* whole body, subsections included */
    lm_entry *entries; /* `### Name` subsections or `- Name: text` bullets */
    size_t n_entries;
} lm_world_section;

typedef struct lm_world {
    char *path;
    char *name;
    int name_line;
    lm_kv *meta;
    size_t n_meta;
    lm_world_section *sections; /* file order, known and unknown */
    size_t n_sections;
    lm_lore lore;
} lm_world;

/* Parses a sheet from memory; problems go to d (file = path). Returns NULL
 * only when the text is unusable as a whole (over LM_SHEET_FILE_MAX, or
 * out of memory), with an error in d ("out of memory" with the path). */
lm_character *lm_character_parse(const char *path, const char *text, size_t len, lm_diags *d);
lm_world *lm_world_parse(const char *path, const char *text, size_t len, lm_diags *d);
/* Reads and parses a file; an unreadable file is an error in d. */
lm_character *lm_character_load(const char *path, lm_diags *d);
lm_world *lm_world_load(const char *path, lm_diags *d);
void lm_character_free(lm_character *c);
void lm_world_free(lm_world *w);

const char *lm_meta_get(const lm_kv *meta, size_t n, const char *key);
/* The world section whose heading matches title (case-insensitive). */
const lm_world_section *lm_world_section_get(const lm_world *w, const char *title);

/* A sheet folder: world.md (optional) and characters/NAME.md, sorted by name.
 * Cross-file checks (relationships, world references) are added to d. */
typedef struct {
    char *dir;
    lm_world *world;
    lm_character **chars;
    size_t n_chars;
} lm_sheet_dir;

lm_sheet_dir *lm_sheet_dir_load(const char *dir, lm_diags *d);
void lm_sheet_dir_free(lm_sheet_dir *s);
/* The character whose id (front matter), file name without .md, full name
 * or first name is key (case-insensitive); NULL if none. */
const lm_character *lm_sheet_find(const lm_sheet_dir *s, const char *key);
/* Checks one character against its world (NULL = none found) and the
 * names of the other characters; used by lm_sheet_dir_load. */
void lm_character_crosscheck(const lm_character *c, const lm_world *w,
                             lm_character *const *others, size_t n_others, lm_diags *d);

/* Markdown writers (used by card import); the reader gives back the same
 * fields. Caller frees; NULL with err set when out of memory. */
char *lm_character_to_md(const lm_character *c, lm_err *err);
char *lm_world_to_md(const lm_world *w, lm_err *err);

/* Known headings, for hints and docs. */
extern const char *const lm_character_headings[];
extern const char *const lm_world_headings[];

/* The persona system prompt for the runtime, before any fine-tuning:
 * who the model is, what it values and how it speaks, and the rules of
 * role-play, kept within max_bytes (0 = no limit) by dropping the least
 * important parts first (examples, then world, opinions, backstory tail). */
typedef struct {
    size_t max_bytes;
    int include_world;    /* world summary (description, places) */
    int include_examples; /* example dialogue lines */
    const char *user_name; /* replaces {{user}}; NULL = "the traveller" */
} lm_persona_opts;

char *lm_persona_prompt(const lm_character *c, const lm_world *w, const lm_persona_opts *o,
                        lm_err *err);

/* The character's opening line (its first greeting, a card's first_mes)
 * with {{char}} and {{user}} replaced (user NULL: "the traveller", as in
 * the persona); NULL with err clear when the sheet has none, NULL with err
 * set when out of memory. Free with free(). */
char *lm_character_greeting(const lm_character *c, const char *user, lm_err *err);

/* Loads the character sheet at path and, when its folder's parent holds a
 * world.md (characters/NAME.md -> world.md), that world (*w stays NULL
 * otherwise). Errors name the sheet's file:line. Caller frees both. */
int lm_sheet_load_character(const char *path, lm_character **c, lm_world **w, lm_err *err);

/* The one persona policy: the system turn an NPC is trained with and served
 * with, built from the sheet. Training data (lemonpc build), evaluation and
 * the runtime all call this, so a model never meets at run time a system turn
 * it was not trained on.
 *   LM_PERSONA_FULL   lm_persona_prompt within 3000 bytes (what the base model
 *                     needs: it knows nothing of the character otherwise)
 *   LM_PERSONA_SHORT  one line naming the character and the world (what a
 *                     fine-tuned NPC needs: the weights hold the rest)
 *   LM_PERSONA_NONE   no persona at all (the seed's second mode)
 * The scene (who is speaking, where), when known, follows as two short
 * lines in every mode. NONE with no scene gives NULL: no system turn. */
typedef enum { LM_PERSONA_NONE = 0, LM_PERSONA_SHORT, LM_PERSONA_FULL } lm_persona_mode;

typedef struct {
    const char *asker;     /* "a young acolyte"; NULL = unknown */
    const char *location;  /* "the Great Cathedral"; NULL = unknown */
} lm_scene;

/* "none", "short", "full"; NULL out of range. */
const char *lm_persona_mode_name(lm_persona_mode m);
/* The mode named s, or -1. */
int lm_persona_mode_parse(const char *s);
/* The system turn (malloc'd), or NULL with err clear for NONE without a
 * scene; NULL with err set on failure. scene may be NULL. */
char *lm_persona_system(const lm_character *c, const lm_world *w, lm_persona_mode mode,
                        const lm_scene *scene, lm_err *err);
/* FNV-1a 64 of the mode and the whole sheet (character and world, as their
 * markdown writers give them back): recorded with a trained NPC, so the
 * runtime can tell a sheet that changed since training. */
int lm_persona_hash(const lm_character *c, const lm_world *w, lm_persona_mode mode,
                    uint64_t *hash, lm_err *err);

#endif
