/* Card <-> sheet mapping. Card fields with a home in the sheet:
 *   name -> `# Name`, description -> Backstory, personality -> Speaking
 *   style, scenario -> Scenario, first_mes + alternate_greetings ->
 *   Greetings, mes_example -> Example conversations, creator_notes,
 *   system_prompt, post_history_instructions -> their sections,
 *   tags/creator/character_version -> front matter, character_book
 *   entries -> `## Lore` in world.md.
 * The rest goes to the sidecar (see card.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sheet/card.h"
#include "sheet/parse.h"

static const char *const MAPPED[] = {
    "name", "description", "personality", "scenario", "first_mes", "mes_example",
    "creator_notes", "system_prompt", "post_history_instructions", "alternate_greetings",
    "character_book", "tags", "creator", "character_version", NULL};

static const char *const V3_ONLY[] = {"nickname", "creator_notes_multilingual", "source",
                                      "group_only_greetings", "creation_date",
                                      "modification_date", "assets", NULL};

static const char *const ENTRY_MAPPED[] = {"keys", "content", "enabled", "constant", "selective",
                                           "insertion_order", "comment", "secondary_keys", NULL};

static int in_list(const char *const *l, const char *k) {
    for (; *l; l++)
        if (!strcmp(*l, k)) return 1;
    return 0;
}

/* A copy of the string o[k], NULL when it is not a string. The sheet is
 * built with a sticky *oom: one check at the end, as lm_sb does. */
static char *str_or_null(const json_t *o, const char *k, int *oom) {
    const json_t *v = json_object_get(o, k);
    if (!json_is_string(v)) return NULL;
    char *s = strndup(json_string_value(v), json_string_length(v));
    if (!s) *oom = 1;
    return s;
}

/* Empty strings map to "no section". */
static char *nonempty(const json_t *o, const char *k, int *oom) {
    char *s = str_or_null(o, k, oom);
    if (s && !s[0]) { free(s); s = NULL; }
    return s;
}

static char *dup(const char *s, int *oom) {
    char *d = strdup(s);
    if (!d) *oom = 1;
    return d;
}

/* A mes_example label at the start of a line: returns the role or -1 and
 * the length of the label with its colon. */
static int mes_label(const char *s, size_t n, const char *name, size_t *len) {
    static const struct { const char *l; int role; } L[] = {
        {"{{user}}:", LM_ROLE_USER}, {"{{char}}:", LM_ROLE_CHAR}, {"<USER>:", LM_ROLE_USER},
        {"<BOT>:", LM_ROLE_CHAR}, {"{{user}} :", LM_ROLE_USER}, {"{{char}} :", LM_ROLE_CHAR}};
    for (size_t i = 0; i < sizeof L / sizeof L[0]; i++) {
        size_t ll = strlen(L[i].l);
        if (n >= ll && !strncasecmp(s, L[i].l, ll)) { *len = ll; return L[i].role; }
    }
    size_t nl = strlen(name);
    if (nl && n > nl && !strncmp(s, name, nl) && s[nl] == ':') { *len = nl + 1; return LM_ROLE_CHAR; }
    return -1;
}

/* -1 when out of memory. */
static int parse_mes_example(const char *mes, lm_character *c) {
    const char *p = mes;
    lm_example *ex = NULL;
    int blank = 0;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        size_t ln = n;
        if (ln && p[ln - 1] == '\r') ln--;
        char *t = lm_sh_trim(p, ln);
        if (!t) return -1;
        size_t lab;
        int role;
        if (!lm_sh_casecmp(t, "<START>")) {
            ex = NULL;
        } else if ((role = mes_label(p, ln, c->name, &lab)) >= 0) {
            if (!ex) {
                ex = lm_sh_push(&c->examples, &c->n_examples, sizeof *ex);
                if (!ex) { free(t); return -1; }
                char title[64];
                snprintf(title, sizeof title, "Example %zu", c->n_examples);
                if (!(ex->title = strdup(title))) { free(t); return -1; }
            }
            lm_turn *turn = lm_sh_push(&ex->turns, &ex->n_turns, sizeof *turn);
            if (!turn) { free(t); return -1; }
            turn->role = (lm_role)role;
            turn->text = lm_sh_trim(p + lab, ln - lab);
            if (!turn->text) { free(t); return -1; }
            blank = 0;
        } else if (!t[0]) {
            blank = 1;
        } else if (ex && ex->n_turns) {
            lm_turn *turn = &ex->turns[ex->n_turns - 1];
            size_t tl = strlen(turn->text);
            char *q = realloc(turn->text, tl + ln + 3);
            if (!q) { free(t); return -1; }
            turn->text = q;
            memcpy(turn->text + tl, blank ? "\n\n" : "\n", blank ? 2 : 1);
            tl += blank ? 2 : 1;
            memcpy(turn->text + tl, p, ln);
            turn->text[tl + ln] = '\0';
            blank = 0;
        }
        /* Narration outside any turn has no place in the sheet; the
         * sidecar keeps the original mes_example. */
        free(t);
        p += n;
        if (*p) p++;
    }
    return 0;
}

/* NULL when out of memory. */
static char *render_mes_example(const lm_character *c) {
    lm_sb b = {0};
    for (size_t i = 0; i < c->n_examples; i++) {
        if (i) lm_sb_str(&b, "\n");
        lm_sb_str(&b, "<START>");
        for (size_t k = 0; k < c->examples[i].n_turns; k++) {
            const lm_turn *t = &c->examples[i].turns[k];
            lm_sb_printf(&b, "\n%s: %s", t->role == LM_ROLE_USER ? "{{user}}" : "{{char}}", t->text);
        }
    }
    return lm_sb_take(&b);
}

/* The strings of a (type-checked) array; sets *oom when out of memory. */
static void strs_from(const json_t *arr, char ***v, size_t *n, int *oom) {
    size_t i;
    json_t *x;
    json_array_foreach(arr, i, x) {
        char **slot = lm_sh_push(v, n, sizeof *slot);
        if (!slot || !(*slot = strdup(json_string_value(x)))) {
            *oom = 1;
            return;
        }
    }
}

static void meta_add(lm_character *c, const char *k, const char *v, int *oom) {
    lm_kv *kv = lm_sh_push(&c->meta, &c->n_meta, sizeof *kv);
    if (!kv) {
        *oom = 1;
        return;
    }
    kv->key = dup(k, oom);
    kv->value = dup(v, oom);
}

int lm_card_to_sheet(const lm_card *card, lm_character **cout, lm_world **wout, json_t **xout,
                     lm_err *err) {
    const json_t *d = card->data;
    *cout = NULL;
    *wout = NULL;
    *xout = NULL;
    lm_character *c = calloc(1, sizeof *c);
    if (!c) return lm_errf(err, "out of memory converting the card to a sheet");
    int oom = 0;
    lm_world *w = NULL;
    json_t *x = json_object();
    json_object_set_new(x, "lemonpc_card_extra", json_integer(1));
    const char *spec = card->version == 3 ? "chara_card_v3" : card->version == 2 ? "chara_card_v2" : "v1";
    json_object_set_new(x, "spec", json_string(spec));
    json_t *sv = json_object_get(card->root, "spec_version");
    if (card->version > 1 && sv) json_object_set(x, "spec_version", sv);
    json_t *top = json_object(), *dx = json_object();
    const char *k;
    json_t *v;
    json_object_foreach(card->root, k, v) {
        if (card->version > 1 && (!strcmp(k, "spec") || !strcmp(k, "spec_version") || !strcmp(k, "data")))
            continue;
        if (card->version == 1 && in_list(MAPPED, k)) continue;
        json_object_set(top, k, v);
    }
    if (card->version > 1)
        json_object_foreach((json_t *)d, k, v)
            if (!in_list(MAPPED, k)) json_object_set(dx, k, v);
    json_object_set_new(x, "top", top);
    json_object_set_new(x, "data", dx);

    c->name = str_or_null(d, "name", &oom);
    c->backstory = str_or_null(d, "description", &oom);
    if (!c->backstory) c->backstory = dup("", &oom);
    c->speaking_style = nonempty(d, "personality", &oom);
    c->scenario = nonempty(d, "scenario", &oom);
    c->creator_notes = nonempty(d, "creator_notes", &oom);
    c->system_prompt = nonempty(d, "system_prompt", &oom);
    c->post_history = nonempty(d, "post_history_instructions", &oom);
    json_t *first = json_object_get(d, "first_mes"), *alts = json_object_get(d, "alternate_greetings");
    if ((first && json_string_length(first)) || json_array_size(alts)) {
        lm_titled *g = lm_sh_push(&c->greetings, &c->n_greetings, sizeof *g);
        if (!g) goto oom;
        g->title = dup("First message", &oom);
        g->text = dup(json_is_string(first) ? json_string_value(first) : "", &oom);
        size_t i;
        json_array_foreach(alts, i, v) {
            g = lm_sh_push(&c->greetings, &c->n_greetings, sizeof *g);
            if (!g) goto oom;
            char t[64];
            snprintf(t, sizeof t, "Alternate greeting %zu", i + 1);
            g->title = dup(t, &oom);
            g->text = dup(json_string_value(v), &oom);
        }
    }
    char *mes = str_or_null(d, "mes_example", &oom);
    if (mes && parse_mes_example(mes, c)) oom = 1;
    free(mes);
    json_t *tags = json_object_get(d, "tags");
    if (json_array_size(tags)) {
        lm_sb b = {0};
        char **tv = NULL;
        size_t tn = 0;
        strs_from(tags, &tv, &tn, &oom);
        lm_put_keys(&b, tv, tn);
        for (size_t i = 0; i < tn; i++) free(tv[i]);
        free(tv);
        char *s = lm_sb_take(&b);
        if (s) meta_add(c, "tags", s, &oom);
        else oom = 1;
        free(s);
    }
    char *cr = nonempty(d, "creator", &oom), *ver = nonempty(d, "character_version", &oom);
    if (cr) meta_add(c, "creator", cr, &oom);
    if (ver) meta_add(c, "version", ver, &oom);
    free(cr);
    free(ver);

    json_t *book = json_object_get(d, "character_book");
    if (json_is_object(book)) { /* null: no lorebook; the verbatim record keeps the null */
        json_t *bx = json_object(), *ex = json_array();
        json_object_foreach(book, k, v)
            if (strcmp(k, "entries")) json_object_set(bx, k, v);
        json_object_set_new(x, "book", bx);
        json_object_set_new(x, "entries", ex);
        w = calloc(1, sizeof *w);
        if (!w) goto oom;
        const char *bn = json_string_value(json_object_get(book, "name"));
        char wn[512];
        if (bn && bn[0] && !strchr(bn, '\n')) snprintf(wn, sizeof wn, "%s", bn);
        else snprintf(wn, sizeof wn, "World of %s", c->name);
        w->name = dup(wn, &oom);
        lm_world_section *ds = lm_sh_push(&w->sections, &w->n_sections, sizeof *ds);
        if (!ds) goto oom;
        ds->title = dup("Description", &oom);
        char desc[1024];
        snprintf(desc, sizeof desc,
                 "The world of %s, imported from a Character Card. Its lorebook is under Lore.", c->name);
        ds->text = dup(desc, &oom);
        meta_add(c, "world", wn, &oom);
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(book, "entries"), i, e) {
            lm_lore_entry *le = lm_sh_push(&w->lore.v, &w->lore.n, sizeof *le);
            if (!le) goto oom;
            json_t *ee = json_object();
            /* A null field is "not set": the sheet leaves it out and the
             * sidecar keeps the null. */
            json_object_foreach(e, k, v)
                if (!in_list(ENTRY_MAPPED, k) || json_is_null(v)) json_object_set(ee, k, v);
            strs_from(json_object_get(e, "keys"), &le->keys, &le->n_keys, &oom);
            json_t *sk = json_object_get(e, "secondary_keys");
            if (json_array_size(sk)) strs_from(sk, &le->secondary_keys, &le->n_secondary_keys, &oom);
            else if (sk) json_object_set(ee, "secondary_keys", sk);
            le->content = str_or_null(e, "content", &oom);
            if (!le->content) le->content = dup("", &oom);
            json_t *f;
            le->enabled = json_is_boolean(f = json_object_get(e, "enabled")) ? json_is_true(f) : -1;
            le->constant = json_is_boolean(f = json_object_get(e, "constant")) ? json_is_true(f) : -1;
            le->selective = json_is_boolean(f = json_object_get(e, "selective")) ? json_is_true(f) : -1;
            if (json_is_number(f = json_object_get(e, "insertion_order"))) {
                le->has_insertion_order = 1;
                le->insertion_order = json_number_value(f);
            }
            le->comment = str_or_null(e, "comment", &oom);
            json_array_append_new(ex, ee);
        }
    }
    if (oom) goto oom;
    *cout = c;
    *wout = w;
    *xout = x;
    return 0;
oom:
    lm_character_free(c);
    lm_world_free(w);
    json_decref(x);
    return lm_errf(err, "out of memory converting the card to a sheet");
}

static void set_str(json_t *o, const char *k, const char *v) {
    json_object_set_new(o, k, json_string(v ? v : ""));
}

static json_t *str_array(char *const *v, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(a, json_string(v[i]));
    return a;
}

static json_t *number(double d) {
    /* range first: converting an out-of-range double is undefined */
    if (d > -9e15 && d < 9e15 && d == (double)(long long)d) return json_integer((json_int_t)d);
    return json_real(d);
}

static void put_list(lm_sb *b, const char *title, const lm_strlist *l) {
    if (!l->n) return;
    lm_sb_printf(b, "\n\n%s:", title);
    for (size_t i = 0; i < l->n; i++) lm_sb_printf(b, "\n- %s", l->v[i]);
}

/* The sheet sections a card has no field for, folded into description so
 * an exported card still carries the whole character. NULL when out of
 * memory, as compose_personality. */
static char *compose_description(const lm_character *c) {
    lm_sb b = {0};
    lm_sb_str(&b, c->backstory ? c->backstory : "");
    if (c->alignment) lm_sb_printf(&b, "\n\nAlignment: %s", c->alignment);
    put_list(&b, "Values", &c->values);
    put_list(&b, "Objectives", &c->objectives);
    if (c->n_opinions) lm_sb_str(&b, "\n\nOpinions:");
    for (size_t i = 0; i < c->n_opinions; i++)
        lm_sb_printf(&b, "\n\n%s: %s", c->opinions[i].title, c->opinions[i].text);
    if (c->n_relationships) lm_sb_str(&b, "\n\nRelationships:");
    for (size_t i = 0; i < c->n_relationships; i++)
        lm_sb_printf(&b, "\n- %s: %s", c->relationships[i].name, c->relationships[i].text);
    if (c->knowledge_limits) lm_sb_printf(&b, "\n\nKnowledge limits: %s", c->knowledge_limits);
    for (size_t i = 0; i < c->n_extra; i++)
        lm_sb_printf(&b, "\n\n%s:\n%s", c->extra[i].title, c->extra[i].text);
    return lm_sb_take(&b);
}

static char *compose_personality(const lm_character *c) {
    lm_sb b = {0};
    lm_sb_str(&b, c->speaking_style ? c->speaking_style : "");
    if (c->catchphrases.n) {
        if (b.len) lm_sb_str(&b, "\n\n");
        lm_sb_str(&b, "Catchphrases:");
        for (size_t i = 0; i < c->catchphrases.n; i++) lm_sb_printf(&b, "\n- %s", c->catchphrases.v[i]);
    }
    return lm_sb_take(&b);
}

/* json_equal that treats two absent values as equal. */
static int same(const json_t *a, const json_t *b) {
    if (!a || !b) return a == b;
    return json_equal(a, b);
}

static json_t *build_book(const lm_lore *lore, const lm_world *w, const json_t *extra, int version) {
    const json_t *bx = json_object_get(extra, "book"), *ex = json_object_get(extra, "entries");
    if (!lore->n && !bx) return NULL;
    json_t *book = bx ? json_deep_copy(bx) : json_object();
    if (!bx) {
        if (w && w->name) set_str(book, "name", w->name);
        json_object_set_new(book, "extensions", json_object());
    }
    json_t *entries = json_array();
    for (size_t i = 0; i < lore->n; i++) {
        const lm_lore_entry *le = &lore->v[i];
        const json_t *old = json_array_get(ex, i);
        int fresh = !json_is_object(old);
        json_t *e = fresh ? json_object() : json_deep_copy(old);
        json_object_del(e, "lemonpc_verbatim");
        json_object_set_new(e, "keys", str_array(le->keys, le->n_keys));
        set_str(e, "content", le->content);
        if (le->enabled >= 0) json_object_set_new(e, "enabled", json_boolean(le->enabled));
        else if (fresh) json_object_set_new(e, "enabled", json_true());
        if (le->has_insertion_order) json_object_set_new(e, "insertion_order", number(le->insertion_order));
        else if (fresh) json_object_set_new(e, "insertion_order", json_integer((json_int_t)i * 10));
        if (le->constant >= 0) json_object_set_new(e, "constant", json_boolean(le->constant));
        if (le->selective >= 0) json_object_set_new(e, "selective", json_boolean(le->selective));
        if (le->n_secondary_keys)
            json_object_set_new(e, "secondary_keys", str_array(le->secondary_keys, le->n_secondary_keys));
        if (le->comment) set_str(e, "comment", le->comment);
        if (fresh) {
            json_object_set_new(e, "extensions", json_object());
            if (version == 3) json_object_set_new(e, "use_regex", json_false());
        }
        /* The entry as imported, while the sheet still says the same. */
        const json_t *vb = json_object_get(old, "lemonpc_verbatim");
        if (vb && json_equal(e, json_object_get(vb, "sheet")) && json_object_get(vb, "card")) {
            json_decref(e);
            e = json_deep_copy(json_object_get(vb, "card"));
        }
        json_array_append_new(entries, e);
    }
    json_object_set_new(book, "entries", entries);
    return book;
}

/* The card's data object as the sheet says it, before the sidecar's
 * verbatim copies are applied; NULL when out of memory. */
static json_t *sheet_data(const lm_character *c, const lm_world *w, const json_t *extra, int version) {
    const json_t *dx = json_object_get(extra, "data");
    json_t *d = json_is_object(dx) ? json_deep_copy(dx) : json_object();
    int oom = !d;
    set_str(d, "name", c->name);
    char *desc = compose_description(c), *pers = compose_personality(c);
    if (!desc || !pers) oom = 1;
    set_str(d, "description", desc);
    set_str(d, "personality", pers);
    free(desc);
    free(pers);
    const lm_world_section *wd = w ? lm_world_section_get(w, "Description") : NULL;
    if (c->scenario || !wd || !wd->text[0]) {
        set_str(d, "scenario", c->scenario);
    } else {
        lm_sb b = {0};
        lm_sb_printf(&b, "{{char}} lives in %s. %s", w->name ? w->name : "", wd->text);
        char *s = lm_sb_take(&b);
        if (!s) oom = 1;
        set_str(d, "scenario", s);
        free(s);
    }
    set_str(d, "first_mes", c->n_greetings ? c->greetings[0].text : "");
    json_t *alts = json_array();
    for (size_t i = 1; i < c->n_greetings; i++) json_array_append_new(alts, json_string(c->greetings[i].text));
    json_object_set_new(d, "alternate_greetings", alts);
    char *mes = render_mes_example(c);
    if (!mes) oom = 1;
    set_str(d, "mes_example", mes);
    free(mes);
    set_str(d, "creator_notes", c->creator_notes);
    set_str(d, "system_prompt", c->system_prompt);
    set_str(d, "post_history_instructions", c->post_history);
    const char *tags = lm_meta_get(c->meta, c->n_meta, "tags");
    char **tv = NULL;
    size_t tn = 0;
    if (tags && lm_split_keys(tags, &tv, &tn)) oom = 1;
    json_object_set_new(d, "tags", str_array(tv, tn));
    for (size_t i = 0; i < tn; i++) free(tv[i]);
    free(tv);
    set_str(d, "creator", lm_meta_get(c->meta, c->n_meta, "creator"));
    set_str(d, "character_version", lm_meta_get(c->meta, c->n_meta, "version"));
    if (!json_object_get(d, "extensions")) json_object_set_new(d, "extensions", json_object());
    const char *wref = lm_meta_get(c->meta, c->n_meta, "world");
    const lm_lore *lore = c->lore.n || !w || !wref ? &c->lore : &w->lore;
    json_t *book = build_book(lore, w, extra, version);
    if (book) json_object_set_new(d, "character_book", book);
    if (oom) {
        json_decref(d);
        return NULL;
    }
    return d;
}

json_t *lm_sheet_to_card(const lm_character *c, const lm_world *w, const json_t *extra,
                         int version, lm_err *err) {
    if (version != 2 && version != 3) {
        lm_errf(err, "card version %d: only 2 and 3 can be written", version);
        return NULL;
    }
    if (!c->name) {
        lm_errf(err, "%s: the sheet has no name", c->path ? c->path : "sheet");
        return NULL;
    }
    if (extra && !json_is_object(extra)) extra = NULL;
    json_t *d = sheet_data(c, w, extra, version);
    if (!d) {
        lm_errf(err, "%s: out of memory converting the sheet to a card", c->path ? c->path : c->name);
        return NULL;
    }
    const json_t *verb = json_object_get(extra, "verbatim");
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)verb, k, v) {
        /* The writer left this field as imported: give back the original. */
        if (!same(json_object_get(d, k), json_object_get(v, "sheet"))) continue;
        json_t *orig = json_object_get(v, "card");
        if (orig) json_object_set(d, k, orig);
        else json_object_del(d, k);
    }
    const char *ospec = json_string_value(json_object_get(extra, "spec"));
    const char *spec = version == 3 ? "chara_card_v3" : "chara_card_v2";
    int same_spec = ospec && !strcmp(ospec, spec);
    if (!same_spec && version == 2) {
        for (const char *const *f = V3_ONLY; *f; f++) json_object_del(d, *f);
        json_t *book = json_object_get(d, "character_book");
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(book, "entries"), i, e) json_object_del(e, "use_regex");
    }
    if (!same_spec && version == 3) {
        if (!json_object_get(d, "group_only_greetings"))
            json_object_set_new(d, "group_only_greetings", json_array());
        json_t *book = json_object_get(d, "character_book");
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(book, "entries"), i, e)
            if (!json_object_get(e, "use_regex")) json_object_set_new(e, "use_regex", json_false());
    }
    json_t *root = json_object();
    json_object_set_new(root, "spec", json_string(spec));
    json_t *sv = json_object_get(extra, "spec_version");
    if (same_spec && sv) json_object_set(root, "spec_version", sv);
    else if (!same_spec) json_object_set_new(root, "spec_version", json_string(version == 3 ? "3.0" : "2.0"));
    json_object_set_new(root, "data", d);
    json_object_foreach(json_object_get(extra, "top"), k, v)
        if (!json_object_get(root, k)) json_object_set(root, k, v);
    return root;
}

/* Records, for every data field the Markdown round trip changes, what the
 * sheet will say and what the card said. */
int lm_card_record_verbatim(const lm_card *card, const lm_character *c2, const lm_world *w2,
                            json_t *extra, lm_err *err) {
    int version = card->version == 3 ? 3 : 2;
    json_t *d2 = sheet_data(c2, w2, extra, version);
    if (!d2) goto oom;
    /* Lorebook entries get their own verbatim copies, so editing one entry
     * leaves the others exact. */
    json_t *e2 = json_object_get(json_object_get(d2, "character_book"), "entries");
    json_t *e1 = json_object_get(json_object_get(card->data, "character_book"), "entries");
    json_t *ex = json_object_get(extra, "entries");
    if (json_is_array(e1) && json_array_size(e1) == json_array_size(e2) &&
        json_array_size(ex) == json_array_size(e1)) {
        int changed = 0;
        for (size_t i = 0; i < json_array_size(e1); i++) {
            if (json_equal(json_array_get(e1, i), json_array_get(e2, i))) continue;
            json_t *rec = json_object();
            json_object_set(rec, "sheet", json_array_get(e2, i));
            json_object_set(rec, "card", json_array_get(e1, i));
            json_object_set_new(json_array_get(ex, i), "lemonpc_verbatim", rec);
            changed = 1;
        }
        if (changed) {
            json_decref(d2);
            d2 = sheet_data(c2, w2, extra, version);
            if (!d2) goto oom;
        }
    }
    json_t *verb = json_object();
    const char *k;
    json_t *v;
    json_object_foreach(d2, k, v) {
        /* A V1 card has only the mapped fields; the V2 ones we add stay. */
        if (card->version == 1 && !in_list(MAPPED, k)) continue;
        json_t *orig = json_object_get(card->data, k);
        if (card->version == 1 && !orig) continue;
        if (same(v, orig)) continue;
        json_t *rec = json_object();
        json_object_set(rec, "sheet", v);
        if (orig) json_object_set(rec, "card", orig);
        json_object_set_new(verb, k, rec);
    }
    if (card->version > 1)
        json_object_foreach(card->data, k, v)
            if (!json_object_get(d2, k)) {
                json_t *rec = json_object();
                json_object_set(rec, "card", v);
                json_object_set_new(verb, k, rec);
            }
    json_decref(d2);
    json_object_set_new(extra, "verbatim", verb);
    return 0;
oom:
    return lm_errf(err, "%s: out of memory converting the sheet to a card",
                   c2->path ? c2->path : c2->name);
}
