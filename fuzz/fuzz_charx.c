/* libFuzzer: CHARX archives (ZIP) -> card.json + entries -> card, then our
 * writer and reader again. Besides crashes it checks that no entry name
 * that could leave its folder gets through, and that an archive we accept
 * survives write -> read unchanged. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sheet/card_charx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lm_err err;
    char *json = NULL;
    size_t jl = 0;
    lm_charx_files files;
    if (lm_charx_read(data, size, "fuzz.charx", &json, &jl, &files, &err)) return 0;
    if (strlen(json) > jl) abort(); /* NUL-terminated at jl (it may hold NULs of its own) */
    for (size_t i = 0; i < files.n; i++)
        if (lm_charx_name_problem(files.v[i].name) || !strcmp(files.v[i].name, "card.json")) abort();
    lm_card card;
    if (lm_card_parse(json, jl, "fuzz.charx (card.json)", &card, &err) == 0) lm_card_clear(&card);

    unsigned char *zip = NULL;
    size_t zl = 0;
    if (lm_charx_write(json, jl, &files, &zip, &zl, &err)) abort();
    char *json2 = NULL;
    size_t jl2 = 0;
    lm_charx_files files2;
    if (lm_charx_read(zip, zl, "again.charx", &json2, &jl2, &files2, &err)) abort();
    if (jl2 != jl || memcmp(json, json2, jl) || files2.n != files.n) abort();
    for (size_t i = 0; i < files.n; i++)
        if (strcmp(files.v[i].name, files2.v[i].name) || files.v[i].len != files2.v[i].len ||
            (files.v[i].len && memcmp(files.v[i].data, files2.v[i].data, files.v[i].len)))
            abort();
    lm_charx_files_clear(&files2);
    free(json2);
    free(zip);
    lm_charx_files_clear(&files);
    free(json);
    return 0;
}
