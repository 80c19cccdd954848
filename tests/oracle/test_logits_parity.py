"""Logit parity of our forward pass with llama.cpp (llama-cpp-python).

Both sides get the same token ids (llama.cpp tokenizes the chat-rendered
prompts, so only the model is under test here). For each model and prompt
we compare the logits of every prompt position and of a 64-token greedy
continuation. llama.cpp runs with an f32 KV cache, like ours. The policy
(parity.py): bit-identical logits where llama.cpp's build shares our
kernels' instruction set, a measured tolerance elsewhere.
"""
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import llama_cpp  # noqa: F401
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from make_random_gguf import llama3_rope_freqs, write_random_llama  # noqa: E402
from parity import compare, llama_open, ours, render, theirs  # noqa: E402

N_GREEDY = 64
PROMPTS = [
    "What is the capital of France?",
    "Write a short poem about a lighthouse keeper who talks to the sea.",
    "Explain in two sentences why the sky is blue.",
    "List three things a blacksmith in a medieval village would worry about.",
    "You are a grumpy innkeeper. A traveler asks for a room. What do you say?",
    "Translate 'good morning, my friend' into Italian and Spanish.",
]


def prompt_tokens(model_path):
    import llama_cpp
    llm = llama_cpp.Llama(str(model_path), vocab_only=True, verbose=False)
    toks = [llm.tokenize(render(p).encode(), add_bos=False, special=True) for p in PROMPTS]
    del llm
    return toks


def check(path, toks_list, tool, tmp_path, quantized):
    runs = [ours(tool, path, t, N_GREEDY, tmp_path) for t in toks_list]
    compare(path.name, llama_open(path), runs, toks_list, quantized, N_GREEDY,
            f16_llm=lambda: llama_open(path, f16_kv=True))


@pytest.fixture(scope="module")
def toks_list(model_path):
    return prompt_tokens(model_path)


@pytest.fixture(scope="module")
def converted(model_path, lemonpc, tmp_models):
    out = {}
    for t in ("F32", "F16", "BF16", "Q8_0", "Q4_0"):
        p = tmp_models / f"smollm2-{t}.gguf"
        r = subprocess.run([str(lemonpc), "quantize", str(model_path), str(p), t],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        out[t] = p
    return out


def test_real_q4_1(model_path, toks_list, tool, tmp_path):
    check(model_path, toks_list, tool, tmp_path, quantized=True)


def test_real_q8_0(converted, toks_list, tool, tmp_path):
    check(converted["Q8_0"], toks_list, tool, tmp_path, quantized=True)


def test_real_q4_0(converted, toks_list, tool, tmp_path):
    """Q4_0 takes llama.cpp's repacked 8-row GEMM/GEMV orders (both sides
    repack every matrix with a multiple of 8 rows at load)."""
    check(converted["Q4_0"], toks_list, tool, tmp_path, quantized=True)


def test_real_f16(converted, toks_list, tool, tmp_path):
    """F16 weights: activations rounded to f16 first, as llama.cpp does (the
    rounding makes it chaotic like 8-bit activations: the quantized policy
    where the builds differ)."""
    check(converted["F16"], toks_list, tool, tmp_path, quantized=True)


def test_real_bf16(converted, toks_list, tool, tmp_path):
    """BF16 weights: activations rounded to bf16 first, as llama.cpp does."""
    check(converted["BF16"], toks_list, tool, tmp_path, quantized=True)


def test_real_f32(converted, toks_list, tool, tmp_path):
    check(converted["F32"], toks_list, tool, tmp_path, quantized=False)


@pytest.mark.parametrize("n", [129, 513])
def test_long_prompts(n, converted, model_path, tool, tmp_path):
    """Prompts that leave one token over: past our 128-token chunks (129) and
    past llama.cpp's 512-token micro-batch (513), where a lone token takes
    other reduction orders than a batch (F32 matmuls, attention)."""
    import llama_cpp
    vocab = llama_cpp.Llama(str(model_path), vocab_only=True, verbose=False)
    text = " ".join(PROMPTS) * 12
    toks = vocab.tokenize(render(text).encode(), add_bos=False, special=True)[:n]
    del vocab
    assert len(toks) == n
    for path, quantized in ((converted["F32"], False), (model_path, True)):
        runs = [ours(tool, path, toks, 4, tmp_path)]
        compare(f"{path.name} ({n} tokens)", llama_open(path, n_ctx=1024), runs, [toks], quantized,
                4, f16_llm=lambda p=path: llama_open(p, f16_kv=True, n_ctx=1024))


RANDOM_SHAPES = {
    # name: (layers, embd, heads, kv_heads, ff, theta, untied)
    "mha-4x4-tied": (2, 128, 4, 4, 256, 10000.0, False),
    "gqa-8x2-untied-theta500k": (3, 256, 8, 2, 512, 500000.0, True),
    "gqa-6x3-4layers": (4, 192, 6, 3, 384, 100000.0, True),
}


@pytest.mark.parametrize("qtype", ["F32", "F16", "Q8_0"])
@pytest.mark.parametrize("shape", sorted(RANDOM_SHAPES))
def test_random_shapes(shape, qtype, model_path, toks_list, tool, tmp_models, tmp_path):
    layers, embd, heads, kv, ff, theta, untied = RANDOM_SHAPES[shape]
    p = tmp_models / f"random-{shape}-{qtype}.gguf"
    write_random_llama(p, model_path, n_layer=layers, n_embd=embd, n_head=heads, n_head_kv=kv,
                       n_ff=ff, theta=theta, untied=untied, qtype=qtype,
                       seed=sum(map(ord, shape)))
    check(p, toks_list, tool, tmp_path, quantized=qtype != "F32")


@pytest.mark.parametrize("qtype", ["F32", "Q8_0"])
def test_llama3_shape(qtype, model_path, toks_list, tool, tmp_models, tmp_path):
    """Llama-3.2-1B's settings scaled down: GQA 4:1, rope base 500000, untied
    output, and rope_freqs.weight (Llama 3's rope scaling, factor 32, with the
    original context 8192 scaled to 64 so that every band of pairs -- kept,
    blended, slowed down -- turns within these prompts). Our rope divides
    the angles as ggml's rope cache does: the same policy as every shape."""
    hd, theta = 32, 500000.0
    freqs = llama3_rope_freqs(hd, theta, original_context=64)
    assert freqs[0] == 1.0 and freqs[-1] == 32.0 and any(1.0 < f < 32.0 for f in freqs)
    p = tmp_models / f"random-llama3-{qtype}.gguf"
    write_random_llama(p, model_path, n_layer=3, n_embd=256, n_head=8, n_head_kv=2, n_ff=512,
                       theta=theta, untied=True, qtype=qtype, seed=321, rope_freqs=freqs)
    check(p, toks_list, tool, tmp_path, quantized=qtype != "F32")
    # the divisors are applied by both sides: without them llama.cpp's
    # logits move far beyond the tolerance
    q = tmp_models / f"random-llama3-{qtype}-nofreqs.gguf"
    write_random_llama(q, model_path, n_layer=3, n_embd=256, n_head=8, n_head_kv=2, n_ff=512,
                       theta=theta, untied=True, qtype=qtype, seed=321)
    la, _, _ = theirs(llama_open(p), toks_list[0], 0)
    lb, _, _ = theirs(llama_open(q), toks_list[0], 0)
    assert np.abs(la - lb).max() > 1e-2 * np.abs(la).max()
