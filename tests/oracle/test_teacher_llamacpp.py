"""The teacher runner against a real OpenAI-compatible server nobody here
wrote (llama-cpp-python's `python3 -m llama_cpp.server` on the SmolLM2 GGUF)
and against our own engine on the same file.

The server needs extra packages besides llama_cpp (fastapi, uvicorn,
sse-starlette, starlette-context, pydantic-settings); without them the
server test is skipped with the import error as the reason."""
import json
import os
import subprocess

import pytest

QUESTIONS = [
    "What is the capital of France?",
    "Name three colors of the rainbow.",
    "Say hello to a traveller <|im_end|> politely.",   # special-token text stays text
]


def write_requests(path, seed=None):
    with open(path, "w") as f:
        for i, q in enumerate(QUESTIONS):
            params = {"temperature": 0, "max_tokens": 24}
            if seed is not None:
                params = {"temperature": 0.8, "top_p": 0.95, "max_tokens": 24, "seed": seed}
            f.write(json.dumps({"id": f"r{i}", "messages": [
                {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
                {"role": "user", "content": q}], "params": params,
                "metadata": {"q": i}}) + "\n")


def read(path):
    return [json.loads(s) for s in open(path) if s.strip()]


def run_tool(tool, tmp_path, *args):
    r = subprocess.run([str(tool("lm_teacher_run")), "--requests", str(tmp_path / "req.jsonl"),
                        "--out", str(tmp_path / "out.jsonl"), *map(str, args)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_llama_cpp_server(llama_server, model_path, tool, tmp_path):
    write_requests(tmp_path / "req.jsonl")
    s = run_tool(tool, tmp_path, "--base", llama_server, "--model", "smollm2",
                 "--in-flight", 2, "--timeout-ms", 120000)
    assert s["ok"] == len(QUESTIONS) and s["failed"] == 0
    out = read(tmp_path / "out.jsonl")
    assert sorted(o["id"] for o in out) == [f"r{i}" for i in range(len(QUESTIONS))]
    for o in out:
        assert o["reply"].strip(), o
        assert o["teacher"] == f"openai:smollm2@{llama_server}"
    paris = next(o for o in out if o["id"] == "r0")
    assert "paris" in paris["reply"].lower()
    # rerun: nothing left to ask
    s2 = run_tool(tool, tmp_path, "--base", llama_server)
    assert s2["skipped"] == len(QUESTIONS) and s2["ok"] == 0

    # Greedy decoding on the same GGUF: our engine must start its answers as
    # llama.cpp does (the first words; longer greedy runs may part on float
    # rounding). r2 is left out on purpose: llama.cpp's server parses the
    # "<|im_end|>" typed in the question as a control token, we keep it text.
    local = tmp_path / "local"
    local.mkdir()
    write_requests(local / "req.jsonl")
    run_tool(tool, local, "--local", model_path, "--threads", 2)
    ours = {o["id"]: o["reply"] for o in read(local / "out.jsonl")}
    for o in out:
        if o["id"] == "r2":
            continue
        assert ours[o["id"]].split()[:5] == o["reply"].split()[:5], (ours[o["id"]], o["reply"])


def test_local_engine(model_path, tool, tmp_path):
    write_requests(tmp_path / "req.jsonl")
    s = run_tool(tool, tmp_path, "--local", model_path, "--threads", 2)
    assert s["ok"] == len(QUESTIONS) and s["failed"] == 0
    out = {o["id"]: o for o in read(tmp_path / "out.jsonl")}
    for o in out.values():
        assert o["reply"].strip()
        assert o["teacher"] == f"local:{os.path.basename(model_path)}"
    assert "paris" in out["r0"]["reply"].lower()


def test_local_engine_seeded_is_reproducible(model_path, tool, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        write_requests(d / "req.jsonl", seed=1234)
        run_tool(tool, d, "--local", model_path, "--threads", 2)
    ra = {o["id"]: o["reply"] for o in read(a / "out.jsonl")}
    rb = {o["id"]: o["reply"] for o in read(b / "out.jsonl")}
    assert ra == rb
