/* Character Cards: V1/V2/V3 JSON and PNG import, exact round trips
 * (import -> export -> compare with the hand-written original), edits
 * winning over the sidecar, and bad inputs giving clear errors. The PNG
 * inputs were written by tests/data/cards/make_pngs.py (zlib + struct),
 * not by the code under test. */
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

#include "sheet/card.h"

#include "helpers.h"

#define CARDS "tests/data/cards/"

static json_t *load_json(const char *path) {
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) fprintf(stderr, "%s:%d: %s\n", path, je.line, je.text);
    assert_non_null(j);
    return j;
}

/* The card JSON in a PNG's chunk. */
static json_t *png_chunk_json(const char *path, const char *keyword) {
    size_t n;
    char *buf = th_slurp(path, &n);
    char *text = NULL;
    lm_err err = {{0}};
    assert_int_equal(lm_png_text_get((unsigned char *)buf, n, path, keyword, &text, &err), 0);
    free(buf);
    if (!text) return NULL;
    size_t jl;
    unsigned char *js = lm_base64_decode(text, strlen(text), &jl, &err);
    free(text);
    assert_non_null(js);
    json_error_t je;
    json_t *j = json_loadb((char *)js, jl, 0, &je);
    free(js);
    assert_non_null(j);
    return j;
}

static void expect_equal(json_t *want, json_t *got) {
    if (!json_equal(want, got)) {
        char *a = json_dumps(want, JSON_INDENT(1) | JSON_SORT_KEYS), *b = json_dumps(got, JSON_INDENT(1) | JSON_SORT_KEYS);
        fprintf(stderr, "want:\n%s\ngot:\n%s\n", a, b);
        free(a);
        free(b);
    }
    assert_true(json_equal(want, got));
}

static void test_base64(void **state) {
    (void)state;
    /* RFC 4648 section 10 vectors. */
    const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    const char *enc[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    lm_err err = {{0}};
    for (int i = 0; i < 7; i++) {
        char *e = lm_base64_encode((const unsigned char *)plain[i], strlen(plain[i]));
        assert_string_equal(e, enc[i]);
        free(e);
        size_t n;
        unsigned char *d = lm_base64_decode(enc[i], strlen(enc[i]), &n, &err);
        assert_int_equal(n, strlen(plain[i]));
        assert_memory_equal(d, plain[i], n);
        free(d);
    }
    assert_null(lm_base64_decode("Zm9v!", 5, &(size_t){0}, &err));
    assert_non_null(strstr(err.msg, "offset 4"));
    assert_null(lm_base64_decode("Z", 1, &(size_t){0}, &err));
}

static void test_versions_and_mapping(void **state) {
    (void)state;
    lm_err err = {{0}};
    lm_card card;
    assert_int_equal(lm_card_load(CARDS "v1_tobin.json", &card, NULL, &err), 0);
    assert_int_equal(card.version, 1);
    lm_card_clear(&card);
    assert_int_equal(lm_card_load(CARDS "v3_brann.json", &card, NULL, &err), 0);
    assert_int_equal(card.version, 3);
    lm_card_clear(&card);
    /* The PNG's ccv3 chunk wins over its chara backfill. */
    lm_image img = {0};
    assert_int_equal(lm_card_load(CARDS "v3_brann.png", &card, &img, &err), 0);
    assert_int_equal(card.version, 3);
    assert_string_equal(json_string_value(json_object_get(card.data, "name")), "Brannoc Greyhollow");
    assert_int_equal(img.w, 5);
    assert_int_equal(img.h, 5);
    /* Grayscale 8-bit expands to RGBA: pixel (x=2, y=1) was 1*40+2. */
    const unsigned char *px = img.rgba + (1 * 5 + 2) * 4;
    assert_int_equal(px[0], 42);
    assert_int_equal(px[1], 42);
    assert_int_equal(px[3], 255);
    lm_image_clear(&img);
    lm_card_clear(&card);

    assert_int_equal(lm_card_load(CARDS "v2_aria.json", &card, NULL, &err), 0);
    assert_int_equal(card.version, 2);
    lm_character *c;
    lm_world *w;
    json_t *extra;
    assert_int_equal(lm_card_to_sheet(&card, &c, &w, &extra, &err), 0);
    assert_string_equal(c->name, "Aria Thornwood");
    assert_string_equal(c->backstory, json_string_value(json_object_get(card.data, "description")));
    assert_string_equal(c->speaking_style, "wary, loyal, dry humour");
    assert_int_equal(c->n_greetings, 4);
    assert_string_equal(c->greetings[3].text, "Another one from the village? What is it this time?");
    assert_int_equal(c->n_examples, 3);
    assert_int_equal(c->examples[0].n_turns, 2);
    assert_int_equal(c->examples[0].turns[0].role, LM_ROLE_USER);
    assert_string_equal(c->examples[0].turns[1].text,
                        "Someone who decides whether you leave this forest.\nSo choose your words well.");
    assert_int_equal(c->examples[1].n_turns, 4);
    assert_string_equal(c->examples[1].turns[1].text, "In trees. Lightly.\n\nAnd never twice in the same one.");
    assert_string_equal(lm_meta_get(c->meta, c->n_meta, "tags"), "fantasy, ranger, elf\\, half");
    assert_string_equal(lm_meta_get(c->meta, c->n_meta, "version"), "1.2");
    assert_non_null(w);
    assert_string_equal(w->name, "Whisperwood");
    assert_int_equal(w->lore.n, 3);
    assert_int_equal(w->lore.v[1].n_keys, 2);
    assert_string_equal(w->lore.v[1].keys[1], "moss, elder");
    assert_int_equal(w->lore.v[1].enabled, 0);
    assert_int_equal(w->lore.v[1].constant, 1);
    assert_true(w->lore.v[1].insertion_order == 2.5);
    /* Unknown fields are in the sidecar, untouched. */
    json_t *x = json_object_get(json_object_get(extra, "data"), "x_future_field");
    assert_non_null(x);
    assert_true(json_equal(x, json_object_get(card.data, "x_future_field")));
    assert_true(json_equal(json_object_get(json_object_get(extra, "data"), "extensions"),
                           json_object_get(card.data, "extensions")));
    assert_non_null(json_object_get(json_object_get(extra, "top"), "talkativeness"));
    json_decref(extra);
    lm_character_free(c);
    lm_world_free(w);
    lm_card_clear(&card);
}

static char *import_ok(const char *card, const char *dir) {
    lm_err err = {{0}};
    lm_diags d = {0};
    char *md = NULL;
    int rc = lm_card_import(card, dir, 0, &md, &d, &err);
    if (rc) fprintf(stderr, "import %s: %s\n", card, err.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(lm_diags_count(&d, LM_DIAG_ERROR), 0);
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

static void round_trip_json(const char *name) {
    char *dir = th_tmpdir("lm_card");
    char card[256], out[256];
    snprintf(card, sizeof card, CARDS "%s", name);
    snprintf(out, sizeof out, "%s/out.json", dir);
    char *md = import_ok(card, dir);
    export_ok(md, out, 0);
    json_t *want = load_json(card), *got = load_json(out);
    expect_equal(want, got);
    json_decref(want);
    json_decref(got);
    free(md);
    th_rm_rf(dir);
    free(dir);
}

static void test_round_trip_v2_json(void **state) { (void)state; round_trip_json("v2_aria.json"); }
static void test_round_trip_v3_json(void **state) { (void)state; round_trip_json("v3_brann.json"); }

static void round_trip_png(const char *name, const char *chunk) {
    char *dir = th_tmpdir("lm_card");
    char card[256], out[256];
    snprintf(card, sizeof card, CARDS "%s", name);
    snprintf(out, sizeof out, "%s/out.png", dir);
    char *md = import_ok(card, dir);
    export_ok(md, out, 0);
    json_t *want = png_chunk_json(card, chunk), *got = png_chunk_json(out, chunk);
    assert_non_null(got);
    expect_equal(want, got);
    /* Both chunks are written, and the picture is the card's own. */
    json_t *v2 = png_chunk_json(out, "chara"), *v3 = png_chunk_json(out, "ccv3");
    assert_string_equal(json_string_value(json_object_get(v2, "spec")), "chara_card_v2");
    assert_string_equal(json_string_value(json_object_get(v3, "spec")), "chara_card_v3");
    lm_image a = {0}, b = {0};
    lm_card ca, cb;
    lm_err err = {{0}};
    assert_int_equal(lm_card_load(card, &ca, &a, &err), 0);
    assert_int_equal(lm_card_load(out, &cb, &b, &err), 0);
    assert_int_equal(a.w, b.w);
    assert_int_equal(a.h, b.h);
    assert_memory_equal(a.rgba, b.rgba, (size_t)a.w * a.h * 4);
    lm_image_clear(&a);
    lm_image_clear(&b);
    lm_card_clear(&ca);
    lm_card_clear(&cb);
    json_decref(v2);
    json_decref(v3);
    json_decref(want);
    json_decref(got);
    free(md);
    th_rm_rf(dir);
    free(dir);
}

static void test_round_trip_v2_png(void **state) { (void)state; round_trip_png("v2_aria.png", "chara"); }
static void test_round_trip_v3_png(void **state) { (void)state; round_trip_png("v3_brann.png", "ccv3"); }

static void replace_in_file(const char *path, const char *from, const char *to) {
    size_t n;
    char *s = th_slurp(path, &n);
    char *at = strstr(s, from);
    assert_non_null(at);
    FILE *f = fopen(path, "wb");
    fwrite(s, 1, (size_t)(at - s), f);
    fputs(to, f);
    fputs(at + strlen(from), f);
    fclose(f);
    free(s);
}

/* A writer's edit reaches the card; the fields left alone stay exact. */
static void test_edit_wins(void **state) {
    (void)state;
    char *dir = th_tmpdir("lm_card");
    char out[256], world[256];
    snprintf(out, sizeof out, "%s/out.json", dir);
    snprintf(world, sizeof world, "%s/world.md", dir);
    char *md = import_ok(CARDS "v2_aria.json", dir);
    replace_in_file(md, "wary, loyal, dry humour", "wary, loyal, and very dry");
    replace_in_file(md, "**Aria:** Because the wolves learn.", "**Aria:** Because wolves remember.");
    replace_in_file(world, "She taught Aria to read the stars.", "She taught Aria the herbs.");
    export_ok(md, out, 0);
    json_t *want = load_json(CARDS "v2_aria.json"), *got = load_json(out);
    json_t *wd = json_object_get(want, "data"), *gd = json_object_get(got, "data");
    assert_string_equal(json_string_value(json_object_get(gd, "personality")), "wary, loyal, and very dry");
    assert_non_null(strstr(json_string_value(json_object_get(gd, "mes_example")), "{{char}}: Because wolves remember."));
    json_t *ge = json_object_get(json_object_get(gd, "character_book"), "entries");
    json_t *we = json_object_get(json_object_get(wd, "character_book"), "entries");
    assert_string_equal(json_string_value(json_object_get(json_array_get(ge, 1), "content")),
                        "Elder Moss is the village herbalist.\n\nShe taught Aria the herbs.");
    /* Untouched entries and fields are as imported. */
    assert_true(json_equal(json_array_get(ge, 0), json_array_get(we, 0)));
    assert_true(json_equal(json_array_get(ge, 2), json_array_get(we, 2)));
    assert_true(json_equal(json_object_get(json_array_get(ge, 1), "extensions"),
                           json_object_get(json_array_get(we, 1), "extensions")));
    const char *same[] = {"description", "scenario", "first_mes", "alternate_greetings", "tags",
                          "extensions", "x_future_field", "system_prompt", "creator_notes"};
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++)
        assert_true(json_equal(json_object_get(gd, same[i]), json_object_get(wd, same[i])));
    json_decref(want);
    json_decref(got);
    free(md);
    th_rm_rf(dir);
    free(dir);
}

static void test_convert_versions(void **state) {
    (void)state;
    char *dir = th_tmpdir("lm_card");
    char out[256];
    snprintf(out, sizeof out, "%s/v3.json", dir);
    char *md = import_ok(CARDS "v2_aria.json", dir);
    export_ok(md, out, 3);
    json_t *v3 = load_json(out);
    assert_string_equal(json_string_value(json_object_get(v3, "spec")), "chara_card_v3");
    assert_string_equal(json_string_value(json_object_get(v3, "spec_version")), "3.0");
    json_t *d = json_object_get(v3, "data");
    assert_true(json_is_array(json_object_get(d, "group_only_greetings")));
    json_t *e0 = json_array_get(json_object_get(json_object_get(d, "character_book"), "entries"), 0);
    assert_true(json_is_false(json_object_get(e0, "use_regex")));
    json_decref(v3);
    free(md);
    /* V3 -> V2 drops the V3-only fields. */
    md = import_ok(CARDS "v3_brann.json", dir);
    snprintf(out, sizeof out, "%s/v2.json", dir);
    export_ok(md, out, 2);
    json_t *v2 = load_json(out);
    d = json_object_get(v2, "data");
    assert_string_equal(json_string_value(json_object_get(v2, "spec")), "chara_card_v2");
    assert_null(json_object_get(d, "nickname"));
    assert_null(json_object_get(d, "group_only_greetings"));
    assert_string_equal(json_string_value(json_object_get(d, "name")), "Brannoc Greyhollow");
    json_decref(v2);
    free(md);
    /* V1 becomes a complete V2 card. */
    md = import_ok(CARDS "v1_tobin.json", dir);
    snprintf(out, sizeof out, "%s/v1.json", dir);
    export_ok(md, out, 0);
    json_t *v1 = load_json(out);
    d = json_object_get(v1, "data");
    assert_string_equal(json_string_value(json_object_get(v1, "spec")), "chara_card_v2");
    assert_string_equal(json_string_value(json_object_get(d, "scenario")), "{{user}} arrives at the inn during a storm.");
    assert_true(json_is_array(json_object_get(d, "tags")));
    assert_true(json_is_object(json_object_get(d, "extensions")));
    json_decref(v1);
    free(md);
    th_rm_rf(dir);
    free(dir);
}

/* The bundled example exports, and its PNG imports back to the same sheet. */
static void test_export_native_sheet(void **state) {
    (void)state;
    char *dir = th_tmpdir("lm_card");
    char out[256], png[256];
    snprintf(out, sizeof out, "%s/orlando.json", dir);
    snprintf(png, sizeof png, "%s/orlando.png", dir);
    export_ok("examples/luminara/characters/orlando.md", out, 0);
    export_ok("examples/luminara/characters/orlando.md", png, 0);
    json_t *j = load_json(out);
    json_t *d = json_object_get(j, "data");
    assert_string_equal(json_string_value(json_object_get(d, "name")), "Orlando Marlo");
    assert_non_null(strstr(json_string_value(json_object_get(d, "description")), "Lawful Good"));
    assert_non_null(strstr(json_string_value(json_object_get(d, "personality")), "May the dawn find you well."));
    assert_non_null(strstr(json_string_value(json_object_get(d, "mes_example")), "<START>\n{{user}}: "));
    json_t *chara = png_chunk_json(png, "chara");
    expect_equal(j, chara);
    json_decref(chara);
    json_decref(j);
    char *md = import_ok(png, dir);
    lm_diags dd = {0};
    lm_character *c = lm_character_load(md, &dd);
    assert_int_equal(c->n_examples, 10);
    assert_string_equal(c->examples[1].turns[3].text, "Then I must learn to listen better. I confess I do not always know how.");
    lm_character_free(c);
    lm_diags_free(&dd);
    free(md);
    th_rm_rf(dir);
    free(dir);
}

typedef struct {
    const char *file;
    const char *want[2];
} bad_card;

static const bad_card BAD[] = {
    {"bad_syntax.json", {"bad_syntax.json:6:", "invalid JSON"}},
    {"bad_type.json", {"data.alternate_greetings[2]", "expected a string, got an integer"}},
    {"bad_book_type.json", {"data.character_book.entries[1].enabled", "expected a boolean, got a string"}},
    {"no_name.json", {"data.name", "missing"}},
    {"bad_spec.json", {"chara_card_v9", "unsupported"}},
    {"no_card.png", {"no 'chara' or 'ccv3'", "no_card.png"}},
    {"truncated.png", {"truncated", "truncated.png"}},
    {"bad_base64.png", {"bad base64", "offset"}},
    {"bad_crc.png", {"CRC", "bad_crc.png"}},
    {"bad_json_in_png.png", {"(chara chunk):2:", "invalid JSON"}},
};

/* null is "not set" (tavern-card writes "character_book": null,
 * card-forge's pydantic model null for every unset optional field): such
 * cards import, the sheet leaves the fields out, export gives the nulls
 * back; a null name is still refused. */
static void test_nulls_are_unset(void **state) {
    (void)state;
    lm_err err = {{0}};
    lm_card card;
    lm_character *c;
    lm_world *w;
    json_t *extra;
    assert_int_equal(lm_card_load(CARDS "v2_book_null.json", &card, NULL, &err), 0);
    assert_int_equal(lm_card_to_sheet(&card, &c, &w, &extra, &err), 0);
    assert_null(w); /* no lorebook, so no world */
    assert_null(c->creator_notes);
    assert_null(lm_meta_get(c->meta, c->n_meta, "tags"));
    assert_int_equal(c->n_greetings, 2); /* first_mes null, one alternate */
    assert_string_equal(c->greetings[0].text, "");
    assert_string_equal(c->greetings[1].text, "Back so soon?");
    json_decref(extra);
    lm_character_free(c);
    lm_card_clear(&card);

    assert_int_equal(lm_card_load(CARDS "v3_nulls.json", &card, NULL, &err), 0);
    assert_int_equal(lm_card_to_sheet(&card, &c, &w, &extra, &err), 0);
    assert_non_null(w);
    assert_string_equal(w->name, "World of Odo Marsh");
    assert_int_equal(w->lore.n, 1);
    /* Not "Enabled: no": a null flag is no flag. */
    assert_int_equal(w->lore.v[0].enabled, -1);
    assert_int_equal(w->lore.v[0].constant, -1);
    assert_int_equal(w->lore.v[0].selective, -1);
    assert_int_equal(w->lore.v[0].has_insertion_order, 0);
    assert_null(w->lore.v[0].comment);
    json_decref(extra);
    lm_character_free(c);
    lm_world_free(w);
    lm_card_clear(&card);

    round_trip_json("v2_book_null.json");
    round_trip_json("v3_nulls.json");

    /* a number beyond long long goes back as the real it is. Converting it
     * to an integer first was undefined (clang's UBSan in fuzz_card; GCC's
     * -fsanitize=undefined leaves out float-cast-overflow, so the check that
     * fails on the old code is the fuzz smoke replaying
     * fuzz/corpus/card/ubsan-number-range.json) */
    const char *huge = "{\"spec\":\"chara_card_v2\",\"spec_version\":\"2.0\",\"data\":{\"name\":\"Odo\","
                       "\"character_book\":{\"entries\":[{\"keys\":[\"marsh\"],\"content\":\"wet\","
                       "\"insertion_order\":7.7e69}]}}}";
    assert_int_equal(lm_card_parse(huge, strlen(huge), "mem", &card, &err), 0);
    assert_int_equal(lm_card_to_sheet(&card, &c, &w, &extra, &err), 0);
    assert_non_null(w);
    json_t *back = lm_sheet_to_card(c, w, NULL, 3, &err);   /* not from the verbatim extra */
    assert_non_null(back);
    json_t *e0 = json_array_get(json_object_get(json_object_get(json_object_get(back, "data"),
                                                                "character_book"), "entries"), 0);
    json_t *io = json_object_get(e0, "insertion_order");
    assert_true(json_is_real(io));
    assert_true(json_real_value(io) == 7.7e69);
    json_decref(back);
    json_decref(extra);
    lm_character_free(c);
    lm_world_free(w);
    lm_card_clear(&card);

    const char *noname = "{\"spec\":\"chara_card_v2\",\"data\":{\"name\":null}}";
    assert_int_equal(lm_card_parse(noname, strlen(noname), "mem", &card, &err), -1);
    assert_non_null(strstr(err.msg, "mem: data.name: expected a string, got null"));
}

/* A 121-byte PNG whose header claims a 4096x4096 16-bit interlaced image:
 * an error naming the size, before any pixel buffer is allocated (it was
 * 64 MB per such file under the fuzzer). The same file under
 * fuzz/corpus/card/. */
static void test_png_too_short_for_its_image(void **state) {
    (void)state;
    lm_err err = {{0}};
    lm_card card;
    lm_image img = {0};
    assert_int_equal(lm_card_load(CARDS "bad_4096_tiny.png", &card, &img, &err), -1);
    if (!strstr(err.msg, "bad_4096_tiny.png: the 4096x4096 image cannot fit in a 121-byte file"))
        fail_msg("%s", err.msg);
    assert_null(img.rgba);
}

static void test_bad_cards(void **state) {
    (void)state;
    char *dir = th_tmpdir("lm_card");
    char outdir[256];
    snprintf(outdir, sizeof outdir, "%s/out", dir);
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        char path[256];
        snprintf(path, sizeof path, CARDS "%s", BAD[i].file);
        lm_err err = {{0}};
        lm_diags d = {0};
        assert_int_equal(lm_card_import(path, outdir, 0, NULL, &d, &err), -1);
        for (int k = 0; k < 2; k++) {
            if (!strstr(err.msg, BAD[i].want[k])) fprintf(stderr, "%s: got '%s'\n", BAD[i].file, err.msg);
            assert_non_null(strstr(err.msg, BAD[i].want[k]));
        }
        lm_diags_free(&d);
        struct stat st;
        assert_int_not_equal(stat(outdir, &st), 0); /* nothing written */
    }
    th_rm_rf(dir);
    free(dir);
}

static void test_bad_json_in_memory(void **state) {
    (void)state;
    lm_err err = {{0}};
    lm_card c;
    const char *arr = "[1, 2]";
    assert_int_equal(lm_card_parse(arr, strlen(arr), "mem", &c, &err), -1);
    assert_non_null(strstr(err.msg, "a card is a JSON object, got an array"));
    const char *tags = "{\"spec\":\"chara_card_v2\",\"data\":{\"name\":\"x\",\"tags\":\"a,b\"}}";
    assert_int_equal(lm_card_parse(tags, strlen(tags), "mem", &c, &err), -1);
    assert_non_null(strstr(err.msg, "data.tags: expected an array, got a string"));
    const char *v1 = "{\"name\": 5}";
    assert_int_equal(lm_card_parse(v1, strlen(v1), "mem", &c, &err), -1);
    assert_non_null(strstr(err.msg, "mem: name: expected a string"));
    const char *nothing = "{\"hello\": 1}";
    assert_int_equal(lm_card_parse(nothing, strlen(nothing), "mem", &c, &err), -1);
    assert_non_null(strstr(err.msg, "not a character card"));
    const char *ml = "{\"spec\":\"chara_card_v3\",\"data\":{\"name\":\"x\",\"creator_notes_multilingual\":{\"en\":\"a\",\"it\":7}}}";
    assert_int_equal(lm_card_parse(ml, strlen(ml), "mem", &c, &err), -1);
    assert_non_null(strstr(err.msg, "data.creator_notes_multilingual.it"));
    /* A huge field: over the per-field limit, refused by name. */
    size_t big = LM_CARD_FIELD_MAX + 16;
    char *s = malloc(big + 200);
    int off = sprintf(s, "{\"spec\":\"chara_card_v2\",\"data\":{\"name\":\"x\",\"description\":\"");
    memset(s + off, 'z', big);
    strcpy(s + off + big, "\"}}");
    assert_int_equal(lm_card_parse(s, strlen(s), "mem", &c, &err), -1);
    assert_non_null(strstr(err.msg, "data.description"));
    assert_non_null(strstr(err.msg, "limit"));
    free(s);
}

static void test_import_refuses_overwrite(void **state) {
    (void)state;
    char *dir = th_tmpdir("lm_card");
    char *md = import_ok(CARDS "v3_brann.json", dir);
    lm_err err = {{0}};
    lm_diags d = {0};
    assert_int_equal(lm_card_import(CARDS "v3_brann.json", dir, 0, NULL, &d, &err), -1);
    assert_non_null(strstr(err.msg, "already exists"));
    assert_int_equal(lm_card_import(CARDS "v3_brann.json", dir, 1, NULL, &d, &err), 0);
    lm_diags_free(&d);
    /* A second card into the same folder keeps the existing world.md and
     * takes its lorebook into its own sheet; it still round-trips. */
    char *md2 = import_ok(CARDS "v2_aria.json", dir);
    char out[256];
    snprintf(out, sizeof out, "%s/aria.json", dir);
    export_ok(md2, out, 0);
    json_t *want = load_json(CARDS "v2_aria.json"), *got = load_json(out);
    expect_equal(want, got);
    json_decref(want);
    json_decref(got);
    free(md);
    free(md2);
    th_rm_rf(dir);
    free(dir);
}

/* The commands' exit statuses and outputs (needs the CLI: LEMONPC_BUILD). */
static void test_cli_import_export(void **state) {
    (void)state;
    char lemonpc[512], cmd[1024], path[512];
    th_lemonpc(lemonpc, sizeof lemonpc);
    char *dir = th_tmpdir("lm_card");
    snprintf(cmd, sizeof cmd, "%s import " CARDS "bad_type.json %s/bad 2>%s/err.txt", lemonpc, dir, dir);
    assert_int_equal(WEXITSTATUS(system(cmd)), 1);
    snprintf(path, sizeof path, "%s/err.txt", dir);
    size_t n;
    char *err = th_slurp(path, &n);
    assert_non_null(strstr(err, "data.alternate_greetings[2]: expected a string, got an integer"));
    free(err);
    snprintf(path, sizeof path, "%s/bad", dir);
    struct stat st;
    assert_int_not_equal(stat(path, &st), 0);
    snprintf(cmd, sizeof cmd, "%s import " CARDS "v2_aria.png %s/ok >/dev/null 2>&1", lemonpc, dir);
    assert_int_equal(WEXITSTATUS(system(cmd)), 0);
    snprintf(cmd, sizeof cmd, "%s export %s/ok/characters/aria-thornwood.md %s/aria.json --v2 2>&1", lemonpc, dir, dir);
    assert_int_equal(WEXITSTATUS(system(cmd)), 0);
    snprintf(path, sizeof path, "%s/aria.json", dir);
    json_t *got = load_json(path), *want = png_chunk_json(CARDS "v2_aria.png", "chara");
    expect_equal(want, got);
    json_decref(got);
    json_decref(want);
    snprintf(cmd, sizeof cmd, "%s export 2>/dev/null", lemonpc);
    assert_int_equal(WEXITSTATUS(system(cmd)), 2);
    th_rm_rf(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_versions_and_mapping),
        cmocka_unit_test(test_round_trip_v2_json),
        cmocka_unit_test(test_round_trip_v3_json),
        cmocka_unit_test(test_round_trip_v2_png),
        cmocka_unit_test(test_round_trip_v3_png),
        cmocka_unit_test(test_edit_wins),
        cmocka_unit_test(test_convert_versions),
        cmocka_unit_test(test_export_native_sheet),
        cmocka_unit_test(test_nulls_are_unset),
        cmocka_unit_test(test_png_too_short_for_its_image),
        cmocka_unit_test(test_bad_cards),
        cmocka_unit_test(test_bad_json_in_memory),
        cmocka_unit_test(test_import_refuses_overwrite),
        cmocka_unit_test(test_cli_import_export),
    };
    return cmocka_run_group_tests_name("card", tests, NULL, NULL);
}
