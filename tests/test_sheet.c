/* Character and world sheets: the bundled example, every kind of problem
 * `lemonpc check` reports (exact file:line), and the persona prompt. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <jansson.h>

#include "base/strbuf.h"
#include "sheet/sheet.h"

#include "helpers.h"

static const char *EX = "examples/luminara";

static int has_diag(const lm_diags *d, int line, lm_diag_level lvl, const char *sub) {
    for (size_t i = 0; i < d->n; i++)
        if (d->v[i].line == line && d->v[i].level == lvl && strstr(d->v[i].msg, sub)) return 1;
    return 0;
}

static void dump(const lm_diags *d) {
    for (size_t i = 0; i < d->n; i++)
        fprintf(stderr, "  %s:%d: %s: %s\n", d->v[i].file, d->v[i].line,
                d->v[i].level == LM_DIAG_ERROR ? "error" : "warning", d->v[i].msg);
}

static const lm_character *find_char(const lm_sheet_dir *s, const char *name) {
    for (size_t i = 0; i < s->n_chars; i++)
        if (!strcmp(s->chars[i]->name, name)) return s->chars[i];
    return NULL;
}

static void test_example_loads_clean(void **state) {
    (void)state;
    lm_diags d = {0};
    lm_sheet_dir *s = lm_sheet_dir_load(EX, &d);
    if (d.n) dump(&d);
    assert_int_equal(d.n, 0);
    assert_non_null(s->world);
    assert_string_equal(s->world->name, "Holy Kingdom of Luminara");
    assert_int_equal(s->n_chars, 2);
    const lm_character *o = find_char(s, "Orlando Marlo");
    assert_non_null(o);
    assert_string_equal(o->alignment, "Lawful Good");
    assert_int_equal(o->values.n, 7);
    assert_string_equal(o->values.v[1], "Justice tempered with mercy");
    assert_int_equal(o->objectives.n, 6);
    assert_int_equal(o->n_opinions, 2);
    assert_string_equal(o->opinions[0].title, "On the Order of Solar Truth");
    assert_string_equal(o->opinions[1].title, "On Sol's Universal Message");
    assert_true(o->catchphrases.n >= 5);
    assert_true(o->n_relationships >= 8);
    assert_non_null(o->knowledge_limits);
    assert_non_null(o->speaking_style);
    assert_true(o->n_examples >= 8);
    for (size_t i = 0; i < o->n_examples; i++) {
        int chars = 0;
        for (size_t k = 0; k < o->examples[i].n_turns; k++) chars += o->examples[i].turns[k].role == LM_ROLE_CHAR;
        assert_true(chars > 0);
        assert_int_equal(o->examples[i].turns[0].role, LM_ROLE_USER);
    }
    assert_true(strstr(o->backstory, "deathbed confession") != NULL);
    assert_string_equal(lm_meta_get(o->meta, o->n_meta, "world"), "Holy Kingdom of Luminara");
    /* World sections and their named entries. */
    const char *want[] = {"Description", "Political organization", "Power entities", "Important people",
                          "Marginalized entities", "Marginalized important people", "Places"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        assert_non_null(lm_world_section_get(s->world, want[i]));
    const lm_world_section *places = lm_world_section_get(s->world, "Places");
    int cathedral = 0, mount = 0;
    for (size_t i = 0; i < places->n_entries; i++) {
        cathedral |= !strcmp(places->entries[i].name, "The Great Cathedral of Solaris");
        mount |= !strcmp(places->entries[i].name, "Mount Luminous");
    }
    assert_true(cathedral && mount);
    assert_ptr_equal(lm_sheet_find(s, "orlando"), o);
    assert_ptr_equal(lm_sheet_find(s, "orlando-marlo"), o);
    assert_ptr_equal(lm_sheet_find(s, "Orlando Marlo"), o);
    assert_ptr_equal(lm_sheet_find(s, "elena"), find_char(s, "Elena Solwind"));
    assert_null(lm_sheet_find(s, "seraphina"));
    const lm_world_section *power = lm_world_section_get(s->world, "Power entities");
    assert_string_equal(power->entries[2].name, "The Order of Solar Truth");
    lm_sheet_dir_free(s);
    lm_diags_free(&d);
}

/* One bad sheet, one expected diagnostic at an exact line. */
typedef struct {
    const char *what;
    const char *text;
    int line;
    lm_diag_level level;
    const char *msg;
    const char *hint; /* NULL: not checked */
} bad_case;

#define OK_HEAD "# Ann\n\n## Backstory\n\nShe was.\n\n"
#define OK_EX "## Example conversations\n\n### Hi\n\n**User:** hi\n**Ann:** hello\n"

static const bad_case BAD[] = {
    {"no title", "## Backstory\n\nx\n", 1, LM_DIAG_ERROR, "missing the character's name", NULL},
    {"no backstory", "# Ann\n\n## Values\n\n- x\n\n" OK_EX, 1, LM_DIAG_ERROR,
     "missing section 'Backstory'", NULL},
    {"no examples", OK_HEAD, 1, LM_DIAG_WARNING, "no example conversations", NULL},
    {"unknown heading", OK_HEAD "## Speking style\n\nx\n\n" OK_EX, 7, LM_DIAG_WARNING,
     "unknown section 'Speking style'", "did you mean 'Speaking style'?"},
    {"unknown heading far from all", OK_HEAD "## Favourite foods\n\nx\n\n" OK_EX, 7,
     LM_DIAG_WARNING, "unknown section 'Favourite foods'", "known headings: Backstory"},
    {"duplicate section", OK_HEAD "## Values\n\n- a\n\n## Values\n\n- b\n\n" OK_EX, 11,
     LM_DIAG_ERROR, "duplicate section 'Values' (first at line 7)", NULL},
    {"empty section", OK_HEAD "## Alignment\n\n## Values\n\n- a\n\n" OK_EX, 7, LM_DIAG_WARNING,
     "section 'Alignment' is empty", NULL},
    {"line without speaker", OK_HEAD "## Example conversations\n\n### C\n\nhello there\n**Ann:** hi\n",
     11, LM_DIAG_ERROR, "conversation line has no speaker", NULL},
    {"no character turn", OK_HEAD "## Example conversations\n\n### Lonely\n\n**User:** anyone?\n**User:** hello?\n",
     9, LM_DIAG_ERROR, "never gives Ann a turn", NULL},
    {"unknown speaker", OK_HEAD "## Example conversations\n\n### C\n\n**User:** hi\n**Bob:** hey\n**Ann:** yo\n",
     12, LM_DIAG_ERROR, "unknown speaker 'Bob'", "speakers are User and Ann"},
    {"empty conversation", OK_HEAD "## Example conversations\n\n### Nothing\n\n### C\n\n**User:** a\n**Ann:** b\n",
     9, LM_DIAG_ERROR, "conversation 'Nothing' is empty", NULL},
    {"lines outside a conversation", OK_HEAD "## Example conversations\n\n**User:** a\n**Ann:** b\n",
     9, LM_DIAG_ERROR, "outside a `###` conversation", NULL},
    {"bad UTF-8", "# Ann\n\n## Backstory\n\nShe w\xc3\x28s.\n", 5, LM_DIAG_ERROR,
     "invalid UTF-8 byte 0xC3 at column 6", NULL},
    {"front matter not closed", "---\nid: ann\n# Ann\n", 1, LM_DIAG_ERROR, "front matter is never closed", NULL},
    {"front matter line", "---\nid ann\n---\n" OK_HEAD OK_EX, 2, LM_DIAG_ERROR, "not `key: value`", NULL},
    {"unknown front matter key", "---\nwrold: x\n---\n" OK_HEAD OK_EX, 2, LM_DIAG_WARNING,
     "unknown front matter key 'wrold'", "world"},
    {"relationship without name", OK_HEAD "## Relationships\n\n- just some text\n\n" OK_EX, 9,
     LM_DIAG_ERROR, "bullet is not `Name: text`", NULL},
    {"second title", OK_HEAD "# Bob\n\n" OK_EX, 7, LM_DIAG_ERROR, "second `#` title (first at line 1)", NULL},
    {"empty heading", OK_HEAD "## \n\nx\n\n" OK_EX, 7, LM_DIAG_ERROR, "empty heading", NULL},
    {"lore flag", OK_HEAD "## Lore\n\n### sword\n\nEnabled: maybe\n\nA sword.\n\n" OK_EX, 11,
     LM_DIAG_ERROR, "not yes/no", NULL},
    {"text before sections", "# Ann\n\nstray words\n\n## Backstory\n\nx\n\n" OK_EX, 3,
     LM_DIAG_WARNING, "text outside any section", NULL},
};

static void test_bad_sheets(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        const bad_case *b = &BAD[i];
        lm_diags d = {0};
        lm_character *c = lm_character_parse("bad.md", b->text, strlen(b->text), &d);
        assert_non_null(c);
        int found = 0;
        for (size_t k = 0; k < d.n; k++) {
            const lm_diag *g = &d.v[k];
            if (g->line != b->line || g->level != b->level || !strstr(g->msg, b->msg)) continue;
            assert_string_equal(g->file, "bad.md");
            if (b->hint) {
                assert_non_null(g->hint);
                assert_non_null(strstr(g->hint, b->hint));
            }
            found = 1;
        }
        if (!found) {
            fprintf(stderr, "case '%s': want bad.md:%d %s, got:\n", b->what, b->line, b->msg);
            dump(&d);
        }
        assert_true(found);
        lm_character_free(c);
        lm_diags_free(&d);
    }
}

/* A sheet with many problems reports all of them, not just the first. */
static void test_every_problem_reported(void **state) {
    (void)state;
    const char *text = "---\nwrold: x\n---\n# Ann\n\n## Backstroy\n\nx\n\n## Values\n\n- a\n\n## Values\n\n"
                       "## Example conversations\n\n### A\n\n**Bob:** hi\n\n### B\n\n**User:** only me\n";
    lm_diags d = {0};
    lm_character *c = lm_character_parse("many.md", text, strlen(text), &d);
    assert_true(has_diag(&d, 2, LM_DIAG_WARNING, "unknown front matter key"));
    assert_true(has_diag(&d, 6, LM_DIAG_WARNING, "unknown section 'Backstroy'"));
    assert_true(has_diag(&d, 14, LM_DIAG_ERROR, "duplicate section 'Values'"));
    assert_true(has_diag(&d, 20, LM_DIAG_ERROR, "unknown speaker 'Bob'"));
    assert_true(has_diag(&d, 18, LM_DIAG_ERROR, "conversation 'A' is empty"));
    assert_true(has_diag(&d, 22, LM_DIAG_ERROR, "never gives Ann a turn"));
    assert_true(has_diag(&d, 4, LM_DIAG_ERROR, "missing section 'Backstory'"));
    lm_character_free(c);
    lm_diags_free(&d);
}

static void test_long_fields(void **state) {
    (void)state;
    size_t n = LM_SHEET_FIELD_WARN + 100;
    char *text = malloc(n + 200);
    strcpy(text, "# Ann\n\n## Backstory\n\n");
    size_t at = strlen(text);
    memset(text + at, 'a', n);
    strcpy(text + at + n, "\n");
    lm_diags d = {0};
    lm_character_free(lm_character_parse("long.md", text, strlen(text), &d));
    assert_true(has_diag(&d, 3, LM_DIAG_WARNING, "is long"));
    assert_int_equal(lm_diags_count(&d, LM_DIAG_ERROR), 0);
    lm_diags_free(&d);
    free(text);
    n = LM_SHEET_FIELD_MAX + 10;
    text = malloc(n + 200);
    strcpy(text, "# Ann\n\n## Backstory\n\n");
    at = strlen(text);
    memset(text + at, 'a', n);
    strcpy(text + at + n, "\n");
    lm_character_free(lm_character_parse("long.md", text, strlen(text), &d));
    assert_true(has_diag(&d, 3, LM_DIAG_ERROR, "over the"));
    lm_diags_free(&d);
    free(text);
}

/* A long `## Lore` is many small entries, called up a few at a time: no
 * length warning, in a world or a character sheet. */
static void test_long_lore(void **state) {
    (void)state;
    lm_sb b = {0};
    lm_sb_str(&b, "# Land\n\n## Description\n\nx\n\n## Lore\n\n");
    for (int i = 0; i < 200; i++)
        lm_sb_printf(&b, "### key%d\nInsertion order: %d\n\nFact number %d of the land, "
                     "written out at some length to fill the section.\n\n", i, i, i);
    char *text = lm_sb_take(&b);
    assert_true(strlen(text) > LM_SHEET_FIELD_WARN);
    lm_diags d = {0};
    lm_world *w = lm_world_parse("world.md", text, strlen(text), &d);
    assert_int_equal(w->lore.n, 200);
    assert_int_equal(lm_diags_count(&d, LM_DIAG_WARNING) + lm_diags_count(&d, LM_DIAG_ERROR), 0);
    lm_world_free(w);
    lm_diags_free(&d);
    free(text);
}

static void test_crosscheck(void **state) {
    (void)state;
    const char *ct = "---\nworld: Atlantis\n---\n# Ann\n\n## Backstory\n\nx\n\n## Relationships\n\n"
                     "- King Aldric IV: her king\n- Aldric: same man, short\n- Zed the Unknown: who?\n";
    const char *wt = "# Holy Kingdom of Luminara\n\n## Description\n\nx\n\n## Important people\n\n"
                     "- **King Aldric IV**: the king\n";
    lm_diags d = {0};
    lm_character *c = lm_character_parse("c.md", ct, strlen(ct), &d);
    lm_world *w = lm_world_parse("world.md", wt, strlen(wt), &d);
    lm_diags_free(&d);
    lm_character_crosscheck(c, w, NULL, 0, &d);
    assert_true(has_diag(&d, 2, LM_DIAG_ERROR, "refers to world 'Atlantis', but world.md is 'Holy Kingdom of Luminara'"));
    assert_true(has_diag(&d, 14, LM_DIAG_WARNING, "'Zed the Unknown'"));
    assert_false(has_diag(&d, 12, LM_DIAG_WARNING, "relationship"));
    assert_false(has_diag(&d, 13, LM_DIAG_WARNING, "relationship"));
    lm_diags_free(&d);
    lm_character_crosscheck(c, NULL, NULL, 0, &d);
    assert_true(has_diag(&d, 2, LM_DIAG_ERROR, "there is no world.md"));
    lm_diags_free(&d);
    lm_character_free(c);
    lm_world_free(w);
    lm_sheet_dir *s = lm_sheet_dir_load("tests/data/no-such-folder", &d);
    assert_int_equal(s->n_chars, 0);
    assert_int_equal(lm_diags_count(&d, LM_DIAG_ERROR), 1);
    /* the folder itself is named, not the characters/ it would hold */
    assert_string_equal(d.v[0].file, "tests/data/no-such-folder");
    assert_string_equal(d.v[0].msg, "no such folder");
    lm_sheet_dir_free(s);
    lm_diags_free(&d);
    /* a folder without characters/ */
    s = lm_sheet_dir_load("tests/data", &d);
    assert_int_equal(s->n_chars, 0);
    assert_non_null(strstr(d.v[0].msg, "no character sheets"));
    lm_sheet_dir_free(s);
    lm_diags_free(&d);
}

/* Writer then reader gives back the same character. */
static void test_markdown_round_trip(void **state) {
    (void)state;
    lm_diags d = {0};
    lm_sheet_dir *s = lm_sheet_dir_load(EX, &d);
    const lm_character *o = find_char(s, "Orlando Marlo");
    lm_err err = {{0}};
    char *md = lm_character_to_md(o, &err);
    assert_non_null(md);
    lm_character *b = lm_character_parse("again.md", md, strlen(md), &d);
    assert_int_equal(lm_diags_count(&d, LM_DIAG_ERROR), 0);
    assert_string_equal(b->name, o->name);
    assert_string_equal(b->backstory, o->backstory);
    assert_string_equal(b->speaking_style, o->speaking_style);
    assert_int_equal(b->values.n, o->values.n);
    for (size_t i = 0; i < o->values.n; i++) assert_string_equal(b->values.v[i], o->values.v[i]);
    assert_int_equal(b->n_opinions, o->n_opinions);
    assert_string_equal(b->opinions[1].text, o->opinions[1].text);
    assert_int_equal(b->n_examples, o->n_examples);
    for (size_t i = 0; i < o->n_examples; i++) {
        assert_int_equal(b->examples[i].n_turns, o->examples[i].n_turns);
        for (size_t k = 0; k < o->examples[i].n_turns; k++) {
            assert_int_equal(b->examples[i].turns[k].role, o->examples[i].turns[k].role);
            assert_string_equal(b->examples[i].turns[k].text, o->examples[i].turns[k].text);
        }
    }
    assert_int_equal(b->n_relationships, o->n_relationships);
    free(md);
    lm_character_free(b);
    /* Body lines that look like headings survive, escaped. */
    lm_character *h = lm_character_parse("h.md", "# H\n\n## Backstory\n\nx\n", 22, &d);
    free(h->backstory);
    h->backstory = strdup("# not a title\n\\# backslash kept\n## nor a section");
    md = lm_character_to_md(h, &err);
    assert_non_null(md);
    lm_character *h2 = lm_character_parse("h2.md", md, strlen(md), &d);
    assert_string_equal(h2->backstory, h->backstory);
    assert_int_equal(h2->n_extra, 0);
    free(md);
    lm_character_free(h);
    lm_character_free(h2);
    lm_sheet_dir_free(s);
    lm_diags_free(&d);
}

/* A byte-order mark and CRLF line ends are an editor's choice, not errors. */
static void test_bom_and_crlf(void **state) {
    (void)state;
    const char *t = "\xef\xbb\xbf# Ann\r\n\r\n## Backstory\r\n\r\nShe was.\r\n\r\n"
                    "## Example conversations\r\n\r\n### Hi\r\n\r\n**User:** hi\r\n**Ann:** hello\r\n";
    lm_diags d = {0};
    lm_character *c = lm_character_parse("bom.md", t, strlen(t), &d);
    if (d.n) dump(&d);
    assert_int_equal(d.n, 0);
    assert_string_equal(c->name, "Ann");
    assert_string_equal(c->backstory, "She was.");
    assert_string_equal(c->examples[0].turns[1].text, "hello");
    lm_character_free(c);
    lm_diags_free(&d);
}

static void test_persona_prompt(void **state) {
    (void)state;
    lm_diags d = {0};
    lm_sheet_dir *s = lm_sheet_dir_load(EX, &d);
    const lm_character *o = find_char(s, "Orlando Marlo");
    lm_err err = {{0}};
    lm_persona_opts opts = {0, 1, 1, "Traveller"};
    char *p = lm_persona_prompt(o, s->world, &opts, &err);
    assert_non_null(p);
    assert_non_null(strstr(p, "You are Orlando Marlo"));
    assert_non_null(strstr(p, "Justice tempered with mercy"));
    assert_non_null(strstr(p, "Those who claim to own the light cast the darkest shadows."));
    assert_non_null(strstr(p, "stay in character"));
    assert_non_null(strstr(p, "Never speak or act for"));
    assert_non_null(strstr(p, "no stage directions"));
    assert_non_null(strstr(p, "Holy Kingdom of Luminara"));
    assert_non_null(strstr(p, "User: Sir Orlando, why do you come"));
    assert_null(strstr(p, "{{"));
    size_t full = strlen(p);
    free(p);
    /* Every budget is respected; the core survives as long as it fits. */
    for (size_t budget = 600; budget < full + 500; budget += 137) {
        opts.max_bytes = budget;
        p = lm_persona_prompt(o, s->world, &opts, &err);
        assert_non_null(p);
        assert_true(strlen(p) <= budget);
        assert_non_null(strstr(p, "You are Orlando Marlo"));
        assert_non_null(strstr(p, "Rules: stay in character"));
        free(p);
    }
    /* At 1500 bytes the values and catchphrases outrank the examples. */
    opts.max_bytes = 1500;
    p = lm_persona_prompt(o, s->world, &opts, &err);
    assert_non_null(strstr(p, "Justice tempered with mercy"));
    assert_non_null(strstr(p, "May the dawn find you well."));
    assert_null(strstr(p, "User: Sir Orlando"));
    free(p);
    opts.max_bytes = 50;
    p = lm_persona_prompt(o, s->world, &opts, &err);
    assert_null(p);
    assert_non_null(strstr(err.msg, "too small"));
    opts.max_bytes = 0;
    opts.include_examples = 0;
    opts.include_world = 0;
    p = lm_persona_prompt(o, NULL, &opts, &err);
    assert_null(strstr(p, "User: "));
    assert_null(strstr(p, "Places you know"));
    free(p);
    lm_sheet_dir_free(s);
    lm_diags_free(&d);
    /* Regression (found by fuzz_sheet): parts before the backstory filling
     * the budget exactly left no room, and the cut length wrapped around. */
    const char *t = "# Ann\n\n## Backstory\n\nShe was born in a storm. She never forgot it.\n\n## Values\n\n- courage\n";
    lm_character *c = lm_character_parse("ann.md", t, strlen(t), &d);
    char *story = c->backstory;
    c->backstory = NULL;
    lm_persona_opts plain = {0, 0, 0, NULL};
    p = lm_persona_prompt(c, NULL, &plain, &err);
    size_t exact = strlen(p);
    free(p);
    c->backstory = story;
    plain.max_bytes = exact;
    p = lm_persona_prompt(c, NULL, &plain, &err);
    assert_non_null(p);
    assert_true(strlen(p) <= exact);
    assert_non_null(strstr(p, "courage"));
    free(p);
    lm_character_free(c);
    lm_diags_free(&d);
}

static int run(const char *cmd, char **out) {
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = 0, cap = 1 << 16;
    *out = malloc(cap);
    size_t got;
    while ((got = fread(*out + n, 1, cap - n - 1, p)) > 0) n += got;
    (*out)[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* `lemonpc check` as a writer sees it: the exact line format, exit status,
 * --strict and --json. Needs the CLI (make unit sets LEMONPC_BUILD). */
static void test_cli_check(void **state) {
    (void)state;
    char lemonpc[512];
    th_lemonpc(lemonpc, sizeof lemonpc);
    char dir[] = "/tmp/lm_check_XXXXXX", path[256], cmd[1024];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/characters", dir);
    assert_int_equal(mkdir(path, 0777), 0);
    snprintf(path, sizeof path, "%s/world.md", dir);
    th_write_text(path, "# Luminara\n\n## Description\n\nA kingdom.\n");
    snprintf(path, sizeof path, "%s/characters/ann.md", dir);
    th_write_text(path, "---\nworld: Luminara\n---\n# Ann\n\n## Backstroy\n\nx\n\n## Backstory\n\ny\n\n"
                     "## Example conversations\n\n### A\n\n**User:** hi\n**Ann:** hello\n");
    char *out;
    snprintf(cmd, sizeof cmd, "%s check %s 2>/dev/null", lemonpc, dir);
    assert_int_equal(run(cmd, &out), 0); /* warnings only */
    char want[512];
    snprintf(want, sizeof want, "%s/characters/ann.md:6: warning: unknown section 'Backstroy' (hint: did you mean 'Backstory'?", dir);
    assert_non_null(strstr(out, want));
    free(out);
    snprintf(cmd, sizeof cmd, "%s check %s --strict 2>/dev/null", lemonpc, dir);
    assert_int_equal(run(cmd, &out), 1);
    snprintf(want, sizeof want, "%s/characters/ann.md:6: error: unknown section 'Backstroy'", dir);
    assert_non_null(strstr(out, want));
    free(out);
    /* Two errors in one file: both reported, exit status 1. */
    th_write_text(path, "# Ann\n\n## Backstory\n\nx\n\n## Backstory\n\ny\n\n"
                     "## Example conversations\n\n### A\n\n**User:** hi\n**Bob:** hello\n");
    snprintf(cmd, sizeof cmd, "%s check %s --json 2>/dev/null", lemonpc, dir);
    assert_int_equal(run(cmd, &out), 1);
    json_error_t je;
    json_t *arr = json_loads(out, 0, &je);
    assert_non_null(arr);
    int dup = 0, speaker = 0;
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o) {
        const char *m = json_string_value(json_object_get(o, "message"));
        int line = (int)json_integer_value(json_object_get(o, "line"));
        dup |= line == 7 && strstr(m, "duplicate section") != NULL;
        speaker |= line == 16 && strstr(m, "unknown speaker 'Bob'") != NULL;
    }
    assert_true(dup && speaker);
    json_decref(arr);
    free(out);
    th_rm_rf(dir);
}

#ifndef __SANITIZE_ADDRESS__
/* A big sheet: many sections, list items, conversations and lore entries,
 * so its reading allocates in every place that can fail. */
static char *big_sheet(size_t *len) {
    size_t cap = 4u << 20, n = 0;
    char *t = malloc(cap);
    assert_non_null(t);
#define PUT(...) (n += (size_t)snprintf(t + n, cap - n, __VA_ARGS__), assert_true(n < cap))
    PUT("---\nid: big\nworld: Nowhere\n---\n# Big Sheet\n\n## Backstory\n\n");
    for (int i = 0; i < 2000; i++) PUT("Line %d of a long story about {{char}}.\n", i);
    PUT("\n## Values\n\n");
    for (int i = 0; i < 2000; i++) PUT("- value %d\n  wrapped on a second line\n", i);
    PUT("\n## Opinions\n\n");
    for (int i = 0; i < 200; i++) PUT("### Topic %d\n\nAn opinion. More of it.\n\n", i);
    PUT("## Relationships\n\n");
    for (int i = 0; i < 500; i++) PUT("- **Friend %d:** an old friend\n", i);
    PUT("\n## Lore\n\n");
    for (int i = 0; i < 300; i++) PUT("### key %d, other\\, key\n\nComment: c\nEnabled: yes\n\nText %d.\n\n", i, i);
    PUT("## Example conversations\n\n");
    for (int i = 0; i < 500; i++)
        PUT("### Talk %d\n\n**User:** Hello?\n**Big:** Hello, traveller.\nA second line.\n\n", i);
    PUT("## Unknown heading\n\nkept as is\n");
#undef PUT
    *len = n;
    return t;
}

static size_t vm_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    assert_non_null(f);
    unsigned long pages = 0;
    assert_int_equal(fscanf(f, "%lu", &pages), 1);
    fclose(f);
    return pages * (size_t)sysconf(_SC_PAGESIZE);
}

/* Grows the stack mapping now, so the child's later calls need no new
 * address space for it (a stack that cannot grow is a SIGSEGV, not a NULL). */
static void touch_stack(void) {
    volatile char buf[512 << 10];
    for (size_t i = 0; i < sizeof buf; i += 4096) buf[i] = 0;
}

/* In a child limited to limit bytes of address space: parse, write back,
 * persona. Exit 0: all done; 1: out of memory reported as an error; 2: a
 * failure without "out of memory"; a signal: a crash or an abort(). */
static int run_limited(const char *text, size_t len, size_t limit) {
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit rl = {limit, limit};
        if (setrlimit(RLIMIT_AS, &rl)) _exit(3);
        lm_diags d = {0};
        lm_err err = {{0}};
        lm_character *c = lm_character_parse("big.md", text, len, &d);
        if (!c) {
            int said = d.oom;
            for (size_t i = 0; i < d.n; i++)
                said |= d.v[i].level == LM_DIAG_ERROR && !strcmp(d.v[i].file, "big.md") &&
                        strstr(d.v[i].msg, "out of memory") != NULL;
            _exit(said && lm_diags_count(&d, LM_DIAG_ERROR) ? 1 : 2);
        }
        char *md = lm_character_to_md(c, &err);
        if (!md) _exit(strstr(err.msg, "big.md: out of memory") ? 1 : 2);
        lm_persona_opts o = {0, 1, 1, NULL};
        char *p = lm_persona_prompt(c, NULL, &o, &err);
        if (!p) _exit(strstr(err.msg, "out of memory") ? 1 : 2);
        _exit(0);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (WIFSIGNALED(st)) fail_msg("under a %zu-byte limit: killed by signal %d", limit, WTERMSIG(st));
    return WEXITSTATUS(st);
}

/* Allocation failure is an error the caller gets, never an abort: the
 * sheet is read under an address-space limit raised step by step, so
 * allocations fail at different places. Left out of the ASan build: its
 * allocator reserves terabytes of shadow memory up front, which RLIMIT_AS
 * cannot bound; the plain `make unit` runs it. */
static void test_out_of_memory_is_an_error(void **state) {
    (void)state;
    size_t len;
    char *text = big_sheet(&len);
    touch_stack();
    size_t base = vm_bytes();
    int seen[3] = {0};
    for (size_t extra = 0; extra <= (4u << 20); extra += 24u << 10) {
        int rc = run_limited(text, len, base + extra);
        if (rc > 2) fail_msg("setrlimit failed in the child");
        if (rc == 2) fail_msg("under a %zu-byte limit: a failure that does not say out of memory", base + extra);
        seen[rc]++;
    }
    free(text);
    print_message("out of memory, reported: %d limits; enough memory: %d\n", seen[1], seen[0]);
    /* both ends reached: failures at small limits, success at large ones */
    assert_true(seen[1] > 0);
    assert_true(seen[0] > 0);
}
#endif

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_example_loads_clean),
        cmocka_unit_test(test_bad_sheets),
        cmocka_unit_test(test_every_problem_reported),
        cmocka_unit_test(test_long_fields),
        cmocka_unit_test(test_long_lore),
        cmocka_unit_test(test_crosscheck),
        cmocka_unit_test(test_markdown_round_trip),
        cmocka_unit_test(test_bom_and_crlf),
        cmocka_unit_test(test_persona_prompt),
        cmocka_unit_test(test_cli_check),
#ifndef __SANITIZE_ADDRESS__
        cmocka_unit_test(test_out_of_memory_is_an_error),
#endif
    };
    return cmocka_run_group_tests_name("sheet", tests, NULL, NULL);
}
