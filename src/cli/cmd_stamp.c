/* `lemonpc stamp ADAPTER.gguf --character SHEET.md [--persona MODE] [--out FILE]`:
 * writes the persona stamp (runtime/npc_stamp.h) that `lemonpc build`
 * gives what it exports, for weights trained with `lemonpc train` by hand:
 * chat, talk, serve and the library then serve the system turn the NPC
 * learned, and warn when the sheet has changed since. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "runtime/npc_stamp.h"
#include "sheet/sheet.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: lemonpc stamp ADAPTER.gguf --character SHEET.md [--persona MODE] [--out FILE]\n\n"
            "Stamps a LoRA adapter (or a fine-tuned model) GGUF with the persona policy it was\n"
            "trained with, as `lemonpc build` does when it exports: the character's name, the\n"
            "persona mode and a hash of the sheet, which chat, talk, serve and the library read\n"
            "to serve the same system turn (and to warn when the sheet has changed since).\n"
            "Only for weights trained with `lemonpc train` by hand.\n\n"
            "  --character SHEET  the character sheet (.md) it was trained on\n"
            "  --persona MODE     short (default), full or none: the system turn it trained with\n"
            "  --out FILE         write a stamped copy there (default: stamp ADAPTER in place)\n"
            "  -h, --help         this text\n"
            "Exit status: 0 ok, 1 error, 2 usage.\n");
}

int cmd_stamp(int argc, char **argv) {
    const char *in = NULL, *sheet = NULL, *out = NULL;
    int mode = LM_PERSONA_SHORT;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        if (a[0] == '-' && a[1]) {
            if (i + 1 >= argc) { fprintf(stderr, "lemonpc stamp: %s needs a value (see --help)\n", a); return 2; }
            const char *v = argv[++i];
            if (!strcmp(a, "--character")) sheet = v;
            else if (!strcmp(a, "--out")) out = v;
            else if (!strcmp(a, "--persona")) {
                if ((mode = lm_persona_mode_parse(v)) < 0) {
                    fprintf(stderr, "lemonpc stamp: --persona wants short, full or none, got '%s'\n", v);
                    return 2;
                }
            } else {
                fprintf(stderr, "lemonpc stamp: unknown option '%s' (see --help)\n", a);
                return 2;
            }
        } else if (!in) in = a;
        else { fprintf(stderr, "lemonpc stamp: unexpected argument '%s'\n", a); return 2; }
    }
    if (!in || !sheet) {
        fprintf(stderr, "lemonpc stamp: %s\n\n", !in ? "no ADAPTER.gguf given" : "--character SHEET is required");
        usage(stderr);
        return 2;
    }
    lm_err err = {0};
    lm_character *c = NULL;
    lm_world *w = NULL;
    int rc = 1;
    if (lm_sheet_load_character(sheet, &c, &w, &err) ||
        lm_npc_stamp_write(in, out ? out : in, c, w, (lm_persona_mode)mode, &err))
        fprintf(stderr, "lemonpc stamp: %s\n", err.msg);
    else {
        fprintf(stderr, "lemonpc stamp: %s stamped as %s, %s persona\n", out ? out : in, c->name,
                lm_persona_mode_name((lm_persona_mode)mode));
        rc = 0;
    }
    lm_world_free(w);
    lm_character_free(c);
    return rc;
}
