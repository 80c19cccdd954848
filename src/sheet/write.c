/* Markdown writers: the inverse of the readers for everything they keep,
 * so an imported card reads back field for field. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sheet/parse.h"

static void put_meta(lm_sb *b, const lm_kv *meta, size_t n) {
    if (!n) return;
    lm_sb_str(b, "---\n");
    for (size_t i = 0; i < n; i++) lm_sb_printf(b, "%s: %s\n", meta[i].key, meta[i].value);
    lm_sb_str(b, "---\n\n");
}

static void put_text(lm_sb *b, const char *heading, const char *text, int always) {
    if (!always && (!text || !text[0])) return;
    lm_sb_printf(b, "## %s\n\n", heading);
    if (text && text[0]) {
        lm_md_put_body(b, text);
        lm_sb_str(b, "\n");
    }
}

static void put_list(lm_sb *b, const char *heading, const lm_strlist *l) {
    if (!l->n) return;
    lm_sb_printf(b, "## %s\n\n", heading);
    for (size_t i = 0; i < l->n; i++) lm_sb_printf(b, "- %s\n", l->v[i]);
    lm_sb_str(b, "\n");
}

static void put_titled(lm_sb *b, const char *heading, const lm_titled *t, size_t n) {
    if (!n) return;
    lm_sb_printf(b, "## %s\n\n", heading);
    for (size_t i = 0; i < n; i++) {
        lm_sb_printf(b, "### %s\n\n", t[i].title);
        if (t[i].text[0]) {
            lm_md_put_body(b, t[i].text);
            lm_sb_str(b, "\n");
        }
    }
}

static void put_lore(lm_sb *b, const lm_lore *l) {
    if (!l->n) return;
    lm_sb_str(b, "## Lore\n\n");
    for (size_t i = 0; i < l->n; i++) {
        const lm_lore_entry *e = &l->v[i];
        lm_sb_str(b, "### ");
        if (e->n_keys) lm_put_keys(b, e->keys, e->n_keys);
        else lm_sb_str(b, "(no keys)");
        lm_sb_str(b, "\n\n");
        int fields = 0;
        if (e->n_secondary_keys) {
            lm_sb_str(b, "Secondary keys: ");
            lm_put_keys(b, e->secondary_keys, e->n_secondary_keys);
            lm_sb_str(b, "\n");
            fields++;
        }
        const char *flag_names[3] = {"Enabled", "Constant", "Selective"};
        int flags[3] = {e->enabled, e->constant, e->selective};
        for (int k = 0; k < 3; k++)
            if (flags[k] >= 0) {
                lm_sb_printf(b, "%s: %s\n", flag_names[k], flags[k] ? "yes" : "no");
                fields++;
            }
        if (e->has_insertion_order) {
            lm_sb_printf(b, "Insertion order: %.17g\n", e->insertion_order);
            fields++;
        }
        if (e->comment) {
            lm_sb_printf(b, "Comment: %s\n", e->comment);
            fields++;
        }
        if (fields) lm_sb_str(b, "\n");
        if (e->content && e->content[0]) {
            lm_md_put_body(b, e->content);
            lm_sb_str(b, "\n");
        }
    }
}

char *lm_character_to_md(const lm_character *c, lm_err *err) {
    lm_sb b = {0};
    put_meta(&b, c->meta, c->n_meta);
    lm_sb_printf(&b, "# %s\n\n", c->name ? c->name : "Unnamed");
    put_text(&b, "Backstory", c->backstory, 1);
    put_text(&b, "Alignment", c->alignment, 0);
    put_list(&b, "Values", &c->values);
    put_list(&b, "Objectives", &c->objectives);
    put_titled(&b, "Opinions", c->opinions, c->n_opinions);
    put_list(&b, "Catchphrases", &c->catchphrases);
    put_text(&b, "Speaking style", c->speaking_style, 0);
    if (c->n_relationships) {
        lm_sb_str(&b, "## Relationships\n\n");
        for (size_t i = 0; i < c->n_relationships; i++)
            lm_sb_printf(&b, "- %s: %s\n", c->relationships[i].name, c->relationships[i].text);
        lm_sb_str(&b, "\n");
    }
    put_text(&b, "Knowledge limits", c->knowledge_limits, 0);
    put_text(&b, "Scenario", c->scenario, 0);
    put_titled(&b, "Greetings", c->greetings, c->n_greetings);
    if (c->n_examples) {
        char who[128];
        size_t fw = c->name ? strcspn(c->name, " ") : 0;
        snprintf(who, sizeof who, "%.*s", fw ? (int)(fw < 100 ? fw : 100) : 8,
                 fw ? c->name : "{{char}}");
        lm_sb_str(&b, "## Example conversations\n\n");
        for (size_t i = 0; i < c->n_examples; i++) {
            const lm_example *e = &c->examples[i];
            lm_sb_printf(&b, "### %s\n\n", e->title);
            for (size_t k = 0; k < e->n_turns; k++) {
                lm_sb_printf(&b, "**%s:** ", e->turns[k].role == LM_ROLE_USER ? "User" : who);
                lm_md_put_body(&b, e->turns[k].text[0] ? e->turns[k].text : "...");
            }
            lm_sb_str(&b, "\n");
        }
    }
    put_text(&b, "Creator notes", c->creator_notes, 0);
    put_text(&b, "System prompt", c->system_prompt, 0);
    put_text(&b, "Post-history instructions", c->post_history, 0);
    put_lore(&b, &c->lore);
    for (size_t i = 0; i < c->n_extra; i++) put_text(&b, c->extra[i].title, c->extra[i].text, 1);
    char *md = lm_sb_take(&b);
    if (!md) lm_errf(err, "%s: out of memory writing the character sheet", c->path ? c->path : "sheet");
    return md;
}

char *lm_world_to_md(const lm_world *w, lm_err *err) {
    lm_sb b = {0};
    put_meta(&b, w->meta, w->n_meta);
    lm_sb_printf(&b, "# %s\n\n", w->name ? w->name : "Unnamed world");
    for (size_t i = 0; i < w->n_sections; i++)
        put_text(&b, w->sections[i].title, w->sections[i].text, 1);
    put_lore(&b, &w->lore);
    char *md = lm_sb_take(&b);
    if (!md) lm_errf(err, "%s: out of memory writing the world sheet", w->path ? w->path : "world");
    return md;
}
