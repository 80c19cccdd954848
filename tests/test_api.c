/* The public API (include/lemonpc.h) on the real SmolLM2-135M: many
 * conversations opened and closed, the persona prefix shared, replies from
 * four threads at once equal to the same replies run alone, cancel from
 * another thread, save/restore giving bit-identical next logits, and damaged
 * or foreign saves refused. The model is fetched by `make test`
 * (scripts/fetch_model.sh); without it these tests fail, they do not skip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "lemonpc.h"
#include "runtime/api_internal.h"
#include "runtime/generate.h"

/* Under ASan or TSan the forward pass is ~10x slower: the same checks on
 * shorter prompts and replies (what the sanitizers look at does not depend
 * on the length). */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SAN 1
#else
#define SAN 0
#endif

static char model_path[512];
static const char *orlando = "examples/luminara/characters/orlando.md";

static lemonpc_model *load_model(int n_ctx) {
    lemonpc_error err;
    lemonpc_model_params p = lemonpc_model_default_params();
    p.threads = 2;
    p.n_ctx = n_ctx;
    lemonpc_model *m = lemonpc_model_load(model_path, &p, &err);
    if (!m) fail_msg("%s", err.message);
    return m;
}

static lemonpc_model *load_model_kv(int n_ctx, lemonpc_kv_type kv);

static lemonpc_npc *load_npc(lemonpc_model *m, const char *system, const char *sheet,
                             float temp, int max_tokens) {
    lemonpc_error err;
    lemonpc_npc_params p = lemonpc_npc_default_params();
    p.system = system;
    p.sheet = sheet;
    p.sampling.temperature = temp;
    p.sampling.max_tokens = max_tokens;
    lemonpc_npc *n = lemonpc_npc_load(m, &p, &err);
    if (!n) fail_msg("%s", err.message);
    return n;
}

static char *say(lemonpc_conversation *c, const char *line, lemonpc_reply_info *info) {
    lemonpc_error err;
    char *r = NULL;
    if (lemonpc_say(c, line, NULL, NULL, &r, info, &err) != LEMONPC_OK)
        fail_msg("lemonpc_say: %s", err.message);
    return r;
}

static void test_errors_name_what_is_wrong(void **state) {
    (void)state;
    lemonpc_error err;
    assert_null(lemonpc_model_load("/nonexistent/model.gguf", NULL, &err));
    assert_int_not_equal(err.code, LEMONPC_OK);
    assert_non_null(strstr(err.message, "/nonexistent/model.gguf"));
    lemonpc_model *m = load_model(512);
    lemonpc_npc_params p = lemonpc_npc_default_params();
    p.sampling.top_p = 1.5f;
    assert_null(lemonpc_npc_load(m, &p, &err));
    assert_int_equal(err.code, LEMONPC_ERR_INVALID);
    assert_non_null(strstr(err.message, "top_p"));
    p = lemonpc_npc_default_params();
    p.sheet = "/nonexistent/hero.md";
    assert_null(lemonpc_npc_load(m, &p, &err));
    assert_non_null(strstr(err.message, "/nonexistent/hero.md"));
    p.system = "both";
    assert_null(lemonpc_npc_load(m, &p, &err));
    assert_int_equal(err.code, LEMONPC_ERR_INVALID);
    assert_int_equal(lemonpc_say(NULL, "hi", NULL, NULL, NULL, NULL, &err), LEMONPC_ERR_INVALID);
    assert_string_equal(lemonpc_status_name(LEMONPC_ERR_BUSY), "busy");
    assert_string_equal(lemonpc_version(), LEMONPC_VERSION);
    lemonpc_model_free(m);
}

/* Thousands of conversations opened and closed (ASan's leak check at exit
 * sees any that leaks), a few of them talked to. */
static void test_many_conversations(void **state) {
    (void)state;
    lemonpc_model *m = load_model(512);
    lemonpc_npc *n = load_npc(m, "You are Brom, a gruff blacksmith.", NULL, 0, 4);
    lemonpc_error err;
    for (int i = 0; i < 3000; i++) {
        lemonpc_conversation *c = lemonpc_conversation_open(n, i % 2 ? "Mira" : NULL, NULL, &err);
        assert_non_null(c);
        if (i % 1000 == 0) free(say(c, "Hello.", NULL));
        lemonpc_conversation_close(c);
    }
    assert_int_equal(atomic_load(&n->n_convs), 0);
    lemonpc_npc_free(n);
    lemonpc_model_free(m);
}

/* The persona is evaluated once per NPC; every conversation starts from it,
 * and a conversation's second reply evaluates only its new turn. */
static void test_persona_prefix_shared(void **state) {
    (void)state;
    lemonpc_model *m = load_model(1024);
    lemonpc_error err;
    lemonpc_npc_params np = lemonpc_npc_default_params();
    np.sheet = orlando;
    np.persona = SAN ? LEMONPC_PERSONA_SHORT : LEMONPC_PERSONA_FULL;
    np.sampling.temperature = 0;
    np.sampling.max_tokens = SAN ? 4 : 12;
    lemonpc_npc *n = lemonpc_npc_load(m, &np, &err);
    if (!n) fail_msg("%s", err.message);
    assert_string_equal(lemonpc_npc_name(n), "Orlando Marlo");
    lemonpc_conversation *a = lemonpc_conversation_open(n, "Mira, a young acolyte", "the nave", &err);
    lemonpc_conversation *b = lemonpc_conversation_open(n, "a tired soldier", NULL, &err);
    assert_non_null(a);
    assert_non_null(b);
    lemonpc_reply_info ia, ib, ia2;
    char *r1 = say(a, "Who are you?", &ia);
    int k = lemonpc_npc_prefix_tokens(n);
    assert_true(k > (SAN ? 10 : 200));   /* the full persona of a base model: a long system turn */
    assert_int_equal(ia.n_reused, k);
    /* idle, the NPC's prefix and the conversation hold their caches, not
     * the working memory of a reply (scratch, logits, candidates) */
    assert_int_equal(lm_ctx_scratch_bytes(n->pctx), 0);
    assert_int_equal(lm_ctx_scratch_bytes(a->ctx), 0);
    assert_null(a->logits);
    char *r2 = say(b, "Who are you?", &ib);
    assert_int_equal(ib.n_reused, k);
    /* the new turn, and the lorebook block the line calls up (its keys in
     * the line or the turns before it: a system turn before the line) */
    char *block = NULL;
    lm_err le = {{0}};
    assert_int_equal(lm_api_recall(a, "And what do you fear?", &block, &le), 0);
    int block_tokens = 0;
    if (block) {
        int32_t *ids;
        size_t nid;
        assert_int_equal(lm_tokenize(n->model->tok, block, strlen(block), false, &ids, &nid, &le), 0);
        block_tokens = (int)nid + 6;   /* with its turn's template pieces */
        free(ids);
        free(block);
    }
    char *r3 = say(a, "And what do you fear?", &ia2);
    assert_true(ia2.n_reused >= ia.n_reused + ia.n_prompt);
    assert_true(ia2.n_prompt < 30 + block_tokens);
    assert_int_equal(lemonpc_conversation_n_turns(a), 4);
    const char *role;
    assert_string_equal(lemonpc_conversation_turn(a, 2, &role), "And what do you fear?");
    assert_string_equal(role, "user");
    assert_string_equal(lemonpc_conversation_turn(a, 1, &role), r1);
    assert_string_equal(role, "assistant");
    free(r1);
    free(r2);
    free(r3);
    lemonpc_conversation_close(a);
    lemonpc_conversation_close(b);
    lemonpc_npc_free(n);
    lemonpc_model_free(m);
}

/* ---- threads -------------------------------------------------------------- */

static const char *const systems[4] = {
    "You are Brom, a gruff dwarven blacksmith.",
    "You are Lyra, a cheerful elven bard.",
    "You are Captain Hale, a stern city guard.",
    "You are Old Nan, a village herbalist who speaks in riddles.",
};

typedef struct worker {
    lemonpc_conversation *c;
    char *reply[2];
    char streamed[2][2048];
    size_t n_streamed[2];
    int turn;
    lemonpc_status st[2];
} worker;

static int stream_into(void *ud, const char *t, size_t n) {
    worker *w = ud;
    size_t *k = &w->n_streamed[w->turn];
    if (*k + n < sizeof w->streamed[0]) {
        memcpy(w->streamed[w->turn] + *k, t, n);
        *k += n;
        w->streamed[w->turn][*k] = '\0';
    }
    return 0;
}

static void *work(void *arg) {
    worker *w = arg;
    lemonpc_error err;
    const char *lines[2] = {"Who are you, and what do you do all day?", "Why?"};
    for (w->turn = 0; w->turn < 2; w->turn++)
        w->st[w->turn] = lemonpc_say(w->c, lines[w->turn], stream_into, w, &w->reply[w->turn],
                                     NULL, &err);
    return NULL;
}

static void test_four_threads_match_alone(void **state) {
    (void)state;
    lemonpc_model *m = load_model(512);
    lemonpc_npc *n[4];
    worker alone[4], together[4];
    lemonpc_error err;
    memset(alone, 0, sizeof alone);
    memset(together, 0, sizeof together);
    for (int i = 0; i < 4; i++) n[i] = load_npc(m, systems[i], NULL, 0, SAN ? 8 : 24);
    for (int i = 0; i < 4; i++) {
        alone[i].c = lemonpc_conversation_open(n[i], "Tom", NULL, &err);
        work(&alone[i]);
        lemonpc_conversation_close(alone[i].c);
    }
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        together[i].c = lemonpc_conversation_open(n[i], "Tom", NULL, &err);
        assert_int_equal(pthread_create(&th[i], NULL, work, &together[i]), 0);
    }
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 4; i++) {
        for (int t = 0; t < 2; t++) {
            assert_int_equal(alone[i].st[t], LEMONPC_OK);
            assert_int_equal(together[i].st[t], LEMONPC_OK);
            assert_true(strlen(alone[i].reply[t]) > 0);
            assert_string_equal(together[i].reply[t], alone[i].reply[t]);
            assert_string_equal(together[i].streamed[t], together[i].reply[t]);
            free(alone[i].reply[t]);
            free(together[i].reply[t]);
        }
        lemonpc_conversation_close(together[i].c);
    }
    /* four characters, four different first replies */
    for (int i = 0; i < 4; i++)
        for (int j = i + 1; j < 4; j++)
            assert_string_not_equal(alone[i].streamed[0], alone[j].streamed[0]);
    for (int i = 0; i < 4; i++) lemonpc_npc_free(n[i]);
    lemonpc_model_free(m);
}

/* Orlando (his adapter) and Elena (the base model, her sheet) on one model
 * and one pool, asked from two threads at once, round after round: each
 * reply, and every bit of the cache it leaves, is what the same
 * conversation gives alone. Both ways to a reply are checked: a fresh
 * conversation (the persona copied from the NPC's prefix, the rest
 * evaluated as a batch) and the same line asked again (the whole prompt
 * cached, its last token evaluated alone). Those two ways may differ from
 * each other (docs/RUNTIME.md, "Determinism"); what runs beside a
 * conversation must change nothing. The pair that runs together is loaded
 * anew, so their persona prefixes are evaluated at the same time too. */
typedef struct duo_run {
    lemonpc_npc *npc;
    const char *line;
    pthread_barrier_t *go;   /* NULL: alone */
    char *reply[2];          /* fresh, asked again */
    uint64_t cache[2];       /* the KV cache after each */
    lemonpc_status st[2];
} duo_run;

static uint64_t cache_hash(const lemonpc_conversation *c) {
    size_t n = lm_ctx_state_bytes(c->ctx);
    void *k = malloc(n + 1), *v = malloc(n + 1);
    assert_true(k && v);
    lm_ctx_state_get(c->ctx, k, v);
    uint64_t h = lm_api_fnv(lm_api_fnv(0xcbf29ce484222325ULL, k, n), v, n);
    free(k);
    free(v);
    return h;
}

static void *duo_work(void *arg) {
    duo_run *r = arg;
    lemonpc_error err;
    if (r->go) pthread_barrier_wait(r->go);
    lemonpc_conversation *c = lemonpc_conversation_open(r->npc, NULL, NULL, &err);
    for (int t = 0; t < 2; t++) {
        r->st[t] = c && (t == 0 || lemonpc_conversation_set_turns(c, NULL, 0, &err) == LEMONPC_OK)
                       ? lemonpc_say(c, r->line, NULL, NULL, &r->reply[t], NULL, &err)
                       : LEMONPC_ERR_INTERNAL;
        if (r->st[t] == LEMONPC_OK) r->cache[t] = cache_hash(c);
    }
    lemonpc_conversation_close(c);
    return NULL;
}

static lemonpc_npc *duo_npc(lemonpc_model *m, int i) {
    char sheet[512], adapter[512];
    size_t root = (size_t)(strstr(orlando, "characters/") - orlando);
    snprintf(sheet, sizeof sheet, "%.*scharacters/%s.md", (int)root, orlando, i ? "elena" : "orlando");
    snprintf(adapter, sizeof adapter, "%.*snpc/orlando.adapter.gguf", (int)root, orlando);
    lemonpc_npc_params np = lemonpc_npc_default_params();
    np.sheet = sheet;
    np.adapter = i ? NULL : adapter;
    np.persona = SAN ? LEMONPC_PERSONA_SHORT : LEMONPC_PERSONA_AUTO;
    np.sampling.temperature = 0;
    np.sampling.max_tokens = SAN ? 4 : 12;
    lemonpc_error err;
    lemonpc_npc *n = lemonpc_npc_load(m, &np, &err);
    if (!n) fail_msg("%s", err.message);
    return n;
}

static void test_two_npcs_at_once_match_alone(void **state) {
    (void)state;
    static const char *const lines[] = {"What do you fear most?", "Who are you?",
                                        "Describe the Great Cathedral.", "Where do you live?"};
    enum { N_LINES = sizeof lines / sizeof lines[0], ROUNDS = SAN ? 2 : 8 };
    lemonpc_model *m = load_model(1024);
    lemonpc_npc *solo[2] = {duo_npc(m, 0), duo_npc(m, 1)};
    duo_run alone[2][N_LINES];
    memset(alone, 0, sizeof alone);
    for (int l = 0; l < (ROUNDS < N_LINES ? ROUNDS : N_LINES); l++)
        for (int i = 0; i < 2; i++) {
            alone[i][l] = (duo_run){.npc = solo[i], .line = lines[l]};
            duo_work(&alone[i][l]);
            for (int t = 0; t < 2; t++) assert_int_equal(alone[i][l].st[t], LEMONPC_OK);
        }
    lemonpc_npc *pair[2] = {duo_npc(m, 0), duo_npc(m, 1)};
    pthread_barrier_t go;
    assert_int_equal(pthread_barrier_init(&go, NULL, 2), 0);
    int differ_ways = 0;
    for (int r = 0; r < ROUNDS; r++) {
        duo_run both[2];
        pthread_t th[2];
        for (int i = 0; i < 2; i++) {
            both[i] = (duo_run){.npc = pair[i], .line = lines[r % N_LINES], .go = &go};
            assert_int_equal(pthread_create(&th[i], NULL, duo_work, &both[i]), 0);
        }
        for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
        for (int i = 0; i < 2; i++) {
            const duo_run *a = &alone[i][r % N_LINES];
            for (int t = 0; t < 2; t++) {
                assert_int_equal(both[i].st[t], LEMONPC_OK);
                if (strcmp(both[i].reply[t], a->reply[t]) || both[i].cache[t] != a->cache[t])
                    fail_msg("round %d, %s, %s: beside the other NPC \"%s\", alone \"%s\"%s", r,
                             lemonpc_npc_name(pair[i]), t ? "asked again" : "fresh",
                             both[i].reply[t], a->reply[t],
                             both[i].cache[t] != a->cache[t] ? " (the caches differ)" : "");
                free(both[i].reply[t]);
            }
        }
    }
    for (int l = 0; l < N_LINES; l++)
        for (int i = 0; i < 2; i++) {
            if (alone[i][l].reply[0] && strcmp(alone[i][l].reply[0], alone[i][l].reply[1])) differ_ways++;
            free(alone[i][l].reply[0]);
            free(alone[i][l].reply[1]);
        }
    /* the two NPCs are two characters: their first replies differ */
    assert_true(alone[0][0].cache[0] != alone[1][0].cache[0]);
    printf("two NPCs at once: %d rounds as alone; fresh and asked-again replies differ for %d "
           "of %d lines\n", ROUNDS, differ_ways, 2 * (ROUNDS < N_LINES ? ROUNDS : N_LINES));
    pthread_barrier_destroy(&go);
    for (int i = 0; i < 2; i++) {
        lemonpc_npc_free(solo[i]);
        lemonpc_npc_free(pair[i]);
    }
    lemonpc_model_free(m);
}

/* ---- cancel and busy ------------------------------------------------------ */

typedef struct cancel_job {
    lemonpc_conversation *c;
    atomic_int pieces;
    atomic_int cancel_sent;   /* the other thread has called cancel */
    atomic_int waited_out;    /* the third piece gave up waiting for it */
    lemonpc_status st, nested;
} cancel_job;

static int count_piece(void *ud, const char *t, size_t n) {
    (void)t;
    (void)n;
    cancel_job *j = ud;
    int k = atomic_fetch_add(&j->pieces, 1);
    if (k == 0) {
        lemonpc_error err;
        j->nested = lemonpc_say(j->c, "again", NULL, NULL, NULL, NULL, &err);
    }
    /* The third piece waits until the cancel has been sent, so what follows
     * does not depend on how fast either thread runs (60 s: a failure, not
     * a hang, if it never comes). */
    for (int ms = 0; k == 2 && !atomic_load(&j->cancel_sent); ms++) {
        if (ms == 60000) { atomic_store(&j->waited_out, 1); break; }
        usleep(1000);
    }
    return 0;
}

static void *cancel_work(void *arg) {
    cancel_job *j = arg;
    lemonpc_error err;
    j->st = lemonpc_say(j->c, "Tell me a very long story about the sea.", count_piece, j, NULL,
                        NULL, &err);
    return NULL;
}

static void test_cancel_from_another_thread(void **state) {
    (void)state;
    lemonpc_model *m = load_model(1024);
    lemonpc_npc *n = load_npc(m, "You are a storyteller who never stops talking.", NULL, 0, 900);
    lemonpc_error err;
    cancel_job j = {.c = lemonpc_conversation_open(n, NULL, NULL, &err)};
    atomic_init(&j.pieces, 0);
    atomic_init(&j.cancel_sent, 0);
    atomic_init(&j.waited_out, 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, cancel_work, &j), 0);
    while (atomic_load(&j.pieces) < 3) usleep(1000);
    lemonpc_conversation_cancel(j.c);
    atomic_store(&j.cancel_sent, 1);
    pthread_join(th, NULL);
    assert_int_equal(atomic_load(&j.waited_out), 0);
    assert_int_equal(j.st, LEMONPC_ERR_CANCELLED);
    assert_int_equal(j.nested, LEMONPC_ERR_BUSY);
    /* cancelled while the third piece was being delivered: at most the
     * piece already on its way follows */
    assert_in_range(atomic_load(&j.pieces), 3, 4);
    assert_int_equal(lemonpc_conversation_n_turns(j.c), 0);   /* the exchange did not join */
    lemonpc_conversation_close(j.c);
    lemonpc_npc_free(n);
    lemonpc_model_free(m);
}

static int stop_after_two(void *ud, const char *t, size_t n) {
    (void)t;
    (void)n;
    return ++*(int *)ud >= 2;
}

/* The stream callback stops a reply; the conversation is as before and
 * goes on. */
static void test_stream_callback_cancels(void **state) {
    (void)state;
    lemonpc_model *m = load_model(512);
    lemonpc_npc *n = load_npc(m, "You are a storyteller.", NULL, 0, 48);
    lemonpc_error err;
    lemonpc_conversation *c = lemonpc_conversation_open(n, NULL, NULL, &err);
    int calls = 0;
    lemonpc_reply_info info;
    assert_int_equal(lemonpc_say(c, "Tell me a story.", stop_after_two, &calls, NULL, &info, &err),
                     LEMONPC_ERR_CANCELLED);
    assert_int_equal(calls, 2);
    assert_int_equal(info.stop, LEMONPC_STOP_CANCELLED);
    assert_int_equal(lemonpc_conversation_n_turns(c), 0);
    char *r = say(c, "Tell me a story.", &info);
    assert_true(strlen(r) > 0);
    assert_int_equal(lemonpc_conversation_n_turns(c), 2);
    free(r);
    lemonpc_conversation_close(c);
    lemonpc_npc_free(n);
    lemonpc_model_free(m);
}

/* ---- the reply guard ------------------------------------------------------ */

typedef struct {
    int calls;
    char text[1024];
} collected;

static int collect(void *user, const char *text, size_t len) {
    collected *k = user;
    k->calls++;
    size_t have = strlen(k->text);
    if (have + len < sizeof k->text) memcpy(k->text + have, text, len), k->text[have + len] = 0;
    return 0;
}

static lemonpc_npc *guarded_npc(lemonpc_model *m, int max_tokens, int retries, unsigned checks) {
    lemonpc_error err;
    lemonpc_npc_params p = lemonpc_npc_default_params();
    p.system = "You are Brom, a gruff dwarven blacksmith.";
    p.sampling.temperature = 0;
    p.sampling.max_tokens = max_tokens;
    p.guard.retries = retries;
    p.guard.checks = checks;
    lemonpc_npc *n = lemonpc_npc_load(m, &p, &err);
    if (!n) fail_msg("%s", err.message);
    return n;
}

/* A reply cut by max_tokens fails the "ended" check on every draw: all
 * retries are spent, the first draw (the greedy reply, the fewest failures
 * first) is given and streamed once, whole, and says what it still fails.
 * The conversation goes on from it as from the same reply unguarded. */
static void test_guard_retries_and_goes_on(void **state) {
    (void)state;
    lemonpc_model *m = load_model(512);
    int nt = SAN ? 5 : 8;
    lemonpc_npc *plain = guarded_npc(m, nt, 0, 0);
    lemonpc_npc *guarded = guarded_npc(m, nt, 2, LEMONPC_CHECK_ENDED);
    lemonpc_error err;
    lemonpc_conversation *a = lemonpc_conversation_open(plain, "Tom", NULL, &err);
    lemonpc_conversation *b = lemonpc_conversation_open(guarded, "Tom", NULL, &err);
    lemonpc_reply_info ia, ib;
    char *ra = say(a, "Tell me about your forge.", &ia);
    assert_int_equal(ia.attempts, 1);
    assert_int_equal(ia.stop, LEMONPC_STOP_MAX_TOKENS);
    collected k = {0};
    char *rb = NULL;
    assert_int_equal(lemonpc_say(b, "Tell me about your forge.", collect, &k, &rb, &ib, &err),
                     LEMONPC_OK);
    assert_int_equal(ib.attempts, 3);
    assert_int_equal(ib.failed_checks, LEMONPC_CHECK_ENDED);
    assert_int_equal(ib.n_generated, 3 * nt);
    assert_string_equal(ra, rb);
    assert_int_equal(k.calls, 1);
    assert_string_equal(k.text, rb);
    /* the next reply: b's cache holds the last draw, not the reply given;
     * the turn keeps the given reply's tokens, so the cache is reused up to
     * where the two draws part and the rest evaluated again */
    int first_prompt = ib.n_reused + ib.n_prompt;
    char *ra2 = say(a, "And your prices?", &ia);
    char *rb2 = say(b, "And your prices?", &ib);
    assert_true(ib.n_reused >= first_prompt);
    assert_int_equal(ib.n_reused + ib.n_prompt, ia.n_reused + ia.n_prompt);
    const char *role;
    assert_string_equal(lemonpc_conversation_turn(b, 1, &role), ra);
    assert_true(strlen(rb2) > 0);
    free(ra); free(rb); free(ra2); free(rb2);
    /* a guard whose checks pass takes the first draw, the greedy reply */
    lemonpc_npc *loose = guarded_npc(m, nt, 2, LEMONPC_CHECK_LOOP);
    lemonpc_conversation *c = lemonpc_conversation_open(loose, "Tom", NULL, &err);
    lemonpc_conversation *d = lemonpc_conversation_open(plain, "Tom", NULL, &err);
    char *rc = say(c, "Hello there.", &ib);
    char *rd = say(d, "Hello there.", NULL);
    assert_int_equal(ib.attempts, 1);
    assert_int_equal(ib.failed_checks, 0);
    assert_string_equal(rc, rd);
    free(rc); free(rd);
    /* out-of-range guards are refused, saying what is wrong */
    lemonpc_npc_params p = lemonpc_npc_default_params();
    p.guard.retries = 99;
    assert_null(lemonpc_npc_load(m, &p, &err));
    assert_int_equal(err.code, LEMONPC_ERR_INVALID);
    assert_non_null(strstr(err.message, "guard"));
    lemonpc_conversation_close(a);
    lemonpc_conversation_close(b);
    lemonpc_conversation_close(c);
    lemonpc_conversation_close(d);
    lemonpc_npc_free(plain);
    lemonpc_npc_free(guarded);
    lemonpc_npc_free(loose);
    lemonpc_model_free(m);
}

/* best_of: the guard draws N replies though the first passes, and the
 * reply given carries its relevance, log p(reply | line) - log p(reply |
 * empty line) per token, which the generator, scoring the two prompts apart
 * from the conversation's cache, finds too. The conversation goes on from
 * it. */
static void test_guard_best_of(void **state) {
    (void)state;
    lemonpc_model *m = load_model_kv(512, LEMONPC_KV_F32);
    lemonpc_error err;
    lemonpc_npc_params p = lemonpc_npc_default_params();
    const char *sys = "You are Brom, a gruff dwarven blacksmith.";
    p.system = sys;
    p.sampling.temperature = 0;
    p.sampling.max_tokens = 96;
    p.guard.checks = LEMONPC_CHECK_ENDED;
    p.guard.best_of = 3;
    lemonpc_npc *n = lemonpc_npc_load(m, &p, &err);
    if (!n) fail_msg("%s", err.message);
    lemonpc_conversation *c = lemonpc_conversation_open(n, NULL, NULL, &err);
    const char *line = "Answer in one word: is the forge hot?";
    lemonpc_reply_info info;
    char *r = say(c, line, &info);
    assert_int_equal(info.attempts, 3);
    assert_int_equal(info.failed_checks, 0);
    assert_int_equal(info.stop, LEMONPC_STOP_END);
    assert_true(info.relevance != 0);

    lm_err e = {{0}};
    lm_generator *g = lm_generator_open(model_path, 512, 2, &e);
    if (!g) fail_msg("%s", e.msg);
    lm_chat_msg with[3] = {{"system", sys}, {"user", line}, {"assistant", r}};
    lm_chat_msg without[3] = {{"system", sys}, {"user", ""}, {"assistant", r}};
    double nll_with, nll_without;
    int nw, nwo;
    assert_int_equal(lm_generator_score(g, with, 3, true, &nll_with, &nw, &e), 0);
    assert_int_equal(lm_generator_score(g, without, 3, true, &nll_without, &nwo, &e), 0);
    assert_int_equal(nw, nwo);
    double want = (nll_without - nll_with) / nw;
    if (fabs(info.relevance - want) > 0.02)
        fail_msg("relevance %.4f, the generator's %.4f", info.relevance, want);
    /* a reply cut at its limit is scored without the closing token: one
     * token fewer, and a smaller NLL by exactly that token's */
    double nll_open;
    int no;
    assert_int_equal(lm_generator_score(g, with, 3, false, &nll_open, &no, &e), 0);
    assert_int_equal(no, nw - 1);
    assert_true(nll_open < nll_with && nll_open > 0);
    lm_generator_free(g);

    /* the next turn reuses the cache at least up to the system turn */
    char *r2 = say(c, "What do you sell?", &info);
    assert_true(info.n_reused > 10);
    assert_int_equal(info.attempts, 3);
    const char *role;
    assert_string_equal(lemonpc_conversation_turn(c, 1, &role), r);
    free(r);
    free(r2);
    lemonpc_conversation_close(c);
    lemonpc_npc_free(n);
    /* out of range: refused, saying so */
    p.guard.best_of = 17;
    assert_null(lemonpc_npc_load(m, &p, &err));
    assert_int_equal(err.code, LEMONPC_ERR_INVALID);
    assert_non_null(strstr(err.message, "best_of"));
    lemonpc_model_free(m);
}

/* ---- save and restore ----------------------------------------------------- */

static void tmp_path(char *buf, size_t n, const char *name) {
    const char *dir = getenv("TMPDIR");
    snprintf(buf, n, "%s/lemonpc-test-%d-%s", dir && *dir ? dir : "/tmp", (int)getpid(), name);
}

static void test_save_restore_bit_identical(void **state) {
    (void)state;
    lemonpc_model *m = load_model(512);
    /* sampled, so the restored PRNG state matters too */
    lemonpc_npc *n = load_npc(m, "You are Brom, a gruff dwarven blacksmith.", NULL, 0.9f, 20);
    lemonpc_error err;
    lemonpc_conversation *c = lemonpc_conversation_open(n, "Tom", "the forge", &err);
    free(say(c, "Can you fix my sword?", NULL));
    char path[512];
    tmp_path(path, sizeof path, "conv.lmc");
    assert_int_equal(lemonpc_conversation_save(c, path, &err), LEMONPC_OK);
    lemonpc_conversation *r = lemonpc_conversation_restore(n, path, &err);
    if (!r) fail_msg("%s", err.message);
    assert_int_equal(lemonpc_conversation_n_turns(r), 2);
    assert_int_equal(lemonpc_conversation_n_cached(r), lemonpc_conversation_n_cached(c));
    assert_memory_equal(r->toks, c->toks, c->n_toks * sizeof *c->toks);
    /* the next logits, bit for bit */
    int V = m->m->cfg.n_vocab;
    float *la = malloc(sizeof(float) * (size_t)V), *lb = malloc(sizeof(float) * (size_t)V);
    int32_t tk = 42;
    lm_err e = {{0}};
    assert_int_equal(lm_eval(c->ctx, &tk, 1, LM_LOGITS_LAST, la, &e), 0);
    assert_int_equal(lm_eval(r->ctx, &tk, 1, LM_LOGITS_LAST, lb, &e), 0);
    assert_memory_equal(la, lb, sizeof(float) * (size_t)V);
    lm_ctx_truncate(c->ctx, (int)c->n_toks);
    lm_ctx_truncate(r->ctx, (int)r->n_toks);
    free(la);
    free(lb);
    /* and the next sampled reply */
    char *a = say(c, "How much?", NULL), *b = say(r, "How much?", NULL);
    assert_string_equal(a, b);
    free(a);
    free(b);
    lemonpc_conversation_close(r);

    /* another NPC's save is refused */
    lemonpc_npc *other = load_npc(m, "You are Lyra, a bard.", NULL, 0.9f, 20);
    assert_null(lemonpc_conversation_restore(other, path, &err));
    assert_int_equal(err.code, LEMONPC_ERR_MISMATCH);
    lemonpc_npc_free(other);

    /* a truncated or altered save is refused, naming the file */
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)size);
    assert_int_equal(fread(buf, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    char bad[600];
    snprintf(bad, sizeof bad, "%s.bad", path);
    long cuts[] = {0, 7, 40, size / 2, size - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        f = fopen(bad, "wb");
        fwrite(buf, 1, (size_t)cuts[i], f);
        fclose(f);
        assert_null(lemonpc_conversation_restore(n, bad, &err));
        assert_int_equal(err.code, LEMONPC_ERR_FORMAT);
        assert_non_null(strstr(err.message, bad));
    }
    for (long at = 9; at < size; at += size / 7) {
        buf[at] ^= 0x20;
        f = fopen(bad, "wb");
        fwrite(buf, 1, (size_t)size, f);
        fclose(f);
        buf[at] ^= 0x20;
        assert_null(lemonpc_conversation_restore(n, bad, &err));
        assert_int_equal(err.code, LEMONPC_ERR_FORMAT);
    }
    free(buf);
    unlink(bad);
    unlink(path);
    lemonpc_conversation_close(c);
    lemonpc_npc_free(n);
    lemonpc_model_free(m);
}

static lemonpc_model *load_model_kv(int n_ctx, lemonpc_kv_type kv) {
    lemonpc_error err;
    lemonpc_model_params p = lemonpc_model_default_params();
    p.threads = 2;
    p.n_ctx = n_ctx;
    p.kv_type = kv;
    lemonpc_model *m = lemonpc_model_load(model_path, &p, &err);
    if (!m) fail_msg("%s", err.message);
    return m;
}

static uint8_t *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(*n);
    assert_int_equal(fread(b, 1, *n, f), *n);
    fclose(f);
    return b;
}

/* Conversations cache f16 by default (llama.cpp's default), f32 when asked;
 * a save records its cache type and restores only into a model of the same
 * one, bit for bit; a version-1 save (always f32) still restores. */
static void test_kv_type_and_saves(void **state) {
    (void)state;
    lemonpc_error err;
    lemonpc_model_params bad = lemonpc_model_default_params();
    bad.kv_type = (lemonpc_kv_type)7;
    assert_null(lemonpc_model_load(model_path, &bad, &err));
    assert_int_equal(err.code, LEMONPC_ERR_INVALID);
    assert_non_null(strstr(err.message, "kv_type"));

    lemonpc_model *m16 = load_model_kv(512, LEMONPC_KV_DEFAULT);
    lemonpc_model *m32 = load_model_kv(512, LEMONPC_KV_F32);
    const char *sys = "You are Brom, a gruff dwarven blacksmith.";
    lemonpc_npc *n16 = load_npc(m16, sys, NULL, 0.0f, 12), *n32 = load_npc(m32, sys, NULL, 0.0f, 12);
    lemonpc_conversation *c16 = lemonpc_conversation_open(n16, "Tom", "the forge", &err);
    lemonpc_conversation *c32 = lemonpc_conversation_open(n32, "Tom", "the forge", &err);
    assert_true(c16 && c32);
    free(say(c16, "Can you fix my sword?", NULL));
    free(say(c32, "Can you fix my sword?", NULL));
    assert_int_equal(lm_ctx_kv_type(c16->ctx), LM_F16);
    assert_int_equal(lm_ctx_kv_type(c32->ctx), LM_F32);
    assert_int_equal(lm_ctx_kv_type(n16->pctx), LM_F16);   /* the persona prefix too */
    assert_int_equal(lm_ctx_kv_type(n32->pctx), LM_F32);
    assert_int_equal(lm_ctx_kv_bytes(c16->ctx) * 2, lm_ctx_kv_bytes(c32->ctx));

    char p16[512], p32[512], pv1[600];
    tmp_path(p16, sizeof p16, "kv16.lmc");
    tmp_path(p32, sizeof p32, "kv32.lmc");
    assert_int_equal(lemonpc_conversation_save(c16, p16, &err), LEMONPC_OK);
    assert_int_equal(lemonpc_conversation_save(c32, p32, &err), LEMONPC_OK);
    size_t n16b, n32b;
    uint8_t *b16 = read_all(p16, &n16b), *b32 = read_all(p32, &n32b);
    uint32_t hdr[2];
    memcpy(hdr, b16 + 8, 8);
    assert_int_equal(hdr[0], 2);   /* version */
    assert_int_equal(hdr[1], 1);   /* F16 */
    memcpy(hdr, b32 + 8, 8);
    assert_int_equal(hdr[1], 0);   /* F32 */
    /* the f16 cache's rows take half the bytes per cached token (the two
     * greedy replies may differ in length) */
    assert_int_equal(lm_ctx_state_bytes(c16->ctx) / c16->n_toks * 2,
                     lm_ctx_state_bytes(c32->ctx) / c32->n_toks);

    /* across types: refused, saying why (same NPC, so only the type differs) */
    assert_null(lemonpc_conversation_restore(n32, p16, &err));
    assert_int_equal(err.code, LEMONPC_ERR_MISMATCH);
    if (!strstr(err.message, "F16") || !strstr(err.message, "F32") ||
        !strstr(err.message, "kv_type") || !strstr(err.message, p16))
        fail_msg("message: %s", err.message);
    assert_null(lemonpc_conversation_restore(n16, p32, &err));
    assert_int_equal(err.code, LEMONPC_ERR_MISMATCH);

    /* same type: the next logits bit for bit, f32 too; and a version-1 file
     * (the f32 save with the old version number and its checksum redone) */
    memcpy(hdr, b32 + 8, 4);
    hdr[0] = 1;
    memcpy(b32 + 8, hdr, 4);
    uint64_t h = lm_api_fnv(0xcbf29ce484222325ULL, b32, n32b - 8);
    memcpy(b32 + n32b - 8, &h, 8);
    snprintf(pv1, sizeof pv1, "%s.v1", p32);
    FILE *f = fopen(pv1, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b32, 1, n32b, f), n32b);
    fclose(f);
    int V = m16->m->cfg.n_vocab;
    float *la = malloc(sizeof(float) * (size_t)V), *lb = malloc(sizeof(float) * (size_t)V);
    const char *paths[3] = {p16, p32, pv1};
    lemonpc_npc *npcs[3] = {n16, n32, n32};
    lemonpc_conversation *orig[3] = {c16, c32, c32};
    for (int i = 0; i < 3; i++) {
        lemonpc_conversation *r = lemonpc_conversation_restore(npcs[i], paths[i], &err);
        if (!r) fail_msg("%s: %s", paths[i], err.message);
        int32_t tk = 42;
        lm_err e = {{0}};
        assert_int_equal(lm_eval(orig[i]->ctx, &tk, 1, LM_LOGITS_LAST, la, &e), 0);
        assert_int_equal(lm_eval(r->ctx, &tk, 1, LM_LOGITS_LAST, lb, &e), 0);
        assert_memory_equal(la, lb, sizeof(float) * (size_t)V);
        lm_ctx_truncate(orig[i]->ctx, (int)orig[i]->n_toks);
        lemonpc_conversation_close(r);
    }
    free(la); free(lb); free(b16); free(b32);
    unlink(p16); unlink(p32); unlink(pv1);
    lemonpc_conversation_close(c16);
    lemonpc_conversation_close(c32);
    lemonpc_npc_free(n16);
    lemonpc_npc_free(n32);
    lemonpc_model_free(m16);
    lemonpc_model_free(m32);
}

/* A process killed at any moment of a save leaves the previous save whole. */
static void test_killed_mid_save_keeps_previous(void **state) {
    (void)state;
    lemonpc_model *m = load_model(512);
    lemonpc_npc *n = load_npc(m, "You are Brom, a gruff dwarven blacksmith.", NULL, 0, 16);
    lemonpc_error err;
    lemonpc_conversation *c = lemonpc_conversation_open(n, "Tom", NULL, &err);
    free(say(c, "Hello there.", NULL));
    char path[512];
    tmp_path(path, sizeof path, "killed.lmc");
    assert_int_equal(lemonpc_conversation_save(c, path, &err), LEMONPC_OK);
    for (int round = 0; round < 6; round++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            for (;;) lemonpc_conversation_save(c, path, &err);
        }
        usleep(2000 + 3000 * round);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        lemonpc_conversation *r = lemonpc_conversation_restore(n, path, &err);
        if (!r) fail_msg("round %d: %s", round, err.message);
        assert_int_equal(lemonpc_conversation_n_turns(r), 2);
        lemonpc_conversation_close(r);
    }
    /* leftovers of killed saves are temporary files beside it, never the save */
    char cmd[1100];
    snprintf(cmd, sizeof cmd, "rm -f '%s' '%s'.tmp.*", path, path);
    assert_int_equal(system(cmd), 0);
    lemonpc_conversation_close(c);
    lemonpc_npc_free(n);
    lemonpc_model_free(m);
}

/* A conversation longer than the context drops its oldest turns from the
 * prompt, never the persona, and goes on answering. */
static void test_long_conversation_trims_the_middle(void **state) {
    (void)state;
    lemonpc_model *m = load_model(256);
    lemonpc_npc *n = load_npc(m, "You are Brom, a gruff dwarven blacksmith.", NULL, 0, 24);
    lemonpc_error err;
    lemonpc_conversation *c = lemonpc_conversation_open(n, "Tom", NULL, &err);
    int dropped = 0, turns = SAN ? 7 : 12;
    for (int i = 0; i < turns; i++) {
        lemonpc_reply_info info;
        free(say(c, "Tell me about the weather, the roads and the price of iron today.", &info));
        dropped = info.n_dropped_turns;
        assert_true(info.n_reused >= lemonpc_npc_prefix_tokens(n));
    }
    assert_true(dropped > 0);
    assert_int_equal(lemonpc_conversation_n_turns(c), 2 * turns);
    lemonpc_conversation_close(c);
    lemonpc_npc_free(n);
    lemonpc_model_free(m);
}

/* A history given by the caller (lemonpc_conversation_set_turns), sampling
 * and stop strings per conversation, and raw completions in a
 * conversation's cache: what `lemonpc serve` maps OpenAI requests onto. */
static void test_set_turns_sampling_complete(void **state) {
    (void)state;
    lemonpc_model *m = load_model(512);
    lemonpc_npc *n = load_npc(m, "You are Brom, a gruff dwarven blacksmith.", NULL, 0, SAN ? 6 : 12);
    lemonpc_error err;
    lemonpc_reply_info info;
    lemonpc_conversation *a = lemonpc_conversation_open(n, "Tom", NULL, &err);
    assert_non_null(a);
    char *r1 = say(a, "Hello there.", NULL);
    char *r2 = say(a, "What do you sell?", &info);
    /* the same history given back: its sampled tokens are kept, so the
     * cache is reused to the end of the first reply and the reply is the same */
    lemonpc_turn first[] = {{"user", "Hello there."}, {"assistant", r1}};
    assert_int_equal(lemonpc_conversation_set_turns(a, first, 2, &err), LEMONPC_OK);
    assert_int_equal(lemonpc_conversation_n_turns(a), 2);
    lemonpc_reply_info again;
    char *r2b = say(a, "What do you sell?", &again);
    assert_string_equal(r2, r2b);
    assert_true(again.n_reused >= info.n_reused);
    assert_int_equal(lemonpc_conversation_n_turns(a), 4);
    /* a history the conversation never had: rebuilt, persona still reused */
    lemonpc_conversation *b = lemonpc_conversation_open(n, "Tom", NULL, &err);
    lemonpc_turn other[] = {{"user", "Good morning."}, {"assistant", "Morning. What do you want?"}};
    assert_int_equal(lemonpc_conversation_set_turns(b, other, 2, &err), LEMONPC_OK);
    free(say(b, "A horseshoe.", &info));
    assert_int_equal(lemonpc_conversation_n_turns(b), 4);
    const char *role;
    assert_string_equal(lemonpc_conversation_turn(b, 1, &role), "Morning. What do you want?");
    assert_string_equal(role, "assistant");
    assert_true(info.n_reused >= lemonpc_npc_prefix_tokens(n));
    lemonpc_turn bad[] = {{"narrator", "x"}};
    assert_int_equal(lemonpc_conversation_set_turns(b, bad, 1, &err), LEMONPC_ERR_INVALID);
    assert_non_null(strstr(err.message, "narrator"));
    assert_int_equal(lemonpc_conversation_n_turns(b), 4);
    /* max_tokens and stop strings of the conversation alone */
    lemonpc_sampling sp = lemonpc_sampling_defaults();
    sp.temperature = 0;
    sp.max_tokens = 3;
    assert_int_equal(lemonpc_conversation_set_sampling(b, &sp, NULL, 0, &err), LEMONPC_OK);
    free(say(b, "Anything else?", &info));
    assert_int_equal(info.n_generated, 3);
    assert_int_equal(info.stop, LEMONPC_STOP_MAX_TOKENS);
    lemonpc_conversation_close(b);
    b = lemonpc_conversation_open(n, "Tom", NULL, &err);
    char *full = say(b, "Hello there.", NULL);
    assert_true(strlen(full) > 4);
    const char *stop[] = {full + 3};   /* the reply from its 4th byte on */
    lemonpc_conversation_close(b);
    b = lemonpc_conversation_open(n, "Tom", NULL, &err);
    sp.max_tokens = SAN ? 6 : 12;
    assert_int_equal(lemonpc_conversation_set_sampling(b, &sp, stop, 1, &err), LEMONPC_OK);
    char *cut = say(b, "Hello there.", &info);
    assert_int_equal(info.stop, LEMONPC_STOP_STRING);
    assert_int_equal(strncmp(cut, full, strlen(cut)), 0);
    assert_true(strlen(cut) <= 3);
    const char *empty[] = {""};
    assert_int_equal(lemonpc_conversation_set_sampling(b, &sp, empty, 1, &err), LEMONPC_ERR_INVALID);
    sp.top_p = 1.5f;
    assert_int_equal(lemonpc_conversation_set_sampling(b, &sp, NULL, 0, &err), LEMONPC_ERR_INVALID);
    assert_non_null(strstr(err.message, "top_p"));
    /* a seed gives the same draws again */
    sp = lemonpc_sampling_defaults();
    sp.temperature = 1.0f;
    sp.seed = 7;
    sp.max_tokens = 8;
    char *x[2];
    for (int i = 0; i < 2; i++) {
        assert_int_equal(lemonpc_conversation_set_sampling(b, &sp, NULL, 0, &err), LEMONPC_OK);
        assert_int_equal(lemonpc_conversation_reset(b, &err), LEMONPC_OK);
        x[i] = say(b, "Tell me a story.", NULL);
    }
    assert_string_equal(x[0], x[1]);
    /* raw completions: the conversation's one equals lemonpc_complete's,
     * and a second one reuses the cache */
    assert_int_equal(lemonpc_conversation_set_sampling(b, NULL, NULL, 0, &err), LEMONPC_OK);
    char *c1 = NULL, *c2 = NULL, *c3 = NULL;
    const char *prompt = "The three primary colours are";
    assert_int_equal(lemonpc_complete(n, prompt, NULL, NULL, &c1, NULL, &err), LEMONPC_OK);
    assert_int_equal(lemonpc_conversation_complete(b, prompt, NULL, NULL, &c2, &info, &err),
                     LEMONPC_OK);
    assert_string_equal(c1, c2);
    int n_prompt = info.n_prompt + info.n_reused;
    assert_int_equal(lemonpc_conversation_complete(b, prompt, NULL, NULL, &c3, &info, &err),
                     LEMONPC_OK);
    assert_string_equal(c1, c3);
    assert_int_equal(info.n_reused, n_prompt - 1);
    assert_int_equal(lemonpc_conversation_n_turns(b), 2);
    free(c1), free(c2), free(c3), free(x[0]), free(x[1]), free(full), free(cut);
    free(r1), free(r2), free(r2b);
    lemonpc_conversation_close(a);
    lemonpc_conversation_close(b);
    lemonpc_npc_free(n);
    lemonpc_model_free(m);
}

/* An NPC whose adapter is F16 (lm_adapter_convert of the shipped Orlando
 * adapter to F32, whatever it is stored in, and then to F16) holds it in
 * F16, half the bytes of the F32 one, answers, and its saves are its own:
 * the F32 NPC refuses them (another adapter), the F16 NPC restores them and
 * goes on with the same reply. */
static void test_f16_adapter_npc(void **state) {
    (void)state;
    char shipped[512], ad32[512], ad16[512], path[512];
    snprintf(shipped, sizeof shipped, "%.*snpc/orlando.adapter.gguf",
             (int)(strstr(orlando, "characters/") - orlando), orlando);
    tmp_path(ad32, sizeof ad32, "orlando-f32.gguf");
    tmp_path(ad16, sizeof ad16, "orlando-f16.gguf");
    tmp_path(path, sizeof path, "f16.lmc");
    lm_err e = {{0}};
    if (lm_adapter_convert(shipped, ad32, LM_F32, &e)) fail_msg("%s", e.msg);
    if (lm_adapter_convert(ad32, ad16, LM_F16, &e)) fail_msg("%s", e.msg);
    lemonpc_model *m = load_model(512);
    lemonpc_error err;
    lemonpc_npc *n[2];
    const char *ads[2] = {ad32, ad16};
    for (int i = 0; i < 2; i++) {
        lemonpc_npc_params np = lemonpc_npc_default_params();
        np.sheet = orlando;
        np.adapter = ads[i];
        np.sampling.temperature = 0;
        np.sampling.max_tokens = SAN ? 4 : 12;
        if (!(n[i] = lemonpc_npc_load(m, &np, &err))) fail_msg("%s", err.message);
    }
    assert_int_equal(lm_adapter_get(n[1]->adapter, 0, LM_ADAPT_Q)->type, LM_F16);
    assert_true(lm_adapter_bytes(n[1]->adapter) * 10 < lm_adapter_bytes(n[0]->adapter) * 6);
    assert_true(n[0]->fingerprint != n[1]->fingerprint);
    lemonpc_conversation *c = lemonpc_conversation_open(n[1], "Mira", "the nave", &err);
    assert_non_null(c);
    free(say(c, "Who are you?", NULL));
    assert_int_equal(lemonpc_conversation_save(c, path, &err), LEMONPC_OK);
    assert_null(lemonpc_conversation_restore(n[0], path, &err));
    assert_int_equal(err.code, LEMONPC_ERR_MISMATCH);
    lemonpc_conversation *r = lemonpc_conversation_restore(n[1], path, &err);
    if (!r) fail_msg("%s", err.message);
    char *a = say(c, "And what do you fear?", NULL), *b = say(r, "And what do you fear?", NULL);
    assert_string_equal(a, b);
    free(a);
    free(b);
    lemonpc_conversation_close(r);
    lemonpc_conversation_close(c);
    lemonpc_npc_free(n[0]);
    lemonpc_npc_free(n[1]);
    lemonpc_model_free(m);
    unlink(path);
    unlink(ad16);
    unlink(ad32);
}

static int setup(void **state) {
    (void)state;
    const char *p = getenv("LEMONPC_MODEL");
    if (p) snprintf(model_path, sizeof model_path, "%s", p);
    else snprintf(model_path, sizeof model_path, "%s/.cache/lemonpc/SmolLM2-135M-Instruct.Q4_1.gguf",
                  getenv("HOME") ? getenv("HOME") : "");
    if (access(model_path, R_OK) != 0) {
        fprintf(stderr, "test_api: no model at %s: run scripts/fetch_model.sh (make test does)\n",
                model_path);
        return -1;
    }
    if (access(orlando, R_OK) != 0) orlando = "../examples/luminara/characters/orlando.md";
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errors_name_what_is_wrong),
        cmocka_unit_test(test_many_conversations),
        cmocka_unit_test(test_persona_prefix_shared),
        cmocka_unit_test(test_four_threads_match_alone),
        cmocka_unit_test(test_two_npcs_at_once_match_alone),
        cmocka_unit_test(test_cancel_from_another_thread),
        cmocka_unit_test(test_stream_callback_cancels),
        cmocka_unit_test(test_guard_retries_and_goes_on),
        cmocka_unit_test(test_guard_best_of),
        cmocka_unit_test(test_save_restore_bit_identical),
        cmocka_unit_test(test_kv_type_and_saves),
        cmocka_unit_test(test_killed_mid_save_keeps_previous),
        cmocka_unit_test(test_long_conversation_trims_the_middle),
        cmocka_unit_test(test_set_turns_sampling_complete),
        cmocka_unit_test(test_f16_adapter_npc),
    };
    /* CMOCKA_FILTER=test_name (a glob) runs some tests alone */
    if (getenv("CMOCKA_FILTER")) cmocka_set_test_filter(getenv("CMOCKA_FILTER"));
    return cmocka_run_group_tests_name("api", tests, setup, NULL);
}
