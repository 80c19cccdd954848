/* CHARX: Character Card V3's ZIP container (a `.charx` file). card.json
 * at the root holds the card; every other entry (assets referred to by
 * `embeded://path` URIs in data.assets, application files at the root) is
 * kept byte for byte, under its name in the archive, so import -> export
 * gives the same archive contents back. libzip does the ZIP work.
 *
 * Hostile archives are refused with the file and entry named: not a ZIP
 * or truncated, no card.json, entry names that could leave the folder they
 * are written to ("../x", "/x", "a//b", backslashes), duplicates, encrypted
 * entries, and sizes over the limits below (checked on the declared sizes
 * before anything is inflated, and again on the bytes that come out). */
#ifndef LM_SHEET_CARD_CHARX_H
#define LM_SHEET_CARD_CHARX_H

#include <stddef.h>

#include "base/err.h"
#include "sheet/card.h"

#define LM_CHARX_JSON_MAX (16u << 20)   /* card.json, uncompressed */
#define LM_CHARX_ASSETS_MAX (64u << 20) /* all other entries together, uncompressed */
#define LM_CHARX_FILE_MAX (96u << 20)   /* the .charx file itself */
#define LM_CHARX_ENTRIES_MAX 4096
#define LM_CHARX_NAME_MAX 512 /* bytes in one entry name */

typedef struct {
    char *name; /* path inside the archive, '/'-separated, validated */
    unsigned char *data;
    size_t len;
} lm_charx_file;

typedef struct {
    lm_charx_file *v;
    size_t n;
} lm_charx_files;

void lm_charx_files_clear(lm_charx_files *f);

/* 1 when buf starts like a ZIP archive ("PK\3\4", or "PK\5\6" for an
 * empty one). */
int lm_charx_sniff(const unsigned char *buf, size_t len);

/* Why an entry name cannot be written under a folder (NULL when it can).
 * Directory entries (a trailing '/') are checked without it. */
const char *lm_charx_name_problem(const char *name);

/* Splits an archive: *json (NUL-terminated) gets card.json, files (may be
 * NULL) every other file entry in archive order; directory entries are
 * dropped. src names the archive in errors. */
int lm_charx_read(const unsigned char *buf, size_t len, const char *src, char **json,
                  size_t *json_len, lm_charx_files *files, lm_err *err);

/* Builds an archive: card.json first, then files in the given order. */
int lm_charx_write(const char *json, size_t json_len, const lm_charx_files *files,
                   unsigned char **out, size_t *out_len, lm_err *err);

/* Reads and parses a .charx file: the card (errors name "path (card.json)")
 * and its other entries. */
int lm_charx_load(const char *path, lm_card *out, lm_charx_files *files, lm_err *err);

/* The files under dir (recursively, sorted by name, names relative to
 * dir), with the same limits as an archive. A missing dir is no files. */
int lm_charx_dir_read(const char *dir, lm_charx_files *files, lm_err *err);
/* Writes files under dir, which must not exist yet (it is created). On
 * error dir is removed again. */
int lm_charx_dir_write(const char *dir, const lm_charx_files *files, lm_err *err);
/* rm -r (no error when path is absent). */
int lm_charx_dir_remove(const char *path);

#endif
