"""PEFT interop proof: our PEFT folder (`lemonpc peft`) loaded with `peft`
on top of a transformers LlamaForCausalLM gives our runtime's logits.

There is no Hugging Face hub here, so the HF model is built in this test
from our F32 GGUF: config from the metadata, tied embeddings, and Q/K rows
un-permuted back to HF order (the inverse of llama.cpp's converter
permutation, written here from its definition). The base is checked first
(HF vs ours, no adapter) so that an adapter mismatch cannot hide behind a
bad base; and a LoRA saved by peft itself imports (`lemonpc peft --import`)
and gives peft's logits. The adapter has random non-zero A and B (lm_make_adapter) and
must move the output (KL from the base >= 0.05).

Tolerances: both sides compute in f32 with different summation orders;
measured max |dlogit| ~1e-4. Bounds: mean KL <= 1e-6, every top-1 equal,
max |dlogit| <= 5e-3.
"""
import json
import subprocess

import numpy as np
import pytest

# torch, transformers, peft, gguf: the python of scripts/setup_peft_venv.sh
# (`make oracle-peft`); without them the suite fails at import, naming the
# package, rather than skipping.
import gguf
import peft
import torch
import transformers

TEXT = ("<|im_start|>user\nWho guards the northern gate of the city?<|im_end|>\n"
        "<|im_start|>assistant\nThe old captain Maren does, with two of her sons.<|im_end|>\n")


def run(cmd):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{cmd[0]}: {r.stderr}"
    return r


def log_softmax(x):
    x = x.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def kl(p, q):
    lp, lq = log_softmax(p), log_softmax(q)
    return (np.exp(lp) * (lp - lq)).sum(axis=-1)


def unpermute(w, n_head):
    """GGUF -> HF rows of a Q/K weight [out, in]: llama.cpp's converter maps HF
    row h*hd + s*hd/2 + i to GGUF row h*hd + 2i + s."""
    out = w.shape[0]
    hd = out // n_head
    return w.reshape(n_head, hd // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_from_gguf(path):
    r = gguf.GGUFReader(str(path))

    def kv(key):
        f = r.fields[key]
        return f.parts[f.data[0]].tolist()[0]

    n_layer = kv("llama.block_count")
    n_head, n_kv = kv("llama.attention.head_count"), kv("llama.attention.head_count_kv")
    t = {x.name: np.array(x.data, dtype=np.float32).reshape([int(d) for d in reversed(x.shape)])
         for x in r.tensors}
    vocab, dim = t["token_embd.weight"].shape
    cfg = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=dim, intermediate_size=kv("llama.feed_forward_length"),
        num_hidden_layers=n_layer, num_attention_heads=n_head, num_key_value_heads=n_kv,
        max_position_embeddings=kv("llama.context_length"),
        rms_norm_eps=kv("llama.attention.layer_norm_rms_epsilon"),
        rope_theta=kv("llama.rope.freq_base"), tie_word_embeddings="output.weight" not in t,
        attention_bias=False, hidden_act="silu", torch_dtype="float32")
    sd = {"model.embed_tokens.weight": t["token_embd.weight"],
          "model.norm.weight": t["output_norm.weight"],
          "lm_head.weight": t.get("output.weight", t["token_embd.weight"])}
    names = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
             "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
             "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
             "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
    for l in range(n_layer):
        for g, h in names.items():
            w = t[f"blk.{l}.{g}.weight"]
            if g == "attn_q":
                w = unpermute(w, n_head)
            elif g == "attn_k":
                w = unpermute(w, n_kv)
            sd[f"model.layers.{l}.{h}.weight"] = w
    model = transformers.LlamaForCausalLM(cfg)
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v))
                                                 for k, v in sd.items()}, strict=False)
    assert not unexpected and all("rotary" in k for k in missing), (missing, unexpected)
    return model.eval()


def hf_logits(model, toks):
    with torch.no_grad():
        return model(torch.tensor([toks])).logits[0].float().numpy()


@pytest.fixture(scope="module")
def setup(real_model, lemonpc, tool, tmp_path_factory):
    d = tmp_path_factory.mktemp("peft")
    base = d / "base-F32.gguf"
    run([lemonpc, "quantize", real_model, base, "f32"])
    adapter = d / "adapter.gguf"
    run([tool("lm_make_adapter"), base, adapter, "--rank", 8, "--alpha", 16, "--b-std", 0.08,
         "--seed", 11])
    folder = d / "peft"
    run([lemonpc, "peft", base, adapter, folder, "--base-name", "local/smollm2"])
    # q,k alone (strongly scaled) isolates the lora_B row order of the permuted projections
    adapter_qk = d / "adapter-qk.gguf"
    run([tool("lm_make_adapter"), base, adapter_qk, "--rank", 8, "--alpha", 256, "--b-std",
         0.08, "--seed", 12, "--targets", "q,k"])
    folder_qk = d / "peft-qk"
    run([lemonpc, "peft", base, adapter_qk, folder_qk])
    toks = [int(x) for x in run([lemonpc, "tokenize", base, TEXT, "--ids"]).stdout.split()]
    return dict(dir=d, base=base, adapter=adapter, folder=folder, toks=toks,
                adapter_qk=adapter_qk, folder_qk=folder_qk,
                model=hf_from_gguf(base))


def ours(tool, setup, adapter):
    out = setup["dir"] / "logits.bin"
    extra = ["--adapter", adapter] if adapter else []
    r = run([tool("lm_logits"), setup["base"], ",".join(map(str, setup["toks"])),
             "--out", out, "--threads", 2, *extra])
    n_vocab = int(r.stdout.split()[1])
    return np.fromfile(out, dtype=np.float32).reshape(len(setup["toks"]), n_vocab)


def check(a, b, label):
    k, d = kl(b, a), np.abs(a - b).max()
    print(f"{label}: mean KL {k.mean():.2e}, max |dlogit| {d:.2e}")
    assert k.mean() <= 1e-6 and d <= 5e-3
    assert (a.argmax(-1) == b.argmax(-1)).all()


def test_folder_format(setup):
    cfg = json.loads((setup["folder"] / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 8 and cfg["lora_alpha"] == 16
    assert cfg["base_model_name_or_path"] == "local/smollm2"
    assert sorted(cfg["target_modules"]) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    from safetensors.numpy import load_file
    st = load_file(str(setup["folder"] / "adapter_model.safetensors"))
    assert st["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"].shape == (8, 576)
    assert st["base_model.model.model.layers.29.mlp.down_proj.lora_B.weight"].shape == (576, 8)
    assert len(st) == 30 * 7 * 2


def test_hf_base_matches_ours(setup, tool):
    check(ours(tool, setup, None), hf_logits(setup["model"], setup["toks"]), "base")


@pytest.mark.parametrize("which", ["", "_qk"])
def test_peft_adapter_matches_ours(setup, tool, which):
    from peft import PeftModel
    base = ours(tool, setup, None)
    a = ours(tool, setup, setup["adapter" + which])
    effect = kl(base, a).mean()
    print(f"adapter{which} effect: mean KL from the base {effect:.3f}")
    assert effect >= 0.05
    model = hf_from_gguf(setup["base"])   # fresh: peft modifies the model it wraps
    pm = PeftModel.from_pretrained(model, str(setup["folder" + which])).eval()
    check(a, hf_logits(pm, setup["toks"]), f"peft adapter{which}")
    # peft's own merge gives the same model again
    check(a, hf_logits(pm.merge_and_unload(), setup["toks"]), f"peft merged{which}")


def test_peft_saved_folder_imports(setup, tool, lemonpc):
    """The other direction: a LoRA made and saved by peft itself, imported with
    `lemonpc peft --import`, gives peft's logits in our runtime."""
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(5)
    model = hf_from_gguf(setup["base"])
    pm = get_peft_model(model, LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                        "down_proj"])).eval()
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name:   # peft initialises B = 0: give it values
                p.normal_(0.0, 0.08)
    folder = setup["dir"] / "peft-saved"
    pm.create_or_update_model_card = lambda *a, **k: None   # the README card needs jinja2
    pm.save_pretrained(str(folder))
    imported = setup["dir"] / "imported.gguf"
    run([lemonpc, "peft", "--import", setup["base"], folder, imported])
    a = ours(tool, setup, imported)
    assert kl(ours(tool, setup, None), a).mean() >= 0.05
    check(a, hf_logits(pm, setup["toks"]), "peft-saved folder imported")
