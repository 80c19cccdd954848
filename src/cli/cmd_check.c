/* lemonpc check: lists every problem in a sheet folder (or one sheet). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/utf8.h"
#include "cli/commands.h"
#include "sheet/sheet.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: lemonpc check DIR|SHEET.md [--strict] [--json]\n\n"
            "Checks a sheet folder (world.md and characters/*.md) or one sheet and\n"
            "reports every problem as `file:line: error|warning: message (hint: ...)`.\n"
            "  --strict  treat warnings as errors\n"
            "  --json    print the problems as a JSON array\n"
            "Exit status: 0 no errors, 1 errors, 2 usage. Format: docs/SHEETS.md\n");
}

/* A lone character sheet is checked against ../world.md when there is one. */
static void check_file(const char *path, lm_diags *d) {
    size_t n = strlen(path);
    char *wpath = malloc(n + 16);
    if (!wpath) return;
    strcpy(wpath, path);
    char *slash = strrchr(wpath, '/');
    if (slash) *slash = '\0'; else strcpy(wpath, ".");
    slash = strrchr(wpath, '/');
    if (slash) strcpy(slash, "/world.md"); else strcpy(wpath, "world.md");
    struct stat st;
    lm_world *w = NULL;
    if (!strstr(path, "world.md") && stat(wpath, &st) == 0) w = lm_world_load(wpath, d);
    if (strlen(path) >= 8 && !strcmp(path + strlen(path) - 8, "world.md")) {
        lm_world_free(lm_world_load(path, d));
    } else {
        lm_character *c = lm_character_load(path, d);
        if (c) lm_character_crosscheck(c, w, NULL, 0, d);
        lm_character_free(c);
    }
    lm_world_free(w);
    free(wpath);
}

/* A JSON string of s, invalid UTF-8 (quoted from a bad sheet) as U+FFFD. */
static json_t *json_text(const char *s) {
    char *t = lm_utf8_clean(s, strlen(s), LM_UTF8_NO_NUL, NULL);
    json_t *j = t ? json_string(t) : NULL;
    free(t);
    return j;
}

int cmd_check(int argc, char **argv) {
    const char *path = NULL;
    int strict = 0, json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { usage(stdout); return 0; }
        else if (!strcmp(argv[i], "--strict")) strict = 1;
        else if (!strcmp(argv[i], "--json")) json = 1;
        else if (argv[i][0] == '-' || path) { usage(stderr); return 2; }
        else path = argv[i];
    }
    if (!path) { usage(stderr); return 2; }
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "lemonpc check: %s: no such file or folder\n", path);
        return 1;
    }
    lm_diags d = {0};
    if (S_ISDIR(st.st_mode)) lm_sheet_dir_free(lm_sheet_dir_load(path, &d));
    else check_file(path, &d);
    lm_diags_sort(&d);
    if (strict)
        for (size_t i = 0; i < d.n; i++) d.v[i].level = LM_DIAG_ERROR;
    size_t errors = lm_diags_count(&d, LM_DIAG_ERROR), warnings = lm_diags_count(&d, LM_DIAG_WARNING);
    if (json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < d.n; i++) {
            json_t *o = json_object();
            json_object_set_new(o, "file", json_text(d.v[i].file));
            json_object_set_new(o, "line", json_integer(d.v[i].line));
            json_object_set_new(o, "level", json_string(d.v[i].level == LM_DIAG_ERROR ? "error" : "warning"));
            json_object_set_new(o, "message", json_text(d.v[i].msg));
            if (d.v[i].hint) json_object_set_new(o, "hint", json_text(d.v[i].hint));
            json_array_append_new(arr, o);
        }
        char *s = json_dumps(arr, JSON_INDENT(2));
        if (s) puts(s);
        free(s);
        json_decref(arr);
    } else {
        for (size_t i = 0; i < d.n; i++) {
            const lm_diag *g = &d.v[i];
            if (g->line > 0) printf("%s:%d: ", g->file, g->line);
            else printf("%s: ", g->file);
            printf("%s: %s", g->level == LM_DIAG_ERROR ? "error" : "warning", g->msg);
            if (g->hint) printf(" (hint: %s)", g->hint);
            putchar('\n');
        }
        fprintf(stderr, "%s: %zu error%s, %zu warning%s\n", path, errors, errors == 1 ? "" : "s",
                warnings, warnings == 1 ? "" : "s");
    }
    lm_diags_free(&d);
    return errors ? 1 : 0;
}
