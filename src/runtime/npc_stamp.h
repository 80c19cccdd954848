/* The persona policy an NPC was trained with, stamped into the adapter (or
 * fine-tuned model) GGUF that `lemonpc build` exports, so the runtime serves
 * the same system turn the model learned and can tell when the sheet has
 * changed since:
 *   lemonpc.character      the character's name
 *   lemonpc.persona.mode   "none", "short" or "full" (sheet.h)
 *   lemonpc.persona.hash   lm_persona_hash of the sheet, 16 hex digits */
#ifndef LM_RUNTIME_NPC_STAMP_H
#define LM_RUNTIME_NPC_STAMP_H

#include <stdbool.h>
#include <stdint.h>

#include "base/err.h"
#include "sheet/sheet.h"

typedef struct lm_npc_stamp {
    bool present;          /* the file carries a persona mode */
    int mode;              /* lm_persona_mode */
    uint64_t hash;
    char character[128];
} lm_npc_stamp;

/* Reads the stamp of a GGUF; a file without one gives present = false. */
int lm_npc_stamp_read(const char *path, lm_npc_stamp *s, lm_err *err);
/* Copies src to dst (may be the same file) with the stamp of c under mode. */
int lm_npc_stamp_write(const char *src, const char *dst, const lm_character *c, const lm_world *w,
                       lm_persona_mode mode, lm_err *err);

/* The persona mode to serve c with, given the stamps of the model and the
 * adapter (either may be absent) and the mode the user asked for (-1: none
 * asked). Writes a warning into warn (cap bytes; "" when all agree) when the
 * asked mode differs from the trained one or the sheet changed since. */
int lm_npc_persona_mode(const lm_npc_stamp *trained, int asked, const lm_character *c,
                        const lm_world *w, char *warn, size_t cap);

#endif
