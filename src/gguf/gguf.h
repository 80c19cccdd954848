/* GGUF v3 reader (mmap'd, every length/offset/shape checked) and writer.
 * Spec facts: header "GGUF", u32 version (2 and 3 read, 3 written),
 * u64 tensor count, u64 kv count; strings are u64 length + bytes (no NUL);
 * tensor info = name, u32 n_dims, u64 ne[n_dims] (ne[0] = row length),
 * u32 type, u64 offset relative to the data section, which starts at the
 * first multiple of general.alignment (default 32) after the infos. */
#ifndef LM_MODEL_GGUF_H
#define LM_MODEL_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "tensor/dtype.h"

typedef enum gguf_type {
    GGUF_U8 = 0, GGUF_I8 = 1, GGUF_U16 = 2, GGUF_I16 = 3, GGUF_U32 = 4,
    GGUF_I32 = 5, GGUF_F32 = 6, GGUF_BOOL = 7, GGUF_STRING = 8,
    GGUF_ARRAY = 9, GGUF_U64 = 10, GGUF_I64 = 11, GGUF_F64 = 12,
} gguf_type;

/* Bytes of one scalar of type t (a uint32_t as read from the file); 0 for
 * string, array or an unknown type. The reader and the writer share it. */
size_t gguf_scalar_size(uint32_t t);

#define GGUF_MAX_DIMS 4

typedef struct gguf_str {   /* points into the mapping; NOT NUL-terminated */
    const char *ptr;
    uint64_t len;
} gguf_str;

typedef struct gguf_kv {
    char *key;              /* owned, NUL-terminated */
    gguf_type type;
    union {
        uint64_t u; int64_t i; double f; bool b; gguf_str s;
    } v;                    /* scalar value, widened; s for strings */
    gguf_type arr_type;     /* for arrays: element type (never ARRAY) */
    uint64_t arr_n;         /* for arrays: element count */
    const void *arr_data;   /* for arrays of numbers: packed little-endian elements in the mapping */
    gguf_str *arr_strs;     /* for arrays of strings: owned table of arr_n entries */
} gguf_kv;

typedef struct gguf_tensor {
    char *name;             /* owned, NUL-terminated */
    int n_dims;
    int64_t ne[GGUF_MAX_DIMS];  /* unused dims are 1 */
    lm_dtype type;
    uint64_t offset;        /* relative to data section */
    const void *data;       /* into the mapping */
    size_t nbytes;
} gguf_tensor;

typedef struct gguf_file {
    char *path;             /* owned copy, for messages */
    uint32_t version;
    const uint8_t *map;     /* whole file */
    size_t size;
    size_t alignment;
    size_t data_offset;
    uint64_t n_kv;
    gguf_kv *kv;
    uint64_t n_tensors;
    gguf_tensor *tensors;
    void *owned_buf;        /* set when opened from memory with a copy */
} gguf_file;

/* Opens and validates a GGUF file. Every tensor's data range must lie in the
 * file, be aligned, and have nbytes consistent with its shape and type.
 * Unknown tensor types are an error naming the tensor. */
gguf_file *gguf_open(const char *path, lm_err *err);
/* Same, over a caller-owned buffer (used by the fuzzer and tests); the buffer
 * must outlive the gguf_file. `name` is used in messages. */
gguf_file *gguf_open_mem(const void *buf, size_t size, const char *name, lm_err *err);
void gguf_close(gguf_file *f);
/* Hint that the mapping's bytes [data, data + n) will not be read for a
 * while (weights copied elsewhere at load): their pages leave the process's
 * resident set and come back from the file if read again. No-op for files
 * opened from memory. */
void gguf_release(const gguf_file *f, const void *data, size_t n);

const gguf_kv *gguf_find_kv(const gguf_file *f, const char *key);
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name);

/* Typed getters. They fail with "<path>: key 'k' missing" or "... has type T,
 * expected an integer" etc. Integer getters accept any integer type whose
 * value fits. gguf_get_str returns a malloc'd NUL-terminated copy. */
int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out, lm_err *err);
int gguf_get_f32(const gguf_file *f, const char *key, float *out, lm_err *err);
char *gguf_get_str(const gguf_file *f, const char *key, lm_err *err);
/* Same but leave *out untouched and return 0 when the key is absent. */
int gguf_get_u32_opt(const gguf_file *f, const char *key, uint32_t *out, lm_err *err);
int gguf_get_f32_opt(const gguf_file *f, const char *key, float *out, lm_err *err);

const char *gguf_type_name(gguf_type t);

/* Element i of a numeric/bool array kv, converted (0 when kv is not such an
 * array or i is out of range). Use these rather than casting arr_data: the
 * packed elements sit at arbitrary (possibly unaligned) file offsets. */
int64_t gguf_arr_get_i64(const gguf_kv *kv, uint64_t i);
double gguf_arr_get_f64(const gguf_kv *kv, uint64_t i);

/* ---- writer ---------------------------------------------------------- */

typedef struct gguf_writer gguf_writer;

gguf_writer *gguf_writer_new(void);
void gguf_writer_free(gguf_writer *w);
/* Metadata setters copy their inputs. Setting an existing key replaces it. */
int gguf_set_u32(gguf_writer *w, const char *key, uint32_t v, lm_err *err);
int gguf_set_i32(gguf_writer *w, const char *key, int32_t v, lm_err *err);
int gguf_set_u64(gguf_writer *w, const char *key, uint64_t v, lm_err *err);
int gguf_set_f32(gguf_writer *w, const char *key, float v, lm_err *err);
int gguf_set_bool(gguf_writer *w, const char *key, bool v, lm_err *err);
int gguf_set_str(gguf_writer *w, const char *key, const char *v, lm_err *err);
/* Array of numbers/bools: n elements of elem_type, packed little-endian. */
int gguf_set_arr(gguf_writer *w, const char *key, gguf_type elem_type,
                 const void *data, uint64_t n, lm_err *err);
int gguf_set_arr_str(gguf_writer *w, const char *key, const char *const *strs,
                     uint64_t n, lm_err *err);
/* Copies every kv of a file (for quantize / export that keep metadata). */
int gguf_copy_kvs(gguf_writer *w, const gguf_file *src, lm_err *err);
/* Adds a tensor; data (nbytes matching ne and type) is copied. */
int gguf_add_tensor(gguf_writer *w, const char *name, lm_dtype type, int n_dims,
                    const int64_t *ne, const void *data, size_t nbytes, lm_err *err);
/* Writes to path.tmp, fsyncs, renames over path: never a half-written file. */
int gguf_write(gguf_writer *w, const char *path, lm_err *err);

/* Copies the GGUF at src to dst (every kv and tensor) with the string keys
 * kv[i][0] set to kv[i][1] (added or replaced). dst may equal src. */
int gguf_copy_set_strs(const char *src, const char *dst, const char *const (*kv)[2], size_t n,
                       lm_err *err);

#endif
