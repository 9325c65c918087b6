"""A tiny LoRA adapter for the tiny Llama (tiny_model.py), made offline with PEFT.

Seeded and non-zero in both factors (PEFT's default zero lora_B would leave the answers unchanged), so a
request naming the adapter answers differently from the base model at temperature 0. Rank 8 on all seven
projections vLLM wraps for Llama (q/k/v/o, gate/up/down). Needs torch, transformers and peft (test extra).
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from .config import cache_path
from .tiny_model import ensure_tiny_model

SEED = 4321
RANK = 8
ALPHA = 16
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
STD = 0.1
"""Standard deviation of both LoRA factors: ΔW = (α/r)·B·A is a few times the base weights (std 0.02)."""


def write_tiny_lora(base_dir: Path, out: Path, *, base_name: str | None = None) -> Path:
    """Train-free adapter for the model in BASE_DIR, saved with PEFT into OUT (adapter_config.json +
    adapter_model.safetensors). `base_name` sets base_model_name_or_path (default: BASE_DIR as PEFT writes it)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.manual_seed(SEED)
    base = LlamaForCausalLM.from_pretrained(str(base_dir), torch_dtype=torch.float32)
    cfg = LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TARGETS, lora_dropout=0.0, bias="none",
                     task_type="CAUSAL_LM")
    model = get_peft_model(base, cfg)
    gen = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * STD)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    cfg_file = out / "adapter_config.json"  # rewritten in a stable order (PEFT writes target_modules as a set)
    data = json.loads(cfg_file.read_text())
    data["target_modules"] = sorted(data["target_modules"])
    if base_name is not None:
        data["base_model_name_or_path"] = base_name
    cfg_file.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return out


def ensure_tiny_lora() -> Path:
    """The cached adapter dir (written once, atomically), for the cached tiny model. World-readable."""
    base = ensure_tiny_model()
    dest = cache_path("adapters", "tiny-lora")
    if (dest / "adapter_config.json").exists() and (dest / "adapter_model.safetensors").exists():
        return dest
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".tiny-lora-"))
    write_tiny_lora(base, tmp)
    tmp.chmod(0o755)
    for p in tmp.iterdir():
        p.chmod(0o644)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest
