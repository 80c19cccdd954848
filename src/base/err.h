/* Error reporting: every fallible function takes an lm_err* and returns
 * an int (0 = ok, -1 = failure) or a pointer (NULL = failure). The message
 * says what was wrong and where (file, offset, tensor, field). */
#ifndef LM_BASE_ERR_H
#define LM_BASE_ERR_H

#include <stddef.h>

#define LM_ERR_MAX 1024

typedef struct lm_err {
    char msg[LM_ERR_MAX];
} lm_err;

/* Formats the message into err (if non-NULL) and returns -1, so callers can
 * write `return lm_errf(err, "...", ...);`. */
int lm_errf(lm_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prepends "prefix: " to an existing message (adds context on the way up). */
int lm_err_prefix(lm_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Like lm_errf but appends ": strerror(errno)". */
int lm_errno(lm_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
