/* The persona stamp of an exported NPC: written into a GGUF copy that keeps
 * every kv and tensor, read back, and the mode the runtime then serves
 * (trained mode by default, a warning when asked otherwise or when the
 * sheet changed since training). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "gguf/gguf.h"
#include "runtime/npc_stamp.h"

static const char SHEET[] = "# Brann Oakes\n\n## Backstory\n\nBrann keeps the ferry at Harrow Ford.\n";
static const char SHEET2[] = "# Brann Oakes\n\n## Backstory\n\nBrann keeps the ferry at Harrow Ford, and a goat.\n";

static lm_character *sheet(const char *text) {
    lm_diags d = {0};
    lm_character *c = lm_character_parse("brann.md", text, strlen(text), &d);
    lm_diags_free(&d);
    assert_non_null(c);
    return c;
}

static void test_stamp_roundtrip(void **state) {
    (void)state;
    char src[] = "/tmp/lm_stamp_XXXXXX.gguf", dst[64];
    int fd = mkstemps(src, 5);
    assert_true(fd >= 0);
    close(fd);
    snprintf(dst, sizeof dst, "%s.out.gguf", src);
    lm_err err = {{0}};
    gguf_writer *w = gguf_writer_new();
    float data[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    int64_t ne[2] = {4, 2};
    assert_int_equal(gguf_set_str(w, "general.type", "adapter", &err), 0);
    assert_int_equal(gguf_add_tensor(w, "blk.0.attn_q.weight.lora_a", LM_F32, 2, ne, data, sizeof data, &err), 0);
    assert_int_equal(gguf_write(w, src, &err), 0);
    gguf_writer_free(w);

    lm_npc_stamp st;
    assert_int_equal(lm_npc_stamp_read(src, &st, &err), 0);
    assert_false(st.present);

    lm_character *c = sheet(SHEET);
    assert_int_equal(lm_npc_stamp_write(src, dst, c, NULL, LM_PERSONA_SHORT, &err), 0);
    assert_int_equal(lm_npc_stamp_read(dst, &st, &err), 0);
    assert_true(st.present);
    assert_int_equal(st.mode, LM_PERSONA_SHORT);
    uint64_t h;
    assert_int_equal(lm_persona_hash(c, NULL, LM_PERSONA_SHORT, &h, &err), 0);
    assert_true(st.hash == h);
    assert_string_equal(st.character, "Brann Oakes");
    /* everything else is kept */
    gguf_file *f = gguf_open(dst, &err);
    assert_non_null(f);
    char *type = gguf_get_str(f, "general.type", &err);
    assert_string_equal(type, "adapter");
    free(type);
    const gguf_tensor *t = gguf_find_tensor(f, "blk.0.attn_q.weight.lora_a");
    assert_non_null(t);
    assert_memory_equal(t->data, data, sizeof data);
    gguf_close(f);
    /* in place, replacing the stamp */
    assert_int_equal(lm_npc_stamp_write(dst, dst, c, NULL, LM_PERSONA_NONE, &err), 0);
    assert_int_equal(lm_npc_stamp_read(dst, &st, &err), 0);
    assert_int_equal(st.mode, LM_PERSONA_NONE);

    /* the mode served, and the warnings */
    char warn[512];
    assert_int_equal(lm_npc_stamp_write(src, dst, c, NULL, LM_PERSONA_SHORT, &err), 0);
    assert_int_equal(lm_npc_stamp_read(dst, &st, &err), 0);
    assert_int_equal(lm_npc_persona_mode(&st, -1, c, NULL, warn, sizeof warn), LM_PERSONA_SHORT);
    assert_string_equal(warn, "");
    assert_int_equal(lm_npc_persona_mode(&st, LM_PERSONA_FULL, c, NULL, warn, sizeof warn), LM_PERSONA_FULL);
    assert_non_null(strstr(warn, "trained with the short persona, not full"));
    lm_character *c2 = sheet(SHEET2);
    assert_int_equal(lm_npc_persona_mode(&st, -1, c2, NULL, warn, sizeof warn), LM_PERSONA_SHORT);
    assert_non_null(strstr(warn, "sheet has changed"));
    lm_npc_stamp none = {0};
    assert_int_equal(lm_npc_persona_mode(&none, -1, c, NULL, warn, sizeof warn), LM_PERSONA_FULL);
    assert_string_equal(warn, "");
    lm_character_free(c2);
    lm_character_free(c);

    /* a stamp that is not ours is refused with the file's name */
    w = gguf_writer_new();
    assert_int_equal(gguf_set_str(w, "lemonpc.persona.mode", "loud", &err), 0);
    assert_int_equal(gguf_set_str(w, "lemonpc.persona.hash", "0123456789abcdef", &err), 0);
    assert_int_equal(gguf_add_tensor(w, "x", LM_F32, 2, ne, data, sizeof data, &err), 0);
    assert_int_equal(gguf_write(w, src, &err), 0);
    gguf_writer_free(w);
    assert_int_equal(lm_npc_stamp_read(src, &st, &err), -1);
    assert_non_null(strstr(err.msg, "not none, short or full"));
    unlink(src);
    unlink(dst);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stamp_roundtrip),
    };
    return cmocka_run_group_tests_name("npc_stamp", tests, NULL, NULL);
}
