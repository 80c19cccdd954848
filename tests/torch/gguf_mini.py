"""A tiny GGUF v3 writer for tests (the `gguf` package is not installed for
Debian's python3): string/u32/f32/f64 scalars, numeric arrays, F32 tensors."""
import struct

import numpy as np

ALIGN = 32
T_U8, T_U32, T_I32, T_F32, T_STR, T_ARR, T_F64 = 0, 4, 5, 6, 8, 9, 12


def _str(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def write(path, kvs, tensors):
    """kvs: list of (key, value) where value is str, ("u32", int), ("f32", x),
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
