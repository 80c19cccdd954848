/* Growable string buffer. Appends never fail loudly: an allocation failure
 * sets `oom`, later appends do nothing, and the owner checks once at the
 * end (so building a message or a JSON line needs no check per append). */
#ifndef LM_BASE_STRBUF_H
#define LM_BASE_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct lm_sb {
    char *p;      /* NUL-terminated when len > 0; NULL before the first append */
    size_t len, cap;
    bool oom;
} lm_sb;

void lm_sb_add(lm_sb *b, const char *s, size_t n);
void lm_sb_str(lm_sb *b, const char *s);
void lm_sb_printf(lm_sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Hands the string to the caller (never NULL unless oom; "" when empty) and
 * resets the buffer. On oom frees everything and returns NULL. */
char *lm_sb_take(lm_sb *b);
void lm_sb_free(lm_sb *b);

/* Removes leading and trailing white space in place. */
void lm_str_trim(char *s);

#endif
