"""SFT data against independent references on the real SmolLM2 GGUF.

For every conversation of tests/data/sft_toy.jsonl, build/tools/lm_sft_dump
gives the tokens and loss mask we train on. Here:
- the GGUF's own chat template (tokenizer.chat_template) is rendered with
  jinja2 and tokenized by llama.cpp (vocab_only, parse_special): the token
  ids must be identical;
- the trained spans are found from the template alone: for assistant
  message i, rendering messages[:i] with add_generation_prompt gives the
  prefix, the span is the content plus "<|im_end|>" after it; llama.cpp's
  token pieces give each token's byte range, and the mask must be 1 exactly
  on tokens overlapping a span (data.h: a token that merges the header's
  "\\n" with content carries content bytes and is trained)."""
import json
import subprocess

import pytest

import llama_cpp
import jinja2

ROLE = {"human": "user", "gpt": "assistant", "system": "system", "user": "user",
        "assistant": "assistant"}


def messages(obj):
    if "messages" in obj:
        return [{"role": m["role"], "content": m["content"]} for m in obj["messages"]]
    return [{"role": ROLE[m["from"]], "content": m["value"]} for m in obj["conversations"]]


@pytest.fixture(scope="module")
def llama(model_path):
    return llama_cpp.Llama(model_path=str(model_path), vocab_only=True, verbose=False)


@pytest.fixture(scope="module")
def template(llama):
    src = llama.metadata["tokenizer.chat_template"]
    env = jinja2.Environment(loader=jinja2.BaseLoader(), keep_trailing_newline=True)
    return env.from_string(src)


@pytest.fixture(scope="module")
def toy(root):
    path = root / "tests" / "data" / "sft_toy.jsonl"
    rows = {}
    for i, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if line.strip():
            rows[i] = messages(json.loads(line))
    return path, rows


def dump(tool, model_path, path, *extra):
    res = subprocess.run([str(tool("lm_sft_dump")), str(model_path), str(path), *extra],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return [json.loads(s) for s in res.stdout.splitlines()], res.stderr


def render(template, msgs, gen):
    return template.render(messages=msgs, add_generation_prompt=gen, bos_token="<|im_start|>",
                           eos_token="<|im_end|>")


def test_tokens_and_mask_match_template(tool, model_path, toy, template, llama):
    path, rows = toy
    got, err = dump(tool, model_path, path)
    assert err == ""
    assert [g["line"] for g in got] == sorted(rows), "every toy line must be kept"
    merged_header = 0
    for g in got:
        msgs = rows[g["line"]]
        text = render(template, msgs, False)
        ref = llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        assert g["tokens"] == ref, f"line {g['line']}: token ids differ from llama.cpp"

        spans = []
        for i, m in enumerate(msgs):
            if m["role"] != "assistant":
                continue
            prefix = render(template, msgs[:i], True).encode("utf-8")
            assert text.encode("utf-8").startswith(prefix)
            end = len(prefix) + len(m["content"].encode("utf-8")) + len(b"<|im_end|>")
            spans.append((len(prefix), end))
        assert spans, f"line {g['line']}: toy conversation without an assistant turn"

        want, at = [], 0
        for tid in ref:
            piece = llama.detokenize([tid], special=True)
            lo, at = at, at + len(piece)
            hit = any(lo < e and at > s for s, e in spans)
            want.append(1 if hit else 0)
            merged_header += hit and any(lo < s < at for s, _ in spans)
        assert at == len(text.encode("utf-8")), f"line {g['line']}: pieces do not cover the text"
        assert g["mask"] == want, f"line {g['line']}: mask differs from the assistant spans"
        assert g["n_trained"] == sum(want[1:])
        # Every trained span ends on <|im_end|> (id 2), and it is trained.
        ends = [k for k, t in enumerate(ref) if t == 2]
        for s, e in spans:
            k = next(k for k in ends if len(llama.detokenize(ref[:k + 1], special=True)) == e)
            assert g["mask"][k] == 1
    # The toy set has assistant turns starting with "\n\n" and "  ", which
    # the pre-tokenizer joins with the header's "\n": that path must be hit.
    assert merged_header >= 1


def test_default_system_turn_injected(tool, model_path, toy, template, llama):
    path, rows = toy
    got, _ = dump(tool, model_path, path)
    no_sys = [g for g in got if rows[g["line"]][0]["role"] != "system"]
    assert no_sys, "toy set needs conversations without a system message"
    for g in no_sys:
        text = render(template, rows[g["line"]], False)
        assert text.startswith("<|im_start|>system\n") and g["tokens"][0] == 1
        # The injected system turn is never trained.
        sys_end = llama.tokenize(text.split("<|im_end|>")[0].encode() + b"<|im_end|>",
                                 add_bos=False, special=True)
        assert not any(g["mask"][:len(sys_end)])


def test_bad_lines_skipped_and_named(tool, model_path, tmp_path, toy):
    path, _ = toy
    good = path.read_text(encoding="utf-8").split("\n")[0]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([
        good,
        '{"messages": [{"role": "bot", "content": "x"}]}',
        "{not json",
        good,
        '{"messages": [{"role": "user", "content": "only a question"}]}',
    ]) + "\n", encoding="utf-8")
    got, err = dump(tool, model_path, bad)
    assert [g["line"] for g in got] == [1, 4]
    assert "bad.jsonl:2: messages[0].role: expected one of system/user/assistant, got 'bot'" in err
    assert "bad.jsonl:3: invalid JSON" in err
    assert "bad.jsonl:5: messages: no assistant message" in err
    res = subprocess.run([str(tool("lm_sft_dump")), str(model_path), str(bad), "--strict"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "bad.jsonl:2:" in res.stderr


def test_cli_dataset_stats(lemonpc, tool, model_path, toy):
    path, rows = toy
    got, _ = dump(tool, model_path, path)
    res = subprocess.run([str(lemonpc), "dataset", "stats", str(path), "--model", str(model_path),
                          "--no-color", "--val-frac", "0.25", "--seed", "3"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "conversations     40 (0 bad lines skipped, 0 dropped)" in out
    assert f"tokens            {sum(len(g['tokens']) for g in got)}\n" in out
    assert f"trained tokens    {sum(g['n_trained'] for g in got)} (" in out
    n_assist = sum(m["role"] == "assistant" for msgs in rows.values() for m in msgs)
    assert f"({n_assist} assistant turns, all trained)" in out
    # The sample (line 1) shows its one assistant reply bracketed, <|im_end|> inside.
    reply = rows[1][-1]["content"]
    assert f"[[{reply}<|im_end|>]]" in out
    assert out.count("[[") == 2   # the legend line and the one span
    bad = subprocess.run([str(lemonpc), "dataset", "stats", str(path), "--model", str(model_path),
                          "--val-frac", "1.5"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--val-frac" in bad.stderr
