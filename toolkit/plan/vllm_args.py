"""The exact `vllm serve` arguments a plan stands for. Field names are vLLM's own flag names."""

from __future__ import annotations

from typing import Literal

from pydantic import model_serializer

from toolkit.catalog.spec import Strict

# The vLLM release whose defaults the sizing engine models and whose image the deploy runs.
VLLM_VERSION = "0.32.0"


class VllmServeArgs(Strict):
    model: str
    """Path of the weights inside the container (always local: the server never reaches a hub)."""
    served_model_name: str
    """Name clients pass as `model` in API calls."""
    tensor_parallel_size: int = 1
    """`--tensor-parallel-size`."""
    pipeline_parallel_size: int = 1
    """`--pipeline-parallel-size`."""
    max_model_len: int
    """`--max-model-len`: always explicit (vLLM's default is the model maximum)."""
    gpu_memory_utilization: float | None = None
    """`--gpu-memory-utilization`: always pinned on GPU (the default moved 0.90 → 0.92); None on CPU."""
    max_num_seqs: int
    """`--max-num-seqs`: concurrent sequences the scheduler admits."""
    max_num_batched_tokens: int
    """`--max-num-batched-tokens`: tokens per step; sets the profiled activation peak."""
    kv_cache_dtype: Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"] = "auto"
    """`--kv-cache-dtype`."""
    quantization: str | None = None
    """`--quantization`, only when vLLM cannot detect it from the checkpoint."""
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    """`--dtype`."""
    enforce_eager: bool = False
    """`--enforce-eager`: no CUDA graphs (less memory, slower decode)."""
    host: str = "0.0.0.0"
    """`--host` inside the container (the container network is internal; the proxy fronts it)."""
    port: int = 8000
    """`--port` inside the container."""
    enable_lora: bool = False
    """`--enable-lora`: multi-LoRA serving (adapters below, each served under its own model name)."""
    lora_modules: list[str] = []
    """`--lora-modules NAME=PATH`: absolute container paths, so vLLM never takes a name for a hub id."""
    max_loras: int | None = None
    """`--max-loras`: adapter slots per batch (GPU buffers are allocated for each)."""
    max_lora_rank: int | None = None
    """`--max-lora-rank`: buffer rank, one of vLLM's allowed values."""
    max_cpu_loras: int | None = None
    """`--max-cpu-loras`: adapters cached in host RAM."""

    @model_serializer(mode="wrap")
    def _omit_without_lora(self, handler):
        """Plans without LoRA serialise (and digest) exactly as before these fields existed."""
        data = handler(self)
        if not self.enable_lora and isinstance(data, dict):
            for key in ("enable_lora", "lora_modules", "max_loras", "max_lora_rank", "max_cpu_loras"):
                data.pop(key, None)
        return data

    def to_argv(self) -> list[str]:
        """The argument list after `vllm serve` / `api_server`, in a stable order."""
        argv = ["--model", self.model, "--served-model-name", self.served_model_name]
        argv += ["--host", self.host, "--port", str(self.port)]
        argv += ["--tensor-parallel-size", str(self.tensor_parallel_size)]
        argv += ["--pipeline-parallel-size", str(self.pipeline_parallel_size)]
        argv += ["--max-model-len", str(self.max_model_len)]
        if self.gpu_memory_utilization is not None:
            argv += ["--gpu-memory-utilization", f"{self.gpu_memory_utilization:g}"]
        argv += ["--max-num-seqs", str(self.max_num_seqs)]
        argv += ["--max-num-batched-tokens", str(self.max_num_batched_tokens)]
        argv += ["--kv-cache-dtype", self.kv_cache_dtype, "--dtype", self.dtype]
        if self.quantization:
            argv += ["--quantization", self.quantization]
        if self.enforce_eager:
            argv.append("--enforce-eager")
        if self.enable_lora:
            argv.append("--enable-lora")
            if self.lora_modules:
                argv += ["--lora-modules", *self.lora_modules]
            for flag, value in (("--max-loras", self.max_loras), ("--max-lora-rank", self.max_lora_rank),
                                ("--max-cpu-loras", self.max_cpu_loras)):
                if value is not None:
                    argv += [flag, str(value)]
        return argv
