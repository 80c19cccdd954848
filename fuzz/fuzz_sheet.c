/* libFuzzer: sheet Markdown -> character/world, checks, writer round trip
 * and persona prompt. Any crash, leak or sanitizer report is a bug. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sheet/sheet.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lm_diags d = {0};
    lm_character *c = lm_character_parse("fuzz.md", (const char *)data, size, &d);
    lm_world *w = lm_world_parse("world.md", (const char *)data, size, &d);
    lm_err err;
    if (c) {
        lm_character_crosscheck(c, w, NULL, 0, &d);
        char *md = lm_character_to_md(c, &err);
        if (md) lm_character_free(lm_character_parse("again.md", md, strlen(md), &d));
        free(md);
        lm_persona_opts o = {size ? (size_t)data[0] * 16 : 0, 1, 1, NULL};
        char *p = lm_persona_prompt(c, w, &o, &err);
        if (p && o.max_bytes && strlen(p) > o.max_bytes) abort();
        free(p);
    }
    if (w) {
        char *md = lm_world_to_md(w, &err);
        if (md) lm_world_free(lm_world_parse("again.md", md, strlen(md), &d));
        free(md);
    }
    lm_diags_sort(&d);
    lm_character_free(c);
    lm_world_free(w);
    lm_diags_free(&d);
    return 0;
}
