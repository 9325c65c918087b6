"""Catalog data, lookups and model resolution (repo ids, local directories, GGUF files). No network."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
from safetensors.numpy import save_file

from toolkit import catalog
from toolkit.errors import CatalogError, ConfigError

# ---------------------------------------------------------------- the data files


def test_every_entry_validates_and_references_resolve():
    models, lics, gpus, quants = catalog.models(), catalog.licenses(), catalog.gpus(), catalog.quantizations()
    assert models and quants
    assert len(gpus) >= 22
    assert "unknown" in lics and lics["unknown"].commercial_use is False
    for m in models:
        assert m.license in lics, f"{m.id}: licence {m.license} missing from licenses.yaml"
        if m.native_quantization:
            assert catalog.quant(m.native_quantization)
    for sibling, target in catalog.variants().items():
        assert catalog.find_model(target) is not None, f"variants.yaml: {sibling} → unknown {target}"
    names = [g.name for g in gpus]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("g", catalog.gpus(), ids=lambda g: g.name)
def test_gpu_entries_are_plausible(g):
    # The runtime reports less than the marketed size (reserved memory, ECC; HBM "GB" are 10^9 bytes).
    assert g.memory_gb * 1e9 / 2**30 * 0.9 < g.memory_gib < g.memory_gb
    if g.vendor == "nvidia":
        assert g.compute_capability >= 7.0
        # FP8 tensor cores exist from Ada (8.9) on.
        assert (g.fp8_tflops is not None) == (g.compute_capability >= 8.9)
        assert g.pci_device_ids and all(i.startswith("0x10de:") for i in g.pci_device_ids)
    else:
        assert g.compute_capability == 0
    assert g.street_price_usd > 0 and (g.cloud_hourly_usd or 1) > 0


REQUIRED_GPUS = {
    "RTX 3090": "RTX-3090",
    "RTX 4090": "RTX-4090",
    "RTX 5090": "RTX-5090",
    "RTX A6000": "RTX-A6000",
    "RTX 6000 Ada": "RTX-6000-Ada",
    "RTX PRO 6000": "RTX-PRO-6000",
    "T4": "T4",
    "L4": "L4",
    "A10": "A10",
    "A10G": "A10G",
    "A40": "A40",
    "L40": "L40",
    "L40S": "L40S",
    "A100-40GB": "A100-40GB-SXM",
    "A100-80GB-SXM": "A100-80GB-SXM",
    "A100-80GB-PCIe": "A100-80GB-PCIe",
    "H100 PCIe": "H100-PCIe",
    "H100 SXM": "H100-SXM",
    "H100 NVL": "H100-NVL",
    "H200": "H200",
    "B200": "B200",
    "GH200": "GH200",
    "MI300X": "MI300X",
    # ambiguous short names → documented defaults
    "A100": "A100-80GB-SXM",
    "H100": "H100-SXM",
    "h100": "H100-SXM",
    # case / punctuation
    "h100-sxm": "H100-SXM",
    "H100_SXM": "H100-SXM",
    "rtx4090": "RTX-4090",
    "l40s": "L40S",
    # what `nvidia-smi --query-gpu=name` / rocm-smi print
    "NVIDIA H100 80GB HBM3": "H100-SXM",
    "NVIDIA H100 PCIe": "H100-PCIe",
    "NVIDIA H100 NVL": "H100-NVL",
    "NVIDIA A100-SXM4-80GB": "A100-80GB-SXM",
    "NVIDIA A100-SXM4-40GB": "A100-40GB-SXM",
    "NVIDIA A100 80GB PCIe": "A100-80GB-PCIe",
    "NVIDIA A100-PCIE-40GB": "A100-40GB-PCIe",
    "Tesla T4": "T4",
    "NVIDIA GeForce RTX 4090": "RTX-4090",
    "NVIDIA GeForce RTX 3090": "RTX-3090",
    "NVIDIA L4": "L4",
    "NVIDIA A10G": "A10G",
    "NVIDIA RTX A6000": "RTX-A6000",
    "NVIDIA RTX 6000 Ada Generation": "RTX-6000-Ada",
    "NVIDIA H200": "H200",
    "NVIDIA B200": "B200",
    "AMD Instinct MI300X": "MI300X",
}


@pytest.mark.parametrize("name,expected", REQUIRED_GPUS.items())
def test_gpu_lookup(name, expected):
    assert catalog.gpu(name).name == expected


def test_gpu_defaults_are_aliases_on_their_entry():
    for short, full in catalog.GPU_DEFAULTS.items():
        assert short.lower() in [a.lower() for a in catalog.gpu(full).aliases]


@pytest.mark.parametrize("name", ["h10", "A1000", "rtx 4080", "V100"])
def test_unknown_gpu_is_a_catalog_error(name):
    with pytest.raises(CatalogError) as exc:
        catalog.gpu(name)
    assert exc.value.hint == "selfhost gpus"


def test_gpu_did_you_mean():
    with pytest.raises(CatalogError, match="did you mean.*h100"):
        catalog.gpu("h10")


QUANTS = {  # name: (bytes_per_weight, min_cc, group_size)
    "none": (2.0, 0.0, None),
    "fp8": (1.0, 8.0, None),
    "int8": (1.0, 7.5, None),
    "awq": (0.5195, 7.5, 128),
    "gptq": (0.5195, 6.0, 128),
    "gptq-int8": (1.0234, 6.0, 128),
    "compressed-tensors": (0.5195, 7.5, 128),
    "bitsandbytes": (0.516, 7.0, 64),
    "mxfp4": (0.53125, 8.0, 32),
    "nvfp4": (0.5625, 10.0, 16),
    "Q8_0": (34 / 32, 6.0, 32),
    "Q6_K": (210 / 256, 6.0, 256),
    "Q4_0": (18 / 32, 6.0, 32),
    "Q2_K": (84 / 256, 6.0, 256),
    "IQ4_XS": (136 / 256, 6.0, 256),
    "Q4_K_M": (0.606, 6.0, 256),
    "Q5_K_M": (0.711, 6.0, 256),
    "Q3_K_M": (0.49, 6.0, 256),
}


@pytest.mark.parametrize("name,expected", QUANTS.items())
def test_quantization_table(name, expected):
    q = catalog.quant(name)
    assert (round(q.bytes_per_weight, 4), q.min_compute_capability, q.group_size) == (
        round(expected[0], 4),
        expected[1],
        expected[2],
    )
    assert q.quality
    assert q.quantizes_embeddings == (q.kind == "gguf")


def test_fp8_is_rejected_on_t4_but_runs_on_ampere():
    fp8 = catalog.quant("fp8")
    assert catalog.gpu("T4").compute_capability < fp8.min_compute_capability
    assert catalog.gpu("A100").compute_capability >= fp8.min_compute_capability
    assert catalog.gpu("A100").fp8_tflops is None  # weight-only Marlin there, no FP8 math
    assert catalog.quant("mxfp4").experts_only


@pytest.mark.parametrize(
    "name,expected", [("AWQ", "awq"), ("q4_k_m", "Q4_K_M"), ("GPTQ_INT8", "gptq-int8"), ("None", "none")]
)
def test_quant_lookup_is_case_insensitive(name, expected):
    assert catalog.quant(name).name == expected


def test_unknown_quant_lists_valid_names():
    with pytest.raises(CatalogError) as exc:
        catalog.quant("int3")
    assert "awq" in exc.value.fix and "Q4_K_M" in exc.value.fix


def test_api_prices_builtin():
    prices = catalog.api_prices()
    assert 8 <= len(prices.prices) <= 12
    assert prices.default in {f"{p.provider}/{p.model}" for p in prices.prices}
    assert {p.provider for p in prices.prices} == {"openai", "anthropic", "google"}


def test_api_prices_user_file(tmp_path):
    good = tmp_path / "prices.yaml"
    good.write_text(
        "as_of: '2026-01-01'\nsource: test\ndefault: acme/m\n"
        "prices: [{provider: acme, model: m, input_per_mtok_usd: 1, output_per_mtok_usd: 2}]\n"
    )
    assert catalog.api_prices(good).prices[0].provider == "acme"

    typo = tmp_path / "typo.yaml"
    typo.write_text(
        "as_of: x\nsource: y\ndefault: acme/m\n"
        "prices: [{provider: acme, model: m, input_per_mtok: 1, output_per_mtok_usd: 2}]\n"
    )
    with pytest.raises(ConfigError, match=r"typo.yaml: unknown key 'prices.0.input_per_mtok'"):
        catalog.api_prices(typo)

    bad_default = tmp_path / "default.yaml"
    bad_default.write_text(good.read_text().replace("default: acme/m", "default: acme/other"))
    with pytest.raises(ConfigError, match="default 'acme/other'"):
        catalog.api_prices(bad_default)

    with pytest.raises(ConfigError, match="no such"):
        catalog.api_prices(tmp_path / "missing.yaml")


# ---------------------------------------------------------------- model lookups


def test_model_lookup_by_id_alias_and_case():
    spec = catalog.model("meta-llama/Llama-3.1-8B-Instruct")
    assert catalog.model("META-LLAMA/llama-3.1-8b-instruct") is spec
    for alias in spec.aliases:
        assert catalog.model(alias) is spec
        assert catalog.model(alias.upper()) is spec


def test_model_lookup_via_variants():
    for sibling, target in list(catalog.variants().items())[:20]:
        assert catalog.model(sibling).id == catalog.model(target).id


def test_unknown_model_did_you_mean():
    with pytest.raises(CatalogError) as exc:
        catalog.model("llama-3.1-7b")
    assert exc.value.hint == "selfhost models"
    assert "did you mean" in exc.value.message and "llama-3.1" in exc.value.message


QUANTIZED_REPOS = {
    "Qwen/Qwen2.5-72B-Instruct-AWQ": ("Qwen/Qwen2.5-72B-Instruct", "awq"),
    "Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4": ("Qwen/Qwen2.5-7B-Instruct", "gptq"),
    "Qwen/Qwen2.5-7B-Instruct-GPTQ-Int8": ("Qwen/Qwen2.5-7B-Instruct", "gptq-int8"),
    "RedHatAI/Llama-3.3-70B-Instruct-FP8-dynamic": ("meta-llama/Llama-3.3-70B-Instruct", "fp8"),
    "neuralmagic/Meta-Llama-3.1-8B-Instruct-FP8": ("meta-llama/Llama-3.1-8B-Instruct", "fp8"),
    "hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4": ("meta-llama/Llama-3.1-70B-Instruct", "awq"),
    "unsloth/meta-llama-3.1-8b-instruct-bnb-4bit": ("meta-llama/Llama-3.1-8B-Instruct", "bitsandbytes"),
    "Qwen/Qwen3-8B-FP8": ("Qwen/Qwen3-8B", "fp8"),
    "RedHatAI/Meta-Llama-3.1-8B-Instruct-quantized.w4a16": ("meta-llama/Llama-3.1-8B-Instruct", "compressed-tensors"),
    "RedHatAI/Meta-Llama-3.1-8B-Instruct-quantized.w8a8": ("meta-llama/Llama-3.1-8B-Instruct", "int8"),
}


@pytest.mark.parametrize("repo,expected", QUANTIZED_REPOS.items())
def test_quantized_repo_resolves_to_base(repo, expected):
    base, qname = expected
    r = catalog.resolve_model(repo)
    assert (r.base_id, r.quant.name, r.source, r.repo_id, r.prequantized) == (base, qname, "variant", repo, True)
    assert r.spec.id == base


def test_catalog_model_resolves_with_native_format():
    r = catalog.resolve_model("meta-llama/Llama-3.1-8B-Instruct")
    assert (r.source, r.quant.name, r.prequantized, r.weight_bytes) == ("catalog", "none", False, None)
    for spec in catalog.models():
        if spec.native_quantization:
            r = catalog.resolve_model(spec.id)
            assert r.quant.name == spec.native_quantization and r.prequantized


def test_unknown_quantized_repo_is_a_catalog_error():
    with pytest.raises(CatalogError, match="unknown model"):
        catalog.resolve_model("nobody/NoSuchModel-13B-AWQ")


# ---------------------------------------------------------------- local Hugging Face directories

TINY = {"L": 2, "H": 64, "nq": 4, "kvh": 2, "hd": 16, "I": 128, "V": 256}


def _llama_config(**extra) -> dict:
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "num_hidden_layers": TINY["L"],
        "hidden_size": TINY["H"],
        "num_attention_heads": TINY["nq"],
        "num_key_value_heads": TINY["kvh"],
        "intermediate_size": TINY["I"],
        "vocab_size": TINY["V"],
        "max_position_embeddings": 2048,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
    }
    cfg.update(extra)
    return cfg


def _llama_tensors(dtype=np.float16) -> dict[str, np.ndarray]:
    H, I, V, kv = TINY["H"], TINY["I"], TINY["V"], TINY["kvh"] * TINY["hd"]
    t = {
        "model.embed_tokens.weight": np.zeros((V, H), dtype),
        "lm_head.weight": np.zeros((V, H), dtype),
        "model.norm.weight": np.zeros((H,), np.float32),
    }
    for i in range(TINY["L"]):
        p = f"model.layers.{i}."
        t |= {
            p + "self_attn.q_proj.weight": np.zeros((H, H), dtype),
            p + "self_attn.k_proj.weight": np.zeros((kv, H), dtype),
            p + "self_attn.v_proj.weight": np.zeros((kv, H), dtype),
            p + "self_attn.o_proj.weight": np.zeros((H, H), dtype),
            p + "mlp.gate_proj.weight": np.zeros((I, H), dtype),
            p + "mlp.up_proj.weight": np.zeros((I, H), dtype),
            p + "mlp.down_proj.weight": np.zeros((H, I), dtype),
            p + "input_layernorm.weight": np.zeros((H,), np.float32),
        }
    return t


def _write_dir(root: Path, cfg: dict, shards: list[dict[str, np.ndarray]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(cfg))
    for i, shard in enumerate(shards):
        save_file(shard, str(root / f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"))
    return root


def test_local_directory_exact_bytes(tmp_path):
    tensors = _llama_tensors()
    names = sorted(tensors)
    shards = [{n: tensors[n] for n in names[::2]}, {n: tensors[n] for n in names[1::2]}]
    # An MTP-style extra layer beyond num_hidden_layers is not loaded by vLLM for plain serving.
    shards[1]["model.layers.2.self_attn.q_proj.weight"] = np.zeros((64, 64), np.float16)
    d = _write_dir(tmp_path / "tiny-llama", _llama_config(), shards)

    r = catalog.resolve_model(str(d))
    numel = sum(a.size for a in tensors.values())
    assert r.source == "local" and r.local_path == str(d) and r.repo_id == str(d)
    assert r.weight_bytes == numel * 2  # fp32 norms counted as vLLM loads them: 16-bit
    assert r.embedding_bytes == 2 * TINY["V"] * TINY["H"] * 2
    assert r.quant.name == "none" and not r.prequantized
    s = r.spec
    assert (s.num_hidden_layers, s.hidden_size, s.num_key_value_heads, s.head_dim, s.vocab_size) == (2, 64, 2, 16, 256)
    assert s.params_b == round(numel / 1e9, 6)
    assert s.license == "unknown" and r.base_id == str(d)


def test_local_directory_relative_path(tmp_path, monkeypatch):
    _write_dir(tmp_path / "m", _llama_config(), [_llama_tensors()])
    monkeypatch.chdir(tmp_path)
    assert catalog.resolve_model("./m").source == "local"


def test_local_awq_directory(tmp_path):
    H, I, g = TINY["H"], TINY["I"], 32
    tensors = {
        "model.embed_tokens.weight": np.zeros((TINY["V"], H), np.float16),
        "lm_head.weight": np.zeros((TINY["V"], H), np.float16),
    }
    for i in range(TINY["L"]):
        for proj, (n_in, n_out) in {"mlp.down_proj": (I, H), "mlp.up_proj": (H, I)}.items():
            p = f"model.layers.{i}.{proj}."
            tensors |= {
                p + "qweight": np.zeros((n_in, n_out // 8), np.int32),
                p + "qzeros": np.zeros((n_in // g, n_out // 8), np.int32),
                p + "scales": np.zeros((n_in // g, n_out), np.float16),
            }
    qc = {"quant_method": "awq", "bits": 4, "group_size": g, "zero_point": True, "version": "gemm"}
    d = _write_dir(tmp_path / "tiny-awq", _llama_config(quantization_config=qc), [tensors])
    r = catalog.resolve_model(str(d))
    assert r.quant.name == "awq" and r.quant.group_size == g and r.prequantized
    assert r.weight_bytes == sum(a.nbytes for a in tensors.values())  # on-disk bytes, nothing recast
    assert r.spec.native_quantization == "awq"


QUANT_CONFIGS = [
    ({"quant_method": "awq", "bits": 4, "group_size": 128}, "awq"),
    ({"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False}, "gptq"),
    ({"quant_method": "gptq", "bits": 8, "group_size": 128}, "gptq-int8"),
    ({"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}, "fp8"),
    ({"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}, "bitsandbytes"),
    ({"quant_method": "mxfp4"}, "mxfp4"),
    (
        {
            "quant_method": "compressed-tensors",
            "config_groups": {
                "group_0": {
                    "weights": {"num_bits": 8, "type": "float", "strategy": "channel"},
                    "input_activations": {"num_bits": 8, "type": "float", "dynamic": True},
                }
            },
        },
        "fp8",
    ),
    (
        {
            "quant_method": "compressed-tensors",
            "config_groups": {
                "group_0": {
                    "weights": {"num_bits": 8, "type": "int", "strategy": "channel"},
                    "input_activations": {"num_bits": 8, "type": "int", "dynamic": True},
                }
            },
        },
        "int8",
    ),
    (
        {
            "quant_method": "compressed-tensors",
            "config_groups": {
                "group_0": {
                    "weights": {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 128},
                    "input_activations": None,
                }
            },
        },
        "compressed-tensors",
    ),
    (
        {
            "quant_method": "compressed-tensors",
            "config_groups": {
                "group_0": {"weights": {"num_bits": 4, "type": "float", "group_size": 16}, "input_activations": None}
            },
        },
        "nvfp4",
    ),
]


@pytest.mark.parametrize("qc,expected", QUANT_CONFIGS, ids=[q for _, q in QUANT_CONFIGS])
def test_quantization_config_detection(tmp_path, qc, expected):
    d = _write_dir(tmp_path / "q", _llama_config(quantization_config=qc), [])  # config only: no weights yet
    r = catalog.resolve_model(str(d))
    assert r.quant.name == expected and r.prequantized and r.weight_bytes is None
    assert r.spec.params_b > 0  # estimated from the geometry


def test_local_directory_matching_catalog_geometry_borrows_licence(tmp_path):
    base = catalog.model("meta-llama/Llama-3.1-8B-Instruct")
    cfg = _llama_config(
        num_hidden_layers=base.num_hidden_layers,
        hidden_size=base.hidden_size,
        num_attention_heads=base.num_attention_heads,
        num_key_value_heads=base.num_key_value_heads,
        intermediate_size=base.intermediate_size,
        vocab_size=base.vocab_size,
        max_position_embeddings=base.max_position_embeddings,
        _name_or_path="my-org/llama-3.1-8b-finetune",
    )
    r = catalog.resolve_model(str(_write_dir(tmp_path / "ft", cfg, [])))
    assert r.base_id == base.id and r.spec.license == base.license and r.spec.family == base.family


def test_vlm_text_config_and_sliding_layers(tmp_path):
    text = {
        "model_type": "gemma3_text",
        "num_hidden_layers": 12,
        "hidden_size": 64,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "intermediate_size": 128,
        "vocab_size": 256,
        "max_position_embeddings": 131072,
        "sliding_window": 1024,
        "sliding_window_pattern": 6,
    }
    cfg = {
        "architectures": ["Gemma3ForConditionalGeneration"],
        "model_type": "gemma3",
        "text_config": text,
        "vision_config": {"model_type": "siglip_vision_model"},
    }
    r = catalog.resolve_model(str(_write_dir(tmp_path / "g3", cfg, [])))
    s = r.spec
    assert (s.head_dim, s.sliding_window, s.full_attention_interval, s.tie_word_embeddings) == (32, 1024, 6, True)
    assert s.attention_layers().count("full") == 2


def test_deepseek_mla_moe_config(tmp_path):
    cfg = {
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": "deepseek_v3",
        "num_hidden_layers": 4,
        "hidden_size": 256,
        "num_attention_heads": 8,
        "num_key_value_heads": 8,
        "intermediate_size": 512,
        "moe_intermediate_size": 64,
        "n_routed_experts": 16,
        "n_shared_experts": 1,
        "num_experts_per_tok": 4,
        "first_k_dense_replace": 1,
        "moe_layer_freq": 1,
        "kv_lora_rank": 64,
        "q_lora_rank": 96,
        "qk_rope_head_dim": 16,
        "qk_nope_head_dim": 32,
        "v_head_dim": 32,
        "vocab_size": 1000,
        "max_position_embeddings": 4096,
    }
    s = catalog.resolve_model(str(_write_dir(tmp_path / "ds", cfg, []))).spec
    assert s.mla is not None and s.mla.kv_lora_rank == 64 and s.head_dim == 48
    assert s.moe is not None and (s.moe.num_experts, s.moe.first_dense_layers, s.moe.num_shared_experts) == (16, 1, 1)


def test_bad_local_inputs_are_catalog_errors(tmp_path):
    with pytest.raises(CatalogError, match="no such file"):
        catalog.resolve_model(str(tmp_path / "missing"))

    (tmp_path / "empty").mkdir()
    with pytest.raises(CatalogError, match="no config.json") as exc:
        catalog.resolve_model(str(tmp_path / "empty"))
    assert exc.value.fix

    d = _write_dir(tmp_path / "corrupt", _llama_config(), [])
    (d / "model.safetensors").write_bytes((10**12).to_bytes(8, "little") + b"{}")
    with pytest.raises(CatalogError, match=r"model.safetensors: corrupt safetensors header"):
        catalog.resolve_model(str(d))

    (d / "model.safetensors").write_bytes((20).to_bytes(8, "little") + b"not json at all!!!!!")
    with pytest.raises(CatalogError, match="corrupt safetensors header"):
        catalog.resolve_model(str(d))

    (d / "model.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(CatalogError, match="corrupt safetensors header"):
        catalog.resolve_model(str(d))

    bad = _write_dir(tmp_path / "badjson", {}, [])
    (bad / "config.json").write_text("{not json")
    with pytest.raises(CatalogError, match="config.json: not valid JSON"):
        catalog.resolve_model(str(bad))

    mamba = _write_dir(tmp_path / "mamba", {"model_type": "mamba", "architectures": ["MambaForCausalLM"]}, [])
    with pytest.raises(CatalogError, match="unsupported architecture"):
        catalog.resolve_model(str(mamba))

    idx = _write_dir(tmp_path / "partial", _llama_config(), [])
    (idx / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors"}})
    )
    with pytest.raises(CatalogError, match="incomplete download"):
        catalog.resolve_model(str(idx))

    odd = tmp_path / "weights.bin"
    odd.write_bytes(b"x")
    with pytest.raises(CatalogError, match="neither a model directory nor a .gguf file"):
        catalog.resolve_model(str(odd))


# ---------------------------------------------------------------- GGUF files


def _write_gguf(path: Path, qtype=gguf.GGMLQuantizationType.Q8_0, tied=True) -> dict[str, int]:
    H, I, V, kv = TINY["H"], TINY["I"], TINY["V"], TINY["kvh"] * TINY["hd"]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_block_count(TINY["L"])
    w.add_embedding_length(H)
    w.add_head_count(TINY["nq"])
    w.add_head_count_kv(TINY["kvh"])
    w.add_feed_forward_length(I)
    w.add_context_length(4096)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    w.add_token_list([f"tok{i}" for i in range(V)])
    rng = np.random.default_rng(0)
    shapes = {"token_embd.weight": (V, H)}
    if not tied:
        shapes["output.weight"] = (V, H)
    for i in range(TINY["L"]):
        shapes |= {
            f"blk.{i}.attn_q.weight": (H, H),
            f"blk.{i}.attn_k.weight": (kv, H),
            f"blk.{i}.attn_v.weight": (kv, H),
            f"blk.{i}.attn_output.weight": (H, H),
            f"blk.{i}.ffn_gate.weight": (I, H),
            f"blk.{i}.ffn_up.weight": (I, H),
            f"blk.{i}.ffn_down.weight": (H, I),
        }
    nbytes = {}
    for name, shape in shapes.items():
        data = gguf.quants.quantize(rng.standard_normal(shape).astype(np.float32), qtype)
        w.add_tensor(name, data, raw_dtype=qtype)
        nbytes[name] = data.nbytes
    norm = np.ones((H,), np.float32)
    w.add_tensor("output_norm.weight", norm)
    nbytes["output_norm.weight"] = norm.nbytes
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return nbytes


def test_gguf_file_resolves(tmp_path):
    path = tmp_path / "tiny-llama-Q8_0.gguf"
    nbytes = _write_gguf(path)
    r = catalog.resolve_model(str(path))
    assert r.source == "gguf" and r.local_path == str(path) and r.prequantized
    assert r.quant.name == "Q8_0" and r.quant.kind == "gguf" and r.quant.quantizes_embeddings
    assert r.weight_bytes == sum(nbytes.values())
    assert r.embedding_bytes == nbytes["token_embd.weight"]
    s = r.spec
    assert (s.num_hidden_layers, s.hidden_size, s.num_attention_heads, s.num_key_value_heads) == (2, 64, 4, 2)
    assert (s.head_dim, s.intermediate_size, s.vocab_size, s.max_position_embeddings) == (16, 128, 256, 4096)
    assert s.tie_word_embeddings and s.license == "unknown"


def test_gguf_untied_output(tmp_path):
    path = tmp_path / "untied.gguf"
    nbytes = _write_gguf(path, tied=False)
    r = catalog.resolve_model(str(path))
    assert not r.spec.tie_word_embeddings
    assert r.embedding_bytes == nbytes["token_embd.weight"] + nbytes["output.weight"]


def test_corrupt_gguf_is_a_catalog_error(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\xff" * 64)
    with pytest.raises(CatalogError, match="bad.gguf: cannot read the GGUF header"):
        catalog.resolve_model(str(bad))
    with pytest.raises(CatalogError, match="no such file"):
        catalog.resolve_model(str(tmp_path / "missing.gguf"))
