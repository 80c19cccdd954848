"""Batch against single-token evaluation: the last-token logits of prefixes
of a text, evaluated (a) as one batch and (b) as a batch of all but the last
token followed by that token alone, in llama.cpp (llama-cpp-python, whichever
build the interpreter running this has) and in ours (tests/tools/lm_logits,
turns mode, the kernel set LEMONPC_KERNELS picks). Prints, per side, how many
prefixes give the same logits both ways and the largest difference.

  make build/tools/lm_logits
  python3 bench/batch_vs_single.py [MODEL] [--text FILE] [--kv f16|f32] [--threads 1]

docs/RUNTIME.md ("Determinism") quotes its output."""
import argparse
import os
import pathlib
import subprocess
import tempfile

import numpy as np
from llama_cpp import Llama

ROOT = pathlib.Path(__file__).resolve().parents[1]


def summary(name, diffs):
    d = np.array([x[1] for x in diffs])
    print(f"{name}: prefixes {len(d)}, identical {int((d == 0).sum())}, "
          f"max |dlogit| {d.max():.3g}, argmax changed {sum(x[2] for x in diffs)}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default=str(pathlib.Path.home() / ".cache/lemonpc/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--text", default=str(ROOT / "examples/luminara/characters/elena.md"))
    ap.add_argument("--kv", default="f16", choices=["f16", "f32"])
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    # logits_all: without it llama-cpp-python (0.3.x) keeps no logits at all in
    # llm.scores (Llama.eval skips the copy), and the rows read below were zeros:
    # the first version of this script compared zeros with zeros and found
    # llama.cpp "identical" at every prefix.
    llm = Llama(model_path=a.model, n_ctx=2048, n_batch=512, n_threads=a.threads, verbose=False,
                logits_all=True, type_k=1 if a.kv == "f16" else 0, type_v=1 if a.kv == "f16" else 0)
    toks = llm.tokenize(pathlib.Path(a.text).read_text().encode(), add_bos=False)[:600]
    cuts = list(range(60, len(toks), 13))
    theirs = []
    for n in cuts:
        llm.reset(); llm.eval(toks[:n]); x = np.array(llm.scores[llm.n_tokens - 1], np.float64)
        llm.reset(); llm.eval(toks[:n - 1]); llm.eval(toks[n - 1:n]); y = np.array(llm.scores[llm.n_tokens - 1], np.float64)
        assert x.any() and y.any(), "llama.cpp returned no logits (all zeros)"
        theirs.append((n, float(np.abs(x - y).max()), int(x.argmax() != y.argmax())))
    summary(f"llama.cpp {a.kv} cache", theirs)
    tool = ROOT / "build/tools/lm_logits"
    ours = []
    with tempfile.TemporaryDirectory() as d:
        def last(arg):
            f = os.path.join(d, "steps.bin")
            r = subprocess.run([str(tool), a.model, arg, "--greedy", "1", "--steps", f, "--threads",
                                str(a.threads), "--kv", a.kv, "--ctx", "1024"], check=True,
                               capture_output=True, text=True)
            nv = int(r.stdout.split("n_vocab", 1)[1].split()[0])
            return np.fromfile(f, "<f4")[:nv].astype(np.float64)   # the pick after the last token
        for n in cuts:
            x = last(",".join(map(str, toks[:n])))
            y = last(",".join(map(str, toks[:n - 1])) + ";" + str(toks[n - 1]))
            ours.append((n, float(np.abs(x - y).max()), int(x.argmax() != y.argmax())))
    summary(f"ours ({os.environ.get('LEMONPC_KERNELS', 'default kernels')}) {a.kv} cache", ours)


if __name__ == "__main__":
    main()
