/* libFuzzer target: a teacher's HTTP response bodies (datagen/teacher_http.c):
 * the OpenAI chat-completion JSON of a 2xx reply (lm_teacher_http_parse)
 * and the explanation quoted from an error reply
 * (lm_teacher_http_error_text). The teacher asks with "stream": false, so
 * there is no SSE reader to fuzz. The first input byte picks the quote's
 * buffer size (0 .. 255); the rest is the body. Checks: no crash or
 * sanitizer report; a parsed reply is a non-empty string and a refusal
 * says why; the quote is NUL-terminated inside its buffer, holds no
 * control character. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "datagen/teacher.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    size_t cap = data[0];
    const char *body = (const char *)data + 1;
    size_t len = size - 1;

    char *content = (char *)1;
    lm_err err = {{0}};
    if (lm_teacher_http_parse(body, len, &content, &err) == 0) {
        if (!content || !content[0]) abort();
        free(content);
    } else if (content || !err.msg[0]) {
        abort();
    }

    /* One byte past the buffer is a canary: nothing may be written there. */
    char *buf = malloc(cap + 1);
    if (!buf) return 0;
    memset(buf, 0x5A, cap + 1);
    lm_teacher_http_error_text(body, len, buf, cap);
    if (buf[cap] != 0x5A) abort();
    if (cap) {
        size_t n = strnlen(buf, cap);
        if (n == cap) abort();
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f) abort();
    }
    free(buf);
    return 0;
}
