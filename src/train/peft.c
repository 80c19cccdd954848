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
            lm_dequant_row(pr->type, pr->a, data + off, (int64_t)na);   /* F32 or F16 */
            if (sb_printf(&hdr, ",\"base_model.model.model.layers.%d.%s.lora_A.weight\":"
                          "{\"dtype\":\"F32\",\"shape\":[%d,%d],\"data_offsets\":[%zu,%zu]}",
                          l, hf_names[p], r, pr->in, off * 4, (off + na) * 4))
                goto oom;
            off += na;
            int permuted = p == LM_ADAPT_Q || p == LM_ADAPT_K;
            for (int o = 0; o < pr->out; o++) {
                int src = permuted ? lm_peft_gguf_row(o, hd) : o;
                lm_dequant_row(pr->type,
                               (const char *)pr->b + (size_t)src * lm_dtype_row_bytes(pr->type, r),
                               data + off + (size_t)o * r, r);
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
    /* the dropout it was trained with: informational for PEFT (which
     * applies it only when training further); "0.0" as PEFT writes it */
    char drop[32] = "0.0";
    if (a->dropout > 0) snprintf(drop, sizeof drop, "%.7g", (double)a->dropout);
    if (sb_printf(&cj, "\",\n  \"r\": %d,\n  \"lora_alpha\": %.9g,\n  \"lora_dropout\": %s,\n"
                  "  \"bias\": \"none\",\n  \"fan_in_fan_out\": false,\n"
                  "  \"inference_mode\": true,\n  \"init_lora_weights\": true,\n"
                  "  \"use_rslora\": false,\n  \"use_dora\": false,\n"
                  "  \"modules_to_save\": null,\n  \"layers_to_transform\": null,\n"
                  "  \"rank_pattern\": {},\n  \"alpha_pattern\": {},\n  \"target_modules\": [",
                  r, (double)a->alpha, drop))
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

/* ---- import ------------------------------------------------------------ */

#include <jansson.h>

#include "base/fileio.h"
#include "gguf/gguf.h"

/* Tensor `name` of a safetensors file as f32 [rows, cols]; malloc'd. */
static float *st_tensor(const char *path, json_t *hdr, const uint8_t *data, size_t data_len,
                        const char *name, int rows, int cols, lm_err *err) {
    json_t *t = json_object_get(hdr, name);
    if (!t) { lm_errf(err, "%s: tensor '%s' is missing", path, name); return NULL; }
    const char *dt = json_string_value(json_object_get(t, "dtype"));
    json_t *shape = json_object_get(t, "shape"), *offs = json_object_get(t, "data_offsets");
    if (json_array_size(shape) != 2 ||
        json_integer_value(json_array_get(shape, 0)) != rows ||
        json_integer_value(json_array_get(shape, 1)) != cols)
        return lm_errf(err, "%s: tensor '%s' should have shape [%d, %d]", path, name, rows, cols),
               NULL;
    lm_dtype ty = dt && !strcmp(dt, "F32") ? LM_F32 : dt && !strcmp(dt, "F16") ? LM_F16
                  : dt && !strcmp(dt, "BF16") ? LM_BF16 : (lm_dtype)-1;
    if ((int)ty < 0)
        return lm_errf(err, "%s: tensor '%s' has dtype %s (F32, F16 or BF16 expected)", path,
                       name, dt ? dt : "?"), NULL;
    size_t es = ty == LM_F32 ? 4 : 2, n = (size_t)rows * (size_t)cols;
    json_int_t b = json_integer_value(json_array_get(offs, 0));
    json_int_t e = json_integer_value(json_array_get(offs, 1));
    if (json_array_size(offs) != 2 || b < 0 || e < b || (size_t)e > data_len ||
        (size_t)(e - b) != n * es)
        return lm_errf(err, "%s: tensor '%s' has bad data_offsets", path, name), NULL;
    float *out = malloc(sizeof(float) * n);
    uint16_t *half = ty == LM_F32 ? NULL : malloc(2 * n);
    if (!out || (ty != LM_F32 && !half)) {
        free(out); free(half);
        return lm_errf(err, "out of memory"), NULL;
    }
    /* copies first: the data section need not be aligned */
    if (ty == LM_F32) {
        memcpy(out, data + b, 4 * n);
    } else {
        memcpy(half, data + b, 2 * n);
        lm_dequant_row(ty, half, out, (int64_t)n);
    }
    free(half);
    return out;
}

int lm_peft_import_mem(const lm_model *base, const char *cpath, const char *config,
                       size_t config_len, const char *spath, const char *st, size_t n,
                       const char *out_path, lm_err *err) {
    const lm_llama_config *cfg = &base->cfg;
    int rc = -1;
    json_t *conf = NULL, *hdr = NULL;
    gguf_writer *w = NULL;
    float *a = NULL, *b = NULL, *bp = NULL;
    json_error_t je;
    if (!(conf = json_loadb(config, config_len, 0, &je))) {
        lm_errf(err, "%s: line %d: %s", cpath, je.line, je.text);
        goto done;
    }
    json_t *jr = json_object_get(conf, "r"), *ja = json_object_get(conf, "lora_alpha");
    const char *pt = json_string_value(json_object_get(conf, "peft_type"));
    if (!pt || strcmp(pt, "LORA")) { lm_errf(err, "%s: peft_type is not \"LORA\"", cpath); goto done; }
    if (!json_is_integer(jr) || json_integer_value(jr) < 1 || json_integer_value(jr) > 4096 ||
        !json_is_number(ja)) {
        lm_errf(err, "%s: r and lora_alpha must be numbers (r a positive integer)", cpath);
        goto done;
    }
    if (json_is_true(json_object_get(conf, "use_rslora")) ||
        json_is_true(json_object_get(conf, "use_dora")) ||
        json_is_true(json_object_get(conf, "fan_in_fan_out")) ||
        (json_string_value(json_object_get(conf, "bias")) &&
         strcmp(json_string_value(json_object_get(conf, "bias")), "none")) ||
        json_array_size(json_object_get(conf, "modules_to_save")) ||
        json_object_size(json_object_get(conf, "rank_pattern")) ||
        json_object_size(json_object_get(conf, "alpha_pattern"))) {
        lm_errf(err, "%s: only plain LoRA is supported (no rslora, DoRA, fan_in_fan_out, bias, "
                "modules_to_save, rank/alpha patterns)", cpath);
        goto done;
    }
    int r = (int)json_integer_value(jr);
    double alpha = json_number_value(ja);
    json_t *jd = json_object_get(conf, "lora_dropout");
    double dropout = json_is_number(jd) ? json_number_value(jd) : 0.0;
    if ((jd && !json_is_number(jd) && !json_is_null(jd)) || !(dropout >= 0.0 && dropout < 1.0)) {
        lm_errf(err, "%s: lora_dropout must be a number in [0, 1)", cpath);
        goto done;
    }

    uint64_t hl = 0;
    for (int i = 0; i < 8 && n >= 8; i++) hl |= (uint64_t)(uint8_t)st[i] << (8 * i);
    if (n < 8 || hl > n - 8) { lm_errf(err, "%s: bad header length", spath); goto done; }
    if (!(hdr = json_loadb(st + 8, (size_t)hl, 0, &je))) {
        lm_errf(err, "%s: header: %s", spath, je.text);
        goto done;
    }
    const uint8_t *data = (const uint8_t *)st + 8 + hl;
    size_t data_len = n - 8 - (size_t)hl;

    if (!(w = gguf_writer_new())) { lm_errf(err, "out of memory"); goto done; }
    if (gguf_set_str(w, "general.architecture", cfg->arch, err) ||
        gguf_set_str(w, "general.type", "adapter", err) ||
        gguf_set_str(w, "adapter.type", "lora", err) ||
        gguf_set_f32(w, "adapter.lora.alpha", (float)alpha, err) ||
        (dropout > 0 && gguf_set_f32(w, "adapter.lora.dropout", (float)dropout, err)))
        goto done;
    int found = 0;
    for (int l = 0; l < cfg->n_layer; l++)
        for (int p = 0; p < LM_ADAPT_N; p++) {
            char na[160], nb[160];
            snprintf(na, sizeof na, "base_model.model.model.layers.%d.%s.lora_A.weight", l,
                     hf_names[p]);
            snprintf(nb, sizeof nb, "base_model.model.model.layers.%d.%s.lora_B.weight", l,
                     hf_names[p]);
            if (!json_object_get(hdr, na) && !json_object_get(hdr, nb)) continue;
            const lm_weight *bw = lm_adapter_base_weight(base, l, p);
            free(a); free(b); free(bp);
            a = b = bp = NULL;
            if (!(a = st_tensor(spath, hdr, data, data_len, na, r, bw->k, err)) ||
                !(b = st_tensor(spath, hdr, data, data_len, nb, bw->n, r, err)))
                goto done;
            if (!(bp = malloc(sizeof(float) * (size_t)bw->n * r))) { lm_errf(err, "out of memory"); goto done; }
            int permuted = p == LM_ADAPT_Q || p == LM_ADAPT_K;
            for (int o = 0; o < bw->n; o++)   /* HF row o goes to its GGUF row */
                memcpy(bp + (size_t)(permuted ? lm_peft_gguf_row(o, cfg->head_dim) : o) * r,
                       b + (size_t)o * r, sizeof(float) * (size_t)r);
            char ga[96], gb[96];
            snprintf(ga, sizeof ga, "blk.%d.%s.weight.lora_a", l, lm_adapter_proj_name(p));
            snprintf(gb, sizeof gb, "blk.%d.%s.weight.lora_b", l, lm_adapter_proj_name(p));
            int64_t nea[2] = {bw->k, r}, neb[2] = {r, bw->n};
            if (gguf_add_tensor(w, ga, LM_F32, 2, nea, a, sizeof(float) * (size_t)r * bw->k, err) ||
                gguf_add_tensor(w, gb, LM_F32, 2, neb, bp, sizeof(float) * (size_t)r * bw->n, err))
                goto done;
            found++;
        }
    /* every tensor of the file must have been one of the above */
    if ((size_t)found * 2 + (json_object_get(hdr, "__metadata__") ? 1 : 0) != json_object_size(hdr)) {
        const char *key;
        json_t *val;
        json_object_foreach(hdr, key, val) {
            int l, k = 0;
            char proj[64] = "";
            (void)val;
            if (!strcmp(key, "__metadata__")) continue;
            if (sscanf(key, "base_model.model.model.layers.%d.%n", &l, &k) != 1 || l < 0 ||
                l >= cfg->n_layer) {
                lm_errf(err, "%s: tensor '%s' is not a LoRA weight of a layer of this base",
                        spath, key);
                goto done;
            }
            snprintf(proj, sizeof proj, "%s", key + k);
            int ok = 0;
            for (int p = 0; p < LM_ADAPT_N; p++)
                if (!strncmp(proj, hf_names[p], strlen(hf_names[p]))) {
                    const char *rest = proj + strlen(hf_names[p]);
                    ok = !strcmp(rest, ".lora_A.weight") || !strcmp(rest, ".lora_B.weight");
                }
            if (!ok) {
                lm_errf(err, "%s: tensor '%s' is not a LoRA weight of a projection", spath, key);
                goto done;
            }
        }
    }
    if (!found) { lm_errf(err, "%s: no LoRA tensors", spath); goto done; }
    if (out_path && gguf_write(w, out_path, err)) goto done;
    rc = 0;
done:
    free(a); free(b); free(bp);
    gguf_writer_free(w);
    json_decref(hdr);
    json_decref(conf);
    return rc;
}

int lm_peft_import(const lm_model *base, const char *dir, const char *out_path, lm_err *err) {
    char cpath[4096], spath[4096];
    snprintf(cpath, sizeof cpath, "%s/adapter_config.json", dir);
    snprintf(spath, sizeof spath, "%s/adapter_model.safetensors", dir);
    char *conf = NULL, *st = NULL;
    size_t nc = 0, ns = 0;
    int rc = -1;
    if (!lm_read_file(cpath, &conf, &nc, false, err) && !lm_read_file(spath, &st, &ns, false, err))
        rc = lm_peft_import_mem(base, cpath, conf, nc, spath, st, ns, out_path, err);
    free(conf);
    free(st);
    return rc;
}
