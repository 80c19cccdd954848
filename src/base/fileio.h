/* Whole-file reading and crash-safe writing, shared by every module that
 * loads or saves a file. */
#ifndef LM_BASE_FILEIO_H
#define LM_BASE_FILEIO_H

#include <stdbool.h>
#include <stddef.h>

#include "base/err.h"

/* Reads all of path into a malloc'd buffer with a NUL after the last byte
 * (the length excludes it). With missing_ok, a file that does not exist
 * gives *data = NULL, *len = 0 and success. stdin when path is "-". */
int lm_read_file(const char *path, char **data, size_t *len, bool missing_ok, lm_err *err);
/* The same for a file that must exist and hold at most max bytes: a bigger
 * one is refused ("PATH: larger than MAX bytes") before more than max+1
 * bytes are read, so a parser of untrusted files bounds its memory. */
int lm_read_file_max(const char *path, size_t max, char **data, size_t *len, lm_err *err);

/* Writes path.tmp, flushes it to disk and renames it over path, so path
 * holds either the old or the new contents, never half of them. */
int lm_write_file_atomic(const char *path, const void *data, size_t len, lm_err *err);

/* Creates the folder path and any missing parents, as `mkdir -p` does: an
 * output folder a user names (build/elena/lora) need not have a parent yet.
 * An existing folder is success; an existing file of that name is an error. */
int lm_mkdir_p(const char *path, lm_err *err);

#endif
