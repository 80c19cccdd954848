/* Export of a LoRA adapter as a PEFT folder (transformers / vLLM):
 * adapter_config.json + adapter_model.safetensors (F32), tensors named
 * base_model.model.model.layers.N.{self_attn.{q,k,v,o}_proj,
 * mlp.{gate,up,down}_proj}.lora_A.weight [r, in] / lora_B.weight [out, r].
 * Our adapters are in GGUF layout, where Q/K output rows are permuted (pairs
 * 2i, 2i+1 of a head are HF's i, i + head_dim/2): lora_B rows of q_proj and
 * k_proj are put back in HF order; lora_A (input side) is unchanged. */
#ifndef LM_TRAIN_PEFT_H
#define LM_TRAIN_PEFT_H

#include "base/err.h"
#include "model/adapter.h"
#include "model/llama.h"

/* Creates dir if needed and writes both files (each atomically).
 * base_name goes to base_model_name_or_path (NULL: "HuggingFaceTB/SmolLM2-135M-Instruct"). */
int lm_peft_write(const lm_model *base, const lm_adapter *a, const char *dir,
                  const char *base_name, lm_err *err);

/* Reads a PEFT folder (F32/F16/BF16 safetensors, names as above, r and
 * lora_alpha from adapter_config.json; use_rslora, DoRA, bias and
 * modules_to_save are refused) and writes it as a llama.cpp adapter GGUF
 * for base, with q/k lora_B rows put in GGUF order. Errors name the file
 * and tensor. */
int lm_peft_import(const lm_model *base, const char *dir, const char *out_path, lm_err *err);
/* The same on the two files' contents, named cpath and spath in messages
 * (neither need be NUL-terminated); out_path NULL checks and converts
 * without writing (the fuzzer's entry point). */
int lm_peft_import_mem(const lm_model *base, const char *cpath, const char *config,
                       size_t config_len, const char *spath, const char *st, size_t st_len,
                       const char *out_path, lm_err *err);

/* GGUF row index of HF row `hf` of a Q/K projection with heads of head_dim. */
int lm_peft_gguf_row(int hf, int head_dim);

#endif
