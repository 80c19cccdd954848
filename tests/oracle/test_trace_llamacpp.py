"""Every intermediate of our forward pass against llama.cpp's, op by op.

llama.cpp's graph callback (cb_eval, through llama-cpp-python's low-level
API) hands us each tensor it computes; lm_logits --trace writes ours under
the same names (lm_ctx_set_trace). On a build that shares our instruction
set (parity.py) every one must be bit-identical; the first that is not
names the op whose order we no longer follow, which is what to look at when
test_logits_parity fails. Elsewhere only the first layer's input norm
(no quantized matmul before it) is held exact, the rest reported.
"""
import ctypes
import os
import pathlib
import struct
import subprocess
import sys

import numpy as np
import pytest

import llama_cpp
from llama_cpp import llama_cpp as L  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from parity import EXACT, EXACT_WHY, render  # noqa: E402


class GgmlTensor(ctypes.Structure):
    """struct ggml_tensor of the ggml that llama-cpp-python 0.3.36 bundles."""
    _fields_ = [("type", ctypes.c_int), ("buffer", ctypes.c_void_p),
                ("ne", ctypes.c_int64 * 4), ("nb", ctypes.c_size_t * 4), ("op", ctypes.c_int),
                ("op_params", ctypes.c_int32 * 16), ("flags", ctypes.c_int32),
                ("src", ctypes.c_void_p * 10), ("view_src", ctypes.c_void_p),
                ("view_offs", ctypes.c_size_t), ("data", ctypes.c_void_p),
                ("name", ctypes.c_char * 64), ("extra", ctypes.c_void_p),
                ("padding", ctypes.c_char * 8)]


def llama_trace(model_path, toks):
    """{name#k: array} of every f32 tensor llama.cpp computes for one batch
    (k counts repeats of a name: Qcur-3#0 is the matmul, #2 after rope)."""
    dump, seen = {}, {}

    @L.ggml_backend_sched_eval_callback
    def cb(tp, ask, _):
        if ask:
            return True
        t = ctypes.cast(tp, ctypes.POINTER(GgmlTensor)).contents
        name = t.name.decode()
        k = seen.get(name, 0)
        seen[name] = k + 1
        if t.type == 0 and t.data:   # GGML_TYPE_F32
            ne, nb = list(t.ne), list(t.nb)
            span = sum((ne[i] - 1) * nb[i] for i in range(4)) + 4
            flat = np.frombuffer((ctypes.c_char * span).from_address(t.data), dtype=np.uint8)
            dump[f"{name}#{k}"] = np.lib.stride_tricks.as_strided(
                flat.view(np.float32) if span % 4 == 0 else flat[:span - span % 4].view(np.float32),
                shape=ne[::-1], strides=nb[::-1]).copy()
        return True

    model = L.llama_model_load_from_file(str(model_path).encode(), L.llama_model_default_params())
    assert model, f"llama.cpp cannot load {model_path}"
    cp = L.llama_context_default_params()
    cp.n_ctx, cp.n_batch, cp.n_ubatch = 512, 512, 512
    cp.n_threads = cp.n_threads_batch = 2
    cp.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_DISABLED
    cp.type_k = cp.type_v = 0   # f32 KV cache, like ours
    cp.cb_eval = cb
    ctx = L.llama_init_from_model(model, cp)
    batch = L.llama_batch_init(len(toks), 0, 1)
    try:
        for i, tok in enumerate(toks):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = tok, i, 1
            batch.seq_id[i][0], batch.logits[i] = 0, 1
        batch.n_tokens = len(toks)
        assert L.llama_decode(ctx, batch) == 0
    finally:
        L.llama_batch_free(batch)
        L.llama_free(ctx)
        L.llama_model_free(model)
    return dump


def our_trace(tool, model_path, toks, path):
    r = subprocess.run([str(tool("lm_logits")), str(model_path), ",".join(map(str, toks)),
                        "--trace", str(path), "--threads", "2"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    out = []
    with open(path, "rb") as f:
        while head := f.read(4):
            name = f.read(struct.unpack("<I", head)[0]).decode()
            rows, cols = struct.unpack("<ii", f.read(8))
            out.append((name, np.frombuffer(f.read(4 * rows * cols), np.float32).reshape(rows, cols)))
    return out


# our name -> which of llama.cpp's same-named tensors (Q and K after rope)
REPEAT = {"Qcur": 2, "Kcur": 2}


def test_every_intermediate_matches(model_path, tool, tmp_path):
    vocab = llama_cpp.Llama(str(model_path), vocab_only=True, verbose=False)
    toks = vocab.tokenize(render("Who guards the northern gate of the city?").encode(),
                          add_bos=False, special=True)
    del vocab
    theirs = llama_trace(model_path, toks)
    ours = our_trace(tool, model_path, toks, tmp_path / "trace.bin")
    n_layer = sum(1 for name, _ in ours if name.startswith("l_out-"))
    assert n_layer == 30 and len(ours) == 13 * n_layer + 2, [n for n, _ in ours][:20]
    report = []
    for name, a in ours:
        base = name.rsplit("-", 1)[0] if name[-1].isdigit() else name
        b = theirs[f"{name}#{REPEAT.get(base, 0)}"].reshape(a.shape[0], -1)
        assert b.shape == a.shape, f"{name}: ours {a.shape}, llama.cpp {b.shape}"
        differ = int((a.view(np.uint32) != b.view(np.uint32)).sum())
        rel = float(np.abs(a.astype(np.float64) - b).max() / (np.abs(b).max() + 1e-30))
        report.append((name, differ, a.size, rel))
    first = next(((n, d, s, r) for n, d, s, r in report if d), None)
    print(f"{len(report)} intermediates; first difference: {first} [{EXACT_WHY}]")
    if EXACT:
        assert first is None, (f"{first[0]}: {first[1]}/{first[2]} values differ from llama.cpp's "
                               f"(max rel {first[3]:.2e}); that op no longer follows its order")
    else:
        assert report[0][0] == "attn_norm-0" and report[0][1] == 0
