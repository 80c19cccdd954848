"""Masking proof on the real SmolLM2: only the assistant's tokens and the
<|im_end|> closing its turn are trained (data.h masks by position), and
after a short LoRA fine-tune on a toy dataset whose answers follow one
pattern ("Aye, <noun>."), the model stops on its own on every held-out
prompt -- while the base model, asked the same, runs past the token limit
on at least some of them (so the check can fail).

Slow (about 4 minutes on 2 busy cores: 16 training steps, then 20 greedy
replies): skipped unless LEMONPC_SLOW=1, as `make test-slow` sets."""
import json
import os
import subprocess

import pytest

pytestmark = pytest.mark.skipif(not os.environ.get("LEMONPC_SLOW"),
                                reason="slow: run with `make test-slow` (LEMONPC_SLOW=1)")

TRAIN_NOUNS = """apple river castle sword dragon lantern forest harbor mountain wizard
candle bridge meadow tavern anvil shield falcon garden compass tower
barrel cloak goblet hammer island kettle ladder mirror needle orchard""".split()
HELD_OUT = "moon wolf ship crown desert bell arrow cave storm king".split()
MAX_TOKENS = 32


def conv(noun):
    return {"messages": [
        {"role": "user", "content": f"Tell me about the {noun}."},
        {"role": "assistant", "content": f"Aye, {noun}."}]}


def replies(tool, model, adapter, prompts, merged):
    out = subprocess.run([str(tool("lm_sft_stop")), str(model), str(adapter), str(prompts),
                          str(MAX_TOKENS), str(merged)],
                         check=True, capture_output=True, text=True, timeout=600).stdout
    return [json.loads(line) for line in out.splitlines()]


def test_finetuned_model_stops(lemonpc, tool, model_path, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(conv(n)) + "\n" for n in TRAIN_NOUNS))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"Tell me about the {n}.\n" for n in HELD_OUT))
    run = tmp_path / "run"
    subprocess.run([str(lemonpc), "train", "--model", str(model_path), "--data", str(data),
                    "--out", str(run), "--lora", "--lora-rank", "4", "--lora-alpha", "8",
                    "--lr", "2e-3", "--epochs", "2", "--batch", "4", "--seq", "64",
                    "--warmup", "2", "--schedule", "constant", "--threads", "2", "--seed", "1"],
                   check=True, timeout=900)
    losses = [json.loads(l)["loss"] for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0]

    tuned = replies(tool, model_path, run / "last" / "adapter.gguf", prompts, tmp_path / "m.gguf")
    assert len(tuned) == len(HELD_OUT)
    for noun, r in zip(HELD_OUT, tuned):
        assert r["stopped"], f"{noun}: no <|im_end|> within {MAX_TOKENS} tokens: {r['reply']!r}"
    # the fine-tune, not luck, made it stop: replies follow the taught pattern
    assert sum(r["reply"].startswith("Aye") for r in tuned) >= 8, tuned

    base = replies(tool, model_path, "-", prompts, tmp_path / "b.gguf")
    assert not all(r["stopped"] for r in base), "control: the base model already stops on all"
