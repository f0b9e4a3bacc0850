"""
Generates test/golden/: tiny bases, PEFT LoRA adapters, and what PEFT's merge_and_unload() makes of them
on CPU, with the real PyTorch + PEFT (versions recorded in manifest.json). test/unit/golden.test.ts checks
that `lora-lens merge` reproduces every merged tensor bit for bit under the rule named per golden.

Which rule each golden is (W the stored base weight, d the fp32 delta, r rounding to the dtype):
- fp32: base in fp32, merged = f(W + d)                                                  (every rule)
- fp16/bf16 "peft": base loaded in fp32 and cast with .to(dtype) (r(W)), adapter loaded with PEFT's default
  autocast_adapter_dtype=True (lora weights stay fp32), merge_and_unload(): weight.data += delta is an
  fp32 add rounded once, r(f(r(W) + d)) = rule `peft`.
- bf16 "peft-safe": the same with merge_and_unload(safe_merge=True), which adds delta.to(bf16):
  r(f(r(W) + r(d))) = rule `peft-safe`.
- DoRA: m / ||f(r(W) + d)||_row * f(r(W) + d), also with safe_merge=True (PEFT's safe DoRA merge keeps the
  delta in fp32). PyTorch's fp32 torch.linalg.norm does not accumulate in float64 as LoRA Lens does, so at
  fp32 a DoRA row norm can differ by 1 ulp, moving m / norm and the product by up to 3 ulp (measured):
  `maxUlp` in the manifest allows that; at
  fp16/bf16 the rounding hides it and the goldens are exact.
- LoRA on embeddings: PEFT's Embedding.merge() adds get_delta_weight().to(orig_dtype) in both paths, so
  PEFT's default merge of an embedding is the `peft-safe` formula, not `peft`: `ruleOverrides` in the
  manifest names those tensors and the rule they follow.

The LoRA factors are small dyadic numbers (k / 256, |k| <= 64) so that B @ A is exact in fp32 whatever
the summation order, and the scales are powers of two: PyTorch's fp32 matmul (fp32 accumulation) and
LoRA Lens (float64 accumulation, one rounding) then agree exactly, and the goldens test everything else
(layout, orientation, scaling, rounding rules, DoRA) bit for bit. With full-precision factors the two
deltas differ in the last bit of some elements; see the `random` golden's note in manifest.json.

Run: .venv/bin/python scripts/golden/make_goldens.py   (writes test/golden/, a few hundred KB)
"""
import json
import os
import shutil

import peft
import safetensors
import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "test", "golden")


def dyadic(shape, gen):
    return torch.randint(-64, 65, shape, generator=gen).float() / 256


def save_model(model, d, dtype_name):
    os.makedirs(d, exist_ok=True)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    cfg = model.config.to_dict()
    cfg["torch_dtype"] = dtype_name
    cfg.pop("dtype", None)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, default=str)


def make_adapter(base_dir, model_fn, cfg, d, seed, dora_magnitude=False):
    gen = torch.Generator().manual_seed(seed)
    model = model_fn(base_dir)
    pm = get_peft_model(model, cfg)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_" in name and "magnitude" not in name:
                p.copy_(dyadic(p.shape, gen))
            elif "lora_magnitude_vector" in name:
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
            elif "modules_to_save" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    pm.save_pretrained(d)


def merged(base_dir, model_fn, adapter_dir, dtype, safe=False):
    model = model_fn(base_dir).to(dtype)
    pm = PeftModel.from_pretrained(model, adapter_dir)
    return pm.merge_and_unload(safe_merge=safe)


def llama_fn(d):
    return LlamaForCausalLM.from_pretrained(d, torch_dtype=torch.float32)


def gpt2_fn(d):
    return GPT2LMHeadModel.from_pretrained(d, torch_dtype=torch.float32)


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    torch.manual_seed(0)
    manifest = {
        "generator": "scripts/golden/make_goldens.py",
        "versions": {"torch": torch.__version__, "peft": peft.__version__, "transformers": transformers.__version__, "safetensors": safetensors.__version__},
        "cases": [],
    }
    llama_cfg = LlamaConfig(
        vocab_size=32, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=32, tie_word_embeddings=False,
    )
    base = LlamaForCausalLM(llama_cfg)
    save_model(base, os.path.join(OUT, "llama-base-fp32"), "float32")
    # The same model stored in bf16: merges start from W as stored.
    save_model(LlamaForCausalLM(llama_cfg).to(torch.bfloat16), os.path.join(OUT, "llama-base-bf16"), "bfloat16")
    gpt2_cfg = GPT2Config(vocab_size=32, n_positions=16, n_embd=16, n_layer=1, n_head=2, tie_word_embeddings=False)
    save_model(GPT2LMHeadModel(gpt2_cfg), os.path.join(OUT, "gpt2-base-fp32"), "float32")

    cases = [
        ("lora-qkvo-embed", "llama-base-fp32", llama_fn,
         LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "embed_tokens"], init_lora_weights=False)),
        ("rslora-patterns", "llama-base-fp32", llama_fn,
         LoraConfig(r=4, lora_alpha=8, use_rslora=True, rank_pattern={"v_proj": 16}, alpha_pattern={"o_proj": 32},
                    target_modules=["q_proj", "v_proj", "o_proj", "down_proj"], init_lora_weights=False)),
        ("dora", "llama-base-fp32", llama_fn,
         LoraConfig(r=4, lora_alpha=8, use_dora=True, target_modules=["q_proj", "v_proj", "gate_proj"], init_lora_weights=False)),
        ("mts-bf16-base", "llama-base-bf16", lambda d: LlamaForCausalLM.from_pretrained(d, torch_dtype=torch.bfloat16),
         LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "up_proj"], modules_to_save=["lm_head"], init_lora_weights=False)),
        ("gpt2-conv1d", "gpt2-base-fp32", gpt2_fn,
         LoraConfig(r=4, lora_alpha=16, target_modules=["c_attn", "attn.c_proj", "mlp.c_fc"], fan_in_fan_out=True, init_lora_weights=False)),
    ]
    for i, (name, base_name, fn, cfg) in enumerate(cases):
        base_dir = os.path.join(OUT, base_name)
        adapter_dir = os.path.join(OUT, name, "adapter")
        make_adapter(base_dir, fn, cfg, adapter_dir, seed=100 + i)
        for f in os.listdir(adapter_dir):
            if f not in ("adapter_config.json", "adapter_model.safetensors"):
                os.remove(os.path.join(adapter_dir, f))
        outputs = []
        variants = [("fp32", torch.float32, "peft", False), ("fp16", torch.float16, "peft", False), ("bf16", torch.bfloat16, "peft", False), ("bf16", torch.bfloat16, "peft-safe", True)]
        if base_name == "llama-base-bf16":
            variants = [("bf16", torch.bfloat16, "peft", False), ("bf16", torch.bfloat16, "peft-safe", True), ("fp32", torch.float32, "peft", False)]
        for dtype_name, dtype, rule, safe in variants:
            m = merged(base_dir, fn, adapter_dir, dtype, safe)
            sd = {k: v.contiguous() for k, v in m.state_dict().items()}
            wrong = sorted({str(v.dtype) for v in sd.values()} - {str(dtype)})
            assert not wrong, f"{name}: merged model has {wrong} tensors"
            fname = f"merged-{dtype_name}-{rule}.safetensors"
            save_file(sd, os.path.join(OUT, name, fname), metadata={"format": "pt"})
            outputs.append({"file": fname, "dtype": dtype_name, "rule": rule, "safe_merge": safe})
        case = {"name": name, "base": base_name, "adapter": f"{name}/adapter", "merged": outputs}
        if "embed_tokens" in (cfg.target_modules or []):
            case["ruleOverrides"] = {"model.embed_tokens.weight": "peft-safe"}
        if cfg.use_dora:
            case["maxUlp"] = {"fp32": 3}
        manifest["cases"].append(case)
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
