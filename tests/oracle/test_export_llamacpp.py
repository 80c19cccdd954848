"""Export interop with llama.cpp (llama-cpp-python) on the real SmolLM2.

An adapter with random non-zero A and B (tests/tools/lm_make_adapter; B ~
N(0, 0.05^2), alpha/r = 2, all seven projections) is applied

(a) at run time by us (lm_ctx_set_adapter, through lm_logits) and by
    llama.cpp (Llama(..., lora_path=...)) on the same base: logits of every
    prompt position and a greedy continuation compared. F32 base: tight
    bounds (mean KL <= 1e-6, identical greedy). Q8_0 and Q4_1 bases: the
    policy of test_logits_parity.py (mean KL <= max(1e-3, 2x llama.cpp's own
    f16-vs-f32 KV floor), top-1 >= 0.96, a greedy divergence only at a
    near-tie of llama.cpp's logits);
(b) merged by `lemonpc merge` into a plain GGUF that llama.cpp loads with no
    adapter: F32 merge vs our runtime base+adapter under the tight bounds;
    Q8_0 merge vs our own run of the same merged file under the quantized
    policy (and `lemonpc generate --adapter` prints what llama.cpp prints).

The adapter must move the output (KL from the base >= 0.05), or agreement
would prove nothing.
"""
import pathlib
import subprocess
import sys

import numpy as np
import pytest

llama_cpp = pytest.importorskip("llama_cpp")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from test_logits_parity import NEAR_TIE, kl, render  # noqa: E402

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


def ours(tool, model, toks, tmp_path, adapter=None):
    out = tmp_path / "logits.bin"
    extra = ["--adapter", adapter] if adapter else []
    r = run([tool("lm_logits"), model, ",".join(map(str, toks)), "--out", out,
             "--greedy", N_GREEDY, "--threads", 2, *extra])
    lines = dict(line.split(" ", 1) for line in r.stdout.strip().splitlines())
    logits = np.fromfile(out, dtype=np.float32).reshape(len(toks), int(lines["n_vocab"]))
    return logits, [int(x) for x in lines["greedy"].split()]


def llama_open(path, lora=None, f16_kv=False):
    kw = {} if f16_kv else {"type_k": 0, "type_v": 0}
    if lora:
        kw["lora_path"] = str(lora)
    return llama_cpp.Llama(str(path), n_ctx=512, n_threads=2, n_batch=512, logits_all=True,
                           seed=0, verbose=False, **kw)


def theirs(llm, toks, greedy=N_GREEDY):
    llm.reset()
    llm.eval(toks)
    logits = np.array(llm.scores[:len(toks)], dtype=np.float32)
    ids, steps, last = [], [], logits[-1]
    for i in range(greedy):
        t = int(np.argmax(last))
        ids.append(t)
        steps.append(last.copy())
        if i + 1 < greedy:
            llm.eval([t])
            last = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
    return logits, ids, steps


def compare(label, llm, llm16, our_runs, toks_list, quantized):
    """llm: llama.cpp side; our_runs: [(logits, greedy ids)] per prompt."""
    kls, agree, n_pos, report, floors = [], 0, 0, [], []
    for toks, (a, a_ids) in zip(toks_list, our_runs):
        b, b_ids, steps = theirs(llm, toks)
        kls.append(kl(b, a))
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        n_pos += len(toks)
        if a_ids != b_ids:
            i = next(j for j, (x, y) in enumerate(zip(b_ids, a_ids)) if x != y)
            gap = float(steps[i][b_ids[i]] - steps[i][a_ids[i]])
            report.append((i, gap))
            assert quantized and gap < NEAR_TIE, (
                f"{label}: greedy differs at step {i}: llama.cpp {b_ids[i]} vs ours "
                f"{a_ids[i]} (llama.cpp logit gap {gap:.3f})")
        if quantized:
            alt, _, _ = theirs(llm16, toks, greedy=0)
            floors.append(kl(b, alt))
    mean_kl, top1 = float(np.concatenate(kls).mean()), agree / n_pos
    if quantized:
        bound = max(1e-3, 2 * float(np.concatenate(floors).mean()))
        print(f"{label}: mean KL {mean_kl:.2e} (bound {bound:.2e}), top-1 {top1:.4f}, "
              f"greedy divergences {report}")
        assert mean_kl <= bound and top1 >= 0.96
    else:
        print(f"{label}: mean KL {mean_kl:.2e}, top-1 {top1:.4f}")
        assert mean_kl <= 1e-6 and top1 >= 0.99


def test_adapter_moves_output(bases, adapter, toks_list, tool, tmp_path):
    base, _ = ours(tool, bases["F32"], toks_list[0], tmp_path)
    with_a, _ = ours(tool, bases["F32"], toks_list[0], tmp_path, adapter)
    effect = float(kl(base, with_a).mean())
    print(f"adapter effect: mean KL from the base {effect:.3f}")
    assert effect >= 0.05


@pytest.mark.parametrize("qtype", ["F32", "Q8_0", "Q4_1"])
def test_runtime_adapter_vs_llamacpp(qtype, bases, adapter, toks_list, tool, tmp_path):
    runs = [ours(tool, bases[qtype], t, tmp_path, adapter) for t in toks_list]
    quantized = qtype != "F32"
    llm = llama_open(bases[qtype], lora=adapter)
    llm16 = llama_open(bases[qtype], lora=adapter, f16_kv=True) if quantized else None
    compare(f"{qtype} base + adapter", llm, llm16, runs, toks_list, quantized)


def test_merged_f32_in_llamacpp(bases, adapter, toks_list, tool, lemonpc, tmp_models, tmp_path):
    merged = tmp_models / "export-merged-F32.gguf"
    run([lemonpc, "merge", bases["Q4_1"], adapter, merged, "--type", "f32"])
    # ours: the Q4_1 file dequantizes to exactly the F32 base, so this is base+adapter
    runs = [ours(tool, bases["F32"], t, tmp_path, adapter) for t in toks_list]
    compare("merged F32 (llama.cpp) vs runtime base+adapter", llama_open(merged), None, runs,
            toks_list, quantized=False)


def test_merged_q8_0_in_llamacpp(bases, adapter, toks_list, tool, lemonpc, tmp_models, tmp_path):
    merged = tmp_models / "export-merged-Q8_0.gguf"
    run([lemonpc, "merge", bases["F32"], adapter, merged, "--type", "q8_0"])
    runs = [ours(tool, merged, t, tmp_path) for t in toks_list]
    compare("merged Q8_0", llama_open(merged), llama_open(merged, f16_kv=True), runs, toks_list,
            quantized=True)


def test_generate_with_adapter(bases, adapter, lemonpc):
    """`lemonpc generate --adapter` on the F32 base prints llama.cpp's greedy text."""
    prompt = PROMPTS[0]
    r = run([lemonpc, "generate", bases["F32"], "--adapter", adapter, "--temp", 0, "-n", 24,
             "-t", 2, "-p", prompt])
    llm = llama_open(bases["F32"], lora=adapter)
    toks = llm.tokenize(render(prompt).encode(), add_bos=False, special=True)
    _, ids, _ = theirs(llm, toks, greedy=24)
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
    base, _ = ours(tool, bases["F32"], toks_list[0], tmp_path)
    moved = float(kl(base, runs[0][0]).mean())
    print(f"full fine-tune moved the output by mean KL {moved:.3e}")
    assert moved >= 1e-4
    compare("full fine-tune F32 (llama.cpp) vs ours", llama_open(tuned), None, runs, toks_list,
            quantized=False)
    q8 = tmp_path / "tuned-q8_0.gguf"
    run([lemonpc, "quantize", tuned, q8, "Q8_0"])
    runs = [ours(tool, q8, t, tmp_path) for t in toks_list]
    compare("full fine-tune Q8_0", llama_open(q8), llama_open(q8, f16_kv=True), runs, toks_list,
            quantized=True)
