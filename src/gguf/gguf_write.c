/* GGUF v3 writer. Metadata and tensors are collected in memory (copies),
 * then written in one pass to "<path>.tmp", fsync'd and renamed over the
 * target, so a crash or a full disk never leaves a half-written model. */
#include "gguf/gguf.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GGML_MAX_NAME 64 /* llama.cpp refuses tensor names of 64+ bytes */

typedef struct wstr { char *ptr; size_t len; } wstr;

typedef struct wkv {
    char *key;
    gguf_type type;
    uint64_t raw;          /* scalar value as its little-endian bit pattern */
    wstr s;                /* GGUF_STRING */
    gguf_type arr_type;    /* GGUF_ARRAY */
    uint64_t arr_n;
    void *arr_data;        /* packed numbers, arr_n * scalar size bytes */
    wstr *arr_strs;        /* arr_n strings */
} wkv;

typedef struct wtensor {
    char *name;
    lm_dtype type;
    int n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    void *data;
    size_t nbytes;
} wtensor;

struct gguf_writer {
    wkv *kv;
    size_t n_kv, cap_kv;
    wtensor *t;
    size_t n_t, cap_t;
};


gguf_writer *gguf_writer_new(void) { return calloc(1, sizeof(gguf_writer)); }

static void wkv_clear(wkv *kv) {
    free(kv->s.ptr);
    free(kv->arr_data);
    if (kv->arr_strs)
        for (uint64_t i = 0; i < kv->arr_n; i++) free(kv->arr_strs[i].ptr);
    free(kv->arr_strs);
    char *key = kv->key;
    memset(kv, 0, sizeof *kv);
    kv->key = key;
}

void gguf_writer_free(gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        wkv_clear(&w->kv[i]);
        free(w->kv[i].key);
    }
    for (size_t i = 0; i < w->n_t; i++) {
        free(w->t[i].name);
        free(w->t[i].data);
    }
    free(w->kv);
    free(w->t);
    free(w);
}

static int dup_bytes(wstr *out, const char *p, size_t len) {
    out->ptr = malloc(len + 1);
    if (!out->ptr) return -1;
    if (len) memcpy(out->ptr, p, len);
    out->ptr[len] = '\0';
    out->len = len;
    return 0;
}

/* The slot for key (existing one emptied, or a new one at the end). */
static wkv *slot(gguf_writer *w, const char *key, lm_err *err) {
    if (!w) { lm_errf(err, "gguf writer: NULL writer"); return NULL; }
    if (!key || !*key) { lm_errf(err, "gguf writer: empty key"); return NULL; }
    if (strlen(key) > 65535) { lm_errf(err, "gguf writer: key longer than 65535 bytes"); return NULL; }
    for (size_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->kv[i].key, key)) { wkv_clear(&w->kv[i]); return &w->kv[i]; }
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? 2 * w->cap_kv : 16;
        wkv *n = realloc(w->kv, cap * sizeof *n);
        if (!n) { lm_errf(err, "gguf writer: out of memory"); return NULL; }
        w->kv = n;
        w->cap_kv = cap;
    }
    wkv *kv = &w->kv[w->n_kv];
    memset(kv, 0, sizeof *kv);
    kv->key = strdup(key);
    if (!kv->key) { lm_errf(err, "gguf writer: out of memory"); return NULL; }
    w->n_kv++;
    return kv;
}

static int set_scalar(gguf_writer *w, const char *key, gguf_type t, uint64_t raw, lm_err *err) {
    wkv *kv = slot(w, key, err);
    if (!kv) return -1;
    kv->type = t;
    kv->raw = raw;
    return 0;
}

int gguf_set_u32(gguf_writer *w, const char *key, uint32_t v, lm_err *err) {
    return set_scalar(w, key, GGUF_U32, v, err);
}
int gguf_set_i32(gguf_writer *w, const char *key, int32_t v, lm_err *err) {
    return set_scalar(w, key, GGUF_I32, (uint32_t)v, err);
}
int gguf_set_u64(gguf_writer *w, const char *key, uint64_t v, lm_err *err) {
    return set_scalar(w, key, GGUF_U64, v, err);
}
int gguf_set_f32(gguf_writer *w, const char *key, float v, lm_err *err) {
    uint32_t u;
    memcpy(&u, &v, 4);
    return set_scalar(w, key, GGUF_F32, u, err);
}
int gguf_set_bool(gguf_writer *w, const char *key, bool v, lm_err *err) {
    return set_scalar(w, key, GGUF_BOOL, v ? 1 : 0, err);
}

static int set_str_len(gguf_writer *w, const char *key, const char *v, size_t len, lm_err *err) {
    wkv *kv = slot(w, key, err);
    if (!kv) return -1;
    kv->type = GGUF_STRING;
    if (dup_bytes(&kv->s, v, len)) return lm_errf(err, "gguf writer: out of memory for key '%s'", key);
    return 0;
}

int gguf_set_str(gguf_writer *w, const char *key, const char *v, lm_err *err) {
    if (!v) return lm_errf(err, "gguf writer: key '%s': NULL string", key ? key : "");
    return set_str_len(w, key, v, strlen(v), err);
}

int gguf_set_arr(gguf_writer *w, const char *key, gguf_type elem_type,
                 const void *data, uint64_t n, lm_err *err) {
    size_t es = gguf_scalar_size(elem_type);
    if (!es)
        return lm_errf(err, "gguf writer: key '%s': array elements of type %s are not numbers (use gguf_set_arr_str)",
                       key ? key : "", gguf_type_name(elem_type));
    if (n && !data) return lm_errf(err, "gguf writer: key '%s': NULL array data", key ? key : "");
    if (n > SIZE_MAX / es) return lm_errf(err, "gguf writer: key '%s': array too large", key ? key : "");
    wkv *kv = slot(w, key, err);
    if (!kv) return -1;
    kv->type = GGUF_ARRAY;
    kv->arr_type = elem_type;
    kv->arr_data = malloc(n ? (size_t)n * es : 1);
    if (!kv->arr_data) return lm_errf(err, "gguf writer: out of memory for key '%s'", key);
    if (n) memcpy(kv->arr_data, data, (size_t)n * es);
    kv->arr_n = n;
    return 0;
}

/* strs[i] with lens[i] bytes, or NUL-terminated when lens is NULL. */
static int set_arr_strs(gguf_writer *w, const char *key, const char *const *strs,
                        const uint64_t *lens, uint64_t n, lm_err *err) {
    if (n && !strs) return lm_errf(err, "gguf writer: key '%s': NULL string array", key ? key : "");
    if (n > SIZE_MAX / sizeof(wstr)) return lm_errf(err, "gguf writer: key '%s': array too large", key ? key : "");
    wkv *kv = slot(w, key, err);
    if (!kv) return -1;
    kv->type = GGUF_ARRAY;
    kv->arr_type = GGUF_STRING;
    kv->arr_strs = calloc(n ? (size_t)n : 1, sizeof *kv->arr_strs);
    if (!kv->arr_strs) return lm_errf(err, "gguf writer: out of memory for key '%s'", key);
    kv->arr_n = n;
    for (uint64_t i = 0; i < n; i++) {
        if (!strs[i]) return lm_errf(err, "gguf writer: key '%s': string %" PRIu64 " is NULL", key, i);
        size_t len = lens ? (size_t)lens[i] : strlen(strs[i]);
        if (dup_bytes(&kv->arr_strs[i], strs[i], len))
            return lm_errf(err, "gguf writer: out of memory for key '%s'", key);
    }
    return 0;
}

int gguf_set_arr_str(gguf_writer *w, const char *key, const char *const *strs,
                     uint64_t n, lm_err *err) {
    return set_arr_strs(w, key, strs, NULL, n, err);
}

int gguf_copy_kvs(gguf_writer *w, const gguf_file *src, lm_err *err) {
    for (uint64_t i = 0; i < src->n_kv; i++) {
        const gguf_kv *kv = &src->kv[i];
        int rc = 0;
        switch (kv->type) {
        case GGUF_STRING:
            rc = set_str_len(w, kv->key, kv->v.s.ptr, (size_t)kv->v.s.len, err);
            break;
        case GGUF_ARRAY:
            if (kv->arr_type == GGUF_STRING) {
                size_t n = kv->arr_n ? (size_t)kv->arr_n : 1;
                const char **p = malloc(n * sizeof *p);
                uint64_t *l = malloc(n * sizeof *l);
                if (!p || !l) rc = lm_errf(err, "gguf writer: out of memory copying '%s'", kv->key);
                for (uint64_t j = 0; !rc && j < kv->arr_n; j++) {
                    p[j] = kv->arr_strs[j].ptr;
                    l[j] = kv->arr_strs[j].len;
                }
                if (!rc) rc = set_arr_strs(w, kv->key, p, l, kv->arr_n, err);
                free(p);
                free(l);
            } else {
                rc = gguf_set_arr(w, kv->key, kv->arr_type, kv->arr_data, kv->arr_n, err);
            }
            break;
        case GGUF_F32: {
            float f = (float)kv->v.f;
            uint32_t u;
            memcpy(&u, &f, 4);
            rc = set_scalar(w, kv->key, kv->type, u, err);
            break;
        }
        case GGUF_F64: {
            uint64_t u;
            memcpy(&u, &kv->v.f, 8);
            rc = set_scalar(w, kv->key, kv->type, u, err);
            break;
        }
        case GGUF_BOOL:
            rc = set_scalar(w, kv->key, kv->type, kv->v.b, err);
            break;
        case GGUF_I8: case GGUF_I16: case GGUF_I32: case GGUF_I64:
            rc = set_scalar(w, kv->key, kv->type, (uint64_t)kv->v.i, err);
            break;
        default:
            rc = set_scalar(w, kv->key, kv->type, kv->v.u, err);
            break;
        }
        if (rc) return lm_err_prefix(err, "copying metadata from %s", src->path);
    }
    return 0;
}

int gguf_add_tensor(gguf_writer *w, const char *name, lm_dtype type, int n_dims,
                    const int64_t *ne, const void *data, size_t nbytes, lm_err *err) {
    if (!w) return lm_errf(err, "gguf writer: NULL writer");
    if (!name || !*name) return lm_errf(err, "gguf writer: empty tensor name");
    if (strlen(name) >= GGML_MAX_NAME)
        return lm_errf(err, "gguf writer: tensor name '%s' is %zu bytes, llama.cpp allows at most %d",
                       name, strlen(name), GGML_MAX_NAME - 1);
    for (size_t i = 0; i < w->n_t; i++)
        if (!strcmp(w->t[i].name, name)) return lm_errf(err, "gguf writer: duplicate tensor '%s'", name);
    if (!lm_dtype_supported((int)type))
        return lm_errf(err, "gguf writer: tensor '%s': type %d cannot be stored", name, (int)type);
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS || !ne)
        return lm_errf(err, "gguf writer: tensor '%s': %d dimensions, expected 1..%d", name, n_dims, GGUF_MAX_DIMS);
    uint64_t rows = 1;
    for (int d = 0; d < n_dims; d++) {
        if (ne[d] <= 0) return lm_errf(err, "gguf writer: tensor '%s': ne[%d] = %" PRId64 ", expected > 0", name, d, ne[d]);
        if (d > 0) {
            if ((uint64_t)ne[d] > SIZE_MAX / rows) return lm_errf(err, "gguf writer: tensor '%s' too large", name);
            rows *= (uint64_t)ne[d];
        }
    }
    size_t row = lm_dtype_row_bytes(type, ne[0]);
    if (!row)
        return lm_errf(err, "gguf writer: tensor '%s': row length %" PRId64 " is not a multiple of the %s block size %zu",
                       name, ne[0], lm_dtype_name(type), lm_dtype_block_elems(type));
    if (rows > SIZE_MAX / row) return lm_errf(err, "gguf writer: tensor '%s' too large", name);
    if (row * rows != nbytes)
        return lm_errf(err, "gguf writer: tensor '%s': %zu bytes given, shape and type %s need %" PRIu64,
                       name, nbytes, lm_dtype_name(type), (uint64_t)(row * rows));
    if (!data) return lm_errf(err, "gguf writer: tensor '%s': NULL data", name);
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? 2 * w->cap_t : 64;
        wtensor *n = realloc(w->t, cap * sizeof *n);
        if (!n) return lm_errf(err, "gguf writer: out of memory");
        w->t = n;
        w->cap_t = cap;
    }
    wtensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    t->data = malloc(nbytes);
    if (!t->name || !t->data) {
        free(t->name);
        free(t->data);
        return lm_errf(err, "gguf writer: out of memory for tensor '%s' (%zu bytes)", name, nbytes);
    }
    memcpy(t->data, data, nbytes);
    t->type = type;
    t->n_dims = n_dims;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = d < n_dims ? ne[d] : 1;
    t->nbytes = nbytes;
    w->n_t++;
    return 0;
}

/* ---- serialization ---------------------------------------------------- */

typedef struct out {
    FILE *fp;
    uint64_t pos;
    int failed;
} out;

static void put(out *o, const void *p, size_t n) {
    if (o->failed || n == 0) return;
    if (fwrite(p, 1, n, o->fp) != n) o->failed = 1;
    o->pos += n;
}

static void put_le(out *o, uint64_t v, size_t n) {
    uint8_t b[8];
    for (size_t i = 0; i < n; i++) b[i] = (uint8_t)(v >> (8 * i));
    put(o, b, n);
}

static void put_str(out *o, const char *p, size_t len) {
    put_le(o, len, 8);
    put(o, p, len);
}

static void put_pad(out *o, uint64_t align) {
    static const uint8_t zeros[64];
    uint64_t pad = (align - o->pos % align) % align;
    while (pad) {
        size_t n = pad > sizeof zeros ? sizeof zeros : (size_t)pad;
        put(o, zeros, n);
        pad -= n;
    }
}

static void put_kv(out *o, const wkv *kv) {
    put_str(o, kv->key, strlen(kv->key));
    put_le(o, (uint64_t)kv->type, 4);
    if (kv->type == GGUF_STRING) {
        put_str(o, kv->s.ptr, kv->s.len);
    } else if (kv->type == GGUF_ARRAY) {
        put_le(o, (uint64_t)kv->arr_type, 4);
        put_le(o, kv->arr_n, 8);
        if (kv->arr_type == GGUF_STRING)
            for (uint64_t i = 0; i < kv->arr_n; i++) put_str(o, kv->arr_strs[i].ptr, kv->arr_strs[i].len);
        else /* stored already packed little-endian (host order on x86/arm LE) */
            put(o, kv->arr_data, (size_t)kv->arr_n * gguf_scalar_size(kv->arr_type));
    } else {
        put_le(o, kv->raw, gguf_scalar_size(kv->type));
    }
}

static int writer_alignment(const gguf_writer *w, uint64_t *align, lm_err *err) {
    *align = 32;
    for (size_t i = 0; i < w->n_kv; i++) {
        const wkv *kv = &w->kv[i];
        if (strcmp(kv->key, "general.alignment")) continue;
        if (kv->type != GGUF_U32)
            return lm_errf(err, "gguf writer: general.alignment has type %s, expected u32", gguf_type_name(kv->type));
        if (kv->raw == 0 || (kv->raw & (kv->raw - 1)))
            return lm_errf(err, "gguf writer: general.alignment is %" PRIu64 ", expected a power of two", kv->raw);
        *align = kv->raw;
    }
    return 0;
}

int gguf_write(gguf_writer *w, const char *path, lm_err *err) {
    if (!w) return lm_errf(err, "gguf writer: NULL writer");
    uint64_t align;
    if (writer_alignment(w, &align, err)) return lm_err_prefix(err, "%s", path);
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 5);
    if (!tmp) return lm_errf(err, "%s: out of memory", path);
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    out o = {.fp = fopen(tmp, "wb")};
    if (!o.fp) {
        lm_errno(err, "%s: cannot create", tmp);
        free(tmp);
        return -1;
    }
    put(&o, "GGUF", 4);
    put_le(&o, 3, 4);
    put_le(&o, w->n_t, 8);
    put_le(&o, w->n_kv, 8);
    for (size_t i = 0; i < w->n_kv; i++) put_kv(&o, &w->kv[i]);
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        put_str(&o, t->name, strlen(t->name));
        put_le(&o, (uint64_t)t->n_dims, 4);
        for (int d = 0; d < t->n_dims; d++) put_le(&o, (uint64_t)t->ne[d], 8);
        put_le(&o, (uint64_t)t->type, 4);
        put_le(&o, off, 8);
        off += (t->nbytes + align - 1) / align * align;
    }
    put_pad(&o, align);
    for (size_t i = 0; i < w->n_t; i++) {
        put(&o, w->t[i].data, w->t[i].nbytes);
        put_pad(&o, align);
    }
    int rc = 0;
    if (o.failed || fflush(o.fp) || fsync(fileno(o.fp))) rc = lm_errno(err, "%s: write failed", tmp);
    if (fclose(o.fp) && !rc) rc = lm_errno(err, "%s: close failed", tmp);
    if (!rc && rename(tmp, path)) rc = lm_errno(err, "%s: cannot rename to %s", tmp, path);
    if (rc) unlink(tmp);
    free(tmp);
    return rc;
}

int gguf_copy_set_strs(const char *src, const char *dst, const char *const (*kv)[2], size_t n,
                       lm_err *err) {
    gguf_file *f = gguf_open(src, err);
    if (!f) return -1;
    gguf_writer *w = gguf_writer_new();
    int rc = w ? gguf_copy_kvs(w, f, err) : lm_errf(err, "gguf writer: out of memory");
    for (size_t i = 0; rc == 0 && i < n; i++) rc = gguf_set_str(w, kv[i][0], kv[i][1], err);
    for (uint64_t i = 0; rc == 0 && i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        rc = gguf_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, t->nbytes, err);
    }
    /* the data is copied into the writer, so dst may be src */
    if (rc == 0) rc = gguf_write(w, dst, err);
    gguf_writer_free(w);
    gguf_close(f);
    return rc;
}
