/* A tiny reader for the Markdown subset sheets use: optional front matter
 * (`---` / `key: value` / `---`), one `# Title`, `## Section`s and their
 * `### Subsection`s. Everything else is body text, kept byte for byte
 * except that a leading `\` before `#` (how the writer escapes body lines
 * that would read as headings) is removed. */
#ifndef LM_SHEET_MD_H
#define LM_SHEET_MD_H

#include <stddef.h>

#include "sheet/sheet.h"
#include "sheet/util.h"

typedef struct {
    char *title;
    int line;
    char *body; /* blank lines trimmed at both ends */
    int body_line; /* line of body's first line */
} lm_md_sub;

typedef struct {
    char *title;
    int line;
    char *body; /* the whole section, subsection headings included */
    int body_line;
    char *intro; /* the part before the first `###` */
    int intro_line;
    lm_md_sub *subs;
    size_t n_subs;
} lm_md_section;

typedef struct {
    lm_kv *meta;
    size_t n_meta;
    char *title;
    int title_line;
    lm_md_section *secs;
    size_t n_secs;
} lm_md_doc;

/* An "out of memory" error for file in d (the sheet readers give up with
 * it); returns -1. */
int lm_diags_oom(lm_diags *d, const char *file);

/* NULL when the text is unusable as a whole (too big, out of memory), with
 * an error in d. */
lm_md_doc *lm_md_parse(const char *file, const char *text, size_t len, lm_diags *d);
void lm_md_free(lm_md_doc *doc);

/* Escapes body text so no line reads as a heading, a front-matter fence or
 * conversation label on the way back in. */
void lm_md_put_body(lm_sb *b, const char *text);

#endif
