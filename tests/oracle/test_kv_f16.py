"""Our f16 KV cache against llama.cpp's (its default cache type).

With an f16 cache llama.cpp's CPU backend (no flash attention) stores K and
V rounded to f16, rounds q and the softmax weights to f16 for the two
attention matmuls, and reduces them with tinyBLAS in a batch and
ggml_vec_dot_f16 for a lone token. Our f16 attention does the same
(docs/ENGINE.md), so the policy is parity.py's: bit-identical logits for
every prompt row and every greedy decode step where llama.cpp's build shares
our kernels' instruction set; elsewhere the measured tolerance, its floor
being llama.cpp's own f16-vs-f32 cache difference.
"""
import pathlib
import sys

import pytest

import llama_cpp  # noqa: F401
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from make_random_gguf import write_random_llama  # noqa: E402
from parity import compare, kl, llama_open, ours, render  # noqa: E402

N_GREEDY = 64
PROMPTS = [
    "What is the capital of France?",
    "You are a grumpy innkeeper. A traveler asks for a room. What do you say?",
    "List three things a blacksmith in a medieval village would worry about.",
]


def tokenize(model_path, texts):
    import llama_cpp
    vocab = llama_cpp.Llama(str(model_path), vocab_only=True, verbose=False)
    toks = [vocab.tokenize(render(t).encode(), add_bos=False, special=True) for t in texts]
    del vocab
    return toks


def check(path, toks_list, tool, tmp_path, quantized, greedy=N_GREEDY, n_ctx=512):
    runs = [ours(tool, path, t, greedy, tmp_path, kv="f16", n_ctx=n_ctx) for t in toks_list]
    # llm: llama.cpp with its f16 cache; the relaxed bound's floor is its
    # difference from its own f32 cache
    compare(f"{path.name} f16 KV", llama_open(path, f16_kv=True, n_ctx=n_ctx), runs, toks_list,
            quantized, greedy, f16_llm=lambda: llama_open(path, n_ctx=n_ctx))


def test_real_q4_1(model_path, tool, tmp_path):
    check(model_path, tokenize(model_path, PROMPTS), tool, tmp_path, quantized=True)


@pytest.mark.parametrize("n,greedy", [(250, 12), (505, 12), (513, 4)])
def test_long_inputs_grow_the_cache(n, greedy, model_path, tool, tmp_path):
    """Our cache starts at 256 positions and doubles: decoding past 256 and
    past 512 moves the cached f16 rows to a wider one. 513 leaves one token
    past llama.cpp's 512-token micro-batch, where a lone token takes the
    vec_dot orders."""
    text = " ".join(PROMPTS) * 20
    toks = tokenize(model_path, [text])[0][:n]
    assert len(toks) == n
    check(model_path, [toks], tool, tmp_path, quantized=True, greedy=greedy, n_ctx=1024)


def test_head_dim_not_a_multiple_of_32(model_path, tool, tmp_models, tmp_path):
    """head_dim 48 (not a multiple of 32): a lone token's scores leave the
    8-keys-per-vector path for a gathered ggml_vec_dot_f16 with leftovers."""
    p = tmp_models / "random-hd48-f16kv.gguf"
    write_random_llama(p, model_path, n_layer=2, n_embd=192, n_head=4, n_head_kv=2, n_ff=256,
                       qtype="F32", seed=48)
    check(p, tokenize(model_path, PROMPTS[:2]), tool, tmp_path, quantized=True, greedy=16)


def test_f16_cache_costs_what_it_costs_llama_cpp(model_path, tool, tmp_path):
    """What the f16 cache costs in accuracy: our f16 logits against our f32
    ones (themselves llama.cpp's f32 logits) differ by no more than twice
    what llama.cpp's own two cache types differ by, and pick the same top
    token at >= 96% of the rows."""
    import numpy as np
    from parity import theirs
    toks_list = tokenize(model_path, PROMPTS)
    f32_llm, f16_llm = llama_open(model_path), llama_open(model_path, f16_kv=True)
    kls, floor, agree, n = [], [], 0, 0
    for toks in toks_list:
        a = ours(tool, model_path, toks, 0, tmp_path, kv="f16")[0]
        b = ours(tool, model_path, toks, 0, tmp_path, kv="f32")[0]
        assert not np.array_equal(a, b), "the f16 cache changed nothing: is --kv f16 used?"
        kls.append(kl(b, a))
        floor.append(kl(theirs(f32_llm, toks, 0)[0], theirs(f16_llm, toks, 0)[0]))
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        n += len(toks)
    mean_kl, ref = float(np.concatenate(kls).mean()), float(np.concatenate(floor).mean())
    print(f"our f16 vs f32 cache: mean KL {mean_kl:.2e} (llama.cpp's f16 vs f32: {ref:.2e}), "
          f"top-1 {agree / n:.4f}")
    assert mean_kl <= max(1e-3, 2 * ref), f"mean KL {mean_kl:.3e} vs llama.cpp's {ref:.3e}"
    assert agree / n >= 0.96, f"top-1 agreement {agree / n:.4f}"
