/* Small helpers private to src/sheet: a growable string, checked
 * allocation, text utilities. Out of memory aborts: sheets are small and a
 * half-parsed sheet is worse than a clear crash report. */
#ifndef LM_SHEET_UTIL_H
#define LM_SHEET_UTIL_H

#include <stdarg.h>
#include <stddef.h>

typedef struct {
    char *s;
    size_t n, cap;
} lm_shb;

void lm_shb_putn(lm_shb *b, const char *s, size_t n);
void lm_shb_puts(lm_shb *b, const char *s);
void lm_shb_putc(lm_shb *b, char c);
void lm_shb_printf(lm_shb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Returns the string (never NULL) and resets b. */
char *lm_shb_take(lm_shb *b);

void *lm_sh_alloc(size_t n);
void *lm_sh_realloc(void *p, size_t n);
char *lm_sh_strdup(const char *s);
char *lm_sh_strndup(const char *s, size_t n);
/* Grows *v (elements of size elem) so index n fits; returns &(*v)[n], zeroed. */
void *lm_sh_push(void *v, size_t *n, size_t elem);

int lm_sh_blank(const char *s, size_t n);
/* Copy of s[0..n) without leading/trailing spaces and tabs. */
char *lm_sh_trim(const char *s, size_t n);
int lm_sh_casecmp(const char *a, const char *b);
size_t lm_sh_edit_distance(const char *a, const char *b);
int lm_sh_read_file(const char *path, size_t max, char **out, size_t *len, char *errbuf,
                    size_t errlen);
/* Writes data to a temporary name beside path, then renames it over path. */
int lm_sh_write_atomic(const char *path, const void *data, size_t len, char *errbuf,
                       size_t errlen);

#endif
