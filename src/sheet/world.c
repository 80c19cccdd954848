/* World sheet reader: the setting several characters share. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fileio.h"
#include "sheet/parse.h"

const char *const lm_world_headings[] = {
    "Description", "History", "Political organization", "Power entities", "Important people",
    "Marginalized entities", "Marginalized important people", "Places", "Customs", "Lore", NULL};

enum { W_DESCRIPTION = 0, W_LORE = 9 };

static const char *const meta_keys[] = {"id", "version", "creator", "tags", NULL};

const lm_world_section *lm_world_section_get(const lm_world *w, const char *title) {
    if (!w) return NULL;
    for (size_t i = 0; i < w->n_sections; i++)
        if (!lm_sh_casecmp(w->sections[i].title, title)) return &w->sections[i];
    return NULL;
}

lm_world *lm_world_parse(const char *path, const char *text, size_t len, lm_diags *d) {
    lm_md_doc *doc = lm_md_parse(path, text, len, d);
    if (!doc) return NULL;
    lm_world *w = calloc(1, sizeof *w);
    if (!w) goto oom;
    w->meta = doc->meta;
    w->n_meta = doc->n_meta;
    doc->meta = NULL;
    doc->n_meta = 0;
    w->path = strdup(path);
    if (!w->path) goto oom;
    for (size_t i = 0; i < w->n_meta; i++) {
        char hint[512];
        if (lm_heading_index(w->meta[i].key, meta_keys, hint, sizeof hint) < 0)
            lm_diags_add(d, LM_DIAG_WARNING, path, w->meta[i].line, "known keys: id, version, creator, tags",
                         "unknown front matter key '%s'", w->meta[i].key);
    }
    if (doc->title) {
        w->name = doc->title;
        w->name_line = doc->title_line;
        doc->title = NULL;
    } else {
        lm_diags_add(d, LM_DIAG_ERROR, path, 1, "start the file with `# World name`",
                     "missing the world's name (`# Name` title)");
    }
    int seen[16] = {0};
    for (size_t i = 0; i < doc->n_secs; i++) {
        lm_md_section *s = &doc->secs[i];
        char hint[512];
        int h = lm_heading_index(s->title, lm_world_headings, hint, sizeof hint);
        if (h < 0) {
            lm_diags_add(d, LM_DIAG_WARNING, path, s->line, hint, "unknown section '%s'", s->title);
        } else if (seen[h]) {
            lm_diags_add(d, LM_DIAG_ERROR, path, s->line, "merge the two sections",
                         "duplicate section '%s' (first at line %d)", s->title, seen[h]);
            continue;
        } else {
            seen[h] = s->line;
        }
        lm_check_length(path, s, h != W_LORE, d);
        if (!s->body[0])
            lm_diags_add(d, LM_DIAG_WARNING, path, s->line, "write something or remove it",
                         "section '%s' is empty", s->title);
        if (h == W_LORE) {
            if (lm_parse_lore(path, s, &w->lore, d)) goto oom;
            continue;
        }
        lm_world_section *ws = lm_sh_push(&w->sections, &w->n_sections, sizeof *ws);
        if (!ws) goto oom;
        ws->title = strdup(s->title);
        ws->line = s->line;
        ws->text = strdup(s->body);
        if (!ws->title || !ws->text) goto oom;
        /* Entries name the people, groups and places characters may mention. */
        if (h > W_DESCRIPTION && lm_parse_named(path, s, &ws->entries, &ws->n_entries, 0, d))
            goto oom;
    }
    if (!seen[W_DESCRIPTION])
        lm_diags_add(d, LM_DIAG_WARNING, path, w->name_line ? w->name_line : 1,
                     "add `## Description`", "missing section 'Description'");
    lm_md_free(doc);
    return w;
oom:
    lm_md_free(doc);
    lm_world_free(w);
    lm_diags_oom(d, path);
    return NULL;
}

lm_world *lm_world_load(const char *path, lm_diags *d) {
    char *text;
    size_t len;
    lm_err err = {{0}};
    if (lm_read_file_max(path, LM_SHEET_FILE_MAX, &text, &len, &err)) {
        lm_diags_add(d, LM_DIAG_ERROR, path, 0, NULL, "%s", err.msg);
        return NULL;
    }
    lm_world *w = lm_world_parse(path, text, len, d);
    free(text);
    return w;
}

void lm_world_free(lm_world *w) {
    if (!w) return;
    free(w->path);
    free(w->name);
    for (size_t i = 0; i < w->n_meta; i++) {
        free(w->meta[i].key);
        free(w->meta[i].value);
    }
    free(w->meta);
    for (size_t i = 0; i < w->n_sections; i++) {
        lm_world_section *s = &w->sections[i];
        free(s->title);
        free(s->text);
        for (size_t k = 0; k < s->n_entries; k++) {
            free(s->entries[k].name);
            free(s->entries[k].text);
        }
        free(s->entries);
    }
    free(w->sections);
    lm_lore_free(&w->lore);
    free(w);
}
