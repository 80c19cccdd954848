/* Writes a few small CHARX archives into DIR as the fuzzer's seeds: a card
 * with assets in the spec's layout, one with card.json alone, one with an
 * empty asset. usage: seed_charx DIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sheet/card_charx.h"

static int one(const char *dir, const char *name, const char *json, lm_charx_file *fs, size_t n) {
    lm_err err;
    lm_charx_files files = {fs, n};
    unsigned char *zip;
    size_t zl;
    if (lm_charx_write(json, strlen(json), &files, &zip, &zl, &err)) {
        fprintf(stderr, "seed_charx: %s\n", err.msg);
        return 1;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.charx", dir, name);
    FILE *f = fopen(path, "wb");
    int bad = !f || fwrite(zip, 1, zl, f) != zl;
    if (f) bad |= fclose(f) != 0;
    free(zip);
    if (bad) fprintf(stderr, "seed_charx: cannot write %s\n", path);
    return bad;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: seed_charx DIR\n");
        return 2;
    }
    static const char card[] =
        "{\"spec\":\"chara_card_v3\",\"spec_version\":\"3.0\",\"data\":{\"name\":\"Brann\","
        "\"description\":\"A stonemason.\",\"first_mes\":\"Talk fast.\",\"assets\":["
        "{\"type\":\"icon\",\"uri\":\"embeded://assets/icon/images/main.png\",\"name\":\"main\",\"ext\":\"png\"},"
        "{\"type\":\"emotion\",\"uri\":\"embeded://assets/emotion/images/angry.png\",\"name\":\"angry\",\"ext\":\"png\"}],"
        "\"character_book\":{\"entries\":[{\"keys\":[\"hollow\"],\"content\":\"Below the walls.\"}]}}}";
    static unsigned char png[64] = "\x89PNG\r\n\x1a\n";
    for (int i = 8; i < 64; i++) png[i] = (unsigned char)(i * 7);
    lm_charx_file assets[] = {
        {"assets/icon/images/main.png", png, sizeof png},
        {"assets/emotion/images/angry.png", png + 8, 40},
        {"x_meta/app.json", (unsigned char *)"{\"app\":1}", 9},
    };
    lm_charx_file empty[] = {{"assets/other/other/empty.bin", (unsigned char *)"", 0}};
    return one(argv[1], "assets", card, assets, 3) |
           one(argv[1], "bare", "{\"spec\":\"chara_card_v3\",\"data\":{\"name\":\"x\"}}", NULL, 0) |
           one(argv[1], "empty_asset", card, empty, 1);
}
