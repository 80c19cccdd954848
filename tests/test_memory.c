/* The world's memory (memory/memdb.h, memory/recall.h) and the public world
 * API on the real model: an event reaches only its witnesses; what a player
 * tells NPC A in one run is recalled by A in a later run and unknown to B;
 * the recalled block never exceeds its budget; lorebook entries follow
 * their keys; forgetting; a process killed during a reply loses nothing
 * committed before it; damaged world files are refused and a save slot is
 * replaced only whole. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "lemonpc.h"
#include "memory/memdb.h"
#include "memory/recall.h"
#include "runtime/api_internal.h"

static char model_path[512];
static const char *orlando = "examples/luminara/characters/orlando.md";
static const char *elena = "examples/luminara/characters/elena.md";

static void tmp_path(char *buf, size_t n, const char *name) {
    const char *dir = getenv("TMPDIR");
    snprintf(buf, n, "%s/lemonpc-mem-%d-%s", dir && *dir ? dir : "/tmp", (int)getpid(), name);
}

static void rm_world(const char *path) {
    char cmd[2600];
    snprintf(cmd, sizeof cmd, "rm -f '%s' '%s-wal' '%s-shm' '%s'.tmp.*", path, path, path, path);
    assert_int_equal(system(cmd), 0);
}

typedef struct found {
    char text[4096];
    int n;
} found;

static int gather(void *ud, const lm_memory *m, double score) {
    (void)score;
    found *f = ud;
    size_t k = strlen(f->text);
    snprintf(f->text + k, sizeof f->text - k, "%s%s|", m->witnessed ? "saw:" : "heard:", m->text);
    f->n++;
    return 0;
}

static int count_mem(void *ud, const lemonpc_memory *m) {
    (void)m;
    ++*(int *)ud;
    return 0;
}

static void test_event_reaches_only_witnesses(void **state) {
    (void)state;
    char path[512];
    tmp_path(path, sizeof path, "witness.db");
    rm_world(path);
    lm_err err = {{0}};
    lm_memdb *db = lm_memdb_open(path, &err);
    assert_non_null(db);
    assert_int_equal(lm_memdb_set_time(db, 10, &err), 0);
    const char *w[] = {"Orlando"};
    lm_memory ev = {.kind = LM_MEM_EVENT, .text = "The bell tower of Saint Aurel caught fire",
                    .place = "the cathedral square", .importance = 8};
    int64_t id = lm_memdb_add(db, &ev, w, 1, true, &err);
    assert_true(id > 0);
    found a = {0}, b = {0};
    assert_int_equal(lm_memdb_recall(db, "Orlando", "what burned?", 8, gather, &a, &err), 0);
    assert_int_equal(lm_memdb_recall(db, "Elena", "what burned? the bell tower", 8, gather, &b,
                                     &err), 0);
    assert_non_null(strstr(a.text, "saw:The bell tower"));
    assert_int_equal(b.n, 0);
    /* told afterwards, Elena knows it as hearsay */
    assert_int_equal(lm_memdb_tell(db, id, "Elena", &err), 0);
    memset(&b, 0, sizeof b);
    assert_int_equal(lm_memdb_recall(db, "Elena", "the bell tower", 8, gather, &b, &err), 0);
    assert_non_null(strstr(b.text, "heard:The bell tower"));
    assert_int_equal(lm_memdb_tell(db, id + 100, "Elena", &err), -1);
    assert_non_null(strstr(err.msg, "no event"));
    /* bad input is refused */
    ev.importance = 11;
    assert_int_equal(lm_memdb_add(db, &ev, w, 1, true, &err), -1);
    assert_non_null(strstr(err.msg, "importance"));
    lm_memdb_close(db);
    rm_world(path);
}

/* Relevance, recency and importance all count. */
static void test_recall_ranks(void **state) {
    (void)state;
    char path[512];
    tmp_path(path, sizeof path, "rank.db");
    rm_world(path);
    lm_err err = {{0}};
    lm_memdb *db = lm_memdb_open(path, &err);
    assert_non_null(db);
    const char *who[] = {"Orlando"};
    const char *texts[] = {"Mira keeps bees behind the chapel", "The harvest was poor this year",
                           "A merchant sold spoiled wine at the fair",
                           "Mira's brother joined the Sunguard"};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(lm_memdb_set_time(db, i * 24.0, &err), 0);
        lm_memory m = {.kind = LM_MEM_SAID, .text = texts[i], .player = "Mira", .importance = 3};
        assert_true(lm_memdb_add(db, &m, who, 1, true, &err) > 0);
    }
    found f = {0};
    assert_int_equal(lm_memdb_recall(db, "Orlando", "Do you remember my bees?", 1, gather, &f,
                                     &err), 0);
    assert_non_null(strstr(f.text, "keeps bees"));   /* the oldest, but the only match */
    memset(&f, 0, sizeof f);
    assert_int_equal(lm_memdb_recall(db, "Orlando", "", 1, gather, &f, &err), 0);
    assert_non_null(strstr(f.text, "Sunguard"));     /* no words: the newest */
    memset(&f, 0, sizeof f);
    /* FTS5 syntax in the player's line is only words */
    assert_int_equal(lm_memdb_recall(db, "Orlando", "\"wine\" OR NEAR(* AND -) ^bees:", 4,
                                     gather, &f, &err), 0);
    assert_true(f.n > 0);
    lm_memdb_close(db);
    rm_world(path);
}

static lm_lore_entry entry(char **keys, size_t nk, char **sec, size_t ns, int constant,
                           double order, const char *content) {
    lm_lore_entry e = {0};
    e.keys = keys;
    e.n_keys = nk;
    e.secondary_keys = sec;
    e.n_secondary_keys = ns;
    e.enabled = -1;
    e.constant = constant;
    e.selective = ns ? 1 : -1;
    e.has_insertion_order = 1;
    e.insertion_order = order;
    e.content = (char *)content;
    return e;
}

static lm_tokenizer *real_tokenizer(void) {
    lm_err err = {{0}};
    gguf_file *f = gguf_open(model_path, &err);
    lm_tokenizer *t = f ? lm_tokenizer_load(f, &err) : NULL;
    gguf_close(f);
    if (!t) fail_msg("%s", err.msg);
    return t;
}

static void test_lore_follows_keys_and_budget_holds(void **state) {
    (void)state;
    lm_tokenizer *t = real_tokenizer();
    char *k1[] = {"Hollow Quarter"}, *k2[] = {"knight"}, *s2[] = {"oath"}, *k3[] = {"x"};
    lm_lore_entry v[3] = {
        entry(k1, 1, NULL, 0, -1, 20, "The Hollow Quarter floods every spring."),
        entry(k2, 1, s2, 1, -1, 10, "A knight swears two oaths at dawn."),
        entry(k3, 1, NULL, 0, 1, 30, "The sun rises in the east."),
    };
    lm_lore lore = {v, 3};
    lm_recall r = {{&lore, NULL}, NULL, "Orlando", 200, 12, NULL, 0};
    const char *scan1[] = {"Have you been to the hollow quarter?"};
    char *block = NULL;
    int n = 0;
    lm_err err = {{0}};
    assert_int_equal(lm_recall_block(&r, t, scan1, 1, scan1[0], &block, &n, &err), 0);
    assert_non_null(block);
    assert_non_null(strstr(block, "floods"));
    assert_non_null(strstr(block, "east"));          /* constant */
    assert_null(strstr(block, "oaths"));             /* its key is not mentioned */
    free(block);
    const char *scan2[] = {"Are you a knight?", "I am. Why?", "Tell me about the oath."};
    assert_int_equal(lm_recall_block(&r, t, scan2, 3, scan2[2], &block, &n, &err), 0);
    assert_non_null(strstr(block, "oaths"));         /* key and secondary key */
    assert_true(strstr(block, "oaths") < strstr(block, "east"));   /* insertion order */
    free(block);
    const char *scan3[] = {"Are you a knight?"};
    assert_int_equal(lm_recall_block(&r, t, scan3, 1, scan3[0], &block, &n, &err), 0);
    assert_null(strstr(block, "oaths"));             /* selective: no secondary key */
    free(block);
    /* the lorebook block alone, as training and eval build it: the keys of
     * the line and of the LM_RECALL_SCAN_TURNS turns before it, nothing older */
    lm_lore some = {v, 2};   /* no constant entry */
    const char *turns[LM_RECALL_SCAN_TURNS + 1] = {"The Hollow Quarter, then.", "Fine.", "Yes.", "No.", "Well."};
    assert_int_equal(lm_recall_lore(NULL, &some, t, turns, LM_RECALL_SCAN_TURNS + 1, "And now?", &block, &err), 0);
    assert_null(block);                              /* five turns back: out of reach */
    assert_int_equal(lm_recall_lore(NULL, &some, t, turns, LM_RECALL_SCAN_TURNS, "And now?", &block, &err), 0);
    assert_non_null(block);
    assert_string_equal(block, "Things you know:\n- The Hollow Quarter floods every spring.");
    free(block);
    assert_int_equal(lm_recall_lore(&some, NULL, t, NULL, 0, "A knight's oath?", &block, &err), 0);
    assert_string_equal(block, "Things you know:\n- A knight swears two oaths at dawn.");
    free(block);
    /* memories and lore together never exceed the budget */
    char path[512];
    tmp_path(path, sizeof path, "budget.db");
    rm_world(path);
    lm_memdb *db = lm_memdb_open(path, &err);
    assert_non_null(db);
    const char *who[] = {"Orlando"};
    for (int i = 0; i < 40; i++) {
        char text[200];
        snprintf(text, sizeof text, "Traveller number %d spoke of the hollow quarter and its "
                 "flooded wells, and of a knight with a broken oath.", i);
        lm_memory m = {.kind = LM_MEM_EVENT, .text = text, .importance = 1 + i % 10};
        assert_true(lm_memdb_add(db, &m, who, 1, i % 2, &err) > 0);
    }
    r.db = db;
    int budgets[] = {8, 16, 40, 64, 150, 400};
    for (size_t i = 0; i < sizeof budgets / sizeof budgets[0]; i++) {
        r.budget = budgets[i];
        assert_int_equal(lm_recall_block(&r, t, scan2, 3, scan2[2], &block, &n, &err), 0);
        assert_true(n <= budgets[i]);
        if (block) {
            int32_t *ids;
            size_t k;
            assert_int_equal(lm_tokenize(t, block, strlen(block), false, &ids, &k, &err), 0);
            assert_int_equal((int)k, n);
            free(ids);
        }
        if (budgets[i] >= 150) assert_non_null(strstr(block, "Things you remember:"));
        free(block);
    }
    lm_memdb_close(db);
    rm_world(path);
    lm_tokenizer_free(t);
}

static void test_bad_world_files_refused(void **state) {
    (void)state;
    char path[512];
    tmp_path(path, sizeof path, "bad.db");
    rm_world(path);
    FILE *f = fopen(path, "wb");
    fputs("this is a save game of another program, not SQLite at all......................", f);
    fclose(f);
    lemonpc_error err;
    assert_null(lemonpc_world_open(path, &err));
    assert_int_equal(err.code, LEMONPC_ERR_FORMAT);
    assert_non_null(strstr(err.message, path));
    rm_world(path);
    /* a real world, then truncated */
    lemonpc_world *w = lemonpc_world_open(path, &err);
    assert_non_null(w);
    const char *wit[] = {"Orlando"};
    for (int i = 0; i < 200; i++) {
        char text[100];
        snprintf(text, sizeof text, "Event number %d happened in the square.", i);
        lemonpc_event ev = {text, "the square", 5, wit, 1};
        assert_int_equal(lemonpc_world_event(w, &ev, NULL, &err), LEMONPC_OK);
    }
    char slot[600];
    snprintf(slot, sizeof slot, "%s.slot", path);
    assert_int_equal(lemonpc_world_save_as(w, slot, &err), LEMONPC_OK);
    lemonpc_world_close(w);
    FILE *s = fopen(slot, "rb");
    fseek(s, 0, SEEK_END);
    long size = ftell(s);
    fclose(s);
    assert_int_equal(truncate(slot, size / 2), 0);
    assert_null(lemonpc_world_open(slot, &err));
    assert_int_equal(err.code, LEMONPC_ERR_FORMAT);
    assert_non_null(strstr(err.message, slot));
    /* an SQLite file of another program */
    rm_world(slot);
    sqlite3 *other = NULL;
    assert_int_equal(sqlite3_open(slot, &other), SQLITE_OK);
    assert_int_equal(sqlite3_exec(other, "CREATE TABLE t(x)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(other);
    assert_null(lemonpc_world_open(slot, &err));
    assert_non_null(strstr(err.message, "not a LeMoNPC world"));
    rm_world(slot);
    rm_world(path);
}

static int count_of(lemonpc_world *w, const char *npc) {
    int n = 0;
    lemonpc_error err;
    assert_int_equal(lemonpc_world_memories(w, npc, NULL, count_mem, &n, &err), LEMONPC_OK);
    return n;
}

/* Loading a slot brings the world back to it (memories and clock), and the
 * slot itself is only read; a missing, damaged or foreign file is refused
 * with the world left as it was. */
static void test_load_slot(void **state) {
    (void)state;
    char path[512], slot[600], bad[600];
    tmp_path(path, sizeof path, "load.db");
    snprintf(slot, sizeof slot, "%s.slot", path);
    snprintf(bad, sizeof bad, "%s.bad", path);
    rm_world(path);
    rm_world(slot);
    rm_world(bad);
    lemonpc_error err;
    lemonpc_world *w = lemonpc_world_open(path, &err);
    assert_non_null(w);
    const char *wit[] = {"Orlando"};
    lemonpc_event ev = {"The bell tower burned", "Aurelion", 8, wit, 1};
    assert_int_equal(lemonpc_world_event(w, &ev, NULL, &err), LEMONPC_OK);
    assert_int_equal(lemonpc_world_set_time(w, 12, &err), LEMONPC_OK);
    assert_int_equal(lemonpc_world_save_as(w, slot, &err), LEMONPC_OK);
    struct stat before;
    assert_int_equal(stat(slot, &before), 0);
    /* the world moves on */
    lemonpc_event later = {"A second fire, not in the slot", NULL, 5, wit, 1};
    assert_int_equal(lemonpc_world_event(w, &later, NULL, &err), LEMONPC_OK);
    assert_int_equal(lemonpc_world_set_time(w, 30, &err), LEMONPC_OK);
    assert_int_equal(count_of(w, "Orlando"), 2);
    assert_int_equal(lemonpc_world_load(w, slot, &err), LEMONPC_OK);
    assert_int_equal(count_of(w, "Orlando"), 1);
    assert_true(lemonpc_world_time(w) == 12);
    /* it goes on from the slot, which is not written */
    assert_int_equal(lemonpc_world_event(w, &later, NULL, &err), LEMONPC_OK);
    assert_int_equal(count_of(w, "Orlando"), 2);
    struct stat after;
    assert_int_equal(stat(slot, &after), 0);
    assert_true(after.st_size == before.st_size && after.st_mtime == before.st_mtime);
    lemonpc_world *s = lemonpc_world_open(slot, &err);
    assert_int_equal(count_of(s, "Orlando"), 1);
    lemonpc_world_close(s);
    /* refused: a missing file, an empty one, junk, a truncated slot, another
     * program's SQLite; the world stays as it was each time */
    assert_int_equal(lemonpc_world_load(w, bad, &err), LEMONPC_ERR_NOT_FOUND);
    assert_non_null(strstr(err.message, bad));
    FILE *f = fopen(bad, "wb");
    fclose(f);
    assert_int_equal(lemonpc_world_load(w, bad, &err), LEMONPC_ERR_FORMAT);
    f = fopen(bad, "wb");
    for (int i = 0; i < 200; i++) fputs("not a world, not SQLite either\n", f);
    fclose(f);
    assert_int_equal(lemonpc_world_load(w, bad, &err), LEMONPC_ERR_FORMAT);
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", slot, bad);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(truncate(bad, before.st_size / 2), 0);
    assert_int_equal(lemonpc_world_load(w, bad, &err), LEMONPC_ERR_FORMAT);
    assert_int_equal(unlink(bad), 0);
    sqlite3 *other = NULL;
    assert_int_equal(sqlite3_open(bad, &other), SQLITE_OK);
    assert_int_equal(sqlite3_exec(other, "CREATE TABLE meta(key, value)", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(other);
    assert_int_equal(lemonpc_world_load(w, bad, &err), LEMONPC_ERR_FORMAT);
    assert_non_null(strstr(err.message, "not a LeMoNPC world"));
    assert_int_equal(count_of(w, "Orlando"), 2);
    assert_true(lemonpc_world_time(w) == 12);
    assert_int_equal(lemonpc_world_load(NULL, slot, &err), LEMONPC_ERR_INVALID);
    lemonpc_world_close(w);
    /* what was loaded is in the world's own file */
    w = lemonpc_world_open(path, &err);
    assert_int_equal(count_of(w, "Orlando"), 2);
    assert_true(lemonpc_world_time(w) == 12);
    lemonpc_world_close(w);
    rm_world(path);
    rm_world(slot);
    rm_world(bad);
}

/* A save slot is replaced only by a whole copy, even when the saving
 * process is killed mid-copy. */
static void test_save_as_killed_keeps_previous(void **state) {
    (void)state;
    char path[512], slot[600];
    tmp_path(path, sizeof path, "slot-src.db");
    snprintf(slot, sizeof slot, "%s.slot", path);
    rm_world(path);
    rm_world(slot);
    lemonpc_error err;
    lemonpc_world *w = lemonpc_world_open(path, &err);
    const char *wit[] = {"Elena"};
    char text[400];
    for (int i = 0; i < 3000; i++) {
        snprintf(text, sizeof text, "Entry %d of the archive ledger, copied in a careful hand "
                 "with the date and the names of the witnesses.", i);
        lemonpc_event ev = {text, NULL, 2, wit, 1};
        assert_int_equal(lemonpc_world_event(w, &ev, NULL, &err), LEMONPC_OK);
    }
    assert_int_equal(lemonpc_world_save_as(w, slot, &err), LEMONPC_OK);
    for (int round = 0; round < 5; round++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            for (;;) lemonpc_world_save_as(w, slot, &err);
        }
        usleep(3000 + 4000 * round);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        lemonpc_world *s = lemonpc_world_open(slot, &err);
        if (!s) fail_msg("round %d: %s", round, err.message);
        int n = 0;
        assert_int_equal(lemonpc_world_memories(s, "Elena", NULL, count_mem, &n, &err),
                         LEMONPC_OK);
        assert_int_equal(n, 3000);
        lemonpc_world_close(s);
    }
    lemonpc_world_close(w);
    rm_world(slot);
    rm_world(path);
}

/* ---- on the real model ---------------------------------------------------- */

static lemonpc_model *load_model(void) {
    lemonpc_error err;
    lemonpc_model_params p = lemonpc_model_default_params();
    p.threads = 2;
    p.n_ctx = 1024;
    lemonpc_model *m = lemonpc_model_load(model_path, &p, &err);
    if (!m) fail_msg("%s", err.message);
    return m;
}

static lemonpc_npc *load_npc(lemonpc_model *m, lemonpc_world *w, const char *sheet, int max) {
    lemonpc_error err;
    lemonpc_npc_params p = lemonpc_npc_default_params();
    p.sheet = sheet;
    p.persona = LEMONPC_PERSONA_SHORT;
    p.sampling.temperature = 0;
    p.sampling.max_tokens = max;
    lemonpc_npc *n = lemonpc_npc_load(m, &p, &err);
    if (!n) fail_msg("%s", err.message);
    if (w && lemonpc_npc_set_world(n, w, NULL, 160, &err)) fail_msg("%s", err.message);
    return n;
}

static char *say(lemonpc_conversation *c, const char *line) {
    lemonpc_error err;
    char *r = NULL;
    if (lemonpc_say(c, line, NULL, NULL, &r, NULL, &err)) fail_msg("%s", err.message);
    return r;
}

/* Told to Orlando in one run, recalled by Orlando in the next; Elena never
 * heard it. A world event reaches Elena only once she is told. */
static void test_memory_across_runs(void **state) {
    (void)state;
    char path[512];
    tmp_path(path, sizeof path, "runs.db");
    rm_world(path);
    lemonpc_error err;
    /* run 1 */
    lemonpc_model *m = load_model();
    lemonpc_world *w = lemonpc_world_open(path, &err);
    assert_non_null(w);
    lemonpc_npc *o = load_npc(m, w, orlando, 24);
    lemonpc_conversation *c = lemonpc_conversation_open(o, "Anna, a beekeeper", "the orchard", &err);
    free(say(c, "My name is Anna and I keep bees behind the mill."));
    const char *wit[] = {"Orlando Marlo"};
    lemonpc_event fire = {"The bell tower of Saint Aurel burned down", "the cathedral square", 8,
                          wit, 1};
    int64_t fire_id;
    assert_int_equal(lemonpc_world_set_time(w, 30, &err), LEMONPC_OK);
    assert_int_equal(lemonpc_world_event(w, &fire, &fire_id, &err), LEMONPC_OK);
    lemonpc_conversation_close(c);
    lemonpc_npc_free(o);
    lemonpc_world_close(w);
    lemonpc_model_free(m);

    /* run 2: everything loaded again from the files */
    m = load_model();
    w = lemonpc_world_open(path, &err);
    assert_non_null(w);
    assert_true(lemonpc_world_time(w) == 30);
    o = load_npc(m, w, orlando, 24);
    lemonpc_npc *e = load_npc(m, w, elena, 24);
    lemonpc_conversation *co = lemonpc_conversation_open(o, "Anna", NULL, &err);
    lemonpc_conversation *ce = lemonpc_conversation_open(e, "Anna", NULL, &err);
    free(say(co, "Do you remember what I keep behind the mill?"));
    free(say(ce, "Do you remember what I keep behind the mill?"));
    assert_non_null(strstr(lemonpc_conversation_memory(co), "keep bees behind the mill"));
    assert_non_null(strstr(lemonpc_conversation_memory(co), "yesterday"));
    assert_null(strstr(lemonpc_conversation_memory(ce), "bees"));
    free(say(co, "What happened to the bell tower?"));
    free(say(ce, "What happened to the bell tower?"));
    assert_non_null(strstr(lemonpc_conversation_memory(co), "You saw it"));
    assert_null(strstr(lemonpc_conversation_memory(ce), "bell tower of Saint Aurel"));
    assert_int_equal(lemonpc_world_tell(w, fire_id, "Elena Solwind", &err), LEMONPC_OK);
    free(say(ce, "And the bell tower?"));
    assert_non_null(strstr(lemonpc_conversation_memory(ce), "You heard"));
    /* the lorebook of world.md: the inn is called up by its name */
    free(say(co, "Do you know the Golden Bell?"));
    assert_non_null(strstr(lemonpc_conversation_memory(co), "Dawn Road"));
    /* memories are listed and forgotten per player */
    int n_anna = 0, n_after = 0;
    assert_int_equal(lemonpc_world_memories(w, "Orlando Marlo", "Anna", count_mem, &n_anna, &err),
                     LEMONPC_OK);
    assert_int_equal(n_anna, 4);   /* four lines said in two runs */
    assert_int_equal(lemonpc_world_forget(w, "Orlando Marlo", "Anna", &err), LEMONPC_OK);
    assert_int_equal(lemonpc_world_memories(w, "Orlando Marlo", "Anna", count_mem, &n_after,
                                            &err), LEMONPC_OK);
    assert_int_equal(n_after, 0);
    int n_elena = 0;
    assert_int_equal(lemonpc_world_memories(w, "Elena Solwind", "Anna", count_mem, &n_elena, &err),
                     LEMONPC_OK);
    assert_int_equal(n_elena, 3);
    lemonpc_conversation_close(co);
    lemonpc_conversation_close(ce);
    lemonpc_npc_free(o);
    lemonpc_npc_free(e);
    lemonpc_world_close(w);
    lemonpc_model_free(m);
    rm_world(path);
}

/* The conversation kept in the world goes on exactly where it was, from
 * its stored state; without one, it is rebuilt from the recorded turns. */
static void test_conversation_kept_in_world(void **state) {
    (void)state;
    char path[512];
    tmp_path(path, sizeof path, "conv.db");
    rm_world(path);
    lemonpc_error err;
    lemonpc_model *m = load_model();
    lemonpc_world *w = lemonpc_world_open(path, &err);
    lemonpc_npc *o = load_npc(m, w, orlando, 20);
    assert_null(lemonpc_world_load_conversation(o, "Tom", NULL, &err));
    assert_int_equal(err.code, LEMONPC_ERR_NOT_FOUND);
    lemonpc_conversation *c = lemonpc_conversation_open(o, "Tom", NULL, &err);
    free(say(c, "Good morning, my lord."));
    assert_int_equal(lemonpc_world_save_conversation(c, &err), LEMONPC_OK);
    lemonpc_conversation *r = lemonpc_world_load_conversation(o, "Tom", NULL, &err);
    if (!r) fail_msg("%s", err.message);
    assert_int_equal(lemonpc_conversation_n_cached(r), lemonpc_conversation_n_cached(c));
    assert_memory_equal(r->toks, c->toks, c->n_toks * sizeof *c->toks);
    assert_int_equal(lemonpc_conversation_n_turns(r), 2);
    free(say(r, "Where are you going today?"));
    lemonpc_conversation_close(r);
    free(say(c, "Where are you going today?"));
    /* both went on after the save: rebuilt from the six recorded turns */
    r = lemonpc_world_load_conversation(o, "Tom", NULL, &err);
    if (!r) fail_msg("%s", err.message);
    assert_int_equal(lemonpc_conversation_n_turns(r), 6);   /* 2 + r's own 2 + c's 2 */
    assert_int_equal(lemonpc_conversation_n_cached(r), 0);
    lemonpc_conversation_close(r);
    lemonpc_conversation_close(c);
    lemonpc_npc_free(o);
    lemonpc_world_close(w);
    lemonpc_model_free(m);
    rm_world(path);
}

static int stream_signal(void *ud, const char *t, size_t n) {
    (void)t;
    (void)n;
    int fd = *(int *)ud;
    if (fd >= 0) {
        (void)!write(fd, "x", 1);
        *(int *)ud = -1;
    }
    usleep(200000);   /* the reply is still being written when the kill comes */
    return 0;
}

/* SIGKILL in the middle of a reply: the exchanges before it are all there,
 * the interrupted one is not. */
static void test_killed_mid_reply_loses_nothing_committed(void **state) {
    (void)state;
    char path[512];
    tmp_path(path, sizeof path, "kill.db");
    rm_world(path);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        lemonpc_error err;
        lemonpc_model *m = load_model();
        lemonpc_world *w = lemonpc_world_open(path, &err);
        lemonpc_npc *o = load_npc(m, w, orlando, 24);
        lemonpc_conversation *c = lemonpc_conversation_open(o, "Tom", NULL, &err);
        free(say(c, "Good morning, my lord."));
        free(say(c, "Is the road to the east gate safe?"));
        int fd = fds[1];
        lemonpc_say(c, "Tell me the history of the kingdom.", stream_signal, &fd, NULL, NULL,
                    &err);
        _exit(0);
    }
    close(fds[1]);
    char x;
    assert_int_equal(read(fds[0], &x, 1), 1);   /* the third reply is streaming */
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(fds[0]);
    lemonpc_error err;
    lemonpc_world *w = lemonpc_world_open(path, &err);
    if (!w) fail_msg("%s", err.message);
    int n = 0;
    assert_int_equal(lemonpc_world_memories(w, "Orlando Marlo", "Tom", count_mem, &n, &err),
                     LEMONPC_OK);
    assert_int_equal(n, 2);
    lemonpc_model *m = load_model();
    lemonpc_npc *o = load_npc(m, w, orlando, 8);
    lemonpc_conversation *c = lemonpc_world_load_conversation(o, "Tom", NULL, &err);
    if (!c) fail_msg("%s", err.message);
    assert_int_equal(lemonpc_conversation_n_turns(c), 4);
    lemonpc_conversation_close(c);
    lemonpc_npc_free(o);
    lemonpc_model_free(m);
    lemonpc_world_close(w);
    rm_world(path);
}

static int setup(void **state) {
    (void)state;
    const char *p = getenv("LEMONPC_MODEL");
    if (p) snprintf(model_path, sizeof model_path, "%s", p);
    else snprintf(model_path, sizeof model_path, "%s/.cache/lemonpc/SmolLM2-135M-Instruct.Q4_1.gguf",
                  getenv("HOME") ? getenv("HOME") : "");
    if (access(model_path, R_OK) != 0) {
        fprintf(stderr, "test_memory: no model at %s: run scripts/fetch_model.sh (make test "
                "does)\n", model_path);
        return -1;
    }
    if (access(orlando, R_OK) != 0) {
        orlando = "../examples/luminara/characters/orlando.md";
        elena = "../examples/luminara/characters/elena.md";
    }
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_event_reaches_only_witnesses),
        cmocka_unit_test(test_recall_ranks),
        cmocka_unit_test(test_lore_follows_keys_and_budget_holds),
        cmocka_unit_test(test_bad_world_files_refused),
        cmocka_unit_test(test_save_as_killed_keeps_previous),
        cmocka_unit_test(test_load_slot),
        cmocka_unit_test(test_memory_across_runs),
        cmocka_unit_test(test_conversation_kept_in_world),
        cmocka_unit_test(test_killed_mid_reply_loses_nothing_committed),
    };
    /* CMOCKA_FILTER=test_name (a glob) runs some tests alone */
    if (getenv("CMOCKA_FILTER")) cmocka_set_test_filter(getenv("CMOCKA_FILTER"));
    return cmocka_run_group_tests_name("memory", tests, setup, NULL);
}
