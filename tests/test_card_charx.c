/* CHARX cards: import -> export round trips (card.json equal as JSON,
 * every other entry byte-identical), the asset folder beside the sheet,
 * and hostile archives refused by name with nothing written. The archives
 * are built here with libzip's own API (and patched by hand where libzip
 * will not write something broken), not with the code under test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zip.h>

#include "sheet/card.h"
#include "sheet/card_charx.h"

#include "helpers.h"

#define CARDS "tests/data/cards/"

static unsigned char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)len + 1);
    assert_int_equal(fread(b, 1, (size_t)len, f), (size_t)len);
    b[len] = '\0';
    fclose(f);
    *n = (size_t)len;
    return b;
}

static void spill(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
}

typedef struct {
    const char *name;
    const void *data;
    size_t len;
    int store; /* 1: no compression */
} ent;

/* Writes a ZIP with libzip; names go in as given, however hostile. */
static void make_zip(const char *path, const ent *es, size_t n) {
    int ze = 0;
    zip_t *za = zip_open(path, ZIP_CREATE | ZIP_TRUNCATE, &ze);
    assert_non_null(za);
    for (size_t i = 0; i < n; i++) {
        zip_source_t *s = zip_source_buffer(za, es[i].data, es[i].len, 0);
        assert_non_null(s);
        zip_int64_t idx;
        if (es[i].name[strlen(es[i].name) - 1] == '/') {
            zip_source_free(s);
            idx = zip_dir_add(za, es[i].name, ZIP_FL_ENC_UTF_8);
        } else {
            idx = zip_file_add(za, es[i].name, s, ZIP_FL_ENC_UTF_8);
        }
        if (idx < 0) fprintf(stderr, "zip add %s: %s\n", es[i].name, zip_strerror(za));
        assert_true(idx >= 0);
        if (es[i].store) assert_int_equal(zip_set_file_compression(za, (zip_uint64_t)idx, ZIP_CM_STORE, 0), 0);
    }
    assert_int_equal(zip_close(za), 0);
}

static char *card_text(void) {
    size_t n;
    char *s = (char *)slurp(CARDS "v3_brann.json", &n);
    assert_non_null(s);
    return s;
}

/* The archive's entries: name -> bytes, read with libzip. */
typedef struct {
    char *name[16];
    unsigned char *data[16];
    size_t len[16];
    size_t n;
} listing;

static void list_zip(const char *path, listing *l) {
    memset(l, 0, sizeof *l);
    int ze = 0;
    zip_t *za = zip_open(path, ZIP_RDONLY | ZIP_CHECKCONS, &ze);
    assert_non_null(za);
    zip_int64_t n = zip_get_num_entries(za, 0);
    assert_true(n > 0 && n <= 16);
    for (zip_uint64_t i = 0; i < (zip_uint64_t)n; i++) {
        zip_stat_t st;
        assert_int_equal(zip_stat_index(za, i, 0, &st), 0);
        l->name[i] = strdup(st.name);
        l->len[i] = (size_t)st.size;
        l->data[i] = malloc(l->len[i] + 1);
        zip_file_t *zf = zip_fopen_index(za, i, 0);
        assert_non_null(zf);
        assert_int_equal(zip_fread(zf, l->data[i], st.size), (zip_int64_t)st.size);
        zip_fclose(zf);
    }
    l->n = (size_t)n;
    zip_discard(za);
}

static void listing_free(listing *l) {
    for (size_t i = 0; i < l->n; i++) {
        free(l->name[i]);
        free(l->data[i]);
    }
}

static const ent *find_ent(const ent *es, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(es[i].name, name)) return &es[i];
    return NULL;
}

static char *import_ok(const char *card, const char *dir, int force) {
    lm_err err = {{0}};
    lm_diags d = {0};
    char *md = NULL;
    int rc = lm_card_import(card, dir, force, &md, &d, &err);
    if (rc) fprintf(stderr, "import %s: %s\n", card, err.msg);
    assert_int_equal(rc, 0);
    lm_diags_free(&d);
    return md;
}

static void export_ok(const char *md, const char *out, int version) {
    lm_err err = {{0}};
    lm_diags d = {0};
    int rc = lm_card_export(md, out, version, &d, &err);
    if (rc) fprintf(stderr, "export %s: %s\n", md, err.msg);
    assert_int_equal(rc, 0);
    lm_diags_free(&d);
}

static unsigned char pattern[3000];

static void fill_pattern(void) {
    /* Every byte value, NULs included, in a stretch that does not compress. */
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof pattern; i++) {
        x = x * 1103515245u + 12345u;
        pattern[i] = i < 256 ? (unsigned char)i : (unsigned char)(x >> 24);
    }
}

static void test_round_trip(void **state) {
    (void)state;
    fill_pattern();
    char *dir = th_tmpdir("lm_charx");
    char *cj = card_text();
    const char *meta = "{\"app\": \"someone else's\", \"n\": 1}\n";
    const ent es[] = {
        {"card.json", cj, strlen(cj), 0},
        {"assets/", NULL, 0, 0}, /* a directory entry: no file of its own */
        {"assets/emotion/images/angry.png", pattern, sizeof pattern, 1},
        {"assets/icon/images/main.png", pattern + 7, 1000, 0},
        {"assets/other/other/empty.bin", "", 0, 0},
        {"x_app_meta.json", meta, strlen(meta), 0},
    };
    const size_t ne = sizeof es / sizeof es[0];
    char in[256], out[256], out2[256], path[512];
    snprintf(in, sizeof in, "%s/brann.charx", dir);
    make_zip(in, es, ne);
    char *md = import_ok(in, dir, 0);
    assert_non_null(strstr(md, "characters/brannoc-greyhollow.md"));
    lm_diags d = {0};
    lm_character *c = lm_character_load(md, &d);
    assert_non_null(c);
    assert_string_equal(c->name, "Brannoc Greyhollow");
    lm_character_free(c);
    lm_diags_free(&d);
    /* The assets sit beside the sheet under their archive names. */
    for (size_t i = 0; i < ne; i++) {
        snprintf(path, sizeof path, "%s/characters/brannoc-greyhollow.assets/%s", dir, es[i].name);
        if (!strcmp(es[i].name, "card.json")) continue;
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        if (es[i].name[strlen(es[i].name) - 1] == '/') {
            assert_true(S_ISDIR(st.st_mode));
            continue;
        }
        size_t n = 0;
        unsigned char *b = slurp(path, &n);
        assert_non_null(b);
        assert_int_equal(n, es[i].len);
        assert_memory_equal(b, es[i].data, n);
        free(b);
    }
    snprintf(path, sizeof path, "%s/characters/brannoc-greyhollow.assets/card.json", dir);
    assert_int_not_equal(access(path, F_OK), 0);

    snprintf(out, sizeof out, "%s/out.charx", dir);
    export_ok(md, out, 0);
    listing l;
    list_zip(out, &l);
    /* card.json first, then each file entry once, byte-identical. */
    assert_string_equal(l.name[0], "card.json");
    json_error_t je;
    json_t *want = json_loads(cj, 0, &je), *got = json_loadb((char *)l.data[0], l.len[0], 0, &je);
    assert_non_null(got);
    assert_true(json_equal(want, got));
    json_decref(want);
    json_decref(got);
    assert_int_equal(l.n, ne - 1); /* no directory entry */
    for (size_t i = 1; i < l.n; i++) {
        const ent *e = find_ent(es, ne, l.name[i]);
        assert_non_null(e);
        assert_int_equal(l.len[i], e->len);
        assert_memory_equal(l.data[i], e->data, e->len);
    }
    listing_free(&l);
    /* The export imports again and gives the same archive back, byte for byte. */
    char *dir2 = th_tmpdir("lm_charx");
    char *md2 = import_ok(out, dir2, 0);
    snprintf(out2, sizeof out2, "%s/again.charx", dir2);
    export_ok(md2, out2, 0);
    size_t na, nb;
    unsigned char *a = slurp(out, &na), *b = slurp(out2, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na);
    free(a);
    free(b);
    free(md2);
    th_rm_rf(dir2);
    free(dir2);
    free(md);
    free(cj);
    th_rm_rf(dir);
    free(dir);
}

/* --force replaces the asset folder whole; a card without assets takes
 * the old folder away; without --force an existing folder stops import. */
static void test_reimport(void **state) {
    (void)state;
    char *dir = th_tmpdir("lm_charx");
    char *cj = card_text();
    char in[256], path[512];
    snprintf(in, sizeof in, "%s/brann.charx", dir);
    const ent one[] = {{"card.json", cj, strlen(cj), 0}, {"assets/a.png", "AAAA", 4, 0}};
    make_zip(in, one, 2);
    free(import_ok(in, dir, 0));
    const ent two[] = {{"card.json", cj, strlen(cj), 0}, {"assets/b.png", "BB", 2, 0}};
    make_zip(in, two, 2);
    lm_err err = {{0}};
    lm_diags d = {0};
    assert_int_equal(lm_card_import(in, dir, 0, NULL, &d, &err), -1);
    assert_non_null(strstr(err.msg, "already exists"));
    free(import_ok(in, dir, 1));
    snprintf(path, sizeof path, "%s/characters/brannoc-greyhollow.assets/assets/a.png", dir);
    assert_int_not_equal(access(path, F_OK), 0);
    snprintf(path, sizeof path, "%s/characters/brannoc-greyhollow.assets/assets/b.png", dir);
    assert_int_equal(access(path, F_OK), 0);
    /* The sheet goes without its .md: the orphaned folder still stops a
     * plain import. */
    snprintf(path, sizeof path, "%s/characters/brannoc-greyhollow.md", dir);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(lm_card_import(CARDS "v3_brann.json", dir, 0, NULL, &d, &err), -1);
    assert_non_null(strstr(err.msg, "brannoc-greyhollow.assets already exists"));
    free(import_ok(CARDS "v3_brann.json", dir, 1));
    snprintf(path, sizeof path, "%s/characters/brannoc-greyhollow.assets", dir);
    assert_int_not_equal(access(path, F_OK), 0);
    lm_diags_free(&d);
    free(cj);
    th_rm_rf(dir);
    free(dir);
}

static void test_export_rules(void **state) {
    (void)state;
    char *dir = th_tmpdir("lm_charx");
    char out[256], path[512];
    /* A hand-written sheet: card.json alone, as V3. */
    snprintf(out, sizeof out, "%s/orlando.charx", dir);
    export_ok("examples/luminara/characters/orlando.md", out, 0);
    listing l;
    list_zip(out, &l);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.name[0], "card.json");
    json_error_t je;
    json_t *j = json_loadb((char *)l.data[0], l.len[0], 0, &je);
    assert_string_equal(json_string_value(json_object_get(j, "spec")), "chara_card_v3");
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "data"), "name")), "Orlando Marlo");
    json_decref(j);
    listing_free(&l);
    /* --v2 cannot go into a CHARX. */
    char *md = import_ok(CARDS "v2_aria.json", dir, 0);
    lm_err err = {{0}};
    lm_diags d = {0};
    assert_int_equal(lm_card_export(md, out, 2, &d, &err), -1);
    assert_non_null(strstr(err.msg, "holds a V3 card"));
    /* A card.json of the writer's own in the folder would be a second one. */
    snprintf(path, sizeof path, "%s/characters/aria-thornwood.assets", dir);
    assert_int_equal(mkdir(path, 0777), 0);
    snprintf(path, sizeof path, "%s/characters/aria-thornwood.assets/card.json", dir);
    spill(path, "{}", 2);
    assert_int_equal(lm_card_export(md, out, 0, &d, &err), -1);
    assert_non_null(strstr(err.msg, "aria-thornwood.assets/card.json"));
    assert_int_equal(unlink(path), 0);
    /* Files the writer adds to the folder go into the archive. */
    snprintf(path, sizeof path, "%s/characters/aria-thornwood.assets/assets", dir);
    assert_int_equal(mkdir(path, 0777), 0);
    snprintf(path, sizeof path, "%s/characters/aria-thornwood.assets/assets/bg.webp", dir);
    spill(path, "RIFF....WEBP", 12);
    snprintf(out, sizeof out, "%s/aria.charx", dir);
    export_ok(md, out, 0);
    list_zip(out, &l);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.name[1], "assets/bg.webp");
    assert_int_equal(l.len[1], 12);
    assert_memory_equal(l.data[1], "RIFF....WEBP", 12);
    listing_free(&l);
    lm_diags_free(&d);
    free(md);
    th_rm_rf(dir);
    free(dir);
}

static void test_names(void **state) {
    (void)state;
    const char *good[] = {"card.json", "assets/icon/images/main.png", "a/", "x_meta/1.json",
                          "assets/emotion/images/\xc3\xa9t\xc3\xa9.png", ".hidden", "a..b/..c"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        if (lm_charx_name_problem(good[i])) fprintf(stderr, "%s: %s\n", good[i], lm_charx_name_problem(good[i]));
        assert_null(lm_charx_name_problem(good[i]));
    }
    const struct {
        const char *name, *why;
    } bad[] = {
        {"../x", "'..'"}, {"a/../../x", "'..'"}, {"a/..", "'..'"}, {"/etc/passwd", "absolute"},
        {"C:/x", "drive letter"}, {"a\\b", "backslash"}, {"a//b", "empty path component"},
        {"./a", "'.'"}, {"", "empty"}, {"/", "empty"}, {"a\nb", "control"}, {"\xff.png", "UTF-8"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *why = lm_charx_name_problem(bad[i].name);
        assert_non_null(why);
        assert_non_null(strstr(why, bad[i].why));
    }
    unsigned char zip[] = "PK\3\4", empty[] = "PK\5\6", png[] = "\x89PNG";
    assert_true(lm_charx_sniff(zip, 4));
    assert_true(lm_charx_sniff(empty, 4));
    assert_false(lm_charx_sniff(png, 4));
    assert_false(lm_charx_sniff(zip, 3));
}

/* Sets the uncompressed size of entry `name` in both its local and its
 * central header (libzip would never write a lie). */
static void patch_size(unsigned char *b, size_t n, const char *name, uint32_t size) {
    size_t nl = strlen(name);
    int hits = 0;
    for (size_t i = 0; i + 46 + nl <= n; i++) {
        size_t at = 0;
        if (!memcmp(b + i, "PK\3\4", 4) && !memcmp(b + i + 30, name, nl)) at = i + 22;
        if (!memcmp(b + i, "PK\1\2", 4) && !memcmp(b + i + 46, name, nl)) at = i + 24;
        if (!at) continue;
        for (int k = 0; k < 4; k++) b[at + k] = (unsigned char)(size >> (8 * k));
        hits++;
    }
    assert_int_equal(hits, 2);
}

/* Renames entry `from` to `to` (same length) in both headers. */
static void patch_name(unsigned char *b, size_t n, const char *from, const char *to) {
    size_t nl = strlen(from);
    int hits = 0;
    for (size_t i = 0; i + 46 + nl <= n; i++) {
        size_t at = 0;
        if (!memcmp(b + i, "PK\3\4", 4) && !memcmp(b + i + 30, from, nl)) at = i + 30;
        if (!memcmp(b + i, "PK\1\2", 4) && !memcmp(b + i + 46, from, nl)) at = i + 46;
        if (!at) continue;
        memcpy(b + at, to, nl);
        hits++;
    }
    assert_int_equal(hits, 2);
}

static void expect_refused(const char *card, const char *outdir, const char *w1, const char *w2) {
    lm_err err = {{0}};
    lm_diags d = {0};
    assert_int_equal(lm_card_import(card, outdir, 0, NULL, &d, &err), -1);
    lm_diags_free(&d);
    if (getenv("CHARX_SHOW_ERRORS")) fprintf(stderr, "%s\n", err.msg);
    const char *base = strrchr(card, '/') + 1;
    const char *want[3] = {base, w1, w2};
    for (int k = 0; k < 3; k++) {
        if (!want[k]) continue;
        if (!strstr(err.msg, want[k])) fprintf(stderr, "%s: want '%s', got '%s'\n", base, want[k], err.msg);
        assert_non_null(strstr(err.msg, want[k]));
    }
    struct stat st;
    assert_int_not_equal(stat(outdir, &st), 0); /* nothing written */
}

static void test_hostile(void **state) {
    (void)state;
    char *dir = th_tmpdir("lm_charx");
    char *cj = card_text();
    char p[256], outdir[256];
    snprintf(outdir, sizeof outdir, "%s/out", dir);
#define PATH(name) (snprintf(p, sizeof p, "%s/%s", dir, name), p)

    const ent good[] = {{"card.json", cj, strlen(cj), 0}, {"assets/a.png", "PNGDATA", 7, 0}};
    make_zip(PATH("good.charx"), good, 2);
    size_t n;
    unsigned char *zip = slurp(p, &n);

    /* Cut short: the central directory is gone. */
    spill(PATH("truncated.charx"), zip, n / 2);
    expect_refused(p, outdir, "not a readable ZIP", NULL);
    /* A .charx that is not a ZIP at all. */
    spill(PATH("text.charx"), "{\"spec\": \"chara_card_v3\"}", 25);
    expect_refused(p, outdir, "not a CHARX card", "ZIP");
    /* ZIP magic, then garbage. */
    spill(PATH("magic.bin"), "PK\3\4 and then nothing sensible at all", 38);
    expect_refused(p, outdir, "ZIP", NULL);

    const ent nocard[] = {{"assets/a.png", "x", 1, 0}, {"cards.json", cj, strlen(cj), 0}};
    make_zip(PATH("nocard.charx"), nocard, 2);
    expect_refused(p, outdir, "no card.json", NULL);
    const ent nested[] = {{"sub/card.json", cj, strlen(cj), 0}};
    make_zip(PATH("nested.charx"), nested, 1);
    expect_refused(p, outdir, "no card.json", NULL);

    const char *broken = "{\n  \"spec\": \"chara_card_v3\",\n  \"data\": {\"name\": }\n}";
    const ent badjson[] = {{"card.json", broken, strlen(broken), 0}};
    make_zip(PATH("badjson.charx"), badjson, 1);
    expect_refused(p, outdir, "badjson.charx (card.json):3:", "invalid JSON");
    const char *v3type = "{\"spec\":\"chara_card_v3\",\"data\":{\"name\":\"x\",\"assets\":\"no\"}}";
    const ent badtype[] = {{"card.json", v3type, strlen(v3type), 0}};
    make_zip(PATH("badtype.charx"), badtype, 1);
    expect_refused(p, outdir, "(card.json): data.assets", "expected an array");

    const struct {
        const char *file, *entry, *why;
    } names[] = {
        {"up.charx", "../evil.png", "'..' in the path"},
        {"deepup.charx", "assets/../../evil.png", "'..' in the path"},
        {"abs.charx", "/tmp/evil.png", "absolute path"},
        {"backslash.charx", "..\\evil.png", "backslash"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const ent es[] = {{"card.json", cj, strlen(cj), 0}, {names[i].entry, "EVIL", 4, 0}};
        make_zip(PATH(names[i].file), es, 2);
        expect_refused(p, outdir, names[i].entry, names[i].why);
    }
    struct stat st;
    snprintf(p, sizeof p, "%s/evil.png", dir);
    assert_int_not_equal(stat(p, &st), 0);

    /* Two entries with one name; a file that is also a folder. */
    const ent two[] = {{"card.json", cj, strlen(cj), 0}, {"assets/a.png", "1", 1, 0}, {"assets/b.png", "2", 1, 0}};
    make_zip(PATH("dup.charx"), two, 3);
    unsigned char *dz = slurp(p, &n);
    patch_name(dz, n, "assets/b.png", "assets/a.png");
    spill(p, dz, n);
    free(dz);
    expect_refused(p, outdir, "have the same name", NULL);
    const ent clash[] = {{"card.json", cj, strlen(cj), 0}, {"assets", "1", 1, 0}, {"assets/a.png", "2", 1, 0}};
    make_zip(PATH("clash.charx"), clash, 3);
    expect_refused(p, outdir, "'assets/a.png' lies under 'assets'", "a file");

    /* Zip bombs: real ones (a few KiB that inflate past the limits) ... */
    size_t big = LM_CHARX_JSON_MAX + 1024;
    char *pad = malloc(big + 1);
    memset(pad, ' ', big);
    memcpy(pad, "{\"spec\":\"chara_card_v3\",\"data\":{\"name\":\"x\"}}", 44);
    const ent bomb[] = {{"card.json", pad, big, 0}};
    make_zip(PATH("bomb.charx"), bomb, 1);
    assert_int_equal(stat(p, &st), 0);
    assert_true(st.st_size < 200000);
    expect_refused(p, outdir, "'card.json'", "limit for card.json");
    size_t half = LM_CHARX_ASSETS_MAX / 2 + 1024;
    unsigned char *zeros = calloc(1, half);
    const ent abomb[] = {{"card.json", cj, strlen(cj), 0},
                         {"assets/one.bin", zeros, half, 0},
                         {"assets/two.bin", zeros, half, 0}};
    make_zip(PATH("abomb.charx"), abomb, 3);
    expect_refused(p, outdir, "'assets/two.bin'", "over their");
    free(zeros);
    free(pad);
    /* ... and archives that lie about their sizes. */
    unsigned char *lz = slurp(PATH("good.charx"), &n);
    patch_size(lz, n, "assets/a.png", 0xFFFFFFF0u);
    spill(PATH("huge.charx"), lz, n);
    expect_refused(p, outdir, "'assets/a.png'", "over their");
    patch_size(lz, n, "assets/a.png", 3);
    spill(PATH("short.charx"), lz, n);
    expect_refused(p, outdir, "'assets/a.png'", NULL);
    free(lz);

    /* An encrypted entry (when this libzip can write one). */
    int ze = 0;
    zip_t *za = zip_open(PATH("enc.charx"), ZIP_CREATE | ZIP_TRUNCATE, &ze);
    assert_non_null(za);
    zip_int64_t i0 = zip_file_add(za, "card.json", zip_source_buffer(za, cj, strlen(cj), 0), 0);
    zip_int64_t i1 = zip_file_add(za, "assets/s.png", zip_source_buffer(za, "SECRET", 6, 0), 0);
    assert_true(i0 == 0 && i1 == 1);
    int can = zip_file_set_encryption(za, 1, ZIP_EM_AES_256, "pw") == 0;
    assert_int_equal(zip_close(za), 0);
    if (can) expect_refused(p, outdir, "'assets/s.png'", "encrypted");

    free(zip);
    free(cj);
    th_rm_rf(dir);
    free(dir);
#undef PATH
}

/* In memory: card.json only, and the other entries in archive order. */
static void test_read_memory(void **state) {
    (void)state;
    char *dir = th_tmpdir("lm_charx");
    char path[256];
    snprintf(path, sizeof path, "%s/m.charx", dir);
    const char *cj = "{\"spec\":\"chara_card_v3\",\"data\":{\"name\":\"M\"}}";
    const ent es[] = {{"z.bin", "zz", 2, 0}, {"card.json", cj, strlen(cj), 1}, {"a.bin", "a", 1, 0}};
    make_zip(path, es, 3);
    size_t n;
    unsigned char *zip = slurp(path, &n);
    char *json;
    size_t jl;
    lm_charx_files files;
    lm_err err = {{0}};
    assert_int_equal(lm_charx_read(zip, n, "mem", &json, &jl, NULL, &err), 0);
    assert_int_equal(jl, strlen(cj));
    assert_string_equal(json, cj);
    free(json);
    assert_int_equal(lm_charx_read(zip, n, "mem", &json, &jl, &files, &err), 0);
    assert_int_equal(files.n, 2);
    assert_string_equal(files.v[0].name, "z.bin");
    assert_string_equal(files.v[1].name, "a.bin");
    assert_memory_equal(files.v[0].data, "zz", 2);
    lm_charx_files_clear(&files);
    free(json);
    /* Our writer's archive reads back through libzip's own reader. */
    unsigned char *out;
    size_t ol;
    lm_charx_files two = {0};
    lm_charx_file fv[2] = {{"b/x.bin", (unsigned char *)"xyz", 3}, {"a.bin", (unsigned char *)"", 0}};
    two.v = fv;
    two.n = 2;
    assert_int_equal(lm_charx_write(cj, strlen(cj), &two, &out, &ol, &err), 0);
    spill(path, out, ol);
    free(out);
    listing l;
    list_zip(path, &l);
    assert_int_equal(l.n, 3);
    assert_string_equal(l.name[0], "card.json");
    assert_string_equal(l.name[1], "b/x.bin");
    assert_string_equal(l.name[2], "a.bin");
    assert_int_equal(l.len[2], 0);
    assert_memory_equal(l.data[0], cj, strlen(cj));
    listing_free(&l);
    /* The writer refuses names the reader would refuse. */
    fv[0].name = "../x.bin";
    assert_int_equal(lm_charx_write(cj, strlen(cj), &two, &out, &ol, &err), -1);
    assert_non_null(strstr(err.msg, "../x.bin"));
    free(zip);
    th_rm_rf(dir);
    free(dir);
}

/* The commands (needs the CLI: LEMONPC_BUILD). */
static void test_cli(void **state) {
    (void)state;
    char lemonpc[512], cmd[1536], path[512];
    th_lemonpc(lemonpc, sizeof lemonpc);
    char *dir = th_tmpdir("lm_charx");
    char *cj = card_text();
    snprintf(path, sizeof path, "%s/b.charx", dir);
    const ent es[] = {{"card.json", cj, strlen(cj), 0}, {"assets/emotion/images/angry.png", "ANGRY", 5, 0}};
    make_zip(path, es, 2);
    snprintf(cmd, sizeof cmd, "%s import %s %s/ok >/dev/null 2>&1", lemonpc, path, dir);
    assert_int_equal(WEXITSTATUS(system(cmd)), 0);
    snprintf(cmd, sizeof cmd, "%s export %s/ok/characters/brannoc-greyhollow.md %s/o.charx 2>&1", lemonpc, dir, dir);
    assert_int_equal(WEXITSTATUS(system(cmd)), 0);
    snprintf(path, sizeof path, "%s/o.charx", dir);
    listing l;
    list_zip(path, &l);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.name[1], "assets/emotion/images/angry.png");
    assert_memory_equal(l.data[1], "ANGRY", 5);
    listing_free(&l);
    const ent up[] = {{"card.json", cj, strlen(cj), 0}, {"../up.png", "UP", 2, 0}};
    snprintf(path, sizeof path, "%s/up.charx", dir);
    make_zip(path, up, 2);
    snprintf(cmd, sizeof cmd, "%s import %s %s/bad 2>%s/err.txt", lemonpc, path, dir, dir);
    assert_int_equal(WEXITSTATUS(system(cmd)), 1);
    snprintf(path, sizeof path, "%s/err.txt", dir);
    size_t n;
    char *msg = (char *)slurp(path, &n);
    assert_non_null(strstr(msg, "up.charx: entry '../up.png': unsafe name ('..' in the path)"));
    free(msg);
    free(cj);
    th_rm_rf(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_reimport),
        cmocka_unit_test(test_export_rules),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_read_memory),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests_name("card_charx", tests, NULL, NULL);
}
