/* libFuzzer target: a reader's verdicts on a blind review (lm_blind_tally),
 * against a fixed key of three items. Accepted verdicts count every item
 * once: the wins and ties in verdict.json add up to three; a refusal always
 * says why. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "eval/blind.h"

static const char KEY[] =
    "{\"a\": \"A\", \"b\": \"B\", \"same\": 1, \"same_by_category\": {\"off-topic\": 1}, "
    "\"items\": [{\"item\": 1, \"id\": \"q1\", \"category\": \"in-world\", \"reply_1\": \"a\"},"
    " {\"item\": 2, \"id\": \"q2\", \"category\": \"protective\", \"reply_1\": \"b\"},"
    " {\"item\": 3, \"id\": \"q4\", \"category\": \"spies\", \"reply_1\": \"a\"}]}";

static int put(const char *dir, const char *name, const void *data, size_t n) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, n, f);
    fclose(f);
    return w == n ? 0 : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char dir[] = "/tmp/fuzz_blind_XXXXXX";
    if (!mkdtemp(dir)) return 0;
    char path[256];
    if (put(dir, "key.json", KEY, strlen(KEY)) == 0 && put(dir, "verdicts.jsonl", data, size) == 0) {
        lm_err err = {{0}};
        if (lm_blind_tally(dir, &err) == 0) {
            snprintf(path, sizeof path, "%s/verdict.json", dir);
            json_t *v = json_load_file(path, 0, NULL);
            if (!v) abort();
            json_int_t n = json_integer_value(json_object_get(v, "wins_a")) +
                           json_integer_value(json_object_get(v, "wins_b")) +
                           json_integer_value(json_object_get(v, "ties"));
            double p = json_real_value(json_object_get(v, "p"));
            if (n != 3 || !(p >= 0 && p <= 1)) abort();
            json_decref(v);
        } else if (!err.msg[0]) abort();
    }
    const char *names[] = {"key.json", "verdicts.jsonl", "verdict.json", "verdict.md"};
    for (size_t i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
    return 0;
}
