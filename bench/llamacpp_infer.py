"""llama.cpp's side of the inference benchmark, through llama-cpp-python's
low-level API (the same C library a user of llama.cpp runs), with the same
protocol as bench/infer.c. Prints one JSON line.

usage: llamacpp_infer.py MODEL TOKENS_FILE THREADS N_GEN REPS
"""
import ctypes
import json
import os
import resource
import sys
import time

# llama.cpp's OpenMP threads spin between ops by default, which on a small
# machine steals the cores the benchmark shares with everything else; passive
# unless the caller asks otherwise (set before the library loads).
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import llama_cpp as L  # noqa: E402
import numpy as np


def main():
    path, tok_file, threads, n_gen, reps = sys.argv[1:]
    threads, n_gen, reps = int(threads), int(n_gen), int(reps)
    prompt = [int(t) for t in open(tok_file).read().split()]
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    quiet = L.llama_log_callback(lambda *a: None)  # kept alive: llama.cpp calls it later
    L.llama_log_set(quiet, ctypes.c_void_p())
    L.llama_backend_init()
    t0 = time.perf_counter()
    mp = L.llama_model_default_params()
    model = L.llama_model_load_from_file(path.encode(), mp)
    load_s = time.perf_counter() - t0
    cp = L.llama_context_default_params()
    cp.n_ctx = len(prompt) + n_gen + 8
    cp.n_batch = cp.n_ubatch = len(prompt)
    cp.n_threads = cp.n_threads_batch = threads
    ctx = L.llama_init_from_model(model, cp)
    n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))
    mem = L.llama_get_memory(ctx)

    def decode(ids):
        arr = (L.llama_token * len(ids))(*ids)
        if L.llama_decode(ctx, L.llama_batch_get_one(arr, len(ids))) != 0:
            raise SystemExit("llama_decode failed")

    def next_token():
        row = L.llama_get_logits_ith(ctx, -1)
        return int(np.argmax(np.ctypeslib.as_array(row, shape=(n_vocab,))))

    best_pp = best_tg = 0.0
    best_ttft = 1e30
    for _ in range(reps):
        L.llama_memory_clear(mem, True)
        a = time.perf_counter()
        decode(prompt)
        tok = next_token()
        b = time.perf_counter()
        for _ in range(n_gen):
            decode([tok])
            tok = next_token()
        e = time.perf_counter()
        best_pp = max(best_pp, len(prompt) / (b - a))
        best_tg = max(best_tg, n_gen / (e - b))
        best_ttft = min(best_ttft, b - a)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"load_s": load_s, "pp_tps": best_pp, "tg_tps": best_tg,
                      "ttft_s": best_ttft, "peak_rss_mb": peak,
                      "peak_rss_lib_mb": peak - base_rss}))
    L.llama_free(ctx)
    L.llama_model_free(model)


if __name__ == "__main__":
    main()
