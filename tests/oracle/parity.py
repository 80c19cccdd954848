"""Logit parity with llama.cpp (llama-cpp-python): the runs and the policy.

Our kernel sets perform llama.cpp's CPU floating-point operations in
llama.cpp's order for the instruction set they are named after: its
activation quantizers, ggml's vec_dot and llamafile's tinyBLAS reductions,
ggml_v_expf in softmax and SiLU, RMSNorm's double sum, RoPE's cos/sin
recurrence and fused rotation, the attention reductions of its non-flash
path with an f32 or f16 KV cache. The avx2 set follows llama.cpp built for
AVX2 + FMA + F16C (no AVX-512: tests/requirements.txt's build); the avx512
set follows llama.cpp built for AVX-512 F/BW/DQ/VL + VNNI + BF16
(scripts/setup_llama_avx512_venv.sh), whose float reductions are 16 lanes
wide. Where the llama-cpp-python under test matches the set we run
(LEMONPC_KERNELS, else the widest this CPU runs), the logits are
bit-identical, and the tests assert exactly that: every prompt row, and the
logits behind every greedy decode step.

Across instruction sets (or with our scalar kernels) the reductions differ,
and with 8-bit activations a last-bit difference flips a rounding now and
then that grows through the layers: llama.cpp differs from itself by mean KL
~5e-3 between its f16 and f32 KV caches. There the tests fall back to a
measured policy: quantized models within max(1e-3, twice that
self-difference) in mean KL, top-1 >= 0.96, a greedy divergence only at a
near-tie; F32 models within mean KL 1e-6 and top-1 >= 0.99.
"""
import os
import subprocess

# llama.cpp's OpenMP threads spin while waiting; on a busy 2-core machine that
# made it ~20x slower. Must be set before libgomp loads (first llama_cpp import).
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numpy as np  # noqa: E402
import llama_cpp  # noqa: E402

SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
# Relaxed policy only: llama.cpp's own logit gap between its token and ours
# below which a greedy divergence counts as a near-tie.
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


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


AVX512_FLAGS = {"avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512dq", "avx512vl",
                "avx512_vnni", "avx512_bf16"}


def our_kernels():
    """The kernel set our runtime picks: LEMONPC_KERNELS, else the widest
    this CPU runs (matmul.c's order)."""
    forced = os.environ.get("LEMONPC_KERNELS")
    if forced:
        return forced
    flags = cpu_flags()
    if AVX512_FLAGS <= flags:
        return "avx512"
    return "avx2" if {"avx2", "fma", "f16c"} <= flags else "scalar"


def llama_isa():
    """The kernel set whose orders llama.cpp's build has: "avx512" for
    AVX-512 with BF16 (scripts/setup_llama_avx512_venv.sh), "avx2" for AVX2 +
    FMA + F16C without any AVX-512 (tests/requirements.txt's build), else
    None."""
    info = llama_cpp.llama_print_system_info().decode()
    flags = {k.strip(): v.strip() for k, _, v in
             (f.partition("=") for f in info.replace("\n", "|").split("|")) if v}
    base = flags.get("AVX2") == "1" and flags.get("FMA") == "1" and flags.get("F16C") == "1"
    if base and flags.get("AVX512") == "1" and flags.get("AVX512_BF16") == "1":
        return "avx512", info
    if base and not any(k.startswith("AVX512") and v == "1" for k, v in flags.items()):
        return "avx2", info
    return None, info


def exact_build():
    """(True, why) when llama.cpp's build and our kernel set reduce alike."""
    theirs_isa, info = llama_isa()
    ours_isa = our_kernels()
    return theirs_isa == ours_isa, f"llama.cpp build: {info.strip()}; our kernels: {ours_isa}"


EXACT, EXACT_WHY = exact_build()


def llama_open(path, lora=None, f16_kv=False, n_ctx=512):
    kw = {} if f16_kv else {"type_k": 0, "type_v": 0}   # GGML_TYPE_F32 = 0
    if lora:
        kw["lora_path"] = str(lora)
    return llama_cpp.Llama(str(path), n_ctx=n_ctx, n_threads=2, n_batch=512, logits_all=True,
                           seed=0, verbose=False, **kw)


def theirs(llm, toks, greedy):
    """llama.cpp: prompt logits [n, V], greedy ids, and the logits each pick came from."""
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
    steps = np.array(steps, dtype=np.float32).reshape(len(steps), logits.shape[1])
    return logits, ids, steps


def ours(tool, model, toks, greedy, tmp_path, adapter=None, kv="f32", n_ctx=None):
    """Our runtime through tests/tools/lm_logits, same outputs as theirs();
    kv: our KV cache's element type ("f32" or "f16"); n_ctx: the context
    size (default: just the tokens and the greedy steps)."""
    out, steps = tmp_path / "logits.bin", tmp_path / "steps.bin"
    cmd = [str(tool("lm_logits")), str(model), ",".join(map(str, toks)), "--out", str(out),
           "--greedy", str(greedy), "--steps", str(steps), "--threads", "2", "--kv", kv]
    if adapter:
        cmd += ["--adapter", str(adapter)]
    if n_ctx:
        cmd += ["--ctx", str(n_ctx)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    lines = dict(line.split(" ", 1) for line in r.stdout.strip().splitlines())
    n_vocab = int(lines["n_vocab"])
    logits = np.fromfile(out, dtype=np.float32).reshape(len(toks), n_vocab)
    ids = [int(x) for x in lines["greedy"].split()] if greedy else []
    st = np.fromfile(steps, dtype=np.float32).reshape(-1, n_vocab) if greedy else None
    return logits, ids, st


def compare(label, llm, runs, toks_list, quantized, greedy, f16_llm=None, exact=None):
    """llm: llama.cpp; runs: ours() per prompt. exact=None: EXACT (bitwise on a
    matching build); False: the relaxed policy (for two different computations,
    or a build whose ISA we do not share). f16_llm: a factory of llama.cpp with
    its f16 cache, for the relaxed quantized bound."""
    exact = EXACT if exact is None else exact
    kls, agree, n_pos, report, refs, worst = [], 0, 0, [], [], 0.0
    for toks, (a, a_ids, a_steps) in zip(toks_list, runs):
        b, b_ids, b_steps = theirs(llm, toks, greedy)
        refs.append(b)
        kls.append(kl(b, a))
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        n_pos += len(toks)
        worst = max(worst, float(np.abs(a - b).max()))
        if exact:
            assert np.array_equal(a, b), (
                f"{label}: prompt logits differ from llama.cpp's (max |d| "
                f"{np.abs(a - b).max():.3e}) although the builds match ({EXACT_WHY})")
            assert a_ids == b_ids, f"{label}: greedy {a_ids} vs llama.cpp {b_ids}"
            assert np.array_equal(a_steps, b_steps), (
                f"{label}: decode-step logits differ (max |d| {np.abs(a_steps - b_steps).max():.3e})")
        elif a_ids != b_ids:
            i = next(j for j, (x, y) in enumerate(zip(b_ids, a_ids)) if x != y)
            gap = float(b_steps[i][b_ids[i]] - b_steps[i][a_ids[i]])
            report.append((i, gap))
            assert quantized and gap < NEAR_TIE, (
                f"{label}: greedy continuation differs at step {i}: llama.cpp {b_ids[i]} vs "
                f"ours {a_ids[i]} (llama.cpp logit gap {gap:.3f})")
    mean_kl, top1 = float(np.concatenate(kls).mean()), agree / n_pos
    if exact:
        print(f"{label}: bit-identical to llama.cpp: {n_pos} prompt rows and "
              f"{greedy * len(toks_list)} decode steps (mean KL {mean_kl:.1e}, top-1 {top1:.4f})")
        return
    if quantized:
        alt_llm = f16_llm()
        floor = float(np.concatenate([kl(ref, theirs(alt_llm, t, 0)[0])
                                      for ref, t in zip(refs, toks_list)]).mean())
        bound = max(1e-3, 2 * floor)
        print(f"{label}: mean KL {mean_kl:.2e} (bound {bound:.2e}, llama.cpp f16-vs-f32 KV "
              f"{floor:.2e}), top-1 {top1:.4f}, greedy divergences {report} [{EXACT_WHY}]")
        assert mean_kl <= bound, f"{label}: mean KL {mean_kl:.3e} > {bound:.3e}"
        assert top1 >= 0.96, f"{label}: top-1 agreement {top1:.4f}"
    else:
        print(f"{label}: mean KL {mean_kl:.2e}, top-1 {top1:.4f}, max |d| {worst:.2e}")
        assert mean_kl <= 1e-6, f"{label}: mean KL {mean_kl:.3e} > 1e-6"
        assert top1 >= 0.99, f"{label}: top-1 agreement {top1:.4f}"
