/* The persona system prompt: the sheet condensed for a small model's
 * context. SmolLM2-135M has 2048 tokens in all, so the prompt is built
 * from parts in order of importance and cut to a byte budget. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sheet/parse.h"

/* text with {{char}} / {{user}} (any case) replaced. */
static void put_subst(lm_sb *b, const char *text, const char *name, const char *user) {
    for (const char *p = text; *p;) {
        if (!strncasecmp(p, "{{char}}", 8)) { lm_sb_str(b, name); p += 8; }
        else if (!strncasecmp(p, "{{user}}", 8)) { lm_sb_str(b, user); p += 8; }
        else lm_sb_add(b, p++, 1);
    }
}

/* Longest prefix of s within max bytes that ends a sentence (". ", "! ",
 * "? " or a newline), or 0. */
static size_t sentence_cut(const char *s, size_t len, size_t max) {
    size_t best = 0;
    for (size_t i = 0; i < len && i < max; i++) {
        char ch = s[i];
        int end = ch == '\n' || ((ch == '.' || ch == '!' || ch == '?') &&
                                 (i + 1 == len || s[i + 1] == ' ' || s[i + 1] == '\n' || s[i + 1] == '"'));
        if (end && ch != '\n') best = i + 1;
        else if (end) best = i;
    }
    return best;
}

enum { P_HEAD, P_BACKSTORY, P_VALUES, P_STYLE, P_CATCH, P_LIMITS, P_OBJ, P_OPIN, P_WORLD,
       P_EXAMPLES, P_RULES, P_N };

char *lm_persona_prompt(const lm_character *c, const lm_world *w, const lm_persona_opts *o,
                        lm_err *err) {
    if (!c || !c->name) {
        lm_errf(err, "persona prompt: the character has no name");
        return NULL;
    }
    lm_persona_opts def = {0, 1, 1, NULL};
    if (!o) o = &def;
    const char *name = c->name, *user = o->user_name ? o->user_name : "the traveller";
    lm_sb part[P_N] = {{0}};

    lm_sb_printf(&part[P_HEAD], "You are %s", name);
    if (w && w->name) {
        /* "the Holy Kingdom of Luminara", but "Whisperwood" and "The Reach" as they are. */
        int article = strchr(w->name, ' ') && strncasecmp(w->name, "the ", 4);
        lm_sb_printf(&part[P_HEAD], ", of %s%s", article ? "the " : "", w->name);
    }
    lm_sb_str(&part[P_HEAD], ".");
    if (c->alignment && c->alignment[0]) {
        lm_sb_str(&part[P_HEAD], " Alignment: ");
        put_subst(&part[P_HEAD], c->alignment, name, user);
        lm_sb_str(&part[P_HEAD], ".");
    }
    lm_sb_str(&part[P_HEAD], "\n");
    if (c->backstory && c->backstory[0]) {
        lm_sb_str(&part[P_BACKSTORY], "Your story: ");
        put_subst(&part[P_BACKSTORY], c->backstory, name, user);
        lm_sb_str(&part[P_BACKSTORY], "\n");
    }
    if (c->values.n) {
        lm_sb_str(&part[P_VALUES], "You value: ");
        for (size_t i = 0; i < c->values.n; i++) {
            if (i) lm_sb_str(&part[P_VALUES], "; ");
            put_subst(&part[P_VALUES], c->values.v[i], name, user);
        }
        lm_sb_str(&part[P_VALUES], ".\n");
    }
    if (c->speaking_style && c->speaking_style[0]) {
        lm_sb_str(&part[P_STYLE], "How you speak: ");
        put_subst(&part[P_STYLE], c->speaking_style, name, user);
        lm_sb_str(&part[P_STYLE], "\n");
    }
    if (c->catchphrases.n) {
        lm_sb_str(&part[P_CATCH], "Phrases you often use:\n");
        for (size_t i = 0; i < c->catchphrases.n; i++) {
            lm_sb_str(&part[P_CATCH], "- ");
            put_subst(&part[P_CATCH], c->catchphrases.v[i], name, user);
            lm_sb_str(&part[P_CATCH], "\n");
        }
    }
    if (c->knowledge_limits && c->knowledge_limits[0]) {
        lm_sb_str(&part[P_LIMITS], "What you do not know: ");
        put_subst(&part[P_LIMITS], c->knowledge_limits, name, user);
        lm_sb_str(&part[P_LIMITS], " When asked about such things, say honestly that you do not know them.\n");
    }
    if (c->objectives.n) {
        lm_sb_str(&part[P_OBJ], "Your goals: ");
        for (size_t i = 0; i < c->objectives.n; i++) {
            if (i) lm_sb_str(&part[P_OBJ], "; ");
            put_subst(&part[P_OBJ], c->objectives.v[i], name, user);
        }
        lm_sb_str(&part[P_OBJ], ".\n");
    }
    for (size_t i = 0; i < c->n_opinions; i++) {
        /* The first sentence carries the stance; the rest is colour. */
        const char *t = c->opinions[i].text;
        size_t cut = sentence_cut(t, strlen(t), 400);
        lm_sb_printf(&part[P_OPIN], "%s: ", c->opinions[i].title);
        char *first = strndup(t, cut ? cut : strlen(t));
        if (!first) part[P_OPIN].oom = true;
        else put_subst(&part[P_OPIN], first, name, user);
        free(first);
        lm_sb_str(&part[P_OPIN], "\n");
    }
    if (w && o->include_world) {
        const lm_world_section *desc = lm_world_section_get(w, "Description");
        if (desc && desc->text[0]) {
            lm_sb_printf(&part[P_WORLD], "Your world, %s: ", w->name ? w->name : "");
            size_t dl = strlen(desc->text), cut = sentence_cut(desc->text, dl, 600);
            lm_sb_add(&part[P_WORLD], desc->text, cut ? cut : dl);
            lm_sb_str(&part[P_WORLD], "\n");
        }
        const lm_world_section *places = lm_world_section_get(w, "Places");
        if (places && places->n_entries) {
            lm_sb_str(&part[P_WORLD], "Places you know: ");
            for (size_t i = 0; i < places->n_entries; i++)
                lm_sb_printf(&part[P_WORLD], "%s%s", i ? ", " : "", places->entries[i].name);
            lm_sb_str(&part[P_WORLD], ".\n");
        }
    }
    if (o->include_examples && c->n_examples) {
        lm_sb_str(&part[P_EXAMPLES], "Examples of how you answer:\n");
        for (size_t i = 0; i < c->n_examples && i < 3; i++) {
            const lm_example *e = &c->examples[i];
            for (size_t k = 0; k < e->n_turns && k < 4; k++) {
                lm_sb_printf(&part[P_EXAMPLES], "%s: ", e->turns[k].role == LM_ROLE_USER ? "User" : name);
                put_subst(&part[P_EXAMPLES], e->turns[k].text, name, user);
                lm_sb_str(&part[P_EXAMPLES], "\n");
            }
        }
    }
    lm_sb_printf(&part[P_RULES],
                 "Rules: stay in character as %s at all times. Speak only in direct speech, "
                 "in the first person: no stage directions, no actions between asterisks, no "
                 "descriptions of your tone. Never speak or act for the person you talk to. "
                 "Do not introduce yourself unless asked. Answer the question you are asked, "
                 "briefly, in two to four sentences.\n",
                 name);

    /* Choose parts by importance: head and rules are required, the
     * backstory may be cut at a sentence, the rest go in whole or not. */
    static const int order[] = {P_VALUES, P_CATCH, P_STYLE, P_LIMITS, P_BACKSTORY, P_OBJ,
                                P_OPIN, P_WORLD, P_EXAMPLES};
    size_t max = o->max_bytes ? o->max_bytes : (size_t)-1;
    size_t used = part[P_HEAD].len + part[P_RULES].len;
    char *out = NULL;
    for (int i = 0; i < P_N; i++)
        if (part[i].oom) {
            lm_errf(err, "persona prompt for '%s': out of memory", name);
            goto done;
        }
    if (used > max) {
        lm_errf(err, "persona prompt for '%s': a budget of %zu bytes is too small (needs at least %zu)",
                name, max, used);
        goto done;
    }
    int keep[P_N] = {0};
    keep[P_HEAD] = keep[P_RULES] = 1;
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        lm_sb *p = &part[order[i]];
        if (!p->len) continue;
        if (used + p->len <= max) {
            keep[order[i]] = 1;
            used += p->len;
        } else if (order[i] == P_BACKSTORY && used + 1 < max) {
            size_t cut = sentence_cut(p->p, p->len, max - used - 1);
            if (cut > 20) {
                p->len = cut;
                lm_sb_str(p, "\n");
                keep[P_BACKSTORY] = 1;
                used += p->len;
            }
        }
    }
    lm_sb all = {0};
    for (int i = 0; i < P_N; i++)
        if (keep[i]) lm_sb_add(&all, part[i].p, part[i].len);
    out = lm_sb_take(&all);
    if (!out) lm_errf(err, "persona prompt for '%s': out of memory", name);
done:
    for (int i = 0; i < P_N; i++) lm_sb_free(&part[i]);
    return out;
}

char *lm_character_greeting(const lm_character *c, const char *user, lm_err *err) {
    if (!c || !c->n_greetings || !c->greetings[0].text) return NULL;
    const char *t = c->greetings[0].text;
    while (*t == ' ' || *t == '\n' || *t == '\t') t++;
    if (!*t) return NULL;
    lm_sb b = {0};
    put_subst(&b, t, c->name ? c->name : "", user ? user : "the traveller");
    char *g = lm_sb_take(&b);
    if (!g) lm_errf(err, "%s: out of memory for the greeting", c->path ? c->path : "sheet");
    return g;
}
