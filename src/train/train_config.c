#include "train/train_config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/fileio.h"
#include "train/lora.h"

void lm_train_cfg_defaults(lm_train_cfg *c) {
    memset(c, 0, sizeof *c);
    c->val_frac = 0.0;
    c->full = 0;
    c->lora_rank = 8;
    c->lora_alpha = 16.0f;
    c->lora_dropout = 0.0f;
    c->lora_targets = LM_LORA_ALL;
    c->lr = 0.0f;            /* recipe default, resolved in finish */
    c->epochs = 3;
    c->batch = 8;
    c->seq = 256;
    c->grad_accum = 1;
    c->warmup = 0.1f;
    c->schedule = LM_LR_COSINE;
    c->weight_decay = 0.0f;
    c->clip = 1.0f;
    c->eval_every = 0;
    c->save_every = 20;
    c->seed = 42;
    c->threads = 0;
    c->pack = 0;
    c->bf16 = 0;
    c->dpo_beta = 0.1f;
    c->dpo_loss = LM_DPO_SIGMOID;
}

static int get_long(const char *key, const char *v, long lo, long hi, long *out, lm_err *err) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (!*v || *end || errno)
        return lm_errf(err, "%s: expected an integer, got '%s'", key, v);
    if (x < lo || x > hi)
        return lm_errf(err, "%s: %ld is out of range [%ld, %ld]", key, x, lo, hi);
    *out = x;
    return 0;
}

static int get_double(const char *key, const char *v, double lo, double hi, double *out,
                      lm_err *err) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (!*v || *end || errno || !isfinite(x))
        return lm_errf(err, "%s: expected a number, got '%s'", key, v);
    if (x < lo || x > hi)
        return lm_errf(err, "%s: %g is out of range [%g, %g]", key, x, lo, hi);
    *out = x;
    return 0;
}

/* A float setting. The range is checked on the value as stored (a float):
 * a run's config is saved as that float (train_config's JSON) and must
 * load again on --resume, and (float)1e-12, the bottom of lr's range, is
 * just below 1e-12 as a double. */
static int get_float(const char *key, const char *v, double lo, double hi, float *out, lm_err *err) {
    double x;
    if (get_double(key, v, -HUGE_VAL, HUGE_VAL, &x, err)) return -1;
    float f = (float)x;
    if (!isfinite(f) || f < (float)lo || f > (float)hi)
        return lm_errf(err, "%s: %g is out of range [%g, %g]", key, x, lo, hi);
    *out = f;
    return 0;
}

static int get_bool(const char *key, const char *v, int *out, lm_err *err) {
    if (!strcmp(v, "true") || !strcmp(v, "1")) *out = 1;
    else if (!strcmp(v, "false") || !strcmp(v, "0")) *out = 0;
    else return lm_errf(err, "%s: expected true or false, got '%s'", key, v);
    return 0;
}

static int get_path(const char *key, const char *v, char *dst, lm_err *err) {
    size_t n = strlen(v);
    if (n >= LM_TCFG_PATH) return lm_errf(err, "%s: path longer than %d bytes", key, LM_TCFG_PATH - 1);
    memcpy(dst, v, n + 1);
    return 0;
}

static const char *const flag_keys[] = {"lora", "full", "pack"};

int lm_train_cfg_is_flag(const char *key) {
    for (size_t i = 0; i < sizeof flag_keys / sizeof *flag_keys; i++)
        if (!strcmp(key, flag_keys[i])) return 1;
    return 0;
}

int lm_train_cfg_set(lm_train_cfg *c, const char *key_in, const char *v, lm_err *err) {
    char key[64];
    size_t n = strlen(key_in);
    if (n >= sizeof key) return lm_errf(err, "unknown setting '%.60s...'", key_in);
    for (size_t i = 0; i <= n; i++) key[i] = key_in[i] == '_' ? '-' : key_in[i];
    long l;
    double d;
    int b;
    if (!strcmp(key, "model")) return get_path(key_in, v, c->model, err);
    if (!strcmp(key, "data")) return get_path(key_in, v, c->data, err);
    if (!strcmp(key, "val")) return get_path(key_in, v, c->val, err);
    if (!strcmp(key, "out")) return get_path(key_in, v, c->out, err);
    if (!strcmp(key, "dpo")) return get_path(key_in, v, c->dpo, err);
    if (!strcmp(key, "adapter")) return get_path(key_in, v, c->adapter, err);
    if (!strcmp(key, "dpo-beta")) return get_float(key_in, v, 1e-6, 1e6, &c->dpo_beta, err);
    if (!strcmp(key, "dpo-nll")) return get_float(key_in, v, 0, 100, &c->dpo_nll, err);
    if (!strcmp(key, "dpo-loss")) {
        if (!strcmp(v, "sigmoid")) c->dpo_loss = LM_DPO_SIGMOID;
        else if (!strcmp(v, "ipo")) c->dpo_loss = LM_DPO_IPO;
        else if (!strcmp(v, "sigmoid-norm")) c->dpo_loss = LM_DPO_SIGMOID_NORM;
        else return lm_errf(err, "%s: expected sigmoid, ipo or sigmoid-norm, got '%s'", key_in, v);
        return 0;
    }
    if (!strcmp(key, "val-frac")) {
        if (get_double(key_in, v, 0.0, 0.9, &d, err)) return -1;
        c->val_frac = d;
        return 0;
    }
    if (!strcmp(key, "lora") || !strcmp(key, "full")) {
        if (get_bool(key_in, v, &b, err)) return -1;
        c->full = !strcmp(key, "full") ? b : !b;
        return 0;
    }
    if (!strcmp(key, "pack")) return get_bool(key_in, v, &c->pack, err);
    if (!strcmp(key, "lora-rank")) {
        if (get_long(key_in, v, 1, 1024, &l, err)) return -1;
        c->lora_rank = (int)l;
        return 0;
    }
    if (!strcmp(key, "lora-alpha")) return get_float(key_in, v, 1e-6, 1e6, &c->lora_alpha, err);
    if (!strcmp(key, "lora-dropout")) {
        /* 1 would drop every input of the adapters (and scale by 1/0) */
        char *end;
        errno = 0;
        d = strtod(v, &end);
        if (!*v || *end || errno || !isfinite(d))
            return lm_errf(err, "%s: expected a number, got '%s'", key_in, v);
        if (!(d >= 0.0 && d < 1.0) || (float)d >= 1.0f)
            return lm_errf(err, "%s: %g is out of range [0, 1)", key_in, d);
        c->lora_dropout = (float)d;
        return 0;
    }
    if (!strcmp(key, "lora-targets")) {
        unsigned t;
        if (lm_lora_parse_targets(v, &t, err)) return lm_err_prefix(err, "%s", key_in);
        c->lora_targets = t;
        return 0;
    }
    if (!strcmp(key, "lr")) return get_float(key_in, v, 1e-12, 10.0, &c->lr, err);
    if (!strcmp(key, "epochs")) {
        if (get_long(key_in, v, 1, 100000, &l, err)) return -1;
        c->epochs = (int)l;
        return 0;
    }
    if (!strcmp(key, "batch")) {
        if (get_long(key_in, v, 1, 4096, &l, err)) return -1;
        c->batch = (int)l;
        return 0;
    }
    if (!strcmp(key, "seq")) {
        if (get_long(key_in, v, 2, 1 << 20, &l, err)) return -1;
        c->seq = (int)l;
        return 0;
    }
    if (!strcmp(key, "grad-accum")) {
        if (get_long(key_in, v, 1, 4096, &l, err)) return -1;
        c->grad_accum = (int)l;
        return 0;
    }
    if (!strcmp(key, "warmup")) return get_float(key_in, v, 0.0, 1e9, &c->warmup, err);
    if (!strcmp(key, "schedule")) {
        if (!strcmp(v, "cosine")) c->schedule = LM_LR_COSINE;
        else if (!strcmp(v, "linear")) c->schedule = LM_LR_LINEAR;
        else if (!strcmp(v, "constant")) c->schedule = LM_LR_CONSTANT;
        else return lm_errf(err, "%s: expected cosine, linear or constant, got '%s'", key_in, v);
        return 0;
    }
    if (!strcmp(key, "precision")) {
        if (!strcmp(v, "f32")) c->bf16 = 0;
        else if (!strcmp(v, "bf16")) c->bf16 = 1;
        else return lm_errf(err, "%s: expected f32 or bf16, got '%s'", key_in, v);
        return 0;
    }
    if (!strcmp(key, "weight-decay")) return get_float(key_in, v, 0.0, 10.0, &c->weight_decay, err);
    if (!strcmp(key, "clip")) return get_float(key_in, v, 0.0, 1e9, &c->clip, err);
    if (!strcmp(key, "eval-every")) {
        if (get_long(key_in, v, 0, 1L << 40, &l, err)) return -1;
        c->eval_every = (int)(l > 1 << 30 ? 1 << 30 : l);
        return 0;
    }
    if (!strcmp(key, "save-every")) {
        if (get_long(key_in, v, 0, 1L << 30, &l, err)) return -1;
        c->save_every = (int)l;
        return 0;
    }
    if (!strcmp(key, "seed")) {
        char *end;
        errno = 0;
        unsigned long long s = strtoull(v, &end, 10);
        if (!*v || *end || errno || *v == '-')
            return lm_errf(err, "%s: expected a non-negative integer, got '%s'", key_in, v);
        c->seed = (uint64_t)s;
        return 0;
    }
    if (!strcmp(key, "threads")) {
        if (get_long(key_in, v, 0, 1024, &l, err)) return -1;
        c->threads = (int)l;
        return 0;
    }
    return lm_errf(err, "unknown setting '%s'", key_in);
}

static const char *dpo_loss_name(lm_dpo_kind k) {
    return k == LM_DPO_IPO ? "ipo" : k == LM_DPO_SIGMOID_NORM ? "sigmoid-norm" : "sigmoid";
}

static const char *sched_name(lm_lr_kind k) {
    return k == LM_LR_LINEAR ? "linear" : k == LM_LR_CONSTANT ? "constant" : "cosine";
}

int lm_train_cfg_parse_json(lm_train_cfg *c, const char *name, const char *text, lm_err *err) {
    json_error_t je;
    json_t *root = json_loads(text, 0, &je);
    if (!root) return lm_errf(err, "%s:%d:%d: %s", name, je.line, je.column, je.text);
    int rc = 0;
    if (!json_is_object(root)) {
        rc = lm_errf(err, "%s: expected a JSON object of settings", name);
        goto done;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        char buf[64];
        const char *s = buf;
        if (json_is_string(val)) s = json_string_value(val);
        else if (json_is_true(val)) s = "true";
        else if (json_is_false(val)) s = "false";
        else if (json_is_integer(val)) snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(val));
        else if (json_is_real(val)) snprintf(buf, sizeof buf, "%.17g", json_real_value(val));
        else if (json_is_null(val) && (!strcmp(key, "val") || !strcmp(key, "lr") ||
                                       !strcmp(key, "dpo") || !strcmp(key, "adapter")))
            s = !strcmp(key, "lr") ? NULL : "";
        else {
            rc = lm_errf(err, "%s: %s: expected a string, number or boolean", name, key);
            goto done;
        }
        if (!s) continue;
        if (!strcmp(key, "lr") && json_is_number(val) && json_number_value(val) <= 0) continue;
        if (lm_train_cfg_set(c, key, s, err)) {
            rc = lm_err_prefix(err, "%s", name);
            goto done;
        }
    }
done:
    json_decref(root);
    return rc;
}

int lm_train_cfg_load_json(lm_train_cfg *c, const char *path, lm_err *err) {
    char *buf;
    size_t len;
    if (lm_read_file(path, &buf, &len, false, err)) return -1;
    int rc = lm_train_cfg_parse_json(c, path, buf, err);
    free(buf);
    return rc;
}

char *lm_train_cfg_to_json(const lm_train_cfg *c) {
    static const char *const tnames[LM_LORA_N] = {"q", "k", "v", "o", "gate", "up", "down"};
    char targets[64] = "";
    for (int i = 0; i < LM_LORA_N; i++)
        if (c->lora_targets & (1u << i)) {
            if (targets[0]) strcat(targets, ",");
            strcat(targets, tnames[i]);
        }
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)c->seed);
    /* Floats go through (double) of the stored float: parsing "%.17g" of
     * that gives the same float back, so a resumed run is the same run. */
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:f, s:b, s:i, s:f, s:f, s:s, s:f, s:i, s:i, s:i,"
                          " s:i, s:f, s:s, s:f, s:f, s:i, s:i, s:s, s:i, s:b, s:s, s:s, s:f, s:f, s:s, s:s}",
                          "model", c->model, "data", c->data, "val", c->val, "out", c->out,
                          "val-frac", c->val_frac, "full", c->full, "lora-rank", c->lora_rank,
                          "lora-alpha", (double)c->lora_alpha, "lora-dropout", (double)c->lora_dropout,
                          "lora-targets", targets, "lr", (double)c->lr, "epochs", c->epochs,
                          "batch", c->batch, "seq", c->seq, "grad-accum", c->grad_accum,
                          "warmup", (double)c->warmup, "schedule", sched_name(c->schedule),
                          "weight-decay", (double)c->weight_decay, "clip", (double)c->clip,
                          "eval-every", c->eval_every, "save-every", c->save_every, "seed", seed, "threads", c->threads,
                          "pack", c->pack, "dpo", c->dpo, "adapter", c->adapter,
                          "dpo-beta", (double)c->dpo_beta, "dpo-nll", (double)c->dpo_nll,
                          "dpo-loss", dpo_loss_name(c->dpo_loss),
                          "precision", c->bf16 ? "bf16" : "f32");
    if (!o) return NULL;
    char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    json_decref(o);
    return s;
}

int lm_train_cfg_finish(lm_train_cfg *c, lm_err *err) {
    if (!c->model[0]) return lm_errf(err, "model: required (the base GGUF)");
    if (!c->data[0] && !c->dpo[0])
        return lm_errf(err, "data: required (a JSONL chat dataset), or dpo (preference pairs)");
    if (c->data[0] && c->dpo[0])
        return lm_errf(err, "data and dpo: a run is SFT (data) or DPO (dpo), not both");
    if (c->adapter[0] && !c->dpo[0])
        return lm_errf(err, "adapter: only for a DPO run (the SFT adapter its policy starts from)");
    if (c->dpo[0] && c->pack)
        return lm_errf(err, "pack: not for a DPO run (one sequence per row, chosen and rejected rows)");
    if (!c->out[0]) return lm_errf(err, "out: required (the run directory)");
    if (c->val[0] && c->val_frac > 0)
        return lm_errf(err, "val and val-frac: give one way to get validation data, not both");
    if (c->warmup >= 1.0f && c->warmup != floorf(c->warmup))
        return lm_errf(err, "warmup: %g: a fraction below 1 or a whole number of steps", (double)c->warmup);
    if (c->lr <= 0) c->lr = c->dpo[0] ? (c->full ? 1e-6f : 2e-5f) : c->full ? 5e-5f : 2e-4f;
    return 0;
}

long lm_train_cfg_warmup_steps(const lm_train_cfg *c, long total) {
    if (c->warmup >= 1.0f) return (long)c->warmup;
    return (long)ceil((double)c->warmup * (double)total);
}
