/* libFuzzer: Character Card JSON or PNG -> card -> sheet -> card. Besides
 * crashes it checks the import invariant: the sheet plus the sidecar give
 * back the same V2/V3 card. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sheet/card.h"

static void through_sheet(const lm_card *card) {
    lm_character *c = NULL;
    lm_world *w = NULL;
    json_t *extra = NULL;
    lm_err err;
    if (lm_card_to_sheet(card, &c, &w, &extra, &err)) return;
    lm_diags d = {0};
    char *md = lm_character_to_md(c, &err), *wmd = w ? lm_world_to_md(w, &err) : NULL;
    lm_character *c2 = md ? lm_character_parse("c.md", md, strlen(md), &d) : NULL;
    lm_world *w2 = wmd ? lm_world_parse("world.md", wmd, strlen(wmd), &d) : NULL;
    if (c2 && !lm_card_record_verbatim(card, c2, w2, extra, &err)) {
        json_t *back = lm_sheet_to_card(c2, w2, extra, card->version == 3 ? 3 : 2, &err);
        if (back && card->version > 1 && !json_equal(back, card->root)) abort();
        json_decref(back);
        json_decref(lm_sheet_to_card(c2, w2, extra, card->version == 3 ? 2 : 3, &err));
    }
    free(md);
    free(wmd);
    lm_character_free(c);
    lm_character_free(c2);
    lm_world_free(w);
    lm_world_free(w2);
    json_decref(extra);
    lm_diags_free(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lm_err err;
    lm_card card;
    if (size >= 8 && !memcmp(data, "\x89PNG\r\n\x1a\n", 8)) {
        char *json = NULL;
        size_t jl = 0;
        const char *chunk;
        lm_image img = {0};
        if (lm_png_card_read(data, size, "fuzz.png", &json, &jl, &chunk, &img, &err) == 0) {
            if (lm_card_parse(json, jl, "fuzz.png", &card, &err) == 0) {
                through_sheet(&card);
                lm_card_clear(&card);
            }
            free(json);
            lm_image_clear(&img);
        }
        return 0;
    }
    if (lm_card_parse((const char *)data, size, "fuzz.json", &card, &err) == 0) {
        through_sheet(&card);
        lm_card_clear(&card);
    }
    return 0;
}
