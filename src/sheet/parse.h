/* Parsing helpers shared by the character and world sheet readers. Those
 * that allocate return -1 when out of memory: what they added so far stays
 * in *out for its owner to free, and the reader gives up with
 * lm_diags_oom. */
#ifndef LM_SHEET_PARSE_H
#define LM_SHEET_PARSE_H

#include "sheet/md.h"

/* Calls fn for each line of text (no newline), with its 1-based line;
 * stops at the first fn that returns non-zero and returns -1. */
typedef int (*lm_line_fn)(void *ctx, const char *s, size_t n, int line);
int lm_each_line(const char *text, int first_line, lm_line_fn fn, void *ctx);

/* Bullets (`- `, `* `, `+ `, `1. `) into items; other lines continue the
 * previous item, or become an item with a warning. */
int lm_parse_list(const char *file, const lm_md_section *s, lm_strlist *out, lm_diags *d);

/* `- Name: text` / `- **Name**: text` / `- **Name:** text` (and
 * `### Name` subsections); errors for bullets without a name. */
int lm_parse_named(const char *file, const lm_md_section *s, lm_named **out, size_t *n,
                   int require_colon, lm_diags *d);

int lm_parse_lore(const char *file, const lm_md_section *s, lm_lore *out, lm_diags *d);
void lm_lore_free(lm_lore *l);
void lm_strlist_free(lm_strlist *l);
/* Keys joined by ", " with `\` escaping `,` and `\`; and back. */
void lm_put_keys(lm_sb *b, char *const *keys, size_t n);
int lm_split_keys(const char *s, char ***keys, size_t *n);

/* Warns past LM_SHEET_FIELD_WARN (when warn), errors past LM_SHEET_FIELD_MAX.
 * A `## Lore` section passes warn = false: the runtime never puts it in the
 * context whole, only the entries a turn calls up, within the lore budget. */
void lm_check_length(const char *file, const lm_md_section *s, bool warn, lm_diags *d);
/* Index of title in known (case-insensitive) or -1; on -1 writes the
 * closest heading (edit distance) or the known list into hint. */
int lm_heading_index(const char *title, const char *const *known, char *hint, size_t hintlen);

#endif
