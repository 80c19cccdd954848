/* `lemonpc import` and `lemonpc export`: files in, files out, all or
 * nothing (every output goes to a temporary name first, then all are
 * renamed; a folder too: a CHARX card's assets). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fileio.h"
#include "base/strbuf.h"
#include "sheet/card.h"
#include "sheet/card_charx.h"
#include "sheet/util.h"

/* A file, or a folder (kind DIR: files under it; kind RMDIR: an old folder
 * to take away). An existing folder is moved aside, then deleted once
 * everything is in place. */
enum { OUT_FILE, OUT_DIR, OUT_RMDIR };
typedef struct {
    char *path, *tmp, *old;
    char *data;
    size_t len;
    int kind;
    lm_charx_files files;
} out_file;

typedef struct {
    out_file *v;
    size_t n;
} out_set;

/* Takes data over, even when it fails (out of memory). */
static int out_add(out_set *o, const char *path, char *data, size_t len, lm_err *err) {
    out_file *f = lm_sh_push(&o->v, &o->n, sizeof *f);
    if (!f) {
        free(data);
        return lm_errf(err, "%s: out of memory", path);
    }
    f->data = data;
    f->len = len;
    f->path = strdup(path);
    return f->path ? 0 : lm_errf(err, "%s: out of memory", path);
}

/* Takes files over (*files is left empty), even when it fails. */
static int out_add_dir(out_set *o, const char *path, int kind, lm_charx_files *files,
                       lm_err *err) {
    out_file *f = lm_sh_push(&o->v, &o->n, sizeof *f);
    if (!f) {
        if (files) lm_charx_files_clear(files);
        return lm_errf(err, "%s: out of memory", path);
    }
    f->kind = kind;
    if (files) {
        f->files = *files;
        memset(files, 0, sizeof *files);
    }
    f->path = strdup(path);
    return f->path ? 0 : lm_errf(err, "%s: out of memory", path);
}

static void out_free(out_set *o) {
    for (size_t i = 0; i < o->n; i++) {
        free(o->v[i].path);
        free(o->v[i].tmp);
        free(o->v[i].old);
        free(o->v[i].data);
        lm_charx_files_clear(&o->v[i].files);
    }
    free(o->v);
}

static void out_unstage(out_set *o, size_t from, size_t to) {
    for (size_t k = from; k < to; k++) {
        if (!o->v[k].tmp) continue;
        if (o->v[k].kind == OUT_FILE) unlink(o->v[k].tmp);
        else lm_charx_dir_remove(o->v[k].tmp);
    }
}

static int out_commit(out_set *o, lm_err *err) {
    for (size_t i = 0; i < o->n; i++) {
        out_file *f = &o->v[i];
        if (f->kind == OUT_RMDIR) continue;
        lm_sb b = {0};
        lm_sb_printf(&b, "%s.tmp%ld", f->path, (long)getpid());
        if (!(f->tmp = lm_sb_take(&b))) {
            out_unstage(o, 0, i);
            return lm_errf(err, "%s: out of memory", f->path);
        }
        if (f->kind == OUT_DIR) {
            lm_charx_dir_remove(f->tmp); /* left over by a crashed run of this pid */
            if (lm_charx_dir_write(f->tmp, &f->files, err)) {
                out_unstage(o, 0, i);
                return -1;
            }
            continue;
        }
        FILE *fp = fopen(f->tmp, "wb");
        int ok = fp && fwrite(f->data, 1, f->len, fp) == f->len;
        if (fp) ok = (fclose(fp) == 0) && ok;
        if (!ok) {
            lm_errno(err, "%s: cannot write", f->tmp);
            out_unstage(o, 0, i + 1);
            return -1;
        }
    }
    for (size_t i = 0; i < o->n; i++) {
        out_file *f = &o->v[i];
        struct stat st;
        if (f->kind != OUT_FILE && lstat(f->path, &st) == 0) {
            lm_sb b = {0};
            lm_sb_printf(&b, "%s.old%ld", f->path, (long)getpid());
            if (!(f->old = lm_sb_take(&b))) {
                out_unstage(o, i, o->n);
                return lm_errf(err, "%s: out of memory", f->path);
            }
            lm_charx_dir_remove(f->old);
            if (rename(f->path, f->old) != 0) {
                lm_errno(err, "%s: cannot move the old folder aside", f->path);
                free(f->old);
                f->old = NULL;
                out_unstage(o, i, o->n);
                return -1;
            }
        }
        if (f->tmp && rename(f->tmp, f->path) != 0) {
            lm_errno(err, "%s: cannot rename into place", f->path);
            if (f->old && rename(f->old, f->path) == 0) { /* put the old folder back */
                free(f->old);
                f->old = NULL;
            }
            out_unstage(o, i, o->n);
            return -1;
        }
    }
    for (size_t i = 0; i < o->n; i++)
        if (o->v[i].old) lm_charx_dir_remove(o->v[i].old);
    return 0;
}

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* The helpers below return NULL only when out of memory. */
static char *slug(const char *name) {
    char s[64];
    size_t n = 0;
    int dash = 0;
    for (const unsigned char *p = (const unsigned char *)name; *p && n < 60; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')) { s[n++] = (char)*p; dash = 0; }
        else if (*p >= 'A' && *p <= 'Z') { s[n++] = (char)(*p + 32); dash = 0; }
        else if (n && !dash) { s[n++] = '-'; dash = 1; }
    }
    while (n && s[n - 1] == '-') n--;
    return n ? strndup(s, n) : strdup("character");
}

static char *path_join(const char *a, const char *b) {
    lm_sb sb = {0};
    lm_sb_printf(&sb, "%s/%s", a, b);
    return lm_sb_take(&sb);
}

/* "dir/characters/x.md" -> "dir/characters/x<suffix>" */
static char *sibling(const char *md, const char *suffix) {
    size_t n = strlen(md);
    if (n > 3 && !strcmp(md + n - 3, ".md")) n -= 3;
    lm_sb sb = {0};
    lm_sb_add(&sb, md, n);
    lm_sb_str(&sb, suffix);
    return lm_sb_take(&sb);
}

/* world.md of the folder holding characters/x.md. */
static char *world_path_for(const char *md) {
    char *p = strdup(md);
    if (!p) return NULL;
    char *s = strrchr(p, '/');
    if (!s) { /* x.md, in characters/ itself */
        free(p);
        return strdup("../world.md");
    }
    *s = '\0';
    s = strrchr(p, '/');
    char *w;
    if (s) { *s = '\0'; w = path_join(p, "world.md"); }
    else w = strdup(!strcmp(p, ".") ? "../world.md" : "world.md");
    free(p);
    return w;
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcasecmp(s + a - b, suf);
}

/* JSON, PNG or CHARX, told apart by the first bytes (a .charx name alone
 * does not make a ZIP). assets gets a CHARX card's other entries. */
static int load_card(const char *path, lm_card *card, lm_image *img, lm_charx_files *assets,
                     lm_err *err) {
    unsigned char head[4];
    size_t got = 0;
    FILE *f = fopen(path, "rb");
    int opened = f != NULL;
    if (f) {
        got = fread(head, 1, sizeof head, f);
        fclose(f);
    }
    if (lm_charx_sniff(head, got)) return lm_charx_load(path, card, assets, err);
    if (opened && ends_with(path, ".charx"))
        return lm_errf(err, "%s: not a CHARX card: a CHARX file is a ZIP archive, and this one does not start like one",
                       path);
    return lm_card_load(path, card, img, err);
}

int lm_card_import(const char *card_path, const char *outdir, int force, char **md_path,
                   lm_diags *diags, lm_err *err) {
    lm_card card = {0};
    lm_image img = {0};
    lm_character *c1 = NULL, *c2 = NULL;
    lm_world *w1 = NULL, *w2 = NULL;
    json_t *extra = NULL, *back = NULL;
    char *s = NULL, *cdir = NULL, *mdp = NULL, *wpath = NULL, *apath = NULL;
    lm_charx_files assets = {0};
    out_set out = {0};
    int rc = -1;
    if (md_path) *md_path = NULL;
    if (load_card(card_path, &card, &img, &assets, err)) return -1;
    if (lm_card_to_sheet(&card, &c1, &w1, &extra, err)) goto done;
    char fname[128];
    if (!(s = slug(c1->name)) || !(cdir = path_join(outdir, "characters")) ||
        snprintf(fname, sizeof fname, "%s.md", s) < 0 || !(mdp = path_join(cdir, fname)) ||
        !(wpath = path_join(outdir, "world.md")) || !(apath = sibling(mdp, ".assets"))) {
        lm_errf(err, "%s: out of memory", card_path);
        goto done;
    }
    if (exists(mdp) && !force) {
        lm_errf(err, "%s already exists (use --force to replace it)", mdp);
        goto done;
    }
    if (exists(apath) && !force) {
        lm_errf(err, "%s already exists (use --force to replace it)", apath);
        goto done;
    }
    lm_diags scratch = {0};
    if (w1 && exists(wpath)) {
        /* Leave the existing world alone: the lorebook moves into the sheet. */
        c1->lore = w1->lore;
        w1->lore.v = NULL;
        w1->lore.n = 0;
        lm_world_free(w1);
        w1 = NULL;
        lm_world *old = lm_world_load(wpath, &scratch);
        for (size_t i = 0; i < c1->n_meta; i++) {
            if (strcmp(c1->meta[i].key, "world")) continue;
            free(c1->meta[i].value);
            if (old && old->name) {
                c1->meta[i].value = strdup(old->name);
                if (!c1->meta[i].value) {
                    lm_world_free(old);
                    lm_diags_free(&scratch);
                    lm_errf(err, "%s: out of memory", card_path);
                    goto done;
                }
            } else { /* a world without a name cannot be referred to */
                free(c1->meta[i].key);
                memmove(&c1->meta[i], &c1->meta[i + 1], (c1->n_meta - i - 1) * sizeof *c1->meta);
                c1->n_meta--;
                break;
            }
        }
        lm_world_free(old);
    }
    char *md = lm_character_to_md(c1, err), *wmd = md && w1 ? lm_world_to_md(w1, err) : NULL;
    if (!md || (w1 && !wmd)) {
        free(md);
        lm_diags_free(&scratch);
        goto done;
    }
    c2 = lm_character_parse(mdp, md, strlen(md), diags);
    if (wmd) w2 = lm_world_parse(wpath, wmd, strlen(wmd), diags);
    else if (lm_meta_get(c1->meta, c1->n_meta, "world") && exists(wpath)) w2 = lm_world_load(wpath, &scratch);
    lm_diags_free(&scratch);
    if (out_add(&out, mdp, md, strlen(md), err)) {
        free(wmd);
        goto done;
    }
    if (wmd && out_add(&out, wpath, wmd, strlen(wmd), err)) goto done;
    if (!c2) {
        lm_errf(err, "%s: the generated sheet could not be read back", mdp);
        goto done;
    }
    if (lm_card_record_verbatim(&card, c2, w2, extra, err)) goto done;
    /* Prove the round trip before writing anything. */
    back = lm_sheet_to_card(c2, w2, extra, card.version == 3 ? 3 : 2, err);
    if (!back) goto done;
    if (card.version > 1 && !json_equal(back, card.root)) {
        lm_errf(err, "%s: internal error: the sheet would not export back to the same card", card_path);
        goto done;
    }
    char *xs = json_dumps(extra, JSON_INDENT(2));
    if (!xs) {
        lm_errf(err, "cannot encode the sidecar JSON");
        goto done;
    }
    char *xpath = sibling(mdp, ".card-extra.json");
    int bad = !xpath ? lm_errf(err, "%s: out of memory", mdp)
                     : out_add(&out, xpath, xs, strlen(xs), err);
    if (!xpath) free(xs);
    free(xpath);
    if (bad) goto done;
    if (img.rgba) {
        unsigned char *png;
        size_t pl;
        if (lm_png_card_write(&img, NULL, NULL, &png, &pl, err)) goto done;
        char *ppath = sibling(mdp, ".png");
        bad = !ppath ? lm_errf(err, "%s: out of memory", mdp)
                     : out_add(&out, ppath, (char *)png, pl, err);
        if (!ppath) free(png);
        free(ppath);
        if (bad) goto done;
    }
    /* A CHARX card's assets, under their archive names; the folder of a
     * sheet being replaced goes with it. */
    if (assets.n) {
        if (out_add_dir(&out, apath, OUT_DIR, &assets, err)) goto done;
    } else if (exists(apath)) {
        if (out_add_dir(&out, apath, OUT_RMDIR, NULL, err)) goto done;
    }
    if (lm_mkdir_p(cdir, err)) goto done;
    if (out_commit(&out, err)) goto done;
    if (md_path && !(*md_path = strdup(mdp))) {
        lm_errf(err, "%s: written, but out of memory", mdp);
        goto done;
    }
    rc = 0;
done:
    out_free(&out);
    json_decref(back);
    json_decref(extra);
    lm_character_free(c1);
    lm_character_free(c2);
    lm_world_free(w1);
    lm_world_free(w2);
    lm_card_clear(&card);
    lm_image_clear(&img);
    lm_charx_files_clear(&assets);
    free(s);
    free(cdir);
    free(mdp);
    free(wpath);
    free(apath);
    return rc;
}

static char *dump(const json_t *root) {
    char *s = json_dumps(root, JSON_INDENT(2));
    if (!s) return NULL;
    size_t n = strlen(s);
    char *t = malloc(n + 2);
    if (!t) {
        free(s);
        return NULL;
    }
    memcpy(t, s, n);
    t[n] = '\n';
    t[n + 1] = '\0';
    free(s);
    return t;
}

int lm_card_export(const char *sheet_path, const char *out_path, int version, lm_diags *diags,
                   lm_err *err) {
    lm_character *c = lm_character_load(sheet_path, diags);
    lm_world *w = NULL;
    json_t *extra = NULL, *r2 = NULL, *r3 = NULL;
    char *wpath = world_path_for(sheet_path), *xpath = sibling(sheet_path, ".card-extra.json");
    char *ipath = sibling(sheet_path, ".png");
    lm_image img = {0};
    out_set out = {0};
    int rc = -1;
    if (!c) {
        lm_errf(err, "%s: cannot read the sheet", sheet_path);
        goto done;
    }
    if (!wpath || !xpath || !ipath) {
        lm_errf(err, "%s: out of memory", sheet_path);
        goto done;
    }
    if (lm_meta_get(c->meta, c->n_meta, "world") && exists(wpath)) w = lm_world_load(wpath, diags);
    lm_character_crosscheck(c, w, NULL, 0, diags);
    size_t ne = lm_diags_count(diags, LM_DIAG_ERROR);
    if (ne) {
        lm_errf(err, "%s: the sheet has %zu error%s; fix them first (lemonpc check)", sheet_path, ne,
                ne == 1 ? "" : "s");
        goto done;
    }
    if (exists(xpath)) {
        json_error_t je;
        extra = json_load_file(xpath, 0, &je);
        if (!extra) {
            lm_errf(err, "%s:%d:%d: invalid JSON: %s", xpath, je.line, je.column, je.text);
            goto done;
        }
        if (!json_is_object(extra) || !json_object_get(extra, "lemonpc_card_extra")) {
            lm_errf(err, "%s: not a LeMoNPC card sidecar (no lemonpc_card_extra field)", xpath);
            goto done;
        }
    }
    int asked = version;
    if (!version) {
        const char *sp = json_string_value(json_object_get(extra, "spec"));
        version = sp && !strcmp(sp, "chara_card_v3") ? 3 : 2;
    }
    if (ends_with(out_path, ".png")) {
        r2 = lm_sheet_to_card(c, w, extra, 2, err);
        r3 = r2 ? lm_sheet_to_card(c, w, extra, 3, err) : NULL;
        if (!r3) goto done;
        if (exists(ipath)) {
            char *buf;
            size_t len;
            if (lm_read_file_max(ipath, LM_CARD_FILE_MAX, &buf, &len, err)) goto done;
            int bad = lm_png_image_read((unsigned char *)buf, len, ipath, &img, err);
            free(buf);
            if (bad) goto done;
        }
        char *j2 = json_dumps(r2, JSON_COMPACT), *j3 = json_dumps(r3, JSON_COMPACT);
        unsigned char *png = NULL;
        size_t pl = 0;
        int bad = !j2 || !j3 || lm_png_card_write(img.rgba ? &img : NULL, j2, j3, &png, &pl, err);
        free(j2);
        free(j3);
        if (bad || out_add(&out, out_path, (char *)png, pl, err)) goto done;
    } else if (ends_with(out_path, ".charx")) {
        if (asked == 2) {
            lm_errf(err, "%s: a CHARX file holds a V3 card (chara_card_v3); leave out --v2, or write .json or .png",
                    out_path);
            goto done;
        }
        r2 = lm_sheet_to_card(c, w, extra, 3, err);
        if (!r2) goto done;
        char *s = dump(r2);
        if (!s) {
            lm_errf(err, "cannot encode the card JSON");
            goto done;
        }
        char *apath = sibling(sheet_path, ".assets");
        lm_charx_files files = {0};
        unsigned char *zip = NULL;
        size_t zl = 0;
        int bad = !apath ? lm_errf(err, "%s: out of memory", sheet_path)
                         : lm_charx_dir_read(apath, &files, err) ||
                               lm_charx_write(s, strlen(s), &files, &zip, &zl, err);
        lm_charx_files_clear(&files);
        free(apath);
        free(s);
        if (bad || out_add(&out, out_path, (char *)zip, zl, err)) goto done;
    } else {
        r2 = lm_sheet_to_card(c, w, extra, version, err);
        if (!r2) goto done;
        char *s = dump(r2);
        if (!s) {
            lm_errf(err, "cannot encode the card JSON");
            goto done;
        }
        if (out_add(&out, out_path, s, strlen(s), err)) goto done;
    }
    rc = out_commit(&out, err);
done:
    out_free(&out);
    json_decref(extra);
    json_decref(r2);
    json_decref(r3);
    lm_character_free(c);
    lm_world_free(w);
    lm_image_clear(&img);
    free(wpath);
    free(xpath);
    free(ipath);
    return rc;
}
