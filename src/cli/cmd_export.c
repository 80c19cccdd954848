/* lemonpc export: a character sheet as a Character Card (JSON, PNG or CHARX). */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "sheet/card.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: lemonpc export DIR/characters/NAME.md OUT.json|OUT.png|OUT.charx [--v2|--v3]\n\n"
            "Writes the character as a Character Card. A .png gets both the V2 'chara'\n"
            "and the V3 'ccv3' chunk (picture: NAME.png beside the sheet, else a\n"
            "placeholder). A .charx (ZIP) gets the V3 card as card.json and every file\n"
            "under NAME.assets/ beside the sheet, by its path there (e.g.\n"
            "assets/icon/images/main.png). Without --v2/--v3 a JSON card keeps the\n"
            "version it was imported as (V2 for sheets written by hand and for V1\n"
            "cards: V1 is read, not written). A V2 or V3 card imported with `lemonpc\n"
            "import` and left unchanged comes back as it was.\n");
}

int cmd_export(int argc, char **argv) {
    const char *args[2] = {NULL, NULL};
    int na = 0, version = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { usage(stdout); return 0; }
        else if (!strcmp(argv[i], "--v2")) version = 2;
        else if (!strcmp(argv[i], "--v3")) version = 3;
        else if (argv[i][0] == '-' || na == 2) { usage(stderr); return 2; }
        else args[na++] = argv[i];
    }
    if (na != 2) { usage(stderr); return 2; }
    lm_err err = {{0}};
    lm_diags d = {0};
    int rc = lm_card_export(args[0], args[1], version, &d, &err);
    if (rc) {
        lm_diags_sort(&d);
        for (size_t i = 0; i < d.n; i++)
            if (d.v[i].level == LM_DIAG_ERROR)
                fprintf(stderr, "%s:%d: error: %s\n", d.v[i].file, d.v[i].line, d.v[i].msg);
        fprintf(stderr, "lemonpc export: %s\n", err.msg);
    }
    lm_diags_free(&d);
    return rc ? 1 : 0;
}
