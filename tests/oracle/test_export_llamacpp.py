"""Export interop with llama.cpp (llama-cpp-python) on the real SmolLM2.

An adapter with random non-zero A and B (tests/tools/lm_make_adapter; B ~
N(0, 0.05^2), alpha/r = 2, all seven projections) is applied

(a) at run time by us (lm_ctx_set_adapter, through lm_logits) and by
    llama.cpp (Llama(..., lora_path=...)) on the same base (F32, Q8_0, Q4_1):
    logits of every prompt position and of a greedy continuation compared
    under the policy of parity.py (bit-identical on a matching build);
(b) merged by `lemonpc merge` into a plain GGUF that llama.cpp loads with no
    adapter: the F32 merge vs our runtime base+adapter (a different
    computation: mean KL <= 1e-6, top-1 >= 0.99); the Q8_0 merge vs our own
    run of the same merged file under parity.py's policy (and `lemonpc
    generate --adapter` prints what llama.cpp prints).

(c) the same adapter with its factors in F16 (`lm_make_adapter --type f16`:
    the same draws rounded to f16), which both sides keep in F16 and apply
    with F16 matmuls (the activations rounded to f16 first): logits compared
    under the same policy as (a).

The adapter must move the output (KL from the base >= 0.05), or agreement
would prove nothing.
"""
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import llama_cpp
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from parity import compare as parity_compare, kl, llama_open, ours as our_run, render, theirs  # noqa: E402

N_GREEDY = 32
PROMPTS = [
    "Who guards the northern gate of the city?",
    "Write a short poem about a lighthouse keeper who talks to the sea.",
    "You are a grumpy innkeeper. A traveler asks for a room. What do you say?",
]


def run(cmd):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{cmd[0]}: {r.stderr}"
    return r


@pytest.fixture(scope="module")
def toks_list(model_path):
    llm = llama_cpp.Llama(str(model_path), vocab_only=True, verbose=False)
    toks = [llm.tokenize(render(p).encode(), add_bos=False, special=True) for p in PROMPTS]
    del llm
    return toks


@pytest.fixture(scope="module")
def bases(model_path, lemonpc, tmp_models):
    out = {"Q4_1": model_path}
    for t in ("F32", "Q8_0"):
        p = tmp_models / f"export-base-{t}.gguf"
        run([lemonpc, "quantize", model_path, p, t])
        out[t] = p
    return out


@pytest.fixture(scope="module")
def adapter(bases, tool, tmp_models):
    p = tmp_models / "export-adapter.gguf"
    run([tool("lm_make_adapter"), bases["F32"], p, "--rank", 8, "--alpha", 16,
         "--b-std", 0.05, "--seed", 7])
    return p


@pytest.fixture(scope="module")
def adapter_f16(bases, tool, tmp_models):
    p = tmp_models / "export-adapter-f16.gguf"
    run([tool("lm_make_adapter"), bases["F32"], p, "--rank", 8, "--alpha", 16,
         "--b-std", 0.05, "--seed", 7, "--type", "f16"])
    return p


def ours(tool, model, toks, tmp_path, adapter=None):
    return our_run(tool, model, toks, N_GREEDY, tmp_path, adapter)


def compare(label, llm, f16_llm, runs, toks_list, quantized, exact=None):
    parity_compare(label, llm, runs, toks_list, quantized, N_GREEDY, f16_llm=f16_llm,
                   exact=exact)


def test_adapter_moves_output(bases, adapter, toks_list, tool, tmp_path):
    base = ours(tool, bases["F32"], toks_list[0], tmp_path)[0]
    with_a = ours(tool, bases["F32"], toks_list[0], tmp_path, adapter)[0]
    effect = float(kl(base, with_a).mean())
    print(f"adapter effect: mean KL from the base {effect:.3f}")
    assert effect >= 0.05


@pytest.mark.parametrize("qtype", ["F32", "Q8_0", "Q4_1"])
def test_runtime_adapter_vs_llamacpp(qtype, bases, adapter, toks_list, tool, tmp_path):
    runs = [ours(tool, bases[qtype], t, tmp_path, adapter) for t in toks_list]
    quantized = qtype != "F32"
    compare(f"{qtype} base + adapter", llama_open(bases[qtype], lora=adapter),
            lambda: llama_open(bases[qtype], lora=adapter, f16_kv=True), runs, toks_list,
            quantized)


@pytest.mark.parametrize("qtype", ["F32", "Q8_0", "Q4_1"])
def test_runtime_f16_adapter_vs_llamacpp(qtype, bases, adapter, adapter_f16, toks_list, tool,
                                         tmp_path):
    assert adapter_f16.stat().st_size < 0.55 * adapter.stat().st_size   # really F16
    runs = [ours(tool, bases[qtype], t, tmp_path, adapter_f16) for t in toks_list]
    quantized = qtype != "F32"
    compare(f"{qtype} base + F16 adapter", llama_open(bases[qtype], lora=adapter_f16),
            lambda: llama_open(bases[qtype], lora=adapter_f16, f16_kv=True), runs, toks_list,
            quantized)


def test_runtime_f16_adapter_rank12_vs_llamacpp(bases, toks_list, tool, tmp_models, tmp_path):
    """A rank that is not a multiple of 8: llama.cpp's batch matmul with B
    (k = rank) leaves tinyBLAS for ggml_vec_dot_f16, and so do we."""
    p = tmp_models / "export-adapter-f16-r12.gguf"
    run([tool("lm_make_adapter"), bases["F32"], p, "--rank", 12, "--alpha", 24,
         "--b-std", 0.05, "--seed", 11, "--type", "f16"])
    runs = [ours(tool, bases["F32"], toks_list[0], tmp_path, p)]
    compare("F32 base + rank-12 F16 adapter", llama_open(bases["F32"], lora=p), None, runs,
            toks_list[:1], quantized=False)


def test_merged_f32_in_llamacpp(bases, adapter, toks_list, tool, lemonpc, tmp_models, tmp_path):
    merged = tmp_models / "export-merged-F32.gguf"
    run([lemonpc, "merge", bases["Q4_1"], adapter, merged, "--type", "f32"])
    # ours: the Q4_1 file dequantizes to exactly the F32 base, so this is base+adapter
    runs = [ours(tool, bases["F32"], t, tmp_path, adapter) for t in toks_list]
    compare("merged F32 (llama.cpp) vs runtime base+adapter", llama_open(merged), None, runs,
            toks_list, quantized=False, exact=False)


def test_merged_q8_0_in_llamacpp(bases, adapter, toks_list, tool, lemonpc, tmp_models, tmp_path):
    merged = tmp_models / "export-merged-Q8_0.gguf"
    run([lemonpc, "merge", bases["F32"], adapter, merged, "--type", "q8_0"])
    runs = [ours(tool, merged, t, tmp_path) for t in toks_list]
    compare("merged Q8_0", llama_open(merged), lambda: llama_open(merged, f16_kv=True), runs,
            toks_list, quantized=True)


def test_generate_with_adapter(bases, adapter, lemonpc):
    """`lemonpc generate --adapter` on the F32 base prints llama.cpp's greedy text."""
    prompt = PROMPTS[0]
    r = run([lemonpc, "generate", bases["F32"], "--adapter", adapter, "--temp", 0, "-n", 24,
             "-t", 2, "-p", prompt])
    llm = llama_open(bases["F32"], lora=adapter)
    toks = llm.tokenize(render(prompt).encode(), add_bos=False, special=True)
    _, ids, _ = theirs(llm, toks, 24)
    end = [i for i, t in enumerate(ids) if t in (0, 2)]
    ids = ids[:end[0]] if end else ids
    want = llm.detokenize(ids).decode("utf-8", errors="replace")
    assert r.stdout.strip() == want.strip()
    plain = run([lemonpc, "generate", bases["F32"], "--temp", 0, "-n", 24, "-t", 2, "-p", prompt])
    assert plain.stdout.strip() != want.strip(), "adapter made no difference to the text"


def test_full_finetune_model_runs(model_path, bases, toks_list, tool, lemonpc, tmp_path):
    """A full fine-tune's checkpoint (run/last/model.gguf) is a model as it is:
    it carries the base's tokenizer and template, llama.cpp loads it and
    agrees with our runtime under the F32 bounds, and `lemonpc quantize`
    makes a Q8_0 of it that llama.cpp also runs. The weights must have moved
    (KL from the base), or agreement would only re-test the base."""
    data = tmp_path / "train.jsonl"
    data.write_text("".join(
        '{"messages": [{"role": "user", "content": "Who guards the %s gate?"}, '
        '{"role": "assistant", "content": "Captain Mara guards the %s gate, friend."}]}\n'
        % (w, w) for w in ("north", "south", "east", "west")))
    run([lemonpc, "train", "--model", model_path, "--data", data, "--out", tmp_path / "run",
         "--full", "--lr", "1e-3", "--epochs", 1, "--batch", 2, "--seq", 48, "--warmup", 0,
         "--threads", 2, "--seed", 1])
    tuned = tmp_path / "run" / "last" / "model.gguf"
    runs = [ours(tool, tuned, t, tmp_path) for t in toks_list]
    base = ours(tool, bases["F32"], toks_list[0], tmp_path)[0]
    moved = float(kl(base, runs[0][0]).mean())
    print(f"full fine-tune moved the output by mean KL {moved:.3e}")
    assert moved >= 1e-4
    compare("full fine-tune F32 (llama.cpp) vs ours", llama_open(tuned), None, runs, toks_list,
            quantized=False)
    q8 = tmp_path / "tuned-q8_0.gguf"
    run([lemonpc, "quantize", tuned, q8, "Q8_0"])
    runs = [ours(tool, q8, t, tmp_path) for t in toks_list]
    compare("full fine-tune Q8_0", llama_open(q8), lambda: llama_open(q8, f16_kv=True), runs,
            toks_list, quantized=True)
