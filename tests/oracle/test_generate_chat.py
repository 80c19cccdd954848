"""`lemonpc generate` and `lemonpc chat` end to end on the real model.

The chat test checks the KV-cache continuation: a second turn that only
evaluates its new tokens must answer exactly what llama.cpp answers when it
continues its own cache with the same tokens (greedy). Re-evaluating the
whole conversation as one batch is not the same computation: a token
decoded alone takes other attention reduction orders than inside a batch,
in llama.cpp as in our runtime that follows it bit for bit."""
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def run(args, stdin=None, timeout=300):
    return subprocess.run([str(a) for a in args], input=stdin, capture_output=True, text=True,
                          timeout=timeout)


def turn(role, text):
    return f"<|im_start|>{role}\n{text}<|im_end|>\n"


def test_help_and_usage_errors(lemonpc, model_path):
    for cmd in ("generate", "chat"):
        r = run([lemonpc, cmd, "--help"])
        assert r.returncode == 0 and "--temp" in r.stdout and "--seed" in r.stdout
        r = run([lemonpc, cmd, model_path, "--top-p", "1.5"])
        assert r.returncode == 2 and "--top-p" in r.stderr
        r = run([lemonpc, cmd, model_path, "--threads", "zero"])
        assert r.returncode == 2 and "--threads" in r.stderr
        r = run([lemonpc, cmd, model_path, "--bogus"])
        assert r.returncode == 2 and "--bogus" in r.stderr
        r = run([lemonpc, cmd, model_path, "--kv", "q8_0"])
        assert r.returncode == 2 and "--kv" in r.stderr
    r = run([lemonpc, "generate", model_path])
    assert r.returncode == 2 and "prompt" in r.stderr
    r = run([lemonpc, "generate", "/nonexistent/model.gguf", "-p", "hi"])
    assert r.returncode == 1 and "/nonexistent/model.gguf" in r.stderr


def test_context_full(lemonpc, model_path):
    r = run([lemonpc, "generate", model_path, "-p", "tell me a long story " * 20, "--ctx", "32"])
    assert r.returncode == 1 and "context full" in r.stderr
    r = run([lemonpc, "generate", model_path, "-p", "Count from one to fifty.", "--ctx", "48",
             "-n", "100", "--temp", "0"])
    assert r.returncode == 0
    assert "context full" in r.stderr


def test_seed_reproducible(lemonpc, model_path):
    args = [lemonpc, "generate", model_path, "-p", "Tell me about dragons.", "-n", "24",
            "--temp", "1.0", "--top-k", "0", "--top-p", "1", "--min-p", "0"]
    a = run(args + ["--seed", "7"])
    b = run(args + ["--seed", "7"])
    c = run(args + ["--seed", "8"])
    assert a.returncode == 0 and a.stdout.strip()
    assert a.stdout == b.stdout
    assert a.stdout != c.stdout


def test_verbose_stats(lemonpc, model_path):
    r = run([lemonpc, "generate", model_path, "-p", "Hi", "-n", "4", "--temp", "0", "-v"])
    assert r.returncode == 0
    assert "prompt:" in r.stderr and "decode:" in r.stderr and "tok/s" in r.stderr
    assert "time to first token" in r.stderr


def llama_reply(llm, text, n_max):
    """llama.cpp continues its cache as lemonpc chat does: the new text as one
    batch, then greedy tokens one at a time until a control token."""
    from llama_cpp import llama_cpp as L
    llm.eval(llm.tokenize(text.encode(), add_bos=False, special=True))
    out = []
    for _ in range(n_max):
        t = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        if L.llama_vocab_is_control(llm._model.vocab, t) or t == llm.token_eos():
            break
        out.append(t)
        llm.eval([t])
    assert len(out) < n_max, "reply hit the token budget; the test wants a natural stop"
    return llm.detokenize(out).decode()


@pytest.mark.parametrize("kv", ["f32", "f16"])
def test_chat_continues_from_cache(kv, lemonpc, model_path):
    """With either KV cache type, against llama.cpp with the same one (f16
    is both programs' default)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    llama_cpp = pytest.importorskip("llama_cpp")
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from parity import EXACT  # noqa: E402
    u1, u2 = "Hi! My name is Anna and I keep bees.", "What do I keep?"
    common = ["--temp", "0", "-n", "200"] + (["--kv", "f32"] if kv == "f32" else [])
    chat = run([lemonpc, "chat", model_path] + common, stdin=f"{u1}\n{u2}\n")
    assert chat.returncode == 0, chat.stderr
    if EXACT:
        cache = {"type_k": 0, "type_v": 0} if kv == "f32" else {}   # GGML_TYPE_F32 = 0
        llm = llama_cpp.Llama(str(model_path), n_ctx=1024, n_threads=2, n_batch=512,
                              logits_all=True, seed=0, verbose=False, **cache)
        full1 = turn("system", SYSTEM) + turn("user", u1) + "<|im_start|>assistant\n"
        r1 = llama_reply(llm, full1, 200)
        full2 = (full1[:-len("<|im_start|>assistant\n")] + turn("assistant", r1) +
                 turn("user", u2) + "<|im_start|>assistant\n")
        r2 = llama_reply(llm, full2[len(full1 + r1):], 200)
        del llm
        assert chat.stdout == f"{r1}\n{r2}\n"
    else:
        # llama.cpp reduces in other orders on this build (parity.py): only our
        # own first turn, which `generate` computes the same way, is known
        g1 = run([lemonpc, "generate", model_path, "-p", u1] + common)
        assert g1.returncode == 0, g1.stderr
        r1 = g1.stdout[:-1]
        lines = chat.stdout.split("\n")
        assert chat.stdout.startswith(r1 + "\n") and lines[-2].strip(), chat.stdout

    # /reset forgets: the same question then gets the first answer again
    chat = run([lemonpc, "chat", model_path] + common,
               stdin=f"{u1}\n/reset\n{u1}\n/quit\n{u2}\n")
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout == f"{r1}\n{r1}\n"


def test_chat_system_prompt(lemonpc, model_path):
    sys_msg = "You are Brom, a gruff dwarven blacksmith. Answer in one sentence."
    common = ["--temp", "0", "-n", "40"]
    chat = run([lemonpc, "chat", model_path, "--system", sys_msg] + common, stdin="Who are you?\n")
    gen = run([lemonpc, "generate", model_path, "--system", sys_msg, "-p", "Who are you?"] + common)
    assert chat.returncode == 0 and gen.returncode == 0
    assert chat.stdout == gen.stdout


def test_peak_memory(lemonpc, model_path):
    """Weights are used in place from the mapping: peak RSS stays within the
    file size + the KV cache + 30 MB (tokenizer, scratch, code)."""
    n_ctx = 512
    # SmolLM2: 30 layers * 2 (K, V) * 3 KV heads * 64 dims * 2 bytes (f16) per position
    kv_bytes = n_ctx * 30 * 2 * 3 * 64 * 2
    code = ("import resource, subprocess, sys; "
            "r = subprocess.run(sys.argv[1:], capture_output=True); "
            "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    r = run(["python3", "-c", code, lemonpc, "generate", model_path, "-p",
             "Tell me a story about a dragon.", "-n", "64", "--temp", "0", "--ctx", str(n_ctx)])
    rc, maxrss_kb = map(int, r.stdout.split())
    assert rc == 0
    limit = model_path.stat().st_size + kv_bytes + 30 * 2**20
    assert maxrss_kb * 1024 <= limit, f"peak RSS {maxrss_kb} KB > {limit // 1024} KB"
