"""Our GGUF reader, writer and quantizers against the `gguf` Python package
(gguf-py, maintained with llama.cpp): the same metadata and tensor table,
bit-identical quantization, exact dequantization, and files that each side
writes being read correctly by the other."""
import json
import subprocess

import numpy as np
import pytest

import gguf
from gguf import GGMLQuantizationType as QT  # noqa: E402
from gguf import GGUFValueType as VT  # noqa: E402

# our type names (gguf_type_name) -> gguf-py's
VTYPE = {
    "u8": VT.UINT8, "i8": VT.INT8, "u16": VT.UINT16, "i16": VT.INT16,
    "u32": VT.UINT32, "i32": VT.INT32, "f32": VT.FLOAT32, "bool": VT.BOOL,
    "string": VT.STRING, "array": VT.ARRAY, "u64": VT.UINT64, "i64": VT.INT64,
    "f64": VT.FLOAT64,
}
HEADER_FIELDS = {"GGUF.version", "GGUF.tensor_count", "GGUF.kv_count"}
FTYPE = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7, "bf16": 32}
QTYPE = {"f32": QT.F32, "f16": QT.F16, "bf16": QT.BF16, "q8_0": QT.Q8_0,
         "q4_0": QT.Q4_0, "q4_1": QT.Q4_1}


def info_json(lemonpc, path):
    out = subprocess.run([str(lemonpc), "info", str(path), "--json"], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def same_scalar(ours, theirs, vtype):
    if vtype == VT.FLOAT32:
        return np.float32(ours).tobytes() == np.float32(theirs).tobytes()
    if vtype == VT.FLOAT64:
        return np.float64(ours).tobytes() == np.float64(theirs).tobytes()
    return ours == theirs


def compare_info(ours, path):
    """Every kv and tensor of `ours` (info --json) equals GGUFReader's view."""
    r = gguf.GGUFReader(str(path))
    fields = [f for name, f in r.fields.items() if name not in HEADER_FIELDS]
    assert [m["key"] for m in ours["metadata"]] == [f.name for f in fields]
    for m, f in zip(ours["metadata"], fields):
        assert VTYPE[m["type"]] == f.types[0], m["key"]
        theirs = f.contents()
        if f.types[0] == VT.ARRAY:
            assert VTYPE[m["elem_type"]] == f.types[-1], m["key"]
            assert m["count"] == len(theirs) == len(m["value"]), m["key"]
            bad = [i for i, (a, b) in enumerate(zip(m["value"], theirs))
                   if not same_scalar(a, b, f.types[-1])]
            assert not bad, f"{m['key']}: first difference at element {bad[0]}"
        else:
            assert same_scalar(m["value"], theirs, f.types[0]), m["key"]
    assert ours["alignment"] == r.alignment
    assert ours["n_tensors"] == len(r.tensors)
    for t, rt in zip(ours["tensors"], r.tensors):
        assert t["name"] == rt.name
        assert t["type_id"] == int(rt.tensor_type), t["name"]
        assert t["type"] == rt.tensor_type.name, t["name"]
        assert t["shape"] == [int(x) for x in rt.shape], t["name"]
        assert ours["data_offset"] + t["offset"] == rt.data_offset, t["name"]
        assert t["nbytes"] == rt.n_bytes, t["name"]
        assert t["n_elements"] == rt.n_elements, t["name"]
    return r


def test_info_matches_gguf_py(lemonpc, model_path):
    ours = info_json(lemonpc, model_path)
    r = compare_info(ours, model_path)
    assert ours["size"] == model_path.stat().st_size
    # the facts DESIGN.md states about this file, and what makes it 98 MB
    types = {}
    for t in r.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    assert types == {"Q4_1": 210, "F32": 61, "Q8_0": 1}
    assert r.get_tensor(0).name == "token_embd.weight" and r.get_tensor(0).tensor_type == QT.Q8_0
    assert ours["n_elements"] == 134515008


def tensor_map(reader):
    return {t.name: t for t in reader.tensors}


@pytest.fixture(scope="module")
def converted(lemonpc, model_path, tmp_path_factory):
    """Runs `lemonpc quantize` once per type, lazily."""
    d = tmp_path_factory.mktemp("quant")
    done = {}

    def get(ty):
        if ty not in done:
            out = d / f"model.{ty}.gguf"
            subprocess.run([str(lemonpc), "quantize", str(model_path), str(out), ty],
                           check=True, capture_output=True)
            done[ty] = out
        return done[ty]
    return get


@pytest.mark.parametrize("ty", ["q8_0", "q4_0", "q4_1", "f16", "bf16"])
def test_quantize_bit_identical_to_gguf_py(ty, model_path, converted, lemonpc):
    """Each converted tensor equals gguf-py's quantize(dequantize(source)).
    Tensors already in the target type are copied byte for byte (no
    lossy requantization); 1-D tensors stay F32."""
    src = gguf.GGUFReader(str(model_path))
    out_path = converted(ty)
    out = compare_info(info_json(lemonpc, out_path), out_path)
    want_type = QTYPE[ty]
    srcs = tensor_map(src)
    assert [t.name for t in out.tensors] == [t.name for t in src.tensors]
    requantized = 0
    for t in out.tensors:
        s = srcs[t.name]
        assert list(t.shape) == list(s.shape)
        if len(s.shape) == 1:
            assert t.tensor_type == QT.F32
            expect = gguf.quants.dequantize(s.data, s.tensor_type).astype(np.float32)
        elif s.tensor_type == want_type:
            assert t.tensor_type == want_type
            expect = s.data
        else:
            assert t.tensor_type == want_type, t.name
            f32 = gguf.quants.dequantize(s.data, s.tensor_type)
            expect = gguf.quants.quantize(f32, want_type)
            requantized += 1
        assert np.asarray(expect).tobytes() == np.asarray(t.data).tobytes(), t.name
    assert requantized >= 1
    ft = out.fields["general.file_type"]
    assert ft.contents() == FTYPE[ty]
    # every other kv copied unchanged
    for name, f in src.fields.items():
        if name in HEADER_FIELDS or name == "general.file_type":
            continue
        g = out.fields[name]
        assert g.types == f.types, name
        assert g.contents() == f.contents(), name


def test_f32_equals_gguf_py_dequantization(model_path, converted):
    src = tensor_map(gguf.GGUFReader(str(model_path)))
    out = gguf.GGUFReader(str(converted("f32")))
    for t in out.tensors:
        s = src[t.name]
        assert t.tensor_type == QT.F32
        expect = gguf.quants.dequantize(s.data, s.tensor_type).astype(np.float32, copy=False)
        got = np.asarray(t.data).reshape(expect.shape)
        assert expect.tobytes() == got.tobytes(), t.name


def test_our_writer_read_by_gguf_py(tool, lemonpc, tmp_models):
    """gguf_sample (our writer) -> gguf-py sees exactly the values written."""
    path = tmp_models / "sample.gguf"
    subprocess.run([str(tool("gguf_sample")), str(path)], check=True)
    r = compare_info(info_json(lemonpc, path), path)
    f = {k: v for k, v in r.fields.items() if k not in HEADER_FIELDS}
    expect = {
        "general.architecture": (VT.STRING, "llama"),
        "s.u32": (VT.UINT32, 4000000000), "s.i32": (VT.INT32, -123456),
        "s.u64": (VT.UINT64, 1 << 50), "s.f32": (VT.FLOAT32, np.float32(1e-5)),
        "s.bool": (VT.BOOL, True), "s.str": (VT.STRING, 'line1\nline2 "q"'),
        "a.u8": (VT.UINT8, [0, 7, 255]), "a.i8": (VT.INT8, [-128, 5, 127]),
        "a.u16": (VT.UINT16, [1, 65535]), "a.i16": (VT.INT16, [-32768, 12]),
        "a.u32": (VT.UINT32, [4000000000, 3]), "a.i32": (VT.INT32, [-7, 2147483647]),
        "a.f32": (VT.FLOAT32, [np.float32(0.25), np.float32(-1e30)]),
        "a.bool": (VT.BOOL, [True, False]),
        "a.u64": (VT.UINT64, [2**64 - 1, 9]), "a.i64": (VT.INT64, [-2**63, 42]),
        "a.f64": (VT.FLOAT64, [3.141592653589793, -0.5]),
        "a.str": (VT.STRING, ["Ġhello", "", "naïve ✓", "<|im_end|>"]),
    }
    assert list(f) == list(expect)
    for k, (vt, v) in expect.items():
        assert f[k].types[-1] == vt, k
        assert f[k].contents() == v, k
    x = ((np.arange(64 * 3) % 61 - 30) / 8).astype(np.float32).reshape(3, 64)
    for k, (name, qt) in enumerate([("t.f32", QT.F32), ("t.f16", QT.F16), ("t.bf16", QT.BF16),
                                    ("t.q8_0", QT.Q8_0), ("t.q4_0", QT.Q4_0), ("t.q4_1", QT.Q4_1)]):
        t = r.get_tensor(k)
        assert (t.name, t.tensor_type, list(t.shape)) == (name, qt, [64, 3])
        want = np.asarray(gguf.quants.quantize(x + k, qt))
        assert want.tobytes() == np.asarray(t.data).tobytes(), name
        assert (t.data_offset % 32) == 0


def test_gguf_py_writer_read_by_us(lemonpc, tmp_models):
    """A file written by gguf-py's GGUFWriter: we report the same kvs and
    tensors, and our F32 conversion of it returns the original values."""
    path = tmp_models / "from_gguf_py.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint8("k.u8", 200)
    w.add_int8("k.i8", -100)
    w.add_uint16("k.u16", 60000)
    w.add_int16("k.i16", -30000)
    w.add_uint32("k.u32", 3000000000)
    w.add_int32("k.i32", -2000000000)
    w.add_float32("k.f32", 0.1)
    w.add_uint64("k.u64", 2**63 + 5)
    w.add_int64("k.i64", -2**62)
    w.add_float64("k.f64", 1e-300)
    w.add_bool("k.bool", False)
    w.add_string("k.str", "tab\there ✓")
    w.add_array("k.arr_i", [1, -2, 3])
    w.add_array("k.arr_f", [0.5, 1.5])
    w.add_array("k.arr_s", ["x", "ÿ", ""])
    rng = np.random.default_rng(0)
    f32 = rng.standard_normal((5, 64)).astype(np.float32)
    w.add_tensor("w.f32", f32)
    w.add_tensor("w.f16", f32.astype(np.float16))
    q = gguf.quants.quantize(f32, QT.Q8_0)
    w.add_tensor("w.q8_0", q, raw_shape=q.shape, raw_dtype=QT.Q8_0)
    q41 = gguf.quants.quantize(f32, QT.Q4_1)
    w.add_tensor("w.q4_1", q41, raw_shape=q41.shape, raw_dtype=QT.Q4_1)
    norm = np.linspace(0.5, 1.5, 64, dtype=np.float32)
    w.add_tensor("w.norm", norm)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    ours = info_json(lemonpc, path)
    compare_info(ours, path)
    meta = {m["key"]: m for m in ours["metadata"]}
    assert meta["k.u64"]["value"] == 2**63 + 5
    assert meta["k.arr_s"]["value"] == ["x", "ÿ", ""]
    assert [t["shape"] for t in ours["tensors"]] == [[64, 5]] * 4 + [[64]]

    out = tmp_models / "from_gguf_py.f32.gguf"
    subprocess.run([str(lemonpc), "quantize", str(path), str(out), "f32"], check=True,
                   capture_output=True)
    r = tensor_map(gguf.GGUFReader(str(out)))
    assert np.array_equal(np.asarray(r["w.f32"].data).reshape(5, 64), f32)
    assert np.array_equal(np.asarray(r["w.f16"].data).reshape(5, 64),
                          f32.astype(np.float16).astype(np.float32))
    assert np.array_equal(np.asarray(r["w.q8_0"].data).reshape(5, 64),
                          gguf.quants.dequantize(q, QT.Q8_0).reshape(5, 64))
    assert np.array_equal(np.asarray(r["w.q4_1"].data).reshape(5, 64),
                          gguf.quants.dequantize(q41, QT.Q4_1).reshape(5, 64))
    assert np.array_equal(np.asarray(r["w.norm"].data), norm)


def test_cli_errors(lemonpc, tmp_models):
    bad = tmp_models / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 16)
    p = subprocess.run([str(lemonpc), "info", str(bad)], capture_output=True, text=True)
    assert p.returncode == 1 and str(bad) in p.stderr and "claims" in p.stderr
    p = subprocess.run([str(lemonpc), "quantize", str(bad), str(tmp_models / "o.gguf"), "q5_k"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "unknown type 'q5_k'" in p.stderr
    for cmd in (["info", "--help"], ["quantize", "--help"]):
        p = subprocess.run([str(lemonpc), *cmd], capture_output=True, text=True)
        assert p.returncode == 0 and "usage: lemonpc" in p.stdout


def test_quantize_fallback_and_embd(lemonpc, tmp_models):
    """Rows that are not whole blocks fall back to F16; --embd picks the
    token embedding's type; 1-D tensors become F32 even from F16."""
    path = tmp_models / "odd.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    rng = np.random.default_rng(1)
    odd = rng.standard_normal((2, 48)).astype(np.float32)
    emb = rng.standard_normal((4, 64)).astype(np.float32)
    w.add_tensor("odd.weight", odd)
    w.add_tensor("token_embd.weight", emb)
    w.add_tensor("blk.0.ffn_up.weight", emb * 2)
    w.add_tensor("norm.weight", np.ones(64, dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    out = tmp_models / "odd.q4_0.gguf"
    p = subprocess.run([str(lemonpc), "quantize", str(path), str(out), "q4_0", "--embd", "q8_0",
                        "--threads", "2"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "odd.weight: row length 48 is not a multiple of 32, stored as F16" in p.stderr
    r = tensor_map(gguf.GGUFReader(str(out)))
    assert r["odd.weight"].tensor_type == QT.F16
    assert np.asarray(r["odd.weight"].data).tobytes() == odd.astype(np.float16).tobytes()
    assert r["token_embd.weight"].tensor_type == QT.Q8_0
    assert np.asarray(r["token_embd.weight"].data).tobytes() == gguf.quants.quantize(emb, QT.Q8_0).tobytes()
    assert r["blk.0.ffn_up.weight"].tensor_type == QT.Q4_0
    assert np.asarray(r["blk.0.ffn_up.weight"].data).tobytes() == \
        gguf.quants.quantize(emb * 2, QT.Q4_0).tobytes()
    assert r["norm.weight"].tensor_type == QT.F32
    assert np.array_equal(np.asarray(r["norm.weight"].data), np.ones(64, dtype=np.float32))
