/* GGUF reader. The whole file is mapped once; every length, count, type id,
 * shape and offset read from it is checked against what is actually there
 * before it is used, so a truncated or hostile file gives an error naming
 * the file, the byte offset (or key / tensor) and what was expected. */
#include "gguf/gguf.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* gguf_file plus what only the reader needs to know to close it. */
typedef struct gguf_file_impl {
    gguf_file pub; /* first: a gguf_file* is a gguf_file_impl* */
    int mapped;    /* 1: pub.map came from mmap and must be unmapped */
} gguf_file_impl;

/* Smallest encodings, used to bound counts by the bytes left: a kv is at
 * least key length (8) + 1 key byte + type (4) + 1 value byte; a tensor info
 * is name length (8) + 1 byte + n_dims (4) + one ne (8) + type (4) + offset (8). */
#define MIN_KV_BYTES 14u
#define MIN_TI_BYTES 33u
#define MAX_KEY_LEN 65535u /* the spec's limit for keys; we apply it to tensor names too */

typedef struct cursor {
    const uint8_t *p;
    size_t size, off;
    const char *name;
    lm_err *err;
    char what[192]; /* names the field being read, for messages */
} cursor;

/* Formats the description of the next field into c->what. */
__attribute__((format(printf, 2, 3)))
static const char *field(cursor *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->what, sizeof c->what, fmt, ap);
    va_end(ap);
    return c->what;
}

static const char *const TYPE_NAMES[] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
};

const char *gguf_type_name(gguf_type t) {
    if ((unsigned)t < sizeof TYPE_NAMES / sizeof TYPE_NAMES[0]) return TYPE_NAMES[t];
    return "invalid";
}

size_t gguf_scalar_size(uint32_t t) {
    switch (t) {
    case GGUF_U8: case GGUF_I8: case GGUF_BOOL: return 1;
    case GGUF_U16: case GGUF_I16: return 2;
    case GGUF_U32: case GGUF_I32: case GGUF_F32: return 4;
    case GGUF_U64: case GGUF_I64: case GGUF_F64: return 8;
    default: return 0;
    }
}

static size_t left(const cursor *c) { return c->size - c->off; }

static int need(cursor *c, size_t n, const char *what) {
    if (n > left(c))
        return lm_errf(c->err, "%s: offset %zu: truncated: %s needs %zu bytes, %zu left in the file",
                       c->name, c->off, what, n, left(c));
    return 0;
}

static uint64_t rd_le(const uint8_t *p, size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static int rd_u32(cursor *c, uint32_t *v, const char *what) {
    if (need(c, 4, what)) return -1;
    *v = (uint32_t)rd_le(c->p + c->off, 4);
    c->off += 4;
    return 0;
}

static int rd_u64(cursor *c, uint64_t *v, const char *what) {
    if (need(c, 8, what)) return -1;
    *v = rd_le(c->p + c->off, 8);
    c->off += 8;
    return 0;
}

static int rd_str(cursor *c, gguf_str *s, const char *what) {
    size_t at = c->off;
    uint64_t len;
    if (rd_u64(c, &len, what)) return -1;
    if (len > left(c))
        return lm_errf(c->err, "%s: offset %zu: %s has length %" PRIu64 " but only %zu bytes are left in the file",
                       c->name, at, what, len, left(c));
    s->ptr = (const char *)c->p + c->off;
    s->len = len;
    c->off += (size_t)len;
    return 0;
}

/* A key or tensor name: non-empty, bounded, no NUL (we hand out C strings). */
static char *rd_name(cursor *c, const char *what) {
    size_t at = c->off;
    gguf_str s;
    if (rd_str(c, &s, what)) return NULL;
    if (s.len == 0) {
        lm_errf(c->err, "%s: offset %zu: empty %s", c->name, at, what);
        return NULL;
    }
    if (s.len > MAX_KEY_LEN) {
        lm_errf(c->err, "%s: offset %zu: %s is %" PRIu64 " bytes long, at most %u allowed",
                c->name, at, what, s.len, MAX_KEY_LEN);
        return NULL;
    }
    if (memchr(s.ptr, 0, (size_t)s.len)) {
        lm_errf(c->err, "%s: offset %zu: %s contains a NUL byte", c->name, at, what);
        return NULL;
    }
    char *out = malloc((size_t)s.len + 1);
    if (!out) {
        lm_errf(c->err, "%s: out of memory reading %s", c->name, what);
        return NULL;
    }
    memcpy(out, s.ptr, (size_t)s.len);
    out[s.len] = '\0';
    return out;
}

/* Reads a scalar of type t into kv->v (widened). */
static int rd_scalar(cursor *c, uint32_t t, gguf_kv *kv) {
    size_t n = gguf_scalar_size(t);
    size_t at = c->off;
    if (need(c, n, field(c, "value of key '%s'", kv->key))) return -1;
    uint64_t raw = rd_le(c->p + c->off, n);
    c->off += n;
    switch (t) {
    case GGUF_U8: case GGUF_U16: case GGUF_U32: case GGUF_U64:
        kv->v.u = raw;
        break;
    case GGUF_I8: kv->v.i = (int8_t)raw; break;
    case GGUF_I16: kv->v.i = (int16_t)raw; break;
    case GGUF_I32: kv->v.i = (int32_t)raw; break;
    case GGUF_I64: kv->v.i = (int64_t)raw; break;
    case GGUF_F32: { uint32_t u = (uint32_t)raw; float f; memcpy(&f, &u, 4); kv->v.f = f; break; }
    case GGUF_F64: { double d; memcpy(&d, &raw, 8); kv->v.f = d; break; }
    case GGUF_BOOL:
        if (raw > 1)
            return lm_errf(c->err, "%s: offset %zu: key '%s': bool value is %" PRIu64 ", expected 0 or 1",
                           c->name, at, kv->key, raw);
        kv->v.b = raw != 0;
        break;
    }
    return 0;
}

static int rd_value(cursor *c, gguf_kv *kv) {
    size_t at = c->off;
    uint32_t t;
    if (rd_u32(c, &t, field(c, "value type of key '%s'", kv->key))) return -1;
    if (t > GGUF_F64)
        return lm_errf(c->err, "%s: offset %zu: key '%s': value type %u is not a GGUF type (0..12)",
                       c->name, at, kv->key, t);
    kv->type = (gguf_type)t;
    if (t == GGUF_STRING) return rd_str(c, &kv->v.s, field(c, "string value of key '%s'", kv->key));
    if (t != GGUF_ARRAY) return rd_scalar(c, t, kv);

    at = c->off;
    uint32_t et;
    uint64_t n;
    if (rd_u32(c, &et, field(c, "array element type of key '%s'", kv->key)) ||
        rd_u64(c, &n, field(c, "array length of key '%s'", kv->key)))
        return -1;
    if (et > GGUF_F64)
        return lm_errf(c->err, "%s: offset %zu: key '%s': array element type %u is not a GGUF type (0..12)",
                       c->name, at, kv->key, et);
    if (et == GGUF_ARRAY)
        return lm_errf(c->err, "%s: offset %zu: key '%s': nested arrays are not supported",
                       c->name, at, kv->key);
    kv->arr_type = (gguf_type)et;
    kv->arr_n = n;
    if (et == GGUF_STRING) {
        /* each string takes at least its 8-byte length */
        if (n > left(c) / 8)
            return lm_errf(c->err, "%s: offset %zu: key '%s': array of %" PRIu64 " strings cannot fit in the %zu bytes left",
                           c->name, at, kv->key, n, left(c));
        kv->arr_strs = calloc(n ? (size_t)n : 1, sizeof *kv->arr_strs);
        if (!kv->arr_strs) return lm_errf(c->err, "%s: out of memory reading key '%s'", c->name, kv->key);
        for (uint64_t i = 0; i < n; i++) {
            if (rd_str(c, &kv->arr_strs[i], field(c, "element %" PRIu64 " of key '%s'", i, kv->key))) return -1;
        }
        return 0;
    }
    size_t es = gguf_scalar_size(et);
    if (n > left(c) / es)
        return lm_errf(c->err, "%s: offset %zu: key '%s': array of %" PRIu64 " %s needs more than the %zu bytes left",
                       c->name, at, kv->key, n, gguf_type_name(kv->arr_type), left(c));
    kv->arr_data = c->p + c->off;
    c->off += (size_t)n * es;
    return 0;
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Fails on the first name that appears twice (sorted copy, O(n log n)). */
static int check_unique(cursor *c, const char **names, uint64_t n, const char *what) {
    if (n < 2) return 0;
    qsort(names, (size_t)n, sizeof *names, cmp_str_ptr);
    for (uint64_t i = 1; i < n; i++)
        if (!strcmp(names[i - 1], names[i]))
            return lm_errf(c->err, "%s: duplicate %s '%s'", c->name, what, names[i]);
    return 0;
}

static int rd_kvs(cursor *c, gguf_file *f) {
    if (f->n_kv > left(c) / MIN_KV_BYTES)
        return lm_errf(c->err, "%s: header claims %" PRIu64 " metadata entries, more than the %zu bytes left can hold",
                       c->name, f->n_kv, left(c));
    f->kv = calloc(f->n_kv ? (size_t)f->n_kv : 1, sizeof *f->kv);
    if (!f->kv) return lm_errf(c->err, "%s: out of memory", c->name);
    for (uint64_t i = 0; i < f->n_kv; i++) {
        gguf_kv *kv = &f->kv[i];
        kv->key = rd_name(c, field(c, "key of metadata entry %" PRIu64, i));
        if (!kv->key) return -1;
        if (rd_value(c, kv)) return -1;
    }
    const char **keys = malloc((f->n_kv ? (size_t)f->n_kv : 1) * sizeof *keys);
    if (!keys) return lm_errf(c->err, "%s: out of memory", c->name);
    for (uint64_t i = 0; i < f->n_kv; i++) keys[i] = f->kv[i].key;
    int rc = check_unique(c, keys, f->n_kv, "key");
    free(keys);
    return rc;
}

static int rd_alignment(cursor *c, gguf_file *f) {
    f->alignment = 32;
    const gguf_kv *kv = gguf_find_kv(f, "general.alignment");
    if (!kv) return 0;
    /* u32 as the spec says; llama.cpp aborts on any other type */
    if (kv->type != GGUF_U32)
        return lm_errf(c->err, "%s: general.alignment has type %s, expected u32", c->name, gguf_type_name(kv->type));
    uint32_t a = (uint32_t)kv->v.u;
    if (a == 0 || (a & (a - 1)))
        return lm_errf(c->err, "%s: general.alignment is %u, expected a power of two", c->name, a);
    f->alignment = a;
    return 0;
}

static int rd_tensor_info(cursor *c, gguf_tensor *t, uint64_t idx) {
    size_t at = c->off;
    t->name = rd_name(c, field(c, "name of tensor info %" PRIu64, idx));
    if (!t->name) return -1;
    uint32_t nd;
    if (rd_u32(c, &nd, field(c, "n_dims of tensor '%s'", t->name))) return -1;
    if (nd < 1 || nd > GGUF_MAX_DIMS)
        return lm_errf(c->err, "%s: offset %zu: tensor '%s' has %u dimensions, expected 1..%d",
                       c->name, at, t->name, nd, GGUF_MAX_DIMS);
    t->n_dims = (int)nd;
    int64_t nelem = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        t->ne[d] = 1;
        if (d >= t->n_dims) continue;
        uint64_t v;
        if (rd_u64(c, &v, field(c, "ne[%d] of tensor '%s'", d, t->name))) return -1;
        if (v == 0 || v > (uint64_t)INT64_MAX)
            return lm_errf(c->err, "%s: tensor '%s': ne[%d] = %" PRIu64 ", expected 1..2^63-1",
                           c->name, t->name, d, v);
        if ((int64_t)v > INT64_MAX / nelem)
            return lm_errf(c->err, "%s: tensor '%s': element count overflows 64 bits", c->name, t->name);
        t->ne[d] = (int64_t)v;
        nelem *= (int64_t)v;
    }
    uint32_t ty;
    if (rd_u32(c, &ty, field(c, "type of tensor '%s'", t->name))) return -1;
    if (!lm_dtype_supported((int)ty)) {
        const char *nm = lm_dtype_name((int)ty);
        return lm_errf(c->err, "%s: tensor '%s' has type %s (%u), which is not supported (F32, F16, BF16, Q8_0, Q4_0, Q4_1 are)",
                       c->name, t->name, nm ? nm : "unknown", ty);
    }
    t->type = (lm_dtype)ty;
    size_t be = lm_dtype_block_elems(t->type);
    if ((uint64_t)t->ne[0] % be)
        return lm_errf(c->err, "%s: tensor '%s': row length ne[0] = %" PRId64 " is not a multiple of the %s block size %zu",
                       c->name, t->name, t->ne[0], lm_dtype_name(t->type), be);
    size_t row = lm_dtype_row_bytes(t->type, t->ne[0]);
    uint64_t rows = (uint64_t)(nelem / t->ne[0]);
    if (row == 0 || rows > SIZE_MAX / row)
        return lm_errf(c->err, "%s: tensor '%s': byte size overflows", c->name, t->name);
    t->nbytes = row * (size_t)rows;
    if (rd_u64(c, &t->offset, field(c, "data offset of tensor '%s'", t->name))) return -1;
    return 0;
}

static int cmp_tensor_off(const void *a, const void *b) {
    const gguf_tensor *x = *(const gguf_tensor *const *)a, *y = *(const gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int rd_tensors(cursor *c, gguf_file *f) {
    if (f->n_tensors > left(c) / MIN_TI_BYTES)
        return lm_errf(c->err, "%s: header claims %" PRIu64 " tensors, more than the %zu bytes left can hold",
                       c->name, f->n_tensors, left(c));
    f->tensors = calloc(f->n_tensors ? (size_t)f->n_tensors : 1, sizeof *f->tensors);
    if (!f->tensors) return lm_errf(c->err, "%s: out of memory", c->name);
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (rd_tensor_info(c, &f->tensors[i], i)) return -1;

    size_t n = f->n_tensors ? (size_t)f->n_tensors : 1;
    const char **names = malloc(n * sizeof *names);
    gguf_tensor **by_off = malloc(n * sizeof *by_off);
    int rc = -1;
    if (!names || !by_off) { lm_errf(c->err, "%s: out of memory", c->name); goto done; }
    for (uint64_t i = 0; i < f->n_tensors; i++) names[i] = f->tensors[i].name;
    if (check_unique(c, names, f->n_tensors, "tensor name")) goto done;

    /* The data section starts at the first aligned offset after the infos. */
    uint64_t a = f->alignment;
    uint64_t data = ((uint64_t)c->off + a - 1) / a * a;
    if (f->n_tensors && data > f->size) {
        lm_errf(c->err, "%s: data section would start at offset %" PRIu64 ", past the end of the %zu-byte file",
                c->name, data, f->size);
        goto done;
    }
    f->data_offset = data > f->size ? f->size : (size_t)data;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        if (t->offset % a) {
            lm_errf(c->err, "%s: tensor '%s': data offset %" PRIu64 " is not a multiple of the alignment %" PRIu64,
                    c->name, t->name, t->offset, a);
            goto done;
        }
        size_t room = f->size - f->data_offset;
        if (t->offset > room || t->nbytes > room - t->offset) {
            lm_errf(c->err, "%s: tensor '%s': data [%" PRIu64 ", +%zu) relative to the data section at %zu runs past the end of the %zu-byte file",
                    c->name, t->name, t->offset, t->nbytes, f->data_offset, f->size);
            goto done;
        }
        size_t abs = f->data_offset + (size_t)t->offset;
        /* Kernels read F32 as float* and the blocks' f16 fields as uint16_t:
         * an alignment of 1 or 2 (legal in GGUF, never used in practice)
         * could misalign them, which we refuse rather than read slowly. */
        size_t nat = t->type == LM_F32 ? 4 : 2;
        if (((uintptr_t)(f->map + abs)) % nat) {
            lm_errf(c->err, "%s: tensor '%s': data at file offset %zu is not %zu-byte aligned (general.alignment %" PRIu64 ")",
                    c->name, t->name, abs, nat, a);
            goto done;
        }
        t->data = f->map + abs;
        by_off[i] = t;
    }
    qsort(by_off, (size_t)f->n_tensors, sizeof *by_off, cmp_tensor_off);
    for (uint64_t i = 1; i < f->n_tensors; i++) {
        const gguf_tensor *p = by_off[i - 1], *q = by_off[i];
        if (p->offset + p->nbytes > q->offset) {
            lm_errf(c->err, "%s: tensors '%s' [%" PRIu64 ", +%zu) and '%s' [%" PRIu64 ", +%zu) overlap",
                    c->name, p->name, p->offset, p->nbytes, q->name, q->offset, q->nbytes);
            goto done;
        }
    }
    rc = 0;
done:
    free(names);
    free(by_off);
    return rc;
}

static int parse(gguf_file *f, lm_err *err) {
    cursor c = {.p = f->map, .size = f->size, .off = 0, .name = f->path, .err = err};
    if (f->size < 4 || memcmp(f->map, "GGUF", 4))
        return lm_errf(err, "%s: offset 0: not a GGUF file (expected magic \"GGUF\")", f->path);
    c.off = 4;
    if (rd_u32(&c, &f->version, "version")) return -1;
    if (f->version != 2 && f->version != 3)
        return lm_errf(err, "%s: offset 4: GGUF version %u, expected 2 or 3", f->path, f->version);
    if (rd_u64(&c, &f->n_tensors, "tensor count") || rd_u64(&c, &f->n_kv, "metadata count")) return -1;
    if (rd_kvs(&c, f)) return -1;
    if (rd_alignment(&c, f)) return -1;
    return rd_tensors(&c, f);
}

static gguf_file_impl *new_file(const char *name, lm_err *err) {
    gguf_file_impl *fi = calloc(1, sizeof *fi);
    if (fi) fi->pub.path = strdup(name ? name : "(memory)");
    if (!fi || !fi->pub.path) {
        free(fi);
        lm_errf(err, "%s: out of memory", name ? name : "(memory)");
        return NULL;
    }
    return fi;
}

gguf_file *gguf_open_mem(const void *buf, size_t size, const char *name, lm_err *err) {
    gguf_file_impl *fi = new_file(name, err);
    if (!fi) return NULL;
    fi->pub.map = buf;
    fi->pub.size = size;
    if (!buf && size) {
        lm_errf(err, "%s: NULL buffer", fi->pub.path);
        gguf_close(&fi->pub);
        return NULL;
    }
    if (parse(&fi->pub, err)) {
        gguf_close(&fi->pub);
        return NULL;
    }
    return &fi->pub;
}

gguf_file *gguf_open(const char *path, lm_err *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) { lm_errno(err, "%s: cannot open", path); return NULL; }
    struct stat st;
    if (fstat(fd, &st)) { lm_errno(err, "%s: cannot stat", path); close(fd); return NULL; }
    if (!S_ISREG(st.st_mode)) { lm_errf(err, "%s: not a regular file", path); close(fd); return NULL; }
    if (st.st_size == 0) { lm_errf(err, "%s: file is empty (expected a GGUF model)", path); close(fd); return NULL; }
    gguf_file_impl *fi = new_file(path, err);
    if (!fi) { close(fd); return NULL; }
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        lm_errno(err, "%s: cannot map %lld bytes", path, (long long)st.st_size);
        gguf_close(&fi->pub);
        return NULL;
    }
    fi->pub.map = m;
    fi->pub.size = (size_t)st.st_size;
    fi->mapped = 1;
    if (parse(&fi->pub, err)) {
        gguf_close(&fi->pub);
        return NULL;
    }
    return &fi->pub;
}

void gguf_close(gguf_file *f) {
    if (!f) return;
    gguf_file_impl *fi = (gguf_file_impl *)f;
    if (f->kv)
        for (uint64_t i = 0; i < f->n_kv; i++) {
            free(f->kv[i].key);
            free(f->kv[i].arr_strs);
        }
    if (f->tensors)
        for (uint64_t i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->kv);
    free(f->tensors);
    if (fi->mapped) munmap((void *)f->map, f->size);
    free(f->owned_buf);
    free(f->path);
    free(fi);
}

void gguf_release(const gguf_file *f, const void *data, size_t n) {
    const gguf_file_impl *fi = (const gguf_file_impl *)f;
    if (!f || !fi->mapped || n == 0) return;
    /* only the pages wholly inside the range: their neighbours may be in use */
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t lo = ((uintptr_t)data + page - 1) / page * page;
    const uintptr_t hi = ((uintptr_t)data + n) / page * page;
    /* MADV_DONTNEED on a read-only file mapping drops the pages without
     * losing anything: a later read faults them in again from the file. */
    if (hi > lo) (void)madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

/* Linear scans: files hold tens of keys and a few hundred tensors, and
 * lookups happen once at load time. */
const gguf_kv *gguf_find_kv(const gguf_file *f, const char *key) {
    if (!f || !key || !f->kv) return NULL;
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (f->kv[i].key && !strcmp(f->kv[i].key, key)) return &f->kv[i];
    return NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name) {
    if (!f || !name || !f->tensors) return NULL;
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (f->tensors[i].name && !strcmp(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}

/* ---- typed getters --------------------------------------------------- */

static int is_unsigned(gguf_type t) { return t == GGUF_U8 || t == GGUF_U16 || t == GGUF_U32 || t == GGUF_U64; }
static int is_signed(gguf_type t) { return t == GGUF_I8 || t == GGUF_I16 || t == GGUF_I32 || t == GGUF_I64; }

int gguf_get_u32_opt(const gguf_file *f, const char *key, uint32_t *out, lm_err *err) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv) return 0;
    if (is_unsigned(kv->type)) {
        if (kv->v.u > UINT32_MAX)
            return lm_errf(err, "%s: key '%s' = %" PRIu64 " does not fit in 32 bits", f->path, key, kv->v.u);
        *out = (uint32_t)kv->v.u;
        return 0;
    }
    if (is_signed(kv->type)) {
        if (kv->v.i < 0 || kv->v.i > (int64_t)UINT32_MAX)
            return lm_errf(err, "%s: key '%s' = %" PRId64 ", expected a value in 0..4294967295", f->path, key, kv->v.i);
        *out = (uint32_t)kv->v.i;
        return 0;
    }
    return lm_errf(err, "%s: key '%s' has type %s, expected an integer", f->path, key, gguf_type_name(kv->type));
}

int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out, lm_err *err) {
    if (!gguf_find_kv(f, key)) return lm_errf(err, "%s: key '%s' missing", f->path, key);
    return gguf_get_u32_opt(f, key, out, err);
}

int gguf_get_f32_opt(const gguf_file *f, const char *key, float *out, lm_err *err) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv) return 0;
    if (kv->type != GGUF_F32 && kv->type != GGUF_F64)
        return lm_errf(err, "%s: key '%s' has type %s, expected a float", f->path, key, gguf_type_name(kv->type));
    *out = (float)kv->v.f;
    return 0;
}

int gguf_get_f32(const gguf_file *f, const char *key, float *out, lm_err *err) {
    if (!gguf_find_kv(f, key)) return lm_errf(err, "%s: key '%s' missing", f->path, key);
    return gguf_get_f32_opt(f, key, out, err);
}

char *gguf_get_str(const gguf_file *f, const char *key, lm_err *err) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv) { lm_errf(err, "%s: key '%s' missing", f->path, key); return NULL; }
    if (kv->type != GGUF_STRING) {
        lm_errf(err, "%s: key '%s' has type %s, expected a string", f->path, key, gguf_type_name(kv->type));
        return NULL;
    }
    char *s = malloc((size_t)kv->v.s.len + 1);
    if (!s) { lm_errf(err, "%s: out of memory copying key '%s'", f->path, key); return NULL; }
    memcpy(s, kv->v.s.ptr, (size_t)kv->v.s.len);
    s[kv->v.s.len] = '\0';
    return s;
}

int64_t gguf_arr_get_i64(const gguf_kv *kv, uint64_t i) {
    if (!kv || kv->type != GGUF_ARRAY || !kv->arr_data || i >= kv->arr_n) return 0;
    size_t es = gguf_scalar_size(kv->arr_type);
    uint64_t raw = rd_le((const uint8_t *)kv->arr_data + i * es, es);
    switch (kv->arr_type) {
    case GGUF_I8: return (int8_t)raw;
    case GGUF_I16: return (int16_t)raw;
    case GGUF_I32: return (int32_t)raw;
    case GGUF_F32: case GGUF_F64: {
        double d = gguf_arr_get_f64(kv, i);
        return d >= -9.2e18 && d <= 9.2e18 ? (int64_t)d : 0; /* NaN/huge: 0, never UB */
    }
    default: return (int64_t)raw;
    }
}

double gguf_arr_get_f64(const gguf_kv *kv, uint64_t i) {
    if (!kv || kv->type != GGUF_ARRAY || !kv->arr_data || i >= kv->arr_n) return 0;
    size_t es = gguf_scalar_size(kv->arr_type);
    uint64_t raw = rd_le((const uint8_t *)kv->arr_data + i * es, es);
    switch (kv->arr_type) {
    case GGUF_F32: { uint32_t u = (uint32_t)raw; float f; memcpy(&f, &u, 4); return f; }
    case GGUF_F64: { double d; memcpy(&d, &raw, 8); return d; }
    case GGUF_I8: return (int8_t)raw;
    case GGUF_I16: return (int16_t)raw;
    case GGUF_I32: return (int32_t)raw;
    case GGUF_I64: return (double)(int64_t)raw;
    default: return (double)raw;
    }
}
