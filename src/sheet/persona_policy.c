/* The persona policy (sheet.h): one function decides the system turn that
 * training, evaluation and the runtime put before a conversation. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <stdbool.h>

#include "sheet/parse.h"

static const char *const MODE_NAMES[] = {"none", "short", "full"};

const char *lm_persona_mode_name(lm_persona_mode m) {
    return (unsigned)m < 3 ? MODE_NAMES[m] : NULL;
}

int lm_persona_mode_parse(const char *s) {
    for (int i = 0; s && i < 3; i++)
        if (!strcmp(s, MODE_NAMES[i])) return i;
    return -1;
}

/* The persona part alone (no scene); NULL for NONE (err clear) or on error. */
static char *persona_part(const lm_character *c, const lm_world *w, lm_persona_mode mode,
                          lm_err *err) {
    if (!c || !c->name) {
        lm_errf(err, "persona: the character has no name");
        return NULL;
    }
    if (mode == LM_PERSONA_FULL) {
        /* 3000 bytes is ~700 tokens: a third of SmolLM2's 2048, leaving the
         * rest to the conversation. */
        lm_persona_opts po = {.max_bytes = 3000, .include_world = 1, .include_examples = 1};
        return lm_persona_prompt(c, w, &po, err);
    }
    if (mode != LM_PERSONA_SHORT) return NULL;
    lm_sb b = {0};
    lm_sb_printf(&b, "You are %s", c->name);
    if (w && w->name) {
        int article = strchr(w->name, ' ') && strncasecmp(w->name, "the ", 4);
        lm_sb_printf(&b, ", of %s%s", article ? "the " : "", w->name);
    }
    lm_sb_printf(&b, ". Speak only as %s, in your own words.", c->name);
    char *s = lm_sb_take(&b);
    if (!s) lm_errf(err, "persona for '%s': out of memory", c->name);
    return s;
}

/* One line of scene text: newlines folded to spaces, cut at 200 bytes so a
 * game cannot push the persona out of the context through a name. */
static void put_line(lm_sb *b, const char *label, const char *text) {
    lm_sb_str(b, label);
    size_t n = 0;
    for (const char *p = text; *p && n < 200; p++, n++)
        lm_sb_add(b, *p == '\n' || *p == '\r' ? " " : p, 1);
    lm_sb_str(b, "\n");
}

char *lm_persona_system(const lm_character *c, const lm_world *w, lm_persona_mode mode,
                        const lm_scene *scene, lm_err *err) {
    if ((unsigned)mode > LM_PERSONA_FULL) {
        lm_errf(err, "persona: unknown mode %d", (int)mode);
        return NULL;
    }
    char *head = persona_part(c, w, mode, err);
    if (!head && mode != LM_PERSONA_NONE) return NULL;
    bool has_asker = scene && scene->asker && scene->asker[0];
    bool has_place = scene && scene->location && scene->location[0];
    if (!head && !has_asker && !has_place) return NULL;
    lm_sb b = {0};
    if (head) {
        size_t n = strlen(head);
        while (n && head[n - 1] == '\n') n--;
        lm_sb_add(&b, head, n);
        lm_sb_str(&b, "\n");
        free(head);
    }
    if (has_asker) put_line(&b, "You are talking with: ", scene->asker);
    if (has_place) put_line(&b, "Place: ", scene->location);
    /* No trailing newline: the template closes the turn. */
    if (!b.oom && b.len && b.p[b.len - 1] == '\n') b.p[--b.len] = '\0';
    char *s = lm_sb_take(&b);
    if (!s) lm_errf(err, "persona: out of memory");
    return s;
}

int lm_persona_hash(const lm_character *c, const lm_world *w, lm_persona_mode mode,
                    uint64_t *hash, lm_err *err) {
    /* The whole sheet (as its markdown writer gives it back) and the mode:
     * a short system turn stays the same when the backstory changes, but
     * the NPC trained on the old one is out of date all the same. Lorebook
     * entries are left out: they are recalled at run time (memory/recall.h),
     * never trained on, so a writer may add lore without retraining. */
    lm_character cc;
    lm_world wc;
    if (c) { cc = *c; cc.lore.n = 0; }
    if (w) { wc = *w; wc.lore.n = 0; }
    char *cs = c ? lm_character_to_md(&cc, err) : NULL;
    char *ws = w && (cs || !c) ? lm_world_to_md(&wc, err) : NULL;
    if ((c && !cs) || (w && !ws)) {
        free(cs);
        return -1;
    }
    const char *parts[3] = {lm_persona_mode_name(mode), cs, ws};
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < 3; i++) {
        for (const char *p = parts[i] ? parts[i] : ""; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
        h = (h ^ 0xff) * 1099511628211ull;   /* part separator */
    }
    free(cs);
    free(ws);
    *hash = h;
    return 0;
}
