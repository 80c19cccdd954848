/* lemonpc import: a Character Card (V1/V2/V3, JSON, PNG or CHARX) into a sheet. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "sheet/card.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: lemonpc import CARD.json|CARD.png|CARD.charx OUTDIR [--force]\n\n"
            "Reads a Character Card V1, V2 or V3: as JSON, as a PNG (its 'ccv3' text\n"
            "chunk, V3, else its 'chara' chunk, V1/V2) or as a CHARX (a ZIP with card.json\n"
            "and the card's assets).\n"
            "Writes OUTDIR/characters/NAME.md (the sheet), NAME.card-extra.json (what the\n"
            "sheet has no place for, so `lemonpc export` gives the same card back),\n"
            "NAME.png (the picture of a PNG card), NAME.assets/ (the files of a CHARX\n"
            "card besides card.json) and OUTDIR/world.md when the card has a lorebook\n"
            "and the folder has no world yet. Writes nothing on error.\n"
            "  --force  replace an existing sheet of the same name\n");
}

int cmd_import(int argc, char **argv) {
    const char *args[2] = {NULL, NULL};
    int na = 0, force = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { usage(stdout); return 0; }
        else if (!strcmp(argv[i], "--force")) force = 1;
        else if (argv[i][0] == '-' || na == 2) { usage(stderr); return 2; }
        else args[na++] = argv[i];
    }
    if (na != 2) { usage(stderr); return 2; }
    lm_err err = {{0}};
    lm_diags d = {0};
    char *md = NULL;
    if (lm_card_import(args[0], args[1], force, &md, &d, &err)) {
        fprintf(stderr, "lemonpc import: %s\n", err.msg);
        lm_diags_free(&d);
        return 1;
    }
    printf("%s\n", md);
    if (d.n)
        fprintf(stderr, "lemonpc import: the new sheet has %zu problem%s to look at: lemonpc check %s\n",
                d.n, d.n == 1 ? "" : "s", args[1]);
    free(md);
    lm_diags_free(&d);
    return 0;
}
