#include "train/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <math.h>

#include "base/fileio.h"

static int fsync_path(const char *path, lm_err *err) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return lm_errno(err, "%s", path);
    int rc = fsync(fd);
    close(fd);
    /* Some file systems refuse fsync on directories (EINVAL): nothing to flush then. */
    if (rc && errno != EINVAL) return lm_errno(err, "%s: fsync", path);
    return 0;
}

/* Removes a directory of plain files (what a checkpoint is). */
static void rm_flat(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[LM_TCFG_PATH + 300];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
    closedir(d);
    rmdir(dir);
}

static int write_file(const char *path, const void *a, size_t na, const void *b, size_t nb,
                      const void *c, size_t nc, lm_err *err) {
    FILE *f = fopen(path, "wb");
    if (!f) return lm_errno(err, "%s", path);
    int ok = fwrite(a, 1, na, f) == na && (!nb || fwrite(b, 1, nb, f) == nb) &&
             (!nc || fwrite(c, 1, nc, f) == nc) && fflush(f) == 0 && fsync(fileno(f)) == 0;
    int e = errno;
    if (fclose(f)) ok = 0;
    if (!ok) { errno = e; return lm_errno(err, "%s: write", path); }
    return 0;
}

static int write_optim(const char *path, const lm_adamw *o, lm_err *err) {
    unsigned char hdr[24];
    uint64_t n = o->n;
    int64_t step = o->step;
    memcpy(hdr, "LMADAMW1", 8);
    memcpy(hdr + 8, &n, 8);
    memcpy(hdr + 16, &step, 8);
    return write_file(path, hdr, sizeof hdr, o->m, o->n * sizeof(float), o->v, o->n * sizeof(float), err);
}

int lm_ckpt_parse_optim(const char *path, const void *bytes, size_t len, lm_adamw *o, lm_err *err) {
    const unsigned char *d = bytes;
    uint64_t n;
    int64_t step;
    if (len < 24 || memcmp(d, "LMADAMW1", 8))
        return lm_errf(err, "%s: not an optimizer state file (bad header)", path);
    memcpy(&n, d + 8, 8);
    memcpy(&step, d + 16, 8);
    if (n != o->n)
        return lm_errf(err, "%s: holds %llu parameters, the run has %zu", path, (unsigned long long)n, o->n);
    if (step < 0) return lm_errf(err, "%s: offset 16: negative step %lld", path, (long long)step);
    size_t want = 24 + 2 * o->n * sizeof(float);
    if (len < want) return lm_errf(err, "%s: truncated (expected %zu bytes)", path, want);
    if (len > want) return lm_errf(err, "%s: trailing bytes after the moments", path);
    memcpy(o->m, d + 24, o->n * sizeof(float));
    memcpy(o->v, d + 24 + o->n * sizeof(float), o->n * sizeof(float));
    o->step = (long)step;
    return 0;
}

static int read_optim(const char *path, lm_adamw *o, lm_err *err) {
    char *data;
    size_t len;
    if (lm_read_file(path, &data, &len, false, err)) return -1;
    int rc = lm_ckpt_parse_optim(path, data, len, o, err);
    free(data);
    return rc;
}

static char *state_json(const lm_train_cfg *cfg, const lm_ckpt_state *st) {
    char *cs = lm_train_cfg_to_json(cfg);
    json_t *c = cs ? json_loads(cs, 0, NULL) : NULL;
    free(cs);
    if (!c) return NULL;
    json_t *o = json_pack("{s:i, s:I, s:I, s:I, s:f, s:f, s:f, s:I, s:I, s:o}",
                          "version", 1, "step", (json_int_t)st->step, "micro", (json_int_t)st->micro,
                          "tokens", (json_int_t)st->tokens, "seconds", st->seconds,
                          "smooth", st->smooth, "best_val", st->best_val,
                          "best_step", (json_int_t)st->best_step,
                          "metrics_bytes", (json_int_t)st->metrics_bytes, "config", c);
    if (!o) return NULL;
    char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    json_decref(o);
    return s;
}

int lm_ckpt_save(const char *run_dir, const char *name, const lm_train_cfg *cfg,
                 const lm_ckpt_state *st, const lm_tmodel *m, const lm_lora *lora,
                 const lm_adamw *opt, lm_err *err) {
    char tmp[LM_TCFG_PATH + 64], dst[LM_TCFG_PATH + 64], old[LM_TCFG_PATH + 64], p[LM_TCFG_PATH + 96];
    snprintf(dst, sizeof dst, "%s/%s", run_dir, name);
    snprintf(old, sizeof old, "%s/%s.old", run_dir, name);
    /* Leftovers of an interrupted save are garbage by construction. */
    DIR *d = opendir(run_dir);
    if (!d) return lm_errno(err, "%s", run_dir);
    struct dirent *e;
    char pre[80];
    snprintf(pre, sizeof pre, ".%s.tmp-", name);
    while ((e = readdir(d)))
        if (!strncmp(e->d_name, pre, strlen(pre))) {
            snprintf(p, sizeof p, "%s/%s", run_dir, e->d_name);
            rm_flat(p);
        }
    closedir(d);
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp-XXXXXX", run_dir, name);
    if (!mkdtemp(tmp)) return lm_errno(err, "%s", tmp);

    snprintf(p, sizeof p, "%s/%s", tmp, lora ? "adapter.gguf" : "model.gguf");
    if (lora ? lm_lora_save(lora, p, err) : lm_tmodel_save(m, p, cfg->model, err)) goto fail;
    if (fsync_path(p, err)) goto fail;
    snprintf(p, sizeof p, "%s/optim.bin", tmp);
    if (write_optim(p, opt, err)) goto fail;
    char *js = state_json(cfg, st);
    if (!js) { lm_errf(err, "%s: out of memory", dst); goto fail; }
    snprintf(p, sizeof p, "%s/state.json", tmp);
    int wr = write_file(p, js, strlen(js), "\n", 1, NULL, 0, err);
    free(js);
    if (wr || fsync_path(tmp, err)) goto fail;

    struct stat sb;
    if (stat(dst, &sb) == 0) {
        if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dst, RENAME_EXCHANGE) == 0) {
            rm_flat(tmp);   /* now holds the previous checkpoint */
        } else {
            rm_flat(old);
            if (rename(dst, old)) { lm_errno(err, "%s -> %s", dst, old); goto fail; }
            if (rename(tmp, dst)) { lm_errno(err, "%s -> %s", tmp, dst); goto fail; }
            rm_flat(old);
        }
    } else if (rename(tmp, dst)) {
        lm_errno(err, "%s -> %s", tmp, dst);
        goto fail;
    }
    return fsync_path(run_dir, err);
fail:
    rm_flat(tmp);
    return lm_err_prefix(err, "checkpoint %s", dst);
}

int lm_ckpt_find(const char *run_dir, const char *name, char *dir, size_t cap, lm_err *err) {
    struct stat sb;
    char p[LM_TCFG_PATH + 96];
    const char *sfx[2] = {"", ".old"};
    for (int i = 0; i < 2; i++) {
        snprintf(dir, cap, "%s/%s%s", run_dir, name, sfx[i]);
        snprintf(p, sizeof p, "%s/state.json", dir);
        if (stat(p, &sb) == 0) return 0;
    }
    return lm_errf(err, "%s/%s: no checkpoint (no state.json)", run_dir, name);
}

static int get_num(json_t *o, const char *key, double *out, const char *path, lm_err *err) {
    json_t *v = json_object_get(o, key);
    if (!json_is_number(v)) return lm_errf(err, "%s: %s: missing or not a number", path, key);
    *out = json_number_value(v);
    return 0;
}

/* A count or position: a whole number a long holds exactly (a double
 * beyond LONG_MAX would not convert, one past 2^53 not round-trip). */
static int get_count(json_t *o, const char *key, long *out, const char *path, lm_err *err) {
    double x = 0;
    if (get_num(o, key, &x, path, err)) return -1;
    if (!(x >= 0 && x <= 9007199254740992.0) || x != floor(x))
        return lm_errf(err, "%s: %s: %g is not a whole number in [0, 2^53]", path, key, x);
    *out = (long)x;
    return 0;
}

int lm_ckpt_parse_state(const char *path, const char *text, size_t len, lm_train_cfg *cfg,
                        lm_ckpt_state *st, lm_err *err) {
    json_error_t je;
    json_t *o = json_loadb(text, len, 0, &je);
    if (!o) return lm_errf(err, "%s:%d:%d: %s", path, je.line, je.column, je.text);
    int rc = -1;
    memset(st, 0, sizeof *st);
    if (get_count(o, "step", &st->step, path, err) || get_count(o, "micro", &st->micro, path, err) ||
        get_count(o, "tokens", &st->tokens, path, err) ||
        get_num(o, "seconds", &st->seconds, path, err) || get_num(o, "smooth", &st->smooth, path, err) ||
        get_num(o, "best_val", &st->best_val, path, err) ||
        get_count(o, "best_step", &st->best_step, path, err) ||
        get_count(o, "metrics_bytes", &st->metrics_bytes, path, err))
        goto done;
    json_t *c = json_object_get(o, "config");
    if (!json_is_object(c)) { lm_errf(err, "%s: config: missing", path); goto done; }
    char *cs = json_dumps(c, JSON_REAL_PRECISION(17));
    if (!cs) { lm_errf(err, "%s: out of memory", path); goto done; }
    lm_train_cfg_defaults(cfg);
    char name[LM_TCFG_PATH + 110];
    snprintf(name, sizeof name, "%s: config", path);
    rc = lm_train_cfg_parse_json(cfg, name, cs, err);
    free(cs);
done:
    json_decref(o);
    return rc;
}

int lm_ckpt_load_state(const char *dir, lm_train_cfg *cfg, lm_ckpt_state *st, lm_err *err) {
    char path[LM_TCFG_PATH + 96];
    snprintf(path, sizeof path, "%s/state.json", dir);
    char *text;
    size_t len;
    if (lm_read_file(path, &text, &len, false, err)) return -1;
    int rc = lm_ckpt_parse_state(path, text, len, cfg, st, err);
    free(text);
    return rc;
}

int lm_ckpt_load_weights(const char *dir, int full, lm_tmodel *m, lm_lora **lora, lm_err *err) {
    char p[LM_TCFG_PATH + 96];
    if (full) {
        snprintf(p, sizeof p, "%s/model.gguf", dir);
        lm_tmodel *c = lm_tmodel_load(p, err);
        if (!c) return -1;
        int same = c->n_params == m->n_params && c->n_tensors == m->n_tensors;
        for (int i = 0; same && i < c->n_tensors; i++)
            same = !strcmp(c->tensors[i].name, m->tensors[i].name) &&
                   c->tensors[i].offset == m->tensors[i].offset && c->tensors[i].numel == m->tensors[i].numel;
        if (same) memcpy(m->params, c->params, m->n_params * sizeof(float));
        lm_tmodel_free(c);
        if (!same) return lm_errf(err, "%s: tensors differ from the base model's", p);
    } else {
        snprintf(p, sizeof p, "%s/adapter.gguf", dir);
        *lora = lm_lora_load(m, p, err);
        if (!*lora) return -1;
    }
    return 0;
}

int lm_ckpt_load_optim(const char *dir, lm_adamw *opt, lm_err *err) {
    char p[LM_TCFG_PATH + 96];
    snprintf(p, sizeof p, "%s/optim.bin", dir);
    return read_optim(p, opt, err);
}
