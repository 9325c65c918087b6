"""Typed catalog entries: models, licenses, GPUs, quantizations, API prices.

Field names follow Hugging Face `config.json` where one exists, so a transcription can be checked
against the published file line by line. Every field carries a one-line docstring.
"""

from __future__ import annotations

import difflib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from toolkit.errors import ConfigError


class Strict(BaseModel):
    """Frozen, and unknown keys are an error (a typo in a catalog or plan file must not pass)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


LayerKind = Literal["full", "sliding", "chunked", "linear", "none"]


class MoESpec(Strict):
    num_experts: int = Field(gt=0)
    """Routed experts per MoE layer (`num_local_experts` / `n_routed_experts` / `num_experts`)."""
    experts_per_token: int = Field(gt=0)
    """Routed experts each token uses (`num_experts_per_tok` / `moe_topk`)."""
    moe_intermediate_size: int = Field(gt=0)
    """Intermediate size of one routed expert."""
    num_shared_experts: int = 0
    """Always-on shared experts per MoE layer (`n_shared_experts`; Llama 4 has 1)."""
    shared_expert_intermediate_size: int | None = None
    """Intermediate size of the shared expert block when it differs (Qwen2-MoE); None = moe_intermediate_size."""
    first_dense_layers: int = 0
    """Leading layers with a dense MLP instead of experts (`first_k_dense_replace`)."""
    layer_interval: int = 1
    """Every Nth layer is MoE (`interleave_moe_layer_step` / `decoder_sparse_step`); others are dense."""
    gated: bool = True
    """Experts use a gated (SwiGLU, 3-matrix) MLP."""


class MLASpec(Strict):
    kv_lora_rank: int
    """Compressed KV latent size (DeepSeek `kv_lora_rank`)."""
    qk_rope_head_dim: int
    """Decoupled RoPE key size, cached beside the latent."""
    qk_nope_head_dim: int
    """Per-head non-RoPE query/key size."""
    v_head_dim: int
    """Per-head value size."""
    q_lora_rank: int | None = None
    """Query low-rank size; None = full-rank query projection (V2-Lite)."""


class Openness(Strict):
    weights: bool
    """Weights downloadable."""
    inference_code: bool
    """Inference code published under an open licence."""
    training_code: bool
    """Training code published."""
    training_data: bool
    """Training data published."""


class LicenseSpec(Strict):
    id: str
    """Catalog key (e.g. `llama3.1`, `apache-2.0`)."""
    name: str
    """Human name of the licence."""
    url: str
    """Where the licence text is published."""
    spdx: str | None = None
    """SPDX identifier when one exists."""
    osi_approved: bool
    """Approved by the Open Source Initiative."""
    commercial_use: bool
    """Commercial use allowed at all."""
    monthly_active_user_limit: int | None = None
    """Above this many monthly active users a separate licence is required (Llama: 700M)."""
    mau_measured_at: str | None = None
    """Date (YYYY-MM-DD) the MAU limit is assessed on, once: the version's release date (Llama); None = an ongoing cap (Qwen)."""
    acceptable_use_policy: str | None = None
    """URL of an acceptable-use policy the licensee must follow, if any."""
    attribution: str | None = None
    """Naming / attribution duties (e.g. "Built with Llama", name prefix)."""
    notes: str | None = None
    """Other terms a platform team must know (output-use restrictions, field-of-use limits)."""


class ModelSpec(Strict):
    id: str
    """Hugging Face repo id of the reference checkpoint."""
    aliases: list[str] = []
    """Short names accepted on the command line (lower case)."""
    family: str
    """Model family, for grouping and calibration."""
    architecture: str
    """`architectures[0]` from config.json."""
    params_b: float
    """Total parameters in billions as published (model card); checked against the geometry."""
    num_hidden_layers: int = Field(gt=0)
    """Decoder layers."""
    hidden_size: int = Field(gt=0)
    """Residual width."""
    num_attention_heads: int = Field(gt=0)
    """Query heads."""
    num_key_value_heads: int = Field(gt=0)
    """KV heads (GQA/MQA); equals num_attention_heads for MHA."""
    head_dim: int = Field(gt=0)
    """Per-head size; `config.head_dim` where given, else hidden/heads."""
    intermediate_size: int = Field(gt=0)
    """Dense MLP intermediate size."""
    vocab_size: int = Field(gt=0)
    """Vocabulary rows of the embedding."""
    tie_word_embeddings: bool = False
    """lm_head shares the embedding matrix."""
    mlp_gated: bool = True
    """Dense MLP is gated (SwiGLU/GeGLU: 3 matrices) rather than 2 matrices."""
    max_position_embeddings: int = Field(gt=0)
    """Longest context the model supports (after published RoPE scaling)."""
    torch_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    """Native checkpoint dtype."""
    moe: MoESpec | None = None
    """Mixture-of-experts geometry; None for dense models."""
    mla: MLASpec | None = None
    """Multi-head latent attention geometry (DeepSeek); None for MHA/GQA."""
    sliding_window: int | None = None
    """Sliding-window size in tokens for sliding layers."""
    attention_chunk_size: int | None = None
    """Chunked local attention size (Llama 4 iRoPE)."""
    full_attention_interval: int | None = None
    """Every Nth layer (the last of each group) is full attention; the others are sliding or chunked."""
    layer_types: list[LayerKind] | None = None
    """Explicit per-layer attention kinds (overrides the interval rule)."""
    vision_params_b: float = 0.0
    """Vision tower + projector parameters in billions (VLMs), kept in bf16."""
    license: str
    """Key into the licence table."""
    openness: Openness
    """Which parts are open (weights / inference code / training code / data)."""
    native_quantization: str | None = None
    """Quantization the reference checkpoint ships in (gpt-oss: mxfp4; DeepSeek-V3: fp8)."""
    notes: str | None = None
    """Anything an operator should know (reasoning model, VLM, vLLM caveats)."""

    @model_validator(mode="after")
    def _check_layers(self) -> "ModelSpec":
        if self.layer_types is not None and len(self.layer_types) != self.num_hidden_layers:
            raise ValueError(
                f"layer_types has {len(self.layer_types)} entries, num_hidden_layers is {self.num_hidden_layers}"
            )
        return self

    def attention_layers(self) -> list[LayerKind]:
        """The attention kind of every layer, derived once from the config fields."""
        if self.layer_types is not None:
            return list(self.layer_types)
        local: LayerKind | None = None
        if self.attention_chunk_size:
            local = "chunked"
        elif self.sliding_window:
            local = "sliding"
        if local is None:
            return ["full"] * self.num_hidden_layers
        if not self.full_attention_interval:
            return [local] * self.num_hidden_layers
        n = self.full_attention_interval
        return ["full" if (i + 1) % n == 0 else local for i in range(self.num_hidden_layers)]


class GpuSpec(Strict):
    name: str
    """Canonical SKU name (e.g. `H100-SXM`)."""
    aliases: list[str] = []
    """Other names accepted on the command line and matched against nvidia-smi output."""
    vendor: Literal["nvidia", "amd", "cpu"] = "nvidia"
    """Vendor; decides runtime (CUDA / ROCm / CPU)."""
    memory_gib: float = Field(gt=0)
    """Total memory as the runtime reports it (cudaMemGetInfo), GiB."""
    memory_gb: float = Field(gt=0)
    """Marketed memory size, GB."""
    bandwidth_gbs: float = Field(gt=0)
    """Memory bandwidth, GB/s (datasheet)."""
    bf16_tflops: float = Field(gt=0)
    """Dense BF16 tensor TFLOPS (no sparsity)."""
    fp8_tflops: float | None = None
    """Dense FP8 tensor TFLOPS; None if the GPU has no FP8 tensor cores."""
    fp4_tflops: float | None = None
    """Dense FP4 (MXFP4/NVFP4) tensor TFLOPS; None if the GPU has no FP4 tensor cores."""
    int8_tops: float | None = None
    """Dense INT8 tensor TOPS."""
    compute_capability: float
    """CUDA compute capability (8.0 A100, 8.9 Ada, 9.0 Hopper, 10.0 Blackwell); 0 for non-CUDA."""
    interconnect: str
    """Multi-GPU link as sold (e.g. `NVLink 900 GB/s`, `PCIe 4.0`)."""
    interconnect_gbs: float
    """Per-GPU bandwidth of that link, GB/s (one direction)."""
    max_per_node: int = 8
    """Most GPUs of this kind in one server."""
    tdp_w: float
    """Board power, watts."""
    street_price_usd: float
    """Typical purchase price per GPU, USD."""
    cloud_hourly_usd: float | None = None
    """Typical on-demand cloud price per GPU-hour, USD."""
    pci_device_ids: list[str] = []
    """PCI device ids (0x10de:xxxx) used to identify the card on a host."""


class QuantSpec(Strict):
    name: str
    """Name as given on the command line (vLLM `--quantization` value or GGUF type)."""
    kind: Literal["none", "vllm", "gguf"]
    """How vLLM is told about it: nothing, `--quantization NAME`, or a GGUF file."""
    vllm_quantization: str | None = None
    """Value for `vllm serve --quantization`, None when vLLM detects it from the checkpoint."""
    bytes_per_weight: float = Field(gt=0)
    """Stored bytes per quantized linear weight, scales and zeros included."""
    weight_bits: float
    """Nominal bits per weight (for display)."""
    quantizes_embeddings: bool = False
    """Embedding and lm_head are quantized too (GGUF); otherwise they stay in the model dtype."""
    experts_only: bool = False
    """Only MoE expert weights are quantized (gpt-oss MXFP4)."""
    min_compute_capability: float = 0.0
    """Lowest CUDA compute capability whose kernels run it in vLLM."""
    max_compute_capability: float | None = None
    """Highest compute capability with kernels, when support was dropped."""
    group_size: int | None = None
    """Quantization group along the input dimension; TP shards must align to it."""
    activation_dtype_bytes: int = 2
    """Bytes per activation element at run time."""
    quality: str
    """Plain statement of the accuracy cost, printed beside the choice."""
    repo_suffixes: list[str] = []
    """Repo-id suffixes that signal this quantization (`-AWQ`, `-GPTQ-Int4`, `-FP8`)."""
    pad_hidden_to: int | None = None
    """Kernels pad quantized expert matrices' hidden dimension to this multiple at load (MXFP4: 256)."""


class ApiPrice(Strict):
    provider: str
    """Vendor of the closed API."""
    model: str
    """API model name."""
    input_per_mtok_usd: float = Field(ge=0)
    """USD per 1M input tokens."""
    output_per_mtok_usd: float = Field(ge=0)
    """USD per 1M output tokens."""
    tier: Literal["small", "mid", "frontier"] | None = None
    """Capability/price tier: small (mini/flash), mid, frontier; picks the default comparison for a model's size."""


class ApiPriceList(Strict):
    as_of: str
    """Date the prices were read (YYYY-MM-DD)."""
    source: str
    """Where they were read."""
    prices: list[ApiPrice]
    """The list."""
    default: str
    """`provider/model` compared against when no entry carries a tier matching the model's size."""


def validation_error(exc: ValidationError, model: type[Strict], source: str) -> ConfigError:
    """Turn pydantic's report into one path-qualified line per problem, with did-you-mean for typos."""
    from toolkit.catalog.files import excerpt  # echoed input is cut short: never dump a file back

    lines = []
    errors = exc.errors()
    for err in errors[:8]:
        path = excerpt(".".join(str(p) for p in err["loc"]), 80).strip("'\"")
        if err["type"] == "extra_forbidden":
            known = _fields_at(model, err["loc"][:-1])
            close = difflib.get_close_matches(str(err["loc"][-1])[:100], known, n=1)
            tip = f" — did you mean '{close[0]}'?" if close else ""
            lines.append(f"{source}: unknown key '{path}'{tip}")
        else:
            lines.append(f"{source}: {path}: {excerpt(err['msg'], 120).strip(chr(39))} (got {excerpt(err.get('input'))})")
    if len(errors) > 8:
        lines.append(f"{source}: … and {len(errors) - 8} more problems")
    return ConfigError("\n".join(lines), fix="correct the keys above; regenerate with `selfhost plan` if unsure")


def _fields_at(model: type[Strict], loc: tuple) -> list[str]:
    """Field names of the nested model at `loc` (for did-you-mean)."""
    current: type | None = model
    for part in loc:
        if current is None or not hasattr(current, "model_fields") or part not in current.model_fields:
            return []
        ann = current.model_fields[part].annotation
        current = next((a for a in getattr(ann, "__args__", (ann,)) if hasattr(a, "model_fields")), None)
    return list(current.model_fields) if current is not None and hasattr(current, "model_fields") else []
