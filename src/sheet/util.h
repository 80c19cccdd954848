/* Small helpers private to src/sheet: a growable array and text utilities.
 * Nothing here aborts: an allocation that fails returns NULL, and the
 * caller turns it into an error (an lm_err, or an lm_diags error for the
 * sheet readers) that names the file. Strings are built with base/strbuf. */
#ifndef LM_SHEET_UTIL_H
#define LM_SHEET_UTIL_H

#include <stddef.h>

#include "base/strbuf.h"

/* Grows *v (elements of size elem) so index *n fits and returns &(*v)[*n],
 * zeroed, with *n one more; NULL when out of memory (*v and *n unchanged). */
void *lm_sh_push(void *v, size_t *n, size_t elem);

int lm_sh_blank(const char *s, size_t n);
/* Copy of s[0..n) without leading/trailing spaces and tabs; NULL when out
 * of memory. */
char *lm_sh_trim(const char *s, size_t n);
int lm_sh_casecmp(const char *a, const char *b);
size_t lm_sh_edit_distance(const char *a, const char *b);

#endif
