/* Character sheet reader: Markdown sections into lm_character. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/fileio.h"
#include "sheet/parse.h"

enum {
    H_BACKSTORY, H_ALIGNMENT, H_VALUES, H_OBJECTIVES, H_OPINIONS, H_CATCHPHRASES, H_STYLE,
    H_RELATIONSHIPS, H_LIMITS, H_EXAMPLES, H_GREETINGS, H_SCENARIO, H_NOTES, H_SYSTEM,
    H_POST, H_LORE, H_COUNT
};

const char *const lm_character_headings[] = {
    "Backstory", "Alignment", "Values", "Objectives", "Opinions", "Catchphrases",
    "Speaking style", "Relationships", "Knowledge limits", "Example conversations",
    "Greetings", "Scenario", "Creator notes", "System prompt", "Post-history instructions",
    "Lore", NULL};

static const char *const meta_keys[] = {"id", "version", "creator", "tags", "world",
                                        "nickname", NULL};

const char *lm_meta_get(const lm_kv *meta, size_t n, const char *key) {
    for (size_t i = 0; i < n; i++)
        if (!lm_sh_casecmp(meta[i].key, key)) return meta[i].value;
    return NULL;
}

/* Does speaker name the character? Full name, first word, nickname or
 * the card placeholder. */
static int is_char_speaker(const lm_character *c, const char *who) {
    if (!lm_sh_casecmp(who, "{{char}}") || !lm_sh_casecmp(who, "Character")) return 1;
    if (!c->name) return 0;
    if (!lm_sh_casecmp(who, c->name)) return 1;
    size_t fw = strcspn(c->name, " ");
    if (strlen(who) == fw && !strncasecmp(who, c->name, fw)) return 1;
    const char *nick = lm_meta_get(c->meta, c->n_meta, "nickname");
    return nick && !lm_sh_casecmp(who, nick);
}

/* `**Who:** text` or `**Who**: text`: returns 1 and the parts (0: not a
 * label, -1: out of memory). */
static int label(const char *s, size_t n, char **who, const char **rest) {
    if (n < 5 || s[0] != '*' || s[1] != '*') return 0;
    const char *end = s + n, *close = NULL;
    for (const char *q = s + 2; q + 1 < end; q++)
        if (q[0] == '*' && q[1] == '*') { close = q; break; }
    if (!close) return 0;
    const char *a = s + 2, *b = close, *r = close + 2;
    if (b > a && b[-1] == ':') b--;
    else if (r < end && *r == ':') r++;
    else return 0;
    if (r < end && *r == ' ') r++;
    *who = lm_sh_trim(a, (size_t)(b - a));
    *rest = r;
    return *who ? 1 : -1;
}

/* -1 when out of memory. */
static int parse_example(const char *file, lm_character *c, const lm_md_sub *sub, lm_diags *d) {
    lm_example *ex = lm_sh_push(&c->examples, &c->n_examples, sizeof *ex);
    if (!ex) return -1;
    ex->title = strdup(sub->title);
    ex->line = sub->line;
    if (!ex->title) return -1;
    const char *p = sub->body;
    int line = sub->body_line, blank = 0, chars = 0;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        char *who = NULL;
        const char *rest = NULL;
        int is_label = lm_sh_blank(p, n) ? 0 : label(p, n, &who, &rest);
        if (is_label < 0) return -1;
        if (lm_sh_blank(p, n)) {
            blank = 1;
        } else if (is_label) {
            lm_role role;
            int ok = 1;
            if (!lm_sh_casecmp(who, "User") || !lm_sh_casecmp(who, "{{user}}")) role = LM_ROLE_USER;
            else if (is_char_speaker(c, who)) { role = LM_ROLE_CHAR; chars++; }
            else {
                char hint[256];
                snprintf(hint, sizeof hint, "speakers are User and %s", c->name ? c->name : "the character");
                lm_diags_add(d, LM_DIAG_ERROR, file, line, hint, "unknown speaker '%s'", who);
                ok = 0;
                role = LM_ROLE_USER;
            }
            free(who);
            if (ok) {
                lm_turn *t = lm_sh_push(&ex->turns, &ex->n_turns, sizeof *t);
                if (!t) return -1;
                t->role = role;
                t->text = lm_sh_trim(rest, n - (size_t)(rest - p));
                t->line = line;
                if (!t->text) return -1;
            }
            blank = 0;
        } else if (ex->n_turns) {
            /* A turn that spans lines; a blank line inside is a paragraph break. */
            lm_turn *t = &ex->turns[ex->n_turns - 1];
            size_t tl = strlen(t->text);
            char *q = realloc(t->text, tl + n + 3);
            if (!q) return -1;
            t->text = q;
            memcpy(t->text + tl, blank ? "\n\n" : "\n", blank ? 2 : 1);
            tl += blank ? 2 : 1;
            memcpy(t->text + tl, p, n);
            t->text[tl + n] = '\0';
            blank = 0;
        } else {
            lm_diags_add(d, LM_DIAG_ERROR, file, line, "start lines with `**User:**` or `**Name:**`",
                         "conversation line has no speaker");
        }
        p += n;
        line++;
        if (*p) p++;
    }
    if (!ex->n_turns)
        lm_diags_add(d, LM_DIAG_ERROR, file, sub->line, NULL, "conversation '%s' is empty", sub->title);
    else if (!chars)
        lm_diags_add(d, LM_DIAG_ERROR, file, sub->line, "add a `**Name:**` line",
                     "conversation '%s' never gives %s a turn", sub->title,
                     c->name ? c->name : "the character");
    return 0;
}

static int parse_titled(const char *file, const lm_md_section *s, lm_titled **out, size_t *n,
                        lm_diags *d) {
    if (!lm_sh_blank(s->intro, strlen(s->intro)))
        lm_diags_add(d, LM_DIAG_WARNING, file, s->intro_line, "put it under a `### Title`",
                     "text before the first `###` in '%s' is ignored", s->title);
    for (size_t i = 0; i < s->n_subs; i++) {
        lm_titled *t = lm_sh_push(out, n, sizeof *t);
        if (!t) return -1;
        t->title = strdup(s->subs[i].title);
        t->text = strdup(s->subs[i].body);
        t->line = s->subs[i].line;
        if (!t->title || !t->text) return -1;
        if (!t->text[0])
            lm_diags_add(d, LM_DIAG_WARNING, file, t->line, NULL, "'%s' is empty", t->title);
    }
    return 0;
}

/* A titled item {title, text} at the end of *v; -1 when out of memory. */
static int push_titled(lm_titled **v, size_t *n, const char *title, const char *text, int line) {
    lm_titled *t = lm_sh_push(v, n, sizeof *t);
    if (!t) return -1;
    t->title = strdup(title);
    t->text = strdup(text);
    t->line = line;
    return t->title && t->text ? 0 : -1;
}

lm_character *lm_character_parse(const char *path, const char *text, size_t len, lm_diags *d) {
    lm_md_doc *doc = lm_md_parse(path, text, len, d);
    if (!doc) return NULL;
    lm_character *c = calloc(1, sizeof *c);
    if (!c) goto oom;
    c->meta = doc->meta;
    c->n_meta = doc->n_meta;
    doc->meta = NULL;
    doc->n_meta = 0;
    c->path = strdup(path);
    if (!c->path) goto oom;
    for (size_t i = 0; i < c->n_meta; i++) {
        char hint[512];
        if (lm_heading_index(c->meta[i].key, meta_keys, hint, sizeof hint) < 0) {
            strcpy(hint, "known keys: id, version, creator, tags, world, nickname");
            lm_diags_add(d, LM_DIAG_WARNING, path, c->meta[i].line, hint,
                         "unknown front matter key '%s'", c->meta[i].key);
        }
    }
    if (doc->title) {
        c->name = doc->title;
        c->name_line = doc->title_line;
        doc->title = NULL;
    } else {
        lm_diags_add(d, LM_DIAG_ERROR, path, 1, "start the file with `# Name`",
                     "missing the character's name (`# Name` title)");
    }
    int seen[H_COUNT] = {0};
    char **texts[H_COUNT] = {0};
    texts[H_BACKSTORY] = &c->backstory;
    texts[H_ALIGNMENT] = &c->alignment;
    texts[H_STYLE] = &c->speaking_style;
    texts[H_LIMITS] = &c->knowledge_limits;
    texts[H_SCENARIO] = &c->scenario;
    texts[H_NOTES] = &c->creator_notes;
    texts[H_SYSTEM] = &c->system_prompt;
    texts[H_POST] = &c->post_history;
    /* Example speakers are checked against the name, so parse examples last. */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < doc->n_secs; i++) {
            lm_md_section *s = &doc->secs[i];
            char hint[512];
            int h = lm_heading_index(s->title, lm_character_headings, hint, sizeof hint);
            if ((h == H_EXAMPLES) != (pass == 1)) continue;
            if (h < 0) {
                lm_diags_add(d, LM_DIAG_WARNING, path, s->line, hint, "unknown section '%s'", s->title);
                if (push_titled(&c->extra, &c->n_extra, s->title, s->body, s->line)) goto oom;
                continue;
            }
            if (seen[h]) {
                lm_diags_add(d, LM_DIAG_ERROR, path, s->line, "merge the two sections",
                             "duplicate section '%s' (first at line %d)", s->title, seen[h]);
                continue;
            }
            seen[h] = s->line;
            lm_check_length(path, s, h != H_LORE, d);
            if (!s->body[0]) {
                lm_diags_add(d, LM_DIAG_WARNING, path, s->line, "write something or remove it",
                             "section '%s' is empty", s->title);
            }
            if (texts[h]) {
                *texts[h] = strdup(s->body);
                if (!*texts[h]) goto oom;
                continue;
            }
            int rc = 0;
            switch (h) {
            case H_VALUES: rc = lm_parse_list(path, s, &c->values, d); break;
            case H_OBJECTIVES: rc = lm_parse_list(path, s, &c->objectives, d); break;
            case H_CATCHPHRASES: rc = lm_parse_list(path, s, &c->catchphrases, d); break;
            case H_OPINIONS: rc = parse_titled(path, s, &c->opinions, &c->n_opinions, d); break;
            case H_GREETINGS:
                if (!s->n_subs && s->body[0])
                    rc = push_titled(&c->greetings, &c->n_greetings, "First message", s->body,
                                     s->body_line);
                else
                    rc = parse_titled(path, s, &c->greetings, &c->n_greetings, d);
                break;
            case H_RELATIONSHIPS:
                rc = lm_parse_named(path, s, &c->relationships, &c->n_relationships, 1, d);
                break;
            case H_LORE: rc = lm_parse_lore(path, s, &c->lore, d); break;
            case H_EXAMPLES:
                if (!lm_sh_blank(s->intro, strlen(s->intro)))
                    lm_diags_add(d, LM_DIAG_ERROR, path, s->intro_line,
                                 "put each conversation under a `### Title`",
                                 "conversation lines outside a `###` conversation");
                for (size_t k = 0; k < s->n_subs && !rc; k++)
                    rc = parse_example(path, c, &s->subs[k], d);
                break;
            }
            if (rc) goto oom;
        }
    }
    int at = c->name_line ? c->name_line : 1;
    if (!seen[H_BACKSTORY])
        lm_diags_add(d, LM_DIAG_ERROR, path, at, "add `## Backstory`", "missing section 'Backstory'");
    if (!c->n_examples)
        lm_diags_add(d, LM_DIAG_WARNING, path, at,
                     "add `## Example conversations` with `### Title` and `**User:**` lines",
                     "no example conversations: the model learns the voice from them");
    lm_md_free(doc);
    return c;
oom:
    lm_md_free(doc);
    lm_character_free(c);
    lm_diags_oom(d, path);
    return NULL;
}

lm_character *lm_character_load(const char *path, lm_diags *d) {
    char *text;
    size_t len;
    lm_err err = {{0}};
    if (lm_read_file_max(path, LM_SHEET_FILE_MAX, &text, &len, &err)) {
        lm_diags_add(d, LM_DIAG_ERROR, path, 0, NULL, "%s", err.msg);
        return NULL;
    }
    lm_character *c = lm_character_parse(path, text, len, d);
    free(text);
    return c;
}

static void free_titled(lm_titled *t, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(t[i].title);
        free(t[i].text);
    }
    free(t);
}

void lm_character_free(lm_character *c) {
    if (!c) return;
    free(c->path);
    free(c->name);
    for (size_t i = 0; i < c->n_meta; i++) {
        free(c->meta[i].key);
        free(c->meta[i].value);
    }
    free(c->meta);
    free(c->backstory);
    free(c->alignment);
    free(c->speaking_style);
    free(c->knowledge_limits);
    free(c->scenario);
    free(c->creator_notes);
    free(c->system_prompt);
    free(c->post_history);
    lm_strlist_free(&c->values);
    lm_strlist_free(&c->objectives);
    lm_strlist_free(&c->catchphrases);
    free_titled(c->opinions, c->n_opinions);
    for (size_t i = 0; i < c->n_relationships; i++) {
        free(c->relationships[i].name);
        free(c->relationships[i].text);
    }
    free(c->relationships);
    free_titled(c->greetings, c->n_greetings);
    for (size_t i = 0; i < c->n_examples; i++) {
        free(c->examples[i].title);
        for (size_t k = 0; k < c->examples[i].n_turns; k++) free(c->examples[i].turns[k].text);
        free(c->examples[i].turns);
    }
    free(c->examples);
    lm_lore_free(&c->lore);
    free_titled(c->extra, c->n_extra);
    free(c);
}
