"""A tiny random-weight Llama model that real vLLM can load, made without torch/transformers.

Deterministic (seeded): the same files, byte for byte, on every machine, so checksums used by
deploy tests are stable. Geometry: head_dim 64 (vLLM's CPU attention rejects small head dims).
"""
from __future__ import annotations

import hashlib
import json
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .config import cache_path

SEED = 1234
VOCAB = 512
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "num_hidden_layers": 2,
    "vocab_size": VOCAB,
    "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "attention_bias": False,
    "mlp_bias": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "torch_dtype": "float32",
    "transformers_version": "4.46.0",
}
SPECIALS = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>"]  # ids 0..5
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
WORDS = ("model server deploy host token cache prompt answer health metrics secure proxy "
         "network request reply llama tiny test offline gpu cpu memory batch stream chat "
         "hello world the a of to and is in it for on with as").split()


SYLLABLES = "ka lo mi ne ru sa ti vo ze ba do fi gu he ja".split()


def _word(rng: random.Random) -> str:
    # Real words plus made-up ones, so BPE finds enough merges to fill the vocabulary.
    if rng.random() < 0.6:
        return rng.choice(WORDS)
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3)))


def _corpus(rng: random.Random, lines: int = 3000) -> list[str]:
    return [" ".join(_word(rng) for _ in range(rng.randint(3, 16))) + rng.choice(".?!")
            for _ in range(lines)]


def _tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=SPECIALS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # every byte is encodable
    tok.train_from_iterator(_corpus(random.Random(SEED)), trainer=trainer)
    assert tok.get_vocab_size() <= VOCAB, tok.get_vocab_size()
    return tok.to_str(pretty=True)


def _weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    c = CONFIG
    h, hd, inter = c["hidden_size"], c["head_dim"], c["intermediate_size"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    t = {"model.embed_tokens.weight": w(VOCAB, h)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t |= {
            p + "input_layernorm.weight": np.ones(h, np.float32),
            p + "self_attn.q_proj.weight": w(q, h),
            p + "self_attn.k_proj.weight": w(kv, h),
            p + "self_attn.v_proj.weight": w(kv, h),
            p + "self_attn.o_proj.weight": w(h, q),
            p + "post_attention_layernorm.weight": np.ones(h, np.float32),
            p + "mlp.gate_proj.weight": w(inter, h),
            p + "mlp.up_proj.weight": w(inter, h),
            p + "mlp.down_proj.weight": w(h, inter),
        }
    t["model.norm.weight"] = np.ones(h, np.float32)
    t["lm_head.weight"] = w(VOCAB, h)
    return t


def write_tiny_model(out: Path) -> Path:
    """Write the model files into OUT (created). Returns OUT."""
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file(_weights(), str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(CONFIG, indent=2, sort_keys=True) + "\n")
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "do_sample": False}, indent=2) + "\n")
    (out / "tokenizer.json").write_text(_tokenizer_json() + "\n")
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>",
        "add_bos_token": False, "add_eos_token": False,
        "model_max_length": CONFIG["max_position_embeddings"],
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}, indent=2) + "\n")
    return out


def checksums(model_dir: Path) -> dict[str, str]:
    """sha256 of every file in the model dir (what a deploy would verify)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(model_dir.iterdir()) if p.is_file()}


def ensure_tiny_model() -> Path:
    """The cached model dir (written once, atomically). World-readable for container users."""
    dest = cache_path("models", "tiny-llama")
    if (dest / "config.json").exists() and (dest / "model.safetensors").exists():
        return dest
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".tiny-"))
    write_tiny_model(tmp)
    tmp.chmod(0o755)
    for p in tmp.iterdir():
        p.chmod(0o644)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest
