"""Logit parity of our forward pass with llama.cpp (llama-cpp-python).

Both sides get the same token ids (llama.cpp tokenizes the chat-rendered
prompts, so only the model is under test here). For each model and prompt
we compare the logits of every prompt position (mean KL(llama.cpp || ours),
top-1 agreement) and a 64-token greedy continuation.

llama.cpp runs with an f32 KV cache, like ours. Its default f16 cache is
used only to measure a noise floor: with 8-bit quantized weights both
programs quantize activations to 8 bits before every matmul, so an
ulp-level difference anywhere (summation order, FMA, exp) flips a rounding
now and then and the flip propagates. We measured this: accumulating our
own attention dot products in double instead of float moves our Q8_0
logits by mean KL ~3e-3 -- more than the 1e-3 a plain bound would allow.
So for quantized models the bound is the larger of 1e-3 and twice the KL
between llama.cpp's own two cache settings, and a greedy divergence is
accepted only at a near-tie. F32 models have no such amplification and are
held to tight fixed bounds.
"""
import os
import pathlib
import subprocess
import sys

# llama.cpp's OpenMP threads spin while waiting; on a busy 2-core machine that
# made it ~20x slower. Must be set before libgomp loads (first llama_cpp import).
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numpy as np
import pytest

llama_cpp = pytest.importorskip("llama_cpp")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from make_random_gguf import write_random_llama  # noqa: E402

N_GREEDY = 64
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
PROMPTS = [
    "What is the capital of France?",
    "Write a short poem about a lighthouse keeper who talks to the sea.",
    "Explain in two sentences why the sky is blue.",
    "List three things a blacksmith in a medieval village would worry about.",
    "You are a grumpy innkeeper. A traveler asks for a room. What do you say?",
    "Translate 'good morning, my friend' into Italian and Spanish.",
]
# Near-tie for an accepted greedy divergence on quantized models: llama.cpp's
# own logit gap between its token and ours. Our per-position max |logit
# difference| on the real Q8_0/Q4_1 model is ~0.5-2 (measured), so a gap
# below 1.0 is within the noise.
NEAR_TIE = 1.0


def render(user):
    return (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
            f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")


def log_softmax(x):
    x = x.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def kl(p_logits, q_logits):
    lp, lq = log_softmax(p_logits), log_softmax(q_logits)
    return (np.exp(lp) * (lp - lq)).sum(axis=-1)


def llama_open(path, f16_kv=False):
    kw = {} if f16_kv else {"type_k": 0, "type_v": 0}   # GGML_TYPE_F32 = 0
    return llama_cpp.Llama(str(path), n_ctx=512, n_threads=2, n_batch=512, logits_all=True,
                           seed=0, verbose=False, **kw)


def prompt_tokens(model_path):
    llm = llama_cpp.Llama(str(model_path), vocab_only=True, verbose=False)
    toks = [llm.tokenize(render(p).encode(), add_bos=False, special=True) for p in PROMPTS]
    del llm
    return toks


def llama_logits(llm, toks, greedy):
    llm.reset()
    llm.eval(toks)
    logits = np.array(llm.scores[:len(toks)], dtype=np.float32)
    out, steps = [], []
    last = logits[-1]
    for i in range(greedy):
        t = int(np.argmax(last))
        out.append(t)
        steps.append(last.copy())
        if i + 1 < greedy:
            llm.eval([t])
            last = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
    return logits, out, steps


def our_logits(tool, path, toks, greedy, tmp_path):
    out = tmp_path / "logits.bin"
    r = subprocess.run([str(tool("lm_logits")), str(path), ",".join(map(str, toks)),
                        "--out", str(out), "--greedy", str(greedy), "--threads", "2"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    lines = dict(line.split(" ", 1) for line in r.stdout.strip().splitlines())
    n_vocab = int(lines["n_vocab"])
    logits = np.fromfile(out, dtype=np.float32).reshape(len(toks), n_vocab)
    ids = [int(x) for x in lines["greedy"].split()] if greedy else []
    return logits, ids


def compare(path, toks_list, tool, tmp_path, quantized):
    llm = llama_open(path)
    kls, agree, n_pos, report = [], 0, 0, []
    floor_kls = []
    ref_all = []
    for toks in toks_list:
        ref, ref_ids, ref_steps = llama_logits(llm, toks, N_GREEDY)
        ref_all.append(ref)
        ours, our_ids = our_logits(tool, path, toks, N_GREEDY, tmp_path)
        k = kl(ref, ours)
        kls.append(k)
        agree += int((ref.argmax(-1) == ours.argmax(-1)).sum())
        n_pos += len(toks)
        if our_ids != ref_ids:
            i = next(j for j, (a, b) in enumerate(zip(ref_ids, our_ids)) if a != b)
            gap = float(ref_steps[i][ref_ids[i]] - ref_steps[i][our_ids[i]])
            report.append((i, gap))
            assert quantized and gap < NEAR_TIE, (
                f"{path.name}: greedy continuation differs at step {i}: llama.cpp "
                f"{ref_ids[i]} vs ours {our_ids[i]} (llama.cpp logit gap {gap:.3f})")
    del llm
    mean_kl = float(np.concatenate(kls).mean())
    top1 = agree / n_pos
    if quantized:
        llm16 = llama_open(path, f16_kv=True)
        for toks, ref in zip(toks_list, ref_all):
            llm16.reset()
            llm16.eval(toks)
            alt = np.array(llm16.scores[:len(toks)], dtype=np.float32)
            floor_kls.append(kl(ref, alt))
        del llm16
        floor = float(np.concatenate(floor_kls).mean())
        bound = max(1e-3, 2 * floor)
        print(f"{path.name}: mean KL {mean_kl:.2e} (bound {bound:.2e}, llama.cpp f16-vs-f32 "
              f"KV {floor:.2e}), top-1 {top1:.4f}, greedy divergences {report}")
        assert mean_kl <= bound, f"{path.name}: mean KL {mean_kl:.3e} > {bound:.3e}"
        assert top1 >= 0.96, f"{path.name}: top-1 agreement {top1:.4f}"
    else:
        print(f"{path.name}: mean KL {mean_kl:.2e}, top-1 {top1:.4f}")
        assert mean_kl <= 1e-6, f"{path.name}: mean KL {mean_kl:.3e} > 1e-6"
        assert top1 >= 0.99, f"{path.name}: top-1 agreement {top1:.4f}"


@pytest.fixture(scope="module")
def toks_list(model_path):
    return prompt_tokens(model_path)


@pytest.fixture(scope="module")
def converted(model_path, lemonpc, tmp_models):
    out = {}
    for t in ("F32", "Q8_0"):
        p = tmp_models / f"smollm2-{t}.gguf"
        r = subprocess.run([str(lemonpc), "quantize", str(model_path), str(p), t],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        out[t] = p
    return out


def test_real_q4_1(model_path, toks_list, tool, tmp_path):
    compare(model_path, toks_list, tool, tmp_path, quantized=True)


def test_real_q8_0(converted, toks_list, tool, tmp_path):
    compare(converted["Q8_0"], toks_list, tool, tmp_path, quantized=True)


def test_real_f32(converted, toks_list, tool, tmp_path):
    compare(converted["F32"], toks_list, tool, tmp_path, quantized=False)


RANDOM_SHAPES = {
    # name: (layers, embd, heads, kv_heads, ff, theta, untied)
    "mha-4x4-tied": (2, 128, 4, 4, 256, 10000.0, False),
    "gqa-8x2-untied-theta500k": (3, 256, 8, 2, 512, 500000.0, True),
    "gqa-6x3-4layers": (4, 192, 6, 3, 384, 100000.0, True),
}


@pytest.mark.parametrize("qtype", ["F32", "Q8_0"])
@pytest.mark.parametrize("shape", sorted(RANDOM_SHAPES))
def test_random_shapes(shape, qtype, model_path, toks_list, tool, tmp_models, tmp_path):
    layers, embd, heads, kv, ff, theta, untied = RANDOM_SHAPES[shape]
    p = tmp_models / f"random-{shape}-{qtype}.gguf"
    write_random_llama(p, model_path, n_layer=layers, n_embd=embd, n_head=heads, n_head_kv=kv,
                       n_ff=ff, theta=theta, untied=untied, qtype=qtype,
                       seed=sum(map(ord, shape)))
    compare(p, toks_list, tool, tmp_path, quantized=qtype != "F32")
