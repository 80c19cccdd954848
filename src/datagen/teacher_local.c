/* Teacher on our own engine: a local GGUF through runtime/generate.h.
 * Requests run one at a time (the engine already uses every core);
 * OpenAI's sampling knobs map onto our sampler with top-k and min-p off,
 * so temperature and top_p mean what they mean on a chat-completions server. */
#include "datagen/teacher.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/generate.h"

typedef struct local_teacher {
    lm_teacher base;
    lm_generator *gen;
    uint64_t seed;
} local_teacher;

static int local_complete(lm_teacher *base, const lm_chat_msg *msgs, size_t n,
                          const lm_teacher_params *p, char **reply, lm_err *err) {
    local_teacher *t = (local_teacher *)base;
    lm_teacher_params d = lm_teacher_params_default();
    if (!p) p = &d;
    lm_gen_params gp;
    memset(&gp, 0, sizeof gp);
    gp.sp = lm_sampler_defaults();
    gp.sp.temp = p->temperature >= 0 ? p->temperature : 0.8f;
    gp.sp.top_p = p->top_p > 0 && p->top_p < 1 ? p->top_p : 1.0f;
    gp.sp.top_k = 0;
    gp.sp.min_p = 0;
    gp.sp.seed = p->has_seed ? p->seed : t->seed;
    gp.max_tokens = p->max_tokens > 0 ? p->max_tokens : 512;
    gp.stop = p->stop;
    gp.n_stop = p->n_stop;
    if (lm_generate_chat(t->gen, msgs, n, &gp, reply, NULL, err))
        return lm_err_prefix(err, "teacher %s", t->base.name);
    if (!**reply) {
        free(*reply);
        *reply = NULL;
        return lm_errf(err, "teacher %s: empty reply (the model ended its turn at once)",
                       t->base.name);
    }
    return 0;
}

static void local_free(lm_teacher *base) {
    local_teacher *t = (local_teacher *)base;
    lm_generator_free(t->gen);
    free(t);
}

static const lm_teacher_vt local_vt = {local_complete, NULL, local_free};

lm_teacher *lm_teacher_local_new(const lm_teacher_local_config *cfg, lm_err *err) {
    if (!cfg->model_path) return lm_errf(err, "teacher: no local model path"), NULL;
    local_teacher *t = calloc(1, sizeof *t);
    if (!t) return lm_errf(err, "out of memory"), NULL;
    t->base.vt = &local_vt;
    t->seed = cfg->seed;
    const char *slash = strrchr(cfg->model_path, '/');
    snprintf(t->base.name, sizeof t->base.name, "local:%s", slash ? slash + 1 : cfg->model_path);
    t->gen = lm_generator_open(cfg->model_path, cfg->n_ctx, cfg->threads, err);
    if (!t->gen) {
        free(t);
        return NULL;
    }
    return &t->base;
}
