/* libFuzzer target: a curated conversation file through lm_assemble (the
 * dataset stage of `lemonpc build`) with a small sheet. The input is one
 * JSONL file; the first byte picks the persona mode and the split shares.
 * Checks: no crash or sanitizer report; on success every output line is a
 * JSON object whose messages start with the system turn (short and full
 * modes) and end with the assistant, and read = train + val + test +
 * rejected; on failure there is a message and no output file is left. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "datagen/assemble.h"
#include "sheet/sheet.h"

static const char SHEET[] =
    "# Brann Oakes\n\n## Backstory\n\nBrann keeps the ferry at Harrow Ford and has never crossed "
    "the mountains.\n\n## Catchphrases\n\n- \"Mind the rope.\"\n";

/* Lines of DIR/NAME, each checked: want_sys 1 = a conversation opening
 * with the system turn, 0 = a conversation, -1 = an eval question. */
static size_t count_lines(const char *dir, const char *name, int want_sys) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "r");
    if (!f) abort();
    size_t n = 0;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *o = json_loads(line, 0, NULL);
        if (!json_is_object(o)) abort();
        if (want_sys < 0) {
            const char *q = json_string_value(json_object_get(o, "question"));
            if (!q) abort();
        } else {
            json_t *m = json_object_get(o, "messages");
            size_t k = json_array_size(m);
            if (!k) abort();
            const char *last = json_string_value(json_object_get(json_array_get(m, k - 1), "role"));
            if (!last || strcmp(last, "assistant")) abort();
            const char *first = json_string_value(json_object_get(json_array_get(m, 0), "role"));
            if (want_sys && (!first || strcmp(first, "system"))) abort();
        }
        json_decref(o);
        n++;
    }
    free(line);
    fclose(f);
    unlink(p);
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int mode = data[0] % 3, test = (data[0] >> 2) % 40, val = (data[0] >> 5) % 40;
    char dir[] = "/tmp/fuzz_asm_XXXXXX";
    if (!mkdtemp(dir)) return 0;
    char in[512], out[512];
    snprintf(in, sizeof in, "%s/in.jsonl", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    FILE *f = fopen(in, "wb");
    if (!f) abort();
    fwrite(data + 1, 1, size - 1, f);
    fclose(f);
    lm_diags d = {0};
    lm_character *c = lm_character_parse("brann.md", SHEET, sizeof SHEET - 1, &d);
    lm_diags_free(&d);
    if (!c) abort();
    const char *files[1] = {in};
    lm_assemble_opts o = {files, 1, NULL, 0, mode, 7, test, val, out};
    lm_assemble_stats st;
    lm_err err = {{0}};
    if (lm_assemble(&o, c, NULL, &st, &err) == 0) {
        int sys = mode != LM_PERSONA_NONE;
        size_t tr = count_lines(out, "train.jsonl", sys), va = count_lines(out, "val.jsonl", sys);
        size_t te = count_lines(out, "test.jsonl", sys), rj = count_lines(out, "rejected.jsonl", 0);
        if (count_lines(out, "test_questions.jsonl", -1) != te) abort();
        if (tr != st.train || va != st.val || te != st.test || rj != st.rejected ||
            tr + va + te + rj != st.read || tr == 0)
            abort();
        char p[600];
        snprintf(p, sizeof p, "%s/stats.json", out);
        unlink(p);
    } else {
        if (!err.msg[0]) abort();
        static const char *const names[] = {"train.jsonl", "val.jsonl", "test.jsonl", "rejected.jsonl",
                                            "test_questions.jsonl"};
        for (int i = 0; i < 5; i++) {
            char p[600];
            struct stat sb;
            snprintf(p, sizeof p, "%s/%s", out, names[i]);
            if (stat(p, &sb) == 0) abort();   /* all or nothing */
            snprintf(p, sizeof p, "%s/%s.tmp", out, names[i]);
            if (stat(p, &sb) == 0) abort();
        }
    }
    lm_character_free(c);
    unlink(in);
    rmdir(out);
    rmdir(dir);
    return 0;
}
