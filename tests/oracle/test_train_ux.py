"""`lemonpc train` as a log sees it, on a tiny random model (the real one's
tokenizer): piped to a file it prints one plain line per evaluation point,
names every bad line it skips, and a --resume of a finished run says there
was nothing to train instead of "last loss 0.0000"."""
import json
import pathlib
import re
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from make_random_gguf import write_random_llama  # noqa: E402


@pytest.fixture(scope="module")
def tiny(model_path, tmp_models):
    p = tmp_models / "tiny-train-ux.gguf"
    if not p.exists():
        write_random_llama(p, model_path, n_layer=2, n_embd=64, n_head=4, n_head_kv=2, n_ff=128,
                           theta=100000.0, seed=9)
    return p


def conv(i):
    return json.dumps({"messages": [{"role": "user", "content": f"Question {i}?"},
                                    {"role": "assistant", "content": f"Answer {i}, friend."}]})


def train(lemonpc, *args):
    # stdout and stderr are pipes: not a terminal, as in `train ... > log 2>&1`
    return subprocess.run([str(lemonpc), "train", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def test_piped_train_log(lemonpc, tiny, tmp_path):
    data = tmp_path / "d.jsonl"
    lines = [conv(i) for i in range(12)]
    lines[2] = '{"messages": [{"role": "user", "content": "cut'               # line 3
    lines[6] = '{"text": "not a conversation"}'                               # line 7
    data.write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    r = train(lemonpc, "--model", tiny, "--data", data, "--out", run, "--epochs", 3, "--batch", 2,
              "--seq", 64, "--threads", 2, "--save-every", 0)
    assert r.returncode == 0, r.stderr
    err = r.stderr
    # every bad line named with its line number, and counted in the summary
    assert re.search(rf"skipped: {re.escape(str(data))}:3: invalid JSON at column \d+", err), err
    assert f"skipped: {data}:7: " in err, err
    assert "2 bad lines skipped (above)" in err, err
    # one plain line per evaluation point: the three epoch ends (5 steps each)
    marks = [m for m in err.splitlines() if re.match(r"train  \d+/15 steps  step \d+/15  epoch", m)]
    assert [int(m.split()[1].split("/")[0]) for m in marks] == [5, 10, 15], err
    assert "\r" not in err
    assert "done: 15/15 steps" in r.stdout

    again = train(lemonpc, "--resume", run, "--threads", 2)
    assert again.returncode == 0, again.stderr
    assert "last loss 0.0000" not in again.stdout
    assert f"nothing to train: {run} had done its 15/15 steps" in again.stdout, again.stdout
