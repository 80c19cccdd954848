/* The public API's world (include/lemonpc.h): memory in SQLite
 * (memory/memdb.h), recalled for each reply (memory/recall.h), and the
 * conversations kept in it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "memory/recall.h"
#include "runtime/api_internal.h"

static lemonpc_status ok(lemonpc_error *err) {
    if (err) { err->code = LEMONPC_OK; err->message[0] = '\0'; }
    return LEMONPC_OK;
}

static lemonpc_status fail(lemonpc_error *err, const lm_err *e, lemonpc_status code) {
    return lm_api_fail(err, lm_api_code_of(e, code), e);
}

lemonpc_world *lemonpc_world_open(const char *path, lemonpc_error *err) {
    if (!path) return lm_api_failf(err, LEMONPC_ERR_INVALID, "lemonpc_world_open: no path"), NULL;
    lemonpc_world *w = calloc(1, sizeof *w);
    if (!w) return lm_api_failf(err, LEMONPC_ERR_NOMEM, "out of memory"), NULL;
    lm_err e = {{0}};
    if (!(w->db = lm_memdb_open(path, &e))) {
        free(w);
        fail(err, &e, strstr(e.msg, "cannot open") ? LEMONPC_ERR_IO : LEMONPC_ERR_FORMAT);
        return NULL;
    }
    ok(err);
    return w;
}

void lemonpc_world_close(lemonpc_world *w) {
    if (!w) return;
    if (atomic_load(&w->n_npcs) > 0)
        fprintf(stderr, "lemonpc: lemonpc_world_close with %d NPCs in it: closing anyway\n",
                atomic_load(&w->n_npcs));
    lm_memdb_close(w->db);
    free(w);
}

lemonpc_status lemonpc_world_set_time(lemonpc_world *w, double hours, lemonpc_error *err) {
    if (!w) return lm_api_failf(err, LEMONPC_ERR_INVALID, "lemonpc_world_set_time: no world");
    lm_err e = {{0}};
    if (lm_memdb_set_time(w->db, hours, &e)) return fail(err, &e, LEMONPC_ERR_INVALID);
    return ok(err);
}

double lemonpc_world_time(const lemonpc_world *w) {
    return w ? lm_memdb_time(w->db) : 0;
}

lemonpc_status lemonpc_world_event(lemonpc_world *w, const lemonpc_event *ev, int64_t *id,
                                   lemonpc_error *err) {
    if (id) *id = 0;
    if (!w || !ev) return lm_api_failf(err, LEMONPC_ERR_INVALID, "lemonpc_world_event: %s is NULL",
                                       !w ? "the world" : "the event");
    if (ev->n_witnesses && !ev->witnesses)
        return lm_api_failf(err, LEMONPC_ERR_INVALID, "lemonpc_world_event: %zu witnesses "
                            "without names", ev->n_witnesses);
    lm_err e = {{0}};
    lm_memory m = {.kind = LM_MEM_EVENT, .text = ev->text, .place = ev->place,
                   .importance = ev->importance};
    int64_t k = lm_memdb_add(w->db, &m, ev->witnesses, ev->n_witnesses, true, &e);
    if (k < 0) return fail(err, &e, LEMONPC_ERR_INVALID);
    if (id) *id = k;
    return ok(err);
}

lemonpc_status lemonpc_world_tell(lemonpc_world *w, int64_t event_id, const char *npc,
                                  lemonpc_error *err) {
    if (!w) return lm_api_failf(err, LEMONPC_ERR_INVALID, "lemonpc_world_tell: no world");
    lm_err e = {{0}};
    if (lm_memdb_tell(w->db, event_id, npc, &e))
        return fail(err, &e, strstr(e.msg, "no event") ? LEMONPC_ERR_NOT_FOUND
                                                        : LEMONPC_ERR_INVALID);
    return ok(err);
}

lemonpc_status lemonpc_world_fact(lemonpc_world *w, const char *npc, const char *player,
                                  const char *text, int importance, lemonpc_error *err) {
    if (!w || !npc) return lm_api_failf(err, LEMONPC_ERR_INVALID, "lemonpc_world_fact: %s is "
                                        "NULL", !w ? "the world" : "the NPC");
    lm_err e = {{0}};
    lm_memory m = {.kind = LM_MEM_FACT, .text = text, .player = player, .importance = importance};
    if (lm_memdb_add(w->db, &m, &npc, 1, false, &e) < 0) return fail(err, &e, LEMONPC_ERR_INVALID);
    return ok(err);
}

typedef struct list_job {
    lemonpc_memory_fn fn;
    void *user;
} list_job;

static int list_one(void *ud, const lm_memory *m, double score) {
    (void)score;
    list_job *j = ud;
    static const char *const kinds[] = {"event", "said", "fact"};
    lemonpc_memory pm = {m->id, kinds[m->kind <= LM_MEM_FACT ? m->kind : 0], m->text, m->place,
                         m->player, m->time, m->importance, m->witnessed};
    return j->fn(j->user, &pm);
}

lemonpc_status lemonpc_world_memories(lemonpc_world *w, const char *npc, const char *player,
                                      lemonpc_memory_fn fn, void *user, lemonpc_error *err) {
    if (!w || !npc || !fn)
        return lm_api_failf(err, LEMONPC_ERR_INVALID, "lemonpc_world_memories: %s is NULL",
                            !w ? "the world" : !npc ? "the NPC" : "the callback");
    lm_err e = {{0}};
    list_job j = {fn, user};
    if (lm_memdb_list(w->db, npc, player, list_one, &j, &e)) return fail(err, &e, LEMONPC_ERR_IO);
    return ok(err);
}

lemonpc_status lemonpc_world_forget(lemonpc_world *w, const char *npc, const char *player,
                                    lemonpc_error *err) {
    if (!w) return lm_api_failf(err, LEMONPC_ERR_INVALID, "lemonpc_world_forget: no world");
    lm_err e = {{0}};
    int n = 0;
    if (lm_memdb_forget(w->db, npc, player, &n, &e)) return fail(err, &e, LEMONPC_ERR_INVALID);
    return ok(err);
}

lemonpc_status lemonpc_world_save_as(lemonpc_world *w, const char *path, lemonpc_error *err) {
    if (!w || !path) return lm_api_failf(err, LEMONPC_ERR_INVALID, "lemonpc_world_save_as: %s "
                                         "is NULL", !w ? "the world" : "the path");
    lm_err e = {{0}};
    if (lm_memdb_save_as(w->db, path, &e)) return fail(err, &e, LEMONPC_ERR_IO);
    return ok(err);
}

lemonpc_status lemonpc_world_load(lemonpc_world *w, const char *path, lemonpc_error *err) {
    if (!w || !path) return lm_api_failf(err, LEMONPC_ERR_INVALID, "lemonpc_world_load: %s is "
                                         "NULL", !w ? "the world" : "the path");
    lm_err e = {{0}};
    int rc = lm_memdb_load(w->db, path, &e);
    if (rc == 0) return ok(err);
    /* not fail(): its guess from the message would make a missing file IO */
    if (rc == LM_MEMDB_MISSING) return lm_api_fail(err, LEMONPC_ERR_NOT_FOUND, &e);
    if (rc == LM_MEMDB_NOT_A_WORLD) return lm_api_fail(err, LEMONPC_ERR_FORMAT, &e);
    return fail(err, &e, LEMONPC_ERR_IO);
}

lemonpc_status lemonpc_npc_set_world(lemonpc_npc *npc, lemonpc_world *w, const char *id,
                                     int memory_tokens, lemonpc_error *err) {
    if (!npc || !w) return lm_api_failf(err, LEMONPC_ERR_INVALID, "lemonpc_npc_set_world: %s is "
                                        "NULL", !npc ? "the NPC" : "the world");
    if (atomic_load(&npc->n_convs) > 0)
        return lm_api_failf(err, LEMONPC_ERR_BUSY, "lemonpc_npc_set_world: close the NPC's "
                            "conversations first");
    const char *name = id && id[0] ? id : npc->name;
    if (!name || !name[0])
        return lm_api_failf(err, LEMONPC_ERR_INVALID, "lemonpc_npc_set_world: an NPC without a "
                            "sheet needs an id");
    char *dup = strdup(name);
    if (!dup) return lm_api_failf(err, LEMONPC_ERR_NOMEM, "out of memory");
    if (npc->world) atomic_fetch_sub(&npc->world->n_npcs, 1);
    free(npc->wid);
    npc->wid = dup;
    npc->world = w;
    npc->memory_tokens = memory_tokens > 0 ? memory_tokens : 256;
    atomic_fetch_add(&w->n_npcs, 1);
    return ok(err);
}

const char *lemonpc_conversation_memory(const lemonpc_conversation *c) {
    return c && c->memory ? c->memory : "";
}

/* ---- used by lemonpc_say ------------------------------------------------ */

int lm_api_recall(lemonpc_conversation *c, const char *line, char **block, lm_err *e) {
    *block = NULL;
    lemonpc_npc *n = c->npc;
    const lm_lore *lore[2] = {n->ch ? &n->ch->lore : NULL, n->w ? &n->w->lore : NULL};
    bool any_lore = (lore[0] && lore[0]->n) || (lore[1] && lore[1]->n);
    if (!any_lore && !n->world) return 0;
    const char *scan[LM_RECALL_SCAN_TURNS + 1];
    size_t ns = 0;
    for (size_t i = c->turns.n > LM_RECALL_SCAN_TURNS ? c->turns.n - LM_RECALL_SCAN_TURNS : 0; i < c->turns.n; i++)
        scan[ns++] = c->turns.m[i].content;
    scan[ns++] = line;
    /* the player's lines already in this conversation need no recalling */
    const char **skip = malloc((c->turns.n + 1) * sizeof *skip);
    if (!skip) return lm_errf(e, "out of memory");
    size_t n_skip = 0;
    for (size_t i = 0; i < c->turns.n; i++)
        if (!strcmp(c->turns.m[i].role, "user")) skip[n_skip++] = c->turns.m[i].content;
    lm_recall r = {{lore[0], lore[1]}, n->world ? n->world->db : NULL, n->wid,
                   n->world ? n->memory_tokens : LM_RECALL_LORE_BUDGET, 12, skip, n_skip};
    int n_tokens;
    int rc = lm_recall_block(&r, n->model->tok, scan, ns, line, block, &n_tokens, e);
    free(skip);
    return rc;
}

int lm_api_record(lemonpc_conversation *c, const char *line, const char *reply, lm_err *e) {
    lemonpc_npc *n = c->npc;
    if (!n->world || !c->who) return 0;
    lm_memdb *db = n->world->db;
    const char *who = n->wid;
    /* what the player said is a memory of this NPC; the NPC's own reply is
     * kept as a turn only (a small model's words are not facts) */
    lm_memory m = {.kind = LM_MEM_SAID, .text = line, .player = c->who, .importance = 3};
    if (lm_memdb_add(db, &m, &who, 1, true, e) < 0) return -1;
    if (lm_memdb_add_turn(db, who, c->who, "user", line, e)) return -1;
    return lm_memdb_add_turn(db, who, c->who, "assistant", reply, e);
}

/* ---- conversations kept in the world ------------------------------------ */

lemonpc_status lemonpc_world_save_conversation(lemonpc_conversation *c, lemonpc_error *err) {
    if (!c) return lm_api_failf(err, LEMONPC_ERR_INVALID, "lemonpc_world_save_conversation: NULL");
    if (!c->npc->world || !c->who)
        return lm_api_failf(err, LEMONPC_ERR_INVALID, "lemonpc_world_save_conversation: the NPC "
                            "has no world or the conversation no player");
    if (atomic_flag_test_and_set(&c->busy))
        return lm_api_failf(err, LEMONPC_ERR_BUSY, "the conversation is in use by another thread");
    lm_err e = {{0}};
    void *buf = NULL;
    size_t n = 0;
    int rc = lm_api_conv_to_bytes(c, &buf, &n, &e);
    if (rc == 0)
        rc = lm_memdb_put_state(c->npc->world->db, c->npc->wid, c->who, buf, n,
                                (int)c->turns.n, &e);
    free(buf);
    atomic_flag_clear(&c->busy);
    return rc ? fail(err, &e, LEMONPC_ERR_IO) : ok(err);
}

typedef struct rebuild {
    lm_turns *t;
    int rc;
} rebuild;

static int add_turn(void *ud, const char *role, const char *text) {
    rebuild *r = ud;
    if (lm_api_turns_push(r->t, role, text, NULL, 0)) { r->rc = -1; return 1; }
    return 0;
}

lemonpc_conversation *lemonpc_world_load_conversation(lemonpc_npc *npc, const char *player,
                                                      const char *place, lemonpc_error *err) {
    if (!npc || !player)
        return lm_api_failf(err, LEMONPC_ERR_INVALID, "lemonpc_world_load_conversation: %s is "
                            "NULL", !npc ? "the NPC" : "the player"), NULL;
    if (!npc->world)
        return lm_api_failf(err, LEMONPC_ERR_INVALID, "lemonpc_world_load_conversation: the NPC "
                            "has no world (lemonpc_npc_set_world)"), NULL;
    lm_err e = {{0}};
    lemonpc_conversation *c = lm_api_conv_new(npc, player, place, &e);
    if (!c) return fail(err, &e, LEMONPC_ERR_INTERNAL), NULL;
    lm_memdb *db = npc->world->db;
    int n_turns = 0, n_state = 0;
    void *state = NULL;
    size_t n = 0;
    if (!c->who) {
        lemonpc_conversation_close(c);
        return lm_api_failf(err, LEMONPC_ERR_INVALID, "'%s' is not a player name", player), NULL;
    }
    if (lm_memdb_turns(db, npc->wid, c->who, NULL, NULL, &n_turns, &e) ||
        lm_memdb_get_state(db, npc->wid, c->who, &state, &n, &n_state, &e)) {
        lemonpc_conversation_close(c);
        return fail(err, &e, LEMONPC_ERR_IO), NULL;
    }
    if (state && n_state == n_turns) {
        /* the stored state covers every recorded turn: go on from its cache */
        lemonpc_conversation_close(c);
        char name[256];
        snprintf(name, sizeof name, "%s (conversation of %s with %s)",
                 lm_memdb_path(db), npc->wid, player);
        return lm_api_conv_from_bytes(npc, state, n, name, err);
    }
    free(state);
    if (n_turns == 0) {
        lm_api_failf(err, LEMONPC_ERR_NOT_FOUND, "%s: %s has no conversation with %s",
                     lm_memdb_path(db), npc->wid, c->who);
        lemonpc_conversation_close(c);
        return NULL;
    }
    rebuild r = {&c->turns, 0};
    if (lm_memdb_turns(db, npc->wid, c->who, add_turn, &r, &n_turns, &e) || r.rc) {
        lemonpc_conversation_close(c);
        if (r.rc) lm_errf(&e, "out of memory");
        return fail(err, &e, LEMONPC_ERR_IO), NULL;
    }
    ok(err);
    return c;
}
