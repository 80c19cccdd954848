"""The trainer's own f32 forward pass (src/train, separate from the inference
engine) and its LoRA adapter files, against llama.cpp (llama-cpp-python).

On F32 weights llama.cpp computes in f32 as we do, so logits must agree to
rounding (mean KL <= 1e-6, every top-1 equal) -- with no adapter, and with an
adapter that our trainer wrote and llama.cpp loads. The adapter is scaled up
(alpha/r = 16, or 128 for q,k alone) so that it moves the output a lot (KL >= 0.1 from the base):
agreement then shows llama.cpp reads our tensor names, shapes, alpha, and
Q/K row order the way we meant them; a q,k-only adapter isolates the
permuted projections. On the Q4_1 file llama.cpp also quantizes activations
to 8 bits, which we do not: there the bound is loose (mean KL <= 1e-2,
measured ~2.5e-3) and only catches gross errors in our dequantization.
"""
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import llama_cpp
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from parity import kl  # noqa: E402

TEXT = ("<|im_start|>user\nWho guards the northern gate of the city?<|im_end|>\n"
        "<|im_start|>assistant\nThe old captain Maren does, with two of her sons, "
        "as her mother did before her.<|im_end|>\n")


@pytest.fixture(scope="module")
def f32_model(model_path, lemonpc, tmp_models):
    p = tmp_models / "smollm2-train-F32.gguf"
    r = subprocess.run([str(lemonpc), "quantize", str(model_path), str(p), "F32"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return p


@pytest.fixture(scope="module")
def tokens(model_path):
    llm = llama_cpp.Llama(str(model_path), vocab_only=True, verbose=False)
    t = llm.tokenize(TEXT.encode(), add_bos=False, special=True)
    del llm
    return t


def ours(tool, model, toks, tmp_path, *extra):
    out = tmp_path / "logits.bin"
    r = subprocess.run([str(tool("lm_train_logits")), str(model), ",".join(map(str, toks)),
                        "--out", str(out), *map(str, extra)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return np.fromfile(out, dtype=np.float32).reshape(len(toks), -1)


def theirs(model, toks, lora=None):
    kw = {"lora_path": str(lora)} if lora else {}
    llm = llama_cpp.Llama(str(model), n_ctx=512, n_threads=2, n_batch=512, logits_all=True,
                          seed=0, verbose=False, type_k=0, type_v=0, **kw)
    llm.eval(toks)
    out = np.array(llm.scores[:len(toks)], dtype=np.float32)
    del llm
    return out


def test_f32_forward_matches(f32_model, tokens, tool, tmp_path):
    a, b = ours(tool, f32_model, tokens, tmp_path), theirs(f32_model, tokens)
    k = kl(b, a)
    print(f"F32: mean KL {k.mean():.2e}, max |dlogit| {np.abs(a - b).max():.2e}")
    assert k.mean() <= 1e-6
    assert (a.argmax(-1) == b.argmax(-1)).all()


@pytest.mark.parametrize("targets,alpha", [("all", 128), ("q,k", 1024)])
def test_lora_adapter_matches(f32_model, tokens, tool, tmp_path, targets, alpha):
    adapter = tmp_path / f"adapter-{targets.replace(',', '')}.gguf"
    base = ours(tool, f32_model, tokens, tmp_path)
    a = ours(tool, f32_model, tokens, tmp_path, "--write-lora", adapter, "--rank", 8,
             "--alpha", alpha, "--targets", targets)
    b = theirs(f32_model, tokens, lora=adapter)
    effect, k = kl(base, a).mean(), kl(b, a).mean()
    print(f"LoRA {targets}: effect KL {effect:.3f}, ours vs llama.cpp mean KL {k:.2e}")
    assert effect >= 0.1, "the adapter barely changes the output: the check would be vacuous"
    assert k <= 1e-6
    assert (a.argmax(-1) == b.argmax(-1)).all()
    # reading the adapter back gives the same numbers
    c = ours(tool, f32_model, tokens, tmp_path, "--lora", adapter)
    assert np.array_equal(a, c)


def test_q4_1_forward_close(model_path, tokens, tool, tmp_path):
    a, b = ours(tool, model_path, tokens, tmp_path), theirs(model_path, tokens)
    k = kl(b, a).mean()
    top1 = (a.argmax(-1) == b.argmax(-1)).mean()
    print(f"Q4_1: mean KL {k:.2e}, top-1 {top1:.3f}")
    assert k <= 1e-2 and top1 >= 0.9
