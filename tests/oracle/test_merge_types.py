"""`lemonpc merge` of a real fine-tune (Orlando's shipped LoRA adapter,
examples/luminara/npc/) into the real Q4_1 SmolLM2 at each output type,
against the adapter applied at run time on the same base: the mean KL of
the next-token distributions over Orlando's prompts, next to the
fine-tune's own effect (KL of the base from base + adapter).

A fine-tune's change to a weight is smaller than Q4_1's rounding step, and
the Q4_1 base is already on that grid: a Q4_1 merge rounds most of the
change back to the base. F32 keeps it exactly, Q8_0 nearly. Measured
(2026-12): effect 0.523; KL to the runtime adapter F32 0.0027, Q8_0 0.0045,
Q4_1 0.462 (88% of the effect; 6.6% of the change kept). So `lemonpc
merge --type q4_1` refuses without --force (nothing written) and, forced,
warns; the KL numbers say what the refusal protects."""
import pathlib
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from parity import kl, ours  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
ADAPTER = ROOT / "examples" / "luminara" / "npc" / "orlando.adapter.gguf"
QUESTIONS = [
    "What do you think of the Order of Solar Truth?",
    "My cat keeps sleeping on my bread. What should I do?",
    "Can you show me how to use a smartphone?",
]
N_GREEDY = 8


def run(cmd, ok=True):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=900)
    if ok:
        assert r.returncode == 0, f"{cmd}: {r.stderr}"
    return r


@pytest.fixture(scope="module")
def prompts(model_path):
    """Questions to Orlando in ChatML, as token ids."""
    import llama_cpp
    llm = llama_cpp.Llama(str(model_path), vocab_only=True, verbose=False)
    toks = []
    for q in QUESTIONS:
        text = (f"<|im_start|>system\nYou are Orlando Marlo.<|im_end|>\n"
                f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n")
        toks.append(llm.tokenize(text.encode(), add_bos=False, special=True))
    del llm
    return toks


def mean_kl(tool, ref_runs, model, prompts, tmp_path, adapter=None):
    """Mean KL(ref || model) over every prompt position of every prompt."""
    total, n = 0.0, 0
    for toks, ref in zip(prompts, ref_runs):
        logits = ours(tool, model, toks, 0, tmp_path, adapter)[0]
        d = kl(ref, logits)
        total += float(d.sum())
        n += len(d)
    return total / n


def test_merge_types_against_runtime_adapter(model_path, lemonpc, tool, prompts, tmp_models, tmp_path):
    assert ADAPTER.exists(), f"{ADAPTER} missing"
    runtime = [ours(tool, model_path, t, 0, tmp_path, ADAPTER)[0] for t in prompts]
    effect = mean_kl(tool, runtime, model_path, prompts, tmp_path)
    merged, kept = {}, {}
    for t in ("f32", "q8_0", "q4_1"):
        out = tmp_models / f"orlando-merged-{t}.gguf"
        force = ["--force"] if t == "q4_1" else []
        r = run([lemonpc, "merge", model_path, ADAPTER, out, "--type", t, *force])
        kept[t] = float(r.stderr.split("matrices merged, ")[1].split("%")[0])
        merged[t] = mean_kl(tool, runtime, out, prompts, tmp_path)
    print(f"\nfine-tune effect (KL base vs runtime adapter): {effect:.4f}")
    for t in merged:
        print(f"merge {t}: KL vs runtime adapter {merged[t]:.5f} "
              f"({merged[t] / effect:.1%} of the effect), change kept {kept[t]:.1f}%")
    assert effect > 0.05, "the fine-tune does not move the output: nothing to measure"
    # F32 and Q8_0 differ from the runtime only as computations do (the
    # runtime's Q4_1 matmuls round the activations to 8 bits): 0.5% and 0.9%
    # of the effect here
    assert merged["f32"] < 0.02 * effect and kept["f32"] == 100.0
    assert merged["q8_0"] < 0.05 * effect and kept["q8_0"] > 99.0
    # the Q4_1 merge is nearer the base than the fine-tune: most of it is gone
    assert merged["q4_1"] > 0.5 * effect and kept["q4_1"] < 50.0


def test_q4_1_merge_refused_without_force(model_path, lemonpc, tmp_path):
    out = tmp_path / "m.gguf"
    r = run([lemonpc, "merge", model_path, ADAPTER, out, "--type", "q4_1"], ok=False)
    assert r.returncode == 1 and not out.exists()
    assert "of the adapter's change" in r.stderr and "--force" in r.stderr and "--adapter" in r.stderr
    r = run([lemonpc, "merge", model_path, ADAPTER, out, "--type", "q4_1", "--force"])
    assert out.exists() and "warning: most of the fine-tune is lost" in r.stderr
