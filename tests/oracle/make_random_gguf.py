"""Writes small random-weight Llama GGUFs with the `gguf` Python package
(an implementation independent of ours), for logit-parity tests against
llama.cpp on shapes the real model does not have: no GQA, other GQA
ratios, untied output, other rope bases, other sizes. The tokenizer
metadata is copied from a real model so llama.cpp accepts the file.

    python3 make_random_gguf.py VOCAB_SOURCE.gguf OUT.gguf [--layers N]
        [--embd D] [--heads H] [--kv-heads K] [--ff F] [--theta T]
        [--untied] [--type F32|Q8_0] [--seed S]
"""
import argparse

import numpy as np
import gguf

TOKENIZER_KEYS = [
    "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
    "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id",
    "tokenizer.chat_template",
]


def _copy_tokenizer(reader, writer):
    for key in TOKENIZER_KEYS:
        field = reader.fields.get(key)
        if field is None:
            continue
        vtype = field.types[0]
        value = field.contents()
        if vtype == gguf.GGUFValueType.ARRAY:
            sub = field.types[1]
            writer.add_array(key, value) if sub == gguf.GGUFValueType.STRING else \
                writer.add_key_value(key, value, vtype, sub_type=sub)
        else:
            writer.add_key_value(key, value, vtype)


def llama3_rope_freqs(head_dim, theta, factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                      original_context=8192):
    """rope_freqs.weight of a Llama 3.x model, as convert_hf_to_gguf.py
    computes it from HF's rope_scaling (rope_type "llama3"): the divisor of
    each pair's angle, 1 for short wavelengths, `factor` for long ones, a
    blend between."""
    freqs = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    low_wavelen = original_context / low_freq_factor
    high_wavelen = original_context / high_freq_factor
    out = []
    for freq in freqs:
        wavelen = 2 * np.pi / freq
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (original_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def write_random_llama(path, vocab_source, *, n_layer=2, n_embd=128, n_head=4, n_head_kv=4,
                       n_ff=256, theta=10000.0, untied=False, qtype="F32", seed=0,
                       n_ctx=2048, rope_freqs=None):
    """rope_freqs: Llama 3.x's per-pair angle divisors ([head_dim/2] f32,
    e.g. llama3_rope_freqs(...)) written as rope_freqs.weight, or None."""
    reader = gguf.GGUFReader(vocab_source)
    n_vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    rng = np.random.default_rng(seed)
    hd = n_embd // n_head
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(f"random-llama-{n_layer}x{n_embd}")
    w.add_block_count(n_layer)
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_freq_base(theta)
    w.add_rope_dimension_count(hd)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(n_vocab)
    _copy_tokenizer(reader, w)

    gtype = {"F32": gguf.GGMLQuantizationType.F32, "F16": gguf.GGMLQuantizationType.F16,
             "Q8_0": gguf.GGMLQuantizationType.Q8_0}[qtype]

    def mat(name, rows, cols, scale):
        # numpy shape [rows, cols] = ggml ne [cols, rows]: rows of length cols
        a = (rng.standard_normal((rows, cols)) * scale).astype(np.float32)
        if gtype == gguf.GGMLQuantizationType.F32:
            w.add_tensor(name, a)
        elif gtype == gguf.GGMLQuantizationType.F16:
            w.add_tensor(name, a.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(a, gtype), raw_dtype=gtype)

    def vec(name, n):
        w.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32))

    # Scales keep activations O(1) and the next-token distribution peaked
    # enough that the argmax is not a coin toss between near-ties.
    if rope_freqs is not None:
        assert len(rope_freqs) == hd // 2
        w.add_tensor("rope_freqs.weight", np.asarray(rope_freqs, dtype=np.float32))
    mat("token_embd.weight", n_vocab, n_embd, 1.0)
    vec("output_norm.weight", n_embd)
    if untied:
        mat("output.weight", n_vocab, n_embd, 2.0 / np.sqrt(n_embd))
    for l in range(n_layer):
        s = 1.0 / np.sqrt(n_embd)
        vec(f"blk.{l}.attn_norm.weight", n_embd)
        mat(f"blk.{l}.attn_q.weight", n_head * hd, n_embd, 2 * s)
        mat(f"blk.{l}.attn_k.weight", n_head_kv * hd, n_embd, 2 * s)
        mat(f"blk.{l}.attn_v.weight", n_head_kv * hd, n_embd, s)
        mat(f"blk.{l}.attn_output.weight", n_embd, n_head * hd, s)
        vec(f"blk.{l}.ffn_norm.weight", n_embd)
        mat(f"blk.{l}.ffn_gate.weight", n_ff, n_embd, s)
        mat(f"blk.{l}.ffn_up.weight", n_ff, n_embd, s)
        mat(f"blk.{l}.ffn_down.weight", n_embd, n_ff, 1.0 / np.sqrt(n_ff))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("vocab_source")
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--embd", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--ff", type=int, default=256)
    ap.add_argument("--theta", type=float, default=10000.0)
    ap.add_argument("--untied", action="store_true")
    ap.add_argument("--type", default="F32", choices=["F32", "Q8_0"])
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    write_random_llama(a.out, a.vocab_source, n_layer=a.layers, n_embd=a.embd, n_head=a.heads,
                       n_head_kv=a.kv_heads, n_ff=a.ff, theta=a.theta, untied=a.untied,
                       qtype=a.type, seed=a.seed)


if __name__ == "__main__":
    main()
