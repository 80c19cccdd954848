/* CHARX archives in and out (libzip, from and to memory), and the asset
 * folder beside an imported sheet that holds their other entries. */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

#include "base/fileio.h"
#include "base/utf8.h"
#include "sheet/card_charx.h"
#include "sheet/util.h"

/* Fixed entry times keep exported archives byte-reproducible. Noon of
 * 2000-01-01 UTC: a DOS date in every time zone (ZIP times are local). */
#define CHARX_MTIME ((time_t)946728000)
#define DIR_DEPTH_MAX 32

void lm_charx_files_clear(lm_charx_files *f) {
    if (!f) return;
    for (size_t i = 0; i < f->n; i++) {
        free(f->v[i].name);
        free(f->v[i].data);
    }
    free(f->v);
    memset(f, 0, sizeof *f);
}

int lm_charx_sniff(const unsigned char *buf, size_t len) {
    return len >= 4 && buf[0] == 'P' && buf[1] == 'K' &&
           ((buf[2] == 3 && buf[3] == 4) || (buf[2] == 5 && buf[3] == 6));
}

const char *lm_charx_name_problem(const char *name) {
    size_t n = strlen(name);
    if (n && name[n - 1] == '/') n--; /* a directory entry */
    if (!n) return "empty name";
    if (n > LM_CHARX_NAME_MAX) return "name too long";
    if (name[0] == '/') return "absolute path";
    if (n >= 2 && name[1] == ':') return "absolute path (drive letter)";
    if (lm_utf8_check(name, n) != n) return "name is not UTF-8";
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (ch < 0x20 || ch == 0x7f) return "control character in the name";
        if (ch == '\\') return "backslash in the name";
    }
    for (size_t a = 0; a < n;) {
        size_t b = a;
        while (b < n && name[b] != '/') b++;
        if (b == a) return "empty path component";
        if (b - a == 2 && name[a] == '.' && name[a + 1] == '.') return "'..' in the path";
        if (b - a == 1 && name[a] == '.') return "'.' in the path";
        a = b + 1;
    }
    return NULL;
}

/* An entry name fit for a message: bytes that would garble it as \xNN,
 * and at most ~200 of them. */
static void show(const char *name, char *out, size_t cap) {
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)name; *p && o + 8 < cap; p++) {
        if (o > 200) { memcpy(out + o, "...", 3); o += 3; break; }
        if (*p < 0x20 || *p == 0x7f) o += (size_t)snprintf(out + o, cap - o, "\\x%02X", *p);
        else out[o++] = (char)*p;
    }
    out[o] = '\0';
}

/* ---- reading ---- */

typedef struct {
    const char *name; /* borrowed from libzip, without a trailing '/' */
    size_t name_len;
    zip_uint64_t index;
    size_t size;
    int is_dir;
} entry;

static int cmp_entry(const void *a, const void *b) {
    const entry *x = a, *y = b;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, n);
    if (c) return c;
    return (x->name_len > y->name_len) - (x->name_len < y->name_len);
}

static const entry *find(const entry *sorted, size_t n, const char *name, size_t len) {
    entry key = {name, len, 0, 0, 0};
    return bsearch(&key, sorted, n, sizeof *sorted, cmp_entry);
}

/* Reads one entry: exactly its declared size, no more (one spare byte
 * catches an archive lying about the size). The buffer grows with the
 * data rather than trusting the declared size up front. */
static int read_entry(zip_t *za, const entry *e, const char *src, unsigned char **out,
                      lm_err *err) {
    char nm[256];
    show(e->name, nm, sizeof nm);
    zip_file_t *zf = zip_fopen_index(za, e->index, 0);
    if (!zf) return lm_errf(err, "%s: entry '%s': cannot open: %s", src, nm, zip_strerror(za));
    size_t cap = e->size + 1 < 65536 ? e->size + 1 : 65536, got = 0;
    unsigned char *d = malloc(cap);
    if (!d) {
        lm_errf(err, "%s: entry '%s': out of memory", src, nm);
        goto fail;
    }
    for (;;) {
        if (got == cap) {
            cap = cap > (e->size + 1) / 2 ? e->size + 1 : cap * 2;
            unsigned char *q = realloc(d, cap);
            if (!q) {
                lm_errf(err, "%s: entry '%s': out of memory", src, nm);
                goto fail;
            }
            d = q;
        }
        zip_int64_t r = zip_fread(zf, d + got, cap - got);
        if (r < 0) {
            lm_errf(err, "%s: entry '%s': %s", src, nm, zip_file_strerror(zf));
            goto fail;
        }
        if (r == 0) break;
        got += (size_t)r;
        if (got > e->size) {
            lm_errf(err, "%s: entry '%s': more data than its declared %zu bytes", src, nm, e->size);
            goto fail;
        }
    }
    if (got != e->size) {
        lm_errf(err, "%s: entry '%s': truncated: %zu of %zu bytes", src, nm, got, e->size);
        goto fail;
    }
    zip_fclose(zf);
    d[got] = '\0';
    *out = d;
    return 0;
fail:
    zip_fclose(zf);
    free(d);
    return -1;
}

/* Stats every entry and refuses the archive before inflating anything. */
static int check_entries(zip_t *za, const char *src, entry **out, size_t *n_out, lm_err *err) {
    zip_int64_t n = zip_get_num_entries(za, 0);
    if (n < 0) return lm_errf(err, "%s: cannot list the ZIP entries", src);
    if ((zip_uint64_t)n > LM_CHARX_ENTRIES_MAX)
        return lm_errf(err, "%s: %lld entries, over the limit of %d", src, (long long)n,
                       LM_CHARX_ENTRIES_MAX);
    entry *es = calloc((size_t)n + 1, sizeof *es);
    if (!es) return lm_errf(err, "%s: out of memory listing %lld entries", src, (long long)n);
    size_t assets = 0;
    char nm[256];
    for (zip_uint64_t i = 0; i < (zip_uint64_t)n; i++) {
        zip_stat_t st;
        zip_stat_init(&st);
        if (zip_stat_index(za, i, 0, &st) != 0 || !(st.valid & ZIP_STAT_NAME) ||
            !(st.valid & ZIP_STAT_SIZE)) {
            lm_errf(err, "%s: entry %llu: cannot read its header: %s", src, (unsigned long long)i,
                    zip_strerror(za));
            goto fail;
        }
        show(st.name, nm, sizeof nm);
        const char *why = lm_charx_name_problem(st.name);
        if (why) {
            lm_errf(err, "%s: entry '%s': unsafe name (%s)", src, nm, why);
            goto fail;
        }
        entry *e = &es[i];
        e->name = st.name;
        e->name_len = strlen(st.name);
        e->index = i;
        e->is_dir = st.name[e->name_len - 1] == '/';
        if (e->is_dir) e->name_len--;
        if ((st.valid & ZIP_STAT_ENCRYPTION_METHOD) && st.encryption_method != ZIP_EM_NONE) {
            lm_errf(err, "%s: entry '%s': encrypted entries are not supported", src, nm);
            goto fail;
        }
        int is_card = !e->is_dir && !strcmp(st.name, "card.json");
        zip_uint64_t cap = is_card ? LM_CHARX_JSON_MAX : LM_CHARX_ASSETS_MAX - assets;
        if (st.size > cap) {
            if (is_card)
                lm_errf(err, "%s: entry '%s': %llu bytes uncompressed, over the %u-byte limit for card.json",
                        src, nm, (unsigned long long)st.size, LM_CHARX_JSON_MAX);
            else
                lm_errf(err, "%s: entry '%s': %llu bytes uncompressed brings the assets over their %u-byte limit",
                        src, nm, (unsigned long long)st.size, LM_CHARX_ASSETS_MAX);
            goto fail;
        }
        e->size = (size_t)st.size;
        if (e->is_dir && e->size) {
            lm_errf(err, "%s: entry '%s': a directory entry with data", src, nm);
            goto fail;
        }
        if (!is_card) assets += e->size;
    }
    /* Names must map to distinct files: no duplicates, and no file that is
     * also the folder of another entry ("a" and "a/b"). */
    entry *sorted = malloc(((size_t)n + 1) * sizeof *sorted);
    if (!sorted) {
        lm_errf(err, "%s: out of memory listing %lld entries", src, (long long)n);
        goto fail;
    }
    memcpy(sorted, es, (size_t)n * sizeof *es);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_entry);
    for (size_t i = 0; i < (size_t)n; i++) {
        const entry *e = &sorted[i];
        show(e->name, nm, sizeof nm);
        if (i + 1 < (size_t)n && !cmp_entry(e, &sorted[i + 1]) && !(e->is_dir && sorted[i + 1].is_dir)) {
            lm_errf(err, "%s: entry '%s' appears twice", src, nm);
            free(sorted);
            goto fail;
        }
        for (size_t k = 0; k < e->name_len; k++) {
            if (e->name[k] != '/') continue;
            const entry *p = find(sorted, (size_t)n, e->name, k);
            if (p && !p->is_dir) {
                lm_errf(err, "%s: entry '%s' lies under '%.*s', which is a file", src, nm, (int)k, e->name);
                free(sorted);
                goto fail;
            }
        }
    }
    free(sorted);
    *out = es;
    *n_out = (size_t)n;
    return 0;
fail:
    free(es);
    return -1;
}

int lm_charx_read(const unsigned char *buf, size_t len, const char *src, char **json,
                  size_t *json_len, lm_charx_files *files, lm_err *err) {
    *json = NULL;
    *json_len = 0;
    if (files) memset(files, 0, sizeof *files);
    zip_error_t ze;
    zip_error_init(&ze);
    zip_source_t *zs = zip_source_buffer_create(buf, len, 0, &ze);
    if (!zs) {
        lm_errf(err, "%s: %s", src, zip_error_strerror(&ze));
        zip_error_fini(&ze);
        return -1;
    }
    zip_t *za = zip_open_from_source(zs, ZIP_RDONLY | ZIP_CHECKCONS, &ze);
    if (!za) {
        if (zip_error_code_zip(&ze) == ZIP_ER_EXISTS) /* libzip's word for a duplicate name */
            lm_errf(err, "%s: two entries of the ZIP archive have the same name", src);
        else
            lm_errf(err, "%s: not a readable ZIP archive (CHARX): %s", src, zip_error_strerror(&ze));
        zip_error_fini(&ze);
        zip_source_free(zs);
        return -1;
    }
    zip_error_fini(&ze);
    entry *es = NULL;
    size_t n = 0;
    unsigned char *card = NULL;
    int rc = -1;
    if (check_entries(za, src, &es, &n, err)) goto done;
    const entry *ce = NULL;
    for (size_t i = 0; i < n; i++)
        if (!es[i].is_dir && !strcmp(es[i].name, "card.json")) ce = &es[i];
    if (!ce) {
        lm_errf(err, "%s: no card.json at the root of the archive (not a CHARX card)", src);
        goto done;
    }
    if (read_entry(za, ce, src, &card, err)) goto done;
    if (files) {
        for (size_t i = 0; i < n; i++) {
            if (es[i].is_dir || &es[i] == ce) continue;
            unsigned char *d;
            if (read_entry(za, &es[i], src, &d, err)) goto done;
            lm_charx_file *f = lm_sh_push(&files->v, &files->n, sizeof *f);
            if (f) {
                f->data = d;
                f->len = es[i].size;
                f->name = strdup(es[i].name);
            }
            if (!f || !f->name) {
                if (!f) free(d);
                lm_errf(err, "%s: out of memory", src);
                goto done;
            }
        }
    }
    *json = (char *)card;
    *json_len = ce->size;
    card = NULL;
    rc = 0;
done:
    if (rc && files) lm_charx_files_clear(files);
    free(card);
    free(es);
    zip_discard(za); /* read-only: nothing to write back; frees zs too */
    return rc;
}

int lm_charx_load(const char *path, lm_card *out, lm_charx_files *files, lm_err *err) {
    memset(out, 0, sizeof *out);
    char *buf, *json;
    size_t len, jl;
    if (lm_read_file_max(path, LM_CHARX_FILE_MAX, &buf, &len, err)) return -1;
    int rc = lm_charx_read((const unsigned char *)buf, len, path, &json, &jl, files, err);
    free(buf);
    if (rc) return -1;
    char src[1024];
    snprintf(src, sizeof src, "%s (card.json)", path);
    rc = lm_card_parse(json, jl, src, out, err);
    free(json);
    if (rc && files) lm_charx_files_clear(files);
    return rc;
}

/* ---- writing ---- */

static int add(zip_t *za, const char *name, const void *data, size_t len, lm_err *err) {
    zip_source_t *s = zip_source_buffer(za, len ? data : NULL, len, 0);
    zip_int64_t idx = s ? zip_file_add(za, name, s, ZIP_FL_ENC_UTF_8) : -1;
    if (idx < 0) {
        if (s) zip_source_free(s);
        return lm_errf(err, "CHARX entry '%s': %s", name, zip_strerror(za));
    }
    if (zip_file_set_mtime(za, (zip_uint64_t)idx, CHARX_MTIME, 0) != 0)
        return lm_errf(err, "CHARX entry '%s': %s", name, zip_strerror(za));
    return 0;
}

int lm_charx_write(const char *json, size_t json_len, const lm_charx_files *files,
                   unsigned char **out, size_t *out_len, lm_err *err) {
    *out = NULL;
    *out_len = 0;
    zip_error_t ze;
    zip_error_init(&ze);
    zip_source_t *zs = zip_source_buffer_create(NULL, 0, 0, &ze);
    zip_t *za = zs ? zip_open_from_source(zs, ZIP_TRUNCATE, &ze) : NULL;
    if (!za) {
        lm_errf(err, "cannot start a ZIP archive: %s", zip_error_strerror(&ze));
        zip_error_fini(&ze);
        if (zs) zip_source_free(zs);
        return -1;
    }
    zip_error_fini(&ze);
    zip_source_keep(zs); /* zip_close must leave us the bytes it wrote */
    if (add(za, "card.json", json, json_len, err)) goto fail;
    for (size_t i = 0; files && i < files->n; i++) {
        const char *why = lm_charx_name_problem(files->v[i].name);
        if (why || !strcmp(files->v[i].name, "card.json")) {
            lm_errf(err, "CHARX entry '%s': %s", files->v[i].name, why ? why : "reserved name");
            goto fail;
        }
        if (add(za, files->v[i].name, files->v[i].data, files->v[i].len, err)) goto fail;
    }
    if (zip_close(za) != 0) {
        lm_errf(err, "cannot finish the ZIP archive: %s", zip_strerror(za));
        goto fail;
    }
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_source_open(zs) != 0 || zip_source_stat(zs, &st) != 0 || !(st.valid & ZIP_STAT_SIZE)) {
        lm_errf(err, "cannot read the ZIP archive back: %s", zip_error_strerror(zip_source_error(zs)));
        zip_source_free(zs);
        return -1;
    }
    unsigned char *buf = malloc((size_t)st.size + 1);
    if (!buf) {
        zip_source_close(zs);
        zip_source_free(zs);
        return lm_errf(err, "out of memory for a %llu-byte ZIP archive", (unsigned long long)st.size);
    }
    zip_int64_t r = zip_source_read(zs, buf, st.size);
    zip_source_close(zs);
    zip_source_free(zs);
    if (r < 0 || (zip_uint64_t)r != st.size) {
        free(buf);
        return lm_errf(err, "cannot read the ZIP archive back");
    }
    buf[st.size] = 0;
    *out = buf;
    *out_len = (size_t)st.size;
    return 0;
fail:
    zip_discard(za);
    zip_source_free(zs);
    return -1;
}

/* ---- the asset folder ---- */

static int cmp_file(const void *a, const void *b) {
    return strcmp(((const lm_charx_file *)a)->name, ((const lm_charx_file *)b)->name);
}

static int walk(const char *root, const char *rel, int depth, lm_charx_files *files,
                size_t *total, lm_err *err) {
    lm_sb b = {0};
    lm_sb_printf(&b, "%s%s%s", root, *rel ? "/" : "", rel);
    char *dpath = lm_sb_take(&b);
    if (!dpath) return lm_errf(err, "%s: out of memory", root);
    DIR *dp = opendir(dpath);
    if (!dp) {
        lm_errno(err, "%s: cannot open the folder", dpath);
        free(dpath);
        return -1;
    }
    int rc = 0;
    struct dirent *de;
    while (!rc && (de = readdir(dp)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        lm_sb_printf(&b, "%s%s%s", rel, *rel ? "/" : "", de->d_name);
        char *name = lm_sb_take(&b);
        if (name) lm_sb_printf(&b, "%s/%s", root, name);
        char *fpath = name ? lm_sb_take(&b) : NULL;
        struct stat st;
        const char *why = fpath ? lm_charx_name_problem(name) : NULL;
        if (!fpath) {
            rc = lm_errf(err, "%s: out of memory", dpath);
        } else if (stat(fpath, &st) != 0) {
            rc = lm_errno(err, "%s: cannot read", fpath);
        } else if (why) {
            rc = lm_errf(err, "%s: cannot go into a CHARX archive (%s)", fpath, why);
        } else if (S_ISDIR(st.st_mode)) {
            if (depth >= DIR_DEPTH_MAX) rc = lm_errf(err, "%s: folders nested too deep", fpath);
            else rc = walk(root, name, depth + 1, files, total, err);
        } else if (S_ISREG(st.st_mode)) {
            char *data;
            size_t len;
            lm_err rerr = {{0}};
            lm_charx_file *f;
            if (!*rel && !strcmp(name, "card.json")) {
                rc = lm_errf(err, "%s: card.json is written from the sheet; remove this file", fpath);
            } else if (files->n >= LM_CHARX_ENTRIES_MAX) {
                rc = lm_errf(err, "%s: more than %d files", root, LM_CHARX_ENTRIES_MAX);
            } else if (lm_read_file_max(fpath, LM_CHARX_ASSETS_MAX - *total, &data, &len, &rerr)) {
                rc = lm_errf(err, "%s (the assets of a CHARX card are limited to %u bytes together)",
                             rerr.msg, LM_CHARX_ASSETS_MAX);
            } else if (!(f = lm_sh_push(&files->v, &files->n, sizeof *f))) {
                free(data);
                rc = lm_errf(err, "%s: out of memory", fpath);
            } else {
                *total += len;
                f->name = name;
                f->data = (unsigned char *)data;
                f->len = len;
                name = NULL;
            }
        }
        free(name);
        free(fpath);
    }
    closedir(dp);
    free(dpath);
    return rc;
}

int lm_charx_dir_read(const char *dir, lm_charx_files *files, lm_err *err) {
    memset(files, 0, sizeof *files);
    struct stat st;
    if (stat(dir, &st) != 0) return 0;
    if (!S_ISDIR(st.st_mode)) return lm_errf(err, "%s: not a folder", dir);
    size_t total = 0;
    if (walk(dir, "", 0, files, &total, err)) {
        lm_charx_files_clear(files);
        return -1;
    }
    if (files->n) qsort(files->v, files->n, sizeof *files->v, cmp_file);
    return 0;
}

int lm_charx_dir_write(const char *dir, const lm_charx_files *files, lm_err *err) {
    if (mkdir(dir, 0777) != 0) return lm_errno(err, "%s: cannot create the folder", dir);
    for (size_t i = 0; i < files->n; i++) {
        const lm_charx_file *f = &files->v[i];
        const char *why = lm_charx_name_problem(f->name);
        if (why || f->name[strlen(f->name) - 1] == '/') {
            lm_errf(err, "%s: cannot write '%s' (%s)", dir, f->name, why ? why : "a folder name");
            goto fail;
        }
        lm_sb b = {0};
        lm_sb_printf(&b, "%s/%s", dir, f->name);
        char *path = lm_sb_take(&b);
        if (!path) {
            lm_errf(err, "%s: out of memory", dir);
            goto fail;
        }
        for (char *q = path + strlen(dir) + 1; *q; q++) {
            if (*q != '/') continue;
            *q = '\0';
            int bad = mkdir(path, 0777) != 0 && errno != EEXIST;
            if (bad) lm_errno(err, "%s: cannot create the folder", path);
            *q = '/';
            if (bad) { free(path); goto fail; }
        }
        FILE *fp = fopen(path, "wb");
        int ok = fp && fwrite(f->data, 1, f->len, fp) == f->len;
        if (fp) ok = (fclose(fp) == 0) && ok;
        if (!ok) {
            lm_errno(err, "%s: cannot write", path);
            free(path);
            goto fail;
        }
        free(path);
    }
    return 0;
fail:
    lm_charx_dir_remove(dir);
    return -1;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *fw) {
    (void)st; (void)flag; (void)fw;
    remove(path);
    return 0;
}

int lm_charx_dir_remove(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return 0;
    return nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}
