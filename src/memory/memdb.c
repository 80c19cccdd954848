#include "memory/memdb.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/strbuf.h"

#define SCHEMA_VERSION "1"

/* Recency: generative agents' 0.995 per game hour (a day: 0.89; a week: 0.43). */
#define RECENCY_PER_HOUR 0.995

struct lm_memdb {
    sqlite3 *db;
    char *path;
    double now;              /* the game clock, hours */
    pthread_mutex_t mu;      /* one operation at a time: calls come from many threads */
};

static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS memories("
    "  id INTEGER PRIMARY KEY, kind INTEGER NOT NULL, text TEXT NOT NULL, place TEXT,"
    "  player TEXT, time REAL NOT NULL, importance INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS knows("
    "  npc TEXT NOT NULL, memory INTEGER NOT NULL REFERENCES memories(id) ON DELETE CASCADE,"
    "  witnessed INTEGER NOT NULL, PRIMARY KEY(npc, memory)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS knows_memory ON knows(memory);"
    "CREATE VIRTUAL TABLE IF NOT EXISTS memories_fts USING fts5("
    "  text, content='memories', content_rowid='id', tokenize='porter unicode61');"
    "CREATE TRIGGER IF NOT EXISTS memories_ai AFTER INSERT ON memories BEGIN"
    "  INSERT INTO memories_fts(rowid, text) VALUES (new.id, new.text); END;"
    "CREATE TRIGGER IF NOT EXISTS memories_ad AFTER DELETE ON memories BEGIN"
    "  INSERT INTO memories_fts(memories_fts, rowid, text) VALUES('delete', old.id, old.text); END;"
    "CREATE TABLE IF NOT EXISTS turns("
    "  id INTEGER PRIMARY KEY, npc TEXT NOT NULL, player TEXT NOT NULL, role TEXT NOT NULL,"
    "  text TEXT NOT NULL, time REAL NOT NULL);"
    "CREATE INDEX IF NOT EXISTS turns_pair ON turns(npc, player, id);"
    "CREATE TABLE IF NOT EXISTS convs("
    "  npc TEXT NOT NULL, player TEXT NOT NULL, n_turns INTEGER NOT NULL, state BLOB NOT NULL,"
    "  PRIMARY KEY(npc, player));";

static int db_err(lm_memdb *m, lm_err *err, const char *what) {
    return lm_errf(err, "%s: %s: %s", m->path, what, sqlite3_errmsg(m->db));
}

static int exec(lm_memdb *m, const char *sql, lm_err *err) {
    char *msg = NULL;
    if (sqlite3_exec(m->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        lm_errf(err, "%s: %s", m->path, msg ? msg : sqlite3_errmsg(m->db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static sqlite3_stmt *prep(lm_memdb *m, const char *sql, lm_err *err) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(m->db, sql, -1, &st, NULL) != SQLITE_OK) {
        db_err(m, err, "prepare");
        return NULL;
    }
    return st;
}

static void bind_text(sqlite3_stmt *st, int i, const char *s) {
    if (s) sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
    else sqlite3_bind_null(st, i);
}

static const char *col_text(sqlite3_stmt *st, int i) {
    return (const char *)sqlite3_column_text(st, i);
}

/* Runs a statement that returns no rows. */
static int step_done(lm_memdb *m, sqlite3_stmt *st, lm_err *err) {
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : db_err(m, err, "write");
}

void lm_memdb_close(lm_memdb *m) {
    if (!m) return;
    sqlite3_close(m->db);
    pthread_mutex_destroy(&m->mu);
    free(m->path);
    free(m);
}

const char *lm_memdb_path(const lm_memdb *m) { return m->path; }

/* A file that exists and has content must be a world we wrote, whole. */
static int check_existing(lm_memdb *m, lm_err *err) {
    sqlite3_stmt *st = prep(m, "PRAGMA quick_check", err);
    if (!st) return lm_err_prefix(err, "not a LeMoNPC world file, or damaged");
    int rc = sqlite3_step(st);
    const char *res = rc == SQLITE_ROW ? col_text(st, 0) : NULL;
    int bad = !res || strcmp(res, "ok") != 0;
    if (bad) lm_errf(err, "%s: damaged world file (%s)", m->path,
                     res ? res : sqlite3_errmsg(m->db));
    sqlite3_finalize(st);
    if (bad) return -1;
    st = prep(m, "SELECT count(*) FROM sqlite_master", err);
    if (!st) return -1;
    int n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
    sqlite3_finalize(st);
    if (n <= 0) return 0;   /* an empty database: a new world */
    st = prep(m, "SELECT value FROM meta WHERE key = 'lemonpc.world'", NULL);
    const char *v = st && sqlite3_step(st) == SQLITE_ROW ? col_text(st, 0) : NULL;
    int ok = v && !strcmp(v, SCHEMA_VERSION);
    if (!ok) lm_errf(err, "%s: %s", m->path, v ? "a LeMoNPC world of another schema version"
                                               : "an SQLite file, but not a LeMoNPC world");
    sqlite3_finalize(st);
    return ok ? 0 : -1;
}

lm_memdb *lm_memdb_open(const char *path, lm_err *err) {
    lm_memdb *m = calloc(1, sizeof *m);
    if (!m || !(m->path = strdup(path))) {
        free(m);
        return lm_errf(err, "out of memory"), NULL;
    }
    pthread_mutex_init(&m->mu, NULL);
    if (sqlite3_open_v2(path, &m->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                        SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        lm_errf(err, "%s: cannot open: %s", path, m->db ? sqlite3_errmsg(m->db) : "out of memory");
        lm_memdb_close(m);
        return NULL;
    }
    sqlite3_busy_timeout(m->db, 5000);
    if (check_existing(m, err) ||
        exec(m, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
             err) ||
        exec(m, "BEGIN", err) || exec(m, SCHEMA, err) ||
        exec(m, "INSERT OR IGNORE INTO meta VALUES ('lemonpc.world', '" SCHEMA_VERSION "');"
                "INSERT OR IGNORE INTO meta VALUES ('clock', '0');", err) ||
        exec(m, "COMMIT", err)) {
        lm_memdb_close(m);
        return NULL;
    }
    sqlite3_stmt *st = prep(m, "SELECT value FROM meta WHERE key = 'clock'", err);
    if (st && sqlite3_step(st) == SQLITE_ROW) m->now = sqlite3_column_double(st, 0);
    sqlite3_finalize(st);
    return m;
}

double lm_memdb_time(lm_memdb *m) {
    pthread_mutex_lock(&m->mu);
    double t = m->now;
    pthread_mutex_unlock(&m->mu);
    return t;
}

int lm_memdb_set_time(lm_memdb *m, double hours, lm_err *err) {
    if (!isfinite(hours)) return lm_errf(err, "game time must be a finite number of hours");
    pthread_mutex_lock(&m->mu);
    int rc = -1;
    sqlite3_stmt *st = prep(m, "UPDATE meta SET value = ?1 WHERE key = 'clock'", err);
    if (st) {
        sqlite3_bind_double(st, 1, hours);
        rc = step_done(m, st, err);
    }
    if (rc == 0) m->now = hours;
    pthread_mutex_unlock(&m->mu);
    return rc;
}

static int add_knower(lm_memdb *m, int64_t id, const char *npc, bool witnessed, lm_err *err) {
    sqlite3_stmt *st = prep(m, "INSERT OR IGNORE INTO knows VALUES (?1, ?2, ?3)", err);
    if (!st) return -1;
    bind_text(st, 1, npc);
    sqlite3_bind_int64(st, 2, id);
    sqlite3_bind_int(st, 3, witnessed);
    return step_done(m, st, err);
}

int64_t lm_memdb_add(lm_memdb *m, const lm_memory *mem, const char *const *knowers, size_t n,
                     bool witnessed, lm_err *err) {
    if (!mem->text || !mem->text[0]) return lm_errf(err, "a memory needs a text"), -1;
    if (mem->importance < 1 || mem->importance > 10)
        return lm_errf(err, "importance %d is outside 1..10", mem->importance), -1;
    for (size_t i = 0; i < n; i++)
        if (!knowers[i] || !knowers[i][0]) return lm_errf(err, "witness %zu has no name", i), -1;
    pthread_mutex_lock(&m->mu);
    int64_t id = -1;
    if (exec(m, "BEGIN", err)) goto out;
    sqlite3_stmt *st = prep(m, "INSERT INTO memories(kind, text, place, player, time, importance)"
                               " VALUES (?1, ?2, ?3, ?4, ?5, ?6)", err);
    if (!st) goto rollback;
    sqlite3_bind_int(st, 1, (int)mem->kind);
    bind_text(st, 2, mem->text);
    bind_text(st, 3, mem->place);
    bind_text(st, 4, mem->player);
    sqlite3_bind_double(st, 5, m->now);
    sqlite3_bind_int(st, 6, mem->importance);
    if (step_done(m, st, err)) goto rollback;
    id = sqlite3_last_insert_rowid(m->db);
    for (size_t i = 0; i < n; i++)
        if (add_knower(m, id, knowers[i], witnessed, err)) goto rollback;
    if (exec(m, "COMMIT", err)) goto rollback;
    goto out;
rollback:
    id = -1;
    exec(m, "ROLLBACK", NULL);
out:
    pthread_mutex_unlock(&m->mu);
    return id;
}

int lm_memdb_tell(lm_memdb *m, int64_t id, const char *npc, lm_err *err) {
    if (!npc || !npc[0]) return lm_errf(err, "tell: no NPC name");
    pthread_mutex_lock(&m->mu);
    int rc = -1;
    sqlite3_stmt *st = prep(m, "SELECT 1 FROM memories WHERE id = ?1", err);
    if (st) {
        sqlite3_bind_int64(st, 1, id);
        int found = sqlite3_step(st) == SQLITE_ROW;
        sqlite3_finalize(st);
        rc = found ? add_knower(m, id, npc, false, err)
                   : lm_errf(err, "%s: no event or memory with id %lld", m->path, (long long)id);
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

/* ---- recall ---------------------------------------------------------- */

typedef struct cand {
    lm_memory m;
    char *text, *place, *player;
    double rank;             /* bm25 (lower is better), 0 when not matched */
    double score;
} cand;

typedef struct cands {
    cand *v;
    size_t n, cap;
} cands;

static void cands_free(cands *c) {
    for (size_t i = 0; i < c->n; i++) {
        free(c->v[i].text);
        free(c->v[i].place);
        free(c->v[i].player);
    }
    free(c->v);
}

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

/* Reads rows (id, kind, text, place, player, time, importance, witnessed,
 * rank) into c, skipping ids already there. */
static int collect(lm_memdb *m, sqlite3_stmt *st, cands *c, lm_err *err) {
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(st, 0);
        bool seen = false;
        for (size_t i = 0; i < c->n && !seen; i++) seen = c->v[i].m.id == id;
        if (seen) continue;
        if (c->n == c->cap) {
            size_t cap = c->cap ? c->cap * 2 : 64;
            cand *q = realloc(c->v, cap * sizeof *q);
            if (!q) return lm_errf(err, "out of memory");
            c->v = q;
            c->cap = cap;
        }
        cand *x = &c->v[c->n];
        memset(x, 0, sizeof *x);
        x->text = dup_or_null(col_text(st, 2));
        x->place = dup_or_null(col_text(st, 3));
        x->player = dup_or_null(col_text(st, 4));
        if (!x->text) { free(x->place); free(x->player); return lm_errf(err, "out of memory"); }
        x->m = (lm_memory){id, (lm_mem_kind)sqlite3_column_int(st, 1), x->text, x->place,
                           x->player, sqlite3_column_double(st, 5), sqlite3_column_int(st, 6),
                           sqlite3_column_int(st, 7) != 0};
        x->rank = sqlite3_column_double(st, 8);
        c->n++;
    }
    return rc == SQLITE_DONE ? 0 : db_err(m, err, "read");
}

/* Words that would match nearly every memory. */
static bool stopword(const char *w) {
    static const char *const sw[] = {
        "a", "an", "and", "are", "as", "at", "be", "but", "by", "can", "could", "did", "do",
        "does", "for", "from", "had", "has", "have", "he", "her", "him", "his", "how", "i",
        "if", "in", "is", "it", "its", "me", "my", "no", "not", "of", "on", "or", "our", "she",
        "so", "that", "the", "their", "them", "then", "there", "they", "this", "to", "was",
        "we", "were", "what", "when", "where", "which", "who", "why", "will", "with", "would",
        "you", "your", "yes", "am", "about", "tell", "know", "any", "all"};
    for (size_t i = 0; i < sizeof sw / sizeof sw[0]; i++)
        if (!strcmp(w, sw[i])) return true;
    return false;
}

/* The FTS5 query for free text: its words (letters, digits, any non-ASCII
 * byte), quoted, joined by OR; "" when none is left. */
static char *fts_query(const char *q) {
    lm_sb b = {0};
    int n = 0;
    for (const char *p = q; p && *p && n < 24;) {
        while (*p && !(isalnum((unsigned char)*p) || (unsigned char)*p >= 0x80)) p++;
        const char *s = p;
        while (*p && (isalnum((unsigned char)*p) || (unsigned char)*p >= 0x80)) p++;
        size_t k = (size_t)(p - s);
        if (k < 2 || k > 40) continue;
        char w[41];
        for (size_t i = 0; i < k; i++) w[i] = (char)tolower((unsigned char)s[i]);
        w[k] = '\0';
        if (stopword(w)) continue;
        lm_sb_printf(&b, "%s\"%s\"", n ? " OR " : "", w);
        n++;
    }
    if (!n) lm_sb_str(&b, "");
    return lm_sb_take(&b);
}

static int by_score(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->score != y->score) return x->score < y->score ? 1 : -1;
    return x->m.id < y->m.id ? 1 : -1;   /* newer first on ties */
}

#define COLS "m.id, m.kind, m.text, m.place, m.player, m.time, m.importance, k.witnessed"

int lm_memdb_recall(lm_memdb *m, const char *npc, const char *query, int limit, lm_memory_fn fn,
                    void *ud, lm_err *err) {
    if (limit <= 0) return 0;
    char *q = fts_query(query);
    if (!q) return lm_errf(err, "out of memory");
    cands c = {0};
    pthread_mutex_lock(&m->mu);
    int rc = 0;
    double now = m->now;
    if (q[0]) {
        sqlite3_stmt *st = prep(m, "SELECT " COLS ", bm25(memories_fts) FROM memories_fts"
                                   " JOIN memories m ON m.id = memories_fts.rowid"
                                   " JOIN knows k ON k.memory = m.id AND k.npc = ?1"
                                   " WHERE memories_fts MATCH ?2 ORDER BY 9 LIMIT 64", err);
        rc = st ? 0 : -1;
        if (st) {
            bind_text(st, 1, npc);
            bind_text(st, 2, q);
            rc = collect(m, st, &c, err);
            sqlite3_finalize(st);
        }
    }
    if (rc == 0) {
        /* recent and important ones compete too, matched or not */
        sqlite3_stmt *st = prep(m, "SELECT " COLS ", 0 FROM memories m"
                                   " JOIN knows k ON k.memory = m.id AND k.npc = ?1"
                                   " ORDER BY m.time DESC, m.id DESC LIMIT 32", err);
        rc = st ? 0 : -1;
        if (st) {
            bind_text(st, 1, npc);
            rc = collect(m, st, &c, err);
            sqlite3_finalize(st);
        }
    }
    pthread_mutex_unlock(&m->mu);
    free(q);
    if (rc == 0) {
        double best = 0;
        for (size_t i = 0; i < c.n; i++) best = c.v[i].rank < best ? c.v[i].rank : best;
        for (size_t i = 0; i < c.n; i++) {
            cand *x = &c.v[i];
            double age = now - x->m.time;
            double rel = best < 0 ? x->rank / best : 0;
            x->score = rel + pow(RECENCY_PER_HOUR, age > 0 ? age : 0) + x->m.importance / 10.0;
        }
        if (c.n) qsort(c.v, c.n, sizeof *c.v, by_score);
        for (size_t i = 0; i < c.n && (int)i < limit; i++)
            if (fn(ud, &c.v[i].m, c.v[i].score)) break;
    }
    cands_free(&c);
    return rc;
}

int lm_memdb_list(lm_memdb *m, const char *npc, const char *player, lm_memory_fn fn, void *ud,
                  lm_err *err) {
    cands c = {0};
    pthread_mutex_lock(&m->mu);
    sqlite3_stmt *st = prep(m, "SELECT " COLS ", 0 FROM memories m"
                               " JOIN knows k ON k.memory = m.id AND k.npc = ?1"
                               " WHERE ?2 IS NULL OR m.player = ?2 ORDER BY m.time, m.id", err);
    int rc = st ? 0 : -1;
    if (st) {
        bind_text(st, 1, npc);
        bind_text(st, 2, player);
        rc = collect(m, st, &c, err);
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&m->mu);
    for (size_t i = 0; rc == 0 && i < c.n; i++)
        if (fn(ud, &c.v[i].m, 0)) break;
    cands_free(&c);
    return rc;
}

int lm_memdb_forget(lm_memdb *m, const char *npc, const char *player, int *n_forgotten,
                    lm_err *err) {
    *n_forgotten = 0;
    if (!npc || !player) return lm_errf(err, "forget: give the NPC and the player");
    pthread_mutex_lock(&m->mu);
    int rc = exec(m, "BEGIN", err);
    sqlite3_stmt *st = rc ? NULL : prep(m, "DELETE FROM knows WHERE npc = ?1 AND memory IN"
                                           " (SELECT id FROM memories WHERE player = ?2)", err);
    if (!rc && !st) rc = -1;
    if (st) {
        bind_text(st, 1, npc);
        bind_text(st, 2, player);
        rc = step_done(m, st, err);
        if (rc == 0) *n_forgotten = sqlite3_changes(m->db);
    }
    /* what nobody knows any more is gone; so are the pair's turns and state */
    const char *const cleanup[] = {
        "DELETE FROM memories WHERE player = ?2 AND id NOT IN (SELECT memory FROM knows)",
        "DELETE FROM turns WHERE npc = ?1 AND player = ?2",
        "DELETE FROM convs WHERE npc = ?1 AND player = ?2"};
    for (size_t i = 0; rc == 0 && i < 3; i++) {
        st = prep(m, cleanup[i], err);
        if (!st) { rc = -1; break; }
        bind_text(st, 1, npc);
        bind_text(st, 2, player);
        rc = step_done(m, st, err);
    }
    if (rc == 0) rc = exec(m, "COMMIT", err);
    if (rc) exec(m, "ROLLBACK", NULL);
    pthread_mutex_unlock(&m->mu);
    return rc;
}

/* ---- conversations ---------------------------------------------------- */

int lm_memdb_add_turn(lm_memdb *m, const char *npc, const char *player, const char *role,
                      const char *text, lm_err *err) {
    pthread_mutex_lock(&m->mu);
    sqlite3_stmt *st = prep(m, "INSERT INTO turns(npc, player, role, text, time)"
                               " VALUES (?1, ?2, ?3, ?4, ?5)", err);
    int rc = -1;
    if (st) {
        bind_text(st, 1, npc);
        bind_text(st, 2, player);
        bind_text(st, 3, role);
        bind_text(st, 4, text);
        sqlite3_bind_double(st, 5, m->now);
        rc = step_done(m, st, err);
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

int lm_memdb_turns(lm_memdb *m, const char *npc, const char *player, lm_turn_fn fn, void *ud,
                   int *n, lm_err *err) {
    *n = 0;
    pthread_mutex_lock(&m->mu);
    sqlite3_stmt *st = prep(m, "SELECT role, text FROM turns WHERE npc = ?1 AND player = ?2"
                               " ORDER BY id", err);
    int rc = st ? 0 : -1;
    if (st) {
        bind_text(st, 1, npc);
        bind_text(st, 2, player);
        int s;
        while ((s = sqlite3_step(st)) == SQLITE_ROW) {
            (*n)++;
            if (fn && fn(ud, col_text(st, 0), col_text(st, 1))) { rc = -1; break; }
        }
        if (rc == 0 && s != SQLITE_DONE) rc = db_err(m, err, "read");
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

int lm_memdb_put_state(lm_memdb *m, const char *npc, const char *player, const void *state,
                       size_t n, int n_turns, lm_err *err) {
    pthread_mutex_lock(&m->mu);
    sqlite3_stmt *st = prep(m, "INSERT OR REPLACE INTO convs VALUES (?1, ?2, ?3, ?4)", err);
    int rc = -1;
    if (st) {
        bind_text(st, 1, npc);
        bind_text(st, 2, player);
        sqlite3_bind_int(st, 3, n_turns);
        sqlite3_bind_blob64(st, 4, state, (sqlite3_uint64)n, SQLITE_STATIC);
        rc = step_done(m, st, err);
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

int lm_memdb_get_state(lm_memdb *m, const char *npc, const char *player, void **state,
                       size_t *n, int *n_turns, lm_err *err) {
    *state = NULL;
    *n = 0;
    *n_turns = 0;
    pthread_mutex_lock(&m->mu);
    sqlite3_stmt *st = prep(m, "SELECT n_turns, state FROM convs WHERE npc = ?1 AND player = ?2",
                            err);
    int rc = st ? 0 : -1;
    if (st) {
        bind_text(st, 1, npc);
        bind_text(st, 2, player);
        int s = sqlite3_step(st);
        if (s == SQLITE_ROW) {
            size_t k = (size_t)sqlite3_column_bytes(st, 1);
            const void *p = sqlite3_column_blob(st, 1);
            *state = malloc(k ? k : 1);
            if (!*state) rc = lm_errf(err, "out of memory");
            else {
                if (k) memcpy(*state, p, k);
                *n = k;
                *n_turns = sqlite3_column_int(st, 0);
            }
        } else if (s != SQLITE_DONE) {
            rc = db_err(m, err, "read");
        }
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

/* ---- save as ------------------------------------------------------------ */

int lm_memdb_save_as(lm_memdb *m, const char *path, lm_err *err) {
    size_t n = strlen(path);
    char *tmp = malloc(n + 16);
    if (!tmp) return lm_errf(err, "out of memory");
    snprintf(tmp, n + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        free(tmp);
        return lm_errno(err, "%s: cannot create a temporary file", path);
    }
    close(fd);
    sqlite3 *dst = NULL;
    int rc = -1;
    if (sqlite3_open_v2(tmp, &dst, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        lm_errf(err, "%s: %s", tmp, dst ? sqlite3_errmsg(dst) : "out of memory");
        goto done;
    }
    pthread_mutex_lock(&m->mu);
    sqlite3_backup *b = sqlite3_backup_init(dst, "main", m->db, "main");
    int s = b ? sqlite3_backup_step(b, -1) : SQLITE_ERROR;
    if (b) sqlite3_backup_finish(b);
    pthread_mutex_unlock(&m->mu);
    if (s != SQLITE_DONE) {
        lm_errf(err, "%s: copying the world failed: %s", path, sqlite3_errmsg(dst));
        goto done;
    }
    /* one file, no WAL beside it: a save the game can copy around */
    char *msg = NULL;
    if (sqlite3_exec(dst, "PRAGMA journal_mode=DELETE", NULL, NULL, &msg) != SQLITE_OK) {
        lm_errf(err, "%s: %s", path, msg ? msg : "journal mode");
        sqlite3_free(msg);
        goto done;
    }
    sqlite3_close(dst);
    dst = NULL;
    fd = open(tmp, O_RDONLY);
    if (fd < 0 || fsync(fd)) {
        lm_errno(err, "%s: sync", tmp);
        if (fd >= 0) close(fd);
        goto done;
    }
    close(fd);
    if (rename(tmp, path)) {
        lm_errno(err, "rename to %s", path);
        goto done;
    }
    rc = 0;
done:
    sqlite3_close(dst);
    if (rc) unlink(tmp);
    free(tmp);
    return rc;
}

/* A one-value query on a connection that is not an lm_memdb (the save). */
static char *query_text(sqlite3 *db, const char *sql) {
    sqlite3_stmt *st = NULL;
    char *v = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW &&
        sqlite3_column_text(st, 0))
        v = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return v;
}

int lm_memdb_load(lm_memdb *m, const char *path, lm_err *err) {
    struct stat sb;
    if (stat(path, &sb)) {
        int missing = errno == ENOENT || errno == ENOTDIR;
        lm_errno(err, "%s", path);
        return missing ? LM_MEMDB_MISSING : -1;
    }
    /* an empty file would open as a new, empty world: a save never is one */
    if (!S_ISREG(sb.st_mode) || sb.st_size == 0)
        return lm_errf(err, "%s: %s, not a LeMoNPC world", path,
                       S_ISREG(sb.st_mode) ? "an empty file" : "not a file"),
               LM_MEMDB_NOT_A_WORLD;
    sqlite3 *src = NULL;
    if (sqlite3_open_v2(path, &src, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        lm_errf(err, "%s: cannot open: %s", path, src ? sqlite3_errmsg(src) : "out of memory");
        sqlite3_close(src);
        return -1;
    }
    int rc = LM_MEMDB_NOT_A_WORLD;
    char *check = NULL, *version = NULL, *tables = NULL, *clock = NULL;
    /* one read transaction: what is checked is what is copied, even if the
     * file is replaced meanwhile */
    if (sqlite3_exec(src, "BEGIN", NULL, NULL, NULL) != SQLITE_OK ||
        !(check = query_text(src, "PRAGMA quick_check")) || strcmp(check, "ok")) {
        lm_errf(err, "%s: damaged, or not a LeMoNPC world (%s)", path,
                check ? check : sqlite3_errmsg(src));
        goto done;
    }
    version = query_text(src, "SELECT value FROM meta WHERE key = 'lemonpc.world'");
    tables = query_text(src, "SELECT count(*) FROM sqlite_master WHERE name IN "
                             "('meta', 'memories', 'knows', 'memories_fts', 'turns', 'convs')");
    clock = query_text(src, "SELECT value FROM meta WHERE key = 'clock'");
    if (!version || strcmp(version, SCHEMA_VERSION) || !tables || strcmp(tables, "6") || !clock) {
        lm_errf(err, "%s: %s", path, version && strcmp(version, SCHEMA_VERSION)
                                         ? "a LeMoNPC world of another schema version"
                                         : "an SQLite file, but not a LeMoNPC world");
        goto done;
    }
    pthread_mutex_lock(&m->mu);
    sqlite3_backup *b = sqlite3_backup_init(m->db, "main", src, "main");
    int s = b ? sqlite3_backup_step(b, -1) : SQLITE_ERROR;
    if (b) sqlite3_backup_finish(b);
    if (s == SQLITE_DONE) {
        m->now = strtod(clock, NULL);
        rc = 0;
    } else {
        lm_errf(err, "%s: loading into %s failed: %s", path, m->path, sqlite3_errmsg(m->db));
        rc = -1;
    }
    pthread_mutex_unlock(&m->mu);
done:
    free(check);
    free(version);
    free(tables);
    free(clock);
    sqlite3_exec(src, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(src);
    return rc;
}
