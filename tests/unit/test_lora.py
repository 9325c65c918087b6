"""LoRA: the memory vLLM pre-allocates, and the adapter checks that run before anything ships."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from toolkit import catalog
from toolkit.catalog.adapters import check_adapter, round_rank, target_modules
from toolkit.catalog.checkpoint import from_directory
from toolkit.errors import CatalogError, PlanError, SelfhostError
from toolkit.plan.planner import PlanRequest, plan
from toolkit.sizing.lora import LoraSettings, lora_memory

TINY = {  # tests/e2e/infra/tiny_model.py geometry
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256, "intermediate_size": 512,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64, "num_hidden_layers": 2, "vocab_size": 512,
    "max_position_embeddings": 1024, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
    "tie_word_embeddings": False, "torch_dtype": "float32",
}
SHAPES = {"q_proj": (256, 256), "k_proj": (256, 128), "v_proj": (256, 128), "o_proj": (256, 256),
          "gate_proj": (256, 512), "up_proj": (256, 512), "down_proj": (512, 256)}  # (in, out)


@pytest.fixture()
def tiny(tmp_path: Path) -> Path:
    d = tmp_path / "tiny-llama"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(TINY))
    return d


def make_adapter(root: Path, base: str, *, r: int = 8, name: str = "adapter", modules=tuple(SHAPES),
                 layers: int = 2, config: dict | None = None, shapes: dict | None = None) -> Path:
    d = root / name
    d.mkdir(parents=True)
    cfg = {"peft_type": "LORA", "r": r, "lora_alpha": 2 * r, "target_modules": list(modules), "bias": "none",
           "base_model_name_or_path": base, "modules_to_save": None, "task_type": "CAUSAL_LM"}
    cfg.update(config or {})
    (d / "adapter_config.json").write_text(json.dumps(cfg))
    shapes = shapes or SHAPES
    tensors = {}
    for i in range(layers):
        for m in modules:
            part = "self_attn" if m.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else "mlp"
            fan_in, fan_out = shapes[m]
            key = f"base_model.model.model.layers.{i}.{part}.{m}"
            tensors[f"{key}.lora_A.weight"] = np.zeros((r, fan_in), np.float32)
            tensors[f"{key}.lora_B.weight"] = np.ones((fan_out, r), np.float32)
    save_file(tensors, str(d / "adapter_model.safetensors"))
    return d


def one_line(exc: SelfhostError) -> str:
    text = exc.message
    assert "\n" not in text and "Traceback" not in text
    return text


# ------------------------------------------------------------------ memory, against vLLM's source


def test_llama_3_1_8b_worked_example_tp1_and_tp2():
    """Derived by hand from vllm/lora/layers (0.32.0), max_loras n=4, max_lora_rank r=16, bf16 (2 bytes).

    Llama-3.1-8B: H=4096, q=32·128=4096, kv=8·128=1024, I=14336, V=128256, 32 layers.
    Elements per layer ÷ (n·r), TP1:
      qkv_proj  (MergedQKV, 3 slices): A 3·H = 12288, B q + 2kv = 6144          → 18432
      o_proj    (RowParallel):         A q = 4096,    B H = 4096                 →  8192
      gate_up   (MergedColumn, 2):     A 2·H = 8192,  B 2·I = 28672              → 36864
      down_proj (RowParallel):         A I = 14336,   B H = 4096                 → 18432
      = 81920 × 32 layers = 2,621,440; embed_tokens A V + B H = 132352, lm_head A H + B V = 132352
      total 2,886,144 × n·r·2 = 369,426,432 bytes = 0.344 GiB
    TP2 (B of column layers and A of row layers halve; A of column / B of row stay full; kv 4 heads = 512):
      qkv 12288 + 2048 + 1024 = 15360; o 2048 + 4096 = 6144; gate_up 8192 + 14336 = 22528;
      down 7168 + 4096 = 11264 → 55296 × 32 = 1,769,472 + 264,704 (embeddings are not split)
      = 2,034,176 × 128 = 260,374,528 bytes = 0.242 GiB
    """
    spec = catalog.resolve_model("llama-3.1-8b").spec
    s = LoraSettings(max_loras=4, max_lora_rank=16)
    tp1 = lora_memory(spec, s, tp=1)
    tp2 = lora_memory(spec, s, tp=2)
    assert tp1.buffers_bytes == 369_426_432
    assert tp2.buffers_bytes == 260_374_528
    assert dict(tp1.rows) == {"qkv_proj": 32 * 18432 * 128, "o_proj": 32 * 8192 * 128, "gate_up_proj": 32 * 36864 * 128,
                              "down_proj": 32 * 18432 * 128, "embed_tokens + lm_head": 264_704 * 128}
    # the punica index tensors and the profile run's shrink buffer are small and on top
    assert 0 < tp1.gpu_bytes - tp1.buffers_bytes < 2 * 2**20


def test_tiny_model_matches_what_vllm_allocated(tiny):
    """Bytes of every lora_a/b_stacked tensor vLLM 0.32.0 (CPU) allocated for the tiny model, max_loras 2, rank 8
    (summed per wrapper with LLM.apply_model; tests/integration/test_lora_contract.py re-measures it)."""
    spec = from_directory(tiny).spec
    mem = lora_memory(spec, LoraSettings(max_loras=2, max_lora_rank=8))
    measured = {"VocabParallelEmbeddingWithLoRA:embed_tokens": 24576, "MergedQKVParallelLinearWithLoRA:qkv_proj": 81920,
                "RowParallelLinearWithLoRA:o_proj": 32768, "MergedColumnParallelLinearWithLoRA:gate_up_proj": 98304,
                "RowParallelLinearWithLoRA:down_proj": 49152, "LogitsProcessorWithLoRA:logits_processor": 24576}
    assert mem.buffers_bytes == sum(measured.values()) == 311_296
    rows = dict(mem.rows)
    assert rows["qkv_proj"] == measured["MergedQKVParallelLinearWithLoRA:qkv_proj"]
    assert rows["gate_up_proj"] == measured["MergedColumnParallelLinearWithLoRA:gate_up_proj"]


def test_kv_replicated_when_tp_exceeds_kv_heads_and_pp_splits_layers():
    spec = catalog.resolve_model("llama-3.1-8b").spec  # 8 KV heads
    s = LoraSettings(max_loras=1, max_lora_rank=8)
    tp8, tp16 = dict(lora_memory(spec, s, tp=8).rows), dict(lora_memory(spec, s, tp=16).rows)
    # qkv B at TP16: q 4096/16 = 256 + 2 × (1 replicated kv head × 128)
    assert tp16["qkv_proj"] == 32 * 8 * (3 * 4096 + 256 + 256) * 2
    assert tp8["qkv_proj"] == 32 * 8 * (3 * 4096 + 512 + 256) * 2
    pp2 = lora_memory(spec, s, pp=2)
    assert dict(pp2.rows)["o_proj"] == 16 * 8 * (4096 + 4096) * 2


def test_rank_rounding_follows_vllm_allowed_values():
    assert [round_rank(r) for r in (1, 2, 8, 9, 16, 17, 300, 321, 512)] == [1, 8, 8, 16, 16, 32, 320, 512, 512]
    with pytest.raises(CatalogError):
        round_rank(513)


def test_moe_and_unknown_architectures_fail_closed(tmp_path):
    spec = catalog.resolve_model("qwen3-30b-a3b").spec
    with pytest.raises(CatalogError, match="not planned"):
        lora_memory(spec, LoraSettings())


# ------------------------------------------------------------------ adapter checks


def test_good_adapter_passes(tiny, tmp_path):
    spec = from_directory(tiny).spec
    a = check_adapter("support", make_adapter(tmp_path / "a", str(tiny)), spec, [str(tiny)])
    assert a.rank == 8 and a.modules == tuple(sorted(SHAPES))
    assert a.tensor_bytes == 2 * 2 * sum(8 * i + o * 8 for i, o in SHAPES.values())
    assert set(target_modules(spec)) >= set(SHAPES) | {"embed_tokens", "lm_head"}


def test_base_name_matching(tiny, tmp_path):
    spec = from_directory(tiny).spec
    # PEFT writes the training machine's path: the last component must be the model's
    check_adapter("a", make_adapter(tmp_path / "x", "/home/me/models/TINY-LLAMA/"), spec, [str(tiny), "tiny-llama"])
    check_adapter("b", make_adapter(tmp_path / "y", "Meta-Llama/Llama-3.1-8B"), spec, ["meta-llama/llama-3.1-8b"])
    with pytest.raises(CatalogError) as e:  # same last component, different org: a hub id must match whole
        check_adapter("c", make_adapter(tmp_path / "z", "someone/llama-3.1-8b"), spec, ["meta-llama/Llama-3.1-8B"])
    assert "base_model_name_or_path" in one_line(e.value)


@pytest.mark.parametrize("case, kwargs, words", [
    ("wrong base", {"base": "Qwen/Qwen2.5-7B"}, ["base_model_name_or_path", "not the planned model", "adapter_config.json"]),
    ("modules_to_save", {"config": {"modules_to_save": ["lm_head"]}}, ["modules_to_save", "adapter_config.json"]),
    ("not lora", {"config": {"peft_type": "IA3"}}, ["peft_type", "LORA"]),
    ("dora", {"config": {"use_dora": True}}, ["use_dora"]),
    ("bias", {"config": {"bias": "all"}}, ["bias"]),
    ("pissa", {"config": {"init_lora_weights": "pissa_niter_4"}}, ["init_lora_weights"]),
    ("unsupported target", {"config": {"target_modules": ["q_proj", "rotary_emb"]}}, ["target_modules", "rotary_emb"]),
    ("wrong shapes", {"shapes": {**SHAPES, "q_proj": (4096, 4096)}}, ["shape", "expected [8, 256]", "adapter_model.safetensors"]),
    ("too many layers", {"layers": 3}, ["layer 2", "has 2"]),
])
def test_mismatched_adapters_are_refused_in_one_line(tiny, tmp_path, case, kwargs, words):
    spec = from_directory(tiny).spec
    base = kwargs.pop("base", str(tiny))
    d = make_adapter(tmp_path / "a", base, **kwargs)
    with pytest.raises(CatalogError) as e:
        check_adapter("x", d, spec, [str(tiny)])
    msg = one_line(e.value)
    for w in words:
        assert w in msg, (case, msg)
    assert e.value.fix


def test_rank_above_max_lora_rank_is_refused_with_the_rank_to_use(tiny, tmp_path):
    spec = from_directory(tiny).spec
    d = make_adapter(tmp_path / "a", str(tiny), r=24)
    with pytest.raises(CatalogError) as e:
        check_adapter("x", d, spec, [str(tiny)], max_lora_rank=16)
    assert "r 24 is above --max-lora-rank 16" in one_line(e.value)
    assert "--max-lora-rank 32" in e.value.fix


def test_rank_pattern_counts_and_shapes_follow_it(tiny, tmp_path):
    spec = from_directory(tiny).spec
    d = make_adapter(tmp_path / "a", str(tiny), config={"rank_pattern": {"q_proj": 32}})
    with pytest.raises(CatalogError, match="expected \\[32, 256\\]"):  # q_proj tensors are rank 8, the pattern says 32
        check_adapter("x", d, spec, [str(tiny)])


def test_bin_only_missing_and_corrupt_files(tiny, tmp_path):
    spec = from_directory(tiny).spec
    d = make_adapter(tmp_path / "a", str(tiny))
    st = d / "adapter_model.safetensors"
    st.rename(d / "adapter_model.bin")
    with pytest.raises(CatalogError, match="only adapter_model.bin"):
        check_adapter("x", d, spec, [str(tiny)])
    st.write_bytes((10**9).to_bytes(8, "little") + b"{}")  # header length far beyond the file
    with pytest.raises(CatalogError, match="corrupt safetensors header"):
        check_adapter("x", d, spec, [str(tiny)])
    (d / "adapter_config.json").write_bytes(b"{" * (2 * 2**20))  # beyond the 1 MiB cap: refused unread
    with pytest.raises(CatalogError, match="too large"):
        check_adapter("x", d, spec, [str(tiny)])
    with pytest.raises(CatalogError, match="not a directory"):
        check_adapter("x", tmp_path / "nope", spec, [str(tiny)])
    with pytest.raises(CatalogError, match="not a valid adapter name"):
        check_adapter("../x", d, spec, [str(tiny)])


# ------------------------------------------------------------------ the plan


def _llama8b_adapter(root: Path, r: int = 16) -> Path:
    shapes = {"q_proj": (4096, 4096), "v_proj": (4096, 1024)}
    return make_adapter(root, "meta-llama/Llama-3.1-8B-Instruct", r=r, modules=("q_proj", "v_proj"), layers=32, shapes=shapes)


def test_plan_takes_lora_out_of_the_kv_cache_and_renders_the_flags(tmp_path):
    base = PlanRequest(model="llama-3.1-8b", gpus=["H100"], tp=2, context=8192)
    a = _llama8b_adapter(tmp_path / "ad", r=12)
    lo = PlanRequest(model="llama-3.1-8b", gpus=["H100"], tp=2, context=8192, loras=[("support", str(a))], max_loras=4)
    p0, p1 = plan(base).plan, plan(lo).plan
    # rank 12 → --max-lora-rank 16, 4 slots, TP2: the worked example above (test_llama_3_1_8b_worked_example_…):
    # 260,374,528 B of buffers = 0.2425 GiB, plus under 2 MiB of index tensors → 0.24 GiB per GPU,
    # and that much less KV cache than the same plan without the adapter.
    assert p1.memory.lora_gib == 0.24
    assert p0.memory.kv_cache_gib - p1.memory.kv_cache_gib == pytest.approx(0.2425, abs=0.011)
    assert p1.capacity.kv_cache_tokens < p0.capacity.kv_cache_tokens
    argv = p1.vllm.to_argv()
    assert argv[argv.index("--enable-lora"):] == ["--enable-lora", "--lora-modules", "support=/adapters/support",
                                                   "--max-loras", "4", "--max-lora-rank", "16"]
    assert "--enable-lora" not in p0.vllm.to_argv()
    [ref] = p1.adapters
    assert (ref.name, ref.path, ref.source, ref.rank) == ("support", "/adapters/support", str(a.resolve()), 12)
    assert any(w.startswith("LoRA: 1 adapter(s), 4 slot(s) at rank 16") for w in p1.warnings)


def test_plan_refuses_before_anything_ships(tmp_path):
    a = _llama8b_adapter(tmp_path / "ad", r=64)
    req = dict(model="llama-3.1-8b", gpus=["H100"], tp=1)
    with pytest.raises(CatalogError, match="r 64 is above --max-lora-rank 16"):
        plan(PlanRequest(**req, loras=[("x", str(a))], max_lora_rank=16))
    with pytest.raises(PlanError, match="not a value vLLM accepts"):
        plan(PlanRequest(**req, loras=[("x", str(a))], max_lora_rank=48))
    with pytest.raises(PlanError, match="needs at least one --lora"):
        plan(PlanRequest(**req, max_loras=2))
    with pytest.raises(PlanError, match="below --max-loras"):
        plan(PlanRequest(**req, loras=[("x", str(a))], max_loras=4, max_cpu_loras=2))
    with pytest.raises(PlanError, match="given twice"):
        plan(PlanRequest(**req, loras=[("x", str(a)), ("x", str(a))]))
    with pytest.raises(CatalogError, match="not the planned model"):
        plan(PlanRequest(model="qwen2.5-7b", gpus=["H100"], tp=1, loras=[("x", str(a))]))
    # an unsupported architecture is refused before its adapter is even read
    with pytest.raises(CatalogError, match="not planned"):
        plan(PlanRequest(model="qwen3-30b-a3b", gpus=["H100"], tp=1, loras=[("x", str(tmp_path / "missing"))]))


def test_cpu_plan_counts_lora_in_host_ram(tiny, tmp_path):
    a = make_adapter(tmp_path / "ad", str(tiny))
    p = plan(PlanRequest(model=str(tiny), device="cpu", context=512, loras=[("t", str(a))], accept_license_risk=True)).plan
    assert p.vllm.max_lora_rank == 8 and p.vllm.enable_lora
    assert p.memory.kv_cache_gib == 1.0  # the CPU KV space is fixed (VLLM_CPU_KVCACHE_SPACE); LoRA comes out of the headroom
