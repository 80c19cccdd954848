/* Character Cards (V1, V2 "chara_card_v2", V3 "chara_card_v3"), as JSON or
 * embedded in a PNG (tEXt chunk "chara" = base64 V2 JSON, "ccv3" = base64
 * V3 JSON), and their mapping to and from sheets.
 *
 * Import keeps everything: fields a sheet has no place for (extensions,
 * V3-only fields, unknown fields, lorebook settings) go to a sidecar
 * `<name>.card-extra.json`, and so does the original text of any field the
 * Markdown round trip would alter, together with what the sheet says
 * instead. Export uses that original while the sheet still says the same,
 * so import -> export gives back the same card (equal as JSON), and a
 * writer's edits win over the stored copy. */
#ifndef LM_SHEET_CARD_H
#define LM_SHEET_CARD_H

#include <jansson.h>
#include <stddef.h>

#include "base/err.h"
#include "sheet/sheet.h"

#define LM_CARD_FILE_MAX (64u << 20) /* a card file, PNG or JSON */
#define LM_CARD_FIELD_MAX (1u << 20) /* one string field */
#define LM_CARD_IMAGE_MAX 4096       /* pixels per side */

typedef struct {
    json_t *root; /* owned: the card as read */
    json_t *data; /* borrowed: root.data (V2/V3) or root itself (V1) */
    int version;  /* 1, 2 or 3 */
} lm_card;

/* Parses and type-checks a card. Errors name the place: "src:3:14: ..."
 * for JSON syntax, "src: data.alternate_greetings[2]: expected a string,
 * got an integer" for types. */
int lm_card_parse(const char *buf, size_t len, const char *src, lm_card *out, lm_err *err);
void lm_card_clear(lm_card *c);

/* RGBA8 image, rows top to bottom. */
typedef struct {
    unsigned w, h;
    unsigned char *rgba;
} lm_image;

void lm_image_clear(lm_image *img);

/* Reads the card JSON out of a PNG: ccv3 when present, else chara. img may
 * be NULL; otherwise it gets the picture. *json is NUL-terminated. */
int lm_png_card_read(const unsigned char *buf, size_t len, const char *src, char **json,
                     size_t *json_len, const char **chunk, lm_image *img, lm_err *err);
/* Just the picture of a PNG. */
int lm_png_image_read(const unsigned char *buf, size_t len, const char *src, lm_image *img,
                      lm_err *err);
/* Text of one tEXt/zTXt/iTXt chunk (NULL, no error, when absent). */
int lm_png_text_get(const unsigned char *buf, size_t len, const char *src, const char *keyword,
                    char **text, lm_err *err);
/* Encodes a PNG with the image (NULL = a small placeholder) and the given
 * card JSON texts as base64 tEXt chunks (either may be NULL). */
int lm_png_card_write(const lm_image *img, const char *chara_json, const char *ccv3_json,
                      unsigned char **out, size_t *out_len, lm_err *err);

/* NULL when out of memory. */
char *lm_base64_encode(const unsigned char *data, size_t n);
/* NULL on a bad character (err names its offset). */
unsigned char *lm_base64_decode(const char *s, size_t n, size_t *out_len, lm_err *err);

/* Reads a card from a .json or .png file (told apart by content). */
int lm_card_load(const char *path, lm_card *out, lm_image *img, lm_err *err);

/* Card -> sheet: the character, a world holding the lorebook (NULL when
 * the card has none) and the sidecar holding everything else. */
int lm_card_to_sheet(const lm_card *card, lm_character **c, lm_world **w, json_t **extra,
                     lm_err *err);
/* Sheet -> card root object for version 2 or 3, using the sidecar (may be
 * NULL) to restore what the sheet does not hold. */
json_t *lm_sheet_to_card(const lm_character *c, const lm_world *w, const json_t *extra,
                         int version, lm_err *err);

/* Import's second half: given the sheet as read back from its Markdown,
 * stores in extra["verbatim"] each data field whose sheet form differs
 * from the card, so lm_sheet_to_card can restore it. */
int lm_card_record_verbatim(const lm_card *card, const lm_character *c2, const lm_world *w2,
                            json_t *extra, lm_err *err);

/* `lemonpc import`: writes outdir/characters/<slug>.md, the sidecar, the
 * avatar (PNG cards) and outdir/world.md (when the card has a lorebook and
 * there is none yet). All or nothing. *md_path (may be NULL) gets the
 * sheet's path; diags gets the check of the new sheet. */
int lm_card_import(const char *card_path, const char *outdir, int force, char **md_path,
                   lm_diags *diags, lm_err *err);
/* `lemonpc export`: version 0 = the card's original version (V2 for
 * sheets never imported). out_path ending in .png writes a PNG with both
 * chunks; otherwise JSON. Refuses sheets with errors (listed in diags). */
int lm_card_export(const char *sheet_path, const char *out_path, int version, lm_diags *diags,
                   lm_err *err);

#endif
