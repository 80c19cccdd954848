/* Sheet folders and the checks that span files: a character's world
 * reference and the people its relationships name. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "sheet/parse.h"

/* "Aldric" matches "King Aldric IV"? Whole-word containment either way,
 * so titles and surnames may be left off. */
static int word_in(const char *needle, const char *hay) {
    size_t n = strlen(needle);
    if (!n) return 0;
    for (const char *p = hay; (p = strcasestr(p, needle)) != NULL; p++) {
        int left = p == hay || p[-1] == ' ';
        int right = p[n] == '\0' || p[n] == ' ' || p[n] == ',';
        if (left && right) return 1;
    }
    return 0;
}

static int names_match(const char *a, const char *b) {
    return !lm_sh_casecmp(a, b) || word_in(a, b) || word_in(b, a);
}

void lm_character_crosscheck(const lm_character *c, const lm_world *w,
                             lm_character *const *others, size_t n_others, lm_diags *d) {
    const char *ref = lm_meta_get(c->meta, c->n_meta, "world");
    int ref_line = 1;
    for (size_t i = 0; i < c->n_meta; i++)
        if (!lm_sh_casecmp(c->meta[i].key, "world")) ref_line = c->meta[i].line;
    if (ref && !w)
        lm_diags_add(d, LM_DIAG_ERROR, c->path, ref_line, "add world.md next to characters/",
                     "refers to world '%s', but there is no world.md", ref);
    else if (ref && w && w->name && lm_sh_casecmp(ref, w->name))
        lm_diags_add(d, LM_DIAG_ERROR, c->path, ref_line, "the world is named by world.md's `#` title",
                     "refers to world '%s', but world.md is '%s'", ref, w->name);
    for (size_t i = 0; i < c->n_relationships; i++) {
        const char *who = c->relationships[i].name;
        int found = c->name && names_match(who, c->name);
        for (size_t k = 0; !found && k < n_others; k++)
            found = others[k]->name && names_match(who, others[k]->name);
        for (size_t s = 0; !found && w && s < w->n_sections; s++)
            for (size_t k = 0; !found && k < w->sections[s].n_entries; k++)
                found = names_match(who, w->sections[s].entries[k].name);
        if (!found)
            lm_diags_add(d, LM_DIAG_WARNING, c->path, c->relationships[i].line,
                         w ? "add them to world.md (e.g. under `## Important people`) or write a sheet for them"
                           : "add world.md listing the people of the world",
                         "relationship names '%s', who is not in the world or the other sheets", who);
    }
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

lm_sheet_dir *lm_sheet_dir_load(const char *dir, lm_diags *d) {
    lm_sheet_dir *s = calloc(1, sizeof *s);
    char *cdir = NULL, **names = NULL;
    size_t n = 0;
    if (!s || !(s->dir = strdup(dir))) goto oom;
    struct stat st;
    /* name the folder itself, not the characters/ it would hold */
    int missing = stat(dir, &st) != 0;
    if (missing || !S_ISDIR(st.st_mode)) {
        lm_diags_add(d, LM_DIAG_ERROR, dir, 0,
                     "give the sheet folder: the one that holds world.md and characters/", "%s",
                     !missing ? "not a folder" : errno == ENOENT ? "no such folder" : strerror(errno));
        return s;
    }
    lm_sb b = {0};
    lm_sb_printf(&b, "%s/world.md", dir);
    char *wpath = lm_sb_take(&b);
    if (!wpath) goto oom;
    if (stat(wpath, &st) == 0) {
        s->world = lm_world_load(wpath, d);
        /* a world.md that cannot be read is an error in d already */
    }
    free(wpath);
    lm_sb_printf(&b, "%s/characters", dir);
    if (!(cdir = lm_sb_take(&b))) goto oom;
    DIR *dp = opendir(cdir);
    if (dp) {
        struct dirent *e;
        while ((e = readdir(dp)) != NULL) {
            size_t l = strlen(e->d_name);
            if (l > 3 && !strcmp(e->d_name + l - 3, ".md") && e->d_name[0] != '.') {
                char **slot = lm_sh_push(&names, &n, sizeof *slot);
                if (!slot || !(*slot = strdup(e->d_name))) {
                    closedir(dp);
                    goto oom;
                }
            }
        }
        closedir(dp);
    }
    if (n) qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
        lm_sb_printf(&b, "%s/%s", cdir, names[i]);
        char *p = lm_sb_take(&b);
        if (!p) goto oom;
        lm_character *c = lm_character_load(p, d);
        free(p);
        if (c) {
            lm_character **slot = lm_sh_push(&s->chars, &s->n_chars, sizeof *slot);
            if (!slot) {
                lm_character_free(c);
                goto oom;
            }
            *slot = c;
        }
    }
    if (!n)
        lm_diags_add(d, LM_DIAG_ERROR, cdir, 0, "write characters/NAME.md (see docs/SHEETS.md)",
                     "no character sheets found");
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    free(cdir);
    for (size_t i = 0; i < s->n_chars; i++) {
        lm_character *others[64];
        size_t no = 0;
        for (size_t k = 0; k < s->n_chars && no < 64; k++)
            if (k != i) others[no++] = s->chars[k];
        lm_character_crosscheck(s->chars[i], s->world, others, no, d);
    }
    return s;
oom:
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    free(cdir);
    lm_sheet_dir_free(s);
    lm_diags_oom(d, dir);
    return NULL;
}

void lm_sheet_dir_free(lm_sheet_dir *s) {
    if (!s) return;
    free(s->dir);
    lm_world_free(s->world);
    for (size_t i = 0; i < s->n_chars; i++) lm_character_free(s->chars[i]);
    free(s->chars);
    free(s);
}

const lm_character *lm_sheet_find(const lm_sheet_dir *s, const char *key) {
    for (size_t i = 0; s && key && i < s->n_chars; i++) {
        const lm_character *c = s->chars[i];
        const char *id = lm_meta_get(c->meta, c->n_meta, "id");
        const char *base = strrchr(c->path, '/');
        base = base ? base + 1 : c->path;
        size_t bl0 = strlen(base);
        size_t bl = bl0 > 3 && !strcmp(base + bl0 - 3, ".md") ? bl0 - 3 : bl0, fw = c->name ? strcspn(c->name, " ") : 0;
        if ((id && !lm_sh_casecmp(id, key)) || (strlen(key) == bl && !strncasecmp(base, key, bl)) ||
            (c->name && !lm_sh_casecmp(c->name, key)) ||
            (fw && strlen(key) == fw && !strncasecmp(c->name, key, fw)))
            return c;
    }
    return NULL;
}
