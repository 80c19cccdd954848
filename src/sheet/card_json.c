/* Character Card JSON: parsing and type checks with field paths. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fileio.h"
#include "sheet/card.h"
#include "sheet/util.h"

static const char *type_name(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE: case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

typedef enum { T_STR, T_STRS, T_OBJ, T_NUM, T_BOOL, T_STRMAP, T_OBJS, T_ID, T_BOOK } ftype;
typedef struct {
    const char *name;
    ftype type;
} field;

static const field DATA_FIELDS[] = {
    {"name", T_STR}, {"description", T_STR}, {"personality", T_STR}, {"scenario", T_STR},
    {"first_mes", T_STR}, {"mes_example", T_STR}, {"creator_notes", T_STR},
    {"system_prompt", T_STR}, {"post_history_instructions", T_STR},
    {"alternate_greetings", T_STRS}, {"character_book", T_BOOK}, {"tags", T_STRS},
    {"creator", T_STR}, {"character_version", T_STR}, {"extensions", T_OBJ},
    /* V3 */
    {"nickname", T_STR}, {"creator_notes_multilingual", T_STRMAP}, {"source", T_STRS},
    {"group_only_greetings", T_STRS}, {"creation_date", T_NUM}, {"modification_date", T_NUM},
    {"assets", T_OBJS}, {NULL, T_STR}};

static const field BOOK_FIELDS[] = {
    {"name", T_STR}, {"description", T_STR}, {"scan_depth", T_NUM}, {"token_budget", T_NUM},
    {"recursive_scanning", T_BOOL}, {"extensions", T_OBJ}, {NULL, T_STR}};

static const field ENTRY_FIELDS[] = {
    {"keys", T_STRS}, {"content", T_STR}, {"extensions", T_OBJ}, {"enabled", T_BOOL},
    {"insertion_order", T_NUM}, {"case_sensitive", T_BOOL}, {"use_regex", T_BOOL},
    {"constant", T_BOOL}, {"name", T_STR}, {"priority", T_NUM}, {"id", T_ID},
    {"comment", T_STR}, {"selective", T_BOOL}, {"secondary_keys", T_STRS},
    {"position", T_STR}, {NULL, T_STR}};

static int bad_type(const char *src, const char *path, const char *want, const json_t *v,
                    lm_err *err) {
    return lm_errf(err, "%s: %s: expected %s, got %s", src, path, want, type_name(v));
}

static int check_str(const char *src, const char *path, const json_t *v, lm_err *err) {
    if (!json_is_string(v)) return bad_type(src, path, "a string", v, err);
    if (json_string_length(v) > LM_CARD_FIELD_MAX)
        return lm_errf(err, "%s: %s: %zu bytes, over the %u-byte limit for a field", src, path,
                       json_string_length(v), LM_CARD_FIELD_MAX);
    return 0;
}

static int check_fields(const char *src, const char *prefix, const json_t *obj, const field *fs,
                        lm_err *err);

static int check_value(const char *src, const char *path, ftype t, const json_t *v, lm_err *err) {
    char sub[512];
    switch (t) {
    case T_STR: return check_str(src, path, v, err);
    case T_NUM:
        if (!json_is_number(v)) return bad_type(src, path, "a number", v, err);
        return 0;
    case T_BOOL:
        if (!json_is_boolean(v)) return bad_type(src, path, "a boolean", v, err);
        return 0;
    case T_ID:
        if (!json_is_number(v) && !json_is_string(v))
            return bad_type(src, path, "a number or a string", v, err);
        return 0;
    case T_OBJ:
        if (!json_is_object(v)) return bad_type(src, path, "an object", v, err);
        return 0;
    case T_STRMAP: {
        if (!json_is_object(v)) return bad_type(src, path, "an object", v, err);
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x) {
            snprintf(sub, sizeof sub, "%.250s.%.250s", path, k);
            if (check_str(src, sub, x, err)) return -1;
        }
        return 0;
    }
    case T_STRS:
    case T_OBJS: {
        if (!json_is_array(v)) return bad_type(src, path, "an array", v, err);
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) {
            snprintf(sub, sizeof sub, "%.400s[%zu]", path, i);
            if (t == T_STRS && check_str(src, sub, x, err)) return -1;
            if (t == T_OBJS && !json_is_object(x)) return bad_type(src, sub, "an object", x, err);
        }
        return 0;
    }
    case T_BOOK: {
        if (!json_is_object(v)) return bad_type(src, path, "an object", v, err);
        if (check_fields(src, path, v, BOOK_FIELDS, err)) return -1;
        json_t *entries = json_object_get(v, "entries");
        snprintf(sub, sizeof sub, "%.400s.entries", path);
        if (!entries) return lm_errf(err, "%s: %s: missing (a lorebook needs entries)", src, sub);
        if (!json_is_array(entries)) return bad_type(src, sub, "an array", entries, err);
        size_t i;
        json_t *e;
        json_array_foreach(entries, i, e) {
            char ep[512];
            snprintf(ep, sizeof ep, "%.400s.entries[%zu]", path, i);
            if (!json_is_object(e)) return bad_type(src, ep, "an object", e, err);
            if (check_fields(src, ep, e, ENTRY_FIELDS, err)) return -1;
        }
        return 0;
    }
    }
    return 0;
}

static int check_fields(const char *src, const char *prefix, const json_t *obj, const field *fs,
                        lm_err *err) {
    for (const field *f = fs; f->name; f++) {
        json_t *v = json_object_get(obj, f->name);
        /* null is how real writers say "not set" (tavern-card writes
         * "character_book": null, card-forge's pydantic model writes null
         * for every unset optional field): absent, kept as it is. */
        if (!v || json_is_null(v)) continue;
        char path[512];
        snprintf(path, sizeof path, "%.400s%s%.60s", prefix, prefix[0] ? "." : "", f->name);
        if (check_value(src, path, f->type, v, err)) return -1;
    }
    return 0;
}

int lm_card_parse(const char *buf, size_t len, const char *src, lm_card *out, lm_err *err) {
    memset(out, 0, sizeof *out);
    if (len > LM_CARD_FILE_MAX)
        return lm_errf(err, "%s: card is %zu bytes, over the %u-byte limit", src, len, LM_CARD_FILE_MAX);
    json_error_t je;
    json_t *root = json_loadb(buf, len, 0, &je);
    if (!root) return lm_errf(err, "%s:%d:%d: invalid JSON: %s", src, je.line, je.column, je.text);
    const char *prefix = "data";
    json_t *data = NULL;
    int version;
    if (!json_is_object(root)) {
        lm_errf(err, "%s: a card is a JSON object, got %s", src, type_name(root));
        goto fail;
    }
    json_t *spec = json_object_get(root, "spec");
    if (spec) {
        if (!json_is_string(spec)) { bad_type(src, "spec", "a string", spec, err); goto fail; }
        const char *s = json_string_value(spec);
        if (!strcmp(s, "chara_card_v2")) version = 2;
        else if (!strcmp(s, "chara_card_v3")) version = 3;
        else {
            lm_errf(err, "%s: spec: unsupported '%s' (known: chara_card_v2, chara_card_v3)", src, s);
            goto fail;
        }
        json_t *sv = json_object_get(root, "spec_version");
        if (sv && !json_is_string(sv)) { bad_type(src, "spec_version", "a string", sv, err); goto fail; }
        data = json_object_get(root, "data");
        if (!data) { lm_errf(err, "%s: data: missing", src); goto fail; }
        if (!json_is_object(data)) { bad_type(src, "data", "an object", data, err); goto fail; }
    } else {
        version = 1;
        data = root;
        prefix = "";
        if (!json_object_get(root, "name")) {
            lm_errf(err, "%s: not a character card: no spec and no name", src);
            goto fail;
        }
    }
    if (check_fields(src, prefix, data, DATA_FIELDS, err)) goto fail;
    json_t *name = json_object_get(data, "name");
    const char *np = version == 1 ? "name" : "data.name";
    if (!name) { lm_errf(err, "%s: %s: missing (a card needs a name)", src, np); goto fail; }
    if (!json_is_string(name)) { bad_type(src, np, "a string", name, err); goto fail; }
    if (!json_string_length(name)) { lm_errf(err, "%s: %s: empty (a card needs a name)", src, np); goto fail; }
    out->root = root;
    out->data = data;
    out->version = version;
    return 0;
fail:
    json_decref(root);
    return -1;
}

void lm_card_clear(lm_card *c) {
    if (!c) return;
    json_decref(c->root);
    memset(c, 0, sizeof *c);
}

int lm_card_load(const char *path, lm_card *out, lm_image *img, lm_err *err) {
    char *buf;
    size_t len;
    memset(out, 0, sizeof *out);
    if (lm_read_file_max(path, LM_CARD_FILE_MAX, &buf, &len, err)) return -1;
    int rc;
    if (len >= 8 && !memcmp(buf, "\x89PNG\r\n\x1a\n", 8)) {
        char *json;
        size_t jl;
        const char *chunk;
        rc = lm_png_card_read((const unsigned char *)buf, len, path, &json, &jl, &chunk, img, err);
        if (rc == 0) {
            char src[1024];
            snprintf(src, sizeof src, "%s (%s chunk)", path, chunk);
            rc = lm_card_parse(json, jl, src, out, err);
            free(json);
            if (rc) lm_image_clear(img);
        }
    } else {
        rc = lm_card_parse(buf, len, path, out, err);
    }
    free(buf);
    return rc;
}
