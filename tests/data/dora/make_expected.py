"""DoRA reference data: PEFT's `use_dora` on the golden tiny Llama (f32 base).

PEFT's DoRA linear layer (peft/tuners/lora/dora.py) computes
    y = (m / ‖W + s·B·A‖_row) ⊙ (x·Wᵀ + s·(x·Aᵀ)·Bᵀ) + bias
with the row norm detached (no gradient flows through it, as the DoRA paper's §4.3 says).

This script builds that adapter from the golden LoRA adapter (its A and B, r 8, alpha 16, all
seven linear modules) with magnitudes away from their initial value (the initial row norm
times a factor in [0.8, 1.2]), so that every gradient is nonzero, and writes:
  adapter/                 the adapter as PEFT's save_pretrained writes it (use_dora: true)
  expected.safetensors     input_ids, labels (the golden batch), loss, grad.<name> for every
                           adapter tensor, after_adamw.<name> (one AdamW step, the settings of
                           golden/tiny-llama/expected.json), logits (eval mode), and
                           merged.<base tensor name> (merge_and_unload's linear weights)
tests/dora.rs checks webqlora's DoRA against these.

Run (torch, transformers, peft, safetensors; PEFT 0.21.2 made the files here):
    python3 tests/data/dora/make_expected.py ../shared/golden/tiny-llama tests/data/dora
"""

import json
import sys
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

golden, out = Path(sys.argv[1]), Path(sys.argv[2])
settings = json.loads((golden / "expected.json").read_text())
torch.manual_seed(0)

base = AutoModelForCausalLM.from_pretrained(golden / "base-f32", dtype=torch.float32)
lora = settings["lora"]
config = LoraConfig(
    r=lora["r"],
    lora_alpha=lora["lora_alpha"],
    lora_dropout=0.0,
    target_modules=lora["target_modules"],
    use_dora=True,
    task_type="CAUSAL_LM",
)
model = get_peft_model(base, config)

# The golden adapter's A and B, then each magnitude as PEFT initialises it for them, scaled.
factors = load_file(golden / "adapter" / "adapter_model.safetensors")
params = dict(model.named_parameters())
with torch.no_grad():
    for saved, value in factors.items():
        params[saved.replace(".weight", ".default.weight")].copy_(value)
    for name, module in model.named_modules():
        if hasattr(module, "lora_magnitude_vector") and "default" in module.lora_magnitude_vector:
            dora = module.lora_magnitude_vector["default"]
            dora.update_layer(
                base_layer=module.get_base_layer(),
                lora_A=module.lora_A["default"].weight,
                lora_B=module.lora_B["default"].weight,
                scaling=module.scaling["default"],
            )
            scale = 0.8 + 0.4 * torch.rand(dora.weight.shape)
            dora.weight.mul_(scale)

model.save_pretrained(out / "adapter")
(out / "adapter" / "README.md").unlink()  # a model card, not the adapter


def saved_name(name):
    """PEFT's file name of a parameter: no adapter name; the magnitude without `.weight`."""
    name = name.replace(".default", "")
    if name.endswith("lora_magnitude_vector.weight"):
        name = name[: -len(".weight")]
    return name


expected = load_file(golden / "expected.safetensors")
ids, labels = expected["input_ids"], expected["labels"]
tensors = {"input_ids": ids, "labels": labels}

model.eval()
with torch.no_grad():
    tensors["logits"] = model(input_ids=ids).logits.contiguous()

model.train()
loss = model(input_ids=ids, labels=labels).loss
loss.backward()
tensors["loss"] = loss.detach().reshape(1)
trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
for name, p in trainable.items():
    tensors[f"grad.{saved_name(name)}"] = p.grad.detach().clone()

optimizer = torch.optim.AdamW(
    trainable.values(),
    lr=settings["lr"],
    betas=tuple(settings["betas"]),
    eps=settings["eps"],
    weight_decay=settings["weight_decay"],
)
optimizer.step()
for name, p in trainable.items():
    tensors[f"after_adamw.{saved_name(name)}"] = p.detach().clone()

# Merged from the adapter as saved (before the AdamW step).
merged = get_peft_model(
    AutoModelForCausalLM.from_pretrained(golden / "base-f32", dtype=torch.float32), config
)
from peft import set_peft_model_state_dict

set_peft_model_state_dict(merged, load_file(out / "adapter" / "adapter_model.safetensors"))
merged = merged.merge_and_unload()
for name, value in merged.state_dict().items():
    if any(f".{t}." in name for t in lora["target_modules"]):
        tensors[f"merged.{name}"] = value.detach().clone()

save_file({k: v.contiguous() for k, v in tensors.items()}, out / "expected.safetensors")
print(f"loss {loss.item():.6f}, {len(trainable)} adapter tensors")
