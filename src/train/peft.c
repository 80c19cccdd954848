/* PEFT folder writer (see peft.h). safetensors by hand: u64 LE header
 * length, JSON header {name: {dtype, shape, data_offsets}, "__metadata__"},
 * padded with spaces to 8 bytes, then the little-endian tensor bytes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "train/peft.h"

static const char *const hf_names[LM_ADAPT_N] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
};

int lm_peft_gguf_row(int hf, int head_dim) {
    int h = hf / head_dim, j = hf % head_dim, half = head_dim / 2;
    int s = j / half, i = j % half;   /* HF: half s, index i -> GGUF: pair i, member s */
    return h * head_dim + 2 * i + s;
}

typedef struct sbuf { char *p; size_t n, cap; } sbuf;

static int sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#include <stdarg.h>
static int sb_printf(sbuf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) return -1;
        if (b->p && b->n + (size_t)k < b->cap) { b->n += (size_t)k; return 0; }
        size_t cap = (b->cap + (size_t)k + 1) * 2;
        char *q = realloc(b->p, cap);
        if (!q) return -1;
        b->p = q; b->cap = cap;
    }
}

/* Writes path.tmp then renames it over path. */
static int write_atomic(const char *path, const void *a, size_t na, const void *b, size_t nb,
                        lm_err *err) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *fp = fopen(tmp, "wb");
    if (!fp) return lm_errno(err, "%s: cannot create", tmp);
    int ok = fwrite(a, 1, na, fp) == na && (nb == 0 || fwrite(b, 1, nb, fp) == nb);
    ok = ok && fflush(fp) == 0 && fsync(fileno(fp)) == 0;
    if (fclose(fp) != 0) ok = 0;
    if (!ok) { unlink(tmp); return lm_errno(err, "%s: write failed", tmp); }
    if (rename(tmp, path)) { unlink(tmp); return lm_errno(err, "%s: rename failed", path); }
    return 0;
}

int lm_peft_write(const lm_model *base, const lm_adapter *a, const char *dir,
                  const char *base_name, lm_err *err) {
    const lm_llama_config *cfg = &base->cfg;
    if (a->n_layer != cfg->n_layer)
        return lm_errf(err, "peft: adapter has %d layers, base %d", a->n_layer, cfg->n_layer);
    if (mkdir(dir, 0777) && errno != EEXIST) return lm_errno(err, "%s: cannot create", dir);
    if (!base_name) base_name = "HuggingFaceTB/SmolLM2-135M-Instruct";
    int rc = -1, r = a->rank, hd = cfg->head_dim;
    sbuf hdr = {0}, cj = {0};
    float *data = NULL;
    size_t total = 0;
    for (int i = 0; i < a->n_layer * LM_ADAPT_N; i++)
        if (a->pairs[i].a) total += (size_t)r * (size_t)(a->pairs[i].in + a->pairs[i].out);
    data = malloc(sizeof(float) * (total ? total : 1));
    if (!data) { lm_errf(err, "out of memory"); goto done; }

    /* header and data in one pass; A then B per layer and projection */
    size_t off = 0;
    if (sb_printf(&hdr, "{\"__metadata__\":{\"format\":\"pt\"}")) goto oom;
    for (int l = 0; l < a->n_layer; l++)
        for (int p = 0; p < LM_ADAPT_N; p++) {
            const lm_adapter_pair *pr = lm_adapter_get(a, l, p);
            if (!pr->a) continue;
            size_t na = (size_t)r * (size_t)pr->in, nb = (size_t)r * (size_t)pr->out;
            memcpy(data + off, pr->a, na * sizeof(float));
            if (sb_printf(&hdr, ",\"base_model.model.model.layers.%d.%s.lora_A.weight\":"
                          "{\"dtype\":\"F32\",\"shape\":[%d,%d],\"data_offsets\":[%zu,%zu]}",
                          l, hf_names[p], r, pr->in, off * 4, (off + na) * 4))
                goto oom;
            off += na;
            int permuted = p == LM_ADAPT_Q || p == LM_ADAPT_K;
            for (int o = 0; o < pr->out; o++) {
                int src = permuted ? lm_peft_gguf_row(o, hd) : o;
                memcpy(data + off + (size_t)o * r, pr->b + (size_t)src * r, (size_t)r * 4);
            }
            if (sb_printf(&hdr, ",\"base_model.model.model.layers.%d.%s.lora_B.weight\":"
                          "{\"dtype\":\"F32\",\"shape\":[%d,%d],\"data_offsets\":[%zu,%zu]}",
                          l, hf_names[p], pr->out, r, off * 4, (off + nb) * 4))
                goto oom;
            off += nb;
        }
    if (sb_printf(&hdr, "}")) goto oom;
    while (hdr.n % 8)
        if (sb_printf(&hdr, " ")) goto oom;
    {
        /* u64 little-endian length, then the header (host assumed little-endian, as the data) */
        size_t n8 = 8 + hdr.n;
        unsigned char *head = malloc(n8);
        if (!head) goto oom;
        for (int i = 0; i < 8; i++) head[i] = (unsigned char)((uint64_t)hdr.n >> (8 * i));
        memcpy(head + 8, hdr.p, hdr.n);
        char path[4096];
        snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
        int w = write_atomic(path, head, n8, data, total * sizeof(float), err);
        free(head);
        if (w) goto done;
    }

    if (sb_printf(&cj, "{\n  \"peft_type\": \"LORA\",\n  \"task_type\": \"CAUSAL_LM\",\n"
                  "  \"base_model_name_or_path\": \"") )
        goto oom;
    for (const char *s = base_name; *s; s++)   /* JSON string escape */
        if ((*s == '"' || *s == '\\') ? sb_printf(&cj, "\\%c", *s)
            : (unsigned char)*s < 0x20 ? sb_printf(&cj, "\\u%04x", (unsigned char)*s)
                                       : sb_printf(&cj, "%c", *s))
            goto oom;
    if (sb_printf(&cj, "\",\n  \"r\": %d,\n  \"lora_alpha\": %.9g,\n  \"lora_dropout\": 0.0,\n"
                  "  \"bias\": \"none\",\n  \"fan_in_fan_out\": false,\n"
                  "  \"inference_mode\": true,\n  \"init_lora_weights\": true,\n"
                  "  \"use_rslora\": false,\n  \"use_dora\": false,\n"
                  "  \"modules_to_save\": null,\n  \"layers_to_transform\": null,\n"
                  "  \"rank_pattern\": {},\n  \"alpha_pattern\": {},\n  \"target_modules\": [",
                  r, (double)a->alpha))
        goto oom;
    int first = 1;
    for (int p = 0; p < LM_ADAPT_N; p++) {
        if (!(a->targets & (1u << p))) continue;
        if (sb_printf(&cj, "%s\"%s\"", first ? "" : ", ", strchr(hf_names[p], '.') + 1)) goto oom;
        first = 0;
    }
    if (sb_printf(&cj, "]\n}\n")) goto oom;
    {
        char path[4096];
        snprintf(path, sizeof path, "%s/adapter_config.json", dir);
        if (write_atomic(path, cj.p, cj.n, NULL, 0, err)) goto done;
    }
    rc = 0;
    goto done;
oom:
    lm_errf(err, "out of memory writing the PEFT folder");
done:
    free(hdr.p); free(cj.p); free(data);
    return rc;
}
