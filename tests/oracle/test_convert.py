"""`lemonpc quantize` and `lemonpc merge` write through one converter
(src/model/convert.c): a merge of an adapter whose delta is zero (B = 0) is
the quantize of the same model, tensor for tensor and key for key, except
the adapted matrices already in the target type, which a merge requantizes
(quantize copies them): those are gguf-py's quantize(dequantize(base)).
Both files load in llama.cpp and give the same logits there; the bytes do
not depend on the thread count."""
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import gguf
import llama_cpp  # noqa: F401
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from parity import llama_open, theirs  # noqa: E402

QTYPE = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_1": gguf.GGMLQuantizationType.Q4_1,
         "f16": gguf.GGMLQuantizationType.F16}
ADAPTED = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
TOKENS = [1, 504, 3575, 282, 4649, 314, 7042, 30, 378, 3575, 282, 4521, 314]


def run(cmd):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="module")
def zero_adapter(tool, model_path, tmp_path_factory):
    p = tmp_path_factory.mktemp("convert") / "zero.gguf"
    run([tool("lm_make_adapter"), model_path, p, "--rank", 4, "--alpha", 8, "--b-std", 0])
    r = gguf.GGUFReader(str(p))
    bs = [t for t in r.tensors if t.name.endswith(".lora_b")]
    assert len(bs) == 7 * 30 and all(not np.asarray(t.data).any() for t in bs)
    return p


def fields(reader):
    return [(name, f.types, f.contents()) for name, f in reader.fields.items()
            if not name.startswith("GGUF.")]


@pytest.mark.parametrize("ty", ["q8_0", "q4_1", "f16"])
def test_quantize_equals_zero_merge(ty, lemonpc, model_path, zero_adapter, tmp_path):
    q, m = tmp_path / f"quantize.{ty}.gguf", tmp_path / f"merge.{ty}.gguf"
    run([lemonpc, "quantize", model_path, q, ty])
    run([lemonpc, "merge", model_path, zero_adapter, m, "--type", ty])
    src = {t.name: t for t in gguf.GGUFReader(str(model_path)).tensors}
    rq, rm = gguf.GGUFReader(str(q)), gguf.GGUFReader(str(m))
    # the same metadata, in the same order: file type and quantization
    # version set alike
    assert fields(rq) == fields(rm)
    kv = {name: f.contents() for name, f in rq.fields.items()}
    assert kv["general.file_type"] == {"q8_0": 7, "q4_1": 3, "f16": 1}[ty]
    assert kv["general.quantization_version"] == 2
    assert [t.name for t in rq.tensors] == [t.name for t in rm.tensors] == list(src)
    requantized = 0
    for a, b in zip(rq.tensors, rm.tensors):
        assert a.tensor_type == b.tensor_type and list(a.shape) == list(b.shape), a.name
        s = src[a.name]
        adapted = a.name.split(".")[2] in ADAPTED if a.name.startswith("blk.") else False
        if adapted and s.tensor_type == QTYPE[ty]:
            # merge: dequantize, add the (zero) delta, quantize again
            want = gguf.quants.quantize(gguf.quants.dequantize(s.data, s.tensor_type), QTYPE[ty])
            assert np.asarray(b.data).tobytes() == np.asarray(want).tobytes(), a.name
            assert np.asarray(a.data).tobytes() == np.asarray(s.data).tobytes(), a.name
            requantized += 1
        else:
            assert np.asarray(a.data).tobytes() == np.asarray(b.data).tobytes(), a.name
    assert requantized == (7 * 30 if ty == "q4_1" else 0)
    # llama.cpp loads both; where every byte is the same, so are its logits
    lq, _, _ = theirs(llama_open(q), TOKENS, 0)
    lm, _, _ = theirs(llama_open(m), TOKENS, 0)
    assert np.isfinite(lq).all() and np.isfinite(lm).all()
    if ty != "q4_1":
        assert np.array_equal(lq, lm)


def test_threads_do_not_change_bytes(lemonpc, tool, model_path, tmp_path):
    """A real (non-zero) merge and a quantize, on one thread and on two."""
    ad = tmp_path / "ad.gguf"
    run([tool("lm_make_adapter"), model_path, ad, "--rank", 4, "--alpha", 8, "--b-std", 0.02])
    out = {}
    for n in (1, 2):
        out["m", n] = tmp_path / f"m{n}.gguf"
        run([lemonpc, "merge", model_path, ad, out["m", n], "--type", "q8_0", "--threads", n])
        out["q", n] = tmp_path / f"q{n}.gguf"
        run([lemonpc, "quantize", model_path, out["q", n], "q4_0", "--threads", n])
    assert out["m", 1].read_bytes() == out["m", 2].read_bytes()
    assert out["q", 1].read_bytes() == out["q", 2].read_bytes()
    # the adapter did change the merged weights
    a = {t.name: t for t in gguf.GGUFReader(str(out["m", 1])).tensors}
    z = tmp_path / "plain.gguf"
    run([lemonpc, "quantize", model_path, z, "q8_0"])
    b = {t.name: t for t in gguf.GGUFReader(str(z)).tensors}
    name = "blk.0.attn_q.weight"
    assert np.asarray(a[name].data).tobytes() != np.asarray(b[name].data).tobytes()
