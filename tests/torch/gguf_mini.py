"""A tiny GGUF v3 writer for tests (the `gguf` package is not installed for
Debian's python3): string/u32/u64/f32/f64 scalars, numeric arrays, F32 tensors."""
import struct

import numpy as np

ALIGN = 32
T_U8, T_U32, T_I32, T_F32, T_STR, T_ARR, T_U64, T_F64 = 0, 4, 5, 6, 8, 9, 10, 12


def _str(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def write(path, kvs, tensors):
    """kvs: list of (key, value) where value is str, ("u32"/"u64", int), ("f32", x),
    ("f64", x) or ("arr_i32"/"arr_u8"/"arr_f64", sequence).
    tensors: list of (name, np.ndarray f32) -- the array's last axis is the
    GGUF row (ne[0])."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)))
    for key, v in kvs:
        out += _str(key)
        if isinstance(v, str):
            out += struct.pack("<I", T_STR) + _str(v)
            continue
        kind, x = v
        if kind == "u32":
            out += struct.pack("<II", T_U32, x)
        elif kind == "u64":
            out += struct.pack("<IQ", T_U64, x)
        elif kind == "f32":
            out += struct.pack("<If", T_F32, x)
        elif kind == "f64":
            out += struct.pack("<Id", T_F64, x)
        else:
            et, fmt = {"arr_i32": (T_I32, "<i4"), "arr_u8": (T_U8, "<u1"), "arr_f64": (T_F64, "<f8")}[kind]
            a = np.asarray(x, dtype=fmt).ravel()
            out += struct.pack("<IIQ", T_ARR, et, a.size) + a.tobytes()
    datas, off = [], 0
    for name, arr in tensors:
        a = np.ascontiguousarray(arr, dtype="<f4")
        ne = list(reversed(a.shape))
        out += _str(name) + struct.pack("<I", len(ne)) + struct.pack(f"<{len(ne)}Q", *ne)
        out += struct.pack("<IQ", 0, off)
        b = a.tobytes()
        datas.append(b)
        off += (len(b) + ALIGN - 1) // ALIGN * ALIGN
    out += b"\0" * (-len(out) % ALIGN)
    for b in datas:
        out += b + b"\0" * (-len(b) % ALIGN)
    with open(path, "wb") as f:
        f.write(out)


# ---- reader (for the real model: metadata and F32/F16/Q8_0/Q4_0/Q4_1 tensors) ----

_SCALAR = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1",
           10: "<u8", 11: "<i8", 12: "<f8"}


class _Buf:
    def __init__(self, data):
        self.d, self.o = data, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.d, self.o)
        self.o += struct.calcsize(fmt)
        return v[0] if len(v) == 1 else v

    def string(self):
        n = self.take("<Q")
        s = self.d[self.o:self.o + n].decode("utf-8", "replace")
        self.o += n
        return s

    def value(self, t):
        if t == T_STR:
            return self.string()
        if t == T_ARR:
            et, n = self.take("<IQ")
            if et == T_STR:
                return [self.string() for _ in range(n)]
            a = np.frombuffer(self.d, dtype=_SCALAR[et], count=n, offset=self.o)
            self.o += a.nbytes
            return a
        a = np.frombuffer(self.d, dtype=_SCALAR[t], count=1, offset=self.o)
        self.o += a.nbytes
        return a[0].item()


def _dequant(kind, raw, n):
    """GGML block formats of 32 elements, dequantized independently of our C."""
    if kind == 0:
        return np.frombuffer(raw, "<f4", n).astype(np.float32)
    if kind == 1:
        return np.frombuffer(raw, "<f2", n).astype(np.float32)
    nb = n // 32
    if kind == 8:   # Q8_0: f16 d, i8 q[32]
        b = np.frombuffer(raw, np.dtype([("d", "<f2"), ("q", "i1", 32)]), nb)
        return (b["d"].astype(np.float32)[:, None] * b["q"].astype(np.float32)).ravel()
    if kind in (2, 3):  # Q4_0: f16 d, u8 q[16] ; Q4_1: f16 d, f16 m, u8 q[16]
        fields = [("d", "<f2")] + ([("m", "<f2")] if kind == 3 else []) + [("q", "u1", 16)]
        b = np.frombuffer(raw, np.dtype(fields), nb)
        nib = np.concatenate([b["q"] & 0xF, b["q"] >> 4], axis=1).astype(np.float32)  # j, j+16
        d = b["d"].astype(np.float32)[:, None]
        if kind == 2:
            return ((nib - 8.0) * d).ravel()
        return (nib * d + b["m"].astype(np.float32)[:, None]).ravel()
    raise ValueError(f"tensor type {kind} not supported by the test reader")


_BLOCK = {0: (1, 4), 1: (1, 2), 8: (32, 34), 2: (32, 18), 3: (32, 20)}


def read(path):
    """-> (kvs dict, tensors dict name -> f32 ndarray shaped [ne1, ne0])."""
    data = open(path, "rb").read()
    r = _Buf(data)
    assert r.take("<4s") == b"GGUF", path
    version, n_t, n_kv = r.take("<IQQ")
    kvs = {}
    for _ in range(n_kv):
        k = r.string()
        kvs[k] = r.value(r.take("<I"))
    infos = []
    for _ in range(n_t):
        name = r.string()
        nd = r.take("<I")
        ne = [r.take("<Q") for _ in range(nd)]
        kind, off = r.take("<IQ")
        infos.append((name, ne, kind, off))
    align = int(kvs.get("general.alignment", ALIGN))
    base = (r.o + align - 1) // align * align
    tensors = {}
    for name, ne, kind, off in infos:
        n = int(np.prod(ne))
        be, bb = _BLOCK[kind]
        raw = data[base + off: base + off + n // be * bb]
        tensors[name] = _dequant(kind, raw, n).reshape(list(reversed(ne)))
    return kvs, tensors
