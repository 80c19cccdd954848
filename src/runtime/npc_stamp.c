#include "runtime/npc_stamp.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf/gguf.h"

int lm_npc_stamp_read(const char *path, lm_npc_stamp *s, lm_err *err) {
    memset(s, 0, sizeof *s);
    gguf_file *f = gguf_open(path, err);
    if (!f) return -1;
    int rc = 0;
    const gguf_kv *m = gguf_find_kv(f, "lemonpc.persona.mode");
    if (m) {
        char *mode = gguf_get_str(f, "lemonpc.persona.mode", err);
        char *hash = mode ? gguf_get_str(f, "lemonpc.persona.hash", err) : NULL;
        char *name = hash && gguf_find_kv(f, "lemonpc.character") ? gguf_get_str(f, "lemonpc.character", err) : NULL;
        char *end = NULL;
        if (!mode || !hash) rc = -1;
        else if ((s->mode = lm_persona_mode_parse(mode)) < 0)
            rc = lm_errf(err, "%s: lemonpc.persona.mode '%.32s' is not none, short or full", path, mode);
        else if (s->hash = strtoull(hash, &end, 16), strlen(hash) != 16 || *end)
            rc = lm_errf(err, "%s: lemonpc.persona.hash '%.32s' is not 16 hex digits", path, hash);
        else {
            s->present = true;
            snprintf(s->character, sizeof s->character, "%s", name ? name : "");
        }
        free(mode);
        free(hash);
        free(name);
    }
    gguf_close(f);
    return rc;
}

int lm_npc_stamp_write(const char *src, const char *dst, const lm_character *c, const lm_world *w,
                       lm_persona_mode mode, lm_err *err) {
    char hash[17];
    uint64_t h;
    if (lm_persona_hash(c, w, mode, &h, err)) return -1;
    snprintf(hash, sizeof hash, "%016" PRIx64, h);
    const char *const kv[3][2] = {{"lemonpc.character", c->name},
                                  {"lemonpc.persona.mode", lm_persona_mode_name(mode)},
                                  {"lemonpc.persona.hash", hash}};
    return gguf_copy_set_strs(src, dst, kv, 3, err);
}

int lm_npc_persona_mode(const lm_npc_stamp *trained, int asked, const lm_character *c,
                        const lm_world *w, char *warn, size_t cap) {
    if (cap) warn[0] = '\0';
    if (!trained || !trained->present) return asked >= 0 ? asked : LM_PERSONA_FULL;
    if (asked >= 0 && asked != trained->mode) {
        snprintf(warn, cap, "the NPC was trained with the %s persona, not %s: it may answer less in "
                            "character (leave --persona out to use the trained one)",
                 lm_persona_mode_name((lm_persona_mode)trained->mode),
                 lm_persona_mode_name((lm_persona_mode)asked));
        return asked;
    }
    uint64_t h;
    lm_err err = {{0}};
    if (lm_persona_hash(c, w, (lm_persona_mode)trained->mode, &h, &err))
        snprintf(warn, cap, "cannot tell whether %s's sheet changed since the NPC was trained: %s",
                 c->name, err.msg);
    else if (h != trained->hash)
        snprintf(warn, cap, "%s's sheet has changed since the NPC was trained: the system turn "
                            "differs from the one it learned (rebuild it with `lemonpc build`)",
                 c->name);
    return trained->mode;
}
