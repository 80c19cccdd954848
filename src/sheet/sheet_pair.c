/* A character sheet with the world of its sheet folder, as the commands
 * that speak as a character (generate, chat, eval, build) load it. */
#include <stdio.h>
#include <string.h>

#include "sheet/sheet.h"

int lm_sheet_load_character(const char *path, lm_character **out_c, lm_world **out_w,
                            lm_err *err) {
    *out_c = NULL;
    *out_w = NULL;
    lm_diags d = {0};
    lm_character *c = lm_character_load(path, &d);
    if (!c || lm_diags_count(&d, LM_DIAG_ERROR)) {
        lm_diags_sort(&d);
        for (size_t i = 0; i < d.n; i++)
            if (d.v[i].level == LM_DIAG_ERROR) {
                if (d.v[i].line > 0)
                    lm_errf(err, "%s:%d: %s (run `lemonpc check` on the sheet folder)",
                            d.v[i].file, d.v[i].line, d.v[i].msg);
                else
                    lm_errf(err, "%s", d.v[i].msg);
                break;
            }
        if (!err->msg[0]) lm_errf(err, "%s: cannot load the character sheet", path);
        lm_character_free(c);
        lm_diags_free(&d);
        return -1;
    }
    lm_diags_free(&d);
    /* characters/NAME.md -> ../world.md, when there is one */
    char world[4096];
    const char *slash = strrchr(path, '/');
    int dir_len = slash ? (int)(slash - path) : 0;
    snprintf(world, sizeof world, "%.*s%s../world.md", dir_len, path, slash ? "/" : "");
    FILE *f = fopen(world, "r");
    if (f) {
        fclose(f);
        lm_diags wd = {0};
        *out_w = lm_world_load(world, &wd);
        lm_diags_free(&wd);
    }
    *out_c = c;
    return 0;
}
